#!/bin/sh
# Zun API benchmark, with wrk on loopback against a release `husk daemon` (auth none, standalone mode):
#   1. GET /v1/containers with N containers (default 1000) in the project: requests per second, latency.
#   2. create + delete: each pair is POST /v1/containers then DELETE of what it made; pairs per second.
# The N containers are created through the API itself, created and never started, with network `none`
# (a /24 bridge network has room for 253, and listing reads records, not processes: the list costs the same
# whether they run or not).
#
#   bench/zun.sh [N] [SECONDS]        (defaults 1000 and 15; run as root)
#
# Everything lives in a temporary directory and a private cgroup parent, removed at the end.
set -eu

n=${1:-1000}
secs=${2:-15}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/husk-zun-bench.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
cgroup="husk-zun-bench-$$"
daemon=""
export HUSK_HOST="unix://$work/husk.sock"

cleanup() {
    if [ -n "$daemon" ]; then
        # Remove the containers through the daemon (8 at a time), then stop it.
        "$husk" ps -aq --no-trunc 2>/dev/null | xargs -r -P 8 -n 25 "$husk" rm -f > /dev/null 2>&1 || true
        kill "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
    grep " $work/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    for d in /sys/fs/cgroup/*/"$cgroup"; do
        [ -d "$d" ] && find "$d" -mindepth 1 -depth -type d -exec rmdir {} \; 2> /dev/null
        rmdir "$d" 2> /dev/null || true
    done
    "$here/scripts/remove-bridge" "hkz$$"
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "building husk (release)..." >&2
(cd "$here" && cargo build -q --release -p husk)
husk="${CARGO_TARGET_DIR:-$here/target}/x86_64-unknown-linux-gnu/release/husk"

"$here/scripts/make-busybox-image" "$work/busybox.tar" bench/busybox:1 > /dev/null
"$husk" daemon --root "$work/root" --run-root "$work/run" --socket "$work/husk.sock" --config /dev/null \
    --cgroup-parent "$cgroup" --cni-conf-dir "$work/cni" --mode standalone \
    --bridge "hkz$$" --subnet "10.232.$(( $$ % 200 )).0/24" \
    --listen "127.0.0.1:$port" --auth none > "$work/daemon.log" 2>&1 &
daemon=$!
i=0
until curl -sf "$url/" > /dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 100 ] || { cat "$work/daemon.log"; echo "the daemon did not start" >&2; exit 1; }
    sleep 0.1
done
"$husk" image load -i "$work/busybox.tar" > /dev/null

body='{"image": "bench/busybox:1", "command": ["true"], "nets": [{"network": "none"}]}'
hdr_v="OpenStack-API-Version: container 1.40"
hdr_t="Content-Type: application/json"
echo "creating $n containers through the API..." >&2
start=$(date +%s.%N)
seq "$n" | xargs -P 4 -I{} curl -sf -o /dev/null -X POST -H "$hdr_v" -H "$hdr_t" -d "$body" "$url/v1/containers"
end=$(date +%s.%N)
made=$(curl -sf -H "$hdr_v" "$url/v1/containers" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["containers"]))')
[ "$made" -eq "$n" ] || { echo "only $made of $n containers were made" >&2; exit 1; }
echo "made $n containers in $(echo "$end - $start" | bc) s" >&2

echo "== GET /v1/containers ($n containers), $secs s, 2 threads, 8 connections"
wrk -t2 -c8 -d"${secs}s" --latency -H "$hdr_v" "$url/v1/containers" | grep -E "Requests/sec|Latency|50%|99%|requests in"

# Each thread alternates: POST a container, then DELETE the one it made.
cat > "$work/pairs.lua" <<'EOF'
local pending = nil
local body = '{"image": "bench/busybox:1", "command": ["true"], "nets": [{"network": "none"}]}'
wrk.headers["OpenStack-API-Version"] = "container 1.40"
wrk.headers["Content-Type"] = "application/json"
request = function()
    if pending then
        local id = pending
        pending = nil
        return wrk.format("DELETE", "/v1/containers/" .. id)
    end
    return wrk.format("POST", "/v1/containers", nil, body)
end
response = function(status, headers, body)
    if status == 202 then
        pending = string.match(body, '"uuid":"(%x+)"')
    elseif status ~= 204 then
        error("unexpected status " .. status .. ": " .. body)
    end
end
EOF
echo "== create + delete pairs, $secs s, 1 thread, 1 connection (requests/2 = pairs)"
wrk -t1 -c1 -d"${secs}s" --latency -s "$work/pairs.lua" "$url" | grep -E "Requests/sec|Latency|50%|99%|requests in|Non-2xx"
left=$(curl -sf -H "$hdr_v" "$url/v1/containers" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["containers"]))')
echo "containers after the pairs: $left (at most one more than $n: a pair cut at the end)"
