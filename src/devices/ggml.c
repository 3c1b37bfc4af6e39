/*
 * ggml.c — ggml backend devices as tierload devices ("ggml:CPU",
 * "ggml:CUDA0", ...). ggml's shared libraries are loaded at run time with
 * dlopen (libggml-base, libggml, then ggml loads its backend libraries from
 * the same folder), and only ggml's public C API is called: the prototypes
 * used are declared in ggml_dl.h with opaque pointers.
 *
 * Allocations come from a pool (pool.c) of large ggml buffers of the
 * device's default buffer type (chunks of at least 16 MiB, within the cap),
 * so a tensor costs no backend allocation and freeing one never reaches the
 * backend; empty chunks are given back only when a new one would not fit.
 * On devices whose buffers are host memory (ggml:CPU) a tl_devptr is a host
 * address; elsewhere it is a handle in a private address space (some
 * backends give every buffer the same fake base), with a gap between
 * chunks. Copies place a 1-D I8 tensor over the range
 * (ggml_backend_tensor_alloc) and use ggml_backend_tensor_set / get, so
 * every backend's own transfer path is used. Copies are synchronous.
 *
 * Devices of a ggml RPC server (ggml_rpc.c) are made here too; their memory
 * is asked of the server once, when they are added, and counted down by the
 * pool from there, so describing them costs no round trip.
 *
 * ggml aborts on a failed assertion, so every argument is checked here
 * before ggml sees it; ggml's log goes to a buffer, never to the terminal.
 */
#include "core/env.h"
#include "core/error.h"
#include "devices/devices.h"
#include "devices/ggml_dl.h"
#include "devices/pool.h"
#include "os/dl.h"
#include "os/fault.h"
#include "os/os.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>

/* ---- loading ---- */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* loading and discovery */
static tl__ggml_api G;
static bool g_loaded;
static char g_reason[768] = "not loaded";

/*
 * ggml ends the process on errors it cannot return (an RPC server that dies
 * in the middle of a transfer). Its abort callback, installed when ggml is
 * loaded, says what ggml said and what this thread was doing with which
 * device, then hands over to the program's handler (tl_device_ggml_on_abort).
 */
static _Thread_local char g_doing[200];
/*
 * The g_doing of the thread with the latest operation in flight: ggml's RPC
 * client fails on its own dispatcher thread while the thread that asked
 * waits, so the message takes that thread's words (stable while it waits).
 */
static char *_Atomic g_doing_any;
static tl_ggml_abort_fn g_on_abort;

static void on_ggml_abort(const char *msg) {
    char line[768];
    const char *d = g_doing[0] ? g_doing : atomic_load(&g_doing_any);
    if (d && !d[0]) d = NULL;
    snprintf(line, sizeof line, "ggml stopped the process: %s%s%s", msg ? msg : "?",
             d ? " (while " : "", d ? d : "");
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = 0;
    if (d && n + 1 < sizeof line) snprintf(line + n, sizeof line - n, ")");
    tl_ggml_abort_fn fn = __atomic_load_n(&g_on_abort, __ATOMIC_ACQUIRE);
    if (fn) {
        fn(line);
    } else {
        tl__os_write_stderr("tierload: ");
        tl__os_write_stderr(line);
        tl__os_write_stderr("\n");
    }
}

void tl_device_ggml_on_abort(tl_ggml_abort_fn fn) {
    __atomic_store_n(&g_on_abort, fn, __ATOMIC_RELEASE);
}

/* What this thread asks of a device now, for the abort message (what NULL: done). */
static void doing(const char *name, const char *desc, const char *what, uint64_t n) {
    if (!what) {
        char *mine = g_doing;
        atomic_compare_exchange_strong(&g_doing_any, &mine, NULL);
        g_doing[0] = 0;
        return;
    }
    const char *on = strcmp(what, "copying") ? "on" : "to";
    if (n)
        snprintf(g_doing, sizeof g_doing, "%s %llu bytes %s %s, %s", what, (unsigned long long)n,
                 on, name, desc);
    else
        snprintf(g_doing, sizeof g_doing, "%s %s %s, %s", what, on, name, desc);
    atomic_store(&g_doing_any, g_doing);
}


static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_last[512];

/* ggml's log: keep the last warning / error (level 3, 4; 5 continues the previous one). */
static void ggml_log_cb(int level, const char *text, void *user) {
    (void)user;
    static int last_level; /* guarded by log_lock */
    pthread_mutex_lock(&log_lock);
    if (level != 5) last_level = level;
    if (last_level < 3 || !text) {
        pthread_mutex_unlock(&log_lock);
        return;
    }
    size_t at = level == 5 ? strlen(log_last) : 0;
    if (at >= sizeof log_last - 1) at = 0;
    snprintf(log_last + at, sizeof log_last - at, "%s", text);
    size_t n = strlen(log_last);
    while (n && (log_last[n - 1] == '\n' || log_last[n - 1] == ' '))
        log_last[--n] = 0;
    pthread_mutex_unlock(&log_lock);
}

const char *tl__ggml_last_log(void) {
    static _Thread_local char copy[sizeof log_last];
    pthread_mutex_lock(&log_lock);
    memcpy(copy, log_last, sizeof copy);
    pthread_mutex_unlock(&log_lock);
    return copy;
}

const tl__ggml_api *tl__ggml_api_get(void) {
    pthread_mutex_lock(&g_lock);
    bool ok = g_loaded;
    pthread_mutex_unlock(&g_lock);
    return ok ? &G : NULL;
}

/* libggml's file in dir: libggml.so, else libggml.so.N or libggml.vX.Y.Z.so; malloc'd. */
static char *find_libggml(const char *dir) {
    char **names = NULL;
    size_t n = 0;
    if (tl__os_listdir(dir, &names, &n) != 0) return NULL;
    const char *pick = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *s = names[i];
        if (!strcmp(s, "libggml.so")) {
            pick = s;
            break;
        }
        if (!pick && !strncmp(s, "libggml.", 8) && strstr(s, ".so")) pick = s;
    }
    char *out = NULL;
    if (pick) {
        size_t len = strlen(dir) + strlen(pick) + 2;
        out = tl__os_malloc(len);
        if (out) snprintf(out, len, "%s/%s", dir, pick);
    }
    tl__os_listdir_free(names, n);
    return out;
}

/* Load the two libraries and resolve every entry point (g_lock held); false with g_reason set. */
static bool load_locked(const char *dir) {
    char why[400] = "", base_path[4096], *ggml_path = NULL;
    void *base = NULL, *lib = NULL;
    if (dir) {
        if (!tl__os_is_dir(dir)) {
            snprintf(g_reason, sizeof g_reason, "no ggml: %s is not a folder", dir);
            return false;
        }
        snprintf(base_path, sizeof base_path, "%s/libggml-base.so", dir);
        const char *const b[] = {base_path, NULL};
        base = tl__os_dlopen_first(b, why, sizeof why);
        if (!base) {
            snprintf(g_reason, sizeof g_reason, "no ggml: %s", why);
            return false;
        }
        ggml_path = find_libggml(dir);
        if (!ggml_path) {
            snprintf(g_reason, sizeof g_reason, "no ggml: %s has no libggml.so", dir);
            return false; /* base stays loaded: unloading C++ libraries is not worth the risk */
        }
        const char *const l[] = {ggml_path, NULL};
        lib = tl__os_dlopen_first(l, why, sizeof why);
        free(ggml_path);
    } else {
        const char *const b[] = {"libggml-base.so", NULL};
        base = tl__os_dlopen_first(b, why, sizeof why);
        if (!base) {
            snprintf(g_reason, sizeof g_reason,
                     "no ggml: %s (set TIERLOAD_GGML_DIR to a folder with libggml-base.so, "
                     "libggml.so and the backend libraries)",
                     why);
            return false;
        }
        const char *const l[] = {"libggml.so", NULL};
        lib = tl__os_dlopen_first(l, why, sizeof why);
    }
    if (!lib) {
        snprintf(g_reason, sizeof g_reason, "no ggml: %s", why);
        return false;
    }
#define SYM(h, field, name)                                                                        \
    do {                                                                                           \
        void *s_ = tl__os_dlsym(h, name);                                                           \
        if (!s_) {                                                                                 \
            snprintf(g_reason, sizeof g_reason, "no ggml: the ggml libraries have no %s", name);   \
            return false;                                                                          \
        }                                                                                          \
        memcpy(&G.field, &s_, sizeof s_);                                                          \
    } while (0)
    SYM(base, init, "ggml_init");
    SYM(base, free, "ggml_free");
    SYM(base, tensor_overhead, "ggml_tensor_overhead");
    SYM(base, graph_overhead, "ggml_graph_overhead");
    SYM(base, new_tensor_1d, "ggml_new_tensor_1d");
    SYM(base, new_tensor_2d, "ggml_new_tensor_2d");
    SYM(base, mul_mat, "ggml_mul_mat");
    SYM(base, scale_inplace, "ggml_scale_inplace");
    SYM(base, add_inplace, "ggml_add_inplace");
    SYM(base, cpy, "ggml_cpy");
    SYM(base, sum, "ggml_sum");
    SYM(base, new_graph, "ggml_new_graph");
    SYM(base, build_forward_expand, "ggml_build_forward_expand");
    SYM(base, nbytes, "ggml_nbytes");
    SYM(base, type_name, "ggml_type_name");
    SYM(base, blck_size, "ggml_blck_size");
    SYM(base, type_size, "ggml_type_size");
    SYM(base, log_set, "ggml_log_set");
    SYM(base, alloc_ctx_tensors_from_buft, "ggml_backend_alloc_ctx_tensors_from_buft");
    SYM(lib, load_all_from_path, "ggml_backend_load_all_from_path");
    SYM(lib, load_all, "ggml_backend_load_all");
    SYM(lib, dev_count, "ggml_backend_dev_count");
    SYM(lib, dev_get, "ggml_backend_dev_get");
    SYM(base, dev_name, "ggml_backend_dev_name");
    SYM(base, dev_description, "ggml_backend_dev_description");
    SYM(base, dev_memory, "ggml_backend_dev_memory");
    SYM(base, dev_type, "ggml_backend_dev_type");
    SYM(base, dev_get_props, "ggml_backend_dev_get_props");
    SYM(base, dev_buffer_type, "ggml_backend_dev_buffer_type");
    SYM(base, dev_buffer_from_host_ptr, "ggml_backend_dev_buffer_from_host_ptr");
    SYM(base, dev_init, "ggml_backend_dev_init");
    SYM(base, dev_supports_op, "ggml_backend_dev_supports_op");
    SYM(base, buft_alloc_buffer, "ggml_backend_buft_alloc_buffer");
    SYM(base, buft_is_host, "ggml_backend_buft_is_host");
    SYM(base, buft_get_alignment, "ggml_backend_buft_get_alignment");
    SYM(base, buft_get_max_size, "ggml_backend_buft_get_max_size");
    SYM(base, buft_get_alloc_size, "ggml_backend_buft_get_alloc_size");
    SYM(base, buffer_free, "ggml_backend_buffer_free");
    SYM(base, buffer_get_base, "ggml_backend_buffer_get_base");
    SYM(base, buffer_get_size, "ggml_backend_buffer_get_size");
    SYM(base, buffer_get_alloc_size, "ggml_backend_buffer_get_alloc_size");
    SYM(base, tensor_alloc, "ggml_backend_tensor_alloc");
    SYM(base, tensor_set, "ggml_backend_tensor_set");
    SYM(base, tensor_get, "ggml_backend_tensor_get");
    SYM(base, tensor_copy, "ggml_backend_tensor_copy");
    SYM(base, cpu_buffer_from_ptr, "ggml_backend_cpu_buffer_from_ptr");
    SYM(base, graph_compute, "ggml_backend_graph_compute");
    SYM(base, backend_free, "ggml_backend_free");
    SYM(base, dev_backend_reg, "ggml_backend_dev_backend_reg");
    SYM(base, reg_get_proc_address, "ggml_backend_reg_get_proc_address");
    SYM(base, reg_dev_count, "ggml_backend_reg_dev_count");
    SYM(base, reg_dev_get, "ggml_backend_reg_dev_get");
    SYM(lib, reg_by_name, "ggml_backend_reg_by_name");
    SYM(base, buffer_init_tensor, "ggml_backend_buffer_init_tensor");
#undef SYM
    void *su = tl__os_dlsym(base, "ggml_backend_buffer_set_usage");
    memcpy(&G.buffer_set_usage, &su, sizeof su);
    G.log_set(ggml_log_cb, NULL);
    void *sac = tl__os_dlsym(base, "ggml_set_abort_callback");
    if (sac) {
        void *(*set_abort)(void (*)(const char *));
        memcpy(&set_abort, &sac, sizeof sac);
        set_abort(on_ggml_abort);
    }
    if (dir)
        G.load_all_from_path(dir);
    else
        G.load_all();
    g_loaded = true;
    return true;
}

/* ---- one device ---- */

#define CHUNK_MIN (16ull << 20)

struct tl__ggml_dev {
    void *dev;  /* ggml_backend_dev_t */
    void *buft; /* default buffer type */
    char name[TL_DEVICE_NAME_MAX];
    char desc[96];
    bool host;     /* buffers are host memory: tl_devptr = host address */
    bool mappable; /* can wrap host memory */
    bool is_cpu;
    uint32_t alignment;
    uint64_t max_size;
    bool remote;                /* an RPC server's device: memory as reported when added */
    uint64_t remote_free, remote_total;
    double link_bw, link_lat; /* remote: the link's bytes/s and seconds per round trip (0: unknown) */
    bool link_measured;       /* remote: bandwidth timed at connection, not given */
    uint64_t written;         /* remote: bytes copied to the device (under lock) */
    pthread_mutex_t lock; /* the pool and cap */
    tl__pool pool;        /* pool.total: the bytes this device holds through tierload */
    uint64_t cap;
    tl_devptr next;          /* next handle (non-host devices) */
    bool (*reg_host)(void *buf, size_t n); /* the backend's ggml_backend_register_host_buffer */
    void (*unreg_host)(void *buf);
    pthread_mutex_t compute; /* the backend */
    void *backend;
    int threads; /* 0 = ggml's default */
};

static const tl_device_ops ggml_ops;
static uint64_t trim_locked(tl__ggml_dev *g);

tl__ggml_dev *tl__ggml_dev_of(tl_device *d) {
    return d && d->ops == &ggml_ops ? d->self : NULL;
}
void tl__ggml_doing(const tl__ggml_dev *g, const char *what) {
    if (what)
        doing(g->name, g->desc, what, 0);
    else
        doing(NULL, NULL, NULL, 0);
}
void *tl__ggml_dev_handle(const tl__ggml_dev *g) {
    return g->dev;
}
void *tl__ggml_dev_buft(const tl__ggml_dev *g) {
    return g->buft;
}
const char *tl__ggml_dev_name(const tl__ggml_dev *g) {
    return g->name;
}
bool tl__ggml_dev_host_mappable(const tl__ggml_dev *g) {
    return g->mappable;
}
void tl__ggml_dev_lock(tl__ggml_dev *g) {
    pthread_mutex_lock(&g->compute);
}
void tl__ggml_dev_unlock(tl__ggml_dev *g) {
    pthread_mutex_unlock(&g->compute);
}

/* Apply g->threads to the backend (compute lock held). */
static void apply_threads(tl__ggml_dev *g) {
    if (!g->backend || g->threads <= 0) return;
    void *reg = G.dev_backend_reg(g->dev);
    void *fn = reg ? G.reg_get_proc_address(reg, "ggml_backend_set_n_threads") : NULL;
    void (*set)(void *, int);
    if (!fn) return;
    memcpy(&set, &fn, sizeof fn);
    set(g->backend, g->threads);
}

tl_status tl__ggml_dev_backend(tl__ggml_dev *g, void **backend) {
    if (!g->backend) {
        g->backend = G.dev_init(g->dev, NULL);
        if (!g->backend)
            return tl__err(TL_ERR_DEVICE, "%s: ggml_backend_dev_init failed: %s", g->name,
                          tl__ggml_last_log());
        apply_threads(g);
    }
    *backend = g->backend;
    return TL_OK;
}

tl_status tl__ggml_dev_set_threads(tl_device *d, int n_threads) {
    tl__ggml_dev *g = tl__ggml_dev_of(d);
    if (!g) return tl__err(TL_ERR_INVALID_ARG, "%s: not a ggml device", tl_device_name(d));
    if (n_threads < 0 || n_threads > 4096)
        return tl__err(TL_ERR_INVALID_ARG, "%s: %d threads", g->name, n_threads);
    pthread_mutex_lock(&g->compute);
    g->threads = n_threads;
    apply_threads(g);
    pthread_mutex_unlock(&g->compute);
    return TL_OK;
}

tl_status tl__ggml_dev_set_link(tl_device *d, double bandwidth, double latency, bool measured) {
    tl__ggml_dev *g = tl__ggml_dev_of(d);
    if (!g || !g->remote) return tl__err(TL_ERR_INVALID_ARG, "not an RPC server's device");
    pthread_mutex_lock(&g->lock);
    g->link_bw = bandwidth;
    g->link_lat = latency;
    g->link_measured = measured;
    g->written = 0; /* what the measurement wrote is not the caller's traffic */
    pthread_mutex_unlock(&g->lock);
    return TL_OK;
}

tl_status tl_device_link(tl_device *d, double *bandwidth, double *latency, bool *measured) {
    tl__ggml_dev *g = tl__ggml_dev_of(d);
    if (!g || !g->remote) {
        if (!d) return tl__err(TL_ERR_INVALID_ARG, "tl_device_link: NULL device");
        return tl__err(TL_ERR_NOT_FOUND, "device is local: it has no network link");
    }
    pthread_mutex_lock(&g->lock);
    if (bandwidth) *bandwidth = g->link_bw;
    if (latency) *latency = g->link_lat;
    if (measured) *measured = g->link_measured;
    pthread_mutex_unlock(&g->lock);
    return TL_OK;
}

uint64_t tl__ggml_dev_written(tl_device *d) {
    tl__ggml_dev *g = tl__ggml_dev_of(d);
    if (!g || !g->remote) return 0;
    pthread_mutex_lock(&g->lock);
    uint64_t w = g->written;
    pthread_mutex_unlock(&g->lock);
    return w;
}

void tl__ggml_dev_trim(tl_device *d) {
    tl__ggml_dev *g = tl__ggml_dev_of(d);
    if (!g) return;
    pthread_mutex_lock(&g->lock);
    trim_locked(g);
    pthread_mutex_unlock(&g->lock);
}

tl_status tl__ggml_dev_set_cap(tl_device *d, uint64_t cap) {
    tl__ggml_dev *g = tl__ggml_dev_of(d);
    if (!g) return tl__err(TL_ERR_INVALID_ARG, "%s: not a ggml device", tl_device_name(d));
    pthread_mutex_lock(&g->lock);
    g->cap = cap;
    pthread_mutex_unlock(&g->lock);
    return TL_OK;
}

/* Free and total memory of the device (remote devices: as reported when added, minus the pool). */
static void dev_memory(tl__ggml_dev *g, uint64_t *f, uint64_t *t) {
    if (g->remote) {
        pthread_mutex_lock(&g->lock);
        uint64_t held = g->pool.total;
        pthread_mutex_unlock(&g->lock);
        *t = g->remote_total;
        *f = g->remote_free > held ? g->remote_free - held : 0;
        return;
    }
    size_t fr = 0, to = 0;
    G.dev_memory(g->dev, &fr, &to);
    *f = fr;
    *t = to;
}

static tl_status gg_describe(void *self, tl_device_info *out) {
    tl__ggml_dev *g = self;
    snprintf(out->name, sizeof out->name, "%s", g->name);
    snprintf(out->desc, sizeof out->desc, "%s", g->desc);
    out->kind = TL_DEVICE_GGML;
    uint64_t f, t;
    dev_memory(g, &f, &t);
    pthread_mutex_lock(&g->lock);
    uint64_t total = t, free_ = f;
    if (g->cap != UINT64_MAX) {
        uint64_t room = g->cap > g->pool.used ? g->cap - g->pool.used : 0;
        if (total > g->cap) total = g->cap;
        if (free_ > room) free_ = room;
    }
    pthread_mutex_unlock(&g->lock);
    if (free_ > total) free_ = total;
    out->total = total;
    out->free = free_;
    out->host_pointer = g->host;
    out->async = false;
    out->pinned = g->reg_host != NULL;
    out->alignment = g->alignment;
    return TL_OK;
}

/* Give empty chunks back to ggml (lock held); the bytes freed. */
static uint64_t trim_locked(tl__ggml_dev *g) {
    void *bufs[64];
    uint64_t before = g->pool.total;
    size_t n;
    while ((n = tl__pool_trim(&g->pool, bufs, 64)) > 0)
        for (size_t i = 0; i < n; i++)
            G.buffer_free(bufs[i]);
    return before - g->pool.total;
}

/* A new chunk for at least size bytes (lock held). */
static tl_status grow_locked(tl__ggml_dev *g, uint64_t size) {
    uint64_t f, t;
    pthread_mutex_unlock(&g->lock);
    dev_memory(g, &f, &t);
    pthread_mutex_lock(&g->lock);
    uint64_t room = g->cap == UINT64_MAX ? UINT64_MAX
                    : g->cap > g->pool.total ? g->cap - g->pool.total
                                             : 0;
    if (room < size || f < size) {
        trim_locked(g);
        room = g->cap == UINT64_MAX ? UINT64_MAX
               : g->cap > g->pool.total ? g->cap - g->pool.total
                                        : 0;
        if (!g->remote) {
            pthread_mutex_unlock(&g->lock);
            dev_memory(g, &f, &t);
            pthread_mutex_lock(&g->lock);
        } else {
            f = g->remote_free > g->pool.total ? g->remote_free - g->pool.total : 0;
        }
    }
    if (f < size)
        return tl__err(TL_ERR_DEVICE_OOM, "%s: cannot allocate %llu bytes: %llu bytes free", g->name,
                       (unsigned long long)size, (unsigned long long)f);
    if (room < size)
        return tl__err(TL_ERR_DEVICE_OOM,
                       "%s: cannot allocate %llu bytes: %llu bytes free under its cap of %llu",
                       g->name, (unsigned long long)size, (unsigned long long)room,
                       (unsigned long long)g->cap);
    uint64_t want = size > CHUNK_MIN ? size : CHUNK_MIN;
    if (want > room) want = room;
    if (want > f) want = f;
    if (want > g->max_size) want = g->max_size;
    doing(g->name, g->desc, "allocating", want);
    void *buf = G.buft_alloc_buffer(g->buft, (size_t)want);
    doing(NULL, NULL, NULL, 0);
    char *base = buf ? G.buffer_get_base(buf) : NULL;
    if (!buf || !base || G.buffer_get_size(buf) < want) {
        if (buf) G.buffer_free(buf);
        return tl__err(TL_ERR_DEVICE_OOM, "%s: cannot allocate %llu bytes: ggml refused%s%s",
                       g->name, (unsigned long long)want, *tl__ggml_last_log() ? ": " : "",
                       tl__ggml_last_log());
    }
    /*
     * An RPC server's buffers hold weights: ggml's RPC client then sends a
     * write above its threshold (10 MiB) as a hash first, and a server with
     * a cache (ggml-rpc-server -c) that has those bytes takes them from it.
     */
    if (g->remote && G.buffer_set_usage) G.buffer_set_usage(buf, TL_GGML_USAGE_WEIGHTS);
    tl_devptr p0;
    if (g->host) {
        p0 = (tl_devptr)(uintptr_t)base;
    } else { /* handles: page-rounded, one free page between chunks */
        p0 = g->next;
        g->next += (want + 4095) / 4096 * 4096 + 4096;
    }
    if (tl__pool_add_chunk(&g->pool, buf, base, want, p0) != 0) {
        G.buffer_free(buf);
        return tl__err(TL_ERR_NOMEM, "%s: out of host memory", g->name);
    }
    return TL_OK;
}

static tl_status gg_alloc(void *self, uint64_t size, tl_devptr *out) {
    tl__ggml_dev *g = self;
    int e = tl__fault_hit(TL_FAULT_DEVICE_ALLOC);
    if (e)
        return tl__err(TL_ERR_DEVICE_OOM, "%s: cannot allocate %llu bytes: %s", g->name,
                       (unsigned long long)size, strerror(e));
    if (size > SIZE_MAX / 2 || size > g->max_size)
        return tl__err(TL_ERR_DEVICE_OOM,
                       "%s: cannot allocate %llu bytes: the largest ggml buffer is %llu bytes",
                       g->name, (unsigned long long)size, (unsigned long long)g->max_size);
    pthread_mutex_lock(&g->lock);
    int r = tl__pool_take(&g->pool, size, out);
    tl_status st = TL_OK;
    if (r == 1) {
        st = grow_locked(g, size);
        if (st == TL_OK) r = tl__pool_take(&g->pool, size, out);
    }
    if (st == TL_OK && r != 0) st = tl__err(TL_ERR_NOMEM, "%s: out of host memory", g->name);
    pthread_mutex_unlock(&g->lock);
    return st;
}

static tl_status gg_dealloc(void *self, tl_devptr p) {
    tl__ggml_dev *g = self;
    pthread_mutex_lock(&g->lock);
    int64_t got = tl__pool_give(&g->pool, p);
    pthread_mutex_unlock(&g->lock);
    if (got < 0)
        return tl__err(TL_ERR_INVALID_ARG, "%s: free of 0x%llx, which is not an allocation", g->name,
                       (unsigned long long)p);
    return TL_OK;
}

tl_status tl__ggml_dev_resolve(tl__ggml_dev *g, tl_devptr p, uint64_t n, void **buf, void **addr) {
    pthread_mutex_lock(&g->lock);
    bool ok = tl__pool_find(&g->pool, p, n, buf, addr, NULL);
    pthread_mutex_unlock(&g->lock);
    if (!ok)
        return tl__err(TL_ERR_INVALID_ARG,
                       "%s: range 0x%llx + %llu bytes is not inside one allocation", g->name,
                       (unsigned long long)p, (unsigned long long)n);
    return TL_OK;
}

tl_status tl__ggml_bind(void *t, void *buf, void *addr, uint64_t n, const char *what) {
    tl__ggml_tensor *x = t;
    if (!x || !buf || !addr) return tl__err(TL_ERR_INVALID_ARG, "%s: bind: NULL argument", what);
    if (x->view_src)
        return tl__err(TL_ERR_INVALID_ARG, "%s: bind: the ggml tensor is a view of another", what);
    size_t nb = G.nbytes(t);
    if (nb != n)
        return tl__err(TL_ERR_INVALID_ARG,
                       "%s: bind: the ggml tensor holds %zu bytes, the weight placed has %llu", what,
                       nb, (unsigned long long)n);
    char *base = G.buffer_get_base(buf);
    size_t size = G.buffer_get_size(buf);
    x->buffer = NULL; /* rebinding: ggml_backend_tensor_alloc asserts a fresh tensor */
    x->data = NULL;
    size_t need = G.buffer_get_alloc_size(buf, t);
    if ((char *)addr < base || (uint64_t)((char *)addr - base) > size ||
        need > size - (size_t)((char *)addr - base))
        return tl__err(TL_ERR_INVALID_ARG,
                       "%s: bind: ggml needs %zu bytes for it, more than its memory holds", what,
                       need);
    if (G.tensor_alloc(buf, t, addr) != 0) {
        x->buffer = NULL;
        x->data = NULL;
        return tl__err(TL_ERR_DEVICE, "%s: bind: ggml_backend_tensor_alloc failed: %s", what,
                       tl__ggml_last_log());
    }
    return TL_OK;
}

/* A 1-D I8 tensor over [p, p+n) in its buffer; *ctx to free with G.free. */
static tl_status view(tl__ggml_dev *g, tl_devptr p, uint64_t n, void **ctx, void **t) {
    void *buf, *addr;
    tl_status s = tl__ggml_dev_resolve(g, p, n, &buf, &addr);
    if (s != TL_OK) return s;
    if (n > INT64_MAX) return tl__err(TL_ERR_INVALID_ARG, "%s: copy too large", g->name);
    tl__ggml_init_params ip = {.mem_size = G.tensor_overhead() + 256, .no_alloc = true};
    *ctx = G.init(ip);
    if (!*ctx) return tl__err(TL_ERR_NOMEM, "%s: ggml_init failed", g->name);
    *t = G.new_tensor_1d(*ctx, TL_GGML_T_I8, (int64_t)n);
    if (!*t || G.nbytes(*t) != n ||
        (char *)addr + G.buffer_get_alloc_size(buf, *t) >
            (char *)G.buffer_get_base(buf) + G.buffer_get_size(buf)) {
        G.free(*ctx);
        return tl__err(TL_ERR_DEVICE, "%s: cannot place a %llu-byte view in its buffer", g->name,
                      (unsigned long long)n);
    }
    if (G.tensor_alloc(buf, *t, addr) != 0) {
        G.free(*ctx);
        return tl__err(TL_ERR_DEVICE, "%s: ggml_backend_tensor_alloc failed: %s", g->name,
                      tl__ggml_last_log());
    }
    return TL_OK;
}

static tl_status gg_copy_to(void *self, tl_devptr dst, const void *src, uint64_t n) {
    void *ctx, *t;
    tl_status s = view(self, dst, n, &ctx, &t);
    if (s != TL_OK) return tl__err_prefix(s, "copy to device");
    tl__ggml_dev *g = self;
    doing(g->name, g->desc, "copying", n);
    G.tensor_set(t, src, 0, (size_t)n);
    doing(NULL, NULL, NULL, 0);
    G.free(ctx);
    if (g->remote) {
        pthread_mutex_lock(&g->lock);
        g->written += n;
        pthread_mutex_unlock(&g->lock);
    }
    return TL_OK;
}

static tl_status gg_copy_from(void *self, void *dst, tl_devptr src, uint64_t n) {
    void *ctx, *t;
    tl_status s = view(self, src, n, &ctx, &t);
    if (s != TL_OK) return tl__err_prefix(s, "copy from device");
    doing(((tl__ggml_dev *)self)->name, ((tl__ggml_dev *)self)->desc, "reading", n);
    G.tensor_get(t, dst, 0, (size_t)n);
    doing(NULL, NULL, NULL, 0);
    G.free(ctx);
    return TL_OK;
}

uint64_t tl__ggml_dev_pack_min(tl_device *d) {
    tl__ggml_dev *g = tl__ggml_dev_of(d);
    return g && g->remote ? TL_GGML_RPC_HASH_MIN : 0;
}

/* Server-side copy of n bytes from device range src to dst (both the device's allocations). */
static tl_status copy_within(tl__ggml_dev *g, tl_devptr src, tl_devptr dst, uint64_t n) {
    void *cs, *ts, *cd, *td;
    tl_status s = view(g, src, n, &cs, &ts);
    if (s) return s;
    s = view(g, dst, n, &cd, &td);
    if (s) {
        G.free(cs);
        return s;
    }
    doing(g->name, g->desc, "copying within", n);
    G.tensor_copy(ts, td);
    doing(NULL, NULL, NULL, 0);
    G.free(cd);
    G.free(cs);
    return TL_OK;
}

tl_status tl__ggml_dev_scatter(tl_device *d, const void *src, uint64_t len, const tl_devptr *dst,
                               const uint64_t *n, size_t count) {
    tl__ggml_dev *g = tl__ggml_dev_of(d);
    if (!g) return tl__err(TL_ERR_INVALID_ARG, "scatter: not a ggml device");
    uint64_t sum = 0;
    for (size_t i = 0; i < count; i++)
        sum += n[i];
    if (sum != len)
        return tl__err(TL_ERR_INVALID_ARG, "%s: scatter of %llu bytes in pieces of %llu", g->name,
                       (unsigned long long)len, (unsigned long long)sum);
    tl_devptr scratch = 0;
    tl_status s = gg_alloc(g, len, &scratch);
    if (s) { /* no room for the scratch: the pieces one by one */
        tl__err_clear();
        const unsigned char *p = src;
        for (size_t i = 0; i < count && !s; p += n[i], i++)
            s = gg_copy_to(g, dst[i], p, n[i]);
        return s;
    }
    s = gg_copy_to(g, scratch, src, len);
    uint64_t off = 0;
    for (size_t i = 0; i < count && !s; off += n[i], i++)
        s = copy_within(g, scratch + off, dst[i], n[i]);
    tl_status f = gg_dealloc(g, scratch);
    return s ? s : f;
}

/* Pin through the backend's own host-buffer registration (CUDA: cudaHostRegister). */
static tl_status gg_pin(void *self, void *host, uint64_t n) {
    tl__ggml_dev *g = self;
    if (!g->reg_host) return TL_OK; /* nothing to pin for: plain host memory works */
    if (n > SIZE_MAX || !g->reg_host(host, (size_t)n))
        return tl__err(TL_ERR_DEVICE, "%s: registering %llu bytes of host memory failed%s%s",
                       g->name, (unsigned long long)n, *tl__ggml_last_log() ? ": " : "",
                       tl__ggml_last_log());
    return TL_OK;
}

static tl_status gg_unpin(void *self, void *host, uint64_t n) {
    tl__ggml_dev *g = self;
    (void)n;
    if (g->unreg_host) g->unreg_host(host);
    return TL_OK;
}

static void gg_destroy(void *self) {
    tl__ggml_dev *g = self;
    for (size_t i = 0; i < g->pool.n; i++)
        G.buffer_free(g->pool.c[i].buf);
    tl__pool_free(&g->pool);
    if (g->backend) G.backend_free(g->backend);
    pthread_mutex_destroy(&g->lock);
    pthread_mutex_destroy(&g->compute);
    free(g);
}

static const tl_device_ops ggml_ops = {
    .size = sizeof(tl_device_ops),
    .describe = gg_describe,
    .alloc = gg_alloc,
    .dealloc = gg_dealloc,
    .copy_to = gg_copy_to,
    .copy_from = gg_copy_from,
    .pin = gg_pin,
    .unpin = gg_unpin,
    .destroy = gg_destroy,
};

/* struct ggml_backend_dev_props as in ggml-backend.h, in an oversized buffer. */
typedef struct gprops {
    const char *name;
    const char *description;
    size_t memory_free;
    size_t memory_total;
    int type;
    const char *device_id;
    struct {
        bool async, host_buffer, buffer_from_host_ptr, events, mmap_support;
    } caps;
} gprops;

/* caps.buffer_from_host_ptr of a device. */
static bool dev_mappable(void *dev) {
    union {
        gprops p;
        unsigned char raw[1024];
    } u;
    memset(&u, 0, sizeof u);
    G.dev_get_props(dev, &u);
    if (u.p.type != G.dev_type(dev)) return false; /* not the layout declared here */
    /*
     * ggml before device_id had the caps right after type, where this layout
     * has padding (zeroed by ggml): use them when they are there.
     */
    size_t old = offsetof(gprops, type) + sizeof(int);
    if (old + 4 <= offsetof(gprops, device_id)) {
        bool any = u.raw[old] || u.raw[old + 1] || u.raw[old + 2] || u.raw[old + 3];
        if (any) return u.raw[old + 2] != 0;
    }
    return u.p.caps.buffer_from_host_ptr;
}

tl_status tl__ggml_dev_make(void *dev, const char *name, const char *desc, bool remote,
                            tl_device **out) {
    *out = NULL;
    void *buft = G.dev_buffer_type(dev);
    if (!buft) return tl__err(TL_ERR_DEVICE, "ggml device has no buffer type");
    tl__ggml_dev *g = tl__os_calloc(1, sizeof *g);
    if (!g) return tl__err(TL_ERR_NOMEM, "ggml: out of memory");
    g->dev = dev;
    g->buft = buft;
    const char *nm = G.dev_name(dev);
    if (name)
        snprintf(g->name, sizeof g->name, "%s", name);
    else
        snprintf(g->name, sizeof g->name, "ggml:%s", nm ? nm : "?");
    for (char *c = g->name; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '.' && *c != ':' && *c != '-')
            *c = '_';
    const char *ds = desc ? desc : G.dev_description(dev);
    snprintf(g->desc, sizeof g->desc, "%s", ds && *ds ? ds : nm ? nm : "ggml device");
    g->remote = remote;
    if (remote) {
        size_t f = 0, t = 0;
        G.dev_memory(dev, &f, &t);
        g->remote_free = f;
        g->remote_total = t;
    }
    g->host = G.buft_is_host(buft);
    g->is_cpu = G.dev_type(dev) == TL_GGML_DEV_CPU;
    g->mappable = dev_mappable(dev);
    size_t al = G.buft_get_alignment(buft);
    g->alignment = al && al <= (1u << 30) ? (uint32_t)al : 1;
    g->max_size = G.buft_get_max_size(buft);
    g->cap = UINT64_MAX;
    g->next = (tl_devptr)1 << 44;
    tl__pool_init(&g->pool, g->alignment);
    void *reg = G.dev_backend_reg(dev);
    void *rh = reg ? G.reg_get_proc_address(reg, "ggml_backend_register_host_buffer") : NULL;
    void *uh = reg ? G.reg_get_proc_address(reg, "ggml_backend_unregister_host_buffer") : NULL;
    if (rh && uh && !g->host) {
        memcpy(&g->reg_host, &rh, sizeof rh);
        memcpy(&g->unreg_host, &uh, sizeof uh);
    }
    pthread_mutex_init(&g->lock, NULL);
    pthread_mutex_init(&g->compute, NULL);
    tl_status s = tl__device_wrap(&ggml_ops, g, g->name, TL_DEVICE_GGML, out);
    if (s != TL_OK) gg_destroy(g);
    return s;
}

bool tl__ggml_registered(const char *name) {
    size_t n = tl_device_list(NULL, 0);
    tl_device **list = tl__os_calloc(n ? n : 1, sizeof *list);
    if (!list) return false;
    size_t got = tl_device_list(list, n);
    if (got < n) n = got;
    bool hit = false;
    for (size_t i = 0; i < n && list[i]; i++)
        if (!strcasecmp(tl_device_name(list[i]), name)) hit = true;
    tl_device_list_release(list, n);
    free(list);
    return hit;
}

/*
 * Where ggml's libraries are: dir, else TIERLOAD_GGML_DIR, else the source
 * build recorded when tierload was configured (TL_GGML_DEFAULT_DIR) when it
 * exists, else NULL (the loader's search path).
 */
static const char *ggml_dir(const char *dir) {
    if (dir && *dir) return dir;
    dir = tl__env_get(TL_ENV_GGML_DIR);
    if (dir && *dir) return dir;
#ifdef TL_GGML_DEFAULT_DIR
    if (tl__os_is_dir(TL_GGML_DEFAULT_DIR "/")) return TL_GGML_DEFAULT_DIR;
#endif
    return NULL;
}

tl_status tl__ggml_load(const char *dir) {
    dir = ggml_dir(dir);
    pthread_mutex_lock(&g_lock);
    tl_status s = TL_OK;
    if (!g_loaded && !load_locked(dir)) s = tl__err(TL_ERR_NOT_FOUND, "%s", g_reason);
    pthread_mutex_unlock(&g_lock);
    return s;
}

tl_status tl_device_ggml_discover(const char *dir, size_t *n_added) {
    if (n_added) *n_added = 0;
    dir = ggml_dir(dir);
    pthread_mutex_lock(&g_lock);
    if (!g_loaded && !load_locked(dir)) {
        tl_status s = tl__err(TL_ERR_NOT_FOUND, "%s", g_reason);
        pthread_mutex_unlock(&g_lock);
        return s;
    }
    size_t n = G.dev_count(), added = 0;
    if (n == 0) {
        snprintf(g_reason, sizeof g_reason,
                 "no ggml device: ggml loaded but no backend library registered a device%s%s",
                 *tl__ggml_last_log() ? ": " : "", tl__ggml_last_log());
        tl_status s = tl__err(TL_ERR_NOT_FOUND, "%s", g_reason);
        pthread_mutex_unlock(&g_lock);
        return s;
    }
    tl_status s = TL_OK;
    for (size_t i = 0; i < n; i++) {
        void *dev = G.dev_get(i);
        if (!dev) continue;
        tl_device *d = NULL;
        tl_status one = tl__ggml_dev_make(dev, NULL, NULL, false, &d);
        if (one == TL_OK && !tl__ggml_registered(tl_device_name(d))) {
            one = tl_device_register(d);
            if (one == TL_OK) added++;
        }
        tl_device_release(d);
        if (one != TL_OK && s == TL_OK) s = one;
    }
    g_reason[0] = 0;
    pthread_mutex_unlock(&g_lock);
    if (n_added) *n_added = added;
    return s;
}

const char *tl_device_ggml_reason(void) {
    static _Thread_local char copy[sizeof g_reason];
    pthread_mutex_lock(&g_lock);
    memcpy(copy, g_reason, sizeof copy);
    pthread_mutex_unlock(&g_lock);
    return copy;
}

void *tl_device_ggml_dev(tl_device *d) {
    tl__ggml_dev *g = tl__ggml_dev_of(d);
    return g ? g->dev : NULL;
}

bool tl_device_ggml_host_mappable(tl_device *d) {
    tl__ggml_dev *g = tl__ggml_dev_of(d);
    return g && g->mappable;
}

/* ---- host memory wrapped in place ---- */

tl_status tl_ggml_host_buffer_create(tl_device *d, const void *ptr, uint64_t n,
                                     tl_ggml_host_buffer *out) {
    if (!out) return tl__err(TL_ERR_INVALID_ARG, "tl_ggml_host_buffer_create: out is NULL");
    memset(out, 0, sizeof *out);
    tl__ggml_dev *g = tl__ggml_dev_of(d);
    if (!g)
        return tl__err(TL_ERR_INVALID_ARG, "%s: not a ggml device",
                      d ? tl_device_name(d) : "(null)");
    if (!ptr || n == 0)
        return tl__err(TL_ERR_INVALID_ARG, "%s: wrap host memory: empty range", g->name);
    if (!g->mappable)
        return tl__err(TL_ERR_UNSUPPORTED,
                      "%s: the device cannot use host memory (no buffer_from_host_ptr)", g->name);
    uintptr_t a = (uintptr_t)ptr, start = a & ~(uintptr_t)63;
    if (n > UINTPTR_MAX - a || n + (a - start) > SIZE_MAX)
        return tl__err(TL_ERR_INVALID_ARG, "%s: wrap host memory: range too large", g->name);
    size_t size = (size_t)(n + (a - start));
    void *buf = g->is_cpu ? G.cpu_buffer_from_ptr((void *)start, size)
                          : G.dev_buffer_from_host_ptr(g->dev, (void *)start, size, size);
    if (!buf)
        return tl__err(TL_ERR_DEVICE, "%s: wrapping %llu bytes of host memory failed%s%s", g->name,
                      (unsigned long long)n, *tl__ggml_last_log() ? ": " : "", tl__ggml_last_log());
    out->buffer = buf;
    out->base = G.buffer_get_base(buf);
    out->size = G.buffer_get_size(buf);
    out->offset = (uint64_t)(a - (uintptr_t)out->base);
    return TL_OK;
}

void tl_ggml_host_buffer_destroy(tl_ggml_host_buffer *b) {
    if (!b) return;
    if (b->buffer && tl__ggml_api_get()) G.buffer_free(b->buffer);
    memset(b, 0, sizeof *b);
}
