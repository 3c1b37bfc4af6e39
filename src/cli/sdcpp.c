/*
 * sdcpp.c — stable-diffusion.cpp's command line as `plan` and `run` read it:
 * module assignments ("te=cpu,vae=cpu,diffusion=disk", "*=", "all=",
 * "default=" or a bare value for every module), its module names that
 * tierload has no component for (accepted with a note), and its flags that
 * tierload does not model (accepted and ignored with one note), so that a
 * whole sd-cli command line can be pasted.
 */
#include "cli/cli.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Lower case without '-' and '_' (stable-diffusion.cpp's module name matching); false if long. */
static bool norm_name(const char *s, size_t len, char *out, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '-' || s[i] == '_') continue;
        if (k + 1 >= n) return false;
        out[k++] = (char)tolower((unsigned char)s[i]);
    }
    out[k] = 0;
    return true;
}

bool cli_sd_unmodelled(const char *name, size_t len) {
    static const char *const modules[] = {
        "clipvision", "vision",   "photomaker", "photomakerid", "pmid",     "photo",
        "upscaler",   "esrgan",   "hires",      "detector",     "adetailer", "yolo"};
    char n[32];
    if (!norm_name(name, len, n, sizeof n)) return false;
    for (size_t i = 0; i < sizeof modules / sizeof modules[0]; i++)
        if (!strcmp(n, modules[i])) return true;
    return false;
}

static bool is_default_key(const char *k, size_t len) {
    return (len == 1 && k[0] == '*') || (len == 3 && !strncasecmp(k, "all", 3)) ||
           (len == 7 && !strncasecmp(k, "default", 7));
}

/* Trim [*s, *s + *len) of spaces. */
static void trim(const char **s, size_t *len) {
    while (*len && isspace((unsigned char)**s)) {
        (*s)++;
        (*len)--;
    }
    while (*len && isspace((unsigned char)(*s)[*len - 1]))
        (*len)--;
}

/* Index of [v, v+len) in values (case-insensitive), else n_values when other_ok, else -1. */
static int value_index(const char *v, size_t len, const char *const *values, int n_values,
                       bool other_ok) {
    for (int k = 0; k < n_values; k++)
        if (strlen(values[k]) == len && !strncasecmp(v, values[k], len)) return k;
    return other_ok && len ? n_values : -1;
}

int cli_sd_assign(const char *spec, const char *const *values, int n_values,
                  char (*other)[CLI_SD_VALUE_MAX], int per[TL_COMP_COUNT], int *dflt,
                  const char *flag, const char *cmd) {
    for (int c = 0; c < TL_COMP_COUNT; c++)
        per[c] = -1;
    for (int c = 0; other && c <= TL_COMP_COUNT; c++)
        other[c][0] = 0;
    *dflt = -1;
    const char *p = spec;
    if (!*p) return cli_usage(cmd, "%s: empty", flag);
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        const char *item = p, *key = p, *val = p;
        size_t ilen = len, klen = 0, vlen = len;
        trim(&item, &ilen);
        if (!ilen) return cli_usage(cmd, "%s '%s': empty item (stray comma?)", flag, spec);
        const char *eq = memchr(item, '=', ilen);
        if (eq) {
            key = item;
            klen = (size_t)(eq - item);
            val = eq + 1;
            vlen = (size_t)(item + ilen - val);
            trim(&key, &klen);
        } else {
            val = item;
            vlen = ilen;
        }
        trim(&val, &vlen);
        int v = value_index(val, vlen, values, n_values, other != NULL);
        if (v == n_values && vlen >= CLI_SD_VALUE_MAX)
            return cli_usage(cmd, "%s item '%.*s': value too long", flag, (int)ilen, item);
        if (v < 0) {
            char list[160] = "";
            for (int k = 0; k < n_values; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s'%s'", k ? ", " : "",
                         values[k]);
            return cli_usage(cmd, "%s item '%.*s': expected %s%s", flag, (int)ilen, item, list,
                             other ? " or a device" : "");
        }
        int slot = -1; /* where an other value goes: its component, TL_COMP_COUNT the default */
        if (!eq || is_default_key(key, klen)) {
            if (*dflt >= 0)
                return cli_usage(cmd, "%s item '%.*s': the default is given twice", flag,
                                 (int)ilen, item);
            *dflt = v;
            slot = TL_COMP_COUNT;
        } else {
            char name[40];
            int c = -1;
            if (klen < sizeof name) {
                memcpy(name, key, klen);
                name[klen] = 0;
                c = tl_component_from_name(name);
            }
            if (c < 0 && cli_sd_unmodelled(key, klen)) {
                fprintf(stderr, "tierload: %s %.*s: accepted; tierload has no such component\n",
                        flag, (int)ilen, item);
            } else if (c < 0) {
                return cli_usage(cmd, "%s item '%.*s': unknown module '%.*s'", flag, (int)ilen,
                                 item, (int)klen, key);
            } else if (per[c] >= 0) {
                return cli_usage(cmd, "%s item '%.*s': '%s' is given twice", flag, (int)ilen,
                                 item, tl_component_name((tl_component)c));
            } else {
                per[c] = v;
                slot = c;
            }
        }
        if (other && slot >= 0 && v == n_values) {
            memcpy(other[slot], val, vlen);
            other[slot][vlen] = 0;
        }
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

int cli_sd_backend_filter(const char *spec, char *out, size_t n, const char *cmd) {
    size_t w = 0;
    out[0] = 0;
    const char *p = spec;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        const char *item = p, *key = p;
        size_t ilen = len;
        trim(&item, &ilen);
        const char *eq = ilen ? memchr(item, '=', ilen) : NULL;
        size_t klen = eq ? (size_t)(eq - item) : 0;
        trim(&key, &klen);
        const char *val = eq ? eq + 1 : NULL;
        size_t vlen = eq ? (size_t)(item + ilen - val) : 0;
        trim(&val, &vlen);
        if (eq && cli_sd_unmodelled(key, klen)) {
            fprintf(stderr, "tierload: --backend %.*s: accepted; tierload has no such component\n",
                    (int)ilen, item);
        } else if (eq && klen && !vlen) {
            /* an empty backend name is the default device, as in stable-diffusion.cpp */
            if (w + klen + 7 > n) return cli_usage(cmd, "--backend: too long");
            if (w) out[w++] = ',';
            memcpy(out + w, key, klen);
            memcpy(out + w + klen, "=auto", 6);
            w += klen + 5;
        } else {
            /* everything else goes on to the planner, which names what is wrong */
            if (w + len + 2 > n) return cli_usage(cmd, "--backend: too long");
            if (w) out[w++] = ',';
            memcpy(out + w, p, len);
            w += len;
            out[w] = 0;
        }
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

/* stable-diffusion.cpp's flags that tierload does not model; value: takes one. */
typedef struct sd_flag {
    const char *name;
    bool value;
} sd_flag;

static const sd_flag ignored[] = {
    /* model files of modules tierload has no component for, and folders */
    {"--clip_vision", true}, {"--llm_vision", true}, {"--qwen2vl", true},
    {"--qwen2vl_vision", true}, {"--uncond-diffusion-model", true}, {"--embeddings-connectors", true}, {"--audio-vae", true},
    {"--taesd", true}, {"--tae", true}, {"--ip-adapter", true}, {"--motion-module", true},
    {"--photo-maker", true}, {"--pulid-weights", true}, {"--upscale-model", true},
    {"--embd-dir", true}, {"--lora-model-dir", true}, {"--hires-upscalers-dir", true},
    {"--model-args", true}, {"--vae-format", true},
    /* execution */
    {"-t", true}, {"--threads", true}, {"--eager-load", false}, {"--mmap", false},
    {"--fa", false}, {"--diffusion-fa", false}, {"--diffusion-conv-direct", false},
    {"--vae-conv-direct", false}, {"--force-sdxl-vae-conv-scale", false}, {"--rng", true},
    {"--sampler-rng", true}, {"--prediction", true}, {"--lora-apply-mode", true},
    {"-M", true}, {"--mode", true}, {"-v", false}, {"--verbose", false}, {"--color", false},
    /* generation: prompts, images, sampling, tiling, output */
    {"-p", true}, {"--prompt", true}, {"-n", true}, {"--negative-prompt", true},
    {"--prompt-file", true}, {"--negative-prompt-file", true}, {"-i", true},
    {"--init-img", true}, {"--end-img", true}, {"--mask", true}, {"--control-image", true},
    {"--control-video", true}, {"--ip-adapter-image", true}, {"-r", true}, {"--ref-image", true},
    {"--ref-video", true}, {"--ref-video-audio", true}, {"--ref-audio", true},
    {"--pm-id-images-dir", true}, {"--pm-id-embed-path", true}, {"--pulid-id-embedding", true},
    {"--ad-model", true}, {"--ad-prompt", true}, {"--ad-negative-prompt", true},
    {"--extra-ad-args", true}, {"--extra-sample-args", true}, {"--extra-tiling-args", true},
    {"--ref-image-args", true},
    {"--high-noise-steps", true}, {"--clip-skip", true}, {"-b", true}, {"--batch-count", true},
    {"--fps", true}, {"--timestep-shift", true},
    {"--cfg-scale", true}, {"--img-cfg-scale", true}, {"--guidance", true},
    {"--slg-scale", true}, {"--skip-layer-start", true}, {"--skip-layer-end", true},
    {"--skip-layers", true}, {"--eta", true}, {"--flow-shift", true}, {"--strength", true},
    {"--control-strength", true}, {"--pm-style-strength", true}, {"--pulid-id-weight", true},
    {"--ip-adapter-strength", true}, {"--moe-boundary", true}, {"--vace-strength", true},
    {"-s", true}, {"--seed", true}, {"--sampling-method", true},
    {"--high-noise-sampling-method", true}, {"--scheduler", true}, {"--sigmas", true},
    {"--cache-mode", true}, {"--cache-option", true}, {"--scm-mask", true},
    {"--scm-policy", true}, {"--vae-tiling", false}, {"--temporal-tiling", false},
    {"--vae-tile-size", true}, {"--vae-relative-tile-size", true}, {"--vae-tile-overlap", true},
    {"--circular", false}, {"--circularx", false}, {"--circulary", false},
    {"--increase-ref-index", false}, {"--disable-auto-resize-ref-image", false},
    {"--hires", false}, {"--hires-upscaler", true}, {"--hires-width", true},
    {"--hires-height", true}, {"--hires-steps", true}, {"--hires-scale", true},
    {"--hires-denoising-strength", true}, {"--hires-sigmas", true},
    {"--upscale-repeats", true}, {"--upscale-tile-size", true}, {"--canny", false},
    {"-o", true}, {"--output", true}, {"--preview", true}, {"--preview-path", true},
    {"--preview-interval", true}, {"--taesd-preview-only", false}, {"--preview-noisy", false},
    {"--disable-image-metadata", false}, {"--convert-name", false},
};

bool cli_sd_boolean(const char *flag) {
    for (size_t k = 0; k < sizeof ignored / sizeof ignored[0]; k++)
        if (!ignored[k].value && !strcmp(flag, ignored[k].name)) return true;
    return !strcmp(flag, "--stream-layers");
}

int cli_sd_ignored_arg(cli_planargs *a, int argc, char **argv, int *i, const char *cmd) {
    const char *s = argv[*i];
    for (size_t k = 0; k < sizeof ignored / sizeof ignored[0]; k++) {
        const sd_flag *f = &ignored[k];
        size_t n = strlen(f->name);
        if (strncmp(s, f->name, n) != 0 || (s[n] && !(f->value && s[n] == '='))) continue;
        if (f->value && !s[n]) {
            if (*i + 1 >= argc) {
                cli_usage(cmd, "option %s needs a value", f->name);
                return -1;
            }
            ++*i;
        }
        bool seen = false;
        for (size_t j = 0; j < a->n_ignored; j++)
            seen |= a->ignored[j] == f->name;
        if (!seen && a->n_ignored < sizeof a->ignored / sizeof a->ignored[0])
            a->ignored[a->n_ignored++] = f->name;
        return 1;
    }
    return 0;
}

void cli_sd_ignored_note(const cli_planargs *a) {
    if (!a->n_ignored) return;
    fputs("tierload: ignored (stable-diffusion.cpp flags for what tierload does not model):",
          stderr);
    for (size_t j = 0; j < a->n_ignored; j++)
        fprintf(stderr, "%s %s", j ? "," : "", a->ignored[j]);
    fputc('\n', stderr);
}
