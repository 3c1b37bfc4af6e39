#!/bin/sh
# run.sh BUILD_DIR — run every benchmark program built in BUILD_DIR (bench_*),
# then every bench/*.sh script beside this one (except this one), each with
# BUILD_DIR as its argument. Exit status: the number of programs that failed.
set -u
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
fails=0
found=0
for b in "$BUILD"/bench_*; do
  [ -f "$b" ] && [ -x "$b" ] || continue
  found=1
  echo "== $(basename "$b")"
  "$b" || fails=$((fails + 1))
done
for s in "$HERE"/*.sh; do
  [ "$(basename "$s")" = run.sh ] && continue
  [ -f "$s" ] || continue
  found=1
  echo "== $(basename "$s")"
  sh "$s" "$BUILD" || fails=$((fails + 1))
done
[ $found = 1 ] || echo "run.sh: no bench_* programs in $BUILD (build first)"
exit $fails
