/*
 * twomodel.c — the two-model fixture of twomodel.h.
 */
#include "twomodel.h"

#include "st_writer.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int counter;

void tm_setup(tm_fx *f, uint64_t cap) {
    static char names[TM_LAYERS][96];
    sw_tensor t[TM_LAYERS];
    for (int k = 0; k < TM_LAYERS; k++) {
        snprintf(names[k], sizeof names[k], "model.diffusion_model.input_blocks.%d.0.weight", k);
        t[k] = (sw_tensor){names[k], "F32", 2, {64, 256}};
    }
    memset(f, 0, sizeof *f);
    f->dir = tu_tmpdir();
    size_t len;
    for (int i = 0; i < 2; i++) {
        f->path[i] = tu_path(f->dir, i ? "b.safetensors" : "a.safetensors");
        f->img[i] = sw_build(t, TM_LAYERS, NULL, true, &len);
        f->data_off = sw_data_offset(f->img[i]);
        if (i)
            for (size_t k = f->data_off; k < len; k++)
                f->img[i][k] ^= 0x5A;
        assert_true(sw_write_file(f->path[i], f->img[i], len));
        const char *paths[] = {f->path[i]};
        tl_model_options mo;
        tl_model_options_init(&mo);
        mo.writable = true; /* tests may rewrite tensors in the mapping (a LoRA merge's path) */
        assert_int_equal(tl_model_open(paths, 1, &mo, &f->m[i]), TL_OK);
    }
    snprintf(f->simname, sizeof f->simname, "tm%d_%d", (int)getpid(), ++counter);
    f->sim = tu_sim_add(f->simname, cap);
    char be[64];
    snprintf(be, sizeof be, "diffusion=%s", f->simname);
    for (int i = 0; i < 2; i++)
        f->p[i] = tu_plan_one_gpu(f->m[i], f->simname, 16ull << 20, be, false);
}

void tm_teardown(tm_fx *f) {
    for (int i = 0; i < 2; i++) {
        tl_plan_destroy(f->p[i]);
        tl_model_close(f->m[i]);
        free(f->path[i]);
        free(f->img[i]);
    }
    tl_device_unregister(f->sim);
    tl_device_release(f->sim);
    tu_tmpdir_rm(f->dir);
}

tl_session *tm_session(tm_fx *f, int i, uint64_t budget) {
    tl_session_options o;
    tl_session_options_init(&o);
    uint64_t budgets[2] = {budget, 0};
    o.device_budgets = budgets;
    o.n_device_budgets = 2;
    o.event_cap = 4096;
    tl_session *s = NULL;
    assert_int_equal(tl_session_create(f->m[i], f->p[i], &o, &s), TL_OK);
    return s;
}

bool tm_bytes_ok(const tm_fx *f, int i, const tl_acquired *a, size_t first_layer) {
    unsigned char *got = malloc(TM_LAYER);
    bool ok = got != NULL;
    for (size_t k = 0; k < tl_acquired_count(a) && ok; k++) {
        const tl_session_tensor *t = tl_acquired_tensor(a, k);
        ok = t->n_parts == 1 && t->parts[0].nbytes == TM_LAYER &&
             tl_device_copy_from(t->parts[0].device, got, t->parts[0].dptr, TM_LAYER) == TL_OK &&
             !memcmp(got, f->img[i] + f->data_off + (first_layer + k) * TM_LAYER, TM_LAYER);
    }
    free(got);
    return ok;
}

uint64_t tm_used(tl_session *s) {
    tl_session_stats st;
    assert_int_equal(tl_session_stats_get(s, &st, sizeof st), TL_OK);
    return st.n_devices ? st.devices[0].used : 0;
}
