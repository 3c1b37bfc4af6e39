/*
 * test_touch.c — first touch of a load's destination (io/touch.c): every
 * page of a touched range is resident and still zero; adaptive mode turns
 * the rest of the destination to 4 KiB pages (the kernel's VmFlags show
 * "nh") after TL_TOUCH_SLOW_RUN slow huge pages in a row, once, wherever two
 * threads see them; never when huge pages are fast; never in huge or small
 * mode; and, with slow and fast huge pages mixed (fresh pages against pages
 * faulted in beforehand), only after TL_TOUCH_SLOW_RUN slow ones in a row: a
 * fast page between them starts the count again; slivers of huge pages are
 * never judged. What is resident comes from mincore and the flags from
 * /proc/self/smaps, not from the code under test.
 */
#include "testutil.h"
#include "io/touch.h"
#include "os/hostmem.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MIB (1ull << 20)

/* Whether the mapping holding addr carries the VmFlags flag ("nh", "hg"). */
static bool vm_flag(const void *addr, const char *flag) {
    char flags[512];
    assert_true(tu_vm_flags(addr, flags, sizeof flags));
    return tu_has_vm_flag(flags, flag);
}

typedef struct dest {
    unsigned char *p;
    uint64_t len;
} dest;

static dest make(uint64_t len) {
    dest d = {NULL, 0};
    assert_int_equal(tl__os_anon_alloc(len, TL_OS_PAGES_HUGE, (void **)&d.p, &d.len), 0);
    assert_int_equal((uintptr_t)d.p % (2 * MIB), 0);
    assert_int_equal(tu_resident_bytes(d.p, d.len), 0);
    return d;
}

static bool all_zero(const unsigned char *p, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

static void test_slow_switches_once(void **st) {
    (void)st;
    dest d = make(32 * MIB);
    tl__touch t;
    tl__touch_init(&t, d.p, d.len, TL_TOUCH_ADAPT, -1.0); /* every huge page counts as slow */
    assert_int_equal(tl__touch_range(&t, d.p, 16 * MIB), 0);
    assert_int_equal(tu_resident_bytes(d.p, 16 * MIB), 16 * MIB);
    assert_int_equal(tu_resident_bytes(d.p + 16 * MIB, 16 * MIB), 0); /* nothing beyond the range */
    assert_true(all_zero(d.p, 16 * MIB));
    /* the third huge page in a row ends at 6 MiB: from there on 4 KiB pages */
    assert_false(atomic_load(&t.huge));
    assert_int_equal(atomic_load(&t.switched_at_mib), 6 + 1);
    assert_false(vm_flag(d.p, "nh"));
    assert_true(vm_flag(d.p + 6 * MIB, "nh"));
    assert_true(vm_flag(d.p + 31 * MIB, "nh"));
    assert_int_equal(tl__touch_range(&t, d.p + 16 * MIB, 16 * MIB), 0);
    assert_int_equal(tu_resident_bytes(d.p, d.len), d.len);
    assert_int_equal(atomic_load(&t.switched_at_mib), 6 + 1); /* once */
    tl__os_anon_free(d.p, d.len);
}

static void test_fast_stays_huge(void **st) {
    (void)st;
    dest d = make(16 * MIB);
    tl__touch t;
    tl__touch_init(&t, d.p, d.len, TL_TOUCH_ADAPT, 1e9); /* no huge page is slow */
    /* a range that starts and ends inside pages: the pages holding it are faulted in */
    assert_int_equal(tl__touch_range(&t, d.p + 100, 3 * MIB), 0);
    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    assert_true(tu_resident_bytes(d.p, 3 * MIB + ps) >= 3 * MIB);
    assert_int_equal(tl__touch_range(&t, d.p, d.len), 0);
    assert_int_equal(tu_resident_bytes(d.p, d.len), d.len);
    assert_true(atomic_load(&t.huge));
    assert_int_equal(atomic_load(&t.switched_at_mib), 0);
    assert_false(vm_flag(d.p + 8 * MIB, "nh"));
    if (access("/sys/kernel/mm/transparent_hugepage", F_OK) == 0)
        assert_true(vm_flag(d.p + 8 * MIB, "hg")); /* as allocated: MADV_HUGEPAGE */
    tl__os_anon_free(d.p, d.len);
}

static void test_fixed_modes_never_switch(void **st) {
    (void)st;
    for (int mode = TL_TOUCH_SMALL; mode <= TL_TOUCH_HUGE; mode++) {
        dest d = make(8 * MIB);
        tl__touch t;
        tl__touch_init(&t, d.p, d.len, (tl__touch_pages)mode, -1.0);
        assert_int_equal(tl__touch_range(&t, d.p, d.len), 0);
        assert_int_equal(tu_resident_bytes(d.p, d.len), d.len);
        assert_int_equal(atomic_load(&t.switched_at_mib), 0);
        assert_false(vm_flag(d.p + 4 * MIB, "nh"));
        tl__os_anon_free(d.p, d.len);
    }
}

typedef struct half {
    tl__touch *t;
    unsigned char *base;
    int which; /* 0: even 4 MiB pieces, 1: odd */
} half;

static void *toucher(void *arg) {
    half *h = arg;
    for (int k = h->which; k < 16; k += 2)
        if (tl__touch_range(h->t, h->base + (uint64_t)k * 4 * MIB, 4 * MIB) != 0) return arg;
    return NULL;
}

static void test_two_threads(void **st) {
    (void)st;
    dest d = make(64 * MIB);
    tl__touch t;
    tl__touch_init(&t, d.p, d.len, TL_TOUCH_ADAPT, -1.0);
    half h[2] = {{&t, d.p, 0}, {&t, d.p, 1}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, toucher, &h[i]), 0);
    for (int i = 0; i < 2; i++) {
        void *r = &r;
        pthread_join(th[i], &r);
        assert_null(r);
    }
    assert_int_equal(tu_resident_bytes(d.p, d.len), d.len);
    assert_true(all_zero(d.p, d.len));
    unsigned at = atomic_load(&t.switched_at_mib);
    /*
     * the third slow page in time ends a 2 MiB page among each thread's first
     * three: 2, 4, 10 MiB (even pieces) or 6, 8, 14 MiB (odd pieces)
     */
    assert_true(at >= 2 + 1 && at <= 14 + 1 && (at - 1) % 2 == 0);
    assert_true(vm_flag(d.p + 63 * MIB, "nh"));
    tl__os_anon_free(d.p, d.len);
}

#define HUGE_PAGE (2 * MIB)

/*
 * Only whole huge pages are judged: a destination touched in 1 MiB pieces
 * (each huge page in two slivers) never switches, even when every fault
 * counts as slow.
 */
static void test_slivers_not_judged(void **st) {
    (void)st;
    dest d = make(16 * MIB);
    tl__touch t;
    tl__touch_init(&t, d.p, d.len, TL_TOUCH_ADAPT, -1.0);
    for (uint64_t o = 0; o < d.len; o += MIB)
        assert_int_equal(tl__touch_range(&t, d.p + o, MIB), 0);
    assert_int_equal(tu_resident_bytes(d.p, d.len), d.len);
    assert_true(atomic_load(&t.huge));
    assert_int_equal(atomic_load(&t.switched_at_mib), 0);
    assert_false(vm_flag(d.p + 8 * MIB, "nh"));
    tl__os_anon_free(d.p, d.len);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/*
 * Touch a destination of strlen(pat) huge pages one page at a time: 'S' a
 * fresh page (slow to fault in), 'F' a page written beforehand (faulting it
 * in finds it resident: fast). Returns switched_at_mib.
 */
static unsigned touch_pattern(const char *pat, double slow_s) {
    size_t n = strlen(pat);
    dest d = make(n * HUGE_PAGE);
    for (size_t i = 0; i < n; i++)
        if (pat[i] == 'F') memset(d.p + i * HUGE_PAGE, 0, HUGE_PAGE);
    tl__touch t;
    tl__touch_init(&t, d.p, d.len, TL_TOUCH_ADAPT, slow_s);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(tl__touch_range(&t, d.p + i * HUGE_PAGE, HUGE_PAGE), 0);
    assert_int_equal(tu_resident_bytes(d.p, d.len), d.len);
    unsigned at = atomic_load(&t.switched_at_mib);
    tl__os_anon_free(d.p, d.len);
    return at;
}

/* Faulting in a fresh huge page (the fastest of five) and a resident one (the slowest of five). */
static void calibrate(double *fresh, double *resident) {
    *fresh = 1e9;
    *resident = 0;
    for (int k = 0; k < 5; k++) {
        dest d = make(2 * HUGE_PAGE);
        memset(d.p + HUGE_PAGE, 0, HUGE_PAGE);
        for (int i = 0; i < 2; i++) {
            double t0 = now_s();
            assert_int_equal(tl__os_populate_write(d.p + i * HUGE_PAGE, HUGE_PAGE), 0);
            double t = now_s() - t0;
            if (i == 0 && t < *fresh) *fresh = t;
            if (i == 1 && t > *resident) *resident = t;
        }
        tl__os_anon_free(d.p, d.len);
    }
}

static void test_mixed_slow_and_fast(void **st) {
    (void)st;
    double fresh, resident;
    calibrate(&fresh, &resident);
    print_message("a fresh huge page faults in in %.0f us, a resident one in %.1f us\n",
                  fresh * 1e6, resident * 1e6);
    if (fresh < 8 * resident)
        TU_SKIP("fresh huge pages fault in too fast here (%.0f us) to tell them from resident "
                "ones (%.1f us)",
                fresh * 1e6, resident * 1e6);
    double slow_s = fresh / 2; /* at least 4 times a resident page, half the fastest fresh one */
    /*
     * pattern, switched_at_mib wanted: never after two slow pages in a row; at
     * the end of the third slow page in a row (12 MiB) even after a run was broken
     */
    const struct {
        const char *pat;
        unsigned want;
    } cases[] = {{"SSFSSFSSFSSFSSF", 0}, {"SSFSSS", 12 + 1}, {"SFSFSFSSS", 18 + 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        /* a fast page that the scheduler delays can look slow: a few tries, one must match */
        unsigned got[5];
        bool ok = false;
        for (int k = 0; k < 5 && !ok; k++) {
            got[k] = touch_pattern(cases[c].pat, slow_s);
            ok = got[k] == cases[c].want;
            if (!ok)
                print_message("%s: switched at %u, want %u (try %d)\n", cases[c].pat, got[k],
                              cases[c].want, k + 1);
        }
        if (!ok) fail_msg("%s: never switched where it should (%u)", cases[c].pat, cases[c].want);
    }
}

int main(void) {
    if (madvise(NULL, 0, 23 /* MADV_POPULATE_WRITE */) != 0) {
        printf("SKIP: test_touch: this kernel has no MADV_POPULATE_WRITE (Linux >= 5.14)\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slow_switches_once),
        cmocka_unit_test(test_fast_stays_huge),
        cmocka_unit_test(test_fixed_modes_never_switch),
        cmocka_unit_test(test_two_threads),
        cmocka_unit_test(test_mixed_slow_and_fast),
        cmocka_unit_test(test_slivers_not_judged),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
