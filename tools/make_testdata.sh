#!/bin/sh
# Makes the test data the tests read through TL_TESTDATA, once per build folder (a finished set
# is reused until this script or its helpers change):
#   OUT/safetensors/  the safetensors reference samples committed in tests/data/safetensors
#   OUT/gguf/         tiny-llama-{f16,q8_0,q4_0}.gguf (llama.cpp's gguf-py writer, from
#                     tools/make_testdata.py), tiny-llama-256-q4_k_m.gguf (llama-quantize Q4_K_M
#                     from a 256-wide F16 model) and llama.cpp's ggml-vocab-llama-spm.gguf
#   OUT/expected/     <file>.json for each: what an independent reader says (gguf-py's
#                     GGUFReader, a strict safetensors header parser)
# gguf-py, the vocabulary files, libllama and llama-quantize come from the llama.cpp source build
# in GGML_ROOT (tools/build_ggml.sh BUILD --llama, made here when GGML_ROOT is BUILD/ggml). Every
# generated model is checked with libllama (tools/llama_check.c): it loads, tokenizes as
# llama.cpp's vocabulary tests expect, and decodes to finite logits.
#
# Usage: tools/make_testdata.sh OUT GGML_ROOT
# Exit 0: OUT complete. Exit 77: only the safetensors part could be made (no npm or git to fetch
# llama.cpp's source, or the fetch failed); the reason is in OUT/unavailable.txt and the tests
# that need the GGUFs skip with it. Under CI=true that is exit 1 instead. Other failures: exit 1.
set -eu
OUT=${1:?usage: make_testdata.sh OUT GGML_ROOT}
ROOT=${2:?usage: make_testdata.sh OUT GGML_ROOT}
here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
PY=/usr/bin/python3
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
case $ROOT in /*) ;; *) ROOT=$(pwd)/$ROOT ;; esac

say() { echo "make_testdata.sh: $*" >&2; }

# One run at a time per folder (ctest's fixture, make valgrind).
if command -v flock >/dev/null 2>&1 && [ -z "${TL_TESTDATA_LOCKED:-}" ]; then
    export TL_TESTDATA_LOCKED=1
    exec flock "$OUT.lock" sh "$0" "$@"
fi

# The generator's identity: a change to any of these makes the set again.
stamp=$(cat "$here/make_testdata.sh" "$here/make_testdata.py" "$here/llama_check.c" \
    "$src"/tests/data/safetensors/*.safetensors | cksum | cut -d' ' -f1)
if [ -f "$OUT/complete" ] && [ "$(cat "$OUT/complete")" = "$stamp" ]; then
    exit 0
fi

unavailable() {
    echo "$*" >"$OUT/unavailable.txt"
    say "$*"
    case ${CI:-} in true | 1) say "CI=true: a missing dependency is a failure"; exit 1 ;; esac
    exit 77
}

# A fresh set: the stamp is written last, so an interrupted run starts over.
rm -rf "${OUT:?}"/*
mkdir -p "$OUT/safetensors"

# 1. The committed safetensors samples, and what a strict parser says about them.
cp "$src"/tests/data/safetensors/*.safetensors "$OUT/safetensors/"
"$PY" "$here/make_testdata.py" expected "$OUT"

# 2. llama.cpp's source and tools: built here when GGML_ROOT is this build folder's ggml.
need="$ROOT/src/gguf-py/gguf/gguf_writer.py $ROOT/src/models/ggml-vocab-llama-spm.gguf
$ROOT/lib/libllama.so $ROOT/bin/llama-quantize $ROOT/include/llama.h"
missing() {
    for f in $need; do [ -e "$f" ] || { echo "$f"; return 0; }; done
    return 1
}
if m=$(missing); then
    build=$(dirname "$OUT")
    if [ "$ROOT" != "$build/ggml" ]; then
        say "$ROOT (TL_GGML_ROOT) has no $m: make it with tools/build_ggml.sh $(dirname "$ROOT") --llama"
        exit 1
    fi
    if [ ! -f "$ROOT/src/ggml/CMakeLists.txt" ]; then
        command -v npm >/dev/null 2>&1 ||
            unavailable "npm unavailable: no npm on PATH (needed to fetch llama.cpp's source, node-llama-cpp@3.22.1)"
        command -v git >/dev/null 2>&1 ||
            unavailable "git unavailable: no git on PATH (needed to read llama.cpp's source bundle)"
    fi
    say "building llama.cpp's tools into $ROOT (tools/build_ggml.sh, once)"
    sh "$here/build_ggml.sh" "$build" --llama ||
        if [ ! -f "$ROOT/src/ggml/CMakeLists.txt" ]; then
            unavailable "npm unavailable: fetching node-llama-cpp@3.22.1 failed (see the messages above)"
        else
            exit 1
        fi
    if m=$(missing); then say "the ggml build has no $m"; exit 1; fi
fi

# 3. The models: gguf-py's writer, then llama-quantize for the K-quants.
vocab=$ROOT/src/models/ggml-vocab-llama-spm.gguf
mkdir -p "$OUT/gguf" "$OUT/work"
"$PY" "$here/make_testdata.py" models "$ROOT/src/gguf-py" "$vocab" "$OUT/gguf" "$OUT/work"
cp "$vocab" "$OUT/gguf/"
"$ROOT/bin/llama-quantize" "$OUT/work/tiny-llama-256-f16.gguf" "$OUT/gguf/tiny-llama-256-q4_k_m.gguf" \
    Q4_K_M 2 >"$OUT/work/quantize.log" 2>&1 ||
    { cat "$OUT/work/quantize.log" >&2; say "llama-quantize failed"; exit 1; }

# 4. libllama loads, tokenizes and evaluates every model.
${CC:-cc} -std=c11 -O1 -Wall -Wextra -Werror -I"$ROOT/include" "$here/llama_check.c" \
    -o "$OUT/work/llama_check" -L"$ROOT/lib" -lllama -lm -Wl,-rpath,"$ROOT/lib"
for f in "$OUT"/gguf/tiny-llama-*.gguf; do
    LD_LIBRARY_PATH="$ROOT/lib" "$OUT/work/llama_check" "$f" "$vocab.inp" "$vocab.out"
done

# 5. Expected JSON for every file; then the set is complete.
"$PY" "$here/make_testdata.py" expected "$OUT" "$ROOT/src/gguf-py"
rm -rf "$OUT/work"
echo "$stamp" >"$OUT/complete"
say "test data in $OUT"
