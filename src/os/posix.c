/*
 * posix.c — POSIX implementations of the os.h primitives: files, reads,
 * mappings and page-cache hints, mincore residency, allocation and clocks.
 * Every function that can fail consults the fault injector first.
 */
#include "os/os.h"
#include "os/fault.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static tl__os_kind kind_of_mode(mode_t m) {
    if (S_ISREG(m)) return TL_OS_REGULAR;
    if (S_ISDIR(m)) return TL_OS_DIR;
    if (S_ISFIFO(m)) return TL_OS_FIFO;
    if (S_ISCHR(m)) return TL_OS_CHARDEV;
    if (S_ISBLK(m)) return TL_OS_BLOCKDEV;
    if (S_ISSOCK(m)) return TL_OS_SOCKET;
    return TL_OS_OTHER;
}

tl__os_kind tl__os_kind_of(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return TL_OS_MISSING;
    return kind_of_mode(st.st_mode);
}

const char *tl__os_kind_name(tl__os_kind k) {
    switch (k) {
    case TL_OS_MISSING:
        return "missing";
    case TL_OS_REGULAR:
        return "a regular file";
    case TL_OS_DIR:
        return "a directory";
    case TL_OS_FIFO:
        return "a FIFO (named pipe)";
    case TL_OS_CHARDEV:
        return "a character device";
    case TL_OS_BLOCKDEV:
        return "a block device";
    case TL_OS_SOCKET:
        return "a socket";
    case TL_OS_OTHER:
        break;
    }
    return "not a regular file";
}

/* errno after a call that reported failure, never 0: a failure must not read as success. */
static int failure_errno(void) {
    return errno ? errno : EIO;
}

static int refuse_kind(mode_t m) {
    if (S_ISDIR(m)) return EISDIR;
    return S_ISREG(m) ? 0 : TL_OS_ENOTREG;
}

int tl__os_open_ro(const char *path, int *fd, uint64_t *size) {
    int e = tl__fault_hit(TL_FAULT_OPEN);
    if (e) return e;
    struct stat st;
    /* refuse devices, FIFOs and sockets before opening them (opening has effects) */
    if (stat(path, &st) != 0) return failure_errno();
    if ((e = refuse_kind(st.st_mode)) != 0) return e;
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (f < 0) return failure_errno();
    if (fstat(f, &st) != 0) {
        e = failure_errno();
        close(f);
        return e;
    }
    if ((e = refuse_kind(st.st_mode)) != 0) {
        close(f);
        return e;
    }
    /* regular files ignore O_NONBLOCK; clear it anyway so reads are plain reads */
    int fl = fcntl(f, F_GETFL);
    if (fl >= 0) fcntl(f, F_SETFL, fl & ~O_NONBLOCK);
    if (st.st_size == 0) {
        /* a size of 0 that still reads bytes: a pseudo-file, nothing to map */
        char c;
        ssize_t n = pread(f, &c, 1, 0);
        if (n > 0) {
            close(f);
            return TL_OS_ENOSIZE;
        }
    }
    *fd = f;
    *size = (uint64_t)st.st_size;
    return 0;
}

bool tl__os_same_file(int fd1, int fd2) {
    struct stat a, b;
    if (fstat(fd1, &a) != 0 || fstat(fd2, &b) != 0) return false;
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

int tl__os_fd_realpath(int fd, const char *path, char **out) {
    int e = tl__fault_hit(TL_FAULT_OPEN);
    if (e) return e;
    struct stat held, named;
    if (fstat(fd, &held) != 0) return errno;
    char self[40], *r = NULL;
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    char buf[4096];
    ssize_t n = readlink(self, buf, sizeof buf - 1);
    if (n > 0 && buf[0] == '/') {
        buf[n] = 0;
        r = strdup(buf);
        if (!r) return ENOMEM;
    } else if (!(r = realpath(path, NULL))) {
        return errno;
    }
    /* a deleted, renamed or replaced file: the name no longer leads to the descriptor's file */
    if (stat(r, &named) != 0 || named.st_dev != held.st_dev || named.st_ino != held.st_ino) {
        free(r);
        return TL_OS_EOTHER;
    }
    *out = r;
    return 0;
}

int tl__os_realpath(const char *path, char **out) {
    int e = tl__fault_hit(TL_FAULT_OPEN);
    if (e) return e;
    char *r = realpath(path, NULL);
    if (!r) return errno;
    *out = r;
    return 0;
}

int tl__os_fsize(int fd, uint64_t *size) {
    struct stat st;
    if (fstat(fd, &st) != 0) return errno;
    *size = (uint64_t)st.st_size;
    return 0;
}

int tl__os_close(int fd) {
    return close(fd) == 0 ? 0 : errno;
}

bool tl__os_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool tl__os_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int tl__os_pread_full(int fd, void *buf, size_t len, uint64_t off) {
    char *p = buf;
    size_t want = len;
    while (len > 0) {
        int e = tl__fault_hit(TL_FAULT_READ);
        if (e) return e;
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (n == 0) return ENODATA;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    if (want) tl__fault_corrupt(buf, want);
    return 0;
}

int tl__os_map(int fd, uint64_t size, bool writable, bool populate, void **addr) {
    int e = tl__fault_hit(TL_FAULT_MMAP);
    if (e) return e;
    if (size == 0 || size > (uint64_t)SIZE_MAX) return EINVAL;
    int prot = PROT_READ | (writable ? PROT_WRITE : 0);
    int flags = MAP_PRIVATE | (populate ? MAP_POPULATE : 0);
    void *p = mmap(NULL, (size_t)size, prot, flags, fd, 0);
    if (p == MAP_FAILED) return errno;
    *addr = p;
    return 0;
}

int tl__os_restore_range(void *map, int fd, uint64_t off, uint64_t len) {
    uint64_t pg = (uint64_t)tl__os_page_size();
    uint64_t a = (off + pg - 1) / pg * pg, b = (off + len) / pg * pg;
    unsigned char *base = map;
    if (a >= b) return tl__os_pread_full(fd, base + off, (size_t)len, off);
    if (madvise(base + a, (size_t)(b - a), MADV_DONTNEED) != 0) return errno;
    int e = 0;
    if (a > off) e = tl__os_pread_full(fd, base + off, (size_t)(a - off), off);
    if (!e && off + len > b) e = tl__os_pread_full(fd, base + b, (size_t)(off + len - b), b);
    return e;
}

int tl__os_unmap(void *addr, uint64_t size) {
    if (!addr) return 0;
    return munmap(addr, (size_t)size) == 0 ? 0 : errno;
}

int tl__os_madvise(void *addr, uint64_t size, tl__os_advice advice) {
    int a;
    switch (advice) {
    case TL_OS_ADV_SEQUENTIAL:
        a = MADV_SEQUENTIAL;
        break;
    case TL_OS_ADV_WILLNEED:
        a = MADV_WILLNEED;
        break;
    case TL_OS_ADV_DONTNEED:
        a = MADV_DONTNEED;
        break;
    default:
        return EINVAL;
    }
    return madvise(addr, (size_t)size, a) == 0 ? 0 : errno;
}

int tl__os_fadvise_dontneed(int fd, uint64_t off, uint64_t len) {
    return posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_DONTNEED);
}

int tl__os_fadvise_willneed(int fd, uint64_t off, uint64_t len) {
    return posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
}

size_t tl__os_page_size(void) {
    static size_t ps;
    if (!ps) ps = (size_t)sysconf(_SC_PAGESIZE);
    return ps;
}

int tl__os_mincore(const void *addr, uint64_t size, uint64_t *resident, uint64_t *total) {
    size_t ps = tl__os_page_size();
    uint64_t pages = (size + ps - 1) / ps;
    *resident = 0;
    *total = pages;
    enum { CHUNK = 1 << 16 }; /* pages per mincore call: bounded vector */
    unsigned char vec[CHUNK];
    for (uint64_t p = 0; p < pages; p += CHUNK) {
        uint64_t n = pages - p < CHUNK ? pages - p : CHUNK;
        if (mincore((char *)addr + p * ps, (size_t)(n * ps), vec) != 0) return errno;
        for (uint64_t i = 0; i < n; i++)
            *resident += vec[i] & 1;
    }
    return 0;
}

/*
 * cachestat(2) (Linux 6.5): the page cache's count for a file in one call,
 * without mapping it or a byte per page (mincore of 1.5 GB costs ~50 ms).
 * Returns ENOSYS where the kernel (or a seccomp filter) lacks it.
 */
#if defined(SYS_cachestat)
#define TL_SYS_CACHESTAT SYS_cachestat
#elif defined(__linux__) &&                                                                        \
    (defined(__x86_64__) || defined(__i386__) || defined(__aarch64__) || defined(__arm__) ||       \
     defined(__riscv) || defined(__powerpc__) || defined(__s390x__))
#define TL_SYS_CACHESTAT 451 /* older headers: the number these architectures share */
#endif

static int file_cachestat(int fd, uint64_t *pages) {
#ifdef TL_SYS_CACHESTAT
    struct {
        uint64_t off, len;
    } range = {0, 0}; /* len 0: to the end of the file */
    struct {
        uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
    } cs;
    if (syscall(TL_SYS_CACHESTAT, fd, &range, &cs, 0) == 0) {
        *pages = cs.nr_cache;
        return 0;
    }
    return errno == EPERM || errno == EOPNOTSUPP ? ENOSYS : errno;
#else
    (void)fd;
    (void)pages;
    return ENOSYS;
#endif
}

int tl__os_file_residency(int fd, uint64_t size, uint64_t *resident, uint64_t *total) {
    if (size == 0) {
        *resident = *total = 0;
        return 0;
    }
    size_t ps = tl__os_page_size();
    uint64_t cached = 0;
    int ce = file_cachestat(fd, &cached);
    if (ce == 0) {
        *total = (size + ps - 1) / ps;
        *resident = cached < *total ? cached : *total;
        return 0;
    }
    if (ce != ENOSYS) return ce;
    void *p = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return errno;
    int e = tl__os_mincore(p, size, resident, total);
    munmap(p, (size_t)size);
    return e;
}

void *tl__os_malloc(size_t n) {
    if (tl__fault_hit(TL_FAULT_ALLOC)) return NULL;
    return malloc(n ? n : 1);
}

void *tl__os_calloc(size_t n, size_t m) {
    if (tl__fault_hit(TL_FAULT_ALLOC)) return NULL;
    return calloc(n ? n : 1, m ? m : 1);
}

void *tl__os_realloc(void *p, size_t n) {
    if (tl__fault_hit(TL_FAULT_ALLOC)) return NULL;
    return realloc(p, n ? n : 1);
}

void *tl__os_calloc_optional(size_t n, size_t m) {
    return calloc(n ? n : 1, m ? m : 1);
}

void *tl__os_realloc_optional(void *p, size_t n) {
    return realloc(p, n ? n : 1);
}

int tl__os_aligned_alloc(size_t align, size_t n, void **out) {
    int e = tl__fault_hit(TL_FAULT_ALLOC);
    if (e) return e;
    void *p = NULL;
    e = posix_memalign(&p, align, n ? n : 1);
    if (e) return e;
    *out = p;
    return 0;
}

char *tl__os_strndup(const char *s, size_t n) {
    char *d = tl__os_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *tl__os_strdup(const char *s) {
    return tl__os_strndup(s, strlen(s));
}

double tl__os_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int tl__os_listdir(const char *dir, char ***names, size_t *n) {
    int e = tl__fault_hit(TL_FAULT_OPEN);
    if (e) return e;
    DIR *d = opendir(dir);
    if (!d) return errno;
    size_t cap = 16, cnt = 0;
    char **v = tl__os_malloc(cap * sizeof *v);
    struct dirent *de;
    while (v && (de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (cnt == cap) {
            char **nv = tl__os_realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) {
                tl__os_listdir_free(v, cnt);
                v = NULL;
                break;
            }
            v = nv;
        }
        if (!(v[cnt] = tl__os_strdup(de->d_name))) {
            tl__os_listdir_free(v, cnt);
            v = NULL;
            break;
        }
        cnt++;
    }
    closedir(d);
    if (!v) return ENOMEM;
    qsort(v, cnt, sizeof *v, cmp_names);
    *names = v;
    *n = cnt;
    return 0;
}

void tl__os_listdir_free(char **names, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

int tl__os_read_small(const char *path, uint64_t limit, char **buf, size_t *len) {
    int fd;
    uint64_t size;
    int e = tl__os_open_ro(path, &fd, &size);
    if (e) return e;
    if (size > limit) {
        close(fd);
        return EFBIG;
    }
    char *b = tl__os_malloc((size_t)size + 1);
    if (!b) {
        close(fd);
        return ENOMEM;
    }
    e = tl__os_pread_full(fd, b, (size_t)size, 0);
    close(fd);
    if (e) {
        free(b);
        return e;
    }
    b[size] = 0;
    *buf = b;
    *len = (size_t)size;
    return 0;
}

int tl__os_fstamp(int fd, tl__os_stamp *out) {
    struct stat st;
    if (fstat(fd, &st) != 0) return errno;
    out->dev = (uint64_t)st.st_dev;
    out->ino = (uint64_t)st.st_ino;
    out->size = (uint64_t)st.st_size;
    out->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    out->ctime_ns = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
    return 0;
}

bool tl__os_stamp_equal(const tl__os_stamp *a, const tl__os_stamp *b) {
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns;
}

int tl__os_pwrite_full(int fd, const void *buf, size_t len, uint64_t off) {
    const char *p = buf;
    while (len > 0) {
        int e = tl__fault_hit(TL_FAULT_WRITE);
        if (e) return e;
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (n == 0) return EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

int tl__os_open_tmpfile(const char *dir, int *fd) {
    int e = tl__fault_hit(TL_FAULT_OPEN);
    if (e) return e;
#ifdef O_TMPFILE
    int f = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (f >= 0) {
        *fd = f;
        return 0;
    }
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) return errno;
#endif
    size_t n = strlen(dir) + 32;
    char *tmpl = malloc(n);
    if (!tmpl) return ENOMEM;
    snprintf(tmpl, n, "%s/.tierload-spill-XXXXXX", dir);
    int g = mkostemp(tmpl, O_CLOEXEC);
    if (g < 0) {
        e = errno;
        free(tmpl);
        return e;
    }
    unlink(tmpl); /* nothing is left on disk, even if the process is killed */
    free(tmpl);
    *fd = g;
    return 0;
}

int tl__os_ftruncate(int fd, uint64_t size) {
    return ftruncate(fd, (off_t)size) == 0 ? 0 : errno;
}

int tl__os_map_shared_ro(int fd, uint64_t off, uint64_t len, void **addr) {
    int e = tl__fault_hit(TL_FAULT_MMAP);
    if (e) return e;
    if (len == 0 || len > (uint64_t)SIZE_MAX) return EINVAL;
    void *p = mmap(NULL, (size_t)len, PROT_READ, MAP_SHARED, fd, (off_t)off);
    if (p == MAP_FAILED) return errno;
    *addr = p;
    return 0;
}

int tl__os_read_text(const char *path, char *buf, size_t cap, size_t *len) {
    if (cap == 0) return EINVAL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    size_t n = 0;
    int e = 0;
    for (;;) {
        if (n + 1 == cap) { /* full: is there more? */
            char probe;
            ssize_t r = read(fd, &probe, 1);
            if (r < 0 && errno == EINTR) continue;
            e = r < 0 ? errno : r > 0 ? EFBIG : 0;
            break;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            e = errno;
            break;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    if (len) *len = n;
    return e;
}

void tl__os_write_stderr(const char *s) {
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(2, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}
