#!/bin/sh
# fuzz.sh — run every libFuzzer target built in BUILD_DIR for SECONDS each.
#
# Usage: tools/fuzz.sh BUILD_DIR SECONDS
#
# For each BUILD_DIR/fuzz_<name>: first replays fuzz/regressions/fuzz_<name>/*
# (past crashes, must stay fixed), then fuzzes for SECONDS from a temporary
# copy of fuzz/corpus/fuzz_<name> (the committed corpus never grows), with
# -rss_limit_mb=2048 -max_len=65536 -timeout=10 and leak detection on.
# Prints one summary line per target with its execution count; exits non-zero
# when any target crashes, leaks, trips a sanitizer, times out or is missing.
# Crash inputs and logs are kept in BUILD_DIR/fuzz-out/<target>/.
set -u

if [ $# -ne 2 ]; then
    echo "usage: $0 BUILD_DIR SECONDS" >&2
    exit 2
fi
build=$1
secs=$2
case $secs in '' | *[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
[ -d "$build" ] || { echo "fuzz.sh: no build folder $build" >&2; exit 2; }
build=$(cd "$build" && pwd)

targets=$(find "$build" -maxdepth 1 -type f -name 'fuzz_*' -perm -u+x | sort)
if [ -z "$targets" ]; then
    echo "fuzz.sh: no fuzz_* programs in $build (configure with -DTL_FUZZ=ON -DCMAKE_C_COMPILER=clang)" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/tlfuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

failed=0
for bin in $targets; do
    name=$(basename "$bin")
    out="$build/fuzz-out/$name"
    rm -rf "$out"
    mkdir -p "$out" "$work/$name/corpus"
    seeds="$root/fuzz/corpus/$name"
    regs="$root/fuzz/regressions/$name"
    n_seeds=0
    if [ -d "$seeds" ]; then
        cp -R "$seeds/." "$work/$name/corpus/" 2>/dev/null
        n_seeds=$(find "$seeds" -type f | wc -l)
    fi
    # 1. Past crashes must stay fixed.
    if [ -d "$regs" ] && [ -n "$(find "$regs" -type f | head -n 1)" ]; then
        if ! find "$regs" -type f -print0 | xargs -0 "$bin" -rss_limit_mb=2048 -timeout=10 \
            >"$out/regressions.log" 2>&1; then
            echo "$name: FAIL: a regression input crashes again (see $out/regressions.log)"
            grep -m 1 -A 25 -e 'ERROR:' -e 'runtime error:' "$out/regressions.log" | sed 's/^/    /'
            failed=1
            continue
        fi
        cp -R "$regs/." "$work/$name/corpus/" 2>/dev/null
    fi
    # 2. Fuzz.
    "$bin" "$work/$name/corpus" -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 \
        -timeout=10 -print_final_stats=1 -artifact_prefix="$out/" >"$out/fuzz.log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/fuzz.log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$out/fuzz.log" | tail -n 1 | sed 's/cov: //')
    n_out=$(find "$work/$name/corpus" -type f | wc -l)
    artifacts=$(find "$out" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
    if [ "$rc" -ne 0 ] || [ "$artifacts" -ne 0 ] || grep -q -e 'ERROR: AddressSanitizer' \
        -e 'ERROR: LeakSanitizer' -e 'runtime error:' -e 'ERROR: libFuzzer' "$out/fuzz.log"; then
        echo "$name: FAIL (exit $rc) after ${execs:-?} executions; inputs and log in $out/"
        grep -m 1 -A 25 -e 'ERROR:' -e 'runtime error:' "$out/fuzz.log" | sed 's/^/    /'
        failed=1
    else
        echo "$name: ok, ${execs:-?} executions in ${secs}s, coverage ${cov:-?}, corpus $n_seeds -> $n_out inputs"
    fi
done
exit $failed
