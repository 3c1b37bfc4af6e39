/*
 * test_plan_faults.c — the planner under failed allocations: every
 * allocation it makes goes through os/ (so the fault injector reaches it),
 * and each one that fails fails the whole plan with TL_ERR_NOMEM and no plan
 * — never a plan that silently lost a branch of the search. A sweep fails
 * the N-th allocation for every N of one tl_plan_create.
 */
#include "helpers/testutil.h"
#include "os/fault.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static char *plan_json(const tl_plan_summary *sum, const char *devices, const tl_plan_options *o,
                       tl_status *st) {
    tl_plan_device devs[TL_PLAN_MAX_DEVICES];
    size_t nd;
    assert_int_equal(tl_plan_parse_devices(devices, devs, TL_PLAN_MAX_DEVICES, &nd), TL_OK);
    tl_plan *p = NULL;
    *st = tl_plan_create(sum, devs, nd, o, &p);
    tl__fault_reset();
    if (*st) {
        assert_null(p);
        return NULL;
    }
    char *j = NULL;
    assert_int_equal(tl_plan_to_json(p, &j), TL_OK);
    tl_plan_destroy(p);
    return j;
}

/* Fail allocation N for every N the planning makes: each fails the plan with TL_ERR_NOMEM. */
static void sweep(const char *profile, const char *devices, const tl_plan_options *o,
                  unsigned long min_calls) {
    tl_plan_summary sum;
    assert_int_equal(tl_plan_summary_profile(profile, &sum), TL_OK);
    tl_status st;
    tl__fault_arm(TL_FAULT_ALLOC, 0, 0); /* count only */
    tl_plan_device devs[TL_PLAN_MAX_DEVICES];
    size_t nd;
    assert_int_equal(tl_plan_parse_devices(devices, devs, TL_PLAN_MAX_DEVICES, &nd), TL_OK);
    tl_plan *p = NULL;
    assert_int_equal(tl_plan_create(&sum, devs, nd, o, &p), TL_OK);
    unsigned long calls = tl__fault_calls(TL_FAULT_ALLOC);
    tl__fault_reset();
    tl_plan_destroy(p);
    char *want = plan_json(&sum, devices, o, &st);
    assert_int_equal(st, TL_OK);
    /* the plan allocates its inputs, the plan, the context and one workspace per search */
    if (calls < min_calls)
        fail_msg("%s on %s: %lu allocations, expected at least %lu", profile, devices, calls,
                 min_calls);
    for (unsigned long nth = 1; nth <= calls + 1; nth++) {
        tl__fault_arm(TL_FAULT_ALLOC, nth, ENOMEM);
        char *got = plan_json(&sum, devices, o, &st);
        if (nth <= calls) {
            if (st != TL_ERR_NOMEM)
                fail_msg("%s on %s: allocation %lu of %lu failed, but the plan returned %d%s",
                         profile, devices, nth, calls, (int)st,
                         st == TL_OK ? " (a plan that lost part of its search)" : "");
            assert_non_null(strstr(tl_last_error(), "out of memory"));
        } else {
            assert_int_equal(st, TL_OK);
            assert_string_equal(got, want);
        }
        free(got);
    }
    free(want);
    tl_plan_summary_clear(&sum);
}

static void test_feasible_sweep(void **state) {
    (void)state;
    tl_plan_options o;
    tl_plan_options_init(&o);
    sweep("flux-f16", "cuda0=11G,cuda1=11G,cuda2=11G,cuda3=11G", &o, 4);
    sweep("ltx2", "cuda0=16G,cuda1=10G", &o, 4);
}

/* An infeasible plan runs many searches to explain itself; each may fail. */
static void test_infeasible_sweep(void **state) {
    (void)state;
    tl_plan_options o;
    tl_plan_options_init(&o);
    o.backend = "*=cuda0";
    o.max_vram = "6G";
    sweep("sdxl", "cuda0=12G", &o, 10);
}

static void test_summary_from_profile(void **state) {
    (void)state;
    tl_plan_summary sum;
    tl__fault_arm(TL_FAULT_ALLOC, 1, ENOMEM);
    tl_status st = tl_plan_summary_profile("flux-f16", &sum);
    tl__fault_reset();
    assert_int_equal(st, TL_ERR_NOMEM);
    tl_plan_summary_clear(&sum);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_feasible_sweep),
        cmocka_unit_test(test_infeasible_sweep),
        cmocka_unit_test(test_summary_from_profile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
