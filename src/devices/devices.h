/*
 * devices.h — inside the device layer: the tl_device wrapper, the built-in
 * device constructors and the discovery hooks the registry calls once.
 */
#ifndef TL_DEVICES_DEVICES_H
#define TL_DEVICES_DEVICES_H

#include "tierload.h"

#include <stdatomic.h>

struct tl_device {
    const tl_device_ops *ops; /* the caller's vtable, or own_ops when the caller's is shorter */
    tl_device_ops own_ops;    /* the caller's fields, the ones it lacks NULL */
    void *self;
    atomic_uint refs;
    char name[TL_DEVICE_NAME_MAX];
    tl_device_kind kind;
};

/*
 * tl_device_create without the describe call (ops must be a complete
 * tl_device_ops of this library's size): for built-ins whose describe is
 * costly (cuda: cudaMemGetInfo would create a context on every GPU).
 */
tl_status tl__device_wrap(const tl_device_ops *ops, void *self, const char *name,
                         tl_device_kind kind, tl_device **out);

/* Valid device name: 1..31 bytes of [A-Za-z0-9_.:-]. */
bool tl__device_name_ok(const char *name);

/* The built-in host device (one reference owned by the caller). */
tl_status tl__device_cpu_create(tl_device **out);

/*
 * CUDA discovery (called once, under the registry lock): loads libcudart and
 * calls add for every GPU found. Failure is recorded as the reason string.
 */
void tl__cuda_discover(void (*add)(tl_device *d));

/*
 * Where the bytes [p, p+n) of a sim device's allocation lie in host memory, to
 * be read in place as tl_device_copy_from would have copied them out (queued
 * copies done first, the model clock advanced the same way); NULL when d is
 * not a sim device or the range is not inside one live allocation. Valid
 * until that allocation is freed.
 */
const void *tl__sim_read_in_place(tl_device *d, tl_devptr p, uint64_t n);
/*
 * A copy to a sim device from host memory that may be a file's mapping, read
 * under the SIGBUS guard as it is copied (no bounce through staging).
 * Synchronous with ticket NULL: TL_ERR_CHANGED (no message set) when it
 * faulted, the range then partly written. Asynchronous otherwise, as
 * tl_device_copy_to_async: the wait or poll that finds it done is
 * TL_ERR_CHANGED when it faulted. TL_ERR_UNSUPPORTED when d is not a sim.
 */
tl_status tl__sim_copy_to_mapped(tl_device *d, tl_devptr dst, const void *src, uint64_t n,
                                 uint64_t *ticket);
/*
 * While on (counted: each on needs its off), a sim device hashes each 1 MiB
 * leaf of an allocation written whole as it lands (core/checkhash.h), in
 * cache; any other write of a leaf forgets its hash. No-op on other devices.
 */
void tl__sim_hash_landing(tl_device *d, bool on);
/*
 * The check's hash of [p, p+n) from the hashes taken as its bytes landed:
 * true when it is one whole live allocation whose every leaf was written
 * whole since (with the model time of a copy back), else false (hash it in
 * place).
 */
bool tl__sim_landed_hash(tl_device *d, tl_devptr p, uint64_t n, uint64_t *out);

/* ---- libcufile (GPUDirect Storage), used by cuda.c ---- */
/* Load libcufile and open its driver (once); false with tl_device_cufile_reason() set. */
bool tl__cufile_load(void);
/* Read n bytes at off of fd into device address dst; 0 or -1 (reason recorded). */
int tl__cufile_read(int fd, uint64_t off, void *dst, uint64_t n);
/* Record the outcome of the probe read (why NULL keeps the reason cuFile itself left). */
void tl__cufile_set_usable(bool ok, const char *why);
bool tl__cufile_usable(void);

#endif
