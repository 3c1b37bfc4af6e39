/*
 * test_session.c — the residency manager on simulated GPUs: lazy loading,
 * budgets never exceeded (checked after every operation), bytes on the
 * device equal to the file's (read back through the device), streaming with
 * prefetch overlapping on the sim's model clock, dirty tensors spilled and
 * reloaded intact, spill failures losing nothing, OOM recovery, bounded
 * partial eviction, and long random sequences of operations from several
 * threads. Expected bytes come from the file read back with plain reads
 * (tu_read_file, at each tensor's catalogued offset) and the test's own
 * record of what it wrote, never from the library's mapping.
 */
#include "testutil.h"

#include "os/fault.h"
#include "test_load_st.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define UNET "model.diffusion_model."
#define N_LAYERS 8

static unsigned char pat(uint64_t seed, uint64_t i) {
    uint64_t x = (seed + 1) * 0x9E3779B97F4A7C15ull + i * 0xD1B54A32D192ED03ull;
    x ^= x >> 29;
    return (unsigned char)(x * 0xBF58476D1CE4E5B9ull >> 56);
}

static void fill(void *buf, uint64_t off, uint64_t len, void *ctx) {
    uint64_t seed = (uint64_t)(uintptr_t)ctx;
    for (uint64_t i = 0; i < len; i++)
        ((unsigned char *)buf)[i] = pat(seed, off + i);
}

typedef struct fx {
    char *dir, *path;
    unsigned char *file; /* the file's bytes, read back by the test */
    tl_model *m;
    tl_device *sim;
    char simname[32];
} fx;

static int counter;

/* A small SD-shaped model: 8 diffusion blocks (64+32 KiB each), 2 cond layers, a vae. */
static void make_model(fx *f) {
    f->dir = tu_tmpdir();
    f->path = tu_path(f->dir, "m.safetensors");
    static char names[64][96];
    st_tensor t[64];
    size_t n = 0;
    for (int k = 0; k < N_LAYERS; k++) {
        snprintf(names[n], sizeof names[n], UNET "input_blocks.%d.0.weight", k);
        t[n] = (st_tensor){names[n], "F32", 16384, 4, NULL, fill, (void *)(uintptr_t)n};
        n++;
        snprintf(names[n], sizeof names[n], UNET "input_blocks.%d.0.bias", k);
        t[n] = (st_tensor){names[n], "F16", 16384, 2, NULL, fill, (void *)(uintptr_t)n};
        n++;
    }
    snprintf(names[n], sizeof names[n], UNET "time_embed.0.weight");
    t[n] = (st_tensor){names[n], "F32", 1000, 4, NULL, fill, (void *)(uintptr_t)n};
    n++;
    for (int k = 0; k < 2; k++) {
        snprintf(names[n], sizeof names[n],
                 "cond_stage_model.transformer.text_model.encoder.layers.%d.w", k);
        t[n] = (st_tensor){names[n], "F16", 10000, 2, NULL, fill, (void *)(uintptr_t)n};
        n++;
    }
    snprintf(names[n], sizeof names[n], "first_stage_model.decoder.conv_in.weight");
    t[n] = (st_tensor){names[n], "F32", 5000, 4, NULL, fill, (void *)(uintptr_t)n};
    n++;
    st_write(f->path, t, n);
    f->file = (unsigned char *)tu_read_file(f->path, NULL);
    assert_non_null(f->file);
    const char *paths[] = {f->path};
    assert_int_equal(tl_model_open(paths, 1, NULL, &f->m), TL_OK);
}

/* Register a sim GPU of the given capacity (unique name per call). */
static void add_sim(fx *f, uint64_t cap, double bw) {
    snprintf(f->simname, sizeof f->simname, "tsim%d", ++counter);
    char spec[128];
    if (bw > 0)
        snprintf(spec, sizeof spec, "%s=%llu:bw=%.0f", f->simname, (unsigned long long)cap, bw);
    else
        snprintf(spec, sizeof spec, "%s=%llu", f->simname, (unsigned long long)cap);
    assert_int_equal(tl_device_sim_add(spec), TL_OK);
    assert_int_equal(tl_device_find(f->simname, &f->sim), TL_OK);
}

static tl_plan *make_plan(fx *f, const char *backend, uint64_t budget) {
    tl_plan_summary sum;
    assert_int_equal(tl_plan_summary_from_model(f->m, TL_DTYPE_INVALID, &sum), TL_OK);
    tl_plan_device devs[2];
    memset(devs, 0, sizeof devs);
    snprintf(devs[0].name, sizeof devs[0].name, "%s", f->simname);
    devs[0].is_gpu = true;
    devs[0].total = devs[0].free = budget;
    snprintf(devs[1].name, sizeof devs[1].name, "cpu");
    tl_plan_options o;
    tl_plan_options_init(&o);
    if (backend && !strcmp(backend, "offload"))
        o.offload_to_cpu = true; /* weights in RAM, streamed to the GPU */
    else
        o.backend = backend;
    o.reserve = "diffusion=0,cond=0,vae=0,controlnet=0";
    tl_plan *p = NULL;
    assert_int_equal(tl_plan_create(&sum, devs, 2, &o, &p), TL_OK);
    tl_plan_summary_clear(&sum);
    if (!tl_plan_feasible(p)) fail_msg("plan infeasible: %s", tl_plan_error(p));
    return p;
}

static void drop(fx *f) {
    tl_device_unregister(f->sim);
    tl_device_release(f->sim);
    tl_model_close(f->m);
    tu_tmpdir_rm(f->dir);
    free(f->path);
    free(f->file);
}

/* A model, a sim GPU of cap bytes (bw: modelled bytes per second, 0 = infinite) and a plan. */
static tl_plan *setup(fx *f, uint64_t cap, double bw, const char *backend, uint64_t budget) {
    make_model(f);
    add_sim(f, cap, bw);
    return make_plan(f, backend, budget);
}

static void teardown(fx *f, tl_plan *p) {
    tl_plan_destroy(p);
    drop(f);
}

/* Expected bytes of a tensor part: the file's, unless the test wrote others. */
typedef struct shadow {
    unsigned char **bytes; /* per tensor: NULL = the file's */
} shadow;

static void check_part(fx *f, shadow *sh, const tl_session_tensor *t, const tl_session_part *p) {
    const unsigned char *want =
        sh && sh->bytes[t->index] ? sh->bytes[t->index] : f->file + t->info->offset;
    unsigned char *got = malloc(p->nbytes ? p->nbytes : 1);
    if (p->tier == TL_TIER_DEVICE)
        assert_int_equal(tl_device_copy_from(p->device, got, p->dptr, p->nbytes), TL_OK);
    else
        memcpy(got, p->host, p->nbytes);
    if (memcmp(got, want + p->offset, p->nbytes) != 0)
        fail_msg("tensor %s: bytes differ (tier %s)", t->info->name, tl_tier_name(p->tier));
    free(got);
}

static void check_acquired(fx *f, shadow *sh, tl_acquired *a) {
    for (size_t i = 0; i < tl_acquired_count(a); i++) {
        const tl_session_tensor *t = tl_acquired_tensor(a, i);
        uint64_t covered = 0;
        for (uint32_t k = 0; k < t->n_parts; k++) {
            check_part(f, sh, t, &t->parts[k]);
            covered += t->parts[k].nbytes;
        }
        assert_int_equal(covered, t->info->nbytes);
    }
}

/* Acquire the diffusion layers one by one and check every byte of each. */
static void check_layers(fx *f, tl_session *s, shadow *sh) {
    for (size_t k = 0; k < N_LAYERS; k++) {
        tl_acquired *a;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, k, k + 1, false, &a), TL_OK);
        check_acquired(f, sh, a);
        tl_session_release(s, a);
    }
}

static uint64_t comp_bytes(const tl_model *m, tl_component c) {
    uint64_t b = 0;
    for (size_t i = 0; i < tl_model_tensor_count(m); i++)
        if (tl_model_tensor(m, i)->component == c) b += tl_model_tensor(m, i)->nbytes;
    return b;
}

/* Everything fits: loaded on first acquire only, then nothing moves. */
static void test_lazy_and_resident(void **state) {
    (void)state;
    fx f = {0};
    tl_plan *p = setup(&f, 64 << 20, 0, NULL, 64 << 20);
    tl_session *s;
    assert_int_equal(tl_session_create(f.m, p, NULL, &s), TL_OK);
    tl_session_stats st;
    assert_int_equal(tl_session_stats_get(s, &st, sizeof st), TL_OK);
    assert_int_equal(st.bytes_moved, 0); /* nothing before the first acquire */
    for (int pass = 0; pass < 3; pass++) {
        tl_acquired *a;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, TL_ALL_LAYERS, true, &a),
                         TL_OK);
        assert_int_equal(tl_session_check(s), TL_OK);
        check_acquired(&f, NULL, a);
        tl_session_release(s, a);
        assert_int_equal(tl_session_stats_get(s, &st, sizeof st), TL_OK);
        assert_int_equal(st.moved[TL_TIER_FILE][TL_TIER_DEVICE],
                         comp_bytes(f.m, TL_COMP_DIFFUSION));
    }
    assert_int_equal(st.drops, 0);
    tl_session_destroy(s);
    teardown(&f, p);
}

/* A plan naming a device nobody registered is an error naming it. */
static void test_unknown_device(void **state) {
    (void)state;
    fx f = {0};
    make_model(&f);
    snprintf(f.simname, sizeof f.simname, "nosuchgpu7");
    tl_plan *p = make_plan(&f, NULL, 64 << 20);
    tl_session *s = (tl_session *)1;
    assert_int_equal(tl_session_create(f.m, p, NULL, &s), TL_ERR_NOT_FOUND);
    assert_null(s);
    assert_non_null(strstr(tl_last_error(), "nosuchgpu7"));
    tl_plan_destroy(p);
    tl_model_close(f.m);
    tu_tmpdir_rm(f.dir);
    free(f.path);
    free(f.file);
}

/*
 * Streaming on a modelled link: every layer's compute (sim advance) equals
 * its transfer time; with prefetch the run takes at most 0.6x the time of
 * the same run without.
 */
static double stream_run(bool prefetch, uint64_t *moved) {
    fx f = {0};
    make_model(&f);
    const double bw = 96.0 * 1024 * 1024; /* bytes per modelled second */
    add_sim(&f, 64 << 20, bw);
    uint64_t layer = 96 << 10;
    /* room for the non-layer bytes and two layer buffers: the plan streams */
    tl_plan *p = make_plan(&f, "offload", 4000 + 2 * layer + 1000);
    tl_session *s;
    assert_int_equal(tl_session_create(f.m, p, NULL, &s), TL_OK);
    double t0, t1;
    tl_device_sim_clock(f.sim, &t0);
    tl_acquired *other;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 0, true, &other), TL_OK);
    for (int pass = 0; pass < 3; pass++)
        for (size_t k = 0; k < N_LAYERS; k++) {
            tl_acquired *a;
            assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, k, k + 1, false, &a), TL_OK);
            if (prefetch)
                assert_int_equal(tl_session_prefetch(s, TL_COMP_DIFFUSION, (k + 1) % N_LAYERS,
                                                     (k + 1) % N_LAYERS + 1, false),
                                 TL_OK);
            assert_int_equal(tl_session_check(s), TL_OK);
            assert_int_equal(tl_device_sim_advance(f.sim, (double)layer / bw), TL_OK);
            tl_session_release(s, a);
        }
    tl_session_release(s, other);
    tl_device_sim_clock(f.sim, &t1);
    /* the bytes (read back through the device, outside the timed run: reads cost model time) */
    check_layers(&f, s, NULL);
    tl_session_stats st;
    tl_session_stats_get(s, &st, sizeof st);
    *moved = st.moved[TL_TIER_FILE][TL_TIER_DEVICE];
    if (prefetch) assert_true(st.prefetch_hits > 0);
    tl_session_destroy(s);
    teardown(&f, p);
    return t1 - t0;
}

static void test_stream_prefetch_overlaps(void **state) {
    (void)state;
    uint64_t m0, m1;
    double plain = stream_run(false, &m0), pre = stream_run(true, &m1);
    print_message("stream: %.4f s modelled without prefetch, %.4f s with (ratio %.3f)\n", plain,
                  pre, pre / plain);
    assert_true(pre <= 0.6 * plain);
    assert_true(m0 > 0);
}

/* Dirty tensors leave the device for the spill file and come back as written. */
static void test_dirty_spill_roundtrip(void **state) {
    (void)state;
    fx f = {0};
    tl_plan *p = setup(&f, 64 << 20, 0, NULL, 64 << 20);
    tl_session_options o;
    tl_session_options_init(&o);
    o.host_budget = 1; /* no RAM copies: dirty bytes must go to the spill file */
    o.spill_dir = f.dir;
    tl_session *s;
    assert_int_equal(tl_session_create(f.m, p, &o, &s), TL_OK);
    shadow sh = {calloc(tl_model_tensor_count(f.m), sizeof *sh.bytes)};
    tl_acquired *a;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 2, false, &a), TL_OK);
    for (size_t i = 0; i < tl_acquired_count(a); i++) {
        const tl_session_tensor *t = tl_acquired_tensor(a, i);
        unsigned char *w = malloc(t->info->nbytes);
        for (uint64_t b = 0; b < t->info->nbytes; b++)
            w[b] = pat(1000 + t->index, b);
        assert_int_equal(t->parts[0].tier, TL_TIER_DEVICE);
        assert_int_equal(
            tl_device_copy_to(t->parts[0].device, t->parts[0].dptr, w, t->info->nbytes), TL_OK);
        assert_int_equal(tl_session_mark_dirty(s, t->index), TL_OK);
        sh.bytes[t->index] = w;
    }
    tl_session_release(s, a);
    /* a spill write that fails: an error, nothing lost, nothing moved */
    tl__fault_arm(TL_FAULT_WRITE, 1, ENOSPC);
    uint64_t freed = 0;
    assert_int_equal(tl_session_evict_all(s, f.simname, &freed), TL_ERR_IO);
    tl__fault_reset();
    assert_non_null(strstr(tl_last_error(), "No space"));
    /* the full disk is the spill directory's: named, and the model file is not blamed */
    if (!strstr(tl_last_error(), "spill directory") || strstr(tl_last_error(), "m.safetensors"))
        fail_msg("the spill error does not name the spill directory: %s", tl_last_error());
    assert_int_equal(tl_session_check(s), TL_OK);
    /* now for real */
    assert_int_equal(tl_session_evict_all(s, f.simname, &freed), TL_OK);
    assert_true(freed > 0);
    tl_session_stats st;
    tl_session_stats_get(s, &st, sizeof st);
    assert_true(st.spills >= 4);
    assert_int_equal(st.devices[0].used, 0);
    assert_int_equal(tl_session_check(s), TL_OK);
    /* no file is left in the spill directory */
    DIR *dh = opendir(f.dir);
    int nn = 0;
    for (struct dirent *de; (de = readdir(dh));)
        nn += de->d_name[0] != '.';
    closedir(dh);
    assert_int_equal(nn, 1); /* m.safetensors */
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, TL_ALL_LAYERS, true, &a), TL_OK);
    check_acquired(&f, &sh, a);
    tl_session_release(s, a);
    tl_session_destroy(s);
    for (size_t i = 0; i < tl_model_tensor_count(f.m); i++)
        free(sh.bytes[i]);
    free(sh.bytes);
    teardown(&f, p);
}

/* A partial eviction that cannot free enough stops with an error after bounded work. */
static void test_partial_eviction_is_bounded(void **state) {
    (void)state;
    fx f = {0};
    tl_plan *p = setup(&f, 64 << 20, 0, NULL, 64 << 20);
    tl_session *s;
    assert_int_equal(tl_session_create(f.m, p, NULL, &s), TL_OK);
    tl_acquired *a, *b;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 2, false, &a), TL_OK);
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 2, 4, false, &b), TL_OK);
    tl_session_release(s, b);
    uint64_t freed = 0;
    assert_int_equal(
        tl_session_evict(s, f.simname, UINT64_MAX - 1 /* a runtime once asked for 1e30 */, &freed),
        TL_ERR_DEVICE_OOM);
    assert_int_equal(freed, 2 * (96 << 10)); /* the two released layers, not the held ones */
    assert_int_equal(tl_session_check(s), TL_OK);
    tl_session_release(s, a);
    tl_session_destroy(s);
    teardown(&f, p);
}

/* The device refuses although the budget allowed: evict and retry once. */
static void test_oom_recovery(void **state) {
    (void)state;
    fx f = {0};
    /* the device holds 3 layers ... */
    tl_plan *p = setup(&f, 3 * (96 << 10) + 100, 0, "offload", 4000 + 2 * (96 << 10) + 1000);
    tl_session_options o;
    tl_session_options_init(&o);
    uint64_t big[2] = {64 << 20, 0}; /* ... but the session believes in 64 MiB */
    o.device_budgets = big;
    o.n_device_budgets = 2;
    tl_session *s;
    assert_int_equal(tl_session_create(f.m, p, &o, &s), TL_OK);
    check_layers(&f, s, NULL);
    tl_session_stats st;
    tl_session_stats_get(s, &st, sizeof st);
    assert_true(st.oom_recoveries > 0);
    /* holding more than the device has: a clear error, not a loop */
    tl_acquired *a;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 4, false, &a), TL_ERR_DEVICE_OOM);
    assert_non_null(strstr(tl_last_error(), "asked"));
    assert_int_equal(tl_session_check(s), TL_OK);
    tl_session_destroy(s);
    teardown(&f, p);
}

/* --- random operations from several threads --- */

typedef struct rnd {
    fx *f;
    tl_session *s;
    shadow *sh;
    pthread_mutex_t *shmu;
    uint64_t seed;
    int ops;
    int tid;
} rnd;

static uint64_t xs(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void *rnd_main(void *arg) {
    rnd *r = arg;
    uint64_t x = r->seed;
    for (int i = 0; i < r->ops; i++) {
        size_t k = xs(&x) % N_LAYERS;
        int op = (int)(xs(&x) % 10);
        if (op < 5) {
            tl_acquired *a;
            size_t end = k + 1 + xs(&x) % 2;
            if (end > N_LAYERS) end = N_LAYERS; /* past the last layer is refused */
            tl_status st = tl_session_acquire(r->s, TL_COMP_DIFFUSION, k, end, false, &a);
            if (st == TL_ERR_DEVICE_OOM) continue; /* other threads hold the device */
            if (st) fail_msg("acquire: %s", tl_last_error());
            pthread_mutex_lock(r->shmu);
            check_acquired(r->f, r->sh, a);
            /* thread 0 also writes into what it holds, as an engine would */
            if (r->tid == 0 && op == 0) {
                const tl_session_tensor *t = tl_acquired_tensor(a, 0);
                if (t->parts[0].tier == TL_TIER_DEVICE) {
                    unsigned char *w = malloc(t->info->nbytes);
                    for (uint64_t b = 0; b < t->info->nbytes; b++)
                        w[b] = pat(x, b);
                    if (tl_device_copy_to(t->parts[0].device, t->parts[0].dptr, w,
                                          t->info->nbytes) ||
                        tl_session_mark_dirty(r->s, t->index))
                        fail_msg("write: %s", tl_last_error());
                    free(r->sh->bytes[t->index]);
                    r->sh->bytes[t->index] = w;
                }
            }
            pthread_mutex_unlock(r->shmu);
            tl_session_release(r->s, a);
        } else if (op < 8) {
            tl_session_prefetch(r->s, TL_COMP_DIFFUSION, k, k + 1, false);
        } else {
            uint64_t freed;
            tl_status st = tl_session_evict(r->s, r->f->simname, xs(&x) % (200 << 10), &freed);
            if (st && st != TL_ERR_DEVICE_OOM) fail_msg("evict: %s", tl_last_error());
        }
        if (tl_session_check(r->s)) fail_msg("check: %s", tl_last_error());
    }
    return NULL;
}

static void test_random_operations(void **state) {
    (void)state;
    for (uint64_t seed = 1; seed <= 3; seed++) {
        fx f = {0};
        tl_plan *p = setup(&f, 64 << 20, 0, "offload", 4000 + 2 * (96 << 10) + 1000);
        tl_session_options o;
        tl_session_options_init(&o);
        uint64_t budgets[2] = {5 * (96 << 10), 0}; /* five layers for three threads */
        o.device_budgets = budgets;
        o.n_device_budgets = 2;
        o.host_budget = seed == 2 ? 1 : 0; /* one seed spills every dirty eviction */
        o.spill_dir = f.dir;
        tl_session *s;
        assert_int_equal(tl_session_create(f.m, p, &o, &s), TL_OK);
        shadow sh = {calloc(tl_model_tensor_count(f.m), sizeof *sh.bytes)};
        pthread_mutex_t shmu = PTHREAD_MUTEX_INITIALIZER;
        rnd r[3];
        pthread_t th[3];
        for (int t = 0; t < 3; t++) {
            r[t] = (rnd){&f, s, &sh, &shmu, seed * 7919 + (uint64_t)t * 104729, 700, t};
            pthread_create(&th[t], NULL, rnd_main, &r[t]);
        }
        for (int t = 0; t < 3; t++)
            pthread_join(th[t], NULL);
        /* every tensor, acquired one layer at a time, is what it should be */
        check_layers(&f, s, &sh);
        assert_int_equal(tl_session_check(s), TL_OK);
        tl_session_destroy(s);
        for (size_t i = 0; i < tl_model_tensor_count(f.m); i++)
            free(sh.bytes[i]);
        free(sh.bytes);
        teardown(&f, p);
    }
}

/* Write new bytes into every tensor of layers [0, 2) on the device and mark them dirty. */
static void dirty_layers(fx *f, tl_session *s, shadow *sh, uint64_t salt) {
    tl_acquired *a;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 2, false, &a), TL_OK);
    for (size_t i = 0; i < tl_acquired_count(a); i++) {
        const tl_session_tensor *t = tl_acquired_tensor(a, i);
        unsigned char *w = malloc(t->info->nbytes);
        for (uint64_t b = 0; b < t->info->nbytes; b++)
            w[b] = pat(salt + t->index, b);
        assert_int_equal(
            tl_device_copy_to(t->parts[0].device, t->parts[0].dptr, w, t->info->nbytes), TL_OK);
        assert_int_equal(tl_session_mark_dirty(s, t->index), TL_OK);
        free(sh->bytes[t->index]);
        sh->bytes[t->index] = w;
    }
    (void)f;
    tl_session_release(s, a);
}

static int count_dir(const char *dir) {
    DIR *dh = opendir(dir);
    int nn = 0;
    for (struct dirent *de; (de = readdir(dh));)
        nn += de->d_name[0] != '.';
    closedir(dh);
    return nn;
}

/*
 * Every write, open and mmap a spill makes fails in turn (ENOSPC / EIO /
 * ENOMEM), and every device allocation of a streamed pass: each time the
 * session recovers or says why, its accounting holds, no descriptor or file
 * is left behind, and every tensor still has the bytes it should.
 */
static void test_fault_sweeps(void **state) {
    (void)state;
    const struct {
        tl__fault_kind kind;
        int err;
    } faults[] = {{TL_FAULT_WRITE, ENOSPC},
                  {TL_FAULT_WRITE, EIO},
                  {TL_FAULT_OPEN, EMFILE},
                  {TL_FAULT_MMAP, ENOMEM}};
    for (size_t fk = 0; fk < sizeof faults / sizeof faults[0]; fk++) {
        fx f = {0};
        tl_plan *p = setup(&f, 64 << 20, 0, NULL, 64 << 20);
        tl_session_options o;
        tl_session_options_init(&o);
        o.host_budget = 1;
        o.spill_dir = f.dir;
        o.staging_size = 64 << 10; /* several writes per tensor */
        shadow sh = {calloc(tl_model_tensor_count(f.m), sizeof *sh.bytes)};
        /* count the calls of one clean spill of everything, from a fresh session */
        tl_session *s;
        assert_int_equal(tl_session_create(f.m, p, &o, &s), TL_OK);
        dirty_layers(&f, s, &sh, 500);
        tl__fault_arm(faults[fk].kind, 0, 0);
        uint64_t freed;
        assert_int_equal(tl_session_evict_all(s, f.simname, &freed), TL_OK);
        unsigned long calls = tl__fault_calls(faults[fk].kind);
        tl__fault_reset();
        tl_session_destroy(s);
        assert_true(calls > 0);
        int fds = tu_count_fds(), failures = 0;
        for (unsigned long nth = 1; nth <= calls; nth++) {
            assert_int_equal(tl_session_create(f.m, p, &o, &s), TL_OK);
            dirty_layers(&f, s, &sh, 600 + nth);
            tl__fault_arm(faults[fk].kind, nth, faults[fk].err);
            tl_status st = tl_session_evict_all(s, f.simname, &freed);
            tl__fault_reset();
            if (st) {
                failures++;
                assert_true(strlen(tl_last_error()) > 0);
            }
            assert_int_equal(tl_session_check(s), TL_OK);
            /* what stayed on the device and what was spilled are both intact */
            assert_int_equal(tl_session_evict_all(s, f.simname, &freed), TL_OK);
            tl_acquired *a;
            assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, TL_ALL_LAYERS, true, &a),
                             TL_OK);
            check_acquired(&f, &sh, a);
            tl_session_release(s, a);
            tl_session_destroy(s);
            /* the written bytes are gone with the session: the file's again */
            for (size_t i = 0; i < tl_model_tensor_count(f.m); i++) {
                free(sh.bytes[i]);
                sh.bytes[i] = NULL;
            }
            assert_int_equal(tu_count_fds(), fds);
            assert_int_equal(count_dir(f.dir), 1); /* no spill file left */
        }
        if (failures == 0) fail_msg("fault kind %zu: no injected failure surfaced", fk);
        for (size_t i = 0; i < tl_model_tensor_count(f.m); i++)
            free(sh.bytes[i]);
        free(sh.bytes);
        teardown(&f, p);
    }
    /* device allocations failing one by one during a streamed pass */
    fx f = {0};
    tl_plan *p = setup(&f, 64 << 20, 0, "offload", 4000 + 2 * (96 << 10) + 1000);
    tl_session *s;
    assert_int_equal(tl_session_create(f.m, p, NULL, &s), TL_OK);
    tl__fault_arm(TL_FAULT_DEVICE_ALLOC, 0, 0);
    for (size_t k = 0; k < N_LAYERS; k++) {
        tl_acquired *a;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, k, k + 1, false, &a), TL_OK);
        tl_session_release(s, a);
    }
    unsigned long calls = tl__fault_calls(TL_FAULT_DEVICE_ALLOC);
    for (unsigned long nth = 1; nth <= calls; nth++) {
        tl__fault_arm(TL_FAULT_DEVICE_ALLOC, nth, ENOMEM);
        for (size_t k = 0; k < N_LAYERS; k++) {
            tl_acquired *a;
            tl_status st = tl_session_acquire(s, TL_COMP_DIFFUSION, k, k + 1, false, &a);
            if (st == TL_OK) {
                check_acquired(&f, NULL, a);
                tl_session_release(s, a);
            } else {
                assert_int_equal(st, TL_ERR_DEVICE_OOM);
                assert_non_null(strstr(tl_last_error(), f.simname));
            }
            assert_int_equal(tl_session_check(s), TL_OK);
        }
        tl__fault_reset();
    }
    tl_session_stats st;
    tl_session_stats_get(s, &st, sizeof st);
    assert_true(st.oom_recoveries > 0); /* a refused allocation with something evictable recovers */
    tl_session_destroy(s);
    teardown(&f, p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lazy_and_resident),
        cmocka_unit_test(test_unknown_device),
        cmocka_unit_test(test_stream_prefetch_overlaps),
        cmocka_unit_test(test_dirty_spill_roundtrip),
        cmocka_unit_test(test_partial_eviction_is_bounded),
        cmocka_unit_test(test_oom_recovery),
        cmocka_unit_test(test_random_operations),
        cmocka_unit_test(test_fault_sweeps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
