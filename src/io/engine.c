/*
 * engine.c — the mover engine (see io/io.h).
 *
 * Shape: a batch is its transfers cut into chunks of at most one staging
 * buffer. Batches wait in one FIFO per priority; a fixed pool of workers
 * (started once per engine) takes the next chunk of the first batch that has
 * one, demand before prefetch, moves it, and the worker that completes a
 * batch's last chunk reports it. A worker holds at most one staging buffer
 * at a time, so the ring can never deadlock and never grows past its bound.
 *
 * io_uring: a batch whose chunks are all O_DIRECT reads that land straight
 * in host memory gets two extra tasks — a driver that keeps staging_count
 * reads in flight on the engine's one queue, and a prefaulter that faults
 * the destination in ahead of the reads (the kernel's page zeroing then
 * overlaps the device's transfers). Other workers may take chunks of the
 * same batch synchronously at the same time.
 */
#include "io/io.h"

#include "core/checked.h"
#include "core/error.h"
#include "devices/devices.h"
#include "devices/ggml_dl.h"
#include "io/convert.h"
#include "io/staging.h"
#include "io/touch.h"
#include "os/direct.h"
#include "os/guard.h"
#include "os/hostmem.h"
#include "os/os.h"
#include "os/thread.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN ((uint64_t)TL_OS_DIRECT_ALIGN)
#define MAX_WORKERS 64u

static inline uint64_t up_align(uint64_t x) {
    return (x + ALIGN - 1) & ~(ALIGN - 1);
}

typedef struct chunk {
    size_t xfer;  /* a pack: its first member's place in the batch's pk */
    uint64_t off; /* into the transfer's source bytes */
    uint64_t len;
    size_t pack; /* 0: a piece of one transfer; else a pack of this many whole transfers */
} chunk;

/*
 * Packs: on a device that takes small writes better together (an RPC
 * server's: tl__ggml_dev_pack_min), the batch's whole transfers of PACK_PIECE
 * bytes up to that minimum go together, in batch order, into packs of at
 * least the minimum and at most twice it (or one staging buffer, when that is
 * larger), each moved by one worker as one write that the device scatters
 * (tl__ggml_dev_scatter). Twice the minimum lets any run of pieces pack; the
 * pieces left at the end join the device's last pack (which then stays under
 * three times the minimum). A pack larger than a staging buffer is read into
 * the engine's pack buffer, one at a time (at most three times the largest
 * minimum of extra memory, kept for the engine's life). The packs depend only
 * on the batch, so the same loads make the same writes.
 */
#define PACK_PIECE (64ull << 10) /* smaller pieces cost more as a copy request than as bytes */
#define PACK_MAX 256u            /* transfers in one pack */

struct tl__io_batch {
    tl__io_engine *e;
    int prio;
    tl__io_xfer *x;
    size_t n_x;
    chunk *ch;
    size_t n_ch;
    size_t *pk; /* the packs' members, each pack's contiguous */
    /* under e->mu */
    size_t next; /* next chunk to hand out */
    size_t busy; /* tasks being worked on */
    bool cancel;
    bool reporting; /* the completion is being reported (once) */
    bool finished;  /* reported: nothing is in progress and nothing more will be */
    bool uring;     /* driver and prefault tasks exist */
    bool driver_taken, prefault_taken;
    tl_status err;
    char errmsg[1536];
    tl__io_batch *qnext;
    tl__io_done_fn on_done;
    void *user;
    _Atomic uint64_t done_bytes;
};

struct tl__io_engine {
    tl__io_options o;
    tl__staging staging;
    tl__os_mutex mu;
    tl__os_cond work; /* a task may be available, or stop */
    tl__os_cond done; /* a batch finished */
    tl__io_batch *head[TL_IO_PRIOS], *tail[TL_IO_PRIOS];
    bool stop;
    tl__os_thread *threads[MAX_WORKERS];
    unsigned n_threads;
    tl__os_uring *ring; /* one queue, one driver at a time */
    bool ring_busy;
    tl__os_mutex pack_mu; /* the pack buffer, for packs larger than a staging buffer */
    unsigned char *pack_buf;
    uint64_t pack_cap;
};

/* --- one chunk --- */

static tl_status fail(const tl__io_xfer *x, tl_status s, const char *what, uint64_t off, int e) {
    const char *why = e == ENODATA
                          ? "the file ends early (truncated or rewritten since it was opened)"
                      : e == EFAULT ? "the file was truncated under its mapping"
                                    : strerror(e);
    if (e == ENODATA || e == EFAULT) s = TL_ERR_CHANGED;
    if (x->name)
        return tl__err(s, "%s: tensor %s: %s at %llu: %s", x->path ? x->path : "(memory)", x->name,
                       what, (unsigned long long)off, why);
    return tl__err(s, "%s: %s at %llu: %s", x->path ? x->path : "(memory)", what,
                   (unsigned long long)off, why);
}

typedef struct conv_args {
    const tl__io_xfer *x;
    void *dst;
    const void *src;
    uint64_t n;
    bool ok;
    uint64_t bad;
} conv_args;

static void do_convert(void *a) {
    conv_args *c = a;
    c->ok = tl__convert_run(c->x->to, c->dst, c->x->from, c->src, c->n, &c->bad);
}

/*
 * Convert `units` conversion units of piece p (the xfer's unit `first` on)
 * into dst, under the SIGBUS guard when p is a mapping.
 */
static tl_status convert_piece(const tl__io_xfer *x, void *dst, const void *p, uint64_t units,
                               uint64_t first, const tl__conv_unit *u, bool guarded) {
    conv_args a = {x, dst, p, units * u->elems, false, 0};
    if (guarded ? tl__os_guarded_call(do_convert, &a) != 0 : (do_convert(&a), false))
        return fail(x, TL_ERR_CHANGED, "read of the mapping", first * u->in, EFAULT);
    if (!a.ok)
        return tl__err(TL_ERR_UNSUPPORTED, "%s: tensor %s: element %llu does not fit in %s",
                       x->path ? x->path : "(memory)", x->name ? x->name : "?",
                       (unsigned long long)(first * u->elems + a.bad), tl_dtype_name(x->to));
    return TL_OK;
}

/* Take the worker's staging buffer on first need. */
static tl_status need_stg(tl__io_engine *e, const tl__io_xfer *x, unsigned char **stg) {
    if (*stg) return TL_OK;
    int err = tl__staging_take(&e->staging, stg);
    if (err) return fail(x, TL_ERR_NOMEM, "staging buffer", 0, err);
    return TL_OK;
}

static tl_status pack_into(const tl__io_batch *b, const chunk *c, unsigned char *buf);

/* A pack: read into a staging buffer, or into the pack buffer when larger. */
static tl_status move_pack(tl__io_engine *e, const tl__io_batch *b, const chunk *c,
                           unsigned char **stg) {
    if (c->len <= e->o.staging_size) {
        tl_status s = need_stg(e, &b->x[b->pk[c->xfer]], stg);
        return s ? s : pack_into(b, c, *stg);
    }
    tl__os_mutex_lock(&e->pack_mu);
    tl_status s = TL_OK;
    if (e->pack_cap < c->len) {
        free(e->pack_buf);
        e->pack_buf = tl__os_malloc((size_t)c->len);
        e->pack_cap = e->pack_buf ? c->len : 0;
        if (!e->pack_buf) s = fail(&b->x[b->pk[c->xfer]], TL_ERR_NOMEM, "pack buffer", 0, ENOMEM);
    }
    if (!s) s = pack_into(b, c, e->pack_buf);
    tl__os_mutex_unlock(&e->pack_mu);
    return s;
}

/* Pack c's members one after the other into buf, then its one scattering write. */
static tl_status pack_into(const tl__io_batch *b, const chunk *c, unsigned char *buf) {
    const tl__io_xfer *x0 = &b->x[b->pk[c->xfer]];
    tl_status s;
    tl_devptr dst[PACK_MAX];
    uint64_t n[PACK_MAX], at = 0;
    for (size_t j = 0; j < c->pack; j++) {
        const tl__io_xfer *x = &b->x[b->pk[c->xfer + j]];
        unsigned char *to = buf + at;
        if (x->src.kind == TL_IO_FILE) {
            int err = tl__os_pread_full(x->src.fd, to, (size_t)x->len, x->src.off);
            if (err) return fail(x, TL_ERR_IO, "read", x->src.off, err);
        } else if (x->src.mapped) {
            if (tl__os_guarded_copy(to, x->src.host, (size_t)x->len))
                return fail(x, TL_ERR_CHANGED, "read of the mapping", 0, EFAULT);
        } else {
            memcpy(to, x->src.host, (size_t)x->len);
        }
        dst[j] = x->dst.dptr;
        n[j] = x->len;
        at += x->len;
    }
    s = tl__ggml_dev_scatter(x0->dst.dev, buf, at, dst, n, c->pack);
    if (s)
        return tl__err_prefix(s, "%s: %zu tensors from %s on", x0->path ? x0->path : "",
                              c->pack, x0->name ? x0->name : "?");
    return TL_OK;
}

static tl_status move_chunk(tl__io_engine *e, const tl__io_xfer *x, const chunk *c,
                            unsigned char **stg) {
    uint64_t o = c->off, n = c->len;
    bool convert = x->from != x->to;
    tl__conv_unit u = {1, 1, 1};
    if (convert) tl__convert_unit(x->from, x->to, &u);
    unsigned in = u.in, out = u.out;
    int err;
    tl_status s;
    /* a fresh host destination: its piece faulted in first, whichever way the bytes come */
    if (x->dst.kind == TL_IO_HOST && x->dst.fresh)
        tl__touch_range(x->dst.fresh, (unsigned char *)x->dst.host + o / in * out, n / in * out);
    /* straight into host memory */
    if (x->src.kind == TL_IO_FILE && x->dst.kind == TL_IO_HOST && !convert) {
        unsigned char *dst = (unsigned char *)x->dst.host + o;
        uint64_t at = x->src.off + o;
        if (!x->src.direct) {
            err = tl__os_pread_full(x->src.fd, dst, (size_t)n, at);
            return err ? fail(x, TL_ERR_IO, "read", at, err) : TL_OK;
        }
        uint64_t a0 = at & ~(ALIGN - 1), lead = at - a0;
        if (x->slack && ((uintptr_t)(dst - lead) % ALIGN) == 0) {
            size_t got = 0;
            err = tl__os_pread_direct(x->src.fd, dst - lead, (size_t)up_align(lead + n), a0, &got);
            if (!err && got < lead + n) err = ENODATA;
            return err ? fail(x, TL_ERR_IO, "direct read", at, err) : TL_OK;
        }
    }
    if (x->src.kind == TL_IO_FILE && x->dst.kind == TL_IO_DEVICE && !x->src.direct) {
        s = tl_device_read_file(x->dst.dev, x->src.fd, x->src.off + o, x->dst.dptr + o, n);
        if (s != TL_ERR_UNSUPPORTED) return s;
    }
    /* the source bytes into p */
    const unsigned char *p;
    bool guarded = false;
    switch (x->src.kind) {
    case TL_IO_FILE: {
        if ((s = need_stg(e, x, stg))) return s;
        uint64_t at = x->src.off + o;
        if (x->src.direct) {
            uint64_t a0 = at & ~(ALIGN - 1), lead = at - a0;
            size_t got = 0;
            err = tl__os_pread_direct(x->src.fd, *stg, (size_t)up_align(lead + n), a0, &got);
            if (!err && got < lead + n) err = ENODATA;
            p = *stg + lead;
        } else {
            err = tl__os_pread_full(x->src.fd, *stg, (size_t)n, at);
            p = *stg;
        }
        if (err) return fail(x, TL_ERR_IO, "read", at, err);
        break;
    }
    case TL_IO_DEVICE:
        if ((s = need_stg(e, x, stg))) return s;
        s = tl_device_copy_from(x->src.dev, *stg, x->src.dptr + o, n);
        if (s)
            return tl__err_prefix(s, "%s%s%s", x->path ? x->path : "", x->name ? ": tensor " : "",
                                  x->name ? x->name : "");
        p = *stg;
        break;
    default:
        p = (const unsigned char *)x->src.host + o;
        guarded = x->src.mapped;
        if (x->ticket && x->dst.kind == TL_IO_DEVICE) {
            uint64_t t = 0;
            s = guarded ? tl__sim_copy_to_mapped(x->dst.dev, x->dst.dptr + o, p, n, &t)
                        : TL_ERR_UNSUPPORTED;
            if (s == TL_ERR_UNSUPPORTED)
                s = tl_device_copy_to_async(x->dst.dev, x->dst.dptr + o, p, n, &t);
            if (s)
                return tl__err_prefix(s, "%s%s%s", x->path ? x->path : "",
                                      x->name ? ": tensor " : "", x->name ? x->name : "");
            *x->ticket = t;
            return TL_OK;
        }
        if (convert && x->dst.kind == TL_IO_DEVICE) { /* converted into staging, uploaded */
            if ((s = need_stg(e, x, stg))) return s;
            if ((s = convert_piece(x, *stg, p, n / in, o / in, &u, guarded))) return s;
            s = tl_device_copy_to(x->dst.dev, x->dst.dptr + o / in * out, *stg, n / in * out);
            if (s)
                return tl__err_prefix(s, "%s%s%s", x->path ? x->path : "",
                                      x->name ? ": tensor " : "", x->name ? x->name : "");
            return TL_OK;
        }
        if (guarded && x->dst.kind == TL_IO_DEVICE) { /* a sim reads the mapping guarded */
            s = tl__sim_copy_to_mapped(x->dst.dev, x->dst.dptr + o, p, n, NULL);
            if (s == TL_ERR_CHANGED) return fail(x, s, "read of the mapping", o, EFAULT);
            if (s != TL_ERR_UNSUPPORTED)
                return s ? tl__err_prefix(s, "%s%s%s", x->path ? x->path : "",
                                          x->name ? ": tensor " : "", x->name ? x->name : "")
                         : TL_OK;
        }
        if (guarded && x->dst.kind != TL_IO_HOST) { /* never fault inside a device or a write */
            if ((s = need_stg(e, x, stg))) return s;
            if (tl__os_guarded_copy(*stg, p, (size_t)n))
                return fail(x, TL_ERR_CHANGED, "read of the mapping", o, EFAULT);
            p = *stg;
            guarded = false;
        }
        break;
    }
    /* deliver */
    switch (x->dst.kind) {
    case TL_IO_HOST: {
        unsigned char *dst = (unsigned char *)x->dst.host + o / in * out;
        if (convert) {
            if ((s = convert_piece(x, dst, p, n / in, o / in, &u, guarded))) return s;
        } else if (guarded) {
            if (tl__os_guarded_copy(dst, p, (size_t)n))
                return fail(x, TL_ERR_CHANGED, "read of the mapping", o, EFAULT);
        } else {
            memcpy(dst, p, (size_t)n);
        }
        return TL_OK;
    }
    case TL_IO_DEVICE:
        s = tl_device_copy_to(x->dst.dev, x->dst.dptr + o, p, n);
        if (s)
            return tl__err_prefix(s, "%s%s%s", x->path ? x->path : "", x->name ? ": tensor " : "",
                                  x->name ? x->name : "");
        return TL_OK;
    case TL_IO_FILE:
        err = tl__os_pwrite_full(x->dst.fd, p, (size_t)n, x->dst.off + o);
        return err ? fail(x, TL_ERR_IO, "write", x->dst.off + o, err) : TL_OK;
    }
    return tl__err(TL_ERR_INVALID_ARG, "io: bad destination kind %d", (int)x->dst.kind);
}

/* --- batches and workers --- */

static void batch_fail_locked(tl__io_batch *b, tl_status s) {
    tl__os_mutex_assert_held(&b->e->mu);
    if (b->err == TL_OK) {
        b->err = s;
        snprintf(b->errmsg, sizeof b->errmsg, "%s", tl_last_error());
    }
    b->cancel = true;
}

static bool has_task_locked(const tl__io_batch *b) {
    tl__os_mutex_assert_held(&b->e->mu);
    if (b->cancel) return false;
    if (b->uring && (!b->driver_taken || !b->prefault_taken)) return true;
    return b->next < b->n_ch;
}

static void unqueue_locked(tl__io_engine *e, tl__io_batch *b) {
    tl__os_mutex_assert_held(&e->mu);
    tl__io_batch **pp = &e->head[b->prio], *prev = NULL;
    while (*pp && *pp != b) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (!*pp) return;
    *pp = b->qnext;
    if (e->tail[b->prio] == b) e->tail[b->prio] = prev;
    b->qnext = NULL;
}

/* Called with the lock held when a task of b ended; reports completion (unlocks around it). */
static void task_end_locked(tl__io_engine *e, tl__io_batch *b) {
    tl__os_mutex_assert_held(&e->mu);
    b->busy--;
    if (b->busy == 0 && !has_task_locked(b) && !b->reporting) {
        b->reporting = true;
        unqueue_locked(e, b);
        tl__io_done_fn cb = b->on_done;
        void *user = b->user;
        tl_status err = b->err;
        if (cb) {
            /* the callback runs before waiters see the batch finished */
            tl__os_mutex_unlock(&e->mu);
            cb(user, b, err);
            tl__os_mutex_lock(&e->mu);
        }
        b->finished = true;
        tl__os_cond_broadcast(&e->done);
    }
}

enum { TASK_CHUNK, TASK_DRIVER, TASK_PREFAULT };

static void uring_drive(tl__io_engine *e, tl__io_batch *b) {
    unsigned depth = e->o.staging_count;
    size_t inflight = 0;
    tl_status s = TL_OK;
    int err;
    for (;;) {
        tl__os_mutex_lock(&e->mu);
        bool stop = b->cancel;
        while (!stop && inflight < depth && b->next < b->n_ch) {
            size_t k = b->next++;
            tl__os_mutex_unlock(&e->mu);
            const chunk *c = &b->ch[k];
            const tl__io_xfer *x = &b->x[c->xfer];
            uint64_t at = x->src.off + c->off, a0 = at & ~(ALIGN - 1), lead = at - a0;
            unsigned char *dst = (unsigned char *)x->dst.host + c->off - lead;
            err =
                tl__os_uring_read(e->ring, x->src.fd, dst, (size_t)up_align(lead + c->len), a0, k);
            tl__os_mutex_lock(&e->mu);
            if (err) {
                tl__os_mutex_unlock(&e->mu);
                s = fail(x, TL_ERR_IO, "io_uring read", at, err);
                tl__os_mutex_lock(&e->mu);
                batch_fail_locked(b, s);
                stop = true;
                break;
            }
            inflight++;
        }
        tl__os_mutex_unlock(&e->mu);
        if (inflight == 0) break;
        if ((err = tl__os_uring_submit(e->ring)) != 0) {
            s = tl__err(TL_ERR_IO, "io_uring submit: %s", strerror(err));
            break;
        }
        uint64_t tag;
        int64_t res;
        if ((err = tl__os_uring_wait(e->ring, &tag, &res)) != 0) {
            s = tl__err(TL_ERR_IO, "io_uring wait: %s", strerror(err));
            break;
        }
        inflight--;
        const chunk *c = &b->ch[tag];
        const tl__io_xfer *x = &b->x[c->xfer];
        uint64_t at = x->src.off + c->off, a0 = at & ~(ALIGN - 1), lead = at - a0;
        if (res < 0) {
            s = fail(x, TL_ERR_IO, "read", at, (int)-res);
            break;
        }
        if ((uint64_t)res < lead + c->len) { /* short: finish it synchronously */
            uint64_t have = (uint64_t)res & ~(ALIGN - 1);
            unsigned char *dst = (unsigned char *)x->dst.host + c->off - lead + have;
            size_t got = 0;
            err = tl__os_pread_direct(x->src.fd, dst, (size_t)up_align(lead + c->len - have),
                                      a0 + have, &got);
            if (!err && have + got < lead + c->len) err = ENODATA;
            if (err) {
                s = fail(x, TL_ERR_IO, "read", a0 + have, err);
                break;
            }
        }
        atomic_fetch_add(&b->done_bytes, c->len);
    }
    /* never leave reads in flight into memory that may be freed */
    while (inflight) {
        uint64_t tag;
        int64_t res;
        if (tl__os_uring_wait(e->ring, &tag, &res) != 0) break;
        inflight--;
    }
    if (s != TL_OK) {
        tl__os_mutex_lock(&e->mu);
        batch_fail_locked(b, s);
        tl__os_mutex_unlock(&e->mu);
    }
}

static void prefault(tl__io_batch *b) {
    for (size_t k = 0; k < b->n_ch; k++) {
        tl__os_mutex_lock(&b->e->mu); /* once per chunk (16 MiB): cheap */
        bool stop = b->cancel;
        tl__os_mutex_unlock(&b->e->mu);
        if (stop) break;
        const chunk *c = &b->ch[k];
        const tl__io_xfer *x = &b->x[c->xfer];
        unsigned char *at = (unsigned char *)x->dst.host + c->off;
        if ((x->dst.fresh ? tl__touch_range(x->dst.fresh, at, c->len)
                          : tl__os_populate_write(at, c->len)) != 0)
            break;
    }
}

static void *worker_main(void *arg) {
    tl__io_engine *e = arg;
    unsigned char *stg = NULL;
    tl__os_mutex_lock(&e->mu);
    for (;;) {
        tl__io_batch *b = NULL;
        int task = TASK_CHUNK;
        size_t k = 0;
        for (int p = 0; p < TL_IO_PRIOS && !b; p++)
            for (tl__io_batch *q = e->head[p]; q && !b; q = q->qnext) {
                if (!has_task_locked(q)) continue;
                b = q;
                if (q->uring && !q->driver_taken && !e->ring_busy) {
                    task = TASK_DRIVER;
                    q->driver_taken = true;
                    e->ring_busy = true;
                } else if (q->uring && !q->prefault_taken) {
                    task = TASK_PREFAULT;
                    q->prefault_taken = true;
                } else if (q->next < q->n_ch) {
                    k = q->next++;
                } else {
                    b = NULL; /* only a driver task is left and the ring is busy */
                }
            }
        if (!b) {
            if (e->stop) break;
            tl__os_cond_wait(&e->work, &e->mu);
            continue;
        }
        b->busy++;
        tl__os_mutex_unlock(&e->mu);
        if (task == TASK_DRIVER) {
            uring_drive(e, b);
        } else if (task == TASK_PREFAULT) {
            prefault(b);
        } else {
            const chunk *c = &b->ch[k];
            tl_status s =
                c->pack ? move_pack(e, b, c, &stg) : move_chunk(e, &b->x[c->xfer], c, &stg);
            if (stg) {
                tl__staging_give(&e->staging, stg);
                stg = NULL;
            }
            if (s == TL_OK) {
                atomic_fetch_add(&b->done_bytes, c->len);
            } else {
                tl__os_mutex_lock(&e->mu);
                batch_fail_locked(b, s);
                tl__os_mutex_unlock(&e->mu);
            }
        }
        tl__os_mutex_lock(&e->mu);
        if (task == TASK_DRIVER) {
            e->ring_busy = false;
            tl__os_cond_broadcast(&e->work);
        }
        task_end_locked(e, b);
    }
    tl__os_mutex_unlock(&e->mu);
    return NULL;
}

/* --- public (internal) API --- */

tl_status tl__io_engine_create(const tl__io_options *o, tl__io_engine **out) {
    *out = NULL;
    tl__io_engine *e = tl__os_calloc(1, sizeof *e);
    if (!e) return tl__err(TL_ERR_NOMEM, "io: out of memory");
    if (o) e->o = *o;
    if (e->o.threads == 0) e->o.threads = 2;
    if (e->o.threads > MAX_WORKERS) e->o.threads = MAX_WORKERS;
    if (e->o.staging_count == 0) e->o.staging_count = 4;
    if (e->o.staging_size == 0) e->o.staging_size = 16ull << 20;
    if (tl__staging_init(&e->staging, e->o.staging_count, e->o.staging_size)) {
        free(e);
        return tl__err(TL_ERR_NOMEM, "io: out of memory");
    }
    tl__os_mutex_init(&e->mu);
    tl__os_mutex_init(&e->pack_mu);
    tl__os_cond_init(&e->work);
    tl__os_cond_init(&e->done);
    if (e->o.uring && tl__os_uring_open(e->o.staging_count, &e->ring) != 0) e->ring = NULL;
    for (unsigned i = 0; i < e->o.threads; i++) {
        int err = tl__os_thread_start(&e->threads[i], worker_main, e);
        if (err) {
            tl__io_engine_destroy(e);
            return tl__err(TL_ERR_NOMEM, "io: cannot start a worker thread: %s", strerror(err));
        }
        e->n_threads++;
    }
    *out = e;
    return TL_OK;
}

void tl__io_engine_destroy(tl__io_engine *e) {
    if (!e) return;
    tl__os_mutex_lock(&e->mu);
    e->stop = true;
    for (int p = 0; p < TL_IO_PRIOS; p++)
        for (tl__io_batch *q = e->head[p]; q; q = q->qnext)
            q->cancel = true;
    tl__os_cond_broadcast(&e->work);
    tl__os_mutex_unlock(&e->mu);
    for (unsigned i = 0; i < e->n_threads; i++)
        tl__os_thread_join(e->threads[i]);
    tl__os_uring_close(e->ring);
    tl__staging_free(&e->staging);
    tl__os_mutex_destroy(&e->mu);
    tl__os_mutex_destroy(&e->pack_mu);
    tl__os_cond_destroy(&e->work);
    tl__os_cond_destroy(&e->done);
    free(e->pack_buf);
    free(e);
}

struct tl__staging *tl__io_engine_staging(tl__io_engine *e) {
    return &e->staging;
}

bool tl__io_engine_uring(const tl__io_engine *e) {
    return e->ring != NULL;
}

/* Room for one more chunk. */
static tl_status chunk_room(tl__io_batch *b, size_t *cap) {
    if (b->n_ch < *cap) return TL_OK;
    size_t nc = *cap ? *cap * 2 : 16;
    chunk *p = tl__os_realloc(b->ch, nc * sizeof *p);
    if (!p) return tl__err(TL_ERR_NOMEM, "io: out of memory for %zu chunks", nc);
    b->ch = p;
    *cap = nc;
    return TL_OK;
}

/* The least bytes of a pack for transfer x on its device; 0: x is not packed. */
static uint64_t pack_min(const tl__io_batch *b, const tl__io_xfer *x) {
    if (x->dst.kind != TL_IO_DEVICE || x->from != x->to || x->ticket || x->len < PACK_PIECE ||
        (x->src.kind == TL_IO_FILE && x->src.direct) || x->src.kind == TL_IO_DEVICE)
        return 0;
    uint64_t min = tl__ggml_dev_pack_min(x->dst.dev);
    return min && x->len < min ? min : 0;
}

#define PACK_DEVICES 64u /* devices of one batch whose transfers are packed */

/* The batch's packs (chunks, members in pk) and which transfers they hold (in[i]). */
static tl_status make_packs(tl__io_batch *b, bool *in, size_t *cap) {
    tl_device *done[PACK_DEVICES];
    size_t n_done = 0, used = 0; /* devices packed; members in pk */
    for (size_t i = 0; i < b->n_x && n_done < PACK_DEVICES; i++) {
        uint64_t min = pack_min(b, &b->x[i]);
        tl_device *d = b->x[i].dst.dev;
        bool seen = false;
        for (size_t k = 0; k < n_done && !seen; k++)
            seen = done[k] == d;
        if (!min || seen) continue;
        done[n_done++] = d;
        if (!b->pk && !(b->pk = tl__os_malloc(b->n_x * sizeof *b->pk)))
            return tl__err(TL_ERR_NOMEM, "io: out of memory for packs");
        size_t first = used, count = 0;
        size_t prev = SIZE_MAX; /* this device's last pack (its chunk) */
        uint64_t total = 0, most = 2 * min > b->e->o.staging_size ? 2 * min : b->e->o.staging_size;
        for (size_t j = i;; j++) {
            const tl__io_xfer *x = j < b->n_x ? &b->x[j] : NULL;
            if (x && (x->dst.kind != TL_IO_DEVICE || x->dst.dev != d || !pack_min(b, x))) continue;
            /* the pack so far ends where x would not fit, or at the end; one under the
               minimum is no pack (its transfers move alone), except at the end, where it
               joins the device's last pack (then under three times the minimum) */
            if (!x || total + x->len > most || count == PACK_MAX) {
                bool join =
                    !x && total < min && prev != SIZE_MAX && b->ch[prev].pack + count <= PACK_MAX;
                if (total >= min || join) {
                    tl_status s = join ? TL_OK : chunk_room(b, cap);
                    if (s) return s;
                    if (join) {
                        b->ch[prev].len += total;
                        b->ch[prev].pack += count;
                    } else {
                        prev = b->n_ch;
                        b->ch[b->n_ch++] = (chunk){first, 0, total, count};
                    }
                    for (size_t k = first; k < first + count; k++)
                        in[b->pk[k]] = true;
                    first += count;
                }
                count = 0;
                total = 0;
                if (!x) break;
            }
            b->pk[first + count++] = j;
            total += x->len;
        }
        used = first;
    }
    return TL_OK;
}

/* Chunks of the transfers not in packs (in[i] false): pieces of at most one staging buffer. */
static tl_status chunk_xfers(tl__io_engine *e, tl__io_batch *b, const bool *packed, size_t *cap) {
    uint64_t stg = e->o.staging_size;
    bool all_direct_host = e->ring != NULL && b->n_x > 0 && !b->n_ch;
    for (size_t i = 0; i < b->n_x; i++) {
        const tl__io_xfer *x = &b->x[i];
        if (packed[i]) continue;
        bool convert = x->from != x->to;
        if (convert && x->dst.kind != TL_IO_HOST &&
            !(x->dst.kind == TL_IO_DEVICE && x->src.kind == TL_IO_HOST))
            return tl__err(TL_ERR_UNSUPPORTED,
                           "%s: tensor %s: conversion only into host memory, or from host "
                           "memory to a device",
                           x->path ? x->path : "", x->name ? x->name : "?");
        tl__conv_unit u = {1, 1, 1};
        if (convert && !tl__convert_unit(x->from, x->to, &u))
            return tl__err(TL_ERR_UNSUPPORTED, "%s: tensor %s: no conversion from %s to %s",
                           x->path ? x->path : "", x->name ? x->name : "?", tl_dtype_name(x->from),
                           tl_dtype_name(x->to));
        bool straight = x->src.kind == TL_IO_FILE && x->src.direct && x->dst.kind == TL_IO_HOST &&
                        !convert && x->slack;
        all_direct_host &= straight;
        unsigned in = u.in;
        uint64_t step = straight ? stg : (stg - 2 * ALIGN) / in * in;
        if (convert && x->dst.kind == TL_IO_DEVICE && u.out > in) /* the result fits staging */
            step = (stg - 2 * ALIGN) / u.out * in;
        if (x->ticket) {
            if (x->src.kind != TL_IO_HOST || x->dst.kind != TL_IO_DEVICE || convert)
                return tl__err(TL_ERR_INVALID_ARG, "io: async transfers go from host to device");
            step = x->len ? x->len : 1; /* one chunk: one ticket */
        }
        if (convert && x->len % in)
            return tl__err(
                TL_ERR_INVALID_ARG, "%s: tensor %s: %llu bytes is not whole elements or blocks",
                x->path ? x->path : "", x->name ? x->name : "?", (unsigned long long)x->len);
        uint64_t min = x->dst.kind == TL_IO_DEVICE && !x->ticket && x->len > step
                           ? tl__ggml_dev_pack_min(x->dst.dev)
                           : 0;
        if (min && x->len % step && x->len % step < min) {
            /* a tail under the size a server caches: chunks of equal size instead, when each
               is at least that size */
            uint64_t k = (x->len + step - 1) / step, even = (x->len + k - 1) / k;
            even = (even + in - 1) / in * in;
            if (even >= min && even <= step) step = even;
        }
        for (uint64_t o = 0; o < x->len; o += step) {
            tl_status s = chunk_room(b, cap);
            if (s) return s;
            uint64_t n = x->len - o < step ? x->len - o : step;
            b->ch[b->n_ch++] = (chunk){i, o, n, 0};
        }
    }
    b->uring = all_direct_host && b->n_ch > 0;
    return TL_OK;
}

/* Cut the transfers into chunks: packs first, then pieces of the rest. */
static tl_status make_chunks(tl__io_engine *e, tl__io_batch *b) {
    size_t cap = 0;
    bool *packed = tl__os_calloc(b->n_x ? b->n_x : 1, sizeof *packed);
    if (!packed) return tl__err(TL_ERR_NOMEM, "io: out of memory");
    tl_status s = make_packs(b, packed, &cap);
    if (!s) s = chunk_xfers(e, b, packed, &cap);
    free(packed);
    return s;
}

tl_status tl__io_submit(tl__io_engine *e, const tl__io_xfer *x, size_t n, int prio,
                        tl__io_done_fn on_done, void *user, tl__io_batch **out) {
    *out = NULL;
    if (prio < 0 || prio >= TL_IO_PRIOS)
        return tl__err(TL_ERR_INVALID_ARG, "io: bad priority %d", prio);
    tl__io_batch *b = tl__os_calloc(1, sizeof *b);
    if (!b) return tl__err(TL_ERR_NOMEM, "io: out of memory");
    b->e = e;
    b->prio = prio;
    b->on_done = on_done;
    b->user = user;
    b->x = tl__os_calloc(n ? n : 1, sizeof *b->x);
    if (!b->x) {
        free(b);
        return tl__err(TL_ERR_NOMEM, "io: out of memory for %zu transfers", n);
    }
    if (n) memcpy(b->x, x, n * sizeof *x);
    b->n_x = n;
    tl_status s = make_chunks(e, b);
    if (s) {
        free(b->ch);
        free(b->pk);
        free(b->x);
        free(b);
        return s;
    }
    tl__os_mutex_lock(&e->mu);
    if (!has_task_locked(b)) { /* nothing to move */
        b->finished = b->reporting = true;
        tl__os_mutex_unlock(&e->mu);
        if (on_done) on_done(user, b, TL_OK);
        *out = b;
        return TL_OK;
    }
    if (e->tail[prio])
        e->tail[prio]->qnext = b;
    else
        e->head[prio] = b;
    e->tail[prio] = b;
    tl__os_cond_broadcast(&e->work);
    tl__os_mutex_unlock(&e->mu);
    *out = b;
    return TL_OK;
}

void tl__io_wait(tl__io_batch *b, double timeout_s, bool *done) {
    tl__io_engine *e = b->e;
    tl__os_mutex_lock(&e->mu);
    if (timeout_s < 0) {
        while (!b->finished)
            tl__os_cond_wait(&e->done, &e->mu);
    } else if (!b->finished) {
        double end = tl__os_now() + timeout_s;
        while (!b->finished) {
            double left = end - tl__os_now();
            if (left <= 0 || !tl__os_cond_timedwait(&e->done, &e->mu, left)) break;
        }
    }
    if (done) *done = b->finished;
    tl__os_mutex_unlock(&e->mu);
}

tl_status tl__io_status(tl__io_batch *b) {
    tl__os_mutex_lock(&b->e->mu);
    tl_status s = b->err;
    char msg[sizeof b->errmsg];
    memcpy(msg, b->errmsg, sizeof msg);
    tl__os_mutex_unlock(&b->e->mu);
    if (s) return tl__err(s, "%s", msg);
    return TL_OK;
}

void tl__io_cancel(tl__io_batch *b) {
    tl__os_mutex_lock(&b->e->mu);
    if (!b->cancel && b->err == TL_OK) {
        b->cancel = true;
        b->err = TL_ERR_CANCELLED;
        snprintf(b->errmsg, sizeof b->errmsg, "cancelled");
    }
    /* a batch nobody works on finishes now */
    if (b->busy == 0 && !b->reporting) {
        b->busy = 1;
        task_end_locked(b->e, b);
    }
    tl__os_mutex_unlock(&b->e->mu);
}

uint64_t tl__io_done_bytes(const tl__io_batch *b) {
    return atomic_load(&((tl__io_batch *)b)->done_bytes);
}

void tl__io_batch_destroy(tl__io_batch *b) {
    if (!b) return;
    tl__io_cancel(b);
    tl__io_wait(b, -1, NULL);
    free(b->ch);
    free(b->pk);
    free(b->x);
    free(b);
}

tl_status tl__io_run(tl__io_engine *e, const tl__io_xfer *x, size_t n, int prio) {
    tl__io_batch *b;
    tl_status s = tl__io_submit(e, x, n, prio, NULL, NULL, &b);
    if (s) return s;
    tl__io_wait(b, -1, NULL);
    s = tl__io_status(b);
    tl__io_batch_destroy(b);
    return s;
}

tl_status tl__io_issue(tl__io_engine *e, const tl__io_xfer *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!x[i].ticket || x[i].src.kind != TL_IO_HOST || x[i].dst.kind != TL_IO_DEVICE ||
            x[i].from != x[i].to)
            return tl__err(TL_ERR_INVALID_ARG, "io: only async host-to-device copies are issued "
                                               "on the caller's thread");
        chunk c = {i, 0, x[i].len, 0};
        tl_status s = move_chunk(e, &x[i], &c, NULL);
        if (s) return s;
    }
    return TL_OK;
}
