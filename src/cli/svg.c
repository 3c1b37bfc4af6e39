/*
 * svg.c — the SVG primitives the pictures share: escaping, labels, colours.
 */
#include "cli/svg.h"

#include <stdarg.h>

const char *const svg_comp_color[TL_COMP_COUNT] = {"#4e79a7", "#f28e2b", "#59a14f", "#b07aa1",
                                                   "#9c755f", "#76b7b2"};

void svg_text_escaped(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\t') fputc(*s, f);
        }
    }
}

void svg_label(FILE *f, double x, double y, const char *anchor, int size, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"%s\" font-size=\"%d\">", x, y, anchor, size);
    svg_text_escaped(f, buf);
    fputs("</text>\n", f);
}
