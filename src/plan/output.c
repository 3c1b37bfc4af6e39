/*
 * output.c — a plan's accessors, its JSON document (written byte-identically
 * for the same plan, and read back and validated for `tierload run --plan`)
 * and its human-readable text.
 */
#include "plan/plan.h"

#include "core/error.h"
#include "core/outsize.h"
#include "core/strbuf.h"
#include "os/os.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *mode_names[] = {"cpu", "gpu", "layer_split", "row_split", "stream"};

const char *tl_plan_mode_name(tl_plan_mode m) {
    return (unsigned)m < sizeof mode_names / sizeof mode_names[0] ? mode_names[m] : NULL;
}

void tl_plan_destroy(tl_plan *p) {
    if (p) tlp_overrides_free(p);
    free(p);
}
bool tl_plan_feasible(const tl_plan *p) {
    return p && p->feasible;
}
const char *tl_plan_error(const tl_plan *p) {
    return p ? p->error : "";
}
uint64_t tl_plan_shortfall(const tl_plan *p) {
    return p && !p->feasible ? p->shortfall : 0;
}
tl_status tl_plan_check(const tl_plan *p) {
    if (!p) return tl__err(TL_ERR_INVALID_ARG, "plan: NULL");
    if (p->feasible) return TL_OK;
    return tl__err(TL_ERR_INFEASIBLE, "%s", p->error);
}
size_t tl_plan_device_count(const tl_plan *p) {
    return p ? p->n_devices : 0;
}
const tl_plan_device *tl_plan_device_of(const tl_plan *p, size_t i) {
    return p && i < p->n_devices ? &p->devices[i] : NULL;
}
uint64_t tl_plan_device_budget(const tl_plan *p, size_t i) {
    return p && i < p->n_devices ? p->budget[i] : 0;
}
tl_status tl_plan_device_link(const tl_plan *p, size_t i, tl_plan_link *out, size_t out_size) {
    if (!p || !out || !out_size || i >= p->n_devices)
        return tl__err(TL_ERR_INVALID_ARG, "plan device link: bad argument");
    if (!(p->link[i].bandwidth > 0))
        return tl__err(TL_ERR_NOT_FOUND, "plan device '%s' is local: no link", p->devices[i].name);
    tl__copy_out(out, out_size, &p->link[i], sizeof p->link[i]);
    return TL_OK;
}
tl_status tl_plan_decision_of(const tl_plan *p, tl_component c, tl_plan_decision *out,
                              size_t out_size) {
    if (!p || !out || !out_size || (unsigned)c >= TL_COMP_COUNT)
        return tl__err(TL_ERR_INVALID_ARG, "plan decision: bad argument");
    tl__copy_out(out, out_size, &p->dec[c], sizeof p->dec[c]);
    return TL_OK;
}
size_t tl_plan_phase_count(const tl_plan *p) {
    return p ? p->phases.n : 0;
}
uint32_t tl_plan_phase_mask(const tl_plan *p, size_t i) {
    return p && i < p->phases.n ? p->phases.mask[i] : 0;
}
uint64_t tl_plan_peak(const tl_plan *p, size_t dev, size_t phase) {
    return p && dev < p->n_devices && phase < p->phases.n ? p->peak[dev][phase] : 0;
}
uint64_t tl_plan_moved_per_run(const tl_plan *p) {
    return p ? p->moved_per_run : 0;
}
uint64_t tl_plan_host_bytes(const tl_plan *p) {
    return p ? p->host_bytes : 0;
}
uint64_t tl_plan_score(const tl_plan *p) {
    return p ? p->score : 0;
}
const tl_vae_tiling *tl_plan_tiling(const tl_plan *p) {
    return p ? &p->tiling : NULL;
}

/* The name of a requested device index (TL_PLAN_HOST: the host's name). */
static const char *requested_name(const tl_plan *p, uint32_t dev) {
    if (dev != TL_PLAN_HOST) return dev < p->n_devices ? p->devices[dev].name : "?";
    for (size_t i = 0; i < p->n_devices; i++)
        if (!p->devices[i].is_gpu) return p->devices[i].name;
    return "cpu";
}

/* --- JSON out --- */

static cJSON *num(double v) {
    return cJSON_CreateNumber(v);
}

tl_status tl_plan_to_json(const tl_plan *p, char **out) {
    if (!p || !out) return tl__err(TL_ERR_INVALID_ARG, "plan json: NULL argument");
    *out = NULL;
    cJSON *root = cJSON_CreateObject();
    if (!root) return tl__err(TL_ERR_NOMEM, "plan json: out of memory");
    cJSON_AddItemToObject(root, "feasible", cJSON_CreateBool(p->feasible));
    cJSON_AddItemToObject(
        root, "model",
        cJSON_CreateString("weights with residency 'run' count on their GPUs in every phase; "
                           "'phase' weights and every compute reserve count only in their "
                           "component's phases; a device's peak is the maximum over phases"));
    cJSON_AddItemToObject(root, "error", cJSON_CreateString(p->error));
    if (!p->feasible)
        cJSON_AddItemToObject(root, "shortfall",
                              num(p->shortfall == UINT64_MAX ? -1 : (double)p->shortfall));
    cJSON *devs = cJSON_AddArrayToObject(root, "devices");
    for (size_t i = 0; i < p->n_devices; i++) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddItemToObject(d, "name", cJSON_CreateString(p->devices[i].name));
        cJSON_AddItemToObject(d, "gpu", cJSON_CreateBool(p->devices[i].is_gpu));
        cJSON_AddItemToObject(d, "total", num((double)p->devices[i].total));
        cJSON_AddItemToObject(d, "free", num((double)p->devices[i].free));
        cJSON_AddItemToObject(d, "budget", num((double)p->budget[i]));
        const tl_plan_link *l = &p->link[i];
        if (l->bandwidth > 0) {
            cJSON *lo = cJSON_AddObjectToObject(d, "link");
            cJSON_AddItemToObject(lo, "bandwidth", num(l->bandwidth));
            cJSON_AddItemToObject(lo, "latency", num(l->latency));
            cJSON_AddItemToObject(lo, "push_once", num((double)l->push_once));
            cJSON_AddItemToObject(lo, "per_run", num((double)l->per_run));
            cJSON_AddItemToObject(lo, "passes", num((double)l->passes));
            cJSON_AddItemToObject(lo, "seconds", num(l->seconds));
        }
        cJSON_AddItemToArray(devs, d);
    }
    cJSON *ph = cJSON_AddArrayToObject(root, "phases");
    char pn[96];
    for (uint32_t i = 0; i < p->phases.n; i++)
        cJSON_AddItemToArray(ph,
                             cJSON_CreateString(tlp_phase_name(p->phases.mask[i], pn, sizeof pn)));
    cJSON *comps = cJSON_AddArrayToObject(root, "components");
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        const tl_plan_decision *d = &p->dec[c];
        if (!d->present) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "name", cJSON_CreateString(tl_component_name((tl_component)c)));
        cJSON_AddItemToObject(o, "bytes", num((double)d->bytes));
        cJSON_AddItemToObject(o, "reserve", num((double)d->reserve));
        cJSON_AddItemToObject(o, "mode", cJSON_CreateString(tl_plan_mode_name(d->mode)));
        cJSON_AddItemToObject(o, "residency",
                              cJSON_CreateString(d->phase_resident ? "phase" : "run"));
        cJSON *dl = cJSON_AddArrayToObject(o, "devices");
        cJSON *sh = cJSON_AddArrayToObject(o, "shares");
        cJSON *db = cJSON_AddArrayToObject(o, "device_bytes");
        cJSON *ly = cJSON_AddArrayToObject(o, "layers");
        for (uint32_t i = 0; i < d->n_devices; i++) {
            cJSON_AddItemToArray(dl, cJSON_CreateString(p->devices[d->devices[i]].name));
            cJSON_AddItemToArray(sh, num(d->shares[i]));
            cJSON_AddItemToArray(db, num((double)d->device_bytes[i]));
            cJSON *r = cJSON_CreateArray();
            cJSON_AddItemToArray(r, num(d->layer_begin[i]));
            cJSON_AddItemToArray(r, num(d->layer_end[i]));
            cJSON_AddItemToArray(ly, r);
        }
        cJSON_AddItemToObject(o, "host_bytes", num((double)d->host_bytes));
        cJSON_AddItemToObject(o, "moved_per_run", num((double)d->moved_per_run));
        if (d->n_requested) {
            cJSON *rq = cJSON_AddArrayToObject(o, "requested");
            for (uint32_t i = 0; i < d->n_requested; i++)
                cJSON_AddItemToArray(rq, cJSON_CreateString(requested_name(p, d->requested[i])));
        }
        cJSON_AddItemToArray(comps, o);
    }
    if (p->n_orules) { /* per pattern: its device, bytes and the tensors it placed */
        cJSON *ov = cJSON_AddArrayToObject(root, "overrides");
        for (size_t r = 0; r < p->n_orules; r++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddItemToObject(o, "pattern", cJSON_CreateString(p->orules[r].pattern));
            cJSON_AddItemToObject(o, "device",
                                  cJSON_CreateString(p->devices[p->orules[r].device].name));
            cJSON_AddItemToObject(o, "bytes", num((double)p->orules[r].bytes));
            cJSON *tn = cJSON_AddArrayToObject(o, "tensors");
            for (size_t t = 0; t < p->n_otensors; t++)
                if (p->otensors[t].rule == r)
                    cJSON_AddItemToArray(tn, cJSON_CreateString(p->otensors[t].name));
            cJSON_AddItemToArray(ov, o);
        }
    }
    cJSON *peaks = cJSON_AddArrayToObject(root, "peaks");
    for (size_t i = 0; i < p->n_devices; i++) {
        if (!p->devices[i].is_gpu) continue;
        for (uint32_t k = 0; k < p->phases.n; k++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddItemToObject(o, "device", cJSON_CreateString(p->devices[i].name));
            cJSON_AddItemToObject(
                o, "phase", cJSON_CreateString(tlp_phase_name(p->phases.mask[k], pn, sizeof pn)));
            cJSON_AddItemToObject(o, "bytes", num((double)p->peak[i][k]));
            cJSON_AddItemToArray(peaks, o);
        }
    }
    cJSON_AddItemToObject(root, "moved_per_run", num((double)p->moved_per_run));
    cJSON_AddItemToObject(root, "host_bytes", num((double)p->host_bytes));
    cJSON_AddItemToObject(root, "score", num((double)p->score));
    if (p->tiling.decided) {
        const tl_vae_tiling *t = &p->tiling;
        cJSON *o = cJSON_AddObjectToObject(root, "vae_tiling");
        cJSON_AddItemToObject(o, "tiled", cJSON_CreateBool(t->tiled));
        cJSON_AddItemToObject(o, "latent_w", num(t->latent_w));
        cJSON_AddItemToObject(o, "latent_h", num(t->latent_h));
        cJSON_AddItemToObject(o, "frames", num(t->frames));
        cJSON_AddItemToObject(o, "tile", num(t->tile));
        cJSON_AddItemToObject(o, "overlap", num(t->overlap));
        cJSON_AddItemToObject(o, "tiles", num(t->tiles));
    }
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    if (!s) return tl__err(TL_ERR_NOMEM, "plan json: out of memory");
    *out = s;
    return TL_OK;
}

/* --- JSON in --- */

static tl_status bad(const char *what) {
    return tl__err(TL_ERR_FORMAT, "plan json: %s", what);
}

static bool get_u64(const cJSON *o, const char *key, uint64_t *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(it)) return false;
    double d = it->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return false;
    *v = (uint64_t)d;
    return true;
}

static bool get_bool(const cJSON *o, const char *key, bool *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsBool(it)) return false;
    *v = cJSON_IsTrue(it);
    return true;
}

static const char *get_str(const cJSON *o, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(it) && it->valuestring ? it->valuestring : NULL;
}

static int find_dev(const tl_plan *p, const char *name);

static int cmp_otensor(const void *a, const void *b) {
    return strcmp(((const tlp_otensor *)a)->name, ((const tlp_otensor *)b)->name);
}

/* "overrides": [{"pattern","device","bytes","tensors":[...]}], optional. */
static tl_status overrides_in(const cJSON *root, tl_plan *p) {
    const cJSON *ov = cJSON_GetObjectItemCaseSensitive(root, "overrides"), *it, *t;
    if (!ov) return TL_OK;
    if (!cJSON_IsArray(ov) || cJSON_GetArraySize(ov) == 0)
        return bad("'overrides' must be a non-empty array");
    size_t nr = (size_t)cJSON_GetArraySize(ov), nt = 0;
    cJSON_ArrayForEach(it, ov) {
        const cJSON *tn = cJSON_GetObjectItemCaseSensitive(it, "tensors");
        if (!cJSON_IsArray(tn)) return bad("an override has no 'tensors' array");
        nt += (size_t)cJSON_GetArraySize(tn);
    }
    p->orules = tl__os_calloc(nr, sizeof *p->orules);
    p->otensors = tl__os_calloc(nt ? nt : 1, sizeof *p->otensors);
    if (!p->orules || !p->otensors) return tl__err(TL_ERR_NOMEM, "plan json: out of memory");
    cJSON_ArrayForEach(it, ov) {
        tlp_orule *r = &p->orules[p->n_orules];
        const char *pat = get_str(it, "pattern"), *dn = get_str(it, "device");
        int di = dn ? find_dev(p, dn) : -1;
        if (!pat || di < 0 || !get_u64(it, "bytes", &r->bytes))
            return bad("an override needs a pattern, a device of the plan and bytes");
        r->pattern = tl__os_strdup(pat);
        if (!r->pattern) return tl__err(TL_ERR_NOMEM, "plan json: out of memory");
        r->device = (uint32_t)di;
        p->n_orules++;
        cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(it, "tensors")) {
            if (!cJSON_IsString(t) || !t->valuestring) return bad("an override's tensor is not a name");
            tlp_otensor *o = &p->otensors[p->n_otensors];
            o->name = tl__os_strdup(t->valuestring);
            if (!o->name) return tl__err(TL_ERR_NOMEM, "plan json: out of memory");
            o->rule = (uint32_t)(p->n_orules - 1);
            p->n_otensors++;
            r->n++;
        }
    }
    qsort(p->otensors, p->n_otensors, sizeof *p->otensors, cmp_otensor);
    for (size_t i = 1; i < p->n_otensors; i++)
        if (!strcmp(p->otensors[i - 1].name, p->otensors[i].name))
            return bad("a tensor is in two overrides");
    return TL_OK;
}

static int find_dev(const tl_plan *p, const char *name) {
    for (size_t i = 0; i < p->n_devices; i++)
        if (!strcmp(p->devices[i].name, name)) return (int)i;
    return -1;
}

static int find_phase(const tl_plan *p, const char *name) {
    char pn[96];
    for (uint32_t i = 0; i < p->phases.n; i++)
        if (!strcmp(tlp_phase_name(p->phases.mask[i], pn, sizeof pn), name)) return (int)i;
    return -1;
}

static tl_status parse_doc(const cJSON *root, tl_plan *p) {
    char msg[160];
    if (!cJSON_IsObject(root)) return bad("not an object");
    if (!get_bool(root, "feasible", &p->feasible)) return bad("'feasible' missing or not a bool");
    const char *err = get_str(root, "error");
    if (!err) return bad("'error' missing or not a string");
    snprintf(p->error, sizeof p->error, "%s", err);
    const cJSON *sf = cJSON_GetObjectItemCaseSensitive(root, "shortfall");
    if (sf) {
        if (cJSON_IsNumber(sf) && sf->valuedouble == -1)
            p->shortfall = UINT64_MAX;
        else if (!get_u64(root, "shortfall", &p->shortfall))
            return bad("'shortfall' must be a byte count or -1");
    }
    const cJSON *devs = cJSON_GetObjectItemCaseSensitive(root, "devices");
    if (!cJSON_IsArray(devs)) return bad("'devices' missing or not an array");
    int nd = cJSON_GetArraySize(devs);
    if (nd < 1 || nd > TL_PLAN_MAX_DEVICES) {
        snprintf(msg, sizeof msg, "'devices' must have 1..%d entries", TL_PLAN_MAX_DEVICES);
        return bad(msg);
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, devs) {
        tl_plan_device *d = &p->devices[p->n_devices];
        const char *name = get_str(it, "name");
        if (!name || !*name || strlen(name) >= sizeof d->name)
            return bad("a device has a missing or too long name");
        snprintf(d->name, sizeof d->name, "%s", name);
        if (find_dev(p, name) >= 0) {
            snprintf(msg, sizeof msg, "device '%s' listed twice", name);
            return bad(msg);
        }
        if (!get_bool(it, "gpu", &d->is_gpu) || !get_u64(it, "total", &d->total) ||
            !get_u64(it, "free", &d->free) || !get_u64(it, "budget", &p->budget[p->n_devices])) {
            snprintf(msg, sizeof msg, "device '%s': gpu, total, free and budget are required",
                     name);
            return bad(msg);
        }
        const cJSON *lo = cJSON_GetObjectItemCaseSensitive(it, "link");
        if (lo) {
            tl_plan_link *l = &p->link[p->n_devices];
            const cJSON *bw = cJSON_GetObjectItemCaseSensitive(lo, "bandwidth");
            const cJSON *lat = cJSON_GetObjectItemCaseSensitive(lo, "latency");
            const cJSON *sec = cJSON_GetObjectItemCaseSensitive(lo, "seconds");
            if (!cJSON_IsNumber(bw) || !(bw->valuedouble > 0) || !cJSON_IsNumber(lat) ||
                !(lat->valuedouble >= 0) || !cJSON_IsNumber(sec) || !(sec->valuedouble >= 0) ||
                !get_u64(lo, "push_once", &l->push_once) || !get_u64(lo, "per_run", &l->per_run) ||
                !get_u64(lo, "passes", &l->passes)) {
                snprintf(msg, sizeof msg,
                         "device '%s': link needs bandwidth > 0, latency, push_once, per_run, "
                         "passes and seconds",
                         name);
                return bad(msg);
            }
            l->bandwidth = bw->valuedouble;
            l->latency = lat->valuedouble;
            l->seconds = sec->valuedouble;
        }
        p->n_devices++;
    }
    const cJSON *ph = cJSON_GetObjectItemCaseSensitive(root, "phases");
    if (!cJSON_IsArray(ph) || cJSON_GetArraySize(ph) < 1 ||
        cJSON_GetArraySize(ph) > TL_PLAN_MAX_PHASES)
        return bad("'phases' must be an array of 1..8 names");
    {
        char sched[512];
        size_t at = 0;
        cJSON_ArrayForEach(it, ph) {
            if (!cJSON_IsString(it) || strlen(it->valuestring) > 200)
                return bad("a phase is not a short string");
            if (at + strlen(it->valuestring) + 2 >= sizeof sched) return bad("phases too long");
            at += (size_t)snprintf(sched + at, sizeof sched - at, "%s%s", at ? "," : "",
                                   it->valuestring);
        }
        tl_status st = tl_plan_parse_phases(sched, &p->phases);
        if (st) return tl__err_prefix(TL_ERR_FORMAT, "plan json");
    }
    const cJSON *comps = cJSON_GetObjectItemCaseSensitive(root, "components");
    if (!cJSON_IsArray(comps)) return bad("'components' missing or not an array");
    cJSON_ArrayForEach(it, comps) {
        const char *name = get_str(it, "name");
        if (!name) return bad("a component has no name");
        int c = -1;
        for (int k = 0; k < TL_COMP_COUNT; k++)
            if (!strcmp(name, tl_component_name((tl_component)k))) c = k;
        if (c < 0) {
            snprintf(msg, sizeof msg, "unknown component '%.40s'", name);
            return bad(msg);
        }
        tl_plan_decision *d = &p->dec[c];
        if (d->present) {
            snprintf(msg, sizeof msg, "component '%s' listed twice", name);
            return bad(msg);
        }
        d->present = true;
        const char *mode = get_str(it, "mode"), *res = get_str(it, "residency");
        int m = -1;
        for (int k = 0; mode && k < 5; k++)
            if (!strcmp(mode, mode_names[k])) m = k;
        if (m < 0 || !res || (strcmp(res, "run") && strcmp(res, "phase")) ||
            !get_u64(it, "bytes", &d->bytes) || !get_u64(it, "reserve", &d->reserve) ||
            !get_u64(it, "host_bytes", &d->host_bytes) ||
            !get_u64(it, "moved_per_run", &d->moved_per_run)) {
            snprintf(msg, sizeof msg,
                     "component '%s': mode, residency, bytes, reserve, host_bytes, moved_per_run "
                     "are required",
                     name);
            return bad(msg);
        }
        d->mode = (tl_plan_mode)m;
        d->phase_resident = !strcmp(res, "phase");
        const cJSON *dl = cJSON_GetObjectItemCaseSensitive(it, "devices");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shares");
        const cJSON *db = cJSON_GetObjectItemCaseSensitive(it, "device_bytes");
        const cJSON *ly = cJSON_GetObjectItemCaseSensitive(it, "layers");
        if (!cJSON_IsArray(dl) || !cJSON_IsArray(sh) || !cJSON_IsArray(db) ||
            cJSON_GetArraySize(dl) != cJSON_GetArraySize(sh) ||
            cJSON_GetArraySize(dl) != cJSON_GetArraySize(db) || !cJSON_IsArray(ly) ||
            cJSON_GetArraySize(dl) != cJSON_GetArraySize(ly) ||
            cJSON_GetArraySize(dl) > TL_PLAN_MAX_DEVICES) {
            snprintf(
                msg, sizeof msg,
                "component '%s': devices, shares and device_bytes must be arrays of one length",
                name);
            return bad(msg);
        }
        int n = cJSON_GetArraySize(dl);
        bool ok_n = (m == TL_PLAN_MODE_CPU && n == 0) || (m == TL_PLAN_MODE_GPU && n == 1) ||
                    ((m == TL_PLAN_MODE_LAYER_SPLIT || m == TL_PLAN_MODE_ROW_SPLIT) && n >= 2) ||
                    (m == TL_PLAN_MODE_STREAM && n >= 1);
        if (!ok_n) {
            snprintf(msg, sizeof msg, "component '%s': mode %s with %d devices", name, mode, n);
            return bad(msg);
        }
        uint64_t sum = 0;
        for (int i = 0; i < n; i++) {
            const cJSON *dn = cJSON_GetArrayItem(dl, i), *s = cJSON_GetArrayItem(sh, i),
                        *b = cJSON_GetArrayItem(db, i);
            int di = cJSON_IsString(dn) ? find_dev(p, dn->valuestring) : -1;
            if (di < 0 || !p->devices[di].is_gpu) {
                snprintf(msg, sizeof msg, "component '%s': device %d is not a GPU of 'devices'",
                         name, i);
                return bad(msg);
            }
            for (int j = 0; j < i; j++)
                if (d->devices[j] == (uint32_t)di) {
                    snprintf(msg, sizeof msg, "component '%s': device '%s' listed twice", name,
                             dn->valuestring);
                    return bad(msg);
                }
            if (!cJSON_IsNumber(s) || !(s->valuedouble >= 0 && s->valuedouble <= 1) ||
                !cJSON_IsNumber(b) || !(b->valuedouble >= 0) ||
                b->valuedouble > 9007199254740992.0 || b->valuedouble != floor(b->valuedouble)) {
                snprintf(msg, sizeof msg, "component '%s': bad share or device_bytes", name);
                return bad(msg);
            }
            const cJSON *r = cJSON_GetArrayItem(ly, i);
            const cJSON *r0 = cJSON_GetArrayItem(r, 0), *r1 = cJSON_GetArrayItem(r, 1);
            if (!cJSON_IsArray(r) || cJSON_GetArraySize(r) != 2 || !cJSON_IsNumber(r0) ||
                !cJSON_IsNumber(r1) || !(r0->valuedouble >= 0) ||
                !(r1->valuedouble >= r0->valuedouble) || r1->valuedouble > UINT32_MAX ||
                r0->valuedouble != floor(r0->valuedouble) ||
                r1->valuedouble != floor(r1->valuedouble)) {
                snprintf(msg, sizeof msg, "component '%s': layers must be [begin, end] pairs",
                         name);
                return bad(msg);
            }
            d->layer_begin[i] = (uint32_t)r0->valuedouble;
            d->layer_end[i] = (uint32_t)r1->valuedouble;
            d->devices[i] = (uint32_t)di;
            d->shares[i] = s->valuedouble;
            d->device_bytes[i] = (uint64_t)b->valuedouble;
            sum += d->device_bytes[i];
        }
        d->n_devices = (uint32_t)n;
        const cJSON *rq = cJSON_GetObjectItemCaseSensitive(it, "requested");
        if (rq) {
            if (!cJSON_IsArray(rq) || cJSON_GetArraySize(rq) < 1 ||
                cJSON_GetArraySize(rq) > TL_PLAN_MAX_DEVICES) {
                snprintf(msg, sizeof msg, "component '%s': 'requested' must list devices", name);
                return bad(msg);
            }
            const cJSON *r;
            cJSON_ArrayForEach(r, rq) {
                int di = cJSON_IsString(r) ? find_dev(p, r->valuestring) : -1;
                if (di < 0) {
                    snprintf(msg, sizeof msg,
                             "component '%s': requested device is not in 'devices'", name);
                    return bad(msg);
                }
                d->requested[d->n_requested++] =
                    p->devices[di].is_gpu ? (uint32_t)di : TL_PLAN_HOST;
            }
        }
        if (sum > d->bytes) {
            snprintf(msg, sizeof msg, "component '%s': device_bytes exceed its bytes", name);
            return bad(msg);
        }
    }
    tl_status ost = overrides_in(root, p);
    if (ost) return ost;
    const cJSON *peaks = cJSON_GetObjectItemCaseSensitive(root, "peaks");
    if (!cJSON_IsArray(peaks)) return bad("'peaks' missing or not an array");
    cJSON_ArrayForEach(it, peaks) {
        const char *dn = get_str(it, "device"), *pn2 = get_str(it, "phase");
        int di = dn ? find_dev(p, dn) : -1, pi = pn2 ? find_phase(p, pn2) : -1;
        uint64_t b;
        if (di < 0 || pi < 0 || !get_u64(it, "bytes", &b))
            return bad("a peak names an unknown device or phase");
        p->peak[di][pi] = b;
    }
    if (!get_u64(root, "moved_per_run", &p->moved_per_run) ||
        !get_u64(root, "host_bytes", &p->host_bytes) || !get_u64(root, "score", &p->score))
        return bad("moved_per_run, host_bytes and score are required");
    const cJSON *vt = cJSON_GetObjectItemCaseSensitive(root, "vae_tiling");
    if (vt) {
        tl_vae_tiling *t = &p->tiling;
        uint64_t w, h, f, tile, tiles;
        const cJSON *ov = cJSON_GetObjectItemCaseSensitive(vt, "overlap");
        if (!cJSON_IsObject(vt) || !get_bool(vt, "tiled", &t->tiled) ||
            !get_u64(vt, "latent_w", &w) || !get_u64(vt, "latent_h", &h) ||
            !get_u64(vt, "frames", &f) || !get_u64(vt, "tile", &tile) ||
            !get_u64(vt, "tiles", &tiles) || !cJSON_IsNumber(ov) || w > UINT32_MAX ||
            h > UINT32_MAX || f > UINT32_MAX || tile > UINT32_MAX || tiles > UINT32_MAX)
            return bad("'vae_tiling' is malformed");
        t->decided = true;
        t->latent_w = (uint32_t)w;
        t->latent_h = (uint32_t)h;
        t->frames = (uint32_t)f;
        t->tile = (uint32_t)tile;
        t->tiles = (uint32_t)tiles;
        t->overlap = ov->valuedouble;
    }
    return TL_OK;
}

tl_status tl_plan_from_json(const char *json, size_t len, tl_plan **out) {
    if (!json || !out) return tl__err(TL_ERR_INVALID_ARG, "plan json: NULL argument");
    *out = NULL;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return tl__err(TL_ERR_FORMAT, "plan json: not valid JSON");
    tl_plan *p = tl__os_calloc(1, sizeof *p);
    if (!p) {
        cJSON_Delete(root);
        return tl__err(TL_ERR_NOMEM, "plan json: out of memory");
    }
    tl_status st = parse_doc(root, p);
    cJSON_Delete(root);
    if (st) {
        tl_plan_destroy(p);
        return st;
    }
    *out = p;
    return TL_OK;
}

/* --- text --- */

tl_status tl_plan_to_text(const tl_plan *p, char **out) {
    if (!p || !out) return tl__err(TL_ERR_INVALID_ARG, "plan text: NULL argument");
    *out = NULL;
    tl__strbuf b = {0};
    char x1[32], x2[32], x3[32], pn[96];
    bool placed = false;
    for (int c = 0; c < TL_COMP_COUNT; c++)
        placed |= p->dec[c].present && p->dec[c].n_devices > 0;
    if (!p->feasible) {
        tl__strbuf_printf(&b, "INFEASIBLE: %s\n\n", p->error);
        if (p->shortfall != UINT64_MAX)
            tl__strbuf_printf(&b,
                             "best effort below: the placement that fits with %s more on every "
                             "GPU; the peaks show how far each device is over its budget\n\n",
                             tl_fmt_bytes(p->shortfall, x1, sizeof x1));
        else if (placed)
            tl__strbuf_printf(&b, "best effort below: the placement asked for, with budgets more "
                                 "than 64 GiB larger; the peaks show how far each device is over "
                                 "its budget\n\n");
        else
            tl__strbuf_printf(&b, "nothing below is placed: the placement asked for cannot fit "
                                 "any budget\n\n");
    }
    tl__strbuf_printf(&b, "devices:\n");
    for (size_t i = 0; i < p->n_devices; i++) {
        const tl_plan_device *d = &p->devices[i];
        if (d->is_gpu)
            tl__strbuf_printf(&b, "  %-10s gpu   total %11s  free %11s  budget %11s\n", d->name,
                             tl_fmt_bytes(d->total, x1, sizeof x1),
                             tl_fmt_bytes(d->free, x2, sizeof x2),
                             tl_fmt_bytes(p->budget[i], x3, sizeof x3));
        else if (d->free)
            tl__strbuf_printf(&b, "  %-10s host  total %11s  free %11s\n", d->name,
                             tl_fmt_bytes(d->total, x1, sizeof x1),
                             tl_fmt_bytes(d->free, x2, sizeof x2));
        else
            tl__strbuf_printf(&b, "  %-10s host  (memory not given)\n", d->name);
    }
    bool any_link = false;
    for (size_t i = 0; i < p->n_devices; i++)
        any_link |= p->link[i].bandwidth > 0;
    if (any_link) {
        tl__strbuf_printf(&b, "links (weights resident for the run cross once per model; per run: "
                              "weights reloaded or streamed, and per pass a round trip and %s of "
                              "activations each way):\n",
                          tl_fmt_bytes(TL_PLAN_LINK_PASS_BYTES, x1, sizeof x1));
        for (size_t i = 0; i < p->n_devices; i++) {
            const tl_plan_link *l = &p->link[i];
            if (!(l->bandwidth > 0)) continue;
            tl__strbuf_printf(&b,
                              "  %-10s %s/s, round trip %.0f us: once %11s, per run %11s in %llu "
                              "pass%s, %.3f s per run\n",
                              p->devices[i].name, tl_fmt_bytes((uint64_t)l->bandwidth, x1, sizeof x1),
                              l->latency * 1e6, tl_fmt_bytes(l->push_once, x2, sizeof x2),
                              tl_fmt_bytes(l->per_run, x3, sizeof x3), (unsigned long long)l->passes,
                              l->passes == 1 ? "" : "es", l->seconds);
        }
    }
    tl__strbuf_printf(&b, "components:\n");
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        const tl_plan_decision *d = &p->dec[c];
        if (!d->present) continue;
        tl__strbuf_printf(&b, "  %-10s params %11s  reserve %11s  %s",
                         tl_component_name((tl_component)c), tl_fmt_bytes(d->bytes, x1, sizeof x1),
                         tl_fmt_bytes(d->reserve, x2, sizeof x2), tl_plan_mode_name(d->mode));
        for (uint32_t i = 0; i < d->n_devices; i++) {
            tl__strbuf_printf(&b, "%s%s %s (%.1f%%", i ? " + " : " on ",
                             p->devices[d->devices[i]].name,
                             tl_fmt_bytes(d->device_bytes[i], x1, sizeof x1), d->shares[i] * 100);
            if ((d->mode == TL_PLAN_MODE_LAYER_SPLIT || d->mode == TL_PLAN_MODE_STREAM) &&
                d->layer_end[i] > d->layer_begin[i])
                tl__strbuf_printf(&b, ", layers %u-%u", d->layer_begin[i], d->layer_end[i] - 1);
            tl__strbuf_printf(&b, ")");
        }
        uint64_t kept = 0;
        for (uint32_t i = 0; i < d->n_devices; i++)
            kept += d->device_bytes[i];
        if (d->mode == TL_PLAN_MODE_STREAM && !kept)
            tl__strbuf_printf(&b, "; nothing kept on the device: all %s streamed from RAM every pass",
                              tl_fmt_bytes(d->host_bytes, x1, sizeof x1));
        else if (d->mode == TL_PLAN_MODE_STREAM)
            tl__strbuf_printf(&b, "; those kept %s; %s streamed from RAM every pass",
                              d->phase_resident ? "for its phase only (reloaded every run)"
                                                : "for the whole run",
                              tl_fmt_bytes(d->host_bytes, x1, sizeof x1));
        else if (d->mode != TL_PLAN_MODE_CPU)
            tl__strbuf_printf(&b, "; weights kept %s",
                              d->phase_resident ? "for its phase only (reloaded every run)"
                                                : "for the whole run");
        if (d->moved_per_run)
            tl__strbuf_printf(&b, "; moves %s per run",
                             tl_fmt_bytes(d->moved_per_run, x1, sizeof x1));
        if (!p->feasible && d->n_requested) {
            tl__strbuf_printf(&b, "; asked for ");
            for (uint32_t i = 0; i < d->n_requested; i++)
                tl__strbuf_printf(&b, "%s%s", i ? "&" : "", requested_name(p, d->requested[i]));
        }
        tl__strbuf_printf(&b, "\n");
    }
    if (p->n_orules) tl__strbuf_printf(&b, "tensor overrides (kept on their device for the whole run):\n");
    for (size_t r = 0; r < p->n_orules; r++)
        tl__strbuf_printf(&b, "  '%s' -> %s: %zu tensor%s, %s\n", p->orules[r].pattern,
                          p->devices[p->orules[r].device].name, p->orules[r].n,
                          p->orules[r].n == 1 ? "" : "s",
                          tl_fmt_bytes(p->orules[r].bytes, x1, sizeof x1));
    tl__strbuf_printf(&b, "projected peak per device and phase:\n");
    bool any_gpu = false;
    for (size_t i = 0; i < p->n_devices; i++)
        any_gpu |= p->devices[i].is_gpu;
    if (!any_gpu) tl__strbuf_printf(&b, "  (no GPU)\n");
    for (size_t i = 0; i < p->n_devices; i++) {
        if (!p->devices[i].is_gpu) continue;
        tl__strbuf_printf(&b, "  %-10s", p->devices[i].name);
        for (uint32_t k = 0; k < p->phases.n; k++)
            tl__strbuf_printf(&b, "%s%s %s", k ? " | " : " ",
                             tlp_phase_name(p->phases.mask[k], pn, sizeof pn),
                             tl_fmt_bytes(p->peak[i][k], x1, sizeof x1));
        tl__strbuf_printf(&b, "  (budget %s)\n", tl_fmt_bytes(p->budget[i], x1, sizeof x1));
    }
    tl__strbuf_printf(&b, "host RAM for weights: %s", tl_fmt_bytes(p->host_bytes, x1, sizeof x1));
    for (size_t i = 0; i < p->n_devices; i++)
        if (!p->devices[i].is_gpu && p->devices[i].free && p->host_bytes > p->devices[i].free)
            tl__strbuf_printf(
                &b, " (more than the %s free: clean weights will be paged from their files)",
                tl_fmt_bytes(p->devices[i].free, x2, sizeof x2));
    tl__strbuf_printf(&b, "\n");
    tl__strbuf_printf(&b, "bytes moved per run: %s\n",
                     tl_fmt_bytes(p->moved_per_run, x1, sizeof x1));
    if (p->tiling.decided) {
        const tl_vae_tiling *t = &p->tiling;
        if (t->tiled)
            tl__strbuf_printf(
                &b,
                "vae: tiled, tile %ux%u latent px (overlap %.1f), %u tiles per frame (latent "
                "%ux%ux%u)\n",
                t->tile, t->tile, t->overlap, t->tiles, t->latent_w, t->latent_h, t->frames);
        else
            tl__strbuf_printf(&b, "vae: untiled (latent %ux%ux%u fits the vae reserve)\n",
                             t->latent_w, t->latent_h, t->frames);
    }
    tl__strbuf_printf(
        &b, "model: weights kept for the whole run count in every phase; weights kept for a "
            "phase only,\n"
            "       and every compute reserve, count in their component's phases; peak = max "
            "over phases\n");
    if (b.oom) {
        free(b.s);
        return tl__err(TL_ERR_NOMEM, "plan text: out of memory");
    }
    *out = b.s;
    return TL_OK;
}
