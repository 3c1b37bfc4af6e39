/*
 * options.h — reading a caller's size-prefixed options struct.
 *
 * Every options struct of the public API starts with `uint32_t size`, set by
 * the caller to sizeof the struct it was compiled with. The library starts
 * from its own defaults and takes only the caller's first `size` bytes, so a
 * program built against an older, shorter struct gets defaults for the fields
 * it does not know about.
 */
#ifndef TL_CORE_OPTIONS_H
#define TL_CORE_OPTIONS_H

#include "tierload.h"

/*
 * dst (dst_size bytes) holds the defaults; copy over it the first
 * min(src->size, dst_size) bytes of src and set dst's size to dst_size.
 * src NULL keeps the defaults. A size smaller than the size field itself is
 * TL_ERR_INVALID_ARG naming type_name (the struct was not initialised).
 */
tl_status tl__options_take(void *dst, size_t dst_size, const void *src, const char *type_name);

#endif
