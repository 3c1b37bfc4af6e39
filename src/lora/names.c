/*
 * names.c — the names a model tensor answers to when a LoRA names it.
 *
 * Model-driven: for every tensor "X.weight" of the model we list the module
 * names a LoRA may use for it, and look LoRA keys up in that list, so the
 * ambiguity of kohya names (dots written as underscores) never has to be
 * undone. The names:
 *   - X itself (the model's own naming);
 *   - for an ldm UNet ("model.diffusion_model.R"): "diffusion_model.R",
 *     kohya "lora_unet_" + R with dots as underscores, and the diffusers name
 *     D of R (down_blocks / mid_block / up_blocks, as stable-diffusion.cpp
 *     converts SD1.x/SDXL LoRAs) as "unet.D" and "lora_unet_" + D;
 *   - for a diffusers UNet ("unet.R"): "lora_unet_" + R;
 *   - for a CLIP text encoder (a name containing "text_model."): kohya
 *     lora_te_ / lora_te1_ (first or only encoder) or lora_te2_ (second:
 *     SDXL's conditioner.embedders.1, clip_g, cond_stage_model.1,
 *     text_encoder_2) followed by the part from "text_model." on.
 */
#include "lora/lora.h"

#include "core/error.h"
#include "os/os.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool starts(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* Parse "<num>." at *s; advances. */
static bool num_dot(const char **s, int *v) {
    const char *p = *s;
    if (*p < '0' || *p > '9') return false;
    long x = 0;
    while (*p >= '0' && *p <= '9') {
        x = x * 10 + (*p - '0');
        if (x > 100000) return false;
        p++;
    }
    if (*p != '.') return false;
    *v = (int)x;
    *s = p + 1;
    return true;
}

/* Inside a ResBlock: ldm sub-module names -> diffusers ones. */
static const char *const resnet_map[][2] = {
    {"in_layers.0.", "norm1."},       {"in_layers.2.", "conv1."},
    {"emb_layers.1.", "time_emb_proj."}, {"out_layers.0.", "norm2."},
    {"out_layers.3.", "conv2."},      {"skip_connection.", "conv_shortcut."},
};

static bool resnet_tail(const char *tail, char *out, size_t n, const char *head) {
    for (size_t i = 0; i < sizeof resnet_map / sizeof resnet_map[0]; i++)
        if (starts(tail, resnet_map[i][0])) {
            int w = snprintf(out, n, "%s%s%s", head, resnet_map[i][1],
                             tail + strlen(resnet_map[i][0]));
            return w > 0 && (size_t)w < n;
        }
    return false;
}

static bool put(char *out, size_t n, const char *head, const char *tail) {
    int w = snprintf(out, n, "%s%s", head, tail);
    return w > 0 && (size_t)w < n;
}

/* Works on "R." (with a trailing dot) so that every sub-module prefix ends in '.'. */
static bool ldm_to_diffusers_dot(const char *r, char *out, size_t n) {
    static const char *const fixed[][2] = {
        {"time_embed.0.", "time_embedding.linear_1."}, {"time_embed.2.", "time_embedding.linear_2."},
        {"label_emb.0.0.", "add_embedding.linear_1."}, {"label_emb.0.2.", "add_embedding.linear_2."},
        {"input_blocks.0.0.", "conv_in."},             {"out.0.", "conv_norm_out."},
        {"out.2.", "conv_out."},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (starts(r, fixed[i][0])) return put(out, n, fixed[i][1], r + strlen(fixed[i][0]));
    char head[96];
    const char *p;
    int b, k;
    if (starts(r, "input_blocks.")) {
        p = r + strlen("input_blocks.");
        if (!num_dot(&p, &b) || !num_dot(&p, &k) || b < 1) return false;
        int i = (b - 1) / 3, j = (b - 1) % 3;
        if (j == 2) { /* the block after each level's resnets: its downsampler */
            if (k != 0 || !starts(p, "op.")) return false;
            snprintf(head, sizeof head, "down_blocks.%d.downsamplers.0.conv.", i);
            return put(out, n, head, p + 3);
        }
        if (k == 0) {
            snprintf(head, sizeof head, "down_blocks.%d.resnets.%d.", i, j);
            return resnet_tail(p, out, n, head);
        }
        if (k != 1) return false;
        snprintf(head, sizeof head, "down_blocks.%d.attentions.%d.", i, j);
        return put(out, n, head, p);
    }
    if (starts(r, "middle_block.")) {
        p = r + strlen("middle_block.");
        if (!num_dot(&p, &k)) return false;
        if (k == 0 || k == 2) {
            snprintf(head, sizeof head, "mid_block.resnets.%d.", k / 2);
            return resnet_tail(p, out, n, head);
        }
        if (k != 1) return false;
        return put(out, n, "mid_block.attentions.0.", p);
    }
    if (starts(r, "output_blocks.")) {
        p = r + strlen("output_blocks.");
        if (!num_dot(&p, &b) || !num_dot(&p, &k)) return false;
        int i = b / 3, j = b % 3;
        if (k == 0) {
            snprintf(head, sizeof head, "up_blocks.%d.resnets.%d.", i, j);
            return resnet_tail(p, out, n, head);
        }
        if ((k == 1 || k == 2) && starts(p, "conv.")) { /* an Upsample (after or without attention) */
            if (j != 2) return false;
            snprintf(head, sizeof head, "up_blocks.%d.upsamplers.0.conv.", i);
            return put(out, n, head, p + 5);
        }
        if (k != 1) return false;
        snprintf(head, sizeof head, "up_blocks.%d.attentions.%d.", i, j);
        return put(out, n, head, p);
    }
    return false;
}

bool lora_ldm_to_diffusers(const char *ldm, char *out, size_t n) {
    char in[512], tmp[600];
    int w = snprintf(in, sizeof in, "%s.", ldm);
    if (w <= 0 || (size_t)w >= sizeof in) return false;
    if (!ldm_to_diffusers_dot(in, tmp, sizeof tmp)) return false;
    size_t len = strlen(tmp);
    if (len == 0 || len > n) return false;
    memcpy(out, tmp, len - 1); /* drop the trailing dot */
    out[len - 1] = 0;
    return true;
}

static tl_status add(lora_aliases *a, const char *name, size_t t) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        lora_alias *v = tl__os_realloc(a->v, cap * sizeof *v);
        if (!v) return tl__err(TL_ERR_NOMEM, "LoRA name table: out of memory");
        a->v = v;
        a->cap = cap;
    }
    char *d = tl__os_strdup(name);
    if (!d) return tl__err(TL_ERR_NOMEM, "LoRA name table: out of memory");
    a->v[a->n].name = d;
    a->v[a->n++].tensor = t;
    return TL_OK;
}

static tl_status add2(lora_aliases *a, const char *head, const char *body, bool underscores,
                      size_t t) {
    char buf[640];
    int w = snprintf(buf, sizeof buf, "%s%s", head, body);
    if (w <= 0 || (size_t)w >= sizeof buf) return TL_OK; /* too long to be anyone's name */
    if (underscores)
        for (char *p = buf + strlen(head); *p; p++)
            if (*p == '.') *p = '_';
    return add(a, buf, t);
}

static int cmp_alias(const void *x, const void *y) {
    const lora_alias *a = x, *b = y;
    int c = strcmp(a->name, b->name);
    if (c) return c;
    return a->tensor < b->tensor ? -1 : a->tensor > b->tensor;
}

/* Which CLIP a text-encoder prefix names: 2 for the second one, else 1. */
static int te_index(const char *prefix, size_t len) {
    static const char *const second[] = {"embedders.1.", "clip_g.", "cond_stage_model.1.",
                                         "text_encoder_2.", "te2."};
    for (size_t i = 0; i < sizeof second / sizeof second[0]; i++) {
        const char *s = second[i];
        size_t sl = strlen(s);
        for (size_t o = 0; o + sl <= len; o++)
            if (!memcmp(prefix + o, s, sl)) return 2;
    }
    return 1;
}

tl_status lora_aliases_build(const tl_model *m, lora_aliases *a) {
    memset(a, 0, sizeof *a);
    tl_status st = TL_OK;
    for (size_t t = 0; t < tl_model_tensor_count(m) && !st; t++) {
        const char *name = tl_model_tensor(m, t)->name;
        size_t len = strlen(name);
        if (len < 8 || strcmp(name + len - 7, ".weight") != 0 || len >= 512) continue;
        char mod[512];
        memcpy(mod, name, len - 7);
        mod[len - 7] = 0;
        st = add(a, mod, t);
        char diff[600];
        if (!st && starts(mod, "model.diffusion_model.")) {
            const char *r = mod + strlen("model.diffusion_model.");
            st = add2(a, "diffusion_model.", r, false, t);
            if (!st) st = add2(a, "lora_unet_", r, true, t);
            if (!st && lora_ldm_to_diffusers(r, diff, sizeof diff)) {
                st = add2(a, "unet.", diff, false, t);
                if (!st) st = add2(a, "lora_unet_", diff, true, t);
            }
        } else if (!st && starts(mod, "unet.")) {
            st = add2(a, "lora_unet_", mod + 5, true, t);
        }
        const char *tm = strstr(mod, "text_model.");
        if (!st && tm) {
            if (te_index(mod, (size_t)(tm - mod)) == 2) {
                st = add2(a, "lora_te2_", tm, true, t);
            } else {
                st = add2(a, "lora_te_", tm, true, t);
                if (!st) st = add2(a, "lora_te1_", tm, true, t);
            }
        }
    }
    if (st) {
        lora_aliases_free(a);
        return st;
    }
    if (a->n) qsort(a->v, a->n, sizeof *a->v, cmp_alias);
    return TL_OK;
}

void lora_aliases_free(lora_aliases *a) {
    for (size_t i = 0; i < a->n; i++) free(a->v[i].name);
    free(a->v);
    memset(a, 0, sizeof *a);
}

/* Do tensors x and y of m hold the same bytes (tied weights: one storage, one offset)? */
static bool same_bytes(const tl_model *m, size_t x, size_t y) {
    const tl_tensor_info *a = tl_model_tensor(m, x), *b = tl_model_tensor(m, y);
    return a->file == b->file && a->offset == b->offset && a->nbytes == b->nbytes &&
           a->dtype == b->dtype && !a->strides && !b->strides;
}

size_t lora_aliases_find(const tl_model *m, const lora_aliases *a, const char *name,
                         size_t *other) {
    *other = TL_NOT_FOUND;
    size_t lo = 0, hi = a->n;
    while (lo < hi) { /* first entry >= name */
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(a->v[mid].name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo >= a->n || strcmp(a->v[lo].name, name) != 0) return TL_NOT_FOUND;
    /* the same name for two tensors (kohya's underscores): ambiguous unless they are tied */
    for (size_t i = lo + 1; i < a->n && !strcmp(a->v[i].name, name); i++)
        if (a->v[i].tensor != a->v[lo].tensor && !same_bytes(m, a->v[lo].tensor, a->v[i].tensor)) {
            *other = a->v[i].tensor;
            break;
        }
    return a->v[lo].tensor;
}
