/*
 * spill_api.c — standalone spill files for host programs (tl_spill_*): one
 * unnamed file per buffer, written in bounded chunks straight from the
 * caller's memory and mapped back copy-on-write, so a tensor can leave RAM
 * for disk without a second copy of it in memory.
 */
#include "core/env.h"
#include "core/error.h"
#include "os/os.h"

#include <stdlib.h>

struct tl_spill {
    int fd;
    uint64_t nbytes;
    uint64_t chunk;
    void *map;
    char *dir;
};

void tl_spill_options_init(tl_spill_options *o) {
    if (!o) return;
    *o = (tl_spill_options){0};
    o->size = sizeof *o;
}

static const char *spill_dir(const char *dir) {
    if (!dir || !*dir) dir = tl__env_get(TL_ENV_SPILL_DIR);
    if (!dir || !*dir) dir = tl__env_get(TL_ENV_TMPDIR);
    if (!dir || !*dir) dir = "/tmp";
    return dir;
}

tl_status tl_spill_create(uint64_t nbytes, const tl_spill_options *opts, tl_spill **out) {
    if (!out) return tl__err(TL_ERR_INVALID_ARG, "spill: out is NULL");
    *out = NULL;
    if (nbytes == 0) return tl__err(TL_ERR_INVALID_ARG, "spill: a spill file of 0 bytes");
    tl_spill_options o;
    tl_spill_options_init(&o);
    if (opts) {
        if (opts->size == 0)
            return tl__err(TL_ERR_INVALID_ARG,
                           "spill: options size is 0 (use tl_spill_options_init)");
        size_t n = opts->size < sizeof o ? opts->size : sizeof o;
        const char *src = (const char *)opts;
        char *dst = (char *)&o;
        for (size_t i = 0; i < n; i++)
            dst[i] = src[i];
        o.size = sizeof o;
    }
    tl_spill *s = tl__os_calloc(1, sizeof *s);
    if (!s) return tl__err(TL_ERR_NOMEM, "spill: out of memory");
    s->fd = -1;
    s->nbytes = nbytes;
    s->chunk = o.chunk_size ? o.chunk_size : TL_SPILL_DEFAULT_CHUNK;
    s->dir = tl__os_strdup(spill_dir(o.dir));
    if (!s->dir) {
        free(s);
        return tl__err(TL_ERR_NOMEM, "spill: out of memory");
    }
    int e = tl__os_open_tmpfile(s->dir, &s->fd);
    if (e) {
        tl_status st = tl__err_errno(e, "spill directory %s: cannot create a spill file", s->dir);
        tl_spill_destroy(s);
        return st;
    }
    e = tl__os_ftruncate(s->fd, nbytes);
    if (e) {
        tl_status st =
            tl__err_errno(e, "spill directory %s: cannot size a spill file to %llu bytes", s->dir,
                          (unsigned long long)nbytes);
        tl_spill_destroy(s);
        return st;
    }
    *out = s;
    return TL_OK;
}

tl_status tl_spill_write(tl_spill *s, uint64_t off, const void *src, uint64_t n) {
    if (!s || (!src && n)) return tl__err(TL_ERR_INVALID_ARG, "spill: NULL argument");
    if (s->map) return tl__err(TL_ERR_INVALID_ARG, "spill: written after it was mapped");
    if (off > s->nbytes || n > s->nbytes - off)
        return tl__err(TL_ERR_INVALID_ARG, "spill: write of %llu bytes at %llu past its %llu bytes",
                       (unsigned long long)n, (unsigned long long)off,
                       (unsigned long long)s->nbytes);
    const char *p = src;
    uint64_t done = 0;
    while (done < n) {
        uint64_t len = n - done < s->chunk ? n - done : s->chunk;
        int e = tl__os_pwrite_full(s->fd, p + done, (size_t)len, off + done);
        if (e)
            return tl__err_errno(e, "spill directory %s: write of %llu bytes at %llu failed",
                                 s->dir, (unsigned long long)len, (unsigned long long)(off + done));
        /* start writeback of the chunk now, so the page cache does not
         * collect the whole buffer dirty before the kernel writes it */
        (void)tl__os_fadvise_dontneed(s->fd, off + done, len);
        done += len;
    }
    return TL_OK;
}

tl_status tl_spill_map(tl_spill *s, void **data) {
    if (!s || !data) return tl__err(TL_ERR_INVALID_ARG, "spill: NULL argument");
    if (!s->map) {
        int e = tl__os_map(s->fd, s->nbytes, true, false, &s->map);
        if (e) {
            s->map = NULL;
            return tl__err_errno(e, "spill directory %s: cannot map a spill file of %llu bytes",
                                 s->dir, (unsigned long long)s->nbytes);
        }
    }
    *data = s->map;
    return TL_OK;
}

uint64_t tl_spill_size(const tl_spill *s) {
    return s ? s->nbytes : 0;
}

int tl_spill_fd(const tl_spill *s) {
    return s ? s->fd : -1;
}

void tl_spill_destroy(tl_spill *s) {
    if (!s) return;
    if (s->map) (void)tl__os_unmap(s->map, s->nbytes);
    if (s->fd >= 0) (void)tl__os_close(s->fd);
    free(s->dir);
    free(s);
}
