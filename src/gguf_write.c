/*
 * src/gguf_write.c — a GGUF v3 writer for test models and converters
 * (declared in gguf.h).  Metadata values are deep-copied when added;
 * tensor data is referenced and written at moe_gguf_writer_write, each
 * tensor padded to the alignment.  The file appears under its name only
 * once complete (written to "<path>.tmp", then renamed).
 */
#include "gguf.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct wtensor {
    char *name;
    uint32_t type;
    uint32_t n_dims;
    uint64_t ne[MOE_MAX_DIMS];
    const void *data;
    size_t nbytes;
    moe_fill_fn fill;          /* or data produced at write time */
    void *fill_user;
    size_t fill_unit;
};

struct wkv {
    char *key;
    struct moe_gguf_value v;   /* deep copy, storage in the arena */
};

struct moe_gguf_writer {
    struct wkv *kv;
    size_t n_kv, cap_kv;
    struct wtensor *t;
    size_t n_t, cap_t;
    struct moe_arena arena;
    int status;                /* first error of an add, or 0 */
    char msg[256];
    moe_fill_fn pending_fill;  /* set by add_tensor_fill for the add it makes */
    void *pending_user;
};

struct moe_gguf_writer *moe_gguf_writer_new(void)
{
    return calloc(1, sizeof(struct moe_gguf_writer));
}

void moe_gguf_writer_free(struct moe_gguf_writer *w)
{
    if (!w) return;
    moe_arena_free(&w->arena);
    free(w->kv);
    free(w->t);
    free(w);
}

static int fail(struct moe_gguf_writer *w, int status, const char *what, const char *name)
{
    if (!w->status) {
        w->status = status;
        moe_errorf(w->msg, sizeof w->msg, status, "gguf writer: '%s': %s", name ? name : "(null)", what);
    }
    return status;
}

static size_t elem_size(enum moe_gguf_type t)
{
    switch (t) {
    case MOE_GGUF_UINT8: case MOE_GGUF_INT8: case MOE_GGUF_BOOL: return 1;
    case MOE_GGUF_UINT16: case MOE_GGUF_INT16: return 2;
    case MOE_GGUF_UINT32: case MOE_GGUF_INT32: case MOE_GGUF_FLOAT32: return 4;
    case MOE_GGUF_UINT64: case MOE_GGUF_INT64: case MOE_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static int copy_str(struct moe_arena *a, struct moe_gguf_str *d, const struct moe_gguf_str *s)
{
    if (!s->s && s->len) return -1;
    if (s->len > SIZE_MAX - 1) return -1;
    char *p = moe_arena_strndup(a, s->s ? s->s : "", (size_t)s->len);
    if (!p) return -1;
    d->s = p;
    d->len = s->len;
    return 0;
}

/* Deep copy v into d (storage in the arena); -1 on bad value or no memory. */
static int copy_value(struct moe_arena *a, struct moe_gguf_value *d, const struct moe_gguf_value *v, int depth)
{
    *d = *v;
    if ((unsigned)v->type >= MOE_GGUF_TYPE_COUNT) return -1;
    if (v->type == MOE_GGUF_STRING) return copy_str(a, &d->str, &v->str);
    if (v->type != MOE_GGUF_ARRAY) return 0;
    if (depth > 8 || (unsigned)v->arr.type >= MOE_GGUF_TYPE_COUNT) return -1;
    uint64_t n = v->arr.n;
    d->arr.raw = NULL;
    d->arr.strs = NULL;
    d->arr.arrs = NULL;
    if (n == 0) return 0;
    if (v->arr.type == MOE_GGUF_STRING) {
        if (!v->arr.strs || n > SIZE_MAX / sizeof(struct moe_gguf_str)) return -1;
        struct moe_gguf_str *s = moe_arena_alloc(a, (size_t)n * sizeof *s);
        if (!s) return -1;
        for (uint64_t i = 0; i < n; i++)
            if (copy_str(a, &s[i], &v->arr.strs[i])) return -1;
        d->arr.strs = s;
    } else if (v->arr.type == MOE_GGUF_ARRAY) {
        if (!v->arr.arrs || n > SIZE_MAX / sizeof(struct moe_gguf_value)) return -1;
        struct moe_gguf_value *x = moe_arena_alloc(a, (size_t)n * sizeof *x);
        if (!x) return -1;
        for (uint64_t i = 0; i < n; i++)
            if (v->arr.arrs[i].type != MOE_GGUF_ARRAY || copy_value(a, &x[i], &v->arr.arrs[i], depth + 1)) return -1;
        d->arr.arrs = x;
    } else {
        size_t sz = elem_size(v->arr.type), bytes;
        if (!v->arr.raw || moe_mul_size((size_t)n, sz, &bytes)) return -1;
        void *p = moe_arena_alloc(a, bytes);
        if (!p) return -1;
        memcpy(p, v->arr.raw, bytes);
        d->arr.raw = p;
    }
    return 0;
}

int moe_gguf_writer_add_kv(struct moe_gguf_writer *w, const char *key, const struct moe_gguf_value *v)
{
    if (w->status) return w->status;
    if (!key || !*key || !v) return fail(w, MOE_ERR_INVALID, "empty key or no value", key);
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) return fail(w, MOE_ERR_INVALID, "key added twice", key);
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        struct wkv *p = realloc(w->kv, cap * sizeof *p);
        if (!p) return fail(w, MOE_ERR_NOMEM, "out of memory", key);
        w->kv = p;
        w->cap_kv = cap;
    }
    struct wkv *kv = &w->kv[w->n_kv];
    kv->key = moe_arena_strndup(&w->arena, key, strlen(key));
    if (!kv->key) return fail(w, MOE_ERR_NOMEM, "out of memory", key);
    if (copy_value(&w->arena, &kv->v, v, 0)) return fail(w, MOE_ERR_INVALID, "bad value (or out of memory)", key);
    w->n_kv++;
    return 0;
}

int moe_gguf_writer_add_u32(struct moe_gguf_writer *w, const char *key, uint32_t v)
{
    struct moe_gguf_value x = {.type = MOE_GGUF_UINT32, .u = v};
    return moe_gguf_writer_add_kv(w, key, &x);
}

int moe_gguf_writer_add_i32(struct moe_gguf_writer *w, const char *key, int32_t v)
{
    struct moe_gguf_value x = {.type = MOE_GGUF_INT32, .i = v};
    return moe_gguf_writer_add_kv(w, key, &x);
}

int moe_gguf_writer_add_u64(struct moe_gguf_writer *w, const char *key, uint64_t v)
{
    struct moe_gguf_value x = {.type = MOE_GGUF_UINT64, .u = v};
    return moe_gguf_writer_add_kv(w, key, &x);
}

int moe_gguf_writer_add_f32(struct moe_gguf_writer *w, const char *key, float v)
{
    struct moe_gguf_value x = {.type = MOE_GGUF_FLOAT32, .f = v};
    return moe_gguf_writer_add_kv(w, key, &x);
}

int moe_gguf_writer_add_bool(struct moe_gguf_writer *w, const char *key, bool v)
{
    struct moe_gguf_value x = {.type = MOE_GGUF_BOOL, .u = v ? 1 : 0};
    return moe_gguf_writer_add_kv(w, key, &x);
}

int moe_gguf_writer_add_str(struct moe_gguf_writer *w, const char *key, const char *v)
{
    if (!v) return fail(w, MOE_ERR_INVALID, "NULL string", key);
    struct moe_gguf_value x = {.type = MOE_GGUF_STRING, .str = {v, strlen(v)}};
    return moe_gguf_writer_add_kv(w, key, &x);
}

/* Pack a native C array into little-endian bytes. */
static void put_le(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t native_bits(enum moe_gguf_type t, const void *elems, uint64_t i)
{
    const unsigned char *b = elems;
    switch (t) {
    case MOE_GGUF_UINT8: case MOE_GGUF_INT8: case MOE_GGUF_BOOL: return b[i];
    case MOE_GGUF_UINT16: case MOE_GGUF_INT16: {
        uint16_t v;
        memcpy(&v, b + 2 * i, 2);
        return v;
    }
    case MOE_GGUF_UINT32: case MOE_GGUF_INT32: case MOE_GGUF_FLOAT32: {
        uint32_t v;
        memcpy(&v, b + 4 * i, 4);
        return v;
    }
    default: {
        uint64_t v;
        memcpy(&v, b + 8 * i, 8);
        return v;
    }
    }
}

int moe_gguf_writer_add_arr(struct moe_gguf_writer *w, const char *key, enum moe_gguf_type elem, const void *elems,
                            uint64_t n)
{
    if (w->status) return w->status;
    size_t sz = elem_size(elem), bytes;
    if (!sz) return fail(w, MOE_ERR_INVALID, "array element type must be a number or bool", key);
    if (n > SIZE_MAX || moe_mul_size((size_t)n, sz, &bytes) || (n && !elems))
        return fail(w, MOE_ERR_INVALID, "bad array", key);
    uint8_t *raw = malloc(bytes ? bytes : 1);
    if (!raw) return fail(w, MOE_ERR_NOMEM, "out of memory", key);
    for (uint64_t i = 0; i < n; i++) put_le(raw + (size_t)i * sz, native_bits(elem, elems, i), sz);
    struct moe_gguf_value x = {.type = MOE_GGUF_ARRAY};
    x.arr.type = elem;
    x.arr.n = n;
    x.arr.raw = raw;
    int rc = moe_gguf_writer_add_kv(w, key, &x);
    free(raw);
    return rc;
}

int moe_gguf_writer_add_arr_str(struct moe_gguf_writer *w, const char *key, const char *const *strs, uint64_t n)
{
    if (w->status) return w->status;
    if (n > SIZE_MAX / sizeof(struct moe_gguf_str) || (n && !strs)) return fail(w, MOE_ERR_INVALID, "bad array", key);
    struct moe_gguf_str *s = malloc(n ? (size_t)n * sizeof *s : 1);
    if (!s) return fail(w, MOE_ERR_NOMEM, "out of memory", key);
    for (uint64_t i = 0; i < n; i++) {
        if (!strs[i]) {
            free(s);
            return fail(w, MOE_ERR_INVALID, "NULL string in array", key);
        }
        s[i].s = strs[i];
        s[i].len = strlen(strs[i]);
    }
    struct moe_gguf_value x = {.type = MOE_GGUF_ARRAY};
    x.arr.type = MOE_GGUF_STRING;
    x.arr.n = n;
    x.arr.strs = s;
    int rc = moe_gguf_writer_add_kv(w, key, &x);
    free(s);
    return rc;
}

int moe_gguf_writer_add_tensor_raw(struct moe_gguf_writer *w, const char *name, uint32_t ggml_type, int n_dims,
                                   const uint64_t *ne, const void *data, size_t nbytes)
{
    if (w->status) return w->status;
    if (!name || !*name) return fail(w, MOE_ERR_INVALID, "empty tensor name", name);
    if (n_dims < 1 || n_dims > MOE_MAX_DIMS) return fail(w, MOE_ERR_INVALID, "n_dims must be 1..4", name);
    if (nbytes && !data && !w->pending_fill) return fail(w, MOE_ERR_INVALID, "no data", name);
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0) return fail(w, MOE_ERR_INVALID, "tensor added twice", name);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 16;
        struct wtensor *p = realloc(w->t, cap * sizeof *p);
        if (!p) return fail(w, MOE_ERR_NOMEM, "out of memory", name);
        w->t = p;
        w->cap_t = cap;
    }
    struct wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = moe_arena_strndup(&w->arena, name, strlen(name));
    if (!t->name) return fail(w, MOE_ERR_NOMEM, "out of memory", name);
    t->type = ggml_type;
    t->n_dims = (uint32_t)n_dims;
    for (int d = 0; d < n_dims; d++) t->ne[d] = ne[d];
    t->data = data;
    t->nbytes = nbytes;
    t->fill = w->pending_fill;
    t->fill_user = w->pending_user;
    t->fill_unit = 0;
    w->n_t++;
    return 0;
}

int moe_gguf_writer_add_tensor(struct moe_gguf_writer *w, const char *name, enum moe_wtype type, int n_dims,
                               const int64_t *shape, const void *data, size_t nbytes)
{
    if (w->status) return w->status;
    uint32_t gt, blck = 1, bytes;
    switch (type) {
    case MOE_W_F32: gt = MOE_GGML_F32; bytes = 4; break;
    case MOE_W_F16: gt = MOE_GGML_F16; bytes = 2; break;
    case MOE_W_BF16: gt = MOE_GGML_BF16; bytes = 2; break;
    case MOE_W_Q8_0: gt = MOE_GGML_Q8_0; blck = 32; bytes = 34; break;
    default: return fail(w, MOE_ERR_UNSUPPORTED, "GGUF holds only f32, f16, bf16 and q8_0 tensors", name);
    }
    if (n_dims < 1 || n_dims > MOE_MAX_DIMS) return fail(w, MOE_ERR_INVALID, "n_dims must be 1..4", name);
    uint64_t ne[MOE_MAX_DIMS];
    size_t want = bytes;
    for (int d = 0; d < n_dims; d++) {
        int64_t s = shape[n_dims - 1 - d];
        if (s < 0) return fail(w, MOE_ERR_INVALID, "negative dimension", name);
        ne[d] = (uint64_t)s;
    }
    if (ne[0] % blck) return fail(w, MOE_ERR_INVALID, "inner dimension not a multiple of 32", name);
    if (moe_mul_size(want, (size_t)(ne[0] / blck), &want)) return fail(w, MOE_ERR_INVALID, "too big", name);
    for (int d = 1; d < n_dims; d++)
        if (moe_mul_size(want, (size_t)ne[d], &want)) return fail(w, MOE_ERR_INVALID, "too big", name);
    if (want != nbytes) return fail(w, MOE_ERR_INVALID, "byte size does not match the shape", name);
    return moe_gguf_writer_add_tensor_raw(w, name, gt, n_dims, ne, data, nbytes);
}

int moe_gguf_writer_add_tensor_fill(struct moe_gguf_writer *w, const char *name, enum moe_wtype type, int n_dims,
                                    const int64_t *shape, size_t nbytes, moe_fill_fn fill, void *user, size_t unit)
{
    if (w->status) return w->status;
    if (!fill) return fail(w, MOE_ERR_INVALID, "no fill function", name);
    w->pending_fill = fill;
    w->pending_user = user;
    int rc = moe_gguf_writer_add_tensor(w, name, type, n_dims, shape, NULL, nbytes);
    w->pending_fill = NULL;
    w->pending_user = NULL;
    if (!rc) w->t[w->n_t - 1].fill_unit = unit;
    return rc;
}

/* ---- Serialization */

static void w_u32(struct moe_tmpfile *f, uint32_t v)
{
    uint8_t b[4];
    put_le(b, v, 4);
    moe_tmpfile_write(f, b, 4);
}

static void w_u64(struct moe_tmpfile *f, uint64_t v)
{
    uint8_t b[8];
    put_le(b, v, 8);
    moe_tmpfile_write(f, b, 8);
}

static void w_str(struct moe_tmpfile *f, const char *s, uint64_t len)
{
    w_u64(f, len);
    moe_tmpfile_write(f, s, (size_t)len);
}

static void w_value(struct moe_tmpfile *f, const struct moe_gguf_value *v)
{
    uint8_t b[8];
    switch (v->type) {
    case MOE_GGUF_UINT8: case MOE_GGUF_BOOL: case MOE_GGUF_UINT16: case MOE_GGUF_UINT32: case MOE_GGUF_UINT64:
        put_le(b, v->u, elem_size(v->type));
        moe_tmpfile_write(f, b, elem_size(v->type));
        break;
    case MOE_GGUF_INT8: case MOE_GGUF_INT16: case MOE_GGUF_INT32: case MOE_GGUF_INT64:
        put_le(b, (uint64_t)v->i, elem_size(v->type));
        moe_tmpfile_write(f, b, elem_size(v->type));
        break;
    case MOE_GGUF_FLOAT32: {
        float x = (float)v->f;
        uint32_t u;
        memcpy(&u, &x, 4);
        w_u32(f, u);
        break;
    }
    case MOE_GGUF_FLOAT64: {
        uint64_t u;
        memcpy(&u, &v->f, 8);
        w_u64(f, u);
        break;
    }
    case MOE_GGUF_STRING: w_str(f, v->str.s, v->str.len); break;
    case MOE_GGUF_ARRAY:
        w_u32(f, v->arr.type);
        w_u64(f, v->arr.n);
        if (v->arr.type == MOE_GGUF_STRING)
            for (uint64_t i = 0; i < v->arr.n; i++) w_str(f, v->arr.strs[i].s, v->arr.strs[i].len);
        else if (v->arr.type == MOE_GGUF_ARRAY)
            for (uint64_t i = 0; i < v->arr.n; i++) w_value(f, &v->arr.arrs[i]);
        else
            moe_tmpfile_write(f, v->arr.raw, (size_t)v->arr.n * elem_size(v->arr.type));
        break;
    default: break;
    }
}

int moe_gguf_writer_write(struct moe_gguf_writer *w, const char *path, char *err, size_t errlen)
{
    if (w->status) return moe_errorf(err, errlen, w->status, "%s: %s", path, w->msg);
    size_t align = 32;
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, "general.alignment") == 0) {
            const struct moe_gguf_value *v = &w->kv[i].v;
            if (v->type != MOE_GGUF_UINT32 || v->u == 0 || (v->u & (v->u - 1)))
                return moe_errorf(err, errlen, MOE_ERR_INVALID, "%s: general.alignment must be a u32 power of two",
                                  path);
            align = (size_t)v->u;
        }
    struct moe_tmpfile f;
    int rc = moe_tmpfile_open(&f, path, err, errlen);
    if (rc) return rc;
    moe_tmpfile_write(&f, "GGUF", 4);
    w_u32(&f, 3);
    w_u64(&f, w->n_t);
    w_u64(&f, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        w_str(&f, w->kv[i].key, strlen(w->kv[i].key));
        w_u32(&f, w->kv[i].v.type);
        w_value(&f, &w->kv[i].v);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        w_str(&f, t->name, strlen(t->name));
        w_u32(&f, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) w_u64(&f, t->ne[d]);
        w_u32(&f, t->type);
        w_u64(&f, off);
        off += t->nbytes + (align - t->nbytes % align) % align;
    }
    long at = ftell(f.fp);
    if (at < 0) {
        moe_tmpfile_abort(&f);
        return moe_errorf(err, errlen, MOE_ERR_IO, "%s: ftell failed", path);
    }
    size_t pos = (size_t)at;
    moe_tmpfile_pad(&f, (align - pos % align) % align, 0);
    for (size_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        if (t->fill) moe_tmpfile_write_fill(&f, t->fill, t->fill_user, t->nbytes, t->fill_unit);
        else moe_tmpfile_write(&f, t->data, t->nbytes);
        moe_tmpfile_pad(&f, (align - t->nbytes % align) % align, 0);
    }
    return moe_tmpfile_commit(&f, err, errlen);
}
