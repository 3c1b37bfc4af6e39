/*
 * tcpstat.c — the bytes this process's TCP connections to one peer carried
 * (the kernel's tcp_info: bytes acked by the peer, bytes received), found by
 * walking the process's open sockets. Lets tierload count what crossed a
 * link on connections that another library (ggml's RPC client) owns, and
 * the same walk to give such connections send and receive timeouts.
 */
#include "os/net.h"

#include <dirent.h>
#include <errno.h>
#include <linux/tcp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

/* Same address and port (IPv4 or IPv6). */
static int same_peer(const struct sockaddr_storage *a, const struct sockaddr *b) {
    if (a->ss_family != b->sa_family) return 0;
    if (b->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (b->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr);
    }
    return 0;
}

/* Call fn on every open socket of this process connected to host:port. */
static int each_peer_socket(const char *host, int port, void (*fn)(int fd, void *arg), void *arg) {
    struct addrinfo *res = NULL;
    int g = tl__os_tcp_resolve(host, port, &res);
    if (g != 0) return g;
    DIR *dir = opendir("/proc/self/fd");
    if (!dir) {
        int e = errno;
        freeaddrinfo(res);
        return e;
    }
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        char *end;
        long fd = strtol(de->d_name, &end, 10);
        if (*end || end == de->d_name || fd == dirfd(dir)) continue;
        struct sockaddr_storage peer;
        socklen_t pl = sizeof peer;
        if (getpeername((int)fd, (struct sockaddr *)&peer, &pl) != 0) continue;
        int match = 0;
        for (struct addrinfo *a = res; a && !match; a = a->ai_next)
            match = same_peer(&peer, a->ai_addr);
        if (match) fn((int)fd, arg);
    }
    closedir(dir);
    freeaddrinfo(res);
    return 0;
}

typedef struct counts {
    uint64_t sent, received;
    int n;
} counts;

static void add_counts(int fd, void *arg) {
    counts *c = arg;
    struct tcp_info ti;
    socklen_t tl = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) != 0) return;
    c->sent += ti.tcpi_bytes_acked;
    c->received += ti.tcpi_bytes_received;
    c->n++;
}

int tl__os_tcp_peer_bytes(const char *host, int port, uint64_t *sent, uint64_t *received,
                          int *n_conn) {
    counts c = {0, 0, 0};
    int e = each_peer_socket(host, port, add_counts, &c);
    *sent = c.sent;
    *received = c.received;
    *n_conn = c.n;
    return e;
}

typedef struct timeouts {
    int ms, n;
} timeouts;

static void set_timeouts(int fd, void *arg) {
    timeouts *t = arg;
    struct timeval tv = {t->ms / 1000, (t->ms % 1000) * 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0 &&
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0)
        t->n++;
}

int tl__os_tcp_peer_timeout(const char *host, int port, int timeout_ms, int *n_conn) {
    timeouts t = {timeout_ms, 0};
    int e = each_peer_socket(host, port, set_timeouts, &t);
    *n_conn = t.n;
    return e;
}
