/*
 * load.c — tl_model_load: the load job. For each file it chooses a mode
 * (auto: from page-cache residency), lays out one destination mapping,
 * splits the file's bytes into chunks and has a bounded pool of workers (or
 * one io_uring queue) move them; then verifies, evicts and accounts.
 *
 * Memory bound: destinations (the bytes loaded, rounded to pages) + the
 * staging ring (count x size, only for converted files and --verify) +
 * metadata proportional to the number of tensors and chunks.
 */
#include "core/checked.h"
#include "core/error.h"
#include "core/strbuf.h"
#include "io/convert.h"
#include "io/staging.h"
#include "io/verify.h"
#include "os/direct.h"
#include "os/hostmem.h"
#include "os/os.h"
#include "os/thread.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WARM_THRESHOLD 0.5
#define ALIGN_DIRECT ((uint64_t)TL_OS_DIRECT_ALIGN)
#define MAX_THREADS 64u

static inline uint64_t up_direct(uint64_t x) {
    return (x + ALIGN_DIRECT - 1) & ~(ALIGN_DIRECT - 1);
}

typedef struct unit {
    uint64_t off; /* file offset of the source bytes */
    uint64_t len; /* source bytes */
    size_t tensor;
} unit;

typedef struct lfile {
    tl_load_file pub;
    char reason[256];
    bool packed; /* some tensor converted: tensors packed one after another */
    uint64_t span_off, span_end;
    unsigned char *dest;
    uint64_t dest_len;
    int dfd;
    unit *units;
    size_t n_units;
    size_t *order; /* tensor indices of this file by offset */
    size_t n_order;
} lfile;

struct tl_load_result {
    tl_loaded_tensor *tensors;
    size_t n_tensors;
    lfile *files;
    size_t n_files;
    tl_load_stats stats;
    tl_strbuf notes; /* best effort: an out-of-memory note is dropped */
};

typedef struct job {
    tl_model *m;
    tl_load_result *r;
    tl_load_options o;
    tl_staging staging;
    lfile *cur;
    _Atomic size_t next_unit;
    _Atomic uint64_t done;
    _Atomic int cancel;
    uint64_t total;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned running;
    tl_status err;
    char errmsg[1024];
} job;

const char *tl_load_mode_name(tl_load_mode m) {
    switch (m) {
    case TL_LOAD_AUTO:
        return "auto";
    case TL_LOAD_MMAP:
        return "mmap";
    case TL_LOAD_BUFFERED:
        return "buffered";
    case TL_LOAD_DIRECT:
        return "direct";
    }
    return NULL;
}

int tl_load_mode_from_name(const char *name) {
    if (!name) return -1;
    for (int i = 0; i <= TL_LOAD_DIRECT; i++)
        if (!strcmp(name, tl_load_mode_name((tl_load_mode)i))) return i;
    return -1;
}

static void note(tl_load_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(tl_load_result *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    tl_strbuf_vprintf(&r->notes, fmt, ap);
    va_end(ap);
    tl_strbuf_printf(&r->notes, "\n");
}

/* Record the first failure of a worker (messages are thread-local: copy it). */
static void job_fail(job *j, tl_status s) {
    pthread_mutex_lock(&j->mu);
    if (j->err == TL_OK) {
        j->err = s;
        snprintf(j->errmsg, sizeof j->errmsg, "%s", tl_last_error());
    }
    pthread_mutex_unlock(&j->mu);
    atomic_store(&j->cancel, 1);
}

/* Early end of file means the file shrank since the catalog was read. */
static tl_status read_status(int e) {
    return e == ENODATA ? TL_ERR_CHANGED : TL_ERR_IO;
}
static const char *read_error(int e) {
    return e == ENODATA ? "the file ends early (truncated or rewritten since it was opened)"
                        : strerror(e);
}

static const char *tensor_name(job *j, size_t t) {
    return tl_model_tensor(j->m, t)->name;
}

/* Move one chunk. stg: the worker's staging buffer (taken on first need). */
static tl_status do_unit(job *j, lfile *f, const unit *u, unsigned char **stg) {
    const char *path = f->pub.path;
    const tl_tensor_info *ti = tl_model_tensor(j->m, u->tensor);
    tl_loaded_tensor *lt = &j->r->tensors[u->tensor];
    int e;
    if (!f->packed) {
        unsigned char *dst = f->dest + (u->off - f->span_off);
        if (f->pub.mode == TL_LOAD_DIRECT) {
            uint64_t alen = up_direct(u->len);
            size_t got = 0;
            e = tl_os_pread_direct(f->dfd, dst, (size_t)alen, u->off, &got);
            if (!e && got < u->len) e = ENODATA;
        } else {
            e = tl_os_pread_full(tl_model_file_fd(j->m, ti->file), dst, (size_t)u->len, u->off);
        }
        if (e)
            return tl_err(read_status(e), "%s: tensor %s: read of %llu bytes at %llu: %s", path,
                          ti->name, (unsigned long long)u->len, (unsigned long long)u->off,
                          read_error(e));
        return TL_OK;
    }
    /* packed: source chunk -> (staging) -> convert into the tensor's place */
    const unsigned char *src;
    if (ti->strides) {
        /* a strided view: its elements gathered from the mapping (guarded) into staging */
        if (!*stg) {
            e = tl_staging_take(&j->staging, stg);
            if (e)
                return tl_err(TL_ERR_NOMEM, "%s: tensor %s: staging buffer: %s", path, ti->name,
                              strerror(e));
        }
        tl_status s = tl_model_tensor_read(j->m, u->tensor, u->off - ti->offset, *stg, u->len);
        if (s != TL_OK) return s;
        src = *stg;
    } else if (f->pub.mode == TL_LOAD_MMAP) {
        src = (const unsigned char *)tl_model_file_map(j->m, ti->file) + u->off;
    } else {
        if (!*stg) {
            e = tl_staging_take(&j->staging, stg);
            if (e)
                return tl_err(TL_ERR_NOMEM, "%s: tensor %s: staging buffer: %s", path, ti->name,
                              strerror(e));
        }
        if (f->pub.mode == TL_LOAD_DIRECT) {
            uint64_t a0 = u->off & ~(ALIGN_DIRECT - 1), aend = up_direct(u->off + u->len);
            size_t got = 0;
            e = tl_os_pread_direct(f->dfd, *stg, (size_t)(aend - a0), a0, &got);
            if (!e && got < u->off + u->len - a0) e = ENODATA;
            src = *stg + (u->off - a0);
        } else {
            e = tl_os_pread_full(tl_model_file_fd(j->m, ti->file), *stg, (size_t)u->len, u->off);
            src = *stg;
        }
        if (e)
            return tl_err(read_status(e), "%s: tensor %s: read of %llu bytes at %llu: %s", path,
                          ti->name, (unsigned long long)u->len, (unsigned long long)u->off,
                          read_error(e));
    }
    unsigned in = tl_convert_elem_size(ti->dtype), out = tl_convert_elem_size(lt->dtype);
    if (in == 0) { /* a type without conversion in a packed file: plain copy */
        memcpy((unsigned char *)lt->data + (u->off - ti->offset), src, (size_t)u->len);
        return TL_OK;
    }
    uint64_t first = (u->off - ti->offset) / in, bad = 0;
    if (!tl_convert_run(lt->dtype, (unsigned char *)lt->data + first * out, ti->dtype, src,
                        u->len / in, &bad))
        return tl_err(TL_ERR_UNSUPPORTED, "%s: tensor %s: element %llu does not fit in %s", path,
                      ti->name, (unsigned long long)(first + bad), tl_dtype_name(lt->dtype));
    return TL_OK;
}

static void worker_done(job *j) {
    pthread_mutex_lock(&j->mu);
    j->running--;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static void *worker_main(void *arg) {
    job *j = arg;
    lfile *f = j->cur;
    unsigned char *stg = NULL;
    while (!atomic_load(&j->cancel)) {
        size_t k = atomic_fetch_add(&j->next_unit, 1);
        if (k >= f->n_units) break;
        tl_status s = do_unit(j, f, &f->units[k], &stg);
        if (s != TL_OK) {
            job_fail(j, s);
            break;
        }
        atomic_fetch_add(&j->done, f->units[k].len);
    }
    if (stg) tl_staging_give(&j->staging, stg);
    worker_done(j);
    return NULL;
}

/* One thread keeps staging_count direct reads in flight straight into the destination. */
static void *uring_main(void *arg) {
    job *j = arg;
    lfile *f = j->cur;
    tl_os_uring *q = NULL;
    unsigned depth = j->o.staging_count;
    int e = tl_os_uring_open(depth, &q);
    size_t next = 0, inflight = 0;
    tl_status s = TL_OK;
    if (e) s = tl_err(TL_ERR_IO, "%s: io_uring: %s", f->pub.path, strerror(e));
    while (s == TL_OK && (next < f->n_units || inflight)) {
        while (!atomic_load(&j->cancel) && inflight < depth && next < f->n_units) {
            const unit *u = &f->units[next];
            uint64_t alen = up_direct(u->len);
            e = tl_os_uring_read(q, f->dfd, f->dest + (u->off - f->span_off), (size_t)alen, u->off,
                                 next);
            if (e) {
                s = tl_err(TL_ERR_IO, "%s: tensor %s: io_uring read at %llu: %s", f->pub.path,
                           tensor_name(j, u->tensor), (unsigned long long)u->off, strerror(e));
                break;
            }
            next++;
            inflight++;
        }
        if (inflight == 0) break;
        if ((e = tl_os_uring_submit(q)) != 0) {
            s = tl_err(TL_ERR_IO, "%s: io_uring submit: %s", f->pub.path, strerror(e));
            break;
        }
        uint64_t tag;
        int64_t res;
        if ((e = tl_os_uring_wait(q, &tag, &res)) != 0) {
            s = tl_err(TL_ERR_IO, "%s: io_uring wait: %s", f->pub.path, strerror(e));
            break;
        }
        inflight--;
        const unit *u = &f->units[tag];
        if (res < 0) {
            s = tl_err(TL_ERR_IO, "%s: tensor %s: read of %llu bytes at %llu: %s", f->pub.path,
                       tensor_name(j, u->tensor), (unsigned long long)u->len,
                       (unsigned long long)u->off, strerror((int)-res));
            break;
        }
        if ((uint64_t)res < u->len) { /* short read: finish it synchronously */
            uint64_t have = (uint64_t)res & ~(ALIGN_DIRECT - 1), alen = up_direct(u->len - have);
            size_t got = 0;
            e = tl_os_pread_direct(f->dfd, f->dest + (u->off - f->span_off) + have, (size_t)alen,
                                   u->off + have, &got);
            if (!e && have + got < u->len) e = ENODATA;
            if (e) {
                s = tl_err(read_status(e), "%s: tensor %s: read at %llu: %s", f->pub.path,
                           tensor_name(j, u->tensor), (unsigned long long)(u->off + have),
                           read_error(e));
                break;
            }
        }
        atomic_fetch_add(&j->done, u->len);
    }
    /* never leave reads in flight into memory that may be freed */
    while (q && inflight) {
        uint64_t tag;
        int64_t res;
        if (tl_os_uring_wait(q, &tag, &res) != 0) break;
        inflight--;
    }
    tl_os_uring_close(q);
    if (s != TL_OK) job_fail(j, s);
    worker_done(j);
    return NULL;
}

/*
 * Beside the io_uring thread: fault the destination in ahead of the reads
 * (MADV_POPULATE_WRITE never writes data, so racing the reads is safe).
 * Fresh pages cost a fault and zeroing each; done here, that work overlaps
 * with the device's transfers instead of delaying each submission.
 */
static void *prefault_main(void *arg) {
    job *j = arg;
    lfile *f = j->cur;
    for (size_t k = 0; k < f->n_units && !atomic_load(&j->cancel); k++) {
        const unit *u = &f->units[k];
        if (tl_os_populate_write(f->dest + (u->off - f->span_off), up_direct(u->len)) != 0) break;
    }
    worker_done(j);
    return NULL;
}

static void report_progress(job *j) {
    if (!j->o.progress || atomic_load(&j->cancel)) return;
    if (!j->o.progress(j->o.progress_user, atomic_load(&j->done), j->total)) {
        pthread_mutex_lock(&j->mu);
        if (j->err == TL_OK) {
            j->err = TL_ERR_CANCELLED;
            snprintf(j->errmsg, sizeof j->errmsg, "load cancelled by the progress callback");
        }
        pthread_mutex_unlock(&j->mu);
        atomic_store(&j->cancel, 1);
    }
}

/* Run the file's units on n workers (or the io_uring thread); progress on this thread. */
static tl_status run_units(job *j, lfile *f, unsigned n, bool uring) {
    if (f->n_units == 0) return TL_OK;
    tl_os_thread *th[MAX_THREADS];
    j->cur = f;
    atomic_store(&j->next_unit, 0);
    if (uring) n = 2; /* the queue and the prefault thread */
    unsigned started = 0;
    pthread_mutex_lock(&j->mu);
    j->running = n;
    pthread_mutex_unlock(&j->mu);
    for (unsigned i = 0; i < n; i++) {
        int e = tl_os_thread_start(&th[i],
                                   !uring   ? worker_main
                                   : i == 0 ? uring_main
                                            : prefault_main,
                                   j);
        if (e) {
            pthread_mutex_lock(&j->mu);
            j->running -= n - i;
            pthread_mutex_unlock(&j->mu);
            if (started == 0)
                return tl_err(TL_ERR_NOMEM, "%s: cannot start a worker: %s", f->pub.path,
                              strerror(e));
            break;
        }
        started++;
    }
    pthread_mutex_lock(&j->mu);
    while (j->running > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        if (j->running > 0) {
            pthread_mutex_unlock(&j->mu);
            report_progress(j);
            pthread_mutex_lock(&j->mu);
        }
    }
    pthread_mutex_unlock(&j->mu);
    for (unsigned i = 0; i < started; i++)
        tl_os_thread_join(th[i]);
    if (j->err != TL_OK) return tl_err(j->err, "%s", j->errmsg);
    return TL_OK;
}

static int cmp_off(const void *a, const void *b, void *ctx) {
    const tl_model *m = ctx;
    uint64_t x = tl_model_tensor(m, *(const size_t *)a)->offset;
    uint64_t y = tl_model_tensor(m, *(const size_t *)b)->offset;
    return x < y ? -1 : x > y;
}

static void residency(job *j, size_t fi, uint64_t *bytes, double *frac) {
    const tl_file_info *fin = tl_model_file(j->m, fi);
    uint64_t res = 0, tot = 0;
    *bytes = 0;
    if (frac) *frac = 0;
    if (tl_os_file_residency(tl_model_file_fd(j->m, fi), fin->size, &res, &tot) != 0) return;
    *bytes = res * tl_os_page_size();
    if (*bytes > fin->size) *bytes = fin->size;
    if (frac) *frac = tot ? (double)res / (double)tot : 1.0;
}

/* Append a chunk unit, growing the array. */
static tl_status add_unit(lfile *f, size_t *cap, uint64_t off, uint64_t len, size_t t) {
    if (f->n_units == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        unit *p = tl_os_realloc(f->units, nc * sizeof *p);
        if (!p) return tl_err(TL_ERR_NOMEM, "%s: out of memory", f->pub.path);
        f->units = p;
        *cap = nc;
    }
    f->units[f->n_units++] = (unit){off, len, t};
    return TL_OK;
}

/* Choose the mode of one file and say why. */
static void choose_mode(job *j, lfile *f) {
    const char *path = f->pub.path;
    tl_load_mode mode = j->o.mode;
    double pct = f->pub.residency_before * 100.0;
    if (mode == TL_LOAD_AUTO) {
        if (f->pub.residency_before >= WARM_THRESHOLD) {
            if (j->o.accept_views && !f->packed) {
                mode = TL_LOAD_MMAP;
                snprintf(f->reason, sizeof f->reason,
                         "warm (%.0f%% in the page cache) and views accepted: zero copy", pct);
            } else {
                mode = TL_LOAD_BUFFERED;
                snprintf(f->reason, sizeof f->reason,
                         "warm (%.0f%% in the page cache): copied from the cache", pct);
            }
        } else {
            const char *env = getenv("TIERLOAD_COLD_PATH");
            if (env && !strcmp(env, "buffered")) {
                mode = TL_LOAD_BUFFERED;
                snprintf(f->reason, sizeof f->reason,
                         "cold (%.0f%% in the page cache): TIERLOAD_COLD_PATH=buffered", pct);
            } else {
                mode = TL_LOAD_DIRECT;
                snprintf(f->reason, sizeof f->reason,
                         "cold (%.0f%% in the page cache): O_DIRECT, no page cache to fill", pct);
            }
        }
    } else {
        snprintf(f->reason, sizeof f->reason, "asked for (%.0f%% in the page cache)", pct);
    }
    if (mode == TL_LOAD_DIRECT) {
        int e = tl_os_open_direct(path, &f->dfd);
        if (e) {
            f->dfd = -1;
            f->pub.direct_fallback = true;
            mode = TL_LOAD_BUFFERED;
            size_t l = strlen(f->reason);
            snprintf(f->reason + l, sizeof f->reason - l,
                     "; O_DIRECT refused (%s): buffered instead", strerror(e));
            note(j->r,
                 "%s: O_DIRECT refused by the filesystem (%s); falling back to buffered reads",
                 path, strerror(e));
        }
    }
    f->pub.mode = mode;
    f->pub.reason = f->reason;
}

/* Lay out the destination and the chunks of one file. */
static tl_status plan_file(job *j, lfile *f) {
    tl_model *m = j->m;
    const char *path = f->pub.path;
    uint64_t stg = j->o.staging_size;
    size_t cap = 0;
    if (f->n_order == 0) return TL_OK;
    if (!f->packed) {
        const tl_tensor_info *first = tl_model_tensor(m, f->order[0]);
        f->span_off = first->offset & ~(ALIGN_DIRECT - 1);
        f->span_end = f->span_off;
        for (size_t k = 0; k < f->n_order; k++) {
            const tl_tensor_info *t = tl_model_tensor(m, f->order[k]);
            if (t->offset + t->nbytes > f->span_end) f->span_end = t->offset + t->nbytes;
        }
        if (f->pub.mode == TL_LOAD_MMAP) {
            const unsigned char *map = tl_model_file_map(m, first->file);
            for (size_t k = 0; k < f->n_order; k++) {
                size_t ti = f->order[k];
                const tl_tensor_info *t = tl_model_tensor(m, ti);
                j->r->tensors[ti] =
                    (tl_loaded_tensor){map + t->offset, t->nbytes, t->dtype, true, false};
            }
            return TL_OK;
        }
        uint64_t len = up_direct(f->span_end - f->span_off);
        int e = tl_os_anon_alloc(len, !j->o.no_hugepages, (void **)&f->dest, &f->dest_len);
        if (e)
            return tl_err(TL_ERR_NOMEM, "%s: cannot allocate %llu bytes for its tensors: %s", path,
                          (unsigned long long)len, strerror(e));
        size_t k = 0;
        for (uint64_t off = f->span_off; off < f->span_end; off += stg) {
            uint64_t n = f->span_end - off < stg ? f->span_end - off : stg;
            while (k + 1 < f->n_order && tl_model_tensor(m, f->order[k + 1])->offset <= off)
                k++;
            tl_status s = add_unit(f, &cap, off, n, f->order[k]);
            if (s != TL_OK) return s;
        }
        for (k = 0; k < f->n_order; k++) {
            size_t ti = f->order[k];
            const tl_tensor_info *t = tl_model_tensor(m, ti);
            j->r->tensors[ti] = (tl_loaded_tensor){f->dest + (t->offset - f->span_off), t->nbytes,
                                                   t->dtype, false, false};
        }
        return TL_OK;
    }
    /* packed: converted tensors (and, except in mmap mode, the others) one after another */
    uint64_t total = 0;
    for (size_t k = 0; k < f->n_order; k++) {
        const tl_tensor_info *t = tl_model_tensor(m, f->order[k]);
        tl_dtype to = j->o.convert ? tl_convert_target(t->dtype, j->o.dtype) : t->dtype;
        if (f->pub.mode == TL_LOAD_MMAP && to == t->dtype && !t->strides) continue;
        uint64_t out = to == t->dtype ? t->nbytes : t->n_elements * tl_convert_elem_size(to);
        if (!tl_align_up_u64(total, 64, &total) || !tl_add_u64(total, out, &total))
            return tl_err(TL_ERR_FORMAT, "%s: tensor sizes overflow", path);
    }
    if (total) {
        int e = tl_os_anon_alloc(total, !j->o.no_hugepages, (void **)&f->dest, &f->dest_len);
        if (e)
            return tl_err(TL_ERR_NOMEM, "%s: cannot allocate %llu bytes for its tensors: %s", path,
                          (unsigned long long)total, strerror(e));
    }
    uint64_t pos = 0;
    for (size_t k = 0; k < f->n_order; k++) {
        size_t ti = f->order[k];
        const tl_tensor_info *t = tl_model_tensor(m, ti);
        tl_dtype to = j->o.convert ? tl_convert_target(t->dtype, j->o.dtype) : t->dtype;
        if (f->pub.mode == TL_LOAD_MMAP && to == t->dtype && !t->strides) {
            j->r->tensors[ti] =
                (tl_loaded_tensor){(const unsigned char *)tl_model_file_map(m, t->file) + t->offset,
                                   t->nbytes, t->dtype, true, false};
            continue;
        }
        unsigned in = tl_convert_elem_size(t->dtype);
        uint64_t out = to == t->dtype ? t->nbytes : t->n_elements * tl_convert_elem_size(to);
        tl_align_up_u64(pos, 64, &pos);
        j->r->tensors[ti] = (tl_loaded_tensor){f->dest + pos, out, to, false, to != t->dtype};
        pos += out;
        /* chunks: whole elements, small enough for an aligned direct read into staging */
        uint64_t step = in ? (stg - 2 * ALIGN_DIRECT) / in * in : stg - 2 * ALIGN_DIRECT;
        for (uint64_t o = 0; o < t->nbytes; o += step) {
            uint64_t n = t->nbytes - o < step ? t->nbytes - o : step;
            tl_status s = add_unit(f, &cap, t->offset + o, n, ti);
            if (s != TL_OK) return s;
        }
    }
    return TL_OK;
}

void tl_load_result_free(tl_load_result *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_files; i++) {
        lfile *f = &r->files[i];
        if (f->dest) tl_os_anon_free(f->dest, f->dest_len);
        if (f->dfd >= 0) tl_os_close(f->dfd);
        free(f->units);
        free(f->order);
    }
    free(r->files);
    free(r->tensors);
    free(r->notes.s);
    free(r);
}

/* Load, verify and evict one file. */
static tl_status load_file(job *j, size_t fi) {
    lfile *f = &j->r->files[fi];
    tl_model *m = j->m;
    double t0 = tl_os_now();
    tl_status s;
    bool uring = false;
    unsigned n = j->o.threads;
    if (f->packed && f->pub.mode != TL_LOAD_MMAP && n > j->o.staging_count) n = j->o.staging_count;
    if (f->pub.mode == TL_LOAD_DIRECT && !f->packed && !getenv("TIERLOAD_NO_URING")) {
        tl_os_uring *probe = NULL;
        if (tl_os_uring_open(2, &probe) == 0) {
            uring = true;
            tl_os_uring_close(probe);
        }
    }
    f->pub.uring = uring;
    if (f->pub.mode == TL_LOAD_MMAP && !f->packed && j->o.populate && f->span_end > f->span_off) {
        const unsigned char *map = tl_model_file_map(m, fi);
        int e = tl_os_populate_read(map + f->span_off, f->span_end - f->span_off);
        if (e) return tl_err(TL_ERR_IO, "%s: populating the mapping: %s", f->pub.path, strerror(e));
    }
    s = run_units(j, f, n, uring);
    if (s != TL_OK) return s;
    if (f->pub.mode == TL_LOAD_MMAP && !f->packed) atomic_fetch_add(&j->done, f->pub.bytes);
    f->pub.seconds = tl_os_now() - t0;
    report_progress(j);
    if (j->err != TL_OK) return tl_err(j->err, "%s", j->errmsg);
    if (j->o.verify) {
        unsigned char *a = NULL, *b = NULL;
        int e = tl_staging_take(&j->staging, &a);
        if (!e) e = tl_staging_take(&j->staging, &b);
        if (e) s = tl_err(TL_ERR_NOMEM, "%s: verify: staging buffer: %s", f->pub.path, strerror(e));
        for (size_t k = 0; s == TL_OK && k < f->n_order; k++) {
            size_t ti = f->order[k];
            s = tl_io_verify_tensor(m, ti, f->pub.path, &j->r->tensors[ti], a, b,
                                    j->o.staging_size);
        }
        if (a) tl_staging_give(&j->staging, a);
        if (b) tl_staging_give(&j->staging, b);
        if (s != TL_OK) return s;
    }
    if (j->o.evict) {
        bool views = false;
        for (size_t k = 0; k < f->n_order; k++)
            views |= j->r->tensors[f->order[k]].view;
        if (views) {
            note(j->r, "%s: not evicted: its tensors are views into its mapping", f->pub.path);
        } else {
            int e = tl_os_fadvise_dontneed(tl_model_file_fd(m, fi), 0, 0);
            /* pages mapped by the catalog (headers) stay cached unless unmapped; a
               writable model may hold patches there, so it is left alone */
            bool writable = f->n_order && tl_model_tensor_data_mut(m, f->order[0]) != NULL;
            if (!e && !writable) {
                tl_os_drop_mapping_pages(tl_model_file_map(m, fi), f->pub.size);
                e = tl_os_fadvise_dontneed(tl_model_file_fd(m, fi), 0, 0);
            }
            if (e)
                note(j->r, "%s: eviction failed: %s", f->pub.path, strerror(e));
            else
                f->pub.evicted = true;
        }
    }
    residency(j, fi, &f->pub.page_cache_after, NULL);
    return TL_OK;
}

static tl_status check_options(const tl_load_options *in, tl_load_options *o) {
    if (in)
        *o = *in;
    else
        memset(o, 0, sizeof *o);
    if (tl_load_mode_name(o->mode) == NULL)
        return tl_err(TL_ERR_INVALID_ARG, "load: invalid mode %d", (int)o->mode);
    if (o->convert && o->dtype != TL_DTYPE_F32 && o->dtype != TL_DTYPE_F16 &&
        o->dtype != TL_DTYPE_BF16 && o->dtype != TL_DTYPE_I32)
        return tl_err(TL_ERR_UNSUPPORTED, "load: cannot convert to %s (F32, F16, BF16 or I32)",
                      tl_dtype_name(o->dtype) ? tl_dtype_name(o->dtype) : "an invalid type");
    if (o->threads == 0) o->threads = TL_LOAD_DEFAULT_THREADS;
    if (o->threads > MAX_THREADS) o->threads = MAX_THREADS;
    if (o->staging_size == 0) o->staging_size = TL_LOAD_DEFAULT_STAGING_SIZE;
    if (!tl_align_up_u64(o->staging_size, 64 << 10, &o->staging_size) ||
        o->staging_size > (1ull << 31))
        return tl_err(TL_ERR_INVALID_ARG, "load: staging buffers must be at most 2 GiB");
    if (o->staging_count == 0) o->staging_count = TL_LOAD_DEFAULT_STAGING_COUNT;
    if (o->staging_count < 2) o->staging_count = 2;
    if (o->staging_count > MAX_THREADS) o->staging_count = MAX_THREADS;
    return TL_OK;
}

tl_status tl_model_load(tl_model *m, const tl_load_options *opts, tl_load_result **out) {
    if (!out) return tl_err(TL_ERR_INVALID_ARG, "tl_model_load: out is NULL");
    *out = NULL;
    if (!m) return tl_err(TL_ERR_INVALID_ARG, "tl_model_load: model is NULL");
    job j;
    memset(&j, 0, sizeof j);
    tl_status s = check_options(opts, &j.o);
    if (s != TL_OK) return s;
    double t0 = tl_os_now();
    tl_memwatch *watch = NULL;
    s = tl_memwatch_start(j.o.sample_interval, &watch);
    if (s != TL_OK) return s;
    j.m = m;
    tl_load_result *r = tl_os_calloc(1, sizeof *r);
    if (!r) {
        tl_memwatch_stop(watch, NULL);
        return tl_err(TL_ERR_NOMEM, "load: out of memory");
    }
    j.r = r;
    r->n_tensors = tl_model_tensor_count(m);
    r->n_files = tl_model_file_count(m);
    r->tensors = tl_os_calloc(r->n_tensors, sizeof *r->tensors);
    r->files = tl_os_calloc(r->n_files, sizeof *r->files);
    size_t *order = tl_os_calloc(r->n_tensors, sizeof *order);
    if (!r->tensors || !r->files || !order ||
        tl_staging_init(&j.staging, j.o.staging_count, j.o.staging_size)) {
        free(order);
        free(r->files);
        r->files = NULL;
        r->n_files = 0;
        tl_load_result_free(r);
        tl_memwatch_stop(watch, NULL);
        return tl_err(TL_ERR_NOMEM, "load: out of memory");
    }
    pthread_mutex_init(&j.mu, NULL);
    pthread_cond_init(&j.cv, NULL);
    r->stats.threads = j.o.threads;
    r->stats.staging_bound = (uint64_t)j.o.staging_count * j.o.staging_size;
    for (size_t i = 0; i < r->n_tensors; i++)
        order[i] = i;
    qsort_r(order, r->n_tensors, sizeof *order, cmp_off, m);
    /* plan: per-file tensor lists, residency and mode */
    for (size_t fi = 0; fi < r->n_files; fi++) {
        lfile *f = &r->files[fi];
        const tl_file_info *fin = tl_model_file(m, fi);
        f->dfd = -1;
        f->pub.path = fin->path;
        f->pub.size = fin->size;
        f->order = tl_os_calloc(fin->n_tensors ? fin->n_tensors : 1, sizeof *f->order);
        if (!f->order) {
            s = tl_err(TL_ERR_NOMEM, "load: out of memory");
            break;
        }
        for (size_t k = 0; k < r->n_tensors; k++) {
            const tl_tensor_info *t = tl_model_tensor(m, order[k]);
            if (t->file != fi || f->n_order >= fin->n_tensors) continue;
            f->order[f->n_order++] = order[k];
            f->pub.bytes += t->nbytes;
            if (j.o.convert && tl_convert_target(t->dtype, j.o.dtype) != t->dtype) f->packed = true;
            if (t->strides) f->packed = true; /* gathered: never a byte range of the file */
        }
        residency(&j, fi, &f->pub.page_cache_before, &f->pub.residency_before);
        choose_mode(&j, f);
        note(r, "%s: %s (%s)", f->pub.path, tl_load_mode_name(f->pub.mode), f->reason);
        s = plan_file(&j, f);
        if (s != TL_OK) break;
        r->stats.dest_bytes += f->dest_len;
        for (size_t k = 0; k < f->n_units; k++)
            j.total += f->units[k].len;
        if (f->pub.mode == TL_LOAD_MMAP && !f->packed) j.total += f->pub.bytes;
        r->stats.bytes += f->pub.bytes;
        r->stats.page_cache_before += f->pub.page_cache_before;
    }
    free(order);
    double tr = tl_os_now();
    for (size_t fi = 0; s == TL_OK && fi < r->n_files; fi++)
        s = load_file(&j, fi);
    r->stats.read_seconds = tl_os_now() - tr;
    tl_memwatch_sample(watch);
    r->stats.staging_used = tl_staging_used(&j.staging);
    tl_staging_free(&j.staging);
    pthread_mutex_destroy(&j.mu);
    pthread_cond_destroy(&j.cv);
    tl_memwatch_stop(watch, &r->stats.mem);
    if (s != TL_OK) {
        tl_load_result_free(r);
        return s;
    }
    for (size_t i = 0; i < r->n_tensors; i++)
        r->stats.bytes_out += r->tensors[i].nbytes;
    for (size_t fi = 0; fi < r->n_files; fi++)
        r->stats.page_cache_after += r->files[fi].pub.page_cache_after;
    r->stats.seconds = tl_os_now() - t0;
    *out = r;
    return TL_OK;
}

const tl_loaded_tensor *tl_load_result_tensor(const tl_load_result *r, size_t i) {
    return r && i < r->n_tensors ? &r->tensors[i] : NULL;
}
size_t tl_load_result_tensor_count(const tl_load_result *r) {
    return r ? r->n_tensors : 0;
}
const tl_load_file *tl_load_result_file(const tl_load_result *r, size_t i) {
    return r && i < r->n_files ? &r->files[i].pub : NULL;
}
size_t tl_load_result_file_count(const tl_load_result *r) {
    return r ? r->n_files : 0;
}
const tl_load_stats *tl_load_result_stats(const tl_load_result *r) {
    return r ? &r->stats : NULL;
}
const char *tl_load_result_notes(const tl_load_result *r) {
    return r && r->notes.s ? r->notes.s : "";
}
