/*
 * touch.h — faulting a fresh destination in, one piece just before it is
 * written, on the page size that is fast at that moment (see touch.c).
 */
#ifndef TL_IO_TOUCH_H
#define TL_IO_TOUCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum tl__touch_pages {
    TL_TOUCH_SMALL = 0, /* 4 KiB pages throughout */
    TL_TOUCH_HUGE = 1,  /* huge pages throughout */
    TL_TOUCH_ADAPT = 2, /* huge pages until one faults in slowly, then 4 KiB pages */
    TL_TOUCH_WARM = 3,  /* already faulted in (from the warm pool): nothing to do */
} tl__touch_pages;

/*
 * A fresh anonymous destination [base, base+len), shared by the threads
 * that fill it. base must be 2 MiB aligned for TL_TOUCH_HUGE and
 * TL_TOUCH_ADAPT (tl__os_anon_alloc with TL_OS_PAGES_HUGE).
 */
typedef struct tl__touch {
    unsigned char *base, *end;
    tl__touch_pages pages;
    double slow_s;               /* ADAPT: a 2 MiB fault slower than this counts as slow */
    atomic_bool huge;            /* still faulting huge pages */
    atomic_uint slow_run;        /* slow huge pages in a row, all threads together */
    atomic_uint switched_at_mib; /* where the rest turned to 4 KiB (MiB from base) + 1; 0 = never */
} tl__touch;

/*
 * ADAPT gives up on huge pages after TL_TOUCH_SLOW_RUN huge pages in a row
 * took longer than TL_TOUCH_SLOW_S each (2 MiB in 2 ms: slower than 4 KiB
 * pages fault in; one slow page alone may be a preemption).
 */
#define TL_TOUCH_SLOW_S 0.002
#define TL_TOUCH_SLOW_RUN 3

void tl__touch_init(tl__touch *t, void *base, uint64_t len, tl__touch_pages pages, double slow_s);

/*
 * Fault [p, p+n) in for writing, without writing (MADV_POPULATE_WRITE).
 * A hint: 0, or ENOTSUP where the kernel cannot populate (nothing done;
 * the writes then fault the pages in themselves).
 */
int tl__touch_range(tl__touch *t, unsigned char *p, uint64_t n);

#endif
