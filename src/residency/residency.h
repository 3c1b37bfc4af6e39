/*
 * residency.h — the inside of a tl_session: residency units (a tensor, or one
 * row block of a row-split tensor), the devices a session binds, and the
 * placement rule that turns a plan's per-component decisions into a device
 * per unit. session.c carries it out; optimum.c replays a schedule offline.
 */
#ifndef TL_RESIDENCY_H
#define TL_RESIDENCY_H

#include "io/io.h"
#include "model/typerules.h"
#include "tierload.h"

#define TLR_HOST (-1)

/* Where one unit belongs according to the plan (placement.c). */
typedef struct tlr_place {
    size_t tensor;
    uint64_t off, len;           /* bytes of the tensor this unit holds */
    uint64_t row_begin, row_end; /* rows of the tensor (outermost dimension) */
    int32_t plan_dev;            /* plan device index, TLR_HOST for the host */
    bool streamed;               /* the plan streams it (not kept resident) */
} tlr_place;

/*
 * The units of every tensor of m under plan p, in tensor order (a tensor's
 * units are consecutive), in file bytes; row blocks in proportion to the
 * devices' bytes as the tensors will be kept (in the type the rules give, or
 * converted to `convert` where tl_convert_target says so; TL_DTYPE_INVALID:
 * as in the file). *out is malloc'd.
 */
tl_status tlr_place_all(const tl_model *m, const tl_plan *p, const tl__type_rules *rules,
                        tl_dtype convert, tlr_place **out, size_t *n);

/*
 * A unit in the type the session keeps its tensor in (xform.c): from the
 * file's type to `to`, bytes [off, off + len) of the converted tensor made
 * from file bytes [src_off, src_off + src_len) of the tensor (the same range
 * when from == to).
 */
typedef struct tlr_xunit {
    tl_dtype from, to;
    uint64_t off, len, src_off, src_len;
} tlr_xunit;
/* Can tensor t of m be kept as `to`? TL_ERR_UNSUPPORTED naming file, tensor and types if not. */
tl_status tlr_xform_check(const tl_model *m, size_t t, tl_dtype to);
/* Tensor t's info as kept in type `to` (checked): dtype and nbytes changed. */
void tlr_xform_info(const tl_model *m, size_t t, tl_dtype to, tl_tensor_info *out);
/* The unit pl (placed in file bytes) kept in type `to` (checked). */
void tlr_xform_unit(const tl_model *m, const tlr_place *pl, tl_dtype to, tlr_xunit *out);

/*
 * A producer of weights as they load (an at-load LoRA set, lora/atload.c):
 * the session asks it for the tensors it wants (wants) and has it write the
 * rows [r0, r1) of such a tensor, made from the file's bytes, in type `to`
 * (the unit's, xunit.to) at dst (host memory of that many rows). It may run
 * on several threads at once, with no session lock held; *err gets the
 * largest error its rounding added (0 when none is measured).
 */
/* One term scale * (up . down) of a low-rank update, its factors F32 host matrices. */
typedef struct tlr_lowrank {
    const float *up;     /* (r1 - r0) x rank: the unit's rows of the up factor */
    const float *down_t; /* cols x rank: the down factor transposed */
    uint64_t rank;
    float scale;
} tlr_lowrank;
/*
 * lowrank (optional: NULL when the producer merges on the host only): what
 * rows [r0, r1) of a tensor it wants are made of, as the file's bytes plus
 * low-rank terms applied in order, each rounded to the tensor's type, for a
 * device that computes to merge them where the unit lives. It fills
 * terms[0..*n) (at most cap), valid until done(user, *hold). Any failure
 * (TL_ERR_UNSUPPORTED: a module of another kind, a type it merges otherwise)
 * makes the unit by rows.
 */
typedef struct tlr_producer {
    bool (*wants)(void *user, size_t tensor);
    tl_status (*rows)(void *user, size_t tensor, uint64_t r0, uint64_t r1, tl_dtype to, void *dst,
                      double *err);
    void *user;
    tl_status (*lowrank)(void *user, size_t tensor, uint64_t r0, uint64_t r1, tlr_lowrank *terms,
                         size_t cap, size_t *n, void **hold);
    void (*done)(void *user, void *hold);
} tlr_producer;
/*
 * Attach p to s (NULL: detach). Tensors whose wants changes must go through
 * tl_session_update_begin / _end, which asks wants again for them; units
 * produced from then on count as loads with a producer. Detaching drops the
 * unreferenced produced copies; referenced ones keep their bytes until
 * evicted. TL_ERR_INVALID_ARG when another producer is attached.
 */
tl_status tlr_session_set_producer(tl_session *s, const tlr_producer *p);
/* TL_OK when every unit of tensor t is on a device (a producer's bytes need memory of their own). */
tl_status tlr_session_producible(const tl_session *s, size_t t);
/*
 * Produce unit pl (xunit x) through p. On a device that merges
 * (devices/ggml_merge.h), when p has lowrank and the unit keeps the file's
 * type: the file's rows copied into the unit's memory and the terms merged
 * there by the device (*on_device true; the rows moved by io). Else, or when that fails, a chunk
 * of rows at a time (at most 16 MiB of them in their type and in F32): into
 * host memory `host` (the memory of a host-addressed device), or, with host
 * NULL, through a buffer of one chunk uploaded to (dev, dptr). *err: the
 * largest error the producer reported.
 */
tl_status tlr_xform_produce(const tlr_producer *p, const tl_model *m, const tlr_place *pl,
                            const tlr_xunit *x, tl__io_engine *io, void *host, tl_device *dev,
                            tl_devptr dptr, double *err, bool *on_device);

/*
 * Groups (groups.c): the units a step takes together. At first one per
 * (component, layer) and one per (component, other), dense from 0 (n_base of
 * them). Each tensor set that becomes a step (tl_session_group) splits the
 * groups it takes part of, so that every group is wholly in or wholly out of
 * each such set: group g then came from base group origin[g] and is in the
 * sets in[g][0 .. n_in[g]) (ascending). Without sets origin and in are NULL.
 */
typedef struct tlr_groups {
    size_t
        base[TL_COMP_COUNT]; /* group of layer k of c = base[c] + k; other = base[c] + n_layers */
    size_t n_layers[TL_COMP_COUNT];
    size_t n, n_base;
    size_t *origin;
    size_t **in, *n_in;
    size_t n_entries; /* the sum of n_in */
} tlr_groups;
void tlr_groups_init(const tl_model *m, tlr_groups *g);
/* The first place in a[0 .. n) (ascending) holding key or more; n when none does. */
size_t tlr_lower_bound(const size_t *a, size_t n, size_t key);
void tlr_groups_free(tlr_groups *g);
/* A copy of g that owns its own lists (freed with tlr_groups_free). */
tl_status tlr_groups_copy(const tlr_groups *g, tlr_groups *out);
/* The base group of a tensor. */
size_t tlr_group_of(const tl_model *m, const tlr_groups *g, size_t tensor);
/* Does the step include group gid? */
bool tlr_step_has(const tlr_groups *g, const tl_session_step *st, size_t gid);
/*
 * Make set `set` (larger than every set added before) a union of groups: the
 * units in[0 .. n) (distinct unit indexes) leave each group that also has
 * units outside the set for a new group. ugroup: every unit's group (n_units
 * of them), updated. More than max_entries set entries over all groups:
 * TL_ERR_UNSUPPORTED. Any error leaves ugroup as it was (g: free it).
 */
tl_status tlr_groups_add_set(tlr_groups *g, size_t set, const size_t *units, size_t n,
                             size_t *ugroup, size_t n_units, size_t max_entries);

/* Offline optimum (optimum.c): bytes furthest-next-use eviction moves onto each device. */
typedef struct tlr_opt_unit {
    int32_t dev; /* session device, < 0: not on a device */
    uint64_t len;
    size_t group;
} tlr_opt_unit;
tl_status tlr_optimum(const tlr_opt_unit *u, size_t n_u, const uint64_t *budgets, size_t n_dev,
                      const tlr_groups *g, const tl_session_step *steps, size_t n_steps,
                      uint64_t *bytes);

/*
 * A set of acquired tensors (session.c builds it; bind.c adds ggml wrappers of
 * host parts). The header outlives the set: released headers are recycled,
 * never freed (session.c), so a stale pointer is recognised.
 */
struct tl_acquired {
    tl_session *owner;        /* the session it came from */
    uint64_t serial;          /* that session's serial (a session at the same address differs) */
    uint64_t gen;             /* how many sets this header carried before */
    bool live;                /* acquired and not yet released (under session.c's g_mu) */
    tl_acquired *prev, *next; /* the owner's outstanding sets; next: the free FIFO */
    size_t n;
    tl_session_tensor *t;
    tl_session_part *parts;
    size_t *units;
    size_t n_units;
    tl_ggml_host_buffer *wraps; /* host parts wrapped for ggml (tl_session_bind_ggml) */
    size_t n_wraps, cap_wraps;
};
/*
 * For the bench: time the eviction order's work in s (victim choices and
 * keeping the lists or heaps) from now on (on) or stop. *ns gets the time
 * spent on it (the monotonic clock around each piece, its least cost taken
 * out; a piece over 1 ms counts as preempted and is dropped, *dropped says
 * how many); *choices the victims chosen; *timer_ns what reading the clock
 * cost besides (to take out of a CPU time measured around them); all since
 * the last call, and the counts start again from 0. Any may be NULL.
 */
void tl__session_victim_timing(tl_session *s, bool on, uint64_t *ns, uint64_t *choices,
                               uint64_t *timer_ns, uint64_t *dropped);
/* Free the ggml wrappers a set's bindings made. */
void tlr_acquired_unbind(tl_acquired *a);

/* What run.c needs of a session. */
const tl_plan *tlr_session_plan(const tl_session *s);
tl_model *tlr_session_model(const tl_session *s);
/* The first sim device of the session (model time), or NULL. */
tl_device *tlr_session_clock_device(const tl_session *s);
/* The session's i-th device (i < its count), or NULL past the last. */
tl_device *tlr_session_device(const tl_session *s, size_t i);

#endif
