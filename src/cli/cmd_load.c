/*
 * cmd_load.c — `tierload load MODEL...`: load every tensor into host memory
 * with tl_model_load and report the mode chosen per file, bytes, seconds,
 * GB/s and memory (anon / file RSS at start, end and peak; page cache of the
 * files before and after; the staging bound). `--json` prints the same as
 * one JSON object; a progress bar goes to stderr when it is a terminal.
 *
 * Every speed is bytes delivered / wall time of the step it names: "read"
 * (a file's copy, conversion included when converting), "total" (the whole
 * load: setup, reads, verify, evict). Views (mmap mode) get no speed: they
 * are "mapped N bytes, populated in T".
 */
#include "cli/cli.h"
#include "cli/json.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: tierload load [options] MODEL...\n"
        "  MODEL: .gguf / .safetensors files, shard indexes or folders (one catalog)\n"
        "  --mode M        auto (default), mmap, buffered or direct\n"
        "  --dtype T       convert on load: F32, F16, BF16 (float tensors; Q8_0/Q4_0 dequantized), I32\n"
        "                  (I64 tensors), or quantize float weights to Q8_0 / Q4_0 as sd.cpp --type\n"
        "  --tensor-type-rules PATTERN=TYPE,...  per tensor, as sd.cpp's: the first PATTERN\n"
        "                  (a regular expression) found in a name gives the type (f32, f16,\n"
        "                  bf16, q8_0, q4_0); tensors no rule names follow --dtype\n"
        "  --threads N     reader threads (default 2)\n"
        "  --staging SIZE  bytes per staging buffer (default 16M)\n"
        "  --staging-count N  staging buffers in the ring (default 4)\n"
        "  --evict         drop each file's pages from the page cache once copied\n"
        "  --verify        compare xxh64 of every tensor in memory with the file\n"
        "  --views         auto: leave warm files as zero-copy views\n"
        "  --no-populate   mmap: do not fault the mapping in\n"
        "  --hugepages     transparent huge pages for the copies throughout (default: huge\n"
        "                  pages while they fault in fast, then 4 KiB pages; --verbose says)\n"
        "  --no-hugepages  4 KiB pages for the copies throughout (wins over --hugepages)\n"
        "  --keep-warm SIZE  keep up to SIZE bytes of freed destinations faulted in for the\n"
        "                  next load of this process (the warm host pool; default 0)\n"
        "  --repeat N      load N times in this process, freeing each before the next;\n"
        "                  the report is of the last load (default 1)\n"
        "  --json          one JSON object on stdout\n"
        "  --verbose       say what was chosen and why (stderr)\n"
        "  --quiet         no progress bar\n"
        "  speeds: GB/s = bytes delivered / wall seconds of the step named (10^9 bytes/s):\n"
        "  \"read\" per file (conversion included), \"total\" for the whole load (setup, reads,\n"
        "  verify, evict; JSON gbps). Views (mmap) report \"mapped N bytes, populated in T\".\n"
        "  Opening the model (parsing its headers) comes before and is timed apart (JSON\n"
        "  open_seconds).\n");
    fputs(cli_models_help(), f);
}

typedef struct bar {
    double t0;
    bool shown;
} bar;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static bool progress(void *user, uint64_t done, uint64_t total) {
    bar *b = user;
    double dt = now() - b->t0;
    int width = 30, fill = total ? (int)((double)done / (double)total * width) : width;
    char d[32], t[32];
    fprintf(stderr, "\r[%.*s%*s] %3d%% %s / %s %.2f GB/s ", fill, "##############################",
            width - fill, "", total ? (int)(100.0 * (double)done / (double)total) : 100,
            cli_fmt_size(done, d, sizeof d), cli_fmt_size(total, t, sizeof t),
            dt > 0 ? (double)done / dt / 1e9 : 0.0);
    b->shown = true;
    return true;
}

static double gbps(uint64_t bytes, double s) {
    return s > 0 ? (double)bytes / s / 1e9 : 0;
}

/* A file whose loaded tensors all stayed views into its mapping (nothing copied). */
static bool is_view(const tl_model *m, const tl_load_result *r, size_t fi) {
    if (tl_load_result_file(r, fi)->mode != TL_LOAD_MMAP) return false;
    for (size_t i = 0; i < tl_load_result_tensor_count(r); i++) {
        const tl_loaded_tensor *t = tl_load_result_tensor(r, i);
        if (tl_model_tensor(m, i)->file == fi && t->nbytes && !t->view) return false;
    }
    return true;
}

static const char *read_phase(const tl_load_result *r) {
    const tl_load_stats *st = tl_load_result_stats(r);
    return st->bytes_out != st->bytes ? "read+convert" : "read";
}

/* Wall seconds per phase: copies read (conversion included), views populated, verify + evict. */
typedef struct phases {
    uint64_t read_bytes, view_bytes;
    double read_s, view_s, after_s;
} phases;

static phases phase_times(const tl_model *m, const tl_load_result *r) {
    const tl_load_stats *st = tl_load_result_stats(r);
    phases p = {0};
    for (size_t i = 0; i < tl_load_result_file_count(r); i++) {
        const tl_load_file *f = tl_load_result_file(r, i);
        if (is_view(m, r, i)) {
            p.view_bytes += f->bytes;
            p.view_s += f->seconds;
        } else {
            p.read_bytes += f->bytes;
            p.read_s += f->seconds;
        }
    }
    p.after_s = st->read_seconds - p.read_s - p.view_s;
    if (p.after_s < 0) p.after_s = 0;
    return p;
}

/*
 * What the command measures around the load: opening, and USS before and
 * after it (the load itself walks no page tables: its span has no USS).
 */
typedef struct around {
    double open_s;
    uint64_t uss_start, uss_end;
} around;

static void print_json(const tl_model *m, const tl_load_result *r, const around *ar) {
    const tl_load_stats *st = tl_load_result_stats(r);
    cJSON *root = cJSON_CreateObject();
    cli_json_add_u64(root, "bytes", st->bytes);
    cli_json_add_u64(root, "bytes_out", st->bytes_out);
    cJSON_AddNumberToObject(root, "open_seconds", ar->open_s);
    cJSON_AddNumberToObject(root, "seconds", st->seconds);
    cJSON_AddNumberToObject(root, "read_seconds", st->read_seconds);
    /* gbps: bytes / total wall seconds (the whole load) */
    cJSON_AddNumberToObject(root, "gbps", gbps(st->bytes, st->seconds));
    cJSON_AddStringToObject(root, "gbps_phase", "total");
    phases ph = phase_times(m, r);
    cJSON_AddNumberToObject(root, "copy_read_seconds", ph.read_s);
    cJSON_AddNumberToObject(root, "read_gbps", gbps(ph.read_bytes, ph.read_s));
    cli_json_add_u64(root, "mapped_bytes", ph.view_bytes);
    cJSON_AddNumberToObject(root, "populate_seconds", ph.view_s);
    cJSON_AddNumberToObject(root, "verify_evict_seconds", ph.after_s);
    cli_json_add_u64(root, "threads", st->threads);
    cJSON *files = cJSON_AddArrayToObject(root, "files");
    for (size_t i = 0; i < tl_load_result_file_count(r); i++) {
        const tl_load_file *f = tl_load_result_file(r, i);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "path", f->path);
        cJSON_AddStringToObject(o, "mode", tl_load_mode_name(f->mode));
        cJSON_AddStringToObject(o, "reason", f->reason);
        cJSON_AddBoolToObject(o, "direct_fallback", f->direct_fallback);
        cJSON_AddBoolToObject(o, "uring", f->uring);
        cli_json_add_u64(o, "size", f->size);
        cli_json_add_u64(o, "bytes", f->bytes);
        cJSON_AddNumberToObject(o, "seconds", f->seconds);
        bool view = is_view(m, r, i);
        cJSON_AddStringToObject(o, "phase", view ? "populate" : read_phase(r));
        if (!view) cJSON_AddNumberToObject(o, "gbps", gbps(f->bytes, f->seconds));
        cJSON_AddNumberToObject(o, "residency_before", f->residency_before);
        cli_json_add_u64(o, "page_cache_before", f->page_cache_before);
        cli_json_add_u64(o, "page_cache_after", f->page_cache_after);
        cJSON_AddBoolToObject(o, "evicted", f->evicted);
        cJSON_AddItemToArray(files, o);
    }
    cJSON *mem = cJSON_AddObjectToObject(root, "memory");
    cli_json_add_u64(mem, "rss_anon_start", st->mem.start.rss_anon);
    cli_json_add_u64(mem, "rss_anon_peak", st->mem.rss_anon_peak);
    cli_json_add_u64(mem, "rss_anon_end", st->mem.end.rss_anon);
    cli_json_add_u64(mem, "rss_file_start", st->mem.start.rss_file);
    cli_json_add_u64(mem, "rss_file_peak", st->mem.rss_file_peak);
    cli_json_add_u64(mem, "rss_file_end", st->mem.end.rss_file);
    cli_json_add_u64(mem, "rss_peak", st->mem.rss_peak);
    cli_json_add_u64(mem, "uss_start", ar->uss_start);
    cli_json_add_u64(mem, "uss_end", ar->uss_end);
    cli_json_add_u64(mem, "vm_hwm", st->mem.end.peak_rss);
    cli_json_add_u64(mem, "samples", st->mem.samples);
    cli_json_add_u64(mem, "page_cache_before", st->page_cache_before);
    cli_json_add_u64(mem, "page_cache_after", st->page_cache_after);
    cli_json_add_u64(mem, "staging_bound", st->staging_bound);
    cli_json_add_u64(mem, "staging_used", st->staging_used);
    cli_json_add_u64(mem, "dest_bytes", st->dest_bytes);
    cli_json_add_u64(mem, "mem_available_start", st->mem.start.mem_available);
    cli_json_add_u64(mem, "mem_available_end", st->mem.end.mem_available);
    if (st->mem.end.has_cgroup) {
        cli_json_add_u64(mem, "cgroup_max", st->mem.end.cgroup_max);
        cli_json_add_u64(mem, "cgroup_current", st->mem.end.cgroup_current);
    }
    cli_json_print(root, stdout);
    cJSON_Delete(root);
}

static void print_human(const tl_model *m, const tl_load_result *r, const around *ar) {
    const tl_load_stats *st = tl_load_result_stats(r);
    char a[32], b[32], c[32];
    for (size_t i = 0; i < tl_load_result_file_count(r); i++) {
        const tl_load_file *f = tl_load_result_file(r, i);
        printf("%s\n  mode %s%s: %s\n  ", cli_safe(f->path), tl_load_mode_name(f->mode),
               f->uring ? " (io_uring)" : "", cli_safe(f->reason));
        if (is_view(m, r, i))
            printf("mapped %llu bytes, populated in %.3f s", (unsigned long long)f->bytes,
                   f->seconds);
        else
            printf("%s: %s in %.3f s, %.2f GB/s", read_phase(r),
                   cli_fmt_size(f->bytes, a, sizeof a), f->seconds, gbps(f->bytes, f->seconds));
        printf("; page cache %s -> %s%s\n", cli_fmt_size(f->page_cache_before, b, sizeof b),
               cli_fmt_size(f->page_cache_after, c, sizeof c), f->evicted ? " (evicted)" : "");
    }
    phases ph = phase_times(m, r);
    if (ph.read_bytes == 0)
        printf("mapped %s (%llu bytes), populated in %.3f s (%.3f s total), %u threads\n",
               cli_fmt_size(st->bytes, a, sizeof a), (unsigned long long)st->bytes, ph.view_s,
               st->seconds, st->threads);
    else
        printf("loaded %s (%llu bytes) in %.3f s total: %.2f GB/s total, %u threads\n",
               cli_fmt_size(st->bytes, a, sizeof a), (unsigned long long)st->bytes, st->seconds,
               gbps(st->bytes, st->seconds), st->threads);
    printf("phases: open %.3f s (before the load),", ar->open_s);
    if (ph.read_bytes || !ph.view_bytes) printf(" %s %.3f s,", read_phase(r), ph.read_s);
    if (ph.view_bytes) printf(" populate %.3f s,", ph.view_s);
    printf(" verify+evict %.3f s, setup %.3f s\n", ph.after_s,
           st->seconds - st->read_seconds > 0 ? st->seconds - st->read_seconds : 0.0);
    if (st->bytes_out != st->bytes)
        printf("in memory after conversion: %s\n", cli_fmt_size(st->bytes_out, a, sizeof a));
    printf("rss anon: start %s, peak %s, ", cli_fmt_size(st->mem.start.rss_anon, a, sizeof a),
           cli_fmt_size(st->mem.rss_anon_peak, b, sizeof b));
    printf("end %s\n", cli_fmt_size(st->mem.end.rss_anon, a, sizeof a));
    printf("rss file: start %s, peak %s, ", cli_fmt_size(st->mem.start.rss_file, a, sizeof a),
           cli_fmt_size(st->mem.rss_file_peak, b, sizeof b));
    printf("end %s\n", cli_fmt_size(st->mem.end.rss_file, a, sizeof a));
    printf("page cache of the files: before %s, after %s\n",
           cli_fmt_size(st->page_cache_before, a, sizeof a),
           cli_fmt_size(st->page_cache_after, b, sizeof b));
    printf("staging: bound %s, used %s; copies %s\n", cli_fmt_size(st->staging_bound, a, sizeof a),
           cli_fmt_size(st->staging_used, b, sizeof b), cli_fmt_size(st->dest_bytes, c, sizeof c));
    printf("uss end %s, VmHWM %s, MemAvailable %s\n", cli_fmt_size(ar->uss_end, a, sizeof a),
           cli_fmt_size(st->mem.end.peak_rss, b, sizeof b),
           cli_fmt_size(st->mem.end.mem_available, c, sizeof c));
}

int cmd_load(int argc, char **argv) {
    tl_load_options o;
    tl_load_options_init(&o);
    o.populate = true;
    bool json = false, verbose = false, quiet = false;
    uint64_t keep_warm = 0;
    unsigned repeat = 1;
    cli_models models = {0};
    int rc = 0;
    for (int i = 1; i < argc && rc == 0; i++) {
        const char *a = argv[i], *v = NULL;
        int r;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            cli_models_free(&models);
            return 0;
        } else if (!strcmp(a, "--json"))
            json = true;
        else if (!strcmp(a, "--verbose") || !strcmp(a, "-v"))
            verbose = true;
        else if (!strcmp(a, "--quiet") || !strcmp(a, "-q"))
            quiet = true;
        else if (!strcmp(a, "--evict"))
            o.evict = true;
        else if (!strcmp(a, "--verify"))
            o.verify = true;
        else if (!strcmp(a, "--views"))
            o.accept_views = true;
        else if (!strcmp(a, "--no-populate"))
            o.populate = false;
        else if (!strcmp(a, "--no-hugepages"))
            o.no_hugepages = true;
        else if (!strcmp(a, "--hugepages"))
            o.hugepages = true;
        else if ((r = cli_opt(argc, argv, &i, "load", "--mode", &v)) != 0) {
            int m = r < 0 ? 0 : (int)tl_load_mode_from_name(v);
            if (r < 0)
                rc = 2;
            else if (m < 0)
                rc = cli_usage("load", "unknown mode '%s'", v);
            else
                o.mode = (tl_load_mode)m;
        } else if ((r = cli_opt(argc, argv, &i, "load", "--dtype", &v)) != 0) {
            tl_dtype t = r < 0 ? TL_DTYPE_INVALID : tl_dtype_from_name(v);
            if (r < 0)
                rc = 2;
            else if (t == TL_DTYPE_INVALID)
                rc = cli_usage("load", "unknown dtype '%s'", v);
            o.convert = true;
            o.dtype = t;
        } else if ((r = cli_opt(argc, argv, &i, "load", "--tensor-type-rules", &v)) != 0) {
            if (r < 0)
                rc = 2;
            else
                o.type_rules = v;
        } else if ((r = cli_opt(argc, argv, &i, "load", "--threads", &v)) != 0) {
            uint64_t n;
            if (r < 0)
                rc = 2;
            else if (!cli_parse_count(v, 64, &n) || n < 1)
                rc = cli_usage("load", "--threads takes 1..64, not '%s'", v);
            else
                o.threads = (unsigned)n;
        } else if ((r = cli_opt(argc, argv, &i, "load", "--staging-count", &v)) != 0) {
            uint64_t n;
            if (r < 0)
                rc = 2;
            else if (!cli_parse_count(v, 64, &n) || n < 2)
                rc = cli_usage("load", "--staging-count takes 2..64, not '%s'", v);
            else
                o.staging_count = (unsigned)n;
        } else if ((r = cli_opt(argc, argv, &i, "load", "--keep-warm", &v)) != 0) {
            uint64_t n;
            if (r < 0)
                rc = 2;
            else if (!cli_parse_size(v, &n, NULL))
                rc = cli_usage("load", "bad size '%s'", v);
            else
                keep_warm = n;
        } else if ((r = cli_opt(argc, argv, &i, "load", "--repeat", &v)) != 0) {
            uint64_t n;
            if (r < 0)
                rc = 2;
            else if (!cli_parse_count(v, 1000, &n) || n < 1)
                rc = cli_usage("load", "--repeat takes 1..1000, not '%s'", v);
            else
                repeat = (unsigned)n;
        } else if ((r = cli_opt(argc, argv, &i, "load", "--staging", &v)) != 0) {
            uint64_t n;
            if (r < 0)
                rc = 2;
            else if (!cli_parse_size(v, &n, NULL) || n == 0)
                rc = cli_usage("load", "bad size '%s'", v);
            else
                o.staging_size = n;
        } else {
            r = cli_models_arg(&models, argc, argv, &i, "load");
            if (r < 0)
                rc = 2;
            else if (r == 0)
                rc = cli_usage("load", "unknown option '%s'", a);
        }
    }
    if (rc == 0 && models.n == 0) rc = cli_usage("load", "no model given");
    if (rc) {
        cli_models_free(&models);
        return rc;
    }
    tl_model *m = NULL;
    around ar = {now(), 0, 0};
    tl_status s = cli_models_open(&models, &m);
    ar.open_s = now() - ar.open_s;
    cli_models_free(&models);
    if (s != TL_OK) return cli_fail(s);
    bar b = {now(), false};
    if (!quiet && isatty(2)) {
        o.progress = progress;
        o.progress_user = &b;
    }
    tl_warm_pool_set(keep_warm);
    tl_memstats ms0;
    if (tl_memstats_read(&ms0, sizeof ms0) == TL_OK) ar.uss_start = ms0.uss;
    tl_load_result *r = NULL;
    s = tl_model_load(m, &o, &r);
    for (unsigned k = 1; k < repeat && s == TL_OK; k++) {
        tl_load_result_destroy(r); /* into the warm pool, within --keep-warm */
        r = NULL;
        b.t0 = now();
        s = tl_model_load(m, &o, &r);
    }
    if (b.shown) fputc('\n', stderr);
    if (s != TL_OK) {
        rc = cli_fail(s);
        tl_model_close(m);
        return rc;
    }
    const char *notes = tl_load_result_notes(r);
    if (verbose && *notes) {
        for (const char *p = notes; *p;) {
            const char *e = strchr(p, '\n');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            char *line = strndup(p, len);
            fprintf(stderr, "tierload: %s\n", line ? cli_safe(line) : "(out of memory)");
            free(line);
            p += len + (e ? 1 : 0);
        }
    } else {
        for (size_t i = 0; i < tl_load_result_file_count(r); i++) {
            const tl_load_file *f = tl_load_result_file(r, i);
            if (f->direct_fallback)
                fprintf(stderr,
                        "tierload: note: %s: O_DIRECT refused, loaded with buffered reads\n",
                        cli_safe(f->path));
        }
    }
    tl_memstats ms;
    if (tl_memstats_read(&ms, sizeof ms) == TL_OK) ar.uss_end = ms.uss;
    if (json)
        print_json(m, r, &ar);
    else
        print_human(m, r, &ar);
    tl_load_result_destroy(r);
    tl_model_close(m);
    return 0;
}
