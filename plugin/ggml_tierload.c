/*
 * ggml_tierload.c — libggml-tierload.so: a ggml backend (device TIERLOAD0) that any ggml engine
 * loads like a GPU (ggml_backend_load, GGML_BACKEND_PATH) and whose weights tierload keeps.
 *
 * Its buffer type is host memory that reports is_host = false, so the engine reaches weights only
 * through set_tensor/get_tensor and this backend's graph_compute. set_tensor on a WEIGHTS buffer
 * records where the bytes come from (the engine's own read-only mapping of the model file, found
 * in /proc/self/maps) instead of keeping them. graph_compute cuts the graph into chunks, makes each
 * chunk's weights resident within TIERLOAD_BUDGET (tensor addresses fixed; the anonymous pages
 * behind them are re-read from the file; an evicted segment's pages move to a stash that the next
 * load takes them from, already faulted in), evicts by furthest next
 * use over the schedule learned from the first graph, prefetches the next chunk on a worker thread
 * and hands each chunk to the real CPU backend. A matrix product whose weight alone exceeds a chunk
 * is computed as row slices of that weight (each output element is the same dot product).
 *
 * An engine that reads the file itself (llama.cpp with --no-mmap, stable-diffusion.cpp) passes a
 * buffer instead: then the weight is looked up by name in tierload's catalog of each GGUF or
 * safetensors file the process has open and taken when its bytes there are the bytes given;
 * failing that, the bytes are kept outside the budget.
 *
 * TIERLOAD_MODE=map keeps no copy: each weight's allocation maps its range of the model file
 * (private, as the engine's own mapping would), the weight's bytes placed where the file offset
 * puts them in a page (get_alloc_size leaves a page for that), and segments are only faulted in
 * (MADV_POPULATE_READ) and given back (MADV_DONTNEED) within the budget: the page cache holds the
 * bytes, the process maps at most the budget of them. Weights that cannot be mapped are copied.
 *
 * Environment: TIERLOAD_BUDGET (bytes of weights kept; K/M/G/T suffixes), TIERLOAD_MODE (copy or map),
 * TIERLOAD_STASH (uffd, mremap or off: how evicted pages move to the stash; default the first the
 * kernel has), TIERLOAD_STATS (file that gets the figures as JSON when the device is released or
 * at exit).
 */
#include "ggml-backend-impl.h"
#include "ggml-impl.h"
#include "tierload.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* UFFDIO_MOVE (Linux 6.8) by its ABI numbers, for headers older than the kernels that have it */
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1ull << 16)
#endif
#ifndef UFFDIO_MOVE
struct uffdio_move {
    __u64 dst, src, len, mode;
    __s64 move;
};
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES (1ull << 1)
#define UFFDIO_MOVE _IOWR(UFFDIO, 0x05, struct uffdio_move)
#endif
#define TLP_UFFDIO_MOVE_BIT 0x05 /* its bit in uffdio_register.ioctls */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

#ifndef TL_PLUGIN_GGML_VERSION
#error "TL_PLUGIN_GGML_VERSION (the ggml release built against) must be defined"
#endif
#ifndef TL_PLUGIN_GGML_COMMIT
#define TL_PLUGIN_GGML_COMMIT "unknown"
#endif

#define TLP_PAGE 4096u
#define TLP_NAME "TIERLOAD0"

/* ---- small helpers ---------------------------------------------------------------------- */

static uint64_t tlp__now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static size_t tlp__round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

/* "8G", "512MiB", "1048576": bytes; 0 with *ok = false on anything else. */
static uint64_t tlp__parse_bytes(const char *s, bool *ok) {
    *ok = false;
    if (!s || !*s) return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0) return 0;
    double mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1024.0; end++; break;
    case 'm': case 'M': mul = 1024.0 * 1024; end++; break;
    case 'g': case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (mul > 1 && *end == 'i') end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return 0;
    v *= mul;
    if (v >= 1.8e19) return 0;
    *ok = true;
    return (uint64_t)v;
}

static void tlp__fmt_bytes(char *out, size_t n, uint64_t b) {
    if (b >= (1ull << 30))
        snprintf(out, n, "%" PRIu64 " B (%.2f GiB)", b, (double)b / (1ull << 30));
    else if (b >= (1ull << 20))
        snprintf(out, n, "%" PRIu64 " B (%.2f MiB)", b, (double)b / (1ull << 20));
    else
        snprintf(out, n, "%" PRIu64 " B", b);
}

/* ---- state ------------------------------------------------------------------------------ */

typedef struct {
    char *path;
    int fd;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} tlp_file;

typedef struct {      /* bytes [toff, toff + size) of a weight come from file at foff */
    uint64_t toff, size, foff;
    int file;         /* index into files, or -1: bytes kept in `copy` (not from a mapping) */
    uint8_t *copy;
} tlp_piece;

typedef struct {
    char *base;       /* the start of the tensor's allocation (page aligned) */
    char *data;       /* the tensor's bytes: base, or (mapped) base + the file offset's page offset */
    bool mapped;      /* TIERLOAD_MODE=map: its allocation maps its file range (data moved to fit) */
    uint64_t nbytes;  /* ggml_nbytes of the tensor */
    char name[GGML_MAX_NAME];
    tlp_piece *pieces;
    int n_pieces, cap_pieces;
    uint32_t seg0, nseg; /* segments, once sealed */
} tlp_weight;

enum { SEG_ABSENT = 0, SEG_LOADING = 1, SEG_RESIDENT = 2 };

/* how an evicted segment's pages reach the stash and come back */
enum { TLP_STASH_OFF = 0, TLP_STASH_MREMAP = 1, TLP_STASH_UFFD = 2 };
static const char *const tlp_stash_names[] = {"off", "mremap", "uffd"};

typedef struct {
    uint32_t w;
    uint64_t off, len, span; /* bytes within the weight; span: page-rounded */
    int state;
    int64_t next_chunk;      /* next chunk of this graph using it, or -1 */
    int64_t learned_rank;    /* order of first use in the learned schedule, or INT64_MAX */
    uint32_t stamp, pin;     /* scratch marks */
    bool warm;               /* its pages all came from the stash: nothing to fault in */
} tlp_seg;

typedef struct tlp_buffer_ctx {
    char *base;
    size_t size;
} tlp_buffer_ctx;

typedef struct {
    pthread_mutex_t mu;          /* the whole device state (graph_compute holds it) */
    ggml_backend_dev_t cpu_dev;
    uint64_t budget;             /* 0: everything resident */
    bool map;                    /* TIERLOAD_MODE=map */
    uint64_t mapped_weights;     /* weights whose allocation maps their file range */
    bool budget_set;
    const char *stats_path;
    /* weights, sorted by base when sealed */
    tlp_weight *weights;
    int n_weights, cap_weights;
    bool dirty;
    tlp_file *files;
    int n_files;
    struct { char *path; tl_model *m; } *cats; /* catalogs of open model files (until the first graph) */
    int n_cats;
    bool tl_inited;
    tlp_seg *segs;
    uint32_t n_segs;
    uint64_t seg_size;
    int64_t next_rank;
    uint32_t stamp;
    uint64_t resident;
    /* pages of evicted segments, kept faulted in for the next load (see tlp__stash_put) */
    char *stash;                 /* a private anonymous region of stash_cap bytes, or NULL */
    uint64_t stash_cap, stash_top;
    uint64_t *stash_piece;       /* lengths of the pieces moved in, bottom to top */
    uint32_t stash_n, stash_piece_cap;
    int stash_how;               /* TLP_STASH_*: how pages move (tlp__stash_choose) */
    int uffd;                    /* the userfaultfd that UFFDIO_MOVE goes through, or -1 */
    uint64_t stash_moves, stash_fallbacks; /* figures: calls that moved pages; methods given up */
    /* worker */
    pthread_t worker;
    bool worker_started, worker_stop;
    pthread_mutex_t wmu;
    pthread_cond_t wcv, wdone;
    uint32_t *queue;
    uint32_t q_n, q_next;
    bool w_busy;
    char w_error[512];
    /* figures */
    uint64_t weights_bytes, bytes_read, peak_resident, wait_ns, graphs, chunks_run, evictions;
    uint64_t first_graph_read, last_graph_read, max_chunk_bytes;
    uint64_t graph_read_sum_after_first;
    uint64_t segment_errors;     /* segments found not to fit their weight (tlp__seg_drop) */
    uint64_t graph_weights;      /* weight bytes on the device at the last graph */
    int graph_weight_tensors;    /* and their number */
    uint64_t graph_mapped;       /* and how many of them were mapped (TIERLOAD_MODE=map) */
    char error[512];
} tlp_dev_ctx;

typedef struct {
    ggml_backend_t cpu;
    ggml_backend_set_n_threads_t set_n_threads;
    tlp_dev_ctx *dev;
} tlp_backend_ctx;

static tlp_dev_ctx g_dev;
static struct ggml_backend_device g_device;
static struct ggml_backend_buffer_type g_buft;
static struct ggml_backend_reg g_reg;
static bool g_inited;

/* ---- files and sources ------------------------------------------------------------------ */

/* The file and offset behind `p` if it lies in a file mapping of this process. */
static bool tlp__addr_to_file(const void *p, size_t n, char *path, size_t path_n, uint64_t *foff) {
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f) return false;
    char line[4096 + 256];
    uintptr_t a = (uintptr_t)p;
    bool found = false;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi, off;
        char perms[8];
        int pos = 0;
        if (sscanf(line, "%lx-%lx %7s %lx %*s %*s%n", &lo, &hi, perms, &off, &pos) < 4) continue;
        if (a < lo || a >= hi) continue;
        if (a + n > hi) break; /* spans mappings: not one file range */
        const char *q = line + pos;
        while (*q == ' ') q++;
        if (*q != '/') break;
        size_t len = strcspn(q, "\n");
        if (len >= path_n || (len > 10 && !strcmp(q + len - 10, " (deleted)"))) break;
        memcpy(path, q, len);
        path[len] = 0;
        *foff = off + (a - lo);
        found = true;
        break;
    }
    fclose(f);
    return found;
}

static int tlp__file_index(tlp_dev_ctx *d, const char *path) {
    for (int i = 0; i < d->n_files; i++)
        if (!strcmp(d->files[i].path, path)) return i;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return -1;
    }
    tlp_file *nf = realloc(d->files, (size_t)(d->n_files + 1) * sizeof *nf);
    char *dup = strdup(path);
    if (!nf || !dup) {
        free(dup);
        if (nf) d->files = nf;
        close(fd);
        return -1;
    }
    d->files = nf;
    d->files[d->n_files] = (tlp_file){dup, fd, st.st_dev, st.st_ino, st.st_size, st.st_mtim};
    return d->n_files++;
}

/* The catalog of a GGUF at `path` (opened once, NULL when it is not one tierload reads). */
static tl_model *tlp__catalog(tlp_dev_ctx *d, const char *path) {
    for (int i = 0; i < d->n_cats; i++)
        if (!strcmp(d->cats[i].path, path)) return d->cats[i].m;
    if (!d->tl_inited) {
        /* in someone else's process: no CUDA discovery, no SIGBUS handler */
        tl_library_options o;
        tl_library_options_init(&o);
        o.no_cuda = true;
        o.no_sigbus_guard = true;
        (void)tl_init(&o);
        d->tl_inited = true;
    }
    void *nc = realloc(d->cats, (size_t)(d->n_cats + 1) * sizeof *d->cats);
    if (!nc) return NULL;
    d->cats = nc;
    tl_model *m = NULL;
    const char *paths[1] = {path};
    if (tl_model_open(paths, 1, NULL, &m) != TL_OK) m = NULL;
    d->cats[d->n_cats].path = strdup(path);
    d->cats[d->n_cats].m = d->cats[d->n_cats].path ? m : NULL;
    if (!d->cats[d->n_cats].path) {
        tl_model_close(m);
        return NULL;
    }
    return d->cats[d->n_cats++].m;
}

static void tlp__catalogs_close(tlp_dev_ctx *d) {
    for (int i = 0; i < d->n_cats; i++) {
        tl_model_close(d->cats[i].m);
        free(d->cats[i].path);
    }
    free(d->cats);
    d->cats = NULL;
    d->n_cats = 0;
}

/* Bytes [off, off + n) of weight `name` given in `data`: the GGUF or safetensors file the process
 * has open that holds a tensor of that name with exactly these bytes there. */
static bool tlp__find_by_name(tlp_dev_ctx *d, const char *name, const void *data, size_t off, size_t n,
                              char *path, size_t path_n, uint64_t *foff) {
    DIR *dir = opendir("/proc/self/fd");
    if (!dir) return false;
    bool found = false;
    char *buf = NULL;
    struct dirent *e;
    while (!found && (e = readdir(dir))) {
        char link[320];
        if (e->d_name[0] == '.') continue;
        snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(link, path, path_n - 1);
        if (len <= 0 || path[0] != '/') continue;
        path[len] = 0;
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 4) continue;
        size_t plen = (size_t)len;
        if (!(plen > 5 && strcmp(path + plen - 5, ".gguf") == 0) &&
            !(plen > 12 && strcmp(path + plen - 12, ".safetensors") == 0))
            continue;
        tl_model *m = tlp__catalog(d, path);
        if (!m) continue;
        size_t i = tl_model_find(m, name);
        const tl_tensor_info *ti = i == TL_NOT_FOUND ? NULL : tl_model_tensor(m, i);
        if (!ti || ti->strides || off + n > ti->nbytes) continue;
        if (!buf && !(buf = malloc(n ? n : 1))) break;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t r = pread(fd, buf, n, (off_t)(ti->offset + off));
        close(fd);
        if (r == (ssize_t)n && memcmp(buf, data, n) == 0) {
            *foff = ti->offset + off;
            found = true;
        }
    }
    free(buf);
    closedir(dir);
    return found;
}

static tlp_weight *tlp__weight_for(tlp_dev_ctx *d, struct ggml_tensor *t) {
    for (int i = d->n_weights - 1; i >= 0; i--)
        if (d->weights[i].data == (char *)t->data) return &d->weights[i];
    if (d->n_weights == d->cap_weights) {
        int cap = d->cap_weights ? 2 * d->cap_weights : 256;
        tlp_weight *nw = realloc(d->weights, (size_t)cap * sizeof *nw);
        if (!nw) return NULL;
        d->weights = nw, d->cap_weights = cap;
    }
    tlp_weight *w = &d->weights[d->n_weights++];
    memset(w, 0, sizeof *w);
    w->base = w->data = t->data;
    w->nbytes = ggml_nbytes(t);
    snprintf(w->name, sizeof w->name, "%s", t->name);
    d->weights_bytes += w->nbytes;
    d->dirty = true;
    return w;
}

static bool tlp__add_piece(tlp_weight *w, tlp_piece p) {
    /* a later set_tensor over the same bytes replaces the earlier source */
    for (int i = 0; i < w->n_pieces; i++)
        if (w->pieces[i].toff == p.toff && w->pieces[i].size == p.size) {
            free(w->pieces[i].copy);
            w->pieces[i] = p;
            return true;
        }
    if (w->n_pieces == w->cap_pieces) {
        int cap = w->cap_pieces ? 2 * w->cap_pieces : 2;
        tlp_piece *np = realloc(w->pieces, (size_t)cap * sizeof *np);
        if (!np) return false;
        w->pieces = np, w->cap_pieces = cap;
    }
    w->pieces[w->n_pieces++] = p;
    return true;
}

/* ---- segments: loading and eviction ----------------------------------------------------- */

static bool tlp__check_file(tlp_dev_ctx *d, int fi, char *err, size_t errn) {
    tlp_file *f = &d->files[fi];
    struct stat st;
    if (fstat(f->fd, &st) != 0) {
        snprintf(err, errn, "%s: %s", f->path, strerror(errno));
        return false;
    }
    if (st.st_size != f->size || st.st_mtim.tv_sec != f->mtime.tv_sec ||
        st.st_mtim.tv_nsec != f->mtime.tv_nsec) {
        if (st.st_size != f->size)
            snprintf(err, errn, "%s: file changed under the run (size %lld when opened, now %lld)", f->path,
                     (long long)f->size, (long long)st.st_size);
        else
            snprintf(err, errn, "%s: file changed under the run (modified since it was opened)", f->path);
        return false;
    }
    return true;
}

/*
 * The pages of segment s. A weight whose bytes start its allocation has segments on pages of their
 * own: the span from data + off. A mapped weight's bytes sit at the file offset's place in a page,
 * so a page may hold the end of one segment and the start of the next: outward, every page
 * holding its bytes (to fault in); inward, only those no other segment of the weight shares (to
 * give back).
 */
static char *tlp__seg_pages(const tlp_dev_ctx *d, const tlp_seg *s, bool inward, uint64_t *n) {
    const tlp_weight *w = &d->weights[s->w];
    if (w->data == w->base) {
        *n = s->span;
        return w->data + s->off;
    }
    const uintptr_t m = TLP_PAGE - 1;
    uintptr_t a = (uintptr_t)(w->data + s->off), b = a + s->len;
    bool first = s->off == 0, last = s->off + s->len == w->nbytes;
    uintptr_t pa = inward && !first ? (a + m) & ~m : a & ~m;
    uintptr_t pb = inward && !last ? b & ~m : (b + m) & ~m;
    *n = pb > pa ? pb - pa : 0;
    return (char *)pa;
}

/* Give segment s's pages back (a mapped weight's come again from the page cache when read). A
 * segment that does not fit its weight (a table out of step with the weights: never expected) is
 * counted and left alone: pages beyond a weight may be anyone's. */
static void tlp__seg_drop(tlp_dev_ctx *d, const tlp_seg *s) {
    if (s->w >= (uint32_t)d->n_weights || s->off + s->len > d->weights[s->w].nbytes) {
        d->segment_errors++;
        return;
    }
    uint64_t n;
    char *p = tlp__seg_pages(d, s, true, &n);
    if (n) madvise(p, n, MADV_DONTNEED);
}

/* A mapped weight's segment: its file's pages faulted into the mapping, nothing copied. */
static bool tlp__map_seg(tlp_dev_ctx *d, const tlp_seg *s, uint64_t *read, char *err, size_t errn) {
    const tlp_piece *p = &d->weights[s->w].pieces[0];
    if (!tlp__check_file(d, p->file, err, errn)) return false;
    uint64_t n;
    char *a = tlp__seg_pages(d, s, false, &n);
    if (madvise(a, n, 22 /* MADV_POPULATE_READ */) != 0) {
        if (errno != EINVAL) { /* EFAULT: pages past the file's end (truncated since the check) */
            snprintf(err, errn, "%s: file changed under the run (cannot read its pages: %s)",
                     d->files[p->file].path, strerror(errno));
            return false;
        }
        for (uint64_t k = 0; k < n; k += TLP_PAGE) (void)*(volatile const char *)(a + k); /* kernel < 5.14 */
    }
    *read += s->len;
    return true;
}

/* Read segment s's bytes into place. Runs on the worker or the caller; touches only s's pages. */
static bool tlp__load_seg(tlp_dev_ctx *d, const tlp_seg *s, uint64_t *read, char *err, size_t errn) {
    const tlp_weight *w = &d->weights[s->w];
    if (w->mapped) return tlp__map_seg(d, s, read, err, errn);
    uint64_t lo = s->off, hi = s->off + s->len;
    /* fault the pages in at once (one call, not one fault per page inside the copy) */
    uint64_t pn;
    char *pp = tlp__seg_pages(d, s, false, &pn);
    if (!s->warm) madvise(pp, pn, 23 /* MADV_POPULATE_WRITE */);
    for (int i = 0; i < w->n_pieces; i++) {
        const tlp_piece *p = &w->pieces[i];
        uint64_t a = p->toff > lo ? p->toff : lo, b = p->toff + p->size < hi ? p->toff + p->size : hi;
        if (a >= b) continue;
        char *dst = w->data + a;
        if (p->file < 0) {
            memcpy(dst, p->copy + (a - p->toff), b - a);
            continue;
        }
        if (!tlp__check_file(d, p->file, err, errn)) return false;
        int fd = d->files[p->file].fd;
        uint64_t done = 0, n = b - a, foff = p->foff + (a - p->toff);
        while (done < n) {
            ssize_t r = pread(fd, dst + done, n - done, (off_t)(foff + done));
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) {
                snprintf(err, errn, "%s: read at %" PRIu64 ": %s", d->files[p->file].path, foff + done,
                         strerror(errno));
                return false;
            }
            if (r == 0) {
                snprintf(err, errn, "%s: file changed under the run (truncated: no bytes at %" PRIu64 ")",
                         d->files[p->file].path, foff + done);
                return false;
            }
            done += (uint64_t)r;
        }
        *read += n;
    }
    return true;
}

/*
 * The page stash. A load into pages just given back would fault every page in again (an exception,
 * a page allocation and its zeroing, per 4 KiB: most of a streamed token's time on a virtual
 * machine). Instead an evicted segment's pages are moved, page tables and all, into the stash —
 * its range is left mapped and empty, as after MADV_DONTNEED — and the next load moves them from
 * the stash's top into its own range before reading the file into them. The stash counts against
 * the budget (resident + stash <= budget at all times): what a load does not take back is given
 * back to the system.
 *
 * Pages move in one of two ways, chosen at run time (tlp__stash_choose; TIERLOAD_STASH names one):
 * UFFDIO_MOVE through a userfaultfd (Linux 6.8 on), which moves page table entries and leaves the
 * mappings as they are; or mremap(MREMAP_DONTUNMAP) (Linux 5.7 on), which splits a mapping off at
 * both ends of every range it moves and merges it back, work that grows with the number of
 * mappings the process has and that dominated a streamed token's time. UFFDIO_MOVE needs each
 * destination registered with the userfaultfd: the stash and every buffer of this device are, in
 * write-protect mode, which by itself changes nothing (no page is ever write-protected, and faults
 * are served by the kernel as before). A way that fails falls to the next — UFFDIO_MOVE to mremap,
 * mremap to giving pages back — for the rest of the run.
 */
static void tlp__stash_drop(tlp_dev_ctx *d, uint64_t n) {
    while (n && d->stash_n) {
        uint64_t *top = &d->stash_piece[d->stash_n - 1];
        uint64_t m = *top < n ? *top : n;
        madvise(d->stash + d->stash_top - m, m, MADV_DONTNEED);
        d->stash_top -= m, *top -= m, n -= m;
        if (!*top) d->stash_n--;
    }
}

/* Register [p, p + n) with the userfaultfd; true when UFFDIO_MOVE may then move pages into it. */
static bool tlp__uffd_register(tlp_dev_ctx *d, void *p, size_t n) {
    struct uffdio_register r = {.range = {(uintptr_t)p, n}, .mode = UFFDIO_REGISTER_MODE_WP};
    return ioctl(d->uffd, UFFDIO_REGISTER, &r) == 0 && (r.ioctls & (1ull << TLP_UFFDIO_MOVE_BIT));
}

/* The way pages move: TIERLOAD_STASH (uffd, mremap or off) or the best this kernel offers. False
 * on a name it does not know. */
static bool tlp__stash_choose(tlp_dev_ctx *d) {
    d->uffd = -1;
    d->stash_how = TLP_STASH_UFFD;
    const char *e = getenv("TIERLOAD_STASH");
    if (e && *e) {
        int k = 0;
        while (k < 3 && strcmp(e, tlp_stash_names[k]) != 0) k++;
        if (k == 3) return false;
        d->stash_how = k;
    }
    if (!d->budget) d->stash_how = TLP_STASH_OFF;
    if (d->stash_how != TLP_STASH_UFFD) return true;
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0 && errno == EINVAL) fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_MOVE};
    if (fd >= 0 && ioctl(fd, UFFDIO_API, &api) == 0 && (api.features & UFFD_FEATURE_MOVE)) {
        d->uffd = fd;
        return true;
    }
    if (fd >= 0) close(fd);
    d->stash_how = TLP_STASH_MREMAP;
    return true;
}

/* The current way failed: the next one from now on (why: errno of the failure). */
static void tlp__stash_fallback(tlp_dev_ctx *d, int why) {
    int from = d->stash_how;
    if (from == TLP_STASH_UFFD) {
        close(d->uffd); /* unregisters every range */
        d->uffd = -1;
        d->stash_how = TLP_STASH_MREMAP;
    } else {
        d->stash_how = TLP_STASH_OFF;
        tlp__stash_drop(d, d->stash_top);
    }
    d->stash_fallbacks++;
    GGML_LOG_WARN("tierload: moving pages with %s failed (%s): %s from now on\n", tlp_stash_names[from],
                  strerror(why), d->stash_how == TLP_STASH_OFF ? "giving them back" : tlp_stash_names[d->stash_how]);
}

/* Move the n bytes of pages at src (page aligned) to dst, whose range holds none; the bytes moved
 * from src's start (n when all; less when the move failed part way, errno set). */
static uint64_t tlp__move(tlp_dev_ctx *d, char *dst, char *src, uint64_t n) {
    d->stash_moves++;
    if (d->stash_how == TLP_STASH_UFFD) {
        uint64_t done = 0;
        for (int again = 0; done < n && again < 16;) {
            struct uffdio_move m = {(uintptr_t)(dst + done), (uintptr_t)(src + done), n - done,
                                    UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, 0};
            if (ioctl(d->uffd, UFFDIO_MOVE, &m) == 0) return n;
            int e = errno;
            if (m.move > 0) done += (uint64_t)m.move;
            if (e != EAGAIN) {
                errno = e;
                return done;
            }
            again++;
        }
        if (done < n) errno = EAGAIN;
        return done;
    }
    return mremap(src, n, n, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, dst) == MAP_FAILED ? 0 : n;
}

/* Move the segment pages at [p, p + n) into the stash; false (nothing done) when the stash has no
 * room or is off. What a failing move leaves behind is given back. */
static bool tlp__stash_put(tlp_dev_ctx *d, char *p, uint64_t n) {
    if (d->stash_how == TLP_STASH_OFF || !d->budget) return false;
    if (!d->stash) {
        uint64_t cap = tlp__round_up(d->budget, TLP_PAGE);
        void *r = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (r == MAP_FAILED) { /* no stash at all: pages are given back */
            int e = errno;
            while (d->stash_how != TLP_STASH_OFF) tlp__stash_fallback(d, e);
            return false;
        }
        d->stash = r, d->stash_cap = cap;
        if (d->stash_how == TLP_STASH_UFFD && !tlp__uffd_register(d, d->stash, d->stash_cap))
            tlp__stash_fallback(d, errno);
    }
    if (d->stash_top + n > d->stash_cap) return false;
    if (d->stash_n == d->stash_piece_cap) {
        uint32_t cap = d->stash_piece_cap ? 2 * d->stash_piece_cap : 64;
        uint64_t *g = realloc(d->stash_piece, cap * sizeof *g);
        if (!g) return false;
        d->stash_piece = g, d->stash_piece_cap = cap;
    }
    uint64_t k = tlp__move(d, d->stash + d->stash_top, p, n);
    if (k) {
        d->stash_piece[d->stash_n++] = k;
        d->stash_top += k;
    }
    if (k < n) {
        int e = errno;
        madvise(p + k, n - k, MADV_DONTNEED);
        tlp__stash_fallback(d, e);
    }
    return true;
}

/* Move up to n bytes of stashed pages to p (page aligned); the rest of [p, p + n) faults as usual.
 * True when all n came from the stash. */
static bool tlp__stash_take(tlp_dev_ctx *d, char *p, uint64_t n) {
    uint64_t done = 0;
    while (done < n && d->stash_n && d->stash_how != TLP_STASH_OFF) {
        uint64_t *top = &d->stash_piece[d->stash_n - 1];
        uint64_t m = *top < n - done ? *top : n - done;
        char *src = d->stash + d->stash_top - m;
        uint64_t k = tlp__move(d, p + done, src, m);
        d->stash_top -= m, *top -= m, done += m;
        if (!*top) d->stash_n--;
        if (k < m) { /* the pages not moved are given back, and with them the stash's order */
            int e = errno;
            madvise(src + k, m - k, MADV_DONTNEED);
            tlp__stash_drop(d, d->stash_top);
            tlp__stash_fallback(d, e);
            return false;
        }
    }
    return done == n;
}

static void tlp__evict_seg(tlp_dev_ctx *d, tlp_seg *s) {
    const tlp_weight *w = s->w < (uint32_t)d->n_weights ? &d->weights[s->w] : NULL;
    bool fits = w && s->off + s->len <= w->nbytes; /* else tlp__seg_drop counts it */
    if (!fits || w->data != w->base || !tlp__stash_put(d, w->data + s->off, s->span))
        tlp__seg_drop(d, s);
    s->state = SEG_ABSENT;
    d->resident -= s->span;
    d->evictions++;
}

/* Furthest next use: a segment not used again in this graph goes before one that is; among
 * those, the one the learned schedule uses last. Pinned segments stay. */
static tlp_seg *tlp__victim(tlp_dev_ctx *d, uint32_t pin) {
    tlp_seg *best = NULL;
    for (uint32_t i = 0; i < d->n_segs; i++) {
        tlp_seg *s = &d->segs[i];
        if (s->state != SEG_RESIDENT || s->pin == pin) continue;
        if (!best) {
            best = s;
            continue;
        }
        bool s_later = s->next_chunk < 0, b_later = best->next_chunk < 0;
        if (s_later != b_later) {
            if (s_later) best = s;
        } else if (s_later ? s->learned_rank > best->learned_rank : s->next_chunk > best->next_chunk) {
            best = s;
        }
    }
    return best;
}

/* Make room for `need` more bytes without touching segments pinned with `pin`. */
/* Then the stash gives the load what it has, and keeps no more than resident + stash <= budget
 * once the load has taken its share. */
static bool tlp__make_room(tlp_dev_ctx *d, uint64_t need, uint32_t pin) {
    if (!d->budget) return true;
    while (d->resident + need > d->budget) {
        tlp_seg *v = tlp__victim(d, pin);
        if (!v) return false;
        tlp__evict_seg(d, v);
    }
    uint64_t left = d->stash_top > need ? d->stash_top - need : 0; /* stash after the load */
    if (d->resident + need + left > d->budget) tlp__stash_drop(d, d->resident + need + left - d->budget);
    return true;
}

/* ---- the worker (prefetch) -------------------------------------------------------------- */

static void *tlp__worker_main(void *arg) {
    tlp_dev_ctx *d = arg;
    pthread_mutex_lock(&d->wmu);
    for (;;) {
        while (!d->worker_stop && d->q_next == d->q_n) pthread_cond_wait(&d->wcv, &d->wmu);
        if (d->worker_stop) break;
        uint32_t si = d->queue[d->q_next++];
        bool failed = d->w_error[0] != 0;
        pthread_mutex_unlock(&d->wmu);
        uint64_t rd = 0;
        char err[512] = "";
        bool ok = failed || tlp__load_seg(d, &d->segs[si], &rd, err, sizeof err);
        pthread_mutex_lock(&d->wmu);
        d->bytes_read += rd;
        if (!ok && !d->w_error[0]) snprintf(d->w_error, sizeof d->w_error, "%s", err);
        d->segs[si].state = ok && !failed ? SEG_RESIDENT : SEG_LOADING;
        if (d->q_next == d->q_n) {
            d->w_busy = false;
            pthread_cond_broadcast(&d->wdone);
        }
    }
    pthread_mutex_unlock(&d->wmu);
    return NULL;
}

/* Wait for the queued loads; false (and the message in d->error) if one failed. Segments whose
 * load failed go back to absent. */
static bool tlp__worker_wait(tlp_dev_ctx *d) {
    if (!d->worker_started) return true;
    uint64_t t0 = tlp__now_ns();
    pthread_mutex_lock(&d->wmu);
    while (d->w_busy) pthread_cond_wait(&d->wdone, &d->wmu);
    bool ok = !d->w_error[0];
    if (!ok) {
        snprintf(d->error, sizeof d->error, "%s", d->w_error);
        d->w_error[0] = 0;
    }
    for (uint32_t i = 0; i < d->q_n; i++) {
        tlp_seg *s = &d->segs[d->queue[i]];
        if (s->state == SEG_LOADING) {
            tlp__seg_drop(d, s);
            s->state = SEG_ABSENT;
            d->resident -= s->span;
        }
    }
    d->q_n = d->q_next = 0;
    pthread_mutex_unlock(&d->wmu);
    d->wait_ns += tlp__now_ns() - t0;
    return ok;
}

static bool tlp__worker_start(tlp_dev_ctx *d) {
    if (d->worker_started) return true;
    d->queue = malloc((size_t)d->n_segs * sizeof *d->queue);
    if (!d->queue) return false;
    pthread_mutex_init(&d->wmu, NULL);
    pthread_cond_init(&d->wcv, NULL);
    pthread_cond_init(&d->wdone, NULL);
    if (pthread_create(&d->worker, NULL, tlp__worker_main, d) != 0) return false;
    d->worker_started = true;
    return true;
}

/* ---- sealing: weights into segments ----------------------------------------------------- */

static int tlp__cmp_weight(const void *a, const void *b) {
    const tlp_weight *x = a, *y = b;
    return x->base < y->base ? -1 : x->base > y->base;
}

static bool tlp__seal(tlp_dev_ctx *d) {
    tlp__catalogs_close(d); /* loading is over once a graph runs */
    if (!d->dirty) return true;
    if (!tlp__worker_wait(d)) return false;
    /* old segments are dropped: their pages are given back (weights added after a graph ran:
     * sd.cpp loads each module's weights when it first runs it), while each still names its
     * weight by that weight's place in the table as it was: sorting the table below moves them */
    for (uint32_t i = 0; i < d->n_segs; i++)
        if (d->segs[i].state == SEG_RESIDENT) tlp__evict_seg(d, &d->segs[i]);
    free(d->segs);
    d->segs = NULL;
    d->n_segs = 0;
    qsort(d->weights, (size_t)d->n_weights, sizeof *d->weights, tlp__cmp_weight);
    /* segments: small beside both what is kept and what streams, so that the window the stream
     * needs costs little against the optimum (N - budget per pass) */
    uint64_t total = 0;
    for (int i = 0; i < d->n_weights; i++) total += tlp__round_up(d->weights[i].nbytes, TLP_PAGE);
    uint64_t ss = 4u << 20;
    if (d->budget && d->budget < total) {
        uint64_t a = d->budget / 16, b = (total - d->budget) / 200;
        ss = a < b ? a : b;
    }
    if (ss > (4u << 20)) ss = 4u << 20;
    ss = ss / TLP_PAGE * TLP_PAGE;
    if (ss < TLP_PAGE) ss = TLP_PAGE;
    uint32_t n = 0;
    for (int i = 0; i < d->n_weights; i++) n += (uint32_t)((d->weights[i].nbytes + ss - 1) / ss);
    tlp_seg *segs = calloc(n ? n : 1, sizeof *segs);
    if (!segs) return false;
    free(d->queue);
    d->queue = NULL;
    if (d->worker_started) {
        d->queue = malloc((size_t)n * sizeof *d->queue);
        if (!d->queue) return false;
    }
    uint32_t k = 0;
    for (int i = 0; i < d->n_weights; i++) {
        tlp_weight *w = &d->weights[i];
        w->seg0 = k;
        for (uint64_t off = 0; off < w->nbytes; off += ss, k++) {
            uint64_t len = w->nbytes - off < ss ? w->nbytes - off : ss;
            segs[k] = (tlp_seg){(uint32_t)i, off, len, tlp__round_up(len, TLP_PAGE), SEG_ABSENT, -1,
                                INT64_MAX, 0, 0, false};
        }
        w->nseg = k - w->seg0;
    }
    d->segs = segs, d->n_segs = n, d->seg_size = ss, d->next_rank = 0;
    d->dirty = false;
    return true;
}

/* ---- graph planning --------------------------------------------------------------------- */

typedef struct {
    int node;           /* graph node index */
    int64_t r0, r1;     /* rows of src0 for a split matrix product; r1 == 0: the whole node */
    uint32_t *segs;     /* segments it needs */
    uint32_t n_segs;
    uint64_t bytes;
} tlp_unit;

typedef struct {
    tlp_unit *units;
    int n_units, cap_units;
    int *chunk_start;   /* first unit of each chunk; chunk_start[n_chunks] = n_units */
    int n_chunks;
    uint32_t *seg_pool;
    size_t pool_n, pool_cap;
} tlp_plan;

static void tlp__plan_free(tlp_plan *p) {
    free(p->units);
    free(p->chunk_start);
    free(p->seg_pool);
    memset(p, 0, sizeof *p);
}

static tlp_weight *tlp__weight_of(tlp_dev_ctx *d, const struct ggml_tensor *t) {
    if (!t || !t->buffer || t->buffer->buft != &g_buft || t->buffer->usage != GGML_BACKEND_BUFFER_USAGE_WEIGHTS)
        return NULL;
    const char *p = t->data;
    int lo = 0, hi = d->n_weights - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        tlp_weight *w = &d->weights[mid];
        if (p < w->base) hi = mid - 1;
        else if (p >= w->base + tlp__round_up((uint64_t)(w->data - w->base) + (w->nbytes ? w->nbytes : 1), TLP_PAGE))
            lo = mid + 1;
        else return w;
    }
    return NULL;
}

static bool tlp__pool_add(tlp_plan *p, uint32_t v) {
    if (p->pool_n == p->pool_cap) {
        size_t cap = p->pool_cap ? 2 * p->pool_cap : 1024;
        uint32_t *np = realloc(p->seg_pool, cap * sizeof *np);
        if (!np) return false;
        p->seg_pool = np, p->pool_cap = cap;
    }
    p->seg_pool[p->pool_n++] = v;
    return true;
}

/* Unit i's segments live at seg_pool[(size_t)units[i].segs] until the pool stops growing. */
static bool tlp__unit_add(tlp_dev_ctx *d, tlp_plan *p, int node, int64_t r0, int64_t r1,
                          const uint32_t *seg_lo, const uint32_t *seg_hi, int n_ranges) {
    if (p->n_units == p->cap_units) {
        int cap = p->cap_units ? 2 * p->cap_units : 256;
        tlp_unit *nu = realloc(p->units, (size_t)cap * sizeof *nu);
        if (!nu) return false;
        p->units = nu, p->cap_units = cap;
    }
    tlp_unit *u = &p->units[p->n_units];
    u->node = node, u->r0 = r0, u->r1 = r1;
    u->segs = (uint32_t *)(uintptr_t)p->pool_n;
    u->n_segs = 0, u->bytes = 0;
    d->stamp++;
    for (int r = 0; r < n_ranges; r++)
        for (uint32_t s = seg_lo[r]; s < seg_hi[r]; s++) {
            if (d->segs[s].stamp == d->stamp) continue;
            d->segs[s].stamp = d->stamp;
            if (!tlp__pool_add(p, s)) return false;
            u->n_segs++;
            u->bytes += d->segs[s].span;
        }
    p->n_units++;
    return true;
}

static bool tlp__splittable(const struct ggml_tensor *node, const tlp_weight *w) {
    const struct ggml_tensor *a = node->src[0];
    /* row slices must take the kernel the whole product takes: the CPU's tiled GEMM (llamafile)
     * wants a row count that is a multiple of 4, and computes each element as the plain path
     * would not; slices are multiples of 16 rows, so a product is split only when its row count
     * is a multiple of 4 (then every slice, the last included, keeps to that kernel) */
    return node->op == GGML_OP_MUL_MAT && a->view_src == NULL && (char *)a->data == w->data &&
           a->ne[2] == 1 && a->ne[3] == 1 && ggml_is_contiguous(a) && node->nb[0] == sizeof(float) &&
           a->ne[1] > 16 && a->ne[1] % 4 == 0;
}

/* Units and chunks of graph g. cap: the most weight bytes a chunk takes (0: no limit). */
static bool tlp__plan_graph(tlp_dev_ctx *d, struct ggml_cgraph *g, uint64_t cap, tlp_plan *p) {
    uint32_t lo[GGML_MAX_SRC], hi[GGML_MAX_SRC];
    for (int i = 0; i < g->n_nodes; i++) {
        struct ggml_tensor *node = g->nodes[i];
        int nr = 0;
        tlp_weight *split_w = NULL;
        for (int s = 0; s < GGML_MAX_SRC; s++) {
            tlp_weight *w = tlp__weight_of(d, node->src[s]);
            if (!w || !w->nseg) continue;
            if (s == 0 && cap && tlp__splittable(node, w) &&
                tlp__round_up(w->nbytes, TLP_PAGE) > cap / 2) {
                split_w = w;
                continue;
            }
            lo[nr] = w->seg0, hi[nr] = w->seg0 + w->nseg, nr++;
        }
        if (!split_w) {
            if (nr && !tlp__unit_add(d, p, i, 0, 0, lo, hi, nr)) return false;
            if (!nr && !tlp__unit_add(d, p, i, 0, 0, lo, hi, 0)) return false;
            continue;
        }
        const struct ggml_tensor *a = node->src[0];
        uint64_t row = a->nb[1];
        int64_t rows_per = (int64_t)((cap / 2) / row) / 16 * 16;
        if (rows_per < 16) rows_per = 16;
        for (int64_t r0 = 0; r0 < a->ne[1]; r0 += rows_per) {
            int64_t r1 = r0 + rows_per < a->ne[1] ? r0 + rows_per : a->ne[1];
            lo[nr] = split_w->seg0 + (uint32_t)((uint64_t)r0 * row / d->seg_size);
            hi[nr] = split_w->seg0 + (uint32_t)(((uint64_t)r1 * row - 1) / d->seg_size) + 1;
            if (!tlp__unit_add(d, p, i, r0, r1, lo, hi, nr + 1)) return false;
        }
    }
    for (int i = 0; i < p->n_units; i++) p->units[i].segs = p->seg_pool + (uintptr_t)p->units[i].segs;
    /* chunks: consecutive units while their segments fit in cap; never a cut right after an
     * RMS_NORM (the CPU backend fuses it with the MUL that follows) */
    p->chunk_start = malloc((size_t)(p->n_units + 1) * sizeof *p->chunk_start);
    if (!p->chunk_start) return false;
    p->n_chunks = 0;
    uint64_t bytes = 0;
    d->stamp++;
    for (int i = 0; i < p->n_units; i++) {
        tlp_unit *u = &p->units[i];
        uint64_t add = 0;
        for (uint32_t k = 0; k < u->n_segs; k++)
            if (d->segs[u->segs[k]].stamp != d->stamp) add += d->segs[u->segs[k]].span;
        bool glued = i > 0 && p->units[i - 1].r1 == 0 && u->r1 == 0 &&
                     g->nodes[p->units[i - 1].node]->op == GGML_OP_RMS_NORM;
        if (p->n_chunks == 0 || (cap && bytes + add > cap && !glued)) {
            p->chunk_start[p->n_chunks++] = i;
            bytes = 0;
            d->stamp++;
            add = u->bytes;
        }
        for (uint32_t k = 0; k < u->n_segs; k++) d->segs[u->segs[k]].stamp = d->stamp;
        bytes += add;
    }
    p->chunk_start[p->n_chunks] = p->n_units;
    return true;
}

/* ---- compute ---------------------------------------------------------------------------- */

static enum ggml_status tlp__run_nodes(tlp_backend_ctx *b, struct ggml_cgraph *g, int i0, int i1) {
    if (i0 >= i1) return GGML_STATUS_SUCCESS;
    struct ggml_cgraph v = ggml_graph_view(g, i0, i1);
    return ggml_backend_graph_compute(b->cpu, &v);
}

static enum ggml_status tlp__run_split(tlp_backend_ctx *b, struct ggml_tensor *node, int64_t r0, int64_t r1) {
    struct ggml_tensor *a = node->src[0];
    struct ggml_tensor ws = *a, ds = *node;
    ws.ne[1] = r1 - r0;
    ws.data = (char *)a->data + (size_t)r0 * a->nb[1];
    ws.view_src = (struct ggml_tensor *)a;
    ws.view_offs = (size_t)r0 * a->nb[1];
    for (int k = 2; k < 4; k++) ws.nb[k] = ws.nb[1] * (size_t)ws.ne[1];
    ds.ne[0] = r1 - r0;
    ds.data = (char *)node->data + (size_t)r0 * node->nb[0];
    ds.src[0] = &ws;
    struct ggml_tensor *nodes[1] = {&ds};
    struct ggml_cgraph g = {0};
    g.size = 1, g.n_nodes = 1, g.nodes = nodes;
    g.order = GGML_CGRAPH_EVAL_ORDER_LEFT_TO_RIGHT;
    return ggml_backend_graph_compute(b->cpu, &g);
}

static enum ggml_status tlp__fail(tlp_dev_ctx *d, const char *msg) {
    GGML_LOG_ERROR("tierload: %s\n", msg);
    return GGML_STATUS_FAILED;
}

static enum ggml_status tlp__graph_compute_locked(tlp_backend_ctx *b, struct ggml_cgraph *g) {
    tlp_dev_ctx *d = b->dev;
    if (!tlp__seal(d)) return tlp__fail(d, d->error[0] ? d->error : "out of memory");
    uint64_t budget = d->budget;
    uint64_t total = 0;
    for (uint32_t i = 0; i < d->n_segs; i++) total += d->segs[i].span;
    d->graph_weights = d->weights_bytes;
    d->graph_weight_tensors = d->n_weights;
    d->graph_mapped = d->mapped_weights;
    /* chunk cap: the current and the prefetched chunk are the window the stream passes through;
     * kept small beside what streams (N - budget), so the resident part stays near the budget */
    uint64_t cap = 0;
    if (budget && total > budget) {
        uint64_t qa = budget / 4, qb = (total - budget) / 50;
        cap = qa < qb ? qa : qb;
        if (cap < 2 * d->seg_size) cap = 2 * d->seg_size;
    }
    tlp_plan plan = {0};
    if (!tlp__plan_graph(d, g, cap, &plan)) {
        tlp__plan_free(&plan);
        return tlp__fail(d, "out of memory planning the graph");
    }
    /* the largest chunk must fit the budget */
    enum ggml_status st = GGML_STATUS_SUCCESS;
    for (int c = 0; budget && c < plan.n_chunks; c++) {
        d->stamp++;
        uint64_t bytes = 0;
        const char *who = "";
        for (int u = plan.chunk_start[c]; u < plan.chunk_start[c + 1]; u++)
            for (uint32_t k = 0; k < plan.units[u].n_segs; k++) {
                tlp_seg *s = &d->segs[plan.units[u].segs[k]];
                if (s->stamp == d->stamp) continue;
                s->stamp = d->stamp;
                bytes += s->span;
                who = d->weights[s->w].name;
            }
        if (bytes > d->max_chunk_bytes) d->max_chunk_bytes = bytes;
        if (bytes > budget) {
            char bb[64], cb[64], msg[512];
            tlp__fmt_bytes(bb, sizeof bb, budget);
            tlp__fmt_bytes(cb, sizeof cb, bytes);
            snprintf(msg, sizeof msg,
                     "TIERLOAD_BUDGET %s is smaller than the largest chunk of the graph, %s (weights up to "
                     "'%s'): raise TIERLOAD_BUDGET to at least %s",
                     bb, cb, who, cb);
            tlp__plan_free(&plan);
            return tlp__fail(d, msg);
        }
    }
    /* next uses within this graph (per segment entry: the next chunk after its own that uses
     * it), and the learned schedule: the order of first use in the first graph that used it */
    int32_t *next_after = malloc((plan.pool_n ? plan.pool_n : 1) * sizeof *next_after);
    if (!next_after) {
        tlp__plan_free(&plan);
        return tlp__fail(d, "out of memory planning the graph");
    }
    for (uint32_t i = 0; i < d->n_segs; i++) d->segs[i].next_chunk = -1;
    for (int c = plan.n_chunks - 1; c >= 0; c--) {
        for (int u = plan.chunk_start[c]; u < plan.chunk_start[c + 1]; u++)
            for (uint32_t k = 0; k < plan.units[u].n_segs; k++) {
                tlp_seg *s = &d->segs[plan.units[u].segs[k]];
                next_after[plan.units[u].segs + k - plan.seg_pool] = (int32_t)(s->next_chunk > c ? s->next_chunk : -1);
            }
        for (int u = plan.chunk_start[c]; u < plan.chunk_start[c + 1]; u++)
            for (uint32_t k = 0; k < plan.units[u].n_segs; k++) d->segs[plan.units[u].segs[k]].next_chunk = c;
    }
    for (int c = 0; c < plan.n_chunks; c++)
        for (int u = plan.chunk_start[c]; u < plan.chunk_start[c + 1]; u++)
            for (uint32_t k = 0; k < plan.units[u].n_segs; k++) {
                tlp_seg *s = &d->segs[plan.units[u].segs[k]];
                if (s->learned_rank == INT64_MAX) s->learned_rank = d->next_rank++;
            }
    if (budget && !tlp__worker_start(d)) {
        tlp__plan_free(&plan);
        return tlp__fail(d, "cannot start the prefetch worker");
    }
    uint64_t read0 = d->bytes_read;
    for (int c = 0; c < plan.n_chunks && st == GGML_STATUS_SUCCESS; c++) {
        if (!tlp__worker_wait(d)) {
            st = tlp__fail(d, d->error);
            break;
        }
        /* map mode: pages of a file cut short under the run are gone from every mapping, resident
         * or not; compute would fault on them (SIGBUS), so each chunk first checks the files */
        for (int f = 0; d->map && f < d->n_files && st == GGML_STATUS_SUCCESS; f++)
            if (!tlp__check_file(d, f, d->error, sizeof d->error)) st = tlp__fail(d, d->error);
        if (st != GGML_STATUS_SUCCESS) break;
        uint32_t pin = ++d->stamp;
        for (int u = plan.chunk_start[c]; u < plan.chunk_start[c + 1]; u++)
            for (uint32_t k = 0; k < plan.units[u].n_segs; k++) d->segs[plan.units[u].segs[k]].pin = pin;
        /* this chunk's segments, now */
        uint64_t t0 = tlp__now_ns();
        for (int u = plan.chunk_start[c]; u < plan.chunk_start[c + 1] && st == GGML_STATUS_SUCCESS; u++)
            for (uint32_t k = 0; k < plan.units[u].n_segs; k++) {
                tlp_seg *s = &d->segs[plan.units[u].segs[k]];
                if (s->state == SEG_RESIDENT) continue;
                if (!tlp__make_room(d, s->span, pin)) {
                    st = tlp__fail(d, "budget exhausted by the chunk itself");
                    break;
                }
                s->warm = d->weights[s->w].data == d->weights[s->w].base &&
                          tlp__stash_take(d, d->weights[s->w].data + s->off, s->span);
                uint64_t rd = 0;
                if (!tlp__load_seg(d, s, &rd, d->error, sizeof d->error)) {
                    tlp__seg_drop(d, s);
                    st = tlp__fail(d, d->error);
                    break;
                }
                d->bytes_read += rd;
                s->state = SEG_RESIDENT;
                d->resident += s->span;
                if (d->resident > d->peak_resident) d->peak_resident = d->resident;
            }
        d->wait_ns += tlp__now_ns() - t0;
        if (st != GGML_STATUS_SUCCESS) break;
        /* uses from here on are later than this chunk */
        for (int u = plan.chunk_start[c]; u < plan.chunk_start[c + 1]; u++)
            for (uint32_t k = 0; k < plan.units[u].n_segs; k++)
                d->segs[plan.units[u].segs[k]].next_chunk = next_after[plan.units[u].segs + k - plan.seg_pool];
        /* prefetch the next chunk's segments while this one computes */
        if (budget && c + 1 < plan.n_chunks) {
            uint32_t pin2 = pin;
            for (int u = plan.chunk_start[c + 1]; u < plan.chunk_start[c + 2]; u++)
                for (uint32_t k = 0; k < plan.units[u].n_segs; k++) d->segs[plan.units[u].segs[k]].pin = pin2;
            pthread_mutex_lock(&d->wmu);
            for (int u = plan.chunk_start[c + 1]; u < plan.chunk_start[c + 2]; u++)
                for (uint32_t k = 0; k < plan.units[u].n_segs; k++) {
                    uint32_t si = plan.units[u].segs[k];
                    tlp_seg *s = &d->segs[si];
                    if (s->state != SEG_ABSENT) continue;
                    if (!tlp__make_room(d, s->span, pin2)) goto queued;
                    s->warm = d->weights[s->w].data == d->weights[s->w].base &&
                          tlp__stash_take(d, d->weights[s->w].data + s->off, s->span);
                    s->state = SEG_LOADING;
                    d->resident += s->span;
                    if (d->resident > d->peak_resident) d->peak_resident = d->resident;
                    d->queue[d->q_n++] = si;
                }
        queued:
            if (d->q_n > d->q_next) {
                d->w_busy = true;
                pthread_cond_signal(&d->wcv);
            }
            pthread_mutex_unlock(&d->wmu);
        }
        /* compute: runs of whole nodes as graph views, split products one by one */
        int run0 = -1, run1 = -1;
        for (int u = plan.chunk_start[c]; u < plan.chunk_start[c + 1] && st == GGML_STATUS_SUCCESS; u++) {
            tlp_unit *un = &plan.units[u];
            if (un->r1 == 0) {
                if (run0 < 0) run0 = un->node;
                run1 = un->node + 1;
                continue;
            }
            st = tlp__run_nodes(b, g, run0, run1);
            run0 = run1 = -1;
            if (st == GGML_STATUS_SUCCESS) st = tlp__run_split(b, g->nodes[un->node], un->r0, un->r1);
        }
        if (st == GGML_STATUS_SUCCESS && run0 >= 0) st = tlp__run_nodes(b, g, run0, run1);
        d->chunks_run++;
    }
    if (!tlp__worker_wait(d) && st == GGML_STATUS_SUCCESS) st = tlp__fail(d, d->error);
    uint64_t rd = d->bytes_read - read0;
    if (d->graphs == 0) d->first_graph_read = rd;
    else d->graph_read_sum_after_first += rd;
    d->last_graph_read = rd;
    d->graphs++;
    free(next_after);
    tlp__plan_free(&plan);
    return st;
}

/* ---- stats ------------------------------------------------------------------------------ */

static void tlp__write_stats(tlp_dev_ctx *d) {
    if (!d->stats_path || !*d->stats_path) return;
    FILE *f = fopen(d->stats_path, "w");
    if (!f) {
        fprintf(stderr, "tierload: TIERLOAD_STATS %s: %s\n", d->stats_path, strerror(errno));
        return;
    }
    fprintf(f,
            "{\"device\":\"" TLP_NAME "\",\"budget\":%" PRIu64 ",\"weights_bytes\":%" PRIu64
            ",\"weight_tensors\":%d,\"segment_bytes\":%" PRIu64 ",\"graphs\":%" PRIu64 ",\"chunks\":%" PRIu64
            ",\"bytes_read\":%" PRIu64 ",\"first_graph_read\":%" PRIu64 ",\"last_graph_read\":%" PRIu64
            ",\"read_per_graph_after_first\":%.1f,\"peak_resident\":%" PRIu64
            ",\"max_chunk_bytes\":%" PRIu64 ",\"evictions\":%" PRIu64 ",\"wait_ns\":%" PRIu64
            ",\"stash\":\"%s\",\"stash_moves\":%" PRIu64 ",\"stash_fallbacks\":%" PRIu64
            ",\"mode\":\"%s\",\"mapped_weights\":%" PRIu64 ",\"segment_errors\":%" PRIu64 "}\n",
            d->budget, d->graph_weights, d->graph_weight_tensors, d->seg_size, d->graphs, d->chunks_run, d->bytes_read,
            d->first_graph_read, d->last_graph_read,
            d->graphs > 1 ? (double)d->graph_read_sum_after_first / (double)(d->graphs - 1) : 0.0,
            d->peak_resident, d->max_chunk_bytes, d->evictions, d->wait_ns, tlp_stash_names[d->stash_how],
            d->stash_moves, d->stash_fallbacks, d->map ? "map" : "copy", d->graph_mapped, d->segment_errors);
    fclose(f);
}

/* At exit or when ggml unloads the plugin: the figures, then the worker stopped and joined (its
 * code must not be unmapped under it). */
__attribute__((destructor)) static void tlp__at_exit(void) {
    if (!g_inited) return;
    tlp_dev_ctx *d = &g_dev;
    tlp__write_stats(d);
    if (d->worker_started) {
        pthread_mutex_lock(&d->wmu);
        d->worker_stop = true;
        pthread_cond_broadcast(&d->wcv);
        pthread_mutex_unlock(&d->wmu);
        pthread_join(d->worker, NULL);
        d->worker_started = false;
    }
}

/* ---- buffer ----------------------------------------------------------------------------- */

static void tlp_buf_free(ggml_backend_buffer_t buf) {
    tlp_buffer_ctx *c = buf->context;
    if (buf->usage == GGML_BACKEND_BUFFER_USAGE_WEIGHTS) {
        tlp_dev_ctx *d = &g_dev;
        pthread_mutex_lock(&d->mu);
        tlp__worker_wait(d);
        /* drop the weights of this buffer */
        int out = 0;
        for (int i = 0; i < d->n_weights; i++) {
            tlp_weight *w = &d->weights[i];
            if (w->base >= c->base && w->base < c->base + c->size) {
                for (int k = 0; k < w->n_pieces; k++) free(w->pieces[k].copy);
                free(w->pieces);
                d->weights_bytes -= w->nbytes;
                if (w->mapped) d->mapped_weights--;
                continue;
            }
            d->weights[out++] = *w;
        }
        if (out != d->n_weights) {
            for (uint32_t i = 0; i < d->n_segs; i++)
                if (d->segs[i].state == SEG_RESIDENT) {
                    d->segs[i].state = SEG_ABSENT;
                    d->resident -= d->segs[i].span;
                }
            d->n_weights = out;
            d->dirty = true;
            free(d->segs);
            d->segs = NULL;
            d->n_segs = 0;
        }
        pthread_mutex_unlock(&d->mu);
    }
    munmap(c->base, c->size);
    free(c);
}

static void *tlp_buf_base(ggml_backend_buffer_t buf) { return ((tlp_buffer_ctx *)buf->context)->base; }

static void tlp_buf_memset(ggml_backend_buffer_t buf, struct ggml_tensor *t, uint8_t v, size_t off, size_t n) {
    memset((char *)t->data + off, v, n);
}

/*
 * TIERLOAD_MODE=map: weight w (one piece, its whole file range) gets its allocation mapped to that
 * range of its file, private and read-write as the engine's own mapping would be, its bytes moved
 * to where the file offset puts them in a page (get_alloc_size left a page of room for that), and
 * the tensor's data with them. Nothing is read now; segments fault pages in and give them back.
 * A weight whose place would not be 8-byte aligned (the CPU kernels load unaligned vectors; a
 * safetensors file aligns to 8), or whose allocation is smaller than asked, stays copied.
 */
/* [p, p + len) of a buffer back to fresh anonymous memory, as the buffer type made it. */
static void tlp__anon_over(char *p, uint64_t len) {
    mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
}

static void tlp__unmap_weight(tlp_dev_ctx *d, tlp_weight *w) {
    tlp__anon_over(w->base, tlp__round_up((uint64_t)(w->data - w->base) + w->nbytes, TLP_PAGE));
    w->mapped = false;
    d->mapped_weights--;
}

static void tlp__map_weight(tlp_dev_ctx *d, ggml_backend_buffer_t buf, tlp_weight *w, struct ggml_tensor *t) {
    const tlp_piece *p = &w->pieces[0];
    tlp_buffer_ctx *c = buf->context;
    uint64_t delta = p->foff % TLP_PAGE, len = tlp__round_up(delta + w->nbytes, TLP_PAGE);
    if (delta % 8 || ggml_backend_buffer_get_alloc_size(buf, t) < len || w->base + len > c->base + c->size)
        return;
    void *r = mmap(w->base, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED,
                   d->files[p->file].fd, (off_t)(p->foff - delta));
    if (r == MAP_FAILED) { /* the range as it was */
        tlp__anon_over(w->base, len);
        return;
    }
    w->data = w->base + delta;
    t->data = w->data;
    w->mapped = true;
    d->mapped_weights++;
}

static void tlp_buf_set(ggml_backend_buffer_t buf, struct ggml_tensor *t, const void *data, size_t off, size_t n) {
    if (buf->usage != GGML_BACKEND_BUFFER_USAGE_WEIGHTS) {
        memcpy((char *)t->data + off, data, n);
        return;
    }
    tlp_dev_ctx *d = &g_dev;
    pthread_mutex_lock(&d->mu);
    char path[4096];
    uint64_t foff = 0;
    tlp_piece p = {off, n, 0, -1, NULL};
    if ((tlp__addr_to_file(data, n, path, sizeof path, &foff) ||
         tlp__find_by_name(d, t->name, data, off, n, path, sizeof path, &foff)) &&
        (p.file = tlp__file_index(d, path)) >= 0) {
        p.foff = foff;
    } else {
        /* neither from a file mapping nor found in an open GGUF: the bytes are kept */
        p.file = -1;
        p.copy = malloc(n ? n : 1);
        if (p.copy) memcpy(p.copy, data, n);
    }
    tlp_weight *w = tlp__weight_for(d, t);
    if (w && w->mapped) {
        const tlp_piece *m = &w->pieces[0];
        if (p.file == m->file && p.foff == m->foff && off == 0 && n == w->nbytes) { /* as mapped */
            pthread_mutex_unlock(&d->mu);
            return;
        }
        tlp__unmap_weight(d, w); /* other bytes now: copied from here on */
    }
    bool whole = w && !w->n_pieces && off == 0 && n == w->nbytes;
    bool ok = w && (p.file >= 0 || p.copy) && tlp__add_piece(w, p);
    if (ok && whole && d->map && p.file >= 0) tlp__map_weight(d, buf, w, t);
    if (!ok) {
        free(p.copy);
        /* nothing recorded: keep the bytes where they are, as a plain buffer would */
        memcpy((char *)t->data + off, data, n);
    }
    /* whatever the segment held is stale now */
    for (uint32_t i = 0; w && !d->dirty && i < w->nseg; i++) {
        tlp_seg *s = &d->segs[w->seg0 + i];
        if (s->state == SEG_RESIDENT) tlp__evict_seg(d, s);
    }
    pthread_mutex_unlock(&d->mu);
}

static void tlp_buf_get(ggml_backend_buffer_t buf, const struct ggml_tensor *t, void *data, size_t off, size_t n) {
    if (buf->usage != GGML_BACKEND_BUFFER_USAGE_WEIGHTS) {
        memcpy(data, (const char *)t->data + off, n);
        return;
    }
    tlp_dev_ctx *d = &g_dev;
    pthread_mutex_lock(&d->mu);
    const tlp_weight *w = NULL;
    for (int i = 0; i < d->n_weights; i++)
        if (d->weights[i].data == (char *)t->data) w = &d->weights[i];
    memset(data, 0, n);
    for (int i = 0; w && i < w->n_pieces; i++) {
        const tlp_piece *p = &w->pieces[i];
        uint64_t a = p->toff > off ? p->toff : off, e = p->toff + p->size < off + n ? p->toff + p->size : off + n;
        if (a >= e) continue;
        if (p->file < 0) {
            memcpy((char *)data + (a - off), p->copy + (a - p->toff), e - a);
        } else {
            ssize_t r = pread(d->files[p->file].fd, (char *)data + (a - off), e - a, (off_t)(p->foff + (a - p->toff)));
            if (r != (ssize_t)(e - a)) GGML_LOG_ERROR("tierload: get_tensor %s: short read\n", t->name);
        }
    }
    if (!w) memcpy(data, (const char *)t->data + off, n);
    pthread_mutex_unlock(&d->mu);
}

static void tlp_buf_clear(ggml_backend_buffer_t buf, uint8_t v) {
    tlp_buffer_ctx *c = buf->context;
    if (buf->usage == GGML_BACKEND_BUFFER_USAGE_WEIGHTS) return; /* weights come from their files */
    memset(c->base, v, c->size);
}

static const struct ggml_backend_buffer_i tlp_buf_iface = {
    .free_buffer = tlp_buf_free,
    .get_base = tlp_buf_base,
    .memset_tensor = tlp_buf_memset,
    .set_tensor = tlp_buf_set,
    .get_tensor = tlp_buf_get,
    .clear = tlp_buf_clear,
};

static const char *tlp_buft_name(ggml_backend_buffer_type_t t) { return TLP_NAME; }

static ggml_backend_buffer_t tlp_buft_alloc(ggml_backend_buffer_type_t t, size_t size) {
    size_t n = tlp__round_up(size ? size : 1, TLP_PAGE);
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        GGML_LOG_ERROR("tierload: cannot reserve %zu bytes: %s\n", n, strerror(errno));
        return NULL;
    }
    tlp_buffer_ctx *c = malloc(sizeof *c);
    if (!c) {
        munmap(p, n);
        return NULL;
    }
    c->base = p, c->size = n;
    tlp_dev_ctx *d = &g_dev;
    pthread_mutex_lock(&d->mu);
    if (d->stash_how == TLP_STASH_UFFD && !tlp__uffd_register(d, p, n)) tlp__stash_fallback(d, errno);
    pthread_mutex_unlock(&d->mu);
    return ggml_backend_buffer_init(t, tlp_buf_iface, c, size);
}

static size_t tlp_buft_align(ggml_backend_buffer_type_t t) { return TLP_PAGE; }
/* map mode: a page more for a tensor that is no op's result (a weight), room to move its bytes
 * to its file offset's place in a page (ggml takes more than ggml_nbytes only for those) */
static size_t tlp_buft_alloc_size(ggml_backend_buffer_type_t t, const struct ggml_tensor *x) {
    size_t n = ggml_nbytes(x);
    return g_dev.map && x->op == GGML_OP_NONE ? tlp__round_up(n ? n : 1, TLP_PAGE) + TLP_PAGE : n;
}
static bool tlp_buft_is_host(ggml_backend_buffer_type_t t) { return false; }

/* ---- backend ---------------------------------------------------------------------------- */

static const char *tlp_be_name(ggml_backend_t be) { return TLP_NAME; }

static void tlp_be_free(ggml_backend_t be) {
    tlp_backend_ctx *b = be->context;
    tlp__write_stats(b->dev);
    ggml_backend_free(b->cpu);
    free(b);
    free(be);
}

static enum ggml_status tlp_be_compute(ggml_backend_t be, struct ggml_cgraph *g) {
    tlp_backend_ctx *b = be->context;
    pthread_mutex_lock(&b->dev->mu);
    enum ggml_status st = tlp__graph_compute_locked(b, g);
    pthread_mutex_unlock(&b->dev->mu);
    return st;
}

static ggml_guid_t tlp_guid(void) {
    static ggml_guid guid = {0x74, 0x69, 0x65, 0x72, 0x6c, 0x6f, 0x61, 0x64,
                             0x2d, 0x67, 0x67, 0x6d, 0x6c, 0x2d, 0x30, 0x31};
    return &guid;
}

static const struct ggml_backend_i tlp_be_iface = {
    .get_name = tlp_be_name,
    .free = tlp_be_free,
    .graph_compute = tlp_be_compute,
};

static void tlp_set_n_threads(ggml_backend_t be, int n) {
    tlp_backend_ctx *b = be->context;
    if (b->set_n_threads) b->set_n_threads(b->cpu, n);
}

/* ---- device ----------------------------------------------------------------------------- */

static const char *tlp_dev_name(ggml_backend_dev_t dev) { return TLP_NAME; }
static const char *tlp_dev_desc(ggml_backend_dev_t dev) {
    return "tierload: CPU with weights streamed from their files within TIERLOAD_BUDGET";
}

static void tlp_dev_memory(ggml_backend_dev_t dev, size_t *free_b, size_t *total) {
    /* weights live in their files; what the device keeps is the budget, so report the address
     * space an engine may place there */
    *free_b = *total = (size_t)1 << 40;
}

static enum ggml_backend_dev_type tlp_dev_type(ggml_backend_dev_t dev) { return GGML_BACKEND_DEVICE_TYPE_GPU; }

static void tlp_dev_props(ggml_backend_dev_t dev, struct ggml_backend_dev_props *p) {
    p->name = TLP_NAME;
    p->description = tlp_dev_desc(dev);
    tlp_dev_memory(dev, &p->memory_free, &p->memory_total);
    p->type = GGML_BACKEND_DEVICE_TYPE_GPU;
    p->device_id = NULL;
    /* mmap_support: llama.cpp then loads from its mapping of the file, which is how set_tensor
     * learns where each weight's bytes are (a ggml before the field, as bundled with
     * stable-diffusion.cpp, is built with TLP_GGML_NO_MMAP_CAP) */
#ifdef TLP_GGML_NO_MMAP_CAP
    p->caps = (struct ggml_backend_dev_caps){0};
#else
    p->caps = (struct ggml_backend_dev_caps){.mmap_support = true};
#endif
}

static ggml_backend_t tlp_dev_init(ggml_backend_dev_t dev, const char *params) {
    tlp_dev_ctx *d = dev->context;
    if (!d->cpu_dev) d->cpu_dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!d->cpu_dev) {
        GGML_LOG_ERROR("tierload: no CPU device registered in this ggml\n");
        return NULL;
    }
    tlp_backend_ctx *b = calloc(1, sizeof *b);
    ggml_backend_t be = calloc(1, sizeof *be);
    if (!b || !be || !(b->cpu = ggml_backend_dev_init(d->cpu_dev, params))) {
        free(b);
        free(be);
        return NULL;
    }
    ggml_backend_reg_t creg = ggml_backend_dev_backend_reg(d->cpu_dev);
    b->set_n_threads = (ggml_backend_set_n_threads_t)ggml_backend_reg_get_proc_address(creg, "ggml_backend_set_n_threads");
    b->dev = d;
    *be = (struct ggml_backend){.guid = tlp_guid(), .iface = tlp_be_iface, .device = dev, .context = b};
    return be;
}

static ggml_backend_buffer_type_t tlp_dev_buft(ggml_backend_dev_t dev) { return &g_buft; }

static bool tlp_dev_supports_op(ggml_backend_dev_t dev, const struct ggml_tensor *op) {
    tlp_dev_ctx *d = dev->context;
    if (!d->cpu_dev) d->cpu_dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    return d->cpu_dev && ggml_backend_dev_supports_op(d->cpu_dev, op);
}

static bool tlp_dev_supports_buft(ggml_backend_dev_t dev, ggml_backend_buffer_type_t t) {
    return t == &g_buft || ggml_backend_buft_is_host(t);
}

static bool tlp_dev_offload_op(ggml_backend_dev_t dev, const struct ggml_tensor *op) { return false; }

static const struct ggml_backend_device_i tlp_dev_iface = {
    .get_name = tlp_dev_name,
    .get_description = tlp_dev_desc,
    .get_memory = tlp_dev_memory,
    .get_type = tlp_dev_type,
    .get_props = tlp_dev_props,
    .init_backend = tlp_dev_init,
    .get_buffer_type = tlp_dev_buft,
    .supports_op = tlp_dev_supports_op,
    .supports_buft = tlp_dev_supports_buft,
    .offload_op = tlp_dev_offload_op,
};

/* ---- registration ----------------------------------------------------------------------- */

static const char *tlp_reg_name(ggml_backend_reg_t reg) { return "TIERLOAD"; }
static size_t tlp_reg_count(ggml_backend_reg_t reg) { return 1; }
static ggml_backend_dev_t tlp_reg_dev(ggml_backend_reg_t reg, size_t i) { return i == 0 ? &g_device : NULL; }
static void *tlp_reg_proc(ggml_backend_reg_t reg, const char *name) {
    if (!strcmp(name, "ggml_backend_set_n_threads")) return (void *)tlp_set_n_threads;
    return NULL;
}

static const struct ggml_backend_reg_i tlp_reg_iface = {
    .get_name = tlp_reg_name,
    .get_device_count = tlp_reg_count,
    .get_device = tlp_reg_dev,
    .get_proc_address = tlp_reg_proc,
};

static const struct ggml_backend_buffer_type_i tlp_buft_iface = {
    .get_name = tlp_buft_name,
    .alloc_buffer = tlp_buft_alloc,
    .get_alignment = tlp_buft_align,
    .get_alloc_size = tlp_buft_alloc_size,
    .is_host = tlp_buft_is_host,
};

__attribute__((visibility("default"))) ggml_backend_reg_t ggml_backend_init(void);

ggml_backend_reg_t ggml_backend_init(void) {
    if (g_inited) return &g_reg;
    const char *have = ggml_version(), *commit = ggml_commit();
    /* the commit is compared when the build recorded one */
    if (strcmp(have, TL_PLUGIN_GGML_VERSION) != 0 ||
        (*TL_PLUGIN_GGML_COMMIT && strcmp(commit, TL_PLUGIN_GGML_COMMIT) != 0)) {
        GGML_LOG_ERROR(
                "tierload: libggml-tierload was built for ggml %s (commit %s) but this process runs ggml %s "
                "(commit %s): not registering\n",
                TL_PLUGIN_GGML_VERSION, TL_PLUGIN_GGML_COMMIT, have, commit);
        return NULL;
    }
    tlp_dev_ctx *d = &g_dev;
    const char *mode = getenv("TIERLOAD_MODE");
    if (mode && *mode && strcmp(mode, "copy") != 0 && strcmp(mode, "map") != 0) {
        GGML_LOG_ERROR("tierload: TIERLOAD_MODE=%s: not copy or map: not registering\n", mode);
        return NULL;
    }
    d->map = mode && !strcmp(mode, "map");
    const char *bs = getenv("TIERLOAD_BUDGET");
    if (bs && *bs) {
        bool ok;
        d->budget = tlp__parse_bytes(bs, &ok);
        if (!ok) {
            GGML_LOG_ERROR("tierload: TIERLOAD_BUDGET=%s: not a size (bytes, or with K/M/G/T): not registering\n", bs);
            return NULL;
        }
        d->budget_set = true;
    }
    if (!tlp__stash_choose(d)) {
        GGML_LOG_ERROR("tierload: TIERLOAD_STASH=%s: not uffd, mremap or off: not registering\n",
                       getenv("TIERLOAD_STASH"));
        return NULL;
    }
    if (d->map && d->uffd >= 0) { /* mapped pages come back from the page cache: no stash */
        close(d->uffd);
        d->uffd = -1;
    }
    if (d->map) d->stash_how = TLP_STASH_OFF;
    d->stats_path = getenv("TIERLOAD_STATS");
    pthread_mutex_init(&d->mu, NULL);
    g_buft = (struct ggml_backend_buffer_type){.iface = tlp_buft_iface, .device = &g_device, .context = NULL};
    g_device = (struct ggml_backend_device){.iface = tlp_dev_iface, .reg = &g_reg, .context = d};
    g_reg = (struct ggml_backend_reg){.api_version = GGML_BACKEND_API_VERSION, .iface = tlp_reg_iface, .context = NULL};
    g_inited = true;
    return &g_reg;
}
