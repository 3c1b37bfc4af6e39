#!/bin/sh
# bench_plugin.sh — libggml-tierload.so under unmodified llama.cpp (tests/tools/llama_plugin.c):
# a model on TIERLOAD0 resident, then streamed through TIERLOAD_BUDGET = 1/2, 1/4, 1/8 of its
# weights; and at 1/4 with TIERLOAD_MODE=map, printed as context. Each figure is printed beside its limit; the exit status is 1 on any miss.
#
#   bytes read per token   <= 1.05 x the offline optimum for the budget: W - B per decoded token
#                             (every weight is used once per token, and at a token's start at most
#                             B bytes of them can be resident; W from tierload's catalog of the file:
#                             every tensor but token_embd, which llama.cpp keeps on the CPU)
#   decode time per token  <= 1.2 x (resident decode time + bytes read per token / the page cache's
#                             read bandwidth, measured here with dd on the same, cached, file)
#   peak anonymous RSS     <= B + what llama.cpp itself allocates (KV cache, compute buffers,
#                             its own heap: the resident run's peak RssAnon less the weights the
#                             plugin held resident) + 1 MiB for the plugin's per-graph plan; there
#                             is no staging (reads go straight into place); RssAnon sampled after
#                             each evaluation
#
# usage: bench/bench_plugin.sh BUILD_DIR [MODEL.gguf]
#   without MODEL: `tierload mkmodel --profile llama --size ${TL_BENCH_PLUGIN_SIZE:-256M}` once
#   into BUILD_DIR/bench-plugin/. TL_BENCH_PLUGIN_TOKENS: greedy tokens timed (default 16).
set -u
build=${1:?usage: bench_plugin.sh BUILD_DIR [MODEL.gguf]}
model=${2:-}
lib=$build/libggml-tierload.so
for f in "$lib" "$build/llama-plugin" "$build/tierload"; do
    [ -e "$f" ] || { echo "bench_plugin: no $f (build with the ggml source build: make ggml)"; exit 77; }
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tl_bench_plugin.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if [ -z "$model" ]; then
    mkdir -p "$build/bench-plugin"
    model=$build/bench-plugin/llama-${TL_BENCH_PLUGIN_SIZE:-256M}.gguf
    [ -f "$model" ] || "$build/tierload" mkmodel "$model" --size "${TL_BENCH_PLUGIN_SIZE:-256M}" \
        --profile llama >/dev/null || exit 2
fi
n=${TL_BENCH_PLUGIN_TOKENS:-16}
tokens=1,50,23,99,150,7,88,200
W=$("$build/tierload" info --json "$model" | /usr/bin/python3 -c '
import json, sys
t = json.load(sys.stdin)["tensors"]
names = {x["name"] for x in t}
print(sum(x["nbytes"] for x in t if x["name"] != "token_embd.weight" or "output.weight" not in names))')
echo "model $model: W = $W bytes of weights on TIERLOAD0; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"

# page cache read bandwidth, bytes/s (the file read twice, the second timed)
cat "$model" >/dev/null
bw=$(dd if="$model" of=/dev/null bs=4M 2>&1 | /usr/bin/python3 -c '
import re, sys
m = re.search(r"(\d+) bytes.*copied, ([0-9.e+-]+) s", sys.stdin.read())
print(int(int(m.group(1)) / float(m.group(2))))')
echo "page cache read bandwidth: $((bw / 1048576)) MiB/s (dd)"

fig() { sed -n "s/^$1: //p" "$2"; }
stat() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
# go NAME BUDGET [MODE]: one run with --figures
go() {
    env TIERLOAD_BUDGET="$2" TIERLOAD_MODE="${3:-copy}" TIERLOAD_STATS="$tmp/$1.json" "$build/llama-plugin" "$model" --plugin "$lib" \
        --tokens $tokens --n-predict "$n" --logits "$tmp/$1.f32" --figures >"$tmp/$1.out" 2>"$tmp/$1.err" ||
        { echo "bench_plugin: $1 failed: $(tail -3 "$tmp/$1.err")"; exit 1; }
}
go resident ""
cmp -s "$tmp/resident.out" /dev/null && exit 1
t_res=$(fig decode_ms_per_token "$tmp/resident.out")
rss_res=$(fig rss_anon_peak_kb "$tmp/resident.out")
held=$(stat "$tmp/resident.json" peak_resident)
wb=$(stat "$tmp/resident.json" weights_bytes)
llama_kb=$(( rss_res - held / 1024 ))
echo "resident: decode $t_res ms/token, peak RssAnon $rss_res KiB (weights held $((held / 1024)) KiB; llama.cpp's own $llama_kb KiB); the plugin saw $wb bytes of weights"
misses=0
# TIERLOAD_MODE=map at 1/4 too, printed as context beside the copy mode's limits (the limits are
# the streamed copy's; a mapped weight is the page cache's, mapped in within the budget): only its
# logits must equal the resident run's
for run in 2 4 8 map4; do
    div=${run#map}
    mode=copy
    [ "$run" = "$div" ] || mode=map
    b=$((W / div))
    go "b$run" "$b" $mode
    cmp -s "$tmp/resident.f32" "$tmp/b$run.f32" || { echo "  1/$div $mode: logits differ from the resident run"; misses=$((misses + 1)); }
    read=$(stat "$tmp/b$run.json" read_per_graph_after_first)
    t=$(fig decode_ms_per_token "$tmp/b$run.out")
    rss=$(fig rss_anon_peak_kb "$tmp/b$run.out")
    wait=$(stat "$tmp/b$run.json" wait_ns)
    out=$(/usr/bin/python3 - "$div" "$b" "$W" "$read" "$t" "$t_res" "$bw" "$rss" "$llama_kb" "$mode" <<'PY'
import sys
div, b, W, read, t, t_res, bw, rss, llama_kb, mode = sys.argv[1:]
b, W, read, t, t_res, bw, rss, llama_kb = int(b), int(W), float(read), float(t), float(t_res), float(bw), int(rss), int(llama_kb)
opt = W - b
ratio = read / opt
t_lim = 1.2 * (t_res + read / bw * 1e3)
held = b // 1024 if mode == "copy" else 0
rss_lim = held + llama_kb + 1024
miss = ((ratio > 1.05) + (t > t_lim) + (rss > rss_lim)) if mode == "copy" else 0
def mark(bad): return ("MISS" if bad else "ok") if mode == "copy" else "(context)"
print(f"budget 1/{div} = {b} B, TIERLOAD_MODE={mode}:")
print(f"  bytes read per token  {read:.0f}  vs optimum {opt} (x{ratio:.4f}, limit x1.05)  {mark(ratio > 1.05)}")
print(f"  decode per token      {t:.2f} ms  limit {t_lim:.2f} ms (1.2 x ({t_res:.2f} + {read / bw * 1e3:.2f}))  {mark(t > t_lim)}")
print(f"  peak RssAnon          {rss} KiB  limit {rss_lim} KiB ({held} + {llama_kb} + 1024)  {mark(rss > rss_lim)}")
print(f"MISSES {miss}")
PY
)
    echo "$out" | grep -v '^MISSES'
    misses=$((misses + $(echo "$out" | sed -n 's/^MISSES //p')))
    echo "  time waiting for reads: $(/usr/bin/python3 -c "print(round($wait / 1e6 / ($n + 1), 2))") ms per evaluation"
done
[ "$misses" -eq 0 ] || { echo "bench_plugin: $misses figure(s) over their limits"; exit 1; }
echo "bench_plugin: every figure within its limit"
