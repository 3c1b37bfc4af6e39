/*
 * lora.c — a LoRA file read into modules, matched to a model's tensors and
 * merged into them in place.
 *
 * The file is opened with tl_model_open (read-only mapping), so the same
 * hostile-header checks as for models apply and GGUF LoRAs come for free.
 * Its tensors are grouped into modules by stripping a known part suffix
 * (".lora_down.weight", ".lora_A.weight", ".alpha", ".hada_w1_a", ..., and llama.cpp's
 * GGUF adapter suffixes ".weight.lora_a"/".weight.lora_b" with "adapter.lora.alpha");
 * keys with no known suffix, and modules missing a part, are reported as
 * unmatched. A module with two parts of one kind (lora_down and lora_A), a
 * module whose name resolves to two different tensors (an ambiguous kohya
 * name), and a second module naming a tensor that an earlier one already
 * targets are reported as unmatched (with the reason) and not applied, so a
 * delta is never applied twice and --lora-strict refuses them. Applying
 * checks every matched module first (dtype, shapes, finite values, no
 * overflow: a dry run of the merge), then writes: a failure leaves the model
 * unchanged.
 */
#include "lora/lora.h"

#include "core/error.h"
#include "core/outsize.h"
#include "io/convert.h"
#include "os/hostmem.h"
#include "os/os.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *suffix;
    int part; /* P_*, or -1 for alpha */
} suffixes[] = {
    {".lora_down.weight", P_DOWN}, {".lora_up.weight", P_UP},
    {".lora_A.weight", P_DOWN},    {".lora_B.weight", P_UP},
    {".lora_A.default.weight", P_DOWN}, {".lora_B.default.weight", P_UP},
    {".lora.down.weight", P_DOWN}, {".lora.up.weight", P_UP},
    {".hada_w1_a", P_H1A},         {".hada_w1_b", P_H1B},
    {".hada_w2_a", P_H2A},         {".hada_w2_b", P_H2B},
    {".lokr_w1", P_K1},            {".lokr_w1_a", P_K1A},
    {".lokr_w1_b", P_K1B},         {".lokr_w2", P_K2},
    {".lokr_w2_a", P_K2A},         {".lokr_w2_b", P_K2B},
    {".alpha", -1},
    /* llama.cpp's GGUF adapters: "<tensor>.weight.lora_a" / ".lora_b" (alpha in the metadata) */
    {".weight.lora_a", P_DOWN},    {".weight.lora_b", P_UP},
};

typedef struct entry {
    const char *name;
    size_t keylen;
    int part;
    size_t tensor;
} entry;

static int cmp_entry(const void *x, const void *y) {
    const entry *a = x, *b = y;
    size_t n = a->keylen < b->keylen ? a->keylen : b->keylen;
    int c = memcmp(a->name, b->name, n);
    if (c) return c;
    if (a->keylen != b->keylen) return a->keylen < b->keylen ? -1 : 1;
    return a->tensor < b->tensor ? -1 : a->tensor > b->tensor;
}

static tl_status push_unknown(tl_lora *l, const char *name, size_t len) {
    char **v = tl__os_realloc(l->unknown, (l->n_unknown + 1) * sizeof *v);
    if (!v) return tl__err(TL_ERR_NOMEM, "LoRA: out of memory");
    l->unknown = v;
    if (!(v[l->n_unknown] = tl__os_strndup(name, len))) return tl__err(TL_ERR_NOMEM, "LoRA: out of memory");
    l->n_unknown++;
    return TL_OK;
}

static tl_status read_alpha(tl_lora *l, size_t t, float *out) {
    const tl_tensor_info *ti = tl_model_tensor(l->file, t);
    if (ti->n_elements != 1 || tl__convert_elem_size(ti->dtype) == 0 ||
        (ti->dtype != TL_DTYPE_F32 && ti->dtype != TL_DTYPE_F16 && ti->dtype != TL_DTYPE_BF16 &&
         ti->dtype != TL_DTYPE_F64))
        return tl__err(TL_ERR_FORMAT, "%s: LoRA alpha '%s' is not one float",
                      tl_model_file(l->file, 0)->path, ti->name);
    unsigned char raw[8];
    tl_status st = tl_model_tensor_read(l->file, t, 0, raw, ti->nbytes); /* guarded */
    if (st) return st;
    uint64_t bad;
    float v;
    tl__convert_run(TL_DTYPE_F32, &v, ti->dtype, raw, 1, &bad);
    if (!isfinite(v))
        return tl__err(TL_ERR_FORMAT, "%s: LoRA alpha '%s' is not finite in F32 (%g); refused",
                       tl_model_file(l->file, 0)->path, ti->name, (double)v);
    *out = v;
    return TL_OK;
}

static bool complete(lora_module *md) {
    const size_t *p = md->part;
#define HAS(x) (p[x] != TL_NOT_FOUND)
    if (HAS(P_DOWN) && HAS(P_UP)) md->kind = LORA_PLAIN;
    else if (HAS(P_H1A) && HAS(P_H1B) && HAS(P_H2A) && HAS(P_H2B)) md->kind = LORA_LOHA;
    else if ((HAS(P_K1) || (HAS(P_K1A) && HAS(P_K1B))) && (HAS(P_K2) || (HAS(P_K2A) && HAS(P_K2B))))
        md->kind = LORA_LOKR;
    else return false;
#undef HAS
    return true;
}

tl_status tl_lora_open(const char *path, tl_lora **out) {
    if (!path || !out) return tl__err(TL_ERR_INVALID_ARG, "tl_lora_open: NULL argument");
    *out = NULL;
    tl_lora *l = tl__os_calloc(1, sizeof *l);
    if (!l) return tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
    tl_model_options mo;
    tl_model_options_init(&mo);
    tl_status st = tl_model_open(&path, 1, &mo, &l->file);
    if (st) {
        free(l);
        return st;
    }
    size_t n = tl_model_tensor_count(l->file);
    entry *e = n ? tl__os_calloc(n, sizeof *e) : NULL;
    if (n && !e) {
        tl_lora_close(l);
        return tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t ne = 0;
    for (size_t i = 0; i < n && !st; i++) {
        const char *name = tl_model_tensor(l->file, i)->name;
        size_t len = strlen(name);
        bool found = false;
        for (size_t s = 0; s < sizeof suffixes / sizeof suffixes[0]; s++) {
            size_t sl = strlen(suffixes[s].suffix);
            if (len > sl && !strcmp(name + len - sl, suffixes[s].suffix)) {
                e[ne++] = (entry){name, len - sl, suffixes[s].part, i};
                found = true;
                break;
            }
        }
        if (!found) st = push_unknown(l, name, len);
    }
    if (ne) qsort(e, ne, sizeof *e, cmp_entry);
    for (size_t i = 0; i < ne && !st;) {
        size_t j = i;
        while (j < ne && e[j].keylen == e[i].keylen && !memcmp(e[j].name, e[i].name, e[i].keylen))
            j++;
        lora_module md;
        memset(&md, 0, sizeof md);
        for (int p = 0; p < P_COUNT; p++) md.part[p] = TL_NOT_FOUND;
        bool twice = false;
        for (size_t k = i; k < j && !st; k++) {
            if (e[k].part < 0) {
                st = read_alpha(l, e[k].tensor, &md.alpha);
                md.has_alpha = true;
            } else if (md.part[e[k].part] != TL_NOT_FOUND) {
                twice = true; /* lora_down and lora_A, say: which one was meant? */
            } else {
                md.part[e[k].part] = e[k].tensor;
            }
        }
        if (!st && twice) {
            char why[160];
            snprintf(why, sizeof why, "%.*s (two parts of one kind; not applied)",
                     (int)(e[i].keylen > 100 ? 100 : e[i].keylen), e[i].name);
            st = push_unknown(l, why, strlen(why));
        } else if (!st && !complete(&md)) {
            st = push_unknown(l, e[i].name, e[i].keylen);
        } else if (!st) {
            lora_module *v = tl__os_realloc(l->mods, (l->n_mods + 1) * sizeof *v);
            if (!v || !(md.key = tl__os_strndup(e[i].name, e[i].keylen))) {
                if (v) l->mods = v;
                st = tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
            } else {
                l->mods = v;
                l->mods[l->n_mods++] = md;
            }
        }
        i = j;
    }
    free(e);
    /* GGUF adapters carry one alpha for every module in their metadata */
    size_t ai = st ? TL_NOT_FOUND : tl_model_meta_find(l->file, "adapter.lora.alpha");
    if (ai != TL_NOT_FOUND) {
        const tl_meta *mt = tl_model_meta(l->file, ai);
        if (mt->type != TL_META_F32 && mt->type != TL_META_F64)
            st = tl__err(TL_ERR_FORMAT, "%s: adapter.lora.alpha is not a float", path);
        else if (!isfinite(mt->v.f) || !isfinite((float)mt->v.f))
            st = tl__err(TL_ERR_FORMAT, "%s: adapter.lora.alpha is not finite in F32 (%g); refused",
                         path, mt->v.f);
        for (size_t k = 0; !st && k < l->n_mods; k++)
            if (!l->mods[k].has_alpha && mt->v.f > 0) {
                l->mods[k].has_alpha = true;
                l->mods[k].alpha = (float)mt->v.f;
            }
    }
    if (st) {
        tl_lora_close(l);
        return st;
    }
    *out = l;
    return TL_OK;
}

void tl_lora_close(tl_lora *l) {
    if (!l) return;
    for (size_t i = 0; i < l->n_mods; i++) free(l->mods[i].key);
    free(l->mods);
    for (size_t i = 0; i < l->n_unknown; i++) free(l->unknown[i]);
    free(l->unknown);
    tl_model_close(l->file);
    free(l);
}

size_t tl_lora_module_count(const tl_lora *l) { return l ? l->n_mods : 0; }

static void note_unmatched(tl_lora_report *r, const char *name) {
    if (r->n_unmatched < TL_LORA_REPORT_NAMES)
        snprintf(r->unmatched[r->n_unmatched], sizeof r->unmatched[0], "%s", name);
    r->n_unmatched++;
}

/* targets[k] = tensor of module k (TL_NOT_FOUND when none); fills r. */
static tl_status match(const tl_model *m, const tl_lora *l, size_t **targets, tl_lora_report *r) {
    lora_aliases a;
    tl_status st = lora_aliases_build(m, &a);
    if (st) return st;
    size_t *t = tl__os_calloc(l->n_mods ? l->n_mods : 1, sizeof *t);
    if (!t) {
        lora_aliases_free(&a);
        return tl__err(TL_ERR_NOMEM, "LoRA: out of memory");
    }
    /* owner[tensor]: the first module that targets it (a second one is not applied) */
    size_t nt = tl_model_tensor_count(m);
    size_t *owner = tl__os_malloc((nt ? nt : 1) * sizeof *owner);
    if (!owner) {
        free(t);
        lora_aliases_free(&a);
        return tl__err(TL_ERR_NOMEM, "LoRA: out of memory");
    }
    for (size_t i = 0; i < nt; i++) owner[i] = TL_NOT_FOUND;
    memset(r, 0, sizeof *r);
    r->n_modules = l->n_mods;
    for (size_t k = 0; k < l->n_mods; k++) {
        size_t other = TL_NOT_FOUND;
        t[k] = lora_aliases_find(m, &a, l->mods[k].key, &other);
        char why[200] = "";
        if (other != TL_NOT_FOUND)
            snprintf(why, sizeof why, "%.60s (fits '%.28s' and '%.28s'; not applied)",
                     l->mods[k].key, tl_model_tensor(m, t[k])->name,
                     tl_model_tensor(m, other)->name);
        if (!why[0] && t[k] != TL_NOT_FOUND && owner[t[k]] != TL_NOT_FOUND)
            snprintf(why, sizeof why, "%.56s (names the tensor of '%.56s' again; not applied)",
                     l->mods[k].key, l->mods[owner[t[k]]].key);
        else if (!why[0] && t[k] != TL_NOT_FOUND)
            owner[t[k]] = k;
        if (why[0]) {
            t[k] = TL_NOT_FOUND;
            note_unmatched(r, why); /* kept to the report's 127 characters */
        } else if (t[k] == TL_NOT_FOUND) {
            note_unmatched(r, l->mods[k].key);
        } else {
            r->n_matched++;
        }
    }
    for (size_t k = 0; k < l->n_unknown; k++) note_unmatched(r, l->unknown[k]);
    free(owner);
    lora_aliases_free(&a);
    *targets = t;
    return TL_OK;
}

tl_status lora_targets(const tl_model *m, const tl_lora *l, size_t **targets) {
    tl_lora_report r;
    return match(m, l, targets, &r);
}

tl_status tl_lora_match(const tl_model *m, const tl_lora *l, tl_lora_report *r, size_t r_size) {
    if (!m || !l || (r && !r_size))
        return tl__err(TL_ERR_INVALID_ARG, "tl_lora_match: NULL argument or report size 0");
    tl_lora_report full = {0};
    size_t *t = NULL;
    tl_status st = match(m, l, &t, &full);
    free(t);
    if (r) tl__copy_out(r, r_size, &full, sizeof full);
    return st;
}

tl_status tl_lora_targets(const tl_model *m, const tl_lora *l, size_t *targets) {
    if (!m || !l || (!targets && l->n_mods))
        return tl__err(TL_ERR_INVALID_ARG, "tl_lora_targets: NULL argument");
    size_t *t = NULL;
    tl_status st = lora_targets(m, l, &t);
    if (st) return st;
    if (l->n_mods) memcpy(targets, t, l->n_mods * sizeof *t);
    free(t);
    return TL_OK;
}

/*
 * Weight t's bytes, writable (marked patched), or NULL when the model is not writable. Where it
 * was not patched yet, its whole pages are made private in one call first: a page written after
 * it was read is a write fault that flushes every CPU's TLB (an interrupt to each CPU running
 * this process's threads, costly in a VM), while a page first touched for writing is copied
 * without one.
 */
static void *writable(tl_model *m, size_t t) {
    bool fresh = !tl_model_tensor_patched(m, t);
    unsigned char *w = tl_model_tensor_data_mut(m, t);
    if (w && fresh) {
        uintptr_t pg = tl__os_page_size(), a = (uintptr_t)w;
        uintptr_t b = (a + pg - 1) / pg * pg, e = (a + tl_model_tensor(m, t)->nbytes) / pg * pg;
        if (e > b) (void)tl__os_populate_write((void *)b, e - b); /* a hint: faults otherwise */
    }
    return w;
}

tl_status tl_lora_apply_module(tl_model *m, const tl_lora *l, size_t k, size_t t, float scale) {
    if (!m || !l || k >= l->n_mods || t >= tl_model_tensor_count(m))
        return tl__err(TL_ERR_INVALID_ARG, "tl_lora_apply_module: bad argument");
    if (!isfinite(scale))
        return tl__err(TL_ERR_INVALID_ARG, "tl_lora_apply_module: scale %g is not finite",
                       (double)scale);
    tl_status st = lora_check(m, t, l, k);
    if (st) return st;
    void *w = writable(m, t);
    if (!w)
        return tl__err(TL_ERR_INVALID_ARG,
                      "tensor '%s': the model must be opened writable to merge a LoRA",
                      tl_model_tensor(m, t)->name);
    return lora_merge(m, t, w, l, k, scale, LORA_CHECK_WRITE); /* dry first: nothing non-finite */
}

tl_status lora_apply_some(tl_model *m, const tl_lora *l, float scale, const bool *only,
                          tl_lora_report *r) {
    tl_lora_report tmp;
    if (!r) r = &tmp;
    size_t *t = NULL;
    tl_status st = match(m, l, &t, r);
    if (st) return st;
    for (size_t k = 0; k < l->n_mods && !st; k++)
        if (t[k] != TL_NOT_FOUND && (!only || only[t[k]])) st = lora_check(m, t[k], l, k);
    /* a dry run of every merge: non-finite values and overflow refused before any byte changes */
    for (size_t k = 0; k < l->n_mods && !st; k++)
        if (t[k] != TL_NOT_FOUND && (!only || only[t[k]]))
            st = lora_merge(m, t[k], (void *)tl_model_tensor_data(m, t[k]), l, k, scale, LORA_DRY);
    for (size_t k = 0; k < l->n_mods && !st; k++) {
        if (t[k] == TL_NOT_FOUND || (only && !only[t[k]])) continue;
        void *w = writable(m, t[k]);
        if (!w) {
            st = tl__err(TL_ERR_INVALID_ARG,
                        "tensor '%s': the model must be opened writable to merge a LoRA",
                        tl_model_tensor(m, t[k])->name);
            break;
        }
        st = lora_merge(m, t[k], w, l, k, scale, LORA_WRITE);
    }
    free(t);
    return st;
}

tl_status tl_lora_apply(tl_model *m, const tl_lora *l, float scale, tl_lora_report *r,
                        size_t r_size) {
    if (!m || !l || (r && !r_size))
        return tl__err(TL_ERR_INVALID_ARG, "tl_lora_apply: NULL argument or report size 0");
    if (!isfinite(scale))
        return tl__err(TL_ERR_INVALID_ARG, "tl_lora_apply: scale %g is not finite", (double)scale);
    tl_lora_report full = {0};
    tl_status st = lora_apply_some(m, l, scale, NULL, &full);
    if (r) tl__copy_out(r, r_size, &full, sizeof full);
    return st;
}
