/*
 * svg_plan.c — the plan as a picture: for each GPU one stacked bar per
 * phase (each component's weights on that GPU, full colour when resident
 * for the whole run, lighter when loaded for its phases only; the tensors
 * placed by overrides; then the compute reserves and stream buffers of the
 * components active in the phase), the GPU's budget as a dashed line, and the host RAM the plan uses
 * beside them. Bar heights are exact: the segments of a bar add up to
 * tl_plan_peak for that device and phase. Every bar and segment carries its
 * bytes in data-bytes; the plot's scale is data-px-per-gib on its group.
 */
#include "cli/cli.h"
#include "cli/svg.h"

#include <errno.h>
#include <string.h>

#define BAR_W 64.0
#define GAP 14.0
#define PLOT_H 300.0
#define TOP 60.0
#define LEFT 70.0
#define GIB 1073741824.0

static const char *phase_name(const tl_plan *p, size_t ph, char *buf, size_t n) {
    uint32_t mask = tl_plan_phase_mask(p, ph);
    tl_plan_decision d;
    for (int c = 0; c < TL_COMP_COUNT; c++) /* name only the components the model has */
        if ((mask & (1u << c)) &&
            (tl_plan_decision_of(p, (tl_component)c, &d, sizeof d) || !d.present))
            if (mask & ~(1u << c)) mask &= ~(1u << c);
    size_t o = 0;
    buf[0] = 0;
    for (int c = 0; c < TL_COMP_COUNT && o + 16 < n; c++)
        if (mask & (1u << c))
            o += (size_t)snprintf(buf + o, n - o, "%s%s", o ? "+" : "",
                                  tl_component_name((tl_component)c));
    return buf;
}

int svg_plan_write(const tl_plan *p, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "tierload: %s: %s\n", path, strerror(errno));
        return cli_exit_code(TL_ERR_IO);
    }
    size_t nd = tl_plan_device_count(p), nph = tl_plan_phase_count(p), n_gpu = 0;
    tl_plan_decision dec[TL_COMP_COUNT];
    for (int c = 0; c < TL_COMP_COUNT; c++)
        if (tl_plan_decision_of(p, (tl_component)c, &dec[c], sizeof dec[c])) dec[c].present = false;
    /* the scale: the largest of every peak, budget and the host bytes */
    double vmax = 1;
    for (size_t d = 0; d < nd; d++) {
        if (!tl_plan_device_of(p, d)->is_gpu) continue;
        n_gpu++;
        if ((double)tl_plan_device_budget(p, d) > vmax) vmax = (double)tl_plan_device_budget(p, d);
        for (size_t ph = 0; ph < nph; ph++)
            if ((double)tl_plan_peak(p, d, ph) > vmax) vmax = (double)tl_plan_peak(p, d, ph);
    }
    if ((double)tl_plan_host_bytes(p) > vmax) vmax = (double)tl_plan_host_bytes(p);
    vmax *= 1.08;
    double px_per_byte = PLOT_H / vmax;
    double group_w = (double)nph * (BAR_W + 6) + GAP * 2 + 96; /* room for the budget label */
    double width = LEFT + (double)n_gpu * group_w + (BAR_W + GAP * 3) + 220;
    if (width < 760) width = 760;
    double height = TOP + PLOT_H + 90;
    char a[32], b[32];
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\">\n",
            width, height, width, height);
    fprintf(f, "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#ffffff\"/>\n", width,
            height);
    svg_label(f, LEFT, 24, "start", 16,
              "tierload plan: weights, reserves and budgets per GPU and phase");
    svg_label(f, LEFT, 42, "start", 11, "bytes moved per run %s, host RAM for weights %s",
              cli_fmt_size(tl_plan_moved_per_run(p), a, sizeof a),
              cli_fmt_size(tl_plan_host_bytes(p), b, sizeof b));
    fprintf(f, "<g class=\"plot\" data-px-per-gib=\"%.6f\" data-base-y=\"%.2f\">\n",
            px_per_byte * GIB, TOP + PLOT_H);
    /* axis with a few ticks */
    double base = TOP + PLOT_H;
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n",
            LEFT - 6, TOP, LEFT - 6, base);
    for (int k = 0; k <= 4; k++) {
        double v = vmax / 1.08 * k / 4, y = base - v * px_per_byte;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.2f\" x2=\"%.1f\" y2=\"%.2f\" stroke=\"#ddd\"/>\n",
                LEFT - 6, y, width - 220, y);
        svg_label(f, LEFT - 10, y + 4, "end", 10, "%s", cli_fmt_size((uint64_t)v, a, sizeof a));
    }
    double x = LEFT;
    for (size_t d = 0; d < nd; d++) {
        const tl_plan_device *dv = tl_plan_device_of(p, d);
        if (!dv->is_gpu) continue;
        uint64_t budget = tl_plan_device_budget(p, d);
        fprintf(f, "<g class=\"device\" data-device=\"");
        svg_text_escaped(f, dv->name);
        fprintf(f, "\" data-budget=\"%llu\">\n", (unsigned long long)budget);
        for (size_t ph = 0; ph < nph; ph++) {
            double bx = x + GAP + (double)ph * (BAR_W + 6);
            uint64_t peak = tl_plan_peak(p, d, ph), weights = 0;
            uint32_t mask = tl_plan_phase_mask(p, ph);
            char pn[96];
            fprintf(f, "<g class=\"bar\" data-device=\"");
            svg_text_escaped(f, dv->name);
            fprintf(f, "\" data-phase=\"%zu\" data-phase-name=\"%s\" data-bytes=\"%llu\">\n", ph,
                    phase_name(p, ph, pn, sizeof pn), (unsigned long long)peak);
            double y = base;
            for (int c = 0; c < TL_COMP_COUNT; c++) {
                if (!dec[c].present) continue;
                bool active = (mask >> c) & 1u;
                for (uint32_t k = 0; k < dec[c].n_devices; k++) {
                    if (dec[c].devices[k] != d) continue;
                    if (dec[c].phase_resident && !active) continue;
                    uint64_t w = dec[c].device_bytes[k];
                    if (!w) continue;
                    double h = (double)w * px_per_byte;
                    y -= h;
                    weights += w;
                    fprintf(f,
                            "<rect class=\"seg\" data-kind=\"weights\" data-component=\"%s\" "
                            "data-residency=\"%s\" data-bytes=\"%llu\" x=\"%.2f\" y=\"%.4f\" "
                            "width=\"%.1f\" height=\"%.4f\" fill=\"%s\" fill-opacity=\"%s\" "
                            "stroke=\"#fff\" stroke-width=\"0.5\"><title>%s %s weights "
                            "%s</title></rect>\n",
                            tl_component_name((tl_component)c),
                            dec[c].phase_resident ? "phase" : "run", (unsigned long long)w, bx, y,
                            BAR_W, h, svg_comp_color[c], dec[c].phase_resident ? "0.5" : "1",
                            tl_component_name((tl_component)c),
                            dec[c].phase_resident ? "phase-resident" : "run-resident",
                            cli_fmt_size(w, a, sizeof a));
                }
            }
            uint64_t fixed = tl_plan_override_bytes(p, d);
            if (fixed) {
                double h = (double)fixed * px_per_byte;
                y -= h;
                weights += fixed;
                fprintf(f,
                        "<rect class=\"seg\" data-kind=\"overrides\" data-bytes=\"%llu\" "
                        "x=\"%.2f\" y=\"%.4f\" width=\"%.1f\" height=\"%.4f\" fill=\"#4d4d4d\" "
                        "stroke=\"#fff\" stroke-width=\"0.5\"><title>tensors placed by "
                        "overrides %s</title></rect>\n",
                        (unsigned long long)fixed, bx, y, BAR_W, h,
                        cli_fmt_size(fixed, a, sizeof a));
            }
            if (peak > weights) {
                uint64_t extra = peak - weights;
                double h = (double)extra * px_per_byte;
                y -= h;
                fprintf(f,
                        "<rect class=\"seg\" data-kind=\"reserve\" data-bytes=\"%llu\" x=\"%.2f\" "
                        "y=\"%.4f\" width=\"%.1f\" height=\"%.4f\" fill=\"#bab0ac\" "
                        "stroke=\"#fff\" stroke-width=\"0.5\"><title>compute reserves and stream "
                        "buffers %s</title></rect>\n",
                        (unsigned long long)extra, bx, y, BAR_W, h,
                        cli_fmt_size(extra, a, sizeof a));
            }
            svg_label(f, bx + BAR_W / 2, y - 4, "middle", 9, "%s", cli_fmt_size(peak, a, sizeof a));
            svg_label(f, bx + BAR_W / 2, base + 14, "middle", 9, "%zu: %s", ph + 1, pn);
            fputs("</g>\n", f);
        }
        double by = base - (double)budget * px_per_byte, x1 = x + GAP - 4,
               x2 = x + GAP + (double)nph * (BAR_W + 6);
        fprintf(f,
                "<line class=\"budget\" data-bytes=\"%llu\" x1=\"%.2f\" y1=\"%.4f\" x2=\"%.2f\" "
                "y2=\"%.4f\" stroke=\"#e15759\" stroke-width=\"2\" stroke-dasharray=\"6 3\"/>\n",
                (unsigned long long)budget, x1, by, x2, by);
        svg_label(f, x2 + 4, by + 4, "start", 10, "budget %s", cli_fmt_size(budget, a, sizeof a));
        svg_label(f, (x1 + x2) / 2, base + 32, "middle", 12, "%s (%s)", dv->name,
                  cli_fmt_size(dv->total, b, sizeof b));
        tl_plan_link l;
        if (tl_plan_device_link(p, d, &l, sizeof l) == TL_OK) { /* a host behind a link */
            char c1[32], c2[32];
            svg_label(f, (x1 + x2) / 2, base + 48, "middle", 10,
                      "link %s/s, round trip %.0f us: %s once, %s per run",
                      cli_fmt_size((uint64_t)l.bandwidth, a, sizeof a), l.latency * 1e6,
                      cli_fmt_size(l.push_once, c1, sizeof c1),
                      cli_fmt_size(l.per_run, c2, sizeof c2));
        }
        fputs("</g>\n", f);
        x += group_w;
    }
    /* host RAM for weights, by component */
    {
        double bx = x + GAP, y = base;
        uint64_t host = tl_plan_host_bytes(p);
        fprintf(f, "<g class=\"host\" data-bytes=\"%llu\">\n", (unsigned long long)host);
        for (int c = 0; c < TL_COMP_COUNT; c++) {
            if (!dec[c].present || !dec[c].host_bytes) continue;
            double h = (double)dec[c].host_bytes * px_per_byte;
            y -= h;
            fprintf(
                f,
                "<rect class=\"seg\" data-kind=\"host\" data-component=\"%s\" data-bytes=\"%llu\" "
                "x=\"%.2f\" y=\"%.4f\" width=\"%.1f\" height=\"%.4f\" fill=\"%s\" "
                "fill-opacity=\"0.8\" stroke=\"#fff\" stroke-width=\"0.5\"/>\n",
                tl_component_name((tl_component)c), (unsigned long long)dec[c].host_bytes, bx, y,
                BAR_W, h, svg_comp_color[c]);
        }
        uint64_t fixed = tl_plan_override_bytes(p, tl_plan_device_count(p) - 1);
        if (fixed) {
            double h = (double)fixed * px_per_byte;
            y -= h;
            fprintf(f,
                    "<rect class=\"seg\" data-kind=\"overrides\" data-bytes=\"%llu\" x=\"%.2f\" "
                    "y=\"%.4f\" width=\"%.1f\" height=\"%.4f\" fill=\"#4d4d4d\" "
                    "fill-opacity=\"0.8\" stroke=\"#fff\" stroke-width=\"0.5\"/>\n",
                    (unsigned long long)fixed, bx, y, BAR_W, h);
        }
        svg_label(f, bx + BAR_W / 2, y - 4, "middle", 9, "%s", cli_fmt_size(host, a, sizeof a));
        svg_label(f, bx + BAR_W / 2, base + 32, "middle", 12, "host RAM");
        fputs("</g>\n", f);
    }
    fputs("</g>\n", f);
    /* legend */
    double lx = width - 210, ly = TOP;
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        if (!dec[c].present) continue;
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"%s\"/>\n", lx, ly,
                svg_comp_color[c]);
        svg_label(f, lx + 18, ly + 10, "start", 11, "%s %s (%s)",
                  tl_component_name((tl_component)c), cli_fmt_size(dec[c].bytes, a, sizeof a),
                  tl_plan_mode_name(dec[c].mode));
        ly += 18;
    }
    fprintf(f,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"#888\" "
            "fill-opacity=\"0.5\"/>\n",
            lx, ly);
    svg_label(f, lx + 18, ly + 10, "start", 11, "lighter: loaded per phase");
    ly += 18;
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"#bab0ac\"/>\n", lx,
            ly);
    svg_label(f, lx + 18, ly + 10, "start", 11, "reserves + stream buffers");
    ly += 18;
    fprintf(f,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e15759\" "
            "stroke-width=\"2\" stroke-dasharray=\"6 3\"/>\n",
            lx, ly + 6, lx + 12, ly + 6);
    svg_label(f, lx + 18, ly + 10, "start", 11, "GPU budget");
    fputs("</svg>\n", f);
    if (fclose(f) != 0) {
        fprintf(stderr, "tierload: writing %s: %s\n", path, strerror(errno));
        return cli_exit_code(TL_ERR_IO);
    }
    return 0;
}
