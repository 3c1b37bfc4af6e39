#!/usr/bin/env bash
# valgrind memcheck over the test programs and the CLI: 0 bytes definitely
# lost, no invalid reads/writes. usage: tools/valgrind.sh BUILD_DIR [TEST_REGEX]
set -euo pipefail
build=${1:-build}
regex=${2:-.}
here=$(cd "$(dirname "$0")/.." && pwd)
export TL_TESTDATA=${TL_TESTDATA:-$here/../shared/testdata}
export TL_BUILD_DIR=$build TL_SOURCE_DIR=$here TL_CLI=$build/tierload
vg=(valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
    --show-leak-kinds=definite --track-fds=no)
fail=0
for t in "$build"/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  [[ $name =~ $regex ]] || continue
  # cmocka forks nothing; tests that spawn the CLI are checked below instead
  if "${vg[@]}" "$t" >/tmp/vg.$$.log 2>&1; then echo "valgrind: $name: clean"
  else rc=$?; echo "valgrind: $name: FAILED ($rc)"; tail -40 /tmp/vg.$$.log; fail=1; fi
done
for f in "$TL_TESTDATA"/gguf/*.gguf "$TL_TESTDATA"/safetensors/*.safetensors; do
  if ! "${vg[@]}" "$build/tierload" info --json "$f" >/dev/null 2>/tmp/vg.$$.log; then
    echo "valgrind: tierload info $f: FAILED"; cat /tmp/vg.$$.log; fail=1; fi
done
echo "valgrind: tierload info over every test file: done"
rm -f /tmp/vg.$$.log
exit $fail
