/*
 * planargs.c — the planning flags `plan` and `run` share (--backend,
 * --max-vram, --devices, --sim, ...), and building a plan from them exactly
 * as `tierload plan` does, so `run` carries out the plan `plan` shows.
 */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>

const char *cli_planargs_help(void) {
    return "  --devices SPEC       hypothetical devices: 'cuda0=16G,cuda1=10G[,cpu=64G]'\n"
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
           "  --offload-to-cpu     parameters stay in RAM and are streamed to the GPU\n";
}

int cli_planargs_arg(cli_planargs *a, int argc, char **argv, int *i, const char *cmd) {
    const char *s = argv[*i];
    if (!strcmp(s, "--clip-on-cpu"))
        a->o.clip_on_cpu = true;
    else if (!strcmp(s, "--vae-on-cpu"))
        a->o.vae_on_cpu = true;
    else if (!strcmp(s, "--control-net-cpu"))
        a->o.controlnet_on_cpu = true;
    else if (!strcmp(s, "--offload-to-cpu"))
        a->o.offload_to_cpu = true;
    else {
        static const char *const opts[] = {"--devices", "--sim",    "--backend", "--max-vram",
                                           "--headroom", "--reserve", "--phases", "--size",
                                           "--type",    "--steps"};
        const char **slots[] = {&a->devices,    &a->sim,       &a->o.backend, &a->o.max_vram,
                                &a->headroom,   &a->o.reserve, &a->o.phases,  &a->o.output_size,
                                &a->type,       &a->steps};
        for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) {
            int r = cli_opt(argc, argv, i, cmd, opts[k], slots[k]);
            if (r) return r;
        }
        return 0;
    }
    return 1;
}

/*
 * The real devices from the registry; GPUs beyond what a plan holds are left
 * out with a warning naming them (the last registered ones).
 */
static tl_status real_devices(tl_plan_device *out, size_t cap, size_t *n) {
    size_t dropped = 0;
    tl_status s = tl_plan_devices_from_registry(out, cap, n, &dropped);
    if (s || !dropped) return s;
    size_t kept = 0;
    for (size_t i = 0; i < *n; i++)
        kept += out[i].is_gpu;
    fprintf(stderr, "tierload: %zu GPUs registered, a plan uses at most %zu; left out:",
            kept + dropped, kept);
    size_t count = tl_device_list(NULL, 0), gpu = 0;
    tl_device **list = calloc(count ? count : 1, sizeof *list);
    if (list) {
        size_t got = tl_device_list(list, count);
        if (got < count) count = got;
    }
    for (size_t i = 0; list && i < count; i++) {
        if (tl_device_kind_of(list[i]) == TL_DEVICE_CPU) continue;
        if (gpu++ >= kept) fprintf(stderr, " %s", tl_device_name(list[i]));
    }
    if (list) tl_device_list_release(list, count);
    fprintf(stderr, "%s\n", list ? "" : " (names unavailable)");
    free(list);
    return TL_OK;
}

int cli_planargs_check(cli_planargs *a, const char *cmd) {
    if (a->devices && a->sim)
        return cli_usage(
            cmd, "--devices (hypothetical) and --sim (real + simulated) exclude each other");
    if (a->headroom) {
        tl_status s = tl_parse_bytes(a->headroom, &a->o.headroom, NULL);
        if (s) return cli_fail(s);
    }
    if (a->steps) {
        uint64_t n;
        if (!cli_parse_count(a->steps, 100000, &n) || n == 0)
            return cli_usage(cmd, "--steps: expected 1..100000, got '%s'", a->steps);
        a->o.steps = (uint32_t)n;
    }
    a->convert = TL_DTYPE_INVALID;
    if (a->type) {
        a->convert = tl_dtype_from_name(a->type);
        if (a->convert == TL_DTYPE_INVALID)
            return cli_usage(cmd, "--type: unknown type '%s'", a->type);
    }
    return 0;
}

tl_status cli_planargs_plan(cli_planargs *a, const tl_plan_summary *sum, tl_plan **out) {
    tl_plan_device devs[TL_PLAN_MAX_DEVICES];
    size_t n_devs = 0;
    tl_status s;
    if (a->devices) {
        s = tl_plan_parse_devices(a->devices, devs, TL_PLAN_MAX_DEVICES, &n_devs);
    } else {
        s = a->sim && !a->sim_added ? tl_device_sim_add(a->sim) : TL_OK;
        a->sim_added = true;
        if (!s) s = real_devices(devs, TL_PLAN_MAX_DEVICES, &n_devs);
    }
    if (s) return s;
    return tl_plan_create(sum, devs, n_devs, &a->o, out);
}

/* Print a planning error in the CLI's words: the library names spec fields, the CLI its flags. */
int cli_plan_fail(tl_status s) {
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
