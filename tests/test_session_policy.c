/*
 * test_session_policy.c — the residency decisions a session makes, each
 * against an expectation from outside the code under test:
 *   - LRU eviction: the units dropped, in order, against a hand-written list;
 *   - the offline optimum and a scheduled session's moved bytes against an
 *     exhaustive search over every eviction choice, on small schedules;
 *   - an acquire waits for a prefetch still copying into its range (the
 *     copy held at a gated device, helpers/gatedev.h);
 *   - release gives back every row block of row-split tensors (they become
 *     evictable);
 *   - LRU with a streamed plan: streamed layers go before the resident prefix;
 *   - a prefetch never evicts what the schedule needs before the layer it loads;
 *   - spills that reuse a freed extent in the middle of the spill file, every
 *     spilled byte read back; the spill file's tail given back when freed;
 *   - a learned schedule (and a declared loop) against the offline optimum of
 *     the run as it went, with steps that skip layers, and with sets of tensors
 *     that cut layers;
 *   - groups of tensors as schedule steps: the optimum and a scheduled session
 *     against an exhaustive search; their declaration and refusals;
 *   - acquires and prefetches of sets of tensors.
 * Expected bytes are the test's own image of the file (what it wrote), never
 * the library's mapping; tl_session_check runs after every operation.
 */
#include "testutil.h"

#include "gatedev.h"
#include "os/fault.h"
#include "st_writer.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define UNET "model.diffusion_model."
#define KIB (1ull << 10)

/* --- a model written by the test, and its bytes --- */

typedef struct fx {
    char *dir, *path;
    uint8_t *img;
    size_t img_len;
    sw_tensor *t;
    size_t n_t;
    uint64_t *off; /* per test tensor: its bytes in img */
    uint64_t *len;
    tl_model *m;
    char names[64][96];
    uint64_t budgets[2]; /* the sessions' device budget overrides (they keep the pointer) */
} fx;

static void add_t(fx *f, const char *name, uint32_t n_dims, int64_t d0, int64_t d1) {
    assert_true(f->n_t < 64);
    snprintf(f->names[f->n_t], sizeof f->names[0], "%s", name);
    f->t = realloc(f->t, (f->n_t + 1) * sizeof *f->t);
    f->t[f->n_t] = (sw_tensor){f->names[f->n_t], "F32", n_dims, {d0, d1}};
    f->n_t++;
}

/* Write the tensors added so far and open the file. */
static void open_model(fx *f) {
    f->dir = tu_tmpdir();
    f->path = tu_path(f->dir, "m.safetensors");
    f->img = sw_build(f->t, f->n_t, NULL, true, &f->img_len);
    assert_true(sw_write_file(f->path, f->img, f->img_len));
    f->off = calloc(f->n_t, sizeof *f->off);
    f->len = calloc(f->n_t, sizeof *f->len);
    uint64_t at = sw_data_offset(f->img);
    for (size_t i = 0; i < f->n_t; i++) {
        uint64_t n = 4;
        for (uint32_t d = 0; d < f->t[i].n_dims; d++)
            n *= (uint64_t)f->t[i].shape[d];
        f->off[i] = at;
        f->len[i] = n;
        at += n;
    }
    assert_int_equal(at, f->img_len);
    const char *paths[] = {f->path};
    assert_int_equal(tl_model_open(paths, 1, NULL, &f->m), TL_OK);
}

static void close_model(fx *f) {
    tl_model_close(f->m);
    tu_tmpdir_rm(f->dir);
    free(f->path);
    free(f->img);
    free(f->t);
    free(f->off);
    free(f->len);
}

/* The test's own index of a catalog tensor (by name). */
static size_t mine(const fx *f, const tl_tensor_info *ti) {
    for (size_t i = 0; i < f->n_t; i++)
        if (!strcmp(f->names[i], ti->name)) return i;
    fail_msg("tensor %s is not one the test wrote", ti->name);
    return 0;
}

/* Layers of w (64 KiB) and, with bias, b (32 KiB): "input_blocks.K.0.weight/bias". */
static void layers_model(fx *f, int n_layers, bool bias) {
    char name[96];
    for (int k = 0; k < n_layers; k++) {
        snprintf(name, sizeof name, UNET "input_blocks.%d.0.weight", k);
        add_t(f, name, 2, 64, 256);
        if (bias) {
            snprintf(name, sizeof name, UNET "input_blocks.%d.0.bias", k);
            add_t(f, name, 1, 8192, 0);
        }
    }
    open_model(f);
}

/* Expected bytes per test tensor: NULL = the file's (img). */
typedef struct shadow {
    unsigned char *bytes[64];
} shadow;

static void check_acquired(const fx *f, const shadow *sh, tl_acquired *a) {
    assert_true(tl_acquired_count(a) > 0);
    for (size_t i = 0; i < tl_acquired_count(a); i++) {
        const tl_session_tensor *t = tl_acquired_tensor(a, i);
        size_t k = mine(f, t->info);
        const unsigned char *want = sh && sh->bytes[k] ? sh->bytes[k] : f->img + f->off[k];
        uint64_t covered = 0;
        for (uint32_t q = 0; q < t->n_parts; q++) {
            const tl_session_part *p = &t->parts[q];
            unsigned char *got = malloc(p->nbytes ? p->nbytes : 1);
            if (p->tier == TL_TIER_DEVICE)
                assert_int_equal(tl_device_copy_from(p->device, got, p->dptr, p->nbytes), TL_OK);
            else
                memcpy(got, p->host, p->nbytes);
            if (memcmp(got, want + p->offset, p->nbytes))
                fail_msg("tensor %s part %u: bytes differ (tier %s)", t->info->name, q,
                         tl_tier_name(p->tier));
            free(got);
            covered += p->nbytes;
        }
        assert_int_equal(covered, f->len[k]);
    }
}

/* A plan over GPUs gpus (budget bytes each) and the host, nothing reserved; backend NULL: auto-fit.
 */
static tl_plan *plan_on(fx *f, const char *const *gpus, size_t n_gpus, const char *backend,
                        uint64_t budget) {
    tl_plan_summary sum;
    assert_int_equal(tl_plan_summary_from_model(f->m, TL_DTYPE_INVALID, &sum), TL_OK);
    tl_plan_device devs[3];
    memset(devs, 0, sizeof devs);
    for (size_t i = 0; i < n_gpus; i++) {
        snprintf(devs[i].name, sizeof devs[i].name, "%s", gpus[i]);
        devs[i].is_gpu = true;
        devs[i].total = devs[i].free = budget;
    }
    snprintf(devs[n_gpus].name, sizeof devs[0].name, "cpu");
    tl_plan_options o;
    tl_plan_options_init(&o);
    o.backend = backend;
    o.reserve = "diffusion=0,cond=0,vae=0,controlnet=0";
    tl_plan *p = NULL;
    assert_int_equal(tl_plan_create(&sum, devs, n_gpus + 1, &o, &p), TL_OK);
    tl_plan_summary_clear(&sum);
    if (!tl_plan_feasible(p)) fail_msg("plan infeasible: %s", tl_plan_error(p));
    return p;
}

static tl_device *add_sim(const char *name, uint64_t cap) {
    char spec[96];
    snprintf(spec, sizeof spec, "%s=%llu", name, (unsigned long long)cap);
    assert_int_equal(tl_device_sim_add(spec), TL_OK);
    tl_device *d;
    assert_int_equal(tl_device_find(name, &d), TL_OK);
    return d;
}

static void remove_dev(tl_device *d) {
    tl_device_unregister(d);
    tl_device_release(d);
}

/* Session over plan p with the first device's weight budget set to budget (0: the plan's). */
static tl_session *session(fx *f, tl_plan *p, uint64_t budget, tl_session_options *o) {
    tl_session_options def;
    if (!o) {
        tl_session_options_init(&def);
        o = &def;
    }
    f->budgets[0] = budget;
    f->budgets[1] = 0;
    if (budget) {
        o->device_budgets = f->budgets;
        o->n_device_budgets = 2;
    }
    tl_session *s;
    assert_int_equal(tl_session_create(f->m, p, o, &s), TL_OK);
    o->device_budgets = NULL;
    o->n_device_budgets = 0;
    return s;
}

static void use_layers(fx *f, tl_session *s, size_t lb, size_t le, const shadow *sh) {
    tl_acquired *a;
    if (tl_session_acquire(s, TL_COMP_DIFFUSION, lb, le, false, &a))
        fail_msg("acquire [%zu, %zu): %s", lb, le, tl_last_error());
    assert_int_equal(tl_session_check(s), TL_OK);
    check_acquired(f, sh, a);
    tl_session_release(s, a);
    assert_int_equal(tl_session_check(s), TL_OK);
}

/* The whole event log (malloc'd; free it), its length in *n. */
static tl_session_event *events_of(tl_session *s, size_t *n) {
    tl_session_log log;
    tl_session_events_copy(s, 0, NULL, 0, 0, &log, sizeof log);
    assert_int_equal(log.dropped, 0);
    tl_session_event *ev = malloc((log.next + 1) * sizeof *ev);
    *n = tl_session_events_copy(s, 0, ev, (size_t)log.next, sizeof *ev, NULL, 0);
    return ev;
}

/* The layers of the DROP events so far, in order, into out (at most cap); returns how many. */
static size_t dropped_layers(tl_session *s, int32_t *out, size_t cap) {
    size_t n_ev, k = 0;
    tl_session_event *ev = events_of(s, &n_ev);
    for (size_t i = 0; i < n_ev; i++)
        if (ev[i].kind == TL_EVENT_DROP) {
            if (k < cap) out[k] = ev[i].layer;
            k++;
        }
    free(ev);
    return k;
}

/* --- LRU --- */

/*
 * Room for three layers, no schedule: acquiring 0 1 2 1 3 4 0 drops the least
 * recently used units one by one — a layer's weight before its bias (the
 * order they were used in) — and nothing else.
 */
static void test_lru_order(void **st) {
    (void)st;
    for (int policy = 0; policy < 2; policy++) {
        fx f = {0};
        layers_model(&f, 5, true);
        tl_device *sim = add_sim(policy ? "lrusim1" : "lrusim0", 64 << 20);
        const char *g[] = {policy ? "lrusim1" : "lrusim0"};
        char be[64];
        snprintf(be, sizeof be, "diffusion=%s", g[0]);
        tl_plan *p = plan_on(&f, g, 1, be, 64 << 20);
        tl_session_options o;
        tl_session_options_init(&o);
        o.policy = policy ? TL_EVICT_LRU : TL_EVICT_AUTO;
        tl_session *s = session(&f, p, 3 * 96 * KIB, &o);
        if (policy) { /* LRU is asked for: a schedule must not change the choice */
            tl_session_step steps[7];
            const size_t order[7] = {0, 1, 2, 1, 3, 4, 0};
            for (int i = 0; i < 7; i++)
                steps[i] = (tl_session_step){TL_COMP_DIFFUSION, order[i], order[i] + 1, false};
            assert_int_equal(tl_session_set_schedule(s, steps, 7), TL_OK);
        }
        const size_t order[7] = {0, 1, 2, 1, 3, 4, 0};
        for (int i = 0; i < 7; i++)
            use_layers(&f, s, order[i], order[i] + 1, NULL);
        const struct {
            int32_t layer;
            uint64_t bytes;
        } want[] = {{0, 64 * KIB}, {0, 32 * KIB}, {2, 64 * KIB},
                    {2, 32 * KIB}, {1, 64 * KIB}, {1, 32 * KIB}};
        size_t n_ev, k = 0;
        tl_session_event *ev = events_of(s, &n_ev);
        for (size_t i = 0; i < n_ev; i++) {
            if (ev[i].kind != TL_EVENT_DROP) continue;
            if (k >= 6)
                fail_msg("drop %zu: layer %d, %llu bytes: more than expected", k, ev[i].layer,
                         (unsigned long long)ev[i].bytes);
            if (ev[i].layer != want[k].layer || ev[i].bytes != want[k].bytes)
                fail_msg("policy %d, drop %zu: layer %d (%llu bytes), want layer %d (%llu bytes)",
                         policy, k, ev[i].layer, (unsigned long long)ev[i].bytes, want[k].layer,
                         (unsigned long long)want[k].bytes);
            k++;
        }
        free(ev);
        assert_int_equal(k, 6);
        tl_session_destroy(s);
        tl_plan_destroy(p);
        remove_dev(sim);
        close_model(&f);
    }
}

/*
 * Sets released in another order than acquired: the eviction order stays by
 * last use (the acquire), not by release. Layers of 96 KiB (a 64 KiB weight,
 * then a 32 KiB bias), a budget of 3: layers 0, 1, 2 acquired in that order
 * and released 2, 1, 0; layer 3 then evicts layer 0 (weight, bias), layer 4
 * layer 1.
 */
static void test_lru_release_order(void **st) {
    (void)st;
    fx f = {0};
    layers_model(&f, 5, true);
    tl_device *sim = add_sim("lrurel", 64 << 20);
    const char *g[] = {"lrurel"};
    tl_plan *p = plan_on(&f, g, 1, "diffusion=lrurel", 64 << 20);
    tl_session *s = session(&f, p, 3 * 96 * KIB, NULL);
    tl_acquired *a[3];
    for (size_t k = 0; k < 3; k++)
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, k, k + 1, false, &a[k]), TL_OK);
    for (size_t k = 3; k-- > 0;) {
        tl_session_release(s, a[k]);
        assert_int_equal(tl_session_check(s), TL_OK);
    }
    use_layers(&f, s, 3, 4, NULL);
    use_layers(&f, s, 4, 5, NULL);
    const struct {
        int32_t layer;
        uint64_t bytes;
    } want[] = {{0, 64 * KIB}, {0, 32 * KIB}, {1, 64 * KIB}, {1, 32 * KIB}};
    size_t n_ev, k = 0;
    tl_session_event *ev = events_of(s, &n_ev);
    for (size_t i = 0; i < n_ev; i++) {
        if (ev[i].kind != TL_EVENT_DROP) continue;
        if (k >= 4) fail_msg("drop %zu: layer %d: more than expected", k, ev[i].layer);
        if (ev[i].layer != want[k].layer || ev[i].bytes != want[k].bytes)
            fail_msg("drop %zu: layer %d (%llu bytes), want layer %d (%llu bytes)", k, ev[i].layer,
                     (unsigned long long)ev[i].bytes, want[k].layer,
                     (unsigned long long)want[k].bytes);
        k++;
    }
    free(ev);
    assert_int_equal(k, 4);
    tl_session_destroy(s);
    tl_plan_destroy(p);
    remove_dev(sim);
    close_model(&f);
}

/*
 * An acquire that skips steps of the schedule: the units of the steps passed
 * get their new next use. Layers of 64 KiB, a budget of 2, the schedule
 * 0, 1, 0, 2, 1; the engine uses 0, 1, then 2 (passing step 2, layer 0),
 * then 3 (not in the schedule). Layer 2's acquire evicts layer 1 (next used
 * at step 4, layer 0 at step 2). Then neither layer 0 nor layer 2 is used
 * again: layer 3 evicts the least recently used, layer 0 (not layer 2, as it
 * would if layer 0 kept step 2 as its next use).
 */
static void test_schedule_skipped_steps(void **st) {
    (void)st;
    fx f = {0};
    layers_model(&f, 4, false);
    tl_device *sim = add_sim("skipsim", 64 << 20);
    const char *g[] = {"skipsim"};
    tl_plan *p = plan_on(&f, g, 1, "diffusion=skipsim", 64 << 20);
    tl_session *s = session(&f, p, 2 * 64 * KIB, NULL);
    tl_session_step steps[5];
    const size_t order[5] = {0, 1, 0, 2, 1};
    for (int i = 0; i < 5; i++)
        steps[i] = (tl_session_step){TL_COMP_DIFFUSION, order[i], order[i] + 1, false};
    assert_int_equal(tl_session_set_schedule(s, steps, 5), TL_OK);
    const size_t used[4] = {0, 1, 2, 3};
    for (int i = 0; i < 4; i++)
        use_layers(&f, s, used[i], used[i] + 1, NULL);
    int32_t drops[4];
    size_t n = dropped_layers(s, drops, 4);
    assert_int_equal(n, 2);
    assert_int_equal(drops[0], 1);
    assert_int_equal(drops[1], 0);
    tl_session_destroy(s);
    tl_plan_destroy(p);
    remove_dev(sim);
    close_model(&f);
}

/* --- the optimum against an exhaustive search --- */

#define OPT_L 6
#define OPT_MAX_STEPS 12

typedef struct sched {
    size_t n;
    size_t lb[OPT_MAX_STEPS], le[OPT_MAX_STEPS];
    unsigned cap;                 /* layers that fit */
    unsigned mask[OPT_MAX_STEPS]; /* non-zero: the step's layers (a group), not [lb, le) */
} sched;

static unsigned step_need(const sched *q, size_t i) {
    if (q->mask[i]) return q->mask[i];
    unsigned need = 0;
    for (size_t k = q->lb[i]; k < q->le[i]; k++)
        need |= 1u << k;
    return need;
}

/* Fewest loads from step i on with resident set r: every choice of victims tried. */
static unsigned brute(const sched *q, size_t i, unsigned r, unsigned char *memo) {
    if (i == q->n) return 0;
    unsigned char *m = &memo[i * (1u << OPT_L) + r];
    if (*m != 0xFF) return *m;
    unsigned need = step_need(q, i);
    unsigned loads = (unsigned)__builtin_popcount(need & ~r);
    unsigned all = r | need;
    unsigned over =
        (unsigned)__builtin_popcount(all) > q->cap ? (unsigned)__builtin_popcount(all) - q->cap : 0;
    unsigned best = 0xFF;
    /* evict exactly `over` of the resident units the step does not need */
    unsigned cand = r & ~need;
    for (unsigned ev = cand;; ev = (ev - 1) & cand) {
        if ((unsigned)__builtin_popcount(ev) == over) {
            unsigned c = loads + brute(q, i + 1, all & ~ev, memo);
            if (c < best) best = c;
        }
        if (ev == 0) break;
    }
    *m = (unsigned char)best;
    return best;
}

static uint64_t xs(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/*
 * Six layers of 64 KiB on a device with room for `cap` of them; schedules of
 * single layers and ranges, hand-written and random (fixed seeds). The
 * optimum the session reports equals the exhaustive minimum, and so do the
 * bytes a scheduled session moves without prefetch.
 */
static void test_optimum_brute_force(void **st) {
    (void)st;
    fx f = {0};
    layers_model(&f, OPT_L, false);
    tl_device *sim = add_sim("optsim", 64 << 20);
    const char *g[] = {"optsim"};
    tl_plan *p = plan_on(&f, g, 1, "diffusion=optsim", 64 << 20);
    sched list[64];
    size_t n_list = 0;
    /* hand-written: a step whose range holds a resident layer needed again much later */
    list[n_list++] = (sched){8, {0, 1, 2, 0, 3, 4, 5, 0}, {1, 2, 3, 2, 4, 5, 6, 1}, 2, {0}};
    list[n_list++] = (sched){6, {0, 2, 0, 1, 3, 1}, {2, 3, 1, 3, 4, 2}, 3, {0}};
    list[n_list++] =
        (sched){10, {0, 1, 2, 3, 0, 1, 2, 3, 4, 5}, {1, 2, 3, 4, 1, 2, 3, 4, 5, 6}, 3, {0}};
    uint64_t x = 0x9E3779B97F4A7C15ull;
    while (n_list < 64) {
        sched q = {0};
        q.cap = 2 + (unsigned)(xs(&x) % 3);
        q.n = 6 + xs(&x) % (OPT_MAX_STEPS - 5);
        for (size_t i = 0; i < q.n; i++) {
            size_t w = 1 + xs(&x) % (q.cap < 3 ? q.cap : 3);
            q.lb[i] = xs(&x) % (OPT_L - w + 1);
            q.le[i] = q.lb[i] + w;
        }
        list[n_list++] = q;
    }
    unsigned char *memo = malloc(OPT_MAX_STEPS * (1u << OPT_L));
    size_t differ_from_lru = 0;
    for (size_t c = 0; c < n_list; c++) {
        const sched *q = &list[c];
        memset(memo, 0xFF, OPT_MAX_STEPS * (1u << OPT_L));
        uint64_t want = (uint64_t)brute(q, 0, 0, memo) * 64 * KIB;
        tl_session_step steps[OPT_MAX_STEPS];
        for (size_t i = 0; i < q->n; i++)
            steps[i] = (tl_session_step){TL_COMP_DIFFUSION, q->lb[i], q->le[i], false};
        tl_session *s = session(&f, p, q->cap * 64 * KIB, NULL);
        assert_int_equal(tl_session_set_schedule(s, steps, q->n), TL_OK);
        uint64_t opt = 0;
        assert_int_equal(tl_session_optimal_bytes(s, &opt), TL_OK);
        if (opt != want)
            fail_msg("schedule %zu: optimum %llu bytes, exhaustive search %llu", c,
                     (unsigned long long)opt, (unsigned long long)want);
        for (size_t i = 0; i < q->n; i++)
            use_layers(&f, s, q->lb[i], q->le[i], NULL);
        tl_session_stats ss;
        assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
        if (ss.moved[TL_TIER_FILE][TL_TIER_DEVICE] != want)
            fail_msg("schedule %zu: the session moved %llu bytes, the minimum is %llu", c,
                     (unsigned long long)ss.moved[TL_TIER_FILE][TL_TIER_DEVICE],
                     (unsigned long long)want);
        tl_session_destroy(s);
        /* the same schedule under LRU: never less than the minimum */
        tl_session_options o;
        tl_session_options_init(&o);
        o.policy = TL_EVICT_LRU;
        s = session(&f, p, q->cap * 64 * KIB, &o);
        for (size_t i = 0; i < q->n; i++)
            use_layers(&f, s, q->lb[i], q->le[i], NULL);
        assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
        assert_true(ss.moved[TL_TIER_FILE][TL_TIER_DEVICE] >= want);
        differ_from_lru += ss.moved[TL_TIER_FILE][TL_TIER_DEVICE] > want;
        tl_session_destroy(s);
    }
    print_message("%zu schedules; LRU moved more than the minimum on %zu\n", n_list,
                  differ_from_lru);
    assert_true(differ_from_lru > 0); /* the schedules tell the policies apart */
    free(memo);
    tl_plan_destroy(p);
    remove_dev(sim);
    close_model(&f);
}

/* Three layers of two 64 KiB tensors each: tensor j is "input_blocks.{j / 2}.{j % 2}.weight". */
static void pairs_model(fx *f) {
    char name[96];
    for (int j = 0; j < OPT_L; j++) {
        snprintf(name, sizeof name, UNET "input_blocks.%d.%d.weight", j / 2, j % 2);
        add_t(f, name, 2, 64, 256);
    }
    open_model(f);
}

/* The catalog indexes of the tensors in mask (pairs_model), ascending; returns how many. */
static size_t mask_tensors(const fx *f, unsigned mask, size_t *out) {
    size_t n = 0;
    char name[96];
    for (unsigned j = 0; j < OPT_L; j++)
        if (mask & (1u << j)) {
            snprintf(name, sizeof name, UNET "input_blocks.%u.%u.weight", j / 2, j % 2);
            out[n++] = tl_model_find(f->m, name);
        }
    return n;
}

/*
 * Groups an engine declares, as schedule steps beside layer ranges: three layers of two tensors,
 * random schedules whose steps are groups of 1 to 3 tensors (any, so most cut a layer and one
 * another) or ranges of whole layers, room for 2 to 4 tensors. The optimum the session reports
 * equals the exhaustive minimum, and so do the bytes a scheduled session moves, whether the
 * engine acquires a group by its step or by the same tensors as a set (every other schedule, in
 * reverse order: the same group).
 */
static void test_group_optimum_brute_force(void **st) {
    (void)st;
    fx f = {0};
    pairs_model(&f);
    tl_device *sim = add_sim("grpsim", 64 << 20);
    const char *g[] = {"grpsim"};
    tl_plan *p = plan_on(&f, g, 1, "diffusion=grpsim", 64 << 20);
    unsigned char *memo = malloc(OPT_MAX_STEPS * (1u << OPT_L));
    uint64_t x = 0x2545F4914F6CDD1Dull;
    size_t cut = 0, ranges = 0; /* group steps that cut a layer; layer-range steps */
    for (size_t c = 0; c < 64; c++) {
        sched q = {0};
        q.cap = 2 + (unsigned)(xs(&x) % 3);
        q.n = 6 + xs(&x) % (OPT_MAX_STEPS - 5);
        bool range[OPT_MAX_STEPS];
        size_t lb[OPT_MAX_STEPS], le[OPT_MAX_STEPS];
        for (size_t i = 0; i < q.n; i++) {
            range[i] = xs(&x) % 4 == 0;
            if (range[i]) { /* one layer, or two where four tensors fit */
                size_t w = q.cap >= 4 ? 1 + xs(&x) % 2 : 1;
                lb[i] = xs(&x) % (3 - w + 1);
                le[i] = lb[i] + w;
                q.mask[i] = ((1u << (2 * w)) - 1) << (2 * lb[i]);
                ranges++;
                continue;
            }
            unsigned w = 1 + (unsigned)(xs(&x) % (q.cap < 3 ? q.cap : 3)), m = 0;
            while ((unsigned)__builtin_popcount(m) < w)
                m |= 1u << (xs(&x) % OPT_L);
            if (i && xs(&x) % 2) { /* half repeat an earlier group, so that groups come back */
                size_t j = xs(&x) % i;
                if (!range[j]) m = q.mask[j];
            }
            q.mask[i] = m;
            for (unsigned k = 0; k < 3; k++)
                cut += ((m >> (2 * k)) & 3u) == 1u || ((m >> (2 * k)) & 3u) == 2u;
        }
        memset(memo, 0xFF, OPT_MAX_STEPS * (1u << OPT_L));
        uint64_t want = (uint64_t)brute(&q, 0, 0, memo) * 64 * KIB;
        tl_session *s = session(&f, p, q.cap * 64 * KIB, NULL);
        tl_session_step steps[OPT_MAX_STEPS];
        for (size_t i = 0; i < q.n; i++) {
            if (range[i]) {
                steps[i] = (tl_session_step){TL_COMP_DIFFUSION, lb[i], le[i], false};
                continue;
            }
            size_t t[OPT_L];
            size_t nt = mask_tensors(&f, q.mask[i], t);
            assert_int_equal(tl_session_group(s, "g", t, nt, &steps[i]), TL_OK);
            assert_int_equal(steps[i].component, TL_COMP_GROUP);
            assert_int_equal(steps[i].layer_end, steps[i].layer_begin + 1);
        }
        assert_int_equal(tl_session_set_schedule(s, steps, q.n), TL_OK);
        uint64_t opt = 0;
        assert_int_equal(tl_session_optimal_bytes(s, &opt), TL_OK);
        if (opt != want)
            fail_msg("schedule %zu: optimum %llu bytes, exhaustive search %llu", c,
                     (unsigned long long)opt, (unsigned long long)want);
        for (size_t i = 0; i < q.n; i++) {
            tl_acquired *a;
            if (c % 2 && !range[i]) {
                size_t t[OPT_L], r[OPT_L];
                size_t nt = mask_tensors(&f, q.mask[i], t);
                for (size_t j = 0; j < nt; j++)
                    r[j] = t[nt - 1 - j];
                assert_int_equal(tl_session_acquire_tensors(s, r, nt, 0, &a), TL_OK);
            } else {
                assert_int_equal(tl_session_acquire(s, steps[i].component, steps[i].layer_begin,
                                                    steps[i].layer_end, false, &a),
                                 TL_OK);
            }
            assert_int_equal(tl_acquired_count(a), (size_t)__builtin_popcount(q.mask[i]));
            check_acquired(&f, NULL, a);
            assert_int_equal(tl_session_release(s, a), TL_OK);
            assert_int_equal(tl_session_check(s), TL_OK);
        }
        tl_session_stats ss;
        assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
        if (ss.moved[TL_TIER_FILE][TL_TIER_DEVICE] != want)
            fail_msg("schedule %zu: the session moved %llu bytes, the minimum is %llu", c,
                     (unsigned long long)ss.moved[TL_TIER_FILE][TL_TIER_DEVICE],
                     (unsigned long long)want);
        tl_session_destroy(s);
    }
    print_message("64 schedules: %zu group steps that cut a layer, %zu layer ranges\n", cut,
                  ranges);
    assert_true(cut > 0 && ranges > 0);
    free(memo);
    tl_plan_destroy(p);
    remove_dev(sim);
    close_model(&f);
}

/* --- an acquire waits for a prefetch in flight --- */

typedef struct waiter {
    fx *f;
    tl_session *s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool returned;
    tl_status st;
} waiter;

/* The prefetch from a thread of its own: documented not to wait, but if it did, no hang here. */
static void *prefetch_thread(void *arg) {
    waiter *w = arg;
    if (tl_session_prefetch(w->s, TL_COMP_DIFFUSION, 1, 2, false) != TL_OK)
        fail_msg("prefetch: %s", tl_last_error());
    return NULL;
}

static void *acquire_thread(void *arg) {
    waiter *w = arg;
    tl_acquired *a = NULL;
    tl_status st = tl_session_acquire(w->s, TL_COMP_DIFFUSION, 1, 2, false, &a);
    pthread_mutex_lock(&w->mu);
    w->returned = true;
    w->st = st;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (st == TL_OK) {
        check_acquired(w->f, NULL, a);
        tl_session_release(w->s, a);
    }
    return NULL;
}

/*
 * Layer 1 is prefetched onto a device whose copy is held at a gate; an
 * acquire of layer 1 from another thread must not return before the gate
 * opens (its bytes are not there yet), and then hands out the file's bytes,
 * loaded once.
 */
static void test_acquire_waits_for_prefetch(void **st) {
    (void)st;
    fx f = {0};
    layers_model(&f, 4, false);
    tu_gatedev *gd = tu_gatedev_add("pfgate", 64 << 20);
    const char *g[] = {"pfgate"};
    tl_plan *p = plan_on(&f, g, 1, "diffusion=pfgate", 64 << 20);
    tl_session *s = session(&f, p, 0, NULL);
    use_layers(&f, s, 0, 1, NULL);
    tu_gatedev_hold(gd, 1);
    waiter w = {&f, s, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, TL_OK};
    pthread_t pf, th;
    assert_int_equal(pthread_create(&pf, NULL, prefetch_thread, &w), 0);
    tu_gatedev_wait_held(gd, 1); /* the prefetch's copy is at the gate */
    assert_int_equal(pthread_create(&th, NULL, acquire_thread, &w), 0);
    /* give a wrong acquire time to return early (a right one cannot, however long this is) */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 300 * 1000 * 1000;
    if (until.tv_nsec >= 1000000000) until.tv_sec++, until.tv_nsec -= 1000000000;
    pthread_mutex_lock(&w.mu);
    while (!w.returned)
        if (pthread_cond_timedwait(&w.cv, &w.mu, &until)) break;
    bool early = w.returned;
    pthread_mutex_unlock(&w.mu);
    tu_gatedev_open(gd);
    pthread_join(th, NULL);
    pthread_join(pf, NULL);
    if (early) fail_msg("the acquire returned while the prefetch into its range was still copying");
    assert_int_equal(w.st, TL_OK);
    assert_int_equal(tl_session_check(s), TL_OK);
    tl_session_stats ss;
    assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
    assert_int_equal(ss.loads, 2); /* layer 0, and layer 1 once (by the prefetch) */
    assert_int_equal(ss.moved[TL_TIER_FILE][TL_TIER_DEVICE], 2 * 64 * KIB);
    assert_true(ss.prefetch_hits >= 1);
    assert_int_equal(tu_gatedev_copies(gd), 2);
    tl_session_destroy(s);
    assert_int_equal(tu_gatedev_used(gd), 0);
    tl_plan_destroy(p);
    tu_gatedev_remove(gd);
    close_model(&f);
}

/*
 * LRU with a streamed plan: two layers resident, the other four streamed
 * through two buffers. Two passes over the six layers drop only streamed
 * layers, the least recently used first (2 3 4 5 2 3), never the resident
 * prefix, although it was used longer ago.
 */
static void test_lru_streamed_before_resident(void **st) {
    (void)st;
    fx f = {0};
    layers_model(&f, 6, false);
    tl_device *sim = add_sim("lrustream", 64 << 20);
    const char *g[] = {"lrustream"};
    tl_plan *p = plan_on(&f, g, 1, NULL, 4 * 64 * KIB); /* 6 layers do not fit: auto-fit streams */
    tl_plan_decision dec;
    assert_int_equal(tl_plan_decision_of(p, TL_COMP_DIFFUSION, &dec, sizeof dec), TL_OK);
    assert_int_equal(dec.mode, TL_PLAN_MODE_STREAM);
    assert_int_equal(dec.layer_begin[0], 0);
    assert_int_equal(dec.layer_end[0], 2); /* the resident prefix; two buffers stream the rest */
    tl_session *s = session(&f, p, 0, NULL);
    for (int pass = 0; pass < 2; pass++)
        for (size_t k = 0; k < 6; k++)
            use_layers(&f, s, k, k + 1, NULL);
    int32_t got[16];
    const int32_t want[] = {2, 3, 4, 5, 2, 3};
    size_t n = dropped_layers(s, got, 16);
    if (n != 6) fail_msg("%zu drops, want 6", n);
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) fail_msg("drop %zu: layer %d, want layer %d", i, got[i], want[i]);
    tl_session_stats ss;
    assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
    assert_int_equal(ss.moved[TL_TIER_FILE][TL_TIER_DEVICE], (6 + 4) * 64 * KIB);
    tl_session_destroy(s);
    tl_plan_destroy(p);
    remove_dev(sim);
    close_model(&f);
}

/*
 * With a schedule 0 1 0 1 2 and room for two layers, a prefetch of layer 2
 * after step 1 finds only layers needed before it (0 at step 2, 1 at step
 * 3): it is skipped and evicts nothing, and the run moves the minimum
 * (three loads).
 */
static void test_prefetch_keeps_what_is_needed_sooner(void **st) {
    (void)st;
    fx f = {0};
    layers_model(&f, 3, false);
    tl_device *sim = add_sim("pfsooner", 64 << 20);
    const char *g[] = {"pfsooner"};
    tl_plan *p = plan_on(&f, g, 1, "diffusion=pfsooner", 64 << 20);
    tl_session *s = session(&f, p, 2 * 64 * KIB, NULL);
    const size_t order[5] = {0, 1, 0, 1, 2};
    tl_session_step steps[5];
    for (int i = 0; i < 5; i++)
        steps[i] = (tl_session_step){TL_COMP_DIFFUSION, order[i], order[i] + 1, false};
    assert_int_equal(tl_session_set_schedule(s, steps, 5), TL_OK);
    use_layers(&f, s, 0, 1, NULL);
    use_layers(&f, s, 1, 2, NULL);
    assert_int_equal(tl_session_prefetch(s, TL_COMP_DIFFUSION, 2, 3, false), TL_OK);
    assert_int_equal(tl_session_check(s), TL_OK);
    tl_session_stats ss;
    assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
    assert_int_equal(ss.prefetch_skipped, 1);
    assert_int_equal(ss.drops, 0);
    for (int i = 2; i < 5; i++)
        use_layers(&f, s, order[i], order[i] + 1, NULL);
    assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
    assert_int_equal(ss.moved[TL_TIER_FILE][TL_TIER_DEVICE], 3 * 64 * KIB);
    uint64_t opt = 0;
    assert_int_equal(tl_session_optimal_bytes(s, &opt), TL_OK);
    assert_int_equal(opt, 3 * 64 * KIB);
    tl_session_destroy(s);
    tl_plan_destroy(p);
    remove_dev(sim);
    close_model(&f);
}

/* --- row-split tensors --- */

/*
 * One diffusion layer of three 512 x 256 matrices and a bias, split by rows
 * over two GPUs: each matrix comes in two parts covering its rows; after
 * release every part is evictable (both devices empty after evict_all), and
 * a second acquire brings the same bytes back.
 */
static void test_row_split_release(void **st) {
    (void)st;
    fx f = {0};
    add_t(&f, UNET "input_blocks.0.0.q.weight", 2, 512, 256);
    add_t(&f, UNET "input_blocks.0.0.k.weight", 2, 512, 256);
    add_t(&f, UNET "input_blocks.0.0.v.weight", 2, 512, 256);
    add_t(&f, UNET "input_blocks.0.0.bias", 1, 256, 0);
    open_model(&f);
    tl_device *d0 = add_sim("rowsim0", 64 << 20), *d1 = add_sim("rowsim1", 64 << 20);
    const char *g[] = {"rowsim0", "rowsim1"};
    /* 1.5 MiB of weights in one layer, 1 MiB per GPU: only a row split keeps them on GPUs */
    tl_plan *p = plan_on(&f, g, 2, NULL, 1 << 20);
    tl_plan_decision dec;
    assert_int_equal(tl_plan_decision_of(p, TL_COMP_DIFFUSION, &dec, sizeof dec), TL_OK);
    assert_int_equal(dec.mode, TL_PLAN_MODE_ROW_SPLIT);
    tl_session *s = session(&f, p, 0, NULL);
    for (int round = 0; round < 2; round++) {
        tl_acquired *a;
        assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, 0, TL_ALL_LAYERS, true, &a),
                         TL_OK);
        assert_int_equal(tl_session_check(s), TL_OK);
        check_acquired(&f, NULL, a);
        size_t split = 0;
        for (size_t i = 0; i < tl_acquired_count(a); i++) {
            const tl_session_tensor *t = tl_acquired_tensor(a, i);
            if (t->n_parts < 2) continue;
            split++;
            assert_int_equal(t->n_parts, 2);
            assert_int_equal(t->parts[0].row_begin, 0);
            assert_int_equal(t->parts[0].row_end, t->parts[1].row_begin);
            assert_int_equal(t->parts[1].row_end, 512);
            assert_true(t->parts[0].device != t->parts[1].device);
        }
        assert_int_equal(split, 3);
        /* held: nothing may go */
        uint64_t freed = 1;
        assert_int_equal(tl_session_evict_all(s, "rowsim1", &freed), TL_OK);
        assert_int_equal(freed, 0);
        tl_session_release(s, a);
        assert_int_equal(tl_session_check(s), TL_OK);
        /* released: every part of every tensor may go */
        uint64_t total = 0;
        for (int d = 0; d < 2; d++) {
            assert_int_equal(tl_session_evict_all(s, g[d], &freed), TL_OK);
            total += freed;
        }
        tl_session_stats ss;
        assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
        for (size_t d = 0; d < ss.n_devices; d++)
            if (ss.devices[d].used)
                fail_msg("%s: %llu bytes still held after release and evict_all",
                         ss.devices[d].name, (unsigned long long)ss.devices[d].used);
        assert_int_equal(total, 3 * 512 * KIB + 1 * KIB);
        assert_int_equal(tl_session_check(s), TL_OK);
    }
    tl_session_destroy(s);
    tl_plan_destroy(p);
    remove_dev(d0);
    remove_dev(d1);
    close_model(&f);
}

/* --- spill extents reused in the middle of the spill file --- */

/* Acquire layer k, write new bytes into its tensor `which` (0 weight, 1 bias), mark it dirty. */
static tl_acquired *dirty(fx *f, tl_session *s, shadow *sh, size_t k, int which, unsigned salt) {
    tl_acquired *a;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, k, k + 1, false, &a), TL_OK);
    const tl_session_tensor *t = NULL;
    for (size_t i = 0; i < tl_acquired_count(a); i++)
        if (strstr(tl_acquired_tensor(a, i)->info->name, which ? ".bias" : ".weight"))
            t = tl_acquired_tensor(a, i);
    assert_non_null(t);
    size_t me = mine(f, t->info);
    unsigned char *w = malloc(f->len[me]);
    for (uint64_t b = 0; b < f->len[me]; b++)
        w[b] = (unsigned char)(b * 13 + salt * 101 + (b >> 12));
    assert_int_equal(t->parts[0].tier, TL_TIER_DEVICE);
    assert_int_equal(tl_device_copy_to(t->parts[0].device, t->parts[0].dptr, w, f->len[me]), TL_OK);
    assert_int_equal(tl_session_mark_dirty(s, t->index), TL_OK);
    free(sh->bytes[me]);
    sh->bytes[me] = w;
    assert_int_equal(tl_session_check(s), TL_OK);
    return a;
}

static void evict_all(tl_session *s) {
    uint64_t freed;
    assert_int_equal(tl_session_evict_all(s, "spillsim", &freed), TL_OK);
    assert_int_equal(tl_session_check(s), TL_OK);
}

/*
 * No RAM copies (host budget 1 byte): weights of layers 0, 1, 2 are spilled
 * one after the other; layer 1's weight is reloaded and written again, which
 * frees its extent in the middle of the file; the biases of layers 3 and 4
 * (half a weight each) are spilled into that gap, one after the other, then
 * layer 1's weight once more. Every layer read back has the bytes last
 * written, or the file's.
 */
static void test_spill_reuses_middle_extent(void **st) {
    (void)st;
    fx f = {0};
    layers_model(&f, 5, true);
    tl_device *sim = add_sim("spillsim", 64 << 20);
    const char *g[] = {"spillsim"};
    tl_plan *p = plan_on(&f, g, 1, "diffusion=spillsim", 64 << 20);
    tl_session_options o;
    tl_session_options_init(&o);
    o.host_budget = 1;
    o.spill_dir = f.dir;
    tl_session *s = session(&f, p, 0, &o);
    shadow sh = {{0}};
    for (size_t k = 0; k < 3; k++) {
        tl_session_release(s, dirty(&f, s, &sh, k, 0, (unsigned)k + 1));
        evict_all(s);
    }
    tl_acquired *held = dirty(&f, s, &sh, 1, 0, 11); /* reloaded from the spill, then rewritten */
    tl_session_release(s, dirty(&f, s, &sh, 3, 1, 12));
    evict_all(s);
    tl_session_release(s, dirty(&f, s, &sh, 4, 1, 13));
    evict_all(s);
    tl_session_release(s, held);
    evict_all(s);
    tl_session_stats ss;
    assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
    assert_int_equal(ss.spills, 6);
    assert_int_equal(ss.devices[0].used, 0);
    /* every layer from the spill file (or the model file), one by one, twice */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t k = 0; k < 5; k++)
            use_layers(&f, s, k, k + 1, &sh);
        evict_all(s);
    }
    tl_session_destroy(s);
    for (size_t i = 0; i < 64; i++)
        free(sh.bytes[i]);
    tl_plan_destroy(p);
    remove_dev(sim);
    close_model(&f);
}

/* Size of the session's spill file (an unlinked file in dir, found among this process's
 * descriptors); -1: none. */
static long long spill_file_size(const char *dir) {
    DIR *dh = opendir("/proc/self/fd");
    assert_non_null(dh);
    long long size = -1;
    for (struct dirent *de; (de = readdir(dh));) {
        char link[300], target[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%s", de->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = 0;
        if (strncmp(target, dir, strlen(dir)) || target[strlen(dir)] != '/' ||
            !strstr(target, "(deleted)"))
            continue;
        struct stat sb;
        assert_int_equal(stat(link, &sb), 0);
        assert_int_equal(size, -1); /* one spill file */
        size = (long long)sb.st_size;
    }
    closedir(dh);
    return size;
}

/*
 * The spill file gives its tail back: two weights spilled one after the
 * other make it two extents long; dropping the copy of the second (a
 * refresh) shortens it to one, dropping the first empties it. Every layer
 * then reads back the file's bytes.
 */
static void test_spill_tail_given_back(void **st) {
    (void)st;
    fx f = {0};
    layers_model(&f, 2, true);
    tl_device *sim = add_sim("spillsim", 64 << 20);
    const char *g[] = {"spillsim"};
    tl_plan *p = plan_on(&f, g, 1, "diffusion=spillsim", 64 << 20);
    tl_session_options o;
    tl_session_options_init(&o);
    o.host_budget = 1;
    o.spill_dir = f.dir;
    tl_session *s = session(&f, p, 0, &o);
    shadow sh = {{0}};
    size_t w[2];
    for (size_t k = 0; k < 2; k++) {
        tl_acquired *a = dirty(&f, s, &sh, k, 0, (unsigned)k + 21);
        for (size_t i = 0; i < tl_acquired_count(a); i++)
            if (strstr(tl_acquired_tensor(a, i)->info->name, ".weight"))
                w[k] = tl_acquired_tensor(a, i)->index;
        tl_session_release(s, a);
        evict_all(s);
    }
    assert_int_equal(spill_file_size(f.dir), 2 * 64 * KIB);
    use_layers(&f, s, 0, 2, &sh); /* reloaded from the spill file, which keeps the copies */
    evict_all(s);
    const long long want[2] = {64 * KIB, 0};
    for (int k = 1; k >= 0; k--) {
        assert_int_equal(tl_session_refresh(s, w[k]), TL_OK);
        assert_int_equal(tl_session_check(s), TL_OK);
        for (size_t i = 0; i < f.n_t; i++)
            if (!strcmp(f.names[i], tl_model_tensor(f.m, w[k])->name)) {
                free(sh.bytes[i]);
                sh.bytes[i] = NULL; /* the written bytes are dropped: the file's again */
            }
        long long size = spill_file_size(f.dir);
        if (size != want[1 - k])
            fail_msg("after dropping layer %d's copy the spill file is %lld bytes, want %lld", k,
                     size, want[1 - k]);
    }
    use_layers(&f, s, 0, 2, &sh);
    tl_session_destroy(s);
    for (size_t i = 0; i < 64; i++)
        free(sh.bytes[i]);
    tl_plan_destroy(p);
    remove_dev(sim);
    close_model(&f);
}

/* --- schedules the session learns, and loops the engine declares --- */

#define LEARN_L 12
#define LEARN_STEPS 20

/*
 * A diffusion-like run: LEARN_STEPS steps, each acquiring layers 0..11 one by one (twice each when
 * twice: a conditional and an unconditional pass); every other step skips every third layer
 * (cache-based step skipping). Written into seq (at most cap), returns the count.
 */
static size_t skipping_run(tl_session_step *seq, size_t cap, bool twice) {
    size_t n = 0;
    for (int step = 0; step < LEARN_STEPS; step++)
        for (size_t k = 0; k < LEARN_L; k++) {
            if (step % 2 == 1 && k % 3 == 2) continue;
            for (int r = 0; r < (twice ? 2 : 1); r++) {
                assert_true(n < cap);
                seq[n++] = (tl_session_step){TL_COMP_DIFFUSION, k, k + 1, false};
            }
        }
    return n;
}

/* Bytes a session moves from the file onto its device over seq (learning, a loop, or neither). */
static uint64_t run_moved(fx *f, tl_plan *p, uint64_t budget, const tl_session_step *seq, size_t n,
                          int how, const tl_session_step *loop, size_t n_loop) {
    tl_session *s = session(f, p, budget, NULL);
    if (how == 1) assert_int_equal(tl_session_learn(s, true), TL_OK);
    if (how == 2) assert_int_equal(tl_session_set_loop(s, loop, n_loop), TL_OK);
    for (size_t i = 0; i < n; i++)
        use_layers(f, s, seq[i].layer_begin, seq[i].layer_end, NULL);
    tl_session_stats ss;
    assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    return ss.moved[TL_TIER_FILE][TL_TIER_DEVICE];
}

/*
 * Room for 7 of 12 layers. The optimum over the run as it really went (furthest next use knowing
 * every acquire, tl_session_optimal_bytes: checked against an exhaustive search above) is the
 * reference. A session that learns the passes as they come, with no schedule from the engine,
 * moves at most 1.05 x that optimum, skipped layers and all; least recently used moves more; the
 * loop an engine that knows its pattern declares (a full step, then a skipping one) moves at
 * most as much. Also with every layer acquired twice in a row (a step that repeats at once is
 * not taken for a pass).
 */
static void test_learned_schedule_with_skipping(void **st) {
    (void)st;
    fx f = {0};
    layers_model(&f, LEARN_L, false);
    tl_device *sim = add_sim("learnsim", 64 << 20);
    const char *g[] = {"learnsim"};
    tl_plan *p = plan_on(&f, g, 1, "diffusion=learnsim", 64 << 20);
    uint64_t budget = 7 * 64 * KIB;
    static tl_session_step seq[2 * LEARN_STEPS * LEARN_L];
    for (int twice = 0; twice < 2; twice++) {
        size_t n = skipping_run(seq, sizeof seq / sizeof seq[0], twice);
        tl_session *o = session(&f, p, budget, NULL);
        assert_int_equal(tl_session_set_schedule(o, seq, n), TL_OK);
        uint64_t opt = 0;
        assert_int_equal(tl_session_optimal_bytes(o, &opt), TL_OK);
        assert_int_equal(tl_session_destroy(o), TL_OK);
        uint64_t learned = run_moved(&f, p, budget, seq, n, 1, NULL, 0);
        uint64_t lru = run_moved(&f, p, budget, seq, n, 0, NULL, 0);
        /* the declared loop: one full step (the first one's acquires) */
        /* the declared loop: one step with every layer, then one that skips (as the run does) */
        size_t n_loop = (LEARN_L + LEARN_L * 2 / 3) * (twice ? 2 : 1);
        uint64_t looped = run_moved(&f, p, budget, seq, n, 2, seq, n_loop);
        print_message("%s: optimum %llu KiB, learned %llu, declared loop %llu, LRU %llu\n",
                      twice ? "each layer twice" : "each layer once",
                      (unsigned long long)(opt / KIB), (unsigned long long)(learned / KIB),
                      (unsigned long long)(looped / KIB), (unsigned long long)(lru / KIB));
        assert_true(learned * 100 <= opt * 105);
        assert_true(looped * 100 <= opt * 105);
        assert_true(lru > learned);
    }
    tl_plan_destroy(p);
    remove_dev(sim);
    close_model(&f);
}

/*
 * The same with sets of tensors, as stable-diffusion.cpp asks for a graph segment's weights: 12
 * layers of a weight (64 KiB) and a bias (32 KiB), the 24 tensors in segments of three that cut
 * the layers (w0 b0 w1 | b1 w2 b2 | ...); each step acquires the 8 segments, every other step
 * skips every third. The engine declares nothing: the session makes each set a group and learns
 * the passes; it moves at most 1.05 x the optimum of the run as it went (a session given the
 * groups and the run as a schedule), and least recently used moves more.
 */
static void test_learned_sets_with_skipping(void **st) {
    (void)st;
    fx f = {0};
    layers_model(&f, LEARN_L, true);
    tl_device *sim = add_sim("learnsets", 64 << 20);
    const char *g[] = {"learnsets"};
    tl_plan *p = plan_on(&f, g, 1, "diffusion=learnsets", 64 << 20);
    size_t seg[8][3];
    for (size_t j = 0; j < 24; j++) {
        char name[96];
        snprintf(name, sizeof name, UNET "input_blocks.%zu.0.%s", j / 2, j % 2 ? "bias" : "weight");
        seg[j / 3][j % 3] = tl_model_find(f.m, name);
    }
    static size_t run[LEARN_STEPS * 8];
    size_t n = 0;
    for (int step = 0; step < LEARN_STEPS; step++)
        for (size_t j = 0; j < 8; j++)
            if (step % 2 == 0 || j % 3 != 2) run[n++] = j;
    uint64_t budget = 7 * 96 * KIB, moved[2];
    for (int learn = 0; learn < 2; learn++) {
        tl_session *s = session(&f, p, budget, NULL);
        if (learn) assert_int_equal(tl_session_learn(s, true), TL_OK);
        for (size_t i = 0; i < n; i++) {
            tl_acquired *a;
            assert_int_equal(tl_session_acquire_tensors(s, seg[run[i]], 3, 0, &a), TL_OK);
            check_acquired(&f, NULL, a);
            assert_int_equal(tl_session_release(s, a), TL_OK);
        }
        assert_int_equal(tl_session_check(s), TL_OK);
        tl_session_stats ss;
        assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
        moved[learn] = ss.moved[TL_TIER_FILE][TL_TIER_DEVICE];
        assert_int_equal(tl_session_destroy(s), TL_OK);
    }
    tl_session *o = session(&f, p, budget, NULL);
    tl_session_step gs[8];
    static tl_session_step plan_steps[LEARN_STEPS * 8];
    for (size_t j = 0; j < 8; j++)
        assert_int_equal(tl_session_group(o, NULL, seg[j], 3, &gs[j]), TL_OK);
    for (size_t i = 0; i < n; i++)
        plan_steps[i] = gs[run[i]];
    assert_int_equal(tl_session_set_schedule(o, plan_steps, n), TL_OK);
    uint64_t opt = 0;
    assert_int_equal(tl_session_optimal_bytes(o, &opt), TL_OK);
    assert_int_equal(tl_session_destroy(o), TL_OK);
    print_message("sets: optimum %llu KiB, learned %llu, LRU %llu\n",
                  (unsigned long long)(opt / KIB), (unsigned long long)(moved[1] / KIB),
                  (unsigned long long)(moved[0] / KIB));
    assert_true(moved[1] * 100 <= opt * 105);
    assert_true(moved[0] > moved[1]);
    tl_plan_destroy(p);
    remove_dev(sim);
    close_model(&f);
}

/*
 * Groups as the engine names them: the same tensors in another order are the same group (a name
 * given later sticks, an earlier one stays); a step that is no group, or past the groups, is
 * refused, naming the count; no tensors or a tensor past the model is refused.
 */
static void test_group_declare(void **st) {
    (void)st;
    fx f = {0};
    layers_model(&f, 4, true);
    tl_device *sim = add_sim("grpdecl", 64 << 20);
    const char *g[] = {"grpdecl"};
    tl_plan *p = plan_on(&f, g, 1, "diffusion=grpdecl", 64 << 20);
    tl_session *s = session(&f, p, 0, NULL);
    size_t a3[] = {0, 3, 5}, b3[] = {5, 0, 3, 3}, c1[] = {1};
    tl_session_step x, y, z;
    assert_int_equal(tl_session_group(s, NULL, a3, 3, &x), TL_OK);
    assert_int_equal(x.component, TL_COMP_GROUP);
    assert_int_equal(x.layer_begin, 0);
    assert_null(tl_session_group_name(s, 0));
    assert_int_equal(tl_session_group(s, "attn", b3, 4, &y), TL_OK);
    assert_int_equal(y.layer_begin, 0);
    assert_string_equal(tl_session_group_name(s, 0), "attn");
    assert_int_equal(tl_session_group(s, "other", a3, 3, &y), TL_OK);
    assert_string_equal(tl_session_group_name(s, 0), "attn");
    assert_int_equal(tl_session_group(s, "one", c1, 1, &z), TL_OK);
    assert_int_equal(z.layer_begin, 1);
    assert_null(tl_session_group_name(s, 2));
    assert_string_equal(tl_component_name(TL_COMP_GROUP), "group");
    tl_acquired *a = NULL;
    assert_int_equal(tl_session_acquire(s, TL_COMP_GROUP, 0, 1, false, &a), TL_OK);
    assert_int_equal(tl_acquired_count(a), 3);
    assert_int_equal(tl_acquired_tensor(a, 0)->index, 0); /* the order first given */
    assert_int_equal(tl_acquired_tensor(a, 1)->index, 3);
    check_acquired(&f, NULL, a);
    assert_int_equal(tl_session_release(s, a), TL_OK);
    assert_int_equal(tl_session_acquire(s, TL_COMP_GROUP, 2, 3, false, &a), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "2 groups"));
    assert_int_equal(tl_session_acquire(s, TL_COMP_GROUP, 0, 2, false, &a), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_session_prefetch(s, TL_COMP_GROUP, 0, 1, true), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_session_prefetch(s, TL_COMP_GROUP, 1, 2, false), TL_OK);
    bool ready = false;
    assert_int_equal(tl_session_ready(s, TL_COMP_GROUP, 1, 2, false, &ready), TL_OK);
    size_t bad[] = {0, tl_model_tensor_count(f.m)};
    assert_int_equal(tl_session_group(s, "bad", bad, 2, &x), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "entry 1"));
    assert_int_equal(tl_session_group(s, "none", bad, 0, &x), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_session_check(s), TL_OK);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    tl_plan_destroy(p);
    remove_dev(sim);
    close_model(&f);
}

/*
 * A group made while a schedule of layers and groups is set, with the n-th allocation failing,
 * for every n: the call fails with TL_ERR_NOMEM and the session is as it was (its check holds,
 * the group's tensors are no group yet, the schedule's optimum is unchanged), or it succeeds; a
 * second try then makes the group, and the scheduled run moves the optimum.
 */
static void test_group_alloc_faults(void **st) {
    (void)st;
    fx f = {0};
    pairs_model(&f);
    tl_device *sim = add_sim("grpfault", 64 << 20);
    const char *g[] = {"grpfault"};
    tl_plan *p = plan_on(&f, g, 1, "diffusion=grpfault", 64 << 20);
    size_t t1[OPT_L], t2[OPT_L];
    size_t n1 = mask_tensors(&f, 0x05u, t1), n2 = mask_tensors(&f, 0x1Au, t2);
    unsigned long calls = 0;
    for (unsigned long nth = 0;; nth++) {
        tl_session *s = session(&f, p, 3 * 64 * KIB, NULL);
        tl_session_step a, b;
        assert_int_equal(tl_session_group(s, "a", t1, n1, &a), TL_OK);
        tl_session_step steps[] = {a, {TL_COMP_DIFFUSION, 1, 2, false}, a,
                                   {TL_COMP_DIFFUSION, 2, 3, false}};
        assert_int_equal(tl_session_set_schedule(s, steps, 4), TL_OK);
        uint64_t before = 0, after = 0;
        assert_int_equal(tl_session_optimal_bytes(s, &before), TL_OK);
        tl__fault_arm(TL_FAULT_ALLOC, nth, nth ? ENOMEM : 0);
        tl_status r = tl_session_group(s, "b", t2, n2, &b); /* cuts layers 0, 1 and 2 */
        if (!nth) calls = tl__fault_calls(TL_FAULT_ALLOC);
        tl__fault_reset();
        assert_int_equal(tl_session_check(s), TL_OK);
        if (r != TL_OK) {
            if (r != TL_ERR_NOMEM) fail_msg("allocation %lu: status %d", nth, r);
            assert_null(tl_session_group_name(s, 1)); /* no second group */
            assert_int_equal(tl_session_optimal_bytes(s, &after), TL_OK);
            assert_int_equal(after, before);
            assert_int_equal(tl_session_group(s, "b", t2, n2, &b), TL_OK);
        }
        assert_string_equal(tl_session_group_name(s, b.layer_begin), "b");
        /* the optimum of the schedule does not depend on groups made since */
        assert_int_equal(tl_session_optimal_bytes(s, &after), TL_OK);
        assert_int_equal(after, before);
        for (size_t i = 0; i < 4; i++) {
            tl_acquired *x;
            assert_int_equal(tl_session_acquire(s, steps[i].component, steps[i].layer_begin,
                                                steps[i].layer_end, false, &x),
                             TL_OK);
            check_acquired(&f, NULL, x);
            assert_int_equal(tl_session_release(s, x), TL_OK);
        }
        tl_session_stats ss;
        assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
        assert_int_equal(ss.moved[TL_TIER_FILE][TL_TIER_DEVICE], before);
        tl_session_destroy(s);
        if (nth && nth >= calls) break;
    }
    assert_true(calls >= 5);
    tl_plan_destroy(p);
    remove_dev(sim);
    close_model(&f);
}

/*
 * Learning ends where the engine takes over: tl_session_set_schedule clears it (an acquire that
 * repeats is then just an acquire), tl_session_learn(false) drops a learned loop; steps outside
 * the pass (another component, a range the pass never had) leave it where it was.
 */
static void test_learning_control(void **st) {
    (void)st;
    fx f = {0};
    layers_model(&f, 6, false);
    tl_device *sim = add_sim("learnctl", 64 << 20);
    const char *g[] = {"learnctl"};
    tl_plan *p = plan_on(&f, g, 1, "diffusion=learnctl", 64 << 20);
    tl_session *s = session(&f, p, 3 * 64 * KIB, NULL);
    assert_int_equal(tl_session_learn(NULL, true), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_session_set_loop(NULL, NULL, 0), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_session_set_loop(s, NULL, 3), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_session_learn(s, true), TL_OK);
    uint64_t opt = 0;
    tl_session_step nx;
    for (size_t k = 0; k < 6; k++)
        use_layers(&f, s, k, k + 1, NULL);
    use_layers(&f, s, 0, 1, NULL); /* a repeat: a candidate, not yet a pass */
    assert_int_equal(tl_session_next_step(s, &nx), TL_ERR_NOT_FOUND);
    assert_int_equal(tl_session_optimal_bytes(s, &opt), TL_ERR_INVALID_ARG); /* no schedule */
    use_layers(&f, s, 1, 2, NULL);                              /* confirms the pass 0..5 */
    assert_int_equal(tl_session_optimal_bytes(s, &opt), TL_OK); /* a schedule exists now */
    assert_int_equal(tl_session_next_step(s, &nx), TL_OK);
    assert_int_equal(nx.layer_begin, 2);
    for (size_t k = 2; k < 6; k++)
        use_layers(&f, s, k, k + 1, NULL);
    use_layers(&f, s, 0, 1, NULL);
    assert_int_equal(tl_session_next_step(s, &nx), TL_OK);
    assert_int_equal(nx.layer_begin, 1);
    use_layers(&f, s, 2, 5, NULL); /* not a step of the pass: the position stays */
    assert_int_equal(tl_session_next_step(s, &nx), TL_OK);
    assert_int_equal(nx.layer_begin, 1);
    assert_int_equal(tl_session_learn(s, false), TL_OK);
    assert_int_equal(tl_session_optimal_bytes(s, &opt), TL_ERR_INVALID_ARG); /* dropped */
    assert_int_equal(tl_session_learn(s, true), TL_OK);
    tl_session_step one = {TL_COMP_DIFFUSION, 0, 1, false};
    assert_int_equal(tl_session_set_schedule(s, &one, 1), TL_OK);
    for (int i = 0; i < 3; i++)
        use_layers(&f, s, 3, 4, NULL);
    assert_int_equal(tl_session_optimal_bytes(s, &opt), TL_OK); /* still the one-step schedule */
    assert_int_equal(opt, 64 * KIB);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    tl_plan_destroy(p);
    remove_dev(sim);
    close_model(&f);
}

/*
 * Sets of tensors (a graph segment's weights): across layers, in any order, a tensor listed twice
 * acquired once, each byte the file's; a set larger than the budget fails at once; an index past
 * the model is refused; a prefetched set is a hit when acquired; a set that is no step of the
 * schedule does not move it.
 */
static void test_tensor_sets(void **st) {
    (void)st;
    fx f = {0};
    layers_model(&f, 6, true); /* weight (64 KiB) and bias (32 KiB) per layer */
    tl_device *sim = add_sim("setsim", 64 << 20);
    const char *g[] = {"setsim"};
    tl_plan *p = plan_on(&f, g, 1, "diffusion=setsim", 64 << 20);
    tl_session *s = session(&f, p, 3 * 96 * KIB, NULL);
    size_t w3 = tl_model_find(f.m, UNET "input_blocks.3.0.weight"),
           b5 = tl_model_find(f.m, UNET "input_blocks.5.0.bias"),
           w1 = tl_model_find(f.m, UNET "input_blocks.1.0.weight");
    size_t set[] = {w3, b5, w1, w3};
    tl_acquired *a = NULL;
    assert_int_equal(tl_session_acquire_tensors(s, set, 4, 0, &a), TL_OK);
    assert_int_equal(tl_acquired_count(a), 3);
    assert_int_equal(tl_acquired_tensor(a, 0)->index, w3);
    assert_int_equal(tl_acquired_tensor(a, 1)->index, b5);
    assert_int_equal(tl_acquired_tensor(a, 2)->index, w1);
    check_acquired(&f, NULL, a);
    assert_int_equal(tl_session_check(s), TL_OK);
    assert_int_equal(tl_session_release(s, a), TL_OK);
    tl_session_stats ss;
    assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
    assert_int_equal(ss.moved[TL_TIER_FILE][TL_TIER_DEVICE], (64 + 32 + 64) * KIB);
    /* a tensor listed 300 times (a counter of one byte would wrap) is acquired once */
    size_t many[301];
    for (size_t i = 0; i < 301; i++)
        many[i] = i == 300 ? b5 : w3;
    assert_int_equal(tl_session_acquire_tensors(s, many, 301, 0, &a), TL_OK);
    assert_int_equal(tl_acquired_count(a), 2);
    assert_int_equal(tl_acquired_tensor(a, 0)->index, w3);
    assert_int_equal(tl_acquired_tensor(a, 1)->index, b5);
    assert_int_equal(tl_session_release(s, a), TL_OK);
    tl_session_step gm;
    assert_int_equal(tl_session_group(s, NULL, many, 301, &gm), TL_OK);
    assert_int_equal(tl_session_acquire(s, gm.component, gm.layer_begin, gm.layer_end, false, &a),
                     TL_OK);
    assert_int_equal(tl_acquired_count(a), 2);
    assert_int_equal(tl_session_release(s, a), TL_OK);
    size_t pair[] = {b5, w3}, once[] = {w3};
    tl_session_step gp, g1;
    assert_int_equal(tl_session_group(s, NULL, pair, 2, &gp), TL_OK); /* the same two tensors */
    assert_int_equal(gp.layer_begin, gm.layer_begin);
    assert_int_equal(tl_session_group(s, NULL, once, 1, &g1), TL_OK); /* another set */
    assert_int_not_equal(g1.layer_begin, gm.layer_begin);
    /* more than the budget: at once, with the numbers */
    size_t all[12];
    for (size_t i = 0; i < 12; i++)
        all[i] = i;
    assert_int_equal(tl_session_acquire_tensors(s, all, 12, 0, &a), TL_ERR_DEVICE_OOM);
    assert_null(a);
    size_t bad[] = {w1, tl_model_tensor_count(f.m)};
    assert_int_equal(tl_session_acquire_tensors(s, bad, 2, 0, &a), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "entry 1"));
    assert_int_equal(tl_session_acquire_tensors(s, NULL, 1, 0, &a), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_session_check(s), TL_OK);
    /* prefetched, then acquired: hits */
    assert_int_equal(tl_session_evict_all(s, "setsim", NULL), TL_OK);
    size_t two[] = {b5, w1};
    assert_int_equal(tl_session_prefetch_tensors(s, two, 2), TL_OK);
    assert_int_equal(tl_session_acquire_tensors(s, two, 2, 0, &a), TL_OK);
    check_acquired(&f, NULL, a);
    assert_int_equal(tl_session_release(s, a), TL_OK);
    assert_int_equal(tl_session_stats_get(s, &ss, sizeof ss), TL_OK);
    assert_int_equal(ss.prefetch_hits, 1); /* counted per acquire */
    /* a set that is no step of the schedule leaves it where it was */
    tl_session_step steps[] = {{TL_COMP_DIFFUSION, 0, 1, false}, {TL_COMP_DIFFUSION, 1, 2, false}};
    assert_int_equal(tl_session_set_schedule(s, steps, 2), TL_OK);
    size_t w0[] = {tl_model_find(f.m, UNET "input_blocks.0.0.weight")};
    assert_int_equal(tl_session_acquire_tensors(s, w0, 1, 0, &a), TL_OK);
    assert_int_equal(tl_session_release(s, a), TL_OK);
    tl_session_step nx;
    assert_int_equal(tl_session_next_step(s, &nx), TL_OK);
    assert_int_equal(nx.layer_begin, 0);
    assert_int_equal(tl_session_check(s), TL_OK);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    tl_plan_destroy(p);
    remove_dev(sim);
    close_model(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lru_order),
        cmocka_unit_test(test_lru_release_order),
        cmocka_unit_test(test_schedule_skipped_steps),
        cmocka_unit_test(test_optimum_brute_force),
        cmocka_unit_test(test_group_optimum_brute_force),
        cmocka_unit_test(test_acquire_waits_for_prefetch),
        cmocka_unit_test(test_row_split_release),
        cmocka_unit_test(test_spill_reuses_middle_extent),
        cmocka_unit_test(test_spill_tail_given_back),
        cmocka_unit_test(test_lru_streamed_before_resident),
        cmocka_unit_test(test_prefetch_keeps_what_is_needed_sooner),
        cmocka_unit_test(test_learned_schedule_with_skipping),
        cmocka_unit_test(test_learned_sets_with_skipping),
        cmocka_unit_test(test_group_declare),
        cmocka_unit_test(test_group_alloc_faults),
        cmocka_unit_test(test_learning_control),
        cmocka_unit_test(test_tensor_sets),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
