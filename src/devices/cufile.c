/*
 * cufile.c — GPUDirect Storage through libcufile loaded at run time (dlopen),
 * for reading file ranges straight into CUDA memory. Loaded once, on the
 * first direct read; reported usable only after the first real small read
 * through it matched pread (cuda.c does that probe). Kept small: one handle
 * registration per read, no buffer registration (cuFile bounces unregistered
 * buffers itself), compatibility mode accepted.
 */
#include "core/error.h"
#include "devices/devices.h"
#include "os/dl.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

/* The slice of cufile.h used (stable since GDS 1.0). */
typedef struct CUfileError {
    int err;    /* CUfileOpError; 0 = success */
    int cu_err; /* CUresult */
} CUfileError_t;
typedef void *CUfileHandle_t;
typedef struct CUfileDescr {
    int type; /* CU_FILE_HANDLE_TYPE_OPAQUE_FD = 1 */
    union {
        int fd;
        void *handle;
    } handle;
    const void *fs_ops;
} CUfileDescr_t;

static struct {
    void *lib;
    CUfileError_t (*DriverOpen)(void);
    CUfileError_t (*HandleRegister)(CUfileHandle_t *, CUfileDescr_t *);
    void (*HandleDeregister)(CUfileHandle_t);
    ssize_t (*Read)(CUfileHandle_t, void *, size_t, off_t, off_t);
} cf;

static pthread_once_t cf_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t cf_lock = PTHREAD_MUTEX_INITIALIZER;
static char cf_reason[512] = "not tried yet";
static atomic_bool cf_loaded, cf_usable;

static void set_reason(const char *fmt, const char *a) {
    pthread_mutex_lock(&cf_lock);
    snprintf(cf_reason, sizeof cf_reason, fmt, a);
    pthread_mutex_unlock(&cf_lock);
}

static void cf_load_once(void) {
    static const char *const names[] = {"libcufile.so.0", "libcufile.so", "libcufile.so.1", NULL};
    char why[400];
    cf.lib = tl__os_dlopen_first(names, why, sizeof why);
    if (!cf.lib) {
        set_reason("no libcufile: %s", why);
        return;
    }
    *(void **)&cf.DriverOpen = tl__os_dlsym(cf.lib, "cuFileDriverOpen");
    *(void **)&cf.HandleRegister = tl__os_dlsym(cf.lib, "cuFileHandleRegister");
    *(void **)&cf.HandleDeregister = tl__os_dlsym(cf.lib, "cuFileHandleDeregister");
    *(void **)&cf.Read = tl__os_dlsym(cf.lib, "cuFileRead");
    if (!cf.DriverOpen || !cf.HandleRegister || !cf.HandleDeregister || !cf.Read) {
        set_reason("%s", "libcufile lacks cuFileDriverOpen/HandleRegister/Read");
        return;
    }
    CUfileError_t e = cf.DriverOpen();
    if (e.err != 0) {
        char b[64];
        snprintf(b, sizeof b, "%d (CUresult %d)", e.err, e.cu_err);
        set_reason("cuFileDriverOpen failed: error %s", b);
        return;
    }
    set_reason("%s", "libcufile loaded; not probed yet");
    atomic_store(&cf_loaded, true);
}

bool tl__cufile_load(void) {
    pthread_once(&cf_once, cf_load_once);
    return atomic_load(&cf_loaded);
}

int tl__cufile_read(int fd, uint64_t off, void *dst, uint64_t n) {
    if (!atomic_load(&cf_loaded)) return -1;
    CUfileDescr_t d;
    memset(&d, 0, sizeof d);
    d.type = 1;
    d.handle.fd = fd;
    CUfileHandle_t h = NULL;
    CUfileError_t e = cf.HandleRegister(&h, &d);
    if (e.err != 0) {
        char b[64];
        snprintf(b, sizeof b, "%d (CUresult %d)", e.err, e.cu_err);
        set_reason("cuFileHandleRegister failed: error %s", b);
        return -1;
    }
    uint64_t done = 0;
    int rc = 0;
    while (done < n) {
        ssize_t r = cf.Read(h, dst, (size_t)(n - done), (off_t)(off + done), (off_t)done);
        if (r <= 0) {
            char b[32];
            snprintf(b, sizeof b, "%zd", r);
            set_reason("cuFileRead returned %s", b);
            rc = -1;
            break;
        }
        done += (uint64_t)r;
    }
    cf.HandleDeregister(h);
    return rc;
}

void tl__cufile_set_usable(bool ok, const char *why) {
    atomic_store(&cf_usable, ok);
    if (ok)
        set_reason("%s", "");
    else if (why)
        set_reason("%s", why);
}

bool tl__cufile_usable(void) {
    return atomic_load(&cf_usable);
}

const char *tl_device_cufile_reason(void) {
    /* a thread-local copy: the shared one may change under a concurrent probe */
    static _Thread_local char copy[512];
    pthread_mutex_lock(&cf_lock);
    memcpy(copy, cf_reason, sizeof copy);
    pthread_mutex_unlock(&cf_lock);
    return copy;
}
