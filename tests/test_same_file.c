/*
 * test_same_file.c — one file from open to the last byte: a model path
 * re-pointed after tl_model_open (the `current -> vN` symlink flip of a
 * rollout) never gives the other file's bytes to a direct or auto load, and a
 * shard symlink flipped between inside and outside the model's folder while
 * the index is opened never gets the outside file read.
 */
#include "testutil.h"

#include "st_writer.h"
#include "os/fault.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define N_FLOATS 4096 /* 16 KiB: whole O_DIRECT blocks */

/* A safetensors file with one F32 tensor `name` of N_FLOATS values, all equal to v. */
static void write_named(const char *path, const char *name, float v) {
    char hdr[256];
    snprintf(hdr, sizeof hdr,
             "{\"%s\":{\"dtype\":\"F32\",\"shape\":[%d],\"data_offsets\":[0,%d]}}", name,
             N_FLOATS, N_FLOATS * 4);
    float *data = malloc(N_FLOATS * 4);
    for (int i = 0; i < N_FLOATS; i++) data[i] = v;
    size_t len;
    uint8_t *img = sw_build_raw(hdr, data, N_FLOATS * 4, true, &len);
    assert_true(sw_write_file(path, img, len));
    free(img);
    free(data);
}

static void write_model(const char *path, float v) { write_named(path, "w", v); }

/* Point link at target atomically (a new symlink renamed over it). */
static void flip(const char *link, const char *target) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.new", link);
    unlink(tmp);
    assert_int_equal(symlink(target, tmp), 0);
    assert_int_equal(rename(tmp, link), 0);
}

static void test_repointed_path_loads_the_opened_file(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *a = tu_path(dir, "v1.safetensors"), *b = tu_path(dir, "v2.safetensors");
    char *cur = tu_path(dir, "current.safetensors");
    write_model(a, 1.0f);
    write_model(b, 2.0f);
    const tl_load_mode modes[] = {TL_LOAD_DIRECT, TL_LOAD_AUTO};
    for (size_t k = 0; k < 2; k++) {
        flip(cur, "v1.safetensors");
        tl_model *m = NULL;
        const char *p = cur;
        assert_int_equal(tl_model_open(&p, 1, NULL, &m), TL_OK);
        flip(cur, "v2.safetensors"); /* the rollout, between open and load */
        tl_file_evict(a);             /* cold: auto picks O_DIRECT */
        tl_load_options o;
        tl_load_options_init(&o);
        o.mode = modes[k];
        tl_load_result *r = NULL;
        tl_status st = tl_model_load(m, &o, &r);
        if (st == TL_OK) {
            const tl_loaded_tensor *t = tl_load_result_tensor(r, 0);
            float first, last;
            memcpy(&first, t->data, 4);
            memcpy(&last, (const char *)t->data + (N_FLOATS - 1) * 4, 4);
            if (first != 1.0f || last != 1.0f)
                fail_msg("mode %s: status OK with the other file's bytes (%g, %g)",
                         tl_load_mode_name(modes[k]), (double)first, (double)last);
            tl_load_result_destroy(r);
        } else {
            assert_int_equal(st, TL_ERR_CHANGED);
            assert_non_null(strstr(tl_last_error(), cur));
        }
        tl_model_close(m);
    }
    free(a), free(b), free(cur);
    tu_tmpdir_rm(dir);
}

static void to_outside(void *link) { flip(link, "../outside/x.safetensors"); }

/*
 * The shard's symlink is re-pointed outside at the n-th open-kind call of
 * tl_model_open (every n in turn): between the check and the open, whatever
 * the check is. The outside file is never read.
 */
static void test_shard_flip_never_reads_outside(void **state) {
    (void)state;
    char *root = tu_tmpdir();
    char *mdir = tu_path(root, "model"), *odir = tu_path(root, "outside");
    assert_int_equal(mkdir(mdir, 0755), 0);
    assert_int_equal(mkdir(odir, 0755), 0);
    char *inside = tu_path(mdir, "inside.safetensors"), *outside = tu_path(odir, "x.safetensors");
    char *shard = tu_path(mdir, "shard.safetensors");
    char *index = tu_path(mdir, "model.safetensors.index.json");
    write_model(inside, 1.0f);
    write_model(outside, 7.0f);
    const char *ij = "{\"weight_map\":{\"w\":\"shard.safetensors\"}}";
    tu_write_file(index, ij, strlen(ij));
    unsigned outside_read = 0, ok = 0, refused = 0;
    for (unsigned long n = 1;; n++) {
        flip(shard, "inside.safetensors");
        tl__fault_on_call(TL_FAULT_OPEN, n, to_outside, shard);
        tl_model *m = NULL;
        const char *p = index;
        tl_status st = tl_model_open(&p, 1, NULL, &m);
        unsigned long calls = tl__fault_calls(TL_FAULT_OPEN);
        tl__fault_reset();
        if (st != TL_OK) {
            refused++;
            assert_non_null(strstr(tl_last_error(), "shard"));
        } else {
            float v;
            assert_int_equal(tl_model_tensor_read(m, 0, 0, &v, 4), TL_OK);
            if (v == 7.0f) {
                print_message("flip at open call %lu: the outside file was read\n", n);
                outside_read++;
            } else {
                ok++;
            }
            tl_model_close(m);
        }
        if (n > calls) break; /* the flip came after every open */
    }
    print_message("flips at each open call: %u inside, %u refused, %u read outside\n", ok,
                  refused, outside_read);
    assert_int_equal(outside_read, 0);
    free(inside), free(outside), free(shard), free(index), free(mdir), free(odir);
    tu_tmpdir_rm(root);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repointed_path_loads_the_opened_file),
        cmocka_unit_test(test_shard_flip_never_reads_outside),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
