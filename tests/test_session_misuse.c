/*
 * test_session_misuse.c — a session refuses what an engine gets wrong, with
 * the documented status, and its counts stay true (tl_session_check after
 * each case):
 *   - a set released twice, through another session, or through a session
 *     already destroyed: TL_ERR_INVALID_ARG, nothing changed;
 *   - layer ranges outside the component (begin > end, end past the last
 *     layer, begin past it with TL_ALL_LAYERS) for acquire, prefetch, ready;
 *   - destroying a session with a set outstanding: refused and the session
 *     kept (release builds), an abort naming it (debug builds, in a child);
 *   - tl_session_check finds a reference no outstanding set holds;
 *   - session and run options with size 0.
 * Expected reference counts come from the test's own record of what it holds;
 * expected residency from the sizes the test wrote.
 */
#include "testutil.h"

#include "residency/residency.h"
#include "st_writer.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define UNET "model.diffusion_model."
#define N_LAYERS 4

typedef struct fx {
    char *dir, *path;
    tl_model *m;
    tl_device *sim;
    char simname[32];
    tl_plan *p;
} fx;

static int counter;

/* 4 diffusion layers of one 64 KiB F32 weight, a sim GPU holding them all, a plan onto it. */
static void setup(fx *f) {
    static char names[N_LAYERS][96];
    sw_tensor t[N_LAYERS];
    for (int k = 0; k < N_LAYERS; k++) {
        snprintf(names[k], sizeof names[k], UNET "input_blocks.%d.0.weight", k);
        t[k] = (sw_tensor){names[k], "F32", 2, {64, 256}};
    }
    f->dir = tu_tmpdir();
    f->path = tu_path(f->dir, "m.safetensors");
    size_t len;
    uint8_t *img = sw_build(t, N_LAYERS, NULL, true, &len);
    assert_true(sw_write_file(f->path, img, len));
    free(img);
    const char *paths[] = {f->path};
    assert_int_equal(tl_model_open(paths, 1, NULL, &f->m), TL_OK);
    snprintf(f->simname, sizeof f->simname, "misuse%d_%d", (int)getpid(), ++counter);
    f->sim = tu_sim_add(f->simname, 64ull << 20);
    f->p = tu_plan_one_gpu(f->m, f->simname, 16ull << 20, NULL, false);
}

static void teardown(fx *f) {
    tl_plan_destroy(f->p);
    tl_device_unregister(f->sim);
    tl_device_release(f->sim);
    tl_model_close(f->m);
    tu_tmpdir_rm(f->dir);
    free(f->path);
}

static tl_session *session(fx *f) {
    tl_session *s = NULL;
    assert_int_equal(tl_session_create(f->m, f->p, NULL, &s), TL_OK);
    return s;
}

static uint64_t dev_used(tl_session *s) {
    tl_session_stats st;
    assert_int_equal(tl_session_stats_get(s, &st, sizeof st), TL_OK);
    assert_int_equal(st.n_devices, 1);
    return st.devices[0].used;
}

/* Every layer's bytes are evictable exactly when no set holds them: evict all, see what is left. */
static uint64_t held_bytes(fx *f, tl_session *s) {
    uint64_t freed;
    assert_int_equal(tl_session_evict_all(s, f->simname, &freed), TL_OK);
    return dev_used(s);
}

static tl_status fence_never(void *arg) {
    (void)arg;
    fail_msg("the fence of a refused release was waited for");
    return TL_OK;
}

static void test_release_twice(void **state) {
    (void)state;
    fx f = {0};
    setup(&f);
    tl_session *s = session(&f);
    tl_acquired *a, *b;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 2, false, &a), TL_OK);
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 1, 2, false, &b), TL_OK);
    assert_int_equal(tl_session_release(s, a), TL_OK);
    assert_int_equal(tl_session_check(s), TL_OK);
    /* a second release of a must not take b's reference on layer 1 */
    assert_int_equal(tl_session_release(s, a), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "already released"));
    assert_int_equal(tl_session_check(s), TL_OK);
    assert_int_equal(held_bytes(&f, s), 64 << 10); /* layer 1, held by b */
    assert_int_equal(tl_session_release_fenced(s, a, fence_never, NULL), TL_ERR_INVALID_ARG);
    assert_int_equal(held_bytes(&f, s), 64 << 10);
    assert_int_equal(tl_session_release(s, b), TL_OK);
    assert_int_equal(tl_session_release(s, b), TL_ERR_INVALID_ARG);
    assert_int_equal(held_bytes(&f, s), 0);
    assert_int_equal(tl_session_check(s), TL_OK);
    assert_int_equal(tl_session_release(s, NULL), TL_OK);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    teardown(&f);
}

static void test_release_other_session(void **state) {
    (void)state;
    fx f = {0};
    setup(&f);
    tl_session *s1 = session(&f), *s2 = session(&f);
    tl_acquired *a1, *a2;
    assert_int_equal(tl_session_acquire(s1, TL_COMP_DIFFUSION, 0, 1, false, &a1), TL_OK);
    assert_int_equal(tl_session_acquire(s2, TL_COMP_DIFFUSION, 0, 1, false, &a2), TL_OK);
    assert_int_equal(tl_session_release(s2, a1), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "another session"));
    assert_int_equal(tl_session_release(NULL, a1), TL_ERR_INVALID_ARG);
    /* nothing moved: each session still holds its own layer 0 */
    assert_int_equal(tl_session_check(s1), TL_OK);
    assert_int_equal(tl_session_check(s2), TL_OK);
    assert_int_equal(held_bytes(&f, s1), 64 << 10);
    assert_int_equal(held_bytes(&f, s2), 64 << 10);
    /* the set is still good for its own session */
    assert_int_equal(tl_acquired_count(a1), 1);
    assert_int_equal(tl_session_release(s1, a1), TL_OK);
    assert_int_equal(tl_session_release(s2, a2), TL_OK);
    assert_int_equal(held_bytes(&f, s1), 0);
    assert_int_equal(held_bytes(&f, s2), 0);
    assert_int_equal(tl_session_destroy(s1), TL_OK);
    assert_int_equal(tl_session_destroy(s2), TL_OK);
    teardown(&f);
}

static void test_release_after_destroy(void **state) {
    (void)state;
    fx f = {0};
    setup(&f);
    tl_session *s = session(&f);
    tl_acquired *a;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 1, false, &a), TL_OK);
    assert_int_equal(tl_session_release(s, a), TL_OK);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    /* s is gone: the call must recognise that without reading it */
    tl_session *gone = s;
    assert_int_equal(tl_session_release(gone, a), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "destroyed"));
    teardown(&f);
}

static void test_ranges(void **state) {
    (void)state;
    fx f = {0};
    setup(&f);
    tl_session *s = session(&f);
    assert_int_equal(tl_model_layer_count(f.m, TL_COMP_DIFFUSION), N_LAYERS);
    static const size_t bad[][2] = {{2, 1},
                                    {0, N_LAYERS + 1},
                                    {N_LAYERS, N_LAYERS + 1},
                                    {N_LAYERS + 1, TL_ALL_LAYERS},
                                    {TL_ALL_LAYERS, TL_ALL_LAYERS},
                                    {3, 2}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tl_acquired *a = (tl_acquired *)&f; /* must be cleared */
        bool ready = true;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, bad[i][0], bad[i][1], true, &a),
                         TL_ERR_INVALID_ARG);
        assert_null(a);
        assert_non_null(strstr(tl_last_error(), "layers"));
        assert_int_equal(tl_session_prefetch(s, TL_COMP_DIFFUSION, bad[i][0], bad[i][1], false),
                         TL_ERR_INVALID_ARG);
        assert_int_equal(
            tl_session_ready(s, TL_COMP_DIFFUSION, bad[i][0], bad[i][1], false, &ready),
            TL_ERR_INVALID_ARG);
        assert_false(ready);
        assert_int_equal(tl_session_check(s), TL_OK);
        assert_int_equal(dev_used(s), 0);
    }
    /* the edges that are in range */
    static const size_t good[][2] = {
        {0, TL_ALL_LAYERS}, {N_LAYERS, TL_ALL_LAYERS}, {N_LAYERS, N_LAYERS}, {0, N_LAYERS}, {3, 4}};
    static const size_t want[] = {N_LAYERS, 0, 0, N_LAYERS, 1};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        tl_acquired *a;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, good[i][0], good[i][1], false,
                                            &a),
                         TL_OK);
        assert_int_equal(tl_acquired_count(a), want[i]);
        assert_int_equal(tl_session_release(s, a), TL_OK);
    }
    /* a component the model lacks has 0 layers: only [0, 0) and [0, ALL) */
    tl_acquired *a;
    assert_int_equal(tl_session_acquire(s, TL_COMP_VAE, 0, TL_ALL_LAYERS, true, &a), TL_OK);
    assert_int_equal(tl_acquired_count(a), 0);
    assert_int_equal(tl_session_release(s, a), TL_OK);
    assert_int_equal(tl_session_acquire(s, TL_COMP_VAE, 0, 1, true, &a), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_session_check(s), TL_OK);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    teardown(&f);
}

/* Destroy with a set outstanding, in a child (debug builds abort there). */
static void destroy_outstanding_child(void) {
    fx f = {0};
    setup(&f);
    tl_session *s = session(&f);
    tl_acquired *a;
    if (tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 2, false, &a)) _exit(3);
    tl_status st = tl_session_destroy(s);
    if (st != TL_ERR_INVALID_ARG) _exit(4);
    if (!strstr(tl_last_error(), "1 acquired sets are outstanding")) _exit(5);
    /* the session is intact: its set reads, releases, and then it goes */
    if (tl_acquired_count(a) != 2 || tl_session_check(s)) _exit(6);
    if (held_bytes(&f, s) != 128 << 10) _exit(7);
    if (tl_session_release(s, a) || tl_session_check(s)) _exit(8);
    if (held_bytes(&f, s) != 0) _exit(9);
    if (tl_session_destroy(s)) _exit(10);
    teardown(&f);
    _exit(0);
}

static void test_destroy_outstanding(void **state) {
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], 2);
        destroy_outstanding_child();
    }
    close(p[1]);
    char err[4096];
    size_t n = 0;
    ssize_t r;
    while ((r = read(p[0], err + n, sizeof err - 1 - n)) > 0)
        n += (size_t)r;
    err[n] = 0;
    close(p[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
#ifdef TL_DEBUG_ASSERTS
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
        fail_msg("debug build: expected an abort, status 0x%x, stderr: %s", status, err);
    assert_non_null(strstr(err, "outstanding"));
#else
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("refused destroy: child status 0x%x (exit code = failed step), stderr: %s",
                 status, err);
#endif
}

/* A reference that no outstanding set holds (a bookkeeping bug, planted) is found. */
static void test_check_counts_sets(void **state) {
    (void)state;
    fx f = {0};
    setup(&f);
    tl_session *s = session(&f);
    tl_acquired *a, *b;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 2, false, &a), TL_OK);
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 1, 3, false, &b), TL_OK);
    assert_int_equal(tl_session_check(s), TL_OK);
    /* a claims layer 3 instead of layer 1: layer 1 has a reference no set holds */
    size_t was = a->units[1];
    a->units[1] = b->units[1];
    assert_int_equal(tl_session_check(s), TL_ERR_INTEGRITY);
    assert_non_null(strstr(tl_last_error(), "held by outstanding sets"));
    a->units[1] = was;
    assert_int_equal(tl_session_check(s), TL_OK);
    /* and the total: a set dropping a unit it holds */
    a->n_units = 1;
    assert_int_equal(tl_session_check(s), TL_ERR_INTEGRITY);
    a->n_units = 2;
    assert_int_equal(tl_session_release(s, a), TL_OK);
    assert_int_equal(tl_session_release(s, b), TL_OK);
    assert_int_equal(tl_session_check(s), TL_OK);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    teardown(&f);
}

static void test_options_size_zero(void **state) {
    (void)state;
    fx f = {0};
    setup(&f);
    tl_session_options o;
    tl_session_options_init(&o);
    o.size = 0;
    tl_session *s = (tl_session *)&f;
    assert_int_equal(tl_session_create(f.m, f.p, &o, &s), TL_ERR_INVALID_ARG);
    assert_null(s);
    assert_non_null(strstr(tl_last_error(), "tl_session_options"));
    s = session(&f);
    tl_run_options ro;
    tl_run_options_init(&ro);
    ro.size = 0;
    tl_run_report *rep = NULL;
    assert_int_equal(tl_run_pipeline(s, &ro, &rep), TL_ERR_INVALID_ARG);
    assert_null(rep);
    assert_non_null(strstr(tl_last_error(), "tl_run_options"));
    tl_spill_options so;
    tl_spill_options_init(&so);
    so.size = 0;
    tl_spill *sp = NULL;
    assert_int_equal(tl_spill_create(4096, &so, &sp), TL_ERR_INVALID_ARG);
    assert_int_equal(dev_used(s), 0); /* the refused run moved nothing */
    assert_int_equal(tl_session_destroy(s), TL_OK);
    teardown(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_release_twice),
        cmocka_unit_test(test_release_other_session),
        cmocka_unit_test(test_release_after_destroy),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_destroy_outstanding),
        cmocka_unit_test(test_check_counts_sets),
        cmocka_unit_test(test_options_size_zero),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
