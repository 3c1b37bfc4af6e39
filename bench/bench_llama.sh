#!/bin/sh
# bench_llama.sh BUILD_DIR [GGML_ROOT] — the llama example (tl-llama) on a `tierload mkmodel
# --profile llama` model of >= 300 MB (TinyLlama's widths: 2048 wide, blocks of 88 MiB in F16;
# TL_BENCH_LLAMA_SIZE, default 1G, and TL_BENCH_LLAMA_DTYPE, default F16; F32 wants 2G so that a
# quarter holds two blocks), a 17-token prompt and 16 greedy tokens, each placement run in this
# one invocation:
#   ggml:CPU, everything resident, then streamed through a quarter-model budget;
#   one ggml-rpc-server on 127.0.0.1 (a free port, stopped on exit), resident, then streamed through
#   a quarter-model budget, with the link's bandwidth measured beside it.
# Figures, each printed beside its limit:
#   - decode tokens/s streamed / resident, on ggml:CPU: >= 0.8 (on RPC: reported, no limit);
#   - bytes uploaded / the offline optimum for the same budget and schedule (streamed runs): <= 1.05;
#     the schedule is the run's as carried out, each step holding the block it computes and the one
#     it prefetches (tl-llama's "optimal_bytes_with_prefetch", tl_session_optimal_bytes on that
#     schedule); the optimum of one block at a time is printed beside it (the prefetch's second
#     buffer costs one block per pass more there);
#   - peak device memory (tierload's weights at their peak + the engine's KV caches and compute
#     buffers on that device) <= the budget (streamed runs);
#   - time waiting for weights per block / that block's compute time, summed over blocks and
#     passes: <= 0.10 when the link moves a block in less than half its compute time (measured
#     here: block bytes / link bandwidth vs the block's mean compute time); otherwise reported,
#     and the case is named.
# Every run's logits are held against llama.cpp's on the same model (llama-oracle, when built):
# within 1e-3 x max |logit|, greedy tokens identical. Exit 0 when every limit holds,
# 1 on a miss, 77 when ggml is not built.
set -u
BUILD=${1:-build}
GGML=${2:-$BUILD/ggml}
SIZE=${TL_BENCH_LLAMA_SIZE:-1G}
DTYPE=${TL_BENCH_LLAMA_DTYPE:-F16}
THREADS=${TL_BENCH_THREADS:-1}
if [ ! -x "$BUILD/tl-llama" ] || [ ! -x "$GGML/bin/ggml-rpc-server" ]; then
    echo "bench_llama: tl-llama or ggml-rpc-server missing (make ggml, then reconfigure)"
    exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/tl-bench-llama.XXXXXX") || exit 2
pid=""
trap '[ -n "$pid" ] && { kill $pid 2>/dev/null; wait $pid 2>/dev/null; }; rm -rf "$T"' EXIT
trap 'exit 1' INT TERM HUP
"$BUILD/tierload" mkmodel "$T/m.gguf" --profile llama --size "$SIZE" --dtype "$DTYPE" >/dev/null ||
    exit 2
bytes=$(wc -c <"$T/m.gguf")
quarter=$((bytes / 4))
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$GGML/bin/ggml-rpc-server" -H 127.0.0.1 -p "$port" -t "$THREADS" >"$T/rpc.log" 2>&1 &
pid=$!
/usr/bin/python3 - "$port" <<'PY' || { echo "bench_llama: ggml-rpc-server did not start"; exit 1; }
import socket, sys, time
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close(); sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
PY
tokens=1,50,23,99,150,7,88,200,31,64,12,250,3,77,140,19,42
run() { # name, then tl-llama options
    name=$1
    shift
    "$BUILD/tl-llama" "$T/m.gguf" --tokens $tokens --n-predict 16 --logits "$T/$name.f32" \
        --threads "$THREADS" --json --measure-link "$@" >"$T/$name.txt" 2>"$T/$name.err" ||
        { cat "$T/$name.err"; echo "bench_llama: $name failed"; exit 1; }
}
oracle=""
if [ -x "$BUILD/llama-oracle" ]; then
    "$BUILD/llama-oracle" "$T/m.gguf" --tokens $tokens --n-predict 16 --logits "$T/ref.f32" \
        --threads "$THREADS" >"$T/ref.txt" 2>"$T/ref.err" ||
        { cat "$T/ref.err"; echo "bench_llama: llama-oracle failed"; exit 1; }
    oracle=$T/ref
fi
run cpu
run cpu4 --budget $quarter
run rpc --rpc 127.0.0.1:$port --device rpc0:0
run rpc4 --rpc 127.0.0.1:$port --device rpc0:0 --budget $quarter
/usr/bin/python3 - "$T" "$bytes" "$quarter" "$oracle" <<'PY'
import json, sys
import numpy as np
T, model, quarter, oracle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
runs = {}
for n in ("cpu", "cpu4", "rpc", "rpc4"):
    lines = open(f"{T}/{n}.txt").read().splitlines()
    runs[n] = (lines[0], json.loads(lines[1]))
miss = 0
def figure(label, value, limit, ok, unit=""):
    global miss
    print(f"  {label:<58} {value:>12}{unit}   limit {limit:<10} {'ok' if ok else 'MISS'}")
    if not ok:
        miss += 1
print(f"llama.cpp's logits: {'held against every run' if oracle else 'llama-oracle not built'}")
import os
print(f"machine: {os.cpu_count()} CPUs, load average {open('/proc/loadavg').read().split()[0]} "
      f"after the runs (times are only comparable on a quiet machine)")
print(f"model: {model / 2**20:.0f} MiB, {runs['cpu'][1]['layers']} blocks; budget of the "
      f"streamed runs: {quarter / 2**20:.0f} MiB (a quarter)")
for n, (greedy, j) in runs.items():
    print(f"{n:5} mode {j['mode']:8} decode {j['decode_tokens_per_s']:8.2f} tok/s, uploaded "
          f"{j['bytes_uploaded'] / 2**20:9.1f} MiB, peak device memory "
          f"{j['peak_device_memory'] / 2**20:7.1f} MiB, waited {j['weight_wait_s']:.3f} s, "
          f"computed {j['compute_s']:.3f} s")
    if oracle:
        ref = np.fromfile(oracle + ".f32", dtype="<f4")
        ours = np.fromfile(f"{T}/{n}.f32", dtype="<f4")
        same = ours.size == ref.size and np.isfinite(ours).all()
        diff = float(np.abs(ref.astype(np.float64) - ours).max()) if same else float("inf")
        limit = 1e-3 * float(np.abs(ref).max())
        want = open(oracle + ".txt").read().splitlines()[0]
        figure(f"{n}: max |logit - llama.cpp's| (greedy {'same' if greedy == want else 'DIFFERENT'})",
               f"{diff:.3g}", f"<= {limit:.3g}", diff <= limit and greedy == want)
    elif greedy != runs["cpu"][0]:
        print(f"  {n}: greedy tokens differ from the resident run: {greedy}")
        miss += 1
for base, streamed, dev, limit in (("cpu", "cpu4", "ggml:CPU", 0.8), ("rpc", "rpc4", "rpc0:0", None)):
    r, s = runs[base][1], runs[streamed][1]
    print(f"{streamed} against {base} ({dev}):")
    ratio = s["decode_tokens_per_s"] / r["decode_tokens_per_s"]
    bw = s.get("link_bytes_per_s", {}).get(dev, 0)
    if limit is None:
        print(f"  {'tokens/s streamed / resident (reported)':<58} {ratio:>12.3f}   "
              f"link {bw / 1e9:.2f} GB/s")
    else:
        figure("tokens/s streamed / resident", f"{ratio:.3f}", f">= {limit}", ratio >= limit)
    opt = s["optimal_bytes_with_prefetch"] or 0
    plain = s["optimal_bytes"] or 0
    up = s["bytes_uploaded"]
    per_tok = up / (s["passes"])
    print(f"  {'bytes uploaded per token (pass)':<58} {per_tok / 2**20:>12.1f} MiB")
    figure("bytes uploaded / offline optimum of the schedule with prefetch",
           f"{up / opt:.4f}" if opt else "n/a", "<= 1.05", opt > 0 and up <= 1.05 * opt)
    if plain:
        print(f"  {'  (/ the optimum holding one block at a time: reported)':<58} "
              f"{up / plain:>12.4f}")
    figure("peak device memory / budget", f"{s['peak_device_memory'] / quarter:.3f}", "<= 1",
           s["peak_device_memory"] <= quarter)
    layers = s["layers"]
    block = (model / layers)  # bytes of one block, about (the non-layer weights are small)
    comp = sum(s["layer_compute_s"]) / (layers * s["passes"])
    move = block / bw if bw else float("inf")
    fast = move < comp / 2
    wait = sum(s["layer_wait_s"]) / max(sum(s["layer_compute_s"]), 1e-12)
    case = (f"link moves a block in {move * 1e3:.2f} ms, a block computes in {comp * 1e3:.2f} ms: "
            + ("less than half: the limit applies" if fast else "not less than half: reported only"))
    print(f"  {case}")
    if fast:
        figure("weight wait / block compute", f"{wait:.3f}", "<= 0.10", wait <= 0.10)
    else:
        print(f"  {'weight wait / block compute (reported)':<58} {wait:>12.3f}")
print("bench_llama:", "every limit holds" if not miss else f"{miss} limit(s) missed")
sys.exit(1 if miss else 0)
PY
