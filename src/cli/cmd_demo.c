/*
 * cmd_demo.c — `tierload demo`: the main job on its embedded default.
 *
 * Generates once, in the cache directory ($XDG_CACHE_HOME/tierload, else
 * ~/.cache/tierload), a Stable Diffusion 1.x checkpoint in safetensors with
 * the ldm names stable-diffusion.cpp reads (demo_model.c: CLIP ViT-L/14 text
 * encoder, 235 MiB; UNet of base 256 channels, 1.03 GiB in 24 blocks plus
 * conv_in; SD VAE, 160 MiB; F16, initialised values) and a small kohya LoRA
 * for it that names diffusers modules (the convention stable-diffusion.cpp
 * maps onto ldm names). Later runs reuse both. Then it runs `tierload run`
 * on them with the LoRA and a simulated GPU too small for the whole model,
 * so lazy loads, time-sharing of the GPU between phases and streaming of the
 * UNet all happen, and writes the plan and timeline pictures. Flags after `demo`
 * pass through to `run` (a later flag wins); bare paths replace the demo
 * model (and drop its LoRA).
 */
#include "cli/cli.h"
#include "cli/demo_model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
           "(else ~/.cache/tierload), a deterministic Stable Diffusion 1.x checkpoint that\n"
           "stable-diffusion.cpp loads and draws from (CLIP-L text encoder 235 MiB, UNet of base\n"
           "256 channels 1.03 GiB in 24 blocks, VAE 160 MiB, F16, values of an initialised\n"
           "network) and a small kohya LoRA for it, then runs\n\n"
           "  tierload run MODEL --lora LORA --sim demo-gpu=640M:bw=16G --reserve ... \\\n"
           "               --pipeline 'cond,diffusion*8,vae' --sim-compute 1 \\\n"
           "               --svg PLAN.svg --timeline RUN.svg\n\n"
           "on them: the GPU is too small for the whole model, so components load lazily,\n"
           "time-share it by phase and the UNet streams. Later flags pass through to run and\n"
           "win (another --sim, --pipeline, --json); bare paths replace the demo model and its\n"
           "LoRA.\n\n"
           "  --small          an 88 MiB model of the same layout, narrower (tests, quick trials)\n"
           "  --cache-dir DIR  where the model, the LoRA and the pictures go\n");
    return 0;
}

/* Does flag f (the argument before a bare word) take that word as its value? */
static bool takes_value(const char *f) {
    static const char *const booleans[] = {
        "--json",        "--no-prefetch",  "--no-verify",       "--stream-all",     "--lora-strict",
        "--clip-on-cpu", "--vae-on-cpu",   "--control-net-cpu", "--offload-to-cpu", "--auto-fit",
        "--no-auto-fit", "--no-multi-gpu", "--fit-dry-run",     "--list-devices"};
    if (!f || f[0] != '-' || strchr(f, '=') || cli_sd_boolean(f)) return false;
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
        demo_list ml = {0}, ll = {0};
        demo_model_layout(&ml, small);
        demo_lora_layout(&ml, &ll);
        if (ml.oom || ll.oom) rc = cli_exit_code(TL_ERR_NOMEM);
        uint64_t comp[TL_COMP_COUNT] = {0};
        uint64_t total = demo_list_bytes(&ml, comp);
        char a[32], b[32], c[32], d[32];
        if (!rc && !demo_reusable(model, &ml)) {
            fprintf(say, "generating %s: %s (cond %s, diffusion %s, vae %s), once...\n", model,
                    cli_fmt_size(total, a, sizeof a), cli_fmt_size(comp[TL_COMP_COND], b, sizeof b),
                    cli_fmt_size(comp[TL_COMP_DIFFUSION], c, sizeof c),
                    cli_fmt_size(comp[TL_COMP_VAE], d, sizeof d));
            fflush(say);
            rc = demo_write(model, &ml);
        } else if (!rc) {
            fprintf(say, "reusing %s (%s)\n", model, cli_fmt_size(total, a, sizeof a));
        }
        if (!rc && !demo_reusable(lora, &ll)) rc = demo_write(lora, &ll);
        if (!rc)
            fprintf(say, "LoRA %s: %zu modules (kohya names of diffusers modules)\n\n", lora,
                    ll.n / 3);
        demo_list_free(&ml);
        demo_list_free(&ll);
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
        for (int i = 0; i < n + np; i++)
            printf(" %s", full[i]);
        printf("\n\n");
        fflush(stdout);
    }
    rc = cmd_run(n + np, full);
    if (!rc) fprintf(say, "\npictures: %s (the plan), %s (the run over time)\n", psvg, tsvg);
    free(full);
    free(pass);
    return rc;
}
