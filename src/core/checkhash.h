/*
 * checkhash.h — the hash a run's check compares (residency/run.c): XXH3 (64
 * bits) of each TL__CHECK_LEAF bytes of a range (the last leaf shorter; an
 * empty range one empty leaf), then XXH3 of those leaves' hashes. Shared
 * with the sim device, which hashes whole leaves as their bytes land
 * (devices/sim.c). Including it also makes XXH3_64bits and its streaming
 * form the ones libxxhash dispatches at run time to the CPU's widest vectors
 * (3x its baseline build here).
 */
#ifndef TL_CORE_CHECKHASH_H
#define TL_CORE_CHECKHASH_H

#include <stddef.h>
#include <stdint.h>
#include <xxhash.h>
#if defined(__x86_64__) || defined(__i386__)
/* XXH3 with the widest vectors the CPU has (libxxhash's run-time dispatch): same values */
#include <xxh_x86dispatch.h>
#endif

#define TL__CHECK_LEAF (1ull << 20)

/* The range's hash from its leaves' hashes. */
static inline uint64_t tl__check_root(const uint64_t *leaves, size_t n) {
    return XXH3_64bits(leaves, n * sizeof *leaves);
}

#endif
