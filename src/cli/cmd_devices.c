/*
 * cmd_devices.c — `tierload devices` (being written: see docs/ARCHITECTURE.md).
 */
#include "cli/cli.h"

int cmd_devices(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_usage("devices", "not built yet");
}
