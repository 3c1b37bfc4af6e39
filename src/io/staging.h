/*
 * staging.h — the fixed staging ring: at most `count` buffers of `size`
 * bytes (page aligned, so O_DIRECT can land in them), allocated on first
 * use and never grown. Its bound, count x size, is what tl_load_stats
 * reports as staging_bound.
 */
#ifndef TL_IO_STAGING_H
#define TL_IO_STAGING_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct tl_staging {
    uint64_t size;
    unsigned count;
    unsigned allocated;
    unsigned char **bufs;
    bool *busy;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} tl_staging;

/* Set up an empty ring (no buffers yet); 0 or ENOMEM. */
int tl_staging_init(tl_staging *s, unsigned count, uint64_t size);
/* Take a free buffer (allocating one while under count; waiting otherwise); 0 or errno. */
int tl_staging_take(tl_staging *s, unsigned char **buf);
void tl_staging_give(tl_staging *s, unsigned char *buf);
/* Bytes currently allocated. */
uint64_t tl_staging_used(const tl_staging *s);
void tl_staging_free(tl_staging *s);

#endif
