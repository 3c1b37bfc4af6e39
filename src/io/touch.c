/*
 * touch.c — first touch of a load's destination, on the page size that is
 * fast right now.
 *
 * Faulting fresh anonymous memory in is most of a warm copy load. Each piece
 * of a destination is faulted in with one MADV_POPULATE_WRITE just before a
 * read fills it (one loop in the kernel instead of a page-fault exception per
 * 4 KiB page inside the read's copy). Which page size is faster depends on
 * where the kernel's free memory came from, and on virtual machines that hand
 * freed memory back to the host it swings both ways: huge pages fault in ~8x
 * faster than 4 KiB pages when they reuse memory freed a moment ago, and ~8x
 * slower when they come from memory the host took back (the host faults
 * every 4 KiB under each guest huge page). The kernel hands out the recently
 * freed memory first, so a load meets the fast kind first, if at all, and the
 * slow kind for the rest. TL_TOUCH_ADAPT follows that: it starts on huge
 * pages, faults them 2 MiB at a time and times each one; a few slower than
 * slow_s in a row turn the rest of the destination to 4 KiB pages for good.
 * A wrong start costs those few slow huge pages (~8 ms each on the
 * development VM, shared by the threads). A destination drawn from the warm
 * pool (TL_TOUCH_WARM) is faulted in already and is left alone.
 * Figures: docs/ARCHITECTURE.md, "Destination pages".
 */
#include "io/touch.h"
#include "os/hostmem.h"
#include "os/os.h"

#include <errno.h>

#define HUGE (2ull << 20)

void tl__touch_init(tl__touch *t, void *base, uint64_t len, tl__touch_pages pages, double slow_s) {
    t->base = base;
    t->end = t->base + len;
    t->pages = pages;
    t->slow_s = slow_s;
    atomic_init(&t->huge, pages != TL_TOUCH_SMALL);
    atomic_init(&t->switched_at_mib, 0);
    atomic_init(&t->slow_run, 0);
}

/* Turn [from, end) to 4 KiB pages, once, whichever thread sees the slow page first. */
static void switch_small(tl__touch *t, unsigned char *from) {
    if (!atomic_exchange(&t->huge, false)) return;
    atomic_store(&t->switched_at_mib, (unsigned)((uint64_t)(from - t->base) >> 20) + 1);
    if (from < t->end) tl__os_pages_small(from, (uint64_t)(t->end - from));
}

int tl__touch_range(tl__touch *t, unsigned char *p, uint64_t n) {
    if (t->pages == TL_TOUCH_WARM) return 0; /* every page is there already */
    uintptr_t ps = tl__os_page_size();
    unsigned char *end = p + n;
    p = t->base + (((uintptr_t)(p - t->base)) & ~(ps - 1)); /* page aligned, inside the mapping */
    while (p < end) {
        if (t->pages != TL_TOUCH_ADAPT || !atomic_load(&t->huge))
            return tl__os_populate_write(p, (uint64_t)(end - p));
        /* the rest of the huge page holding p */
        uint64_t at = (uint64_t)(p - t->base);
        unsigned char *step = t->base + (at / HUGE + 1) * HUGE;
        if (step > end) step = end;
        double t0 = tl__os_now();
        int e = tl__os_populate_write(p, (uint64_t)(step - p));
        if (e) return e;
        /* judge whole huge pages only: a sliver's time says little */
        if ((uint64_t)(step - p) == HUGE) {
            if (tl__os_now() - t0 <= t->slow_s)
                atomic_store(&t->slow_run, 0);
            else if (atomic_fetch_add(&t->slow_run, 1) + 1 >= TL_TOUCH_SLOW_RUN)
                switch_small(t, step);
        }
        p = step;
    }
    return 0;
}
