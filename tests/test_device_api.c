/*
 * test_device_api.c — the device API as an engine uses it: errors its own
 * device reports (with and without a message of its own), a vtable from an
 * older, shorter tl_device_ops, and handles from tl_device_find staying valid
 * while another thread unregisters the device.
 */
#include "helpers/testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ---- a device whose alloc fails, with or without saying why ---- */
typedef struct failing {
    bool say_why;
} failing;

static tl_status f_describe(void *self, tl_device_info *out) {
    (void)self;
    snprintf(out->name, sizeof out->name, "enginegpu");
    out->kind = TL_DEVICE_OTHER;
    out->total = out->free = 1 << 20;
    return TL_OK;
}
static tl_status f_alloc(void *self, uint64_t size, tl_devptr *out) {
    failing *f = self;
    (void)out;
    if (f->say_why)
        return tl_set_error(TL_ERR_DEVICE_OOM, "enginegpu: pool exhausted asking for %llu bytes",
                            (unsigned long long)size);
    return TL_ERR_DEVICE_OOM;
}
static tl_status f_dealloc(void *self, tl_devptr p) {
    (void)self;
    (void)p;
    return TL_OK;
}
static tl_status f_copy_to(void *self, tl_devptr dst, const void *src, uint64_t n) {
    (void)self, (void)dst, (void)src, (void)n;
    return TL_ERR_DEVICE;
}
static tl_status f_copy_from(void *self, void *dst, tl_devptr src, uint64_t n) {
    (void)self, (void)dst, (void)src, (void)n;
    return TL_OK;
}

static tl_device *failing_device(failing *f) {
    tl_device_ops ops;
    tl_device_ops_init(&ops);
    ops.describe = f_describe;
    ops.alloc = f_alloc;
    ops.dealloc = f_dealloc;
    ops.copy_to = f_copy_to;
    ops.copy_from = f_copy_from;
    /* the library keeps the pointer: static storage */
    static tl_device_ops kept;
    kept = ops;
    tl_device *d = NULL;
    assert_int_equal(tl_device_create(&kept, f, &d), TL_OK);
    return d;
}

static void test_device_error_with_message(void **state) {
    (void)state;
    failing f = {.say_why = true};
    tl_device *d = failing_device(&f);
    tl_devptr p = 1;
    assert_int_equal(tl_device_alloc(d, 4096, &p), TL_ERR_DEVICE_OOM);
    assert_string_equal(tl_last_error(), "enginegpu: pool exhausted asking for 4096 bytes");
    tl_device_release(d);
}

static void test_device_error_without_message(void **state) {
    (void)state;
    failing f = {.say_why = false};
    tl_device *d = failing_device(&f);
    /* a stale message from an earlier, unrelated failure */
    tl_device *none = NULL;
    assert_int_equal(tl_device_find("no-such-device", &none), TL_ERR_NOT_FOUND);
    assert_non_null(strstr(tl_last_error(), "no-such-device"));
    tl_devptr p = 1;
    assert_int_equal(tl_device_alloc(d, 4096, &p), TL_ERR_DEVICE_OOM);
    const char *msg = tl_last_error();
    assert_null(strstr(msg, "no-such-device"));
    assert_non_null(strstr(msg, "enginegpu"));
    assert_non_null(strstr(msg, "alloc"));
    assert_non_null(strstr(msg, "TL_ERR_DEVICE_OOM"));
    /* another op: the message names it */
    char b[4] = "abc";
    assert_int_equal(tl_device_copy_to(d, 0x10, b, 4), TL_ERR_DEVICE);
    assert_non_null(strstr(tl_last_error(), "copy_to"));
    /* with a message of its own after all: that one wins */
    f.say_why = true;
    assert_int_equal(tl_device_alloc(d, 8, &p), TL_ERR_DEVICE_OOM);
    assert_string_equal(tl_last_error(), "enginegpu: pool exhausted asking for 8 bytes");
    tl_device_release(d);
}

/* ---- an engine built against an older header: tl_device_ops ends at copy_from ---- */
static tl_status s_copy_to(void *self, tl_devptr dst, const void *src, uint64_t n) {
    memcpy((unsigned char *)self + (dst - 0x100), src, n);
    return TL_OK;
}
static tl_status s_copy_from(void *self, void *dst, tl_devptr src, uint64_t n) {
    memcpy(dst, (unsigned char *)self + (src - 0x100), n);
    return TL_OK;
}
static tl_status s_alloc(void *self, uint64_t size, tl_devptr *out) {
    (void)self;
    if (size > 64) return TL_ERR_DEVICE_OOM;
    *out = 0x100;
    return TL_OK;
}

static void test_short_ops(void **state) {
    (void)state;
    /* what the library may read is only the first `size` bytes: the rest is garbage */
    tl_device_ops *ops = malloc(sizeof *ops);
    memset(ops, 0xA5, sizeof *ops);
    ops->size = (uint32_t)(offsetof(tl_device_ops, copy_from) + sizeof ops->copy_from);
    ops->describe = f_describe;
    ops->alloc = s_alloc;
    ops->dealloc = f_dealloc;
    ops->copy_to = s_copy_to;
    ops->copy_from = s_copy_from;
    unsigned char mem[64];
    tl_device *d = NULL;
    assert_int_equal(tl_device_create(ops, mem, &d), TL_OK);
    tl_devptr p;
    assert_int_equal(tl_device_alloc(d, 16, &p), TL_OK);
    uint64_t t = 7;
    assert_int_equal(tl_device_copy_to_async(d, p, "0123456789abcde", 16, &t), TL_OK);
    assert_true(t == 0); /* no async entry within size: synchronous */
    char back[16];
    assert_int_equal(tl_device_copy_from_async(d, back, p, 16, &t), TL_OK);
    assert_string_equal(back, "0123456789abcde");
    assert_int_equal(tl_device_wait(d, 5), TL_OK);
    assert_int_equal(tl_device_pin(d, back, 16), TL_OK);
    assert_int_equal(tl_device_read_file(d, 0, 0, p, 1), TL_ERR_UNSUPPORTED);
    tl_device_release(d); /* no destroy within size: nothing called */
    /* size 0: the struct was never initialised */
    ops->size = 0;
    assert_int_equal(tl_device_create(ops, mem, &d), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "tl_device_ops_init"));
    free(ops);
}

/* ---- handles stay valid while another thread unregisters ---- */
typedef struct arena_dev {
    unsigned char *bytes; /* freed by destroy: a use after the last release is caught by ASan */
} arena_dev;

static tl_status a_describe(void *self, tl_device_info *out) {
    arena_dev *a = self;
    snprintf(out->name, sizeof out->name, "racer");
    out->kind = TL_DEVICE_OTHER;
    out->total = 256;
    out->free = a->bytes[0] ? 256 : 255;
    return TL_OK;
}
static tl_status a_alloc(void *self, uint64_t size, tl_devptr *out) {
    arena_dev *a = self;
    if (size > 128) return TL_ERR_DEVICE_OOM;
    *out = (tl_devptr)(uintptr_t)(a->bytes + 64);
    return TL_OK;
}
/* every reader shares the arena's one allocation: copies are serialised, as a device's queue is */
static pthread_mutex_t arena_lock = PTHREAD_MUTEX_INITIALIZER;
static tl_status a_copy_to(void *self, tl_devptr dst, const void *src, uint64_t n) {
    (void)self;
    pthread_mutex_lock(&arena_lock);
    memcpy((void *)(uintptr_t)dst, src, n);
    pthread_mutex_unlock(&arena_lock);
    return TL_OK;
}
static tl_status a_copy_from(void *self, void *dst, tl_devptr src, uint64_t n) {
    (void)self;
    pthread_mutex_lock(&arena_lock);
    memcpy(dst, (const void *)(uintptr_t)src, n);
    pthread_mutex_unlock(&arena_lock);
    return TL_OK;
}
static void a_destroy(void *self) {
    arena_dev *a = self;
    free(a->bytes);
    free(a);
}

static const tl_device_ops arena_ops = {
    .size = sizeof(tl_device_ops),
    .describe = a_describe,
    .alloc = a_alloc,
    .dealloc = f_dealloc,
    .copy_to = a_copy_to,
    .copy_from = a_copy_from,
    .destroy = a_destroy,
};

enum { READERS = 3, ROUNDS = 3000 };
static atomic_bool racing;
static atomic_int race_failures, race_uses;

static void *reader(void *arg) {
    (void)arg;
    while (atomic_load(&racing)) {
        tl_device *d = NULL;
        if (tl_device_find("racer", &d) == TL_OK) {
            tl_device_info info;
            tl_devptr p;
            char out[8] = "1234567", back[8];
            if (tl_device_describe(d, &info, sizeof info) != TL_OK || tl_device_alloc(d, 8, &p) != TL_OK ||
                tl_device_copy_to(d, p, out, 8) != TL_OK ||
                tl_device_copy_from(d, back, p, 8) != TL_OK || memcmp(out, back, 8) != 0)
                atomic_fetch_add(&race_failures, 1);
            atomic_fetch_add(&race_uses, 1);
            tl_device_release(d);
        }
        tl_device *all[16];
        size_t n = tl_device_list(all, 16);
        if (n > 16) n = 16;
        for (size_t i = 0; i < n; i++) {
            tl_device_info info;
            if (tl_device_describe(all[i], &info, sizeof info) != TL_OK) atomic_fetch_add(&race_failures, 1);
        }
        tl_device_list_release(all, n);
    }
    return NULL;
}

static void test_find_while_unregistering(void **state) {
    (void)state;
    atomic_store(&racing, true);
    pthread_t th[READERS];
    for (int i = 0; i < READERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, reader, NULL), 0);
    for (int r = 0; r < ROUNDS; r++) {
        arena_dev *a = calloc(1, sizeof *a);
        a->bytes = calloc(256, 1);
        a->bytes[0] = 1;
        tl_device *d = NULL;
        assert_int_equal(tl_device_create(&arena_ops, a, &d), TL_OK);
        assert_int_equal(tl_device_register(d), TL_OK);
        tl_device_release(d); /* only the registry (and readers) hold it now */
        tl_device *again = NULL;
        assert_int_equal(tl_device_find("racer", &again), TL_OK);
        assert_int_equal(tl_device_unregister(again), TL_OK);
        tl_device_release(again); /* the last reference may now be a reader's */
    }
    atomic_store(&racing, false);
    for (int i = 0; i < READERS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&race_failures), 0);
    printf("readers used the device %d times while it came and went\n", atomic_load(&race_uses));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_error_with_message),
        cmocka_unit_test(test_device_error_without_message),
        cmocka_unit_test(test_short_ops),
        cmocka_unit_test(test_find_while_unregistering),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
