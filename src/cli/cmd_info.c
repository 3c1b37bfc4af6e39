/*
 * cmd_info.c — `tierload info` (being written: see docs/ARCHITECTURE.md).
 */
#include "cli/cli.h"

int cmd_info(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_usage("info", "not built yet");
}
