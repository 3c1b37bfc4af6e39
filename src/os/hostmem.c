/*
 * hostmem.c — anonymous mappings with a chosen page size, and page
 * population / dropping of file mappings (see os/hostmem.h).
 */
#include "os/hostmem.h"
#include "os/fault.h"
#include "os/os.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define HUGE_SZ (2ull << 20)

int tl__os_anon_alloc(uint64_t size, tl__os_pages pages, void **addr, uint64_t *len) {
    int e = tl__fault_hit(TL_FAULT_ALLOC);
    if (e) return e;
    if (size == 0) size = 1;
    uint64_t ps = tl__os_page_size();
    uint64_t want = (size + ps - 1) / ps * ps;
    bool huge = pages == TL_OS_PAGES_HUGE;
    uint64_t map = huge && want >= HUGE_SZ ? want + HUGE_SZ : want;
    if (map < want || map > (uint64_t)SIZE_MAX) return ENOMEM;
    char *p = mmap(NULL, (size_t)map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return errno;
    if (map != want) {
        /* trim to a 2 MiB aligned start so that every whole 2 MiB can be a huge page */
        uintptr_t a = ((uintptr_t)p + HUGE_SZ - 1) & ~(uintptr_t)(HUGE_SZ - 1);
        size_t head = (size_t)(a - (uintptr_t)p);
        size_t tail = (size_t)(map - head - want);
        if (head) munmap(p, head);
        if (tail) munmap((char *)a + want, tail);
        p = (char *)a;
#ifdef MADV_HUGEPAGE
        madvise(p, (size_t)want, MADV_HUGEPAGE); /* a hint: failure only costs speed */
#endif
    }
#ifdef MADV_NOHUGEPAGE
    if (pages == TL_OS_PAGES_SMALL) madvise(p, (size_t)want, MADV_NOHUGEPAGE); /* a hint too */
#endif
    *addr = p;
    *len = want;
    return 0;
}

int tl__os_anon_free(void *addr, uint64_t len) {
    if (!addr) return 0;
    return munmap(addr, (size_t)len) == 0 ? 0 : errno;
}

int tl__os_populate_read(const void *addr, uint64_t size) {
    if (size == 0) return 0;
    uintptr_t ps = tl__os_page_size();
    uintptr_t a = (uintptr_t)addr & ~(ps - 1);
    size_t len = (size_t)((uintptr_t)addr + size - a);
    if (madvise((void *)a, len, MADV_POPULATE_READ) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return errno;
    /* older kernels: touch one byte per page */
    volatile unsigned char sink = 0;
    for (uintptr_t p = a; p < (uintptr_t)addr + size; p += ps)
        sink ^= *(const volatile unsigned char *)p;
    (void)sink;
    return 0;
}

int tl__os_populate_write(void *addr, uint64_t size) {
    if (size == 0) return 0;
    if (madvise(addr, (size_t)size, MADV_POPULATE_WRITE) == 0) return 0;
    return errno == EINVAL || errno == ENOSYS ? ENOTSUP : errno;
}

int tl__os_pages_small(void *addr, uint64_t size) {
#ifdef MADV_NOHUGEPAGE
    if (size && madvise(addr, (size_t)size, MADV_NOHUGEPAGE) != 0) return errno;
#else
    (void)addr;
    (void)size;
#endif
    return 0;
}

int tl__os_pages_huge(void *addr, uint64_t size) {
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = 2u << 20;
    uintptr_t a = ((uintptr_t)addr + huge - 1) & ~(huge - 1);
    uintptr_t z = ((uintptr_t)addr + (uintptr_t)size) & ~(huge - 1);
    if (z > a && madvise((void *)a, (size_t)(z - a), MADV_HUGEPAGE) != 0) return errno;
#else
    (void)addr;
    (void)size;
#endif
    return 0;
}

int tl__os_drop_mapping_pages(const void *addr, uint64_t size) {
    if (!addr || size == 0) return 0;
    uintptr_t ps = tl__os_page_size();
    uintptr_t a = (uintptr_t)addr & ~(ps - 1);
    size_t len = (size_t)((uintptr_t)addr + size - a);
    return madvise((void *)a, len, MADV_DONTNEED) == 0 ? 0 : errno;
}
