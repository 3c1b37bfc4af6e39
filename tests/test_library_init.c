/*
 * test_library_init.c — tl_init's process-wide settings do what the header
 * promises: no_cuda loads no runtime, cudart_path replaces the search (and
 * TIERLOAD_CUDART), no_sigbus_guard leaves SIGBUS to the process, and the
 * settings are refused once the library has used them. Each case runs in a
 * child process, since settings apply once per process.
 */
#include "testutil.h"

#include "os/guard.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* Run fn in a child; returns its wait status. */
static int in_child(int (*fn)(void)) {
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(fn());
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return st;
}

static int child_no_cuda(void) {
    setenv("TIERLOAD_CUDART", "/nonexistent/env-libcudart.so", 1);
    tl_library_options o;
    tl_library_options_init(&o);
    o.no_cuda = true;
    if (tl_init(&o) != TL_OK) return 10;
    const char *why = tl_device_cuda_reason();
    if (!strstr(why, "disabled")) return 11;
    if (strstr(why, "env-libcudart")) return 12; /* the variable was not even tried */
    tl_device *devs[16];
    size_t n = tl_device_list(devs, 16);
    if (n < 1 || n > 16) return 13;
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        if (tl_device_kind_of(devs[i]) == TL_DEVICE_CUDA) bad = 1;
    tl_device_list_release(devs, n);
    if (bad) return 14;
    /* settings are fixed once used */
    if (tl_init(NULL) != TL_ERR_INVALID_ARG) return 15;
    if (!strstr(tl_last_error(), "tl_init")) return 16;
    return 0;
}

static void test_no_cuda(void **state) {
    (void)state;
    int st = in_child(child_no_cuda);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static int child_cudart_path(void) {
    setenv("TIERLOAD_CUDART", "/nonexistent/env-libcudart.so", 1);
    tl_library_options o;
    tl_library_options_init(&o);
    char path[] = "/nonexistent/host-libcudart.so";
    o.cudart_path = path;
    if (tl_init(&o) != TL_OK) return 10;
    path[1] = 'X'; /* tl_init keeps its own copy */
    const char *why = tl_device_cuda_reason();
    if (!strstr(why, "/nonexistent/host-libcudart.so")) return 11;
    if (strstr(why, "env-libcudart")) return 12;
    return 0;
}

static void test_cudart_path(void **state) {
    (void)state;
    int st = in_child(child_cudart_path);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* Map a 2-page file, cut it to one page, copy from the lost page through the guard. */
static int guarded_read_of_lost_page(void) {
    char tmpl[] = "/tmp/tl_guard_XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd < 0) return 20;
    unlink(tmpl);
    long pg = sysconf(_SC_PAGESIZE);
    if (ftruncate(fd, 2 * pg) != 0) return 21;
    unsigned char *map = mmap(NULL, (size_t)(2 * pg), PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) return 22;
    if (ftruncate(fd, pg) != 0) return 23;
    char buf[16];
    return tl__os_guarded_copy(buf, map + pg, sizeof buf) == EFAULT ? 0 : 24;
}

static int child_guard_on(void) {
    if (tl_init(NULL) != TL_OK) return 10;
    return guarded_read_of_lost_page();
}

static int child_guard_off(void) {
    tl_library_options o;
    tl_library_options_init(&o);
    o.no_sigbus_guard = true;
    if (tl_init(&o) != TL_OK) return 10;
    signal(SIGBUS, SIG_DFL);
    guarded_read_of_lost_page();
    return 30; /* not reached: SIGBUS kills the child */
}

static void test_sigbus_guard_switch(void **state) {
    (void)state;
    int st = in_child(child_guard_on);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0); /* the guard turned SIGBUS into EFAULT */
    st = in_child(child_guard_off);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGBUS); /* no handler of ours in the way */
}

static void test_uninitialised_options(void **state) {
    (void)state;
    tl_library_options o;
    memset(&o, 0, sizeof o);
    assert_int_equal(tl_init(&o), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "tl_library_options_init"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uninitialised_options),
        cmocka_unit_test(test_no_cuda),
        cmocka_unit_test(test_cudart_path),
        cmocka_unit_test(test_sigbus_guard_switch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
