/*
 * set.c — the LoRAs applied to one model (and the session running it).
 *
 * Adding merges in place. Removing a LoRA or changing its scale cannot
 * subtract exactly in F16/BF16, so every tensor the change touches is made
 * the file's again (tl_model_tensor_unpatch: the kernel gives back the
 * private pages, no backup copy exists) and the remaining LoRAs are merged
 * into it again, in the order they were added. With a session, the touched
 * tensors are busy while their bytes change (tl_session_update_begin / end:
 * their copies are dropped and concurrent acquires of them wait), and the
 * begin fails early, before any byte changes, when one of them is acquired.
 */
#include "lora/lora.h"

#include "core/error.h"
#include "core/outsize.h"
#include "os/os.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef lora_item set_item;

struct tl_lora_set {
    tl_model *m;
    tl_session *s;
    set_item *items;
    size_t n;
    lora_atload *al; /* applied as units load (the session's producer), or NULL: merged */
    uint32_t flags;  /* TL_LORA_* of tl_lora_set_create_at_load */
};

tl_status tl_lora_set_create(tl_model *m, tl_session *s, tl_lora_set **out) {
    if (!m || !out) return tl__err(TL_ERR_INVALID_ARG, "tl_lora_set_create: NULL argument");
    tl_lora_set *set = tl__os_calloc(1, sizeof *set);
    if (!set) return tl__err(TL_ERR_NOMEM, "tl_lora_set_create: out of memory");
    set->m = m;
    set->s = s;
    *out = set;
    return TL_OK;
}

tl_status tl_lora_set_create_at_load(tl_session *s, uint32_t flags, tl_lora_set **out) {
    if (!s || !out)
        return tl__err(TL_ERR_INVALID_ARG, "tl_lora_set_create_at_load: NULL argument");
    const uint32_t known = TL_LORA_QUANT_AS_F16 | TL_LORA_ON_DEVICE;
    if (flags & ~known)
        return tl__err(TL_ERR_INVALID_ARG, "tl_lora_set_create_at_load: unknown flags 0x%x",
                       (unsigned)(flags & ~known));
    tl_lora_set *set = tl__os_calloc(1, sizeof *set);
    if (!set) return tl__err(TL_ERR_NOMEM, "tl_lora_set_create_at_load: out of memory");
    set->m = tlr_session_model(s);
    set->s = s;
    set->flags = flags;
    tl_status st = lora_atload_create(set->m, &set->al);
    if (!st) {
        tlr_producer p = lora_atload_producer(set->al, (flags & TL_LORA_ON_DEVICE) != 0);
        st = tlr_session_set_producer(s, &p);
    }
    if (st) {
        lora_atload_destroy(set->al);
        free(set);
        return st;
    }
    *out = set;
    return TL_OK;
}

void tl_lora_set_destroy(tl_lora_set *set) {
    if (!set) return;
    if (set->al) {
        tlr_session_set_producer(set->s, NULL);
        lora_atload_destroy(set->al);
    }
    free(set->items);
    free(set);
}

typedef struct span {
    uint32_t file;
    uint64_t a, b;
    size_t t;
} span;

static int cmp_span(const void *x, const void *y) {
    const span *p = x, *q = y;
    if (p->file != q->file) return p->file < q->file ? -1 : 1;
    return p->a < q->a ? -1 : p->a > q->a;
}

/*
 * Mark in `touched` every tensor l merges into, and every tensor sharing bytes
 * with one of them (tied weights: unpatching one gives the other the file's
 * bytes too, so the LoRAs targeting it must be merged again).
 */
static tl_status touched_by(const tl_lora_set *set, const tl_lora *l, bool *touched) {
    size_t *t = NULL;
    tl_status st = lora_targets(set->m, l, &t);
    if (st) return st;
    for (size_t k = 0; k < tl_lora_module_count(l); k++)
        if (t[k] != TL_NOT_FOUND) touched[t[k]] = true;
    free(t);
    if (set->al) return TL_OK; /* made from the file's bytes tensor by tensor: no shared bytes */
    size_t n = tl_model_tensor_count(set->m);
    span *v = tl__os_malloc((n ? n : 1) * sizeof *v);
    if (!v) return tl__err(TL_ERR_NOMEM, "LoRA set: out of memory");
    for (size_t i = 0; i < n; i++) {
        const tl_tensor_info *ti = tl_model_tensor(set->m, i);
        v[i] = (span){ti->file, ti->offset, ti->offset + ti->nbytes, i};
    }
    qsort(v, n, sizeof *v, cmp_span);
    for (size_t i = 0; i < n;) { /* clusters of overlapping byte ranges */
        size_t j = i + 1;
        uint64_t end = v[i].b;
        bool any = touched[v[i].t];
        for (; j < n && v[j].file == v[i].file && v[j].a < end; j++) {
            if (v[j].b > end) end = v[j].b;
            any = any || touched[v[j].t];
        }
        for (size_t k = i; any && k < j; k++) touched[v[k].t] = true;
        i = j;
    }
    free(v);
    return TL_OK;
}

/* The touched tensors as a list (*list NULL when there is no session to tell). */
static tl_status touched_list(const tl_lora_set *set, const bool *touched, size_t **list,
                              size_t *n) {
    *list = NULL;
    *n = 0;
    if (!set->s) return TL_OK;
    size_t nt = tl_model_tensor_count(set->m);
    size_t *v = tl__os_malloc((nt ? nt : 1) * sizeof *v);
    if (!v) return tl__err(TL_ERR_NOMEM, "LoRA set: out of memory");
    for (size_t i = 0; i < nt; i++)
        if (touched[i]) v[(*n)++] = i;
    *list = v;
    return TL_OK;
}

/* Make the touched tensors busy in the session (copies dropped) while their bytes change. */
static tl_status begin(tl_lora_set *set, const bool *touched, size_t **list, size_t *n) {
    tl_status st = touched_list(set, touched, list, n);
    if (!st && *list) st = tl_session_update_begin(set->s, *list, *n);
    if (st) {
        free(*list);
        *list = NULL;
    }
    return st;
}

/* ... and free again; the next acquire loads their new bytes. */
static tl_status end(tl_lora_set *set, size_t *list, size_t n, tl_status st) {
    if (list) {
        tl_status e = tl_session_update_end(set->s, list, n);
        if (!st) st = e;
    }
    free(list);
    return st;
}

/*
 * At load: can l be applied to every tensor it targets as it loads? (types,
 * shapes, tensors on devices) Quantized targets of a set keeping them at F16
 * are made F16 in the session first.
 */
static tl_status atload_check(tl_lora_set *set, const tl_lora *l) {
    size_t *t = NULL;
    tl_status st = lora_targets(set->m, l, &t);
    for (size_t k = 0; !st && k < tl_lora_module_count(l); k++) {
        if (t[k] == TL_NOT_FOUND) continue;
        st = lora_atload_fits(set->m, l, k, t[k]);
        if (!st) st = tlr_session_producible(set->s, t[k]);
    }
    for (size_t k = 0; !st && k < tl_lora_module_count(l); k++) {
        if (t[k] == TL_NOT_FOUND || !(set->flags & TL_LORA_QUANT_AS_F16)) continue;
        tl_dtype d = tl_model_tensor(set->m, t[k])->dtype;
        if (d == TL_DTYPE_Q8_0 || d == TL_DTYPE_Q4_0)
            st = tl_session_set_dtype(set->s, t[k], TL_DTYPE_F16);
    }
    free(t);
    return st;
}

/* At load: the set's LoRAs, n of them, applied from now on (between begin and end). */
static tl_status atload_apply(tl_lora_set *set, size_t n) {
    return lora_atload_set(set->al, set->items, n);
}

tl_status tl_lora_set_add(tl_lora_set *set, const tl_lora *l, float scale, tl_lora_report *r,
                          size_t r_size) {
    if (!set || !l || (r && !r_size))
        return tl__err(TL_ERR_INVALID_ARG, "tl_lora_set_add: NULL argument or report size 0");
    if (!isfinite(scale))
        return tl__err(TL_ERR_INVALID_ARG, "tl_lora_set_add: scale %g is not finite",
                       (double)scale);
    size_t n = tl_model_tensor_count(set->m);
    bool *touched = tl__os_calloc(n ? n : 1, 1);
    set_item *v = tl__os_realloc(set->items, (set->n + 1) * sizeof *v);
    if (v) set->items = v;
    if (!touched || !v) {
        free(touched);
        return tl__err(TL_ERR_NOMEM, "tl_lora_set_add: out of memory");
    }
    size_t *list = NULL, nl = 0;
    tl_status st = touched_by(set, l, touched);
    tl_lora_report full = {0};
    if (set->al) {
        if (!st) st = tl_lora_match(set->m, l, &full, sizeof full);
        if (!st) st = atload_check(set, l);
        if (!st) st = begin(set, touched, &list, &nl);
        if (!st) {
            set->items[set->n] = (set_item){l, scale};
            tl_status e = atload_apply(set, set->n + 1);
            if (!e) set->n++;
            st = end(set, list, nl, e);
        }
        if (r) tl__copy_out(r, r_size, &full, sizeof full);
        free(touched);
        return st;
    }
    if (!st) st = begin(set, touched, &list, &nl);
    if (!st) st = end(set, list, nl, lora_apply_some(set->m, l, scale, NULL, &full));
    if (r) tl__copy_out(r, r_size, &full, sizeof full);
    if (!st) set->items[set->n++] = (set_item){l, scale};
    free(touched);
    return st;
}

static size_t find(const tl_lora_set *set, const tl_lora *l) {
    for (size_t i = 0; i < set->n; i++)
        if (set->items[i].l == l) return i;
    return TL_NOT_FOUND;
}

/* Unpatch every tensor l touches and merge the set's LoRAs into them again. */
static tl_status rebuild(tl_lora_set *set, const tl_lora *l) {
    size_t n = tl_model_tensor_count(set->m);
    bool *touched = tl__os_calloc(n ? n : 1, 1);
    if (!touched) return tl__err(TL_ERR_NOMEM, "LoRA set: out of memory");
    size_t *list = NULL, nl = 0;
    tl_status st = touched_by(set, l, touched);
    if (!st && set->al) { /* at load: the next loads of the touched tensors apply the set as is */
        st = begin(set, touched, &list, &nl);
        if (!st) st = end(set, list, nl, atload_apply(set, set->n));
        free(touched);
        return st;
    }
    if (!st) {
        st = begin(set, touched, &list, &nl);
        if (!st) {
            for (size_t i = 0; i < n && !st; i++)
                if (touched[i]) st = tl_model_tensor_unpatch(set->m, i);
            for (size_t k = 0; k < set->n && !st; k++)
                st = lora_apply_some(set->m, set->items[k].l, set->items[k].scale, touched, NULL);
            st = end(set, list, nl, st);
        }
    }
    free(touched);
    return st;
}

tl_status tl_lora_set_remove(tl_lora_set *set, const tl_lora *l) {
    if (!set || !l) return tl__err(TL_ERR_INVALID_ARG, "tl_lora_set_remove: NULL argument");
    size_t i = find(set, l);
    if (i == TL_NOT_FOUND) return tl__err(TL_ERR_NOT_FOUND, "tl_lora_set_remove: LoRA not in the set");
    set_item it = set->items[i];
    memmove(set->items + i, set->items + i + 1, (set->n - i - 1) * sizeof *set->items);
    set->n--;
    tl_status st = rebuild(set, l);
    if (st) { /* put it back in the list; the bytes are re-derived on the next change */
        memmove(set->items + i + 1, set->items + i, (set->n - i) * sizeof *set->items);
        set->items[i] = it;
        set->n++;
    }
    return st;
}

tl_status tl_lora_set_scale(tl_lora_set *set, const tl_lora *l, float scale) {
    if (!set || !l) return tl__err(TL_ERR_INVALID_ARG, "tl_lora_set_scale: NULL argument");
    if (!isfinite(scale))
        return tl__err(TL_ERR_INVALID_ARG, "tl_lora_set_scale: scale %g is not finite",
                       (double)scale);
    size_t i = find(set, l);
    if (i == TL_NOT_FOUND) return tl__err(TL_ERR_NOT_FOUND, "tl_lora_set_scale: LoRA not in the set");
    float old = set->items[i].scale;
    set->items[i].scale = scale;
    tl_status st = rebuild(set, l);
    if (st) set->items[i].scale = old;
    return st;
}
