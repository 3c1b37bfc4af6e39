/*
 * testutil.h — what the cmocka tests share: where the test data and the
 * built CLI are, private temporary folders that clean up after themselves,
 * writing files, and running the CLI to capture its output and exit status.
 */
#ifndef TL_TESTUTIL_H
#define TL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "tierload.h"

/*
 * 1 in a ThreadSanitizer build. TSan keeps several shadow bytes per byte written (anon RSS says
 * nothing then), and does not support fork() once threads exist.
 */
#if defined(__SANITIZE_THREAD__)
#define TU_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TU_UNDER_TSAN 1
#endif
#endif
#ifndef TU_UNDER_TSAN
#define TU_UNDER_TSAN 0
#endif

/*
 * The test data (TL_TESTDATA: BUILD/testdata, made by ctest's testdata fixture with
 * tools/make_testdata.sh) joined with rel into a static buffer. A missing file skips the
 * test with the reason the maker left (unavailable.txt: no npm or git to fetch llama.cpp's
 * tools), or fails under CI=true or when there is no such reason. The next call (also through
 * tu_expected or tu_copy_testdata) overwrites the buffer.
 */
const char *tu_testdata(const char *rel);
/* expected/<file>.json of the test data, parsed (cJSON_Delete it). */
cJSON *tu_expected(const char *file);
/*
 * Over the tensors of an expected JSON whose name starts with prefix (NULL: all) and that have
 * n_dims dimensions (0: any): their count, and the sum of their nbytes (elem_bytes 0) or of
 * elements times elem_bytes.
 */
size_t tu_expected_count(const cJSON *exp, const char *prefix, int n_dims);
uint64_t tu_expected_sum(const cJSON *exp, const char *prefix, int n_dims, uint64_t elem_bytes);
/* Path of the built tierload CLI (TL_CLI). */
const char *tu_cli(void);
/* Make a fresh private temp dir (mkdtemp); tu_tmpdir_rm removes it recursively. */
char *tu_tmpdir(void);
void tu_tmpdir_rm(char *dir);
/* dir + "/" + name into a new heap string. */
char *tu_path(const char *dir, const char *name);
/* Write bytes to a file (creating or truncating it). */
void tu_write_file(const char *path, const void *data, size_t len);
/* Open file descriptors of this process (to check that nothing leaks one). */
int tu_count_fds(void);
/* Copy a file of the test data (path relative to it) to dst. */
void tu_copy_testdata(const char *rel, const char *dst);
/* Read a whole file into a heap buffer (NUL-terminated); *len gets its size. */
char *tu_read_file(const char *path, size_t *len);

/*
 * Skips that show: TU_SKIP prints why (stderr) and skips the current test;
 * tu_exit turns cmocka's failure count into the program's exit status:
 * failures, else TU_SKIP_CODE (ctest's SKIP_RETURN_CODE) when any test was
 * skipped, else 0. Every main ends `return tu_exit(cmocka_run_group_tests(...))`.
 */
#define TU_SKIP_CODE 77
void tu_skip_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define TU_SKIP(...)                                                                               \
    do {                                                                                           \
        tu_skip_note(__VA_ARGS__);                                                                 \
        skip();                                                                                    \
    } while (0)
int tu_exit(int failed);

/*
 * The VmFlags line (/proc/self/smaps) of the mapping holding addr, copied
 * into flags; false when there is no such mapping or no VmFlags.
 */
bool tu_vm_flags(const void *addr, char *flags, size_t cap);
/* Whether a VmFlags line holds the two-letter flag ("nh", "hg"). */
bool tu_has_vm_flag(const char *flags, const char *flag);
/* Bytes of [addr, addr+n) resident in memory, counted with mincore (whole pages). */
uint64_t tu_resident_bytes(const void *addr, uint64_t n);
/* Bytes of the file at path in the page cache, through a mapping of its own (whole pages). */
uint64_t tu_file_cached_bytes(const char *path);
/* Is this a CI run (CI=true in the environment)? There, missing references fail, not skip. */
int tu_in_ci(void);

/*
 * ggml's shared libraries for the tests that use ggml: TIERLOAD_GGML_DIR, else
 * the source build (TL_GGML_ROOT/lib, `make ggml`), else the npm package
 * @node-llama-cpp/linux-x64 of the same release installed (once) into
 * $TL_BUILD_DIR/<folder> — a folder per test program, so parallel tests never
 * install into the same one. false with *why set when there is none.
 */
bool tu_ggml_dir(const char *folder, char *dir, size_t n, char *why, size_t why_n);

/*
 * The "checked N tensors: M hash mismatches" line of `tierload run`'s text
 * output: false when there is none.
 */
bool tu_run_checked(const char *out, unsigned long long *checked, unsigned long long *mismatches);

/*
 * A feasible plan of m on one GPU-like device `gpu` of cap bytes and the host:
 * backend (may be NULL: auto-fit) places components, offload streams them from
 * RAM; compute reserves are 0. Fails the test when the plan cannot be made.
 */
/* Register a sim GPU NAME of `capacity` bytes and return it (registered; the test fails when it
 * cannot be made). */
tl_device *tu_sim_add(const char *name, uint64_t capacity);

tl_plan *tu_plan_one_gpu(tl_model *m, const char *gpu, uint64_t cap, const char *backend,
                         bool offload);
/* The same for summary sum over n GPU-like devices gpus[] of budget bytes each, and the host. */
tl_plan *tu_plan_gpus(const tl_plan_summary *sum, const char *const *gpus, size_t n,
                      uint64_t budget, const char *backend, bool offload);

/* Result of running a command. */
typedef struct tu_run {
    int status; /* exit status, or 128+signal */
    char *out;  /* captured stdout (heap, NUL-terminated) */
    char *err;  /* captured stderr */
} tu_run;
/* Run the CLI with the given arguments (NULL-terminated list). */
tu_run tu_cli_run(const char *arg0, ...);
/* Run argv (NULL-terminated). */
tu_run tu_run_argv(char *const argv[]);
void tu_run_free(tu_run *r);

#endif
