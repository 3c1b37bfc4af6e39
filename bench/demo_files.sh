# demo_files.sh — sourced by the benches that use the demo's files. Needs BUILD (the build
# folder) and NAME (the bench, for messages). Sets CLI to BUILD's tierload program (exit 2 when
# it is missing), D to the folder the files are in (TL_BENCH_DEMO_DIR, else the demo's own cache:
# $XDG_CACHE_HOME/tierload or ~/.cache/tierload), M and L to the demo model and its LoRA there
# (made once with "$CLI" demo when missing), and T to a temporary folder in TMPDIR, removed on
# exit.
CLI="$BUILD/tierload"
[ -x "$CLI" ] || { echo "$NAME: no $CLI (build first)"; exit 2; }
if [ -n "${TL_BENCH_DEMO_DIR:-}" ]; then
    D=$TL_BENCH_DEMO_DIR
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
    D=$XDG_CACHE_HOME/tierload
else
    D=$HOME/.cache/tierload
fi
M=$D/sd-demo.safetensors
L=$D/sd-demo-lora.safetensors
if [ ! -f "$M" ] || [ ! -f "$L" ]; then
    echo "$NAME: generating the demo model in $D (once)"
    "$CLI" demo --cache-dir "$D" --pipeline cond >/dev/null || exit 2
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/tl-$NAME.XXXXXX") || exit 2
trap 'rm -rf "$T"' EXIT
