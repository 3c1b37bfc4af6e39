#!/bin/sh
# peer_llamacpp.sh BUILD_DIR — tierload's loader against llama.cpp's, side by side.
# Installs node-llama-cpp@3.22.1 with npm into BUILD_DIR/npm-peer (once), writes a
# llama-architecture GGUF that llama.cpp loads (`tierload mkmodel --profile llama`,
# PEER_SIZE, default 1.5G, in $TMPDIR or /var/tmp; kept for reuse when PEER_KEEP=1),
# then runs peer_llamacpp.mjs: llama.cpp mmap / no-mmap against `tierload load`
# buffered / direct / auto (and auto --hugepages, and cat when cold), warm and cold,
# right after memory was recycled and after 8 s idle, alternating, PEER_ROUNDS rounds
# (default 3). Prints medians, ranges, ratios to llama.cpp no-mmap and to cat, peak RSS,
# and the CPU backend llama.cpp used. Exits 77 when node/npm or the package are missing
# (nothing was compared), 0 otherwise: the figures are context, not limits.
set -u
BUILD=$(cd "${1:-build}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
NPM_DIR="$BUILD/npm-peer"
DIR=${TMPDIR:-/var/tmp}
MODEL="$DIR/tierload_peer_llama.gguf"
SIZE=${PEER_SIZE:-1.5G}
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "peer_llamacpp: NOT CHECKED: node and npm are needed"
  exit 77
fi
if [ ! -f "$NPM_DIR/node_modules/node-llama-cpp/package.json" ]; then
  mkdir -p "$NPM_DIR" &&
    (cd "$NPM_DIR" && npm install --no-audit --no-fund --ignore-scripts node-llama-cpp@3.22.1 >npm.log 2>&1)
  if [ $? != 0 ]; then
    echo "peer_llamacpp: NOT CHECKED: npm install node-llama-cpp@3.22.1 failed (see $NPM_DIR/npm.log)"
    exit 77
  fi
fi
if [ ! -f "$MODEL" ]; then
  "$BUILD/tierload" mkmodel "$MODEL" --profile llama --size "$SIZE" || exit 1
fi
node "$HERE/peer_llamacpp.mjs" "$NPM_DIR" "$BUILD/tierload" "$MODEL" "${PEER_ROUNDS:-3}"
rc=$?
[ "${PEER_KEEP:-0}" = 1 ] || rm -f "$MODEL"
exit $rc
