/*
 * test_zip.c — the zip central directory reader (format/zip.c) on archives
 * the test writes byte by byte: a deflated entry whose compressed and
 * uncompressed sizes differ and whose sizes and local header offset all come
 * from one ZIP64 extra field, beside entries with only some ZIP64 fields and
 * a plain one. Expected sizes and offsets are the ones the test wrote;
 * Python's zipfile reads the same archive as a second opinion.
 */
#include "testutil.h"

#include "format/zip.h"

#include <stdlib.h>
#include <string.h>

typedef struct img {
    uint8_t b[16384];
    size_t n;
} img;

static void put(img *z, const void *p, size_t n) {
    assert_true(z->n + n <= sizeof z->b);
    memcpy(z->b + z->n, p, n);
    z->n += n;
}
static void p16(img *z, uint16_t v) {
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put(z, b, 2);
}
static void p32(img *z, uint32_t v) {
    p16(z, (uint16_t)v);
    p16(z, (uint16_t)(v >> 16));
}
static void p64(img *z, uint64_t v) {
    p32(z, (uint32_t)v);
    p32(z, (uint32_t)(v >> 32));
}

typedef struct ent {
    const char *name;
    uint16_t method;
    uint64_t csize, usize;
    bool z64_u, z64_c, z64_o; /* which fields the central record moves to its ZIP64 field */
    uint64_t lho;             /* filled in while writing */
    uint64_t data;            /* absolute offset of the entry's bytes */
} ent;

/* Local headers with their bytes, the central directory, the end record. */
static void build(img *z, ent *e, size_t n) {
    z->n = 0;
    for (size_t i = 0; i < n; i++) {
        e[i].lho = z->n;
        bool z64 = e[i].z64_u || e[i].z64_c;
        p32(z, 0x04034b50);
        p16(z, 45);
        p16(z, 0);
        p16(z, e[i].method);
        p16(z, 0);
        p16(z, 0x21);
        p32(z, 0); /* crc: not checked by either reader for what is asked of it */
        p32(z, z64 ? 0xFFFFFFFFu : (uint32_t)e[i].csize);
        p32(z, z64 ? 0xFFFFFFFFu : (uint32_t)e[i].usize);
        p16(z, (uint16_t)strlen(e[i].name));
        p16(z, z64 ? 20 : 0);
        put(z, e[i].name, strlen(e[i].name));
        if (z64) {
            p16(z, 1);
            p16(z, 16);
            p64(z, e[i].usize);
            p64(z, e[i].csize);
        }
        e[i].data = z->n;
        for (uint64_t k = 0; k < e[i].csize; k++) {
            uint8_t c = (uint8_t)(k * 7 + i);
            put(z, &c, 1);
        }
    }
    uint64_t cd = z->n;
    for (size_t i = 0; i < n; i++) {
        uint16_t elen = (uint16_t)(8 * (e[i].z64_u + e[i].z64_c + e[i].z64_o));
        p32(z, 0x02014b50);
        p16(z, 45);
        p16(z, 45);
        p16(z, 0);
        p16(z, e[i].method);
        p16(z, 0);
        p16(z, 0x21);
        p32(z, 0);
        p32(z, e[i].z64_c ? 0xFFFFFFFFu : (uint32_t)e[i].csize);
        p32(z, e[i].z64_u ? 0xFFFFFFFFu : (uint32_t)e[i].usize);
        p16(z, (uint16_t)strlen(e[i].name));
        p16(z, elen ? (uint16_t)(elen + 4) : 0);
        p16(z, 0);
        p16(z, 0);
        p16(z, 0);
        p32(z, 0);
        p32(z, e[i].z64_o ? 0xFFFFFFFFu : (uint32_t)e[i].lho);
        put(z, e[i].name, strlen(e[i].name));
        if (elen) {
            p16(z, 1);
            p16(z, elen);
            /* in the order of the spec: uncompressed size, compressed size, offset */
            if (e[i].z64_u) p64(z, e[i].usize);
            if (e[i].z64_c) p64(z, e[i].csize);
            if (e[i].z64_o) p64(z, e[i].lho);
        }
    }
    uint64_t cd_size = z->n - cd;
    p32(z, 0x06054b50);
    p16(z, 0);
    p16(z, 0);
    p16(z, (uint16_t)n);
    p16(z, (uint16_t)n);
    p32(z, (uint32_t)cd_size);
    p32(z, (uint32_t)cd);
    p16(z, 0);
}

static void test_zip64_fields(void **st) {
    (void)st;
    ent e[] = {
        {"archive/data.pkl", 0, 300, 300, false, false, false, 0, 0},
        {"archive/data/0", 8, 600, 1000, true, true, true, 0, 0}, /* all three in one field */
        {"archive/data/1", 8, 200, 5000, true, true, false, 0, 0},
        {"archive/data/2", 0, 128, 128, false, false, true, 0, 0},
    };
    size_t n = sizeof e / sizeof e[0];
    img *z = calloc(1, sizeof *z);
    build(z, e, n);
    tl__zip zip;
    if (tl__zip_open(z->b, z->n, "t.zip", &zip) != TL_OK) fail_msg("%s", tl_last_error());
    assert_int_equal(zip.n_entries, n);
    for (size_t i = 0; i < n; i++) {
        const tl__zip_entry *x = tl__zip_find(&zip, e[i].name, strlen(e[i].name));
        if (!x) fail_msg("entry %s not found", e[i].name);
        assert_int_equal(x->method, e[i].method);
        if (x->size != e[i].csize || x->usize != e[i].usize || x->offset != e[i].data)
            fail_msg("%s: sizes %llu/%llu at %llu, want %llu/%llu at %llu", e[i].name,
                     (unsigned long long)x->size, (unsigned long long)x->usize,
                     (unsigned long long)x->offset, (unsigned long long)e[i].csize,
                     (unsigned long long)e[i].usize, (unsigned long long)e[i].data);
        assert_int_equal(x->offset + x->size <= z->n, 1);
    }
    tl__zip_free(&zip);

    /* the same archive through Python's zipfile: the test's own layout, read independently */
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, "t.zip");
    tu_write_file(path, z->b, z->n);
    const char *py = "import sys, zipfile\n"
                     "for i in zipfile.ZipFile(sys.argv[1]).infolist():\n"
                     "    print(i.filename, i.compress_type, i.compress_size, i.file_size, "
                     "i.header_offset)\n";
    char *argv[] = {"/usr/bin/python3", "-c", (char *)py, path, NULL};
    tu_run r = tu_run_argv(argv);
    if (r.status == 127 || r.status == 126) {
        tu_run_free(&r);
        if (tu_in_ci()) fail_msg("CI: /usr/bin/python3 is missing");
        TU_SKIP("no /usr/bin/python3 for the second reading");
    }
    if (r.status != 0) fail_msg("python's zipfile refused the archive: %s", r.err);
    char want[2048] = "";
    for (size_t i = 0; i < n; i++) {
        char line[256];
        snprintf(line, sizeof line, "%s %u %llu %llu %llu\n", e[i].name, e[i].method,
                 (unsigned long long)e[i].csize, (unsigned long long)e[i].usize,
                 (unsigned long long)e[i].lho);
        strcat(want, line);
    }
    assert_string_equal(r.out, want);
    tu_run_free(&r);
    free(path);
    tu_tmpdir_rm(dir);
    free(z);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zip64_fields),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
