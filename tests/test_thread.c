/*
 * test_thread.c — os/thread.c: a thread runs on a stack of the default size
 * (it can use megabytes of it), and once joined its stack is no longer mapped
 * (mincore says ENOMEM for the pages it used), so ended workers leave nothing
 * in the process's RSS.
 */
#include "helpers/testutil.h"

#include "os/thread.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct probe {
    uintptr_t low, high; /* the lowest and highest stack addresses the thread wrote */
} probe;

/* Writes every page of a 2 MiB local array: a stack of the default size holds it. */
static void *deep(void *arg) {
    probe *p = arg;
    volatile unsigned char big[2u << 20];
    for (size_t i = 0; i < sizeof big; i += 4096)
        big[i] = (unsigned char)i;
    big[sizeof big - 1] = 1;
    p->low = (uintptr_t)&big[0];
    p->high = (uintptr_t)&big[sizeof big - 1];
    return NULL;
}

static bool mapped(uintptr_t a) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char v;
    if (mincore((void *)(a & ~(uintptr_t)(page - 1)), page, &v) == 0) return true;
    assert_int_equal(errno, ENOMEM);
    return false;
}

static void test_stack_unmapped_after_join(void **state) {
    (void)state;
    for (int round = 0; round < 3; round++) {
        probe p = {0, 0};
        tl__os_thread *t = NULL;
        assert_int_equal(tl__os_thread_start(&t, deep, &p), 0);
        tl__os_thread_join(t);
        assert_true(p.low != 0 && p.high > p.low);
        if (mapped(p.low) || mapped(p.high))
            fail_msg("round %d: the joined thread's stack (%#lx..%#lx) is still mapped", round,
                     (unsigned long)p.low, (unsigned long)p.high);
    }
}

static void test_optional_and_null(void **state) {
    (void)state;
    probe p = {0, 0};
    tl__os_thread *t = NULL;
    assert_int_equal(tl__os_thread_start_optional(&t, deep, &p), 0);
    tl__os_thread_join(t);
    assert_false(mapped(p.low));
    tl__os_thread_join(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stack_unmapped_after_join),
        cmocka_unit_test(test_optional_and_null),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
