/*
 * test_mapping.c — the file mappings behind the catalog: one MAP_PRIVATE
 * mapping per file; copy-on-write patches never reach the file; page-cache
 * residency read from mincore; the dontneed hint really evicts a file's pages
 * (fadvise, not just madvise); hint parsing from the environment; and files
 * that cannot be models (empty, a directory, missing, too short, neither
 * format) are errors naming the file.
 */
#include "testutil.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define TMPFS_MAGIC_ 0x01021994

static char *copy_gguf(const char *dir) {
    char *p = tu_path(dir, "m.gguf");
    tu_copy_testdata("gguf/tiny-llama-f16.gguf", p);
    return p;
}

static void test_copy_on_write_never_reaches_file(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *p = copy_gguf(dir);
    const char *paths[] = {p};
    tl_model *m;
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    assert_null(tl_model_tensor_data_mut(m, 0)); /* read-only by default */
    tl_model_close(m);
    tl_model_options o = {.size = sizeof(tl_model_options), .writable = true};
    assert_int_equal(tl_model_open(paths, 1, &o, &m), TL_OK);
    size_t i = (size_t)tl_model_find(m, "blk.0.attn_q.weight");
    const tl_tensor_info *t = tl_model_tensor(m, i);
    uint64_t off = t->offset, n = t->nbytes;
    unsigned char *w = tl_model_tensor_data_mut(m, i);
    assert_non_null(w);
    unsigned char *before = malloc(n);
    memcpy(before, w, n);
    memset(w, 0xAB, n);
    assert_int_equal(((const unsigned char *)tl_model_tensor_data(m, i))[0], 0xAB);
    tl_model_close(m);
    size_t len;
    char *after = tu_read_file(p, &len);
    assert_memory_equal(after + off, before, n);
    free(after);
    free(before);
    free(p);
    tu_tmpdir_rm(dir);
}

/* Page-cache residency seen through a fresh mapping of our own (no parsing). */
static double raw_residency(const char *path) {
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    double pages = (double)(((uint64_t)st.st_size + 4095) / 4096);
    return (double)(tu_file_cached_bytes(path) / 4096) / pages;
}

static void test_residency_and_dontneed(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    struct statfs sfs;
    assert_int_equal(statfs(dir, &sfs), 0);
    if (sfs.f_type == TMPFS_MAGIC_) {
        tu_tmpdir_rm(dir);
        TU_SKIP("the temp folder is on tmpfs: page-cache residency and DONTNEED do not apply "
                "(set TMPDIR to a disk folder)");
    }
    char *p = copy_gguf(dir);
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(fsync(fd), 0); /* dirty pages cannot be dropped */
    char buf[1 << 16];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    close(fd);
    const char *paths[] = {p};
    tl_model *m;
    tl_model_options o = {.size = sizeof(tl_model_options), .map_flags = TL_MAP_DONTNEED};
    assert_int_equal(tl_model_open(paths, 1, &o, &m), TL_OK);
    double frac = 0;
    assert_int_equal(tl_model_file_residency(m, 0, &frac), TL_OK);
    assert_true(frac > 0.99);
    tl_model_close(m); /* drops the pages */
    assert_true(raw_residency(p) < 0.01);
    /* populate brings them back */
    o.map_flags = TL_MAP_POPULATE;
    assert_int_equal(tl_model_open(paths, 1, &o, &m), TL_OK);
    assert_int_equal(tl_model_file_residency(m, 0, &frac), TL_OK);
    assert_true(frac > 0.99);
    /* and tl_model_advise(DONTNEED) drops them while open */
    assert_int_equal(tl_model_advise(m, TL_MAP_DONTNEED), TL_OK);
    assert_int_equal(tl_model_file_residency(m, 0, &frac), TL_OK);
    assert_true(frac < 0.01);
    assert_true(raw_residency(p) < 0.01);
    assert_int_equal(tl_model_file_residency(m, 7, &frac), TL_ERR_INVALID_ARG);
    tl_model_close(m);
    free(p);
    tu_tmpdir_rm(dir);
}

static void test_map_flags_from_environment(void **state) {
    (void)state;
    unsigned f;
    assert_int_equal(tl_parse_map_flags("sequential, willneed,populate,dontneed", &f), TL_OK);
    assert_int_equal(f, TL_MAP_SEQUENTIAL | TL_MAP_WILLNEED | TL_MAP_POPULATE | TL_MAP_DONTNEED);
    assert_int_equal(tl_parse_map_flags("", &f), TL_OK);
    assert_int_equal(f, 0);
    assert_int_equal(tl_parse_map_flags("willneed,bogus", &f), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "bogus"));
    const char *paths[] = {tu_testdata("gguf/tiny-llama-q4_0.gguf")};
    tl_model *m;
    tl_model_options env;
    tl_model_options_init(&env);
    env.map_flags = TL_MAP_FROM_ENV;
    setenv("TIERLOAD_MMAP_FLAGS", "sequential,nope", 1);
    assert_int_equal(tl_model_open(paths, 1, &env, &m), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "TIERLOAD_MMAP_FLAGS"));
    /* without TL_MAP_FROM_ENV the variable is not read: 0 means no hints */
    assert_int_equal(tl_model_open(paths, 1, NULL, &m), TL_OK);
    tl_model_close(m);
    tl_model_options none;
    tl_model_options_init(&none);
    assert_int_equal(tl_model_open(paths, 1, &none, &m), TL_OK);
    tl_model_close(m);
    setenv("TIERLOAD_MMAP_FLAGS", "sequential,willneed", 1);
    assert_int_equal(tl_model_open(paths, 1, &env, &m), TL_OK);
    tl_model_close(m);
    unsetenv("TIERLOAD_MMAP_FLAGS");
    /* an options struct nobody initialised */
    tl_model_options zero;
    memset(&zero, 0, sizeof zero);
    assert_int_equal(tl_model_open(paths, 1, &zero, &m), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "tl_model_options_init"));
}

static void expect_open_error(const char *path, tl_status want, const char *needle) {
    const char *paths[] = {path};
    tl_model *m = (tl_model *)1;
    tl_status st = tl_model_open(paths, 1, NULL, &m);
    if (st != want)
        fail_msg("%s: got %s (%s), want %s", path, tl_status_name(st), tl_last_error(),
                 tl_status_name(want));
    assert_null(m);
    assert_non_null(strstr(tl_last_error(), path));
    if (needle && !strstr(tl_last_error(), needle))
        fail_msg("'%s' lacks '%s'", tl_last_error(), needle);
}

static void test_files_that_are_not_models(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *empty = tu_path(dir, "empty.gguf");
    tu_write_file(empty, "", 0);
    expect_open_error(empty, TL_ERR_FORMAT, "empty");
    char *sub = tu_path(dir, "sub.gguf");
    assert_int_equal(mkdir(sub, 0700), 0);
    char *inner = tu_path(sub, "x.txt");
    tu_write_file(inner, "x", 1);
    /* a folder without models */
    expect_open_error(sub, TL_ERR_NOT_FOUND, "no .gguf");
    char *missing = tu_path(dir, "missing.safetensors");
    expect_open_error(missing, TL_ERR_NOT_FOUND, "no such file");
    char *tiny = tu_path(dir, "tiny.bin");
    tu_write_file(tiny, "GGU", 3);
    expect_open_error(tiny, TL_ERR_FORMAT, "too short");
    char *text = tu_path(dir, "text.bin");
    tu_write_file(text, "hello world, not a model", 24);
    expect_open_error(text, TL_ERR_FORMAT, "neither GGUF nor safetensors");
    const char *none[] = {NULL};
    tl_model *m;
    assert_int_equal(tl_model_open(none, 0, NULL, &m), TL_ERR_INVALID_ARG);
    free(empty);
    free(inner);
    free(sub);
    free(missing);
    free(tiny);
    free(text);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy_on_write_never_reaches_file),
        cmocka_unit_test(test_residency_and_dontneed),
        cmocka_unit_test(test_map_flags_from_environment),
        cmocka_unit_test(test_files_that_are_not_models),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
