/*
 * bench_plan.c — time per plan against the 1 ms limit: a synthetic
 * 2,000-tensor pipeline (flux-like: diffusion, text encoder, vae; ~20 tensors
 * per layer) on 4 GPUs, under several budgets; and the same on 64 GPUs
 * against a 10 ms limit (only single GPUs and the largest subsets are tried
 * there, but the lists are 30 times longer). With MODEL arguments it also
 * times building the summary from a real catalog (tl_model_open).
 *
 *   bench_plan [MODEL...]
 */
#include "tierload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MIB (1024ull * 1024)

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID,
                  &ts); /* CPU time: other load on the machine is not the planner */
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* 2,000 tensors: 20 per layer, 100 layers over three components, plus loose ones. */
static size_t synth(tl_plan_summary *s) {
    tl_plan_summary_init(s);
    size_t tensors = 0;
    struct {
        tl_component c;
        int layers;
        uint64_t mib;
    } parts[] = {{TL_COMP_DIFFUSION, 57, 340}, {TL_COMP_COND, 36, 150}, {TL_COMP_VAE, 4, 30}};
    for (size_t p = 0; p < 3; p++)
        for (int l = 0; l < parts[p].layers; l++) {
            uint64_t bytes = 0, mat = 0;
            for (int t = 0; t < 20; t++, tensors++) {
                uint64_t b = (t % 5 == 0) ? 64 * 1024 : parts[p].mib * MIB / 16;
                bytes += b;
                if (t % 5) mat += b;
            }
            tl_plan_summary_add_layer(s, parts[p].c, bytes, mat);
        }
    for (; tensors < 2000; tensors++)
        tl_plan_summary_add_other(s, (tl_component)(tensors % 3), 2 * MIB, MIB);
    return tensors;
}

int main(int argc, char **argv) {
    tl_plan_summary s;
    size_t n_tensors = synth(&s);
    const char *device_sets[] = {
        "cuda0=24G,cuda1=24G,cuda2=24G,cuda3=24G", "cuda0=11G,cuda1=11G,cuda2=11G,cuda3=11G",
        "cuda0=24G,cuda1=16G,cuda2=12G,cuda3=10G", "cuda0=8G,cuda1=6G,cuda2=4G,cuda3=4G",
        "cuda0=4G,cuda1=3G,cuda2=2G,cuda3=2G"};
    double worst = 0;
    int rc = 0;
    for (size_t i = 0; i < sizeof device_sets / sizeof device_sets[0]; i++) {
        tl_plan_device devs[TL_PLAN_MAX_DEVICES];
        size_t nd;
        if (tl_plan_parse_devices(device_sets[i], devs, TL_PLAN_MAX_DEVICES, &nd)) {
            fprintf(stderr, "bench_plan: %s\n", tl_last_error());
            return 1;
        }
        /* best of 5 rounds of 100 plans */
        double ms = 1e9;
        for (int round = 0; round < 5; round++) {
            int iters = 100;
            double t0 = now_ms();
            for (int k = 0; k < iters; k++) {
                tl_plan *p;
                if (tl_plan_create(&s, devs, nd, NULL, &p)) {
                    fprintf(stderr, "bench_plan: %s\n", tl_last_error());
                    return 1;
                }
                tl_plan_destroy(p);
            }
            double r = (now_ms() - t0) / iters;
            if (r < ms) ms = r;
        }
        if (ms > worst) worst = ms;
        printf("plan  %-42s %zu tensors, 4 GPUs: %8.3f ms per plan (limit 1 ms)%s\n",
               device_sets[i], n_tensors, ms, ms <= 1.0 ? "" : "  OVER");
        if (ms > 1.0) rc = 1;
    }
    {
        /* 64 GPUs of 8, 9 and 10 GiB */
        char spec[2048];
        size_t at = 0;
        for (int g = 0; g < 64; g++)
            at += (size_t)snprintf(spec + at, sizeof spec - at, "%scuda%d=%dG", g ? "," : "", g,
                                   8 + g % 3);
        tl_plan_device devs[TL_PLAN_MAX_DEVICES];
        size_t nd;
        if (tl_plan_parse_devices(spec, devs, TL_PLAN_MAX_DEVICES, &nd)) {
            fprintf(stderr, "bench_plan: %s\n", tl_last_error());
            return 1;
        }
        double ms = 1e9;
        for (int round = 0; round < 5; round++) {
            int iters = 10;
            double t0 = now_ms();
            for (int k = 0; k < iters; k++) {
                tl_plan *p;
                if (tl_plan_create(&s, devs, nd, NULL, &p)) {
                    fprintf(stderr, "bench_plan: %s\n", tl_last_error());
                    return 1;
                }
                tl_plan_destroy(p);
            }
            double r = (now_ms() - t0) / iters;
            if (r < ms) ms = r;
        }
        printf(
            "plan  64 GPUs of 8-10G %28s %zu tensors, 64 GPUs: %7.3f ms per plan (limit 10 ms)%s\n",
            "", n_tensors, ms, ms <= 10.0 ? "" : "  OVER");
        if (ms > 10.0) rc = 1;
    }
    tl_plan_summary_clear(&s);
    if (argc > 1) {
        tl_model *m;
        if (tl_model_open((const char *const *)(argv + 1), (size_t)(argc - 1), NULL, &m)) {
            fprintf(stderr, "bench_plan: %s\n", tl_last_error());
            return 1;
        }
        int iters = 50;
        double t0 = now_ms();
        for (int k = 0; k < iters; k++) {
            tl_plan_summary ms;
            if (tl_plan_summary_from_model(m, TL_DTYPE_INVALID, &ms)) {
                fprintf(stderr, "bench_plan: %s\n", tl_last_error());
                return 1;
            }
            tl_plan_summary_clear(&ms);
        }
        printf("summary from catalog (%zu tensors): %.3f ms\n", tl_model_tensor_count(m),
               (now_ms() - t0) / iters);
        tl_model_close(m);
    }
    printf("worst: %.3f ms per plan (limit 1 ms): %s\n", worst, rc ? "OVER" : "ok");
    return rc;
}
