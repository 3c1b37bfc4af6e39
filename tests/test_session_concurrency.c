/*
 * test_session_concurrency.c — what a session shares with other threads:
 *   - the event log is copied out under the session's lock while other
 *     threads acquire (a bounded ring: copies always consecutive, never more
 *     than the bound, the count of dropped entries exact);
 *   - the bound, clearing, and a session without a log;
 *   - a LoRA merged and removed while another thread acquires the tensor it
 *     changes: every acquire sees the file's bytes or the fully merged ones,
 *     never a mix, and an acquire of another tensor is not held up.
 * Expected bytes: the file's, written by the test, and the merge computed
 * here in double from multiples of 1/8 (exact in F32).
 */
#include "testutil.h"

#include "st_writer.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define W0 "model.diffusion_model.input_blocks.0.0"
#define W1 "model.diffusion_model.input_blocks.1.0"
#define ROWS 512
#define COLS 1024
#define RANK 4
#define SMALL 256

typedef struct fx {
    char *dir, *model, *lora;
    float *w0;            /* the file's W0 */
    float *merged;        /* W0 + up . down, computed here */
    float *w1;            /* the file's W1 */
    tl_model *m;
    tl_device *sim;
    char simname[32];
    tl_plan *p;
} fx;

static int counter;

static double v8(uint64_t i, uint64_t salt) { /* a multiple of 1/8 in [-2, 2] */
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ (salt * 0xD1B54A32D192ED03ull);
    x ^= x >> 31;
    return (double)((int)(x % 33) - 16) / 8.0;
}

/* A safetensors file of F32 tensors, header written here. */
static void write_f32(const char *path, const char *const *names, const int64_t (*shape)[2],
                      const float *const *data, size_t n) {
    char hdr[4096];
    size_t o = (size_t)snprintf(hdr, sizeof hdr, "{");
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t nb = (uint64_t)shape[i][0] * (uint64_t)shape[i][1] * 4;
        o += (size_t)snprintf(hdr + o, sizeof hdr - o,
                              "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],"
                              "\"data_offsets\":[%llu,%llu]}",
                              i ? "," : "", names[i], (long long)shape[i][0],
                              (long long)shape[i][1], (unsigned long long)off,
                              (unsigned long long)(off + nb));
        off += nb;
    }
    snprintf(hdr + o, sizeof hdr - o, "}");
    unsigned char *buf = malloc(off);
    off = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t nb = (uint64_t)shape[i][0] * (uint64_t)shape[i][1] * 4;
        memcpy(buf + off, data[i], nb);
        off += nb;
    }
    size_t len;
    uint8_t *img = sw_build_raw(hdr, buf, off, true, &len);
    assert_true(sw_write_file(path, img, len));
    free(img);
    free(buf);
}

static void setup(fx *f, bool writable) {
    f->dir = tu_tmpdir();
    f->model = tu_path(f->dir, "m.safetensors");
    f->lora = tu_path(f->dir, "l.safetensors");
    f->w0 = malloc(ROWS * COLS * sizeof *f->w0);
    f->merged = malloc(ROWS * COLS * sizeof *f->merged);
    f->w1 = malloc(SMALL * SMALL * sizeof *f->w1);
    float *down = malloc(RANK * COLS * sizeof *down), *up = malloc(ROWS * RANK * sizeof *up);
    for (uint64_t i = 0; i < ROWS * COLS; i++)
        f->w0[i] = (float)v8(i, 1);
    for (uint64_t i = 0; i < SMALL * SMALL; i++)
        f->w1[i] = (float)v8(i, 2);
    for (uint64_t i = 0; i < RANK * COLS; i++)
        down[i] = (float)v8(i, 3);
    for (uint64_t i = 0; i < ROWS * RANK; i++)
        up[i] = (float)v8(i, 4);
    for (int o = 0; o < ROWS; o++) /* scale 1, no alpha: W + up . down */
        for (int k = 0; k < COLS; k++) {
            double d = 0;
            for (int r = 0; r < RANK; r++)
                d += (double)up[o * RANK + r] * (double)down[r * COLS + k];
            f->merged[o * COLS + k] = (float)((double)f->w0[o * COLS + k] + d);
        }
    const char *mn[] = {W0 ".weight", W1 ".weight"};
    const int64_t ms[][2] = {{ROWS, COLS}, {SMALL, SMALL}};
    const float *md[] = {f->w0, f->w1};
    write_f32(f->model, mn, ms, md, 2);
    const char *ln[] = {W0 ".lora_down.weight", W0 ".lora_up.weight"};
    const int64_t ls[][2] = {{RANK, COLS}, {ROWS, RANK}};
    const float *ld[] = {down, up};
    write_f32(f->lora, ln, ls, ld, 2);
    free(down);
    free(up);
    tl_model_options mo;
    tl_model_options_init(&mo);
    mo.writable = writable;
    const char *paths[] = {f->model};
    assert_int_equal(tl_model_open(paths, 1, &mo, &f->m), TL_OK);
    snprintf(f->simname, sizeof f->simname, "conc%d_%d", (int)getpid(), ++counter);
    f->sim = tu_sim_add(f->simname, 256ull << 20);
    char be[64];
    snprintf(be, sizeof be, "diffusion=%s", f->simname);
    f->p = tu_plan_one_gpu(f->m, f->simname, 64ull << 20, be, false);
}

static void teardown(fx *f) {
    tl_plan_destroy(f->p);
    tl_device_unregister(f->sim);
    tl_device_release(f->sim);
    tl_model_close(f->m);
    tu_tmpdir_rm(f->dir);
    free(f->model);
    free(f->lora);
    free(f->w0);
    free(f->merged);
    free(f->w1);
}

static tl_session *session(fx *f, size_t event_cap, bool no_events) {
    tl_session_options o;
    tl_session_options_init(&o);
    o.event_cap = event_cap;
    o.no_events = no_events;
    tl_session *s = NULL;
    assert_int_equal(tl_session_create(f->m, f->p, &o, &s), TL_OK);
    return s;
}

/* The device bytes of the single tensor of layer k of an acquired set. */
static void read_back(tl_acquired *a, void *out, uint64_t n) {
    assert_int_equal(tl_acquired_count(a), 1);
    const tl_session_tensor *t = tl_acquired_tensor(a, 0);
    assert_int_equal(t->n_parts, 1);
    assert_int_equal(t->parts[0].nbytes, n);
    assert_int_equal(t->parts[0].tier, TL_TIER_DEVICE);
    assert_int_equal(tl_device_copy_from(t->parts[0].device, out, t->parts[0].dptr, n), TL_OK);
}

/* --- the event log --- */

typedef struct worker {
    fx *f;
    tl_session *s;
    atomic_bool *stop;
    int rounds;
    uint64_t seen; /* entries read */
    char err[256];
} worker;

static void *acquirer(void *arg) {
    worker *w = arg;
    for (int i = 0; i < w->rounds && !w->err[0]; i++) {
        tl_acquired *a;
        if (tl_session_acquire(w->s, TL_COMP_DIFFUSION, (size_t)(i % 2), (size_t)(i % 2) + 1,
                               false, &a) ||
            tl_session_release(w->s, a)) {
            snprintf(w->err, sizeof w->err, "acquire: %s", tl_last_error());
            break;
        }
        uint64_t freed;
        if (i % 3 == 2) tl_session_evict_all(w->s, w->f->simname, &freed);
    }
    atomic_store(w->stop, true);
    return NULL;
}

/* Follow the log while another thread fills it: every copy consistent with its log state. */
static void *reader(void *arg) {
    worker *w = arg;
    tl_session_event buf[16];
    uint64_t from = 0;
    while (!atomic_load(w->stop) && !w->err[0]) {
        tl_session_log log;
        size_t n = tl_session_events_copy(w->s, from, buf, 16, sizeof *buf, &log, sizeof log);
        uint64_t start = from > log.first ? from : log.first;
        if (log.next - log.first > log.cap || log.cap != 32)
            snprintf(w->err, sizeof w->err, "log holds %llu entries, bound %zu",
                     (unsigned long long)(log.next - log.first), log.cap);
        else if (log.dropped != log.first)
            snprintf(w->err, sizeof w->err, "dropped %llu, oldest kept %llu",
                     (unsigned long long)log.dropped, (unsigned long long)log.first);
        else if (n != (log.next - start < 16 ? log.next - start : 16))
            snprintf(w->err, sizeof w->err, "copied %zu of %llu..%llu", n,
                     (unsigned long long)start, (unsigned long long)log.next);
        for (size_t i = 0; i < n && !w->err[0]; i++)
            if ((unsigned)buf[i].kind > TL_EVENT_RELEASE || buf[i].t < 0)
                snprintf(w->err, sizeof w->err, "entry %llu: kind %d",
                         (unsigned long long)(start + i), (int)buf[i].kind);
        w->seen += n;
        from = start + n;
    }
    return NULL;
}

static void test_events_copied_under_lock(void **state) {
    (void)state;
    fx f = {0};
    setup(&f, false);
    tl_session *s = session(&f, 32, false);
    atomic_bool stop = false;
    worker a = {&f, s, &stop, 400, 0, ""}, r = {&f, s, &stop, 0, 0, ""};
    pthread_t ta, tr;
    assert_int_equal(pthread_create(&tr, NULL, reader, &r), 0);
    assert_int_equal(pthread_create(&ta, NULL, acquirer, &a), 0);
    pthread_join(ta, NULL);
    pthread_join(tr, NULL);
    if (a.err[0]) fail_msg("%s", a.err);
    if (r.err[0]) fail_msg("%s", r.err);
    tl_session_log log;
    assert_int_equal(tl_session_events_copy(s, 0, NULL, 0, 0, &log, sizeof log), 0);
    assert_true(log.next > 400); /* 400 acquires logged at least */
    assert_int_equal(log.next - log.first, 32);
    assert_int_equal(log.dropped, log.next - 32);
    assert_int_equal(tl_session_check(s), TL_OK);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    teardown(&f);
}

/* The same operations with a bound and without: the bounded log is the other's tail. */
static void ops(fx *f, tl_session *s) {
    for (int i = 0; i < 10; i++) {
        tl_acquired *a;
        assert_int_equal(
            tl_session_acquire(s, TL_COMP_DIFFUSION, (size_t)(i % 2), (size_t)(i % 2) + 1, false, &a),
            TL_OK);
        assert_int_equal(tl_session_release(s, a), TL_OK);
        uint64_t freed;
        assert_int_equal(tl_session_evict_all(s, f->simname, &freed), TL_OK);
    }
}

static void test_events_bound_clear_off(void **state) {
    (void)state;
    fx f = {0};
    setup(&f, false);
    tl_session *all = session(&f, 0, false), *few = session(&f, 5, false),
               *none = session(&f, 0, true);
    ops(&f, all);
    ops(&f, few);
    ops(&f, none);
    tl_session_event ea[64], ef[64];
    tl_session_log la, lf, ln;
    size_t na = tl_session_events_copy(all, 0, ea, 64, sizeof *ea, &la, sizeof la);
    size_t nf = tl_session_events_copy(few, 0, ef, 64, sizeof *ef, &lf, sizeof lf);
    /* each round: acquire, load, drop */
    assert_int_equal(na, 30);
    assert_int_equal(la.first, 0);
    assert_int_equal(la.next, 30);
    assert_int_equal(la.dropped, 0);
    assert_int_equal(la.cap, 65536);
    assert_int_equal(nf, 5);
    assert_int_equal(lf.first, 25);
    assert_int_equal(lf.next, 30);
    assert_int_equal(lf.dropped, 25);
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(ef[i].kind, ea[25 + i].kind);
        assert_int_equal(ef[i].layer, ea[25 + i].layer);
        assert_int_equal(ef[i].bytes, ea[25 + i].bytes);
    }
    /* from inside the kept range, and a cap smaller than what is there */
    assert_int_equal(tl_session_events_copy(few, 27, ef, 2, sizeof *ef, &lf, sizeof lf), 2);
    assert_int_equal(ef[0].kind, ea[27].kind);
    assert_int_equal(ef[1].kind, ea[28].kind);
    assert_int_equal(tl_session_events_copy(few, 30, ef, 64, sizeof *ef, &lf, sizeof lf), 0);
    /* off: nothing kept, nothing counted */
    assert_int_equal(tl_session_events_copy(none, 0, ef, 64, sizeof *ef, &ln, sizeof ln), 0);
    assert_int_equal(ln.cap, 0);
    assert_int_equal(ln.next, 0);
    assert_int_equal(ln.dropped, 0);
    /* clear: the kept entries go, numbers go on */
    assert_int_equal(tl_session_events_clear(all), TL_OK);
    assert_int_equal(tl_session_events_copy(all, 0, ea, 64, sizeof *ea, &la, sizeof la), 0);
    assert_int_equal(la.first, 30);
    assert_int_equal(la.next, 30);
    ops(&f, all);
    assert_int_equal(tl_session_events_copy(all, 0, ea, 64, sizeof *ea, &la, sizeof la), 30);
    assert_int_equal(la.first, 30);
    assert_int_equal(la.next, 60);
    assert_int_equal(la.dropped, 0);
    assert_int_equal(ea[0].kind, TL_EVENT_LOAD); /* a round: load, acquire, drop */
    assert_int_equal(ea[1].kind, TL_EVENT_ACQUIRE);
    assert_int_equal(ea[2].kind, TL_EVENT_DROP);
    assert_int_equal(tl_session_destroy(all), TL_OK);
    assert_int_equal(tl_session_destroy(few), TL_OK);
    assert_int_equal(tl_session_destroy(none), TL_OK);
    teardown(&f);
}

/* --- a LoRA merged while another thread acquires --- */

typedef struct watcher {
    fx *f;
    tl_session *s;
    atomic_bool *stop;
    uint64_t before, after, mixed, other;
    char err[256];
} watcher;

static void *watch(void *arg) {
    watcher *w = arg;
    float *got = malloc(ROWS * COLS * sizeof *got);
    float *small = malloc(SMALL * SMALL * sizeof *small);
    while (!atomic_load(w->stop)) {
        tl_acquired *a;
        if (tl_session_acquire(w->s, TL_COMP_DIFFUSION, 0, 1, false, &a)) {
            snprintf(w->err, sizeof w->err, "acquire: %s", tl_last_error());
            break;
        }
        read_back(a, got, ROWS * COLS * sizeof *got);
        if (!memcmp(got, w->f->w0, ROWS * COLS * sizeof *got))
            w->before++;
        else if (!memcmp(got, w->f->merged, ROWS * COLS * sizeof *got))
            w->after++;
        else
            w->mixed++;
        tl_session_release(w->s, a);
        /* the other layer: never busy, never changed */
        if (tl_session_acquire(w->s, TL_COMP_DIFFUSION, 1, 2, false, &a)) {
            snprintf(w->err, sizeof w->err, "acquire: %s", tl_last_error());
            break;
        }
        read_back(a, small, SMALL * SMALL * sizeof *small);
        if (memcmp(small, w->f->w1, SMALL * SMALL * sizeof *small)) w->other++;
        tl_session_release(w->s, a);
    }
    free(got);
    free(small);
    return NULL;
}

static void test_lora_merge_vs_acquire(void **state) {
    (void)state;
    fx f = {0};
    setup(&f, true);
    tl_session *s = session(&f, 0, true);
    tl_lora *l;
    assert_int_equal(tl_lora_open(f.lora, &l), TL_OK);
    tl_lora_set *set;
    assert_int_equal(tl_lora_set_create(f.m, s, &set), TL_OK);
    atomic_bool stop = false;
    watcher w = {&f, s, &stop, 0, 0, 0, 0, ""};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, watch, &w), 0);
    uint64_t refused = 0;
    for (int round = 0; round < 8; round++) {
        tl_status st;
        /* refused while the other thread holds the tensor: nothing changed, try again */
        while ((st = tl_lora_set_add(set, l, 1.0f, NULL, 0)) == TL_ERR_INVALID_ARG) {
            refused++;
            sched_yield();
        }
        if (st) fail_msg("add: %s", tl_last_error());
        while ((st = tl_lora_set_remove(set, l)) == TL_ERR_INVALID_ARG) {
            refused++;
            sched_yield();
        }
        if (st) fail_msg("remove: %s", tl_last_error());
    }
    atomic_store(&stop, true);
    pthread_join(t, NULL);
    if (w.err[0]) fail_msg("%s", w.err);
    printf("lora vs acquire: %llu file, %llu merged, %llu mixed, %llu refused\n",
           (unsigned long long)w.before, (unsigned long long)w.after,
           (unsigned long long)w.mixed, (unsigned long long)refused);
    assert_int_equal(w.mixed, 0);
    assert_int_equal(w.other, 0);
    /* removed last: the file's bytes again */
    tl_acquired *a;
    float *got = malloc(ROWS * COLS * sizeof *got);
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 1, false, &a), TL_OK);
    read_back(a, got, ROWS * COLS * sizeof *got);
    assert_memory_equal(got, f.w0, ROWS * COLS * sizeof *got);
    assert_int_equal(tl_session_release(s, a), TL_OK);
    /* added: the merged bytes, exactly */
    assert_int_equal(tl_lora_set_add(set, l, 1.0f, NULL, 0), TL_OK);
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, 1, false, &a), TL_OK);
    read_back(a, got, ROWS * COLS * sizeof *got);
    assert_memory_equal(got, f.merged, ROWS * COLS * sizeof *got);
    /* held: an update of it is refused, and changes nothing */
    size_t w0 = tl_model_find(f.m, W0 ".weight");
    assert_int_equal(tl_session_update_begin(s, &w0, 1), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_session_update_end(s, &w0, 1), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_session_release(s, a), TL_OK);
    free(got);
    assert_int_equal(tl_session_check(s), TL_OK);
    tl_lora_set_destroy(set);
    tl_lora_close(l);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    teardown(&f);
}

/* A busy tensor: acquire waits for the end of the update, ready says no, prefetch skips it. */
typedef struct waiter {
    tl_session *s;
    atomic_int phase; /* 1: acquiring, 2: acquired */
    tl_status st;
} waiter;

static void *wait_acquire(void *arg) {
    waiter *w = arg;
    tl_acquired *a = NULL;
    atomic_store(&w->phase, 1);
    w->st = tl_session_acquire(w->s, TL_COMP_DIFFUSION, 0, 1, false, &a);
    atomic_store(&w->phase, 2);
    if (!w->st) w->st = tl_session_release(w->s, a);
    return NULL;
}

static void test_busy_waits(void **state) {
    (void)state;
    fx f = {0};
    setup(&f, false);
    tl_session *s = session(&f, 0, false);
    size_t w0 = tl_model_find(f.m, W0 ".weight");
    assert_int_equal(tl_session_update_begin(s, &w0, 1), TL_OK);
    bool ready = true;
    assert_int_equal(tl_session_prefetch(s, TL_COMP_DIFFUSION, 0, 2, false), TL_OK);
    assert_int_equal(tl_session_ready(s, TL_COMP_DIFFUSION, 0, 1, false, &ready), TL_OK);
    assert_false(ready);
    waiter w = {s, 0, TL_OK};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wait_acquire, &w), 0);
    while (atomic_load(&w.phase) == 0)
        sched_yield();
    /* the other layer is not held up while the waiter waits */
    tl_acquired *a;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 1, 2, false, &a), TL_OK);
    assert_int_equal(tl_session_release(s, a), TL_OK);
    for (int i = 0; i < 100; i++)
        sched_yield();
    /* still waiting: the update has not ended (no time asserted, only the order) */
    assert_int_equal(atomic_load(&w.phase), 1);
    tl_session_stats st;
    assert_int_equal(tl_session_stats_get(s, &st, sizeof st), TL_OK);
    assert_int_equal(st.devices[0].used, (uint64_t)SMALL * SMALL * 4); /* W0 was never loaded */
    assert_int_equal(tl_session_update_end(s, &w0, 1), TL_OK);
    pthread_join(t, NULL);
    assert_int_equal(w.st, TL_OK);
    assert_int_equal(tl_session_check(s), TL_OK);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    /* on the host (the mapping itself) a busy tensor is not ready either */
    tl_plan_summary sum;
    assert_int_equal(tl_plan_summary_from_model(f.m, TL_DTYPE_INVALID, &sum), TL_OK);
    tl_plan_device cpu;
    memset(&cpu, 0, sizeof cpu);
    snprintf(cpu.name, sizeof cpu.name, "cpu");
    tl_plan_options po;
    tl_plan_options_init(&po);
    po.backend = "*=cpu";
    tl_plan *hp;
    assert_int_equal(tl_plan_create(&sum, &cpu, 1, &po, &hp), TL_OK);
    tl_plan_summary_clear(&sum);
    assert_int_equal(tl_session_create(f.m, hp, NULL, &s), TL_OK);
    assert_int_equal(tl_session_ready(s, TL_COMP_DIFFUSION, 0, 1, false, &ready), TL_OK);
    assert_true(ready);
    assert_int_equal(tl_session_update_begin(s, &w0, 1), TL_OK);
    assert_int_equal(tl_session_ready(s, TL_COMP_DIFFUSION, 0, 1, false, &ready), TL_OK);
    assert_false(ready);
    assert_int_equal(tl_session_update_end(s, &w0, 1), TL_OK);
    assert_int_equal(tl_session_ready(s, TL_COMP_DIFFUSION, 0, 1, false, &ready), TL_OK);
    assert_true(ready);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    tl_plan_destroy(hp);
    teardown(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_events_copied_under_lock),
        cmocka_unit_test(test_events_bound_clear_off),
        cmocka_unit_test(test_lora_merge_vs_acquire),
        cmocka_unit_test(test_busy_waits),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
