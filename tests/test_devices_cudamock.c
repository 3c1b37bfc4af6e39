/*
 * test_devices_cudamock.c — the CUDA device code without a GPU: a test double
 * of libcudart (host memory behind the same entry points, events that are
 * sometimes "not ready") is compiled at test time and loaded through
 * TIERLOAD_CUDART. Proves discovery and naming, chunked copies through the
 * staging ring with several chunks in flight, poll / wait in ticket order,
 * cudaErrorMemoryAllocation -> TL_ERR_DEVICE_OOM, pinned ranges copied
 * without staging, and the absence reasons the CLI prints with --verbose.
 * Skips when no C compiler is at hand.
 */
#include "helpers/testutil.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *mock_src =
    "#include <stdlib.h>\n#include <string.h>\n#include <stdio.h>\n"
    "static int cur; static size_t used, cap = 64u << 20; static int queries;\n"
    "static void *stage[64]; static size_t stage_len[64]; static int n_stage;\n"
    "int mock_staged, mock_direct;\n"
    "static int staged(const void *p) { for (int i = 0; i < n_stage; i++)\n"
    "  if ((const char *)p >= (char *)stage[i] && (const char *)p < (char *)stage[i] + "
    "stage_len[i]) return 1;\n"
    "  return 0; }\n"
    "int cudaGetDeviceCount(int *n) { if (getenv(\"MOCK_NODEV\")) return 100; *n = 2; return 0; }\n"
    "int cudaGetDevice(int *d) { *d = cur; return 0; }\n"
    "int cudaSetDevice(int d) { if (d < 0 || d > 1) return 101; cur = d; return 0; }\n"
    "int cudaGetDeviceProperties_v2(void *p, int d) { memset(p, 0x41, 2000); snprintf(p, 256, "
    "\"Mock GPU %d\", d); return 0; }\n"
    "int mock_meminfo_calls;\n"
    "int cudaMemGetInfo(size_t *f, size_t *t) { mock_meminfo_calls++; *f = cap - used; *t = cap; "
    "return 0; }\n"
    "int cudaMalloc(void **p, size_t n) { if (n > cap - used) return 2; *p = malloc(n); used += n; "
    "return 0; }\n"
    "int cudaFree(void *p) { free(p); return 0; }\n"
    "int cudaHostAlloc(void **p, size_t n, unsigned f) { *p = malloc(n); stage[n_stage] = *p; "
    "stage_len[n_stage++] = n; return 0; }\n"
    "int cudaFreeHost(void *p) { free(p); return 0; }\n"
    "int cudaHostRegister(void *p, size_t n, unsigned f) { return 0; }\n"
    "int cudaHostUnregister(void *p) { return 0; }\n"
    "int cudaStreamCreateWithFlags(void **s, unsigned f) { *s = malloc(1); return 0; }\n"
    "int cudaStreamDestroy(void *s) { free(s); return 0; }\n"
    "int cudaMemcpyAsync(void *d, const void *s, size_t n, int k, void *st) {\n"
    "  if (staged(k == 1 ? s : d)) mock_staged++; else mock_direct++; memcpy(d, s, n); return 0; "
    "}\n"
    "int cudaEventCreateWithFlags(void **e, unsigned f) { *e = malloc(1); return 0; }\n"
    "int cudaEventRecord(void *e, void *s) { return 0; }\n"
    "int cudaEventQuery(void *e) { return (queries++ % 3 == 0) ? 600 : 0; }\n"
    "int cudaEventSynchronize(void *e) { return 0; }\n"
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
        char *const argv[] = {cc, "-shared", "-fPIC", "-O1", "-o", mock_so, src, NULL};
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
    printf("skipped: no C compiler to build the libcudart test double\n");
    return true;
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
    assert_int_equal(tl_device_describe(d, &info), TL_OK);
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
    if (no_mock()) {
        skip();
        return;
    }
    tl_device *d = NULL;
    assert_int_equal(tl_device_find("cuda0", &d), TL_OK);
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

static void test_oom_and_pinned(void **state) {
    (void)state;
    if (no_mock()) {
        skip();
        return;
    }
    tl_device *d = NULL;
    assert_int_equal(tl_device_find("cuda0", &d), TL_OK);
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
        cmocka_unit_test(test_oom_and_pinned),
        cmocka_unit_test(test_cli_reasons),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
