/*
 * error.h — the one error convention inside the library.
 *
 * A failing function records a message with tl__err() and returns its status;
 * the message is thread-local so sessions on different threads never see each
 * other's errors. Messages name the file (and tensor or key) involved: the
 * caller that knows the path is the one that formats it. errno values from
 * os/ are turned into a status and a text by the helpers below, nowhere else.
 */
#ifndef TL_CORE_ERROR_H
#define TL_CORE_ERROR_H

#include "tierload.h"

/* Record a formatted message for this thread and return s. */
tl_status tl__err(tl_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix the current message with "prefix: " (keeps the status). */
tl_status tl__err_prefix(tl_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Clear the message. */
void tl__err_clear(void);
/*
 * A counter this thread bumps on every write of its message: a caller that
 * reads it before calling out (a device vtable, a callback) can tell after
 * the call whether the callee recorded a message of its own.
 */
uint64_t tl__err_generation(void);

/*
 * errno values from os/ (which returns them unformatted) become statuses in one place:
 * ENOENT -> TL_ERR_NOT_FOUND, ENOMEM -> TL_ERR_NOMEM, ENODATA (os/'s "the file ended before
 * the bytes asked for": it shrank since it was opened) -> TL_ERR_CHANGED, 0 -> TL_OK, anything
 * else -> TL_ERR_IO.
 */
tl_status tl__status_from_errno(int e);
/* strerror's text for e (thread-safe); ENODATA as "the file ends early (truncated or rewritten
 * since it was opened)". Valid until this thread's next call. */
const char *tl__errno_text(int e);
/* Record "<fmt>: <tl__errno_text(e)>" and return tl__status_from_errno(e). */
tl_status tl__err_errno(int e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
