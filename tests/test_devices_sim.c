/*
 * test_devices_sim.c — the simulated GPU: capacity to the byte, the OOM code,
 * copies at odd sizes and offsets, handles that are not host memory, async
 * tickets in order, and the model clock (bandwidth, latency, overlap); large
 * copies (shared with helper threads) at odd sizes, into memory kept from
 * freed allocations; reading a range in place as a copy back would; the
 * check's hashes taken as bytes land, and forgotten on partial writes;
 * copies from a file's mapping cut short under it, an error and not a signal.
 */
#include "helpers/testutil.h"

#include "devices/devices.h"
#include "os/fault.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static tl_device *mk_sim(const char *name, uint64_t cap, double bw, double lat) {
    tl_sim_spec sp;
    memset(&sp, 0, sizeof sp);
    snprintf(sp.name, sizeof sp.name, "%s", name);
    sp.capacity = cap;
    sp.bandwidth = bw;
    sp.latency = lat;
    tl_device *d = NULL;
    assert_int_equal(tl_device_sim_create(&sp, &d), TL_OK);
    assert_non_null(d);
    return d;
}

static uint64_t free_of(tl_device *d) {
    tl_device_info info;
    assert_int_equal(tl_device_describe(d, &info, sizeof info), TL_OK);
    return info.free;
}

static void test_describe(void **state) {
    (void)state;
    tl_device *d = mk_sim("gpu0", 8ull << 30, 0, 0);
    tl_device_info info;
    assert_int_equal(tl_device_describe(d, &info, sizeof info), TL_OK);
    assert_string_equal(info.name, "gpu0");
    assert_string_equal(tl_device_name(d), "gpu0");
    assert_int_equal(info.kind, TL_DEVICE_SIM);
    assert_string_equal(tl_device_kind_name(info.kind), "sim");
    assert_true(info.total == 8ull << 30);
    assert_true(info.free == 8ull << 30);
    assert_false(info.host_pointer);
    assert_true(info.async);
    assert_int_equal(info.alignment, 256);
    tl_device_release(d);
}

static void test_capacity_exact(void **state) {
    (void)state;
    tl_device *d = mk_sim("cap", 1000, 0, 0);
    tl_devptr a, b, c, x;
    assert_int_equal(tl_device_alloc(d, 999, &a), TL_OK);
    assert_true(free_of(d) == 1);
    assert_int_equal(tl_device_alloc(d, 2, &x), TL_ERR_DEVICE_OOM);
    assert_true(x == 0);
    assert_non_null(strstr(tl_last_error(), "out of memory"));
    assert_int_equal(tl_device_alloc(d, 1, &b), TL_OK);
    assert_true(free_of(d) == 0);
    assert_int_equal(tl_device_alloc(d, 1, &x), TL_ERR_DEVICE_OOM);
    assert_int_equal(tl_device_free(d, a), TL_OK);
    assert_true(free_of(d) == 999);
    assert_int_equal(tl_device_alloc(d, 1000, &x), TL_ERR_DEVICE_OOM);
    assert_int_equal(tl_device_alloc(d, 999, &c), TL_OK);
    assert_true(free_of(d) == 0);
    assert_int_equal(tl_device_free(d, b), TL_OK);
    assert_int_equal(tl_device_free(d, c), TL_OK);
    assert_true(free_of(d) == 1000);

    /* alignment padding costs nothing: 1000 one-byte allocations fit exactly */
    tl_devptr *p = calloc(1000, sizeof *p);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(tl_device_alloc(d, 1, &p[i]), TL_OK);
        assert_true(p[i] % 256 == 0);
        if (i) assert_true(p[i] != p[i - 1]);
    }
    assert_true(free_of(d) == 0);
    assert_int_equal(tl_device_alloc(d, 1, &x), TL_ERR_DEVICE_OOM);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(tl_device_free(d, p[i]), TL_OK);
    assert_true(free_of(d) == 1000);
    free(p);
    /* odd sizes summing to the capacity */
    uint64_t sizes[] = {1, 3, 7, 255, 257, 477};
    tl_devptr q[6];
    for (int i = 0; i < 6; i++)
        assert_int_equal(tl_device_alloc(d, sizes[i], &q[i]), TL_OK);
    assert_true(free_of(d) == 0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(tl_device_free(d, q[i]), TL_OK);
    assert_int_equal(tl_device_alloc(d, 0, &x), TL_ERR_INVALID_ARG);
    tl_device_release(d);
}

static void test_fault_injection(void **state) {
    (void)state;
    tl_device *d = mk_sim("flt", 1 << 20, 0, 0);
    tl_devptr a = 0, b = 0;
    tl__fault_arm(TL_FAULT_DEVICE_ALLOC, 2, ENOMEM);
    assert_int_equal(tl_device_alloc(d, 100, &a), TL_OK);
    assert_int_equal(tl_device_alloc(d, 100, &b), TL_ERR_DEVICE_OOM);
    assert_true(b == 0);
    tl__fault_reset();
    assert_int_equal(tl_device_alloc(d, 100, &b), TL_OK);
    assert_true(free_of(d) == (1 << 20) - 200);
    tl_device_free(d, a);
    tl_device_free(d, b);
    tl_device_release(d);
}

static void fill_random(unsigned char *p, size_t n, unsigned *seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)rand_r(seed);
}

static void test_copies_odd(void **state) {
    (void)state;
    enum { N = 10007 };
    tl_device *d = mk_sim("cp", 1 << 20, 0, 0);
    tl_devptr p;
    assert_int_equal(tl_device_alloc(d, N, &p), TL_OK);
    unsigned char *shadow = calloc(N, 1), *buf = malloc(N), *back = malloc(N + 1);
    unsigned seed = 12345;
    fill_random(shadow, N, &seed);
    assert_int_equal(tl_device_copy_to(d, p, shadow, N), TL_OK);
    for (int it = 0; it < 300; it++) {
        size_t off = (size_t)rand_r(&seed) % N;
        size_t len = 1 + (size_t)rand_r(&seed) % (N - off);
        fill_random(buf, len, &seed);
        uint64_t t = 0;
        if (it % 2)
            assert_int_equal(tl_device_copy_to(d, p + off, buf, len), TL_OK);
        else
            assert_int_equal(tl_device_copy_to_async(d, p + off, buf, len, &t), TL_OK);
        assert_int_equal(tl_device_wait(d, t), TL_OK);
        memcpy(shadow + off, buf, len);
        off = (size_t)rand_r(&seed) % N;
        len = 1 + (size_t)rand_r(&seed) % (N - off);
        memset(back, 0, len);
        if (it % 3)
            assert_int_equal(tl_device_copy_from(d, back + 1, p + off, len), TL_OK);
        else {
            assert_int_equal(tl_device_copy_from_async(d, back + 1, p + off, len, &t), TL_OK);
            assert_int_equal(tl_device_wait(d, t), TL_OK);
        }
        assert_memory_equal(back + 1, shadow + off, len);
    }
    assert_int_equal(tl_device_copy_from(d, back, p, N), TL_OK);
    assert_memory_equal(back, shadow, N);
    /* outside the allocation: refused */
    assert_int_equal(tl_device_copy_from(d, back, p + N - 10, 11), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_device_copy_to(d, p - 1, buf, 1), TL_ERR_INVALID_ARG);
    /* a handle is not a host pointer, and a stale one is caught */
    tl_device_info info;
    tl_device_describe(d, &info, sizeof info);
    assert_false(info.host_pointer);
    assert_int_equal(tl_device_free(d, p + 1), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_device_free(d, p), TL_OK);
    assert_int_equal(tl_device_copy_to(d, p, buf, 1), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_device_free(d, p), TL_ERR_INVALID_ARG);
    free(shadow);
    free(buf);
    free(back);
    tl_device_release(d);
}

/*
 * Copies from 2 MiB run in pieces on the sim's helper threads: sizes around the piece and the
 * threshold, synchronous and async, both ways, in allocations made again and again of the same
 * and of other sizes (the host memory of freed ones is reused), each byte checked against a
 * shadow copy.
 */
static void test_large_copies_reused_memory(void **state) {
    (void)state;
    const size_t sizes[] = {(2u << 20) - 1, 2u << 20, (2u << 20) + 1, (3u << 20) + 12345,
                            (256u << 10) * 9 + 7, 5u << 20};
    const size_t ns = sizeof sizes / sizeof *sizes, max = 5u << 20;
    tl_device *d = mk_sim("big", 12u << 20, 0, 0);
    unsigned char *src = malloc(max), *back = malloc(max);
    unsigned seed = 99;
    for (int round = 0; round < 3; round++) {
        tl_devptr p[2];
        for (size_t i = 0; i < ns; i++) {
            size_t n = sizes[(i + (size_t)round) % ns];
            assert_int_equal(tl_device_alloc(d, n, &p[i % 2]), TL_OK);
            fill_random(src, n, &seed);
            uint64_t t = 0;
            if ((i + (size_t)round) % 2)
                assert_int_equal(tl_device_copy_to(d, p[i % 2], src, n), TL_OK);
            else
                assert_int_equal(tl_device_copy_to_async(d, p[i % 2], src, n, &t), TL_OK);
            assert_int_equal(tl_device_wait(d, t), TL_OK);
            memset(back, 0, n);
            if (i % 3) {
                assert_int_equal(tl_device_copy_from(d, back, p[i % 2], n), TL_OK);
            } else {
                assert_int_equal(tl_device_copy_from_async(d, back, p[i % 2], n, &t), TL_OK);
                assert_int_equal(tl_device_wait(d, t), TL_OK);
            }
            assert_memory_equal(back, src, n);
            const unsigned char *in = tl__sim_read_in_place(d, p[i % 2], n);
            assert_non_null(in);
            assert_memory_equal(in, src, n);
            assert_int_equal(tl_device_free(d, p[i % 2]), TL_OK);
            assert_int_equal(free_of(d), 12u << 20);
        }
    }
    free(src);
    free(back);
    tl_device_release(d);
}

/* Reading in place: the bytes a copy back would give, the model time it would take. */
static void test_read_in_place(void **state) {
    (void)state;
    double bw = 1e9, lat = 1e-3;
    tl_device *d = mk_sim("rip", 1 << 24, bw, lat);
    tl_devptr p;
    assert_int_equal(tl_device_alloc(d, 1 << 20, &p), TL_OK);
    unsigned char *buf = malloc(1 << 20);
    unsigned seed = 7;
    fill_random(buf, 1 << 20, &seed);
    uint64_t t;
    assert_int_equal(tl_device_copy_to_async(d, p, buf, 1 << 20, &t), TL_OK);
    /* queued: reading in place waits for it (model time), then for its own bytes */
    const unsigned char *in = tl__sim_read_in_place(d, p + 100, 1000);
    assert_non_null(in);
    assert_memory_equal(in, buf + 100, 1000);
    double c;
    assert_int_equal(tl_device_sim_clock(d, &c), TL_OK);
    double want = (lat + (double)(1 << 20) / bw) + (lat + 1000.0 / bw);
    assert_true(fabs(c - want) < 1e-12);
    /* outside one live allocation, or not a sim: NULL */
    assert_null(tl__sim_read_in_place(d, p + (1 << 20) - 10, 11));
    tl_device *cpu = NULL;
    assert_int_equal(tl_device_find("cpu", &cpu), TL_OK);
    assert_null(tl__sim_read_in_place(cpu, (tl_devptr)(uintptr_t)buf, 1));
    tl_device_release(cpu);
    tl_device_free(d, p);
    free(buf);
    tl_device_release(d);
}

/* The check's hash as xxHash's documentation defines its parts: XXH3 of each 1 MiB, then of those.
 */
static uint64_t tree_hash(const unsigned char *p, size_t n) {
    uint64_t leaves[16];
    size_t k = 0;
    for (size_t o = 0; o < n; o += 1u << 20)
        leaves[k++] = XXH3_64bits(p + o, n - o < (1u << 20) ? n - o : 1u << 20);
    return XXH3_64bits(leaves, k * sizeof *leaves);
}

/*
 * Hashes taken as the bytes land: the tree's hash of a whole allocation written whole (at once,
 * leaf by leaf, asynchronously); none after a partial write of a leaf until that leaf is written
 * whole again, none for a range that is not one whole allocation, and none for what was written
 * while landing hashes were off. Large writes go through the helper threads.
 */
static void test_landed_hashes(void **state) {
    (void)state;
    const size_t n = (5u << 20) / 2 + 4097; /* 3 leaves, the last partial */
    tl_device *d = mk_sim("land", 8u << 20, 0, 0);
    unsigned char *a = malloc(n);
    unsigned seed = 5;
    fill_random(a, n, &seed);
    tl_devptr p;
    uint64_t h = 0, t;
    assert_int_equal(tl_device_alloc(d, n, &p), TL_OK);
    tl__sim_hash_landing(d, true);
    assert_false(tl__sim_landed_hash(d, p, n, &h)); /* nothing written yet */
    assert_int_equal(tl_device_copy_to(d, p, a, n), TL_OK);
    assert_true(tl__sim_landed_hash(d, p, n, &h));
    assert_int_equal(h, tree_hash(a, n));
    assert_false(tl__sim_landed_hash(d, p, n - 1, &h));
    assert_false(tl__sim_landed_hash(d, p + 256, n - 256, &h));
    /* a partial write of leaf 1: forgotten, the bytes in place differ */
    a[(1u << 20) + 7] ^= 1;
    assert_int_equal(tl_device_copy_to(d, p + (1u << 20) + 7, a + (1u << 20) + 7, 1), TL_OK);
    assert_false(tl__sim_landed_hash(d, p, n, &h));
    /* leaf 1 written whole again, asynchronously: held once the copy lands */
    a[(1u << 20) + 9] ^= 1;
    assert_int_equal(tl_device_copy_to_async(d, p + (1u << 20), a + (1u << 20), 1u << 20, &t),
                     TL_OK);
    assert_true(tl__sim_landed_hash(d, p, n, &h));
    assert_int_equal(h, tree_hash(a, n));
    /* the tail leaf rewritten piecewise: not whole in one write, so not held */
    assert_int_equal(tl_device_copy_to(d, p + (2u << 20), a + (2u << 20), 100), TL_OK);
    assert_false(tl__sim_landed_hash(d, p, n, &h));
    assert_int_equal(tl_device_copy_to(d, p + (2u << 20), a + (2u << 20), n - (2u << 20)), TL_OK);
    assert_true(tl__sim_landed_hash(d, p, n, &h));
    assert_int_equal(h, tree_hash(a, n));
    /* written while off: forgotten, and not taken again */
    tl__sim_hash_landing(d, false);
    assert_int_equal(tl_device_copy_to(d, p, a, n), TL_OK);
    assert_false(tl__sim_landed_hash(d, p, n, &h));
    tl__sim_hash_landing(d, true);
    /* a new allocation in the same memory holds nothing of the old one's */
    assert_int_equal(tl_device_free(d, p), TL_OK);
    assert_int_equal(tl_device_alloc(d, n, &p), TL_OK);
    assert_false(tl__sim_landed_hash(d, p, n, &h));
    tl__sim_hash_landing(d, false);
    tl_device_free(d, p);
    free(a);
    tl_device_release(d);
}

/*
 * Copies from a file's mapping cut short under it: the bytes before the cut land, the rest is
 * TL_ERR_CHANGED (synchronous: at the copy; queued: at the wait), never a Bus error; a mapping
 * intact copies as any host memory; other devices say unsupported.
 */
static void test_copy_from_mapping(void **state) {
    (void)state;
    char *dir = tu_tmpdir(), *path = tu_path(dir, "m.bin");
    const size_t n = 3u << 20;
    unsigned char *a = malloc(n), *back = malloc(n);
    unsigned seed = 11;
    fill_random(a, n, &seed);
    tu_write_file(path, a, n);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    const unsigned char *map = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
    assert_true(map != MAP_FAILED);
    tl_device *d = mk_sim("mapped", 8u << 20, 0, 0);
    tl_devptr p;
    uint64_t t = 0;
    assert_int_equal(tl_device_alloc(d, n, &p), TL_OK);
    assert_int_equal(tl__sim_copy_to_mapped(d, p, map, n, NULL), TL_OK);
    assert_int_equal(tl_device_copy_from(d, back, p, n), TL_OK);
    assert_memory_equal(back, a, n);
    assert_int_equal(ftruncate(fd, 1u << 20), 0);
    assert_int_equal(tl__sim_copy_to_mapped(d, p, map, n, NULL), TL_ERR_CHANGED);
    assert_int_equal(tl__sim_copy_to_mapped(d, p, map, n, &t), TL_OK);
    assert_true(t > 0);
    assert_int_equal(tl_device_wait(d, t), TL_ERR_CHANGED);
    assert_non_null(strstr(tl_last_error(), "shrank"));
    assert_int_equal(tl_device_wait(d, t), TL_OK); /* reported once */
    assert_int_equal(tl_device_copy_from(d, back, p, 1u << 20), TL_OK);
    assert_memory_equal(back, a, 1u << 20);
    tl_device *cpu = NULL;
    assert_int_equal(tl_device_find("cpu", &cpu), TL_OK);
    assert_int_equal(tl__sim_copy_to_mapped(cpu, (tl_devptr)(uintptr_t)back, a, 1, NULL),
                     TL_ERR_UNSUPPORTED);
    tl_device_release(cpu);
    tl_device_free(d, p);
    tl_device_release(d);
    munmap((void *)map, n);
    close(fd);
    free(a);
    free(back);
    tu_tmpdir_rm(dir);
    free(path);
}

static void test_bandwidth_clock(void **state) {
    (void)state;
    double bw = 16.0 * (1ull << 30), lat = 10e-6;
    tl_device *d = mk_sim("bw", 1 << 26, bw, lat);
    tl_devptr p;
    assert_int_equal(tl_device_alloc(d, 1 << 24, &p), TL_OK);
    unsigned char *buf = calloc(1 << 24, 1);
    double c;
    assert_int_equal(tl_device_sim_clock(d, &c), TL_OK);
    assert_true(c == 0.0);
    assert_int_equal(tl_device_copy_to(d, p, buf, 1 << 24), TL_OK);
    assert_int_equal(tl_device_sim_clock(d, &c), TL_OK);
    double want = lat + (double)(1 << 24) / bw; /* 10 us + 1/1024 s */
    assert_true(fabs(c - want) < 1e-12);
    assert_int_equal(tl_device_copy_from(d, buf, p, 1 << 20), TL_OK);
    assert_int_equal(tl_device_sim_clock(d, &c), TL_OK);
    want += lat + (double)(1 << 20) / bw;
    assert_true(fabs(c - want) < 1e-12);
    /* not a sim */
    tl_device *cpu = NULL;
    assert_int_equal(tl_device_find("cpu", &cpu), TL_OK);
    assert_int_equal(tl_device_sim_clock(cpu, &c), TL_ERR_INVALID_ARG);
    tl_device_release(cpu);
    tl_device_free(d, p);
    free(buf);
    tl_device_release(d);
}

static void test_async_order_and_overlap(void **state) {
    (void)state;
    /* 1e6 bytes at 1e9 B/s + 1 ms latency = 2 ms per copy */
    tl_device *d = mk_sim("as", 1 << 24, 1e9, 1e-3);
    tl_devptr p;
    assert_int_equal(tl_device_alloc(d, 3000000, &p), TL_OK);
    unsigned char *buf = calloc(3000000, 1);
    uint64_t t[3];
    for (int i = 0; i < 3; i++) {
        memset(buf + i * 1000000, i + 1, 1000000);
        assert_int_equal(tl_device_copy_to_async(d, p + (uint64_t)i * 1000000, buf + i * 1000000,
                                                 1000000, &t[i]),
                         TL_OK);
        assert_true(t[i] > 0);
        if (i) assert_true(t[i] > t[i - 1]);
    }
    bool done;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tl_device_poll(d, t[i], &done), TL_OK);
        assert_false(done);
    }
    assert_int_equal(tl_device_sim_advance(d, 0.0045), TL_OK); /* compute while copying */
    bool dn[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(tl_device_poll(d, t[i], &dn[i]), TL_OK);
    assert_true(dn[0]);
    assert_true(dn[1]);
    assert_false(dn[2]);
    assert_int_equal(tl_device_wait(d, t[2]), TL_OK);
    double c;
    tl_device_sim_clock(d, &c);
    assert_true(fabs(c - 0.006) < 1e-12); /* overlapped: max(4.5 ms, 6 ms) */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tl_device_poll(d, t[i], &done), TL_OK);
        assert_true(done);
    }
    /* waiting on an older ticket than the clock is immediate; a later queue starts now */
    assert_int_equal(tl_device_wait(d, t[0]), TL_OK);
    uint64_t t4;
    assert_int_equal(tl_device_copy_from_async(d, buf, p, 1000000, &t4), TL_OK);
    assert_true(t4 > t[2]);
    assert_int_equal(tl_device_wait(d, t4), TL_OK);
    tl_device_sim_clock(d, &c);
    assert_true(fabs(c - 0.008) < 1e-12);
    for (int i = 0; i < 1000000; i++)
        if (buf[i] != 1) fail_msg("byte %d", i);
    /* waiting on a ticket never issued */
    assert_int_equal(tl_device_wait(d, t4 + 100), TL_ERR_INVALID_ARG);
    /* ticket 0 is always done */
    assert_int_equal(tl_device_poll(d, 0, &done), TL_OK);
    assert_true(done);
    /* a sync copy waits for the queue */
    uint64_t t5;
    assert_int_equal(tl_device_copy_to_async(d, p, buf, 1000000, &t5), TL_OK); /* ends 10 ms */
    assert_int_equal(tl_device_copy_to(d, p, buf, 1000000), TL_OK);            /* ends 12 ms */
    tl_device_sim_clock(d, &c);
    assert_true(fabs(c - 0.012) < 1e-12);
    assert_int_equal(tl_device_poll(d, t5, &done), TL_OK);
    assert_true(done);
    tl_device_free(d, p);
    free(buf);
    tl_device_release(d);
}

static void test_async_data_moves_at_completion(void **state) {
    (void)state;
    tl_device *d = mk_sim("late", 1 << 20, 1e6, 0); /* 1 MB/s: 1000 bytes take 1 ms */
    tl_devptr p;
    assert_int_equal(tl_device_alloc(d, 1000, &p), TL_OK);
    unsigned char a[1000], b[1000];
    memset(a, 1, sizeof a);
    uint64_t t;
    assert_int_equal(tl_device_copy_to_async(d, p, a, 1000, &t), TL_OK);
    memset(a, 2, sizeof a); /* the caller's bug: reusing the buffer before the ticket is done */
    assert_int_equal(tl_device_wait(d, t), TL_OK);
    memset(b, 0, sizeof b);
    assert_int_equal(tl_device_copy_from_async(d, b, p, 1000, &t), TL_OK);
    bool done;
    assert_int_equal(tl_device_poll(d, t, &done), TL_OK);
    assert_false(done);
    assert_int_equal(b[0], 0); /* nothing has arrived yet */
    assert_int_equal(tl_device_sim_advance(d, 0.0005), TL_OK);
    assert_int_equal(tl_device_poll(d, t, &done), TL_OK);
    assert_false(done);
    assert_int_equal(tl_device_sim_advance(d, 0.0005), TL_OK);
    assert_int_equal(tl_device_poll(d, t, &done), TL_OK);
    assert_true(done);
    assert_int_equal(b[0], 2); /* the device saw the bytes as they were at completion */
    assert_int_equal(b[999], 2);
    /* free waits for the queue, like cudaFree */
    memset(b, 0, sizeof b);
    assert_int_equal(tl_device_copy_from_async(d, b, p, 1000, &t), TL_OK);
    assert_int_equal(tl_device_free(d, p), TL_OK);
    assert_int_equal(b[500], 2);
    assert_int_equal(tl_device_poll(d, t, &done), TL_OK);
    assert_true(done);
    tl_device_release(d);
}

static void test_spec_parse(void **state) {
    (void)state;
    tl_sim_spec sp[8];
    size_t n = 99;
    assert_int_equal(tl_parse_sim_spec("gpu0=8G,gpu1=4G", sp, 8, &n), TL_OK);
    assert_int_equal(n, 2);
    assert_string_equal(sp[0].name, "gpu0");
    assert_true(sp[0].capacity == 8ull << 30);
    assert_string_equal(sp[1].name, "gpu1");
    assert_true(sp[1].capacity == 4ull << 30);
    assert_true(sp[0].bandwidth == 0 && sp[0].latency == 0);
    assert_int_equal(
        tl_parse_sim_spec(" a = 1.5G : bw=16G : lat=10us , cuda0=512MiB,x=1000", sp, 8, &n),
        TL_OK);
    assert_int_equal(n, 3);
    assert_string_equal(sp[0].name, "a");
    assert_true(sp[0].capacity == 3ull << 29);
    assert_true(sp[0].bandwidth == 16.0 * (1ull << 30));
    assert_true(fabs(sp[0].latency - 10e-6) < 1e-15);
    assert_string_equal(sp[1].name, "cuda0");
    assert_true(sp[1].capacity == 512ull << 20);
    assert_true(sp[2].capacity == 1000);
    assert_int_equal(tl_parse_sim_spec("g=1K:lat=2ms", sp, 8, &n), TL_OK);
    assert_true(sp[0].capacity == 1024 && fabs(sp[0].latency - 2e-3) < 1e-15);

    const char *bad[] = {
        "",
        "gpu0",
        "gpu0=",
        "gpu0=abc",
        "gpu0=8X",
        "gpu0=-1G",
        "=8G",
        " =8G",
        "gpu0=8G,",
        ",gpu0=8G",
        "gpu0=8G,gpu0=4G",
        "gpu0=8G,GPU0=4G",
        "gpu 0=8G",
        "gpu0=99999999999T",
        "gpu0=8G:foo=1",
        "gpu0=8G:bw=0",
        "gpu0=8G:lat=x",
        "gpu0=8G:",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=1G",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tl_status s = tl_parse_sim_spec(bad[i], sp, 8, &n);
        if (s != TL_ERR_INVALID_ARG) fail_msg("spec '%s' parsed (status %d)", bad[i], s);
        assert_true(strlen(tl_last_error()) > 0);
    }
    assert_int_equal(tl_parse_sim_spec("gpu0=abc", sp, 8, &n), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "bad size"));
    assert_int_equal(tl_parse_sim_spec("=8G", sp, 8, &n), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "empty device name"));
    assert_int_equal(tl_parse_sim_spec("gpu0=1G,Gpu0=2G", sp, 8, &n), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "duplicate"));
    assert_int_equal(tl_parse_sim_spec("a=1,b=1,c=1", sp, 2, &n), TL_ERR_INVALID_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_capacity_exact),
        cmocka_unit_test(test_fault_injection),
        cmocka_unit_test(test_copies_odd),
        cmocka_unit_test(test_large_copies_reused_memory),
        cmocka_unit_test(test_read_in_place),
        cmocka_unit_test(test_landed_hashes),
        cmocka_unit_test(test_copy_from_mapping),
        cmocka_unit_test(test_bandwidth_clock),
        cmocka_unit_test(test_async_order_and_overlap),
        cmocka_unit_test(test_async_data_moves_at_completion),
        cmocka_unit_test(test_spec_parse),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
