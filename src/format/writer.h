/*
 * writer.h — the model-file writer's internal knobs (public API: tl_writer_*
 * in tierload.h). Tests use them to write files that are wrong on purpose;
 * nothing in the library or the CLI does.
 */
#ifndef TL_FORMAT_WRITER_H
#define TL_FORMAT_WRITER_H

#include "tierload.h"

#include <stdbool.h>
#include <stdint.h>

/* GGUF: the version number written (default 3; the layout stays v2/v3's). */
void tl__writer_set_version(tl_writer *w, uint32_t version);
/* GGUF: the four magic bytes written (default "GGUF"). */
void tl__writer_set_magic(tl_writer *w, const char magic[4]);
/* GGUF: the tensor and metadata counts written, instead of the real ones. */
void tl__writer_set_counts(tl_writer *w, uint64_t n_tensors, uint64_t n_kv);
/* GGUF: the alignment the layout uses, whatever general.alignment says (0: that one). */
void tl__writer_set_layout_alignment(tl_writer *w, uint32_t align);
/* Tensor i's data offset (from the data section's start), instead of the packed one. */
void tl__writer_set_tensor_offset(tl_writer *w, size_t i, uint64_t offset);
/* Tensor i's byte size, changed after it was added. */
void tl__writer_set_tensor_nbytes(tl_writer *w, size_t i, uint64_t nbytes);
/* safetensors: tensor i's dtype written as this text, whatever its tl_dtype. */
tl_status tl__writer_set_dtype_name(tl_writer *w, size_t i, const char *name);
/* safetensors: the __metadata__ value written verbatim (NULL: from the string entries). */
tl_status tl__writer_set_metadata_json(tl_writer *w, const char *json);
/* safetensors: pad the header with spaces to a multiple of 8 (default true). */
void tl__writer_set_header_pad(tl_writer *w, bool pad8);

#endif
