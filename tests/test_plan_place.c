/*
 * test_plan_place.c — tl_plan_place, the per-tensor placement sessions carry
 * out, on a model of four equal diffusion layers and a cond component: a
 * two-GPU layer split (two layers each, the non-layer tensor with the first
 * GPU), the cond component on the host, and a streamed plan (the last
 * layers streamed to the GPU). Expected devices are worked out by hand from
 * the sizes below, not from the plan's own decision.
 */
#include "testutil.h"

#include "test_load_st.h"

#include <stdlib.h>
#include <string.h>

#define UNET "model.diffusion_model."

static void fill(void *buf, uint64_t off, uint64_t len, void *ctx) {
    (void)ctx;
    memset(buf, (int)(off & 0xff), (size_t)len);
}

static tl_model *model(char **dir) {
    *dir = tu_tmpdir();
    char *p = tu_path(*dir, "m.safetensors");
    static char names[8][80];
    st_tensor t[8];
    for (int k = 0; k < 4; k++) { /* 4 layers of 1 MiB */
        snprintf(names[k], sizeof names[k], UNET "input_blocks.%d.0.weight", k);
        t[k] = (st_tensor){names[k], "F32", 262144, 4, NULL, fill, NULL};
    }
    t[4] = (st_tensor){UNET "time_embed.0.weight", "F32", 1024, 4, NULL, fill, NULL};
    t[5] = (st_tensor){"cond_stage_model.transformer.text_model.encoder.layers.0.w",
                       "F16",
                       1024,
                       2,
                       NULL,
                       fill,
                       NULL};
    st_write(p, t, 6);
    const char *paths[] = {p};
    tl_model *m;
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    free(p);
    return m;
}

static tl_plan *plan(tl_model *m, const char *devices, const char *backend, bool offload) {
    tl_plan_device d[4];
    size_t n;
    assert_int_equal(tl_plan_parse_devices(devices, d, 4, &n), TL_OK);
    tl_plan_summary s;
    assert_int_equal(tl_plan_summary_from_model(m, TL_DTYPE_INVALID, &s), TL_OK);
    tl_plan_options o;
    tl_plan_options_init(&o);
    o.backend = backend;
    o.offload_to_cpu = offload;
    o.reserve = "diffusion=0,cond=0,vae=0,controlnet=0";
    tl_plan *p;
    assert_int_equal(tl_plan_create(&s, d, n, &o, &p), TL_OK);
    tl_plan_summary_clear(&s);
    if (!tl_plan_feasible(p)) fail_msg("%s", tl_plan_error(p));
    return p;
}

static int32_t device_of(const tl_model *m, const tl_plan_placement *pl, size_t n, const char *name,
                         bool *streamed) {
    size_t t = tl_model_find(m, name);
    for (size_t i = 0; i < n; i++)
        if (pl[i].tensor == t) {
            assert_int_equal(pl[i].offset, 0);
            assert_int_equal(pl[i].nbytes, tl_model_tensor(m, t)->nbytes);
            if (streamed) *streamed = pl[i].streamed;
            return pl[i].device;
        }
    fail_msg("%s not placed", name);
    return -2;
}

static void test_layer_split_and_host(void **state) {
    (void)state;
    char *dir;
    tl_model *m = model(&dir);
    /* two GPUs of 2.5 MiB: 4 MiB of layers split 2 + 2, the 4 KiB embedding with the first */
    tl_plan *p = plan(m, "g0=2560K,g1=2560K", "diffusion=g0&g1,cond=cpu", false);
    tl_plan_placement *pl;
    size_t n;
    assert_int_equal(tl_plan_place(p, m, &pl, &n), TL_OK);
    assert_int_equal(n, 6);
    const int32_t want[4] = {0, 0, 1, 1};
    for (int k = 0; k < 4; k++) {
        char name[80];
        snprintf(name, sizeof name, UNET "input_blocks.%d.0.weight", k);
        assert_int_equal(device_of(m, pl, n, name, NULL), want[k]);
    }
    assert_int_equal(device_of(m, pl, n, UNET "time_embed.0.weight", NULL), 0);
    assert_int_equal(
        device_of(m, pl, n, "cond_stage_model.transformer.text_model.encoder.layers.0.w", NULL),
        -1);
    tl_free(pl);
    tl_plan_destroy(p);
    tl_model_close(m);
    tu_tmpdir_rm(dir);
}

static void test_stream(void **state) {
    (void)state;
    char *dir;
    tl_model *m = model(&dir);
    /* one GPU of 2.5 MiB, offloaded: the embedding + two 1 MiB stream buffers fill it, so no
       layer is kept resident and every layer streams to g0 */
    tl_plan *p = plan(m, "g0=2100K", "cond=cpu", true);
    tl_plan_placement *pl;
    size_t n;
    assert_int_equal(tl_plan_place(p, m, &pl, &n), TL_OK);
    for (int k = 0; k < 4; k++) {
        char name[80];
        snprintf(name, sizeof name, UNET "input_blocks.%d.0.weight", k);
        bool streamed = false;
        assert_int_equal(device_of(m, pl, n, name, &streamed), 0);
        assert_true(streamed);
    }
    bool streamed = true;
    assert_int_equal(device_of(m, pl, n, UNET "time_embed.0.weight", &streamed), 0);
    assert_false(streamed); /* the non-layer bytes stay resident */
    tl_free(pl);
    tl_plan_destroy(p);
    tl_model_close(m);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layer_split_and_host),
        cmocka_unit_test(test_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
