/*
 * test_devices_cudamock.c — the CUDA device code without a GPU: a test double
 * of libcudart (host memory behind the same entry points, events that are
 * sometimes "not ready") is compiled at test time and loaded through
 * TIERLOAD_CUDART. The double completes copies asynchronously (see mock_src).
 * Proves discovery and naming, chunked copies through the staging ring with
 * several chunks in flight, multi-chunk tickets polled to done with every
 * byte in place on two devices at once, poll / wait in ticket order,
 * cudaErrorMemoryAllocation -> TL_ERR_DEVICE_OOM, pinned ranges copied
 * without staging, a source mapping cut short as TL_ERR_CHANGED, and the
 * absence reasons the CLI prints with --verbose.
 * Skips when no C compiler is at hand.
 */
#include "helpers/testutil.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * The double is asynchronous like the real runtime: cudaMemcpyAsync queues
 * the copy on its stream and returns; a worker thread per stream performs
 * the copies later, in stream order, after a random pause (so two streams
 * complete out of order with respect to each other). Reading the source and
 * writing the destination happen when the copy runs, not when it is queued:
 * a staging slot refilled before its copy ran, or a destination read before
 * its event completed, gives wrong bytes. An event is complete once every
 * copy queued on its stream before cudaEventRecord has run.
 */
static const char *mock_src =
    "#include <pthread.h>\n#include <stdlib.h>\n#include <string.h>\n#include <stdio.h>\n"
    "#include <time.h>\n"
    "static int cur; static size_t used, cap = 64u << 20;\n"
    "static void *stage[64]; static size_t stage_len[64]; static int n_stage;\n"
    "int mock_staged, mock_direct, mock_meminfo_calls, mock_mallocs, mock_frees;\n"
    "typedef struct op { void *d; const void *s; size_t n; struct op *next; } op;\n"
    "typedef struct stream { pthread_mutex_t mu; pthread_cond_t cv; op *head, *tail;\n"
    "  unsigned long queued, done; int stop; unsigned seed; pthread_t th; } stream;\n"
    "typedef struct event { stream *st; unsigned long target; } event;\n"
    "static void *worker(void *arg) { stream *s = arg; pthread_mutex_lock(&s->mu);\n"
    "  for (;;) { while (!s->head && !s->stop) pthread_cond_wait(&s->cv, &s->mu);\n"
    "    if (!s->head) break; op *o = s->head; pthread_mutex_unlock(&s->mu);\n"
    "    struct timespec ts = {0, (long)(rand_r(&s->seed) % 3000) * 1000};\n"
    "    nanosleep(&ts, NULL); memcpy(o->d, o->s, o->n);\n"
    "    pthread_mutex_lock(&s->mu); s->head = o->next; if (!s->head) s->tail = NULL;\n"
    "    free(o); s->done++; pthread_cond_broadcast(&s->cv); }\n"
    "  pthread_mutex_unlock(&s->mu); return NULL; }\n"
    "static int staged(const void *p) { for (int i = 0; i < n_stage; i++)\n"
    "  if ((const char *)p >= (char *)stage[i] && (const char *)p < (char *)stage[i] + "
    "stage_len[i]) return 1;\n"
    "  return 0; }\n"
    "int cudaGetDeviceCount(int *n) { if (getenv(\"MOCK_NODEV\")) return 100; *n = 2; return 0; }\n"
    "int cudaGetDevice(int *d) { *d = cur; return 0; }\n"
    "int cudaSetDevice(int d) { if (d < 0 || d > 1) return 101; cur = d; return 0; }\n"
    "int cudaGetDeviceProperties_v2(void *p, int d) { memset(p, 0x41, 2000); snprintf(p, 256, "
    "\"Mock GPU %d\", d); return 0; }\n"
    "int cudaMemGetInfo(size_t *f, size_t *t) { mock_meminfo_calls++; *f = cap - used; *t = cap; "
    "return 0; }\n"
    "int cudaMalloc(void **p, size_t n) { mock_mallocs++; if (n > cap - used) return 2;\n"
    "  char *b = malloc(n + 64);\n"
    "  memcpy(b, &n, sizeof n); *p = b + 64; used += n; return 0; }\n"
    "int cudaFree(void *p) { if (!p) return 0; mock_frees++; size_t n;\n"
    "  memcpy(&n, (char *)p - 64, sizeof n);\n"
    "  used -= n; free((char *)p - 64); return 0; }\n"
    "int cudaHostAlloc(void **p, size_t n, unsigned f) { *p = malloc(n); stage[n_stage] = *p; "
    "stage_len[n_stage++] = n; return 0; }\n"
    "int cudaFreeHost(void *p) { free(p); return 0; }\n"
    "int cudaHostRegister(void *p, size_t n, unsigned f) { return 0; }\n"
    "int cudaHostUnregister(void *p) { return 0; }\n"
    "int cudaStreamCreateWithFlags(void **out, unsigned f) { stream *s = calloc(1, sizeof *s);\n"
    "  static unsigned n; s->seed = 12345u + 77u * n++;\n"
    "  pthread_mutex_init(&s->mu, NULL); pthread_cond_init(&s->cv, NULL);\n"
    "  pthread_create(&s->th, NULL, worker, s); *out = s; return 0; }\n"
    "int cudaStreamDestroy(void *p) { stream *s = p; pthread_mutex_lock(&s->mu); s->stop = 1;\n"
    "  pthread_cond_broadcast(&s->cv); pthread_mutex_unlock(&s->mu); pthread_join(s->th, NULL);\n"
    "  free(s); return 0; }\n"
    "int cudaMemcpyAsync(void *d, const void *src, size_t n, int k, void *p) { stream *s = p;\n"
    "  if (staged(k == 1 ? src : d)) mock_staged++; else mock_direct++;\n"
    "  op *o = malloc(sizeof *o); o->d = d; o->s = src; o->n = n; o->next = NULL;\n"
    "  pthread_mutex_lock(&s->mu); if (s->tail) s->tail->next = o; else s->head = o; s->tail = o;\n"
    "  s->queued++; pthread_cond_broadcast(&s->cv); pthread_mutex_unlock(&s->mu); return 0; }\n"
    "int cudaEventCreateWithFlags(void **e, unsigned f) { *e = calloc(1, sizeof(event)); "
    "return 0; }\n"
    "int cudaEventRecord(void *p, void *sp) { event *e = p; stream *s = sp;\n"
    "  pthread_mutex_lock(&s->mu); e->st = s; e->target = s->queued; "
    "pthread_mutex_unlock(&s->mu);\n"
    "  return 0; }\n"
    "int cudaEventQuery(void *p) { event *e = p; if (!e->st) return 0; int r;\n"
    "  pthread_mutex_lock(&e->st->mu); r = e->st->done >= e->target ? 0 : 600;\n"
    "  pthread_mutex_unlock(&e->st->mu); return r; }\n"
    "int cudaEventSynchronize(void *p) { event *e = p; if (!e->st) return 0;\n"
    "  pthread_mutex_lock(&e->st->mu); while (e->st->done < e->target)\n"
    "  pthread_cond_wait(&e->st->cv, &e->st->mu); pthread_mutex_unlock(&e->st->mu); return 0; }\n"
    "int cudaEventDestroy(void *e) { free(e); return 0; }\n"
    "const char *cudaGetErrorString(int e) { return e == 2 ? \"out of memory\" : e == 100 ? \"no "
    "CUDA-capable device is detected\" : \"mock error\"; }\n"
    "int cudaGetLastError(void) { return 0; }\n";

static char *tmp_dir;
static char *mock_so;

/* A C compiler on PATH (the run helper does not search PATH), or NULL. */
static char *find_cc(void) {
    const char *names[] = {"cc", "gcc", "clang"};
    const char *path = getenv("PATH");
    if (!path) path = "/usr/bin:/bin";
    for (size_t k = 0; k < 3; k++) {
        for (const char *p = path; *p;) {
            const char *e = strchr(p, ':');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            char buf[4096];
            snprintf(buf, sizeof buf, "%.*s/%s", (int)len, p, names[k]);
            if (len && access(buf, X_OK) == 0) return strdup(buf);
            p += len + (e ? 1 : 0);
        }
    }
    return NULL;
}

static int setup(void **state) {
    (void)state;
    tmp_dir = tu_tmpdir();
    char *src = tu_path(tmp_dir, "mockcudart.c");
    mock_so = tu_path(tmp_dir, "libmockcudart.so");
    tu_write_file(src, mock_src, strlen(mock_src));
    char *cc = find_cc();
    int ok = 0;
    if (cc) {
        char *const argv[] = {cc, "-shared", "-fPIC", "-O1", "-pthread", "-o", mock_so, src, NULL};
        tu_run r = tu_run_argv(argv);
        ok = r.status == 0;
        tu_run_free(&r);
    }
    free(cc);
    free(src);
    if (!ok) {
        free(mock_so);
        mock_so = NULL;
        return 0;
    }
    setenv("TIERLOAD_CUDART", mock_so, 1); /* before the first registry call */
    return 0;
}

static int teardown(void **state) {
    (void)state;
    free(mock_so);
    tu_tmpdir_rm(tmp_dir);
    return 0;
}

static bool no_mock(void) {
    if (mock_so) return false;
    tu_skip_note("no C compiler to build the libcudart test double");
    return true;
}

/* The test double's device by name; the test is skipped (cmocka's skip leaves it) without one. */
static tl_device *mock_device(const char *name) {
    if (no_mock()) skip();
    tl_device *d = NULL;
    assert_int_equal(tl_device_find(name, &d), TL_OK);
    return d;
}

static int *mock_counter(const char *name) {
    void *h = dlopen(mock_so, RTLD_NOW | RTLD_NOLOAD);
    assert_non_null(h);
    int *p = dlsym(h, name);
    dlclose(h);
    assert_non_null(p);
    return p;
}

static void test_discovery(void **state) {
    (void)state;
    if (no_mock()) {
        skip();
        return;
    }
    assert_string_equal(tl_device_cuda_reason(), "");
    assert_int_equal(*mock_counter("mock_meminfo_calls"), 0); /* discovery made no context */
    tl_device *d = NULL;
    assert_int_equal(tl_device_find("cuda", &d), TL_ERR_INVALID_ARG); /* cuda0 and cuda1 */
    assert_int_equal(tl_device_find("CUDA1", &d), TL_OK);
    tl_device_info info;
    assert_int_equal(tl_device_describe(d, &info, sizeof info), TL_OK);
    assert_string_equal(info.name, "cuda1");
    assert_string_equal(info.desc, "Mock GPU 1");
    assert_int_equal(info.kind, TL_DEVICE_CUDA);
    assert_true(info.total == 64u << 20 && info.free == info.total);
    assert_true(info.async);
    assert_false(info.host_pointer);
    tl_device_release(d);
}

static void test_ring_copies(void **state) {
    (void)state;
    tl_device *d = mock_device("cuda0");
    const size_t N = (37u << 20) + 5; /* 5 chunks of 8 MiB: the 4-slot ring wraps */
    tl_devptr p;
    assert_int_equal(tl_device_alloc(d, N + 3, &p), TL_OK);
    unsigned char *src = malloc(N), *back = calloc(N, 1);
    unsigned seed = 3;
    for (size_t i = 0; i < N; i++)
        src[i] = (unsigned char)rand_r(&seed);
    int staged0 = *mock_counter("mock_staged");
    assert_int_equal(tl_device_copy_to(d, p + 3, src, N), TL_OK);
    assert_int_equal(*mock_counter("mock_staged") - staged0, 5);
    enum { K = 7 };
    size_t part = N / K;
    uint64_t t[K];
    for (int k = 0; k < K; k++) {
        assert_int_equal(
            tl_device_copy_from_async(d, back + k * part, p + 3 + k * part, part, &t[k]), TL_OK);
        if (k) assert_true(t[k] > t[k - 1]);
    }
    bool done = false;
    int spins = 0;
    while (!done) {
        assert_int_equal(tl_device_poll(d, t[0], &done), TL_OK);
        spins++;
    }
    assert_int_equal(tl_device_wait(d, t[K - 1]), TL_OK);
    for (int k = 0; k < K; k++) {
        assert_int_equal(tl_device_poll(d, t[k], &done), TL_OK);
        assert_true(done);
    }
    assert_memory_equal(back, src, part * K);
    assert_int_equal(tl_device_free(d, p), TL_OK);
    free(src);
    free(back);
    tl_device_release(d);
}

/*
 * A copy from a file's mapping cut short under it (the staging fill reads it): TL_ERR_CHANGED,
 * not a Bus error, synchronous or queued; the device copies on afterwards.
 */
static void test_copy_from_cut_mapping(void **state) {
    (void)state;
    tl_device *d = mock_device("cuda0");
    const size_t N = (9u << 20) + 7; /* two staging chunks */
    char *path = tu_path(tmp_dir, "cut.bin");
    unsigned char *src = malloc(N), *back = calloc(N, 1);
    unsigned seed = 13;
    for (size_t i = 0; i < N; i++)
        src[i] = (unsigned char)rand_r(&seed);
    tu_write_file(path, src, N);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    const unsigned char *map = mmap(NULL, N, PROT_READ, MAP_SHARED, fd, 0);
    assert_true(map != MAP_FAILED);
    tl_devptr p;
    uint64_t t = 0;
    assert_int_equal(tl_device_alloc(d, N, &p), TL_OK);
    assert_int_equal(tl_device_copy_to(d, p, map, N), TL_OK);
    assert_int_equal(ftruncate(fd, 1u << 20), 0);
    assert_int_equal(tl_device_copy_to(d, p, map, N), TL_ERR_CHANGED);
    assert_non_null(strstr(tl_last_error(), "shrank"));
    assert_int_equal(tl_device_copy_to_async(d, p, map, N, &t), TL_ERR_CHANGED);
    assert_int_equal(tl_device_copy_to(d, p, src, N), TL_OK);
    assert_int_equal(tl_device_copy_from(d, back, p, N), TL_OK);
    assert_memory_equal(back, src, N);
    assert_int_equal(tl_device_free(d, p), TL_OK);
    munmap((void *)map, N);
    close(fd);
    free(src);
    free(back);
    free(path);
    tl_device_release(d);
}

/* Poll a ticket until it is done (the mock's worker finishes every copy eventually). */
static void poll_done(tl_device *d, uint64_t t) {
    bool done = false;
    while (!done)
        assert_int_equal(tl_device_poll(d, t, &done), TL_OK);
}

/*
 * Multi-chunk tickets against a runtime that completes copies later: bytes
 * sent through a wrapping staging ring arrive intact (a slot refilled before
 * its copy ran would send the wrong chunk), and a device->host ticket polled
 * to done has every chunk in place (a ticket marked done after its first
 * chunk leaves the rest unwritten). Two devices (two streams, completing out
 * of order relative to each other) interleave.
 */
static void test_async_multi_chunk(void **state) {
    (void)state;
    if (no_mock()) {
        skip();
        return;
    }
    tl_device *dev[2] = {NULL, NULL};
    assert_int_equal(tl_device_find("cuda0", &dev[0]), TL_OK);
    assert_int_equal(tl_device_find("cuda1", &dev[1]), TL_OK);
    /* 5 and 3 chunks of 8 MiB through 4-slot rings (the mock has 64 MiB for both devices) */
    const size_t Ns[2] = {(37u << 20) + 11, (17u << 20) + 3};
    unsigned char *src[2], *back[2];
    tl_devptr p[2];
    uint64_t t[2];
    for (int k = 0; k < 2; k++) {
        size_t N = Ns[k];
        src[k] = malloc(N);
        back[k] = calloc(N, 1);
        unsigned seed = 11u + (unsigned)k;
        for (size_t i = 0; i < N; i++)
            src[k][i] = (unsigned char)rand_r(&seed);
        assert_int_equal(tl_device_alloc(dev[k], N, &p[k]), TL_OK);
    }
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < 2; k++)
            assert_int_equal(tl_device_copy_to_async(dev[k], p[k], src[k], Ns[k], &t[k]), TL_OK);
        for (int k = 1; k >= 0; k--) /* the later device first */
            poll_done(dev[k], t[k]);
        for (int k = 0; k < 2; k++) {
            memset(back[k], 0, Ns[k]);
            assert_int_equal(tl_device_copy_from_async(dev[k], back[k], p[k], Ns[k], &t[k]), TL_OK);
        }
        for (int k = 1; k >= 0; k--) {
            size_t N = Ns[k];
            poll_done(dev[k], t[k]);
            /* done means every chunk is in back[], without a wait */
            if (memcmp(back[k], src[k], N) != 0) {
                size_t i = 0;
                while (back[k][i] == src[k][i])
                    i++;
                fail_msg("cuda%d round %d: byte %zu of %zu differs after the ticket was done", k,
                         round, i, N);
            }
        }
        /* the next round sends different bytes through the same slots */
        for (int k = 0; k < 2; k++)
            for (size_t i = 0; i < Ns[k]; i += 4096)
                src[k][i] ^= (unsigned char)(round + 1);
    }
    for (int k = 0; k < 2; k++) {
        assert_int_equal(tl_device_free(dev[k], p[k]), TL_OK);
        free(src[k]);
        free(back[k]);
    }
}

static void test_oom_and_pinned(void **state) {
    (void)state;
    tl_device *d = mock_device("cuda0");
    tl_devptr p = 7;
    assert_int_equal(tl_device_alloc(d, (64u << 20) + 1, &p), TL_ERR_DEVICE_OOM);
    assert_true(p == 0);
    assert_non_null(strstr(tl_last_error(), "cuda0"));
    assert_non_null(strstr(tl_last_error(), "out of memory"));
    size_t n = 3u << 20;
    unsigned char *buf = malloc(n);
    memset(buf, 0x77, n);
    assert_int_equal(tl_device_pin(d, buf, n), TL_OK);
    assert_int_equal(tl_device_alloc(d, n, &p), TL_OK);
    int direct0 = *mock_counter("mock_direct"), staged0 = *mock_counter("mock_staged");
    uint64_t t;
    assert_int_equal(tl_device_copy_to_async(d, p, buf + 10, n - 10, &t), TL_OK);
    assert_int_equal(tl_device_wait(d, t), TL_OK);
    assert_int_equal(*mock_counter("mock_direct") - direct0, 1);
    assert_int_equal(*mock_counter("mock_staged") - staged0, 0);
    assert_int_equal(tl_device_unpin(d, buf, n), TL_OK);
    memset(buf, 0, n);
    assert_int_equal(tl_device_copy_from(d, buf, p, n - 10), TL_OK); /* staged again */
    assert_int_equal(*mock_counter("mock_staged") - staged0, 1);
    assert_int_equal(buf[0], 0x77);
    assert_int_equal(buf[n - 11], 0x77);
    assert_int_equal(tl_device_free(d, p), TL_OK);
    free(buf);
    tl_device_release(d);
}

/*
 * Tensors come from a pool: 200 allocations of 64 KiB fit one 16 MiB chunk
 * (one cudaMalloc), freeing them calls no cudaFree (it would synchronise the
 * device); the bytes of each stay its own. A request the pool cannot take
 * beside the chunks kept in the mock's 64 MiB gives the empty chunks back first.
 */
static void test_pool(void **state) {
    (void)state;
    tl_device *d = mock_device("cuda1");
    enum { N = 200, SZ = 64 << 10 };
    tl_devptr p[N];
    int m0 = *mock_counter("mock_mallocs"), f0 = *mock_counter("mock_frees");
    unsigned char *buf = malloc(SZ), *back = malloc(SZ);
    for (int i = 0; i < N; i++) {
        assert_int_equal(tl_device_alloc(d, SZ, &p[i]), TL_OK);
        memset(buf, i, SZ);
        assert_int_equal(tl_device_copy_to(d, p[i], buf, SZ), TL_OK);
    }
    assert_true(*mock_counter("mock_mallocs") - m0 <= 1); /* 0 when a chunk is left from before */
    for (int i = 0; i < N; i++) {
        assert_int_equal(tl_device_copy_from(d, back, p[i], SZ), TL_OK);
        memset(buf, i, SZ);
        assert_memory_equal(back, buf, SZ);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(tl_device_free(d, p[i]), TL_OK);
    assert_int_equal(*mock_counter("mock_frees") - f0, 0);
    assert_int_equal(tl_device_free(d, p[0]), TL_ERR_INVALID_ARG); /* freed twice */
    /* 40 MiB do not fit beside the retained chunks (cuda0 keeps one too): ours goes, then they fit */
    tl_devptr big;
    assert_int_equal(tl_device_alloc(d, 40u << 20, &big), TL_OK);
    assert_int_equal(*mock_counter("mock_frees") - f0, 1);
    assert_int_equal(tl_device_free(d, big), TL_OK);
    free(buf);
    free(back);
    tl_device_release(d);
}

static void test_cli_reasons(void **state) {
    (void)state;
    if (no_mock()) {
        skip();
        return;
    }
    tu_run r = tu_cli_run("devices", "--json", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "\"name\":\"cuda0\",\"kind\":\"cuda\""));
    tu_run_free(&r);
    setenv("MOCK_NODEV", "1", 1);
    r = tu_cli_run("devices", "--verbose", NULL);
    assert_int_equal(r.status, 0);
    assert_null(strstr(r.out, "cuda0"));
    assert_non_null(
        strstr(r.err, "no CUDA device: cudaGetDeviceCount: no CUDA-capable device is detected"));
    tu_run_free(&r);
    unsetenv("MOCK_NODEV");
    setenv("TIERLOAD_CUDART", "/nonexistent/libcudart.so", 1);
    r = tu_cli_run("devices", NULL);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.err, ""); /* said only with --verbose */
    tu_run_free(&r);
    r = tu_cli_run("devices", "--verbose", NULL);
    assert_non_null(strstr(
        r.err, "no CUDA runtime: /nonexistent/libcudart.so: cannot open shared object file"));
    tu_run_free(&r);
    setenv("TIERLOAD_CUDART", mock_so, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_discovery),
        cmocka_unit_test(test_ring_copies),
        cmocka_unit_test(test_async_multi_chunk),
        cmocka_unit_test(test_oom_and_pinned),
        cmocka_unit_test(test_copy_from_cut_mapping),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_cli_reasons),
    };
    return tu_exit(cmocka_run_group_tests(tests, setup, teardown));
}
