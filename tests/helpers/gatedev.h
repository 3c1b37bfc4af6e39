/*
 * gatedev.h — a device for tests that need to see and steer the order of
 * copies: an engine-registered device (kind "other", memory from malloc,
 * capacity exact to the byte, no host pointers, no async copies) that logs
 * every copy onto it and can hold copies at a gate until the test opens it.
 *
 *     tu_gatedev *g = tu_gatedev_add("gate0", 8 << 20);
 *     tu_gatedev_hold(g, 1);          // the next copy onto the device blocks ...
 *     ... start work that copies ...
 *     tu_gatedev_wait_held(g, 1);     // ... until it is certainly blocked there
 *     tu_gatedev_open(g);             // let it (and every later copy) through
 *     tu_gatedev_remove(g);
 */
#ifndef TL_TEST_GATEDEV_H
#define TL_TEST_GATEDEV_H

#include <stddef.h>
#include <stdint.h>

#include "tierload.h"

typedef struct tu_gatedev tu_gatedev;

/* One copy onto the device, in the order the copies finished. */
typedef struct tu_gatecopy {
    tl_devptr dst;
    uint64_t n;
} tu_gatecopy;

/* Create and register a device of cap bytes named name. */
tu_gatedev *tu_gatedev_add(const char *name, uint64_t cap);
/* The device (borrowed). */
tl_device *tu_gatedev_device(tu_gatedev *g);
/* The next n copies onto the device wait at the gate until tu_gatedev_open. */
void tu_gatedev_hold(tu_gatedev *g, unsigned n);
/* Wait until n copies are waiting at the gate. */
void tu_gatedev_wait_held(tu_gatedev *g, unsigned n);
/* Let every held copy through; later copies pass too (until the next hold). */
void tu_gatedev_open(tu_gatedev *g);
/* Copies finished so far; the first cap of them (in order) into out, which may be NULL. */
size_t tu_gatedev_log(tu_gatedev *g, tu_gatecopy *out, size_t cap);
/* Copies finished so far. */
size_t tu_gatedev_copies(tu_gatedev *g);
/* Bytes allocated on the device now. */
uint64_t tu_gatedev_used(tu_gatedev *g);
/* Unregister and release the device (its memory goes with the last reference). */
void tu_gatedev_remove(tu_gatedev *g);

#endif
