#!/usr/bin/env bash
# Soak (issue 18, item 5), the long form of crates/husk/tests/soak.rs: 16 concurrent clients create, start, exec,
# stop and remove containers and sandboxes, pull and remove images, while the daemon is restarted three times
# (SIGTERM, kill -9, SIGTERM), against husk (linux driver) and then Docker running the same script
# (bench/soak.py; Docker has no sandboxes: an infra container and members with --network/--ipc container:INFRA).
# Both pull from one local registry (Debian's docker-registry on 127.0.0.1) holding one tag per client.
#
#   bench/soak.sh [--duration SECONDS] [--clients N] [--peer docker|none] [--out DIR]
#
# Prints one table (per operation: ops/s, p50, p99, refused, unavailable, failed; the daemon's RSS and fds at
# the baseline after a warm-up and at the end after everything was removed) and writes DIR/soak.csv. Exits 1 if
# any operation failed on husk. Docker's engine is restarted with live-restore on (a SIGTERM'd engine otherwise
# stops its containers). HUSK_BIN=PATH uses that husk; else the release build if there is one, else the debug
# build. Run as root; needs docker.io, docker-registry and skopeo (scripts/deps test installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
duration=180
clients=16
peer=docker
out=/tmp/husk-soak
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        --peer) peer=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "usage: bench/soak.sh [--duration SECONDS] [--clients N] [--peer docker|none] [--out DIR]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench/soak.sh: run as root" >&2; exit 1; }
if [ -z "${HUSK_BIN:-}" ]; then
    target=${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu
    for profile in release debug; do
        [ -x "$target/$profile/husk" ] && { HUSK_BIN=$target/$profile/husk; break; }
    done
    [ -n "${HUSK_BIN:-}" ] || { echo "bench/soak.sh: no husk build under $target: cargo build --release -p husk" >&2; exit 1; }
fi
husk=$HUSK_BIN
work=$(mktemp -d /tmp/hsk.XXXXXX)
mkdir -p "$out"
out=$(cd "$out" && pwd)
csv=$out/soak.csv
rm -f "$csv"
tag=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
bridge=hkk$tag
cgparent=husk-soak-$tag
registry_pid=""
engine=""
log() { echo "bench/soak.sh: $*" >&2; }
cleanup() {
    set +e
    if [ -f "$work/husk.pid" ] && kill -0 "$(cat "$work/husk.pid")" 2>/dev/null; then
        export HUSK_HOST="unix://$work/husk.sock"
        "$husk" ps -a -q 2>/dev/null | xargs -r "$husk" rm -f > /dev/null 2>&1
        "$husk" sandbox ls -q 2>/dev/null | xargs -r "$husk" sandbox rm -f > /dev/null 2>&1
        kill -TERM "$(cat "$work/husk.pid")"
        while kill -0 "$(cat "$work/husk.pid")" 2>/dev/null; do sleep 0.1; done
    fi
    if [ -n "$engine" ]; then
        docker -H "$engine" ps -a -q 2>/dev/null | xargs -r docker -H "$engine" rm -f > /dev/null 2>&1
        crates/docker/scripts/test-dockerd stop "$work/e" > /dev/null 2>&1
    fi
    [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null
    scripts/remove-bridge "$bridge"
    for c in /sys/fs/cgroup/*/"$cgparent" /sys/fs/cgroup/unified/"$cgparent" /sys/fs/cgroup/"$cgparent"; do
        [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    awk -v d="$work/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scripts/make-busybox-image "$work/busybox.tar" bench/busybox:1 > /dev/null
image=bench/busybox:1

# The registry, one tag per client (the same image: a pull fetches manifest and config, and the layer once).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
registry=127.0.0.1:$port
printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n' \
    "$work/registry" "$registry" > "$work/registry.yml"
docker-registry serve "$work/registry.yml" > /dev/null 2> "$work/registry.log" &
registry_pid=$!
i=0; until (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; do i=$((i + 1)); [ $i -lt 200 ] || { cat "$work/registry.log"; exit 1; }; sleep 0.05; done
# The first push uploads the blobs; the others, at once, find them there (concurrent uploads of one blob can fail
# in docker-registry).
skopeo --insecure-policy copy --quiet --dest-tls-verify=false "docker-archive:$work/busybox.tar" \
    "docker://$registry/soak/busybox:c0"
pushes=()
for ((c = 1; c < clients; c++)); do
    skopeo --insecure-policy copy --quiet --dest-tls-verify=false "docker-archive:$work/busybox.tar" \
        "docker://$registry/soak/busybox:c$c" &
    pushes+=($!)
done
for p in "${pushes[@]}"; do wait "$p"; done

# CTL for husk: `down term|kill`, `up`, `pids` (the daemon's pid file is ours).
cat > "$work/ctl-husk" <<EOF
#!/bin/sh
set -e
case \$1 in
    down)
        pid=\$(cat $work/husk.pid)
        if [ "\$2" = kill ]; then kill -KILL \$pid; else kill -TERM \$pid; fi
        while [ -d /proc/\$pid ] && [ "\$(sed 's/.*) //' /proc/\$pid/stat 2>/dev/null | cut -d' ' -f1)" != Z ]; do sleep 0.02; done ;;
    up)
        setsid "$husk" daemon --root "$work/root" --run-root "$work/run" --socket "$work/husk.sock" \\
            --cni-conf-dir "$work/cni" --bridge "$bridge" --subnet 10.252.0.0/16 --cgroup-parent "$cgparent" \\
            --driver linux < /dev/null >> "$work/daemon.log" 2>&1 &
        echo \$! > $work/husk.pid
        i=0
        until HUSK_HOST=unix://$work/husk.sock "$husk" version 2>/dev/null | grep -q "Server: husk"; do
            i=\$((i + 1)); [ \$i -lt 600 ] || { tail -20 "$work/daemon.log" >&2; exit 1; }
            sleep 0.05
        done ;;
    pids) cat $work/husk.pid ;;
esac
EOF
chmod +x "$work/ctl-husk"

log "husk ($husk): ${duration} s, $clients clients"
"$work/ctl-husk" up
export HUSK_HOST="unix://$work/husk.sock"
"$husk" image load -q -i "$work/busybox.tar" > /dev/null
status=0
python3 bench/soak.py --target husk --flavour husk --cli "[\"$husk\"]" --ctl "$work/ctl-husk" --image "$image" \
    --registry "$registry" --clients "$clients" --duration "$duration" --csv "$csv" || status=1
[ $status = 0 ] || { log "husk: failures; the daemon's log ends:"; tail -40 "$work/daemon.log" >&2; }

if [ "$peer" = docker ]; then
    engine=$(crates/docker/scripts/test-dockerd start "$work/e")
    # live-restore is reloadable: containers survive the engine's restart, as husk's survive its daemon's.
    echo '{"live-restore": true}' > "$work/e/daemon.json"
    kill -HUP "$(cat "$work/e/dockerd.pid")"
    sleep 0.5
    docker -H "$engine" load -q -i "$work/busybox.tar" > /dev/null
    cmdline=$work/e/cmdline
    tr '\0' '\n' < "/proc/$(cat "$work/e/dockerd.pid")/cmdline" > "$cmdline"
    cat > "$work/ctl-docker" <<EOF
#!/bin/bash
set -e
e=$work/e
case \$1 in
    down)
        pid=\$(cat \$e/dockerd.pid)
        if [ "\$2" = kill ]; then kill -KILL \$pid; else kill -TERM \$pid; fi
        while [ -d /proc/\$pid ] && [ "\$(sed 's/.*) //' /proc/\$pid/stat 2>/dev/null | cut -d' ' -f1)" != Z ]; do sleep 0.02; done
        rm -f \$e/dockerd.pid ;;
    up)
        # Under load a new dockerd can give up waiting for its containerd ("timeout waiting for containerd to
        # start") and exit: started again then, as systemd's Restart=on-failure would (counted in \$e/retries).
        mapfile -t cmd < $cmdline
        for try in 1 2 3 4; do
            setsid "\${cmd[@]}" < /dev/null >> \$e/dockerd.log 2>&1 &
            pid=\$!
            i=0
            until curl -sf --unix-socket \$e/docker.sock http://engine/_ping > /dev/null 2>&1; do
                kill -0 \$pid 2> /dev/null || break
                i=\$((i + 1)); [ \$i -lt 2400 ] || { tail -20 \$e/dockerd.log >&2; exit 1; }
                sleep 0.05
            done
            curl -sf --unix-socket \$e/docker.sock http://engine/_ping > /dev/null 2>&1 && exit 0
            echo "dockerd exited while starting (try \$try)" >> \$e/retries
        done
        tail -20 \$e/dockerd.log >&2; exit 1 ;;
    pids) echo "\$(cat \$e/dockerd.pid)"; pgrep -f "^containerd --config \$e/exec/" || true ;;
esac
EOF
    chmod +x "$work/ctl-docker"
    log "Docker ($(docker -H "$engine" version --format '{{.Server.Version}}')): ${duration} s, $clients clients"
    python3 bench/soak.py --target docker --flavour docker --cli "[\"docker\", \"-H\", \"$engine\"]" \
        --ctl "$work/ctl-docker" --image "$image" --registry "$registry" --clients "$clients" \
        --duration "$duration" --csv "$csv" || log "Docker: failures (see above)"
    [ ! -f "$work/e/retries" ] || log "Docker: dockerd had to be started again: $(cat "$work/e/retries" | tr '\n' ';')"
fi

python3 - "$csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
targets = list(dict.fromkeys(r["target"] for r in rows))
ops = list(dict.fromkeys(r["operation"] for r in rows if not r["operation"].startswith("daemon")))
by = {(r["target"], r["operation"]): r for r in rows}
head = ["operation"] + [f"{t} {c}" for t in targets for c in ("ops/s", "p50 ms", "p99 ms", "refused/unavail/failed")]
print("| " + " | ".join(head) + " |")
print("|" + " --- |" * len(head))
for op in ops:
    cells = [op]
    for t in targets:
        r = by.get((t, op))
        if r is None:
            cells += ["", "", "", ""]
        else:
            cells += [r["ops_per_s"], r["p50_ms"], r["p99_ms"], f'{r["refused"]}/{r["unavailable"]}/{r["failed"]}']
    print("| " + " | ".join(cells) + " |")
for what in ("daemon RSS KiB (baseline->end)", "daemon fds (baseline->end)"):
    print("| " + what + " | " + " | ".join(f'{by[(t, what)]["done"]} -> {by[(t, what)]["ops_per_s"]} | | |' for t in targets if (t, what) in by) + " |")
PY
log "CSV: $csv"
exit $status
