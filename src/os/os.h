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
typedef enum tl_os_kind {
    TL_OS_MISSING = 0,
    TL_OS_REGULAR,
    TL_OS_DIR,
    TL_OS_FIFO,
    TL_OS_CHARDEV,
    TL_OS_BLOCKDEV,
    TL_OS_SOCKET,
    TL_OS_OTHER,
} tl_os_kind;
tl_os_kind tl_os_kind_of(const char *path);
/* "a FIFO (named pipe)", "a character device", ... (with the article). */
const char *tl_os_kind_name(tl_os_kind k);

/*
 * Errors of tl_os_open_ro beyond errno values (positive, above any errno):
 * the path is not a regular file (tl_os_kind_of says what it is), or it is a
 * regular file whose size is 0 although it reads bytes (a /proc or /sys
 * pseudo-file: no size to map).
 */
#define TL_OS_ENOTREG 0x10001
#define TL_OS_ENOSIZE 0x10002

/*
 * Open a regular file read-only (O_CLOEXEC). Never blocks and never opens
 * anything but a regular file: the path is checked with stat before the open
 * and with fstat after it, and the open is O_NONBLOCK (a FIFO swapped in
 * between cannot make it wait for a writer). Directories give EISDIR, other
 * non-regular files TL_OS_ENOTREG, pseudo-files TL_OS_ENOSIZE.
 */
int tl_os_open_ro(const char *path, int *fd, uint64_t *size);
/* Do two open descriptors name the same file (st_dev and st_ino)? */
bool tl_os_same_file(int fd1, int fd2);
/* The canonical absolute path (realpath) in a heap string. */
int tl_os_realpath(const char *path, char **out);
/* Current size of an open file (detects truncation under a mapping). */
int tl_os_fsize(int fd, uint64_t *size);
int tl_os_close(int fd);
/* Is the path a directory? (false when it does not exist.) */
bool tl_os_is_dir(const char *path);
bool tl_os_exists(const char *path);

/* Names of a folder's entries (no "." / ".."), sorted; free with tl_os_listdir_free. */
int tl_os_listdir(const char *dir, char ***names, size_t *n);
void tl_os_listdir_free(char **names, size_t n);
/* Read a whole small file (at most limit bytes; EFBIG beyond) into a NUL-terminated heap buffer. */
int tl_os_read_small(const char *path, uint64_t limit, char **buf, size_t *len);

/* Read exactly len bytes at off; EIO-like errno on error, ENODATA on early EOF. */
int tl_os_pread_full(int fd, void *buf, size_t len, uint64_t off);

/* Map a whole file MAP_PRIVATE (read-only, or copy-on-write writable). */
int tl_os_map(int fd, uint64_t size, bool writable, bool populate, void **addr);
int tl_os_unmap(void *addr, uint64_t size);
/* madvise: one of the TL_MAP_* hints (SEQUENTIAL, WILLNEED, DONTNEED). */
int tl_os_madvise(void *addr, uint64_t size, unsigned tl_map_flag);
/* posix_fadvise(POSIX_FADV_DONTNEED) over [off, off+len) (len 0 = to the end). */
int tl_os_fadvise_dontneed(int fd, uint64_t off, uint64_t len);
int tl_os_fadvise_willneed(int fd, uint64_t off, uint64_t len);
/* Pages of [addr, addr+size) resident in memory (mincore). */
int tl_os_mincore(const void *addr, uint64_t size, uint64_t *resident, uint64_t *total);
/* Page-cache residency of a file region without a mapping of the caller's (maps temporarily). */
int tl_os_file_residency(int fd, uint64_t size, uint64_t *resident, uint64_t *total);
size_t tl_os_page_size(void);

/* Heap allocation with fault injection (returns NULL on injected or real failure). */
void *tl_os_malloc(size_t n);
void *tl_os_calloc(size_t n, size_t m);
void *tl_os_realloc(void *p, size_t n);
char *tl_os_strdup(const char *s);
char *tl_os_strndup(const char *s, size_t n);

/* Monotonic time in seconds. */
double tl_os_now(void);

#endif
