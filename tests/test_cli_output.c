/*
 * test_cli_output.c — what the CLI writes, and how it reads its options.
 *
 * Output that cannot be written (/dev/full, a closed stdout) is an error,
 * exit status 4 with a message on stderr, for every command. Tensor names and
 * metadata keys with control characters (ESC, BEL, newline, C1 CSI) reach the
 * terminal escaped, in normal output and in error messages; names that are
 * not valid UTF-8 keep `info --json` valid JSON (each invalid byte becomes
 * \ufffd). Options with a value take "--opt=value" too; a missing value is
 * named; counts refuse signs; "--" ends the options; demo refuses arguments;
 * one file named twice under two spellings is refused as such.
 */
#include "testutil.h"

#include "gguf_writer.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Run the CLI with stdout redirected to `out_path`, or closed when NULL. */
static tu_run run_stdout(const char *out_path, const char *const *args) {
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)tu_cli();
    for (; *args && n < 31; args++)
        argv[n++] = (char *)*args;
    argv[n] = NULL;
    char errp[] = "/tmp/tlout_errXXXXXX";
    int ef = mkstemp(errp);
    assert_true(ef >= 0);
    unlink(errp);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(ef, 2);
        close(1);
        if (out_path) {
            int o = open(out_path, O_WRONLY);
            if (o != 1) _exit(126);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    tu_run r = {0};
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    lseek(ef, 0, SEEK_SET);
    size_t cap = 4096, len = 0;
    r.err = malloc(cap);
    ssize_t k;
    while ((k = read(ef, r.err + len, cap - len - 1)) > 0) {
        len += (size_t)k;
        if (cap - len - 1 == 0) r.err = realloc(r.err, cap *= 2);
    }
    r.err[len] = 0;
    r.out = strdup("");
    close(ef);
    return r;
}

static void test_unwritable_output(void **state) {
    (void)state;
    const char *f = tu_testdata("safetensors/f.safetensors");
    char *model = strdup(f);
    const char *cases[][8] = {
        {"info", model, NULL},
        {"info", "--json", model, NULL},
        {"plan", "--json", model, "--devices", "cuda0=4G", NULL},
        {"plan", model, "--devices", "cuda0=4G", NULL},
        {"load", "--json", "--quiet", model, NULL},
        {"load", "--quiet", model, NULL},
        {"devices", "--json", NULL},
        {"devices", NULL},
        {"--version", NULL},
        {"info", "--help", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int closed = 0; closed < 2; closed++) {
            tu_run r = run_stdout(closed ? NULL : "/dev/full", cases[i]);
            if (r.status != 4 || !strstr(r.err, "cannot write the output"))
                fail_msg("%s %s with %s stdout: status %d, stderr '%s'", cases[i][0],
                         cases[i][1] ? cases[i][1] : "", closed ? "a closed" : "a full",
                         r.status, r.err);
            tu_run_free(&r);
        }
    }
    /* the same commands to a writable file succeed */
    char *dir = tu_tmpdir();
    char *out = tu_path(dir, "out.txt");
    tu_write_file(out, "", 0);
    tu_run r = run_stdout(out, cases[1]);
    assert_int_equal(r.status, 0);
    tu_run_free(&r);
    size_t len;
    char *text = tu_read_file(out, &len);
    assert_true(len > 0 && text[0] == '{');
    free(text);
    free(out);
    tu_tmpdir_rm(dir);
    free(model);
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF), written for this test. */
static bool valid_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n) return false;
        uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += len;
    }
    return true;
}

#define EVIL_NAME "evil\x1b]0;pwned\x07\nname\xc2\x9b" "31m"
#define EVIL_KEY "key\x1b[2J"
#define BAD_UTF8 "bad\xff\xfe" "caf\xc3\xa9"

static char *write_evil(const char *dir, const char *name) {
    gw_gguf *g = gw_new(3);
    gw_kv_str(g, EVIL_KEY, "v\x1b[1mv");
    int64_t ne[1] = {4};
    gw_tensor(g, EVIL_NAME, 0, 1, ne);
    gw_tensor(g, BAD_UTF8, 0, 1, ne);
    char *p = tu_path(dir, name);
    assert_true(gw_write_file(g, p));
    gw_free(g);
    return p;
}

static void assert_no_controls(const char *text, const char *what) {
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (*p == '\n') continue;
        if (*p < 0x20 || *p == 0x7f) fail_msg("%s: raw control byte 0x%02x", what, *p);
    }
    if (strstr(text, "\xc2\x9b")) fail_msg("%s: raw C1 CSI", what);
    if (!valid_utf8((const unsigned char *)text, strlen(text)))
        fail_msg("%s: invalid UTF-8 reached the terminal", what);
}

static void test_control_characters_escaped(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *a = write_evil(dir, "a.gguf");
    tu_run r = tu_cli_run("info", "--keys", "0", a, NULL);
    assert_int_equal(r.status, 0);
    assert_no_controls(r.out, "info");
    assert_non_null(strstr(r.out, "evil\\x1b]0;pwned\\x07\\nname\\u009b31m"));
    assert_non_null(strstr(r.out, "key\\x1b[2J = \"v\\x1b[1mv\""));
    assert_non_null(strstr(r.out, "bad\\xff\\xfecaf\xc3\xa9"));
    tu_run_free(&r);
    /* in error messages too: the same names in two files collide */
    char *b = write_evil(dir, "b.gguf");
    r = tu_cli_run("info", a, b, NULL);
    assert_int_equal(r.status, 3);
    assert_no_controls(r.err, "error message");
    assert_non_null(strstr(r.err, "appears in both"));
    tu_run_free(&r);
    /* a path with control characters, in an error and in the listing */
    char *c = tu_path(dir, "c\x1b[31m.gguf");
    r = tu_cli_run("info", c, NULL);
    assert_int_equal(r.status, 5);
    assert_no_controls(r.err, "missing path");
    assert_non_null(strstr(r.err, "c\\x1b[31m.gguf"));
    tu_run_free(&r);
    assert_int_equal(rename(a, c), 0);
    r = tu_cli_run("info", c, NULL);
    assert_int_equal(r.status, 0);
    assert_no_controls(r.out, "path in the listing");
    tu_run_free(&r);
    r = tu_cli_run("load", "--quiet", c, NULL);
    assert_int_equal(r.status, 0);
    assert_no_controls(r.out, "load");
    tu_run_free(&r);
    free(a);
    free(b);
    free(c);
    tu_tmpdir_rm(dir);
}

static void test_json_stays_valid(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char *a = write_evil(dir, "a\xff.gguf");
    tu_run r = tu_cli_run("info", "--json", a, NULL);
    assert_int_equal(r.status, 0);
    assert_true(valid_utf8((const unsigned char *)r.out, strlen(r.out)));
    cJSON *doc = cJSON_Parse(r.out);
    assert_non_null(doc);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(doc, "tensors");
    bool seen_bad = false, seen_evil = false;
    const cJSON *e;
    cJSON_ArrayForEach(e, t) {
        const char *name = cJSON_GetObjectItemCaseSensitive(e, "name")->valuestring;
        /* each invalid byte is U+FFFD; valid UTF-8 (the e-acute) is kept */
        if (!strcmp(name, "bad\xef\xbf\xbd\xef\xbf\xbd" "caf\xc3\xa9")) seen_bad = true;
        if (!strcmp(name, EVIL_NAME)) seen_evil = true;
    }
    assert_true(seen_bad);
    assert_true(seen_evil); /* JSON escapes keep control characters exact */
    const char *path =
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc, "files"), 0)->child->valuestring;
    assert_non_null(strstr(path, "a\xef\xbf\xbd.gguf"));
    cJSON_Delete(doc);
    tu_run_free(&r);
    r = tu_cli_run("load", "--json", "--quiet", a, NULL);
    assert_int_equal(r.status, 0);
    assert_true(valid_utf8((const unsigned char *)r.out, strlen(r.out)));
    doc = cJSON_Parse(r.out);
    assert_non_null(doc);
    cJSON_Delete(doc);
    tu_run_free(&r);
    free(a);
    tu_tmpdir_rm(dir);
}

static void expect_run(int status, const char *needle, const char *const *args) {
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)tu_cli();
    for (; *args && n < 31; args++)
        argv[n++] = (char *)*args;
    argv[n] = NULL;
    tu_run r = tu_run_argv(argv);
    if (r.status != status || (needle && !strstr(r.err, needle) && !strstr(r.out, needle)))
        fail_msg("%s %s: status %d (want %d), stderr '%s'", argv[1], argv[2] ? argv[2] : "",
                 r.status, status, r.err);
    tu_run_free(&r);
}

static void test_options(void **state) {
    (void)state;
    char *m = strdup(tu_testdata("gguf/tiny-llama-q4_0.gguf"));
    char *st = strdup(tu_testdata("safetensors/f.safetensors"));
    char vae[PATH_MAX + 8];
    snprintf(vae, sizeof vae, "--vae=%s", st);
    /* --opt=value for every option with a value */
    expect_run(0, "largest 1 tensors", (const char *[]){"info", "--top=1", m, NULL});
    expect_run(0, "metadata:", (const char *[]){"info", "--keys=2", m, NULL});
    expect_run(0, "\"name\":\"first_stage_model.f\"", (const char *[]){"info", "--json", vae, NULL});
    expect_run(0, "loaded", (const char *[]){"load", "--quiet", "--dtype=F32", st, NULL});
    expect_run(0, "loaded",
               (const char *[]){"load", "--quiet", "--mode=buffered", "--threads=1",
                                "--staging=1M", "--staging-count=2", st, NULL});
    expect_run(0, "\"feasible\"",
               (const char *[]){"plan", "--json", "--devices=cuda0=4G", "--steps=3",
                                "--headroom=0", st, NULL});
    expect_run(0, "gpu0", (const char *[]){"devices", "--sim=gpu0=1G", NULL});
    /* a missing value is named as such */
    const char *missing[][4] = {{"info", m, "--top", NULL},     {"info", m, "--keys", NULL},
                                {"load", st, "--mode", NULL},   {"load", st, "--dtype", NULL},
                                {"load", st, "--threads", NULL}, {"plan", st, "--devices", NULL},
                                {"plan", st, "--steps", NULL},  {"devices", "--sim", NULL, NULL}};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        const char *opt = missing[i][missing[i][2] ? 2 : 1];
        char want[64];
        snprintf(want, sizeof want, "option %s needs a value", opt);
        expect_run(2, want, missing[i]);
    }
    expect_run(2, "option --vae needs a file", (const char *[]){"info", "--vae", NULL});
    /* counts take digits only: no sign, no suffix */
    expect_run(2, "--top wants a count", (const char *[]){"info", "--top", "-1", m, NULL});
    expect_run(2, "--top wants a count", (const char *[]){"info", "--top=+3", m, NULL});
    expect_run(2, "--keys wants a count", (const char *[]){"info", "--keys", "5abc", m, NULL});
    expect_run(2, "--threads takes 1..64", (const char *[]){"load", "--threads=-2", st, NULL});
    expect_run(2, "--steps", (const char *[]){"plan", "--steps", "-1", st, NULL});
    /* demo takes no arguments */
    /* demo passes flags through to run, which refuses unknown ones before anything is made */
    expect_run(2, "unknown option '--bogus'", (const char *[]){"demo", "--bogus", NULL});
    expect_run(5, "extra: no such file", (const char *[]){"demo", "extra", NULL}); /* a model path */
    /* "--" ends the options: a file named like an option */
    char *dir = tu_tmpdir();
    char *dash = tu_path(dir, "-x.safetensors");
    tu_copy_testdata("safetensors/f.safetensors", dash);
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(dir), 0);
    expect_run(2, "unknown option '-x.safetensors'", (const char *[]){"info", "-x.safetensors", NULL});
    expect_run(0, "-x.safetensors: safetensors", (const char *[]){"info", "--", "-x.safetensors", NULL});
    expect_run(0, "loaded", (const char *[]){"load", "--quiet", "--", "-x.safetensors", NULL});
    expect_run(0, "cuda0", (const char *[]){"plan", "--devices", "cuda0=1G", "--", "-x.safetensors", NULL});
    /* one file under two spellings */
    tu_copy_testdata("safetensors/f.safetensors", "a.safetensors");
    expect_run(2, "./a.safetensors and a.safetensors are the same file",
               (const char *[]){"info", "./a.safetensors", "a.safetensors", NULL});
    assert_int_equal(chdir(cwd), 0);
    free(dash);
    tu_tmpdir_rm(dir);
    free(m);
    free(st);
}

int main(void) {
    /* tests chdir into temp folders: make the CLI's path absolute first */
    char *cli = realpath(tu_cli(), NULL);
    if (cli) setenv("TL_CLI", cli, 1);
    free(cli);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unwritable_output),
        cmocka_unit_test(test_control_characters_escaped),
        cmocka_unit_test(test_json_stays_valid),
        cmocka_unit_test(test_options),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
