/*
 * meminfo.h — host memory facts: MemTotal / MemAvailable from /proc/meminfo,
 * the cgroup v2 memory limit (memory.max, memory.current) of this process, and
 * the tighter of the two; plus locking host ranges in RAM (mlock) with the
 * RLIMIT_MEMLOCK limit, so that a failure can say why.
 *
 * Small on purpose: process accounting (RSS, ...) lives elsewhere
 * (os/procmem). Functions return 0 or a positive errno, like os.h.
 */
#ifndef TL_OS_MEMINFO_H
#define TL_OS_MEMINFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tl__os_meminfo {
    uint64_t mem_total;     /* MemTotal */
    uint64_t mem_available; /* MemAvailable */
    bool cg_limited;        /* some cgroup v2 level of this process has memory.max != "max" */
    uint64_t cg_max;        /* memory.max of the tightest level (UINT64_MAX when none) */
    uint64_t cg_current;    /* memory.current of that level (0 when none) */
    uint64_t total;         /* min(mem_total, cg_max) */
    uint64_t free;          /* min(mem_available, cg_max - cg_current), never negative */
} tl__os_meminfo;

/*
 * Value of one "Key:   123 kB" line (a number with an optional kB unit) of /proc text, in
 * bytes: the one parser for /proc/meminfo, /proc/self/status and /proc/self/smaps_rollup.
 * ENOENT when the key is absent, EINVAL when the line is malformed.
 */
int tl__os_meminfo_field(const char *text, const char *key, uint64_t *bytes);

/*
 * The tightest cgroup v2 memory limit along dir and its ancestors up to (and
 * including) root: the level whose memory.max - memory.current is smallest.
 * *limited is false (and *max UINT64_MAX, *current 0) when no level has a limit.
 * dir must start with root. Exposed with explicit paths so tests can use a
 * fake tree.
 */
int tl__os_cgroup_limit(const char *root, const char *dir, bool *limited, uint64_t *max,
                       uint64_t *current);

/*
 * This process's cgroup v2 folder: *root the cgroup2 mount (from
 * /proc/self/mountinfo), *dir root + the "0::" path of /proc/self/cgroup.
 * ENOENT when there is no cgroup v2.
 */
int tl__os_cgroup_self(char *root, size_t root_len, char *dir, size_t dir_len);
/* Read everything above for this process (cgroup found each call). */
int tl__os_meminfo_read(tl__os_meminfo *out);
/* The same with the cgroup folder already found (cg_root NULL: no cgroup); cheaper. */
int tl__os_meminfo_read_at(const char *cg_root, const char *cg_dir, tl__os_meminfo *out);

/* mlock / munlock a host range (page-rounded by the kernel). */
int tl__os_mlock(const void *addr, uint64_t n);
int tl__os_munlock(const void *addr, uint64_t n);
/* Soft RLIMIT_MEMLOCK in bytes (UINT64_MAX when unlimited). */
int tl__os_memlock_limit(uint64_t *bytes);

#endif
