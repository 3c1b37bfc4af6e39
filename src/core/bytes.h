/*
 * bytes.h — byte counts as people write them: one parser for every size a
 * user types (--max-vram, --sim capacities, --staging, mkmodel --size).
 */
#ifndef TL_CORE_BYTES_H
#define TL_CORE_BYTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Parse [s, s+len): optional spaces, an optional sign ('-' only when
 * negative is not NULL, which receives it), digits with an optional
 * fraction ("9.5"), an optional binary suffix K, M, G or T (also KB / KiB,
 * case-insensitive) or B. Whole numbers are exact; fractions round to the
 * nearest byte. False when malformed or above 2^64 - 1.
 */
bool tl__bytes_parse(const char *s, size_t len, uint64_t *bytes, bool *negative);

#endif
