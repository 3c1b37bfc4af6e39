/*
 * device.c — the tl_device handle: wrapping a vtable, reference counts, and
 * the public tl_device_* calls, which check arguments before the vtable sees
 * them and fill in what optional entries leave out.
 */
#include "core/error.h"
#include "devices/devices.h"
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

bool tl_device_name_ok(const char *name) {
    size_t n = name ? strnlen(name, TL_DEVICE_NAME_MAX) : 0;
    if (n == 0 || n >= TL_DEVICE_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!isalnum(c) && c != '_' && c != '.' && c != ':' && c != '-') return false;
    }
    return true;
}

tl_status tl_device_new(const tl_device_ops *ops, void *self, tl_device **out) {
    if (!out) return tl_err(TL_ERR_INVALID_ARG, "tl_device_new: out is NULL");
    *out = NULL;
    if (!ops || !ops->describe || !ops->alloc || !ops->dealloc || !ops->copy_to || !ops->copy_from)
        return tl_err(
            TL_ERR_INVALID_ARG,
            "tl_device_new: describe, alloc, dealloc, copy_to and copy_from are required");
    if ((ops->copy_to_async || ops->copy_from_async) && (!ops->wait || !ops->poll))
        return tl_err(TL_ERR_INVALID_ARG,
                      "tl_device_new: a device with asynchronous copies needs wait and poll");
    tl_device_info info;
    memset(&info, 0, sizeof info);
    tl_status s = ops->describe(self, &info);
    if (s != TL_OK) return tl_err_prefix(s, "tl_device_new: describe");
    info.name[TL_DEVICE_NAME_MAX - 1] = 0;
    return tl_device_wrap(ops, self, info.name, info.kind, out);
}

tl_status tl_device_wrap(const tl_device_ops *ops, void *self, const char *name,
                         tl_device_kind kind, tl_device **out) {
    *out = NULL;
    if (!tl_device_name_ok(name))
        return tl_err(
            TL_ERR_INVALID_ARG,
            "tl_device_new: invalid device name '%.*s' (1..%d characters of A-Z a-z 0-9 _ . : -)",
            TL_DEVICE_NAME_MAX - 1, name ? name : "", TL_DEVICE_NAME_MAX - 1);
    tl_device *d = tl_os_calloc(1, sizeof *d);
    if (!d) return tl_err(TL_ERR_NOMEM, "tl_device_new: out of memory");
    d->ops = ops;
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

tl_status tl_device_describe(tl_device *d, tl_device_info *out) {
    if (!d || !out) return tl_err(TL_ERR_INVALID_ARG, "tl_device_describe: NULL argument");
    memset(out, 0, sizeof *out);
    tl_status s = d->ops->describe(d->self, out);
    if (s != TL_OK) return s;
    memcpy(out->name, d->name, sizeof out->name);
    out->desc[sizeof out->desc - 1] = 0;
    out->kind = d->kind;
    if (out->alignment == 0 || (out->alignment & (out->alignment - 1)) != 0) out->alignment = 1;
    return TL_OK;
}

tl_status tl_device_alloc(tl_device *d, uint64_t size, tl_devptr *out) {
    if (!d || !out) return tl_err(TL_ERR_INVALID_ARG, "tl_device_alloc: NULL argument");
    *out = 0;
    if (size == 0) return tl_err(TL_ERR_INVALID_ARG, "%s: allocation of 0 bytes", d->name);
    return d->ops->alloc(d->self, size, out);
}

tl_status tl_device_free(tl_device *d, tl_devptr p) {
    if (!d) return tl_err(TL_ERR_INVALID_ARG, "tl_device_free: NULL device");
    if (p == 0) return TL_OK;
    return d->ops->dealloc(d->self, p);
}

/* Common checks of a copy; *skip when there is nothing to do. */
static tl_status copy_args(const tl_device *d, const char *what, tl_devptr dp, const void *hp,
                           uint64_t n, bool *skip) {
    *skip = false;
    if (!d) return tl_err(TL_ERR_INVALID_ARG, "%s: NULL device", what);
    if (n == 0) {
        *skip = true;
        return TL_OK;
    }
    if (!hp || dp == 0) return tl_err(TL_ERR_INVALID_ARG, "%s: %s: NULL pointer", d->name, what);
    if (dp + n < dp || (uintptr_t)hp + n < (uintptr_t)hp)
        return tl_err(TL_ERR_INVALID_ARG, "%s: %s: range wraps around", d->name, what);
    return TL_OK;
}

tl_status tl_device_copy_to(tl_device *d, tl_devptr dst, const void *src, uint64_t n) {
    bool skip;
    tl_status s = copy_args(d, "copy to device", dst, src, n, &skip);
    if (s != TL_OK || skip) return s;
    return d->ops->copy_to(d->self, dst, src, n);
}

tl_status tl_device_copy_from(tl_device *d, void *dst, tl_devptr src, uint64_t n) {
    bool skip;
    tl_status s = copy_args(d, "copy from device", src, dst, n, &skip);
    if (s != TL_OK || skip) return s;
    return d->ops->copy_from(d->self, dst, src, n);
}

tl_status tl_device_copy_to_async(tl_device *d, tl_devptr dst, const void *src, uint64_t n,
                                  uint64_t *ticket) {
    if (!ticket) return tl_err(TL_ERR_INVALID_ARG, "tl_device_copy_to_async: ticket is NULL");
    *ticket = 0;
    bool skip;
    tl_status s = copy_args(d, "async copy to device", dst, src, n, &skip);
    if (s != TL_OK || skip) return s;
    if (!d->ops->copy_to_async) return d->ops->copy_to(d->self, dst, src, n);
    return d->ops->copy_to_async(d->self, dst, src, n, ticket);
}

tl_status tl_device_copy_from_async(tl_device *d, void *dst, tl_devptr src, uint64_t n,
                                    uint64_t *ticket) {
    if (!ticket) return tl_err(TL_ERR_INVALID_ARG, "tl_device_copy_from_async: ticket is NULL");
    *ticket = 0;
    bool skip;
    tl_status s = copy_args(d, "async copy from device", src, dst, n, &skip);
    if (s != TL_OK || skip) return s;
    if (!d->ops->copy_from_async) return d->ops->copy_from(d->self, dst, src, n);
    return d->ops->copy_from_async(d->self, dst, src, n, ticket);
}

tl_status tl_device_wait(tl_device *d, uint64_t ticket) {
    if (!d) return tl_err(TL_ERR_INVALID_ARG, "tl_device_wait: NULL device");
    if (ticket == 0 || !d->ops->wait) return TL_OK;
    return d->ops->wait(d->self, ticket);
}

tl_status tl_device_poll(tl_device *d, uint64_t ticket, bool *done) {
    if (!d || !done) return tl_err(TL_ERR_INVALID_ARG, "tl_device_poll: NULL argument");
    *done = true;
    if (ticket == 0 || !d->ops->poll) return TL_OK;
    return d->ops->poll(d->self, ticket, done);
}

tl_status tl_device_pin(tl_device *d, void *host, uint64_t n) {
    if (!d) return tl_err(TL_ERR_INVALID_ARG, "tl_device_pin: NULL device");
    if (n == 0) return TL_OK;
    if (!host) return tl_err(TL_ERR_INVALID_ARG, "%s: pin: NULL pointer", d->name);
    return d->ops->pin ? d->ops->pin(d->self, host, n) : TL_OK;
}

tl_status tl_device_unpin(tl_device *d, void *host, uint64_t n) {
    if (!d) return tl_err(TL_ERR_INVALID_ARG, "tl_device_unpin: NULL device");
    if (n == 0) return TL_OK;
    if (!host) return tl_err(TL_ERR_INVALID_ARG, "%s: unpin: NULL pointer", d->name);
    return d->ops->unpin ? d->ops->unpin(d->self, host, n) : TL_OK;
}

tl_status tl_device_read_file(tl_device *d, int fd, uint64_t off, tl_devptr dst, uint64_t n) {
    if (!d) return tl_err(TL_ERR_INVALID_ARG, "tl_device_read_file: NULL device");
    if (n == 0) return TL_OK;
    if (fd < 0 || dst == 0)
        return tl_err(TL_ERR_INVALID_ARG, "%s: read_file: bad file or device pointer", d->name);
    if (!d->ops->read_file)
        return tl_err(TL_ERR_UNSUPPORTED, "%s: no direct file-to-device path", d->name);
    return d->ops->read_file(d->self, fd, off, dst, n);
}
