/*
 * models.c — how the CLI commands name model files: bare paths, plus the
 * component-file flags stable-diffusion.cpp users know (--diffusion-model,
 * --vae, --clip_l, --clip_g, --t5xxl, --llm, --control-net), which give each
 * file's tensors the name prefix that puts them in their component, and its
 * -m / --model FILE for a whole checkpoint (a bare path).
 */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>

typedef struct model_flag {
    const char *flag;
    const char *prefix;
} model_flag;

static const model_flag model_flags[] = {
    {"--diffusion-model", "model.diffusion_model."},
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
           "  -m F, --model F  = F (a whole checkpoint, stable-diffusion.cpp style)\n";
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

tl_status cli_models_open(const cli_models *m, tl_model **out) {
    tl_model_options o;
    tl_model_options_init(&o);
    o.map_flags = TL_MAP_FROM_ENV; /* the CLI honours TIERLOAD_MMAP_FLAGS */
    o.prefixes = m->prefixes;
    o.writable = m->writable;
    return tl_model_open(m->paths, m->n, &o, out);
}

void cli_models_free(cli_models *m) {
    free(m->paths);
    free(m->prefixes);
    memset(m, 0, sizeof *m);
}
