/*
 * cmd_mkmodel.c — `tierload mkmodel`: write a synthetic model file.
 *
 * Benchmarks, the demo and users who want to try placement without
 * downloading weights need model files of a chosen size, tensor count and
 * naming scheme. This writes a valid GGUF v3 or safetensors file whose tensor
 * names follow a profile (an llama.cpp LLM, or an SDXL-like pipeline with
 * diffusion / text-encoder / VAE components in SDXL's proportions), filled
 * with deterministic pseudo-random bytes (so loads can be verified), streamed
 * in bounded chunks. The header comes from the library's writer (tl_writer_*).
 *
 * Profile llama writes a model llama.cpp itself loads (GGUF only): the
 * llama architecture's hyperparameter keys, a minimal SentencePiece-style
 * vocabulary (<unk>, <s>, </s> and the 256 byte tokens) and exactly the
 * tensors its loader asks for, with their shapes; the layer count follows
 * from --size (the tensor count follows from the architecture). Its weights
 * are those of a freshly initialised network rather than random bytes:
 * matrices normal with standard deviation 1/sqrt(fan_in) (fan_in = ggml's
 * ne0, the length of the rows a matrix multiplies by), norms 1, rounded once
 * to the dtype (Q8_0 blocks quantized as ggml does: scale max|x|/127), from
 * the seed; so llama.cpp's logits on it are finite and its greedy tokens vary.
 *
 * Asked for something it cannot make exactly — fewer tensors than the
 * profile has groups of layers, a size too small for one row per tensor, a
 * header no reader would accept — it refuses and says why; it never changes a
 * count or a size on its own. The file is written to a temporary file beside
 * OUT, made durable, and renamed into place: on failure OUT is untouched and
 * only the temporary file (which mkmodel created) is removed. An OUT that
 * exists and is not a regular file (a device, a FIFO, a folder) is refused.
 */
#include "cli/cli.h"

#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct group {
    const char *fmt; /* printf format with %d (layer) and %s (suffix) */
    double share;    /* of the total bytes */
    int layers;
} group;

static const char *const suffixes[] = {"attn_q.weight",   "attn_k.weight", "attn_v.weight",
                                       "attn_out.weight", "ffn_up.weight", "ffn_down.weight"};
#define N_SUFFIX 6

typedef struct mk_tensor {
    char name[160];
    int64_t rows, cols; /* shape [rows, cols] */
    uint64_t nbytes, offset;
    bool f32; /* written as F32 whatever --dtype says (llama norms) */
    bool vec; /* one dimension: cols values (llama norms) */
} mk_tensor;

/* Dimensions of a llama model (profile llama). */
typedef struct llama_dims {
    uint32_t n_embd, n_ff, n_head, n_head_kv, n_layer, n_vocab;
} llama_dims;

#define LLAMA_VOCAB (3 + 256) /* <unk> <s> </s> and <0x00>..<0xFF> */

typedef struct mk_opts {
    const char *out;
    const char *profile;
    bool gguf;
    uint64_t size;
    uint64_t n_tensors;
    tl_dtype dtype;
    uint64_t seed;
    bool tensors_given;
    llama_dims ll;
} mk_opts;

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: tierload mkmodel OUT [--format gguf|safetensors] [--size SIZE] [--tensors N]\n"
        "                        [--profile llm|sdxl|llama] [--dtype F16|F32|BF16|Q8_0] [--seed "
        "N]\n"
        "  writes a synthetic model (deterministic pseudo-random weights) for benchmarks and\n"
        "  trials; the format defaults from OUT's extension. SIZE is the tensor bytes, each\n"
        "  tensor rounded down to whole rows of 1024 values; requests that cannot be met (too\n"
        "  few tensors for the profile, too small a size) are refused. OUT is replaced only once\n"
        "  the new file is complete. Defaults: --size 64M --tensors 200\n"
        "  --profile sdxl --dtype F16.\n"
        "  --profile llama: a GGUF llama.cpp loads (llama architecture keys, a byte vocabulary,\n"
        "  the tensors and shapes its loader expects, weights of an initialised network: normal\n"
        "  with std 1/sqrt(fan_in), norms 1); layers follow from --size, and --tensors is not\n"
        "  taken.\n");
}

#define MK_COLS 1024 /* elements per row */
#define MK_MAX_TENSORS 1000000

/*
 * Lay out the tensors: groups split the bytes, layers split groups, suffixes
 * split layers; each tensor gets whole rows of MK_COLS values. NULL with a
 * message in why when the request cannot be met exactly.
 */
static mk_tensor *layout(const mk_opts *o, size_t *n_out, char *why, size_t why_len) {
    static const group llm[] = {{"blk.%d.%s", 1.0, 0}};
    static const group sdxl[] = {
        {"model.diffusion_model.input_blocks.%d.1.%s", 0.30, 0},
        {"model.diffusion_model.middle_block.%d.%s", 0.10, 0},
        {"model.diffusion_model.output_blocks.%d.1.%s", 0.33, 0},
        {"conditioner.embedders.0.transformer.text_model.encoder.layers.%d.%s", 0.05, 0},
        {"conditioner.embedders.1.model.transformer.resblocks.%d.%s", 0.20, 0},
        {"first_stage_model.decoder.up.0.block.%d.%s", 0.02, 0},
    };
    bool is_llm = !strcmp(o->profile, "llm");
    const group *g = is_llm ? llm : sdxl;
    size_t ng = is_llm ? 1 : sizeof sdxl / sizeof sdxl[0];
    uint64_t n = o->n_tensors;
    if (n < ng * N_SUFFIX) {
        snprintf(why, why_len,
                 "profile %s needs at least %zu tensors (%zu group%s of %d), not %llu", o->profile,
                 ng * N_SUFFIX, ng, ng == 1 ? "" : "s", N_SUFFIX, (unsigned long long)n);
        return NULL;
    }
    uint64_t row_bytes;
    if (!tl_dtype_nbytes(o->dtype, MK_COLS, &row_bytes)) {
        snprintf(why, why_len, "dtype %s cannot hold rows of %d values", tl_dtype_name(o->dtype),
                 MK_COLS);
        return NULL;
    }
    mk_tensor *t = calloc(n, sizeof *t);
    if (!t) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    size_t k = 0;
    for (size_t gi = 0; gi < ng; gi++) {
        uint64_t per_group = n / ng + (gi < n % ng ? 1 : 0);
        uint64_t layers = (per_group + N_SUFFIX - 1) / N_SUFFIX;
        double bytes_per_tensor = (double)o->size * g[gi].share / (double)per_group;
        int64_t rows = (int64_t)(bytes_per_tensor / (double)row_bytes);
        if (rows < 1) {
            char b[32], r[32];
            snprintf(why, why_len,
                     "--size %s is too small for %llu tensors: each needs at least one row of %d "
                     "%s values (%s); ask for fewer tensors or a larger size",
                     tl_fmt_bytes(o->size, b, sizeof b), (unsigned long long)n, MK_COLS,
                     tl_dtype_name(o->dtype), tl_fmt_bytes(row_bytes, r, sizeof r));
            free(t);
            return NULL;
        }
        for (uint64_t i = 0; i < per_group; i++, k++) {
            uint64_t layer = i / N_SUFFIX;
            snprintf(t[k].name, sizeof t[k].name, g[gi].fmt, (int)(layer % (layers ? layers : 1)),
                     suffixes[i % N_SUFFIX]);
            t[k].rows = rows;
            t[k].cols = MK_COLS;
            t[k].nbytes = (uint64_t)rows * row_bytes;
        }
    }
    *n_out = k;
    return t;
}

/* One tensor of a llama model: ggml order (ne0 innermost) turned into outermost first. */
static bool ll_add(mk_tensor *t, size_t *k, tl_dtype dt, const char *name, int64_t ne0,
                   int64_t ne1) {
    uint64_t nb;
    if (!tl_dtype_nbytes(dt, (uint64_t)(ne0 * ne1), &nb)) return false;
    snprintf(t[*k].name, sizeof t[*k].name, "%s", name);
    t[*k].rows = ne1;
    t[*k].cols = ne0;
    t[*k].nbytes = nb;
    t[*k].f32 = dt == TL_DTYPE_F32;
    t[*k].vec = ne1 == 1;
    (*k)++;
    return true;
}

/*
 * Profile llama: token_embd, output_norm, output, then per block attn_norm,
 * attn_q/k/v/output, ffn_norm, ffn_gate/down/up (norms in F32). Models of
 * 512 MiB and more get TinyLlama's widths (2048 wide, 32 heads, 4 KV heads,
 * 5632 FFN), smaller ones 256 wide; blocks fill --size.
 */
static mk_tensor *layout_llama(mk_opts *o, size_t *n_out, char *why, size_t why_len) {
    llama_dims d = o->size >= (512ull << 20) ? (llama_dims){2048, 5632, 32, 4, 0, LLAMA_VOCAB}
                                             : (llama_dims){256, 704, 4, 2, 0, LLAMA_VOCAB};
    int64_t e = d.n_embd, kv = (int64_t)(d.n_embd / d.n_head * d.n_head_kv), ff = d.n_ff;
    uint64_t fixed = 0, per = 0;
    if (!tl_dtype_nbytes(o->dtype, (uint64_t)(2 * e * d.n_vocab), &fixed) ||
        !tl_dtype_nbytes(o->dtype, (uint64_t)(2 * e * e + 2 * e * kv + 3 * e * ff), &per)) {
        snprintf(why, why_len, "dtype %s cannot hold llama tensors", tl_dtype_name(o->dtype));
        return NULL;
    }
    fixed += (uint64_t)e * 4;   /* output_norm */
    per += 2 * (uint64_t)e * 4; /* attn_norm, ffn_norm */
    if (o->tensors_given) {
        snprintf(why, why_len,
                 "profile llama takes no --tensors: its tensors follow the "
                 "architecture (3 + 9 per block)");
        return NULL;
    }
    if (!o->gguf) {
        snprintf(why, why_len, "profile llama writes GGUF only");
        return NULL;
    }
    if (o->size < fixed + per) {
        char b[32];
        snprintf(why, why_len, "profile llama needs --size of at least %s for one block",
                 tl_fmt_bytes(fixed + per, b, sizeof b));
        return NULL;
    }
    d.n_layer = (uint32_t)((o->size - fixed) / per);
    size_t n = 3 + 9 * (size_t)d.n_layer;
    mk_tensor *t = calloc(n, sizeof *t);
    if (!t) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    size_t k = 0;
    bool ok = ll_add(t, &k, o->dtype, "token_embd.weight", e, d.n_vocab) &&
              ll_add(t, &k, TL_DTYPE_F32, "output_norm.weight", e, 1) &&
              ll_add(t, &k, o->dtype, "output.weight", e, d.n_vocab);
    static const struct {
        const char *suffix;
        int a, b; /* 0 embd, 1 kv, 2 ff, 3 one (a norm) */
    } blk[] = {{"attn_norm.weight", 0, 3}, {"attn_q.weight", 0, 0},      {"attn_k.weight", 0, 1},
               {"attn_v.weight", 0, 1},    {"attn_output.weight", 0, 0}, {"ffn_norm.weight", 0, 3},
               {"ffn_gate.weight", 0, 2},  {"ffn_down.weight", 2, 0},    {"ffn_up.weight", 0, 2}};
    const int64_t dim[] = {e, kv, ff, 1};
    for (uint32_t l = 0; ok && l < d.n_layer; l++)
        for (size_t b = 0; ok && b < sizeof blk / sizeof blk[0]; b++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%u.%s", l, blk[b].suffix);
            ok = ll_add(t, &k, blk[b].b == 3 ? TL_DTYPE_F32 : o->dtype, name, dim[blk[b].a],
                        dim[blk[b].b]);
        }
    if (!ok) {
        snprintf(why, why_len, "tensor sizes overflow");
        free(t);
        return NULL;
    }
    o->ll = d;
    *n_out = k;
    return t;
}

/* The llama architecture's keys and the byte vocabulary (profile llama). */
static tl_status llama_meta(tl_writer *w, const llama_dims *d) {
    tl_status s = TL_OK;
    const struct {
        const char *key;
        uint32_t v;
    } u[] = {{"llama.context_length", 2048},
             {"llama.embedding_length", d->n_embd},
             {"llama.block_count", d->n_layer},
             {"llama.feed_forward_length", d->n_ff},
             {"llama.attention.head_count", d->n_head},
             {"llama.attention.head_count_kv", d->n_head_kv},
             {"llama.rope.dimension_count", d->n_embd / d->n_head},
             {"llama.vocab_size", d->n_vocab},
             {"tokenizer.ggml.unknown_token_id", 0},
             {"tokenizer.ggml.bos_token_id", 1},
             {"tokenizer.ggml.eos_token_id", 2}};
    for (size_t i = 0; s == TL_OK && i < sizeof u / sizeof u[0]; i++)
        s = tl_writer_meta_raw(w, u[i].key, TL_META_U32, &u[i].v, 4);
    const float eps = 1e-5f, base = 10000.0f;
    if (s == TL_OK)
        s = tl_writer_meta_raw(w, "llama.attention.layer_norm_rms_epsilon", TL_META_F32, &eps, 4);
    if (s == TL_OK) s = tl_writer_meta_raw(w, "llama.rope.freq_base", TL_META_F32, &base, 4);
    if (s == TL_OK) s = tl_writer_meta_string(w, "tokenizer.ggml.model", "llama");
    if (s != TL_OK) return s;
    /* arrays as GGUF encodes them: u32 element type, u64 count, elements (little-endian) */
    enum { N = LLAMA_VOCAB };
    unsigned char tok[12 + N * (8 + 8)], sc[12 + N * 4], ty[12 + N * 4];
    size_t tl = 12, sl = 12, yl = 12;
    uint32_t ts = TL_META_STRING, tf = TL_META_F32, ti = TL_META_I32;
    uint64_t n = N;
    memcpy(tok, &ts, 4), memcpy(tok + 4, &n, 8);
    memcpy(sc, &tf, 4), memcpy(sc + 4, &n, 8);
    memcpy(ty, &ti, 4), memcpy(ty + 4, &n, 8);
    for (int i = 0; i < N; i++) {
        char text[8];
        if (i < 3)
            snprintf(text, sizeof text, "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
        else
            snprintf(text, sizeof text, "<0x%02X>", i - 3);
        uint64_t len = strlen(text);
        memcpy(tok + tl, &len, 8);
        memcpy(tok + tl + 8, text, len);
        tl += 8 + len;
        float score = 0.0f;
        memcpy(sc + sl, &score, 4);
        sl += 4;
        int32_t type = i == 0 ? 2 : i < 3 ? 3 : 6; /* unknown, control, byte */
        memcpy(ty + yl, &type, 4);
        yl += 4;
    }
    s = tl_writer_meta_raw(w, "tokenizer.ggml.tokens", TL_META_ARRAY, tok, tl);
    if (s == TL_OK) s = tl_writer_meta_raw(w, "tokenizer.ggml.scores", TL_META_ARRAY, sc, sl);
    if (s == TL_OK) s = tl_writer_meta_raw(w, "tokenizer.ggml.token_type", TL_META_ARRAY, ty, yl);
    return s;
}

static uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static int write_all(FILE *f, const void *p, size_t n, const char *path) {
    if (n && fwrite(p, 1, n, f) != n) {
        fprintf(stderr, "tierload: %s: write failed: %s\n", path, strerror(errno));
        return 4;
    }
    return 0;
}

/* The header, from the library's writer; offsets assigned there. NULL + message on refusal. */
static tl_writer *make_header(const mk_opts *o, mk_tensor *t, size_t n, const void **hdr,
                              size_t *hlen) {
    tl_writer *w = NULL;
    tl_status s = tl_writer_create(o->gguf ? TL_FORMAT_GGUF : TL_FORMAT_SAFETENSORS, &w);
    if (s == TL_OK && o->gguf) {
        bool llama = !strcmp(o->profile, "llama");
        s = tl_writer_meta_string(w, "general.architecture",
                                  llama || !strcmp(o->profile, "llm") ? "llama" : "sdxl");
        if (s == TL_OK) s = tl_writer_meta_string(w, "general.name", "tierload synthetic model");
        if (s == TL_OK) s = tl_writer_meta_u32(w, "general.alignment", 32);
        if (s == TL_OK && llama) s = llama_meta(w, &o->ll);
    } else if (s == TL_OK) {
        s = tl_writer_meta_string(w, "format", "pt");
        if (s == TL_OK) s = tl_writer_meta_string(w, "generator", "tierload mkmodel");
    }
    for (size_t i = 0; s == TL_OK && i < n; i++) {
        int64_t shape[2] = {t[i].rows, t[i].cols};
        if (t[i].vec)
            s = tl_writer_tensor(w, t[i].name, t[i].f32 ? TL_DTYPE_F32 : o->dtype, 1, &t[i].cols,
                                 t[i].nbytes, NULL);
        else
            s = tl_writer_tensor(w, t[i].name, t[i].f32 ? TL_DTYPE_F32 : o->dtype, 2, shape,
                                 t[i].nbytes, NULL);
    }
    if (s == TL_OK) s = tl_writer_header(w, hdr, hlen);
    if (s != TL_OK) {
        fprintf(stderr, "tierload: mkmodel: %s: %s\n", o->out, tl_last_error());
        tl_writer_destroy(w);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        t[i].offset = tl_writer_tensor_offset(w, i);
    return w;
}

/* A standard normal value (Box-Muller over two xorshift draws; the pair's second value kept). */
static double normal(uint64_t *s, double *spare, bool *has_spare) {
    if (*has_spare) {
        *has_spare = false;
        return *spare;
    }
    double u1 = (double)((xorshift(s) >> 11) + 1) * 0x1p-53; /* (0, 1] */
    double u2 = (double)(xorshift(s) >> 11) * 0x1p-53;       /* [0, 1) */
    double r = sqrt(-2.0 * log(u1)), a = 6.283185307179586 * u2;
    *spare = r * sin(a);
    *has_spare = true;
    return r * cos(a);
}

/*
 * n values of llama tensor t (n a multiple of 32 unless it is the tensor's
 * last chunk) into out as dtype dt: 1 for norms, else normal / sqrt(fan_in).
 * *out_len gets the bytes written. x is scratch for n floats.
 */
static void llama_values(const mk_tensor *t, tl_dtype dt, uint64_t *s, double *spare,
                         bool *has_spare, float *x, size_t n, void *out, size_t *out_len) {
    double sd = 1.0 / sqrt((double)t->cols);
    for (size_t i = 0; i < n; i++)
        x[i] = t->vec ? 1.0f : (float)(normal(s, spare, has_spare) * sd);
    if (dt != TL_DTYPE_Q8_0) {
        tl_convert(dt, out, TL_DTYPE_F32, x, n);
        *out_len = n * (dt == TL_DTYPE_F32 ? 4 : 2);
        return;
    }
    unsigned char *o = out; /* Q8_0: f16 scale d = max|x| / 127, then 32 x round(x / d) */
    for (size_t b = 0; b < n / 32; b++, o += 34) {
        const float *v = x + b * 32;
        float amax = 0.0f;
        for (int i = 0; i < 32; i++)
            amax = fmaxf(amax, fabsf(v[i]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        uint16_t h;
        tl_convert(TL_DTYPE_F16, &h, TL_DTYPE_F32, &d, 1);
        memcpy(o, &h, 2);
        for (int i = 0; i < 32; i++)
            o[2 + i] = (unsigned char)(int8_t)roundf(v[i] * id);
    }
    *out_len = n / 32 * 34;
}

/* Header, then the data section: each tensor at its offset, zeros in the gaps. */
static int write_file(FILE *f, const mk_opts *o, const void *hdr, size_t hlen, mk_tensor *t,
                      size_t n, uint64_t data_size, const char *path) {
    enum { CHUNK = 8 << 20, LL_CHUNK = 1 << 20 }; /* LL_CHUNK: values per llama chunk (F32 fits) */
    int rc = write_all(f, hdr, hlen, path);
    bool llama = !strcmp(o->profile, "llama"), has_spare = false;
    double spare = 0.0;
    uint64_t *buf = rc ? NULL : malloc(CHUNK);
    float *x = rc || !llama ? NULL : malloc(LL_CHUNK * sizeof *x);
    if (!rc && (!buf || (llama && !x))) {
        free(buf);
        free(x);
        return 6;
    }
    uint64_t s = o->seed * 2654435761u + 88172645463325252ull, pos = 0;
    for (size_t i = 0; i <= n && !rc; i++) {
        uint64_t start = i < n ? t[i].offset : data_size;
        while (pos < start && !rc) { /* padding */
            size_t m = start - pos < CHUNK ? (size_t)(start - pos) : CHUNK;
            memset(buf, 0, m);
            rc = write_all(f, buf, m, path);
            pos += m;
        }
        if (i < n && llama) { /* values of an initialised network, in chunks of whole blocks */
            tl_dtype dt = t[i].f32 ? TL_DTYPE_F32 : o->dtype;
            uint64_t left = (uint64_t)t[i].rows * (uint64_t)t[i].cols;
            while (left && !rc) {
                size_t m = left < LL_CHUNK ? (size_t)left : LL_CHUNK, len = 0;
                llama_values(&t[i], dt, &s, &spare, &has_spare, x, m, buf, &len);
                rc = write_all(f, buf, len, path);
                left -= m;
                pos += len;
            }
            continue;
        }
        for (uint64_t left = i < n ? t[i].nbytes : 0; left && !rc;) {
            size_t m = left < CHUNK ? (size_t)left : CHUNK;
            for (size_t w = 0; w < (m + 7) / 8; w++)
                buf[w] = xorshift(&s);
            rc = write_all(f, buf, m, path);
            left -= m;
            pos += m;
        }
    }
    free(buf);
    free(x);
    return rc;
}

/* A whole decimal number (digits only, no sign, no suffix, no overflow). */
static bool parse_count(const char *v, uint64_t *out) {
    if (!v || !*v) return false;
    uint64_t x = 0;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9') return false;
        if (x > (UINT64_MAX - (uint64_t)(*p - '0')) / 10) return false;
        x = x * 10 + (uint64_t)(*p - '0');
    }
    *out = x;
    return true;
}

/*
 * Write into a temporary file beside out (cli_outfile: removed on failure and
 * on signals), make it durable, rename it over out. Only the temporary file is
 * ever removed.
 */
static int write_into_place(const mk_opts *o, const void *hdr, size_t hlen, mk_tensor *t, size_t n,
                            uint64_t data_size) {
    cli_outfile of;
    int rc = cli_outfile_open(&of, o->out, "mkmodel");
    if (rc) return rc;
    rc = write_file(of.f, o, hdr, hlen, t, n, data_size, of.tmp);
    if (rc) cli_outfile_abort(&of);
    else rc = cli_outfile_commit(&of, "mkmodel");
    if (rc) fprintf(stderr, "tierload: mkmodel: %s left as it was\n", cli_safe(o->out));
    return rc;
}

int cmd_mkmodel(int argc, char **argv) {
    mk_opts o = {NULL, "sdxl", false, 64ull << 20, 200, TL_DTYPE_F16, 1, false, {0, 0, 0, 0, 0, 0}};
    int fmt = -1;
    static const char *const with_value[] = {"--format",  "--size",  "--tensors",
                                             "--profile", "--dtype", "--seed"};
    for (int i = 1; i < argc; i++) {
        /* --opt VALUE or --opt=VALUE */
        char opt[16];
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char *eq = !strncmp(a, "--", 2) ? strchr(a, '=') : NULL;
        int skip = 1; /* arguments a value takes */
        if (eq && (size_t)(eq - a) < sizeof opt) {
            memcpy(opt, a, (size_t)(eq - a));
            opt[eq - a] = 0;
            a = opt;
            v = eq + 1;
            skip = 0;
        }
        for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; k++)
            if (!strcmp(a, with_value[k]) && !v) return cli_usage("mkmodel", "%s needs a value", a);
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--format") && v) {
            if (!strcmp(v, "gguf"))
                fmt = 1;
            else if (!strcmp(v, "safetensors"))
                fmt = 0;
            else
                return cli_usage("mkmodel", "unknown format '%s'", v);
            i += skip;
        } else if (!strcmp(a, "--size") && v) {
            if (!cli_parse_size(v, &o.size, NULL)) return cli_usage("mkmodel", "bad size '%s'", v);
            i += skip;
        } else if (!strcmp(a, "--tensors") && v) {
            if (!parse_count(v, &o.n_tensors) || !o.n_tensors || o.n_tensors > MK_MAX_TENSORS)
                return cli_usage("mkmodel", "bad count '%s' (a whole number, 1 to %d)", v,
                                 MK_MAX_TENSORS);
            o.tensors_given = true;
            i += skip;
        } else if (!strcmp(a, "--profile") && v) {
            if (strcmp(v, "llm") && strcmp(v, "sdxl") && strcmp(v, "llama"))
                return cli_usage("mkmodel", "unknown profile '%s'", v);
            o.profile = v;
            i += skip;
        } else if (!strcmp(a, "--dtype") && v) {
            o.dtype = tl_dtype_from_name(v);
            if (o.dtype != TL_DTYPE_F16 && o.dtype != TL_DTYPE_F32 && o.dtype != TL_DTYPE_BF16 &&
                o.dtype != TL_DTYPE_Q8_0)
                return cli_usage("mkmodel", "dtype '%s' not offered (F16, F32, BF16, Q8_0)", v);
            i += skip;
        } else if (!strcmp(a, "--seed") && v) {
            if (!parse_count(v, &o.seed))
                return cli_usage("mkmodel", "bad seed '%s' (a whole number)", v);
            i += skip;
        } else if (a[0] == '-') {
            return cli_usage("mkmodel", "unknown option '%s'", a);
        } else if (!o.out) {
            o.out = a;
        } else {
            return cli_usage("mkmodel", "one output path only");
        }
    }
    if (!o.out) return cli_usage("mkmodel", "no output path given");
    size_t len = strlen(o.out);
    o.gguf = fmt >= 0 ? fmt == 1 : (len >= 5 && !strcmp(o.out + len - 5, ".gguf"));
    if (!o.gguf && o.dtype == TL_DTYPE_Q8_0)
        return cli_usage("mkmodel", "Q8_0 needs --format gguf");
    size_t n;
    char why[512];
    mk_tensor *t = !strcmp(o.profile, "llama") ? layout_llama(&o, &n, why, sizeof why)
                                               : layout(&o, &n, why, sizeof why);
    if (!t) return cli_usage("mkmodel", "%s", why);
    const void *hdr;
    size_t hlen;
    tl_writer *w = make_header(&o, t, n, &hdr, &hlen);
    if (!w) {
        free(t);
        return 2;
    }
    int rc = write_into_place(&o, hdr, hlen, t, n, tl_writer_data_size(w));
    tl_writer_destroy(w);
    free(t);
    return rc;
}
