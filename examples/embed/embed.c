/*
 * embed.c — the smallest complete engine-side use of libtierload: open a
 * model, plan where its components go on a hypothetical GPU, load its tensors
 * into host memory, and read one back. Built with pkg-config (see
 * docs/EMBEDDING.md):
 *
 *   cc embed.c $(pkg-config --cflags --libs tierload) -o embed
 *   ./embed model.gguf [GPU_SIZE]
 */
#include <tierload.h>

#include <stdio.h>
#include <stdlib.h>

static int fail(const char *what, tl_status s) {
    fprintf(stderr, "embed: %s: %s: %s\n", what, tl_status_name(s), tl_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: embed MODEL [GPU_SIZE]\n");
        return 2;
    }
    printf("libtierload %s\n", tl_version());

    /* 1. Open: one catalog over the model's files, nothing read yet but headers. */
    tl_model_options mo;
    tl_model_options_init(&mo);
    const char *paths[] = {argv[1]};
    tl_model *model = NULL;
    tl_status s = tl_model_open(paths, 1, &mo, &model);
    if (s != TL_OK) return fail("open", s);
    size_t n = tl_model_tensor_count(model);
    printf("tensors: %zu\n", n);

    /* 2. Plan: a hypothetical GPU of GPU_SIZE (default 8G) plus the host. */
    char spec[64];
    snprintf(spec, sizeof spec, "cuda0=%s", argc > 2 ? argv[2] : "8G");
    tl_plan_device devs[TL_PLAN_MAX_DEVICES];
    size_t n_devs = 0;
    tl_plan_summary sum;
    tl_plan *plan = NULL;
    tl_plan_options po;
    tl_plan_options_init(&po);
    if ((s = tl_plan_parse_devices(spec, devs, TL_PLAN_MAX_DEVICES, &n_devs)) != TL_OK ||
        (s = tl_plan_summary_from_model(model, TL_DTYPE_INVALID, &sum)) != TL_OK) {
        tl_model_close(model);
        return fail("plan input", s);
    }
    s = tl_plan_create(&sum, devs, n_devs, &po, &plan);
    tl_plan_summary_clear(&sum);
    if (s != TL_OK) {
        tl_model_close(model);
        return fail("plan", s);
    }
    printf("plan feasible: %s\n", tl_plan_feasible(plan) ? "yes" : "no");
    char *text = NULL;
    if (tl_plan_to_text(plan, &text) == TL_OK) fputs(text, stdout);
    tl_free(text);
    tl_plan_destroy(plan);

    /* 3. Load every tensor into host memory (bounded staging, auto mode). */
    tl_load_options lo;
    tl_load_options_init(&lo);
    lo.verify = true;
    tl_load_result *res = NULL;
    s = tl_model_load(model, &lo, &res);
    if (s != TL_OK) {
        tl_model_close(model);
        return fail("load", s);
    }
    const tl_load_stats *st = tl_load_result_stats(res);
    printf("loaded: %llu bytes from the files, %llu in memory\n", (unsigned long long)st->bytes,
           (unsigned long long)st->bytes_out);

    /* 4. Use a tensor: its bytes, type and shape. */
    if (n > 0) {
        const tl_tensor_info *ti = tl_model_tensor(model, 0);
        const tl_loaded_tensor *lt = tl_load_result_tensor(res, 0);
        printf("first tensor: %s %s, %llu bytes at %p\n", ti->name, tl_dtype_name(lt->dtype),
               (unsigned long long)lt->nbytes, lt->data);
    }

    tl_load_result_destroy(res); /* before the model: views point into its mappings */

    /* 5. A session: the plan carried out on a simulated GPU, component by component. */
    if ((s = tl_device_sim_add("gpu0=64M")) != TL_OK) {
        tl_model_close(model);
        return fail("sim device", s);
    }
    tl_plan_options_init(&po);
    po.reserve = "diffusion=0,cond=0,vae=0,controlnet=0";
    s = tl_plan_devices_from_registry(devs, TL_PLAN_MAX_DEVICES, &n_devs, NULL);
    if (s == TL_OK) s = tl_plan_summary_from_model(model, TL_DTYPE_INVALID, &sum);
    if (s == TL_OK) {
        s = tl_plan_create(&sum, devs, n_devs, &po, &plan);
        tl_plan_summary_clear(&sum);
    }
    tl_session *session = NULL;
    if (s == TL_OK) s = tl_session_create(model, plan, NULL, &session);
    for (int c = 0; s == TL_OK && c < TL_COMP_COUNT; c++) {
        tl_acquired *a = NULL;
        s = tl_session_acquire(session, (tl_component)c, 0, TL_ALL_LAYERS, true, &a);
        if (s == TL_OK && tl_acquired_count(a) > 0) {
            const tl_session_tensor *t = tl_acquired_tensor(a, 0);
            printf("%s: %zu tensors, the first on tier %s\n", tl_component_name((tl_component)c),
                   tl_acquired_count(a), tl_tier_name(t->parts[0].tier));
        }
        tl_session_release(session, a); /* release is not eviction: they stay until needed */
    }
    if (s == TL_OK) {
        tl_session_stats ss;
        tl_session_stats_get(session, &ss, sizeof ss);
        printf("session: %llu bytes moved, %llu evictions\n", (unsigned long long)ss.bytes_moved,
               (unsigned long long)ss.evictions);
    }
    tl_session_destroy(session);
    tl_plan_destroy(plan);
    if (s != TL_OK) {
        tl_model_close(model);
        return fail("session", s);
    }
    tl_model_close(model);
    printf("ok\n");
    return 0;
}
