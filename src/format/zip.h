/*
 * zip.h — a read-only view of a zip archive's central directory, for
 * torch.save checkpoints: the entries' names, compression methods and the
 * absolute offsets of their bytes in the image. Nothing is decompressed and
 * nothing is copied; names point into the image.
 */
#ifndef TL_FORMAT_ZIP_H
#define TL_FORMAT_ZIP_H

#include "tierload.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tl__zip_entry {
    const char *name; /* into the image, not NUL-terminated */
    uint32_t name_len;
    uint16_t method; /* 0 stored, 8 deflated, ... */
    uint16_t flags;
    uint64_t offset; /* absolute offset of the entry's (stored) bytes */
    uint64_t size;   /* compressed size: the bytes at offset */
    uint64_t usize;  /* uncompressed size */
    uint64_t local_off;   /* absolute offset of its local header */
    uint64_t central_off; /* absolute offset of its central directory record */
} tl__zip_entry;

typedef struct tl__zip {
    tl__zip_entry *entries; /* sorted by name, names unique */
    size_t n_entries;
} tl__zip;

/*
 * Read the central directory of a zip image (ZIP64 included). Every entry's
 * local header and bytes are checked to lie inside the image, before the
 * central directory. On failure *z is empty.
 */
tl_status tl__zip_open(const uint8_t *data, uint64_t size, const char *path, tl__zip *z);
/*
 * The same for an image that is a mapping of the file fd holds: the local
 * headers are read with pread (a few reads for many headers) instead of
 * through the mapping (a page fault each). fd < 0: as tl__zip_open.
 */
tl_status tl__zip_open_fd(const uint8_t *data, uint64_t size, int fd, const char *path,
                          tl__zip *z);
/* The entry with this exact name, or NULL. */
const tl__zip_entry *tl__zip_find(const tl__zip *z, const char *name, size_t len);
void tl__zip_free(tl__zip *z);
/* CRC-32 (zip's: reflected 0xEDB88320) of n bytes, continuing from crc (0 to start). */
uint32_t tl__zip_crc32(uint32_t crc, const uint8_t *p, uint64_t n);

#endif
