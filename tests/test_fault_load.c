/*
 * test_fault_load.c — fault injection across a load: the N-th open, read or
 * allocation fails (EIO / ENOMEM) for every N a load makes, in mmap,
 * buffered, direct and auto mode, with and without conversion, with and
 * without verification. Every injected read error must fail the load with
 * TL_ERR_IO (converted tensors too, verify off: the read error itself, not
 * an integrity error later); every injected allocation or open failure must
 * either fail the load or be recovered from with a correct result. Each
 * sweep counts the faults it really injected (the call was reached) and
 * must inject at least one at each site it claims: reads in every copying
 * mode and under verify, allocations everywhere, opens in direct mode (the
 * only loads that open the files again; the others read through the model's
 * own descriptors and mappings, and make no open call at all). A failure
 * names the file and says why; no file descriptor is leaked (and, under make
 * asan, no memory); the model stays consistent; a success holds the file's
 * bytes, or their conversion computed by an independent reference.
 */
#include "testutil.h"

#include "os/fault.h"
#include "gguf_writer.h"
#include "ref_convert.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct sweep_case {
    const char *path;
    const unsigned char *file; /* the file's bytes, read by the test */
    tl_model *m;
} sweep_case;

static void check_loaded(const sweep_case *c, const tl_load_result *r, const tl_load_options *o) {
    tl_model *m = c->m;
    assert_int_equal(tl_load_result_tensor_count(r), tl_model_tensor_count(m));
    for (size_t i = 0; i < tl_model_tensor_count(m); i++) {
        const tl_tensor_info *t = tl_model_tensor(m, i);
        const tl_loaded_tensor *lt = tl_load_result_tensor(r, i);
        const unsigned char *src = c->file + t->offset;
        if (o->convert && (t->dtype == TL_DTYPE_F16 || t->dtype == TL_DTYPE_Q8_0)) {
            assert_true(lt->converted); /* F16 converted, Q8_0 dequantized */
            assert_int_equal(lt->dtype, o->dtype);
            assert_int_equal(lt->nbytes, t->n_elements * 4);
            ref_check_converted(lt->dtype, lt->data, t->dtype, src, t->n_elements, t->name);
        } else {
            assert_false(lt->converted);
            assert_int_equal(lt->nbytes, t->nbytes);
            assert_memory_equal(lt->data, src, t->nbytes);
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

/*
 * Fail each call of kind in turn. every_fails: each injected fault must fail
 * the load with want (reads); otherwise a fault may also be recovered from,
 * and then the result must be right. Returns the number of faults injected
 * (calls reached); *calls_out (may be NULL) the calls of a clean load.
 */
static unsigned long sweep(const sweep_case *c, tl__fault_kind kind, int err, tl_status want,
                           bool every_fails, const tl_load_options *o, unsigned long *calls_out) {
    tl_model *m = c->m;
    tl__fault_arm(kind, 0, 0);
    tl_load_result *r;
    if (tl_model_load(m, o, &r) != TL_OK) fail_msg("clean load: %s", tl_last_error());
    tl_load_result_destroy(r);
    unsigned long calls = tl__fault_calls(kind), injected = 0;
    if (calls_out) *calls_out = calls;
    tl__fault_reset();
    int fds = tu_count_fds();
    for (unsigned long nth = 1; nth <= calls; nth++) {
        tl__fault_arm(kind, nth, err);
        r = (tl_load_result *)1;
        tl_status st = tl_model_load(m, o, &r);
        unsigned long made = tl__fault_calls(kind);
        tl__fault_reset();
        injected += made >= nth;
        if (st == TL_OK) {
            if (every_fails && made >= nth)
                fail_msg("mode %s convert %d verify %d: fault %lu of %lu (kind %d) was ignored",
                         tl_load_mode_name(o->mode), o->convert, o->verify, nth, calls, (int)kind);
            (void)made; /* reached and recovered from, or not reached (call counts vary with
                           threads) */
            check_loaded(c, r, o);
            tl_load_result_destroy(r);
        } else {
            const char *e = tl_last_error();
            assert_null(r);
            /* an io_uring queue that cannot be set up is reported as an I/O error with its errno */
            bool uring_nomem = kind == TL_FAULT_ALLOC && st == TL_ERR_IO && strstr(e, "io_uring");
            if (st != want && !uring_nomem)
                fail_msg("fault %lu of %lu (kind %d, mode %s, convert %d): %s, want %s: %s", nth,
                         calls, (int)kind, tl_load_mode_name(o->mode), o->convert,
                         tl_status_name(st), tl_status_name(want), e);
            /* the load's own set-up, before any file, speaks for the whole load */
            bool whole_load = kind == TL_FAULT_ALLOC &&
                              (!strncmp(e, "load: ", 6) || !strncmp(e, "memory sampler: ", 16));
            if (!whole_load && !strstr(e, c->path))
                fail_msg("the message does not name the file: %s", e);
            if (!strstr(e, strerror(err)) && !(err == ENOMEM && strstr(e, "out of memory")))
                fail_msg("the message does not say why: %s", e);
        }
        assert_int_equal(tu_count_fds(), fds);
        model_consistent(m);
    }
    if (tl_model_load(m, o, &r) != TL_OK) fail_msg("load after faults: %s", tl_last_error());
    check_loaded(c, r, o);
    tl_load_result_destroy(r);
    return injected;
}

static void test_fault_sweep_over_load(void **state) {
    (void)state;
    /* a small llama-like GGUF: F16 tensors of several staging chunks, an F32 and a Q8_0 one */
    char *dir = tu_tmpdir();
    char *p0 = tu_path(dir, "small.gguf");
    gw_gguf *g = gw_new(3);
    gw_kv_str(g, "general.architecture", "llama");
    const int64_t big[2] = {256, 300}, vec[1] = {256}, q[2] = {256, 40};
    gw_tensor(g, "token_embd.weight", TL_DTYPE_F16, 2, big);
    gw_tensor(g, "blk.0.attn_norm.weight", TL_DTYPE_F32, 1, vec);
    gw_tensor(g, "blk.0.attn_q.weight", TL_DTYPE_F16, 2, big);
    gw_tensor(g, "blk.0.ffn_up.weight", TL_DTYPE_Q8_0, 2, q);
    gw_tensor(g, "output.weight", TL_DTYPE_F16, 2, big);
    assert_true(gw_write_file(g, p0));
    gw_free(g);
    sweep_case c;
    c.path = p0;
    c.file = (const unsigned char *)tu_read_file(p0, NULL);
    assert_non_null(c.file);
    assert_int_equal(tl_model_open(&c.path, 1, NULL, &c.m), TL_OK);
    tl_load_mode modes[] = {TL_LOAD_BUFFERED, TL_LOAD_DIRECT, TL_LOAD_MMAP, TL_LOAD_AUTO};
    for (size_t k = 0; k < 4; k++) {
        for (int conv = 0; conv < 2; conv++) {
            for (int verify = 0; verify < 2; verify++) {
                tl_load_options o = {.size = sizeof(tl_load_options),
                                     .mode = modes[k],
                                     .convert = conv,
                                     .dtype = TL_DTYPE_F32,
                                     .verify = verify,
                                     .staging_size = 64 << 10};
                /* every read a copying load makes is needed: each injected EIO must fail it */
                unsigned long reads = sweep(&c, TL_FAULT_READ, EIO, TL_ERR_IO, true, &o, NULL);
                if (modes[k] == TL_LOAD_BUFFERED || modes[k] == TL_LOAD_DIRECT || verify)
                    if (reads == 0)
                        fail_msg("mode %s verify %d: no read fault was injected",
                                 tl_load_mode_name(modes[k]), verify);
                if (verify != conv) continue; /* allocations and opens: two of the four suffice */
                unsigned long allocs =
                    sweep(&c, TL_FAULT_ALLOC, ENOMEM, TL_ERR_NOMEM, false, &o, NULL);
                if (allocs == 0)
                    fail_msg("mode %s: no allocation fault was injected",
                             tl_load_mode_name(modes[k]));
                unsigned long open_calls = 0;
                unsigned long opens = sweep(&c, TL_FAULT_OPEN, EIO, TL_ERR_IO, false, &o, &open_calls);
                if (modes[k] == TL_LOAD_DIRECT) {
                    if (opens == 0) fail_msg("direct mode: no open fault was injected");
                } else if (open_calls != 0) {
                    fail_msg("mode %s made %lu open calls: sweep them as in direct mode",
                             tl_load_mode_name(modes[k]), open_calls);
                }
            }
        }
    }
    tl_model_close(c.m);
    free((void *)c.file);
    free(p0);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_sweep_over_load),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
