/*
 * log.c — llama.cpp reports why it refused a model only through its log:
 * during a load its callback is wrapped so that the first error message can
 * become tierload's error, and every message still reaches the callback the
 * program had set.
 */
#include "internal.h"

#include <string.h>

static void capture(enum ggml_log_level level, const char *text, void *user) {
    tl__llama_log *l = user;
    if (level == GGML_LOG_LEVEL_ERROR && text) {
        /* llama.cpp's reason is the line that says "error loading model: ..." when there is one */
        static const char lead[] = "error loading model: ";
        const char *why = strstr(text, lead);
        if ((why && !l->reason) || !l->error[0]) {
            const char *from = why ? why + strlen(lead) : text;
            size_t n = strcspn(from, "\n");
            if (n >= sizeof l->error) n = sizeof l->error - 1;
            memcpy(l->error, from, n);
            l->error[n] = 0;
            l->reason = why != NULL;
        }
    }
    if (l->prev) l->prev(level, text, l->prev_user);
}

void tl__llama_log_begin(tl__llama_log *l) {
    memset(l, 0, sizeof *l);
    llama_log_get(&l->prev, &l->prev_user);
    llama_log_set(capture, l);
}

void tl__llama_log_end(tl__llama_log *l) {
    llama_log_set(l->prev, l->prev_user);
}
