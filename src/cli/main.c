/*
 * main.c — the tierload program: dispatch to subcommands, and make output
 * that cannot be written an error (exit status 4), for every command.
 *
 * A standard stream that is closed at start gets /dev/null opened read-only
 * in its place: files tierload opens then never land on descriptors 0-2
 * (where printf would write into them), and writes to a closed stdout fail
 * (EBADF) instead of vanishing. After the command, stdout is flushed and
 * closed; any error on it (a full disk, /dev/full, a closed stdout) is
 * reported on stderr and the exit status is 4 if it was 0.
 */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct subcommand {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} subcommand;

static const subcommand subcommands[] = {
    {"info", cmd_info, "describe model files: formats, tensors, components, metadata"},
    {"devices", cmd_devices, "list devices (cpu, sim, cuda) with memory and capabilities"},
    {"plan", cmd_plan, "plan where each component goes under memory budgets"},
    {"load", cmd_load, "load every tensor into host memory and account for memory"},
    {"run", cmd_run, "carry a plan out over a pipeline: sessions, streaming, spill, checks"},
    {"merge", cmd_merge, "write a model with LoRAs merged into its weights"},
    {"demo", cmd_demo, "the main job on a built-in synthetic pipeline: mkmodel, info, plan, load"},
    {"mkmodel", cmd_mkmodel, "write a synthetic model file (benchmarks, trials)"},
};

static int usage(FILE *f) {
    fprintf(f, "usage: tierload <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        fprintf(f, "  %-10s %s\n", subcommands[i].name, subcommands[i].help);
    fprintf(f, "\n'tierload <command> --help' for a command's options; 'tierload --version'.\n");
    return f == stderr ? 2 : 0;
}

/* Occupy closed descriptors 0-2 with /dev/null, read-only (writes to it fail). */
static void guard_std_fds(void) {
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
        int n = open("/dev/null", O_RDONLY | O_NOCTTY);
        if (n >= 0 && n != fd) {
            dup2(n, fd);
            close(n);
        }
    }
}

/* Flush and close stdout; rc, or 4 when the output could not be written. */
static int finish_stdout(int rc) {
    int e = 0;
    if (fflush(stdout) != 0) e = errno;
    if (ferror(stdout) && !e) e = EIO;
    if (fclose(stdout) != 0 && !e) e = errno;
    if (!e) return rc;
    fprintf(stderr, "tierload: cannot write the output: %s\n", strerror(e));
    return rc ? rc : 4;
}

static int run(int argc, char **argv) {
    if (argc < 2) return usage(stderr);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))
        return usage(stdout);
    if (!strcmp(argv[1], "--version")) {
        printf("tierload %s\n", tl_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        if (!strcmp(argv[1], subcommands[i].name)) return subcommands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "tierload: unknown command '%s'\n", cli_safe(argv[1]));
    return usage(stderr);
}

/*
 * ggml ends the process on errors it cannot return (an RPC server lost in the
 * middle of a transfer): say what happened and exit with the device status
 * instead of dying by SIGABRT.
 */
static void ggml_abort(const char *message) {
    fputs("tierload: ", stderr);
    fputs(message, stderr);
    fputs("\n", stderr);
    _exit(cli_exit_code(TL_ERR_DEVICE));
}

int main(int argc, char **argv) {
    guard_std_fds();
    signal(SIGPIPE, SIG_IGN); /* a peer or reader that went away is an error, not a signal */
    tl_device_ggml_on_abort(ggml_abort);
    return finish_stdout(run(argc, argv));
}
