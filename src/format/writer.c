/*
 * writer.c — lays out and encodes model-file headers (tl_writer_* in
 * tierload.h; knobs for deliberately broken files in format/writer.h).
 *
 * The writer never computes a tensor's size: callers pass nbytes, so the
 * size rules stay in one place (format/dtype.c for the library, a table
 * written from the specs for the tests). GGUF: "GGUF", u32 version, u64
 * tensor count, u64 kv count, the kvs in call order, the tensor infos in call
 * order (name, n_dims, ne innermost first, type id, offset), zero padding to
 * the alignment; data offsets packed in call order, each aligned, the data
 * section padded to the alignment at its end (llama.cpp's layout).
 * safetensors: u64 header length, the JSON header ({"__metadata__":{...},
 * "name":{"dtype":..,"shape":[..],"data_offsets":[b,e]},...}) padded with
 * spaces to 8 bytes, tensors packed in call order.
 */
#include "format/writer.h"
#include "core/checked.h"
#include "core/error.h"
#include "format/format.h"
#include "os/os.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct wbuf {
    unsigned char *p;
    size_t len, cap;
    bool oom;
} wbuf;

typedef struct wtensor {
    char *name;
    tl_dtype dtype;
    char *dtype_name; /* safetensors: text written instead of tl_dtype_name(dtype) */
    uint32_t n_dims;
    int64_t shape[TL_MAX_DIMS]; /* outermost first */
    uint64_t nbytes;
    bool explicit_off;
    uint64_t off;
} wtensor;

typedef struct wmeta {
    char *key, *value;
} wmeta;

struct tl_writer {
    tl_format format;
    /* GGUF */
    uint32_t version;
    char magic[4];
    bool counts_set;
    uint64_t w_n_tensors, w_n_kv;
    uint32_t align, layout_align;
    wbuf kvs;
    uint64_t n_kv;
    /* safetensors */
    wmeta *meta;
    size_t n_meta, cap_meta;
    char *meta_json;
    bool pad8;
    /* both */
    wtensor *t;
    size_t n_t, cap_t;
    wbuf out;
    uint64_t data_size;
};

static void wb_bytes(wbuf *b, const void *d, size_t n) {
    if (b->oom) return;
    if (n > SIZE_MAX - b->len - 1) {
        b->oom = true;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
        unsigned char *p = tl__os_realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, d, n);
    b->len += n;
    b->p[b->len] = 0; /* text stays NUL-terminated */
}

static void wb_u32(wbuf *b, uint32_t v) {
    unsigned char le[4];
    for (int i = 0; i < 4; i++)
        le[i] = (unsigned char)(v >> (8 * i));
    wb_bytes(b, le, 4);
}

static void wb_u64(wbuf *b, uint64_t v) {
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(v >> (8 * i));
    wb_bytes(b, le, 8);
}

static void wb_gguf_str(wbuf *b, const char *s) {
    size_t n = strlen(s);
    wb_u64(b, n);
    wb_bytes(b, s, n);
}

static void wb_text(wbuf *b, const char *s) {
    wb_bytes(b, s, strlen(s));
}

/* A JSON string literal: quotes, backslashes and control characters escaped. */
static void wb_json_str(wbuf *b, const char *s) {
    wb_bytes(b, "\"", 1);
    for (;;) {
        size_t run = 0; /* characters that go as they are, appended at once */
        while (s[run] && s[run] != '"' && s[run] != '\\' && (unsigned char)s[run] >= 0x20)
            run++;
        wb_bytes(b, s, run);
        s += run;
        if (!*s) break;
        unsigned char c = (unsigned char)*s++;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            wb_bytes(b, e, 2);
        } else {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", c);
            wb_text(b, e);
        }
    }
    wb_bytes(b, "\"", 1);
}

tl_status tl_writer_create(tl_format format, tl_writer **out) {
    if (!out) return tl__err(TL_ERR_INVALID_ARG, "writer: no output pointer");
    *out = NULL;
    if (format != TL_FORMAT_GGUF && format != TL_FORMAT_SAFETENSORS)
        return tl__err(TL_ERR_INVALID_ARG, "writer: unknown format %d", (int)format);
    tl_writer *w = tl__os_calloc(1, sizeof *w);
    if (!w) return tl__err(TL_ERR_NOMEM, "writer: out of memory");
    w->format = format;
    w->version = 3;
    memcpy(w->magic, "GGUF", 4);
    w->align = 32;
    w->pad8 = true;
    *out = w;
    return TL_OK;
}

void tl_writer_destroy(tl_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].dtype_name);
    }
    for (size_t i = 0; i < w->n_meta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->t);
    free(w->meta);
    free(w->meta_json);
    free(w->kvs.p);
    free(w->out.p);
    free(w);
}

static tl_status kvs_status(tl_writer *w, const char *key) {
    return w->kvs.oom ? tl__err(TL_ERR_NOMEM, "writer: metadata %s: out of memory", key) : TL_OK;
}

static tl_status need_gguf(const tl_writer *w, const char *key) {
    if (w->format != TL_FORMAT_GGUF)
        return tl__err(TL_ERR_UNSUPPORTED, "writer: metadata %s: safetensors metadata are strings",
                      key);
    return TL_OK;
}

tl_status tl_writer_meta_raw(tl_writer *w, const char *key, tl_meta_type type, const void *value,
                             size_t len) {
    if (!w || !key || (len && !value)) return tl__err(TL_ERR_INVALID_ARG, "writer: bad argument");
    tl_status s = need_gguf(w, key);
    if (s) return s;
    wb_gguf_str(&w->kvs, key);
    wb_u32(&w->kvs, (uint32_t)type);
    wb_bytes(&w->kvs, value, len);
    w->n_kv++;
    return kvs_status(w, key);
}

tl_status tl_writer_meta_u32(tl_writer *w, const char *key, uint32_t value) {
    unsigned char le[4];
    for (int i = 0; i < 4; i++)
        le[i] = (unsigned char)(value >> (8 * i));
    tl_status s = tl_writer_meta_raw(w, key, TL_META_U32, le, 4);
    if (s == TL_OK && !strcmp(key, "general.alignment") && tl__is_pow2(value)) w->align = value;
    return s;
}

tl_status tl_writer_meta_string(tl_writer *w, const char *key, const char *value) {
    if (!w || !key || !value) return tl__err(TL_ERR_INVALID_ARG, "writer: bad argument");
    if (w->format == TL_FORMAT_GGUF) {
        wbuf v = {0};
        wb_gguf_str(&v, value);
        tl_status s = v.oom ? tl__err(TL_ERR_NOMEM, "writer: metadata %s: out of memory", key)
                            : tl_writer_meta_raw(w, key, TL_META_STRING, v.p, v.len);
        free(v.p);
        return s;
    }
    if (w->n_meta == w->cap_meta) {
        size_t cap = w->cap_meta ? 2 * w->cap_meta : 8;
        wmeta *m = tl__os_realloc(w->meta, cap * sizeof *m);
        if (!m) return tl__err(TL_ERR_NOMEM, "writer: metadata %s: out of memory", key);
        w->meta = m;
        w->cap_meta = cap;
    }
    wmeta *m = &w->meta[w->n_meta];
    m->key = tl__os_strdup(key);
    m->value = tl__os_strdup(value);
    if (!m->key || !m->value) {
        free(m->key);
        free(m->value);
        return tl__err(TL_ERR_NOMEM, "writer: metadata %s: out of memory", key);
    }
    w->n_meta++;
    return TL_OK;
}

tl_status tl_writer_tensor(tl_writer *w, const char *name, tl_dtype dtype, uint32_t n_dims,
                           const int64_t *shape, uint64_t nbytes, size_t *index) {
    if (!w || !name || (n_dims && !shape))
        return tl__err(TL_ERR_INVALID_ARG, "writer: bad argument");
    if (n_dims > TL_MAX_DIMS)
        return tl__err(TL_ERR_INVALID_ARG, "writer: tensor %s: %u dimensions (at most %u)", name,
                      n_dims, TL_MAX_DIMS);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 16;
        wtensor *t = tl__os_realloc(w->t, cap * sizeof *t);
        if (!t) return tl__err(TL_ERR_NOMEM, "writer: tensor %s: out of memory", name);
        w->t = t;
        w->cap_t = cap;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = tl__os_strdup(name);
    if (!t->name) return tl__err(TL_ERR_NOMEM, "writer: tensor %s: out of memory", name);
    t->dtype = dtype;
    t->n_dims = n_dims;
    if (n_dims) memcpy(t->shape, shape, n_dims * sizeof *shape);
    t->nbytes = nbytes;
    if (index) *index = w->n_t;
    w->n_t++;
    return TL_OK;
}

size_t tl_writer_tensor_count(const tl_writer *w) {
    return w ? w->n_t : 0;
}

/* x rounded up to a multiple of a (any a >= 1; knobs may ask for odd layouts); false on overflow.
 */
static bool align_up(uint64_t x, uint64_t a, uint64_t *out) {
    uint64_t t;
    if (a <= 1) {
        *out = x;
        return true;
    }
    if (!tl__add_u64(x, a - 1, &t)) return false;
    *out = t - t % a;
    return true;
}

/*
 * Data offsets: packed after the previous tensor's end, aligned; explicit
 * ones (a knob) as given, their ends saturating, since tests place tensors
 * out of range on purpose.
 */
static tl_status lay_out(tl_writer *w, uint64_t align) {
    uint64_t run = 0, end_max = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        wtensor *t = &w->t[i];
        if (!t->explicit_off) t->off = run;
        uint64_t end;
        if (!tl__add_u64(t->off, t->nbytes, &end)) {
            if (!t->explicit_off)
                return tl__err(TL_ERR_INVALID_ARG, "writer: tensor %s: data offsets overflow",
                              t->name);
            end = UINT64_MAX;
        }
        if (!align_up(end, align, &run)) {
            if (!t->explicit_off)
                return tl__err(TL_ERR_INVALID_ARG, "writer: tensor %s: data offsets overflow",
                              t->name);
            run = end;
        }
        if (end > end_max) end_max = end;
    }
    if (!align_up(end_max, align, &w->data_size)) w->data_size = end_max;
    return TL_OK;
}

static tl_status header_gguf(tl_writer *w) {
    if (!w->counts_set && (w->n_t > TL_GGUF_MAX_TENSORS || w->n_kv > TL_GGUF_MAX_KV))
        return tl__err(TL_ERR_INVALID_ARG,
                      "writer: %zu tensors and %llu metadata keys: GGUF readers accept at most "
                      "%llu and %llu",
                      w->n_t, (unsigned long long)w->n_kv, (unsigned long long)TL_GGUF_MAX_TENSORS,
                      (unsigned long long)TL_GGUF_MAX_KV);
    uint64_t a = w->layout_align ? w->layout_align : w->align;
    tl_status s = lay_out(w, a);
    if (s) return s;
    wbuf *b = &w->out;
    wb_bytes(b, w->magic, 4);
    wb_u32(b, w->version);
    wb_u64(b, w->counts_set ? w->w_n_tensors : w->n_t);
    wb_u64(b, w->counts_set ? w->w_n_kv : w->n_kv);
    wb_bytes(b, w->kvs.p, w->kvs.len);
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        wb_gguf_str(b, t->name);
        wb_u32(b, t->n_dims);
        for (uint32_t d = t->n_dims; d-- > 0;) /* GGUF: innermost first */
            wb_u64(b, (uint64_t)t->shape[d]);
        wb_u32(b, (uint32_t)t->dtype);
        wb_u64(b, t->off);
    }
    static const unsigned char zeros[64];
    uint64_t padded;
    if (!align_up(b->len, a, &padded))
        return tl__err(TL_ERR_INVALID_ARG, "writer: header overflows");
    for (uint64_t left = padded - b->len; left && !b->oom;) {
        size_t k = left < sizeof zeros ? (size_t)left : sizeof zeros;
        wb_bytes(b, zeros, k);
        left -= k;
    }
    return TL_OK;
}

static tl_status header_safetensors(tl_writer *w) {
    tl_status s = lay_out(w, 1);
    if (s) return s;
    wbuf h = {0};
    wb_text(&h, "{");
    bool first = true;
    if (w->meta_json || w->n_meta) {
        wb_text(&h, "\"__metadata__\":");
        if (w->meta_json) {
            wb_text(&h, w->meta_json);
        } else {
            wb_text(&h, "{");
            for (size_t i = 0; i < w->n_meta; i++) {
                if (i) wb_text(&h, ",");
                wb_json_str(&h, w->meta[i].key);
                wb_text(&h, ":");
                wb_json_str(&h, w->meta[i].value);
            }
            wb_text(&h, "}");
        }
        first = false;
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        const char *dn = t->dtype_name ? t->dtype_name : tl_dtype_name(t->dtype);
        if (!dn) {
            free(h.p);
            return tl__err(TL_ERR_INVALID_ARG, "writer: tensor %s: no safetensors name for dtype %d",
                          t->name, (int)t->dtype);
        }
        if (!first) wb_text(&h, ",");
        first = false;
        wb_json_str(&h, t->name);
        wb_text(&h, ":{\"dtype\":");
        wb_json_str(&h, dn);
        wb_text(&h, ",\"shape\":[");
        char num[48];
        for (uint32_t d = 0; d < t->n_dims; d++) {
            snprintf(num, sizeof num, "%s%" PRId64, d ? "," : "", t->shape[d]);
            wb_text(&h, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%" PRIu64 ",", t->off);
        wb_text(&h, num);
        snprintf(num, sizeof num, "%" PRIu64 "]}", t->off + t->nbytes);
        wb_text(&h, num);
    }
    wb_text(&h, "}");
    while (w->pad8 && h.len % 8 && !h.oom)
        wb_text(&h, " ");
    if (h.oom) {
        free(h.p);
        return tl__err(TL_ERR_NOMEM, "writer: safetensors header: out of memory");
    }
    if (h.len > TL_ST_MAX_HEADER) {
        size_t n = h.len;
        free(h.p);
        return tl__err(TL_ERR_INVALID_ARG,
                      "writer: a %zu-byte safetensors header for %zu tensors: readers accept at "
                      "most %llu bytes",
                      n, w->n_t, (unsigned long long)TL_ST_MAX_HEADER);
    }
    wb_u64(&w->out, h.len);
    wb_bytes(&w->out, h.p, h.len);
    free(h.p);
    return TL_OK;
}

tl_status tl_writer_header(tl_writer *w, const void **out, size_t *len) {
    if (!w || !out || !len) return tl__err(TL_ERR_INVALID_ARG, "writer: bad argument");
    *out = NULL;
    *len = 0;
    if (w->kvs.oom) return tl__err(TL_ERR_NOMEM, "writer: out of memory");
    w->out.len = 0;
    w->out.oom = false;
    tl_status s = w->format == TL_FORMAT_GGUF ? header_gguf(w) : header_safetensors(w);
    if (s == TL_OK && w->out.oom) s = tl__err(TL_ERR_NOMEM, "writer: header: out of memory");
    if (s) return s;
    *out = w->out.p;
    *len = w->out.len;
    return TL_OK;
}

uint64_t tl_writer_tensor_offset(const tl_writer *w, size_t i) {
    return w && i < w->n_t ? w->t[i].off : 0;
}

uint64_t tl_writer_data_size(const tl_writer *w) {
    return w ? w->data_size : 0;
}

/* --- knobs (format/writer.h) --- */

void tl__writer_set_version(tl_writer *w, uint32_t version) {
    w->version = version;
}

void tl__writer_set_magic(tl_writer *w, const char magic[4]) {
    memcpy(w->magic, magic, 4);
}

void tl__writer_set_counts(tl_writer *w, uint64_t n_tensors, uint64_t n_kv) {
    w->counts_set = true;
    w->w_n_tensors = n_tensors;
    w->w_n_kv = n_kv;
}

void tl__writer_set_layout_alignment(tl_writer *w, uint32_t align) {
    w->layout_align = align;
}

void tl__writer_set_tensor_offset(tl_writer *w, size_t i, uint64_t offset) {
    if (i >= w->n_t) return;
    w->t[i].explicit_off = true;
    w->t[i].off = offset;
}

void tl__writer_set_tensor_nbytes(tl_writer *w, size_t i, uint64_t nbytes) {
    if (i < w->n_t) w->t[i].nbytes = nbytes;
}

tl_status tl__writer_set_dtype_name(tl_writer *w, size_t i, const char *name) {
    if (i >= w->n_t) return tl__err(TL_ERR_INVALID_ARG, "writer: no tensor %zu", i);
    char *c = tl__os_strdup(name);
    if (!c) return tl__err(TL_ERR_NOMEM, "writer: out of memory");
    free(w->t[i].dtype_name);
    w->t[i].dtype_name = c;
    return TL_OK;
}

tl_status tl__writer_set_metadata_json(tl_writer *w, const char *json) {
    char *c = NULL;
    if (json && !(c = tl__os_strdup(json))) return tl__err(TL_ERR_NOMEM, "writer: out of memory");
    free(w->meta_json);
    w->meta_json = c;
    return TL_OK;
}

void tl__writer_set_header_pad(tl_writer *w, bool pad8) {
    w->pad8 = pad8;
}
