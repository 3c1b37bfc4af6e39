/*
 * test_ggml_crosscheck.c — our GGUF parser against ggml's own reader.
 *
 * ggml's libggml-base.so (from the npm package @node-llama-cpp/linux-x64,
 * installed on first run into $TL_BUILD_DIR/npm-ggml and reused after; or
 * the file named by TL_GGML_LIB) is loaded with dlopen, and for every GGUF of
 * the test data (TL_TESTDATA/gguf) plus files written here (every ggml type tierload
 * knows, all 13 metadata value types, GGUF v2, alignments 1..4096, no tensors)
 * both readers must agree on: version, alignment, data offset, metadata keys,
 * types and values, tensor count, and each tensor's name, type, shape,
 * absolute offset and size. The type table (block size, bytes per block,
 * name, removed ids) is compared with ggml_type_size / ggml_blck_size /
 * ggml_type_name. Malformed files must be rejected by both. 600 mutated
 * headers (ggml run in a forked child, since it may abort) must never be
 * read differently, nor accepted by ggml alone for a reason ggml checks too
 * (TL_GGML_MUTANTS=N runs more and says why the readers differ). Without npm
 * (or when the install fails) every test skips with "skipped: npm
 * unavailable: ..." and the program exits 77 (ctest: Skipped); with CI=true
 * in the environment they fail instead, since this is the only independent
 * check of the type table. TL_GGML_LIB=/path/libggml-base.so uses a given
 * library.
 */
#include "testutil.h"

#include "format/format.h"
#include "gguf_writer.h"

#include <dirent.h>
#include <dlfcn.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NPM_PKG "@node-llama-cpp/linux-x64@3.22.1"
#define LIB_REL "npm-ggml/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so"

/* The few ggml / gguf C API entry points used (signatures as in ggml's gguf.h / ggml.h). */
struct ggml_context;
struct ggml_tensor;
struct gguf_context;
struct gguf_init_params {
    bool no_alloc;
    struct ggml_context **ctx;
};
typedef void (*ggml_log_cb)(int level, const char *text, void *user);

static struct {
    void *h;
    char why[1024]; /* why the library is unavailable */
    struct gguf_context *(*init_from_file)(const char *, struct gguf_init_params);
    void (*gguf_free)(struct gguf_context *);
    uint32_t (*get_version)(const struct gguf_context *);
    size_t (*get_alignment)(const struct gguf_context *);
    size_t (*get_data_offset)(const struct gguf_context *);
    int64_t (*get_n_kv)(const struct gguf_context *);
    const char *(*get_key)(const struct gguf_context *, int64_t);
    int (*get_kv_type)(const struct gguf_context *, int64_t);
    int (*get_arr_type)(const struct gguf_context *, int64_t);
    size_t (*get_arr_n)(const struct gguf_context *, int64_t);
    const void *(*get_arr_data)(const struct gguf_context *, int64_t);
    const char *(*get_arr_str)(const struct gguf_context *, int64_t, size_t);
    const void *(*get_val_data)(const struct gguf_context *, int64_t);
    const char *(*get_val_str)(const struct gguf_context *, int64_t);
    int64_t (*get_n_tensors)(const struct gguf_context *);
    const char *(*get_tensor_name)(const struct gguf_context *, int64_t);
    int (*get_tensor_type)(const struct gguf_context *, int64_t); /* enum ggml_type */
    size_t (*get_tensor_offset)(const struct gguf_context *, int64_t);
    size_t (*get_tensor_size)(const struct gguf_context *, int64_t);
    size_t (*type_size)(int);
    int64_t (*blck_size)(int);
    const char *(*type_name)(int);
    struct ggml_tensor *(*get_tensor)(struct ggml_context *, const char *);
    int64_t (*nelements)(const struct ggml_tensor *);
    void (*ggml_free)(struct ggml_context *);
    void (*log_set)(ggml_log_cb, void *);
} G;

static char ggml_log[4096]; /* ggml's last messages, shown when a check fails */

static void quiet_log(int level, const char *text, void *user) {
    (void)level;
    (void)user;
    size_t at = strlen(ggml_log);
    if (at > sizeof ggml_log - 512) at = 0;
    snprintf(ggml_log + at, sizeof ggml_log - at, "%s", text);
}

static bool file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Find (installing on first use) libggml-base.so; NULL with G.why set when unavailable. */
static char *find_lib(void) {
    const char *env = getenv("TL_GGML_LIB");
    if (env && *env) {
        if (file_exists(env)) return strdup(env);
        snprintf(G.why, sizeof G.why, "TL_GGML_LIB=%s does not exist", env);
        return NULL;
    }
    const char *bd = getenv("TL_BUILD_DIR");
    if (!bd || !*bd) bd = ".";
    char *lib = tu_path(bd, LIB_REL);
    if (file_exists(lib)) return lib;
    if (system("command -v npm >/dev/null 2>&1") != 0) {
        snprintf(G.why, sizeof G.why,
                 "skipped: npm unavailable: no npm on PATH (needed to fetch %s)", NPM_PKG);
        free(lib);
        return NULL;
    }
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s/npm-ggml' && cd '%s/npm-ggml' && "
             "{ command -v timeout >/dev/null 2>&1 && T='timeout 240' || T=''; "
             "$T npm install --prefix . " NPM_PKG
             " --no-save --ignore-scripts --no-audit --no-fund --fetch-retries=1 --loglevel=error"
             " >npm.log 2>&1; }",
             bd, bd);
    fprintf(stderr, "[ggml-crosscheck] installing %s into %s/npm-ggml (once)\n", NPM_PKG, bd);
    int rc = system(cmd);
    if (rc != 0 || !file_exists(lib)) {
        char logp[4096], tail[400] = "";
        snprintf(logp, sizeof logp, "%s/npm-ggml/npm.log", bd);
        char *log = tu_read_file(logp, NULL);
        if (log) {
            size_t n = strlen(log);
            snprintf(tail, sizeof tail, "%s", log + (n > 300 ? n - 300 : 0));
            for (char *p = tail; *p; p++)
                if (*p == '\n') *p = ' ';
            free(log);
        }
        snprintf(G.why, sizeof G.why,
                 "skipped: npm unavailable: 'npm install %s' failed (status %d): %s", NPM_PKG,
                 WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, tail);
        free(lib);
        return NULL;
    }
    return lib;
}

#define SYM(field, name)                                                                           \
    do {                                                                                           \
        void *s_ = dlsym(G.h, name);                                                               \
        if (!s_) {                                                                                 \
            snprintf(G.why, sizeof G.why, "skipped: %s has no symbol %s", lib, name);              \
            goto fail;                                                                             \
        }                                                                                          \
        memcpy(&G.field, &s_, sizeof s_);                                                          \
    } while (0)

static int group_setup(void **state) {
    (void)state;
    char *lib = find_lib();
    if (!lib) {
        fprintf(stderr, "[ggml-crosscheck] %s\n", G.why);
        return 0;
    }
    G.h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!G.h) {
        snprintf(G.why, sizeof G.why, "skipped: dlopen(%s) failed: %s", lib, dlerror());
        goto fail;
    }
    SYM(init_from_file, "gguf_init_from_file");
    SYM(gguf_free, "gguf_free");
    SYM(get_version, "gguf_get_version");
    SYM(get_alignment, "gguf_get_alignment");
    SYM(get_data_offset, "gguf_get_data_offset");
    SYM(get_n_kv, "gguf_get_n_kv");
    SYM(get_key, "gguf_get_key");
    SYM(get_kv_type, "gguf_get_kv_type");
    SYM(get_arr_type, "gguf_get_arr_type");
    SYM(get_arr_n, "gguf_get_arr_n");
    SYM(get_arr_data, "gguf_get_arr_data");
    SYM(get_arr_str, "gguf_get_arr_str");
    SYM(get_val_data, "gguf_get_val_data");
    SYM(get_val_str, "gguf_get_val_str");
    SYM(get_n_tensors, "gguf_get_n_tensors");
    SYM(get_tensor_name, "gguf_get_tensor_name");
    SYM(get_tensor_type, "gguf_get_tensor_type");
    SYM(get_tensor_offset, "gguf_get_tensor_offset");
    SYM(get_tensor_size, "gguf_get_tensor_size");
    SYM(type_size, "ggml_type_size");
    SYM(blck_size, "ggml_blck_size");
    SYM(type_name, "ggml_type_name");
    SYM(get_tensor, "ggml_get_tensor");
    SYM(nelements, "ggml_nelements");
    SYM(ggml_free, "ggml_free");
    SYM(log_set, "ggml_log_set");
    G.log_set(quiet_log, NULL);
    fprintf(stderr, "[ggml-crosscheck] reference reader: %s\n", lib);
    free(lib);
    return 0;
fail:
    fprintf(stderr, "[ggml-crosscheck] %s\n", G.why);
    G.h = NULL; /* the handle stays open: unloading C++ libraries under ASan is not worth it */
    free(lib);
    return 0;
}

#define NEED_GGML()                                                                                \
    do {                                                                                           \
        if (!G.h) {                                                                                \
            if (tu_in_ci()) fail_msg("CI=true: the ggml reference must run: %s", G.why);           \
            TU_SKIP("%s", G.why);                                                                  \
        }                                                                                          \
    } while (0)

/* ggml's view of a tensor's shape: ne[0..3] from its ggml_tensor (type, buffer, ne[4], ...). */
static void ggml_ne(const struct ggml_tensor *t, int64_t ne[4]) {
    memcpy(ne, (const char *)t + 16, 4 * sizeof(int64_t));
}

static size_t meta_scalar_size(int type) {
    return (unsigned)type <= TL_META_F64 ? tl_meta_type_size((tl_meta_type)type) : 0;
}

/* Our decoded scalar equals ggml's raw value bytes. */
static bool same_scalar(const tl_meta *m, const void *raw) {
    const uint8_t *p = raw;
    switch (m->type) {
    case TL_META_U8:
        return m->v.u == p[0];
    case TL_META_I8:
        return m->v.i == (int8_t)p[0];
    case TL_META_BOOL:
        return m->v.b == (p[0] != 0);
    case TL_META_U16: {
        uint16_t x;
        memcpy(&x, p, 2);
        return m->v.u == x;
    }
    case TL_META_I16: {
        int16_t x;
        memcpy(&x, p, 2);
        return m->v.i == x;
    }
    case TL_META_U32: {
        uint32_t x;
        memcpy(&x, p, 4);
        return m->v.u == x;
    }
    case TL_META_I32: {
        int32_t x;
        memcpy(&x, p, 4);
        return m->v.i == x;
    }
    case TL_META_F32: {
        float x;
        memcpy(&x, p, 4);
        return memcmp(&(double){(double)x}, &m->v.f, 8) == 0;
    }
    case TL_META_U64:
        return memcmp(&m->v.u, p, 8) == 0;
    case TL_META_I64:
        return memcmp(&m->v.i, p, 8) == 0;
    case TL_META_F64:
        return memcmp(&m->v.f, p, 8) == 0;
    default:
        return false;
    }
}

/* ggml's C string equals our (ptr, len) string, up to a NUL inside it (ggml hands out c_str()). */
static bool same_str(const char *c, const char *p, uint64_t len) {
    const char *nul = memchr(p, 0, (size_t)len);
    size_t n = nul ? (size_t)(nul - p) : (size_t)len;
    return strlen(c) == n && memcmp(c, p, n) == 0;
}

/* A disagreement: message into why, return false. */
#define DIFF(...)                                                                                  \
    do {                                                                                           \
        snprintf(why, why_len, __VA_ARGS__);                                                       \
        return false;                                                                              \
    } while (0)

static bool same_meta(const tl__fmt_file *f, const struct gguf_context *gc, char *why,
                      size_t why_len) {
    if ((int64_t)f->n_meta != G.get_n_kv(gc))
        DIFF("%zu metadata entries, ggml %" PRId64, f->n_meta, G.get_n_kv(gc));
    for (size_t i = 0; i < f->n_meta; i++) {
        const tl__fmt_meta *fm = &f->meta[i];
        const tl_meta *m = &fm->m;
        int64_t k = (int64_t)i;
        if (strcmp(m->key, G.get_key(gc, k)) != 0)
            DIFF("metadata %zu: key '%s', ggml '%s'", i, m->key, G.get_key(gc, k));
        if ((int)m->type != G.get_kv_type(gc, k))
            DIFF("'%s': type %d, ggml %d", m->key, (int)m->type, G.get_kv_type(gc, k));
        if (m->type == TL_META_STRING) {
            if (!same_str(G.get_val_str(gc, k), m->v.s.ptr, m->v.s.len))
                DIFF("'%s': string value differs from ggml's", m->key);
        } else if (m->type == TL_META_ARRAY) {
            if ((int)m->elem_type != G.get_arr_type(gc, k))
                DIFF("'%s': element type %d, ggml %d", m->key, (int)m->elem_type,
                     G.get_arr_type(gc, k));
            if (m->count != G.get_arr_n(gc, k) || m->depth != 1)
                DIFF("'%s': %" PRIu64 " elements (depth %u), ggml %zu", m->key, m->count, m->depth,
                     G.get_arr_n(gc, k));
            if (m->elem_type == TL_META_STRING) {
                for (uint64_t j = 0; j < m->count; j++) {
                    tl_meta e;
                    if (tl__fmt_meta_array_get(fm, j, &e) != TL_OK)
                        DIFF("'%s'[%" PRIu64 "]: %s", m->key, j, tl_last_error());
                    if (!same_str(G.get_arr_str(gc, k, (size_t)j), e.v.s.ptr, e.v.s.len))
                        DIFF("'%s'[%" PRIu64 "] differs from ggml's", m->key, j);
                }
            } else if (m->count) {
                size_t es = meta_scalar_size(m->elem_type);
                const uint8_t *gd = G.get_arr_data(gc, k);
                if (m->elem_type == TL_META_BOOL) {
                    /* ggml keeps bools as bools (0/1), the file may hold any non-zero byte */
                    for (uint64_t j = 0; j < m->count; j++)
                        if ((fm->data[j] != 0) != (gd[j] != 0))
                            DIFF("'%s'[%" PRIu64 "]: bool differs from ggml's", m->key, j);
                } else if (!es || memcmp(fm->data, gd, (size_t)m->count * es) != 0) {
                    DIFF("'%s': array data differs from ggml's", m->key);
                }
                for (uint64_t j = 0; j < m->count; j += 1 + m->count / 7) {
                    tl_meta e;
                    if (tl__fmt_meta_array_get(fm, j, &e) != TL_OK || !same_scalar(&e, gd + j * es))
                        DIFF("'%s'[%" PRIu64 "] differs from ggml's", m->key, j);
                }
            }
        } else if (!same_scalar(m, G.get_val_data(gc, k))) {
            DIFF("metadata '%s' (%s) differs from ggml's value", m->key,
                 tl_meta_type_name(m->type));
        }
    }
    return true;
}

/* Both readers accepted a file: do they describe it the same way? */
static bool same_file(const tl__fmt_file *f, const struct gguf_context *gc, struct ggml_context *ctx,
                      char *why, size_t why_len) {
    if ((uint32_t)f->version != G.get_version(gc))
        DIFF("version %d, ggml %u", f->version, G.get_version(gc));
    if (f->alignment != G.get_alignment(gc))
        DIFF("alignment %u, ggml %zu", f->alignment, G.get_alignment(gc));
    if (f->n_tensors > 0 || f->data_offset == G.get_data_offset(gc)) {
        if (f->data_offset != G.get_data_offset(gc))
            DIFF("data offset %" PRIu64 ", ggml %zu", f->data_offset, G.get_data_offset(gc));
    } else if (G.get_data_offset(gc) > f->data_offset ||
               f->data_offset - G.get_data_offset(gc) >= f->alignment) {
        /*
         * No tensors: this ggml reports the unpadded end of the header as the
         * data offset, gguf-py (the expected JSON files) and we the padded one.
         */
        DIFF("no tensors: data offset %" PRIu64 ", ggml %zu", f->data_offset,
             G.get_data_offset(gc));
    }
    if (!same_meta(f, gc, why, why_len)) return false;
    if ((int64_t)f->n_tensors != G.get_n_tensors(gc))
        DIFF("%zu tensors, ggml %" PRId64, f->n_tensors, G.get_n_tensors(gc));
    for (size_t i = 0; i < f->n_tensors; i++) {
        const tl__fmt_tensor *t = &f->tensors[i];
        int64_t k = (int64_t)i;
        if (strcmp(t->name, G.get_tensor_name(gc, k)) != 0)
            DIFF("tensor %zu is '%s', ggml says '%s'", i, t->name, G.get_tensor_name(gc, k));
        if ((int)t->dtype != G.get_tensor_type(gc, k))
            DIFF("'%s': type %s, ggml %s", t->name, tl_dtype_name(t->dtype),
                 G.type_name(G.get_tensor_type(gc, k)));
        uint64_t abs = (uint64_t)G.get_data_offset(gc) + G.get_tensor_offset(gc, k);
        if (t->offset != abs)
            DIFF("'%s': offset %" PRIu64 ", ggml %" PRIu64, t->name, t->offset, abs);
        if (t->nbytes != G.get_tensor_size(gc, k))
            DIFF("'%s': %" PRIu64 " bytes, ggml %zu", t->name, t->nbytes, G.get_tensor_size(gc, k));
        const struct ggml_tensor *gt = G.get_tensor(ctx, t->name);
        if (!gt) DIFF("'%s': not in ggml's context", t->name);
        int64_t ne[4];
        ggml_ne(gt, ne);
        if ((uint64_t)G.nelements(gt) != t->n_elements)
            DIFF("'%s': %" PRIu64 " elements, ggml %" PRId64, t->name, t->n_elements,
                 G.nelements(gt));
        for (uint32_t d = 0; d < 4; d++) {
            int64_t ours = d < t->n_dims ? t->shape[t->n_dims - 1 - d] : 1;
            if (ours != ne[d])
                DIFF("'%s': ne[%u] %" PRId64 ", ggml %" PRId64, t->name, d, ours, ne[d]);
        }
    }
    return true;
}

/* Parse path with both readers; both must accept it and agree. Returns the tensor count. */
static size_t compare_file(const char *path) {
    size_t len;
    char *img = tu_read_file(path, &len);
    assert_non_null(img);
    tl__fmt_file f;
    tl_status st = tl__gguf_parse((const uint8_t *)img, len, path, &f);
    if (st) fail_msg("ours rejects %s: %s", path, tl_last_error());
    ggml_log[0] = 0;
    struct ggml_context *ctx = NULL;
    struct gguf_init_params params = {true, &ctx};
    struct gguf_context *gc = G.init_from_file(path, params);
    if (!gc) fail_msg("ggml rejects %s: %s", path, ggml_log);
    assert_non_null(ctx);
    char why[1024];
    if (!same_file(&f, gc, ctx, why, sizeof why)) fail_msg("%s: %s", path, why);
    size_t n = f.n_tensors;
    G.ggml_free(ctx);
    G.gguf_free(gc);
    tl__fmt_file_free(&f);
    free(img);
    return n;
}

/* Both readers must reject this image. */
static void both_reject(const char *dir, const char *label, const uint8_t *img, size_t len) {
    char *path = tu_path(dir, label);
    tu_write_file(path, img, len);
    tl__fmt_file f;
    tl_status st = tl__gguf_parse(img, len, path, &f);
    if (st == TL_OK) {
        tl__fmt_file_free(&f);
        fail_msg("%s: ours accepts a file ggml should reject", label);
    }
    ggml_log[0] = 0;
    struct gguf_init_params params = {true, NULL};
    struct gguf_context *gc = G.init_from_file(path, params);
    if (gc) {
        G.gguf_free(gc);
        fail_msg("%s: ggml accepts it (ours: %s)", label, tl_last_error());
    }
    free(path);
}

/*
 * GGML_TYPE_COUNT of the loaded library. ggml_type_name & co. index their
 * table unchecked, but the GGUF reader checks type ids against the count:
 * the first id from 40 on that it refuses in a one-tensor file is the count.
 */
static int ggml_type_count(void) {
    static int count;
    if (count) return count;
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, "probe.gguf");
    for (count = TL_GGML_TYPE_COUNT; count < 256; count++) {
        gw_gguf *g = gw_new(3);
        int64_t ne[1] = {1 << 16};
        gw_tensor(g, "probe", (uint32_t)count, 1, ne);
        gw_set_no_data(g, true);
        assert_true(gw_write_file(g, path));
        gw_free(g);
        struct gguf_init_params params = {true, NULL};
        struct gguf_context *gc = G.init_from_file(path, params);
        if (!gc) break;
        G.gguf_free(gc);
    }
    free(path);
    tu_tmpdir_rm(dir);
    return count;
}

static void test_type_table(void **state) {
    (void)state;
    NEED_GGML();
    int known = 0;
    for (int t = 0; t < TL_GGML_TYPE_COUNT; t++) {
        const char *ours = tl_dtype_name((tl_dtype)t);
        if (!ours) {
            /* Removed ids: ggml keeps a slot with block size 0. */
            if (G.blck_size(t) != 0)
                fail_msg("type id %d: removed for tierload but ggml has %s (block %" PRId64 ")", t,
                         G.type_name(t), G.blck_size(t));
            continue;
        }
        known++;
        if (strcasecmp(ours, G.type_name(t)) != 0)
            fail_msg("type id %d: ours %s, ggml %s", t, ours, G.type_name(t));
        uint32_t bits = tl_dtype_block_bits((tl_dtype)t);
        if (bits % 8 != 0 || bits / 8 != G.type_size(t))
            fail_msg("%s: %u bits per block, ggml %zu bytes", ours, bits, G.type_size(t));
        if ((int64_t)tl_dtype_block_elems((tl_dtype)t) != G.blck_size(t))
            fail_msg("%s: %u elements per block, ggml %" PRId64, ours,
                     tl_dtype_block_elems((tl_dtype)t), G.blck_size(t));
    }
    assert_int_equal(known, 35);
    /* a ggml newer than tierload's table: say which types are missing */
    for (int t = TL_GGML_TYPE_COUNT; t < ggml_type_count(); t++)
        print_message("note: ggml knows type id %d (%s, %" PRId64 " elements in %zu bytes), "
                      "tierload does not\n",
                      t, G.type_name(t), G.blck_size(t), G.type_size(t));
}

static void test_testdata(void **state) {
    (void)state;
    NEED_GGML();
    const char *dir = tu_testdata("gguf");
    char *d = strdup(dir);
    DIR *dh = opendir(d);
    assert_non_null(dh);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(dh))) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 5, ".gguf") != 0) continue;
        char *p = tu_path(d, e->d_name);
        size_t nt = compare_file(p);
        print_message("agree: %s (%zu tensors)\n", e->d_name, nt);
        free(p);
        n++;
    }
    closedir(dh);
    free(d);
    assert_true(n >= 5);
}

/* Metadata of every value type, as a model file would have it. */
static void add_all_meta(gw_gguf *g) {
    gw_kv_str(g, "general.architecture", "llama");
    gw_kv_u8(g, "x.u8", 200);
    gw_kv_i8(g, "x.i8", -100);
    gw_kv_u16(g, "x.u16", 60000);
    gw_kv_i16(g, "x.i16", -30000);
    gw_kv_u32(g, "x.u32", 4000000000u);
    gw_kv_i32(g, "x.i32", -2000000000);
    gw_kv_f32(g, "x.f32", 1.5f);
    gw_kv_bool(g, "x.bool", true);
    gw_kv_str(g, "x.str", "h\xc3\xa9llo");
    gw_kv_str(g, "x.empty", "");
    gw_kv_u64(g, "x.u64", 0xfedcba9876543210ull);
    gw_kv_i64(g, "x.i64", -5000000000ll);
    gw_kv_f64(g, "x.f64", -2.25e300);
    const uint8_t u8s[] = {1, 2, 255};
    const int8_t i8s[] = {-1, 0, 1};
    const uint16_t u16s[] = {1, 65535};
    const int16_t i16s[] = {-32768, 32767};
    const uint32_t u32s[] = {7, 8, 9, 10};
    const int32_t i32s[] = {-7, 7};
    const float f32s[] = {0.5f, -0.25f, 3.0f};
    const uint8_t bools[] = {1, 0, 1, 1};
    const uint64_t u64s[] = {1ull << 63, 3};
    const int64_t i64s[] = {-(1ll << 62), 5};
    const double f64s[] = {1e-300, 2.0};
    gw_kv_array(g, "a.u8", TL_META_U8, 3, u8s);
    gw_kv_array(g, "a.i8", TL_META_I8, 3, i8s);
    gw_kv_array(g, "a.u16", TL_META_U16, 2, u16s);
    gw_kv_array(g, "a.i16", TL_META_I16, 2, i16s);
    gw_kv_array(g, "a.u32", TL_META_U32, 4, u32s);
    gw_kv_array(g, "a.i32", TL_META_I32, 2, i32s);
    gw_kv_array(g, "a.f32", TL_META_F32, 3, f32s);
    gw_kv_array(g, "a.bool", TL_META_BOOL, 4, bools);
    gw_kv_array(g, "a.u64", TL_META_U64, 2, u64s);
    gw_kv_array(g, "a.i64", TL_META_I64, 2, i64s);
    gw_kv_array(g, "a.f64", TL_META_F64, 2, f64s);
    gw_kv_array(g, "a.empty", TL_META_U32, 0, NULL);
    const char *toks[] = {"<s>", "</s>", "", "\xe2\x96\x81the", "a b"};
    gw_kv_str_array(g, "tokenizer.ggml.tokens", toks, 5);
}

/* One tensor per ggml type tierload knows, shapes whole blocks. */
static size_t add_all_types(gw_gguf *g) {
    size_t n = 0;
    for (int t = 0; t < TL_GGML_TYPE_COUNT; t++) {
        if (!tl_dtype_name((tl_dtype)t)) continue;
        char name[64];
        snprintf(name, sizeof name, "blk.%d.%s.weight", t, tl_dtype_name((tl_dtype)t));
        int64_t ne[3] = {(int64_t)tl_dtype_block_elems((tl_dtype)t) * (1 + t % 3), 1 + t % 4, 2};
        gw_tensor(g, name, (uint32_t)t, 1 + (uint32_t)(t % 3), ne);
        n++;
    }
    return n;
}

static void write_and_compare(gw_gguf *g, const char *dir, const char *name,
                              size_t expect_tensors) {
    char *path = tu_path(dir, name);
    size_t len;
    uint8_t *img = gw_build(g, &len);
    tu_write_file(path, img, len);
    assert_int_equal(compare_file(path), expect_tensors);
    /* and the writer put the data where both readers say it is */
    tl__fmt_file f;
    assert_int_equal(tl__gguf_parse(img, len, path, &f), TL_OK);
    assert_int_equal(f.data_offset, gw_data_offset(g));
    for (size_t i = 0; i < f.n_tensors; i++) {
        assert_int_equal(f.tensors[i].offset, gw_tensor_abs_offset(g, i));
        assert_int_equal(f.tensors[i].nbytes, gw_tensor_size(g, i));
        if (f.tensors[i].nbytes) assert_int_equal(img[f.tensors[i].offset], gw_pattern_byte(i, 0));
    }
    /* the public catalog says the same as the parser */
    tl_model *m;
    const char *paths[] = {path};
    if (tl_model_open(paths, 1, NULL, &m)) fail_msg("tl_model_open %s: %s", path, tl_last_error());
    assert_int_equal(tl_model_tensor_count(m), f.n_tensors);
    assert_int_equal(tl_model_file(m, 0)->data_offset, f.data_offset);
    assert_int_equal(tl_model_file(m, 0)->alignment, f.alignment);
    for (size_t i = 0; i < f.n_tensors; i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        assert_string_equal(t->name, f.tensors[i].name);
        assert_int_equal(t->dtype, f.tensors[i].dtype);
        assert_int_equal(t->offset, f.tensors[i].offset);
        assert_int_equal(t->nbytes, f.tensors[i].nbytes);
        assert_int_equal(t->n_dims, f.tensors[i].n_dims);
        assert_memory_equal(t->shape, f.tensors[i].shape, t->n_dims * sizeof t->shape[0]);
    }
    tl_model_close(m);
    tl__fmt_file_free(&f);
    free(img);
    free(path);
}

static void test_all_types_v3(void **state) {
    (void)state;
    NEED_GGML();
    char *dir = tu_tmpdir();
    gw_gguf *g = gw_new(3);
    add_all_meta(g);
    size_t n = add_all_types(g);
    assert_int_equal(n, 35);
    write_and_compare(g, dir, "all-types-v3.gguf", n);
    gw_free(g);
    tu_tmpdir_rm(dir);
}

static void test_all_types_v2(void **state) {
    (void)state;
    NEED_GGML();
    char *dir = tu_tmpdir();
    gw_gguf *g = gw_new(2);
    add_all_meta(g);
    size_t n = add_all_types(g);
    write_and_compare(g, dir, "all-types-v2.gguf", n);
    gw_free(g);
    tu_tmpdir_rm(dir);
}

static void test_alignments(void **state) {
    (void)state;
    NEED_GGML();
    char *dir = tu_tmpdir();
    const uint32_t aligns[] = {1, 2, 8, 16, 64, 256, 4096};
    for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
        gw_gguf *g = gw_new(3);
        gw_kv_str(g, "general.name", "odd sizes");
        gw_kv_u32(g, "general.alignment", aligns[a]);
        /* sizes that are not multiples of any alignment, so padding shows */
        int64_t ne3[1] = {3}, ne5[2] = {5, 1}, ne7[1] = {7}, q[2] = {32, 3};
        gw_tensor(g, "a", TL_DTYPE_F32, 1, ne3);
        gw_tensor(g, "b", TL_DTYPE_I8, 2, ne5);
        gw_tensor(g, "c", TL_DTYPE_F16, 1, ne7);
        gw_tensor(g, "d", TL_DTYPE_Q8_0, 2, q);
        gw_tensor(g, "e", TL_DTYPE_MXFP4, 2, q);
        char name[64];
        snprintf(name, sizeof name, "align-%u.gguf", aligns[a]);
        write_and_compare(g, dir, name, 5);
        gw_free(g);
    }
    tu_tmpdir_rm(dir);
}

static void test_no_tensors(void **state) {
    (void)state;
    NEED_GGML();
    char *dir = tu_tmpdir();
    gw_gguf *g = gw_new(3);
    add_all_meta(g);
    write_and_compare(g, dir, "meta-only.gguf", 0);
    gw_free(g);
    g = gw_new(3);
    write_and_compare(g, dir, "empty.gguf", 0);
    gw_free(g);
    tu_tmpdir_rm(dir);
}

/* A small valid file with knobs applied by the caller. */
static gw_gguf *small(void) {
    gw_gguf *g = gw_new(3);
    gw_kv_str(g, "general.architecture", "llama");
    int64_t ne[2] = {64, 2};
    gw_tensor(g, "w", TL_DTYPE_Q4_0, 2, ne);
    gw_tensor(g, "b", TL_DTYPE_F32, 1, ne);
    return g;
}

static void test_both_reject(void **state) {
    (void)state;
    NEED_GGML();
    char *dir = tu_tmpdir();
    size_t len;
    uint8_t *img;
    gw_gguf *g;

    g = small();
    gw_set_magic(g, "GGUX");
    img = gw_build(g, &len);
    both_reject(dir, "bad-magic", img, len);
    free(img);
    gw_free(g);

    g = small();
    img = gw_build(g, &len);
    /* truncated anywhere inside the header and tensor infos */
    for (size_t cut = 0; cut < gw_data_offset(g) - 16; cut += 7) {
        char label[64];
        snprintf(label, sizeof label, "cut-%zu", cut);
        both_reject(dir, label, img, cut);
    }
    free(img);
    gw_free(g);

    const uint32_t bad_versions[] = {0, 1, 4, 0x03000000u};
    for (size_t i = 0; i < 4; i++) {
        g = gw_new(bad_versions[i]);
        int64_t ne[1] = {8};
        gw_tensor(g, "t", TL_DTYPE_F32, 1, ne);
        img = gw_build(g, &len);
        char label[64];
        snprintf(label, sizeof label, "version-%u", bad_versions[i]);
        both_reject(dir, label, img, len);
        free(img);
        gw_free(g);
    }

    const uint32_t bad_aligns[] = {0, 3, 48, 100};
    for (size_t i = 0; i < 4; i++) {
        g = small();
        gw_kv_u32(g, "general.alignment", bad_aligns[i]);
        img = gw_build(g, &len);
        char label[64];
        snprintf(label, sizeof label, "alignment-%u", bad_aligns[i]);
        both_reject(dir, label, img, len);
        free(img);
        gw_free(g);
    }

    g = small();
    gw_tensor_offset(g, 1, 8); /* not a multiple of 32 */
    img = gw_build(g, &len);
    both_reject(dir, "misaligned-offset", img, len);
    free(img);
    gw_free(g);

    g = small();
    int64_t ne[2] = {64, 2};
    gw_tensor(g, "w", TL_DTYPE_F16, 2, ne);
    img = gw_build(g, &len);
    both_reject(dir, "duplicate-tensor", img, len);
    free(img);
    gw_free(g);

    g = small();
    gw_kv_str(g, "general.architecture", "again");
    img = gw_build(g, &len);
    both_reject(dir, "duplicate-key", img, len);
    free(img);
    gw_free(g);

    g = small();
    int64_t odd[2] = {48, 2};
    gw_tensor(g, "q", TL_DTYPE_Q4_K, 2, odd); /* row not a whole number of 256-blocks */
    gw_tensor_nbytes(g, 2, 4096);
    img = gw_build(g, &len);
    both_reject(dir, "partial-block", img, len);
    free(img);
    gw_free(g);

    /* removed ids, the first id past ggml's own table, and far out */
    const uint32_t bad_types[] = {4, 31, (uint32_t)ggml_type_count(), 200, 0xffffffffu};
    for (size_t i = 0; i < 5; i++) {
        g = small();
        int64_t ne1[1] = {256};
        gw_tensor(g, "u", bad_types[i], 1, ne1);
        gw_tensor_nbytes(g, 2, 1024);
        img = gw_build(g, &len);
        char label[64];
        snprintf(label, sizeof label, "type-%u", bad_types[i]);
        both_reject(dir, label, img, len);
        free(img);
        gw_free(g);
    }

    g = small();
    int64_t ne5[5] = {2, 2, 2, 2, 2};
    gw_tensor(g, "five", TL_DTYPE_F32, 5, ne5);
    img = gw_build(g, &len);
    both_reject(dir, "five-dims", img, len);
    free(img);
    gw_free(g);

    g = small();
    gw_set_counts(g, 1ull << 40, 1);
    img = gw_build(g, &len);
    both_reject(dir, "huge-tensor-count", img, len);
    free(img);
    gw_free(g);

    g = small();
    gw_set_counts(g, 2, 1ull << 40);
    img = gw_build(g, &len);
    both_reject(dir, "huge-kv-count", img, len);
    free(img);
    gw_free(g);

    g = small();
    gw_kv_raw(g, "bad.type", 13, "\0\0\0\0", 4);
    img = gw_build(g, &len);
    both_reject(dir, "unknown-kv-type", img, len);
    free(img);
    gw_free(g);

    tu_tmpdir_rm(dir);
}

/* Where the readers differ by design: nested arrays (ggml refuses them, GGUF allows them). */
static void test_nested_arrays(void **state) {
    (void)state;
    NEED_GGML();
    char *dir = tu_tmpdir();
    gw_gguf *g = small();
    gw_kv_nested_u32(g, "x.nested", 3);
    size_t len;
    uint8_t *img = gw_build(g, &len);
    char *path = tu_path(dir, "nested.gguf");
    tu_write_file(path, img, len);
    tl__fmt_file f;
    if (tl__gguf_parse(img, len, path, &f)) fail_msg("ours: %s", tl_last_error());
    assert_int_equal(f.n_meta, 2);
    assert_int_equal(f.meta[1].m.type, TL_META_ARRAY);
    assert_int_equal(f.meta[1].m.elem_type, TL_META_ARRAY);
    assert_int_equal(f.meta[1].m.count, 3);
    assert_int_equal(f.meta[1].m.depth, 2);
    assert_int_equal(f.tensors[1].offset, gw_tensor_abs_offset(g, 1));
    tl__fmt_file_free(&f);
    struct gguf_init_params params = {true, NULL};
    struct gguf_context *gc = G.init_from_file(path, params);
    print_message("note: ggml %s nested arrays\n", gc ? "accepts" : "rejects");
    if (gc) G.gguf_free(gc);
    free(img);
    free(path);
    gw_free(g);
    tu_tmpdir_rm(dir);
}

/* xorshift64: the mutations are the same on every run. */
static uint64_t rng(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* 1-4 header mutations: random bytes, bit flips, interesting bytes and 64-bit values. */
static void mutate(uint8_t *img, size_t hdr, uint64_t *rs) {
    static const uint8_t bytes[] = {0, 1, 2, 3, 4, 5, 8, 9, 12, 13, 0x20, 0x7f, 0x80, 0xff};
    static const uint64_t words[] = {
        0,  1,   2,    3,         4,           5,
        8,  12,  32,   256,       0xffffffffu, 1ull << 32,
        64, 100, 4096, INT64_MAX, UINT64_MAX,  (uint64_t)INT64_MAX + 1};
    int n = 1 + (int)(rng(rs) % 4);
    for (int k = 0; k < n; k++) {
        size_t at = (size_t)(rng(rs) % hdr);
        switch (rng(rs) % 4) {
        case 0:
            img[at] = (uint8_t)rng(rs);
            break;
        case 1:
            img[at] ^= (uint8_t)(1u << (rng(rs) % 8));
            break;
        case 2:
            img[at] = bytes[rng(rs) % sizeof bytes];
            break;
        default:
            if (at + 8 <= hdr) {
                uint64_t v = words[rng(rs) % (sizeof words / sizeof words[0])];
                memcpy(img + at, &v, 8);
            }
        }
    }
}

enum { M_AGREE = 10, M_BOTH_REJECT, M_OURS_ONLY, M_GGML_ONLY_OK, M_DIFF = 42, M_GGML_ONLY_BAD };

/*
 * In a child process (ggml may abort on hostile input): both readers on the
 * file; exit with the outcome. Ours already ran on it in the parent, so a
 * sanitizer report here can only come from ggml.
 */
static void child_compare(const char *path, const uint8_t *img, size_t len, const char *why_path) {
    char why[1024] = "";
    tl__fmt_file f;
    tl_status st = tl__gguf_parse(img, len, path, &f);
    struct ggml_context *ctx = NULL;
    struct gguf_init_params params = {true, &ctx};
    ggml_log[0] = 0;
    struct gguf_context *gc = G.init_from_file(path, params);
    int code;
    if (!st && gc) {
        code = same_file(&f, gc, ctx, why, sizeof why) ? M_AGREE : M_DIFF;
    } else if (st && !gc) {
        code = M_BOTH_REJECT;
    } else if (!st) {
        code = M_OURS_ONLY; /* ours is laxer by design: gaps between tensors, nested arrays */
        snprintf(why, sizeof why, "only ours accepts; ggml: %.900s", ggml_log);
    } else {
        /* ggml accepts what we reject: fine when ggml skipped a check we make */
        bool in_file = true;
        for (int64_t i = 0; i < G.get_n_tensors(gc); i++) {
            uint64_t end = (uint64_t)G.get_data_offset(gc) + G.get_tensor_offset(gc, i) +
                           G.get_tensor_size(gc, i);
            if (end > len || end < (uint64_t)G.get_data_offset(gc)) in_file = false;
        }
        const char *msg = tl_last_error();
        unsigned id;
        const char *p = strstr(msg, "unknown ggml type id ");
        bool new_type = p && sscanf(p, "unknown ggml type id %u", &id) == 1 &&
                        id >= TL_GGML_TYPE_COUNT && (int)id < ggml_type_count();
        if (!in_file || strstr(msg, "NUL") || new_type) {
            code = M_GGML_ONLY_OK;
            snprintf(why, sizeof why, "only ggml accepts (%s); ours: %s",
                     in_file ? "known difference" : "data outside the file", msg);
        } else {
            code = M_GGML_ONLY_BAD;
            snprintf(why, sizeof why, "ggml accepts, ours rejects: %s", msg);
        }
    }
    if (why[0]) {
        FILE *w = fopen(why_path, "w");
        if (w) {
            fputs(why, w);
            fclose(w);
        }
    }
    _exit(code);
}

/*
 * Mutated headers: wherever both readers accept a file they must describe it
 * the same way, and ggml must accept nothing we reject for a reason ggml
 * also checks. 600 files, deterministic.
 */
static void test_mutations(void **state) {
    (void)state;
    NEED_GGML();
    (void)ggml_type_count(); /* computed before forking */
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, "m.gguf"), *why_path = tu_path(dir, "why.txt");
    int counts[64] = {0}, died = 0, total = 0;
    /* TL_GGML_MUTANTS=N: N mutants per base file (default 300), and say why readers differ */
    const char *env = getenv("TL_GGML_MUTANTS");
    int per_base = env ? atoi(env) : 300;
    bool verbose = env != NULL;
    for (int base = 0; base < 2; base++) {
        gw_gguf *g = gw_new(base ? 2 : 3);
        if (base == 0) {
            add_all_meta(g);
        } else {
            gw_kv_u32(g, "general.alignment", 64);
            gw_kv_str(g, "general.name", "m");
        }
        int64_t ne[2] = {256, 2}, ne1[1] = {5};
        gw_tensor(g, "token_embd.weight", TL_DTYPE_Q4_K, 2, ne);
        gw_tensor(g, "blk.0.attn_norm.weight", TL_DTYPE_F32, 1, ne1);
        gw_tensor(g, "blk.0.ffn_up.weight", TL_DTYPE_Q8_0, 2, ne);
        gw_tensor(g, "output.weight", TL_DTYPE_F16, 2, ne);
        size_t len;
        uint8_t *orig = gw_build(g, &len);
        size_t hdr = (size_t)gw_data_offset(g);
        gw_free(g);
        uint8_t *img = malloc(len);
        uint64_t rs = 0x9e3779b97f4a7c15ull + (uint64_t)base;
        for (int i = 0; i < per_base; i++, total++) {
            memcpy(img, orig, len);
            mutate(img, hdr, &rs);
            size_t n = (rng(&rs) % 8 == 0) ? (size_t)(rng(&rs) % len) : len;
            tu_write_file(path, img, n);
            /* ours first, in this process: any crash of ours fails the test here */
            tl__fmt_file f;
            if (tl__gguf_parse(img, n, path, &f) == TL_OK) tl__fmt_file_free(&f);
            remove(why_path);
            fflush(NULL);
            pid_t pid = fork();
            assert_true(pid >= 0);
            if (pid == 0) child_compare(path, img, n, why_path);
            int ws;
            assert_int_equal(waitpid(pid, &ws, 0), pid);
            int code = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
            if (code == M_DIFF || code == M_GGML_ONLY_BAD) {
                char *why = tu_read_file(why_path, NULL);
                char keep[4096];
                snprintf(keep, sizeof keep, "%s/mutant-%d-%d.gguf", dir, base, i);
                rename(path, keep);
                fail_msg("mutant %d/%d: %s (file kept: %s)", base, i, why ? why : "?", keep);
            }
            if (verbose && (code == M_OURS_ONLY || code == M_GGML_ONLY_OK)) {
                char *why = tu_read_file(why_path, NULL);
                print_message("mutant %d/%d: %s\n", base, i, why ? why : "?");
                free(why);
            }
            if (code >= M_AGREE && code <= M_GGML_ONLY_OK)
                counts[code]++;
            else
                died++;
        }
        free(img);
        free(orig);
    }
    print_message("%d mutants: %d agree, %d both reject, %d only ours accepts, %d only ggml "
                  "accepts (data outside the file / known), %d ggml aborted\n",
                  total, counts[M_AGREE], counts[M_BOTH_REJECT], counts[M_OURS_ONLY],
                  counts[M_GGML_ONLY_OK], died);
    assert_true(counts[M_AGREE] > 0 && counts[M_BOTH_REJECT] > 0);
    free(path);
    free(why_path);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_table),   cmocka_unit_test(test_testdata),
        cmocka_unit_test(test_all_types_v3), cmocka_unit_test(test_all_types_v2),
        cmocka_unit_test(test_alignments),   cmocka_unit_test(test_no_tensors),
        cmocka_unit_test(test_both_reject),  cmocka_unit_test(test_nested_arrays),
        cmocka_unit_test(test_mutations),
    };
    return tu_exit(cmocka_run_group_tests(tests, group_setup, NULL));
}
