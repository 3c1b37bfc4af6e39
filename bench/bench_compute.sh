#!/bin/sh
# bench_compute.sh BUILD_DIR — what streaming costs a real compute: a ~256 MiB
# SD-like model (tierload mkmodel, F16) runs `diffusion*6` with --compute ggml
# (y = W.x with ggml for every weight, per layer when streamed) twice: on a
# sim GPU that holds every weight (resident after the first pass) and on one
# of 64 MiB through which the diffusion model streams layer by layer with
# prefetch. Prints the wall time of passes 2..6 of each and their ratio
# (streamed / resident: the overhead of streaming with prefetch; no limit);
# the limit checked is 0 mismatching products and 0 hash mismatches in both.
# ggml from TIERLOAD_GGML_DIR or the npm package the tests install into
# BUILD_DIR; exit 77 when neither is there.
set -u
BUILD=${1:-build}
CLI="$BUILD/tierload"
if [ -z "${TIERLOAD_GGML_DIR:-}" ]; then
  for d in "$BUILD"/npm-ggml-compute "$BUILD"/npm-ggml-devices; do
    b="$d/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
    [ -f "$b/libggml-base.so" ] && { TIERLOAD_GGML_DIR=$b; break; }
  done
fi
if [ -z "${TIERLOAD_GGML_DIR:-}" ]; then
  echo "bench_compute: no ggml (set TIERLOAD_GGML_DIR or run the tests once to install it)"
  exit 77
fi
export TIERLOAD_GGML_DIR
T=$(mktemp -d "${TMPDIR:-/tmp}/tl-bench-compute.XXXXXX") || exit 2
trap 'rm -rf "$T"' EXIT
"$CLI" mkmodel "$T/m.safetensors" --size 256M --tensors 600 --profile sdxl --dtype F16 >/dev/null || exit 2
THREADS=${TL_BENCH_THREADS:-2}
run() { # sim spec -> JSON file
  "$CLI" run "$T/m.safetensors" --sim "$1" --reserve diffusion=0,cond=0,vae=0 \
    --pipeline 'diffusion*6' --compute ggml --compute-threads "$THREADS" --json >"$2" || exit 1
}
run resident=1G "$T/resident.json"
run streamed=64M "$T/streamed.json"
/usr/bin/python3 - "$T/resident.json" "$T/streamed.json" <<'PY'
import json, sys
r, s = (json.load(open(p)) for p in sys.argv[1:3])
def after_first(j):
    ph = j["phases"][1:]
    return sum(p["seconds"] for p in ph), sum(p["compute_seconds"] for p in ph), sum(p["bytes_moved"] for p in ph)
ok = True
for name, j in (("resident", r), ("streamed", s)):
    t = j["totals"]
    w, c, b = after_first(j)
    print(f"{name:9s} passes 2-6: wall {w:.3f} s, compute {c:.3f} s, moved {b / 2**20:.1f} MiB; "
          f"products {t['products']}, mismatches {t['product_mismatches']}, hash mismatches {t['hash_mismatches']}")
    ok = ok and t["product_mismatches"] == 0 and t["hash_mismatches"] == 0 and t["products"] > 0
wr, ws = after_first(r)[0], after_first(s)[0]
print(f"streamed / resident wall time (passes 2-6): {ws / wr:.2f}")
sys.exit(0 if ok else 1)
PY
