/*
 * ckpt.c — PyTorch checkpoints (torch.save's zip format) as catalog entries.
 *
 * A checkpoint is a zip archive (format/zip.c) of stored entries:
 * <root>/data.pkl (the pickled object), <root>/data/<key> (one entry per
 * storage, its raw little-endian bytes), <root>/version, and sometimes
 * <root>/byteorder. The pickle is read by format/pickle.c, which runs
 * nothing; this file walks the value it builds:
 *
 *   - the top level must be a dict; when it holds a dict under "state_dict"
 *     (the Stable Diffusion / Lightning convention) that dict holds the
 *     tensors, and the other top-level scalars become metadata;
 *   - nested dicts join their keys with '.', lists and tuples use the index;
 *   - a tensor's dtype comes from its storage type, its absolute offset is
 *     the storage entry's offset + storage_offset x element size; several
 *     tensors may share one storage; a tensor whose strides are not the
 *     contiguous ones keeps them (tl__fmt_tensor.strides); views with more
 *     elements than their storage (a stride of 0: expand) may add at most
 *     CKPT_MAX_EXPANDED bytes per file beyond what backs them; it must still lie
 *     inside its storage;
 *   - int, float, bool and str values become metadata (I64, F64, BOOL,
 *     STRING); None, bytes and other objects are skipped.
 *
 * Refused: the legacy (pre-1.6) format, a compressed or encrypted data.pkl
 * or storage entry, a big-endian checkpoint, a storage entry that is missing
 * or shorter than its storage, a tensor outside its storage, nesting deeper
 * than 32, and any pickle global outside the allow-list (pickle.c).
 */
#include "format/format.h"

#include "core/checked.h"
#include "core/error.h"
#include "format/pickle.h"
#include "format/zip.h"
#include "os/os.h"
#include "os/thread.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CKPT_MAX_DEPTH 32
#define CKPT_MAX_NAME 4096
/*
 * Values may be shared (memo references), so a small pickle can describe a
 * tree with 2^31 leaves: the walk stops after this many visits, and after
 * this many bytes of tensor names and metadata keys.
 */
#define CKPT_MAX_VISITS (1u << 22)
#define CKPT_MAX_NAME_BYTES (256ull << 20)

/* Bytes a file's expanding views (stride 0) may add beyond the storages they read. */
#define CKPT_MAX_EXPANDED (16ull << 20)

typedef struct builder {
    const char *path;
    const tl__zip *zip;
    const char *root; /* archive root folder, into the image */
    size_t root_len;
    tl__fmt_file *f;
    size_t cap_t, cap_m;
    uint64_t visits, name_bytes;
    uint64_t expanded; /* bytes expanding views add beyond their storage, file-wide */
    char name[CKPT_MAX_NAME];
} builder;

static tl_status nomem(const builder *b) {
    return tl__err(TL_ERR_NOMEM, "%s: out of memory", b->path);
}

static tl_status add_tensor(builder *b, const char *name, const tl__pk_tensor *pt) {
    const tl__pk_storage *s = pt->storage;
    char ename[128];
    int n = snprintf(ename, sizeof ename, "%.*s/data/%.*s", (int)b->root_len, b->root,
                     (int)s->key_len, s->key);
    const tl__zip_entry *e =
        n > 0 && (size_t)n < sizeof ename ? tl__zip_find(b->zip, ename, (size_t)n) : NULL;
    if (!e)
        return tl__err(TL_ERR_FORMAT, "%s: tensor '%s': its storage entry '%s' is missing", b->path,
                      name, ename);
    if (e->method != 0 || (e->flags & 1))
        return tl__err(TL_ERR_UNSUPPORTED,
                      "%s: tensor '%s': storage entry '%s' is %s (only stored entries can be "
                      "mapped)",
                      b->path, name, ename, (e->flags & 1) ? "encrypted" : "compressed");
    uint32_t es = tl_dtype_block_bits(s->dtype) / 8;
    uint64_t sbytes;
    if (!tl__mul_u64(s->numel, es, &sbytes) || sbytes > e->size)
        return tl__err(TL_ERR_FORMAT,
                      "%s: tensor '%s': storage '%s' holds %llu bytes, shorter than its %llu "
                      "%s elements",
                      b->path, name, ename, (unsigned long long)e->size,
                      (unsigned long long)s->numel, s->type_name);
    if (b->f->n_tensors == b->cap_t) {
        size_t cap = b->cap_t ? b->cap_t * 2 : 64;
        tl__fmt_tensor *nt = tl__os_realloc(b->f->tensors, cap * sizeof *nt);
        if (!nt) return nomem(b);
        b->f->tensors = nt;
        b->cap_t = cap;
    }
    tl__fmt_tensor *t = &b->f->tensors[b->f->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = tl__os_strdup(name);
    if (!t->name) return nomem(b);
    b->f->n_tensors++;
    t->dtype = s->dtype;
    t->n_dims = pt->n_dims;
    for (uint32_t d = 0; d < pt->n_dims; d++)
        t->shape[d] = pt->shape[d];
    tl_status st = tl__fmt_tensor_size(t, b->path);
    if (st) return st;
    /* Contiguous: each stride is the product of the sizes inside it (size-1 dims are free). */
    bool contiguous = true;
    uint64_t expect = 1, last = pt->storage_offset;
    for (uint32_t d = pt->n_dims; d-- > 0;) {
        uint64_t sz = (uint64_t)pt->shape[d], sd = (uint64_t)pt->stride[d], span;
        if (sz != 1 && sd != expect) contiguous = false;
        if (!tl__mul_u64(expect, sz, &expect)) expect = UINT64_MAX;
        if (sz && (!tl__mul_u64(sz - 1, sd, &span) || !tl__add_u64(last, span, &last)))
            return tl__err(TL_ERR_FORMAT, "%s: tensor '%s': strides overflow", b->path, name);
    }
    if (t->n_elements == 0) contiguous = true;
    /* Every element lies inside the storage: [storage_offset, last] < numel. */
    uint64_t off_bytes;
    if (!tl__mul_u64(pt->storage_offset, es, &off_bytes) || pt->storage_offset > s->numel ||
        (t->n_elements && last >= s->numel))
        return tl__err(TL_ERR_FORMAT,
                      "%s: tensor '%s': elements [%llu, %llu] lie outside its storage of %llu",
                      b->path, name, (unsigned long long)pt->storage_offset,
                      (unsigned long long)last, (unsigned long long)s->numel);
    t->offset = e->offset + off_bytes;
    /*
     * Bounded by the bytes that back it: a view that reaches elements more than
     * once (a stride of 0: torch's expand; overlapping strides) and so has more
     * elements than its storage is gathered like any strided tensor, but what
     * such views add beyond their storage is capped per file
     * (CKPT_MAX_EXPANDED): a 568-byte file must not become a 2 GiB load.
     */
    if (t->n_elements > s->numel) {
        uint64_t extra = (t->n_elements - s->numel) * es; /* n_elements * es did not overflow */
        if (!tl__add_u64(b->expanded, extra, &b->expanded) || b->expanded > CKPT_MAX_EXPANDED)
            return tl__err(TL_ERR_UNSUPPORTED,
                           "%s: tensor '%s': a view of %llu elements over a storage of %llu (an "
                           "expanding view, e.g. a stride of 0): the file's expanding views "
                           "would load more than %llu MiB beyond the bytes it holds; refused",
                           b->path, name, (unsigned long long)t->n_elements,
                           (unsigned long long)s->numel,
                           (unsigned long long)(CKPT_MAX_EXPANDED >> 20));
    }
    if (!contiguous) {
        t->strides = tl__os_calloc(TL_MAX_DIMS, sizeof *t->strides);
        if (!t->strides) return nomem(b);
        for (uint32_t d = 0; d < pt->n_dims; d++)
            t->strides[d] = pt->stride[d];
    }
    return TL_OK;
}

static tl_status add_meta(builder *b, const char *key, const tl__pk_value *v) {
    if (b->f->n_meta == b->cap_m) {
        size_t cap = b->cap_m ? b->cap_m * 2 : 16;
        tl__fmt_meta *nm = tl__os_realloc(b->f->meta, cap * sizeof *nm);
        if (!nm) return nomem(b);
        b->f->meta = nm;
        b->cap_m = cap;
    }
    tl__fmt_meta *fm = &b->f->meta[b->f->n_meta];
    memset(fm, 0, sizeof *fm);
    fm->m.key = tl__os_strdup(key);
    if (!fm->m.key) return nomem(b);
    b->f->n_meta++;
    switch (v->kind) {
    case TL_PK_INT:
        fm->m.type = TL_META_I64;
        fm->m.v.i = v->u.i;
        break;
    case TL_PK_FLOAT:
        fm->m.type = TL_META_F64;
        fm->m.v.f = v->u.f;
        break;
    case TL_PK_BOOL:
        fm->m.type = TL_META_BOOL;
        fm->m.v.b = v->u.b;
        break;
    default: /* str */
        fm->owned = tl__os_strndup(v->u.s.p, (size_t)v->u.s.n);
        if (!fm->owned) return nomem(b);
        fm->m.type = TL_META_STRING;
        fm->m.v.s.ptr = fm->owned;
        fm->m.v.s.len = strlen(fm->owned);
        break;
    }
    return TL_OK;
}

/* b->name[0..len) is the name so far; visit v under it. */
static tl_status walk(builder *b, const tl__pk_value *v, size_t len, unsigned depth) {
    b->name_bytes += len + 1;
    if (++b->visits > CKPT_MAX_VISITS || b->name_bytes > CKPT_MAX_NAME_BYTES)
        return tl__err(TL_ERR_FORMAT,
                      "%s: the pickle's containers reach more than %u values or %llu MiB of "
                      "names (shared references)",
                      b->path, CKPT_MAX_VISITS, (unsigned long long)(CKPT_MAX_NAME_BYTES >> 20));
    switch (v->kind) {
    case TL_PK_TENSOR:
        if (len == 0) return tl__err(TL_ERR_FORMAT, "%s: a tensor has an empty name", b->path);
        return add_tensor(b, b->name, v->u.tensor);
    case TL_PK_INT:
    case TL_PK_FLOAT:
    case TL_PK_BOOL:
    case TL_PK_STR:
        return len ? add_meta(b, b->name, v) : TL_OK;
    case TL_PK_DICT:
    case TL_PK_LIST:
    case TL_PK_TUPLE:
        break;
    default: /* None, bytes, storages, globals: not weights, not metadata */
        return TL_OK;
    }
    if (depth >= CKPT_MAX_DEPTH)
        return tl__err(TL_ERR_FORMAT, "%s: '%s': containers nested deeper than %d", b->path, b->name,
                      CKPT_MAX_DEPTH);
    bool dict = v->kind == TL_PK_DICT;
    size_t step = dict ? 2 : 1;
    for (size_t i = 0; i + step - 1 < v->u.seq.n; i += step) {
        const tl__pk_value *k = dict ? v->u.seq.items[i] : NULL;
        const tl__pk_value *val = v->u.seq.items[i + step - 1];
        char part[32];
        const char *p;
        size_t pl;
        if (!dict || k->kind == TL_PK_INT) {
            snprintf(part, sizeof part, "%lld", dict ? (long long)k->u.i : (long long)i);
            p = part;
            pl = strlen(part);
        } else if (k->kind == TL_PK_STR) {
            p = k->u.s.p;
            pl = (size_t)k->u.s.n;
            if (memchr(p, 0, pl))
                return tl__err(TL_ERR_FORMAT, "%s: '%s': a key contains a NUL byte", b->path,
                              b->name);
        } else {
            return tl__err(TL_ERR_FORMAT, "%s: '%s': a key is a %s, not a string", b->path,
                          len ? b->name : "(top level)", tl__pk_kind_name(k->kind));
        }
        size_t nl = len + (len ? 1 : 0) + pl;
        if (nl >= sizeof b->name)
            return tl__err(TL_ERR_FORMAT, "%s: a name under '%.64s' is longer than %d bytes",
                          b->path, b->name, CKPT_MAX_NAME - 1);
        if (len) b->name[len] = '.';
        memcpy(b->name + nl - pl, p, pl);
        b->name[nl] = 0;
        tl_status st = walk(b, val, nl, depth + 1);
        b->name[len] = 0;
        if (st) return st;
    }
    return TL_OK;
}

/* The single "<root>/data.pkl" entry (root: one path component). */
static tl_status find_pickle(const tl__zip *z, const char *path, const tl__zip_entry **out) {
    *out = NULL;
    for (size_t i = 0; i < z->n_entries; i++) {
        const tl__zip_entry *e = &z->entries[i];
        if (e->name_len < 10 || memcmp(e->name + e->name_len - 9, "/data.pkl", 9)) continue;
        if (memchr(e->name, '/', e->name_len - 9)) continue;
        if (*out)
            return tl__err(TL_ERR_FORMAT, "%s: checkpoint holds two pickles ('%.*s', '%.*s')", path,
                          (int)(*out)->name_len, (*out)->name, (int)e->name_len, e->name);
        *out = e;
    }
    if (!*out)
        return tl__err(TL_ERR_UNSUPPORTED,
                      "%s: a zip archive without <root>/data.pkl: not a torch.save checkpoint",
                      path);
    return TL_OK;
}

/*
 * A checkpoint with many storages has as many local headers to read (one
 * read each when the storages lie apart). With the file's descriptor and
 * more than one CPU to run on, a helper thread starts on them (tl__zip_pass) while this thread runs the
 * pickle, from the offset its own local header gives, and then joins the
 * reading of what is left: with a free core the reads cost the open about
 * half their time; with none it waits at most for the run the helper holds.
 * The pickle's outcome is used only when the finished directory names that
 * same entry as the pickle; errors keep their order (the directory's first).
 */
#define CKPT_AHEAD_MIN_ENTRIES 64

typedef struct ahead {
    uint64_t size, local_off, offset; /* the pickle's entry, as run */
    tl_status st;                     /* the pickle's outcome */
    tl__pk_value *root;
    tl__pk_arena *arena;
    char msg[8192];      /* its failure's message */
    tl__zip_pass *pass;  /* the helper's share of the local headers: */
    tl_status zst;
    size_t zat;
    char zmsg[8192];     /* its failure's message, from its thread */
} ahead;

static void *ahead_helper(void *arg) {
    ahead *a = arg;
    a->zst = tl__zip_pass_work(a->pass, &a->zat);
    if (a->zst) snprintf(a->zmsg, sizeof a->zmsg, "%s", tl_last_error());
    return NULL;
}

/*
 * When z (central directory read) names a pickle that can run: start the helper on *t, run the
 * pickle into a. Else *t stays NULL. Fails only when that pickle's local header cannot be read or
 * the thread not started.
 */
static tl_status ahead_run(const uint8_t *data, int fd, const char *path, const tl__zip *z,
                           ahead *a, tl__os_thread **t) {
    const tl__zip_entry *pk;
    /* a directory without a single stored pickle: the finished directory or parse_archive says */
    if (find_pickle(z, path, &pk) || pk->method != 0 || (pk->flags & 1)) return TL_OK;
    uint64_t off;
    tl_status st = tl__zip_local_offset(data, fd, z, pk, path, &off);
    if (st == TL_ERR_FORMAT) return TL_OK; /* the pass refuses it, in its order */
    if (st) return st;
    int e = tl__os_thread_start(t, ahead_helper, a);
    if (e) {
        *t = NULL;
        return tl__err_errno(e, "%s: cannot start a thread to read the zip's local headers", path);
    }
    a->size = pk->size;
    a->local_off = pk->local_off;
    a->offset = off;
    a->st = tl__pk_run(data + off, pk->size, path, &a->root, &a->arena);
    if (a->st) snprintf(a->msg, sizeof a->msg, "%s", tl_last_error());
    return TL_OK;
}

static tl_status parse_archive(const uint8_t *data, uint64_t size, const char *path,
                               const tl__zip *z, ahead *a, tl__fmt_file *f) {
    const tl__zip_entry *pk;
    tl_status st = find_pickle(z, path, &pk);
    if (st) return st;
    if (pk->method != 0 || (pk->flags & 1))
        return tl__err(TL_ERR_UNSUPPORTED,
                      "%s: '%.*s' is %s; only stored (uncompressed) checkpoints are read", path,
                      (int)pk->name_len, pk->name, (pk->flags & 1) ? "encrypted" : "compressed");
    size_t root_len = pk->name_len - 9;
    char ename[300];
    snprintf(ename, sizeof ename, "%.*s/byteorder", (int)root_len, pk->name);
    const tl__zip_entry *bo = tl__zip_find(z, ename, strlen(ename));
    if (bo && (bo->method != 0 || bo->size != 6 || memcmp(data + bo->offset, "little", 6)))
        return tl__err(TL_ERR_UNSUPPORTED,
                      "%s: checkpoint is not little-endian (byteorder entry is not \"little\")",
                      path);
    f->format = TL_FORMAT_CKPT;
    f->version = -1;
    f->size = size;
    snprintf(ename, sizeof ename, "%.*s/version", (int)root_len, pk->name);
    const tl__zip_entry *ve = tl__zip_find(z, ename, strlen(ename));
    if (ve && ve->method == 0 && ve->size > 0 && ve->size < 10) {
        int32_t v = 0;
        uint64_t k = 0;
        while (k < ve->size && data[ve->offset + k] >= '0' && data[ve->offset + k] <= '9')
            v = v * 10 + (data[ve->offset + k++] - '0');
        if (k) f->version = v;
    }
    tl__pk_value *root;
    tl__pk_arena *arena;
    if (a && a->local_off == pk->local_off && a->offset == pk->offset && a->size == pk->size) {
        st = a->st;
        root = a->root;
        arena = a->arena;
        a->arena = NULL;
        if (st) return tl__err(st, "%s", a->msg);
    } else {
        st = tl__pk_run(data + pk->offset, pk->size, path, &root, &arena);
        if (st) return st;
    }
    builder *b = tl__os_calloc(1, sizeof *b);
    if (!b) {
        tl__pk_free(arena);
        return tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
    }
    *b = (builder){.path = path, .zip = z, .root = pk->name, .root_len = root_len, .f = f};
    if (root->kind != TL_PK_DICT) {
        st = tl__err(TL_ERR_UNSUPPORTED, "%s: the checkpoint's pickle holds a %s, not a state dict",
                    path, tl__pk_kind_name(root->kind));
    } else {
        const tl__pk_value *sd = NULL;
        for (size_t i = 0; i + 1 < root->u.seq.n; i += 2) {
            const tl__pk_value *k = root->u.seq.items[i], *v = root->u.seq.items[i + 1];
            if (k->kind == TL_PK_STR && k->u.s.n == 10 && !memcmp(k->u.s.p, "state_dict", 10) &&
                v->kind == TL_PK_DICT)
                sd = v;
        }
        if (sd) {
            st = walk(b, sd, 0, 1);
            /* the wrapper's scalars (global_step, epoch, ...) are metadata */
            for (size_t i = 0; !st && i + 1 < root->u.seq.n; i += 2) {
                const tl__pk_value *k = root->u.seq.items[i], *v = root->u.seq.items[i + 1];
                if (k->kind != TL_PK_STR || k->u.s.n >= sizeof b->name ||
                    memchr(k->u.s.p, 0, (size_t)k->u.s.n))
                    continue;
                if (v->kind == TL_PK_INT || v->kind == TL_PK_FLOAT || v->kind == TL_PK_BOOL ||
                    v->kind == TL_PK_STR) {
                    memcpy(b->name, k->u.s.p, (size_t)k->u.s.n);
                    b->name[k->u.s.n] = 0;
                    st = add_meta(b, b->name, v);
                }
            }
        } else {
            st = walk(b, root, 0, 0);
        }
    }
    free(b);
    tl__pk_free(arena);
    if (st) return st;
    /* data section: from the first tensor byte */
    f->data_offset = f->n_tensors ? UINT64_MAX : 0;
    for (size_t i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].offset < f->data_offset) f->data_offset = f->tensors[i].offset;
    return tl__fmt_check_unique(f, path, false);
}

tl_status tl__ckpt_parse(const uint8_t *data, uint64_t size, const char *path, tl__fmt_file *out) {
    return tl__ckpt_parse_fd(data, size, -1, path, out);
}

tl_status tl__ckpt_parse_fd(const uint8_t *data, uint64_t size, int fd, const char *path,
                            tl__fmt_file *out) {
    memset(out, 0, sizeof *out);
    if (size >= 2 && data[0] == 0x80 && data[1] <= 5)
        return tl__err(TL_ERR_UNSUPPORTED,
                      "%s: legacy PyTorch checkpoint (a bare pickle, written before PyTorch "
                      "1.6); re-save it with a current torch.save",
                      path);
    tl__zip z;
    tl_status st = tl__zip_open_central(data, size, path, &z);
    if (st) return st;
    ahead *a = NULL;
    tl__os_thread *t = NULL;
    tl__zip_pass pass;
    tl__zip_pass_init(&pass, data, fd, path, &z);
    if (fd >= 0 && z.n_entries >= CKPT_AHEAD_MIN_ENTRIES && tl__os_cpu_count() > 1) {
        a = tl__os_calloc(1, sizeof *a);
        if (a) a->pass = &pass;
        st = a ? ahead_run(data, fd, path, &z, a, &t)
               : tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t at = SIZE_MAX;
    if (!st) st = tl__zip_pass_work(&pass, &at);
    if (t) {
        tl__os_thread_join(t);
        if (a->zst && a->zat < at) st = tl__err(a->zst, "%s", a->zmsg);
    }
    if (!st) st = tl__zip_sort(&z, path);
    tl__fmt_file f;
    memset(&f, 0, sizeof f);
    if (!st) st = parse_archive(data, size, path, &z, t ? a : NULL, &f);
    if (a) tl__pk_free(a->arena);
    free(a);
    tl__zip_free(&z);
    if (st) {
        tl__fmt_file_free(&f);
        return st;
    }
    *out = f;
    return TL_OK;
}
