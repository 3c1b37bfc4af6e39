/*
 * internal.h — what the files of libtierload-llama share: the capture of
 * llama.cpp's log messages and the extra-buffer-type overrides.
 */
#ifndef TL_LLAMA_INTERNAL_H
#define TL_LLAMA_INTERNAL_H

#include "tierload-llama.h"

/* llama.cpp's log wrapped for one call: the first error line is kept, everything passed on. */
typedef struct tl__llama_log {
    ggml_log_callback prev;
    void *prev_user;
    char error[1024]; /* llama.cpp's reason, else its first error message ("" when none) */
    bool reason;      /* error is the reason llama.cpp gave for refusing the model */
} tl__llama_log;

void tl__llama_log_begin(tl__llama_log *l);
void tl__llama_log_end(tl__llama_log *l);

/*
 * Overrides that put each weight where llama.cpp's own load would when it
 * uses the CPU's extra buffer types (see tierload-llama.h): the caller's
 * overrides first, then one per extra buffer type. out->list is NULL when
 * none are needed (params' own overrides stay as they are); free it with
 * tl__llama_overrides_free. tied_output: output.weight is token_embd.weight's
 * twin (see load.c), placed as an output.weight of that type and shape would
 * be. out->n_tensors counts the weights sent to extra buffer types.
 */
typedef struct tl__llama_overrides {
    struct llama_model_tensor_buft_override *list; /* NULL-pattern terminated */
    char **patterns;                               /* ours, freed with the list */
    size_t n_patterns;
    size_t n_tensors;
} tl__llama_overrides;

tl_status tl__llama_overrides_make(const tl_model *m, const struct llama_model_params *params,
                                   bool tied_output, tl__llama_overrides *out);
void tl__llama_overrides_free(tl__llama_overrides *o);

/*
 * Placement from tierload's planner (tl_llama_options.plan, place.c): params
 * is the caller's with devices, n_gpu_layers, split_mode, tensor_split and
 * tensor_buft_overrides set from the plan (pointing into this object).
 */
#define TL_LLAMA_PLAN_MAX_GPUS 16
typedef struct tl__llama_place {
    bool applied;
    struct llama_model_params params;
    ggml_backend_dev_t devs[TL_LLAMA_PLAN_MAX_GPUS];      /* llama.cpp's GPUs, plan order */
    ggml_backend_dev_t order[TL_LLAMA_PLAN_MAX_GPUS + 1]; /* the devices given to llama.cpp */
    float split[128];                                     /* llama_max_devices() entries */
    struct llama_model_tensor_buft_override *list;
    char *patterns[TL_LLAMA_PLAN_MAX_GPUS];
    size_t n_patterns;
} tl__llama_place;

tl_status tl__llama_place_make(const tl_model *m, const struct llama_model_params *params,
                               const tl_llama_options *o, tl__llama_place *out);
void tl__llama_place_free(tl__llama_place *p);

#endif
