/*
 * test_load_gguf.c — tl_model_load on a GGUF file (aligned data section,
 * padding between tensors, quantized types): every mode copies the exact
 * bytes; with a conversion target, quantized tensors keep their type and
 * F16 tensors are converted exactly.
 */
#include "testutil.h"
#include "ref_convert.h"
#include "helpers/gguf_writer.h"
#include "io/convert.h"

#include <stdlib.h>
#include <string.h>

static void test_gguf_modes(void **st) {
    (void)st;
    char *d = tu_tmpdir();
    char *path = tu_path(d, "m.gguf");
    gw_gguf *g = gw_new(3);
    gw_kv_str(g, "general.architecture", "llama");
    int64_t q[2] = {256, 40}, h[2] = {1001, 3}, f[1] = {77};
    gw_tensor(g, "blk.0.attn_q.weight", TL_DTYPE_Q4_K, 2, q);
    gw_tensor(g, "blk.0.attn_norm.weight", TL_DTYPE_F16, 2, h);
    gw_tensor(g, "output_norm.weight", TL_DTYPE_F32, 1, f);
    size_t len;
    uint8_t *img = gw_build(g, &len);
    gw_free(g);
    tu_write_file(path, img, len);
    tl_model *m = NULL;
    const char *p[] = {path};
    assert_int_equal(tl_model_open(p, 1, NULL, &m), TL_OK);
    const tl_load_mode modes[] = {TL_LOAD_MMAP, TL_LOAD_BUFFERED, TL_LOAD_DIRECT, TL_LOAD_AUTO};
    for (int mi = 0; mi < 4; mi++) {
        for (int conv = 0; conv < 2; conv++) {
            tl_load_options o;
            tl_load_options_init(&o);
            o.mode = modes[mi];
            o.convert = conv;
            o.dtype = TL_DTYPE_F32;
            o.verify = true;
            tl_load_result *r = NULL;
            tl_status s = tl_model_load(m, &o, &r);
            if (s != TL_OK) print_error("%s\n", tl_last_error());
            assert_int_equal(s, TL_OK);
            for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
                const tl_tensor_info *t = tl_model_tensor(m, i);
                const tl_loaded_tensor *lt = tl_load_result_tensor(r, i);
                if (conv && t->dtype == TL_DTYPE_F16) {
                    assert_int_equal(lt->dtype, TL_DTYPE_F32);
                    assert_int_equal(lt->nbytes, t->n_elements * 4);
                    ref_check_converted(TL_DTYPE_F32, lt->data, TL_DTYPE_F16, img + t->offset,
                                        t->n_elements, t->name);
                } else {
                    assert_int_equal(lt->dtype, t->dtype); /* Q4_K and F32 stay as they are */
                    assert_int_equal(lt->nbytes, t->nbytes);
                    assert_memory_equal(lt->data, img + t->offset, t->nbytes);
                }
            }
            tl_load_result_destroy(r);
        }
    }
    tl_model_close(m);
    free(img);
    free(path);
    tu_tmpdir_rm(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf_modes),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
