#!/bin/sh
# Both images: mount monserv's data partition (label monserv-data) at /var/lib/monserv,
# so host-key pins, uploaded rules and alert state survive a reboot (/var itself is
# rebuilt from the factory copy at every boot under a read-only root).
set -eu
TARGET_DIR="$1"
FSTAB="$TARGET_DIR/etc/fstab"
if ! grep -q '/var/lib/monserv' "$FSTAB" 2>/dev/null; then
	printf 'LABEL=monserv-data\t/var/lib/monserv\text4\tdefaults,noatime,nofail\t0\t2\n' >>"$FSTAB"
fi
mkdir -p "$TARGET_DIR/var/lib/monserv"
