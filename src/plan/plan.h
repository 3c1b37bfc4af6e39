/*
 * plan.h — what the planner's files share: the tl_plan value itself and the
 * helpers for names and sizes. The planner is pure: nothing here does I/O.
 */
#ifndef TL_PLAN_PLAN_H
#define TL_PLAN_PLAN_H

#include "model/typerules.h"
#include "tierload.h"

#include <stdbool.h>
#include <stdint.h>

#define TLP_MIB (1024ull * 1024ull)
#define TLP_GIB (1024ull * TLP_MIB)

/* Priority weights of the first objective, per tl_component. */
extern const uint64_t tlp_priority[TL_COMP_COUNT];

/* One pattern of tl_plan_options.overrides in a plan: where it places, what it matched. */
typedef struct tlp_orule {
    char *pattern;   /* as the caller wrote it */
    uint32_t device; /* plan device index (the host: the last) */
    uint64_t bytes;  /* of the tensors it placed */
    size_t n;        /* tensors it placed */
} tlp_orule;

/* A tensor an override placed. */
typedef struct tlp_otensor {
    char *name;
    uint32_t rule; /* index into orules */
} tlp_otensor;

struct tl_plan {
    bool feasible;
    uint64_t shortfall; /* infeasible: bytes added to every GPU budget for the decisions */
    char error[1024];
    size_t n_devices; /* GPUs first, the host last */
    tl_plan_device devices[TL_PLAN_MAX_DEVICES];
    uint64_t budget[TL_PLAN_MAX_DEVICES];
    tl_plan_phases phases;
    tl_plan_decision dec[TL_COMP_COUNT];
    uint64_t peak[TL_PLAN_MAX_DEVICES][TL_PLAN_MAX_PHASES];
    uint64_t moved_per_run;
    uint64_t host_bytes;
    uint64_t score;
    tl_vae_tiling tiling;
    tl_plan_link link[TL_PLAN_MAX_DEVICES]; /* bandwidth 0: a local device */
    tlp_orule *orules; /* overrides (plan/override.c); NULL without */
    size_t n_orules;
    tlp_otensor *otensors; /* sorted by name */
    size_t n_otensors;
};

/*
 * Bytes an override holds per pattern, to count on its device: rule r has
 * the device name dev[r] (resolved as in backend specs) and bytes[r];
 * tlp_create writes its plan device index into device[r].
 */
typedef struct tlp_fixed {
    size_t n;
    const char *const *dev;
    const char *const *pattern; /* for messages */
    const uint64_t *bytes;
    uint32_t *device;
} tlp_fixed;

/*
 * tl_plan_create with a switch for tests: exhaustive = true visits every
 * combination of candidates (no bound pruning, no symmetry breaking, no node
 * limit), so that tests can check the pruned search finds the same plan.
 */
tl_status tlp_create(const tl_plan_summary *s, const tl_plan_device *devs, size_t n_devs,
                     const tl_plan_options *opts, bool exhaustive, tl_plan **out);
/* tlp_create with bytes fixed on devices by overrides (fixed may be NULL). */
tl_status tlp_create_fixed(const tl_plan_summary *s, const tl_plan_device *devs, size_t n_devs,
                           const tl_plan_options *opts, bool exhaustive, const tlp_fixed *fixed,
                           tl_plan **out);
/* Resolve a device name as backend specs do: an index into devs or TL_PLAN_HOST. */
tl_status tlp_resolve_device(const char *what, const char *name, const tl_plan_device *devs,
                             size_t n, uint32_t *out);
/*
 * Bytes of a tensor as a load with these type rules (NULL: none) converting to
 * `convert` leaves it, and its row-splittable part.
 */
void tlp_tensor_bytes(const tl_tensor_info *t, const tl__type_rules *rules, tl_dtype convert,
                      uint64_t *bytes, uint64_t *matrix);
/* tl_plan_summary_from_model with type rules (NULL: none). */
tl_status tlp_summary_from_model(const tl_model *m, const tl__type_rules *rules, tl_dtype convert,
                                 tl_plan_summary *s);
/* Free a plan's overrides (tl_plan_destroy). */
void tlp_overrides_free(tl_plan *p);

/*
 * Parse a links spec ("rpc0:0=1.25G:lat=200us,...", tl_plan_options.links)
 * into per-device bandwidth (bytes/s; 0: local) and round trip (seconds).
 */
tl_status tlp_parse_links(const char *spec, const tl_plan_device *devs, size_t n_devs, double *bw,
                          double *lat);

/* Case-insensitive equality of a (ptr, len) token with a NUL-terminated word. */
bool tlp_tok_eq(const char *tok, size_t len, const char *word);
/* Copy a (ptr, len) token into buf (truncated, NUL-terminated). */
const char *tlp_tok(const char *tok, size_t len, char *buf, size_t n);
/* The phase's name: its components joined by '+' ("diffusion+controlnet"). */
const char *tlp_phase_name(uint32_t mask, char *buf, size_t n);

#endif
