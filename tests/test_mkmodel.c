/*
 * test_mkmodel.c — `tierload mkmodel`: what it writes is exactly what was
 * asked (tensor count, per-tensor sizes computed here by hand), requests it
 * cannot meet are refused without creating anything (too small a size for
 * the count, too few tensors for the profile, numbers with trailing
 * garbage), and OUT is never damaged: an existing file
 * survives a failed write (the file-size limit makes the write fail midway),
 * a path that is not a regular file is refused and left alone, and no
 * temporary file is left behind. Profile llama writes the llama keys,
 * the byte vocabulary and the tensors llama.cpp's loader asks for, with the
 * shapes the architecture gives (counts computed here by hand).
 */
#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Entries of dir other than . and .. */
static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void refused(const char *dir, const char *needle, const char *a1, const char *a2,
                    const char *a3, const char *a4, const char *a5, const char *a6) {
    char *out = tu_path(dir, "x.safetensors");
    tu_run r = tu_cli_run("mkmodel", out, a1, a2, a3, a4, a5, a6, NULL);
    if (r.status != 2 || !strstr(r.err, needle))
        fail_msg("mkmodel %s %s %s %s: status %d, stderr '%s' (want 2 and '%s')", a1, a2,
                 a3 ? a3 : "", a4 ? a4 : "", r.status, r.err, needle);
    assert_int_equal(count_entries(dir), 0); /* nothing created, not even a temporary file */
    tu_run_free(&r);
    free(out);
}

static void test_refusals(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    /* one row of 1024 F16 values is 2 KiB: 1K cannot hold even one tensor */
    refused(dir, "too small", "--tensors", "1000000", "--size", "1K", NULL, NULL);
    refused(dir, "bad count '5abc'", "--tensors", "5abc", NULL, NULL, NULL, NULL);
    refused(dir, "bad count", "--tensors", "-3", NULL, NULL, NULL, NULL);
    refused(dir, "bad seed 'abc'", "--seed", "abc", NULL, NULL, NULL, NULL);
    refused(dir, "bad seed", "--seed", "12x", NULL, NULL, NULL, NULL);
    /* the sdxl profile has 6 groups of 6 tensors: 5 is not silently raised to 36 */
    refused(dir, "at least 36 tensors", "--tensors", "5", NULL, NULL, NULL, NULL);
    /* (a header over the readers' limits is refused by the writer: test_writer.c) */
    refused(dir, "--size needs a value", "--size", NULL, NULL, NULL, NULL, NULL);
    tu_tmpdir_rm(dir);
}

static void test_exact_sizes(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    const char *fmts[] = {"m.gguf", "m.safetensors"};
    for (int k = 0; k < 2; k++) {
        char *out = tu_path(dir, fmts[k]);
        tu_write_file(out, "an older file", 13); /* replaced, since the new one is complete */
        tu_run r = tu_cli_run("mkmodel", out, "--size", "4M", "--tensors", "60", "--profile", "llm",
                              "--seed", "7", NULL);
        assert_int_equal(r.status, 0);
        tu_run_free(&r);
        assert_int_equal(count_entries(dir), k + 1); /* no temporary file left */
        tl_model *m = NULL;
        const char *p[] = {out};
        assert_int_equal(tl_model_open(p, 1, NULL, &m), TL_OK);
        assert_int_equal(tl_model_tensor_count(m), 60);
        /* by hand: 4 MiB / 60 tensors = 69905 bytes; rows of 1024 F16 = 2048 bytes: 34 rows */
        for (size_t i = 0; i < 60; i++) {
            const tl_tensor_info *t = tl_model_tensor(m, i);
            assert_int_equal(t->dtype, TL_DTYPE_F16);
            assert_int_equal(t->n_dims, 2);
            assert_int_equal(t->shape[0], 34);
            assert_int_equal(t->shape[1], 1024);
            assert_int_equal(t->nbytes, 34 * 2048);
        }
        tl_model_close(m);
        free(out);
    }
    /* the --opt=VALUE form: F32 rows are 4096 bytes, so 4 MiB / 60 = 69905 bytes is 17 rows */
    char *out = tu_path(dir, "f32.gguf");
    tu_run r = tu_cli_run("mkmodel", out, "--size=4M", "--tensors=60", "--profile=llm",
                          "--dtype=F32", NULL);
    assert_int_equal(r.status, 0);
    tu_run_free(&r);
    tl_model *m = NULL;
    const char *p[] = {out};
    assert_int_equal(tl_model_open(p, 1, NULL, &m), TL_OK);
    assert_int_equal(tl_model_tensor_count(m), 60);
    for (size_t i = 0; i < 60; i++) {
        assert_int_equal(tl_model_tensor(m, i)->dtype, TL_DTYPE_F32);
        assert_int_equal(tl_model_tensor(m, i)->shape[0], 17);
        assert_int_equal(tl_model_tensor(m, i)->nbytes, 17 * 4096);
    }
    tl_model_close(m);
    free(out);
    tu_tmpdir_rm(dir);
}

/* Run mkmodel with a file-size limit (SIGXFSZ ignored: writes past it fail with EFBIG). */
static int run_limited(char *const argv[], rlim_t limit) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit rl = {limit, limit};
        setrlimit(RLIMIT_FSIZE, &rl);
        signal(SIGXFSZ, SIG_IGN);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void test_failure_keeps_out(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *out = tu_path(dir, "precious.gguf");
    tu_write_file(out, "precious bytes", 14);
    char *argv[] = {(char *)tu_cli(), "mkmodel", out, "--size", "8M", NULL};
    int st = run_limited(argv, 1 << 20); /* the write fails after 1 MiB */
    assert_int_equal(st, 4);
    size_t len;
    char *b = tu_read_file(out, &len);
    assert_non_null(b);
    assert_int_equal(len, 14);
    assert_memory_equal(b, "precious bytes", 14);
    free(b);
    assert_int_equal(count_entries(dir), 1); /* the temporary file is gone */

    /* a path that is not a regular file: refused, left as it was */
    char *link = tu_path(dir, "devnull.gguf");
    assert_int_equal(symlink("/dev/null", link), 0);
    tu_run r = tu_cli_run("mkmodel", link, "--size", "8M", NULL);
    assert_int_not_equal(r.status, 0);
    assert_non_null(strstr(r.err, "not a regular file"));
    tu_run_free(&r);
    struct stat sb;
    assert_int_equal(lstat(link, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));
    assert_int_equal(stat("/dev/null", &sb), 0);
    assert_true(S_ISCHR(sb.st_mode));
    assert_int_equal(count_entries(dir), 2);
    free(link);
    free(out);
    tu_tmpdir_rm(dir);
}

static uint64_t meta_u(const tl_model *m, const char *key) {
    size_t i = tl_model_meta_find(m, key);
    if (i == TL_NOT_FOUND) fail_msg("key %s missing", key);
    return tl_model_meta(m, i)->v.u;
}

static void test_llama(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *out = tu_path(dir, "l.gguf");
    tu_run r = tu_cli_run("mkmodel", out, "--profile", "llama", "--size", "8M", NULL);
    assert_int_equal(r.status, 0);
    tu_run_free(&r);
    tl_model *m = NULL;
    const char *p[] = {out};
    assert_int_equal(tl_model_open(p, 1, NULL, &m), TL_OK);
    /* by hand, F16, width 256, 4 heads of 64, 2 KV heads (128), FFN 704, 259 tokens:
       embd + output 2*256*259*2 + output_norm 256*4 = 266240 bytes; a block
       (2*256*256 + 2*256*128 + 3*256*704)*2 + 2*256*4 = 1476608 bytes;
       (8 MiB - 266240) / 1476608 = 5.5: 5 blocks, 3 + 9*5 = 48 tensors */
    assert_int_equal(tl_model_tensor_count(m), 48);
    assert_int_equal(meta_u(m, "llama.block_count"), 5);
    assert_int_equal(meta_u(m, "llama.embedding_length"), 256);
    assert_int_equal(meta_u(m, "llama.feed_forward_length"), 704);
    assert_int_equal(meta_u(m, "llama.attention.head_count"), 4);
    assert_int_equal(meta_u(m, "llama.attention.head_count_kv"), 2);
    assert_int_equal(meta_u(m, "llama.context_length"), 2048);
    size_t e = tl_model_meta_find(m, "llama.attention.layer_norm_rms_epsilon");
    assert_true(e != TL_NOT_FOUND && tl_model_meta(m, e)->type == TL_META_F32);
    size_t tk = tl_model_meta_find(m, "tokenizer.ggml.tokens");
    assert_true(tk != TL_NOT_FOUND);
    assert_int_equal(tl_model_meta(m, tk)->count, 259);
    tl_meta el;
    assert_int_equal(tl_model_meta_element(m, tk, 3 + 0x0A, &el), TL_OK);
    assert_int_equal(el.v.s.len, 6);
    assert_memory_equal(el.v.s.ptr, "<0x0A>", 6);
    size_t ty = tl_model_meta_find(m, "tokenizer.ggml.token_type");
    assert_int_equal(tl_model_meta(m, ty)->count, 259);
    assert_int_equal(tl_model_meta_element(m, ty, 1, &el), TL_OK);
    assert_int_equal(el.v.i, 3); /* <s> is a control token */
    /* shapes outermost first: attn_k is [kv, embd], ffn_down [embd, ffn], norms [embd] F32 */
    bool k_seen = false, down_seen = false, norm_seen = false;
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        if (!strcmp(t->name, "blk.4.attn_k.weight")) {
            k_seen = t->n_dims == 2 && t->shape[0] == 128 && t->shape[1] == 256 &&
                     t->dtype == TL_DTYPE_F16;
        } else if (!strcmp(t->name, "blk.0.ffn_down.weight")) {
            down_seen = t->n_dims == 2 && t->shape[0] == 256 && t->shape[1] == 704;
        } else if (!strcmp(t->name, "output_norm.weight")) {
            norm_seen = t->n_dims == 1 && t->shape[0] == 256 && t->dtype == TL_DTYPE_F32;
        }
    }
    assert_true(k_seen && down_seen && norm_seen);
    /* weights of an initialised network: finite, norms 1, matrices with mean ~0 and standard
       deviation ~1/sqrt(fan_in) (ne0, the inner dimension), converted back to F32 here */
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        uint64_t n = t->nbytes / (t->dtype == TL_DTYPE_F32 ? 4 : 2);
        float *v = malloc(n * sizeof *v);
        assert_non_null(v);
        assert_int_equal(tl_convert(TL_DTYPE_F32, v, t->dtype, tl_model_tensor_data(m, i), n),
                         TL_OK);
        double sum = 0, sq = 0;
        for (uint64_t k = 0; k < n; k++) {
            if (!isfinite(v[k])) fail_msg("%s[%llu] is not finite", t->name, (unsigned long long)k);
            if (t->n_dims == 1 && v[k] != 1.0f) fail_msg("%s is a norm but not 1", t->name);
            sum += v[k];
            sq += (double)v[k] * v[k];
        }
        if (t->n_dims == 2) {
            double mean = sum / (double)n, sd = sqrt(sq / (double)n - mean * mean);
            double want = 1.0 / sqrt((double)t->shape[1]);
            if (fabs(mean) > 0.05 * want || fabs(sd - want) > 0.05 * want)
                fail_msg("%s: mean %g, sd %g, not ~0 and ~%g", t->name, mean, sd, want);
        }
        free(v);
    }
    tl_model_close(m);
    unlink(out);
    free(out);
    /* the tensor count follows the architecture: --tensors is refused */
    refused(dir, "takes no --tensors", "--profile", "llama", "--format", "gguf", "--tensors", "48");
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_exact_sizes),
        cmocka_unit_test(test_llama),
        cmocka_unit_test(test_failure_keeps_out),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
