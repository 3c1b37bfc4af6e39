/*
 * discover.c — from user paths to model files.
 *
 * A path is one of:
 *   - a model file (GGUF or safetensors, told apart later by their bytes);
 *   - a shard index "*.safetensors.index.json": its weight_map names the
 *     shards, which must stay inside the index's folder (no absolute paths,
 *     no ".."); every missing shard is reported at once;
 *   - a diffusers folder (model_index.json): each component subfolder with
 *     weights (unet/, transformer/, vae/, text_encoder_N/, controlnet/, ...)
 *     becomes files whose tensors get "<subfolder>." as prefix, which the
 *     component rules in names.c then recognise;
 *   - a folder with exactly one shard index, or else every .gguf and
 *     .safetensors file in it (sorted by name).
 *
 * What an index or model_index.json names must resolve (realpath, symlinks
 * followed) inside the model's folder: the folder holding the index (or the
 * diffusers folder), or the folder the index file itself resolves into — the
 * second is how the Hugging Face cache lays models out (snapshot files are
 * symlinks into a blobs/ folder). Shards must be regular files. Discovery
 * stays linear in the number of index entries (hash map, sorts).
 */
#include "model/discover.h"

#include "core/error.h"
#include "core/strmap.h"
#include "os/os.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INDEX_MAX_BYTES (64ull << 20)

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = tl__os_malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static char *dirname_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return tl__os_strdup(".");
    if (slash == path) return tl__os_strdup("/");
    return tl__os_strndup(path, (size_t)(slash - path));
}

static char *concat(const char *a, const char *b) {
    size_t n = (a ? strlen(a) : 0) + (b ? strlen(b) : 0) + 1;
    char *p = tl__os_malloc(n);
    if (p) snprintf(p, n, "%s%s", a ? a : "", b ? b : "");
    return p;
}

static tl_status push_file(tl__disc *d, const char *path, const char *prefix) {
    if (d->n_files == d->cap_files) {
        size_t cap = d->cap_files ? d->cap_files * 2 : 8;
        tl__disc_file *nf = tl__os_realloc(d->files, cap * sizeof *nf);
        if (!nf) return tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
        d->files = nf;
        d->cap_files = cap;
    }
    tl__disc_file *f = &d->files[d->n_files];
    memset(f, 0, sizeof *f);
    f->path = tl__os_strdup(path);
    f->prefix = prefix && *prefix ? tl__os_strdup(prefix) : NULL;
    if (!f->path || (prefix && *prefix && !f->prefix)) {
        free(f->path);
        free(f->prefix);
        return tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
    }
    d->n_files++;
    return TL_OK;
}

void tl__disc_free(tl__disc *d) {
    for (size_t i = 0; i < d->n_files; i++) {
        free(d->files[i].path);
        free(d->files[i].prefix);
        free(d->files[i].inside[0]);
        free(d->files[i].inside[1]);
        free(d->files[i].owner);
    }
    for (size_t i = 0; i < d->n_claims; i++)
        free(d->claims[i].name);
    free(d->files);
    free(d->claims);
    memset(d, 0, sizeof *d);
}

static bool shard_name_ok(const char *s) {
    if (!*s || s[0] == '/' || strchr(s, '\\')) return false;
    const char *p = s;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 || (n == 2 && !strncmp(p, "..", 2))) return false;
        if (!slash) return true;
        p = slash + 1;
    }
}

/*
 * The model's folder, resolved: `dir` (the folder as named) and `anchor_dir`
 * (the folder the index or model_index.json resolves into).
 */
typedef struct bound {
    char *dir;
    char *anchor_dir;
} bound;

static void bound_free(bound *b) {
    free(b->dir);
    free(b->anchor_dir);
    b->dir = b->anchor_dir = NULL;
}

static tl_status bound_init(bound *b, const char *dir, const char *anchor) {
    b->dir = b->anchor_dir = NULL;
    char *real_anchor = NULL;
    int e = tl__os_realpath(dir, &b->dir);
    if (!e) e = tl__os_realpath(anchor, &real_anchor);
    if (!e) {
        b->anchor_dir = dirname_of(real_anchor);
        if (!b->anchor_dir) e = ENOMEM;
    }
    free(real_anchor);
    if (e) {
        bound_free(b);
        return tl__err_errno(e, "%s: cannot resolve path", anchor);
    }
    return TL_OK;
}

static bool under(const char *real, const char *dir) {
    size_t n = strlen(dir);
    if (strncmp(real, dir, n) != 0) return false;
    return (n > 0 && dir[n - 1] == '/') || real[n] == '/';
}

/*
 * Refuse path (named by entry `what` of `owner`) when it resolves outside the
 * model's folder.
 */
static tl_status check_inside(const bound *b, const char *path, const char *owner,
                              const char *what) {
    char *real;
    int e = tl__os_realpath(path, &real);
    if (e)
        return tl__err_errno(e, "%s: %s: cannot resolve path", owner, what);
    bool ok = under(real, b->dir) || under(real, b->anchor_dir);
    tl_status st = ok ? TL_OK
                      : tl__err(TL_ERR_FORMAT,
                               "%s: %s resolves to %s, outside the model's folder %s (a symlink "
                               "out of the folder); refused",
                               owner, what, real, b->dir);
    free(real);
    return st;
}

/* Remember that file f must lie inside b when it is opened (checked on its descriptor). */
static tl_status confine(tl__disc_file *f, const bound *b, const char *owner) {
    f->inside[0] = tl__os_strdup(b->dir);
    f->inside[1] = tl__os_strdup(b->anchor_dir);
    f->owner = tl__os_strdup(owner);
    if (!f->inside[0] || !f->inside[1] || !f->owner)
        return tl__err(TL_ERR_NOMEM, "%s: out of memory", owner);
    return TL_OK;
}

tl_status tl__disc_check_opened(const tl__disc_file *f, int fd) {
    if (!f->owner) return TL_OK;
    char *real = NULL;
    int e = tl__os_fd_realpath(fd, f->path, &real);
    if (e == TL_OS_EOTHER)
        return tl__err(TL_ERR_CHANGED,
                       "%s: %s: the file opened is no longer the one its path names (replaced "
                       "while opening); refused",
                       f->owner, f->path);
    if (e) return tl__err_errno(e, "%s: %s: cannot resolve path", f->owner, f->path);
    bool ok = under(real, f->inside[0]) || under(real, f->inside[1]);
    tl_status st = ok ? TL_OK
                      : tl__err(TL_ERR_FORMAT,
                                "%s: %s resolves to %s, outside the model's folder %s (a symlink "
                                "out of the folder); refused",
                                f->owner, f->path, real, f->inside[0]);
    free(real);
    return st;
}

tl_status tl__disc_parse_index(const char *json, size_t len, const char *index_path,
                              tl_status (*cb)(void *ctx, const char *tensor, const char *shard),
                              void *ctx) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return tl__err(TL_ERR_FORMAT, "%s: shard index is not valid JSON", index_path);
    tl_status st = TL_OK;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(wm))
        st = tl__err(TL_ERR_FORMAT, "%s: shard index has no \"weight_map\" object", index_path);
    const cJSON *e;
    if (!st) {
        cJSON_ArrayForEach(e, wm) {
            if (!cJSON_IsString(e)) {
                st = tl__err(TL_ERR_FORMAT, "%s: weight_map entry '%s' is not a string", index_path,
                            e->string);
                break;
            }
            if (!shard_name_ok(e->valuestring)) {
                st = tl__err(
                    TL_ERR_FORMAT,
                    "%s: weight_map entry '%s' names shard '%s', which leaves the index's folder",
                    index_path, e->string, e->valuestring);
                break;
            }
            if ((st = cb(ctx, e->string, e->valuestring))) break;
        }
        if (!st && !wm->child)
            st = tl__err(TL_ERR_FORMAT, "%s: shard index's weight_map is empty", index_path);
    }
    cJSON_Delete(root);
    return st;
}

typedef struct index_ctx {
    tl__disc *d;
    const char *dir;
    const char *prefix;
    const char *index_path;
    tl__strmap by_path; /* shard path -> file index (keys: d->files[i].path) */
} index_ctx;

static tl_status index_claim(void *vctx, const char *tensor, const char *shard) {
    index_ctx *ctx = vctx;
    tl__disc *d = ctx->d;
    size_t fi;
    char *path = join(ctx->dir, shard);
    if (!path) return tl__err(TL_ERR_NOMEM, "%s: out of memory", ctx->index_path);
    tl_status st = TL_OK;
    if (!tl__strmap_get(&ctx->by_path, path, &fi)) {
        fi = d->n_files;
        st = push_file(d, path, ctx->prefix);
        if (!st && !tl__strmap_put(&ctx->by_path, d->files[fi].path, fi))
            st = tl__err(TL_ERR_NOMEM, "%s: out of memory", ctx->index_path);
    }
    free(path);
    if (st) return st;
    if (d->n_claims == d->cap_claims) {
        size_t cap = d->cap_claims ? d->cap_claims * 2 : 64;
        tl__disc_claim *nc = tl__os_realloc(d->claims, cap * sizeof *nc);
        if (!nc) return tl__err(TL_ERR_NOMEM, "%s: out of memory", ctx->index_path);
        d->claims = nc;
        d->cap_claims = cap;
    }
    char *name = concat(ctx->prefix, tensor);
    if (!name) return tl__err(TL_ERR_NOMEM, "%s: out of memory", ctx->index_path);
    d->claims[d->n_claims++] = (tl__disc_claim){name, fi};
    return TL_OK;
}

static _Thread_local const tl__disc_file *sort_files;

static int cmp_file_idx(const void *a, const void *b) {
    return strcmp(sort_files[*(const size_t *)a].path, sort_files[*(const size_t *)b].path);
}

/* Shards in name order (model-00001-of-00003 first); claims follow their file. */
static tl_status sort_shards(tl__disc *d, size_t first, size_t first_claim,
                             const char *index_path) {
    size_t n = d->n_files - first;
    size_t *order = tl__os_malloc((n ? n : 1) * sizeof *order);
    size_t *old_to_new = tl__os_malloc((n ? n : 1) * sizeof *old_to_new);
    tl__disc_file *copy = tl__os_malloc((n ? n : 1) * sizeof *copy);
    if (!order || !old_to_new || !copy) {
        free(order);
        free(old_to_new);
        free(copy);
        return tl__err(TL_ERR_NOMEM, "%s: out of memory", index_path);
    }
    memcpy(copy, d->files + first, n * sizeof *copy);
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    sort_files = copy;
    qsort(order, n, sizeof *order, cmp_file_idx);
    for (size_t k = 0; k < n; k++) {
        d->files[first + k] = copy[order[k]];
        old_to_new[order[k]] = first + k;
    }
    for (size_t c = first_claim; c < d->n_claims; c++)
        d->claims[c].file = old_to_new[d->claims[c].file - first];
    free(order);
    free(old_to_new);
    free(copy);
    return TL_OK;
}

/*
 * Every shard of an index: report all missing ones at once; refuse one that
 * is not a regular file or that resolves outside the model's folder.
 */
static tl_status check_shards(const tl__disc *d, size_t first, const char *dir,
                              const char *index_path) {
    bound b;
    tl_status st = bound_init(&b, dir, index_path);
    if (st) return st;
    char missing[768] = "";
    size_t n_missing = 0, dlen = strlen(dir);
    for (size_t i = first; i < d->n_files && !st; i++) {
        const char *path = d->files[i].path;
        const char *rel = path + dlen + 1; /* the shard as the index names it */
        tl__os_kind k = tl__os_kind_of(path);
        if (k == TL_OS_MISSING) {
            if (n_missing++ < 8) {
                size_t at = strlen(missing);
                snprintf(missing + at, sizeof missing - at, "%s%s", at ? ", " : "", rel);
            }
        } else if (k != TL_OS_REGULAR) {
            const char *tensor = "?";
            for (size_t c = 0; c < d->n_claims; c++)
                if (d->claims[c].file == i) {
                    tensor = d->claims[c].name;
                    break;
                }
            st = tl__err(TL_ERR_FORMAT,
                        "%s: weight_map entry '%s' names shard '%s', which is %s, not a file",
                        index_path, tensor, rel, tl__os_kind_name(k));
        } else {
            char what[64 + 32];
            snprintf(what, sizeof what, "shard '%.64s%s'", rel, strlen(rel) > 64 ? "..." : "");
            st = check_inside(&b, path, index_path, what);
            if (!st) st = confine(&d->files[i], &b, index_path);
        }
    }
    bound_free(&b);
    if (!st && n_missing)
        st = tl__err(TL_ERR_NOT_FOUND, "%s: %zu shard%s missing: %s%s", index_path, n_missing,
                    n_missing > 1 ? "s" : "", missing, n_missing > 8 ? ", ..." : "");
    return st;
}

/* Why an index or model_index.json (`what`) could not be read. */
static tl_status read_error(const char *path, const char *what, int e) {
    if (e == EFBIG)
        return tl__err(TL_ERR_FORMAT, "%s: %s larger than %llu bytes", path, what,
                      (unsigned long long)INDEX_MAX_BYTES);
    if (e == TL_OS_ENOTREG || e == EISDIR)
        return tl__err(TL_ERR_INVALID_ARG, "%s: %s is %s, not a regular file; refused", path, what,
                      tl__os_kind_name(tl__os_kind_of(path)));
    if (e == TL_OS_ENOSIZE)
        return tl__err(TL_ERR_INVALID_ARG,
                      "%s: %s is not a regular file with a size (a pseudo-file); refused", path,
                      what);
    return tl__err_errno(e, "%s", path);
}

static tl_status add_index(tl__disc *d, const char *index_path, const char *prefix) {
    char *json;
    size_t len;
    int e = tl__os_read_small(index_path, INDEX_MAX_BYTES, &json, &len);
    if (e) return read_error(index_path, "shard index", e);
    char *dir = dirname_of(index_path);
    if (!dir) {
        free(json);
        return tl__err(TL_ERR_NOMEM, "%s: out of memory", index_path);
    }
    size_t first = d->n_files, first_claim = d->n_claims;
    index_ctx ctx = {d, dir, prefix, index_path, {0}};
    tl_status st = tl__disc_parse_index(json, len, index_path, index_claim, &ctx);
    tl__strmap_free(&ctx.by_path);
    free(json);
    if (!st) st = sort_shards(d, first, first_claim, index_path);
    if (!st) st = check_shards(d, first, dir, index_path);
    free(dir);
    return st;
}

static bool is_weight_file(const char *name) {
    return ends_with(name, ".safetensors") || ends_with(name, ".gguf") ||
           ends_with(name, ".ckpt") || ends_with(name, ".pt") || ends_with(name, ".pth");
}

/*
 * Weights of one folder: a shard index, else the model files in it — all of
 * them, or (one_model: a diffusers component folder, where several files are
 * variants of the same weights, e.g. .fp16 and .bf16) the first by name.
 */
static tl_status add_folder_weights(tl__disc *d, const char *dir, const char *prefix, bool one_model,
                                    const bound *b, const char *owner, bool *found) {
    static const char *const preferred_index[] = {"diffusion_pytorch_model.safetensors.index.json",
                                                  "model.safetensors.index.json"};
    static const char *const preferred_file[] = {"diffusion_pytorch_model.safetensors",
                                                 "model.safetensors"};
    char **names;
    size_t n;
    int e = tl__os_listdir(dir, &names, &n);
    if (e) return tl__err_errno(e, "%s: cannot list folder", dir);
    tl_status st = TL_OK;
    const char *pick = NULL;
    bool pick_index = false;
    for (size_t k = 0; k < 2 && !pick; k++)
        for (size_t i = 0; i < n && !pick; i++)
            if (!strcmp(names[i], preferred_index[k])) pick = names[i], pick_index = true;
    for (size_t k = 0; k < 2 && !pick; k++)
        for (size_t i = 0; i < n && !pick; i++)
            if (!strcmp(names[i], preferred_file[k])) pick = names[i];
    size_t n_index = 0;
    for (size_t i = 0; i < n && !pick; i++)
        if (ends_with(names[i], ".safetensors.index.json")) n_index++;
    if (!pick && n_index > 1)
        st = tl__err(TL_ERR_INVALID_ARG, "%s: folder holds %zu shard indexes; name one", dir,
                    n_index);
    for (size_t i = 0; i < n && !pick && !st; i++)
        if (ends_with(names[i], ".safetensors.index.json")) pick = names[i], pick_index = true;
    *found = false;
    if (!st && pick) {
        char *p = join(dir, pick);
        st = !p           ? tl__err(TL_ERR_NOMEM, "out of memory")
             : pick_index ? add_index(d, p, prefix)
             : b          ? check_inside(b, p, owner, p)
                          : TL_OK;
        if (!st && !pick_index) st = push_file(d, p, prefix);
        if (!st && !pick_index && b) st = confine(&d->files[d->n_files - 1], b, owner);
        free(p);
        *found = true;
    } else if (!st) {
        for (size_t i = 0; i < n && !st && !(one_model && *found); i++) {
            if (!is_weight_file(names[i])) continue;
            char *p = join(dir, names[i]);
            st = !p  ? tl__err(TL_ERR_NOMEM, "out of memory")
                 : b ? check_inside(b, p, owner, p)
                     : TL_OK;
            if (!st) st = push_file(d, p, prefix);
            if (!st && b) st = confine(&d->files[d->n_files - 1], b, owner);
            free(p);
            *found = true;
        }
    }
    tl__os_listdir_free(names, n);
    return st;
}

static tl_status add_diffusers(tl__disc *d, const char *dir, const char *mi_path,
                               const char *prefix) {
    char *json;
    size_t len;
    int e = tl__os_read_small(mi_path, INDEX_MAX_BYTES, &json, &len);
    if (e) return read_error(mi_path, "model_index.json", e);
    cJSON *root = cJSON_ParseWithLength(json, len);
    free(json);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return tl__err(TL_ERR_FORMAT, "%s: not a JSON object", mi_path);
    }
    bound b;
    tl_status st = bound_init(&b, dir, mi_path);
    size_t before = d->n_files;
    const cJSON *c;
    cJSON_ArrayForEach(c, root) {
        if (st) break;
        const char *key = c->string;
        if (key[0] == '_' || !cJSON_IsArray(c)) continue;
        if (!shard_name_ok(key) || strchr(key, '/')) {
            st = tl__err(TL_ERR_FORMAT, "%s: component '%s' is not a plain folder name", mi_path,
                        key);
            break;
        }
        char *sub = join(dir, key);
        if (!sub) {
            st = tl__err(TL_ERR_NOMEM, "out of memory");
            break;
        }
        if (tl__os_is_dir(sub)) {
            char *pre = concat(prefix, key);
            char *pre2 = pre ? concat(pre, ".") : NULL;
            char what[64 + 32];
            snprintf(what, sizeof what, "component folder '%.64s'", key);
            bool found;
            st = !pre2 ? tl__err(TL_ERR_NOMEM, "out of memory") : check_inside(&b, sub, mi_path, what);
            if (!st) st = add_folder_weights(d, sub, pre2, true, &b, mi_path, &found);
            free(pre);
            free(pre2);
        }
        free(sub);
        if (st) break;
    }
    cJSON_Delete(root);
    bound_free(&b);
    if (!st && d->n_files == before)
        st = tl__err(TL_ERR_NOT_FOUND, "%s: no component folder holds weights", mi_path);
    return st;
}

tl_status tl__disc_add(tl__disc *d, const char *path, const char *prefix) {
    if (tl__os_is_dir(path)) {
        char *mi = join(path, "model_index.json");
        if (!mi) return tl__err(TL_ERR_NOMEM, "out of memory");
        tl_status st;
        if (tl__os_exists(mi)) {
            st = add_diffusers(d, path, mi, prefix);
        } else {
            bool found;
            st = add_folder_weights(d, path, prefix, false, NULL, NULL, &found);
            if (!st && !found)
                st = tl__err(TL_ERR_NOT_FOUND, "%s: folder holds no .gguf or .safetensors files",
                            path);
        }
        free(mi);
        return st;
    }
    if (ends_with(path, ".json")) return add_index(d, path, prefix);
    return push_file(d, path, prefix);
}
