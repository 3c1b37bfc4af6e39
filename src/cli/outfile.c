/*
 * outfile.c — a file the CLI writes (merge, mkmodel): OUT must be absent or a
 * regular file; the bytes go to a visible temporary file beside it
 * ("OUT.tmp.XXXXXX", mode 0666 less the umask), which is renamed over OUT, or
 * removed on failure. Readers see the old OUT or the whole new one, never a
 * part. When OUT exists, the bytes are synced before the rename, so that a
 * crash cannot lose both the old file and the new one; a new OUT is not (as
 * cp and llama.cpp's tools write theirs: a crash can only lose what was
 * being made). Removed on failure — and on SIGINT, SIGTERM, SIGHUP and SIGQUIT
 * (removed, then the signal's default action) and on RLIMIT_FSIZE (SIGXFSZ is
 * ignored while writing, so the write fails with EFBIG and the error path
 * removes it). One output at a time.
 */
#include "cli/cli.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const int caught[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
#define N_CAUGHT (sizeof caught / sizeof caught[0])
static struct sigaction saved[N_CAUGHT], saved_xfsz;
static char pending[8192]; /* the temporary file's path, for the handler */
static volatile sig_atomic_t armed;

static void on_signal(int sig) {
    if (armed) unlink(pending);
    armed = 0;
    /* SA_RESETHAND gave the default action back; delivered again once this returns */
    raise(sig);
}

static void arm(const char *tmp) {
    snprintf(pending, sizeof pending, "%s", tmp);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < N_CAUGHT; i++) sigaddset(&sa.sa_mask, caught[i]);
    for (size_t i = 0; i < N_CAUGHT; i++) {
        sigaction(caught[i], NULL, &saved[i]);
        if (saved[i].sa_handler != SIG_IGN) sigaction(caught[i], &sa, NULL); /* ignored stays so */
    }
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGXFSZ, &ign, &saved_xfsz);
    armed = 1;
}

static void disarm(void) {
    armed = 0;
    for (size_t i = 0; i < N_CAUGHT; i++) sigaction(caught[i], &saved[i], NULL);
    sigaction(SIGXFSZ, &saved_xfsz, NULL);
}

int cli_outfile_open(cli_outfile *o, const char *out, const char *cmd) {
    memset(o, 0, sizeof *o);
    o->fd = -1;
    o->out = out;
    struct stat st;
    o->replaces = stat(out, &st) == 0;
    if (o->replaces && !S_ISREG(st.st_mode)) {
        fprintf(stderr, "tierload %s: %s: exists and is not a regular file; not replaced\n", cmd,
                cli_safe(out));
        return cli_exit_code(TL_ERR_INVALID_ARG);
    }
    size_t len = strlen(out) + 16;
    o->tmp = malloc(len);
    if (!o->tmp) return cli_exit_code(TL_ERR_NOMEM);
    snprintf(o->tmp, len, "%s.tmp.XXXXXX", out);
    /* a signal between creating the file and arming the handler waits for the handler */
    sigset_t block, old;
    sigemptyset(&block);
    for (size_t i = 0; i < N_CAUGHT; i++) sigaddset(&block, caught[i]);
    sigprocmask(SIG_BLOCK, &block, &old);
    o->fd = mkstemp(o->tmp);
    if (o->fd >= 0) arm(o->tmp);
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (o->fd < 0) {
        fprintf(stderr, "tierload %s: %s: cannot create a temporary file beside it: %s\n", cmd,
                cli_safe(out), strerror(errno));
        free(o->tmp);
        o->tmp = NULL;
        return cli_exit_code(TL_ERR_IO);
    }
    mode_t mask = umask(0);
    umask(mask);
    if (fchmod(o->fd, 0666 & ~mask) != 0 || !(o->f = fdopen(o->fd, "wb"))) {
        fprintf(stderr, "tierload %s: %s: %s\n", cmd, cli_safe(o->tmp), strerror(errno));
        cli_outfile_abort(o);
        return cli_exit_code(TL_ERR_IO);
    }
    return 0;
}

int cli_outfile_commit(cli_outfile *o, const char *cmd) {
    int rc = 0;
    if (fflush(o->f) != 0 || (o->replaces && fsync(o->fd) != 0)) rc = errno ? errno : EIO;
    if (fclose(o->f) != 0 && !rc) rc = errno ? errno : EIO;
    o->f = NULL;
    o->fd = -1;
    if (!rc && rename(o->tmp, o->out) != 0) rc = errno;
    if (rc) {
        fprintf(stderr, "tierload %s: writing %s: %s\n", cmd, cli_safe(o->out), strerror(rc));
        cli_outfile_abort(o);
        return cli_exit_code(TL_ERR_IO);
    }
    disarm();
    free(o->tmp);
    o->tmp = NULL;
    return 0;
}

void cli_outfile_abort(cli_outfile *o) {
    if (o->f) fclose(o->f);
    else if (o->fd >= 0) close(o->fd);
    o->f = NULL;
    o->fd = -1;
    if (o->tmp) {
        unlink(o->tmp); /* ours; OUT itself was never opened */
        disarm();
        free(o->tmp);
        o->tmp = NULL;
    }
}
