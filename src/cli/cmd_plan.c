/*
 * cmd_plan.c — `tierload plan` (being written: see docs/ARCHITECTURE.md).
 */
#include "cli/cli.h"

int cmd_plan(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_usage("plan", "not built yet");
}
