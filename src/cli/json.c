/*
 * json.c — exact-integer helpers over cJSON for the CLI's --json output.
 */
#include "cli/json.h"

#include "cli/cli.h"

#include <stdlib.h>

cJSON *cli_json_add_u64(cJSON *obj, const char *key, uint64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    return cJSON_AddRawToObject(obj, key, buf);
}

cJSON *cli_json_add_i64(cJSON *obj, const char *key, int64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)v);
    return cJSON_AddRawToObject(obj, key, buf);
}

cJSON *cli_json_push_u64(cJSON *arr, uint64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    cJSON *item = cJSON_CreateRaw(buf);
    cJSON_AddItemToArray(arr, item);
    return item;
}

int cli_json_print(const cJSON *root, FILE *f) {
    char *s = cJSON_PrintUnformatted(root);
    if (!s) return 1;
    cli_json_write(s, f);
    fputc('\n', f);
    free(s);
    return 0;
}
