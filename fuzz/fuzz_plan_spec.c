/*
 * fuzz_plan_spec.c — libFuzzer target for the planner's text parsers: the
 * input's first byte picks the parser (backend spec, --max-vram, --reserve,
 * --size, --phases, --devices, size strings, a plan JSON document), the rest
 * is the text (NUL-terminated copy). Parsed plan documents must round-trip.
 */
#include "tierload.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    char *s = malloc(size);
    memcpy(s, data + 1, size - 1);
    s[size - 1] = 0;
    tl_plan_device devs[8];
    size_t n = 0;
    if (tl_plan_parse_devices("cuda0=16G,cuda1=10G,sim0=4G", devs, 8, &n) != TL_OK) abort();
    switch (data[0] % 8) {
    case 0: {
        tl_backend_spec b;
        tl_plan_parse_backend(s, devs, n, &b);
        break;
    }
    case 1: {
        uint64_t budgets[8];
        tl_plan_parse_max_vram(s, devs, n, 1ull << 30, budgets);
        break;
    }
    case 2: {
        uint64_t r[TL_COMP_COUNT];
        tl_plan_default_reserves(r);
        tl_plan_parse_reserve(s, r);
        break;
    }
    case 3: {
        tl_plan_size sz;
        tl_plan_parse_size(s, &sz);
        break;
    }
    case 4: {
        tl_plan_phases ph;
        tl_plan_parse_phases(s, &ph);
        break;
    }
    case 5: {
        tl_plan_device d[8];
        size_t k;
        tl_plan_parse_devices(s, d, 8, &k);
        break;
    }
    case 6: {
        uint64_t b;
        bool neg;
        tl_parse_bytes(s, &b, &neg);
        break;
    }
    default: {
        tl_plan *p;
        if (tl_plan_from_json(s, strlen(s), &p) == TL_OK) {
            char *a = NULL, *b = NULL;
            tl_plan *q;
            if (tl_plan_to_json(p, &a) != TL_OK) abort();
            if (tl_plan_from_json(a, strlen(a), &q) != TL_OK) abort();
            if (tl_plan_to_json(q, &b) != TL_OK || strcmp(a, b) != 0) abort();
            free(a);
            free(b);
            tl_plan_destroy(q);
            tl_plan_destroy(p);
        }
        break;
    }
    }
    free(s);
    return 0;
}
