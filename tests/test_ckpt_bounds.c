/*
 * test_ckpt_bounds.c — a checkpoint tensor is bounded by the bytes that back
 * it: expanding views (a stride of 0 over a small storage: torch's expand)
 * may add at most 16 MiB per file beyond their storage, so a file of a few
 * hundred bytes cannot be catalogued or loaded as gigabytes; smaller ones
 * still load with torch's values; `info` tells the bytes on disk apart from
 * the tensors' bytes when tensors share a storage. The files are written by
 * torch itself (/usr/bin/python3 with python3-torch).
 */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool have_torch(void) {
    if (access("/usr/bin/python3", X_OK) != 0) return false;
    char *argv[] = {"/usr/bin/python3", "-c", "import torch", NULL};
    tu_run r = tu_run_argv(argv);
    bool ok = r.status == 0;
    tu_run_free(&r);
    return ok;
}

static void torch_save(const char *expr, const char *path) {
    char code[2048];
    snprintf(code, sizeof code, "import torch\ntorch.save(%s, '%s')\n", expr, path);
    char *argv[] = {"/usr/bin/python3", "-c", code, NULL};
    tu_run r = tu_run_argv(argv);
    if (r.status) fail_msg("python: %s", r.err);
    tu_run_free(&r);
}

static void test_expanding_view_is_bounded(void **state) {
    (void)state;
    if (!have_torch()) TU_SKIP("no /usr/bin/python3 with torch (apt-get install python3-torch)");
    char *dir = tu_tmpdir();
    char *big = tu_path(dir, "expand.ckpt"), *small = tu_path(dir, "small.ckpt");
    /* 16 elements of storage, 2^29 elements of view (2 GiB as F32) */
    torch_save("{'w': torch.arange(16.).expand(2**25, 16)}", big);
    struct stat st;
    assert_int_equal(stat(big, &st), 0);
    tl_model *m = NULL;
    const char *p = big;
    tl_status s = tl_model_open(&p, 1, NULL, &m);
    if (s == TL_OK) {
        uint64_t nb = tl_model_tensor(m, 0)->nbytes;
        tl_model_close(m);
        fail_msg("a %lld-byte file opened with a tensor of %llu bytes", (long long)st.st_size,
                 (unsigned long long)nb);
    }
    assert_int_equal(s, TL_ERR_UNSUPPORTED);
    assert_non_null(strstr(tl_last_error(), "'w'"));
    assert_non_null(strstr(tl_last_error(), "expand.ckpt"));
    /* a small expansion is a view like any strided tensor: torch's values */
    torch_save("{'w': torch.arange(4.).reshape(1, 4).expand(3, 4)}", small);
    p = small;
    assert_int_equal(tl_model_open(&p, 1, NULL, &m), TL_OK);
    float v[12];
    assert_int_equal(tl_model_tensor(m, 0)->nbytes, sizeof v);
    assert_int_equal(tl_model_tensor_read(m, 0, 0, v, sizeof v), TL_OK);
    for (int i = 0; i < 12; i++) assert_true(v[i] == (float)(i % 4));
    tl_model_close(m);
    free(big), free(small);
    tu_tmpdir_rm(dir);
}

static void test_info_shows_bytes_on_disk(void **state) {
    (void)state;
    if (!have_torch()) TU_SKIP("no /usr/bin/python3 with torch (apt-get install python3-torch)");
    char *dir = tu_tmpdir();
    char *tied = tu_path(dir, "tied.ckpt");
    /* three names, one storage of 1024 F32 (4 KiB): 12 KiB of tensors, 4 KiB on disk */
    torch_save("(lambda a: {'a.weight': a, 'b.weight': a, 'c.weight': a})(torch.zeros(32, 32))",
               tied);
    tu_run r = tu_cli_run("info", tied, NULL);
    assert_int_equal(r.status, 0);
    if (!strstr(r.out, "12.00 KiB of weights, 4.00 KiB of tensor data on disk"))
        fail_msg("info does not tell the bytes on disk:\n%s", r.out);
    tu_run_free(&r);
    r = tu_cli_run("info", "--json", tied, NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "\"tensor_bytes_on_disk\":4096"));
    tu_run_free(&r);
    free(tied);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expanding_view_is_bounded),
        cmocka_unit_test(test_info_shows_bytes_on_disk),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
