/*
 * dl.h — loading shared libraries at run time (dlopen / dlsym), used for
 * optional accelerators (libcudart, libcufile) so that nothing of theirs is
 * needed to build or to run without them.
 */
#ifndef TL_OS_DL_H
#define TL_OS_DL_H

#include <stddef.h>

/*
 * Open the first library of names (NULL-terminated) that loads (RTLD_NOW |
 * RTLD_LOCAL). On failure returns NULL and writes into why the dlerror() of
 * the first name (the one users recognise), e.g. "libcudart.so: cannot open
 * shared object file: No such file or directory".
 */
void *tl__os_dlopen_first(const char *const *names, char *why, size_t why_len);
/* Address of a symbol, NULL when absent. */
void *tl__os_dlsym(void *lib, const char *name);
void tl__os_dlclose(void *lib);

#endif
