/*
 * test_llama_load.c — tl_llama_model_load (libtierload-llama) against
 * llama.cpp itself: the same logits, bit for bit, as llama.cpp's own load of
 * the same file (F16, Q8_0, Q4_0, Q4_K_M and a mkmodel llama model); a LoRA
 * merged at load against llama.cpp applying it at run time; and the refusals
 * (llama.cpp's reason, a file changed under the load, a LoRA that does not
 * fit, a cancel), with nothing returned; and, last (it adds devices to the
 * process), tierload's plan placing the layers on two ggml RPC servers under
 * budgets neither could meet alone, against llama.cpp's own load.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef TL_HAVE_LLAMA

static void no_llama(void **state) {
    (void)state;
    if (tu_in_ci()) fail_msg("libtierload-llama was not built: %s", TL_NO_LLAMA_REASON);
    TU_SKIP("libtierload-llama was not built: %s", TL_NO_LLAMA_REASON);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(no_llama)};
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}

#else

#include "tierload-llama.h"

#include <ggml-backend.h>
#include <gguf.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const llama_token k_tokens[] = {1, 450, 4996, 17354, 1701, 432, 17204, 975};
#define N_TOKENS ((int)(sizeof k_tokens / sizeof k_tokens[0]))
#define N_PREDICT 4

/* llama.cpp's messages: counted (to tell whether it ran), errors shown. */
static int g_llama_lines;
static char g_buffers[4096]; /* llama.cpp's "model buffer size" lines, while capturing */
static bool g_capture;
static void count_log(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    g_llama_lines++;
    if (g_capture && strstr(text, "model buffer size") &&
        strlen(g_buffers) + strlen(text) < sizeof g_buffers)
        strcat(g_buffers, text);
    if (level == GGML_LOG_LEVEL_ERROR && getenv("TL_TEST_VERBOSE")) fputs(text, stderr);
}

/* Logits of every prompt position, then of each greedy step; *n floats. */
typedef struct run {
    float *logits;
    size_t n;
    llama_token gen[N_PREDICT];
} run;

static run eval(struct llama_model *model, struct llama_adapter_lora *lora, float scale) {
    run r = {0};
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 64;
    cp.n_batch = cp.n_ubatch = N_TOKENS;
    cp.n_threads = cp.n_threads_batch = 2;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    assert_non_null(ctx);
    if (lora) assert_int_equal(llama_set_adapters_lora(ctx, &lora, 1, &scale), 0);
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    r.logits = malloc(sizeof(float) * (size_t)n_vocab * (N_TOKENS + N_PREDICT));
    assert_non_null(r.logits);
    struct llama_batch b = llama_batch_init(N_TOKENS, 0, 1);
    for (int i = 0; i < N_TOKENS; i++) {
        b.token[i] = k_tokens[i] % n_vocab;
        b.pos[i] = i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 1;
    }
    b.n_tokens = N_TOKENS;
    int pos = N_TOKENS;
    for (int step = 0; step <= N_PREDICT; step++) {
        assert_int_equal(llama_decode(ctx, b), 0);
        const float *last = NULL;
        for (int i = 0; i < b.n_tokens; i++) {
            last = llama_get_logits_ith(ctx, i);
            memcpy(r.logits + r.n, last, sizeof(float) * (size_t)n_vocab);
            r.n += (size_t)n_vocab;
        }
        if (step == N_PREDICT) break;
        int best = 0;
        for (int v = 1; v < n_vocab; v++)
            if (last[v] > last[best]) best = v;
        r.gen[step] = best;
        b.token[0] = best;
        b.pos[0] = pos++;
        b.logits[0] = 1;
        b.n_tokens = 1;
    }
    llama_batch_free(b);
    llama_free(ctx);
    return r;
}

static struct llama_model_params ref_params(void) {
    struct llama_model_params p = llama_model_default_params();
    p.load_mode = LLAMA_LOAD_MODE_NONE; /* --no-mmap: its buffers are its own, like ours */
    return p;
}

/* llama.cpp's own load and tierload's give the same logits and tokens, bit for bit. */
static void same_as_llamacpp(const char *path, bool expect_repacked) {
    struct llama_model *ref = llama_model_load_from_file(path, ref_params());
    assert_non_null(ref);
    run a = eval(ref, NULL, 0);
    llama_model_free(ref);

    tl_llama_stats st;
    tl_llama_options o;
    tl_llama_options_init(&o);
    o.stats = &st;
    struct llama_model *m = NULL;
    tl_status s = tl_llama_model_load(path, &o, llama_model_default_params(), &m);
    if (s) fail_msg("%s: %s", path, tl_last_error());
    run b = eval(m, NULL, 0);
    llama_model_free(m);

    assert_int_equal(a.n, b.n);
    if (memcmp(a.logits, b.logits, a.n * sizeof(float))) {
        double worst = 0;
        for (size_t i = 0; i < a.n; i++)
            worst = fmax(worst, fabs((double)a.logits[i] - b.logits[i]));
        fail_msg("%s: logits differ from llama.cpp's own load (max |diff| %g)", path, worst);
    }
    assert_memory_equal(a.gen, b.gen, sizeof a.gen);
    assert_true(st.n_in_place > 0);
    if (expect_repacked) assert_true(st.n_repacked > 0);
    assert_int_equal(st.n_unused, 0);
    free(a.logits);
    free(b.logits);
}

static void logits_f16(void **state) {
    (void)state;
    same_as_llamacpp(tu_testdata("gguf/tiny-llama-f16.gguf"), false);
}
static void logits_q8_0(void **state) {
    (void)state;
    same_as_llamacpp(tu_testdata("gguf/tiny-llama-q8_0.gguf"), false);
}
static void logits_q4_0(void **state) {
    (void)state;
    same_as_llamacpp(tu_testdata("gguf/tiny-llama-q4_0.gguf"), true);
}
static void logits_q4_k_m(void **state) {
    (void)state;
    same_as_llamacpp(tu_testdata("gguf/tiny-llama-256-q4_k_m.gguf"), true);
}

/* A llama model written by tierload mkmodel (larger tensors, several loader chunks). */
static void logits_mkmodel(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, "mk.gguf");
    tu_run r = tu_cli_run("mkmodel", path, "--profile", "llama", "--size", "96M", NULL);
    if (r.status) fail_msg("mkmodel: %s", r.err);
    tu_run_free(&r);
    same_as_llamacpp(path, false);
    free(path);
    tu_tmpdir_rm(dir);
}

/* A copy of a test model without output.weight: the output projection tied to token_embd. */
static void logits_tied(void **state) {
    (void)state;
    static const char *rels[] = {"gguf/tiny-llama-f16.gguf", "gguf/tiny-llama-q4_0.gguf"};
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, "tied.gguf");
    for (size_t r = 0; r < 2; r++) {
        struct ggml_context *data = NULL;
        struct gguf_init_params ip = {.no_alloc = false, .ctx = &data};
        struct gguf_context *src = gguf_init_from_file(tu_testdata(rels[r]), ip);
        assert_non_null(src);
        struct gguf_context *dst = gguf_init_empty();
        gguf_set_kv(dst, src);
        for (int64_t i = 0; i < gguf_get_n_tensors(src); i++) {
            const char *name = gguf_get_tensor_name(src, i);
            if (strcmp(name, "output.weight")) gguf_add_tensor(dst, ggml_get_tensor(data, name));
        }
        assert_true(gguf_write_to_file(dst, path, false));
        gguf_free(dst);
        gguf_free(src);
        ggml_free(data);
        same_as_llamacpp(path, r == 1);
    }
    free(path);
    tu_tmpdir_rm(dir);
}

/* A copy of a test file with one byte string replaced (same length) in its header. */
static char *patched_copy(const char *dir, const char *rel, const char *from, const char *to,
                          size_t n) {
    size_t len;
    char *b = tu_read_file(tu_testdata(rel), &len);
    assert_non_null(b);
    char *at = memmem(b, len, from, n);
    assert_non_null(at);
    memcpy(at, to, n);
    char *path = tu_path(dir, "patched.gguf");
    tu_write_file(path, b, len);
    free(b);
    return path;
}

/* What llama.cpp refuses comes back with its reason; nothing is returned. */
static void refused_like_llamacpp(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    struct {
        const char *from, *to;
        size_t n;
        const char *expect;
    } cases[] = {
        /* the architecture's value (after its u64 length 5) */
        {"\x05\0\0\0\0\0\0\0llama", "\x05\0\0\0\0\0\0\0llamb", 13, "unknown model architecture"},
        {"blk.1.ffn_up.weight", "blk.1.ffn_zz.weight", 19, "blk.1.ffn_up.weight"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path =
            patched_copy(dir, "gguf/tiny-llama-f16.gguf", cases[i].from, cases[i].to, cases[i].n);
        /* llama.cpp's own load refuses the file too */
        assert_null(llama_model_load_from_file(path, ref_params()));
        struct llama_model *m = (struct llama_model *)path;
        tl_status s = tl_llama_model_load(path, NULL, llama_model_default_params(), &m);
        assert_int_equal(s, TL_ERR_UNSUPPORTED);
        assert_null(m);
        if (!strstr(tl_last_error(), cases[i].expect) || !strstr(tl_last_error(), path))
            fail_msg("case %zu: message: %s", i, tl_last_error());
        free(path);
    }
    tu_tmpdir_rm(dir);
}

typedef struct changer {
    const char *path;
    int calls;
    bool cancel;
} changer;

/* The first progress call rewrites the file (or cancels). */
static bool on_progress(float f, void *user) {
    changer *c = user;
    (void)f;
    if (c->calls++ == 0) {
        if (c->cancel) return false;
        size_t len;
        char *b = tu_read_file(c->path, &len);
        assert_non_null(b);
        assert_int_equal(truncate(c->path, (off_t)(len / 2)), 0);
        free(b);
    }
    return true;
}

static void file_changed(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, "m.gguf");
    tu_copy_testdata("gguf/tiny-llama-f16.gguf", path);
    changer c = {path, 0, false};
    struct llama_model_params p = llama_model_default_params();
    p.progress_callback = on_progress;
    p.progress_callback_user_data = &c;
    struct llama_model *m = (struct llama_model *)path;
    tl_status s = tl_llama_model_load(path, NULL, p, &m);
    assert_int_equal(s, TL_ERR_CHANGED);
    assert_null(m);
    assert_non_null(strstr(tl_last_error(), path));

    tu_copy_testdata("gguf/tiny-llama-f16.gguf", path);
    c = (changer){path, 0, true};
    m = (struct llama_model *)path;
    s = tl_llama_model_load(path, NULL, p, &m);
    assert_int_equal(s, TL_ERR_CANCELLED);
    assert_null(m);
    free(path);
    tu_tmpdir_rm(dir);
}

/*
 * A LoRA in llama.cpp's adapter format for tiny-llama-f16: rank 4 on attn_q,
 * attn_v and ffn_up of both blocks (plus one key no tensor has when bad).
 */
static void write_lora(const char *path, bool bad) {
    static const char *targets[] = {
        "blk.0.attn_q.weight", "blk.0.attn_v.weight", "blk.0.ffn_up.weight", "blk.1.attn_q.weight",
        "blk.1.attn_v.weight", "blk.1.ffn_up.weight", "blk.1.attn_zz.weight"};
    static const int64_t outs[] = {64, 64, 128, 64, 64, 128, 64};
    size_t n = bad ? 7 : 6;
    const int rank = 4;
    struct ggml_init_params ip = {16u << 20, NULL, false};
    struct ggml_context *ctx = ggml_init(ip);
    assert_non_null(ctx);
    struct gguf_context *g = gguf_init_empty();
    gguf_set_val_str(g, "general.architecture", "llama");
    gguf_set_val_str(g, "general.type", "adapter");
    gguf_set_val_str(g, "adapter.type", "lora");
    gguf_set_val_f32(g, "adapter.lora.alpha", 8.0f);
    uint32_t seed = 12345;
    for (size_t k = 0; k < n; k++) {
        char name[96];
        struct ggml_tensor *a = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 64, rank);
        struct ggml_tensor *b = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, rank, outs[k]);
        snprintf(name, sizeof name, "%s.lora_a", targets[k]);
        ggml_set_name(a, name);
        snprintf(name, sizeof name, "%s.lora_b", targets[k]);
        ggml_set_name(b, name);
        struct ggml_tensor *ts[2] = {a, b};
        for (int t = 0; t < 2; t++) {
            float *v = ts[t]->data;
            for (int64_t i = 0; i < ggml_nelements(ts[t]); i++) {
                seed = seed * 1664525u + 1013904223u;
                v[i] = ((float)(seed >> 8) / (float)(1u << 24) - 0.5f) * 0.1f;
            }
            gguf_add_tensor(g, ts[t]);
        }
    }
    assert_true(gguf_write_to_file(g, path, false));
    gguf_free(g);
    ggml_free(ctx);
}

static void lora_like_runtime(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *lp = tu_path(dir, "lora.gguf");
    write_lora(lp, false);
    const char *path = tu_testdata("gguf/tiny-llama-f16.gguf");
    const float scale = 0.75f;

    /* llama.cpp applies the adapter at run time */
    struct llama_model *ref = llama_model_load_from_file(path, ref_params());
    assert_non_null(ref);
    struct llama_adapter_lora *ad = llama_adapter_lora_init(ref, lp);
    assert_non_null(ad);
    run a = eval(ref, ad, scale);
    run plain = eval(ref, NULL, 0);
    llama_model_free(ref);

    tl_llama_lora l = {lp, scale};
    tl_llama_stats st;
    tl_llama_options o;
    tl_llama_options_init(&o);
    o.loras = &l;
    o.n_loras = 1;
    o.stats = &st;
    struct llama_model *m = NULL;
    tl_status s = tl_llama_model_load(path, &o, llama_model_default_params(), &m);
    if (s) fail_msg("%s", tl_last_error());
    assert_int_equal(st.n_merged, 6);
    run b = eval(m, NULL, 0);
    llama_model_free(m);

    double maxabs = 0, diff = 0, moved = 0;
    for (size_t i = 0; i < a.n; i++) {
        maxabs = fmax(maxabs, fabs(a.logits[i]));
        diff = fmax(diff, fabs((double)a.logits[i] - b.logits[i]));
        moved = fmax(moved, fabs((double)a.logits[i] - plain.logits[i]));
    }
    print_message("LoRA merged vs run time: max |diff| %g, limit 1e-3 x max |logit| = %g, the LoRA "
                  "moved logits by %g\n",
                  diff, 1e-3 * maxabs, moved);
    /* the LoRA matters, and tierload's merge gives what llama.cpp's run-time adapter gives */
    if (!(moved > 1e-2 * maxabs)) fail_msg("the LoRA hardly changes the logits (%g)", moved);
    if (!(diff <= 1e-3 * maxabs))
        fail_msg("merged vs run-time LoRA: max |diff| %g > 1e-3 x max |logit| %g", diff, maxabs);
    free(a.logits);
    free(b.logits);
    free(plain.logits);

    /* a LoRA with a key no tensor has: refused before llama.cpp runs */
    write_lora(lp, true);
    g_llama_lines = 0;
    m = (struct llama_model *)lp;
    s = tl_llama_model_load(path, &o, llama_model_default_params(), &m);
    assert_int_equal(s, TL_ERR_NOT_FOUND);
    assert_null(m);
    assert_non_null(strstr(tl_last_error(), "blk.1.attn_zz"));
    assert_int_equal(g_llama_lines, 0);

    /* a LoRA on quantized weights: refused by name, before llama.cpp runs */
    write_lora(lp, false);
    g_llama_lines = 0;
    s = tl_llama_model_load(tu_testdata("gguf/tiny-llama-q8_0.gguf"), &o,
                            llama_model_default_params(), &m);
    assert_int_equal(s, TL_ERR_UNSUPPORTED);
    assert_null(m);
    assert_non_null(strstr(tl_last_error(), "Q8_0"));
    assert_int_equal(g_llama_lines, 0);
    free(lp);
    tu_tmpdir_rm(dir);
}

/* An ggml RPC server on port, started for the test; 0 when it does not answer. */
static pid_t rpc_server(const char *exe, int port) {
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    char *argv[] = {(char *)exe, "-p", p, "-t", "1", NULL};
    pid_t pid;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    int e = posix_spawn(&pid, exe, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e) return 0;
    for (int i = 0; i < 200; i++) { /* up to 20 s for it to listen */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok) return pid;
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    return 0;
}

/*
 * Two RPC servers as llama.cpp's devices, budgets that hold the model on
 * neither alone: tierload's plan splits the layers over both, and the logits
 * are llama.cpp's own, bit for bit (its load on the CPU, and its own
 * placement on the same servers).
 */
static void plan_over_rpc(void **state) {
    (void)state;
    const char *exe = getenv("TL_GGML_RPC_SERVER");
    if (!exe || access(exe, X_OK)) {
        if (tu_in_ci()) fail_msg("no ggml-rpc-server (TL_GGML_RPC_SERVER): make ggml builds it");
        TU_SKIP("no ggml-rpc-server (TL_GGML_RPC_SERVER): make ggml builds it");
    }
    const char *path = tu_testdata("gguf/tiny-llama-f16.gguf");
    struct llama_model *ref = llama_model_load_from_file(path, ref_params());
    assert_non_null(ref);
    run cpu = eval(ref, NULL, 0);
    llama_model_free(ref);

    ggml_backend_reg_t reg = ggml_backend_reg_by_name("RPC");
    if (!reg) TU_SKIP("this ggml has no RPC backend");
    typedef ggml_backend_reg_t (*add_fn)(const char *);
    add_fn add = (add_fn)ggml_backend_reg_get_proc_address(reg, "ggml_backend_rpc_add_server");
    assert_non_null(add);
    int port = 20000 + (int)(getpid() % 20000);
    pid_t servers[2] = {rpc_server(exe, port), rpc_server(exe, port + 1)};
    assert_true(servers[0] > 0 && servers[1] > 0);
    for (int i = 0; i < 2; i++) {
        char ep[64];
        snprintf(ep, sizeof ep, "127.0.0.1:%d", port + i);
        ggml_backend_reg_t r = add(ep);
        assert_non_null(r);
        ggml_backend_register(r);
    }
    /* the embedding and output (7.8 MiB) and one layer fit the first; the rest go to the second */
    char *text = NULL;
    tl_llama_stats st;
    tl_llama_options o;
    tl_llama_options_init(&o);
    o.plan = true;
    o.max_vram = "7.9M";
    o.plan_text = &text;
    o.stats = &st;
    struct llama_model *m = NULL;
    g_buffers[0] = 0;
    g_capture = true;
    tl_status s = tl_llama_model_load(path, &o, llama_model_default_params(), &m);
    g_capture = false;
    if (s) fail_msg("%s", tl_last_error());
    assert_non_null(text);
    if (!strstr(text, "layer_split")) fail_msg("plan: %s", text);
    /* where llama.cpp allocated: the first server the output and layer 0 (3.99 MiB), the
       second layer 1 (llama.cpp's own placement would put the output on the second) */
    for (int i = 0; i < 2; i++) {
        char key[64];
        snprintf(key, sizeof key, "127.0.0.1:%d] model buffer size =", port + i);
        const char *at = strstr(g_buffers, key);
        if (!at) fail_msg("no buffer on server %d: %s", i, g_buffers);
        double mib = atof(at + strlen(key));
        if (i == 0 ? mib < 3.9 : mib > 1.0)
            fail_msg("server %d holds %.2f MiB: %s", i, mib, g_buffers);
    }
    tl_free(text);
    assert_true(st.n_staged > 0); /* on the servers */
    run b = eval(m, NULL, 0);
    llama_model_free(m);

    ref = llama_model_load_from_file(path, ref_params()); /* llama.cpp's own placement */
    assert_non_null(ref);
    run c = eval(ref, NULL, 0);
    llama_model_free(ref);
    assert_int_equal(cpu.n, b.n);
    assert_memory_equal(cpu.logits, b.logits, cpu.n * sizeof(float));
    assert_memory_equal(c.logits, b.logits, cpu.n * sizeof(float));
    assert_memory_equal(cpu.gen, b.gen, sizeof cpu.gen);

    /* budgets that hold no layer: the plan keeps the model in RAM */
    o.max_vram = "1M";
    o.plan_text = NULL;
    s = tl_llama_model_load(path, &o, llama_model_default_params(), &m);
    if (s) fail_msg("%s", tl_last_error());
    assert_int_equal(st.n_staged, 0);
    run d = eval(m, NULL, 0);
    llama_model_free(m);
    assert_memory_equal(cpu.logits, d.logits, cpu.n * sizeof(float));
    free(d.logits);
    for (int i = 0; i < 2; i++) {
        kill(servers[i], SIGTERM);
        waitpid(servers[i], NULL, 0);
    }
    free(cpu.logits);
    free(b.logits);
    free(c.logits);
}

int main(void) {
    llama_log_set(count_log, NULL);
    if (!ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU)) ggml_backend_load_all();
    llama_backend_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(logits_f16),
        cmocka_unit_test(logits_q8_0),
        cmocka_unit_test(logits_q4_0),
        cmocka_unit_test(logits_q4_k_m),
        cmocka_unit_test(logits_mkmodel),
        cmocka_unit_test(logits_tied),
        cmocka_unit_test(refused_like_llamacpp),
        cmocka_unit_test(file_changed),
        cmocka_unit_test(lora_like_runtime),
        cmocka_unit_test(plan_over_rpc), /* last: it adds devices to the process */
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    llama_backend_free();
    return tu_exit(failed);
}

#endif
