/*
 * test_checked.c — the checked-arithmetic helpers every header-derived size
 * goes through: each near-overflow case is reported, never wrapped.
 */
#include "testutil.h"

#include "core/checked.h"

static void test_add_mul_align(void **state) {
    (void)state;
    uint64_t r;
    assert_true(tl__add_u64(UINT64_MAX - 1, 1, &r));
    assert_true(r == UINT64_MAX);
    assert_false(tl__add_u64(UINT64_MAX, 1, &r));
    assert_false(tl__add_u64(1ull << 63, 1ull << 63, &r));
    assert_true(tl__mul_u64(1ull << 32, (1ull << 32) - 1, &r));
    assert_false(tl__mul_u64(1ull << 32, 1ull << 32, &r));
    assert_false(tl__mul_u64(UINT64_MAX, 2, &r));
    assert_true(tl__mul_u64(UINT64_MAX, 1, &r));
    assert_true(tl__mul_u64(0, UINT64_MAX, &r) && r == 0);
    assert_true(tl__align_up_u64(33, 32, &r) && r == 64);
    assert_true(tl__align_up_u64(64, 32, &r) && r == 64);
    assert_true(tl__align_up_u64(0, 32, &r) && r == 0);
    assert_true(tl__align_up_u64(UINT64_MAX - 31, 32, &r) && r == UINT64_MAX - 31);
    assert_false(tl__align_up_u64(UINT64_MAX - 30, 32, &r));
    assert_false(tl__align_up_u64(10, 0, &r));
    assert_false(tl__align_up_u64(10, 24, &r));
    assert_true(tl__range_ok(0, 10, 10));
    assert_false(tl__range_ok(1, 10, 10));
    assert_false(tl__range_ok(UINT64_MAX, 2, UINT64_MAX));
    assert_false(tl__range_ok(2, UINT64_MAX, UINT64_MAX));
    assert_true(tl__range_ok(UINT64_MAX, 0, UINT64_MAX));
    assert_true(tl__is_pow2(1) && tl__is_pow2(1ull << 63));
    assert_false(tl__is_pow2(0) || tl__is_pow2(3) || tl__is_pow2(UINT64_MAX));
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_add_mul_align)};
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
