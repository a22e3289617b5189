#!/usr/bin/env bash
# Build the aarch64 test image: Debian's arm64 kernel (+ the virtio and ext4 modules),
# BusyBox init, and the static monserv started as the appliance would start it (the
# glibc build too, with Debian's arm64 glibc), plus an empty ext4 state partition.
#   image/qemu/build.sh   -> target/qemu/{vmlinuz,initrd.cpio,initrd-gnu.cpio,cmdline,state.img}
# initrd-gnu.cpio adds the glibc build: appended to initrd.cpio (the kernel unpacks
# concatenated archives in turn) for a boot with monserv.binary=gnu. cmdline is the
# kernel command line the image is booted with.
# Needs the binaries from image/build-aarch64.sh and image/build-aarch64.sh gnu
# (MONSERV_BIN and MONSERV_GNU_BIN override).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${OUT:-$repo/target/qemu}
bin=${MONSERV_BIN:-$repo/target/aarch64-unknown-linux-musl/appliance/monserv}
gnu_bin=${MONSERV_GNU_BIN:-$repo/target/aarch64-unknown-linux-gnu/appliance/monserv}
[ -x "$bin" ] || { echo "no aarch64 monserv at $bin: run image/build-aarch64.sh" >&2; exit 1; }
[ -x "$gnu_bin" ] || { echo "no aarch64 glibc monserv at $gnu_bin: run image/build-aarch64.sh gnu" >&2; exit 1; }
for need in cpio:cpio mkfs.ext4:e2fsprogs; do
    command -v "${need%%:*}" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need#*:}"; }
done

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
APT::Sandbox::User "root";
CONF
export APT_CONFIG="$apt_dir/apt.conf"
compgen -G "$apt_dir/state/lists/*_Packages*" >/dev/null || apt-get update -qq
# The kernel the linux-image-arm64 metapackage points at today.
kernel_pkg=$(apt-cache depends linux-image-arm64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kernel_pkg" ] || { echo "cannot resolve linux-image-arm64" >&2; exit 1; }
if ! compgen -G "$apt_dir/debs/${kernel_pkg}_*.deb" >/dev/null; then
    (cd "$apt_dir/debs" && apt-get download -qq "$kernel_pkg" busybox-static)
fi
# glibc's runtime, for the glibc build of monserv (image/build-aarch64.sh gnu).
compgen -G "$apt_dir/debs/libc6_*.deb" >/dev/null || (cd "$apt_dir/debs" && apt-get download -qq libc6)
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
# Drivers the appliance needs, loaded by rcS in the order written to load-order: the
# virtio network and disk, and ext4 for the state partition. Dependencies come from
# each module's own .modinfo (no kmod needed on the build host).
moddir="$work/kernel/lib/modules/$kver"
declare -A loaded=()
order=()
load() {
    local name=$1 ko deps dep
    [ -n "${loaded[$name]:-}" ] && return
    ko=$(find "$moddir/kernel" -name "$name.ko" -print -quit)
    [ -n "$ko" ] || { echo "module $name not in $kernel_pkg" >&2; exit 1; }
    deps=$(tr '\0' '\n' < "$ko" | sed -n 's/^depends=//p' | head -1)
    for dep in ${deps//,/ }; do load "$dep"; done
    loaded[$name]=1
    order+=("$name")
    cp "$ko" "$root/lib/modules/"
}
# crc32c_generic: ext4 checksums its metadata with the crc32c crypto driver.
# qemu_fw_cfg: the test passes secrets as firmware config entries (see monserv-run).
for m in virtio_pci virtio_net virtio_blk crc32c_generic ext4 qemu_fw_cfg; do load "$m"; done
printf '%s\n' "${order[@]}" > "$root/lib/modules/load-order"
install -m 0755 "$bin" "$root/usr/bin/monserv"
# The licences of what the binary links (image/licenses/gen-third-party.py), and monserv's.
install -D -m 0644 "$repo/THIRD-PARTY-LICENSES" "$root/usr/share/monserv/THIRD-PARTY-LICENSES"
install -m 0644 "$repo/LICENSE-MIT" "$repo/LICENSE-APACHE" "$root/usr/share/monserv/"
cp -a "$repo/image/rootfs/." "$root/"
chmod 0755 "$root/etc/init.d/"*

# The glibc build (booted with monserv.binary=gnu), with the loader and the libraries
# it links: libc, libm (readelf -d). An archive of its own, so that the image's boot
# does not unpack 9 MB it does not run.
gnu="$work/gnu"
mkdir -p "$gnu/usr/bin" "$gnu/lib/aarch64-linux-gnu" "$work/libc6"
install -m 0755 "$gnu_bin" "$gnu/usr/bin/monserv-gnu"
dpkg-deb -x "$apt_dir"/debs/libc6_*.deb "$work/libc6"
for lib in ld-linux-aarch64.so.1 libc.so.6 libm.so.6; do
    cp -L "$work/libc6/lib/aarch64-linux-gnu/$lib" "$gnu/lib/aarch64-linux-gnu/$lib"
done
ln -sf aarch64-linux-gnu/ld-linux-aarch64.so.1 "$gnu/lib/ld-linux-aarch64.so.1"

# Not compressed: QEMU copies the file into guest memory at host speed, while
# decompressing under TCG took about 0.5 s of the boot.
(cd "$root" && find . | cpio -o -H newc --quiet) > "$out/initrd.cpio"
(cd "$gnu" && find . | cpio -o -H newc --quiet) > "$out/initrd-gnu.cpio"
# quiet: a serial console under emulation is slow to print to. cryptomgr.notests:
# Debian's generic kernel self-tests its crypto algorithms at boot (half a second
# here), which appliance kernels leave out (CONFIG_CRYPTO_MANAGER_DISABLE_TESTS).
echo "console=ttyAMA0 panic=-1 rdinit=/sbin/init quiet cryptomgr.notests" > "$out/cmdline"
# The small writable partition (a gateway's data partition): 16 MiB of ext4, empty.
# Boots copy it; the suite reads files back with debugfs, no mount needed.
rm -f "$out/state.img"
mkfs.ext4 -q -F -L monserv-state -E root_owner=0:0 "$out/state.img" 16M >/dev/null
echo "image: $out/vmlinuz ($kver), $out/initrd.cpio ($(stat -c %s "$out/initrd.cpio") bytes)," \
    "$out/initrd-gnu.cpio ($(stat -c %s "$out/initrd-gnu.cpio") bytes)"
