################################################################################
#
# monserv
#
################################################################################

# A pinned commit, the one meta-monserv's recipe builds (its SRCREV): the archive
# Buildroot makes of it, vendored crates included, has its hash in monserv.hash.
MONSERV_VERSION = 5a92378dd475384954c7fd41c4f42be9a94a4e04
MONSERV_SITE = $(call github,monserv,monserv,$(MONSERV_VERSION))
MONSERV_LICENSE = MIT or Apache-2.0 (monserv), Apache-2.0, Apache-2.0 WITH LLVM-exception, BSD-2-Clause, BSD-3-Clause, CC0-1.0, ISC, MIT, MIT-0, Unicode-3.0, Unlicense, Zlib (linked crates)
MONSERV_LICENSE_FILES = LICENSE-MIT LICENSE-APACHE THIRD-PARTY-LICENSES

# cargo-package forces --release: size it like Cargo.toml's appliance profile.
MONSERV_CARGO_ENV = \
	CARGO_PROFILE_RELEASE_OPT_LEVEL=z \
	CARGO_PROFILE_RELEASE_LTO=true \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
	CARGO_PROFILE_RELEASE_PANIC=abort \
	CARGO_PROFILE_RELEASE_STRIP=true
# Without unwind tables, as image/build-aarch64.sh links it (image/discard-eh-frame.ld:
# panic = "abort", so they only served backtraces; 1.4 MB with GNU ld). Buildroot's own flag
# for 32-bit ARM is kept, since this variable replaces it.
MONSERV_RUSTFLAGS = -Clink-arg=-Wl,-T,$(@D)/image/discard-eh-frame.ld
ifeq ($(NORMALIZED_ARCH),arm)
MONSERV_RUSTFLAGS += -Clink-arg=-Wl,--allow-multiple-definition
endif
MONSERV_CARGO_ENV += \
	CARGO_TARGET_$(call UPPERCASE,$(RUSTC_TARGET_NAME))_RUSTFLAGS="$(MONSERV_RUSTFLAGS)"
# Without `rule new`/`rule build`, a workstation's tools (Cargo.toml, `authoring`).
MONSERV_CARGO_BUILD_OPTS = --bin monserv --no-default-features

define MONSERV_INSTALL_CONFIG
	$(INSTALL) -D -m 0644 $(MONSERV_PKGDIR)/monserv.toml \
		$(TARGET_DIR)/etc/monserv/monserv.toml
endef
MONSERV_POST_INSTALL_TARGET_HOOKS += MONSERV_INSTALL_CONFIG

# The licences of the crates linked into the binary ship with it.
define MONSERV_INSTALL_LICENSES
	$(INSTALL) -D -m 0644 $(@D)/THIRD-PARTY-LICENSES \
		$(TARGET_DIR)/usr/share/monserv/THIRD-PARTY-LICENSES
endef
MONSERV_POST_INSTALL_TARGET_HOOKS += MONSERV_INSTALL_LICENSES

# A dedicated system user under every init (systemd: the appliance.conf drop-in, in
# place of DynamicUser, so the state stays on the data partition; SysV: S99monserv).
define MONSERV_USERS
	monserv -1 monserv -1 * /var/lib/monserv - - monserv monitoring appliance
endef

define MONSERV_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/systemd/monserv.service \
		$(TARGET_DIR)/usr/lib/systemd/system/monserv.service
	$(INSTALL) -D -m 0644 $(MONSERV_PKGDIR)/appliance.conf \
		$(TARGET_DIR)/usr/lib/systemd/system/monserv.service.d/appliance.conf
endef

define MONSERV_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(MONSERV_PKGDIR)/S99monserv \
		$(TARGET_DIR)/etc/init.d/S99monserv
endef

$(eval $(cargo-package))
