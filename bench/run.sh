#!/bin/sh
# run.sh BUILD_DIR — run every benchmark program built in BUILD_DIR (bench_*),
# then every bench/*.sh script beside this one (except this one), each with
# BUILD_DIR as its argument. A benchmark exits 0 when it met its limits, 77
# when it could not check them (a reference is missing), anything else when
# it missed one. Prints a summary; exit status 0 only when every benchmark
# ran and met its limits, 1 otherwise.
set -u
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
failed=""
unchecked=""
found=0
run_one() { # name, command...
  name=$1
  shift
  echo "== $name"
  "$@"
  rc=$?
  if [ $rc = 77 ]; then
    unchecked="$unchecked $name"
  elif [ $rc != 0 ]; then
    failed="$failed $name(exit $rc)"
  fi
}
for b in "$BUILD"/bench_*; do
  [ -f "$b" ] && [ -x "$b" ] || continue
  found=1
  run_one "$(basename "$b")" "$b"
done
for s in "$HERE"/*.sh; do
  [ "$(basename "$s")" = run.sh ] && continue
  [ -f "$s" ] || continue
  found=1
  run_one "$(basename "$s")" sh "$s" "$BUILD"
done
if [ $found = 0 ]; then
  echo "run.sh: no bench_* programs in $BUILD (build first)"
  exit 1
fi
echo
[ -n "$failed" ] && echo "run.sh: missed their limits:$failed"
[ -n "$unchecked" ] && echo "run.sh: limits not checked (reference missing):$unchecked"
[ -z "$failed" ] && [ -z "$unchecked" ] && { echo "run.sh: every benchmark met its limits"; exit 0; }
exit 1
