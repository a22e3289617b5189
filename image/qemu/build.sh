#!/usr/bin/env bash
# Build the aarch64 test image: Debian's arm64 kernel (+ the virtio network modules),
# BusyBox init, and the static monserv started as the appliance would start it.
#   image/qemu/build.sh   -> target/qemu/{vmlinuz,initrd.cpio.gz}
# Needs the binary from image/build-aarch64.sh (MONSERV_BIN overrides).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${OUT:-$repo/target/qemu}
bin=${MONSERV_BIN:-$repo/target/aarch64-unknown-linux-musl/appliance/monserv}
[ -x "$bin" ] || { echo "no aarch64 monserv at $bin: run image/build-aarch64.sh" >&2; exit 1; }
command -v cpio >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cpio; }

# arm64 packages without dpkg --add-architecture: a private APT state for arm64.
apt_dir="$out/apt"
mkdir -p "$apt_dir"/{state/lists/partial,cache/archives/partial,etc/preferences.d,etc/apt.conf.d,debs}
touch "$apt_dir/state/status"
cat > "$apt_dir/apt.conf" <<CONF
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
Dir::State "$apt_dir/state";
Dir::State::status "$apt_dir/state/status";
Dir::Cache "$apt_dir/cache";
Dir::Etc::Preferences "$apt_dir/etc/preferences";
Dir::Etc::PreferencesParts "$apt_dir/etc/preferences.d";
Dir::Etc::Parts "$apt_dir/etc/apt.conf.d";
CONF
export APT_CONFIG="$apt_dir/apt.conf"
compgen -G "$apt_dir/state/lists/*_Packages*" >/dev/null || apt-get update -qq
# The kernel the linux-image-arm64 metapackage points at today.
kernel_pkg=$(apt-cache depends linux-image-arm64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kernel_pkg" ] || { echo "cannot resolve linux-image-arm64" >&2; exit 1; }
if ! compgen -G "$apt_dir/debs/${kernel_pkg}_*.deb" >/dev/null; then
    (cd "$apt_dir/debs" && apt-get download -qq "$kernel_pkg" busybox-static)
fi
unset APT_CONFIG

work="$out/work"
rm -rf "$work" && mkdir -p "$work/kernel" "$work/bb"
dpkg-deb -x "$apt_dir/debs/${kernel_pkg}"_*.deb "$work/kernel"
dpkg-deb -x "$apt_dir"/debs/busybox-static_*.deb "$work/bb"
kver=$(ls "$work/kernel/lib/modules")
cp "$work/kernel/boot/vmlinuz-$kver" "$out/vmlinuz"

root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,etc/init.d,etc/monserv,proc,sys,dev,tmp,run,var/lib/monserv,lib/modules}
cp "$work/bb/bin/busybox" "$root/bin/busybox"
# The arm64 busybox cannot run here; the host's busybox-static (same Debian build) lists
# the same applets.
applets=$(busybox --list 2>/dev/null || echo sh mount umount insmod ip hostname mkdir cat sleep)
for applet in $applets; do
    [ "$applet" = busybox ] || ln -sf /bin/busybox "$root/bin/$applet"
done
ln -sf /bin/busybox "$root/sbin/init"
# The virtio network driver and what it needs, in load order.
for m in net/core/failover drivers/net/net_failover drivers/virtio/virtio_pci_legacy_dev \
         drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci drivers/net/virtio_net; do
    cp "$work/kernel/lib/modules/$kver/kernel/$m.ko" "$root/lib/modules/"
done
install -m 0755 "$bin" "$root/usr/bin/monserv"
cp -a "$repo/image/rootfs/." "$root/"
chmod 0755 "$root/etc/init.d/"*

(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initrd.cpio.gz"
echo "image: $out/vmlinuz ($kver), $out/initrd.cpio.gz ($(stat -c %s "$out/initrd.cpio.gz") bytes)"
