/*
 * test_hostile_files.c — things named as model files that are not what they
 * seem: FIFOs (alone, in a folder, as a shard, as an index) are refused
 * without blocking; devices and /proc pseudo-files are named for what they
 * are; an index entry naming a folder is a format error naming the index and
 * the entry; shards and diffusers components that are symlinks out of the
 * model's folder are refused while the Hugging Face cache layout (symlinks
 * into blobs/) still opens; very long paths keep the reason of the error; the
 * same file under two spellings is recognised.
 */
#include "testutil.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A regression that blocks in open() must fail the test, not hang it. */
#define WATCHDOG_S 20

static tl_status open_one(const char *path, tl_model **m) {
    const char *paths[] = {path};
    *m = NULL;
    return tl_model_open(paths, 1, NULL, m);
}

static void write_text(const char *dir, const char *name, const char *text) {
    char *p = tu_path(dir, name);
    tu_write_file(p, text, strlen(text));
    free(p);
}

static void mk(const char *dir, const char *name) {
    char *p = tu_path(dir, name);
    assert_int_equal(mkdir(p, 0700), 0);
    free(p);
}

static void fifo(const char *dir, const char *name) {
    char *p = tu_path(dir, name);
    assert_int_equal(mkfifo(p, 0600), 0);
    free(p);
}

static void link_to(const char *target, const char *dir, const char *name) {
    char *p = tu_path(dir, name);
    assert_int_equal(symlink(target, p), 0);
    free(p);
}

static void copy_sample(const char *sample, const char *dir, const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, "safetensors/%s", sample);
    char *p = tu_path(dir, name);
    tu_copy_testdata(rel, p);
    free(p);
}

static void expect(const char *path, tl_status want, const char *const *needles) {
    tl_model *m;
    tl_status st = open_one(path, &m);
    if (st != want)
        fail_msg("%s: got %s (%s), want %s", path, tl_status_name(st), tl_last_error(),
                 tl_status_name(want));
    for (; needles && *needles; needles++)
        if (!strstr(tl_last_error(), *needles))
            fail_msg("%s: message '%s' lacks '%s'", path, tl_last_error(), *needles);
    if (st == TL_OK) tl_model_close(m);
}

static void test_fifos_never_block(void **state) {
    (void)state;
    alarm(WATCHDOG_S);
    char *dir = tu_tmpdir();
    /* the model itself */
    fifo(dir, "pipe.safetensors");
    char *p = tu_path(dir, "pipe.safetensors");
    expect(p, TL_ERR_INVALID_ARG, (const char *[]){"pipe.safetensors", "FIFO", NULL});
    /* the CLI commands that open models say so (usage exit status) */
    const char *cmds[][5] = {{"info", p, NULL},
                             {"load", "--quiet", p, NULL},
                             {"plan", "--devices", "cuda0=1G", p, NULL}};
    for (size_t i = 0; i < 3; i++) {
        char *argv[6] = {(char *)tu_cli()};
        for (size_t k = 0; cmds[i][k]; k++)
            argv[k + 1] = (char *)cmds[i][k];
        tu_run r = tu_run_argv(argv);
        assert_int_equal(r.status, 2);
        assert_non_null(strstr(r.err, "is a FIFO (named pipe)"));
        tu_run_free(&r);
    }
    free(p);
    /* inside a folder of model files */
    expect(dir, TL_ERR_INVALID_ARG, (const char *[]){"pipe.safetensors", "FIFO", NULL});
    /* as a shard of an index */
    mk(dir, "sharded");
    char *sh = tu_path(dir, "sharded");
    fifo(sh, "s-1.safetensors");
    write_text(sh, "m.safetensors.index.json", "{\"weight_map\":{\"t\":\"s-1.safetensors\"}}");
    p = tu_path(sh, "m.safetensors.index.json");
    expect(p, TL_ERR_FORMAT,
           (const char *[]){"m.safetensors.index.json", "'s-1.safetensors'", "FIFO", NULL});
    free(p);
    /* as the index */
    mk(dir, "idx");
    char *ix = tu_path(dir, "idx");
    fifo(ix, "m.safetensors.index.json");
    p = tu_path(ix, "m.safetensors.index.json");
    expect(p, TL_ERR_INVALID_ARG, (const char *[]){"FIFO", NULL});
    expect(ix, TL_ERR_INVALID_ARG, (const char *[]){"FIFO", NULL});
    free(p);
    /* as model_index.json, and as a diffusers component's weights */
    mk(dir, "diff");
    char *df = tu_path(dir, "diff");
    fifo(df, "model_index.json");
    expect(df, TL_ERR_INVALID_ARG, (const char *[]){"model_index.json", "FIFO", NULL});
    mk(dir, "diff2");
    char *d2 = tu_path(dir, "diff2");
    write_text(d2, "model_index.json", "{\"unet\":[\"diffusers\",\"UNet2DConditionModel\"]}");
    mk(d2, "unet");
    char *unet = tu_path(d2, "unet");
    fifo(unet, "diffusion_pytorch_model.safetensors");
    expect(d2, TL_ERR_INVALID_ARG, (const char *[]){"FIFO", NULL});
    alarm(0);
    free(unet);
    free(d2);
    free(df);
    free(ix);
    free(sh);
    tu_tmpdir_rm(dir);
}

static void test_devices_and_pseudo_files(void **state) {
    (void)state;
    expect("/dev/zero", TL_ERR_INVALID_ARG,
           (const char *[]){"/dev/zero", "is a character device", NULL});
    expect("/dev/null", TL_ERR_INVALID_ARG, (const char *[]){"is a character device", NULL});
    expect("/proc/self/status", TL_ERR_INVALID_ARG,
           (const char *[]){"/proc/self/status", "not a regular file with a size", NULL});
    /* a truly empty regular file is still "empty" */
    char *dir = tu_tmpdir();
    write_text(dir, "empty.gguf", "");
    char *p = tu_path(dir, "empty.gguf");
    expect(p, TL_ERR_FORMAT, (const char *[]){"file is empty", NULL});
    free(p);
    tu_tmpdir_rm(dir);
}

static void test_index_entry_naming_a_folder(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    mk(dir, "sub");
    copy_sample("f.safetensors", dir, "s-1.safetensors");
    write_text(dir, "m.safetensors.index.json",
               "{\"weight_map\":{\"f\":\"s-1.safetensors\",\"g\":\"sub\"}}");
    char *p = tu_path(dir, "m.safetensors.index.json");
    expect(p, TL_ERR_FORMAT,
           (const char *[]){"m.safetensors.index.json", "entry 'g'", "'sub'", "is a directory",
                            NULL});
    /* the CLI says so with the format exit status */
    tu_run r = tu_cli_run("info", p, NULL);
    assert_int_equal(r.status, 3);
    assert_non_null(strstr(r.err, "m.safetensors.index.json"));
    assert_non_null(strstr(r.err, "'sub'"));
    tu_run_free(&r);
    free(p);
    tu_tmpdir_rm(dir);
}

static void test_symlinks_out_of_the_folder(void **state) {
    (void)state;
    char *root = tu_tmpdir();
    mk(root, "outside");
    mk(root, "model");
    char *out = tu_path(root, "outside"), *model = tu_path(root, "model");
    copy_sample("f.safetensors", out, "x.safetensors");
    char *target = tu_path(out, "x.safetensors");
    /* a shard that is a symlink to a file outside the index's folder */
    link_to(target, model, "s-1.safetensors");
    write_text(model, "m.safetensors.index.json", "{\"weight_map\":{\"f\":\"s-1.safetensors\"}}");
    char *idx = tu_path(model, "m.safetensors.index.json");
    expect(idx, TL_ERR_FORMAT,
           (const char *[]){"m.safetensors.index.json", "s-1.safetensors",
                            "outside the model's folder", NULL});
    /* a relative symlink that stays inside is fine */
    mk(model, "real");
    copy_sample("f.safetensors", model, "real/x.safetensors");
    char *s1 = tu_path(model, "s-1.safetensors");
    assert_int_equal(unlink(s1), 0);
    link_to("real/x.safetensors", model, "s-1.safetensors");
    expect(idx, TL_OK, NULL);

    /* a diffusers component folder that is a symlink out of the folder */
    mk(root, "diff");
    char *diff = tu_path(root, "diff");
    write_text(diff, "model_index.json", "{\"unet\":[\"diffusers\",\"UNet2DConditionModel\"]}");
    mk(out, "unet");
    copy_sample("f.safetensors", out, "unet/diffusion_pytorch_model.safetensors");
    char *out_unet = tu_path(out, "unet");
    link_to(out_unet, diff, "unet");
    expect(diff, TL_ERR_FORMAT,
           (const char *[]){"model_index.json", "component folder 'unet'",
                            "outside the model's folder", NULL});
    /* a real component folder whose weights file links out */
    char *unet = tu_path(diff, "unet");
    assert_int_equal(unlink(unet), 0);
    mk(diff, "unet");
    link_to(target, unet, "diffusion_pytorch_model.safetensors");
    expect(diff, TL_ERR_FORMAT, (const char *[]){"outside the model's folder", NULL});

    /* the Hugging Face cache: snapshot files are symlinks into blobs/, index included */
    mk(root, "hf");
    char *hf = tu_path(root, "hf");
    mk(hf, "blobs");
    mk(hf, "snapshots");
    mk(hf, "snapshots/abc");
    copy_sample("f.safetensors", hf, "blobs/1111");
    copy_sample("B.safetensors", hf, "blobs/2222");
    write_text(hf, "blobs/3333",
               "{\"weight_map\":{\"f\":\"model-00001-of-00002.safetensors\","
               "\"B\":\"model-00002-of-00002.safetensors\"}}");
    char *snap = tu_path(hf, "snapshots/abc");
    link_to("../../blobs/1111", snap, "model-00001-of-00002.safetensors");
    link_to("../../blobs/2222", snap, "model-00002-of-00002.safetensors");
    link_to("../../blobs/3333", snap, "model.safetensors.index.json");
    expect(snap, TL_OK, NULL);
    /* ... and a diffusers pipeline in it, model_index.json and weights linking into blobs/ */
    mk(hf, "snapshots/def");
    mk(hf, "snapshots/def/unet");
    write_text(hf, "blobs/4444", "{\"unet\":[\"diffusers\",\"UNet2DConditionModel\"]}");
    char *snap2 = tu_path(hf, "snapshots/def");
    link_to("../../blobs/4444", snap2, "model_index.json");
    link_to("../../../blobs/1111", snap2, "unet/diffusion_pytorch_model.safetensors");
    expect(snap2, TL_OK, NULL);
    free(snap2);
    tl_model *m;
    assert_int_equal(open_one(snap, &m), TL_OK);
    assert_int_equal(tl_model_tensor_count(m), 2);
    tl_model_close(m);

    free(snap);
    free(hf);
    free(unet);
    free(out_unet);
    free(diff);
    free(s1);
    free(idx);
    free(target);
    free(out);
    free(model);
    tu_tmpdir_rm(root);
}

static void test_long_paths_keep_the_reason(void **state) {
    (void)state;
    /* 3000 characters: the whole path and the reason */
    char path[20000];
    size_t n = (size_t)snprintf(path, sizeof path, "/nonexistent-tierload-dir");
    while (n < 3000)
        n += (size_t)snprintf(path + n, sizeof path - n, "/%0100d", 7);
    snprintf(path + n, sizeof path - n, "/m.safetensors");
    tl_model *m;
    assert_int_equal(open_one(path, &m), TL_ERR_NOT_FOUND);
    assert_non_null(strstr(tl_last_error(), path));
    assert_non_null(strstr(tl_last_error(), ": no such file"));
    /* 19000 characters, longer than any message buffer: the reason is still at the end */
    while (n < 19000)
        n += (size_t)snprintf(path + n, sizeof path - n, "/%0100d", 7);
    snprintf(path + n, sizeof path - n, "/m.safetensors");
    assert_int_equal(open_one(path, &m), TL_ERR_IO);
    const char *msg = tl_last_error();
    const char *why = strerror(ENAMETOOLONG);
    size_t ml = strlen(msg), wl = strlen(why);
    assert_true(ml > wl);
    assert_string_equal(msg + ml - wl, why);
    assert_memory_equal(msg, "/nonexistent-tierload-dir/", 26);
}

static void test_same_file_two_spellings(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    copy_sample("f.safetensors", dir, "a.safetensors");
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(dir), 0);
    const char *two[] = {"./a.safetensors", "a.safetensors"};
    tl_model *m;
    assert_int_equal(tl_model_open(two, 2, NULL, &m), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "./a.safetensors and a.safetensors are the same file"));
    /* a hard link is the same file too */
    assert_int_equal(link("a.safetensors", "b.safetensors"), 0);
    const char *linked[] = {"a.safetensors", "b.safetensors"};
    assert_int_equal(tl_model_open(linked, 2, NULL, &m), TL_ERR_INVALID_ARG);
    assert_non_null(strstr(tl_last_error(), "same file"));
    /* a copy is not: its tensors collide by name, which is a format error */
    copy_sample("f.safetensors", dir, "c.safetensors");
    const char *copy[] = {"a.safetensors", "c.safetensors"};
    assert_int_equal(tl_model_open(copy, 2, NULL, &m), TL_ERR_FORMAT);
    assert_non_null(strstr(tl_last_error(), "appears in both"));
    assert_int_equal(chdir(cwd), 0);
    tu_tmpdir_rm(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifos_never_block),
        cmocka_unit_test(test_devices_and_pseudo_files),
        cmocka_unit_test(test_index_entry_naming_a_folder),
        cmocka_unit_test(test_symlinks_out_of_the_folder),
        cmocka_unit_test(test_long_paths_keep_the_reason),
        cmocka_unit_test(test_same_file_two_spellings),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
