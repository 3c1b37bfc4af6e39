#!/bin/sh
# test_llamacpp_user.sh — tl-llamacpp --reference --llama-mode user (llama.cpp's user-data path
# with a plain pread callback, the baseline peer_llamacpp_load measures tierload against) gives
# the logits and greedy tokens of llama.cpp's own load bit for bit on the test data's tiny llama
# GGUFs (F16, Q8_0, Q4_0, Q4_K_M). Both sides without the CPU's extra buffer types: the user-data
# path has none (llama_model_init_from_user sets use_extra_bufts = false).
# usage: test_llamacpp_user.sh BUILD_DIR   (TL_TESTDATA: the test data folder)
set -u
build=$1
exe="$build/tl-llamacpp"
if [ ! -x "$exe" ]; then
    echo "test_llamacpp_user: SKIPPED: $exe was not built (no llama.h / libllama)"
    [ "${CI:-}" = true ] && exit 1
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tl_llamacpp_user.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
for f in tiny-llama-f16 tiny-llama-q8_0 tiny-llama-q4_0 tiny-llama-256-q4_k_m; do
    m="$TL_TESTDATA/gguf/$f.gguf"
    set -- --tokens 1,17,42,99,7 --n-predict 4 --json --no-extra-bufts --reference
    if ! "$exe" "$m" "$@" --llama-mode user --logits "$tmp/user.f32" >"$tmp/user.json" ||
        ! "$exe" "$m" "$@" --llama-mode none --logits "$tmp/own.f32" >"$tmp/own.json"; then
        echo "FAIL $f: tl-llamacpp failed"
        fail=1
        continue
    fi
    gu=$(sed 's/.*"generated": *\(\[[^]]*\]\).*/\1/' "$tmp/user.json")
    go=$(sed 's/.*"generated": *\(\[[^]]*\]\).*/\1/' "$tmp/own.json")
    if cmp -s "$tmp/user.f32" "$tmp/own.f32" && [ "$gu" = "$go" ] && [ -s "$tmp/own.f32" ]; then
        echo "ok   $f: logits bit-identical ($(wc -c <"$tmp/own.f32") bytes), greedy $gu"
    else
        echo "FAIL $f: user-data path $gu vs llama.cpp's own load $go; logits differ"
        fail=1
    fi
done
exit $fail
