/*
 * demo_model.h — the demo's Stable Diffusion 1.x checkpoint and its kohya
 * LoRA: tensor lists, deterministic initialised values, safetensors writer
 * and the cache reuse rule (demo_model.c).
 */
#ifndef TL_CLI_DEMO_MODEL_H
#define TL_CLI_DEMO_MODEL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/*
 * The layout version written into each file's metadata; a cached file is
 * reused only when it carries this version (and has the layout's size).
 * Raise it whenever the tensors, their shapes or their values change.
 */
#define DEMO_LAYOUT_VERSION "2"

/* How a tensor's values are drawn. */
typedef enum demo_fill {
    DEMO_NORMAL, /* normal, std gain/sqrt(fan_in), fan_in = product of all dims but the first */
    DEMO_ONES,   /* norm weights */
    DEMO_ZEROS,  /* biases */
    DEMO_ALPHA   /* a LoRA module's alpha: F32 scalar, the rank */
} demo_fill;

typedef struct demo_tensor {
    char name[160];
    int nd;
    int64_t shape[4];
    demo_fill fill;
    float gain;
} demo_tensor;

typedef struct demo_list {
    demo_tensor *v;
    size_t n, cap;
    bool oom;
} demo_list;

/* The SD 1.x checkpoint with ldm names: full size, or small (same layout, narrower). */
void demo_model_layout(demo_list *l, bool small);
/* The LoRA for model: kohya names of the UNet's attention projections and the text encoder's. */
void demo_lora_layout(const demo_list *model, demo_list *l);
/* Bytes of the tensor data; comp (TL_COMP_COUNT entries, may be NULL) gets them by component. */
uint64_t demo_list_bytes(const demo_list *l, uint64_t *comp);
/* The file at path was written for this layout version and list: reuse it. */
bool demo_reusable(const char *path, const demo_list *l);
/* Write the list as safetensors (through a temporary file renamed into place); 0 or exit status. */
int demo_write(const char *path, const demo_list *l);
void demo_list_free(demo_list *l);

#endif
