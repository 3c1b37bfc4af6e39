/*
 * test_sdcpp_flags.c — stable-diffusion.cpp's flags on `plan` and `run`
 * (device, parameter residency, split, --max-vram, --stream-layers, module
 * and device names, auto-fit): each alias gives exactly the plan (the JSON
 * document, byte for byte) of the canonical flags it stands for;
 * --list-devices prints what `tierload devices` prints; components tierload
 * does not model are accepted with a note; --fit-dry-run prints the plan and
 * runs nothing; --help shows every alias as "= ..."; three whole command
 * lines from sd.cpp's docs plan as tierload's own flags do, with one note for
 * the flags tierload ignores.
 */
#include "testutil.h"

#include "st_writer.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAXA 32

/* `tierload <argv...>` with a NULL-terminated list */
static tu_run run_list(const char *const *args) {
    char *argv[MAXA + 2];
    int n = 0;
    argv[n++] = (char *)tu_cli();
    for (; *args && n < MAXA; args++) argv[n++] = (char *)*args;
    argv[n] = NULL;
    return tu_run_argv(argv);
}

static tu_run plan_with(const char *devices, const char *a1, const char *a2, const char *a3) {
    const char *args[] = {"plan", "--profile", "sdxl", "--devices", devices, "--json", a1, a2, a3, NULL};
    return run_list(args);
}

typedef struct alias_case {
    const char *alias[2];     /* the stable-diffusion.cpp flag (and value) */
    const char *canonical[2]; /* what it stands for */
    const char *canon_devices; /* devices of the canonical run (NULL: the same) */
} alias_case;

static const char *const DEVS = "cuda0=12G,cuda1=8G";

static const alias_case cases[] = {
    {{"--main-backend-device", "cuda1"}, {"--backend", "default=cuda1"}, NULL},
    {{"--diffusion-backend-device", "cuda1"}, {"--backend", "diffusion=cuda1"}, NULL},
    {{"--clip-backend-device", "cpu"}, {"--backend", "cond=cpu"}, NULL},
    {{"--vae-backend-device", "cuda1"}, {"--backend", "vae=cuda1"}, NULL},
    {{"--control-net-backend-device", "cpu"}, {"--backend", "controlnet=cpu"}, NULL},
    {{"--params-backend", "cpu"}, {"--offload-to-cpu", NULL}, NULL},
    {{"--no-auto-fit", NULL}, {"--backend", "default=cuda0"}, NULL},
    {{"--auto-fit", NULL}, {NULL, NULL}, NULL},
    {{"--no-multi-gpu", NULL}, {NULL, NULL}, "cuda0=12G"},
    {{"--fit-target", "3G"}, {"--headroom", "3G"}, NULL},
    {{"--fit-compute-reserve-dit", "5G"}, {"--reserve", "diffusion=5G"}, NULL},
    {{"--fit-compute-reserve-vae", "3G"}, {"--reserve", "vae=3G"}, NULL},
    {{"--fit-compute-reserve-cond", "1500M"}, {"--reserve", "cond=1500M"}, NULL},
    /* parameter residency: cpu = streamed from RAM, disk = loaded per phase, a device = the
       module's own (the default) */
    {{"--params-backend", "disk"}, {"--phase-resident", "all"}, NULL},
    {{"--params-backend", "te=cpu,vae=cpu"}, {"--offload", "cond,vae"}, NULL},
    {{"--params-backend", "diffusion=disk"}, {"--phase-resident", "diffusion"}, NULL},
    {{"--params-backend", "*=cpu"}, {"--offload-to-cpu", NULL}, NULL},
    {{"--params-backend", "diffusion=cuda0"}, {NULL, NULL}, NULL},
    {{"--params-backend", "te=CUDA1,vae=auto"}, {NULL, NULL}, NULL},
    {{"--stream-layers", NULL}, {"--offload", "diffusion"}, NULL},
    /* --max-vram in GiB without a unit, negative = free minus, per device, 0 = no cap */
    {{"--max-vram", "-1"}, {"--max-vram", "-1G"}, NULL},
    {{"--max-vram", "6.5"}, {"--max-vram", "6.5G"}, NULL},
    {{"--max-vram", "cuda0=6,cuda1=2"}, {"--max-vram", "cuda0=6G,cuda1=2G"}, NULL},
    {{"--max-vram", "0"}, {NULL, NULL}, NULL},
    /* module names and aliases (case, '-' and '_' ignored) */
    {{"--backend", "te=cpu"}, {"--backend", "cond=cpu"}, NULL},
    {{"--backend", "TextEncoder=cpu"}, {"--backend", "cond=cpu"}, NULL},
    {{"--backend", "text_encoders=cpu"}, {"--backend", "cond=cpu"}, NULL},
    {{"--backend", "t5=cpu"}, {"--backend", "cond=cpu"}, NULL},
    {{"--backend", "T5XXL=cpu"}, {"--backend", "cond=cpu"}, NULL},
    {{"--backend", "llm=cpu"}, {"--backend", "cond=cpu"}, NULL},
    {{"--backend", "Conditioner=cpu"}, {"--backend", "cond=cpu"}, NULL},
    {{"--backend", "text=cpu"}, {"--backend", "cond=cpu"}, NULL},
    {{"--backend", "clip=cpu"}, {"--backend", "cond=cpu"}, NULL},
    {{"--backend", "first-stage=cpu"}, {"--backend", "vae=cpu"}, NULL},
    {{"--backend", "UNet=cuda1"}, {"--backend", "diffusion=cuda1"}, NULL},
    {{"--backend", "all=cuda1"}, {"--backend", "default=cuda1"}, NULL},
    {{"--backend", "*=cuda1"}, {"--backend", "default=cuda1"}, NULL},
    {{"--backend", "cuda1"}, {"--backend", "default=cuda1"}, NULL},
    /* backend names: case, unique prefixes, auto / default / gpu (the most free memory) */
    {{"--backend", "vae=CUDA1"}, {"--backend", "vae=cuda1"}, NULL},
    {{"--backend", "vae=default"}, {"--backend", "vae=cuda0"}, NULL},
    {{"--backend", "vae=auto"}, {"--backend", "vae=cuda0"}, NULL},
    {{"--backend", "vae=gpu"}, {"--backend", "vae=cuda0"}, NULL},
    {{"--backend", "vae=,te=cpu"}, {"--backend", "vae=cuda0,cond=cpu"}, NULL},
    /* modules tierload has no component for: accepted, nothing placed */
    {{"--backend", "clip_vision=cpu,te=cpu"}, {"--backend", "cond=cpu"}, NULL},
    {{"--backend", "Photo-Maker=cpu"}, {NULL, NULL}, NULL},
    {{"--backend", "esrgan=cpu"}, {NULL, NULL}, NULL},
    {{"--backend", "adetailer=cpu"}, {NULL, NULL}, NULL},
};

static void test_each_alias_equals_its_canonical_flags(void **state) {
    (void)state;
    tu_run plain = plan_with(DEVS, NULL, NULL, NULL);
    assert_int_equal(plain.status, 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const alias_case *c = &cases[i];
        tu_run a = plan_with(DEVS, c->alias[0], c->alias[1], NULL);
        tu_run b = plan_with(c->canon_devices ? c->canon_devices : DEVS, c->canonical[0],
                             c->canonical[1], NULL);
        if (a.status != 0 || b.status != 0)
            fail_msg("%s: exit %d / %d: %s %s", c->alias[0], a.status, b.status, a.err, b.err);
        if (strcmp(a.out, b.out) != 0) fail_msg("%s: the plan differs from its canonical flags", c->alias[0]);
        /* and each one that changes something changes the plan (sdxl has no controlnet) */
        if ((c->canonical[0] || c->canon_devices) && strstr(c->alias[0], "control-net") == NULL)
            if (!strcmp(a.out, plain.out)) fail_msg("%s: the plan did not change", c->alias[0]);
        tu_run_free(&a);
        tu_run_free(&b);
    }
    tu_run_free(&plain);
}

/* `tierload plan --profile sdxl --devices DEVS --json` + a NULL-terminated list */
static tu_run plan_list(const char *devices, const char *const *extra) {
    const char *args[MAXA + 1] = {"plan", "--profile", "sdxl", "--devices", devices, "--json"};
    size_t n = 6;
    for (; *extra && n < MAXA; extra++)
        args[n++] = *extra;
    args[n] = NULL;
    return run_list(args);
}

typedef struct multi_case {
    const char *devices;
    const char *alias[12];     /* NULL-terminated */
    const char *canonical[12]; /* NULL-terminated */
} multi_case;

static const multi_case multi[] = {
    /* split mode: per module, or one for all, on GPUs the backend lists */
    {"cuda0=12G,cuda1=8G",
     {"--backend", "diffusion=cuda0&cuda1", "--split-mode", "row", NULL},
     {"--backend", "diffusion=cuda0&cuda1", "--split", "row", NULL}},
    {"cuda0=12G,cuda1=8G",
     {"--backend", "diffusion=cuda0&cuda1,te=cuda0&cuda1", "--split-mode", "diffusion=row,te=layer",
      NULL},
     {"--backend", "diffusion=cuda0&cuda1,cond=cuda0&cuda1", "--split", "diffusion=row,cond=layer",
      NULL}},
    /* --offload-to-cpu is "*=cpu" before the --params-backend assignments */
    {"cuda0=12G,cuda1=8G",
     {"--offload-to-cpu", "--params-backend", "te=disk", NULL},
     {"--offload", "diffusion,vae,controlnet,other", "--phase-resident", "cond", NULL}},
    /* --stream-layers with CPU params changes nothing more; with disk params it is ignored */
    {"cuda0=12G,cuda1=8G",
     {"--offload-to-cpu", "--stream-layers", NULL},
     {"--offload-to-cpu", NULL}},
    {"cuda0=12G,cuda1=8G",
     {"--params-backend", "diffusion=disk", "--stream-layers", NULL},
     {"--phase-resident", "diffusion", NULL}},
    /* --auto-fit places every component: --backend and --params-backend are ignored */
    {"cuda0=12G,cuda1=8G",
     {"--auto-fit", "--backend", "te=cpu", "--params-backend", "diffusion=disk", NULL},
     {NULL}},
    /* the output size (VAE tiling) */
    {"cuda0=12G,cuda1=8G",
     {"-W", "1024", "-H", "768", NULL},
     {"--size", "1024x768", NULL}},
    {"cuda0=12G,cuda1=8G",
     {"--width", "832", "--height", "480", "--video-frames", "33", NULL},
     {"--size", "832x480x33", NULL}},
    /* module assignments given twice are joined, as sd-cli joins them */
    {"cuda0=12G,cuda1=8G",
     {"--backend", "te=cpu", "--backend", "vae=cuda1", "--params-backend", "diffusion=disk",
      "--params-backend", "vae=cpu", NULL},
     {"--backend", "cond=cpu,vae=cuda1", "--phase-resident", "diffusion", "--offload", "vae", NULL}},
    /* backend names: unique prefixes, per-device budgets on other backends' names */
    {"cuda0=12G,vulkan0=8G",
     {"--backend", "diffusion=vulk,vae=cu", "--max-vram", "cuda0=6,vulkan0=-1", NULL},
     {"--backend", "diffusion=vulkan0,vae=cuda0", "--max-vram", "cuda0=6G,vulkan0=-1G", NULL}},
};

static void test_aliases_with_several_flags(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof multi / sizeof multi[0]; i++) {
        tu_run a = plan_list(multi[i].devices, multi[i].alias);
        tu_run b = plan_list(multi[i].devices, multi[i].canonical);
        if (a.status != 0 || b.status != 0)
            fail_msg("case %zu: exit %d / %d: %s %s", i, a.status, b.status, a.err, b.err);
        if (strcmp(a.out, b.out) != 0) fail_msg("case %zu: the plan differs from its canonical flags", i);
        tu_run_free(&a);
        tu_run_free(&b);
    }
    /* what it stands for shows in the plan: a row split */
    const char *row[] = {"--backend", "diffusion=cuda0&cuda1", "--split-mode", "row", NULL};
    tu_run a = plan_list("cuda0=12G,cuda1=8G", row);
    assert_non_null(strstr(a.out, "\"mode\":\t\"row_split\""));
    tu_run_free(&a);
    /* errors name the flag and the item */
    const char *bad1[] = {"--split-mode", "diagonal", NULL};
    a = plan_list("cuda0=12G", bad1);
    assert_int_equal(a.status, 2);
    assert_non_null(strstr(a.err, "--split-mode"));
    tu_run_free(&a);
    const char *bad2[] = {"--params-backend", "nosuchmodule=cpu", NULL};
    a = plan_list("cuda0=12G", bad2);
    assert_int_equal(a.status, 2);
    assert_non_null(strstr(a.err, "nosuchmodule"));
    tu_run_free(&a);
    const char *bad3[] = {"--backend", "disk", NULL};
    a = plan_list("cuda0=12G", bad3);
    assert_true(a.status > 0 && a.status < 126);
    assert_non_null(strstr(a.err, "parameter residency"));
    tu_run_free(&a);
    /* a device in --params-backend (where the module runs) must be one */
    const char *bad5[] = {"--params-backend", "diffusion=dsk", NULL};
    a = plan_list("cuda0=12G", bad5);
    assert_true(a.status > 0 && a.status < 126);
    assert_non_null(strstr(a.err, "--params-backend item 'diffusion=dsk': unknown device"));
    tu_run_free(&a);
    const char *bad6[] = {"--backend", "te=cpu", "--backend", "clip=cuda0", NULL};
    a = plan_list("cuda0=12G", bad6);
    assert_int_equal(a.status, 2);
    assert_non_null(strstr(a.err, "given twice"));
    tu_run_free(&a);
    const char *bad4[] = {"--params-backend", "diffusion=disk", "--offload", "diffusion", NULL};
    a = plan_list("cuda0=12G", bad4);
    assert_true(a.status > 0 && a.status < 126);
    assert_non_null(strstr(a.err, "diffusion"));
    tu_run_free(&a);
}

static void test_no_auto_fit_with_main_device_and_combined(void **state) {
    (void)state;
    /* --no-auto-fit with a main device: every unplaced component there */
    tu_run a = plan_with(DEVS, "--no-auto-fit", "--main-backend-device", "cuda1");
    tu_run b = plan_with(DEVS, "--backend", "default=cuda1", NULL);
    assert_int_equal(a.status, 0);
    assert_string_equal(a.out, b.out);
    tu_run_free(&a);
    tu_run_free(&b);
    /* two reserve aliases together = one --reserve list */
    const char *args1[] = {"plan", "--profile", "sdxl", "--devices", DEVS, "--json",
                           "--fit-compute-reserve-dit", "5G", "--fit-compute-reserve-vae", "3G", NULL};
    const char *args2[] = {"plan", "--profile", "sdxl", "--devices", DEVS, "--json",
                           "--reserve", "diffusion=5G,vae=3G", NULL};
    a = run_list(args1);
    b = run_list(args2);
    assert_int_equal(a.status, 0);
    assert_string_equal(a.out, b.out);
    tu_run_free(&a);
    tu_run_free(&b);
}

static void test_unmodelled_components_accepted_with_a_note(void **state) {
    (void)state;
    static const char *const flags[] = {"--tae-backend-device", "--upscaler-backend-device",
                                        "--photomaker-backend-device", "--vision-backend-device"};
    tu_run plain = plan_with(DEVS, NULL, NULL, NULL);
    for (size_t i = 0; i < 4; i++) {
        tu_run a = plan_with(DEVS, flags[i], "cuda1", NULL);
        assert_int_equal(a.status, 0);
        assert_string_equal(a.out, plain.out);
        assert_non_null(strstr(a.err, flags[i]));
        assert_non_null(strstr(a.err, "no such component"));
        tu_run_free(&a);
    }
    tu_run_free(&plain);
}

static void test_list_devices_and_help(void **state) {
    (void)state;
    const char *l1[] = {"plan", "--list-devices", "--sim", "ld0=1G", NULL};
    const char *l2[] = {"devices", "--sim", "ld0=1G", NULL};
    tu_run a = run_list(l1), b = run_list(l2);
    assert_int_equal(a.status, 0);
    assert_int_equal(b.status, 0);
    /* the same listing (the host's free memory moves between the two runs: compare the sim line) */
    const char *la = strstr(a.out, "ld0"), *lb = strstr(b.out, "ld0");
    assert_non_null(la);
    assert_non_null(lb);
    size_t na = strcspn(la, "\n"), nb = strcspn(lb, "\n");
    assert_int_equal(na, nb);
    assert_memory_equal(la, lb, na);
    assert_int_equal(strlen(a.out) > 0, strlen(b.out) > 0);
    tu_run_free(&a);
    tu_run_free(&b);
    const char *r1[] = {"run", "--list-devices", NULL};
    a = run_list(r1);
    assert_int_equal(a.status, 0);
    tu_run_free(&a);
    static const char *const shown[] = {
        "--main-backend-device DEV        = --backend default=DEV",
        "--diffusion-backend-device DEV   = --backend diffusion=DEV",
        "--clip-backend-device DEV        = --backend cond=DEV",
        "--vae-backend-device DEV         = --backend vae=DEV",
        "--control-net-backend-device DEV = --backend controlnet=DEV",
        "--list-devices                   = tierload devices",
        "--params-backend cpu             = --offload-to-cpu",
        "--no-auto-fit                    = --backend default=MAIN",
        "--fit-target SIZE                = --headroom SIZE",
        "--fit-compute-reserve-dit SIZE   = --reserve diffusion=SIZE",
        "--fit-compute-reserve-vae SIZE   = --reserve vae=SIZE",
        "--fit-compute-reserve-cond SIZE  = --reserve cond=SIZE",
        "--fit-dry-run                    = print the plan and stop",
        "--no-multi-gpu                   = only the main GPU",
        "--vision-backend-device DEV      = accepted",
        "--params-backend disk            = --phase-resident all",
        "= --offload cond,vae --phase-resident diffusion",
        "--stream-layers                  = --offload diffusion",
        "--split-mode layer|row|SPEC      = --split SPEC",
        "= --max-vram 6G | -1G | cuda0=6G,vulkan0=2G",
        "-m F, --model F  = F",
        "= accepted and\n                                     ignored with one note",
        "-W W -H H [--video-frames T]     = --size WxH[xT]",
    };
    for (int cmd = 0; cmd < 2; cmd++) {
        const char *h[] = {cmd ? "run" : "plan", "--help", NULL};
        a = run_list(h);
        assert_int_equal(a.status, 0);
        for (size_t i = 0; i < sizeof shown / sizeof shown[0]; i++)
            if (!strstr(a.out, shown[i])) fail_msg("%s --help lacks '%s'", h[0], shown[i]);
        tu_run_free(&a);
    }
}

static void test_run_fit_dry_run_and_aliases(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *m = tu_path(dir, "m.safetensors");
    tu_run r = tu_cli_run("mkmodel", m, "--size", "16M", "--tensors", "60", "--profile", "sdxl", NULL);
    assert_int_equal(r.status, 0);
    tu_run_free(&r);
    /* dry run: the plan `plan` prints, and no phase runs */
    const char *a1[] = {"run", m, "--devices", "dry0=64M,cpu=8G", "--fit-dry-run", "--fit-compute-reserve-dit", "8M", NULL};
    const char *a2[] = {"plan", m, "--devices", "dry0=64M,cpu=8G", "--reserve", "diffusion=8M", NULL};
    tu_run a = run_list(a1), b = run_list(a2);
    assert_int_equal(a.status, 0);
    assert_int_equal(b.status, 0);
    assert_string_equal(a.out, b.out);
    assert_null(strstr(a.out, "hash mismatches"));
    tu_run_free(&a);
    tu_run_free(&b);
    /* run with an alias carries out the plan of the canonical flags: same JSON report shape */
    const char *a3[] = {"run", m, "--devices", "dry1=64M,cpu=8G", "--fit-dry-run", "--json", "--clip-backend-device", "cpu", NULL};
    const char *a4[] = {"plan", m, "--devices", "dry1=64M,cpu=8G", "--json", "--backend", "cond=cpu", NULL};
    a = run_list(a3);
    b = run_list(a4);
    assert_int_equal(a.status, 0);
    assert_string_equal(a.out, b.out);
    tu_run_free(&a);
    tu_run_free(&b);
    free(m);
    tu_tmpdir_rm(dir);
}

/* The JSON object of component name in a plan document ("" when absent), in buf. */
static const char *comp_json(const char *doc, const char *name, char *buf, size_t n) {
    char key[64];
    snprintf(key, sizeof key, "\"name\":\t\"%s\"", name);
    const char *a = strstr(doc, key);
    if (!a) return "";
    const char *b = strstr(a + 1, "\"name\":");
    size_t len = b ? (size_t)(b - a) : strlen(a);
    if (len >= n) len = n - 1;
    memcpy(buf, a, len);
    buf[len] = 0;
    return buf;
}

static void write_st(const char *dir, const char *name, const sw_tensor *t, size_t n) {
    size_t len;
    uint8_t *img = sw_build(t, n, NULL, true, &len);
    char *path = tu_path(dir, name);
    assert_true(sw_write_file(path, img, len));
    free(path);
    free(img);
}

/*
 * Three complete command lines from stable-diffusion.cpp's docs (August 2026:
 * docs/performance.md, docs/backend.md, the model flags of docs/flux.md), with
 * "sd-cli" replaced by "tierload plan" and hypothetical devices added: each
 * plans exactly as tierload's own flags for the same thing, its sampler and
 * prompt flags are ignored with one note, and the plan is what the flags ask.
 */
static void test_pasted_command_lines(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    assert_int_equal(chdir(dir), 0);
    const sw_tensor flux[] = {{"img_in.weight", "F16", 2, {256, 64}},
                              {"double_blocks.0.img_attn.qkv.weight", "F16", 2, {768, 256}},
                              {"double_blocks.1.img_attn.qkv.weight", "F16", 2, {768, 256}},
                              {"single_blocks.0.linear1.weight", "F16", 2, {768, 256}},
                              {"single_blocks.1.linear1.weight", "F16", 2, {768, 256}}};
    const sw_tensor ae[] = {{"encoder.down.0.block.0.conv1.weight", "F16", 4, {64, 64, 3, 3}},
                            {"decoder.up.0.block.0.conv1.weight", "F16", 4, {64, 64, 3, 3}}};
    const sw_tensor clip[] = {{"text_model.encoder.layers.0.mlp.fc1.weight", "F16", 2, {512, 256}},
                              {"text_model.encoder.layers.1.mlp.fc1.weight", "F16", 2, {512, 256}}};
    const sw_tensor t5[] = {
        {"encoder.block.0.layer.1.DenseReluDense.wi.weight", "F16", 2, {512, 256}},
        {"encoder.block.1.layer.1.DenseReluDense.wi.weight", "F16", 2, {512, 256}}};
    write_st(dir, "flux1-dev.safetensors", flux, 5);
    write_st(dir, "ae.safetensors", ae, 2);
    write_st(dir, "clip_l.safetensors", clip, 2);
    write_st(dir, "t5xxl_fp16.safetensors", t5, 2);
    tu_run r = tu_cli_run("mkmodel", "model.safetensors", "--size", "16M", "--tensors", "60",
                          "--profile", "sdxl", NULL);
    assert_int_equal(r.status, 0);
    tu_run_free(&r);
    const char *devs = "cuda0=8G,cuda1=8G";
    char buf[4096];
    /* 1. "the biggest model my card can host" (performance.md) on flux.md's model flags */
    const char *p1[] = {"plan", "--diffusion-model", "flux1-dev.safetensors", "--vae",
                        "ae.safetensors", "--clip_l", "clip_l.safetensors", "--t5xxl",
                        "t5xxl_fp16.safetensors", "-p", "a lovely cat holding a sign says 'flux.cpp'",
                        "--cfg-scale", "1.0", "--sampling-method", "euler", "-v",
                        "--offload-to-cpu", "--max-vram", "-1", "--stream-layers",
                        "--devices", devs, "--json", NULL};
    const char *c1[] = {"plan", "--diffusion-model", "flux1-dev.safetensors", "--vae",
                        "ae.safetensors", "--clip_l", "clip_l.safetensors", "--t5xxl",
                        "t5xxl_fp16.safetensors", "--offload-to-cpu", "--max-vram", "-1G",
                        "--offload", "diffusion", "--devices", devs, "--json", NULL};
    tu_run a = run_list(p1), b = run_list(c1);
    if (a.status || b.status) fail_msg("line 1: exit %d / %d: %s %s", a.status, b.status, a.err, b.err);
    assert_string_equal(a.out, b.out);
    assert_non_null(strstr(a.err, "ignored"));
    assert_non_null(strstr(a.err, "-p, --cfg-scale, --sampling-method, -v"));
    assert_null(strstr(strstr(a.err, "ignored") + 1, "ignored")); /* one note */
    static const char *const comps[] = {"diffusion", "cond", "vae"};
    for (size_t i = 0; i < 3; i++) /* everything streamed from RAM */
        if (!strstr(comp_json(a.out, comps[i], buf, sizeof buf), "\"mode\":\t\"stream\""))
            fail_msg("line 1: %s is not streamed: %s", comps[i], buf);
    assert_non_null(strstr(a.out, "\"budget\":\t7516192768")); /* 8G - 1G */
    tu_run_free(&a);
    tu_run_free(&b);
    /* 2. disk params for the diffusion model, CPU params for the rest (performance.md) */
    const char *p2[] = {"plan", "-m", "model.safetensors", "-p", "a cat", "--backend", "cuda0",
                        "--params-backend", "diffusion=disk,te=cpu,vae=cpu",
                        "--devices", devs, "--json", NULL};
    const char *c2[] = {"plan", "model.safetensors", "--backend", "cuda0", "--phase-resident",
                        "diffusion", "--offload", "cond,vae", "--devices", devs, "--json", NULL};
    a = run_list(p2);
    b = run_list(c2);
    if (a.status || b.status) fail_msg("line 2: exit %d / %d: %s %s", a.status, b.status, a.err, b.err);
    assert_string_equal(a.out, b.out);
    comp_json(a.out, "diffusion", buf, sizeof buf);
    assert_non_null(strstr(buf, "\"mode\":\t\"gpu\""));
    assert_non_null(strstr(buf, "\"residency\":\t\"phase\""));
    assert_non_null(strstr(buf, "\"devices\":\t[\"cuda0\"]"));
    for (size_t i = 1; i < 3; i++)
        if (!strstr(comp_json(a.out, comps[i], buf, sizeof buf), "\"mode\":\t\"stream\""))
            fail_msg("line 2: %s is not streamed: %s", comps[i], buf);
    tu_run_free(&a);
    tu_run_free(&b);
    /* 3. a row split over two GPUs (backend.md) */
    const char *p3[] = {"plan", "-m", "model.safetensors", "-p", "a cat", "--backend",
                        "diffusion=cuda0&cuda1", "--split-mode", "row", "--devices", devs,
                        "--json", NULL};
    const char *c3[] = {"plan", "model.safetensors", "--backend", "diffusion=cuda0&cuda1",
                        "--split", "row", "--devices", devs, "--json", NULL};
    a = run_list(p3);
    b = run_list(c3);
    if (a.status || b.status) fail_msg("line 3: exit %d / %d: %s %s", a.status, b.status, a.err, b.err);
    assert_string_equal(a.out, b.out);
    comp_json(a.out, "diffusion", buf, sizeof buf);
    assert_non_null(strstr(buf, "\"mode\":\t\"row_split\""));
    assert_non_null(strstr(buf, "\"cuda0\", \"cuda1\""));
    tu_run_free(&a);
    tu_run_free(&b);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_alias_equals_its_canonical_flags),
        cmocka_unit_test(test_aliases_with_several_flags),
        cmocka_unit_test(test_no_auto_fit_with_main_device_and_combined),
        cmocka_unit_test(test_unmodelled_components_accepted_with_a_note),
        cmocka_unit_test(test_list_devices_and_help),
        cmocka_unit_test(test_run_fit_dry_run_and_aliases),
        cmocka_unit_test(test_pasted_command_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
