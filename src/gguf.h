/*
 * src/gguf.h — GGUF files (llama.cpp's model format): a validating reader
 * over a read-only mmap, and a writer used to make test models.
 *
 * Layout (little-endian): "GGUF", u32 version (3; 2 accepted), u64
 * n_tensors, u64 n_kv; n_kv of {string key, u32 type, value}; n_tensors of
 * {string name, u32 n_dims, u64 ne[n_dims] (innermost first), u32 ggml
 * type, u64 offset}; padding to `general.alignment` (default 32); the data
 * section, each tensor at data + offset.  A string is u64 length + bytes.
 *
 * The reader checks every count and length against the bytes left, every
 * tensor's byte range against the file size (overflow-safe), offsets
 * against the alignment, Q8_0 rows against the 32-value block.  Tensors are
 * reported in struct moe_tensor (see model_files.h) with the shape turned
 * outermost-first: a 2-D weight with ne = [cols, rows] becomes
 * shape = [rows, cols], a 3-D expert tensor [n_expert, rows, cols].
 */
#ifndef MOE_GGUF_H
#define MOE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model_files.h"

/* Metadata value types, numbered as in the file. */
enum moe_gguf_type {
    MOE_GGUF_UINT8 = 0,
    MOE_GGUF_INT8 = 1,
    MOE_GGUF_UINT16 = 2,
    MOE_GGUF_INT16 = 3,
    MOE_GGUF_UINT32 = 4,
    MOE_GGUF_INT32 = 5,
    MOE_GGUF_FLOAT32 = 6,
    MOE_GGUF_BOOL = 7,
    MOE_GGUF_STRING = 8,
    MOE_GGUF_ARRAY = 9,
    MOE_GGUF_UINT64 = 10,
    MOE_GGUF_INT64 = 11,
    MOE_GGUF_FLOAT64 = 12,
    MOE_GGUF_TYPE_COUNT
};
const char *moe_gguf_type_name(enum moe_gguf_type t); /* "u32", "str", "arr", ...; "?" if unknown */

/* ggml tensor types moecpu computes with (numbers as in the file). */
#define MOE_GGML_F32 0
#define MOE_GGML_F16 1
#define MOE_GGML_Q8_0 8
#define MOE_GGML_BF16 30

struct moe_gguf_str {
    const char *s;             /* NUL-terminated copy (may hold NULs before len) */
    uint64_t len;
};

struct moe_gguf_value {
    enum moe_gguf_type type;
    union {
        uint64_t u;            /* UINT8, UINT16, UINT32, UINT64; BOOL as 0/1 */
        int64_t i;             /* INT8, INT16, INT32, INT64 */
        double f;              /* FLOAT32, FLOAT64 */
        struct moe_gguf_str str;
        struct {
            enum moe_gguf_type type;              /* element type */
            uint64_t n;
            const void *raw;                      /* number/bool elements: n packed little-endian
                                                   * values, unaligned (use the accessors below) */
            const struct moe_gguf_str *strs;      /* STRING elements [n] */
            const struct moe_gguf_value *arrs;    /* ARRAY elements [n], each of type ARRAY */
        } arr;
    };
};

struct moe_gguf_kv {
    const char *key;
    struct moe_gguf_value v;
};

/* An open GGUF file.  All fields are read-only for users. */
struct moe_gguf {
    char *path;
    const uint8_t *map;        /* the whole file, read-only */
    size_t size;
    uint32_t version;
    uint32_t alignment;        /* general.alignment or 32 */
    size_t data_offset;        /* start of the data section in the file */
    size_t n_kv;
    struct moe_gguf_kv *kv;    /* [n_kv], file order */
    size_t n_tensors;
    struct moe_tensor *tensors;  /* [n_tensors], file order */
    uint32_t *ggml_type;       /* [n_tensors]: the file's type number */
    uint64_t *offset;          /* [n_tensors]: offset within the data section */
    struct moe_tensor_index index;
    struct moe_arena arena;
};

/* Open and validate `path`.  *out is NULL on failure.  A tensor of a known
 * ggml type moecpu cannot compute with opens fine, as MOE_W_UNSUPPORTED;
 * an unknown type number is an error at open. */
int moe_gguf_open(struct moe_gguf **out, const char *path, char *err, size_t errlen);
void moe_gguf_close(struct moe_gguf *g);

/* 1 when the first bytes of the file at path are the GGUF magic. */
int moe_gguf_is_gguf(const char *path);

/* ---- Metadata lookup.  find returns NULL when absent.  The getters
 * return MOE_ERR_NOT_FOUND ("FILE: metadata key 'K' missing") or
 * MOE_ERR_TYPE ("FILE: metadata key 'K' is str, expected an integer"). */
const struct moe_gguf_value *moe_gguf_find(const struct moe_gguf *g, const char *key);
/* Any integer type; values that do not fit int64 are a type error. */
int moe_gguf_get_int(const struct moe_gguf *g, const char *key, int64_t *out, char *err, size_t errlen);
/* FLOAT32 or FLOAT64. */
int moe_gguf_get_float(const struct moe_gguf *g, const char *key, double *out, char *err, size_t errlen);
int moe_gguf_get_bool(const struct moe_gguf *g, const char *key, bool *out, char *err, size_t errlen);
int moe_gguf_get_str(const struct moe_gguf *g, const char *key, const char **out, char *err, size_t errlen);
/* An ARRAY whose element type is elem (MOE_GGUF_TYPE_COUNT: any). */
int moe_gguf_get_arr(const struct moe_gguf *g, const char *key, enum moe_gguf_type elem,
                     const struct moe_gguf_value **out, char *err, size_t errlen);

/* Elements of an array value (i < n; 0 on success, MOE_ERR_TYPE when the
 * element type does not fit the accessor). */
int moe_gguf_arr_int(const struct moe_gguf_value *arr, uint64_t i, int64_t *out);
int moe_gguf_arr_float(const struct moe_gguf_value *arr, uint64_t i, double *out);
const char *moe_gguf_arr_str(const struct moe_gguf_value *arr, uint64_t i); /* NULL unless STRING */

/* Tensor by name; NULL when absent. */
const struct moe_tensor *moe_gguf_find_tensor(const struct moe_gguf *g, const char *name);

/* The name of a ggml type number ("q4_K"), or NULL if unknown to moecpu. */
const char *moe_ggml_type_name(uint32_t type);

/* ---- Writer (src/gguf_write.c): GGUF v3, tensors aligned to 32 bytes
 * (or to a u32 `general.alignment` the caller adds), written to
 * "<path>.tmp" and renamed over path.
 *
 * Errors in the add functions (bad arguments, out of memory) are
 * remembered: they return the status, and so does moe_gguf_writer_write.
 * Tensor data is referenced, not copied: keep it alive until write. */
struct moe_gguf_writer;
struct moe_gguf_writer *moe_gguf_writer_new(void); /* NULL when out of memory */
void moe_gguf_writer_free(struct moe_gguf_writer *w);

/* Any value, deep-copied (numeric arrays from .raw, little-endian packed). */
int moe_gguf_writer_add_kv(struct moe_gguf_writer *w, const char *key, const struct moe_gguf_value *v);
int moe_gguf_writer_add_u32(struct moe_gguf_writer *w, const char *key, uint32_t v);
int moe_gguf_writer_add_i32(struct moe_gguf_writer *w, const char *key, int32_t v);
int moe_gguf_writer_add_u64(struct moe_gguf_writer *w, const char *key, uint64_t v);
int moe_gguf_writer_add_f32(struct moe_gguf_writer *w, const char *key, float v);
int moe_gguf_writer_add_bool(struct moe_gguf_writer *w, const char *key, bool v);
int moe_gguf_writer_add_str(struct moe_gguf_writer *w, const char *key, const char *v);
/* elems: a C array of n values of the element type (uint8_t, ..., float,
 * double, bool as uint8_t); written little-endian. */
int moe_gguf_writer_add_arr(struct moe_gguf_writer *w, const char *key, enum moe_gguf_type elem,
                            const void *elems, uint64_t n);
int moe_gguf_writer_add_arr_str(struct moe_gguf_writer *w, const char *key, const char *const *strs, uint64_t n);

/* shape is outermost first (as in struct moe_tensor); type F32, F16, BF16
 * or Q8_0 (shape[n_dims-1] % 32 == 0); nbytes must match the shape. */
int moe_gguf_writer_add_tensor(struct moe_gguf_writer *w, const char *name, enum moe_wtype type, int n_dims,
                               const int64_t *shape, const void *data, size_t nbytes);
/* Unchecked, for tests and converters: any ggml type number, ne innermost
 * first, exactly as it goes into the file. */
int moe_gguf_writer_add_tensor_raw(struct moe_gguf_writer *w, const char *name, uint32_t ggml_type, int n_dims,
                                   const uint64_t *ne, const void *data, size_t nbytes);
/* As moe_gguf_writer_add_tensor, for tensors too big to hold in memory: the
 * bytes are made at write time by fill(user, buf, offset, n), in pieces that
 * are whole multiples of unit (0: the whole tensor at once); see
 * moe_tmpfile_write_fill. */
int moe_gguf_writer_add_tensor_fill(struct moe_gguf_writer *w, const char *name, enum moe_wtype type, int n_dims,
                                    const int64_t *shape, size_t nbytes, moe_fill_fn fill, void *user, size_t unit);
int moe_gguf_writer_write(struct moe_gguf_writer *w, const char *path, char *err, size_t errlen);

#endif
