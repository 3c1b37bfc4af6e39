/*
 * test_fault_open.c — fault injection across opening a model: the N-th open,
 * read, mmap or heap allocation fails (EIO / ENOMEM), for every N the open
 * makes. Each time the error reaches the caller with a message naming the
 * file involved and the reason, no file
 * descriptor is leaked (and, under make asan, no memory), and a following
 * open without faults still gives a catalog whose tensors equal the files.
 * The model is a sharded index plus a GGUF, so discovery, both parsers and
 * the catalog are all swept.
 */
#include "testutil.h"

#include "os/fault.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void sweep(tl__fault_kind kind, int err, const char *const *paths, size_t n_paths,
                  const char *const *shards) {
    /* count the calls a clean open makes */
    tl__fault_arm(kind, 0, 0);
    tl_model *m;
    assert_int_equal(tl_model_open(paths, n_paths, NULL, &m), TL_OK);
    size_t n_tensors = tl_model_tensor_count(m);
    tl_model_close(m);
    unsigned long calls = tl__fault_calls(kind);
    assert_true(calls > 0);
    int fds = tu_count_fds();
    for (unsigned long nth = 1; nth <= calls; nth++) {
        tl__fault_arm(kind, nth, err);
        m = (tl_model *)1;
        tl_status st = tl_model_open(paths, n_paths, NULL, &m);
        if (st == TL_OK)
            fail_msg("kind %d: call %lu of %lu failed but the open succeeded", kind, nth, calls);
        assert_null(m);
        /* the message names the file involved (one of the model's files or its shards) and why */
        const char *e = tl_last_error();
        bool named = false;
        for (size_t i = 0; i < n_paths; i++)
            named |= strstr(e, paths[i]) != NULL;
        for (size_t i = 0; shards && shards[i]; i++)
            named |= strstr(e, shards[i]) != NULL;
        /* model-wide allocations (the open's own state, the merged catalog) name no file */
        bool model_wide = kind == TL_FAULT_ALLOC && !strcmp(e, "out of memory");
        if (!named && !model_wide)
            fail_msg("kind %d, call %lu: the message names no file: %s", kind, nth, e);
        if (!strstr(e, strerror(err)) && !(err == ENOMEM && strstr(e, "out of memory")))
            fail_msg("kind %d, call %lu: the message does not say why: %s", kind, nth, e);
        assert_int_equal(tu_count_fds(), fds);
    }
    tl__fault_reset();
    assert_int_equal(tl_model_open(paths, n_paths, NULL, &m), TL_OK);
    assert_int_equal(tl_model_tensor_count(m), n_tensors);
    for (size_t i = 0; i < n_tensors; i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        void *buf = malloc(t->nbytes ? t->nbytes : 1);
        assert_int_equal(tl_model_tensor_read(m, i, 0, buf, t->nbytes), TL_OK);
        assert_memory_equal(buf, tl_model_tensor_data(m, i), t->nbytes);
        free(buf);
    }
    tl_model_close(m);
}

static void test_fault_sweep_over_open(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *s1 = tu_path(dir, "m-1.safetensors"), *s2 = tu_path(dir, "m-2.safetensors");
    tu_copy_testdata("safetensors/B.safetensors", s1);
    tu_copy_testdata("safetensors/e.safetensors", s2);
    char *idx = tu_path(dir, "m.safetensors.index.json");
    const char *json = "{\"weight_map\":{\"B\":\"m-1.safetensors\",\"e\":\"m-2.safetensors\"}}";
    tu_write_file(idx, json, strlen(json));
    const char *paths[] = {idx, tu_testdata("gguf/tiny-llama-q4_0.gguf")};
    char *gguf = strdup(paths[1]);
    paths[1] = gguf;
    const char *shards[] = {s1, s2, NULL};
    sweep(TL_FAULT_OPEN, EIO, paths, 2, shards);
    sweep(TL_FAULT_READ, EIO, paths, 2, shards);
    sweep(TL_FAULT_MMAP, ENOMEM, paths, 2, shards);
    sweep(TL_FAULT_ALLOC, ENOMEM, paths, 2, shards);
    free(gguf);
    free(idx);
    free(s1);
    free(s2);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_sweep_over_open),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
