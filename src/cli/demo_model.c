/*
 * demo_model.c — the demo's Stable Diffusion 1.x checkpoint, generated.
 *
 * Every weight and bias of an SD 1.x checkpoint with the ldm names
 * (model.diffusion_model.*, cond_stage_model.transformer.text_model.*,
 * first_stage_model.*) and their shapes — the UNet narrower than SD 1.5's
 * (base channels 256, not 320), the text encoder CLIP ViT-L/14's, the VAE
 * SD's — in F16, with the values of a freshly initialised network: weights
 * normal with standard deviation 1/sqrt(fan_in), norm weights 1, biases 0,
 * from a fixed seed per tensor. stable-diffusion.cpp loads it as SD 1.x
 * (it keys the version on a 768-wide token embedding and reads the UNet's
 * base channels from its first convolution) and draws from it; activations
 * stay finite in F16. The small variant has the same layout, narrower.
 * The kohya LoRA names diffusers modules (the convention stable-diffusion.cpp
 * maps onto ldm names). Buffers that are not weights (the text encoder's
 * position_ids, the noise schedule) are left out: engines ignore them.
 */
#include "cli/demo_model.h"

#include "cli/cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LORA_RANK 8
/* std of a LoRA delta (up·down·alpha/rank) relative to the weight's own 1/sqrt(fan_in) */
#define LORA_GAIN 0.5f

static demo_tensor *add(demo_list *l, demo_fill fill, int nd, const int64_t *shape, const char *fmt,
                        ...) __attribute__((format(printf, 5, 6)));
static demo_tensor *add(demo_list *l, demo_fill fill, int nd, const int64_t *shape, const char *fmt,
                        ...) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        demo_tensor *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            l->oom = true;
            return NULL;
        }
        l->v = v;
        l->cap = cap;
    }
    demo_tensor *t = &l->v[l->n++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->nd = nd;
    for (int d = 0; d < nd; d++)
        t->shape[d] = shape[d];
    t->fill = fill;
    t->gain = 1.0f;
    return t;
}

/* pre.weight [out, in] (and pre.bias [out]) */
static void linear(demo_list *l, const char *pre, int64_t out, int64_t in, bool bias) {
    add(l, DEMO_NORMAL, 2, (int64_t[]){out, in}, "%s.weight", pre);
    if (bias) add(l, DEMO_ZEROS, 1, (int64_t[]){out}, "%s.bias", pre);
}

/* pre.weight [out, in, k, k] and pre.bias [out] */
static void conv(demo_list *l, const char *pre, int64_t out, int64_t in, int64_t k) {
    add(l, DEMO_NORMAL, 4, (int64_t[]){out, in, k, k}, "%s.weight", pre);
    add(l, DEMO_ZEROS, 1, (int64_t[]){out}, "%s.bias", pre);
}

/* GroupNorm or LayerNorm over c channels: weight 1, bias 0 */
static void norm(demo_list *l, const char *pre, int64_t c) {
    add(l, DEMO_ONES, 1, (int64_t[]){c}, "%s.weight", pre);
    add(l, DEMO_ZEROS, 1, (int64_t[]){c}, "%s.bias", pre);
}

/* a name built from a prefix and a printf-style rest, in buf */
static const char *nm(char *buf, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const char *nm(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return buf;
}
#define NM(...) nm(name, sizeof name, __VA_ARGS__)

#define UNET "model.diffusion_model."

/* ldm ResBlock: GroupNorm(cin), conv cin→c, time embedding → c, GroupNorm(c), conv c→c. */
static void resblock(demo_list *l, const char *pre, int64_t cin, int64_t c, int64_t temb) {
    char name[192];
    norm(l, NM(UNET "%s.in_layers.0", pre), cin);
    conv(l, NM(UNET "%s.in_layers.2", pre), c, cin, 3);
    linear(l, NM(UNET "%s.emb_layers.1", pre), c, temb, true);
    norm(l, NM(UNET "%s.out_layers.0", pre), c);
    conv(l, NM(UNET "%s.out_layers.3", pre), c, c, 3);
    if (cin != c) conv(l, NM(UNET "%s.skip_connection", pre), c, cin, 1);
}

/* ldm SpatialTransformer of depth 1 with 1x1 convolutions around it (SD 1.x). */
static void attention(demo_list *l, const char *pre, int64_t c, int64_t ctx) {
    char name[192];
    const char *tb = "transformer_blocks.0";
    norm(l, NM(UNET "%s.norm", pre), c);
    conv(l, NM(UNET "%s.proj_in", pre), c, c, 1);
    linear(l, NM(UNET "%s.%s.attn1.to_q", pre, tb), c, c, false);
    linear(l, NM(UNET "%s.%s.attn1.to_k", pre, tb), c, c, false);
    linear(l, NM(UNET "%s.%s.attn1.to_v", pre, tb), c, c, false);
    linear(l, NM(UNET "%s.%s.attn1.to_out.0", pre, tb), c, c, true);
    linear(l, NM(UNET "%s.%s.ff.net.0.proj", pre, tb), 8 * c, c, true); /* GEGLU: 2 x 4c */
    linear(l, NM(UNET "%s.%s.ff.net.2", pre, tb), c, 4 * c, true);
    linear(l, NM(UNET "%s.%s.attn2.to_q", pre, tb), c, c, false);
    linear(l, NM(UNET "%s.%s.attn2.to_k", pre, tb), c, ctx, false);
    linear(l, NM(UNET "%s.%s.attn2.to_v", pre, tb), c, ctx, false);
    linear(l, NM(UNET "%s.%s.attn2.to_out.0", pre, tb), c, c, true);
    for (int k = 1; k <= 3; k++)
        norm(l, NM(UNET "%s.%s.norm%d", pre, tb, k), c);
    conv(l, NM(UNET "%s.proj_out", pre), c, c, 1);
}

/* SD 1.x UNet with base channels b (SD 1.5: 320), context width ctx (CLIP-L: 768). */
static void unet(demo_list *l, int64_t b, int64_t ctx) {
    int64_t mult[4] = {1, 2, 4, 4}, temb = 4 * b;
    char pre[64], name[192];
    linear(l, UNET "time_embed.0", temb, b, true);
    linear(l, UNET "time_embed.2", temb, temb, true);
    conv(l, UNET "input_blocks.0.0", b, 4, 3);
    int64_t skip[12], ns = 0, ch = b;
    skip[ns++] = b;
    for (int lv = 0; lv < 4; lv++) {
        int64_t c = b * mult[lv];
        for (int j = 0; j < 2; j++) {
            int blk = 1 + 3 * lv + j;
            resblock(l, nm(pre, sizeof pre, "input_blocks.%d.0", blk), ch, c, temb);
            ch = c;
            if (lv < 3) attention(l, nm(pre, sizeof pre, "input_blocks.%d.1", blk), c, ctx);
            skip[ns++] = c;
        }
        if (lv < 3) {
            conv(l, NM(UNET "input_blocks.%d.0.op", 3 * (lv + 1)), c, c, 3);
            skip[ns++] = c;
        }
    }
    resblock(l, "middle_block.0", ch, ch, temb);
    attention(l, "middle_block.1", ch, ctx);
    resblock(l, "middle_block.2", ch, ch, temb);
    for (int i = 0; i < 4; i++) {
        int lv = 3 - i;
        int64_t c = b * mult[lv];
        for (int j = 0; j < 3; j++) {
            int blk = 3 * i + j;
            resblock(l, nm(pre, sizeof pre, "output_blocks.%d.0", blk), ch + skip[--ns], c, temb);
            ch = c;
            if (lv < 3) attention(l, nm(pre, sizeof pre, "output_blocks.%d.1", blk), c, ctx);
            if (j == 2 && i < 3)
                conv(l, NM(UNET "output_blocks.%d.%d.conv", blk, lv < 3 ? 2 : 1), c, c, 3);
        }
    }
    norm(l, UNET "out.0", b);
    conv(l, UNET "out.2", 4, b, 3);
}

#define CLIP "cond_stage_model.transformer.text_model."

/* CLIP text transformer: vocab tokens, width d, 77 positions (CLIP ViT-L/14: 49408, 768, 12). */
static void clip(demo_list *l, int64_t vocab, int64_t d, int layers) {
    char name[192];
    add(l, DEMO_NORMAL, 2, (int64_t[]){vocab, d}, CLIP "embeddings.token_embedding.weight");
    add(l, DEMO_NORMAL, 2, (int64_t[]){77, d}, CLIP "embeddings.position_embedding.weight");
    static const char *const p[] = {"k_proj", "v_proj", "q_proj", "out_proj"};
    for (int i = 0; i < layers; i++) {
        for (int k = 0; k < 4; k++)
            linear(l, NM(CLIP "encoder.layers.%d.self_attn.%s", i, p[k]), d, d, true);
        norm(l, NM(CLIP "encoder.layers.%d.layer_norm1", i), d);
        linear(l, NM(CLIP "encoder.layers.%d.mlp.fc1", i), 4 * d, d, true);
        linear(l, NM(CLIP "encoder.layers.%d.mlp.fc2", i), d, 4 * d, true);
        norm(l, NM(CLIP "encoder.layers.%d.layer_norm2", i), d);
    }
    norm(l, CLIP "final_layer_norm", d);
}

#define VAE "first_stage_model."

static void vblock(demo_list *l, const char *pre, int64_t cin, int64_t c) {
    char name[192];
    norm(l, NM(VAE "%s.norm1", pre), cin);
    conv(l, NM(VAE "%s.conv1", pre), c, cin, 3);
    norm(l, NM(VAE "%s.norm2", pre), c);
    conv(l, NM(VAE "%s.conv2", pre), c, c, 3);
    if (cin != c) conv(l, NM(VAE "%s.nin_shortcut", pre), c, cin, 1);
}

static void vmid(demo_list *l, const char *side, int64_t c) {
    char pre[64], name[192];
    vblock(l, nm(pre, sizeof pre, "%s.mid.block_1", side), c, c);
    norm(l, NM(VAE "%s.mid.attn_1.norm", side), c);
    static const char *const a[] = {"q", "k", "v", "proj_out"};
    for (int k = 0; k < 4; k++)
        conv(l, NM(VAE "%s.mid.attn_1.%s", side, a[k]), c, c, 1);
    vblock(l, nm(pre, sizeof pre, "%s.mid.block_2", side), c, c);
}

/* SD VAE (AutoencoderKL, 4 latent channels) with base channels b (SD: 128). */
static void vae(demo_list *l, int64_t b) {
    int64_t mult[4] = {1, 2, 4, 4};
    char pre[64], name[192];
    conv(l, VAE "encoder.conv_in", b, 3, 3);
    int64_t ch = b;
    for (int i = 0; i < 4; i++) {
        int64_t c = b * mult[i];
        for (int j = 0; j < 2; j++) {
            vblock(l, nm(pre, sizeof pre, "encoder.down.%d.block.%d", i, j), ch, c);
            ch = c;
        }
        if (i < 3) conv(l, NM(VAE "encoder.down.%d.downsample.conv", i), c, c, 3);
    }
    vmid(l, "encoder", ch);
    norm(l, VAE "encoder.norm_out", ch);
    conv(l, VAE "encoder.conv_out", 8, ch, 3);
    conv(l, VAE "quant_conv", 8, 8, 1);
    conv(l, VAE "post_quant_conv", 4, 4, 1);
    conv(l, VAE "decoder.conv_in", ch, 4, 3);
    vmid(l, "decoder", ch);
    for (int i = 3; i >= 0; i--) {
        int64_t c = b * mult[i];
        for (int j = 0; j < 3; j++) {
            vblock(l, nm(pre, sizeof pre, "decoder.up.%d.block.%d", i, j), ch, c);
            ch = c;
        }
        if (i > 0) conv(l, NM(VAE "decoder.up.%d.upsample.conv", i), c, c, 3);
    }
    norm(l, VAE "decoder.norm_out", ch);
    conv(l, VAE "decoder.conv_out", 3, ch, 3);
}

void demo_model_layout(demo_list *l, bool small) {
    clip(l, small ? 4096 : 49408, small ? 192 : 768, 12);
    unet(l, small ? 64 : 256, small ? 192 : 768);
    vae(l, small ? 32 : 128);
}

static void lora_module(demo_list *l, const char *mod, const demo_tensor *t) {
    add(l, DEMO_NORMAL, 2, (int64_t[]){LORA_RANK, t->shape[1]}, "%s.lora_down.weight", mod);
    demo_tensor *up =
        add(l, DEMO_NORMAL, 2, (int64_t[]){t->shape[0], LORA_RANK}, "%s.lora_up.weight", mod);
    if (up) up->gain = LORA_GAIN;
    add(l, DEMO_ALPHA, 0, NULL, "%s.alpha", mod);
}

void demo_lora_layout(const demo_list *model, demo_list *l) {
    static const char *const proj[] = {"attn1.to_q",     "attn1.to_k", "attn1.to_v",
                                       "attn1.to_out.0", "attn2.to_q", "attn2.to_out.0"};
    for (size_t i = 0; i < model->n; i++) {
        const demo_tensor *t = &model->v[i];
        const char *n = t->name;
        char dif[128] = "", mod[160];
        int b, k;
        const char *rest;
        if (!strncmp(n, UNET "input_blocks.", strlen(UNET "input_blocks.")) &&
            sscanf(n + strlen(UNET "input_blocks."), "%d.%d.", &b, &k) == 2 && k == 1 && b >= 1)
            snprintf(dif, sizeof dif, "down_blocks_%d_attentions_%d", (b - 1) / 3, (b - 1) % 3);
        else if (!strncmp(n, UNET "middle_block.1.", strlen(UNET "middle_block.1.")))
            snprintf(dif, sizeof dif, "mid_block_attentions_0");
        else if (!strncmp(n, UNET "output_blocks.", strlen(UNET "output_blocks.")) &&
                 sscanf(n + strlen(UNET "output_blocks."), "%d.%d.", &b, &k) == 2 && k == 1)
            snprintf(dif, sizeof dif, "up_blocks_%d_attentions_%d", b / 3, b % 3);
        if (dif[0] && (rest = strstr(n, "transformer_blocks.0."))) {
            rest += strlen("transformer_blocks.0.");
            for (size_t p = 0; p < sizeof proj / sizeof proj[0]; p++) {
                size_t pl = strlen(proj[p]);
                if (strncmp(rest, proj[p], pl) || strcmp(rest + pl, ".weight")) continue;
                snprintf(mod, sizeof mod, "lora_unet_%s_transformer_blocks_0_%s", dif, proj[p]);
                for (char *c = mod + strlen("lora_unet_"); *c; c++)
                    if (*c == '.') *c = '_';
                lora_module(l, mod, t);
            }
        }
        int layer;
        char which[16];
        if (!strncmp(n, CLIP "encoder.layers.", strlen(CLIP "encoder.layers.")) &&
            sscanf(n + strlen(CLIP "encoder.layers."), "%d.self_attn.%15[a-z]_proj.weight", &layer,
                   which) == 2 &&
            strstr(n, "_proj.weight")) {
            snprintf(mod, sizeof mod, "lora_te_text_model_encoder_layers_%d_self_attn_%s_proj",
                     layer, which);
            lora_module(l, mod, t);
        }
    }
}

static uint64_t numel(const demo_tensor *t) {
    uint64_t n = 1;
    for (int d = 0; d < t->nd; d++)
        n *= (uint64_t)t->shape[d];
    return n;
}

static uint64_t tensor_bytes(const demo_tensor *t) {
    return t->fill == DEMO_ALPHA ? 4 : numel(t) * 2;
}

uint64_t demo_list_bytes(const demo_list *l, uint64_t *comp) {
    uint64_t sum = 0;
    for (size_t i = 0; i < l->n; i++) {
        uint64_t b = tensor_bytes(&l->v[i]);
        sum += b;
        if (comp) comp[tl_component_of(l->v[i].name)] += b;
    }
    return sum;
}

/* ---- values ---- */

/* A tensor's own stream: xorshift64* seeded from its index through splitmix64. */
typedef struct rng {
    uint64_t s;
} rng;

static rng rng_for(uint64_t index) {
    uint64_t z = index * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (rng){z ? z : 1};
}

static uint64_t rng_next(rng *r) {
    r->s ^= r->s >> 12, r->s ^= r->s << 25, r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

/* Two standard normal values (Marsaglia's polar method). */
static void normal2(rng *r, float *a, float *b) {
    float u, v, s;
    do {
        uint64_t x = rng_next(r);
        u = (float)(x >> 40) * (2.0f / 16777216.0f) - 1.0f;
        v = (float)((x >> 16) & 0xffffff) * (2.0f / 16777216.0f) - 1.0f;
        s = u * u + v * v;
    } while (s >= 1.0f || s == 0.0f);
    float m = sqrtf(-2.0f * logf(s) / s);
    *a = u * m, *b = v * m;
}

/* IEEE binary16 of a finite float, rounded to nearest even (±inf past the largest half). */
static uint16_t to_f16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x477ff000u) return sign | 0x7c00; /* 65520 and up round to infinity */
    if (a < 0x38800000u) {                      /* below 2^-14: a subnormal half (or zero) */
        float f;
        memcpy(&f, &a, 4);
        return sign | (uint16_t)lrintf(f * 16777216.0f);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
    return sign | (uint16_t)((r - 0x38000000u) >> 13);
}

/* The next n halves of tensor t's values into buf. */
static void fill(const demo_tensor *t, rng *r, uint16_t *buf, size_t n) {
    if (t->fill != DEMO_NORMAL) {
        uint16_t h = t->fill == DEMO_ONES ? 0x3c00 : 0;
        for (size_t i = 0; i < n; i++)
            buf[i] = h;
        return;
    }
    uint64_t fan_in = t->nd > 1 ? numel(t) / (uint64_t)t->shape[0] : 1;
    float std = t->gain / sqrtf((float)fan_in);
    for (size_t i = 0; i < n; i += 2) {
        float a, b;
        normal2(r, &a, &b);
        buf[i] = to_f16(a * std);
        if (i + 1 < n) buf[i + 1] = to_f16(b * std);
    }
}

/* ---- the file ---- */

#define META_KEY "\"tierload_demo_layout\":\"" DEMO_LAYOUT_VERSION "\""

int demo_write(const char *path, const demo_list *l) {
    size_t cap = l->n * 256 + 256, o = 0;
    enum { CHUNK = 1u << 20 }; /* halves per write */
    char *hdr = malloc(cap);
    uint16_t *buf = malloc(CHUNK * sizeof *buf);
    if (!hdr || !buf) {
        free(hdr), free(buf);
        return cli_exit_code(TL_ERR_NOMEM);
    }
    o += (size_t)snprintf(
        hdr + o, cap - o,
        "{\"__metadata__\":{\"format\":\"pt\",\"generator\":\"tierload demo\"," META_KEY "}");
    uint64_t off = 0;
    for (size_t i = 0; i < l->n; i++) {
        const demo_tensor *t = &l->v[i];
        uint64_t nb = tensor_bytes(t);
        o += (size_t)snprintf(hdr + o, cap - o, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name,
                              t->fill == DEMO_ALPHA ? "F32" : "F16");
        for (int d = 0; d < t->nd; d++)
            o += (size_t)snprintf(hdr + o, cap - o, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        o += (size_t)snprintf(hdr + o, cap - o, "],\"data_offsets\":[%llu,%llu]}",
                              (unsigned long long)off, (unsigned long long)(off + nb));
        off += nb;
    }
    o += (size_t)snprintf(hdr + o, cap - o, "}");
    while (o % 8)
        hdr[o++] = ' ';
    cli_outfile of; /* beside path, removed on failure and on signals, then renamed */
    int rc = cli_outfile_open(&of, path, "demo");
    FILE *f = rc ? NULL : of.f;
    bool ok = f != NULL;
    uint64_t hl = o;
    if (ok) ok = fwrite(&hl, 8, 1, f) == 1 && fwrite(hdr, 1, o, f) == o;
    for (size_t i = 0; ok && i < l->n; i++) {
        const demo_tensor *t = &l->v[i];
        if (t->fill == DEMO_ALPHA) {
            float a = (float)LORA_RANK;
            ok = fwrite(&a, 4, 1, f) == 1;
            continue;
        }
        rng r = rng_for(i);
        uint64_t left = numel(t);
        while (ok && left) {
            size_t n = left > CHUNK ? CHUNK : (size_t)left;
            fill(t, &r, buf, n);
            ok = fwrite(buf, 2, n, f) == n;
            left -= n;
        }
    }
    if (f && !ok) {
        fprintf(stderr, "tierload demo: writing %s: %s\n", cli_safe(path), strerror(errno));
        cli_outfile_abort(&of);
        rc = cli_exit_code(TL_ERR_IO);
    } else if (f) {
        rc = cli_outfile_commit(&of, "demo");
    }
    free(hdr);
    free(buf);
    return rc;
}

bool demo_reusable(const char *path, const demo_list *l) {
    struct stat st;
    if (stat(path, &st) != 0 || st.st_size < 8) return false;
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    uint64_t hl = 0;
    bool ok = fread(&hl, 8, 1, f) == 1 && hl <= (uint64_t)st.st_size - 8 && hl < (64u << 20);
    char *hdr = ok ? malloc((size_t)hl + 1) : NULL;
    ok = hdr && fread(hdr, 1, (size_t)hl, f) == (size_t)hl;
    fclose(f);
    if (ok) {
        hdr[hl] = 0;
        ok = strstr(hdr, META_KEY) != NULL &&
             (uint64_t)st.st_size == 8 + hl + demo_list_bytes(l, NULL);
    }
    free(hdr);
    return ok;
}

void demo_list_free(demo_list *l) {
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}
