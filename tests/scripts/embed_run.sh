#!/bin/sh
# embed_run.sh — examples/embed/embed.c against one install of libtierload, found with nothing
# but pkg-config (PKG_CONFIG_PATH: the install's pkgconfig folder). `pkg-config --cflags` must be
# -I and the install's include folder alone (the dependencies are for linking only), every -I
# and -L must lie inside the install, and the program must build with -Werror, link the
# install's library (shared: its libtierload.so; static: no libtierload.so at all), run on
# MODEL and print "ok" last. Used by check_pkgconfig.sh and check_deb.sh.
#
# usage: embed_run.sh shared|static SOURCE_DIR CC EXTRA_CFLAGS MODEL WORKDIR
set -eu
how=$1 src=$2 cc=$3 extra=$4 model=$5 work=$6
pcdir=${PKG_CONFIG_PATH:?"PKG_CONFIG_PATH: the pkgconfig folder of the install"}

fail() {
    echo "FAIL: $how: $*"
    exit 1
}

static=
[ "$how" = static ] && static=--static
cflags=$(pkg-config --cflags $static tierload)
libs=$(pkg-config --libs $static tierload)
echo "$how: cflags: $cflags"
echo "$how: libs:   $libs"
inc=$(pkg-config --variable=includedir tierload)
libdir=$(pkg-config --variable=libdir tierload)
[ -f "$inc/tierload.h" ] || fail "includedir $inc has no tierload.h"
# shellcheck disable=SC2086
set -- $cflags
[ $# -eq 1 ] && [ "$1" = "-I$inc" ] || fail "pkg-config --cflags${static:+ $static} tierload gives '$*', not just -I$inc"
for f in $cflags $libs; do
    case "$f" in
    -I* | -L*)
        case "${f#-?}" in
        "$pcdir"/*) ;;
        *) fail "pkg-config gives $f, outside the install ($pcdir)" ;;
        esac
        ;;
    esac
done

bin="$work/embed_$how"
# shellcheck disable=SC2086
"$cc" -std=c11 -Wall -Wextra -pedantic -Werror $extra $cflags "$src/examples/embed/embed.c" -o "$bin" $libs ||
    fail "build"
if [ "$how" = shared ]; then
    LD_LIBRARY_PATH="$libdir" ldd "$bin" | grep -q "$libdir/libtierload.so" ||
        fail "embed does not use the install's libtierload.so"
elif readelf -d "$bin" | grep -q libtierload; then
    fail "embed needs libtierload.so"
fi
LD_LIBRARY_PATH="$libdir" "$bin" "$model" >"$bin.out" 2>&1 || { cat "$bin.out"; fail "run"; }
tail -n 1 "$bin.out" | grep -qx ok || { cat "$bin.out"; fail "output"; }
