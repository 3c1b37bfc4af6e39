/*
 * test_plan_exact.c — small planner cases computed by hand: every field of
 * every decision (mode, residency, devices, bytes per device, layer ranges
 * [begin,end), host bytes, bytes moved per run) and every GPU's peak per
 * phase, in MiB. The computation is in the comment above each case, from
 * the model in tierload.h; nothing here comes from running the planner.
 * Also: why flux-f16's VAE is run-resident at some budgets and
 * phase-resident at others (the "tie-break" rows of cases.inc).
 *
 * Phases are the default three: 0 = cond, 1 = diffusion+controlnet, 2 = vae;
 * diffusion and controlnet make 20 passes per run (the default steps).
 */
#include "helpers/testutil.h"

#include "plan/check.inc"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1024ull * 1024)

typedef struct comp_def {
    int comp; /* tl_component, -1 ends the list */
    uint64_t other;
    uint32_t n_layers;
    uint64_t layer[12];
    uint32_t matrix_pct; /* row-splittable share of each layer */
} comp_def;

typedef struct dec_want {
    int comp; /* -1 ends the list */
    tl_plan_mode mode;
    bool phase;
    uint32_t n;
    const char *dev[3];
    uint64_t bytes[3];
    uint32_t lb[3], le[3];
    uint64_t host, moved;
} dec_want;

typedef struct exact_case {
    const char *name;
    comp_def comps[4];
    const char *devices;
    const char *reserve;
    bool clip_on_cpu;
    dec_want want[4];
    uint64_t peak[3][3]; /* [GPU in order][phase] */
    uint32_t offload, phase_only, row_split; /* tl_plan_options masks */
} exact_case;

#define BIT(c) (1u << (c))

#define END                                                                                        \
    { -1, 0, 0, {0}, 0 }
#define WEND                                                                                       \
    { -1, 0, false, 0, {0}, {0}, {0}, {0}, 0, 0 }

static const exact_case cases[] = {
    /*
     * A. Layer split over two GPUs. diffusion: other 100, ten layers of 100
     * (1100), no matrices (no row split), reserve 0. g0 = 700, g1 = 600.
     * Neither GPU holds 1100, so the best score is the split over both.
     * Room for layers: g0 700 - 100 (other) = 600, g1 600; sum 1200 for
     * 1000 of layers. g0's share: 1000 * 600 / 1200 = 500: layers are added
     * while the sum so far plus half the next layer is below 500: 0+50,
     * ..., 400+50 < 500 gives five layers [0,5) = 500, 500+50 is not.
     * g0 = 500 + 100 (other) = 600, g1 = layers [5,10) = 500 <= 600.
     * Run residency (phase residency would move 1100 per run for nothing).
     * Peaks: run weights count in every phase: g0 600, g1 500.
     * (A split giving g0 one layer more, [0,6) = 700, would still fit g0.)
     */
    {"layer split",
     {{TL_COMP_DIFFUSION, 100, 10, {100, 100, 100, 100, 100, 100, 100, 100, 100, 100}, 0}, END},
     "g0=700M,g1=600M",
     "diffusion=0",
     false,
     {{TL_COMP_DIFFUSION,
       TL_PLAN_MODE_LAYER_SPLIT,
       false,
       2,
       {"g0", "g1"},
       {600, 500},
       {0, 5},
       {5, 10},
       0,
       0},
      WEND},
     {{600, 600, 600}, {500, 500, 500}},
     0,
     0,
     0},
    /*
     * B. Pure streaming, the largest unit being the non-layer bytes.
     * diffusion: other 300, four layers of 200 (1100), reserve 0; g0 = 650.
     * Whole: 1100 > 650. Streaming with resident layers keeps the other
     * bytes resident plus two buffers of the largest layer: 300 + 400 = 700
     * > 650, no. Pure streaming streams every unit (other, layers) through
     * two buffers of the largest unit, max(300, 200) = 300: 600 <= 650.
     * Nothing resident: bytes 0, range [0,0), host 1100, moved 1100 x 20 =
     * 22000. Run and phase residency tie (nothing resident); run comes
     * first. Peaks: the buffers count in the diffusion phase only: 0, 600, 0.
     * (Buffers of the largest layer would make the peak 400.)
     */
    {"pure streaming",
     {{TL_COMP_DIFFUSION, 300, 4, {200, 200, 200, 200}, 0}, END},
     "g0=650M",
     "diffusion=0",
     false,
     {{TL_COMP_DIFFUSION, TL_PLAN_MODE_STREAM, false, 1, {"g0"}, {0}, {0}, {0}, 1100, 22000}, WEND},
     {{0, 600, 0}},
     0,
     0,
     0},
    /*
     * C. Streaming with resident layers. diffusion: other 50, five layers
     * of 100 (550), reserve 0; g0 = 450. Whole: 550 > 450. Two buffers of
     * the largest layer: 200, leaving 250 for resident units in order:
     * other 50, layer 0 (150), layer 1 (250); layer 2 would make 350.
     * Resident 250, range [0,2); streamed layers 2..4 = 300 (host), moved
     * 300 x 20 = 6000 per run (run residency: the resident part moves 0;
     * phase residency would add 250). Pure streaming would keep nothing.
     * Peaks: 250 in every phase, plus the 200 of buffers in the diffusion
     * phase: 250, 450, 250. (One buffer would leave 350 for resident units:
     * range [0,3), host 200.)
     */
    {"stream with resident layers",
     {{TL_COMP_DIFFUSION, 50, 5, {100, 100, 100, 100, 100}, 0}, END},
     "g0=450M",
     "diffusion=0",
     false,
     {{TL_COMP_DIFFUSION, TL_PLAN_MODE_STREAM, false, 1, {"g0"}, {250}, {0}, {2}, 300, 6000}, WEND},
     {{250, 450, 250}},
     0,
     0,
     0},
    /*
     * D. Row split. diffusion: other 200 (not splittable), one layer of 600
     * (all matrices): 800, reserve 0; g0 = g1 = 500. Whole: 800 > 500;
     * layer split needs two layers; streaming needs two buffers of 600.
     * Row split: the main device is the one with most room (g0, the first
     * of equals) and holds the 200; room for rows: g0 300, g1 500, sum 800:
     * g0 600 x 300/800 = 225, g1 600 x 500/800 = 375. g0 = 225 + 200 = 425,
     * g1 = 375; every layer's rows on both: ranges [0,1). Peaks 425, 375.
     */
    {"row split",
     {{TL_COMP_DIFFUSION, 200, 1, {600}, 100}, END},
     "g0=500M,g1=500M",
     "diffusion=0",
     false,
     {{TL_COMP_DIFFUSION,
       TL_PLAN_MODE_ROW_SPLIT,
       false,
       2,
       {"g0", "g1"},
       {425, 375},
       {0, 0},
       {1, 1},
       0,
       0},
      WEND},
     {{425, 425, 425}, {375, 375, 375}},
     0,
     0,
     0},
    /*
     * E. Time sharing one GPU. diffusion six layers of 100 (600), cond four
     * of 100 (400), vae 100 of non-layer bytes; reserves 0; g0 = 1000.
     * All run-resident: 1100 in every phase, > 1000. Everything can be
     * resident if some is phase-resident; the least moved per run wins:
     *   cond@phase (400): cond phase 600 + 400 + 100 = 1100, no.
     *   vae@phase (100):  vae phase 600 + 400 + 100 = 1100, no.
     *   cond@phase + vae@phase (500): cond 1000, diffusion 600, vae 700. Yes.
     *   (diffusion@phase with either: 700 or 1000 moved.)
     * So diffusion gpu run [0,6) 600; cond gpu@phase [0,4) 400, moved 400;
     * vae gpu@phase [0,0) 100, moved 100. Peaks 1000, 600, 700.
     */
    {"time sharing",
     {{TL_COMP_DIFFUSION, 0, 6, {100, 100, 100, 100, 100, 100}, 0},
      {TL_COMP_COND, 0, 4, {100, 100, 100, 100}, 0},
      {TL_COMP_VAE, 100, 0, {0}, 0},
      END},
     "g0=1000M",
     "diffusion=0,cond=0,vae=0",
     false,
     {{TL_COMP_DIFFUSION, TL_PLAN_MODE_GPU, false, 1, {"g0"}, {600}, {0}, {6}, 0, 0},
      {TL_COMP_COND, TL_PLAN_MODE_GPU, true, 1, {"g0"}, {400}, {0}, {4}, 0, 400},
      {TL_COMP_VAE, TL_PLAN_MODE_GPU, true, 1, {"g0"}, {100}, {0}, {0}, 0, 100},
      WEND},
     {{1000, 600, 700}},
     0,
     0,
     0},
    /*
     * F. Reserves count in their component's phase only; clip_on_cpu puts
     * cond on the host. diffusion three layers of 100 (300), reserve 100;
     * vae 100 of non-layer bytes, reserve 200; cond 300 (three layers);
     * g0 = 1000. cond: cpu, host 300. diffusion and vae fit run-resident.
     * Peaks: cond phase 300 + 100 = 400; diffusion phase 400 + 100 = 500;
     * vae phase 400 + 200 = 600.
     */
    {"reserves per phase, clip_on_cpu",
     {{TL_COMP_DIFFUSION, 0, 3, {100, 100, 100}, 0},
      {TL_COMP_COND, 0, 3, {100, 100, 100}, 0},
      {TL_COMP_VAE, 100, 0, {0}, 0},
      END},
     "g0=1000M",
     "diffusion=100M,vae=200M,cond=0",
     true,
     {{TL_COMP_DIFFUSION, TL_PLAN_MODE_GPU, false, 1, {"g0"}, {300}, {0}, {3}, 0, 0},
      {TL_COMP_COND, TL_PLAN_MODE_CPU, false, 0, {NULL}, {0}, {0}, {0}, 300, 0},
      {TL_COMP_VAE, TL_PLAN_MODE_GPU, false, 1, {"g0"}, {100}, {0}, {0}, 0, 0},
      WEND},
     {{400, 500, 600}},
     0,
     0,
     0},
    /*
     * G. Split left to the planner. diffusion: other 100, four layers of 200
     * whose matrices are half of each (matrix 400, the rest 500), reserve 0;
     * g0 = 600, g1 = 400. Whole (900) fits neither. Layer split: room for
     * layers g0 600 - 100 = 500, g1 400, sum 900 for 800; g0's share 800 *
     * 500 / 900 = 444: layers while sum + 100 < 444: 0 and 200 pass, 400
     * does not: g0 [0,2) = 400 + 100 = 500, g1 [2,4) = 400. A row split fits
     * too (case H) with the same key; the layer split is generated first.
     */
    {"split: layer first",
     {{TL_COMP_DIFFUSION, 100, 4, {200, 200, 200, 200}, 50}, END},
     "g0=600M,g1=400M",
     "diffusion=0",
     false,
     {{TL_COMP_DIFFUSION,
       TL_PLAN_MODE_LAYER_SPLIT,
       false,
       2,
       {"g0", "g1"},
       {500, 400},
       {0, 2},
       {2, 4},
       0,
       0},
      WEND},
     {{500, 500, 500}, {400, 400, 400}},
     0,
     0,
     0},
    /*
     * H. G with row_split asked for diffusion: the main device is the one
     * with the most room, g0 (600), which keeps the 500 that is not matrix;
     * room for matrices g0 600 - 500 = 100, g1 400, sum 500; shares of the
     * 400 of matrices: g0 400 * 100 / 500 = 80, g1 400 * 400 / 500 = 320.
     * g0 = 580, g1 = 320, every layer [0,4) on both. Run residency.
     */
    {"split: row asked",
     {{TL_COMP_DIFFUSION, 100, 4, {200, 200, 200, 200}, 50}, END},
     "g0=600M,g1=400M",
     "diffusion=0",
     false,
     {{TL_COMP_DIFFUSION,
       TL_PLAN_MODE_ROW_SPLIT,
       false,
       2,
       {"g0", "g1"},
       {580, 320},
       {0, 0},
       {4, 4},
       0,
       0},
      WEND},
     {{580, 580, 580}, {320, 320, 320}},
     0,
     0,
     BIT(TL_COMP_DIFFUSION)},
    /*
     * I. phase_only for cond: cond three layers of 100 on g0 = 1000, reserve
     * 0. It fits run-resident (moving 0), but it is asked to be loaded for
     * its phase only: gpu@phase, 300 on g0, moved 300 per run; peaks 300 in
     * cond's phase, 0 in the others.
     */
    {"phase only",
     {{TL_COMP_COND, 0, 3, {100, 100, 100}, 0}, END},
     "g0=1000M",
     "cond=0",
     false,
     {{TL_COMP_COND, TL_PLAN_MODE_GPU, true, 1, {"g0"}, {300}, {0}, {3}, 0, 300}, WEND},
     {{300, 0, 0}},
     0,
     BIT(TL_COMP_COND),
     0},
    /*
     * J. offload for diffusion only. diffusion: other 100, four layers of
     * 200 (900); cond three layers of 100 (300); reserves 0; g0 = 600, g1 =
     * 400. diffusion streams from RAM through two buffers of its largest
     * layer (200): 400 on the GPU, and a resident prefix in what is left.
     * On g1 nothing is left (400 - 400), so only pure streaming fits there:
     * moved 900 x 20 = 18000. On g0, 600 - 400 = 200 holds the other
     * tensors (100) but not layer 0 too (300): prefix 100, run-resident,
     * streamed 800, moved 800 x 20 = 16000 (phase-resident would add 100):
     * g0 wins. cond then: on g0 run-resident needs 500 + 300 = 800 > 600 in
     * diffusion's phase; on g1 run-resident 300 <= 400 moves 0, better than
     * g0@phase (moves 300). Peaks g0 100/500/100, g1 300 in every phase.
     */
    {"offload one component",
     {{TL_COMP_DIFFUSION, 100, 4, {200, 200, 200, 200}, 0},
      {TL_COMP_COND, 0, 3, {100, 100, 100}, 0},
      END},
     "g0=600M,g1=400M",
     "diffusion=0,cond=0",
     false,
     {{TL_COMP_DIFFUSION, TL_PLAN_MODE_STREAM, false, 1, {"g0"}, {100}, {0}, {0}, 800, 16000},
      {TL_COMP_COND, TL_PLAN_MODE_GPU, false, 1, {"g1"}, {300}, {0}, {3}, 0, 0},
      WEND},
     {{100, 500, 100}, {300, 300, 300}},
     BIT(TL_COMP_DIFFUSION),
     0,
     0},
};

static void build(const exact_case *k, tl_plan_summary *sum) {
    tl_plan_summary_init(sum);
    for (const comp_def *c = k->comps; c->comp >= 0; c++) {
        for (uint32_t l = 0; l < c->n_layers; l++)
            assert_int_equal(tl_plan_summary_add_layer(sum, (tl_component)c->comp,
                                                       c->layer[l] * MIB,
                                                       c->layer[l] * MIB / 100 * c->matrix_pct),
                             TL_OK);
        if (c->other)
            assert_int_equal(
                tl_plan_summary_add_other(sum, (tl_component)c->comp, c->other * MIB, 0), TL_OK);
    }
}

static void test_exact_cases(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const exact_case *k = &cases[i];
        tl_plan_summary sum;
        build(k, &sum);
        tl_plan_device devs[TL_PLAN_MAX_DEVICES];
        size_t nd;
        assert_int_equal(tl_plan_parse_devices(k->devices, devs, TL_PLAN_MAX_DEVICES, &nd), TL_OK);
        tl_plan_options o;
        tl_plan_options_init(&o);
        o.reserve = k->reserve;
        o.clip_on_cpu = k->clip_on_cpu;
        o.offload = k->offload;
        o.phase_only = k->phase_only;
        o.row_split = k->row_split;
        tl_plan *p = NULL;
        if (tl_plan_create(&sum, devs, nd, &o, &p)) fail_msg("%s: %s", k->name, tl_last_error());
        if (!tl_plan_feasible(p)) fail_msg("%s: infeasible: %s", k->name, tl_plan_error(p));
        char why[512];
        if (!plan_check(&sum, p, 20, why, sizeof why)) fail_msg("%s: %s", k->name, why);
        int n_want = 0;
        for (const dec_want *w = k->want; w->comp >= 0; w++, n_want++) {
            const char *cn = tl_component_name((tl_component)w->comp);
            tl_plan_decision d;
            assert_int_equal(tl_plan_decision_of(p, (tl_component)w->comp, &d, sizeof d), TL_OK);
            if (!d.present || d.mode != w->mode || d.phase_resident != w->phase ||
                d.n_devices != w->n)
                fail_msg("%s: %s is %s%s on %u GPUs, expected %s%s on %u", k->name, cn,
                         tl_plan_mode_name(d.mode), d.phase_resident ? "@phase" : "", d.n_devices,
                         tl_plan_mode_name(w->mode), w->phase ? "@phase" : "", w->n);
            for (uint32_t j = 0; j < w->n; j++) {
                const char *dn = tl_plan_device_of(p, d.devices[j])->name;
                if (strcmp(dn, w->dev[j]) || d.device_bytes[j] != w->bytes[j] * MIB ||
                    d.layer_begin[j] != w->lb[j] || d.layer_end[j] != w->le[j])
                    fail_msg("%s: %s device %u is %s with %llu MiB, layers [%u,%u); expected %s "
                             "with %llu MiB, layers [%u,%u)",
                             k->name, cn, j, dn, (unsigned long long)(d.device_bytes[j] / MIB),
                             d.layer_begin[j], d.layer_end[j], w->dev[j],
                             (unsigned long long)w->bytes[j], w->lb[j], w->le[j]);
            }
            if (d.host_bytes != w->host * MIB || d.moved_per_run != w->moved * MIB)
                fail_msg("%s: %s host %llu MiB, moved %llu MiB; expected %llu, %llu", k->name, cn,
                         (unsigned long long)(d.host_bytes / MIB),
                         (unsigned long long)(d.moved_per_run / MIB), (unsigned long long)w->host,
                         (unsigned long long)w->moved);
        }
        /* every present component is in the expectations */
        int present = 0;
        for (int c = 0; c < TL_COMP_COUNT; c++)
            present += sum.comp[c].bytes > 0;
        assert_int_equal(present, n_want);
        size_t g = 0;
        for (size_t dv = 0; dv < tl_plan_device_count(p); dv++) {
            if (!tl_plan_device_of(p, dv)->is_gpu) continue;
            for (size_t ph = 0; ph < 3; ph++)
                if (tl_plan_peak(p, dv, ph) != k->peak[g][ph] * MIB)
                    fail_msg("%s: peak of %s in phase %zu is %llu MiB, expected %llu", k->name,
                             tl_plan_device_of(p, dv)->name, ph,
                             (unsigned long long)(tl_plan_peak(p, dv, ph) / MIB),
                             (unsigned long long)k->peak[g][ph]);
            g++;
        }
        tl_plan_destroy(p);
        tl_plan_summary_clear(&sum);
    }
}

/*
 * flux-f16 on one GPU (cases.inc): the VAE is "gpu" (run-resident) at 6, 12
 * and 24 GB and "gpu@phase" at 8 and 16 GB. Not a tie-break: the diffusion
 * model streams with as many whole layers resident as fit in the diffusion
 * phase, and a run-resident VAE (160 MiB) counts in that phase too. The VAE
 * is resident either way (same score for it), so run residency, which moves
 * 160 MiB less per run, wins exactly when the VAE fits in what the whole
 * diffusion layers leave free in the diffusion phase; when it does not, it
 * would cost a diffusion layer (4 x 648 or 4 x 270 MiB of score), and the
 * VAE is loaded for its own phase instead. Checked here from the plan's
 * decisions: the room left in the diffusion phase besides the VAE, against
 * the VAE's bytes.
 */
static void test_vae_residency_rows(void **state) {
    (void)state;
    static const struct {
        const char *devices;
        bool vae_phase;
    } rows[] = {{"cuda0=6G", false},
                {"cuda0=8G", true},
                {"cuda0=12G", false},
                {"cuda0=16G", true},
                {"cuda0=24G", false}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        tl_plan_summary sum;
        assert_int_equal(tl_plan_summary_profile("flux-f16", &sum), TL_OK);
        tl_plan_device devs[TL_PLAN_MAX_DEVICES];
        size_t nd;
        assert_int_equal(tl_plan_parse_devices(rows[i].devices, devs, TL_PLAN_MAX_DEVICES, &nd),
                         TL_OK);
        tl_plan *p = NULL;
        assert_int_equal(tl_plan_create(&sum, devs, nd, NULL, &p), TL_OK);
        char why[512];
        if (!plan_check(&sum, p, 20, why, sizeof why)) fail_msg("%s: %s", rows[i].devices, why);
        tl_plan_decision dif, vae, cond;
        tl_plan_decision_of(p, TL_COMP_DIFFUSION, &dif, sizeof dif);
        tl_plan_decision_of(p, TL_COMP_VAE, &vae, sizeof vae);
        tl_plan_decision_of(p, TL_COMP_COND, &cond, sizeof cond);
        assert_int_equal(dif.mode, TL_PLAN_MODE_STREAM);
        assert_int_equal(vae.mode, TL_PLAN_MODE_GPU);
        assert_true(cond.phase_resident); /* cond is not in the diffusion phase */
        const tl_plan_part *dp = &sum.comp[TL_COMP_DIFFUSION];
        /* the diffusion phase without the VAE: resident layers + other + reserve + 2 buffers */
        uint64_t max_layer = 0;
        for (size_t l = 0; l < dp->n_layers; l++)
            if (dp->layers[l] > max_layer) max_layer = dp->layers[l];
        uint64_t used = dif.device_bytes[0] + dif.reserve + 2 * max_layer;
        uint64_t budget = tl_plan_device_budget(p, 0);
        assert_true(used <= budget);
        uint64_t left = budget - used;
        uint64_t next = dp->layers[dif.layer_end[0]]; /* the first streamed layer */
        if (rows[i].vae_phase != vae.phase_resident)
            fail_msg("%s: vae %s, expected %s", rows[i].devices,
                     vae.phase_resident ? "gpu@phase" : "gpu",
                     rows[i].vae_phase ? "gpu@phase" : "gpu");
        if (vae.phase_resident) {
            /* run residency would not fit beside the resident diffusion layers */
            if (left >= vae.bytes)
                fail_msg("%s: %llu MiB left would hold the vae", rows[i].devices,
                         (unsigned long long)(left / MIB));
        } else {
            /* it fits, and loading it per phase would not make room for another layer */
            if (left < vae.bytes || left >= next)
                fail_msg("%s: %llu MiB left, vae %llu, next layer %llu", rows[i].devices,
                         (unsigned long long)(left / MIB), (unsigned long long)(vae.bytes / MIB),
                         (unsigned long long)(next / MIB));
        }
        printf("flux-f16 on %-9s: diffusion layers [0,%u) resident, %4llu MiB left in its phase "
               "besides the vae (%llu MiB): vae %s\n",
               rows[i].devices, dif.layer_end[0], (unsigned long long)(left / MIB),
               (unsigned long long)(vae.bytes / MIB), vae.phase_resident ? "gpu@phase" : "gpu");
        tl_plan_destroy(p);
        tl_plan_summary_clear(&sum);
    }
}

/*
 * An infeasible plan keeps what was asked and shows the best effort.
 * diffusion: six layers of 100 (600), reserve 0, asked for g0 = 500; cond:
 * one layer of 100, asked for the cpu; g1 = 1000 is left alone. g0 needs
 * 600 > 500. The least extra budget on every GPU that fits, found by
 * halving [0, 64 GiB] while the gap is over 16 MiB: 64G, 32G, ... 128M fit;
 * 64M and 96M do not; 112M fits and 112 - 96 = 16 stops: the shortfall is
 * 112 MiB. With 612 MiB on g0 the diffusion model is run-resident there:
 * gpu, 600 on g0, layers [0,6), peaks 600 in every phase against a budget
 * of 500 (budgets are reported unraised). The worst overflow is 100 MiB,
 * first in phase cond; auto-fit would put the diffusion model on g1.
 */
static void test_infeasible_best_effort(void **state) {
    (void)state;
    tl_plan_summary sum;
    tl_plan_summary_init(&sum);
    for (int l = 0; l < 6; l++)
        assert_int_equal(tl_plan_summary_add_layer(&sum, TL_COMP_DIFFUSION, 100 * MIB, 0), TL_OK);
    assert_int_equal(tl_plan_summary_add_layer(&sum, TL_COMP_COND, 100 * MIB, 0), TL_OK);
    tl_plan_device devs[TL_PLAN_MAX_DEVICES];
    size_t nd;
    assert_int_equal(tl_plan_parse_devices("g0=500M,g1=1000M", devs, TL_PLAN_MAX_DEVICES, &nd),
                     TL_OK);
    tl_plan_options o;
    tl_plan_options_init(&o);
    o.backend = "diffusion=g0,cond=cpu";
    o.reserve = "diffusion=0,cond=0";
    tl_plan *p = NULL;
    assert_int_equal(tl_plan_create(&sum, devs, nd, &o, &p), TL_OK);
    assert_false(tl_plan_feasible(p));
    assert_int_equal(tl_plan_shortfall(p), 112 * MIB);
    assert_non_null(strstr(tl_plan_error(p), "the placement of diffusion does not fit: g0 needs "
                                             "600.00 MiB in phase cond but its budget is 500.00 "
                                             "MiB (short by 100.00 MiB)"));
    assert_non_null(
        strstr(tl_plan_error(p), "leaving diffusion to auto-fit would fit (gpu on g1)"));
    char why[512];
    if (!plan_check(&sum, p, 20, why, sizeof why)) fail_msg("%s", why);
    tl_plan_decision d;
    assert_int_equal(tl_plan_decision_of(p, TL_COMP_DIFFUSION, &d, sizeof d), TL_OK);
    assert_int_equal(d.mode, TL_PLAN_MODE_GPU);
    assert_false(d.phase_resident);
    assert_int_equal(d.n_devices, 1);
    assert_int_equal(d.devices[0], 0);
    assert_int_equal(d.device_bytes[0], 600 * MIB);
    assert_int_equal(d.layer_begin[0], 0);
    assert_int_equal(d.layer_end[0], 6);
    assert_int_equal(d.n_requested, 1);
    assert_int_equal(d.requested[0], 0);
    assert_int_equal(tl_plan_decision_of(p, TL_COMP_COND, &d, sizeof d), TL_OK);
    assert_int_equal(d.mode, TL_PLAN_MODE_CPU);
    assert_int_equal(d.host_bytes, 100 * MIB);
    assert_int_equal(d.n_requested, 1);
    assert_int_equal(d.requested[0], TL_PLAN_HOST);
    for (size_t ph = 0; ph < 3; ph++) {
        assert_int_equal(tl_plan_peak(p, 0, ph), 600 * MIB);
        assert_int_equal(tl_plan_peak(p, 1, ph), 0);
    }
    assert_int_equal(tl_plan_device_budget(p, 0), 500 * MIB);
    char *t;
    assert_int_equal(tl_plan_to_text(p, &t), TL_OK);
    assert_non_null(strstr(t, "best effort below: the placement that fits with 112.00 MiB more"));
    assert_non_null(strstr(t, "gpu on g0 600.00 MiB (100.0%); weights kept for the whole run; "
                              "asked for g0\n"));
    assert_non_null(strstr(t, "cpu; asked for cpu\n"));
    free(t);
    /* the JSON document keeps both */
    char *j;
    assert_int_equal(tl_plan_to_json(p, &j), TL_OK);
    tl_plan *q = NULL;
    if (tl_plan_from_json(j, strlen(j), &q)) fail_msg("%s", tl_last_error());
    assert_int_equal(tl_plan_shortfall(q), 112 * MIB);
    assert_int_equal(tl_plan_decision_of(q, TL_COMP_COND, &d, sizeof d), TL_OK);
    assert_int_equal(d.n_requested, 1);
    assert_int_equal(d.requested[0], TL_PLAN_HOST);
    free(j);
    tl_plan_destroy(q);
    tl_plan_destroy(p);
    /* feasible: the request is kept too, and the shortfall is 0 */
    o.backend = "diffusion=g1,cond=cpu";
    assert_int_equal(tl_plan_create(&sum, devs, nd, &o, &p), TL_OK);
    assert_true(tl_plan_feasible(p));
    assert_int_equal(tl_plan_shortfall(p), 0);
    assert_int_equal(tl_plan_decision_of(p, TL_COMP_DIFFUSION, &d, sizeof d), TL_OK);
    assert_int_equal(d.n_requested, 1);
    assert_int_equal(d.requested[0], 1);
    tl_plan_destroy(p);
    /* a split over more GPUs than there are layers fits no budget: nothing is placed, the request
       stays visible */
    tl_plan_summary_clear(&sum);
    tl_plan_summary_init(&sum);
    assert_int_equal(tl_plan_summary_add_layer(&sum, TL_COMP_VAE, 100 * MIB, 0), TL_OK);
    o.backend = "vae=g0&g1";
    o.reserve = NULL;
    assert_int_equal(tl_plan_create(&sum, devs, nd, &o, &p), TL_OK);
    assert_false(tl_plan_feasible(p));
    assert_int_equal(tl_plan_shortfall(p), UINT64_MAX);
    assert_int_equal(tl_plan_decision_of(p, TL_COMP_VAE, &d, sizeof d), TL_OK);
    assert_int_equal(d.mode, TL_PLAN_MODE_CPU);
    assert_int_equal(d.n_requested, 2);
    assert_int_equal(d.requested[0], 0);
    assert_int_equal(d.requested[1], 1);
    assert_int_equal(tl_plan_to_text(p, &t), TL_OK);
    assert_non_null(strstr(t, "nothing below is placed"));
    assert_non_null(strstr(t, "asked for g0&g1"));
    free(t);
    tl_plan_destroy(p);
    tl_plan_summary_clear(&sum);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_cases),
        cmocka_unit_test(test_vae_residency_rows),
        cmocka_unit_test(test_infeasible_best_effort),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
