/*
 * cmd_run.c — `tierload run MODEL... --pipeline 'cond,diffusion*20,vae'`:
 * plan exactly as `tierload plan` would with the same flags (or read a
 * `plan --json` document with --plan FILE), create a session, run the
 * pipeline through it with a check of every byte, and report per phase,
 * in total (beside the offline optimum) and for memory.
 */
#include "cli/cli.h"
#include "cli/json.h"
#include "cli/svg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int help(void) {
    printf(
        "usage: tierload run MODEL... [--pipeline SPEC] [plan flags | --plan FILE] [options]\n\n"
        "Carry a plan out: every phase acquires its components where the plan puts them\n"
        "(streamed ones layer by layer, prefetching the next), checks every byte it uses\n"
        "against the file (xxHash64 where the bytes live), and releases them.\n\n"
        "  --pipeline SPEC      phases in order, '+' joins components, '*N' repeats:\n"
        "                       'cond,diffusion*20,vae' (default: the plan's phases, diffusion "
        "x --steps);\n"
        "                       the plan counts its diffusion passes as its steps\n"
        "  --plan FILE          carry out this plan (`tierload plan --json` output)\n"
        "  --host-budget SIZE   RAM for copies of dirty weights (default: free RAM - 512M)\n"
        "  --spill-dir DIR      where spill files go (default TIERLOAD_SPILL_DIR, TMPDIR, /tmp)\n"
        "  --spill-threshold SIZE  spill dirty weights when free RAM is below SIZE\n"
        "  --no-prefetch        streamed layers are loaded only when needed\n"
        "  --no-verify          skip the byte check\n"
        "  --stream-all         acquire every component layer by layer\n"
        "  --sim-compute S      modelled compute on sim devices: S seconds per GiB used\n"
        "  --timeline FILE      draw the run: bytes per device over time by component,\n"
        "                       phases, loads, prefetches, drops and spills (SVG)\n"
        "  --compute ggml       real compute: y = W.x with ggml for every acquired 2-D weight,\n"
        "                       where it lives, compared with the product of the file's bytes\n"
        "  --ggml-dir DIR       ggml's libraries (default TIERLOAD_GGML_DIR)\n"
        "  --compute-threads N  threads of ggml's CPU backend (default: ggml's)\n"
        "  --rpc LIST           (see below) a server lost mid-run (dead, or silent for\n"
        "                       TIERLOAD_RPC_TIMEOUT s, default 30) is dropped: the run plans\n"
        "                       again without it (placement flags dropped) and reloads from\n"
        "                       the file\n"
        "  --json               the report as JSON (with RPC servers' devices: \"links\",\n"
        "                       bytes written, sent and received over each server's\n"
        "                       connection, and what its cache saved)\n"
        "On a terminal (and without --json) a progress line shows phase, pass and bytes moved.\n");
    fputs(cli_loras_help(), stdout);
    fputs(cli_planargs_help(), stdout);
    fputs(cli_models_help(), stdout);
    return 0;
}

typedef struct run_args {
    cli_planargs pa;
    const char *pipeline, *plan_file, *host_budget, *spill_dir, *spill_threshold, *sim_compute;
    const char *timeline;
    const char *compute, *ggml_dir, *compute_threads;
    bool json, no_prefetch, no_verify, stream_all;
} run_args;

/* Page-cache bytes of the model's files now. */
static uint64_t page_cache(const tl_model *m) {
    uint64_t b = 0;
    for (size_t i = 0; i < tl_model_file_count(m); i++) {
        double f;
        if (tl_model_file_residency(m, i, &f) == TL_OK)
            b += (uint64_t)(f * (double)tl_model_file(m, i)->size);
    }
    return b;
}

static tl_status load_plan(run_args *ra, FILE *f, tl_model *m, tl_plan **out) {
    if (f) {
        size_t len = 0;
        char *buf = NULL;
        size_t cap = 0;
        for (;;) {
            if (len + 4096 > cap) {
                cap = cap ? cap * 2 : 65536;
                char *p = realloc(buf, cap);
                if (!p) {
                    free(buf);
                    return TL_ERR_NOMEM;
                }
                buf = p;
            }
            size_t got = fread(buf + len, 1, cap - len, f);
            len += got;
            if (got == 0) break;
        }
        tl_status s = tl_plan_from_json(buf, len, out);
        free(buf);
        if (!s && ra->pa.sim && !ra->pa.sim_added) s = tl_device_sim_add(ra->pa.sim);
        return s;
    }
    tl_plan_summary sum;
    tl_status s = tl_plan_summary_from_model(m, ra->pa.convert, &sum);
    if (s) return s;
    s = cli_planargs_plan(&ra->pa, &sum, m, out);
    tl_plan_summary_clear(&sum);
    return s;
}

/* One line of the per-phase table. */
static void print_row(const char *name, const tl_run_phase *p, bool compute) {
    char a[32];
    printf("%-24s %9.3f %12s %7llu %7llu %7llu %9llu %9llu", name, p->seconds,
           cli_fmt_size(p->bytes_moved, a, sizeof a), (unsigned long long)p->loads,
           (unsigned long long)p->evictions, (unsigned long long)p->spills,
           (unsigned long long)p->prefetch_hits, (unsigned long long)p->hash_mismatches);
    if (compute)
        printf(" %9.3f %8llu %8llu", p->compute_seconds, (unsigned long long)p->products,
               (unsigned long long)p->product_mismatches);
    putchar('\n');
}

/*
 * What crossed the link of each RPC server's device the run used, beside what
 * tierload wrote there (the difference: what the server's cache saved). Into
 * arr when given, else printed.
 */
static void link_traffic(const tl_session_stats *st, cJSON *arr) {
    bool head = false;
    for (size_t d = 0; d < st->n_devices; d++) {
        tl_device *dev = NULL;
        uint64_t sent, recv, written;
        if (tl_device_find(st->devices[d].name, &dev) != TL_OK) continue;
        tl_status s = tl_device_link_traffic(dev, &sent, &recv, &written);
        tl_device_release(dev);
        if (s != TL_OK) continue;
        uint64_t saved = written > sent ? written - sent : 0;
        if (arr) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "device", st->devices[d].name);
            cli_json_add_u64(o, "written", written);
            cli_json_add_u64(o, "sent", sent);
            cli_json_add_u64(o, "received", recv);
            cli_json_add_u64(o, "saved_by_cache", saved);
            cJSON_AddItemToArray(arr, o);
            continue;
        }
        char a[32], b[32], c[32], e[32];
        if (!head) printf("links (bytes over each server's connection since it was added):\n");
        head = true;
        printf("        %s: wrote %s, sent %s, received %s; saved by the server's cache %s\n",
               st->devices[d].name, cli_fmt_size(written, a, sizeof a),
               cli_fmt_size(sent, b, sizeof b), cli_fmt_size(recv, c, sizeof c),
               cli_fmt_size(saved, e, sizeof e));
    }
}

static void print_human(const tl_run_report *r, const tl_session_stats *st, const tl_memspan *ms,
                        uint64_t pc0, uint64_t pc1, bool compute) {
    char a[32], b[32], c[32];
    printf("%-24s %9s %12s %7s %7s %7s %9s %9s%s\n", "phase", "seconds", "moved", "loads", "evict",
           "spills", "prefetch", "mismatch", compute ? "   compute products mismatch" : "");
    for (size_t i = 0; i < tl_run_report_phase_count(r); i++) {
        const tl_run_phase *p = tl_run_report_phase(r, i);
        char name[80];
        snprintf(name, sizeof name, "%s #%u", p->name, p->pass + 1);
        print_row(name, p, compute);
    }
    const tl_run_phase *t = tl_run_report_total(r);
    print_row("total", t, compute);
    uint64_t opt = tl_run_report_optimal_bytes(r);
    printf("\nbytes onto devices %s; offline optimum (furthest next use, same budgets) %s",
           cli_fmt_size(t->bytes_to_devices, a, sizeof a), cli_fmt_size(opt, b, sizeof b));
    if (opt) printf(" (ratio %.3f)", (double)t->bytes_to_devices / (double)opt);
    printf("\nchecked %llu tensors: %llu hash mismatches\n", (unsigned long long)t->tensors_checked,
           (unsigned long long)t->hash_mismatches);
    if (compute)
        printf("computed %llu matrix products with ggml in %.3f s: %llu differ from the file's\n",
               (unsigned long long)t->products, t->compute_seconds,
               (unsigned long long)t->product_mismatches);
    printf("\nmoved by tier:");
    for (int x = 0; x < TL_TIER_COUNT; x++)
        for (int y = 0; y < TL_TIER_COUNT; y++)
            if (st->moved[x][y])
                printf(" %s->%s %s", tl_tier_name((tl_tier)x), tl_tier_name((tl_tier)y),
                       cli_fmt_size(st->moved[x][y], a, sizeof a));
    char d2[32], e[32], f[32];
    printf(
        "\nmemory: RSS anon %s -> %s (peak %s), file %s -> %s (peak %s)\n",
        cli_fmt_size(ms->start.rss_anon, a, sizeof a), cli_fmt_size(ms->end.rss_anon, b, sizeof b),
        cli_fmt_size(ms->rss_anon_peak, c, sizeof c),
        cli_fmt_size(ms->start.rss_file, d2, sizeof d2),
        cli_fmt_size(ms->end.rss_file, e, sizeof e), cli_fmt_size(ms->rss_file_peak, f, sizeof f));
    printf("        page cache of the model files %s -> %s; host copies peak %s, spill peak %s\n",
           cli_fmt_size(pc0, a, sizeof a), cli_fmt_size(pc1, b, sizeof b),
           cli_fmt_size(st->host_peak, c, sizeof c), cli_fmt_size(st->spill_peak, e, sizeof e));
    for (size_t d = 0; d < st->n_devices; d++)
        printf("        %s: 0 -> %s (peak %s, budget %s)\n", st->devices[d].name,
               cli_fmt_size(st->devices[d].used, a, sizeof a),
               cli_fmt_size(st->devices[d].peak, b, sizeof b),
               cli_fmt_size(st->devices[d].budget, c, sizeof c));
}

static int print_json(const tl_run_report *r, const tl_session_stats *st, const tl_memspan *ms,
                      uint64_t pc0, uint64_t pc1, const cli_loras *loras, bool compute) {
    cJSON *root = cJSON_CreateObject();
    cJSON *phases = cJSON_AddArrayToObject(root, "phases");
    for (size_t i = 0; i < tl_run_report_phase_count(r); i++) {
        const tl_run_phase *p = tl_run_report_phase(r, i);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", p->name);
        cli_json_add_u64(o, "pass", p->pass + 1);
        cJSON_AddNumberToObject(o, "seconds", p->seconds);
        cJSON_AddNumberToObject(o, "model_seconds", p->model_seconds);
        cli_json_add_u64(o, "bytes_moved", p->bytes_moved);
        cli_json_add_u64(o, "bytes_to_devices", p->bytes_to_devices);
        cli_json_add_u64(o, "loads", p->loads);
        cli_json_add_u64(o, "evictions", p->evictions);
        cli_json_add_u64(o, "drops", p->drops);
        cli_json_add_u64(o, "spills", p->spills);
        cli_json_add_u64(o, "prefetch_hits", p->prefetch_hits);
        cli_json_add_u64(o, "prefetch_misses", p->prefetch_misses);
        cli_json_add_u64(o, "hash_mismatches", p->hash_mismatches);
        if (compute) {
            cJSON_AddNumberToObject(o, "compute_seconds", p->compute_seconds);
            cli_json_add_u64(o, "products", p->products);
            cli_json_add_u64(o, "product_mismatches", p->product_mismatches);
        }
        cJSON_AddItemToArray(phases, o);
    }
    const tl_run_phase *t = tl_run_report_total(r);
    cJSON *tot = cJSON_AddObjectToObject(root, "totals");
    cli_json_add_u64(tot, "bytes_moved", t->bytes_moved);
    cli_json_add_u64(tot, "bytes_to_devices", t->bytes_to_devices);
    cli_json_add_u64(tot, "optimal_bytes_moved", tl_run_report_optimal_bytes(r));
    cli_json_add_u64(tot, "hash_mismatches", t->hash_mismatches);
    cli_json_add_u64(tot, "tensors_checked", t->tensors_checked);
    if (compute) {
        cJSON_AddNumberToObject(tot, "compute_seconds", t->compute_seconds);
        cli_json_add_u64(tot, "products", t->products);
        cli_json_add_u64(tot, "product_mismatches", t->product_mismatches);
    }
    cli_json_add_u64(tot, "evictions", t->evictions);
    cli_json_add_u64(tot, "drops", t->drops);
    cli_json_add_u64(tot, "spills", t->spills);
    cli_json_add_u64(tot, "loads", t->loads);
    cli_json_add_u64(tot, "prefetch_hits", t->prefetch_hits);
    cli_json_add_u64(tot, "prefetch_misses", t->prefetch_misses);
    cli_json_add_u64(tot, "oom_recoveries", st->oom_recoveries);
    cJSON_AddNumberToObject(tot, "seconds", t->seconds);
    cJSON_AddNumberToObject(tot, "model_seconds", t->model_seconds);
    cJSON *tiers = cJSON_AddObjectToObject(tot, "moved_by_tier");
    for (int x = 0; x < TL_TIER_COUNT; x++)
        for (int y = 0; y < TL_TIER_COUNT; y++)
            if (st->moved[x][y]) {
                char k[32];
                snprintf(k, sizeof k, "%s->%s", tl_tier_name((tl_tier)x), tl_tier_name((tl_tier)y));
                cli_json_add_u64(tiers, k, st->moved[x][y]);
            }
    if (loras->n && loras->reports) {
        cJSON *la = cJSON_AddArrayToObject(root, "loras");
        for (size_t i = 0; i < loras->n; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "path", loras->paths[i]);
            cJSON_AddNumberToObject(o, "scale", loras->scales[i]);
            cli_json_add_u64(o, "modules", loras->reports[i].n_modules);
            cli_json_add_u64(o, "matched", loras->reports[i].n_matched);
            cli_json_add_u64(o, "unmatched", loras->reports[i].n_unmatched);
            cJSON_AddItemToArray(la, o);
        }
    }
    cJSON *mem = cJSON_AddObjectToObject(root, "memory");
    cli_json_add_u64(mem, "rss_anon_start", ms->start.rss_anon);
    cli_json_add_u64(mem, "rss_anon_end", ms->end.rss_anon);
    cli_json_add_u64(mem, "rss_anon_peak", ms->rss_anon_peak);
    cli_json_add_u64(mem, "rss_file_start", ms->start.rss_file);
    cli_json_add_u64(mem, "rss_file_end", ms->end.rss_file);
    cli_json_add_u64(mem, "rss_file_peak", ms->rss_file_peak);
    cli_json_add_u64(mem, "page_cache_start", pc0);
    cli_json_add_u64(mem, "page_cache_end", pc1);
    cli_json_add_u64(mem, "host_copies_peak", st->host_peak);
    cli_json_add_u64(mem, "spill_peak", st->spill_peak);
    cli_json_add_u64(mem, "staging_bound", st->staging_bound);
    cJSON *devs = cJSON_AddArrayToObject(mem, "devices");
    for (size_t d = 0; d < st->n_devices; d++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", st->devices[d].name);
        cli_json_add_u64(o, "start", 0);
        cli_json_add_u64(o, "end", st->devices[d].used);
        cli_json_add_u64(o, "peak", st->devices[d].peak);
        cli_json_add_u64(o, "budget", st->devices[d].budget);
        cJSON_AddItemToArray(devs, o);
    }
    cJSON *links = cJSON_CreateArray();
    link_traffic(st, links);
    if (cJSON_GetArraySize(links))
        cJSON_AddItemToObject(root, "links", links);
    else
        cJSON_Delete(links);
    int rc = cli_json_print(root, stdout);
    cJSON_Delete(root);
    return rc;
}

/* What the per-step callback keeps: phase bands for the timeline, the progress line. */
typedef struct run_watch {
    svg_band *bands;
    size_t n, cap;
    double last_t;    /* session clock at the previous step */
    size_t last_e;    /* events logged by then */
    tl_device *clock; /* the first sim device of the plan (borrowed), NULL when none */
    bool progress;
    bool oom;
} run_watch;

/*
 * The session's clock: the first sim device's model clock (what the event log
 * uses), else the last event's time. *n_events gets the log's length.
 */
static double session_now(const tl_session *s, tl_device *clock, size_t *n_events) {
    tl_session_log log;
    tl_session_event last;
    tl_session_events_copy(s, 0, NULL, 0, 0, &log, sizeof log);
    *n_events = (size_t)log.next;
    double t;
    if (clock && tl_device_sim_clock(clock, &t) == TL_OK) return t;
    return log.next && tl_session_events_copy(s, log.next - 1, &last, 1, sizeof last, NULL, 0) ? last.t : 0;
}

/* Time of event i, or `otherwise` when there is none (yet, or any longer). */
static double event_time(const tl_session *s, size_t i, double otherwise) {
    tl_session_event e;
    tl_session_log log;
    return tl_session_events_copy(s, i, &e, 1, sizeof e, &log, sizeof log) && log.first <= i ? e.t : otherwise;
}

static tl_status on_step(void *user, tl_session *s, const char *phase, uint32_t pass,
                         tl_component c, size_t layer, const tl_acquired *a) {
    (void)c, (void)a, (void)layer;
    run_watch *w = user;
    size_t ne;
    double now = session_now(s, w->clock, &ne);
    svg_band *cur = w->n ? &w->bands[w->n - 1] : NULL;
    if (!cur || strcmp(cur->name, phase) != 0 || cur->pass != pass) {
        if (cur) { /* the pass ended where the next one's first move began */
            cur->t1 = event_time(s, w->last_e, now);
            if (cur->t1 < w->last_t) cur->t1 = w->last_t;
            cur->e1 = w->last_e;
        }
        if (w->n == w->cap) {
            size_t cap = w->cap ? w->cap * 2 : 32;
            svg_band *v = realloc(w->bands, cap * sizeof *v);
            if (!v) {
                w->oom = true;
                return TL_OK;
            }
            w->bands = v;
            w->cap = cap;
        }
        cur = &w->bands[w->n++];
        memset(cur, 0, sizeof *cur);
        snprintf(cur->name, sizeof cur->name, "%s", phase);
        cur->pass = pass;
        cur->t0 = w->n > 1 ? w->bands[w->n - 2].t1 : 0;
        cur->e0 = w->n > 1 ? w->bands[w->n - 2].e1 : 0;
    }
    cur->t1 = now;
    cur->e1 = ne;
    w->last_t = now;
    w->last_e = ne;
    if (w->progress) {
        tl_session_stats st;
        char b[32];
        if (tl_session_stats_get(s, &st, sizeof st) == TL_OK)
            fprintf(stderr, "\r\033[K%s pass %u: moved %s, %llu loads, %llu evictions", phase,
                    pass + 1, cli_fmt_size(st.bytes_moved, b, sizeof b),
                    (unsigned long long)st.loads, (unsigned long long)st.evictions);
    }
    return TL_OK;
}

/*
 * The plan counts the pipeline's own diffusion passes (its --steps), so that
 * the bytes it says a run moves are the run's: --steps is taken from the
 * pipeline, and a --steps that disagrees with it is an error.
 */
static int steps_from_pipeline(run_args *ra) {
    uint32_t passes[TL_COMP_COUNT];
    tl_status s = tl_run_pipeline_passes(ra->pipeline, passes);
    if (s) return cli_fail(s);
    uint32_t d = passes[TL_COMP_DIFFUSION], c = passes[TL_COMP_CONTROLNET];
    if (d && c && d != c)
        return cli_usage("run",
                         "--pipeline runs diffusion %u times and controlnet %u times; a plan "
                         "counts one number of steps for both",
                         d, c);
    uint32_t n2 = passes[TL_COMP_DIFFUSION2];
    if (n2 && ra->pa.steps2 && ra->pa.o.steps2 != n2)
        return cli_usage("run", "--steps-2 %u, but --pipeline runs diffusion2 %u times",
                         ra->pa.o.steps2, n2);
    if (n2) ra->pa.o.steps2 = n2;
    uint32_t n = d ? d : c;
    if (!n) return 0;
    if (ra->pa.steps && ra->pa.o.steps != n)
        return cli_usage("run", "--steps %u, but --pipeline runs diffusion %u times", ra->pa.o.steps,
                         n);
    ra->pa.o.steps = n;
    for (int k = 0; k < TL_COMP_COUNT; k++)
        if (k != TL_COMP_DIFFUSION && k != TL_COMP_CONTROLNET && k != TL_COMP_DIFFUSION2 &&
            passes[k] > 1)
            fprintf(stderr,
                    "tierload: --pipeline runs %s %u times; the plan's bytes per run count it "
                    "once\n",
                    tl_component_name((tl_component)k), passes[k]);
    return 0;
}

static int run_main(int argc, char **argv, cli_models *models, cli_loras *loras, bool parse_only) {
    run_args ra;
    memset(&ra, 0, sizeof ra);
    tl_plan_options_init(&ra.pa.o);
    static const char *const opts[] = {
        "--pipeline",    "--plan",     "--host-budget", "--spill-dir", "--spill-threshold",
        "--sim-compute", "--timeline", "--compute",     "--ggml-dir",  "--compute-threads"};
    const char **slots[] = {&ra.pipeline,        &ra.plan_file,      &ra.host_budget, &ra.spill_dir,
                            &ra.spill_threshold, &ra.sim_compute,    &ra.timeline,    &ra.compute,
                            &ra.ggml_dir,        &ra.compute_threads};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return help();
        if (!strcmp(a, "--json")) {
            ra.json = true;
            continue;
        }
        if (!strcmp(a, "--no-prefetch")) {
            ra.no_prefetch = true;
            continue;
        }
        if (!strcmp(a, "--no-verify")) {
            ra.no_verify = true;
            continue;
        }
        if (!strcmp(a, "--stream-all")) {
            ra.stream_all = true;
            continue;
        }
        for (size_t k = 0; k < sizeof opts / sizeof opts[0] && !r; k++)
            r = cli_opt(argc, argv, &i, "run", opts[k], slots[k]);
        if (!r) r = cli_loras_arg(loras, argc, argv, &i, "run");
        if (!r) r = cli_planargs_arg(&ra.pa, argc, argv, &i, "run");
        if (r < 0) return 2;
        if (r > 0) continue;
        r = cli_models_arg(models, argc, argv, &i, "run");
        if (r <= 0) return r < 0 ? 2 : cli_usage("run", "unknown option '%s'", a);
    }
    if (parse_only) return 0;
    int rc = cli_planargs_check(&ra.pa, "run");
    if (rc) return rc < 0 ? 0 : rc;
    if (ra.pipeline && !ra.plan_file && (rc = steps_from_pipeline(&ra))) return rc;
    if (!models->n) return cli_usage("run", "give MODEL files");
    tl_session_options so;
    tl_session_options_init(&so);
    so.spill_dir = ra.spill_dir;
    if (ra.pa.convert != TL_DTYPE_INVALID) { /* --type: the session keeps what the plan counts */
        so.convert = true;
        so.dtype = ra.pa.convert;
    }
    so.type_rules = ra.pa.o.type_rules; /* and --tensor-type-rules */
    if (ra.timeline) so.event_cap = (size_t)1 << 24; /* a whole run's entries: the drawing needs them all */
    if (ra.host_budget && !cli_parse_size(ra.host_budget, &so.host_budget, NULL))
        return cli_usage("run", "--host-budget: bad size '%s'", ra.host_budget);
    if (ra.spill_threshold && !cli_parse_size(ra.spill_threshold, &so.spill_threshold, NULL))
        return cli_usage("run", "--spill-threshold: bad size '%s'", ra.spill_threshold);
    tl_run_options ro;
    tl_run_options_init(&ro);
    ro.pipeline = ra.pipeline;
    ro.steps = ra.pa.o.steps;
    ro.steps2 = ra.pa.o.steps2;
    ro.no_prefetch = ra.no_prefetch;
    ro.no_verify = ra.no_verify;
    ro.stream_all = ra.stream_all;
    if (ra.sim_compute) {
        char *end;
        ro.sim_compute_s_per_gib = strtod(ra.sim_compute, &end);
        if (*end || !(ro.sim_compute_s_per_gib >= 0))
            return cli_usage("run", "--sim-compute: expected seconds per GiB, got '%s'",
                             ra.sim_compute);
    }
    if (ra.compute) {
        if (strcmp(ra.compute, "ggml") && strcmp(ra.compute, "none"))
            return cli_usage("run", "--compute: expected 'ggml' or 'none', got '%s'", ra.compute);
        ro.compute = strcmp(ra.compute, "ggml") ? TL_RUN_COMPUTE_NONE : TL_RUN_COMPUTE_GGML;
    }
    ro.ggml_dir = ra.ggml_dir;
    if (ra.compute_threads) {
        char *end;
        long n = strtol(ra.compute_threads, &end, 10);
        if (*end || n < 1 || n > 1024)
            return cli_usage("run", "--compute-threads: expected 1..1024, got '%s'",
                             ra.compute_threads);
        ro.compute_threads = (int)n;
    }

    tl_model *m = NULL;
    tl_plan *plan = NULL;
    tl_session *s = NULL;
    tl_run_report *rep = NULL;
    tl_memwatch *w = NULL;
    tl_memspan span;
    uint64_t pc0 = 0, pc1 = 0;
    FILE *pf = NULL;
    if (ra.plan_file && !(pf = fopen(ra.plan_file, "rb"))) {
        fprintf(stderr, "tierload run: %s: %s\n", ra.plan_file, strerror(errno));
        return cli_exit_code(errno == ENOENT ? TL_ERR_NOT_FOUND : TL_ERR_IO);
    }
    models->writable = loras->n > 0;
    tl_status st = cli_models_open(models, &m);
    if (!st) st = load_plan(&ra, pf, m, &plan);
    if (pf) fclose(pf);
    if (!st) st = tl_plan_check(plan);
    if (!st && !ra.json) {
        char *text = NULL;
        if (tl_plan_to_text(plan, &text) == TL_OK) fputs(text, stdout);
        free(text);
        if (!ra.pa.fit_dry_run) fputc('\n', stdout);
    }
    if (ra.pa.fit_dry_run && !st) { /* print the plan (above, or as JSON) and stop */
        if (ra.json) {
            char *text = NULL;
            if (tl_plan_to_json(plan, &text) == TL_OK) printf("%s\n", text);
            free(text);
        }
        if (ra.pa.svg) rc = svg_plan_write(plan, ra.pa.svg);
        tl_plan_destroy(plan);
        tl_model_close(m);
        return rc;
    }
    if (ra.pa.fit_dry_run && st == TL_ERR_INFEASIBLE && plan) {
        char *text = NULL;
        if (tl_plan_to_text(plan, &text) == TL_OK) fputs(text, stdout);
        free(text);
    }
    if (!st && ra.pa.svg && (rc = svg_plan_write(plan, ra.pa.svg)) != 0) {
        tl_plan_destroy(plan);
        tl_model_close(m);
        return rc;
    }
    if (!st) st = tl_session_create(m, plan, &so, &s);
    if (!st && (rc = cli_loras_apply(loras, m, s, ra.json ? NULL : stdout)) != 0) {
        tl_session_destroy(s);
        tl_plan_destroy(plan);
        tl_model_close(m);
        return rc;
    }
    if (!st) {
        pc0 = page_cache(m);
        st = tl_memwatch_create(0, &w);
    }
    run_watch watch;
    memset(&watch, 0, sizeof watch);
    watch.progress = !ra.json && isatty(STDERR_FILENO);
    for (size_t d = 0; plan && d < tl_plan_device_count(plan) && !watch.clock; d++) {
        tl_device *dv = NULL;
        if (tl_plan_device_of(plan, d)->is_gpu &&
            tl_device_find(tl_plan_device_of(plan, d)->name, &dv) == TL_OK &&
            tl_device_kind_of(dv) == TL_DEVICE_SIM)
            watch.clock = dv;
    }
    ro.step = on_step;
    ro.user = &watch;
    if (!st) st = tl_run_pipeline(s, &ro, &rep);
    if (watch.progress) fputs("\r\033[K", stderr);
    if (watch.n) {
        svg_band *lb = &watch.bands[watch.n - 1];
        lb->t1 = session_now(s, watch.clock, &lb->e1);
    }
    if (w) {
        tl_memwatch_destroy(w, &span, sizeof span);
        pc1 = page_cache(m);
    }
    if (!st) {
        tl_session_stats stats;
        tl_session_stats_get(s, &stats, sizeof stats);
        if (ra.json)
            rc = print_json(rep, &stats, &span, pc0, pc1, loras, ro.compute) ? cli_fail(TL_ERR_IO)
                                                                             : 0;
        else
            print_human(rep, &stats, &span, pc0, pc1, ro.compute);
        if (!ra.json) link_traffic(&stats, NULL);
        if (!rc && ra.timeline) rc = svg_timeline_write(s, plan, watch.bands, watch.n, ra.timeline);
        if (!rc && tl_run_report_total(rep)->hash_mismatches) {
            fprintf(stderr, "tierload run: %llu hash mismatches\n",
                    (unsigned long long)tl_run_report_total(rep)->hash_mismatches);
            rc = cli_exit_code(TL_ERR_INTEGRITY);
        }
        if (!rc && tl_run_report_total(rep)->product_mismatches) {
            fprintf(stderr, "tierload run: %llu matrix products differ from the file's\n",
                    (unsigned long long)tl_run_report_total(rep)->product_mismatches);
            rc = cli_exit_code(TL_ERR_INTEGRITY);
        }
    } else {
        rc = cli_plan_fail(st);
    }
    free(watch.bands);
    tl_run_report_destroy(rep);
    tl_session_destroy(s);
    tl_plan_destroy(plan);
    tl_model_close(m);
    return rc;
}

static int run_entry(int argc, char **argv, bool parse_only) {
    cli_models models = {0};
    cli_loras loras = {0};
    int rc = run_main(argc, argv, &models, &loras, parse_only);
    cli_loras_free(&loras);
    cli_models_free(&models);
    return rc;
}

static int run_once(int argc, char **argv) {
    return run_entry(argc, argv, false);
}

int cmd_run(int argc, char **argv) {
    return cli_run_rpc_retry(argc, argv, run_once);
}

int cmd_run_check_args(int argc, char **argv) {
    return run_entry(argc, argv, true);
}
