/*
 * cmd_plan.c — `tierload plan MODEL... | --profile NAME`: where every
 * component goes under the device budgets, for the real devices (and --sim
 * ones) or for hypothetical hardware (--devices 'cuda0=16G,cuda1=10G'); the
 * human form or --json (the document `tierload run --plan FILE` accepts).
 */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int help(void) {
    printf(
        "usage: tierload plan MODEL... [options]\n"
        "       tierload plan --profile NAME [options]\n\n"
        "Plan where each component (diffusion, cond, vae, controlnet) goes under memory budgets.\n"
        "Pure: nothing is loaded. Exit status 11 when the plan does not fit.\n\n"
        "  --profile NAME       plan a built-in synthetic model instead of files (%s)\n"
        "  --devices SPEC       hypothetical devices: 'cuda0=16G,cuda1=10G[,cpu=64G]'\n"
        "  --sim SPEC           add simulated GPUs to the real devices ('gpu0=8G')\n"
        "  --backend SPEC       placements: 'cond=cpu,vae=cuda0,diffusion=cuda0&cuda1';\n"
        "                       '*=', 'all=', 'default=' or a bare name set the default;\n"
        "                       'auto'/'gpu' = the GPU with the most free memory\n"
        "  --max-vram SPEC      cap GPU budgets: '8G', '-2G' (free minus 2G), 'cuda0=6G,cuda1=4G'\n"
        "  --headroom SIZE      VRAM kept free on every GPU for other programs\n"
        "  --reserve SPEC       compute reserves: 'diffusion=3G,vae=512M'\n"
        "                       (defaults diffusion 2G, vae 1G, cond 512M, controlnet 512M)\n"
        "  --phases SPEC        phase schedule (default 'cond,diffusion+controlnet,vae')\n"
        "  --size WxH[xT]       output size: decides VAE tiling\n"
        "  --type DTYPE         plan for weights converted to DTYPE (q8_0, f16, ...)\n"
        "  --steps N            diffusion passes per run, for bytes streamed (default 20)\n"
        "  --clip-on-cpu        = --backend cond=cpu\n"
        "  --vae-on-cpu         = --backend vae=cpu\n"
        "  --control-net-cpu    = --backend controlnet=cpu\n"
        "  --offload-to-cpu     parameters stay in RAM and are streamed to the GPU\n"
        "  --json               print the plan as JSON\n",
        tl_plan_profile_names());
    fputs(cli_models_help(), stdout);
    return 0;
}

/* Value of --opt VALUE or --opt=VALUE; NULL when argv[*i] is not opt. */
static const char *opt_value(int argc, char **argv, int *i, const char *opt, bool *missing) {
    size_t n = strlen(opt);
    const char *a = argv[*i];
    if (strncmp(a, opt, n) != 0) return NULL;
    if (a[n] == '=') return a + n + 1;
    if (a[n] != 0) return NULL;
    if (*i + 1 >= argc) {
        *missing = true;
        return NULL;
    }
    return argv[++*i];
}

/* The real devices from the registry: cpu as the host, everything else as a GPU. */
static tl_status real_devices(tl_plan_device *out, size_t cap, size_t *n) {
    tl_device *list[TL_PLAN_MAX_DEVICES];
    size_t count = tl_device_list(list, TL_PLAN_MAX_DEVICES);
    if (count > TL_PLAN_MAX_DEVICES) count = TL_PLAN_MAX_DEVICES;
    *n = 0;
    for (size_t i = 0; i < count && *n < cap; i++) {
        tl_device_info info;
        tl_status s = tl_device_describe(list[i], &info);
        if (s) {
            tl_device_list_release(list, count);
            return s;
        }
        tl_plan_device *d = &out[(*n)++];
        memset(d, 0, sizeof *d);
        snprintf(d->name, sizeof d->name, "%s", info.name);
        d->is_gpu = info.kind != TL_DEVICE_CPU;
        d->total = info.total;
        d->free = info.free;
    }
    tl_device_list_release(list, count);
    return TL_OK;
}

static int plan_main(int argc, char **argv, cli_models *models);

/*
 * Print a planner failure in the CLI's words: the library names specs and
 * options by their tl_plan_options fields; the CLI names its flags.
 */
static int plan_fail(tl_status s) {
    static const char *const words[][2] = {
        {"a max_vram cap of ", "--max-vram "},
        {"max_vram spec", "--max-vram"},
        {"device spec", "--devices"},
        {"backend spec", "--backend"},
        {"reserve spec", "--reserve"},
        {"size spec", "--size"},
        {"phase spec", "--phases"},
        {"offload_to_cpu", "--offload-to-cpu"},
        {"clip_on_cpu", "--clip-on-cpu"},
        {"vae_on_cpu", "--vae-on-cpu"},
        {"controlnet_on_cpu", "--control-net-cpu"},
    };
    const char *msg = tl_last_error();
    if (!msg || !*msg) return cli_fail(s);
    fputs("tierload: ", stderr);
    while (*msg) {
        size_t k = 0, n = sizeof words / sizeof words[0];
        while (k < n && strncmp(msg, words[k][0], strlen(words[k][0])) != 0)
            k++;
        if (k < n) {
            fputs(words[k][1], stderr);
            msg += strlen(words[k][0]);
        } else {
            fputc(*msg++, stderr);
        }
    }
    fputc('\n', stderr);
    return cli_exit_code(s);
}

/* Owns the model list, so every return path of plan_main frees it. */
int cmd_plan(int argc, char **argv) {
    cli_models models = {0};
    int rc = plan_main(argc, argv, &models);
    cli_models_free(&models);
    return rc;
}

static int plan_main(int argc, char **argv, cli_models *models) {
    const char *profile = NULL, *devices = NULL, *sim = NULL, *type = NULL, *steps = NULL,
               *headroom = NULL;
    tl_plan_options o;
    tl_plan_options_init(&o);
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        bool missing = false;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return help();
        else if (!strcmp(a, "--json"))
            json = true;
        else if (!strcmp(a, "--clip-on-cpu"))
            o.clip_on_cpu = true;
        else if (!strcmp(a, "--vae-on-cpu"))
            o.vae_on_cpu = true;
        else if (!strcmp(a, "--control-net-cpu"))
            o.controlnet_on_cpu = true;
        else if (!strcmp(a, "--offload-to-cpu"))
            o.offload_to_cpu = true;
        else if ((v = opt_value(argc, argv, &i, "--profile", &missing)))
            profile = v;
        else if ((v = opt_value(argc, argv, &i, "--devices", &missing)))
            devices = v;
        else if ((v = opt_value(argc, argv, &i, "--sim", &missing)))
            sim = v;
        else if ((v = opt_value(argc, argv, &i, "--backend", &missing)))
            o.backend = v;
        else if ((v = opt_value(argc, argv, &i, "--max-vram", &missing)))
            o.max_vram = v;
        else if ((v = opt_value(argc, argv, &i, "--headroom", &missing)))
            headroom = v;
        else if ((v = opt_value(argc, argv, &i, "--reserve", &missing)))
            o.reserve = v;
        else if ((v = opt_value(argc, argv, &i, "--phases", &missing)))
            o.phases = v;
        else if ((v = opt_value(argc, argv, &i, "--size", &missing)))
            o.output_size = v;
        else if ((v = opt_value(argc, argv, &i, "--type", &missing)))
            type = v;
        else if ((v = opt_value(argc, argv, &i, "--steps", &missing)))
            steps = v;
        else if (missing)
            return cli_usage("plan", "%s needs a value", a);
        else {
            int r = cli_models_arg(models, argc, argv, &i, "plan");
            if (r <= 0) return r < 0 ? 2 : cli_usage("plan", "unknown option '%s'", a);
        }
    }
    size_t n_paths = models->n;
    if (!profile && !n_paths) return cli_usage("plan", "give MODEL files or --profile NAME");
    if (profile && n_paths) return cli_usage("plan", "give MODEL files or --profile, not both");
    if (devices && sim)
        return cli_usage(
            "plan", "--devices (hypothetical) and --sim (real + simulated) exclude each other");
    if (headroom) {
        tl_status s = tl_plan_parse_bytes(headroom, &o.headroom, NULL);
        if (s) return plan_fail(s);
    }
    if (steps) {
        char *end;
        unsigned long v = strtoul(steps, &end, 10);
        if (*end || v == 0 || v > 100000)
            return cli_usage("plan", "--steps: expected 1..100000, got '%s'", steps);
        o.steps = (uint32_t)v;
    }
    tl_dtype convert = TL_DTYPE_INVALID;
    if (type) {
        convert = tl_dtype_from_name(type);
        if (convert == TL_DTYPE_INVALID)
            return cli_usage("plan", "--type: unknown type '%s'", type);
    }

    tl_plan_device devs[TL_PLAN_MAX_DEVICES];
    size_t n_devs = 0;
    tl_status s;
    if (devices) {
        s = tl_plan_parse_devices(devices, devs, TL_PLAN_MAX_DEVICES, &n_devs);
    } else {
        s = sim ? tl_device_sim_add(sim) : TL_OK;
        if (!s) s = real_devices(devs, TL_PLAN_MAX_DEVICES, &n_devs);
    }
    if (s) return plan_fail(s);

    tl_plan_summary sum;
    tl_model *m = NULL;
    if (profile) {
        s = tl_plan_summary_profile(profile, &sum);
    } else {
        s = cli_models_open(models, &m);
        if (!s) s = tl_plan_summary_from_model(m, convert, &sum);
        tl_model_close(m);
    }
    if (s) return plan_fail(s);
    if (profile && type)
        fprintf(stderr,
                "tierload plan: --type is ignored with --profile (profiles have fixed sizes)\n");

    tl_plan *plan = NULL;
    s = tl_plan_create(&sum, devs, n_devs, &o, &plan);
    tl_plan_summary_free(&sum);
    if (s) return plan_fail(s);
    char *text = NULL;
    s = json ? tl_plan_to_json(plan, &text) : tl_plan_to_text(plan, &text);
    if (s) {
        tl_plan_free(plan);
        return plan_fail(s);
    }
    fputs(text, stdout);
    if (json) fputc('\n', stdout);
    tl_free(text);
    s = tl_plan_check(plan);
    tl_plan_free(plan);
    if (s) return plan_fail(s);
    return 0;
}
