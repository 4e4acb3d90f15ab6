/*
 * src/moecpu.h — the public C API of the moecpu engine: what the CLI (and
 * later the server) uses.  Nothing below this API prints, exits or aborts.
 *
 * Two objects:
 *  - struct moe_model: a DeepSeek-family model opened from a Hugging Face
 *    directory (safetensors + config.json) or a GGUF file.  Weights stay in
 *    read-only mmaps; the model is never modified after open and is shared
 *    by every context made from it.  It owns the kernel table choice and
 *    the thread pool.
 *  - struct moe_context: one sequence: its latent KV cache (allocated for
 *    n_ctx tokens at creation), scratch buffers and the logits of the last
 *    eval.  Many contexts may share one model; evals on contexts of the
 *    same model are serialized internally (one thread pool per model).
 *    One context is used by one thread at a time.
 *
 * Errors: functions that can fail return MOE_OK (0) or a negative status
 * (the values of enum moe_status in model_files.h, repeated here so this
 * header stands alone) and write one message with its context into the
 * caller's err[errlen] (err may be NULL).
 */
#ifndef MOECPU_H
#define MOECPU_H

#include <stddef.h>
#include <stdint.h>

/* Status codes (identical to enum moe_status). */
#define MOECPU_OK 0
#define MOECPU_ERR_IO (-1)          /* open/read/mmap/write failed */
#define MOECPU_ERR_FORMAT (-2)      /* malformed or truncated file */
#define MOECPU_ERR_NOT_FOUND (-3)   /* missing file, key or tensor */
#define MOECPU_ERR_TYPE (-4)        /* tensor of another shape or dtype */
#define MOECPU_ERR_UNSUPPORTED (-5) /* valid input moecpu cannot use */
#define MOECPU_ERR_NOMEM (-6)
#define MOECPU_ERR_INVALID (-7)     /* a bad argument: token id out of range, context full, ... */

struct moe_model;
struct moe_context;

/* Loading progress: stage is a short label ("mapping", "binding tensors"),
 * fraction in [0, 1].  Called from the thread that opens the model. */
typedef void (*moe_progress_fn)(void *user, const char *stage, double fraction);

struct moe_model_params {
    const char *isa;           /* kernel table or family name ("scalar", "avx2", ...); NULL or "auto":
                                * the process default (MOECPU_ISA, else the best runnable) */
    int n_threads;             /* threads of the pool, counting the caller; <= 0: physical cores */
    moe_progress_fn progress;  /* may be NULL */
    void *progress_user;
};

/* Defaults: isa NULL, n_threads 0, no progress. */
void moe_model_params_init(struct moe_model_params *p);

/* Open `path`: a directory (HF safetensors + config.json) or a GGUF file.
 * Every tensor the forward pass uses is checked (present, dtype, exact
 * shape); MTP (nextn) layers are recognized and left out.  *out is NULL
 * on failure. */
int moe_model_open(struct moe_model **out, const char *path, const struct moe_model_params *p, char *err,
                   size_t errlen);
/* Free a model; every context made from it must be freed first. */
void moe_model_free(struct moe_model *m);

struct moe_model_info {
    const char *format;        /* "gguf" or "safetensors" */
    const char *model_type;    /* config model_type ("deepseek_v3", "deepseek2", ...) */
    const char *isa;           /* kernel table in use */
    int n_threads;
    int64_t vocab_size;
    int64_t hidden_size;
    int n_layers;              /* main layers (MTP layers excluded) */
    int n_mtp_layers;          /* recognized, not used */
    int n_dense_layers;
    int n_heads;
    int n_routed_experts, n_shared_experts, n_experts_per_tok;
    int64_t kv_lora_rank, qk_rope_head_dim;
    int64_t max_position_embeddings;
    int64_t bos_token_id, eos_token_id; /* -1 when unknown */
    size_t weight_bytes;       /* bytes of the tensors the forward pass reads */
    size_t routed_expert_bytes; /* of which routed experts (a token reads top-k of each layer's) */
    size_t embedding_bytes;    /* of which the embedding table a token reads one row of (0 when tied to lm_head) */
};
void moe_model_get_info(const struct moe_model *m, struct moe_model_info *info);

enum moe_kv_type { MOE_KV_F32 = 0, MOE_KV_BF16 = 1 };

/* How prefill attends: over the latent cache with the weights absorbed
 * (decode always does), or with K/V decompressed from the cached latents
 * (faster for big batches); AUTO picks by the measured rule in forward.c. */
enum moe_attn_path { MOE_ATTN_AUTO = 0, MOE_ATTN_ABSORBED, MOE_ATTN_DECOMPRESSED };

struct moe_context_params {
    int64_t n_ctx;             /* tokens the KV cache holds; <= 0: min(4096, max_position_embeddings) */
    enum moe_kv_type kv_type;
    int n_batch;               /* prefill processes at most this many tokens at once; <= 0: 512 */
    enum moe_attn_path attn;   /* default AUTO */
};
void moe_context_params_init(struct moe_context_params *p);

/* A new sequence at position 0.  Allocates the KV cache and scratch; prints
 * nothing.  *out is NULL on failure. */
int moe_context_new(struct moe_context **out, struct moe_model *m, const struct moe_context_params *p, char *err,
                    size_t errlen);
void moe_context_free(struct moe_context *c);

/* Bytes of the context's KV cache (n_layers * n_ctx * (kv_lora_rank +
 * qk_rope_head_dim) * element size). */
size_t moe_context_kv_bytes(const struct moe_context *c);
int64_t moe_context_n_ctx(const struct moe_context *c);
/* Tokens in the cache: the position the next eval starts at. */
int64_t moe_context_pos(const struct moe_context *c);

/* Append n tokens at the current position and run the model over them.
 * all_logits != 0: logits for every one of the n positions; else only for
 * the last.  Fails with MOECPU_ERR_INVALID (and changes nothing) when an id
 * is outside [0, vocab) or the tokens do not fit in the context. */
int moe_context_eval(struct moe_context *c, const int32_t *ids, int64_t n, int all_logits, char *err, size_t errlen);

/* Logits of the last eval: [*n_rows][vocab_size] FP32, row i for the i-th
 * position that produced logits.  Valid until the next eval/reset/free.
 * NULL (n_rows 0) before any eval. */
const float *moe_context_logits(const struct moe_context *c, int64_t *n_rows);

/* Forget the sequence: position 0, no logits.  The cache is kept. */
void moe_context_reset(struct moe_context *c);

/* ---- Tokenizer (src/tokenizer.c) ------------------------------------------
 * Byte-level BPE exactly as DeepSeek's tokenizer.json (HF) or the GGUF
 * tokenizer.ggml.* metadata (pre-tokenizer "deepseek-v3" / "deepseek-llm")
 * defines it.  Read-only after open; shareable between threads. */
struct moe_tokenizer;

/* Open the tokenizer of a model path: a directory (tokenizer.json, plus
 * tokenizer_config.json for BOS/EOS, add_bos_token and chat_template) or a
 * .gguf file (its metadata).  *out is NULL on failure. */
int moe_tokenizer_open(struct moe_tokenizer **out, const char *model_path, char *err, size_t errlen);
void moe_tokenizer_free(struct moe_tokenizer *t);

int32_t moe_tokenizer_n_vocab(const struct moe_tokenizer *t); /* 1 + the largest id, added tokens included */
int32_t moe_tokenizer_bos(const struct moe_tokenizer *t);     /* -1 when none */
int32_t moe_tokenizer_eos(const struct moe_tokenizer *t);     /* -1 when none */
int moe_tokenizer_add_bos(const struct moe_tokenizer *t);     /* 1 when encoding a prompt starts with BOS */
/* The raw chat template (Jinja text from tokenizer_config.json or
 * tokenizer.chat_template in GGUF); NULL when the model has none. */
const char *moe_tokenizer_chat_template(const struct moe_tokenizer *t);

#define MOE_TOK_ADD_BOS 1u       /* prepend BOS (when the model has one) */
#define MOE_TOK_PARSE_SPECIAL 2u /* match added/special token strings in the text; else they are plain text */

/* Encode len bytes of text (any bytes: invalid UTF-8 is encoded through the
 * byte-level alphabet like the reference does).  *ids is malloc'd (free()),
 * *n its length. */
int moe_tokenizer_encode(const struct moe_tokenizer *t, const char *text, size_t len, unsigned flags, int32_t **ids,
                         int64_t *n, char *err, size_t errlen);

/* The bytes a token stands for (byte-level mapping undone; for added and
 * special tokens, their text).  NULL (len 0) for an id outside the vocab. */
const char *moe_tokenizer_piece(const struct moe_tokenizer *t, int32_t id, size_t *len);
/* 1 for special/control tokens (BOS, EOS, <｜User｜>, ...). */
int moe_tokenizer_is_special(const struct moe_tokenizer *t, int32_t id);
/* The id of a token whose text is exactly s (vocab or added), -1 if none. */
int32_t moe_tokenizer_find(const struct moe_tokenizer *t, const char *s);

/* Streaming decode: push ids one at a time; complete UTF-8 characters are
 * written to out (returns bytes written, never more than cap; cap >= 64 +
 * the longest piece is always enough), an incomplete character is held
 * until the next push or flush.  Bytes that can never form a valid
 * character are passed through as they are.  Special tokens are written
 * only when show_special. */
struct moe_detok {
    unsigned char pend[8];
    int npend;
};
size_t moe_detok_push(struct moe_detok *d, const struct moe_tokenizer *t, int32_t id, int show_special, char *out,
                      size_t cap);
size_t moe_detok_flush(struct moe_detok *d, char *out, size_t cap);

#endif
