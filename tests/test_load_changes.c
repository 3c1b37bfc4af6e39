/*
 * test_load_changes.c — files that change under a load, made to happen at a
 * known point: a file truncated under its mapping while the engine converts
 * from it or verify hashes it (an error naming file and tensor, never a
 * SIGBUS), a file truncated and grown back to its size (zeros) while a load
 * runs (TL_ERR_CHANGED in every mode, never a success with zeros), and the
 * error paths of a two-file load, which must never close a descriptor they
 * did not open (stdin included).
 */
#include "testutil.h"

#include "io/io.h"
#include "io/verify.h"
#include "os/fault.h"
#include "test_load_st.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { N = 200000 };

static void fill(void *buf, uint64_t off, uint64_t len, void *ctx) {
    (void)ctx;
    for (uint64_t i = 0; i < len; i++)
        ((unsigned char *)buf)[i] = (unsigned char)((off + i) * 13 + 1);
}

static char *write_model(const char *dir, const char *name) {
    char *p = tu_path(dir, name);
    st_tensor t[] = {{"x.f32", "F32", N, 4, NULL, fill, NULL},
                     {"y.f32", "F32", N, 4, NULL, fill, NULL}};
    st_write(p, t, 2);
    return p;
}

/* The engine reading a mapping whose file vanished: TL_ERR_CHANGED, the process lives. */
static void test_engine_guards_mappings(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *p = write_model(dir, "m.safetensors");
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    size_t len = 8 + 4096 + 2 * N * 4; /* more than the file: only mapped pages matter */
    void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    assert_true(map != MAP_FAILED);
    assert_int_equal(ftruncate(fd, 4096), 0);
    tl__io_engine *e;
    assert_int_equal(tl__io_engine_create(NULL, &e), TL_OK);
    float *dst = malloc(N * 4);
    tl__io_xfer x = {
        .len = N * 4, .from = TL_DTYPE_F32, .to = TL_DTYPE_F16, .path = p, .name = "x.f32"};
    x.src.kind = TL_IO_HOST;
    x.src.host = (unsigned char *)map + 65536;
    x.src.mapped = true;
    x.dst.kind = TL_IO_HOST;
    x.dst.host = dst;
    assert_int_equal(tl__io_run(e, &x, 1, TL_IO_DEMAND), TL_ERR_CHANGED); /* converting */
    assert_non_null(strstr(tl_last_error(), "x.f32"));
    assert_non_null(strstr(tl_last_error(), p));
    x.to = TL_DTYPE_F32;
    assert_int_equal(tl__io_run(e, &x, 1, TL_IO_DEMAND), TL_ERR_CHANGED); /* copying */
    /* verify hashing a view into the truncated mapping */
    tl_tensor_info ti = {
        .name = "x.f32", .dtype = TL_DTYPE_F32, .offset = 65536, .nbytes = N * 4, .n_elements = N};
    tl_loaded_tensor lt = {(unsigned char *)map + 65536, N * 4, TL_DTYPE_F32, true, false};
    unsigned char *a = malloc(1 << 20), *b = malloc(1 << 20);
    assert_int_equal(tl__io_verify_tensor(NULL, 0, fd, NULL, p, &ti, &lt, a, b, 1 << 20),
                     TL_ERR_CHANGED);
    assert_non_null(strstr(tl_last_error(), "x.f32"));
    free(a);
    free(b);
    free(dst);
    tl__io_engine_destroy(e);
    munmap(map, len);
    close(fd);
    free(p);
    tu_tmpdir_rm(dir);
}

typedef struct rewrite {
    const char *path;
    bool done;
} rewrite;

/* At the first progress report: truncate the file and grow it back to its size (zeros). */
static bool rewrite_once(void *user, uint64_t done, uint64_t total) {
    (void)done;
    (void)total;
    rewrite *rw = user;
    if (rw->done) return true;
    rw->done = true;
    int fd = open(rw->path, O_RDWR);
    off_t size = lseek(fd, 0, SEEK_END);
    assert_int_equal(ftruncate(fd, size / 2), 0);
    assert_int_equal(ftruncate(fd, size), 0);
    close(fd);
    return true;
}

/* Two model files in dir (a., b. prefixes keep their tensor names apart), opened as one model. */
static tl_model *two_files(const char *dir, char **p1, char **p2) {
    *p1 = write_model(dir, "a.safetensors");
    *p2 = write_model(dir, "b.safetensors");
    const char *paths[] = {*p1, *p2};
    const char *prefixes[] = {"a.", "b."};
    tl_model_options mo;
    tl_model_options_init(&mo);
    mo.prefixes = prefixes;
    tl_model *m;
    assert_int_equal(tl_model_open(paths, 2, &mo, &m), TL_OK);
    return m;
}

static void test_rewrite_during_load(void **state) {
    (void)state;
    const tl_load_mode modes[] = {TL_LOAD_BUFFERED, TL_LOAD_DIRECT, TL_LOAD_MMAP, TL_LOAD_MMAP};
    for (int which = 0; which < 2; which++)
        for (int mi = 0; mi < 4; mi++) {
            char *dir = tu_tmpdir(), *p1, *p2;
            tl_model *m = two_files(dir, &p1, &p2);
            rewrite rw = {which ? p2 : p1, false};
            tl_load_options o;
            tl_load_options_init(&o);
            o.mode = modes[mi];
            o.verify = true;
            o.convert = mi == 3; /* mmap with conversion reads the mapping */
            o.dtype = TL_DTYPE_F16;
            o.progress = rewrite_once;
            o.progress_user = &rw;
            tl_load_result *r = (tl_load_result *)1;
            tl_status s = tl_model_load(m, &o, &r);
            assert_true(rw.done);
            if (s != TL_ERR_CHANGED)
                fail_msg("mode %d file %d: status %d (%s)", mi, which, s, tl_last_error());
            assert_null(r);
            assert_non_null(strstr(tl_last_error(), rw.path));
            tl_model_close(m);
            free(p1);
            free(p2);
            tu_tmpdir_rm(dir);
        }
}

/* Every allocation failure of a two-file load leaves the caller's descriptors alone. */
static void test_two_file_faults_keep_stdin(void **state) {
    (void)state;
    char *dir = tu_tmpdir(), *p1, *p2;
    tl_model *m = two_files(dir, &p1, &p2);
    int saved = dup(0);
    int null = open("/dev/null", O_RDONLY);
    dup2(null, 0); /* a known, open stdin */
    close(null);
    const tl__fault_kind kinds[] = {TL_FAULT_ALLOC, TL_FAULT_OPEN, TL_FAULT_READ};
    for (int k = 0; k < 3; k++)
        for (int direct = 0; direct < 2; direct++) {
            tl_load_options o;
            tl_load_options_init(&o);
            o.mode = direct ? TL_LOAD_DIRECT : TL_LOAD_BUFFERED;
            tl__fault_arm(kinds[k], 0, 0);
            tl_load_result *r;
            assert_int_equal(tl_model_load(m, &o, &r), TL_OK);
            tl_load_result_destroy(r);
            unsigned long calls = tl__fault_calls(kinds[k]);
            int fds = tu_count_fds();
            for (unsigned long nth = 1; nth <= calls; nth++) {
                tl__fault_arm(kinds[k], nth, kinds[k] == TL_FAULT_ALLOC ? ENOMEM : EIO);
                tl_status s = tl_model_load(m, &o, &r);
                tl__fault_reset();
                if (s == TL_OK) tl_load_result_destroy(r);
                if (fcntl(0, F_GETFD) == -1)
                    fail_msg("fault %d #%lu (direct %d) closed stdin", k, nth, direct);
                assert_int_equal(tu_count_fds(), fds);
            }
        }
    dup2(saved, 0);
    close(saved);
    tl_model_close(m);
    free(p1);
    free(p2);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_engine_guards_mappings),
        cmocka_unit_test(test_rewrite_during_load),
        cmocka_unit_test(test_two_file_faults_keep_stdin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
