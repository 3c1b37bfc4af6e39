/*
 * fuzz_lora.c — libFuzzer target for LoRA files: the input is a LoRA
 * (safetensors or GGUF, whatever its bytes) handed to tl_lora_open through a
 * memfd, then matched and applied (scale 1, then the scale in the input's
 * last byte) to a small writable model with F32, F16 and BF16 linear and conv
 * weights that the usual names (own, kohya lora_unet_, diffusers-style) reach.
 * Properties: no crash or sanitizer report; a merge that succeeds leaves
 * every weight finite (the model's are); a merge that fails leaves every
 * weight byte for byte as the file has it; the report's counts add up.
 */
#include "tierload.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char model_path[64];
static uint8_t *model_bytes; /* the model file's data section as written */
static size_t model_data_off, model_data_len;

/* name, dtype, element size, rank, shape */
static const struct {
    const char *name, *dtype;
    unsigned es, nd;
    int64_t shape[4];
} weights[] = {
    {"model.diffusion_model.out.weight", "F32", 4, 2, {4, 4}},
    {"model.diffusion_model.input_blocks.1.1.proj_in.weight", "F16", 2, 2, {4, 8}},
    {"model.diffusion_model.middle_block.1.proj_out.weight", "BF16", 2, 2, {8, 4}},
    {"model.diffusion_model.conv.weight", "F32", 4, 4, {4, 2, 3, 3}},
    {"model.diffusion_model.a.b_c.weight", "F32", 4, 2, {2, 2}},
    {"model.diffusion_model.a_b.c.weight", "F32", 4, 2, {2, 2}},
    {"cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight", "F16", 2, 2, {4, 4}},
};
#define N_WEIGHTS (sizeof weights / sizeof weights[0])

static int make_model(void) {
    int fd = memfd_create("fuzz-model", 0);
    if (fd < 0) return -1;
    char hdr[4096];
    size_t o = (size_t)snprintf(hdr, sizeof hdr, "{");
    uint64_t off = 0;
    for (size_t i = 0; i < N_WEIGHTS; i++) {
        uint64_t n = weights[i].es;
        for (unsigned d = 0; d < weights[i].nd; d++) n *= (uint64_t)weights[i].shape[d];
        o += (size_t)snprintf(hdr + o, sizeof hdr - o, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                              i ? "," : "", weights[i].name, weights[i].dtype);
        for (unsigned d = 0; d < weights[i].nd; d++)
            o += (size_t)snprintf(hdr + o, sizeof hdr - o, "%s%lld", d ? "," : "",
                                  (long long)weights[i].shape[d]);
        o += (size_t)snprintf(hdr + o, sizeof hdr - o, "],\"data_offsets\":[%llu,%llu]}",
                              (unsigned long long)off, (unsigned long long)(off + n));
        off += n;
    }
    o += (size_t)snprintf(hdr + o, sizeof hdr - o, "}");
    while (o % 8) hdr[o++] = ' ';
    model_data_off = 8 + o;
    model_data_len = (size_t)off;
    model_bytes = malloc(model_data_len);
    /* finite values of moderate size in every type: 0x3c00 is 1.0 in F16, 0x3f80 in BF16 */
    for (size_t i = 0, at = 0; i < N_WEIGHTS; i++) {
        uint64_t n = 1;
        for (unsigned d = 0; d < weights[i].nd; d++) n *= (uint64_t)weights[i].shape[d];
        for (uint64_t k = 0; k < n; k++, at += weights[i].es) {
            if (weights[i].es == 4) {
                float f = 0.25f * (float)((k % 7) + 1);
                memcpy(model_bytes + at, &f, 4);
            } else {
                uint16_t h = !strcmp(weights[i].dtype, "F16") ? 0x3c00 : 0x3f80;
                memcpy(model_bytes + at, &h, 2);
            }
        }
    }
    uint64_t hl = o;
    if (write(fd, &hl, 8) != 8 || write(fd, hdr, o) != (ssize_t)o ||
        write(fd, model_bytes, model_data_len) != (ssize_t)model_data_len)
        return -1;
    snprintf(model_path, sizeof model_path, "/proc/self/fd/%d", fd);
    return 0;
}

static bool finite_weight(const tl_tensor_info *t, const uint8_t *p) {
    for (uint64_t k = 0; k < t->n_elements; k++) {
        if (t->dtype == TL_DTYPE_F32) {
            float f;
            memcpy(&f, p + 4 * k, 4);
            if (!isfinite(f)) return false;
        } else {
            uint16_t h;
            memcpy(&h, p + 2 * k, 2);
            unsigned exp_all = t->dtype == TL_DTYPE_F16 ? 0x7c00 : 0x7f80;
            if ((h & exp_all) == exp_all) return false;
        }
    }
    return true;
}

static void apply_and_check(const tl_lora *l, float scale) {
    tl_model_options mo;
    tl_model_options_init(&mo);
    mo.writable = true;
    tl_model *m = NULL;
    const char *p = model_path;
    if (tl_model_open(&p, 1, &mo, &m) != TL_OK) abort();
    tl_lora_report r;
    tl_status st = tl_lora_apply(m, l, scale, &r, sizeof r);
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        const uint8_t *w = tl_model_tensor_data(m, i);
        if (st == TL_OK && !finite_weight(t, w)) abort(); /* a non-finite weight from a LoRA */
        if (st != TL_OK &&
            memcmp(w, model_bytes + (t->offset - model_data_off), (size_t)t->nbytes) != 0)
            abort(); /* a refused LoRA changed the weights */
    }
    if (st == TL_OK && r.n_matched > r.n_modules) abort();
    tl_model_close(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!model_path[0] && make_model() != 0) abort();
    int fd = memfd_create("fuzz-lora", 0);
    if (fd < 0) return 0;
    if (size && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    tl_lora *l = NULL;
    if (tl_lora_open(path, &l) == TL_OK) {
        apply_and_check(l, 1.0f);
        /* a second scale from the input: large, negative, tiny */
        float scale = size ? (float)((int)data[size - 1] - 128) * 1e3f : 0.5f;
        apply_and_check(l, scale);
        tl_lora_close(l);
    }
    close(fd);
    return 0;
}
