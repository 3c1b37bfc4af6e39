/*
 * test_plan_cases.c — the planner's decisions on the case table
 * (tests/plan/cases.inc: model profiles x device sets x options, with the
 * expected placement of every component), its comparison with a baseline
 * planner (accelerate's greedy fill), determinism and the JSON round trip,
 * and the infeasibility messages.
 *
 * TL_PLAN_PRINT=1 prints every case's actual decision (to update the table
 * after a deliberate change of the model).
 */
#include "helpers/testutil.h"
#include "plan/plan.h"

#include "plan/check.inc"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GIB (1024ull * 1024 * 1024)
#define MIB (1024ull * 1024)

typedef struct plan_case {
    const char *profile;
    const char *devices;
    const char *backend;  /* NULL: none */
    const char *max_vram; /* NULL: none */
    bool offload;
    const char *expect; /* decisions, or "INFEASIBLE: substring of the message" */
} plan_case;

#define CASE(p, d, b, m, o, e) {p, d, b, m, o, e},
static const plan_case cases[] = {
#include "plan/cases.inc"
};
#define N_CASES (sizeof cases / sizeof cases[0])

/* "diffusion=gpu:cuda0 cond=layer_split@phase:cuda0&cuda1 vae=cpu" */
static void describe(const tl_plan *p, char *buf, size_t n) {
    size_t at = 0;
    buf[0] = 0;
    if (!tl_plan_feasible(p)) {
        snprintf(buf, n, "INFEASIBLE: %s", tl_plan_error(p));
        return;
    }
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        tl_plan_decision d;
        assert_int_equal(tl_plan_decision_of(p, (tl_component)c, &d, sizeof d), TL_OK);
        if (!d.present) continue;
        at += (size_t)snprintf(buf + at, n - at, "%s%s=%s%s", at ? " " : "",
                               tl_component_name((tl_component)c), tl_plan_mode_name(d.mode),
                               d.phase_resident ? "@phase" : "");
        for (uint32_t i = 0; i < d.n_devices; i++)
            at += (size_t)snprintf(buf + at, n - at, "%s%s", i ? "&" : ":",
                                   tl_plan_device_of(p, d.devices[i])->name);
    }
}

static tl_plan *make(const plan_case *k, tl_plan_summary *sum, tl_plan_device *devs,
                     size_t *n_devs) {
    assert_int_equal(tl_plan_summary_profile(k->profile, sum), TL_OK);
    assert_int_equal(tl_plan_parse_devices(k->devices, devs, TL_PLAN_MAX_DEVICES, n_devs), TL_OK);
    tl_plan_options o;
    tl_plan_options_init(&o);
    o.backend = k->backend;
    o.max_vram = k->max_vram;
    o.offload_to_cpu = k->offload;
    tl_plan *p = NULL;
    tl_status s = tl_plan_create(sum, devs, *n_devs, &o, &p);
    if (s) fail_msg("case %s on %s: %s", k->profile, k->devices, tl_last_error());
    return p;
}

/* Every peak within its budget, and every field of every decision as the summary and the model
 * say (plan/check.inc). */
static void check_consistent(const tl_plan_summary *sum, const tl_plan *p, const char *label) {
    char why[512];
    if (!plan_check(sum, p, 20, why, sizeof why)) fail_msg("%s: %s", label, why);
    if (!tl_plan_feasible(p)) return;
    for (size_t d = 0; d < tl_plan_device_count(p); d++)
        for (size_t ph = 0; ph < tl_plan_phase_count(p); ph++)
            if (tl_plan_device_of(p, d)->is_gpu)
                assert_true(tl_plan_peak(p, d, ph) <= tl_plan_device_budget(p, d));
}

static void test_cases(void **state) {
    (void)state;
    bool print = getenv("TL_PLAN_PRINT") != NULL;
    int failures = 0;
    assert_true(N_CASES >= 40);
    for (size_t i = 0; i < N_CASES; i++) {
        const plan_case *k = &cases[i];
        tl_plan_summary sum;
        tl_plan_device devs[TL_PLAN_MAX_DEVICES];
        size_t nd;
        tl_plan *p = make(k, &sum, devs, &nd);
        char got[2048];
        describe(p, got, sizeof got);
        char label[256];
        snprintf(label, sizeof label, "case %zu (%s on %s)", i, k->profile, k->devices);
        check_consistent(&sum, p, label);
        bool ok;
        if (!strncmp(k->expect, "INFEASIBLE: ", 12))
            ok = !tl_plan_feasible(p) && strstr(got, k->expect + 12);
        else
            ok = !strcmp(got, k->expect);
        if (print || !ok)
            fprintf(stderr,
                    "%s case %zu: %s on %s [backend %s, max-vram %s%s]\n  got:  %s\n  want: %s\n",
                    ok ? "ok" : "FAIL", i, k->profile, k->devices, k->backend ? k->backend : "-",
                    k->max_vram ? k->max_vram : "-", k->offload ? ", offload" : "", got, k->expect);
        if (!ok) failures++;
        tl_plan_destroy(p);
        tl_plan_summary_clear(&sum);
    }
    assert_int_equal(failures, 0);
}

/* ---------------------------------------------------------------------- */
/* The baseline: accelerate's infer_auto_device_map, fed the same model.    */
/* Components in order, units (non-layer bytes, then layers) fill GPU 0,    */
/* then GPU 1, ..., then the CPU; every GPU holds back the streaming buffer */
/* (two of the largest layer) and charges a component's compute reserve     */
/* when its first unit lands there. Units left on the CPU are streamed to   */
/* the component's last GPU (or computed on the CPU when it has none).      */
/* Its plan is then judged by the same cost model as tierload's.            */
/* ---------------------------------------------------------------------- */

typedef struct base_plan {
    bool feasible;
    uint64_t score;
} base_plan;

static const uint64_t prio[TL_COMP_COUNT] = {4, 2, 1, 3, 1};

static base_plan baseline(const tl_plan_summary *s, const uint64_t *budget, size_t n_gpu,
                          const uint64_t *reserve) {
    base_plan r = {true, 0};
    uint64_t hold = 0;
    for (int c = 0; c < TL_COMP_COUNT; c++)
        for (size_t i = 0; i < s->comp[c].n_layers; i++)
            if (2 * s->comp[c].layers[i] > hold) hold = 2 * s->comp[c].layers[i];
    uint64_t used[TL_PLAN_MAX_DEVICES] = {0};
    uint64_t w[TL_COMP_COUNT][TL_PLAN_MAX_DEVICES];
    uint64_t host[TL_COMP_COUNT] = {0};
    memset(w, 0, sizeof w);
    size_t cur = 0;
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        const tl_plan_part *pp = &s->comp[c];
        if (!pp->bytes) continue;
        bool charged[TL_PLAN_MAX_DEVICES] = {0};
        for (size_t u = 0; u <= pp->n_layers; u++) {
            uint64_t b = u == 0 ? pp->other_bytes : pp->layers[u - 1];
            if (b == 0) continue;
            while (cur < n_gpu) {
                uint64_t need = used[cur] + b + (charged[cur] ? 0 : reserve[c]) + hold;
                if (need <= budget[cur]) break;
                cur++;
            }
            if (cur == n_gpu) {
                host[c] += b;
                continue;
            }
            if (!charged[cur]) used[cur] += reserve[c];
            charged[cur] = true;
            used[cur] += b;
            w[c][cur] += b;
        }
    }
    /* judge it with tierload's model: weights stay for the run, reserves (and
       the stream buffer) in the component's phase: cond 0, diffusion+controlnet 1, vae 2 */
    int phase_of[TL_COMP_COUNT] = {1, 0, 2, 1, -1};
    uint64_t peak[TL_PLAN_MAX_DEVICES][3];
    memset(peak, 0, sizeof peak);
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        const tl_plan_part *pp = &s->comp[c];
        if (!pp->bytes) continue;
        size_t last = SIZE_MAX;
        uint64_t maxl = 0;
        for (size_t i = 0; i < pp->n_layers; i++)
            if (pp->layers[i] > maxl) maxl = pp->layers[i];
        for (size_t d = 0; d < n_gpu; d++) {
            if (!w[c][d]) continue;
            last = d;
            r.score += prio[c] * w[c][d];
            for (int ph = 0; ph < 3; ph++)
                peak[d][ph] += w[c][d] + ((phase_of[c] < 0 || phase_of[c] == ph) ? reserve[c] : 0);
        }
        if (host[c] && last != SIZE_MAX)
            for (int ph = 0; ph < 3; ph++)
                if (phase_of[c] < 0 || phase_of[c] == ph) peak[last][ph] += 2 * maxl;
    }
    for (size_t d = 0; d < n_gpu; d++)
        for (int ph = 0; ph < 3; ph++)
            if (peak[d][ph] > budget[d]) r.feasible = false;
    if (!r.feasible) r.score = 0;
    return r;
}

static int compare_one(const tl_plan_summary *sum, const tl_plan_device *devs, size_t nd,
                       const char *max_vram, const char *label, bool verbose) {
    uint64_t budgets[TL_PLAN_MAX_DEVICES], reserve[TL_COMP_COUNT];
    assert_int_equal(tl_plan_parse_max_vram(max_vram, devs, nd, 0, budgets), TL_OK);
    tl_plan_default_reserves(reserve);
    size_t n_gpu = 0;
    for (size_t i = 0; i < nd; i++)
        if (devs[i].is_gpu) budgets[n_gpu++] = budgets[i];
    base_plan b = baseline(sum, budgets, n_gpu, reserve);
    tl_plan_options o;
    tl_plan_options_init(&o);
    o.max_vram = max_vram;
    tl_plan *p;
    assert_int_equal(tl_plan_create(sum, devs, nd, &o, &p), TL_OK);
    int bad = 0;
    check_consistent(sum, p, label);
    if (b.feasible && !tl_plan_feasible(p)) bad = 1;
    if (tl_plan_score(p) < b.score) bad = 1;
    if (bad || verbose)
        fprintf(stderr, "%s %s: baseline %s score %llu, tierload %s score %llu\n",
                bad ? "FAIL" : "ok", label, b.feasible ? "feasible" : "infeasible",
                (unsigned long long)b.score, tl_plan_feasible(p) ? "feasible" : "infeasible",
                (unsigned long long)tl_plan_score(p));
    tl_plan_destroy(p);
    return bad;
}

static const char *profiles[] = {"sd15", "sdxl", "flux-f16", "flux-q8", "ltx2"};
static const char *device_sets[] = {"cuda0=6G",
                                    "cuda0=8G",
                                    "cuda0=12G",
                                    "cuda0=16G",
                                    "cuda0=24G",
                                    "cuda0=16G,cuda1=10G",
                                    "cuda0=11G,cuda1=11G,cuda2=11G,cuda3=11G",
                                    "cpu=64G"};
static const char *vram_caps[] = {NULL, "-1G", "10G", "cuda0=5G"};

static void test_baseline(void **state) {
    (void)state;
    bool verbose = getenv("TL_PLAN_PRINT") != NULL;
    int bad = 0, n = 0;
    for (size_t i = 0; i < sizeof profiles / sizeof profiles[0]; i++)
        for (size_t j = 0; j < sizeof device_sets / sizeof device_sets[0]; j++)
            for (size_t v = 0; v < sizeof vram_caps / sizeof vram_caps[0]; v++) {
                if (vram_caps[v] && !strcmp(device_sets[j], "cpu=64G")) continue;
                tl_plan_summary sum;
                tl_plan_device devs[TL_PLAN_MAX_DEVICES];
                size_t nd;
                assert_int_equal(tl_plan_summary_profile(profiles[i], &sum), TL_OK);
                assert_int_equal(
                    tl_plan_parse_devices(device_sets[j], devs, TL_PLAN_MAX_DEVICES, &nd), TL_OK);
                char label[256];
                snprintf(label, sizeof label, "%s on %s max-vram %s", profiles[i], device_sets[j],
                         vram_caps[v] ? vram_caps[v] : "-");
                bad += compare_one(&sum, devs, nd, vram_caps[v], label, verbose);
                n++;
                tl_plan_summary_clear(&sum);
            }
    assert_true(n >= 100);
    assert_int_equal(bad, 0);
}

/* Random synthetic pipelines (fixed seed): the same claim on shapes nobody picked. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(uint64_t n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state % n;
}

static void test_baseline_random(void **state) {
    (void)state;
    int bad = 0;
    for (int t = 0; t < 300; t++) {
        tl_plan_summary sum;
        tl_plan_summary_init(&sum);
        int comps[] = {TL_COMP_DIFFUSION, TL_COMP_COND, TL_COMP_VAE, TL_COMP_CONTROLNET};
        int n_comp = 1 + (int)rnd(4);
        for (int c = 0; c < n_comp; c++) {
            uint64_t layers = 1 + rnd(60), mib = 8 + rnd(700);
            for (uint64_t l = 0; l < layers; l++) {
                uint64_t b = (mib + rnd(mib / 2 + 1)) * MIB;
                assert_int_equal(
                    tl_plan_summary_add_layer(&sum, (tl_component)comps[c], b, b / 10 * 9), TL_OK);
            }
            if (rnd(2)) tl_plan_summary_add_other(&sum, (tl_component)comps[c], rnd(900) * MIB, 0);
        }
        char spec[256];
        size_t at = 0;
        uint64_t ng = rnd(5);
        for (uint64_t g = 0; g < ng; g++)
            at += (size_t)snprintf(spec + at, sizeof spec - at, "%scuda%llu=%lluG", g ? "," : "",
                                   (unsigned long long)g, (unsigned long long)(2 + rnd(30)));
        if (!ng) snprintf(spec, sizeof spec, "cpu=32G");
        tl_plan_device devs[TL_PLAN_MAX_DEVICES];
        size_t nd;
        assert_int_equal(tl_plan_parse_devices(spec, devs, TL_PLAN_MAX_DEVICES, &nd), TL_OK);
        char label[300];
        snprintf(label, sizeof label, "random #%d on %s", t, spec);
        bad += compare_one(&sum, devs, nd, NULL, label, false);
        tl_plan_summary_clear(&sum);
    }
    assert_int_equal(bad, 0);
}

/* The pruned search (bounds, symmetry breaking) finds exactly the plan that visiting every
 * combination finds. */
static int same_as_exhaustive(const tl_plan_summary *sum, const char *spec, const char *max_vram,
                              const char *label) {
    tl_plan_device devs[TL_PLAN_MAX_DEVICES];
    size_t nd;
    assert_int_equal(tl_plan_parse_devices(spec, devs, TL_PLAN_MAX_DEVICES, &nd), TL_OK);
    tl_plan_options o;
    tl_plan_options_init(&o);
    o.max_vram = max_vram;
    tl_plan *a, *b;
    assert_int_equal(tl_plan_create(sum, devs, nd, &o, &a), TL_OK);
    assert_int_equal(tlp_create(sum, devs, nd, &o, true, &b), TL_OK);
    char *ja, *jb;
    assert_int_equal(tl_plan_to_json(a, &ja), TL_OK);
    assert_int_equal(tl_plan_to_json(b, &jb), TL_OK);
    int bad = strcmp(ja, jb) != 0;
    if (bad)
        fprintf(stderr, "FAIL %s: pruned search differs from the exhaustive one\n%s\n%s\n", label,
                ja, jb);
    tl_free(ja);
    tl_free(jb);
    tl_plan_destroy(a);
    tl_plan_destroy(b);
    return bad;
}

static void test_exhaustive(void **state) {
    (void)state;
    int bad = 0;
    const char *sets[] = {"cuda0=16G,cuda1=10G", "cuda0=8G", "cuda0=11G,cuda1=11G,cuda2=11G",
                          "cuda0=6G,cuda1=6G"};
    for (size_t i = 0; i < sizeof profiles / sizeof profiles[0]; i++)
        for (size_t j = 0; j < sizeof sets / sizeof sets[0]; j++) {
            tl_plan_summary sum;
            assert_int_equal(tl_plan_summary_profile(profiles[i], &sum), TL_OK);
            char label[128];
            snprintf(label, sizeof label, "%s on %s", profiles[i], sets[j]);
            bad += same_as_exhaustive(&sum, sets[j], NULL, label);
            tl_plan_summary_clear(&sum);
        }
    for (int t = 0; t < 40; t++) {
        tl_plan_summary sum;
        tl_plan_summary_init(&sum);
        int comps[] = {TL_COMP_DIFFUSION, TL_COMP_COND, TL_COMP_VAE, TL_COMP_CONTROLNET};
        int n_comp = 1 + (int)rnd(3);
        for (int c = 0; c < n_comp; c++) {
            uint64_t layers = 1 + rnd(12), mib = 64 + rnd(900);
            for (uint64_t l = 0; l < layers; l++) {
                uint64_t b = (mib + rnd(mib / 2 + 1)) * MIB;
                tl_plan_summary_add_layer(&sum, (tl_component)comps[c], b, b / 10 * 9);
            }
            if (rnd(2)) tl_plan_summary_add_other(&sum, (tl_component)comps[c], rnd(900) * MIB, 0);
        }
        char spec[128];
        size_t at = 0;
        uint64_t ng = 1 + rnd(3), size = 2 + rnd(14);
        for (uint64_t g = 0; g < ng; g++) {
            if (rnd(2)) size = 2 + rnd(14);
            at += (size_t)snprintf(spec + at, sizeof spec - at, "%scuda%llu=%lluG", g ? "," : "",
                                   (unsigned long long)g, (unsigned long long)size);
        }
        char label[200];
        snprintf(label, sizeof label, "random #%d on %s", t, spec);
        bad += same_as_exhaustive(&sum, spec, NULL, label);
        tl_plan_summary_clear(&sum);
    }
    assert_int_equal(bad, 0);
}

static void test_deterministic_json(void **state) {
    (void)state;
    for (size_t i = 0; i < N_CASES; i++) {
        const plan_case *k = &cases[i];
        tl_plan_summary sum;
        tl_plan_device devs[TL_PLAN_MAX_DEVICES];
        size_t nd;
        tl_plan *a = make(k, &sum, devs, &nd);
        tl_plan_summary_clear(&sum);
        tl_plan *b = make(k, &sum, devs, &nd);
        tl_plan_summary_clear(&sum);
        char *ja, *jb, *jc;
        assert_int_equal(tl_plan_to_json(a, &ja), TL_OK);
        assert_int_equal(tl_plan_to_json(b, &jb), TL_OK);
        assert_string_equal(ja, jb);
        /* the document reads back into the same plan */
        tl_plan *c = NULL;
        if (tl_plan_from_json(ja, strlen(ja), &c)) fail_msg("case %zu: %s", i, tl_last_error());
        assert_int_equal(tl_plan_to_json(c, &jc), TL_OK);
        assert_string_equal(ja, jc);
        assert_int_equal(tl_plan_feasible(c), tl_plan_feasible(a));
        assert_int_equal(tl_plan_moved_per_run(c), tl_plan_moved_per_run(a));
        char *ta, *tc;
        assert_int_equal(tl_plan_to_text(a, &ta), TL_OK);
        assert_int_equal(tl_plan_to_text(c, &tc), TL_OK);
        assert_string_equal(ta, tc);
        tl_free(ta);
        tl_free(tc);
        tl_free(ja);
        tl_free(jb);
        tl_free(jc);
        tl_plan_destroy(a);
        tl_plan_destroy(b);
        tl_plan_destroy(c);
    }
}

static void test_json_rejects(void **state) {
    (void)state;
    tl_plan *p = NULL;
    const char *bad[] = {
        "",
        "[]",
        "{\"feasible\":true}",
        "{\"feasible\":true,\"error\":\"\",\"devices\":[],\"phases\":[\"cond\"],\"components\":[],"
        "\"peaks\":[],"
        "\"moved_per_run\":0,\"host_bytes\":0,\"score\":0}",
        "{\"feasible\":true,\"error\":\"\",\"devices\":[{\"name\":\"cuda0\",\"gpu\":true,\"total\":"
        "1,\"free\":1,"
        "\"budget\":1}],\"phases\":[\"cond\"],\"components\":[{\"name\":\"cond\",\"bytes\":10,"
        "\"reserve\":0,"
        "\"mode\":\"gpu\",\"residency\":\"run\",\"devices\":[\"cuda9\"],\"shares\":[1],\"device_"
        "bytes\":[10],"
        "\"host_bytes\":0,\"moved_per_run\":0}],\"peaks\":[],\"moved_per_run\":0,\"host_bytes\":0,"
        "\"score\":0}",
        "{\"feasible\":true,\"error\":\"\",\"devices\":[{\"name\":\"cuda0\",\"gpu\":true,\"total\":"
        "1,\"free\":1,"
        "\"budget\":1}],\"phases\":[\"cond\"],\"components\":[{\"name\":\"cond\",\"bytes\":10,"
        "\"reserve\":0,"
        "\"mode\":\"warp\",\"residency\":\"run\",\"devices\":[\"cuda0\"],\"shares\":[1],\"device_"
        "bytes\":[10],"
        "\"host_bytes\":0,\"moved_per_run\":0}],\"peaks\":[],\"moved_per_run\":0,\"host_bytes\":0,"
        "\"score\":0}",
        "{\"feasible\":true,\"error\":\"\",\"devices\":[{\"name\":\"cuda0\",\"gpu\":true,\"total\":"
        "1,\"free\":1,"
        "\"budget\":1}],\"phases\":[\"cond\"],\"components\":[{\"name\":\"cond\",\"bytes\":10,"
        "\"reserve\":0,"
        "\"mode\":\"gpu\",\"residency\":\"run\",\"devices\":[\"cuda0\"],\"shares\":[1],\"device_"
        "bytes\":[-3],"
        "\"host_bytes\":0,\"moved_per_run\":0}],\"peaks\":[],\"moved_per_run\":0,\"host_bytes\":0,"
        "\"score\":0}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tl_status s = tl_plan_from_json(bad[i], strlen(bad[i]), &p);
        if (s == TL_OK) fail_msg("document %zu was accepted", i);
        assert_null(p);
    }
}

static void test_infeasible_messages(void **state) {
    (void)state;
    tl_plan_summary sum;
    tl_plan_device devs[TL_PLAN_MAX_DEVICES];
    size_t nd;
    tl_plan_options o;
    tl_plan *p;
    assert_int_equal(tl_plan_summary_profile("sdxl", &sum), TL_OK);
    assert_int_equal(tl_plan_parse_devices("cuda0=12G", devs, TL_PLAN_MAX_DEVICES, &nd), TL_OK);
    /* a --max-vram cap that is too tight: the message says how much is missing and the cap that
     * fits */
    tl_plan_options_init(&o);
    o.backend = "*=cuda0";
    o.max_vram = "6G";
    assert_int_equal(tl_plan_create(&sum, devs, nd, &o, &p), TL_OK);
    assert_false(tl_plan_feasible(p));
    assert_int_equal(tl_plan_check(p), TL_ERR_INFEASIBLE);
    assert_non_null(strstr(tl_last_error(), "short by"));
    assert_non_null(strstr(tl_plan_error(p), "cuda0 needs 6.79 GiB"));
    assert_non_null(strstr(tl_plan_error(p), "a max_vram cap of 6.8G would fit"));
    tl_plan_destroy(p);
    /* no cap to raise: moving the lowest-priority forced component to the cpu */
    assert_int_equal(tl_plan_parse_devices("cuda0=6.5G", devs, TL_PLAN_MAX_DEVICES, &nd), TL_OK);
    tl_plan_options_init(&o);
    o.backend = "*=cuda0";
    assert_int_equal(tl_plan_create(&sum, devs, nd, &o, &p), TL_OK);
    assert_false(tl_plan_feasible(p));
    assert_non_null(strstr(tl_plan_error(p), "would fit"));
    tl_plan_destroy(p);
    /* auto-fit never fails: the cpu is always there */
    tl_plan_options_init(&o);
    assert_int_equal(tl_plan_create(&sum, devs, nd, &o, &p), TL_OK);
    assert_true(tl_plan_feasible(p));
    assert_int_equal(tl_plan_check(p), TL_OK);
    tl_plan_destroy(p);
    /* the older flags are aliases, and conflict with the spec like a repeated component */
    assert_int_equal(tl_plan_parse_devices("cuda0=12G", devs, TL_PLAN_MAX_DEVICES, &nd), TL_OK);
    tl_plan_options_init(&o);
    o.clip_on_cpu = true;
    o.vae_on_cpu = true;
    assert_int_equal(tl_plan_create(&sum, devs, nd, &o, &p), TL_OK);
    tl_plan_decision d;
    tl_plan_decision_of(p, TL_COMP_COND, &d, sizeof d);
    assert_int_equal(d.mode, TL_PLAN_MODE_CPU);
    tl_plan_decision_of(p, TL_COMP_VAE, &d, sizeof d);
    assert_int_equal(d.mode, TL_PLAN_MODE_CPU);
    tl_plan_decision_of(p, TL_COMP_DIFFUSION, &d, sizeof d);
    assert_int_equal(d.mode, TL_PLAN_MODE_GPU);
    tl_plan_destroy(p);
    o.backend = "cond=cuda0";
    assert_int_equal(tl_plan_create(&sum, devs, nd, &o, &p), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "given twice"));
    tl_plan_summary_clear(&sum);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_baseline),
        cmocka_unit_test(test_baseline_random),
        cmocka_unit_test(test_exhaustive),
        cmocka_unit_test(test_deterministic_json),
        cmocka_unit_test(test_json_rejects),
        cmocka_unit_test(test_infeasible_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
