/*
 * groups.c — the groups a session's schedule counts uses of: the model's own
 * (component, layer) grouping, split by each tensor set that becomes a step
 * (a group an engine declares, a set it acquires) so that a step takes whole
 * groups and every unit of a group has the same next use.
 */
#include "residency/residency.h"

#include "core/error.h"
#include "os/os.h"

#include <stdlib.h>
#include <string.h>

void tlr_groups_init(const tl_model *m, tlr_groups *g) {
    memset(g, 0, sizeof *g);
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        g->base[c] = g->n;
        g->n_layers[c] = tl_model_layer_count(m, (tl_component)c);
        g->n += g->n_layers[c] + 1;
    }
    g->n_base = g->n;
}

void tlr_groups_free(tlr_groups *g) {
    if (g->in)
        for (size_t i = 0; i < g->n; i++)
            free(g->in[i]);
    free(g->in);
    free(g->n_in);
    free(g->origin);
    g->in = NULL;
    g->n_in = g->origin = NULL;
    g->n = g->n_base;
    g->n_entries = 0;
}

tl_status tlr_groups_copy(const tlr_groups *g, tlr_groups *out) {
    *out = *g;
    out->origin = NULL;
    out->in = NULL;
    out->n_in = NULL;
    if (!g->origin) return TL_OK;
    out->origin = tl__os_malloc(g->n * sizeof *out->origin);
    out->in = tl__os_calloc(g->n, sizeof *out->in);
    out->n_in = tl__os_malloc(g->n * sizeof *out->n_in);
    bool ok = out->origin && out->in && out->n_in;
    for (size_t i = 0; ok && i < g->n; i++) {
        out->origin[i] = g->origin[i];
        out->n_in[i] = g->n_in[i];
        if (!g->n_in[i]) continue;
        out->in[i] = tl__os_malloc(g->n_in[i] * sizeof *out->in[i]);
        if (out->in[i])
            memcpy(out->in[i], g->in[i], g->n_in[i] * sizeof *out->in[i]);
        else
            ok = false;
    }
    if (ok) return TL_OK;
    tlr_groups_free(out);
    return tl__err(TL_ERR_NOMEM, "session: out of memory for groups");
}

size_t tlr_lower_bound(const size_t *a, size_t n, size_t key) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (a[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

size_t tlr_group_of(const tl_model *m, const tlr_groups *g, size_t tensor) {
    const tl_tensor_info *t = tl_model_tensor(m, tensor);
    int c = (unsigned)t->component < TL_COMP_COUNT ? (int)t->component : TL_COMP_OTHER;
    size_t k = tl_model_tensor_layer(m, tensor);
    return g->base[c] + (k == TL_NOT_FOUND ? g->n_layers[c] : k);
}

bool tlr_step_has(const tlr_groups *g, const tl_session_step *st, size_t gid) {
    if (st->component == TL_COMP_GROUP) {
        if (!g->in || gid >= g->n) return false;
        size_t at = tlr_lower_bound(g->in[gid], g->n_in[gid], st->layer_begin);
        return at < g->n_in[gid] && g->in[gid][at] == st->layer_begin;
    }
    int c = (int)st->component;
    if (c < 0 || c >= TL_COMP_COUNT) return false;
    if (g->origin && gid < g->n) gid = g->origin[gid];
    size_t b = g->base[c], nl = g->n_layers[c];
    if (gid < b || gid > b + nl) return false;
    if (gid == b + nl) return st->with_other;
    size_t k = gid - b;
    return k >= st->layer_begin && (st->layer_end == TL_ALL_LAYERS || k < st->layer_end);
}

/* Room for n groups in origin, in and n_in (new entries: their own origin, in no set). */
static tl_status groups_grow(tlr_groups *g, size_t n) {
    size_t *origin = tl__os_realloc(g->origin, n * sizeof *origin);
    if (!origin) return tl__err(TL_ERR_NOMEM, "session: out of memory for groups");
    if (!g->origin)
        for (size_t i = 0; i < g->n; i++)
            origin[i] = i;
    g->origin = origin;
    size_t **in = tl__os_realloc(g->in, n * sizeof *in);
    if (!in) return tl__err(TL_ERR_NOMEM, "session: out of memory for groups");
    if (!g->in) memset(in, 0, g->n * sizeof *in);
    g->in = in;
    size_t *n_in = tl__os_realloc(g->n_in, n * sizeof *n_in);
    if (!n_in) return tl__err(TL_ERR_NOMEM, "session: out of memory for groups");
    if (!g->n_in) memset(n_in, 0, g->n * sizeof *n_in);
    g->n_in = n_in;
    return TL_OK;
}

/* Group gid's set list with set appended (from its own list, or from the one of `from`). */
static size_t *with_set(const tlr_groups *g, size_t from, size_t set) {
    size_t n = g->n_in[from];
    size_t *l = tl__os_malloc((n + 1) * sizeof *l);
    if (!l) return NULL;
    if (n) memcpy(l, g->in[from], n * sizeof *l);
    l[n] = set;
    return l;
}

tl_status tlr_groups_add_set(tlr_groups *g, size_t set, const size_t *units, size_t n,
                             size_t *ugroup, size_t n_units, size_t max_entries) {
    size_t ng = g->n;
    /* per group: units in the set, and all its units; then the group its set units go to */
    size_t *inside = tl__os_calloc(ng ? ng : 1, sizeof *inside);
    size_t *total = tl__os_calloc(ng ? ng : 1, sizeof *total);
    size_t *to = tl__os_malloc((ng ? ng : 1) * sizeof *to);
    size_t **lists = NULL;
    tl_status st = TL_OK;
    if (!inside || !total || !to) {
        st = tl__err(TL_ERR_NOMEM, "session: out of memory for groups");
        goto out;
    }
    for (size_t i = 0; i < n_units; i++)
        total[ugroup[i]]++;
    for (size_t i = 0; i < n; i++)
        inside[ugroup[units[i]]]++;
    size_t fresh = 0, touched = 0, added = 0;
    for (size_t i = 0; i < ng; i++) {
        to[i] = i;
        if (!inside[i]) continue;
        touched++;
        if (inside[i] < total[i]) to[i] = ng + fresh++;
        added += to[i] == i ? 1 : g->n_in ? g->n_in[i] + 1 : 1;
    }
    if (g->n_entries + added > max_entries) {
        st = tl__err(TL_ERR_UNSUPPORTED,
                     "session: groups of tensors overlap too much (%zu entries, at most %zu)",
                     g->n_entries + added, max_entries);
        goto out;
    }
    /* every allocation first, so that a failure changes nothing */
    st = groups_grow(g, ng + fresh);
    if (st) goto out;
    lists = tl__os_calloc(touched ? touched : 1, sizeof *lists);
    if (!lists) {
        st = tl__err(TL_ERR_NOMEM, "session: out of memory for groups");
        goto out;
    }
    for (size_t i = 0, k = 0; i < ng; i++)
        if (inside[i] && !(lists[k++] = with_set(g, i, set))) {
            st = tl__err(TL_ERR_NOMEM, "session: out of memory for groups");
            for (size_t j = 0; j < k; j++)
                free(lists[j]);
            goto out;
        }
    for (size_t i = 0, k = 0; i < ng; i++) {
        if (!inside[i]) continue;
        size_t dst = to[i];
        if (dst != i) {
            g->origin[dst] = g->origin[i];
            g->n_entries += g->n_in[i] + 1; /* a copy of its list, and the set */
        } else {
            free(g->in[i]);
            g->n_entries++;
        }
        g->in[dst] = lists[k++];
        g->n_in[dst] = g->n_in[i] + 1;
    }
    for (size_t i = 0; i < n; i++)
        ugroup[units[i]] = to[ugroup[units[i]]];
    g->n = ng + fresh;
out:
    free(lists);
    free(inside);
    free(total);
    free(to);
    return st;
}
