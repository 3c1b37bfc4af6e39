#!/bin/sh
# check_pkgconfig.sh — an engine's view of an install: `cmake --install` to a
# temporary prefix, then examples/embed/embed.c built with nothing but
# `pkg-config tierload` (shared, then --static against a prefix that has only
# the archive) and run on a test model. `pkg-config --cflags tierload` must be
# exactly -I and the installed include folder (the dependencies' flags are
# for linking only, and only for a static link).
#
# usage: check_pkgconfig.sh BUILD_DIR SOURCE_DIR CC [EXTRA_CFLAGS]
set -eu
build=$1 src=$2 cc=$3 extra=${4:-}
model=${TL_TESTDATA:-$src/../shared/testdata}/gguf/tiny-llama-q4_0.gguf
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tl_pkgconfig.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*"; exit 1; }

install_to() {
    cmake --install "$build" --prefix "$1" >"$tmp/install.log" 2>&1 ||
        { cat "$tmp/install.log"; fail "cmake --install --prefix $1"; }
    pc=$(find "$1" -name tierload.pc | head -n 1)
    [ -n "$pc" ] || fail "no tierload.pc under $1"
    dirname "$pc"
}

# --- shared ---
pcdir=$(install_to "$tmp/shared")
export PKG_CONFIG_PATH="$pcdir"
cflags=$(pkg-config --cflags tierload)
libs=$(pkg-config --libs tierload)
echo "shared: cflags: $cflags"
echo "shared: libs:   $libs"
case "$cflags $libs" in
*/usr/local*) fail "pkg-config points at /usr/local, not the install prefix" ;;
esac
inc=$(pkg-config --variable=includedir tierload)
[ -f "$inc/tierload.h" ] || fail "includedir $inc has no tierload.h"
only_include() { # $1: the flags, $2: what they are
    what=$2
    # shellcheck disable=SC2086
    set -- $1
    [ $# -eq 1 ] && [ "$1" = "-I$inc" ] || fail "$what gives '$*', not just -I$inc"
}
only_include "$cflags" "pkg-config --cflags tierload"
# shellcheck disable=SC2086
"$cc" -std=c11 -Wall -Wextra -pedantic -Werror $extra $cflags "$src/examples/embed/embed.c" -o "$tmp/embed_shared" $libs ||
    fail "shared build"
libdir=$(pkg-config --variable=libdir tierload)
LD_LIBRARY_PATH="$libdir" "$tmp/embed_shared" "$model" >"$tmp/out_shared" 2>&1 ||
    { cat "$tmp/out_shared"; fail "shared run"; }
tail -n 1 "$tmp/out_shared" | grep -qx ok || { cat "$tmp/out_shared"; fail "shared output"; }
LD_LIBRARY_PATH="$libdir" ldd "$tmp/embed_shared" | grep -q "$libdir/libtierload.so" ||
    fail "the shared build does not use the installed libtierload.so"
# the installed CLI finds the installed library by itself (RPATH relative to its own place)
"$tmp/shared/bin/tierload" devices >"$tmp/out_cli" 2>&1 || { cat "$tmp/out_cli"; fail "installed CLI"; }
grep -q "^cpu " "$tmp/out_cli" || { cat "$tmp/out_cli"; fail "installed CLI output"; }

# --- static: a prefix with only libtierload.a, so -ltierload can only mean the archive ---
pcdir=$(install_to "$tmp/static")
export PKG_CONFIG_PATH="$pcdir"
libdir=$(pkg-config --variable=libdir tierload)
rm -f "$libdir"/libtierload.so*
[ -f "$libdir/libtierload.a" ] || fail "no libtierload.a in $libdir"
cflags=$(pkg-config --cflags --static tierload)
libs=$(pkg-config --libs --static tierload)
inc=$(pkg-config --variable=includedir tierload)
only_include "$cflags" "pkg-config --cflags --static tierload"
echo "static: libs:   $libs"
# shellcheck disable=SC2086
"$cc" -std=c11 -Wall -Wextra -pedantic -Werror $extra $cflags "$src/examples/embed/embed.c" -o "$tmp/embed_static" $libs ||
    fail "static build"
"$tmp/embed_static" "$model" >"$tmp/out_static" 2>&1 || { cat "$tmp/out_static"; fail "static run"; }
tail -n 1 "$tmp/out_static" | grep -qx ok || { cat "$tmp/out_static"; fail "static output"; }
if readelf -d "$tmp/embed_static" | grep -q "libtierload"; then fail "static build needs libtierload.so"; fi
echo "pkg-config builds (shared and static) ran"
