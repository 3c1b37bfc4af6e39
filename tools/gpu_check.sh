#!/bin/sh
# gpu_check.sh — everything that needs a real NVIDIA GPU, in one run of a few
# minutes (for a lent GPU machine): build, the CUDA device tests, then the GPU
# figures (bench_gpu: pageable and pinned host->device against cudaMemcpy,
# file->GPU of a 4 GiB model against cat, spill GPU->file), then the same
# pipeline with real ggml matrix products on ggml:CUDA0 (the npm package
# @node-llama-cpp/linux-x64-cuda). Prints every figure; exits non-zero when a
# test fails.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
TMP=${TMPDIR:-/tmp}/tierload-gpu-check
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT

echo "== build"
make build >/dev/null

echo "== devices"
"./$BUILD/tierload" devices

echo "== CUDA tests"
(cd "$BUILD" && ctest --output-on-failure -R 'cuda|session|run_cli')

echo "== GPU figures"
"./$BUILD/tierload" mkmodel "$TMP/m4g.safetensors" --size 4G --tensors 800 --profile sdxl >/dev/null
"./$BUILD/bench_gpu" "$TMP/m4g.safetensors" "$TMP"

echo "== run on the GPU"
"./$BUILD/tierload" run "$TMP/m4g.safetensors" --pipeline 'cond,diffusion*3,vae' \
  --reserve 'diffusion=0,cond=0,vae=0' --max-vram 2G

echo "== ggml on the GPU (ggml:CUDA0)"
G="$BUILD/npm-ggml-cuda"
if [ ! -d "$G/node_modules/@node-llama-cpp/linux-x64-cuda" ]; then
  mkdir -p "$G" && (cd "$G" && npm install --prefix . @node-llama-cpp/linux-x64-cuda@3.22.1 \
    --no-save --ignore-scripts --no-audit --no-fund --loglevel=error) || echo "npm install failed"
fi
GD=$(dirname "$(find "$G" -name libggml-base.so | head -1)" 2>/dev/null || true)
if [ -n "$GD" ] && [ -d "$GD" ]; then
  "./$BUILD/tierload" devices --ggml="$GD"
  "./$BUILD/tierload" run "$TMP/m4g.safetensors" --pipeline 'cond,diffusion*2,vae' \
    --reserve 'diffusion=0,cond=0,vae=0' --compute ggml --ggml-dir "$GD" --json
else
  echo "ggml (CUDA build) not available: skipped"
fi
