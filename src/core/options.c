/*
 * options.c — reading a caller's size-prefixed options struct (see options.h).
 */
#include "core/options.h"

#include "core/error.h"

#include <string.h>

tl_status tl__options_take(void *dst, size_t dst_size, const void *src, const char *type_name) {
    if (src) {
        uint32_t size;
        memcpy(&size, src, sizeof size);
        if (size < sizeof size)
            return tl__err(TL_ERR_INVALID_ARG,
                          "%s.size is %u: initialise the struct with %s_init (or set size to "
                          "sizeof(%s))",
                          type_name, (unsigned)size, type_name, type_name);
        memcpy(dst, src, size < dst_size ? size : dst_size);
    }
    uint32_t own = (uint32_t)dst_size;
    memcpy(dst, &own, sizeof own);
    return TL_OK;
}
