#!/bin/sh
# tools/mutants.sh — the project's mutation runner: each mutant below is one small semantic
# change (a sed expression on one file) and the tests that must fail with it. Each is applied
# alone to a scratch copy of the working tree (tracked and untracked files, not the build),
# the named tests are rebuilt and run, and the file is put back. Prints the kill table; exits
# 1 when a mutant survives, did not apply (its text is gone: update the expression) or broke
# the build. Not part of ctest or CI (minutes per run); `make mutants` runs it.
#
# usage: tools/mutants.sh [BUILD] [FILTER]
#   BUILD   the project's build folder (default build): its ggml build (TL_GGML_ROOT) and
#           test data (BUILD/testdata) are reused, never made again in the scratch copy
#   FILTER  run only the mutants whose id contains this text
# TL_MUTANTS_DIR keeps the scratch copy there (reused between runs) instead of a temp folder.
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-build}
FILTER=${2:-}
JOBS=${JOBS:-2}

# id @ file @ sed expression @ tests (ctest names, space-separated) that must fail
MUTANTS=$(cat <<'EOF'
lru-evicts-mru@src/residency/session.c@s/return a->last_use < b->last_use; \/\* the least recently used/return a->last_use > b->last_use; \/* the least recently used/@test_session_policy
acquire-skips-prefetch-wait@src/residency/session.c@s/^        if (waiting) {$/        if (false) {/@test_session_policy
lru-resident-before-streamed@src/residency/session.c@s/!= b->pl.streamed) return a->pl.streamed;/!= b->pl.streamed) return b->pl.streamed;/@test_session_policy
furthest-evicts-soonest@src/residency/session.c@s/return a->nu > b->nu; \/\* the furthest next use/return a->nu < b->nu; \/* the furthest next use/@test_session_policy
next-use-kept-stale@src/residency/session.c@s/^                    replace_step_units_locked(s, \&s->steps\[j\]);$/                    (void)0;/@test_session_policy
lru-list-insert-at-tail@src/residency/session.c@s/^        while (evict_before(s, u, \&s->u\[after\]))$/        while (0)/@test_session_policy
prefetch-evicts-sooner@src/residency/session.c@s/size_t before = prefetch \&\& s->steps ? next_use_locked(s, u) : (size_t)-1;/size_t before = (size_t)-1;/@test_session_policy
release-per-tensor@src/residency/session.c@s/unref_locked(s, a->units, a->n_units);/unref_locked(s, a->units, a->n);/@test_session_policy
spill-gap-offset-kept@src/residency/session.c@s/^            s->free_ext\[i\].off += len;$/            (void)0;/@test_session_policy
spill-tail-kept@src/residency/session.c@s/if (off + len == s->spill_end) {/if (0) {/@test_session_policy
optimum-evicts-needed@src/residency/optimum.c@s/ || in_step\[u\[k\].group\]) continue;/) continue;/@test_session_policy
io-prefetch-before-demand@src/io/engine.c@s/for (int p = 0; p < TL_IO_PRIOS \&\& !b; p++)/for (int p = TL_IO_PRIOS - 1; p >= 0 \&\& !b; p--)/@test_io_engine
io-cancel-ignored@src/io/engine.c@s/^        b->cancel = true;$/        (void)0;/@test_io_engine
io-cancel-queued-never-finishes@src/io/engine.c@s/^    if (b->busy == 0 \&\& !b->reporting) {$/    if (0) {/@test_io_engine
touch-slow-run-never-reset@src/io/touch.c@s/^                atomic_store(\&t->slow_run, 0);$/                (void)0;/@test_touch
touch-judges-slivers@src/io/touch.c@s/if ((uint64_t)(step - p) == HUGE) {/if (1) {/@test_touch
zip64-extra-no-advance@src/format/zip.c@s/if (need_u) e->usize = u64(p), p += 8;/if (need_u) e->usize = u64(p);/@test_zip
layer-key-without-length@src/model/group.c@s/t->s\[j\].comp == comp \&\& t->s\[j\].len == n \&\& /t->s[j].comp == comp \&\& /@test_groups
python-read-ignores-offset@bindings/python/tierload/__init__.py@s/tl_model_tensor_read(self.handle, t.index, offset, buf, n)/tl_model_tensor_read(self.handle, t.index, 0, buf, n)/@python
run-checks-nothing@src/residency/run.c@/^static tl_status check(run \*r/,/^}/ s/i < tl_acquired_count(a); i++/i < tl_acquired_count(a) \&\& !r; i++/@test_run_cli
ckpt-storage-offset-ignored@src/format/ckpt.c@s/t->offset = e->offset + off_bytes;/t->offset = e->offset;/@test_ckpt
ckpt-strides-ignored@src/format/ckpt.c@s/if (sz != 1 \&\& sd != expect) contiguous = false;/(void)0;/@test_ckpt
EOF
)

# the source build's ggml (TL_GGML_ROOT) and finished test data are reused, never made again here
ggml_root=""
if [ -f "$BUILD/CMakeCache.txt" ]; then
    ggml_root=$(sed -n 's/^TL_GGML_ROOT:PATH=//p' "$BUILD/CMakeCache.txt")
fi

if [ -n "${TL_MUTANTS_DIR:-}" ]; then
    scratch=$TL_MUTANTS_DIR
    mkdir -p "$scratch"
    keep=1
else
    scratch=$(mktemp -d "${TMPDIR:-/tmp}/tl-mutants.XXXXXX")
    keep=0
fi
tree=$scratch/src
bld=$scratch/build
cleanup() { [ "$keep" = 1 ] || rm -rf "$scratch"; }
trap cleanup EXIT INT TERM

# the working tree as it is now (uncommitted changes included), without build folders; a
# kept scratch copy only gets the files that differ (so its build stays incremental)
mkdir -p "$tree"
(cd "$SRC" && git ls-files --cached --others --exclude-standard) | while IFS= read -r f; do
    [ -f "$SRC/$f" ] || continue
    if ! cmp -s "$SRC/$f" "$tree/$f" 2>/dev/null; then
        mkdir -p "$tree/$(dirname "$f")"
        cp "$SRC/$f" "$tree/$f"
    fi
done

cfg="-DCMAKE_BUILD_TYPE=RelWithDebInfo"
[ -n "$ggml_root" ] && cfg="$cfg -DTL_GGML_ROOT=$ggml_root"
# shellcheck disable=SC2086
cmake -S "$tree" -B "$bld" $cfg >/dev/null
if [ -d "$BUILD/testdata" ] && [ ! -e "$bld/testdata" ]; then
    ln -s "$(cd "$BUILD/testdata" && pwd)" "$bld/testdata"
fi

# targets of the named tests (ctest names that are programs; "python" needs the shared library)
targets_of() {
    t="tierload tierload_cli"
    for n in $1; do
        [ -f "$tree/tests/$n.c" ] && t="$t $n"
    done
    echo "$t"
}

run_tests() { # $1: tests; returns 0 when all pass
    re=$(echo "$1" | sed 's/ /|/g')
    # the testdata fixture is not run here (it may build ggml): tests use the source build's data
    (cd "$bld" && ctest -R "^($re)\$" -FA testdata --timeout 240 --output-on-failure \
        >"$scratch/last.log" 2>&1)
}

echo "$MUTANTS" | while IFS='@' read -r id file expr tests; do
    case "$id" in *"$FILTER"*) ;; *) continue ;; esac
    echo "$id@$file@$expr@$tests"
done >"$scratch/list"

all_tests=$(cut -d'@' -f4 "$scratch/list" | tr ' ' '\n' | sort -u | tr '\n' ' ')
echo "baseline: building and running $all_tests"
# shellcheck disable=SC2046
cmake --build "$bld" -j "$JOBS" --target $(targets_of "$all_tests") >"$scratch/build.log" 2>&1 ||
    { cat "$scratch/build.log"; echo "baseline build failed"; exit 1; }
if ! run_tests "$all_tests"; then
    cat "$scratch/last.log"
    echo "baseline: the tests fail without any mutant; nothing to measure"
    exit 1
fi

bad=0
printf '%-30s %-38s %-22s %s\n' MUTANT FILE TESTS RESULT >"$scratch/table"
while IFS='@' read -r id file expr tests; do
    f=$tree/$file
    cp "$f" "$scratch/orig"
    if ! sed "$expr" "$scratch/orig" >"$f"; then
        result="BAD EXPRESSION"
        bad=1
    elif cmp -s "$f" "$scratch/orig"; then
        result="NOT APPLIED"
        bad=1
    # shellcheck disable=SC2046
    elif ! cmake --build "$bld" -j "$JOBS" --target $(targets_of "$tests") >"$scratch/build.log" 2>&1; then
        result="BUILD FAILED"
        bad=1
    elif run_tests "$tests"; then
        result="SURVIVED"
        bad=1
    else
        # the ctest names that failed, with the cmocka cases (or Python cases) inside them
        failed=$(sed -n 's/^[[:space:]]*[0-9]* - \([A-Za-z0-9_]*\) (.*/\1/p' "$scratch/last.log" | tr '\n' ' ')
        cases=$(sed -n -e 's/^\[  FAILED  \] \(test_[A-Za-z0-9_]*\)$/\1/p' -e 's/^FAIL \([A-Za-z0-9_]*\):.*/\1/p' \
            "$scratch/last.log" | sort -u | tr '\n' ' ')
        result="killed by ${failed% }${cases:+ (${cases% })}"
    fi
    cp "$scratch/orig" "$f"
    touch "$f"
    printf '%-30s %-38s %-22s %s\n' "$id" "$file" "$tests" "$result" | tee -a "$scratch/table" >&2
done <"$scratch/list"
# put the build back to the unmutated code
# shellcheck disable=SC2046
cmake --build "$bld" -j "$JOBS" --target $(targets_of "$all_tests") >/dev/null 2>&1 || true

echo
cat "$scratch/table"
exit $bad
