/*
 * bench_load.c — the loader's figures, measured in one run on a
 * generated safetensors file (default 2 GiB of F16 tensors):
 *
 *   warm copy load  >= 0.6  x memcpy bandwidth of the same byte count
 *   cold copy load  >= 0.95 x `cat FILE > /dev/null` (file evicted first)
 *   peak anon RSS   <= bytes loaded + staging bound + 16 MiB
 *   page cache after --evict <= 1% of the file
 *
 * Each figure is printed beside its limit and the ratio; a figure that misses
 * its limit prints FAIL and the program exits 1. Both sides of each ratio are
 * timed the same way: the wall clock of the whole operation (the memcpy call,
 * the tl_model_load call, the cat process), best of --reps runs (default 3).
 * Memory bounds are checked on the worst run, printed beside the best. memcpy runs
 * first, between pre-faulted huge-page buffers (its first pass into fresh
 * pages is printed for context: on a VM whose memory the host backs lazily,
 * first touch of never-used memory dominates every copy into fresh pages,
 * so the loads are measured after it, on memory the guest has touched).
 *
 * In-process loads run after earlier loads already faulted memory in, which
 * flatters what a user's first load sees; so the program also spawns the
 * CLI beside it (`tierload load --json`, a fresh process, warm and cold) and
 * reports that first load's figures beside the in-process ones (context, no
 * limit: a fresh process pays first touch of memory the host may have taken
 * back).
 *
 * --first-touch measures only what the default destination pages rest on
 * (docs/ARCHITECTURE.md, "Destination pages"): the wall time of touching a
 * fresh SIZE mapping (one byte per 4 KiB, by 1 and 2 threads) with huge
 * pages and with 4 KiB pages, (a) right after a child process touched and
 * freed as much memory, (b) after 8 idle seconds; reps rounds, alternating,
 * medians and ranges. It checks no limit.
 *
 * usage: bench_load [--size GIB] [--dir DIR] [--reps N] [--threads N] [--keep]
 *        bench_load --first-touch [--size GIB] [--reps N]
 */
#include "tierload.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    fprintf(stderr, "bench_load: %s: %s\n", what, tl_last_error());
    exit(1);
}

static void *huge_alloc(size_t n) {
    size_t h = 2u << 20;
    char *p = mmap(NULL, n + h, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    char *a = (char *)(((uintptr_t)p + h - 1) & ~(uintptr_t)(h - 1));
    madvise(a, n, MADV_HUGEPAGE);
    return a;
}

static void write_model(const char *path, uint64_t size, unsigned n_t) {
    uint64_t per = size / n_t / 2 * 2;
    tl_writer *w = NULL;
    if (tl_writer_create(TL_FORMAT_SAFETENSORS, &w) != TL_OK) die("writer");
    for (unsigned i = 0; i < n_t; i++) {
        char name[64];
        snprintf(name, sizeof name, "model.blocks.%u.weight", i);
        int64_t shape[1] = {(int64_t)(per / 2)};
        if (tl_writer_tensor(w, name, TL_DTYPE_F16, 1, shape, per, NULL) != TL_OK) die("writer");
    }
    const void *hdr;
    size_t hlen;
    if (tl_writer_header(w, &hdr, &hlen) != TL_OK) die("writer");
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    if (fwrite(hdr, 1, hlen, f) != hlen) {
        perror("write");
        exit(1);
    }
    tl_writer_destroy(w);
    size_t ch = 16u << 20;
    uint64_t *buf = malloc(ch);
    for (uint64_t o = 0; o < per * n_t; o += ch) {
        size_t l = per * n_t - o < ch ? (size_t)(per * n_t - o) : ch;
        for (size_t i = 0; i < l / 8; i++)
            buf[i] = (o / 8 + i) * 0x9E3779B97F4A7C15ull;
        if (fwrite(buf, 1, l, f) != l) {
            perror("write");
            exit(1);
        }
    }
    free(buf);
    fflush(f);
    fsync(fileno(f));
    fclose(f);
}

static double time_cat(const char *path) {
    double t0 = now();
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        execlp("cat", "cat", path, (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    return now() - t0;
}

typedef struct run {
    double seconds;
    tl_load_stats st;
    tl_load_file f;
    char reason[256];
} run;

static run do_load(tl_model *m, tl_load_mode mode, bool evict, unsigned threads) {
    tl_load_options o;
    tl_load_options_init(&o);
    o.mode = mode;
    o.evict = evict;
    o.threads = threads;
    tl_load_result *r = NULL;
    double t0 = now();
    if (tl_model_load(m, &o, &r) != TL_OK) die("load");
    double wall = now() - t0;
    run x;
    x.st = *tl_load_result_stats(r);
    x.f = *tl_load_result_file(r, 0);
    snprintf(x.reason, sizeof x.reason, "%s", x.f.reason);
    x.f.reason = NULL; /* points into the freed result: use x.reason */
    x.f.path = NULL;
    x.seconds = wall; /* the whole call, as memcpy and cat are timed */
    tl_load_result_destroy(r);
    return x;
}

/*
 * A fresh process's first load: `tierload load --json --quiet --mode M PATH`
 * run from cli. *load_s is the load's own total (JSON "seconds"), *wall_s
 * the process's (exec, open, load, exit). false when the CLI failed.
 */
static bool fresh_load(const char *cli, const char *path, const char *mode, double *load_s,
                       double *wall_s) {
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "'%s' load --json --quiet --mode %s '%s'", cli, mode, path);
    double t0 = now();
    FILE *p = popen(cmd, "r");
    if (!p) return false;
    static char out[1 << 16];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int st = pclose(p);
    *wall_s = now() - t0;
    const char *k = strstr(out, "\"seconds\":");
    if (st != 0 || !k) return false;
    *load_s = atof(k + 10);
    return true;
}

/* --- --first-touch --- */

typedef struct toucher {
    char *p;
    size_t n;
} toucher;

static void *touch_part(void *a) {
    toucher *t = a;
    for (size_t i = 0; i < t->n; i += 4096)
        t->p[i] = 1;
    return NULL;
}

/* Seconds to touch a fresh n-byte mapping with huge or 4 KiB pages, by threads threads. */
static double first_touch(size_t n, bool huge, int threads) {
    size_t h = 2u << 20;
    char *raw = mmap(NULL, n + h, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    char *p = (char *)(((uintptr_t)raw + h - 1) & ~(uintptr_t)(h - 1));
    madvise(p, n, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    pthread_t th[2];
    toucher t[2];
    double t0 = now();
    for (int i = 0; i < threads; i++) {
        t[i] = (toucher){p + (size_t)i * (n / (size_t)threads), n / (size_t)threads};
        pthread_create(&th[i], NULL, touch_part, &t[i]);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    double s = now() - t0;
    munmap(raw, n + h);
    return s;
}

/* Another process touches n bytes and exits, freeing them. */
static void recycle(size_t n) {
    pid_t pid = fork();
    if (pid == 0) {
        char *p = malloc(n);
        if (p) memset(p, 1, n);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int first_touch_table(uint64_t size, int reps) {
    static const struct {
        const char *name;
        bool huge;
        int threads;
    } kinds[] = {{"huge pages, 1 thread", true, 1},
                 {"huge pages, 2 threads", true, 2},
                 {"4 KiB pages, 1 thread", false, 1},
                 {"4 KiB pages, 2 threads", false, 2}};
    enum { K = 4 };
    double *t[K][2];
    for (int k = 0; k < K; k++)
        for (int c = 0; c < 2; c++)
            t[k][c] = calloc((size_t)reps, sizeof(double));
    printf("first touch of a fresh %.2f GiB mapping, %d rounds, alternating\n",
           (double)size / (1 << 30), reps);
    for (int r = 0; r < reps; r++)
        for (int k = 0; k < K; k++) {
            int kk = (k + r) % K; /* rotate the order */
            recycle(size);
            t[kk][0][r] = first_touch(size, kinds[kk].huge, kinds[kk].threads);
            sleep(8);
            t[kk][1][r] = first_touch(size, kinds[kk].huge, kinds[kk].threads);
            fprintf(stderr, "round %d %s: recycled %.3f s, idle %.3f s\n", r + 1, kinds[kk].name,
                    t[kk][0][r], t[kk][1][r]);
        }
    printf("%-24s %26s %26s\n", "seconds, median (min-max)", "right after a free",
           "after 8 s idle");
    for (int k = 0; k < K; k++) {
        printf("%-24s", kinds[k].name);
        for (int c = 0; c < 2; c++) {
            qsort(t[k][c], (size_t)reps, sizeof(double), cmp_double);
            double med =
                reps % 2 ? t[k][c][reps / 2] : (t[k][c][reps / 2 - 1] + t[k][c][reps / 2]) / 2;
            char cell[64];
            snprintf(cell, sizeof cell, "%.3f (%.3f-%.3f)", med, t[k][c][0], t[k][c][reps - 1]);
            printf(" %26s", cell);
            free(t[k][c]);
        }
        printf("\n");
    }
    return 0;
}

static int failures;

static void row(const char *name, double value, const char *unit, const char *op, double limit,
                double ratio_limit, double ratio) {
    bool ok = op[0] == '>' ? ratio >= ratio_limit : ratio <= ratio_limit;
    if (!ok) failures++;
    printf("%-34s %10.3f %-5s limit %s %10.3f %-5s ratio %6.3f (%s %.2f) %s\n", name, value, unit,
           op, limit, unit, ratio, op, ratio_limit, ok ? "PASS" : "FAIL");
}

int main(int argc, char **argv) {
    double gib = 2;
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
    int reps = 3;
    unsigned threads = 0;
    bool keep = false, touch_only = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--first-touch"))
            touch_only = true;
        else if (!strcmp(argv[i], "--size") && i + 1 < argc)
            gib = atof(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--keep"))
            keep = true;
        else {
            fprintf(stderr,
                    "usage: bench_load [--size GIB] [--dir DIR] [--reps N] [--threads N] [--keep]\n"
                    "       bench_load --first-touch [--size GIB] [--reps N]\n");
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    uint64_t size = (uint64_t)(gib * (double)(1ull << 30));
    if (touch_only) return first_touch_table(size, reps);
    char path[4096];
    snprintf(path, sizeof path, "%s/tierload_bench_%d.safetensors", dir, (int)getpid());
    printf("bench_load: %s, %.2f GiB of F16 tensors, best of %d\n", path, (double)size / (1 << 30),
           reps);
    double tw = now();
    write_model(path, size, 16);
    printf("generated in %.1f s\n", now() - tw);

    tl_model *m = NULL;
    const char *paths[] = {path};
    if (tl_model_open(paths, 1, NULL, &m) != TL_OK) die("open");
    uint64_t bytes = 0;
    for (size_t i = 0; i < tl_model_tensor_count(m); i++)
        bytes += tl_model_tensor(m, i)->nbytes;

    /* memcpy of the same byte count between pre-faulted huge-page buffers */
    double t_memcpy = 1e30, t_memcpy_fresh = 0;
    {
        char *src = huge_alloc(bytes), *dst = huge_alloc(bytes);
        memset(src, 1, bytes);
        double t0 = now();
        memcpy(dst, src, bytes); /* first touch of dst: reported for context */
        t_memcpy_fresh = now() - t0;
        for (int r = 0; r < reps; r++) {
            t0 = now();
            memcpy(dst, src, bytes);
            double t = now() - t0;
            if (t < t_memcpy) t_memcpy = t;
        }
        munmap(src, bytes);
        munmap(dst, bytes);
    }
    double bw_memcpy = (double)bytes / t_memcpy / 1e9;
    printf("memcpy %.2f GiB: %.2f GB/s (into fresh pages: %.2f GB/s)\n", (double)bytes / (1 << 30),
           bw_memcpy, (double)bytes / t_memcpy_fresh / 1e9);

    /* warm copy: file in the page cache, buffered reads into a fresh destination */
    time_cat(path);
    run warm = {.seconds = 1e30}, warm_worst = {.seconds = 0};
    for (int r = 0; r < reps; r++) {
        run x = do_load(m, TL_LOAD_AUTO, false, threads);
        if (x.st.mem.rss_anon_peak >= warm_worst.st.mem.rss_anon_peak) warm_worst = x;
        printf("  warm load %d: %s, %.2f GB/s (%s)\n", r, tl_load_mode_name(x.f.mode),
               (double)bytes / x.seconds / 1e9, x.reason);
        if (x.seconds < warm.seconds) warm = x;
    }
    double bw_warm = (double)bytes / warm.seconds / 1e9;

    /* cold: cat of the evicted file, then the load of the evicted file, alternating */
    double t_cat = 1e30;
    run cold = {.seconds = 1e30}, cold_buf = {.seconds = 1e30}, cold_dir = {.seconds = 1e30};
    run cold_worst = {.seconds = 0};
    for (int r = 0; r < reps; r++) {
        if (tl_file_evict(path) != TL_OK) die("evict");
        double t = time_cat(path);
        if (t < t_cat) t_cat = t;
        tl_file_evict(path);
        run x = do_load(m, TL_LOAD_AUTO, false, threads);
        printf("  cold: cat %.2f GB/s, auto load %.2f GB/s (%s%s)\n", (double)size / t / 1e9,
               (double)bytes / x.seconds / 1e9, x.reason, x.f.uring ? ", io_uring" : "");
        if (x.seconds < cold.seconds) cold = x;
        if (x.st.mem.rss_anon_peak >= cold_worst.st.mem.rss_anon_peak) cold_worst = x;
        tl_file_evict(path);
        x = do_load(m, TL_LOAD_BUFFERED, false, threads);
        if (x.seconds < cold_buf.seconds) cold_buf = x;
        tl_file_evict(path);
        x = do_load(m, TL_LOAD_DIRECT, false, threads);
        if (x.seconds < cold_dir.seconds) cold_dir = x;
        printf("        cold buffered %.2f GB/s, cold direct %.2f GB/s\n",
               (double)bytes / cold_buf.seconds / 1e9, (double)bytes / cold_dir.seconds / 1e9);
    }
    double bw_cat = (double)size / t_cat / 1e9, bw_cold = (double)bytes / cold.seconds / 1e9;

    /* a fresh process's first load, warm then cold, each the median of reps */
    char cli[4096];
    snprintf(cli, sizeof cli, "%s", argv[0]);
    char *slash = strrchr(cli, '/');
    snprintf(slash ? slash + 1 : cli, sizeof cli - (size_t)(slash ? slash + 1 - cli : 0),
             "tierload");
    double fw[2] = {0, 0}, fl[2] = {0, 0};
    bool fresh_ok = access(cli, X_OK) == 0;
    for (int cold_run = 0; fresh_ok && cold_run < 2; cold_run++) {
        double ls[64], ws[64];
        int n = reps < 64 ? reps : 64;
        for (int r = 0; r < n && fresh_ok; r++) {
            if (cold_run)
                tl_file_evict(path);
            else
                time_cat(path);
            fresh_ok = fresh_load(cli, path, "auto", &ls[r], &ws[r]);
        }
        for (int a = 0; fresh_ok && a < n; a++) /* medians: sort both */
            for (int b = a + 1; b < n; b++) {
                if (ls[b] < ls[a]) {
                    double t = ls[a];
                    ls[a] = ls[b];
                    ls[b] = t;
                }
                if (ws[b] < ws[a]) {
                    double t = ws[a];
                    ws[a] = ws[b];
                    ws[b] = t;
                }
            }
        if (fresh_ok) {
            fl[cold_run] = ls[n / 2];
            fw[cold_run] = ws[n / 2];
        }
    }

    /* evict after a warm load: the file's pages leave */
    time_cat(path);
    run ev = do_load(m, TL_LOAD_BUFFERED, true, threads);

    printf("\n%-34s %10s %-5s       %10s %-5s       %6s\n", "figure", "value", "", "limit", "", "");
    row("warm copy load (GB/s)", bw_warm, "GB/s", ">=", 0.6 * bw_memcpy, 0.6, bw_warm / bw_memcpy);
    row("cold copy load (GB/s)", bw_cold, "GB/s", ">=", 0.95 * bw_cat, 0.95, bw_cold / bw_cat);
    /* memory: the worst run is checked; the best is printed beside it */
    const run *worst[] = {&warm_worst, &cold_worst, &ev}, *best[] = {&warm, &cold, &ev};
    const char *names[] = {"peak anon RSS, warm (MiB)", "peak anon RSS, cold (MiB)",
                           "peak anon RSS, evict (MiB)"};
    for (int i = 0; i < 3; i++) {
        double lim = (double)(worst[i]->st.bytes_out + worst[i]->st.staging_bound + (16u << 20));
        double v = (double)worst[i]->st.mem.rss_anon_peak;
        row(names[i], v / (1 << 20), "MiB", "<=", lim / (1 << 20), 1.0, v / lim);
        printf("%-34s %10.3f MiB   (best run)\n", "",
               (double)best[i]->st.mem.rss_anon_peak / (1 << 20));
    }
    double pc = (double)ev.f.page_cache_after, lim = 0.01 * (double)size;
    row("page cache after --evict (MiB)", pc / (1 << 20), "MiB", "<=", lim / (1 << 20), 1.0,
        pc / lim);
    printf("\ncontext: memcpy %.2f GB/s, cat %.2f GB/s, cold buffered %.2f GB/s, cold direct %.2f "
           "GB/s%s,"
           " staging bound %llu MiB, threads %u\n",
           bw_memcpy, bw_cat, (double)bytes / cold_buf.seconds / 1e9,
           (double)bytes / cold_dir.seconds / 1e9, cold_dir.f.uring ? " (io_uring)" : "",
           (unsigned long long)(warm.st.staging_bound >> 20), warm.st.threads);
    if (fresh_ok)
        printf("first load in a fresh process (%s load --json, median of %d): warm %.2f GB/s "
               "(load %.3f s, process %.3f s), cold %.2f GB/s (load %.3f s, process %.3f s); "
               "in this process: warm %.2f GB/s, cold %.2f GB/s\n",
               cli, reps, (double)bytes / fl[0] / 1e9, fl[0], fw[0], (double)bytes / fl[1] / 1e9,
               fl[1], fw[1], bw_warm, bw_cold);
    else
        printf("first load in a fresh process: not measured (no working %s)\n", cli);
    tl_model_close(m);
    if (!keep) unlink(path);
    if (failures)
        printf("bench_load: %d figure%s missed %s limit\n", failures, failures == 1 ? "" : "s",
               failures == 1 ? "its" : "their");
    return failures ? 1 : 0;
}
