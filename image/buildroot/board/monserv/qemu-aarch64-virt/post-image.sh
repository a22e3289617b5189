#!/bin/sh
# output/images/data.ext4 (monserv's data partition, kept across runs) and
# output/images/start-qemu.sh, which boots the image with it.
set -eu
if [ ! -e "$BINARIES_DIR/data.ext4" ]; then
	"$HOST_DIR/sbin/mkfs.ext4" -q -L monserv-data "$BINARIES_DIR/data.ext4" 64M
fi
cat >"$BINARIES_DIR/start-qemu.sh" <<'SCRIPT'
#!/bin/sh
# Boots the monserv QEMU image; the console on this terminal, the console page on
# http://localhost:18904/ (forwarded). data.ext4 keeps monserv's state between runs.
IMAGES="$(dirname "$0")"
exec qemu-system-aarch64 -M virt -cpu cortex-a53 -smp 2 -m 512 -nographic \
	-kernel "$IMAGES/Image" -append "rootwait root=/dev/vda ro console=ttyAMA0" \
	-drive file="$IMAGES/rootfs.ext4",if=none,format=raw,id=root -device virtio-blk-device,drive=root \
	-drive file="$IMAGES/data.ext4",if=none,format=raw,id=data -device virtio-blk-device,drive=data \
	-netdev user,id=eth0,hostfwd=tcp:127.0.0.1:18904-:18904 -device virtio-net-device,netdev=eth0 "$@"
SCRIPT
sed -i "s|^exec qemu-system-aarch64|PATH=\"$HOST_DIR/bin:\$PATH\"\\nexec qemu-system-aarch64|" "$BINARIES_DIR/start-qemu.sh"
chmod +x "$BINARIES_DIR/start-qemu.sh"
