/*
 * warmpool.h — the warm host pool: large anonymous regions freed by load
 * results, kept faulted in (up to a bound the caller sets) for the next
 * load of the same process to draw its destinations from (see warmpool.c).
 */
#ifndef TL_IO_WARMPOOL_H
#define TL_IO_WARMPOOL_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Draw a region of at least size bytes from the pool, every page already
 * faulted in (its bytes are whatever the last owner left: not zeroed).
 * true with *addr (page aligned) and *len (to give back with tl__warm_give);
 * false when no region held is large enough (nothing changed).
 */
bool tl__warm_take(uint64_t size, void **addr, uint64_t *len);

/*
 * Give back a region from tl__os_anon_alloc or tl__warm_take: kept, faulted
 * in, when the bound allows, else unmapped. faulted: the caller knows every
 * page was written (a load that completed); otherwise the pool faults the
 * region in first (a page-table walk of it, ~60 ms per GiB of 4 KiB pages
 * here even where every page is there). NULL is fine.
 */
void tl__warm_give(void *addr, uint64_t len, bool faulted);

#endif
