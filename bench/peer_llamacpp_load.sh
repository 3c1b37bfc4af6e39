#!/bin/sh
# peer_llamacpp_load.sh BUILD_DIR — time to a usable llama.cpp model: tl_llama_model_load
# (libtierload-llama, through the example BUILD_DIR/tl-llamacpp) against llama.cpp's own
# llama_model_load_from_file with --no-mmap and with direct I/O, warm and cold, right after
# memory was recycled and after 8 s idle, alternating, PEER_ROUNDS rounds (default 3); peak RSS
# and time to the first token beside them, and llama.cpp's user-data path with a plain pread
# callback (no tierload) as the baseline of the path tierload takes. The model is a
# `tierload mkmodel --profile llama` GGUF of PEER_SIZE (default 1.5G, at least 1 GiB) in
# $TMPDIR or /var/tmp whose weights are then made finite (normal(0, 1/sqrt(fan_in)), norms 1)
# with numpy; kept when PEER_KEEP=1.
# Limits: see peer_llamacpp_load.py. Exits 77 when tl-llamacpp was not built (no llama.cpp)
# or numpy is missing, 1 on a missed limit, 0 when all were met.
set -u
BUILD=$(cd "${1:-build}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=${TMPDIR:-/var/tmp}
MODEL="$DIR/tierload_peer_llamacpp_load.gguf"
SIZE=${PEER_SIZE:-1.5G}
if [ ! -x "$BUILD/tl-llamacpp" ]; then
  echo "peer_llamacpp_load: NOT CHECKED: $BUILD/tl-llamacpp was not built (no llama.h / libllama; make ggml)"
  exit 77
fi
if ! /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
  echo "peer_llamacpp_load: NOT CHECKED: /usr/bin/python3 with numpy is needed"
  exit 77
fi
TMP="$DIR/tierload_peer_llamacpp_load.part.gguf"
if [ ! -f "$MODEL" ]; then
  "$BUILD/tierload" mkmodel "$TMP" --profile llama --size "$SIZE" >/dev/null &&
    /usr/bin/python3 "$HERE/peer_llamacpp_load.py" "$BUILD" "$TMP" 0 --prepare &&
    mv "$TMP" "$MODEL" || { rm -f "$TMP"; exit 1; }
fi
/usr/bin/python3 "$HERE/peer_llamacpp_load.py" "$BUILD" "$MODEL" "${PEER_ROUNDS:-3}"
rc=$?
[ "${PEER_KEEP:-0}" = 1 ] || rm -f "$MODEL"
exit $rc
