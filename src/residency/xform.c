/*
 * xform.c — the type a session keeps a tensor in (tl_session_options.dtype
 * through tl_convert_target, or tl_session_set_dtype) and what that makes of
 * its units: the bytes each unit holds converted (whole rows of the tensor,
 * so whole quantization blocks), the file bytes it is made from, and the
 * tensor info the session hands out for it; and producing a unit through a
 * producer (an at-load LoRA set): merged by the unit's device when it
 * computes and the producer gives low-rank terms, else on the host with a
 * bounded buffer.
 */
#include "residency/residency.h"

#include "core/error.h"
#include "devices/ggml_merge.h"
#include "io/io.h"
#include "os/hostmem.h"

tl_status tlr_xform_check(const tl_model *m, size_t t, tl_dtype to) {
    const tl_tensor_info *ti = tl_model_tensor(m, t);
    const char *path = tl_model_file(m, ti->file)->path;
    switch (tl__type_fits(ti, to)) {
    case TL__NO_CONVERSION:
        return tl__err(TL_ERR_UNSUPPORTED, "%s: tensor %s: no conversion from %s to %s", path,
                       ti->name, tl_dtype_name(ti->dtype), tl_dtype_name(to));
    case TL__ROWS_NOT_BLOCKS:
        return tl__err(TL_ERR_UNSUPPORTED,
                       "%s: tensor %s: its rows are not a whole number of %u-element %s blocks",
                       path, ti->name, tl_dtype_block_elems(to), tl_dtype_name(to));
    case TL__ELEMENTS_NOT_BLOCKS:
        return tl__err(TL_ERR_UNSUPPORTED, "%s: tensor %s: %llu elements are not whole %s blocks",
                       path, ti->name, (unsigned long long)ti->n_elements, tl_dtype_name(to));
    case TL__FITS:
        break;
    }
    return TL_OK;
}

void tlr_xform_info(const tl_model *m, size_t t, tl_dtype to, tl_tensor_info *out) {
    *out = *tl_model_tensor(m, t);
    if (to == out->dtype) return;
    uint64_t n = 0;
    tl_dtype_nbytes(to, out->n_elements, &n); /* checked by tlr_xform_check */
    out->dtype = to;
    out->nbytes = n;
}

void tlr_xform_unit(const tl_model *m, const tlr_place *pl, tl_dtype to, tlr_xunit *out) {
    const tl_tensor_info *ti = tl_model_tensor(m, pl->tensor);
    out->from = ti->dtype;
    out->to = to;
    out->src_off = pl->off;
    out->src_len = pl->len;
    out->off = pl->off;
    out->len = pl->len;
    if (to == ti->dtype) return;
    tl_tensor_info x;
    tlr_xform_info(m, pl->tensor, to, &x);
    if (pl->off == 0 && pl->len == ti->nbytes) { /* the whole tensor */
        out->len = x.nbytes;
        return;
    }
    /* a row block: rows hold the same number of elements in either type */
    uint64_t rows = (uint64_t)ti->shape[0], row = x.nbytes / rows;
    out->off = pl->row_begin * row;
    out->len = (pl->row_end - pl->row_begin) * row;
}

#define PRODUCE_CHUNK (16ull << 20) /* bytes of a unit produced at a time for an upload */

/* Terms of one merge on a device (devices/ggml_merge.h takes at most this many). */
#define DEVICE_TERMS 16

/*
 * The unit's file bytes moved into its memory by the mover (io) as any load
 * is (host-addressed: straight in; else through its staging), then the
 * producer's terms merged there by the device.
 */
static tl_status produce_on_device(const tlr_producer *p, const tl_model *m, const tlr_place *pl,
                                   tl__io_engine *io, void *host, tl_device *dev, tl_devptr dptr) {
    const tl_tensor_info *ti = tl_model_tensor(m, pl->tensor);
    const unsigned char *src = tl_model_tensor_data(m, pl->tensor);
    if (!src)
        return tl__err(TL_ERR_UNSUPPORTED, "%s: tensor %s is not contiguous",
                       tl_model_file(m, ti->file)->path, ti->name);
    tl__io_xfer x = {.len = pl->len, .path = tl_model_file(m, ti->file)->path, .name = ti->name};
    x.src.kind = TL_IO_HOST;
    x.src.host = (void *)(uintptr_t)(src + pl->off);
    x.src.mapped = true;
    if (host) {
        x.dst.kind = TL_IO_HOST;
        x.dst.host = host;
    } else {
        x.dst.kind = TL_IO_DEVICE;
        x.dst.dev = dev;
        x.dst.dptr = dptr;
    }
    tl_status st = tl__io_run(io, &x, 1, TL_IO_DEMAND);
    if (st) return st;
    tlr_lowrank t[DEVICE_TERMS];
    tl__ggml_lowrank g[DEVICE_TERMS];
    size_t n = 0;
    void *hold = NULL;
    st = p->lowrank(p->user, pl->tensor, pl->row_begin, pl->row_end, t, DEVICE_TERMS, &n, &hold);
    if (st) return st;
    for (size_t i = 0; i < n; i++)
        g[i] = (tl__ggml_lowrank){t[i].up, t[i].down_t, t[i].rank, t[i].scale};
    uint64_t rows = (uint64_t)ti->shape[0];
    st = tl__ggml_merge_lowrank(dev, dptr, ti->dtype, (int64_t)(pl->row_end - pl->row_begin),
                                (int64_t)(ti->n_elements / rows), g, n);
    p->done(p->user, hold);
    return st;
}

tl_status tlr_xform_produce(const tlr_producer *p, const tl_model *m, const tlr_place *pl,
                            const tlr_xunit *x, tl__io_engine *io, void *host, tl_device *dev,
                            tl_devptr dptr, double *err, bool *on_device) {
    const tl_tensor_info *ti = tl_model_tensor(m, pl->tensor);
    *err = 0;
    *on_device = false;
    if (p->lowrank && x->from == x->to && pl->row_end > pl->row_begin && tl__ggml_merges(dev)) {
        if (produce_on_device(p, m, pl, io, host, dev, dptr) == TL_OK) {
            *on_device = true;
            return TL_OK;
        }
        tl__err_clear(); /* made on the host instead, which names what it refuses */
    }
    uint64_t r0 = pl->row_begin, r1 = pl->row_end, rows = r1 - r0;
    if (rows == 0 || x->len == 0) return TL_OK;
    uint64_t row = x->len / rows;
    /* rows at a time: at most PRODUCE_CHUNK of them in their type, and in F32 (what a producer
       may work in) */
    uint64_t wide = ti->n_elements / (uint64_t)ti->shape[0] * 4;
    if (wide < row) wide = row;
    uint64_t step = wide >= PRODUCE_CHUNK ? 1 : PRODUCE_CHUNK / wide;
    if (step > rows) step = rows;
    void *buf = NULL;
    uint64_t blen = 0;
    if (!host && tl__os_anon_alloc(step * row, TL_OS_PAGES_SMALL, &buf, &blen))
        return tl__err(TL_ERR_NOMEM, "%s: tensor %s: out of memory for %llu bytes of staging",
                       tl_model_file(m, ti->file)->path, ti->name,
                       (unsigned long long)(step * row));
    tl_status st = TL_OK;
    for (uint64_t r = r0; r < r1 && !st; r += step) {
        uint64_t n = r1 - r < step ? r1 - r : step;
        double e = 0;
        void *to = host ? (unsigned char *)host + (r - r0) * row : buf;
        st = p->rows(p->user, pl->tensor, r, r + n, x->to, to, &e);
        if (e > *err) *err = e;
        if (!st && !host) {
            st = tl_device_copy_to(dev, dptr + (r - r0) * row, buf, n * row);
            if (st) st = tl__err_prefix(st, "%s: tensor %s", tl_model_file(m, ti->file)->path, ti->name);
        }
    }
    if (buf) tl__os_anon_free(buf, blen);
    return st;
}
