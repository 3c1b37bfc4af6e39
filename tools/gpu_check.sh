#!/bin/sh
# gpu_check.sh — everything that needs a real NVIDIA GPU, in one run of a few
# minutes (for a lent GPU machine): build, the CUDA device tests, then the GPU
# figures (bench_gpu: pageable and pinned host->device against cudaMemcpy,
# file->GPU of a 4 GiB model against cat, spill GPU->file). Prints every
# figure; exits non-zero when a test fails.
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
