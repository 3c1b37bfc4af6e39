/*
 * main.c — the tierload program: dispatch to subcommands.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

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

int main(int argc, char **argv) {
    if (argc < 2) return usage(stderr);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))
        return usage(stdout);
    if (!strcmp(argv[1], "--version")) {
        printf("tierload %s\n", tl_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        if (!strcmp(argv[1], subcommands[i].name)) return subcommands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "tierload: unknown command '%s'\n", argv[1]);
    return usage(stderr);
}
