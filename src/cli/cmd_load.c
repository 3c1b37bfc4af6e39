/*
 * cmd_load.c — `tierload load` (being written: see docs/ARCHITECTURE.md).
 */
#include "cli/cli.h"

int cmd_load(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_usage("load", "not built yet");
}
