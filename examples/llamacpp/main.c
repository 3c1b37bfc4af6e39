/*
 * tl-llamacpp — llama.cpp, unmodified, evaluating a model whose weights
 * tierload loaded (tl_llama_model_load), or, with --reference, the same
 * program on llama.cpp's own loader, for comparison.
 *
 *   tl-llamacpp MODEL [--tokens 1,2,3] [--n-predict N] [--logits OUT.f32] [--json]
 *               [--lora FILE[:SCALE]]... [--reference [--llama-mode none|mmap|direct|user]]
 *               [--mode auto|buffered|direct] [--verify] [--threads N]
 *               [--no-extra-bufts] [--verbose]
 *               [--rpc HOST:PORT[,HOST:PORT...]] [--plan [--max-vram SPEC] [--reserve SIZE]]
 *
 * The token ids are evaluated in one batch with logits for every position,
 * then N tokens are generated greedily, one at a time. --logits writes every
 * row of logits (prompt positions, then one per generated token) as raw
 * little-endian F32, n_vocab per row. With --reference, LoRAs are applied by
 * llama.cpp at run time (llama_adapter_lora_init + llama_set_adapters_lora);
 * without it, tierload merges them into the weights as they load.
 * --llama-mode user is llama.cpp's own user-data path (llama_model_init_from_user)
 * with a callback that preads each tensor and no tierload (plain.c): the baseline
 * of the path tl_llama_model_load takes. --rpc
 * adds ggml RPC servers as llama.cpp devices; --plan lets tierload's planner
 * place the layers on llama.cpp's GPU devices under --max-vram budgets
 * (llama.cpp's own placement otherwise: every layer offloaded, split by free
 * memory). Tokens per second are over the generated tokens. Exit statuses
 * are the tierload CLI's (7: llama.cpp refused the model, 12: the file
 * changed, 10: cancelled).
 */
#include "plain.h"
#include "tierload-llama.h"

#include <ggml-backend.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define MAX_LORAS 8

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

/* The exit statuses of the tierload CLI (README): 3 malformed, 4 I/O, 6 out of memory, ... */
static int exit_code(tl_status s) {
    switch (s) {
    case TL_ERR_INVALID_ARG:
        return 2;
    case TL_ERR_IO:
        return 4;
    case TL_ERR_FORMAT:
        return 3;
    case TL_ERR_NOMEM:
        return 6;
    case TL_ERR_NOT_FOUND:
        return 5;
    default:
        return (int)s + 1; /* unsupported 7 ... integrity 13 */
    }
}

static int usage(const char *why) {
    fprintf(stderr, "tl-llamacpp: %s\n", why);
    fprintf(
        stderr,
        "usage: tl-llamacpp MODEL [--tokens 1,2,3] [--n-predict N] [--logits OUT.f32] [--json]\n"
        "                   [--lora FILE[:SCALE]]... [--reference [--llama-mode "
        "none|mmap|direct|user]]\n"
        "                   [--mode auto|buffered|direct] [--verify] [--threads N]\n"
        "                   [--no-extra-bufts] [--verbose]\n"
        "                   [--rpc HOST:PORT[,...]] [--plan [--max-vram SPEC] [--reserve SIZE]]\n");
    return 2;
}

static int parse_tokens(const char *s, llama_token **out, int *n) {
    int cap = 16;
    llama_token *t = malloc(cap * sizeof *t);
    *n = 0;
    while (t && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > 0x7fffffff) break;
        if (*n == cap) {
            llama_token *g = realloc(t, (cap *= 2) * sizeof *t);
            if (!g) break;
            t = g;
        }
        t[(*n)++] = (llama_token)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') break;
    }
    if (!t || *s || !*n) {
        free(t);
        return -1;
    }
    *out = t;
    return 0;
}

/* VmHWM: the process's peak resident memory so far, in KiB (-1 when unknown). */
static long hwm_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) v = atol(line + 6);
    if (f) fclose(f);
    return v;
}

static long peak_rss_kib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *tokens_arg = "1", *logits_path = NULL;
    const char *mode = "auto", *llama_mode = "none", *rpc = NULL, *max_vram = NULL;
    uint64_t reserve = 0;
    bool plan = false;
    int n_predict = 0, threads = 2;
    bool json = false, reference = false, verify = false, verbose = false, no_extra = false;
    tl_llama_lora loras[MAX_LORAS];
    size_t n_loras = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (!strcmp(a, "--tokens") && has_val)
            tokens_arg = argv[++i];
        else if (!strcmp(a, "--n-predict") && has_val)
            n_predict = atoi(argv[++i]);
        else if (!strcmp(a, "--logits") && has_val)
            logits_path = argv[++i];
        else if (!strcmp(a, "--mode") && has_val)
            mode = argv[++i];
        else if (!strcmp(a, "--llama-mode") && has_val)
            llama_mode = argv[++i];
        else if (!strcmp(a, "--threads") && has_val)
            threads = atoi(argv[++i]);
        else if (!strcmp(a, "--json"))
            json = true;
        else if (!strcmp(a, "--reference"))
            reference = true;
        else if (!strcmp(a, "--verify"))
            verify = true;
        else if (!strcmp(a, "--verbose"))
            verbose = true;
        else if (!strcmp(a, "--no-extra-bufts"))
            no_extra = true;
        else if (!strcmp(a, "--plan"))
            plan = true;
        else if (!strcmp(a, "--rpc") && has_val)
            rpc = argv[++i];
        else if (!strcmp(a, "--max-vram") && has_val)
            max_vram = argv[++i];
        else if (!strcmp(a, "--reserve") && has_val) {
            if (tl_parse_bytes(argv[++i], &reserve, NULL)) return usage("bad --reserve");
        } else if (!strcmp(a, "--lora") && has_val) {
            if (n_loras == MAX_LORAS) return usage("too many --lora");
            char *v = argv[++i], *colon = strrchr(v, ':');
            float scale = 1.0f;
            if (colon && colon[1]) {
                char *end;
                double d = strtod(colon + 1, &end);
                if (!*end) {
                    scale = (float)d;
                    *colon = 0;
                }
            }
            loras[n_loras++] = (tl_llama_lora){v, scale};
        } else if (a[0] == '-')
            return usage("unknown option or missing value");
        else if (!model_path)
            model_path = a;
        else
            return usage("more than one MODEL");
    }
    if (!model_path) return usage("no MODEL");
    if (n_predict < 0 || threads < 1) return usage("bad --n-predict or --threads");
    llama_token *toks = NULL;
    int n_tok = 0;
    if (parse_tokens(tokens_arg, &toks, &n_tok)) return usage("bad --tokens (comma list of ids)");

    if (!verbose) llama_log_set(quiet, NULL);
    if (!ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU)) ggml_backend_load_all();
    llama_backend_init();
    if (rpc) { /* each server becomes a device llama.cpp sees */
        ggml_backend_reg_t reg = ggml_backend_reg_by_name("RPC");
        typedef ggml_backend_reg_t (*add_fn)(const char *);
        add_fn add =
            reg ? (add_fn)ggml_backend_reg_get_proc_address(reg, "ggml_backend_rpc_add_server")
                : NULL;
        if (!add) return usage("--rpc: this ggml has no RPC backend");
        char *list = strdup(rpc), *save = NULL;
        for (char *ep = strtok_r(list, ",", &save); ep; ep = strtok_r(NULL, ",", &save)) {
            ggml_backend_reg_t r = add(ep);
            if (!r) {
                fprintf(stderr, "tl-llamacpp: RPC server %s: cannot connect\n", ep);
                return 9;
            }
            ggml_backend_register(r);
        }
        free(list);
    }

    struct llama_model_params mp = llama_model_default_params();
    if (no_extra) mp.use_extra_bufts = false;
    struct llama_model *model = NULL;
    struct llama_adapter_lora *adapters[MAX_LORAS];
    float scales[MAX_LORAS];
    tl_llama_stats st;
    memset(&st, 0, sizeof st);
    char *plan_text = NULL;
    double t0 = now_s();
    if (reference) {
        if (!strcmp(llama_mode, "none"))
            mp.load_mode = LLAMA_LOAD_MODE_NONE;
        else if (!strcmp(llama_mode, "mmap"))
            mp.load_mode = LLAMA_LOAD_MODE_MMAP;
        else if (!strcmp(llama_mode, "direct"))
            mp.load_mode = LLAMA_LOAD_MODE_DIRECT_IO;
        else if (strcmp(llama_mode, "user"))
            return usage("bad --llama-mode");
        model = strcmp(llama_mode, "user") ? llama_model_load_from_file(model_path, mp)
                                           : tl_plain_user_load(model_path, mp);
        if (!model) {
            fprintf(stderr, "tl-llamacpp: %s: llama.cpp could not load the model\n", model_path);
            return 7;
        }
        for (size_t k = 0; k < n_loras; k++) {
            adapters[k] = llama_adapter_lora_init(model, loras[k].path);
            scales[k] = loras[k].scale;
            if (!adapters[k]) {
                fprintf(stderr, "tl-llamacpp: %s: llama.cpp could not load the LoRA\n",
                        loras[k].path);
                return 7;
            }
        }
    } else {
        tl_load_options lo;
        tl_load_options_init(&lo);
        lo.mode = tl_load_mode_from_name(mode);
        if (lo.mode == TL_LOAD_MODE_INVALID) return usage("bad --mode");
        lo.verify = verify;
        tl_llama_options o;
        tl_llama_options_init(&o);
        o.load = &lo;
        o.loras = loras;
        o.n_loras = n_loras;
        o.stats = &st;
        o.plan = plan;
        o.max_vram = max_vram;
        o.reserve = reserve;
        o.plan_text = plan ? &plan_text : NULL;
        tl_status s = tl_llama_model_load(model_path, &o, mp, &model);
        if (plan_text && !json) printf("%s", plan_text);
        if (s) {
            fprintf(stderr, "tl-llamacpp: %s\n", tl_last_error());
            return exit_code(s);
        }
    }
    double t_load = now_s() - t0;
    long load_peak =
        hwm_kib(); /* the load's peak: the model is usable, nothing else allocated yet */

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(n_tok + n_predict + 16);
    cp.n_batch = cp.n_ubatch = (uint32_t)(n_tok > 1 ? n_tok : 1);
    cp.n_threads = cp.n_threads_batch = threads;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "tl-llamacpp: llama_init_from_model failed\n");
        return 9;
    }
    if (reference && n_loras && llama_set_adapters_lora(ctx, adapters, n_loras, scales)) {
        fprintf(stderr, "tl-llamacpp: llama_set_adapters_lora failed\n");
        return 9;
    }
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    for (int i = 0; i < n_tok; i++)
        if (toks[i] >= n_vocab) return usage("a token id is not below the vocabulary size");
    FILE *lf = logits_path ? fopen(logits_path, "wb") : NULL;
    if (logits_path && !lf) {
        perror(logits_path);
        return 4;
    }
    llama_token *gen = calloc((size_t)n_predict + 1, sizeof *gen);
    struct llama_batch b = llama_batch_init(n_tok, 0, 1);
    for (int i = 0; i < n_tok; i++) {
        b.token[i] = toks[i];
        b.pos[i] = i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 1;
    }
    b.n_tokens = n_tok;
    int rc = 0;
    double t_first = 0, t_gen0 = 0;
    int pos = n_tok, rows = 0;
    for (int step = 0; step <= n_predict && !rc; step++) {
        if (llama_decode(ctx, b)) {
            fprintf(stderr, "tl-llamacpp: llama_decode failed\n");
            rc = 9;
            break;
        }
        if (step == 0) {
            t_first = now_s() - t0;
            t_gen0 = now_s();
        }
        int n_rows = b.n_tokens;
        const float *last = NULL;
        for (int r = 0; r < n_rows; r++) {
            last = llama_get_logits_ith(ctx, r);
            if (lf && fwrite(last, sizeof(float), (size_t)n_vocab, lf) != (size_t)n_vocab) rc = 4;
            rows++;
        }
        if (step == n_predict) break;
        int best = 0;
        for (int v = 1; v < n_vocab; v++)
            if (last[v] > last[best]) best = v;
        gen[step] = best;
        b.token[0] = best;
        b.pos[0] = pos++;
        b.n_seq_id[0] = 1;
        b.seq_id[0][0] = 0;
        b.logits[0] = 1;
        b.n_tokens = 1;
    }
    double tps = n_predict > 0 ? n_predict / (now_s() - t_gen0) : 0;
    if (lf && fclose(lf)) rc = 4;
    if (json) {
        printf("{\"loader\": \"%s\", \"model\": \"%s\", \"load_seconds\": %.6f, "
               "\"first_token_seconds\": %.6f, \"load_peak_rss_kib\": %ld, \"peak_rss_kib\": %ld, "
               "\"n_vocab\": %d, \"logit_rows\": %d, \"tokens_per_second\": %.3f, \"generated\": [",
               reference ? "llama.cpp" : "tierload", model_path, t_load, t_first, load_peak,
               peak_rss_kib(), n_vocab, rows, tps);
        for (int i = 0; i < n_predict; i++)
            printf("%s%d", i ? ", " : "", gen[i]);
        printf("]");
        if (!reference)
            printf(", \"stats\": {\"tensors\": %zu, \"in_place\": %zu, \"staged\": %zu, "
                   "\"repacked\": %zu, \"neutral\": %zu, \"unused\": %zu, \"merged\": %zu, "
                   "\"bytes\": %llu, \"staging\": %llu, \"mode\": \"%s\", \"seconds_llama\": %.6f, "
                   "\"seconds_load\": %.6f}",
                   st.n_tensors, st.n_in_place, st.n_staged, st.n_repacked, st.n_neutral,
                   st.n_unused, st.n_merged, (unsigned long long)st.bytes,
                   (unsigned long long)st.staging,
                   tl_load_mode_name(st.mode) ? tl_load_mode_name(st.mode) : "?", st.seconds_llama,
                   st.seconds_load);
        printf("}\n");
    } else {
        printf("%s: loaded by %s in %.3f s, first token after %.3f s, peak RSS %ld MiB\n",
               model_path, reference ? "llama.cpp" : "tierload", t_load, t_first,
               peak_rss_kib() / 1024);
        if (!reference)
            printf("tensors: %zu (%zu in place, %zu staged, %zu repacked, %zu neutral), %zu "
                   "LoRA-merged\n",
                   st.n_tensors, st.n_in_place, st.n_staged, st.n_repacked, st.n_neutral,
                   st.n_merged);
        printf("generated (%.2f tokens/s):", tps);
        for (int i = 0; i < n_predict; i++)
            printf(" %d", gen[i]);
        printf("\n");
    }
    llama_batch_free(b);
    tl_free(plan_text);
    free(gen);
    free(toks);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return rc;
}
