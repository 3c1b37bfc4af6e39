/*
 * procmem.h — this process's memory from /proc: resident set (anon, file, shmem), its peak,
 * and the unique set size. The public accounting (tl_memstats, tl_memwatch in stats/) is built
 * on it. Functions return 0 or a positive errno, like os.h; they allocate nothing, so a
 * sampler thread may call them.
 */
#ifndef TL_OS_PROCMEM_H
#define TL_OS_PROCMEM_H

#include <stdint.h>

typedef struct tl__os_procmem {
    uint64_t rss;       /* VmRSS */
    uint64_t rss_anon;  /* RssAnon */
    uint64_t rss_file;  /* RssFile */
    uint64_t rss_shmem; /* RssShmem */
    uint64_t peak_rss;  /* VmHWM */
} tl__os_procmem;

/* The fields above from /proc/self/status (a field the kernel does not report is 0). */
int tl__os_procmem_read(tl__os_procmem *out);
/* USS (Private_Clean + Private_Dirty) from /proc/self/smaps_rollup. */
int tl__os_procmem_uss(uint64_t *uss);

#endif
