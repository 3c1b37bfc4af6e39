/*
 * fuzz_plan_spec.c — libFuzzer target for the planner's text parsers: the
 * input's first byte picks the parser (backend spec, --max-vram, --reserve,
 * --size, --phases, --devices, size strings, a plan JSON document, the
 * per-tensor rule lists --override-tensor and --tensor-type-rules planned on a
 * small model), the rest is the text (NUL-terminated copy). Parsed plan
 * documents must round-trip.
 */
#include "tierload.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A small model whose tensor names the rule lists match against, written once to a temporary file. */
static tl_model *rules_model(void) {
    static tl_model *m;
    if (m) return m;
    char path[] = "/tmp/tl_fuzz_rules_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) abort();
    FILE *f = fdopen(fd, "wb");
    tl_writer *w = NULL;
    int64_t s2[2] = {2, 32}, s1[1] = {32};
    const void *h;
    size_t hl;
    static const unsigned char zeros[256 + 64 + 128];
    if (!f || tl_writer_create(TL_FORMAT_SAFETENSORS, &w) ||
        tl_writer_tensor(w, "blk.0.ffn_up.weight", TL_DTYPE_F32, 2, s2, 256, NULL) ||
        tl_writer_tensor(w, "first_stage_model.conv.weight", TL_DTYPE_F16, 1, s1, 64, NULL) ||
        tl_writer_tensor(w, "model.diffusion_model.out.bias", TL_DTYPE_F32, 1, s1, 128, NULL) ||
        tl_writer_header(w, &h, &hl) || fwrite(h, 1, hl, f) != hl ||
        fwrite(zeros, 1, 256 + 64 + 128, f) != 256 + 64 + 128 || fclose(f))
        abort();
    tl_writer_destroy(w);
    const char *paths[] = {path};
    if (tl_model_open(paths, 1, NULL, &m)) abort();
    unlink(path); /* the catalog keeps its descriptor and mapping */
    return m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    char *s = malloc(size);
    memcpy(s, data + 1, size - 1);
    s[size - 1] = 0;
    tl_plan_device devs[8];
    size_t n = 0;
    if (tl_plan_parse_devices("cuda0=16G,cuda1=10G,sim0=4G", devs, 8, &n) != TL_OK) abort();
    switch (data[0] % 10) {
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
    case 8:
    case 9: { /* a rule list: a plan of the small model must be made or refused cleanly */
        tl_plan_options o;
        tl_plan_options_init(&o);
        if (data[0] % 10 == 8)
            o.overrides = s;
        else
            o.type_rules = s;
        tl_plan *p = NULL;
        if (tl_plan_create_for_model(rules_model(), TL_DTYPE_INVALID, devs, n, &o, &p) == TL_OK)
            tl_plan_destroy(p);
        else if (p)
            abort();
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
