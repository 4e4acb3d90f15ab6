/*
 * src/gguf.c — the GGUF reader: parse and validate a whole file over a
 * read-only mmap (see gguf.h for the layout and what is checked).
 *
 * Every read goes through a bounds-checked cursor; counts from the file
 * are compared with the bytes left before anything is allocated for them,
 * so a hostile header cannot make us allocate more than a small multiple
 * of the file size.
 */
#include "gguf.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- ggml types: name, block size (elements), block bytes.  Numbers
 * missing here (removed from ggml, or newer than this table) are errors. */
struct ggml_type_info {
    const char *name;
    uint32_t blck, bytes;
};

static const struct ggml_type_info ggml_types[] = {
    [0] = {"f32", 1, 4},       [1] = {"f16", 1, 2},        [2] = {"q4_0", 32, 18},    [3] = {"q4_1", 32, 20},
    [6] = {"q5_0", 32, 22},    [7] = {"q5_1", 32, 24},     [8] = {"q8_0", 32, 34},    [9] = {"q8_1", 32, 36},
    [10] = {"q2_K", 256, 84},  [11] = {"q3_K", 256, 110},  [12] = {"q4_K", 256, 144}, [13] = {"q5_K", 256, 176},
    [14] = {"q6_K", 256, 210}, [15] = {"q8_K", 256, 292},  [16] = {"iq2_xxs", 256, 66}, [17] = {"iq2_xs", 256, 74},
    [18] = {"iq3_xxs", 256, 98}, [19] = {"iq1_s", 256, 50}, [20] = {"iq4_nl", 32, 18}, [21] = {"iq3_s", 256, 110},
    [22] = {"iq2_s", 256, 82}, [23] = {"iq4_xs", 256, 136}, [24] = {"i8", 1, 1},      [25] = {"i16", 1, 2},
    [26] = {"i32", 1, 4},      [27] = {"i64", 1, 8},       [28] = {"f64", 1, 8},      [29] = {"iq1_m", 256, 56},
    [30] = {"bf16", 1, 2},     [34] = {"tq1_0", 256, 54},  [35] = {"tq2_0", 256, 66}, [39] = {"mxfp4", 32, 17},
};
#define N_GGML_TYPES (sizeof ggml_types / sizeof ggml_types[0])

const char *moe_ggml_type_name(uint32_t type)
{
    return type < N_GGML_TYPES ? ggml_types[type].name : NULL;
}

static enum moe_wtype wtype_of_ggml(uint32_t type)
{
    switch (type) {
    case MOE_GGML_F32: return MOE_W_F32;
    case MOE_GGML_F16: return MOE_W_F16;
    case MOE_GGML_Q8_0: return MOE_W_Q8_0;
    case MOE_GGML_BF16: return MOE_W_BF16;
    default: return MOE_W_UNSUPPORTED;
    }
}

static const char *const gguf_type_names[MOE_GGUF_TYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64",
};

const char *moe_gguf_type_name(enum moe_gguf_type t)
{
    return (unsigned)t < MOE_GGUF_TYPE_COUNT ? gguf_type_names[t] : "?";
}

/* Bytes of one scalar of type t in the file; 0 for STRING/ARRAY/unknown. */
static size_t scalar_size(uint32_t t)
{
    switch (t) {
    case MOE_GGUF_UINT8: case MOE_GGUF_INT8: case MOE_GGUF_BOOL: return 1;
    case MOE_GGUF_UINT16: case MOE_GGUF_INT16: return 2;
    case MOE_GGUF_UINT32: case MOE_GGUF_INT32: case MOE_GGUF_FLOAT32: return 4;
    case MOE_GGUF_UINT64: case MOE_GGUF_INT64: case MOE_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* ---- Little-endian loads from unaligned bytes. */
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

/* Decode one scalar at p into v (type already set). */
static int decode_scalar(struct moe_gguf_value *v, uint32_t t, const uint8_t *p)
{
    v->type = (enum moe_gguf_type)t;
    switch (t) {
    case MOE_GGUF_UINT8: v->u = p[0]; return 0;
    case MOE_GGUF_INT8: v->i = (int8_t)p[0]; return 0;
    case MOE_GGUF_BOOL:
        if (p[0] > 1) return -1;
        v->u = p[0];
        return 0;
    case MOE_GGUF_UINT16: v->u = le16(p); return 0;
    case MOE_GGUF_INT16: v->i = (int16_t)le16(p); return 0;
    case MOE_GGUF_UINT32: v->u = le32(p); return 0;
    case MOE_GGUF_INT32: v->i = (int32_t)le32(p); return 0;
    case MOE_GGUF_UINT64: v->u = le64(p); return 0;
    case MOE_GGUF_INT64: v->i = (int64_t)le64(p); return 0;
    case MOE_GGUF_FLOAT32: {
        uint32_t u = le32(p);
        float f;
        memcpy(&f, &u, 4);
        v->f = f;
        return 0;
    }
    case MOE_GGUF_FLOAT64: {
        uint64_t u = le64(p);
        double d;
        memcpy(&d, &u, 8);
        v->f = d;
        return 0;
    }
    default: return -1;
    }
}

/* ---- Cursor over the mapped file. */
struct cursor {
    const uint8_t *p;
    size_t pos, size;
    const char *path;
    char *err;
    size_t errlen;
    struct moe_arena *arena;
    const char *what;          /* context for messages: "header", "metadata key 'x'", ... */
};

static size_t left(const struct cursor *c) { return c->size - c->pos; }

static int truncated(struct cursor *c, size_t need)
{
    return moe_errorf(c->err, c->errlen, MOE_ERR_FORMAT,
                      "%s: %s: truncated (needs %zu bytes at offset %zu, file has %zu)", c->path, c->what, need,
                      c->pos, c->size);
}

static int rd_u32(struct cursor *c, uint32_t *v)
{
    if (left(c) < 4) return truncated(c, 4);
    *v = le32(c->p + c->pos);
    c->pos += 4;
    return 0;
}

static int rd_u64(struct cursor *c, uint64_t *v)
{
    if (left(c) < 8) return truncated(c, 8);
    *v = le64(c->p + c->pos);
    c->pos += 8;
    return 0;
}

/* A string: u64 length + bytes, copied NUL-terminated into the arena.
 * no_nul: reject embedded NULs (keys, tensor names). */
static int rd_str(struct cursor *c, struct moe_gguf_str *s, int no_nul)
{
    uint64_t n;
    int rc = rd_u64(c, &n);
    if (rc) return rc;
    if (n > left(c))
        return moe_errorf(c->err, c->errlen, MOE_ERR_FORMAT,
                          "%s: %s: string length %" PRIu64 " at offset %zu past end of file (%zu bytes)", c->path,
                          c->what, n, c->pos - 8, c->size);
    const char *src = (const char *)c->p + c->pos;
    if (no_nul && memchr(src, 0, (size_t)n))
        return moe_errorf(c->err, c->errlen, MOE_ERR_FORMAT, "%s: %s: name at offset %zu contains a NUL byte",
                          c->path, c->what, c->pos);
    char *d = moe_arena_strndup(c->arena, src, (size_t)n);
    if (!d) return moe_errorf(c->err, c->errlen, MOE_ERR_NOMEM, "%s: out of memory", c->path);
    s->s = d;
    s->len = n;
    c->pos += (size_t)n;
    return 0;
}

#define MAX_NESTING 8

/* A value of type t (already read) into v. */
static int rd_value(struct cursor *c, uint32_t t, struct moe_gguf_value *v, int depth)
{
    memset(v, 0, sizeof *v);
    if (t >= MOE_GGUF_TYPE_COUNT)
        return moe_errorf(c->err, c->errlen, MOE_ERR_FORMAT, "%s: %s: unknown value type %" PRIu32, c->path,
                          c->what, t);
    if (t == MOE_GGUF_STRING) {
        v->type = MOE_GGUF_STRING;
        return rd_str(c, &v->str, 0);
    }
    if (t != MOE_GGUF_ARRAY) {
        size_t n = scalar_size(t);
        if (left(c) < n) return truncated(c, n);
        if (decode_scalar(v, t, c->p + c->pos))
            return moe_errorf(c->err, c->errlen, MOE_ERR_FORMAT, "%s: %s: bool value %u is not 0 or 1", c->path,
                              c->what, c->p[c->pos]);
        c->pos += n;
        return 0;
    }
    if (depth >= MAX_NESTING)
        return moe_errorf(c->err, c->errlen, MOE_ERR_FORMAT, "%s: %s: arrays nested deeper than %d", c->path,
                          c->what, MAX_NESTING);
    uint32_t et;
    uint64_t n;
    int rc = rd_u32(c, &et);
    if (!rc) rc = rd_u64(c, &n);
    if (rc) return rc;
    v->type = MOE_GGUF_ARRAY;
    v->arr.type = (enum moe_gguf_type)et;
    v->arr.n = n;
    if (et >= MOE_GGUF_TYPE_COUNT)
        return moe_errorf(c->err, c->errlen, MOE_ERR_FORMAT, "%s: %s: unknown array element type %" PRIu32,
                          c->path, c->what, et);
    /* the smallest an element can be in the file bounds the count */
    size_t min = et == MOE_GGUF_STRING ? 8 : et == MOE_GGUF_ARRAY ? 12 : scalar_size(et);
    if (n > left(c) / min)
        return moe_errorf(c->err, c->errlen, MOE_ERR_FORMAT,
                          "%s: %s: array of %" PRIu64 " %s elements does not fit in the %zu bytes left", c->path,
                          c->what, n, moe_gguf_type_name((enum moe_gguf_type)et), left(c));
    if (et == MOE_GGUF_STRING) {
        struct moe_gguf_str *s = moe_arena_alloc(c->arena, (size_t)n * sizeof *s);
        if (!s) return moe_errorf(c->err, c->errlen, MOE_ERR_NOMEM, "%s: out of memory", c->path);
        for (uint64_t i = 0; i < n; i++)
            if ((rc = rd_str(c, &s[i], 0))) return rc;
        v->arr.strs = s;
    } else if (et == MOE_GGUF_ARRAY) {
        struct moe_gguf_value *a = moe_arena_alloc(c->arena, (size_t)n * sizeof *a);
        if (!a) return moe_errorf(c->err, c->errlen, MOE_ERR_NOMEM, "%s: out of memory", c->path);
        for (uint64_t i = 0; i < n; i++)
            if ((rc = rd_value(c, MOE_GGUF_ARRAY, &a[i], depth + 1))) return rc;
        v->arr.arrs = a;
    } else {
        v->arr.raw = c->p + c->pos;
        if (et == MOE_GGUF_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (c->p[c->pos + i] > 1)
                    return moe_errorf(c->err, c->errlen, MOE_ERR_FORMAT,
                                      "%s: %s: bool array element %" PRIu64 " is %u, not 0 or 1", c->path, c->what,
                                      i, c->p[c->pos + i]);
        c->pos += (size_t)n * min;
    }
    return 0;
}

/* ---- Open */

static int check_ggml_tensor(struct cursor *c, struct moe_gguf *g, size_t i, uint32_t n_dims, const uint64_t *ne,
                             uint32_t type, uint64_t offset)
{
    struct moe_tensor *t = &g->tensors[i];
    const char *name = t->name;
    if (n_dims < 1 || n_dims > MOE_MAX_DIMS)
        return moe_errorf(c->err, c->errlen, MOE_ERR_FORMAT, "%s: tensor '%s': %" PRIu32 " dimensions (1..%d allowed)",
                          c->path, name, n_dims, MOE_MAX_DIMS);
    if (type >= N_GGML_TYPES || !ggml_types[type].name)
        return moe_errorf(c->err, c->errlen, MOE_ERR_FORMAT, "%s: tensor '%s': unknown ggml type %" PRIu32, c->path,
                          name, type);
    const struct ggml_type_info *ti = &ggml_types[type];
    uint64_t nel = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] > (uint64_t)INT64_MAX || (ne[d] && nel > (uint64_t)INT64_MAX / ne[d]))
            return moe_errorf(c->err, c->errlen, MOE_ERR_FORMAT,
                              "%s: tensor '%s': dimension %" PRIu32 " of %" PRIu64 " overflows the element count",
                              c->path, name, d, ne[d]);
        nel *= ne[d];
    }
    if (ne[0] % ti->blck)
        return moe_errorf(c->err, c->errlen, MOE_ERR_FORMAT,
                          "%s: tensor '%s': inner dimension %" PRIu64 " is not a multiple of the %s block (%" PRIu32 ")",
                          c->path, name, ne[0], ti->name, ti->blck);
    /* bytes = ne0/blck * bytes * ne1 * ne2 * ne3 */
    size_t nbytes;
    if (moe_mul_size((size_t)(ne[0] / ti->blck), ti->bytes, &nbytes))
        goto too_big;
    for (uint32_t d = 1; d < n_dims; d++)
        if (ne[d] > SIZE_MAX || moe_mul_size(nbytes, (size_t)ne[d], &nbytes)) goto too_big;
    if (offset % g->alignment)
        return moe_errorf(c->err, c->errlen, MOE_ERR_FORMAT,
                          "%s: tensor '%s': offset %" PRIu64 " is not a multiple of the alignment %" PRIu32, c->path,
                          name, offset, g->alignment);
    size_t start, end;
    if (offset > SIZE_MAX || moe_add_size(g->data_offset, (size_t)offset, &start) ||
        moe_add_size(start, nbytes, &end) || end > g->size)
        return moe_errorf(c->err, c->errlen, MOE_ERR_FORMAT,
                          "%s: tensor '%s': data [%" PRIu64 ", +%zu) past end of file (data section at %zu, file %zu bytes)",
                          c->path, name, offset, nbytes, g->data_offset, g->size);
    t->type = wtype_of_ggml(type);
    t->dtype = ti->name;
    t->n_dims = (int)n_dims;
    for (int d = 0; d < MOE_MAX_DIMS; d++) t->shape[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) t->shape[n_dims - 1 - d] = (int64_t)ne[d];
    t->data = g->map + start;
    t->nbytes = nbytes;
    t->file = g->path;
    if (ti->blck == 1 && ((uintptr_t)t->data % ti->bytes))
        return moe_errorf(c->err, c->errlen, MOE_ERR_FORMAT,
                          "%s: tensor '%s': data at file offset %zu not aligned to its %" PRIu32 "-byte elements",
                          c->path, name, start, ti->bytes);
    g->ggml_type[i] = type;
    g->offset[i] = offset;
    return 0;
too_big:
    return moe_errorf(c->err, c->errlen, MOE_ERR_FORMAT, "%s: tensor '%s': byte size overflows", c->path, name);
}

int moe_gguf_is_gguf(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return 0;
    unsigned char m[4];
    ssize_t n = read(fd, m, 4);
    close(fd);
    return n == 4 && memcmp(m, "GGUF", 4) == 0;
}

int moe_gguf_open(struct moe_gguf **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    struct moe_gguf *g = calloc(1, sizeof *g);
    if (!g) return moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", path);
    int rc;
    size_t plen = strlen(path);
    g->path = malloc(plen + 1);
    if (!g->path) {
        rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    memcpy(g->path, path, plen + 1);
    if ((rc = moe_map_file(path, &g->map, &g->size, err, errlen))) goto fail;

    struct cursor c = {.p = g->map, .size = g->size, .path = g->path, .err = err, .errlen = errlen,
                       .arena = &g->arena, .what = "header"};
    if (g->size < 4 || memcmp(g->map, "GGUF", 4) != 0) {
        rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: not a GGUF file (bad magic)", path);
        goto fail;
    }
    c.pos = 4;
    uint64_t n_tensors, n_kv;
    if ((rc = rd_u32(&c, &g->version))) goto fail;
    if (g->version == 1 || g->version > 3) {
        rc = moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED, "%s: GGUF version %" PRIu32 " not supported (2 or 3)%s",
                        path, g->version, (g->version & 0xFFFF) == 0 ? " (big-endian file?)" : "");
        goto fail;
    }
    if (g->version == 0) {
        rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: GGUF version 0", path);
        goto fail;
    }
    if ((rc = rd_u64(&c, &n_tensors)) || (rc = rd_u64(&c, &n_kv))) goto fail;
    /* a kv takes >= 13 bytes (key length, type, 1-byte value), a tensor
     * info >= 24 (name length, n_dims, type, offset) */
    if (n_kv > left(&c) / 13) {
        rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: header: %" PRIu64 " metadata entries cannot fit in %zu bytes",
                        path, n_kv, g->size);
        goto fail;
    }
    if (n_tensors > left(&c) / 24) {
        rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: header: %" PRIu64 " tensors cannot fit in %zu bytes", path,
                        n_tensors, g->size);
        goto fail;
    }

    /* metadata */
    g->n_kv = (size_t)n_kv;
    g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kv);
    if (!g->kv) {
        rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    char what[160];
    for (size_t i = 0; i < g->n_kv; i++) {
        snprintf(what, sizeof what, "metadata entry %zu", i);
        c.what = what;
        struct moe_gguf_str key;
        uint32_t t;
        if ((rc = rd_str(&c, &key, 1))) goto fail;
        if (key.len == 0) {
            rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: metadata entry %zu has an empty key", path, i);
            goto fail;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(g->kv[j].key, key.s) == 0) {
                rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: metadata key '%s' appears twice", path, key.s);
                goto fail;
            }
        g->kv[i].key = key.s;
        snprintf(what, sizeof what, "metadata key '%.100s'", key.s);
        if ((rc = rd_u32(&c, &t)) || (rc = rd_value(&c, t, &g->kv[i].v, 0))) goto fail;
    }

    g->alignment = 32;
    const struct moe_gguf_value *al = moe_gguf_find(g, "general.alignment");
    if (al) {
        if (al->type != MOE_GGUF_UINT32 || al->u == 0 || (al->u & (al->u - 1)) || al->u > (1u << 30)) {
            rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: general.alignment must be a u32 power of two", path);
            goto fail;
        }
        g->alignment = (uint32_t)al->u;
    }
    const struct moe_gguf_value *split = moe_gguf_find(g, "split.count");
    if (split && (split->type == MOE_GGUF_UINT16 || split->type == MOE_GGUF_UINT32) && split->u > 1) {
        rc = moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED,
                        "%s: one part of a %" PRIu64 "-file split GGUF: merge it first (llama-gguf-split --merge)",
                        path, split->u);
        goto fail;
    }

    /* tensor infos */
    g->n_tensors = (size_t)n_tensors;
    size_t nt = g->n_tensors ? g->n_tensors : 1;
    g->tensors = calloc(nt, sizeof *g->tensors);
    g->ggml_type = calloc(nt, sizeof *g->ggml_type);
    g->offset = calloc(nt, sizeof *g->offset);
    uint64_t (*ne)[MOE_MAX_DIMS] = calloc(nt, sizeof *ne);
    uint32_t *dims = calloc(nt, sizeof *dims);
    if (!g->tensors || !g->ggml_type || !g->offset || !ne || !dims) {
        free(ne);
        free(dims);
        rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (size_t i = 0; i < g->n_tensors; i++) {
        snprintf(what, sizeof what, "tensor info %zu", i);
        c.what = what;
        struct moe_gguf_str name;
        if ((rc = rd_str(&c, &name, 1))) goto fail_infos;
        if (name.len == 0) {
            rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: tensor info %zu has an empty name", path, i);
            goto fail_infos;
        }
        g->tensors[i].name = name.s;
        g->tensors[i].file = g->path;
        snprintf(what, sizeof what, "tensor '%.100s'", name.s);
        if ((rc = rd_u32(&c, &dims[i]))) goto fail_infos;
        if (dims[i] < 1 || dims[i] > MOE_MAX_DIMS) {
            rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: tensor '%s': %" PRIu32 " dimensions (1..%d allowed)",
                            path, name.s, dims[i], MOE_MAX_DIMS);
            goto fail_infos;
        }
        for (uint32_t d = 0; d < dims[i]; d++)
            if ((rc = rd_u64(&c, &ne[i][d]))) goto fail_infos;
        if ((rc = rd_u32(&c, &g->ggml_type[i])) || (rc = rd_u64(&c, &g->offset[i]))) goto fail_infos;
    }
    size_t dup;
    if ((rc = moe_tensor_index_build(&g->index, g->tensors, g->n_tensors, &dup))) {
        if (rc == MOE_ERR_NOMEM)
            moe_errorf(err, errlen, rc, "%s: out of memory", path);
        else
            moe_errorf(err, errlen, rc, "%s: tensor '%s' appears twice", path, g->tensors[dup].name);
        goto fail_infos;
    }
    /* data section: aligned after the infos */
    g->data_offset = c.pos + (g->alignment - c.pos % g->alignment) % g->alignment;
    if (g->data_offset < c.pos) { /* wrapped */
        rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: data section offset overflows", path);
        goto fail_infos;
    }
    for (size_t i = 0; i < g->n_tensors; i++)
        if ((rc = check_ggml_tensor(&c, g, i, dims[i], ne[i], g->ggml_type[i], g->offset[i]))) goto fail_infos;
    free(ne);
    free(dims);
    *out = g;
    return MOE_OK;
fail_infos:
    free(ne);
    free(dims);
fail:
    moe_gguf_close(g);
    return rc;
}

void moe_gguf_close(struct moe_gguf *g)
{
    if (!g) return;
    moe_unmap_file(g->map, g->size);
    moe_tensor_index_free(&g->index);
    moe_arena_free(&g->arena);
    free(g->kv);
    free(g->tensors);
    free(g->ggml_type);
    free(g->offset);
    free(g->path);
    free(g);
}

/* ---- Lookup */

const struct moe_gguf_value *moe_gguf_find(const struct moe_gguf *g, const char *key)
{
    for (size_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0) return &g->kv[i].v;
    return NULL;
}

static int lookup(const struct moe_gguf *g, const char *key, const struct moe_gguf_value **v, char *err,
                  size_t errlen)
{
    *v = moe_gguf_find(g, key);
    if (!*v) return moe_errorf(err, errlen, MOE_ERR_NOT_FOUND, "%s: metadata key '%s' missing", g->path, key);
    return 0;
}

static int wrong_type(const struct moe_gguf *g, const char *key, const struct moe_gguf_value *v, const char *want,
                      char *err, size_t errlen)
{
    return moe_errorf(err, errlen, MOE_ERR_TYPE, "%s: metadata key '%s' is %s, expected %s", g->path, key,
                      moe_gguf_type_name(v->type), want);
}

static int value_int(const struct moe_gguf_value *v, int64_t *out)
{
    switch (v->type) {
    case MOE_GGUF_UINT8: case MOE_GGUF_UINT16: case MOE_GGUF_UINT32: case MOE_GGUF_UINT64:
        if (v->u > (uint64_t)INT64_MAX) return -1;
        *out = (int64_t)v->u;
        return 0;
    case MOE_GGUF_INT8: case MOE_GGUF_INT16: case MOE_GGUF_INT32: case MOE_GGUF_INT64:
        *out = v->i;
        return 0;
    default: return -1;
    }
}

int moe_gguf_get_int(const struct moe_gguf *g, const char *key, int64_t *out, char *err, size_t errlen)
{
    const struct moe_gguf_value *v;
    int rc = lookup(g, key, &v, err, errlen);
    if (rc) return rc;
    if (value_int(v, out)) return wrong_type(g, key, v, "an integer", err, errlen);
    return 0;
}

int moe_gguf_get_float(const struct moe_gguf *g, const char *key, double *out, char *err, size_t errlen)
{
    const struct moe_gguf_value *v;
    int rc = lookup(g, key, &v, err, errlen);
    if (rc) return rc;
    if (v->type != MOE_GGUF_FLOAT32 && v->type != MOE_GGUF_FLOAT64) return wrong_type(g, key, v, "a float", err, errlen);
    *out = v->f;
    return 0;
}

int moe_gguf_get_bool(const struct moe_gguf *g, const char *key, bool *out, char *err, size_t errlen)
{
    const struct moe_gguf_value *v;
    int rc = lookup(g, key, &v, err, errlen);
    if (rc) return rc;
    if (v->type != MOE_GGUF_BOOL) return wrong_type(g, key, v, "bool", err, errlen);
    *out = v->u != 0;
    return 0;
}

int moe_gguf_get_str(const struct moe_gguf *g, const char *key, const char **out, char *err, size_t errlen)
{
    const struct moe_gguf_value *v;
    int rc = lookup(g, key, &v, err, errlen);
    if (rc) return rc;
    if (v->type != MOE_GGUF_STRING) return wrong_type(g, key, v, "str", err, errlen);
    *out = v->str.s;
    return 0;
}

int moe_gguf_get_arr(const struct moe_gguf *g, const char *key, enum moe_gguf_type elem,
                     const struct moe_gguf_value **out, char *err, size_t errlen)
{
    const struct moe_gguf_value *v;
    int rc = lookup(g, key, &v, err, errlen);
    if (rc) return rc;
    if (v->type != MOE_GGUF_ARRAY) return wrong_type(g, key, v, "arr", err, errlen);
    if (elem != MOE_GGUF_TYPE_COUNT && v->arr.type != elem)
        return moe_errorf(err, errlen, MOE_ERR_TYPE, "%s: metadata key '%s' is an array of %s, expected of %s",
                          g->path, key, moe_gguf_type_name(v->arr.type), moe_gguf_type_name(elem));
    *out = v;
    return 0;
}

int moe_gguf_arr_int(const struct moe_gguf_value *arr, uint64_t i, int64_t *out)
{
    if (arr->type != MOE_GGUF_ARRAY || i >= arr->arr.n || !arr->arr.raw) return MOE_ERR_TYPE;
    size_t sz = scalar_size(arr->arr.type);
    struct moe_gguf_value v;
    if (arr->arr.type == MOE_GGUF_BOOL || arr->arr.type == MOE_GGUF_FLOAT32 || arr->arr.type == MOE_GGUF_FLOAT64)
        return MOE_ERR_TYPE;
    if (decode_scalar(&v, arr->arr.type, (const uint8_t *)arr->arr.raw + (size_t)i * sz)) return MOE_ERR_TYPE;
    return value_int(&v, out) ? MOE_ERR_TYPE : 0;
}

int moe_gguf_arr_float(const struct moe_gguf_value *arr, uint64_t i, double *out)
{
    if (arr->type != MOE_GGUF_ARRAY || i >= arr->arr.n || !arr->arr.raw) return MOE_ERR_TYPE;
    if (arr->arr.type != MOE_GGUF_FLOAT32 && arr->arr.type != MOE_GGUF_FLOAT64) return MOE_ERR_TYPE;
    struct moe_gguf_value v;
    decode_scalar(&v, arr->arr.type, (const uint8_t *)arr->arr.raw + (size_t)i * scalar_size(arr->arr.type));
    *out = v.f;
    return 0;
}

const char *moe_gguf_arr_str(const struct moe_gguf_value *arr, uint64_t i)
{
    if (arr->type != MOE_GGUF_ARRAY || arr->arr.type != MOE_GGUF_STRING || i >= arr->arr.n) return NULL;
    return arr->arr.strs[i].s;
}

const struct moe_tensor *moe_gguf_find_tensor(const struct moe_gguf *g, const char *name)
{
    return moe_tensor_index_find(&g->index, g->tensors, name);
}
