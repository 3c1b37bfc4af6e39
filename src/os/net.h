/*
 * net.h — TCP client calls with deadlines (net.c). Functions return 0 or a
 * positive errno value (ETIMEDOUT when the deadline passed, ECONNRESET when
 * the peer closed); TL_OS_EHOST when a host name does not resolve.
 */
#ifndef TL_OS_NET_H
#define TL_OS_NET_H

#include <stddef.h>
#include <stdint.h>

#define TL_OS_EHOST 0x10010

struct addrinfo;
/* The TCP addresses of host:port (numeric port); free *res with freeaddrinfo. */
int tl__os_tcp_resolve(const char *host, int port, struct addrinfo **res);
/* Connect to host:port (numeric or a name) within timeout_ms; *fd is non-blocking, close-on-exec. */
int tl__os_tcp_connect(const char *host, int port, int timeout_ms, int *fd);
/* Send / receive exactly n bytes, each call within timeout_ms. */
int tl__os_send_all(int fd, const void *buf, size_t n, int timeout_ms);
int tl__os_recv_all(int fd, void *buf, size_t n, int timeout_ms);
/*
 * The bytes this process's open TCP connections to host:port carried, summed
 * (tcpstat.c): *sent acked by the peer, *received from it; *n_conn how many
 * connections were found. Counters start at each connection's start.
 */
int tl__os_tcp_peer_bytes(const char *host, int port, uint64_t *sent, uint64_t *received,
                          int *n_conn);
/*
 * Give every open TCP connection of this process to host:port send and
 * receive timeouts of timeout_ms (SO_SNDTIMEO, SO_RCVTIMEO): a blocking call
 * on them then fails instead of waiting forever. *n_conn: connections set.
 */
int tl__os_tcp_peer_timeout(const char *host, int port, int timeout_ms, int *n_conn);

#endif
