/*
 * fault.c — the counters behind os/fault.h. A disarmed kind costs one relaxed
 * atomic load per call.
 */
#include "os/fault.h"

#include <stdatomic.h>

static _Atomic unsigned long fault_calls[TL_FAULT_KINDS];
static _Atomic unsigned long fault_nth[TL_FAULT_KINDS];
static _Atomic int fault_err[TL_FAULT_KINDS];
static _Atomic int fault_armed;
static void (*_Atomic fault_fn[TL_FAULT_KINDS])(void *);
static void *_Atomic fault_fn_arg[TL_FAULT_KINDS];

void tl__fault_arm(tl__fault_kind kind, unsigned long nth, int err) {
    atomic_store(&fault_calls[kind], 0);
    atomic_store(&fault_nth[kind], nth);
    atomic_store(&fault_err[kind], err);
    atomic_store(&fault_fn[kind], NULL);
    atomic_store(&fault_armed, 1);
}

void tl__fault_on_call(tl__fault_kind kind, unsigned long nth, void (*fn)(void *), void *arg) {
    tl__fault_arm(kind, nth, 0);
    atomic_store(&fault_fn_arg[kind], arg);
    atomic_store(&fault_fn[kind], fn);
}

void tl__fault_reset(void) {
    for (int k = 0; k < TL_FAULT_KINDS; k++) {
        atomic_store(&fault_calls[k], 0);
        atomic_store(&fault_nth[k], 0);
        atomic_store(&fault_err[k], 0);
        atomic_store(&fault_fn[k], NULL);
    }
    atomic_store(&fault_armed, 0);
}

unsigned long tl__fault_calls(tl__fault_kind kind) {
    return atomic_load(&fault_calls[kind]);
}

int tl__fault_hit(tl__fault_kind kind) {
    if (!atomic_load_explicit(&fault_armed, memory_order_relaxed)) return 0;
    unsigned long n = atomic_fetch_add(&fault_calls[kind], 1) + 1;
    unsigned long nth = atomic_load(&fault_nth[kind]);
    if (nth == 0 || n != nth) return 0;
    void (*fn)(void *) = atomic_load(&fault_fn[kind]);
    if (fn) {
        fn(atomic_load(&fault_fn_arg[kind]));
        return 0;
    }
    return atomic_load(&fault_err[kind]);
}

void tl__fault_corrupt(void *buf, size_t n) {
    if (!tl__fault_hit(TL_FAULT_CORRUPT)) return;
    unsigned char *p = buf;
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)~p[i];
}
