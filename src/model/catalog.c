/*
 * catalog.c — the model catalog: every file mapped once, every tensor
 * described once.
 *
 * tl_model_open expands the user's paths (discover.c), opens and maps each
 * file MAP_PRIVATE (read-only, or copy-on-write writable on request so that
 * patches never reach the file), parses it (format/), prefixes tensor names
 * where discovery asked, classifies each tensor (names.c), checks that names
 * are unique across the catalog and that a shard index's promises hold, and
 * keeps a sorted name index for lookups. Tensor data pointers point into the
 * mappings: nothing is copied.
 */
#include "model/catalog.h"

#include "core/env.h"
#include "core/error.h"
#include "core/options.h"
#include "model/discover.h"
#include "os/os.h"

#include <errno.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>

tl_status tl_parse_map_flags(const char *list, unsigned *flags) {
    *flags = 0;
    if (!list) return TL_OK;
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        while (n && *p == ' ')
            p++, n--;
        while (n && p[n - 1] == ' ')
            n--;
        if (n == 10 && !strncmp(p, "sequential", n))
            *flags |= TL_MAP_SEQUENTIAL;
        else if (n == 8 && !strncmp(p, "willneed", n))
            *flags |= TL_MAP_WILLNEED;
        else if (n == 8 && !strncmp(p, "populate", n))
            *flags |= TL_MAP_POPULATE;
        else if (n == 8 && !strncmp(p, "dontneed", n))
            *flags |= TL_MAP_DONTNEED;
        else if (n != 0)
            return tl__err(
                TL_ERR_INVALID_ARG,
                "unknown mmap hint '%.*s' (known: sequential, willneed, populate, dontneed)",
                (int)n, p);
        if (!comma) break;
        p = comma + 1;
    }
    return TL_OK;
}

/* The os/ advice for one TL_MAP_* hint (SEQUENTIAL, WILLNEED or DONTNEED). */
static tl__os_advice advice_of(unsigned map_flag) {
    return map_flag == TL_MAP_SEQUENTIAL ? TL_OS_ADV_SEQUENTIAL
           : map_flag == TL_MAP_WILLNEED ? TL_OS_ADV_WILLNEED
                                         : TL_OS_ADV_DONTNEED;
}

static void unmap_file(tl__mfile *f, unsigned flags) {
    if (f->map) {
        if (flags & TL_MAP_DONTNEED) tl__os_madvise(f->map, f->info.size, TL_OS_ADV_DONTNEED);
        tl__os_unmap(f->map, f->info.size);
        f->map = NULL;
    }
    if (f->fd >= 0) {
        if (flags & TL_MAP_DONTNEED) tl__os_fadvise_dontneed(f->fd, 0, 0);
        tl__os_close(f->fd);
        f->fd = -1;
    }
}

void tl_model_close(tl_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_files; i++) {
        unmap_file(&m->files[i], m->map_flags);
        tl__fmt_file_free(&m->files[i].fmt);
        free((char *)m->files[i].info.path);
    }
    for (size_t i = 0; i < m->n_tensors; i++)
        free((char *)m->tensors[i].name);
    free(m->files);
    free(m->tensors);
    free(m->meta);
    free(m->by_name);
    tl__model_groups_free(&m->groups);
    free((void *)m->dirty);
    free(m);
}

static tl_status open_file(tl_model *m, tl__mfile *f, const tl__disc_file *df, bool writable) {
    const char *path = df->path;
    uint64_t size;
    f->fd = -1;
    f->info.path = tl__os_strdup(path);
    if (!f->info.path) return tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
    int e = tl__os_open_ro(path, &f->fd, &size);
    if (e == EISDIR)
        return tl__err(TL_ERR_INVALID_ARG, "%s: is a directory, not a model file", path);
    if (e == ENOENT) return tl__err(TL_ERR_NOT_FOUND, "%s: no such file", path);
    if (e == TL_OS_ENOTREG)
        return tl__err(TL_ERR_INVALID_ARG, "%s: is %s, not a regular file; refused", path,
                      tl__os_kind_name(tl__os_kind_of(path)));
    if (e == TL_OS_ENOSIZE)
        return tl__err(TL_ERR_INVALID_ARG,
                      "%s: not a regular file with a size (it reports 0 bytes but reads "
                      "data, like a /proc or /sys pseudo-file); refused",
                      path);
    if (e) return tl__err_errno(e, "%s: cannot open", path);
    tl_status cs = tl__disc_check_opened(df, f->fd);
    if (cs) return cs;
    if (size == 0) return tl__err(TL_ERR_FORMAT, "%s: file is empty", path);
    e = tl__os_map(f->fd, size, writable, (m->map_flags & TL_MAP_POPULATE) != 0, &f->map);
    if (e) return tl__err_errno(e, "%s: cannot map", path);
    f->info.size = size;
    e = tl__os_fstamp(f->fd, &f->stamp);
    if (e) return tl__err_errno(e, "%s: fstat", path);
    if (m->map_flags & TL_MAP_SEQUENTIAL) tl__os_madvise(f->map, size, TL_OS_ADV_SEQUENTIAL);
    if (m->map_flags & TL_MAP_WILLNEED) tl__os_madvise(f->map, size, TL_OS_ADV_WILLNEED);
    const uint8_t *b = f->map;
    int fmt = tl__fmt_sniff(b, size);
    tl_status st;
    if (fmt == TL_FORMAT_GGUF)
        st = tl__gguf_parse(b, size, path, &f->fmt);
    else if (fmt == TL_FORMAT_SAFETENSORS)
        st = tl__safetensors_parse(b, size, path, &f->fmt);
    else if (fmt == TL_FORMAT_CKPT)
        st = tl__ckpt_parse_fd(b, size, f->fd, path, &f->fmt);
    else if (size < 8)
        st = tl__err(TL_ERR_FORMAT, "%s: truncated: %llu bytes is too short for any model file",
                    path, (unsigned long long)size);
    else
        st = tl__err(TL_ERR_FORMAT, "%s: neither GGUF nor safetensors nor a PyTorch checkpoint",
                    path);
    if (st) return st;
    f->info.format = f->fmt.format;
    f->info.version = f->fmt.version;
    f->info.data_offset = f->fmt.data_offset;
    f->info.alignment = f->fmt.format == TL_FORMAT_GGUF ? f->fmt.alignment : 0;
    f->info.n_tensors = f->fmt.n_tensors;
    return TL_OK;
}

static _Thread_local const tl_tensor_info *sort_base;

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(sort_base[*(const uint32_t *)a].name, sort_base[*(const uint32_t *)b].name);
}

size_t tl_model_find(const tl_model *m, const char *name) {
    if (!m || !name) return TL_NOT_FOUND;
    size_t lo = 0, hi = m->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->tensors[m->by_name[mid]].name, name);
        if (c == 0) return m->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return TL_NOT_FOUND;
}

/*
 * file_comp: per discovered file its component from file_components
 * (TL_COMP_INVALID: by name); rules: the components rules.
 */
static tl_status build_catalog(tl_model *m, const tl__disc *d, const tl_component *file_comp,
                               const tl__comp_rules *rules) {
    size_t nt = 0, nm = 0;
    for (size_t i = 0; i < m->n_files; i++) {
        nt += m->files[i].fmt.n_tensors;
        nm += m->files[i].fmt.n_meta;
    }
    if (nt > UINT32_MAX) return tl__err(TL_ERR_UNSUPPORTED, "more than 2^32 tensors");
    m->tensors = tl__os_calloc(nt ? nt : 1, sizeof *m->tensors);
    m->by_name = tl__os_calloc(nt ? nt : 1, sizeof *m->by_name);
    m->meta = tl__os_calloc(nm ? nm : 1, sizeof *m->meta);
    if (!m->tensors || !m->by_name || !m->meta) return tl__err(TL_ERR_NOMEM, "out of memory");
    for (size_t fi = 0; fi < m->n_files; fi++) {
        tl__mfile *f = &m->files[fi];
        const char *prefix = d->files[fi].prefix;
        size_t plen = prefix ? strlen(prefix) : 0;
        for (size_t j = 0; j < f->fmt.n_meta; j++) {
            f->fmt.meta[j].m.file = (uint32_t)fi;
            m->meta[m->n_meta++] = &f->fmt.meta[j];
        }
        for (size_t j = 0; j < f->fmt.n_tensors; j++) {
            const tl__fmt_tensor *ft = &f->fmt.tensors[j];
            tl_tensor_info *t = &m->tensors[m->n_tensors];
            size_t nlen = strlen(ft->name);
            char *name = tl__os_malloc(plen + nlen + 1);
            if (!name) return tl__err(TL_ERR_NOMEM, "out of memory");
            if (plen) memcpy(name, prefix, plen);
            memcpy(name + plen, ft->name, nlen + 1);
            t->name = name;
            m->n_tensors++;
            t->dtype = ft->dtype;
            t->n_dims = ft->n_dims;
            memcpy(t->shape, ft->shape, sizeof t->shape);
            t->file = (uint32_t)fi;
            t->offset = ft->offset;
            t->nbytes = ft->nbytes;
            t->n_elements = ft->n_elements;
            t->strides = ft->strides;
            t->component = file_comp[fi];
            if (t->component == TL_COMP_INVALID) t->component = tl__comp_rules_match(rules, name);
            if (t->component == TL_COMP_INVALID) t->component = tl_component_of(name);
            size_t klen;
            t->layer = tl_layer_of(name, &klen);
            t->layer_key_len = (uint32_t)klen;
        }
    }
    for (size_t i = 0; i < m->n_tensors; i++)
        m->by_name[i] = (uint32_t)i;
    sort_base = m->tensors;
    qsort(m->by_name, m->n_tensors, sizeof *m->by_name, cmp_by_name);
    for (size_t i = 1; i < m->n_tensors; i++) {
        const tl_tensor_info *a = &m->tensors[m->by_name[i - 1]], *b = &m->tensors[m->by_name[i]];
        if (!strcmp(a->name, b->name) && a->file != b->file &&
            tl__os_same_file(m->files[a->file].fd, m->files[b->file].fd))
            return tl__err(TL_ERR_INVALID_ARG,
                          "%s and %s are the same file, named twice; name it once",
                          m->files[a->file < b->file ? a->file : b->file].info.path,
                          m->files[a->file < b->file ? b->file : a->file].info.path);
        if (!strcmp(a->name, b->name))
            return tl__err(TL_ERR_FORMAT, "tensor '%s' appears in both %s and %s", a->name,
                          m->files[a->file].info.path, m->files[b->file].info.path);
    }
    for (size_t c = 0; c < d->n_claims; c++) {
        size_t i = tl_model_find(m, d->claims[c].name);
        const char *shard = m->files[d->claims[c].file].info.path;
        if (i == TL_NOT_FOUND)
            return tl__err(TL_ERR_FORMAT, "%s: tensor '%s' listed in the shard index is absent",
                          shard, d->claims[c].name);
        if (m->tensors[i].file != d->claims[c].file)
            return tl__err(TL_ERR_FORMAT,
                          "%s: tensor '%s' listed in the shard index is in %s instead", shard,
                          d->claims[c].name, m->files[m->tensors[i].file].info.path);
    }
    return TL_OK;
}

tl_status tl_model_open(const char *const *paths, size_t n_paths, const tl_model_options *opts,
                        tl_model **out) {
    *out = NULL;
    if (!paths || n_paths == 0) return tl__err(TL_ERR_INVALID_ARG, "no model path given");
    tl_model_options o;
    tl_model_options_init(&o);
    tl_status st = tl__options_take(&o, sizeof o, opts, "tl_model_options");
    if (st) return st;
    if (o.map_flags & ~(unsigned)(TL_MAP_SEQUENTIAL | TL_MAP_WILLNEED | TL_MAP_POPULATE |
                                  TL_MAP_DONTNEED | TL_MAP_FROM_ENV))
        return tl__err(TL_ERR_INVALID_ARG, "unknown map flags 0x%x", o.map_flags);
    tl_model *m = tl__os_calloc(1, sizeof *m);
    if (!m) return tl__err(TL_ERR_NOMEM, "out of memory");
    m->writable = o.writable;
    m->map_flags = o.map_flags & ~(unsigned)TL_MAP_FROM_ENV;
    if (o.map_flags & TL_MAP_FROM_ENV) {
        unsigned env = 0;
        st = tl_parse_map_flags(tl__env_get(TL_ENV_MMAP_FLAGS), &env);
        if (st) st = tl__err_prefix(st, "%s", tl__env_name(TL_ENV_MMAP_FLAGS));
        m->map_flags |= env;
    }
    tl__disc d;
    memset(&d, 0, sizeof d);
    tl__comp_rules rules = {0};
    if (!st) st = tl__comp_rules_parse(o.components, &rules);
    /* the component each path's files get from file_components, by the path's first file */
    tl_component *path_comp = NULL, *file_comp = NULL;
    size_t *first = NULL;
    if (!st) {
        path_comp = tl__os_calloc(n_paths, sizeof *path_comp);
        first = tl__os_calloc(n_paths + 1, sizeof *first);
        if (!path_comp || !first) st = tl__err(TL_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n_paths && !st; i++) {
        const char *fc = o.file_components ? o.file_components[i] : NULL;
        path_comp[i] = fc ? tl_component_from_name(fc) : TL_COMP_INVALID;
        if (fc && path_comp[i] == TL_COMP_INVALID)
            st = tl__err(TL_ERR_INVALID_ARG, "%s: unknown component '%.40s'",
                         paths[i] ? paths[i] : "(null)", fc);
    }
    for (size_t i = 0; i < n_paths && !st; i++) {
        first[i] = d.n_files;
        if (!paths[i])
            st = tl__err(TL_ERR_INVALID_ARG, "model path %zu is NULL", i);
        else
            st = tl__disc_add(&d, paths[i], o.prefixes ? o.prefixes[i] : NULL);
    }
    if (!st) {
        first[n_paths] = d.n_files;
        m->files = tl__os_calloc(d.n_files ? d.n_files : 1, sizeof *m->files);
        file_comp = tl__os_calloc(d.n_files ? d.n_files : 1, sizeof *file_comp);
        if (!m->files || !file_comp) st = tl__err(TL_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n_paths && !st; i++)
        for (size_t f = first[i]; f < first[i + 1]; f++) file_comp[f] = path_comp[i];
    for (size_t i = 0; i < d.n_files && !st; i++) {
        m->files[i].fd = -1;
        m->n_files = i + 1;
        st = open_file(m, &m->files[i], &d.files[i], m->writable);
    }
    if (!st) st = build_catalog(m, &d, file_comp, &rules);
    free(path_comp);
    free(file_comp);
    free(first);
    tl__comp_rules_free(&rules);
    if (!st) st = tl__model_groups_build(m);
    if (!st) {
        m->dirty = tl__os_calloc(m->n_tensors ? m->n_tensors : 1, sizeof *m->dirty);
        if (!m->dirty)
            st = tl__err(TL_ERR_NOMEM, "%s: out of memory", m->n_files ? m->files[0].info.path : "model");
    }
    tl__disc_free(&d);
    if (st) {
        tl_model_close(m);
        return st;
    }
    *out = m;
    return TL_OK;
}

size_t tl_model_file_count(const tl_model *m) {
    return m->n_files;
}

const tl_file_info *tl_model_file(const tl_model *m, size_t i) {
    return i < m->n_files ? &m->files[i].info : NULL;
}

size_t tl_model_tensor_count(const tl_model *m) {
    return m->n_tensors;
}

const tl_tensor_info *tl_model_tensor(const tl_model *m, size_t i) {
    return i < m->n_tensors ? &m->tensors[i] : NULL;
}

const void *tl_model_tensor_data(const tl_model *m, size_t i) {
    if (i >= m->n_tensors) return NULL;
    const tl_tensor_info *t = &m->tensors[i];
    if (t->strides) return NULL; /* not packed: read it with tl_model_tensor_read */
    return (const uint8_t *)m->files[t->file].map + t->offset;
}

void *tl_model_tensor_data_mut(tl_model *m, size_t i) {
    if (!m->writable || i >= m->n_tensors) return NULL;
    atomic_store(&m->dirty[i], 1);
    return (void *)tl_model_tensor_data(m, i);
}

bool tl_model_tensor_patched(const tl_model *m, size_t i) {
    return m && i < m->n_tensors && atomic_load(&m->dirty[i]);
}

tl_status tl_model_tensor_unpatch(tl_model *m, size_t i) {
    if (!m || i >= m->n_tensors)
        return tl__err(TL_ERR_INVALID_ARG, "tensor index %zu out of range", i);
    if (!atomic_load(&m->dirty[i])) return TL_OK;
    const tl_tensor_info *t = &m->tensors[i];
    const tl__mfile *f = &m->files[t->file];
    int e = tl__os_restore_range(f->map, f->fd, t->offset, t->nbytes);
    if (e)
        return tl__err_errno(e, "%s: tensor '%s': dropping its patch", f->info.path, t->name);
    atomic_store(&m->dirty[i], 0);
    return TL_OK;
}

size_t tl_model_meta_count(const tl_model *m) {
    return m->n_meta;
}

const tl_meta *tl_model_meta(const tl_model *m, size_t i) {
    return i < m->n_meta ? &m->meta[i]->m : NULL;
}

size_t tl_model_meta_find(const tl_model *m, const char *key) {
    for (size_t i = 0; m && key && i < m->n_meta; i++)
        if (!strcmp(m->meta[i]->m.key, key)) return i;
    return TL_NOT_FOUND;
}

tl_status tl_model_meta_element(const tl_model *m, size_t i, uint64_t j, tl_meta *out) {
    if (i >= m->n_meta) return tl__err(TL_ERR_INVALID_ARG, "metadata index %zu out of range", i);
    return tl__fmt_meta_array_get(m->meta[i], j, out);
}

tl_status tl_model_file_residency(const tl_model *m, size_t file, double *fraction) {
    if (file >= m->n_files) return tl__err(TL_ERR_INVALID_ARG, "file index %zu out of range", file);
    const tl__mfile *f = &m->files[file];
    uint64_t res, total;
    int e = tl__os_mincore(f->map, f->info.size, &res, &total);
    if (e) return tl__err_errno(e, "%s: mincore", f->info.path);
    *fraction = total ? (double)res / (double)total : 1.0;
    return TL_OK;
}

tl_status tl_model_advise(tl_model *m, unsigned flags) {
    for (size_t i = 0; i < m->n_files; i++) {
        tl__mfile *f = &m->files[i];
        static const unsigned order[] = {TL_MAP_SEQUENTIAL, TL_MAP_WILLNEED, TL_MAP_DONTNEED};
        for (size_t k = 0; k < 3; k++) {
            if (!(flags & order[k])) continue;
            int e = tl__os_madvise(f->map, f->info.size, advice_of(order[k]));
            if (!e && order[k] == TL_MAP_DONTNEED) e = tl__os_fadvise_dontneed(f->fd, 0, 0);
            if (!e && order[k] == TL_MAP_WILLNEED) e = tl__os_fadvise_willneed(f->fd, 0, 0);
            if (e) return tl__err_errno(e, "%s: page-cache hint failed", f->info.path);
        }
    }
    return TL_OK;
}

int tl_model_file_fd(const tl_model *m, size_t file) {
    return file < m->n_files ? m->files[file].fd : -1;
}

const void *tl_model_file_map(const tl_model *m, size_t file) {
    return file < m->n_files ? m->files[file].map : NULL;
}
