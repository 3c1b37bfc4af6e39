/*
 * procmem.c — /proc/self/status and /proc/self/smaps_rollup (see procmem.h).
 */
#include "os/procmem.h"
#include "os/meminfo.h"
#include "os/os.h"

#include <string.h>

/* A "Key: N kB" field in bytes, 0 when the kernel does not report it. */
static uint64_t field_or_0(const char *text, const char *key) {
    uint64_t v = 0;
    return tl__os_meminfo_field(text, key, &v) == 0 ? v : 0;
}

int tl__os_procmem_read(tl__os_procmem *out) {
    char buf[8192];
    memset(out, 0, sizeof *out);
    int e = tl__os_read_text("/proc/self/status", buf, sizeof buf, NULL);
    if (e) return e;
    out->rss = field_or_0(buf, "VmRSS");
    out->rss_anon = field_or_0(buf, "RssAnon");
    out->rss_file = field_or_0(buf, "RssFile");
    out->rss_shmem = field_or_0(buf, "RssShmem");
    out->peak_rss = field_or_0(buf, "VmHWM");
    return 0;
}

int tl__os_procmem_uss(uint64_t *uss) {
    char buf[4096];
    int e = tl__os_read_text("/proc/self/smaps_rollup", buf, sizeof buf, NULL);
    if (e) return e;
    *uss = field_or_0(buf, "Private_Clean") + field_or_0(buf, "Private_Dirty");
    return 0;
}
