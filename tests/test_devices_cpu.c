/*
 * test_devices_cpu.c — the built-in cpu device and the host memory facts it
 * stands on: /proc/meminfo parsing, the tightest cgroup v2 limit (on a fake
 * tree), refusal past free memory with TL_ERR_DEVICE_OOM, copies at odd
 * offsets, and pinning with a failure that says why.
 */
#include "helpers/testutil.h"

#include "os/fault.h"
#include "os/meminfo.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The built-in cpu device is never unregistered: the registry's reference keeps it. */
static tl_device *cpu(void) {
    tl_device *d = NULL;
    assert_int_equal(tl_device_find("cpu", &d), TL_OK);
    tl_device_release(d);
    return d;
}

static void test_meminfo_parse(void **state) {
    (void)state;
    const char *t = "MemTotal:       24683620 kB\nMemFree:         1000 kB\n"
                    "MemAvailable:   24382368 kB\nHugePages_Total:       0\nBad:  x kB\n";
    uint64_t v = 0;
    assert_int_equal(tl__os_meminfo_field(t, "MemTotal", &v), 0);
    assert_true(v == 24683620ull * 1024);
    assert_int_equal(tl__os_meminfo_field(t, "MemAvailable", &v), 0);
    assert_true(v == 24382368ull * 1024);
    assert_int_equal(tl__os_meminfo_field(t, "HugePages_Total", &v), 0);
    assert_true(v == 0);
    assert_int_equal(tl__os_meminfo_field(t, "Mem", &v), ENOENT);
    assert_int_equal(tl__os_meminfo_field(t, "Nope", &v), ENOENT);
    assert_int_equal(tl__os_meminfo_field(t, "Bad", &v), EINVAL);

    tl__os_meminfo m;
    assert_int_equal(tl__os_meminfo_read(&m), 0);
    assert_true(m.mem_total > 0);
    assert_true(m.total <= m.mem_total);
    assert_true(m.free <= m.total);
    assert_true(m.free <= m.mem_available);
    if (!m.cg_limited) assert_true(m.cg_max == UINT64_MAX);
}

static void put(const char *dir, const char *name, const char *text) {
    char *p = tu_path(dir, name);
    tu_write_file(p, text, strlen(text));
    free(p);
}

static void test_cgroup_tightest(void **state) {
    (void)state;
    char *root = tu_tmpdir();
    char *a = tu_path(root, "a");
    char *b = tu_path(a, "b");
    assert_int_equal(mkdir(a, 0700), 0);
    assert_int_equal(mkdir(b, 0700), 0);
    bool lim;
    uint64_t max, cur;
    /* no limits anywhere */
    put(root, "memory.max", "max\n");
    put(b, "memory.max", "max\n");
    assert_int_equal(tl__os_cgroup_limit(root, b, &lim, &max, &cur), 0);
    assert_false(lim);
    assert_true(max == UINT64_MAX && cur == 0);
    /* a: 1000 - 400 = 600 of room; b: 2000 - 1900 = 100 -> b is the tighter */
    put(a, "memory.max", "1000\n");
    put(a, "memory.current", "400\n");
    put(b, "memory.max", "2000\n");
    put(b, "memory.current", "1900\n");
    assert_int_equal(tl__os_cgroup_limit(root, b, &lim, &max, &cur), 0);
    assert_true(lim);
    assert_true(max == 2000 && cur == 1900);
    /* b loosens: a is the tighter */
    put(b, "memory.current", "10\n");
    assert_int_equal(tl__os_cgroup_limit(root, b, &lim, &max, &cur), 0);
    assert_true(max == 1000 && cur == 400);
    /* over the limit: no room, not a negative number */
    put(a, "memory.current", "5000\n");
    assert_int_equal(tl__os_cgroup_limit(root, b, &lim, &max, &cur), 0);
    assert_true(max == 1000 && cur == 5000);
    assert_int_equal(tl__os_cgroup_limit(b, root, &lim, &max, &cur), EINVAL); /* dir outside root */
    free(a);
    free(b);
    tu_tmpdir_rm(root);
}

static void test_cpu_describe(void **state) {
    (void)state;
    tl_device_info info;
    assert_int_equal(tl_device_describe(cpu(), &info, sizeof info), TL_OK);
    assert_string_equal(info.name, "cpu");
    assert_int_equal(info.kind, TL_DEVICE_CPU);
    assert_true(info.host_pointer);
    assert_false(info.async);
    assert_true(info.total > 0 && info.free <= info.total);
    assert_int_equal(info.alignment, 64);
}

static void test_cpu_oom(void **state) {
    (void)state;
    tl_device *d = cpu();
    tl_device_info info;
    assert_int_equal(tl_device_describe(d, &info, sizeof info), TL_OK);
    tl_devptr p = 1;
    assert_int_equal(tl_device_alloc(d, info.total + 1, &p), TL_ERR_DEVICE_OOM);
    assert_true(p == 0);
    assert_non_null(strstr(tl_last_error(), "cpu"));
    assert_int_equal(tl_device_alloc(d, UINT64_MAX, &p), TL_ERR_DEVICE_OOM);
    tl__fault_arm(TL_FAULT_DEVICE_ALLOC, 1, ENOMEM);
    assert_int_equal(tl_device_alloc(d, 64, &p), TL_ERR_DEVICE_OOM);
    tl__fault_reset();
    assert_int_equal(tl_device_alloc(d, 64, &p), TL_OK);
    assert_true(p % 64 == 0);
    assert_int_equal(tl_device_free(d, p), TL_OK);
}

static void test_cpu_copies(void **state) {
    (void)state;
    tl_device *d = cpu();
    enum { N = 4099 };
    tl_devptr p;
    assert_int_equal(tl_device_alloc(d, N, &p), TL_OK);
    unsigned char src[N], back[N];
    unsigned seed = 7;
    for (int i = 0; i < N; i++)
        src[i] = (unsigned char)rand_r(&seed);
    assert_int_equal(tl_device_copy_to(d, p + 3, src + 5, N - 7), TL_OK);
    assert_memory_equal((unsigned char *)(uintptr_t)p + 3, src + 5, N - 7); /* host pointer */
    uint64_t t = 9;
    assert_int_equal(tl_device_copy_from_async(d, back + 1, p + 3, N - 7, &t), TL_OK);
    assert_true(t == 0); /* cpu copies are synchronous */
    assert_memory_equal(back + 1, src + 5, N - 7);
    assert_int_equal(tl_device_copy_to(d, p, NULL, 1), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_device_copy_to(d, p, NULL, 0), TL_OK);
    assert_int_equal(tl_device_free(d, p), TL_OK);
}

static void test_cpu_pin(void **state) {
    (void)state;
    tl_device *d = cpu();
    size_t n = 1 << 16;
    void *buf = NULL;
    assert_int_equal(posix_memalign(&buf, 4096, n), 0);
    tl_status s = tl_device_pin(d, buf, n);
    if (s == TL_OK) {
        assert_int_equal(tl_device_unpin(d, buf, n), TL_OK);
    } else {
        /* unprivileged with a small RLIMIT_MEMLOCK: the message says why */
        assert_int_equal(s, TL_ERR_NOMEM);
        assert_non_null(strstr(tl_last_error(), "RLIMIT_MEMLOCK"));
    }
    assert_int_equal(tl_device_pin(d, NULL, 10), TL_ERR_INVALID_ARG);
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_meminfo_parse), cmocka_unit_test(test_cgroup_tightest),
        cmocka_unit_test(test_cpu_describe),  cmocka_unit_test(test_cpu_oom),
        cmocka_unit_test(test_cpu_copies),    cmocka_unit_test(test_cpu_pin),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
