/*
 * dl.c — dlopen / dlsym wrappers (see dl.h).
 */
#include "os/dl.h"

#include <dlfcn.h>
#include <stdio.h>

void *tl__os_dlopen_first(const char *const *names, char *why, size_t why_len) {
    if (why && why_len) why[0] = 0;
    for (size_t i = 0; names[i]; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (h) return h;
        const char *e = dlerror();
        if (i == 0 && why && why_len) snprintf(why, why_len, "%s", e ? e : names[i]);
    }
    return NULL;
}

void *tl__os_dlsym(void *lib, const char *name) {
    return lib ? dlsym(lib, name) : NULL;
}

void tl__os_dlclose(void *lib) {
    if (lib) dlclose(lib);
}
