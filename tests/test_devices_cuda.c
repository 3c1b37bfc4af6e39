/*
 * test_devices_cuda.c — CUDA devices through the dlopen'd runtime. Compiled
 * always; where no CUDA runtime or device can be had it checks that the
 * absence is reported (a reason, no cuda entries) and skips. With a GPU:
 * describe, odd-size copies through the staging ring (several chunks in
 * flight, tickets in order), OOM mapped to TL_ERR_DEVICE_OOM, pinning, and
 * the GPUDirect Storage read (used or reported unsupported).
 */
#include "helpers/testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dlfcn.h>
#include <unistd.h>

#include "os/os.h"

static bool no_cuda(void) {
    const char *why = tl_device_cuda_reason();
    assert_non_null(why);
    if (!*why) return false;
    assert_true(strncmp(why, "no CUDA", 7) == 0);
    tl_device *devs[64];
    size_t n = tl_device_list(devs, 64);
    if (n > 64) n = 64;
    for (size_t i = 0; i < n; i++)
        assert_int_not_equal(tl_device_kind_of(devs[i]), TL_DEVICE_CUDA);
    tl_device_list_release(devs, n);
    tu_skip_note("%s", strncmp(why, "no CUDA runtime", 15) == 0 ? "no CUDA runtime" : why);
    return true;
}

/* Nothing here unregisters cuda0: the registry's reference keeps it alive. */
static tl_device *cuda0(void) {
    tl_device *d = NULL;
    assert_int_equal(tl_device_find("cuda0", &d), TL_OK);
    tl_device_release(d);
    return d;
}

static void test_describe(void **state) {
    (void)state;
    if (no_cuda()) {
        skip();
        return;
    }
    tl_device_info info;
    assert_int_equal(tl_device_describe(cuda0(), &info, sizeof info), TL_OK);
    assert_int_equal(info.kind, TL_DEVICE_CUDA);
    assert_true(info.total > 0 && info.free <= info.total);
    assert_false(info.host_pointer);
    assert_true(info.async);
    printf("cuda0: %s, %llu of %llu bytes free\n", info.desc, (unsigned long long)info.free,
           (unsigned long long)info.total);
}

static void test_copies(void **state) {
    (void)state;
    if (no_cuda()) {
        skip();
        return;
    }
    tl_device *d = cuda0();
    const size_t N = (20u << 20) + 13; /* several staging chunks */
    tl_devptr p;
    assert_int_equal(tl_device_alloc(d, N + 64, &p), TL_OK);
    unsigned char *src = malloc(N), *back = calloc(N + 1, 1);
    unsigned seed = 99;
    for (size_t i = 0; i < N; i++)
        src[i] = (unsigned char)rand_r(&seed);
    assert_int_equal(tl_device_copy_to(d, p + 7, src, N), TL_OK);
    uint64_t t;
    assert_int_equal(tl_device_copy_from_async(d, back + 1, p + 7, N, &t), TL_OK);
    assert_true(t > 0);
    assert_int_equal(tl_device_wait(d, t), TL_OK);
    assert_memory_equal(back + 1, src, N);
    /* several in flight: each async copy to a different place, completion in ticket order */
    enum { K = 6 };
    size_t part = N / K;
    uint64_t tk[K];
    memset(back, 0, N + 1);
    for (int k = 0; k < K; k++) {
        assert_int_equal(
            tl_device_copy_from_async(d, back + k * part, p + 7 + k * part, part, &tk[k]), TL_OK);
        if (k) assert_true(tk[k] > tk[k - 1]);
    }
    bool done = false;
    for (int spin = 0; spin < 100000 && !done; spin++)
        assert_int_equal(tl_device_poll(d, tk[K - 1], &done), TL_OK);
    assert_int_equal(tl_device_wait(d, tk[K - 1]), TL_OK);
    for (int k = 0; k < K; k++) {
        assert_int_equal(tl_device_poll(d, tk[k], &done), TL_OK);
        assert_true(done);
    }
    assert_memory_equal(back, src, part * K);
    assert_int_equal(tl_device_wait(d, tk[K - 1] + 1000), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_device_free(d, p), TL_OK);
    free(src);
    free(back);
}

static void test_oom_and_pin(void **state) {
    (void)state;
    if (no_cuda()) {
        skip();
        return;
    }
    tl_device *d = cuda0();
    tl_device_info info;
    assert_int_equal(tl_device_describe(d, &info, sizeof info), TL_OK);
    tl_devptr p = 1;
    assert_int_equal(tl_device_alloc(d, info.total + 1, &p), TL_ERR_DEVICE_OOM);
    assert_true(p == 0);
    size_t n = 1 << 20;
    void *buf = NULL;
    assert_int_equal(posix_memalign(&buf, 4096, n), 0);
    assert_int_equal(tl_device_pin(d, buf, n), TL_OK);
    /* a pinned range is copied without staging; the bytes are the same */
    tl_devptr q;
    assert_int_equal(tl_device_alloc(d, n, &q), TL_OK);
    memset(buf, 0x5A, n);
    uint64_t t;
    assert_int_equal(tl_device_copy_to_async(d, q, buf, n, &t), TL_OK);
    assert_int_equal(tl_device_wait(d, t), TL_OK);
    memset(buf, 0, n);
    assert_int_equal(tl_device_copy_from_async(d, (char *)buf + 1, q + 1, n - 1, &t), TL_OK);
    assert_int_equal(tl_device_wait(d, t), TL_OK);
    assert_int_equal(((unsigned char *)buf)[0], 0);
    assert_int_equal(((unsigned char *)buf)[1], 0x5A);
    assert_int_equal(((unsigned char *)buf)[n - 1], 0x5A);
    assert_int_equal(tl_device_free(d, q), TL_OK);
    assert_int_equal(tl_device_unpin(d, buf, n), TL_OK);
    free(buf);
}

static void test_read_file(void **state) {
    (void)state;
    if (no_cuda()) {
        skip();
        return;
    }
    tl_device *d = cuda0();
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, "blob");
    size_t n = 1 << 20;
    unsigned char *data = malloc(n), *back = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned char)(i * 31 + 7);
    tu_write_file(path, data, n);
    int fd;
    uint64_t size;
    assert_int_equal(tl__os_open_ro(path, &fd, &size), 0);
    tl_devptr p;
    assert_int_equal(tl_device_alloc(d, n, &p), TL_OK);
    tl_status s = tl_device_read_file(d, fd, 4096, p, n - 4096);
    if (s == TL_OK) {
        assert_string_equal(tl_device_cufile_reason(), "");
        assert_int_equal(tl_device_copy_from(d, back, p, n - 4096), TL_OK);
        assert_memory_equal(back, data + 4096, n - 4096);
    } else {
        /*
         * Unsupported only for a reason that says GPUDirect Storage is absent
         * or refused by libcufile, and that reason is in the error message; a
         * probe that read different bytes, or no reason, is a failure.
         */
        assert_int_equal(s, TL_ERR_UNSUPPORTED);
        const char *why = tl_device_cufile_reason();
        printf("GPUDirect Storage not used: %s\n", why);
        static const char *const absent[] = {"no libcufile", "libcufile lacks",
                                             "cuFileDriverOpen failed",
                                             "cuFileHandleRegister failed", "cuFileRead returned"};
        bool known = false;
        for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++)
            if (!strncmp(why, absent[i], strlen(absent[i]))) known = true;
        if (!known) fail_msg("GPUDirect refused for an unexpected reason: '%s'", why);
        assert_non_null(strstr(tl_last_error(), why));
        void *lib = dlopen("libcufile.so.0", RTLD_NOW | RTLD_NOLOAD);
        if (!lib) lib = dlopen("libcufile.so.0", RTLD_NOW);
        if (!lib)
            assert_true(!strncmp(why, "no libcufile", 12)); /* none here: must say so */
        else
            dlclose(lib);
    }
    tl_device_free(d, p);
    close(fd);
    free(data);
    free(back);
    free(path);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_copies),
        cmocka_unit_test(test_oom_and_pin),
        cmocka_unit_test(test_read_file),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
