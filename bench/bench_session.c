/*
 * bench_session.c — the residency manager's figures, each beside a limit
 * measured in the same run:
 *
 *   1. spill of a 1 GiB dirty tensor from a sim GPU to the spill file: peak
 *      extra anonymous memory (limit: the staging bound + 16 MiB) and write
 *      speed against `dd oflag=direct` writing the same bytes (limit >= 0.8);
 *   2. a ~1 GiB SD-like model whose diffusion part streams through a 256 MiB
 *      sim GPU for 5 passes: bytes moved against the offline optimum (limit
 *      <= 1.05) and wall time (every byte hashed) against a 2-thread memcpy of
 *      the same bytes from the file's mapping (populated first) into a 256 MiB
 *      buffer, timed in the same run (limit <= 1.5), and against `cat`
 *      reading them from the page cache (printed);
 *   3. bookkeeping at scale: a 20,000-tensor GGUF (3,334 layers of 6 small
 *      tensors) on a sim GPU, one layer acquired and released at a time:
 *      CPU time per tensor all resident (limit <= 5 us) and with a budget that
 *      makes every acquire evict, without a schedule and with the sweeps as
 *      the schedule (printed), and the share of that CPU time
 *      spent on the eviction order (victim choices and keeping the per-device
 *      lists or heaps; limit <= 10%), timed inside in a second pass (the monotonic
 *      clock around each piece, its least cost taken out, pieces preempted
 *      dropped: see tl__session_victim_timing).
 *   4. two models sharing one sim GPU through its memory manager: two 256 MiB
 *      SD-like models whose diffusion parts fit the device one at a time (its
 *      budget for all sessions 1.25 x one of them), 6 alternating prompts of 4
 *      passes each, the engine marking the model in use: bytes moved against
 *      the offline optimum of the combined schedule, computed here (furthest
 *      next use over both models' tensors; limit <= 1.05), and CPU time per
 *      acquired tensor, copies included (printed).
 *
 * usage: bench_session [DIR] (default $TMPDIR or /tmp); exits 1 when a limit
 * is missed. TL_BENCH_ONLY=spill|stream|many|two runs that part alone. Needs the tierload CLI beside it
 * (for mkmodel).
 */
#include "tierload.h"

#include "residency/residency.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static char cli[2048];

static double timed(const char *cmd) {
    double t0 = now();
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_session: '%s' failed\n", cmd);
        exit(2);
    }
    return now() - t0;
}

/* A safetensors file of one F16 tensor of n bytes (a pattern, fsync'ed). */
static int write_one_tensor(const char *path, uint64_t n) {
    char hdr[256];
    int h = snprintf(hdr, sizeof hdr,
                     "{\"model.diffusion_model.out.0.weight\":{\"dtype\":\"F16\",\"shape\":[%llu],"
                     "\"data_offsets\":[0,%llu]}}",
                     (unsigned long long)(n / 2), (unsigned long long)n);
    while (h % 8)
        hdr[h++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)((uint64_t)h >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(hdr, 1, (size_t)h, f);
    enum { CH = 16 << 20 };
    unsigned char *buf = malloc(CH);
    for (size_t i = 0; i < CH; i++)
        buf[i] = (unsigned char)(i * 31 + 7);
    for (uint64_t o = 0; o < n; o += CH)
        fwrite(buf, 1, n - o < CH ? (size_t)(n - o) : CH, f);
    free(buf);
    fflush(f);
    fsync(fileno(f));
    return fclose(f) != 0;
}

static tl_plan *plan_on(tl_model *m, const char *sim, uint64_t cap, const char *backend,
                        bool offload) {
    tl_plan_summary sum;
    if (tl_plan_summary_from_model(m, TL_DTYPE_INVALID, &sum)) return NULL;
    tl_plan_device d[2];
    memset(d, 0, sizeof d);
    snprintf(d[0].name, sizeof d[0].name, "%s", sim);
    d[0].is_gpu = true;
    d[0].total = d[0].free = cap;
    snprintf(d[1].name, sizeof d[1].name, "cpu");
    tl_plan_options o;
    tl_plan_options_init(&o);
    o.backend = backend;
    o.offload_to_cpu = offload;
    o.reserve = "diffusion=0,cond=0,vae=0,controlnet=0";
    tl_plan *p = NULL;
    tl_status s = tl_plan_create(&sum, d, 2, &o, &p);
    tl_plan_summary_clear(&sum);
    if (s || !tl_plan_feasible(p)) {
        fprintf(stderr, "bench_session: plan: %s\n", s ? tl_last_error() : tl_plan_error(p));
        exit(2);
    }
    return p;
}

static int spill_bench(const char *dir) {
    char path[2048], cmd[8192];
    snprintf(path, sizeof path, "%.1900s/bench_spill.safetensors", dir);
    if (write_one_tensor(path, 1ull << 30)) return 2;
    const char *paths[] = {path};
    tl_model *m;
    if (tl_model_open(paths, 1, NULL, &m)) {
        fprintf(stderr, "bench_session: %s\n", tl_last_error());
        return 2;
    }
    uint64_t bytes = tl_model_tensor(m, 0)->nbytes;
    if (tl_device_sim_add("bspill=2G")) return 2;
    tl_plan *p = plan_on(m, "bspill", 2ull << 30, "*=bspill", false);
    tl_session_options o;
    tl_session_options_init(&o);
    o.host_budget = 1; /* the dirty tensor goes to the spill file */
    o.spill_dir = dir;
    tl_session *s;
    if (tl_session_create(m, p, &o, &s)) {
        fprintf(stderr, "bench_session: %s\n", tl_last_error());
        return 2;
    }
    tl_acquired *a;
    tl_component c = tl_model_tensor(m, 0)->component;
    if (tl_session_acquire(s, c, 0, TL_ALL_LAYERS, true, &a) || tl_session_mark_dirty(s, 0)) {
        fprintf(stderr, "bench_session: %s\n", tl_last_error());
        return 2;
    }
    tl_session_release(s, a);
    tl_memwatch *w;
    tl_memspan span;
    tl_memwatch_create(0.002, &w);
    double t0 = now();
    uint64_t freed;
    tl_status st = tl_session_evict_all(s, "bspill", &freed);
    double t = now() - t0;
    tl_memwatch_destroy(w, &span, sizeof span);
    if (st) {
        fprintf(stderr, "bench_session: spill: %s\n", tl_last_error());
        return 2;
    }
    tl_session_stats ss;
    tl_session_stats_get(s, &ss, sizeof ss);
    tl_session_destroy(s);
    tl_plan_destroy(p);
    tl_model_close(m);
    unlink(path);
    char ddf[2048];
    snprintf(ddf, sizeof ddf, "%.1900s/bench_dd.bin", dir);
    snprintf(cmd, sizeof cmd,
             "dd if=/dev/zero of=%s bs=16M count=%llu oflag=direct status=none && rm -f %s", ddf,
             (unsigned long long)(bytes >> 24), ddf);
    double tdd = timed(cmd);
    double gbs = (double)bytes / t / 1e9, dd = (double)bytes / tdd / 1e9;
    uint64_t extra =
        span.rss_anon_peak > span.start.rss_anon ? span.rss_anon_peak - span.start.rss_anon : 0;
    uint64_t bound = ss.staging_bound + (16ull << 20);
    printf("spill of %.2f GiB dirty tensor: %.2f GB/s; dd oflag=direct %.2f GB/s; ratio %.2f "
           "(limit >= 0.80)\n",
           (double)bytes / (1ull << 30), gbs, dd, gbs / dd);
    printf("  peak extra anon RSS %.1f MiB (limit %.1f MiB: staging %.0f MiB + 16 MiB)\n",
           (double)extra / (1 << 20), (double)bound / (1 << 20),
           (double)ss.staging_bound / (1 << 20));
    int fails = 0;
    if (gbs / dd < 0.8) {
        printf("  FAIL: spill write speed\n");
        fails++;
    }
    if (extra > bound) {
        printf("  FAIL: spill memory\n");
        fails++;
    }
    return fails;
}

/* One thread's share of the memcpy reference: total bytes from src (wrapping) into dst. */
typedef struct copy_share {
    const unsigned char *src;
    uint64_t src_len;
    unsigned char *dst;
    uint64_t dst_len, from, total;
} copy_share;

static void *copy_run(void *arg) {
    const copy_share *c = arg;
    enum { PIECE = 4 << 20 };
    for (uint64_t done = 0; done < c->total;) {
        uint64_t at = (c->from + done) % c->src_len, n = c->total - done;
        if (n > PIECE) n = PIECE;
        if (n > c->src_len - at) n = c->src_len - at;
        uint64_t d = (c->from + done) % (c->dst_len - PIECE);
        memcpy(c->dst + d, c->src + at, (size_t)n);
        done += n;
    }
    return NULL;
}

/*
 * Seconds 2 threads take to memcpy bytes from the file's mapping (populated first, as a session's
 * mapping is after the first pass) into a 256 MiB buffer (faulted in first), each a half; the
 * median of 3 tries. < 0 when it cannot be measured.
 */
static double memcpy_2t(const char *path, uint64_t bytes) {
    int fd = open(path, O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) return -1;
    uint64_t len = (uint64_t)sb.st_size, dlen = 256ull << 20;
    void *src = mmap(NULL, len, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    close(fd);
    unsigned char *dst = mmap(NULL, dlen, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (src == MAP_FAILED || dst == MAP_FAILED) return -1;
    double tries[3];
    for (int r = 0; r < 3; r++) {
        copy_share c[2] = {{src, len, dst, dlen, 0, bytes / 2},
                           {src, len, dst, dlen, bytes / 2, bytes - bytes / 2}};
        pthread_t t;
        double t0 = now();
        if (pthread_create(&t, NULL, copy_run, &c[1]) != 0) return -1;
        copy_run(&c[0]);
        pthread_join(t, NULL);
        tries[r] = now() - t0;
    }
    munmap(src, len);
    munmap(dst, dlen);
    double lo = tries[0] < tries[1] ? tries[0] : tries[1], hi = tries[0] + tries[1] - lo;
    return tries[2] < lo ? lo : tries[2] > hi ? hi : tries[2];
}

static double cpu_now(void);

static int stream_bench(const char *dir) {
    char path[2048], cmd[8192];
    snprintf(path, sizeof path, "%.1900s/bench_stream.safetensors", dir);
    snprintf(cmd, sizeof cmd,
             "%s mkmodel %s --size 1G --tensors 600 --profile sdxl --dtype F16 >/dev/null", cli,
             path);
    timed(cmd);
    const char *paths[] = {path};
    tl_model *m;
    if (tl_model_open(paths, 1, NULL, &m)) return 2;
    if (tl_device_sim_add("bstream=256M")) return 2;
    tl_plan *p = plan_on(m, "bstream", 256ull << 20, NULL, false);
    tl_session *s;
    if (tl_session_create(m, p, NULL, &s)) {
        fprintf(stderr, "bench_session: %s\n", tl_last_error());
        return 2;
    }
    snprintf(cmd, sizeof cmd, "cat %s > /dev/null", path);
    timed(cmd); /* warm */
    tl_run_options ro;
    tl_run_options_init(&ro);
    ro.pipeline = "cond,diffusion*5,vae";
    tl_run_report *r;
    double t0 = now(), c0 = cpu_now();
    tl_status st = tl_run_pipeline(s, &ro, &r);
    double t = now() - t0, cpu = cpu_now() - c0;
    if (st) {
        fprintf(stderr, "bench_session: run: %s\n", tl_last_error());
        return 2;
    }
    const tl_run_phase *tot = tl_run_report_total(r);
    uint64_t opt = tl_run_report_optimal_bytes(r);
    struct stat sb;
    stat(path, &sb);
    double reads = (double)tot->bytes_to_devices / (double)sb.st_size;
    double tcat = 0;
    int n = (int)(reads + 0.999);
    for (int i = 0; i < n; i++)
        tcat += timed(cmd);
    tcat *= reads / (n ? n : 1);
    double tmem = memcpy_2t(path, tot->bytes_to_devices);
    printf("stream 1 GiB through a 256 MiB sim GPU, 5 diffusion passes: moved %.2f GiB, optimum "
           "%.2f GiB, ratio %.3f (limit <= 1.05); %llu hash mismatches\n",
           (double)tot->bytes_to_devices / (1 << 30), (double)opt / (1 << 30),
           opt ? (double)tot->bytes_to_devices / (double)opt : 0,
           (unsigned long long)tot->hash_mismatches);
    printf("  wall %.3f s (every byte hashed; CPU %.3f s); 2-thread memcpy of the same bytes from the mapping "
           "%.3f s, ratio %.2f (limit <= 1.50); cat of them from the page cache %.2f s, ratio %.2f\n",
           t, cpu, tmem, tmem > 0 ? t / tmem : 0, tcat, t / tcat);
    int fails = 0;
    if (tmem <= 0 || t > 1.5 * tmem) {
        printf("  FAIL: streaming wall time\n");
        fails++;
    }
    if (!opt || (double)tot->bytes_to_devices > 1.05 * (double)opt || tot->hash_mismatches) {
        printf("  FAIL: streaming\n");
        fails++;
    }
    tl_run_report_destroy(r);
    tl_session_destroy(s);
    tl_plan_destroy(p);
    tl_model_close(m);
    unlink(path);
    return fails;
}

/* --- 4. two models, one device --- */

#define TWO_PROMPTS 6
#define TWO_PASSES 4

/* One access of the combined schedule: a tensor of a model, its bytes on the device, its step. */
typedef struct access {
    uint32_t key; /* model * 2^20 + tensor */
    uint64_t bytes;
    uint32_t step;
} use_rec;

/*
 * Bytes furthest-next-use eviction moves for the combined accesses under cap:
 * every tensor of a step resident at once; on a miss, tensors not in the
 * current step leave, the one used furthest ahead first.
 */
static uint64_t combined_optimum(const use_rec *a, size_t n, uint64_t cap) {
    size_t nkeys = 2u << 20;
    size_t *next = malloc(n * sizeof *next);
    size_t *first = malloc(nkeys * sizeof *first); /* per key: its next access from here */
    uint64_t *kb = calloc(nkeys, sizeof *kb);       /* per key: its bytes */
    uint32_t *seen = calloc(nkeys, sizeof *seen);   /* per key: 1 + the last step it was used in */
    bool *in = calloc(nkeys, sizeof *in);
    uint32_t *res = malloc(n * sizeof *res); /* resident keys */
    for (size_t k = 0; k < nkeys; k++)
        first[k] = n;
    for (size_t i = n; i-- > 0;) {
        next[i] = first[a[i].key];
        first[a[i].key] = i;
    }
    size_t nres = 0;
    uint64_t used = 0, moved = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t k = a[i].key;
        first[k] = next[i]; /* its next use after this one */
        seen[k] = a[i].step + 1;
        kb[k] = a[i].bytes;
        if (in[k]) continue;
        while (used + a[i].bytes > cap) {
            size_t best = nres;
            for (size_t r = 0; r < nres; r++) {
                uint32_t q = res[r];
                size_t nx = first[q];
                bool now = seen[q] == a[i].step + 1 || (nx < n && a[nx].step == a[i].step);
                if (!now && (best == nres || nx > first[res[best]])) best = r;
            }
            if (best == nres) break; /* the step alone is over cap: cannot be with these budgets */
            in[res[best]] = false;
            used -= kb[res[best]];
            res[best] = res[--nres];
        }
        in[k] = true;
        res[nres++] = k;
        used += a[i].bytes;
        moved += a[i].bytes;
    }
    free(next);
    free(first);
    free(kb);
    free(seen);
    free(in);
    free(res);
    return moved;
}

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/*
 * Acquire and release each layer of component c once, in order, rounds
 * times; *cpu and *wall: the process CPU time and wall time it took; returns
 * the tensors acquired (0 on an error).
 */
static uint64_t sweep(tl_session *s, tl_component c, size_t layers, int rounds, double *cpu,
                      double *wall) {
    uint64_t tensors = 0;
    double c0 = cpu_now(), w0 = now();
    for (int r = 0; r < rounds; r++)
        for (size_t k = 0; k < layers; k++) {
            tl_acquired *a;
            if (tl_session_acquire(s, c, k, k + 1, false, &a)) {
                fprintf(stderr, "bench_session: acquire: %s\n", tl_last_error());
                return 0;
            }
            tensors += tl_acquired_count(a);
            tl_session_release(s, a);
        }
    *cpu = cpu_now() - c0;
    *wall = now() - w0;
    return tensors;
}

static int many_bench(const char *dir) {
    char path[2048], cmd[8192];
    snprintf(path, sizeof path, "%.1900s/bench_20k.gguf", dir);
    snprintf(cmd, sizeof cmd,
             "%s mkmodel %s --size 256M --tensors 20000 --profile llm --dtype F16 >/dev/null", cli,
             path);
    timed(cmd);
    const char *paths[] = {path};
    tl_model *m;
    if (tl_model_open(paths, 1, NULL, &m)) {
        fprintf(stderr, "bench_session: %s\n", tl_last_error());
        return 2;
    }
    unlink(path); /* the mapping keeps the bytes */
    size_t nt = tl_model_tensor_count(m);
    tl_component c = TL_COMP_OTHER;
    size_t layers = tl_model_layer_count(m, c);
    if (tl_device_sim_add("bmany=1G")) return 2;
    tl_plan *p = plan_on(m, "bmany", 1ull << 30, "*=bmany", false);
    int fails = 0;
    /* all resident; evicting, no schedule (LRU lists); evicting, the sweeps as the schedule
       (furthest next use, a heap) */
    for (int mode = 0; mode < 3; mode++) {
        bool evicting = mode > 0, scheduled = mode == 2;
        tl_session_options o;
        tl_session_options_init(&o);
        uint64_t budget = 16ull << 20; /* ~1,300 of the 20,000 tensors */
        if (evicting) {
            o.device_budgets = &budget;
            o.n_device_budgets = 1;
        }
        tl_session *s;
        if (tl_session_create(m, p, &o, &s)) {
            fprintf(stderr, "bench_session: %s\n", tl_last_error());
            return 2;
        }
        int rounds = evicting ? 2 : 5;
        if (scheduled) { /* every sweep below, in order */
            size_t ns = (size_t)(1 + 2 * rounds) * layers;
            tl_session_step *steps = malloc(ns * sizeof *steps);
            if (!steps) return 2;
            for (size_t i = 0; i < ns; i++)
                steps[i] = (tl_session_step){c, i % layers, i % layers + 1, false};
            tl_status st = tl_session_set_schedule(s, steps, ns);
            free(steps);
            if (st) {
                fprintf(stderr, "bench_session: %s\n", tl_last_error());
                return 2;
            }
        }
        double cpu, wall, tcpu, twall;
        if (!sweep(s, c, layers, 1, &cpu, &wall)) return 2;    /* loads everything once */
        uint64_t n = sweep(s, c, layers, rounds, &cpu, &wall); /* the cost, untimed inside */
        /* again with the eviction order's work timed inside: its share */
        tl__session_victim_timing(s, true, NULL, NULL, NULL, NULL);
        uint64_t tn = n ? sweep(s, c, layers, rounds, &tcpu, &twall) : 0;
        if (!tn) return 2;
        uint64_t vns, vn, tns, dropped;
        tl__session_victim_timing(s, false, &vns, &vn, &tns, &dropped);
        tcpu -= (double)tns * 1e-9; /* the timing's own cost */
        tl_session_stats ss;
        tl_session_stats_get(s, &ss, sizeof ss);
        double per = cpu / (double)n * 1e6, share = (double)vns * 1e-9 / tcpu;
        if (!evicting) {
            /* (the share is not printed: the clock's cost is of the order of the work here) */
            printf("%zu tensors in %zu layers, one layer acquired + released at a time, all "
                   "resident: %.2f us CPU per tensor (limit <= 5.00), wall %.2f us\n",
                   nt, layers, per, wall / (double)n * 1e6);
            if (per > 5.0) {
                printf("  FAIL: acquire cost all resident\n");
                fails++;
            }
        } else {
            printf("  with a 16 MiB budget%s: %.2f us CPU per tensor, wall "
                   "%.2f us (printed, no limit: includes the loads); %llu victims chosen, the "
                   "eviction order's work (choices, %s upkeep) %.0f ns per victim, %.1f%% "
                   "of the CPU time (limit <= 10%%; %llu pieces preempted, dropped)\n",
                   scheduled ? " and the sweeps as the schedule (furthest next use)"
                             : " (every acquire evicts)",
                   per, wall / (double)n * 1e6, (unsigned long long)vn, scheduled ? "heap" : "list",
                   vn ? (double)vns / (double)vn : 0, share * 100, (unsigned long long)dropped);
            if (ss.evictions < n / 2) {
                printf("  FAIL: the budget did not force eviction (%llu evictions)\n",
                       (unsigned long long)ss.evictions);
                fails++;
            }
            if (share > 0.10) {
                printf("  FAIL: victim choice share\n");
                fails++;
            }
        }
        tl_session_destroy(s);
    }
    tl_plan_destroy(p);
    tl_model_close(m);
    return fails;
}

static int two_bench(const char *dir) {
    char path[2][2048], cmd[8192];
    tl_model *m[2];
    for (int i = 0; i < 2; i++) {
        snprintf(path[i], sizeof path[i], "%.1900s/bench_two%d.safetensors", dir, i);
        snprintf(cmd, sizeof cmd,
                 "%s mkmodel %s --size 256M --tensors 300 --profile sdxl --dtype F16 --seed %d "
                 ">/dev/null",
                 cli, path[i], i + 1);
        timed(cmd);
        const char *paths[] = {path[i]};
        if (tl_model_open(paths, 1, NULL, &m[i])) return 2;
    }
    uint64_t dbytes = 0; /* model 0's diffusion part */
    for (size_t t = 0; t < tl_model_tensor_count(m[0]); t++)
        if (tl_model_tensor(m[0], t)->component == TL_COMP_DIFFUSION)
            dbytes += tl_model_tensor(m[0], t)->nbytes;
    uint64_t cap = dbytes + dbytes / 4; /* one model's diffusion part at a time, not two */
    char spec[64];
    snprintf(spec, sizeof spec, "btwo=%llu", (unsigned long long)(4 * cap));
    tl_device *dev;
    if (tl_device_sim_add(spec) || tl_device_find("btwo", &dev)) return 2;
    tl_session *s[2];
    tl_plan *p[2];
    uint64_t budgets[2] = {cap, 0};
    tl_session_options o;
    tl_session_options_init(&o);
    o.device_budgets = budgets;
    o.n_device_budgets = 2;
    size_t nl[2];
    tl_session_step *steps = NULL;
    for (int i = 0; i < 2; i++) {
        p[i] = plan_on(m[i], "btwo", 4 * cap, "diffusion=btwo,cond=cpu,vae=cpu", false);
        if (tl_session_create(m[i], p[i], &o, &s[i])) {
            fprintf(stderr, "bench_session: %s\n", tl_last_error());
            return 2;
        }
        nl[i] = tl_model_layer_count(m[i], TL_COMP_DIFFUSION);
        size_t per = nl[i] + 1, n = 0; /* a pass: the other tensors, then layer by layer */
        steps = realloc(steps, TWO_PROMPTS / 2 * TWO_PASSES * per * sizeof *steps);
        for (int q = 0; q < TWO_PROMPTS / 2 * TWO_PASSES; q++) {
            steps[n++] = (tl_session_step){TL_COMP_DIFFUSION, nl[i], nl[i], true};
            for (size_t k = 0; k < nl[i]; k++)
                steps[n++] = (tl_session_step){TL_COMP_DIFFUSION, k, k + 1, false};
        }
        if (tl_session_set_schedule(s[i], steps, n)) return 2;
    }
    free(steps);
    tl_device_set_budget(dev, cap);
    size_t cap_acc = 1 << 16, n_acc = 0;
    use_rec *acc = malloc(cap_acc * sizeof *acc);
    uint32_t step = 0;
    uint64_t tensors = 0;
    double c0 = cpu_now(), t0 = now();
    for (int q = 0; q < TWO_PROMPTS; q++) {
        int x = q % 2;
        tl_session_set_priority(s[x], 1);
        tl_session_set_priority(s[1 - x], 0);
        for (int pass = 0; pass < TWO_PASSES; pass++)
            for (size_t k = 0; k <= nl[x]; k++, step++) {
                size_t lb = k ? k - 1 : nl[x], le = k ? k : nl[x];
                tl_acquired *a;
                if (tl_session_acquire(s[x], TL_COMP_DIFFUSION, lb, le, k == 0, &a)) {
                    fprintf(stderr, "bench_session: two models: %s\n", tl_last_error());
                    return 2;
                }
                for (size_t j = 0; j < tl_acquired_count(a); j++) {
                    const tl_session_tensor *t = tl_acquired_tensor(a, j);
                    uint64_t b = 0;
                    for (uint32_t r = 0; r < t->n_parts; r++)
                        if (t->parts[r].device) b += t->parts[r].nbytes;
                    if (!b) continue;
                    if (n_acc == cap_acc) acc = realloc(acc, (cap_acc *= 2) * sizeof *acc);
                    acc[n_acc++] = (use_rec){(uint32_t)x << 20 | (uint32_t)t->index, b, step};
                }
                tensors += tl_acquired_count(a);
                tl_session_release(s[x], a);
            }
    }
    double cpu = cpu_now() - c0, wall = now() - t0;
    uint64_t moved = 0;
    for (int i = 0; i < 2; i++) {
        tl_session_stats st;
        tl_session_stats_get(s[i], &st, sizeof st);
        for (int t = 0; t < TL_TIER_COUNT; t++)
            moved += st.moved[t][TL_TIER_DEVICE];
    }
    uint64_t opt = combined_optimum(acc, n_acc, cap);
    printf("two 256 MiB models on one sim GPU (budget for both %.0f MiB, one diffusion part "
           "%.0f MiB), %d alternating prompts of %d passes: moved %.2f GiB, combined optimum "
           "%.2f GiB, ratio %.3f (limit <= 1.05); CPU %.1f us per acquired tensor, copies "
           "included (wall %.2f s)\n",
           (double)cap / (1 << 20), (double)dbytes / (1 << 20), TWO_PROMPTS, TWO_PASSES,
           (double)moved / (1 << 30), (double)opt / (1 << 30), opt ? (double)moved / (double)opt : 0,
           cpu / (double)tensors * 1e6, wall);
    int fails = !opt || (double)moved > 1.05 * (double)opt;
    if (fails) printf("  FAIL: two models\n");
    free(acc);
    for (int i = 0; i < 2; i++) {
        tl_session_destroy(s[i]);
        tl_plan_destroy(p[i]);
        tl_model_close(m[i]);
        unlink(path[i]);
    }
    tl_device_set_budget(dev, 0);
    tl_device_unregister(dev);
    tl_device_release(dev);
    return fails;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    char self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 2;
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    snprintf(cli, sizeof cli, "%s/tierload", self);
    int fails = 0;
    const char *only = getenv("TL_BENCH_ONLY"); /* spill, stream, many or two: that part alone */
    if (!only || !strcmp(only, "spill")) fails += spill_bench(dir);
    if (!only || !strcmp(only, "stream")) fails += stream_bench(dir);
    if (!only || !strcmp(only, "many")) fails += many_bench(dir);
    if (!only || !strcmp(only, "two")) fails += two_bench(dir);
    return fails ? 1 : 0;
}
