/*
 * src/model_files.h — one view of a model's tensors, whatever file holds them.
 *
 * Two readers fill it: src/gguf.c (a GGUF file, llama.cpp's format) and
 * src/safetensors.c (a Hugging Face directory of safetensors shards).  Both
 * mmap the files read-only and validate every header field, shape and byte
 * range at open, so a struct moe_tensor handed out here always describes
 * bytes that lie inside a mapped file.  Nothing is copied: `data` points
 * into the mapping and stays valid until the owner is closed.
 *
 * Errors: every function that can fail returns 0 or a negative enum
 * moe_status and writes one message with its context (file, tensor, key)
 * into the caller's err[errlen] (err may be NULL).  Nothing here prints,
 * exits or aborts, whatever the input.
 */
#ifndef MOE_MODEL_FILES_H
#define MOE_MODEL_FILES_H

#include <stddef.h>
#include <stdint.h>

#include "../quant/ref.h"

enum moe_status {
    MOE_OK = 0,
    MOE_ERR_IO = -1,          /* open/stat/mmap/write/rename failed (errno in the message) */
    MOE_ERR_FORMAT = -2,      /* malformed or truncated file, inconsistent header */
    MOE_ERR_NOT_FOUND = -3,   /* missing file, metadata key or tensor */
    MOE_ERR_TYPE = -4,        /* key of another type; tensor of another shape */
    MOE_ERR_UNSUPPORTED = -5, /* valid input moecpu cannot use (dtype, version, split GGUF) */
    MOE_ERR_NOMEM = -6,
    MOE_ERR_INVALID = -7,     /* a value out of range (config), a bad argument */
};

/* Marks a tensor whose dtype the file format knows but moecpu has no
 * kernels for (GGUF Q4_K, safetensors I64, ...): moe_tensor.dtype names it. */
#define MOE_W_UNSUPPORTED MOE_W_COUNT

#define MOE_MAX_DIMS 4

struct moe_tensor {
    const char *name;
    enum moe_wtype type;       /* or MOE_W_UNSUPPORTED */
    const char *dtype;         /* the file's own name of the type: "F8_E4M3", "BF16", "q8_0", "q4_K", "I64" */
    int n_dims;                /* 1..4 (safetensors also allows 0: a scalar) */
    int64_t shape[MOE_MAX_DIMS]; /* outermost first (PyTorch order): [rows, cols],
                                  * [n_expert, rows, cols]; unused entries 1 */
    const void *data;          /* inside a read-only mapping; aligned to the element size
                                * for F32/F16/BF16 */
    size_t nbytes;
    const char *file;          /* path of the file holding it (for messages) */
};

/* Number of elements (product of shape). */
int64_t moe_tensor_nelements(const struct moe_tensor *t);

/* 0 if t has a dtype moecpu computes with; else MOE_ERR_UNSUPPORTED and
 * "FILE: tensor 'NAME': unsupported dtype I64". */
int moe_tensor_check_type(const struct moe_tensor *t, char *err, size_t errlen);

/* ---- A model's files, GGUF or safetensors alike. */

enum moe_files_kind { MOE_FILES_GGUF = 1, MOE_FILES_SAFETENSORS = 2 };

struct moe_gguf;
struct moe_safetensors;

struct moe_model_files {
    enum moe_files_kind kind;
    char *path;                      /* as given to open */
    char *dir;                       /* the directory holding the model (config.json lives here) */
    struct moe_gguf *gguf;           /* kind == MOE_FILES_GGUF */
    struct moe_safetensors *st;      /* kind == MOE_FILES_SAFETENSORS */
    size_t n_tensors;
    const struct moe_tensor *tensors; /* [n_tensors], file order (shard by shard) */
};

/* Open a model: `path` is a directory (model.safetensors, or the shards of
 * model.safetensors.index.json), a GGUF file (detected by its magic, not
 * its name), or a single .safetensors file.  *out is NULL on failure. */
int moe_model_files_open(struct moe_model_files **out, const char *path, char *err, size_t errlen);
void moe_model_files_close(struct moe_model_files *mf);

/* NULL when absent. */
const struct moe_tensor *moe_model_files_find(const struct moe_model_files *mf, const char *name);

/* A tensor the engine is about to use: present (MOE_ERR_NOT_FOUND), of a
 * supported dtype (MOE_ERR_UNSUPPORTED) and, when n_dims > 0, of exactly
 * that shape (MOE_ERR_TYPE); a shape entry of -1 matches any size. */
int moe_model_files_get(const struct moe_model_files *mf, const char *name, int n_dims, const int64_t *shape,
                        const struct moe_tensor **out, char *err, size_t errlen);

/* ---- Helpers shared by the readers and writers (not for the engine). */

/* snprintf into err when err && errlen; always returns `status`. */
int moe_errorf(char *err, size_t errlen, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* A bump allocator: many small blocks freed at once. */
struct moe_arena {
    struct moe_arena_block *head;
};
void *moe_arena_alloc(struct moe_arena *a, size_t n);          /* 16-byte aligned; NULL when out of memory */
char *moe_arena_strndup(struct moe_arena *a, const char *s, size_t n); /* copies n bytes, adds a NUL */
void moe_arena_free(struct moe_arena *a);

/* Name -> tensor hash index over an array of tensors. */
struct moe_tensor_index {
    uint32_t *slots;           /* tensor index + 1, 0 = empty */
    size_t mask;
};
/* MOE_ERR_FORMAT with *dup = the second index when two tensors share a name. */
int moe_tensor_index_build(struct moe_tensor_index *ix, const struct moe_tensor *t, size_t n, size_t *dup);
const struct moe_tensor *moe_tensor_index_find(const struct moe_tensor_index *ix, const struct moe_tensor *t,
                                               const char *name);
void moe_tensor_index_free(struct moe_tensor_index *ix);

/* Maps a whole file read-only.  MOE_ERR_NOT_FOUND if it does not exist,
 * MOE_ERR_IO otherwise; an empty file maps to (NULL, 0). */
int moe_map_file(const char *path, const uint8_t **map, size_t *size, char *err, size_t errlen);
void moe_unmap_file(const uint8_t *map, size_t size);

/* Writers: open "<path>.tmp" for writing; commit = fclose + rename over
 * path (any earlier write error is reported then); abort = fclose + unlink.
 * When path exists and is not a regular file (/dev/null, a FIFO), it is
 * written directly (tmp is NULL) so it is never replaced. */
struct moe_tmpfile {
    void *fp;                  /* FILE * */
    char *path, *tmp;
    int failed;                /* a write failed */
};
int moe_tmpfile_open(struct moe_tmpfile *f, const char *path, char *err, size_t errlen);
void moe_tmpfile_write(struct moe_tmpfile *f, const void *p, size_t n);
void moe_tmpfile_pad(struct moe_tmpfile *f, size_t n, uint8_t byte);
int moe_tmpfile_commit(struct moe_tmpfile *f, char *err, size_t errlen);
void moe_tmpfile_abort(struct moe_tmpfile *f);
/* Tensor data produced at write time (writers' *_fill variants): fill
 * dst[0, nbytes).  Lets a generator stream models larger than memory. */
typedef void (*moe_fill_fn)(void *user, void *dst, size_t offset, size_t nbytes);
/* Write nbytes produced by fill(user, buf, offset, n) at write time: in
 * order, in pieces of about 64 MiB that are whole multiples of unit (the
 * last may be shorter); unit 0 = the whole tensor in one call.  A failed
 * allocation counts as a write error. */
void moe_tmpfile_write_fill(struct moe_tmpfile *f, moe_fill_fn fill, void *user, size_t nbytes, size_t unit);

/* Overflow-checked size arithmetic: 0 on success, -1 on overflow. */
static inline int moe_mul_size(size_t a, size_t b, size_t *r)
{
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *r = a * b;
    return 0;
}
static inline int moe_add_size(size_t a, size_t b, size_t *r)
{
    if (b > SIZE_MAX - a) return -1;
    *r = a + b;
    return 0;
}

#endif
