#!/usr/bin/env bash
# CRI pod and container lifecycles, side by side in one run: husk's CRI (a private `husk daemon`) against
# containerd 1.6 + runc (a private containerd from ../shared/critest/run-containerd.sh), both on a CNI bridge of
# their own, both pulling the same critest busybox image from a local registry. Two clients measure each runtime,
# one right after the other while both daemons are up:
#   - cri_bench (crates/cri/examples/cri_bench.rs): N sequential pods, each RunPodSandbox, CreateContainer,
#     StartContainer, ContainerStatus, StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox;
#   - critest -benchmark with ../shared/critest/bench-params.yaml (40 sequential pod lifecycles and 40 container
#     lifecycles), summarised by bench-summary.py.
# Prints a markdown table of medians (p90) in ms with the ratios, and checks the targets of issue 17:
# RunPodSandbox <= 15 ms, StartContainer <= 20 ms, StopPodSandbox <= 15 ms.
#
#   bench/cri.sh [--count N] [--sandbox-pool N] [--no-build]
#
# --sandbox-pool N runs husk with `sandbox_pool = N` (N network namespaces kept ready on the default network;
# docs/operations.md), so RunPodSandbox takes a prepared one instead of running CNI ADD; off (0) by default.
# --no-build uses the release husk and cri_bench already in target/ (for when the tree does not build).
#
# Run as root. Needs containerd, runc, docker-registry, skopeo and the CNI plugins (Debian packages containerd,
# runc, docker-registry, skopeo, containernetworking-plugins), and critest + crictl in CRITEST_TOOLS (default
# ~/.cache/cri-tools/bin; ../shared/critest/build-cri-tools.sh builds them). Environment (all optional):
#   CRITEST_HARNESS  ../shared/critest (registry.sh, run.sh, run-containerd.sh, bench-params.yaml)
#   HUSK_SUBNET      10.252.1.0/24, on husk's bridge hbench0
#   CNI_SUBNET       10.252.2.0/24, on containerd's bridge hbenchc0
#   REGISTRY_DIR     /tmp/hbench/registry: a registry already running from it (registry.sh start DIR) is used and
#                    left running; otherwise one is started there and stopped at the end. containerd's harness
#                    starts its own (the images are reproducible: the same bytes, the same digests).
#
# Everything lives in /tmp/hbench (husk's root, containerd's work dir, the registry) and /run/hbench (husk's run
# root and sockets) and is removed at the end, after a failure too, except /tmp/hbench/results: the clients'
# outputs, critest's reports, both daemons' logs, containerd's teardown check and table.md. Nothing else is
# touched: not /run/husk, not the system's containerd, not other husk daemons.
set -euo pipefail

# ---- hook mode -----------------------------------------------------------------------------------------------------
# run-containerd.sh owns containerd's whole life (registry, CNI bridge, daemon, teardown) and runs critest in the
# middle of it. This script is its CRITEST_BIN: called as critest, it measures both runtimes with cri_bench, runs
# critest -benchmark against husk, and then becomes critest -benchmark against containerd.
if [ -n "${CRI_BENCH_HOOK:-}" ]; then
    eval "$CRI_BENCH_HOOK" # out tools harness cri_bench image count husk_endpoint
    ep=""
    prev=""
    for a in "$@"; do
        [ "$prev" = -runtime-endpoint ] && ep=$a
        prev=$a
    done
    [ -n "$ep" ] || { echo "bench/cri.sh (hook): no -runtime-endpoint in: $*" >&2; exit 2; }
    "$tools/crictl" --runtime-endpoint "$ep" --image-endpoint "$ep" --timeout 60s pull "$image" > /dev/null 2>&1
    echo "bench/cri.sh: containerd: cri_bench, $count pods" >&2
    "$cri_bench" --endpoint "$ep" --count "$count" --image "$image" > "$out/containerd/cri_bench.txt"
    echo "bench/cri.sh: husk: cri_bench, $count pods" >&2
    "$cri_bench" --endpoint "$husk_endpoint" --count "$count" --image "$image" > "$out/husk/cri_bench.txt"
    echo "bench/cri.sh: husk: critest -benchmark" >&2
    CRITEST_BIN=$tools/critest CRICTL_BIN=$tools/crictl "$harness/run.sh" "$husk_endpoint" "$out/husk/critest" \
        -benchmark -benchmarking-params-file "$harness/bench-params.yaml" \
        -benchmarking-output-dir "$out/husk/critest/bench" > "$out/husk/critest.log" 2>&1 \
        || { tail -n 40 "$out/husk/critest.log" >&2; echo "bench/cri.sh: critest -benchmark failed on husk" >&2; exit 1; }
    echo "bench/cri.sh: containerd: critest -benchmark" >&2
    exec "$tools/critest" "$@"
fi

# ---- setup ---------------------------------------------------------------------------------------------------------
cd "$(dirname "$0")/.."
repo=$(pwd)
count=40
sandbox_pool=0
build=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --count) count=$2; shift 2 ;;
        --sandbox-pool) sandbox_pool=$2; shift 2 ;;
        --no-build) build=no; shift ;;
        *) echo "usage: bench/cri.sh [--count N] [--sandbox-pool N] [--no-build]" >&2; exit 2 ;;
    esac
done

harness=$(cd "${CRITEST_HARNESS:-$repo/../shared/critest}" && pwd)
tools=${CRITEST_TOOLS:-$HOME/.cache/cri-tools/bin}
husk_subnet=${HUSK_SUBNET:-10.252.1.0/24}
cni_subnet=${CNI_SUBNET:-10.252.2.0/24}
husk_bridge=hbench0
cni_bridge=hbenchc0
image=registry.k8s.io/e2e-test-images/busybox:1.29-2
top=/tmp/hbench
run=/run/hbench
root=$top/husk
out=$top/results
registry_dir=${REGISTRY_DIR:-$top/registry}
endpoint=unix://$run/cri.sock

die() { echo "bench/cri.sh: $*" >&2; exit 1; }
log() { echo "bench/cri.sh: $*" >&2; }

[ "$(id -u)" = 0 ] || die "run as root"
for b in containerd runc containerd-shim-runc-v2 docker-registry skopeo iptables python3 "$tools/critest" "$tools/crictl"; do
    command -v "$b" > /dev/null || die "$b not found"
done
for dev in "$husk_bridge" "$cni_bridge"; do
    ip link show "$dev" > /dev/null 2>&1 && die "interface $dev exists: another bench/cri.sh is running, or left it (scripts/remove-bridge $dev)"
done
python3 - "$husk_subnet" "$cni_subnet" <<'PY' || die "HUSK_SUBNET or CNI_SUBNET overlaps a route of this host"
import ipaddress, subprocess, sys
nets = [ipaddress.ip_network(a) for a in sys.argv[1:]]
for line in subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True).stdout.splitlines():
    dst = line.split()[0]
    if dst != "default" and any(ipaddress.ip_network(dst, strict=False).overlaps(n) for n in nets):
        sys.exit(1)
PY
if [ -e "$run/husk.sock" ] || grep -qE " ($top|$run)/" /proc/self/mountinfo; then
    die "$run or $top is in use (another bench/cri.sh, or what one left: unmount it and remove it)"
fi

export PATH="$HOME/.cargo/bin:$PATH"
if [ "$build" = yes ]; then
    log "building husk and cri_bench (release)"
    cargo build --release --quiet -p husk -p husk-pause
    cargo build --release --quiet -p husk-cri --example cri_bench
fi
husk=$repo/target/x86_64-unknown-linux-gnu/release/husk
cri_bench=$repo/target/x86_64-unknown-linux-gnu/release/examples/cri_bench
[ -x "$husk" ] && [ -x "$cri_bench" ] || die "no release build of husk or cri_bench in target/"

rm -rf "$out" "$root" "$top/containerd"
mkdir -p "$out/husk/critest/bench" "$out/containerd/critest/bench" "$root" "$run"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- teardown, whatever happened ---------------------------------------------------------------------------------
husk_pid=""
containerd_run_pid=""
registry_started=no
cgroups_before=$(ls -d /sys/fs/cgroup/*/hbench /sys/fs/cgroup/hbench 2> /dev/null || true)
stop_pid() { # PID: SIGTERM, then SIGKILL after 10 s
    kill -TERM "$1" 2> /dev/null || return 0
    for _ in $(seq 100); do kill -0 "$1" 2> /dev/null || return 0; sleep 0.1; done
    kill -KILL "$1" 2> /dev/null || true
}
# PIDs of the processes whose command line starts with one of this run's binaries and names one of its paths.
ours() {
    local p
    for p in /proc/[0-9]*; do
        { tr '\0' ' ' < "$p/cmdline"; } 2> /dev/null \
            | grep -qE -- "^($cri_bench|$tools/critest|$tools/crictl) .*($top/|$run/)" && echo "${p#/proc/}"
    done
    return 0
}
stop_husk() {
    [ -n "$husk_pid" ] || return 0
    "$tools/crictl" --runtime-endpoint "$endpoint" --timeout 30s rmp -a -f > /dev/null 2>&1 \
        || log "crictl rmp -a -f failed on husk"
    stop_pid "$husk_pid"
    wait "$husk_pid" 2> /dev/null || true
    husk_pid=""
    # Shims outlive their daemon by design: any still running names our root on its command line.
    for p in /proc/[0-9]*; do
        if { tr '\0' ' ' < "$p/cmdline"; } 2> /dev/null | grep -qF -- "$root/"; then
            log "leftover husk process ${p#/proc/}: SIGKILL"
            kill -KILL "${p#/proc/}" 2> /dev/null || true
        fi
    done
    grep -E " ($root|$run)/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2> /dev/null || true
    "$repo/scripts/remove-bridge" "$husk_bridge"
    for c in /sys/fs/cgroup/*/hbench /sys/fs/cgroup/hbench; do
        [ -d "$c" ] || continue
        echo "$cgroups_before" | grep -qxF "$c" && continue
        find "$c" -depth -type d -exec rmdir {} + 2> /dev/null || log "cgroup $c is not empty"
    done
    if grep -qE " ($root|$run)/" /proc/self/mountinfo; then
        log "mounts left under $root or $run; not removing them"
    else
        rm -rf --one-file-system "$root" "$run"
    fi
}
cleanup() {
    local status=$? p
    set +e
    trap - EXIT INT TERM
    if [ -n "$containerd_run_pid" ]; then
        # run-containerd.sh tears its containerd down on SIGTERM once the command it waits for (critest, or this
        # script's hook) has returned: the clients are stopped first.
        for p in $(ours); do kill -TERM "$p" 2> /dev/null; done
        kill -TERM "$containerd_run_pid" 2> /dev/null
        wait "$containerd_run_pid" 2> /dev/null
    fi
    stop_husk
    if [ "$registry_started" = yes ]; then
        "$harness/registry.sh" stop "$registry_dir"
        rm -rf "$registry_dir"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the registry ------------------------------------------------------------------------------------------------
if addr=$("$harness/registry.sh" addr "$registry_dir" 2> /dev/null); then
    log "using the registry already running from $registry_dir on $addr"
else
    registry_started=yes
    addr=$("$harness/registry.sh" start "$registry_dir")
    log "registry started on $addr"
fi

# ---- husk --------------------------------------------------------------------------------------------------------
{
    printf 'sandbox_pool = %d\n' "$sandbox_pool"
    for h in registry.k8s.io k8s.gcr.io gcr.io docker.io; do
        printf '[cri.registry.mirrors."%s"]\nendpoints = ["http://%s"]\n' "$h" "$addr"
    done
} > "$out/husk/husk.toml"
setsid "$husk" daemon --root "$root" --run-root "$run" --socket "$run/husk.sock" --config "$out/husk/husk.toml" \
    --cni-conf-dir "$root/cni" --bridge "$husk_bridge" --subnet "$husk_subnet" --cgroup-parent hbench \
    > "$out/husk/daemon.log" 2>&1 < /dev/null &
husk_pid=$!
i=0
until "$tools/crictl" --runtime-endpoint "$endpoint" --timeout 2s version > /dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 100 ] && kill -0 "$husk_pid" 2> /dev/null || { tail -n 30 "$out/husk/daemon.log" >&2; die "husk's CRI did not answer"; }
    sleep 0.1
done
"$tools/crictl" --runtime-endpoint "$endpoint" --image-endpoint "$endpoint" --timeout 60s pull "$image" > /dev/null 2>&1 \
    || die "husk could not pull $image from $addr"
log "husk $(git rev-parse --short HEAD) ready on $endpoint, $image pulled"

# ---- containerd, and the measurements ----------------------------------------------------------------------------
log "containerd: starting it (run-containerd.sh)"
CRI_BENCH_HOOK=$(printf 'out=%q tools=%q harness=%q cri_bench=%q image=%q count=%q husk_endpoint=%q' \
        "$out" "$tools" "$harness" "$cri_bench" "$image" "$count" "$endpoint") \
    CRITEST_BIN=$repo/bench/cri.sh CRICTL_BIN=$tools/crictl CRITEST_WORKDIR=$top/containerd \
    CNI_SUBNET=$cni_subnet CNI_BRIDGE=$cni_bridge \
    "$harness/run-containerd.sh" "$out/containerd/critest" -benchmark \
    -benchmarking-params-file "$harness/bench-params.yaml" -benchmarking-output-dir "$out/containerd/critest/bench" \
    > "$out/containerd/run-containerd.log" 2>&1 &
containerd_run_pid=$!
status=0
wait "$containerd_run_pid" || status=$?
containerd_run_pid=""
grep -q "teardown clean" "$out/containerd/critest/teardown.txt" 2> /dev/null || {
    log "containerd's teardown was not clean:"
    cat "$out/containerd/critest/teardown.txt" >&2 || true
}
grep -hs "^bench/cri.sh" "$out/containerd/critest/critest.log" >&2 || true
[ "$status" = 0 ] || { tail -n 40 "$out/containerd/run-containerd.log" >&2; die "run-containerd.sh failed ($status)"; }
[ -s "$out/containerd/cri_bench.txt" ] && [ -s "$out/husk/cri_bench.txt" ] || die "cri_bench did not run"
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
stop_husk

# ---- the table ---------------------------------------------------------------------------------------------------
for rt in husk containerd; do
    python3 "$harness/bench-summary.py" "$out/$rt/critest/bench" > "$out/$rt/critest.txt"
done
machine="$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), kernel $(uname -r)"
machine="$machine, load average $load_start at the start and $load_end at the end"
versions="husk $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates Cargo.lock 2> /dev/null || echo ' with uncommitted changes')"
versions="$versions, sandbox_pool = $sandbox_pool"
versions="$versions, containerd $(containerd --version | awk '{print $3}') + runc $(runc --version | awk 'NR==1 {print $3}')"
python3 - "$out" "$count" "$machine" "$versions" <<'PY' | tee "$out/table.md"
import json, re, sys
out, count, machine, versions = sys.argv[1:5]
line = re.compile(r"^(\w+)\s+(?:n=\s*\d+\s+)?median\s+([\d.]+)\s+p90\s+([\d.]+)")

def read(path):
    res = {}
    for l in open(path):
        m = line.match(l)
        if m:
            res[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return res

def scratch(rt):  # critest's "start a container from scratch": one sample, in its Ginkgo report
    try:
        for s in json.load(open(f"{out}/{rt}/critest/critest-report.json"))[0]["SpecReports"]:
            for e in s.get("ReportEntries") or []:
                for m in json.loads(e["Value"]["AsJSON"]).get("Measurements", []):
                    if m.get("Durations"):
                        return m["Durations"][0] / 1e6
    except (OSError, KeyError, ValueError, IndexError):
        pass
    return None

targets = {"RunPodSandbox": 15, "CreatePod": 15, "StartContainer": 20, "StopPodSandbox": 15, "StopPod": 15}
critest_names = {"CreatePod": "CreatePod (RunPodSandbox)", "StatusPod": "StatusPod (PodSandboxStatus)",
                 "StopPod": "StopPod (StopPodSandbox)", "RemovePod": "RemovePod (RemovePodSandbox)",
                 "CreateContainer": "CreateContainer (+ ImageStatus)", "StatusContainer": "StatusContainer"}
verdicts = []
print(f"Machine: {machine}. {versions}.\n")
for client, title, file in (("cri_bench", f"cri_bench, {count} sequential pods", "cri_bench.txt"),
                            ("critest", "critest -benchmark, 40 sequential pods and 40 containers", "critest.txt")):
    h, c = read(f"{out}/husk/{file}"), read(f"{out}/containerd/{file}")
    print(f"{title}; median (p90) in ms:\n")
    print("| operation | husk | containerd | containerd / husk | target |")
    print("| --- | --- | --- | --- | --- |")
    for op in h:
        if op not in c:
            continue
        (hm, hp), (cm, cp) = h[op], c[op]
        name = critest_names.get(op, op) if client == "critest" else op
        target = ""
        if op in targets:
            verdict = "met" if hm <= targets[op] else "missed"
            target = f"≤ {targets[op]} ms: {verdict}"
            verdicts.append(f"{client} {op}: husk {hm:.1f} ms, target {targets[op]} ms: {verdict}")
        ratio = f"{cm / hm:.1f}x" if hm > 0 else "-"
        print(f"| {name} | {hm:.1f} ({hp:.1f}) | {cm:.1f} ({cp:.1f}) | {ratio} | {target} |")
    if client == "critest":
        hs, cs = scratch("husk"), scratch("containerd")
        if hs and cs:
            print(f"| pod + container from scratch (one sample) | {hs:.1f} | {cs:.1f} | {cs / hs:.1f}x | |")
    print()
for v in verdicts:
    print(f"- {v}")
PY
log "results in $out"
