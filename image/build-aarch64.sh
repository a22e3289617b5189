#!/usr/bin/env bash
# Cross-build monserv for an aarch64 appliance with the size profile.
#   image/build-aarch64.sh        -> target/aarch64-unknown-linux-musl/appliance/monserv
#                                    (static; what the test image runs)
#   image/build-aarch64.sh gnu    -> target/aarch64-unknown-linux-gnu/appliance/monserv
#                                    (dynamic, glibc 2.36 and later: Debian 12, Buildroot
#                                    or Yocto systems with glibc)
# Needs: the rustup target, zig (PyPI `ziglang`) and cargo-zigbuild, which links for
# either libc without a cross gcc. Installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-musl}" in
    musl) target=aarch64-unknown-linux-musl; zig_target=$target ;;
    gnu) target=aarch64-unknown-linux-gnu; zig_target=$target.2.36 ;;
    *) echo "usage: $0 [musl|gnu]" >&2; exit 2 ;;
esac

rustup target list --installed | grep -qx "$target" || rustup target add "$target"
python3 -c 'import ziglang' 2>/dev/null || python3 -m pip install -q ziglang || python3 -m pip install -q --break-system-packages ziglang
command -v cargo-zigbuild >/dev/null || cargo install --locked -q cargo-zigbuild

start=$(date +%s)
# Without unwind tables (see image/discard-eh-frame.ld); MONSERV_KEEP_UNWIND=1 keeps them.
if [ -z "${MONSERV_KEEP_UNWIND:-}" ]; then
    flags_var="CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
    export "$flags_var=-C link-arg=-Wl,-T,$PWD/image/discard-eh-frame.ld ${MONSERV_EXTRA_LINK:-}"
fi
# Without `rule new`/`rule build` (the `authoring` feature): a workstation's tools.
cargo zigbuild --locked --profile appliance --target "$zig_target" --bin monserv --no-default-features
bin="target/$target/appliance/monserv"
echo "built $bin: $(stat -c %s "$bin") bytes in $(( $(date +%s) - start )) s"
