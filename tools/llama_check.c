/*
 * llama_check.c — proof that a generated test model is one llama.cpp itself uses: libllama
 * loads it, its tokenizer gives llama.cpp's own expected tokens for every case of the
 * vocabulary test files (VOCAB.inp / VOCAB.out, the format of llama.cpp's test-tokenizer-0),
 * and a prompt decodes to finite, varied logits over the whole vocabulary, twice (the second
 * step through the KV cache). Built and run by tools/make_testdata.sh against the ggml build.
 *
 *   llama_check MODEL.gguf VOCAB.inp VOCAB.out
 *
 * Exit 0 and one line on stdout when all holds; 1 and the reason on stderr otherwise.
 */
#include <llama.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *model_path;

static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "llama_check: %s: ", model_path);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0, r;
    char *b = malloc(cap + 1);
    while (b && (r = fread(b + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(b, (cap *= 2) + 1);
            if (!nb) free(b);
            b = nb;
        }
    }
    fclose(f);
    if (b) b[n] = 0;
    *len = n;
    return b;
}

/* Every case of INP (texts split by "\n__ggml_vocab_test__\n") tokenizes to its line of OUT. */
static int check_tokenizer(const struct llama_vocab *vocab, const char *inp_path,
                           const char *out_path, int *cases) {
    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t inp_len, out_len;
    char *inp = slurp(inp_path, &inp_len), *out = slurp(out_path, &out_len);
    if (!inp || !out) return fail("cannot read %s or %s", inp_path, out_path);
    int rc = 0, n = 0;
    enum { MAXT = 4096 };
    llama_token *got = malloc(MAXT * sizeof *got);
    char *text = inp, *line = out;
    while (!rc && text < inp + inp_len && *line) {
        char *end = strstr(text, sep);
        size_t tlen = end ? (size_t)(end - text) : strlen(text);
        char *eol = strchr(line, '\n');
        if (eol) *eol = 0;
        int32_t k = llama_tokenize(vocab, text, (int32_t)tlen, got, MAXT, false, false);
        if (k < 0) {
            rc = fail("case %d: more than %d tokens", n, MAXT);
            break;
        }
        int32_t i = 0;
        char *p = line, *q;
        for (long v = strtol(p, &q, 10); q != p; v = strtol(p = q, &q, 10)) {
            if (i >= k || got[i] != v) {
                rc = fail("case %d: token %d is %d, %s says %ld", n, i, i < k ? got[i] : -1,
                          out_path, v);
                break;
            }
            i++;
        }
        if (!rc && i != k) rc = fail("case %d: %d tokens, %s has %d", n, k, out_path, i);
        n++;
        text += tlen + (end ? sizeof sep - 1 : 0);
        line = eol ? eol + 1 : line + strlen(line);
        if (!end) break;
    }
    if (!rc && n < 10) rc = fail("only %d tokenizer cases read from %s", n, inp_path);
    free(got);
    free(inp);
    free(out);
    *cases = n;
    return rc;
}

/* Logits of the last decoded token: all finite, not all equal; *argmax gets the largest. */
static int check_logits(struct llama_context *ctx, int32_t n_vocab, const char *step,
                        llama_token *argmax, double *spread) {
    const float *lg = llama_get_logits_ith(ctx, -1);
    if (!lg) return fail("%s: no logits", step);
    float lo = lg[0], hi = lg[0];
    *argmax = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        if (!isfinite(lg[i])) return fail("%s: logit %d is %g", step, i, (double)lg[i]);
        if (lg[i] < lo) lo = lg[i];
        if (lg[i] > hi) {
            hi = lg[i];
            *argmax = i;
        }
    }
    if (!(hi > lo)) return fail("%s: every logit is %g", step, (double)lo);
    *spread = (double)hi - (double)lo;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: llama_check MODEL.gguf VOCAB.inp VOCAB.out\n");
        return 2;
    }
    model_path = argv[1];
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(model_path, mp);
    if (!model) return fail("libllama does not load it");
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int32_t n_vocab = llama_vocab_n_tokens(vocab);
    int cases = 0;
    int rc = check_tokenizer(vocab, argv[2], argv[3], &cases);
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 64;
    cp.n_batch = 64;
    cp.n_threads = cp.n_threads_batch = 1;
    struct llama_context *ctx = rc ? NULL : llama_init_from_model(model, cp);
    if (!rc && !ctx) rc = fail("no context");
    llama_token toks[64], next = 0;
    double spread = 0;
    int32_t n = 0;
    if (!rc) {
        static const char prompt[] = "The quick brown fox jumps over the lazy dog";
        n = llama_tokenize(vocab, prompt, (int32_t)strlen(prompt), toks, 63, true, false);
        if (n < 2 || toks[0] != llama_vocab_bos(vocab)) rc = fail("prompt: %d tokens", n);
    }
    if (!rc && llama_decode(ctx, llama_batch_get_one(toks, n)) != 0) rc = fail("decode failed");
    if (!rc) rc = check_logits(ctx, n_vocab, "prompt", &next, &spread);
    if (!rc && llama_decode(ctx, llama_batch_get_one(&next, 1)) != 0) rc = fail("step failed");
    if (!rc) rc = check_logits(ctx, n_vocab, "step", &next, &spread);
    if (!rc)
        printf("llama_check: %s: loaded, %d tokenizer cases as llama.cpp expects, %d-token prompt "
               "and one step decoded, %d logits finite (spread %.3f)\n",
               model_path, cases, n, n_vocab, spread);
    if (ctx) llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return rc;
}
