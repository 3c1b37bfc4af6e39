/*
 * test_warm_pool.c — the warm host pool: a model loaded after another was
 * freed takes its destination from the pool (no fresh anonymous memory: the
 * process's RssAnon, read from /proc, does not grow over the load), its bytes
 * equal the file's (read with pread, not the library), the pool never holds
 * more than its bound (its counters and RssAnon), and with a bound of 0
 * nothing is kept. A session's pinned copies go to the pool and come back
 * from it. Two threads loading and freeing at once load right within the
 * bound. tl_init's keep_warm sets the bound (in a child process).
 */
#include "testutil.h"
#include "test_load_st.h"

#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB (1ull << 20)

static void fill(void *buf, uint64_t off, uint64_t len, void *ctx) {
    uint64_t seed = (uint64_t)(uintptr_t)ctx;
    unsigned char *b = buf;
    for (uint64_t i = 0; i < len; i++)
        b[i] = (unsigned char)(((off + i) * 2654435761u + seed * 977u) >> 7);
}

/* Three tensors, total about mib MiB, bytes seeded (two models differ everywhere). */
static void write_model(const char *path, uint64_t mib, uintptr_t seed) {
    st_tensor t[3] = {
        {"big", "F16", (mib - 3) * MiB / 2, 2, NULL, fill, (void *)seed},
        {"mid", "F32", 2 * MiB / 4, 4, NULL, fill, (void *)(seed + 1)},
        {"odd", "U8", MiB + 333, 1, NULL, fill, (void *)(seed + 2)},
    };
    st_write(path, t, 3);
}

static uint64_t rss_anon(void) {
    tl_memstats ms;
    assert_int_equal(tl_memstats_read(&ms, sizeof ms), TL_OK);
    return ms.rss_anon;
}

static tl_warm_stats warm(void) {
    tl_warm_stats w;
    memset(&w, 0xff, sizeof w);
    tl_warm_pool_stats(&w, sizeof w);
    return w;
}

static tl_load_result *load(tl_model *m) {
    tl_load_options o;
    tl_load_options_init(&o);
    o.mode = TL_LOAD_BUFFERED;
    o.sample_interval = 0.002;
    tl_load_result *r = NULL;
    tl_status s = tl_model_load(m, &o, &r);
    if (s != TL_OK) print_error("%s\n", tl_last_error());
    assert_int_equal(s, TL_OK);
    return r;
}

static tl_model *open1(const char *path) {
    tl_model *m = NULL;
    const char *p[] = {path};
    assert_int_equal(tl_model_open(p, 1, NULL, &m), TL_OK);
    return m;
}

/* Every tensor's bytes as pread gives them from the file. */
static void check_bytes(const char *path, tl_model *m, const tl_load_result *r) {
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        const tl_loaded_tensor *lt = tl_load_result_tensor(r, i);
        assert_int_equal(lt->nbytes, t->nbytes);
        unsigned char *want = malloc((size_t)t->nbytes);
        assert_non_null(want);
        assert_int_equal(pread(fd, want, (size_t)t->nbytes, (off_t)t->offset), (ssize_t)t->nbytes);
        if (memcmp(want, lt->data, (size_t)t->nbytes) != 0)
            fail_msg("%s: tensor %s differs from the file", path, t->name);
        free(want);
    }
    close(fd);
}

typedef struct files {
    char *dir, *a, *b;
} files;

static int setup(void **state) {
    files *f = calloc(1, sizeof *f);
    f->dir = tu_tmpdir();
    f->a = tu_path(f->dir, "a.safetensors");
    f->b = tu_path(f->dir, "b.safetensors");
    write_model(f->a, 40, 1);
    write_model(f->b, 36, 7); /* smaller than A: fits in A's region */
    *state = f;
    return 0;
}

static int teardown(void **state) {
    files *f = *state;
    tu_tmpdir_rm(f->dir);
    free(f->a);
    free(f->b);
    free(f);
    tl_warm_pool_set(0);
    return 0;
}

static void test_switch_reuses_warm_memory(void **state) {
    files *f = *state;
    const uint64_t bound = 64 * MiB;
    tl_warm_pool_set(bound);
    tl_warm_stats w0 = warm();
    assert_int_equal(w0.bound, bound);
    assert_int_equal(w0.held, 0);

    tl_model *ma = open1(f->a);
    tl_load_result *ra = load(ma);
    uint64_t dest_a = tl_load_result_stats(ra)->dest_bytes;
    assert_true(dest_a >= 40 * MiB - MiB && dest_a <= 42 * MiB);
    uint64_t anon_loaded = rss_anon();
    tl_load_result_destroy(ra);
    tl_model_close(ma);

    tl_warm_stats w1 = warm();
    assert_int_equal(w1.held, dest_a); /* kept whole */
    assert_int_equal(w1.regions, 1);
    assert_true(w1.held <= bound && w1.held_peak <= bound);
    /* still resident: freeing kept A's pages (within 4 MiB of other churn) */
    assert_true(rss_anon() + 4 * MiB >= anon_loaded);

    tl_model *mb = open1(f->b);
    tl_load_result *rb = load(mb);
    const tl_load_stats *st = tl_load_result_stats(rb);
    tl_warm_stats w2 = warm();
    assert_int_equal(w2.takes, w1.takes + 1);
    assert_true(w2.taken - w1.taken >= st->bytes);
    assert_true(w2.held + (w2.taken - w1.taken) == w1.held); /* split: the rest stays */
    assert_non_null(strstr(tl_load_result_notes(rb), "warm pool"));
    /* no fresh memory faulted in for B's 36 MiB: RssAnon grew by less than a third of it */
    print_message("B: %llu bytes, rss anon start %llu peak %llu, taken %llu, held %llu\n",
                  (unsigned long long)st->bytes, (unsigned long long)st->mem.start.rss_anon,
                  (unsigned long long)st->mem.rss_anon_peak,
                  (unsigned long long)(w2.taken - w1.taken), (unsigned long long)w2.held);
    assert_true(st->mem.rss_anon_peak < st->mem.start.rss_anon + 12 * MiB);
    check_bytes(f->b, mb, rb);

    /* a bound below B's region: nothing of it is kept, and the pool shrinks to it at once */
    const uint64_t small = 8 * MiB;
    tl_warm_pool_set(small);
    assert_true(warm().held <= small);
    uint64_t anon_b = rss_anon();
    uint64_t dest_b = st->dest_bytes;
    tl_load_result_destroy(rb);
    tl_model_close(mb);
    tl_warm_stats w3 = warm();
    assert_true(w3.held <= small);
    assert_true(w3.released >= w2.released + dest_b);
    assert_true(rss_anon() + dest_b / 2 <= anon_b); /* given back to the system */
    assert_true(w3.held_peak <= bound);
}

static void test_keep_warm_zero_keeps_nothing(void **state) {
    files *f = *state;
    tl_warm_pool_set(0);
    tl_warm_stats w0 = warm();
    assert_int_equal(w0.held, 0);
    tl_model *ma = open1(f->a);
    tl_load_result *ra = load(ma);
    uint64_t dest_a = tl_load_result_stats(ra)->dest_bytes;
    uint64_t anon_loaded = rss_anon();
    tl_load_result_destroy(ra);
    tl_warm_stats w1 = warm();
    assert_int_equal(w1.held, 0);
    assert_int_equal(w1.regions, 0);
    assert_int_equal(w1.released, w0.released + dest_a);
    assert_true(rss_anon() + dest_a / 2 <= anon_loaded);
    /* the next load draws nothing from the pool */
    tl_load_result *rb = load(ma);
    assert_int_equal(warm().takes, w1.takes);
    assert_null(strstr(tl_load_result_notes(rb), "warm pool"));
    check_bytes(f->a, ma, rb);
    tl_load_result_destroy(rb);
    tl_model_close(ma);
}

/*
 * A session's pinned tier: 4 streamed layers of 4 MiB, a device budget of 2
 * and a pinned cap of 3. The fourth layer's pinned copy pushes layer 0's
 * out, into the pool, and takes that region from it (the pool's counters);
 * the session's own destroy leaves its copies in the pool; the device
 * gets the file's bytes throughout (pread).
 */
#define LAYER (4ull << 20)
#define UNET "model.diffusion_model."

static void session_layer(tl_session *s, tl_device *sim, const char *path, size_t k) {
    tl_acquired *a;
    assert_int_equal(tl_session_acquire(s, TL_COMP_DIFFUSION, k, k + 1, false, &a), TL_OK);
    const tl_session_tensor *t = tl_acquired_tensor(a, 0);
    assert_int_equal(t->parts[0].tier, TL_TIER_DEVICE);
    unsigned char *got = malloc(LAYER), *want = malloc(LAYER);
    assert_int_equal(tl_device_copy_from(sim, got, t->parts[0].dptr, LAYER), TL_OK);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, want, LAYER, (off_t)t->info->offset), (ssize_t)LAYER);
    close(fd);
    assert_memory_equal(got, want, LAYER);
    free(got);
    free(want);
    tl_session_release(s, a);
}

static void test_session_pinned_copies(void **state) {
    files *f = *state;
    char *path = tu_path(f->dir, "layers.safetensors");
    static char names[4][64];
    st_tensor t[4];
    for (int k = 0; k < 4; k++) {
        snprintf(names[k], sizeof names[k], UNET "input_blocks.%d.0.weight", k);
        t[k] = (st_tensor){names[k], "F32", LAYER / 4, 4, NULL, fill, (void *)(uintptr_t)(k + 11)};
    }
    st_write(path, t, 4);
    tl_model *m = open1(path);
    assert_int_equal(tl_device_sim_add("warmsim=8388608"), TL_OK);
    tl_device *sim = NULL;
    assert_int_equal(tl_device_find("warmsim", &sim), TL_OK);
    tl_plan *p = tu_plan_one_gpu(m, "warmsim", 2 * LAYER, NULL, true);
    tl_warm_pool_set(16 * MiB);
    tl_session_options o;
    tl_session_options_init(&o);
    o.pinned_cap = 3 * LAYER;
    tl_session *s = NULL;
    assert_int_equal(tl_session_create(m, p, &o, &s), TL_OK);
    tl_warm_stats w0 = warm();
    for (size_t k = 0; k < 4; k++)
        session_layer(s, sim, path, k);
    tl_warm_stats w1 = warm();
    /* layer 3's copy took layer 0's region, unpinned into the pool a moment before */
    assert_int_equal(w1.takes, w0.takes + 1);
    assert_int_equal(w1.taken - w0.taken, LAYER);
    assert_int_equal(w1.held, 0);
    session_layer(s, sim, path, 0); /* layer 1's copy makes way, and layer 0 takes its region */
    tl_warm_stats w2 = warm();
    assert_int_equal(w2.takes, w1.takes + 1);
    assert_int_equal(w2.taken - w1.taken, LAYER);
    assert_int_equal(w2.held, 0);
    assert_int_equal(w2.released, w0.released);
    tl_session_stats st;
    assert_int_equal(tl_session_stats_get(s, &st, sizeof st), TL_OK);
    assert_int_equal(st.pinned_used, 3 * LAYER); /* the session counts what it holds */
    assert_int_equal(st.moved[TL_TIER_FILE][TL_TIER_PINNED], 5 * LAYER);
    assert_int_equal(tl_session_check(s), TL_OK);
    tl_session_destroy(s);
    tl_warm_stats w3 = warm(); /* its three copies, within the bound */
    assert_int_equal(w3.held, 3 * LAYER);
    assert_int_equal(w3.regions, 3);
    tl_warm_pool_set(0);
    tl_warm_stats w4 = warm();
    assert_int_equal(w4.held, 0);
    assert_int_equal(w4.released, w3.released + 3 * LAYER);
    tl_plan_destroy(p);
    tl_device_unregister(sim);
    tl_device_release(sim);
    tl_model_close(m);
    free(path);
}

/* Two threads loading and freeing at once: every load right, the bound kept. */
typedef struct racer {
    const char *path;
    int bad; /* loads that failed or whose bytes differed from the file */
} racer;

static bool same_as_file(const char *path, tl_model *m, const tl_load_result *r) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return false;
    bool ok = true;
    for (size_t i = 0; ok && i < tl_model_tensor_count(m); i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        unsigned char *want = malloc((size_t)t->nbytes);
        ok = want && pread(fd, want, (size_t)t->nbytes, (off_t)t->offset) == (ssize_t)t->nbytes &&
             memcmp(want, tl_load_result_tensor(r, i)->data, (size_t)t->nbytes) == 0;
        free(want);
    }
    close(fd);
    return ok;
}

static void *race(void *arg) {
    racer *x = arg;
    tl_model *m = NULL;
    const char *p[] = {x->path};
    if (tl_model_open(p, 1, NULL, &m) != TL_OK) {
        x->bad++;
        return NULL;
    }
    for (int k = 0; k < 6; k++) {
        tl_load_options o;
        tl_load_options_init(&o);
        o.mode = TL_LOAD_BUFFERED;
        tl_load_result *r = NULL;
        if (tl_model_load(m, &o, &r) != TL_OK || !same_as_file(x->path, m, r)) x->bad++;
        tl_load_result_destroy(r);
    }
    tl_model_close(m);
    return NULL;
}

static void test_threads(void **state) {
    files *f = *state;
    const uint64_t bound = 60 * MiB; /* one region of A or B at a time, not two */
    tl_warm_pool_set(bound);
    tl_warm_stats w0 = warm();
    racer x[2] = {{f->a, 0}, {f->b, 0}};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, race, &x[1]), 0);
    race(&x[0]);
    pthread_join(t, NULL);
    assert_int_equal(x[0].bad, 0);
    assert_int_equal(x[1].bad, 0);
    tl_warm_stats w1 = warm();
    assert_true(w1.held <= bound);
    assert_true(w1.takes > w0.takes); /* the pool served some of the 12 loads */
    tl_warm_pool_set(0);
    assert_int_equal(warm().held, 0);
}

/* The CLI: --repeat loads again after freeing; --keep-warm makes the later loads warm. */
static void test_cli_keep_warm(void **state) {
    files *f = *state;
    tu_run r = tu_cli_run("load", "--mode", "buffered", "--verbose", "--quiet", "--keep-warm",
                          "64M", "--repeat", "2", f->a, NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.err, "from the warm pool"));
    tu_run_free(&r);
    r = tu_cli_run("load", "--mode", "buffered", "--verbose", "--quiet", "--repeat", "2", f->a,
                   NULL);
    assert_int_equal(r.status, 0);
    assert_null(strstr(r.err, "warm pool")); /* no --keep-warm: nothing kept */
    tu_run_free(&r);
    r = tu_cli_run("load", "--keep-warm", "lots", f->a, NULL);
    assert_int_equal(r.status, 2);
    tu_run_free(&r);
}

static int child_init(void) {
    tl_library_options o;
    tl_library_options_init(&o);
    if (o.keep_warm != 0) return 10;
    o.keep_warm = 123 * MiB;
    if (tl_init(&o) != TL_OK) return 11;
    tl_warm_stats w;
    tl_warm_pool_stats(&w, sizeof w);
    return w.bound == 123 * MiB && w.held == 0 ? 0 : 12;
}

static void test_init_sets_the_bound(void **state) {
    (void)state;
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(child_init());
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        /* first: tl_init is refused once the process has discovered devices */
        cmocka_unit_test(test_init_sets_the_bound),
        cmocka_unit_test(test_switch_reuses_warm_memory),
        cmocka_unit_test(test_keep_warm_zero_keeps_nothing),
        cmocka_unit_test(test_session_pinned_copies),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_cli_keep_warm),
    };
    return tu_exit(cmocka_run_group_tests(tests, setup, teardown));
}
