/*
 * tierload-llama.h — libtierload-llama: a llama.cpp model whose weights
 * tierload loaded, checked and merged.
 *
 * A companion library of libtierload, built where llama.cpp's llama.h and
 * libllama are available (libtierload itself never needs llama.cpp). A
 * llama.cpp program changes one call:
 *
 *     struct llama_model *model = NULL;
 *     tl_llama_model_load(path, NULL, mparams, &model);   // was llama_model_load_from_file
 *
 * and gets the same llama_model (free it with llama_model_free), built by
 * llama.cpp from the file's metadata with llama_model_init_from_user:
 * llama.cpp allocates every tensor where mparams say (devices, n_gpu_layers,
 * split, tensor_buft_overrides), then tierload fills them. Tensors in host
 * buffers are written in place by tierload's parallel loader (tl_model_load
 * with the buffers as destinations, in file order); tensors elsewhere (GPU,
 * RPC, the CPU's repacking buffer types) go through a bounded staging buffer
 * and ggml_backend_tensor_set. Every byte is read from the file once.
 *
 * Conventions are libtierload's (tierload.h): tl_status results, the
 * message in tl_last_error() naming the file and tensor or key.
 */
#ifndef TIERLOAD_LLAMA_H
#define TIERLOAD_LLAMA_H

#include "tierload.h"

#include <llama.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One LoRA merged into the weights as they load. */
typedef struct tl_llama_lora {
    const char *path; /* safetensors or GGUF (llama.cpp's adapter format included) */
    float scale;      /* 1 = the adapter as trained */
} tl_llama_lora;

/* What a load did (tl_llama_options.stats). */
typedef struct tl_llama_stats {
    size_t n_tensors;     /* tensors llama.cpp created */
    size_t n_in_place;    /* read by the loader straight into llama.cpp's host buffers */
    size_t n_staged;      /* read into staging, then ggml_backend_tensor_set (devices, repacking) */
    size_t n_repacked;    /* of the staged ones: in the CPU's extra buffer types (repacked) */
    size_t n_neutral;     /* not in the file, optional for llama.cpp: filled with 0 (biases) or 1 */
    size_t n_unused;      /* file tensors llama.cpp did not ask for (not read) */
    size_t n_merged;      /* tensors a LoRA changed */
    uint64_t bytes;       /* tensor bytes read from the file */
    uint64_t staging;     /* size of the staging buffer (0 when nothing was staged) */
    double seconds;       /* the whole call */
    double seconds_llama; /* llama.cpp building the model (metadata, vocab, allocation) */
    double seconds_load;  /* filling the tensors */
    tl_load_mode mode;    /* the mode the loader used for the file (never AUTO) */
} tl_llama_stats;

/* Options of tl_llama_model_load; set up with tl_llama_options_init. */
typedef struct tl_llama_options {
    uint32_t size; /* sizeof(tl_llama_options), set by tl_llama_options_init */
    /*
     * The loader's options (mode, threads, staging, verify, evict,
     * hugepages, ...); NULL = tl_load_options_init's defaults. convert, dtype,
     * tensors, dest and align are decided here and must be left at their
     * defaults (TL_ERR_INVALID_ARG otherwise); progress is llama.cpp's
     * (llama_model_params.progress_callback); memory is not sampled
     * (sample_interval is ignored: the load's figures are not returned).
     */
    const tl_load_options *load;
    /* LoRAs merged at load, in order (F32, F16 and BF16 weights). */
    const tl_llama_lora *loras;
    size_t n_loras;
    /* Where to write what the load did; NULL = nowhere. */
    tl_llama_stats *stats;
    /*
     * Placement from tierload's planner instead of llama.cpp's own
     * n_gpu_layers / tensor_split: the GPU devices llama.cpp would use
     * (params.devices, else every GPU ggml has; memory as ggml reports it)
     * and the host become plan devices, the model's layers (blk.N) a plan
     * summary, and the plan's decision for the model (tl_plan_decision of
     * TL_COMP_OTHER: gpu, layer_split, row_split, stream, cpu) becomes
     * params: each GPU's layers, and the output layer with the first GPU's,
     * go to that device's buffer type by tensor_buft_overrides (after the
     * caller's), the layers the plan keeps in RAM to the CPU; devices,
     * n_gpu_layers, split_mode and tensor_split are set to match. A plan
     * that does not fit is TL_ERR_INFEASIBLE with the planner's reason and
     * the smallest change that would fit.
     */
    bool plan;
    const char *max_vram; /* budgets as tl_plan_options.max_vram takes them; NULL = no cap */
    uint64_t headroom;    /* bytes kept free on every GPU */
    uint64_t reserve;     /* bytes per GPU for llama.cpp's KV cache and compute buffers */
    char **plan_text;     /* the plan in words (tl_plan_to_text; free with tl_free); NULL = no */
} tl_llama_options;

/* Defaults: the loader's defaults, no LoRA, no stats. */
TL_API void tl_llama_options_init(tl_llama_options *o);

/*
 * Load the GGUF model at path as llama.cpp would with
 * llama_model_load_from_file(path, params), with tierload reading the
 * weights. On success *out is a llama_model the caller frees with
 * llama_model_free; it holds no reference to tierload (the file is closed).
 * The caller loads llama.cpp's backends first (ggml_backend_load_all), as
 * for llama_model_load_from_file.
 *
 * opts may be NULL (defaults). params are llama.cpp's, used as given, with:
 *   - use_extra_bufts (default true): llama_model_init_from_user turns it
 *     off, so tierload puts every weight llama.cpp's own load would place in
 *     a CPU extra buffer type (CPU_REPACK: Q4_0, Q4_K, ... repacked for this
 *     CPU's kernels) there with a tensor_buft_override of its own, after the
 *     caller's overrides: the same buffers, hence the same kernels and the
 *     same logits as llama.cpp's own load. Only when no GPU device takes
 *     weights: otherwise llama.cpp's own load puts CPU weights in a GPU
 *     host buffer, which the plain path does too.
 *   - load_mode is the loader's (tl_load_options.mode), not llama.cpp's.
 *   - progress_callback is called with the fraction of bytes loaded, from
 *     the calling thread, at least at 0 and 1; returning false stops the
 *     load: TL_ERR_CANCELLED, nothing returned.
 *   - check_tensors: tl_load_options.verify is tierload's check (every
 *     byte against the file).
 *
 * LoRAs are opened, matched and merged into tierload's copy-on-write
 * mapping before llama.cpp allocates anything: a LoRA with a key that no
 * tensor answers to, or one on a quantized weight, is refused then.
 *
 * Errors (nothing allocated survives a failure; *out stays NULL):
 *   - a file tierload refuses: its status and message;
 *   - a model llama.cpp refuses (unknown architecture, a missing tensor,
 *     a tensor of the wrong shape or type): TL_ERR_UNSUPPORTED with
 *     llama.cpp's message, naming the file and the key or tensor;
 *   - the file changed during the load: TL_ERR_CHANGED;
 *   - cancelled: TL_ERR_CANCELLED.
 *
 * Thread-safety: concurrent calls are fine, except that llama.cpp's log
 * callback (llama_log_set) is process-wide: during a call it is wrapped to
 * capture llama.cpp's error message (everything is still passed on to the
 * callback that was set), so a program must not set it concurrently.
 */
TL_API tl_status tl_llama_model_load(const char *path, const tl_llama_options *opts,
                                     struct llama_model_params params, struct llama_model **out);

#ifdef __cplusplus
}
#endif

#endif
