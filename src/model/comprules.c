/*
 * comprules.c — component rules a caller gives when opening a model
 * (tl_model_options.components and file_components): "PREFIX=COMPONENT"
 * items tried before the built-in name rules of names.c, so that two
 * diffusion models of one catalog (prefixes "high." and "low.") are
 * diffusion and diffusion2 rather than "other".
 */
#include "model/catalog.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

/* Trim spaces around [*s, *s + *n). */
static void trim(const char **s, size_t *n) {
    while (*n && (**s == ' ' || **s == '\t')) (*s)++, (*n)--;
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t')) (*n)--;
}

tl_status tl__comp_rules_parse(const char *spec, tl__comp_rules *out) {
    memset(out, 0, sizeof *out);
    if (!spec || !*spec) return TL_OK;
    size_t n = 1;
    for (const char *p = spec; *p; p++) n += *p == ',';
    out->rule = tl__os_calloc(n, sizeof *out->rule);
    out->text = tl__os_strdup(spec);
    if (!out->rule || !out->text) {
        tl__comp_rules_free(out);
        return tl__err(TL_ERR_NOMEM, "component rules: out of memory");
    }
    char *cur = out->text;
    for (;;) {
        char *end = strchr(cur, ',');
        size_t len = end ? (size_t)(end - cur) : strlen(cur);
        const char *item = cur;
        trim(&item, &len);
        const char *eq = NULL; /* the last '=': a component name has none */
        for (size_t k = 0; k < len; k++)
            if (item[k] == '=') eq = item + k;
        const char *name = eq ? eq + 1 : NULL;
        size_t plen = eq ? (size_t)(eq - item) : 0, nlen = eq ? len - plen - 1 : 0;
        const char *pre = item;
        if (eq) trim(&pre, &plen), trim(&name, &nlen);
        char comp[32] = "";
        if (eq && nlen < sizeof comp) memcpy(comp, name, nlen), comp[nlen] = 0;
        tl_component c = eq ? tl_component_from_name(comp) : TL_COMP_INVALID;
        if (!eq || plen == 0 || c == TL_COMP_INVALID) {
            tl_status st = tl__err(TL_ERR_INVALID_ARG,
                                   "component rule '%.*s': %s", (int)(len > 80 ? 80 : len), item,
                                   !eq ? "not PREFIX=COMPONENT"
                                   : plen == 0 ? "empty prefix"
                                               : "unknown component");
            tl__comp_rules_free(out);
            return st;
        }
        /* the prefix ends in place: the rule's text is a NUL-terminated slice of out->text */
        ((char *)pre)[plen] = 0;
        out->rule[out->n].prefix = pre;
        out->rule[out->n++].comp = c;
        if (!end) break;
        cur = end + 1;
    }
    return TL_OK;
}

tl_component tl__comp_rules_match(const tl__comp_rules *r, const char *name) {
    for (size_t i = 0; r && i < r->n; i++)
        if (!strncmp(name, r->rule[i].prefix, strlen(r->rule[i].prefix))) return r->rule[i].comp;
    return TL_COMP_INVALID;
}

void tl__comp_rules_free(tl__comp_rules *r) {
    free(r->rule);
    free(r->text);
    memset(r, 0, sizeof *r);
}
