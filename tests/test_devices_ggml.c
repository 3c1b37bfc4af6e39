/*
 * test_devices_ggml.c — ggml's backend devices as tierload devices, and
 * matrix products on them.
 *
 * ggml comes from the npm package @node-llama-cpp/linux-x64 (installed on
 * first run into $TL_BUILD_DIR/npm-ggml-devices, as the GGUF cross-check
 * installs it into npm-ggml; npm's cache makes the second install cheap), or
 * from the folder in TIERLOAD_GGML_DIR. The ggml:CPU device passes the tests the built-in cpu
 * device passes (describe, allocation, copies at odd sizes and offsets,
 * TL_ERR_DEVICE_OOM past free memory, under a forced cap and on an injected
 * fault), host memory is wrapped in place, and products are checked against
 * sums computed here (F32, F16, a hand-made Q8_0 matrix), and on the GGUFs
 * of the test data (quantized types) the product of every 2-D weight from a
 * tierload-loaded copy and from device memory equals the product from the
 * file's mapping bit for bit, while one flipped byte changes it. Without npm
 * every ggml test skips saying why (exit status 77); with CI=true it fails.
 */
#include "helpers/testutil.h"

#include "devices/ggml_dl.h"
#include "gguf_writer.h"
#include "os/fault.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char ggml_dir[4096];
static char why[1024];
static int skipped;

static bool find_ggml(void) {
    return tu_ggml_dir("npm-ggml-devices", ggml_dir, sizeof ggml_dir, why, sizeof why);
}

static bool have_ggml;

static int group_setup(void **state) {
    (void)state;
    have_ggml = find_ggml();
    if (have_ggml) fprintf(stderr, "[ggml-devices] ggml from %s\n", ggml_dir);
    return 0;
}

static bool in_ci(void) {
    const char *ci = getenv("CI");
    return ci && (!strcmp(ci, "true") || !strcmp(ci, "1"));
}

/* Skip (or, in CI, fail) when ggml is unavailable. */
#define NEED_GGML()                                                                                \
    do {                                                                                           \
        if (!have_ggml) {                                                                          \
            if (in_ci()) fail_msg("ggml unavailable in CI: %s", why);                              \
            fprintf(stderr, "[  SKIP    ] why: %s\n", why);                                        \
            skipped++;                                                                             \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static tl_device *ggml_cpu(void) {
    size_t n = 99;
    assert_int_equal(tl_device_ggml_discover(ggml_dir, &n), TL_OK);
    tl_device *d = NULL;
    assert_int_equal(tl_device_find("ggml:CPU", &d), TL_OK);
    /* one compute thread: ggml's threads spin, and the test machine's cores are shared */
    assert_int_equal(tl__ggml_dev_set_threads(d, 1), TL_OK);
    tl_device_release(d); /* the registry keeps it: borrowed while registered */
    return d;
}

/* Before anything is loaded: missing libraries give a reason, not a crash. */
static void test_missing(void **state) {
    (void)state;
    assert_string_equal(tl_device_ggml_reason(), "not loaded");
    size_t n = 5;
    assert_int_equal(tl_device_ggml_discover("/nonexistent/ggml", &n), TL_ERR_NOT_FOUND);
    assert_true(n == 0);
    assert_non_null(strstr(tl_last_error(), "/nonexistent/ggml"));
    char *empty = tu_tmpdir();
    assert_int_equal(tl_device_ggml_discover(empty, &n), TL_ERR_NOT_FOUND);
    assert_non_null(strstr(tl_last_error(), "libggml-base.so"));
    assert_non_null(strstr(tl_device_ggml_reason(), "libggml-base.so"));
    tu_tmpdir_rm(empty);
    /* the built-in cpu device is no ggml device */
    tl_device *cpu = NULL;
    assert_int_equal(tl_device_find("cpu", &cpu), TL_OK);
    assert_false(tl_device_ggml_host_mappable(cpu));
    tl_ggml_host_buffer hb;
    char b[64];
    assert_int_equal(tl_ggml_host_buffer_create(cpu, b, sizeof b, &hb), TL_ERR_INVALID_ARG);
    tl_device_release(cpu);
}

static void test_discover(void **state) {
    (void)state;
    NEED_GGML();
    size_t n = 0;
    assert_int_equal(tl_device_ggml_discover(ggml_dir, &n), TL_OK);
    assert_true(n >= 1);
    assert_string_equal(tl_device_ggml_reason(), "");
    assert_int_equal(tl_device_ggml_discover(ggml_dir, &n), TL_OK); /* idempotent */
    assert_true(n == 0);
    tl_device *d = ggml_cpu();
    assert_int_equal(tl_device_kind_of(d), TL_DEVICE_GGML);
    assert_string_equal(tl_device_kind_name(TL_DEVICE_GGML), "ggml");
    tl_device_info info;
    assert_int_equal(tl_device_describe(d, &info, sizeof info), TL_OK);
    assert_string_equal(info.name, "ggml:CPU");
    assert_true(info.host_pointer);
    assert_false(info.async);
    assert_true(info.alignment >= 1 && (info.alignment & (info.alignment - 1)) == 0);
    /* ggml's CPU device reports physical memory (sysconf), all of it free */
    uint64_t phys = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGE_SIZE);
    assert_true(info.total == phys);
    assert_true(info.free <= info.total && info.free > 0);
    assert_true(tl_device_ggml_host_mappable(d));
    /* listed beside the built-ins */
    tl_device *list[64];
    size_t k = tl_device_list(list, 64);
    bool seen_cpu = false, seen_ggml = false;
    for (size_t i = 0; i < k && i < 64; i++) {
        seen_cpu |= !strcmp(tl_device_name(list[i]), "cpu");
        seen_ggml |= list[i] == d;
    }
    assert_true(seen_cpu && seen_ggml);
    tl_device_list_release(list, k < 64 ? k : 64);
    /* unregistered, it comes back on the next discovery (a new device of the same name) */
    assert_int_equal(tl_device_unregister(d), TL_OK);
    assert_int_equal(tl_device_find("ggml:CPU", &d), TL_ERR_NOT_FOUND);
    assert_int_equal(tl_device_ggml_discover(NULL, &n), TL_OK); /* loaded once: no dir needed */
    assert_true(n == 1);
    assert_int_equal(tl_device_find("ggml:CPU", &d), TL_OK);
    tl_device_release(d);
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)rand_r(&seed);
}

static void test_copies(void **state) {
    (void)state;
    NEED_GGML();
    tl_device *d = ggml_cpu();
    enum { N = 4099 };
    tl_devptr p;
    assert_int_equal(tl_device_alloc(d, N, &p), TL_OK);
    assert_true(p != 0);
    unsigned char src[N], back[N];
    fill(src, N, 7);
    memset(back, 0, sizeof back);
    assert_int_equal(tl_device_copy_to(d, p + 3, src + 5, N - 7), TL_OK);
    assert_memory_equal((unsigned char *)(uintptr_t)p + 3, src + 5, N - 7); /* host pointer */
    uint64_t t = 9;
    assert_int_equal(tl_device_copy_from_async(d, back + 1, p + 3, N - 7, &t), TL_OK);
    assert_true(t == 0); /* synchronous */
    assert_memory_equal(back + 1, src + 5, N - 7);
    assert_int_equal(tl_device_copy_to(d, p, NULL, 1), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_device_copy_to(d, p, NULL, 0), TL_OK);
    /* past the end, before the start, not an allocation */
    assert_int_equal(tl_device_copy_to(d, p + N - 2, src, 3), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "ggml:CPU"));
    assert_int_equal(tl_device_copy_from(d, back, p - 1, 2), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_device_free(d, p + 1), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_device_copy_to(d, p + N - 1, src, 1), TL_OK); /* last byte */
    assert_int_equal(tl_device_free(d, p), TL_OK);
    assert_int_equal(tl_device_copy_to(d, p, src, 1), TL_ERR_INVALID_ARG); /* freed */

    /* odd sizes, many live at once, freed out of order: no copy touches a neighbour */
    static const uint64_t sizes[] = {1, 3, 31, 63, 65, 257, 4095, 4097, (1u << 20) + 1, 12345};
    enum { K = sizeof sizes / sizeof sizes[0] };
    tl_devptr ps[K];
    unsigned char *data[K];
    for (int i = 0; i < K; i++) {
        assert_int_equal(tl_device_alloc(d, sizes[i], &ps[i]), TL_OK);
        data[i] = malloc(sizes[i]);
        fill(data[i], sizes[i], 100u + (unsigned)i);
        assert_int_equal(tl_device_copy_to(d, ps[i], data[i], sizes[i]), TL_OK);
    }
    for (int i = 0; i < K; i += 2)
        assert_int_equal(tl_device_free(d, ps[i]), TL_OK);
    for (int i = 1; i < K; i += 2) {
        unsigned char *b = malloc(sizes[i]);
        assert_int_equal(tl_device_copy_from(d, b, ps[i], sizes[i]), TL_OK);
        assert_memory_equal(b, data[i], sizes[i]);
        /* an odd sub-range at an odd offset */
        if (sizes[i] > 8) {
            memset(b, 0, sizes[i]);
            assert_int_equal(tl_device_copy_from(d, b, ps[i] + 3, sizes[i] - 5), TL_OK);
            assert_memory_equal(b, data[i] + 3, sizes[i] - 5);
        }
        free(b);
        assert_int_equal(tl_device_free(d, ps[i]), TL_OK);
    }
    for (int i = 0; i < K; i++)
        free(data[i]);
}

static void test_oom(void **state) {
    (void)state;
    NEED_GGML();
    tl_device *d = ggml_cpu();
    tl_device_info info;
    assert_int_equal(tl_device_describe(d, &info, sizeof info), TL_OK);
    tl_devptr p = 1;
    assert_int_equal(tl_device_alloc(d, info.free + 1, &p), TL_ERR_DEVICE_OOM);
    assert_true(p == 0);
    assert_non_null(strstr(tl_last_error(), "ggml:CPU"));
    assert_int_equal(tl_device_alloc(d, UINT64_MAX, &p), TL_ERR_DEVICE_OOM);
    tl__fault_arm(TL_FAULT_DEVICE_ALLOC, 1, ENOMEM);
    assert_int_equal(tl_device_alloc(d, 64, &p), TL_ERR_DEVICE_OOM);
    tl__fault_reset();

    /* a forced cap: exact to the byte, reported as total and free */
    enum { CAP = 1 << 20 };
    assert_int_equal(tl__ggml_dev_set_cap(d, CAP), TL_OK);
    assert_int_equal(tl_device_describe(d, &info, sizeof info), TL_OK);
    assert_true(info.total == CAP && info.free == CAP);
    tl_devptr a, b, c;
    assert_int_equal(tl_device_alloc(d, 600000, &a), TL_OK);
    assert_int_equal(tl_device_describe(d, &info, sizeof info), TL_OK);
    assert_true(info.free == CAP - 600000);
    assert_int_equal(tl_device_alloc(d, CAP - 600000 + 1, &b), TL_ERR_DEVICE_OOM);
    assert_non_null(strstr(tl_last_error(), "cap"));
    assert_int_equal(tl_device_alloc(d, CAP - 600000, &b), TL_OK); /* exactly full */
    assert_int_equal(tl_device_alloc(d, 1, &c), TL_ERR_DEVICE_OOM);
    assert_int_equal(tl_device_free(d, a), TL_OK);
    assert_int_equal(tl_device_alloc(d, 600000, &a), TL_OK);
    assert_int_equal(tl_device_free(d, a), TL_OK);
    assert_int_equal(tl_device_free(d, b), TL_OK);
    assert_int_equal(tl__ggml_dev_set_cap(d, UINT64_MAX), TL_OK);
    tl_device *cpu = NULL;
    assert_int_equal(tl_device_find("cpu", &cpu), TL_OK);
    assert_int_equal(tl__ggml_dev_set_cap(cpu, 1), TL_ERR_INVALID_ARG);
    tl_device_release(cpu);
}

static void test_host_buffer(void **state) {
    (void)state;
    NEED_GGML();
    tl_device *d = ggml_cpu();
    unsigned char *mem = malloc(1000);
    tl_ggml_host_buffer hb;
    assert_int_equal(tl_ggml_host_buffer_create(d, mem + 7, 900, &hb), TL_OK);
    assert_non_null(hb.buffer);
    assert_true((uintptr_t)hb.base % 64 == 0);
    assert_true((unsigned char *)hb.base + hb.offset == mem + 7); /* in place: no copy */
    assert_true(hb.offset < 64 && hb.size >= hb.offset + 900);
    tl_ggml_host_buffer_destroy(&hb);
    assert_null(hb.buffer);
    assert_int_equal(tl_ggml_host_buffer_create(d, mem, 0, &hb), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_ggml_host_buffer_create(d, NULL, 10, &hb), TL_ERR_INVALID_ARG);
    free(mem);
}

/* y = W x in double precision (the reference). */
static void ref_f32(const float *w, int64_t rows, int64_t cols, const float *x, double *y,
                    double *mag) {
    for (int64_t r = 0; r < rows; r++) {
        double s = 0, m = 0;
        for (int64_t c = 0; c < cols; c++) {
            s += (double)w[r * cols + c] * x[c];
            m += fabs((double)w[r * cols + c] * x[c]);
        }
        y[r] = s;
        mag[r] = m;
    }
}

static void test_products_by_hand(void **state) {
    (void)state;
    NEED_GGML();
    tl_device *d = ggml_cpu();
    enum { R = 7, C = 96 };
    float w[R * C], x[C], y[R], y2[R];
    double ref[R], mag[R];
    unsigned seed = 3;
    for (int i = 0; i < R * C; i++)
        w[i] = (float)rand_r(&seed) / (float)RAND_MAX - 0.5f;
    tl__ggml_random_x(42, C, x);
    for (int i = 0; i < C; i++)
        assert_true(x[i] >= -1.0f && x[i] < 1.0f);
    ref_f32(w, R, C, x, ref, mag);

    /* F32 from host memory (wrapped in place) */
    assert_int_equal(tl__ggml_matvec_host(d, w, TL_DTYPE_F32, R, C, 42, y), TL_OK);
    for (int r = 0; r < R; r++)
        assert_true(fabs(y[r] - ref[r]) <= 1e-5 * mag[r] + 1e-6);
    /* F32 from device memory: the same bits */
    tl_devptr p;
    assert_int_equal(tl_device_alloc(d, sizeof w + 5, &p), TL_OK);
    assert_int_equal(tl_device_copy_to(d, p + 5, w, sizeof w), TL_OK);
    assert_int_equal(tl__ggml_matvec(d, p + 5, TL_DTYPE_F32, R, C, 42, y2), TL_OK);
    assert_memory_equal(y, y2, sizeof y);
    /* past the allocation's end */
    assert_int_equal(tl__ggml_matvec(d, p + 6, TL_DTYPE_F32, R, C, 42, y2), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_device_free(d, p), TL_OK);

    /* F16 (x is rounded to F16 by ggml: a looser bound) */
    uint16_t h[R * C];
    assert_int_equal(tl_convert(TL_DTYPE_F16, h, TL_DTYPE_F32, w, R * C), TL_OK);
    float wr[R * C];
    assert_int_equal(tl_convert(TL_DTYPE_F32, wr, TL_DTYPE_F16, h, R * C), TL_OK);
    ref_f32(wr, R, C, x, ref, mag);
    assert_int_equal(tl__ggml_matvec_host(d, h, TL_DTYPE_F16, R, C, 42, y), TL_OK);
    for (int r = 0; r < R; r++)
        assert_true(fabs(y[r] - ref[r]) <= 2e-3 * mag[r] + 1e-5);

    /* Q8_0 made by hand: blocks of (F16 scale, 32 x int8); x is quantized to Q8_0 by ggml */
    enum { QB = 34 };
    unsigned char q[R * (C / 32) * QB];
    float wq[R * C];
    for (int r = 0; r < R; r++)
        for (int b = 0; b < C / 32; b++) {
            unsigned char *blk = q + (r * (C / 32) + b) * QB;
            float scale = 0.25f * (float)(1 + (r + b) % 3); /* exact in F16 */
            uint16_t sh;
            assert_int_equal(tl_convert(TL_DTYPE_F16, &sh, TL_DTYPE_F32, &scale, 1), TL_OK);
            memcpy(blk, &sh, 2);
            for (int j = 0; j < 32; j++) {
                int8_t v = (int8_t)(rand_r(&seed) % 255 - 127);
                blk[2 + j] = (unsigned char)v;
                wq[r * C + b * 32 + j] = scale * v;
            }
        }
    ref_f32(wq, R, C, x, ref, mag);
    assert_int_equal(tl__ggml_matvec_host(d, q, TL_DTYPE_Q8_0, R, C, 42, y), TL_OK);
    for (int r = 0; r < R; r++)
        assert_true(fabs(y[r] - ref[r]) <= 2e-2 * mag[r] + 1e-4);

    uint64_t need = 0;
    assert_int_equal(tl__ggml_weight_bytes(d, TL_DTYPE_Q8_0, R, C, &need), TL_OK);
    assert_true(need == sizeof q); /* the CPU pads nothing */
    assert_int_equal(tl__ggml_weight_bytes(d, TL_DTYPE_Q4_K, 3, 512, &need), TL_OK);
    assert_true(need == 3 * 2 * 144); /* 2 blocks of 256 per row, 144 bytes each */

    /* 300 products (two graphs of at most 256), weights in host and in device memory */
    enum { NW = 300 };
    tl__ggml_weight ws[NW];
    float yb[NW][R];
    assert_int_equal(tl_device_alloc(d, sizeof w, &p), TL_OK);
    assert_int_equal(tl_device_copy_to(d, p, w, sizeof w), TL_OK);
    for (int i = 0; i < NW; i++) {
        int r = 1 + i % R; /* the first r rows of w */
        ws[i] = (tl__ggml_weight){.dtype = TL_DTYPE_F32, .rows = r, .cols = C, .y = yb[i]};
        if (i % 2)
            ws[i].host = w;
        else
            ws[i].dev = p;
    }
    assert_int_equal(tl__ggml_matvec_host(d, w, TL_DTYPE_F32, R, C, 42, y), TL_OK);
    assert_int_equal(tl__ggml_matvec_many(d, ws, NW, 42), TL_OK);
    for (int i = 0; i < NW; i++)
        assert_memory_equal(yb[i], y, (size_t)ws[i].rows * sizeof(float));
    ws[NW - 1].dtype = TL_DTYPE_Q8_0; /* one bad weight (rows of 97 are not whole blocks) */
    ws[NW - 1].cols = C + 1;
    assert_int_equal(tl__ggml_matvec_many(d, ws, NW, 42), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "ggml:CPU"));
    assert_int_equal(tl_device_free(d, p), TL_OK);

    /* what ggml cannot do is refused, not aborted */
    assert_int_equal(tl__ggml_matvec_host(d, q, TL_DTYPE_Q8_0, R, 48, 42, y), TL_ERR_INVALID_ARG);
    assert_int_equal(tl__ggml_matvec_host(d, w, TL_DTYPE_I32, R, C, 42, y), TL_ERR_UNSUPPORTED);
    assert_int_equal(tl__ggml_matvec_host(d, w, TL_DTYPE_U8, R, C, 42, y), TL_ERR_UNSUPPORTED);
    assert_int_equal(tl__ggml_matvec_host(d, w, TL_DTYPE_Q8_K, 1, 256, 42, y), TL_ERR_UNSUPPORTED);
    assert_int_equal(tl__ggml_matvec_host(d, w, TL_DTYPE_F32, 0, C, 42, y), TL_ERR_INVALID_ARG);
}

/* Every 2-D weight of the test-data GGUFs: loaded copy, device copy and mapping agree; a flip shows.
 */
static void test_gguf_products(void **state) {
    (void)state;
    NEED_GGML();
    tl_device *d = ggml_cpu();
    static const char *files[] = {"gguf/tiny-llama-q4_0.gguf", "gguf/tiny-llama-q8_0.gguf",
                                  "gguf/tiny-llama-256-q4_k_m.gguf", "gguf/tiny-llama-f16.gguf"};
    size_t products = 0, flips = 0;
    bool seen[TL_GGML_TYPE_COUNT] = {false};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        const char *path = tu_testdata(files[f]);
        tl_model *m = NULL;
        assert_int_equal(tl_model_open(&path, 1, NULL, &m), TL_OK);
        tl_load_options lo;
        tl_load_options_init(&lo);
        lo.mode = TL_LOAD_BUFFERED;
        tl_load_result *lr = NULL;
        assert_int_equal(tl_model_load(m, &lo, &lr), TL_OK);
        bool flipped = false;
        size_t nt = tl_model_tensor_count(m), nb = 0;
        float **ys = calloc(nt, sizeof *ys); /* products from the mapping, by tensor */
        tl__ggml_weight *batch = calloc(nt, sizeof *batch);
        for (size_t i = 0; i < nt; i++) {
            const tl_tensor_info *t = tl_model_tensor(m, i);
            if (t->n_dims != 2) continue;
            const tl_loaded_tensor *lt = tl_load_result_tensor(lr, i);
            assert_false(lt->view);
            assert_true(lt->data != tl_model_tensor_data(m, i));
            float *ym = NULL;
            int64_t rows = 0;
            tl_status s = tl__ggml_matvec_tensor(d, m, i, 7, &ym, &rows);
            if (s == TL_ERR_UNSUPPORTED) continue;
            assert_int_equal(s, TL_OK);
            assert_true(rows == t->shape[0]);
            float *yc = malloc((size_t)rows * sizeof *yc), *yd = malloc((size_t)rows * sizeof *yd);
            assert_int_equal(
                tl__ggml_matvec_host(d, lt->data, t->dtype, t->shape[0], t->shape[1], 7, yc), TL_OK);
            assert_memory_equal(ym, yc, (size_t)rows * sizeof *yc);
            tl_devptr p;
            assert_int_equal(tl_device_alloc(d, t->nbytes, &p), TL_OK);
            assert_int_equal(tl_device_copy_to(d, p, lt->data, t->nbytes), TL_OK);
            assert_int_equal(tl__ggml_matvec(d, p, t->dtype, t->shape[0], t->shape[1], 7, yd),
                             TL_OK);
            assert_memory_equal(ym, yd, (size_t)rows * sizeof *yd);
            bool nonzero = false;
            for (int64_t r = 0; r < rows; r++)
                nonzero |= ym[r] != 0.0f;
            assert_true(nonzero);
            products++;
            seen[t->dtype] = true;
            if (!flipped && t->nbytes >= 64) {
                /* one flipped byte (first, middle, last) changes the product */
                unsigned char *w = malloc(t->nbytes);
                uint64_t at[] = {0, t->nbytes / 2 + 1, t->nbytes - 1};
                for (int k = 0; k < 3; k++) {
                    memcpy(w, lt->data, t->nbytes);
                    w[at[k]] ^= 0x5A;
                    assert_int_equal(tl_device_copy_to(d, p, w, t->nbytes), TL_OK);
                    assert_int_equal(
                        tl__ggml_matvec(d, p, t->dtype, t->shape[0], t->shape[1], 7, yd), TL_OK);
                    assert_true(memcmp(ym, yd, (size_t)rows * sizeof *yd) != 0);
                    flips++;
                }
                free(w);
                flipped = true;
            }
            assert_int_equal(tl_device_free(d, p), TL_OK);
            ys[i] = ym;
            batch[nb++] = (tl__ggml_weight){.dtype = t->dtype,
                                           .rows = t->shape[0],
                                           .cols = t->shape[1],
                                           .host = lt->data,
                                           .y = yc};
            free(yd);
        }
        /* all of them in one graph, as an engine computes a layer: the same bits */
        assert_int_equal(tl__ggml_matvec_many(d, batch, nb, 7), TL_OK);
        for (size_t i = 0, k = 0; i < nt; i++) {
            if (!ys[i]) continue;
            assert_memory_equal(batch[k].y, ys[i], (size_t)batch[k].rows * sizeof(float));
            free(batch[k++].y);
            free(ys[i]);
        }
        free(ys);
        free(batch);
        tl_load_result_destroy(lr);
        tl_model_close(m);
    }
    fprintf(stderr, "[ggml-devices] %zu products, %zu flipped bytes seen; types:", products, flips);
    for (int t = 0; t < TL_GGML_TYPE_COUNT; t++)
        if (seen[t]) fprintf(stderr, " %s", tl_dtype_name((tl_dtype)t));
    fprintf(stderr, "\n");
    assert_true(seen[TL_DTYPE_Q4_0] && seen[TL_DTYPE_Q8_0] && seen[TL_DTYPE_Q4_K] &&
                seen[TL_DTYPE_Q6_K] && seen[TL_DTYPE_F16]);
    assert_true(products >= 20 && flips == 12);
}

/* A GGUF with one 4 x 256 weight of every ggml type (random bytes): mapping and device agree. */
static void test_every_type(void **state) {
    (void)state;
    NEED_GGML();
    tl_device *d = ggml_cpu();
    gw_gguf *gw = gw_new(3);
    gw_kv_str(gw, "general.architecture", "test");
    int64_t ne[2] = {256, 4};
    unsigned seed = 11;
    for (int t = 0; t < TL_GGML_TYPE_COUNT; t++) {
        const char *name = tl_dtype_name((tl_dtype)t);
        uint64_t nb;
        if (!name || !tl_dtype_nbytes((tl_dtype)t, 256 * 4, &nb)) continue;
        char tn[64];
        snprintf(tn, sizeof tn, "w.%s", name);
        size_t i = gw_tensor(gw, tn, (uint32_t)t, 2, ne);
        unsigned char *b = malloc(nb);
        fill(b, nb, seed++);
        gw_tensor_data(gw, i, b, nb);
        free(b);
    }
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, "types.gguf");
    assert_true(gw_write_file(gw, path));
    gw_free(gw);
    tl_model *m = NULL;
    const char *pp = path;
    assert_int_equal(tl_model_open(&pp, 1, NULL, &m), TL_OK);
    int computed = 0;
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        float *ym = NULL, yd[4];
        int64_t rows = 0;
        tl_status s = tl__ggml_matvec_tensor(d, m, i, 3, &ym, &rows);
        bool never = t->dtype == TL_DTYPE_I8 || t->dtype == TL_DTYPE_I16 ||
                     t->dtype == TL_DTYPE_I32 || t->dtype == TL_DTYPE_I64 ||
                     t->dtype == TL_DTYPE_F64 || t->dtype == TL_DTYPE_Q8_1 ||
                     t->dtype == TL_DTYPE_Q8_K;
        if (never) {
            assert_int_equal(s, TL_ERR_UNSUPPORTED);
            assert_non_null(strstr(tl_last_error(), t->name)); /* names the tensor */
            continue;
        }
        if (s == TL_ERR_UNSUPPORTED) { /* a type newer than this ggml */
            fprintf(stderr, "[ggml-devices] %s: %s\n", t->name, tl_last_error());
            continue;
        }
        assert_int_equal(s, TL_OK);
        assert_true(rows == 4);
        tl_devptr p;
        assert_int_equal(tl_device_alloc(d, t->nbytes, &p), TL_OK);
        assert_int_equal(tl_device_copy_to(d, p, tl_model_tensor_data(m, i), t->nbytes), TL_OK);
        assert_int_equal(tl__ggml_matvec(d, p, t->dtype, 4, 256, 3, yd), TL_OK);
        assert_memory_equal(ym, yd, sizeof yd);
        assert_int_equal(tl_device_free(d, p), TL_OK);
        free(ym);
        computed++;
    }
    fprintf(stderr, "[ggml-devices] %d of %zu types multiplied\n", computed,
            tl_model_tensor_count(m));
    /* every type of ggml's CPU backend up to BF16 / TQ / MXFP4 */
    assert_true(computed >= 25);
    tl_model_close(m);
    free(path);
    tu_tmpdir_rm(dir);
}

static void test_cli(void **state) {
    (void)state;
    NEED_GGML();
    char arg[4200];
    snprintf(arg, sizeof arg, "--ggml=%s", ggml_dir);
    tu_run r = tu_cli_run("devices", arg, "--json", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "{\"name\":\"cpu\",\"kind\":\"cpu\""));
    assert_non_null(strstr(r.out, "{\"name\":\"ggml:CPU\",\"kind\":\"ggml\""));
    assert_non_null(strstr(r.out, "\"host_mappable\":true"));
    tu_run_free(&r);
    r = tu_cli_run("devices", "--ggml=/nonexistent/ggml", NULL);
    assert_int_equal(r.status, 5);
    assert_non_null(strstr(r.err, "/nonexistent/ggml"));
    tu_run_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing),       cmocka_unit_test(test_discover),
        cmocka_unit_test(test_copies),        cmocka_unit_test(test_oom),
        cmocka_unit_test(test_host_buffer),   cmocka_unit_test(test_products_by_hand),
        cmocka_unit_test(test_gguf_products), cmocka_unit_test(test_every_type),
        cmocka_unit_test(test_cli),
    };
    int failed = cmocka_run_group_tests(tests, group_setup, NULL);
    if (failed) return failed;
    return skipped ? 77 : 0;
}
