#!/bin/sh
# check_deb.sh — the Debian package as a user gets it: `cpack -G DEB` over the build folder
# makes one .deb; its control fields name the package, the version include/tierload.h states,
# a maintainer and this machine's architecture, and its Depends has the Debian package of each
# shared library its binaries need; `dpkg-deb -x` unpacks it into a temporary folder (nothing
# is installed on the system); examples/embed/embed.c builds there with nothing but
# `pkg-config tierload` (the .pc file finds the unpacked prefix by itself) and runs on a model
# that the package's own CLI writes.
#
# usage: check_deb.sh BUILD_DIR SOURCE_DIR CC [EXTRA_CFLAGS]
set -eu
build=$1 src=$2 cc=$3 extra=${4:-}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tl_deb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

fail() {
    echo "FAIL: $*"
    exit 1
}
skip() {
    if [ "${CI:-}" = true ]; then fail "$* (CI=true: a missing dependency is a failure)"; fi
    echo "SKIP: $*"
    exit 77
}
for t in cpack dpkg dpkg-deb readelf pkg-config; do
    command -v "$t" >/dev/null 2>&1 || skip "no $t (a Debian system with dpkg-dev and binutils)"
done

# the version, as the header states it
version=
for part in MAJOR MINOR PATCH; do
    v=$(sed -n "s/^#define TL_VERSION_$part  *\([0-9][0-9]*\)$/\1/p" "$src/include/tierload.h")
    [ -n "$v" ] || fail "include/tierload.h: no TL_VERSION_$part"
    version="$version${version:+.}$v"
done

cpack -G DEB --config "$build/CPackConfig.cmake" -B "$tmp/pkg" >"$tmp/cpack.log" 2>&1 ||
    { cat "$tmp/cpack.log"; fail "cpack -G DEB"; }
set -- "$tmp"/pkg/*.deb
[ $# -eq 1 ] && [ -f "$1" ] || { cat "$tmp/cpack.log"; fail "cpack made $# .deb files, not 1"; }
deb=$1
echo "package: $(basename "$deb")"

field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = tierload ] || fail "Package: '$(field Package)', not tierload"
[ "$(field Version)" = "$version" ] || fail "Version: '$(field Version)', not $version (tierload.h)"
[ -n "$(field Maintainer)" ] || fail "no Maintainer"
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] ||
    fail "Architecture: '$(field Architecture)', not $(dpkg --print-architecture)"
depends=$(field Depends)
echo "Depends: $depends"

dpkg-deb -x "$deb" "$tmp/root" || fail "dpkg-deb -x"
root=$tmp/root
for f in usr/bin/tierload usr/include/tierload.h usr/share/man/man1/tierload.1; do
    [ -f "$root/$f" ] || fail "the package has no /$f"
done
pc=$(find "$root" -name tierload.pc)
[ -n "$pc" ] || fail "the package has no tierload.pc"
pcdir=$(dirname "$pc")

# Depends: for each library the package's ELF files need (other than its own), the Debian
# package that has it, as dpkg knows it on this machine
needed=$(find "$root" -type f \( -name tierload -o -name 'libtierload.so*' \) -exec readelf -d {} + |
    sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p' | sort -u | grep -v '^libtierload\.')
[ -n "$needed" ] || fail "readelf finds no NEEDED libraries in the package"
for so in $needed; do
    owners=$(dpkg -S "*/$so" 2>/dev/null | sed 's/[:,].*//' | sort -u)
    [ -n "$owners" ] || fail "dpkg -S: no package on this machine has $so"
    ok=
    for p in $owners; do
        case ", $depends," in *", $p "* | *", $p,"*) ok=$p ;; esac
    done
    [ -n "$ok" ] || fail "Depends lacks the package of $so (one of: $(echo $owners))"
done

# the package's CLI runs from the unpacked tree (it finds its library relative to itself)
[ "$("$root/usr/bin/tierload" --version)" = "tierload $version" ] || fail "unpacked tierload --version"
"$root/usr/bin/tierload" mkmodel "$tmp/m.gguf" --size 1M --tensors 36 >"$tmp/mk.log" 2>&1 ||
    { cat "$tmp/mk.log"; fail "unpacked tierload mkmodel"; }

# an engine built against the unpacked package with pkg-config
PKG_CONFIG_PATH="$pcdir" sh "$src/tests/scripts/embed_run.sh" shared "$src" "$cc" "$extra" "$tmp/m.gguf" "$tmp"
echo "the .deb unpacks, and embed builds with pkg-config against it and runs"
