/*
 * ggml_other_version.c — a preloadable stand-in for another ggml release: its ggml_version() and
 * ggml_commit() interpose on libggml-base's, so libggml-tierload meets "another ggml" (the plugin
 * must then refuse to register and name both releases).
 */
const char *ggml_version(void);
const char *ggml_commit(void);

const char *ggml_version(void) { return "0.0.1-other"; }
const char *ggml_commit(void) { return "0ther00"; }
