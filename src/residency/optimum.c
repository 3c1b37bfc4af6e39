/*
 * optimum.c — the offline yardstick for a run: replay a known schedule of
 * acquires against each device's budget, starting empty, loading what each
 * step needs and, when a budget is full, evicting the resident unit whose
 * next use is furthest in the future (Belady's rule; never a unit the current
 * step needs). The bytes loaded are what a residency manager with perfect
 * knowledge of the schedule moves; a run's own figure is printed beside it.
 */
#include "residency/residency.h"

#include "core/error.h"
#include "os/os.h"

#include <stdlib.h>
#include <string.h>

/* Step indices (ascending) at which each group is used. */
typedef struct uses {
    size_t *idx;
    size_t n;
} uses;

static size_t next_use(const uses *u, size_t after) {
    size_t at = tlr_lower_bound(u->idx, u->n, after + 1);
    return at < u->n ? u->idx[at] : (size_t)-1;
}

tl_status tlr_optimum(const tlr_opt_unit *u, size_t n_u, const uint64_t *budgets, size_t n_dev,
                      const tlr_groups *g, const tl_session_step *steps, size_t n_steps,
                      uint64_t *bytes) {
    *bytes = 0;
    uses *gu = tl__os_calloc(g->n ? g->n : 1, sizeof *gu);
    bool *res = tl__os_calloc(n_u ? n_u : 1, sizeof *res);
    uint64_t *used = tl__os_calloc(n_dev ? n_dev : 1, sizeof *used);
    size_t *need = tl__os_malloc((n_u ? n_u : 1) * sizeof *need);
    bool *in_step = tl__os_calloc(g->n ? g->n : 1, sizeof *in_step);
    tl_status s = TL_OK;
    if (!gu || !res || !used || !need || !in_step) {
        s = tl__err(TL_ERR_NOMEM, "optimum: out of memory");
        goto out;
    }
    for (size_t gid = 0; gid < g->n && !s; gid++) {
        size_t cnt = 0;
        for (size_t i = 0; i < n_steps; i++)
            cnt += tlr_step_has(g, &steps[i], gid);
        gu[gid].idx = tl__os_malloc((cnt ? cnt : 1) * sizeof *gu[gid].idx);
        if (!gu[gid].idx) {
            s = tl__err(TL_ERR_NOMEM, "optimum: out of memory");
            break;
        }
        for (size_t i = 0; i < n_steps; i++)
            if (tlr_step_has(g, &steps[i], gid)) gu[gid].idx[gu[gid].n++] = i;
    }
    for (size_t i = 0; i < n_steps && !s; i++) {
        for (size_t gid = 0; gid < g->n; gid++)
            in_step[gid] = tlr_step_has(g, &steps[i], gid);
        size_t nn = 0;
        for (size_t k = 0; k < n_u; k++)
            if (u[k].dev >= 0 && in_step[u[k].group] && !res[k]) need[nn++] = k;
        for (size_t q = 0; q < nn && !s; q++) {
            const tlr_opt_unit *x = &u[need[q]];
            size_t d = (size_t)x->dev;
            while (used[d] + x->len > budgets[d]) {
                size_t victim = (size_t)-1, far = 0;
                for (size_t k = 0; k < n_u; k++) {
                    if (!res[k] || (size_t)u[k].dev != d || in_step[u[k].group]) continue;
                    size_t nu = next_use(&gu[u[k].group], i);
                    if (victim == (size_t)-1 || nu > far) {
                        victim = k;
                        far = nu;
                    }
                }
                if (victim == (size_t)-1) {
                    s = tl__err(TL_ERR_DEVICE_OOM,
                                "optimum: step %zu needs more than device %zu's budget", i, d);
                    break;
                }
                res[victim] = false;
                used[d] -= u[victim].len;
            }
            if (s) break;
            res[need[q]] = true;
            used[d] += x->len;
            *bytes += x->len;
        }
    }
out:
    if (gu)
        for (size_t gid = 0; gid < g->n; gid++)
            free(gu[gid].idx);
    free(gu);
    free(res);
    free(used);
    free(need);
    free(in_step);
    return s;
}
