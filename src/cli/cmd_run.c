/*
 * cmd_run.c — `tierload run MODEL... --pipeline 'cond,diffusion*20,vae'`:
 * plan exactly as `tierload plan` would with the same flags (or read a
 * `plan --json` document with --plan FILE), create a session, run the
 * pipeline through it with a check of every byte, and report per phase,
 * in total (beside the offline optimum) and for memory.
 */
#include "cli/cli.h"
#include "cli/json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int help(void) {
    printf("usage: tierload run MODEL... [--pipeline SPEC] [plan flags | --plan FILE] [options]\n\n"
           "Carry a plan out: every phase acquires its components where the plan puts them\n"
           "(streamed ones layer by layer, prefetching the next), checks every byte it uses\n"
           "against the file (xxHash64 where the bytes live), and releases them.\n\n"
           "  --pipeline SPEC      phases in order, '+' joins components, '*N' repeats:\n"
           "                       'cond,diffusion*20,vae' (default: the plan's phases, diffusion x20)\n"
           "  --plan FILE          carry out this plan (`tierload plan --json` output)\n"
           "  --host-budget SIZE   RAM for copies of dirty weights (default: free RAM - 512M)\n"
           "  --spill-dir DIR      where spill files go (default TIERLOAD_SPILL_DIR, TMPDIR, /tmp)\n"
           "  --spill-threshold SIZE  spill dirty weights when free RAM is below SIZE\n"
           "  --no-prefetch        streamed layers are loaded only when needed\n"
           "  --no-verify          skip the byte check\n"
           "  --stream-all         acquire every component layer by layer\n"
           "  --sim-compute S      modelled compute on sim devices: S seconds per GiB used\n"
           "  --json               the report as JSON\n");
    fputs(cli_planargs_help(), stdout);
    fputs(cli_models_help(), stdout);
    return 0;
}

typedef struct run_args {
    cli_planargs pa;
    const char *pipeline, *plan_file, *host_budget, *spill_dir, *spill_threshold, *sim_compute;
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
    s = cli_planargs_plan(&ra->pa, &sum, out);
    tl_plan_summary_clear(&sum);
    return s;
}

static void print_human(const tl_run_report *r, const tl_session_stats *st, const tl_memspan *ms,
                        uint64_t pc0, uint64_t pc1) {
    char a[32], b[32], c[32];
    printf("%-24s %9s %12s %7s %7s %7s %9s %9s\n", "phase", "seconds", "moved", "loads", "evict",
           "spills", "prefetch", "mismatch");
    for (size_t i = 0; i < tl_run_report_phase_count(r); i++) {
        const tl_run_phase *p = tl_run_report_phase(r, i);
        char name[80];
        snprintf(name, sizeof name, "%s #%u", p->name, p->pass + 1);
        printf("%-24s %9.3f %12s %7llu %7llu %7llu %9llu %9llu\n", name, p->seconds,
               cli_fmt_size(p->bytes_moved, a, sizeof a), (unsigned long long)p->loads,
               (unsigned long long)p->evictions, (unsigned long long)p->spills,
               (unsigned long long)p->prefetch_hits, (unsigned long long)p->hash_mismatches);
    }
    const tl_run_phase *t = tl_run_report_total(r);
    printf("%-24s %9.3f %12s %7llu %7llu %7llu %9llu %9llu\n", "total", t->seconds,
           cli_fmt_size(t->bytes_moved, a, sizeof a), (unsigned long long)t->loads,
           (unsigned long long)t->evictions, (unsigned long long)t->spills,
           (unsigned long long)t->prefetch_hits, (unsigned long long)t->hash_mismatches);
    uint64_t opt = tl_run_report_optimal_bytes(r);
    printf("\nbytes onto devices %s; offline optimum (furthest next use, same budgets) %s",
           cli_fmt_size(t->bytes_to_devices, a, sizeof a), cli_fmt_size(opt, b, sizeof b));
    if (opt) printf(" (ratio %.3f)", (double)t->bytes_to_devices / (double)opt);
    printf("\nchecked %llu tensors: %llu hash mismatches\n", (unsigned long long)t->tensors_checked,
           (unsigned long long)t->hash_mismatches);
    printf("\nmoved by tier:");
    for (int x = 0; x < TL_TIER_COUNT; x++)
        for (int y = 0; y < TL_TIER_COUNT; y++)
            if (st->moved[x][y])
                printf(" %s->%s %s", tl_tier_name((tl_tier)x), tl_tier_name((tl_tier)y),
                       cli_fmt_size(st->moved[x][y], a, sizeof a));
    printf("\nmemory: RSS anon %s -> %s (peak %s), file %s -> %s (peak %s)\n",
           cli_fmt_size(ms->start.rss_anon, a, sizeof a), cli_fmt_size(ms->end.rss_anon, b, sizeof b),
           cli_fmt_size(ms->rss_anon_peak, c, sizeof c), cli_fmt_size(ms->start.rss_file, a, sizeof a),
           cli_fmt_size(ms->end.rss_file, b, sizeof b), cli_fmt_size(ms->rss_file_peak, c, sizeof c));
    char e[32];
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
                      uint64_t pc0, uint64_t pc1) {
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
        cJSON_AddItemToArray(phases, o);
    }
    const tl_run_phase *t = tl_run_report_total(r);
    cJSON *tot = cJSON_AddObjectToObject(root, "totals");
    cli_json_add_u64(tot, "bytes_moved", t->bytes_moved);
    cli_json_add_u64(tot, "bytes_to_devices", t->bytes_to_devices);
    cli_json_add_u64(tot, "optimal_bytes_moved", tl_run_report_optimal_bytes(r));
    cli_json_add_u64(tot, "hash_mismatches", t->hash_mismatches);
    cli_json_add_u64(tot, "tensors_checked", t->tensors_checked);
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
    int rc = cli_json_print(root, stdout);
    cJSON_Delete(root);
    return rc;
}

static int run_main(int argc, char **argv, cli_models *models) {
    run_args ra;
    memset(&ra, 0, sizeof ra);
    tl_plan_options_init(&ra.pa.o);
    static const char *const opts[] = {"--pipeline", "--plan", "--host-budget", "--spill-dir",
                                       "--spill-threshold", "--sim-compute"};
    const char **slots[] = {&ra.pipeline,  &ra.plan_file,       &ra.host_budget,
                            &ra.spill_dir, &ra.spill_threshold, &ra.sim_compute};
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
        if (!r) r = cli_planargs_arg(&ra.pa, argc, argv, &i, "run");
        if (r < 0) return 2;
        if (r > 0) continue;
        r = cli_models_arg(models, argc, argv, &i, "run");
        if (r <= 0) return r < 0 ? 2 : cli_usage("run", "unknown option '%s'", a);
    }
    if (!models->n) return cli_usage("run", "give MODEL files");
    int rc = cli_planargs_check(&ra.pa, "run");
    if (rc) return rc;
    tl_session_options so;
    tl_session_options_init(&so);
    so.spill_dir = ra.spill_dir;
    if (ra.host_budget && !cli_parse_size(ra.host_budget, &so.host_budget, NULL))
        return cli_usage("run", "--host-budget: bad size '%s'", ra.host_budget);
    if (ra.spill_threshold && !cli_parse_size(ra.spill_threshold, &so.spill_threshold, NULL))
        return cli_usage("run", "--spill-threshold: bad size '%s'", ra.spill_threshold);
    tl_run_options ro;
    tl_run_options_init(&ro);
    ro.pipeline = ra.pipeline;
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
    tl_status st = cli_models_open(models, &m);
    if (!st) st = load_plan(&ra, pf, m, &plan);
    if (pf) fclose(pf);
    if (!st) st = tl_plan_check(plan);
    if (!st && !ra.json) {
        char *text = NULL;
        if (tl_plan_to_text(plan, &text) == TL_OK) fputs(text, stdout);
        free(text);
        fputc('\n', stdout);
    }
    if (!st) st = tl_session_create(m, plan, &so, &s);
    if (!st) {
        pc0 = page_cache(m);
        st = tl_memwatch_create(0, &w);
    }
    if (!st) st = tl_run_pipeline(s, &ro, &rep);
    if (w) {
        tl_memwatch_destroy(w, &span);
        pc1 = page_cache(m);
    }
    if (!st) {
        tl_session_stats stats;
        tl_session_stats_get(s, &stats);
        if (ra.json)
            rc = print_json(rep, &stats, &span, pc0, pc1) ? cli_fail(TL_ERR_IO) : 0;
        else
            print_human(rep, &stats, &span, pc0, pc1);
        if (!rc && tl_run_report_total(rep)->hash_mismatches) {
            fprintf(stderr, "tierload run: %llu hash mismatches\n",
                    (unsigned long long)tl_run_report_total(rep)->hash_mismatches);
            rc = cli_exit_code(TL_ERR_INTEGRITY);
        }
    } else {
        rc = cli_plan_fail(st);
    }
    tl_run_report_destroy(rep);
    tl_session_destroy(s);
    tl_plan_destroy(plan);
    tl_model_close(m);
    return rc;
}

int cmd_run(int argc, char **argv) {
    cli_models models = {0};
    int rc = run_main(argc, argv, &models);
    cli_models_free(&models);
    return rc;
}
