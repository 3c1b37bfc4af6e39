/*
 * test_lora_cli.c — LoRAs from the command line: `tierload run --lora` on an
 * SD-like model through a simulated GPU small enough to stream (every byte
 * checked against the merged bytes: zero mismatches), unmatched keys warned
 * about or refused with --lora-strict, and `tierload merge` writing
 * safetensors and GGUF files whose header is the input's and whose tensors
 * equal an in-memory merge done here through the library, with memory
 * bounded by the largest merged tensor plus staging, and the input file
 * untouched (bytes and mtime).
 */
#include "testutil.h"

#include "st_writer.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


static uint64_t num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v)) fail_msg("key %s missing", k);
    return (uint64_t)v->valuedouble;
}

static char *mkmodel(const char *dir, const char *name, const char *fmt) {
    char *p = tu_path(dir, name);
    tu_run r = tu_cli_run("mkmodel", p, "--size", "48M", "--tensors", "240", "--profile", "sdxl",
                          "--format", fmt, NULL);
    if (r.status) fail_msg("mkmodel: %s", r.err);
    tu_run_free(&r);
    return p;
}

/*
 * A rank-2 F32 LoRA in the model's own naming for every 2-D diffusion and
 * cond weight of the model at path (plus, when stray, a key naming nothing).
 */
static char *mklora(const char *dir, const char *model, bool stray) {
    tl_model *m = NULL;
    assert_int_equal(tl_model_open(&model, 1, NULL, &m), TL_OK);
    size_t cap = 1 << 20, o = 0;
    char *hdr = malloc(cap);
    size_t dcap = 64 << 20;
    unsigned char *data = malloc(dcap);
    uint64_t off = 0;
    o += (size_t)snprintf(hdr + o, cap - o, "{\"__metadata__\":{\"ss_network_dim\":\"2\"}");
    uint32_t seed = 7;
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        if (t->n_dims != 2 || t->component == TL_COMP_VAE) continue;
        size_t nl = strlen(t->name) - strlen(".weight");
        int64_t rows = t->shape[0], cols = t->shape[1];
        const char *sfx[2] = {"lora_down.weight", "lora_up.weight"};
        int64_t shp[2][2] = {{2, cols}, {rows, 2}};
        for (int k = 0; k < 2; k++) {
            uint64_t nb = (uint64_t)(shp[k][0] * shp[k][1]) * 4;
            o += (size_t)snprintf(hdr + o, cap - o,
                                  ",\"%.*s.%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],"
                                  "\"data_offsets\":[%llu,%llu]}",
                                  (int)nl, t->name, sfx[k], (long long)shp[k][0],
                                  (long long)shp[k][1], (unsigned long long)off,
                                  (unsigned long long)(off + nb));
            assert_true(off + nb <= dcap);
            for (uint64_t e = 0; e < nb / 4; e++) {
                seed = seed * 1103515245u + 12345u;
                float v = (float)((int)((seed >> 16) % 17) - 8) / 64.0f;
                memcpy(data + off + e * 4, &v, 4);
            }
            off += nb;
        }
    }
    if (stray) {
        o += (size_t)snprintf(hdr + o, cap - o,
                              ",\"lora_unet_nowhere_at_all.alpha\":{\"dtype\":\"F32\",\"shape\":[],"
                              "\"data_offsets\":[%llu,%llu]}",
                              (unsigned long long)off, (unsigned long long)(off + 4));
        float a = 1;
        memcpy(data + off, &a, 4);
        off += 4;
    }
    snprintf(hdr + o, cap - o, "}");
    size_t len;
    uint8_t *img = sw_build_raw(hdr, data, off, true, &len);
    char *p = tu_path(dir, stray ? "stray.safetensors" : "lora.safetensors");
    assert_true(sw_write_file(p, img, len));
    free(img);
    free(data);
    free(hdr);
    tl_model_close(m);
    return p;
}

static void test_run_with_lora_streams_and_checks(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *mp = mkmodel(dir, "m.safetensors", "safetensors");
    char *lp = mklora(dir, mp, false);
    char arg[4096];
    snprintf(arg, sizeof arg, "%s:0.5", lp);
    tu_run r = tu_cli_run("run", mp, "--lora", arg, "--sim", "lorasmall=12M", "--reserve",
                          "diffusion=0,cond=0,vae=0", "--pipeline", "cond,diffusion*3,vae", "--json",
                          NULL);
    if (r.status) fail_msg("run --lora: exit %d: %s", r.status, r.err);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "totals");
    assert_int_equal(num(t, "hash_mismatches"), 0);
    assert_true(num(t, "tensors_checked") > 0);
    assert_true(num(t, "evictions") > 0); /* it streamed */
    const cJSON *lo = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "loras"), 0);
    assert_non_null(lo);
    assert_true(num(lo, "matched") > 100);
    assert_int_equal(num(lo, "matched"), num(lo, "modules"));
    assert_int_equal(num(lo, "unmatched"), 0);
    assert_true(cJSON_GetObjectItemCaseSensitive(lo, "scale")->valuedouble == 0.5);
    cJSON_Delete(j);
    tu_run_free(&r);
    /* human output says what was merged */
    r = tu_cli_run("run", mp, "--lora", lp, "--sim", "lorasmall2=12M", "--reserve",
                   "diffusion=0,cond=0,vae=0", "--pipeline", "cond,diffusion,vae", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "modules merged, 0 unmatched"));
    unsigned long long checked = 0, mism = 1;
    assert_true(tu_run_checked(r.out, &checked, &mism));
    assert_true(checked > 0);
    assert_int_equal(mism, 0);
    tu_run_free(&r);
    free(lp);
    free(mp);
    tu_tmpdir_rm(dir);
}

static void test_unmatched_and_strict(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *mp = mkmodel(dir, "m.safetensors", "safetensors");
    char *lp = mklora(dir, mp, true);
    tu_run r = tu_cli_run("run", mp, "--lora", lp, "--sim", "lorast=80M", "--pipeline", "cond",
                          "--reserve", "diffusion=0,cond=0,vae=0", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.err, "1 of"));
    assert_non_null(strstr(r.err, "lora_unet_nowhere_at_all"));
    tu_run_free(&r);
    r = tu_cli_run("run", mp, "--lora", lp, "--lora-strict", "--sim", "lorast2=80M", "--pipeline",
                   "cond", "--reserve", "diffusion=0,cond=0,vae=0", NULL);
    assert_true(r.status > 0 && r.status < 126);
    assert_non_null(strstr(r.err, "lora_unet_nowhere_at_all"));
    tu_run_free(&r);
    free(lp);
    free(mp);
    tu_tmpdir_rm(dir);
}

/*
 * Merge a model made in dir into outdir (another file system: the kernel cannot copy between
 * them, the staging buffer does), over an existing file there when replace.
 */
static void check_merge(const char *dir, const char *outdir, const char *name, const char *fmt,
                        bool replace) {
    char *mp = mkmodel(dir, name, fmt);
    char *lp = mklora(dir, mp, false);
    char outname[64];
    snprintf(outname, sizeof outname, "out-%s", name);
    char *op = tu_path(outdir, outname);
    if (replace) tu_write_file(op, "an older file", 13);
    struct stat s0, s1;
    assert_int_equal(stat(mp, &s0), 0);
    size_t len0, len1, leno;
    char *b0 = tu_read_file(mp, &len0);
    char arg[4096];
    snprintf(arg, sizeof arg, "%s:0.75", lp);
    /* under AddressSanitizer, freed memory is held in its quarantine and counts as RSS: none, so
       that the bound below measures the merge (the option is ignored by other builds) */
    const char *asan = getenv("ASAN_OPTIONS");
    char *saved = asan ? strdup(asan) : NULL, opts[1024];
    snprintf(opts, sizeof opts, "%s%squarantine_size_mb=0", asan ? asan : "", asan ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
    tu_run r = tu_cli_run("merge", mp, "--lora", arg, "-o", op, "--json", NULL);
    if (saved)
        setenv("ASAN_OPTIONS", saved, 1);
    else
        unsetenv("ASAN_OPTIONS");
    free(saved);
    if (r.status) fail_msg("merge: exit %d: %s", r.status, r.err);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    uint64_t merged = num(j, "merged_tensors"), largest = num(j, "largest_merged_tensor");
    uint64_t extra = num(j, "rss_anon_extra_peak"), staging = num(j, "staging_bytes");
    assert_true(merged > 100);
    /* bounded: the largest merged tensor + staging (+ 4 MiB for the LoRA's own matrices);
     * not under ThreadSanitizer, whose shadow of every byte written is anonymous RSS too */
    if (!TU_UNDER_TSAN && extra > largest + staging + (4u << 20))
        fail_msg("merge peak extra RSS anon %llu > largest %llu + staging %llu",
                 (unsigned long long)extra, (unsigned long long)largest, (unsigned long long)staging);
    cJSON_Delete(j);
    tu_run_free(&r);

    /* the in-memory merge, here through the library */
    tl_model_options o;
    tl_model_options_init(&o);
    o.writable = true;
    tl_model *m = NULL, *out = NULL;
    const char *mpc = mp, *opc = op;
    assert_int_equal(tl_model_open(&mpc, 1, &o, &m), TL_OK);
    tl_lora *l = NULL;
    assert_int_equal(tl_lora_open(lp, &l), TL_OK);
    assert_int_equal(tl_lora_apply(m, l, 0.75f, NULL, 0), TL_OK);
    assert_int_equal(tl_model_open(&opc, 1, NULL, &out), TL_OK);
    assert_int_equal(tl_model_tensor_count(out), tl_model_tensor_count(m));
    size_t differ = 0;
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
        const tl_tensor_info *a = tl_model_tensor(m, i), *b = tl_model_tensor(out, i);
        assert_string_equal(a->name, b->name);
        assert_int_equal(a->nbytes, b->nbytes);
        assert_memory_equal(tl_model_tensor_data(m, i), tl_model_tensor_data(out, i), a->nbytes);
        if (memcmp(tl_model_tensor_data(out, i), b0 + a->offset, a->nbytes)) differ++;
    }
    assert_int_equal(differ, merged); /* every merged tensor changed */
    /* header and metadata: byte for byte */
    char *bo = tu_read_file(op, &leno);
    assert_int_equal(leno, len0);
    uint64_t doff = tl_model_file(m, 0)->data_offset;
    assert_memory_equal(bo, b0, doff);
    tl_lora_close(l);
    tl_model_close(out);
    tl_model_close(m);
    /* the input never changed */
    char *b1 = tu_read_file(mp, &len1);
    assert_int_equal(stat(mp, &s1), 0);
    assert_int_equal(len0, len1);
    assert_memory_equal(b0, b1, len0);
    assert_int_equal(s0.st_mtim.tv_sec, s1.st_mtim.tv_sec);
    assert_int_equal(s0.st_mtim.tv_nsec, s1.st_mtim.tv_nsec);
    free(b0), free(b1), free(bo);
    free(op), free(lp), free(mp);
}

static void test_merge_safetensors(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    check_merge(dir, dir, "m.safetensors", "safetensors", false);
    tu_tmpdir_rm(dir);
}

/* From TMPDIR into /dev/shm over an existing file: the staging copy, and the sync of a replace. */
static void test_merge_across_file_systems(void **state) {
    (void)state;
    struct stat a, b;
    char *dir = tu_tmpdir(), *shm = strdup("/dev/shm/tl-merge-XXXXXX");
    assert_non_null(shm);
    bool made = mkdtemp(shm) != NULL;
    if (stat(dir, &a) || !made || stat(shm, &b) || a.st_dev == b.st_dev) {
        tu_tmpdir_rm(dir);
        if (made)
            tu_tmpdir_rm(shm);
        else
            free(shm);
        TU_SKIP("no /dev/shm on another file system than TMPDIR");
    }
    check_merge(dir, shm, "m.safetensors", "safetensors", true);
    tu_tmpdir_rm(shm);
    tu_tmpdir_rm(dir);
}

static void test_merge_gguf(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    check_merge(dir, dir, "m.gguf", "gguf", false);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_with_lora_streams_and_checks),
        cmocka_unit_test(test_unmatched_and_strict),
        cmocka_unit_test(test_merge_safetensors),
        cmocka_unit_test(test_merge_gguf),
        cmocka_unit_test(test_merge_across_file_systems),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
