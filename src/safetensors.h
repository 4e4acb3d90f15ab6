/*
 * src/safetensors.h — Hugging Face safetensors: a validating reader of a
 * model directory (one file or index-listed shards, each mmapped
 * read-only) and a writer used to make test models.
 *
 * File layout: u64 little-endian header length N, N bytes of JSON
 * {"NAME": {"dtype": "BF16", "shape": [rows, cols], "data_offsets":
 * [begin, end]}, ..., "__metadata__": {...}}, then the data; offsets are
 * relative to the first byte after the header.  A sharded checkpoint has
 * model.safetensors.index.json {"weight_map": {"NAME": "SHARD FILE"}}.
 *
 * Checked at open: header length within the file, JSON well-formed (no
 * duplicate keys), every dtype known, shape non-negative, begin <= end <=
 * data size, end - begin == product(shape) * dtype size (overflow-safe),
 * data aligned to the element size; for an index: every shard exists and
 * every listed tensor is in the shard the index names.  Shapes are in
 * PyTorch order already ([rows, cols]).
 */
#ifndef MOE_SAFETENSORS_H
#define MOE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "model_files.h"

struct moe_st_shard {
    char *path;
    const uint8_t *map;        /* the whole file, read-only */
    size_t size;
    size_t data_start;         /* 8 + header length */
};

/* An open checkpoint.  Fields are read-only for users. */
struct moe_safetensors {
    size_t n_shards;
    struct moe_st_shard *shards;
    size_t n_tensors;
    struct moe_tensor *tensors;  /* [n_tensors], shard by shard in header order */
    struct moe_tensor_index index;
    struct moe_arena arena;
};

/* A directory: model.safetensors.index.json if present (its shards), else
 * model.safetensors.  *out is NULL on failure. */
int moe_safetensors_open_dir(struct moe_safetensors **out, const char *dir, char *err, size_t errlen);
/* One .safetensors file. */
int moe_safetensors_open_file(struct moe_safetensors **out, const char *path, char *err, size_t errlen);
void moe_safetensors_close(struct moe_safetensors *st);

/* NULL when absent. */
const struct moe_tensor *moe_safetensors_find(const struct moe_safetensors *st, const char *name);

/* Element size in bytes of a safetensors dtype name, 0 if unknown; *type
 * receives the moecpu type (MOE_W_UNSUPPORTED for I64, U8, F64, ...). */
size_t moe_st_dtype_size(const char *dtype, enum moe_wtype *type);
/* The safetensors name of a moecpu type: "F32", "F16", "BF16", "F8_E4M3" (NULL for Q8_0). */
const char *moe_st_dtype_name(enum moe_wtype t);

/* ---- Writer.  Tensor data is referenced, not copied: keep it alive until
 * write.  Add errors are remembered and returned again by write. */
struct moe_st_writer;
struct moe_st_writer *moe_st_writer_new(void); /* NULL when out of memory */
void moe_st_writer_free(struct moe_st_writer *w);
/* dtype: any safetensors dtype name ("BF16", "F8_E4M3", "I64", ...);
 * shape outermost first, n_dims 0..4; nbytes must equal product(shape) *
 * dtype size. */
int moe_st_writer_add(struct moe_st_writer *w, const char *name, const char *dtype, int n_dims,
                      const int64_t *shape, const void *data, size_t nbytes);
/* As moe_st_writer_add, the data produced by fill(user, ...) at write time. */
int moe_st_writer_add_fill(struct moe_st_writer *w, const char *name, const char *dtype, int n_dims,
                           const int64_t *shape, size_t nbytes, moe_fill_fn fill, void *user);
/* A "__metadata__" string entry. */
int moe_st_writer_add_metadata(struct moe_st_writer *w, const char *key, const char *value);
/* One file at path (via path.tmp + rename). */
int moe_st_writer_write_file(struct moe_st_writer *w, const char *path, char *err, size_t errlen);
/* Into directory dir (which must exist): shard_bytes == 0 writes
 * dir/model.safetensors; otherwise tensors (in the order added) fill
 * shards of at most shard_bytes of data each (a bigger tensor gets a shard
 * of its own), named model-0000I-of-0000N.safetensors, plus
 * model.safetensors.index.json. */
int moe_st_writer_write_dir(struct moe_st_writer *w, const char *dir, size_t shard_bytes, char *err,
                            size_t errlen);

#endif
