/*
 * access.c — reading tensor bytes out of the mappings safely.
 *
 * A mapping outlives the file's promises: another program may truncate or
 * rewrite the file while it is mapped, and a read of a vanished page is a
 * SIGBUS. Bulk readers check the file's size first (cheap, catches the
 * common case before any copy) and copy under the os/guard.h SIGBUS guard
 * (catches a truncation that races with the copy), and report which file
 * and tensor changed.
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
    if (tl__os_guarded_copy(dst, (const uint8_t *)f->map + t->offset + off, (size_t)n))
        return tl__err(TL_ERR_CHANGED,
                      "%s: tensor '%s': file truncated under its mapping while reading",
                      f->info.path, t->name);
    return TL_OK;
}
