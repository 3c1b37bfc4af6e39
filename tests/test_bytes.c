/*
 * test_bytes.c — the one byte-count parser every size option goes through:
 * exact whole numbers, fractions, suffix forms, signs only where allowed,
 * overflow near 2^64 refused, and junk refused; and the printer.
 */
#include "testutil.h"

#include "core/bytes.h"

#include <string.h>

static bool parse(const char *s, uint64_t *v, bool *neg) {
    return tl__bytes_parse(s, strlen(s), v, neg);
}

static void test_parse(void **state) {
    (void)state;
    uint64_t v;
    bool neg;
    assert_true(parse("8G", &v, NULL) && v == 8ull << 30);
    assert_true(parse("8gib", &v, NULL) && v == 8ull << 30);
    assert_true(parse(" 512MB ", &v, NULL) && v == 512ull << 20);
    assert_true(parse("9.5G", &v, NULL) && v == 9ull * (1ull << 30) + (1ull << 29));
    assert_true(parse(".5K", &v, NULL) && v == 512);
    assert_true(parse("123", &v, NULL) && v == 123);
    assert_true(parse("7B", &v, NULL) && v == 7);
    assert_true(parse("18446744073709551615", &v, NULL) && v == UINT64_MAX);
    assert_false(parse("18446744073709551616", &v, NULL));
    assert_false(parse("16777216T", &v, NULL)); /* 2^64 */
    assert_true(parse("16777215T", &v, NULL) && v == 16777215ull << 40);
    assert_true(parse("-2G", &v, &neg) && neg && v == 2ull << 30);
    assert_true(parse("+2G", &v, &neg) && !neg);
    assert_false(parse("-2G", &v, NULL)); /* no sign where none is allowed */
    const char *junk[] = {"",    " ",   ".",   "5.",  "G",     "1e3", "0x10",
                          "inf", "nan", "1GG", "1Gx", "1 G B", "--1", "1KiBB"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
        if (parse(junk[i], &v, &neg)) fail_msg("'%s' parsed", junk[i]);
}

static void test_format(void **state) {
    (void)state;
    char b[32];
    assert_string_equal(tl_fmt_bytes(512, b, sizeof b), "512 B");
    assert_string_equal(tl_fmt_bytes(1536ull << 20, b, sizeof b), "1.50 GiB");
    assert_string_equal(tl_fmt_bytes(UINT64_MAX, b, sizeof b), "16777216.00 TiB");
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_parse), cmocka_unit_test(test_format)};
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
