/*
 * debug.h — the failure path of debug-only checks (TL_ASSERT in core/assert.h and the lock
 * ownership checks of os/thread.h): print "file:line: what" to stderr and abort.
 *
 * Declared only when TL_DEBUG_ASSERTS is defined (Debug builds: make asan, make tsan); release
 * builds contain no call to it, so the library never prints or aborts there.
 */
#ifndef TL_OS_DEBUG_H
#define TL_OS_DEBUG_H

#ifdef TL_DEBUG_ASSERTS
void tl__os_assert_fail(const char *file, int line, const char *what) __attribute__((noreturn));
#endif

#endif
