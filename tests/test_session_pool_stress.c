/*
 * test_session_pool_stress.c — two sessions (two models) sharing one sim
 * device, driven by 8 threads at once with random operations: acquire
 * (at once or waiting briefly), prefetch, release, evict, a session's budget
 * or the device's total changed, the event log copied, and a LoRA merge's
 * bracket (tl_session_update_begin, the tensor rewritten in the model's
 * copy-on-write mapping, tl_session_update_end). After every operation the
 * session it touched passes tl_session_check, and every byte of every set
 * acquired equals the file's, when acquired and again (one held set per
 * operation) while it stays held — whatever other sessions evict meanwhile;
 * tl_device_make_room is one of the operations, and the device's reclaim
 * callback checks both sessions when it is called, which it could not do
 * if the thread held a lock of theirs. At the end of each seed the device's count
 * equals the sessions' bytes and is within its total. Errors the operations
 * may answer under contention (no room, a tensor in use) are allowed; any
 * other fails the test.
 *
 * Three seeds of 10000 operations per thread: about 10 s on two shared
 * cores, 20 s under TSan, so ctest (and `make tsan`) run the full count.
 * TL_STRESS_OPS sets another count per thread (a quick look, or a longer
 * soak).
 */
#include "testutil.h"

#include "twomodel.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define L TM_LAYER
#define THREADS 8
#define SEEDS 3
#define HELD 2

typedef struct shared {
    tm_fx *f;
    atomic_long reclaims;
    tl_session *s[2];
    pthread_mutex_t merge_mu; /* one rewrite of the mapping at a time, as a LoRA set does */
    long ops;
    atomic_int failed;
    char why[512];
    pthread_mutex_t why_mu;
} shared;

typedef struct worker {
    shared *sh;
    uint64_t rng;
    uint64_t acquired, refused;
} worker;

static uint64_t rnd(worker *w) { /* xorshift64* */
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return w->rng * 0x2545F4914F6CDD1Dull;
}

static void fail_with(shared *sh, const char *fmt, const char *what, tl_status st) {
    pthread_mutex_lock(&sh->why_mu);
    if (!atomic_load(&sh->failed))
        snprintf(sh->why, sizeof sh->why, fmt, what, tl_status_name(st), tl_last_error());
    atomic_store(&sh->failed, 1);
    pthread_mutex_unlock(&sh->why_mu);
}

typedef struct held {
    tl_acquired *a;
    int model;
    size_t first_layer;
} held;

static void *work(void *arg) {
    worker *w = arg;
    shared *sh = w->sh;
    tm_fx *f = sh->f;
    held h[HELD] = {{NULL, 0, 0}, {NULL, 0, 0}};
    unsigned char *tmp = malloc(L);
    for (long op = 0; op < sh->ops && !atomic_load(&sh->failed); op++) {
        int i = (int)(rnd(w) % 2);
        tl_session *s = sh->s[i];
        size_t lb = (size_t)(rnd(w) % TM_LAYERS);
        size_t le = lb + 1 + (size_t)(rnd(w) % 2);
        if (le > TM_LAYERS) le = TM_LAYERS;
        unsigned what = (unsigned)(rnd(w) % 100);
        tl_status st = TL_OK;
        if (what < 35) { /* acquire */
            int slot = h[0].a ? h[1].a ? (int)(rnd(w) % HELD) : 1 : 0;
            if (h[slot].a) {
                st = tl_session_release(sh->s[h[slot].model], h[slot].a);
                h[slot].a = NULL;
                if (st) fail_with(sh, "%s: %s: %s", "release", st);
            }
            tl_acquired *a = NULL;
            uint32_t timeout = rnd(w) % 2 ? 5 : 0;
            st = tl_session_acquire_wait(s, TL_COMP_DIFFUSION, lb, le, false, timeout, &a);
            if (st == TL_OK) {
                w->acquired++;
                if (!tm_bytes_ok(f, i, a, lb)) fail_with(sh, "%s: %s: %s", "bytes differ", TL_OK);
                h[slot] = (held){a, i, lb};
            } else if (st == TL_ERR_DEVICE_OOM) {
                w->refused++;
            } else {
                fail_with(sh, "%s: %s: %s", "acquire", st);
            }
        } else if (what < 55) { /* release */
            int slot = (int)(rnd(w) % HELD);
            if (h[slot].a) {
                st = tl_session_release(sh->s[h[slot].model], h[slot].a);
                s = sh->s[h[slot].model];
                h[slot].a = NULL;
                if (st) fail_with(sh, "%s: %s: %s", "release", st);
            }
        } else if (what < 65) { /* prefetch */
            st = tl_session_prefetch(s, TL_COMP_DIFFUSION, lb, le, false);
            if (st) fail_with(sh, "%s: %s: %s", "prefetch", st);
        } else if (what < 72) { /* evict: one session's, or the device's for all */
            uint64_t freed;
            if (rnd(w) % 2)
                st = tl_session_evict(s, f->simname, (1 + rnd(w) % 4) * L, &freed);
            else
                st = tl_device_make_room(f->sim, (1 + rnd(w) % 12) * L, &freed);
            if (st && st != TL_ERR_DEVICE_OOM) fail_with(sh, "%s: %s: %s", "evict", st);
        } else if (what < 80) { /* budgets */
            if (rnd(w) % 2)
                st = tl_session_set_budget(s, f->simname, (2 + rnd(w) % 7) * L);
            else
                st = tl_device_set_budget(f->sim, rnd(w) % 4 ? (4 + rnd(w) % 9) * L : 0);
            if (st) fail_with(sh, "%s: %s: %s", "set budget", st);
        } else if (what < 85) { /* priority */
            st = tl_session_set_priority(s, (int)(rnd(w) % 3));
            if (st) fail_with(sh, "%s: %s: %s", "set priority", st);
        } else if (what < 92) { /* events */
            tl_session_event ev[32];
            tl_session_log log;
            size_t n =
                tl_session_events_copy(s, rnd(w) % 64, ev, 32, sizeof ev[0], &log, sizeof log);
            if (n > 32 || log.next < log.first || log.next - log.first > log.cap)
                fail_with(sh, "%s: %s: %s", "event log inconsistent", TL_OK);
        } else { /* a LoRA merge's bracket: the tensor rewritten in the mapping */
            const size_t *idx;
            tl_model_layer_tensors(f->m[i], TL_COMP_DIFFUSION, lb, &idx);
            size_t t = idx[0];
            st = tl_session_update_begin(s, &t, 1);
            if (st == TL_OK) {
                pthread_mutex_lock(&sh->merge_mu);
                unsigned char *p = tl_model_tensor_data_mut(f->m[i], t);
                memcpy(tmp, p, L); /* the merge's result here is the same bytes */
                memcpy(p, tmp, L);
                pthread_mutex_unlock(&sh->merge_mu);
                st = tl_session_update_end(s, &t, 1);
                if (st) fail_with(sh, "%s: %s: %s", "update end", st);
            } else if (st != TL_ERR_INVALID_ARG) { /* in use or loading: refused */
                fail_with(sh, "%s: %s: %s", "update begin", st);
            }
        }
        st = tl_session_check(s);
        if (st) fail_with(sh, "%s: %s: %s", "tl_session_check", st);
        const held *k = &h[op % HELD]; /* a held set keeps its bytes */
        if (k->a && !tm_bytes_ok(f, k->model, k->a, k->first_layer))
            fail_with(sh, "%s: %s: %s", "bytes of a held set changed", TL_OK);
    }
    for (int k = 0; k < HELD; k++)
        if (h[k].a) tl_session_release(sh->s[h[k].model], h[k].a);
    free(tmp);
    return NULL;
}

/* The reclaim callback: nothing of the engine's to drop, but both sessions checked. */
static uint64_t reclaim(void *user, tl_device *d, uint64_t bytes) {
    shared *sh = user;
    (void)d;
    (void)bytes;
    atomic_fetch_add(&sh->reclaims, 1);
    for (int i = 0; i < 2; i++) {
        tl_status st = tl_session_check(sh->s[i]);
        if (st) fail_with(sh, "%s: %s: %s", "tl_session_check in the reclaim callback", st);
    }
    return 0;
}

static long ops_per_thread(void) {
    const char *e = getenv("TL_STRESS_OPS");
    if (e && *e) return atol(e);
    return 10000;
}

static void run_seed(uint64_t seed) {
    tm_fx f;
    tm_setup(&f, 64ull << 20);
    shared sh = {&f, 0, {tm_session(&f, 0, 6 * L), tm_session(&f, 1, 6 * L)},
                 PTHREAD_MUTEX_INITIALIZER, ops_per_thread(), 0, "", PTHREAD_MUTEX_INITIALIZER};
    /* the first patch of each tensor happens here: the threads only rewrite patched bytes */
    for (int i = 0; i < 2; i++)
        for (size_t t = 0; t < tl_model_tensor_count(f.m[i]); t++)
            assert_non_null(tl_model_tensor_data_mut(f.m[i], t));
    assert_int_equal(tl_device_set_budget(f.sim, 10 * L), TL_OK);
    assert_int_equal(tl_device_set_reclaim_callback(f.sim, reclaim, &sh), TL_OK);
    worker w[THREADS];
    pthread_t th[THREADS];
    for (int k = 0; k < THREADS; k++) {
        w[k] = (worker){&sh, seed * 0x9E3779B97F4A7C15ull + (uint64_t)k * 7919 + 1, 0, 0};
        assert_int_equal(pthread_create(&th[k], NULL, work, &w[k]), 0);
    }
    uint64_t acquired = 0, refused = 0;
    for (int k = 0; k < THREADS; k++) {
        pthread_join(th[k], NULL);
        acquired += w[k].acquired;
        refused += w[k].refused;
    }
    if (atomic_load(&sh.failed)) fail_msg("seed %llu: %s", (unsigned long long)seed, sh.why);
    print_message("seed %llu: %ld ops x %d threads, %llu acquired, %llu refused for room, %ld "
                  "reclaim calls\n",
                  (unsigned long long)seed, sh.ops, THREADS, (unsigned long long)acquired,
                  (unsigned long long)refused, atomic_load(&sh.reclaims));
    assert_true(acquired > 0);
    uint64_t total, used;
    assert_int_equal(tl_device_budget(f.sim, &total, &used), TL_OK);
    assert_int_equal(used, tm_used(sh.s[0]) + tm_used(sh.s[1]));
    if (total) assert_true(used <= total);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(tl_session_check(sh.s[i]), TL_OK);
        assert_int_equal(tl_session_destroy(sh.s[i]), TL_OK);
    }
    assert_int_equal(tl_device_budget(f.sim, NULL, &used), TL_OK);
    assert_int_equal(used, 0);
    assert_int_equal(tl_device_set_budget(f.sim, 0), TL_OK);
    assert_int_equal(tl_device_set_reclaim_callback(f.sim, NULL, NULL), TL_OK);
    tm_teardown(&f);
}

static void test_stress(void **state) {
    (void)state;
    for (uint64_t seed = 1; seed <= SEEDS; seed++)
        run_seed(seed);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stress),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
