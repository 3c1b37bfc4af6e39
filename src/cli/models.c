/*
 * models.c — how the CLI commands name model files: bare paths, plus the
 * component-file flags stable-diffusion.cpp users know (--diffusion-model,
 * --vae, --clip_l, --clip_g, --t5xxl, --llm, --control-net), which give each
 * file's tensors the name prefix that puts them in their component, and its
 * -m / --model FILE for a whole checkpoint (a bare path); --component rules.
 * With --high-noise-diffusion-model (Wan 2.2's first expert, sd.cpp's prefix
 * "model.high_noise_diffusion_model.") that model is diffusion and the one
 * under "model.diffusion_model." diffusion2: sd.cpp samples the high-noise
 * expert first, then the low-noise one.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HIGH_NOISE "model.high_noise_diffusion_model."
/* The rules a high-noise model implies, after the caller's own (which win). */
#define HIGH_NOISE_RULES HIGH_NOISE "=diffusion,model.diffusion_model.=diffusion2"

typedef struct model_flag {
    const char *flag;
    const char *prefix;
} model_flag;

static const model_flag model_flags[] = {
    {"--diffusion-model", "model.diffusion_model."},
    {"--high-noise-diffusion-model", HIGH_NOISE},
    {"--vae", "first_stage_model."},
    {"--clip_l", "text_encoders.clip_l."},
    {"--clip_g", "text_encoders.clip_g."},
    {"--t5xxl", "text_encoders.t5xxl."},
    {"--llm", "text_encoders.llm."},
    {"--control-net", "control_model."},
    {"--model", NULL}, /* a whole checkpoint, as a bare path (stable-diffusion.cpp's -m) */
    {"-m", NULL},
};

const char *cli_models_help(void) {
    return "  --diffusion-model F, --vae F, --clip_l F, --clip_g F, --t5xxl F, --llm F, "
           "--control-net F\n"
           "                  component files (stable-diffusion.cpp style): their tensors get the\n"
           "                  prefix that puts them in that component\n"
           "  --high-noise-diffusion-model F  Wan 2.2's high-noise expert (sd.cpp): it is\n"
           "                  diffusion, run first; --diffusion-model's is then diffusion2\n"
           "  -m F, --model F  = F (a whole checkpoint, stable-diffusion.cpp style)\n"
           "  --component PREFIX=COMP  tensors whose names start with PREFIX belong to COMP\n"
           "                  (diffusion, diffusion2, cond, vae, controlnet, other), before the\n"
           "                  built-in name rules; FILE=COMP where FILE is a model path given\n"
           "                  puts that file's tensors there. Repeatable, comma-separated:\n"
           "                  'high.=diffusion,low.=diffusion2' (two diffusion models: the\n"
           "                  second runs after the first, --steps-2 passes)\n";
}

static bool rules_push(cli_models *m, const char *rule) {
    if (m->n_rules == m->cap_rules) {
        size_t cap = m->cap_rules ? m->cap_rules * 2 : 4;
        const char **p = realloc(m->rules, cap * sizeof *p);
        if (!p) return false;
        m->rules = p;
        m->cap_rules = cap;
    }
    m->rules[m->n_rules++] = rule;
    return true;
}

static bool models_push(cli_models *m, const char *path, const char *prefix) {
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        const char **p = realloc(m->paths, cap * sizeof *p);
        if (!p) return false;
        m->paths = p;
        const char **q = realloc(m->prefixes, cap * sizeof *q);
        if (!q) return false;
        m->prefixes = q;
        m->cap = cap;
    }
    m->paths[m->n] = path;
    m->prefixes[m->n++] = prefix;
    return true;
}

int cli_models_arg(cli_models *m, int argc, char **argv, int *i, const char *cmd) {
    const char *a = argv[*i];
    if (!strcmp(a, "--")) {
        /* the end of options: every argument after it is a model path */
        while (*i + 1 < argc)
            if (!models_push(m, argv[++*i], NULL)) return -1;
        return 1;
    }
    if (!strcmp(a, "--component") || !strncmp(a, "--component=", 12)) {
        const char *rule;
        if (a[11] == '=') {
            rule = a + 12;
        } else if (*i + 1 >= argc) {
            cli_usage(cmd, "option --component needs a value (PREFIX=COMPONENT)");
            return -1;
        } else {
            rule = argv[++*i];
        }
        return rules_push(m, rule) ? 1 : -1;
    }
    for (size_t k = 0; k < sizeof model_flags / sizeof model_flags[0]; k++) {
        const char *flag = model_flags[k].flag;
        size_t n = strlen(flag);
        if (strncmp(a, flag, n) != 0 || (a[n] != 0 && a[n] != '=')) continue;
        const char *file;
        if (a[n] == '=') {
            file = a + n + 1;
        } else if (*i + 1 >= argc) {
            cli_usage(cmd, "option %s needs a file", flag);
            return -1;
        } else {
            file = argv[++*i];
        }
        if (!models_push(m, file, model_flags[k].prefix)) return -1;
        return 1;
    }
    if (a[0] == '-' && a[1]) return 0;
    return models_push(m, a, NULL) ? 1 : -1;
}

/*
 * Split the --component items: one whose left side is a model path given
 * becomes that path's file component (file[p], pointing into buf), the
 * others are joined into names (the library's name rules).
 */
static void split_rules(const cli_models *m, char *buf, char *names, const char **file) {
    size_t w = 0;
    char *at = buf;
    for (size_t r = 0; r < m->n_rules; r++) {
        size_t len = strlen(m->rules[r]);
        memcpy(at, m->rules[r], len + 1);
        for (char *item = at, *save = NULL, *tok; (tok = strtok_r(item, ",", &save)); item = NULL) {
            char *eq = strrchr(tok, '=');
            size_t p = m->n;
            if (eq) {
                *eq = 0;
                for (p = 0; p < m->n && strcmp(m->paths[p], tok); p++) {}
                *eq = '=';
            }
            if (p < m->n) {
                file[p] = eq + 1;
                continue;
            }
            size_t tl = strlen(tok);
            if (w) names[w++] = ',';
            memcpy(names + w, tok, tl);
            w += tl;
        }
        at += len + 1;
    }
    names[w] = 0;
}

tl_status cli_models_open(const cli_models *m, tl_model **out) {
    tl_model_options o;
    tl_model_options_init(&o);
    o.map_flags = TL_MAP_FROM_ENV; /* the CLI honours TIERLOAD_MMAP_FLAGS */
    o.prefixes = m->prefixes;
    o.writable = m->writable;
    size_t total = sizeof HIGH_NOISE_RULES + 1;
    for (size_t r = 0; r < m->n_rules; r++) total += strlen(m->rules[r]) + 1;
    char *buf = malloc(total), *names = malloc(total);
    const char **file = calloc(m->n ? m->n : 1, sizeof *file);
    tl_status st = TL_OK;
    if (!buf || !names || !file) {
        fprintf(stderr, "tierload: out of memory\n");
        st = TL_ERR_NOMEM;
    }
    if (!st) {
        split_rules(m, buf, names, file);
        bool high = false;
        for (size_t i = 0; i < m->n; i++)
            high |= m->prefixes[i] && !strcmp(m->prefixes[i], HIGH_NOISE);
        if (high) strcat(strcat(names, names[0] ? "," : ""), HIGH_NOISE_RULES);
        o.components = names;
        o.file_components = file;
        st = tl_model_open(m->paths, m->n, &o, out);
    }
    free(buf);
    free(names);
    free(file);
    return st;
}

void cli_models_free(cli_models *m) {
    free(m->paths);
    free(m->prefixes);
    free(m->rules);
    memset(m, 0, sizeof *m);
}
