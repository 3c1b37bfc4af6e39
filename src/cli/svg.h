/*
 * svg.h — the pictures tierload draws itself: a tiny SVG writer, the plan
 * picture (`plan --svg`, `run --svg`) and the run's timeline (`run
 * --timeline`). Elements carry data-* attributes with the byte counts they
 * show, so that tests (and people) can read the numbers back.
 */
#ifndef TL_CLI_SVG_H
#define TL_CLI_SVG_H

#include "tierload.h"

#include <stdio.h>

/* Component colours (index tl_component). */
extern const char *const svg_comp_color[TL_COMP_COUNT];
/* Write s with XML escaping. */
void svg_text_escaped(FILE *f, const char *s);
/* <text> at (x, y) with an anchor ("start", "middle", "end") and size. */
void svg_label(FILE *f, double x, double y, const char *anchor, int size, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* The plan picture into path; 0 or an exit status (message printed). */
int svg_plan_write(const tl_plan *p, const char *path);

/* Phase bands for the timeline: [t0, t1) of each phase pass on the session clock. */
typedef struct svg_band {
    char name[64];
    unsigned pass;
    double t0, t1;
    size_t e0, e1; /* the same as event-log indexes (for clocks that do not move) */
} svg_band;

/* The timeline of session s (its event log) into path; 0 or an exit status. */
int svg_timeline_write(const tl_session *s, const tl_plan *p, const svg_band *bands, size_t n_bands,
                       const char *path);

#endif
