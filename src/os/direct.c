/*
 * direct.c — O_DIRECT opens and reads, and the io_uring queue behind
 * os/direct.h (compiled only with TL_HAVE_URING; otherwise ENOSYS).
 */
#include "os/direct.h"
#include "os/fault.h"
#include "os/hostmem.h"
#include "os/os.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef TL_HAVE_URING
#include <liburing.h>
#endif

int tl__os_open_direct(int same_as, const char *path, int *fd) {
    int e = tl__fault_hit(TL_FAULT_OPEN);
    if (e) return e;
    struct stat first, st;
    if (fstat(same_as, &first) != 0) return errno;
    /* O_NONBLOCK: a FIFO swapped in for the file cannot make the open wait */
    const int flags = O_RDONLY | O_CLOEXEC | O_DIRECT | O_NONBLOCK | O_NOCTTY;
    char self[40];
    snprintf(self, sizeof self, "/proc/self/fd/%d", same_as);
    int f = open(self, flags);
    if (f < 0 && (errno == ENOENT || errno == ENOTDIR)) f = open(path, flags); /* no /proc */
    if (f < 0) return errno;
    if (fstat(f, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(f);
        return EINVAL;
    }
    if (st.st_dev != first.st_dev || st.st_ino != first.st_ino) {
        close(f);
        return TL_OS_EOTHER;
    }
    int fl = fcntl(f, F_GETFL);
    if (fl >= 0) fcntl(f, F_SETFL, fl & ~O_NONBLOCK);
    /* some filesystems accept the flag and refuse the read: probe one block */
    if (st.st_size > 0) {
        void *buf;
        uint64_t len;
        e = tl__os_anon_alloc(TL_OS_DIRECT_ALIGN, TL_OS_PAGES_KERNEL, &buf, &len);
        if (e) {
            close(f);
            return e;
        }
        ssize_t r = pread(f, buf, TL_OS_DIRECT_ALIGN, 0);
        e = r < 0 ? errno : 0;
        tl__os_anon_free(buf, len);
        if (e) {
            close(f);
            return e;
        }
    }
    *fd = f;
    return 0;
}

int tl__os_pread_direct(int fd, void *buf, size_t len, uint64_t off, size_t *got) {
    char *p = buf;
    size_t done = 0;
    while (done < len) {
        int e = tl__fault_hit(TL_FAULT_READ);
        if (e) return e;
        ssize_t n = pread(fd, p + done, len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (n == 0) break;
        done += (size_t)n;
        if (done % TL_OS_DIRECT_ALIGN) break; /* a short, unaligned read only happens at EOF */
    }
    if (done) tl__fault_corrupt(buf, done);
    *got = done;
    return 0;
}

#ifdef TL_HAVE_URING
struct tl__os_uring {
    struct io_uring ring;
    /* a read chosen by TL_FAULT_CORRUPT: its bytes are inverted when it completes */
    bool corrupt;
    uint64_t corrupt_tag;
    void *corrupt_buf;
};

int tl__os_uring_open(unsigned depth, tl__os_uring **out) {
    int e = tl__fault_hit(TL_FAULT_ALLOC);
    if (e) return e;
    tl__os_uring *u = calloc(1, sizeof *u);
    if (!u) return ENOMEM;
    int r = io_uring_queue_init(depth ? depth : 4, &u->ring, 0);
    if (r < 0) {
        free(u);
        return -r;
    }
    *out = u;
    return 0;
}

void tl__os_uring_close(tl__os_uring *u) {
    if (!u) return;
    io_uring_queue_exit(&u->ring);
    free(u);
}

int tl__os_uring_read(tl__os_uring *u, int fd, void *buf, size_t len, uint64_t off, uint64_t tag) {
    int e = tl__fault_hit(TL_FAULT_READ);
    if (e) return e;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (!sqe) return EBUSY;
    io_uring_prep_read(sqe, fd, buf, (unsigned)len, off);
    io_uring_sqe_set_data64(sqe, tag);
    if (!u->corrupt && tl__fault_hit(TL_FAULT_CORRUPT)) {
        u->corrupt = true;
        u->corrupt_tag = tag;
        u->corrupt_buf = buf;
    }
    return 0;
}

int tl__os_uring_submit(tl__os_uring *u) {
    int r = io_uring_submit(&u->ring);
    return r < 0 ? -r : 0;
}

int tl__os_uring_wait(tl__os_uring *u, uint64_t *tag, int64_t *res) {
    struct io_uring_cqe *cqe;
    int r;
    do {
        r = io_uring_wait_cqe(&u->ring, &cqe);
    } while (r == -EINTR);
    if (r < 0) return -r;
    *tag = io_uring_cqe_get_data64(cqe);
    *res = cqe->res;
    io_uring_cqe_seen(&u->ring, cqe);
    if (u->corrupt && *tag == u->corrupt_tag && *res > 0) {
        u->corrupt = false;
        unsigned char *p = u->corrupt_buf;
        for (int64_t i = 0; i < *res; i++)
            p[i] = (unsigned char)~p[i];
    }
    return 0;
}
#else
int tl__os_uring_open(unsigned depth, tl__os_uring **out) {
    (void)depth;
    (void)out;
    return ENOSYS;
}
void tl__os_uring_close(tl__os_uring *u) {
    (void)u;
}
int tl__os_uring_read(tl__os_uring *u, int fd, void *buf, size_t len, uint64_t off, uint64_t tag) {
    (void)u, (void)fd, (void)buf, (void)len, (void)off, (void)tag;
    return ENOSYS;
}
int tl__os_uring_submit(tl__os_uring *u) {
    (void)u;
    return ENOSYS;
}
int tl__os_uring_wait(tl__os_uring *u, uint64_t *tag, int64_t *res) {
    (void)u, (void)tag, (void)res;
    return ENOSYS;
}
#endif
