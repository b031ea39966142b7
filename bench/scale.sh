#!/usr/bin/env bash
# Cost against the number of running containers (issue 19): for each N, N `sleep` containers of the busybox test
# image, half standalone and half in sandboxes of 2 containers, each half split between the bridge network and
# none (the kinds take turns, so the first 10 and the last 10 hold the same mix), then measured on the full host:
#
#   start      each `run -d` from the CLI's start to its exit (after one warm-up container of each kind, removed); the
#              median of the first 10 and of the last 10
#   ps         `ps` and `ps -a -q` (median of 5), `inspect` of one container (median of 5)
#   stats      `stats --no-stream` (all containers, one run)
#   events     from `pause` of one container to its `pause` event reaching an `events` client (median of 3)
#   restart    SIGTERM the daemon (containers keep running), start it again, until `ps -q` lists all N
#   remove     `rm -f` of every container (one command), then every sandbox
#   daemon     RSS and open fds of the daemon (Docker: dockerd + its containerd)
#   per-ctr    RSS and PSS (smaps_rollup) of every per-container or per-sandbox process, summed, per container:
#              linux: `husk shim` processes and sandbox pause processes (the daemon's children);
#              docker driver and Docker: the engine's containerd-shim-runc-v2 processes
#
# on husk's `linux` driver, husk's `docker` driver (N <= 250) and Docker itself (the peer: its sandbox is an infra
# container with `--network container:ID --ipc container:ID` members; N <= 250, a private dockerd's /24 bridge).
# Prints one table, writes scale.csv, starts.csv and scale.svg (cost against N, husk beside Docker) to --out.
#
#   bench/scale.sh [--n 100,250,500,1000] [--drivers linux,docker] [--peer docker|none] [--out DIR] [--guard]
#   bench/scale.sh --report DIR/scale.csv     (the table and DIR/scale.svg again, from a CSV: runs can be joined)
#
# --guard is CI's short form: N = 100, linux only, no peer; it fails only on gross regressions of ratios (the
# median of the last 10 starts over 3x the first 10's, or `ps` of 100 containers over 100 ms), never on absolute
# times. HUSK_BIN=PATH uses that husk instead of building one (`cargo build --release`).
# Run as root; needs docker.io for the docker driver and the peer (scripts/deps test installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
ns="100,250,500,1000"
drivers="linux,docker"
peer=docker
out=""
guard=no
report=""
while [ $# -gt 0 ]; do
    case "$1" in
        --n) ns=$2; shift 2 ;;
        --drivers) drivers=$2; shift 2 ;;
        --peer) peer=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --guard) guard=yes; shift ;;
        --report) report=$2; shift 2 ;;
        *) echo "usage: bench/scale.sh [--n 100,250,500,1000] [--drivers linux,docker] [--peer docker|none] [--out DIR] [--guard] | --report CSV" >&2; exit 2 ;;
    esac
done
if [ "$guard" = yes ]; then ns=100; drivers=linux; peer=none; fi
docker_max=250 # the docker driver and the peer: a private dockerd's bridge is a /24


# render CSV SVG GUARD: prints the table, writes the plot, and with GUARD=yes checks the guard's ratios.
render() {
python3 - "$1" "$2" "$3" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
names = {"linux": "husk linux", "docker": "husk docker driver", "peer": "Docker"}
cols = [("start_first10_ms", "start 1-10 ms"), ("start_last10_ms", "start last 10 ms"), ("start_ratio", "last/first"),
        ("ps_ms", "ps ms"), ("ps_aq_ms", "ps -aq ms"), ("inspect_ms", "inspect ms"), ("stats_ms", "stats ms"),
        ("events_ms", "events ms"), ("restart_s", "restart s"), ("remove_s", "rm all s"),
        ("daemon_rss_mib", "daemon RSS MiB"), ("daemon_fds", "daemon fds"), ("procs", "procs"),
        ("rss_per_ctr_kib", "RSS/ctr KiB"), ("pss_per_ctr_kib", "PSS/ctr KiB")]
def fmt(v):
    try:
        f = float(v)
    except ValueError:
        return v
    return f"{f:.0f}" if f >= 100 else f"{f:.1f}" if f >= 10 else f"{f:.2f}"
head = ["target", "N"] + [c[1] for c in cols]
print("| " + " | ".join(head) + " |")
print("|" + " --- |" * len(head))
for r in rows:
    print("| " + " | ".join([names[r["target"]], r["n"]] + [fmt(r[c[0]]) for c in cols]) + " |")

# SVG: one small chart per metric, cost against N, one line per target.
metrics = [("start_last10_ms", "start, last 10 (ms)"), ("start_ratio", "start: last 10 / first 10"),
           ("ps_ms", "ps (ms)"), ("stats_ms", "stats --no-stream (ms)"), ("events_ms", "events latency (ms)"),
           ("restart_s", "restart until all found (s)"), ("remove_s", "remove all (s)"),
           ("daemon_rss_mib", "daemon RSS (MiB)"), ("pss_per_ctr_kib", "PSS per container (KiB)")]
colors = {"linux": "#1f77b4", "docker": "#2ca02c", "peer": "#d62728"}
W, H, pad, ncol = 260, 180, 40, 3
nrow = (len(metrics) + ncol - 1) // ncol
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W*ncol}" height="{H*nrow+30}" font-family="sans-serif" font-size="10">',
       '<rect width="100%" height="100%" fill="white"/>']
x0 = 10
for t, c in colors.items():
    if any(r["target"] == t for r in rows):
        svg.append(f'<line x1="{x0}" y1="15" x2="{x0+20}" y2="15" stroke="{c}" stroke-width="2"/><text x="{x0+24}" y="19">{names[t]}</text>')
        x0 += 140
ns = sorted({int(r["n"]) for r in rows})
for k, (m, title) in enumerate(metrics):
    ox, oy = (k % ncol) * W, 30 + (k // ncol) * H
    pts = [(int(r["n"]), float(r[m]), r["target"]) for r in rows if r[m] not in ("", None)]
    ymax = max([p[1] for p in pts] + [1e-9]) * 1.1
    xmax = max(ns) if ns else 1
    X = lambda n: ox + pad + (W - pad - 15) * n / xmax
    Y = lambda v: oy + H - 25 - (H - 50) * v / ymax
    svg.append(f'<text x="{ox+pad}" y="{oy+14}" font-weight="bold">{title}</text>')
    svg.append(f'<line x1="{X(0)}" y1="{Y(0)}" x2="{X(xmax)}" y2="{Y(0)}" stroke="black"/><line x1="{X(0)}" y1="{Y(0)}" x2="{X(0)}" y2="{Y(ymax)}" stroke="black"/>')
    for n in ns:
        svg.append(f'<text x="{X(n)}" y="{Y(0)+12}" text-anchor="middle">{n}</text>')
    for v in (0, ymax / 1.1 / 2, ymax / 1.1):
        svg.append(f'<text x="{X(0)-3}" y="{Y(v)+3}" text-anchor="end">{v:.3g}</text>')
    for t, c in colors.items():
        line = sorted((p[0], p[1]) for p in pts if p[2] == t)
        if not line:
            continue
        svg.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="' + " ".join(f"{X(n):.1f},{Y(v):.1f}" for n, v in line) + '"/>')
        svg += [f'<circle cx="{X(n):.1f}" cy="{Y(v):.1f}" r="2.5" fill="{c}"/>' for n, v in line]
svg.append("</svg>")
open(sys.argv[2], "w").write("\n".join(svg) + "\n")

if sys.argv[3] == "yes":
    bad = []
    for r in rows:
        if r["target"] == "linux" and r["n"] == "100":
            if float(r["start_ratio"]) > 3:
                bad.append(f"the last 10 starts' median {r['start_last10_ms']} ms is over 3x the first 10's {r['start_first10_ms']} ms")
            if float(r["ps_ms"]) > 100:
                bad.append(f"`ps` of 100 containers took {r['ps_ms']} ms (> 100 ms)")
    for b in bad:
        print("scale guard: FAIL: " + b, file=sys.stderr)
    if bad:
        sys.exit(1)
    print("scale guard: ok (start last/first and ps within bounds)", file=sys.stderr)
PY
}
if [ -n "$report" ]; then render "$report" "$(dirname "$report")/scale.svg" no; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "bench/scale.sh: run as root" >&2; exit 1; }
if [ -z "${HUSK_BIN:-}" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
    cargo build --release --quiet -p husk -p husk-pause
    HUSK_BIN=$repo/target/x86_64-unknown-linux-gnu/release/husk
fi
husk=$HUSK_BIN

work=$(mktemp -d /tmp/hsc.XXXXXX)
[ -n "$out" ] || out=/tmp/husk-scale
mkdir -p "$out"
out=$(cd "$out" && pwd)
tag=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
bridge=hks$tag
cgparent=husk-scale-$tag
daemon=""     # pid of the husk daemon running now
engine=""     # DOCKER_HOST of the private dockerd
edir=$work/e  # its directory
log() { echo "bench/scale.sh: $*" >&2; }

stop_daemon() {
    [ -n "$daemon" ] || return 0
    kill -TERM "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
    daemon=""
}
cleanup() {
    set +e
    if [ -n "$daemon" ]; then
        "$husk" ps -a -q 2>/dev/null | xargs -r "$husk" rm -f > /dev/null 2>&1
        "$husk" sandbox ls -q 2>/dev/null | xargs -r "$husk" sandbox rm -f > /dev/null 2>&1
        stop_daemon
    fi
    if [ -n "$engine" ]; then
        docker -H "$engine" ps -a -q 2>/dev/null | xargs -r docker -H "$engine" rm -f > /dev/null 2>&1
        crates/docker/scripts/test-dockerd stop "$edir" > /dev/null 2>&1
    fi
    scripts/remove-bridge "$bridge"
    for c in /sys/fs/cgroup/*/"$cgparent" /sys/fs/cgroup/unified/"$cgparent" /sys/fs/cgroup/"$cgparent"; do
        [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    awk -v d="$work/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { echo "${EPOCHREALTIME/./}"; } # microseconds
# ms VAR CMD...: runs CMD (output to /dev/null), sets VAR to its wall time in ms.
ms() {
    local __v=$1 t0 t1; shift
    t0=$(now); "$@" > /dev/null; t1=$(now)
    printf -v "$__v" '%s' "$(( (t1 - t0) / 1000 )).$(printf '%03d' $(( (t1 - t0) % 1000 )))"
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

scripts/make-busybox-image "$work/busybox.tar" bench/busybox:1 > /dev/null
image=bench/busybox:1

# ---- the three targets ---------------------------------------------------------------------------------------------
# cli: the command line of the target (husk with HUSK_HOST set, or docker -H).
start_husk() { # driver
    local drv=$1
    "$husk" daemon --root "$work/root-$drv" --run-root "$work/run-$drv" --socket "$work/husk.sock" \
        --cni-conf-dir "$work/cni" --bridge "$bridge" --subnet 10.251.0.0/16 --cgroup-parent "$cgparent" \
        --driver "$drv" ${engine:+--docker-host "$engine" --docker-instance "scale$tag"} \
        >> "$work/daemon-$drv.log" 2>&1 &
    daemon=$!
    local i=0
    until "$husk" info > /dev/null 2>&1; do
        i=$((i + 1)); [ $i -lt 600 ] || { tail -20 "$work/daemon-$drv.log" >&2; exit 1; }
        kill -0 "$daemon" 2>/dev/null || { tail -20 "$work/daemon-$drv.log" >&2; exit 1; }
        sleep 0.05
    done
}
need_engine() {
    [ -z "$engine" ] || return 0
    engine=$(crates/docker/scripts/test-dockerd start "$edir")
    # live-restore is reloadable: containers survive the engine's restart, as husk's survive its daemon's.
    echo '{"live-restore": true}' > "$edir/daemon.json"
    kill -HUP "$(cat "$edir/dockerd.pid")"
    sleep 0.5
    docker -H "$engine" load -q -i "$work/busybox.tar" > /dev/null
}
restart_engine() {
    local pid; pid=$(cat "$edir/dockerd.pid")
    local -a cmd; mapfile -d '' -t cmd < "/proc/$pid/cmdline"
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null && [ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]; do sleep 0.02; done
    setsid "${cmd[@]}" < /dev/null >> "$edir/dockerd.log" 2>&1 &
}

# per-container processes: prints "count rss_kib pss_kib" summed over them
mem_of() {
    local rss=0 pss=0 n=0 p r s
    for p in "$@"; do
        [ -r "/proc/$p/smaps_rollup" ] || continue
        r=$(awk '/^Rss:/ {print $2}' "/proc/$p/smaps_rollup")
        s=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup")
        [ -n "$r" ] || continue
        rss=$((rss + r)); pss=$((pss + s)); n=$((n + 1))
    done
    echo "$n $rss $pss"
}
per_ctr_pids() { # target
    case $1 in
        linux) # the shims, and the daemon's other children (a sandbox's pause process, with --share-pid only)
            { pgrep -f "^husk shim $work/root-linux/" || true; pgrep -P "$daemon" || true; } | sort -u ;;
        *) # the engine's containerd shims (its own containerd namespace)
            local nsname; nsname=$(cat "$edir/cgroup")
            pgrep -f "containerd-shim-runc-v2 -namespace $nsname " || true ;;
    esac
}
daemon_pids() { # target
    case $1 in
        linux | docker) echo "$daemon" ;;
        peer) echo "$(cat "$edir/dockerd.pid")"; pgrep -f "^containerd --config $edir/exec/" || true ;;
    esac
}
rss_fd() { # pids: prints "rss_kib fds"
    local r=0 f=0 p
    for p in "$@"; do
        r=$((r + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status"))); f=$((f + $(ls "/proc/$p/fd" | wc -l)))
    done
    echo "$r $f"
}

# ---- one measurement -----------------------------------------------------------------------------------------------
csv=$out/scale.csv
starts=$out/starts.csv
echo "target,n,start_first10_ms,start_last10_ms,start_ratio,create_s,ps_ms,ps_aq_ms,inspect_ms,stats_ms,events_ms,restart_s,remove_s,daemon_rss_mib,daemon_fds,procs,proc_rss_mib,proc_pss_mib,rss_per_ctr_kib,pss_per_ctr_kib" > "$csv"
echo "target,n,i,kind,ms" > "$starts"

measure() { # target (linux | docker | peer) N
    local t=$1 n=$2 c
    local -a cli
    if [ "$t" = peer ]; then cli=(docker -H "$engine"); else cli=("$husk"); fi
    log "$t: starting $n containers"
    local i kind net sb="" id d tstart; local -a times ids
    # Warm-up, not counted (as hyperfine's): one container of each kind, then removed. A fresh daemon's first
    # start also makes its bridge and fills caches, which counted against the first 10 (runs 6 and 8 below).
    local -a warm=()
    if [ "$t" = peer ]; then
        for net in bridge none; do warm+=("$("${cli[@]}" run -d --network "$net" "$image" sleep 1000000)"); done
        sb=$("${cli[@]}" run -d --network bridge --ipc shareable "$image" sleep 1000000)
        warm+=("$("${cli[@]}" run -d --network "container:$sb" --ipc "container:$sb" "$image" sleep 1000000)" "$sb")
        "${cli[@]}" rm -f "${warm[@]}" > /dev/null
    else
        for net in bridge none; do
            warm+=("$("${cli[@]}" run -d --mode standalone --network "$net" "$image" sleep 1000000)")
        done
        sb=$("${cli[@]}" sandbox create --network bridge)
        warm+=("$("${cli[@]}" run -d --sandbox "$sb" "$image" sleep 1000000)")
        "${cli[@]}" rm -f "${warm[@]}" > /dev/null
        "${cli[@]}" sandbox rm -f "$sb" > /dev/null
    fi
    sb=""
    tstart=$(now)
    for ((i = 0; i < n; i++)); do
        # kinds take turns: standalone bridge, standalone none, then a sandbox's two members (bridge, then none)
        case $((i % 4)) in 0) kind=standalone; net=bridge ;; 1) kind=standalone; net=none ;; *) kind=sandbox ;; esac
        [ $((i % 8)) -lt 4 ] && snet=bridge || snet=none
        if [ "$kind" = standalone ]; then
            if [ "$t" = peer ]; then
                ms d "${cli[@]}" run -d --network "$net" "$image" sleep 1000000
            else
                ms d "${cli[@]}" run -d --mode standalone --network "$net" "$image" sleep 1000000
            fi
            kind="standalone-$net"
        else
            if [ $((i % 4)) = 2 ]; then # a new sandbox (its own time is not a container's start)
                if [ "$t" = peer ]; then
                    sb=$("${cli[@]}" run -d --network "$snet" --ipc shareable "$image" sleep 1000000)
                else
                    sb=$("${cli[@]}" sandbox create --network "$snet")
                fi
            fi
            if [ "$t" = peer ]; then
                ms d "${cli[@]}" run -d --network "container:$sb" --ipc "container:$sb" "$image" sleep 1000000
            else
                ms d "${cli[@]}" run -d --sandbox "$sb" "$image" sleep 1000000
            fi
            kind="sandbox-$snet"
        fi
        times+=("$d")
        echo "$t,$n,$((i + 1)),$kind,$d" >> "$starts"
    done
    local create_s; create_s=$(awk -v a="$tstart" -v b="$(now)" 'BEGIN {printf "%.1f", (b - a) / 1e6}')
    local first last ratio
    first=$(median "${times[@]:0:10}"); last=$(median "${times[@]: -10}")
    ratio=$(awk -v a="$first" -v b="$last" 'BEGIN {printf "%.2f", b / a}')
    local running; running=$("${cli[@]}" ps -q | wc -l)
    [ "$running" -ge "$n" ] || { log "$t: only $running of $n running"; exit 1; }

    log "$t: ps, inspect, stats, events"
    local -a a b c2
    for i in 1 2 3 4 5; do ms d "${cli[@]}" ps; a+=("$d"); ms d "${cli[@]}" ps -a -q; b+=("$d"); done
    local one; one=$("${cli[@]}" ps -q | awk "NR == 1")
    for i in 1 2 3 4 5; do ms d "${cli[@]}" inspect "$one"; c2+=("$d"); done
    local ps_ms ps_aq_ms inspect_ms stats_ms
    ps_ms=$(median "${a[@]}"); ps_aq_ms=$(median "${b[@]}"); inspect_ms=$(median "${c2[@]}")
    ms stats_ms "${cli[@]}" stats --no-stream
    # events: pause one container, time until its event reaches an `events` client
    local -a ev
    "${cli[@]}" events --filter event=pause > "$work/events" 2>&1 &
    local evpid=$! t0 seen
    sleep 1
    for i in 1 2 3; do
        seen=$(grep -c pause "$work/events" || true)
        t0=$(now)
        "${cli[@]}" pause "$one" > /dev/null
        while [ "$(grep -c pause "$work/events" || true)" -le "$seen" ]; do sleep 0.001; done
        ev+=("$(( ($(now) - t0) / 1000 ))")
        "${cli[@]}" unpause "$one" > /dev/null
    done
    kill "$evpid" 2>/dev/null; wait "$evpid" 2>/dev/null || true
    local events_ms; events_ms=$(median "${ev[@]}")

    log "$t: memory"
    local -a dp pp
    mapfile -t dp < <(daemon_pids "$t")
    local drss dfd; read -r drss dfd < <(rss_fd "${dp[@]}")
    mapfile -t pp < <(per_ctr_pids "$t")
    local pn prss ppss; read -r pn prss ppss < <(mem_of "${pp[@]}")

    log "$t: restart"
    local t1 restart_s
    if [ "$t" = peer ]; then
        t0=$(now); restart_engine
    else
        local drv=$t; stop_daemon; t0=$(now); start_husk "$drv"
    fi
    until [ "$("${cli[@]}" ps -q 2>/dev/null | wc -l)" -ge "$n" ]; do sleep 0.01; done
    restart_s=$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.2f", (b - a) / 1e6}')

    log "$t: remove"
    t0=$(now)
    "${cli[@]}" ps -a -q | xargs -r "${cli[@]}" rm -f > /dev/null
    [ "$t" = peer ] || "${cli[@]}" sandbox ls -q | xargs -r "${cli[@]}" sandbox rm -f > /dev/null
    local remove_s; remove_s=$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.2f", (b - a) / 1e6}')

    awk -v OFS=, -v t="$t" -v n="$n" -v f="$first" -v l="$last" -v r="$ratio" -v cs="$create_s" -v p="$ps_ms" \
        -v q="$ps_aq_ms" -v ins="$inspect_ms" -v st="$stats_ms" -v ev="$events_ms" -v rs="$restart_s" -v rm="$remove_s" \
        -v dr="$drss" -v df="$dfd" -v pn="$pn" -v pr="$prss" -v ps="$ppss" 'BEGIN {
        print t, n, f, l, r, cs, p, q, ins, st, ev, rs, rm, sprintf("%.1f", dr / 1024), df, pn,
            sprintf("%.1f", pr / 1024), sprintf("%.1f", ps / 1024), int(pr / n), int(ps / n) }' >> "$csv"
    tail -1 "$csv" >&2
}

IFS=, read -r -a nlist <<< "$ns"
IFS=, read -r -a dlist <<< "$drivers"
for drv in "${dlist[@]}"; do
    [ "$drv" = docker ] && need_engine
    export HUSK_HOST="unix://$work/husk.sock"
    start_husk "$drv"
    "$husk" image load -q -i "$work/busybox.tar" > /dev/null
    for n in "${nlist[@]}"; do
        if [ "$drv" = docker ] && [ "$n" -gt "$docker_max" ]; then continue; fi
        measure "$drv" "$n"
    done
    stop_daemon
done
if [ "$peer" = docker ]; then
    need_engine
    for n in "${nlist[@]}"; do
        [ "$n" -gt "$docker_max" ] || measure peer "$n"
    done
fi

render "$csv" "$out/scale.svg" "$guard"
log "wrote $csv, $starts, $out/scale.svg"
