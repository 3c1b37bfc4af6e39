#!/bin/sh
# peer_sdcpp.sh SD_CLI [BUILD_DIR] — the demo's checkpoint through stable-diffusion.cpp.
# SD_CLI is an sd.cpp command-line binary (`sd-cli`, or `sd` in older versions) the user built
# from its source; BUILD_DIR holds tierload (default build). Called with BUILD_DIR alone (as
# bench/run.sh does), the binary comes from the environment variable SD_CLI. In PEER_DIR (default
# ${TMPDIR:-/var/tmp}/tierload_peer_sdcpp, kept for reuse) it generates the demo model and LoRA
# (`tierload demo --cache-dir`), checks the model against SD 1.x's tensor list
# (tests/scripts/check_sd1_layout.py), then draws 64x64, 1 step, seed 42, prompt "x" with sd.cpp
# three times: the model alone, the model with the demo LoRA applied by sd.cpp
# (--lora-model-dir and <lora:sd-demo-lora:1> in the prompt) and the model merged with the LoRA
# by `tierload merge`. bench/peer_sdcpp_compare.py then checks that the picture is not uniform,
# that the two LoRA pictures agree within a limit and that the LoRA changed the picture by more
# than that limit. Then the diffusion model on TIERLOAD0 (libggml-tierload.so, found through
# GGML_BACKEND_PATH; sd.cpp's --backend clip=cpu,vae=cpu,diffusion=tierload0, as TIERLOAD0, a GPU,
# would otherwise take every module), resident and streamed from the model file within
# TIERLOAD_BUDGET = 1/4 of the weights the device holds, and the same in TIERLOAD_MODE=map: each
# picture must equal the CPU's byte for byte. The plugin must be built for the ggml sd-cli runs: SD_TIERLOAD_PLUGIN names one, or
# SD_SRC (the sd.cpp source checkout sd-cli was built from, with its bundled ggml) has this script
# build one from plugin/ggml_tierload.c into PEER_DIR; otherwise BUILD_DIR's own plugin is tried.
# sd-cli loads backend modules only when its ggml is built with GGML_BACKEND_DL (then its CPU
# backend is a module too and ggml_backend_load_all runs, reading GGML_BACKEND_PATH). sd.cpp's
# source does not build against another ggml release (it needs GGML_MAX_NAME >= 128 and ops only
# its bundled ggml has), hence a plugin built for that bundled ggml. The case prints "skipped:"
# with the reason when no plugin is found, it refuses sd-cli's ggml or sd-cli loads no modules.
# Without SD_CLI it prints a "skipped:" line and exits 0; it exits 1 when sd.cpp refuses the model
# or a check fails.
set -u
SD=${1:-}
BUILD=${2:-build}
if [ -d "$SD" ]; then # bench/run.sh passes BUILD_DIR alone: the binary comes from $SD_CLI
  BUILD=$SD
  SD=${SD_CLI:-}
fi
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -z "$SD" ]; then
  echo "peer_sdcpp: skipped: no stable-diffusion.cpp binary given (bench/peer_sdcpp.sh PATH/TO/sd-cli [BUILD_DIR], or SD_CLI=PATH/TO/sd-cli bench/run.sh)"
  exit 0
fi
if [ ! -f "$SD" ] || [ ! -x "$SD" ]; then
  echo "peer_sdcpp: skipped: $SD is not an executable stable-diffusion.cpp binary"
  exit 0
fi
SD=$(cd "$(dirname "$SD")" && pwd)/$(basename "$SD")
BUILD=$(cd "$BUILD" && pwd) || exit 1
TL="$BUILD/tierload"
DIR=${PEER_DIR:-${TMPDIR:-/var/tmp}/tierload_peer_sdcpp}
mkdir -p "$DIR/loras" || exit 1
cd "$DIR" || exit 1

echo "== the demo model and LoRA (tierload demo --cache-dir $DIR)"
"$TL" demo --cache-dir "$DIR" --pipeline cond >demo.log 2>&1 || { cat demo.log; exit 1; }
grep -E "^(generating|reusing|LoRA)" demo.log
MODEL="$DIR/sd-demo.safetensors"
LORA="$DIR/sd-demo-lora.safetensors"
ln -sf "$LORA" loras/sd-demo-lora.safetensors

echo "== the model against SD 1.x's tensor list"
/usr/bin/python3 "$HERE/../tests/scripts/check_sd1_layout.py" "$MODEL" || exit 1

echo "== tierload merge"
"$TL" merge "$MODEL" --lora "$LORA" -o merged.safetensors >merge.log 2>&1 || { cat merge.log; exit 1; }
tail -n 2 merge.log

draw() { # name model prompt [more sd flags]
  name=$1 model=$2 prompt=$3
  shift 3
  "$SD" -m "$model" -p "$prompt" -W 64 -H 64 --steps 1 -s 42 -o "$name.png" "$@" >"$name.log" 2>&1
  rc=$?
  if [ $rc != 0 ] || [ ! -s "$name.png" ]; then
    echo "peer_sdcpp: sd.cpp failed to draw $name (exit $rc):"
    tail -n 30 "$name.log"
    exit 1
  fi
  echo "$name: $(grep -o -m1 'Version: [^,]*' "$name.log" || echo 'version not logged')," \
    "$(grep -o -m1 'generate_image completed in [0-9.]*s' "$name.log" || echo 'drawn')"
}
echo "== stable-diffusion.cpp ($SD)"
draw base "$MODEL" x
draw lora-sdcpp "$MODEL" "x<lora:sd-demo-lora:1>" --lora-model-dir "$DIR/loras"
# sd.cpp logs "(N / M) LoRA tensors have been applied" once per model part; every one must apply
applied=$(sed -n 's/.*(\([0-9]*\) \/ \([0-9]*\)) LoRA tensors have been applied.*/\1 \2/p' lora-sdcpp.log |
  awk '{n += $1; m = $2} END {if (m) print n, m}')
if [ -z "$applied" ]; then
  echo "  sd.cpp did not log how many LoRA tensors it applied"
else
  set -- $applied
  echo "  sd.cpp applied $1 of the LoRA's $2 tensors (text encoder and UNet together)"
  [ "$1" = "$2" ] || { echo "peer_sdcpp: FAIL: sd.cpp left LoRA tensors unapplied"; exit 1; }
fi
draw lora-merged "$DIR/merged.safetensors" x

echo "== the pictures"
/usr/bin/python3 "$HERE/peer_sdcpp_compare.py" base.png lora-sdcpp.png lora-merged.png

echo "== the diffusion model on TIERLOAD0 against the CPU"
PLUGIN=${SD_TIERLOAD_PLUGIN:-}
if [ -z "$PLUGIN" ] && [ -n "${SD_SRC:-}" ] && [ -f "$SD_SRC/ggml/src/ggml-backend-impl.h" ]; then
  # built for sd.cpp's bundled ggml: its release, its GGML_MAX_NAME (a field of ggml_tensor), and
  # without the device caps field its release lacks
  G=$SD_SRC/ggml
  ver=$(sed -n 's/^set(GGML_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)).*/\2/p' "$G/CMakeLists.txt" | paste -sd.)
  maxname=$(sed -n 's/.*-DGGML_MAX_NAME=\([0-9]*\).*/\1/p' "$SD_SRC/CMakeLists.txt" | head -n 1)
  defs="-DTL_PLUGIN_GGML_VERSION=\"$ver\" -DTL_PLUGIN_GGML_COMMIT=\"\""
  [ -n "$maxname" ] && defs="$defs -DGGML_MAX_NAME=$maxname"
  grep -q mmap_support "$G/include/ggml-backend.h" || defs="$defs -DTLP_GGML_NO_MMAP_CAP"
  mkdir -p "$DIR/plugin"
  PLUGIN=$DIR/plugin/libggml-tierload.so
  # shellcheck disable=SC2086 # defs is a list of flags
  ${CC:-cc} -std=c11 -D_GNU_SOURCE -O2 -fPIC -shared -fvisibility=hidden $defs -isystem "$G/include" \
    -isystem "$G/src" -I"$HERE/../include" "$HERE/../plugin/ggml_tierload.c" -o "$PLUGIN" \
    -L"$BUILD" -ltierload -lpthread -Wl,-rpath,"$BUILD" >plugin-build.log 2>&1 ||
    { echo "peer_sdcpp: FAIL: the plugin does not build against $G:"; tail -n 20 plugin-build.log; exit 1; }
  echo "libggml-tierload.so built for sd.cpp's ggml $ver (GGML_MAX_NAME ${maxname:-default}): $PLUGIN"
fi
[ -n "$PLUGIN" ] || PLUGIN=$BUILD/libggml-tierload.so
if [ ! -f "$PLUGIN" ]; then
  echo "peer_sdcpp: skipped: the TIERLOAD0 case: no $PLUGIN (SD_TIERLOAD_PLUGIN, or SD_SRC to build one)"
  exit 0
fi
# tl NAME [ENV...]: the base picture's draw with the diffusion model on TIERLOAD0 (every module
# there, as sd.cpp does with a device like a GPU, when TL_ALL=1)
tl() {
  name=$1
  shift
  if [ "${TL_ALL:-0}" = 1 ]; then set -- "$@" "$SD"; else set -- "$@" "$SD" --backend clip=cpu,vae=cpu,diffusion=tierload0; fi
  env GGML_BACKEND_PATH="$PLUGIN" TIERLOAD_STATS="$DIR/$name.json" "$@" -m "$MODEL" -p x -W 64 -H 64 \
    --steps 1 -s 42 -o "$name.png" >"$name.log" 2>&1
  rc=$?
  if grep -q "tierload:.*not registering" "$name.log"; then
    echo "peer_sdcpp: skipped: the TIERLOAD0 case: $(grep -m1 'tierload:.*not registering' "$name.log")"
    exit 0
  fi
  if grep -q "backend 'tierload0' was not found" "$name.log"; then
    # sd.cpp scans for backend modules (ggml_backend_load_all, which reads GGML_BACKEND_PATH) only
    # when no CPU backend is registered yet, i.e. when its ggml was built with GGML_BACKEND_DL
    echo "peer_sdcpp: skipped: the TIERLOAD0 case: $SD does not load backend modules (build" \
      "sd.cpp with -DBUILD_SHARED_LIBS=ON -DSD_BUILD_SHARED_LIBS=ON -DSD_BUILD_SHARED_GGML_LIB=ON" \
      "-DGGML_BACKEND_DL=ON -DGGML_NATIVE=OFF)"
    exit 0
  fi
  if [ $rc != 0 ] || [ ! -s "$name.png" ]; then
    echo "peer_sdcpp: FAIL: sd.cpp with TIERLOAD0 failed to draw $name (exit $rc):"
    tail -n 30 "$name.log"
    exit 1
  fi
}
stat() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
rm -f tl-resident.json tl-budget.json
tl tl-resident
w=$(stat tl-resident.json weights_bytes 2>/dev/null || echo 0)
[ "$w" -gt 0 ] || { echo "peer_sdcpp: FAIL: sd.cpp put no weights on TIERLOAD0 (--backend diffusion=tierload0)"; exit 1; }
echo "tl-resident: $w bytes of diffusion weights on TIERLOAD0"
tl tl-budget TIERLOAD_BUDGET=$((w / 4))
rd=$(stat tl-budget.json bytes_read)
peak=$(stat tl-budget.json peak_resident)
echo "tl-budget: TIERLOAD_BUDGET $((w / 4)), $rd bytes read from the model file in" \
  "$(stat tl-budget.json graphs) graphs, peak resident $peak"
fails=0
# sd.cpp reads the file itself: the plugin finds each weight in its catalog of the open safetensors
# file, so the weights are streamed from the file, not kept as given
[ "$rd" -gt "$w" ] || { echo "peer_sdcpp: FAIL: tl-budget: $rd bytes read: the weights were not streamed"; fails=1; }
[ "$peak" -le $((w / 4)) ] || { echo "peer_sdcpp: FAIL: tl-budget: $peak bytes resident, over the budget"; fails=1; }
# TIERLOAD_MODE=map at the same budget: the weights sd.cpp gives as the file's bytes are mapped
# from the file, not copied (those it converted, F16 biases to F32, stay copies)
tl tl-map TIERLOAD_MODE=map TIERLOAD_BUDGET=$((w / 4))
mapped=$(stat tl-map.json mapped_weights)
echo "tl-map: $mapped of $(stat tl-map.json weight_tensors) weights mapped from the file, peak resident" \
  "$(stat tl-map.json peak_resident)"
[ "$mapped" -gt 0 ] || { echo "peer_sdcpp: FAIL: tl-map: no weight mapped"; fails=1; }
# every module on TIERLOAD0 (sd.cpp's own choice for a device like a GPU): the text encoder's
# and the VAE's weights come to the device after the diffusion model's graphs ran
TL_ALL=1 tl tl-all TIERLOAD_BUDGET=$((w / 4))
echo "tl-all: every module on TIERLOAD0, $(stat tl-all.json weight_tensors) weights, peak resident" \
  "$(stat tl-all.json peak_resident)"
for n in tl-resident tl-budget tl-map tl-all; do
  if cmp -s base.png "$n.png"; then
    echo "ok $n: the picture equals the CPU's byte for byte"
  else
    echo "peer_sdcpp: FAIL: $n: the picture differs from the CPU's ($(cmp base.png "$n.png" 2>&1 | head -n 1))"
    fails=$((fails + 1))
  fi
done
[ "$fails" = 0 ] || exit 1
