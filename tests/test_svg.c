/*
 * test_svg.c — the pictures: `tierload plan --svg` and `tierload run
 * --timeline` write well-formed XML (checked by a small parser here) whose
 * numbers are the JSON's: each plan bar's bytes equal the plan's peak for
 * that device and phase and its segments' pixel heights add up to those
 * bytes on the plot's scale; the budget lines and host bar are the plan's;
 * each timeline lane ends at the bytes `run --json` reports on that device
 * at the end, its areas add up to that, and the top area's last point sits
 * at that height. Both render with rsvg-convert to a PNG that is not blank
 * (tests/png_nonblank.py decodes it).
 */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a small XML reader: elements with attributes and parents ---- */

typedef struct xattr {
    char *name, *value;
} xattr;
typedef struct xel {
    char *tag;
    xattr a[24];
    int na;
    int parent;
} xel;
typedef struct xdoc {
    xel *e;
    int n, cap;
} xdoc;

static const char *attr(const xel *e, const char *name) {
    for (int i = 0; i < e->na; i++)
        if (!strcmp(e->a[i].name, name)) return e->a[i].value;
    return NULL;
}

/* Parse or fail the test: balanced tags, quoted attributes, no raw '<' or bare '&'. */
static void xml_parse(const char *s, xdoc *d) {
    memset(d, 0, sizeof *d);
    int stack[256], sp = 0;
    const char *p = s;
    while (*p) {
        if (*p != '<') {
            if (*p == '&') {
                const char *semi = strchr(p, ';');
                assert_non_null(semi);
                assert_true(semi - p <= 6);
            }
            p++;
            continue;
        }
        if (!strncmp(p, "<?", 2)) {
            p = strstr(p, "?>");
            assert_non_null(p);
            p += 2;
            continue;
        }
        if (!strncmp(p, "<!--", 4)) {
            p = strstr(p, "-->");
            assert_non_null(p);
            p += 3;
            continue;
        }
        if (p[1] == '/') { /* closing tag */
            const char *q = p + 2, *end = strchr(q, '>');
            assert_non_null(end);
            assert_true(sp > 0);
            const xel *open = &d->e[stack[--sp]];
            if (strlen(open->tag) != (size_t)(end - q) || strncmp(open->tag, q, (size_t)(end - q)))
                fail_msg("</%.*s> closes <%s>", (int)(end - q), q, open->tag);
            p = end + 1;
            continue;
        }
        if (d->n == d->cap) {
            d->cap = d->cap ? d->cap * 2 : 256;
            d->e = realloc(d->e, (size_t)d->cap * sizeof *d->e);
        }
        xel *e = &d->e[d->n];
        memset(e, 0, sizeof *e);
        e->parent = sp ? stack[sp - 1] : -1;
        const char *q = p + 1;
        while (*q && *q != ' ' && *q != '>' && *q != '/') q++;
        e->tag = strndup(p + 1, (size_t)(q - p - 1));
        for (;;) {
            while (*q == ' ' || *q == '\n' || *q == '\t') q++;
            if (*q == '>' || (q[0] == '/' && q[1] == '>')) break;
            assert_true(*q != 0);
            const char *eq = strchr(q, '=');
            assert_non_null(eq);
            assert_true(eq[1] == '"');
            const char *close = strchr(eq + 2, '"');
            assert_non_null(close);
            for (const char *c = eq + 2; c < close; c++) assert_true(*c != '<');
            assert_true(e->na < 24);
            e->a[e->na].name = strndup(q, (size_t)(eq - q));
            e->a[e->na++].value = strndup(eq + 2, (size_t)(close - eq - 2));
            q = close + 1;
        }
        d->n++;
        if (*q == '>') {
            assert_true(sp < 256);
            stack[sp++] = d->n - 1;
            p = q + 1;
        } else {
            p = q + 2;
        }
    }
    assert_int_equal(sp, 0);
    assert_true(d->n > 0);
    assert_string_equal(d->e[0].tag, "svg");
}

static void xml_free(xdoc *d) {
    for (int i = 0; i < d->n; i++) {
        free(d->e[i].tag);
        for (int k = 0; k < d->e[i].na; k++) free(d->e[i].a[k].name), free(d->e[i].a[k].value);
    }
    free(d->e);
}

static bool has_class(const xel *e, const char *cls) {
    const char *c = attr(e, "class");
    return c && !strcmp(c, cls);
}

static double num_attr(const xel *e, const char *name) {
    const char *v = attr(e, name);
    if (!v) fail_msg("<%s> lacks %s", e->tag, name);
    return strtod(v, NULL);
}

static uint64_t jnum(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v)) fail_msg("key %s missing", k);
    return (uint64_t)v->valuedouble;
}

/* Render with rsvg-convert and check that the PNG is not blank. */
static void render_nonblank(const char *svg, const char *dir) {
    if (system("command -v rsvg-convert >/dev/null 2>&1") != 0) {
        /* the other checks of the calling test still count; the program reports a skip */
        if (tu_in_ci()) fail_msg("CI: rsvg-convert is not installed (Debian librsvg2-bin)");
        tu_skip_note("the render: rsvg-convert is not installed (Debian librsvg2-bin)");
        return;
    }
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rsvg-convert -o '%s/out.png' '%s' && /usr/bin/python3 '%s/tests/png_nonblank.py' '%s/out.png' >/dev/null",
             dir, svg, getenv("TL_SOURCE_DIR") ? getenv("TL_SOURCE_DIR") : ".", dir);
    if (system(cmd) != 0) fail_msg("rendering %s gave an error or a blank PNG", svg);
}

static char *mkmodel(const char *dir) {
    char *p = tu_path(dir, "m.safetensors");
    tu_run r = tu_cli_run("mkmodel", p, "--size", "48M", "--tensors", "240", "--profile", "sdxl", NULL);
    assert_int_equal(r.status, 0);
    tu_run_free(&r);
    return p;
}

static void test_plan_svg_matches_json(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *m = mkmodel(dir);
    char *svg = tu_path(dir, "plan.svg");
    const char *devs = "cuda0=40M,cuda1=24M,cpu=1G";
    const char *rs = "diffusion=4M,cond=2M,vae=4M";
    tu_run r = tu_cli_run("plan", m, "--devices", devs, "--reserve", rs, "--json", "--svg", svg, NULL);
    if (r.status) fail_msg("plan: %s", r.err);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    size_t len;
    char *text = tu_read_file(svg, &len);
    xdoc d;
    xml_parse(text, &d);
    const xel *plot = NULL;
    for (int i = 0; i < d.n && !plot; i++)
        if (has_class(&d.e[i], "plot")) plot = &d.e[i];
    assert_non_null(plot);
    double px_per_byte = num_attr(plot, "data-px-per-gib") / 1073741824.0;
    const cJSON *devices = cJSON_GetObjectItemCaseSensitive(j, "devices");
    const cJSON *peaks = cJSON_GetObjectItemCaseSensitive(j, "peaks");
    int bars = 0, budgets = 0;
    for (int i = 0; i < d.n; i++) {
        const xel *e = &d.e[i];
        if (has_class(e, "bar")) {
            const char *dev = attr(e, "data-device");
            int ph = (int)num_attr(e, "data-phase");
            /* the JSON's peak for (device, phase): phases by name, in the order of "phases" */
            const char *phname =
                cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "phases"), ph)->valuestring;
            bool found = false;
            const cJSON *pk;
            cJSON_ArrayForEach(pk, peaks) {
                if (strcmp(cJSON_GetObjectItemCaseSensitive(pk, "device")->valuestring, dev) ||
                    strcmp(cJSON_GetObjectItemCaseSensitive(pk, "phase")->valuestring, phname))
                    continue;
                assert_int_equal((uint64_t)num_attr(e, "data-bytes"), jnum(pk, "bytes"));
                found = true;
            }
            if (!found) fail_msg("no JSON peak for %s phase %d", dev, ph);
            /* segments: bytes add up, and so do pixel heights */
            double h = 0, bytes = 0;
            for (int k = i + 1; k < d.n; k++) {
                if (d.e[k].parent != i || !has_class(&d.e[k], "seg")) continue;
                h += num_attr(&d.e[k], "height");
                bytes += num_attr(&d.e[k], "data-bytes");
            }
            assert_true(fabs(bytes - num_attr(e, "data-bytes")) < 0.5);
            if (fabs(h - bytes * px_per_byte) > 0.02)
                fail_msg("bar %s/%d: %.4f px for %.0f bytes, want %.4f", dev, ph, h, bytes,
                         bytes * px_per_byte);
            bars++;
        }
        if (has_class(e, "budget")) {
            const xel *g = &d.e[e->parent];
            const char *dev = attr(g, "data-device");
            const cJSON *dv;
            bool found = false;
            cJSON_ArrayForEach(dv, devices) {
                if (strcmp(cJSON_GetObjectItemCaseSensitive(dv, "name")->valuestring, dev)) continue;
                assert_int_equal((uint64_t)num_attr(e, "data-bytes"), jnum(dv, "budget"));
                found = true;
            }
            assert_true(found);
            budgets++;
        }
        if (has_class(e, "host"))
            assert_int_equal((uint64_t)num_attr(e, "data-bytes"), jnum(j, "host_bytes"));
    }
    /* two GPUs, one bar per phase each */
    assert_int_equal(budgets, 2);
    assert_int_equal(bars, 2 * cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "phases")));
    render_nonblank(svg, dir);
    xml_free(&d);
    free(text);
    cJSON_Delete(j);
    tu_run_free(&r);
    free(svg);
    free(m);
    tu_tmpdir_rm(dir);
}

static void test_timeline_matches_json(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *m = mkmodel(dir);
    char *svg = tu_path(dir, "run.svg");
    tu_run r = tu_cli_run("run", m, "--sim", "svgsim=12M:bw=16G", "--reserve", "diffusion=0,cond=0,vae=0",
                          "--pipeline", "cond,diffusion*3,vae", "--sim-compute", "1", "--json",
                          "--timeline", svg, NULL);
    if (r.status) fail_msg("run: %s", r.err);
    assert_null(strstr(r.err, "\r")); /* no progress line when not on a terminal */
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    size_t len;
    char *text = tu_read_file(svg, &len);
    xdoc d;
    xml_parse(text, &d);
    const cJSON *devs = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "memory"), "devices");
    int lanes = 0, phases = 0;
    for (int i = 0; i < d.n; i++) {
        const xel *e = &d.e[i];
        if (has_class(e, "phase")) phases++;
        if (!has_class(e, "lane")) continue;
        lanes++;
        const char *dev = attr(e, "data-device");
        const cJSON *dv;
        bool found = false;
        cJSON_ArrayForEach(dv, devs) {
            if (strcmp(cJSON_GetObjectItemCaseSensitive(dv, "name")->valuestring, dev)) continue;
            assert_int_equal((uint64_t)num_attr(e, "data-end-bytes"), jnum(dv, "end"));
            assert_true((uint64_t)num_attr(e, "data-peak-bytes") <= jnum(dv, "peak"));
            found = true;
        }
        assert_true(found);
        double base = num_attr(e, "data-base-y"), ys = num_attr(e, "data-px-per-byte");
        double sum = 0;
        const xel *top = NULL;
        for (int k = i + 1; k < d.n; k++)
            if (d.e[k].parent == i && has_class(&d.e[k], "area")) {
                sum += num_attr(&d.e[k], "data-end-bytes");
                top = &d.e[k];
            }
        assert_true(fabs(sum - num_attr(e, "data-end-bytes")) < 0.5);
        assert_non_null(top);
        /* the top area's top edge ends at the lane's end bytes */
        const char *pts = attr(top, "points");
        int npts = 0;
        for (const char *c = pts; *c; c++) npts += *c == ',';
        const char *c = pts;
        double x = 0, y = 0;
        for (int k = 0; k < npts / 2; k++) {
            assert_int_equal(sscanf(c, "%lf,%lf", &x, &y), 2);
            c = strchr(c, ' ') + 1;
        }
        double want = base - num_attr(e, "data-end-bytes") * ys;
        if (fabs(y - want) > 0.01) fail_msg("top area ends at y %.3f, want %.3f", y, want);
    }
    assert_int_equal(lanes, 1);
    assert_int_equal(phases, 5); /* cond, diffusion x3, vae */
    render_nonblank(svg, dir);
    xml_free(&d);
    free(text);
    cJSON_Delete(j);
    tu_run_free(&r);
    free(svg);
    free(m);
    tu_tmpdir_rm(dir);
}

/* On a terminal (a pty from script(1)), run shows a progress line; with --json it does not. */
static void test_progress_line_on_a_tty(void **state) {
    (void)state;
    if (system("command -v script >/dev/null 2>&1") != 0) {
        if (tu_in_ci()) fail_msg("CI: script(1) (util-linux) is not installed");
        TU_SKIP("script(1) (util-linux) is not installed to give run a terminal");
    }
    char *dir = tu_tmpdir();
    char *m = tu_path(dir, "m.safetensors");
    tu_run r = tu_cli_run("mkmodel", m, "--size", "16M", "--tensors", "60", NULL);
    assert_int_equal(r.status, 0);
    tu_run_free(&r);
    /* not a terminal: nothing extra on stderr */
    r = tu_cli_run("run", m, "--sim", "notty=8M", "--reserve", "diffusion=0,cond=0,vae=0", "--pipeline",
                   "cond,diffusion*2,vae", NULL);
    assert_int_equal(r.status, 0);
    assert_null(strstr(r.err, "pass 2: moved"));
    tu_run_free(&r);
    for (int json = 0; json < 2; json++) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd,
                 "script -qec \"'%s' run '%s' --sim tty%d=8M --reserve diffusion=0,cond=0,vae=0 "
                 "--pipeline cond,diffusion*2,vae%s\" /dev/null > '%s/out.txt'",
                 tu_cli(), m, json, json ? " --json" : "", dir);
        assert_int_equal(system(cmd), 0);
        char *p = tu_path(dir, "out.txt");
        size_t len;
        char *out = tu_read_file(p, &len);
        bool has = strstr(out, "diffusion pass 2: moved") != NULL;
        if (has == (bool)json) fail_msg("progress line %s with%s --json", has ? "shown" : "missing", json ? "" : "out");
        free(out);
        free(p);
    }
    free(m);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_svg_matches_json),
        cmocka_unit_test(test_timeline_matches_json),
        cmocka_unit_test(test_progress_line_on_a_tty),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
