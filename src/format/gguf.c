/*
 * gguf.c — GGUF v2/v3 parser.
 *
 * Layout (little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv, then
 * n_kv metadata entries (string key, u32 type, value), then n_tensors tensor
 * infos (string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset), then
 * padding to general.alignment (default 32), then the data section. Tensor
 * offsets are relative to the data section; ne is innermost-first, so the
 * catalog's shape is ne reversed.
 *
 * Nothing in the image is trusted: every read is bounds-checked through a
 * cursor, every count is checked against the bytes that could hold it before
 * anything is allocated for it, and every size goes through core/checked.h.
 * ggml's own limits hold here too (docs/ARCHITECTURE.md lists ggml's reader
 * rule by rule): strings of at most 64 MiB, arrays of at most 2^26 elements,
 * non-empty keys, alignment at most 1 MiB. Tensor names may be up to 159
 * bytes: the longest any engine this project serves loads (stable-diffusion.cpp
 * builds its ggml with GGML_MAX_NAME=160; stock ggml, as llama.cpp, allows 63).
 * Rules beyond ggml's: no NUL inside keys and names, tensors
 * that do not overlap and end inside the file.
 */
#include "format/format.h"

#include "core/checked.h"
#include "core/error.h"
#include "os/os.h"

#include <stdlib.h>
#include <string.h>

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS TL_GGUF_MAX_DIMS
#define GGUF_MAX_ARRAY_DEPTH 8
#define GGUF_MAX_STRING (64ull << 20) /* ggml's GGUF_MAX_STRING_LENGTH */
#define GGUF_MAX_ARRAY (64ull << 20)  /* ggml's GGUF_MAX_ARRAY_ELEMENTS */
#define GGUF_MAX_ALIGNMENT (1u << 20) /* ggml's GGUF_MAX_ALIGNMENT */
#define GGUF_MAX_NAME 160             /* names shorter than this (sd.cpp's GGML_MAX_NAME) */
#define GGUF_MAX_TENSORS TL_GGUF_MAX_TENSORS /* see format.h */
#define GGUF_MAX_KV TL_GGUF_MAX_KV

typedef struct cursor {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
    const char *path;
} cursor;

static tl_status truncated(const cursor *c, const char *what) {
    return tl__err(TL_ERR_FORMAT,
                  "%s: truncated GGUF: %s at byte %llu runs past the end of the file (%llu bytes)",
                  c->path, what, (unsigned long long)c->pos, (unsigned long long)c->size);
}

static bool rd(cursor *c, void *dst, uint64_t n) {
    if (!tl__range_ok(c->pos, n, c->size)) return false;
    memcpy(dst, c->base + c->pos, (size_t)n);
    c->pos += n;
    return true;
}

static bool rd_u32(cursor *c, uint32_t *v) {
    return rd(c, v, 4);
}
static bool rd_u64(cursor *c, uint64_t *v) {
    return rd(c, v, 8);
}

/* A GGUF string: u64 length + bytes (no terminator). Points into the image. */
static bool rd_str(cursor *c, const char **p, uint64_t *len) {
    uint64_t n;
    if (!rd_u64(c, &n)) return false;
    if (!tl__range_ok(c->pos, n, c->size)) return false;
    *p = (const char *)c->base + c->pos;
    *len = n;
    c->pos += n;
    return true;
}

uint32_t tl_meta_type_size(tl_meta_type type) {
    switch (type) {
    case TL_META_U8:
    case TL_META_I8:
    case TL_META_BOOL:
        return 1;
    case TL_META_U16:
    case TL_META_I16:
        return 2;
    case TL_META_U32:
    case TL_META_I32:
    case TL_META_F32:
        return 4;
    case TL_META_U64:
    case TL_META_I64:
    case TL_META_F64:
        return 8;
    default:
        return 0;
    }
}

/* The same for a raw type id read from a file (any value). */
static uint32_t meta_scalar_size(uint32_t type) {
    return type <= TL_META_F64 ? tl_meta_type_size((tl_meta_type)type) : 0;
}

/* Decode a fixed-size scalar at p into m->v. */
static void decode_scalar(uint32_t type, const uint8_t *p, tl_meta *m) {
    switch (type) {
    case TL_META_U8:
        m->v.u = p[0];
        break;
    case TL_META_I8:
        m->v.i = (int8_t)p[0];
        break;
    case TL_META_BOOL:
        m->v.b = p[0] != 0;
        break;
    case TL_META_U16: {
        uint16_t x;
        memcpy(&x, p, 2);
        m->v.u = x;
        break;
    }
    case TL_META_I16: {
        int16_t x;
        memcpy(&x, p, 2);
        m->v.i = x;
        break;
    }
    case TL_META_U32: {
        uint32_t x;
        memcpy(&x, p, 4);
        m->v.u = x;
        break;
    }
    case TL_META_I32: {
        int32_t x;
        memcpy(&x, p, 4);
        m->v.i = x;
        break;
    }
    case TL_META_F32: {
        float x;
        memcpy(&x, p, 4);
        m->v.f = x;
        break;
    }
    case TL_META_U64:
        memcpy(&m->v.u, p, 8);
        break;
    case TL_META_I64:
        memcpy(&m->v.i, p, 8);
        break;
    case TL_META_F64:
        memcpy(&m->v.f, p, 8);
        break;
    default:
        break;
    }
}

/* A string length that passed rd_str's bounds but exceeds ggml's limit. */
static tl_status too_long(const cursor *c, const char *what, uint64_t n) {
    return tl__err(TL_ERR_FORMAT, "%s: %s of %llu bytes exceeds GGUF's 64 MiB string limit", c->path,
                  what, (unsigned long long)n);
}

static tl_status bad_type(const cursor *c, const char *key, uint32_t type) {
    return tl__err(TL_ERR_FORMAT, "%s: metadata key '%s' has unknown value type %u", c->path, key,
                  type);
}

/*
 * Skip an array's elements (type, count already read), validating every
 * string length and nested array on the way. depth counts from 1.
 */
static tl_status skip_array(cursor *c, const char *key, uint32_t type, uint64_t count,
                            uint32_t depth, uint32_t *max_depth) {
    if (depth > *max_depth) *max_depth = depth;
    if (count > GGUF_MAX_ARRAY)
        return tl__err(TL_ERR_FORMAT,
                      "%s: metadata key '%s': array of %llu elements exceeds GGUF's limit of %llu",
                      c->path, key, (unsigned long long)count, (unsigned long long)GGUF_MAX_ARRAY);
    if (type == TL_META_STRING) {
        for (uint64_t j = 0; j < count; j++) {
            const char *s;
            uint64_t n;
            if (!rd_str(c, &s, &n)) return truncated(c, "string array element");
            if (n > GGUF_MAX_STRING) return too_long(c, "string array element", n);
        }
        return TL_OK;
    }
    if (type == TL_META_ARRAY) {
        if (depth >= GGUF_MAX_ARRAY_DEPTH)
            return tl__err(TL_ERR_FORMAT, "%s: metadata key '%s': arrays nested deeper than %d",
                          c->path, key, GGUF_MAX_ARRAY_DEPTH);
        for (uint64_t j = 0; j < count; j++) {
            uint32_t et;
            uint64_t n;
            if (!rd_u32(c, &et) || !rd_u64(c, &n)) return truncated(c, "nested array header");
            tl_status s = skip_array(c, key, et, n, depth + 1, max_depth);
            if (s) return s;
        }
        return TL_OK;
    }
    uint32_t es = meta_scalar_size(type);
    uint64_t bytes;
    if (!es) return bad_type(c, key, type);
    if (!tl__mul_u64(count, es, &bytes) || !tl__range_ok(c->pos, bytes, c->size))
        return truncated(c, "array data");
    c->pos += bytes;
    return TL_OK;
}

static tl_status parse_kv(cursor *c, tl__fmt_meta *fm) {
    const char *kp;
    uint64_t klen;
    uint32_t type;
    if (!rd_str(c, &kp, &klen)) return truncated(c, "metadata key");
    if (klen == 0)
        return tl__err(TL_ERR_FORMAT, "%s: metadata key at byte %llu is empty", c->path,
                      (unsigned long long)(c->pos - 8));
    if (klen > GGUF_MAX_STRING) return too_long(c, "metadata key", klen);
    if (memchr(kp, 0, (size_t)klen))
        return tl__err(TL_ERR_FORMAT, "%s: metadata key at byte %llu contains a NUL byte", c->path,
                      (unsigned long long)(c->pos - klen));
    fm->m.key = tl__os_strndup(kp, (size_t)klen);
    if (!fm->m.key) return tl__err(TL_ERR_NOMEM, "%s: out of memory reading metadata", c->path);
    if (!rd_u32(c, &type)) return truncated(c, "metadata value type");
    fm->m.type = (tl_meta_type)type;
    const char *key = fm->m.key;
    if (type == TL_META_STRING) {
        if (!rd_str(c, &fm->m.v.s.ptr, &fm->m.v.s.len)) return truncated(c, "metadata string");
        if (fm->m.v.s.len > GGUF_MAX_STRING) return too_long(c, "metadata string", fm->m.v.s.len);
        return TL_OK;
    }
    if (type == TL_META_ARRAY) {
        uint32_t et;
        uint64_t count;
        if (!rd_u32(c, &et) || !rd_u64(c, &count)) return truncated(c, "array header");
        if (et != TL_META_STRING && et != TL_META_ARRAY && !meta_scalar_size(et))
            return bad_type(c, key, et);
        fm->m.elem_type = (tl_meta_type)et;
        fm->m.count = count;
        fm->m.depth = 1;
        fm->data = c->base + c->pos;
        uint64_t start = c->pos;
        tl_status s = skip_array(c, key, et, count, 1, &fm->m.depth);
        if (s) return s;
        if (et == TL_META_STRING && count > 0) {
            /* Every element was validated above, so count strings exist. */
            if (count > SIZE_MAX / sizeof(uint64_t))
                return tl__err(TL_ERR_FORMAT, "%s: '%s' too many strings", c->path, key);
            fm->str_offs = tl__os_malloc((size_t)count * sizeof(uint64_t));
            if (!fm->str_offs)
                return tl__err(TL_ERR_NOMEM, "%s: out of memory for '%s'", c->path, key);
            uint64_t off = 0;
            for (uint64_t j = 0; j < count; j++) {
                uint64_t n;
                fm->str_offs[j] = off;
                memcpy(&n, c->base + start + off, 8);
                off += 8 + n;
            }
        }
        return TL_OK;
    }
    uint32_t sz = meta_scalar_size(type);
    if (!sz) return bad_type(c, key, type);
    if (!tl__range_ok(c->pos, sz, c->size)) return truncated(c, "metadata value");
    decode_scalar(type, c->base + c->pos, &fm->m);
    c->pos += sz;
    return TL_OK;
}

tl_status tl__fmt_meta_array_get(const tl__fmt_meta *fm, uint64_t j, tl_meta *out) {
    if (fm->m.type != TL_META_ARRAY)
        return tl__err(TL_ERR_INVALID_ARG, "metadata key '%s' is not an array", fm->m.key);
    if (j >= fm->m.count)
        return tl__err(TL_ERR_INVALID_ARG, "metadata key '%s': index %llu out of %llu", fm->m.key,
                      (unsigned long long)j, (unsigned long long)fm->m.count);
    memset(out, 0, sizeof *out);
    out->key = fm->m.key;
    out->file = fm->m.file;
    out->type = fm->m.elem_type;
    if (fm->m.elem_type == TL_META_ARRAY)
        return tl__err(TL_ERR_UNSUPPORTED, "metadata key '%s': nested arrays are not indexable",
                      fm->m.key);
    if (fm->m.elem_type == TL_META_STRING) {
        const uint8_t *p = fm->data + fm->str_offs[j];
        memcpy(&out->v.s.len, p, 8);
        out->v.s.ptr = (const char *)p + 8;
        return TL_OK;
    }
    decode_scalar(fm->m.elem_type, fm->data + j * meta_scalar_size(fm->m.elem_type), out);
    return TL_OK;
}

/* Sort helpers: index arrays ordered by tensor name / key / offset. */
static _Thread_local const tl__fmt_tensor *sort_tensors;
static _Thread_local const tl__fmt_meta *sort_meta;

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(sort_tensors[*(const size_t *)a].name, sort_tensors[*(const size_t *)b].name);
}
static int cmp_tensor_off(const void *a, const void *b) {
    const tl__fmt_tensor *x = &sort_tensors[*(const size_t *)a],
                        *y = &sort_tensors[*(const size_t *)b];
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}
static int cmp_meta_key(const void *a, const void *b) {
    return strcmp(sort_meta[*(const size_t *)a].m.key, sort_meta[*(const size_t *)b].m.key);
}

tl_status tl__fmt_check_unique(const tl__fmt_file *f, const char *path, bool check_overlap) {
    size_t n = f->n_tensors > f->n_meta ? f->n_tensors : f->n_meta;
    if (n < 2) return TL_OK;
    size_t *idx = tl__os_malloc(n * sizeof *idx);
    if (!idx) return tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
    tl_status st = TL_OK;
    if (f->n_meta > 1) {
        for (size_t i = 0; i < f->n_meta; i++)
            idx[i] = i;
        sort_meta = f->meta;
        qsort(idx, f->n_meta, sizeof *idx, cmp_meta_key);
        for (size_t i = 1; i < f->n_meta && !st; i++)
            if (!strcmp(f->meta[idx[i]].m.key, f->meta[idx[i - 1]].m.key))
                st = tl__err(TL_ERR_FORMAT, "%s: duplicate metadata key '%s'", path,
                            f->meta[idx[i]].m.key);
    }
    if (!st && f->n_tensors > 1) {
        for (size_t i = 0; i < f->n_tensors; i++)
            idx[i] = i;
        sort_tensors = f->tensors;
        qsort(idx, f->n_tensors, sizeof *idx, cmp_tensor_name);
        for (size_t i = 1; i < f->n_tensors && !st; i++)
            if (!strcmp(f->tensors[idx[i]].name, f->tensors[idx[i - 1]].name))
                st = tl__err(TL_ERR_FORMAT, "%s: duplicate tensor name '%s'", path,
                            f->tensors[idx[i]].name);
        if (!st && check_overlap) {
            qsort(idx, f->n_tensors, sizeof *idx, cmp_tensor_off);
            for (size_t i = 1; i < f->n_tensors && !st; i++) {
                const tl__fmt_tensor *a = &f->tensors[idx[i - 1]], *b = &f->tensors[idx[i]];
                if (a->nbytes && b->nbytes && a->offset + a->nbytes > b->offset)
                    st = tl__err(TL_ERR_FORMAT, "%s: tensor '%s' overlaps tensor '%s'", path,
                                b->name, a->name);
            }
        }
    }
    free(idx);
    return st;
}

tl_status tl__fmt_tensor_size(tl__fmt_tensor *t, const char *path) {
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (t->shape[d] < 0)
            return tl__err(TL_ERR_FORMAT, "%s: tensor '%s' has a negative dimension", path, t->name);
        if (!tl__mul_u64(n, (uint64_t)t->shape[d], &n) || n > (uint64_t)INT64_MAX)
            return tl__err(TL_ERR_FORMAT, "%s: tensor '%s': element count overflows", path, t->name);
    }
    t->n_elements = n;
    if (!tl_dtype_nbytes(t->dtype, n, &t->nbytes))
        return tl__err(TL_ERR_FORMAT,
                      "%s: tensor '%s': %llu elements of %s is not a whole number of blocks/bytes "
                      "(or overflows)",
                      path, t->name, (unsigned long long)n, tl_dtype_name(t->dtype));
    return TL_OK;
}

static const char *removed_type_name(uint32_t t) {
    switch (t) {
    case 4:
        return "Q4_2";
    case 5:
        return "Q4_3";
    case 31:
        return "Q4_0_4_4";
    case 32:
        return "Q4_0_4_8";
    case 33:
        return "Q4_0_8_8";
    case 36:
        return "IQ4_NL_4_4";
    case 37:
        return "IQ4_NL_4_8";
    case 38:
        return "IQ4_NL_8_8";
    default:
        return NULL;
    }
}

static tl_status parse_tensor_info(cursor *c, tl__fmt_tensor *t, uint64_t index) {
    const char *np;
    uint64_t nlen;
    uint32_t n_dims, type;
    if (!rd_str(c, &np, &nlen)) return truncated(c, "tensor name");
    if (nlen >= GGUF_MAX_NAME)
        return tl__err(TL_ERR_FORMAT, "%s: tensor %llu: name of %llu bytes is longer than %d",
                      c->path, (unsigned long long)index, (unsigned long long)nlen,
                      GGUF_MAX_NAME - 1);
    if (memchr(np, 0, (size_t)nlen))
        return tl__err(TL_ERR_FORMAT, "%s: tensor %llu: name contains a NUL byte", c->path,
                      (unsigned long long)index);
    t->name = tl__os_strndup(np, (size_t)nlen);
    if (!t->name) return tl__err(TL_ERR_NOMEM, "%s: out of memory", c->path);
    if (!rd_u32(c, &n_dims)) return truncated(c, "tensor dimension count");
    if (n_dims > GGUF_MAX_DIMS)
        return tl__err(TL_ERR_FORMAT, "%s: tensor '%s' has %u dimensions (at most %d)", c->path,
                      t->name, n_dims, GGUF_MAX_DIMS);
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t ne;
        if (!rd_u64(c, &ne)) return truncated(c, "tensor dimensions");
        if (ne > (uint64_t)INT64_MAX)
            return tl__err(TL_ERR_FORMAT, "%s: tensor '%s': dimension %u is %llu (too large)",
                          c->path, t->name, d, (unsigned long long)ne);
        t->shape[n_dims - 1 - d] = (int64_t)ne; /* outermost first */
    }
    if (!rd_u32(c, &type)) return truncated(c, "tensor type");
    if (type >= TL_GGML_TYPE_COUNT || !tl_dtype_name((tl_dtype)type)) {
        const char *removed = removed_type_name(type);
        if (removed)
            return tl__err(TL_ERR_UNSUPPORTED,
                          "%s: tensor '%s' uses ggml type %s (id %u), removed from ggml", c->path,
                          t->name, removed, type);
        return tl__err(TL_ERR_FORMAT, "%s: tensor '%s' has unknown ggml type id %u", c->path,
                      t->name, type);
    }
    t->dtype = (tl_dtype)type;
    uint32_t blk = tl_dtype_block_elems(t->dtype);
    if (n_dims > 0 && (uint64_t)t->shape[n_dims - 1] % blk != 0)
        return tl__err(TL_ERR_FORMAT,
                      "%s: tensor '%s': row length %lld is not a multiple of the %s block size %u",
                      c->path, t->name, (long long)t->shape[n_dims - 1], tl_dtype_name(t->dtype),
                      blk);
    if (!rd_u64(c, &t->offset)) return truncated(c, "tensor offset");
    return tl__fmt_tensor_size(t, c->path);
}

void tl__fmt_file_free(tl__fmt_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n_tensors; i++) {
        free(f->tensors[i].name);
        free(f->tensors[i].strides);
    }
    for (size_t i = 0; i < f->n_meta; i++) {
        free((char *)f->meta[i].m.key);
        free(f->meta[i].str_offs);
        free(f->meta[i].owned);
    }
    free(f->tensors);
    free(f->meta);
    memset(f, 0, sizeof *f);
}

int tl__fmt_sniff(const uint8_t *data, uint64_t size) {
    if (size >= 4 && memcmp(data, "GGUF", 4) == 0) return TL_FORMAT_GGUF;
    /* a zip archive (torch.save) */
    if (size >= 4 && (!memcmp(data, "PK\3\4", 4) || !memcmp(data, "PK\5\6", 4)))
        return TL_FORMAT_CKPT;
    if (size >= 9) {
        uint64_t n;
        memcpy(&n, data, 8);
        /* JSON header: first non-space byte is '{' */
        for (uint64_t i = 8; i < size && i < 8 + n && i < 4096; i++) {
            if (data[i] == ' ' || data[i] == '\n' || data[i] == '\t' || data[i] == '\r') continue;
            if (data[i] == '{') return TL_FORMAT_SAFETENSORS;
            break;
        }
    }
    /* a bare pickle (the legacy torch.save format); after safetensors, whose header length
       may start with the same two bytes */
    if (size >= 2 && data[0] == 0x80 && data[1] >= 2 && data[1] <= 5) return TL_FORMAT_CKPT;
    return -1;
}

tl_status tl__gguf_parse(const uint8_t *data, uint64_t size, const char *path, tl__fmt_file *out) {
    cursor c = {data, size, 0, path};
    tl__fmt_file f;
    memset(&f, 0, sizeof f);
    memset(out, 0, sizeof *out);
    char magic[4];
    uint32_t version;
    uint64_t n_tensors, n_kv;
    tl_status st = TL_OK;

    if (!rd(&c, magic, 4)) return truncated(&c, "magic");
    if (memcmp(magic, "GGUF", 4) != 0)
        return tl__err(TL_ERR_FORMAT, "%s: not a GGUF file (bad magic)", path);
    if (!rd_u32(&c, &version)) return truncated(&c, "version");
    if (version == 1)
        return tl__err(TL_ERR_UNSUPPORTED, "%s: GGUF version 1 is not supported (2 and 3 are)",
                      path);
    if (version == 0x02000000u || version == 0x03000000u)
        return tl__err(TL_ERR_UNSUPPORTED, "%s: big-endian GGUF is not supported", path);
    if (version != 2 && version != 3)
        return tl__err(TL_ERR_FORMAT, "%s: unknown GGUF version %u", path, version);
    if (!rd_u64(&c, &n_tensors) || !rd_u64(&c, &n_kv)) return truncated(&c, "counts");
    /* A tensor info takes at least 24 bytes and a key/value pair at least 13. */
    uint64_t left = size - c.pos;
    if (n_kv > left / 13)
        return tl__err(TL_ERR_FORMAT, "%s: metadata count %llu exceeds what the file can hold", path,
                      (unsigned long long)n_kv);
    if (n_tensors > left / 24)
        return tl__err(TL_ERR_FORMAT, "%s: tensor count %llu exceeds what the file can hold", path,
                      (unsigned long long)n_tensors);

    if (n_kv > GGUF_MAX_KV || n_tensors > GGUF_MAX_TENSORS)
        return tl__err(
            TL_ERR_UNSUPPORTED,
            "%s: %llu tensors and %llu metadata keys exceed tierload's limits (%llu, %llu)", path,
            (unsigned long long)n_tensors, (unsigned long long)n_kv,
            (unsigned long long)GGUF_MAX_TENSORS, (unsigned long long)GGUF_MAX_KV);
    f.format = TL_FORMAT_GGUF;
    f.version = (int32_t)version;
    f.size = size;
    f.alignment = GGUF_DEFAULT_ALIGNMENT;
    if (n_kv) {
        f.meta = tl__os_calloc((size_t)n_kv, sizeof *f.meta);
        if (!f.meta) return tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
    }
    for (uint64_t i = 0; i < n_kv && !st; i++) {
        st = parse_kv(&c, &f.meta[i]);
        f.n_meta = (size_t)i + 1;
        if (!st && !strcmp(f.meta[i].m.key, "general.alignment")) {
            const tl_meta *m = &f.meta[i].m;
            if (m->type != TL_META_U32)
                st = tl__err(TL_ERR_FORMAT, "%s: general.alignment must be uint32, not %s", path,
                            tl_meta_type_name(m->type));
            else if (!tl__is_pow2(m->v.u))
                st = tl__err(TL_ERR_FORMAT, "%s: general.alignment %llu is not a power of two", path,
                            (unsigned long long)m->v.u);
            else if (m->v.u > GGUF_MAX_ALIGNMENT)
                st = tl__err(TL_ERR_FORMAT, "%s: general.alignment %llu exceeds 1 MiB", path,
                            (unsigned long long)m->v.u);
            else
                f.alignment = (uint32_t)m->v.u;
        }
    }
    if (!st && n_tensors) {
        f.tensors = tl__os_calloc((size_t)n_tensors, sizeof *f.tensors);
        if (!f.tensors) st = tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
    }
    for (uint64_t i = 0; i < n_tensors && !st; i++) {
        f.n_tensors = (size_t)i + 1;
        st = parse_tensor_info(&c, &f.tensors[i], i);
    }
    if (!st && !tl__align_up_u64(c.pos, f.alignment, &f.data_offset))
        st = tl__err(TL_ERR_FORMAT, "%s: data offset overflows", path);
    for (size_t i = 0; i < f.n_tensors && !st; i++) {
        tl__fmt_tensor *t = &f.tensors[i];
        uint64_t abs;
        if (t->offset % f.alignment != 0)
            st = tl__err(TL_ERR_FORMAT,
                        "%s: tensor '%s': offset %llu is not a multiple of the alignment %u", path,
                        t->name, (unsigned long long)t->offset, f.alignment);
        else if (!tl__add_u64(f.data_offset, t->offset, &abs) || !tl__range_ok(abs, t->nbytes, size))
            st = tl__err(
                TL_ERR_FORMAT,
                "%s: tensor '%s': data [%llu, +%llu) runs past the end of the file (%llu bytes)",
                path, t->name, (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                (unsigned long long)size);
        else
            t->offset = abs;
    }
    if (!st) st = tl__fmt_check_unique(&f, path, true);
    if (st) {
        tl__fmt_file_free(&f);
        return st;
    }
    *out = f;
    return TL_OK;
}

const char *tl_meta_type_name(tl_meta_type t) {
    static const char *names[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                  "int32",  "float32", "bool",   "string", "array",
                                  "uint64", "int64",   "float64"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}
