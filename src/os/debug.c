/*
 * debug.c — tl__os_assert_fail (debug builds only; see debug.h).
 */
#include "os/debug.h"

#ifdef TL_DEBUG_ASSERTS
#include <stdio.h>
#include <stdlib.h>

void tl__os_assert_fail(const char *file, int line, const char *what) {
    fprintf(stderr, "%s:%d: assertion failed: %s\n", file, line, what);
    fflush(stderr);
    abort();
}
#else
typedef int tl__os_debug_unused; /* an empty translation unit is not ISO C */
#endif
