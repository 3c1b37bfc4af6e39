#!/bin/sh
# test_llama.sh — the llama example (tl-llama) against llama.cpp itself (llama-oracle) on the same
# GGUF and tokens: a 17-token prompt, then 16 greedy tokens. The greedy tokens must be identical and
# the logits of every evaluated position agree: within 1e-3 x max |logit| for F16/F32 weights, and
# for quantized weights within what ggml's CPU path itself moves between two runs of llama.cpp
# (measured here, printed; it is 0: both runs give the same bits).
#
# Placements, each on each model where it can exist:
#   cpu      everything resident on ggml:CPU
#   cpu4     streamed through a ggml:CPU budget of a quarter of the model's bytes
#   split    layers split over two ggml-rpc-server processes, each given 0.45 of the model
#   row      every matrix split by rows over the same two servers (--split-mode row), each
#            computing its rows of every block at once; every server must hold weights, and
#            the logits must be the resident run's bit for bit
#   rpc4     streamed through one ggml-rpc-server with a quarter-model budget
# A budget is all the device may hold: tierload's weights, the engine's KV caches and its compute
# buffers (peak checked against it). For the quantized models made here, whose 256-wide blocks are
# small beside their KV caches, the engine's reserve (KV caches and compute buffers) comes on top
# of the quarter (and of the 0.45) so that the weights get that share.
# Models: `tierload mkmodel --profile llama` in F16 and F32, that F16 model quantized by
# llama.cpp's own llama-quantize to Q4_0, Q8_0 and Q4_K_M (K-quants), and the test data's
# tiny-llama Q4_0 / Q8_0 / Q4_K_M files (resident only: their output matrix alone is more than half
# of the model, so no quarter or half budget can hold it; and the row split of the one whose
# matrices reach 256 on both sides).
#
# The RPC servers listen on 127.0.0.1 on free ports and are stopped on every exit.
# usage: test_llama.sh BUILD_DIR GGML_ROOT   (TL_TESTDATA: the test data folder)
set -u
build=$1 ggml=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tl_llama.XXXXXX")
pids=""
cleanup() {
    for p in $pids; do
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

missing() {
    if [ "${CI:-}" = true ]; then
        echo "FAIL: $*"
        exit 1
    fi
    echo "SKIP: $*"
    exit 77
}
fail() {
    echo "FAIL: $*"
    exit 1
}

[ -x "$build/tl-llama" ] && [ -x "$build/llama-oracle" ] ||
    missing "tl-llama / llama-oracle not built: no ggml with libllama in $ggml (run make ggml, then reconfigure)"
[ -x "$ggml/bin/ggml-rpc-server" ] || missing "no ggml-rpc-server in $ggml/bin (make ggml)"
[ -x "$ggml/bin/llama-quantize" ] || missing "no llama-quantize in $ggml/bin (make ggml)"
data=${TL_TESTDATA:-}
[ -n "$data" ] && [ -f "$data/gguf/tiny-llama-q4_0.gguf" ] || missing "no test data (TL_TESTDATA)"
/usr/bin/python3 -c 'import numpy' 2>/dev/null || missing "no numpy for /usr/bin/python3"
cmp_py="$(dirname "$0")/llama_compare.py"

tokens=1,50,23,99,150,7,88,200,31,64,12,250,3,77,140,19,42
n_prompt=17 n_predict=16

free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# start_server VAR: a ggml-rpc-server on a free port; VAR gets HOST:PORT.
start_server() {
    for try in 1 2 3 4 5; do
        port=$(free_port)
        "$ggml/bin/ggml-rpc-server" -H 127.0.0.1 -p "$port" -t 1 >"$tmp/rpc-$port.log" 2>&1 &
        pid=$!
        pids="$pids $pid"
        if /usr/bin/python3 - "$port" "$pid" <<'EOF'; then
import os, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit(1)
        time.sleep(0.05)
sys.exit(1)
EOF
            eval "$1=127.0.0.1:$port"
            return 0
        fi
        kill "$pid" 2>/dev/null
    done
    fail "ggml-rpc-server did not start (see $tmp/rpc-*.log)"
}

# --- models ---
"$build/tierload" mkmodel "$tmp/mk-F16.gguf" --profile llama --size 40M >/dev/null || fail "mkmodel F16"
"$build/tierload" mkmodel "$tmp/mk-F32.gguf" --profile llama --size 40M --dtype F32 >/dev/null || fail "mkmodel F32"
for q in Q4_0 Q8_0 Q4_K_M; do
    "$ggml/bin/llama-quantize" "$tmp/mk-F16.gguf" "$tmp/mk-$q.gguf" "$q" >"$tmp/quantize.log" 2>&1 ||
        { cat "$tmp/quantize.log"; fail "llama-quantize $q"; }
done

start_server rpc_a
start_server rpc_b
failures=0

# check NAME MODEL KIND EXPECT_MODE BUDGET [tl-llama options]: one placement against the oracle.
check() {
    name=$1 model=$2 kind=$3 expect=$4 budget=$5
    shift 5
    out="$tmp/$name.f32"
    if ! "$build/tl-llama" "$model" --tokens $tokens --n-predict $n_predict --logits "$out" --json \
        "$@" >"$tmp/$name.txt" 2>"$tmp/$name.err"; then
        echo "FAIL $name: tl-llama failed:"
        cat "$tmp/$name.err"
        failures=$((failures + 1))
        return
    fi
    greedy=$(grep '^greedy:' "$tmp/$name.txt")
    json=$(grep '^{' "$tmp/$name.txt")
    ref_greedy=$(cat "$tmp/$(basename "$model").greedy")
    if [ "$greedy" != "$ref_greedy" ]; then
        echo "FAIL $name: greedy tokens differ: llama.cpp $ref_greedy, tl-llama $greedy"
        failures=$((failures + 1))
        return
    fi
    if [ "$kind" = float ]; then
        limit="--rel 1e-3"
    else
        limit="--abs $(cat "$tmp/$(basename "$model").tol")"
    fi
    # shellcheck disable=SC2086
    verdict=$(/usr/bin/python3 "$cmp_py" "$tmp/$(basename "$model").ref" "$out" "$vocab" $limit)
    rc=$?
    facts=$(printf '%s' "$json" | /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin); expect, budget = sys.argv[1], int(sys.argv[2])
bad = []
if j["mode"] != expect: bad.append("mode %s, not %s" % (j["mode"], expect))
if budget and j["peak_device_memory"] > budget: bad.append("peak %d over the budget %d" % (j["peak_device_memory"], budget))
if expect == "stream" and j["bytes_uploaded"] == 0: bad.append("streamed, but no byte uploaded")
if expect == "row_split" and not all(d["weight_peak"] > 0 for d in j["devices"]): bad.append("a device holds no weights")
print("; ".join(bad) if bad else "mode %s, uploaded %d, peak %d" % (j["mode"], j["bytes_uploaded"], j["peak_device_memory"]))
sys.exit(1 if bad else 0)' "$expect" "$budget")
    rc2=$?
    echo "$name: $verdict; $facts"
    [ $rc = 0 ] && [ $rc2 = 0 ] || failures=$((failures + 1))
}

# oracle MODEL KIND: llama.cpp's logits and greedy tokens; for quantized models the tolerance,
# what two runs of llama.cpp differ by.
oracle() {
    b=$(basename "$1")
    "$build/llama-oracle" "$1" --tokens $tokens --n-predict $n_predict --logits "$tmp/$b.ref" \
        >"$tmp/$b.greedy" 2>"$tmp/$b.err" || { cat "$tmp/$b.err"; fail "llama-oracle $b"; }
    size=$(wc -c <"$tmp/$b.ref")
    vocab=$((size / 4 / (n_prompt + n_predict)))
    "$build/llama-oracle" "$1" --tokens $tokens --n-predict $n_predict --logits "$tmp/$b.ref2" \
        >/dev/null 2>&1 || fail "llama-oracle $b (second run)"
    tol=$(/usr/bin/python3 "$cmp_py" "$tmp/$b.ref" "$tmp/$b.ref2" "$vocab" --diff) || fail "compare"
    echo "$tol" >"$tmp/$b.tol"
    echo "$b: llama.cpp $(cat "$tmp/$b.greedy"); two runs of llama.cpp differ by $tol"
}

for m in F16 F32 Q4_0 Q8_0 Q4_K_M; do
    model="$tmp/mk-$m.gguf"
    kind=quant
    [ $m = F16 ] || [ $m = F32 ] && kind=float
    oracle "$model"
    bytes=$(wc -c <"$model")
    check "$m-cpu" "$model" $kind resident 0
    # the budgets: a quarter of the model (0.45 for each of the split's two servers); for the
    # quantized models, whose 256-wide blocks are small beside their KV caches, the engine's
    # reserve (KV caches and compute buffers, tl-llama's "reserve") comes on top
    extra=0
    [ $kind = quant ] && extra=$(sed -n 's/.*"reserve":\([0-9]*\).*/\1/p' "$tmp/$m-cpu.txt")
    quarter=$((bytes / 4 + extra))
    split=$((bytes * 45 / 100 + extra))
    check "$m-cpu4" "$model" $kind stream $quarter --budget $quarter
    check "$m-split" "$model" $kind layer_split $split --rpc "$rpc_a,$rpc_b" \
        --split-devices rpc0:0,rpc1:0 --budget $split
    check "$m-rpc4" "$model" $kind stream $quarter --rpc "$rpc_a" --device rpc0:0 --budget $quarter
    check "$m-row" "$model" $kind row_split 0 --rpc "$rpc_a,$rpc_b" --split-devices rpc0:0,rpc1:0 \
        --split-mode row
    # a row of a product is the same dot product on either server: the row split's logits are
    # the resident run's, bit for bit (closer than the float tolerance above asks)
    if ! cmp -s "$tmp/$m-cpu.f32" "$tmp/$m-row.f32"; then
        echo "FAIL $m-row: logits not bit for bit those of $m-cpu"
        failures=$((failures + 1))
    fi
done
for f in tiny-llama-q4_0 tiny-llama-q8_0 tiny-llama-256-q4_k_m; do
    model="$data/gguf/$f.gguf"
    oracle "$model"
    check "$f-cpu" "$model" quant resident 0
    check "$f-rpc" "$model" quant resident 0 --rpc "$rpc_a" --device rpc0:0
    # (the n_embd 64 models have no matrix with both sides >= 256: nothing to cut by rows)
    [ "$f" = tiny-llama-256-q4_k_m ] &&
        check "$f-row" "$model" quant row_split 0 --rpc "$rpc_a,$rpc_b" \
            --split-devices rpc0:0,rpc1:0 --split-mode row
done

[ $failures = 0 ] || fail "$failures placement(s) differ from llama.cpp"
echo "all placements agree with llama.cpp"
