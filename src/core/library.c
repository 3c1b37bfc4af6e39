/*
 * library.c — tl_init and the process-wide settings it records (CUDA
 * discovery, the SIGBUS guard), and the init functions of every public
 * options struct.
 */
#include "core/library.h"

#include "core/error.h"
#include "os/guard.h"
#include "os/os.h"
#include "core/options.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t lib_lock = PTHREAD_MUTEX_INITIALIZER;
static tl_library_options lib_opts = {.size = sizeof(tl_library_options)};
static char *lib_cudart; /* own copy of cudart_path */
static atomic_bool lib_frozen;

void tl_library_options_init(tl_library_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
}

tl_status tl_init(const tl_library_options *opts) {
    tl_library_options o;
    tl_library_options_init(&o);
    tl_status s = tl__options_take(&o, sizeof o, opts, "tl_library_options");
    if (s != TL_OK) return s;
    pthread_mutex_lock(&lib_lock);
    if (atomic_load(&lib_frozen) || tl__os_guard_used()) {
        pthread_mutex_unlock(&lib_lock);
        return tl__err(TL_ERR_INVALID_ARG,
                      "tl_init: the library is already in use (devices discovered or a "
                      "mapping read); call tl_init first");
    }
    char *path = NULL;
    if (o.cudart_path && !(path = tl__os_strdup(o.cudart_path))) {
        pthread_mutex_unlock(&lib_lock);
        return tl__err(TL_ERR_NOMEM, "tl_init: out of memory");
    }
    free(lib_cudart);
    lib_cudart = path;
    o.cudart_path = path;
    lib_opts = o;
    tl__os_guard_disable(o.no_sigbus_guard);
    pthread_mutex_unlock(&lib_lock);
    tl_warm_pool_set(o.keep_warm);
    return TL_OK;
}

const tl_library_options *tl__lib_options(void) {
    if (!atomic_load(&lib_frozen)) {
        pthread_mutex_lock(&lib_lock);
        atomic_store(&lib_frozen, true);
        pthread_mutex_unlock(&lib_lock);
    }
    return &lib_opts;
}

void tl_model_options_init(tl_model_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
}

void tl_load_options_init(tl_load_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
    o->mode = TL_LOAD_AUTO;
}

void tl_plan_options_init(tl_plan_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
}
