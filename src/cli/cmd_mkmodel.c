/*
 * cmd_mkmodel.c — `tierload mkmodel`: write a synthetic model file.
 *
 * Benchmarks, the demo and users who want to try placement without
 * downloading weights need model files of a chosen size, tensor count and
 * naming scheme. This writes a valid GGUF v3 or safetensors file whose tensor
 * names follow a profile (an llama.cpp LLM, or an SDXL-like pipeline with
 * diffusion / text-encoder / VAE components in SDXL's proportions), filled
 * with deterministic pseudo-random bytes (so loads can be verified), streamed
 * in bounded chunks.
 */
#include "cli/cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
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
} mk_tensor;

typedef struct mk_opts {
    const char *out;
    const char *profile;
    bool gguf;
    uint64_t size;
    uint64_t n_tensors;
    tl_dtype dtype;
    uint64_t seed;
} mk_opts;

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: tierload mkmodel OUT [--format gguf|safetensors] [--size SIZE] [--tensors N]\n"
        "                        [--profile llm|sdxl] [--dtype F16|F32|BF16|Q8_0] [--seed N]\n"
        "  writes a synthetic model (deterministic pseudo-random weights) for benchmarks and\n"
        "  trials; the format defaults from OUT's extension. Defaults: --size 64M --tensors 200\n"
        "  --profile sdxl --dtype F16.\n");
}

/* Lay out the tensors: groups split the bytes, layers split groups, suffixes split layers. */
static mk_tensor *layout(const mk_opts *o, size_t *n_out) {
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
    uint64_t n = o->n_tensors < ng * N_SUFFIX ? ng * N_SUFFIX : o->n_tensors;
    mk_tensor *t = calloc(n, sizeof *t);
    if (!t) return NULL;
    uint32_t blk = tl_dtype_block_elems(o->dtype), bits = tl_dtype_block_bits(o->dtype);
    int64_t cols = 1024;
    size_t k = 0;
    for (size_t gi = 0; gi < ng; gi++) {
        uint64_t per_group = n / ng + (gi < n % ng ? 1 : 0);
        uint64_t layers = (per_group + N_SUFFIX - 1) / N_SUFFIX;
        double bytes_per_tensor = (double)o->size * g[gi].share / (double)per_group;
        for (uint64_t i = 0; i < per_group; i++, k++) {
            uint64_t layer = i / N_SUFFIX;
            snprintf(t[k].name, sizeof t[k].name, g[gi].fmt, (int)(layer % (layers ? layers : 1)),
                     suffixes[i % N_SUFFIX]);
            double row_bytes = (double)cols / blk * bits / 8.0;
            int64_t rows = (int64_t)(bytes_per_tensor / row_bytes);
            t[k].rows = rows > 0 ? rows : 1;
            t[k].cols = cols;
            tl_dtype_nbytes(o->dtype, (uint64_t)(t[k].rows * cols), &t[k].nbytes);
        }
    }
    *n_out = k;
    return t;
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

/* Stream the data section: tensors back to back with `align` padding. */
static int write_data(FILE *f, const mk_opts *o, mk_tensor *t, size_t n, uint64_t align) {
    enum { CHUNK = 8 << 20 };
    uint64_t *buf = malloc(CHUNK);
    if (!buf) return 6;
    uint64_t s = o->seed * 2654435761u + 88172645463325252ull, pos = 0;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        uint64_t pad = (align - pos % align) % align;
        memset(buf, 0, (size_t)pad);
        rc = write_all(f, buf, (size_t)pad, o->out);
        pos += pad;
        for (uint64_t left = t[i].nbytes; left && !rc;) {
            size_t m = left < CHUNK ? (size_t)left : CHUNK;
            for (size_t w = 0; w < (m + 7) / 8; w++)
                buf[w] = xorshift(&s);
            rc = write_all(f, buf, m, o->out);
            left -= m;
            pos += m;
        }
    }
    free(buf);
    return rc;
}

static void put_u32(FILE *f, uint32_t v) {
    fwrite(&v, 4, 1, f);
}
static void put_u64(FILE *f, uint64_t v) {
    fwrite(&v, 8, 1, f);
}
static void put_str(FILE *f, const char *s) {
    put_u64(f, strlen(s));
    fwrite(s, 1, strlen(s), f);
}

static int write_gguf(FILE *f, const mk_opts *o, mk_tensor *t, size_t n) {
    fwrite("GGUF", 1, 4, f);
    put_u32(f, 3);
    put_u64(f, n);
    put_u64(f, 3);
    put_str(f, "general.architecture");
    put_u32(f, TL_META_STRING);
    put_str(f, !strcmp(o->profile, "llm") ? "llama" : "sdxl");
    put_str(f, "general.name");
    put_u32(f, TL_META_STRING);
    put_str(f, "tierload synthetic model");
    put_str(f, "general.alignment");
    put_u32(f, TL_META_U32);
    put_u32(f, 32);
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        off = (off + 31) / 32 * 32;
        t[i].offset = off;
        put_str(f, t[i].name);
        put_u32(f, 2);
        put_u64(f, (uint64_t)t[i].cols); /* ne[0]: innermost */
        put_u64(f, (uint64_t)t[i].rows);
        put_u32(f, (uint32_t)o->dtype);
        put_u64(f, t[i].offset);
        off += t[i].nbytes;
    }
    long pos = ftell(f);
    static const char zeros[32];
    fwrite(zeros, 1, (size_t)((32 - pos % 32) % 32), f);
    return write_data(f, o, t, n, 32);
}

static int write_safetensors(FILE *f, const mk_opts *o, mk_tensor *t, size_t n) {
    size_t cap = 256 + n * 256, len = 0;
    char *h = malloc(cap);
    if (!h) return 6;
    len += (size_t)snprintf(
        h + len, cap - len,
        "{\"__metadata__\":{\"format\":\"pt\",\"generator\":\"tierload mkmodel\"}");
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        t[i].offset = off;
        len += (size_t)snprintf(
            h + len, cap - len,
            ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld,%lld],\"data_offsets\":[%llu,%llu]}",
            t[i].name, tl_dtype_name(o->dtype), (long long)t[i].rows, (long long)t[i].cols,
            (unsigned long long)off, (unsigned long long)(off + t[i].nbytes));
        off += t[i].nbytes;
    }
    h[len++] = '}';
    while (len % 8)
        h[len++] = ' ';
    put_u64(f, len);
    int rc = write_all(f, h, len, o->out);
    free(h);
    return rc ? rc : write_data(f, o, t, n, 1);
}

int cmd_mkmodel(int argc, char **argv) {
    mk_opts o = {NULL, "sdxl", false, 64ull << 20, 200, TL_DTYPE_F16, 1};
    int fmt = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
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
            i++;
        } else if (!strcmp(a, "--size") && v) {
            if (!cli_parse_size(v, &o.size, NULL)) return cli_usage("mkmodel", "bad size '%s'", v);
            i++;
        } else if (!strcmp(a, "--tensors") && v) {
            o.n_tensors = strtoull(v, NULL, 10);
            if (!o.n_tensors || o.n_tensors > 1000000)
                return cli_usage("mkmodel", "bad count '%s'", v);
            i++;
        } else if (!strcmp(a, "--profile") && v) {
            if (strcmp(v, "llm") && strcmp(v, "sdxl"))
                return cli_usage("mkmodel", "unknown profile '%s'", v);
            o.profile = v;
            i++;
        } else if (!strcmp(a, "--dtype") && v) {
            o.dtype = tl_dtype_from_name(v);
            if (o.dtype != TL_DTYPE_F16 && o.dtype != TL_DTYPE_F32 && o.dtype != TL_DTYPE_BF16 &&
                o.dtype != TL_DTYPE_Q8_0)
                return cli_usage("mkmodel", "dtype '%s' not offered (F16, F32, BF16, Q8_0)", v);
            i++;
        } else if (!strcmp(a, "--seed") && v) {
            o.seed = strtoull(v, NULL, 10);
            i++;
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
    mk_tensor *t = layout(&o, &n);
    if (!t) return cli_exit_code(TL_ERR_NOMEM);
    FILE *f = fopen(o.out, "wb");
    if (!f) {
        fprintf(stderr, "tierload: %s: cannot create: %s\n", o.out, strerror(errno));
        free(t);
        return 4;
    }
    int rc = o.gguf ? write_gguf(f, &o, t, n) : write_safetensors(f, &o, t, n);
    /* durable before we return: dirty pages cannot be evicted, and benchmarks evict */
    if (!rc && (fflush(f) != 0 || fsync(fileno(f)) != 0)) {
        fprintf(stderr, "tierload: %s: write failed: %s\n", o.out, strerror(errno));
        rc = 4;
    }
    if (fclose(f) != 0 && !rc) {
        fprintf(stderr, "tierload: %s: write failed: %s\n", o.out, strerror(errno));
        rc = 4;
    }
    free(t);
    if (rc) remove(o.out);
    return rc;
}
