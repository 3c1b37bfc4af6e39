/*
 * io.h — the mover engine: the one place that moves bytes between tiers.
 *
 * A client (tl_model_load, a session) describes what to move as a transfer
 * list — each transfer a source (file range, host range, device range) and a
 * destination (host, device, file), an optional dtype conversion — and
 * submits it as a batch with a priority. A persistent pool of workers runs
 * the batches' chunks, demand batches before prefetch ones, with at most
 * staging_count × staging_size bytes of staging (allocated on first need),
 * and an io_uring queue for O_DIRECT reads into host memory when liburing is
 * present. Batches complete by callback or by waiting; they can be cancelled.
 *
 * Sources that are file mappings (a model's tensor bytes, patched or not)
 * are read under the SIGBUS guard: a file truncated under its mapping turns
 * into TL_ERR_CHANGED naming the file and tensor, never a signal.
 *
 * Small transfers to a device that takes them better together (an RPC
 * server's, whose cache hashes only large writes) are packed into one write
 * per staging buffer and scattered by the device (engine.c).
 *
 * Memory bound: the staging ring plus per-batch metadata (one chunk record
 * per staging_size of data, one index per transfer). Destinations are the
 * caller's.
 */
#ifndef TL_IO_IO_H
#define TL_IO_IO_H

#include "tierload.h"

typedef enum tl__io_kind {
    TL_IO_FILE = 1,   /* fd + offset */
    TL_IO_HOST = 2,   /* host address */
    TL_IO_DEVICE = 3, /* device + device pointer */
} tl__io_kind;

typedef struct tl__io_end {
    tl__io_kind kind;
    int fd;                  /* FILE */
    bool direct;             /* FILE source opened with O_DIRECT (aligned reads are made) */
    uint64_t off;            /* FILE */
    void *host;              /* HOST */
    bool mapped;             /* HOST source that is a file mapping: read under the SIGBUS guard */
    struct tl__touch *fresh; /* HOST destination never touched yet (or NULL): each chunk
                                is faulted in (io/touch.h) just before a read fills it */
    tl_device *dev;          /* DEVICE (borrowed for the batch's life) */
    tl_devptr dptr;          /* DEVICE */
} tl__io_end;

typedef struct tl__io_xfer {
    tl__io_end src, dst;
    uint64_t len;      /* source bytes */
    /* convert when they differ: into a HOST destination, or from a HOST source to a DEVICE
       (each chunk converted into staging, then copied; never asynchronous) */
    tl_dtype from, to;
    /*
     * Direct FILE -> HOST without conversion: the destination may be written
     * from the aligned block before src.off to the one after (a destination
     * that mirrors the file's layout), so reads land without staging.
     */
    bool slack;
    /*
     * HOST -> DEVICE: issue the copy asynchronously (one chunk, straight from
     * the source, which must stay valid until the device is done) and store
     * its ticket here; the caller waits on the device. A device without
     * async copies copies synchronously (ticket 0).
     */
    uint64_t *ticket;
    const char *path; /* for messages: the file, and the tensor (may be NULL) */
    const char *name;
} tl__io_xfer;

typedef struct tl__io_options {
    unsigned threads;       /* workers; 0 = 2 */
    unsigned staging_count; /* 0 = 4 */
    uint64_t staging_size;  /* 0 = 16 MiB */
    bool uring;             /* use io_uring for direct reads when available */
} tl__io_options;

typedef struct tl__io_engine tl__io_engine;
typedef struct tl__io_batch tl__io_batch;

/* Batch priorities: lower runs first. */
enum { TL_IO_DEMAND = 0, TL_IO_PREFETCH = 1, TL_IO_PRIOS = 2 };

tl_status tl__io_engine_create(const tl__io_options *o, tl__io_engine **out);
/* Cancels what is queued, waits for the workers, frees. Batches must be destroyed first. */
void tl__io_engine_destroy(tl__io_engine *e);
/* The staging ring (for callers that stage outside a batch: verify, hashing). */
struct tl__staging *tl__io_engine_staging(tl__io_engine *e);
bool tl__io_engine_uring(const tl__io_engine *e);

/* Called once by the worker that finishes the batch (err TL_OK or the first failure). */
typedef void (*tl__io_done_fn)(void *user, tl__io_batch *b, tl_status err);

/*
 * Submit n transfers (copied) as one batch. on_done may be NULL. The batch is
 * the caller's to destroy after it completes.
 */
tl_status tl__io_submit(tl__io_engine *e, const tl__io_xfer *x, size_t n, int prio,
                        tl__io_done_fn on_done, void *user, tl__io_batch **out);
/* Wait up to timeout_s (< 0: forever). *done says whether it completed. */
void tl__io_wait(tl__io_batch *b, double timeout_s, bool *done);
/* The outcome of a completed batch; on failure sets this thread's message. */
tl_status tl__io_status(tl__io_batch *b);
/* Stop handing out the batch's chunks; chunks in progress finish. */
void tl__io_cancel(tl__io_batch *b);
/* Source bytes moved so far. */
uint64_t tl__io_done_bytes(const tl__io_batch *b);
/* Cancel, wait and free (NULL is fine). */
void tl__io_batch_destroy(tl__io_batch *b);

/*
 * Run the transfers on the calling thread, in order (no workers, no
 * staging). For asynchronous host -> device transfers, which only queue work
 * on the device: issuing them from the caller keeps their order with the
 * caller's own device work (as cudaMemcpyAsync from the host thread does).
 * Other transfers are refused here.
 */
tl_status tl__io_issue(tl__io_engine *e, const tl__io_xfer *x, size_t n);

/* Submit and wait: the whole list, with its status. */
tl_status tl__io_run(tl__io_engine *e, const tl__io_xfer *x, size_t n, int prio);

#endif
