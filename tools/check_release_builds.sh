#!/bin/sh
# check_release_builds.sh — build the project as users do, with each compiler, and fail on any
# warning: for every build type and compiler, configure a scratch build folder with
# -DTL_WERROR=ON, build everything (library, CLI, tests, benches) keeping going past errors,
# and count the compiler's warnings (with -Werror they appear as errors). CI runs it for
# Release with gcc and clang.
#
# usage: check_release_builds.sh [BUILD_TYPE...]      (default: Release)
# env:   COMPILERS   C compilers to try (default "gcc clang")
#        JOBS        parallel jobs (default: nproc)
#        TL_GGML_ROOT the ggml source build (make ggml), so that tests/ggml compile too
#                    (default: build/ggml when it has include/ggml.h; else they are left out)
#        CFLAGS      extra flags for every build (CMake reads them, and LDFLAGS, at configure
#                    time); Debian's hardening flags, with build type None as debhelper uses:
#                    CFLAGS="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
#                    LDFLAGS="$(dpkg-buildflags --get LDFLAGS)" check_release_builds.sh None
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
compilers=${COMPILERS:-gcc clang}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
[ $# -gt 0 ] || set -- Release
ggml=${TL_GGML_ROOT:-$src/build/ggml}
if [ -f "$ggml/include/ggml.h" ]; then with="with tests/ggml"; else ggml= with="without tests/ggml (no ggml build)"; fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tl_release_builds.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

bad=0
for type in "$@"; do
    for cc in $compilers; do
        if ! command -v "$cc" >/dev/null 2>&1; then
            echo "$type $cc: FAIL: no $cc on PATH"
            bad=1
            continue
        fi
        dir="$tmp/$type-$cc"
        log="$dir.log"
        rc=0
        { cmake -S "$src" -B "$dir" -G "Unix Makefiles" -DCMAKE_BUILD_TYPE="$type" \
              -DCMAKE_C_COMPILER="$cc" -DTL_WERROR=ON ${ggml:+"-DTL_GGML_ROOT=$ggml"} &&
              cmake --build "$dir" -j "$jobs" -- -k; } >"$log" 2>&1 || rc=$?
        # a warning, or a warning that -Werror made an error ("[-Werror=...]", "[-Werror,...]")
        n=$(grep -c -E 'warning:|\[-Werror' "$log" || true)
        if [ "$rc" -ne 0 ] || [ "$n" -ne 0 ]; then
            grep -E 'warning:|error:' "$log" | head -n 40
            echo "$type $cc: FAIL: $n warnings, build status $rc, $with (CFLAGS='${CFLAGS:-}')"
            bad=1
        else
            echo "$type $cc: 0 warnings, $with (CFLAGS='${CFLAGS:-}')"
        fi
        rm -rf "$dir"
    done
done
exit "$bad"
