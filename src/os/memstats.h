/*
 * memstats.h — reading the process's and the machine's memory facts from
 * /proc and cgroup v2 (the public tl_memstats / tl_memwatch live in
 * memstats.c); the cheap status read is here for samplers.
 */
#ifndef TL_OS_MEMSTATS_H
#define TL_OS_MEMSTATS_H

#include "tierload.h"

/* VmRSS, RssAnon, RssFile, RssShmem, VmHWM from /proc/self/status (0 or errno). */
int tl_os_proc_status(tl_memstats *m);
/* USS (Private_Clean + Private_Dirty) from /proc/self/smaps_rollup. */
int tl_os_uss(uint64_t *uss);

#endif
