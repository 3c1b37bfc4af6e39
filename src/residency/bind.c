/*
 * bind.c — an acquired tensor as the storage of an engine's ggml tensor
 * (tl_session_bind_ggml). Device parts on a ggml device resolve to their
 * pool buffer and address; host parts (the mapping, RAM and spill copies,
 * host-pointer devices) are wrapped in place as a ggml CPU buffer, kept with
 * the acquired set and freed at its release. The type and shape are checked
 * against the catalog before ggml sees anything (ggml aborts on a misfit).
 * A row-split tensor binds part by part (tl_session_bind_ggml_part), each
 * part a ggml tensor of its rows on its own device.
 */
#include "residency/residency.h"

#include "core/error.h"
#include "devices/ggml_dl.h"
#include "os/os.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tlr_acquired_unbind(tl_acquired *a) {
    for (size_t i = 0; i < a->n_wraps; i++)
        tl_ggml_host_buffer_destroy(&a->wraps[i]);
    free(a->wraps);
    a->wraps = NULL;
    a->n_wraps = a->cap_wraps = 0;
}

/* "F16 [4096, 11008]" of a catalog entry. */
static void describe_info(const tl_tensor_info *t, char *buf, size_t cap) {
    int w = snprintf(buf, cap, "%s [", tl_dtype_name(t->dtype));
    for (uint32_t k = 0; k < t->n_dims && w > 0 && (size_t)w < cap; k++)
        w += snprintf(buf + w, cap - (size_t)w, "%s%" PRId64, k ? ", " : "", t->shape[k]);
    if (w > 0 && (size_t)w < cap) snprintf(buf + w, cap - (size_t)w, "]");
}

/* The same for a ggml tensor, outermost first, trailing 1s dropped. */
static void describe_ggml(const tl__ggml_tensor *x, char *buf, size_t cap) {
    const char *tn = x->type >= 0 && x->type < 40 ? tl_dtype_name((tl_dtype)x->type) : NULL;
    int nd = TL__GGML_MAX_DIMS;
    while (nd > 1 && x->ne[nd - 1] == 1)
        nd--;
    int w = tn ? snprintf(buf, cap, "%s [", tn) : snprintf(buf, cap, "ggml type %d [", x->type);
    for (int k = nd - 1; k >= 0 && w > 0 && (size_t)w < cap; k--)
        w += snprintf(buf + w, cap - (size_t)w, "%s%" PRId64, k == nd - 1 ? "" : ", ", x->ne[k]);
    if (w > 0 && (size_t)w < cap) snprintf(buf + w, cap - (size_t)w, "]");
}

static bool same_shape(const tl__ggml_tensor *x, const tl_tensor_info *t) {
    if ((int)t->dtype != x->type || t->n_dims > TL__GGML_MAX_DIMS) return false;
    for (uint32_t k = 0; k < TL__GGML_MAX_DIMS; k++) {
        int64_t want = k < t->n_dims ? t->shape[t->n_dims - 1 - k] : 1;
        if (x->ne[k] != want) return false;
    }
    return true;
}

/*
 * Checks common to both binds: arguments, ggml loaded, a whole bind (part < 0)
 * of a tensor kept whole, and the ggml tensor's type and shape against the
 * catalog's (a row-split tensor's part: with the part's rows as the outermost
 * dimension). The set's tensor i on success.
 */
static tl_status bind_check(const char *fn, const tl_acquired *a, size_t i, void *ggml_tensor,
                            int64_t part, const tl_session_tensor **out) {
    if (!a || !ggml_tensor) return tl__err(TL_ERR_INVALID_ARG, "%s: NULL argument", fn);
    if (i >= a->n)
        return tl__err(TL_ERR_INVALID_ARG, "%s: tensor %zu of a set of %zu", fn, i, a->n);
    if (!tl__ggml_api_get())
        return tl__err(TL_ERR_INVALID_ARG, "%s: ggml is not loaded (tl_device_ggml_discover)", fn);
    const tl_session_tensor *st = &a->t[i];
    const tl_tensor_info *t = st->info;
    if (part < 0 && st->n_parts != 1)
        return tl__err(TL_ERR_UNSUPPORTED,
                       "tensor %s is split by rows over %u devices: bind each part "
                       "(tl_session_bind_ggml_part)",
                       t->name, st->n_parts);
    if (part >= (int64_t)st->n_parts)
        return tl__err(TL_ERR_INVALID_ARG, "%s: tensor %s has %u part(s), not a part %lld", fn,
                       t->name, st->n_parts, (long long)part);
    const tl_session_part *p = &st->parts[part < 0 ? 0 : part];
    tl_tensor_info shape = *t;
    if (st->n_parts > 1 && t->n_dims > 0) shape.shape[0] = (int64_t)(p->row_end - p->row_begin);
    const tl__ggml_tensor *x = ggml_tensor;
    if (!same_shape(x, &shape)) {
        char want[160], got[160];
        describe_info(&shape, want, sizeof want);
        describe_ggml(x, got, sizeof got);
        if (st->n_parts > 1)
            return tl__err(TL_ERR_INVALID_ARG,
                           "tensor %s: its part %lld is %s (rows %" PRIu64 "..%" PRIu64
                           "), but the ggml tensor bound to it is %s",
                           t->name, (long long)part, want, p->row_begin, p->row_end, got);
        return tl__err(TL_ERR_INVALID_ARG,
                       "tensor %s is %s in the model, but the ggml tensor bound to it is %s",
                       t->name, want, got);
    }
    *out = st;
    return TL_OK;
}

static tl_status bind_part(tl_acquired *a, const tl_tensor_info *t, const tl_session_part *p,
                           tl__ggml_tensor *x);

tl_status tl_session_bind_ggml(tl_session *s, const tl_acquired *ca, size_t i, void *ggml_tensor) {
    const tl_session_tensor *st;
    tl_status r = s ? bind_check("tl_session_bind_ggml", ca, i, ggml_tensor, -1, &st)
                    : tl__err(TL_ERR_INVALID_ARG, "tl_session_bind_ggml: NULL argument");
    if (r) return r;
    return bind_part((tl_acquired *)ca, st->info, &st->parts[0], ggml_tensor);
}

tl_status tl_session_bind_ggml_part(tl_session *s, const tl_acquired *ca, size_t i, uint32_t part,
                                    void *ggml_tensor) {
    const tl_session_tensor *st;
    tl_status r = s ? bind_check("tl_session_bind_ggml_part", ca, i, ggml_tensor, part, &st)
                    : tl__err(TL_ERR_INVALID_ARG, "tl_session_bind_ggml_part: NULL argument");
    if (r) return r;
    return bind_part((tl_acquired *)ca, st->info, &st->parts[part], ggml_tensor);
}

/* Part p of catalog tensor t as x's storage; wrappers of host bytes are kept by set a. */
static tl_status bind_part(tl_acquired *a, const tl_tensor_info *t, const tl_session_part *p,
                           tl__ggml_tensor *x) {
    if (p->tier == TL_TIER_DEVICE) {
        tl__ggml_dev *g = tl__ggml_dev_of(p->device);
        if (!g)
            return tl__err(TL_ERR_UNSUPPORTED,
                           "tensor %s lives on %s, which is not a ggml device: nothing to bind",
                           t->name, p->device ? tl_device_name(p->device) : "?");
        void *buf, *addr;
        tl_status r = tl__ggml_dev_resolve(g, p->dptr, p->nbytes, &buf, &addr);
        if (r) return tl__err_prefix(r, "tensor %s", t->name);
        return tl__ggml_bind(x, buf, addr, p->nbytes, t->name);
    }
    /* host bytes: wrap them in place as a ggml CPU buffer */
    if (!p->host || p->nbytes == 0)
        return tl__err(TL_ERR_INVALID_ARG, "tensor %s has no bytes to bind", t->name);
    tl_device *cpu = NULL;
    tl_status r = tl_device_find("ggml:CPU", &cpu);
    if (r)
        return tl__err(TL_ERR_NOT_FOUND,
                       "tensor %s is in host memory and no ggml:CPU device is registered to wrap "
                       "it (tl_device_ggml_discover)",
                       t->name);
    if (a->n_wraps == a->cap_wraps) {
        size_t nc = a->cap_wraps ? a->cap_wraps * 2 : 8;
        tl_ggml_host_buffer *nw = tl__os_realloc(a->wraps, nc * sizeof *nw);
        if (!nw) {
            tl_device_release(cpu);
            return tl__err(TL_ERR_NOMEM, "tensor %s: out of memory", t->name);
        }
        a->wraps = nw;
        a->cap_wraps = nc;
    }
    tl_ggml_host_buffer *w = &a->wraps[a->n_wraps];
    r = tl_ggml_host_buffer_create(cpu, p->host, p->nbytes, w);
    tl_device_release(cpu);
    if (r) return tl__err_prefix(r, "tensor %s", t->name);
    a->n_wraps++;
    return tl__ggml_bind(x, w->buffer, (char *)w->base + w->offset, p->nbytes, t->name);
}
