/*
 * load.c — tl_model_load: the policy of a whole-model load on top of the
 * mover engine (io/io.h). For each file it decides a mode (auto: from
 * page-cache residency), lays out one destination mapping and describes the
 * file's bytes as transfers; the engine moves them. Then it overlays patched
 * tensors from the mapping, verifies, evicts and accounts. It never reads a
 * file itself.
 *
 * Memory bound: destinations (the bytes loaded, rounded to pages) + the
 * engine's staging ring (count x size, only touched for converted files and
 * --verify) + metadata proportional to the number of tensors and chunks.
 *
 * Files are checked against the identity they had when the model was opened
 * (device, inode, size, mtime, ctime) before the first read and after the
 * last one: a file rewritten or truncated in between is TL_ERR_CHANGED, even
 * when every read happened to succeed.
 */
#include "core/checked.h"
#include "core/env.h"
#include "core/error.h"
#include "core/options.h"
#include "core/strbuf.h"
#include "model/typerules.h"
#include "model/catalog.h"
#include "io/convert.h"
#include "io/io.h"
#include "io/staging.h"
#include "io/touch.h"
#include "io/verify.h"
#include "os/direct.h"
#include "os/hostmem.h"
#include "os/os.h"
#include "os/thread.h"
#include "stats/memstats.h"
#include "io/warmpool.h"

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

typedef struct lfile {
    tl_load_file pub;
    char reason[256];
    bool packed; /* some tensor converted: tensors packed one after another */
    uint64_t span_off, span_end;
    unsigned char *dest;
    uint64_t dest_len;
    tl__touch touch; /* first touch of dest (mirrored files) */
    bool warm;       /* dest came from the warm pool, faulted in already */
    bool filled;     /* the load completed: every page of dest was written */
    int dfd;
    tl__io_xfer *xf; /* the file's transfers */
    size_t n_gather; /* strided tensors, gathered element by element instead */
    size_t n_xf, cap_xf;
    size_t *order; /* tensor indices of this file by offset */
    size_t n_order;
} lfile;

struct tl_load_result {
    tl_loaded_tensor *tensors;
    size_t n_tensors;
    lfile *files;
    size_t n_files;
    tl_load_stats stats;
    tl__strbuf notes; /* best effort: an out-of-memory note is dropped */
};

typedef struct job {
    tl_model *m;
    tl_load_result *r;
    tl_load_options o;
    bool cold_buffered; /* TIERLOAD_COLD_PATH=buffered */
    tl__type_rules rules; /* tl_load_options.type_rules */
    bool no_uring;      /* TIERLOAD_NO_URING */
    tl__io_engine *io;
    uint64_t done; /* bytes of the files already loaded */
    uint64_t total;
    bool cancelled;
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
    case TL_LOAD_MODE_INVALID:
        break;
    }
    return NULL;
}

tl_load_mode tl_load_mode_from_name(const char *name) {
    if (!name) return TL_LOAD_MODE_INVALID;
    for (int i = 0; i <= TL_LOAD_DIRECT; i++)
        if (!strcmp(name, tl_load_mode_name((tl_load_mode)i))) return (tl_load_mode)i;
    return TL_LOAD_MODE_INVALID;
}

static void note(tl_load_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(tl_load_result *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    tl__strbuf_vprintf(&r->notes, fmt, ap);
    va_end(ap);
    tl__strbuf_printf(&r->notes, "\n");
}

static const char *tensor_name(job *j, size_t t) {
    return tl_model_tensor(j->m, t)->name;
}

/* Call the progress callback; false when it asked to stop. */
static bool report_progress(job *j, uint64_t now) {
    if (!j->o.progress || j->cancelled) return !j->cancelled;
    if (!j->o.progress(j->o.progress_user, now, j->total)) j->cancelled = true;
    return !j->cancelled;
}

/* Run a file's transfers on the engine; progress on this thread every 50 ms. */
static tl_status run_xfers(job *j, lfile *f) {
    if (f->n_xf == 0) return TL_OK;
    tl__io_batch *b;
    tl_status s = tl__io_submit(j->io, f->xf, f->n_xf, TL_IO_DEMAND, NULL, NULL, &b);
    if (s) return tl__err_prefix(s, "%s", f->pub.path);
    for (;;) {
        bool done;
        tl__io_wait(b, 0.05, &done);
        if (done) break;
        if (!report_progress(j, j->done + tl__io_done_bytes(b))) tl__io_cancel(b);
    }
    s = tl__io_status(b);
    j->done += tl__io_done_bytes(b);
    tl__io_batch_destroy(b);
    if (j->cancelled) return tl__err(TL_ERR_CANCELLED, "load cancelled by the progress callback");
    return s;
}

/*
 * The file still is the one the catalog describes. When it shrank, the
 * message names the first tensor that no longer fits in it.
 */
static tl_status check_stamp(job *j, size_t fi, const char *when) {
    const tl__mfile *mf = &j->m->files[fi];
    tl__os_stamp now;
    int e = tl__os_fstamp(mf->fd, &now);
    if (e) return tl__err(TL_ERR_IO, "%s: fstat: %s", mf->info.path, strerror(e));
    if (tl__os_stamp_equal(&now, &mf->stamp)) return TL_OK;
    const tl_tensor_info *cut = NULL;
    for (size_t i = 0; i < j->m->n_tensors; i++) {
        const tl_tensor_info *t = &j->m->tensors[i];
        if (t->file == fi && t->offset + t->nbytes > now.size && (!cut || t->offset < cut->offset))
            cut = t;
    }
    if (cut)
        return tl__err(TL_ERR_CHANGED,
                       "%s: tensor %s: the file was truncated %s (%llu bytes when opened, %llu "
                       "now): the tensor lies past its end",
                       mf->info.path, cut->name, when, (unsigned long long)mf->stamp.size,
                       (unsigned long long)now.size);
    return tl__err(TL_ERR_CHANGED,
                   "%s: the file was rewritten %s (size %llu when opened, %llu now; modification "
                   "time changed): its bytes cannot be trusted",
                   mf->info.path, when, (unsigned long long)mf->stamp.size,
                   (unsigned long long)now.size);
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
    if (tl__os_file_residency(tl_model_file_fd(j->m, fi), fin->size, &res, &tot) != 0) return;
    *bytes = res * tl__os_page_size();
    if (*bytes > fin->size) *bytes = fin->size;
    if (frac) *frac = tot ? (double)res / (double)tot : 1.0;
}

/* Append a transfer, growing the array. */
static tl_status add_xfer(lfile *f, const tl__io_xfer *x) {
    if (f->n_xf == f->cap_xf) {
        size_t nc = f->cap_xf ? f->cap_xf * 2 : 64;
        tl__io_xfer *p = tl__os_realloc(f->xf, nc * sizeof *p);
        if (!p) return tl__err(TL_ERR_NOMEM, "%s: out of memory", f->pub.path);
        f->xf = p;
        f->cap_xf = nc;
    }
    f->xf[f->n_xf++] = *x;
    return TL_OK;
}

/* Decide the mode of one file and say why (no I/O). */
static void decide_mode(const job *j, lfile *f) {
    tl_load_mode mode = j->o.mode;
    double pct = f->pub.residency_before * 100.0;
    if (mode != TL_LOAD_AUTO) {
        snprintf(f->reason, sizeof f->reason, "asked for (%.0f%% in the page cache)", pct);
    } else if (f->pub.residency_before >= WARM_THRESHOLD) {
        if (j->o.accept_views && !f->packed) {
            mode = TL_LOAD_MMAP;
            snprintf(f->reason, sizeof f->reason,
                     "warm (%.0f%% in the page cache) and views accepted: zero copy", pct);
        } else {
            mode = TL_LOAD_BUFFERED;
            snprintf(f->reason, sizeof f->reason,
                     "warm (%.0f%% in the page cache): copied from the cache", pct);
        }
    } else if (j->cold_buffered) {
        mode = TL_LOAD_BUFFERED;
        snprintf(f->reason, sizeof f->reason,
                 "cold (%.0f%% in the page cache): TIERLOAD_COLD_PATH=buffered", pct);
    } else if (j->o.dest) {
        /* the caller's memory does not mirror the file: direct reads would all be staged */
        mode = TL_LOAD_BUFFERED;
        snprintf(f->reason, sizeof f->reason,
                 "cold (%.0f%% in the page cache): read in place into the caller's memory "
                 "(O_DIRECT would pass every byte through staging)",
                 pct);
    } else {
        mode = TL_LOAD_DIRECT;
        snprintf(f->reason, sizeof f->reason,
                 "cold (%.0f%% in the page cache): O_DIRECT, no page cache to fill", pct);
    }
    f->pub.mode = mode;
    f->pub.reason = f->reason;
}

/*
 * Direct mode needs an O_DIRECT descriptor for the very file the catalog opened
 * (never whatever its path names now); where the filesystem refuses O_DIRECT,
 * buffered instead.
 */
static tl_status open_direct(job *j, lfile *f, size_t fi) {
    if (f->pub.mode != TL_LOAD_DIRECT) return TL_OK;
    int fd = tl_model_file_fd(j->m, fi);
    int e = tl__os_open_direct(fd, f->pub.path, &f->dfd);
    if (!e) return TL_OK;
    f->dfd = -1;
    if (e == TL_OS_EOTHER) {
        char *now = NULL;
        tl_status s = tl__os_realpath(f->pub.path, &now) == 0
                          ? tl__err(TL_ERR_CHANGED,
                                    "%s: the path now names another file (%s) than the one "
                                    "opened; refused",
                                    f->pub.path, now)
                          : tl__err(TL_ERR_CHANGED,
                                    "%s: the path now names another file than the one opened; "
                                    "refused",
                                    f->pub.path);
        free(now);
        return s;
    }
    f->pub.direct_fallback = true;
    f->pub.mode = TL_LOAD_BUFFERED;
    size_t l = strlen(f->reason);
    snprintf(f->reason + l, sizeof f->reason - l, "; O_DIRECT refused (%s): buffered instead",
             strerror(e));
    note(j->r, "%s: O_DIRECT refused by the filesystem (%s); falling back to buffered reads",
         f->pub.path, strerror(e));
    return TL_OK;
}

/* The source of a tensor's bytes for a copy: the file, or its mapping when patched. */
static tl__io_end source_of(job *j, lfile *f, size_t ti, uint64_t off) {
    const tl_tensor_info *t = tl_model_tensor(j->m, ti);
    tl__io_end e = {0};
    if (tl_model_tensor_patched(j->m, ti) || f->pub.mode == TL_LOAD_MMAP) {
        e.kind = TL_IO_HOST;
        e.host = (unsigned char *)j->m->files[t->file].map + off;
        e.mapped = true;
    } else {
        e.kind = TL_IO_FILE;
        e.direct = f->pub.mode == TL_LOAD_DIRECT;
        e.fd = e.direct ? f->dfd : tl_model_file_fd(j->m, t->file);
        e.off = off;
    }
    return e;
}

/* The type tensor t is loaded as (tl_convert_target of the load's dtype). */
static tl_dtype target_of(const job *j, const tl_tensor_info *t) {
    return tl__type_target(&j->rules, t, j->o.convert ? j->o.dtype : TL_DTYPE_INVALID);
}

/* Bytes of t once in type `to` (whole elements or blocks: tl_convert_target checked). */
static uint64_t bytes_as(const tl_tensor_info *t, tl_dtype to) {
    uint64_t n = t->nbytes;
    if (to != t->dtype) tl_dtype_nbytes(to, t->n_elements, &n);
    return n;
}

/*
 * Where packed tensors start: 64 bytes (every dtype's natural alignment,
 * and a cache line), or the caller's larger power of two.
 */
static uint64_t pack_align(const job *j) {
    return j->o.align > 64 ? j->o.align : 64;
}

/*
 * Pages of the destinations. First touch of fresh memory is most of a copy
 * load's cost, and which page size faults in faster changes from one moment
 * to the next on virtual machines that hand freed memory back to the host
 * (io/touch.c). By default destinations adapt: huge pages while they fault
 * in fast, 4 KiB pages after a few slow ones; hugepages keeps huge pages
 * throughout, no_hugepages 4 KiB pages (and wins). Every piece, mirrored or
 * packed, is faulted in just before it is written.
 */
/* An address range [a, b) of a caller's destination. */
typedef struct span {
    uintptr_t a, b;
} span;

static int cmp_span(const void *x, const void *y) {
    const span *p = x, *q = y;
    return p->a < q->a ? -1 : p->a > q->a;
}

/*
 * The whole pages of a fresh destination span that no destination covers
 * (memory the caller fills itself, or leaves as it is) must stay untouched,
 * but a fault anywhere in a 2 MiB page with huge-page advice brings in all
 * of it: the 2 MiB pages holding such a gap fault in 4 KiB pages instead.
 */
static void gaps_small(span *v, size_t n, uintptr_t lo, uintptr_t hi_end) {
    if (n < 2) return;
    qsort(v, n, sizeof *v, cmp_span);
    uintptr_t ps = tl__os_page_size(), huge = 2u << 20, done = 0, hi = v[0].b;
    for (size_t i = 1; i < n; i++) {
        uintptr_t ga = (hi + ps - 1) & ~(ps - 1), gb = v[i].a & ~(ps - 1);
        if (gb > ga) { /* whole pages [ga, gb) uncovered */
            uintptr_t ra = ga & ~(huge - 1), rb = (gb + huge - 1) & ~(huge - 1);
            if (ra < (lo & ~(ps - 1))) ra = lo & ~(ps - 1); /* the caller's span only */
            if (rb > hi_end) rb = (hi_end + ps - 1) & ~(ps - 1);
            if (ra < done) ra = done;
            if (rb > ra) tl__os_pages_small((void *)ra, rb - ra);
            if (rb > done) done = rb;
        }
        if (v[i].b > hi) hi = v[i].b;
    }
}

static tl__touch_pages touch_pages(const job *j) {
    if (j->o.no_hugepages) return TL_TOUCH_SMALL;
    return j->o.hugepages ? TL_TOUCH_HUGE : TL_TOUCH_ADAPT;
}
static tl__os_pages dest_pages(const job *j) {
    return touch_pages(j) == TL_TOUCH_SMALL ? TL_OS_PAGES_SMALL : TL_OS_PAGES_HUGE;
}

/*
 * A file's destination: a region of the warm pool when one is large enough
 * (faulted in already: its touch does nothing), else fresh memory.
 */
static int dest_alloc(job *j, lfile *f, uint64_t len) {
    if (tl__warm_take(len, (void **)&f->dest, &f->dest_len)) {
        f->warm = true;
        tl__touch_init(&f->touch, f->dest, f->dest_len, TL_TOUCH_WARM, TL_TOUCH_SLOW_S);
        return 0;
    }
    int e = tl__os_anon_alloc(len, dest_pages(j), (void **)&f->dest, &f->dest_len);
    if (!e) tl__touch_init(&f->touch, f->dest, f->dest_len, touch_pages(j), TL_TOUCH_SLOW_S);
    return e;
}

/* Lay out the destination and the transfers of one file. */
static tl_status plan_file(job *j, lfile *f) {
    tl_model *m = j->m;
    const char *path = f->pub.path;
    uint64_t stg = j->o.staging_size;
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
        int e = dest_alloc(j, f, len);
        if (e)
            return tl__err(TL_ERR_NOMEM, "%s: cannot allocate %llu bytes for its tensors: %s", path,
                           (unsigned long long)len, strerror(e));
        /* the destination mirrors the file: large chunks straight from the file */
        size_t k = 0;
        for (uint64_t off = f->span_off; off < f->span_end; off += stg) {
            uint64_t n = f->span_end - off < stg ? f->span_end - off : stg;
            while (k + 1 < f->n_order && tl_model_tensor(m, f->order[k + 1])->offset <= off)
                k++;
            tl__io_xfer x = {
                .len = n, .slack = true, .path = path, .name = tensor_name(j, f->order[k])};
            x.src.kind = TL_IO_FILE;
            x.src.direct = f->pub.mode == TL_LOAD_DIRECT;
            x.src.fd = x.src.direct ? f->dfd : tl_model_file_fd(m, first->file);
            x.src.off = off;
            x.dst.kind = TL_IO_HOST;
            x.dst.host = f->dest + (off - f->span_off);
            x.dst.fresh = &f->touch;
            tl_status s = add_xfer(f, &x);
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
        tl_dtype to = target_of(j, t);
        if ((f->pub.mode == TL_LOAD_MMAP && to == t->dtype && !t->strides) || j->o.dest) continue;
        uint64_t out = bytes_as(t, to);
        if (!tl__align_up_u64(total, pack_align(j), &total) || !tl__add_u64(total, out, &total))
            return tl__err(TL_ERR_FORMAT, "%s: tensor sizes overflow", path);
    }
    if (total) {
        int e = dest_alloc(j, f, total);
        if (e)
            return tl__err(TL_ERR_NOMEM, "%s: cannot allocate %llu bytes for its tensors: %s", path,
                           (unsigned long long)total, strerror(e));
    }
    uint64_t pos = 0;
    /* the caller's fresh destinations: the span they cover, faulted in as ours (dest_fresh) */
    uintptr_t fresh_lo = UINTPTR_MAX, fresh_hi = 0;
    span *fresh = NULL;
    size_t n_fresh = 0;
    if (j->o.dest && j->o.dest_fresh) {
        fresh = tl__os_malloc((f->n_order ? f->n_order : 1) * sizeof *fresh);
        if (!fresh) return tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
    }
    for (size_t k = 0; k < f->n_order; k++) {
        size_t ti = f->order[k];
        const tl_tensor_info *t = tl_model_tensor(m, ti);
        tl_dtype to = target_of(j, t);
        if (f->pub.mode == TL_LOAD_MMAP && to == t->dtype && !j->o.dest && !t->strides) {
            j->r->tensors[ti] =
                (tl_loaded_tensor){(const unsigned char *)tl_model_file_map(m, t->file) + t->offset,
                                   t->nbytes, t->dtype, true, false};
            continue;
        }
        uint64_t out = bytes_as(t, to);
        unsigned char *at;
        if (j->o.dest) {
            at = j->o.dest(j->o.dest_user, ti, out, to);
            if (!at && out) {
                free(fresh);
                return tl__err(TL_ERR_INVALID_ARG,
                               "%s: tensor %s: the destination callback gave no "
                               "memory for %llu bytes",
                               path, t->name, (unsigned long long)out);
            }
        } else {
            tl__align_up_u64(pos, pack_align(j), &pos);
            at = f->dest ? f->dest + pos : NULL; /* no destination: only empty tensors */
            pos += out;
        }
        j->r->tensors[ti] = (tl_loaded_tensor){at, out, to, false, to != t->dtype};
        if (fresh && out) {
            if ((uintptr_t)at < fresh_lo) fresh_lo = (uintptr_t)at;
            if ((uintptr_t)at + out > fresh_hi) fresh_hi = (uintptr_t)at + out;
            fresh[n_fresh++] = (span){(uintptr_t)at, (uintptr_t)at + out};
        }
        if (t->strides) { /* a strided view: gathered after the transfers (gather_strided) */
            f->n_gather++;
            continue;
        }
        tl__io_xfer x = {.len = t->nbytes,
                         .from = t->dtype,
                         .to = to,
                         .path = path,
                         .name = t->name,
                         .src = source_of(j, f, ti, t->offset)};
        x.dst.kind = TL_IO_HOST;
        x.dst.host = at;
        if (!j->o.dest || j->o.dest_fresh) x.dst.fresh = &f->touch; /* never touched */
        tl_status s = add_xfer(f, &x);
        if (s != TL_OK) {
            free(fresh);
            return s;
        }
    }
    if (fresh_hi > fresh_lo) {
        /* base 2 MiB aligned (touch.h); only the transfers' own pages are ever touched */
        unsigned char *base = (unsigned char *)(fresh_lo & ~(uintptr_t)((2u << 20) - 1));
        tl__touch_pages tp = touch_pages(j);
        uintptr_t ps = tl__os_page_size(), a = (fresh_lo + ps - 1) & ~(ps - 1),
                  z = fresh_hi & ~(ps - 1);
        if (tp == TL_TOUCH_SMALL && z > a)
            tl__os_pages_small((void *)a, z - a);
        else if (tp != TL_TOUCH_SMALL) {
            tl__os_pages_huge((void *)fresh_lo, fresh_hi - fresh_lo);
            gaps_small(fresh, n_fresh, fresh_lo, fresh_hi);
        }
        tl__touch_init(&f->touch, base, (uint64_t)(fresh_hi - (uintptr_t)base), tp,
                       TL_TOUCH_SLOW_S);
    }
    free(fresh);
    return TL_OK;
}

void tl_load_result_destroy(tl_load_result *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_files; i++) {
        lfile *f = &r->files[i];
        /* kept warm or unmapped; a completed load wrote every page (gaps are under a page) */
        if (f->dest) tl__warm_give(f->dest, f->dest_len, f->filled);
        if (f->dfd >= 0) tl__os_close(f->dfd);
        free(f->xf);
        free(f->order);
    }
    free(r->files);
    free(r->tensors);
    free(r->notes.s);
    free(r);
}

/*
 * Strided tensors (views of a checkpoint's storage) are not byte ranges of
 * the file: the model gathers their elements from the mapping (guarded),
 * one staging buffer at a time, and they are converted from there.
 */
static tl_status gather_strided(job *j, lfile *f) {
    if (!f->n_gather) return TL_OK;
    tl__staging *stg = tl__io_engine_staging(j->io);
    unsigned char *buf = NULL;
    int e = tl__staging_take(stg, &buf);
    if (e) return tl__err_errno(e, "%s: staging buffer for strided tensors", f->pub.path);
    tl_status s = TL_OK;
    for (size_t k = 0; s == TL_OK && k < f->n_order; k++) {
        size_t ti = f->order[k];
        const tl_tensor_info *t = tl_model_tensor(j->m, ti);
        if (!t->strides) continue;
        tl_loaded_tensor *lt = &j->r->tensors[ti];
        tl__conv_unit u = {1, 1, 1};
        if (lt->converted) tl__convert_unit(t->dtype, lt->dtype, &u);
        unsigned in = u.in, out = u.out;
        uint64_t step = j->o.staging_size / in * in;
        for (uint64_t o = 0; s == TL_OK && o < t->nbytes; o += step) {
            uint64_t n = t->nbytes - o < step ? t->nbytes - o : step;
            s = tl_model_tensor_read(j->m, ti, o, buf, n);
            if (s != TL_OK) break;
            unsigned char *dst = (unsigned char *)lt->data + o / in * out;
            uint64_t bad = 0;
            if (!lt->converted)
                memcpy(dst, buf, (size_t)n);
            else if (!tl__convert_run(lt->dtype, dst, t->dtype, buf, n / in * u.elems, &bad))
                s = tl__err(TL_ERR_UNSUPPORTED, "%s: tensor %s: element %llu does not fit in %s",
                            f->pub.path, t->name, (unsigned long long)(o / in * u.elems + bad),
                            tl_dtype_name(lt->dtype));
        }
    }
    tl__staging_give(stg, buf);
    return s;
}

/*
 * Patched tensors copied from the file in a mirrored destination get their
 * patched bytes from the mapping on top (packed files already read patched
 * tensors from the mapping).
 */
static tl_status overlay_patches(job *j, lfile *f) {
    if (f->packed || f->pub.mode == TL_LOAD_MMAP) return TL_OK;
    f->n_xf = 0;
    for (size_t k = 0; k < f->n_order; k++) {
        size_t ti = f->order[k];
        if (!tl_model_tensor_patched(j->m, ti)) continue;
        const tl_tensor_info *t = tl_model_tensor(j->m, ti);
        tl__io_xfer x = {.len = t->nbytes, .path = f->pub.path, .name = t->name};
        x.src = source_of(j, f, ti, t->offset);
        x.dst.kind = TL_IO_HOST;
        x.dst.host = (void *)j->r->tensors[ti].data;
        tl_status s = add_xfer(f, &x);
        if (s != TL_OK) return s;
    }
    if (f->n_xf == 0) return TL_OK;
    note(j->r, "%s: %zu patched tensor(s) taken from the mapping", f->pub.path, f->n_xf);
    tl_status s = tl__io_run(j->io, f->xf, f->n_xf, TL_IO_DEMAND);
    return s && !strstr(tl_last_error(), f->pub.path) ? tl__err_prefix(s, "%s", f->pub.path) : s;
}

/* mmap mode with populate: fault the views in, tensor by tensor, so a failure names one. */
static tl_status populate_views(job *j, lfile *f, size_t fi) {
    const unsigned char *map = tl_model_file_map(j->m, fi);
    for (size_t k = 0; k < f->n_order; k++) {
        const tl_tensor_info *t = tl_model_tensor(j->m, f->order[k]);
        int e = tl__os_populate_read(map + t->offset, t->nbytes);
        if (e == EFAULT || e == EIO) {
            tl_status s = check_stamp(j, fi, "while it was being loaded");
            if (s) return tl__err_prefix(s, "tensor %s", t->name);
            return tl__err(TL_ERR_CHANGED,
                           "%s: tensor %s: populating the mapping failed (%s): "
                           "the file changed under it",
                           f->pub.path, t->name, strerror(e));
        }
        if (e)
            return tl__err(TL_ERR_IO, "%s: tensor %s: populating the mapping: %s", f->pub.path,
                           t->name, strerror(e));
    }
    return TL_OK;
}

static tl_status verify_file(job *j, lfile *f, size_t fi) {
    tl_model *m = j->m;
    tl__staging *stg = tl__io_engine_staging(j->io);
    unsigned char *a = NULL, *b = NULL;
    tl_status s = TL_OK;
    int e = tl__staging_take(stg, &a);
    if (!e) e = tl__staging_take(stg, &b);
    if (e) s = tl__err(TL_ERR_NOMEM, "%s: verify: staging buffer: %s", f->pub.path, strerror(e));
    for (size_t k = 0; s == TL_OK && k < f->n_order; k++) {
        size_t ti = f->order[k];
        const tl_tensor_info *t = tl_model_tensor(m, ti);
        const void *patched = tl_model_tensor_patched(m, ti) ? tl_model_tensor_data(m, ti) : NULL;
        s = tl__io_verify_tensor(m, ti, tl_model_file_fd(m, fi), patched, f->pub.path, t,
                                 &j->r->tensors[ti], a, b, j->o.staging_size);
    }
    if (a) tl__staging_give(stg, a);
    if (b) tl__staging_give(stg, b);
    return s;
}

/* Load, verify and evict one file. */
static tl_status load_file(job *j, size_t fi) {
    lfile *f = &j->r->files[fi];
    tl_model *m = j->m;
    double t0 = tl__os_now();
    tl_status s = check_stamp(j, fi, "after it was opened");
    if (s != TL_OK) return s;
    f->pub.uring = f->pub.mode == TL_LOAD_DIRECT && !f->packed && tl__io_engine_uring(j->io);
    if (f->pub.mode == TL_LOAD_MMAP && !f->packed && j->o.populate) {
        s = populate_views(j, f, fi);
        if (s != TL_OK) return s;
    }
    s = run_xfers(j, f);
    if (s == TL_OK) s = gather_strided(j, f);
    if (s == TL_OK) s = overlay_patches(j, f);
    if (s != TL_OK) return s;
    if (f->pub.mode == TL_LOAD_MMAP && !f->packed) j->done += f->pub.bytes;
    f->pub.seconds = tl__os_now() - t0;
    if (f->warm)
        note(j->r,
             "%s: destination: %llu bytes from the warm pool (faulted in already, "
             "nothing to touch)",
             f->pub.path, (unsigned long long)f->dest_len);
    else if (f->dest && f->touch.pages == TL_TOUCH_ADAPT) {
        unsigned at = atomic_load(&f->touch.switched_at_mib);
        if (at)
            note(j->r,
                 "%s: destination pages: huge, then 4 KiB from %u MiB on (huge pages "
                 "faulted in slowly)",
                 f->pub.path, at - 1);
        else
            note(j->r, "%s: destination pages: huge throughout (none faulted in slowly)",
                 f->pub.path);
    }
    if (!report_progress(j, j->done))
        return tl__err(TL_ERR_CANCELLED, "load cancelled by the progress callback");
    if (j->o.verify) {
        /* the reference must be the file the catalog describes, not a rewritten one */
        s = check_stamp(j, fi, "while it was being loaded");
        if (s == TL_OK) s = verify_file(j, f, fi);
        if (s == TL_ERR_INTEGRITY && check_stamp(j, fi, "while it was being verified") != TL_OK)
            s = TL_ERR_CHANGED;
        if (s != TL_OK) return s;
    }
    if (j->o.evict) {
        bool views = false;
        for (size_t k = 0; k < f->n_order; k++)
            views |= j->r->tensors[f->order[k]].view;
        if (views) {
            note(j->r, "%s: not evicted: its tensors are views into its mapping", f->pub.path);
        } else {
            int e = tl__os_fadvise_dontneed(tl_model_file_fd(m, fi), 0, 0);
            /* pages mapped by the catalog (headers) stay cached unless unmapped; a
               writable model may hold patches there, so it is left alone */
            if (!e && !m->writable) {
                tl__os_drop_mapping_pages(tl_model_file_map(m, fi), f->pub.size);
                e = tl__os_fadvise_dontneed(tl_model_file_fd(m, fi), 0, 0);
            }
            if (e)
                note(j->r, "%s: eviction failed: %s", f->pub.path, strerror(e));
            else
                f->pub.evicted = true;
        }
    }
    residency(j, fi, &f->pub.page_cache_after, NULL);
    return check_stamp(j, fi, "while it was being loaded");
}

static tl_status check_options(const tl_load_options *in, tl_load_options *o) {
    tl_load_options_init(o);
    tl_status st = tl__options_take(o, sizeof *o, in, "tl_load_options");
    if (st) return st;
    if (o->align > 4096 || (o->align & (o->align - 1)))
        return tl__err(TL_ERR_INVALID_ARG,
                       "load: align must be 0 or a power of two up to 4096, "
                       "not %u",
                       o->align);
    if (tl_load_mode_name(o->mode) == NULL)
        return tl__err(TL_ERR_INVALID_ARG, "load: invalid mode %d", (int)o->mode);
    if (o->convert && o->dtype != TL_DTYPE_F32 && o->dtype != TL_DTYPE_F16 &&
        o->dtype != TL_DTYPE_BF16 && o->dtype != TL_DTYPE_I32 && o->dtype != TL_DTYPE_Q8_0 &&
        o->dtype != TL_DTYPE_Q4_0)
        return tl__err(TL_ERR_UNSUPPORTED,
                       "load: cannot convert to %s (F32, F16, BF16, I32, Q8_0 or Q4_0)",
                       tl_dtype_name(o->dtype) ? tl_dtype_name(o->dtype) : "an invalid type");
    if (o->threads == 0) o->threads = TL_LOAD_DEFAULT_THREADS;
    if (o->threads > MAX_THREADS) o->threads = MAX_THREADS;
    if (o->staging_size == 0) o->staging_size = TL_LOAD_DEFAULT_STAGING_SIZE;
    if (!tl__align_up_u64(o->staging_size, 64 << 10, &o->staging_size) ||
        o->staging_size > (1ull << 31))
        return tl__err(TL_ERR_INVALID_ARG, "load: staging buffers must be at most 2 GiB");
    if (o->staging_count == 0) o->staging_count = TL_LOAD_DEFAULT_STAGING_COUNT;
    if (o->staging_count < 2) o->staging_count = 2;
    if (o->staging_count > MAX_THREADS) o->staging_count = MAX_THREADS;
    return TL_OK;
}

tl_status tl_model_load(tl_model *m, const tl_load_options *opts, tl_load_result **out) {
    if (!out) return tl__err(TL_ERR_INVALID_ARG, "tl_model_load: out is NULL");
    *out = NULL;
    if (!m) return tl__err(TL_ERR_INVALID_ARG, "tl_model_load: model is NULL");
    job j;
    memset(&j, 0, sizeof j);
    tl_status s = check_options(opts, &j.o);
    if (s != TL_OK) return s;
    const char *env = tl__env_get(TL_ENV_COLD_PATH);
    j.cold_buffered = env && !strcmp(env, "buffered");
    j.no_uring = tl__env_is_set(TL_ENV_NO_URING);
    double t0 = tl__os_now();
    tl_memwatch *watch = NULL;
    if (j.o.sample_interval >= 0) { /* no USS: see memstats.h */
        s = tl__memwatch_create(j.o.sample_interval, false, &watch);
        if (s != TL_OK) return s;
    }
    j.m = m;
    tl_load_result *r = tl__os_calloc(1, sizeof *r);
    if (!r) {
        tl_memwatch_destroy(watch, NULL, 0);
        return tl__err(TL_ERR_NOMEM, "load: out of memory");
    }
    j.r = r;
    r->n_tensors = tl_model_tensor_count(m);
    r->tensors = tl__os_calloc(r->n_tensors ? r->n_tensors : 1, sizeof *r->tensors);
    r->files = tl__os_calloc(tl_model_file_count(m) ? tl_model_file_count(m) : 1, sizeof *r->files);
    size_t *order = tl__os_calloc(r->n_tensors ? r->n_tensors : 1, sizeof *order);
    if (r->files) {
        /* every descriptor slot is "none" before anything can fail */
        r->n_files = tl_model_file_count(m);
        for (size_t fi = 0; fi < r->n_files; fi++)
            r->files[fi].dfd = -1;
    }
    if (!r->tensors || !r->files || !order) {
        free(order);
        tl_load_result_destroy(r);
        tl_memwatch_destroy(watch, NULL, 0);
        return tl__err(TL_ERR_NOMEM, "load: out of memory");
    }
    tl__io_options io = {j.o.threads, j.o.staging_count, j.o.staging_size, !j.no_uring};
    s = tl__io_engine_create(&io, &j.io);
    if (s != TL_OK) {
        s = tl__err_prefix(s, "load");
        free(order);
        tl_load_result_destroy(r);
        tl_memwatch_destroy(watch, NULL, 0);
        return s;
    }
    r->stats.threads = j.o.threads;
    r->stats.staging_bound = (uint64_t)j.o.staging_count * j.o.staging_size;
    size_t n_order = 0;
    if (j.o.tensors) {
        for (size_t k = 0; k < j.o.n_tensors; k++) {
            if (j.o.tensors[k] >= r->n_tensors) {
                free(order);
                tl__io_engine_destroy(j.io);
                tl_load_result_destroy(r);
                tl_memwatch_destroy(watch, NULL, 0);
                return tl__err(TL_ERR_INVALID_ARG,
                               "load: tensor index %zu out of range (%zu tensors)", j.o.tensors[k],
                               tl_model_tensor_count(m));
            }
            if (!r->tensors[j.o.tensors[k]].nbytes) { /* a mark against duplicates, reset below */
                r->tensors[j.o.tensors[k]].nbytes = 1;
                order[n_order++] = j.o.tensors[k];
            }
        }
        for (size_t k = 0; k < n_order; k++)
            r->tensors[order[k]].nbytes = 0;
    } else {
        for (size_t i = 0; i < r->n_tensors; i++)
            order[n_order++] = i;
    }
    qsort_r(order, n_order, sizeof *order, cmp_off, m);
    s = tl__type_rules_parse(j.o.type_rules, &j.rules);
    if (s != TL_OK) s = tl__err_prefix(s, "load");
    /* plan: per-file tensor lists, residency and mode */
    for (size_t fi = 0; s == TL_OK && fi < r->n_files; fi++) {
        lfile *f = &r->files[fi];
        const tl_file_info *fin = tl_model_file(m, fi);
        f->pub.path = fin->path;
        f->pub.size = fin->size;
        f->order = tl__os_calloc(fin->n_tensors ? fin->n_tensors : 1, sizeof *f->order);
        if (!f->order) {
            s = tl__err(TL_ERR_NOMEM, "load: out of memory");
            break;
        }
        for (size_t k = 0; k < n_order; k++) {
            const tl_tensor_info *t = tl_model_tensor(m, order[k]);
            if (t->file != fi || f->n_order >= fin->n_tensors) continue;
            f->order[f->n_order++] = order[k];
            f->pub.bytes += t->nbytes;
            if (target_of(&j, t) != t->dtype) f->packed = true;
            if (t->strides) f->packed = true; /* gathered: never a byte range of the file */
        }
        /* tensor by tensor into the caller's memory, or at aligned addresses */
        if (j.o.dest || j.o.align) f->packed = true;
        residency(&j, fi, &f->pub.page_cache_before, &f->pub.residency_before);
        decide_mode(&j, f);
        s = open_direct(&j, f, fi);
        if (s != TL_OK) break;
        note(r, "%s: %s (%s)", f->pub.path, tl_load_mode_name(f->pub.mode), f->reason);
        s = plan_file(&j, f);
        if (s != TL_OK) break;
        r->stats.dest_bytes += f->dest_len;
        for (size_t k = 0; k < f->n_xf; k++)
            j.total += f->xf[k].len;
        if (f->pub.mode == TL_LOAD_MMAP && !f->packed) j.total += f->pub.bytes;
        r->stats.bytes += f->pub.bytes;
        r->stats.page_cache_before += f->pub.page_cache_before;
    }
    free(order);
    double tr = tl__os_now();
    for (size_t fi = 0; s == TL_OK && fi < r->n_files; fi++)
        s = load_file(&j, fi);
    r->stats.read_seconds = tl__os_now() - tr;
    tl_memwatch_sample(watch);
    r->stats.staging_used = tl__staging_used(tl__io_engine_staging(j.io));
    tl__io_engine_destroy(j.io);
    tl__type_rules_free(&j.rules);
    tl_memwatch_destroy(watch, &r->stats.mem, sizeof r->stats.mem);
    if (s != TL_OK) {
        tl_load_result_destroy(r);
        return s;
    }
    for (size_t fi = 0; fi < r->n_files; fi++)
        r->files[fi].filled = true;
    for (size_t i = 0; i < r->n_tensors; i++)
        r->stats.bytes_out += r->tensors[i].nbytes;
    for (size_t fi = 0; fi < r->n_files; fi++)
        r->stats.page_cache_after += r->files[fi].pub.page_cache_after;
    r->stats.seconds = tl__os_now() - t0;
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
