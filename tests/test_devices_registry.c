/*
 * test_devices_registry.c — the device registry: built-in cpu, an engine's
 * own device through the public vtable, lookup by case-insensitive exact name
 * or unique prefix, ambiguity and absence, reference counts, all-or-none sim
 * registration, and registering / looking up from several threads at once.
 */
#include "helpers/testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- an engine-style device: one malloc'd arena, bump allocation ---- */
typedef struct eng {
    char name[32];
    unsigned char *arena;
    uint64_t cap, used;
    int destroyed;
} eng;

static tl_status eng_describe(void *self, tl_device_info *out) {
    eng *e = self;
    snprintf(out->name, sizeof out->name, "%s", e->name);
    snprintf(out->desc, sizeof out->desc, "test engine device");
    out->kind = TL_DEVICE_OTHER;
    out->total = e->cap;
    out->free = e->cap - e->used;
    out->host_pointer = false;
    out->async = false;
    out->alignment = 32;
    return TL_OK;
}
static tl_status eng_alloc(void *self, uint64_t size, tl_devptr *out) {
    eng *e = self;
    if (size > e->cap - e->used) return TL_ERR_DEVICE_OOM;
    *out = 0x1000 + e->used; /* offsets, not host addresses */
    e->used += size;
    return TL_OK;
}
static tl_status eng_dealloc(void *self, tl_devptr p) {
    (void)self;
    (void)p;
    return TL_OK;
}
static tl_status eng_copy_to(void *self, tl_devptr dst, const void *src, uint64_t n) {
    eng *e = self;
    memcpy(e->arena + (dst - 0x1000), src, n);
    return TL_OK;
}
static tl_status eng_copy_from(void *self, void *dst, tl_devptr src, uint64_t n) {
    eng *e = self;
    memcpy(dst, e->arena + (src - 0x1000), n);
    return TL_OK;
}
static tl_status eng_from_async(void *self, void *dst, tl_devptr src, uint64_t n, uint64_t *t) {
    *t = 0;
    return eng_copy_from(self, dst, src, n);
}
static void eng_destroy(void *self) {
    ((eng *)self)->destroyed++;
}

static const tl_device_ops eng_ops = {
    .size = sizeof(tl_device_ops),
    .describe = eng_describe,
    .alloc = eng_alloc,
    .dealloc = eng_dealloc,
    .copy_to = eng_copy_to,
    .copy_from = eng_copy_from,
    .destroy = eng_destroy,
};

static bool listed(const char *name) {
    tl_device *devs[64];
    size_t n = tl_device_list(devs, 64);
    if (n > 64) n = 64;
    bool found = false;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(tl_device_name(devs[i]), name)) found = true;
    tl_device_list_release(devs, n);
    return found;
}

static void test_cpu_builtin(void **state) {
    (void)state;
    tl_device *devs[8];
    size_t n = tl_device_list(devs, 8);
    assert_true(n >= 1);
    assert_string_equal(tl_device_name(devs[0]), "cpu");
    assert_int_equal(tl_device_kind_of(devs[0]), TL_DEVICE_CPU);
    tl_device *d = NULL;
    assert_int_equal(tl_device_find("CPU", &d), TL_OK);
    assert_ptr_equal(d, devs[0]);
    /* the built-in host device stays registered */
    assert_int_equal(tl_device_unregister(d), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "cpu"));
    tl_device_release(d);
    tl_device_list_release(devs, n < 8 ? n : 8);
    assert_int_equal(tl_device_find("cpu", &d), TL_OK);
    tl_device_release(d);
}

static void test_custom_device(void **state) {
    (void)state;
    eng e = {.name = "myengine0", .cap = 4096};
    e.arena = calloc(4096, 1);
    tl_device *d = NULL;
    assert_int_equal(tl_device_create(&eng_ops, &e, &d), TL_OK);
    assert_int_equal(tl_device_register(d), TL_OK);
    assert_true(listed("myengine0"));
    tl_device *f = NULL;
    assert_int_equal(tl_device_find("MyEng", &f), TL_OK); /* unique prefix, any case */
    assert_ptr_equal(f, d);
    tl_device_info info;
    assert_int_equal(tl_device_describe(f, &info, sizeof info), TL_OK);
    assert_string_equal(info.name, "myengine0");
    assert_int_equal(info.kind, TL_DEVICE_OTHER);
    assert_true(info.total == 4096);
    /* it works through the wrappers; no async entry: the copy is synchronous, ticket 0 */
    tl_devptr p;
    assert_int_equal(tl_device_alloc(f, 13, &p), TL_OK);
    uint64_t t = 99;
    assert_int_equal(tl_device_copy_to_async(f, p, "hello, world", 13, &t), TL_OK);
    assert_true(t == 0);
    assert_int_equal(tl_device_wait(f, t), TL_OK);
    char back[13];
    assert_int_equal(tl_device_copy_from(f, back, p, 13), TL_OK);
    assert_string_equal(back, "hello, world");
    assert_int_equal(tl_device_read_file(f, 0, 0, p, 1), TL_ERR_UNSUPPORTED);
    assert_int_equal(tl_device_pin(f, back, 13), TL_OK); /* no pin entry: nothing to do */
    tl_device_release(f); /* the reference find gave */
    /* a second device with the same name (any case) is refused */
    eng e2 = {.name = "MYENGINE0", .cap = 1};
    tl_device *d2 = NULL;
    assert_int_equal(tl_device_create(&eng_ops, &e2, &d2), TL_OK);
    assert_int_equal(tl_device_register(d2), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "already registered"));
    tl_device_release(d2);
    assert_int_equal(e2.destroyed, 1);
    /* registry holds its own reference: releasing ours keeps it alive */
    tl_device_release(d); /* ours */
    assert_int_equal(e.destroyed, 0);
    tl_device_retain(d); /* keep one past unregister */
    assert_int_equal(tl_device_unregister(d), TL_OK);
    assert_int_equal(e.destroyed, 0);
    assert_false(listed("myengine0"));
    assert_int_equal(tl_device_find("myengine0", &f), TL_ERR_NOT_FOUND);
    assert_int_equal(tl_device_unregister(d), TL_ERR_NOT_FOUND);
    tl_device_release(d); /* the retained one: last reference */
    assert_int_equal(e.destroyed, 1);
    free(e.arena);
}

static void test_bad_devices(void **state) {
    (void)state;
    tl_device *d = NULL;
    tl_device_ops none = {0};
    assert_int_equal(tl_device_create(&none, NULL, &d), TL_ERR_INVALID_ARG);
    tl_device_ops_init(&none);
    assert_int_equal(tl_device_create(&none, NULL, &d), TL_ERR_INVALID_ARG);
    eng e = {.name = "bad name", .cap = 1};
    assert_int_equal(tl_device_create(&eng_ops, &e, &d), TL_ERR_INVALID_ARG);
    assert_null(d);
    tl_device_ops half = eng_ops;
    half.copy_to_async = NULL;
    half.copy_from_async = eng_from_async;
    eng e2 = {.name = "ok", .cap = 1};
    assert_int_equal(tl_device_create(&half, &e2, &d), TL_ERR_INVALID_ARG); /* async without wait */
}

static void test_lookup(void **state) {
    (void)state;
    assert_int_equal(tl_device_sim_add("gpu1=1G,gpu10=2G,gpu2=1M"), TL_OK);
    tl_device *d = NULL;
    assert_int_equal(tl_device_find("gpu1", &d), TL_OK); /* exact beats prefix of gpu10 */
    assert_string_equal(tl_device_name(d), "gpu1");
    tl_device_release(d);
    assert_int_equal(tl_device_find("GPU10", &d), TL_OK);
    assert_string_equal(tl_device_name(d), "gpu10");
    tl_device_release(d);
    assert_int_equal(tl_device_find("gpu2", &d), TL_OK);
    tl_device_release(d);
    assert_int_equal(tl_device_find("gpu", &d), TL_ERR_INVALID_ARG);
    assert_null(d);
    assert_non_null(strstr(tl_last_error(), "ambiguous"));
    assert_non_null(strstr(tl_last_error(), "gpu10"));
    assert_non_null(strstr(tl_last_error(), "gpu2"));
    assert_int_equal(tl_device_find("npu0", &d), TL_ERR_NOT_FOUND);
    assert_non_null(strstr(tl_last_error(), "npu0"));
    assert_int_equal(tl_device_find("", &d), TL_ERR_INVALID_ARG);
    /* all or none: the second item clashes with cpu, so gpu7 is not left behind */
    assert_int_equal(tl_device_sim_add("gpu7=1G,CPU=1G"), TL_ERR_INVALID_ARG);
    assert_false(listed("gpu7"));
    assert_false(listed("CPU"));
    assert_int_equal(tl_device_sim_add("gpu1=1G"), TL_ERR_INVALID_ARG); /* already there */
    const char *names[] = {"gpu1", "gpu10", "gpu2"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tl_device_find(names[i], &d), TL_OK);
        assert_int_equal(tl_device_unregister(d), TL_OK);
        tl_device_release(d);
    }
    assert_int_equal(tl_device_find("gpu", &d), TL_ERR_NOT_FOUND);
}

/* ---- threads: each registers, looks up, lists and unregisters its own sims ---- */
enum { THREADS = 8, PER = 40 };
static atomic_int thread_failures;

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    tl_device *mine[PER];
    for (int j = 0; j < PER; j++) {
        tl_sim_spec sp = {.capacity = 1024};
        snprintf(sp.name, sizeof sp.name, "t%d_%d", id, j);
        if (tl_device_sim_create(&sp, &mine[j]) != TL_OK || tl_device_register(mine[j]) != TL_OK) {
            atomic_fetch_add(&thread_failures, 1);
            return NULL;
        }
        tl_device_release(mine[j]); /* the registry keeps it */
        tl_device *f = NULL;
        if (tl_device_find(sp.name, &f) != TL_OK || f != mine[j])
            atomic_fetch_add(&thread_failures, 1);
        tl_device *devs[THREADS * PER + 8];
        size_t n = tl_device_list(devs, THREADS * PER + 8);
        if (n < 2) atomic_fetch_add(&thread_failures, 1);
        tl_device_list_release(devs, n < THREADS * PER + 8 ? n : THREADS * PER + 8);
        tl_devptr p;
        if (f && (tl_device_alloc(f, 10, &p) != TL_OK || tl_device_free(f, p) != TL_OK))
            atomic_fetch_add(&thread_failures, 1);
        tl_device_release(f);
    }
    for (int j = 0; j < PER; j++)
        if (tl_device_unregister(mine[j]) != TL_OK) atomic_fetch_add(&thread_failures, 1);
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    size_t before = tl_device_list(NULL, 0);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&thread_failures), 0);
    assert_int_equal(tl_device_list(NULL, 0), before);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_builtin), cmocka_unit_test(test_custom_device),
        cmocka_unit_test(test_bad_devices), cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_threads),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
