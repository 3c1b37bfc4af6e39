/*
 * test_merge_safety.c — merges as careful as loads: a model or LoRA
 * truncated under its mapping is TL_ERR_CHANGED, not SIGBUS; `merge -o` never
 * replaces a FIFO or a link to a device; an output honours the umask; a merge
 * or mkmodel killed by SIGTERM/SIGINT/SIGHUP or stopped by RLIMIT_FSIZE leaves
 * no temporary file; a merged .ckpt has CRC-32s that Python's zipfile and
 * `unzip -t` accept and values torch.load reads back; tied weights of a
 * .ckpt get every module in `merge` as in place. Expected values are the
 * test's own (weights of 1, each module adding 0.5).
 */
#include "testutil.h"

#include "st_writer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* F32 tensors, each [rows, cols] of one value; names ending in .weight. */
typedef struct ft {
    const char *name;
    int64_t rows, cols;
    float v;
} ft;

static void write_f32(const char *path, const ft *t, size_t n) {
    char hdr[4096];
    size_t o = (size_t)snprintf(hdr, sizeof hdr, "{");
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t nb = (uint64_t)(t[i].rows * t[i].cols) * 4;
        o += (size_t)snprintf(hdr + o, sizeof hdr - o,
                              "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],\"data_offsets\":[%llu,%llu]}",
                              i ? "," : "", t[i].name, (long long)t[i].rows, (long long)t[i].cols,
                              (unsigned long long)off, (unsigned long long)(off + nb));
        off += nb;
    }
    snprintf(hdr + o, sizeof hdr - o, "}");
    float *d = malloc(off);
    off = 0;
    for (size_t i = 0; i < n; i++)
        for (int64_t k = 0; k < t[i].rows * t[i].cols; k++) d[off++] = t[i].v;
    size_t len;
    uint8_t *img = sw_build_raw(hdr, d, off * 4, true, &len);
    assert_true(sw_write_file(path, img, len));
    free(img);
    free(d);
}

/* A LoRA adding 0.5 to every weight of module `key` ([2, 2] weight). */
static void write_lora(const char *path, const char *key1, const char *key2) {
    char n[4][160];
    snprintf(n[0], sizeof n[0], "%s.lora_up.weight", key1);
    snprintf(n[1], sizeof n[1], "%s.lora_down.weight", key1);
    snprintf(n[2], sizeof n[2], "%s.lora_up.weight", key2 ? key2 : "");
    snprintf(n[3], sizeof n[3], "%s.lora_down.weight", key2 ? key2 : "");
    ft t[] = {{n[0], 2, 1, 1.0f}, {n[1], 1, 2, 0.5f}, {n[2], 2, 1, 1.0f}, {n[3], 1, 2, 0.5f}};
    write_f32(path, t, key2 ? 4 : 2);
}

static bool python_torch(void) {
    if (access("/usr/bin/python3", X_OK) != 0) return false;
    char *argv[] = {"/usr/bin/python3", "-c", "import torch", NULL};
    tu_run r = tu_run_argv(argv);
    bool ok = r.status == 0;
    tu_run_free(&r);
    return ok;
}

static tu_run py(const char *code) {
    char *argv[] = {"/usr/bin/python3", "-c", (char *)code, NULL};
    return tu_run_argv(argv);
}

/* Names of dir's entries that contain `part`, counted. */
static int count_entries(const char *dir, const char *part) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, part)) n++;
    closedir(d);
    return n;
}

/* Run the truncation case in a child: a SIGBUS death is reported, not suffered. */
static void expect_changed_in_child(void (*fn)(const char *), const char *arg, const char *what) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fn(arg);
        _exit(0);
    }
    int ws;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    if (WIFSIGNALED(ws)) fail_msg("%s: killed by signal %d", what, WTERMSIG(ws));
    if (WEXITSTATUS(ws) != 0) fail_msg("%s: exit status %d", what, WEXITSTATUS(ws));
}

static void truncated_model_child(const char *dir) {
    char *mp = tu_path(dir, "big.safetensors"), *lp = tu_path(dir, "l.safetensors");
    tl_model_options o;
    tl_model_options_init(&o);
    o.writable = true;
    tl_model *m = NULL;
    if (tl_model_open((const char *const *)&mp, 1, &o, &m)) _exit(10);
    tl_lora *l = NULL;
    if (tl_lora_open(lp, &l)) _exit(11);
    if (truncate(mp, 4096) != 0) _exit(12);
    tl_status st = tl_lora_apply(m, l, 1.0f, NULL, 0);
    if (st != TL_ERR_CHANGED) {
        fprintf(stderr, "model truncated: status %s: %s\n", tl_status_name(st), tl_last_error());
        _exit(13);
    }
    if (!strstr(tl_last_error(), "big.safetensors")) _exit(14);
    tl_lora_close(l);
    tl_model_close(m);
}

static void truncated_lora_child(const char *dir) {
    char *mp = tu_path(dir, "big.safetensors"), *lp = tu_path(dir, "l.safetensors");
    tl_model_options o;
    tl_model_options_init(&o);
    o.writable = true;
    tl_model *m = NULL;
    if (tl_model_open((const char *const *)&mp, 1, &o, &m)) _exit(10);
    tl_lora *l = NULL;
    if (tl_lora_open(lp, &l)) _exit(11);
    if (truncate(lp, 1) != 0) _exit(12);
    tl_status st = tl_lora_apply(m, l, 1.0f, NULL, 0);
    if (st != TL_ERR_CHANGED) {
        fprintf(stderr, "LoRA truncated: status %s: %s\n", tl_status_name(st), tl_last_error());
        _exit(13);
    }
    tl_lora_close(l);
    tl_model_close(m);
}

static void test_truncated_files_are_changed_not_sigbus(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *mp = tu_path(dir, "big.safetensors"), *lp = tu_path(dir, "l.safetensors");
    /* the weight is 1 MiB, at the end: truncation takes its pages away */
    ft m[] = {{"pad.weight", 64, 1024, 0.25f}, {"w.weight", 2, 131072, 1.0f}};
    write_f32(mp, m, 2);
    ft l[] = {{"w.lora_up.weight", 2, 1, 1.0f}, {"w.lora_down.weight", 1, 131072, 0.5f}};
    write_f32(lp, l, 2);
    expect_changed_in_child(truncated_model_child, dir, "tl_lora_apply on a truncated model");
    write_f32(mp, m, 2);
    write_f32(lp, l, 2);
    expect_changed_in_child(truncated_lora_child, dir, "tl_lora_apply with a truncated LoRA");
    free(mp), free(lp);
    tu_tmpdir_rm(dir);
}

static void test_merge_output_must_be_regular(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *mp = tu_path(dir, "m.safetensors"), *lp = tu_path(dir, "l.safetensors");
    ft m[] = {{"w.weight", 2, 2, 1.0f}};
    write_f32(mp, m, 1);
    write_lora(lp, "w", NULL);
    char *fifo = tu_path(dir, "out.fifo"), *link = tu_path(dir, "null.safetensors");
    assert_int_equal(mkfifo(fifo, 0644), 0);
    assert_int_equal(symlink("/dev/null", link), 0);
    const char *outs[] = {fifo, link};
    for (int i = 0; i < 2; i++) {
        tu_run r = tu_cli_run("merge", mp, "--lora", lp, "-o", outs[i], NULL);
        struct stat st, lst;
        assert_int_equal(lstat(outs[i], &lst), 0);
        assert_int_equal(stat(outs[i], &st), 0);
        if (r.status == 0 || S_ISREG(lst.st_mode))
            fail_msg("merge -o %s: status %d, and it is %s now", outs[i], r.status,
                     S_ISREG(lst.st_mode) ? "a regular file" : "as it was");
        assert_true(i == 0 ? S_ISFIFO(st.st_mode) : S_ISCHR(st.st_mode) && S_ISLNK(lst.st_mode));
        assert_non_null(strstr(r.err, "not a regular file"));
        tu_run_free(&r);
    }
    assert_int_equal(count_entries(dir, ".tmp"), 0);
    free(mp), free(lp), free(fifo), free(link);
    tu_tmpdir_rm(dir);
}

static void test_merge_output_honours_umask(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *mp = tu_path(dir, "m.safetensors"), *lp = tu_path(dir, "l.safetensors");
    char *out = tu_path(dir, "out.safetensors");
    ft m[] = {{"w.weight", 2, 2, 1.0f}};
    write_f32(mp, m, 1);
    write_lora(lp, "w", NULL);
    mode_t old = umask(027);
    tu_run r = tu_cli_run("merge", mp, "--lora", lp, "-o", out, NULL);
    umask(old);
    assert_int_equal(r.status, 0);
    struct stat st;
    assert_int_equal(stat(out, &st), 0);
    if ((st.st_mode & 0777) != 0640)
        fail_msg("umask 027: the output's mode is %o, expected 640", st.st_mode & 0777);
    tu_run_free(&r);
    free(mp), free(lp), free(out);
    tu_tmpdir_rm(dir);
}

/* Start the CLI with args in dir; with fsize > 0 under RLIMIT_FSIZE. */
static pid_t spawn(char *const argv[], rlim_t fsize) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (fsize) {
            struct rlimit rl = {fsize, fsize};
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static void test_no_temp_file_left(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *mp = tu_path(dir, "m.safetensors"), *lp = tu_path(dir, "l.safetensors");
    char *out = tu_path(dir, "out.safetensors");
    ft m[] = {{"w.weight", 2, 2, 1.0f}, {"big.weight", 4096, 4096, 0.5f}}; /* 64 MiB */
    write_f32(mp, m, 2);
    write_lora(lp, "w", NULL);
    /* RLIMIT_FSIZE: the write fails, the temporary file goes */
    char *margv[] = {(char *)tu_cli(), "merge", mp, "--lora", lp, "-o", out, NULL};
    int ws;
    pid_t pid = spawn(margv, 1 << 20);
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    if (WIFSIGNALED(ws) || count_entries(dir, "out.safetensors") != 0)
        fail_msg("merge over RLIMIT_FSIZE: %s %d, %d file(s) named out.safetensors* left",
                 WIFSIGNALED(ws) ? "signal" : "exit", WIFSIGNALED(ws) ? WTERMSIG(ws) : WEXITSTATUS(ws),
                 count_entries(dir, "out.safetensors"));
    assert_int_not_equal(WEXITSTATUS(ws), 0);
    char *out2 = tu_path(dir, "mk.safetensors");
    char *kargv[] = {(char *)tu_cli(), "mkmodel", out2, "--size", "256M", NULL};
    pid = spawn(kargv, 1 << 20);
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    if (WIFSIGNALED(ws) || count_entries(dir, "mk.safetensors") != 0)
        fail_msg("mkmodel over RLIMIT_FSIZE: %s %d, %d file(s) named mk.safetensors* left",
                 WIFSIGNALED(ws) ? "signal" : "exit", WIFSIGNALED(ws) ? WTERMSIG(ws) : WEXITSTATUS(ws),
                 count_entries(dir, "mk.safetensors"));
    /* signals, delivered once the temporary file exists */
    const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
    for (int s = 0; s < 3; s++) {
        int killed = 0;
        for (int attempt = 0; attempt < 50 && !killed; attempt++) {
            pid = spawn(kargv, 0);
            bool seen = false;
            while (!seen && waitpid(pid, &ws, WNOHANG) == 0) seen = count_entries(dir, "mk.safetensors.tmp") > 0;
            if (seen) kill(pid, sigs[s]);
            if (seen) assert_int_equal(waitpid(pid, &ws, 0), pid);
            if (WIFSIGNALED(ws) && WTERMSIG(ws) == sigs[s]) killed = 1;
            unlink(out2);
        }
        if (!killed) TU_SKIP("mkmodel always finished before signal %d reached it", sigs[s]);
        int left = count_entries(dir, "mk.safetensors");
        if (left) fail_msg("mkmodel killed by signal %d: %d temporary file(s) left", sigs[s], left);
    }
    free(mp), free(lp), free(out), free(out2);
    tu_tmpdir_rm(dir);
}

static void test_merged_ckpt_crcs_and_tied_weights(void **state) {
    (void)state;
    if (!python_torch()) TU_SKIP("no /usr/bin/python3 with torch (apt-get install python3-torch)");
    char *dir = tu_tmpdir();
    char *cp = tu_path(dir, "m.ckpt"), *lp = tu_path(dir, "l.safetensors");
    char *out = tu_path(dir, "out.ckpt");
    char code[8192];
    /* a.weight and b.weight are one tensor (tied: one storage); c.weight is its own */
    snprintf(code, sizeof code,
             "import torch\n"
             "a = torch.ones(2, 2)\n"
             "torch.save({'a.weight': a, 'b.weight': a, 'c.weight': torch.ones(2, 2)}, '%s')\n",
             cp);
    tu_run r = py(code);
    assert_int_equal(r.status, 0);
    tu_run_free(&r);
    /* in place: both modules reach the shared bytes */
    write_lora(lp, "a", "b");
    tl_model_options o;
    tl_model_options_init(&o);
    o.writable = true;
    tl_model *m = NULL;
    assert_int_equal(tl_model_open((const char *const *)&cp, 1, &o, &m), TL_OK);
    tl_lora *l = NULL;
    assert_int_equal(tl_lora_open(lp, &l), TL_OK);
    assert_int_equal(tl_lora_apply(m, l, 1.0f, NULL, 0), TL_OK);
    float in_place[4];
    assert_int_equal(tl_model_tensor_read(m, tl_model_find(m, "a.weight"), 0, in_place, 16), TL_OK);
    tl_lora_close(l);
    tl_model_close(m);
    assert_true(in_place[0] == 2.0f);
    /* a set: LoRA A targets a.weight, LoRA B b.weight (tied); removing A keeps B's delta */
    char *la = tu_path(dir, "la.safetensors"), *lb = tu_path(dir, "lb.safetensors");
    write_lora(la, "a", NULL);
    write_lora(lb, "b", NULL);
    assert_int_equal(tl_model_open((const char *const *)&cp, 1, &o, &m), TL_OK);
    tl_lora *a = NULL, *b = NULL;
    assert_int_equal(tl_lora_open(la, &a), TL_OK);
    assert_int_equal(tl_lora_open(lb, &b), TL_OK);
    tl_lora_set *set = NULL;
    assert_int_equal(tl_lora_set_create(m, NULL, &set), TL_OK);
    assert_int_equal(tl_lora_set_add(set, a, 1.0f, NULL, 0), TL_OK);
    assert_int_equal(tl_lora_set_add(set, b, 1.0f, NULL, 0), TL_OK);
    assert_int_equal(tl_lora_set_remove(set, a), TL_OK);
    assert_int_equal(tl_model_tensor_read(m, tl_model_find(m, "b.weight"), 0, in_place, 16), TL_OK);
    if (in_place[0] != 1.5f)
        fail_msg("tied weights: after removing LoRA A, b.weight is %g, expected 1.5 (B kept)",
                 (double)in_place[0]);
    tl_lora_set_destroy(set);
    tl_lora_close(a);
    tl_lora_close(b);
    tl_model_close(m);
    free(la), free(lb);
    r = tu_cli_run("merge", cp, "--lora", lp, "-o", out, NULL);
    if (r.status) fail_msg("merge: %s", r.err);
    tu_run_free(&r);
    snprintf(code, sizeof code,
             "import torch, zipfile, sys\n"
             "z = zipfile.ZipFile('%s')\n"
             "bad = z.testzip()\n"
             "if bad: sys.exit('zipfile: bad CRC-32 in ' + bad)\n"
             "sd = torch.load('%s', weights_only=True)\n"
             "for k, want in (('a.weight', 2.0), ('b.weight', 2.0), ('c.weight', 1.0)):\n"
             "    if not bool((sd[k] == want).all()): sys.exit('%%s: %%s, expected %%s' %% (k, sd[k].tolist(), want))\n",
             out, out);
    r = py(code);
    if (r.status) fail_msg("merged .ckpt: %s%s", r.out, r.err);
    tu_run_free(&r);
    if (access("/usr/bin/unzip", X_OK) == 0) {
        char *argv[] = {"/usr/bin/unzip", "-tq", out, NULL};
        r = tu_run_argv(argv);
        if (r.status) fail_msg("unzip -t: %s%s", r.out, r.err);
        tu_run_free(&r);
    }
    free(cp), free(lp), free(out);
    tu_tmpdir_rm(dir);
}

/* A LoRA aimed at a strided (transposed) checkpoint tensor: refused by name, never a crash. */
static void test_strided_weight_refused(void **state) {
    (void)state;
    if (!python_torch()) TU_SKIP("no /usr/bin/python3 with torch (apt-get install python3-torch)");
    char *dir = tu_tmpdir();
    char *cp = tu_path(dir, "t.ckpt"), *lp = tu_path(dir, "l.safetensors");
    char code[1024];
    snprintf(code, sizeof code,
             "import torch\ntorch.save({'w.weight': torch.ones(2, 3).t()}, '%s')\n", cp);
    tu_run r = py(code);
    assert_int_equal(r.status, 0);
    tu_run_free(&r);
    ft l[] = {{"w.lora_up.weight", 3, 1, 1.0f}, {"w.lora_down.weight", 1, 2, 0.5f}};
    write_f32(lp, l, 2);
    tl_model_options o;
    tl_model_options_init(&o);
    o.writable = true;
    tl_model *m = NULL;
    assert_int_equal(tl_model_open((const char *const *)&cp, 1, &o, &m), TL_OK);
    tl_lora *lo = NULL;
    assert_int_equal(tl_lora_open(lp, &lo), TL_OK);
    tl_status st = tl_lora_apply(m, lo, 1.0f, NULL, 0);
    assert_true(st == TL_ERR_UNSUPPORTED || st == TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "w.weight"));
    tl_lora_close(lo);
    tl_model_close(m);
    free(cp), free(lp);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_truncated_files_are_changed_not_sigbus),
        cmocka_unit_test(test_merge_output_must_be_regular),
        cmocka_unit_test(test_merge_output_honours_umask),
        cmocka_unit_test(test_no_temp_file_left),
        cmocka_unit_test(test_merged_ckpt_crcs_and_tied_weights),
        cmocka_unit_test(test_strided_weight_refused),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
