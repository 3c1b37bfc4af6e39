/*
 * twomodel.h — two small models on one sim device, for the tests of sessions
 * sharing a device: N_LAYERS diffusion layers of TM_LAYER bytes each (one F32
 * [64, 256] weight per layer), model 1's bytes those of model 0 with every
 * byte XORed with 0x5A (so a mix-up shows), a sim device of the given
 * capacity, and a plan per model placing diffusion on it. The models are
 * opened writable (copy-on-write: the files never change).
 */
#ifndef TL_TEST_TWOMODEL_H
#define TL_TEST_TWOMODEL_H

#include "tierload.h"

#include <stdbool.h>
#include <stdint.h>

#define TM_LAYERS 8
#define TM_LAYER (64ull << 10)

typedef struct tm_fx {
    char *dir, *path[2];
    uint8_t *img[2];
    uint64_t data_off;
    tl_model *m[2];
    tl_device *sim;
    char simname[32];
    tl_plan *p[2];
} tm_fx;

/* Both models and a sim device of cap bytes (a unique name); the test fails when it cannot. */
void tm_setup(tm_fx *f, uint64_t cap);
void tm_teardown(tm_fx *f);
/* A session of model i whose own budget on the sim is `budget` bytes. */
tl_session *tm_session(tm_fx *f, int i, uint64_t budget);
/* Every byte of set a (layers first_layer on, one weight each) equals model i's file. */
bool tm_bytes_ok(const tm_fx *f, int i, const tl_acquired *a, size_t first_layer);
/* Bytes session s has on its (one) device now. */
uint64_t tm_used(tl_session *s);

#endif
