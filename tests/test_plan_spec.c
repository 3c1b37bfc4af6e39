/*
 * test_plan_spec.c — the planner's parsers: backend specs (aliases, defaults,
 * device names and prefixes, every error), --max-vram and --headroom budgets,
 * reserves, sizes, phase schedules, hypothetical device lists, and the VAE
 * tiling decision.
 */
#include "helpers/testutil.h"

#include <stdio.h>
#include <string.h>

#define GIB (1024ull * 1024 * 1024)
#define MIB (1024ull * 1024)

static size_t devs3(tl_plan_device *d) {
    size_t n = 0;
    assert_int_equal(
        tl_plan_parse_devices("cuda0=16G,cuda1=10G,cpu=64G", d, TL_PLAN_MAX_DEVICES, &n), TL_OK);
    return n;
}

static void test_devices(void **state) {
    (void)state;
    tl_plan_device d[TL_PLAN_MAX_DEVICES];
    size_t n;
    assert_int_equal(tl_plan_parse_devices("cuda0=16G,cuda1=10G", d, TL_PLAN_MAX_DEVICES, &n),
                     TL_OK);
    assert_int_equal(n, 3);
    assert_string_equal(d[0].name, "cuda0");
    assert_true(d[0].is_gpu);
    assert_int_equal(d[0].total, 16 * GIB);
    assert_int_equal(d[1].free, 10 * GIB);
    assert_string_equal(d[2].name, "cpu");
    assert_false(d[2].is_gpu);
    assert_int_equal(tl_plan_parse_devices("cpu=64G", d, TL_PLAN_MAX_DEVICES, &n), TL_OK);
    assert_int_equal(n, 1);
    assert_int_equal(d[0].total, 64 * GIB);
    assert_int_equal(tl_plan_parse_devices("", d, TL_PLAN_MAX_DEVICES, &n), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_plan_parse_devices("cuda0=16G,,", d, TL_PLAN_MAX_DEVICES, &n),
                     TL_ERR_INVALID_ARG);
    assert_int_equal(tl_plan_parse_devices("cuda0", d, TL_PLAN_MAX_DEVICES, &n),
                     TL_ERR_INVALID_ARG);
    assert_int_equal(tl_plan_parse_devices("cuda0=lots", d, TL_PLAN_MAX_DEVICES, &n),
                     TL_ERR_INVALID_ARG);
    assert_int_equal(tl_plan_parse_devices("cuda0=1G,CUDA0=2G", d, TL_PLAN_MAX_DEVICES, &n),
                     TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "twice"));
    assert_int_equal(tl_plan_parse_devices("a=1G,b=1G", d, 2, &n), TL_ERR_INVALID_ARG);
}

static void test_backend_forms(void **state) {
    (void)state;
    tl_plan_device d[TL_PLAN_MAX_DEVICES];
    size_t n = devs3(d);
    tl_backend_spec b;
    assert_int_equal(tl_plan_parse_backend("cond=CPU,vae=cuda0,diffusion=cuda0&cuda1", d, n, &b),
                     TL_OK);
    assert_int_equal(b.comp[TL_COMP_COND].n_devices, 1);
    assert_int_equal(b.comp[TL_COMP_COND].devices[0], TL_PLAN_HOST);
    assert_int_equal(b.comp[TL_COMP_VAE].devices[0], 0);
    assert_int_equal(b.comp[TL_COMP_DIFFUSION].n_devices, 2);
    assert_int_equal(b.comp[TL_COMP_DIFFUSION].devices[1], 1);
    assert_int_equal(b.dflt.n_devices, 0);
    /* the default, four ways */
    const char *dflt[] = {"*=cuda1", "all=cuda1", "default=cuda1", "cuda1"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(tl_plan_parse_backend(dflt[i], d, n, &b), TL_OK);
        assert_int_equal(b.dflt.n_devices, 1);
        assert_int_equal(b.dflt.devices[0], 1);
    }
    /* aliases */
    const char *diff[] = {"model", "unet", "dit", "transformer", "diffusion"};
    for (int i = 0; i < 5; i++) {
        char s[64];
        snprintf(s, sizeof s, "%s=cuda1", diff[i]);
        assert_int_equal(tl_plan_parse_backend(s, d, n, &b), TL_OK);
        assert_int_equal(b.comp[TL_COMP_DIFFUSION].devices[0], 1);
    }
    const char *cond[] = {"clip", "te", "text", "conditioner", "llm", "t5xxl", "cond"};
    for (int i = 0; i < 7; i++) {
        char s[64];
        snprintf(s, sizeof s, "%s=cpu", cond[i]);
        assert_int_equal(tl_plan_parse_backend(s, d, n, &b), TL_OK);
        assert_int_equal(b.comp[TL_COMP_COND].devices[0], TL_PLAN_HOST);
    }
    const char *vae[] = {"firststage", "autoencoder", "tae", "vae"};
    for (int i = 0; i < 4; i++) {
        char s[64];
        snprintf(s, sizeof s, "%s=cuda0", vae[i]);
        assert_int_equal(tl_plan_parse_backend(s, d, n, &b), TL_OK);
        assert_int_equal(b.comp[TL_COMP_VAE].n_devices, 1);
    }
    const char *cn[] = {"controlnet", "control_net", "control-net"};
    for (int i = 0; i < 3; i++) {
        char s[64];
        snprintf(s, sizeof s, "%s=cuda0", cn[i]);
        assert_int_equal(tl_plan_parse_backend(s, d, n, &b), TL_OK);
        assert_int_equal(b.comp[TL_COMP_CONTROLNET].n_devices, 1);
    }
    /* names: case-insensitive, unique prefixes, auto/gpu = most free memory */
    assert_int_equal(tl_plan_parse_backend("vae=CUDA1", d, n, &b), TL_OK);
    assert_int_equal(b.comp[TL_COMP_VAE].devices[0], 1);
    assert_int_equal(tl_plan_parse_backend("vae=auto,cond=gpu", d, n, &b), TL_OK);
    assert_int_equal(b.comp[TL_COMP_VAE].devices[0], 0);
    assert_int_equal(b.comp[TL_COMP_COND].devices[0], 0);
    tl_plan_device e[TL_PLAN_MAX_DEVICES];
    size_t m;
    assert_int_equal(tl_plan_parse_devices("cuda0=8G,rocm1=24G", e, TL_PLAN_MAX_DEVICES, &m),
                     TL_OK);
    assert_int_equal(tl_plan_parse_backend("vae=default", e, m, &b), TL_OK);
    assert_int_equal(b.comp[TL_COMP_VAE].devices[0], 1);
    assert_int_equal(tl_plan_parse_backend("dit=gpu,vae=ro,cond=cu", e, m, &b), TL_OK);
    assert_int_equal(b.comp[TL_COMP_DIFFUSION].devices[0], 1);
    assert_int_equal(b.comp[TL_COMP_VAE].devices[0], 1);
    assert_int_equal(b.comp[TL_COMP_COND].devices[0], 0);
    /* spaces around items */
    assert_int_equal(tl_plan_parse_backend(" cond = cpu , vae=cuda0 ", d, n, &b), TL_OK);
    assert_int_equal(b.comp[TL_COMP_COND].devices[0], TL_PLAN_HOST);
}

static void expect_err(const char *spec, tl_status want, const char *needle) {
    tl_plan_device d[TL_PLAN_MAX_DEVICES];
    size_t n = devs3(d);
    tl_backend_spec b;
    tl_status s = tl_plan_parse_backend(spec, d, n, &b);
    if (s != want || !strstr(tl_last_error(), needle))
        fail_msg("backend '%s': got %s '%s', want %s with '%s'", spec, tl_status_name(s),
                 tl_last_error(), tl_status_name(want), needle);
}

static void test_backend_errors(void **state) {
    (void)state;
    expect_err("", TL_ERR_INVALID_ARG, "empty");
    expect_err("unet2=cuda0", TL_ERR_NOT_FOUND, "unknown component 'unet2'");
    expect_err("vae=cuda7", TL_ERR_NOT_FOUND, "unknown device 'cuda7'");
    expect_err("vae=cu", TL_ERR_INVALID_ARG, "ambiguous");
    expect_err("vae=", TL_ERR_INVALID_ARG, "empty device list");
    expect_err("vae=cuda0&", TL_ERR_INVALID_ARG, "empty device");
    expect_err("vae=cuda0,,cond=cpu", TL_ERR_INVALID_ARG, "empty item");
    expect_err("vae=cuda0,firststage=cpu", TL_ERR_INVALID_ARG, "component 'vae' is given twice");
    expect_err("cuda0,*=cuda1", TL_ERR_INVALID_ARG, "default is given twice");
    expect_err("dit=cuda0&cpu", TL_ERR_INVALID_ARG, "cpu cannot be part of a split");
    expect_err("dit=cuda0&cuda0", TL_ERR_INVALID_ARG, "listed twice");
    expect_err("=cuda0", TL_ERR_INVALID_ARG, "missing component");
    tl_plan_device d[TL_PLAN_MAX_DEVICES];
    size_t n;
    tl_backend_spec b;
    assert_int_equal(tl_plan_parse_devices("cpu=8G", d, TL_PLAN_MAX_DEVICES, &n), TL_OK);
    assert_int_equal(tl_plan_parse_backend("vae=gpu", d, n, &b), TL_ERR_NOT_FOUND);
    assert_non_null(strstr(tl_last_error(), "no"));
    /* without a GPU, auto and default are the host (stable-diffusion.cpp's fallback) */
    assert_int_equal(tl_plan_parse_backend("vae=auto,cond=default", d, n, &b), TL_OK);
    assert_int_equal(b.comp[TL_COMP_VAE].devices[0], TL_PLAN_HOST);
    assert_int_equal(b.comp[TL_COMP_COND].devices[0], TL_PLAN_HOST);
    /* disk is a parameter residency, not a device */
    assert_int_equal(tl_plan_parse_backend("vae=disk", d, n, &b), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "parameter residency"));
}

static void test_max_vram(void **state) {
    (void)state;
    tl_plan_device d[TL_PLAN_MAX_DEVICES];
    size_t n = devs3(d);
    uint64_t b[TL_PLAN_MAX_DEVICES];
    assert_int_equal(tl_plan_parse_max_vram(NULL, d, n, 0, b), TL_OK);
    assert_int_equal(b[0], 16 * GIB);
    assert_int_equal(b[1], 10 * GIB);
    assert_int_equal(b[2], 64 * GIB);
    assert_int_equal(tl_plan_parse_max_vram("8G", d, n, 0, b), TL_OK);
    assert_int_equal(b[0], 8 * GIB);
    assert_int_equal(b[1], 8 * GIB);
    assert_int_equal(tl_plan_parse_max_vram("-2G", d, n, 0, b), TL_OK);
    assert_int_equal(b[0], 14 * GIB);
    assert_int_equal(b[1], 8 * GIB);
    assert_int_equal(tl_plan_parse_max_vram("cuda0=6G,cuda1=4G", d, n, 0, b), TL_OK);
    assert_int_equal(b[0], 6 * GIB);
    assert_int_equal(b[1], 4 * GIB);
    assert_int_equal(tl_plan_parse_max_vram("cuda1=-1G,12G", d, n, 0, b), TL_OK);
    assert_int_equal(b[0], 12 * GIB);
    assert_int_equal(b[1], 9 * GIB);
    assert_int_equal(tl_plan_parse_max_vram("9.5G", d, n, 0, b), TL_OK);
    assert_int_equal(b[0], 9 * GIB + 512 * MIB);
    /* headroom comes off first; an absolute cap above what is left changes nothing */
    assert_int_equal(tl_plan_parse_max_vram("15G", d, n, 2 * GIB, b), TL_OK);
    assert_int_equal(b[0], 14 * GIB);
    assert_int_equal(b[1], 8 * GIB);
    assert_int_equal(tl_plan_parse_max_vram("-20G", d, n, 0, b), TL_OK);
    assert_int_equal(b[0], 0);
    /* stable-diffusion.cpp's forms: GiB without a unit, a unitless 0 = no cap */
    assert_int_equal(tl_plan_parse_max_vram("-1", d, n, 0, b), TL_OK);
    assert_int_equal(b[0], 15 * GIB);
    assert_int_equal(b[1], 9 * GIB);
    assert_int_equal(tl_plan_parse_max_vram("6.5", d, n, 0, b), TL_OK);
    assert_int_equal(b[0], 6 * GIB + 512 * MIB);
    assert_int_equal(tl_plan_parse_max_vram("cuda0=6,cuda1=-0.5", d, n, 0, b), TL_OK);
    assert_int_equal(b[0], 6 * GIB);
    assert_int_equal(b[1], 9 * GIB + 512 * MIB);
    assert_int_equal(tl_plan_parse_max_vram("0", d, n, 0, b), TL_OK);
    assert_int_equal(b[0], 16 * GIB);
    assert_int_equal(b[1], 10 * GIB);
    assert_int_equal(tl_plan_parse_max_vram("cuda0=0,4G", d, n, 0, b), TL_OK);
    assert_int_equal(b[0], 16 * GIB);
    assert_int_equal(b[1], 4 * GIB);
    assert_int_equal(tl_plan_parse_max_vram("0G", d, n, 0, b), TL_OK);
    assert_int_equal(b[0], 0);
    assert_int_equal(tl_plan_parse_max_vram("lots", d, n, 0, b), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_plan_parse_max_vram("cuda9=1G", d, n, 0, b), TL_ERR_NOT_FOUND);
    assert_int_equal(tl_plan_parse_max_vram("cpu=1G", d, n, 0, b), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_plan_parse_max_vram("cuda0=1G,cuda0=2G", d, n, 0, b), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_plan_parse_max_vram("1G,2G", d, n, 0, b), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_plan_parse_max_vram("1G,,", d, n, 0, b), TL_ERR_INVALID_ARG);
}

static void test_reserve_size_phases(void **state) {
    (void)state;
    uint64_t r[TL_COMP_COUNT];
    tl_plan_default_reserves(r);
    assert_int_equal(r[TL_COMP_DIFFUSION], 2048 * MIB);
    assert_int_equal(r[TL_COMP_VAE], 1024 * MIB);
    assert_int_equal(r[TL_COMP_COND], 512 * MIB);
    assert_int_equal(tl_plan_parse_reserve("diffusion=3G,tae=512M", r), TL_OK);
    assert_int_equal(r[TL_COMP_DIFFUSION], 3 * GIB);
    assert_int_equal(r[TL_COMP_VAE], 512 * MIB);
    assert_int_equal(tl_plan_parse_reserve("vae=1G,vae=2G", r), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_plan_parse_reserve("foo=1G", r), TL_ERR_NOT_FOUND);
    assert_int_equal(tl_plan_parse_reserve("vae", r), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_plan_parse_reserve("vae=-1G", r), TL_ERR_INVALID_ARG);

    tl_plan_size sz;
    assert_int_equal(tl_plan_parse_size("1024x768", &sz), TL_OK);
    assert_int_equal(sz.width, 1024);
    assert_int_equal(sz.height, 768);
    assert_int_equal(sz.frames, 1);
    assert_int_equal(tl_plan_parse_size("768X512x97", &sz), TL_OK);
    assert_int_equal(sz.frames, 97);
    assert_int_equal(tl_plan_parse_size("1024", &sz), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_plan_parse_size("0x5", &sz), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_plan_parse_size("5x5x", &sz), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_plan_parse_size("5x5 ", &sz), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_plan_parse_size("99999999x5", &sz), TL_ERR_INVALID_ARG);

    tl_plan_phases ph;
    tl_plan_default_phases(&ph);
    assert_int_equal(ph.n, 3);
    assert_int_equal(ph.mask[0], 1u << TL_COMP_COND);
    assert_int_equal(tl_plan_parse_phases("llm,dit+controlnet,vae", &ph), TL_OK);
    assert_int_equal(ph.n, 3);
    assert_int_equal(ph.mask[1], (1u << TL_COMP_DIFFUSION) | (1u << TL_COMP_CONTROLNET));
    assert_int_equal(tl_plan_parse_phases("cond,cond", &ph), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_plan_parse_phases("cond,,vae", &ph), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_plan_parse_phases("cond+,vae", &ph), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_plan_parse_phases("x", &ph), TL_ERR_NOT_FOUND);

    uint64_t v;
    bool neg;
    assert_int_equal(tl_parse_bytes("1.5KiB", &v, NULL), TL_OK);
    assert_int_equal(v, 1536);
    assert_int_equal(tl_parse_bytes("-2G", &v, &neg), TL_OK);
    assert_true(neg);
    assert_int_equal(tl_parse_bytes("-2G", &v, NULL), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_parse_bytes("2Q", &v, NULL), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_parse_bytes("", &v, NULL), TL_ERR_INVALID_ARG);
}

static void test_vae_tiling(void **state) {
    (void)state;
    tl_vae_tiling t;
    tl_plan_size s = {512, 512, 1};
    /* 64x64 latent = 4096 voxels x 256 KiB = 1 GiB: fits the default reserve */
    assert_int_equal(tl_plan_vae_tiling(&s, GIB, 0, &t), TL_OK);
    assert_true(t.decided);
    assert_false(t.tiled);
    assert_int_equal(t.tiles, 1);
    s.width = s.height = 1024;
    assert_int_equal(tl_plan_vae_tiling(&s, GIB, 0, &t), TL_OK);
    assert_true(t.tiled);
    assert_int_equal(t.tile, 64); /* sqrt(4096) */
    assert_true(t.overlap == 0.5);
    assert_int_equal(t.tiles, 9); /* 3 x 3 with stride 32 over 128 */
    /* video: time is untiled, tile = round(sqrt(budget / T)) */
    tl_plan_size v = {768, 512, 25};
    assert_int_equal(tl_plan_vae_tiling(&v, 2 * GIB, 0, &t), TL_OK);
    assert_true(t.tiled);
    assert_int_equal(t.tile, 18); /* sqrt(8192 / 25) = 18.1 */
    /* clamped to at least 8 */
    assert_int_equal(tl_plan_vae_tiling(&s, MIB, 0, &t), TL_OK);
    assert_int_equal(t.tile, 8);
    /* plenty: untiled */
    assert_int_equal(tl_plan_vae_tiling(&s, 64 * GIB, 0, &t), TL_OK);
    assert_false(t.tiled);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_devices),
        cmocka_unit_test(test_backend_forms),
        cmocka_unit_test(test_backend_errors),
        cmocka_unit_test(test_max_vram),
        cmocka_unit_test(test_reserve_size_phases),
        cmocka_unit_test(test_vae_tiling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
