/*
 * testutil.c — implementation of the shared test helpers (see testutil.h).
 */
#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* A file of the test data is missing: skip with the maker's reason, or fail (CI, or no reason). */
static void tu_testdata_missing(const char *base, const char *path) {
    char why_path[4200];
    snprintf(why_path, sizeof why_path, "%s/unavailable.txt", base);
    char *why = tu_read_file(why_path, NULL);
    if (!why)
        fail_msg("%s: no such file; the test data is made by ctest's testdata fixture "
                 "(tools/make_testdata.sh)",
                 path);
    why[strcspn(why, "\n")] = 0;
    char msg[8400];
    snprintf(msg, sizeof msg, "%s: not made: %s", path, why);
    free(why);
    if (tu_in_ci()) fail_msg("%s (CI=true: a missing dependency is a failure)", msg);
    TU_SKIP("%s", msg);
}

const char *tu_testdata(const char *rel) {
    static _Thread_local char buf[4096];
    const char *base = getenv("TL_TESTDATA");
    if (!base || !*base) base = "testdata";
    snprintf(buf, sizeof buf, "%s/%s", base, rel);
    if (access(buf, F_OK) != 0) tu_testdata_missing(base, buf);
    return buf;
}

cJSON *tu_expected(const char *file) {
    char rel[512];
    snprintf(rel, sizeof rel, "expected/%s.json", file);
    char *text = tu_read_file(tu_testdata(rel), NULL);
    assert_non_null(text);
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) fail_msg("%s: not JSON", tu_testdata(rel));
    return j;
}

uint64_t tu_expected_sum(const cJSON *exp, const char *prefix, int n_dims, uint64_t elem_bytes) {
    uint64_t sum = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(exp, "tensors")) {
        const char *name = cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring;
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(t, "shape");
        int dims = cJSON_GetArraySize(shape);
        if (prefix && strncmp(name, prefix, strlen(prefix)) != 0) continue;
        if (n_dims && dims != n_dims) continue;
        if (!elem_bytes) {
            sum += (uint64_t)cJSON_GetObjectItemCaseSensitive(t, "nbytes")->valuedouble;
            continue;
        }
        uint64_t elems = 1;
        const cJSON *d;
        cJSON_ArrayForEach(d, shape) elems *= (uint64_t)d->valuedouble;
        sum += elems * elem_bytes;
    }
    return sum;
}

size_t tu_expected_count(const cJSON *exp, const char *prefix, int n_dims) {
    size_t n = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(exp, "tensors")) {
        const char *name = cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring;
        if (prefix && strncmp(name, prefix, strlen(prefix)) != 0) continue;
        if (n_dims && cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(t, "shape")) != n_dims)
            continue;
        n++;
    }
    return n;
}

static int tu_skipped;

void tu_skip_note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[  SKIP    ] why: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    tu_skipped++;
}

int tu_exit(int failed) {
    if (failed) return failed;
    return tu_skipped ? TU_SKIP_CODE : 0;
}

int tu_in_ci(void) {
    const char *ci = getenv("CI");
    return ci && (!strcmp(ci, "true") || !strcmp(ci, "1"));
}

const char *tu_cli(void) {
    const char *c = getenv("TL_CLI");
    return c ? c : "./tierload";
}

char *tu_tmpdir(void) {
    const char *t = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/tltest.XXXXXX", t ? t : "/tmp");
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

void tu_tmpdir_rm(char *dir) {
    if (!dir) return;
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

char *tu_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

void tu_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len) assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

char *tu_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    size_t r;
    while ((r = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n - 1 == 0) b = realloc(b, cap *= 2);
    }
    fclose(f);
    b[n] = 0;
    if (len) *len = n;
    return b;
}

int tu_count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

void tu_copy_testdata(const char *rel, const char *dst) {
    size_t len;
    char *b = tu_read_file(tu_testdata(rel), &len);
    assert_non_null(b);
    tu_write_file(dst, b, len);
    free(b);
}

static char *slurp_fd(int fd) {
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    ssize_t r;
    while ((r = read(fd, b + n, cap - n - 1)) > 0) {
        n += (size_t)r;
        if (cap - n - 1 == 0) b = realloc(b, cap *= 2);
    }
    b[n] = 0;
    return b;
}

tu_run tu_run_argv(char *const argv[]) {
    tu_run res = {0};
    char outp[] = "/tmp/tlrun_outXXXXXX", errp[] = "/tmp/tlrun_errXXXXXX";
    int of = mkstemp(outp), ef = mkstemp(errp);
    assert_true(of >= 0 && ef >= 0);
    unlink(outp);
    unlink(errp);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(of, 1);
        dup2(ef, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    res.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    lseek(of, 0, SEEK_SET);
    lseek(ef, 0, SEEK_SET);
    res.out = slurp_fd(of);
    res.err = slurp_fd(ef);
    close(of);
    close(ef);
    return res;
}

tu_run tu_cli_run(const char *arg0, ...) {
    char *argv[64];
    int n = 0;
    argv[n++] = (char *)tu_cli();
    va_list ap;
    va_start(ap, arg0);
    for (const char *a = arg0; a && n < 63; a = va_arg(ap, const char *))
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    return tu_run_argv(argv);
}

void tu_run_free(tu_run *r) {
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

/* ggml from npm (see testutil.h). */
#define TU_NPM_PKG "@node-llama-cpp/linux-x64@3.22.1"
#define TU_NPM_BINS "node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"

static bool tu_has_ggml_base(const char *dir) {
    char p[4200];
    struct stat st;
    snprintf(p, sizeof p, "%s/libggml-base.so", dir);
    return stat(p, &st) == 0;
}

bool tu_ggml_dir(const char *folder, char *dir, size_t n, char *why, size_t why_n) {
    const char *env = getenv("TIERLOAD_GGML_DIR");
    if (env && *env) {
        snprintf(dir, n, "%s", env);
        if (tu_has_ggml_base(dir)) return true;
        snprintf(why, why_n, "TIERLOAD_GGML_DIR=%s has no libggml-base.so", env);
        return false;
    }
    const char *root = getenv("TL_GGML_ROOT"); /* the source build (make ggml) first */
    if (root && *root) {
        snprintf(dir, n, "%s/lib", root);
        if (tu_has_ggml_base(dir)) return true;
    }
    const char *bd = getenv("TL_BUILD_DIR");
    if (!bd || !*bd) bd = ".";
    snprintf(dir, n, "%s/%s/" TU_NPM_BINS, bd, folder);
    if (tu_has_ggml_base(dir)) return true;
    if (system("command -v npm >/dev/null 2>&1") != 0) {
        snprintf(why, why_n, "npm unavailable: no npm on PATH (needed to fetch %s)", TU_NPM_PKG);
        return false;
    }
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s/%s' && cd '%s/%s' && "
             "{ command -v timeout >/dev/null 2>&1 && T='timeout 240' || T=''; "
             "$T npm install --prefix . " TU_NPM_PKG
             " --no-save --ignore-scripts --no-audit --no-fund --fetch-retries=1 --loglevel=error"
             " >npm.log 2>&1; }",
             bd, folder, bd, folder);
    fprintf(stderr, "[%s] installing %s into %s/%s (once)\n", folder, TU_NPM_PKG, bd, folder);
    int rc = system(cmd);
    if (rc != 0 || !tu_has_ggml_base(dir)) {
        snprintf(why, why_n, "npm unavailable: 'npm install %s' failed (status %d), see %s/%s",
                 TU_NPM_PKG, WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, bd, folder);
        return false;
    }
    return true;
}

bool tu_vm_flags(const void *addr, char *flags, size_t cap) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return false;
    char line[512];
    bool in = false, found = false;
    uintptr_t a = (uintptr_t)addr;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = a >= lo && a < hi;
        } else if (in && !strncmp(line, "VmFlags:", 8)) {
            snprintf(flags, cap, "%s", line + 8);
            found = true;
            break;
        }
    }
    fclose(f);
    return found;
}

bool tu_has_vm_flag(const char *flags, const char *flag) {
    char pad[16], line[520];
    snprintf(pad, sizeof pad, " %s ", flag);
    snprintf(line, sizeof line, " %s ", flags);
    for (char *p = line; *p; p++)
        if (*p == '\n') *p = ' ';
    return strstr(line, pad) != NULL;
}

uint64_t tu_resident_bytes(const void *addr, uint64_t n) {
    size_t ps = (size_t)sysconf(_SC_PAGESIZE), pages = (size_t)((n + ps - 1) / ps);
    unsigned char *vec = malloc(pages ? pages : 1);
    assert_non_null(vec);
    assert_int_equal(mincore((void *)addr, (size_t)n, vec), 0);
    uint64_t res = 0;
    for (size_t i = 0; i < pages; i++)
        res += vec[i] & 1;
    free(vec);
    return res * ps;
}

uint64_t tu_file_cached_bytes(const char *path) {
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    off_t size = lseek(fd, 0, SEEK_END);
    assert_true(size > 0);
    void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    assert_true(m != MAP_FAILED);
    uint64_t res = tu_resident_bytes(m, (uint64_t)size);
    munmap(m, (size_t)size);
    close(fd);
    return res;
}

bool tu_run_checked(const char *out, unsigned long long *checked, unsigned long long *mismatches) {
    const char *c = out ? strstr(out, "\nchecked ") : NULL;
    return c && sscanf(c, "\nchecked %llu tensors: %llu hash mismatches", checked, mismatches) == 2;
}

tl_device *tu_sim_add(const char *name, uint64_t capacity) {
    char spec[TL_DEVICE_NAME_MAX + 32];
    snprintf(spec, sizeof spec, "%s=%llu", name, (unsigned long long)capacity);
    assert_int_equal(tl_device_sim_add(spec), TL_OK);
    tl_device *d = NULL;
    assert_int_equal(tl_device_find(name, &d), TL_OK);
    return d;
}

tl_plan *tu_plan_gpus(const tl_plan_summary *sum, const char *const *gpus, size_t n,
                      uint64_t budget, const char *backend, bool offload) {
    tl_plan_device devs[TL_PLAN_MAX_DEVICES];
    assert_true(n < TL_PLAN_MAX_DEVICES);
    memset(devs, 0, sizeof devs);
    for (size_t i = 0; i < n; i++) {
        snprintf(devs[i].name, sizeof devs[i].name, "%s", gpus[i]);
        devs[i].is_gpu = true;
        devs[i].total = devs[i].free = budget;
    }
    snprintf(devs[n].name, sizeof devs[n].name, "cpu");
    tl_plan_options o;
    tl_plan_options_init(&o);
    o.backend = backend;
    o.offload_to_cpu = offload;
    o.reserve = "diffusion=0,cond=0,vae=0,controlnet=0,other=0,diffusion2=0";
    tl_plan *p = NULL;
    if (tl_plan_create(sum, devs, n + 1, &o, &p) != TL_OK) fail_msg("plan: %s", tl_last_error());
    if (!tl_plan_feasible(p)) fail_msg("plan infeasible: %s", tl_plan_error(p));
    return p;
}

tl_plan *tu_plan_one_gpu(tl_model *m, const char *gpu, uint64_t cap, const char *backend,
                         bool offload) {
    tl_plan_summary sum;
    assert_int_equal(tl_plan_summary_from_model(m, TL_DTYPE_INVALID, &sum), TL_OK);
    tl_plan *p = tu_plan_gpus(&sum, &gpu, 1, cap, backend, offload);
    tl_plan_summary_clear(&sum);
    return p;
}
