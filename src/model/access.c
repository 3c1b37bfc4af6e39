/*
 * access.c — reading tensor bytes out of the mappings safely.
 *
 * A mapping outlives the file's promises: another program may truncate or
 * rewrite the file while it is mapped, and a read of a vanished page is a
 * SIGBUS. Bulk readers check the file's size first (cheap, catches the
 * common case before any copy) and copy under the os/guard.h SIGBUS guard
 * (catches a truncation that races with the copy), and report which file
 * and tensor changed. Strided checkpoint tensors are gathered element by
 * element (runs of consecutive elements in one copy, one guard for all).
 */
#include "model/catalog.h"

#include "core/checked.h"
#include "core/error.h"
#include "os/guard.h"
#include "os/os.h"

#include <string.h>

static tl_status check_file(const tl__mfile *f) {
    uint64_t now;
    int e = tl__os_fsize(f->fd, &now);
    if (e) return tl__err_errno(e, "%s: fstat", f->info.path);
    if (now != f->info.size)
        return tl__err(TL_ERR_CHANGED,
                      "%s: file changed under its mapping (%llu bytes when opened, %llu now)",
                      f->info.path, (unsigned long long)f->info.size, (unsigned long long)now);
    return TL_OK;
}

tl_status tl_model_check_files(const tl_model *m) {
    for (size_t i = 0; i < m->n_files; i++) {
        tl_status st = check_file(&m->files[i]);
        if (st) return st;
    }
    return TL_OK;
}

/* Bytes [off, off+n) of a strided tensor, gathered into dst (runs under one SIGBUS guard). */
typedef struct gather_args {
    const tl_tensor_info *t;
    const uint8_t *base; /* the tensor's first element */
    uint64_t off, n;
    uint8_t *dst;
} gather_args;

static void do_gather(void *arg) {
    const gather_args *g = arg;
    const tl_tensor_info *t = g->t;
    uint64_t es = t->nbytes / t->n_elements;
    uint64_t e = g->off / es, skip = g->off % es, n = g->n;
    uint64_t idx[TL_MAX_DIMS], src = 0; /* element e's index and storage position */
    for (uint32_t d = t->n_dims; d-- > 0;) {
        idx[d] = e % (uint64_t)t->shape[d];
        e /= (uint64_t)t->shape[d];
        src += idx[d] * (uint64_t)t->strides[d];
    }
    uint8_t *dst = g->dst;
    uint64_t run_src = 0, run_len = 0; /* pending run of consecutive source bytes */
    while (n) {
        uint64_t take = es - skip < n ? es - skip : n, at = src * es + skip;
        if (run_len && run_src + run_len == at) {
            run_len += take;
        } else {
            if (run_len) memcpy(dst, g->base + run_src, (size_t)run_len);
            dst += run_len;
            run_src = at;
            run_len = take;
        }
        n -= take;
        skip = 0;
        for (uint32_t d = t->n_dims; d-- > 0;) { /* next element, row-major */
            src += (uint64_t)t->strides[d];
            if (++idx[d] < (uint64_t)t->shape[d]) break;
            src -= (uint64_t)t->strides[d] * idx[d];
            idx[d] = 0;
        }
    }
    if (run_len) memcpy(dst, g->base + run_src, (size_t)run_len);
}

tl_status tl_model_tensor_read(const tl_model *m, size_t i, uint64_t off, void *dst, uint64_t n) {
    if (i >= m->n_tensors) return tl__err(TL_ERR_INVALID_ARG, "tensor index %zu out of range", i);
    const tl_tensor_info *t = &m->tensors[i];
    const tl__mfile *f = &m->files[t->file];
    if (!tl__range_ok(off, n, t->nbytes))
        return tl__err(TL_ERR_INVALID_ARG,
                      "%s: tensor '%s': read [%llu, +%llu) outside its %llu bytes", f->info.path,
                      t->name, (unsigned long long)off, (unsigned long long)n,
                      (unsigned long long)t->nbytes);
    tl_status st = check_file(f);
    if (st) return tl__err_prefix(st, "tensor '%s'", t->name);
    gather_args g = {t, (const uint8_t *)f->map + t->offset, off, n, dst};
    if (t->strides ? tl__os_guarded_call(do_gather, &g)
                   : tl__os_guarded_copy(dst, (const uint8_t *)f->map + t->offset + off, (size_t)n))
        return tl__err(TL_ERR_CHANGED,
                      "%s: tensor '%s': file truncated under its mapping while reading",
                      f->info.path, t->name);
    return TL_OK;
}
