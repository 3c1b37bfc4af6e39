/*
 * create.c — tl_plan_create: the public arguments checked and normalised
 * (GPUs in input order with the host last, reserves, phases, the backend
 * spec with the older *_on_cpu options applied to it), then the search, and
 * the report when nothing fits.
 */
#include "plan/search.h"

#include "core/error.h"
#include "core/options.h"
#include "os/os.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Devices: GPUs in input order, then the host (a "cpu" one when none is given). */
static tl_status normalise_devices(const tl_plan_device *devs, size_t n_devs, tlp_inputs *in) {
    size_t host = SIZE_MAX, n_gpu = 0;
    for (size_t i = 0; i < n_devs; i++)
        n_gpu += devs[i].is_gpu;
    if (n_gpu > TLP_MAXD - 1)
        return tl__err(TL_ERR_INVALID_ARG, "plan: %zu GPUs given, but a plan handles at most %d",
                      n_gpu, TLP_MAXD - 1);
    for (size_t i = 0; i < n_devs; i++) {
        if (!devs[i].is_gpu) {
            if (host != SIZE_MAX)
                return tl__err(TL_ERR_INVALID_ARG, "plan: more than one host device ('%s', '%s')",
                              devs[host].name, devs[i].name);
            host = i;
            continue;
        }
        for (size_t j = 0; j < in->n_devs; j++)
            if (!strcasecmp(in->devs[j].name, devs[i].name))
                return tl__err(TL_ERR_INVALID_ARG, "plan: device '%s' given twice", devs[i].name);
        in->devs[in->n_devs] = devs[i];
        in->devs[in->n_devs].name[sizeof devs[i].name - 1] = 0;
        in->n_devs++;
    }
    tl_plan_device *h = &in->devs[in->n_devs];
    if (host != SIZE_MAX) {
        *h = devs[host];
    } else {
        memset(h, 0, sizeof *h);
        snprintf(h->name, sizeof h->name, "cpu");
    }
    h->name[sizeof h->name - 1] = 0;
    in->n_devs++;
    return TL_OK;
}

/*
 * The backend spec, then the older options as the placements they stand for
 * (clip_on_cpu = cond on the host, ...); an option for a component the spec
 * already places is a conflict, as a component given twice in a spec is.
 */
static tl_status backend_spec(const tl_plan_options *opts, tlp_inputs *in) {
    if (opts->backend) {
        if (!*opts->backend) return tl__err(TL_ERR_INVALID_ARG, "backend spec: empty spec");
        tl_status st = tl_plan_parse_backend(opts->backend, in->devs, in->n_devs, &in->spec);
        if (st) return st;
    }
    const struct {
        bool on;
        const char *option;
        tl_component comp;
    } legacy[] = {
        {opts->clip_on_cpu, "clip_on_cpu", TL_COMP_COND},
        {opts->vae_on_cpu, "vae_on_cpu", TL_COMP_VAE},
        {opts->controlnet_on_cpu, "controlnet_on_cpu", TL_COMP_CONTROLNET},
    };
    for (size_t i = 0; i < sizeof legacy / sizeof legacy[0]; i++) {
        if (!legacy[i].on) continue;
        tl_backend_place *pl = &in->spec.comp[legacy[i].comp];
        const char *name = tl_component_name(legacy[i].comp);
        if (pl->n_devices)
            return tl__err(TL_ERR_INVALID_ARG,
                          "backend spec: component '%s' is given twice: in the spec and as %s=cpu "
                          "by the option %s",
                          name, name, legacy[i].option);
        pl->n_devices = 1;
        pl->devices[0] = TL_PLAN_HOST;
    }
    return TL_OK;
}

static tl_status normalise(const tl_plan_summary *s, const tl_plan_device *devs, size_t n_devs,
                           const tl_plan_options *opts, bool exhaustive, tlp_inputs *in) {
    tl_status st = normalise_devices(devs, n_devs, in);
    if (st) return st;
    in->s = s;
    in->headroom = opts->headroom;
    in->max_vram = opts->max_vram;
    in->offload = opts->offload_to_cpu;
    const uint32_t all = (1u << TL_COMP_COUNT) - 1;
    const struct {
        uint32_t mask;
        const char *name;
    } masks[] = {{opts->offload, "offload"},
                 {opts->phase_only, "phase_only"},
                 {opts->layer_split, "layer_split"},
                 {opts->row_split, "row_split"}};
    for (size_t i = 0; i < sizeof masks / sizeof masks[0]; i++)
        if (masks[i].mask & ~all)
            return tl__err(TL_ERR_INVALID_ARG, "plan: %s has bits beyond the %d components (0x%x)",
                          masks[i].name, TL_COMP_COUNT, masks[i].mask);
    uint32_t both = (opts->offload | (opts->offload_to_cpu ? all : 0)) & opts->phase_only;
    for (int c = 0; c < TL_COMP_COUNT && both; c++)
        if (both & (1u << c))
            return tl__err(TL_ERR_INVALID_ARG,
                          "plan: component '%s' is both streamed from RAM (offload) and loaded "
                          "per phase (phase_only)",
                          tl_component_name((tl_component)c));
    both = opts->layer_split & opts->row_split;
    for (int c = 0; c < TL_COMP_COUNT && both; c++)
        if (both & (1u << c))
            return tl__err(TL_ERR_INVALID_ARG,
                          "plan: component '%s' is asked for both a layer and a row split",
                          tl_component_name((tl_component)c));
    in->offload = in->offload || opts->offload == all;
    in->offload_mask = opts->offload;
    in->phase_mask = opts->phase_only;
    in->layer_mask = opts->layer_split;
    in->row_mask = opts->row_split;
    in->exhaustive = exhaustive;
    in->steps = opts->steps ? opts->steps : 20;
    in->steps2 = opts->steps2 ? opts->steps2 : in->steps;
    tl_plan_default_reserves(in->reserve);
    if (opts->reserve && (st = tl_plan_parse_reserve(opts->reserve, in->reserve))) return st;
    if (opts->phases) {
        if ((st = tl_plan_parse_phases(opts->phases, &in->phases))) return st;
    } else {
        tl_plan_default_phases(&in->phases);
        if (s->comp[TL_COMP_DIFFUSION2].bytes) { /* a second diffusion model runs after the first */
            in->phases.mask[3] = in->phases.mask[2];
            in->phases.mask[2] = 1u << TL_COMP_DIFFUSION2;
            in->phases.n = 4;
        }
    }
    if ((st = tlp_parse_links(opts->links, in->devs, in->n_devs, in->link_bw, in->link_lat)))
        return st;
    return backend_spec(opts, in);
}

tl_status tl_plan_create(const tl_plan_summary *s, const tl_plan_device *devs, size_t n_devs,
                         const tl_plan_options *opts, tl_plan **out) {
    return tlp_create(s, devs, n_devs, opts, false, out);
}

tl_status tlp_create(const tl_plan_summary *s, const tl_plan_device *devs, size_t n_devs,
                     const tl_plan_options *opts, bool exhaustive, tl_plan **out) {
    return tlp_create_fixed(s, devs, n_devs, opts, exhaustive, NULL, out);
}

/* Count the overrides' bytes on their devices (in->fixed); the device of each into fx->device. */
static tl_status fix_bytes(const tlp_fixed *fx, tlp_inputs *in) {
    for (size_t r = 0; fx && r < fx->n; r++) {
        char what[160];
        snprintf(what, sizeof what, "override '%.120s'", fx->pattern[r]);
        uint32_t d;
        tl_status st = tlp_resolve_device(what, fx->dev[r], in->devs, in->n_devs, &d);
        if (st) return st;
        if (d == TL_PLAN_HOST) d = (uint32_t)(in->n_devs - 1);
        fx->device[r] = d;
        in->fixed[d] += fx->bytes[r];
    }
    return TL_OK;
}

/* A GPU whose overrides alone exceed its budget makes the plan infeasible, saying so. */
static void fixed_over(const tlp_inputs *in, tl_plan *p) {
    for (size_t i = 0; i + 1 < in->n_devs; i++) {
        if (in->fixed[i] <= p->budget[i]) continue;
        char a[32], b[32];
        p->feasible = false;
        uint64_t over = in->fixed[i] - p->budget[i];
        if (over > p->shortfall) p->shortfall = over;
        snprintf(p->error, sizeof p->error,
                 "tensor overrides place %s on %s, more than its budget of %s: override fewer "
                 "tensors onto it",
                 tl_fmt_bytes(in->fixed[i], a, sizeof a), in->devs[i].name,
                 tl_fmt_bytes(p->budget[i], b, sizeof b));
        return;
    }
}

tl_status tlp_create_fixed(const tl_plan_summary *s, const tl_plan_device *devs, size_t n_devs,
                           const tl_plan_options *opts, bool exhaustive, const tlp_fixed *fixed,
                           tl_plan **out) {
    if (!s || !out || (!devs && n_devs)) return tl__err(TL_ERR_INVALID_ARG, "plan: NULL argument");
    *out = NULL;
    tl_plan_options own;
    tl_plan_options_init(&own);
    tl_status take = tl__options_take(&own, sizeof own, opts, "tl_plan_options");
    if (take != TL_OK) return take;
    opts = &own;
    if (!fixed && opts->overrides && *opts->overrides)
        return tl__err(TL_ERR_INVALID_ARG,
                       "plan: overrides '%.80s' match tensor names: plan with "
                       "tl_plan_create_for_model",
                       opts->overrides);
    if (opts->type_rules && *opts->type_rules)
        return tl__err(TL_ERR_INVALID_ARG,
                       "plan: type rules '%.80s' match tensor names: plan with "
                       "tl_plan_create_for_model",
                       opts->type_rules);
    tlp_inputs *in = tl__os_calloc(1, sizeof *in);
    tl_plan *p = tl__os_calloc(1, sizeof *p);
    tlp_ctx *x = tl__os_malloc(sizeof *x);
    tl_status st = TL_OK;
    bool found = false;
    if (!in || !p || !x) {
        st = tl__err(TL_ERR_NOMEM, "plan: out of memory");
        goto fail;
    }
    if ((st = normalise(s, devs, n_devs, opts, exhaustive, in))) goto fail;
    if ((st = fix_bytes(fixed, in))) goto fail;
    if ((st = tlp_setup(in, in->max_vram, x))) goto fail;
    if ((st = tlp_search(x, &found))) goto fail;
    p->feasible = found;
    if (!found) {
        /* nothing placed, until the explanation finds the best effort */
        memset(x->best, 0, sizeof x->best);
        for (uint32_t c = 0; c < TL_COMP_COUNT; c++) {
            x->best[c].k.mode = TL_PLAN_MODE_CPU;
            x->best[c].k.host = x->comp[c].bytes;
        }
    }
    tlp_fill_plan(x, in, p);
    if (!found && (st = tlp_explain(in, p))) goto fail;
    fixed_over(in, p);
    if (opts->output_size) {
        tl_plan_size sz;
        if ((st = tl_plan_parse_size(opts->output_size, &sz)) ||
            (st = tl_plan_vae_tiling(&sz, in->reserve[TL_COMP_VAE], opts->vae_bytes_per_voxel,
                                     &p->tiling)))
            goto fail;
    }
    free(x);
    free(in);
    *out = p;
    return TL_OK;
fail:
    free(x);
    free(p);
    free(in);
    return st;
}
