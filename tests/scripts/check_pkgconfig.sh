#!/bin/sh
# check_pkgconfig.sh — an engine's view of an install: `cmake --install` to a
# temporary prefix, then examples/embed/embed.c built with nothing but
# `pkg-config tierload` (shared, then --static against a prefix that has only
# the archive) and run on a test model (tests/scripts/embed_run.sh, which also
# holds `pkg-config --cflags tierload` to the install's include folder alone).
#
# usage: check_pkgconfig.sh BUILD_DIR SOURCE_DIR CC [EXTRA_CFLAGS]
set -eu
build=$1 src=$2 cc=$3 extra=${4:-}
model=${TL_TESTDATA:?TL_TESTDATA: the test data, made by the testdata fixture}/gguf/tiny-llama-q4_0.gguf
if [ ! -f "$model" ]; then
    # the test data's maker says why it made no GGUFs (no npm or git): a skip, a failure in CI
    why=$(cat "$TL_TESTDATA/unavailable.txt" 2>/dev/null) || { echo "FAIL: $model: no such file"; exit 1; }
    echo "SKIP: $model: not made: $why"
    case ${CI:-} in true | 1) exit 1 ;; esac
    exit 77
fi
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
PKG_CONFIG_PATH="$pcdir" sh "$src/tests/scripts/embed_run.sh" shared "$src" "$cc" "$extra" "$model" "$tmp"
# the installed CLI finds the installed library by itself (RPATH relative to its own place)
"$tmp/shared/bin/tierload" devices >"$tmp/out_cli" 2>&1 || { cat "$tmp/out_cli"; fail "installed CLI"; }
grep -q "^cpu " "$tmp/out_cli" || { cat "$tmp/out_cli"; fail "installed CLI output"; }

# --- static: a prefix with only libtierload.a, so -ltierload can only mean the archive ---
pcdir=$(install_to "$tmp/static")
libdir=$(PKG_CONFIG_PATH="$pcdir" pkg-config --variable=libdir tierload)
rm -f "$libdir"/libtierload.so*
[ -f "$libdir/libtierload.a" ] || fail "no libtierload.a in $libdir"
PKG_CONFIG_PATH="$pcdir" sh "$src/tests/scripts/embed_run.sh" static "$src" "$cc" "$extra" "$model" "$tmp"
echo "pkg-config builds (shared and static) ran"
