/*
 * memstats.c — process and machine memory facts (RSS anon / file, USS, peak,
 * and, through os/meminfo, MemAvailable and cgroup v2 memory.max /
 * memory.current) and a sampler thread that records peaks over a job.
 */
#include "os/memstats.h"
#include "core/error.h"
#include "os/meminfo.h"
#include "os/thread.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Read a small /proc or /sys file into buf (NUL-terminated); 0 or errno. */
static int read_small(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            return e;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    buf[n] = 0;
    close(fd);
    return 0;
}

/* Value in bytes of "Key:   123 kB" in text; 0 when absent. */
static uint64_t kb_field(const char *text, const char *key) {
    size_t kl = strlen(key);
    for (const char *p = text; (p = strstr(p, key)) != NULL; p += kl) {
        if ((p == text || p[-1] == '\n') && p[kl] == ':') {
            return strtoull(p + kl + 1, NULL, 10) * 1024ull;
        }
    }
    return 0;
}

int tl_os_proc_status(tl_memstats *m) {
    char buf[8192];
    int e = read_small("/proc/self/status", buf, sizeof buf);
    if (e) return e;
    m->rss = kb_field(buf, "VmRSS");
    m->rss_anon = kb_field(buf, "RssAnon");
    m->rss_file = kb_field(buf, "RssFile");
    m->rss_shmem = kb_field(buf, "RssShmem");
    m->peak_rss = kb_field(buf, "VmHWM");
    return 0;
}

int tl_os_uss(uint64_t *uss) {
    char buf[4096];
    int e = read_small("/proc/self/smaps_rollup", buf, sizeof buf);
    if (e) return e;
    *uss = kb_field(buf, "Private_Clean") + kb_field(buf, "Private_Dirty");
    return 0;
}

tl_status tl_memstats_read(tl_memstats *out) {
    if (!out) return tl_err(TL_ERR_INVALID_ARG, "tl_memstats_read: out is NULL");
    memset(out, 0, sizeof *out);
    int e = tl_os_proc_status(out);
    if (e) return tl_err(TL_ERR_IO, "/proc/self/status: %s", strerror(e));
    (void)tl_os_uss(&out->uss);
    out->cgroup_max = UINT64_MAX;
    tl_os_meminfo hm;
    if (tl_os_meminfo_read(&hm) == 0) {
        out->mem_total = hm.mem_total;
        out->mem_available = hm.mem_available;
        out->has_cgroup = hm.cg_limited;
        out->cgroup_max = hm.cg_max;
        out->cgroup_current = hm.cg_current;
    }
    return TL_OK;
}

struct tl_memwatch {
    pthread_mutex_t mu;
    bool stop;
    double interval;
    tl_os_thread *thread;
    tl_memspan span;
};

static void watch_take(tl_memwatch *w) {
    tl_memstats s;
    memset(&s, 0, sizeof s);
    if (tl_os_proc_status(&s) != 0) return;
    pthread_mutex_lock(&w->mu);
    if (s.rss_anon > w->span.rss_anon_peak) w->span.rss_anon_peak = s.rss_anon;
    if (s.rss_file > w->span.rss_file_peak) w->span.rss_file_peak = s.rss_file;
    if (s.rss > w->span.rss_peak) w->span.rss_peak = s.rss;
    w->span.samples++;
    pthread_mutex_unlock(&w->mu);
}

static void *watch_main(void *arg) {
    tl_memwatch *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        bool stop = w->stop;
        pthread_mutex_unlock(&w->mu);
        if (stop) break;
        watch_take(w);
        tl_os_sleep(w->interval);
    }
    return NULL;
}

tl_status tl_memwatch_start(double interval_s, tl_memwatch **out) {
    if (!out) return tl_err(TL_ERR_INVALID_ARG, "tl_memwatch_start: out is NULL");
    *out = NULL;
    tl_memwatch *w = calloc(1, sizeof *w);
    if (!w) return tl_err(TL_ERR_NOMEM, "memory sampler: out of memory");
    pthread_mutex_init(&w->mu, NULL);
    w->interval = interval_s > 0 ? interval_s : 0.005;
    tl_status s = tl_memstats_read(&w->span.start);
    if (s != TL_OK) {
        free(w);
        return s;
    }
    w->span.rss_anon_peak = w->span.start.rss_anon;
    w->span.rss_file_peak = w->span.start.rss_file;
    w->span.rss_peak = w->span.start.rss;
    w->span.samples = 1;
    int e = tl_os_thread_start(&w->thread, watch_main, w);
    if (e) {
        free(w);
        return tl_err(TL_ERR_NOMEM, "memory sampler: cannot start a thread: %s", strerror(e));
    }
    *out = w;
    return TL_OK;
}

void tl_memwatch_sample(tl_memwatch *w) {
    if (w) watch_take(w);
}

void tl_memwatch_stop(tl_memwatch *w, tl_memspan *out) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_mutex_unlock(&w->mu);
    tl_os_thread_join(w->thread);
    watch_take(w);
    if (tl_memstats_read(&w->span.end) == TL_OK) {
        if (w->span.end.rss_anon > w->span.rss_anon_peak)
            w->span.rss_anon_peak = w->span.end.rss_anon;
        if (w->span.end.rss_file > w->span.rss_file_peak)
            w->span.rss_file_peak = w->span.end.rss_file;
        if (w->span.end.rss > w->span.rss_peak) w->span.rss_peak = w->span.end.rss;
    }
    if (out) *out = w->span;
    pthread_mutex_destroy(&w->mu);
    free(w);
}
