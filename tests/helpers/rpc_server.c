/*
 * rpc_server.c — ggml-rpc-server processes for tests (see rpc_server.h).
 */
#include "rpc_server.h"

#include "tierload.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *tu_ggml_root(char *why, size_t why_n) {
    const char *r = getenv("TL_GGML_ROOT");
    if (!r || !*r) {
        snprintf(why, why_n, "ggml not built: TL_GGML_ROOT is not set (run make ggml)");
        return NULL;
    }
    char p[4200];
    struct stat st;
    snprintf(p, sizeof p, "%s/lib/libggml.so", r);
    if (stat(p, &st) != 0) {
        snprintf(why, why_n, "ggml not built: no %s (run make ggml)", p);
        return NULL;
    }
    return r;
}

void tu_ggml_discover(void) {
    char why[4300];
    const char *root = tu_ggml_root(why, sizeof why);
    if (!root) return;
    char lib[4200];
    snprintf(lib, sizeof lib, "%s/lib", root);
    if (tl_device_ggml_discover(lib, NULL) != TL_OK)
        fprintf(stderr, "ggml from %s does not load: %s\n", lib, tl_last_error());
}

int tu_free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof a;
    int port = -1;
    if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(s, (struct sockaddr *)&a, &l) == 0)
        port = ntohs(a.sin_port);
    if (s >= 0) close(s);
    return port;
}

static bool accepts(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    if (s >= 0) close(s);
    return ok;
}

#define MAX_SERVERS 16
static pid_t live[MAX_SERVERS];

static void kill_all(void) {
    for (int i = 0; i < MAX_SERVERS; i++)
        if (live[i] > 0) {
            kill(live[i], SIGKILL);
            waitpid(live[i], NULL, 0);
            live[i] = 0;
        }
}

bool tu_rpc_start(tu_rpc *r, char *why, size_t why_n) {
    return tu_rpc_start_cached(r, NULL, why, why_n);
}

bool tu_rpc_start_cached(tu_rpc *r, const char *cache_dir, char *why, size_t why_n) {
    memset(r, 0, sizeof *r);
    const char *root = tu_ggml_root(why, why_n);
    if (!root) return false;
    char bin[4200], lib[4200];
    snprintf(bin, sizeof bin, "%s/bin/ggml-rpc-server", root);
    snprintf(lib, sizeof lib, "%s/lib", root);
    if (access(bin, X_OK) != 0) {
        snprintf(why, why_n, "ggml not built: no %s (run make ggml)", bin);
        return false;
    }
    static bool hooked;
    if (!hooked) {
        atexit(kill_all);
        hooked = true;
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        int port = tu_free_port();
        char ps[16];
        snprintf(ps, sizeof ps, "%d", port);
        pid_t pid = fork();
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            setenv("LD_LIBRARY_PATH", lib, 1);
            int null = open("/dev/null", 1);
            if (null >= 0) {
                dup2(null, 1);
                dup2(null, 2);
            }
            if (cache_dir) {
                setenv("LLAMA_CACHE", cache_dir, 1);
                execl(bin, bin, "-H", "127.0.0.1", "-p", ps, "-t", "1", "-c", (char *)NULL);
            }
            execl(bin, bin, "-H", "127.0.0.1", "-p", ps, "-t", "1", (char *)NULL);
            _exit(127);
        }
        if (pid < 0) break;
        for (int i = 0; i < MAX_SERVERS; i++)
            if (live[i] <= 0) {
                live[i] = pid;
                break;
            }
        for (int i = 0; i < 200; i++) { /* up to 20 s on a busy machine */
            if (accepts(port)) {
                r->pid = pid;
                r->port = port;
                snprintf(r->endpoint, sizeof r->endpoint, "127.0.0.1:%d", port);
                return true;
            }
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) break; /* died: port taken? try another */
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        r->pid = pid;
        tu_rpc_stop(r);
    }
    snprintf(why, why_n, "ggml-rpc-server did not start on 127.0.0.1");
    return false;
}

void tu_rpc_stop(tu_rpc *r) {
    if (r->pid > 0) {
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
        for (int i = 0; i < MAX_SERVERS; i++)
            if (live[i] == r->pid) live[i] = 0;
    }
    r->pid = 0;
}
