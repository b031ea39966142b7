#!/bin/sh
# VM driver benchmark, through a real `husk daemon --driver vm` (release build) started here on a temporary root:
#   - husk: wall time of `husk run --rm IMAGE echo hi` until `hi` comes out of the CLI (issue 6's measure: a VM
#     booted, the container created and started, its output streamed), and until the CLI has exited (the exit
#     code returned, the VM and its network torn down);
#   - bare: wall time of QEMU booting the very same kernel and initramfs with the same machine, memory and devices
#     (the command line of a VM the daemon started, taken from /proc) with `husk.bare`, where the agent (PID 1)
#     prints one line and powers off at once: the floor of any guest with this kernel on this host;
#   - memory: host memory (PSS of QEMU, the only process a VM sandbox has on the host) per idle VM sandbox, with
#     one sandbox and with three at once.
# Runs alternate (husk, bare, husk, bare ...) so load changes hit both. Prints medians, min-max, the overhead per
# run, and a markdown table for docs/benchmarks.md.
#
#   bench/vm.sh [RUNS]        (default 5; run as root; HUSK=/path/to/husk to skip the build)
#
# With --density, instead: sandboxes are created one after another (each with the default bridge network, each
# idle) until MAX run (default 50) or the host has 1 GiB of memory left (MemAvailable), with the linux driver,
# then, removed, with the vm driver (a daemon of each). For each: how many ran, the host memory they took in all
# and per sandbox (the fall of MemAvailable; the PSS of each sandbox's host processes: QEMU for a VM, the pause
# process for a linux sandbox; the growth of the kernel's own memory), the create time of the first and the
# last (median of 3 each), the CPU their host processes use while idle (over 5 s; 100 % = one core) and the load
# average at the end.
#
#   bench/vm.sh --density [MAX]
#
# Everything lives in temporary directories removed at the end. No traffic leaves the machine.
set -eu

density=""
if [ "${1:-}" = "--density" ]; then
    density=${2:-50}
    runs=0
else
    runs=${1:-5}
fi
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/husk-vm-bench.XXXXXX)
# The daemon's run root must be short (unix socket paths).
run=$(mktemp -d /tmp/hvb.XXXXXX)
husk_pid=""
cleanup() {
    set +e
    if [ -n "$husk_pid" ]; then
        for s in $(HUSK_HOST="unix://$work/husk.sock" "$husk" sandbox ls -q 2>/dev/null); do
            HUSK_HOST="unix://$work/husk.sock" "$husk" sandbox rm -f "$s" > /dev/null 2>&1
        done
        kill "$husk_pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$husk_pid" 2>/dev/null || break; sleep 0.1; done
    fi
    grep -E " ($work|$run)/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
    "$here/scripts/remove-bridge" "hvb$$"
    rm -rf "$work" "$run"
}
trap 'status=$?; cleanup; exit $status' EXIT
trap 'exit 130' INT TERM

husk=${HUSK:-}
if [ -z "$husk" ]; then
    (cd "$here" && cargo build --release -q -p husk -p husk-agent)
    husk="$here/target/x86_64-unknown-linux-gnu/release/husk"
fi
[ -x "$(dirname "$husk")/husk-agent" ] || { echo "no husk-agent next to $husk" >&2; exit 1; }
h() { HUSK_HOST="unix://$work/husk.sock" "$husk" "$@"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

"$here/scripts/make-busybox-image" "$work/busybox.tar" bench/busybox:1 > /dev/null
# start_daemon DRIVER: a daemon on the temporary root with DRIVER as its driver, the test image loaded.
start_daemon() {
    "$husk" daemon --root "$work/root" --run-root "$run" --socket "$work/husk.sock" --config /dev/null \
        --driver "$1" --cni-conf-dir "$work/cni" --bridge "hvb$$" --subnet 10.231.$(( $$ % 200 )).0/24 \
        --cgroup-parent "husk-vm-bench-$$" >> "$work/daemon.log" 2>&1 &
    husk_pid=$!
    for _ in $(seq 200); do h version 2>/dev/null | grep -q "Server: husk" && break; sleep 0.1; done
    h image load -i "$work/busybox.tar" > /dev/null
}
stop_daemon() {
    kill "$husk_pid"
    for _ in $(seq 100); do kill -0 "$husk_pid" 2>/dev/null || break; sleep 0.1; done
}
start_daemon vm
accel=$(h info | awk '/accelerator:/ {print $2; exit}')
kernel=$(h info | awk '/guest_kernel:/ {print $2; exit}')

# Warm up (builds the guest image once), then keep one idle sandbox to take QEMU's command line and memory from.
h run --rm bench/busybox:1 echo warm > /dev/null

pss_of() { awk '/^Pss:/ {s += $2} END {print s + 0}' "$@" 2> /dev/null; }
mem_available_kb() { awk '/^MemAvailable:/ {print $2}' /proc/meminfo; }
# The kernel's own memory (slab, stacks, page tables, per-CPU): what a linux sandbox's namespaces, veth and
# cgroups take, less noisy than MemAvailable on a host that reclaims in the background.
kernel_kb() { awk '/^(Slab|KernelStack|PageTables|Percpu):/ {s += $2} END {print s}' /proc/meminfo; }
# fill DRIVER: creates sandboxes until $density run or MemAvailable is under 1 GiB; prints one table row.
fill() {
    driver=$1
    # One sandbox made and removed first (the driver's first-use work: a VM template of this shape, CNI's
    # state), then the baseline.
    h sandbox create --driver "$driver" --name d0 > /dev/null
    h sandbox rm -f d0 > /dev/null
    for _ in $(seq 600); do [ "$(pgrep -f "$run/v/" | wc -l)" -eq 0 ] && break; sleep 0.1; done
    sync
    echo 3 > /proc/sys/vm/drop_caches
    sleep 5
    before=$(mem_available_kb)
    kernel_before=$(kernel_kb)
    : > "$work/create.ms"
    n=0
    while [ "$n" -lt "$density" ] && [ "$(mem_available_kb)" -gt $(( 1024 * 1024 )) ]; do
        n=$(( n + 1 ))
        t0=$(now_ms)
        h sandbox create --driver "$driver" --name "d$n" > /dev/null
        echo $(( $(now_ms) - t0 )) >> "$work/create.ms"
    done
    # Let the last guests finish booting (a VM's boot thread, the balloon's first free page reports).
    sleep 10
    after=$(mem_available_kb)
    kernel_after=$(kernel_kb)
    pids=$(for s in $(h sandbox ls -q); do
        id=$(h sandbox inspect "$s" | sed -n 's/.*"Id": "\([0-9a-f]*\)".*/\1/p' | head -1)
        if [ "$driver" = vm ]; then cat "$run/v/$id/vm/qemu.pid"; else h sandbox inspect "$s" | sed -n 's/.*"Pid": \([0-9]*\).*/\1/p' | head -1; fi
    done)
    pss=$(pss_of $(for p in $pids; do [ -r "/proc/$p/smaps_rollup" ] && echo "/proc/$p/smaps_rollup"; done))
    first=$(head -3 "$work/create.ms" | sort -n | sed -n 2p)
    last=$(tail -3 "$work/create.ms" | sort -n | sed -n 2p)
    load=$(cut -d' ' -f1 /proc/loadavg)
    # CPU the idle sandboxes' host processes use, over 5 s (clock ticks of utime + stime).
    ticks() { for p in $pids; do [ -r "/proc/$p/stat" ] && awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s + 0}'; }
    t0=$(ticks); sleep 5; t1=$(ticks)
    cpu=$(awk -v d=$(( t1 - t0 )) -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.0f", d / hz / 5 * 100}')
    per=$(awk -v kb=$(( before - after )) -v n="$n" 'BEGIN {printf "%.1f", kb / 1024 / n}')
    kernel=$(awk -v kb=$(( kernel_after - kernel_before )) -v n="$n" 'BEGIN {printf "%.2f", kb / 1024 / n}')
    echo "| $driver | $n | $(( (before - after) / 1024 )) MiB | $per MiB | $(( pss / 1024 / n )) MiB | $kernel MiB | $first ms | $last ms | $cpu % | $load |"
    for s in $(h sandbox ls -q); do h sandbox rm -f "$s" > /dev/null; done
    # QEMU goes in the background after a removal: wait for every VM to be gone before the next fill.
    for _ in $(seq 600); do [ "$(pgrep -f "$run/v/" | wc -l)" -eq 0 ] && break; sleep 0.1; done
}
if [ -n "$density" ]; then
    echo "accelerator: $accel; guest kernel: $kernel; at most $density sandboxes, until 1 GiB is left"
    echo
    echo "| driver | sandboxes | host memory taken (MemAvailable) | per sandbox | PSS per sandbox | kernel memory per sandbox | create, first 3 (median) | last 3 | CPU of the idle sandboxes | load average |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    # linux first, on a quiet host (the VMs' memory goes back to the host in the background after their removal,
    # which would skew a small figure measured after them); the vm daemon's warm-up above built the templates.
    stop_daemon
    start_daemon linux
    fill linux
    stop_daemon
    start_daemon vm
    fill vm
    exit 0
fi

h sandbox create --name idle --network none > /dev/null
sleep 5
idle_id=$(h inspect idle | sed -n 's/.*"Id": "\([0-9a-f]*\)".*/\1/p' | head -1)
qemu_pid=$(cat "$run/v/$idle_id/vm/qemu.pid")
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
rss_kb() { awk '/^Rss:/ {print $2}' "/proc/$1/smaps_rollup"; }
idle_pss=$(pss_kb "$qemu_pid")
idle_rss=$(rss_kb "$qemu_pid")

# The bare boot: the idle VM's QEMU arguments with its directory swapped for a scratch one and `husk.bare` added.
vm_dir="$run/v/$idle_id/vm"
bare_dir="$work/bare"
mkdir -p "$bare_dir"
tr '\0' '\n' < "/proc/$qemu_pid/cmdline" | tail -n +2 > "$work/qemu.args"
qemu=$(tr '\0' '\n' < "/proc/$qemu_pid/cmdline" | head -1)
bare_boot() {
    rm -f "$bare_dir"/*
    prev=""
    set --
    # A VM started from a template has the template's RAM file and waits for its state (`-incoming`): the bare
    # boot boots the same machine cold, in anonymous memory.
    while IFS= read -r a; do
        a=$(printf '%s' "$a" | sed -e "s|$vm_dir|$bare_dir|g" -e 's|,memory-backend=ram||')
        case "$prev:$a" in
            -incoming:*|-object:memory-backend-file*) prev=""; continue ;;
            -object:*) set -- "$@" -object ;;
        esac
        case "$a" in
            -incoming|-object) prev=$a; continue ;;
        esac
        [ "$prev" = "-append" ] && a="$a husk.bare"
        set -- "$@" "$a"
        prev=$a
    done < "$work/qemu.args"
    "$qemu" "$@" > /dev/null 2>&1
}

# Memory with three idle sandboxes (the guest kernels' working sets are separate).
h sandbox create --name idle2 --network none > /dev/null
h sandbox create --name idle3 --network none > /dev/null
sleep 5
total=0
for s in idle idle2 idle3; do
    id=$(h inspect "$s" | sed -n 's/.*"Id": "\([0-9a-f]*\)".*/\1/p' | head -1)
    total=$(( total + $(pss_kb "$(cat "$run/v/$id/vm/qemu.pid")") ))
done
three_pss=$(( total / 3 ))
h sandbox rm -f idle2 idle3 > /dev/null

vms_idle=$(pgrep -f "$run/v/" | wc -l)
: > "$work/husk.ms"
: > "$work/husk_out.ms"
: > "$work/over_out.pct"
: > "$work/bare.ms"
: > "$work/over.pct"
for i in $(seq "$runs"); do
    # The time to the output (the issue's measure: `hi` read from the CLI's stdout) and to the CLI's exit (after
    # the exit code and the removal of the VM, its network and files).
    t0=$(now_ms)
    h run --rm bench/busybox:1 echo hi | { IFS= read -r line; now_ms > "$work/t_out"; echo "$line" > "$work/out"; cat > /dev/null; }
    t1=$(now_ms)
    out=$(cat "$work/out")
    [ "$out" = "hi" ] || { echo "husk run printed '$out'" >&2; exit 1; }
    ho=$(( $(cat "$work/t_out") - t0 ))
    # The VM's QEMU is killed and reaped in the background after the CLI exits: let it go before the bare boot,
    # so the kernel freeing its memory does not slow the bare boot down.
    for _ in $(seq 500); do [ "$(pgrep -f "$run/v/" | wc -l)" -le "$vms_idle" ] && break; sleep 0.01; done
    bare_boot
    t2=$(now_ms)
    grep -q "bare boot done" "$bare_dir/console.log" || { echo "the bare boot did not finish" >&2; exit 1; }
    hm=$(( t1 - t0 ))
    bm=$(( t2 - t1 ))
    echo "$hm" >> "$work/husk.ms"
    echo "$ho" >> "$work/husk_out.ms"
    echo "$bm" >> "$work/bare.ms"
    echo $(( (hm - bm) * 100 / bm )) >> "$work/over.pct"
    echo $(( (ho - bm) * 100 / bm )) >> "$work/over_out.pct"
    echo "run $i: husk run $ho ms to the output, $hm ms to its exit; bare boot $bm ms" >&2
done

median() { sort -n "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
range() { sort -n "$1" | awk 'NR==1 {lo=$1} {hi=$1} END {print lo "-" hi}'; }
hmed=$(median "$work/husk.ms")
omed=$(median "$work/husk_out.ms")
bmed=$(median "$work/bare.ms")
echo
echo "accelerator: $accel; guest kernel: $kernel; runs: $runs"
echo
echo "| metric | value |"
echo "| --- | --- |"
echo "| \`husk run --rm --driver vm IMAGE echo hi\`, CLI start to the output | $omed ms ($(range "$work/husk_out.ms")) |"
echo "| the same, CLI start to its exit (VM removed) | $hmed ms ($(range "$work/husk.ms")) |"
echo "| bare boot of the same kernel + initramfs + machine, QEMU exec to exit | $bmed ms ($(range "$work/bare.ms")) |"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "| husk's time / the bare boot's, to the output (medians) | $(ratio "$omed" "$bmed")x |"
echo "| husk's time / the bare boot's, to the exit (medians) | $(ratio "$hmed" "$bmed")x |"
echo "| husk's overhead over the bare boot, to the output (medians) | $(( (omed - bmed) * 100 / bmed )) % (per run: $(range "$work/over_out.pct") %) |"
echo "| husk's overhead over the bare boot, to the exit (medians) | $(( (hmed - bmed) * 100 / bmed )) % (per run: $(range "$work/over.pct") %) |"
echo "| host memory per idle VM sandbox (QEMU PSS; RSS), one sandbox | $(( idle_pss / 1024 )) MiB; $(( idle_rss / 1024 )) MiB |"
echo "| host memory per idle VM sandbox (QEMU PSS), three at once | $(( three_pss / 1024 )) MiB |"
