SUMMARY = "Agentless SSH monitoring appliance speaking the MonServ WebSocket protocol"
DESCRIPTION = "monserv watches servers over SSH without agents, pushes live metrics and \
               alerts to browsers and dashboards over a WebSocket, and runs its alert logic as \
               sandboxed, hot-swappable WebAssembly rules."
HOMEPAGE = "https://github.com/monserv/monserv"
BUGTRACKER = "https://github.com/monserv/monserv/issues"
SECTION = "net"
LICENSE = "(MIT OR Apache-2.0) AND Apache-2.0 AND Apache-2.0 WITH LLVM-exception AND BSD-2-Clause AND BSD-3-Clause AND CC0-1.0 AND ISC AND MIT AND MIT-0 AND Unicode-3.0 AND Unlicense AND Zlib"
LIC_FILES_CHKSUM = "file://LICENSE-MIT;md5=482d209f51dfa13251fc20bf7159a9b8 \
                    file://LICENSE-APACHE;md5=89aea4e17d99a7cacdbeed46a0096b10 \
                    file://THIRD-PARTY-LICENSES;md5=adc71cb09d3873279278d0ddedd65490"

PV .= "+git"

# A release pins its commit, so parsing needs no network. To follow main instead,
# see the layer's README (an opt-in .bbappend with AUTOREV).
SRC_URI = "git://github.com/monserv/monserv.git;protocol=https;branch=main \
           file://monserv.toml \
           file://monserv.init \
           file://appliance.conf \
           "
# The commit this layer ships, set with monserv-crates.inc by
# image/yocto/gen-crates-inc.py --pin REV (CI checks that the two match).
SRCREV = "5a92378dd475384954c7fd41c4f42be9a94a4e04"

inherit cargo cargo-update-recipe-crates systemd update-rc.d useradd

# Every crate of the pinned commit's Cargo.lock, fetched by BitBake.
require ${BPN}-crates.inc

# cargo.bbclass builds --release: size it like the appliance profile of Cargo.toml.
export CARGO_PROFILE_RELEASE_OPT_LEVEL = "z"
export CARGO_PROFILE_RELEASE_LTO = "true"
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS = "1"
export CARGO_PROFILE_RELEASE_PANIC = "abort"
# Without unwind tables, as image/build-aarch64.sh links it (image/discard-eh-frame.ld:
# with panic = "abort" they only served backtraces; 1.4 MB with GNU ld). cargo.bbclass
# exports RUSTFLAGS, which with --target applies to the binary, not to build scripts.
RUSTFLAGS:append = " -C link-arg=-Wl,-T,${S}/image/discard-eh-frame.ld"
# Without `rule new`/`rule build`, a workstation's tools (Cargo.toml, `authoring`).
# cargo.bbclass passes EXTRA_CARGO_FLAGS to `cargo build` (oelint does not know it).
# nooelint: oelint.vars.mispell
EXTRA_CARGO_FLAGS = "--no-default-features"

CVE_PRODUCT = "monserv"

# A dedicated system user under every init: systemd runs the unit as it (the
# appliance drop-in), the SysV script through start-stop-daemon.
USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --user-group --home-dir ${localstatedir}/lib/monserv --no-create-home --shell /sbin/nologin monserv"

SYSTEMD_SERVICE:${PN} = "monserv.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"
INITSCRIPT_NAME = "monserv"
INITSCRIPT_PARAMS = "defaults 90 10"

do_install:append() {
    install -D -m 0644 ${S}/THIRD-PARTY-LICENSES ${D}${datadir}/monserv/THIRD-PARTY-LICENSES
    install -d ${D}${sysconfdir}/monserv
    install -m 0644 ${UNPACKDIR}/monserv.toml ${D}${sysconfdir}/monserv/monserv.toml
    if ${@bb.utils.contains('DISTRO_FEATURES', 'systemd', 'true', 'false', d)}; then
        install -d ${D}${systemd_system_unitdir}/monserv.service.d
        install -m 0644 ${S}/systemd/monserv.service ${D}${systemd_system_unitdir}/monserv.service
        install -m 0644 ${UNPACKDIR}/appliance.conf ${D}${systemd_system_unitdir}/monserv.service.d/appliance.conf
    fi
    if ${@bb.utils.contains('DISTRO_FEATURES', 'sysvinit', 'true', 'false', d)}; then
        install -d ${D}${sysconfdir}/init.d
        install -m 0755 ${UNPACKDIR}/monserv.init ${D}${sysconfdir}/init.d/monserv
    fi
}

FILES:${PN} += "${systemd_system_unitdir}/monserv.service ${systemd_system_unitdir}/monserv.service.d"
CONFFILES:${PN} = "${sysconfdir}/monserv/monserv.toml"
