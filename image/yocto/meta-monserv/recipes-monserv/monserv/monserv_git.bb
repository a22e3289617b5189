SUMMARY = "Agentless SSH monitoring appliance speaking the MonServ WebSocket protocol"
DESCRIPTION = "monserv watches servers over SSH without agents, pushes live metrics and \
               alerts to browsers and dashboards over a WebSocket, and runs its alert logic as \
               sandboxed, hot-swappable WebAssembly rules."
HOMEPAGE = "https://github.com/monserv/monserv"
BUGTRACKER = "https://github.com/monserv/monserv/issues"
SECTION = "net"
LICENSE = "MIT | Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE-MIT;md5=482d209f51dfa13251fc20bf7159a9b8 \
                    file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

PV = "0.1.0+git"

# Point this at your mirror in a .bbappend; pin SRCREV to the commit you ship.
SRC_URI = "git://github.com/monserv/monserv.git;protocol=https;branch=main \
           file://monserv.toml \
           "
# Pin this to the commit you ship (AUTOREV follows the branch head, for development).
SRCREV ?= "${AUTOREV}"

inherit cargo cargo-update-recipe-crates systemd

# Every crate of Cargo.lock, fetched by BitBake (regenerate with
# image/yocto/gen-crates-inc.py or `bitbake -c update_crates monserv`).
require ${BPN}-crates.inc

# cargo.bbclass builds --release: size it like the appliance profile of Cargo.toml.
export CARGO_PROFILE_RELEASE_OPT_LEVEL = "z"
export CARGO_PROFILE_RELEASE_LTO = "true"
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS = "1"
export CARGO_PROFILE_RELEASE_PANIC = "abort"
# Without `rule new`/`rule build`, a workstation's tools (Cargo.toml, `authoring`).
# cargo.bbclass passes EXTRA_CARGO_FLAGS to `cargo build` (oelint does not know it).
# nooelint: oelint.vars.mispell
EXTRA_CARGO_FLAGS = "--no-default-features"

CVE_PRODUCT = "monserv"

SYSTEMD_SERVICE:${PN} = "monserv.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/systemd/monserv.service ${D}${systemd_system_unitdir}/monserv.service
    install -d ${D}${sysconfdir}/monserv
    install -m 0644 ${UNPACKDIR}/monserv.toml ${D}${sysconfdir}/monserv/monserv.toml
}

FILES:${PN} += "${systemd_system_unitdir}/monserv.service"
CONFFILES:${PN} = "${sysconfdir}/monserv/monserv.toml"
