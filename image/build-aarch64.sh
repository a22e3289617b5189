#!/usr/bin/env bash
# Cross-build the static aarch64 (musl) monserv binary for the appliance, size profile.
#   image/build-aarch64.sh            -> target/aarch64-unknown-linux-musl/appliance/monserv
# Needs: rustup target aarch64-unknown-linux-musl, zig (PyPI `ziglang`), cargo-zigbuild.
# Installs what is missing. For a glibc target use --target aarch64-unknown-linux-gnu
# with Debian's gcc-aarch64-linux-gnu instead.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-musl

rustup target list --installed | grep -qx "$target" || rustup target add "$target"
python3 -c 'import ziglang' 2>/dev/null || python3 -m pip install -q ziglang || python3 -m pip install -q --break-system-packages ziglang
command -v cargo-zigbuild >/dev/null || cargo install --locked -q cargo-zigbuild

start=$(date +%s)
# Without unwind tables (see image/discard-eh-frame.ld); MONSERV_KEEP_UNWIND=1 keeps them.
if [ -z "${MONSERV_KEEP_UNWIND:-}" ]; then
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C link-arg=-Wl,-T,$PWD/image/discard-eh-frame.ld"
fi
cargo zigbuild --locked --profile appliance --target "$target" --bin monserv
bin="target/$target/appliance/monserv"
echo "built $bin: $(stat -c %s "$bin") bytes in $(( $(date +%s) - start )) s"
