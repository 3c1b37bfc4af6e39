/*
 * version.c — tl_version(), spelled from the TL_VERSION_* numbers of the public header (the one
 * place the version is written; CMake's project() and the .pc file read it from there too).
 */
#include "tierload.h"

#define TL_STR_(x) #x
#define TL_STR(x) TL_STR_(x)

unsigned tl_abi_version(void) {
    return TL_ABI_VERSION;
}

const char *tl_version(void) {
    return TL_STR(TL_VERSION_MAJOR) "." TL_STR(TL_VERSION_MINOR) "." TL_STR(TL_VERSION_PATCH);
}
