/*
 * test_overrides.c — per-tensor placements in a plan (llama.cpp's -ot): on
 * a llama-shaped model from `tierload mkmodel --profile llama`, patterns
 * place exactly the tensors a hand-written matcher picks (names compared one
 * by one, through tl_plan_override_find and tl_plan_place), their bytes
 * count on their device (peaks, host bytes) and leave the component's; the
 * escapes llama.cpp users write (\d \w \s \.) mean what they mean there; the
 * plan's JSON keeps the overrides; a run leaves the host-placed tensors off
 * the device; errors name the pattern (bad regex, unknown device, overrides
 * without the model's names, overrides over a budget), exit 2 in the CLI;
 * each allocation of a plan with overrides failed in turn fails it whole.
 */
#include "testutil.h"
#include "os/fault.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static char *g_dir, *g_path;

static int setup(void **state) {
    (void)state;
    g_dir = tu_tmpdir();
    g_path = tu_path(g_dir, "l.gguf");
    tu_run r = tu_cli_run("mkmodel", g_path, "--size", "24M", "--profile", "llama", NULL);
    if (r.status) fail_msg("mkmodel: %s", r.err);
    tu_run_free(&r);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tu_tmpdir_rm(g_dir);
    free(g_path);
    return 0;
}

static tl_model *open_model(void) {
    const char *paths[] = {g_path};
    tl_model *m = NULL;
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    return m;
}

/* GPU "g" of cap bytes and the host. */
static void devices(tl_plan_device devs[2], uint64_t cap) {
    memset(devs, 0, 2 * sizeof devs[0]);
    snprintf(devs[0].name, sizeof devs[0].name, "g");
    devs[0].is_gpu = true;
    devs[0].total = devs[0].free = cap;
    snprintf(devs[1].name, sizeof devs[1].name, "cpu");
}

static tl_status plan(const tl_model *m, uint64_t cap, const char *ot, tl_plan **p) {
    tl_plan_device devs[2];
    devices(devs, cap);
    tl_plan_options o;
    tl_plan_options_init(&o);
    o.reserve = "other=0";
    o.overrides = ot;
    return tl_plan_create_for_model(m, TL_DTYPE_INVALID, devs, 2, &o, p);
}

/* The hand matcher of the patterns below: "blk.N.ffn_up"/"ffn_gate" anywhere, "blk.1D.ffn_down". */
static bool hand_cpu(const char *n) {
    if (strstr(n, "ffn_up") || strstr(n, "ffn_gate")) return true;
    return !strncmp(n, "blk.1", 5) && n[5] >= '0' && n[5] <= '9' &&
           !strncmp(n + 6, ".ffn_down", 9);
}
#define OT_CPU "ffn_(up|gate)=cpu,blk\\.1\\d\\.ffn_down=CPU"

static void test_host_overrides(void **state) {
    (void)state;
    tl_model *m = open_model();
    tl_plan *p = NULL;
    assert_int_equal(plan(m, 64ull << 20, OT_CPU, &p), TL_OK);
    assert_true(tl_plan_feasible(p));
    size_t host = tl_plan_device_count(p) - 1;
    uint64_t moved = 0, total = 0;
    size_t want = 0;
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        total += t->nbytes;
        size_t d = tl_plan_override_find(p, t->name);
        if (hand_cpu(t->name)) {
            want++;
            moved += t->nbytes;
            if (d != host) fail_msg("%s: not on the host", t->name);
        } else if (d != TL_NOT_FOUND) {
            fail_msg("%s: overridden, but no pattern names it", t->name);
        }
    }
    assert_int_equal(want, 16 * 2 + 6); /* up+gate of 16 blocks, down of blk.10..15 */
    assert_int_equal(tl_plan_override_count(p), want);
    /* every override in name order, with the pattern that placed it */
    const char *prev = "", *name, *pat;
    size_t dev;
    for (size_t i = 0; i < want; i++) {
        assert_int_equal(tl_plan_override_of(p, i, &name, &dev, &pat), TL_OK);
        assert_true(strcmp(prev, name) < 0);
        assert_int_equal(dev, host);
        assert_string_equal(pat, strstr(name, "ffn_down") ? "blk\\.1\\d\\.ffn_down" : "ffn_(up|gate)");
        prev = name;
    }
    assert_int_equal(tl_plan_override_of(p, want, &name, &dev, &pat), TL_ERR_INVALID_ARG);
    /* the rest is planned as usual: whole on the GPU; the host holds the overrides */
    tl_plan_decision d;
    assert_int_equal(tl_plan_decision_of(p, TL_COMP_OTHER, &d, sizeof d), TL_OK);
    assert_int_equal(d.bytes, total - moved);
    assert_int_equal(d.mode, TL_PLAN_MODE_GPU);
    assert_int_equal(tl_plan_host_bytes(p), moved);
    assert_int_equal(tl_plan_override_bytes(p, host), moved);
    assert_int_equal(tl_plan_override_bytes(p, 0), 0);
    for (size_t ph = 0; ph < tl_plan_phase_count(p); ph++)
        assert_int_equal(tl_plan_peak(p, 0, ph), total - moved);
    /* the placement sessions carry out */
    tl_plan_placement *pl;
    size_t n;
    assert_int_equal(tl_plan_place(p, m, &pl, &n), TL_OK);
    assert_int_equal(n, tl_model_tensor_count(m));
    for (size_t i = 0; i < n; i++) {
        const char *tn = tl_model_tensor(m, pl[i].tensor)->name;
        if (pl[i].device != (hand_cpu(tn) ? -1 : 0)) fail_msg("%s: placed on %d", tn, pl[i].device);
    }
    tl_free(pl);
    /* the JSON keeps them: read back, the same document and the same answers */
    char *js = NULL, *js2 = NULL;
    assert_int_equal(tl_plan_to_json(p, &js), TL_OK);
    tl_plan *q = NULL;
    assert_int_equal(tl_plan_from_json(js, strlen(js), &q), TL_OK);
    assert_int_equal(tl_plan_to_json(q, &js2), TL_OK);
    assert_string_equal(js, js2);
    assert_int_equal(tl_plan_override_count(q), want);
    assert_int_equal(tl_plan_override_find(q, "blk.12.ffn_down.weight"), host);
    assert_int_equal(tl_plan_override_find(q, "blk.2.ffn_down.weight"), TL_NOT_FOUND);
    cJSON *j = cJSON_Parse(js);
    const cJSON *ov = cJSON_GetObjectItemCaseSensitive(j, "overrides");
    assert_int_equal(cJSON_GetArraySize(ov), 2);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(
                         cJSON_GetArrayItem(ov, 1), "tensors")),
                     6);
    cJSON_Delete(j);
    char *txt = NULL;
    assert_int_equal(tl_plan_to_text(p, &txt), TL_OK);
    assert_non_null(strstr(txt, "'ffn_(up|gate)' -> cpu: 32 tensors"));
    tl_free(txt);
    tl_free(js);
    tl_free(js2);
    tl_plan_destroy(q);
    tl_plan_destroy(p);
    tl_model_close(m);
}

/* Overrides onto the GPU count there in every phase; over its budget the plan says so. */
static void test_gpu_overrides(void **state) {
    (void)state;
    tl_model *m = open_model();
    uint64_t down = 0, total = 0;
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        total += t->nbytes;
        if (strstr(t->name, ".ffn_down.")) down += t->nbytes;
    }
    tl_plan *p = NULL;
    assert_int_equal(plan(m, total - down / 2, "ffn_down=g", &p), TL_OK);
    tl_plan_decision d;
    assert_int_equal(tl_plan_decision_of(p, TL_COMP_OTHER, &d, sizeof d), TL_OK);
    assert_int_equal(d.bytes, total - down);
    assert_int_equal(tl_plan_override_bytes(p, 0), down);
    assert_true(tl_plan_peak(p, 0, 0) >= down); /* the overrides and what else fits */
    assert_true(tl_plan_peak(p, 0, 0) <= tl_plan_device_budget(p, 0));
    assert_int_equal(tl_plan_device_budget(p, 0), total - down / 2);
    tl_plan_placement *pl;
    size_t n;
    assert_int_equal(tl_plan_place(p, m, &pl, &n), TL_OK);
    for (size_t i = 0; i < n; i++)
        if (strstr(tl_model_tensor(m, pl[i].tensor)->name, ".ffn_down."))
            assert_int_equal(pl[i].device, 0);
    tl_free(pl);
    tl_plan_destroy(p);
    assert_int_equal(plan(m, down / 2, "ffn_down=g", &p), TL_OK);
    assert_false(tl_plan_feasible(p));
    assert_non_null(strstr(tl_plan_error(p), "overrides"));
    tl_plan_destroy(p);
    tl_model_close(m);
}

/* Count the tensors one pattern places. */
static size_t count(const tl_model *m, const char *ot) {
    tl_plan *p = NULL;
    if (plan(m, 64ull << 20, ot, &p)) fail_msg("%s: %s", ot, tl_last_error());
    size_t n = tl_plan_override_count(p);
    tl_plan_destroy(p);
    return n;
}

static void test_escapes(void **state) {
    (void)state;
    tl_model *m = open_model();
    /* 16 blocks: one digit for blk.0-9, two for blk.10-15 */
    assert_int_equal(count(m, "^blk\\.\\d\\.attn_q=cpu"), 10);
    assert_int_equal(count(m, "^blk\\.\\d\\d\\.attn_q=cpu"), 6);
    assert_int_equal(count(m, "^blk\\.[\\d]+\\.attn_q\\.weight$=cpu"), 16);
    assert_int_equal(count(m, "^blk\\.1\\D=cpu"), 9); /* blk.1.: its 9 tensors, not blk.1N */
    assert_int_equal(count(m, "attn_\\w\\.=cpu"), 16 * 3); /* q k v: not output, not norm */
    assert_int_equal(count(m, "\\s=cpu"), 0);
    assert_int_equal(count(m, "\\S\\W\\S=cpu"), (size_t)tl_model_tensor_count(m));
    /* the first pattern that matches wins */
    tl_plan *p = NULL;
    assert_int_equal(plan(m, 64ull << 20, "attn_q=g,attn=cpu", &p), TL_OK);
    assert_int_equal(tl_plan_override_find(p, "blk.3.attn_q.weight"), 0);
    assert_int_equal(tl_plan_override_find(p, "blk.3.attn_k.weight"), 1);
    tl_plan_destroy(p);
    tl_model_close(m);
}

static void test_errors(void **state) {
    (void)state;
    tl_model *m = open_model();
    tl_plan *p = NULL;
    assert_int_equal(plan(m, 64ull << 20, "ffn_(up=cpu", &p), TL_ERR_INVALID_ARG);
    assert_null(p);
    assert_non_null(strstr(tl_last_error(), "'ffn_(up'"));
    assert_int_equal(plan(m, 64ull << 20, "attn=cpu,ffn_=cuda7", &p), TL_ERR_NOT_FOUND);
    assert_non_null(strstr(tl_last_error(), "'ffn_'"));
    assert_non_null(strstr(tl_last_error(), "cuda7"));
    assert_int_equal(plan(m, 64ull << 20, "ffn_", &p), TL_ERR_INVALID_ARG);
    assert_int_equal(plan(m, 64ull << 20, "=cpu", &p), TL_ERR_INVALID_ARG);
    /* a summary has no names to match */
    tl_plan_summary s;
    assert_int_equal(tl_plan_summary_from_model(m, TL_DTYPE_INVALID, &s), TL_OK);
    tl_plan_device devs[2];
    devices(devs, 64ull << 20);
    tl_plan_options o;
    tl_plan_options_init(&o);
    o.overrides = "ffn_=cpu";
    assert_int_equal(tl_plan_create(&s, devs, 2, &o, &p), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "tl_plan_create_for_model"));
    tl_plan_summary_clear(&s);
    tl_model_close(m);
}

static void test_alloc_faults(void **state) {
    (void)state;
    tl_model *m = open_model();
    tl_plan *p = NULL;
    tl__fault_arm(TL_FAULT_ALLOC, 0, 0); /* count only */
    assert_int_equal(plan(m, 64ull << 20, OT_CPU, &p), TL_OK);
    unsigned long calls = tl__fault_calls(TL_FAULT_ALLOC);
    tl__fault_reset();
    tl_plan_destroy(p);
    assert_true(calls > 10);
    for (unsigned long nth = 1; nth <= calls; nth++) {
        tl__fault_arm(TL_FAULT_ALLOC, nth, ENOMEM);
        p = NULL;
        tl_status st = plan(m, 64ull << 20, OT_CPU, &p);
        tl__fault_reset();
        if (st != TL_ERR_NOMEM) fail_msg("allocation %lu of %lu failed: status %d", nth, calls, st);
        assert_null(p);
    }
    tl_model_close(m);
}

static uint64_t num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v)) fail_msg("key %s missing", k);
    return (uint64_t)v->valuedouble;
}

static void test_cli(void **state) {
    (void)state;
    tl_model *m = open_model();
    uint64_t rest = 0;
    size_t n_rest = 0;
    for (size_t i = 0; i < tl_model_tensor_count(m); i++)
        if (!hand_cpu(tl_model_tensor(m, i)->name)) {
            rest += tl_model_tensor(m, i)->nbytes;
            n_rest++;
        }
    tl_model_close(m);
    /* -ot twice and --override-tensor: joined like llama.cpp's */
    tu_run r = tu_cli_run("run", g_path, "--sim", "g=64M", "--reserve", "other=0", "-ot",
                          "ffn_(up|gate)=cpu", "--override-tensor", "blk\\.1\\d\\.ffn_down=cpu",
                          "--pipeline", "other", "--json", NULL);
    if (r.status) fail_msg("run: %s", r.err);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "totals");
    assert_int_equal(num(t, "bytes_to_devices"), rest); /* the overridden tensors stay on the host */
    assert_int_equal(num(t, "loads"), n_rest);
    assert_int_equal(num(t, "hash_mismatches"), 0);
    cJSON_Delete(j);
    tu_run_free(&r);
    /* the picture draws the overridden bytes as their own segment of each GPU bar */
    char *svg = tu_path(g_dir, "p.svg");
    r = tu_cli_run("plan", g_path, "--sim", "g=64M", "-ot", "ffn_(up|gate)=g", "--svg", svg, NULL);
    if (r.status) fail_msg("plan --svg: %s", r.err);
    tu_run_free(&r);
    size_t len;
    char *pic = tu_read_file(svg, &len);
    uint64_t upgate = 0;
    m = open_model();
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
        const char *tn = tl_model_tensor(m, i)->name;
        if (strstr(tn, "ffn_up") || strstr(tn, "ffn_gate")) upgate += tl_model_tensor(m, i)->nbytes;
    }
    tl_model_close(m);
    char want[96];
    snprintf(want, sizeof want, "data-kind=\"overrides\" data-bytes=\"%llu\"",
             (unsigned long long)upgate);
    assert_non_null(strstr(pic, want));
    free(pic);
    free(svg);
    r = tu_cli_run("plan", g_path, "--sim", "g=64M", "-ot", "ffn_(up=cpu", NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "ffn_(up"));
    tu_run_free(&r);
    r = tu_cli_run("plan", "--profile", "sd15", "-ot", "ffn_=cpu", NULL);
    assert_int_equal(r.status, 2);
    tu_run_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_overrides), cmocka_unit_test(test_gpu_overrides),
        cmocka_unit_test(test_escapes),        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_alloc_faults),   cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
