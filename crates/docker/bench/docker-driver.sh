#!/bin/sh
# The docker driver benchmark: a sandbox plus one container, created and started through husk's docker driver
# versus `docker run` twice with the CLI (and bare engine API calls for reference). Prints medians and the
# overhead ratio; exits non-zero when the driver is 10% or more slower than the CLI.
#
#   crates/docker/bench/docker-driver.sh [--host unix:///path/docker.sock] [--iterations N]
#
# Without --host it starts a private dockerd (scripts/test-dockerd) and removes it afterwards. Needs root.
set -eu
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
cargo build --quiet --release -p husk-docker --example bench --example pause
target=${CARGO_TARGET_DIR:-$root/target}/x86_64-unknown-linux-gnu/release/examples
exec "$target/bench" --pause "$target/pause" "$@"
