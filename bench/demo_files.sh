# demo_files.sh — sourced by the benches that use the demo's files: sets D to the folder they are
# in (TL_BENCH_DEMO_DIR, else the demo's own cache: $XDG_CACHE_HOME/tierload or
# ~/.cache/tierload), M and L to the demo model and its LoRA there, and makes them once with
# "$CLI" demo when missing. Needs CLI (the tierload program) and NAME (the bench, for messages).
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
