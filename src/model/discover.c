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
 */
#include "model/discover.h"

#include "core/error.h"
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
    char *p = tl_os_malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static char *dirname_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return tl_os_strdup(".");
    if (slash == path) return tl_os_strdup("/");
    return tl_os_strndup(path, (size_t)(slash - path));
}

static char *concat(const char *a, const char *b) {
    size_t n = (a ? strlen(a) : 0) + (b ? strlen(b) : 0) + 1;
    char *p = tl_os_malloc(n);
    if (p) snprintf(p, n, "%s%s", a ? a : "", b ? b : "");
    return p;
}

static tl_status push_file(tl_disc *d, const char *path, const char *prefix) {
    if (d->n_files == d->cap_files) {
        size_t cap = d->cap_files ? d->cap_files * 2 : 8;
        tl_disc_file *nf = tl_os_realloc(d->files, cap * sizeof *nf);
        if (!nf) return tl_err(TL_ERR_NOMEM, "%s: out of memory", path);
        d->files = nf;
        d->cap_files = cap;
    }
    tl_disc_file *f = &d->files[d->n_files];
    f->path = tl_os_strdup(path);
    f->prefix = prefix && *prefix ? tl_os_strdup(prefix) : NULL;
    if (!f->path || (prefix && *prefix && !f->prefix)) {
        free(f->path);
        free(f->prefix);
        return tl_err(TL_ERR_NOMEM, "%s: out of memory", path);
    }
    d->n_files++;
    return TL_OK;
}

void tl_disc_free(tl_disc *d) {
    for (size_t i = 0; i < d->n_files; i++) {
        free(d->files[i].path);
        free(d->files[i].prefix);
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

tl_status tl_disc_parse_index(const char *json, size_t len, const char *index_path,
                              tl_status (*cb)(void *ctx, const char *tensor, const char *shard),
                              void *ctx) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return tl_err(TL_ERR_FORMAT, "%s: shard index is not valid JSON", index_path);
    tl_status st = TL_OK;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(wm))
        st = tl_err(TL_ERR_FORMAT, "%s: shard index has no \"weight_map\" object", index_path);
    const cJSON *e;
    if (!st) {
        cJSON_ArrayForEach(e, wm) {
            if (!cJSON_IsString(e)) {
                st = tl_err(TL_ERR_FORMAT, "%s: weight_map entry '%s' is not a string", index_path,
                            e->string);
                break;
            }
            if (!shard_name_ok(e->valuestring)) {
                st = tl_err(
                    TL_ERR_FORMAT,
                    "%s: weight_map entry '%s' names shard '%s', which leaves the index's folder",
                    index_path, e->string, e->valuestring);
                break;
            }
            if ((st = cb(ctx, e->string, e->valuestring))) break;
        }
        if (!st && !wm->child)
            st = tl_err(TL_ERR_FORMAT, "%s: shard index's weight_map is empty", index_path);
    }
    cJSON_Delete(root);
    return st;
}

typedef struct index_ctx {
    tl_disc *d;
    const char *dir;
    const char *prefix;
    size_t first_file;
    const char *index_path;
} index_ctx;

static tl_status index_claim(void *vctx, const char *tensor, const char *shard) {
    index_ctx *ctx = vctx;
    tl_disc *d = ctx->d;
    size_t fi;
    char *path = join(ctx->dir, shard);
    if (!path) return tl_err(TL_ERR_NOMEM, "%s: out of memory", ctx->index_path);
    for (fi = ctx->first_file; fi < d->n_files; fi++)
        if (!strcmp(d->files[fi].path, path)) break;
    tl_status st = TL_OK;
    if (fi == d->n_files) st = push_file(d, path, ctx->prefix);
    free(path);
    if (st) return st;
    if (d->n_claims == d->cap_claims) {
        size_t cap = d->cap_claims ? d->cap_claims * 2 : 64;
        tl_disc_claim *nc = tl_os_realloc(d->claims, cap * sizeof *nc);
        if (!nc) return tl_err(TL_ERR_NOMEM, "%s: out of memory", ctx->index_path);
        d->claims = nc;
        d->cap_claims = cap;
    }
    char *name = concat(ctx->prefix, tensor);
    if (!name) return tl_err(TL_ERR_NOMEM, "%s: out of memory", ctx->index_path);
    d->claims[d->n_claims++] = (tl_disc_claim){name, fi};
    return TL_OK;
}

static int cmp_files(const void *a, const void *b) {
    return strcmp(((const tl_disc_file *)a)->path, ((const tl_disc_file *)b)->path);
}

static tl_status add_index(tl_disc *d, const char *index_path, const char *prefix) {
    char *json;
    size_t len;
    int e = tl_os_read_small(index_path, INDEX_MAX_BYTES, &json, &len);
    if (e == EFBIG)
        return tl_err(TL_ERR_FORMAT, "%s: shard index larger than %llu bytes", index_path,
                      (unsigned long long)INDEX_MAX_BYTES);
    if (e)
        return tl_err(e == ENOENT ? TL_ERR_NOT_FOUND : TL_ERR_IO, "%s: %s", index_path,
                      strerror(e));
    char *dir = dirname_of(index_path);
    if (!dir) {
        free(json);
        return tl_err(TL_ERR_NOMEM, "%s: out of memory", index_path);
    }
    size_t first = d->n_files, first_claim = d->n_claims;
    index_ctx ctx = {d, dir, prefix, first, index_path};
    tl_status st = tl_disc_parse_index(json, len, index_path, index_claim, &ctx);
    free(json);
    free(dir);
    if (st) return st;
    /* Shards in name order (model-00001-of-00003 first); claims follow their file. */
    size_t n = d->n_files - first;
    size_t *old_to_new = tl_os_malloc((n ? n : 1) * sizeof *old_to_new);
    tl_disc_file *copy = tl_os_malloc((n ? n : 1) * sizeof *copy);
    if (!old_to_new || !copy) {
        free(old_to_new);
        free(copy);
        return tl_err(TL_ERR_NOMEM, "%s: out of memory", index_path);
    }
    memcpy(copy, d->files + first, n * sizeof *copy);
    qsort(d->files + first, n, sizeof *copy, cmp_files);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            if (copy[i].path == d->files[first + j].path) old_to_new[i] = first + j;
    for (size_t c = first_claim; c < d->n_claims; c++)
        d->claims[c].file = old_to_new[d->claims[c].file - first];
    free(copy);
    free(old_to_new);
    /* Report every missing shard at once. */
    char missing[768] = "";
    size_t n_missing = 0;
    for (size_t i = first; i < d->n_files; i++) {
        if (tl_os_exists(d->files[i].path)) continue;
        const char *base = strrchr(d->files[i].path, '/');
        base = base ? base + 1 : d->files[i].path;
        if (n_missing++ < 8) {
            size_t at = strlen(missing);
            snprintf(missing + at, sizeof missing - at, "%s%s", at ? ", " : "", base);
        }
    }
    if (n_missing)
        return tl_err(TL_ERR_NOT_FOUND, "%s: %zu shard%s missing: %s%s", index_path, n_missing,
                      n_missing > 1 ? "s" : "", missing, n_missing > 8 ? ", ..." : "");
    return TL_OK;
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
static tl_status add_folder_weights(tl_disc *d, const char *dir, const char *prefix, bool one_model,
                                    bool *found) {
    static const char *const preferred_index[] = {"diffusion_pytorch_model.safetensors.index.json",
                                                  "model.safetensors.index.json"};
    static const char *const preferred_file[] = {"diffusion_pytorch_model.safetensors",
                                                 "model.safetensors"};
    char **names;
    size_t n;
    int e = tl_os_listdir(dir, &names, &n);
    if (e) return tl_err(TL_ERR_IO, "%s: cannot list folder: %s", dir, strerror(e));
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
        st = tl_err(TL_ERR_INVALID_ARG, "%s: folder holds %zu shard indexes; name one", dir,
                    n_index);
    for (size_t i = 0; i < n && !pick && !st; i++)
        if (ends_with(names[i], ".safetensors.index.json")) pick = names[i], pick_index = true;
    *found = false;
    if (!st && pick) {
        char *p = join(dir, pick);
        st = !p           ? tl_err(TL_ERR_NOMEM, "out of memory")
             : pick_index ? add_index(d, p, prefix)
                          : push_file(d, p, prefix);
        free(p);
        *found = true;
    } else if (!st) {
        for (size_t i = 0; i < n && !st && !(one_model && *found); i++) {
            if (!is_weight_file(names[i])) continue;
            char *p = join(dir, names[i]);
            st = p ? push_file(d, p, prefix) : tl_err(TL_ERR_NOMEM, "out of memory");
            free(p);
            *found = true;
        }
    }
    tl_os_listdir_free(names, n);
    return st;
}

static tl_status add_diffusers(tl_disc *d, const char *dir, const char *mi_path,
                               const char *prefix) {
    char *json;
    size_t len;
    int e = tl_os_read_small(mi_path, INDEX_MAX_BYTES, &json, &len);
    if (e) return tl_err(TL_ERR_IO, "%s: %s", mi_path, strerror(e));
    cJSON *root = cJSON_ParseWithLength(json, len);
    free(json);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return tl_err(TL_ERR_FORMAT, "%s: not a JSON object", mi_path);
    }
    tl_status st = TL_OK;
    size_t before = d->n_files;
    const cJSON *c;
    cJSON_ArrayForEach(c, root) {
        const char *key = c->string;
        if (key[0] == '_' || !cJSON_IsArray(c)) continue;
        if (!shard_name_ok(key) || strchr(key, '/')) {
            st = tl_err(TL_ERR_FORMAT, "%s: component '%s' is not a plain folder name", mi_path,
                        key);
            break;
        }
        char *sub = join(dir, key);
        if (!sub) {
            st = tl_err(TL_ERR_NOMEM, "out of memory");
            break;
        }
        if (tl_os_is_dir(sub)) {
            char *pre = concat(prefix, key);
            char *pre2 = pre ? concat(pre, ".") : NULL;
            bool found;
            st = pre2 ? add_folder_weights(d, sub, pre2, true, &found)
                      : tl_err(TL_ERR_NOMEM, "out of memory");
            free(pre);
            free(pre2);
        }
        free(sub);
        if (st) break;
    }
    cJSON_Delete(root);
    if (!st && d->n_files == before)
        st = tl_err(TL_ERR_NOT_FOUND, "%s: no component folder holds weights", mi_path);
    return st;
}

tl_status tl_disc_add(tl_disc *d, const char *path, const char *prefix) {
    if (tl_os_is_dir(path)) {
        char *mi = join(path, "model_index.json");
        if (!mi) return tl_err(TL_ERR_NOMEM, "out of memory");
        tl_status st;
        if (tl_os_exists(mi)) {
            st = add_diffusers(d, path, mi, prefix);
        } else {
            bool found;
            st = add_folder_weights(d, path, prefix, false, &found);
            if (!st && !found)
                st = tl_err(TL_ERR_NOT_FOUND, "%s: folder holds no .gguf or .safetensors files",
                            path);
        }
        free(mi);
        return st;
    }
    if (ends_with(path, ".json")) return add_index(d, path, prefix);
    return push_file(d, path, prefix);
}
