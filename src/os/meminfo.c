/*
 * meminfo.c — /proc/meminfo, cgroup v2 memory limits and mlock (see meminfo.h), and the one
 * parser of "Key:   123 kB" lines that /proc/meminfo, /proc/self/status and smaps_rollup share.
 */
#include "os/meminfo.h"
#include "os/os.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

/* A small /proc or /sys file into buf; 0 or an errno (EFBIG when it does not fit). */
static int read_small(const char *path, char *buf, size_t n) {
    return tl__os_read_text(path, buf, n, NULL);
}

static int parse_u64(const char *s, uint64_t *v) {
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9') return EINVAL;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || end == s) return EINVAL;
    while (*end == ' ' || *end == '\n' || *end == '\t')
        end++;
    if (*end) return EINVAL;
    *v = x;
    return 0;
}

int tl__os_meminfo_field(const char *text, const char *key, uint64_t *bytes) {
    size_t kl = strlen(key);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, key, kl) != 0 || l[kl] != ':') continue;
        const char *p = l + kl + 1;
        while (*p == ' ' || *p == '\t')
            p++;
        char *end;
        errno = 0;
        if (*p < '0' || *p > '9') return EINVAL;
        unsigned long long v = strtoull(p, &end, 10);
        if (errno) return EINVAL;
        while (*end == ' ')
            end++;
        uint64_t mult = 1;
        if (strncmp(end, "kB", 2) == 0)
            mult = 1024;
        else if (*end != '\n' && *end != 0)
            return EINVAL;
        if (v > UINT64_MAX / mult) return EINVAL;
        *bytes = (uint64_t)v * mult;
        return 0;
    }
    return ENOENT;
}

/* memory.max and memory.current of one cgroup dir; ENOENT when it has none. */
static int cg_level(const char *dir, bool *limited, uint64_t *max, uint64_t *cur) {
    char path[4096 + 32], buf[64];
    snprintf(path, sizeof path, "%s/memory.max", dir);
    int e = read_small(path, buf, sizeof buf);
    if (e) return e;
    if (strncmp(buf, "max", 3) == 0) {
        *limited = false;
        return 0;
    }
    if ((e = parse_u64(buf, max))) return e;
    snprintf(path, sizeof path, "%s/memory.current", dir);
    if ((e = read_small(path, buf, sizeof buf))) return e;
    if ((e = parse_u64(buf, cur))) return e;
    *limited = true;
    return 0;
}

int tl__os_cgroup_limit(const char *root, const char *dir, bool *limited, uint64_t *max,
                       uint64_t *current) {
    char d[4096];
    size_t rl = strlen(root);
    if (strncmp(dir, root, rl) != 0 || strlen(dir) >= sizeof d) return EINVAL;
    snprintf(d, sizeof d, "%s", dir);
    *limited = false;
    *max = UINT64_MAX;
    *current = 0;
    uint64_t best = UINT64_MAX;
    for (;;) {
        bool lim = false;
        uint64_t m = 0, c = 0;
        if (cg_level(d, &lim, &m, &c) == 0 && lim) {
            uint64_t room = m > c ? m - c : 0;
            if (!*limited || room < best) {
                best = room;
                *limited = true;
                *max = m;
                *current = c;
            }
        }
        size_t n = strlen(d);
        if (n <= rl) break;
        char *slash = strrchr(d, '/');
        if (!slash || (size_t)(slash - d) < rl) break;
        *slash = 0;
        if (strlen(d) < rl) break;
    }
    return 0;
}

/* Mount point of the cgroup2 filesystem (from /proc/self/mountinfo). */
static int cgroup2_mount(char *out, size_t n) {
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f) return errno;
    char line[4096];
    int e = ENOENT;
    while (fgets(line, sizeof line, f)) {
        char *sep = strstr(line, " - ");
        if (!sep || strncmp(sep + 3, "cgroup2 ", 8) != 0) continue;
        /* fields: id parent major:minor root mountpoint ... */
        char *p = line;
        for (int i = 0; i < 4 && p; i++)
            p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL;
        if (!p) continue;
        char *end = strchr(p, ' ');
        if (!end || (size_t)(end - p) >= n) continue;
        memcpy(out, p, (size_t)(end - p));
        out[end - p] = 0;
        e = 0;
        break;
    }
    fclose(f);
    return e;
}

/* This process's cgroup v2 path ("0::/path" line of /proc/self/cgroup). */
static int cgroup2_self(char *out, size_t n) {
    char buf[8192];
    int e = read_small("/proc/self/cgroup", buf, sizeof buf);
    if (e) return e;
    for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, "0::", 3) != 0) continue;
        char *end = strchr(l, '\n');
        size_t len = end ? (size_t)(end - l - 3) : strlen(l + 3);
        if (len >= n) return ENAMETOOLONG;
        memcpy(out, l + 3, len);
        out[len] = 0;
        return 0;
    }
    return ENOENT;
}

int tl__os_cgroup_self(char *root, size_t root_len, char *dir, size_t dir_len) {
    char rel[2048];
    int e = cgroup2_mount(root, root_len);
    if (!e) e = cgroup2_self(rel, sizeof rel);
    if (e) return e;
    size_t rl = strlen(rel);
    while (rl > 0 && rel[rl - 1] == '/')
        rel[--rl] = 0; /* "/" -> "" */
    if ((size_t)snprintf(dir, dir_len, "%s%s", root, rel) >= dir_len) return ENAMETOOLONG;
    return 0;
}

int tl__os_meminfo_read(tl__os_meminfo *out) {
    char root[1024], dir[4096];
    bool cg = tl__os_cgroup_self(root, sizeof root, dir, sizeof dir) == 0;
    return tl__os_meminfo_read_at(cg ? root : NULL, cg ? dir : NULL, out);
}

int tl__os_meminfo_read_at(const char *cg_root, const char *cg_dir, tl__os_meminfo *out) {
    char buf[16384];
    memset(out, 0, sizeof *out);
    int e = read_small("/proc/meminfo", buf, sizeof buf);
    if (e) return e;
    if ((e = tl__os_meminfo_field(buf, "MemTotal", &out->mem_total))) return e;
    if (tl__os_meminfo_field(buf, "MemAvailable", &out->mem_available) != 0) {
        /* very old kernels: MemFree is the best lower bound */
        if ((e = tl__os_meminfo_field(buf, "MemFree", &out->mem_available))) return e;
    }
    out->cg_max = UINT64_MAX;
    if (cg_root && cg_dir)
        tl__os_cgroup_limit(cg_root, cg_dir, &out->cg_limited, &out->cg_max, &out->cg_current);
    out->total = out->mem_total < out->cg_max ? out->mem_total : out->cg_max;
    out->free = out->mem_available;
    if (out->cg_limited) {
        uint64_t room = out->cg_max > out->cg_current ? out->cg_max - out->cg_current : 0;
        if (room < out->free) out->free = room;
    }
    if (out->free > out->total) out->free = out->total;
    return 0;
}

int tl__os_mlock(const void *addr, uint64_t n) {
    return mlock(addr, (size_t)n) == 0 ? 0 : errno;
}

int tl__os_munlock(const void *addr, uint64_t n) {
    return munlock(addr, (size_t)n) == 0 ? 0 : errno;
}

int tl__os_memlock_limit(uint64_t *bytes) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0) return errno;
    *bytes = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    return 0;
}
