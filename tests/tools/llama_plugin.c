/*
 * llama_plugin.c — llama.cpp (libllama, public API only) evaluating a GGUF with its model on the
 * TIERLOAD0 device of libggml-tierload.so: what an unmodified engine does with the plugin.
 *
 *   llama-plugin MODEL.gguf (--plugin LIB.so | --load-all) --tokens 1,2,3,... --n-predict N
 *                --logits OUT.f32 [--threads N] [--after-prompt CMD]
 *                [--then MODEL2.gguf --then-logits OUT2.f32]
 *
 * --plugin: loaded with ggml_backend_load, the model placed on TIERLOAD0 alone (devices = {it},
 * all layers), use_extra_bufts = false as in llama-oracle. --load-all: ggml_backend_load_all()
 * (which honours GGML_BACKEND_PATH) and llama.cpp's default model parameters; TIERLOAD0 must
 * then be among the devices. --after-prompt runs CMD (sh -c) once the prompt is evaluated: the
 * fault tests change the model file there. --no-mmap: llama.cpp reads the file itself (load mode
 * NONE) instead of mapping it. --figures prints, after the run, the mean wall time of
 * a greedy token's decode ("decode_ms_per_token") and the largest RssAnon of the process seen
 * after the model load and after each evaluation ("rss_anon_peak_kb"), for bench_plugin.sh. Either way no flash attention (as llama-oracle). The prompt is one
 * batch, then N greedy tokens one by one; OUT.f32 gets the logits of every evaluated position
 * (positions x vocab, F32), exactly as llama-oracle writes them; stdout "greedy: t1 t2 ...".
 * --then: once the first model's tokens are evaluated, a second model is loaded on the same
 * devices (the first stays loaded) and evaluated the same way, its logits into OUT2.f32: weights
 * that come to the device after graphs ran, as stable-diffusion.cpp brings each module's.
 * Exit 0 on success, 2 on usage, 3 when the plugin does not load or register, 1 when an
 * evaluation fails (the plugin's message is on stderr).
 */
#include <ggml-backend.h>
#include <llama.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long rss_anon_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "RssAnon:", 8)) kb = strtol(line + 8, NULL, 10);
    if (f) fclose(f);
    return kb;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static int usage(void) {
    fprintf(stderr, "usage: llama-plugin MODEL.gguf (--plugin LIB.so | --load-all) --tokens 1,2,... "
                    "--n-predict N --logits OUT.f32 [--threads N] [--then MODEL2 --then-logits OUT2]\n");
    return 2;
}

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

typedef struct run {
    const llama_token *tok;
    int n_prompt, n_predict, threads;
} run;

/*
 * Load path on mp's devices and evaluate the prompt and n_predict greedy
 * tokens, the logits of every position into out_path and the greedy tokens
 * on stdout; the model and its context are left to the caller. 0, or the exit
 * status.
 */
static int run_model(const run *r, const char *path, struct llama_model_params mp,
                     const char *out_path, const char *after_prompt, bool figures,
                     struct llama_model **model_out, struct llama_context **ctx_out) {
    struct llama_model *model = *model_out = llama_model_load_from_file(path, mp);
    if (!model) {
        fprintf(stderr, "llama-plugin: %s: llama.cpp cannot load it\n", path);
        return 1;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int n_vocab = llama_vocab_n_tokens(vocab);
    for (int i = 0; i < r->n_prompt; i++)
        if (r->tok[i] >= n_vocab) return usage();
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(r->n_prompt + r->n_predict + 1);
    cp.n_batch = cp.n_ubatch = (uint32_t)r->n_prompt;
    cp.n_seq_max = 1;
    cp.n_threads = cp.n_threads_batch = r->threads;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    struct llama_context *ctx = *ctx_out = llama_init_from_model(model, cp);
    FILE *out = fopen(out_path, "wb");
    if (!ctx || !out) {
        fprintf(stderr, "llama-plugin: %s\n", ctx ? out_path : "no context");
        if (out) fclose(out);
        return 1;
    }
    llama_token next = 0;
    long rss_peak = rss_anon_kb();
    bool ok = eval(ctx, r->tok, r->n_prompt, 0, n_vocab, out, &next);
    if (rss_anon_kb() > rss_peak) rss_peak = rss_anon_kb();
    if (ok && after_prompt && system(after_prompt) != 0) {
        fprintf(stderr, "llama-plugin: --after-prompt %s failed\n", after_prompt);
        fclose(out);
        return 1;
    }
    printf("greedy:");
    double t0 = now_s();
    for (int k = 0; ok && k < r->n_predict; k++) {
        printf(" %d", next);
        llama_token t = next;
        ok = eval(ctx, &t, 1, r->n_prompt + k, n_vocab, out, &next);
        if (rss_anon_kb() > rss_peak) rss_peak = rss_anon_kb();
    }
    double dt = now_s() - t0;
    printf("\n");
    if (figures && r->n_predict > 0)
        printf("decode_ms_per_token: %.3f\nrss_anon_peak_kb: %ld\n", dt * 1e3 / r->n_predict,
               rss_peak);
    if (fclose(out) != 0) ok = false;
    if (!ok) fprintf(stderr, "llama-plugin: evaluation failed\n");
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *tokens = NULL, *out_path = NULL, *plugin = NULL, *after_prompt = NULL;
    const char *then_path = NULL, *then_out = NULL;
    int n_predict = -1, threads = 1;
    bool load_all = false, figures = false, no_mmap = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--tokens") && v) tokens = v, i++;
        else if (!strcmp(a, "--n-predict") && v) n_predict = atoi(v), i++;
        else if (!strcmp(a, "--logits") && v) out_path = v, i++;
        else if (!strcmp(a, "--threads") && v) threads = atoi(v), i++;
        else if (!strcmp(a, "--plugin") && v) plugin = v, i++;
        else if (!strcmp(a, "--load-all")) load_all = true;
        else if (!strcmp(a, "--figures")) figures = true;
        else if (!strcmp(a, "--no-mmap")) no_mmap = true;
        else if (!strcmp(a, "--after-prompt") && v) after_prompt = v, i++;
        else if (!strcmp(a, "--then") && v) then_path = v, i++;
        else if (!strcmp(a, "--then-logits") && v) then_out = v, i++;
        else if (a[0] != '-' && !model_path) model_path = a;
        else return usage();
    }
    if (!model_path || !tokens || n_predict < 0 || !out_path || threads < 1 || !plugin == !load_all ||
        !then_path != !then_out)
        return usage();
    int n_prompt = 0, cap = 64;
    llama_token *tok = malloc((size_t)cap * sizeof *tok);
    for (const char *p = tokens; tok && *p;) {
        char *end;
        long t = strtol(p, &end, 10);
        if (end == p || t < 0 || (*end && *end != ',')) {
            free(tok);
            return usage();
        }
        if (n_prompt == cap) {
            llama_token *grown = realloc(tok, (size_t)(cap *= 2) * sizeof *tok);
            if (!grown) free(tok);
            tok = grown;
        }
        if (!tok) break;
        tok[n_prompt++] = (llama_token)t;
        p = *end == ',' ? end + 1 : end;
    }
    if (!tok || !n_prompt) {
        free(tok);
        return usage();
    }

    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    ggml_backend_dev_t devs[2] = {NULL, NULL};
    if (plugin) {
        ggml_backend_reg_t reg = ggml_backend_load(plugin);
        if (!reg) {
            fprintf(stderr, "llama-plugin: %s: ggml_backend_load refused it\n", plugin);
            free(tok);
            return 3;
        }
        devs[0] = ggml_backend_dev_by_name("TIERLOAD0");
        if (!devs[0]) {
            fprintf(stderr, "llama-plugin: %s registered no TIERLOAD0\n", plugin);
            free(tok);
            return 3;
        }
        mp.devices = devs;
        mp.n_gpu_layers = 999;
        mp.use_extra_bufts = false;
    } else {
        ggml_backend_load_all();
        if (!ggml_backend_dev_by_name("TIERLOAD0")) {
            fprintf(stderr, "llama-plugin: no TIERLOAD0 after ggml_backend_load_all (GGML_BACKEND_PATH=%s)\n",
                    getenv("GGML_BACKEND_PATH") ? getenv("GGML_BACKEND_PATH") : "(unset)");
            return 3;
        }
    }
    if (no_mmap) mp.load_mode = LLAMA_LOAD_MODE_NONE;
    struct llama_model *model = NULL, *model2 = NULL;
    struct llama_context *ctx = NULL, *ctx2 = NULL;
    run r = {tok, n_prompt, n_predict, threads};
    int rc = run_model(&r, model_path, mp, out_path, after_prompt, figures, &model, &ctx);
    /* a second model while the first stays loaded: its weights come after the first's graphs */
    if (!rc && then_path) rc = run_model(&r, then_path, mp, then_out, NULL, false, &model2, &ctx2);
    llama_free(ctx2);
    llama_model_free(model2);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    free(tok);
    return rc;
}
