/*
 * ggml_dl.h — inside the device layer: the slice of ggml's public C API that
 * tierload calls (ggml.h, ggml-alloc.h, ggml-backend.h), resolved with dlsym
 * from libraries loaded at run time, and the internals that the ggml device
 * (ggml.c) shares with the ggml compute helper (ggml_compute.c).
 *
 * ggml handles are opaque pointers here; the only ggml structs read are the
 * device properties (ggml_dev_props, read into an oversized buffer) and the
 * head of struct ggml_tensor (tl__ggml_tensor below, whose layout
 * test_ggml_abi checks against ggml.h of the source build).
 */
#ifndef TL_DEVICES_GGML_DL_H
#define TL_DEVICES_GGML_DL_H

#include "tierload.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ggml type ids used by tierload itself (ggml.h enum ggml_type). */
#define TL_GGML_T_F32 0
#define TL_GGML_T_I8 24

/* ggml-backend.h enum ggml_backend_buffer_usage: GGML_BACKEND_BUFFER_USAGE_WEIGHTS. */
#define TL_GGML_USAGE_WEIGHTS 1

/* ggml device types (ggml-backend.h enum ggml_backend_dev_type). */
#define TL_GGML_DEV_CPU 0
#define TL_GGML_DEV_GPU 1
#define TL_GGML_DEV_IGPU 2
#define TL_GGML_DEV_ACCEL 3

/* struct ggml_init_params (passed by value). */
typedef struct tl__ggml_init_params {
    size_t mem_size;
    void *mem_buffer;
    bool no_alloc;
} tl__ggml_init_params;

/*
 * struct ggml_tensor (ggml.h) up to its data pointer: the fields tierload
 * reads (type, buffer, ne, view_src) and writes (buffer, data) when it binds
 * a tensor to memory it placed. The layout has been stable across ggml
 * releases; GGML_MAX_NAME (which engines change) only moves fields after data.
 */
#define TL__GGML_MAX_DIMS 4
typedef struct tl__ggml_tensor {
    int type;
    void *buffer;
    int64_t ne[TL__GGML_MAX_DIMS];
    size_t nb[TL__GGML_MAX_DIMS];
    int op;
    int32_t op_params[16];
    int32_t flags;
    void *src[10];
    void *view_src;
    size_t view_offs;
    void *data;
} tl__ggml_tensor;

/* The entry points, all resolved when ggml is loaded. */
typedef struct tl__ggml_api {
    /* ggml.h */
    void *(*init)(tl__ggml_init_params);
    void (*free)(void *ctx);
    size_t (*tensor_overhead)(void);
    size_t (*graph_overhead)(void);
    void *(*new_tensor_1d)(void *ctx, int type, int64_t ne0);
    void *(*new_tensor_2d)(void *ctx, int type, int64_t ne0, int64_t ne1);
    void *(*mul_mat)(void *ctx, void *a, void *b);
    void *(*scale_inplace)(void *ctx, void *a, float s);
    void *(*add_inplace)(void *ctx, void *a, void *b);
    void *(*cpy)(void *ctx, void *a, void *b);
    void *(*sum)(void *ctx, void *a);
    void *(*new_graph)(void *ctx);
    void (*build_forward_expand)(void *graph, void *tensor);
    size_t (*nbytes)(const void *tensor);
    const char *(*type_name)(int type);
    int64_t (*blck_size)(int type);
    size_t (*type_size)(int type);
    void (*log_set)(void (*cb)(int level, const char *text, void *user), void *user);
    /* ggml-alloc.h */
    void *(*alloc_ctx_tensors_from_buft)(void *ctx, void *buft);
    /* ggml-backend.h: registry (libggml) */
    void (*load_all_from_path)(const char *dir);
    void (*load_all)(void);
    size_t (*dev_count)(void);
    void *(*dev_get)(size_t i);
    /* ggml-backend.h: devices, buffers, tensors, backends (libggml-base) */
    const char *(*dev_name)(void *dev);
    const char *(*dev_description)(void *dev);
    void (*dev_memory)(void *dev, size_t *free, size_t *total);
    int (*dev_type)(void *dev);
    void (*dev_get_props)(void *dev, void *props);
    void *(*dev_buffer_type)(void *dev);
    void *(*dev_buffer_from_host_ptr)(void *dev, void *ptr, size_t size, size_t max_tensor);
    void *(*dev_init)(void *dev, const char *params);
    bool (*dev_supports_op)(void *dev, const void *op);
    void *(*buft_alloc_buffer)(void *buft, size_t size);
    bool (*buft_is_host)(void *buft);
    size_t (*buft_get_alignment)(void *buft);
    size_t (*buft_get_max_size)(void *buft);
    size_t (*buft_get_alloc_size)(void *buft, const void *tensor);
    void (*buffer_free)(void *buf);
    void (*buffer_set_usage)(void *buf, int usage); /* NULL in a ggml without it */
    void *(*buffer_get_base)(void *buf);
    size_t (*buffer_get_size)(void *buf);
    size_t (*buffer_get_alloc_size)(void *buf, const void *tensor);
    int (*tensor_alloc)(void *buf, void *tensor, void *addr); /* enum ggml_status */
    void (*tensor_set)(void *tensor, const void *data, size_t offset, size_t size);
    void (*tensor_get)(const void *tensor, void *data, size_t offset, size_t size);
    void (*tensor_copy)(void *src, void *dst);
    void *(*cpu_buffer_from_ptr)(void *ptr, size_t size);
    int (*graph_compute)(void *backend, void *graph); /* enum ggml_status */
    void (*backend_free)(void *backend);
    void *(*dev_backend_reg)(void *dev);
    void *(*reg_get_proc_address)(void *reg, const char *name);
    size_t (*reg_dev_count)(void *reg);
    void *(*reg_dev_get)(void *reg, size_t i);
    void *(*reg_by_name)(const char *name); /* libggml */
    int (*buffer_init_tensor)(void *buf, void *tensor); /* enum ggml_status */
} tl__ggml_api;

/* The loaded API, or NULL when ggml has not been loaded (see tl_device_ggml_discover). */
const tl__ggml_api *tl__ggml_api_get(void);

/* Last message ggml logged (warnings and errors), for error messages. */
const char *tl__ggml_last_log(void);

/*
 * Bind ggml tensor t (a struct ggml_tensor *) to n bytes at addr inside ggml
 * buffer buf: t->buffer and t->data are set as ggml_backend_tensor_alloc
 * sets them (a tensor bound before is rebound). Every condition ggml would
 * assert on is checked first: TL_ERR_INVALID_ARG for a view, a size that does
 * not match n, or a range outside the buffer. what names the tensor.
 */
tl_status tl__ggml_bind(void *t, void *buf, void *addr, uint64_t n, const char *what);

/* What ggml.c keeps about one ggml device behind a tl_device. */
typedef struct tl__ggml_dev tl__ggml_dev;

/*
 * A tl_device for ggml device dev (ggml_backend_dev_t): named name (NULL:
 * "ggml:" + ggml's name), described desc (NULL: ggml's description). remote:
 * an RPC server's device, whose memory is read once now. Not registered.
 */
tl_status tl__ggml_dev_make(void *dev, const char *name, const char *desc, bool remote,
                            tl_device **out);
/* Is a device of this name registered (case-insensitive)? */
bool tl__ggml_registered(const char *name);
/* Load ggml (as tl_device_ggml_discover does) without registering devices. */
tl_status tl__ggml_load(const char *dir);

/*
 * What this thread asks of g now (what NULL: done), for the message when ggml
 * aborts ("computing on ggml:RPC..., ggml RPC server HOST:PORT, device 0").
 */
void tl__ggml_doing(const tl__ggml_dev *g, const char *what);
/* The ggml device behind d; NULL when d is not a ggml device. */
tl__ggml_dev *tl__ggml_dev_of(tl_device *d);
/* Its ggml_backend_dev_t and default buffer type. */
void *tl__ggml_dev_handle(const tl__ggml_dev *g);
void *tl__ggml_dev_buft(const tl__ggml_dev *g);
const char *tl__ggml_dev_name(const tl__ggml_dev *g);
/* Can the device wrap host memory as a buffer (caps.buffer_from_host_ptr, or the CPU device)? */
bool tl__ggml_dev_host_mappable(const tl__ggml_dev *g);

/*
 * The ggml buffer holding device range [p, p+n) of an allocation made by
 * this device: *buf, and the address of p inside it (*addr = base + offset).
 * TL_ERR_INVALID_ARG when the range is not inside one live allocation. The
 * allocation must not be freed while the caller uses buf.
 */
tl_status tl__ggml_dev_resolve(tl__ggml_dev *g, tl_devptr p, uint64_t n, void **buf, void **addr);

/*
 * A backend (stream) of the device for graph compute, created once. The
 * caller holds the device's compute lock (tl__ggml_dev_lock) while using it.
 */
tl_status tl__ggml_dev_backend(tl__ggml_dev *g, void **backend);
void tl__ggml_dev_lock(tl__ggml_dev *g);
void tl__ggml_dev_unlock(tl__ggml_dev *g);

/*
 * Cap the bytes this device may hold through tierload (UINT64_MAX: no cap):
 * allocations past it fail with TL_ERR_DEVICE_OOM, and describe reports the
 * cap as total. For tests and budgets.
 */
tl_status tl__ggml_dev_set_cap(tl_device *d, uint64_t cap);
/* Record the network link of an RPC server's device (bytes/s, seconds per round trip). */
tl_status tl__ggml_dev_set_link(tl_device *d, double bandwidth, double latency, bool measured);
/* Bytes tierload copied to an RPC server's device since it was added (0 for others). */
uint64_t tl__ggml_dev_written(tl_device *d);
/*
 * Packing small writes for an RPC server's cache. ggml's RPC client sends a
 * write above 10 MiB into a weights buffer as a hash first, and a server
 * with a cache (ggml-rpc-server -c) that has those bytes takes them from it;
 * smaller writes always cross the link. tl__ggml_dev_pack_min: the least
 * bytes a write must have to be sent as a hash (10 MiB + 1) on an RPC
 * server's device, 0 on others. tl__ggml_dev_scatter writes src (len bytes)
 * in one write to scratch memory of the device, then has the server copy
 * piece i (n[i] bytes, in order from src) to dst[i]: the link carries one
 * write (a hash when the server has it) and one small request per piece.
 * Without room for the scratch, the pieces are written one by one.
 */
#define TL_GGML_RPC_HASH_MIN ((10ull << 20) + 1)
uint64_t tl__ggml_dev_pack_min(tl_device *d);
tl_status tl__ggml_dev_scatter(tl_device *d, const void *src, uint64_t len, const tl_devptr *dst,
                               const uint64_t *n, size_t count);
/* Give the device's empty pool chunks back to ggml (frees them on the server). */
void tl__ggml_dev_trim(tl_device *d);

/*
 * Threads of the device's backend for graph compute (CPU backends: ggml's
 * ggml_backend_set_n_threads; ignored by backends without it). 0 leaves
 * the backend as it is (ggml's default, 4, unless set before). Applies to the
 * backend now and when it is created. ggml's CPU threads spin while they
 * wait: on a machine whose cores are busy, fewer threads are faster.
 */
tl_status tl__ggml_dev_set_threads(tl_device *d, int n_threads);

/* ---- compute (ggml_compute.c) ---- */

/*
 * The fixed random vector x of cols floats for seed (uniform in [-1, 1),
 * xorshift64*): the same x for the same (seed, cols) everywhere.
 */
void tl__ggml_random_x(uint64_t seed, int64_t cols, float *x);

/*
 * y = W . x with ggml_mul_mat on device d, for a 2-D weight W of ggml type
 * dtype with rows x cols elements (rows outermost, as tierload shapes are;
 * ggml's ne0 = cols) and x = tl__ggml_random_x(seed, cols). y receives rows
 * floats.
 *
 * tl__ggml_matvec: W is in d's memory at w (an allocation of d, or inside one).
 * tl__ggml_matvec_host: W is host memory (e.g. the file's mapping): wrapped in
 * place where d can use host memory, else copied into a temporary buffer of d.
 *
 * TL_ERR_UNSUPPORTED when ggml has no such type or d cannot multiply it,
 * TL_ERR_INVALID_ARG when cols is not a whole number of blocks or the bytes
 * do not fit the allocation.
 */
/*
 * Bytes an allocation of d needs to hold a rows x cols weight of dtype for
 * tl__ggml_matvec: its size, or more where the backend pads rows (CUDA pads
 * quantized rows to 512 elements).
 */
tl_status tl__ggml_weight_bytes(tl_device *d, tl_dtype dtype, int64_t rows, int64_t cols,
                               uint64_t *bytes);
/*
 * Many products at once, as a real engine computes a layer: one graph per up
 * to 256 weights. Each weight is in d's memory at dev (when host is NULL) or
 * in host memory at host (wrapped in place, or copied as above); y receives
 * rows floats. The first failure stops (earlier graphs' y are written).
 */
typedef struct tl__ggml_weight {
    tl_dtype dtype;
    int64_t rows, cols; /* rows outermost; ggml's ne0 = cols */
    tl_devptr dev;
    const void *host;
    float *y;
} tl__ggml_weight;
tl_status tl__ggml_matvec_many(tl_device *d, tl__ggml_weight *ws, size_t n, uint64_t seed);
tl_status tl__ggml_matvec(tl_device *d, tl_devptr w, tl_dtype dtype, int64_t rows, int64_t cols,
                         uint64_t seed, float *y);
tl_status tl__ggml_matvec_host(tl_device *d, const void *w, tl_dtype dtype, int64_t rows,
                              int64_t cols, uint64_t seed, float *y);
/*
 * The product of a model's 2-D tensor i straight from the file's mapping
 * (tl__ggml_matvec_host), *y malloc'd with *rows floats; the message names the
 * file and tensor.
 */
tl_status tl__ggml_matvec_tensor(tl_device *d, const tl_model *m, size_t i, uint64_t seed, float **y,
                                int64_t *rows);

#endif
