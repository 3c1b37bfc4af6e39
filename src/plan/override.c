/*
 * override.c — per-tensor placements in a plan, as llama.cpp's
 * --override-tensor: "PATTERN=DEVICE,..." where PATTERN is a POSIX extended
 * regular expression with the escapes llama.cpp users write (\d, \w, \s, their
 * negations, \.) translated. The first pattern that matches a tensor's name
 * places it on its device for the whole run; the planner sees the other
 * tensors only, with the placed bytes taken off that device's budget in
 * every phase. The plan keeps each pattern (device, bytes, count) and the
 * tensors it placed, sorted by name, for placements, text and JSON.
 */
#include "plan/plan.h"

#include "core/error.h"
#include "core/options.h"
#include "core/rules.h"
#include "os/os.h"

#include <stdlib.h>
#include <string.h>

/* The rules with, per rule, what it placed. */
typedef struct rules {
    tl__rules r;
    uint64_t *bytes;
    size_t *count;
    uint32_t *device;
} rules;

static void rules_free(rules *r) {
    tl__rules_free(&r->r);
    free(r->bytes);
    free(r->count);
    free(r->device);
    memset(r, 0, sizeof *r);
}

static tl_status rules_parse(const char *spec, rules *r) {
    memset(r, 0, sizeof *r);
    tl_status st = tl__rules_parse(spec, "override", "PATTERN=DEVICE", &r->r);
    if (st) return st;
    size_t n = r->r.n ? r->r.n : 1;
    r->bytes = tl__os_calloc(n, sizeof *r->bytes);
    r->count = tl__os_calloc(n, sizeof *r->count);
    r->device = tl__os_calloc(n, sizeof *r->device);
    if (!r->bytes || !r->count || !r->device) return tl__err(TL_ERR_NOMEM, "overrides: out of memory");
    return TL_OK;
}

/* The summary of m without the tensors a rule placed (rule_of[i] != 0); layers stay numbered. */
static tl_status summary_rest(const tl_model *m, const tl__type_rules *types, tl_dtype convert,
                              const uint32_t *rule_of, tl_plan_summary *s) {
    tl_plan_summary_init(s);
    tl_status st = TL_OK;
    for (int c = 0; c < TL_COMP_COUNT && !st; c++) {
        size_t nl = tl_model_layer_count(m, (tl_component)c);
        for (size_t k = 0; k <= nl && !st; k++) {
            const size_t *idx;
            size_t n = k < nl ? tl_model_layer_tensors(m, (tl_component)c, k, &idx)
                              : tl_model_other_tensors(m, (tl_component)c, &idx);
            uint64_t bytes = 0, mb = 0;
            for (size_t j = 0; j < n; j++) {
                if (rule_of[idx[j]]) continue;
                uint64_t b, x;
                tlp_tensor_bytes(tl_model_tensor(m, idx[j]), types, convert, &b, &x);
                bytes += b;
                mb += x;
            }
            if (k < nl)
                st = tl_plan_summary_add_layer(s, (tl_component)c, bytes, mb);
            else if (bytes)
                st = tl_plan_summary_add_other(s, (tl_component)c, bytes, mb);
        }
    }
    if (st) tl_plan_summary_clear(s);
    return st;
}

static int cmp_otensor(const void *a, const void *b) {
    return strcmp(((const tlp_otensor *)a)->name, ((const tlp_otensor *)b)->name);
}

/* Keep the rules and the tensors they placed in the plan. */
static tl_status keep(tl_plan *p, const tl_model *m, const rules *r, const uint32_t *rule_of,
                      size_t n_placed) {
    p->orules = tl__os_calloc(r->r.n, sizeof *p->orules);
    p->otensors = tl__os_calloc(n_placed ? n_placed : 1, sizeof *p->otensors);
    if (!p->orules || !p->otensors) return tl__err(TL_ERR_NOMEM, "overrides: out of memory");
    for (size_t i = 0; i < r->r.n; i++) {
        p->orules[i] = (tlp_orule){tl__os_strdup(r->r.pattern[i]), r->device[i], r->bytes[i],
                                   r->count[i]};
        p->n_orules = i + 1;
        if (!p->orules[i].pattern) return tl__err(TL_ERR_NOMEM, "overrides: out of memory");
    }
    for (size_t t = 0; t < tl_model_tensor_count(m); t++) {
        if (!rule_of[t]) continue;
        tlp_otensor *o = &p->otensors[p->n_otensors];
        o->name = tl__os_strdup(tl_model_tensor(m, t)->name);
        o->rule = rule_of[t] - 1;
        if (!o->name) return tl__err(TL_ERR_NOMEM, "overrides: out of memory");
        p->n_otensors++;
    }
    qsort(p->otensors, p->n_otensors, sizeof *p->otensors, cmp_otensor);
    return TL_OK;
}

tl_status tl_plan_create_for_model(const tl_model *m, tl_dtype convert,
                                   const tl_plan_device *devs, size_t n_devs,
                                   const tl_plan_options *opts, tl_plan **out) {
    if (!m || !out) return tl__err(TL_ERR_INVALID_ARG, "plan: NULL model or output");
    *out = NULL;
    tl_plan_options o;
    tl_plan_options_init(&o);
    tl_status st = tl__options_take(&o, sizeof o, opts, "tl_plan_options");
    if (st) return st;
    /* the type rules count in the summary: the planner itself sees only bytes */
    tl__type_rules types;
    st = tl__type_rules_parse(o.type_rules, &types);
    o.type_rules = NULL;
    tl_plan_summary sum;
    if (!st && (!o.overrides || !*o.overrides)) {
        if (!(st = tlp_summary_from_model(m, &types, convert, &sum))) {
            st = tl_plan_create(&sum, devs, n_devs, &o, out);
            tl_plan_summary_clear(&sum);
        }
    }
    if (st || !o.overrides || !*o.overrides) {
        tl__type_rules_free(&types);
        return st;
    }
    rules r = {0};
    size_t nt = tl_model_tensor_count(m), placed = 0;
    uint32_t *rule_of = tl__os_calloc(nt ? nt : 1, sizeof *rule_of);
    st = rule_of ? rules_parse(o.overrides, &r)
                 : tl__err(TL_ERR_NOMEM, "overrides: out of memory");
    for (size_t t = 0; t < nt && !st; t++) {
        const tl_tensor_info *ti = tl_model_tensor(m, t);
        size_t i = tl__rules_match(&r.r, ti->name);
        if (i < r.r.n) {
            uint64_t b, x;
            tlp_tensor_bytes(ti, &types, convert, &b, &x);
            rule_of[t] = (uint32_t)i + 1;
            r.bytes[i] += b;
            r.count[i]++;
            placed++;
        }
    }
    bool have_sum = false;
    if (!st) st = summary_rest(m, &types, convert, rule_of, &sum);
    have_sum = !st;
    tl_plan *p = NULL;
    if (!st) {
        tlp_fixed fx = {r.r.n, (const char *const *)r.r.value, (const char *const *)r.r.pattern,
                        r.bytes, r.device};
        st = tlp_create_fixed(&sum, devs, n_devs, &o, false, &fx, &p);
    }
    if (!st) st = keep(p, m, &r, rule_of, placed);
    if (st) {
        tl_plan_destroy(p);
        p = NULL;
    }
    if (have_sum) tl_plan_summary_clear(&sum);
    rules_free(&r);
    tl__type_rules_free(&types);
    free(rule_of);
    *out = p;
    return st;
}

void tlp_overrides_free(tl_plan *p) {
    for (size_t i = 0; i < p->n_orules; i++) free(p->orules[i].pattern);
    for (size_t i = 0; i < p->n_otensors; i++) free(p->otensors[i].name);
    free(p->orules);
    free(p->otensors);
    p->orules = NULL;
    p->otensors = NULL;
    p->n_orules = p->n_otensors = 0;
}

size_t tl_plan_override_count(const tl_plan *p) {
    return p ? p->n_otensors : 0;
}

tl_status tl_plan_override_of(const tl_plan *p, size_t i, const char **tensor, size_t *device,
                              const char **pattern) {
    if (!p || i >= p->n_otensors)
        return tl__err(TL_ERR_INVALID_ARG, "plan override %zu: out of range (%zu)", i,
                       p ? p->n_otensors : 0);
    const tlp_otensor *o = &p->otensors[i];
    if (tensor) *tensor = o->name;
    if (device) *device = p->orules[o->rule].device;
    if (pattern) *pattern = p->orules[o->rule].pattern;
    return TL_OK;
}

uint64_t tl_plan_override_bytes(const tl_plan *p, size_t device) {
    uint64_t b = 0;
    for (size_t r = 0; p && r < p->n_orules; r++)
        if (p->orules[r].device == device) b += p->orules[r].bytes;
    return b;
}

size_t tl_plan_override_find(const tl_plan *p, const char *tensor) {
    if (!p || !tensor || !p->n_otensors) return TL_NOT_FOUND;
    tlp_otensor key = {(char *)tensor, 0};
    const tlp_otensor *o =
        bsearch(&key, p->otensors, p->n_otensors, sizeof *p->otensors, cmp_otensor);
    return o ? p->orules[o->rule].device : TL_NOT_FOUND;
}
