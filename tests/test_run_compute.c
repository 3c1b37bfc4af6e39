/*
 * test_run_compute.c — `tierload run --compute ggml` and tl_run_pipeline
 * with TL_RUN_COMPUTE_GGML: ggml matrix products on every acquired 2-D
 * weight where it lives, compared with the product of the file's bytes.
 *
 * - the tiny-llama GGUFs of the test data (F16, Q8_0, Q4_0, Q4_K/Q6_K):
 *   component `other` on the cpu, and through a simulated GPU: one product
 *   per 2-D weight (as many as the expected JSON lists: token_embd, output
 *   and 7 matrices a block), 0 product and 0 hash mismatches;
 * - an SD-like safetensors from `tierload mkmodel` under a sim GPU that
 *   forces streaming (evictions, prefetch): one product per acquired tensor
 *   (every mkmodel sdxl tensor is 2-D), 0 mismatches;
 * - weights on ggml:CPU as the plan's GPU: computed there, in place;
 * - a byte flipped in a weight's device copy: the product of the next pass
 *   differs (exactly one), as does its hash;
 * - examples/engine runs on the same kind of files (an LLM on a sim GPU; an
 *   SD-shaped model streamed, with a LoRA patched in between passes): 0
 *   mismatches.
 *
 * ggml comes from the npm package @node-llama-cpp/linux-x64 (installed on
 * first run into $TL_BUILD_DIR/npm-ggml-compute) or TIERLOAD_GGML_DIR;
 * without it every test skips saying why (77), and fails when CI=true.
 */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>


static char ggml_dir[4096];
static char why[1024];
static bool have_ggml;

static bool find_ggml(void) {
    return tu_ggml_dir("npm-ggml-compute", ggml_dir, sizeof ggml_dir, why, sizeof why);
}

static int group_setup(void **state) {
    (void)state;
    have_ggml = find_ggml();
    if (have_ggml) fprintf(stderr, "[run-compute] ggml from %s\n", ggml_dir);
    return 0;
}

#define NEED_GGML()                                                                                \
    do {                                                                                           \
        if (!have_ggml) {                                                                          \
            if (tu_in_ci()) fail_msg("ggml unavailable in CI: %s", why);                           \
            TU_SKIP("%s", why);                                                                    \
        }                                                                                          \
    } while (0)

static uint64_t num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v)) fail_msg("key %s missing", k);
    return (uint64_t)v->valuedouble;
}

/* The 2-D weights of a test-data GGUF, counted in its expected JSON. */
static uint64_t matrices(const char *file) {
    cJSON *exp = tu_expected(file);
    uint64_t n = tu_expected_count(exp, NULL, 2);
    cJSON_Delete(exp);
    assert_true(n > 0);
    return n;
}

/* `tierload run ... --compute ggml --json` (extra args up to NULL); the parsed totals' owner. */
static cJSON *run_json(const char *model, const char *a1, const char *a2, const char *a3,
                       const char *a4, const char *a5, const char *a6, const char *a7) {
    tu_run r = tu_cli_run("run", model, "--compute", "ggml", "--ggml-dir", ggml_dir,
                          "--compute-threads", "1", "--json", a1, a2, a3, a4, a5, a6, a7, NULL);
    if (r.status != 0) fail_msg("run %s: exit %d: %s", model, r.status, r.err);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    tu_run_free(&r);
    return j;
}

static const char *const LLAMAS[] = {"tiny-llama-f16.gguf", "tiny-llama-q8_0.gguf",
                                     "tiny-llama-q4_0.gguf", "tiny-llama-256-q4_k_m.gguf"};

static void test_gguf_quantized(void **state) {
    (void)state;
    NEED_GGML();
    for (size_t i = 0; i < sizeof LLAMAS / sizeof *LLAMAS; i++) {
        char rel[256], path[4200];
        snprintf(rel, sizeof rel, "gguf/%s", LLAMAS[i]);
        snprintf(path, sizeof path, "%s", tu_testdata(rel));
        uint64_t n2d = matrices(LLAMAS[i]);
        /* on the host: the mapping itself, wrapped in place on ggml:CPU */
        cJSON *j = run_json(path, "--pipeline", "other", "--backend", "*=cpu", NULL, NULL, NULL);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "totals");
        assert_int_equal(num(t, "products"), n2d);
        assert_int_equal(num(t, "product_mismatches"), 0);
        assert_int_equal(num(t, "hash_mismatches"), 0);
        cJSON_Delete(j);
        /* through a simulated GPU, twice: copied to the device, computed from a copy back */
        j = run_json(path, "--pipeline", "other*2", "--sim", "cg=64M", "--backend", "*=cg", NULL);
        t = cJSON_GetObjectItemCaseSensitive(j, "totals");
        assert_int_equal(num(t, "products"), 2 * n2d);
        assert_int_equal(num(t, "product_mismatches"), 0);
        assert_int_equal(num(t, "hash_mismatches"), 0);
        assert_true(num(t, "bytes_to_devices") > 0);
        cJSON_Delete(j);
    }
}

static void test_sd_streamed(void **state) {
    (void)state;
    NEED_GGML();
    char *dir = tu_tmpdir();
    const char *dtypes[] = {"F16", "BF16"};
    for (size_t d = 0; d < 2; d++) {
        char *p = tu_path(dir, d ? "bf16.safetensors" : "f16.safetensors");
        tu_run r = tu_cli_run("mkmodel", p, "--size", "24M", "--tensors", "120", "--profile",
                              "sdxl", "--dtype", dtypes[d], NULL);
        assert_int_equal(r.status, 0);
        tu_run_free(&r);
        /* 24 MiB of weights, a 6 MiB GPU: the diffusion model streams layer by layer */
        cJSON *j = run_json(p, "--sim", "cs=6M", "--reserve", "diffusion=0,cond=0,vae=0",
                            "--pipeline", "cond,diffusion*3,vae", NULL);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "totals");
        assert_true(num(t, "evictions") > 0);
        assert_true(num(t, "prefetch_hits") > 0);
        assert_true(num(t, "tensors_checked") > 120);
        assert_int_equal(num(t, "products"), num(t, "tensors_checked"));
        assert_int_equal(num(t, "product_mismatches"), 0);
        assert_int_equal(num(t, "hash_mismatches"), 0);
        const cJSON *ph = cJSON_GetObjectItemCaseSensitive(j, "phases");
        assert_int_equal(cJSON_GetArraySize(ph), 5);
        for (int i = 0; i < 5; i++) {
            const cJSON *x = cJSON_GetArrayItem(ph, i);
            assert_true(num(x, "products") > 0);
            assert_non_null(cJSON_GetObjectItemCaseSensitive(x, "compute_seconds"));
        }
        cJSON_Delete(j);
        free(p);
    }
    tu_tmpdir_rm(dir);
}

/* --- an SD-shaped safetensors with finite weights (mkmodel's are random bits: NaN rows) --- */

#define SD_LAYERS 6
#define SD_2D (SD_LAYERS * 3 + 2 + 1) /* per diffusion block q, k, ff; 2 cond; 1 vae */

static uint64_t rng(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A finite element of dtype with magnitude in [1/16, 2): sign, small exponent, random mantissa. */
static void put_elem(unsigned char *p, tl_dtype dt, uint64_t r) {
    if (dt == TL_DTYPE_F16) {
        uint16_t v = (uint16_t)((r & 1) << 15 | (11 + (r >> 1) % 5) << 10 | (r >> 8 & 0x3ff));
        memcpy(p, &v, 2);
    } else { /* BF16 */
        uint16_t v = (uint16_t)((r & 1) << 15 | (123 + (r >> 1) % 5) << 7 | (r >> 8 & 0x7f));
        memcpy(p, &v, 2);
    }
}

/*
 * model.diffusion_model.input_blocks.K.1.{q,k}.weight [256 x 256] and
 * .ff.weight [512 x 256] (+ a 1-D bias), 2 cond layers [256 x 512], one vae
 * matrix [128 x 256]: SD_2D 2-D weights of dtype.
 */
static void write_sd(const char *path, tl_dtype dt) {
    char names[SD_2D + SD_LAYERS][96];
    int64_t shapes[SD_2D + SD_LAYERS][2];
    uint32_t dims[SD_2D + SD_LAYERS];
    size_t n = 0;
    for (int k = 0; k < SD_LAYERS; k++) {
        const char *mats[] = {"q", "k", "ff"};
        for (int j = 0; j < 3; j++) {
            snprintf(names[n], sizeof names[n], "model.diffusion_model.input_blocks.%d.1.%s.weight",
                     k, mats[j]);
            shapes[n][0] = j == 2 ? 512 : 256;
            shapes[n][1] = 256;
            dims[n++] = 2;
        }
        snprintf(names[n], sizeof names[n], "model.diffusion_model.input_blocks.%d.1.ff.bias", k);
        shapes[n][0] = 512;
        dims[n++] = 1;
    }
    for (int k = 0; k < 2; k++) {
        snprintf(names[n], sizeof names[n],
                 "cond_stage_model.transformer.text_model.encoder.layers.%d.mlp.fc1.weight", k);
        shapes[n][0] = 256;
        shapes[n][1] = 512;
        dims[n++] = 2;
    }
    snprintf(names[n], sizeof names[n], "first_stage_model.decoder.conv_out.weight");
    shapes[n][0] = 128;
    shapes[n][1] = 256;
    dims[n++] = 2;
    tl_writer *w = NULL;
    assert_int_equal(tl_writer_create(TL_FORMAT_SAFETENSORS, &w), TL_OK);
    uint64_t total = 0, sizes[SD_2D + SD_LAYERS];
    for (size_t i = 0; i < n; i++) {
        sizes[i] = (uint64_t)shapes[i][0] * (dims[i] == 2 ? (uint64_t)shapes[i][1] : 1) * 2;
        total += sizes[i];
        assert_int_equal(tl_writer_tensor(w, names[i], dt, dims[i], shapes[i], sizes[i], NULL),
                         TL_OK);
    }
    const void *hdr;
    size_t h;
    assert_int_equal(tl_writer_header(w, &hdr, &h), TL_OK);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(hdr, 1, h, f), h);
    tl_writer_destroy(w);
    unsigned char *data = malloc(total);
    assert_non_null(data);
    uint64_t seed = 0x5eed;
    for (uint64_t o = 0; o < total; o += 2)
        put_elem(data + o, dt, rng(&seed));
    assert_int_equal(fwrite(data, 1, total, f), total);
    free(data);
    assert_int_equal(fclose(f), 0);
}

static void test_sd_finite_streamed(void **state) {
    (void)state;
    NEED_GGML();
    char *dir = tu_tmpdir();
    for (int d = 0; d < 2; d++) {
        char *p = tu_path(dir, d ? "bf16.safetensors" : "f16.safetensors");
        write_sd(p, d ? TL_DTYPE_BF16 : TL_DTYPE_F16);
        /* 3 MiB of diffusion weights, a 2 MiB GPU that also holds cond and vae: streamed */
        /* with the byte check, and without it (the products alone must catch a wrong byte) */
        for (int v = 0; v < 2; v++) {
            cJSON *j = run_json(p, "--sim", "cfs=2M", "--reserve", "diffusion=0,cond=0,vae=0",
                                "--pipeline", "cond,diffusion*3,vae", v ? NULL : "--no-verify");
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "totals");
            assert_true(num(t, "evictions") > 0);
            assert_true(num(t, "prefetch_hits") > 0);
            /* each pass multiplies every 2-D weight of its component once */
            assert_int_equal(num(t, "products"), 2 + 3 * (SD_LAYERS * 3) + 1);
            assert_int_equal(num(t, "product_mismatches"), 0);
            assert_int_equal(num(t, "hash_mismatches"), 0);
            cJSON_Delete(j);
        }
        free(p);
    }
    tu_tmpdir_rm(dir);
}

/* --- library: a plan on a given device, a run with a step callback --- */

typedef struct fx {
    char *dir, *path;
    tl_model *m;
    tl_plan *plan;
    tl_session *s;
} fx;

static void open_sd(fx *f, const char *gpu, uint64_t cap, const char *sim_spec) {
    memset(f, 0, sizeof *f);
    f->dir = tu_tmpdir();
    f->path = tu_path(f->dir, "m.safetensors");
    write_sd(f->path, TL_DTYPE_F16);
    const char *paths[] = {f->path};
    assert_int_equal(tl_model_open(paths, 1, NULL, &f->m), TL_OK);
    if (sim_spec) assert_int_equal(tl_device_sim_add(sim_spec), TL_OK);
    f->plan = tu_plan_one_gpu(f->m, gpu, cap, NULL, false);
    assert_int_equal(tl_session_create(f->m, f->plan, NULL, &f->s), TL_OK);
}

static void close_sd(fx *f) {
    tl_session_destroy(f->s);
    tl_plan_destroy(f->plan);
    tl_model_close(f->m);
    tu_tmpdir_rm(f->dir);
    free(f->path);
}

static void run_opts(tl_run_options *o, const char *pipeline) {
    tl_run_options_init(o);
    o->pipeline = pipeline;
    o->compute = TL_RUN_COMPUTE_GGML;
    o->ggml_dir = ggml_dir;
    o->compute_threads = 1;
}

/* Weights on ggml:CPU (a host-pointer device): computed there on the mapping, no copy. */
static void test_on_ggml_device(void **state) {
    (void)state;
    NEED_GGML();
    assert_int_equal(tl_device_ggml_discover(ggml_dir, NULL), TL_OK);
    fx f;
    open_sd(&f, "ggml:CPU", 64ull << 20, NULL);
    tl_run_options o;
    run_opts(&o, "cond,diffusion*2,vae");
    tl_run_report *rep = NULL;
    assert_int_equal(tl_run_pipeline(f.s, &o, &rep), TL_OK);
    const tl_run_phase *t = tl_run_report_total(rep);
    assert_int_equal(t->products, 2 + 2 * (SD_LAYERS * 3) + 1);
    assert_int_equal(t->product_mismatches, 0);
    assert_int_equal(t->hash_mismatches, 0);
    assert_int_equal(t->bytes_to_devices, 0); /* the mapping itself, handed over in place */
    tl_run_report_destroy(rep);
    close_sd(&f);
}

typedef struct flip {
    tl_dtype dtype; /* of the weight to change */
    uint64_t at;    /* the byte to change */
    bool done;
    size_t tensor;
} flip;

/* After the first pass's products: one byte of one weight's device copy inverted. */
static tl_status flip_one(void *user, tl_session *s, const char *phase, uint32_t pass,
                          tl_component c, size_t layer, const tl_acquired *a) {
    (void)s, (void)phase, (void)c, (void)layer;
    flip *fl = user;
    if (fl->done || pass != 0) return TL_OK;
    for (size_t i = 0; i < tl_acquired_count(a); i++) {
        const tl_session_tensor *t = tl_acquired_tensor(a, i);
        const tl_session_part *p = &t->parts[0];
        if (t->info->n_dims != 2 || t->info->dtype != fl->dtype || p->tier != TL_TIER_DEVICE ||
            p->nbytes <= fl->at)
            continue;
        unsigned char b;
        /* an exponent bit of an F16 element's high byte, so the change is not lost */
        tl_status st = tl_device_copy_from(p->device, &b, p->dptr + fl->at, 1);
        b ^= 0x40;
        if (!st) st = tl_device_copy_to(p->device, p->dptr + fl->at, &b, 1);
        fl->done = true;
        fl->tensor = t->index;
        return st;
    }
    return TL_OK;
}

static void test_flipped_byte(void **state) {
    (void)state;
    NEED_GGML();
    fx f;
    open_sd(&f, "cflip", 64ull << 20, "cflip=64M");
    tl_run_options o;
    run_opts(&o, "cond*2");
    flip fl = {TL_DTYPE_F16, 41, false, 0}; /* the high byte of F16 element 20 */
    o.step = flip_one;
    o.user = &fl;
    tl_run_report *rep = NULL;
    assert_int_equal(tl_run_pipeline(f.s, &o, &rep), TL_OK);
    assert_true(fl.done);
    assert_int_equal(tl_run_report_phase_count(rep), 2);
    const tl_run_phase *p0 = tl_run_report_phase(rep, 0), *p1 = tl_run_report_phase(rep, 1);
    assert_true(p0->products > 0);
    assert_int_equal(p0->product_mismatches, 0);
    assert_int_equal(p1->products, p0->products);
    assert_int_equal(p1->loads, 0); /* the flipped copy was used again, not reloaded */
    assert_int_equal(p1->product_mismatches, 1);
    assert_int_equal(p1->hash_mismatches, 1);
    tl_run_report_destroy(rep);
    close_sd(&f);
    tl_device *d = NULL;
    if (tl_device_find("cflip", &d) == TL_OK) {
        tl_device_unregister(d);
        tl_device_release(d);
    }
}

/*
 * The run's check over a weight of several of its hash's 1 MiB leaves (hashed
 * on every core) and a partial last one: one byte changed in the middle of
 * leaf 2 of the device copy, or in the partial leaf, is one hash mismatch at
 * the next acquire. No ggml: hashes only.
 */
#define BIG_BYTES (1536ull * 1025 * 2) /* write_big's weight: 3 of the check's leaves and a part */

/* A safetensors file of one cond F16 weight of BIG_BYTES. */
static void write_big(const char *path) {
    const int64_t shape[2] = {1536, 1025};
    tl_writer *w = NULL;
    assert_int_equal(tl_writer_create(TL_FORMAT_SAFETENSORS, &w), TL_OK);
    assert_int_equal(tl_writer_tensor(w, "cond_stage_model.big.weight", TL_DTYPE_F16, 2, shape,
                                      BIG_BYTES, NULL),
                     TL_OK);
    const void *hdr;
    size_t h;
    assert_int_equal(tl_writer_header(w, &hdr, &h), TL_OK);
    unsigned char *data = malloc(BIG_BYTES);
    uint64_t seed = 0x1eaf;
    for (uint64_t o = 0; o < BIG_BYTES; o += 2)
        put_elem(data + o, TL_DTYPE_F16, rng(&seed));
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(hdr, 1, h, f), h);
    assert_int_equal(fwrite(data, 1, BIG_BYTES, f), BIG_BYTES);
    assert_int_equal(fclose(f), 0);
    tl_writer_destroy(w);
    free(data);
}

/* A session on write_big's model at path, on a 16 MiB sim GPU `sim` (backend: a placement, or NULL). */
typedef struct bigfx {
    tl_device *d;
    tl_model *m;
    tl_plan *p;
    tl_session *s;
} bigfx;

static void big_open(bigfx *f, const char *path, const char *sim, const char *backend) {
    f->d = tu_sim_add(sim, 16ull << 20);
    const char *paths[] = {path};
    assert_int_equal(tl_model_open(paths, 1, NULL, &f->m), TL_OK);
    f->p = tu_plan_one_gpu(f->m, sim, 16ull << 20, backend, false);
    assert_int_equal(tl_session_create(f->m, f->p, NULL, &f->s), TL_OK);
}

static void big_close(bigfx *f) {
    tl_session_destroy(f->s);
    tl_plan_destroy(f->p);
    tl_model_close(f->m);
    tl_device_unregister(f->d);
    tl_device_release(f->d);
}

static void test_flipped_byte_leaves(void **state) {
    (void)state;
    char *dir = tu_tmpdir(), *path = tu_path(dir, "big.safetensors");
    const uint64_t nbytes = BIG_BYTES;
    write_big(path);
    const uint64_t at[] = {(5ull << 19) + 1, nbytes - 1}; /* leaf 2; the partial leaf */
    for (int k = 0; k < 2; k++) {
        char sim[32];
        snprintf(sim, sizeof sim, "leaves%d", k);
        bigfx f;
        big_open(&f, path, sim, NULL);
        tl_run_options o;
        tl_run_options_init(&o);
        o.pipeline = "cond*2";
        flip fl = {TL_DTYPE_F16, at[k], false, 0};
        o.step = flip_one;
        o.user = &fl;
        tl_run_report *rep = NULL;
        assert_int_equal(tl_run_pipeline(f.s, &o, &rep), TL_OK);
        assert_true(fl.done);
        const tl_run_phase *p0 = tl_run_report_phase(rep, 0), *p1 = tl_run_report_phase(rep, 1);
        assert_int_equal(p0->hash_mismatches, 0);
        assert_int_equal(p1->loads, 0); /* the changed copy was used again, not reloaded */
        assert_int_equal(p1->hash_mismatches, 1);
        tl_run_report_destroy(rep);
        big_close(&f);
    }
    tu_tmpdir_rm(dir);
    free(path);
}

/* After the first pass: the model file cut short under its mapping. */
static tl_status cut_file(void *user, tl_session *s, const char *phase, uint32_t pass,
                          tl_component c, size_t layer, const tl_acquired *a) {
    (void)s, (void)phase, (void)c, (void)layer, (void)a;
    return pass == 0 && truncate((const char *)user, 4096) != 0 ? TL_ERR_IO : TL_OK;
}

/*
 * The check reads a weight kept on the host (the file's mapping) on every
 * core; the file cut short after the first pass is TL_ERR_CHANGED naming the
 * weight at the second pass, not a SIGBUS death on a helper thread.
 */
static void test_truncated_under_check(void **state) {
    (void)state;
    char *dir = tu_tmpdir(), *path = tu_path(dir, "cut.safetensors");
    write_big(path);
    bigfx f;
    big_open(&f, path, "cutsim", "cond=cpu");
    tl_run_options o;
    tl_run_options_init(&o);
    o.pipeline = "cond*2";
    o.step = cut_file;
    o.user = path;
    tl_run_report *rep = NULL;
    assert_int_equal(tl_run_pipeline(f.s, &o, &rep), TL_ERR_CHANGED);
    assert_non_null(strstr(tl_last_error(), "cond_stage_model.big.weight"));
    assert_non_null(strstr(tl_last_error(), "truncated"));
    assert_null(rep);
    big_close(&f);
    tu_tmpdir_rm(dir);
    free(path);
}

/*
 * A weight streamed again onto a sim GPU after its file was cut short under
 * the mapping: the copy reads the mapping under the SIGBUS guard, so the
 * acquire is TL_ERR_CHANGED, not a SIGBUS death (the copy is asynchronous:
 * the fault is found where the bytes move, reported where it is waited for).
 */
static void test_truncated_under_stream(void **state) {
    (void)state;
    char *dir = tu_tmpdir(), *path = tu_path(dir, "cut.safetensors");
    write_big(path);
    bigfx f;
    big_open(&f, path, "cutstream", NULL);
    tl_acquired *a = NULL;
    assert_int_equal(tl_session_acquire(f.s, TL_COMP_COND, 0, TL_ALL_LAYERS, true, &a), TL_OK);
    assert_int_equal(tl_session_release(f.s, a), TL_OK);
    uint64_t freed = 0;
    assert_int_equal(tl_session_evict_all(f.s, "cutstream", &freed), TL_OK);
    assert_int_equal(freed, BIG_BYTES);
    assert_int_equal(truncate(path, 4096), 0);
    a = NULL;
    assert_int_equal(tl_session_acquire(f.s, TL_COMP_COND, 0, TL_ALL_LAYERS, true, &a),
                     TL_ERR_CHANGED);
    assert_null(a);
    assert_non_null(strstr(tl_last_error(), "shrank"));
    big_close(&f);
    tu_tmpdir_rm(dir);
    free(path);
}

/* examples/engine: the integration an engine would write, on the same files. */
static void test_example_engine(void **state) {
    (void)state;
    NEED_GGML();
    const char *bd = getenv("TL_BUILD_DIR");
    char exe[4200], gguf[4200];
    snprintf(exe, sizeof exe, "%s/examples/engine/engine", bd && *bd ? bd : ".");
    snprintf(gguf, sizeof gguf, "%s", tu_testdata("gguf/tiny-llama-q4_0.gguf"));
    /* an LLM on ggml:CPU with a 64 MiB budget (copies, not the mapping): 16 products per pass */
    char *a1[] = {exe, gguf, "--ggml", ggml_dir, "--device", "ggml:CPU=64M", NULL};
    tu_run r = tu_run_argv(a1);
    if (r.status != 0) fail_msg("engine: exit %d: %s%s", r.status, r.out, r.err);
    char want[64];
    snprintf(want, sizeof want, "products %" PRIu64 ", mismatches 0",
             2 * matrices("tiny-llama-q4_0.gguf"));
    assert_non_null(strstr(r.out, want));
    tu_run_free(&r);
    /* an SD-shaped model, diffusion streamed, a LoRA patched in before pass 2 */
    char *dir = tu_tmpdir();
    char *p = tu_path(dir, "sd.safetensors");
    write_sd(p, TL_DTYPE_F16);
    char *a2[] = {exe,      p,         "--ggml",    ggml_dir,
                  "--device", "ggml:CPU=2M", "--reserve", "diffusion=0,cond=0,vae=0",
                  "--lora", NULL};
    r = tu_run_argv(a2);
    if (r.status != 0) fail_msg("engine: exit %d: %s%s", r.status, r.out, r.err);
    assert_non_null(strstr(r.out, "diffusion streamed layer by layer"));
    assert_non_null(strstr(r.out, "lora: patched model.diffusion_model.input_blocks.0.1.q.weight"));
    assert_non_null(strstr(r.out, "products 42, mismatches 0")); /* (2 + 18 + 1) x 2 passes */
    tu_run_free(&r);
    free(p);
    tu_tmpdir_rm(dir);
}

/* Without ggml: the run fails, saying why. */
static void test_no_ggml(void **state) {
    (void)state;
    char path[4200];
    snprintf(path, sizeof path, "%s", tu_testdata("gguf/tiny-llama-q8_0.gguf"));
    tu_run r = tu_cli_run("run", path, "--pipeline", "other", "--backend", "*=cpu", "--compute",
                          "ggml", "--ggml-dir", "/nonexistent/ggml", NULL);
    assert_int_equal(r.status, 5);
    assert_non_null(strstr(r.err, "/nonexistent/ggml"));
    tu_run_free(&r);
    r = tu_cli_run("run", path, "--compute", "cuda", NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "--compute"));
    tu_run_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_ggml),
        cmocka_unit_test(test_gguf_quantized),
        cmocka_unit_test(test_sd_streamed),
        cmocka_unit_test(test_sd_finite_streamed),
        cmocka_unit_test(test_on_ggml_device),
        cmocka_unit_test(test_flipped_byte),
        cmocka_unit_test(test_example_engine),
        cmocka_unit_test(test_flipped_byte_leaves),
        cmocka_unit_test(test_truncated_under_check),
        cmocka_unit_test(test_truncated_under_stream),
    };
    return tu_exit(cmocka_run_group_tests(tests, group_setup, NULL));
}
