/*
 * compute.h — real compute in a pipeline run (compute.c): ggml matrix
 * products on every acquired 2-D weight where it lives, compared with the
 * same products from the model's own bytes. run.c calls it at each step.
 */
#ifndef TL_RESIDENCY_COMPUTE_H
#define TL_RESIDENCY_COMPUTE_H

#include "tierload.h"

typedef struct tlr_compute tlr_compute;

/* Load ggml (o->ggml_dir), find ggml:CPU, set threads; NULL *out when o->compute is NONE. */
tl_status tlr_compute_create(tl_model *m, const tl_run_options *o, tlr_compute **out);
/* The products of one acquired step: adds to ph's compute_seconds, products, product_mismatches. */
tl_status tlr_compute_step(tlr_compute *c, const tl_acquired *a, tl_run_phase *ph);
void tlr_compute_destroy(tlr_compute *c);

#endif
