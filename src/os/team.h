/*
 * team.h — helper threads that share the pieces of one job with the caller:
 * large copies and hashes on every core.
 *
 * tl__team_run(t, n, fn, arg) calls fn(arg, i) once for every i in [0, n),
 * on the calling thread and on the team's helpers, and returns when all n
 * calls have returned. Pieces are claimed in order one at a time, and the
 * caller claims them too: a helper that is slow to wake (a busy machine)
 * only leaves more pieces to the caller, which waits at most for the pieces
 * helpers are already running. Jobs of several callers take turns. The
 * helpers start with the first job, outside the fault injector (without
 * them the work is the same, only slower); a team that could start none runs
 * everything on the caller. A NULL team does too.
 */
#ifndef TL_OS_TEAM_H
#define TL_OS_TEAM_H

#include <stddef.h>

typedef struct tl__team tl__team;

/* A team of up to helpers threads (none started yet); NULL when out of memory. */
tl__team *tl__team_create(unsigned helpers);
/* Stop the helpers and free the team. NULL is fine. */
void tl__team_destroy(tl__team *t);
/* Helpers for a team on this machine: one fewer than the CPUs this process may use, at most 7. */
unsigned tl__team_default_helpers(void);
void tl__team_run(tl__team *t, size_t n, void (*fn)(void *arg, size_t i), void *arg);

#endif
