SUMMARY = "A minimal gateway image running monserv under systemd"
DESCRIPTION = "A read-only gateway image with systemd and monserv, its state on /var/lib/monserv."
LICENSE = "MIT"

inherit core-image

IMAGE_FEATURES += "read-only-rootfs"
IMAGE_INSTALL:append = " monserv"

# monserv's state (known_hosts, rules) lives under /var/lib/monserv, the StateDirectory
# of its unit; give it a persistent writable partition on real hardware.
