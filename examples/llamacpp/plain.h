/*
 * plain.h — llama.cpp's user-data load path with a plain pread callback and no tierload
 * (tl-llamacpp --reference --llama-mode user): the baseline of that path.
 */
#ifndef TL_LLAMACPP_PLAIN_H
#define TL_LLAMACPP_PLAIN_H

#include <llama.h>

/* The model at path through llama_model_init_from_user, every tensor pread; NULL on failure. */
struct llama_model *tl_plain_user_load(const char *path, struct llama_model_params mp);

#endif
