#!/bin/sh
# Container start, side by side in one run: husk (through its daemon) against raw `runc run` of the same bundle
# and `docker run --rm` of the same image on a private Docker Engine, plus sandbox create + remove with and without
# bridge networking. Prints a table of means and ratios; `--markdown` prints it for docs/benchmarks.md.
#
#   bench/run.sh [--runs N] [--sandbox-pool N] [--markdown]
#
# --sandbox-pool N starts husk's daemon with `sandbox_pool = N` (network namespaces made ready on the bridge
# ahead of time; docs/operations.md).
#
# Needs root, hyperfine, runc, docker.io (scripts/deps test installs them) and a release build (made here).
set -eu
cd "$(dirname "$0")/.."
runs=20
sandbox_pool=0
markdown=no
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=$2; shift 2 ;;
        --sandbox-pool) sandbox_pool=$2; shift 2 ;;
        --markdown) markdown=yes; shift ;;
        *) echo "usage: bench/run.sh [--runs N] [--sandbox-pool N] [--markdown]" >&2; exit 2 ;;
    esac
done
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet -p husk -p husk-pause
husk=$(pwd)/target/x86_64-unknown-linux-gnu/release/husk

work=$(mktemp -d /tmp/hb.XXXXXX)
bridge=hkb$(od -An -N3 -tx1 /dev/urandom | tr -d " \n")
daemon=""
engine=""
cleanup() {
    [ -n "$daemon" ] && { "$husk" -H "unix://$work/husk.sock" sandbox ls -q 2>/dev/null | xargs -r "$husk" -H "unix://$work/husk.sock" sandbox rm -f > /dev/null 2>&1 || true; kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; }
    [ -n "$engine" ] && crates/docker/scripts/test-dockerd stop "$work/e" > /dev/null 2>&1 || true
    scripts/remove-bridge "$bridge"
    grep "$work" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

scripts/make-busybox-image "$work/busybox.tar" bench/busybox:1 > /dev/null

# husk, on a bridge of its own.
printf 'sandbox_pool = %d\n' "$sandbox_pool" > "$work/husk.toml"
"$husk" daemon --root "$work/root" --run-root "$work/run" --socket "$work/husk.sock" --config "$work/husk.toml" \
    --cni-conf-dir "$work/cni" --bridge "$bridge" --subnet 10.250.250.0/24 --cgroup-parent husk-bench > "$work/daemon.log" 2>&1 &
daemon=$!
export HUSK_HOST="unix://$work/husk.sock"
i=0; until "$husk" info > /dev/null 2>&1; do i=$((i + 1)); [ $i -lt 100 ] || { cat "$work/daemon.log"; exit 1; }; sleep 0.1; done
"$husk" image load -q -i "$work/busybox.tar" > /dev/null

# runc: the same image's root filesystem in a bundle whose process is `true` (its container name, hence its
# cgroup /NAME, differs from the daemon's cgroup parent: runc removing that cgroup under husk failed a run).
mkdir -p "$work/bundle/rootfs"
tar -xf "$work/busybox.tar" -C "$work" --wildcards '*/layer.tar'
for l in "$work"/*/layer.tar; do tar -xf "$l" -C "$work/bundle/rootfs"; done
(cd "$work/bundle" && runc spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"true"/' config.json)

# docker: a private engine (its own data root and bridge), the same image loaded.
engine=$(crates/docker/scripts/test-dockerd start "$work/e")
docker -H "$engine" load -q -i "$work/busybox.tar" > /dev/null

hyperfine -N --warmup 3 --runs "$runs" --export-json "$work/start.json" \
    -n "husk run --rm (sandbox, bridge)" "$husk run --rm bench/busybox:1 true" \
    -n "husk run --rm (sandbox, no network)" "$husk run --rm --network none bench/busybox:1 true" \
    -n "husk run --rm (standalone, no network)" "$husk run --rm --mode standalone --network none bench/busybox:1 true" \
    -n "runc run" "runc run -b $work/bundle runc-bench-$$" \
    -n "docker run --rm (bridge)" "docker -H $engine run --rm bench/busybox:1 true" \
    -n "docker run --rm (no network)" "docker -H $engine run --rm --network none bench/busybox:1 true" \
    > "$work/start.txt" 2>&1 || { cat "$work/start.txt"; exit 1; }

hyperfine --warmup 3 --runs "$runs" --export-json "$work/sandbox.json" \
    -n "husk sandbox create + rm (bridge)" "$husk sandbox rm \$($husk sandbox create)" \
    -n "husk sandbox create + rm (no network)" "$husk sandbox rm \$($husk sandbox create --network none)" \
    > "$work/sandbox.txt" 2>&1 || { cat "$work/sandbox.txt"; exit 1; }

# The daemon turned the kernel's cgroup favordynmods on (unless the host had it): runc and docker run under the
# same setting, so every line below pays the same for moving a process into a cgroup.
favordynmods=$("$husk" info --format json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(next((v["details"].get("cgroup_favordynmods","?") for v in d.get("Drivers",[]) if v.get("name")=="linux"), "?"))' 2>/dev/null || echo "?")

python3 - "$work/start.json" "$work/sandbox.json" "$markdown" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$favordynmods" "$sandbox_pool" <<'PY'
import json, sys
start = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
sandbox = {r["command"]: r for r in json.load(open(sys.argv[2]))["results"]}
md = sys.argv[3] == "yes"
ms = lambda r: r["mean"] * 1000
def row(name, r, ratio=""):
    return f"| {name} | {ms(r):.1f} ms | ± {r['stddev']*1000:.1f} | {ratio} |" if md else f"{name:44} {ms(r):8.1f} ms ± {r['stddev']*1000:5.1f}   {ratio}"
runc = start["runc run"]
dock = start["docker run --rm (bridge)"]
dock_none = start["docker run --rm (no network)"]
if md:
    print(f"Machine: {sys.argv[4]} CPUs, load average {sys.argv[5]} at the start, cgroup favordynmods {sys.argv[6]}, husk's sandbox_pool {sys.argv[7]}.\n")
    print("| work | mean | σ | ratio |\n| --- | --- | --- | --- |")
for name, r in start.items():
    ratio = ""
    if name.startswith("husk") and "no network" in name:
        ratio = f"{ms(r)/ms(runc):.2f}x runc, {ms(dock_none)/ms(r):.1f}x faster than docker (no network)"
    elif name.startswith("husk"):
        ratio = f"{ms(dock)/ms(r):.1f}x faster than docker (bridge)"
    print(row(name, r, ratio))
for name, r in sandbox.items():
    print(row(name, r))
PY
