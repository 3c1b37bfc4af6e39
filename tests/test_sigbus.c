/*
 * test_sigbus.c — a model file truncated or rewritten while mapped does not
 * kill the process: tl_model_check_files and tl_model_tensor_read report
 * TL_ERR_CHANGED naming the file and tensor, a truncation that the size check
 * cannot see (it happens between check and copy) is caught by the SIGBUS
 * guard, and a SIGBUS outside any guard still reaches the previous handler.
 */
#include "testutil.h"

#include "os/guard.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static char *copy_model(const char *dir) {
    char *p = tu_path(dir, "m.gguf");
    tu_copy_testdata("gguf/tiny-llama-q8_0.gguf", p);
    return p;
}

static void test_truncated_file_is_an_error_not_a_crash(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *p = copy_model(dir);
    const char *paths[] = {p};
    tl_model *m;
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    size_t i = (size_t)tl_model_find(m, "output.weight");
    const tl_tensor_info *t = tl_model_tensor(m, i);
    void *buf = malloc(t->nbytes);
    assert_int_equal(tl_model_check_files(m), TL_OK);
    assert_int_equal(tl_model_tensor_read(m, i, 0, buf, t->nbytes), TL_OK);
    assert_memory_equal(buf, tl_model_tensor_data(m, i), t->nbytes);
    assert_int_equal(tl_model_tensor_read(m, i, 1, buf, t->nbytes), TL_ERR_INVALID_ARG);
    /* someone truncates the file */
    assert_int_equal(truncate(p, 4096), 0);
    assert_int_equal(tl_model_check_files(m), TL_ERR_CHANGED);
    assert_non_null(strstr(tl_last_error(), p));
    assert_int_equal(tl_model_tensor_read(m, i, 0, buf, t->nbytes), TL_ERR_CHANGED);
    assert_non_null(strstr(tl_last_error(), "'output.weight'"));
    assert_non_null(strstr(tl_last_error(), p));
    /* the guard alone: copying from the vanished pages is an error, not a signal */
    assert_int_equal(tl__os_guarded_copy(buf, tl_model_tensor_data(m, i), t->nbytes), EFAULT);
    /* and it keeps working afterwards (the signal mask was restored) */
    assert_int_equal(tl__os_guarded_copy(buf, tl_model_tensor_data(m, i), t->nbytes), EFAULT);
    tl_model_close(m);
    free(buf);
    free(p);
    tu_tmpdir_rm(dir);
}

static sigjmp_buf outer_jmp;
static volatile sig_atomic_t outer_hits;

static void outer_handler(int sig) {
    (void)sig;
    outer_hits++;
    siglongjmp(outer_jmp, 1);
}

static void test_foreign_sigbus_reaches_previous_handler(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *p = tu_path(dir, "f.bin");
    char page[8192] = {1};
    tu_write_file(p, page, sizeof page);
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    volatile char *map = mmap(NULL, sizeof page, PROT_READ, MAP_PRIVATE, fd, 0);
    assert_true(map != MAP_FAILED);
    int tfd = open(p, O_RDWR);
    assert_int_equal(ftruncate(tfd, 0), 0);
    close(tfd);
    /* An engine's own handler installed before tierload's guard was: */
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = outer_handler;
    sigaction(SIGBUS, &sa, &old); /* stays: tierload chains to it from now on */
    char tmp[16];
    /* tierload's guard installs on its first use, on top of the engine's */
    assert_int_equal(tl__os_guarded_copy(tmp, (const void *)map, sizeof tmp), EFAULT);
    if (!sigsetjmp(outer_jmp, 1)) {
        volatile char c = map[0]; /* unguarded: goes to the engine's handler */
        (void)c;
        fail_msg("no SIGBUS");
    }
    assert_int_equal(outer_hits, 1);
    munmap((void *)map, sizeof page);
    close(fd);
    free(p);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        /* first: it needs the engine's handler in place before tierload's guard installs */
        cmocka_unit_test(test_foreign_sigbus_reaches_previous_handler),
        cmocka_unit_test(test_truncated_file_is_an_error_not_a_crash),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
