/*
 * memstats.c — the public memory accounting: tl_memstats_read (this process's RSS anon / file /
 * shmem, USS and peak from os/procmem; MemAvailable and the cgroup v2 memory.max /
 * memory.current from os/meminfo) and tl_memwatch, a sampler thread that records peaks over a
 * job. Every allocation, thread and lock goes through os/.
 */
#include "core/error.h"
#include "core/outsize.h"
#include "os/meminfo.h"
#include "os/os.h"
#include "os/procmem.h"
#include "os/thread.h"
#include "stats/memstats.h"
#include "tierload.h"

#include <stdlib.h>
#include <string.h>

/* The /proc/self/status part of a tl_memstats (what a sample needs). */
static int read_status(tl_memstats *m) {
    tl__os_procmem p;
    int e = tl__os_procmem_read(&p);
    if (e) return e;
    m->rss = p.rss;
    m->rss_anon = p.rss_anon;
    m->rss_file = p.rss_file;
    m->rss_shmem = p.rss_shmem;
    m->peak_rss = p.peak_rss;
    return 0;
}

/* Every fact, USS only when asked (smaps_rollup walks every page table: ~25 ms per GiB). */
static tl_status read_all(tl_memstats *out, bool uss) {
    memset(out, 0, sizeof *out);
    int e = read_status(out);
    if (e) return tl__err_errno(e, "/proc/self/status");
    if (uss) (void)tl__os_procmem_uss(&out->uss);
    out->cgroup_max = UINT64_MAX;
    tl__os_meminfo hm;
    if (tl__os_meminfo_read(&hm) == 0) {
        out->mem_total = hm.mem_total;
        out->mem_available = hm.mem_available;
        out->has_cgroup = hm.cg_limited;
        out->cgroup_max = hm.cg_max;
        out->cgroup_current = hm.cg_current;
    }
    return TL_OK;
}

tl_status tl_memstats_read(tl_memstats *out, size_t out_size) {
    if (!out || !out_size)
        return tl__err(TL_ERR_INVALID_ARG, "tl_memstats_read: out is NULL or of size 0");
    tl_memstats all;
    tl_status st = read_all(&all, true);
    if (st == TL_OK) tl__copy_out(out, out_size, &all, sizeof all);
    return st;
}

struct tl_memwatch {
    tl__os_mutex mu; /* guards stop and span */
    bool stop;
    double interval;
    tl__os_thread *thread;
    tl_memspan span;
};

static void watch_take(tl_memwatch *w) {
    tl_memstats s;
    memset(&s, 0, sizeof s);
    if (read_status(&s) != 0) return;
    tl__os_mutex_lock(&w->mu);
    if (s.rss_anon > w->span.rss_anon_peak) w->span.rss_anon_peak = s.rss_anon;
    if (s.rss_file > w->span.rss_file_peak) w->span.rss_file_peak = s.rss_file;
    if (s.rss > w->span.rss_peak) w->span.rss_peak = s.rss;
    w->span.samples++;
    tl__os_mutex_unlock(&w->mu);
}

static void *watch_main(void *arg) {
    tl_memwatch *w = arg;
    for (;;) {
        tl__os_mutex_lock(&w->mu);
        bool stop = w->stop;
        tl__os_mutex_unlock(&w->mu);
        if (stop) break;
        watch_take(w);
        tl__os_sleep(w->interval);
    }
    return NULL;
}

tl_status tl_memwatch_create(double interval_s, tl_memwatch **out) {
    return tl__memwatch_create(interval_s, true, out);
}

tl_status tl__memwatch_create(double interval_s, bool uss, tl_memwatch **out) {
    if (!out) return tl__err(TL_ERR_INVALID_ARG, "tl_memwatch_create: out is NULL");
    *out = NULL;
    tl_memwatch *w = tl__os_calloc(1, sizeof *w);
    if (!w) return tl__err(TL_ERR_NOMEM, "memory sampler: out of memory");
    int e = tl__os_mutex_init(&w->mu);
    if (e) {
        free(w);
        return tl__err_errno(e, "memory sampler: mutex");
    }
    w->interval = interval_s > 0 ? interval_s : 0.005;
    tl_status s = read_all(&w->span.start, uss);
    if (s != TL_OK) {
        tl__os_mutex_destroy(&w->mu);
        free(w);
        return s;
    }
    w->span.rss_anon_peak = w->span.start.rss_anon;
    w->span.rss_file_peak = w->span.start.rss_file;
    w->span.rss_peak = w->span.start.rss;
    w->span.samples = 1;
    e = tl__os_thread_start(&w->thread, watch_main, w);
    if (e) {
        tl__os_mutex_destroy(&w->mu);
        free(w);
        return tl__err(TL_ERR_NOMEM, "memory sampler: cannot start a thread: %s",
                       tl__errno_text(e));
    }
    *out = w;
    return TL_OK;
}

void tl_memwatch_sample(tl_memwatch *w) {
    if (w) watch_take(w);
}

void tl_memwatch_destroy(tl_memwatch *w, tl_memspan *out, size_t out_size) {
    if (!w) return;
    tl__os_mutex_lock(&w->mu);
    w->stop = true;
    tl__os_mutex_unlock(&w->mu);
    tl__os_thread_join(w->thread);
    watch_take(w);
    if (read_all(&w->span.end, false) == TL_OK) {
        if (w->span.end.rss_anon > w->span.rss_anon_peak)
            w->span.rss_anon_peak = w->span.end.rss_anon;
        if (w->span.end.rss_file > w->span.rss_file_peak)
            w->span.rss_file_peak = w->span.end.rss_file;
        if (w->span.end.rss > w->span.rss_peak) w->span.rss_peak = w->span.end.rss;
    }
    if (out) tl__copy_out(out, out_size, &w->span, sizeof w->span);
    tl__os_mutex_destroy(&w->mu);
    free(w);
}
