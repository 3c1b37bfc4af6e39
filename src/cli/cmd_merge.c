/*
 * cmd_merge.c — `tierload merge MODEL --lora FILE[:SCALE]... -o OUT`: write
 * the model with the LoRAs merged, in the model's own format (safetensors
 * in, safetensors out; GGUF in, GGUF out), header and metadata byte for byte.
 *
 * A merge changes no tensor's size, so the output has the input's layout: a
 * copier thread copies the whole file in order (in the kernel with
 * copy_file_range, as cp does, else through one staging buffer) while the
 * main thread merges each tensor a LoRA touches in the copy-on-write mapping
 * (its rows on every core: lora/merge.c), writes it over its own offset once
 * the copier has passed it, and unpatches it again before the next one (peak
 * extra memory: the largest merged tensor plus the staging buffer). The
 * merged bytes are written twice; in exchange the copy is one sequential
 * stream, not one call per gap between merged tensors. Where the output
 * replaces a file and is synced before the rename (cli_outfile), its
 * writeback is started as it is written, so that the sync has little left
 * to do.
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
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STAGING (4u << 20)
#define COPY_CHUNK (16u << 20) /* the copier's step: merges behind it wait at most this much */

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
    int ofd;          /* the output's descriptor: every byte goes through it */
    bool sync;        /* the output is synced at the end: start its writeback as it goes */
    int fd;
    uint64_t merged_tensors, merged_bytes, largest;
    /* the copier: the whole file, beside the merges */
    unsigned char *buf; /* its staging buffer, where the kernel cannot copy */
    atomic_bool stop;   /* the merges failed: the copier stops */
    pthread_mutex_t mu; /* guards copied and copy_done; cv says they changed */
    pthread_cond_t cv;
    uint64_t copied; /* the output's bytes below this are the file's */
    bool copy_done;  /* the copier stopped (copy_errno says how) */
    int copy_errno;  /* its failure: an errno (reading the model: read_failed), */
    bool read_failed;
    uint64_t changed_at; /* or where the file ended under it (UINT64_MAX: it did not) */
} merge_ctx;

static int cmp_off(const void *a, const void *b, void *ctx) {
    const tl_model *m = ctx;
    uint64_t x = tl_model_tensor(m, *(const size_t *)a)->offset;
    uint64_t y = tl_model_tensor(m, *(const size_t *)b)->offset;
    return x < y ? -1 : x > y;
}

/*
 * Where the output replaces a file and is synced before the rename, start writing back
 * [off, off+n) now, so that the sync at the end (cli_outfile_commit) finds little left: the disk
 * works while the merge goes on. Only a hint: its errors are left to that sync.
 */
static void writeback(const merge_ctx *c, uint64_t off, uint64_t n) {
    if (c->sync) (void)sync_file_range(c->ofd, (off_t)off, (off_t)n, SYNC_FILE_RANGE_WRITE);
}

/* Write n bytes from p at offset off of the output; errno on failure. */
static int write_at(const merge_ctx *c, const void *p, size_t n, uint64_t off) {
    const unsigned char *b = p;
    for (size_t left = n; left;) {
        ssize_t w = pwrite(c->ofd, b, left > (1u << 30) ? (1u << 30) : left, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return w == 0 ? EIO : errno;
        b += w, left -= (size_t)w, off += (uint64_t)w;
    }
    return 0;
}

/* The copier has copied up to off: the merges behind it may be written. */
static void copied_to(merge_ctx *c, uint64_t off) {
    pthread_mutex_lock(&c->mu);
    c->copied = off;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/*
 * Copy the file's bytes [0, end) to the same offsets of the output, publishing its progress: in
 * the kernel (copy_file_range, no bounce through this process) while it works, else through the
 * staging buffer. 0, an errno, or -1 when the file ended before end (changed_at says where).
 */
static int copy_all(merge_ctx *c, uint64_t end) {
    uint64_t off = 0;
    bool kernel = true;
    while (off < end && kernel && !atomic_load(&c->stop)) {
        size_t n = end - off > COPY_CHUNK ? COPY_CHUNK : (size_t)(end - off);
        loff_t in = (loff_t)off, out = (loff_t)off;
        ssize_t got = copy_file_range(c->fd, &in, c->ofd, &out, n, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) { /* not here (another file system, an old kernel...): the staging buffer */
            if (errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP &&
                errno != EBADF && errno != ETXTBSY)
                return errno;
            kernel = false;
            break;
        }
        if (got == 0) break;
        writeback(c, off, (uint64_t)got);
        off += (uint64_t)got;
        copied_to(c, off);
    }
    while (off < end && !atomic_load(&c->stop)) {
        size_t n = end - off > STAGING ? STAGING : (size_t)(end - off);
        ssize_t got = pread(c->fd, c->buf, n, (off_t)off);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            c->read_failed = true;
            return errno;
        }
        if (got == 0) break;
        int e = write_at(c, c->buf, (size_t)got, off);
        if (e) return e;
        writeback(c, off, (uint64_t)got);
        off += (uint64_t)got;
        copied_to(c, off);
    }
    if (off < end && !atomic_load(&c->stop)) {
        c->changed_at = off;
        return -1;
    }
    return 0;
}

/* The copier's thread. */
static void *copier(void *arg) {
    merge_ctx *c = arg;
    int e = copy_all(c, tl_model_file(c->m, 0)->size);
    pthread_mutex_lock(&c->mu);
    c->copy_errno = e;
    c->copy_done = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* Wait until the copier has passed end: true, or false when it stopped short (failed). */
static bool wait_copied(merge_ctx *c, uint64_t end) {
    pthread_mutex_lock(&c->mu);
    while (c->copied < end && !c->copy_done)
        pthread_cond_wait(&c->cv, &c->mu);
    bool ok = c->copied >= end;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

static tl_status changed(merge_ctx *c, uint64_t off) {
    return tl_set_error(TL_ERR_CHANGED,
                        "%s: the file changed while it was merged (it ends at %llu now)",
                        tl_model_file(c->m, 0)->path, (unsigned long long)off);
}

/* The copier's failure as a status (TL_ERR_IO with errno set, as the merges' writes). */
static tl_status copy_status(merge_ctx *c) {
    if (c->copy_errno == -1) return changed(c, c->changed_at);
    if (c->read_failed)
        fprintf(stderr, "tierload merge: %s: read: %s\n", cli_safe(tl_model_file(c->m, 0)->path),
                strerror(c->copy_errno));
    errno = c->copy_errno;
    return TL_ERR_IO;
}

static tl_status merge_tensor(merge_ctx *c, size_t t) {
    tl_status st = TL_OK;
    for (size_t i = 0; i < c->loras->n && !st; i++) {
        const tl_lora *l = c->loras->open[i];
        for (size_t k = 0; k < tl_lora_module_count(l) && !st; k++)
            if (c->targets[i][k] == t)
                st = tl_lora_apply_module(c->m, l, k, t, c->loras->scales[i]);
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

/*
 * The merges, in file order: units[] lists the position in order[] of each run of tensors
 * holding exactly the same bytes (tied weights) that some module targets. A targeted tensor
 * overlapping another in a different shape is refused.
 */
static tl_status plan_units(merge_ctx *c, const size_t *order, size_t n, size_t *units,
                            size_t *n_units) {
    uint64_t pos = 0;
    size_t last = 0; /* the tensor whose bytes a unit took last */
    *n_units = 0;
    for (size_t j = 0; j < n; j++) {
        size_t t = order[j];
        const tl_tensor_info *ti = tl_model_tensor(c->m, t);
        if (ti->offset < pos) { /* inside bytes a unit holds already */
            const tl_tensor_info *lt = tl_model_tensor(c->m, last);
            bool tied = ti->offset == lt->offset && ti->nbytes == lt->nbytes;
            if (c->targeted[t] && !tied) return refuse_overlap(c, t, last);
            continue;
        }
        bool targeted = false;
        for (size_t g = j; g < n; g++) {
            const tl_tensor_info *gi = tl_model_tensor(c->m, order[g]);
            if (gi->offset != ti->offset) break;
            if (gi->nbytes != ti->nbytes) {
                if (c->targeted[order[g]] || c->targeted[t]) return refuse_overlap(c, order[g], t);
                continue;
            }
            targeted |= c->targeted[order[g]];
        }
        if (!targeted) continue;
        units[(*n_units)++] = j;
        pos = ti->offset + ti->nbytes;
        last = t;
    }
    return TL_OK;
}

/*
 * Merge one unit (the tensors from order[j] on that hold its bytes), write it once the copier
 * has passed it, unpatch it. *short_copy: the copier stopped before it (copy_status says why).
 */
static tl_status merge_unit(merge_ctx *c, const size_t *order, size_t n, size_t j,
                            bool *short_copy) {
    size_t t = order[j];
    const tl_tensor_info *ti = tl_model_tensor(c->m, t);
    tl_status st = TL_OK;
    for (size_t g = j; g < n && !st; g++) {
        const tl_tensor_info *gi = tl_model_tensor(c->m, order[g]);
        if (gi->offset != ti->offset) break;
        if (gi->nbytes == ti->nbytes) st = merge_tensor(c, order[g]);
    }
    if (!st && !wait_copied(c, ti->offset + ti->nbytes)) {
        *short_copy = true;
        return TL_OK;
    }
    int e = st ? 0 : write_at(c, tl_model_tensor_data(c->m, t), (size_t)ti->nbytes, ti->offset);
    if (e) {
        errno = e;
        st = TL_ERR_IO;
    }
    if (!st) writeback(c, ti->offset, ti->nbytes);
    for (size_t g = j; g < n && !st; g++) {
        size_t u = order[g];
        if (tl_model_tensor(c->m, u)->offset != ti->offset) break;
        if (tl_model_tensor_patched(c->m, u)) st = tl_model_tensor_unpatch(c->m, u);
    }
    c->merged_tensors++;
    c->merged_bytes += ti->nbytes;
    if (ti->nbytes > c->largest) c->largest = ti->nbytes;
    return st;
}

/*
 * The output: the copier thread copies the whole file while this thread merges the units, each
 * written over its own offset behind the copier (a merge keeps the layout), so the kernel's copy
 * and the merges' arithmetic overlap.
 */
static tl_status write_all(merge_ctx *c) {
    size_t n = tl_model_tensor_count(c->m);
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    size_t *units = malloc((n ? n : 1) * sizeof *units), n_units = 0;
    if (!order || !units) {
        free(order);
        free(units);
        return TL_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    qsort_r(order, n, sizeof *order, cmp_off, c->m);
    c->changed_at = UINT64_MAX;
    tl_status st = plan_units(c, order, n, units, &n_units);
    pthread_t th;
    bool threaded = !st && pthread_create(&th, NULL, copier, c) == 0;
    if (!st && !threaded) copier(c); /* no thread: the copy first, then the merges */
    bool short_copy = false;
    for (size_t u = 0; u < n_units && !st && !short_copy; u++)
        st = merge_unit(c, order, n, units[u], &short_copy);
    if (threaded) {
        if (st) atomic_store(&c->stop, true);
        pthread_join(th, NULL);
    }
    if (!st && c->copy_errno) st = copy_status(c);
    /* rewritten in place meanwhile (same size): the copy may mix two versions */
    if (!st) st = tl_model_check_files(c->m);
    free(order);
    free(units);
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
    atomic_init(&c.stop, false);
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
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
        c.ofd = of.fd;
        c.sync = of.replaces;
        if (fflush(of.f) != 0) st = TL_ERR_IO; /* nothing buffered: the bytes go through ofd */
        tl_memwatch_create(0, &w);
        if (!st) st = write_all(&c);
        if (!st && tl_model_file(m, 0)->format == TL_FORMAT_CKPT) {
            if (fflush(of.f) != 0)
                st = TL_ERR_IO;
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
    pthread_cond_destroy(&c.cv);
    pthread_mutex_destroy(&c.mu);
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
