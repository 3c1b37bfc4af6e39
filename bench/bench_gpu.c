/*
 * bench_gpu.c — figures that need a real GPU (run by tools/gpu_check.sh; it
 * says "skipped" and exits 0 where no CUDA device is registered):
 *
 *   1. host -> device copies of 1 GiB through tl_device_copy_to, pageable
 *      (through the 4 x 8 MiB pinned staging ring) and pinned
 *      (tl_device_pin), each against cudaMemcpy of the same bytes from the
 *      same buffer in the same run;
 *   2. file -> GPU: a session loads a whole model onto cuda0 (first pass of
 *      a run), GB/s against `cat` of the same file from the page cache;
 *   3. spill GPU -> file of a 1 GiB dirty tensor, GB/s.
 *
 * usage: bench_gpu MODEL_FILE SPILL_DIR
 */
#include "tierload.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

typedef int (*memcpy_fn)(void *, const void *, size_t, int);
typedef int (*sync_fn)(void);

static int copies(tl_device *d) {
    const uint64_t n = 1ull << 30;
    void *cudart =
        dlopen(getenv("TIERLOAD_CUDART") ? getenv("TIERLOAD_CUDART") : "libcudart.so", RTLD_NOW);
    if (!cudart) cudart = dlopen("libcudart.so.12", RTLD_NOW);
    if (!cudart) cudart = dlopen("libcudart.so.13", RTLD_NOW);
    memcpy_fn cmemcpy = cudart ? (memcpy_fn)dlsym(cudart, "cudaMemcpy") : NULL;
    sync_fn csync = cudart ? (sync_fn)dlsym(cudart, "cudaDeviceSynchronize") : NULL;
    unsigned char *buf = malloc(n);
    tl_devptr p;
    if (!buf || tl_device_alloc(d, n, &p)) {
        fprintf(stderr, "bench_gpu: %s\n", tl_last_error());
        return 2;
    }
    memset(buf, 7, n);
    for (int pinned = 0; pinned < 2; pinned++) {
        if (pinned && tl_device_pin(d, buf, n)) {
            printf("pin: %s\n", tl_last_error());
            break;
        }
        double best = 1e9, ref = 1e9;
        for (int r = 0; r < 3; r++) {
            double t0 = now();
            tl_device_copy_to(d, p, buf, n);
            double t = now() - t0;
            if (t < best) best = t;
            if (cmemcpy) {
                t0 = now();
                cmemcpy((void *)(uintptr_t)p, buf, n, 1);
                if (csync) csync();
                t = now() - t0;
                if (t < ref) ref = t;
            }
        }
        printf("%s host->device 1 GiB: %.2f GB/s; cudaMemcpy %.2f GB/s; ratio %.2f\n",
               pinned ? "pinned  " : "pageable", (double)n / best / 1e9,
               cmemcpy ? (double)n / ref / 1e9 : 0, cmemcpy ? ref / best : 0);
        if (pinned) tl_device_unpin(d, buf, n);
    }
    tl_device_free(d, p);
    free(buf);
    return 0;
}

static int file_to_gpu(const char *model, const char *spill_dir, const char *gpu) {
    const char *paths[] = {model};
    tl_model *m;
    if (tl_model_open(paths, 1, NULL, &m)) {
        fprintf(stderr, "bench_gpu: %s\n", tl_last_error());
        return 2;
    }
    tl_plan_summary sum;
    tl_plan_summary_from_model(m, TL_DTYPE_INVALID, &sum);
    tl_device *d;
    tl_device_find(gpu, &d);
    tl_device_info info;
    tl_device_describe(d, &info, sizeof info);
    tl_device_release(d);
    tl_plan_device pd[2];
    memset(pd, 0, sizeof pd);
    snprintf(pd[0].name, sizeof pd[0].name, "%s", gpu);
    pd[0].is_gpu = true;
    pd[0].total = info.total;
    pd[0].free = info.free;
    snprintf(pd[1].name, sizeof pd[1].name, "cpu");
    tl_plan_options o;
    tl_plan_options_init(&o);
    o.reserve = "diffusion=0,cond=0,vae=0,controlnet=0,other=0";
    tl_plan *p;
    if (tl_plan_create(&sum, pd, 2, &o, &p) || tl_plan_check(p)) {
        fprintf(stderr, "bench_gpu: plan: %s\n", tl_last_error());
        return 2;
    }
    tl_plan_summary_clear(&sum);
    tl_session_options so;
    tl_session_options_init(&so);
    so.spill_dir = spill_dir;
    so.host_budget = 1;
    tl_session *s;
    if (tl_session_create(m, p, &so, &s)) {
        fprintf(stderr, "bench_gpu: %s\n", tl_last_error());
        return 2;
    }
    uint64_t total = 0;
    for (size_t i = 0; i < tl_model_tensor_count(m); i++)
        total += tl_model_tensor(m, i)->nbytes;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cat '%.1900s' > /dev/null", model);
    if (system(cmd)) return 2;
    double t0 = now();
    if (system(cmd)) return 2;
    double tcat = now() - t0;
    tl_acquired *acq[TL_COMP_COUNT] = {0};
    t0 = now();
    for (int c = 0; c < TL_COMP_COUNT; c++)
        if (tl_session_acquire(s, (tl_component)c, 0, TL_ALL_LAYERS, true, &acq[c])) {
            fprintf(stderr, "bench_gpu: %s\n", tl_last_error());
            return 2;
        }
    double t = now() - t0;
    printf("file -> %s, %.2f GiB: %.2f GB/s; cat from the page cache %.2f GB/s\n", gpu,
           (double)total / (1 << 30), (double)total / t / 1e9, (double)total / tcat / 1e9);
    /* spill: mark everything acquired dirty, release, evict */
    uint64_t dirty = 0;
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        for (size_t i = 0; i < tl_acquired_count(acq[c]) && dirty < (1ull << 30); i++) {
            const tl_session_tensor *x = tl_acquired_tensor(acq[c], i);
            tl_session_mark_dirty(s, x->index);
            dirty += x->info->nbytes;
        }
        tl_session_release(s, acq[c]);
    }
    t0 = now();
    uint64_t freed;
    tl_status st = tl_session_evict_all(s, gpu, &freed);
    t = now() - t0;
    printf("spill %s -> file, %.2f GiB dirty: %s %.2f GB/s\n", gpu, (double)dirty / (1 << 30),
           st ? tl_last_error() : "", st ? 0 : (double)dirty / t / 1e9);
    tl_session_destroy(s);
    tl_plan_destroy(p);
    tl_model_close(m);
    return 0;
}

int main(int argc, char **argv) {
    tl_device *d;
    if (tl_device_find("cuda0", &d) != TL_OK) {
        printf("bench_gpu: skipped: no CUDA device (%s)\n", tl_device_cuda_reason());
        return 0;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: bench_gpu MODEL_FILE SPILL_DIR (tools/gpu_check.sh runs it)\n");
        return 2;
    }
    int rc = copies(d);
    if (!rc) rc = file_to_gpu(argv[1], argv[2], "cuda0");
    return rc;
}
