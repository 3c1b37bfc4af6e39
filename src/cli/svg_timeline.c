/*
 * svg_timeline.c — a run over time: for each device (and host RAM copies,
 * when there were any) a lane with the bytes resident on it as stacked areas
 * by component, on the session's clock (the model clock for sim devices,
 * else wall time); the phases as bands behind the lanes; loads, prefetches,
 * drops and spills marked as ticks. Built from the session's event log: a
 * load or prefetch adds its bytes to its device, a drop or spill removes
 * them. Each lane and area carries its end and peak bytes in data-* attributes.
 */
#include "cli/cli.h"
#include "cli/svg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define LEFT 90.0
#define RIGHT 200.0
#define PLOT_W 900.0
#define LANE_H 170.0
#define LANE_GAP 46.0
#define TOP 96.0
#define MAX_POINTS 1500

typedef struct lane {
    int32_t device; /* plan index; -1 = host RAM copies */
    char name[40];
    uint64_t end[TL_COMP_COUNT], peak_total, end_total;
} lane;

static int lane_of(lane *lanes, size_t *n, int32_t device, const tl_plan *p) {
    for (size_t i = 0; i < *n; i++)
        if (lanes[i].device == device) return (int)i;
    if (*n >= TL_PLAN_MAX_DEVICES + 1) return -1;
    lane *l = &lanes[(*n)++];
    memset(l, 0, sizeof *l);
    l->device = device;
    if (device < 0)
        snprintf(l->name, sizeof l->name, "host RAM copies");
    else if ((size_t)device < tl_plan_device_count(p))
        snprintf(l->name, sizeof l->name, "%s", tl_plan_device_of(p, (size_t)device)->name);
    else
        snprintf(l->name, sizeof l->name, "device %d", device);
    return (int)(*n - 1);
}

/* Signed change an event makes to (lane device) bytes; sets *dev. */
static bool effect(const tl_session_event *e, int32_t *dev, int64_t *delta) {
    if ((e->kind == TL_EVENT_LOAD || e->kind == TL_EVENT_PREFETCH) && e->to == TL_TIER_DEVICE) {
        *dev = e->device, *delta = (int64_t)e->bytes;
        return true;
    }
    if ((e->kind == TL_EVENT_DROP || e->kind == TL_EVENT_SPILL) && e->from == TL_TIER_DEVICE) {
        *dev = e->device, *delta = -(int64_t)e->bytes;
        return true;
    }
    return false;
}

static bool ram_effect(const tl_session_event *e, int64_t *delta) {
    if (e->kind == TL_EVENT_SPILL && e->to == TL_TIER_RAM) {
        *delta = (int64_t)e->bytes;
        return true;
    }
    return false;
}

int svg_timeline_write(const tl_session *s, const tl_plan *p, const svg_band *bands, size_t n_bands,
                       const char *path) {
    tl_session_log log;
    tl_session_events_copy(s, 0, NULL, 0, 0, &log, sizeof log);
    size_t kept = (size_t)(log.next - log.first);
    tl_session_event *ev = malloc((kept ? kept : 1) * sizeof *ev);
    if (!ev) return cli_exit_code(TL_ERR_NOMEM);
    size_t n = tl_session_events_copy(s, log.first, ev, kept, sizeof *ev, &log, sizeof log);
    lane lanes[TL_PLAN_MAX_DEVICES + 1];
    size_t nl = 0;
    double t_end = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t d;
        int64_t delta;
        if (ev[i].t > t_end) t_end = ev[i].t;
        if (effect(&ev[i], &d, &delta)) lane_of(lanes, &nl, d, p);
        if (ram_effect(&ev[i], &delta)) lane_of(lanes, &nl, -1, p);
    }
    for (size_t b = 0; b < n_bands; b++)
        if (bands[b].t1 > t_end) t_end = bands[b].t1;
    size_t e_end = (size_t)log.first + n; /* entry numbers count from the session's start */
    for (size_t b = 0; b < n_bands; b++)
        if (bands[b].e1 > e_end) e_end = bands[b].e1;
    /* a clock that never moved (sim devices without a bandwidth model): event order instead */
    bool by_order = t_end <= 0;
    tl_session_event *own = ev; /* the copy is ours */
    if (by_order && n) {
        for (size_t i = 0; i < n; i++) ev[i].t = (double)(log.first + i);
        t_end = (double)e_end;
    }
    if (t_end <= 0) t_end = 1;
    /* per lane: running totals by component, sampled at up to MAX_POINTS change points */
    typedef struct pt {
        double t;
        uint64_t v[TL_COMP_COUNT];
    } pt;
    pt *pts[TL_PLAN_MAX_DEVICES + 1];
    size_t npts[TL_PLAN_MAX_DEVICES + 1];
    memset(pts, 0, sizeof pts);
    int rc = 0;
    for (size_t li = 0; li < nl && !rc; li++) {
        pts[li] = calloc(MAX_POINTS + 2, sizeof(pt));
        if (!pts[li]) rc = cli_exit_code(TL_ERR_NOMEM);
        npts[li] = 0;
    }
    double bucket = t_end / MAX_POINTS;
    for (size_t li = 0; li < nl && !rc; li++) {
        lane *L = &lanes[li];
        int64_t cur[TL_COMP_COUNT] = {0};
        pt *P = pts[li];
        P[0].t = 0;
        npts[li] = 1;
        for (size_t i = 0; i < n; i++) {
            int32_t d = 0;
            int64_t delta = 0;
            bool hit = L->device >= 0 ? (effect(&ev[i], &d, &delta) && d == L->device)
                                      : ram_effect(&ev[i], &delta);
            if (!hit) continue;
            int c = ev[i].component < TL_COMP_COUNT ? (int)ev[i].component : TL_COMP_OTHER;
            cur[c] += delta;
            if (cur[c] < 0) cur[c] = 0;
            uint64_t tot = 0;
            for (int k = 0; k < TL_COMP_COUNT; k++) tot += (uint64_t)cur[k];
            if (tot > L->peak_total) L->peak_total = tot;
            /* one point per time bucket: the last state in it */
            size_t k = npts[li] - 1;
            if (npts[li] > 1 && (size_t)(P[k].t / bucket) == (size_t)(ev[i].t / bucket)) {
            } else if (npts[li] < MAX_POINTS + 1) {
                k = npts[li]++;
            }
            P[k].t = ev[i].t;
            for (int q = 0; q < TL_COMP_COUNT; q++) P[k].v[q] = (uint64_t)cur[q];
        }
        for (int q = 0; q < TL_COMP_COUNT; q++) {
            L->end[q] = (uint64_t)cur[q];
            L->end_total += (uint64_t)cur[q];
        }
        /* close at the end of time */
        pt last = P[npts[li] - 1];
        last.t = t_end;
        P[npts[li]++] = last;
    }
    FILE *f = rc ? NULL : fopen(path, "w");
    if (!rc && !f) {
        fprintf(stderr, "tierload: %s: %s\n", path, strerror(errno));
        rc = cli_exit_code(TL_ERR_IO);
    }
    if (rc) {
        for (size_t li = 0; li < nl; li++) free(pts[li]);
        free(own);
        return rc;
    }
    double width = LEFT + PLOT_W + RIGHT;
    double height = TOP + (double)(nl ? nl : 1) * (LANE_H + LANE_GAP) + 40;
    double xs = PLOT_W / t_end;
    char a[32], b[32];
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\">\n",
            width, height, width, height);
    fprintf(f, "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#ffffff\"/>\n", width, height);
    svg_label(f, LEFT, 24, "start", 16, "tierload run: bytes resident per device over time");
    if (by_order)
        svg_label(f, LEFT, 42, "start", 11, "%zu events, in order (the devices keep no clock)", n);
    else
        svg_label(f, LEFT, 42, "start", 11,
                  "%zu events; time: the session clock (sim devices: model seconds), %.3f s in all",
                  n, t_end);
    if (log.dropped) /* the totals start from what was kept: say so */
        svg_label(f, LEFT, 56, "start", 11,
                  "the log dropped its %llu oldest events: bytes before them are not drawn",
                  (unsigned long long)log.dropped);
    double lanes_bottom = TOP + (double)nl * (LANE_H + LANE_GAP) - LANE_GAP;
    /* phase bands */
    static const char *const band_fill[2] = {"#f3f3f3", "#e8eef6"};
    for (size_t bi = 0; bi < n_bands; bi++) {
        double x0 = LEFT + (by_order ? (double)bands[bi].e0 : bands[bi].t0) * xs;
        double x1 = LEFT + (by_order ? (double)bands[bi].e1 : bands[bi].t1) * xs;
        fprintf(f, "<rect class=\"phase\" data-phase=\"");
        svg_text_escaped(f, bands[bi].name);
        fprintf(f, "\" data-pass=\"%u\" x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" fill=\"%s\"/>\n",
                bands[bi].pass + 1, x0, TOP - 14, x1 - x0 > 0 ? x1 - x0 : 0, lanes_bottom - TOP + 14,
                band_fill[bi % 2]);
        if (x1 - x0 > 28) {
            char lab[80];
            snprintf(lab, sizeof lab, "%s #%u", bands[bi].name, bands[bi].pass + 1);
            svg_label(f, (x0 + x1) / 2, TOP - 3, "middle", 9, "%s", lab);
        }
    }
    for (size_t li = 0; li < nl; li++) {
        lane *L = &lanes[li];
        double y0 = TOP + (double)li * (LANE_H + LANE_GAP), base = y0 + LANE_H;
        uint64_t budget = 0;
        if (L->device >= 0 && (size_t)L->device < tl_plan_device_count(p))
            budget = tl_plan_device_budget(p, (size_t)L->device);
        double vmax = (double)(L->peak_total > budget ? L->peak_total : budget) * 1.05;
        if (vmax <= 0) vmax = 1;
        double ys = LANE_H / vmax;
        fprintf(f, "<g class=\"lane\" data-device=\"");
        svg_text_escaped(f, L->name);
        fprintf(f, "\" data-end-bytes=\"%llu\" data-peak-bytes=\"%llu\" data-base-y=\"%.2f\" "
                   "data-px-per-byte=\"%.12g\">\n",
                (unsigned long long)L->end_total, (unsigned long long)L->peak_total, base, ys);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.2f\" x2=\"%.1f\" y2=\"%.2f\" stroke=\"#333\"/>\n", LEFT,
                base, LEFT + PLOT_W, base);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.2f\" x2=\"%.1f\" y2=\"%.2f\" stroke=\"#333\"/>\n", LEFT, y0,
                LEFT, base);
        svg_label(f, LEFT - 8, base, "end", 10, "0");
        svg_label(f, LEFT - 8, base - (vmax / 1.05) * ys + 4, "end", 10, "%s",
                  cli_fmt_size((uint64_t)(vmax / 1.05), a, sizeof a));
        svg_label(f, LEFT, y0 - 20, "start", 12, "%s: end %s, peak %s", L->name,
                  cli_fmt_size(L->end_total, a, sizeof a), cli_fmt_size(L->peak_total, b, sizeof b));
        /* stacked areas, component by component (bottom first) */
        pt *P = pts[li];
        size_t np = npts[li];
        for (int c = 0; c < TL_COMP_COUNT; c++) {
            bool any = false;
            for (size_t k = 0; k < np && !any; k++) any = P[k].v[c] != 0;
            if (!any) continue;
            fprintf(f, "<polygon class=\"area\" data-component=\"%s\" data-end-bytes=\"%llu\" fill=\"%s\" "
                       "fill-opacity=\"0.85\" points=\"",
                    tl_component_name((tl_component)c), (unsigned long long)L->end[c], svg_comp_color[c]);
            /* a step function: point k holds from P[k].t to P[k+1].t; top edge left to
             * right, then the bottom edge (the areas below) right to left */
            for (size_t k = 0; k < np; k++) {
                uint64_t below = 0;
                for (int q = 0; q < c; q++) below += P[k].v[q];
                double top = base - (double)(below + P[k].v[c]) * ys;
                double x0 = LEFT + P[k].t * xs, x1 = LEFT + (k + 1 < np ? P[k + 1].t : P[k].t) * xs;
                fprintf(f, "%.2f,%.3f %.2f,%.3f ", x0, top, x1, top);
            }
            for (size_t k = np; k-- > 0;) {
                uint64_t below = 0;
                for (int q = 0; q < c; q++) below += P[k].v[q];
                double y = base - (double)below * ys;
                double x0 = LEFT + P[k].t * xs, x1 = LEFT + (k + 1 < np ? P[k + 1].t : P[k].t) * xs;
                fprintf(f, "%.2f,%.3f %.2f,%.3f ", x1, y, x0, y);
            }
            fputs("\"/>\n", f);
        }
        if (budget) {
            double by = base - (double)budget * ys;
            fprintf(f, "<line class=\"budget\" data-bytes=\"%llu\" x1=\"%.1f\" y1=\"%.3f\" x2=\"%.1f\" "
                       "y2=\"%.3f\" stroke=\"#e15759\" stroke-width=\"1.5\" stroke-dasharray=\"6 3\"/>\n",
                    (unsigned long long)budget, LEFT, by, LEFT + PLOT_W, by);
            svg_label(f, LEFT + PLOT_W + 4, by + 4, "start", 10, "budget %s",
                      cli_fmt_size(budget, a, sizeof a));
        }
        /* marks: one tick per kind and pixel column */
        static const struct {
            tl_session_event_kind k;
            const char *cls, *color;
            double dy;
        } marks[] = {{TL_EVENT_LOAD, "load", "#4e79a7", 4},
                     {TL_EVENT_PREFETCH, "prefetch", "#76b7b2", 10},
                     {TL_EVENT_DROP, "drop", "#999999", 16},
                     {TL_EVENT_SPILL, "spill", "#e15759", 22}};
        for (size_t mk = 0; mk < sizeof marks / sizeof marks[0]; mk++) {
            uint64_t count = 0;
            long lastx = -1;
            fprintf(f, "<g class=\"marks\" data-kind=\"%s\" stroke=\"%s\">", marks[mk].cls, marks[mk].color);
            for (size_t i = 0; i < n; i++) {
                int32_t d = 0;
                int64_t delta;
                if (ev[i].kind != marks[mk].k) continue;
                if (L->device >= 0) {
                    if (!effect(&ev[i], &d, &delta) || d != L->device) continue;
                } else if (!ram_effect(&ev[i], &delta)) {
                    continue;
                }
                count++;
                long x = (long)(LEFT + ev[i].t * xs);
                if (x == lastx) continue;
                lastx = x;
                fprintf(f, "<line x1=\"%ld\" y1=\"%.1f\" x2=\"%ld\" y2=\"%.1f\"/>", x,
                        base + marks[mk].dy, x, base + marks[mk].dy + 5);
            }
            fprintf(f, "</g>\n");
            svg_label(f, LEFT + PLOT_W + 4, base + marks[mk].dy + 5, "start", 9, "%s %llu",
                      marks[mk].cls, (unsigned long long)count);
        }
        fputs("</g>\n", f);
    }
    /* legend, in the header */
    double lx = LEFT + PLOT_W - 300, ly = 18;
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        bool any = false;
        for (size_t li = 0; li < nl && !any; li++)
            for (size_t k = 0; k < npts[li] && !any; k++) any = pts[li][k].v[c] != 0;
        if (!any) continue;
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"%s\"/>\n", lx, ly,
                svg_comp_color[c]);
        svg_label(f, lx + 16, ly + 10, "start", 11, "%s", tl_component_name((tl_component)c));
        lx += 100;
    }
    svg_label(f, LEFT + PLOT_W / 2, height - 12, "middle", 11, "%s",
              by_order ? "events (in order)" : "time (s)");
    fputs("</svg>\n", f);
    for (size_t li = 0; li < nl; li++) free(pts[li]);
    free(own);
    if (fclose(f) != 0) {
        fprintf(stderr, "tierload: writing %s: %s\n", path, strerror(errno));
        return cli_exit_code(TL_ERR_IO);
    }
    return 0;
}
