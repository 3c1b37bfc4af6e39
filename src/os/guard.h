/*
 * guard.h — touching a file's mapping without dying when the file changes.
 *
 * A file truncated while mapped turns reads of the lost pages into SIGBUS,
 * which kills the process by default. Guarded calls install (once) a SIGBUS
 * handler that, only while the calling thread is inside a guarded call, jumps
 * back out and reports EFAULT; any other SIGBUS goes to the previous handler
 * as before. Guards nest per thread.
 */
#ifndef TL_OS_GUARD_H
#define TL_OS_GUARD_H

#include <stddef.h>

#include <stdbool.h>

/*
 * Turn the guard off (the host program handles SIGBUS itself): guarded calls
 * then just call. Set by tl_init before the first guarded call.
 */
void tl__os_guard_disable(bool off);
/* Has any guarded call happened yet (after which the setting is fixed)? */
bool tl__os_guard_used(void);

/* memcpy(dst, src, n), with a SIGBUS while reading src returned as EFAULT. */
int tl__os_guarded_copy(void *dst, const void *src, size_t n);
/* fn(arg) with a SIGBUS during it returned as EFAULT (0 otherwise). */
int tl__os_guarded_call(void (*fn)(void *arg), void *arg);

#endif
