#!/bin/sh
# Pull benchmark: the same multi-layer image (~200 MB uncompressed, 5 layers) pulled from a local registry by
#   - husk   (`husk pull -q` through a `husk daemon` started here on a temporary root, release build),
#   - docker (`docker pull` against a private dockerd started here, when dockerd is installed),
#   - skopeo (`skopeo copy docker://... dir:...`: download only, no unpacking),
# each cold RUNS times (husk: `image rm` + `image prune -a` between runs, so every layer is fetched and unpacked
# again; docker: `rmi` + `image prune -a`; skopeo: a fresh directory); prints the median seconds, the ratios, and
# a markdown table for docs/benchmarks.md.
#
#   bench/pull.sh [RUNS]        (default 3; run as root; HUSK=/path/to/husk to skip the build)
#
# Everything (registry, daemons, stores) lives in temporary directories removed at the end. Nothing leaves
# 127.0.0.1.
set -eu

runs=${1:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/husk-pull-bench.XXXXXX)
# The daemon's run root must be short (unix socket paths).
husk_run=$(mktemp -d /tmp/hpb.XXXXXX)
registry_pid=""
dockerd_pid=""
husk_pid=""
stop() { # PID: SIGTERM, then wait up to 10 s
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
}
cleanup() {
    # Every step runs whatever the others return (a killed process's status would stop a `set -e` trap).
    set +e
    [ -n "$registry_pid" ] && stop "$registry_pid"
    [ -n "$husk_pid" ] && stop "$husk_pid"
    [ -n "$dockerd_pid" ] && stop "$dockerd_pid"
    grep -E " ($work|$husk_run)/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
    [ -n "${tag:-}" ] && "$here/scripts/remove-bridge" "hkb$tag"
    rm -rf "$work" "$husk_run"
}
trap 'status=$?; cleanup; exit $status' EXIT
trap 'exit 130' INT TERM

husk=${HUSK:-}
if [ -z "$husk" ]; then
    echo "building husk (release)..." >&2
    (cd "$here" && cargo build -q --release -p husk)
    husk="${CARGO_TARGET_DIR:-$here/target}/x86_64-unknown-linux-gnu/release/husk"
fi

# The image: busybox plus four ~48 MB layers of mixed compressible data (base64 of random bytes and number text).
echo "making the test image..." >&2
img="$work/img"
mkdir -p "$img"
layer_dirs=""
mkdir -p "$work/l0/bin"
cp "$(command -v busybox)" "$work/l0/bin/busybox"
ln -s busybox "$work/l0/bin/sh"
layer_dirs="$work/l0"
for i in 1 2 3 4; do
    d="$work/l$i/data$i"
    mkdir -p "$d"
    head -c 24000000 /dev/urandom | base64 -w 76 > "$d/random.b64"
    seq $((i * 1000000)) $((i * 1000000 + 2200000)) > "$d/numbers.txt"
    layer_dirs="$layer_dirs $work/l$i"
done
diff_ids=""
paths=""
n=0
for l in $layer_dirs; do
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$l" -cf "$work/layer.tar" .
    sum=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
    mkdir -p "$img/$n"
    mv "$work/layer.tar" "$img/$n/layer.tar"
    diff_ids="$diff_ids${diff_ids:+,}\"sha256:$sum\""
    paths="$paths${paths:+,}\"$n/layer.tar\""
    n=$((n + 1))
done
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$diff_ids" > "$work/config.json"
csum=$(sha256sum "$work/config.json" | cut -d' ' -f1)
mv "$work/config.json" "$img/$csum.json"
printf '[{"Config":"%s.json","RepoTags":["bench/big:1"],"Layers":[%s]}]' "$csum" "$paths" > "$img/manifest.json"
tar -C "$img" -cf "$work/image.tar" .
size_mb=$(du -sm "$img" | cut -f1)

# The registry.
port=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 20000 ))
cat > "$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$work/registry.yml" 2>"$work/registry.log" &
registry_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
ref="127.0.0.1:$port/bench/big:1"
echo "pushing ${size_mb} MB in $n layers to $ref (skopeo, gzip)..." >&2
skopeo --insecure-policy copy --quiet --dest-tls-verify=false "docker-archive:$work/image.tar" "docker://$ref"
compressed_mb=$(du -sm "$work/registry" | cut -f1)

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }
elapsed() { printf '%.3f' "$(echo "$2 - $1" | bc)"; }

# husk: a daemon on a temporary root; each run starts from an empty image store.
sock="$husk_run/husk.sock"
hk() { "$husk" -H "unix://$sock" "$@"; }
: > "$work/husk.toml"
tag=$(od -An -N3 -tx1 /dev/urandom | tr -d ' ')
"$husk" daemon --root "$work/husk-root" --run-root "$husk_run/run" --socket "$sock" --config "$work/husk.toml" \
    --cni-conf-dir "$work/cni" --cgroup-parent "husk-bench-$tag" --bridge "hkb$tag" \
    --subnet "10.$((200 + $(od -An -N1 -tu1 /dev/urandom) % 50)).$(od -An -N1 -tu1 /dev/urandom | tr -d ' ').0/24" \
    --log-level warn > "$work/husk-daemon.log" 2>&1 &
husk_pid=$!
for _ in $(seq 200); do hk version 2>/dev/null | grep -q "Server: husk" && break; sleep 0.05; done
hk version | grep -q "Server: husk" || { cat "$work/husk-daemon.log" >&2; exit 1; }
: > "$work/husk.times"
for r in $(seq "$runs"); do
    hk image rm -f "$ref" >/dev/null 2>&1 || true
    hk image prune -a -f >/dev/null
    [ -z "$(ls "$work/husk-root/images/layers")" ] || { echo "husk store not empty before run $r" >&2; exit 1; }
    sync
    s=$(now)
    hk pull -q "$ref" >/dev/null
    e=$(now)
    t=$(elapsed "$s" "$e")
    echo "$t" >> "$work/husk.times"
    echo "husk run $r: ${t}s" >&2
done
husk_t=$(median < "$work/husk.times")
stop "$husk_pid"
husk_pid=""

# skopeo (to a directory: download and verify, no unpacking)
: > "$work/skopeo.times"
for r in $(seq "$runs"); do
    rm -rf "$work/skopeo-dir"
    sync
    s=$(now)
    skopeo --insecure-policy copy --quiet --src-tls-verify=false "docker://$ref" "dir:$work/skopeo-dir"
    e=$(now)
    t=$(elapsed "$s" "$e")
    echo "$t" >> "$work/skopeo.times"
    echo "skopeo run $r: ${t}s" >&2
done
skopeo_t=$(median < "$work/skopeo.times")

# docker
docker_t=""
if command -v dockerd >/dev/null 2>&1; then
    sock="$work/docker.sock"
    dockerd --data-root "$work/docker-data" --exec-root "$work/docker-exec" --pidfile "$work/docker.pid" \
        -H "unix://$sock" --bridge=none --iptables=false --ip6tables=false > "$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 100); do docker -H "unix://$sock" version >/dev/null 2>&1 && break; sleep 0.2; done
    : > "$work/docker.times"
    for r in $(seq "$runs"); do
        docker -H "unix://$sock" rmi -f "$ref" >/dev/null 2>&1 || true
        docker -H "unix://$sock" image prune -af >/dev/null 2>&1 || true
        sync
        s=$(now)
        docker -H "unix://$sock" pull -q "$ref" >/dev/null
        e=$(now)
        t=$(elapsed "$s" "$e")
        echo "$t" >> "$work/docker.times"
        echo "docker run $r: ${t}s" >&2
    done
    docker_t=$(median < "$work/docker.times")
fi

vs_skopeo=$(echo "scale=2; $skopeo_t / $husk_t" | bc)
vs_docker=""
[ -n "$docker_t" ] && vs_docker=$(echo "scale=2; $docker_t / $husk_t" | bc)

echo
echo "image: $n layers, ${size_mb} MB uncompressed, ${compressed_mb} MB in the registry; median of $runs cold pulls"
printf '%-34s %8ss\n' "husk pull (daemon; unpacked)" "$husk_t"
printf '%-34s %8ss\n' "skopeo copy to dir (no unpack)" "$skopeo_t"
[ -n "$docker_t" ] && printf '%-34s %8ss\n' "docker pull (unpacked)" "$docker_t"
printf 'husk vs skopeo: %sx faster\n' "$vs_skopeo"
[ -n "$docker_t" ] && printf 'husk vs docker: %sx faster\n' "$vs_docker"

echo
echo "--- markdown for docs/benchmarks.md ---"
echo "| tool | what it does | median seconds | husk is |"
echo "| --- | --- | --- | --- |"
echo "| \`husk pull\` (through the daemon) | download, verify, unpack | $husk_t | |"
echo "| \`skopeo copy docker://... dir:\` | download, verify (no unpack) | $skopeo_t | ${vs_skopeo}x faster |"
[ -n "$docker_t" ] && echo "| \`docker pull\` (private dockerd, overlay2) | download, verify, unpack | $docker_t | ${vs_docker}x faster |"
exit 0
