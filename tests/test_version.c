/*
 * test_version.c — the version is written once: tl_version() spells TL_VERSION_* of the public
 * header, and the installed pkg-config file (generated from CMake's project() version) says the
 * same.
 */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

static void test_agree(void **st) {
    (void)st;
    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", TL_VERSION_MAJOR, TL_VERSION_MINOR, TL_VERSION_PATCH);
    assert_string_equal(tl_version(), want);

    const char *bd = getenv("TL_BUILD_DIR");
    assert_non_null(bd);
    char path[4096];
    snprintf(path, sizeof path, "%s/tierload.pc", bd);
    size_t len;
    char *pc = tu_read_file(path, &len);
    assert_non_null(pc);
    const char *v = strstr(pc, "\nVersion: ");
    assert_non_null(v);
    v += strlen("\nVersion: ");
    size_t n = strcspn(v, "\n");
    if (n != strlen(want) || strncmp(v, want, n) != 0)
        fail_msg("tierload.pc says Version: %.*s, tl_version() says %s", (int)n, v, want);
    free(pc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
