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
           "  --rpc LIST           add the devices of ggml RPC servers 'HOST:PORT[@BW][,...]'\n"
           "                       (ggml-rpc-server; devices rpcS:D; BW the link's bytes/s or\n"
           "                       bits/s as 10gbit, else measured); --rpc-servers = --rpc\n"
           "  --links SPEC         network links of devices, 'rpc0:0=1.25G:lat=200us,...'\n"
           "                       (bytes/s, round trip): link time per run is planned;\n"
           "                       default: the links --rpc measured or was given\n"
           "  --backend SPEC       placements: 'cond=cpu,vae=cuda0,diffusion=cuda0&cuda1';\n"
           "                       '*=', 'all=', 'default=' or a bare name set the default;\n"
           "                       'auto'/'gpu' = the GPU with the most free memory\n"
           "  --max-vram SPEC      cap GPU budgets: '8G', '-2G' (free minus 2G), "
           "'cuda0=6G,cuda1=4G'\n"
           "  --headroom SIZE      VRAM kept free on every GPU for other programs\n"
           "  --reserve SPEC       compute reserves: 'diffusion=3G,vae=512M'\n"
           "                       (defaults diffusion 2G, vae 1G, cond 512M, controlnet 512M,\n"
           "                       diffusion2 2G)\n"
           "  --phases SPEC        phase schedule (default 'cond,diffusion+controlnet,vae';\n"
           "                       a model with diffusion2 gets its phase after diffusion's)\n"
           "  --size WxH[xT]       output size: decides VAE tiling\n"
           "  --type DTYPE         plan for weights converted to DTYPE (q8_0, f16, ...);\n"
           "                       run: its session keeps them so on the devices\n"
           "  --tensor-type-rules PATTERN=TYPE,...\n"
           "                       per tensor (stable-diffusion.cpp's flag): the first PATTERN\n"
           "                       (a regular expression) found in a tensor's name gives its\n"
           "                       type (f32, f16, bf16, q8_0, q4_0); others follow --type:\n"
           "                       --tensor-type-rules '^vae\\.=f16,model\\.=q8_0'\n"
           "  --steps N            diffusion passes per run, for bytes streamed (default 20;\n"
           "                       run: the passes its --pipeline makes)\n"
           "  --override-tensor PATTERN=DEVICE, -ot PATTERN=DEVICE\n"
           "                       tensors whose names match PATTERN (a regular expression,\n"
           "                       llama.cpp's -ot: \\d \\w \\s \\. understood) stay on DEVICE for\n"
           "                       the whole run; the first matching pattern wins; the rest\n"
           "                       is planned as usual. Repeatable, comma-separated:\n"
           "                       -ot 'ffn_.*_exps=cpu,blk\\.0\\.=cuda0'\n"
           "  --steps-2 N          passes of the second diffusion model (diffusion2, after\n"
           "                       the first; default: --steps)\n"
           "  --clip-on-cpu        = --backend cond=cpu\n"
           "  --vae-on-cpu         = --backend vae=cpu\n"
           "  --control-net-cpu    = --backend controlnet=cpu\n"
           "  --offload-to-cpu     parameters stay in RAM and are streamed to the GPU\n"
           "  --offload LIST       the same for these components only: 'diffusion,cond' ('all')\n"
           "  --phase-resident LIST  these components are loaded from the file for their\n"
           "                       phases and dropped after: 'diffusion' ('all')\n"
           "  --split SPEC         on several GPUs split by 'layer' or 'row', or per component:\n"
           "                       'diffusion=row,cond=layer' (default: the planner chooses)\n"
           "  --svg FILE           also draw the plan: per GPU a stacked bar per phase\n"
           "stable-diffusion.cpp's flags (aliases):\n"
           "  --main-backend-device DEV        = --backend default=DEV\n"
           "  --diffusion-backend-device DEV   = --backend diffusion=DEV\n"
           "  --clip-backend-device DEV        = --backend cond=DEV\n"
           "  --vae-backend-device DEV         = --backend vae=DEV\n"
           "  --control-net-backend-device DEV = --backend controlnet=DEV\n"
           "  --tae-backend-device, --upscaler-backend-device, --photomaker-backend-device,\n"
           "  --vision-backend-device DEV      = accepted; tierload models no such component\n"
           "  --list-devices                   = tierload devices (then stop)\n"
           "  --params-backend cpu             = --offload-to-cpu\n"
           "  --params-backend disk            = --phase-resident all\n"
           "  --params-backend te=cpu,vae=cpu,diffusion=disk\n"
           "                                   = --offload cond,vae --phase-resident diffusion\n"
           "                                     (a device: where the module runs, the default;\n"
           "                                     with --offload-to-cpu every module not named\n"
           "                                     is cpu)\n"
           "  --stream-layers                  = --offload diffusion (also without CPU params:\n"
           "                                     tierload streams from the file's mapping;\n"
           "                                     ignored when the diffusion params are disk or a\n"
           "                                     device)\n"
           "  --split-mode layer|row|SPEC      = --split SPEC ('diffusion=row,te=layer')\n"
           "  --max-vram 6 | -1 | cuda0=6,vulkan0=2\n"
           "                                   = --max-vram 6G | -1G | cuda0=6G,vulkan0=2G\n"
           "                                     (GiB without a unit; 0: no cap)\n"
           "  module names: te (= cond; clip, text, textencoder, conditioner, llm, t5, t5xxl),\n"
           "  diffusion (model, unet, dit), vae (tae), controlnet (control), case and '-'/'_'\n"
           "  ignored; clip_vision, photomaker, upscaler, detector (and their aliases) are\n"
           "  accepted with a note: tierload models no such component\n"
           "  -W W -H H [--video-frames T]     = --size WxH[xT]\n"
           "  -p, --diffusion-fa, --cfg-scale, --sampling-method, --seed, ... = accepted and\n"
           "                                     ignored with one note (not modelled)\n"
           "  --auto-fit                       = auto-fit every component (the default);\n"
           "                                     --backend and --params-backend are ignored\n"
           "                                     with a note, as in stable-diffusion.cpp\n"
           "  --no-auto-fit                    = --backend default=MAIN (the main device, else "
           "the\n"
           "                                     first GPU)\n"
           "  --no-multi-gpu                   = only the main GPU (else the first) is planned on\n"
           "  --fit-target SIZE                = --headroom SIZE\n"
           "  --fit-compute-reserve-dit SIZE   = --reserve diffusion=SIZE\n"
           "  --fit-compute-reserve-vae SIZE   = --reserve vae=SIZE\n"
           "  --fit-compute-reserve-cond SIZE  = --reserve cond=SIZE\n"
           "  --fit-dry-run                    = print the plan and stop\n";
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
    else if (!strcmp(s, "--auto-fit")) {
        a->no_auto_fit = false;
        a->auto_fit = true;
    }
    else if (!strcmp(s, "--no-auto-fit"))
        a->no_auto_fit = true;
    else if (!strcmp(s, "--no-multi-gpu"))
        a->no_multi_gpu = true;
    else if (!strcmp(s, "--fit-dry-run"))
        a->fit_dry_run = true;
    else if (!strcmp(s, "--list-devices"))
        a->list_devices = true;
    else if (!strcmp(s, "--stream-layers"))
        a->stream_layers = true;
    else {
        /* module assignments given more than once are joined with ',' (as sd-cli does) */
        static const char *const joined[] = {"--backend",    "--params-backend",
                                             "--split",      "--split-mode",
                                             "--override-tensor", "-ot"};
        for (size_t k = 0; k < sizeof joined / sizeof joined[0]; k++) {
            const char *v = NULL;
            int r = cli_opt(argc, argv, i, cmd, joined[k], &v);
            if (r < 0) return r;
            if (!r) continue;
            const char **slot = k == 0   ? &a->o.backend
                                : k == 1 ? &a->params_backend
                                : k == 2 ? &a->split
                                : k == 3 ? &a->split_mode
                                         : &a->o.overrides;
            char *buf = a->joined[k < 4 ? k : 4];
            if (*slot) {
                size_t o = strlen(*slot), n = strlen(v);
                if (o + n + 2 > sizeof a->joined[0]) {
                    cli_usage(cmd, "%s: too long", joined[k]);
                    return -1;
                }
                if (*slot != buf) memcpy(buf, *slot, o + 1);
                buf[o] = ',';
                memcpy(buf + o + 1, v, n + 1);
                *slot = buf;
            } else {
                *slot = v;
            }
            return 1;
        }
        static const char *const opts[] = {"--devices",
                                           "--sim",
                                           "--rpc",
                                           "--rpc-servers",
                                           "--links",
                                           "--max-vram",
                                           "--headroom",
                                           "--reserve",
                                           "--phases",
                                           "--size",
                                           "--type",
                                           "--tensor-type-rules",
                                           "--steps",
                                           "--steps-2",
                                           "--svg",
                                           "--offload",
                                           "--phase-resident",
                                           "--main-backend-device",
                                           "--diffusion-backend-device",
                                           "--clip-backend-device",
                                           "--vae-backend-device",
                                           "--control-net-backend-device",
                                           "--fit-target",
                                           "--fit-compute-reserve-dit",
                                           "--fit-compute-reserve-vae",
                                           "--fit-compute-reserve-cond",
                                           "-W",
                                           "--width",
                                           "-H",
                                           "--height",
                                           "--video-frames"};
        const char **slots[] = {&a->devices,
                                &a->sim,
                                &a->rpc,
                                &a->rpc,
                                &a->o.links,
                                &a->o.max_vram,
                                &a->headroom,
                                &a->o.reserve,
                                &a->o.phases,
                                &a->o.output_size,
                                &a->type,
                                &a->o.type_rules,
                                &a->steps,
                                &a->steps2,
                                &a->svg,
                                &a->offload,
                                &a->phase_resident,
                                &a->main_dev,
                                &a->comp_dev[TL_COMP_DIFFUSION],
                                &a->comp_dev[TL_COMP_COND],
                                &a->comp_dev[TL_COMP_VAE],
                                &a->comp_dev[TL_COMP_CONTROLNET],
                                &a->fit_target,
                                &a->fit_reserve[TL_COMP_DIFFUSION],
                                &a->fit_reserve[TL_COMP_VAE],
                                &a->fit_reserve[TL_COMP_COND],
                                &a->width,
                                &a->width,
                                &a->height,
                                &a->height,
                                &a->frames};
        for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) {
            int r = cli_opt(argc, argv, i, cmd, opts[k], slots[k]);
            if (r) return r;
        }
        static const char *const unmodelled[] = {
            "--tae-backend-device", "--upscaler-backend-device", "--photomaker-backend-device",
            "--vision-backend-device"};
        for (size_t k = 0; k < sizeof unmodelled / sizeof unmodelled[0]; k++) {
            const char *v = NULL;
            int r = cli_opt(argc, argv, i, cmd, unmodelled[k], &v);
            if (r < 0) return r;
            if (r > 0) {
                fprintf(stderr,
                        "tierload: %s %s: accepted; tierload has no such component to place\n",
                        unmodelled[k], v);
                return 1;
            }
        }
        return cli_sd_ignored_arg(a, argc, argv, i, cmd);
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
    fprintf(stderr,
            "tierload: %zu GPUs registered, a plan uses at most %zu; left out:", kept + dropped,
            kept);
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

/* Append "key=value" to a comma list in buf. */
static bool spec_add(char *buf, size_t n, const char *key, const char *value) {
    size_t o = strlen(buf);
    int w = snprintf(buf + o, n - o, "%s%s=%s", o ? "," : "", key, value);
    return w > 0 && (size_t)w < n - o;
}

/* Fold the stable-diffusion.cpp aliases into the canonical options. */
static int fold_aliases(cli_planargs *a, const char *cmd) {
    if (a->list_devices) {
        char *argv[5] = {"devices"};
        int n = 1;
        if (a->sim) {
            argv[n++] = "--sim";
            argv[n++] = (char *)a->sim;
        }
        if (a->rpc) {
            argv[n++] = "--rpc";
            argv[n++] = (char *)a->rpc;
        }
        argv[n] = NULL;
        int rc = cmd_devices(n, argv);
        if (a->sim) a->sim_added = true;
        return rc ? rc : -1;
    }
    if (a->fit_target) {
        if (a->headroom) return cli_usage(cmd, "--fit-target is --headroom: give one of them");
        a->headroom = a->fit_target;
    }
    if (a->width && a->height) {
        if (a->o.output_size) return cli_usage(cmd, "-W/-H are --size: give one of them");
        int w = snprintf(a->size_buf, sizeof a->size_buf, "%sx%s%s%s", a->width, a->height,
                         a->frames ? "x" : "", a->frames ? a->frames : "");
        if (w < 0 || (size_t)w >= sizeof a->size_buf) return cli_usage(cmd, "-W/-H: too long");
        a->o.output_size = a->size_buf;
    } else if (a->width || a->height || a->frames) {
        fprintf(stderr, "tierload: %s: ignored (the output size needs both -W and -H)\n",
                a->width ? "-W" : a->height ? "-H" : "--video-frames");
    }
    if (a->auto_fit && (a->o.backend || a->params_backend)) {
        fprintf(stderr, "tierload: --auto-fit: %s%s%s ignored (auto-fit places every component, as "
                        "in stable-diffusion.cpp)\n",
                a->o.backend ? "--backend" : "", a->o.backend && a->params_backend ? " and " : "",
                a->params_backend ? "--params-backend" : "");
        a->o.backend = NULL;
        a->params_backend = NULL;
    }
    if (a->o.backend) {
        int r = cli_sd_backend_filter(a->o.backend, a->backend_own, sizeof a->backend_own, cmd);
        if (r) return r;
        a->o.backend = a->backend_own[0] ? a->backend_own : NULL;
    }
    /* parameter residency per module: 0 cpu (streamed from RAM), 1 disk (per phase), 2 device */
    int par[TL_COMP_COUNT], pdef = -1;
    for (int c = 0; c < TL_COMP_COUNT; c++)
        par[c] = -1;
    if (a->params_backend) {
        static const char *const values[] = {"cpu", "disk"};
        int r = cli_sd_assign(a->params_backend, values, 2, a->params_dev, par, &pdef,
                              "--params-backend", cmd);
        if (r) return r;
        if (a->o.offload_to_cpu && pdef < 0) pdef = 0; /* --offload-to-cpu is "*=cpu" before it */
        uint32_t cpu = 0, disk = 0;
        for (int c = 0; c < TL_COMP_COUNT; c++) {
            int v = par[c] >= 0 ? par[c] : pdef;
            cpu |= (v == 0 ? 1u : 0u) << c;
            disk |= (v == 1 ? 1u : 0u) << c;
        }
        a->o.offload_to_cpu = cpu == (1u << TL_COMP_COUNT) - 1;
        if (!a->o.offload_to_cpu) a->o.offload |= cpu;
        a->o.phase_only |= disk;
    }
    if (a->stream_layers) {
        int v = par[TL_COMP_DIFFUSION] >= 0 ? par[TL_COMP_DIFFUSION] : pdef;
        if (v > 0)
            fprintf(stderr,
                    "tierload: --stream-layers: ignored: the diffusion parameters are on %s, "
                    "not cpu (as stable-diffusion.cpp does)\n",
                    v == 1 ? "disk" : "a device");
        else if (!a->o.offload_to_cpu)
            a->o.offload |= 1u << TL_COMP_DIFFUSION;
    }
    bool any_res = false;
    for (int c = 0; c < TL_COMP_COUNT; c++)
        any_res |= a->fit_reserve[c] != NULL;
    if (any_res) {
        a->reserve_buf[0] = 0;
        if (a->o.reserve) snprintf(a->reserve_buf, sizeof a->reserve_buf, "%s", a->o.reserve);
        for (int c = 0; c < TL_COMP_COUNT; c++)
            if (a->fit_reserve[c] &&
                !spec_add(a->reserve_buf, sizeof a->reserve_buf, tl_component_name((tl_component)c),
                          a->fit_reserve[c]))
                return cli_usage(cmd, "--fit-compute-reserve-*: too long");
        a->o.reserve = a->reserve_buf;
    }
    bool any_dev = a->main_dev != NULL;
    for (int c = 0; c < TL_COMP_COUNT; c++)
        any_dev |= a->comp_dev[c] != NULL;
    if (any_dev) {
        a->backend_buf[0] = 0;
        if (a->o.backend) snprintf(a->backend_buf, sizeof a->backend_buf, "%s", a->o.backend);
        for (int c = 0; c < TL_COMP_COUNT; c++)
            if (a->comp_dev[c] && !spec_add(a->backend_buf, sizeof a->backend_buf,
                                            tl_component_name((tl_component)c), a->comp_dev[c]))
                return cli_usage(cmd, "--*-backend-device: too long");
        if (a->main_dev && !spec_add(a->backend_buf, sizeof a->backend_buf, "default", a->main_dev))
            return cli_usage(cmd, "--main-backend-device: too long");
        a->o.backend = a->backend_buf;
    }
    return 0;
}

/* "diffusion,cond" or "all" / "*" into a component mask; 0 or a usage error. */
static int comp_mask(const char *spec, uint32_t *mask, const char *flag, const char *cmd) {
    const char *p = spec;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char name[40];
        while (len && *p == ' ') {
            p++;
            len--;
        }
        while (len && p[len - 1] == ' ')
            len--;
        if (!len || len >= sizeof name)
            return cli_usage(cmd, "%s '%s': expected component names ('diffusion,cond', 'all')",
                             flag, spec);
        memcpy(name, p, len);
        name[len] = 0;
        int c = tl_component_from_name(name);
        if (!strcmp(name, "all") || !strcmp(name, "*"))
            *mask |= (1u << TL_COMP_COUNT) - 1;
        else if (c >= 0)
            *mask |= 1u << c;
        else if (cli_sd_unmodelled(name, len))
            fprintf(stderr, "tierload: %s %s: accepted; tierload has no such component\n", flag,
                    name);
        else
            return cli_usage(cmd, "%s: unknown component '%s'", flag, name);
        if (!e) return 0;
        p = e + 1;
    }
}

/* --split: "layer" / "row" for every component, or per component. */
static int split_masks(const char *spec, tl_plan_options *o, const char *flag, const char *cmd) {
    static const char *const values[] = {"layer", "row"};
    int per[TL_COMP_COUNT], dflt;
    int r = cli_sd_assign(spec, values, 2, NULL, per, &dflt, flag, cmd);
    if (r) return r;
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        int v = per[c] >= 0 ? per[c] : dflt;
        if (v == 0) o->layer_split |= 1u << c;
        if (v == 1) o->row_split |= 1u << c;
    }
    return 0;
}

int cli_planargs_check(cli_planargs *a, const char *cmd) {
    if (a->devices && a->sim)
        return cli_usage(
            cmd, "--devices (hypothetical) and --sim (real + simulated) exclude each other");
    if (a->devices && a->rpc)
        return cli_usage(
            cmd, "--devices (hypothetical) and --rpc (real servers) exclude each other");
    cli_sd_ignored_note(a);
    if (a->split_mode) {
        if (a->split) return cli_usage(cmd, "--split-mode is --split: give one of them");
        a->split = a->split_mode;
    }
    int frc = fold_aliases(a, cmd);
    if (frc) return frc;
    if (a->offload && (frc = comp_mask(a->offload, &a->o.offload, "--offload", cmd))) return frc;
    if (a->phase_resident &&
        (frc = comp_mask(a->phase_resident, &a->o.phase_only, "--phase-resident", cmd)))
        return frc;
    if (a->split && (frc = split_masks(a->split, &a->o, a->split_mode ? "--split-mode" : "--split",
                                       cmd)))
        return frc;
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
    if (a->steps2) {
        uint64_t n;
        if (!cli_parse_count(a->steps2, 100000, &n) || n == 0)
            return cli_usage(cmd, "--steps-2: expected 1..100000, got '%s'", a->steps2);
        a->o.steps2 = (uint32_t)n;
    }
    a->convert = TL_DTYPE_INVALID;
    if (a->type) {
        a->convert = tl_dtype_from_name(a->type);
        if (a->convert == TL_DTYPE_INVALID)
            return cli_usage(cmd, "--type: unknown type '%s'", a->type);
    }
    return 0;
}

/*
 * The devices --params-backend names (meaning "where the module runs") must
 * be devices: checked as a backend spec would resolve them, the error in
 * --params-backend's words.
 */
static tl_status params_devices(const cli_planargs *a, const tl_plan_device *devs, size_t n) {
    char spec[(TL_COMP_COUNT + 1) * (CLI_SD_VALUE_MAX + 16)] = "";
    for (int c = 0; c <= TL_COMP_COUNT; c++)
        if (a->params_dev[c][0] &&
            !spec_add(spec, sizeof spec,
                      c < TL_COMP_COUNT ? tl_component_name((tl_component)c) : "default",
                      a->params_dev[c]))
            return TL_ERR_INVALID_ARG;
    if (!spec[0]) return TL_OK;
    tl_backend_spec parsed;
    tl_status s = tl_plan_parse_backend(spec, devs, n, &parsed);
    if (!s) return TL_OK;
    const char *msg = tl_last_error(), *item = msg ? strstr(msg, "item ") : NULL;
    char copy[sizeof spec + 64]; /* the message lives where tl_set_error writes */
    snprintf(copy, sizeof copy, "%s", item ? item : spec);
    return tl_set_error(s, "--params-backend %s", copy);
}

/* The links spec of the registered devices that have a network link; false when none has. */
static bool links_of(const tl_plan_device *devs, size_t n, char *buf, size_t cap) {
    buf[0] = 0;
    for (size_t i = 0; i < n; i++) {
        tl_device *d = NULL;
        double bw = 0, lat = 0;
        if (!devs[i].is_gpu || tl_device_find(devs[i].name, &d) != TL_OK) continue;
        bool has = tl_device_link(d, &bw, &lat, NULL) == TL_OK && bw >= 1;
        tl_device_release(d);
        if (!has) continue;
        size_t o = strlen(buf);
        snprintf(buf + o, cap - o, "%s%s=%.0f:lat=%.0fns", o ? "," : "", devs[i].name, bw,
                 lat * 1e9);
    }
    return buf[0] != 0;
}

tl_status cli_planargs_plan(cli_planargs *a, const tl_plan_summary *sum, const tl_model *m,
                            tl_plan **out) {
    tl_plan_device devs[TL_PLAN_MAX_DEVICES];
    size_t n_devs = 0;
    tl_status s;
    if (a->devices) {
        s = tl_plan_parse_devices(a->devices, devs, TL_PLAN_MAX_DEVICES, &n_devs);
    } else {
        s = a->sim && !a->sim_added ? tl_device_sim_add(a->sim) : TL_OK;
        a->sim_added = true;
        if (!s && a->rpc) s = tl_device_ggml_rpc_add(a->rpc, NULL);
        if (!s) s = real_devices(devs, TL_PLAN_MAX_DEVICES, &n_devs);
    }
    if (s) return s;
    /* the main GPU: --main-backend-device, else the first one */
    const char *main_gpu = NULL;
    for (size_t i = 0; i < n_devs && !main_gpu; i++)
        if (devs[i].is_gpu && (!a->main_dev || !strcmp(devs[i].name, a->main_dev)))
            main_gpu = devs[i].name;
    if (a->no_multi_gpu) { /* keep the main GPU and the host */
        size_t w = 0;
        for (size_t i = 0; i < n_devs; i++)
            if (!devs[i].is_gpu || (main_gpu && !strcmp(devs[i].name, main_gpu)))
                devs[w++] = devs[i];
        n_devs = w;
        for (size_t i = 0; i < n_devs && main_gpu; i++)
            if (devs[i].is_gpu) main_gpu = devs[i].name;
    }
    if ((s = params_devices(a, devs, n_devs))) return s;
    tl_plan_options o = a->o;
    char links[TL_PLAN_MAX_DEVICES * 64];
    if (!o.links && !a->devices && links_of(devs, n_devs, links, sizeof links)) o.links = links;
    char spec[sizeof a->backend_buf + 64];
    if (a->no_auto_fit && !a->main_dev && main_gpu) {
        spec[0] = 0;
        if (o.backend && strlen(o.backend) < sizeof a->backend_buf) strcpy(spec, o.backend);
        if (!spec_add(spec, sizeof spec, "default", main_gpu)) return TL_ERR_INVALID_ARG;
        o.backend = spec;
    }
    if (m) return tl_plan_create_for_model(m, a->convert, devs, n_devs, &o, out);
    return tl_plan_create(sum, devs, n_devs, &o, out);
}

/* Print a planning error in the CLI's words: the library names spec fields, the CLI its flags. */
int cli_plan_fail(tl_status s) {
    static const char *const words[][2] = {
        {"a max_vram cap of ", "--max-vram "},
        {"max_vram spec", "--max-vram"},
        {"device spec", "--devices"},
        {"backend spec", "--backend"},
        {"links spec", "--links"},
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
