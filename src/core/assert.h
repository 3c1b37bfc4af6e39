/*
 * assert.h — TL_ASSERT(cond): invariants checked in debug builds.
 *
 * Compiled in when TL_DEBUG_ASSERTS is defined (CMake's TL_DEBUG_ASSERTS option, on for Debug
 * builds, hence for `make asan` and `make tsan`); otherwise it expands to nothing and cond is not
 * evaluated, so cond must have no side effects. A failed assertion prints
 * "file:line: assertion failed: cond" to stderr and aborts (os/debug.c). This is the one
 * exception to "the library never prints and never aborts": it exists only in debug builds and
 * only for states the code promises cannot happen (a broken invariant is a bug, not an error to
 * report). Errors that input or the system can cause are tl_status values, never assertions.
 *
 * Lock ownership has its own check, tl__os_mutex_assert_held (os/thread.h), which fails the
 * same way.
 */
#ifndef TL_CORE_ASSERT_H
#define TL_CORE_ASSERT_H

#include "os/debug.h"

#ifdef TL_DEBUG_ASSERTS
#define TL_ASSERT(cond) ((cond) ? (void)0 : tl__os_assert_fail(__FILE__, __LINE__, #cond))
#else
#define TL_ASSERT(cond) ((void)0)
#endif

#endif
