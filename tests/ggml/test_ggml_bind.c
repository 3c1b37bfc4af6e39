/*
 * test_ggml_bind.c — acquired weights as the storage of an engine's ggml
 * tensors (tl_session_bind_ggml), on ggml:CPU and on a ggml RPC server's
 * device (a ggml-rpc-server process on 127.0.0.1), and the RPC devices'
 * errors, and a row-split matrix bound part by part
 * (tl_session_bind_ggml_part). Built against the ggml source build's headers
 * (TL_GGML_ROOT), the same ggml tierload loads at run time. Expected bytes
 * come from pread of the model file; expected products from a plain loop over
 * those bytes, or (parts) from ggml's product of the whole matrix.
 */
#include "gguf_writer.h"
#include "rpc_server.h"
#include "testutil.h"

#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>



static const char *model_path(void) {
    return tu_testdata("gguf/tiny-llama-f16.gguf");
}

static tl_status open_model(tl_model **m) {
    const char *paths[] = {model_path()};
    return tl_model_open(paths, 1, NULL, m);
}

/* The file's bytes of tensor t, read with pread (independent of the library's mapping). */
static void *file_bytes(const char *path, const tl_tensor_info *t) {
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    void *b = malloc(t->nbytes);
    assert_true(pread(fd, b, t->nbytes, (off_t)t->offset) == (ssize_t)t->nbytes);
    close(fd);
    return b;
}

/* A plan putting the model's "other" component on one device (a GPU to the planner) of budget bytes. */
static tl_plan *plan_on(tl_model *m, const char *dev, uint64_t budget, bool stream) {
    char spec[80];
    snprintf(spec, sizeof spec, "other=%s", dev);
    return tu_plan_one_gpu(m, dev, budget, stream ? NULL : spec, stream);
}

/* y = W x for a 2-D F16 weight from the file's bytes, with ggml's own F16 -> F32. */
static void ref_matvec(const tl_tensor_info *t, const void *bytes, const float *x, float *y) {
    const ggml_fp16_t *w = bytes;
    int64_t rows = t->shape[0], cols = t->shape[1];
    for (int64_t r = 0; r < rows; r++) {
        double acc = 0;
        for (int64_t c = 0; c < cols; c++)
            acc += (double)ggml_fp16_to_fp32(w[r * cols + c]) * x[c];
        y[r] = (float)acc;
    }
}

/*
 * y ([n, rows] floats) = w ([rows, cols], with its storage: allocated or
 * bound) times x ([n, cols] floats), computed by backend be.
 */
static void product_on(ggml_backend_t be, struct ggml_tensor *w, const float *x, int n, float *y) {
    struct ggml_init_params ip = {ggml_tensor_overhead() * 2 + ggml_graph_overhead(), NULL, true};
    struct ggml_context *ctx = ggml_init(ip);
    struct ggml_tensor *xt = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, w->ne[0], n);
    struct ggml_tensor *yt = ggml_mul_mat(ctx, w, xt);
    struct ggml_cgraph *gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, yt);
    ggml_backend_buffer_t b = ggml_backend_alloc_ctx_tensors(ctx, be);
    assert_non_null(b);
    ggml_backend_tensor_set(xt, x, 0, ggml_nbytes(xt));
    assert_int_equal(ggml_backend_graph_compute(be, gf), GGML_STATUS_SUCCESS);
    ggml_backend_tensor_get(yt, y, 0, ggml_nbytes(yt));
    ggml_backend_buffer_free(b);
    ggml_free(ctx);
}

/*
 * Bind every tensor of an acquired set and check it: its bytes (read back
 * through ggml) equal the file's, and for 2-D F16 weights W·x computed by
 * backend be equals the reference within F16-product rounding. Returns how
 * many tensors were checked.
 */
static size_t check_set(tl_session *s, tl_acquired *a, const char *path, ggml_backend_t be,
                        ggml_backend_dev_t want_dev) {
    size_t checked = 0;
    for (size_t i = 0; i < tl_acquired_count(a); i++) {
        const tl_session_tensor *st = tl_acquired_tensor(a, i);
        const tl_tensor_info *t = st->info;
        struct ggml_init_params ip = {ggml_tensor_overhead() * 8 + ggml_graph_overhead(), NULL, true};
        struct ggml_context *ctx = ggml_init(ip);
        int64_t ne[4] = {1, 1, 1, 1};
        for (uint32_t k = 0; k < t->n_dims; k++)
            ne[k] = t->shape[t->n_dims - 1 - k];
        struct ggml_tensor *w = ggml_new_tensor(ctx, (enum ggml_type)t->dtype, (int)t->n_dims, ne);
        assert_int_equal(tl_session_bind_ggml(s, a, i, w), TL_OK);
        assert_non_null(w->buffer);
        if (want_dev)
            assert_true(ggml_backend_buffer_get_type(w->buffer) ==
                        ggml_backend_dev_buffer_type(want_dev));
        void *ref = file_bytes(path, t);
        void *got = malloc(t->nbytes);
        ggml_backend_tensor_get(w, got, 0, t->nbytes);
        assert_memory_equal(got, ref, t->nbytes);
        /* rebinding the same ggml tensor works */
        assert_int_equal(tl_session_bind_ggml(s, a, i, w), TL_OK);
        if (t->n_dims == 2 && t->dtype == TL_DTYPE_F16 && be) {
            int64_t rows = t->shape[0], cols = t->shape[1];
            float *xv = malloc((size_t)cols * sizeof *xv), *yv = malloc((size_t)rows * sizeof *yv);
            float *yr = malloc((size_t)rows * sizeof *yr);
            for (int64_t c = 0; c < cols; c++)
                xv[c] = (float)((c * 7919 % 13) - 6) / 8.0f;
            product_on(be, w, xv, 1, yv);
            ref_matvec(t, ref, xv, yr);
            for (int64_t r = 0; r < rows; r++)
                assert_true(fabsf(yv[r] - yr[r]) <= 1e-2f * (1.0f + fabsf(yr[r])));
            free(xv);
            free(yv);
            free(yr);
        }
        free(ref);
        free(got);
        ggml_free(ctx);
        checked++;
    }
    return checked;
}

static tl_device *find_dev(const char *name) {
    tl_device *d = NULL;
    assert_int_equal(tl_device_find(name, &d), TL_OK);
    return d;
}

/* The RPC device of the newest server: the highest rpcS:0 registered (its name into name). */
static tl_device *newest_rpc_dev(char *name, size_t cap) {
    tl_device *d = NULL;
    for (int sidx = 15; sidx >= 0 && !d; sidx--) {
        snprintf(name, cap, "rpc%d:0", sidx);
        if (tl_device_find(name, &d) != TL_OK) d = NULL;
    }
    assert_non_null(d);
    return d;
}

/* Resident on ggml:CPU: copied into the device's pool (no_zero_copy), then the mapping itself. */
static void test_bind_cpu(void **state) {
    (void)state;
    TU_NEED_GGML();
    tl_model *m;
    assert_int_equal(open_model(&m), TL_OK);
    tl_plan *p = plan_on(m, "ggml:CPU", 1ull << 30, false);
    tl_device *d = find_dev("ggml:CPU");
    ggml_backend_dev_t gd = tl_device_ggml_dev(d);
    assert_non_null(gd);
    ggml_backend_t be = ggml_backend_dev_init(gd, NULL);
    for (int copy = 1; copy >= 0; copy--) {
        tl_session_options o;
        tl_session_options_init(&o);
        o.no_zero_copy = copy;
        tl_session *s;
        assert_int_equal(tl_session_create(m, p, &o, &s), TL_OK);
        tl_acquired *a;
        assert_int_equal(tl_session_acquire(s, TL_COMP_OTHER, 0, TL_ALL_LAYERS, true, &a), TL_OK);
        assert_int_equal(tl_acquired_count(a), tl_model_tensor_count(m));
        for (size_t i = 0; i < tl_acquired_count(a); i++) {
            const tl_session_tensor *st = tl_acquired_tensor(a, i);
            assert_int_equal(st->parts[0].tier, copy ? TL_TIER_DEVICE : TL_TIER_FILE);
        }
        size_t n = check_set(s, a, model_path(), be, copy ? gd : NULL);
        assert_int_equal(n, tl_model_tensor_count(m));
        if (!copy) { /* zero copy: the ggml tensor's data is the mapping itself */
            const tl_session_tensor *st = tl_acquired_tensor(a, 0);
            struct ggml_init_params ip = {ggml_tensor_overhead() * 2, NULL, true};
            struct ggml_context *ctx = ggml_init(ip);
            int64_t ne[4] = {1, 1, 1, 1};
            for (uint32_t k = 0; k < st->info->n_dims; k++)
                ne[k] = st->info->shape[st->info->n_dims - 1 - k];
            struct ggml_tensor *w =
                ggml_new_tensor(ctx, (enum ggml_type)st->info->dtype, (int)st->info->n_dims, ne);
            assert_int_equal(tl_session_bind_ggml(s, a, 0, w), TL_OK);
            assert_ptr_equal(w->data, tl_model_tensor_data(m, st->index));
            ggml_free(ctx);
        }
        tl_session_release(s, a);
        assert_int_equal(tl_session_check(s), TL_OK);
        tl_session_destroy(s);
    }
    ggml_backend_free(be);
    tl_device_release(d);
    tl_plan_destroy(p);
    tl_model_close(m);
}

/* A ggml tensor of the wrong type or shape is refused, naming both. */
static void test_bind_mismatch(void **state) {
    (void)state;
    TU_NEED_GGML();
    tl_model *m;
    assert_int_equal(open_model(&m), TL_OK);
    tl_plan *p = plan_on(m, "ggml:CPU", 1ull << 30, false);
    tl_session_options o;
    tl_session_options_init(&o);
    o.no_zero_copy = true;
    tl_session *s;
    assert_int_equal(tl_session_create(m, p, &o, &s), TL_OK);
    tl_acquired *a;
    assert_int_equal(tl_session_acquire(s, TL_COMP_OTHER, 0, 1, false, &a), TL_OK);
    size_t i2 = SIZE_MAX;
    for (size_t i = 0; i < tl_acquired_count(a); i++)
        if (tl_acquired_tensor(a, i)->info->n_dims == 2) i2 = i;
    assert_true(i2 != SIZE_MAX);
    const tl_tensor_info *t = tl_acquired_tensor(a, i2)->info;
    struct ggml_init_params ip = {ggml_tensor_overhead() * 4, NULL, true};
    struct ggml_context *ctx = ggml_init(ip);
    struct ggml_tensor *wt = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, t->shape[1], t->shape[0]);
    assert_int_equal(tl_session_bind_ggml(s, a, i2, wt), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), t->name));
    assert_non_null(strstr(tl_last_error(), "F32"));
    assert_non_null(strstr(tl_last_error(), "F16"));
    assert_null(wt->buffer);
    struct ggml_tensor *ws = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, t->shape[0], t->shape[1]);
    if (t->shape[0] != t->shape[1]) {
        assert_int_equal(tl_session_bind_ggml(s, a, i2, ws), TL_ERR_INVALID_ARG);
        assert_non_null(strstr(tl_last_error(), "ggml tensor"));
    }
    assert_int_equal(tl_session_bind_ggml(s, a, tl_acquired_count(a), ws), TL_ERR_INVALID_ARG);
    ggml_free(ctx);
    tl_session_release(s, a);
    tl_session_destroy(s);
    tl_plan_destroy(p);
    tl_model_close(m);
}

/* Weights streamed through an RPC server's device, layer by layer, bound and multiplied there. */
static void test_bind_rpc(void **state) {
    (void)state;
    TU_NEED_GGML();
    tu_rpc srv;
    char why[256];
    if (!tu_rpc_start(&srv, why, sizeof why)) fail_msg("%s", why);
    size_t added = 0;
    assert_int_equal(tl_device_ggml_rpc_add(srv.endpoint, &added), TL_OK);
    assert_true(added >= 1);
    char name[TL_DEVICE_NAME_MAX];
    tl_device *d = newest_rpc_dev(name, sizeof name);
    tl_device_info info;
    assert_int_equal(tl_device_describe(d, &info, sizeof info), TL_OK);
    assert_false(info.host_pointer);
    assert_non_null(strstr(info.desc, srv.endpoint));
    assert_true(info.total > 0);
    /* adding it again adds nothing */
    assert_int_equal(tl_device_ggml_rpc_add(srv.endpoint, &added), TL_OK);
    assert_int_equal(added, 0);

    tl_model *m;
    assert_int_equal(open_model(&m), TL_OK);
    uint64_t total = 0;
    for (size_t i = 0; i < tl_model_tensor_count(m); i++)
        total += tl_model_tensor(m, i)->nbytes;
    tl_plan *p = plan_on(m, name, total, false);
    tl_session_options so;
    tl_session_options_init(&so);
    so.pinned_cap = 1ull << 30; /* asked for, but an RPC server's device has no pinned tier */
    tl_session *s;
    assert_int_equal(tl_session_create(m, p, &so, &s), TL_OK);
    ggml_backend_dev_t gd = tl_device_ggml_dev(d);
    ggml_backend_t be = ggml_backend_dev_init(gd, NULL);
    assert_non_null(be);
    size_t nl = tl_model_layer_count(m, TL_COMP_OTHER), checked = 0;
    for (size_t l = 0; l <= nl; l++) {
        tl_acquired *a;
        if (l < nl)
            assert_int_equal(tl_session_acquire(s, TL_COMP_OTHER, l, l + 1, false, &a), TL_OK);
        else
            assert_int_equal(tl_session_acquire(s, TL_COMP_OTHER, nl, nl, true, &a), TL_OK);
        for (size_t i = 0; i < tl_acquired_count(a); i++)
            assert_int_equal(tl_acquired_tensor(a, i)->parts[0].tier, TL_TIER_DEVICE);
        checked += check_set(s, a, model_path(), be, gd);
        tl_session_release(s, a);
        assert_int_equal(tl_session_check(s), TL_OK);
    }
    assert_int_equal(checked, tl_model_tensor_count(m));
    tl_session_stats sst;
    assert_int_equal(tl_session_stats_get(s, &sst, sizeof sst), TL_OK);
    assert_false(sst.devices[0].pinned);
    assert_int_equal(sst.pinned_used, 0);
    assert_int_equal(sst.moved[TL_TIER_FILE][TL_TIER_PINNED], 0);
    ggml_backend_free(be);
    tl_session_destroy(s);
    tl_plan_destroy(p);
    tl_model_close(m);
    tl_device_release(d);
    tu_rpc_stop(&srv);
}

/* [n, rows] = W [rows, cols] (F32, from host bytes) times x [n, cols], by ggml's CPU backend. */
static void cpu_product(ggml_backend_t be, const float *w, int64_t rows, int64_t cols,
                        const float *x, int n, float *y) {
    struct ggml_init_params ip = {ggml_tensor_overhead(), NULL, true};
    struct ggml_context *ctx = ggml_init(ip);
    struct ggml_tensor *wt = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, cols, rows);
    ggml_backend_buffer_t b = ggml_backend_alloc_ctx_tensors(ctx, be);
    assert_non_null(b);
    ggml_backend_tensor_set(wt, w, 0, ggml_nbytes(wt));
    product_on(be, wt, x, n, y);
    ggml_backend_buffer_free(b);
    ggml_free(ctx);
}

/*
 * Matrices row-split over ggml:CPU and an RPC server's device (shares 1:2, so
 * that the proportional cut is no multiple of 4): each part binds on its own
 * device with its rows' bytes, and the parts' products (17 columns, where
 * ggml's CPU runs its blocked kernel on row counts that are a multiple of 4)
 * are the whole matrix's product bit for bit — for 700 rows (cut at a
 * multiple of 64) and for 259 (no part a multiple of 4). A matrix of 255
 * columns is not cut; a whole bind of a split tensor, a part out of range and
 * a misshapen part are refused.
 */
static void test_bind_row_parts(void **state) {
    (void)state;
    TU_NEED_GGML();
    tu_rpc srv;
    char why[256], rname[TL_DEVICE_NAME_MAX];
    if (!tu_rpc_start(&srv, why, sizeof why)) fail_msg("%s", why);
    assert_int_equal(tl_device_ggml_rpc_add(srv.endpoint, NULL), TL_OK);
    tl_device *rd = newest_rpc_dev(rname, sizeof rname);
    enum { N = 17, N_MAT = 3 };
    const struct {
        const char *name;
        int64_t rows, cols;
        uint32_t parts;
    } mat[N_MAT] = {{"blk.0.w.weight", 700, 256, 2},
                    {"blk.0.v.weight", 259, 256, 2},
                    {"blk.0.narrow.weight", 259, 255, 1}};
    float *data[N_MAT];
    char *dir = tu_tmpdir(), *path = tu_path(dir, "rows.gguf");
    gw_gguf *g = gw_new(3);
    gw_kv_str(g, "general.architecture", "llama");
    for (int j = 0; j < N_MAT; j++) {
        size_t n = (size_t)(mat[j].rows * mat[j].cols);
        data[j] = malloc(n * sizeof *data[j]);
        for (size_t i = 0; i < n; i++)
            data[j][i] = (float)((int)((i + (size_t)j) * 2654435761u % 2001) - 1000) / 997.0f;
        int64_t ne[2] = {mat[j].cols, mat[j].rows};
        gw_tensor_data(g, gw_tensor(g, mat[j].name, TL_DTYPE_F32, 2, ne), data[j],
                       n * sizeof *data[j]);
    }
    size_t len;
    uint8_t *img = gw_build(g, &len);
    tu_write_file(path, img, len);
    free(img);
    gw_free(g);

    tl_model *m;
    const char *paths[] = {path};
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    tl_plan_summary sum;
    assert_int_equal(tl_plan_summary_from_model(m, TL_DTYPE_INVALID, &sum), TL_OK);
    tl_plan_device devs[3];
    memset(devs, 0, sizeof devs);
    const char *names[] = {"ggml:CPU", rname};
    for (int i = 0; i < 2; i++) {
        snprintf(devs[i].name, sizeof devs[i].name, "%s", names[i]);
        devs[i].is_gpu = true;
        devs[i].total = devs[i].free = (uint64_t)(i + 1) << 24;
    }
    snprintf(devs[2].name, sizeof devs[2].name, "cpu");
    char spec[128];
    snprintf(spec, sizeof spec, "other=ggml:CPU&%s", rname);
    tl_plan_options po;
    tl_plan_options_init(&po);
    po.backend = spec;
    po.row_split = 1u << TL_COMP_OTHER;
    po.reserve = "other=0";
    tl_plan *p;
    assert_int_equal(tl_plan_create(&sum, devs, 3, &po, &p), TL_OK);
    tl_plan_summary_clear(&sum);
    assert_true(tl_plan_feasible(p));
    tl_session *s;
    assert_int_equal(tl_session_create(m, p, NULL, &s), TL_OK);
    tl_acquired *a;
    assert_int_equal(tl_session_acquire(s, TL_COMP_OTHER, 0, TL_ALL_LAYERS, true, &a), TL_OK);
    assert_int_equal(tl_acquired_count(a), N_MAT);

    tl_device *cd = find_dev("ggml:CPU");
    ggml_backend_t cpu = ggml_backend_dev_init(tl_device_ggml_dev(cd), NULL);
    ggml_backend_t rpc = ggml_backend_dev_init(tl_device_ggml_dev(rd), NULL);
    assert_non_null(cpu);
    assert_non_null(rpc);
    float *x = malloc((size_t)N * 256 * sizeof *x);
    for (size_t i = 0; i < (size_t)N * 256; i++)
        x[i] = (float)((int)(i * 7919u % 257) - 128) / 131.0f;
    for (size_t i = 0; i < tl_acquired_count(a); i++) {
        const tl_session_tensor *st = tl_acquired_tensor(a, i);
        int j = 0;
        while (j < N_MAT && strcmp(st->info->name, mat[j].name))
            j++;
        assert_true(j < N_MAT);
        const int64_t rows = mat[j].rows, cols = mat[j].cols;
        assert_int_equal(st->n_parts, mat[j].parts);
        struct ggml_init_params ip = {ggml_tensor_overhead() * 4, NULL, true};
        struct ggml_context *ctx = ggml_init(ip);
        struct ggml_tensor *whole = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, cols, rows);
        if (st->n_parts == 1) { /* kept whole: binds either way, and has no part 1 */
            assert_int_equal(tl_session_bind_ggml(s, a, i, whole), TL_OK);
            assert_int_equal(tl_session_bind_ggml_part(s, a, i, 0, whole), TL_OK);
            assert_int_equal(tl_session_bind_ggml_part(s, a, i, 1, whole), TL_ERR_INVALID_ARG);
            assert_non_null(strstr(tl_last_error(), mat[j].name));
            ggml_free(ctx);
            continue;
        }
        assert_true(st->parts[0].device != st->parts[1].device);
        assert_int_equal(st->parts[0].row_begin, 0);
        assert_int_equal(st->parts[0].row_end, st->parts[1].row_begin);
        assert_int_equal(st->parts[1].row_end, rows);
        if (rows % 4 == 0)
            assert_int_equal(st->parts[0].row_end % 64, 0);
        else /* neither part a multiple of 4 */
            assert_true(st->parts[0].row_end % 4 && (rows - (int64_t)st->parts[0].row_end) % 4);
        assert_int_equal(tl_session_bind_ggml(s, a, i, whole), TL_ERR_UNSUPPORTED);
        assert_non_null(strstr(tl_last_error(), "tl_session_bind_ggml_part"));
        assert_int_equal(tl_session_bind_ggml_part(s, a, i, 0, whole), TL_ERR_INVALID_ARG);
        assert_non_null(strstr(tl_last_error(), "part 0"));
        assert_null(whole->buffer);
        float *want = malloc((size_t)N * (size_t)rows * sizeof *want);
        cpu_product(cpu, data[j], rows, cols, x, N, want);
        for (uint32_t k = 0; k < 2; k++) {
            const tl_session_part *pt = &st->parts[k];
            int64_t pr = (int64_t)(pt->row_end - pt->row_begin);
            struct ggml_tensor *w = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, cols, pr);
            assert_int_equal(tl_session_bind_ggml_part(s, a, i, k, w), TL_OK);
            float *got = malloc(ggml_nbytes(w));
            ggml_backend_tensor_get(w, got, 0, ggml_nbytes(w));
            assert_memory_equal(got, data[j] + pt->row_begin * (uint64_t)cols, ggml_nbytes(w));
            free(got);
            float *y = malloc((size_t)N * (size_t)pr * sizeof *y);
            product_on(pt->device == rd ? rpc : cpu, w, x, N, y);
            for (int c = 0; c < N; c++)
                assert_memory_equal(y + (size_t)c * (size_t)pr,
                                    want + (size_t)c * (size_t)rows + pt->row_begin,
                                    (size_t)pr * sizeof *y);
            free(y);
        }
        free(want);
        ggml_free(ctx);
    }
    tl_session_release(s, a);
    assert_int_equal(tl_session_check(s), TL_OK);
    ggml_backend_free(cpu);
    ggml_backend_free(rpc);
    free(x);
    for (int j = 0; j < N_MAT; j++)
        free(data[j]);
    tl_session_destroy(s);
    tl_plan_destroy(p);
    tl_model_close(m);
    tl_device_release(cd);
    tl_device_release(rd);
    tu_tmpdir_rm(dir);
    free(path);
    tu_rpc_stop(&srv);
}

/*
 * A listener that answers ggml-rpc's HELLO (command 14, u64 size, 24 bytes)
 * with protocol 3.1.4: a u64 size of 28, then major, minor, patch, a pad byte
 * and 24 capability bytes.
 */
static void *old_version_server(void *arg) {
    int ls = *(int *)arg;
    int c = accept(ls, NULL, NULL);
    if (c < 0) return NULL;
    unsigned char req[1 + 8 + 24];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof req && (r = read(c, req + got, sizeof req - got)) > 0)
        got += (size_t)r;
    unsigned char rsp[8 + 28] = {28, 0, 0, 0, 0, 0, 0, 0, 3, 1, 4};
    if (write(c, rsp, sizeof rsp) != (ssize_t)sizeof rsp) perror("write");
    close(c);
    return NULL;
}

/* Endpoints that are malformed, repeated, closed or silent: clear errors naming them, no hang. */
static void test_rpc_errors(void **state) {
    (void)state;
    TU_NEED_GGML();
    assert_int_equal(tl_device_ggml_rpc_add("localhost", NULL), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "localhost"));
    assert_int_equal(tl_device_ggml_rpc_add("127.0.0.1:0", NULL), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_device_ggml_rpc_add("127.0.0.1:70000", NULL), TL_ERR_INVALID_ARG);
    assert_int_equal(tl_device_ggml_rpc_add("127.0.0.1:5,127.0.0.1:5", NULL), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "twice"));
    int port = tu_free_port();
    char ep[64];
    snprintf(ep, sizeof ep, "127.0.0.1:%d", port);
    assert_int_equal(tl_device_ggml_rpc_add(ep, NULL), TL_ERR_DEVICE);
    assert_non_null(strstr(tl_last_error(), ep));
    /* a listener that accepts and never answers */
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    assert_int_equal(getsockname(ls, (struct sockaddr *)&a, &l), 0);
    assert_int_equal(listen(ls, 4), 0);
    snprintf(ep, sizeof ep, "127.0.0.1:%d", ntohs(a.sin_port));
    assert_int_equal(tl_device_ggml_rpc_add(ep, NULL), TL_ERR_DEVICE);
    assert_non_null(strstr(tl_last_error(), ep));
    assert_non_null(strstr(tl_last_error(), "no answer"));
    close(ls);
    /* a server of another protocol version: refused, both versions named */
    ls = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_port = 0;
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof a), 0);
    l = sizeof a;
    assert_int_equal(getsockname(ls, (struct sockaddr *)&a, &l), 0);
    assert_int_equal(listen(ls, 4), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, old_version_server, &ls), 0);
    snprintf(ep, sizeof ep, "127.0.0.1:%d", ntohs(a.sin_port));
    assert_int_equal(tl_device_ggml_rpc_add(ep, NULL), TL_ERR_UNSUPPORTED);
    pthread_join(th, NULL);
    close(ls);
    assert_non_null(strstr(tl_last_error(), ep));
    assert_non_null(strstr(tl_last_error(), "3.1.4"));
    assert_non_null(strstr(tl_last_error(), "7.0"));
}

static void die_with_9(const char *message) {
    fprintf(stderr, "handler: %s\n", message);
    _exit(9);
}

/*
 * A server that dies (silent: stops answering, SIGSTOP) after it was added:
 * ggml's RPC client ends the process — for a silent server once the
 * connection's timeout (TIERLOAD_RPC_TIMEOUT, 1 s here) passes, rather than
 * waiting forever; the handler hears what ggml said and which device and
 * endpoint tierload was moving bytes to, and ends it with its own status (in
 * a child process here).
 */
static void lose_server(bool silent) {
    TU_NEED_GGML();
    if (TU_UNDER_TSAN) {
        printf("  SKIP: ThreadSanitizer does not support fork() once threads run\n");
        skip();
    }
    tu_rpc srv;
    char why[256];
    if (!tu_rpc_start(&srv, why, sizeof why)) fail_msg("%s", why);
    int err[2], up[2], down[2];
    assert_int_equal(pipe(err), 0);
    assert_int_equal(pipe(up), 0);
    assert_int_equal(pipe(down), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(err[1], 2);
        signal(SIGPIPE, SIG_IGN);
        if (silent) setenv("TIERLOAD_RPC_TIMEOUT", "1", 1);
        tl_device_ggml_on_abort(die_with_9);
        if (tl_device_ggml_rpc_add(srv.endpoint, NULL) != TL_OK) _exit(3);
        tl_device *d = NULL;
        for (int k = 15; k >= 0 && !d; k--) { /* the newest rpcS:0 is this server's */
            char name[32];
            snprintf(name, sizeof name, "rpc%d:0", k);
            if (tl_device_find(name, &d) != TL_OK) d = NULL;
        }
        if (!d) _exit(4);
        char c = 'x';
        if (write(up[1], &c, 1) != 1 || read(down[0], &c, 1) != 1) _exit(5);
        static char buf[1 << 20];
        tl_devptr p;
        tl_status st = tl_device_alloc(d, sizeof buf, &p);
        if (st == TL_OK) st = tl_device_copy_to(d, p, buf, sizeof buf);
        if (st == TL_OK) st = tl_device_copy_from(d, buf, p, sizeof buf); /* waits for an answer */
        _exit(st == TL_OK ? 7 : 8); /* not reached: ggml ends the process first */
    }
    assert_true(pid > 0);
    close(err[1]);
    close(up[1]);
    close(down[0]);
    char c;
    assert_int_equal(read(up[0], &c, 1), 1);
    if (silent) /* the server stops answering after the child added it */
        kill(srv.pid, SIGSTOP);
    else /* the server dies after the child added it */
        tu_rpc_stop(&srv);
    assert_int_equal(write(down[1], &c, 1), 1);
    static char text[4096];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof text - 1 && (r = read(err[0], text + got, sizeof text - 1 - got)) > 0)
        got += (size_t)r;
    text[got] = 0;
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    close(err[0]);
    close(up[0]);
    close(down[1]);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 9)
        fail_msg("child status %d, stderr: %s", status, text);
    if (!strstr(text, "ggml stopped the process") || !strstr(text, srv.endpoint))
        fail_msg("stderr: %s", text);
    tu_rpc_stop(&srv); /* SIGKILL ends a stopped one too */
}

static void test_rpc_server_dies(void **state) {
    (void)state;
    lose_server(false);
}

static void test_rpc_server_silent(void **state) {
    (void)state;
    lose_server(true);
}

int main(void) {
    tu_ggml_discover(); /* the tests' ggml: a failure to load it fails them */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bind_cpu),          cmocka_unit_test(test_bind_mismatch),
        cmocka_unit_test(test_bind_rpc),          cmocka_unit_test(test_bind_row_parts),
        cmocka_unit_test(test_rpc_errors),        cmocka_unit_test(test_rpc_server_dies),
        cmocka_unit_test(test_rpc_server_silent),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
