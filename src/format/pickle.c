/*
 * pickle.c — the pickle virtual machine behind checkpoint reading.
 *
 * Opcodes understood (protocol 0-4 binary forms): PROTO, FRAME, STOP, MARK,
 * POP, POP_MARK, DUP, NONE, NEWTRUE, NEWFALSE, BININT, BININT1, BININT2,
 * LONG1 (up to 8 bytes), BINFLOAT, BINUNICODE, SHORT_BINUNICODE, BINUNICODE8,
 * BINSTRING, SHORT_BINSTRING, BINBYTES, SHORT_BINBYTES, BINBYTES8,
 * EMPTY_TUPLE, TUPLE, TUPLE1-3, EMPTY_LIST, LIST, APPEND, APPENDS,
 * EMPTY_DICT, DICT, SETITEM, SETITEMS, BINPUT, LONG_BINPUT, MEMOIZE, BINGET,
 * LONG_BINGET, GLOBAL, STACK_GLOBAL, REDUCE, BUILD, BINPERSID. Anything else
 * (text opcodes, NEWOBJ, INST, OBJ, EXT*) refuses the pickle.
 *
 * GLOBAL is where a pickle would reach code; here it only looks the name up
 * in a fixed table (OrderedDict, torch's tensor/parameter rebuild functions,
 * the torch.*Storage types, torch.Size, _codecs.encode) and pushes a marker.
 * REDUCE of a marker builds a value; nothing is called, imported or
 * evaluated. A name outside the table is refused at once, with the name.
 *
 * Bounds: values live in an arena of at most 256 MiB; the stack holds at
 * most 2^20 values, the mark stack 2^16 marks, the memo 2^22 slots (and no
 * more than the pickle's length); LONG1 integers fit 64 bits.
 */
#include "format/pickle.h"

#include "core/checked.h"
#include "core/error.h"
#include "os/os.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PK_ARENA_MAX (256ull << 20)
#define PK_CHUNK (64u << 10)
#define PK_STACK_MAX (1u << 20)
#define PK_MARKS_MAX (1u << 16)
#define PK_MEMO_MAX (1u << 22)

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    max_align_t data[];
} chunk;

struct tl__pk_arena {
    chunk *head;
    uint64_t total;
    bool capped; /* an allocation failed because of PK_ARENA_MAX */
};

enum {
    G_ORDERED_DICT,
    G_REBUILD_TENSOR_V2,
    G_REBUILD_PARAMETER,
    G_REBUILD_PARAMETER_STATE,
    G_TORCH_SIZE,
    G_CODECS_ENCODE,
    G_STORAGE, /* + index into storages[] */
};

static const struct {
    const char *module, *name;
} plain_globals[] = {
    [G_ORDERED_DICT] = {"collections", "OrderedDict"},
    [G_REBUILD_TENSOR_V2] = {"torch._utils", "_rebuild_tensor_v2"},
    [G_REBUILD_PARAMETER] = {"torch._utils", "_rebuild_parameter"},
    [G_REBUILD_PARAMETER_STATE] = {"torch._utils", "_rebuild_parameter_with_state"},
    [G_TORCH_SIZE] = {"torch", "Size"},
    [G_CODECS_ENCODE] = {"_codecs", "encode"},
};

static const struct {
    const char *name;
    tl_dtype dtype;
} storages[] = {
    {"FloatStorage", TL_DTYPE_F32},        {"HalfStorage", TL_DTYPE_F16},
    {"BFloat16Storage", TL_DTYPE_BF16},    {"DoubleStorage", TL_DTYPE_F64},
    {"LongStorage", TL_DTYPE_I64},         {"IntStorage", TL_DTYPE_I32},
    {"ShortStorage", TL_DTYPE_I16},        {"CharStorage", TL_DTYPE_I8},
    {"ByteStorage", TL_DTYPE_U8},          {"BoolStorage", TL_DTYPE_BOOL},
    {"ComplexFloatStorage", TL_DTYPE_C64},
};

const char *tl__pk_kind_name(tl__pk_kind k) {
    static const char *const n[] = {"None",  "bool", "int",  "float",  "str",     "bytes",
                                    "tuple", "list", "dict", "global", "storage", "tensor"};
    return (unsigned)k < sizeof n / sizeof *n ? n[k] : "?";
}

void tl__pk_free(tl__pk_arena *a) {
    if (!a) return;
    for (chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(a);
}

static void *arena_alloc(tl__pk_arena *a, size_t n) {
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > PK_CHUNK ? n : PK_CHUNK;
        if (a->total + cap > PK_ARENA_MAX) {
            a->capped = true;
            return NULL;
        }
        c = tl__os_malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
        a->total += cap;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

typedef struct vm {
    const uint8_t *p;
    uint64_t size, pos;
    const char *path;
    tl__pk_arena *a;
    tl__pk_value **stack;
    size_t sp, stack_cap;
    size_t *marks;
    size_t n_marks, marks_cap;
    tl__pk_value **memo;
    size_t memo_cap, memo_len; /* memo_len: filled slots, MEMOIZE's next index */
    uint64_t op_at;            /* offset of the opcode being run, for messages */
    /* Values nothing changes once made, made once per run: None, False, True, 0..255 */
    tl__pk_value *none, *bools[2], *small[256];
} vm;

static tl_status bad(vm *m, const char *what) {
    return tl__err(TL_ERR_FORMAT, "%s: data.pkl: %s (opcode at byte %llu)", m->path, what,
                  (unsigned long long)m->op_at);
}

static tl_status nomem(vm *m) {
    if (m->a->capped)
        return tl__err(TL_ERR_FORMAT, "%s: data.pkl describes more than %llu MiB of objects",
                      m->path, (unsigned long long)(PK_ARENA_MAX >> 20));
    return tl__err(TL_ERR_NOMEM, "%s: out of memory", m->path);
}

static tl__pk_value *new_value(vm *m, tl__pk_kind k) {
    tl__pk_value *v = arena_alloc(m->a, sizeof *v);
    if (v) v->kind = k;
    return v;
}

static bool take(vm *m, uint64_t n, const uint8_t **out) {
    if (!tl__range_ok(m->pos, n, m->size)) return false;
    *out = m->p + m->pos;
    m->pos += n;
    return true;
}

static uint64_t le(const uint8_t *b, unsigned n) {
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

static tl_status push(vm *m, tl__pk_value *v) {
    if (!v) return nomem(m);
    if (m->sp == m->stack_cap) {
        if (m->stack_cap >= PK_STACK_MAX) return bad(m, "stack deeper than 2^20 values");
        size_t cap = m->stack_cap ? m->stack_cap * 2 : 64;
        tl__pk_value **ns = tl__os_realloc(m->stack, cap * sizeof *ns);
        if (!ns) return tl__err(TL_ERR_NOMEM, "%s: out of memory", m->path);
        m->stack = ns;
        m->stack_cap = cap;
    }
    m->stack[m->sp++] = v;
    return TL_OK;
}

/* The bottom of the current mark (values above it are the mark's items). */
static size_t mark_base(vm *m) {
    return m->n_marks ? m->marks[m->n_marks - 1] : 0;
}

static tl_status pop(vm *m, tl__pk_value **v) {
    if (m->sp <= mark_base(m) || m->sp == 0) return bad(m, "stack underflow");
    *v = m->stack[--m->sp];
    return TL_OK;
}

static tl_status pop_mark(vm *m, size_t *base) {
    if (!m->n_marks) return bad(m, "no MARK to pop to");
    *base = m->marks[--m->n_marks];
    return TL_OK;
}

static tl_status seq_add(vm *m, tl__pk_value *s, tl__pk_value *v) {
    if (s->u.seq.n == s->u.seq.cap) {
        size_t cap = s->u.seq.cap ? s->u.seq.cap * 2 : 4;
        tl__pk_value **ni = arena_alloc(m->a, cap * sizeof *ni);
        if (!ni) return nomem(m);
        if (s->u.seq.n) memcpy(ni, s->u.seq.items, s->u.seq.n * sizeof *ni);
        s->u.seq.items = ni;
        s->u.seq.cap = cap;
    }
    s->u.seq.items[s->u.seq.n++] = v;
    return TL_OK;
}

/* A tuple (or list) of the values from stack[base] up; they leave the stack. */
static tl_status make_seq(vm *m, tl__pk_kind k, size_t base) {
    tl__pk_value *t = new_value(m, k);
    if (!t) return nomem(m);
    size_t n = m->sp - base;
    if (n) {
        t->u.seq.items = arena_alloc(m->a, n * sizeof *t->u.seq.items);
        if (!t->u.seq.items) return nomem(m);
        memcpy(t->u.seq.items, m->stack + base, n * sizeof *t->u.seq.items);
        t->u.seq.n = t->u.seq.cap = n;
    }
    m->sp = base;
    return push(m, t);
}

static tl_status set_items(vm *m, tl__pk_value *d, size_t base) {
    if (d->kind != TL_PK_DICT) return bad(m, "SETITEM(S) on something that is not a dict");
    if ((m->sp - base) % 2) return bad(m, "SETITEMS with an odd number of values");
    for (size_t i = base; i < m->sp; i++) {
        tl_status st = seq_add(m, d, m->stack[i]);
        if (st) return st;
    }
    m->sp = base;
    return TL_OK;
}

static tl_status memo_put(vm *m, uint64_t idx) {
    if (!m->sp) return bad(m, "memo store with an empty stack");
    if (idx >= PK_MEMO_MAX || idx > m->size) return bad(m, "memo index too large");
    if (idx >= m->memo_cap) {
        size_t cap = m->memo_cap ? m->memo_cap : 64;
        while (cap <= idx)
            cap *= 2;
        tl__pk_value **nm = tl__os_realloc(m->memo, cap * sizeof *nm);
        if (!nm) return tl__err(TL_ERR_NOMEM, "%s: out of memory", m->path);
        memset(nm + m->memo_cap, 0, (cap - m->memo_cap) * sizeof *nm);
        m->memo = nm;
        m->memo_cap = cap;
    }
    if (!m->memo[idx]) m->memo_len++;
    m->memo[idx] = m->stack[m->sp - 1];
    return TL_OK;
}

static tl_status memo_get(vm *m, uint64_t idx) {
    if (idx >= m->memo_cap || !m->memo[idx]) return bad(m, "memo read of an empty slot");
    return push(m, m->memo[idx]);
}

static tl_status global(vm *m, const char *mod, size_t ml, const char *name, size_t nl) {
    for (size_t g = 0; g < sizeof plain_globals / sizeof *plain_globals; g++) {
        if (strlen(plain_globals[g].module) == ml && !memcmp(plain_globals[g].module, mod, ml) &&
            strlen(plain_globals[g].name) == nl && !memcmp(plain_globals[g].name, name, nl)) {
            tl__pk_value *v = new_value(m, TL_PK_GLOBAL);
            if (v) v->u.global = (int)g;
            return push(m, v);
        }
    }
    if (ml == 5 && !memcmp(mod, "torch", 5)) {
        for (size_t s = 0; s < sizeof storages / sizeof *storages; s++) {
            if (strlen(storages[s].name) == nl && !memcmp(storages[s].name, name, nl)) {
                tl__pk_value *v = new_value(m, TL_PK_GLOBAL);
                if (v) v->u.global = G_STORAGE + (int)s;
                return push(m, v);
            }
        }
    }
    /* Print the name safely: it is hostile text. */
    char shown[160];
    size_t k = 0;
    for (size_t i = 0; i < ml + 1 + nl && k + 1 < sizeof shown; i++) {
        char c = i < ml ? mod[i] : i == ml ? '.' : name[i - ml - 1];
        shown[k++] = (c >= 0x20 && c < 0x7f) ? c : '?';
    }
    shown[k] = 0;
    return tl__err(TL_ERR_UNSUPPORTED,
                  "%s: data.pkl refers to global '%s', which is not on the allow-list of a "
                  "checkpoint (refused; nothing was run)",
                  m->path, shown);
}

static bool as_int(const tl__pk_value *v, int64_t *out) {
    if (v->kind == TL_PK_INT) {
        *out = v->u.i;
        return true;
    }
    if (v->kind == TL_PK_BOOL) {
        *out = v->u.b;
        return true;
    }
    return false;
}

/* (storage, storage_offset, size, stride, ...) -> tensor */
static tl_status rebuild_tensor(vm *m, const tl__pk_value *args, tl__pk_value **out) {
    if (args->u.seq.n < 4) return bad(m, "_rebuild_tensor_v2 with fewer than 4 arguments");
    tl__pk_value *const *a = args->u.seq.items;
    int64_t off;
    if (a[0]->kind != TL_PK_STORAGE)
        return bad(m, "_rebuild_tensor_v2: first argument is not a storage");
    if (!as_int(a[1], &off) || off < 0) return bad(m, "_rebuild_tensor_v2: bad storage offset");
    if ((a[2]->kind != TL_PK_TUPLE && a[2]->kind != TL_PK_LIST) ||
        (a[3]->kind != TL_PK_TUPLE && a[3]->kind != TL_PK_LIST))
        return bad(m, "_rebuild_tensor_v2: size or stride is not a tuple");
    size_t n = a[2]->u.seq.n;
    if (a[3]->u.seq.n != n) return bad(m, "_rebuild_tensor_v2: size and stride differ in rank");
    if (n > TL_MAX_DIMS)
        return tl__err(TL_ERR_UNSUPPORTED, "%s: data.pkl: a tensor has %zu dimensions (at most %d)",
                      m->path, n, TL_MAX_DIMS);
    tl__pk_tensor *t = arena_alloc(m->a, sizeof *t);
    tl__pk_value *v = new_value(m, TL_PK_TENSOR);
    if (!t || !v) return nomem(m);
    t->storage = a[0]->u.storage;
    t->storage_offset = (uint64_t)off;
    t->n_dims = (uint32_t)n;
    for (size_t d = 0; d < n; d++) {
        if (!as_int(a[2]->u.seq.items[d], &t->shape[d]) || t->shape[d] < 0)
            return bad(m, "_rebuild_tensor_v2: a size is not a non-negative integer");
        if (!as_int(a[3]->u.seq.items[d], &t->stride[d]) || t->stride[d] < 0)
            return bad(m, "_rebuild_tensor_v2: a stride is not a non-negative integer");
    }
    v->u.tensor = t;
    *out = v;
    return TL_OK;
}

static tl_status reduce(vm *m) {
    tl__pk_value *args = NULL, *fn = NULL, *r = NULL;
    tl_status st = pop(m, &args);
    if (!st) st = pop(m, &fn);
    if (st) return st;
    if (fn->kind != TL_PK_GLOBAL) return bad(m, "REDUCE of something that is not a global");
    if (args->kind != TL_PK_TUPLE) return bad(m, "REDUCE arguments are not a tuple");
    size_t n = args->u.seq.n;
    switch (fn->u.global) {
    case G_ORDERED_DICT:
        if (n != 0) return bad(m, "OrderedDict called with arguments");
        r = new_value(m, TL_PK_DICT);
        break;
    case G_REBUILD_TENSOR_V2:
        st = rebuild_tensor(m, args, &r);
        if (st) return st;
        break;
    case G_REBUILD_PARAMETER:
    case G_REBUILD_PARAMETER_STATE:
        if (n < 1 || args->u.seq.items[0]->kind != TL_PK_TENSOR)
            return bad(m, "_rebuild_parameter without a tensor");
        r = args->u.seq.items[0];
        break;
    case G_TORCH_SIZE:
        if (n != 1 || args->u.seq.items[0]->kind != TL_PK_TUPLE)
            return bad(m, "torch.Size without a tuple");
        r = args->u.seq.items[0];
        break;
    case G_CODECS_ENCODE:
        if (n < 1 || args->u.seq.items[0]->kind != TL_PK_STR)
            return bad(m, "_codecs.encode without a string");
        r = new_value(m, TL_PK_BYTES);
        if (r) r->u.s = args->u.seq.items[0]->u.s; /* not re-encoded: bytes are not read */
        break;
    default:
        return bad(m, "a storage type is called");
    }
    return push(m, r);
}

static tl_status persid(vm *m) {
    tl__pk_value *pid = NULL;
    tl_status st = pop(m, &pid);
    if (st) return st;
    if (pid->kind != TL_PK_TUPLE || pid->u.seq.n != 5)
        return bad(m, "persistent id is not a 5-tuple");
    tl__pk_value *const *a = pid->u.seq.items;
    int64_t numel;
    if (a[0]->kind != TL_PK_STR || a[0]->u.s.n != 7 || memcmp(a[0]->u.s.p, "storage", 7))
        return bad(m, "persistent id is not a storage");
    if (a[1]->kind != TL_PK_GLOBAL || a[1]->u.global < G_STORAGE)
        return bad(m, "persistent id's storage type is not a torch storage type");
    if (a[2]->kind != TL_PK_STR || a[2]->u.s.n == 0 || a[2]->u.s.n > 64)
        return bad(m, "persistent id's storage key is not a short string");
    if (!as_int(a[4], &numel) || numel < 0) return bad(m, "persistent id's size is negative");
    tl__pk_storage *s = arena_alloc(m->a, sizeof *s);
    tl__pk_value *v = new_value(m, TL_PK_STORAGE);
    if (!s || !v) return nomem(m);
    size_t si = (size_t)(a[1]->u.global - G_STORAGE);
    s->dtype = storages[si].dtype;
    s->type_name = storages[si].name;
    s->key = a[2]->u.s.p;
    s->key_len = a[2]->u.s.n;
    s->numel = (uint64_t)numel;
    v->u.storage = s;
    return push(m, v);
}

static tl_status str_op(vm *m, tl__pk_kind k, unsigned len_bytes) {
    const uint8_t *b, *s;
    if (!take(m, len_bytes, &b)) return bad(m, "truncated length");
    uint64_t n = le(b, len_bytes);
    if (len_bytes == 4 && k == TL_PK_STR && m->p[m->op_at] == 'T' && (int32_t)n < 0)
        return bad(m, "negative string length");
    if (!take(m, n, &s)) return bad(m, "string runs past the end of data.pkl");
    tl__pk_value *v = new_value(m, k);
    if (v) {
        v->u.s.p = (const char *)s;
        v->u.s.n = n;
    }
    return push(m, v);
}

static tl_status int_value(vm *m, int64_t i) {
    tl__pk_value **cached = i >= 0 && i < 256 ? &m->small[i] : NULL;
    if (cached && *cached) return push(m, *cached);
    tl__pk_value *v = new_value(m, TL_PK_INT);
    if (v) v->u.i = i;
    if (cached) *cached = v;
    return push(m, v);
}

static tl_status step(vm *m, bool *stop) {
    const uint8_t *b;
    tl__pk_value *v = NULL, *w = NULL;
    size_t base = 0;
    tl_status st;
    m->op_at = m->pos;
    if (!take(m, 1, &b)) return bad(m, "ends without STOP");
    uint8_t op = b[0];
    switch (op) {
    case 0x80: /* PROTO */
        if (!take(m, 1, &b)) return bad(m, "truncated PROTO");
        if (b[0] > 5) return bad(m, "unknown pickle protocol");
        return TL_OK;
    case 0x95: /* FRAME */
        return take(m, 8, &b) ? TL_OK : bad(m, "truncated FRAME");
    case '.':
        *stop = true;
        return TL_OK;
    case '(':
        if (m->n_marks == m->marks_cap) {
            if (m->marks_cap >= PK_MARKS_MAX) return bad(m, "MARKs nested deeper than 2^16");
            size_t cap = m->marks_cap ? m->marks_cap * 2 : 16;
            size_t *nm = tl__os_realloc(m->marks, cap * sizeof *nm);
            if (!nm) return tl__err(TL_ERR_NOMEM, "%s: out of memory", m->path);
            m->marks = nm;
            m->marks_cap = cap;
        }
        m->marks[m->n_marks++] = m->sp;
        return TL_OK;
    case '0':
        return pop(m, &v);
    case '1':
        if ((st = pop_mark(m, &base))) return st;
        m->sp = base;
        return TL_OK;
    case '2':
        if (m->sp <= mark_base(m)) return bad(m, "DUP of an empty stack");
        return push(m, m->stack[m->sp - 1]);
    case 'N':
        if (!m->none) m->none = new_value(m, TL_PK_NONE);
        return push(m, m->none);
    case 0x88:
    case 0x89:
        if (!m->bools[op == 0x88]) {
            v = new_value(m, TL_PK_BOOL);
            if (v) v->u.b = op == 0x88;
            m->bools[op == 0x88] = v;
        }
        return push(m, m->bools[op == 0x88]);
    case 'J':
        if (!take(m, 4, &b)) return bad(m, "truncated BININT");
        return int_value(m, (int32_t)(uint32_t)le(b, 4));
    case 'K':
        if (!take(m, 1, &b)) return bad(m, "truncated BININT1");
        return int_value(m, b[0]);
    case 'M':
        if (!take(m, 2, &b)) return bad(m, "truncated BININT2");
        return int_value(m, (int64_t)le(b, 2));
    case 0x8a: { /* LONG1 */
        if (!take(m, 1, &b)) return bad(m, "truncated LONG1");
        unsigned n = b[0];
        if (n > 8) return bad(m, "integer wider than 64 bits");
        if (!take(m, n, &b)) return bad(m, "truncated LONG1");
        uint64_t u = le(b, n);
        if (n && n < 8 && (b[n - 1] & 0x80)) u |= ~0ull << (8 * n); /* sign-extend */
        return int_value(m, (int64_t)u);
    }
    case 'G': {
        if (!take(m, 8, &b)) return bad(m, "truncated BINFLOAT");
        uint64_t u = 0;
        for (int i = 0; i < 8; i++)
            u = (u << 8) | b[i];
        double d;
        memcpy(&d, &u, 8);
        v = new_value(m, TL_PK_FLOAT);
        if (v) v->u.f = d;
        return push(m, v);
    }
    case 'X':
    case 'T':
        return str_op(m, TL_PK_STR, 4);
    case 0x8c:
    case 'U':
        return str_op(m, TL_PK_STR, 1);
    case 0x8d:
        return str_op(m, TL_PK_STR, 8);
    case 'B':
        return str_op(m, TL_PK_BYTES, 4);
    case 'C':
        return str_op(m, TL_PK_BYTES, 1);
    case 0x8e:
        return str_op(m, TL_PK_BYTES, 8);
    case ')':
        return make_seq(m, TL_PK_TUPLE, m->sp);
    case ']':
        return push(m, new_value(m, TL_PK_LIST));
    case '}':
        return push(m, new_value(m, TL_PK_DICT));
    case 't':
        if ((st = pop_mark(m, &base))) return st;
        return make_seq(m, TL_PK_TUPLE, base);
    case 'l':
        if ((st = pop_mark(m, &base))) return st;
        return make_seq(m, TL_PK_LIST, base);
    case 0x85:
    case 0x86:
    case 0x87: {
        size_t n = (size_t)(op - 0x84);
        if (m->sp < mark_base(m) + n) return bad(m, "stack underflow");
        return make_seq(m, TL_PK_TUPLE, m->sp - n);
    }
    case 'd': {
        if ((st = pop_mark(m, &base))) return st;
        tl__pk_value *d = new_value(m, TL_PK_DICT);
        if (!d) return nomem(m);
        if ((st = set_items(m, d, base))) return st;
        return push(m, d);
    }
    case 'a':
        if ((st = pop(m, &v)) || (st = pop(m, &w))) return st;
        if (w->kind != TL_PK_LIST) return bad(m, "APPEND to something that is not a list");
        if ((st = seq_add(m, w, v))) return st;
        return push(m, w);
    case 'e':
        if ((st = pop_mark(m, &base))) return st;
        if (base == 0 || base <= mark_base(m)) return bad(m, "APPENDS without a list");
        w = m->stack[base - 1];
        if (w->kind != TL_PK_LIST) return bad(m, "APPENDS to something that is not a list");
        for (size_t i = base; i < m->sp; i++)
            if ((st = seq_add(m, w, m->stack[i]))) return st;
        m->sp = base;
        return TL_OK;
    case 's': {
        tl__pk_value *k = NULL;
        if ((st = pop(m, &v)) || (st = pop(m, &k))) return st;
        if (m->sp <= mark_base(m)) return bad(m, "SETITEM without a dict");
        w = m->stack[m->sp - 1];
        if (w->kind != TL_PK_DICT) return bad(m, "SETITEM on something that is not a dict");
        if ((st = seq_add(m, w, k))) return st;
        return seq_add(m, w, v);
    }
    case 'u':
        if ((st = pop_mark(m, &base))) return st;
        if (base == 0 || base <= mark_base(m)) return bad(m, "SETITEMS without a dict");
        return set_items(m, m->stack[base - 1], base);
    case 'q':
        if (!take(m, 1, &b)) return bad(m, "truncated BINPUT");
        return memo_put(m, b[0]);
    case 'r':
        if (!take(m, 4, &b)) return bad(m, "truncated LONG_BINPUT");
        return memo_put(m, le(b, 4));
    case 0x94: /* MEMOIZE: index = number of memo entries */
        return memo_put(m, m->memo_len);
    case 'h':
        if (!take(m, 1, &b)) return bad(m, "truncated BINGET");
        return memo_get(m, b[0]);
    case 'j':
        if (!take(m, 4, &b)) return bad(m, "truncated LONG_BINGET");
        return memo_get(m, le(b, 4));
    case 'c': {
        const uint8_t *mod = m->p + m->pos, *nl, *name, *nl2;
        uint64_t left = m->size - m->pos;
        nl = memchr(mod, '\n', left < 256 ? (size_t)left : 256);
        if (!nl) return bad(m, "GLOBAL module name unterminated or too long");
        name = nl + 1;
        left = m->size - (uint64_t)(name - m->p);
        nl2 = memchr(name, '\n', left < 256 ? (size_t)left : 256);
        if (!nl2) return bad(m, "GLOBAL name unterminated or too long");
        m->pos = (uint64_t)(nl2 + 1 - m->p);
        return global(m, (const char *)mod, (size_t)(nl - mod), (const char *)name,
                      (size_t)(nl2 - name));
    }
    case 0x93: { /* STACK_GLOBAL */
        tl__pk_value *mod = NULL;
        if ((st = pop(m, &v)) || (st = pop(m, &mod))) return st;
        if (mod->kind != TL_PK_STR || v->kind != TL_PK_STR || mod->u.s.n > 256 || v->u.s.n > 256)
            return bad(m, "STACK_GLOBAL of something that is not two short strings");
        return global(m, mod->u.s.p, (size_t)mod->u.s.n, v->u.s.p, (size_t)v->u.s.n);
    }
    case 'R':
        return reduce(m);
    case 'b':
        if ((st = pop(m, &v))) return st;
        if (m->sp <= mark_base(m)) return bad(m, "BUILD without an object");
        w = m->stack[m->sp - 1];
        /* OrderedDict's _metadata and a parameter's state: attributes, not data. */
        if (w->kind != TL_PK_DICT && w->kind != TL_PK_TENSOR)
            return bad(m, "BUILD on something that is neither a dict nor a tensor");
        return TL_OK;
    case 'Q':
        return persid(m);
    default: {
        char what[64];
        snprintf(what, sizeof what, "opcode 0x%02x is not supported", op);
        return bad(m, what);
    }
    }
}

tl_status tl__pk_run(const uint8_t *data, uint64_t size, const char *path, tl__pk_value **root,
                    tl__pk_arena **arena) {
    *root = NULL;
    *arena = NULL;
    vm m = {.p = data, .size = size, .path = path};
    m.a = tl__os_calloc(1, sizeof *m.a);
    if (!m.a) return tl__err(TL_ERR_NOMEM, "%s: out of memory", path);
    tl_status st = TL_OK;
    bool stop = false;
    while (!st && !stop)
        st = step(&m, &stop);
    if (!st && (m.sp != 1 || m.n_marks)) {
        m.op_at = m.pos ? m.pos - 1 : 0;
        st = bad(&m, "STOP leaves other than one value on the stack");
    }
    if (!st) {
        *root = m.stack[0];
        *arena = m.a;
    } else {
        tl__pk_free(m.a);
    }
    free(m.stack);
    free(m.marks);
    free(m.memo);
    return st;
}
