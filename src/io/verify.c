/*
 * verify.c — xxHash64 of a tensor in memory against the file (see io/verify.h).
 */
#include "io/verify.h"
#include "core/error.h"
#include "io/convert.h"
#include "os/os.h"

#include <errno.h>
#include <string.h>
#include <xxhash.h>

tl_status tl_io_verify_tensor(const tl_model *m, size_t i, const char *path,
                              const tl_loaded_tensor *lt, unsigned char *a, unsigned char *b,
                              uint64_t staging) {
    const tl_tensor_info *t = tl_model_tensor(m, i);
    int fd = tl_model_file_fd(m, t->file);
    uint64_t mem_hash = XXH64(lt->data, (size_t)lt->nbytes, 0);
    XXH64_state_t *st = XXH64_createState();
    if (!st) return tl_err(TL_ERR_NOMEM, "%s: tensor %s: verify: out of memory", path, t->name);
    XXH64_reset(st, 0);
    unsigned in = lt->converted ? tl_convert_elem_size(t->dtype) : 1;
    unsigned out = lt->converted ? tl_convert_elem_size(lt->dtype) : 1;
    uint64_t per = staging / (in > out ? in : out); /* elements per chunk */
    uint64_t total = lt->converted ? t->n_elements : t->nbytes;
    tl_status s = TL_OK;
    for (uint64_t e0 = 0; e0 < total; e0 += per) {
        uint64_t n = total - e0 < per ? total - e0 : per;
        if (t->strides) {
            s = tl_model_tensor_read(m, i, e0 * in, a, n * in);
            if (s != TL_OK) break;
        }
        int err = t->strides ? 0 : tl_os_pread_full(fd, a, (size_t)(n * in), t->offset + e0 * in);
        if (err) {
            s = tl_err(err == ENODATA ? TL_ERR_CHANGED : TL_ERR_IO,
                       "%s: tensor %s: verify read at %llu: %s", path, t->name,
                       (unsigned long long)(t->offset + e0 * in),
                       err == ENODATA ? "the file ends early (truncated?)" : strerror(err));
            break;
        }
        if (lt->converted) {
            uint64_t bad;
            if (!tl_convert_run(lt->dtype, b, t->dtype, a, n, &bad)) {
                s = tl_err(TL_ERR_INTEGRITY, "%s: tensor %s: verify: element %llu out of range",
                           path, t->name, (unsigned long long)(e0 + bad));
                break;
            }
            XXH64_update(st, b, (size_t)(n * out));
        } else {
            XXH64_update(st, a, (size_t)n);
        }
    }
    uint64_t file_hash = XXH64_digest(st);
    XXH64_freeState(st);
    if (s != TL_OK) return s;
    if (file_hash != mem_hash)
        return tl_err(TL_ERR_INTEGRITY,
                      "%s: tensor %s: bytes in memory differ from the file (xxh64 %016llx in "
                      "memory, %016llx from the file)",
                      path, t->name, (unsigned long long)mem_hash, (unsigned long long)file_hash);
    return TL_OK;
}
