/*
 * group.c — the model's (component, layer) → tensors grouping, built once
 * when a model is opened and shared by everything that thinks in layers: the
 * planner's summary, the residency manager, and engines through the public
 * accessors.
 *
 * Rule: tensors are grouped by component and by the first layer_key_len bytes
 * of their name, the layer's key ("model.diffusion_model.input_blocks.4"), so
 * that input_blocks.4 and output_blocks.4 are different layers; tensors
 * without a layer are their component's "other" tensors. Within a group
 * tensors keep catalog order.
 *
 * Layers are numbered 0.. in compute order: a key is read as its dot-separated
 * tokens and keys are compared token by token. Numbers compare as numbers
 * (input_blocks.2 before input_blocks.10, blk.9 before blk.10); the level of
 * an ldm VAE decoder ("decoder.up.N") counts down, as the decoder runs it.
 * Words from the table below compare by the table (its rows in the order
 * given, each row in the order the model computes its families) and come
 * before other words, which keep the order of their first appearance in the
 * file (the last resort); a word comes before a number, a shorter key before
 * a longer one it begins. Equal keys cannot occur; the sort is stable.
 * tl_tensor_info.layer is set to the same number (-1 for other tensors).
 *
 * Layout: one index array holding every tensor exactly once, ordered by
 * component, then its layers in order, then its other tensors; per component
 * an offsets array (n_layers + 1 entries, the last one where "other" starts)
 * and the layers' keys (NUL-terminated copies in one buffer).
 */
#include "model/catalog.h"

#include "core/error.h"
#include "os/os.h"

#include <stdlib.h>
#include <string.h>

/* One distinct layer key, in order of discovery (catalog order). */
typedef struct key {
    const char *name; /* the first tensor's name; the key is its first len bytes */
    uint32_t len;
    uint32_t comp;
    uint32_t tok, n_tok; /* its tuple: elements [tok, tok + n_tok) */
    size_t layer;        /* its number once sorted */
} key;

/* Open addressing over (comp, bytes) → an index; idx SIZE_MAX when empty. */
typedef struct slot {
    const char *name;
    uint32_t len;
    uint32_t comp;
    size_t idx;
} slot;

typedef struct table {
    slot *s;
    size_t cap;
} table;

static uint64_t hash_key(const char *s, size_t n, uint32_t comp) {
    uint64_t h = 1469598103934665603ull ^ comp;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

/* The slot of (comp, s[0..n)): the one that holds it, else the empty one where it goes. */
static slot *lookup(table *t, const char *s, size_t n, uint32_t comp) {
    size_t j = (size_t)(hash_key(s, n, comp) & (t->cap - 1));
    while (t->s[j].name &&
           !(t->s[j].comp == comp && t->s[j].len == n && memcmp(t->s[j].name, s, n) == 0))
        j = (j + 1) & (t->cap - 1);
    return &t->s[j];
}

static bool table_init(table *t, size_t n) {
    t->cap = 64;
    while (t->cap < n * 2)
        t->cap *= 2;
    t->s = tl__os_calloc(t->cap, sizeof *t->s);
    return t->s != NULL;
}

static uint32_t comp_of(const tl_tensor_info *t) {
    return (uint32_t)t->component < TL_COMP_COUNT ? (uint32_t)t->component : TL_COMP_OTHER;
}

/*
 * Block families in compute order, one row per kind of model; a word's value
 * is 16 x its row + its place in the row (unique, below UNRANKED).
 */
static const char *const family_rows[][4] = {
    {"encoder", "decoder"},                                              /* VAE, T5 */
    {"down", "mid", "up"},                                               /* ldm VAE levels */
    {"input_hint_block", "input_blocks", "middle_block", "output_blocks"}, /* ldm UNet, ControlNet */
    {"down_blocks", "mid_block", "up_blocks"},                /* diffusers UNet and VAE */
    {"double_blocks", "single_blocks"},                       /* Flux, Chroma, HunyuanVideo */
    {"transformer_blocks", "single_transformer_blocks"},      /* the same in diffusers' names */
    {"noise_refiner", "context_refiner", "layers"},           /* Z-Image */
};

#define UNRANKED 4096ull           /* + first appearance of the word's prefix */
#define NUMBER (1ull << 63)        /* a number: NUMBER + value (or its reverse) */
#define NUMBER_MAX ((1ull << 62) - 1)

static uint64_t word_rank(const char *w, size_t n) {
    for (size_t r = 0; r < sizeof family_rows / sizeof family_rows[0]; r++)
        for (size_t k = 0; k < 4 && family_rows[r][k]; k++)
            if (strlen(family_rows[r][k]) == n && !memcmp(family_rows[r][k], w, n))
                return 16 * r + k;
    return UINT64_MAX;
}

static bool is_number(const char *w, size_t n, uint64_t *v) {
    if (n == 0 || n > 18) return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (w[i] < '0' || w[i] > '9') return false;
        x = x * 10 + (uint64_t)(w[i] - '0');
    }
    *v = x;
    return true;
}

/*
 * Key k's tuple into tup[k->tok ..]: one element per token. prefixes maps a
 * (comp, prefix ending in an unranked word) to the discovery index of the
 * first key that has it.
 */
static void make_tuple(key *k, size_t ki, uint64_t *tup, table *prefixes) {
    const char *s = k->name, *end = s + k->len;
    uint32_t n = 0;
    bool decoder = false;
    const char *prev = NULL;
    size_t prev_n = 0;
    for (const char *w = s; w <= end;) {
        const char *dot = memchr(w, '.', (size_t)(end - w));
        size_t wn = (size_t)((dot ? dot : end) - w);
        uint64_t v, e;
        if (is_number(w, wn, &v)) {
            if (v > NUMBER_MAX) v = NUMBER_MAX;
            /* the ldm VAE decoder runs its levels from the last one down */
            bool down = decoder && prev && prev_n == 2 && !memcmp(prev, "up", 2);
            e = NUMBER + (down ? NUMBER_MAX - v : v);
        } else if ((e = word_rank(w, wn)) == UINT64_MAX) {
            slot *sl = lookup(prefixes, s, (size_t)(w + wn - s), k->comp);
            if (!sl->name) *sl = (slot){s, (uint32_t)(w + wn - s), k->comp, ki};
            e = UNRANKED + sl->idx;
        }
        if (wn == 7 && !memcmp(w, "decoder", 7)) decoder = true;
        tup[k->tok + n++] = e;
        prev = w;
        prev_n = wn;
        if (!dot) break;
        w = dot + 1;
    }
    k->n_tok = n;
}

static int tuple_cmp(const key *a, const key *b, const uint64_t *tup) {
    uint32_t n = a->n_tok < b->n_tok ? a->n_tok : b->n_tok;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t x = tup[a->tok + i], y = tup[b->tok + i];
        if (x != y) return x < y ? -1 : 1;
    }
    return a->n_tok < b->n_tok ? -1 : a->n_tok > b->n_tok;
}

/* Stable merge sort of key indices v[0..n) by tuple, with scratch tmp. */
static void sort_keys(size_t *v, size_t *tmp, size_t n, const key *keys, const uint64_t *tup) {
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, o = lo;
            while (i < mid && j < hi)
                tmp[o++] = tuple_cmp(&keys[v[j]], &keys[v[i]], tup) < 0 ? v[j++] : v[i++];
            while (i < mid)
                tmp[o++] = v[i++];
            while (j < hi)
                tmp[o++] = v[j++];
        }
        memcpy(v, tmp, n * sizeof *v);
    }
}

void tl__model_groups_free(tl__model_groups *g) {
    free(g->index);
    free(g->tensor_layer);
    free(g->key_text);
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        free(g->layer_off[c]);
        free(g->layer_key[c]);
    }
    memset(g, 0, sizeof *g);
}

/* Number the keys in compute order per component (keys[k].layer) and keep their text. */
static bool order_keys(tl__model_groups *g, key *keys, size_t n_keys) {
    size_t n_tok = 0, text = 0;
    for (size_t k = 0; k < n_keys; k++) {
        keys[k].tok = (uint32_t)n_tok;
        n_tok += 1;
        for (uint32_t i = 0; i < keys[k].len; i++)
            n_tok += keys[k].name[i] == '.';
        text += keys[k].len + 1;
    }
    uint64_t *tup = tl__os_calloc(n_tok ? n_tok : 1, sizeof *tup);
    size_t *v = tl__os_calloc(n_keys ? n_keys : 1, sizeof *v);
    size_t *tmp = tl__os_calloc(n_keys ? n_keys : 1, sizeof *tmp);
    table prefixes = {0};
    g->key_text = tl__os_calloc(text ? text : 1, 1);
    bool ok = tup && v && tmp && g->key_text && table_init(&prefixes, n_tok);
    for (int c = 0; ok && c < TL_COMP_COUNT; c++) {
        g->layer_key[c] = tl__os_calloc(g->n_layers[c] ? g->n_layers[c] : 1,
                                        sizeof *g->layer_key[c]);
        ok = g->layer_key[c] != NULL;
    }
    if (ok) {
        for (size_t k = 0; k < n_keys; k++)
            make_tuple(&keys[k], k, tup, &prefixes);
        char *at = g->key_text;
        for (uint32_t c = 0; c < TL_COMP_COUNT; c++) {
            size_t n = 0;
            for (size_t k = 0; k < n_keys; k++)
                if (keys[k].comp == c) v[n++] = k;
            sort_keys(v, tmp, n, keys, tup);
            for (size_t r = 0; r < n; r++) {
                key *kk = &keys[v[r]];
                kk->layer = r;
                memcpy(at, kk->name, kk->len);
                at[kk->len] = 0;
                g->layer_key[c][r] = at;
                at += kk->len + 1;
            }
        }
    }
    free(prefixes.s);
    free(tmp);
    free(v);
    free(tup);
    return ok;
}

tl_status tl__model_groups_build(tl_model *m) {
    tl__model_groups *g = &m->groups;
    memset(g, 0, sizeof *g);
    size_t n = m->n_tensors;
    table tab = {0};
    key *keys = tl__os_calloc(n ? n : 1, sizeof *keys);
    size_t n_keys = 0;
    g->index = tl__os_calloc(n ? n : 1, sizeof *g->index);
    g->tensor_layer = tl__os_calloc(n ? n : 1, sizeof *g->tensor_layer);
    size_t *count = NULL; /* tensors per (comp, layer), then running offsets */
    size_t n_count = 0;
    if (!table_init(&tab, n) || !keys || !g->index || !g->tensor_layer) goto nomem;
    /* pass 1: the distinct keys of each component; tensor_layer holds the key index for now */
    for (size_t i = 0; i < n; i++) {
        const tl_tensor_info *t = &m->tensors[i];
        uint32_t c = comp_of(t);
        if (t->layer < 0 || t->layer_key_len == 0) {
            g->tensor_layer[i] = TL_NOT_FOUND;
            continue;
        }
        slot *s = lookup(&tab, t->name, t->layer_key_len, c);
        if (!s->name) {
            *s = (slot){t->name, t->layer_key_len, c, n_keys};
            keys[n_keys++] = (key){t->name, t->layer_key_len, c, 0, 0, 0};
            g->n_layers[c]++;
        }
        g->tensor_layer[i] = s->idx;
    }
    if (!order_keys(g, keys, n_keys)) goto nomem;
    for (size_t i = 0; i < n; i++) {
        if (g->tensor_layer[i] != TL_NOT_FOUND) g->tensor_layer[i] = keys[g->tensor_layer[i]].layer;
        size_t k = g->tensor_layer[i];
        m->tensors[i].layer = k == TL_NOT_FOUND ? -1 : k > INT32_MAX ? INT32_MAX : (int32_t)k;
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
    free(tab.s);
    free(keys);
    return TL_OK;
nomem:
    free(count);
    free(tab.s);
    free(keys);
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

const char *tl_model_layer_key(const tl_model *m, tl_component c, size_t k) {
    if (!m || (unsigned)c >= TL_COMP_COUNT || k >= m->groups.n_layers[c]) return NULL;
    return m->groups.layer_key[c][k];
}

size_t tl_model_layer_find(const tl_model *m, tl_component c, const char *k) {
    if (!m || !k || (unsigned)c >= TL_COMP_COUNT) return TL_NOT_FOUND;
    const tl__model_groups *g = &m->groups;
    size_t kn = strlen(k), found = TL_NOT_FOUND, hits = 0;
    for (size_t i = 0; i < g->n_layers[c]; i++) {
        const char *s = g->layer_key[c][i];
        size_t sn = strlen(s);
        if (sn == kn && !memcmp(s, k, kn)) return i;
        /* the key's tail after a dot: "input_blocks.4" for "model.diffusion_model.input_blocks.4" */
        if (sn > kn && s[sn - kn - 1] == '.' && !memcmp(s + sn - kn, k, kn)) {
            found = i;
            hits++;
        }
    }
    return hits == 1 ? found : TL_NOT_FOUND;
}
