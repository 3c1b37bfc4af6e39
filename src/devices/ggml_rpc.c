/*
 * ggml_rpc.c — the devices of ggml RPC servers (ggml-rpc-server) as tierload
 * devices: device memory and compute in another process, reached over TCP.
 *
 * ggml's RPC client aborts the process when a server cannot be reached or
 * speaks another protocol, so every endpoint is first probed here: a TCP
 * connection and the protocol's HELLO exchange, each with a deadline, so an
 * endpoint that is malformed, closed, silent or of another version is a clear
 * error naming HOST:PORT before ggml sees it. Then ggml's RPC registry adds the
 * server and each of its devices becomes "rpcS:D" (server S in the order
 * added in this process, device D on it), described by its endpoint.
 *
 * An endpoint may carry its link's bandwidth, "HOST:PORT@BW"; otherwise the
 * link is measured once the server is added: a few one-byte reads give its
 * round trip, 4 MiB written and read back its bandwidth (tl_device_link).
 *
 * The HELLO exchange (ggml-rpc's wire format): the client sends the command
 * byte 14, a little-endian u64 request size and the request (24 bytes of
 * connection capabilities, zero: plain TCP); the server answers a u64 size
 * and {major, minor, patch, pad, 24 capability bytes}.
 */
#include "core/env.h"
#include "core/error.h"
#include "devices/devices.h"
#include "devices/ggml_dl.h"
#include "os/net.h"
#include "os/os.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RPC_CMD_HELLO 14
#define RPC_CAPS 24
#define RPC_PROTO_MAJOR 7 /* the protocol of the ggml release tierload is built against */
#define RPC_PROTO_MINOR 0
#define PROBE_TIMEOUT_MS 5000
#define MEASURE_BYTES (4u << 20) /* written and read back to time a link */
#define MEASURE_PINGS 5          /* one-byte reads; the shortest is the round trip */
#define MAX_ENDPOINTS 64
#define IO_TIMEOUT_S 30 /* default silence allowed mid-operation (TIERLOAD_RPC_TIMEOUT) */

/* One parsed --rpc item. */
typedef struct rpc_ep {
    char ep[300]; /* HOST:PORT as given, without @BW */
    char host[256];
    int port;
    double bw; /* bytes/s given with @BW; 0: measure */
} rpc_ep;

static pthread_mutex_t rpc_lock = PTHREAD_MUTEX_INITIALIZER;
static char **rpc_added; /* endpoints added, in order: their index is S in "rpcS:D" */
static size_t rpc_n;
/* per server S: its connection's byte counters when it was added (after the measurement) */
static uint64_t *rpc_base_sent, *rpc_base_recv;
static void **rpc_keep; /* per server S: the small buffer that keeps ggml's connection open */

/* Split "HOST:PORT" (HOST may be [v6]); false when malformed. */
static bool split_endpoint(const char *ep, char *host, size_t hcap, int *port) {
    const char *colon = strrchr(ep, ':');
    if (!colon || colon == ep || !colon[1]) return false;
    size_t hl = (size_t)(colon - ep);
    const char *h = ep;
    if (h[0] == '[') {
        if (hl < 3 || h[hl - 1] != ']') return false;
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= hcap) return false;
    for (size_t i = 0; i < hl; i++)
        if (isspace((unsigned char)h[i]) || h[i] == ',' || h[i] == '/') return false;
    long v = 0;
    for (const char *p = colon + 1; *p; p++) {
        if (!isdigit((unsigned char)*p) || v > 65535) return false;
        v = v * 10 + (*p - '0');
    }
    if (v < 1 || v > 65535) return false;
    memcpy(host, h, hl);
    host[hl] = 0;
    *port = (int)v;
    return true;
}

/* Connect and exchange HELLO; a clear error naming ep otherwise. */
static tl_status probe(const char *ep, const char *host, int port) {
    int fd;
    int e = tl__os_tcp_connect(host, port, PROBE_TIMEOUT_MS, &fd);
    if (e == TL_OS_EHOST)
        return tl__err(TL_ERR_DEVICE, "RPC server %s: host '%s' does not resolve", ep, host);
    if (e)
        return tl__err(TL_ERR_DEVICE, "RPC server %s: cannot connect: %s", ep,
                       e == ETIMEDOUT ? "no answer within 5 s" : strerror(e));
    unsigned char req[1 + 8 + RPC_CAPS] = {RPC_CMD_HELLO};
    uint64_t len = RPC_CAPS;
    for (int i = 0; i < 8; i++)
        req[1 + i] = (unsigned char)(len >> (8 * i));
    unsigned char rsp[8 + 4 + RPC_CAPS];
    e = tl__os_send_all(fd, req, sizeof req, PROBE_TIMEOUT_MS);
    if (!e) e = tl__os_recv_all(fd, rsp, 8, PROBE_TIMEOUT_MS);
    uint64_t got = 0;
    for (int i = 0; !e && i < 8; i++)
        got |= (uint64_t)rsp[i] << (8 * i);
    if (!e && got != 4 + RPC_CAPS) {
        tl__os_close(fd);
        return tl__err(TL_ERR_DEVICE,
                       "RPC server %s: its handshake answer is %llu bytes, not %d: not a ggml RPC "
                       "server of protocol %d.x",
                       ep, (unsigned long long)got, 4 + RPC_CAPS, RPC_PROTO_MAJOR);
    }
    if (!e) e = tl__os_recv_all(fd, rsp + 8, 4 + RPC_CAPS, PROBE_TIMEOUT_MS);
    tl__os_close(fd);
    if (e == ECONNRESET)
        return tl__err(TL_ERR_DEVICE,
                       "RPC server %s: closed the connection during the handshake (a ggml RPC "
                       "server of another protocol version than %d.%d?)",
                       ep, RPC_PROTO_MAJOR, RPC_PROTO_MINOR);
    if (e)
        return tl__err(TL_ERR_DEVICE, "RPC server %s: handshake failed: %s", ep,
                       e == ETIMEDOUT ? "no answer within 5 s" : strerror(e));
    if (rsp[8] != RPC_PROTO_MAJOR || rsp[9] > RPC_PROTO_MINOR)
        return tl__err(TL_ERR_UNSUPPORTED,
                       "RPC server %s speaks RPC protocol %u.%u.%u; tierload's ggml speaks %d.%d",
                       ep, rsp[8], rsp[9], rsp[10], RPC_PROTO_MAJOR, RPC_PROTO_MINOR);
    return TL_OK;
}

/*
 * A link bandwidth: a size in bytes per second ("1.25G", tl_parse_bytes) or
 * NUMBER[k|m|g|t]bit, bits per second with a decimal prefix ("10gbit").
 */
static bool parse_bw(const char *s, double *out) {
    size_t n = strlen(s);
    if (n > 3 && !strcasecmp(s + n - 3, "bit")) {
        char *end;
        errno = 0;
        double v = strtod(s, &end);
        if (errno || end == s || !(v > 0)) return false;
        double mul = 1;
        size_t rest = (size_t)(s + n - 3 - end);
        if (rest == 1) {
            switch (tolower((unsigned char)*end)) {
            case 'k': mul = 1e3; break;
            case 'm': mul = 1e6; break;
            case 'g': mul = 1e9; break;
            case 't': mul = 1e12; break;
            default: return false;
            }
        } else if (rest != 0) {
            return false;
        }
        *out = v * mul / 8;
        return true;
    }
    uint64_t b;
    if (tl_parse_bytes(s, &b, NULL) != TL_OK || b == 0) return false;
    *out = (double)b;
    return true;
}

/*
 * Time the link to a new server through its device d: the shortest of a few
 * one-byte reads is the round trip, MEASURE_BYTES written and read back less
 * two round trips the bandwidth (unless given). The buffer is given back to
 * the server after.
 */
static tl_status measure(tl_device *d, const char *ep, double given_bw, double *bw, double *lat) {
    tl_devptr p;
    tl_status st = tl_device_alloc(d, MEASURE_BYTES, &p);
    if (st) return tl__err_prefix(st, "RPC server %s: measuring its link", ep);
    unsigned char *buf = tl__os_malloc(MEASURE_BYTES);
    if (!buf) {
        tl_device_free(d, p);
        return tl__err(TL_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < MEASURE_BYTES; i++) /* not all zero: nothing on the way may shrink it */
        buf[i] = (unsigned char)(i * 2654435761u >> 13);
    double best = 1e30;
    for (int i = 0; !st && i < MEASURE_PINGS; i++) {
        double t0 = tl__os_now();
        st = tl_device_copy_from(d, buf, p, 1);
        double t = tl__os_now() - t0;
        if (t < best) best = t;
    }
    *lat = best;
    *bw = given_bw;
    if (!st && given_bw <= 0) {
        double t0 = tl__os_now();
        st = tl_device_copy_to(d, p, buf, MEASURE_BYTES);
        if (!st) st = tl_device_copy_from(d, buf, p, MEASURE_BYTES);
        double t = tl__os_now() - t0 - 2 * best;
        if (t < 1e-6) t = 1e-6;
        *bw = 2.0 * MEASURE_BYTES / t;
    }
    free(buf);
    tl_device_free(d, p);
    tl__ggml_dev_trim(d);
    return st;
}

/* The silence allowed mid-operation, in ms: TIERLOAD_RPC_TIMEOUT seconds, else IO_TIMEOUT_S. */
static int io_timeout_ms(void) {
    const char *v = tl__env_get(TL_ENV_RPC_TIMEOUT);
    char *end;
    double s = v ? strtod(v, &end) : 0;
    if (!v || *end || !(s > 0) || s > 86400) s = IO_TIMEOUT_S;
    return (int)(s * 1000 + 0.5);
}

/* Add one probed server's devices (rpc_lock held). */
static tl_status add_one(const rpc_ep *e, size_t *added) {
    const char *ep = e->ep;
    for (size_t i = 0; i < rpc_n; i++)
        if (!strcmp(rpc_added[i], ep)) return TL_OK; /* already added in this process */
    const tl__ggml_api *G = tl__ggml_api_get();
    void *reg = G->reg_by_name("RPC");
    void *fn = reg ? G->reg_get_proc_address(reg, "ggml_backend_rpc_add_server") : NULL;
    if (!fn)
        return tl__err(TL_ERR_UNSUPPORTED,
                       "RPC server %s: the ggml libraries loaded have no RPC backend (build ggml "
                       "with it: make ggml)",
                       ep);
    void *(*add_server)(const char *);
    memcpy(&add_server, &fn, sizeof fn);
    void *sreg = add_server(ep);
    size_t nd = sreg ? G->reg_dev_count(sreg) : 0;
    if (nd == 0) return tl__err(TL_ERR_DEVICE, "RPC server %s reports no device", ep);
    char **na = tl__os_realloc(rpc_added, (rpc_n + 1) * sizeof *na);
    if (!na) return tl__err(TL_ERR_NOMEM, "out of memory");
    rpc_added = na;
    uint64_t *bs = tl__os_realloc(rpc_base_sent, (rpc_n + 1) * sizeof *bs);
    if (!bs) return tl__err(TL_ERR_NOMEM, "out of memory");
    rpc_base_sent = bs;
    uint64_t *br = tl__os_realloc(rpc_base_recv, (rpc_n + 1) * sizeof *br);
    if (!br) return tl__err(TL_ERR_NOMEM, "out of memory");
    rpc_base_recv = br;
    void **kp = tl__os_realloc(rpc_keep, (rpc_n + 1) * sizeof *kp);
    if (!kp) return tl__err(TL_ERR_NOMEM, "out of memory");
    rpc_keep = kp;
    char *cp = tl__os_strdup(ep);
    if (!cp) return tl__err(TL_ERR_NOMEM, "out of memory");
    size_t server = rpc_n;
    rpc_added[rpc_n++] = cp;
    /*
     * ggml's client keeps its connection to a server only while a buffer or
     * backend of it lives: a small buffer held for the process keeps it open,
     * so the one connection carries every operation (its timeout and byte
     * counters below stay valid).
     */
    void *keep = G->buft_alloc_buffer(G->dev_buffer_type(G->reg_dev_get(sreg, 0)), 64);
    if (!keep) return tl__err(TL_ERR_DEVICE, "RPC server %s: cannot allocate a buffer on it", ep);
    rpc_keep[server] = keep; /* held for the process's life */
    double bw = 0, lat = 0;
    bool timed = false;
    for (size_t i = 0; i < nd; i++) {
        char name[TL_DEVICE_NAME_MAX], desc[TL_DEVICE_DESC_MAX];
        snprintf(name, sizeof name, "rpc%zu:%zu", server, i);
        snprintf(desc, sizeof desc, "ggml RPC server %.50s, device %zu", ep, i);
        if (tl__ggml_registered(name)) continue;
        tl_device *d = NULL;
        tl_status st = tl__ggml_dev_make(G->reg_dev_get(sreg, i), name, desc, true, &d);
        if (st == TL_OK && !timed) { /* one link per server: timed on its first device */
            st = measure(d, ep, e->bw, &bw, &lat);
            timed = true;
        }
        if (st == TL_OK) st = tl__ggml_dev_set_link(d, bw, lat, e->bw <= 0);
        if (st == TL_OK) st = tl_device_register(d);
        tl_device_release(d);
        if (st) return st;
        (*added)++;
    }
    int nc;
    if (tl__os_tcp_peer_bytes(e->host, e->port, &rpc_base_sent[server], &rpc_base_recv[server], &nc))
        rpc_base_sent[server] = rpc_base_recv[server] = 0;
    /*
     * ggml's client blocks on its socket without a deadline: a server that
     * stops answering would hang the process. With a timeout the call fails,
     * ggml aborts, and the abort callback names the server.
     */
    int ms = io_timeout_ms();
    if (tl__os_tcp_peer_timeout(e->host, e->port, ms, &nc) || nc == 0)
        return tl__err(TL_ERR_DEVICE,
                       "RPC server %s: cannot find ggml's connection to it to give it a timeout",
                       ep);
    return TL_OK;
}

tl_status tl_device_ggml_rpc_add(const char *endpoints, size_t *n_added) {
    if (n_added) *n_added = 0;
    if (!endpoints || !*endpoints)
        return tl__err(TL_ERR_INVALID_ARG, "--rpc: no endpoint (HOST:PORT[@BW][,...])");
    /* parse everything first: a bad or repeated endpoint adds nothing */
    char *list = tl__os_strdup(endpoints);
    rpc_ep *eps = tl__os_calloc(MAX_ENDPOINTS, sizeof *eps);
    if (!list || !eps) {
        free(list);
        free(eps);
        return tl__err(TL_ERR_NOMEM, "out of memory");
    }
    size_t n = 0;
    tl_status st = TL_OK;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok && !st;
         tok = strtok_r(NULL, ",", &save)) {
        if (n == MAX_ENDPOINTS) {
            st = tl__err(TL_ERR_INVALID_ARG, "--rpc: more than %d endpoints", MAX_ENDPOINTS);
            break;
        }
        rpc_ep *e = &eps[n];
        char *at = strchr(tok, '@');
        if (at) *at = 0;
        if (strlen(tok) >= sizeof e->ep || !split_endpoint(tok, e->host, sizeof e->host, &e->port))
            st = tl__err(TL_ERR_INVALID_ARG, "--rpc: '%s' is not HOST:PORT (port 1..65535)", tok);
        else if (at && !parse_bw(at + 1, &e->bw))
            st = tl__err(TL_ERR_INVALID_ARG,
                         "--rpc: %s: bad link bandwidth '%s' (bytes/s as 1.25G, or bits/s as "
                         "10gbit)",
                         tok, at + 1);
        for (size_t i = 0; !st && i < n; i++)
            if (!strcasecmp(eps[i].ep, tok))
                st = tl__err(TL_ERR_INVALID_ARG, "--rpc: endpoint %s is given twice", tok);
        if (!st) {
            snprintf(e->ep, sizeof e->ep, "%s", tok);
            n++;
        }
    }
    if (!st && n == 0)
        st = tl__err(TL_ERR_INVALID_ARG, "--rpc: no endpoint (HOST:PORT[@BW][,...])");
    for (size_t i = 0; !st && i < n; i++) {
        /* one added before is connected through ggml already (a server serves one client) */
        pthread_mutex_lock(&rpc_lock);
        bool known = false;
        for (size_t k = 0; k < rpc_n && !known; k++)
            known = !strcasecmp(rpc_added[k], eps[i].ep);
        pthread_mutex_unlock(&rpc_lock);
        if (!known) st = probe(eps[i].ep, eps[i].host, eps[i].port);
    }
    if (!st) st = tl__ggml_load(NULL);
    size_t added = 0;
    if (!st) {
        pthread_mutex_lock(&rpc_lock);
        for (size_t i = 0; !st && i < n; i++)
            st = add_one(&eps[i], &added);
        pthread_mutex_unlock(&rpc_lock);
    }
    free(list);
    free(eps);
    if (n_added) *n_added = added;
    return st;
}

tl_status tl_device_link_traffic(tl_device *d, uint64_t *sent, uint64_t *received,
                                 uint64_t *written) {
    if (!d) return tl__err(TL_ERR_INVALID_ARG, "tl_device_link_traffic: NULL device");
    const char *name = tl_device_name(d);
    size_t server, dev;
    char tail;
    if (tl_device_link(d, NULL, NULL, NULL) != TL_OK ||
        sscanf(name, "rpc%zu:%zu%c", &server, &dev, &tail) != 2)
        return tl__err(TL_ERR_NOT_FOUND, "device '%s' is not an RPC server's device", name);
    pthread_mutex_lock(&rpc_lock);
    if (server >= rpc_n) {
        pthread_mutex_unlock(&rpc_lock);
        return tl__err(TL_ERR_NOT_FOUND, "device '%s': no such RPC server", name);
    }
    char host[256];
    int port;
    split_endpoint(rpc_added[server], host, sizeof host, &port);
    uint64_t s0 = rpc_base_sent[server], r0 = rpc_base_recv[server], s1, r1;
    pthread_mutex_unlock(&rpc_lock);
    int nc;
    int e = tl__os_tcp_peer_bytes(host, port, &s1, &r1, &nc);
    if (e || nc == 0)
        return tl__err(TL_ERR_DEVICE, "device '%s': no connection to its server found%s%s", name,
                       e ? ": " : "", e ? strerror(e) : "");
    if (sent) *sent = s1 > s0 ? s1 - s0 : 0;
    if (received) *received = r1 > r0 ? r1 - r0 : 0;
    if (written) *written = tl__ggml_dev_written(d);
    return TL_OK;
}
