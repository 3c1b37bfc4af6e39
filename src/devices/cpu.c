/*
 * cpu.c — the built-in "cpu" device: host memory. total and free come from
 * MemAvailable and the cgroup v2 limit, whichever is tighter (os/meminfo);
 * an allocation larger than what is free now is refused with
 * TL_ERR_DEVICE_OOM, like a full GPU. Device pointers are host pointers;
 * copies are memcpy (no asynchronous path); pinning is mlock.
 */
#include "core/error.h"
#include "devices/devices.h"
#include "os/fault.h"
#include "os/meminfo.h"
#include "os/os.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CPU_ALIGN 64

/* The cgroup folder, found once when the device is made. */
typedef struct cpu_state {
    bool cg;
    char cg_root[1024];
    char cg_dir[4096];
} cpu_state;

static int host_mem(const cpu_state *c, tl__os_meminfo *m) {
    return tl__os_meminfo_read_at(c->cg ? c->cg_root : NULL, c->cg ? c->cg_dir : NULL, m);
}

static tl_status cpu_describe(void *self, tl_device_info *out) {
    snprintf(out->name, sizeof out->name, "cpu");
    tl__os_meminfo hm;
    int e = host_mem(self, &hm);
    if (e) return tl__err_errno(e, "cpu: reading /proc/meminfo");
    snprintf(out->desc, sizeof out->desc, "host RAM%s", hm.cg_limited ? " (cgroup limit)" : "");
    out->kind = TL_DEVICE_CPU;
    out->total = hm.total;
    out->free = hm.free;
    out->host_pointer = true;
    out->async = false;
    out->alignment = CPU_ALIGN;
    return TL_OK;
}

static tl_status cpu_alloc(void *self, uint64_t size, tl_devptr *out) {
    int e = tl__fault_hit(TL_FAULT_DEVICE_ALLOC);
    if (e)
        return tl__err(TL_ERR_DEVICE_OOM, "cpu: cannot allocate %llu bytes: %s",
                      (unsigned long long)size, tl__errno_text(e));
    tl__os_meminfo hm;
    if (host_mem(self, &hm) == 0 && size > hm.free)
        return tl__err(TL_ERR_DEVICE_OOM, "cpu: cannot allocate %llu bytes: %llu bytes free%s",
                      (unsigned long long)size, (unsigned long long)hm.free,
                      hm.cg_limited ? " under the cgroup memory limit" : " (MemAvailable)");
    if (size > SIZE_MAX - CPU_ALIGN)
        return tl__err(TL_ERR_DEVICE_OOM, "cpu: cannot allocate %llu bytes",
                      (unsigned long long)size);
    void *p = NULL;
    e = tl__os_aligned_alloc(CPU_ALIGN, (size_t)size, &p);
    if (e)
        return tl__err(TL_ERR_DEVICE_OOM, "cpu: cannot allocate %llu bytes: %s",
                      (unsigned long long)size, tl__errno_text(e));
    *out = (tl_devptr)(uintptr_t)p;
    return TL_OK;
}

static tl_status cpu_dealloc(void *self, tl_devptr p) {
    (void)self;
    free((void *)(uintptr_t)p);
    return TL_OK;
}

static tl_status cpu_copy_to(void *self, tl_devptr dst, const void *src, uint64_t n) {
    (void)self;
    memmove((void *)(uintptr_t)dst, src, (size_t)n);
    return TL_OK;
}

static tl_status cpu_copy_from(void *self, void *dst, tl_devptr src, uint64_t n) {
    (void)self;
    memmove(dst, (const void *)(uintptr_t)src, (size_t)n);
    return TL_OK;
}

static tl_status cpu_pin(void *self, void *host, uint64_t n) {
    (void)self;
    int e = tl__os_mlock(host, n);
    if (!e) return TL_OK;
    uint64_t lim = 0;
    char why[96] = "";
    if ((e == ENOMEM || e == EPERM || e == EAGAIN) && tl__os_memlock_limit(&lim) == 0) {
        if (lim == UINT64_MAX)
            snprintf(why, sizeof why, " (RLIMIT_MEMLOCK is unlimited)");
        else
            snprintf(why, sizeof why, " (RLIMIT_MEMLOCK is %llu bytes; raise it with ulimit -l)",
                     (unsigned long long)lim);
    }
    return tl__err(e == EINVAL ? TL_ERR_INVALID_ARG : TL_ERR_NOMEM,
                  "cpu: mlock of %llu bytes failed: %s%s", (unsigned long long)n, tl__errno_text(e),
                  why);
}

static tl_status cpu_unpin(void *self, void *host, uint64_t n) {
    (void)self;
    int e = tl__os_munlock(host, n);
    if (e)
        return tl__err(TL_ERR_INVALID_ARG, "cpu: munlock of %llu bytes failed: %s",
                      (unsigned long long)n, tl__errno_text(e));
    return TL_OK;
}

static void cpu_destroy(void *self) {
    free(self);
}

static const tl_device_ops cpu_ops = {
    .size = sizeof(tl_device_ops),
    .describe = cpu_describe,
    .alloc = cpu_alloc,
    .dealloc = cpu_dealloc,
    .copy_to = cpu_copy_to,
    .copy_from = cpu_copy_from,
    .pin = cpu_pin,
    .unpin = cpu_unpin,
    .destroy = cpu_destroy,
};

tl_status tl__device_cpu_create(tl_device **out) {
    cpu_state *c = tl__os_calloc(1, sizeof *c);
    if (!c) return tl__err(TL_ERR_NOMEM, "cpu: out of memory");
    c->cg = tl__os_cgroup_self(c->cg_root, sizeof c->cg_root, c->cg_dir, sizeof c->cg_dir) == 0;
    tl_status s = tl_device_create(&cpu_ops, c, out);
    if (s != TL_OK) free(c);
    return s;
}
