/*
 * error.h — the one error convention inside the library.
 *
 * A failing function records a message with tl_err() and returns its status;
 * the message is thread-local so sessions on different threads never see each
 * other's errors. Messages name the file (and tensor or key) involved: the
 * caller that knows the path is the one that formats it.
 */
#ifndef TL_CORE_ERROR_H
#define TL_CORE_ERROR_H

#include "tierload.h"

/* Record a formatted message for this thread and return s. */
tl_status tl_err(tl_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix the current message with "prefix: " (keeps the status). */
tl_status tl_err_prefix(tl_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Clear the message. */
void tl_err_clear(void);
/*
 * A counter this thread bumps on every write of its message: a caller that
 * reads it before calling out (a device vtable, a callback) can tell after
 * the call whether the callee recorded a message of its own.
 */
uint64_t tl_err_generation(void);

#endif
