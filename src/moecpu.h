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

/* The expert pager (src/pager.c): how routed experts get into RAM. */
enum moe_pager_mode {
    MOE_PAGER_AUTO = 0,   /* off when the weights fit in RAM; else on (default I/O) with an automatic budget */
    MOE_PAGER_OFF = 1,    /* plain mmap: the kernel faults experts in on first touch */
    MOE_PAGER_MMAP = 2,   /* stay on the mapping: MADV_WILLNEED + MADV_POPULATE_READ from I/O threads */
    MOE_PAGER_PREAD = 3,  /* pread into a fixed pool of expert slots (page cache dropped after reading) */
    MOE_PAGER_DIRECT = 4, /* like PREAD, with O_DIRECT (bypasses the page cache) */
};
enum moe_pager_policy {
    MOE_POLICY_FREQ = 0,  /* evict the lowest decayed use frequency (half-life in tokens), ties by age */
    MOE_POLICY_LRU = 1,   /* evict the least recently used */
};

struct moe_model_params {
    const char *isa;           /* kernel table or family name ("scalar", "avx2", ...); NULL or "auto":
                                * the process default (MOECPU_ISA, else the best runnable) */
    int n_threads;             /* threads of the pool, counting the caller; <= 0: physical cores */
    moe_progress_fn progress;  /* may be NULL */
    void *progress_user;
    /* expert pager */
    int pager_mode;            /* enum moe_pager_mode */
    size_t mem_budget;         /* bytes of routed experts kept resident; 0: none (AUTO: automatic) */
    int pager_policy;          /* enum moe_pager_policy */
    int lookahead;             /* look-ahead: the next MoE layer's router on the residual stream
                                  before it; each token's `lookahead` best-ranked experts are
                                  prefetched (at most that many reads per layer); 0: off */
    int io_threads;            /* pager I/O threads; <= 0: 16 */
    int slot_prefault;         /* pread/direct: fault the slot pool in ahead of use from an idle-priority
                                * thread (hides the kernel's zeroing of new memory); 0 or > 0: on, < 0: off */
    const char *trace_routing; /* write "token layer e1 e2 ..." lines here (NULL: no trace) */
};

/* Defaults: isa NULL, n_threads 0, no progress, pager AUTO without budget,
 * FREQ policy, no look-ahead, no trace. */
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

/* Pager counters: totals since open (moe_model_pager_stats) or one eval
 * batch's deltas (moe_model_pager_history).  Without a pager all are 0
 * (mode OFF); a pager that only traces (--pager off with a trace) counts
 * every expert a layer needs as a hit and reads nothing. */
struct moe_pager_stats {
    int mode;                  /* enum moe_pager_mode in use: OFF when there is no pager */
    int64_t tokens;            /* tokens evaluated */
    uint64_t hits, misses;     /* routed experts a batch needed in a layer: resident, or read on demand */
    uint64_t prefetches;       /* experts read by look-ahead */
    uint64_t prefetch_hits;    /* of the hits, experts a look-ahead brought in */
    uint64_t evictions;
    uint64_t bytes_read;       /* routed-expert bytes read: (misses + prefetches) x their sizes */
    double stall_sec;          /* time the forward pass waited for expert reads */
    size_t resident_bytes;     /* routed-expert bytes the pager holds now */
    size_t budget_bytes;       /* SIZE_MAX: unbounded */
};
void moe_model_pager_stats(const struct moe_model *m, struct moe_pager_stats *s);
/* The deltas of each eval batch so far (a decode step is one batch of one
 * token), oldest first, at most max of them into out (out may be NULL);
 * returns how many there are (at most 1 << 20 are kept). */
int64_t moe_model_pager_history(const struct moe_model *m, struct moe_pager_stats *out, int64_t max);

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
/* Keep the first n_keep tokens of the sequence (0 <= n_keep <= pos; else
 * MOECPU_ERR_INVALID and nothing changes); no logits until the next eval.
 * How a chat drops a divergent tail without recomputing the prefix. */
int moe_context_truncate(struct moe_context *c, int64_t n_keep);

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
#define MOE_TOK_PARSE_SPECIAL 2u /* match special/control token strings in the text; else they are plain text
                                  * (user-defined added tokens are always matched, as in HF and llama.cpp) */

/* Encode len bytes of text.  Any bytes are accepted: invalid UTF-8 is first
 * replaced by U+FFFD, one per maximal invalid subpart (what Python's
 * errors="replace" and the WHATWG decoder do, so the ids equal those of the
 * Hugging Face tokenizer on the text as it would be read).  Without
 * MOE_TOK_PARSE_SPECIAL, control tokens (special, or "<｜...｜>"-like as
 * llama.cpp's converter marks them) are plain text; user-defined added
 * tokens are always matched.  *ids is malloc'd (free()), *n its length. */
int moe_tokenizer_encode(const struct moe_tokenizer *t, const char *text, size_t len, unsigned flags, int32_t **ids,
                         int64_t *n, char *err, size_t errlen);

/* The bytes a token stands for (byte-level mapping undone; for added and
 * special tokens, their text).  NULL (len 0) for an id outside the vocab. */
const char *moe_tokenizer_piece(const struct moe_tokenizer *t, int32_t id, size_t *len);
/* Length of the longest piece (for sizing moe_detok_push buffers). */
size_t moe_tokenizer_max_piece(const struct moe_tokenizer *t);
/* 1 for special/control tokens (BOS, EOS, <｜User｜>, ...). */
int moe_tokenizer_is_special(const struct moe_tokenizer *t, int32_t id);
/* The id of a token whose text is exactly s, -1 if none: an added token's
 * content, else a vocabulary string as the file spells it (byte-level:
 * "Ġthe", not " the"). */
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

/* ---- Sampler (src/sampler.c) ----------------------------------------------
 * Picks the next token from a row of logits.  The filters run in the order
 * of llama.cpp's default chain (penalties; top-k; top-p; min-p;
 * temperature; draw):
 *   1. repetition penalty: every distinct id among the last repeat_last_n
 *      accepted ids has its logit divided by repeat_penalty when positive,
 *      multiplied by it when negative or zero;
 *   2. temp <= 0: the arg-max (lowest id on a tie) — nothing below runs;
 *   3. top-k: the k largest logits (ties: lower id first);
 *   4. top-p: sorted by logit, the shortest prefix whose probability mass
 *      (softmax over what is left) reaches top_p (at least one token);
 *   5. min-p: tokens whose probability is at least min_p times the largest;
 *   6. temperature: logits / temp; softmax; one draw from the PRNG.
 * Randomness comes only from our own xoshiro256** seeded through
 * splitmix64, and exp() is our own double-precision routine, so the same
 * seed, settings and logits give the same tokens on every machine.
 * NaN logits count as -inf.  One sampler serves one sequence (not
 * thread-safe); it allocates at creation and never fails afterwards. */
struct moe_sampler;

struct moe_sampler_params {
    float temp;             /* <= 0: greedy */
    int top_k;              /* <= 0 or >= vocab: off */
    float top_p;            /* >= 1: off */
    float min_p;            /* <= 0: off */
    float repeat_penalty;   /* 1: off; must be > 0 */
    int repeat_last_n;      /* accepted ids the penalty looks back over; 0: off */
    uint64_t seed;
};
/* llama.cpp's defaults: temp 0.8, top_k 40, top_p 0.95, min_p 0.05,
 * repeat_penalty 1 (off), repeat_last_n 64, seed 0. */
void moe_sampler_params_init(struct moe_sampler_params *p);

/* Fails (MOECPU_ERR_INVALID) on n_vocab < 1, a negative/NaN setting or
 * repeat_penalty <= 0. */
int moe_sampler_new(struct moe_sampler **out, int32_t n_vocab, const struct moe_sampler_params *p, char *err,
                    size_t errlen);
void moe_sampler_free(struct moe_sampler *s);
/* Record an id (prompt or generated) in the repetition-penalty history. */
void moe_sampler_accept(struct moe_sampler *s, int32_t id);
/* Forget the history and restart the PRNG from the seed. */
void moe_sampler_reset(struct moe_sampler *s);
/* The next token for logits[n_vocab].  Draws one PRNG number unless greedy. */
int32_t moe_sampler_sample(struct moe_sampler *s, const float *logits);
/* The distribution step 6 draws from, as probs[n_vocab] (0 for filtered
 * tokens; a single 1 when greedy).  Draws nothing. */
void moe_sampler_dist(struct moe_sampler *s, const float *logits, double *probs);
/* The PRNG's next uniform double in [0, 1) (53 bits); for tests. */
double moe_sampler_uniform(struct moe_sampler *s);

/* ---- Chat format (src/chat.c) ----------------------------------------------
 * DeepSeek V3/R1 chat semantics, as their tokenizer_config.json templates
 * render a conversation (checked against a Jinja engine on the real
 * templates in tests/test_chat.c):
 *   BOS + system prompt
 *   + per user turn:       "<｜User｜>" content
 *   + per assistant turn:  "<｜Assistant｜>" content "<｜end▁of▁sentence｜>"
 *   + generation prompt:   "<｜Assistant｜>" (R1 templates: "<｜Assistant｜><think>\n")
 * R1 templates keep only the text after the last "</think>" of earlier
 * assistant turns.  V3 joins several system messages with "\n\n"; R1
 * keeps the last.  Which applies is read from the template text.  The
 * rendered text is meant to be encoded with MOE_TOK_PARSE_SPECIAL and
 * without MOE_TOK_ADD_BOS (BOS is in the text). */
#define MOE_CHAT_USER_TEXT "<\xef\xbd\x9cUser\xef\xbd\x9c>"                /* <｜User｜> */
#define MOE_CHAT_ASSISTANT_TEXT "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>"   /* <｜Assistant｜> */
#define MOE_CHAT_END_TEXT "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>" /* <｜end▁of▁sentence｜> */

enum moe_chat_role { MOE_CHAT_SYSTEM = 0, MOE_CHAT_USER = 1, MOE_CHAT_ASSISTANT = 2 };
struct moe_chat_msg {
    enum moe_chat_role role;
    const char *content;       /* UTF-8, NUL-terminated */
};
struct moe_chat_format {
    char bos[128];             /* BOS token text ("" when the model has none) */
    int think_prompt;          /* the generation prompt opens "<think>\n" (R1) */
    int strip_think;           /* earlier assistant turns keep the text after the last "</think>" */
    int join_system;           /* several system messages joined by "\n\n" (else the last wins) */
};
/* From a template's text (NULL: DeepSeek-V3's format) and the BOS text.
 * MOECPU_ERR_UNSUPPORTED when the template is not a DeepSeek V3/R1 one (it
 * never mentions <｜User｜> and <｜Assistant｜>). */
int moe_chat_format_from_template(struct moe_chat_format *f, const char *tmpl, const char *bos, char *err,
                                  size_t errlen);
/* From a model's tokenizer: its template (or V3's when it has none, provided
 * the vocabulary has the DeepSeek chat tokens) and its BOS. */
int moe_chat_format_init(struct moe_chat_format *f, const struct moe_tokenizer *t, char *err, size_t errlen);
/* The conversation as text (malloc'd, NUL-terminated; NULL when out of memory). */
char *moe_chat_render(const struct moe_chat_format *f, const struct moe_chat_msg *msgs, int n,
                      int add_generation_prompt);
/* The same, and for each assistant message i the byte range [spans[2i],
 * spans[2i+1]) of its (possibly think-stripped) content in the text (0, 0
 * for other messages).  spans has 2n entries.  The content always sits
 * between two special tokens (<｜Assistant｜> ... <｜end▁of▁sentence｜>), so
 * a caller may encode the pieces separately, e.g. to reuse the ids a model
 * generated for an answer. */
char *moe_chat_render_spans(const struct moe_chat_format *f, const struct moe_chat_msg *msgs, int n,
                            int add_generation_prompt, size_t *spans);

#endif
