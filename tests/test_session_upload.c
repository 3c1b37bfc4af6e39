/*
 * test_session_upload.c — what an engine needs of uploads: releasing weights
 * that device work may still read (tl_session_release_fenced: the fence is
 * waited for once, before the memory is reused, never at the release itself),
 * asking whether a prefetch has landed (tl_session_ready, on a sim GPU whose
 * copies take model time: the expected moment is bytes / bandwidth, computed
 * here), and the pinned tier (streamed layers kept in pinned host memory up
 * to pinned_cap, least recently used out; byte counts worked out by hand,
 * bytes on the device compared with pread of the file).
 */
#include "testutil.h"

#include "test_load_st.h"

#include <stdlib.h>
#include <string.h>

#define UNET "model.diffusion_model."
#define LAYER_BYTES (64 * 1024 * 4)

typedef struct fx {
    char *dir, *path;
    tl_model *m;
    tl_device *sim;
    tl_plan *p;
} fx;

/* 4 diffusion layers of 256 KiB each, streamed to a sim GPU of cap bytes and bandwidth bw. */
static void setup(fx *f, uint64_t cap, double bw) {
    f->dir = tu_tmpdir();
    char *path = tu_path(f->dir, "m.safetensors");
    static char names[4][64];
    st_tensor t[4];
    for (int k = 0; k < 4; k++) {
        snprintf(names[k], sizeof names[k], UNET "input_blocks.%d.0.weight", k);
        t[k] = (st_tensor){names[k], "F32", LAYER_BYTES / 4, 4, NULL, NULL, NULL};
        unsigned char *b = malloc(LAYER_BYTES);
        for (int i = 0; i < LAYER_BYTES; i++)
            b[i] = (unsigned char)(i * 31 + k * 7 + (i >> 9));
        t[k].data = b;
    }
    st_write(path, t, 4);
    for (int k = 0; k < 4; k++)
        free((void *)t[k].data);
    const char *paths[] = {path};
    assert_int_equal(tl_model_open(paths, 1, NULL, &f->m), TL_OK);
    f->path = path;
    static int counter;
    char spec[96], name[32];
    snprintf(name, sizeof name, "fsim%d", ++counter);
    if (bw > 0)
        snprintf(spec, sizeof spec, "%s=%llu:bw=%.0f", name, (unsigned long long)cap, bw);
    else
        snprintf(spec, sizeof spec, "%s=%llu", name, (unsigned long long)cap);
    assert_int_equal(tl_device_sim_add(spec), TL_OK);
    assert_int_equal(tl_device_find(name, &f->sim), TL_OK);
    f->p = tu_plan_one_gpu(f->m, name, cap, NULL, true);
}

static void teardown(fx *f) {
    tl_plan_destroy(f->p);
    tl_device_unregister(f->sim);
    tl_device_release(f->sim);
    tl_model_close(f->m);
    tu_tmpdir_rm(f->dir);
    free(f->path);
}

typedef struct counter {
    int waits;
    tl_status answer;
} counter;

static tl_status count_wait(void *arg) {
    counter *c = arg;
    c->waits++;
    return c->answer;
}

/* The fence is waited for once, when the memory is needed, not at the release. */
static void test_fence_waited_before_reuse(void **state) {
    (void)state;
    fx f;
    setup(&f, 4ull * LAYER_BYTES, 0);
    tl_session *s;
    assert_int_equal(tl_session_create(f.m, f.p, NULL, &s), TL_OK);
    counter c = {0, TL_OK};
    tl_acquired *a;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 1, false, &a), TL_OK);
    assert_int_equal(tl_acquired_tensor(a, 0)->parts[0].tier, TL_TIER_DEVICE);
    assert_int_equal(tl_session_release_fenced(s, a, count_wait, &c), TL_OK);
    assert_int_equal(c.waits, 0); /* released: nothing reused yet */
    /* acquiring it again reuses nothing: still no wait */
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 1, false, &a), TL_OK);
    tl_session_release(s, a);
    assert_int_equal(c.waits, 0);
    uint64_t freed = 0;
    assert_int_equal(tl_session_evict_all(s, tl_device_name(f.sim), &freed), TL_OK);
    assert_int_equal(freed, LAYER_BYTES);
    assert_int_equal(c.waits, 1);
    /* reloaded and evicted again: the fence was forgotten */
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 1, false, &a), TL_OK);
    tl_session_release(s, a);
    assert_int_equal(tl_session_evict_all(s, tl_device_name(f.sim), &freed), TL_OK);
    assert_int_equal(c.waits, 1);
    assert_int_equal(tl_session_check(s), TL_OK);
    tl_session_destroy(s);
    teardown(&f);
}

/* Eviction by budget pressure waits for the fence; a failing fence stops the eviction. */
static void test_fence_under_pressure(void **state) {
    (void)state;
    fx f;
    setup(&f, 2ull * LAYER_BYTES, 0); /* room for two layers */
    tl_session *s;
    assert_int_equal(tl_session_create(f.m, f.p, NULL, &s), TL_OK);
    counter c0 = {0, TL_OK}, c1 = {0, TL_ERR_DEVICE};
    tl_acquired *a;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 1, false, &a), TL_OK);
    assert_int_equal(tl_session_release_fenced(s, a, count_wait, &c0), TL_OK);
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 1, 2, false, &a), TL_OK);
    assert_int_equal(tl_session_release_fenced(s, a, count_wait, &c1), TL_OK);
    /* layer 2 needs room: the least recently used (layer 0) goes, after its fence */
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 2, 3, false, &a), TL_OK);
    assert_int_equal(c0.waits, 1);
    assert_int_equal(c1.waits, 0);
    tl_session_release(s, a);
    /* layer 3 would evict layer 1, whose fence fails: the error comes back, nothing is lost */
    tl_acquired *b = NULL;
    tl_status st = tl_session_acquire(s, TL_COMP_DIFFUSION, 3, 4, false, &b);
    if (st == TL_OK) { /* layer 2 (no fence) was the victim instead: then evict all */
        tl_session_release(s, b);
        uint64_t freed;
        st = tl_session_evict_all(s, tl_device_name(f.sim), &freed);
    }
    assert_int_equal(st, TL_ERR_DEVICE);
    assert_non_null(strstr(tl_last_error(), "fence"));
    assert_int_equal(c1.waits, 1);
    assert_int_equal(tl_session_check(s), TL_OK);
    c1.answer = TL_OK; /* destroying waits for the fence still held */
    tl_session_destroy(s);
    assert_int_equal(c1.waits, 2);
    teardown(&f);
}

/* A prefetch on a 1 MB/s sim lands when the model clock passes bytes / bandwidth. */
static void test_ready(void **state) {
    (void)state;
    fx f;
    const double bw = 1e6;
    setup(&f, 4ull * LAYER_BYTES, bw);
    tl_session *s;
    assert_int_equal(tl_session_create(f.m, f.p, NULL, &s), TL_OK);
    bool ready = true;
    assert_int_equal(tl_session_ready(s, TL_COMP_DIFFUSION, 1, 2, false, &ready), TL_OK);
    assert_false(ready);
    double t0;
    assert_int_equal(tl_device_sim_clock(f.sim, &t0), TL_OK);
    assert_int_equal(tl_session_prefetch(s, TL_COMP_DIFFUSION, 1, 2, false), TL_OK);
    assert_int_equal(tl_session_ready(s, TL_COMP_DIFFUSION, 1, 2, false, &ready), TL_OK);
    assert_false(ready); /* in flight: 0.262 model seconds */
    double copy = LAYER_BYTES / bw;
    assert_int_equal(tl_device_sim_advance(f.sim, copy * 0.5), TL_OK);
    assert_int_equal(tl_session_ready(s, TL_COMP_DIFFUSION, 1, 2, false, &ready), TL_OK);
    assert_false(ready);
    assert_int_equal(tl_device_sim_advance(f.sim, copy * 0.6), TL_OK);
    assert_int_equal(tl_session_ready(s, TL_COMP_DIFFUSION, 1, 2, false, &ready), TL_OK);
    assert_true(ready);
    /* acquiring it now waits for nothing: the clock does not move */
    double t1, t2;
    assert_int_equal(tl_device_sim_clock(f.sim, &t1), TL_OK);
    tl_acquired *a;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 1, 2, false, &a), TL_OK);
    assert_int_equal(tl_device_sim_clock(f.sim, &t2), TL_OK);
    assert_true(t2 == t1);
    tl_session_release(s, a);
    /* out of range components are refused */
    assert_int_equal(tl_session_ready(s, (tl_component)99, 0, 1, false, &ready),
                     TL_ERR_INVALID_ARG);
    tl_session_destroy(s);
    teardown(&f);
}

/* Acquire layer k, compare its device bytes with pread of the file, release. */
static void use_layer(fx *f, tl_session *s, size_t k) {
    tl_acquired *a;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, k, k + 1, false, &a), TL_OK);
    const tl_session_tensor *t = tl_acquired_tensor(a, 0);
    assert_int_equal(t->parts[0].tier, TL_TIER_DEVICE);
    unsigned char *got = malloc(LAYER_BYTES), *want = malloc(LAYER_BYTES);
    assert_int_equal(tl_device_copy_from(f->sim, got, t->parts[0].dptr, LAYER_BYTES), TL_OK);
    FILE *fp = fopen(f->path, "rb");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, (long)t->info->offset, SEEK_SET), 0);
    assert_int_equal(fread(want, 1, LAYER_BYTES, fp), LAYER_BYTES);
    fclose(fp);
    assert_memory_equal(got, want, LAYER_BYTES);
    free(got);
    free(want);
    tl_session_release(s, a);
    assert_int_equal(tl_session_check(s), TL_OK);
}

/*
 * A device budget of 2 layers and a pinned cap of 3: the first pass fills a
 * pinned copy per layer, the fourth pushing out the least recently used
 * (layer 0); then layer 1 comes from its pinned copy, layer 0 from the file.
 */
static void test_pinned_tier(void **state) {
    (void)state;
    fx f;
    setup(&f, 2ull * LAYER_BYTES, 0);
    tl_session_options o;
    tl_session_options_init(&o);
    o.pinned_cap = 3ull * LAYER_BYTES;
    tl_session *s;
    assert_int_equal(tl_session_create(f.m, f.p, &o, &s), TL_OK);
    for (size_t k = 0; k < 4; k++)
        use_layer(&f, s, k);
    tl_session_stats st;
    assert_int_equal(tl_session_stats_get(s, &st, sizeof st), TL_OK);
    assert_true(st.devices[0].pinned);
    assert_int_equal(st.pinned_cap, 3ull * LAYER_BYTES);
    assert_int_equal(st.moved[TL_TIER_FILE][TL_TIER_DEVICE], 4ull * LAYER_BYTES);
    assert_int_equal(st.moved[TL_TIER_FILE][TL_TIER_PINNED], 4ull * LAYER_BYTES);
    assert_int_equal(st.moved[TL_TIER_PINNED][TL_TIER_DEVICE], 0);
    assert_int_equal(st.pinned_used, 3ull * LAYER_BYTES);
    assert_int_equal(st.pinned_peak, 3ull * LAYER_BYTES);
    use_layer(&f, s, 1); /* pinned */
    use_layer(&f, s, 0); /* from the file again (its copy went first), pinned anew */
    assert_int_equal(tl_session_stats_get(s, &st, sizeof st), TL_OK);
    assert_int_equal(st.moved[TL_TIER_PINNED][TL_TIER_DEVICE], 1ull * LAYER_BYTES);
    assert_int_equal(st.moved[TL_TIER_FILE][TL_TIER_DEVICE], 5ull * LAYER_BYTES);
    assert_int_equal(st.moved[TL_TIER_FILE][TL_TIER_PINNED], 5ull * LAYER_BYTES);
    assert_int_equal(st.pinned_used, 3ull * LAYER_BYTES);
    tl_session_destroy(s);

    /* no cap: no pinned tier, everything from the file */
    assert_int_equal(tl_session_create(f.m, f.p, NULL, &s), TL_OK);
    use_layer(&f, s, 0);
    assert_int_equal(tl_session_stats_get(s, &st, sizeof st), TL_OK);
    assert_int_equal(st.pinned_used, 0);
    assert_int_equal(st.moved[TL_TIER_FILE][TL_TIER_PINNED], 0);
    tl_session_destroy(s);
    teardown(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fence_waited_before_reuse),
        cmocka_unit_test(test_fence_under_pressure),
        cmocka_unit_test(test_ready),
        cmocka_unit_test(test_pinned_tier),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
