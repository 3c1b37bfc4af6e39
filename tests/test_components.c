/*
 * test_components.c — two diffusion models in one catalog (Wan 2.2's high-
 * and low-noise experts, an SDXL base and refiner) named by component rules
 * at open: a file of tensors "high.*" and "low.*" beside a text encoder and
 * a VAE. Checked: each tensor's component (a hand list), rules per file,
 * errors naming the rule; the plan (on a sim GPU too small for both models:
 * each model's bytes placed, phases where only one of them is active, bytes
 * per run and peaks computed by hand); stable-diffusion.cpp's
 * --high-noise-diffusion-model beside --diffusion-model; a run of the default pipeline whose
 * event log shows each model loaded only in the first pass of its own phase,
 * whole there, and never both whole on the device; and the same through the
 * CLI.
 */
#include "testutil.h"

#include "st_writer.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define KIB 1024ull
/* per model: img_in [32, 256] F16 (16 KiB) + 4 blocks [128, 256] F16 (64 KiB each) */
#define MODEL_BYTES (16 * KIB + 4 * 64 * KIB)

static const sw_tensor tensors[] = {
    {"high.img_in.weight", "F16", 2, {32, 256}},
    {"high.blocks.0.w", "F16", 2, {128, 256}},
    {"high.blocks.1.w", "F16", 2, {128, 256}},
    {"high.blocks.2.w", "F16", 2, {128, 256}},
    {"high.blocks.3.w", "F16", 2, {128, 256}},
    {"low.img_in.weight", "F16", 2, {32, 256}},
    {"low.blocks.0.w", "F16", 2, {128, 256}},
    {"low.blocks.1.w", "F16", 2, {128, 256}},
    {"low.blocks.2.w", "F16", 2, {128, 256}},
    {"low.blocks.3.w", "F16", 2, {128, 256}},
    {"cond_stage_model.transformer.w", "F16", 2, {64, 256}},
    {"first_stage_model.decoder.w", "F16", 2, {64, 256}},
};
#define N_TENSORS (sizeof tensors / sizeof tensors[0])
static const char *const RULES = "high.=diffusion, low.=diffusion2";

static char *write_model(const char *dir, const char *name, const sw_tensor *t, size_t n) {
    size_t len;
    uint8_t *img = sw_build(t, n, NULL, true, &len);
    char *p = tu_path(dir, name);
    assert_true(sw_write_file(p, img, len));
    free(img);
    return p;
}

/* The component the test expects of a tensor of the list, by the rules it was opened with. */
static tl_component expected(const char *name) {
    if (!strncmp(name, "high.", 5)) return TL_COMP_DIFFUSION;
    if (!strncmp(name, "low.", 4)) return TL_COMP_DIFFUSION2;
    if (!strncmp(name, "cond_", 5)) return TL_COMP_COND;
    return TL_COMP_VAE;
}

static tl_model *open_rules(const char *path, const char *rules) {
    tl_model_options o;
    tl_model_options_init(&o);
    o.components = rules;
    tl_model *m = NULL;
    const char *paths[] = {path};
    tl_status st = tl_model_open(paths, 1, &o, &m);
    if (st) fail_msg("open: %s", tl_last_error());
    return m;
}

static void test_rules(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *p = write_model(dir, "two.safetensors", tensors, N_TENSORS);
    /* without rules the two models are "other" */
    tl_model *m = open_rules(p, NULL);
    assert_int_equal(tl_model_tensor(m, tl_model_find(m, "high.blocks.0.w"))->component,
                     TL_COMP_OTHER);
    tl_model_close(m);
    m = open_rules(p, RULES);
    for (size_t i = 0; i < N_TENSORS; i++) {
        const tl_tensor_info *t = tl_model_tensor(m, tl_model_find(m, tensors[i].name));
        if (t->component != expected(tensors[i].name))
            fail_msg("%s: component %s", tensors[i].name, tl_component_name(t->component));
    }
    assert_int_equal(tl_model_layer_count(m, TL_COMP_DIFFUSION), 4);
    assert_int_equal(tl_model_layer_count(m, TL_COMP_DIFFUSION2), 4);
    assert_string_equal(tl_model_layer_key(m, TL_COMP_DIFFUSION2, 0), "low.blocks.0");
    tl_model_close(m);
    /* the first matching rule wins, before the built-in rules */
    m = open_rules(p, "high.blocks.=diffusion2,high.=diffusion,cond_stage_model.=vae");
    assert_int_equal(tl_model_tensor(m, tl_model_find(m, "high.blocks.3.w"))->component,
                     TL_COMP_DIFFUSION2);
    assert_int_equal(tl_model_tensor(m, tl_model_find(m, "high.img_in.weight"))->component,
                     TL_COMP_DIFFUSION);
    assert_int_equal(
        tl_model_tensor(m, tl_model_find(m, "cond_stage_model.transformer.w"))->component,
        TL_COMP_VAE);
    tl_model_close(m);
    /* bad rules: an error naming the rule */
    static const char *const bad[] = {"high.=diffusion,low.=bogus", "high.", "=vae",
                                      "high.=diffusion,,low.=vae"};
    static const char *const named[] = {"low.=bogus", "high.", "=vae", "''"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tl_model_options o;
        tl_model_options_init(&o);
        o.components = bad[i];
        const char *paths[] = {p};
        assert_int_equal(tl_model_open(paths, 1, &o, &m), TL_ERR_INVALID_ARG);
        assert_null(m);
        if (!strstr(tl_last_error(), named[i]))
            fail_msg("rules '%s': message '%s' does not name '%s'", bad[i], tl_last_error(),
                     named[i]);
    }
    free(p);
    tu_tmpdir_rm(dir);
}

/* Two files with the same names, told apart by their prefixes and their file components. */
static void test_file_components(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    static const sw_tensor one[] = {{"blocks.0.w", "F16", 2, {128, 256}},
                                    {"blocks.1.w", "F16", 2, {128, 256}}};
    char *a = write_model(dir, "base.safetensors", one, 2);
    char *b = write_model(dir, "refiner.safetensors", one, 2);
    const char *paths[] = {a, b};
    const char *prefixes[] = {"base.", "refiner."};
    const char *comps[] = {"unet", "refiner"};
    tl_model_options o;
    tl_model_options_init(&o);
    o.prefixes = prefixes;
    o.file_components = comps;
    o.components = "base.=vae,refiner.=vae"; /* file components come first */
    tl_model *m = NULL;
    assert_int_equal(tl_model_open(paths, 2, &o, &m), TL_OK);
    assert_int_equal(tl_model_tensor(m, tl_model_find(m, "base.blocks.1.w"))->component,
                     TL_COMP_DIFFUSION);
    assert_int_equal(tl_model_tensor(m, tl_model_find(m, "refiner.blocks.0.w"))->component,
                     TL_COMP_DIFFUSION2);
    tl_model_close(m);
    comps[1] = "nonesuch";
    assert_int_equal(tl_model_open(paths, 2, &o, &m), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "nonesuch"));
    assert_non_null(strstr(tl_last_error(), "refiner.safetensors"));
    free(a);
    free(b);
    tu_tmpdir_rm(dir);
}

/* A sim GPU of 400 KiB: both models (544 KiB) never fit at once; one (272 KiB) and the rest do. */
#define GPU_BYTES (400 * KIB)

static tl_plan *make_plan(tl_model *m, const char *gpu) {
    tl_plan_summary sum;
    assert_int_equal(tl_plan_summary_from_model(m, TL_DTYPE_INVALID, &sum), TL_OK);
    tl_plan_device devs[2];
    memset(devs, 0, sizeof devs);
    snprintf(devs[0].name, sizeof devs[0].name, "%s", gpu);
    devs[0].is_gpu = true;
    devs[0].total = devs[0].free = GPU_BYTES;
    snprintf(devs[1].name, sizeof devs[1].name, "cpu");
    tl_plan_options o;
    tl_plan_options_init(&o);
    o.reserve = "diffusion=0,cond=0,vae=0,diffusion2=0";
    o.steps = 3;
    o.steps2 = 2;
    tl_plan *p = NULL;
    assert_int_equal(tl_plan_create(&sum, devs, 2, &o, &p), TL_OK);
    tl_plan_summary_clear(&sum);
    if (!tl_plan_feasible(p)) fail_msg("plan infeasible: %s", tl_plan_error(p));
    return p;
}

static void test_plan(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *path = write_model(dir, "two.safetensors", tensors, N_TENSORS);
    tl_model *m = open_rules(path, RULES);
    tl_plan *p = make_plan(m, "g");
    /* the default phases gain diffusion2's after diffusion's */
    assert_int_equal(tl_plan_phase_count(p), 4);
    const uint32_t want[4] = {1u << TL_COMP_COND,
                              (1u << TL_COMP_DIFFUSION) | (1u << TL_COMP_CONTROLNET),
                              1u << TL_COMP_DIFFUSION2, 1u << TL_COMP_VAE};
    for (size_t i = 0; i < 4; i++) assert_int_equal(tl_plan_phase_mask(p, i), want[i]);
    tl_component both[] = {TL_COMP_DIFFUSION, TL_COMP_DIFFUSION2};
    for (size_t k = 0; k < 2; k++) {
        tl_plan_decision d;
        assert_int_equal(tl_plan_decision_of(p, both[k], &d, sizeof d), TL_OK);
        assert_true(d.present);
        assert_int_equal(d.mode, TL_PLAN_MODE_GPU);
        assert_int_equal(d.bytes, MODEL_BYTES);
        assert_int_equal(d.n_devices, 1);
        assert_int_equal(d.device_bytes[0], MODEL_BYTES);
        assert_true(d.phase_resident); /* loaded for its own phase, dropped after */
        assert_int_equal(d.moved_per_run, MODEL_BYTES);
    }
    tl_plan_decision none;
    assert_int_equal(tl_plan_decision_of(p, TL_COMP_OTHER, &none, sizeof none), TL_OK);
    assert_false(none.present);
    /* neither model's phase holds the other: each peak has one model (+ at most cond and vae) */
    for (size_t ph = 1; ph <= 2; ph++) {
        uint64_t peak = tl_plan_peak(p, 0, ph);
        assert_true(peak >= MODEL_BYTES && peak <= MODEL_BYTES + 64 * KIB);
    }
    assert_true(tl_plan_peak(p, 0, 0) <= 64 * KIB); /* cond: neither model */
    assert_true(tl_plan_peak(p, 0, 3) <= 64 * KIB);
    /* the text and JSON name the new component and its phase */
    char *txt = NULL;
    assert_int_equal(tl_plan_to_text(p, &txt), TL_OK);
    assert_non_null(strstr(txt, "diffusion2"));
    tl_free(txt);
    tl_plan_destroy(p);
    tl_model_close(m);
    free(path);
    tu_tmpdir_rm(dir);
}

/* What the step callback sees of the event log, per component. */
typedef struct watch {
    tl_session *s;
    uint64_t next;
    int64_t resident[TL_COMP_COUNT];       /* bytes on the device now */
    uint64_t loaded[TL_COMP_COUNT];        /* bytes loaded onto the device */
    char load_phase[TL_COMP_COUNT][64];    /* the phase of a component's loads ("" none yet) */
    unsigned load_pass[TL_COMP_COUNT];     /* the last pass with a load (0-based) */
    unsigned steps_in[TL_COMP_COUNT];      /* steps seen per diffusion model's phase */
    const char *bad;
} watch;

static tl_status on_step(void *user, tl_session *s, const char *phase, uint32_t pass,
                         tl_component c, size_t layer, const tl_acquired *a) {
    (void)s;
    (void)layer;
    (void)a;
    watch *w = user;
    tl_session_event ev[64];
    tl_session_log log;
    size_t n;
    while ((n = tl_session_events_copy(w->s, w->next, ev, 64, sizeof ev[0], &log, sizeof log))) {
        if (log.first > w->next) w->bad = "events lost";
        for (size_t i = 0; i < n; i++) {
            int k = (int)ev[i].component;
            if (ev[i].kind == TL_EVENT_LOAD && ev[i].to == TL_TIER_DEVICE) {
                w->resident[k] += (int64_t)ev[i].bytes;
                w->loaded[k] += ev[i].bytes;
                if (w->load_phase[k][0] && strcmp(w->load_phase[k], phase))
                    w->bad = "a component loaded in two phases";
                snprintf(w->load_phase[k], sizeof w->load_phase[k], "%s", phase);
                w->load_pass[k] = pass;
            }
            if (ev[i].kind == TL_EVENT_DROP && ev[i].from == TL_TIER_DEVICE)
                w->resident[k] -= (int64_t)ev[i].bytes;
        }
        w->next = log.first + (w->next > log.first ? w->next - log.first : 0) + n;
    }
    if (c == TL_COMP_DIFFUSION || c == TL_COMP_DIFFUSION2) {
        tl_component other = c == TL_COMP_DIFFUSION ? TL_COMP_DIFFUSION2 : TL_COMP_DIFFUSION;
        w->steps_in[c]++;
        int64_t all = 0;
        for (int k = 0; k < TL_COMP_COUNT; k++) all += w->resident[k];
        if (w->resident[c] != (int64_t)MODEL_BYTES) w->bad = "a model not whole in its phase";
        /* clean units are dropped only for room: the other model keeps what still fits */
        if (w->resident[other] >= (int64_t)MODEL_BYTES) w->bad = "both models whole on the device";
        if (all > (int64_t)GPU_BYTES) w->bad = "the device over its capacity";
    }
    return TL_OK;
}

static void test_run(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *path = write_model(dir, "two.safetensors", tensors, N_TENSORS);
    tl_model *m = open_rules(path, RULES);
    char spec[64];
    snprintf(spec, sizeof spec, "tcomp=%llu", GPU_BYTES);
    assert_int_equal(tl_device_sim_add(spec), TL_OK);
    tl_device *sim;
    assert_int_equal(tl_device_find("tcomp", &sim), TL_OK);
    tl_plan *p = make_plan(m, "tcomp");
    tl_session *s = NULL;
    assert_int_equal(tl_session_create(m, p, NULL, &s), TL_OK);
    watch w;
    memset(&w, 0, sizeof w);
    w.s = s;
    tl_run_options ro;
    tl_run_options_init(&ro);
    ro.steps = 3;
    ro.steps2 = 2;
    ro.step = on_step;
    ro.user = &w;
    tl_run_report *rep = NULL;
    if (tl_run_pipeline(s, &ro, &rep)) fail_msg("run: %s", tl_last_error());
    if (w.bad) fail_msg("%s", w.bad);
    /* cond, diffusion x3, diffusion2 x2, vae */
    assert_int_equal(tl_run_report_phase_count(rep), 7);
    const char *names[] = {"cond",       "diffusion+controlnet", "diffusion+controlnet",
                           "diffusion+controlnet", "diffusion2", "diffusion2", "vae"};
    for (size_t i = 0; i < 7; i++)
        assert_string_equal(tl_run_report_phase(rep, i)->name, names[i]);
    assert_int_equal(tl_run_report_total(rep)->hash_mismatches, 0);
    /* each model loaded once, whole, in the first pass of its own phase */
    assert_int_equal(w.loaded[TL_COMP_DIFFUSION], MODEL_BYTES);
    assert_int_equal(w.loaded[TL_COMP_DIFFUSION2], MODEL_BYTES);
    assert_string_equal(w.load_phase[TL_COMP_DIFFUSION], "diffusion+controlnet");
    assert_string_equal(w.load_phase[TL_COMP_DIFFUSION2], "diffusion2");
    assert_int_equal(w.load_pass[TL_COMP_DIFFUSION], 0); /* passes count from 0 here */
    assert_int_equal(w.load_pass[TL_COMP_DIFFUSION2], 0);
    assert_true(w.steps_in[TL_COMP_DIFFUSION] >= 3 && w.steps_in[TL_COMP_DIFFUSION2] >= 2);
    tl_run_report_destroy(rep);
    assert_int_equal(tl_session_destroy(s), TL_OK);
    tl_plan_destroy(p);
    tl_device_unregister(sim);
    tl_device_release(sim);
    tl_model_close(m);
    free(path);
    tu_tmpdir_rm(dir);
}

static const cJSON *item(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v) fail_msg("key %s missing", k);
    return v;
}

static void test_cli(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *path = write_model(dir, "two.safetensors", tensors, N_TENSORS);
    tu_run r = tu_cli_run("plan", path, "--component", "high.=diffusion", "--component",
                          "low.=diffusion2", "--sim", "g=400K", "--reserve",
                          "diffusion=0,cond=0,vae=0,diffusion2=0", "--json", NULL);
    if (r.status) fail_msg("plan: %s", r.err);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    const cJSON *ph = item(j, "phases");
    assert_int_equal(cJSON_GetArraySize(ph), 4);
    assert_string_equal(cJSON_GetArrayItem(ph, 2)->valuestring, "diffusion2");
    int seen = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, item(j, "components")) {
        const char *n = item(c, "name")->valuestring;
        assert_true(strcmp(n, "other")); /* nothing left as "other" */
        if (!strcmp(n, "diffusion") || !strcmp(n, "diffusion2")) {
            seen++;
            assert_int_equal((uint64_t)item(c, "bytes")->valuedouble, MODEL_BYTES);
        }
    }
    assert_int_equal(seen, 2);
    cJSON_Delete(j);
    tu_run_free(&r);
    /* a run through the CLI: phases named by the pipeline, every byte checked */
    r = tu_cli_run("run", path, "--component", "high.=diffusion,low.=diffusion2", "--sim",
                   "g=400K", "--reserve", "diffusion=0,cond=0,vae=0,diffusion2=0", "--pipeline",
                   "cond,diffusion*3,diffusion2*2,vae", "--json", NULL);
    if (r.status) fail_msg("run: %s", r.err);
    j = cJSON_Parse(r.out);
    assert_non_null(j);
    ph = item(j, "phases");
    assert_int_equal(cJSON_GetArraySize(ph), 7);
    uint64_t to_dev = 0;
    for (int i = 0; i < 7; i++) {
        const cJSON *e = cJSON_GetArrayItem(ph, i);
        const char *n = item(e, "name")->valuestring;
        uint64_t b = (uint64_t)item(e, "bytes_to_devices")->valuedouble;
        to_dev += b;
        /* each model whole in the first pass of its phase, nothing in its later passes */
        if (!strcmp(n, "diffusion") || !strcmp(n, "diffusion2"))
            assert_int_equal(b, item(e, "pass")->valuedouble == 1 ? MODEL_BYTES : 0);
        assert_int_equal((uint64_t)item(e, "hash_mismatches")->valuedouble, 0);
    }
    assert_true(to_dev >= 2 * MODEL_BYTES);
    cJSON_Delete(j);
    tu_run_free(&r);
    /* a file rule: the left side is the path given, every tensor of the file goes there */
    char rule[4200];
    snprintf(rule, sizeof rule, "%s=diffusion2", path);
    r = tu_cli_run("info", path, "--component", rule, "--json", NULL);
    if (r.status) fail_msg("info: %s", r.err);
    j = cJSON_Parse(r.out);
    assert_non_null(j);
    size_t n = 0;
    cJSON_ArrayForEach(c, item(j, "tensors")) {
        assert_string_equal(item(c, "component")->valuestring, "diffusion2");
        n++;
    }
    assert_int_equal(n, N_TENSORS);
    cJSON_Delete(j);
    tu_run_free(&r);
    /* stable-diffusion.cpp's Wan 2.2 flags: the high-noise expert first, the other second */
    static const sw_tensor hi[] = {{"blocks.0.w", "F16", 2, {128, 256}},
                                   {"blocks.1.w", "F16", 2, {128, 256}}};
    static const sw_tensor lo[] = {{"blocks.0.w", "F16", 2, {128, 256}},
                                   {"blocks.1.w", "F16", 2, {128, 256}},
                                   {"blocks.2.w", "F16", 2, {128, 256}}};
    char *hp = write_model(dir, "high.safetensors", hi, 2);
    char *lp = write_model(dir, "low.safetensors", lo, 3);
    r = tu_cli_run("plan", "--diffusion-model", lp, "--high-noise-diffusion-model", hp, "--sim",
                   "g=1G", "--json", NULL);
    if (r.status) fail_msg("plan sd.cpp flags: %s", r.err);
    j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_string_equal(cJSON_GetArrayItem(item(j, "phases"), 2)->valuestring, "diffusion2");
    cJSON_ArrayForEach(c, item(j, "components")) {
        const char *cn = item(c, "name")->valuestring;
        uint64_t b = (uint64_t)item(c, "bytes")->valuedouble;
        if (!strcmp(cn, "diffusion"))
            assert_int_equal(b, 2 * 64 * KIB);
        else if (!strcmp(cn, "diffusion2"))
            assert_int_equal(b, 3 * 64 * KIB);
        else
            fail_msg("component %s", cn);
    }
    cJSON_Delete(j);
    tu_run_free(&r);
    free(hp);
    free(lp);
    /* a bad rule: exit 2, the rule named */
    r = tu_cli_run("plan", path, "--component", "low.=bogus", NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "low.=bogus"));
    tu_run_free(&r);
    free(path);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules), cmocka_unit_test(test_file_components),
        cmocka_unit_test(test_plan),  cmocka_unit_test(test_run),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
