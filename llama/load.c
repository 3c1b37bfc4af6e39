/*
 * load.c — tl_llama_model_load: llama.cpp builds the model from the file's
 * metadata (llama_model_init_from_user) and allocates every tensor; its
 * per-tensor callback only records the tensors; then tierload fills them in
 * file order: one tl_model_load with llama.cpp's host buffers as the
 * destinations, and the rest (device buffers, repacking CPU buffers) in
 * batches through one staging buffer and ggml_backend_tensor_set.
 *
 * Memory: llama.cpp's buffers, the staging buffer (16 MiB or the staged
 * bytes when fewer, and at least the largest staged tensor, as llama.cpp's
 * own read buffer), per-tensor records; LoRA merges add the
 * merged tensors' private pages of the copy-on-write mapping until the file
 * is closed, before returning.
 */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ggml-backend.h>
#include <gguf.h>

#define STAGING_MIN (16ull << 20)
#define STAGING_ALIGN 64u

void tl_llama_options_init(tl_llama_options *o) {
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One tensor llama.cpp created, and where its bytes come from. */
typedef struct slot {
    struct ggml_tensor *t;
    size_t src;   /* catalog index; TL_NOT_FOUND when the file has none */
    bool host;    /* in a host buffer: written in place */
    bool primary; /* the one slot of its catalog tensor that the loader fills */
} slot;

typedef struct job {
    const char *path;
    tl_model *m;
    slot *slots;
    size_t n, cap;
    bool oom;
    bool tied;          /* output.weight added to the metadata as token_embd.weight's twin */
    size_t n_secondary; /* slots filled from another slot's bytes */
    /* catalog index -> the primary slot (or SIZE_MAX) */
    size_t *primary;
    /* staging */
    unsigned char *stg;
    uint64_t stg_len;
    const uint64_t *stg_off; /* per catalog index within a batch */
    /* progress */
    llama_progress_callback progress;
    void *progress_user;
    uint64_t done, total;
    bool cancelled;
} job;

/* llama.cpp's per-tensor callback: only remember the tensor. */
static void on_tensor(struct ggml_tensor *t, void *user) {
    job *j = user;
    if (j->oom) return;
    if (j->n == j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 256;
        slot *s = realloc(j->slots, cap * sizeof *s);
        if (!s) {
            j->oom = true;
            return;
        }
        j->slots = s;
        j->cap = cap;
    }
    j->slots[j->n++] = (slot){t, TL_NOT_FOUND, false, false};
}

static bool report(job *j, uint64_t add) {
    j->done += add;
    if (j->progress && !j->cancelled) {
        float f = j->total ? (float)((double)j->done / (double)j->total) : 1.0f;
        if (!j->progress(f > 1.0f ? 1.0f : f, j->progress_user)) j->cancelled = true;
    }
    return !j->cancelled;
}

static bool on_load_progress(void *user, uint64_t done, uint64_t total) {
    job *j = user;
    (void)total;
    if (!j->progress) return true;
    float f = j->total ? (float)((double)(j->done + done) / (double)j->total) : 1.0f;
    if (!j->progress(f > 1.0f ? 1.0f : f, j->progress_user)) j->cancelled = true;
    return !j->cancelled;
}

static void *dest_in_place(void *user, size_t tensor, uint64_t nbytes, tl_dtype dtype) {
    job *j = user;
    (void)nbytes;
    (void)dtype;
    return j->slots[j->primary[tensor]].t->data;
}

static void *dest_staging(void *user, size_t tensor, uint64_t nbytes, tl_dtype dtype) {
    job *j = user;
    (void)nbytes;
    (void)dtype;
    return j->stg + j->stg_off[tensor];
}

/* "[a, b, c]" innermost first, as llama.cpp prints shapes. */
static void shape_ggml(const struct ggml_tensor *t, char *buf, size_t n) {
    int d = ggml_n_dims(t);
    size_t at = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < d && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%lld", i ? ", " : "", (long long)t->ne[i]);
    if (at < n) snprintf(buf + at, n - at, "]");
}

static void shape_file(const tl_tensor_info *t, char *buf, size_t n) {
    size_t at = (size_t)snprintf(buf, n, "[");
    for (uint32_t i = 0; i < t->n_dims && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%lld", i ? ", " : "",
                               (long long)t->shape[t->n_dims - 1 - i]);
    if (at < n) snprintf(buf + at, n - at, "]");
}

/* Does the file's tensor fit what llama.cpp created? */
static tl_status check_match(const job *j, const slot *s) {
    const tl_tensor_info *ti = tl_model_tensor(j->m, s->src);
    const struct ggml_tensor *t = s->t;
    bool same = (int)ti->dtype == (int)t->type && ti->nbytes == ggml_nbytes(t) &&
                (int64_t)ti->n_elements == ggml_nelements(t) && ti->n_dims <= GGML_MAX_DIMS;
    for (uint32_t d = 0; same && d < ti->n_dims; d++)
        same = ti->shape[ti->n_dims - 1 - d] == t->ne[d];
    if (same) return TL_OK;
    char a[128], b[128];
    shape_ggml(t, a, sizeof a);
    shape_file(ti, b, sizeof b);
    return tl_set_error(TL_ERR_UNSUPPORTED,
                        "%s: tensor '%s': llama.cpp expects %s %s, the file has %s %s", j->path,
                        t->name, ggml_type_name(t->type), a, tl_dtype_name(ti->dtype), b);
}

/*
 * A tensor llama.cpp created that the file does not have. From metadata,
 * llama.cpp creates the optional tensors too (biases, per-tensor ".scale"
 * and ".input_scale" factors, rope frequency factors), where its own load leaves out those the
 * file lacks; the graph then adds a bias or multiplies (divides) by a factor.
 * Filled with the value that changes nothing (0 added, 1 multiplied or
 * divided by) they give the same results bit for bit. Any other tensor is one
 * the model needs: llama.cpp's own load says "missing tensor".
 */
static tl_status fill_neutral(const job *j, struct ggml_tensor *t) {
    const char *dot = strrchr(t->name, '.'), *last = dot ? dot + 1 : t->name;
    bool zero = !strcmp(last, "bias");
    bool one = !strcmp(last, "scale") || !strcmp(last, "input_scale") ||
               !strncmp(t->name, "rope_freqs.", 11) || strstr(t->name, ".rope_freqs.");
    if ((!zero && !one) || t->type != GGML_TYPE_F32)
        return tl_set_error(TL_ERR_UNSUPPORTED, "%s: llama.cpp: missing tensor '%s'", j->path,
                            t->name);
    size_t k = (size_t)ggml_nelements(t);
    const float want = zero ? 0.0f : 1.0f;
    if (t->buffer && ggml_backend_buffer_is_host(t->buffer)) {
        /*
         * Written in place, and only where the memory does not hold the value
         * yet (-0 is not +0): a fresh buffer's untouched pages read as zero
         * without becoming resident, so a bias the file lacks costs no memory.
         */
        float *v = t->data;
        for (size_t i = 0; i < k; i++)
            if (v[i] != want || signbit(v[i])) v[i] = want;
        return TL_OK;
    }
    float *v = malloc(k * sizeof *v);
    if (!v) return tl_set_error(TL_ERR_NOMEM, "%s: tensor '%s': out of memory", j->path, t->name);
    for (size_t i = 0; i < k; i++)
        v[i] = want;
    ggml_backend_tensor_set(t, v, 0, k * sizeof *v);
    free(v);
    return TL_OK;
}

/*
 * A file without output.weight ties the output projection to the token
 * embedding. llama.cpp's own load then uses token_embd.weight for both (one
 * tensor, or a twin where the two uses need different buffer types); from
 * metadata it would create an F32 output.weight instead. Adding output.weight
 * to the metadata with token_embd.weight's type and shape makes llama.cpp
 * create it as its own load does; it is filled with token_embd's bytes (read
 * once). The cost is a second copy of the embedding where llama.cpp's own
 * load shares one.
 */
static bool tie_output(tl_model *m, struct gguf_context *meta) {
    size_t te = tl_model_find(m, "token_embd.weight");
    if (gguf_find_tensor(meta, "output.weight") >= 0 || te == TL_NOT_FOUND) return false;
    const tl_tensor_info *ti = tl_model_tensor(m, te);
    if (ti->n_dims != 2 || (int)ti->dtype < 0 || ti->dtype >= TL_GGML_TYPE_COUNT) return false;
    struct ggml_tensor t;
    memset(&t, 0, sizeof t);
    t.type = (enum ggml_type)ti->dtype;
    t.ne[0] = ti->shape[1];
    t.ne[1] = ti->shape[0];
    t.ne[2] = t.ne[3] = 1;
    t.nb[0] = ggml_type_size(t.type);
    t.nb[1] = ggml_row_size(t.type, t.ne[0]);
    t.nb[2] = t.nb[3] = t.nb[1] * (size_t)t.ne[1];
    snprintf(t.name, sizeof t.name, "output.weight");
    gguf_add_tensor(meta, &t);
    return true;
}

/* The caller's load options; the memory sampler is off (its figures are not returned). */
static tl_status load_opts(const tl_llama_options *o, tl_load_options *lo) {
    tl_load_options_init(lo);
    if (o->load) {
        if (!o->load->size)
            return tl_set_error(TL_ERR_INVALID_ARG, "tl_llama_model_load: load options size 0");
        memcpy(lo, o->load, o->load->size < sizeof *lo ? o->load->size : sizeof *lo);
        lo->size = sizeof *lo;
        if (lo->convert || lo->tensors || lo->dest || lo->align)
            return tl_set_error(TL_ERR_INVALID_ARG,
                                "tl_llama_model_load: convert, tensors, dest and align are decided "
                                "by tl_llama_model_load");
        if (lo->mode == TL_LOAD_MMAP)
            return tl_set_error(
                TL_ERR_INVALID_ARG,
                "tl_llama_model_load: mode mmap gives views; llama.cpp's buffers need copies");
        lo->accept_views = false;
    }
    lo->sample_interval = -1;
    return TL_OK;
}

/* Open, check and merge the LoRAs into m (writable). Nothing is changed unless all fit. */
static tl_status merge_loras(job *j, const tl_llama_options *o, size_t *n_merged) {
    tl_lora **ls = calloc(o->n_loras, sizeof *ls);
    if (!ls) return tl_set_error(TL_ERR_NOMEM, "%s: out of memory", j->path);
    tl_status st = TL_OK;
    for (size_t i = 0; i < o->n_loras && st == TL_OK; i++) {
        const char *lp = o->loras[i].path;
        if (!lp) {
            st = tl_set_error(TL_ERR_INVALID_ARG, "tl_llama_model_load: LoRA %zu has no path", i);
            break;
        }
        st = tl_lora_open(lp, &ls[i]);
        if (st) break;
        tl_lora_report r;
        st = tl_lora_match(j->m, ls[i], &r, sizeof r);
        if (st) break;
        if (r.n_unmatched)
            st = tl_set_error(
                TL_ERR_NOT_FOUND,
                "%s: LoRA %s: %zu of %zu keys match no tensor of the model (first: %s)", j->path,
                lp, r.n_unmatched, r.n_unmatched + r.n_matched, r.unmatched[0]);
    }
    /* every module's weight type and shape is checked by tl_lora_apply before it writes */
    for (size_t i = 0; i < o->n_loras && st == TL_OK; i++) {
        tl_lora_report r;
        st = tl_lora_apply(j->m, ls[i], o->loras[i].scale, &r, sizeof r);
        if (st && i > 0)
            st = tl_set_error(st, "%s (after %zu LoRA(s) were merged into this process's copy)",
                              tl_last_error(), i);
    }
    size_t n = tl_model_tensor_count(j->m);
    for (size_t t = 0; t < n && st == TL_OK; t++)
        *n_merged += tl_model_tensor_patched(j->m, t);
    for (size_t i = 0; i < o->n_loras; i++)
        tl_lora_close(ls[i]);
    free(ls);
    return st;
}

/* Index the slots: catalog tensor, host or not, one primary per catalog tensor. */
static tl_status classify(job *j, tl_llama_stats *st) {
    size_t nt = tl_model_tensor_count(j->m);
    j->primary = malloc((nt ? nt : 1) * sizeof *j->primary);
    if (!j->primary) return tl_set_error(TL_ERR_NOMEM, "%s: out of memory", j->path);
    for (size_t i = 0; i < nt; i++)
        j->primary[i] = SIZE_MAX;
    for (size_t k = 0; k < j->n; k++) {
        slot *s = &j->slots[k];
        s->src = tl_model_find(j->m, ggml_get_name(s->t));
        if (s->src == TL_NOT_FOUND && j->tied && !strcmp(ggml_get_name(s->t), "output.weight"))
            s->src = tl_model_find(j->m, "token_embd.weight");
        s->host = s->t->buffer && ggml_backend_buffer_is_host(s->t->buffer);
        if (s->src == TL_NOT_FOUND) continue;
        tl_status e = check_match(j, s);
        if (e) return e;
        size_t *p = &j->primary[s->src];
        /* a host slot is preferred: it is filled in place, the others from it */
        if (*p == SIZE_MAX || (s->host && !j->slots[*p].host)) *p = k;
    }
    for (size_t i = 0; i < nt; i++) {
        if (j->primary[i] == SIZE_MAX) {
            st->n_unused++;
            continue;
        }
        slot *s = &j->slots[j->primary[i]];
        s->primary = true;
        j->total += tl_model_tensor(j->m, i)->nbytes;
    }
    for (size_t k = 0; k < j->n; k++)
        j->n_secondary += j->slots[k].src != TL_NOT_FOUND && !j->slots[k].primary;
    return TL_OK;
}

/* The secondary slots of catalog tensor i get the bytes at data. */
static void copy_secondaries(job *j, size_t i, const void *data) {
    if (!j->n_secondary) return;
    for (size_t k = 0; k < j->n; k++) {
        slot *s = &j->slots[k];
        if (s->src == i && !s->primary) ggml_backend_tensor_set(s->t, data, 0, ggml_nbytes(s->t));
    }
}

static int by_offset(const void *a, const void *b, void *m) {
    const tl_tensor_info *x = tl_model_tensor(m, *(const size_t *)a);
    const tl_tensor_info *y = tl_model_tensor(m, *(const size_t *)b);
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static tl_status run_load(job *j, const tl_load_options *base, const size_t *idx, size_t n,
                          void *(*dest)(void *, size_t, uint64_t, tl_dtype), tl_load_mode *mode) {
    tl_load_options lo = *base;
    lo.tensors = idx;
    lo.n_tensors = n;
    lo.dest = dest;
    lo.dest_user = j;
    lo.dest_fresh = dest == dest_in_place; /* llama.cpp's buffers, just allocated */
    lo.progress = on_load_progress;
    lo.progress_user = j;
    tl_load_result *r = NULL;
    tl_status st = tl_model_load(j->m, &lo, &r);
    if (st == TL_OK) {
        const tl_load_file *f = tl_load_result_file(r, 0);
        if (f && mode) *mode = f->mode;
        uint64_t b = 0;
        for (size_t k = 0; k < n; k++)
            b += tl_model_tensor(j->m, idx[k])->nbytes;
        tl_load_result_destroy(r);
        if (!report(j, b)) st = TL_ERR_CANCELLED;
    }
    if (st == TL_ERR_CANCELLED || j->cancelled)
        return tl_set_error(TL_ERR_CANCELLED, "%s: load cancelled by the progress callback",
                            j->path);
    return st;
}

/* Fill every slot: in place, then staged in batches, then secondaries and neutral ones. */
static tl_status fill(job *j, const tl_load_options *lo, tl_llama_stats *st) {
    size_t nt = tl_model_tensor_count(j->m);
    size_t *in = malloc((nt ? nt : 1) * sizeof *in), *out = malloc((nt ? nt : 1) * sizeof *out);
    uint64_t *off = calloc(nt ? nt : 1, sizeof *off);
    tl_status e = TL_OK;
    if (!in || !out || !off) {
        e = tl_set_error(TL_ERR_NOMEM, "%s: out of memory", j->path);
        goto done;
    }
    size_t n_in = 0, n_out = 0;
    uint64_t biggest = 0, staged = 0;
    for (size_t i = 0; i < nt; i++) {
        if (j->primary[i] == SIZE_MAX) continue;
        const slot *s = &j->slots[j->primary[i]];
        if (s->host) {
            in[n_in++] = i;
        } else {
            out[n_out++] = i;
            uint64_t b = tl_model_tensor(j->m, i)->nbytes;
            if (b > biggest) biggest = b;
            staged += b;
        }
    }
    qsort_r(in, n_in, sizeof *in, by_offset, j->m);
    qsort_r(out, n_out, sizeof *out, by_offset, j->m);
    st->n_in_place = n_in;
    st->n_staged = n_out;
    if (!report(j, 0)) {
        e = tl_set_error(TL_ERR_CANCELLED, "%s: load cancelled by the progress callback", j->path);
        goto done;
    }
    if (n_in && (e = run_load(j, lo, in, n_in, dest_in_place, &st->mode))) goto done;
    for (size_t k = 0; k < n_in; k++)
        copy_secondaries(j, in[k], j->slots[j->primary[in[k]]].t->data);

    if (n_out) {
        /* STAGING_MIN (or all staged bytes when fewer), and at least the largest tensor */
        j->stg_len = staged < STAGING_MIN ? staged : STAGING_MIN;
        if (biggest > j->stg_len) j->stg_len = biggest;
        j->stg_len = (j->stg_len + STAGING_ALIGN - 1) / STAGING_ALIGN * STAGING_ALIGN;
        j->stg = aligned_alloc(4096, (j->stg_len + 4095) / 4096 * 4096);
        if (!j->stg) {
            e = tl_set_error(TL_ERR_NOMEM, "%s: cannot allocate %llu bytes of staging", j->path,
                             (unsigned long long)j->stg_len);
            goto done;
        }
        st->staging = j->stg_len;
        j->stg_off = off;
        for (size_t a = 0; a < n_out;) {
            /* a batch: consecutive staged tensors that fit in the staging buffer */
            size_t b = a;
            uint64_t pos = 0;
            while (b < n_out) {
                uint64_t nb = tl_model_tensor(j->m, out[b])->nbytes;
                if (b > a && pos + nb > j->stg_len) break;
                off[out[b]] = pos;
                pos = (pos + nb + STAGING_ALIGN - 1) / STAGING_ALIGN * STAGING_ALIGN;
                b++;
            }
            if ((e = run_load(j, lo, out + a, b - a, dest_staging, n_in ? NULL : &st->mode)))
                goto done;
            for (size_t k = a; k < b; k++) {
                slot *s = &j->slots[j->primary[out[k]]];
                ggml_backend_tensor_set(s->t, j->stg + off[out[k]], 0, ggml_nbytes(s->t));
                if (s->t->buffer && !ggml_backend_buffer_is_host(s->t->buffer) &&
                    ggml_backend_buft_get_device(ggml_backend_buffer_get_type(s->t->buffer)) &&
                    ggml_backend_dev_type(ggml_backend_buft_get_device(ggml_backend_buffer_get_type(
                        s->t->buffer))) == GGML_BACKEND_DEVICE_TYPE_CPU)
                    st->n_repacked++;
                copy_secondaries(j, out[k], j->stg + off[out[k]]);
            }
            a = b;
        }
    }
    for (size_t k = 0; k < j->n; k++) {
        if (j->slots[k].src != TL_NOT_FOUND) continue;
        if ((e = fill_neutral(j, j->slots[k].t))) goto done;
        st->n_neutral++;
    }
    st->bytes = j->total;
    if (!report(j, 0))
        e = tl_set_error(TL_ERR_CANCELLED, "%s: load cancelled by the progress callback", j->path);
done:
    free(in);
    free(out);
    free(off);
    return e;
}

tl_status tl_llama_model_load(const char *path, const tl_llama_options *opts,
                              struct llama_model_params params, struct llama_model **out) {
    double t0 = now_s();
    if (!out || !path)
        return tl_set_error(TL_ERR_INVALID_ARG, "tl_llama_model_load: NULL argument");
    *out = NULL;
    tl_llama_options o;
    tl_llama_options_init(&o);
    if (opts) {
        if (!opts->size)
            return tl_set_error(TL_ERR_INVALID_ARG, "tl_llama_model_load: options size 0");
        memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
        o.size = sizeof o;
    }
    if (o.n_loras && !o.loras)
        return tl_set_error(TL_ERR_INVALID_ARG, "tl_llama_model_load: n_loras without loras");
    tl_llama_stats stats;
    memset(&stats, 0, sizeof stats);
    tl_load_options lo;
    tl_status st = load_opts(&o, &lo);
    if (st) return st;

    job j;
    memset(&j, 0, sizeof j);
    j.path = path;
    j.progress = params.progress_callback;
    j.progress_user = params.progress_callback_user_data;

    tl_model_options mo;
    tl_model_options_init(&mo);
    mo.writable = o.n_loras > 0;
    const char *paths[1] = {path};
    st = tl_model_open(paths, 1, &mo, &j.m);
    if (st) return st;
    if (tl_model_file(j.m, 0)->format != TL_FORMAT_GGUF) {
        tl_model_close(j.m);
        return tl_set_error(TL_ERR_UNSUPPORTED, "%s: llama.cpp takes GGUF files", path);
    }
    if (o.n_loras && (st = merge_loras(&j, &o, &stats.n_merged))) {
        tl_model_close(j.m);
        return st;
    }

    /* llama.cpp reads the metadata from the header (no tensor data) */
    struct gguf_init_params gp = {.no_alloc = true, .ctx = NULL};
    tl__llama_log log;
    tl__llama_log_begin(&log);
    struct gguf_context *meta = gguf_init_from_file(path, gp);
    tl__llama_overrides ov = {0};
    tl__llama_place place = {0};
    struct llama_model *model = NULL;
    if (!meta) {
        st = tl_set_error(TL_ERR_FORMAT, "%s: llama.cpp cannot read the GGUF header%s%s", path,
                          log.error[0] ? ": " : "", log.error);
    } else {
        j.tied = tie_output(j.m, meta);
        if (o.plan && (st = tl__llama_place_make(j.m, &params, &o, &place)) == TL_OK)
            params = place.params;
        if (!st) st = tl__llama_overrides_make(j.m, &params, j.tied, &ov);
    }
    double t1 = now_s();
    if (!st) {
        struct llama_model_params p = params;
        if (ov.list) p.tensor_buft_overrides = ov.list;
        /* llama.cpp's loading dots stay quiet: progress is reported from the load below */
        p.progress_callback = NULL;
        p.progress_callback_user_data = NULL;
        model = llama_model_init_from_user(meta, on_tensor, &j, p);
        if (!model)
            st = tl_set_error(TL_ERR_UNSUPPORTED, "%s: llama.cpp refused the model: %s", path,
                              log.error[0] ? log.error : "(no message)");
        else if (j.oom)
            st = tl_set_error(TL_ERR_NOMEM, "%s: out of memory", path);
    }
    tl__llama_log_end(&log);
    /* llama.cpp copied what it keeps of the metadata: freed before the weights come in */
    if (meta) gguf_free(meta);
    tl__llama_overrides_free(&ov);
    tl__llama_place_free(&place);
    stats.n_repacked = 0;
    stats.seconds_llama = now_s() - t1;
    double t2 = now_s();
    stats.n_tensors = j.n;
    if (!st) st = classify(&j, &stats);
    if (!st) st = fill(&j, &lo, &stats);
    stats.seconds_load = now_s() - t2;
    if (st) {
        llama_model_free(model);
        model = NULL;
    }
    free(j.slots);
    free(j.primary);
    free(j.stg);
    tl_model_close(j.m);
    stats.seconds = now_s() - t0;
    if (o.stats) *o.stats = stats;
    *out = model;
    return st;
}
