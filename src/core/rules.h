/*
 * rules.h — lists of "PATTERN=VALUE,..." as llama.cpp's --override-tensor and
 * stable-diffusion.cpp's --tensor-type-rules take them: split at ',' and at
 * each item's first '=', every PATTERN a regular expression as their users
 * write it (std::regex: \d \w \s and their negations, \.), searched anywhere
 * in a tensor's name, the first rule that matches winning.
 */
#ifndef TL_CORE_RULES_H
#define TL_CORE_RULES_H

#include "tierload.h"

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct tl__rules {
    size_t n;
    char **pattern, **value; /* as written */
    regex_t *re;             /* POSIX extended, compiled from the pattern */
    bool *compiled;
} tl__rules;

/*
 * Parse spec into r (zeroed first; free with tl__rules_free, also after a
 * failure). what names the list in messages ("override", "tensor type rule")
 * and form the shape of an item ("PATTERN=DEVICE"): an item of another shape
 * or a pattern that does not compile is TL_ERR_INVALID_ARG naming the item.
 */
tl_status tl__rules_parse(const char *spec, const char *what, const char *form, tl__rules *r);
void tl__rules_free(tl__rules *r);
/* The first rule whose pattern is found in name: its index, or r->n when none is. */
size_t tl__rules_match(const tl__rules *r, const char *name);

#endif
