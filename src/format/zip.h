/*
 * zip.h — a read-only view of a zip archive's central directory, for
 * torch.save checkpoints: the entries' names, compression methods and the
 * absolute offsets of their bytes in the image. Nothing is decompressed and
 * nothing is copied; names point into the image.
 */
#ifndef TL_FORMAT_ZIP_H
#define TL_FORMAT_ZIP_H

#include "tierload.h"

#include <stdatomic.h>
#include <stdbool.h>
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
    tl__zip_entry *entries; /* sorted by name, names unique (central order before finish) */
    size_t n_entries;
    uint64_t cd_off; /* where the central directory starts */
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
/*
 * tl__zip_open_fd in two steps, for a caller that wants one entry's bytes
 * while the other local headers are being read: tl__zip_open_central reads
 * the end record and the central directory (entries in central directory
 * order, their offsets not yet known); tl__zip_finish reads and checks every
 * local header, sets the offsets, sorts by name and refuses duplicates. On
 * failure either leaves *z empty. tl__zip_local_offset, between the two,
 * reads and checks e's local header alone (through the image when fd < 0)
 * and gives its bytes' offset; it changes nothing in *z, and tl__zip_finish
 * checks e again with the rest.
 */
tl_status tl__zip_open_central(const uint8_t *data, uint64_t size, const char *path, tl__zip *z);
tl_status tl__zip_local_offset(const uint8_t *data, int fd, const tl__zip *z,
                               const tl__zip_entry *e, const char *path, uint64_t *offset);
tl_status tl__zip_finish(const uint8_t *data, int fd, const char *path, tl__zip *z);

/*
 * tl__zip_finish's reading of the local headers, shared by threads: after
 * tl__zip_pass_init each thread calls tl__zip_pass_work, which claims runs
 * of entries in central directory order until none are left or one fails
 * (then the others stop claiming). A thread's failure comes back with its
 * message on that thread and *failed_at, the first entry of its run
 * (SIZE_MAX on success): the failure to report is the one with the lowest
 * *failed_at, the one a single pass would have met first. Then
 * tl__zip_sort (which frees *z on failure); on a failed pass tl__zip_free.
 */
typedef struct tl__zip_pass {
    const uint8_t *data;
    int fd;
    const char *path;
    tl__zip *z;
    atomic_size_t next; /* the first entry of the next run to claim */
    atomic_bool stop;   /* a run failed */
} tl__zip_pass;
void tl__zip_pass_init(tl__zip_pass *p, const uint8_t *data, int fd, const char *path,
                       tl__zip *z);
tl_status tl__zip_pass_work(tl__zip_pass *p, size_t *failed_at);
tl_status tl__zip_sort(tl__zip *z, const char *path);
/* The entry with this exact name, or NULL (after tl__zip_finish). */
const tl__zip_entry *tl__zip_find(const tl__zip *z, const char *name, size_t len);
void tl__zip_free(tl__zip *z);
/* CRC-32 (zip's: reflected 0xEDB88320) of n bytes, continuing from crc (0 to start). */
uint32_t tl__zip_crc32(uint32_t crc, const uint8_t *p, uint64_t n);

#endif
