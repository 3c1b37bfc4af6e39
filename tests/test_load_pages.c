/*
 * test_load_pages.c — the page size of load destinations, read back from
 * the kernel (/proc/self/smaps VmFlags of the mapping that holds a loaded
 * tensor): by default the destination starts on huge pages ("hg",
 * MADV_HUGEPAGE; only a run of slow huge pages after the first few turns the
 * rest to 4 KiB, test_touch), huge pages when hugepages is set, and 4 KiB
 * pages ("nh", MADV_NOHUGEPAGE) with no_hugepages, which wins over hugepages.
 */
#include "testutil.h"
#include "test_load_st.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fill(void *buf, uint64_t off, uint64_t len, void *ctx) {
    (void)ctx;
    unsigned char *b = buf;
    for (uint64_t i = 0; i < len; i++)
        b[i] = (unsigned char)((off + i) * 13 + 1);
}

static void load_flags(const char *path, bool huge, bool no_huge, char *flags, size_t cap,
                       bool *ok) {
    tl_model *m = NULL;
    const char *p[] = {path};
    assert_int_equal(tl_model_open(p, 1, NULL, &m), TL_OK);
    tl_load_options o;
    tl_load_options_init(&o);
    o.mode = TL_LOAD_BUFFERED;
    o.hugepages = huge;
    o.no_hugepages = no_huge;
    tl_load_result *r = NULL;
    assert_int_equal(tl_model_load(m, &o, &r), TL_OK);
    const tl_loaded_tensor *t = tl_load_result_tensor(r, 0);
    assert_false(t->view);
    *ok = tu_vm_flags(t->data, flags, cap);
    tl_load_result_destroy(r);
    tl_model_close(m);
}

static void test_pages(void **st) {
    (void)st;
    char *dir = tu_tmpdir(), *path = tu_path(dir, "m.safetensors");
    st_tensor t[] = {{"w", "F16", 4u << 20, 2, NULL, fill, NULL}}; /* 8 MiB: whole huge pages */
    st_write(path, t, 1);
    char flags[512];
    bool ok;
    load_flags(path, false, false, flags, sizeof flags, &ok);
    if (!ok) {
        TU_SKIP("/proc/self/smaps has no VmFlags for the destination");
    }
    /* the default: huge pages to start with */
    assert_true(tu_has_vm_flag(flags, "hg"));
    assert_false(tu_has_vm_flag(flags, "nh"));
    load_flags(path, true, false, flags, sizeof flags, &ok);
    assert_true(ok);
    assert_true(tu_has_vm_flag(flags, "hg"));
    assert_false(tu_has_vm_flag(flags, "nh"));
    /* no_hugepages wins */
    load_flags(path, true, true, flags, sizeof flags, &ok);
    assert_true(ok);
    assert_true(tu_has_vm_flag(flags, "nh"));
    assert_false(tu_has_vm_flag(flags, "hg"));
    free(path);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pages),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
