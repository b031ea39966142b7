#!/bin/sh
# Pull benchmark: the same multi-layer image (~200 MB uncompressed, 5 layers) pulled from a local registry by
#   - husk   (crates/image/examples/pull.rs, release build, until the CLI has `husk pull`),
#   - docker (`docker pull` against a private dockerd started here, when dockerd is installed),
#   - skopeo (`skopeo copy docker://... dir:...`: download only, no unpacking),
# each cold (empty store) RUNS times; prints the median seconds and the ratios.
#
#   bench/pull.sh [RUNS]        (default 3; run as root)
#
# Everything (registry, dockerd, stores) lives in a temporary directory removed at the end. Nothing leaves 127.0.0.1.
set -eu

runs=${1:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/husk-pull-bench.XXXXXX)
registry_pid=""
dockerd_pid=""
cleanup() {
    [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null
    if [ -n "$dockerd_pid" ]; then
        kill "$dockerd_pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
        grep " $work/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "building husk's pull example (release)..." >&2
(cd "$here" && cargo build -q --release -p husk-image --example pull)
pull_bin="$here/target/x86_64-unknown-linux-gnu/release/examples/pull"

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

# husk
: > "$work/husk.times"
for r in $(seq "$runs"); do
    rm -rf "$work/husk"
    sync
    t=$("$pull_bin" --quiet --root "$work/husk" "$ref" | awk '{print $2}')
    echo "$t" >> "$work/husk.times"
    echo "husk run $r: ${t}s" >&2
done
husk=$(median < "$work/husk.times")

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

echo
echo "image: $n layers, ${size_mb} MB uncompressed, ${compressed_mb} MB in the registry; median of $runs cold pulls"
printf '%-28s %8ss\n' "husk pull (unpacked)" "$husk"
printf '%-28s %8ss\n' "skopeo copy to dir (no unpack)" "$skopeo_t"
[ -n "$docker_t" ] && printf '%-28s %8ss\n' "docker pull (unpacked)" "$docker_t"
printf 'husk vs skopeo: %sx faster\n' "$(echo "scale=2; $skopeo_t / $husk" | bc)"
[ -n "$docker_t" ] && printf 'husk vs docker: %sx faster\n' "$(echo "scale=2; $docker_t / $husk" | bc)"
exit 0
