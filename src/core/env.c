/*
 * env.c — the library's environment variables (the list and their meaning are in env.h).
 */
#include "core/env.h"

#include <stdlib.h>

static const char *const names[TL_ENV_COUNT] = {
    [TL_ENV_MMAP_FLAGS] = "TIERLOAD_MMAP_FLAGS",
    [TL_ENV_CUDART] = "TIERLOAD_CUDART",
    [TL_ENV_COLD_PATH] = "TIERLOAD_COLD_PATH",
    [TL_ENV_NO_URING] = "TIERLOAD_NO_URING",
    [TL_ENV_SPILL_DIR] = "TIERLOAD_SPILL_DIR",
    [TL_ENV_SPILL_THRESHOLD] = "TIERLOAD_SPILL_THRESHOLD",
    [TL_ENV_TMPDIR] = "TMPDIR",
    [TL_ENV_GGML_DIR] = "TIERLOAD_GGML_DIR",
    [TL_ENV_MERGE_THREADS] = "TIERLOAD_MERGE_THREADS",
    [TL_ENV_RPC_TIMEOUT] = "TIERLOAD_RPC_TIMEOUT",
};

const char *tl__env_name(tl__env_var v) {
    return (unsigned)v < TL_ENV_COUNT ? names[v] : "TIERLOAD_?";
}

const char *tl__env_get(tl__env_var v) {
    if ((unsigned)v >= TL_ENV_COUNT) return NULL;
    const char *s = getenv(names[v]);
    return s && *s ? s : NULL;
}

bool tl__env_is_set(tl__env_var v) {
    return (unsigned)v < TL_ENV_COUNT && getenv(names[v]) != NULL;
}
