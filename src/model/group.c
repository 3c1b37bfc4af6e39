/*
 * group.c — the model's (component, layer) → tensors grouping, built once
 * when a model is opened and shared by everything that thinks in layers: the
 * planner's summary, the residency manager, and engines through the public
 * accessors.
 *
 * Rule: tensors are grouped by component and by the first layer_key_len bytes
 * of their name (so "input_blocks.4." and "output_blocks.4." are different
 * layers), layers numbered 0.. in order of first appearance in the catalog;
 * tensors without a layer are their component's "other" tensors. Within a
 * group tensors keep catalog order.
 *
 * Layout: one index array holding every tensor exactly once, ordered by
 * component, then its layers in order, then its other tensors; per component
 * an offsets array (n_layers + 1 entries, the last one where "other" starts).
 */
#include "model/catalog.h"

#include "core/error.h"
#include "os/os.h"

#include <stdlib.h>
#include <string.h>

typedef struct slot {
    const char *name; /* NULL when empty */
    uint32_t len;
    uint32_t comp;
    uint32_t layer;
} slot;

static uint64_t hash_key(const char *s, size_t n, uint32_t comp) {
    uint64_t h = 1469598103934665603ull ^ comp;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static uint32_t comp_of(const tl_tensor_info *t) {
    return (uint32_t)t->component < TL_COMP_COUNT ? (uint32_t)t->component : TL_COMP_OTHER;
}

void tl__model_groups_free(tl__model_groups *g) {
    free(g->index);
    free(g->tensor_layer);
    for (int c = 0; c < TL_COMP_COUNT; c++)
        free(g->layer_off[c]);
    memset(g, 0, sizeof *g);
}

tl_status tl__model_groups_build(tl_model *m) {
    tl__model_groups *g = &m->groups;
    memset(g, 0, sizeof *g);
    size_t n = m->n_tensors;
    size_t cap = 64;
    while (cap < n * 2)
        cap *= 2;
    slot *tab = tl__os_calloc(cap, sizeof *tab);
    g->index = tl__os_calloc(n ? n : 1, sizeof *g->index);
    g->tensor_layer = tl__os_calloc(n ? n : 1, sizeof *g->tensor_layer);
    size_t *count = NULL; /* tensors per (comp, layer), then running offsets */
    size_t n_count = 0;
    if (!tab || !g->index || !g->tensor_layer) goto nomem;
    /* pass 1: number the layers of each component, count their tensors */
    for (size_t i = 0; i < n; i++) {
        const tl_tensor_info *t = &m->tensors[i];
        uint32_t c = comp_of(t);
        if (t->layer < 0 || t->layer_key_len == 0) {
            g->tensor_layer[i] = TL_NOT_FOUND;
            continue;
        }
        size_t kl = t->layer_key_len;
        size_t j = (size_t)(hash_key(t->name, kl, c) & (cap - 1));
        while (tab[j].name &&
               !(tab[j].comp == c && tab[j].len == kl && memcmp(tab[j].name, t->name, kl) == 0))
            j = (j + 1) & (cap - 1);
        if (!tab[j].name) {
            tab[j] = (slot){t->name, (uint32_t)kl, c, (uint32_t)g->n_layers[c]++};
        }
        g->tensor_layer[i] = tab[j].layer;
    }
    /* offsets: component c's layers, then its other tensors */
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        g->layer_off[c] = tl__os_calloc(g->n_layers[c] + 2, sizeof *g->layer_off[c]);
        if (!g->layer_off[c]) goto nomem;
        n_count += g->n_layers[c] + 1;
    }
    count = tl__os_calloc(n_count ? n_count : 1, sizeof *count);
    if (!count) goto nomem;
    /* count[base[c] + k] for layer k, count[base[c] + n_layers[c]] for other */
    size_t base[TL_COMP_COUNT], b = 0;
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        base[c] = b;
        b += g->n_layers[c] + 1;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t c = comp_of(&m->tensors[i]);
        size_t k = g->tensor_layer[i] == TL_NOT_FOUND ? g->n_layers[c] : g->tensor_layer[i];
        count[base[c] + k]++;
    }
    size_t pos = 0;
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        for (size_t k = 0; k <= g->n_layers[c]; k++) {
            g->layer_off[c][k] = pos;
            size_t cnt = count[base[c] + k];
            count[base[c] + k] = pos; /* becomes the fill cursor */
            pos += cnt;
        }
        g->layer_off[c][g->n_layers[c] + 1] = pos;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t c = comp_of(&m->tensors[i]);
        size_t k = g->tensor_layer[i] == TL_NOT_FOUND ? g->n_layers[c] : g->tensor_layer[i];
        g->index[count[base[c] + k]++] = i;
    }
    free(count);
    free(tab);
    return TL_OK;
nomem:
    free(count);
    free(tab);
    tl__model_groups_free(g);
    return tl__err(TL_ERR_NOMEM, "%s: out of memory grouping %zu tensors into layers",
                   m->n_files ? m->files[0].info.path : "model", n);
}

size_t tl_model_layer_count(const tl_model *m, tl_component c) {
    if (!m || (unsigned)c >= TL_COMP_COUNT) return 0;
    return m->groups.n_layers[c];
}

size_t tl_model_layer_tensors(const tl_model *m, tl_component c, size_t k, const size_t **idx) {
    if (idx) *idx = NULL;
    if (!m || (unsigned)c >= TL_COMP_COUNT || k >= m->groups.n_layers[c]) return 0;
    const tl__model_groups *g = &m->groups;
    if (idx) *idx = g->index + g->layer_off[c][k];
    return g->layer_off[c][k + 1] - g->layer_off[c][k];
}

size_t tl_model_other_tensors(const tl_model *m, tl_component c, const size_t **idx) {
    if (idx) *idx = NULL;
    if (!m || (unsigned)c >= TL_COMP_COUNT) return 0;
    const tl__model_groups *g = &m->groups;
    size_t k = g->n_layers[c];
    if (idx) *idx = g->index + g->layer_off[c][k];
    return g->layer_off[c][k + 1] - g->layer_off[c][k];
}

size_t tl_model_tensor_layer(const tl_model *m, size_t i) {
    if (!m || i >= m->n_tensors) return TL_NOT_FOUND;
    return m->groups.tensor_layer[i];
}
