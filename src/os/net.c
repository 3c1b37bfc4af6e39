/*
 * net.c — the few socket calls tierload makes: a TCP connection to a server
 * it was told about, with a deadline, and whole-buffer sends and receives
 * with the same deadline. tierload never listens.
 */
#include "os/net.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until fd is ready for ev or the deadline passes (ETIMEDOUT). */
static int wait_fd(int fd, short ev, int64_t deadline) {
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0) return ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = ev};
        int r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
        if (r > 0) return 0;
        if (r < 0 && errno != EINTR) return errno;
    }
}

int tl__os_tcp_resolve(const char *host, int port, struct addrinfo **res) {
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    *res = NULL;
    int g = getaddrinfo(host, ps, &hints, res);
    if (g != 0) return g == EAI_SYSTEM ? errno : TL_OS_EHOST;
    return 0;
}

int tl__os_tcp_connect(const char *host, int port, int timeout_ms, int *fd) {
    *fd = -1;
    struct addrinfo *res = NULL;
    int g = tl__os_tcp_resolve(host, port, &res);
    if (g != 0) return g;
    int64_t deadline = now_ms() + timeout_ms;
    int err = ECONNREFUSED;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int s = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (s < 0) {
            err = errno;
            continue;
        }
        int r = connect(s, a->ai_addr, a->ai_addrlen);
        if (r != 0 && errno == EINPROGRESS) {
            r = wait_fd(s, POLLOUT, deadline);
            if (r == 0) {
                int so = 0;
                socklen_t sl = sizeof so;
                getsockopt(s, SOL_SOCKET, SO_ERROR, &so, &sl);
                r = so;
            }
            err = r;
        } else if (r != 0) {
            err = errno;
        } else {
            err = 0;
        }
        if (err == 0) {
            int one = 1;
            setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            *fd = s;
            break;
        }
        close(s);
    }
    freeaddrinfo(res);
    return err;
}

int tl__os_send_all(int fd, const void *buf, size_t n, int timeout_ms) {
    const char *p = buf;
    int64_t deadline = now_ms() + timeout_ms;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int e = wait_fd(fd, POLLOUT, deadline);
            if (e) return e;
            continue;
        }
        return w < 0 ? errno : EPIPE;
    }
    return 0;
}

int tl__os_recv_all(int fd, void *buf, size_t n, int timeout_ms) {
    char *p = buf;
    int64_t deadline = now_ms() + timeout_ms;
    while (n) {
        ssize_t r = recv(fd, p, n, 0);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
            continue;
        }
        if (r == 0) return ECONNRESET; /* the peer closed */
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int e = wait_fd(fd, POLLIN, deadline);
            if (e) return e;
            continue;
        }
        return errno;
    }
    return 0;
}
