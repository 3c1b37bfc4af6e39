/*
 * cli.h — what the tierload subcommands share: the exit-code convention,
 * error printing, size parsing ("8G", "512M", "-2G") and JSON output. The CLI
 * is thin: everything it does is a public API call from tierload.h.
 */
#ifndef TL_CLI_CLI_H
#define TL_CLI_CLI_H

#include "tierload.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Exit status for a failed status: 1..125, one per kind of failure. */
int cli_exit_code(tl_status s);
/* Print "tierload: <msg>" (from tl_last_error) on stderr and return the exit code. */
int cli_fail(tl_status s);
/* Print a usage error on stderr and return 2. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parse a size ("8G", "9.5GiB", "-2G" when negative is not NULL): tl_plan_parse_bytes. */
bool cli_parse_size(const char *s, uint64_t *bytes, bool *negative);
/* Human size "1.50 GiB" into buf. */
const char *cli_fmt_size(uint64_t bytes, char *buf, size_t n);

/* Subcommands: argc/argv start at the subcommand's own name. */
int cmd_info(int argc, char **argv);
int cmd_devices(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_load(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_demo(int argc, char **argv);

#endif
