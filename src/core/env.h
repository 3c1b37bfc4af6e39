/*
 * env.h — every environment variable the library reads, listed here and read nowhere else.
 *
 * Each one is the fallback of a setting: a public entry point (the API boundary) reads the
 * caller's option first and asks this module only when the option is unset, so the code below
 * the boundary sees one value and never the environment. (TIERLOAD_CUDART has no public option
 * yet: discovery runs lazily from the registry, which reads it here.)
 *
 *   TIERLOAD_MMAP_FLAGS  default of tl_model_options.map_flags (tl_model_open): a comma list of
 *                        sequential, willneed, populate, dontneed
 *   TIERLOAD_CUDART      path of the libcudart to load instead of the usual sonames (CUDA
 *                        discovery, on the first device registry call)
 *   TIERLOAD_COLD_PATH   "buffered": auto load mode reads cold files buffered, not O_DIRECT
 *                        (tl_model_load)
 *   TIERLOAD_NO_URING    set to anything: no io_uring for O_DIRECT reads (tl_model_load)
 *   TIERLOAD_SPILL_DIR   default of tl_session_options.spill_dir (tl_session_create); then
 *   TMPDIR               and then /tmp
 *   TIERLOAD_SPILL_THRESHOLD  default of tl_session_options.spill_threshold: a size ("8G")
 *   TIERLOAD_GGML_DIR    default folder of ggml's shared libraries (tl_device_ggml_discover)
 *   TIERLOAD_MERGE_THREADS  most threads one LoRA merge uses (default: the CPUs the process may
 *                        run on; no public option yet: the merge kernel reads it at each merge)
 *   TIERLOAD_RPC_TIMEOUT  seconds an RPC server may stay silent in the middle of an operation
 *                        (default 30; tl_device_ggml_rpc_add applies it to ggml's connection)
 *
 * The CLI and the tests have their own variables; they are not the library's.
 */
#ifndef TL_CORE_ENV_H
#define TL_CORE_ENV_H

#include <stdbool.h>

typedef enum tl__env_var {
    TL_ENV_MMAP_FLAGS,
    TL_ENV_CUDART,
    TL_ENV_COLD_PATH,
    TL_ENV_NO_URING,
    TL_ENV_SPILL_DIR,
    TL_ENV_SPILL_THRESHOLD,
    TL_ENV_TMPDIR,
    TL_ENV_GGML_DIR,
    TL_ENV_MERGE_THREADS,
    TL_ENV_RPC_TIMEOUT,
    TL_ENV_COUNT,
} tl__env_var;

/* "TIERLOAD_..." */
const char *tl__env_name(tl__env_var v);
/* The value, or NULL when unset or empty. */
const char *tl__env_get(tl__env_var v);
/* Is the variable set at all (an empty value counts)? For on/off switches. */
bool tl__env_is_set(tl__env_var v);

#endif
