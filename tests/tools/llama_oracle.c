/*
 * llama_oracle.c — llama.cpp itself evaluating a GGUF: the reference the
 * llama example (examples/llama) is held against.
 *
 *   llama-oracle MODEL.gguf --tokens 1,2,3,... --n-predict N --logits OUT.f32
 *                [--threads N] [--one-by-one] [--rpc HOST:PORT,...]
 *
 * Loads the model with llama.cpp's own loader on the CPU, with no extra buffer
 * types (use_extra_bufts = false: no repacking of quantized weights into
 * interleaved layouts, so the weights are multiplied by ggml's plain CPU
 * kernels, the ones an engine gets from a ggml_tensor of the file's type) and
 * without flash attention (soft_max over K·Q, then V·softmax, as the example
 * computes). It evaluates the tokens as one batch (or one by one with
 * --one-by-one: the same model through other batch shapes, to measure how far
 * ggml's CPU path moves between two ways of running it), then greedy-decodes
 * N tokens, evaluating each. OUT.f32 gets the logits of every evaluated
 * position (the prompt's, then one row per decoded token), positions x vocab,
 * little-endian F32; stdout gets "greedy: t1 t2 ...", stderr the decode's wall
 * time ("llama-oracle: decode_s S").
 *
 * --rpc splits the model by layers over ggml RPC servers' devices, every layer
 * offloaded, as llama.cpp's own --rpc does (the peer of bench/peer_rpc.sh).
 *
 * Exit status 0 on success, 2 on bad usage, 1 on any other error.
 */
#include <llama.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static int usage(void) {
    fprintf(stderr, "usage: llama-oracle MODEL.gguf --tokens 1,2,3,... --n-predict N --logits "
                    "OUT.f32 [--threads N] [--one-by-one] [--rpc HOST:PORT,...]\n");
    return 2;
}

/* Decode tokens [0, n) at positions pos.. with logits for each; rows appended to out. */
static bool eval(struct llama_context *ctx, const llama_token *tok, int n, int pos, int n_vocab,
                 FILE *out, llama_token *argmax_last) {
    struct llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = tok[i];
        b.pos[i] = pos + i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 1;
    }
    b.n_tokens = n;
    bool ok = llama_decode(ctx, b) == 0;
    for (int i = 0; ok && i < n; i++) {
        const float *row = llama_get_logits_ith(ctx, i);
        ok = row && fwrite(row, sizeof *row, (size_t)n_vocab, out) == (size_t)n_vocab;
        if (ok && i == n - 1) {
            int best = 0;
            for (int v = 1; v < n_vocab; v++)
                if (row[v] > row[best]) best = v;
            *argmax_last = best;
        }
    }
    llama_batch_free(b);
    return ok;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *tokens = NULL, *out_path = NULL;
    const char *rpc = NULL;
    int n_predict = -1, threads = 1;
    bool one_by_one = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--tokens") && v)
            tokens = v, i++;
        else if (!strcmp(a, "--n-predict") && v)
            n_predict = atoi(v), i++;
        else if (!strcmp(a, "--logits") && v)
            out_path = v, i++;
        else if (!strcmp(a, "--threads") && v)
            threads = atoi(v), i++;
        else if (!strcmp(a, "--one-by-one"))
            one_by_one = true;
        else if (!strcmp(a, "--rpc") && v)
            rpc = v, i++;
        else if (a[0] != '-' && !model_path)
            model_path = a;
        else
            return usage();
    }
    if (!model_path || !tokens || n_predict < 0 || !out_path || threads < 1) return usage();
    int n_prompt = 0, cap = 64;
    llama_token *tok = malloc((size_t)cap * sizeof *tok);
    for (const char *p = tokens; tok && *p;) {
        char *end;
        long t = strtol(p, &end, 10);
        if (end == p || t < 0) return usage();
        if (n_prompt == cap) tok = realloc(tok, (size_t)(cap *= 2) * sizeof *tok);
        if (!tok) break;
        tok[n_prompt++] = (llama_token)t;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return usage();
    }
    if (!tok || !n_prompt) return usage();

    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.use_extra_bufts = false;
    /*
     * --rpc: as llama.cpp's own --rpc does, each server is added through ggml's
     * RPC registry and the model is split by layers over the servers' devices
     * (in proportion to their memory), every layer offloaded.
     */
    ggml_backend_dev_t devs[65] = {0};
    if (rpc) {
        ggml_backend_reg_t reg = ggml_backend_reg_by_name("RPC");
        void *fn = reg ? ggml_backend_reg_get_proc_address(reg, "ggml_backend_rpc_add_server")
                       : NULL;
        if (!fn) {
            fprintf(stderr, "llama-oracle: no RPC backend\n");
            return 1;
        }
        ggml_backend_reg_t (*add)(const char *);
        memcpy(&add, &fn, sizeof fn);
        char *list = strdup(rpc);
        size_t n = 0;
        for (char *save = NULL, *t = strtok_r(list, ",", &save); t && n < 64;
             t = strtok_r(NULL, ",", &save)) {
            ggml_backend_reg_t sreg = add(t);
            for (size_t d = 0; sreg && d < ggml_backend_reg_dev_count(sreg) && n < 64; d++)
                devs[n++] = ggml_backend_reg_dev_get(sreg, d);
        }
        free(list);
        mp.devices = devs;
        mp.n_gpu_layers = 999;
        mp.split_mode = LLAMA_SPLIT_MODE_LAYER;
    }
    struct llama_model *model = llama_model_load_from_file(model_path, mp);
    if (!model) {
        fprintf(stderr, "llama-oracle: %s: llama.cpp cannot load it\n", model_path);
        return 1;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int n_vocab = llama_vocab_n_tokens(vocab);
    for (int i = 0; i < n_prompt; i++)
        if (tok[i] >= n_vocab) {
            fprintf(stderr, "llama-oracle: token %d is outside the vocabulary (%d)\n", tok[i],
                    n_vocab);
            return 2;
        }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(n_prompt + n_predict + 1);
    cp.n_batch = cp.n_ubatch = (uint32_t)n_prompt;
    cp.n_seq_max = 1;
    cp.n_threads = cp.n_threads_batch = threads;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    FILE *out = fopen(out_path, "wb");
    if (!ctx || !out) {
        fprintf(stderr, "llama-oracle: %s\n", ctx ? out_path : "no context");
        return 1;
    }
    llama_token next = 0;
    bool ok = true;
    if (one_by_one)
        for (int i = 0; ok && i < n_prompt; i++)
            ok = eval(ctx, tok + i, 1, i, n_vocab, out, &next);
    else
        ok = eval(ctx, tok, n_prompt, 0, n_vocab, out, &next);
    printf("greedy:");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int k = 0; ok && k < n_predict; k++) {
        printf(" %d", next);
        llama_token t = next;
        ok = eval(ctx, &t, 1, n_prompt + k, n_vocab, out, &next);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("\n");
    /* the decode's wall time (the N single-token evaluations), as tl-llama's --json decode_s */
    fprintf(stderr, "llama-oracle: decode_s %.6f\n",
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
    if (fclose(out) != 0) ok = false;
    if (!ok) fprintf(stderr, "llama-oracle: evaluation failed\n");
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    free(tok);
    return ok ? 0 : 1;
}
