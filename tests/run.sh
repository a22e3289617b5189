#!/usr/bin/env bash
# The one test command: installs what the suite needs and is missing on a fresh
# Debian 12 machine with Rust, then runs every test. Needs root (the tests create
# SSH users, namespaces and a BusyBox chroot). CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: run as root (the suite starts sshd/dropbear hosts, creates test users and namespaces)" >&2
    exit 2
fi

# Debian packages, keyed by the file that proves each is there.
declare -A need=(
    [/usr/sbin/sshd]=openssh-server
    [/usr/bin/ssh-keygen]=openssh-client
    [/usr/sbin/dropbear]=dropbear-bin
    [/usr/bin/dropbearkey]=dropbear-bin
    [/usr/bin/chromium]=chromium
    [/usr/bin/openssl]=openssl
    [/usr/bin/unshare]=util-linux
    [/usr/bin/systemd-analyze]=systemd
    [/usr/bin/qemu-system-aarch64]=qemu-system-arm
    [/usr/bin/cpio]=cpio
    [/usr/sbin/mkfs.ext4]=e2fsprogs
    [/usr/sbin/debugfs]=e2fsprogs
    [/usr/bin/shellcheck]=shellcheck
    [/usr/bin/prometheus-alertmanager]=prometheus-alertmanager
    [/usr/bin/prometheus]=prometheus
    [/usr/bin/promtool]=prometheus
    [/usr/bin/victoria-metrics]=victoria-metrics
    [/usr/sbin/mosquitto]=mosquitto
    [/usr/bin/socat]=socat
)
missing=()
for file in "${!need[@]}"; do
    [ -e "$file" ] || missing+=("${need[$file]}")
done
# The BusyBox host needs the static build: it is copied into a chroot without libraries.
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if [ "${#missing[@]}" -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python peers: the websockets client, the SMTP server (aiosmtpd), the Kafka
# consumer (kafka-python) the notifier tests read back with, and the Sparkplug host
# application (paho-mqtt; protobuf and grpcio-tools to compile the payload schema).
python_peers=(websockets aiosmtpd kafka-python paho-mqtt protobuf grpcio-tools)
if ! python3 -c 'import websockets, aiosmtpd, kafka, paho.mqtt, google.protobuf, grpc_tools' 2>/dev/null; then
    log "installing Python test peers: ${python_peers[*]}"
    python3 -m pip install -q "${python_peers[@]}" 2>/dev/null ||
        python3 -m pip install -q --break-system-packages "${python_peers[@]}"
fi

# The Kafka-protocol broker (tansu) is built from crates.io once and cached outside
# the checkout; the build (about 9 minutes) runs in the background meanwhile.
TOOLS=/opt/monserv-test-tools
export MONSERV_TEST_TANSU="$TOOLS/tansu/bin/tansu"
tansu_build=""
if [ ! -x "$MONSERV_TEST_TANSU" ]; then
    log "building the tansu Kafka broker in the background (cached in $TOOLS)"
    mkdir -p "$TOOLS"
    nice cargo install tansu --locked --features dynostore --root "$TOOLS/tansu" >"$TOOLS/tansu-build.log" 2>&1 &
    tansu_build=$!
fi

if [ ! -d tests/clients/node_modules/ws ] || [ ! -d tests/clients/node_modules/playwright-core ] || [ ! -d tests/clients/node_modules/axe-core ]; then
    log "installing the Node.js test clients"
    (cd tests/clients && npm ci --no-audit --no-fund --loglevel=error)
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "adding the wasm32-unknown-unknown target (rule components)"
    rustup target add wasm32-unknown-unknown
fi

log "toolchain floor: no locked crate may need a Rust newer than 1.94 (Yocto LTS)"
for manifest in Cargo.toml rules-wasm/Cargo.toml; do
    cargo metadata --locked --format-version 1 --manifest-path "$manifest" | python3 tests/toolchain-floor.py
done

log "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path rules-wasm/Cargo.toml --all -- --check

log "rules-wasm/dist is built from its sources; the expression language's tests"
cargo run --quiet --manifest-path rules-wasm/Cargo.toml -p builder -- --check
cargo test --quiet --manifest-path rules-wasm/Cargo.toml -p expression

log "cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings

log "licences: THIRD-PARTY-LICENSES and the recipes' licence fields match the linked crates"
python3 image/licenses/gen-third-party.py --check

log "Yocto layer: crates.inc matches the pinned commit's Cargo.lock, recipes lint clean"
python3 -c 'import oelint_adv' 2>/dev/null || python3 -m pip install -q oelint-adv 2>/dev/null || python3 -m pip install -q --break-system-packages oelint-adv
python3 image/yocto/gen-crates-inc.py --check
# HOMEPAGE is not pinged (no traffic off this machine); nothing else is suppressed.
(cd image/yocto/meta-monserv && oelint-adv --release wrynose --quiet --noinfo \
    --suppress oelint.vars.homepageping \
    recipes-monserv/monserv/monserv_*.bb recipes-monserv/images/monserv-image.bb)

log "Buildroot package: pinned to the Yocto recipe's commit, its archive and licence hashes recorded"
image/buildroot/pin.sh --check

log "shell scripts: shellcheck (warnings and errors)"
shellcheck -S warning tests/run.sh .ci/run image/build-aarch64.sh image/qemu/*.sh \
    image/rootfs/etc/init.d/* image/buildroot/package/monserv/S99monserv \
    image/buildroot/board/monserv/post-build.sh image/buildroot/board/monserv/*/post-image.sh image/buildroot/pin.sh \
    image/yocto/meta-monserv/recipes-monserv/monserv/files/monserv.init

log "aarch64 appliance binaries (musl, glibc) and QEMU test image (the appliance tests boot it)"
image/build-aarch64.sh
# The budget of the brief: the static appliance binary, every feature in, at most 7 MB.
appliance_bytes=$(stat -c %s target/aarch64-unknown-linux-musl/appliance/monserv)
if [ "$appliance_bytes" -gt 7000000 ]; then
    echo "the static appliance binary is $appliance_bytes bytes, over the 7,000,000 budget (BENCHMARKS.md)" >&2
    exit 1
fi
image/build-aarch64.sh gnu
image/qemu/build.sh

log "building the tests (meanwhile tansu may still be building)"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --all-targets --no-run
else
    cargo test --all-targets --no-run
fi

if [ -n "$tansu_build" ]; then
    log "waiting for the tansu build"
    if ! wait "$tansu_build"; then
        tail -n 40 "$TOOLS/tansu-build.log"
        echo "tests/run.sh: building tansu failed" >&2
        exit 1
    fi
fi

log "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --all-targets --no-fail-fast
else
    cargo test --all-targets --no-fail-fast
fi
