/*
 * names.c — what a tensor's name says about it: its pipeline component and
 * its layer (block index).
 *
 * Components come from one table of name-prefix rules in the style of
 * stable-diffusion.cpp (checkpoint prefixes such as "model.diffusion_model."
 * or "first_stage_model.", diffusers subfolder prefixes such as "unet." or
 * "vae.", and the bare names of standalone files such as Flux's
 * "double_blocks."). The first matching rule wins, so specific rules come
 * before general ones.
 *
 * A layer is the number that follows a block word: "blocks.12", "blk.3",
 * "layers.7", "input_blocks.4", "h.5", "block.2" (any word that is "blk",
 * "h", "layer", "layers", or ends in "block"/"blocks"). The first such pair in
 * the name wins; the prefix up to and including the number is the block key.
 */
#include "tierload.h"

#include <ctype.h>
#include <string.h>

typedef struct prefix_rule {
    const char *prefix;
    tl_component comp;
} prefix_rule;

static const prefix_rule rules[] = {
    /* single-file checkpoints (SD1.x/SDXL/SD3/Flux as written by their trainers) */
    {"model.diffusion_model.", TL_COMP_DIFFUSION},
    {"diffusion_model.", TL_COMP_DIFFUSION},
    {"first_stage_model.", TL_COMP_VAE},
    {"cond_stage_model.", TL_COMP_COND},
    {"conditioner.", TL_COMP_COND},
    {"text_encoders.", TL_COMP_COND},
    {"control_model.", TL_COMP_CONTROLNET},
    /* diffusers subfolders, as prefixed by tierload on open */
    {"unet.", TL_COMP_DIFFUSION},
    {"transformer.", TL_COMP_DIFFUSION},
    {"transformer_2.", TL_COMP_DIFFUSION2}, /* diffusers: Wan 2.2's second (low-noise) expert */
    {"prior.", TL_COMP_DIFFUSION},
    {"dit.", TL_COMP_DIFFUSION},
    {"vae.", TL_COMP_VAE},
    {"tae.", TL_COMP_VAE},
    {"text_encoder", TL_COMP_COND}, /* text_encoder., text_encoder_2., text_encoder_3. */
    {"te.", TL_COMP_COND},
    {"llm.", TL_COMP_COND},
    {"clip_l.", TL_COMP_COND},
    {"clip_g.", TL_COMP_COND},
    {"t5xxl.", TL_COMP_COND},
    {"controlnet.", TL_COMP_CONTROLNET},
    {"control_net.", TL_COMP_CONTROLNET},
    /* standalone text encoders (CLIP, T5) */
    {"text_model.", TL_COMP_COND},
    {"encoder.block.", TL_COMP_COND},
    {"shared.", TL_COMP_COND},
    /* standalone VAEs (Flux ae, SD vae) */
    {"encoder.", TL_COMP_VAE},
    {"decoder.", TL_COMP_VAE},
    {"quant_conv.", TL_COMP_VAE},
    {"post_quant_conv.", TL_COMP_VAE},
    /* standalone diffusion models (Flux, SD3, LTX, Wan, UNets without prefix) */
    {"double_blocks.", TL_COMP_DIFFUSION},
    {"single_blocks.", TL_COMP_DIFFUSION},
    {"joint_blocks.", TL_COMP_DIFFUSION},
    {"transformer_blocks.", TL_COMP_DIFFUSION},
    {"input_blocks.", TL_COMP_DIFFUSION},
    {"middle_block.", TL_COMP_DIFFUSION},
    {"output_blocks.", TL_COMP_DIFFUSION},
    {"time_embed.", TL_COMP_DIFFUSION},
    {"img_in.", TL_COMP_DIFFUSION},
    {"txt_in.", TL_COMP_DIFFUSION},
    {"time_in.", TL_COMP_DIFFUSION},
    {"vector_in.", TL_COMP_DIFFUSION},
    {"guidance_in.", TL_COMP_DIFFUSION},
    {"final_layer.", TL_COMP_DIFFUSION},
    {"x_embedder.", TL_COMP_DIFFUSION},
    {"t_embedder.", TL_COMP_DIFFUSION},
    {"context_embedder.", TL_COMP_DIFFUSION},
};

tl_component tl_component_of(const char *name) {
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (!strncmp(name, rules[i].prefix, strlen(rules[i].prefix))) return rules[i].comp;
    return TL_COMP_OTHER;
}

static const char *const comp_names[TL_COMP_COUNT] = {"diffusion", "cond",  "vae",
                                                      "controlnet", "other", "diffusion2"};

const char *tl_component_name(tl_component c) {
    if (c == TL_COMP_GROUP) return "group";
    return (unsigned)c < TL_COMP_COUNT ? comp_names[c] : "unknown";
}

typedef struct alias {
    const char *name;
    tl_component comp;
} alias;

/* Names and aliases, in normal form (lower case, no '-' or '_'; see tl_component_from_name). */
static const alias aliases[] = {
    {"diffusion", TL_COMP_DIFFUSION},
    {"model", TL_COMP_DIFFUSION},
    {"unet", TL_COMP_DIFFUSION},
    {"dit", TL_COMP_DIFFUSION},
    {"transformer", TL_COMP_DIFFUSION},
    {"cond", TL_COMP_COND},
    {"te", TL_COMP_COND},
    {"clip", TL_COMP_COND},
    {"text", TL_COMP_COND},
    {"textencoder", TL_COMP_COND},
    {"textencoders", TL_COMP_COND},
    {"conditioner", TL_COMP_COND},
    {"llm", TL_COMP_COND},
    {"t5", TL_COMP_COND},
    {"t5xxl", TL_COMP_COND},
    {"vae", TL_COMP_VAE},
    {"firststage", TL_COMP_VAE},
    {"autoencoder", TL_COMP_VAE},
    {"tae", TL_COMP_VAE},
    {"controlnet", TL_COMP_CONTROLNET},
    {"control", TL_COMP_CONTROLNET},
    {"other", TL_COMP_OTHER},
    {"diffusion2", TL_COMP_DIFFUSION2},
    {"diffusion#2", TL_COMP_DIFFUSION2},
    {"transformer2", TL_COMP_DIFFUSION2},
    {"refiner", TL_COMP_DIFFUSION2},
};

tl_component tl_component_from_name(const char *name) {
    if (!name) return TL_COMP_INVALID;
    char norm[32];
    size_t n = 0;
    for (const char *p = name; *p; p++) {
        if (*p == '-' || *p == '_') continue;
        if (n + 1 >= sizeof norm) return TL_COMP_INVALID;
        norm[n++] = (char)tolower((unsigned char)*p);
    }
    norm[n] = 0;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (!strcmp(norm, aliases[i].name)) return aliases[i].comp;
    return TL_COMP_INVALID;
}

/* Is [w, w+n) a block word? */
static bool block_word(const char *w, size_t n) {
    if ((n == 3 && !strncmp(w, "blk", 3)) || (n == 1 && w[0] == 'h') ||
        (n == 5 && !strncmp(w, "layer", 5)) || (n == 6 && !strncmp(w, "layers", 6)))
        return true;
    if (n >= 5 && !strncmp(w + n - 5, "block", 5)) return true;
    if (n >= 6 && !strncmp(w + n - 6, "blocks", 6)) return true;
    return false;
}

int32_t tl_layer_of(const char *name, size_t *key_len) {
    const char *w = name;
    const char *prev = NULL;
    size_t prev_n = 0;
    if (key_len) *key_len = 0;
    for (;;) {
        const char *dot = strchr(w, '.');
        size_t n = dot ? (size_t)(dot - w) : strlen(w);
        if (prev && n > 0 && n <= 9 && block_word(prev, prev_n)) {
            bool digits = true;
            for (size_t i = 0; i < n; i++)
                digits = digits && isdigit((unsigned char)w[i]);
            if (digits) {
                int32_t v = 0;
                for (size_t i = 0; i < n; i++)
                    v = v * 10 + (w[i] - '0');
                if (key_len) *key_len = (size_t)(w + n - name);
                return v;
            }
        }
        if (!dot) return -1;
        prev = w;
        prev_n = n;
        w = dot + 1;
    }
}
