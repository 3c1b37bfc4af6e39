/*
 * rpc_retry.c — `tierload run` over RPC servers survives losing one. ggml's
 * RPC client ends the process when a server dies or stops answering (after
 * TIERLOAD_RPC_TIMEOUT) in the middle of an operation, so the run goes on in
 * a child process: when the child ends because a server was lost (its abort
 * message names the server), the parent drops that endpoint from --rpc,
 * drops the placement the user gave (it may name the lost host's devices),
 * and runs again: the planner places the model on the devices that remain and
 * every weight is loaded again from the file, so the run's results are those
 * of a run that never lost a host. When no server is left the run goes on
 * on the host's own devices; when the remaining devices cannot hold what the
 * user asked, the child's planning error says so, after the line naming the
 * lost server.
 */
#include "cli/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define LOST_MAX 16 /* servers lost before the run gives up */

static int g_lost_fd = -1;

/* In the child: the abort message to stderr and to the parent, then the device status. */
static void child_abort(const char *message) {
    fputs("tierload: ", stderr);
    fputs(message, stderr);
    fputs("\n", stderr);
    if (g_lost_fd >= 0) {
        size_t n = strlen(message);
        while (n) {
            ssize_t w = write(g_lost_fd, message, n);
            if (w <= 0) break;
            message += w;
            n -= (size_t)w;
        }
    }
    _exit(cli_exit_code(TL_ERR_DEVICE));
}

/* The endpoint an abort message names ("... ggml RPC server HOST:PORT, device D ..."). */
static bool lost_endpoint(const char *msg, char *ep, size_t n) {
    const char *k = "ggml RPC server ";
    const char *p = strstr(msg, k);
    if (!p) return false;
    p += strlen(k);
    size_t len = strcspn(p, ", )");
    if (len == 0 || len >= n) return false;
    memcpy(ep, p, len);
    ep[len] = 0;
    return true;
}

/* list without the item whose HOST:PORT (before any @BW) is ep; "" when none is left. */
static void drop_endpoint(char *list, const char *ep) {
    char out[4096] = "";
    char *save = NULL;
    for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        size_t hp = strcspn(t, "@");
        if (hp == strlen(ep) && !strncmp(t, ep, hp)) continue;
        size_t o = strlen(out);
        snprintf(out + o, sizeof out - o, "%s%s", o ? "," : "", t);
    }
    strcpy(list, out);
}

/* Is argv[i] option opt ("--rpc" or "--rpc=...")? *val its value, *skip the arguments it takes. */
static bool is_opt(char **argv, int argc, int i, const char *opt, const char **val, int *skip) {
    size_t n = strlen(opt);
    if (strncmp(argv[i], opt, n) != 0) return false;
    if (argv[i][n] == '=') {
        *val = argv[i] + n + 1;
        *skip = 1;
        return true;
    }
    if (argv[i][n] != 0 || i + 1 >= argc) return false;
    *val = argv[i + 1];
    *skip = 2;
    return true;
}

static const char *const rpc_opts[] = {"--rpc", "--rpc-servers"};
static const char *const place_opts[] = {"--backend",
                                         "--main-backend-device",
                                         "--diffusion-backend-device",
                                         "--clip-backend-device",
                                         "--vae-backend-device",
                                         "--control-net-backend-device"};
#define N_PLACE (sizeof place_opts / sizeof place_opts[0])

/* The arguments of the next try: --rpc with the servers left (none: no --rpc), no placement once
 * re-planned. out has room for argc + 2. */
static int next_args(int argc, char **argv, const char *list, bool replanned, char *rpc_arg,
                     size_t rpc_n, char **out) {
    int n = 0;
    for (int i = 0; i < argc; i++) {
        const char *v;
        int skip = 0;
        for (size_t k = 0; k < 2 && i > 0 && !skip; k++)
            is_opt(argv, argc, i, rpc_opts[k], &v, &skip);
        for (size_t k = 0; k < N_PLACE && i > 0 && !skip && replanned; k++)
            is_opt(argv, argc, i, place_opts[k], &v, &skip);
        if (skip) {
            i += skip - 1;
            continue;
        }
        out[n++] = argv[i];
    }
    if (list[0]) {
        snprintf(rpc_arg, rpc_n, "--rpc=%s", list);
        out[n++] = rpc_arg;
    }
    out[n] = NULL;
    return n;
}

int cli_run_rpc_retry(int argc, char **argv, int (*run)(int argc, char **argv)) {
    char list[4096] = "";
    bool have_rpc = false;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int skip;
        for (size_t k = 0; k < 2; k++)
            if (is_opt(argv, argc, i, rpc_opts[k], &v, &skip)) {
                snprintf(list, sizeof list, "%s", v);
                have_rpc = true;
            }
    }
    if (!have_rpc || !list[0]) return run(argc, argv);
    char **cargv = calloc((size_t)argc + 3, sizeof *cargv);
    if (!cargv) {
        fprintf(stderr, "tierload: out of memory\n");
        return cli_exit_code(TL_ERR_NOMEM);
    }
    char rpc_arg[4200];
    bool replanned = false;
    int rc = -1;
    for (int attempt = 0; rc < 0; attempt++) {
        int n = next_args(argc, argv, list, replanned, rpc_arg, sizeof rpc_arg, cargv);
        if (!list[0]) { /* no server left: this machine's devices, in this process */
            rc = run(n, cargv);
            break;
        }
        int fds[2];
        if (pipe(fds) != 0) {
            rc = run(n, cargv);
            break;
        }
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
            close(fds[0]);
            close(fds[1]);
            rc = run(n, cargv);
            break;
        }
        if (pid == 0) {
            close(fds[0]);
            g_lost_fd = fds[1];
            tl_device_ggml_on_abort(child_abort);
            int crc = run(n, cargv);
            fflush(NULL);
            _exit(crc);
        }
        close(fds[1]);
        char msg[2048];
        size_t got = 0;
        ssize_t r;
        while (got < sizeof msg - 1 && (r = read(fds[0], msg + got, sizeof msg - 1 - got)) > 0)
            got += (size_t)r;
        msg[got] = 0;
        close(fds[0]);
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        int crc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        char ep[300];
        if (!got || !lost_endpoint(msg, ep, sizeof ep) || attempt + 1 >= LOST_MAX) {
            rc = crc;
            break;
        }
        drop_endpoint(list, ep);
        fprintf(stderr,
                "tierload: lost RPC server %s; planning again on the devices that remain (%s) "
                "and loading its weights from the file\n",
                ep, list[0] ? list : "no RPC server left: this machine's devices");
        replanned = true;
    }
    free(cargv);
    return rc;
}
