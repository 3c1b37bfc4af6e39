/*
 * device.c — the tl_device handle: wrapping a vtable, reference counts, and
 * the public tl_device_* calls, which check arguments before the vtable sees
 * them and fill in what optional entries leave out.
 */
#include "core/error.h"
#include "core/outsize.h"
#include "core/options.h"
#include "devices/devices.h"

#include <stddef.h>
#include "os/os.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *tl_device_kind_name(tl_device_kind k) {
    switch (k) {
    case TL_DEVICE_CPU:
        return "cpu";
    case TL_DEVICE_SIM:
        return "sim";
    case TL_DEVICE_CUDA:
        return "cuda";
    case TL_DEVICE_OTHER:
        return "other";
    case TL_DEVICE_GGML:
        return "ggml";
    }
    return "unknown";
}

bool tl__device_name_ok(const char *name) {
    size_t n = name ? strnlen(name, TL_DEVICE_NAME_MAX) : 0;
    if (n == 0 || n >= TL_DEVICE_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!isalnum(c) && c != '_' && c != '.' && c != ':' && c != '-') return false;
    }
    return true;
}

void tl_device_ops_init(tl_device_ops *ops) {
    if (!ops) return;
    memset(ops, 0, sizeof *ops);
    ops->size = sizeof *ops;
}

tl_status tl_device_create(const tl_device_ops *ops, void *self, tl_device **out) {
    if (!out) return tl__err(TL_ERR_INVALID_ARG, "tl_device_create: out is NULL");
    *out = NULL;
    if (!ops) return tl__err(TL_ERR_INVALID_ARG, "tl_device_create: ops is NULL");
    tl_device_ops own;
    memset(&own, 0, sizeof own);
    tl_status s = tl__options_take(&own, sizeof own, ops, "tl_device_ops");
    if (s != TL_OK) return s;
    if (!own.describe || !own.alloc || !own.dealloc || !own.copy_to || !own.copy_from)
        return tl__err(
            TL_ERR_INVALID_ARG,
            "tl_device_create: describe, alloc, dealloc, copy_to and copy_from are required");
    if ((own.copy_to_async || own.copy_from_async) && (!own.wait || !own.poll))
        return tl__err(TL_ERR_INVALID_ARG,
                      "tl_device_create: a device with asynchronous copies needs wait and poll");
    tl_device_info info;
    memset(&info, 0, sizeof info);
    uint64_t gen = tl__err_generation();
    s = own.describe(self, &info);
    if (s != TL_OK) {
        if (tl__err_generation() == gen)
            return tl__err(s, "tl_device_create: describe failed (%s)", tl_status_name(s));
        return tl__err_prefix(s, "tl_device_create: describe");
    }
    info.name[TL_DEVICE_NAME_MAX - 1] = 0;
    s = tl__device_wrap(ops->size >= sizeof own ? ops : &own, self, info.name, info.kind, out);
    if (s == TL_OK && (*out)->ops != ops) {
        (*out)->own_ops = own;
        (*out)->ops = &(*out)->own_ops;
    }
    return s;
}

tl_status tl__device_wrap(const tl_device_ops *ops, void *self, const char *name,
                         tl_device_kind kind, tl_device **out) {
    *out = NULL;
    if (!tl__device_name_ok(name))
        return tl__err(
            TL_ERR_INVALID_ARG,
            "tl_device_create: invalid device name '%.*s' (1..%d characters of A-Z a-z 0-9 _ . : -)",
            TL_DEVICE_NAME_MAX - 1, name ? name : "", TL_DEVICE_NAME_MAX - 1);
    tl_device *d = tl__os_calloc(1, sizeof *d);
    if (!d) return tl__err(TL_ERR_NOMEM, "tl_device_create: out of memory");
    d->ops = ops;
    d->own_ops.size = sizeof d->own_ops;
    d->self = self;
    atomic_init(&d->refs, 1);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->kind = kind;
    *out = d;
    return TL_OK;
}

void tl_device_retain(tl_device *d) {
    if (d) atomic_fetch_add(&d->refs, 1);
}

void tl_device_release(tl_device *d) {
    if (!d) return;
    if (atomic_fetch_sub(&d->refs, 1) != 1) return;
    if (d->ops->destroy) d->ops->destroy(d->self);
    free(d);
}

const char *tl_device_name(const tl_device *d) {
    return d ? d->name : "";
}

tl_device_kind tl_device_kind_of(const tl_device *d) {
    return d ? d->kind : TL_DEVICE_OTHER;
}

/*
 * After a vtable call: a failure the implementation left without a message
 * (gen is the error generation from before the call) gets a generic one
 * naming the device and the operation, so no stale message survives.
 */
static tl_status op_done(const tl_device *d, const char *op, uint64_t gen, tl_status s) {
    if (s == TL_OK || tl__err_generation() != gen) return s;
    return tl__err(s, "device '%s': %s failed (%s)", d->name, op, tl_status_name(s));
}

/* Call the vtable entry op of d and name the failure if the device did not. */
#define DEV_CALL(d, op, ...)                                                                       \
    do {                                                                                           \
        uint64_t gen_ = tl__err_generation();                                                       \
        return op_done((d), #op, gen_, (d)->ops->op((d)->self, __VA_ARGS__));                      \
    } while (0)

tl_status tl_device_describe(tl_device *d, tl_device_info *out, size_t out_size) {
    if (!d || !out || !out_size)
        return tl__err(TL_ERR_INVALID_ARG, "tl_device_describe: NULL argument or size 0");
    tl_device_info info;
    memset(&info, 0, sizeof info);
    uint64_t gen = tl__err_generation();
    tl_status s = op_done(d, "describe", gen, d->ops->describe(d->self, &info));
    if (s != TL_OK) return s;
    memcpy(info.name, d->name, sizeof info.name);
    info.desc[sizeof info.desc - 1] = 0;
    info.kind = d->kind;
    if (info.alignment == 0 || (info.alignment & (info.alignment - 1)) != 0) info.alignment = 1;
    tl__copy_out(out, out_size, &info, sizeof info);
    return TL_OK;
}

tl_status tl_device_alloc(tl_device *d, uint64_t size, tl_devptr *out) {
    if (!d || !out) return tl__err(TL_ERR_INVALID_ARG, "tl_device_alloc: NULL argument");
    *out = 0;
    if (size == 0) return tl__err(TL_ERR_INVALID_ARG, "%s: allocation of 0 bytes", d->name);
    DEV_CALL(d, alloc, size, out);
}

tl_status tl_device_free(tl_device *d, tl_devptr p) {
    if (!d) return tl__err(TL_ERR_INVALID_ARG, "tl_device_free: NULL device");
    if (p == 0) return TL_OK;
    DEV_CALL(d, dealloc, p);
}

/* Common checks of a copy; *skip when there is nothing to do. */
static tl_status copy_args(const tl_device *d, const char *what, tl_devptr dp, const void *hp,
                           uint64_t n, bool *skip) {
    *skip = false;
    if (!d) return tl__err(TL_ERR_INVALID_ARG, "%s: NULL device", what);
    if (n == 0) {
        *skip = true;
        return TL_OK;
    }
    if (!hp || dp == 0) return tl__err(TL_ERR_INVALID_ARG, "%s: %s: NULL pointer", d->name, what);
    if (dp + n < dp || (uintptr_t)hp + n < (uintptr_t)hp)
        return tl__err(TL_ERR_INVALID_ARG, "%s: %s: range wraps around", d->name, what);
    return TL_OK;
}

tl_status tl_device_copy_to(tl_device *d, tl_devptr dst, const void *src, uint64_t n) {
    bool skip;
    tl_status s = copy_args(d, "copy to device", dst, src, n, &skip);
    if (s != TL_OK || skip) return s;
    DEV_CALL(d, copy_to, dst, src, n);
}

tl_status tl_device_copy_from(tl_device *d, void *dst, tl_devptr src, uint64_t n) {
    bool skip;
    tl_status s = copy_args(d, "copy from device", src, dst, n, &skip);
    if (s != TL_OK || skip) return s;
    DEV_CALL(d, copy_from, dst, src, n);
}

tl_status tl_device_copy_to_async(tl_device *d, tl_devptr dst, const void *src, uint64_t n,
                                  uint64_t *ticket) {
    if (!ticket) return tl__err(TL_ERR_INVALID_ARG, "tl_device_copy_to_async: ticket is NULL");
    *ticket = 0;
    bool skip;
    tl_status s = copy_args(d, "async copy to device", dst, src, n, &skip);
    if (s != TL_OK || skip) return s;
    if (!d->ops->copy_to_async) DEV_CALL(d, copy_to, dst, src, n);
    DEV_CALL(d, copy_to_async, dst, src, n, ticket);
}

tl_status tl_device_copy_from_async(tl_device *d, void *dst, tl_devptr src, uint64_t n,
                                    uint64_t *ticket) {
    if (!ticket) return tl__err(TL_ERR_INVALID_ARG, "tl_device_copy_from_async: ticket is NULL");
    *ticket = 0;
    bool skip;
    tl_status s = copy_args(d, "async copy from device", src, dst, n, &skip);
    if (s != TL_OK || skip) return s;
    if (!d->ops->copy_from_async) DEV_CALL(d, copy_from, dst, src, n);
    DEV_CALL(d, copy_from_async, dst, src, n, ticket);
}

tl_status tl_device_wait(tl_device *d, uint64_t ticket) {
    if (!d) return tl__err(TL_ERR_INVALID_ARG, "tl_device_wait: NULL device");
    if (ticket == 0 || !d->ops->wait) return TL_OK;
    DEV_CALL(d, wait, ticket);
}

tl_status tl_device_poll(tl_device *d, uint64_t ticket, bool *done) {
    if (!d || !done) return tl__err(TL_ERR_INVALID_ARG, "tl_device_poll: NULL argument");
    *done = true;
    if (ticket == 0 || !d->ops->poll) return TL_OK;
    DEV_CALL(d, poll, ticket, done);
}

tl_status tl_device_pin(tl_device *d, void *host, uint64_t n) {
    if (!d) return tl__err(TL_ERR_INVALID_ARG, "tl_device_pin: NULL device");
    if (n == 0) return TL_OK;
    if (!host) return tl__err(TL_ERR_INVALID_ARG, "%s: pin: NULL pointer", d->name);
    if (!d->ops->pin) return TL_OK;
    DEV_CALL(d, pin, host, n);
}

tl_status tl_device_unpin(tl_device *d, void *host, uint64_t n) {
    if (!d) return tl__err(TL_ERR_INVALID_ARG, "tl_device_unpin: NULL device");
    if (n == 0) return TL_OK;
    if (!host) return tl__err(TL_ERR_INVALID_ARG, "%s: unpin: NULL pointer", d->name);
    if (!d->ops->unpin) return TL_OK;
    DEV_CALL(d, unpin, host, n);
}

tl_status tl_device_read_file(tl_device *d, int fd, uint64_t off, tl_devptr dst, uint64_t n) {
    if (!d) return tl__err(TL_ERR_INVALID_ARG, "tl_device_read_file: NULL device");
    if (n == 0) return TL_OK;
    if (fd < 0 || dst == 0)
        return tl__err(TL_ERR_INVALID_ARG, "%s: read_file: bad file or device pointer", d->name);
    if (!d->ops->read_file)
        return tl__err(TL_ERR_UNSUPPORTED, "%s: no direct file-to-device path", d->name);
    DEV_CALL(d, read_file, fd, off, dst, n);
}
