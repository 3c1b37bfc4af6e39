#!/bin/sh
# stress_truncate.sh BUILD_DIR — the large version of the truncation and rewrite races: a 1 GiB
# model is truncated (or truncated and grown back to its size, zeros) while `tierload load` runs
# in each mode that reads the mapping or the file; the load must end with exit status 12 (the
# file changed) or finish before the change, never die of a signal (status >= 128) and never
# succeed after the change. Exit status: the number of runs that broke that promise.
set -u
BUILD=${1:-build}
CLI="$BUILD/tierload"
DIR=$(mktemp -d "${TMPDIR:-/tmp}/tl-stress.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
M="$DIR/m.safetensors"
fails=0
run() { # run WHAT DELAY ARGS...: start the load, change the file after DELAY seconds
  what=$1 delay=$2
  shift 2
  "$CLI" mkmodel "$M" --size 1G --tensors 400 --profile sdxl >/dev/null || exit 2
  size=$(stat -c %s "$M")
  "$CLI" load "$M" --quiet "$@" >/dev/null 2>"$DIR/err" &
  pid=$!
  sleep "$delay"
  changed=0
  if kill -0 $pid 2>/dev/null; then
    changed=1
    truncate -s $((size / 2)) "$M"
    [ "$what" = rewrite ] && truncate -s "$size" "$M"
  fi
  wait $pid
  rc=$?
  verdict=ok
  if [ $rc -ge 128 ]; then verdict="DIED (signal $((rc - 128)))"; fails=$((fails + 1))
  elif [ $changed = 1 ] && [ $rc = 0 ]; then verdict="SUCCEEDED after the change"; fails=$((fails + 1))
  elif [ $rc != 0 ] && [ $rc != 12 ]; then verdict="exit $rc: $(head -c 200 "$DIR/err")"; fails=$((fails + 1))
  fi
  printf '%-8s %-40s changed=%s exit=%-3s %s\n' "$what" "$*" $changed $rc "$verdict"
}
for what in truncate rewrite; do
  for args in "--mode mmap --dtype F32" "--mode mmap --verify" "--mode mmap --no-populate --verify" \
              "--mode auto --views --verify" "--mode buffered --verify" "--mode direct --verify" \
              "--mode buffered --dtype F32"; do
    # shellcheck disable=SC2086
    run $what 0.15 $args
  done
done
echo "stress_truncate: $fails broken promise(s)"
exit $fails
