/*
 * zip.c — the central directory of a zip archive, read in place.
 *
 * Layout: local headers ("PK\3\4", 30 bytes + name + extra) each followed by
 * the entry's bytes, then the central directory (one "PK\1\2" record of 46
 * bytes + name + extra + comment per entry), then, for ZIP64 archives, a
 * ZIP64 end record ("PK\6\6") and its locator ("PK\6\7"), then the end record
 * ("PK\5\6", 22 bytes + comment). Sizes and offsets that do not fit 32 bits
 * are 0xFFFFFFFF in the 32-bit fields and come from the ZIP64 extra field
 * (id 1) in that order: uncompressed size, compressed size, header offset.
 *
 * Everything is hostile: the end record must end the image exactly (its
 * comment length says where), single-disk archives only, the entry count is
 * checked against the bytes the central directory could hold, every record
 * lies inside the directory, every local header and its bytes lie before the
 * central directory, the local name equals the central name, and names are
 * unique and NUL-free. CRCs are not checked (that would read every byte).
 *
 * The central directory is read in place, in one pass; the local headers,
 * one before each entry's bytes (a torch.save checkpoint's storages often lie
 * megabytes apart), in a second pass. Through a mapping each of them
 * costs a page fault (with fault-around and a page-table page, undone again
 * at munmap); given the file's descriptor, tl__zip_open_fd reads them with
 * pread instead, one read for each run of headers that lie close together
 * (HDR_GAP), into one bounded buffer (HDR_BUF) per thread. The second pass
 * can be shared by threads (tl__zip_pass): each claims ZIP_CHUNK entries at a
 * time in central directory order, and the failure reported is the one at
 * the lowest entry, as one thread alone would have met it first.
 */
#include "format/zip.h"

#include "core/checked.h"
#include "core/error.h"
#include "os/os.h"

#include <stdlib.h>
#include <string.h>

#define EOCD_LEN 22u
#define CDH_LEN 46u
#define LFH_LEN 30u
#define Z64_LOC_LEN 20u
#define Z64_EOCD_LEN 56u
/* The local-header buffer of tl__zip_open_fd, and the gap up to which two headers share a read. */
#define HDR_BUF (128u << 10) /* > the longest header read: 30 bytes + a 65,535-byte name */
#define HDR_GAP (8u << 10)
/* Entries per claim of a shared local-header pass. */
#define ZIP_CHUNK 64u

static uint16_t u16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}
static uint32_t u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t u64(const uint8_t *p) {
    return (uint64_t)u32(p) | ((uint64_t)u32(p + 4) << 32);
}

static int cmp_entry(const void *a, const void *b) {
    const tl__zip_entry *x = a, *y = b;
    uint32_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = n ? memcmp(x->name, y->name, n) : 0;
    if (c) return c;
    return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

void tl__zip_free(tl__zip *z) {
    free(z->entries);
    memset(z, 0, sizeof *z);
}

const tl__zip_entry *tl__zip_find(const tl__zip *z, const char *name, size_t len) {
    if (len > UINT32_MAX) return NULL;
    tl__zip_entry key = {.name = name, .name_len = (uint32_t)len};
    return bsearch(&key, z->entries, z->n_entries, sizeof key, cmp_entry);
}

/* The ZIP64 extra field (id 1) fills the fields that are 0xFFFFFFFF, in order. */
static tl_status zip64_extra(const uint8_t *ex, uint32_t elen, tl__zip_entry *e, uint64_t *lho,
                             bool need_u, bool need_c, bool need_o, const char *path) {
    uint32_t at = 0;
    while (at + 4 <= elen) {
        uint16_t id = u16(ex + at), n = u16(ex + at + 2);
        if (at + 4 + (uint32_t)n > elen) break;
        if (id == 1) {
            const uint8_t *p = ex + at + 4;
            uint32_t need = 8u * ((unsigned)need_u + need_c + need_o);
            if (n < need)
                return tl__err(TL_ERR_FORMAT, "%s: zip entry '%.*s': ZIP64 field too short", path,
                              (int)e->name_len, e->name);
            if (need_u) e->usize = u64(p), p += 8;
            if (need_c) e->size = u64(p), p += 8;
            if (need_o) *lho = u64(p);
            return TL_OK;
        }
        at += 4u + n;
    }
    if (need_u || need_c || need_o)
        return tl__err(TL_ERR_FORMAT, "%s: zip entry '%.*s': sizes need a ZIP64 field, none found",
                      path, (int)e->name_len, e->name);
    return TL_OK;
}

/*
 * The local headers of entries [i, j), each of whose bytes [lho, lho + LFH_LEN
 * + name length), as far as they lie before cd_off, are at hdr + (lho - base):
 * the signature, the local name equal to the central one, and the entry's
 * bytes before the central directory. Sets each entry's offset.
 */
static tl_status check_local(const uint8_t *hdr, uint64_t base, tl__zip_entry *e, size_t i, size_t j,
                             uint64_t cd_off, const char *path) {
    for (size_t k = i; k < j; k++) {
        tl__zip_entry *en = &e[k];
        uint64_t lho = en->local_off;
        const uint8_t *h = hdr + (lho - base);
        uint32_t nlen = en->name_len;
        if (memcmp(h, "PK\3\4", 4))
            return tl__err(TL_ERR_FORMAT, "%s: zip entry '%.*s': local header missing at %llu", path,
                          (int)nlen, en->name, (unsigned long long)lho);
        uint32_t lnlen = u16(h + 26), lelen = u16(h + 28);
        if (!tl__range_ok(lho + LFH_LEN, (uint64_t)lnlen + lelen, cd_off) || lnlen != nlen ||
            memcmp(h + LFH_LEN, en->name, nlen))
            return tl__err(TL_ERR_FORMAT,
                          "%s: zip entry '%.*s': local header does not match the central directory",
                          path, (int)nlen, en->name);
        uint64_t data_off = lho + LFH_LEN + lnlen + lelen;
        if (!tl__range_ok(data_off, en->size, cd_off))
            return tl__err(TL_ERR_FORMAT,
                          "%s: zip entry '%.*s': its %llu bytes at %llu run past the central "
                          "directory (truncated?)",
                          path, (int)nlen, en->name, (unsigned long long)en->size,
                          (unsigned long long)data_off);
        en->offset = data_off;
    }
    return TL_OK;
}

/*
 * The second pass over entries [i0, i1): every entry's local header, from the
 * image (fd < 0) or with pread into buf (HDR_BUF bytes), a run of entries
 * whose headers lie within HDR_GAP of each other and within HDR_BUF in all
 * per read (central directory order: a writer's file order; another order
 * only costs reads).
 */
static tl_status read_locals(const uint8_t *data, int fd, uint8_t *buf, tl__zip_entry *e,
                             size_t i0, size_t i1, uint64_t cd_off, const char *path) {
    tl_status st = TL_OK;
    for (size_t i = i0; i < i1 && !st;) {
        /* a header's span: its fixed part and its name, cut at the central directory (the first
         * pass checked that the fixed part lies before it; check_local reads the name only when
         * the header says it does too) */
        uint64_t base = e[i].local_off, end = base + LFH_LEN + e[i].name_len;
        if (end > cd_off) end = cd_off;
        size_t j = i + 1;
        while (fd >= 0 && j < i1) {
            uint64_t lho = e[j].local_off, hend = lho + LFH_LEN + e[j].name_len;
            if (hend > cd_off) hend = cd_off;
            if (lho < base || lho > end + HDR_GAP || hend - base > HDR_BUF) break;
            if (hend > end) end = hend;
            j++;
        }
        if (fd < 0) {
            st = check_local(data + base, base, e, i, j, cd_off, path);
        } else {
            int err = tl__os_pread_full(fd, buf, (size_t)(end - base), base);
            if (err)
                st = tl__err_errno(err, "%s: cannot read the zip's local headers at %llu", path,
                                  (unsigned long long)base);
            else
                st = check_local(buf, base, e, i, j, cd_off, path);
        }
        i = j;
    }
    return st;
}

void tl__zip_pass_init(tl__zip_pass *p, const uint8_t *data, int fd, const char *path,
                       tl__zip *z) {
    p->data = data;
    p->fd = fd;
    p->path = path;
    p->z = z;
    atomic_init(&p->next, 0);
    atomic_init(&p->stop, false);
}

tl_status tl__zip_pass_work(tl__zip_pass *p, size_t *failed_at) {
    *failed_at = SIZE_MAX;
    size_t n = p->z->n_entries;
    if (!n || atomic_load(&p->stop)) return TL_OK;
    uint8_t *buf = NULL;
    if (p->fd >= 0) {
        buf = tl__os_malloc(HDR_BUF);
        if (!buf) {
            /* as a failure at the first chunk not yet claimed, so that earlier ones still count */
            *failed_at = atomic_fetch_add(&p->next, ZIP_CHUNK);
            atomic_store(&p->stop, true);
            return tl__err(TL_ERR_NOMEM, "%s: out of memory", p->path);
        }
    }
    tl_status st = TL_OK;
    while (!st && !atomic_load(&p->stop)) {
        size_t i = atomic_fetch_add(&p->next, ZIP_CHUNK);
        if (i >= n) break;
        size_t j = n - i > ZIP_CHUNK ? i + ZIP_CHUNK : n;
        st = read_locals(p->data, p->fd, buf, p->z->entries, i, j, p->z->cd_off, p->path);
        if (st) {
            *failed_at = i;
            atomic_store(&p->stop, true);
        }
    }
    free(buf);
    return st;
}

tl_status tl__zip_sort(tl__zip *z, const char *path) {
    tl_status st = TL_OK;
    if (z->n_entries) {
        qsort(z->entries, z->n_entries, sizeof *z->entries, cmp_entry);
        for (size_t i = 1; i < z->n_entries && !st; i++)
            if (!cmp_entry(&z->entries[i - 1], &z->entries[i]))
                st = tl__err(TL_ERR_FORMAT, "%s: zip: entry '%.*s' appears twice", path,
                            (int)z->entries[i].name_len, z->entries[i].name);
    }
    if (st) tl__zip_free(z);
    return st;
}

tl_status tl__zip_open_central(const uint8_t *data, uint64_t size, const char *path, tl__zip *z) {
    memset(z, 0, sizeof *z);
    if (size < EOCD_LEN)
        return tl__err(TL_ERR_FORMAT, "%s: truncated zip: %llu bytes, no end of central directory",
                      path, (unsigned long long)size);
    /* The end record: the one whose comment ends exactly at the end of the image. */
    uint64_t eocd = UINT64_MAX;
    uint64_t lowest = size - EOCD_LEN > 0xFFFF ? size - EOCD_LEN - 0xFFFF : 0;
    for (uint64_t p = size - EOCD_LEN + 1; p-- > lowest;) {
        if (!memcmp(data + p, "PK\5\6", 4) && p + EOCD_LEN + u16(data + p + 20) == size) {
            eocd = p;
            break;
        }
    }
    if (eocd == UINT64_MAX)
        return tl__err(TL_ERR_FORMAT,
                      "%s: not a complete zip archive: no end of central directory record at its "
                      "end (truncated?)",
                      path);
    const uint8_t *e = data + eocd;
    uint64_t n_total = u16(e + 10), n_disk = u16(e + 8), cd_size = u32(e + 12),
             cd_off = u32(e + 16);
    uint32_t disk = u16(e + 4), cd_disk = u16(e + 6);
    uint64_t limit = eocd; /* the central directory ends before this */
    if (eocd >= Z64_LOC_LEN && !memcmp(data + eocd - Z64_LOC_LEN, "PK\6\7", 4)) {
        const uint8_t *loc = data + eocd - Z64_LOC_LEN;
        uint64_t z64 = u64(loc + 8);
        if (u32(loc + 4) != 0 || u32(loc + 16) > 1)
            return tl__err(TL_ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported",
                          path);
        if (!tl__range_ok(z64, Z64_EOCD_LEN, eocd - Z64_LOC_LEN) || memcmp(data + z64, "PK\6\6", 4))
            return tl__err(TL_ERR_FORMAT, "%s: zip: ZIP64 end record missing or out of place", path);
        const uint8_t *r = data + z64;
        disk = u32(r + 16);
        cd_disk = u32(r + 20);
        n_disk = u64(r + 24);
        n_total = u64(r + 32);
        cd_size = u64(r + 40);
        cd_off = u64(r + 48);
        limit = z64;
    } else if (n_total == 0xFFFF || cd_size == 0xFFFFFFFF || cd_off == 0xFFFFFFFF) {
        return tl__err(TL_ERR_FORMAT, "%s: zip: end record needs ZIP64 but has no ZIP64 locator",
                      path);
    }
    if (disk != 0 || cd_disk != 0 || n_disk != n_total)
        return tl__err(TL_ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported", path);
    if (!tl__range_ok(cd_off, cd_size, limit))
        return tl__err(TL_ERR_FORMAT,
                      "%s: zip: central directory [%llu, +%llu) lies outside the archive", path,
                      (unsigned long long)cd_off, (unsigned long long)cd_size);
    if (n_total > cd_size / CDH_LEN)
        return tl__err(TL_ERR_FORMAT,
                      "%s: zip: %llu entries cannot fit a %llu-byte central directory", path,
                      (unsigned long long)n_total, (unsigned long long)cd_size);
    if (n_total) {
        z->entries = tl__os_calloc((size_t)n_total, sizeof *z->entries);
        if (!z->entries) return tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
    }
    tl_status st = TL_OK;
    uint64_t at = cd_off, cd_end = cd_off + cd_size;
    for (uint64_t i = 0; i < n_total && !st; i++) {
        if (cd_end - at < CDH_LEN || memcmp(data + at, "PK\1\2", 4)) {
            st = tl__err(TL_ERR_FORMAT, "%s: zip: central directory record %llu is damaged", path,
                        (unsigned long long)i);
            break;
        }
        const uint8_t *h = data + at;
        tl__zip_entry *en = &z->entries[i];
        en->flags = u16(h + 8);
        en->method = u16(h + 10);
        en->size = u32(h + 20);
        en->usize = u32(h + 24);
        uint32_t nlen = u16(h + 28), elen = u16(h + 30), clen = u16(h + 32);
        uint64_t lho = u32(h + 42);
        if (cd_end - at - CDH_LEN < (uint64_t)nlen + elen + clen) {
            st = tl__err(TL_ERR_FORMAT, "%s: zip: central directory record %llu runs past the end",
                        path, (unsigned long long)i);
            break;
        }
        en->name = (const char *)h + CDH_LEN;
        en->name_len = nlen;
        if (memchr(en->name, 0, nlen)) {
            st = tl__err(TL_ERR_FORMAT, "%s: zip: entry %llu's name contains a NUL byte", path,
                        (unsigned long long)i);
            break;
        }
        st = zip64_extra(h + CDH_LEN + nlen, elen, en, &lho, en->usize == 0xFFFFFFFF,
                         en->size == 0xFFFFFFFF, lho == 0xFFFFFFFF, path);
        if (st) break;
        if (u16(h + 34) != 0 && u16(h + 34) != 0xFFFF) {
            st = tl__err(TL_ERR_UNSUPPORTED, "%s: zip entry '%.*s' is on another disk", path,
                        (int)nlen, en->name);
            break;
        }
        /* The local header lies before the central directory (read in the second pass). */
        if (!tl__range_ok(lho, LFH_LEN, cd_off)) {
            st = tl__err(TL_ERR_FORMAT, "%s: zip entry '%.*s': local header missing at %llu", path,
                        (int)nlen, en->name, (unsigned long long)lho);
            break;
        }
        en->local_off = lho;
        en->central_off = at;
        z->n_entries++;
        at += CDH_LEN + (uint64_t)nlen + elen + clen;
    }
    z->cd_off = cd_off;
    if (st) tl__zip_free(z);
    return st;
}

tl_status tl__zip_local_offset(const uint8_t *data, int fd, const tl__zip *z,
                               const tl__zip_entry *e, const char *path, uint64_t *offset) {
    tl__zip_entry one = *e;
    uint64_t base = e->local_off, end = base + LFH_LEN + e->name_len;
    if (end > z->cd_off) end = z->cd_off;
    tl_status st;
    if (fd < 0) {
        st = check_local(data + base, base, &one, 0, 1, z->cd_off, path);
    } else {
        uint8_t *buf = tl__os_malloc((size_t)(end - base));
        if (!buf) return tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
        int err = tl__os_pread_full(fd, buf, (size_t)(end - base), base);
        st = err ? tl__err_errno(err, "%s: cannot read the zip's local headers at %llu", path,
                                 (unsigned long long)base)
                 : check_local(buf, base, &one, 0, 1, z->cd_off, path);
        free(buf);
    }
    *offset = st ? 0 : one.offset;
    return st;
}

tl_status tl__zip_finish(const uint8_t *data, int fd, const char *path, tl__zip *z) {
    tl__zip_pass p;
    size_t at;
    tl__zip_pass_init(&p, data, fd, path, z);
    tl_status st = tl__zip_pass_work(&p, &at);
    if (st) {
        tl__zip_free(z);
        return st;
    }
    return tl__zip_sort(z, path);
}

tl_status tl__zip_open(const uint8_t *data, uint64_t size, const char *path, tl__zip *z) {
    return tl__zip_open_fd(data, size, -1, path, z);
}

tl_status tl__zip_open_fd(const uint8_t *data, uint64_t size, int fd, const char *path,
                          tl__zip *z) {
    tl_status st = tl__zip_open_central(data, size, path, z);
    return st ? st : tl__zip_finish(data, fd, path, z);
}
