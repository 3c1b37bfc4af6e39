/*
 * placement.c — from a plan's per-component decisions to a place per tensor
 * (and per row block of a row-split matrix), using the model's own
 * (component, layer) grouping (groups.c) — the same layers the planner
 * counted. The rule is written out in tierload.h above tl_session_create.
 */
#include "residency/residency.h"

#include "core/error.h"
#include "os/os.h"

#include <stdlib.h>
#include <string.h>

typedef struct placer {
    tlr_place *p;
    size_t n, cap;
} placer;

static tl_status add(placer *pl, tlr_place x) {
    if (pl->n == pl->cap) {
        size_t nc = pl->cap ? pl->cap * 2 : 256;
        tlr_place *q = tl__os_realloc(pl->p, nc * sizeof *q);
        if (!q) return tl__err(TL_ERR_NOMEM, "session: out of memory placing tensors");
        pl->p = q;
        pl->cap = nc;
    }
    pl->p[pl->n++] = x;
    return TL_OK;
}

/*
 * Bytes of component c's tensors that row split does not divide, as converted
 * to `convert` (tensors an override places aside).
 */
static uint64_t rest_bytes(const tl_model *m, const tl_plan *p, tl_component c,
                           const tl__type_rules *rules, tl_dtype convert) {
    uint64_t r = 0;
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        uint64_t b = t->nbytes;
        tl_dtype to = tl__type_target(rules, t, convert);
        if (to != t->dtype && !tl_dtype_nbytes(to, t->n_elements, &b)) b = t->nbytes;
        if (t->component == c && !tl__row_splittable(t) &&
            tl_plan_override_find(p, t->name) == TL_NOT_FOUND)
            r += b;
    }
    return r;
}

/*
 * Cut a matrix into one row block per device, in proportion to weights w,
 * each cut at the multiple of TL__ROW_SPLIT_ALIGN rows nearest its share.
 * ggml's CPU product runs its blocked kernel only on row counts that are a
 * multiple of 4 (another summation order otherwise), so every block must be
 * on the whole matrix's side: for a row count that is not, each cut moves 1 to
 * 3 rows on, by an offset other than the previous cut's and the row count's
 * remainder mod 4, which leaves no block a multiple of 4.
 */
static tl_status split_rows(placer *pl, const tl_tensor_info *t, size_t i,
                            const tl_plan_decision *d, const uint64_t *w) {
    uint64_t rows = t->shape[0];
    unsigned __int128 sum = 0, cum = 0;
    for (uint32_t k = 0; k < d->n_devices; k++)
        sum += w[k];
    if (rows == 0 || t->nbytes % rows != 0 || sum == 0)
        return add(pl, (tlr_place){i, 0, t->nbytes, 0, rows, (int32_t)d->devices[0], false});
    uint64_t row_bytes = t->nbytes / rows, r0 = 0, rem = rows % 4, prev_off = 0;
    for (uint32_t k = 0; k < d->n_devices; k++) {
        cum += w[k];
        uint64_t share = (uint64_t)((unsigned __int128)rows * cum / sum), off = 0;
        uint64_t r1 = (share + TL__ROW_SPLIT_ALIGN / 2) / TL__ROW_SPLIT_ALIGN * TL__ROW_SPLIT_ALIGN;
        if (rem)
            while (++off == prev_off || off == rem) {
            }
        r1 += off;
        if (k + 1 == d->n_devices || r1 > rows) r1 = rows;
        if (r1 > r0) {
            tl_status s = add(pl, (tlr_place){i, r0 * row_bytes, (r1 - r0) * row_bytes, r0, r1,
                                              (int32_t)d->devices[k], false});
            if (s) return s;
            r0 = r1;
            prev_off = off;
        }
    }
    return TL_OK;
}

tl_status tlr_place_all(const tl_model *m, const tl_plan *p, const tl__type_rules *rules,
                        tl_dtype convert, tlr_place **out,
                        size_t *n) {
    *out = NULL;
    *n = 0;
    placer pl = {0};
    tl_plan_decision dec[TL_COMP_COUNT];
    uint64_t roww[TL_COMP_COUNT][TL_PLAN_MAX_DEVICES];
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        tl_status s = tl_plan_decision_of(p, (tl_component)c, &dec[c], sizeof dec[c]);
        if (s) return s;
        if (dec[c].present && dec[c].mode == TL_PLAN_MODE_ROW_SPLIT) {
            uint64_t rest = rest_bytes(m, p, (tl_component)c, rules, convert);
            for (uint32_t k = 0; k < dec[c].n_devices; k++) {
                uint64_t b = dec[c].device_bytes[k];
                roww[c][k] = k == 0 ? (b > rest ? b - rest : 0) : b;
            }
        }
    }
    tl_status s = TL_OK;
    for (size_t i = 0; i < tl_model_tensor_count(m) && !s; i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        int c = (unsigned)t->component < TL_COMP_COUNT ? (int)t->component : TL_COMP_OTHER;
        const tl_plan_decision *d = &dec[c];
        size_t k = tl_model_tensor_layer(m, i);
        tlr_place x = {i, 0, t->nbytes, 0, t->n_dims ? t->shape[0] : 1, TLR_HOST, false};
        size_t od = tl_plan_override_find(p, t->name);
        if (od != TL_NOT_FOUND) { /* an override: on its device, resident for the run */
            const tl_plan_device *pd = tl_plan_device_of(p, od);
            x.plan_dev = pd && pd->is_gpu ? (int32_t)od : TLR_HOST;
            s = add(&pl, x);
            continue;
        }
        if (!d->present || d->mode == TL_PLAN_MODE_CPU || d->n_devices == 0) {
            s = add(&pl, x);
            continue;
        }
        x.plan_dev = (int32_t)d->devices[0];
        switch (d->mode) {
        case TL_PLAN_MODE_GPU:
            break;
        case TL_PLAN_MODE_LAYER_SPLIT:
            for (uint32_t j = 0; k != TL_NOT_FOUND && j < d->n_devices; j++)
                if (k >= d->layer_begin[j] && k < d->layer_end[j])
                    x.plan_dev = (int32_t)d->devices[j];
            break;
        case TL_PLAN_MODE_ROW_SPLIT:
            if (tl__row_splittable(t)) {
                s = split_rows(&pl, t, i, d, roww[c]);
                continue;
            }
            break;
        case TL_PLAN_MODE_STREAM:
            if (k == TL_NOT_FOUND) break; /* non-layer bytes: resident on the first */
            x.plan_dev = (int32_t)d->devices[d->n_devices - 1];
            x.streamed = true;
            for (uint32_t j = 0; j < d->n_devices; j++)
                if (k >= d->layer_begin[j] && k < d->layer_end[j]) {
                    x.plan_dev = (int32_t)d->devices[j];
                    x.streamed = false;
                }
            break;
        default:
            x.plan_dev = TLR_HOST;
            break;
        }
        s = add(&pl, x);
    }
    if (s) {
        free(pl.p);
        return s;
    }
    *out = pl.p;
    *n = pl.n;
    return TL_OK;
}

tl_status tl_plan_place(const tl_plan *p, const tl_model *m, tl_plan_placement **out, size_t *n) {
    if (!out || !n) return tl__err(TL_ERR_INVALID_ARG, "tl_plan_place: NULL output");
    *out = NULL;
    *n = 0;
    if (!p || !m) return tl__err(TL_ERR_INVALID_ARG, "tl_plan_place: NULL plan or model");
    tlr_place *pl;
    size_t np;
    tl_status s = tlr_place_all(m, p, NULL, TL_DTYPE_INVALID, &pl, &np);
    if (s) return s;
    tl_plan_placement *r = tl__os_calloc(np ? np : 1, sizeof *r);
    if (!r) {
        free(pl);
        return tl__err(TL_ERR_NOMEM, "tl_plan_place: out of memory for %zu parts", np);
    }
    for (size_t i = 0; i < np; i++)
        r[i] = (tl_plan_placement){pl[i].tensor, pl[i].plan_dev,  pl[i].streamed, pl[i].off,
                                   pl[i].len,    pl[i].row_begin, pl[i].row_end};
    free(pl);
    *out = r;
    *n = np;
    return TL_OK;
}
