#!/usr/bin/env bash
# Pins the Buildroot package to a commit and records the hash of the archive Buildroot
# makes of it. With BR2_DOWNLOAD_FORCE_CHECK_HASHES (both defconfigs) a download whose
# name has no line in monserv.hash is rejected, and that archive is Buildroot's own:
# the GitHub tarball unpacked, `cargo vendor`ed and repacked reproducibly by
# support/download/cargo-post-process. So its hash comes from Buildroot itself, here
# on loopback: `git archive` of the commit (what GitHub serves) is the site.
#
#   image/buildroot/pin.sh --check              # offline, CI: the pin and the hash file agree
#   image/buildroot/pin.sh REV /path/to/buildroot
#       pin MONSERV_VERSION to REV, compute the archive's hash with that Buildroot's
#       `make monserv-source`, then check it with hashes forced (`make monserv-legal-info`
#       from an empty download directory). Needs crates.io (cargo vendor) and GNU tar
#       1.35 or later on PATH (else Buildroot builds host-tar, a download of its own).
set -euo pipefail
work='' server=''

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
pkg=$here/package/monserv
recipe=$(echo "$repo"/image/yocto/meta-monserv/recipes-monserv/monserv/monserv_*.bb)
licenses=(LICENSE-MIT LICENSE-APACHE THIRD-PARTY-LICENSES)

die() { printf 'pin.sh: %s\n' "$*" >&2; exit 1; }
version() { sed -n 's/^MONSERV_VERSION = \([0-9a-f]\{40\}\)$/\1/p' "$pkg/monserv.mk"; }
# The sha256 of FILE as committed at REV (what the archive of REV holds).
blob_sha() { git -C "$repo" show "$1:$2" | sha256sum | cut -d' ' -f1; }
hash_of() { awk -v f="$1" '$1 == "sha256" && $3 == f { print $2 }' "$pkg/monserv.hash"; }

check() {
    local v srcrev f want have
    v=$(version)
    [ -n "$v" ] || die "monserv.mk: no 'MONSERV_VERSION = <40 hex digits>' line (a release pins its commit)"
    srcrev=$(sed -n 's/^SRCREV = "\([0-9a-f]\{40\}\)"$/\1/p' "$recipe")
    [ "$v" = "$srcrev" ] || die "monserv.mk pins $v but $(basename "$recipe") builds $srcrev: pin both to one commit"
    git -C "$repo" cat-file -e "$v^{commit}" 2>/dev/null || die "MONSERV_VERSION $v is not a commit of this repository"
    grep -Eq "^sha256  [0-9a-f]{64}  monserv-$v-cargo[0-9]+\.tar\.gz$" "$pkg/monserv.hash" ||
        die "monserv.hash has no archive hash for monserv-$v-cargoN.tar.gz: run pin.sh $v /path/to/buildroot"
    for f in "${licenses[@]}"; do
        want=$(blob_sha "$v" "$f")
        have=$(hash_of "$f")
        [ "$want" = "$have" ] || die "monserv.hash: $f is ${have:-missing}, but $f at $v hashes to $want"
    done
    echo "pin.sh: Buildroot and Yocto build $v; monserv.hash has its archive and licence files"
}

pin() {
    local rev=$1 br=$2 v suffix port file sum
    v=$(git -C "$repo" rev-parse --verify "$rev^{commit}") || die "$rev is not a commit"
    [ -f "$br/package/pkg-download.mk" ] || die "$br is not a Buildroot tree"
    suffix=$(sed -n 's/^BR_FMT_VERSION_cargo = //p' "$br/package/pkg-download.mk")
    [ -n "$suffix" ] || die "$br/package/pkg-download.mk: no BR_FMT_VERSION_cargo"
    file=monserv-$v$suffix.tar.gz
    work=$(mktemp -d)
    trap 'kill "${server:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
    mkdir -p "$work/site"
    git -C "$repo" archive --format=tar --prefix="monserv-$v/" "$v" | gzip -n >"$work/site/$file"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/site" >"$work/http.log" 2>&1 &
    server=$!
    sed -i "s/^MONSERV_VERSION = .*/MONSERV_VERSION = $v/" "$pkg/monserv.mk"
    # Loopback only: no other package is fetched, no backup mirror is asked, and the
    # host Rust is this machine's cargo (host-rustc would be a download).
    local -a make_args=(-C "$br" BR2_EXTERNAL="$here" MONSERV_SITE="http://127.0.0.1:$port"
        MONSERV_DOWNLOAD_DEPENDENCIES= BR2_PRIMARY_SITE= BR2_BACKUP_SITE=)
    make -s "${make_args[@]}" O="$work/out1" monserv_qemu_aarch64_virt_defconfig >/dev/null
    make -s "${make_args[@]}" O="$work/out2" monserv_qemu_aarch64_virt_defconfig >/dev/null
    make "${make_args[@]}" O="$work/out1" BR2_DL_DIR="$work/dl1" BR2_DOWNLOAD_FORCE_CHECK_HASHES= \
        BR_NO_CHECK_HASH_FOR="$file" monserv-source >"$work/source.log" 2>&1 ||
        { tail -20 "$work/source.log" >&2; die "make monserv-source failed (log above)"; }
    sum=$(sha256sum "$work/dl1/monserv/$file" | cut -d' ' -f1)
    {
        echo "# Locally computed: Buildroot's own download and cargo post-process (make"
        echo "# monserv-source) of the commit in MONSERV_VERSION, vendored crates included;"
        echo "# image/buildroot/pin.sh redoes it."
        echo "sha256  $sum  $file"
        echo "# Locally computed"
        for f in "${licenses[@]}"; do
            echo "sha256  $(blob_sha "$v" "$f")  $f"
        done
    } >"$pkg/monserv.hash"
    # The proof: from an empty download directory, with hashes forced as the defconfigs
    # have them, the archive and every licence file check out.
    make "${make_args[@]}" O="$work/out2" BR2_DL_DIR="$work/dl2" monserv-legal-info >"$work/legal.log" 2>&1 ||
        { tail -20 "$work/legal.log" >&2; die "make monserv-legal-info with hashes forced failed (log above)"; }
    grep -E ': OK \(sha256' "$work/legal.log"
    echo "pin.sh: monserv.mk pins $v; monserv.hash has $file (pin the Yocto recipe too: gen-crates-inc.py --pin $v)"
}

case "${1:-}" in
--check) check ;;
-h | --help | "") sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' ;;
*) [ $# -eq 2 ] || die "usage: pin.sh --check | pin.sh REV BUILDROOT_DIR"; pin "$1" "$2" ;;
esac
