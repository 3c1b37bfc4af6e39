#!/usr/bin/env bash
# valgrind memcheck over the test programs and the CLI: 0 bytes definitely
# lost, no invalid reads/writes. usage: tools/valgrind.sh BUILD_DIR [TEST_REGEX]
set -euo pipefail
build=${1:-build}
regex=${2:-.}
here=$(cd "$(dirname "$0")/.." && pwd)
export TL_TESTDATA=${TL_TESTDATA:-$build/testdata}
# the test data, as ctest's testdata fixture makes it (once per build folder)
ggml_root=$(sed -n 's/^TL_GGML_ROOT:PATH=//p' "$build/CMakeCache.txt")
sh "$here/tools/make_testdata.sh" "$TL_TESTDATA" "${ggml_root:-$build/ggml}"
export TL_BUILD_DIR=$build TL_SOURCE_DIR=$here TL_CLI=$build/tierload
vg=(valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
    --show-leak-kinds=definite --track-fds=no)
# Left to make asan (same leak checks, 20-50x faster): programs that are slow under
# valgrind (512 MiB loads, fault sweeps, 600 forked ggml mutants, a compiler run), and
# the two whose "0 pages resident after --evict" checks cannot hold under valgrind: it
# reads the first pages of every file the process maps (looking for debug info), which
# puts them back in the page cache.
skip='^(test_load_memory|test_fault_load|test_ggml_crosscheck|test_devices_cudamock|test_load_modes|test_load_cli|test_plan_cases)$'
fail=0
for t in "$build"/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  [[ $name =~ $regex ]] || continue
  [[ $name =~ $skip ]] && { echo "valgrind: $name: left to make asan"; continue; }
  # cmocka forks nothing; tests that spawn the CLI are checked below instead
  # exit 77: the program's tests skipped here (they print why), as ctest's SKIP_RETURN_CODE
  if "${vg[@]}" "$t" >/tmp/vg.$$.log 2>&1; then echo "valgrind: $name: clean"
  else rc=$?
    if [ $rc = 77 ]; then echo "valgrind: $name: clean (tests skipped here)"
    else echo "valgrind: $name: FAILED ($rc)"; tail -40 /tmp/vg.$$.log; fail=1; fi
  fi
done
ckpts=("$here"/fuzz/corpus/fuzz_ckpt/{every,module,sd,small,restored}.ckpt)
for f in "$TL_TESTDATA"/gguf/*.gguf "$TL_TESTDATA"/safetensors/*.safetensors "${ckpts[@]}"; do
  if ! "${vg[@]}" "$build/tierload" info --json "$f" >/dev/null 2>/tmp/vg.$$.log; then
    echo "valgrind: tierload info $f: FAILED"; cat /tmp/vg.$$.log; fail=1; fi
done
echo "valgrind: tierload info over every test file: done"
# load cycles through the CLI: every mode, with conversion and verification
for f in "$TL_TESTDATA"/gguf/tiny-llama-*.gguf "$here"/fuzz/corpus/fuzz_ckpt/every.ckpt; do
  for mode in mmap buffered direct auto; do
    if ! "${vg[@]}" "$build/tierload" load --quiet --mode $mode --verify --dtype F32 "$f" >/dev/null 2>/tmp/vg.$$.log; then
      echo "valgrind: tierload load --mode $mode $f: FAILED"; cat /tmp/vg.$$.log; fail=1; fi
  done
done
echo "valgrind: tierload load (mmap, buffered, direct, auto; --dtype F32 --verify) over the test GGUFs: done"
# a session carrying a plan out: streamed through a small sim GPU, every byte checked
f="$TL_TESTDATA/gguf/tiny-llama-q8_0.gguf"
if ! "${vg[@]}" "$build/tierload" run "$f" --pipeline 'other*2' --sim vg0=8M \
     --reserve 'other=0' --json >/dev/null 2>/tmp/vg.$$.log; then
  echo "valgrind: tierload run $f: FAILED"; cat /tmp/vg.$$.log; fail=1; fi
echo "valgrind: tierload run (sessions, streaming through a sim GPU, byte check): done"
rm -f /tmp/vg.$$.log
exit $fail
