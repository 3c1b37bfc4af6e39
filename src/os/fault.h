/*
 * fault.h — fault injection for tests: make the N-th call of a kind of system
 * call fail with a chosen errno. Off (and one branch) unless a test arms it.
 *
 * Counters are process-wide and atomic; tests arm one kind at a time.
 */
#ifndef TL_OS_FAULT_H
#define TL_OS_FAULT_H

#include <stddef.h>

typedef enum tl__fault_kind {
    TL_FAULT_OPEN = 0,
    TL_FAULT_READ,
    TL_FAULT_WRITE,
    TL_FAULT_MMAP,
    TL_FAULT_FSYNC,
    TL_FAULT_ALLOC,
    TL_FAULT_DEVICE_ALLOC,
    /* not an error: the nth file read succeeds with every byte it read inverted (tests of verify)
     */
    TL_FAULT_CORRUPT,
    TL_FAULT_KINDS,
} tl__fault_kind;

/* Fail the nth (1-based) call of kind from now on with err (0 disarms). */
void tl__fault_arm(tl__fault_kind kind, unsigned long nth, int err);
/*
 * Instead of failing, call fn(arg) at the nth call of kind and let the call go
 * on: a test changes the world (re-points a symlink) at an exact point.
 */
void tl__fault_on_call(tl__fault_kind kind, unsigned long nth, void (*fn)(void *), void *arg);
/* Disarm all kinds and reset counters. */
void tl__fault_reset(void);
/* How many calls of kind were made since the last arm/reset. */
unsigned long tl__fault_calls(tl__fault_kind kind);
/* Called at each site: 0 to proceed, or the errno to fail with. */
int tl__fault_hit(tl__fault_kind kind);
/* Read sites, after a successful read of n bytes into buf: invert them when TL_FAULT_CORRUPT hits.
 */
void tl__fault_corrupt(void *buf, size_t n);

#endif
