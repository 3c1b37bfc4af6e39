/*
 * cmd_info.c — `tierload info PATH...`: describe model files.
 *
 * Human form: per file its format, version, size, tensor count and data
 * offset; then bytes by dtype and by component, the largest tensors and the
 * metadata keys with short values. `--json` prints the catalog schema
 * ({"files":[...],"tensors":[...]}) with exact integers.
 */
#include "cli/cli.h"
#include "cli/json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: tierload info [--json] [--keys N] [--top N] PATH... [--vae F ...]\n"
               "  PATH: a .gguf or .safetensors file, a *.safetensors.index.json, or a folder\n"
               "        (diffusers folder, folder with a shard index, or folder of model files)\n"
               "  --json    the catalog as JSON: files and every tensor\n"
               "  --top N   how many of the largest tensors to list (default 10)\n"
               "  --keys N  how many metadata keys to list (default 40; 0 = all)\n");
    fputs(cli_models_help(), f);
}

typedef struct range {
    uint32_t file;
    uint64_t a, b;
} range;

static int cmp_range(const void *x, const void *y) {
    const range *p = x, *q = y;
    if (p->file != q->file) return p->file < q->file ? -1 : 1;
    return p->a < q->a ? -1 : p->a > q->a;
}

/*
 * The bytes of the files that hold tensor data: the union of the tensors'
 * byte ranges (tied tensors of a checkpoint share one storage: counted once;
 * a strided view counts the span it reaches). UINT64_MAX when memory fails.
 */
static uint64_t bytes_on_disk(const tl_model *m) {
    size_t n = tl_model_tensor_count(m);
    range *r = malloc((n ? n : 1) * sizeof *r);
    if (!r) return UINT64_MAX;
    for (size_t i = 0; i < n; i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        uint64_t len = t->nbytes;
        if (t->strides && t->n_elements) {
            uint64_t span = 0, es = tl_dtype_block_bits(t->dtype) / 8;
            for (uint32_t d = 0; d < t->n_dims; d++)
                span += (uint64_t)(t->shape[d] - 1) * (uint64_t)t->strides[d];
            len = (span + 1) * es;
        }
        r[i] = (range){t->file, t->offset, t->offset + len};
    }
    qsort(r, n, sizeof *r, cmp_range);
    uint64_t total = 0;
    for (size_t i = 0; i < n;) {
        uint64_t a = r[i].a, b = r[i].b;
        size_t j = i + 1;
        for (; j < n && r[j].file == r[i].file && r[j].a <= b; j++)
            if (r[j].b > b) b = r[j].b;
        total += b - a;
        i = j;
    }
    free(r);
    return total;
}

static void print_json(const tl_model *m) {
    cJSON *root = cJSON_CreateObject();
    cJSON *files = cJSON_AddArrayToObject(root, "files");
    for (size_t i = 0; i < tl_model_file_count(m); i++) {
        const tl_file_info *f = tl_model_file(m, i);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "path", f->path);
        cJSON_AddStringToObject(o, "format",
                                f->format == TL_FORMAT_GGUF          ? "gguf"
                                : f->format == TL_FORMAT_SAFETENSORS ? "safetensors"
                                                                     : "ckpt");
        if (f->version >= 0)
            cli_json_add_u64(o, "version", (uint64_t)f->version);
        else
            cJSON_AddNullToObject(o, "version");
        cli_json_add_u64(o, "size", f->size);
        cli_json_add_u64(o, "data_offset", f->data_offset);
        if (f->alignment)
            cli_json_add_u64(o, "alignment", f->alignment);
        else
            cJSON_AddNullToObject(o, "alignment");
        cJSON_AddItemToArray(files, o);
    }
    uint64_t disk = bytes_on_disk(m);
    if (disk != UINT64_MAX) cli_json_add_u64(root, "tensor_bytes_on_disk", disk);
    cJSON *tensors = cJSON_AddArrayToObject(root, "tensors");
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", t->name);
        cJSON_AddStringToObject(o, "dtype", tl_dtype_name(t->dtype));
        cJSON *shape = cJSON_AddArrayToObject(o, "shape");
        for (uint32_t d = 0; d < t->n_dims; d++)
            cli_json_push_u64(shape, (uint64_t)t->shape[d]);
        cli_json_add_u64(o, "file", t->file);
        cli_json_add_u64(o, "offset", t->offset);
        cli_json_add_u64(o, "nbytes", t->nbytes);
        if (t->strides) {
            cJSON *strides = cJSON_AddArrayToObject(o, "strides");
            for (uint32_t d = 0; d < t->n_dims; d++)
                cli_json_push_u64(strides, (uint64_t)t->strides[d]);
        }
        cJSON_AddStringToObject(o, "component", tl_component_name(t->component));
        if (t->layer >= 0)
            cli_json_add_u64(o, "layer", (uint64_t)t->layer);
        else
            cJSON_AddNullToObject(o, "layer");
        cJSON_AddItemToArray(tensors, o);
    }
    cli_json_print(root, stdout);
    cJSON_Delete(root);
}

static void print_value(const tl_meta *v) {
    switch (v->type) {
    case TL_META_STRING: {
        char shown[61];
        size_t n = v->v.s.len > 60 ? 60 : (size_t)v->v.s.len;
        memcpy(shown, v->v.s.ptr, n);
        shown[n] = 0;
        printf("\"%s\"%s", cli_safe(shown), v->v.s.len > 60 ? "..." : "");
        break;
    }
    case TL_META_U8:
    case TL_META_U16:
    case TL_META_U32:
    case TL_META_U64:
        printf("%llu", (unsigned long long)v->v.u);
        break;
    case TL_META_I8:
    case TL_META_I16:
    case TL_META_I32:
    case TL_META_I64:
        printf("%lld", (long long)v->v.i);
        break;
    case TL_META_F32:
    case TL_META_F64:
        printf("%g", v->v.f);
        break;
    case TL_META_BOOL:
        printf("%s", v->v.b ? "true" : "false");
        break;
    default:
        break;
    }
}

static void print_meta(const tl_model *m, size_t i) {
    const tl_meta *e = tl_model_meta(m, i);
    printf("  %s = ", cli_safe(e->key));
    if (e->type != TL_META_ARRAY) {
        print_value(e);
    } else {
        printf("[%s%s x %llu", e->depth > 1 ? "nested " : "", tl_meta_type_name(e->elem_type),
               (unsigned long long)e->count);
        tl_meta el;
        for (uint64_t j = 0; j < e->count && j < 3 && e->depth == 1; j++) {
            if (tl_model_meta_element(m, i, j, &el)) break;
            printf("%s", j ? ", " : ": ");
            print_value(&el);
        }
        printf("%s]", e->count > 3 && e->depth == 1 ? ", ..." : "");
    }
    putchar('\n');
}

static const tl_model *sort_model;

static int cmp_size_desc(const void *a, const void *b) {
    const tl_tensor_info *x = tl_model_tensor(sort_model, *(const size_t *)a);
    const tl_tensor_info *y = tl_model_tensor(sort_model, *(const size_t *)b);
    if (x->nbytes != y->nbytes) return x->nbytes > y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static void print_human(const tl_model *m, size_t top, size_t keys) {
    char b1[32], b2[32];
    uint64_t total = 0;
    size_t nt = tl_model_tensor_count(m);
    for (size_t i = 0; i < tl_model_file_count(m); i++) {
        const tl_file_info *f = tl_model_file(m, i);
        if (f->format == TL_FORMAT_GGUF)
            printf("%s: GGUF v%d, %s, %llu tensors, data at byte %llu, alignment %u\n",
                   cli_safe(f->path),
                   f->version, cli_fmt_size(f->size, b1, sizeof b1),
                   (unsigned long long)f->n_tensors, (unsigned long long)f->data_offset,
                   f->alignment);
        else if (f->format == TL_FORMAT_CKPT)
            printf("%s: PyTorch checkpoint v%d, %s, %llu tensors, data at byte %llu\n", f->path,
                   f->version, cli_fmt_size(f->size, b1, sizeof b1),
                   (unsigned long long)f->n_tensors, (unsigned long long)f->data_offset);
        else
            printf("%s: safetensors, %s, %llu tensors, data at byte %llu\n", cli_safe(f->path),
                   cli_fmt_size(f->size, b1, sizeof b1), (unsigned long long)f->n_tensors,
                   (unsigned long long)f->data_offset);
    }
    for (size_t i = 0; i < nt; i++)
        total += tl_model_tensor(m, i)->nbytes;
    uint64_t disk = bytes_on_disk(m);
    if (disk != total && disk != UINT64_MAX)
        printf("\n%zu tensors, %s of weights, %s of tensor data on disk\n", nt,
               cli_fmt_size(total, b1, sizeof b1), cli_fmt_size(disk, b2, sizeof b2));
    else
        printf("\n%zu tensors, %s of weights\n", nt, cli_fmt_size(total, b1, sizeof b1));
    if (nt) {
        /* bytes by dtype (dtype ids are < 128) */
        uint64_t by_dtype[128] = {0};
        size_t cnt_dtype[128] = {0};
        uint64_t by_comp[TL_COMP_COUNT] = {0};
        size_t cnt_comp[TL_COMP_COUNT] = {0};
        for (size_t i = 0; i < nt; i++) {
            const tl_tensor_info *t = tl_model_tensor(m, i);
            by_dtype[t->dtype & 127] += t->nbytes;
            cnt_dtype[t->dtype & 127]++;
            by_comp[t->component] += t->nbytes;
            cnt_comp[t->component]++;
        }
        printf("\nby dtype:\n");
        for (int d = 0; d < 128; d++)
            if (cnt_dtype[d])
                printf("  %-8s %6zu tensors  %12s  %5.1f%%\n", tl_dtype_name((tl_dtype)d),
                       cnt_dtype[d], cli_fmt_size(by_dtype[d], b1, sizeof b1),
                       total ? 100.0 * (double)by_dtype[d] / (double)total : 0.0);
        printf("\nby component:\n");
        for (int c = 0; c < TL_COMP_COUNT; c++)
            if (cnt_comp[c])
                printf("  %-10s %6zu tensors  %12s\n", tl_component_name((tl_component)c),
                       cnt_comp[c], cli_fmt_size(by_comp[c], b1, sizeof b1));
        size_t *idx = malloc(nt * sizeof *idx);
        if (idx) {
            for (size_t i = 0; i < nt; i++)
                idx[i] = i;
            sort_model = m;
            qsort(idx, nt, sizeof *idx, cmp_size_desc);
            size_t k = top < nt ? top : nt;
            printf("\nlargest %zu tensors:\n", k);
            for (size_t i = 0; i < k; i++) {
                const tl_tensor_info *t = tl_model_tensor(m, idx[i]);
                char shape[128] = "[";
                for (uint32_t d = 0; d < t->n_dims; d++) {
                    size_t at = strlen(shape);
                    snprintf(shape + at, sizeof shape - at, "%s%lld", d ? ", " : "",
                             (long long)t->shape[d]);
                }
                strncat(shape, "]", sizeof shape - strlen(shape) - 1);
                printf("  %-48s %-8s %-20s %s%s\n", cli_safe(t->name), tl_dtype_name(t->dtype),
                       shape, cli_fmt_size(t->nbytes, b2, sizeof b2),
                       t->strides ? "  (strided view)" : "");
            }
            free(idx);
        }
    }
    size_t nm = tl_model_meta_count(m);
    size_t shown = keys && keys < nm ? keys : nm;
    printf("\nmetadata: %zu keys%s\n", nm, shown < nm ? " (first ones; --keys 0 for all)" : "");
    for (size_t i = 0; i < shown; i++)
        print_meta(m, i);
}

/* --top N / --keys N: 1 = taken, 0 = another argument, -1 = a usage error (printed). */
static int count_opt(int argc, char **argv, int *i, const char *opt, size_t *out) {
    const char *v;
    int r = cli_opt(argc, argv, i, "info", opt, &v);
    if (r <= 0) return r;
    uint64_t n;
    if (!cli_parse_count(v, SIZE_MAX, &n)) {
        cli_usage("info", "%s wants a count (0, 1, 2, ...), not '%s'", opt, v);
        return -1;
    }
    *out = (size_t)n;
    return 1;
}

int cmd_info(int argc, char **argv) {
    bool json = false;
    size_t top = 10, keys = 40;
    cli_models models = {0};
    int rc = 0;
    for (int i = 1; i < argc && !rc; i++) {
        int r;
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            cli_models_free(&models);
            return 0;
        } else if ((r = count_opt(argc, argv, &i, "--top", &top)) != 0 ||
                   (r = count_opt(argc, argv, &i, "--keys", &keys)) != 0) {
            if (r < 0) rc = 2;
        } else {
            r = cli_models_arg(&models, argc, argv, &i, "info");
            if (r < 0)
                rc = 2;
            else if (r == 0)
                rc = cli_usage("info", "unknown option '%s'", argv[i]);
        }
    }
    if (!rc && !models.n) rc = cli_usage("info", "no model path given");
    if (rc) {
        cli_models_free(&models);
        return rc;
    }
    tl_model *m;
    tl_status st = cli_models_open(&models, &m);
    cli_models_free(&models);
    if (st) return cli_fail(st);
    if (json)
        print_json(m);
    else
        print_human(m, top, keys);
    tl_model_close(m);
    return 0;
}
