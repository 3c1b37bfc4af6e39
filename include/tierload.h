/*
 * tierload.h — the whole public API of libtierload.
 *
 * tierload keeps the weights of large models in memory: it reads model files
 * (GGUF, safetensors, sharded checkpoints, diffusers folders) into a catalog,
 * plans where each component should live (GPU, pinned RAM, RAM, the file's own
 * mapping, spill files) and moves the bytes there under hard memory bounds.
 *
 * Conventions (one everywhere):
 *   - names are tl_<noun>_<verb>. Objects the library makes come in pairs
 *     named alike: tl_<noun>_create / tl_<noun>_destroy, a model opened from
 *     files tl_model_open / tl_model_close, reference-counted devices
 *     tl_device_retain / tl_device_release. Destroying NULL is fine.
 *   - getters are tl_<noun>_<field>(obj[, i]) (tl_<noun>_<field>_of where
 *     that name is taken by a type); indexes are size_t, and "not found" is
 *     TL_NOT_FOUND. A name parser tl_<type>_from_name returns the type's
 *     _INVALID value (-1) for a name it does not know.
 *   - options structs (tl_model_options, tl_load_options, tl_plan_options,
 *     tl_library_options, tl_session_options, tl_run_options,
 *     tl_spill_options, and the tl_device_ops vtable) start with
 *     `uint32_t size`. Initialise them with tl_<noun>_options_init (or
 *     tl_device_ops_init), which sets size to the sizeof your program was
 *     compiled with and every field to its default, then set the fields you
 *     need. The library reads only the first `size` bytes and uses defaults
 *     for fields past them, so a program built against an older header keeps
 *     working with a newer library; a size of 0 is TL_ERR_INVALID_ARG.
 *   - structs the library fills in the caller's memory (stats, infos,
 *     decisions, events, reports) are passed with their size: the call takes
 *     `size_t out_size` = sizeof the struct the program was compiled with
 *     (for an array, of one element: the stride), and the library fills
 *     exactly the first out_size bytes of each (a newer library never writes
 *     past a shorter, older struct; an older library leaves a longer struct's
 *     tail as it was). Structs the library owns and hands out by pointer
 *     (tl_tensor_info, tl_load_stats, tl_run_phase, tl_session_tensor, ...)
 *     only grow at their end and are never indexed by the caller except
 *     through an accessor. Value types passed both ways (tl_plan_device,
 *     tl_plan_summary, tl_backend_spec, tl_plan_size, tl_plan_phases,
 *     tl_vae_tiling, tl_sim_spec, tl_session_step, tl_meta, and the
 *     tl_session_part array of a tl_session_tensor — tl_acquired_part reads a
 *     part up to the caller's size)
 *     are fixed for an ABI version: changing them raises TL_ABI_VERSION, as
 *     does growing a struct that is embedded in another one (tl_memstats in
 *     tl_memspan, tl_session_device_stats in tl_session_stats). out_size 0
 *     with a non-NULL out is TL_ERR_INVALID_ARG.
 *   - every fallible call returns a tl_status; on failure tl_last_error()
 *     returns a message (thread-local, valid until the next failing call on the
 *     same thread) that names the file, and the tensor or key, involved;
 *   - memory the library returns to the caller (plan JSON and text) is freed
 *     with tl_free; everything else it returns (names, infos, messages) is
 *     owned by the object it came from and lives as long as that object,
 *     and the names tl_<type>_name returns are static strings;
 *   - thread-safety: functions on different objects may run concurrently; one
 *     object may be read (const functions) from several threads at once, but
 *     a call that changes it (close, destroy, advise, load into it) must not
 *     overlap any other call on it. The device registry and devices are
 *     thread-safe throughout (see below).
 *   - the library never exits, aborts or prints on its own, and reads no
 *     environment variable unless a call says so (TL_MAP_FROM_ENV,
 *     TIERLOAD_CUDART for CUDA discovery, TIERLOAD_COLD_PATH and
 *     TIERLOAD_NO_URING for loads);
 *   - sizes are bytes (uint64_t) unless a name says otherwise.
 */
#ifndef TIERLOAD_H
#define TIERLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * TL_API marks the functions libtierload exports. The shared library is built
 * with hidden visibility, so only what this header declares is visible to
 * programs that link it.
 */
#if defined(__GNUC__)
#define TL_API __attribute__((visibility("default")))
#else
#define TL_API
#endif

#define TL_VERSION_MAJOR 0
#define TL_VERSION_MINOR 1
#define TL_VERSION_PATCH 0

/* Library version as "MAJOR.MINOR.PATCH". */
TL_API const char *tl_version(void);

/*
 * The binary interface's version: raised by every change that breaks a
 * program built against an older header (a removed or changed function, a
 * fixed-layout type changed). The shared library's SONAME carries it
 * (libtierload.so.TL_ABI_VERSION) and its symbols are versioned
 * TIERLOAD_<TL_ABI_VERSION>. A program may compare tl_abi_version() with the
 * TL_ABI_VERSION it was compiled with and refuse to run on a mismatch
 * (the dynamic linker already refuses a different SONAME).
 */
#define TL_ABI_VERSION 1
TL_API unsigned tl_abi_version(void);

/* A byte count for people ("512 B", "1.50 GiB") written into buf; returns buf. */
TL_API const char *tl_fmt_bytes(uint64_t bytes, char *buf, size_t n);

/* ------------------------------------------------------------------------ */
/* Status codes and errors                                                   */
/* ------------------------------------------------------------------------ */

typedef enum tl_status {
    TL_OK = 0,
    TL_ERR_INVALID_ARG = 1, /* a caller's argument is wrong */
    TL_ERR_IO = 2,          /* a system call on a file failed */
    TL_ERR_FORMAT = 3,      /* a model file is malformed or hostile */
    TL_ERR_NOMEM = 4,       /* host memory could not be had */
    TL_ERR_NOT_FOUND = 5,   /* a file, tensor, key or device does not exist */
    TL_ERR_UNSUPPORTED = 6, /* valid, but not something tierload handles */
    TL_ERR_DEVICE_OOM = 7,  /* a device is out of memory (same code for sim and real GPUs) */
    TL_ERR_DEVICE = 8,      /* a device failed otherwise */
    TL_ERR_CANCELLED = 9,   /* a progress callback asked to stop */
    TL_ERR_INFEASIBLE = 10, /* a plan cannot fit the budgets */
    TL_ERR_CHANGED = 11,    /* a file changed under its mapping (truncated, rewritten) */
    TL_ERR_INTEGRITY = 12,  /* bytes differ from what they should be (load verify) */
} tl_status;

/* Short constant name of a status ("TL_ERR_FORMAT"). */
TL_API const char *tl_status_name(tl_status s);

/*
 * Message of the last failure on this thread ("" when none). The pointer is
 * to thread-local storage, valid on this thread until its next call into the
 * library.
 */
TL_API const char *tl_last_error(void);

/* Free memory the library returned to the caller (tl_plan_to_json, ...). NULL is fine. */
TL_API void tl_free(void *p);

/* "Not found" for functions that return a size_t index. */
#define TL_NOT_FOUND ((size_t)-1)

/* ------------------------------------------------------------------------ */
/* Process-wide settings                                                     */
/* ------------------------------------------------------------------------ */

/*
 * What a host program may decide for the whole process before using the
 * library. Each is a guarantee:
 *   - no_cuda: libcudart (and libcufile) are never loaded and no CUDA
 *     function is called; there are no cuda* devices, and
 *     tl_device_cuda_reason says discovery was disabled. For engines that
 *     bring their own CUDA runtime and register their GPUs themselves.
 *   - cudart_path: load exactly this libcudart (dlopen of the path) instead of
 *     searching libcudart.so, .so.13, .so.12, .so.11.0 and TIERLOAD_CUDART.
 *   - no_sigbus_guard: the library never installs a SIGBUS handler. A file
 *     truncated under its mapping then raises SIGBUS in the thread that reads
 *     it (the process's own disposition applies) instead of failing the call
 *     with TL_ERR_CHANGED.
 *   - keep_warm: the bound of the warm host pool (tl_warm_pool_set, below):
 *     host memory freed by load results is kept, faulted in, up to this many
 *     bytes, and the next load draws its destinations from it. 0 (the
 *     default) keeps nothing: freed memory goes back to the system at once.
 */
typedef struct tl_library_options {
    uint32_t size;           /* sizeof(tl_library_options), set by tl_library_options_init */
    bool no_cuda;            /* do not discover CUDA devices */
    const char *cudart_path; /* NULL = search (see above); copied by tl_init */
    bool no_sigbus_guard;    /* do not install the SIGBUS guard */
    uint64_t keep_warm;      /* warm host pool bound in bytes (0 = none) */
} tl_library_options;

/* Defaults: CUDA discovered by search, SIGBUS guard on. */
TL_API void tl_library_options_init(tl_library_options *o);
/*
 * Set the process-wide settings. Optional; when used, call it before any
 * other call that discovers devices or reads a mapping, and not concurrently
 * with other tierload calls. TL_ERR_INVALID_ARG once the settings have been
 * used (the message says so). opts NULL restores the defaults.
 */
TL_API tl_status tl_init(const tl_library_options *opts);

/*
 * The warm host pool. Loading into fresh memory pays a page fault and the
 * zeroing of every page; a process that frees one model and loads the next
 * (a server switching checkpoints) can skip both. With a bound above 0,
 * tl_load_result_destroy keeps each destination region it frees (4 MiB or
 * more; every page faulted in), and a session its RAM and pinned copies,
 * while the regions held (at most 16) stay within the bound, unmapping the
 * oldest held regions to make room; a region larger than the bound is
 * unmapped. The next tl_model_load (copy modes) takes each file's
 * destination from the pool when a region held is large enough: the
 * smallest such one, split at a 2 MiB boundary when it is larger than
 * needed (the rest stays in the pool), as does a session for a RAM or
 * pinned copy; the load then faults nothing in and its verbose notes say
 * "from the warm pool". Bytes of a destination the file does not cover
 * (alignment padding) hold whatever the last owner left, not zeros. Pages
 * of a region keep the size they were faulted in with (hugepages /
 * no_hugepages do not apply to it).
 *
 * The pool holds anonymous
 * resident memory: it counts in RssAnon (tl_memstats) and in cgroup
 * memory.current like any other, not in tl_load_stats.dest_bytes or a
 * session's host_used / pinned_used (memory their owners hold);
 * tl_warm_pool_stats says how much is the pool's. The bound starts at
 * tl_library_options.keep_warm (0: nothing kept) and tl_warm_pool_set may
 * change it at any time (a lower bound unmaps the oldest regions at once;
 * 0 empties the pool). Both functions are thread-safe, also against loads
 * and destroys running on other threads.
 */
typedef struct tl_warm_stats {
    uint64_t bound;     /* bytes the pool may hold */
    uint64_t held;      /* bytes held now (resident, faulted in) */
    uint64_t regions;   /* regions held now */
    uint64_t held_peak; /* highest held so far */
    uint64_t taken;     /* bytes handed out (loads, sessions) from the pool, in all */
    uint64_t takes;     /* regions handed out from the pool, in all */
    uint64_t released;  /* bytes freed back to the system instead of kept, in all */
} tl_warm_stats;

/* Set the pool's bound in bytes (0 = keep nothing, and empty the pool now). */
TL_API void tl_warm_pool_set(uint64_t bound);
/* The pool's counters now (out_size = sizeof *out). NULL or out_size 0 is fine: nothing is written. */
TL_API void tl_warm_pool_stats(tl_warm_stats *out, size_t out_size);

/* ------------------------------------------------------------------------ */
/* Data types                                                                */
/* ------------------------------------------------------------------------ */

/*
 * One enum for every element type of both formats. Values below
 * TL_GGML_TYPE_COUNT are ggml's own type ids (so a GGUF type id is a
 * tl_dtype); types only safetensors has start at 100. Removed ggml ids (4, 5,
 * 31..33, 36..38) are not valid.
 */
#define TL_GGML_TYPE_COUNT 43
typedef enum tl_dtype {
    TL_DTYPE_F32 = 0,
    TL_DTYPE_F16 = 1,
    TL_DTYPE_Q4_0 = 2,
    TL_DTYPE_Q4_1 = 3,
    TL_DTYPE_Q5_0 = 6,
    TL_DTYPE_Q5_1 = 7,
    TL_DTYPE_Q8_0 = 8,
    TL_DTYPE_Q8_1 = 9,
    TL_DTYPE_Q2_K = 10,
    TL_DTYPE_Q3_K = 11,
    TL_DTYPE_Q4_K = 12,
    TL_DTYPE_Q5_K = 13,
    TL_DTYPE_Q6_K = 14,
    TL_DTYPE_Q8_K = 15,
    TL_DTYPE_IQ2_XXS = 16,
    TL_DTYPE_IQ2_XS = 17,
    TL_DTYPE_IQ3_XXS = 18,
    TL_DTYPE_IQ1_S = 19,
    TL_DTYPE_IQ4_NL = 20,
    TL_DTYPE_IQ3_S = 21,
    TL_DTYPE_IQ2_S = 22,
    TL_DTYPE_IQ4_XS = 23,
    TL_DTYPE_I8 = 24,
    TL_DTYPE_I16 = 25,
    TL_DTYPE_I32 = 26,
    TL_DTYPE_I64 = 27,
    TL_DTYPE_F64 = 28,
    TL_DTYPE_IQ1_M = 29,
    TL_DTYPE_BF16 = 30,
    TL_DTYPE_TQ1_0 = 34,
    TL_DTYPE_TQ2_0 = 35,
    TL_DTYPE_MXFP4 = 39,
    TL_DTYPE_NVFP4 = 40,
    TL_DTYPE_Q1_0 = 41,
    TL_DTYPE_Q2_0 = 42,
    /* safetensors-only types */
    TL_DTYPE_BOOL = 100,
    TL_DTYPE_U8 = 101,
    TL_DTYPE_U16 = 102,
    TL_DTYPE_U32 = 103,
    TL_DTYPE_U64 = 104,
    TL_DTYPE_F8_E5M2 = 105,
    TL_DTYPE_F8_E4M3 = 106,
    TL_DTYPE_F8_E8M0 = 107,
    TL_DTYPE_C64 = 108,
    TL_DTYPE_F4 = 109,
    TL_DTYPE_F6_E2M3 = 110,
    TL_DTYPE_F6_E3M2 = 111,
    TL_DTYPE_F8_E4M3FNUZ = 112,
    TL_DTYPE_F8_E5M2FNUZ = 113,
    TL_DTYPE_INVALID = -1,
} tl_dtype;

/* Upper-case name ("Q4_K", "IQ4_NL", "F8_E4M3"); NULL for an invalid type. */
TL_API const char *tl_dtype_name(tl_dtype t);
/* Parse a name (case-insensitive); TL_DTYPE_INVALID when unknown. */
TL_API tl_dtype tl_dtype_from_name(const char *name);
/* Elements per block (1 for plain types, 32 or 256 for quantized ones). */
TL_API uint32_t tl_dtype_block_elems(tl_dtype t);
/* Bits per block (bits, so that F4 and F6 types are exact). 0 when invalid. */
TL_API uint32_t tl_dtype_block_bits(tl_dtype t);
/*
 * Exact byte size of n elements of type t. Fails (returns false) when n is
 * not a whole number of blocks, not a whole number of bytes, or overflows.
 */
TL_API bool tl_dtype_nbytes(tl_dtype t, uint64_t n, uint64_t *out);

/* ------------------------------------------------------------------------ */
/* The model catalog                                                         */
/* ------------------------------------------------------------------------ */

#define TL_MAX_DIMS 8

typedef enum tl_format {
    TL_FORMAT_GGUF = 0,
    TL_FORMAT_SAFETENSORS = 1,
    TL_FORMAT_CKPT = 2, /* PyTorch checkpoint: torch.save's zip format (.ckpt, .pt, .pth) */
} tl_format;

/* Pipeline components a tensor belongs to (from its name, see tl_component_of). */
typedef enum tl_component {
    TL_COMP_DIFFUSION = 0,
    TL_COMP_COND = 1,
    TL_COMP_VAE = 2,
    TL_COMP_CONTROLNET = 3,
    TL_COMP_OTHER = 4,
    /*
     * A second diffusion model in the same pipeline, run after the first:
     * Wan 2.2's low-noise expert after its high-noise one, an SDXL refiner
     * after its base. Only name rules the caller gives
     * (tl_model_options.components / file_components) and diffusers'
     * "transformer_2." folder put tensors here.
     */
    TL_COMP_DIFFUSION2 = 5,
    TL_COMP_COUNT = 6,
    TL_COMP_INVALID = -1, /* what tl_component_from_name returns for an unknown name */
} tl_component;

/* "diffusion", "cond", "vae", "controlnet", "other", "diffusion2". */
TL_API const char *tl_component_name(tl_component c);
/*
 * Parse a component name or alias, as stable-diffusion.cpp names its modules:
 * diffusion (model, unet, dit, transformer), cond (te, clip, text,
 * textencoder(s), conditioner, llm, t5, t5xxl), vae (firststage, autoencoder,
 * tae), controlnet (control), other, diffusion2 (diffusion#2, transformer2,
 * refiner). Case-insensitive; '-' and '_' are ignored
 * (control_net = control-net = controlnet). TL_COMP_INVALID when unknown.
 */
TL_API tl_component tl_component_from_name(const char *name);
/* The component of a tensor name, by the prefix-rule table. */
TL_API tl_component tl_component_of(const char *tensor_name);
/*
 * The block number in a tensor name: "blocks.12." -> 12,
 * "input_blocks.4." -> 4, "blk.3." -> 3; -1 when the name has none (not the
 * layer index of tl_tensor_info.layer, which is in compute order). When
 * key_len is not NULL it receives the length of the name's prefix that
 * identifies the block ("model.diffusion_model.input_blocks.4"), so that
 * callers can tell input_blocks.4 from output_blocks.4.
 */
TL_API int32_t tl_layer_of(const char *tensor_name, size_t *key_len);

typedef struct tl_file_info {
    const char *path; /* as opened (absolute or relative as the caller gave it) */
    tl_format format;
    int32_t version;      /* GGUF version; checkpoint archive version; -1 for safetensors */
    uint64_t size;        /* file size in bytes */
    uint64_t data_offset; /* absolute offset of the data section */
    uint32_t alignment;   /* GGUF alignment; 0 for safetensors */
    uint64_t n_tensors;
} tl_file_info;

typedef struct tl_tensor_info {
    const char *name; /* full name, including any component prefix added on open */
    tl_dtype dtype;
    uint32_t n_dims;
    int64_t shape[TL_MAX_DIMS]; /* outermost dimension first, for both formats */
    uint32_t file;              /* index into the model's files */
    uint64_t offset;            /* absolute byte offset in that file */
    uint64_t nbytes;            /* exact size in bytes */
    uint64_t n_elements;
    tl_component component;
    int32_t layer;          /* its layer within its component (tl_model_layer_tensors' k, the
                               session's layer index: compute order), -1 for other tensors;
                               the number in the name is tl_layer_of's */
    uint32_t layer_key_len; /* length of the name prefix naming the block (0 when none) */
    /*
     * NULL for a tensor stored contiguously at [offset, offset + nbytes).
     * A checkpoint tensor that is a strided view of its storage has its
     * element strides here (outermost first, n_dims of them); its elements
     * start at offset but are not packed, so tl_model_tensor_data returns
     * NULL for it, and tl_model_tensor_read and tl_model_load gather it into
     * contiguous (row-major) memory.
     */
    const int64_t *strides;
} tl_tensor_info;

/* GGUF metadata value types (ids as in the GGUF spec). */
typedef enum tl_meta_type {
    TL_META_U8 = 0,
    TL_META_I8 = 1,
    TL_META_U16 = 2,
    TL_META_I16 = 3,
    TL_META_U32 = 4,
    TL_META_I32 = 5,
    TL_META_F32 = 6,
    TL_META_BOOL = 7,
    TL_META_STRING = 8,
    TL_META_ARRAY = 9,
    TL_META_U64 = 10,
    TL_META_I64 = 11,
    TL_META_F64 = 12,
} tl_meta_type;

/* Lower-case GGUF name of a metadata type ("uint32", "string", "array"). */
TL_API const char *tl_meta_type_name(tl_meta_type t);
/* Bytes of one value of a fixed-size metadata type (1, 2, 4 or 8); 0 for strings and arrays. */
TL_API uint32_t tl_meta_type_size(tl_meta_type t);

/*
 * One metadata entry. Scalars are widened into v (u for unsigned, i for
 * signed, f for floats, b for bool). Strings are (ptr, len), not
 * NUL-terminated, and point into the file's mapping or the model's own
 * memory; they live as long as the model. For arrays, elem_type and count
 * describe the elements; tl_meta_array_get reads element j. safetensors
 * __metadata__ entries are strings.
 */
typedef struct tl_meta {
    const char *key; /* NUL-terminated */
    uint32_t file;
    tl_meta_type type;
    tl_meta_type elem_type; /* arrays only */
    uint64_t count;         /* arrays only: number of elements */
    uint32_t depth;         /* arrays only: 1 for a flat array, 2+ for nested ones */
    union {
        uint64_t u;
        int64_t i;
        double f;
        bool b;
        struct {
            const char *ptr;
            uint64_t len;
        } s;
    } v;
} tl_meta;

/* ------------------------------------------------------------------------ */
/* Writing model files                                                       */
/* ------------------------------------------------------------------------ */

/*
 * A writer lays out a GGUF (v3) or safetensors file: metadata, then tensor
 * descriptions with the byte sizes the caller gives (the writer never derives
 * a size from dtype and shape, so a caller can write what it computed itself),
 * the data offsets the writer assigns, and the encoded header. The caller
 * writes the header bytes, then the data section: tensor i's bytes at
 * tl_writer_tensor_offset(w, i) from its start, zeros in the gaps, for
 * tl_writer_data_size(w) bytes in all. GGUF tensors are aligned to
 * general.alignment (32 unless that key is set with tl_writer_meta_u32);
 * safetensors tensors are packed and the header is padded to 8 bytes.
 *
 *     tl_writer *w;
 *     tl_writer_create(TL_FORMAT_GGUF, &w);
 *     tl_writer_meta_string(w, "general.architecture", "llama");
 *     int64_t shape[2] = {4096, 4096};                        // outermost first
 *     tl_writer_tensor(w, "blk.0.attn_q.weight", TL_DTYPE_F16, 2, shape, 4096 * 4096 * 2, NULL);
 *     const void *h; size_t hlen;
 *     tl_writer_header(w, &h, &hlen);                         // then write h, then the data
 *     tl_writer_destroy(w);
 */
typedef struct tl_writer tl_writer;

TL_API tl_status tl_writer_create(tl_format format, tl_writer **out);
TL_API void tl_writer_destroy(tl_writer *w);
/* GGUF: a string value; safetensors: an entry of the __metadata__ object. */
TL_API tl_status tl_writer_meta_string(tl_writer *w, const char *key, const char *value);
/* GGUF only: a uint32 value (general.alignment, a power of two, also sets the alignment). */
TL_API tl_status tl_writer_meta_u32(tl_writer *w, const char *key, uint32_t value);
/*
 * GGUF only: a value of any type, given as the spec encodes it after the type
 * id (little-endian scalars, u64 length + bytes for a string, u32 element
 * type + u64 count + elements for an array).
 */
TL_API tl_status tl_writer_meta_raw(tl_writer *w, const char *key, tl_meta_type type, const void *value,
                             size_t len);
/*
 * A tensor: shape outermost first (as tl_tensor_info), at most TL_MAX_DIMS
 * dimensions, nbytes its size in the file. *index (may be NULL) gets its index.
 */
TL_API tl_status tl_writer_tensor(tl_writer *w, const char *name, tl_dtype dtype, uint32_t n_dims,
                           const int64_t *shape, uint64_t nbytes, size_t *index);
TL_API size_t tl_writer_tensor_count(const tl_writer *w);
/*
 * Lay out and encode the header: *out points to *len bytes owned by the
 * writer (valid until the next call on it). Fails with TL_ERR_INVALID_ARG
 * when the layout overflows or the header would be larger than tierload
 * itself accepts (a reader must be able to open what is written).
 */
TL_API tl_status tl_writer_header(tl_writer *w, const void **out, size_t *len);
/* After tl_writer_header: offset of tensor i from the data section's start. */
TL_API uint64_t tl_writer_tensor_offset(const tl_writer *w, size_t i);
/* After tl_writer_header: bytes of the data section (GGUF: padded to the alignment). */
TL_API uint64_t tl_writer_data_size(const tl_writer *w);

/*
 * An open model: the catalog of its files, tensors and metadata over one
 * read-only (or copy-on-write) mapping per file.
 *
 * Lifetime: everything a tl_model_* getter returns (tl_file_info and its
 * path, tl_tensor_info and its name, tl_meta and its key and strings, tensor
 * data pointers, file descriptors and mappings) is owned by the model and
 * valid until tl_model_close.
 *
 * Thread-safety: the getters, tl_model_find, tl_model_tensor_read,
 * tl_model_file_residency and tl_model_check_files only read the model and
 * may run concurrently on any threads. tl_model_close, tl_model_advise and
 * tl_model_load must not overlap another call on the same model; writes
 * through tl_model_tensor_data_mut are the caller's to order against reads.
 */
typedef struct tl_model tl_model;

/* Page-cache hints for mappings (tl_model_options.map_flags, tl_model_advise). */
enum {
    TL_MAP_SEQUENTIAL = 1u << 0, /* madvise(MADV_SEQUENTIAL) */
    TL_MAP_WILLNEED = 1u << 1,   /* madvise(MADV_WILLNEED) */
    TL_MAP_POPULATE = 1u << 2,   /* MAP_POPULATE: fault every page in on open */
    TL_MAP_DONTNEED =
        1u << 3, /* on close: MADV_DONTNEED + POSIX_FADV_DONTNEED, pages leave the cache */
    /*
     * tl_model_open only: also apply the hints named in the environment
     * variable TIERLOAD_MMAP_FLAGS (a list as tl_parse_map_flags takes).
     * Without it the library does not read the variable.
     */
    TL_MAP_FROM_ENV = 1u << 30,
};

/*
 * Parse a comma list of hint names ("sequential,willneed,populate,dontneed")
 * into TL_MAP_* flags. Empty or NULL gives 0.
 */
TL_API tl_status tl_parse_map_flags(const char *list, unsigned *flags);

/* Options of tl_model_open; set up with tl_model_options_init. */
typedef struct tl_model_options {
    uint32_t size;      /* sizeof(tl_model_options), set by tl_model_options_init */
    unsigned map_flags; /* TL_MAP_* hints; 0 (the default) = none */
    bool writable; /* map copy-on-write writable: patches stay in this process, never reach the file
                    */
    /*
     * Optional, one per path (NULL entries allowed): a prefix added to every
     * tensor name of that path, as stable-diffusion.cpp does for files given
     * with --vae / --clip_l / --t5xxl ("first_stage_model.", "text_encoders.clip_l.").
     */
    const char *const *prefixes;
    /*
     * Component rules tried before the built-in name rules
     * (tl_component_of): "PREFIX=COMPONENT,..." puts every tensor whose full
     * name (any prefix above included) starts with PREFIX in COMPONENT (a
     * name or alias of tl_component_from_name); the first rule that matches
     * wins. "high.=diffusion,low.=diffusion2" makes two diffusion models of
     * one catalog. NULL or "" = none. A malformed rule or an unknown
     * component is TL_ERR_INVALID_ARG naming the rule.
     */
    const char *components;
    /*
     * Optional, one per path (NULL entries allowed): the component of every
     * tensor of that path's files (a name or alias), before the rules above.
     */
    const char *const *file_components;
} tl_model_options;

/* Defaults: no hints, read-only mapping, no prefixes, no component rules. */
TL_API void tl_model_options_init(tl_model_options *o);

/*
 * Open model files into one catalog. Each path may be a GGUF file, a
 * safetensors file, a "*.safetensors.index.json" shard index, or a folder (a
 * diffusers folder with model_index.json, a folder with one shard index, or a
 * folder of .gguf / .safetensors files). Every file is mapped once,
 * MAP_PRIVATE. Tensor names must be unique across the whole catalog.
 * opts may be NULL (the defaults). The paths are copied: they need not
 * outlive the call.
 */
TL_API tl_status tl_model_open(const char *const *paths, size_t n_paths,
                               const tl_model_options *opts, tl_model **out);
/* Close: unmap every file (applying TL_MAP_DONTNEED if asked) and free. NULL is fine. */
TL_API void tl_model_close(tl_model *m);

TL_API size_t tl_model_file_count(const tl_model *m);
TL_API const tl_file_info *tl_model_file(const tl_model *m, size_t i);
TL_API size_t tl_model_tensor_count(const tl_model *m);
TL_API const tl_tensor_info *tl_model_tensor(const tl_model *m, size_t i);
/* Index of a tensor by exact name; TL_NOT_FOUND when absent. */
TL_API size_t tl_model_find(const tl_model *m, const char *name);

/* Pointer to a tensor's bytes inside its file's mapping (zero-copy); NULL when strided. */
TL_API const void *tl_model_tensor_data(const tl_model *m, size_t i);
/*
 * Writable pointer into the copy-on-write mapping; only for models opened
 * with writable = true (else NULL). Asking for it marks the tensor patched
 * (the library cannot see writes, so it assumes one): from then on every
 * path that reads the tensor (tl_model_load in every mode, verify, sessions)
 * takes its bytes from the mapping, never from the file, and verify compares
 * against the patched bytes. The file itself never changes.
 */
TL_API void *tl_model_tensor_data_mut(tl_model *m, size_t i);
/* Has tensor i been patched (see tl_model_tensor_data_mut)? */
TL_API bool tl_model_tensor_patched(const tl_model *m, size_t i);
/*
 * Drop tensor i's patch: its bytes in the mapping become the file's again
 * (whole pages give their private copies back to the kernel; no backup copy is
 * kept anywhere). Pages shared with a neighbouring patched tensor keep the
 * neighbour's bytes. Not thread-safe against writers of the same tensor.
 */
TL_API tl_status tl_model_tensor_unpatch(tl_model *m, size_t i);

/* "Not found" for size_t indexes. */
#define TL_NOT_FOUND ((size_t)-1)

/*
 * The (component, layer) grouping, built when the model is opened and used
 * by the planner (its "layers in summary order" are these layers), by
 * sessions (their layer index) and by tl_tensor_info.layer: one numbering.
 * Tensors are grouped by component and by their layer key, the first
 * layer_key_len bytes of their name ("model.diffusion_model.input_blocks.4");
 * tensors without one are their component's "other" tensors.
 *
 * Layers are numbered from 0 in compute order, whatever the order of the
 * names in the file: keys are compared by their dot-separated tokens, numbers
 * as numbers (input_blocks.2 before input_blocks.10, blk.9 before blk.10;
 * the levels of an ldm VAE decoder, "decoder.up.N", from the highest down, as
 * it runs them), and block families by this table, each row in compute
 * order: encoder, decoder | down, mid, up (ldm VAE) | input_hint_block,
 * input_blocks, middle_block, output_blocks (ldm UNet, ControlNet) |
 * down_blocks, mid_block, up_blocks (diffusers UNet, VAE) | double_blocks,
 * single_blocks (Flux and kin) | transformer_blocks,
 * single_transformer_blocks (the same in diffusers' names) | noise_refiner,
 * context_refiner, layers (Z-Image). Words of the table sort
 * by it (rows in this order) and before other words; other words keep the
 * order in which they first appear in the file (the last resort); a word
 * sorts before a number at the same place. Returned index arrays and keys
 * are owned by the model and valid while it is open.
 */
TL_API size_t tl_model_layer_count(const tl_model *m, tl_component c);
/* The key of component c's layer k ("model.diffusion_model.input_blocks.4"); NULL if none. */
TL_API const char *tl_model_layer_key(const tl_model *m, tl_component c, size_t k);
/*
 * The layer of component c whose key is key: the whole key, or its tail
 * after a dot when exactly one layer's key ends so ("input_blocks.4" for
 * "model.diffusion_model.input_blocks.4"). Compared with its length:
 * "blk.1" never finds "blk.10". TL_NOT_FOUND when none (or the tail is
 * ambiguous).
 */
TL_API size_t tl_model_layer_find(const tl_model *m, tl_component c, const char *key);
/* Tensor indices of component c's layer k (catalog order); returns their count. */
TL_API size_t tl_model_layer_tensors(const tl_model *m, tl_component c, size_t k, const size_t **idx);
/* Tensor indices of component c outside any layer; returns their count. */
TL_API size_t tl_model_other_tensors(const tl_model *m, tl_component c, const size_t **idx);
/* The layer number of tensor i within its component; TL_NOT_FOUND when it has none. */
TL_API size_t tl_model_tensor_layer(const tl_model *m, size_t i);

TL_API size_t tl_model_meta_count(const tl_model *m);
TL_API const tl_meta *tl_model_meta(const tl_model *m, size_t i);
/* Index of a metadata key (first file that has it); TL_NOT_FOUND when absent. */
TL_API size_t tl_model_meta_find(const tl_model *m, const char *key);
/*
 * Element j of array entry i. Numbers come widened in out->v, strings as
 * (ptr, len); out->type is the element type. Nested arrays are not indexable
 * (TL_ERR_UNSUPPORTED).
 */
TL_API tl_status tl_model_meta_element(const tl_model *m, size_t i, uint64_t j, tl_meta *out);

/* Fraction (0..1) of a file's pages resident in the page cache, from mincore. */
TL_API tl_status tl_model_file_residency(const tl_model *m, size_t file, double *fraction);
/* Apply page-cache hints (TL_MAP_SEQUENTIAL / WILLNEED / DONTNEED now) to every mapping. */
TL_API tl_status tl_model_advise(tl_model *m, unsigned map_flags);
/*
 * Check that every file still has the size it had when opened: a file
 * truncated or rewritten under its mapping gives TL_ERR_CHANGED naming it.
 */
TL_API tl_status tl_model_check_files(const tl_model *m);
/*
 * Copy bytes [off, off+n) of tensor i out of its file's mapping into dst,
 * safely: the file's size is checked first, and a SIGBUS during the copy (the
 * file shrank meanwhile) becomes TL_ERR_CHANGED naming the file and tensor
 * instead of killing the process.
 */
TL_API tl_status tl_model_tensor_read(const tl_model *m, size_t i, uint64_t off, void *dst,
                                      uint64_t n);
/*
 * After a PyTorch checkpoint (torch.save's zip format) was written with some
 * tensor bytes changed (a merge copies the file and changes tensors): compute
 * every stored entry's CRC-32 again from the bytes in the file open at fd
 * (read-write) and write it into the entry's central directory record and
 * local header (or data descriptor). path names the file in messages.
 */
TL_API tl_status tl_ckpt_refresh_crcs(int fd, const char *path);
/* Open file descriptor of a file (read-only), for loaders; owned by the model. */
TL_API int tl_model_file_fd(const tl_model *m, size_t file);
/* Base address of a file's mapping (its byte 0). */
TL_API const void *tl_model_file_map(const tl_model *m, size_t file);

/* ------------------------------------------------------------------------ */
/* Devices                                                                  */
/* ------------------------------------------------------------------------ */

/*
 * Devices hold tensor bytes: the host (cpu), simulated GPUs (sim), CUDA GPUs
 * (cuda0, cuda1, ...: libcudart is loaded at run time, nothing CUDA is needed
 * to build) and devices an engine registers (e.g. backed by ggml-backend or
 * torch). Each is one tl_device_ops vtable behind an opaque, reference-counted
 * tl_device. The device registry is the library's only global mutable state;
 * every function here is thread-safe, and every built-in device may be used
 * from several threads at once.
 *
 * Device memory is named by a tl_devptr: an opaque 64-bit device address that
 * callers never dereference (on cpu it is the host address; on sim it is a
 * handle that is not a host address). Arithmetic inside an allocation is
 * allowed: copies may start at p + offset. 0 is never a valid allocation.
 *
 * Asynchronous copies are queued on the device's one stream and return a
 * ticket: tickets of a device increase, and copies complete in ticket order,
 * so ticket t done means every earlier ticket is done. Ticket 0 means
 * "already complete". The host buffer of an asynchronous copy must stay valid
 * (and, for copies to the device, unchanged) until its ticket is done.
 */
typedef uint64_t tl_devptr;

typedef struct tl_device tl_device;

typedef enum tl_device_kind {
    TL_DEVICE_CPU = 0,   /* host memory */
    TL_DEVICE_SIM = 1,   /* simulated GPU: a capacity-limited arena in host memory */
    TL_DEVICE_CUDA = 2,  /* a CUDA GPU */
    TL_DEVICE_OTHER = 3, /* registered by an engine */
    TL_DEVICE_GGML = 4,  /* a ggml backend device (tl_device_ggml_discover) */
} tl_device_kind;

/* "cpu", "sim", "cuda", "other", "ggml". */
TL_API const char *tl_device_kind_name(tl_device_kind k);

#define TL_DEVICE_NAME_MAX 32 /* bytes of a device name, including the NUL */
#define TL_DEVICE_DESC_MAX 96 /* bytes of a device description, including the NUL */

typedef struct tl_device_info {
    char name[TL_DEVICE_NAME_MAX]; /* [A-Za-z0-9_.:-]+, unique in the registry */
    char desc[TL_DEVICE_DESC_MAX]; /* free text: "NVIDIA H100 80GB HBM3", "host RAM", ... */
    tl_device_kind kind;
    uint64_t total;     /* bytes the device can hold */
    uint64_t free;      /* bytes free now */
    bool host_pointer;  /* a tl_devptr is a host address the CPU can read */
    bool async;         /* asynchronous copies overlap with the caller */
    uint32_t alignment; /* preferred alignment of allocations and copies (power of two) */
    /*
     * Host memory pinned for the device (tl_device_pin) is copied from
     * directly, without staging: sessions keep a pinned tier for it (cuda,
     * ggml devices whose backend registers host buffers, sim). False: no
     * pinned tier (cpu, ggml:CPU, RPC servers).
     */
    bool pinned;
} tl_device_info;

/*
 * The vtable a device implements; self is the implementation's own state.
 * Initialise it with tl_device_ops_init (it sets size) and fill in the
 * functions. Every function returns a tl_status; on failure it records a
 * message naming the device with tl_set_error. A failure recorded without a
 * message gets a generic one from the tl_device_* wrapper ("device 'x':
 * alloc failed (TL_ERR_DEVICE_OOM)"). Sizes are > 0 when called through the
 * tl_device_* wrappers (which check arguments first).
 */
typedef struct tl_device_ops {
    uint32_t size; /* sizeof(tl_device_ops), set by tl_device_ops_init */
    /* Required. Fill *out (free must be current). Called often: keep it cheap. */
    tl_status (*describe)(void *self, tl_device_info *out);
    /* Required. TL_ERR_DEVICE_OOM when size bytes do not fit. */
    tl_status (*alloc)(void *self, uint64_t size, tl_devptr *out);
    /* Required. Free an allocation (its base address). */
    tl_status (*dealloc)(void *self, tl_devptr p);
    /* Required. Synchronous copies: return when the bytes have arrived. */
    tl_status (*copy_to)(void *self, tl_devptr dst, const void *src, uint64_t n);
    tl_status (*copy_from)(void *self, void *dst, tl_devptr src, uint64_t n);
    /* Optional (NULL: the wrapper copies synchronously and gives ticket 0). */
    tl_status (*copy_to_async)(void *self, tl_devptr dst, const void *src, uint64_t n,
                               uint64_t *ticket);
    tl_status (*copy_from_async)(void *self, void *dst, tl_devptr src, uint64_t n,
                                 uint64_t *ticket);
    /* Required when the async copies are given: wait for / test a ticket. */
    tl_status (*wait)(void *self, uint64_t ticket);
    tl_status (*poll)(void *self, uint64_t ticket, bool *done);
    /* Optional (NULL: nothing to do). Make a host range a DMA source / sink. */
    tl_status (*pin)(void *self, void *host, uint64_t n);
    tl_status (*unpin)(void *self, void *host, uint64_t n);
    /* Optional: read a file range straight into device memory (GPUDirect Storage). */
    tl_status (*read_file)(void *self, int fd, uint64_t off, tl_devptr dst, uint64_t n);
    /* Optional: free self when the last reference goes. */
    void (*destroy)(void *self);
} tl_device_ops;

/* Zero every entry and set size. */
TL_API void tl_device_ops_init(tl_device_ops *ops);

/*
 * Record the message tl_last_error() returns on this thread and return s:
 * for device implementations and other code the library calls back.
 * printf-style format.
 */
TL_API tl_status tl_set_error(tl_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/*
 * Wrap a vtable into a device (one reference, owned by the caller). ops must
 * outlive the device; describe is called once here to take the name and kind.
 * TL_ERR_INVALID_ARG when ops->size is 0 (not initialised) or a required
 * entry is missing.
 */
TL_API tl_status tl_device_create(const tl_device_ops *ops, void *self, tl_device **out);
/* Take / drop a reference; the last release calls ops->destroy. NULL is fine. */
TL_API void tl_device_retain(tl_device *d);
TL_API void tl_device_release(tl_device *d);

/*
 * Add a device to the registry (the registry takes its own reference; the
 * caller keeps and still releases its own). TL_ERR_INVALID_ARG when a
 * registered device already has its name (case-insensitive).
 */
TL_API tl_status tl_device_register(tl_device *d);
/*
 * Remove a device from the registry and drop the registry's reference.
 * References others hold stay valid. TL_ERR_INVALID_ARG for the built-in
 * cpu device, which stays registered for the life of the process.
 */
TL_API tl_status tl_device_unregister(tl_device *d);
/*
 * Look a registered device up by name, case-insensitive: an exact name wins,
 * else a unique prefix ("cu" -> cuda0 when it is the only cuda device).
 * TL_ERR_NOT_FOUND when nothing matches, TL_ERR_INVALID_ARG when a prefix is
 * ambiguous (the message lists the candidates). *out is a new reference the
 * caller releases with tl_device_release; it stays valid even when another
 * thread unregisters the device meanwhile. The first registry call
 * discovers the built-in devices (cpu, then cuda*; see tl_init).
 */
TL_API tl_status tl_device_find(const char *name, tl_device **out);
/*
 * Registered devices in registration order (cpu first): fills up to cap
 * entries of out with new references (as tl_device_find) and returns how
 * many are registered, which may exceed cap. The caller releases the
 * min(returned, cap) references it got, e.g. with tl_device_list_release.
 * out may be NULL with cap 0 (count only).
 */
TL_API size_t tl_device_list(tl_device **out, size_t cap);
/* Release n references of devs (as filled by tl_device_list) and NULL them. */
TL_API void tl_device_list_release(tl_device **devs, size_t n);

/* Name and kind, fixed at tl_device_create (the name lives as long as the device). */
TL_API const char *tl_device_name(const tl_device *d);
TL_API tl_device_kind tl_device_kind_of(const tl_device *d);
/* Current description (free memory is live). */
TL_API tl_status tl_device_describe(tl_device *d, tl_device_info *out, size_t out_size);

/* Allocate size > 0 bytes; TL_ERR_DEVICE_OOM when they do not fit (sim, cpu and cuda alike). */
TL_API tl_status tl_device_alloc(tl_device *d, uint64_t size, tl_devptr *out);
/* Free an allocation; 0 is fine. */
TL_API tl_status tl_device_free(tl_device *d, tl_devptr p);
/* Synchronous copies host -> device and device -> host (n may be 0). */
TL_API tl_status tl_device_copy_to(tl_device *d, tl_devptr dst, const void *src, uint64_t n);
TL_API tl_status tl_device_copy_from(tl_device *d, void *dst, tl_devptr src, uint64_t n);
/* Asynchronous copies; *ticket receives the completion handle (see above). */
TL_API tl_status tl_device_copy_to_async(tl_device *d, tl_devptr dst, const void *src, uint64_t n,
                                         uint64_t *ticket);
TL_API tl_status tl_device_copy_from_async(tl_device *d, void *dst, tl_devptr src, uint64_t n,
                                           uint64_t *ticket);
/* Block until a ticket (and every earlier one) is done. */
TL_API tl_status tl_device_wait(tl_device *d, uint64_t ticket);
/* *done = whether a ticket is done, without blocking. */
TL_API tl_status tl_device_poll(tl_device *d, uint64_t ticket, bool *done);
/*
 * Pin / unpin a host range so the device can DMA from / to it. A failure
 * says why (e.g. mlock failed under RLIMIT_MEMLOCK, with the limit).
 */
TL_API tl_status tl_device_pin(tl_device *d, void *host, uint64_t n);
TL_API tl_status tl_device_unpin(tl_device *d, void *host, uint64_t n);
/*
 * Read n bytes of file fd at off straight into device memory, when the
 * device can (cuda with a working libcufile). TL_ERR_UNSUPPORTED otherwise:
 * the caller then stages through host memory.
 */
TL_API tl_status tl_device_read_file(tl_device *d, int fd, uint64_t off, tl_devptr dst, uint64_t n);

/*
 * CUDA devices are named cuda0, cuda1, ... (CUDA ordinals). libcudart is
 * loaded with dlopen (libcudart.so, .so.13, .so.12, .so.11.0, or the path in
 * TIERLOAD_CUDART). Copies that are not from / to a range pinned on that
 * device go through a ring of 4 pinned staging buffers of 8 MiB per device
 * (32 MiB, allocated on first copy), several chunks in flight; a range pinned
 * with tl_device_pin is copied directly. tl_device_unpin waits for the
 * device's queued copies first.
 *
 * Why there are no CUDA devices (a string owned by the library, fixed once
 * discovery has run): "" when libcudart loaded and reported at least one device, else e.g. "no CUDA
 * runtime: libcudart.so: cannot open shared object file: No such file or directory" or "no CUDA
 * device: cudaGetDeviceCount: ...". Runs discovery if needed.
 */
TL_API const char *tl_device_cuda_reason(void);
/*
 * Why GPUDirect Storage is not in use: "" once a real small read through
 * libcufile has succeeded, "not tried yet" before any, else the reason. The
 * string is owned by the library; read it when no read_file call is running
 * (its text changes with the first one).
 */
TL_API const char *tl_device_cufile_reason(void);

/*
 * Simulated GPUs. A sim device keeps its bytes in host memory but behaves
 * like a GPU: a fixed capacity enforced to the byte (an allocation of s bytes
 * uses exactly s bytes of capacity; handles are aligned to 256 bytes in the
 * sim's own address space, and that alignment costs no capacity), free memory
 * reported exactly, TL_ERR_DEVICE_OOM past capacity (and when
 * TL_FAULT_DEVICE_ALLOC is injected), handles that are not host addresses
 * (copies must stay inside one live allocation, else TL_ERR_INVALID_ARG).
 *
 * Sims model transfers on their own clock (seconds, starting at 0; never wall
 * time): a copy lasts latency + n / bandwidth and copies run one after
 * another on one stream. A synchronous copy starts at max(clock, end of the
 * queue) and moves the clock to its end. An asynchronous copy is queued (it
 * starts when the previous one ends, or at the clock if later) and is done
 * once the clock reaches its end; waiting moves the clock there.
 * tl_device_sim_advance models the caller's compute time, so overlap and
 * prefetch can be measured. The bytes of an asynchronous copy move when it
 * completes on the model clock (host buffers are read / written then), and
 * tl_device_free first waits for the queue, as cudaFree does. Sims have no
 * pinning to do (pin / unpin succeed).
 *
 * The built-in cpu device: total and free are host RAM (MemAvailable and the
 * cgroup v2 limit, whichever is tighter); an allocation larger than what is
 * free now fails with TL_ERR_DEVICE_OOM; copies are synchronous (ticket 0);
 * pin is mlock, and its failure names RLIMIT_MEMLOCK.
 */
typedef struct tl_sim_spec {
    char
        name[TL_DEVICE_NAME_MAX]; /* used as given: "gpu0", or "cuda0" to stand in for a real one */
    uint64_t capacity;            /* bytes */
    double bandwidth;             /* bytes per modeled second; 0 = infinite */
    double latency;               /* modeled seconds added to each copy */
} tl_sim_spec;

/*
 * Parse a sim spec: comma-separated NAME=SIZE[:bw=SIZE][:lat=TIME] items,
 * e.g. "gpu0=8G,gpu1=4G:bw=16G:lat=10us". SIZE is bytes with an optional
 * binary suffix (K, M, G, T; KB/KiB accepted; fractions allowed: "1.5G");
 * bw is bytes per second; TIME is seconds with an optional s/ms/us/ns suffix.
 * Fills up to cap entries, *n receives the count. TL_ERR_INVALID_ARG (with
 * the offending item) on a bad size, empty or invalid name, duplicate name,
 * or more than cap items.
 */
TL_API tl_status tl_parse_sim_spec(const char *spec, tl_sim_spec *out, size_t cap,
                                          size_t *n);
/* A new (unregistered) sim device; one reference owned by the caller. */
TL_API tl_status tl_device_sim_create(const tl_sim_spec *spec, tl_device **out);
/* Parse a spec and register every sim in it (all or none). */
TL_API tl_status tl_device_sim_add(const char *spec);
/* The sim's model clock in seconds (TL_ERR_INVALID_ARG when d is not a sim). */
TL_API tl_status tl_device_sim_clock(tl_device *d, double *seconds);
/* Advance the model clock by seconds >= 0 (the caller's modeled compute). */
TL_API tl_status tl_device_sim_advance(tl_device *d, double seconds);

/*
 * ggml devices. tl_device_ggml_discover loads ggml's shared libraries at run
 * time (nothing of ggml is needed to build tierload) and registers every
 * ggml backend device as a tl_device of kind TL_DEVICE_GGML named "ggml:"
 * and ggml's device name ("ggml:CPU", "ggml:CUDA0"; characters outside
 * [A-Za-z0-9_.:-] become '_'). The libraries come from dir, else from the
 * folder in TIERLOAD_GGML_DIR, else from the loader's search path: dir holds
 * libggml-base.so, libggml.so (or libggml.so.N / libggml.vX.Y.Z.so) and the
 * backend libraries (libggml-cpu-*.so, libggml-cuda.so, ...), as the npm
 * package @node-llama-cpp/linux-x64 ships them; ggml picks the best CPU
 * variant. The libraries are loaded once per process: later calls register
 * the devices not registered yet (*n_added counts the new ones; may be NULL).
 *
 * A ggml device's allocations come from a pool of large ggml buffers of its
 * default buffer type (at least 16 MiB each, sub-allocated, given back to
 * ggml only when a new one would not fit), so tl_device_free never reaches
 * the backend; copies go through ggml_backend_tensor_set / get on a 1-D
 * view of the buffer; copies are synchronous. total / free come from
 * ggml_backend_dev_memory, less what the pool holds; an allocation larger
 * than free memory, than the buffer type's largest buffer, or refused by
 * ggml gives TL_ERR_DEVICE_OOM. When neither dir nor TIERLOAD_GGML_DIR is
 * given, the source build of ggml recorded when tierload was configured
 * (`make ggml`) is used where it exists.
 * host_pointer is true when the device's buffers are host memory (ggml:CPU),
 * and then a tl_devptr is the host address; otherwise tl_devptrs are handles.
 *
 * TL_ERR_NOT_FOUND when ggml cannot be loaded or has no device; the reason
 * is also kept for tl_device_ggml_reason.
 */
TL_API tl_status tl_device_ggml_discover(const char *dir, size_t *n_added);
/*
 * Why there are no ggml devices: "" once ggml loaded with at least one
 * device, "not loaded" before any tl_device_ggml_discover, else e.g. "no
 * ggml: libggml-base.so: cannot open shared object file: ...".
 */
TL_API const char *tl_device_ggml_reason(void);
/*
 * The devices of ggml RPC servers (ggml-rpc-server): endpoints is
 * "HOST:PORT[@BW][,HOST:PORT[@BW]...]", BW the link's bandwidth: bytes per
 * second as a size ("1.25G", "118M") or bits per second with a decimal
 * prefix as tc writes them ("10gbit", "1Gbit", "100mbit"). Each server is
 * first probed by tierload itself
 * (a TCP connection and the protocol handshake, 5 s deadline each), so a
 * server that is not there, refuses, does not answer or speaks another
 * protocol version is an error naming HOST:PORT (TL_ERR_DEVICE;
 * TL_ERR_UNSUPPORTED with both versions for another protocol) rather than
 * an abort inside ggml; a malformed or repeated endpoint is
 * TL_ERR_INVALID_ARG and adds nothing. Then each device of each server is
 * registered as "rpcS:D" (S: the server's number in this process, in the
 * order added; D: the device on it), kind TL_DEVICE_GGML, not host memory,
 * with the memory the server reports when added (counted down by what
 * tierload allocates there). Loads ggml as tl_device_ggml_discover(NULL)
 * does when it is not loaded yet. An endpoint added before is not added
 * again. *n_added (may be NULL) counts the new devices.
 *
 * The link to each new server is measured once when it is added: its latency
 * is the shortest of 5 one-byte reads from the server (a round trip), its
 * bandwidth (unless BW gives it) 4 MiB written and read back, timed, less
 * the latency; the 4 MiB buffer is freed on the server after. A BW that is
 * malformed or 0 is TL_ERR_INVALID_ARG; a repeated HOST:PORT is one whatever
 * its BW. tl_device_link reads the link.
 *
 * tierload keeps one small buffer on each server for the life of the
 * process, so ggml's client keeps its one connection to it, and gives that
 * connection send and receive timeouts of TIERLOAD_RPC_TIMEOUT seconds
 * (default 30): a server that stops answering in the middle of an operation
 * then fails it instead of hanging the process. ggml's RPC client ends the
 * process (abort, see tl_device_ggml_on_abort) when a server dies or times
 * out in the middle of an operation; tierload cannot catch that. A graph
 * compute on a server that takes longer than the timeout fails the same way.
 */
TL_API tl_status tl_device_ggml_rpc_add(const char *endpoints, size_t *n_added);
/*
 * The network link of device d (an RPC server's device): *bandwidth in bytes
 * per second, *latency in seconds per round trip, *measured true when the
 * bandwidth was timed when the server was added, false when given (@BW).
 * Each pointer may be NULL. TL_ERR_NOT_FOUND for a local device (no link),
 * TL_ERR_INVALID_ARG for NULL d.
 */
TL_API tl_status tl_device_link(tl_device *d, double *bandwidth, double *latency, bool *measured);
/*
 * What crossed the link to device d's RPC server since the server was added
 * (after the link was measured), counted by the kernel on ggml's connection
 * to it (TCP bytes acked, and received): *sent and *received are the
 * server's (every device of a server shares its connection); *written is
 * the bytes tierload copied to d. tierload marks an RPC device's buffers as
 * weights, so ggml's RPC client offers each write above 10 MiB as a hash
 * first, and a server with a cache (ggml-rpc-server -c) that holds those
 * bytes takes them from the cache: written - sent is then roughly what the
 * cache saved. Each pointer may be NULL. TL_ERR_NOT_FOUND when d is not an
 * RPC server's device; TL_ERR_DEVICE when no connection to it is open.
 */
TL_API tl_status tl_device_link_traffic(tl_device *d, uint64_t *sent, uint64_t *received,
                                        uint64_t *written);
/*
 * ggml ends the process (abort) on errors it cannot return, e.g. an RPC
 * server that dies or stops answering in the middle of a transfer. When
 * tierload loads ggml it installs ggml's abort callback: the message says
 * what ggml said and what tierload was doing on which device ("copying 4096
 * bytes to rpc0:0, ggml RPC server 127.0.0.1:50052, device 0"); it goes to
 * fn when set (a program may end itself there with its own status, e.g.
 * _exit), else to stderr; when fn returns, ggml aborts. fn runs on the
 * failing thread and must be async-signal-safe in spirit: no locks held by
 * tierload may be taken. NULL restores the default.
 */
typedef void (*tl_ggml_abort_fn)(const char *message);
TL_API void tl_device_ggml_on_abort(tl_ggml_abort_fn fn);
/*
 * The ggml_backend_dev_t behind ggml device d, for an engine that computes
 * with ggml on the device tierload places weights on (ggml_backend_dev_init
 * makes its backend); NULL when d is not a ggml device.
 */
TL_API void *tl_device_ggml_dev(tl_device *d);
/*
 * Whether ggml device d can use host memory in place
 * (caps.buffer_from_host_ptr: a mapped file's tensor bytes can be handed to
 * it without a copy). false for devices that are not ggml devices.
 */
TL_API bool tl_device_ggml_host_mappable(tl_device *d);

/*
 * A host range wrapped in place as a ggml buffer of a ggml device (no copy):
 * ggml_backend_dev_buffer_from_host_ptr, or ggml_backend_cpu_buffer_from_ptr
 * on the CPU device. The buffer starts at the range's start rounded down to
 * 64 bytes (ggml wants aligned buffer pointers); the range's bytes are at
 * buffer base + offset. The memory must stay valid (e.g. the model open)
 * until the buffer is destroyed; ggml only reads weights placed in it.
 */
typedef struct tl_ggml_host_buffer {
    void *buffer;    /* ggml_backend_buffer_t */
    void *base;      /* its base address (host) */
    uint64_t size;   /* its size */
    uint64_t offset; /* where the wrapped range starts inside it */
} tl_ggml_host_buffer;
/* TL_ERR_UNSUPPORTED (naming the device) when d cannot use host memory. */
TL_API tl_status tl_ggml_host_buffer_create(tl_device *d, const void *ptr, uint64_t n,
                                     tl_ggml_host_buffer *out);
/* Free the ggml buffer (never the memory it wraps); zeroes *b. NULL is fine. */
TL_API void tl_ggml_host_buffer_destroy(tl_ggml_host_buffer *b);

/* ------------------------------------------------------------------------ */
/* The planner                                                              */
/* ------------------------------------------------------------------------ */

/*
 * The planner is pure: a catalog summary, device descriptions (real,
 * simulated or hypothetical) and options in, a plan out; no I/O.
 *
 * Placement and phase model (what a plan promises):
 *   - A pipeline run is a sequence of phases (default "cond,diffusion+controlnet,vae",
 *     and "cond,diffusion+controlnet,diffusion2,vae" for a model with a
 *     diffusion2 component); a component named in no phase is active in
 *     every phase.
 *   - A component's compute reserve (its activation buffers) counts on each of
 *     its GPUs only in the phases where the component is active.
 *   - Weights placed on a GPU are either kept for the whole run ("run"
 *     residency: they count in every phase, move 0 bytes per run once
 *     loaded) or loaded for the component's own phases only ("phase"
 *     residency: they count only there and move their bytes once per run).
 *     Components in different phases therefore time-share a device: its peak
 *     is the maximum over phases, not the sum.
 *   - Modes: gpu (whole on one GPU), layer_split (whole layers, contiguous,
 *     over several GPUs; shares proportional to each GPU's room, then whole
 *     layers packed, greedily in order when rounding overflows a GPU;
 *     non-layer bytes on the first), row_split (2-D matrices with both
 *     dimensions >= 256 split by rows in proportion to room, each cut at a
 *     multiple of 64 rows, the rest on the main device: the one with the
 *     most room), stream (weights in RAM; as
 *     many whole layers as fit stay resident on the listed GPUs, the others
 *     are streamed layer by layer to the last listed GPU, which holds two
 *     buffers of the largest layer: one in use, one prefetched; with nothing
 *     resident, the non-layer bytes stream too and the buffers are of the
 *     largest of them and the layers), cpu
 *     (computed on the host). Every GPU a component uses holds its reserve.
 *   - Streamed bytes move once per pass; diffusion and controlnet run `steps`
 *     passes per run, diffusion2 `steps2`, the others one.
 *   - A component may be constrained (tl_plan_options' masks): offload keeps
 *     only streaming from RAM — with nothing resident, or with a resident
 *     prefix where the GPU has room, whichever moves less (as offload_to_cpu
 *     does for every component) — phase_only only phase residency without
 *     streaming, layer_split / row_split only that split on several GPUs;
 *     the cpu stays a candidate in every case.
 *   - Host RAM is reported (tl_plan_host_bytes), not enforced: clean weights
 *     can always be paged from their files.
 *   - The search is exact over these candidates (every GPU subset up to 6
 *     GPUs; with more, single GPUs and the k largest), with a node limit of
 *     4M as a safety net that realistic inputs never reach.
 *   - Devices behind a network link (tl_plan_options.links: RPC servers)
 *     cost link time per run: for each of a component's devices with a
 *     link, the weight bytes that cross it every run (phase residency: its
 *     share once per run; streaming: the streamed bytes once per pass) at
 *     the link's bandwidth, plus per pass one round trip and
 *     TL_PLAN_LINK_PASS_BYTES of activations each way at the link's
 *     bandwidth. Weights resident for the run cross the link once per
 *     model (a server's cache keeps them: tl_plan_link.push_once), not per
 *     run. So with links of unequal speed the components that run the most
 *     passes go to the fastest links.
 *   - Objective (exact, deterministic search): most GPU-resident bytes weighted
 *     by priority (diffusion 4, controlnet 3, cond 2, vae 1, other 1), then
 *     most priority-weighted bytes computed on a GPU (so streaming beats the
 *     cpu), then least link time per run (to the nanosecond), then fewest
 *     bytes moved per run, then fewest GPUs, then fewest (component, GPU)
 *     pairs; ties keep the first in enumeration order (lower device indices
 *     first).
 */

#define TL_PLAN_MAX_GPUS 64                        /* GPUs one plan may use */
#define TL_PLAN_MAX_DEVICES (TL_PLAN_MAX_GPUS + 1) /* devices a plan may describe (GPUs, host) */
#define TL_PLAN_MAX_PHASES 8
#define TL_PLAN_HOST 0xFFFFFFFFu /* device index meaning "the host (cpu)" in parsed specs */
#define TL_PLAN_LINK_PASS_BYTES (2ull << 20) /* activations each way per pass, link cost model */

typedef enum tl_plan_mode {
    TL_PLAN_MODE_CPU = 0,
    TL_PLAN_MODE_GPU = 1,
    TL_PLAN_MODE_LAYER_SPLIT = 2,
    TL_PLAN_MODE_ROW_SPLIT = 3,
    TL_PLAN_MODE_STREAM = 4,
} tl_plan_mode;

/* "cpu", "gpu", "layer_split", "row_split", "stream"; NULL when invalid. */
TL_API const char *tl_plan_mode_name(tl_plan_mode m);

/* One device as the planner sees it. total/free 0 on the host mean "unknown". */
typedef struct tl_plan_device {
    char name[TL_DEVICE_NAME_MAX]; /* "cuda0", "sim1", "cpu" */
    bool is_gpu;                   /* false for the host */
    uint64_t total;                /* bytes */
    uint64_t free;                 /* bytes free now (for hypothetical devices: total) */
} tl_plan_device;

/* One component of the summary: its bytes, and its layers in order. */
typedef struct tl_plan_part {
    uint64_t bytes;        /* total bytes (layers + other) */
    uint64_t other_bytes;  /* bytes of tensors outside any layer */
    uint64_t matrix_bytes; /* bytes of 2-D matrices with both dimensions >= 256 (row-splittable) */
    uint64_t *layers;      /* bytes of each layer, in order (owned by the summary) */
    size_t n_layers;
    size_t cap_layers;
} tl_plan_part;

/* What the planner needs to know about a model: one part per tl_component. */
typedef struct tl_plan_summary {
    tl_plan_part comp[TL_COMP_COUNT];
} tl_plan_summary;

/* An empty summary (every component absent). */
TL_API void tl_plan_summary_init(tl_plan_summary *s);
/* Free the layer arrays (the struct itself is the caller's); leaves it empty. */
TL_API void tl_plan_summary_clear(tl_plan_summary *s);
/* Append a layer of `bytes` to component c (matrix_bytes of them row-splittable). */
TL_API tl_status tl_plan_summary_add_layer(tl_plan_summary *s, tl_component c, uint64_t bytes,
                                           uint64_t matrix_bytes);
/* Add bytes outside layers to component c. */
TL_API tl_status tl_plan_summary_add_other(tl_plan_summary *s, tl_component c, uint64_t bytes,
                                           uint64_t matrix_bytes);
/*
 * Build a summary from a catalog: one layer per tl_model_layer_tensors group
 * (same order), other bytes from tl_model_other_tensors.
 * When convert is not TL_DTYPE_INVALID, each tensor is counted at the size of
 * tl_convert_target(tensor, convert): what converting on load
 * (tl_load_options.convert) gives. s is initialized here.
 */
TL_API tl_status tl_plan_summary_from_model(const tl_model *m, tl_dtype convert,
                                            tl_plan_summary *s);
/*
 * A built-in synthetic profile: "sd15" (~2 GB), "sdxl" (~7 GB), "flux-f16"
 * (~28 GB: 24 GB diffusion + T5 at Q8), "flux-q8" (~18 GB), "ltx2" (~26 GB:
 * Q6 diffusion + 12B text encoder). TL_ERR_NOT_FOUND for another name.
 * s is initialized here.
 */
TL_API tl_status tl_plan_summary_profile(const char *name, tl_plan_summary *s);
/* Comma-separated names of the built-in profiles. */
TL_API const char *tl_plan_profile_names(void);

/* --- spec parsers (each a public entry point for the fuzzers) --- */

/*
 * Parse a size: a number with an optional binary suffix K, M, G, T (also KB,
 * KiB, ...; case-insensitive), fractions allowed ("9.5G"). A leading '-' is
 * accepted only when negative is not NULL (and sets it).
 */
TL_API tl_status tl_parse_bytes(const char *s, uint64_t *bytes, bool *negative);

/*
 * Hypothetical devices: "cuda0=16G,cuda1=10G" (total = free = size). A name
 * of "cpu" (or "host") describes the host (is_gpu false); every other name is
 * a GPU. A host entry with size 0 is added at the end when none is given.
 */
TL_API tl_status tl_plan_parse_devices(const char *spec, tl_plan_device *out, size_t cap,
                                       size_t *n);

/*
 * Plan devices from the registered devices, in registration order: every
 * device of kind TL_DEVICE_CPU is the host (is_gpu false), every other one a
 * GPU; total/free are read now. At most cap devices and TL_PLAN_MAX_GPUS GPUs
 * are written, the host always among them; GPUs beyond that (the last
 * registered ones) are left out only when dropped is not NULL, which then
 * says how many were; with dropped NULL that is TL_ERR_INVALID_ARG naming
 * them, and *n is 0. *n is the number written.
 */
TL_API tl_status tl_plan_devices_from_registry(tl_plan_device *out, size_t cap, size_t *n,
                                        size_t *dropped);

/* Where the user placed one component: n_devices 0 means "not given". */
typedef struct tl_backend_place {
    uint32_t n_devices;
    uint32_t devices[TL_PLAN_MAX_DEVICES]; /* indices into the device array, or TL_PLAN_HOST */
} tl_backend_place;

typedef struct tl_backend_spec {
    tl_backend_place comp[TL_COMP_COUNT];
    tl_backend_place dflt; /* from "*=", "all=", "default=" or a bare name */
} tl_backend_spec;

/*
 * Parse a backend spec: "cond=CPU,vae=cuda0,diffusion=cuda0&cuda1". "*=",
 * "all=", "default=" and a bare device list set the default; '&' lists GPUs
 * for a split. Components are names or aliases (tl_component_from_name).
 * Device names are case-insensitive, a unique prefix is enough, "auto",
 * "default" and "gpu" mean the GPU with the most free memory ("auto" and
 * "default" the host when there is no GPU), "cpu" the host. Errors name
 * the item: unknown component or device, empty list, a component given
 * twice, a split that names the host, "disk" (a parameter residency, not a
 * device). out is zeroed first.
 */
TL_API tl_status tl_plan_parse_backend(const char *spec, const tl_plan_device *devs, size_t n_devs,
                                       tl_backend_spec *out);

/*
 * Budgets per device from a max_vram spec and a headroom. For every GPU, budget =
 * free - headroom, then capped by the spec: an absolute size ("8G": at most
 * 8 GiB), a negative one ("-2G": 2 GiB less), or per device
 * ("cuda0=6G,cuda1=-1G"; names as in backend specs), an unnamed size applying
 * to the GPUs not named. A size without a unit is in GiB, as
 * stable-diffusion.cpp writes it ("6", "-1", "6.5"), and a unitless 0 means
 * no cap for the GPUs it applies to ("0G" is a cap of 0). NULL or "" = no
 * cap. The host's budget is its free memory (0 = unknown). budgets has
 * n_devs entries.
 */
TL_API tl_status tl_plan_parse_max_vram(const char *spec, const tl_plan_device *devs, size_t n_devs,
                                        uint64_t headroom, uint64_t *budgets);

/* Default compute reserves: diffusion 2048 MiB, cond 512 MiB, vae 1024 MiB, controlnet 512 MiB,
 * other 0, diffusion2 2048 MiB. */
TL_API void tl_plan_default_reserves(uint64_t reserve[TL_COMP_COUNT]);
/* Override reserves from "diffusion=3G,vae=512M" (component names or aliases). */
TL_API tl_status tl_plan_parse_reserve(const char *spec, uint64_t reserve[TL_COMP_COUNT]);

/* Output size of a run: width x height pixels, frames (1 for images). */
typedef struct tl_plan_size {
    uint32_t width, height, frames;
} tl_plan_size;
/* Parse "WxH" or "WxHxT" (each 1..1048576). */
TL_API tl_status tl_plan_parse_size(const char *spec, tl_plan_size *out);

/* Phase schedule: phase i runs the components whose bit (1u << tl_component) is in mask[i]. */
typedef struct tl_plan_phases {
    uint32_t n;
    uint32_t mask[TL_PLAN_MAX_PHASES];
} tl_plan_phases;
/* The default image pipeline: cond, diffusion+controlnet, vae (tl_plan_create adds a diffusion2
 * phase after diffusion's when the summary has that component and no phases are given). */
TL_API void tl_plan_default_phases(tl_plan_phases *out);
/* Parse "cond,diffusion+controlnet,vae" (',' separates phases, '+' joins components). */
TL_API tl_status tl_plan_parse_phases(const char *spec, tl_plan_phases *out);

/* VAE tiling decision (latent = size / 8; time is never tiled). */
typedef struct tl_vae_tiling {
    bool decided; /* false when no size was given */
    bool tiled;
    uint32_t latent_w, latent_h, frames;
    uint32_t tile;  /* tile side in latent pixels (0 when untiled) */
    double overlap; /* 0.5 when tiled */
    uint32_t tiles; /* number of tiles per frame (1 when untiled) */
} tl_vae_tiling;
/*
 * Decide VAE tiling: budget_voxels = reserve / bytes_per_voxel; untiled when
 * latent_w * latent_h * frames fits, else tile = round(sqrt(budget_voxels /
 * frames)) clamped to [8, max latent side], overlap 0.5.
 * bytes_per_voxel 0 = the default (256 KiB per latent voxel).
 */
TL_API tl_status tl_plan_vae_tiling(const tl_plan_size *size, uint64_t vae_reserve,
                                    uint64_t bytes_per_voxel, tl_vae_tiling *out);

/* Options of tl_plan_create; set up with tl_plan_options_init. */
typedef struct tl_plan_options {
    uint32_t size;                /* sizeof(tl_plan_options), set by tl_plan_options_init */
    const char *backend;          /* backend spec; NULL = auto-fit every component */
    const char *max_vram;         /* NULL = no cap */
    uint64_t headroom;            /* bytes kept free on every GPU */
    const char *reserve;          /* reserve overrides; NULL = defaults */
    const char *phases;           /* phase schedule; NULL = default */
    const char *output_size;      /* "WxH[xT]" for the VAE tiling decision; NULL = none */
    bool clip_on_cpu;             /* = "cond=cpu" */
    bool vae_on_cpu;              /* = "vae=cpu" */
    bool controlnet_on_cpu;       /* = "controlnet=cpu" */
    bool offload_to_cpu;          /* every GPU component is streamed from RAM */
    uint32_t steps;               /* passes of diffusion/controlnet per run; 0 = 20 */
    uint64_t vae_bytes_per_voxel; /* 0 = default */
    /*
     * Per-component constraints, one bit (1u << tl_component) per component;
     * a component in no mask is left to the search. A component may be in at
     * most one of offload / phase_only and one of layer_split / row_split.
     */
    uint32_t offload;     /* streamed from RAM through its GPU, as offload_to_cpu does for all */
    uint32_t phase_only;  /* GPU weights loaded for the component's phases only and dropped
                             after ("phase" residency), even when it is active in every phase */
    uint32_t layer_split; /* on several GPUs: split by whole layers only */
    uint32_t row_split;   /* on several GPUs: split by rows only (also when the backend spec
                             lists the GPUs, which otherwise gives a layer split) */
    /*
     * Network links of devices reached over one (RPC servers' devices):
     * "NAME=BW[:lat=TIME],..." with BW in bytes per second (a size: "1.25G")
     * and TIME the round trip (s/ms/us/ns; default 0); names as in backend
     * specs. A device not named is local (no link). NULL or "" = none. See
     * the link cost in the model above.
     */
    const char *links;
    uint32_t steps2; /* passes of diffusion2 per run (after diffusion's); 0 = steps */
    /*
     * Per-tensor placements, as llama.cpp's --override-tensor:
     * "PATTERN=DEVICE,..." (only with tl_plan_create_for_model, which sees
     * the tensor names). PATTERN is a POSIX extended regular expression
     * (regcomp REG_EXTENDED) searched anywhere in the name, with the escapes
     * llama.cpp users write translated (\d digit, \w word character, \s
     * space, their negations \D \W \S, and \. a dot); DEVICE a device name
     * as in backend specs ("cpu" the host). The first pattern that matches a
     * tensor places it on its device, resident for the whole run (counted in
     * every phase of that device, its bytes at the converted size); the
     * other tensors are planned as usual. A bad pattern or an unknown device
     * is TL_ERR_INVALID_ARG / TL_ERR_NOT_FOUND naming the pattern. NULL or
     * "" = none.
     */
    const char *overrides;
    /*
     * Types per tensor name (tl_load_options.type_rules: "PATTERN=TYPE,...",
     * only with tl_plan_create_for_model): each tensor is counted in the type
     * the rules give it, the others as convert says. A bad rule is
     * TL_ERR_INVALID_ARG naming it. NULL or "" = none.
     */
    const char *type_rules;
} tl_plan_options;

/* Defaults: auto-fit every component, no cap, no headroom, default reserves and phases. */
TL_API void tl_plan_options_init(tl_plan_options *o);

/*
 * A plan is immutable once made: every tl_plan_* getter may run on any
 * thread concurrently. What a getter returns (tl_plan_error, device
 * descriptions, the tiling) is owned by the plan and valid until
 * tl_plan_destroy.
 */
typedef struct tl_plan tl_plan;

/*
 * Plan. devs are the devices (GPUs and optionally the host; a host is added
 * when absent). opts may be NULL. Returns TL_OK with a plan even when nothing
 * fits the budgets: check tl_plan_feasible (or tl_plan_check). Spec errors
 * return TL_ERR_INVALID_ARG / TL_ERR_NOT_FOUND with no plan, as do more than
 * TL_PLAN_MAX_GPUS GPUs; a failed allocation anywhere (the search included)
 * returns TL_ERR_NOMEM with no plan, never a plan that searched less. The
 * older options clip_on_cpu / vae_on_cpu / controlnet_on_cpu place their
 * component on the host, exactly as "cond=cpu" etc. in the backend spec (a
 * component placed by both is an error). The component masks (offload,
 * phase_only, layer_split, row_split) are TL_ERR_INVALID_ARG when they
 * contradict each other for a component or name bits beyond TL_COMP_COUNT.
 */
TL_API tl_status tl_plan_create(const tl_plan_summary *s, const tl_plan_device *devs, size_t n_devs,
                                const tl_plan_options *opts, tl_plan **out);
/*
 * Plan a model: tl_plan_summary_from_model(m, convert) and tl_plan_create,
 * with tl_plan_options.overrides applied first (tensors an override places
 * are left out of their component's summary and counted on their device).
 * A plan with overrides made by tl_plan_create (no names to match) is
 * TL_ERR_INVALID_ARG. If a device's overrides alone exceed its budget, the
 * plan is infeasible and says so.
 */
TL_API tl_status tl_plan_create_for_model(const tl_model *m, tl_dtype convert,
                                          const tl_plan_device *devs, size_t n_devs,
                                          const tl_plan_options *opts, tl_plan **out);
/* Tensors placed by overrides (0 without). */
TL_API size_t tl_plan_override_count(const tl_plan *p);
/*
 * Override i (sorted by tensor name): the tensor's name, its plan device
 * (tl_plan_device_of's index; the host is the last) and the pattern that
 * placed it; any output may be NULL. TL_ERR_INVALID_ARG for i out of range.
 */
TL_API tl_status tl_plan_override_of(const tl_plan *p, size_t i, const char **tensor,
                                     size_t *device, const char **pattern);
/* The plan device an override places a tensor on; TL_NOT_FOUND when none does. */
TL_API size_t tl_plan_override_find(const tl_plan *p, const char *tensor);
/* Bytes the overrides place on plan device i (in each of its peaks; 0 without). */
TL_API uint64_t tl_plan_override_bytes(const tl_plan *p, size_t device);
TL_API void tl_plan_destroy(tl_plan *p);
TL_API bool tl_plan_feasible(const tl_plan *p);
/* Why the plan is infeasible, with the smallest change that would fit ("" when feasible). */
TL_API const char *tl_plan_error(const tl_plan *p);
/*
 * 0 when feasible; else the bytes added to every GPU's budget for the
 * best-effort decisions (the least that fits, in 16 MiB steps), UINT64_MAX
 * when 64 GiB more is not enough.
 */
TL_API uint64_t tl_plan_shortfall(const tl_plan *p);
/* TL_OK when feasible, else TL_ERR_INFEASIBLE with tl_plan_error as the message. */
TL_API tl_status tl_plan_check(const tl_plan *p);

TL_API size_t tl_plan_device_count(const tl_plan *p);
/* Device i (GPUs first in input order, the host last). */
TL_API const tl_plan_device *tl_plan_device_of(const tl_plan *p, size_t i);
/* Budget of device i (bytes). */
TL_API uint64_t tl_plan_device_budget(const tl_plan *p, size_t i);

/* The network link of a plan's device and what crosses it (tl_plan_device_link). */
typedef struct tl_plan_link {
    double bandwidth;    /* bytes per second */
    double latency;      /* seconds per round trip */
    uint64_t push_once;  /* weights resident for the run: cross once per model */
    uint64_t per_run;    /* weight bytes that cross every run (phase residency, streaming) */
    uint64_t passes;     /* compute passes on the device per run */
    double seconds;      /* modeled link time per run (see the model above) */
} tl_plan_link;
/* Device i's link: TL_ERR_NOT_FOUND for a local device, TL_ERR_INVALID_ARG for i out of range. */
TL_API tl_status tl_plan_device_link(const tl_plan *p, size_t i, tl_plan_link *out,
                                     size_t out_size);

/*
 * Where one component goes. In a feasible plan, the placement that fits the
 * budgets. In an infeasible one (tl_plan_feasible false), the best effort:
 * the placement the search chooses, every requested placement honoured,
 * when every GPU's budget is raised by tl_plan_shortfall bytes — so the
 * peaks (tl_plan_peak) show how far each device is over its budget
 * (tl_plan_device_budget, not raised). When nothing fits even with 64 GiB
 * more on every GPU, the shortfall is UINT64_MAX and the decisions are those
 * of a search with practically unlimited budgets; when not even that fits
 * (a split over more GPUs than the component has layers), every decision is
 * cpu with nothing placed. In every case `requested` keeps what was asked.
 */
typedef struct tl_plan_decision {
    bool present; /* false when the model has no such component */
    tl_plan_mode mode;
    bool phase_resident;                        /* weights loaded for the component's phases only */
    uint64_t bytes;                             /* weights */
    uint64_t reserve;                           /* compute reserve per GPU used */
    uint32_t n_devices;                         /* GPUs listed (0 for cpu) */
    uint32_t devices[TL_PLAN_MAX_DEVICES];      /* device indices */
    uint64_t device_bytes[TL_PLAN_MAX_DEVICES]; /* weights resident on each */
    double shares[TL_PLAN_MAX_DEVICES];         /* device_bytes / bytes */
    /*
     * Layers [layer_begin, layer_end) resident on each device, in summary
     * order: all of them for gpu, contiguous ranges for layer_split (the
     * non-layer bytes go with the first device), every layer for row_split
     * (each matrix is split by rows), the resident prefix for stream (the
     * non-layer bytes are resident first; the layers after the last range are
     * streamed).
     */
    uint32_t layer_begin[TL_PLAN_MAX_DEVICES];
    uint32_t layer_end[TL_PLAN_MAX_DEVICES];
    uint64_t host_bytes; /* weights kept in RAM (cpu and streamed parts) */
    uint64_t moved_per_run;
    /*
     * Where the backend spec (or a *_on_cpu option) placed the component:
     * device indices, TL_PLAN_HOST for the host; n_requested 0 when it was
     * left to auto-fit. Set in feasible and infeasible plans alike.
     */
    uint32_t n_requested;
    uint32_t requested[TL_PLAN_MAX_DEVICES];
} tl_plan_decision;
/* The decision for component c (present false when absent). */
TL_API tl_status tl_plan_decision_of(const tl_plan *p, tl_component c, tl_plan_decision *out,
                                     size_t out_size);

TL_API size_t tl_plan_phase_count(const tl_plan *p);
/* Component mask of phase i. */
TL_API uint32_t tl_plan_phase_mask(const tl_plan *p, size_t i);
/* Projected peak bytes on device dev during phase. */
TL_API uint64_t tl_plan_peak(const tl_plan *p, size_t dev, size_t phase);
TL_API uint64_t tl_plan_moved_per_run(const tl_plan *p);
/* Host RAM for weights (cpu and streamed components). */
TL_API uint64_t tl_plan_host_bytes(const tl_plan *p);
/* Priority-weighted GPU-resident bytes (the search's first objective). */
TL_API uint64_t tl_plan_score(const tl_plan *p);
TL_API const tl_vae_tiling *tl_plan_tiling(const tl_plan *p);

/*
 * The plan as JSON (what `tierload plan --json` prints; tl_plan_from_json
 * reads it back): {"feasible","error","devices":[{"name","gpu","total",
 * "free","budget"} + for a device with a link "link":{"bandwidth","latency",
 * "push_once","per_run","passes","seconds"}],"phases":[...],"components":[{"name","bytes","reserve",
 * "mode","residency","devices","shares","device_bytes","host_bytes",
 * "moved_per_run","requested"}],"overrides":[{"pattern","device","bytes","tensors"}],
 * "peaks":[{"device","phase","bytes"}],"moved_per_run",
 * "host_bytes","score","vae_tiling"}; "shortfall" only in an infeasible plan
 * (-1 for UINT64_MAX), "requested" only for a component the spec placed,
 * "overrides" only in a plan with tl_plan_options.overrides.
 * Byte-identical for the same input.
 * The caller frees *out with tl_free.
 */
TL_API tl_status tl_plan_to_json(const tl_plan *p, char **out);
/* Parse and validate a plan document (as tl_plan_to_json writes it). */
TL_API tl_status tl_plan_from_json(const char *json, size_t len, tl_plan **out);
/*
 * The human form (devices, components, peaks per phase, host RAM, bytes
 * moved) as text. The caller frees *out with tl_free.
 */
TL_API tl_status tl_plan_to_text(const tl_plan *p, char **out);

/* ------------------------------------------------------------------------ */
/* Loading and memory accounting                                            */
/* ------------------------------------------------------------------------ */

/*
 * Memory facts of this process and machine, in bytes. Fields a system does
 * not provide are 0 (cgroup_max is UINT64_MAX when unlimited or absent).
 */
typedef struct tl_memstats {
    uint64_t rss;            /* VmRSS: resident set, all kinds */
    uint64_t rss_anon;       /* RssAnon: anonymous pages (heap, copies of weights) */
    uint64_t rss_file;       /* RssFile: file pages mapped into the process (mmap views) */
    uint64_t rss_shmem;      /* RssShmem */
    uint64_t uss;            /* Private_Clean + Private_Dirty from /proc/self/smaps_rollup */
    uint64_t peak_rss;       /* VmHWM: the process's high-water mark since start */
    uint64_t mem_total;      /* MemTotal */
    uint64_t mem_available;  /* MemAvailable */
    bool has_cgroup;         /* some cgroup v2 level of this process limits memory */
    uint64_t cgroup_max;     /* tightest memory.max (UINT64_MAX for "max" or none) */
    uint64_t cgroup_current; /* memory.current of that level */
} tl_memstats;

/* Read the memory facts now (/proc/self/status, smaps_rollup, /proc/meminfo, cgroup v2). */
TL_API tl_status tl_memstats_read(tl_memstats *out, size_t out_size);

/* Start / end / peak of memory over a job. */
typedef struct tl_memspan {
    /*
     * end.uss is 0: reading USS walks every page table of the process (~25 ms
     * per GiB resident), too dear for the end of every job; call
     * tl_memstats_read when it is wanted.
     */
    tl_memstats start, end;
    uint64_t rss_anon_peak; /* highest RssAnon sampled (start and end included) */
    uint64_t rss_file_peak; /* highest RssFile sampled */
    uint64_t rss_peak;      /* highest VmRSS sampled */
    uint64_t samples;       /* how many samples were taken */
} tl_memspan;

/*
 * A background sampler of the memory facts (one thread, reads
 * /proc/self/status). tl_memwatch_sample may be called from any thread while
 * it runs; tl_memwatch_destroy must not overlap another call on it.
 */
typedef struct tl_memwatch tl_memwatch;
/*
 * Take the start sample and start a thread that samples every interval_s
 * seconds (0 = 5 ms) until tl_memwatch_destroy.
 */
TL_API tl_status tl_memwatch_create(double interval_s, tl_memwatch **out);
/* Take one sample now (callers can add samples at known peaks). NULL is fine. */
TL_API void tl_memwatch_sample(tl_memwatch *w);
/* Stop the thread, take the end sample, fill *out (may be NULL) and free w. */
TL_API void tl_memwatch_destroy(tl_memwatch *w, tl_memspan *out, size_t out_size);

/* Bytes of a file resident in the page cache (mincore on a temporary mapping). */
TL_API tl_status tl_file_page_cache(const char *path, uint64_t *resident, uint64_t *size);
/* Drop a file's clean pages from the page cache (POSIX_FADV_DONTNEED). */
TL_API tl_status tl_file_evict(const char *path);

/* How tl_model_load moves a file's tensors into host memory. */
typedef enum tl_load_mode {
    TL_LOAD_MODE_INVALID = -1, /* what tl_load_mode_from_name returns for an unknown name */
    TL_LOAD_AUTO = 0,     /* per file, from page-cache residency (see tl_model_load) */
    TL_LOAD_MMAP = 1,     /* views into the file's mapping: zero copy */
    TL_LOAD_BUFFERED = 2, /* pread in large chunks by the workers into the destination */
    TL_LOAD_DIRECT = 3,   /* O_DIRECT reads (io_uring when built with liburing), no page cache */
} tl_load_mode;

/* "auto", "mmap", "buffered", "direct"; NULL when invalid. */
TL_API const char *tl_load_mode_name(tl_load_mode m);
/* Parse a mode name; -1 when unknown. */
TL_API tl_load_mode tl_load_mode_from_name(const char *name);

/* Progress: bytes done of total. Return false to cancel (the load fails with TL_ERR_CANCELLED). */
typedef bool (*tl_load_progress_fn)(void *user, uint64_t done, uint64_t total);

/* Defaults of tl_load_options fields left 0. */
#define TL_LOAD_DEFAULT_THREADS 2u
#define TL_LOAD_DEFAULT_STAGING_SIZE (16ull << 20)
#define TL_LOAD_DEFAULT_STAGING_COUNT 4u

/* Options of tl_model_load; set up with tl_load_options_init (auto, no conversion). */
typedef struct tl_load_options {
    uint32_t size; /* sizeof(tl_load_options), set by tl_load_options_init */
    tl_load_mode mode;
    /*
     * Convert tensors to dtype on load, where tl_convert_target says so:
     * F32/F16/BF16 among themselves, F8_E4M3/F8_E5M2 -> F16/BF16/F32,
     * F64 -> F32, I64 -> I32, and quantization of float weights to Q8_0 or
     * Q4_0 (stable-diffusion.cpp's --type). Other tensors keep their type.
     * The target must be F32, F16, BF16, I32, Q8_0 or Q4_0. A converted
     * tensor is never a view.
     */
    bool convert;
    tl_dtype dtype;
    unsigned threads;       /* bounded worker pool; 0 = TL_LOAD_DEFAULT_THREADS (max 64) */
    uint64_t staging_size;  /* bytes per staging buffer; 0 = 16 MiB; rounded up to 64 KiB */
    unsigned staging_count; /* staging buffers in the ring; 0 = 4; at least 2 */
    bool evict;             /* after a file is copied, drop its pages from the page cache */
    bool verify;            /* xxh64 of every tensor in memory against the file's bytes */
    bool accept_views;      /* auto: a warm, unconverted file may stay a view into its mapping */
    bool populate;          /* mmap mode: fault every page of the mapping in (MADV_POPULATE_READ) */
    bool no_hugepages;      /* 4 KiB destination pages throughout (wins over hugepages) */
    tl_load_progress_fn progress; /* called on the calling thread, about every 50 ms */
    void *progress_user;
    double sample_interval; /* seconds between memory samples; 0 = 5 ms; < 0 = none (stats.mem) */
    /* Load only these tensors (model indexes; NULL = all). Others are left empty in the result. */
    const size_t *tensors;
    size_t n_tensors;
    /*
     * Where tensor i goes: a host address of nbytes (after conversion, with
     * the dtype given) that the caller owns and keeps alive; NULL fails the
     * load. With dest set every tensor is copied (never a view), tensor by
     * tensor through the same bounded staging, conversion and verify; the
     * result's data pointers are the caller's addresses.
     */
    void *(*dest)(void *user, size_t tensor, uint64_t nbytes, tl_dtype dtype);
    void *dest_user;
    /*
     * Alignment of every host copy, in bytes: 0 (the default) keeps the
     * layout described at tl_model_load (an unconverted copy sits at its
     * file offset modulo 4096, so its address is only as aligned as the
     * file offset); a power of two up to 4096 puts each copied tensor at an
     * address that is a multiple of both align and the dtype's natural
     * alignment (its element size for plain types: 2 for F16, 8 for F64;
     * the largest power of two up to 8 dividing the block size for quantized
     * ones). TL_LOAD_ALIGN_ELEMENT asks for the natural alignment alone. Views (mmap mode)
     * are never moved: they stay at their file offset.
     */
    uint32_t align;
    /*
     * Transparent huge pages (MADV_HUGEPAGE) on destinations throughout.
     * By default (neither this nor no_hugepages) a destination that mirrors
     * its file adapts: huge pages while they fault in fast, 4 KiB pages for
     * the rest after a few slow ones in a row. On virtual machines that
     * return freed memory to the host, huge pages fault in ~8x faster than
     * 4 KiB pages when they reuse memory freed a moment ago and ~8x slower
     * when the host took it back (see docs/ARCHITECTURE.md, "Destination
     * pages"); the default is never much worse than the better of the two.
     */
    bool hugepages;
    /*
     * With dest: the caller's destinations are fresh anonymous memory that
     * nothing has written yet (a buffer just allocated for the load). The
     * loader then faults them in as its own: each chunk just before its
     * read (MADV_POPULATE_WRITE), on huge pages while they fault in fast
     * (hugepages and no_hugepages apply as to its own destinations: the
     * caller's range gets MADV_HUGEPAGE or MADV_NOHUGEPAGE advice, except
     * the 2 MiB pages holding whole pages no destination covers, which stay
     * on 4 KiB pages so that those are never touched). Memory that was
     * written already loses nothing but time.
     */
    bool dest_fresh;
    /*
     * Types per tensor name, as stable-diffusion.cpp's --tensor-type-rules:
     * "PATTERN=TYPE,..." (NULL: none), PATTERN a regular expression searched
     * in the name (\d \w \s as std::regex has them), TYPE f32, f16, bf16,
     * q8_0 or q4_0. The first rule that matches a tensor gives its type where
     * that conversion exists for it (Q8_0 / Q4_0: rows of whole 32-element
     * blocks; tl_convert_target's name exceptions do not apply), else it
     * keeps its own; tensors no rule matches follow convert and dtype. A bad
     * rule is TL_ERR_INVALID_ARG naming it, as is a pattern too costly to
     * compile or match (over 512 bytes, a tree glibc would build past 4096
     * nodes such as "((a+)+)+…", a bound over {64}, a repetition of what may
     * match nothing such as "(.*)*", a back-reference; the same for
     * overrides). Plans (tl_plan_options) and
     * sessions (tl_session_options) take the same rules and count and keep
     * the same types.
     */
    const char *type_rules;
} tl_load_options;

#define TL_LOAD_ALIGN_ELEMENT 1u /* tl_load_options.align: at least the dtype's element size */

/* Defaults: mode auto, no conversion, the TL_LOAD_DEFAULT_* pool and staging sizes. */
TL_API void tl_load_options_init(tl_load_options *o);

/* One tensor in host memory. */
typedef struct tl_loaded_tensor {
    const void
        *data; /* copies: converted ones 64-byte aligned, others at their file offset mod 4096 */
    uint64_t nbytes; /* bytes at data (after conversion) */
    tl_dtype dtype;  /* type of the bytes at data */
    bool view;       /* data points into the model's mapping (valid while the model is open) */
    bool converted;  /* dtype differs from the file's */
} tl_loaded_tensor;

/* What happened to one file (strings owned by the result). */
typedef struct tl_load_file {
    const char *path;
    tl_load_mode mode;       /* the mode used (never AUTO) */
    const char *reason;      /* why that mode, in words */
    bool direct_fallback;    /* direct was asked or chosen, O_DIRECT was refused, buffered used */
    bool uring;              /* direct reads went through io_uring */
    uint64_t size;           /* file size */
    uint64_t bytes;          /* tensor bytes read from the file */
    double seconds;          /* time spent on this file's reads (wall clock, workers overlapped) */
    double residency_before; /* fraction of the file in the page cache before loading */
    uint64_t page_cache_before, page_cache_after; /* resident bytes of the file */
    bool evicted;                                 /* evict was asked and done */
} tl_load_file;

/*
 * What happened to the whole load. Speeds derived from these figures have
 * one definition: bytes delivered / wall seconds of the step named. The
 * load's speed is bytes / seconds (the whole call, as a caller waits for
 * it); a file's read speed is tl_load_file.bytes / tl_load_file.seconds
 * (its read step, conversion included, verify and evict not). Views (mmap
 * mode) deliver no copy: their seconds is the time to populate the mapping,
 * not a load speed.
 */
typedef struct tl_load_stats {
    uint64_t bytes;         /* tensor bytes read from the files */
    uint64_t bytes_out;     /* tensor bytes in host memory (after conversion; views included) */
    uint64_t dest_bytes;    /* anonymous bytes allocated for copies (destinations) */
    uint64_t staging_bound; /* staging_count x staging_size: the most staging can use */
    uint64_t staging_used;  /* staging bytes actually allocated (<= staging_bound) */
    unsigned threads;
    double seconds;      /* wall clock of the whole load: setup, reads, verify, evict */
    double read_seconds; /* wall clock of the per-file steps: reads, verify, evict (no setup) */
    uint64_t page_cache_before, page_cache_after; /* sums over the files */
    /*
     * process memory at start / end / peak, sampled during the load; no USS
     * (start.uss and end.uss are 0: reading it walks every page table, ~25 ms
     * per GiB the process holds; call tl_memstats_read). All 0 when
     * sample_interval < 0: no sampler thread, nothing read.
     */
    tl_memspan mem;
} tl_load_stats;

typedef struct tl_load_result tl_load_result;

/*
 * Load every tensor of m into host memory.
 *
 * Copies go into one anonymous mapping per file, owned by the result (its
 * page size: hugepages and no_hugepages). When none of a file's tensors is
 * converted, that destination mirrors the file's data region byte for byte
 * (page aligned), so reads are large (staging_size chunks) and go straight
 * into it, each chunk faulted in just before (MADV_POPULATE_WRITE):
 * buffered preads, or O_DIRECT reads (one io_uring queue of
 * staging_count reads, with a thread faulting the destination in ahead;
 * threads when built without liburing). Converted files are packed tensor
 * after tensor (64-byte aligned) and read chunk by chunk through the
 * staging ring, min(threads, staging_count) workers. Extra memory is
 * bounded: staging_count x staging_size of staging (allocated only when
 * converting or verifying) and small per-tensor and per-chunk metadata,
 * whatever the model's size or its largest tensor.
 *
 * auto chooses per file: residency >= 0.5 is warm and is copied from the
 * page cache with buffered reads (or left as a view when accept_views and
 * no conversion); a cold file takes direct (TIERLOAD_COLD_PATH=buffered
 * overrides), except into the caller's memory (dest), which does not mirror
 * the file: buffered reads land in place where direct ones would all pass
 * through staging. direct falls back to buffered, with a note, where O_DIRECT is
 * refused. The notes (tl_load_result_notes) say what was chosen and why.
 *
 * Order per file: read, verify, evict (fadvise DONTNEED, and the catalog's
 * own mapping pages dropped unless the model is writable); files in order.
 * Progress is called on the calling thread; returning false stops the
 * workers after their current chunk.
 *
 * Views (mmap mode) stay valid while m is open: free the result first.
 * On failure *out is NULL and the message names the file and tensor.
 *
 * The result is immutable: its getters may run on any thread concurrently.
 * Everything they return (tensors and their bytes, files and their path and
 * reason, stats, notes) is owned by the result and valid until
 * tl_load_result_destroy; the bytes of views also need m open.
 */
TL_API tl_status tl_model_load(tl_model *m, const tl_load_options *opts, tl_load_result **out);
/* Free the result and every copy it owns. NULL is fine. */
TL_API void tl_load_result_destroy(tl_load_result *r);
/* Tensor i (same index as tl_model_tensor); NULL when out of range. */
TL_API const tl_loaded_tensor *tl_load_result_tensor(const tl_load_result *r, size_t i);
TL_API size_t tl_load_result_tensor_count(const tl_load_result *r);
/* File i (same index as tl_model_file); NULL when out of range. */
TL_API const tl_load_file *tl_load_result_file(const tl_load_result *r, size_t i);
TL_API size_t tl_load_result_file_count(const tl_load_result *r);
TL_API const tl_load_stats *tl_load_result_stats(const tl_load_result *r);
/* Notes on the choices made and fallbacks taken, one per line ("" when none). */
TL_API const char *tl_load_result_notes(const tl_load_result *r);

/*
 * Convert n elements from one dtype to another (the pairs tl_model_load
 * converts, plus identity). Rounding is to nearest even; NaN stays NaN
 * (sign kept), Inf stays Inf (F8_E4M3 has no Inf: it is produced only from
 * F8 sources), subnormals are exact where representable. I64 -> I32 fails
 * with TL_ERR_UNSUPPORTED when a value is out of range. Q8_0 and Q4_0
 * targets take F32/F16/BF16 sources and n a multiple of 32 (else
 * TL_ERR_INVALID_ARG), write ggml's blocks byte for byte as ggml's own
 * quantizer does (ggml_quantize_chunk without an importance matrix), and
 * refuse a NaN or infinite element with TL_ERR_UNSUPPORTED. dst and src
 * must not overlap.
 */
TL_API tl_status tl_convert(tl_dtype to, void *dst, tl_dtype from, const void *src, uint64_t n);
/* Is there a conversion from -> to? (identity included) */
TL_API bool tl_convert_supported(tl_dtype from, tl_dtype to);
/*
 * The dtype tensor t takes when a load, a plan or a session asks for `to`
 * (t's own type when the conversion does not apply to it). Float targets
 * take every tensor tl_convert_supported allows; Q8_0 and Q4_0 take what
 * stable-diffusion.cpp's --type quantizes: float tensors of 2+ dimensions
 * whose innermost dimension is a multiple of 32, except biases, scales,
 * embeddings and the input/output layers sd.cpp keeps (img_in., txt_in.,
 * time_in., vector_in., guidance_in., final_layer., x_embedder.,
 * t_embedder., y_embedder., pos_embed, context_embedder., time_embed.,
 * label_emb.). TL_DTYPE_INVALID for a NULL t.
 */
TL_API tl_dtype tl_convert_target(const tl_tensor_info *t, tl_dtype to);


/* ------------------------------------------------------------------------ */
/* Sessions: the residency manager carrying a plan out                       */
/* ------------------------------------------------------------------------ */

/*
 * A session makes a plan true while an engine runs its phases: tensors are
 * loaded where the plan puts them when first acquired (not before), released
 * when the engine is done with them (release is not eviction), evicted when a
 * budget would be exceeded, prefetched ahead of use, spilled when dirty.
 *
 * Tiers: the file's own mapping (clean weights, and weights patched through
 * tl_model_tensor_data_mut, whose bytes live in the copy-on-write mapping),
 * RAM (anonymous copies of dirty weights that left a device), device memory,
 * and the session's spill file. A clean tensor evicted from a device is
 * dropped and read again from the mapping when needed — never written to
 * disk. A dirty one (written on its device: tl_session_mark_dirty) goes down
 * a tier: to RAM while the host budget allows and free RAM is above the
 * spill threshold, else to the spill file (an unnamed file in the spill
 * directory, 4 KiB-aligned extents, written through the engine's bounded
 * staging and mapped back read-only). ENOSPC/EIO while spilling: an error,
 * the tensor stays on its device, nothing is lost.
 *
 * Placement from the plan, per tensor (tl_model_layer_tensors grouping): a
 * tensor an override names (tl_plan_override_find) → its device, kept;
 * else by its component's decision: cpu → host (zero copy: the mapping itself); gpu → its device; layer_split
 * → the device whose layer range holds the tensor's layer (other tensors on
 * the first); row_split → 2-D matrices with both sides >= 256 are cut by rows
 * over the devices in proportion to their matrix bytes (one part per device,
 * whole rows, each cut at the multiple of 64 rows nearest its share, moved 1
 * to 3 rows on where the row count is not a multiple of 4: ggml's CPU matrix
 * product then computes every row of a part as it computes the whole's),
 * other tensors on the first device; stream → layers in the
 * resident ranges on their device, the others (and their re-loads each pass)
 * on the last listed device. A device that can use host pointers gets the
 * mapping itself (zero copy, no allocation).
 *
 * Budgets: each device's weight budget is its plan budget minus the largest
 * compute reserve of the components placed on it (options can set it); the
 * host budget counts RAM copies. No operation ever leaves a budget exceeded;
 * when one would be, unreferenced tensors of that device are evicted: with a
 * schedule (tl_session_set_schedule) the one used furthest in the future,
 * else the least recently used, taking tensors the plan streams before those
 * it keeps resident. An allocation the device refuses although the budget
 * allowed it (another process took memory) evicts the coldest unreferenced
 * tensors of that device to cover the shortfall and retries once; if it
 * still fails, TL_ERR_DEVICE_OOM says asked / free / evictable.
 *
 * Thread-safety: every call on a session may be made from several threads at
 * once (one lock; I/O runs outside it on the mover engine's workers). The
 * model and plan must outlive the session; the devices are retained by it.
 */
typedef struct tl_session tl_session;

/* One part of a tensor as a plan places it (the rule above). */
typedef struct tl_plan_placement {
    size_t tensor;               /* tl_model_tensor index */
    int32_t device;              /* plan device index (tl_plan_device_of); -1 for the host */
    bool streamed;               /* stream mode: loaded per use, not kept resident */
    uint64_t offset, nbytes;     /* bytes of the tensor in this part */
    uint64_t row_begin, row_end; /* rows (outermost dimension) of the part */
} tl_plan_placement;
/*
 * Where plan p puts every tensor of m: parts in tensor order, one per tensor,
 * or one per device for a row-split matrix. *out is freed with tl_free. This
 * is the placement sessions carry out, for engines that place weights
 * themselves.
 */
TL_API tl_status tl_plan_place(const tl_plan *p, const tl_model *m, tl_plan_placement **out,
                               size_t *n);

typedef enum tl_tier {
    TL_TIER_FILE = 0,   /* the model file's mapping (clean, or patched in the mapping) */
    TL_TIER_RAM = 1,    /* an anonymous host copy */
    TL_TIER_PINNED = 2, /* pinned host memory */
    TL_TIER_DEVICE = 3, /* device memory */
    TL_TIER_SPILL = 4,  /* the session's spill file (mapped read-only) */
    TL_TIER_COUNT = 5
} tl_tier;
/* "file", "ram", "pinned", "device", "spill"; NULL when invalid. */
TL_API const char *tl_tier_name(tl_tier t);

typedef enum tl_evict_policy {
    TL_EVICT_AUTO = 0,     /* furthest next use when a schedule is set, else LRU */
    TL_EVICT_LRU = 1,      /* least recently used, streamed tensors before resident ones */
    TL_EVICT_FURTHEST = 2, /* furthest next use (needs a schedule; LRU without one) */
} tl_evict_policy;

typedef struct tl_session_options {
    uint32_t size; /* sizeof(tl_session_options): set by tl_session_options_init */
    /* host RAM for copies; 0 = min(MemAvailable, cgroup room) at creation minus headroom */
    uint64_t host_budget;
    uint64_t host_headroom; /* 0 = 512 MiB */
    /*
     * Bytes of pinned host memory the session may keep (0 = none): host
     * copies of streamed tensors on devices with a pinned tier
     * (tl_device_info.pinned), made as they are first loaded from the file
     * and uploaded from there afterwards without staging; least recently used
     * first out. Clean copies: dropped, never written anywhere.
     */
    uint64_t pinned_cap;
    /* spill directory; NULL = TIERLOAD_SPILL_DIR, else TMPDIR, else /tmp */
    const char *spill_dir;
    /*
     * Dirty bytes leaving a device go to the spill file instead of RAM when
     * MemAvailable is below this; 0 = TIERLOAD_SPILL_THRESHOLD (a size such
     * as "8G"), else never for that reason (the host budget still applies).
     */
    uint64_t spill_threshold;
    tl_evict_policy policy;
    unsigned threads;       /* mover workers; 0 = 2 */
    uint64_t staging_size;  /* 0 = 16 MiB */
    unsigned staging_count; /* 0 = 4: the staging bound is count x size */
    /* per plan device: weight budget override (0 = from the plan); indexes as tl_plan_device */
    const uint64_t *device_budgets;
    size_t n_device_budgets;
    bool no_async; /* copy synchronously even where a device has async copies */
    /*
     * Devices that can use host memory (the cpu device, ggml:CPU) get weights
     * copied into their own memory under their budget, instead of the
     * mapping itself: streaming through such a device then moves bytes.
     */
    bool no_zero_copy;
    /*
     * The event log (tl_session_events_copy) keeps the newest event_cap
     * entries (0 = 65,536, about 2.5 MiB; memory grows as it fills), older
     * ones are pushed out and counted; no_events: no log at all.
     */
    size_t event_cap;
    bool no_events;
    /*
     * Progress of each acquire that moves bytes: called on the acquiring
     * thread about every 50 ms while its loads run and once when they are
     * done (done == total: the bytes this acquire moves, its own loads and
     * the pinned copies filled alongside); an acquire whose tensors are all
     * resident calls it not at all. Returning false cancels that acquire
     * (TL_ERR_CANCELLED, as tl_session_cancel does). Prefetches report
     * nothing here (they run in the background; tl_session_cancel stops them).
     */
    tl_load_progress_fn progress;
    void *progress_user;
    /*
     * Keep tensors on their devices converted to dtype (convert true), where
     * tl_convert_target(tensor, dtype) says so: the rule of
     * tl_load_options.dtype and of a plan counted with the same convert
     * (tl_plan_summary_from_model), so the plan's sizes are the session's.
     * dtype is F32, F16, BF16, I32, Q8_0 or Q4_0 (else TL_ERR_INVALID_ARG at
     * creation). The mover converts as a unit loads: straight into device
     * memory that is host memory (the cpu device, ggml:CPU, sims), else
     * chunk by chunk through the staging ring, then uploaded (converting
     * loads are never asynchronous copies). Device bytes, budgets, stats,
     * tl_session_tensor.info (dtype, nbytes) and parts (offset, nbytes) are
     * the converted ones; RAM, pinned and spill copies hold converted bytes.
     * Host-pointer devices keep converted tensors in memory of their own,
     * under their budget (as no_zero_copy does). Tensors the plan keeps in
     * host memory (the mapping itself) stay in the file's type. Row-split
     * tensors split on whole rows, so a Q8_0/Q4_0 part holds whole blocks.
     * tl_session_set_dtype changes one tensor's type.
     */
    bool convert;
    tl_dtype dtype;
    /*
     * Types per tensor name (tl_load_options.type_rules), kept on devices as
     * convert keeps its type: the rules first, convert and dtype for the
     * tensors no rule matches. Give the plan the same rules. A bad rule is
     * TL_ERR_INVALID_ARG naming it at creation. NULL or "" = none.
     */
    const char *type_rules;
} tl_session_options;
/* Defaults (and size). */
TL_API void tl_session_options_init(tl_session_options *o);
/*
 * Keep tensor `tensor` as dtype in s (its file type: as in the file),
 * whatever tl_session_options.dtype chose for it, from its next load on:
 * any conversion tl_convert_supported has, Q8_0 and Q4_0 for tensors whose
 * innermost dimension is a whole number of 32-element blocks (the caller
 * chooses: tl_convert_target's name rules do not apply). Its clean copies
 * (device, RAM, pinned, spill) are dropped. TL_ERR_UNSUPPORTED naming file,
 * tensor and types for a conversion that does not exist, or a tensor the
 * plan keeps in host memory; TL_ERR_INVALID_ARG while it is acquired,
 * loading, being updated or dirty.
 */
TL_API tl_status tl_session_set_dtype(tl_session *s, size_t tensor, tl_dtype dtype);

/*
 * Create a session for model m carried out by plan p. Every GPU the plan
 * names is bound to the registered device of that name (tl_device_find);
 * a name with no device is TL_ERR_NOT_FOUND naming it. An infeasible plan is
 * TL_ERR_INFEASIBLE. Nothing is loaded yet.
 */
TL_API tl_status tl_session_create(tl_model *m, const tl_plan *p, const tl_session_options *o,
                            tl_session **out);
/*
 * Free every copy and device allocation, close the spill file. NULL is fine
 * (TL_OK). A session with acquired sets not yet released is not destroyed:
 * TL_ERR_INVALID_ARG saying how many, and the session stays usable (release
 * them, then destroy again); debug builds (TL_DEBUG_ASSERTS) abort there
 * instead, as that is a bug in the caller. Must not overlap any other call
 * on s.
 */
TL_API tl_status tl_session_destroy(tl_session *s);

#define TL_ALL_LAYERS ((size_t)-1)

/* One part of an acquired tensor (row-split tensors have one part per device). */
typedef struct tl_session_part {
    tl_tier tier;
    tl_device *device;  /* NULL on host tiers (borrowed; valid while the session lives) */
    tl_devptr dptr;     /* on a device */
    const void *host;   /* readable host address on host tiers (and on host-pointer devices) */
    uint64_t offset;    /* byte offset of the part within the tensor */
    uint64_t nbytes;
    uint64_t row_begin, row_end; /* rows (outermost dimension) of the part */
} tl_session_part;

typedef struct tl_session_tensor {
    size_t index; /* tl_model_tensor index */
    /* the catalog entry, or for a tensor the session keeps converted its copy of it with
       dtype and nbytes as kept (owned by the session) */
    const tl_tensor_info *info;
    uint32_t n_parts;
    const tl_session_part *parts;
} tl_session_tensor;

/* A set of acquired tensors: valid until released. */
typedef struct tl_acquired tl_acquired;

/*
 * Make layers [layer_begin, layer_end) of component c (TL_ALL_LAYERS: to the
 * last) — and its other tensors when with_other — resident where the plan
 * says, and take a reference on each. Blocks until every byte is there
 * (waiting for a prefetch in flight counts as a prefetch hit). On failure
 * nothing stays referenced. A range outside the component's layers
 * (layer_begin > layer_end, or layer_end past tl_model_layer_count unless it
 * is TL_ALL_LAYERS) is TL_ERR_INVALID_ARG, here and in tl_session_prefetch
 * and tl_session_ready. The set belongs to s until released through s.
 */
TL_API tl_status tl_session_acquire(tl_session *s, tl_component c, size_t layer_begin, size_t layer_end,
                             bool with_other, tl_acquired **out);
/*
 * Acquire exactly these tensors (catalog indexes, any components, in any
 * order; a tensor listed twice is acquired once), as a graph segment asks
 * for its weights (stable-diffusion.cpp's prepare_params): the same loads,
 * waiting (timeout_ms as tl_session_acquire_wait), eviction and release as
 * a layer range. An index past the model is TL_ERR_INVALID_ARG, nothing
 * acquired. The set becomes the session's group of these tensors (as
 * tl_session_group makes one, unnamed; the same group each time the same
 * tensors come, in any order), so it moves a schedule along and is learned
 * as that group's step. Past TL_SESSION_MAX_GROUPS groups (or their bound
 * on memory, below tl_session_group) a new set is still acquired, but it is
 * no step: it moves no schedule and is not learned.
 */
TL_API tl_status tl_session_acquire_tensors(tl_session *s, const size_t *tensors, size_t n,
                                            uint32_t timeout_ms, tl_acquired **out);
/* tl_session_prefetch of a set of tensors (as tl_session_acquire_tensors takes them). */
TL_API tl_status tl_session_prefetch_tensors(tl_session *s, const size_t *tensors, size_t n);
/*
 * tl_session_acquire that waits for room: where the range does not fit
 * because other references hold its device's budget (acquired sets, loads
 * in flight), the call waits up to timeout_ms for releases to make room.
 * Waiting acquires form one line per session, served in arrival order: only
 * the first in line tries again (after each release that leaves a tensor
 * unreferenced, each load that ends, and at least every 50 ms), and an
 * acquire with a timeout that needs room while others wait joins the end of
 * the line instead of taking room before them. Acquires with timeout_ms 0
 * and prefetches do not queue: they take what room is free when they come,
 * or fail at once as tl_session_acquire does. A waiting acquire holds no
 * references (what it loaded so far may be evicted meanwhile), so waiting
 * acquires never hold each other up. A range that needs more than its
 * device's budget at once can never fit and fails at once whatever the
 * timeout, saying how much it needs and the budget. Running out of time is
 * TL_ERR_DEVICE_OOM naming the wait, the budget and the bytes held; the
 * stats count waits (acquire_waits) and timeouts (acquire_timeouts). The
 * rule against deadlock: room held by outstanding sets comes back only when
 * they are released, so a thread that holds sets while it waits for more
 * (two threads each holding half of what both need) waits until its
 * timeout; give such waits a timeout, or release before acquiring more.
 * Nothing is left referenced or reserved by a wait that fails.
 */
TL_API tl_status tl_session_acquire_wait(tl_session *s, tl_component c, size_t layer_begin,
                                         size_t layer_end, bool with_other, uint32_t timeout_ms,
                                         tl_acquired **out);
/*
 * Cancel every acquire and prefetch of s in flight when it is called, from
 * any thread (calls that begin after it are not affected). A cancelled
 * acquire returns TL_ERR_CANCELLED wherever it was — waiting for room, for a
 * prefetch into its range, or loading (chunks already being copied finish;
 * none starts once tl_session_cancel has returned) — and leaves nothing
 * referenced: the units it was loading give their memory back, and so do
 * those it loaded completely unless another acquire references them.
 * Prefetch batches in flight stop the same way and their units' memory
 * comes back; copies already queued on a device (asynchronous devices)
 * complete. An acquire waiting for a LoRA update to end returns
 * TL_ERR_CANCELLED once the update ends. The stats count cancelled acquires
 * (acquire_cancels).
 */
TL_API tl_status tl_session_cancel(tl_session *s);
TL_API size_t tl_acquired_count(const tl_acquired *a);
TL_API const tl_session_tensor *tl_acquired_tensor(const tl_acquired *a, size_t i);
/*
 * Part q of acquired tensor i, filled up to out_size bytes (sizeof *out): the
 * way to read parts that holds across ABI versions (indexing
 * tl_session_tensor.parts assumes this header's sizeof). TL_ERR_INVALID_ARG
 * for NULL arguments, out_size 0 or i, q out of range.
 */
TL_API tl_status tl_acquired_part(const tl_acquired *a, size_t i, uint32_t q, tl_session_part *out,
                                  size_t out_size);
/*
 * Drop the references (the tensors stay resident until evicted); frees a.
 * NULL a is fine (TL_OK). Misuse is refused with TL_ERR_INVALID_ARG and
 * changes nothing: a set released before (the library keeps released set
 * headers aside and reuses one only after 1024 later releases, so a stale
 * pointer is recognised until then), a set acquired from another session, a
 * NULL or destroyed session. The rule for device work: once a set is
 * released its device memory may be evicted, overwritten by another load or
 * given back at any moment, so every computation of the engine that reads
 * (or writes) it must be finished before a plain release — or use
 * tl_session_release_fenced.
 */
TL_API tl_status tl_session_release(tl_session *s, tl_acquired *a);
/*
 * A fence of the engine's device work (a CUDA event, a ggml backend
 * synchronisation, a thread join): wait(arg) returns TL_OK once the work is
 * done, or an error status.
 */
typedef tl_status (*tl_fence_wait_fn)(void *arg);
/*
 * Release a while device work that reads its tensors may still be running:
 * the references drop at once (the tensors can be chosen for eviction), but
 * before the memory of a device-tier tensor of the set is saved, freed or
 * reused the session calls wait(arg) — once, on whichever thread needs the
 * memory first, with the session's lock held — and forgets the fence. A
 * tensor released fenced again replaces its fence (the older one is waited
 * for first). Host tiers need no fence. arg must stay valid until it has been
 * waited for or the session is destroyed (which waits for every fence still
 * held). Errors: TL_ERR_INVALID_ARG for NULL arguments and for the misuse
 * tl_session_release refuses (nothing released); a failing older fence's
 * status (the set is released all the same).
 */
TL_API tl_status tl_session_release_fenced(tl_session *s, tl_acquired *a, tl_fence_wait_fn wait,
                                           void *arg);
/*
 * Whether layers [layer_begin, layer_end) of c (and its other tensors when
 * with_other) are where the plan puts them now, copies finished — an acquire
 * of them would neither copy nor wait (*ready true). Never blocks; a prefetch
 * still in flight answers false.
 */
TL_API tl_status tl_session_ready(tl_session *s, tl_component c, size_t layer_begin,
                                  size_t layer_end, bool with_other, bool *ready);
/*
 * Bind tensor i of acquired set a to an engine's ggml tensor (a struct
 * ggml_tensor * made in a context with no_alloc, not a view): its buffer and
 * data are set, as ggml_backend_tensor_alloc sets them, to the bytes the
 * session placed — in the device's memory on a ggml device (a buffer of that
 * device's buffer type: the engine computes there), or, on host tiers (the
 * file's mapping, a RAM copy, a spill copy) and host-pointer devices, in
 * place, wrapped without a copy as a ggml CPU buffer. A tensor bound before
 * is rebound. Its type must be the catalog entry's dtype and its ne the
 * catalog shape reversed (ne[0] innermost, the rest 1); otherwise
 * TL_ERR_INVALID_ARG naming both. A row-split tensor (several parts) is
 * TL_ERR_UNSUPPORTED: bind its parts with tl_session_bind_ggml_part. ggml
 * must be loaded (a ggml device registered), the same ggml the engine uses.
 * The binding, and any wrapper it made, lives until a is released: the
 * engine's computations on it must be finished by then (see
 * tl_session_release). Calls on one set come from one thread at a time.
 */
TL_API tl_status tl_session_bind_ggml(tl_session *s, const tl_acquired *a, size_t i,
                                      void *ggml_tensor);
/*
 * Bind part `part` (0 .. n_parts - 1) of tensor i of set a to a ggml tensor,
 * as tl_session_bind_ggml binds a whole one: the part's rows on the part's
 * device (parts[part].device; row_begin .. row_end of the outermost
 * dimension). The ggml tensor's ne is the catalog shape reversed with
 * ne[n_dims - 1] = row_end - row_begin, so an engine computes a row-split
 * matrix product as one product per device, each giving its rows of the
 * result. A tensor of one part binds as with tl_session_bind_ggml. A part out
 * of range or a misfit is TL_ERR_INVALID_ARG naming the tensor and part.
 * Lifetime and threads as tl_session_bind_ggml.
 */
TL_API tl_status tl_session_bind_ggml_part(tl_session *s, const tl_acquired *a, size_t i,
                                           uint32_t part, void *ggml_tensor);
/*
 * Queue the same work as acquire without waiting and without references,
 * behind demand loads. Tensors that do not fit without evicting referenced
 * or loading ones are skipped (counted in stats.prefetch_skipped).
 */
TL_API tl_status tl_session_prefetch(tl_session *s, tl_component c, size_t layer_begin,
                              size_t layer_end, bool with_other);
/*
 * Evict unreferenced tensors of device `device` (a plan device name) until at
 * least `bytes` are freed (coldest first); *freed says how much was. Frees
 * what it can and returns TL_ERR_DEVICE_OOM when that is less than asked;
 * never loops. UINT64_MAX or tl_session_evict_all: everything unreferenced.
 */
TL_API tl_status tl_session_evict(tl_session *s, const char *device, uint64_t bytes, uint64_t *freed);
TL_API tl_status tl_session_evict_all(tl_session *s, const char *device, uint64_t *freed);

/*
 * --- one device, several sessions ---
 *
 * Every session placing weights on a device draws from that device's one
 * memory manager (made when the first session binds the device, shared by
 * every session of the process). Each session keeps its own budget there;
 * the device may also have a total for all of them (tl_device_set_budget).
 * When an acquire finds the device full for all sessions together (past that
 * total, or the device refuses an allocation while other sessions hold
 * memory there), the unreferenced weights of every session on the device are
 * considered in one order: the lowest priority first (tl_session_set_priority:
 * a model in use now outranks one idle since the last prompt); then, where
 * both sessions have a schedule, the tensor used furthest ahead (steps from
 * each session's position; never again goes first); else the least recently
 * used (one clock for the process). When that is not enough, the device's
 * reclaim callback (tl_device_set_reclaim_callback) is asked to drop the
 * engine's own caches, and the acquire tries again; then it waits
 * (tl_session_acquire_wait, woken when any session releases or evicts on the
 * device) or fails with TL_ERR_DEVICE_OOM. Prefetches take only free room
 * for all sessions. Sessions evict one another's units under each one's own
 * lock, taken one at a time, so no lock order between sessions exists.
 */

/*
 * The session's budget on `device` (a plan device name), for weights and the
 * compute reserve together: the weight budget (tl_session_stats) is bytes
 * less the largest reserve of the components placed there. Applies at once:
 * unreferenced tensors over the new budget are evicted now, the ones still
 * referenced when they are released. TL_ERR_NOT_FOUND for a device the
 * session does not use.
 */
TL_API tl_status tl_session_set_budget(tl_session *s, const char *device, uint64_t bytes);
/*
 * Component c's compute reserve in bytes (the plan's until this is called; an
 * engine that measures its compute buffer says so here, between steps): the
 * weight budget of each device c is placed on becomes that device's budget
 * less the largest reserve placed there, and is enforced as
 * tl_session_set_budget does.
 */
TL_API tl_status tl_session_set_reserve(tl_session *s, tl_component c, uint64_t bytes);
/*
 * The session's priority on its devices (0 at creation; higher is kept
 * longer): when a device is full for all sessions, unreferenced tensors of
 * lower-priority sessions are evicted before any of a higher one. Any thread,
 * any time.
 */
TL_API tl_status tl_session_set_priority(tl_session *s, int priority);

/*
 * Device d's budget for all sessions together (0: none, the default — then
 * each session's own budget and the device's memory bound it). Lowering it
 * evicts unreferenced tensors of the device's sessions in the order above
 * until the sessions' bytes fit, as far as they go; the rest fits at their
 * next acquires. Thread-safe.
 */
TL_API tl_status tl_device_set_budget(tl_device *d, uint64_t bytes);
/* d's budget for all sessions (0: none) and the bytes its sessions use there now; either may be NULL. */
TL_API tl_status tl_device_budget(tl_device *d, uint64_t *bytes, uint64_t *used);
/*
 * Make `bytes` free on d (ComfyUI's free_memory): when the room there — what
 * the device reports free, and no more than its budget for all sessions
 * leaves — is less, evict unreferenced tensors of every session on d in the
 * order above until it is enough or none is left, then ask the reclaim
 * callback for the rest. *freed (may be NULL) says how many bytes tierload
 * evicted. TL_OK when the room is there at the end, else TL_ERR_DEVICE_OOM
 * saying how much there is. Call it holding no acquired set you want kept:
 * referenced tensors are never evicted. Thread-safe.
 */
TL_API tl_status tl_device_make_room(tl_device *d, uint64_t bytes, uint64_t *freed);
/*
 * Asked, on the thread that needs the room and with no lock of the library
 * held (it may call the library), to free about `bytes` of device d that the
 * engine holds itself (caches, compute buffers); returns the bytes it freed.
 */
typedef uint64_t (*tl_device_reclaim_fn)(void *user, tl_device *d, uint64_t bytes);
/*
 * Set (or, with NULL, clear) d's reclaim callback: called when eviction of
 * every session's unreferenced tensors cannot make the room an acquire or
 * tl_device_make_room needs. user is passed back. Thread-safe.
 */
TL_API tl_status tl_device_set_reclaim_callback(tl_device *d, tl_device_reclaim_fn fn, void *user);
/* The engine wrote into tensor i where it lives (it must be acquired): it is dirty now. */
TL_API tl_status tl_session_mark_dirty(tl_session *s, size_t tensor);
/*
 * The model's bytes of tensor i changed (patched or unpatched in the
 * mapping, e.g. a LoRA applied or removed): drop every copy the session
 * holds (device, RAM, spill) so the next acquire loads the new bytes.
 * TL_ERR_INVALID_ARG while the tensor is acquired.
 */
TL_API tl_status tl_session_refresh(tl_session *s, size_t tensor);
/*
 * The model's bytes of these tensors are about to change (a LoRA merged into
 * the mapping): drop every copy, as tl_session_refresh, and make them busy
 * until tl_session_update_end: meanwhile an acquire that includes one of
 * them waits (before taking any reference), prefetch skips them and
 * tl_session_ready answers false; acquires of other tensors go on. Begin
 * fails with TL_ERR_INVALID_ARG, changing nothing, while one of them is
 * acquired or being loaded. Updates may overlap (a tensor is busy until every
 * update that began on it has ended). The thread that began an update must
 * end it before it acquires those tensors itself. End without a matching
 * begin is TL_ERR_INVALID_ARG. tl_lora_set_* bracket their merges with these.
 */
TL_API tl_status tl_session_update_begin(tl_session *s, const size_t *tensors, size_t n);
TL_API tl_status tl_session_update_end(tl_session *s, const size_t *tensors, size_t n);

/*
 * One step of a known schedule: an acquire of these layers (as
 * tl_session_acquire's args), or of a group: component TL_COMP_GROUP,
 * layer_begin the group's id, layer_end id + 1, with_other false.
 */
typedef struct tl_session_step {
    tl_component component;
    size_t layer_begin, layer_end;
    bool with_other;
} tl_session_step;
/*
 * The component of a step that names a group (tl_session_group). Every call
 * that takes a component and a layer range takes a group that way too:
 * tl_session_acquire, _acquire_wait, _prefetch, _ready (layer_begin the id,
 * layer_end id + 1, with_other false; anything else is TL_ERR_INVALID_ARG),
 * and schedules and loops take its steps.
 */
#define TL_COMP_GROUP ((tl_component)64)
#define TL_SESSION_MAX_GROUPS 4096u
/*
 * Declare a group: a name (copied; NULL: none) and its tensors (catalog
 * indexes, any components) in the engine's compute order, which is the order
 * their loads are issued in; a tensor listed twice counts once. *out is the
 * step that names it, for acquires, prefetches, schedules and loops: a
 * graph segment's weights (stable-diffusion.cpp's prepare_params), a block
 * that is not a layer, MoE experts. Groups may overlap one another and layer
 * ranges; eviction by next use counts each tensor's next use over all the
 * steps that take it, and tl_session_learn learns group steps as it learns
 * layer ranges. The same tensors as a group the session has (declared, or
 * acquired as a set) are that group: its id and order stay, and the name is
 * given if it had none. Ids count from 0 per session. At most
 * TL_SESSION_MAX_GROUPS groups, whose bookkeeping is bounded by 8 words per
 * tensor part of the model plus 4096: past either, TL_ERR_UNSUPPORTED.
 * n 0 or an index past the model: TL_ERR_INVALID_ARG.
 */
TL_API tl_status tl_session_group(tl_session *s, const char *name, const size_t *tensors, size_t n,
                                  tl_session_step *out);
/* Group id's name (valid until the session is destroyed); NULL when it has none or no such group. */
TL_API const char *tl_session_group_name(const tl_session *s, size_t id);
/*
 * The order acquires will come in (repeats written out). Each acquire moves
 * the schedule to the next step that equals it; eviction then takes the
 * tensor used furthest in the future.
 */
TL_API tl_status tl_session_set_schedule(tl_session *s, const tl_session_step *steps, size_t n);
/*
 * A pass the engine repeats (a diffusion step's blocks, a token's layers), in
 * its order: the schedule becomes this pass over and over, until another
 * schedule, loop or learning replaces it (n 0: no schedule). Acquires move
 * through it as through a schedule (an acquire skips forward to the next
 * step that equals it, so steps the engine skips — cache-based step
 * skipping — cost nothing but the difference); a step not in the pass
 * leaves the position as it is.
 */
TL_API tl_status tl_session_set_loop(tl_session *s, const tl_session_step *steps, size_t n);
/*
 * The step the schedule (given, looped or learned) expects next: what an
 * engine prefetches once it has released the current one (a prefetch while
 * the current step is still held can only evict what is needed sooner).
 * TL_ERR_NOT_FOUND without a schedule or at its end.
 */
TL_API tl_status tl_session_next_step(tl_session *s, tl_session_step *out);
/*
 * Learn the pass instead of being told it: with on, the schedule is cleared
 * and acquires are recorded until one repeats an earlier step and the next
 * acquire confirms the repetition (it equals the step recorded after that
 * one); from the earliest repeated step to the repetition is the pass, which
 * then works as tl_session_set_loop's. Until then eviction is least recently
 * used. A pass must repeat within 65,536 acquires, else learning stops and
 * no schedule is kept. Off: learning stops, a learned loop is dropped.
 * tl_session_set_schedule and tl_session_set_loop end learning.
 */
TL_API tl_status tl_session_learn(tl_session *s, bool on);
/*
 * Bytes that furthest-next-use eviction with full knowledge of the schedule
 * moves onto the devices under the session's budgets (the offline optimum
 * the run report prints beside what was moved). Needs a schedule.
 */
TL_API tl_status tl_session_optimal_bytes(const tl_session *s, uint64_t *bytes);

typedef struct tl_session_device_stats {
    char name[32];
    uint64_t budget, used, peak; /* weight bytes on the device */
    bool pinned;                 /* the device has a pinned tier (tl_device_info.pinned) */
} tl_session_device_stats;

typedef struct tl_session_stats {
    uint64_t moved[TL_TIER_COUNT][TL_TIER_COUNT]; /* bytes moved from tier [a] to tier [b] */
    uint64_t bytes_moved;                         /* sum of moved */
    uint64_t loads, drops, spills, evictions;     /* tensor parts */
    uint64_t prefetch_hits, prefetch_misses, prefetch_skipped;
    uint64_t oom_recoveries;
    uint64_t host_used, host_peak, host_budget; /* RAM copies */
    uint64_t spill_used, spill_peak;            /* bytes in the spill file */
    uint64_t pinned_used, pinned_peak, pinned_cap; /* pinned host copies (0 cap: no pinned tier) */
    uint64_t staging_bound;
    size_t n_devices;
    tl_session_device_stats devices[TL_PLAN_MAX_DEVICES];
    uint64_t acquire_waits;    /* acquires that waited for room (tl_session_acquire_wait) */
    uint64_t acquire_timeouts; /* ... and ran out of time */
    uint64_t acquire_cancels;  /* acquires cancelled (tl_session_cancel, the progress callback) */
    /* tensor parts made by an at-load LoRA set as they loaded (tl_lora_set_create_at_load) */
    uint64_t lora_loads;
    /* tensor parts loaded again because tl_session_update_begin changed their tensor since they
       were last loaded (a LoRA set's add, remove or rescale) */
    uint64_t lora_reloads;
    /* at-load LoRA on Q8_0 / Q4_0 weights requantized: the largest |requantized - F32 merge| of
       an element so far (0 when none was requantized) */
    double lora_max_error;
    /* of lora_loads, the tensor parts whose LoRAs their ggml device merged
       (TL_LORA_ON_DEVICE); the others were merged on the host */
    uint64_t lora_device_merges;
} tl_session_stats;
TL_API tl_status tl_session_stats_get(const tl_session *s, tl_session_stats *out, size_t out_size);

typedef enum tl_session_event_kind {
    TL_EVENT_LOAD = 0,     /* bytes moved onto a device or into RAM */
    TL_EVENT_DROP = 1,     /* clean bytes dropped */
    TL_EVENT_SPILL = 2,    /* dirty bytes moved down a tier */
    TL_EVENT_PREFETCH = 3, /* a load queued ahead of use */
    TL_EVENT_ACQUIRE = 4,
    TL_EVENT_RELEASE = 5,
} tl_session_event_kind;

/* One entry of the event log (what a timeline picture is drawn from). */
typedef struct tl_session_event {
    double t; /* seconds: the device's model clock for sim devices, else wall time since creation */
    tl_session_event_kind kind;
    tl_component component;
    int32_t layer; /* -1: other tensors or several layers */
    tl_tier from, to;
    int32_t device; /* plan device index, -1 for the host */
    uint64_t bytes;
} tl_session_event;
/* Where the event log stands. Entries are numbered from 0 at the session's creation. */
typedef struct tl_session_log {
    uint64_t first;   /* number of the oldest entry kept */
    uint64_t next;    /* number the next entry gets: first + kept entries */
    uint64_t dropped; /* entries pushed out by the bound (or lost for want of memory) */
    size_t cap;       /* the bound in entries; 0 when the log is off */
} tl_session_log;
/*
 * Copy the log's entries numbered from `from` on (from the oldest kept when
 * `from` is older) into out, at most cap of them; returns how many. *log
 * (may be NULL) says where the log stood at that moment: out[0] is entry
 * max(from, log->first). The copy is taken under the session's lock, so it
 * is consistent while other threads work on s. A reader following the log
 * passes the previous log.next as `from`; entries it missed show as
 * log->first > from. event_size is sizeof *out (the stride between
 * entries) and log_size sizeof *log; an event_size of 0 copies nothing.
 */
TL_API size_t tl_session_events_copy(const tl_session *s, uint64_t from, tl_session_event *out,
                                     size_t cap, size_t event_size, tl_session_log *log,
                                     size_t log_size);
/*
 * Forget every entry kept (numbers go on from where they were; dropped is
 * not reset) and give the log's memory back.
 */
TL_API tl_status tl_session_events_clear(tl_session *s);
/*
 * Check every budget and reference count now (a debugging aid and what the
 * tests call): device and host bytes against the units, budgets, and every
 * reference against the outstanding sets (and acquires in flight) holding it.
 * TL_ERR_INTEGRITY naming what differs.
 */
TL_API tl_status tl_session_check(const tl_session *s);


/* --- running a pipeline through a session --- */

/*
 * What runs at each acquired step: an engine's compute. phase is the
 * pipeline item ("diffusion"), pass its repeat (0-based), layer the layer
 * acquired (TL_ALL_LAYERS when the whole component is, TL_NOT_FOUND for the
 * component's other tensors held through a streamed phase). A non-TL_OK
 * return stops the run with that status.
 */
typedef tl_status (*tl_run_step_fn)(void *user, tl_session *s, const char *phase, uint32_t pass,
                                    tl_component c, size_t layer, const tl_acquired *a);

typedef enum tl_run_compute {
    TL_RUN_COMPUTE_NONE = 0, /* no compute: the check (and the step callback) only */
    TL_RUN_COMPUTE_GGML = 1, /* matrix products with ggml on the acquired weights */
} tl_run_compute;

typedef struct tl_run_options {
    uint32_t size; /* sizeof(tl_run_options): set by tl_run_options_init */
    /*
     * The pipeline: comma-separated phases run in order; a phase is one or
     * more components joined by '+', optionally "*N" to run it N times
     * ("cond,diffusion*20,vae"). NULL = the plan's phases, diffusion and
     * controlnet phases `steps` times.
     */
    const char *pipeline;
    bool no_verify;   /* skip the hash check of every acquired byte */
    bool no_prefetch; /* streamed layers: no prefetch of layer k+1 while k is in use */
    bool stream_all;  /* acquire layer by layer in every mode, not only where the plan streams */
    /* modelled compute on sim devices: seconds per GiB of weights a step uses (sim clocks only) */
    double sim_compute_s_per_gib;
    tl_run_step_fn step;
    void *user;
    /*
     * Real compute at each step (after the check, before step): with
     * TL_RUN_COMPUTE_GGML every acquired 2-D weight of a type ggml
     * multiplies (quantized ones included) gives y = W . x with ggml_mul_mat
     * for a fixed random x, one graph per step and device, on the device
     * where the weight lives: a ggml device computes in place (host memory it
     * can use wrapped without a copy), weights on host tiers are computed on
     * ggml:CPU straight from where they are, weights on other devices (sim,
     * cuda) from a device-to-host copy on ggml:CPU. Each y is compared with
     * the product computed on ggml:CPU from the model's own bytes (the
     * mapping): exactly where both ran on ggml:CPU, within a relative 1e-3
     * elsewhere. Mismatches are counted, not errors. ggml is loaded with
     * tl_device_ggml_discover(ggml_dir) (NULL: TIERLOAD_GGML_DIR); without it
     * the run fails with TL_ERR_NOT_FOUND and the reason.
     */
    tl_run_compute compute;
    const char *ggml_dir;
    int compute_threads; /* threads of ggml's CPU backend; 0 = ggml's default */
    uint32_t steps;      /* passes of the default pipeline's diffusion/controlnet phases; 0 = 20
                            (plan with the same tl_plan_options.steps) */
    uint32_t steps2;     /* passes of its diffusion2 phase; 0 = steps (tl_plan_options.steps2) */
} tl_run_options;
TL_API void tl_run_options_init(tl_run_options *o);

/*
 * How many times a pipeline spec (tl_run_options.pipeline's syntax) runs
 * each component: passes[c] is the sum of the repeats of the phases that
 * name c (0 when none does). The planner's tl_plan_options.steps is the
 * diffusion (and controlnet) count; plan with it so that the plan's bytes
 * per run are the run's. TL_ERR_INVALID_ARG for a malformed spec.
 */
TL_API tl_status tl_run_pipeline_passes(const char *pipeline, uint32_t passes[TL_COMP_COUNT]);

typedef struct tl_run_phase {
    char name[64];
    uint32_t pass;
    double seconds;        /* wall clock */
    double model_seconds;  /* the first sim device's clock (0 without one) */
    uint64_t bytes_moved;  /* every tier pair */
    uint64_t bytes_to_devices;
    uint64_t loads, evictions, drops, spills, prefetch_hits, prefetch_misses;
    uint64_t tensors_checked, hash_mismatches;
    double compute_seconds; /* wall clock of the products on the placed weights (compute ggml) */
    uint64_t products;           /* matrix products computed (one per weight part) */
    uint64_t product_mismatches; /* products that differ from the file's bytes' product */
} tl_run_phase;

typedef struct tl_run_report tl_run_report;

/*
 * Run the pipeline through session s: sets the session's schedule to the
 * acquires the run will make, then for each phase acquires each component
 * whole — or, where the plan streams it (or stream_all), its other tensors
 * for the phase and its layers one by one, prefetching the next — calls
 * step, checks every acquired byte (xxHash64 where it lives — on a device
 * through a bounded staging copy — against the model's bytes: the file's,
 * or the patched mapping's), and releases. Hash mismatches are counted, not
 * errors. *out is the caller's to destroy.
 */
TL_API tl_status tl_run_pipeline(tl_session *s, const tl_run_options *o, tl_run_report **out);
TL_API void tl_run_report_destroy(tl_run_report *r);
TL_API size_t tl_run_report_phase_count(const tl_run_report *r);
TL_API const tl_run_phase *tl_run_report_phase(const tl_run_report *r, size_t i);
/* The sum over phases (name "total"). */
TL_API const tl_run_phase *tl_run_report_total(const tl_run_report *r);
/* Bytes the offline optimum moves onto devices for this run (tl_session_optimal_bytes). */
TL_API uint64_t tl_run_report_optimal_bytes(const tl_run_report *r);


/* ------------------------------------------------------------------------ */
/* LoRA: low-rank weight deltas merged into a model's weights                */
/* ------------------------------------------------------------------------ */

/*
 * A LoRA file (safetensors or GGUF) read into modules: each module is a
 * weight delta for one model tensor, as lora_down/lora_up (+ alpha),
 * lora_A/lora_B, LoHa (hada_w1_a/b, hada_w2_a/b) or LoKr (lokr_w1[_a/_b],
 * lokr_w2[_a/_b]) tensors. Module names may be the model's own tensor names
 * (without ".weight"), kohya names (lora_unet_..., lora_te_..., lora_te1_...,
 * lora_te2_..., dots written as underscores), or kohya/diffusers names of
 * SD1.x/SDXL UNet modules (down_blocks.N.attentions.M...) for a checkpoint
 * that uses the original (ldm) names (input_blocks.K.1...): the same mapping
 * stable-diffusion.cpp performs. The file is mapped read-only and never
 * written. A LoRA is immutable after open and may be shared between threads.
 */
typedef struct tl_lora tl_lora;
TL_API tl_status tl_lora_open(const char *path, tl_lora **out);
TL_API void tl_lora_close(tl_lora *l);
/* Number of modules (weight deltas) in the file. */
TL_API size_t tl_lora_module_count(const tl_lora *l);

#define TL_LORA_REPORT_NAMES 8
/* What applying (or matching) a LoRA found. */
typedef struct tl_lora_report {
    size_t n_modules;   /* modules in the LoRA */
    size_t n_matched;   /* modules that matched a model tensor (and were merged by apply) */
    size_t n_unmatched; /* modules or keys that matched no tensor, or were not understood */
    char unmatched[TL_LORA_REPORT_NAMES][128]; /* the first unmatched names */
} tl_lora_report;

/*
 * Which modules of l match tensors of m (nothing is changed). r (r_size =
 * sizeof *r) may be NULL when only the status matters. Never fails for unmatched keys.
 */
TL_API tl_status tl_lora_match(const tl_model *m, const tl_lora *l, tl_lora_report *r,
                               size_t r_size);
/*
 * Merge l into m in place: W' = W + scale * (alpha / rank) * (up . down)
 * (LoHa: the Hadamard product of its two low-rank products; LoKr: their
 * Kronecker product), for linear and conv weights (conv kernels as
 * [out, in*kh*kw]), computed in F32 and rounded once to the weight's dtype
 * (F32, F16, BF16). The model must be open writable; bytes are written
 * through tl_model_tensor_data_mut (the tensor becomes patched). A weight of
 * another dtype is TL_ERR_UNSUPPORTED naming tensor and type, and a shape
 * that does not fit is TL_ERR_FORMAT; both are checked for every module
 * before any byte changes. Nothing non-finite is written: a NaN or infinite
 * scale is TL_ERR_INVALID_ARG; a non-finite alpha or factor value, and a
 * result that overflows the weight's type, are TL_ERR_FORMAT naming the
 * module, found by a dry run of every module before any byte changes. A
 * module naming a tensor another module of l already targets, a module with
 * two parts of one kind, and a name that fits two tensors are not applied
 * and are listed in r's unmatched names with the reason. Applying the same
 * LoRA twice adds it twice.
 */
TL_API tl_status tl_lora_apply(tl_model *m, const tl_lora *l, float scale, tl_lora_report *r,
                               size_t r_size);
/*
 * For each module k of l, targets[k] gets the model tensor it merges into
 * (TL_NOT_FOUND when none); targets has tl_lora_module_count(l) entries.
 */
TL_API tl_status tl_lora_targets(const tl_model *m, const tl_lora *l, size_t *targets);
/*
 * Merge module k of l into tensor t only (t as tl_lora_targets gave it):
 * what tl_lora_apply does for one module, for callers that merge tensor by
 * tensor with bounded memory (tierload merge).
 */
TL_API tl_status tl_lora_apply_module(tl_model *m, const tl_lora *l, size_t k, size_t t, float scale);

/*
 * The LoRAs applied to one model (and, optionally, the session running it):
 * add, remove and rescale. A removal or a new scale makes every affected
 * tensor the file's again (tl_model_tensor_unpatch: no copy of the original
 * weights is kept anywhere) and re-applies the LoRAs that remain, in order.
 * With a session, every affected tensor's copies are dropped and the
 * tensors are busy while their bytes change (tl_session_update_begin / end):
 * an acquire of one from another thread waits until the merge is done and
 * then loads the merged bytes, never a half-merged one; an affected tensor
 * that is acquired makes the call fail with TL_ERR_INVALID_ARG before
 * anything changes. The LoRAs must outlive the set; calls on one set come
 * from one thread at a time.
 */
typedef struct tl_lora_set tl_lora_set;
TL_API tl_status tl_lora_set_create(tl_model *m, tl_session *s, tl_lora_set **out);
/*
 * A set applied to session s's weights as they load, with nothing merged
 * ahead: s's model may be read-only, and no private memory is spent beyond
 * the loaded copies. When a unit of a tensor the set targets loads from the
 * file (acquire; prefetch leaves such units to the acquire), its rows are
 * read into host memory (the device's own on host-addressed devices, else a
 * buffer of at most 16 MiB uploaded chunk by chunk), merged there by the
 * merge kernel (that unit's rows, all cores), each LoRA in the order added,
 * and rounded to the unit's type (the tensor's, or the session's
 * tl_session_options.dtype); RAM and spill copies hold the merged bytes.
 * F32 / F16 / BF16 weights: the bytes tl_lora_apply gives for the same LoRAs
 * in the same order, bit for bit. Q8_0 / Q4_0 weights: dequantized, merged
 * in F32, requantized to their type (stats lora_max_error: the largest
 * difference from the F32 merge), or kept at F16 with TL_LORA_QUANT_AS_F16
 * (tl_session_set_dtype F16 on each as a LoRA first targets it; it stays F16).
 * Add refuses, before anything changes, a target of another type
 * (TL_ERR_UNSUPPORTED naming tensor and type) or one the plan keeps in host
 * memory (the mapping itself). Add, remove and rescale drop the copies of
 * exactly the tensors the LoRA targets (refused with TL_ERR_INVALID_ARG while
 * one is acquired, as for merged sets), so their next acquire loads them
 * again (stats lora_reloads); a module whose merge overflows the weight's
 * type fails that load (TL_ERR_FORMAT naming it). One such set per session;
 * destroy it before the session (copies still acquired then keep their bytes
 * until evicted).
 *
 * TL_LORA_ON_DEVICE: a unit on a ggml device (tl_device_ggml_discover) whose
 * weight keeps its F32 / F16 / BF16 type and whose LoRAs are all plain
 * low-rank modules (at most 16 on it) is merged by that device instead: the
 * file's rows are copied into the unit's memory, the LoRA factors uploaded,
 * and a ggml graph adds scale x alpha/rank x (up . down) for each LoRA in
 * order in F32, rounding to the weight's type after each, straight into the
 * unit's memory (stats lora_device_merges counts these units). The bytes
 * then differ from tl_lora_apply's only where the products' F32 sums, taken
 * in ggml's order, round differently (measured on ggml:CPU: F16 / BF16 at
 * most 1 ulp, F32 about 1e-7 of the largest |W'|).
 * Other units (other devices, Q8_0 / Q4_0, LoHa / LoKr, a unit the device
 * cannot merge or whose result is not finite, which the host then refuses
 * naming the module) are merged on the host as above. The device needs, for
 * the merge, F32 temporaries of up to 8 MiB and the factors beside the unit,
 * outside the session's budget.
 */
#define TL_LORA_QUANT_AS_F16 1u
#define TL_LORA_ON_DEVICE 2u
TL_API tl_status tl_lora_set_create_at_load(tl_session *s, uint32_t flags, tl_lora_set **out);
/* Free the set; the model keeps its merged bytes (at load: the session its copies). NULL is fine. */
TL_API void tl_lora_set_destroy(tl_lora_set *set);
TL_API tl_status tl_lora_set_add(tl_lora_set *set, const tl_lora *l, float scale, tl_lora_report *r,
                                 size_t r_size);
TL_API tl_status tl_lora_set_remove(tl_lora_set *set, const tl_lora *l);
TL_API tl_status tl_lora_set_scale(tl_lora_set *set, const tl_lora *l, float scale);

/* Spill buffers for host programs                                           */
/* ------------------------------------------------------------------------ */

/*
 * A spill buffer moves a host program's bytes (a tensor it wants out of RAM)
 * into an unnamed file and maps them back: the file is created with
 * O_TMPFILE (or created and unlinked at once) in the spill directory, so
 * nothing is left on disk once the buffer is destroyed or the process dies.
 * tl_spill_write writes in chunks of chunk_size straight from the caller's
 * memory (no copy of the whole buffer is ever made); tl_spill_map maps the
 * file MAP_PRIVATE writable: reads come from the file, writes make private
 * copies of the pages they touch and never reach the file. The mapping and
 * the descriptor live until tl_spill_destroy. Not thread-safe per buffer.
 */
typedef struct tl_spill tl_spill;

#define TL_SPILL_DEFAULT_CHUNK (16ull << 20)

typedef struct tl_spill_options {
    uint32_t size;       /* sizeof(tl_spill_options), set by tl_spill_options_init */
    const char *dir;     /* NULL = TIERLOAD_SPILL_DIR, else TMPDIR, else /tmp */
    uint64_t chunk_size; /* bytes per write; 0 = TL_SPILL_DEFAULT_CHUNK */
} tl_spill_options;

/* Defaults (and size). */
TL_API void tl_spill_options_init(tl_spill_options *o);
/* An unnamed spill file of nbytes > 0 (zeros until written). opts may be NULL. */
TL_API tl_status tl_spill_create(uint64_t nbytes, const tl_spill_options *opts, tl_spill **out);
/* Write n bytes of src at off, chunk by chunk; only before tl_spill_map. */
TL_API tl_status tl_spill_write(tl_spill *s, uint64_t off, const void *src, uint64_t n);
/* Map the file (once; later calls return the same address) into *data. */
TL_API tl_status tl_spill_map(tl_spill *s, void **data);
/* Bytes of the buffer. */
TL_API uint64_t tl_spill_size(const tl_spill *s);
/* The file's descriptor (owned by the buffer; for diagnostics). */
TL_API int tl_spill_fd(const tl_spill *s);
/* Unmap, close the descriptor (the file goes with it) and free. NULL is fine. */
TL_API void tl_spill_destroy(tl_spill *s);

#ifdef __cplusplus
}
#endif

#endif /* TIERLOAD_H */
