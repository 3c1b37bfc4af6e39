/*
 * outsize.h — filling a caller's struct up to the size it declares.
 *
 * Functions that fill a struct in the caller's memory take the caller's
 * sizeof of it. They build the whole struct in a local and copy out the first
 * min(caller's size, library's size) bytes, so a program built against an
 * older, shorter struct is never written past its end.
 */
#ifndef TL_CORE_OUTSIZE_H
#define TL_CORE_OUTSIZE_H

#include <stddef.h>
#include <string.h>

/* Copy the first min(dst_size, src_size) bytes of src to dst. */
static inline void tl__copy_out(void *dst, size_t dst_size, const void *src, size_t src_size) {
    memcpy(dst, src, dst_size < src_size ? dst_size : src_size);
}

#endif
