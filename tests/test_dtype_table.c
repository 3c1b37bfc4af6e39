/*
 * test_dtype_table.c — the library's type table against the one the tests
 * wrote from the formats' definitions (helpers/dtype_spec.c: ggml's block
 * structs, the safetensors dtype list): for every type, the name, elements
 * per block, bits per block and the byte size of a few element counts; the
 * removed ggml ids and unknown names are invalid.
 */
#include "testutil.h"

#include "dtype_spec.h"

#include <string.h>

static void test_table_matches_spec(void **state) {
    (void)state;
    size_t n;
    const tu_dtype_spec *s = tu_dtype_specs(&n);
    for (size_t i = 0; i < n; i++) {
        tl_dtype t = (tl_dtype)s[i].id;
        const char *name = tl_dtype_name(t);
        if (!name || strcmp(name, s[i].name))
            fail_msg("type %d: name %s, want %s", s[i].id, name ? name : "(none)", s[i].name);
        assert_int_equal(tl_dtype_from_name(s[i].name), t);
        if (tl_dtype_block_elems(t) != s[i].block_elems ||
            tl_dtype_block_bits(t) != s[i].block_bits)
            fail_msg("%s: %u elements / %u bits per block, want %u / %u", s[i].name,
                     tl_dtype_block_elems(t), tl_dtype_block_bits(t), s[i].block_elems,
                     s[i].block_bits);
        const uint64_t counts[] = {0, 1, 7, 32, 64, 128, 256, 4096, 1ull << 40};
        for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
            uint64_t want = 0, got = 0;
            bool ok_want = tu_dtype_nbytes(&s[i], counts[k], &want);
            bool ok_got = tl_dtype_nbytes(t, counts[k], &got);
            if (ok_want != ok_got || (ok_want && want != got))
                fail_msg("%s x %llu: %s %llu, want %s %llu", s[i].name,
                         (unsigned long long)counts[k], ok_got ? "ok" : "refused",
                         (unsigned long long)got, ok_want ? "ok" : "refused",
                         (unsigned long long)want);
        }
    }
    /* every valid id below the ggml count is in the spec table, and nothing else is valid */
    for (int id = -1; id < 120; id++) {
        bool in_spec = tu_dtype_spec_of(id) != NULL;
        bool valid = tl_dtype_name((tl_dtype)id) != NULL;
        if (in_spec != valid)
            fail_msg("type id %d: library %s, spec %s", id, valid ? "valid" : "invalid",
                     in_spec ? "valid" : "invalid");
    }
    /* ggml removed these ids (Q4_2, Q4_3, Q4_0_4_4, Q4_0_4_8, Q4_0_8_8, IQ4_NL_4_4/4_8/8_8) */
    const int removed[] = {4, 5, 31, 32, 33, 36, 37, 38};
    for (size_t k = 0; k < sizeof removed / sizeof removed[0]; k++)
        assert_null(tl_dtype_name((tl_dtype)removed[k]));
    assert_int_equal(tl_dtype_from_name("Q4_2"), TL_DTYPE_INVALID);
    assert_int_equal(tl_dtype_from_name(""), TL_DTYPE_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_matches_spec),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
