/*
 * rpc_server.h — the tests' ggml source build (found, its devices registered) and
 * ggml-rpc-server processes for tests: started on 127.0.0.1 on
 * a free port from the ggml source build (TL_GGML_ROOT/bin), always stopped:
 * by tu_rpc_stop, at exit, and by the kernel if the test process dies
 * (PR_SET_PDEATHSIG).
 */
#ifndef TL_TEST_RPC_SERVER_H
#define TL_TEST_RPC_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* The ggml source build (TL_GGML_ROOT with lib/libggml.so); NULL with *why set when missing. */
const char *tu_ggml_root(char *why, size_t why_n);
/*
 * Register the devices of the ggml source build, if there is one (a main's
 * first call: without it the tests that need ggml skip, or fail under CI;
 * with it, a ggml that does not load is said on stderr and fails them).
 */
void tu_ggml_discover(void);
/* Skip the current test without the ggml source build, saying why (fail under CI=true). */
#define TU_NEED_GGML()                                                                             \
    do {                                                                                           \
        char why_[4300];                                                                           \
        if (!tu_ggml_root(why_, sizeof why_)) {                                                    \
            if (tu_in_ci()) fail_msg("%s", why_);                                                  \
            TU_SKIP("%s", why_);                                                                   \
        }                                                                                          \
    } while (0)

typedef struct tu_rpc {
    pid_t pid;
    int port;
    char endpoint[64]; /* "127.0.0.1:PORT" */
} tu_rpc;

/* Start a server; false with *why set. The server is ready (accepts) when this returns. */
bool tu_rpc_start(tu_rpc *r, char *why, size_t why_n);
/* The same with the server's tensor cache (-c) in cache_dir (LLAMA_CACHE; it adds rpc/). */
bool tu_rpc_start_cached(tu_rpc *r, const char *cache_dir, char *why, size_t why_n);
/* Stop it (SIGKILL, reaped); fine on a stopped one. */
void tu_rpc_stop(tu_rpc *r);
/* A TCP port on 127.0.0.1 that was free a moment ago. */
int tu_free_port(void);

#endif
