/*
 * cmd_merge.c — `tierload merge MODEL --lora FILE[:SCALE]... -o OUT`: write
 * the model with the LoRAs merged, in the model's own format (safetensors
 * in, safetensors out; GGUF in, GGUF out), header and metadata byte for byte.
 *
 * A merge changes no tensor's size, so the output has the input's layout:
 * the bytes are copied in file order (in the kernel with copy_file_range,
 * else through one staging buffer), and each tensor a LoRA touches is merged
 * in the copy-on-write mapping (on every core: lora/merge.c), written, and
 * unpatched again before the next one (peak extra memory: the largest
 * merged tensor plus the staging buffer). Writeback of the output is started
 * every 64 MiB, so that the fsync before the rename has little left to do.
 * Tensors that hold the same bytes (tied weights of a checkpoint) get every
 * module that targets any of them before their bytes are written, as a
 * session merging in place would; a targeted tensor that overlaps another
 * one in a different shape is refused.
 * A file that shrinks or changes meanwhile is TL_ERR_CHANGED (merges read
 * mappings under the SIGBUS guard). A checkpoint's zip CRC-32s are
 * recomputed for the merged bytes. The output goes through cli_outfile
 * (outfile.c): a temporary file beside OUT, synced and renamed, removed on
 * failure and on signals.
 */
#include "cli/cli.h"
#include "cli/json.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STAGING (4u << 20)
#define WRITEBACK (64u << 20) /* writeback is started every this many bytes */

static int help(void) {
    printf("usage: tierload merge MODEL --lora FILE[:SCALE]... -o OUT [--lora-strict] [--json]\n\n"
           "Write MODEL with the LoRAs merged (W + scale*alpha/rank*up.down, in F32, rounded\n"
           "once to each weight's type), in MODEL's format with its header and metadata kept.\n"
           "Memory: the largest merged tensor plus a %u MiB staging buffer.\n\n",
           STAGING >> 20);
    fputs(cli_loras_help(), stdout);
    printf("  -o, --output OUT     the merged model (written beside OUT, then renamed)\n"
           "  --json               figures as JSON\n");
    return 0;
}

typedef struct merge_ctx {
    tl_model *m;
    cli_loras *loras;
    size_t **targets; /* per LoRA, per module */
    bool *targeted;   /* per tensor: some module merges into it */
    FILE *out;
    int ofd;          /* out's descriptor: every byte goes through it (out holds none) */
    uint64_t opos;    /* bytes written to ofd */
    uint64_t synced;  /* bytes whose writeback was started */
    bool kernel_copy; /* copy_file_range works between these files */
    unsigned char *buf;
    int fd;
    uint64_t merged_tensors, merged_bytes, largest;
} merge_ctx;

static int cmp_off(const void *a, const void *b, void *ctx) {
    const tl_model *m = ctx;
    uint64_t x = tl_model_tensor(m, *(const size_t *)a)->offset;
    uint64_t y = tl_model_tensor(m, *(const size_t *)b)->offset;
    return x < y ? -1 : x > y;
}

/*
 * Start writing back what was written since the last call, every WRITEBACK bytes, so that the
 * output's fsync at the end (cli_outfile_commit) finds little left: the disk works while the
 * copy goes on. Only a hint: its errors are left to that fsync.
 */
static void writeback(merge_ctx *c, bool all) {
    if (c->opos - c->synced < WRITEBACK && !(all && c->opos > c->synced)) return;
    (void)sync_file_range(c->ofd, (off_t)c->synced, (off_t)(c->opos - c->synced),
                          SYNC_FILE_RANGE_WRITE);
    c->synced = c->opos;
}

/* Write n bytes from p to the output. */
static tl_status write_out(merge_ctx *c, const void *p, size_t n) {
    const unsigned char *b = p;
    while (n) {
        ssize_t w = write(c->ofd, b, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            return TL_ERR_IO;
        }
        b += w, n -= (size_t)w;
        c->opos += (uint64_t)w;
        writeback(c, false);
    }
    return TL_OK;
}

static tl_status changed(merge_ctx *c, uint64_t off) {
    return tl_set_error(TL_ERR_CHANGED,
                        "%s: the file changed while it was merged (it ends at %llu now)",
                        tl_model_file(c->m, 0)->path, (unsigned long long)off);
}

/*
 * Copy file bytes [off, end) to the output: in the kernel (copy_file_range, no bounce through
 * this process) while it works, else through the staging buffer.
 */
static tl_status copy_range(merge_ctx *c, uint64_t off, uint64_t end) {
    while (off < end && c->kernel_copy) {
        size_t n = end - off > WRITEBACK ? WRITEBACK : (size_t)(end - off);
        loff_t in = (loff_t)off;
        ssize_t got = copy_file_range(c->fd, &in, c->ofd, NULL, n, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) { /* not here (another file system, an old kernel...): the staging buffer */
            if (errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP &&
                errno != EBADF && errno != ETXTBSY)
                return TL_ERR_IO;
            c->kernel_copy = false;
            break;
        }
        if (got == 0) return changed(c, off);
        off += (uint64_t)got;
        c->opos += (uint64_t)got;
        writeback(c, false);
    }
    while (off < end) {
        size_t n = end - off > STAGING ? STAGING : (size_t)(end - off);
        ssize_t got = pread(c->fd, c->buf, n, (off_t)off);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            fprintf(stderr, "tierload merge: %s: read: %s\n",
                    cli_safe(tl_model_file(c->m, 0)->path), strerror(errno));
            return TL_ERR_IO;
        }
        if (got == 0) return changed(c, off);
        tl_status st = write_out(c, c->buf, (size_t)got);
        if (st) return st;
        off += (uint64_t)got;
    }
    return TL_OK;
}

static tl_status merge_tensor(merge_ctx *c, size_t t, bool *merged) {
    tl_status st = TL_OK;
    *merged = false;
    for (size_t i = 0; i < c->loras->n && !st; i++) {
        const tl_lora *l = c->loras->open[i];
        for (size_t k = 0; k < tl_lora_module_count(l) && !st; k++)
            if (c->targets[i][k] == t) {
                st = tl_lora_apply_module(c->m, l, k, t, c->loras->scales[i]);
                *merged = true;
            }
    }
    return st;
}

static tl_status refuse_overlap(merge_ctx *c, size_t t, size_t over) {
    return tl_set_error(TL_ERR_UNSUPPORTED,
                        "%s: tensor '%s' shares bytes with '%s' in another shape: a merge "
                        "cannot write both",
                        tl_model_file(c->m, 0)->path, tl_model_tensor(c->m, t)->name,
                        tl_model_tensor(c->m, over)->name);
}

static tl_status write_all(merge_ctx *c) {
    size_t n = tl_model_tensor_count(c->m);
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    if (!order) return TL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) order[i] = i;
    qsort_r(order, n, sizeof *order, cmp_off, c->m);
    uint64_t pos = 0, size = tl_model_file(c->m, 0)->size;
    size_t last = 0; /* the tensor whose bytes were written last */
    tl_status st = TL_OK;
    for (size_t j = 0; j < n && !st; j++) {
        size_t t = order[j];
        const tl_tensor_info *ti = tl_model_tensor(c->m, t);
        if (ti->offset < pos) { /* inside bytes copied or written already */
            const tl_tensor_info *lt = tl_model_tensor(c->m, last);
            bool tied = ti->offset == lt->offset && ti->nbytes == lt->nbytes;
            if (c->targeted[t] && !tied) st = refuse_overlap(c, t, last);
            continue;
        }
        /* every tensor holding exactly these bytes (tied weights), and their modules */
        bool merged = false;
        for (size_t g = j; g < n && !st; g++) {
            const tl_tensor_info *gi = tl_model_tensor(c->m, order[g]);
            if (gi->offset != ti->offset) break;
            if (gi->nbytes != ti->nbytes) {
                if (c->targeted[order[g]] || c->targeted[t]) st = refuse_overlap(c, order[g], t);
                continue;
            }
            bool m1 = false;
            st = merge_tensor(c, order[g], &m1);
            merged = merged || m1;
        }
        if (st || !merged) continue;
        st = copy_range(c, pos, ti->offset);
        if (!st) st = write_out(c, tl_model_tensor_data(c->m, t), (size_t)ti->nbytes);
        for (size_t g = j; g < n && !st; g++) {
            size_t u = order[g];
            if (tl_model_tensor(c->m, u)->offset != ti->offset) break;
            if (tl_model_tensor_patched(c->m, u)) st = tl_model_tensor_unpatch(c->m, u);
        }
        pos = ti->offset + ti->nbytes;
        last = t;
        c->merged_tensors++;
        c->merged_bytes += ti->nbytes;
        if (ti->nbytes > c->largest) c->largest = ti->nbytes;
    }
    if (!st) st = copy_range(c, pos, size);
    if (!st) writeback(c, true);
    /* rewritten in place meanwhile (same size): the copy may mix two versions */
    if (!st) st = tl_model_check_files(c->m);
    free(order);
    return st;
}

static int merge_main(int argc, char **argv, cli_models *models, cli_loras *loras) {
    const char *outp = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return help();
        if (!strcmp(a, "--json")) {
            json = true;
        } else if ((r = cli_opt(argc, argv, &i, "merge", "-o", &v)) != 0 ||
                   (r = cli_opt(argc, argv, &i, "merge", "--output", &v)) != 0) {
            if (r < 0) return 2;
            outp = v;
        } else if ((r = cli_loras_arg(loras, argc, argv, &i, "merge")) != 0) {
            if (r < 0) return 2;
        } else {
            r = cli_models_arg(models, argc, argv, &i, "merge");
            if (r <= 0) return r < 0 ? 2 : cli_usage("merge", "unknown option '%s'", a);
        }
    }
    if (models->n != 1) return cli_usage("merge", "give one MODEL file");
    if (!outp) return cli_usage("merge", "give -o OUT");
    if (!loras->n) return cli_usage("merge", "give at least one --lora FILE[:SCALE]");

    models->writable = true;
    tl_model *m = NULL;
    tl_status st = cli_models_open(models, &m);
    if (st) return cli_fail(st);
    if (tl_model_file_count(m) != 1) {
        tl_model_close(m);
        return cli_usage("merge", "MODEL must be one file (not a folder or shard index)");
    }
    /* open and match every LoRA (strictness applies); nothing is merged yet */
    loras->open = calloc(loras->n, sizeof *loras->open);
    merge_ctx c;
    memset(&c, 0, sizeof c);
    c.m = m;
    c.loras = loras;
    c.fd = tl_model_file_fd(m, 0);
    c.targets = calloc(loras->n, sizeof *c.targets);
    c.targeted = calloc(tl_model_tensor_count(m) + 1, sizeof *c.targeted);
    c.buf = malloc(STAGING);
    int rc = 0;
    if (!loras->open || !c.targets || !c.targeted || !c.buf) st = TL_ERR_NOMEM;
    for (size_t i = 0; i < loras->n && !st && !rc; i++) {
        st = tl_lora_open(loras->paths[i], &loras->open[i]);
        if (st) break;
        tl_lora_report r;
        st = tl_lora_match(m, loras->open[i], &r, sizeof r);
        if (st) break;
        if (r.n_unmatched) {
            fprintf(stderr,
                    "tierload merge: %s: %zu LoRA keys match no tensor or are not applied:",
                    loras->paths[i], r.n_unmatched);
            for (size_t k = 0; k < r.n_unmatched && k < TL_LORA_REPORT_NAMES; k++)
                fprintf(stderr, " %s", r.unmatched[k]);
            fputc('\n', stderr);
            if (loras->strict) rc = cli_exit_code(TL_ERR_NOT_FOUND);
        }
        size_t nm = tl_lora_module_count(loras->open[i]);
        c.targets[i] = malloc((nm ? nm : 1) * sizeof(size_t));
        if (!c.targets[i]) st = TL_ERR_NOMEM;
        if (!st) st = tl_lora_targets(m, loras->open[i], c.targets[i]);
        for (size_t k = 0; !st && k < nm; k++)
            if (c.targets[i][k] != TL_NOT_FOUND) c.targeted[c.targets[i][k]] = true;
    }
    tl_memwatch *w = NULL;
    tl_memspan span;
    memset(&span, 0, sizeof span);
    cli_outfile of;
    memset(&of, 0, sizeof of);
    if (!st && !rc) rc = cli_outfile_open(&of, outp, "merge");
    if (!st && !rc) {
        c.out = of.f;
        c.ofd = of.fd;
        c.kernel_copy = true;
        if (fflush(c.out) != 0) st = TL_ERR_IO; /* nothing buffered: the bytes go through ofd */
        tl_memwatch_create(0, &w);
        if (!st) st = write_all(&c);
        if (!st && tl_model_file(m, 0)->format == TL_FORMAT_CKPT) {
            if (fflush(c.out) != 0) st = TL_ERR_IO;
            else st = tl_ckpt_refresh_crcs(of.fd, of.tmp);
        }
        tl_memwatch_destroy(w, &span, sizeof span);
        if (st) cli_outfile_abort(&of);
        else rc = cli_outfile_commit(&of, "merge");
    }
    if (st && !rc) {
        if (st == TL_ERR_IO) {
            fprintf(stderr, "tierload merge: writing %s: %s\n", cli_safe(outp), strerror(errno));
            rc = cli_exit_code(st);
        } else {
            rc = cli_fail(st);
        }
        fprintf(stderr, "tierload merge: %s left as it was\n", cli_safe(outp));
    }
    if (!rc) {
        uint64_t extra = span.rss_anon_peak > span.start.rss_anon ? span.rss_anon_peak - span.start.rss_anon : 0;
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "output", outp);
            cli_json_add_u64(o, "merged_tensors", c.merged_tensors);
            cli_json_add_u64(o, "merged_bytes", c.merged_bytes);
            cli_json_add_u64(o, "largest_merged_tensor", c.largest);
            cli_json_add_u64(o, "staging_bytes", STAGING);
            cli_json_add_u64(o, "rss_anon_start", span.start.rss_anon);
            cli_json_add_u64(o, "rss_anon_peak", span.rss_anon_peak);
            cli_json_add_u64(o, "rss_anon_extra_peak", extra);
            rc = cli_json_print(o, stdout) ? cli_exit_code(TL_ERR_IO) : 0;
            cJSON_Delete(o);
        } else {
            char a[32], b[32], d[32];
            printf("wrote %s: %llu tensors merged (%s); peak extra RSS anon %s (largest merged "
                   "tensor %s + staging %u MiB)\n",
                   outp, (unsigned long long)c.merged_tensors,
                   cli_fmt_size(c.merged_bytes, a, sizeof a), cli_fmt_size(extra, b, sizeof b),
                   cli_fmt_size(c.largest, d, sizeof d), STAGING >> 20);
        }
    }
    for (size_t i = 0; c.targets && i < loras->n; i++) free(c.targets[i]);
    free(c.targets);
    free(c.targeted);
    free(c.buf);
    tl_model_close(m);
    return rc;
}

int cmd_merge(int argc, char **argv) {
    cli_models models = {0};
    cli_loras loras = {0};
    int rc = merge_main(argc, argv, &models, &loras);
    cli_loras_free(&loras);
    cli_models_free(&models);
    return rc;
}
