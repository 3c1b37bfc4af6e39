/*
 * plain.c — tl-llamacpp's --llama-mode user: llama.cpp's public user-data path with no
 * tierload in it, the least any program on that path does. gguf_init_from_file reads the
 * metadata, llama_model_init_from_user builds the model and calls back once per tensor, and the
 * callback preads the tensor's bytes from the file into llama.cpp's buffer (through a buffer of
 * its size where the tensor is not in host memory). A tensor the file lacks is one of the
 * optional ones llama.cpp creates from metadata: a bias is set to 0 and a factor to 1, written
 * only where the memory does not hold the value yet (a fresh buffer's bias is never written).
 * It is a baseline for measurements (time, peak RSS), not a loader: a
 * file that ties its output projection to the embedding is refused as llama.cpp refuses it.
 */
#include "plain.h"

#include <fcntl.h>
#include <gguf.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ggml-backend.h>

typedef struct plain {
    struct gguf_context *meta;
    int fd;
    bool failed;
} plain;

static bool read_at(int fd, void *dst, size_t n, off_t off) {
    for (size_t done = 0; done < n;) {
        ssize_t r = pread(fd, (char *)dst + done, n - done, off + (off_t)done);
        if (r <= 0) return false;
        done += (size_t)r;
    }
    return true;
}

static void on_tensor(struct ggml_tensor *t, void *user) {
    plain *p = user;
    size_t n = ggml_nbytes(t);
    bool host = t->buffer && ggml_backend_buffer_is_host(t->buffer);
    int64_t id = gguf_find_tensor(p->meta, ggml_get_name(t));
    if (id < 0) {
        const char *dot = strrchr(t->name, '.');
        const float want = dot && !strcmp(dot, ".bias") ? 0.0f : 1.0f;
        if (t->type != GGML_TYPE_F32) return; /* llama.cpp says what is missing */
        size_t k = (size_t)ggml_nelements(t);
        float *v = host ? t->data : malloc(k ? k * sizeof *v : 1);
        if (!v) {
            p->failed = true;
            return;
        }
        for (size_t i = 0; i < k; i++) /* reading fresh memory maps no page; only writes do */
            if (!host || v[i] != want || signbit(v[i])) v[i] = want;
        if (!host) {
            ggml_backend_tensor_set(t, v, 0, n);
            free(v);
        }
        return;
    }
    off_t off = (off_t)(gguf_get_data_offset(p->meta) + gguf_get_tensor_offset(p->meta, id));
    if (host) {
        if (!read_at(p->fd, t->data, n, off)) p->failed = true;
        return;
    }
    void *b = malloc(n ? n : 1);
    if (!b || !read_at(p->fd, b, n, off))
        p->failed = true;
    else
        ggml_backend_tensor_set(t, b, 0, n);
    free(b);
}

struct llama_model *tl_plain_user_load(const char *path, struct llama_model_params mp) {
    plain p = {.fd = open(path, O_RDONLY | O_CLOEXEC)};
    if (p.fd < 0) return NULL;
    struct gguf_init_params gp = {.no_alloc = true, .ctx = NULL};
    p.meta = gguf_init_from_file(path, gp);
    struct llama_model *m = p.meta ? llama_model_init_from_user(p.meta, on_tensor, &p, mp) : NULL;
    if (m && p.failed) {
        llama_model_free(m);
        m = NULL;
    }
    if (p.meta) gguf_free(p.meta);
    close(p.fd);
    return m;
}
