/*
 * test_io_engine.c — the mover engine's order and cancellation, seen from the
 * device side: a gated test device (helpers/gatedev.h) logs each chunk copied
 * onto it and holds a chunk while the test queues more work or cancels. With
 * one worker, demand batches run before prefetch batches queued earlier; a
 * cancelled batch moves no chunk after the cancel returns (the one in
 * progress finishes) and reports TL_ERR_CANCELLED, a cancelled batch that
 * never started finishes at once; every byte that arrived is the source's.
 */
#include "testutil.h"

#include "gatedev.h"
#include "io/io.h"

#include <stdlib.h>
#include <string.h>

#define STAGING (16u << 10) /* chunks of 8 KiB: the staging buffer less two alignment blocks */
#define CHUNK (8u << 10)

typedef struct region {
    unsigned char *src;
    tl_devptr dptr;
    uint64_t len;
} region;

static region make_region(tu_gatedev *g, uint64_t len, unsigned seed) {
    region r = {malloc(len), 0, len};
    for (uint64_t i = 0; i < len; i++)
        r.src[i] = (unsigned char)(i * 31 + seed * 7 + (i >> 9));
    assert_int_equal(tl_device_alloc(tu_gatedev_device(g), len, &r.dptr), TL_OK);
    return r;
}

static void free_region(tu_gatedev *g, region *r) {
    tl_device_free(tu_gatedev_device(g), r->dptr);
    free(r->src);
}

static tl__io_xfer to_dev(tu_gatedev *g, const region *r) {
    tl__io_xfer x = {.len = r->len, .path = "test", .name = "region"};
    x.src.kind = TL_IO_HOST;
    x.src.host = r->src;
    x.dst.kind = TL_IO_DEVICE;
    x.dst.dev = tu_gatedev_device(g);
    x.dst.dptr = r->dptr;
    return x;
}

static bool in_region(const region *r, tl_devptr p) {
    return p >= r->dptr && p < r->dptr + r->len;
}

static tl__io_engine *one_worker(void) {
    tl__io_options o = {.threads = 1, .staging_count = 1, .staging_size = STAGING};
    tl__io_engine *e = NULL;
    assert_int_equal(tl__io_engine_create(&o, &e), TL_OK);
    return e;
}

/*
 * A demand batch holds the only worker; meanwhile a prefetch batch and then
 * a demand batch are queued. Every chunk of the later demand batch must be
 * copied before any chunk of the earlier prefetch batch.
 */
static void test_demand_before_prefetch(void **st) {
    (void)st;
    tu_gatedev *g = tu_gatedev_add("ioprio0", 8 << 20);
    tl__io_engine *e = one_worker();
    region a = make_region(g, 16 * CHUNK, 1), p = make_region(g, 16 * CHUNK, 2),
           d = make_region(g, 16 * CHUNK, 3);
    tl__io_xfer xa = to_dev(g, &a), xp = to_dev(g, &p), xd = to_dev(g, &d);
    tl__io_batch *ba, *bp, *bd;
    tu_gatedev_hold(g, 1);
    assert_int_equal(tl__io_submit(e, &xa, 1, TL_IO_DEMAND, NULL, NULL, &ba), TL_OK);
    tu_gatedev_wait_held(g, 1); /* the worker is inside a's first chunk */
    assert_int_equal(tl__io_submit(e, &xp, 1, TL_IO_PREFETCH, NULL, NULL, &bp), TL_OK);
    assert_int_equal(tl__io_submit(e, &xd, 1, TL_IO_DEMAND, NULL, NULL, &bd), TL_OK);
    tu_gatedev_open(g);
    tl__io_batch *bs[3] = {ba, bp, bd};
    for (int i = 0; i < 3; i++) {
        tl__io_wait(bs[i], -1, NULL);
        assert_int_equal(tl__io_status(bs[i]), TL_OK);
        tl__io_batch_destroy(bs[i]);
    }
    tu_gatecopy log[64];
    size_t n = tu_gatedev_log(g, log, 64);
    assert_int_equal(n, 48);
    size_t last_d = 0, first_p = n, n_d = 0, n_p = 0, n_a = 0;
    for (size_t i = 0; i < n; i++) {
        if (in_region(&d, log[i].dst)) last_d = i, n_d++;
        if (in_region(&p, log[i].dst) && first_p == n) first_p = i;
        n_p += in_region(&p, log[i].dst);
        n_a += in_region(&a, log[i].dst);
    }
    assert_int_equal(n_a, 16);
    assert_int_equal(n_d, 16);
    assert_int_equal(n_p, 16);
    if (last_d > first_p)
        fail_msg("a prefetch chunk (copy %zu) went before a demand chunk (copy %zu)", first_p,
                 last_d);
    /* and the bytes are the sources' */
    region *rs[3] = {&a, &p, &d};
    unsigned char *back = malloc(16 * CHUNK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tl_device_copy_from(tu_gatedev_device(g), back, rs[i]->dptr, rs[i]->len),
                         TL_OK);
        assert_memory_equal(back, rs[i]->src, rs[i]->len);
        free_region(g, rs[i]);
    }
    free(back);
    tl__io_engine_destroy(e);
    tu_gatedev_remove(g);
}

/*
 * A batch of 256 chunks is cancelled while its first chunk is being copied:
 * that chunk finishes, no other one starts, and the batch says cancelled.
 */
static void test_cancel_mid_batch(void **st) {
    (void)st;
    for (int workers = 1; workers <= 2; workers++) {
        tu_gatedev *g = tu_gatedev_add(workers == 1 ? "iocancel1" : "iocancel2", 8 << 20);
        tl__io_options o = {.threads = (unsigned)workers,
                            .staging_count = (unsigned)workers,
                            .staging_size = STAGING};
        tl__io_engine *e = NULL;
        assert_int_equal(tl__io_engine_create(&o, &e), TL_OK);
        region r = make_region(g, 256 * CHUNK, 4);
        tl__io_xfer x = to_dev(g, &r);
        tl__io_batch *b;
        tu_gatedev_hold(g, (unsigned)workers);
        assert_int_equal(tl__io_submit(e, &x, 1, TL_IO_DEMAND, NULL, NULL, &b), TL_OK);
        tu_gatedev_wait_held(g, (unsigned)workers); /* each worker holds one chunk */
        tl__io_cancel(b);
        size_t before = tu_gatedev_copies(g);
        assert_int_equal(before, 0);
        tu_gatedev_open(g);
        tl__io_wait(b, -1, NULL);
        assert_int_equal(tl__io_status(b), TL_ERR_CANCELLED);
        size_t after = tu_gatedev_copies(g);
        print_message("%d worker(s): %zu of 256 chunks copied after the cancel\n", workers, after);
        if (after > (size_t)workers)
            fail_msg("%zu chunks copied after the cancel; only the %d in progress may finish",
                     after, workers);
        assert_int_equal(tl__io_done_bytes(b), (uint64_t)after * CHUNK);
        tl__io_batch_destroy(b);
        free_region(g, &r);
        tl__io_engine_destroy(e);
        tu_gatedev_remove(g);
    }
}

/*
 * A batch still queued behind one that holds the only worker is cancelled:
 * it finishes at once (no worker needs to come to it), cancelled, and none
 * of its chunks is ever copied; the batch ahead completes.
 */
static void test_cancel_queued_batch(void **st) {
    (void)st;
    tu_gatedev *g = tu_gatedev_add("iocancelq", 8 << 20);
    tl__io_engine *e = one_worker();
    region a = make_region(g, 4 * CHUNK, 5), q = make_region(g, 64 * CHUNK, 6);
    tl__io_xfer xa = to_dev(g, &a), xq = to_dev(g, &q);
    tl__io_batch *ba, *bq;
    tu_gatedev_hold(g, 1);
    assert_int_equal(tl__io_submit(e, &xa, 1, TL_IO_DEMAND, NULL, NULL, &ba), TL_OK);
    tu_gatedev_wait_held(g, 1);
    assert_int_equal(tl__io_submit(e, &xq, 1, TL_IO_DEMAND, NULL, NULL, &bq), TL_OK);
    tl__io_cancel(bq);
    bool done = false;
    tl__io_wait(bq, 0, &done); /* no waiting: it must be finished already */
    if (!done) fail_msg("a cancelled batch that never started is not finished");
    assert_int_equal(tl__io_status(bq), TL_ERR_CANCELLED);
    tu_gatedev_open(g);
    tl__io_wait(ba, -1, NULL);
    assert_int_equal(tl__io_status(ba), TL_OK);
    tu_gatecopy log[64];
    size_t n = tu_gatedev_log(g, log, 64);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++)
        assert_true(in_region(&a, log[i].dst));
    assert_int_equal(tl__io_done_bytes(bq), 0);
    tl__io_batch_destroy(ba);
    tl__io_batch_destroy(bq);
    free_region(g, &a);
    free_region(g, &q);
    tl__io_engine_destroy(e);
    tu_gatedev_remove(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demand_before_prefetch),
        cmocka_unit_test(test_cancel_mid_batch),
        cmocka_unit_test(test_cancel_queued_batch),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
