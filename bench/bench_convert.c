/*
 * bench_convert.c — the dtype conversion kernels through the public
 * tl_convert, one thread, on 256 MiB of source values already in memory.
 * A converting load writes every destination byte into memory it has just
 * faulted in, so the limit, measured in the same run, is that first touch:
 *
 *   every pair (F32 / F16 / BF16 among themselves, each F8 format -> F16 /
 *   BF16 / F32): destination bytes / s
 *       >= fresh 4 KiB pages faulted in / s (MADV_POPULATE_WRITE, one thread)
 *
 * i.e. converting is never the slower half of a converting load. memcpy of
 * the source bytes is printed for scale. Each rate is the best of 5 calls
 * into a destination faulted in beforehand (the kernel alone), alternating
 * with 5 first touches whose best is its limit (the machine's load changes
 * from second to second). A figure under its limit prints FAIL and the
 * program exits 1.
 *
 * usage: bench_convert
 */
#include "tierload.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define SRC_BYTES (256u << 20)
#define REPS 5

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static unsigned elem(tl_dtype t) {
    return t == TL_DTYPE_F32 ? 4 : t == TL_DTYPE_F16 || t == TL_DTYPE_BF16 ? 2 : 1;
}

/* Seconds one thread takes to fault SRC_BYTES of fresh 4 KiB anonymous pages in. */
static double touch_once(void) {
    void *p = mmap(NULL, SRC_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1e30;
    madvise(p, SRC_BYTES, MADV_NOHUGEPAGE);
    double t0 = now();
    if (madvise(p, SRC_BYTES, 23 /* MADV_POPULATE_WRITE */) != 0) memset(p, 0, SRC_BYTES);
    double dt = now() - t0;
    munmap(p, SRC_BYTES);
    return dt;
}

/*
 * Best source-bytes rate of REPS conversions (or copies when from == to), GB/s, and in *touch the
 * best first-touch rate of REPS faults alternating with them, so that each figure meets its limit
 * measured in the same moments (the machine's load changes from second to second).
 */
static double rate(tl_dtype to, tl_dtype from, const void *src, void *dst, double *touch) {
    uint64_t n = SRC_BYTES / elem(from);
    double best = 1e30, best_touch = 1e30;
    for (int r = 0; r < REPS; r++) {
        double t = touch_once();
        if (t < best_touch) best_touch = t;
        double t0 = now();
        if (from == to)
            memcpy(dst, src, SRC_BYTES);
        else if (tl_convert(to, dst, from, src, n) != TL_OK) {
            fprintf(stderr, "bench_convert: %s\n", tl_last_error());
            exit(1);
        }
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    if (touch) *touch = SRC_BYTES / best_touch / 1e9;
    return SRC_BYTES / best / 1e9;
}

int main(void) {
    unsigned char *src = malloc(SRC_BYTES), *dst = malloc((size_t)SRC_BYTES * 4);
    if (!src || !dst) {
        fprintf(stderr, "bench_convert: out of memory\n");
        return 1;
    }
    /* values of every magnitude: bit patterns spread over the whole range of each width */
    for (size_t i = 0; i < SRC_BYTES / 4; i++) {
        uint32_t u = (uint32_t)(i * 2654435761u);
        memcpy(src + i * 4, &u, 4);
    }
    memset(dst, 0, (size_t)SRC_BYTES * 4);
    double touch, copy = rate(TL_DTYPE_F32, TL_DTYPE_F32, src, dst, &touch);
    printf(
        "bench_convert: %u MiB of source values, one thread, best of %d alternating with as many "
        "first touches; memcpy %.2f GB/s, first touch %.2f GB/s\n",
        SRC_BYTES >> 20, REPS, copy, touch);
    printf("%-22s %10s %10s %10s %10s %9s %s\n", "pair", "src GB/s", "x memcpy", "dst GB/s",
           "touch GB/s", "x touch", "limit");
    struct {
        tl_dtype from, to;
        bool limited;
    } pairs[] = {
        {TL_DTYPE_F16, TL_DTYPE_F32, true},          {TL_DTYPE_F32, TL_DTYPE_F16, true},
        {TL_DTYPE_F32, TL_DTYPE_BF16, true},         {TL_DTYPE_BF16, TL_DTYPE_F32, true},
        {TL_DTYPE_F16, TL_DTYPE_BF16, true},         {TL_DTYPE_BF16, TL_DTYPE_F16, true},
        {TL_DTYPE_F8_E4M3, TL_DTYPE_F16, true},      {TL_DTYPE_F8_E4M3, TL_DTYPE_BF16, true},
        {TL_DTYPE_F8_E4M3, TL_DTYPE_F32, true},      {TL_DTYPE_F8_E5M2, TL_DTYPE_F16, true},
        {TL_DTYPE_F8_E5M2, TL_DTYPE_BF16, true},     {TL_DTYPE_F8_E5M2, TL_DTYPE_F32, true},
        {TL_DTYPE_F8_E4M3FNUZ, TL_DTYPE_F16, true},  {TL_DTYPE_F8_E4M3FNUZ, TL_DTYPE_BF16, true},
        {TL_DTYPE_F8_E4M3FNUZ, TL_DTYPE_F32, true},  {TL_DTYPE_F8_E5M2FNUZ, TL_DTYPE_F16, true},
        {TL_DTYPE_F8_E5M2FNUZ, TL_DTYPE_BF16, true}, {TL_DTYPE_F8_E5M2FNUZ, TL_DTYPE_F32, true},
    };
    int failed = 0;
    for (size_t k = 0; k < sizeof pairs / sizeof *pairs; k++) {
        double g = rate(pairs[k].to, pairs[k].from, src, dst, &touch);
        double w = g * elem(pairs[k].to) / elem(pairs[k].from); /* destination bytes */
        char name[40];
        snprintf(name, sizeof name, "%s -> %s", tl_dtype_name(pairs[k].from),
                 tl_dtype_name(pairs[k].to));
        bool ok = !pairs[k].limited || w >= touch;
        printf("%-22s %10.2f %10.3f %10.2f %10.2f %9.3f %s\n", name, g, g / copy, w, touch,
               w / touch, pairs[k].limited ? (ok ? ">= 1.00 PASS" : ">= 1.00 FAIL") : "(context)");
        failed += !ok;
    }
    /* quantizing (context, no limit): finite values, as weights are */
    unsigned char *qsrc = malloc(SRC_BYTES);
    if (!qsrc) return 1;
    for (size_t i = 0; i < SRC_BYTES / 4; i++) {
        float f = (float)((int)(i * 2654435761u % 2001u) - 1000) * 1e-3f;
        memcpy(qsrc + i * 4, &f, 4);
    }
    static const tl_dtype qfrom[] = {TL_DTYPE_F32, TL_DTYPE_F16, TL_DTYPE_BF16};
    static const tl_dtype qto[] = {TL_DTYPE_Q8_0, TL_DTYPE_Q4_0};
    for (size_t a = 0; a < 3; a++) {
        unsigned char *in = qsrc;
        if (qfrom[a] != TL_DTYPE_F32) { /* the same values in the narrower type */
            in = src;
            if (tl_convert(qfrom[a], in, TL_DTYPE_F32, qsrc, SRC_BYTES / 4) ||
                tl_convert(qfrom[a], in + SRC_BYTES / 2, TL_DTYPE_F32, qsrc, SRC_BYTES / 4))
                return 1;
        }
        for (size_t b = 0; b < 2; b++) {
            double g = rate(qto[b], qfrom[a], in, dst, &touch);
            char name[40];
            snprintf(name, sizeof name, "%s -> %s", tl_dtype_name(qfrom[a]), tl_dtype_name(qto[b]));
            double w = g / elem(qfrom[a]) * (qto[b] == TL_DTYPE_Q8_0 ? 34.0 : 18.0) / 32;
            printf("%-22s %10.2f %10.3f %10.2f %10.2f %9.3f %s\n", name, g, g / copy, w, touch,
                   w / touch, "(context)");
        }
    }
    free(qsrc);
    free(src);
    free(dst);
    if (failed) printf("bench_convert: %d figures missed their limit\n", failed);
    return failed ? 1 : 0;
}
