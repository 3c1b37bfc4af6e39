/*
 * cuda.c — CUDA GPUs (cuda0, cuda1, ...) through libcudart loaded at run time
 * with dlopen, so nothing CUDA is needed to build or to run without a GPU.
 * The few runtime prototypes and constants used are declared here.
 *
 * Discovery (once, under the registry lock) loads libcudart (the usual
 * sonames, or the path in TIERLOAD_CUDART when set), counts devices
 * and reads their names; why there are none is kept as a reason string.
 * Names come from cudaGetDeviceProperties(_v2) into an oversized buffer:
 * `char name[256]` is the first member of cudaDeviceProp in every CUDA
 * version, and nothing else of the struct (whose layout changes) is read.
 * Total and free memory come from cudaMemGetInfo when a device is first
 * described or used, so discovery creates no CUDA context.
 *
 * Copies go through a ring of TL_CUDA_RING pinned staging buffers of
 * TL_CUDA_STAGE bytes per device (allocated on the first copy: a fixed bound
 * of 32 MiB pinned host memory per device), one stream, one event per slot:
 * host->device copies fill a slot and queue its transfer; device->host copies
 * queue into a slot and are copied out when the slot retires (on wait, poll,
 * or reuse). Up to TL_CUDA_RING chunks are in flight; tickets complete in
 * order. A host range pinned through tl_device_pin on this device skips the
 * staging: it is the DMA source / sink itself (one cudaMemcpyAsync + event).
 * cudaErrorMemoryAllocation maps to TL_ERR_DEVICE_OOM.
 *
 * Allocations come from a pool (pool.c) of cudaMalloc'd chunks of at least
 * 16 MiB: tl_device_free only returns the range to its chunk, because
 * cudaFree synchronises the whole device under an engine's kernels. Empty
 * chunks are freed only when cudaMalloc refuses a new one (then the
 * allocation is retried once); free memory counts the pool's unused bytes.
 */
#include "core/assert.h"
#include "core/env.h"
#include "core/error.h"
#include "core/library.h"
#include "devices/devices.h"
#include "devices/pool.h"
#include "os/dl.h"
#include "os/fault.h"
#include "os/guard.h"
#include "os/os.h"
#include "os/thread.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TL_CUDA_RING 4
#define TL_CUDA_STAGE (8u << 20)

/* ---- the slice of the CUDA runtime API used (ABI-stable since CUDA 4) ---- */
typedef int cudaError_t;
typedef void *cudaStream_t;
typedef void *cudaEvent_t;
enum {
    cudaSuccess = 0,
    cudaErrorMemoryAllocation = 2,
    cudaErrorNotReady = 600,
    cudaErrorHostMemoryAlreadyRegistered = 712,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaStreamNonBlocking = 1,
    cudaEventDisableTiming = 2,
    cudaHostAllocDefault = 0,
    cudaHostRegisterDefault = 0,
};

static struct {
    void *lib;
    cudaError_t (*GetDeviceCount)(int *);
    cudaError_t (*GetDevice)(int *);
    cudaError_t (*SetDevice)(int);
    cudaError_t (*GetDeviceProperties)(void *prop, int dev);
    cudaError_t (*MemGetInfo)(size_t *free_b, size_t *total_b);
    cudaError_t (*Malloc)(void **, size_t);
    cudaError_t (*Free)(void *);
    cudaError_t (*HostAlloc)(void **, size_t, unsigned);
    cudaError_t (*FreeHost)(void *);
    cudaError_t (*HostRegister)(void *, size_t, unsigned);
    cudaError_t (*HostUnregister)(void *);
    cudaError_t (*StreamCreateWithFlags)(cudaStream_t *, unsigned);
    cudaError_t (*StreamDestroy)(cudaStream_t);
    cudaError_t (*MemcpyAsync)(void *, const void *, size_t, int, cudaStream_t);
    cudaError_t (*EventCreateWithFlags)(cudaEvent_t *, unsigned);
    cudaError_t (*EventRecord)(cudaEvent_t, cudaStream_t);
    cudaError_t (*EventQuery)(cudaEvent_t);
    cudaError_t (*EventSynchronize)(cudaEvent_t);
    cudaError_t (*EventDestroy)(cudaEvent_t);
    const char *(*GetErrorString)(cudaError_t);
    cudaError_t (*GetLastError)(void);
} cu;

/* Written once during discovery (under the registry lock), read-only after. */
static char cuda_reason[512] = "CUDA not probed yet";

static const char *cu_str(cudaError_t e) {
    const char *s = cu.GetErrorString ? cu.GetErrorString(e) : NULL;
    return s ? s : "unknown CUDA error";
}

/* ---- one device ---- */
typedef struct cuda_slot {
    void *buf;
    cudaEvent_t ev;
    uint64_t ticket;
    bool last; /* last chunk of its ticket */
    void *dst; /* device->host: where the staged bytes go on retire */
    size_t len;
} cuda_slot;

typedef struct cuda_dev {
    tl__os_mutex lock; /* guards everything below but the constants; *_locked need it held */
    int ordinal;
    char name[TL_DEVICE_NAME_MAX];
    char desc[96];
    bool ready; /* stream and ring made */
    cudaStream_t stream;
    cuda_slot ring[TL_CUDA_RING];
    unsigned head, count; /* busy slots: FIFO from head */
    uint64_t issued, done;
    int cufile; /* 0 untried, 1 usable, -1 not usable */
    struct cuda_pin {
        uintptr_t addr;
        size_t len;
    } * pins; /* ranges pinned through this device: copied by DMA, no staging */
    size_t n_pins, cap_pins;
    tl__pool pool; /* device memory: cudaMalloc'd chunks, sub-allocated */
} cuda_dev;

#define TL_CUDA_CHUNK (16ull << 20)

static tl_status cu_fail(const cuda_dev *c, const char *what, cudaError_t e) {
    if (cu.GetLastError) cu.GetLastError(); /* clear the sticky-less error */
    return tl__err(e == cudaErrorMemoryAllocation ? TL_ERR_DEVICE_OOM : TL_ERR_DEVICE,
                  "%s: %s: %s (CUDA error %d)", c->name, what, cu_str(e), e);
}

/* Make c's GPU current on this thread; *prev receives the previous one. */
static tl_status enter(const cuda_dev *c, int *prev) {
    *prev = -1;
    if (cu.GetDevice(prev) != cudaSuccess) *prev = -1;
    if (*prev == c->ordinal) return TL_OK;
    cudaError_t e = cu.SetDevice(c->ordinal);
    return e == cudaSuccess ? TL_OK : cu_fail(c, "cudaSetDevice", e);
}

static void leave(const cuda_dev *c, int prev) {
    if (prev >= 0 && prev != c->ordinal) cu.SetDevice(prev);
}

static tl_status cuda_describe(void *self, tl_device_info *out) {
    cuda_dev *c = self;
    snprintf(out->name, sizeof out->name, "%s", c->name);
    snprintf(out->desc, sizeof out->desc, "%s", c->desc);
    out->kind = TL_DEVICE_CUDA;
    out->host_pointer = false;
    out->async = true;
    out->pinned = true;
    out->alignment = 256;
    int prev;
    tl_status s = enter(c, &prev);
    if (s != TL_OK) return s;
    size_t fr = 0, tot = 0;
    cudaError_t e = cu.MemGetInfo(&fr, &tot);
    leave(c, prev);
    if (e != cudaSuccess) return cu_fail(c, "cudaMemGetInfo", e);
    tl__os_mutex_lock(&c->lock);
    uint64_t slack = c->pool.total - c->pool.used;
    tl__os_mutex_unlock(&c->lock);
    out->total = tot;
    out->free = fr + slack < tot ? fr + slack : tot;
    return TL_OK;
}

/* A new chunk of at least size bytes (lock held, device entered). */
static tl_status grow_locked(cuda_dev *c, uint64_t size) {
    uint64_t want = size > TL_CUDA_CHUNK ? size : TL_CUDA_CHUNK;
    void *p = NULL;
    cudaError_t e = cu.Malloc(&p, (size_t)want);
    if (e == cudaErrorMemoryAllocation) { /* give empty chunks back, then the exact size */
        cu.GetLastError();
        void *bufs[64];
        size_t n;
        while ((n = tl__pool_trim(&c->pool, bufs, 64)) > 0)
            for (size_t i = 0; i < n; i++)
                cu.Free(bufs[i]);
        want = size;
        e = cu.Malloc(&p, (size_t)want);
    }
    if (e != cudaSuccess) {
        char what[64];
        snprintf(what, sizeof what, "cudaMalloc(%llu bytes)", (unsigned long long)want);
        return cu_fail(c, what, e);
    }
    if (tl__pool_add_chunk(&c->pool, p, p, want, (tl_devptr)(uintptr_t)p) != 0) {
        cu.Free(p);
        return tl__err(TL_ERR_NOMEM, "%s: out of host memory", c->name);
    }
    return TL_OK;
}

static tl_status cuda_alloc(void *self, uint64_t size, tl_devptr *out) {
    cuda_dev *c = self;
    int fe = tl__fault_hit(TL_FAULT_DEVICE_ALLOC);
    if (fe)
        return tl__err(TL_ERR_DEVICE_OOM, "%s: cannot allocate %llu bytes: %s", c->name,
                      (unsigned long long)size, tl__errno_text(fe));
    if (size > SIZE_MAX / 2)
        return tl__err(TL_ERR_DEVICE_OOM, "%s: cannot allocate %llu bytes", c->name,
                      (unsigned long long)size);
    int prev;
    tl_status s = enter(c, &prev);
    if (s != TL_OK) return s;
    tl__os_mutex_lock(&c->lock);
    int r = tl__pool_take(&c->pool, size, out);
    if (r == 1) {
        s = grow_locked(c, size);
        if (s == TL_OK) r = tl__pool_take(&c->pool, size, out);
    }
    if (s == TL_OK && r != 0) s = tl__err(TL_ERR_NOMEM, "%s: out of host memory", c->name);
    tl__os_mutex_unlock(&c->lock);
    leave(c, prev);
    return s;
}

static tl_status cuda_dealloc(void *self, tl_devptr p) {
    cuda_dev *c = self;
    tl__os_mutex_lock(&c->lock);
    int64_t got = tl__pool_give(&c->pool, p);
    tl__os_mutex_unlock(&c->lock);
    if (got < 0)
        return tl__err(TL_ERR_INVALID_ARG, "%s: free of 0x%llx, which is not an allocation",
                       c->name, (unsigned long long)p);
    return TL_OK;
}

/* Stream, events and staging buffers, on first use (device entered). */
static tl_status ready_locked(cuda_dev *c) {
    tl__os_mutex_assert_held(&c->lock);
    if (c->ready) return TL_OK;
    cudaError_t e = cu.StreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) return cu_fail(c, "cudaStreamCreateWithFlags", e);
    for (int i = 0; i < TL_CUDA_RING; i++) {
        e = cu.HostAlloc(&c->ring[i].buf, TL_CUDA_STAGE, cudaHostAllocDefault);
        if (e != cudaSuccess) {
            c->ring[i].buf = NULL;
            return cu_fail(c, "cudaHostAlloc(staging buffer)", e);
        }
        e = cu.EventCreateWithFlags(&c->ring[i].ev, cudaEventDisableTiming);
        if (e != cudaSuccess) {
            c->ring[i].ev = NULL;
            return cu_fail(c, "cudaEventCreateWithFlags", e);
        }
    }
    c->ready = true;
    return TL_OK;
}

/* Retire the oldest busy slot (blocking; device entered). */
static tl_status retire_one_locked(cuda_dev *c) {
    tl__os_mutex_assert_held(&c->lock);
    TL_ASSERT(c->count > 0 && c->count <= TL_CUDA_RING);
    cuda_slot *s = &c->ring[c->head];
    cudaError_t e = cu.EventSynchronize(s->ev);
    if (e == cudaSuccess && s->dst) memcpy(s->dst, s->buf, s->len);
    s->dst = NULL;
    if (s->last) c->done = s->ticket;
    c->head = (c->head + 1) % TL_CUDA_RING;
    c->count--;
    return e == cudaSuccess ? TL_OK : cu_fail(c, "cudaEventSynchronize", e);
}

/* Retire every busy slot (device entered): afterwards every ticket issued is done. */
static tl_status drain_locked(cuda_dev *c) {
    tl__os_mutex_assert_held(&c->lock);
    tl_status first = TL_OK;
    while (c->count > 0) {
        tl_status s = retire_one_locked(c);
        if (first == TL_OK) first = s;
    }
    c->done = c->issued;
    return first;
}

/* Is [hp, hp+n) inside a range pinned through this device? */
static bool is_pinned_locked(cuda_dev *c, const void *hp, uint64_t n) {
    tl__os_mutex_assert_held(&c->lock);
    uintptr_t a = (uintptr_t)hp;
    for (size_t i = 0; i < c->n_pins; i++)
        if (a >= c->pins[i].addr && a - c->pins[i].addr <= c->pins[i].len &&
            n <= c->pins[i].len - (a - c->pins[i].addr))
            return true;
    return false;
}

/* Queue one copy straight from / to pinned host memory (device entered). */
static tl_status queue_direct_locked(cuda_dev *c, bool to_dev, uint64_t dp, void *hp, uint64_t n,
                                     uint64_t t) {
    tl__os_mutex_assert_held(&c->lock);
    tl_status st = TL_OK;
    if (c->count == TL_CUDA_RING && (st = retire_one_locked(c)) != TL_OK) return st;
    cuda_slot *s = &c->ring[(c->head + c->count) % TL_CUDA_RING];
    cudaError_t e = to_dev ? cu.MemcpyAsync((void *)(uintptr_t)dp, hp, (size_t)n,
                                            cudaMemcpyHostToDevice, c->stream)
                           : cu.MemcpyAsync(hp, (const void *)(uintptr_t)dp, (size_t)n,
                                            cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cu.EventRecord(s->ev, c->stream);
    if (e != cudaSuccess) return cu_fail(c, "cudaMemcpyAsync(pinned)", e);
    s->dst = NULL;
    s->ticket = t;
    s->last = true;
    c->count++;
    return TL_OK;
}

/* Queue one copy in chunks through the ring. */
static tl_status queue_copy_locked(cuda_dev *c, bool to_dev, uint64_t dp, void *hp, uint64_t n,
                                   uint64_t *ticket) {
    tl__os_mutex_assert_held(&c->lock);
    int prev;
    tl_status st = enter(c, &prev);
    if (st != TL_OK) return st;
    if ((st = ready_locked(c)) != TL_OK) {
        leave(c, prev);
        return st;
    }
    uint64_t t = ++c->issued;
    if (is_pinned_locked(c, hp, n)) {
        st = queue_direct_locked(c, to_dev, dp, hp, n, t);
        if (st != TL_OK) drain_locked(c);
        leave(c, prev);
        if (st == TL_OK) *ticket = t;
        return st;
    }
    for (uint64_t off = 0; off < n;) {
        size_t len = n - off < TL_CUDA_STAGE ? (size_t)(n - off) : TL_CUDA_STAGE;
        if (c->count == TL_CUDA_RING && (st = retire_one_locked(c)) != TL_OK) break;
        cuda_slot *s = &c->ring[(c->head + c->count) % TL_CUDA_RING];
        cudaError_t e;
        if (to_dev) {
            /* the source may be a file's mapping: cut short, it is an error, not a Bus error */
            if (tl__os_guarded_copy(s->buf, (const unsigned char *)hp + off, len)) {
                st = tl__err(TL_ERR_CHANGED,
                             "%s: copy to the device: its source, a file's mapping, shrank under "
                             "it (%llu bytes in)",
                             c->name, (unsigned long long)off);
                break;
            }
            e = cu.MemcpyAsync((void *)(uintptr_t)(dp + off), s->buf, len, cudaMemcpyHostToDevice,
                               c->stream);
            s->dst = NULL;
        } else {
            e = cu.MemcpyAsync(s->buf, (const void *)(uintptr_t)(dp + off), len,
                               cudaMemcpyDeviceToHost, c->stream);
            s->dst = (unsigned char *)hp + off;
            s->len = len;
        }
        if (e == cudaSuccess) e = cu.EventRecord(s->ev, c->stream);
        if (e != cudaSuccess) {
            s->dst = NULL;
            st = cu_fail(
                c, to_dev ? "cudaMemcpyAsync(host to device)" : "cudaMemcpyAsync(device to host)",
                e);
            break;
        }
        off += len;
        s->ticket = t;
        s->last = off == n;
        c->count++;
        TL_ASSERT(c->count <= TL_CUDA_RING);
    }
    if (st != TL_OK)
        drain_locked(c); /* leave nothing half-queued: the ticket counts as done, with the error */
    leave(c, prev);
    if (st == TL_OK) *ticket = t;
    return st;
}

/* Wait until ticket is done. */
static tl_status wait_locked(cuda_dev *c, uint64_t ticket) {
    tl__os_mutex_assert_held(&c->lock);
    if (ticket > c->issued)
        return tl__err(TL_ERR_INVALID_ARG, "%s: wait on ticket %llu, never issued", c->name,
                      (unsigned long long)ticket);
    if (c->done >= ticket) return TL_OK;
    int prev;
    tl_status st = enter(c, &prev);
    if (st != TL_OK) return st;
    while (st == TL_OK && c->done < ticket && c->count > 0)
        st = retire_one_locked(c);
    leave(c, prev);
    return st;
}

static tl_status cuda_copy_async(cuda_dev *c, bool to_dev, uint64_t dp, void *hp, uint64_t n,
                                 uint64_t *ticket, bool sync) {
    tl__os_mutex_lock(&c->lock);
    uint64_t t = 0;
    tl_status st = queue_copy_locked(c, to_dev, dp, hp, n, &t);
    if (st == TL_OK && sync) st = wait_locked(c, t);
    tl__os_mutex_unlock(&c->lock);
    if (ticket) *ticket = t;
    return st;
}

static tl_status cuda_copy_to(void *self, tl_devptr dst, const void *src, uint64_t n) {
    return cuda_copy_async(self, true, dst, (void *)src, n, NULL, true);
}
static tl_status cuda_copy_from(void *self, void *dst, tl_devptr src, uint64_t n) {
    return cuda_copy_async(self, false, src, dst, n, NULL, true);
}
static tl_status cuda_copy_to_async(void *self, tl_devptr dst, const void *src, uint64_t n,
                                    uint64_t *ticket) {
    return cuda_copy_async(self, true, dst, (void *)src, n, ticket, false);
}
static tl_status cuda_copy_from_async(void *self, void *dst, tl_devptr src, uint64_t n,
                                      uint64_t *ticket) {
    return cuda_copy_async(self, false, src, dst, n, ticket, false);
}

static tl_status cuda_wait(void *self, uint64_t ticket) {
    cuda_dev *c = self;
    tl__os_mutex_lock(&c->lock);
    tl_status st = wait_locked(c, ticket);
    tl__os_mutex_unlock(&c->lock);
    return st;
}

static tl_status cuda_poll(void *self, uint64_t ticket, bool *done) {
    cuda_dev *c = self;
    tl__os_mutex_lock(&c->lock);
    tl_status st = TL_OK;
    if (ticket > c->issued) {
        st = tl__err(TL_ERR_INVALID_ARG, "%s: poll of ticket %llu, never issued", c->name,
                    (unsigned long long)ticket);
    } else if (c->done < ticket) {
        int prev;
        st = enter(c, &prev);
        bool entered = st == TL_OK;
        while (st == TL_OK && c->count > 0 && c->done < ticket) {
            cudaError_t e = cu.EventQuery(c->ring[c->head].ev);
            if (e == cudaErrorNotReady) break;
            if (e != cudaSuccess)
                st = cu_fail(c, "cudaEventQuery", e);
            else
                st = retire_one_locked(c); /* complete: does not block */
        }
        if (entered) leave(c, prev);
    }
    *done = c->done >= ticket;
    tl__os_mutex_unlock(&c->lock);
    return st;
}

static tl_status cuda_pin(void *self, void *host, uint64_t n) {
    cuda_dev *c = self;
    int prev;
    tl_status st = enter(c, &prev);
    if (st != TL_OK) return st;
    cudaError_t e = cu.HostRegister(host, (size_t)n, cudaHostRegisterDefault);
    leave(c, prev);
    if (e == cudaSuccess) {
        tl__os_mutex_lock(&c->lock);
        if (c->n_pins == c->cap_pins) {
            size_t cap = c->cap_pins ? c->cap_pins * 2 : 8;
            struct cuda_pin *np = tl__os_realloc(c->pins, cap * sizeof *np);
            if (np) {
                c->pins = np;
                c->cap_pins = cap;
            }
        }
        if (c->n_pins < c->cap_pins) { /* else: pinned, but copies keep using the staging ring */
            c->pins[c->n_pins].addr = (uintptr_t)host;
            c->pins[c->n_pins].len = (size_t)n;
            c->n_pins++;
        }
        tl__os_mutex_unlock(&c->lock);
        return TL_OK;
    }
    if (e == cudaErrorHostMemoryAlreadyRegistered) { /* pinned elsewhere: fine, staged copies */
        cu.GetLastError();
        return TL_OK;
    }
    char what[80];
    snprintf(what, sizeof what, "cudaHostRegister(%llu bytes)", (unsigned long long)n);
    st = cu_fail(c, what, e);
    return st == TL_ERR_DEVICE_OOM ? tl__err_prefix(TL_ERR_NOMEM, "page-locking host memory") : st;
}

static tl_status cuda_unpin(void *self, void *host, uint64_t n) {
    cuda_dev *c = self;
    (void)n;
    tl__os_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->n_pins; i++)
        if (c->pins[i].addr == (uintptr_t)host) {
            drain_locked(c); /* no copy may still be using the range: wait for the stream */
            c->pins[i] = c->pins[--c->n_pins];
            break;
        }
    tl__os_mutex_unlock(&c->lock);
    int prev;
    tl_status st = enter(c, &prev);
    if (st != TL_OK) return st;
    cudaError_t e = cu.HostUnregister(host);
    leave(c, prev);
    return e == cudaSuccess ? TL_OK : cu_fail(c, "cudaHostUnregister", e);
}

/*
 * GPUDirect Storage: the first read on a device probes libcufile with a real
 * small read checked against pread; only then is it used.
 */
static tl_status cuda_read_file(void *self, int fd, uint64_t off, tl_devptr dst, uint64_t n) {
    cuda_dev *c = self;
    tl__os_mutex_lock(&c->lock);
    int state = c->cufile;
    tl__os_mutex_unlock(&c->lock);
    if (state < 0 || !tl__cufile_load())
        return tl__err(TL_ERR_UNSUPPORTED, "%s: no GPUDirect Storage: %s", c->name,
                      tl_device_cufile_reason());
    int prev;
    tl_status st = enter(c, &prev);
    if (st != TL_OK) return st;
    if (state == 0) {
        size_t pn = n < 4096 ? (size_t)n : 4096;
        unsigned char *a = tl__os_malloc(pn), *b = tl__os_malloc(pn);
        bool read_ok = a && b && tl__cufile_read(fd, off, (void *)(uintptr_t)dst, pn) == 0;
        bool ok = read_ok && tl__os_pread_full(fd, a, pn, off) == 0 &&
                  cuda_copy_from(c, b, dst, pn) == TL_OK && memcmp(a, b, pn) == 0;
        free(a);
        free(b);
        if (ok)
            tl__cufile_set_usable(true, "");
        else if (read_ok)
            tl__cufile_set_usable(false, "probe read through libcufile differed from pread");
        else
            tl__cufile_set_usable(false, NULL); /* keeps cuFile's own reason */
        tl__os_mutex_lock(&c->lock);
        c->cufile = ok ? 1 : -1;
        tl__os_mutex_unlock(&c->lock);
        if (!ok) {
            leave(c, prev);
            return tl__err(TL_ERR_UNSUPPORTED, "%s: no GPUDirect Storage: %s", c->name,
                          tl_device_cufile_reason());
        }
    }
    int r = tl__cufile_read(fd, off, (void *)(uintptr_t)dst, n);
    leave(c, prev);
    if (r != 0)
        return tl__err(TL_ERR_IO, "%s: cuFileRead of %llu bytes at %llu: %s", c->name,
                      (unsigned long long)n, (unsigned long long)off, tl_device_cufile_reason());
    return TL_OK;
}

static void cuda_destroy(void *self) {
    cuda_dev *c = self;
    if (c->ready) {
        int prev;
        if (enter(c, &prev) == TL_OK) {
            tl__os_mutex_lock(&c->lock); /* no other holder is left; the drain wants it held */
            drain_locked(c);
            tl__os_mutex_unlock(&c->lock);
            for (int i = 0; i < TL_CUDA_RING; i++) {
                if (c->ring[i].ev) cu.EventDestroy(c->ring[i].ev);
                if (c->ring[i].buf) cu.FreeHost(c->ring[i].buf);
            }
            cu.StreamDestroy(c->stream);
            leave(c, prev);
        }
    }
    if (c->pool.n) {
        int prev;
        if (enter(c, &prev) == TL_OK) {
            for (size_t i = 0; i < c->pool.n; i++)
                cu.Free(c->pool.c[i].buf);
            leave(c, prev);
        }
    }
    tl__pool_free(&c->pool);
    free(c->pins);
    tl__os_mutex_destroy(&c->lock);
    free(c);
}

static const tl_device_ops cuda_ops = {
    .size = sizeof(tl_device_ops),
    .describe = cuda_describe,
    .alloc = cuda_alloc,
    .dealloc = cuda_dealloc,
    .copy_to = cuda_copy_to,
    .copy_from = cuda_copy_from,
    .copy_to_async = cuda_copy_to_async,
    .copy_from_async = cuda_copy_from_async,
    .wait = cuda_wait,
    .poll = cuda_poll,
    .pin = cuda_pin,
    .unpin = cuda_unpin,
    .read_file = cuda_read_file,
    .destroy = cuda_destroy,
};

/* ---- discovery ---- */
static bool load_runtime(void) {
    static const char *const names[] = {"libcudart.so",      "libcudart.so.13", "libcudart.so.12",
                                        "libcudart.so.11.0", "libcudart.so.11", NULL};
    char why[400];
    /* a specific runtime (or a test double): tl_init's cudart_path, else TIERLOAD_CUDART */
    const char *env = tl__lib_options()->cudart_path;
    if (!env) env = tl__env_get(TL_ENV_CUDART);
    const char *const one[] = {env, NULL};
    cu.lib = tl__os_dlopen_first(env ? one : names, why, sizeof why);
    if (!cu.lib) {
        snprintf(cuda_reason, sizeof cuda_reason, "no CUDA runtime: %s", why);
        return false;
    }
#define SYM(field, name)                                                                           \
    do {                                                                                           \
        *(void **)&cu.field = tl__os_dlsym(cu.lib, name);                                           \
        if (!cu.field) {                                                                           \
            snprintf(cuda_reason, sizeof cuda_reason, "no CUDA runtime: libcudart has no %s",      \
                     name);                                                                        \
            return false;                                                                          \
        }                                                                                          \
    } while (0)
    SYM(GetDeviceCount, "cudaGetDeviceCount");
    SYM(GetDevice, "cudaGetDevice");
    SYM(SetDevice, "cudaSetDevice");
    *(void **)&cu.GetDeviceProperties = tl__os_dlsym(cu.lib, "cudaGetDeviceProperties_v2");
    if (!cu.GetDeviceProperties) SYM(GetDeviceProperties, "cudaGetDeviceProperties");
    SYM(MemGetInfo, "cudaMemGetInfo");
    SYM(Malloc, "cudaMalloc");
    SYM(Free, "cudaFree");
    SYM(HostAlloc, "cudaHostAlloc");
    SYM(FreeHost, "cudaFreeHost");
    SYM(HostRegister, "cudaHostRegister");
    SYM(HostUnregister, "cudaHostUnregister");
    SYM(StreamCreateWithFlags, "cudaStreamCreateWithFlags");
    SYM(StreamDestroy, "cudaStreamDestroy");
    SYM(MemcpyAsync, "cudaMemcpyAsync");
    SYM(EventCreateWithFlags, "cudaEventCreateWithFlags");
    SYM(EventRecord, "cudaEventRecord");
    SYM(EventQuery, "cudaEventQuery");
    SYM(EventSynchronize, "cudaEventSynchronize");
    SYM(EventDestroy, "cudaEventDestroy");
    SYM(GetErrorString, "cudaGetErrorString");
    SYM(GetLastError, "cudaGetLastError");
#undef SYM
    return true;
}

void tl__cuda_discover(void (*add)(tl_device *d)) {
    if (tl__lib_options()->no_cuda) { /* the host program brings its own CUDA */
        snprintf(cuda_reason, sizeof cuda_reason, "CUDA discovery disabled (tl_init no_cuda)");
        return;
    }
    if (!load_runtime()) {
        tl__os_dlclose(cu.lib);
        memset(&cu, 0, sizeof cu);
        return;
    }
    int n = 0;
    cudaError_t e = cu.GetDeviceCount(&n);
    if (e != cudaSuccess || n <= 0) {
        if (e != cudaSuccess)
            snprintf(cuda_reason, sizeof cuda_reason,
                     "no CUDA device: cudaGetDeviceCount: %s (CUDA error %d)", cu_str(e), e);
        else
            snprintf(cuda_reason, sizeof cuda_reason,
                     "no CUDA device: cudaGetDeviceCount found none");
        cu.GetLastError();
        return; /* keep the library loaded: unloading a half-initialised runtime is unsafe */
    }
    cuda_reason[0] = 0;
    for (int i = 0; i < n; i++) {
        cuda_dev *c = tl__os_calloc(1, sizeof *c);
        if (!c) return;
        if (tl__os_mutex_init(&c->lock) != 0) {
            free(c);
            return;
        }
        c->ordinal = i;
        tl__pool_init(&c->pool, 256);
        snprintf(c->name, sizeof c->name, "cuda%d", i);
        /* cudaDeviceProp is ~1 KiB; 16 KiB leaves room for any future growth */
        char *props = tl__os_calloc(1, 16384);
        if (props && cu.GetDeviceProperties(props, i) == cudaSuccess) {
            props[255] = 0;
            snprintf(c->desc, sizeof c->desc, "%s", props);
        } else {
            cu.GetLastError();
            snprintf(c->desc, sizeof c->desc, "CUDA device %d", i);
        }
        free(props);
        tl_device *d = NULL;
        if (tl__device_wrap(&cuda_ops, c, c->name, TL_DEVICE_CUDA, &d) != TL_OK) {
            cuda_destroy(c);
            continue;
        }
        add(d);
    }
}

const char *tl_device_cuda_reason(void) {
    tl_device_list(NULL, 0); /* runs discovery once */
    return cuda_reason;
}
