/*
 * cmd_demo.c — `tierload demo`: the main job on its embedded default.
 *
 * Generates once, in the cache directory ($XDG_CACHE_HOME/tierload, else
 * ~/.cache/tierload), a deterministic Stable-Diffusion-shaped checkpoint in
 * safetensors with stable-diffusion.cpp's (ldm) names — a CLIP-L text
 * encoder (~250 MB), an SD1.x-shaped UNet (~1 GB in 24 blocks plus conv_in)
 * and a VAE (~160 MB), all F16 — and a small kohya LoRA for it that names
 * diffusers modules (the convention stable-diffusion.cpp maps onto ldm
 * names). Later runs reuse both. Then it runs `tierload run` on them with
 * the LoRA and a simulated GPU too small for the whole model, so lazy loads,
 * time-sharing of the GPU between phases and streaming of the UNet all
 * happen, and writes the plan and timeline pictures. Flags after `demo`
 * pass through to `run` (a later flag wins); bare paths replace the demo
 * model (and drop its LoRA).
 */
#include "cli/cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the model's tensors ---- */

typedef struct dtensor {
    char name[160];
    int nd;
    int64_t shape[4];
} dtensor;

typedef struct dlist {
    dtensor *v;
    size_t n, cap;
    bool oom;
} dlist;

static void add(dlist *l, int nd, int64_t a, int64_t b, int64_t c, int64_t d, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static void add(dlist *l, int nd, int64_t a, int64_t b, int64_t c, int64_t d, const char *fmt, ...) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        dtensor *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            l->oom = true;
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    dtensor *t = &l->v[l->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->nd = nd;
    t->shape[0] = a, t->shape[1] = b, t->shape[2] = c, t->shape[3] = d;
}

#define UNET "model.diffusion_model."

static void resblock(dlist *l, const char *pre, int64_t cin, int64_t c, int64_t temb) {
    add(l, 1, c, 0, 0, 0, UNET "%s.in_layers.0.weight", pre);
    add(l, 4, c, cin, 3, 3, UNET "%s.in_layers.2.weight", pre);
    add(l, 2, c, temb, 0, 0, UNET "%s.emb_layers.1.weight", pre);
    add(l, 1, c, 0, 0, 0, UNET "%s.out_layers.0.weight", pre);
    add(l, 4, c, c, 3, 3, UNET "%s.out_layers.3.weight", pre);
    if (cin != c) add(l, 4, c, cin, 1, 1, UNET "%s.skip_connection.weight", pre);
}

static void attention(dlist *l, const char *pre, int64_t c, int64_t ctx) {
    add(l, 1, c, 0, 0, 0, UNET "%s.norm.weight", pre);
    add(l, 4, c, c, 1, 1, UNET "%s.proj_in.weight", pre);
    const char *tb = "transformer_blocks.0";
    static const char *const qkvo[] = {"to_q", "to_k", "to_v", "to_out.0"};
    for (int k = 0; k < 4; k++) add(l, 2, c, c, 0, 0, UNET "%s.%s.attn1.%s.weight", pre, tb, qkvo[k]);
    add(l, 2, c, c, 0, 0, UNET "%s.%s.attn2.to_q.weight", pre, tb);
    add(l, 2, c, ctx, 0, 0, UNET "%s.%s.attn2.to_k.weight", pre, tb);
    add(l, 2, c, ctx, 0, 0, UNET "%s.%s.attn2.to_v.weight", pre, tb);
    add(l, 2, c, c, 0, 0, UNET "%s.%s.attn2.to_out.0.weight", pre, tb);
    add(l, 2, 8 * c, c, 0, 0, UNET "%s.%s.ff.net.0.proj.weight", pre, tb);
    add(l, 2, c, 4 * c, 0, 0, UNET "%s.%s.ff.net.2.weight", pre, tb);
    for (int k = 1; k <= 3; k++) add(l, 1, c, 0, 0, 0, UNET "%s.%s.norm%d.weight", pre, tb, k);
    add(l, 4, c, c, 1, 1, UNET "%s.proj_out.weight", pre);
}

/* SD1.x UNet layout with base channels b (SD1.5: 320), context ctx. */
static void unet(dlist *l, int64_t b, int64_t ctx) {
    int64_t mult[4] = {1, 2, 4, 4}, temb = 4 * b;
    char pre[64];
    add(l, 2, temb, b, 0, 0, UNET "time_embed.0.weight");
    add(l, 2, temb, temb, 0, 0, UNET "time_embed.2.weight");
    add(l, 4, b, 4, 3, 3, UNET "input_blocks.0.0.weight");
    int64_t skip[12], ns = 0, ch = b;
    skip[ns++] = b;
    for (int lv = 0; lv < 4; lv++) {
        int64_t c = b * mult[lv];
        for (int j = 0; j < 2; j++) {
            int blk = 1 + 3 * lv + j;
            snprintf(pre, sizeof pre, "input_blocks.%d.0", blk);
            resblock(l, pre, ch, c, temb);
            ch = c;
            if (lv < 3) {
                snprintf(pre, sizeof pre, "input_blocks.%d.1", blk);
                attention(l, pre, c, ctx);
            }
            skip[ns++] = c;
        }
        if (lv < 3) {
            add(l, 4, c, c, 3, 3, UNET "input_blocks.%d.0.op.weight", 3 * (lv + 1));
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
            snprintf(pre, sizeof pre, "output_blocks.%d.0", blk);
            resblock(l, pre, ch + skip[--ns], c, temb);
            ch = c;
            if (lv < 3) {
                snprintf(pre, sizeof pre, "output_blocks.%d.1", blk);
                attention(l, pre, c, ctx);
            }
            if (j == 2 && i < 3)
                add(l, 4, c, c, 3, 3, UNET "output_blocks.%d.%d.conv.weight", blk, lv < 3 ? 2 : 1);
        }
    }
    add(l, 1, b, 0, 0, 0, UNET "out.0.weight");
    add(l, 4, 4, b, 3, 3, UNET "out.2.weight");
}

#define CLIP "cond_stage_model.transformer.text_model."

static void clip(dlist *l, int64_t vocab, int64_t d, int layers) {
    add(l, 2, vocab, d, 0, 0, CLIP "embeddings.token_embedding.weight");
    add(l, 2, 77, d, 0, 0, CLIP "embeddings.position_embedding.weight");
    static const char *const p[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    for (int i = 0; i < layers; i++) {
        for (int k = 0; k < 4; k++) {
            add(l, 2, d, d, 0, 0, CLIP "encoder.layers.%d.self_attn.%s.weight", i, p[k]);
            add(l, 1, d, 0, 0, 0, CLIP "encoder.layers.%d.self_attn.%s.bias", i, p[k]);
        }
        add(l, 1, d, 0, 0, 0, CLIP "encoder.layers.%d.layer_norm1.weight", i);
        add(l, 1, d, 0, 0, 0, CLIP "encoder.layers.%d.layer_norm2.weight", i);
        add(l, 2, 4 * d, d, 0, 0, CLIP "encoder.layers.%d.mlp.fc1.weight", i);
        add(l, 2, d, 4 * d, 0, 0, CLIP "encoder.layers.%d.mlp.fc2.weight", i);
    }
    add(l, 1, d, 0, 0, 0, CLIP "final_layer_norm.weight");
}

#define VAE "first_stage_model."

static void vblock(dlist *l, const char *pre, int64_t cin, int64_t c) {
    add(l, 1, cin, 0, 0, 0, VAE "%s.norm1.weight", pre);
    add(l, 4, c, cin, 3, 3, VAE "%s.conv1.weight", pre);
    add(l, 1, c, 0, 0, 0, VAE "%s.norm2.weight", pre);
    add(l, 4, c, c, 3, 3, VAE "%s.conv2.weight", pre);
    if (cin != c) add(l, 4, c, cin, 1, 1, VAE "%s.nin_shortcut.weight", pre);
}

static void vmid(dlist *l, const char *side, int64_t c) {
    char pre[64];
    snprintf(pre, sizeof pre, "%s.mid.block_1", side);
    vblock(l, pre, c, c);
    add(l, 1, c, 0, 0, 0, VAE "%s.mid.attn_1.norm.weight", side);
    static const char *const a[] = {"q", "k", "v", "proj_out"};
    for (int k = 0; k < 4; k++) add(l, 4, c, c, 1, 1, VAE "%s.mid.attn_1.%s.weight", side, a[k]);
    snprintf(pre, sizeof pre, "%s.mid.block_2", side);
    vblock(l, pre, c, c);
}

/* SD VAE layout with base channels b (SD: 128). */
static void vae(dlist *l, int64_t b) {
    int64_t mult[4] = {1, 2, 4, 4};
    char pre[64];
    add(l, 4, b, 3, 3, 3, VAE "encoder.conv_in.weight");
    int64_t ch = b;
    for (int i = 0; i < 4; i++) {
        int64_t c = b * mult[i];
        for (int j = 0; j < 2; j++) {
            snprintf(pre, sizeof pre, "encoder.down.%d.block.%d", i, j);
            vblock(l, pre, ch, c);
            ch = c;
        }
        if (i < 3) add(l, 4, c, c, 3, 3, VAE "encoder.down.%d.downsample.conv.weight", i);
    }
    vmid(l, "encoder", ch);
    add(l, 1, ch, 0, 0, 0, VAE "encoder.norm_out.weight");
    add(l, 4, 8, ch, 3, 3, VAE "encoder.conv_out.weight");
    add(l, 4, 8, 8, 1, 1, VAE "quant_conv.weight");
    add(l, 4, 4, 4, 1, 1, VAE "post_quant_conv.weight");
    add(l, 4, ch, 4, 3, 3, VAE "decoder.conv_in.weight");
    vmid(l, "decoder", ch);
    for (int i = 3; i >= 0; i--) {
        int64_t c = b * mult[i];
        for (int j = 0; j < 3; j++) {
            snprintf(pre, sizeof pre, "decoder.up.%d.block.%d", i, j);
            vblock(l, pre, ch, c);
            ch = c;
        }
        if (i > 0) add(l, 4, c, c, 3, 3, VAE "decoder.up.%d.upsample.conv.weight", i);
    }
    add(l, 1, ch, 0, 0, 0, VAE "decoder.norm_out.weight");
    add(l, 4, 3, ch, 3, 3, VAE "decoder.conv_out.weight");
}

static uint64_t numel(const dtensor *t) {
    uint64_t n = 1;
    for (int d = 0; d < t->nd; d++) n *= (uint64_t)t->shape[d];
    return n;
}

/* The demo model: full size (~1.5 GB) or small (~1/30, for tests and quick trials). */
static void layout(dlist *l, bool small) {
    clip(l, small ? 4096 : 49408, small ? 192 : 768, 12);
    unet(l, small ? 64 : 256, small ? 192 : 768);
    vae(l, small ? 32 : 128);
}

/* LoRA modules: kohya names of the UNet's attention projections (diffusers module names, as
 * kohya writes them for SD1.x) and of the text encoder's; rank 8, alpha 8. */
static void lora_layout(const dlist *model, dlist *l) {
    static const char *const proj[] = {"attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                                       "attn2.to_q", "attn2.to_out.0"};
    const int r = 8;
    for (size_t i = 0; i < model->n; i++) {
        const dtensor *t = &model->v[i];
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
                add(l, 2, r, t->shape[1], 0, 0, "%s.lora_down.weight", mod);
                add(l, 2, t->shape[0], r, 0, 0, "%s.lora_up.weight", mod);
                add(l, 0, 0, 0, 0, 0, "%s.alpha", mod);
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
            add(l, 2, r, t->shape[1], 0, 0, "%s.lora_down.weight", mod);
            add(l, 2, t->shape[0], r, 0, 0, "%s.lora_up.weight", mod);
            add(l, 0, 0, 0, 0, 0, "%s.alpha", mod);
        }
    }
}

static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return *s = x;
}

/* Deterministic F16 values: weights in ±[2^-7, 1), LoRA factors in ±[2^-12, 2^-6). */
static void fill_f16(unsigned char *buf, size_t n_halves, uint64_t seed, bool lora) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n_halves; i += 4) {
        uint64_t r = rng_next(&s);
        for (size_t k = 0; k < 4 && i + k < n_halves; k++) {
            uint16_t bits = (uint16_t)(r >> (16 * k));
            unsigned e = (lora ? 3u : 8u) + (bits >> 10) % 6u;
            uint16_t h = (uint16_t)((bits & 0x8000) | (e << 10) | (bits & 0x3ff));
            memcpy(buf + 2 * (i + k), &h, 2);
        }
    }
}

static uint64_t tensor_bytes(const dtensor *t) { return t->nd ? numel(t) * 2 : 4; }

/* Write the list as a safetensors file (F16; rank-0 entries are F32 alphas = 8). */
static int write_st(const char *path, const dlist *l, bool lora) {
    size_t cap = l->n * 256 + 256, o = 0;
    char *hdr = malloc(cap);
    unsigned char *buf = malloc(4u << 20);
    if (!hdr || !buf) {
        free(hdr), free(buf);
        return cli_exit_code(TL_ERR_NOMEM);
    }
    o += (size_t)snprintf(hdr + o, cap - o, "{\"__metadata__\":{\"format\":\"pt\",\"generator\":"
                                            "\"tierload demo\"}");
    uint64_t off = 0;
    for (size_t i = 0; i < l->n; i++) {
        const dtensor *t = &l->v[i];
        uint64_t nb = tensor_bytes(t);
        o += (size_t)snprintf(hdr + o, cap - o, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name,
                              t->nd ? "F16" : "F32");
        for (int d = 0; d < t->nd; d++)
            o += (size_t)snprintf(hdr + o, cap - o, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        o += (size_t)snprintf(hdr + o, cap - o, "],\"data_offsets\":[%llu,%llu]}",
                              (unsigned long long)off, (unsigned long long)(off + nb));
        off += nb;
    }
    o += (size_t)snprintf(hdr + o, cap - o, "}");
    while (o % 8) hdr[o++] = ' ';
    cli_outfile of; /* beside path, removed on failure and on signals, then renamed */
    int rc = cli_outfile_open(&of, path, "demo");
    FILE *f = rc ? NULL : of.f;
    bool ok = f != NULL;
    uint64_t hl = o;
    if (ok) ok = fwrite(&hl, 8, 1, f) == 1 && fwrite(hdr, 1, o, f) == o;
    for (size_t i = 0; ok && i < l->n; i++) {
        const dtensor *t = &l->v[i];
        if (!t->nd) {
            float a = 8.0f;
            ok = fwrite(&a, 4, 1, f) == 1;
            continue;
        }
        uint64_t left = numel(t), chunk = 0;
        while (ok && left) {
            size_t n = left > (2u << 20) ? (2u << 20) : (size_t)left;
            fill_f16(buf, n, ((uint64_t)i << 24) + chunk++, lora);
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

static uint64_t list_bytes(const dlist *l, uint64_t *comp) {
    uint64_t sum = 0;
    for (size_t i = 0; i < l->n; i++) {
        uint64_t b = tensor_bytes(&l->v[i]);
        sum += b;
        if (comp) comp[tl_component_of(l->v[i].name)] += b;
    }
    return sum;
}

/* The file is there with the size the layout gives: reuse it. */
static bool reusable(const char *path, const dlist *l) {
    struct stat st;
    if (stat(path, &st) != 0) return false;
    size_t o = 0;
    /* header length is not known without writing it: compare the data size instead */
    FILE *f = fopen(path, "rb");
    uint64_t hl = 0;
    if (!f) return false;
    bool ok = fread(&hl, 8, 1, f) == 1;
    fclose(f);
    (void)o;
    return ok && (uint64_t)st.st_size == 8 + hl + list_bytes(l, NULL);
}

static int mkdirs(const char *dir) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

static int usage(void) {
    printf("usage: tierload demo [--small] [--cache-dir DIR] [run flags...] [MODEL...]\n\n"
           "The main job on its embedded default. Generates once, in $XDG_CACHE_HOME/tierload\n"
           "(else ~/.cache/tierload), a deterministic Stable-Diffusion-shaped checkpoint with\n"
           "stable-diffusion.cpp's names (text encoder ~250 MB, UNet ~1 GB in 24 blocks, VAE\n"
           "~160 MB, F16) and a small kohya LoRA for it, then runs\n\n"
           "  tierload run MODEL --lora LORA --sim demo-gpu=640M:bw=16G --reserve ... \\\n"
           "               --pipeline 'cond,diffusion*8,vae' --sim-compute 1 \\\n"
           "               --svg PLAN.svg --timeline RUN.svg\n\n"
           "on them: the GPU is too small for the whole model, so components load lazily,\n"
           "time-share it by phase and the UNet streams. Later flags pass through to run and\n"
           "win (another --sim, --pipeline, --json); bare paths replace the demo model and its\n"
           "LoRA.\n\n"
           "  --small          a ~90 MB model of the same shape (tests, quick trials)\n"
           "  --cache-dir DIR  where the model, the LoRA and the pictures go\n");
    return 0;
}

/* Does flag f (the argument before a bare word) take that word as its value? */
static bool takes_value(const char *f) {
    static const char *const booleans[] = {
        "--json", "--no-prefetch", "--no-verify", "--stream-all", "--lora-strict",
        "--clip-on-cpu", "--vae-on-cpu", "--control-net-cpu", "--offload-to-cpu", "--auto-fit",
        "--no-auto-fit", "--no-multi-gpu", "--fit-dry-run", "--list-devices"};
    if (!f || f[0] != '-' || strchr(f, '=')) return false;
    for (size_t i = 0; i < sizeof booleans / sizeof booleans[0]; i++)
        if (!strcmp(f, booleans[i])) return false;
    return true;
}

int cmd_demo(int argc, char **argv) {
    bool small = false, json = false, user_model = false;
    const char *cache = NULL;
    char **pass = calloc((size_t)argc + 1, sizeof *pass);
    int np = 0;
    if (!pass) return cli_exit_code(TL_ERR_NOMEM);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            free(pass);
            return usage();
        }
        if (!strcmp(argv[i], "--small")) {
            small = true;
        } else if (!strcmp(argv[i], "--cache-dir")) {
            if (i + 1 >= argc) {
                free(pass);
                return cli_usage("demo", "--cache-dir needs a folder");
            }
            cache = argv[++i];
        } else {
            if (!strcmp(argv[i], "--json")) json = true;
            if (argv[i][0] != '-' && !takes_value(np ? pass[np - 1] : NULL)) user_model = true;
            pass[np++] = argv[i];
        }
    }
    /* the flags that pass through to run must be run's before anything is generated */
    {
        char **chk = calloc((size_t)np + 2, sizeof *chk);
        if (!chk) {
            free(pass);
            return cli_exit_code(TL_ERR_NOMEM);
        }
        chk[0] = "run";
        memcpy(chk + 1, pass, (size_t)np * sizeof *chk);
        int bad = cmd_run_check_args(np + 1, chk);
        free(chk);
        if (bad) {
            free(pass);
            return bad;
        }
    }
    char dir[4096];
    if (cache)
        snprintf(dir, sizeof dir, "%s", cache);
    else if (getenv("XDG_CACHE_HOME") && *getenv("XDG_CACHE_HOME"))
        snprintf(dir, sizeof dir, "%s/tierload", getenv("XDG_CACHE_HOME"));
    else if (getenv("HOME"))
        snprintf(dir, sizeof dir, "%s/.cache/tierload", getenv("HOME"));
    else
        snprintf(dir, sizeof dir, "/tmp/tierload-cache");
    if (mkdirs(dir)) {
        fprintf(stderr, "tierload demo: %s: %s\n", dir, strerror(errno));
        free(pass);
        return cli_exit_code(TL_ERR_IO);
    }
    char model[4200], lora[4200], psvg[4200], tsvg[4200];
    const char *tag = small ? "sd-demo-small" : "sd-demo";
    snprintf(model, sizeof model, "%s/%s.safetensors", dir, tag);
    snprintf(lora, sizeof lora, "%s/%s-lora.safetensors", dir, tag);
    snprintf(psvg, sizeof psvg, "%s/%s-plan.svg", dir, tag);
    snprintf(tsvg, sizeof tsvg, "%s/%s-timeline.svg", dir, tag);
    FILE *say = json ? stderr : stdout;
    int rc = 0;
    if (!user_model) {
        dlist ml = {0}, ll = {0};
        layout(&ml, small);
        lora_layout(&ml, &ll);
        if (ml.oom || ll.oom) rc = cli_exit_code(TL_ERR_NOMEM);
        uint64_t comp[TL_COMP_COUNT] = {0};
        uint64_t total = list_bytes(&ml, comp);
        char a[32], b[32], c[32], d[32];
        if (!rc && !reusable(model, &ml)) {
            fprintf(say, "generating %s: %s (cond %s, diffusion %s, vae %s), once...\n", model,
                    cli_fmt_size(total, a, sizeof a), cli_fmt_size(comp[TL_COMP_COND], b, sizeof b),
                    cli_fmt_size(comp[TL_COMP_DIFFUSION], c, sizeof c),
                    cli_fmt_size(comp[TL_COMP_VAE], d, sizeof d));
            fflush(say);
            rc = write_st(model, &ml, false);
        } else if (!rc) {
            fprintf(say, "reusing %s (%s)\n", model, cli_fmt_size(total, a, sizeof a));
        }
        if (!rc && !reusable(lora, &ll)) rc = write_st(lora, &ll, true);
        if (!rc)
            fprintf(say, "LoRA %s: %zu modules (kohya names of diffusers modules)\n\n", lora,
                    ll.n / 3);
        free(ml.v);
        free(ll.v);
    }
    if (rc) {
        free(pass);
        return rc;
    }
    /* run with the demo's defaults first, the user's flags after them (later ones win) */
    char *args[64];
    int n = 0;
    args[n++] = "run";
    if (!user_model) {
        args[n++] = model;
        args[n++] = "--lora";
        args[n++] = lora;
    }
    args[n++] = "--sim";
    args[n++] = small ? "demo-gpu=24M:bw=16G" : "demo-gpu=640M:bw=16G";
    args[n++] = "--reserve";
    args[n++] = small ? "diffusion=2M,cond=1M,vae=2M" : "diffusion=96M,cond=32M,vae=96M";
    args[n++] = "--pipeline";
    args[n++] = "cond,diffusion*8,vae";
    args[n++] = "--sim-compute"; /* model 1 s of compute per GiB of weights a step uses */
    args[n++] = "1";
    args[n++] = "--svg";
    args[n++] = psvg;
    args[n++] = "--timeline";
    args[n++] = tsvg;
    char **full = calloc((size_t)(n + np + 1), sizeof *full);
    if (!full) {
        free(pass);
        return cli_exit_code(TL_ERR_NOMEM);
    }
    memcpy(full, args, (size_t)n * sizeof *full);
    memcpy(full + n, pass, (size_t)np * sizeof *full);
    if (!json) {
        printf("$ tierload");
        for (int i = 0; i < n + np; i++) printf(" %s", full[i]);
        printf("\n\n");
        fflush(stdout);
    }
    rc = cmd_run(n + np, full);
    if (!rc)
        fprintf(say, "\npictures: %s (the plan), %s (the run over time)\n", psvg, tsvg);
    free(full);
    free(pass);
    return rc;
}
