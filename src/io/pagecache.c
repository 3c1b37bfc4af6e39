/*
 * pagecache.c — public page-cache facts and control for a file by path:
 * resident bytes (mincore) and eviction (POSIX_FADV_DONTNEED).
 */
#include "core/error.h"
#include "os/os.h"

#include <errno.h>
#include <string.h>

tl_status tl_file_page_cache(const char *path, uint64_t *resident, uint64_t *size) {
    if (!path || !resident) return tl__err(TL_ERR_INVALID_ARG, "tl_file_page_cache: NULL argument");
    int fd;
    uint64_t sz;
    int e = tl__os_open_ro(path, &fd, &sz);
    if (e) return tl__err(e == ENOENT ? TL_ERR_NOT_FOUND : TL_ERR_IO, "%s: %s", path, strerror(e));
    uint64_t res = 0, tot = 0;
    e = tl__os_file_residency(fd, sz, &res, &tot);
    tl__os_close(fd);
    if (e) return tl__err(TL_ERR_IO, "%s: mincore: %s", path, strerror(e));
    uint64_t bytes = res * tl__os_page_size();
    *resident = bytes > sz ? sz : bytes;
    if (size) *size = sz;
    return TL_OK;
}

tl_status tl_file_evict(const char *path) {
    if (!path) return tl__err(TL_ERR_INVALID_ARG, "tl_file_evict: NULL path");
    int fd;
    uint64_t sz;
    int e = tl__os_open_ro(path, &fd, &sz);
    if (e) return tl__err(e == ENOENT ? TL_ERR_NOT_FOUND : TL_ERR_IO, "%s: %s", path, strerror(e));
    e = tl__os_fadvise_dontneed(fd, 0, 0);
    tl__os_close(fd);
    if (e) return tl__err(TL_ERR_IO, "%s: posix_fadvise(DONTNEED): %s", path, strerror(e));
    return TL_OK;
}
