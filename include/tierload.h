/*
 * tierload.h — the whole public API of libtierload.
 *
 * tierload keeps the weights of large models in memory: it reads model files
 * (GGUF, safetensors, sharded checkpoints, diffusers folders) into a catalog,
 * plans where each component should live (GPU, pinned RAM, RAM, the file's own
 * mapping, spill files) and moves the bytes there under hard memory bounds.
 *
 * Conventions (one everywhere):
 *   - names are tl_<noun>_<verb>; handles are opaque and come in open/close
 *     pairs;
 *   - every fallible call returns a tl_status; on failure tl_last_error()
 *     returns a message (thread-local, valid until the next failing call on the
 *     same thread) that names the file, and the tensor or key, involved;
 *   - the library never exits, aborts or prints on its own;
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

#define TL_VERSION_MAJOR 0
#define TL_VERSION_MINOR 1
#define TL_VERSION_PATCH 0

/* Library version as "MAJOR.MINOR.PATCH". */
const char *tl_version(void);

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
    TL_ERR_INTEGRITY = 12,  /* bytes differ from what they should be (--verify) */
} tl_status;

/* Short constant name of a status ("TL_ERR_FORMAT"). */
const char *tl_status_name(tl_status s);

/* Message of the last failure on this thread ("" when none). */
const char *tl_last_error(void);

/* ------------------------------------------------------------------------ */
/* Data types                                                                */
/* ------------------------------------------------------------------------ */

/*
 * One enum for every element type of both formats. Values 0..39 are ggml's
 * own type ids (so a GGUF type id is a tl_dtype); types only safetensors has
 * start at 100. Removed ggml ids (4, 5, 31..33, 36..38) are not valid.
 */
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
    TL_DTYPE_INVALID = -1,
} tl_dtype;

/* Upper-case name ("Q4_K", "IQ4_NL", "F8_E4M3"); NULL for an invalid type. */
const char *tl_dtype_name(tl_dtype t);
/* Parse a name (case-insensitive); TL_DTYPE_INVALID when unknown. */
tl_dtype tl_dtype_from_name(const char *name);
/* Elements per block (1 for plain types, 32 or 256 for quantized ones). */
uint32_t tl_dtype_block_elems(tl_dtype t);
/* Bits per block (bits, so that F4 and F6 types are exact). 0 when invalid. */
uint32_t tl_dtype_block_bits(tl_dtype t);
/*
 * Exact byte size of n elements of type t. Fails (returns false) when n is
 * not a whole number of blocks, not a whole number of bytes, or overflows.
 */
bool tl_dtype_nbytes(tl_dtype t, uint64_t n, uint64_t *out);

/* ------------------------------------------------------------------------ */
/* The model catalog                                                         */
/* ------------------------------------------------------------------------ */

#define TL_MAX_DIMS 8

typedef enum tl_format { TL_FORMAT_GGUF = 0, TL_FORMAT_SAFETENSORS = 1 } tl_format;

/* Pipeline components a tensor belongs to (from its name, see tl_component_of). */
typedef enum tl_component {
    TL_COMP_DIFFUSION = 0,
    TL_COMP_COND = 1,
    TL_COMP_VAE = 2,
    TL_COMP_CONTROLNET = 3,
    TL_COMP_OTHER = 4,
    TL_COMP_COUNT = 5,
} tl_component;

/* "diffusion", "cond", "vae", "controlnet", "other". */
const char *tl_component_name(tl_component c);
/* Parse a component name or alias (dit, unet, clip, te, llm, t5xxl, ...); -1 when unknown. */
int tl_component_from_name(const char *name);
/* The component of a tensor name, by the prefix-rule table. */
tl_component tl_component_of(const char *tensor_name);
/*
 * The layer (block index) of a tensor name: "blocks.12." -> 12,
 * "input_blocks.4." -> 4, "blk.3." -> 3; -1 when the name has none. When
 * key_len is not NULL it receives the length of the name's prefix that
 * identifies the block ("model.diffusion_model.input_blocks.4"), so that
 * callers can tell input_blocks.4 from output_blocks.4.
 */
int32_t tl_layer_of(const char *tensor_name, size_t *key_len);

typedef struct tl_file_info {
    const char *path;     /* as opened (absolute or relative as the caller gave it) */
    tl_format format;
    int32_t version;      /* GGUF version; -1 for safetensors */
    uint64_t size;        /* file size in bytes */
    uint64_t data_offset; /* absolute offset of the data section */
    uint32_t alignment;   /* GGUF alignment; 0 for safetensors */
    uint64_t n_tensors;
} tl_file_info;

typedef struct tl_tensor_info {
    const char *name;     /* full name, including any component prefix added on open */
    tl_dtype dtype;
    uint32_t n_dims;
    int64_t shape[TL_MAX_DIMS]; /* outermost dimension first, for both formats */
    uint32_t file;        /* index into the model's files */
    uint64_t offset;      /* absolute byte offset in that file */
    uint64_t nbytes;      /* exact size in bytes */
    uint64_t n_elements;
    tl_component component;
    int32_t layer;        /* block index, -1 when none */
    uint32_t layer_key_len; /* length of the name prefix naming the block (0 when none) */
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
const char *tl_meta_type_name(tl_meta_type t);

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

typedef struct tl_model tl_model;

/* Page-cache hints for mappings (tl_model_options.map_flags, TIERLOAD_MMAP_FLAGS). */
enum {
    TL_MAP_SEQUENTIAL = 1u << 0, /* madvise(MADV_SEQUENTIAL) */
    TL_MAP_WILLNEED = 1u << 1,   /* madvise(MADV_WILLNEED) */
    TL_MAP_POPULATE = 1u << 2,   /* MAP_POPULATE: fault every page in on open */
    TL_MAP_DONTNEED = 1u << 3,   /* on close: MADV_DONTNEED + POSIX_FADV_DONTNEED, pages leave the cache */
};

/*
 * Parse a comma list of hint names ("sequential,willneed,populate,dontneed")
 * into TL_MAP_* flags. Empty or NULL gives 0.
 */
tl_status tl_map_flags_parse(const char *list, unsigned *flags);

typedef struct tl_model_options {
    unsigned map_flags; /* TL_MAP_*; when 0, TIERLOAD_MMAP_FLAGS from the environment is used */
    bool writable;      /* map copy-on-write writable: patches stay in this process, never reach the file */
    /*
     * Optional, one per path (NULL entries allowed): a prefix added to every
     * tensor name of that path, as stable-diffusion.cpp does for files given
     * with --vae / --clip_l / --t5xxl ("first_stage_model.", "text_encoders.clip_l.").
     */
    const char *const *prefixes;
} tl_model_options;

/*
 * Open model files into one catalog. Each path may be a GGUF file, a
 * safetensors file, a "*.safetensors.index.json" shard index, or a folder (a
 * diffusers folder with model_index.json, a folder with one shard index, or a
 * folder of .gguf / .safetensors files). Every file is mapped once,
 * MAP_PRIVATE. Tensor names must be unique across the whole catalog.
 * opts may be NULL.
 */
tl_status tl_model_open(const char *const *paths, size_t n_paths, const tl_model_options *opts,
                        tl_model **out);
/* Close: unmap every file (applying TL_MAP_DONTNEED if asked) and free. NULL is fine. */
void tl_model_close(tl_model *m);

size_t tl_model_file_count(const tl_model *m);
const tl_file_info *tl_model_file(const tl_model *m, size_t i);
size_t tl_model_tensor_count(const tl_model *m);
const tl_tensor_info *tl_model_tensor(const tl_model *m, size_t i);
/* Index of a tensor by exact name; -1 when absent. */
int64_t tl_model_find(const tl_model *m, const char *name);

/* Pointer to a tensor's bytes inside its file's mapping (zero-copy). */
const void *tl_model_tensor_data(const tl_model *m, size_t i);
/* Writable pointer; only for models opened with writable = true (else NULL). */
void *tl_model_tensor_data_mut(tl_model *m, size_t i);

size_t tl_model_meta_count(const tl_model *m);
const tl_meta *tl_model_meta(const tl_model *m, size_t i);
/* Index of a metadata key (first file that has it); -1 when absent. */
int64_t tl_model_meta_find(const tl_model *m, const char *key);
/*
 * Element j of array entry i. Numbers come widened in out->v, strings as
 * (ptr, len); out->type is the element type. Nested arrays are not indexable
 * (TL_ERR_UNSUPPORTED).
 */
tl_status tl_model_meta_array_get(const tl_model *m, size_t i, uint64_t j, tl_meta *out);

/* Fraction (0..1) of a file's pages resident in the page cache, from mincore. */
tl_status tl_model_file_residency(const tl_model *m, size_t file, double *fraction);
/* Apply page-cache hints (TL_MAP_SEQUENTIAL / WILLNEED / DONTNEED now) to every mapping. */
tl_status tl_model_advise(tl_model *m, unsigned map_flags);
/* Open file descriptor of a file (read-only), for loaders; owned by the model. */
int tl_model_file_fd(const tl_model *m, size_t file);
/* Base address of a file's mapping (its byte 0). */
const void *tl_model_file_map(const tl_model *m, size_t file);

/* ==== devices (issue 4) ==== */

/* ==== planner (issue 5) ==== */

/* ==== loading and memory accounting (issue 3) ==== */

#ifdef __cplusplus
}
#endif

#endif /* TIERLOAD_H */
