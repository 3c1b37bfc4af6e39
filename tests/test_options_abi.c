/*
 * test_options_abi.c — options structs from a program built against an older,
 * shorter header: the library reads only the caller's first `size` bytes and
 * uses its defaults for the rest (here: garbage past `size`, which must never
 * be read), and refuses a struct nobody initialised. Structs the library
 * fills in the caller's memory, from a program built against an older header
 * (a shorter struct: nothing written past it) or a newer one (a longer
 * struct: its tail left as it was); tl_abi_version.
 */
#include "testutil.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

#define CANARY 0xA5
#define TAIL 64

/* A buffer of n + TAIL bytes filled with the canary. */
static unsigned char *canary_buf(size_t n) {
    unsigned char *b = malloc(n + TAIL);
    memset(b, CANARY, n + TAIL);
    return b;
}

static void assert_canary(const unsigned char *b, size_t from, size_t to, const char *what) {
    for (size_t i = from; i < to; i++)
        if (b[i] != CANARY) fail_msg("%s: byte %zu of the caller's buffer written", what, i);
}

static void test_output_sizes(void **state) {
    (void)state;
    assert_int_equal(tl_abi_version(), TL_ABI_VERSION);
    const char *paths[] = {tu_testdata("gguf/tiny-llama-q4_0.gguf")};
    tl_model *m = NULL;
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    char name[48];
    snprintf(name, sizeof name, "abi%d", (int)getpid());
    tl_device *sim = tu_sim_add(name, 256ull << 20);
    tl_plan *p = tu_plan_one_gpu(m, name, 256ull << 20, NULL, false);
    tl_session *s = NULL;
    assert_int_equal(tl_session_create(m, p, NULL, &s), TL_OK);
    tl_acquired *a = NULL;
    tl_component comp = tl_component_of("blk.0.attn_q.weight");
    assert_int_equal(tl_session_acquire(s, comp, 0, TL_ALL_LAYERS, true, &a), TL_OK);
    /* a part, read up to a shorter size and a longer one */
    const tl_session_tensor *t0 = tl_acquired_tensor(a, 0);
    unsigned char *pb = canary_buf(sizeof(tl_session_part));
    assert_int_equal(tl_acquired_part(a, 0, 0, (tl_session_part *)pb, 4), TL_OK);
    assert_memory_equal(pb, &t0->parts[0], 4);
    assert_canary(pb, 4, sizeof(tl_session_part) + TAIL, "part, 4 bytes");
    assert_int_equal(tl_acquired_part(a, 0, 0, (tl_session_part *)pb, sizeof(tl_session_part) + 8),
                     TL_OK);
    assert_memory_equal(pb, &t0->parts[0], sizeof(tl_session_part));
    assert_canary(pb, sizeof(tl_session_part), sizeof(tl_session_part) + TAIL, "part, longer");
    assert_int_equal(tl_acquired_part(a, 0, t0->n_parts, (tl_session_part *)pb, 8),
                     TL_ERR_INVALID_ARG);
    assert_int_equal(tl_acquired_part(a, 0, 0, (tl_session_part *)pb, 0), TL_ERR_INVALID_ARG);
    free(pb);
    assert_int_equal(tl_session_release(s, a), TL_OK);

    /* an older, shorter struct: 8 bytes; nothing past them is written */
    unsigned char *b = canary_buf(sizeof(tl_session_stats));
    assert_int_equal(tl_session_stats_get(s, (tl_session_stats *)b, 8), TL_OK);
    assert_canary(b, 8, sizeof(tl_session_stats) + TAIL, "session stats, 8 bytes");
    /* a newer, longer struct: the library's fields filled as a full call fills them, the tail kept
     */
    tl_session_stats full;
    assert_int_equal(tl_session_stats_get(s, &full, sizeof full), TL_OK);
    assert_true(full.loads > 0);
    assert_int_equal(tl_session_stats_get(s, (tl_session_stats *)b, sizeof full + 32), TL_OK);
    assert_memory_equal(b, &full, sizeof full);
    assert_canary(b, sizeof full, sizeof full + TAIL, "session stats, longer");
    assert_int_equal(tl_session_stats_get(s, &full, 0), TL_ERR_INVALID_ARG);
    free(b);

    /* events with a longer stride: each entry at its caller's stride, the gaps untouched */
    tl_session_log log;
    tl_session_event ev[8];
    size_t n = tl_session_events_copy(s, 0, ev, 8, sizeof *ev, &log, sizeof log);
    assert_true(n >= 2);
    size_t stride = sizeof(tl_session_event) + 24;
    b = canary_buf(stride * n);
    assert_int_equal(tl_session_events_copy(s, 0, (tl_session_event *)b, n, stride, NULL, 0), n);
    for (size_t i = 0; i < n; i++) {
        assert_memory_equal(b + i * stride, &ev[i], sizeof ev[i]);
        assert_canary(b, i * stride + sizeof ev[i], (i + 1) * stride, "event gap");
    }
    assert_canary(b, n * stride, n * stride + TAIL, "after the events");
    free(b);
    b = canary_buf(sizeof log);
    assert_int_equal(tl_session_events_copy(s, 0, NULL, 0, 0, (tl_session_log *)b, 8), 0);
    assert_memory_equal(b, &log.first, 8);
    assert_canary(b, 8, sizeof log + TAIL, "log, 8 bytes");
    free(b);

    /* the others, each with a 4-byte struct */
    b = canary_buf(sizeof(tl_memstats));
    assert_int_equal(tl_memstats_read((tl_memstats *)b, 4), TL_OK);
    assert_canary(b, 4, sizeof(tl_memstats) + TAIL, "memstats");
    assert_int_equal(tl_memstats_read((tl_memstats *)b, 0), TL_ERR_INVALID_ARG);
    free(b);
    b = canary_buf(sizeof(tl_device_info));
    assert_int_equal(tl_device_describe(sim, (tl_device_info *)b, 4), TL_OK);
    assert_memory_equal(b, name, 4);
    assert_canary(b, 4, sizeof(tl_device_info) + TAIL, "device info");
    free(b);
    b = canary_buf(sizeof(tl_plan_decision));
    assert_int_equal(tl_plan_decision_of(p, comp, (tl_plan_decision *)b, 4), TL_OK);
    assert_canary(b, 4, sizeof(tl_plan_decision) + TAIL, "plan decision");
    free(b);
    b = canary_buf(sizeof(tl_warm_stats));
    tl_warm_pool_stats((tl_warm_stats *)b, 4);
    assert_canary(b, 4, sizeof(tl_warm_stats) + TAIL, "warm stats");
    free(b);
    tl_memwatch *w = NULL;
    assert_int_equal(tl_memwatch_create(1.0, &w), TL_OK);
    b = canary_buf(sizeof(tl_memspan));
    tl_memwatch_destroy(w, (tl_memspan *)b, 4);
    assert_canary(b, 4, sizeof(tl_memspan) + TAIL, "memspan");
    free(b);

    assert_int_equal(tl_session_destroy(s), TL_OK);
    tl_plan_destroy(p);
    tl_device_unregister(sim);
    tl_device_release(sim);
    tl_model_close(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_options_short),
        cmocka_unit_test(test_plan_options_short),
        cmocka_unit_test(test_init_sets_size),
        cmocka_unit_test(test_output_sizes),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
