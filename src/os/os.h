/*
 * os.h — the primitive layer: every system call tierload makes goes through a
 * function here, so the rest of the library reads as pure logic and tests can
 * inject faults (os/fault.h) at each call site.
 *
 * Functions return 0 on success or a positive errno value on failure; they do
 * not format messages (the caller knows the path and tensor to name).
 */
#ifndef TL_OS_OS_H
#define TL_OS_OS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * What a path is (stat, following symlinks), for refusing and naming things
 * that are not regular files.
 */
typedef enum tl__os_kind {
    TL_OS_MISSING = 0,
    TL_OS_REGULAR,
    TL_OS_DIR,
    TL_OS_FIFO,
    TL_OS_CHARDEV,
    TL_OS_BLOCKDEV,
    TL_OS_SOCKET,
    TL_OS_OTHER,
} tl__os_kind;
tl__os_kind tl__os_kind_of(const char *path);
/* "a FIFO (named pipe)", "a character device", ... (with the article). */
const char *tl__os_kind_name(tl__os_kind k);

/*
 * Errors of tl__os_open_ro beyond errno values (positive, above any errno):
 * the path is not a regular file (tl__os_kind_of says what it is), or it is a
 * regular file whose size is 0 although it reads bytes (a /proc or /sys
 * pseudo-file: no size to map).
 */
#define TL_OS_ENOTREG 0x10001
#define TL_OS_ENOSIZE 0x10002
/* A path, opened again, names another file than the descriptor opened first (replaced, re-pointed).
 */
#define TL_OS_EOTHER 0x10003

/*
 * Open a regular file read-only (O_CLOEXEC). Never blocks and never opens
 * anything but a regular file: the path is checked with stat before the open
 * and with fstat after it, and the open is O_NONBLOCK (a FIFO swapped in
 * between cannot make it wait for a writer). Directories give EISDIR, other
 * non-regular files TL_OS_ENOTREG, pseudo-files TL_OS_ENOSIZE.
 */
int tl__os_open_ro(const char *path, int *fd, uint64_t *size);
/* Do two open descriptors name the same file (st_dev and st_ino)? */
bool tl__os_same_file(int fd1, int fd2);
/*
 * The canonical absolute path of the file an open descriptor holds, in a heap
 * string: /proc/self/fd's link, else realpath(path); either is accepted only
 * when stat of the result gives the descriptor's device and inode
 * (TL_OS_EOTHER otherwise). Checking where a file lies through this is free
 * of races: the answer is about the file being read, not the one a path
 * names at some other moment.
 */
int tl__os_fd_realpath(int fd, const char *path, char **out);
/* The canonical absolute path (realpath) in a heap string. */
int tl__os_realpath(const char *path, char **out);
/* Current size of an open file (detects truncation under a mapping). */
int tl__os_fsize(int fd, uint64_t *size);
/* The identity of an open file: any write, truncation or replacement changes it. */
typedef struct tl__os_stamp {
    uint64_t dev, ino, size;
    int64_t mtime_ns, ctime_ns;
} tl__os_stamp;
int tl__os_fstamp(int fd, tl__os_stamp *out);
bool tl__os_stamp_equal(const tl__os_stamp *a, const tl__os_stamp *b);
int tl__os_close(int fd);
/* Is the path a directory? (false when it does not exist.) */
bool tl__os_is_dir(const char *path);
bool tl__os_exists(const char *path);

/* Names of a folder's entries (no "." / ".."), sorted; free with tl__os_listdir_free. */
int tl__os_listdir(const char *dir, char ***names, size_t *n);
void tl__os_listdir_free(char **names, size_t n);
/*
 * Small files. tl__os_read_small: a regular file whose size fstat tells (a model index, a
 * config), at most limit bytes (EFBIG beyond), into a NUL-terminated heap buffer; open, read and
 * allocation are fault-injected. tl__os_read_text: a /proc or /sys text file (whose size fstat
 * does not tell) into the caller's buffer of cap bytes, NUL-terminated, EFBIG when it does not
 * fit; it allocates nothing and is not fault-injected, because samplers call it from their own
 * threads, where an injected fault would land on a nondeterministic call.
 */
int tl__os_read_small(const char *path, uint64_t limit, char **buf, size_t *len);
int tl__os_read_text(const char *path, char *buf, size_t cap, size_t *len);

/* Read exactly len bytes at off; EIO-like errno on error, ENODATA on early EOF. */
int tl__os_pread_full(int fd, void *buf, size_t len, uint64_t off);
/* pwrite all of buf (EINTR retried); errno on failure (ENOSPC, EIO, ...). */
int tl__os_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
/* Write a string to standard error with write(2): no stdio, no locks (for last words). */
void tl__os_write_stderr(const char *s);
/*
 * A read-write temporary file in dir that has no name: O_TMPFILE, else
 * created and unlinked at once. Nothing remains on disk once it is closed or
 * the process dies.
 */
int tl__os_open_tmpfile(const char *dir, int *fd);
int tl__os_ftruncate(int fd, uint64_t size);
/* Map [off, off+len) of fd read-only and shared (off page aligned). */
int tl__os_map_shared_ro(int fd, uint64_t off, uint64_t len, void **addr);

/* Map a whole file MAP_PRIVATE (read-only, or copy-on-write writable). */
int tl__os_map(int fd, uint64_t size, bool writable, bool populate, void **addr);
int tl__os_unmap(void *addr, uint64_t size);
/*
 * Give [off, off+len) of a writable MAP_PRIVATE file mapping its file bytes
 * back: whole pages drop their private copies (MADV_DONTNEED, so no memory is
 * kept), partial pages at either end are read back from fd.
 */
int tl__os_restore_range(void *map, int fd, uint64_t off, uint64_t len);
/* madvise with one of these hints. */
typedef enum tl__os_advice {
    TL_OS_ADV_SEQUENTIAL = 1,
    TL_OS_ADV_WILLNEED,
    TL_OS_ADV_DONTNEED,
} tl__os_advice;
int tl__os_madvise(void *addr, uint64_t size, tl__os_advice advice);
/* posix_fadvise(POSIX_FADV_DONTNEED) over [off, off+len) (len 0 = to the end). */
int tl__os_fadvise_dontneed(int fd, uint64_t off, uint64_t len);
int tl__os_fadvise_willneed(int fd, uint64_t off, uint64_t len);
/* Pages of [addr, addr+size) resident in memory (mincore). */
int tl__os_mincore(const void *addr, uint64_t size, uint64_t *resident, uint64_t *total);
/* Page-cache residency of a file region without a mapping of the caller's (maps temporarily). */
int tl__os_file_residency(int fd, uint64_t size, uint64_t *resident, uint64_t *total);
size_t tl__os_page_size(void);

/* Heap allocation with fault injection (returns NULL on injected or real failure). */
void *tl__os_malloc(size_t n);
void *tl__os_calloc(size_t n, size_t m);
void *tl__os_realloc(void *p, size_t n);
char *tl__os_strdup(const char *s);
char *tl__os_strndup(const char *s, size_t n);
/*
 * Heap allocation without fault injection, for memory the work does not need
 * (a helper's state, a cache): its failure only makes the work slower, so the
 * fault tests, which expect every injected failure to fail the call, skip it.
 */
void *tl__os_calloc_optional(size_t n, size_t m);
void *tl__os_realloc_optional(void *p, size_t n);
/* align (a power of two, a multiple of sizeof(void *)) aligned heap memory, freed with free();
 * 0, EINVAL or ENOMEM (also when injected). */
int tl__os_aligned_alloc(size_t align, size_t n, void **out);

/* Monotonic time in seconds. */
double tl__os_now(void);

#endif
