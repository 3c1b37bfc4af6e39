/*
 * loras.c — the --lora FILE[:SCALE] and --lora-strict flags that `run` and
 * `merge` share: parse, open, apply through a tl_lora_set, report matches.
 */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>

const char *cli_loras_help(void) {
    return "  --lora FILE[:SCALE]  merge a LoRA (safetensors or GGUF; repeatable; scale 1 by\n"
           "                       default) into the weights in place, in this process only\n"
           "  --lora-strict        a LoRA key that matches no tensor, or is not applied (a tensor\n"
           "                       named twice, an ambiguous name, two parts of one kind), is\n"
           "                       an error\n";
}

int cli_loras_arg(cli_loras *l, int argc, char **argv, int *i, const char *cmd) {
    if (!strcmp(argv[*i], "--lora-strict")) {
        l->strict = true;
        return 1;
    }
    const char *v = NULL;
    int r = cli_opt(argc, argv, i, cmd, "--lora", &v);
    if (r <= 0) return r;
    char *path = strdup(v);
    const char **pv = realloc(l->paths, (l->n + 1) * sizeof *pv);
    if (pv) l->paths = pv;
    float *sv = realloc(l->scales, (l->n + 1) * sizeof *sv);
    if (sv) l->scales = sv;
    if (!path || !pv || !sv) {
        free(path);
        cli_usage(cmd, "out of memory");
        return -1;
    }
    float scale = 1.0f;
    char *colon = strrchr(path, ':');
    if (colon && colon[1]) {
        char *end;
        double d = strtod(colon + 1, &end);
        if (!*end) { /* FILE:SCALE; otherwise the colon belongs to the file name */
            if (!(d == d) || d > 1e6 || d < -1e6) {
                free(path);
                cli_usage(cmd, "--lora %s: bad scale", v);
                return -1;
            }
            scale = (float)d;
            *colon = 0;
        }
    }
    l->paths[l->n] = path;
    l->scales[l->n++] = scale;
    return 1;
}

int cli_loras_apply(cli_loras *l, tl_model *m, tl_session *s, FILE *out) {
    if (!l->n) return 0;
    l->open = calloc(l->n, sizeof *l->open);
    l->reports = calloc(l->n, sizeof *l->reports);
    if (!l->open || !l->reports) return cli_exit_code(TL_ERR_NOMEM);
    tl_status st = tl_lora_set_create(m, s, &l->set);
    for (size_t i = 0; i < l->n && !st; i++) {
        st = tl_lora_open(l->paths[i], &l->open[i]);
        if (st) break;
        tl_lora_report r;
        st = tl_lora_match(m, l->open[i], &r, sizeof r);
        if (st) break;
        if (r.n_unmatched) {
            fprintf(stderr,
                    "tierload: %s: %zu of %zu LoRA keys match no tensor or are not applied:",
                    l->paths[i], r.n_unmatched, r.n_unmatched + r.n_matched);
            for (size_t k = 0; k < r.n_unmatched && k < TL_LORA_REPORT_NAMES; k++)
                fprintf(stderr, " %s", r.unmatched[k]);
            fprintf(stderr, "%s\n", r.n_unmatched > TL_LORA_REPORT_NAMES ? " ..." : "");
            if (l->strict) {
                fprintf(stderr, "tierload: %s: unmatched LoRA keys (--lora-strict)\n", l->paths[i]);
                return cli_exit_code(TL_ERR_NOT_FOUND);
            }
        }
        st = tl_lora_set_add(l->set, l->open[i], l->scales[i], &r, sizeof r);
        if (!st) l->reports[i] = r;
        if (!st && out)
            fprintf(out, "LoRA %s (scale %g): %zu modules merged, %zu unmatched\n", l->paths[i],
                    (double)l->scales[i], r.n_matched, r.n_unmatched);
    }
    return st ? cli_fail(st) : 0;
}

void cli_loras_free(cli_loras *l) {
    tl_lora_set_destroy(l->set);
    for (size_t i = 0; i < l->n; i++) {
        if (l->open) tl_lora_close(l->open[i]);
        free((char *)l->paths[i]);
    }
    free(l->open);
    free(l->reports);
    free(l->paths);
    free(l->scales);
    memset(l, 0, sizeof *l);
}
