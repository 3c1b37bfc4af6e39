/*
 * json.h — JSON output for the CLI: cJSON documents with exact 64-bit
 * integers (cJSON's own numbers are doubles, so integers go in as raw text).
 */
#ifndef TL_CLI_JSON_H
#define TL_CLI_JSON_H

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>

/* obj[key] = v, printed exactly. */
cJSON *cli_json_add_u64(cJSON *obj, const char *key, uint64_t v);
cJSON *cli_json_add_i64(cJSON *obj, const char *key, int64_t v);
/* Append v to an array, printed exactly. */
cJSON *cli_json_push_u64(cJSON *arr, uint64_t v);
/*
 * Print unformatted with a trailing newline, invalid UTF-8 bytes in strings as
 * \ufffd (cli_json_write); returns 0 or a non-zero on failure.
 */
int cli_json_print(const cJSON *root, FILE *f);

#endif
