/*
 * verify.h — integrity check of a loaded tensor: xxHash64 of its bytes in
 * memory against xxHash64 of its reference bytes — read from the file, or
 * taken from the mapping when the tensor is patched, or gathered from the
 * mapping for a strided checkpoint view — converted the same way when the
 * load converted it, through two staging buffers.
 */
#ifndef TL_IO_VERIFY_H
#define TL_IO_VERIFY_H

#include "tierload.h"

/*
 * Compare the tensor t (as described in the file) with its loaded copy lt.
 * patched: NULL to compare with the file (read through fd), else the
 * tensor's patched bytes in the mapping. A strided t (a checkpoint view) is
 * gathered through model m's tensor i (m is NULL only for tensors that are
 * byte ranges). a and b are staging buffers of staging bytes each.
 * TL_ERR_INTEGRITY names the tensor and both hashes on mismatch;
 * TL_ERR_CHANGED when a mapping lost its file under the read.
 */
tl_status tl__io_verify_tensor(const tl_model *m, size_t i, int fd, const void *patched,
                               const char *path, const tl_tensor_info *t,
                               const tl_loaded_tensor *lt, unsigned char *a, unsigned char *b,
                               uint64_t staging);

#endif
