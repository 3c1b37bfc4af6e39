#!/bin/sh
# test_plugin_llama.sh — unmodified llama.cpp (libllama, public API: tests/tools/llama_plugin.c)
# with its model on TIERLOAD0 of libggml-tierload.so, held against llama.cpp's own CPU run
# (llama-oracle): a 17-token prompt and 8 greedy tokens, the logits of every evaluated position
# compared bit for bit (cmp), both sides with use_extra_bufts = false and no flash attention.
#
# Per test-data GGUF (tiny-llama F16 / Q8_0 / Q4_0, tiny-llama-256 Q4_K_M): the plugin loaded with
# ggml_backend_load and the weights resident, then TIERLOAD_BUDGET = 1/2, 1/4 and 1/8 of the
# weights the device holds (read from the resident run's TIERLOAD_STATS); also the plugin found
# only through GGML_BACKEND_PATH by ggml_backend_load_all() with llama.cpp's default model
# parameters, llama.cpp loading without mmap (the weights then found in tierload's catalog of the
# open GGUF and streamed all the same), and two threads on both sides.
# Eviction: on a 16 MiB mkmodel llama model, bytes read per decoded token within 1.03 x the optimum
# for the budget (and the logits again bitwise equal).
# Each TIERLOAD_STASH way of moving evicted pages (uffd, mremap, off): the same logits again.
# A second model loaded after the first one's graphs ran: both models' logits again.
# TIERLOAD_MODE=map (weights mapped from the file, not copied): the same logits resident and at
# 1/4 on each model and with --no-mmap, every weight mapped, less anonymous memory than copying.
# Bad input: a budget below the largest chunk (a clear error naming both sizes, exit 1, no
# signal), a budget that is not a size, a TIERLOAD_MODE or TIERLOAD_STASH it does not know, another ggml release (a preloaded ggml_version() of
# another release: the plugin refuses to register and names both), and the model file touched or
# truncated after the prompt, copied and mapped (the next token's graph fails through ggml's
# error path with "file changed").
# usage: test_plugin_llama.sh BUILD_DIR GGML_ROOT   (TL_TESTDATA: the test data folder)
set -u
build=$1 ggml=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tl_plugin.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM HUP

missing() {
    if [ "${CI:-}" = true ]; then
        echo "FAIL: $*"
        exit 1
    fi
    echo "SKIP: $*"
    exit 77
}
fails=0
fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

lib=$build/libggml-tierload.so
other=$build/libggml_other_version.so
[ -f "$lib" ] && [ -x "$build/llama-plugin" ] && [ -x "$build/llama-oracle" ] && [ -f "$other" ] ||
    missing "libggml-tierload.so / llama-plugin / llama-oracle not built: no ggml source build with libllama in $ggml (run make ggml, then reconfigure)"
data=${TL_TESTDATA:-}
[ -n "$data" ] && [ -f "$data/gguf/tiny-llama-q4_0.gguf" ] || missing "no test data (TL_TESTDATA)"
# in a sanitizer build the ASan runtime must stay first in the list of libraries: preload it ahead
# of the stand-in
asan_rt=$(ldd "$build/llama-plugin" 2>/dev/null | awk '/libasan/ { print $3 }')
[ -z "$asan_rt" ] || other="$asan_rt $other"

tokens=1,50,23,99,150,7,88,200,31,64,12,250,3,77,140,19,42
n_predict=8
stat() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# plugin MODEL NPREDICT OUT [ENV...] -- ARGS: llama-plugin on MODEL with ENV set
plugin() {
    pm=$1 pn=$2 po=$3
    shift 3
    envs=""
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        envs="$envs '$1'"
        shift
    done
    [ $# -gt 0 ] && shift
    eval "env $envs" '"$build/llama-plugin" "$pm" --tokens $tokens --n-predict $pn --logits "$po" "$@"'
}

# run NAME MODEL REF [ENV...] -- ARGS: the plugin run, its logits compared with REF
run() {
    name=$1 model=$2 ref=$3
    shift 3
    out=$tmp/$name.f32
    rm -f "$tmp/$name.json"
    if ! plugin "$model" $n_predict "$out" TIERLOAD_STATS="$tmp/$name.json" "$@" \
        >"$tmp/$name.out" 2>"$tmp/$name.err"; then
        fail "$name: llama-plugin failed: $(tail -3 "$tmp/$name.err")"
        return 1
    fi
    if ! cmp -s "$ref" "$out"; then
        fail "$name: logits differ from llama.cpp's CPU run ($(cmp "$ref" "$out" 2>&1 | head -1))"
        return 1
    fi
    if ! cmp -s "$tmp/$name.out" "$ref.out"; then
        fail "$name: greedy tokens differ: $(cat "$tmp/$name.out") vs $(cat "$ref.out")"
        return 1
    fi
    echo "ok $name"
}

for m in tiny-llama-f16 tiny-llama-q8_0 tiny-llama-q4_0 tiny-llama-256-q4_k_m; do
    model=$data/gguf/$m.gguf
    [ -f "$model" ] || missing "no $model in the test data"
    ref=$tmp/$m.ref
    "$build/llama-oracle" "$model" --tokens $tokens --n-predict $n_predict --logits "$ref" >"$ref.out" ||
        { fail "$m: llama-oracle failed"; continue; }
    run "$m-resident" "$model" "$ref" -- --plugin "$lib" || continue
    w=$(stat "$tmp/$m-resident.json" weights_bytes)
    [ "$w" -gt 0 ] || { fail "$m: the resident run put no weights on TIERLOAD0"; continue; }
    for div in 2 4 8; do
        b=$((w / div))
        run "$m-budget-1_$div" "$model" "$ref" TIERLOAD_BUDGET=$b -- --plugin "$lib" || continue
        peak=$(stat "$tmp/$m-budget-1_$div.json" peak_resident)
        rd=$(stat "$tmp/$m-budget-1_$div.json" last_graph_read)
        [ "$peak" -le "$b" ] || fail "$m budget $b: $peak bytes of weights were resident at once"
        [ "$rd" -gt 0 ] || fail "$m budget $b: nothing was re-read per token (not streamed)"
    done
done

# the policy: a `tierload mkmodel --profile llama` model of 16 MiB (hundreds of weights, none
# dominating); per decoded token the plugin may read at most 1.03 x the optimum W - B (the counts
# are deterministic: every choice is made on the calling thread; furthest next use reads 1.004 to
# 1.024 x here, evicting the nearest next use instead 1.04 to 1.045 x; bench_plugin.sh holds
# larger models to the issue's 1.05) (every
# weight is used once per token and at most B bytes of them can be resident when a token starts;
# W from tierload's catalog of the file: every tensor but token_embd, which stays on the CPU)
mk=$tmp/mk16.gguf
if "$build/tierload" mkmodel "$mk" --size 16M --profile llama >/dev/null; then
    "$build/llama-oracle" "$mk" --tokens $tokens --n-predict $n_predict --logits "$tmp/mk16.ref" \
        >"$tmp/mk16.ref.out" || fail "mkmodel 16M: llama-oracle failed"
    W=$("$build/tierload" info --json "$mk" | /usr/bin/python3 -c '
import json, sys
print(sum(x["nbytes"] for x in json.load(sys.stdin)["tensors"] if x["name"] != "token_embd.weight"))')
    for div in 2 4 8; do
        b=$((W / div))
        run "mk16-1_$div" "$mk" "$tmp/mk16.ref" TIERLOAD_BUDGET=$b -- --plugin "$lib" || continue
        rd=$(stat "$tmp/mk16-1_$div.json" read_per_graph_after_first)
        if /usr/bin/python3 -c "import sys; sys.exit(0 if $rd <= 1.03 * ($W - $b) else 1)"; then
            echo "ok mk16-1_$div: $rd bytes read per token, optimum $((W - b))"
        else
            fail "mk16 budget 1/$div: $rd bytes read per token, over 1.03 x the optimum $((W - b))"
        fi
    done
else
    fail "tierload mkmodel --profile llama failed"
fi

# each way of moving an evicted segment's pages (TIERLOAD_STASH): the same logits, on the 16 MiB
# model at 1/8 (thousands of moves each way); the way asked for is the way used unless this kernel
# lacks it (uffd needs Linux 6.8: then mremap, which the stats name), and none fell back part way
if [ -f "$mk" ] && [ -n "${W:-}" ]; then
    for how in uffd mremap off; do
        run "mk16-stash-$how" "$mk" "$tmp/mk16.ref" TIERLOAD_BUDGET=$((W / 8)) TIERLOAD_STASH=$how -- \
            --plugin "$lib" || continue
        got=$(stat "$tmp/mk16-stash-$how.json" stash)
        moves=$(stat "$tmp/mk16-stash-$how.json" stash_moves)
        [ "$(stat "$tmp/mk16-stash-$how.json" stash_fallbacks)" = 0 ] ||
            fail "mk16 TIERLOAD_STASH=$how: fell back to $got during the run"
        case $how:$got in
        uffd:uffd | mremap:mremap) [ "$moves" -gt 0 ] || fail "mk16 TIERLOAD_STASH=$how: no pages moved" ;;
        uffd:mremap) echo "note: this kernel has no UFFDIO_MOVE (mremap used)" ;;
        off:off) [ "$moves" = 0 ] || fail "mk16 TIERLOAD_STASH=off: $moves moves" ;;
        *) fail "mk16 TIERLOAD_STASH=$how: the stats say $got" ;;
        esac
    done
fi

# TIERLOAD_MODE=map: every weight of these GGUFs is mapped from the file (their offsets are
# 32-byte aligned), nothing copied: the same logits resident and at 1/4, within the budget; the
# process's anonymous memory at most the copy mode's less half the weights (resident, mk16); with
# llama.cpp reading the file itself too (weights found in tierload's catalog)
for m in tiny-llama-f16 tiny-llama-q8_0 tiny-llama-q4_0 tiny-llama-256-q4_k_m; do
    [ -f "$tmp/$m-resident.json" ] || continue
    w=$(stat "$tmp/$m-resident.json" weights_bytes)
    for div in 1 4; do
        n=$m-map-1_$div
        b=$((w / div))
        [ $div = 1 ] && b=
        run "$n" "$data/gguf/$m.gguf" "$tmp/$m.ref" TIERLOAD_MODE=map TIERLOAD_BUDGET=$b -- --plugin "$lib" || continue
        mapped=$(stat "$tmp/$n.json" mapped_weights)
        [ "$mapped" = "$(stat "$tmp/$n.json" weight_tensors)" ] && [ "$mapped" -gt 0 ] ||
            fail "$n: $mapped of $(stat "$tmp/$n.json" weight_tensors) weights mapped"
        [ -z "$b" ] || [ "$(stat "$tmp/$n.json" peak_resident)" -le "$b" ] ||
            fail "$n: $(stat "$tmp/$n.json" peak_resident) bytes of weights resident at once, budget $b"
    done
done
m=tiny-llama-q8_0
w=$(stat "$tmp/$m-resident.json" weights_bytes)
run "$m-map-no-mmap-1_4" "$data/gguf/$m.gguf" "$tmp/$m.ref" TIERLOAD_MODE=map TIERLOAD_BUDGET=$((w / 4)) -- \
    --plugin "$lib" --no-mmap &&
    { [ "$(stat "$tmp/$m-map-no-mmap-1_4.json" mapped_weights)" -gt 0 ] || fail "$m --no-mmap: no weight mapped"; }
if [ -f "$mk" ] && [ -n "${W:-}" ]; then
    for mode in copy map; do
        plugin "$mk" $n_predict "$tmp/mk16-$mode.f32" TIERLOAD_MODE=$mode -- --plugin "$lib" --figures \
            >"$tmp/mk16-$mode.fig" 2>"$tmp/mk16-$mode.err" && cmp -s "$tmp/mk16-$mode.f32" "$tmp/mk16.ref" ||
            fail "mk16 TIERLOAD_MODE=$mode --figures: failed or other logits: $(tail -2 "$tmp/mk16-$mode.err")"
    done
    ca=$(sed -n 's/^rss_anon_peak_kb: *\([0-9]*\)$/\1/p' "$tmp/mk16-copy.fig")
    ma=$(sed -n 's/^rss_anon_peak_kb: *\([0-9]*\)$/\1/p' "$tmp/mk16-map.fig")
    if [ -n "$ca" ] && [ -n "$ma" ] && [ "$ma" -le $((ca - W / 2048)) ]; then
        echo "ok mk16 map: anonymous memory peak $ma KiB, copy mode $ca KiB (weights $((W / 1024)) KiB)"
    else
        fail "mk16 map: anonymous memory peak ${ma:-?} KiB, not below copy mode's ${ca:-?} KiB less half the weights"
    fi
fi

# a second model loaded after the first one's graphs ran, the first still loaded (as
# stable-diffusion.cpp brings each module's weights when it first runs it): both models' logits
# equal llama.cpp's own, resident and streamed
m1=tiny-llama-f16 m2=tiny-llama-q4_0
w=$(stat "$tmp/$m1-resident.json" weights_bytes)
for b in "" $((w / 2)); do
    if plugin "$data/gguf/$m1.gguf" $n_predict "$tmp/then1.f32" TIERLOAD_BUDGET=$b \
        TIERLOAD_STATS="$tmp/then.json" -- --plugin "$lib" \
        --then "$data/gguf/$m2.gguf" --then-logits "$tmp/then2.f32" >"$tmp/then.out" 2>"$tmp/then.err" &&
        cmp -s "$tmp/then1.f32" "$tmp/$m1.ref" && cmp -s "$tmp/then2.f32" "$tmp/$m2.ref" &&
        [ "$(stat "$tmp/then.json" segment_errors)" = 0 ]; then
        echo "ok two models one after the other${b:+, budget $b}"
    else
        fail "two models one after the other${b:+, budget $b}: $(tail -2 "$tmp/then.err")$(cmp "$tmp/then2.f32" "$tmp/$m2.ref" 2>&1 | head -1), $(stat "$tmp/then.json" segment_errors 2>&1) segments not fitting their weight"
    fi
done

# found only through GGML_BACKEND_PATH, llama.cpp's default model parameters
m=tiny-llama-256-q4_k_m
run "$m-backend-path" "$data/gguf/$m.gguf" "$tmp/$m.ref" GGML_BACKEND_PATH="$lib" -- --load-all
w=$(stat "$tmp/tiny-llama-q4_0-resident.json" weights_bytes)
run "q4_0-backend-path-1_4" "$data/gguf/tiny-llama-q4_0.gguf" "$tmp/tiny-llama-q4_0.ref" \
    GGML_BACKEND_PATH="$lib" TIERLOAD_BUDGET=$((w / 4)) -- --load-all
for n in "$m-backend-path" q4_0-backend-path-1_4; do
    [ -f "$tmp/$n.json" ] && [ "$(stat "$tmp/$n.json" weights_bytes)" -gt 0 ] ||
        fail "$n: llama.cpp's default parameters put no weights on TIERLOAD0"
done
# llama.cpp reading the file itself (no mapping to record): each weight is found by name in
# tierload's catalog of the GGUF it has open, and streamed from there
m=tiny-llama-q8_0
w=$(stat "$tmp/$m-resident.json" weights_bytes)
if run "$m-no-mmap-1_4" "$data/gguf/$m.gguf" "$tmp/$m.ref" TIERLOAD_BUDGET=$((w / 4)) -- --plugin "$lib" --no-mmap; then
    [ "$(stat "$tmp/$m-no-mmap-1_4.json" last_graph_read)" -gt 0 ] ||
        fail "$m --no-mmap: nothing re-read from the file per token (weights kept, not found in the catalog)"
fi
# two threads on both sides
m=tiny-llama-f16
"$build/llama-oracle" "$data/gguf/$m.gguf" --tokens $tokens --n-predict $n_predict --threads 2 \
    --logits "$tmp/$m-t2.ref" >"$tmp/$m-t2.ref.out" || fail "$m: llama-oracle --threads 2 failed"
w=$(stat "$tmp/$m-resident.json" weights_bytes)
run "$m-threads2-1_4" "$data/gguf/$m.gguf" "$tmp/$m-t2.ref" TIERLOAD_BUDGET=$((w / 4)) -- \
    --plugin "$lib" --threads 2

# expect NAME STATUS PATTERN MODEL [ENV...] -- ARGS: llama-plugin exits with STATUS (not a signal),
# its stderr has PATTERN
expect() {
    name=$1 want=$2 pattern=$3 em=$4
    shift 4
    plugin "$em" 4 "$tmp/bad.f32" "$@" >/dev/null 2>"$tmp/$name.err"
    rc=$?
    if [ "$rc" != "$want" ]; then
        fail "$name: exit $rc, want $want: $(tail -3 "$tmp/$name.err")"
    elif ! grep -Eq "$pattern" "$tmp/$name.err"; then
        fail "$name: no /$pattern/ in: $(cat "$tmp/$name.err")"
    else
        echo "ok $name: $(grep -E "$pattern" "$tmp/$name.err" | head -1)"
    fi
}
expect budget-too-small 1 'TIERLOAD_BUDGET 1000 B is smaller than the largest chunk of the graph, [0-9]+ B' \
    "$data/gguf/tiny-llama-q4_0.gguf" TIERLOAD_BUDGET=1000 -- --plugin "$lib"
expect budget-not-a-size 3 'TIERLOAD_BUDGET=lots: not a size' "$data/gguf/tiny-llama-q4_0.gguf" TIERLOAD_BUDGET=lots -- --plugin "$lib"
expect mode-unknown 3 'TIERLOAD_MODE=zero: not copy or map' "$data/gguf/tiny-llama-q4_0.gguf" \
    TIERLOAD_MODE=zero -- --plugin "$lib"
expect stash-unknown 3 'TIERLOAD_STASH=swap: not uffd, mremap or off' "$data/gguf/tiny-llama-q4_0.gguf" \
    TIERLOAD_STASH=swap -- --plugin "$lib"
expect other-ggml 3 'built for ggml [0-9][^ ]* \(commit [^)]*\) but this process runs ggml 0\.0\.1-other \(commit 0ther00\)' \
    "$data/gguf/tiny-llama-q4_0.gguf" LD_PRELOAD="$other" -- --plugin "$lib"

# the model file changed after the prompt: the next graph fails with "file changed"
q=$data/gguf/tiny-llama-q4_0.gguf
w=$(stat "$tmp/tiny-llama-q4_0-resident.json" weights_bytes)
cp "$q" "$tmp/touched.gguf"
expect file-touched 1 'touched\.gguf: file changed' "$tmp/touched.gguf" TIERLOAD_BUDGET=$((w / 4)) -- \
    --plugin "$lib" --after-prompt "touch -d 2001-01-01 '$tmp/touched.gguf'"
# truncated just after token_embd (which llama.cpp keeps on the CPU in its own mapping)
cp "$q" "$tmp/cut.gguf"
cut=$("$build/tierload" info --json "$tmp/cut.gguf" | /usr/bin/python3 -c '
import json, sys
t = [x for x in json.load(sys.stdin)["tensors"] if x["name"] == "token_embd.weight"][0]
print(t["offset"] + t["nbytes"])')
expect file-truncated 1 'cut\.gguf: file changed' "$tmp/cut.gguf" TIERLOAD_BUDGET=$((w / 4)) -- \
    --plugin "$lib" --after-prompt "truncate -s $cut '$tmp/cut.gguf'"
cp "$q" "$tmp/cut.gguf"
expect file-truncated-map 1 'cut\.gguf: file changed' "$tmp/cut.gguf" TIERLOAD_MODE=map TIERLOAD_BUDGET=$((w / 4)) -- \
    --plugin "$lib" --after-prompt "truncate -s $cut '$tmp/cut.gguf'"

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all plugin cases passed"
