/*
 * src/safetensors.c — the safetensors reader (one file or an index of
 * shards, each mmapped read-only and validated at open) and writer (one
 * file, or shards plus index json), see safetensors.h.  JSON by Jansson.
 */
#include "safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Headers of real checkpoints are a few MB at most; the reference
 * implementation refuses more than 100 MB. */
#define MAX_HEADER (100u * 1024 * 1024)

struct dtype_info {
    const char *name;
    size_t size;
    enum moe_wtype type;
};

static const struct dtype_info dtypes[] = {
    {"F32", 4, MOE_W_F32},           {"F16", 2, MOE_W_F16},          {"BF16", 2, MOE_W_BF16},
    {"F8_E4M3", 1, MOE_W_FP8},       {"F8_E5M2", 1, MOE_W_UNSUPPORTED}, {"F8_E8M0", 1, MOE_W_UNSUPPORTED},
    {"F64", 8, MOE_W_UNSUPPORTED},   {"I64", 8, MOE_W_UNSUPPORTED},  {"U64", 8, MOE_W_UNSUPPORTED},
    {"I32", 4, MOE_W_UNSUPPORTED},   {"U32", 4, MOE_W_UNSUPPORTED},  {"I16", 2, MOE_W_UNSUPPORTED},
    {"U16", 2, MOE_W_UNSUPPORTED},   {"I8", 1, MOE_W_UNSUPPORTED},   {"U8", 1, MOE_W_UNSUPPORTED},
    {"BOOL", 1, MOE_W_UNSUPPORTED},  {"C64", 8, MOE_W_UNSUPPORTED},
};

static const struct dtype_info *find_dtype(const char *name)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (strcmp(dtypes[i].name, name) == 0) return &dtypes[i];
    return NULL;
}

size_t moe_st_dtype_size(const char *dtype, enum moe_wtype *type)
{
    const struct dtype_info *d = dtype ? find_dtype(dtype) : NULL;
    if (!d) return 0;
    if (type) *type = d->type;
    return d->size;
}

const char *moe_st_dtype_name(enum moe_wtype t)
{
    switch (t) {
    case MOE_W_F32: return "F32";
    case MOE_W_F16: return "F16";
    case MOE_W_BF16: return "BF16";
    case MOE_W_FP8: return "F8_E4M3";
    default: return NULL;
    }
}

/* ---- Reader */

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* A JSON integer >= 0 into *v. */
static int json_uint(const json_t *j, uint64_t *v)
{
    if (!json_is_integer(j)) return -1;
    json_int_t x = json_integer_value(j);
    if (x < 0) return -1;
    *v = (uint64_t)x;
    return 0;
}

/* Parse one shard's header; append its tensors to *t (growing *cap). */
static int parse_shard(struct moe_safetensors *st, struct moe_st_shard *sh, struct moe_tensor **t, size_t *n,
                       size_t *cap, char *err, size_t errlen)
{
    const char *path = sh->path;
    if (sh->size < 8)
        return moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: truncated: %zu bytes, no header length", path, sh->size);
    uint64_t hlen = le64(sh->map);
    if (hlen > sh->size - 8)
        return moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: header length %" PRIu64 " past end of file (%zu bytes)",
                          path, hlen, sh->size);
    if (hlen > MAX_HEADER)
        return moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: header length %" PRIu64 " over the %u-byte limit", path,
                          hlen, MAX_HEADER);
    if (hlen < 2 || sh->map[8] != '{')
        return moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: header is not a JSON object", path);
    sh->data_start = 8 + (size_t)hlen;
    size_t data_size = sh->size - sh->data_start;
    json_error_t je;
    json_t *root = json_loadb((const char *)sh->map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: header JSON: %s (line %d column %d)", path, je.text,
                          je.line, je.column);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: header is not a JSON object", path);
        goto done;
    }
    const char *name;
    json_t *info;
    json_object_foreach(root, name, info) {
        if (strcmp(name, "__metadata__") == 0) continue;
        if (!*name) {
            rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: a tensor has an empty name", path);
            goto done;
        }
        json_t *jd = json_object_get(info, "dtype"), *js = json_object_get(info, "shape"),
               *jo = json_object_get(info, "data_offsets");
        if (!json_is_object(info) || !json_is_string(jd) || !json_is_array(js) || !json_is_array(jo)) {
            rc = moe_errorf(err, errlen, MOE_ERR_FORMAT,
                            "%s: tensor '%s': needs \"dtype\" (string), \"shape\" and \"data_offsets\" (arrays)",
                            path, name);
            goto done;
        }
        const char *dname = json_string_value(jd);
        const struct dtype_info *dt = find_dtype(dname);
        if (!dt) {
            rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%s'", path, name, dname);
            goto done;
        }
        size_t nd = json_array_size(js);
        if (nd > MOE_MAX_DIMS) {
            rc = moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED, "%s: tensor '%s': %zu dimensions (at most %d)", path,
                            name, nd, MOE_MAX_DIMS);
            goto done;
        }
        if (*n == *cap) {
            size_t nc = *cap ? 2 * *cap : 64;
            struct moe_tensor *p = realloc(*t, nc * sizeof *p);
            if (!p) {
                rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", path);
                goto done;
            }
            *t = p;
            *cap = nc;
        }
        struct moe_tensor *x = &(*t)[*n];
        memset(x, 0, sizeof *x);
        size_t nbytes = dt->size;
        for (size_t d = 0; d < MOE_MAX_DIMS; d++) x->shape[d] = 1;
        for (size_t d = 0; d < nd; d++) {
            uint64_t s;
            if (json_uint(json_array_get(js, d), &s) || s > (uint64_t)INT64_MAX) {
                rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer",
                                path, name, d);
                goto done;
            }
            if (s > SIZE_MAX || moe_mul_size(nbytes, (size_t)s, &nbytes)) {
                rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: tensor '%s': shape overflows the byte size", path,
                                name);
                goto done;
            }
            x->shape[d] = (int64_t)s;
        }
        uint64_t begin, end;
        if (json_array_size(jo) != 2 || json_uint(json_array_get(jo, 0), &begin) ||
            json_uint(json_array_get(jo, 1), &end)) {
            rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: tensor '%s': data_offsets must be [begin, end] >= 0",
                            path, name);
            goto done;
        }
        if (begin > end) {
            rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: tensor '%s': data_offsets begin %" PRIu64
                            " after end %" PRIu64, path, name, begin, end);
            goto done;
        }
        if (end > data_size) {
            rc = moe_errorf(err, errlen, MOE_ERR_FORMAT,
                            "%s: tensor '%s': data_offsets end %" PRIu64 " past end of file (%zu data bytes)", path,
                            name, end, data_size);
            goto done;
        }
        if (end - begin != nbytes) {
            rc = moe_errorf(err, errlen, MOE_ERR_FORMAT,
                            "%s: tensor '%s': data_offsets hold %" PRIu64 " bytes, shape and %s need %zu", path, name,
                            end - begin, dname, nbytes);
            goto done;
        }
        x->name = moe_arena_strndup(&st->arena, name, strlen(name));
        x->dtype = dt->name;
        if (!x->name) {
            rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        x->type = dt->type;
        x->n_dims = (int)nd;
        x->data = sh->map + sh->data_start + begin;
        x->nbytes = nbytes;
        x->file = sh->path;
        if (x->type != MOE_W_UNSUPPORTED && ((uintptr_t)x->data % dt->size)) {
            rc = moe_errorf(err, errlen, MOE_ERR_FORMAT,
                            "%s: tensor '%s': data at file offset %zu not aligned to its %zu-byte elements", path,
                            name, sh->data_start + (size_t)begin, dt->size);
            goto done;
        }
        (*n)++;
    }
done:
    json_decref(root);
    return rc;
}

static int add_shard(struct moe_safetensors *st, const char *path, size_t *idx, char *err, size_t errlen)
{
    struct moe_st_shard *p = realloc(st->shards, (st->n_shards + 1) * sizeof *p);
    if (!p) return moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", path);
    st->shards = p;
    struct moe_st_shard *sh = &st->shards[st->n_shards];
    memset(sh, 0, sizeof *sh);
    sh->path = moe_arena_strndup(&st->arena, path, strlen(path));
    if (!sh->path) return moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", path);
    st->n_shards++;
    *idx = st->n_shards - 1;
    return moe_map_file(path, &sh->map, &sh->size, err, errlen);
}

static int finish(struct moe_safetensors *st, char *err, size_t errlen)
{
    size_t dup;
    int rc = moe_tensor_index_build(&st->index, st->tensors, st->n_tensors, &dup);
    if (rc == MOE_ERR_NOMEM) return moe_errorf(err, errlen, rc, "out of memory");
    if (rc) {
        const struct moe_tensor *a = moe_tensor_index_find(&st->index, st->tensors, st->tensors[dup].name);
        return moe_errorf(err, errlen, rc, "tensor '%s' appears twice: in %s and in %s", st->tensors[dup].name,
                          a ? a->file : "?", st->tensors[dup].file);
    }
    return 0;
}

int moe_safetensors_open_file(struct moe_safetensors **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    struct moe_safetensors *st = calloc(1, sizeof *st);
    if (!st) return moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", path);
    size_t cap = 0, idx;
    int rc = add_shard(st, path, &idx, err, errlen);
    if (!rc) rc = parse_shard(st, &st->shards[idx], &st->tensors, &st->n_tensors, &cap, err, errlen);
    if (!rc) rc = finish(st, err, errlen);
    if (rc) {
        moe_safetensors_close(st);
        return rc;
    }
    *out = st;
    return MOE_OK;
}

/* A shard file name from the index must stay inside the directory. */
static int safe_relative(const char *f)
{
    if (!*f || f[0] == '/') return 0;
    for (const char *p = f; *p;) {
        const char *q = strchr(p, '/');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.') return 0;
        p += n;
        if (*p == '/') p++;
    }
    return 1;
}

int moe_safetensors_open_dir(struct moe_safetensors **out, const char *dir, char *err, size_t errlen)
{
    *out = NULL;
    char *index_path = path_join(dir, "model.safetensors.index.json");
    if (!index_path) return moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", dir);
    struct stat sb;
    if (stat(index_path, &sb) != 0) {
        free(index_path);
        char *single = path_join(dir, "model.safetensors");
        if (!single) return moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", dir);
        if (stat(single, &sb) != 0) {
            free(single);
            return moe_errorf(err, errlen, MOE_ERR_NOT_FOUND,
                              "%s: no model.safetensors.index.json nor model.safetensors in this directory", dir);
        }
        int rc = moe_safetensors_open_file(out, single, err, errlen);
        free(single);
        return rc;
    }

    struct moe_safetensors *st = calloc(1, sizeof *st);
    json_t *root = NULL;
    size_t cap = 0;
    int rc = 0;
    if (!st) {
        free(index_path);
        return moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", dir);
    }
    json_error_t je;
    const uint8_t *imap;
    size_t isize;
    if ((rc = moe_map_file(index_path, &imap, &isize, err, errlen))) goto done;
    root = json_loadb(imap ? (const char *)imap : "", isize, JSON_REJECT_DUPLICATES, &je);
    moe_unmap_file(imap, isize);
    if (!root) {
        rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: %s (line %d column %d)", index_path, je.text, je.line,
                        je.column);
        goto done;
    }
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(root) || !json_is_object(wm)) {
        rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: no \"weight_map\" object", index_path);
        goto done;
    }
    if (json_object_size(wm) == 0) {
        rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: \"weight_map\" is empty", index_path);
        goto done;
    }
    /* shards, in order of first mention; each tensor's shard index
     * remembered for the cross-check */
    const char *name;
    json_t *jf;
    const char *last = NULL;
    json_object_foreach(wm, name, jf) {
        if (!json_is_string(jf)) {
            rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: weight_map['%s'] is not a file name", index_path, name);
            goto done;
        }
        const char *f = json_string_value(jf);
        if (last && strcmp(last, f) == 0) continue;
        if (!safe_relative(f)) {
            rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: weight_map['%s'] names '%s', not a file in the directory",
                            index_path, name, f);
            goto done;
        }
        char *sp = path_join(dir, f);
        if (!sp) {
            rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", dir);
            goto done;
        }
        size_t k;
        for (k = 0; k < st->n_shards; k++)
            if (strcmp(st->shards[k].path, sp) == 0) break;
        if (k == st->n_shards) {
            char e2[512];
            rc = add_shard(st, sp, &k, e2, sizeof e2);
            if (rc == MOE_ERR_NOT_FOUND)
                moe_errorf(err, errlen, rc, "%s: shard '%s' (listed for tensor '%s') does not exist", index_path, f,
                           name);
            else if (rc)
                moe_errorf(err, errlen, rc, "%s", e2);
            if (!rc) rc = parse_shard(st, &st->shards[k], &st->tensors, &st->n_tensors, &cap, err, errlen);
            if (rc) {
                free(sp);
                goto done;
            }
        }
        free(sp);
        last = f;
    }
    if ((rc = finish(st, err, errlen))) goto done;
    /* every listed tensor is where the index says */
    json_object_foreach(wm, name, jf) {
        const struct moe_tensor *t = moe_tensor_index_find(&st->index, st->tensors, name);
        char *sp = path_join(dir, json_string_value(jf));
        if (!sp) {
            rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", dir);
            goto done;
        }
        if (!t)
            rc = moe_errorf(err, errlen, MOE_ERR_NOT_FOUND, "%s: tensor '%s' listed in shard '%s', which lacks it",
                            index_path, name, json_string_value(jf));
        else if (strcmp(t->file, sp) != 0)
            rc = moe_errorf(err, errlen, MOE_ERR_NOT_FOUND,
                            "%s: tensor '%s' listed in shard '%s', which lacks it (it is in %s)", index_path, name,
                            json_string_value(jf), t->file);
        free(sp);
        if (rc) goto done;
    }
done:
    json_decref(root);
    free(index_path);
    if (rc) {
        moe_safetensors_close(st);
        return rc;
    }
    *out = st;
    return MOE_OK;
}

void moe_safetensors_close(struct moe_safetensors *st)
{
    if (!st) return;
    for (size_t i = 0; i < st->n_shards; i++) moe_unmap_file(st->shards[i].map, st->shards[i].size);
    free(st->shards);
    free(st->tensors);
    moe_tensor_index_free(&st->index);
    moe_arena_free(&st->arena);
    free(st);
}

const struct moe_tensor *moe_safetensors_find(const struct moe_safetensors *st, const char *name)
{
    return moe_tensor_index_find(&st->index, st->tensors, name);
}

/* ---- Writer */

struct st_item {
    char *name;
    const char *dtype;         /* static (from the dtype table) */
    size_t esize;
    int n_dims;
    int64_t shape[MOE_MAX_DIMS];
    const void *data;
    size_t nbytes;
    moe_fill_fn fill;          /* or data produced at write time */
    void *fill_user;
};

struct moe_st_writer {
    struct st_item *items;
    size_t n, cap;
    json_t *meta;              /* __metadata__ object, or NULL */
    struct moe_arena arena;
    int status;
    char msg[256];
};

struct moe_st_writer *moe_st_writer_new(void)
{
    return calloc(1, sizeof(struct moe_st_writer));
}

void moe_st_writer_free(struct moe_st_writer *w)
{
    if (!w) return;
    json_decref(w->meta);
    moe_arena_free(&w->arena);
    free(w->items);
    free(w);
}

static int wfail(struct moe_st_writer *w, int status, const char *what, const char *name)
{
    if (!w->status) {
        w->status = status;
        moe_errorf(w->msg, sizeof w->msg, status, "safetensors writer: '%s': %s", name ? name : "(null)", what);
    }
    return status;
}

int moe_st_writer_add(struct moe_st_writer *w, const char *name, const char *dtype, int n_dims,
                      const int64_t *shape, const void *data, size_t nbytes)
{
    if (w->status) return w->status;
    if (!name || !*name || strcmp(name, "__metadata__") == 0) return wfail(w, MOE_ERR_INVALID, "bad tensor name", name);
    const struct dtype_info *dt = dtype ? find_dtype(dtype) : NULL;
    if (!dt) return wfail(w, MOE_ERR_INVALID, "unknown dtype", name);
    if (n_dims < 0 || n_dims > MOE_MAX_DIMS) return wfail(w, MOE_ERR_INVALID, "n_dims must be 0..4", name);
    size_t want = dt->size;
    for (int d = 0; d < n_dims; d++)
        if (shape[d] < 0 || moe_mul_size(want, (size_t)shape[d], &want))
            return wfail(w, MOE_ERR_INVALID, "bad shape", name);
    if (want != nbytes) return wfail(w, MOE_ERR_INVALID, "byte size does not match the shape", name);
    if (nbytes && !data) return wfail(w, MOE_ERR_INVALID, "no data", name);
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->items[i].name, name) == 0) return wfail(w, MOE_ERR_INVALID, "tensor added twice", name);
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 32;
        struct st_item *p = realloc(w->items, cap * sizeof *p);
        if (!p) return wfail(w, MOE_ERR_NOMEM, "out of memory", name);
        w->items = p;
        w->cap = cap;
    }
    struct st_item *it = &w->items[w->n];
    memset(it, 0, sizeof *it);
    it->name = moe_arena_strndup(&w->arena, name, strlen(name));
    if (!it->name) return wfail(w, MOE_ERR_NOMEM, "out of memory", name);
    it->dtype = dt->name;
    it->esize = dt->size;
    it->n_dims = n_dims;
    for (int d = 0; d < n_dims; d++) it->shape[d] = shape[d];
    it->data = data;
    it->nbytes = nbytes;
    w->n++;
    return 0;
}

int moe_st_writer_add_fill(struct moe_st_writer *w, const char *name, const char *dtype, int n_dims,
                           const int64_t *shape, size_t nbytes, moe_fill_fn fill, void *user)
{
    if (w->status) return w->status;
    if (!fill) return wfail(w, MOE_ERR_INVALID, "no fill function", name);
    static const unsigned char dummy;
    int rc = moe_st_writer_add(w, name, dtype, n_dims, shape, &dummy, nbytes);
    if (rc) return rc;
    w->items[w->n - 1].data = NULL;
    w->items[w->n - 1].fill = fill;
    w->items[w->n - 1].fill_user = user;
    return 0;
}

int moe_st_writer_add_metadata(struct moe_st_writer *w, const char *key, const char *value)
{
    if (w->status) return w->status;
    if (!key || !value) return wfail(w, MOE_ERR_INVALID, "NULL metadata", key);
    if (!w->meta && !(w->meta = json_object())) return wfail(w, MOE_ERR_NOMEM, "out of memory", key);
    if (json_object_set_new(w->meta, key, json_string(value))) return wfail(w, MOE_ERR_INVALID, "bad metadata", key);
    return 0;
}

/* Write items[lo, hi) to path: tensors ordered by element size, largest
 * first (stable), so each starts aligned to its element size with no gaps. */
static int write_one(struct moe_st_writer *w, size_t lo, size_t hi, const char *path, char *err, size_t errlen)
{
    size_t cnt = hi - lo;
    size_t *order = malloc((cnt ? cnt : 1) * sizeof *order);
    json_t *root = json_object();
    char *hdr = NULL;
    int rc = 0;
    if (!order || !root) {
        rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    size_t k = 0;
    static const size_t sizes[] = {8, 4, 2, 1};
    for (size_t s = 0; s < 4; s++)
        for (size_t i = lo; i < hi; i++)
            if (w->items[i].esize == sizes[s]) order[k++] = i;
    if (w->meta && json_object_set(root, "__metadata__", w->meta)) {
        rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    uint64_t off = 0;
    for (size_t j = 0; j < k; j++) {
        const struct st_item *it = &w->items[order[j]];
        json_t *shape = json_array(), *offs = json_array(), *info = json_object();
        int bad = !shape || !offs || !info;
        for (int d = 0; !bad && d < it->n_dims; d++) bad = json_array_append_new(shape, json_integer(it->shape[d]));
        if (!bad)
            bad = json_array_append_new(offs, json_integer((json_int_t)off)) ||
                  json_array_append_new(offs, json_integer((json_int_t)(off + it->nbytes)));
        if (!bad)
            bad = json_object_set_new(info, "dtype", json_string(it->dtype)) ||
                  json_object_set_new(info, "shape", shape) || json_object_set_new(info, "data_offsets", offs);
        else {
            json_decref(shape);
            json_decref(offs);
        }
        if (bad || json_object_set_new(root, it->name, info)) {
            if (bad) json_decref(info);
            rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        off += it->nbytes;
    }
    hdr = json_dumps(root, JSON_COMPACT);
    if (!hdr) {
        rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    size_t hlen = strlen(hdr), padded = (hlen + 7) & ~(size_t)7;
    struct moe_tmpfile f;
    if ((rc = moe_tmpfile_open(&f, path, err, errlen))) goto done;
    uint8_t lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    moe_tmpfile_write(&f, lb, 8);
    moe_tmpfile_write(&f, hdr, hlen);
    moe_tmpfile_pad(&f, padded - hlen, ' ');
    for (size_t j = 0; j < k; j++) {
        const struct st_item *it = &w->items[order[j]];
        if (it->fill) moe_tmpfile_write_fill(&f, it->fill, it->fill_user, it->nbytes, 0);
        else moe_tmpfile_write(&f, it->data, it->nbytes);
    }
    rc = moe_tmpfile_commit(&f, err, errlen);
done:
    free(hdr);
    json_decref(root);
    free(order);
    return rc;
}

int moe_st_writer_write_file(struct moe_st_writer *w, const char *path, char *err, size_t errlen)
{
    if (w->status) return moe_errorf(err, errlen, w->status, "%s: %s", path, w->msg);
    return write_one(w, 0, w->n, path, err, errlen);
}

int moe_st_writer_write_dir(struct moe_st_writer *w, const char *dir, size_t shard_bytes, char *err, size_t errlen)
{
    if (w->status) return moe_errorf(err, errlen, w->status, "%s: %s", dir, w->msg);
    if (shard_bytes == 0) {
        char *p = path_join(dir, "model.safetensors");
        if (!p) return moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", dir);
        int rc = write_one(w, 0, w->n, p, err, errlen);
        free(p);
        return rc;
    }
    /* split points: a shard takes tensors while it stays within shard_bytes */
    size_t *start = malloc((w->n + 1) * sizeof *start), n_sh = 0;
    json_t *index = json_object(), *wm = json_object(), *meta = json_object();
    int rc = 0;
    if (!start || !index || !wm || !meta) {
        json_decref(wm);
        json_decref(meta);
        rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    json_object_set_new(index, "metadata", meta);
    json_object_set_new(index, "weight_map", wm);
    size_t acc = 0;
    uint64_t total = 0;
    for (size_t i = 0; i < w->n; i++) {
        if (i == 0 || acc + w->items[i].nbytes > shard_bytes) {
            start[n_sh++] = i;
            acc = 0;
        }
        acc += w->items[i].nbytes;
        total += w->items[i].nbytes;
    }
    if (n_sh == 0) start[n_sh++] = 0;
    start[n_sh] = w->n;
    json_object_set_new(meta, "total_size", json_integer((json_int_t)total));
    for (size_t s = 0; s < n_sh; s++) {
        char fname[64];
        snprintf(fname, sizeof fname, "model-%05zu-of-%05zu.safetensors", s + 1, n_sh);
        char *p = path_join(dir, fname);
        if (!p) {
            rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", dir);
            goto done;
        }
        rc = write_one(w, start[s], start[s + 1], p, err, errlen);
        free(p);
        if (rc) goto done;
        for (size_t i = start[s]; i < start[s + 1]; i++)
            if (json_object_set_new(wm, w->items[i].name, json_string(fname))) {
                rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", dir);
                goto done;
            }
    }
    char *ip = path_join(dir, "model.safetensors.index.json");
    char *text = json_dumps(index, JSON_INDENT(2));
    if (!ip || !text) {
        free(ip);
        free(text);
        rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    struct moe_tmpfile f;
    rc = moe_tmpfile_open(&f, ip, err, errlen);
    if (!rc) {
        moe_tmpfile_write(&f, text, strlen(text));
        moe_tmpfile_write(&f, "\n", 1);
        rc = moe_tmpfile_commit(&f, err, errlen);
    }
    free(ip);
    free(text);
done:
    free(start);
    json_decref(index);
    return rc;
}
