/*
 * memstats.h — the memory sampler for the library's own jobs (see memstats.c).
 */
#ifndef TL_STATS_MEMSTATS_H
#define TL_STATS_MEMSTATS_H

#include "tierload.h"

/*
 * tl_memwatch_create, with the start sample's USS read only when uss is set:
 * smaps_rollup walks every page table of the process (~25 ms per GiB
 * resident), too dear at the start of a load in a process that holds
 * gigabytes already (other models, the warm pool). start.uss is 0 then.
 */
tl_status tl__memwatch_create(double interval_s, bool uss, tl_memwatch **out);

#endif
