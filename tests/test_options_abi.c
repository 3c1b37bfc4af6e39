/*
 * test_options_abi.c — options structs from a program built against an older,
 * shorter header: the library reads only the caller's first `size` bytes and
 * uses its defaults for the rest (here: garbage past `size`, which must never
 * be read), and refuses a struct nobody initialised.
 */
#include "testutil.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static void test_model_options_short(void **state) {
    (void)state;
    /* an old tl_model_options that ended after map_flags; prefixes past it is garbage */
    tl_model_options *o = malloc(sizeof *o);
    memset(o, 0xA5, sizeof *o);
    o->size = (uint32_t)(offsetof(tl_model_options, map_flags) + sizeof o->map_flags);
    o->map_flags = 0;
    const char *paths[] = {tu_testdata("gguf/tiny-llama-q4_0.gguf")};
    tl_model *m = NULL;
    assert_int_equal(tl_model_open(paths, 1, o, &m), TL_OK);
    /* defaults for what the caller did not have: no prefixes, read-only */
    assert_true(tl_model_find(m, "token_embd.weight") != TL_NOT_FOUND);
    assert_null(tl_model_tensor_data_mut(m, 0));
    tl_model_close(m);
    free(o);
}

static void test_plan_options_short(void **state) {
    (void)state;
    tl_plan_summary sum;
    tl_plan_device devs[TL_PLAN_MAX_DEVICES];
    size_t nd;
    assert_int_equal(tl_plan_summary_profile("sdxl", &sum), TL_OK);
    assert_int_equal(tl_plan_parse_devices("cuda0=12G", devs, TL_PLAN_MAX_DEVICES, &nd), TL_OK);
    /* reference: the defaults */
    tl_plan_options full;
    tl_plan_options_init(&full);
    full.backend = "*=cuda0";
    tl_plan *a = NULL, *b = NULL;
    assert_int_equal(tl_plan_create(&sum, devs, nd, &full, &a), TL_OK);
    /* an old struct that ended after backend: every later field is garbage */
    tl_plan_options *o = malloc(sizeof *o);
    memset(o, 0xA5, sizeof *o);
    o->size = (uint32_t)(offsetof(tl_plan_options, backend) + sizeof o->backend);
    o->backend = "*=cuda0";
    assert_int_equal(tl_plan_create(&sum, devs, nd, o, &b), TL_OK);
    char *ja = NULL, *jb = NULL;
    assert_int_equal(tl_plan_to_json(a, &ja), TL_OK);
    assert_int_equal(tl_plan_to_json(b, &jb), TL_OK);
    assert_string_equal(ja, jb);
    tl_free(ja);
    tl_free(jb);
    tl_plan_destroy(a);
    tl_plan_destroy(b);
    /* never initialised */
    o->size = 0;
    assert_int_equal(tl_plan_create(&sum, devs, nd, o, &b), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "tl_plan_options_init"));
    free(o);
    tl_plan_summary_clear(&sum);
}

static void test_init_sets_size(void **state) {
    (void)state;
    tl_model_options mo;
    tl_load_options lo;
    tl_plan_options po;
    tl_library_options bo;
    tl_device_ops ops;
    memset(&mo, 0xFF, sizeof mo);
    memset(&lo, 0xFF, sizeof lo);
    memset(&po, 0xFF, sizeof po);
    memset(&bo, 0xFF, sizeof bo);
    memset(&ops, 0xFF, sizeof ops);
    tl_model_options_init(&mo);
    tl_load_options_init(&lo);
    tl_plan_options_init(&po);
    tl_library_options_init(&bo);
    tl_device_ops_init(&ops);
    assert_int_equal(mo.size, sizeof mo);
    assert_int_equal(lo.size, sizeof lo);
    assert_int_equal(po.size, sizeof po);
    assert_int_equal(bo.size, sizeof bo);
    assert_int_equal(ops.size, sizeof ops);
    assert_int_equal(mo.map_flags, 0);
    assert_null(mo.prefixes);
    assert_int_equal(lo.mode, TL_LOAD_AUTO);
    assert_false(lo.convert);
    assert_int_equal(lo.align, 0);
    assert_null(po.backend);
    assert_false(bo.no_cuda);
    assert_null(bo.cudart_path);
    assert_null(ops.alloc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_options_short),
        cmocka_unit_test(test_plan_options_short),
        cmocka_unit_test(test_init_sets_size),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
