/*
 * test_team.c — os/team.c: every piece of a job runs exactly once, on the
 * caller and the helpers, with 0, 1 and 3 helpers and without a team; jobs
 * of several callers at once take turns; a team destroyed before any job
 * and after many.
 */
#include "helpers/testutil.h"

#include "os/team.h"
#include "os/thread.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct job {
    size_t n;
    _Atomic unsigned *hits;
} job;

static void hit(void *arg, size_t i) {
    job *j = arg;
    assert_true(i < j->n);
    atomic_fetch_add(&j->hits[i], 1);
}

static void run_and_check(tl__team *t, size_t n) {
    _Atomic unsigned *hits = calloc(n ? n : 1, sizeof *hits);
    job j = {n, hits};
    tl__team_run(t, n, hit, &j);
    for (size_t i = 0; i < n; i++)
        if (atomic_load(&hits[i]) != 1)
            fail_msg("piece %zu of %zu ran %u times", i, n, atomic_load(&hits[i]));
    free(hits);
}

static void test_every_piece_once(void **state) {
    (void)state;
    const unsigned helpers[] = {0, 1, 3};
    for (size_t h = 0; h < 3; h++) {
        tl__team *t = tl__team_create(helpers[h]);
        assert_non_null(t);
        for (size_t n = 0; n < 70; n++)
            run_and_check(t, n);
        run_and_check(t, 100000);
        tl__team_destroy(t);
    }
    run_and_check(NULL, 5);
    tl__team_destroy(tl__team_create(2)); /* no job: no helper was started */
    tl__team_destroy(NULL);
    assert_true(tl__team_default_helpers() < 8);
}

static tl__team *shared;

static void *caller(void *arg) {
    (void)arg;
    for (int r = 0; r < 200; r++)
        run_and_check(shared, 1 + (size_t)r % 37);
    return NULL;
}

static void test_callers_take_turns(void **state) {
    (void)state;
    shared = tl__team_create(2);
    tl__os_thread *th[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(tl__os_thread_start(&th[i], caller, NULL), 0);
    for (int i = 0; i < 3; i++)
        tl__os_thread_join(th[i]);
    tl__team_destroy(shared);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_piece_once),
        cmocka_unit_test(test_callers_take_turns),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
