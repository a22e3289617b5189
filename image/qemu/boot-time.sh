#!/usr/bin/env bash
# Boot time of the test image: from starting QEMU (TCG, one cortex-a53) to the first
# poll round that monserv reports (`GET /api/v1/health`, polled every 50 ms), and
# to the rules being loaded. Targets: the appliance itself only. Run it with
# nothing else busy on the machine; BENCHMARKS.md records its output.
#   image/qemu/boot-time.sh [runs]      (after image/qemu/build.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
image=${OUT:-target/qemu}
work=$(mktemp -d)
trap 'kill "${qemu:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
printf local > "$work/servers"
printf boot-time-token > "$work/auth_token"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
now() { date +%s.%N; }
for run in $(seq "$runs"); do
    cp "$image/state.img" "$work/state.img"
    start=$(now)
    qemu-system-aarch64 -M virt -cpu cortex-a53 -m 512 -nographic -no-reboot \
        -kernel "$image/vmlinuz" -initrd "$image/initrd.cpio" \
        -append "$(cat "$image/cmdline")" \
        -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:18904" -device virtio-net-pci,netdev=n0,romfile= \
        -fw_cfg "name=opt/monserv/servers,file=$work/servers" \
        -fw_cfg "name=opt/monserv/auth_token,file=$work/auth_token" \
        -drive "file=$work/state.img,if=virtio,format=raw" \
        </dev/null >"$work/console.log" 2>&1 &
    qemu=$!
    first_round='' rules=''
    while [ -z "$rules" ] || [ -z "$first_round" ]; do
        health=$(curl -s -m 1 "http://127.0.0.1:$port/api/v1/health" || true)
        t=$(now)
        if [ -z "$first_round" ] && echo "$health" | grep -q '"poll_rounds":[1-9]'; then first_round=$t; fi
        if [ -z "$rules" ] && echo "$health" | grep -q '"rules_loaded":true'; then rules=$t; fi
        if (($(echo "$t - $start > 120" | bc))); then echo "no answer in 120 s" >&2; tail "$work/console.log" >&2; exit 1; fi
        sleep "${POLL:-0.05}"
    done
    printf 'run %d: first round %.1f s, rules loaded %.1f s\n' "$run" \
        "$(echo "$first_round - $start" | bc)" "$(echo "$rules - $start" | bc)"
    kill "$qemu"
    wait "$qemu" 2>/dev/null || true
done
