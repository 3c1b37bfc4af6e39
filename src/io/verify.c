/*
 * verify.c — xxHash64 of a tensor in memory against its reference bytes (see
 * io/verify.h): the file's bytes, or — for a patched tensor — the bytes of
 * the copy-on-write mapping it was patched to. Reads of mappings (views,
 * patched references) are made under the SIGBUS guard.
 */
#include "io/verify.h"
#include "core/error.h"
#include "io/convert.h"
#include "os/guard.h"
#include "os/os.h"

#include <errno.h>
#include <string.h>
#include <xxhash.h>

typedef struct hash_args {
    const void *p;
    size_t n;
    uint64_t h;
} hash_args;

static void do_hash(void *a) {
    hash_args *h = a;
    h->h = XXH64(h->p, h->n, 0);
}

tl_status tl__io_verify_tensor(const tl_model *m, size_t i, int fd, const void *patched,
                               const char *path, const tl_tensor_info *t,
                               const tl_loaded_tensor *lt, unsigned char *a, unsigned char *b,
                               uint64_t staging) {
    hash_args mh = {lt->data, (size_t)lt->nbytes, 0};
    if (tl__os_guarded_call(do_hash, &mh))
        return tl__err(TL_ERR_CHANGED,
                       "%s: tensor %s: verify: the file was truncated under its "
                       "mapping",
                       path, t->name);
    XXH64_state_t *st = XXH64_createState();
    if (!st) return tl__err(TL_ERR_NOMEM, "%s: tensor %s: verify: out of memory", path, t->name);
    XXH64_reset(st, 0);
    tl__conv_unit u = {1, 1, 1}; /* converted: elements (or blocks); else bytes */
    if (lt->converted) tl__convert_unit(t->dtype, lt->dtype, &u);
    unsigned in = u.in, out = u.out;
    uint64_t per = staging / (in > out ? in : out); /* units per chunk */
    uint64_t total = lt->converted ? t->n_elements / u.elems : t->nbytes;
    tl_status s = TL_OK;
    for (uint64_t e0 = 0; e0 < total; e0 += per) {
        uint64_t n = total - e0 < per ? total - e0 : per;
        int err;
        if (t->strides && m) {
            tl_status g = tl_model_tensor_read(m, i, e0 * in, a, n * in);
            if (g != TL_OK) {
                s = g;
                break;
            }
            err = 0;
        } else if (patched)
            err =
                tl__os_guarded_copy(a, (const unsigned char *)patched + e0 * in, (size_t)(n * in));
        else
            err = tl__os_pread_full(fd, a, (size_t)(n * in), t->offset + e0 * in);
        if (err) {
            s = tl__err(err == ENODATA || err == EFAULT ? TL_ERR_CHANGED : TL_ERR_IO,
                        "%s: tensor %s: verify read at %llu: %s", path, t->name,
                        (unsigned long long)(t->offset + e0 * in),
                        err == ENODATA  ? "the file ends early (truncated?)"
                        : err == EFAULT ? "the file was truncated under its mapping"
                                        : strerror(err));
            break;
        }
        if (lt->converted) {
            uint64_t bad;
            if (!tl__convert_run(lt->dtype, b, t->dtype, a, n * u.elems, &bad)) {
                s = tl__err(TL_ERR_INTEGRITY, "%s: tensor %s: verify: element %llu out of range",
                            path, t->name, (unsigned long long)(e0 * u.elems + bad));
                break;
            }
            XXH64_update(st, b, (size_t)(n * out));
        } else {
            XXH64_update(st, a, (size_t)n);
        }
    }
    uint64_t ref_hash = XXH64_digest(st);
    XXH64_freeState(st);
    if (s != TL_OK) return s;
    if (ref_hash != mh.h)
        return tl__err(TL_ERR_INTEGRITY,
                       "%s: tensor %s: bytes in memory differ from %s (xxh64 %016llx in memory, "
                       "%016llx %s)",
                       path, t->name, patched ? "the bytes it was patched to" : "the file",
                       (unsigned long long)mh.h, (unsigned long long)ref_hash,
                       patched ? "patched" : "from the file");
    return TL_OK;
}
