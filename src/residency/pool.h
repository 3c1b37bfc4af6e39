/*
 * pool.h — the memory manager one device shares among every session of the
 * process that places weights on it (pool.c). Sessions draw their device
 * bytes from it; it holds the device's total budget for all of them, the
 * engine's reclaim callback, and chooses across sessions what to evict when
 * one of them needs room (session.c answers for its own units).
 *
 * Lock order (one, everywhere):
 *     pool registry lock  →  a pool's eviction lock  →  one session's mu
 *                         →  a pool's state lock (a leaf)
 * A thread holds at most one session's mu at a time while it evicts for a
 * pool (it takes each session's lock in turn, never two), and never takes a
 * pool's eviction lock while it holds a session's mu: a session that finds
 * the pool short returns its reservations, drops its own lock and then asks
 * the pool. The state lock is taken last and held briefly (membership,
 * settings, waking waiters); bytes used are an atomic counter.
 */
#ifndef TL_RESIDENCY_POOL_H
#define TL_RESIDENCY_POOL_H

#include "tierload.h"

#include "os/thread.h"

typedef struct tlr_pool tlr_pool;

/*
 * The next unit a session would give up on a device, as the pool compares
 * them across sessions: the lower priority first; then, where both sessions
 * know their schedules, the unit used furthest ahead (steps from each
 * session's position; never again counts as furthest); else the least
 * recently used (one process-wide clock).
 */
typedef struct tlr_victim {
    int priority;
    bool scheduled; /* the session has a schedule: dist is meaningful */
    uint64_t dist;  /* steps until its next use (UINT64_MAX: none) */
    uint64_t last_use;
    uint64_t bytes;
} tlr_victim;

/* Does a leave before b? */
bool tlr_victim_before(const tlr_victim *a, const tlr_victim *b);

/*
 * The pool of device d (made on first use; it retains d), with session s as
 * a member: wake is broadcast whenever device bytes of any member come free.
 */
tl_status tlr_pool_join(tl_device *d, tl_session *s, tl__os_cond *wake, tlr_pool **out);
/*
 * s leaves: no eviction for the pool runs on it once this returns, and none
 * chooses it again. Its reference stays: give back what it used
 * (tlr_pool_give), then tlr_pool_put.
 */
void tlr_pool_leave(tlr_pool *p, tl_session *s);
void tlr_pool_put(tlr_pool *p);

/*
 * Count n more bytes used on the device, unless that would pass the pool's
 * total budget (false: nothing counted). tlr_pool_give gives them back and
 * wakes the members' waiters.
 */
bool tlr_pool_take(tlr_pool *p, uint64_t n);
void tlr_pool_give(tlr_pool *p, uint64_t n);
/*
 * Wake every member's waiters (device bytes of some member became
 * evictable): nothing to do unless an acquire waits for room on the device,
 * as it says with tlr_pool_waiting (true before it waits, false after). A
 * wake-up that races with its start is not lost for long: waiters look again
 * at least every 50 ms.
 */
void tlr_pool_notify(tlr_pool *p);
void tlr_pool_waiting(tlr_pool *p, bool on);
/* Room on the device now: what it reports free, within what the pool's total leaves. */
uint64_t tlr_pool_room(tlr_pool *p);
/* Has the device a reclaim callback (tl_device_set_reclaim_callback)? */
bool tlr_pool_has_reclaim(tlr_pool *p);
/* How many sessions draw from the pool. */
size_t tlr_pool_members(tlr_pool *p);
/* Bytes the pool counts as used, and its total (0: none). */
uint64_t tlr_pool_used(tlr_pool *p);
uint64_t tlr_pool_total(tlr_pool *p);

/*
 * Evict unreferenced units of the pool's members, in the order above, until
 * `bytes` have come free or none is left; *freed says how many did. Call it
 * holding no session lock. When that is not enough and ask_engine, the
 * reclaim callback is asked for the rest (its answer counts in *reclaimed).
 */
void tlr_pool_evict(tlr_pool *p, uint64_t bytes, bool ask_engine, uint64_t *freed,
                    uint64_t *reclaimed);

/* What session.c answers the pool (each takes s's mu itself). */
bool tlr_session_victim(tl_session *s, tl_device *d, tlr_victim *out);
uint64_t tlr_session_evict_one(tl_session *s, tl_device *d);

#endif
