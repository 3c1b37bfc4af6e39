/*
 * cmd_plan.c — `tierload plan MODEL... | --profile NAME`: where every
 * component goes under the device budgets, for the real devices (and --sim
 * ones) or for hypothetical hardware (--devices 'cuda0=16G,cuda1=10G'); the
 * human form or --json (the document `tierload run --plan FILE` accepts).
 */
#include "cli/cli.h"
#include "cli/svg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int help(void) {
    printf("usage: tierload plan MODEL... [options]\n"
           "       tierload plan --profile NAME [options]\n\n"
           "Plan where each component (diffusion, cond, vae, controlnet) goes under memory "
           "budgets.\n"
           "Pure: nothing is loaded. Exit status 11 when the plan does not fit.\n\n"
           "  --profile NAME       plan a built-in synthetic model instead of files (%s)\n",
           tl_plan_profile_names());
    fputs(cli_planargs_help(), stdout);
    fputs("  --json               print the plan as JSON\n", stdout);
    fputs(cli_models_help(), stdout);
    return 0;
}

static int plan_main(int argc, char **argv, cli_models *models);

/*
 * Print a planner failure in the CLI's words: the library names specs and
 * options by their tl_plan_options fields; the CLI names its flags.
 */

/* Owns the model list, so every return path of plan_main frees it. */
int cmd_plan(int argc, char **argv) {
    cli_models models = {0};
    int rc = plan_main(argc, argv, &models);
    cli_models_free(&models);
    return rc;
}

static int plan_main(int argc, char **argv, cli_models *models) {
    const char *profile = NULL;
    cli_planargs pa;
    memset(&pa, 0, sizeof pa);
    tl_plan_options_init(&pa.o);
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return help();
        else if (!strcmp(a, "--json"))
            json = true;
        else if ((r = cli_opt(argc, argv, &i, "plan", "--profile", &v)) != 0) {
            if (r < 0) return 2;
            profile = v;
        } else if ((r = cli_planargs_arg(&pa, argc, argv, &i, "plan")) != 0) {
            if (r < 0) return 2;
        } else {
            r = cli_models_arg(models, argc, argv, &i, "plan");
            if (r <= 0) return r < 0 ? 2 : cli_usage("plan", "unknown option '%s'", a);
        }
        if (r < 0) return 2;
    }
    int rc = cli_planargs_check(&pa, "plan");
    if (rc) return rc < 0 ? 0 : rc;
    size_t n_paths = models->n;
    if (!profile && !n_paths) return cli_usage("plan", "give MODEL files or --profile NAME");
    if (profile && n_paths) return cli_usage("plan", "give MODEL files or --profile, not both");
    if (profile && pa.o.overrides)
        return cli_usage("plan", "--override-tensor matches tensor names: give MODEL files, not "
                                 "--profile");
    if (profile && pa.o.type_rules)
        return cli_usage("plan", "--tensor-type-rules matches tensor names: give MODEL files, not "
                                 "--profile");

    tl_plan_summary sum;
    tl_model *m = NULL;
    tl_status s;
    if (profile) {
        s = tl_plan_summary_profile(profile, &sum);
    } else {
        s = cli_models_open(models, &m);
        if (!s) s = tl_plan_summary_from_model(m, pa.convert, &sum);
    }
    if (s) {
        tl_model_close(m);
        return cli_plan_fail(s);
    }
    if (profile && pa.type)
        fprintf(stderr,
                "tierload plan: --type is ignored with --profile (profiles have fixed sizes)\n");

    tl_plan *plan = NULL;
    s = cli_planargs_plan(&pa, &sum, m, &plan);
    tl_plan_summary_clear(&sum);
    tl_model_close(m);
    if (s) return cli_plan_fail(s);
    char *text = NULL;
    s = json ? tl_plan_to_json(plan, &text) : tl_plan_to_text(plan, &text);
    if (s) {
        tl_plan_destroy(plan);
        return cli_plan_fail(s);
    }
    if (json) {
        cli_json_write(text, stdout);
        fputc('\n', stdout);
    } else {
        cli_fputs_safe(text, stdout);
    }
    tl_free(text);
    if (pa.svg) {
        rc = svg_plan_write(plan, pa.svg);
        if (rc) {
            tl_plan_destroy(plan);
            return rc;
        }
    }
    s = tl_plan_check(plan);
    tl_plan_destroy(plan);
    if (s) return cli_plan_fail(s);
    return 0;
}
