/*
 * hostmem.h — host memory that holds loaded weights and staging: anonymous
 * mappings (optionally 2 MiB aligned with MADV_HUGEPAGE, because first touch
 * of fresh 4 KiB pages runs at ~1.5 GB/s while huge pages fault at memcpy
 * speed), populating file mappings, and dropping a mapping's pages.
 */
#ifndef TL_OS_HOSTMEM_H
#define TL_OS_HOSTMEM_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Map size bytes of anonymous memory (zero-filled, untouched). With
 * hugepages the start is 2 MiB aligned and MADV_HUGEPAGE is applied. *len
 * receives the mapped length to give to tl__os_anon_free.
 */
int tl__os_anon_alloc(uint64_t size, bool hugepages, void **addr, uint64_t *len);
int tl__os_anon_free(void *addr, uint64_t len);
/* Fault in every page of a read-only mapping (MADV_POPULATE_READ, else touch). */
int tl__os_populate_read(const void *addr, uint64_t size);
/*
 * Fault in the pages of an anonymous range for writing without writing to
 * them (MADV_POPULATE_WRITE), so that a concurrent reader may already be
 * filling them. ENOTSUP where the kernel lacks it (nothing done).
 */
int tl__os_populate_write(void *addr, uint64_t size);
/* madvise(MADV_DONTNEED) on a clean read-only file mapping: unmap its pages. */
int tl__os_drop_mapping_pages(const void *addr, uint64_t size);

#endif
