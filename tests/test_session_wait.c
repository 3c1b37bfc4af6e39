/*
 * test_session_wait.c — acquires that wait for room (tl_session_acquire_wait):
 *   - one that does not fit while another thread holds the device waits, and
 *     gets its bytes once that thread releases;
 *   - one that needs more than the budget at once fails at once, whatever
 *     the timeout;
 *   - two threads each holding half of the device and each waiting for more:
 *     both time out with the bytes held named, and nothing is left held;
 *   - waiters are served in arrival order: a small request that came second
 *     does not take room that came free while the first one still waits for
 *     more, nor does a third that comes after the room came free.
 * Waiting is observed through the stats' waiter count and the order in which
 * threads finish, never through time. Expected bytes: the file's, as the
 * test wrote them.
 */
#include "testutil.h"

#include "st_writer.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UNET "model.diffusion_model."
#define N_LAYERS 8
#define LAYER (64ull << 10) /* one F32 [64, 256] weight per layer */

typedef struct fx {
    char *dir, *path;
    uint8_t *img;
    uint64_t data_off;
    tl_model *m;
    tl_device *sim;
    char simname[32];
    tl_plan *p;
    uint64_t budgets[2];
} fx;

static int counter;

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
    f->img = sw_build(t, N_LAYERS, NULL, true, &len);
    f->data_off = sw_data_offset(f->img);
    assert_true(sw_write_file(f->path, f->img, len));
    const char *paths[] = {f->path};
    assert_int_equal(tl_model_open(paths, 1, NULL, &f->m), TL_OK);
    snprintf(f->simname, sizeof f->simname, "wait%d_%d", (int)getpid(), ++counter);
    f->sim = tu_sim_add(f->simname, 64ull << 20);
    char be[64];
    snprintf(be, sizeof be, "diffusion=%s", f->simname);
    f->p = tu_plan_one_gpu(f->m, f->simname, 16ull << 20, be, false);
}

static void teardown(fx *f) {
    tl_plan_destroy(f->p);
    tl_device_unregister(f->sim);
    tl_device_release(f->sim);
    tl_model_close(f->m);
    tu_tmpdir_rm(f->dir);
    free(f->path);
    free(f->img);
}

static bool sync_copies; /* no_async: loads run as demand batches, not queued device copies */

/* A session whose device budget holds `layers` layers. */
static tl_session *session(fx *f, uint64_t layers) {
    tl_session_options o;
    tl_session_options_init(&o);
    o.no_async = sync_copies;
    f->budgets[0] = layers * LAYER;
    f->budgets[1] = 0;
    o.device_budgets = f->budgets;
    o.n_device_budgets = 2;
    tl_session *s = NULL;
    assert_int_equal(tl_session_create(f->m, f->p, &o, &s), TL_OK);
    return s;
}

static uint64_t waits(tl_session *s) {
    tl_session_stats st;
    assert_int_equal(tl_session_stats_get(s, &st, sizeof st), TL_OK);
    return st.acquire_waits;
}

/* Every byte of a set equals the file's (layers in order, one weight each). */
static bool bytes_ok(fx *f, tl_acquired *a, size_t first_layer) {
    unsigned char *got = malloc(LAYER);
    bool ok = true;
    for (size_t i = 0; i < tl_acquired_count(a) && ok; i++) {
        const tl_session_tensor *t = tl_acquired_tensor(a, i);
        ok = t->n_parts == 1 && t->parts[0].nbytes == LAYER &&
             tl_device_copy_from(t->parts[0].device, got, t->parts[0].dptr, LAYER) == TL_OK &&
             !memcmp(got, f->img + f->data_off + (first_layer + i) * LAYER, LAYER);
    }
    free(got);
    return ok;
}

typedef struct job {
    fx *f;
    tl_session *s;
    size_t lb, le;
    uint32_t timeout_ms;
    atomic_int phase; /* 1: in the call, 2: returned */
    atomic_bool let_go; /* release the set */
    atomic_int *order;  /* finishing order, shared */
    int rank;           /* 1 + how many finished their acquire before this one */
    tl_status st;
    char err[512];
    bool bytes;
} job;

static void *run_job(void *arg) {
    job *j = arg;
    tl_acquired *a = NULL;
    atomic_store(&j->phase, 1);
    j->st = tl_session_acquire_wait(j->s, TL_COMP_DIFFUSION, j->lb, j->le, false, j->timeout_ms, &a);
    if (j->st) snprintf(j->err, sizeof j->err, "%s", tl_last_error());
    if (j->order) j->rank = atomic_fetch_add(j->order, 1) + 1;
    if (!j->st) j->bytes = bytes_ok(j->f, a, j->lb);
    atomic_store(&j->phase, 2);
    if (!j->st) {
        while (!atomic_load(&j->let_go))
            sched_yield();
        tl_session_release(j->s, a);
    }
    return NULL;
}

/* Until j's acquire is the n-th to wait; it must not return instead. */
static void until_waiting(tl_session *s, uint64_t n, job *j) {
    while (waits(s) < n && atomic_load(&j->phase) != 2)
        sched_yield();
    if (waits(s) < n)
        fail_msg("the acquire returned instead of waiting: %s", j->st ? j->err : "it succeeded");
}

static void test_waits_for_release(void **state) {
    (void)state;
    fx f = {0};
    setup(&f);
    tl_session *s = session(&f, 3);
    tl_acquired *held;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 2, false, &held), TL_OK);
    /* at once: refused, as before */
    tl_acquired *no;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 2, 4, false, &no),
                     TL_ERR_DEVICE_OOM);
    job j = {&f, s, 2, 4, 600000, 0, false, NULL, 0, TL_OK, "", false};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_job, &j), 0);
    until_waiting(s, 1, &j);
    assert_int_equal(atomic_load(&j.phase), 1); /* waiting, not failed */
    assert_int_equal(tl_session_check(s), TL_OK);
    assert_int_equal(tl_session_release(s, held), TL_OK);
    while (atomic_load(&j.phase) != 2)
        sched_yield();
    if (j.st) fail_msg("the waiting acquire failed: %s", j.err);
    assert_true(j.bytes);
    atomic_store(&j.let_go, true);
    pthread_join(t, NULL);
    assert_int_equal(tl_session_check(s), TL_OK);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    teardown(&f);
}

static void test_never_fits(void **state) {
    (void)state;
    fx f = {0};
    setup(&f);
    tl_session *s = session(&f, 3);
    tl_acquired *a;
    /* 4 layers on a 3-layer budget: no release can help, so no wait (one would take 20 s) */
    assert_int_equal(tl_session_acquire_wait(s, TL_COMP_DIFFUSION, 0, 4, false, 20000, &a),
                     TL_ERR_DEVICE_OOM);
    assert_null(a);
    assert_non_null(strstr(tl_last_error(), "can never fit"));
    assert_non_null(strstr(tl_last_error(), "256.00 KiB")); /* what it needs */
    assert_non_null(strstr(tl_last_error(), "192.00 KiB")); /* the budget */
    assert_int_equal(waits(s), 0);
    assert_int_equal(tl_session_check(s), TL_OK);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    teardown(&f);
}

/* Two threads each hold half and wait for more: both run out of time; nothing stays held. */
typedef struct half {
    fx *f;
    tl_session *s;
    size_t hold, want;
    atomic_int *ready;
    tl_status st;
    char err[512];
} half;

static void *half_main(void *arg) {
    half *h = arg;
    tl_acquired *mine, *more = NULL;
    if (tl_session_acquire(h->s, TL_COMP_DIFFUSION, h->hold, h->hold + 2, false, &mine)) {
        h->st = TL_ERR_INTEGRITY;
        snprintf(h->err, sizeof h->err, "hold: %s", tl_last_error());
        return NULL;
    }
    atomic_fetch_add(h->ready, 1);
    while (atomic_load(h->ready) < 2) /* both hold their half before either asks for more */
        sched_yield();
    h->st = tl_session_acquire_wait(h->s, TL_COMP_DIFFUSION, h->want, h->want + 2, false, 300,
                                    &more);
    snprintf(h->err, sizeof h->err, "%s", tl_last_error());
    if (!h->st) tl_session_release(h->s, more);
    tl_session_release(h->s, mine);
    return NULL;
}

static void test_half_each_times_out(void **state) {
    (void)state;
    fx f = {0};
    setup(&f);
    tl_session *s = session(&f, 4);
    atomic_int ready = 0;
    half a = {&f, s, 0, 4, &ready, TL_OK, ""}, b = {&f, s, 2, 6, &ready, TL_OK, ""};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, half_main, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, half_main, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    /* the first to time out releases its half: the other may then fit. At least one times out. */
    int timed_out = 0;
    const half *hs[] = {&a, &b};
    for (int i = 0; i < 2; i++) {
        if (hs[i]->st == TL_OK) continue;
        if (hs[i]->st != TL_ERR_DEVICE_OOM) fail_msg("thread %d: %s", i, hs[i]->err);
        if (!strstr(hs[i]->err, "waited 300 ms") || !strstr(hs[i]->err, "held by"))
            fail_msg("thread %d: unclear error: %s", i, hs[i]->err);
        timed_out++;
    }
    assert_true(timed_out >= 1);
    tl_session_stats st;
    assert_int_equal(tl_session_stats_get(s, &st, sizeof st), TL_OK);
    assert_int_equal(st.acquire_timeouts, (uint64_t)timed_out);
    assert_int_equal(tl_session_check(s), TL_OK);
    /* nothing is left held: the whole budget is there again */
    tl_acquired *all;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 4, 8, false, &all), TL_OK);
    assert_true(bytes_ok(&f, all, 4));
    assert_int_equal(tl_session_release(s, all), TL_OK);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    teardown(&f);
}

/* First come, first served: a later, smaller request does not take the room of an earlier one. */
static void test_arrival_order(void **state) {
    (void)state;
    fx f = {0};
    setup(&f);
    for (int round = 0; round < 6; round++) {
        sync_copies = round % 2; /* both ways of loading */
        tl_session *s = session(&f, 2);
        tl_acquired *ha, *hb;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 1, false, &ha), TL_OK);
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 1, 2, false, &hb), TL_OK);
        atomic_int order = 0;
        job big = {&f, s, 2, 4, 600000, 0, false, &order, 0, TL_OK, "", false};
        job small = {&f, s, 4, 5, 600000, 0, false, &order, 0, TL_OK, "", false};
        pthread_t tb, ts;
        assert_int_equal(pthread_create(&tb, NULL, run_job, &big), 0);
        until_waiting(s, 1, &big);
        assert_int_equal(pthread_create(&ts, NULL, run_job, &small), 0);
        until_waiting(s, 2, &small);
        /*
         * One layer comes free: too little for the first in line, enough for
         * the second, which must not take it (however long it is given).
         */
        assert_int_equal(tl_session_release(s, ha), TL_OK);
        for (int i = 0; i < 2000; i++)
            sched_yield();
        assert_int_equal(atomic_load(&small.phase), 1);
        /* one that comes now, while two wait, joins the line rather than take the free layer */
        job late = {&f, s, 5, 6, 600000, 0, false, &order, 0, TL_OK, "", false};
        pthread_t tl;
        assert_int_equal(pthread_create(&tl, NULL, run_job, &late), 0);
        until_waiting(s, 3, &late);
        assert_int_equal(tl_session_release(s, hb), TL_OK);
        while (atomic_load(&big.phase) != 2)
            sched_yield();
        if (big.st) fail_msg("round %d: the first waiter failed: %s", round, big.err);
        assert_int_equal(big.rank, 1); /* served first */
        assert_true(big.bytes);
        assert_int_equal(atomic_load(&small.phase), 1); /* no room for it while big holds */
        atomic_store(&big.let_go, true);
        pthread_join(tb, NULL);
        while (atomic_load(&small.phase) != 2)
            sched_yield();
        if (small.st) fail_msg("round %d: the second waiter failed: %s", round, small.err);
        assert_true(small.rank >= 2);
        assert_true(small.bytes);
        /* small and late fit together (one layer each): both served once big let go */
        while (atomic_load(&late.phase) != 2)
            sched_yield();
        if (late.st) fail_msg("round %d: the third waiter failed: %s", round, late.err);
        assert_true(late.rank >= 2);
        assert_true(late.bytes);
        atomic_store(&small.let_go, true);
        atomic_store(&late.let_go, true);
        pthread_join(ts, NULL);
        pthread_join(tl, NULL);
        tl_session_stats stats;
        assert_int_equal(tl_session_stats_get(s, &stats, sizeof stats), TL_OK);
        assert_int_equal(stats.acquire_waits, 3);
        assert_int_equal(stats.acquire_timeouts, 0);
        assert_int_equal(tl_session_check(s), TL_OK);
        assert_int_equal(tl_session_destroy(s), TL_OK);
    }
    sync_copies = false;
    teardown(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waits_for_release),
        cmocka_unit_test(test_never_fits),
        cmocka_unit_test(test_half_each_times_out),
        cmocka_unit_test(test_arrival_order),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
