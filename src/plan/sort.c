/*
 * sort.c — the planner's one sort: a stable sort of indices under a
 * caller's order (candidates best first, GPUs by budget, components by
 * priority), so that equal elements keep their order and plans stay
 * deterministic.
 */
#include "plan/search.h"

#include <string.h>

#define RUN 8 /* runs sorted by insertion before merging */

void tlp_sort(uint32_t *a, uint32_t *tmp, size_t n, tlp_before_fn before, const void *arg) {
    for (size_t lo = 0; lo < n; lo += RUN) {
        size_t hi = lo + RUN < n ? lo + RUN : n;
        for (size_t i = lo + 1; i < hi; i++) {
            uint32_t v = a[i];
            size_t j = i;
            for (; j > lo && before(arg, v, a[j - 1]); j--)
                a[j] = a[j - 1];
            a[j] = v;
        }
    }
    for (size_t w = RUN; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                tmp[k++] = before(arg, a[j], a[i]) ? a[j++] : a[i++];
            while (i < mid)
                tmp[k++] = a[i++];
            while (j < hi)
                tmp[k++] = a[j++];
        }
        memcpy(a, tmp, n * sizeof *a);
    }
}
