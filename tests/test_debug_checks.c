/*
 * test_debug_checks.c — the debug-only checks: in a build with TL_DEBUG_ASSERTS (Debug:
 * make asan, make tsan) a false TL_ASSERT, asserting a lock this thread does not hold (free, or
 * held by another thread), locking a mutex twice and unlocking one not held each abort with
 * "file:line: ..." on stderr, while correct use passes; in other builds TL_ASSERT neither
 * evaluates its condition nor aborts. Each case runs in a child process. Without
 * TL_DEBUG_ASSERTS the aborting cases are a skip, so ctest shows the default build's run as
 * Skipped.
 */
#include "testutil.h"

#include "core/assert.h"
#include "os/thread.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct child {
    int status;
    char err[4096];
} child;

/* Run fn in a child with stderr captured. */
static child run_child(void (*fn)(void)) {
    child c;
    memset(&c, 0, sizeof c);
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], 2);
        fn();
        _exit(0);
    }
    close(p[1]);
    size_t n = 0;
    ssize_t r;
    while ((r = read(p[0], c.err + n, sizeof c.err - 1 - n)) > 0)
        n += (size_t)r;
    close(p[0]);
    assert_int_equal(waitpid(pid, &c.status, 0), pid);
    return c;
}

#ifdef TL_DEBUG_ASSERTS
static void expect_abort(void (*fn)(void), const char *needle) {
    child c = run_child(fn);
    if (!WIFSIGNALED(c.status) || WTERMSIG(c.status) != SIGABRT)
        fail_msg("expected an abort with '%s'; status 0x%x, stderr: %s", needle, c.status, c.err);
    if (!strstr(c.err, needle)) fail_msg("stderr lacks '%s': %s", needle, c.err);
    if (!strstr(c.err, ".c:")) fail_msg("stderr lacks file:line: %s", c.err);
}

#endif

static void expect_clean_exit(void (*fn)(void)) {
    child c = run_child(fn);
    if (!WIFEXITED(c.status) || WEXITSTATUS(c.status) != 0)
        fail_msg("expected a clean exit; status 0x%x, stderr: %s", c.status, c.err);
}

static volatile int one = 1; /* read by TL_ASSERT, which other builds compile to nothing */

static void false_assert(void) {
    (void)one; /* used in every build: clang flags a static that only a no-op assert names */
    TL_ASSERT(one == 2);
}

#ifdef TL_DEBUG_ASSERTS
static void unheld(void) {
    tl__os_mutex m;
    tl__os_mutex_init(&m);
    tl__os_mutex_assert_held(&m);
}

static tl__os_mutex shared_mu;
static tl__os_mutex gate_mu;
static tl__os_cond gate_cv;
static int gate;

static void *hold_forever(void *arg) {
    (void)arg;
    tl__os_mutex_lock(&shared_mu);
    tl__os_mutex_lock(&gate_mu);
    gate = 1;
    tl__os_cond_broadcast(&gate_cv);
    tl__os_mutex_unlock(&gate_mu);
    pause();
    return NULL;
}

static void held_by_other_thread(void) {
    tl__os_mutex_init(&shared_mu);
    tl__os_mutex_init(&gate_mu);
    tl__os_cond_init(&gate_cv);
    tl__os_thread *t;
    if (tl__os_thread_start(&t, hold_forever, NULL) != 0) _exit(3);
    tl__os_mutex_lock(&gate_mu);
    while (!gate)
        tl__os_cond_wait(&gate_cv, &gate_mu);
    tl__os_mutex_unlock(&gate_mu);
    tl__os_mutex_assert_held(&shared_mu); /* locked, but not by this thread */
}

static void twice(void) {
    tl__os_mutex m;
    tl__os_mutex_init(&m);
    tl__os_mutex_lock(&m);
    tl__os_mutex_lock(&m);
}

static void unlock_unheld(void) {
    tl__os_mutex m;
    tl__os_mutex_init(&m);
    tl__os_mutex_unlock(&m);
}

#endif

static void correct_use(void) {
    tl__os_mutex m;
    tl__os_cond c;
    tl__os_mutex_init(&m);
    tl__os_cond_init(&c);
    tl__os_mutex_lock(&m);
    tl__os_mutex_assert_held(&m);
    TL_ASSERT(tl__os_mutex_held(&m));
    (void)tl__os_cond_timedwait(&c, &m, 0.001); /* gives the lock up and takes it back */
    tl__os_mutex_assert_held(&m);
    tl__os_mutex_unlock(&m);
    tl__os_cond_destroy(&c);
    tl__os_mutex_destroy(&m);
    TL_ASSERT(one == 1);
}

/* With TL_DEBUG_ASSERTS: each misuse aborts with its message, correct use does not. */
static void test_checks_abort(void **st) {
    (void)st;
#ifdef TL_DEBUG_ASSERTS
    expect_abort(false_assert, "assertion failed: one == 2");
    expect_abort(unheld, "held by this thread");
    expect_abort(held_by_other_thread, "held by this thread");
    expect_abort(twice, "locked twice");
    expect_abort(unlock_unheld, "does not hold it");
    expect_clean_exit(correct_use);
#else
    TU_SKIP("the aborting cases need TL_DEBUG_ASSERTS (a Debug build: make asan)");
#endif
}

#ifndef TL_DEBUG_ASSERTS
/* Without TL_DEBUG_ASSERTS: the checks compile to nothing (neither evaluated nor fatal). */
static void test_checks_compiled_out(void **st) {
    (void)st;
    int evaluated = 0;
    TL_ASSERT(++evaluated == 100);
    assert_int_equal(evaluated, 0);
    expect_clean_exit(false_assert);
    expect_clean_exit(correct_use);
}
#endif

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checks_abort),
#ifndef TL_DEBUG_ASSERTS
        cmocka_unit_test(test_checks_compiled_out),
#endif
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
