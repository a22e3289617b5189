SUMMARY = "A minimal gateway image running monserv"
DESCRIPTION = "A read-only gateway image with monserv and nothing it does not need; \
               its state on a persistent data partition mounted at /var/lib/monserv."
LICENSE = "MIT"

# Only what boots the device and monserv: not core-image's default IMAGE_INSTALL
# (no avahi, rpcbind, bluez or alsa-utils on a security appliance).
IMAGE_INSTALL = "packagegroup-core-boot monserv ${CORE_IMAGE_EXTRA_INSTALL}"
IMAGE_LINGUAS = ""

inherit core-image

IMAGE_FEATURES += "read-only-rootfs"

# /var/lib is volatile under a read-only root (volatile-binds): without a partition of
# its own, host-key pins and uploaded rules would be gone at every boot. The wic
# layout (files/wic/monserv-image.wks) makes one, labelled monserv-data; this line mounts it
# wherever the product's own layout puts it.
WKS_FILE ?= "monserv-image.wks"
ROOTFS_POSTPROCESS_COMMAND += "monserv_data_partition"
monserv_data_partition() {
    if ! grep -q '${localstatedir}/lib/monserv' ${IMAGE_ROOTFS}${sysconfdir}/fstab; then
        printf 'LABEL=monserv-data\t${localstatedir}/lib/monserv\text4\tdefaults,noatime,nofail\t0\t2\n' >> ${IMAGE_ROOTFS}${sysconfdir}/fstab
    fi
    install -d ${IMAGE_ROOTFS}${localstatedir}/lib/monserv
}
