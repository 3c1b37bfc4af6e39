/*
 * safetensors.c — safetensors parser, validating as the reference
 * implementation does.
 *
 * Layout: u64 little-endian header length N, N bytes of UTF-8 JSON (an object
 * starting with '{', possibly padded with trailing spaces), then the data
 * buffer. Each JSON member is a tensor {"dtype","shape","data_offsets":[B,E]}
 * with offsets relative to the data buffer, except "__metadata__", a
 * string -> string map.
 *
 * Rules (the reference's): N <= 100,000,000; 8 + N <= file size; the header
 * starts with '{' and is valid UTF-8 JSON; tensors sorted by offsets start at
 * 0 and leave no holes and no overlaps; E - B = element count x dtype size
 * (in bits, so F4/F6 must come out whole bytes), computed without overflow;
 * the data ends exactly at the end of the file. Beyond the reference: unique
 * names (cJSON would otherwise keep both), no NUL in names, rank <= 8, and
 * integers exact (below 2^53). Where cJSON is laxer than the reference's JSON
 * reader (serde_json with integer fields), the header text is checked first
 * (json_strict): numbers must be plain integers ("4", never "4.0", "1.6e1",
 * "-0" or "04"), strings may not hold a NUL (\u0000, which would cut a name
 * short) or a raw control character.
 */
#include "format/format.h"

#include "core/checked.h"
#include "core/error.h"
#include "os/os.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ST_MAX_HEADER TL_ST_MAX_HEADER /* see format.h */

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
static bool utf8_valid(const uint8_t *s, uint64_t n) {
    uint64_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int len;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0)
            len = 2, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0)
            len = 3, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0)
            len = 4, cp = c & 0x07;
        else
            return false;
        if (i + (uint64_t)len > n) return false;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += (uint64_t)len;
    }
    return true;
}

/*
 * The header's text, token by token, where cJSON accepts what the reference
 * refuses: every number a plain non-negative integer (shapes and offsets are
 * integers there; metadata values are strings), no \u0000 and no raw
 * control character in a string. The message names the tensor (the member of
 * the top-level object) it happened in.
 */
static tl_status json_strict(const uint8_t *h, uint64_t n, const char *path) {
    int depth = 0, index = 0;
    /* the top-level member (a tensor), its field being read, and the last string seen */
    const uint8_t *key = NULL, *field = NULL, *last = NULL;
    uint64_t key_len = 0, field_len = 0, last_len = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint8_t c = h[i];
        if (c == '"') {
            uint64_t start = ++i;
            for (; i < n && h[i] != '"'; i++) {
                if (h[i] < 0x20)
                    return tl__err(TL_ERR_FORMAT,
                                   "%s: safetensors header: a raw control character (0x%02x) in "
                                   "a string near byte %llu",
                                   path, h[i], (unsigned long long)(8 + i));
                if (h[i] != '\\') continue;
                if (i + 5 < n && h[i + 1] == 'u' && !memcmp(h + i + 2, "0000", 4))
                    return tl__err(TL_ERR_FORMAT,
                                   "%s: safetensors header: a name or string holds a NUL "
                                   "(\\u0000) near byte %llu; refused",
                                   path, (unsigned long long)(8 + i));
                i++; /* the escaped character */
            }
            last = h + start, last_len = i - start;
            continue;
        }
        if (c == ':' && depth == 1) key = last, key_len = last_len;
        if (c == ':' && depth == 2) field = last, field_len = last_len;
        if (c == ',' && depth == 3) index++;
        if (c == '{' || c == '[') {
            if (++depth == 3) index = 0;
        }
        if (c == '}' || c == ']') depth--;
        if (c != '-' && !(c >= '0' && c <= '9')) continue;
        uint64_t start = i;
        bool plain = c != '-';
        while (i + 1 < n && h[i + 1] && strchr("0123456789+-.eE", h[i + 1])) {
            i++;
            if (h[i] < '0' || h[i] > '9') plain = false;
        }
        if (!plain || (h[start] == '0' && i > start))
            return tl__err(TL_ERR_FORMAT,
                           "%s: tensor '%.*s': %.*s[%d] is written %.*s, not as a non-negative "
                           "integer (shapes and offsets are integers)",
                           path, key ? (int)(key_len > 200 ? 200 : key_len) : 1,
                           key ? (const char *)key : "?",
                           field ? (int)(field_len > 40 ? 40 : field_len) : 6,
                           field ? (const char *)field : "number", index,
                           (int)(i - start + 1 > 40 ? 40 : i - start + 1), (const char *)h + start);
    }
    return TL_OK;
}

/* A JSON number that is an exact non-negative integer below 2^53. */
static bool json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return false;
    double d = j->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d) return false;
    *out = (uint64_t)d;
    return true;
}

static tl_status parse_tensor(const cJSON *item, const char *path, tl__fmt_tensor *t,
                              uint64_t offs[2]) {
    const char *name = item->string;
    if (!cJSON_IsObject(item))
        return tl__err(TL_ERR_FORMAT, "%s: tensor '%s': entry is not an object", path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt))
        return tl__err(TL_ERR_FORMAT, "%s: tensor '%s': missing or non-string \"dtype\"", path,
                      name);
    if (!cJSON_IsArray(sh))
        return tl__err(TL_ERR_FORMAT, "%s: tensor '%s': missing or non-array \"shape\"", path, name);
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2)
        return tl__err(TL_ERR_FORMAT, "%s: tensor '%s': \"data_offsets\" must be [begin, end]", path,
                      name);
    t->dtype = tl_dtype_from_name(dt->valuestring);
    /* The reference's names are upper-case; ggml-only names are not safetensors dtypes. */
    if (t->dtype == TL_DTYPE_INVALID || strcmp(tl_dtype_name(t->dtype), dt->valuestring) != 0 ||
        ((int)t->dtype < 100 && t->dtype != TL_DTYPE_F32 && t->dtype != TL_DTYPE_F16 &&
         t->dtype != TL_DTYPE_BF16 && t->dtype != TL_DTYPE_F64 && t->dtype != TL_DTYPE_I8 &&
         t->dtype != TL_DTYPE_I16 && t->dtype != TL_DTYPE_I32 && t->dtype != TL_DTYPE_I64))
        return tl__err(TL_ERR_FORMAT, "%s: tensor '%s': unknown dtype \"%s\"", path, name,
                      dt->valuestring);
    int rank = cJSON_GetArraySize(sh);
    if (rank > TL_MAX_DIMS)
        return tl__err(TL_ERR_UNSUPPORTED, "%s: tensor '%s' has %d dimensions (at most %d)", path,
                      name, rank, TL_MAX_DIMS);
    t->n_dims = (uint32_t)rank;
    int d = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, sh) {
        uint64_t v;
        if (!json_uint(e, &v))
            return tl__err(TL_ERR_FORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer",
                          path, name, d);
        t->shape[d++] = (int64_t)v;
    }
    if (!json_uint(cJSON_GetArrayItem(of, 0), &offs[0]) ||
        !json_uint(cJSON_GetArrayItem(of, 1), &offs[1]))
        return tl__err(TL_ERR_FORMAT, "%s: tensor '%s': data_offsets are not non-negative integers",
                      path, name);
    return tl__fmt_tensor_size(t, path);
}

typedef struct st_order {
    uint64_t begin, end;
    size_t i;
} st_order;

static int cmp_order(const void *a, const void *b) {
    const st_order *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static tl_status parse_metadata(const cJSON *md, const char *path, tl__fmt_file *f) {
    if (!cJSON_IsObject(md))
        return tl__err(TL_ERR_FORMAT, "%s: __metadata__ is not an object", path);
    const cJSON *e;
    size_t n = 0;
    cJSON_ArrayForEach(e, md) n++;
    if (!n) return TL_OK;
    f->meta = tl__os_calloc(n, sizeof *f->meta);
    if (!f->meta) return tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
    cJSON_ArrayForEach(e, md) {
        if (!cJSON_IsString(e))
            return tl__err(TL_ERR_FORMAT, "%s: __metadata__ key '%s' is not a string", path,
                          e->string);
        tl__fmt_meta *fm = &f->meta[f->n_meta++];
        fm->m.key = tl__os_strdup(e->string);
        fm->owned = tl__os_strdup(e->valuestring);
        if (!fm->m.key || !fm->owned) return tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
        fm->m.type = TL_META_STRING;
        fm->m.v.s.ptr = fm->owned;
        fm->m.v.s.len = strlen(fm->owned);
    }
    return TL_OK;
}

static tl_status parse_header(const cJSON *root, const char *path, uint64_t data_off, uint64_t size,
                              tl__fmt_file *f) {
    size_t n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") != 0) n++;
    }
    st_order *ord = NULL;
    if (n) {
        f->tensors = tl__os_calloc(n, sizeof *f->tensors);
        ord = tl__os_calloc(n, sizeof *ord);
        if (!f->tensors || !ord) {
            free(ord);
            return tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
        }
    }
    tl_status st = TL_OK;
    bool seen_meta = false;
    cJSON_ArrayForEach(e, root) {
        if (st) break;
        if (!strcmp(e->string, "__metadata__")) {
            if (seen_meta)
                st = tl__err(TL_ERR_FORMAT, "%s: duplicate __metadata__", path);
            else
                st = parse_metadata(e, path, f);
            seen_meta = true;
            continue;
        }
        size_t i = f->n_tensors++;
        tl__fmt_tensor *t = &f->tensors[i];
        t->name = tl__os_strdup(e->string);
        if (!t->name) {
            st = tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        uint64_t offs[2] = {0, 0};
        st = parse_tensor(e, path, t, offs);
        ord[i] = (st_order){offs[0], offs[1], i};
    }
    if (!st && n) qsort(ord, n, sizeof *ord, cmp_order);
    uint64_t expect = 0;
    for (size_t k = 0; k < n && !st; k++) {
        tl__fmt_tensor *t = &f->tensors[ord[k].i];
        if (ord[k].begin != expect)
            st =
                tl__err(TL_ERR_FORMAT,
                       "%s: tensor '%s': data starts at %llu, expected %llu (hole or overlap)",
                       path, t->name, (unsigned long long)ord[k].begin, (unsigned long long)expect);
        else if (ord[k].end < ord[k].begin)
            st = tl__err(TL_ERR_FORMAT, "%s: tensor '%s': data_offsets end before they begin", path,
                        t->name);
        else if (ord[k].end - ord[k].begin != t->nbytes)
            st = tl__err(TL_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets span %llu bytes but %s%s needs %llu", path,
                        t->name, (unsigned long long)(ord[k].end - ord[k].begin),
                        tl_dtype_name(t->dtype), " of its shape", (unsigned long long)t->nbytes);
        else if (!tl__add_u64(data_off, ord[k].begin, &t->offset))
            st = tl__err(TL_ERR_FORMAT, "%s: tensor '%s': offset overflows", path, t->name);
        expect = ord[k].end;
    }
    uint64_t end;
    if (!st && (!tl__add_u64(data_off, expect, &end) || end != size))
        st = tl__err(TL_ERR_FORMAT,
                    "%s: data section is %llu bytes but the file holds %llu after the header%s",
                    path, (unsigned long long)expect, (unsigned long long)(size - data_off),
                    end < size ? " (trailing bytes)" : " (file is truncated)");
    if (!st && n) {
        /* Catalog order: storage order. */
        tl__fmt_tensor *sorted = tl__os_calloc(n, sizeof *sorted);
        if (!sorted)
            st = tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
        else {
            for (size_t k = 0; k < n; k++)
                sorted[k] = f->tensors[ord[k].i];
            free(f->tensors);
            f->tensors = sorted;
        }
    }
    free(ord);
    return st;
}

tl_status tl__safetensors_parse(const uint8_t *data, uint64_t size, const char *path,
                               tl__fmt_file *out) {
    memset(out, 0, sizeof *out);
    if (size < 8)
        return tl__err(TL_ERR_FORMAT,
                      "%s: truncated safetensors: %llu bytes, fewer than the 8-byte header length",
                      path, (unsigned long long)size);
    uint64_t n;
    memcpy(&n, data, 8);
    if (n > ST_MAX_HEADER)
        return tl__err(TL_ERR_FORMAT,
                      "%s: safetensors header length %llu exceeds the 100000000-byte limit", path,
                      (unsigned long long)n);
    if (!tl__range_ok(8, n, size))
        return tl__err(TL_ERR_FORMAT,
                      "%s: truncated safetensors: header length %llu runs past the end of the file "
                      "(%llu bytes)",
                      path, (unsigned long long)n, (unsigned long long)size);
    const uint8_t *h = data + 8;
    if (n == 0 || h[0] != '{')
        return tl__err(TL_ERR_FORMAT, "%s: safetensors header does not start with '{'", path);
    if (memchr(h, 0, (size_t)n))
        return tl__err(TL_ERR_FORMAT, "%s: safetensors header contains a NUL byte", path);
    if (!utf8_valid(h, n))
        return tl__err(TL_ERR_FORMAT, "%s: safetensors header is not valid UTF-8", path);
    tl_status js = json_strict(h, n, path);
    if (js) return js;

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)h, (size_t)n, &end, false);
    if (!root) {
        const char *ep = cJSON_GetErrorPtr();
        long at = ep ? (long)(ep - (const char *)h) : -1;
        return tl__err(TL_ERR_FORMAT, "%s: safetensors header is not valid JSON (near byte %ld)",
                      path, at + 8);
    }
    for (const char *p = end; p && p < (const char *)h + n; p++) {
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') {
            cJSON_Delete(root);
            return tl__err(TL_ERR_FORMAT, "%s: safetensors header has bytes after its JSON object",
                          path);
        }
    }
    tl__fmt_file f;
    memset(&f, 0, sizeof f);
    f.format = TL_FORMAT_SAFETENSORS;
    f.version = -1;
    f.size = size;
    f.data_offset = 8 + n;
    tl_status st = cJSON_IsObject(root)
                       ? parse_header(root, path, f.data_offset, size, &f)
                       : tl__err(TL_ERR_FORMAT, "%s: safetensors header is not a JSON object", path);
    cJSON_Delete(root);
    if (!st) st = tl__fmt_check_unique(&f, path, false);
    if (st) {
        tl__fmt_file_free(&f);
        return st;
    }
    *out = f;
    return TL_OK;
}
