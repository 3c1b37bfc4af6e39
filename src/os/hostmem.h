/*
 * hostmem.h — host memory that holds loaded weights and staging: anonymous
 * mappings (with the kernel's page size, 2 MiB aligned with MADV_HUGEPAGE,
 * or 4 KiB pages forced with MADV_NOHUGEPAGE), populating file mappings,
 * and dropping a mapping's pages.
 */
#ifndef TL_OS_HOSTMEM_H
#define TL_OS_HOSTMEM_H

#include <stdbool.h>
#include <stdint.h>

/* Page size of an anonymous mapping. */
typedef enum tl__os_pages {
    TL_OS_PAGES_KERNEL = 0, /* whatever the system's THP setting gives (no advice) */
    TL_OS_PAGES_HUGE = 1,   /* 2 MiB aligned start, MADV_HUGEPAGE */
    TL_OS_PAGES_SMALL = 2,  /* MADV_NOHUGEPAGE: 4 KiB pages even where THP is "always" */
} tl__os_pages;

/*
 * Map size bytes of anonymous memory (zero-filled, untouched) with the pages
 * asked for (advice only: failure to apply it costs speed, not
 * correctness). *len receives the mapped length to give to tl__os_anon_free.
 */
int tl__os_anon_alloc(uint64_t size, tl__os_pages pages, void **addr, uint64_t *len);
int tl__os_anon_free(void *addr, uint64_t len);
/* Fault in every page of a read-only mapping (MADV_POPULATE_READ, else touch). */
int tl__os_populate_read(const void *addr, uint64_t size);
/*
 * Fault in the pages of an anonymous range for writing without writing to
 * them (MADV_POPULATE_WRITE), so that a concurrent reader may already be
 * filling them. ENOTSUP where the kernel lacks it (nothing done).
 */
int tl__os_populate_write(void *addr, uint64_t size);
/*
 * From now on, fault [addr, addr+size) of an anonymous mapping in with 4 KiB
 * pages (MADV_NOHUGEPAGE; pages already there stay as they are). A hint.
 */
int tl__os_pages_small(void *addr, uint64_t size);
/*
 * From now on, fault [addr, addr+size) of an anonymous mapping in with huge
 * pages where whole 2 MiB pages fit (MADV_HUGEPAGE on that part). A hint.
 */
int tl__os_pages_huge(void *addr, uint64_t size);
/* madvise(MADV_DONTNEED) on a clean read-only file mapping: unmap its pages. */
int tl__os_drop_mapping_pages(const void *addr, uint64_t size);

#endif
