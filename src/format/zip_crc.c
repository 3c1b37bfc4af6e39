/*
 * zip_crc.c — CRC-32 for zip entries, and tl_ckpt_refresh_crcs: after a
 * checkpoint was written with changed tensor bytes (tierload merge), every
 * stored entry's CRC-32 is computed again from the written bytes and put in
 * its central directory record and its local header (or, for an entry with a
 * data descriptor, in the descriptor), so zip readers (Python's zipfile,
 * torch.load, unzip -t) accept the file.
 */
#include "format/zip.h"

#include "core/error.h"
#include "os/os.h"

#include <errno.h>
#include <stdbool.h>

static uint32_t table[256];
static bool table_ready;

uint32_t tl__zip_crc32(uint32_t crc, const uint8_t *p, uint64_t n) {
    if (!table_ready) { /* idempotent: racing threads write the same values */
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        table_ready = true;
    }
    crc = ~crc;
    for (uint64_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static int put_u32(int fd, uint64_t off, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return tl__os_pwrite_full(fd, b, 4, off);
}

tl_status tl_ckpt_refresh_crcs(int fd, const char *path) {
    if (fd < 0 || !path) return tl__err(TL_ERR_INVALID_ARG, "tl_ckpt_refresh_crcs: bad argument");
    uint64_t size;
    int e = tl__os_fsize(fd, &size);
    if (e) return tl__err_errno(e, "%s: fstat", path);
    void *map = NULL;
    if (!size || (e = tl__os_map(fd, size, false, false, &map)) != 0)
        return tl__err_errno(size ? e : EINVAL, "%s: cannot map", path);
    const uint8_t *d = map;
    tl__zip z;
    tl_status st = tl__zip_open(d, size, path, &z);
    for (size_t i = 0; !st && i < z.n_entries; i++) {
        const tl__zip_entry *en = &z.entries[i];
        if (en->method != 0) continue; /* compressed: not something a merge writes */
        uint32_t crc = tl__zip_crc32(0, d + en->offset, en->size);
        uint64_t at = en->local_off + 14;
        if (en->flags & 8) { /* a data descriptor after the bytes holds the CRC */
            at = en->offset + en->size;
            if (size - at >= 4 && d[at] == 'P' && d[at + 1] == 'K' && d[at + 2] == 7 &&
                d[at + 3] == 8)
                at += 4;
            if (size - at < 4) at = en->local_off + 14;
        }
        e = put_u32(fd, at, crc);
        if (!e) e = put_u32(fd, en->central_off + 16, crc);
        if (e) st = tl__err_errno(e, "%s: writing the CRC-32 of '%.*s'", path, (int)en->name_len,
                                  en->name);
    }
    tl__zip_free(&z);
    tl__os_unmap(map, size);
    return st;
}
