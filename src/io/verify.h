/*
 * verify.h — integrity check of a loaded tensor: xxHash64 of its bytes in
 * memory against xxHash64 of the same bytes read from the file (converted
 * the same way when the load converted it), through two staging buffers. A
 * strided checkpoint tensor's file bytes are gathered from the mapping.
 */
#ifndef TL_IO_VERIFY_H
#define TL_IO_VERIFY_H

#include "tierload.h"

/*
 * Compare tensor i of m (as described in the file) with its loaded copy lt.
 * a and b are staging buffers of staging bytes each. TL_ERR_INTEGRITY names
 * the tensor and both hashes on mismatch.
 */
tl_status tl_io_verify_tensor(const tl_model *m, size_t i, const char *path,
                              const tl_loaded_tensor *lt, unsigned char *a, unsigned char *b,
                              uint64_t staging);

#endif
