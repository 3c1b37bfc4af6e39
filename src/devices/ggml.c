/*
 * ggml.c — ggml backend devices as tierload devices ("ggml:CPU",
 * "ggml:CUDA0", ...). ggml's shared libraries are loaded at run time with
 * dlopen (libggml-base, libggml, then ggml loads its backend libraries from
 * the same folder), and only ggml's public C API is called: the prototypes
 * used are declared in ggml_dl.h with opaque pointers.
 *
 * One ggml buffer of the device's default buffer type per allocation. On
 * devices whose buffers are host memory (ggml:CPU) a tl_devptr is the
 * buffer's host address; elsewhere it is a handle in a private address
 * space (some backends give every buffer the same fake base), with a gap
 * between allocations. A table of allocations, sorted by tl_devptr, maps a
 * device range back to its buffer. Copies place a 1-D I8 tensor over the
 * range (ggml_backend_tensor_alloc) and use ggml_backend_tensor_set / get,
 * so every backend's own transfer path is used. Copies are synchronous.
 *
 * ggml aborts on a failed assertion, so every argument is checked here
 * before ggml sees it; ggml's log goes to a buffer, never to the terminal.
 */
#include "core/env.h"
#include "core/error.h"
#include "devices/devices.h"
#include "devices/ggml_dl.h"
#include "os/dl.h"
#include "os/fault.h"
#include "os/os.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- loading ---- */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* loading and discovery */
static tl__ggml_api G;
static bool g_loaded;
static char g_reason[768] = "not loaded";

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
    SYM(base, cpu_buffer_from_ptr, "ggml_backend_cpu_buffer_from_ptr");
    SYM(base, graph_compute, "ggml_backend_graph_compute");
    SYM(base, backend_free, "ggml_backend_free");
    SYM(base, dev_backend_reg, "ggml_backend_dev_backend_reg");
    SYM(base, reg_get_proc_address, "ggml_backend_reg_get_proc_address");
#undef SYM
    G.log_set(ggml_log_cb, NULL);
    if (dir)
        G.load_all_from_path(dir);
    else
        G.load_all();
    g_loaded = true;
    return true;
}

/* ---- one device ---- */

typedef struct galloc {
    tl_devptr p;   /* what callers see */
    uint64_t size; /* bytes asked */
    void *buf;     /* ggml_backend_buffer_t */
    char *base;    /* its base address */
} galloc;

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
    pthread_mutex_t lock; /* the allocation table, cap, used */
    galloc *allocs;
    size_t n_allocs, cap_allocs;
    uint64_t used, cap;
    tl_devptr next;          /* next handle (non-host devices) */
    pthread_mutex_t compute; /* the backend */
    void *backend;
    int threads; /* 0 = ggml's default */
};

static const tl_device_ops ggml_ops;

tl__ggml_dev *tl__ggml_dev_of(tl_device *d) {
    return d && d->ops == &ggml_ops ? d->self : NULL;
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

tl_status tl__ggml_dev_set_cap(tl_device *d, uint64_t cap) {
    tl__ggml_dev *g = tl__ggml_dev_of(d);
    if (!g) return tl__err(TL_ERR_INVALID_ARG, "%s: not a ggml device", tl_device_name(d));
    pthread_mutex_lock(&g->lock);
    g->cap = cap;
    pthread_mutex_unlock(&g->lock);
    return TL_OK;
}

static tl_status gg_describe(void *self, tl_device_info *out) {
    tl__ggml_dev *g = self;
    snprintf(out->name, sizeof out->name, "%s", g->name);
    snprintf(out->desc, sizeof out->desc, "%s", g->desc);
    out->kind = TL_DEVICE_GGML;
    size_t f = 0, t = 0;
    G.dev_memory(g->dev, &f, &t);
    pthread_mutex_lock(&g->lock);
    uint64_t total = t, free_ = f;
    if (g->cap != UINT64_MAX) {
        uint64_t room = g->cap > g->used ? g->cap - g->used : 0;
        if (total > g->cap) total = g->cap;
        if (free_ > room) free_ = room;
    }
    pthread_mutex_unlock(&g->lock);
    if (free_ > total) free_ = total;
    out->total = total;
    out->free = free_;
    out->host_pointer = g->host;
    out->async = false;
    out->alignment = g->alignment;
    return TL_OK;
}

/* Index of the last allocation starting at or before p (lock held); n_allocs when none. */
static size_t find_locked(const tl__ggml_dev *g, tl_devptr p) {
    size_t lo = 0, hi = g->n_allocs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (g->allocs[mid].p <= p)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo ? lo - 1 : g->n_allocs;
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
    size_t f = 0, t = 0;
    G.dev_memory(g->dev, &f, &t);
    if (size > f)
        return tl__err(TL_ERR_DEVICE_OOM, "%s: cannot allocate %llu bytes: %llu bytes free", g->name,
                      (unsigned long long)size, (unsigned long long)f);
    pthread_mutex_lock(&g->lock);
    if (g->cap != UINT64_MAX && (g->used > g->cap || size > g->cap - g->used)) {
        uint64_t room = g->cap > g->used ? g->cap - g->used : 0;
        pthread_mutex_unlock(&g->lock);
        return tl__err(TL_ERR_DEVICE_OOM,
                      "%s: cannot allocate %llu bytes: %llu bytes free under its cap of %llu",
                      g->name, (unsigned long long)size, (unsigned long long)room,
                      (unsigned long long)g->cap);
    }
    if (g->n_allocs == g->cap_allocs) {
        size_t nc = g->cap_allocs ? g->cap_allocs * 2 : 16;
        galloc *na = tl__os_realloc(g->allocs, nc * sizeof *na);
        if (!na) {
            pthread_mutex_unlock(&g->lock);
            return tl__err(TL_ERR_NOMEM, "%s: out of host memory", g->name);
        }
        g->allocs = na;
        g->cap_allocs = nc;
    }
    g->used += size; /* reserved before the (slow) allocation, outside the lock */
    pthread_mutex_unlock(&g->lock);

    void *buf = G.buft_alloc_buffer(g->buft, (size_t)size);
    char *base = buf ? G.buffer_get_base(buf) : NULL;
    if (!buf || !base || G.buffer_get_size(buf) < size) {
        if (buf) G.buffer_free(buf);
        pthread_mutex_lock(&g->lock);
        g->used -= size;
        pthread_mutex_unlock(&g->lock);
        return tl__err(TL_ERR_DEVICE_OOM, "%s: cannot allocate %llu bytes: ggml refused%s%s",
                      g->name, (unsigned long long)size, *tl__ggml_last_log() ? ": " : "",
                      tl__ggml_last_log());
    }

    pthread_mutex_lock(&g->lock);
    tl_devptr p;
    if (g->host) {
        p = (tl_devptr)(uintptr_t)base;
    } else {
        /* handles: page-rounded, one free page between allocations */
        p = g->next;
        g->next += (size + 4095) / 4096 * 4096 + 4096;
    }
    size_t at = g->n_allocs ? find_locked(g, p) : g->n_allocs;
    at = at == g->n_allocs ? 0 : at + 1;
    memmove(g->allocs + at + 1, g->allocs + at, (g->n_allocs - at) * sizeof *g->allocs);
    g->allocs[at] = (galloc){.p = p, .size = size, .buf = buf, .base = base};
    g->n_allocs++;
    pthread_mutex_unlock(&g->lock);
    *out = p;
    return TL_OK;
}

static tl_status gg_dealloc(void *self, tl_devptr p) {
    tl__ggml_dev *g = self;
    pthread_mutex_lock(&g->lock);
    size_t i = find_locked(g, p);
    if (i == g->n_allocs || g->allocs[i].p != p) {
        pthread_mutex_unlock(&g->lock);
        return tl__err(TL_ERR_INVALID_ARG, "%s: free of 0x%llx, which is not an allocation", g->name,
                      (unsigned long long)p);
    }
    void *buf = g->allocs[i].buf;
    g->used -= g->allocs[i].size;
    memmove(g->allocs + i, g->allocs + i + 1, (g->n_allocs - i - 1) * sizeof *g->allocs);
    g->n_allocs--;
    pthread_mutex_unlock(&g->lock);
    G.buffer_free(buf);
    return TL_OK;
}

tl_status tl__ggml_dev_resolve(tl__ggml_dev *g, tl_devptr p, uint64_t n, void **buf, void **addr) {
    pthread_mutex_lock(&g->lock);
    size_t i = find_locked(g, p);
    if (i == g->n_allocs || p - g->allocs[i].p > g->allocs[i].size ||
        n > g->allocs[i].size - (p - g->allocs[i].p)) {
        pthread_mutex_unlock(&g->lock);
        return tl__err(TL_ERR_INVALID_ARG,
                      "%s: range 0x%llx + %llu bytes is not inside one allocation", g->name,
                      (unsigned long long)p, (unsigned long long)n);
    }
    *buf = g->allocs[i].buf;
    *addr = g->allocs[i].base + (p - g->allocs[i].p);
    pthread_mutex_unlock(&g->lock);
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
    G.tensor_set(t, src, 0, (size_t)n);
    G.free(ctx);
    return TL_OK;
}

static tl_status gg_copy_from(void *self, void *dst, tl_devptr src, uint64_t n) {
    void *ctx, *t;
    tl_status s = view(self, src, n, &ctx, &t);
    if (s != TL_OK) return tl__err_prefix(s, "copy from device");
    G.tensor_get(t, dst, 0, (size_t)n);
    G.free(ctx);
    return TL_OK;
}

static void gg_destroy(void *self) {
    tl__ggml_dev *g = self;
    for (size_t i = 0; i < g->n_allocs; i++)
        G.buffer_free(g->allocs[i].buf);
    free(g->allocs);
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

static tl_status make_dev(void *dev, tl_device **out) {
    *out = NULL;
    void *buft = G.dev_buffer_type(dev);
    if (!buft) return tl__err(TL_ERR_DEVICE, "ggml device has no buffer type");
    tl__ggml_dev *g = tl__os_calloc(1, sizeof *g);
    if (!g) return tl__err(TL_ERR_NOMEM, "ggml: out of memory");
    g->dev = dev;
    g->buft = buft;
    const char *nm = G.dev_name(dev);
    snprintf(g->name, sizeof g->name, "ggml:%s", nm ? nm : "?");
    for (char *c = g->name + 5; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '.' && *c != ':' && *c != '-')
            *c = '_';
    const char *ds = G.dev_description(dev);
    snprintf(g->desc, sizeof g->desc, "%s", ds && *ds ? ds : nm ? nm : "ggml device");
    g->host = G.buft_is_host(buft);
    g->is_cpu = G.dev_type(dev) == TL_GGML_DEV_CPU;
    g->mappable = dev_mappable(dev);
    size_t al = G.buft_get_alignment(buft);
    g->alignment = al && al <= (1u << 30) ? (uint32_t)al : 1;
    g->max_size = G.buft_get_max_size(buft);
    g->cap = UINT64_MAX;
    g->next = (tl_devptr)1 << 44;
    pthread_mutex_init(&g->lock, NULL);
    pthread_mutex_init(&g->compute, NULL);
    tl_status s = tl__device_wrap(&ggml_ops, g, g->name, TL_DEVICE_GGML, out);
    if (s != TL_OK) gg_destroy(g);
    return s;
}

static bool registered(const char *name) {
    size_t n = tl_device_list(NULL, 0);
    tl_device **list = tl__os_calloc(n ? n : 1, sizeof *list);
    if (!list) return false;
    n = tl_device_list(list, n);
    bool hit = false;
    for (size_t i = 0; i < n && list[i]; i++)
        if (!strcasecmp(tl_device_name(list[i]), name)) hit = true;
    free(list);
    return hit;
}

tl_status tl_device_ggml_discover(const char *dir, size_t *n_added) {
    if (n_added) *n_added = 0;
    if (!dir || !*dir) dir = tl__env_get(TL_ENV_GGML_DIR);
    if (dir && !*dir) dir = NULL;
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
        tl_status one = make_dev(dev, &d);
        if (one == TL_OK && !registered(tl_device_name(d))) {
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
