/*
 * bench_switch.c — the model switch of a long-lived process: load model A,
 * free it, load model B (a different file of the same size, page cache
 * warm), with the warm host pool holding A's memory (tl_warm_pool_set):
 *
 *   B's load  >= 0.7 x a 2-thread memcpy of the same bytes
 *
 * measured in the same run, rounds alternating (memcpy, switch with the
 * pool, switch without it), medians. "The same bytes" are B's tensor bytes
 * where they are, in the page cache: the memcpy reads them through B's
 * mapping (faulted in once before the rounds, as the session benchmark's
 * limit reads them) into a pre-faulted huge-page buffer. A memcpy between
 * two pre-faulted huge-page buffers (no page cache: the fastest copy this
 * machine does) is measured in the same rounds and printed beside it, for
 * context. Both sides are the wall clock of the whole operation: the
 * tl_model_load call of B, the two memcpy threads from start to join. The switch
 * without the pool (keep_warm 0: B faults fresh memory in) is printed for
 * context. The files are written with `tierload mkmodel` (the CLI beside
 * this program) in --dir (default $TMPDIR, else /var/tmp) and removed after
 * unless --keep. A figure that misses its limit prints FAIL and the program
 * exits 1; 77 when the CLI is missing.
 *
 * usage: bench_switch [--size GIB] [--dir DIR] [--reps N] [--threads N] [--keep]
 */
#include "tierload.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    fprintf(stderr, "bench_switch: %s: %s\n", what, tl_last_error());
    exit(1);
}

static unsigned char *huge_alloc(size_t n) {
    size_t h = 2u << 20;
    char *p = mmap(NULL, n + h, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    char *a = (char *)(((uintptr_t)p + h - 1) & ~(uintptr_t)(h - 1));
    madvise(a, n, MADV_HUGEPAGE);
    memset(a, 1, n); /* faulted in before any timing */
    return (unsigned char *)a;
}

typedef struct part {
    unsigned char *dst;
    const unsigned char *src;
    size_t n;
} part;

static void *copy_part(void *a) {
    part *p = a;
    memcpy(p->dst, p->src, p->n);
    return NULL;
}

/* Wall time of copying n bytes with 2 threads (halves on a 4 KiB boundary). */
static double memcpy2(unsigned char *dst, const unsigned char *src, size_t n) {
    size_t h = n / 2 & ~(size_t)4095;
    part p[2] = {{dst, src, h}, {dst + h, src + h, n - h}};
    pthread_t t;
    double t0 = now();
    if (pthread_create(&t, NULL, copy_part, &p[1]) != 0) {
        fprintf(stderr, "bench_switch: pthread_create failed\n");
        exit(1);
    }
    copy_part(&p[0]);
    pthread_join(t, NULL);
    return now() - t0;
}

static tl_model *open1(const char *path) {
    tl_model *m = NULL;
    const char *p[] = {path};
    if (tl_model_open(p, 1, NULL, &m) != TL_OK) die("open");
    return m;
}

static tl_load_result *load(tl_model *m, unsigned threads) {
    tl_load_options o;
    tl_load_options_init(&o);
    o.threads = threads;
    tl_load_result *r = NULL;
    if (tl_model_load(m, &o, &r) != TL_OK) die("load");
    return r;
}

/* Wall time of B's load right after A was loaded and freed; *took: B drew from the pool. */
static double do_switch(tl_model *a, tl_model *b, uint64_t keep, unsigned threads, bool *took) {
    tl_warm_pool_set(keep);
    tl_load_result_destroy(load(a, threads));
    tl_warm_stats w0, w1;
    tl_warm_pool_stats(&w0, sizeof w0);
    double t0 = now();
    tl_load_result *r = load(b, threads);
    double t = now() - t0;
    tl_warm_pool_stats(&w1, sizeof w1);
    *took = w1.takes > w0.takes;
    tl_load_result_destroy(r);
    tl_warm_pool_set(0); /* the next round starts with nothing kept */
    return t;
}

static void warm_cache(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    static char buf[1 << 20];
    while (fread(buf, 1, sizeof buf, f) > 0) {
    }
    fclose(f);
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
    double gib = 1.5;
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
    int reps = 5;
    unsigned threads = 0;
    bool keep = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--size") && i + 1 < argc)
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
            fprintf(stderr, "usage: bench_switch [--size GIB] [--dir DIR] [--reps N] "
                            "[--threads N] [--keep]\n");
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    if (reps > 64) reps = 64;
    char cli[4096];
    snprintf(cli, sizeof cli, "%s", argv[0]);
    char *slash = strrchr(cli, '/');
    snprintf(slash ? slash + 1 : cli, sizeof cli - (size_t)(slash ? slash + 1 - cli : 0),
             "tierload");
    if (access(cli, X_OK) != 0) {
        fprintf(stderr, "bench_switch: no CLI at %s (build it first)\n", cli);
        return 77;
    }
    unsigned mib = (unsigned)(gib * 1024);
    char pa[4096], pb[4096], cmd[4 * 4096 + 256];
    snprintf(pa, sizeof pa, "%s/tierload_switch_a_%d.safetensors", dir, (int)getpid());
    snprintf(pb, sizeof pb, "%s/tierload_switch_b_%d.safetensors", dir, (int)getpid());
    double tw = now();
    snprintf(cmd, sizeof cmd,
             "'%s' mkmodel '%s' --size %uM --seed 1 >/dev/null && "
             "'%s' mkmodel '%s' --size %uM --seed 2 >/dev/null",
             cli, pa, mib, cli, pb, mib);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_switch: mkmodel failed: %s\n", cmd);
        unlink(pa);
        unlink(pb);
        return 1;
    }
    printf("bench_switch: A %s, B %s, %u MiB each (tierload mkmodel, %.1f s); medians of %d "
           "alternating rounds\n",
           pa, pb, mib, now() - tw, reps);
    warm_cache(pa);
    warm_cache(pb);
    tl_model *a = open1(pa), *b = open1(pb);
    uint64_t bytes = 0;
    for (size_t i = 0; i < tl_model_tensor_count(b); i++)
        bytes += tl_model_tensor(b, i)->nbytes;
    uint64_t fa = tl_model_file(a, 0)->size;
    uint64_t keep_warm = fa + (4u << 20); /* A's destination: its span rounded to pages */
    uint64_t lo = UINT64_MAX;
    for (size_t i = 0; i < tl_model_tensor_count(b); i++)
        if (tl_model_tensor(b, i)->offset < lo) lo = tl_model_tensor(b, i)->offset;
    const unsigned char *mapped = (const unsigned char *)tl_model_file_map(b, 0) + lo;
    if (madvise((void *)((uintptr_t)mapped & ~(uintptr_t)4095), (size_t)bytes + 4096,
                22 /* MADV_POPULATE_READ */) != 0) {
        volatile unsigned char sink = 0; /* older kernels: touch one byte per page */
        for (uint64_t o = 0; o < bytes; o += 4096)
            sink ^= mapped[o];
        (void)sink;
    }
    unsigned char *src = huge_alloc((size_t)bytes), *dst = huge_alloc((size_t)bytes);

    double mc[64], anon[64], sw[64], cold[64];
    int misses = 0;
    for (int r = 0; r < reps; r++) {
        bool took = false, took_cold = false;
        mc[r] = memcpy2(dst, mapped, (size_t)bytes);
        anon[r] = memcpy2(dst, src, (size_t)bytes);
        sw[r] = do_switch(a, b, keep_warm, threads, &took);
        cold[r] = do_switch(a, b, 0, threads, &took_cold);
        if (!took || took_cold) misses++;
        printf("round %d: memcpy2 from B's mapping %.3f s (anon to anon %.3f s), switch warm "
               "%.3f s%s, switch keep_warm 0 %.3f s\n",
               r, mc[r], anon[r], sw[r], took ? "" : " (NOT from the pool)", cold[r]);
    }
    double t_mc = median(mc, reps), t_sw = median(sw, reps), t_cold = median(cold, reps),
           t_anon = median(anon, reps);
    double bw_mc = (double)bytes / t_mc / 1e9, bw_sw = (double)bytes / t_sw / 1e9;
    double ratio = bw_sw / bw_mc;
    bool ok = ratio >= 0.7 && misses == 0;
    double la[3] = {0, 0, 0};
    getloadavg(la, 3);
    printf("\n%-36s %8s %-5s       %8s %-5s\n", "figure", "value", "", "limit", "");
    printf("%-36s %8.3f %-5s limit >= %8.3f %-5s ratio %.3f (>= 0.70) %s\n",
           "switch A -> B, warm pool (GB/s)", bw_sw, "GB/s", 0.7 * bw_mc, "GB/s", ratio,
           ok ? "PASS" : "FAIL");
    printf("\ncontext: %.2f GiB of tensors, 2-thread memcpy from B's mapping %.2f GB/s (%.3f s), "
           "anon to anon %.2f GB/s (%.3f s; the switch at %.3f x that), switch without the pool "
           "%.2f GB/s (%.3f s, ratio %.3f), with it %.3f s; keep_warm %llu; load average %.2f "
           "%.2f %.2f\n",
           (double)bytes / (1 << 30), bw_mc, t_mc, (double)bytes / t_anon / 1e9, t_anon,
           t_anon / t_sw, (double)bytes / t_cold / 1e9, t_cold,
           (double)bytes / t_cold / 1e9 / bw_mc, t_sw, (unsigned long long)keep_warm, la[0], la[1],
           la[2]);
    if (misses) printf("bench_switch: %d round(s) where B did not draw from the pool\n", misses);
    tl_model_close(a);
    tl_model_close(b);
    if (!keep) {
        unlink(pa);
        unlink(pb);
    }
    if (!ok) printf("bench_switch: the switch missed its limit\n");
    return ok ? 0 : 1;
}
