/*
 * test_session_cancel.c — progress and cancel of session acquires
 * (tl_session_options.progress, tl_session_cancel):
 *   - an acquire that loads reports bytes done of the bytes it moves, ending
 *     at done == total (the layers' sizes as the test wrote them); one that
 *     finds everything resident reports nothing;
 *   - the callback returning false cancels: TL_ERR_CANCELLED, nothing
 *     referenced, the device's memory back to what it was, the same range
 *     acquirable afterwards with the file's bytes;
 *   - tl_session_cancel from another thread ends an acquire waiting for room
 *     (TL_ERR_CANCELLED, not a timeout) and takes it out of the line, so
 *     later waiting acquires are served; it does not touch calls that begin
 *     after it;
 *   - prefetches in flight when it is called stop or finish, and either way
 *     the session's bookkeeping stays consistent (tl_session_check) and the
 *     bytes acquired next are the file's;
 *   - mid-load, on a test device whose copies wait at a gate: reports come
 *     while bytes are still to come, a cancel (callback or another thread)
 *     fails the acquire with the memory back, and once tl_session_cancel
 *     has returned no further copy starts.
 * The first four in both ways of loading (queued device copies, demand
 * batches).
 */
#include "testutil.h"

#include "st_writer.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

/*
 * A device whose copies into it wait at a gate the test opens: loads are
 * seen in progress (a copy arrived, not finished) for as long as the test
 * needs, with no timing involved. Memory is host memory behind handles.
 */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
    int arrived; /* copies that reached the gate */
} gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, true, 0};

static bool use_gate; /* the next fixture's device is a gate device, not a sim */

static void gate_set(bool open) {
    pthread_mutex_lock(&gate.mu);
    gate.open = open;
    if (!open) gate.arrived = 0;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
}

static int gate_arrived(void) {
    pthread_mutex_lock(&gate.mu);
    int n = gate.arrived;
    pthread_mutex_unlock(&gate.mu);
    return n;
}

static char gate_name[32];

static tl_status g_describe(void *self, tl_device_info *out) {
    (void)self;
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", gate_name);
    snprintf(out->desc, sizeof out->desc, "test device with gated copies");
    out->kind = TL_DEVICE_OTHER;
    out->total = out->free = 64ull << 20;
    out->alignment = 64;
    return TL_OK;
}

static tl_status g_alloc(void *self, uint64_t size, tl_devptr *out) {
    (void)self;
    void *p = malloc(size);
    if (!p) return tl_set_error(TL_ERR_DEVICE_OOM, "gate: out of memory");
    *out = (tl_devptr)(uintptr_t)p;
    return TL_OK;
}

static tl_status g_dealloc(void *self, tl_devptr p) {
    (void)self;
    free((void *)(uintptr_t)p);
    return TL_OK;
}

static tl_status g_copy_to(void *self, tl_devptr dst, const void *src, uint64_t n) {
    (void)self;
    pthread_mutex_lock(&gate.mu);
    gate.arrived++;
    pthread_cond_broadcast(&gate.cv);
    while (!gate.open)
        pthread_cond_wait(&gate.cv, &gate.mu);
    pthread_mutex_unlock(&gate.mu);
    memcpy((void *)(uintptr_t)dst, src, n);
    return TL_OK;
}

static tl_status g_copy_from(void *self, void *dst, tl_devptr src, uint64_t n) {
    (void)self;
    memcpy(dst, (const void *)(uintptr_t)src, n);
    return TL_OK;
}

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
    snprintf(f->simname, sizeof f->simname, "cancel%d_%d", (int)getpid(), ++counter);
    if (use_gate) {
        static tl_device_ops ops;
        tl_device_ops_init(&ops);
        ops.describe = g_describe;
        ops.alloc = g_alloc;
        ops.dealloc = g_dealloc;
        ops.copy_to = g_copy_to;
        ops.copy_from = g_copy_from;
        snprintf(gate_name, sizeof gate_name, "%s", f->simname);
        assert_int_equal(tl_device_create(&ops, NULL, &f->sim), TL_OK);
        assert_int_equal(tl_device_register(f->sim), TL_OK);
    } else {
        f->sim = tu_sim_add(f->simname, 64ull << 20);
    }
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
typedef struct prog {
    atomic_int calls;
    uint64_t last_done, total;
    bool monotonic, same_total;
    atomic_int stop_at; /* return false on this call (1: the first; 0: never) */
} prog;

static bool on_progress(void *user, uint64_t done, uint64_t total) {
    prog *p = user;
    int call = atomic_fetch_add(&p->calls, 1) + 1;
    if (call > 1) {
        p->monotonic &= done >= p->last_done;
        p->same_total &= total == p->total;
    }
    p->last_done = done;
    p->total = total;
    return call != atomic_load(&p->stop_at);
}

static prog *progress; /* the next session's progress record (NULL: no callback) */

static tl_session *session(fx *f, uint64_t layers) {
    tl_session_options o;
    tl_session_options_init(&o);
    o.no_async = sync_copies;
    if (progress) {
        o.progress = on_progress;
        o.progress_user = progress;
    }
    f->budgets[0] = layers * LAYER;
    f->budgets[1] = 0;
    o.device_budgets = f->budgets;
    o.n_device_budgets = 2;
    tl_session *s = NULL;
    assert_int_equal(tl_session_create(f->m, f->p, &o, &s), TL_OK);
    return s;
}

static uint64_t used(tl_session *s) {
    tl_session_stats st;
    assert_int_equal(tl_session_stats_get(s, &st, sizeof st), TL_OK);
    return st.devices[0].used;
}

static tl_session_stats stats(tl_session *s) {
    tl_session_stats st;
    assert_int_equal(tl_session_stats_get(s, &st, sizeof st), TL_OK);
    return st;
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

static void test_progress_reported(void **state) {
    (void)state;
    fx f = {0};
    setup(&f);
    for (int round = 0; round < 2; round++) {
        sync_copies = round;
        prog p = {0, 0, 0, true, true, 0};
        progress = &p;
        tl_session *s = session(&f, N_LAYERS);
        progress = NULL;
        tl_acquired *a;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 4, false, &a), TL_OK);
        assert_true(p.calls >= 1);
        assert_true(p.monotonic);
        assert_true(p.same_total);
        assert_int_equal(p.total, 4 * LAYER);
        assert_int_equal(p.last_done, 4 * LAYER);
        assert_true(bytes_ok(&f, a, 0));
        assert_int_equal(tl_session_release(s, a), TL_OK);
        /* all resident: nothing moves, nothing reported */
        int before = p.calls;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 4, false, &a), TL_OK);
        assert_int_equal(p.calls, before);
        assert_int_equal(tl_session_release(s, a), TL_OK);
        /* half resident: only the other half is reported */
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 2, 6, false, &a), TL_OK);
        assert_int_equal(p.total, 2 * LAYER);
        assert_int_equal(p.last_done, 2 * LAYER);
        assert_true(bytes_ok(&f, a, 2));
        assert_int_equal(tl_session_release(s, a), TL_OK);
        assert_int_equal(tl_session_check(s), TL_OK);
        assert_int_equal(tl_session_destroy(s), TL_OK);
    }
    sync_copies = false;
    teardown(&f);
}

static void test_cancel_from_callback(void **state) {
    (void)state;
    fx f = {0};
    setup(&f);
    for (int round = 0; round < 2; round++) {
        sync_copies = round;
        prog p = {0, 0, 0, true, true, 1};
        progress = &p;
        tl_session *s = session(&f, N_LAYERS);
        progress = NULL;
        tl_acquired *keep, *a = (tl_acquired *)&p;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 1, false, &keep),
                         TL_ERR_CANCELLED); /* the first call stops it */
        p.stop_at = 0;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 1, false, &keep), TL_OK);
        assert_int_equal(used(s), LAYER);
        p.calls = 0;
        p.stop_at = 1;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 4, false, &a),
                         TL_ERR_CANCELLED);
        assert_null(a);
        assert_non_null(strstr(tl_last_error(), "progress callback"));
        assert_int_equal(p.calls, 1);
        /* nothing referenced, the three layers it loaded returned; the held one stays */
        assert_int_equal(used(s), LAYER);
        assert_int_equal(tl_session_check(s), TL_OK);
        assert_int_equal(stats(s).acquire_cancels, 2);
        /* the same range afterwards: the file's bytes */
        p.stop_at = 0;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 4, false, &a), TL_OK);
        assert_true(bytes_ok(&f, a, 0));
        assert_int_equal(used(s), 4 * LAYER);
        assert_int_equal(tl_session_release(s, a), TL_OK);
        assert_int_equal(tl_session_release(s, keep), TL_OK);
        assert_int_equal(tl_session_check(s), TL_OK);
        assert_int_equal(tl_session_destroy(s), TL_OK);
    }
    sync_copies = false;
    teardown(&f);
}

typedef struct job {
    tl_session *s;
    size_t lb, le;
    uint32_t timeout_ms;
    atomic_int phase; /* 1: in the call, 2: returned */
    tl_status st;
    tl_acquired *a;
    char err[512];
} job;

static void *run_job(void *arg) {
    job *j = arg;
    atomic_store(&j->phase, 1);
    j->st = tl_session_acquire_wait(j->s, TL_COMP_DIFFUSION, j->lb, j->le, false, j->timeout_ms,
                                    &j->a);
    if (j->st) snprintf(j->err, sizeof j->err, "%s", tl_last_error());
    atomic_store(&j->phase, 2);
    return NULL;
}

static void test_cancel_waiting(void **state) {
    (void)state;
    fx f = {0};
    setup(&f);
    for (int round = 0; round < 2; round++) {
        sync_copies = round;
        tl_session *s = session(&f, 2);
        tl_acquired *held;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 2, false, &held), TL_OK);
        job j = {s, 2, 4, 10000, 0, TL_OK, NULL, ""}; /* not cancelled: fails in 10 s */
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, run_job, &j), 0);
        while (stats(s).acquire_waits < 1 && atomic_load(&j.phase) != 2)
            sched_yield();
        if (atomic_load(&j.phase) == 2) fail_msg("the acquire did not wait: %s", j.err);
        assert_int_equal(tl_session_cancel(s), TL_OK);
        pthread_join(t, NULL);
        assert_int_equal(j.st, TL_ERR_CANCELLED);
        assert_null(j.a);
        assert_non_null(strstr(j.err, "tl_session_cancel"));
        tl_session_stats st = stats(s);
        assert_int_equal(st.acquire_timeouts, 0);
        assert_int_equal(st.acquire_cancels, 1);
        assert_int_equal(tl_session_check(s), TL_OK);
        /*
         * It left the line: once the room is free, the next waiting acquire
         * goes at once (behind a waiter left in the line it would wait its
         * whole timeout and fail).
         */
        assert_int_equal(tl_session_release(s, held), TL_OK);
        tl_acquired *a;
        assert_int_equal(tl_session_acquire_wait(s, TL_COMP_DIFFUSION, 2, 4, false, 2000, &a),
                         TL_OK);
        assert_true(bytes_ok(&f, a, 2));
        assert_int_equal(stats(s).acquire_waits, 1);
        assert_int_equal(tl_session_release(s, a), TL_OK);
        /* a cancel touches only what is in flight */
        assert_int_equal(tl_session_cancel(s), TL_OK);
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 4, 6, false, &a), TL_OK);
        assert_true(bytes_ok(&f, a, 4));
        assert_int_equal(tl_session_release(s, a), TL_OK);
        assert_int_equal(tl_session_check(s), TL_OK);
        assert_int_equal(tl_session_destroy(s), TL_OK);
    }
    sync_copies = false;
    teardown(&f);
}

static void test_cancel_prefetch(void **state) {
    (void)state;
    fx f = {0};
    setup(&f);
    for (int round = 0; round < 4; round++) {
        sync_copies = round % 2;
        tl_session *s = session(&f, N_LAYERS);
        assert_int_equal(tl_session_prefetch(s, TL_COMP_DIFFUSION, 0, N_LAYERS, false), TL_OK);
        assert_int_equal(tl_session_cancel(s), TL_OK);
        /* stopped or finished: either way consistent, and the device holds whole layers */
        assert_int_equal(tl_session_check(s), TL_OK);
        tl_acquired *a;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, N_LAYERS, false, &a), TL_OK);
        assert_true(bytes_ok(&f, a, 0));
        assert_int_equal(used(s), N_LAYERS * LAYER);
        assert_int_equal(tl_session_release(s, a), TL_OK);
        assert_int_equal(tl_session_check(s), TL_OK);
        assert_int_equal(tl_session_destroy(s), TL_OK);
    }
    sync_copies = false;
    assert_int_equal(tl_session_cancel(NULL), TL_ERR_INVALID_ARG);
    teardown(&f);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

/* The acquire of a gated load, on its own thread. */
typedef struct gated {
    tl_session *s;
    atomic_int phase;
    tl_status st;
    tl_acquired *a;
    char err[512];
} gated;

static void *gated_main(void *arg) {
    gated *g = arg;
    atomic_store(&g->phase, 1);
    g->st = tl_session_acquire(g->s, TL_COMP_DIFFUSION, 0, N_LAYERS, false, &g->a);
    if (g->st) snprintf(g->err, sizeof g->err, "%s", tl_last_error());
    atomic_store(&g->phase, 2);
    return NULL;
}

/*
 * Loads seen in progress: reports come while copies wait at the gate
 * (done < total), and a cancel then — from the callback or from another
 * thread — fails the acquire with TL_ERR_CANCELLED with the device's memory
 * all back; after tl_session_cancel returns, no further copy starts.
 */
static void test_cancel_mid_load(void **state) {
    (void)state;
    for (int by_callback = 0; by_callback < 2; by_callback++) {
        fx f = {0};
        use_gate = true;
        setup(&f);
        use_gate = false;
        prog p = {0, 0, 0, true, true, 0};
        progress = &p;
        tl_session *s = session(&f, N_LAYERS);
        progress = NULL;
        gate_set(false);
        gated g = {s, 0, TL_OK, NULL, ""};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, gated_main, &g), 0);
        while (gate_arrived() < 1)
            sched_yield();
        /* a copy waits at the gate: the acquiring thread reports bytes still to come */
        double give_up = now_s() + 10; /* a report is due every 50 ms: 10 s means none comes */
        while (atomic_load(&p.calls) < 1 && now_s() < give_up)
            sched_yield();
        if (atomic_load(&p.calls) < 1) {
            gate_set(true);
            pthread_join(t, NULL);
            fail_msg("no progress report while a copy waited at the gate for 10 s");
        }
        if (by_callback)
            atomic_store(&p.stop_at, atomic_load(&p.calls) + 1); /* the next report stops it */
        else
            assert_int_equal(tl_session_cancel(s), TL_OK);
        while (by_callback && atomic_load(&p.calls) < atomic_load(&p.stop_at))
            sched_yield();
        int arrived = gate_arrived();
        gate_set(true);
        pthread_join(t, NULL);
        assert_int_equal(g.st, TL_ERR_CANCELLED);
        assert_null(g.a);
        assert_non_null(strstr(g.err, by_callback ? "progress callback" : "tl_session_cancel"));
        assert_true(p.last_done < p.total); /* every report came while loading */
        assert_int_equal(p.total, N_LAYERS * LAYER);
        assert_true(arrived < N_LAYERS);
        if (!by_callback) /* no chunk handed out once tl_session_cancel returned */
            assert_int_equal(gate_arrived(), arrived);
        assert_int_equal(used(s), 0);
        assert_int_equal(stats(s).acquire_cancels, 1);
        assert_int_equal(tl_session_check(s), TL_OK);
        /* the same range afterwards, the gate open: the file's bytes */
        p.stop_at = 0;
        tl_acquired *a;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, N_LAYERS, false, &a), TL_OK);
        assert_true(bytes_ok(&f, a, 0));
        assert_int_equal(tl_session_release(s, a), TL_OK);
        assert_int_equal(tl_session_check(s), TL_OK);
        assert_int_equal(tl_session_destroy(s), TL_OK);
        teardown(&f);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_progress_reported),
        cmocka_unit_test(test_cancel_from_callback),
        cmocka_unit_test(test_cancel_waiting),
        cmocka_unit_test(test_cancel_prefetch),
        cmocka_unit_test(test_cancel_mid_load),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
