/*
 * direct.h — O_DIRECT file reads that bypass the page cache: opening with
 * O_DIRECT (refused by some filesystems, e.g. tmpfs: EINVAL), aligned
 * preads, and an io_uring queue (liburing, TL_HAVE_URING) for keeping
 * several reads in flight from one thread.
 *
 * Buffers, offsets and lengths given to direct reads must be multiples of
 * TL_OS_DIRECT_ALIGN.
 */
#ifndef TL_OS_DIRECT_H
#define TL_OS_DIRECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TL_OS_DIRECT_ALIGN 4096u

/*
 * A second, O_DIRECT descriptor for the file that `same_as` holds: reopened
 * through /proc/self/fd (the same inode whatever its path names now), or,
 * without /proc, by path and then checked to have same_as's device and inode
 * (TL_OS_EOTHER when the path names another file now). One aligned read is
 * probed; errno (EINVAL when the filesystem refuses O_DIRECT).
 */
int tl__os_open_direct(int same_as, const char *path, int *fd);
/* Aligned read of up to len bytes at off; *got < len only at end of file. */
int tl__os_pread_direct(int fd, void *buf, size_t len, uint64_t off, size_t *got);

/* An io_uring submission/completion queue; ENOSYS when built without liburing. */
typedef struct tl__os_uring tl__os_uring;
int tl__os_uring_open(unsigned depth, tl__os_uring **out);
void tl__os_uring_close(tl__os_uring *u);
/* Queue a read (not yet submitted); EBUSY when the queue is full. */
int tl__os_uring_read(tl__os_uring *u, int fd, void *buf, size_t len, uint64_t off, uint64_t tag);
/* Submit queued reads. */
int tl__os_uring_submit(tl__os_uring *u);
/* Wait for one completion: its tag and result (bytes, or -errno). */
int tl__os_uring_wait(tl__os_uring *u, uint64_t *tag, int64_t *res);

#endif
