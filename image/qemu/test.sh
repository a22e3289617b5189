#!/usr/bin/env bash
# Build the aarch64 image if needed, boot it in qemu-system-aarch64 and check that it
# serves metrics of itself and of an SSH host (the suite's `appliance` test, which
# kills the VM on every exit path). tests/run.sh runs the same test with the suite.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v qemu-system-aarch64 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-arm; }
[ -f target/aarch64-unknown-linux-musl/appliance/monserv ] || image/build-aarch64.sh
[ -f target/aarch64-unknown-linux-gnu/appliance/monserv ] || image/build-aarch64.sh gnu
image/qemu/build.sh
cargo nextest run --test it appliance --no-capture
