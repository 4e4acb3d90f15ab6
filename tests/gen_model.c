/*
 * tests/gen_model.c — makes tiny random DeepSeek-family models from a seed,
 * in every form moecpu reads, so tests need no download.
 *
 *   gen_model --style v3|v2lite --format hf-bf16|hf-fp8|gguf-f32|gguf-q8_0|gguf-bf16|gguf-f16
 *             --seed N --out PATH [options]   (--help lists them)
 *
 * One seed and style give the same FP32 master weights whatever the format:
 * every tensor is drawn from its own random stream, seeded from the seed
 * and the tensor's Hugging Face name, so adding a tensor (an MTP layer) or
 * changing the format never changes another tensor.  The master is then
 * stored in the format:
 *
 *  - hf-*: a directory as Hugging Face publishes DeepSeek checkpoints:
 *    config.json (the key names of the real configs), model.safetensors
 *    (or shards + model.safetensors.index.json with --shards N) with the
 *    real tensor names, tokenizer.json and tokenizer_config.json.
 *    hf-fp8 stores every projection of attention, dense MLPs and experts as
 *    F8_E4M3 + `<name>_scale_inv` F32 [ceil(out/128), ceil(in/128)] exactly
 *    like DeepSeek-V3's checkpoint (quant/formats.h quantizer); embeddings,
 *    norms, router and lm_head BF16; the correction bias F32.  hf-bf16 is
 *    all BF16 but the bias (F32).
 *  - gguf-*: one file as llama.cpp's convert_hf_to_gguf.py writes
 *    architecture `deepseek2` (checked against conversion/deepseek.py and
 *    base.py of the llama.cpp that node-llama-cpp 3.22.1 bundles): the
 *    deepseek2.* keys, blk.N.* names, experts stacked into 3-D tensors
 *    (expert outermost), norms / 1-D tensors / ffn_gate_inp always F32, the
 *    rest in the file type (Q8_0 falls back to F16 for rows that are not a
 *    multiple of 32, as convert does).  No rows are permuted: convert does
 *    not permute q/k for deepseek2 (llama.cpp ropes adjacent pairs, like
 *    DeepSeek's own code).  MTP layers are left out (convert skips them).
 *    MLA: by default the legacy layout (attn_kv_b, head_count_kv = n_head,
 *    key_length = nope + rope, value_length = v_head), which mainline and
 *    ik_llama.cpp both load; --mla-split writes today's convert layout
 *    (attn_k_b [n_head][kv_lora][nope], attn_v_b [n_head][v_head][kv_lora],
 *    head_count_kv 1, key_length = kv_lora + rope, value_length = kv_lora,
 *    key_length_mla / value_length_mla), mainline only.
 *    Tokenizer: gpt2 BPE, pre "deepseek-v3", ids 0/1 = BOS/EOS, 256 byte
 *    tokens, some merges, [PADn] fillers.
 *
 * --round bf16|fp8 rounds the master first (fp8: projections through the
 * 128x128 e4m3 quantizer, everything else but the bias through bf16), so a
 * gguf-f32 file holds exactly the values an hf-fp8 / hf-bf16 directory of
 * the same seed represents: llama.cpp can then check the HF paths exactly.
 * gguf-bf16 rounds to bf16 by default (as if converted from hf-bf16), so it
 * equals hf-bf16 of the same seed exactly, F32 norms included.
 *
 * Weight scales follow a freshly initialised model: uniform values with std
 * 1/sqrt(fan_in) for projections (and lm_head), 1 for the embedding, norms
 * 1 +- 0.2, router std 2/sqrt(hidden) (--router-std), correction bias
 * +-0.035: activations stay O(1) through the layers and logits have std ~1.
 *
 * After writing, the output is read back with moecpu's own readers and
 * config parser as a self-check.  Errors print one line and exit 1.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "../quant/formats.h"
#include "../src/config.h"
#include "../src/gguf.h"
#include "../src/model_files.h"
#include "../src/safetensors.h"

/* ------------------------------------------------------------------ errors */

static void die(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2), noreturn))
#endif
    ;
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("gen_model: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory (%zu bytes)", n);
    return p;
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) die("out of memory (%zu x %zu bytes)", n, sz);
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}

static char *xfmt(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static char *xfmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) die("formatting failed");
    char *p = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

/* ------------------------------------------------------------ random numbers
 * splitmix64 streams, one per tensor, seeded from (seed, name).  Uniform
 * values come from 24-bit integers, so every platform draws the same floats
 * (no libm transcendental functions involved). */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t stream_seed(uint64_t seed, const char *name)
{
    uint64_t h = 0xCBF29CE484222325ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 0x100000001B3ull;
    uint64_t s = seed ^ (h * 0x9E3779B97F4A7C15ull);
    (void)splitmix64(&s);
    return s;
}

/* Uniform in [-1, 1): a multiple of 2^-23, exact in float. */
static float uniform_pm1(uint64_t *s)
{
    int32_t i = (int32_t)(splitmix64(s) >> 40) - (1 << 23);
    return (float)i * (1.0f / 8388608.0f);
}

/* ------------------------------------------------------------- the model */

enum style { STYLE_V3, STYLE_V2LITE };

enum format { FMT_HF_BF16, FMT_HF_FP8, FMT_GGUF_F32, FMT_GGUF_Q8_0, FMT_GGUF_BF16, FMT_GGUF_F16 };

static const char *const format_names[] = {"hf-bf16", "hf-fp8", "gguf-f32", "gguf-q8_0", "gguf-bf16", "gguf-f16"};

static bool format_is_gguf(enum format f) { return f >= FMT_GGUF_F32; }

enum round_mode { ROUND_NONE, ROUND_BF16, ROUND_FP8 };

struct dims {
    enum style style;
    int64_t vocab, hidden, inter, moe_inter;
    int layers, heads, experts, shared, topk, n_group, topk_group, first_dense, mtp;
    int64_t q_lora, kv_lora, nope, rope, v;
    double routed_scale;
    bool norm_topk, sigmoid;
    const char *topk_method;
    double rope_theta, eps;
    double yarn_factor, beta_fast, beta_slow, mscale, mscale_all;
    int64_t yarn_orig, max_pos;
    double router_std_mult;   /* router weight std = mult / sqrt(hidden) */
    double zipf;              /* --zipf S: correction bias -S * ln(rank + 1) */
    bool stream_experts;      /* --stream-experts: routed experts made while writing */
};

/* What a tensor is decides how each format stores it. */
enum kind {
    K_EMBED,  /* embeddings, lm_head: BF16 in HF (also fp8); quantized in GGUF */
    K_NORM,   /* RMSNorm weights: BF16 in HF; F32 in GGUF */
    K_PROJ,   /* linear projections: FP8 in hf-fp8; quantized in GGUF */
    K_ROUTER, /* mlp.gate.weight: BF16 in HF; F32 in GGUF */
    K_BIAS,   /* e_score_correction_bias: F32 everywhere */
};

struct mtensor {
    char *name;               /* Hugging Face name */
    enum kind kind;
    int n_dims;               /* 1 or 2 */
    int64_t shape[2];         /* outermost first: [rows, cols] or [n] */
    float *data;              /* NULL while lazy (--stream): made when written */
    double std;               /* how the values are drawn (fill_uniform) */
    float offset;
};

struct model {
    struct dims d;
    uint64_t seed;
    struct mtensor *t;
    size_t n, cap;
    bool lazy;                /* --stream: projections and embeddings drawn only when written */
};

static int64_t mt_numel(const struct mtensor *t) { return t->n_dims == 1 ? t->shape[0] : t->shape[0] * t->shape[1]; }

static struct mtensor *model_add(struct model *m, const char *name, enum kind kind, int n_dims, int64_t rows,
                                 int64_t cols)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 256;
        struct mtensor *nt = realloc(m->t, m->cap * sizeof *nt);
        if (!nt) die("out of memory");
        m->t = nt;
    }
    struct mtensor *t = &m->t[m->n++];
    t->name = xstrdup(name);
    t->kind = kind;
    t->n_dims = n_dims;
    t->shape[0] = rows;
    t->shape[1] = n_dims == 2 ? cols : 1;
    t->std = 0.0;
    t->offset = 0.0f;
    /* kv_b stays eager: --mla-split transposes it while building the file */
    bool lazy = m->lazy && (kind == K_PROJ || kind == K_EMBED) && !strstr(name, "kv_b_proj");
    t->data = lazy ? NULL : xmalloc((size_t)mt_numel(t) * sizeof(float));
    return t;
}

static const struct mtensor *model_find(const struct model *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->t[i].name, name) == 0) return &m->t[i];
    return NULL;
}

/* Uniform with the given standard deviation (half-width sqrt(3) * std), like
 * PyTorch's default nn.Linear init family; offset added to each value. */
static void draw_values(const struct model *m, const struct mtensor *t, float *dst)
{
    uint64_t s = stream_seed(m->seed, t->name);
    float a = (float)(sqrt(3.0) * t->std);
    int64_t n = mt_numel(t);
    /* a * u is exact in double (24 x 24 bits), so the sum rounds once
     * whether or not the compiler fuses it: the same floats everywhere. */
    for (int64_t i = 0; i < n; i++) dst[i] = (float)((double)t->offset + (double)a * (double)uniform_pm1(&s));
}

/* A permutation of 0..n-1 drawn from the stream (seed, "<name>#<tag>")
 * (Fisher-Yates); malloc'd. */
static int *random_perm(const struct model *m, const char *name, const char *tag, int n)
{
    int *perm = xmalloc((size_t)n * sizeof *perm);
    for (int i = 0; i < n; i++) perm[i] = i;
    char sname[300];
    snprintf(sname, sizeof sname, "%s#%s", name, tag);
    uint64_t s = stream_seed(m->seed, sname);
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(splitmix64(&s) % (uint64_t)(i + 1));
        int tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    return perm;
}

static void fill_uniform(const struct model *m, struct mtensor *t, double std, float offset)
{
    t->std = std;
    t->offset = offset;
    if (t->data) draw_values(m, t, t->data);
}

/* The values of t: its data, or (lazy) a fresh buffer the caller frees. */
static float *mt_values(const struct model *m, const struct mtensor *t, float **owned)
{
    *owned = NULL;
    if (t->data) return t->data;
    *owned = xmalloc((size_t)mt_numel(t) * sizeof(float));
    draw_values(m, t, *owned);
    return *owned;
}

static void add_proj(struct model *m, const char *name, int64_t rows, int64_t cols)
{
    struct mtensor *t = model_add(m, name, K_PROJ, 2, rows, cols);
    fill_uniform(m, t, 1.0 / sqrt((double)cols), 0.0f);
}

/* Norm weights: 1 +- 0.2 (uniform), "around 1" like a trained model's. */
static void add_norm(struct model *m, const char *name, int64_t n)
{
    struct mtensor *t = model_add(m, name, K_NORM, 1, n, 1);
    fill_uniform(m, t, 0.2 / sqrt(3.0), 1.0f);
}

static void add_mlp(struct model *m, const char *prefix, int64_t hidden, int64_t inter)
{
    char name[256];
    snprintf(name, sizeof name, "%s.gate_proj.weight", prefix);
    add_proj(m, name, inter, hidden);
    snprintf(name, sizeof name, "%s.up_proj.weight", prefix);
    add_proj(m, name, inter, hidden);
    snprintf(name, sizeof name, "%s.down_proj.weight", prefix);
    add_proj(m, name, hidden, inter);
}

/* One decoder layer (attention + dense MLP or MoE) under model.layers.L. */
static void add_layer(struct model *m, int L, double skew)
{
    const struct dims *d = &m->d;
    char p[128], name[256];
    snprintf(p, sizeof p, "model.layers.%d", L);
    int64_t qk = d->nope + d->rope;

    snprintf(name, sizeof name, "%s.input_layernorm.weight", p);
    add_norm(m, name, d->hidden);
    if (d->q_lora > 0) {
        snprintf(name, sizeof name, "%s.self_attn.q_a_proj.weight", p);
        add_proj(m, name, d->q_lora, d->hidden);
        snprintf(name, sizeof name, "%s.self_attn.q_a_layernorm.weight", p);
        add_norm(m, name, d->q_lora);
        snprintf(name, sizeof name, "%s.self_attn.q_b_proj.weight", p);
        add_proj(m, name, d->heads * qk, d->q_lora);
    } else {
        snprintf(name, sizeof name, "%s.self_attn.q_proj.weight", p);
        add_proj(m, name, d->heads * qk, d->hidden);
    }
    snprintf(name, sizeof name, "%s.self_attn.kv_a_proj_with_mqa.weight", p);
    add_proj(m, name, d->kv_lora + d->rope, d->hidden);
    snprintf(name, sizeof name, "%s.self_attn.kv_a_layernorm.weight", p);
    add_norm(m, name, d->kv_lora);
    snprintf(name, sizeof name, "%s.self_attn.kv_b_proj.weight", p);
    add_proj(m, name, d->heads * (d->nope + d->v), d->kv_lora);
    snprintf(name, sizeof name, "%s.self_attn.o_proj.weight", p);
    add_proj(m, name, d->hidden, d->heads * d->v);
    snprintf(name, sizeof name, "%s.post_attention_layernorm.weight", p);
    add_norm(m, name, d->hidden);

    if (L < d->first_dense) {
        snprintf(name, sizeof name, "%s.mlp", p);
        add_mlp(m, name, d->hidden, d->inter);
        return;
    }
    /* Router: std router_std_mult/sqrt(hidden) on a unit-RMS input gives
     * logits of std ~router_std_mult: well spread, no near-ties. */
    snprintf(name, sizeof name, "%s.mlp.gate.weight", p);
    struct mtensor *g = model_add(m, name, K_ROUTER, 2, d->experts, d->hidden);
    fill_uniform(m, g, d->router_std_mult / sqrt((double)d->hidden), 0.0f);
    if (d->sigmoid) {
        /* The correction bias is small next to the spread of the sigmoid
         * scores; --skew X adds X to a random quarter of the experts (at
         * least top-k of them) so they win far more often. */
        snprintf(name, sizeof name, "%s.mlp.gate.e_score_correction_bias", p);
        struct mtensor *b = model_add(m, name, K_BIAS, 1, d->experts, 1);
        fill_uniform(m, b, 0.02, 0.0f);
        if (skew != 0.0) {
            int n = d->experts, k = n / 4 > d->topk ? n / 4 : d->topk;
            int *perm = random_perm(m, name, "skew", n);
            for (int i = 0; i < k; i++) b->data[perm[i]] += (float)skew;
            free(perm);
        }
        if (d->zipf != 0.0) {
            /* Zipf-like popularity: the expert of rank r (a random order per
             * layer) gets -S * ln(r + 1), so a few experts win most tokens
             * and the rest fall off smoothly. */
            int n = d->experts;
            int *perm = random_perm(m, name, "zipf", n);
            for (int r = 0; r < n; r++) b->data[perm[r]] -= (float)(d->zipf * log((double)r + 1.0));
            free(perm);
        }
    }
    for (int e = 0; e < d->experts && !d->stream_experts; e++) {
        snprintf(name, sizeof name, "%s.mlp.experts.%d", p, e);
        add_mlp(m, name, d->hidden, d->moe_inter);
    }
    snprintf(name, sizeof name, "%s.mlp.shared_experts", p);
    add_mlp(m, name, d->hidden, d->moe_inter * d->shared);
}

static void build_model(struct model *m, double skew)
{
    const struct dims *d = &m->d;
    struct mtensor *t = model_add(m, "model.embed_tokens.weight", K_EMBED, 2, d->vocab, d->hidden);
    fill_uniform(m, t, 1.0, 0.0f);
    for (int L = 0; L < d->layers; L++) add_layer(m, L, skew);
    add_norm(m, "model.norm.weight", d->hidden);
    t = model_add(m, "lm_head.weight", K_EMBED, 2, d->vocab, d->hidden);
    fill_uniform(m, t, 1.0 / sqrt((double)d->hidden), 0.0f);

    /* MTP layers (DeepSeek-V3 layout): a full decoder layer plus the
     * projection that joins the embedding and the previous hidden state,
     * and copies of the embedding and head (as in the official checkpoint). */
    for (int k = 0; k < d->mtp; k++) {
        int L = d->layers + k;
        char name[256];
        add_layer(m, L, skew);
        snprintf(name, sizeof name, "model.layers.%d.enorm.weight", L);
        add_norm(m, name, d->hidden);
        snprintf(name, sizeof name, "model.layers.%d.hnorm.weight", L);
        add_norm(m, name, d->hidden);
        snprintf(name, sizeof name, "model.layers.%d.eh_proj.weight", L);
        add_proj(m, name, d->hidden, 2 * d->hidden);
        snprintf(name, sizeof name, "model.layers.%d.shared_head.norm.weight", L);
        add_norm(m, name, d->hidden);
        const struct mtensor *src = model_find(m, "model.embed_tokens.weight");
        snprintf(name, sizeof name, "model.layers.%d.embed_tokens.weight", L);
        t = model_add(m, name, K_EMBED, 2, d->vocab, d->hidden);
        memcpy(t->data, src->data, (size_t)mt_numel(t) * sizeof(float));
        src = model_find(m, "lm_head.weight");
        snprintf(name, sizeof name, "model.layers.%d.shared_head.head.weight", L);
        t = model_add(m, name, K_EMBED, 2, d->vocab, d->hidden);
        memcpy(t->data, src->data, (size_t)mt_numel(t) * sizeof(float));
    }
}

/* Zero one routed expert's three matrices (it is still routed to). */
static void zero_expert(struct model *m, int L, int e)
{
    static const char *const w[] = {"gate_proj", "up_proj", "down_proj"};
    for (int i = 0; i < 3; i++) {
        char name[256];
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%d.%s.weight", L, e, w[i]);
        const struct mtensor *t = model_find(m, name);
        if (!t) die("--zero-expert %d:%d: layer %d has no routed expert %d", L, e, L, e);
        memset(t->data, 0, (size_t)mt_numel(t) * sizeof(float));
    }
}

/* ----------------------------------------------------------- number formats */

static uint16_t *to_bf16(const float *x, int64_t n)
{
    uint16_t *o = xmalloc((size_t)n * sizeof *o);
    for (int64_t i = 0; i < n; i++) o[i] = moe_f32_to_bf16(x[i]);
    return o;
}

static uint16_t *to_f16(const float *x, int64_t n)
{
    uint16_t *o = xmalloc((size_t)n * sizeof *o);
    for (int64_t i = 0; i < n; i++) o[i] = moe_f32_to_f16(x[i]);
    return o;
}

static struct moe_block_q8_0 *to_q8_0(const float *x, int64_t rows, int64_t cols)
{
    struct moe_block_q8_0 *o = xmalloc((size_t)(rows * (cols / 32)) * sizeof *o);
    for (int64_t r = 0; r < rows; r++) moe_quantize_row_q8_0(o + r * (cols / 32), x + r * cols, cols);
    return o;
}

static void round_model(struct model *m, enum round_mode mode, bool keep_proj)
{
    if (mode == ROUND_NONE) return;
    for (size_t i = 0; i < m->n; i++) {
        struct mtensor *t = &m->t[i];
        int64_t n = mt_numel(t);
        if (t->kind == K_BIAS) continue;
        if (mode == ROUND_FP8 && t->kind == K_PROJ) {
            if (keep_proj) continue; /* hf-fp8 quantizes the unrounded master itself */
            int64_t rows = t->shape[0], cols = t->shape[1];
            int64_t ns = moe_fp8_scale_rows(rows) * moe_fp8_scale_cols(cols);
            uint8_t *q = xmalloc((size_t)n);
            float *sc = xmalloc((size_t)ns * sizeof *sc);
            moe_quantize_fp8_block128(q, sc, t->data, rows, cols);
            for (int64_t r = 0; r < rows; r++) moe_dequantize_row_fp8(t->data + r * cols, q, sc, r, cols);
            free(q);
            free(sc);
            continue;
        }
        for (int64_t k = 0; k < n; k++) t->data[k] = moe_bf16_to_f32(moe_f32_to_bf16(t->data[k]));
    }
}

/* Buffers handed to the writers (which reference, not copy, the data). */
struct keep {
    void **p;
    size_t n, cap;
};

static void *keep(struct keep *k, void *p)
{
    if (k->n == k->cap) {
        k->cap = k->cap ? 2 * k->cap : 256;
        void **np = realloc(k->p, k->cap * sizeof *np);
        if (!np) die("out of memory");
        k->p = np;
    }
    k->p[k->n++] = p;
    return p;
}

static void keep_free(struct keep *k)
{
    for (size_t i = 0; i < k->n; i++) free(k->p[i]);
    free(k->p);
    k->p = NULL;
    k->n = k->cap = 0;
}

/* --------------------------------------------------------------- tokenizer
 * ids 0 and 1: BOS/EOS (DeepSeek's names); 2..257: the 256 byte tokens in
 * GPT-2's byte-to-unicode spelling; then merges: "Ġ"+letter, then letter
 * pairs; then [PADn] fillers up to the vocabulary size. */

#define BOS_TEXT "<\xef\xbd\x9c" "begin\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>"
#define EOS_TEXT "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>"
#define N_BYTE_TOKENS 256
#define FIRST_BYTE_ID 2

struct vocab {
    int64_t n;
    char **tokens;
    int32_t *types;           /* gguf TokenType: 1 normal, 3 control, 5 unused */
    int64_t n_merges;
    char **merges;            /* "a b" */
    int64_t n_real;           /* tokens before the [PADn] fillers */
    int64_t bos, eos;         /* -1: none */
    bool add_bos;
    char *chat_template;      /* NULL: none */
    const char *pre;          /* tokenizer.ggml.pre */
};

static int put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    o[0] = (char)(0xE0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
}

/* GPT-2's bytes_to_unicode: printable bytes map to themselves, the others
 * to 256, 257, ... in byte order. */
static unsigned byte_cp(unsigned b)
{
    unsigned n = 0;
    for (unsigned c = 0; c < 256; c++) {
        bool printable = (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174);
        if (printable) {
            if (c == b) return c;
        } else {
            if (c == b) return 256 + n;
            n++;
        }
    }
    return 0;
}

static char *byte_token(unsigned b)
{
    char buf[8];
    int k = put_utf8(buf, byte_cp(b));
    buf[k] = 0;
    return xstrdup(buf);
}

static void build_vocab(struct vocab *v, int64_t n)
{
    static const char letters[] = "etaoinshrdlucmfwypvbgkjqxz";
    v->n = n;
    v->tokens = xcalloc((size_t)n, sizeof *v->tokens);
    v->types = xcalloc((size_t)n, sizeof *v->types);
    v->merges = xcalloc((size_t)n, sizeof *v->merges);
    v->n_merges = 0;
    v->bos = 0;
    v->eos = 1;
    v->add_bos = true;
    v->chat_template = NULL;
    v->pre = "deepseek-v3";
    v->tokens[0] = xstrdup(BOS_TEXT);
    v->types[0] = 3;
    v->tokens[1] = xstrdup(EOS_TEXT);
    v->types[1] = 3;
    for (unsigned b = 0; b < N_BYTE_TOKENS && FIRST_BYTE_ID + (int64_t)b < n; b++) {
        v->tokens[FIRST_BYTE_ID + b] = byte_token(b);
        v->types[FIRST_BYTE_ID + b] = 1;
    }
    int64_t id = FIRST_BYTE_ID + N_BYTE_TOKENS;
    if (id > n) id = n; /* a tiny vocabulary: some byte tokens only, no merges */
    char *space = byte_token(' ');
    for (int i = 0; i < 26 && id < n; i++, id++) { /* id < n implies all byte tokens exist */
        char l[2] = {letters[i], 0};
        v->tokens[id] = xfmt("%s%s", space, l);
        v->types[id] = 1;
        v->merges[v->n_merges++] = xfmt("%s %s", space, l);
    }
    for (int i = 0; i < 26 && id < n; i++)
        for (int j = 0; j < 26 && id < n; j++, id++) {
            v->tokens[id] = xfmt("%c%c", letters[i], letters[j]);
            v->types[id] = 1;
            v->merges[v->n_merges++] = xfmt("%c %c", letters[i], letters[j]);
        }
    free(space);
    v->n_real = id;
    for (; id < n; id++) {
        v->tokens[id] = xfmt("[PAD%" PRId64 "]", id);
        v->types[id] = 5;
    }
}

static void free_vocab(struct vocab *v)
{
    for (int64_t i = 0; i < v->n; i++) free(v->tokens[i]);
    for (int64_t i = 0; i < v->n_merges; i++) free(v->merges[i]);
    free(v->tokens);
    free(v->types);
    free(v->merges);
    free(v->chat_template);
}

/* --tokenizer FILE.json: a real tokenizer.json's vocabulary, merges and
 * added tokens, as llama.cpp's convert_hf_to_gguf.py turns them into
 * tokenizer.ggml.* (gpt2 model): ids without a token (up to the model's
 * vocabulary size) become "[PADn]" UNUSED; added tokens that are special,
 * or look like "<|...|>" / "<｜...｜>", CONTROL; other added tokens
 * USER_DEFINED; the rest NORMAL.  BOS/EOS, add_bos_token and the chat
 * template come from tokenizer_config.json beside the file, if present.
 * Returns the tokenizer's size (1 + its largest id). */
static int64_t tok_size(const char *path)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) die("%s: line %d: %s", path, je.line, je.text);
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    if (!json_is_object(vocab)) die("%s: no model.vocab object", path);
    int64_t n = 0;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) if (json_integer_value(val) + 1 > n) n = json_integer_value(val) + 1;
    size_t i;
    json_array_foreach(json_object_get(root, "added_tokens"), i, val)
    {
        int64_t id = json_integer_value(json_object_get(val, "id"));
        if (id + 1 > n) n = id + 1;
    }
    json_decref(root);
    return n;
}

static bool tok_looks_special(const char *s)
{
    size_t n = strlen(s);
#define ENDS(a, b) (n >= strlen(a) + strlen(b) && !strncmp(s, a, strlen(a)) && !strcmp(s + n - strlen(b), b))
    return !strcmp(s, "<pad>") || !strcmp(s, "<mask>") || ENDS("<|", "|>") ||
           ENDS("<\xef\xbd\x9c", "\xef\xbd\x9c>") || ENDS("<unused", ">");
#undef ENDS
}

static void load_tokenizer_json(struct vocab *v, const char *path, int64_t n)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) die("%s: line %d: %s", path, je.line, je.text);
    json_t *model = json_object_get(root, "model");
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (!json_is_object(vocab) || !json_is_array(merges)) die("%s: no model.vocab / model.merges", path);
    v->n = n;
    v->tokens = xcalloc((size_t)n, sizeof *v->tokens);
    v->types = xcalloc((size_t)n, sizeof *v->types);
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val)
    {
        int64_t id = json_integer_value(val);
        if (id < 0 || id >= n || v->tokens[id]) die("%s: vocab id %" PRId64 " out of range or repeated", path, id);
        v->tokens[id] = xstrdup(key);
        v->types[id] = 1;
    }
    size_t i;
    json_array_foreach(json_object_get(root, "added_tokens"), i, val)
    {
        int64_t id = json_integer_value(json_object_get(val, "id"));
        const char *c = json_string_value(json_object_get(val, "content"));
        if (id < 0 || id >= n || !c) die("%s: added_tokens[%zu] has no valid id/content", path, i);
        free(v->tokens[id]);
        v->tokens[id] = xstrdup(c);
        v->types[id] = json_is_true(json_object_get(val, "special")) || tok_looks_special(c) ? 3 : 4;
    }
    v->n_real = n;
    for (int64_t id = 0; id < n; id++)
        if (!v->tokens[id]) {
            v->tokens[id] = xfmt("[PAD%" PRId64 "]", id);
            v->types[id] = 5;
        }
    v->n_merges = (int64_t)json_array_size(merges);
    v->merges = xcalloc((size_t)v->n_merges + 1, sizeof *v->merges);
    json_array_foreach(merges, i, val)
    {
        if (json_is_string(val)) v->merges[i] = xstrdup(json_string_value(val));
        else if (json_is_string(json_array_get(val, 0)) && json_is_string(json_array_get(val, 1)))
            v->merges[i] = xfmt("%s %s", json_string_value(json_array_get(val, 0)), json_string_value(json_array_get(val, 1)));
        else die("%s: merges[%zu] is neither \"a b\" nor [a, b]", path, i);
    }
    json_decref(root);

    v->bos = v->eos = -1;
    v->add_bos = false;
    v->chat_template = NULL;
    v->pre = "deepseek-v3";
    const char *slash = strrchr(path, '/');
    char *cfg = slash ? xfmt("%.*s/tokenizer_config.json", (int)(slash - path), path) : xstrdup("tokenizer_config.json");
    json_t *c = json_load_file(cfg, 0, &je);
    if (c) {
        static const char *const keys[2] = {"bos_token", "eos_token"};
        for (int k = 0; k < 2; k++) {
            json_t *t = json_object_get(c, keys[k]);
            const char *txt = json_is_string(t) ? json_string_value(t) : json_string_value(json_object_get(t, "content"));
            for (int64_t id = 0; txt && id < n; id++)
                if (!strcmp(v->tokens[id], txt)) {
                    if (k == 0) v->bos = id;
                    else v->eos = id;
                    break;
                }
        }
        v->add_bos = json_is_true(json_object_get(c, "add_bos_token"));
        const char *ct = json_string_value(json_object_get(c, "chat_template"));
        if (ct) v->chat_template = xstrdup(ct);
        json_decref(c);
    }
    free(cfg);
}

/* Temp file + rename (or straight into a device such as /dev/null): the
 * engine's writer. */
static void write_bytes(const char *path, const void *p, size_t n)
{
    char err[512];
    struct moe_tmpfile f;
    if (moe_tmpfile_open(&f, path, err, sizeof err)) die("%s", err);
    moe_tmpfile_write(&f, p, n);
    if (moe_tmpfile_commit(&f, err, sizeof err)) die("%s", err);
}

/* Copy a file byte for byte (for --tokenizer into an HF directory). */
static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    if (!in) die("%s: cannot open: %s", from, strerror(errno));
    char err[512];
    struct moe_tmpfile out;
    if (moe_tmpfile_open(&out, to, err, sizeof err)) die("%s", err);
    char buf[1 << 16];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, in)) > 0) moe_tmpfile_write(&out, buf, r);
    if (ferror(in)) die("%s: read failed", from);
    fclose(in);
    if (moe_tmpfile_commit(&out, err, sizeof err)) die("%s", err);
}

/* ------------------------------------------------------------- JSON files */

static void json_write(json_t *j, const char *path)
{
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(10) | JSON_ENSURE_ASCII);
    if (!text) die("%s: cannot format JSON", path);
    write_bytes(path, text, strlen(text));
    free(text);
}

static void write_config_json(const struct dims *d, const char *dir, bool fp8)
{
    json_t *c = json_object();
    bool v3 = d->style == STYLE_V3;
    json_object_set_new(c, "architectures",
                        json_pack("[s]", v3 ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM"));
    json_object_set_new(c, "attention_bias", json_false());
    json_object_set_new(c, "attention_dropout", json_real(0.0));
    if (!v3) json_object_set_new(c, "aux_loss_alpha", json_real(0.001));
    json_object_set_new(c, "bos_token_id", json_integer(0));
    json_object_set_new(c, "eos_token_id", json_integer(1));
    json_object_set_new(c, "ep_size", json_integer(1));
    json_object_set_new(c, "first_k_dense_replace", json_integer(d->first_dense));
    json_object_set_new(c, "hidden_act", json_string("silu"));
    json_object_set_new(c, "hidden_size", json_integer(d->hidden));
    json_object_set_new(c, "initializer_range", json_real(0.02));
    json_object_set_new(c, "intermediate_size", json_integer(d->inter));
    json_object_set_new(c, "kv_lora_rank", json_integer(d->kv_lora));
    json_object_set_new(c, "max_position_embeddings", json_integer(d->max_pos));
    json_object_set_new(c, "model_type", json_string(v3 ? "deepseek_v3" : "deepseek_v2"));
    json_object_set_new(c, "moe_intermediate_size", json_integer(d->moe_inter));
    json_object_set_new(c, "moe_layer_freq", json_integer(1));
    json_object_set_new(c, "n_group", json_integer(d->n_group));
    json_object_set_new(c, "n_routed_experts", json_integer(d->experts));
    json_object_set_new(c, "n_shared_experts", json_integer(d->shared));
    json_object_set_new(c, "norm_topk_prob", json_boolean(d->norm_topk));
    json_object_set_new(c, "num_attention_heads", json_integer(d->heads));
    json_object_set_new(c, "num_experts_per_tok", json_integer(d->topk));
    json_object_set_new(c, "num_hidden_layers", json_integer(d->layers));
    json_object_set_new(c, "num_key_value_heads", json_integer(d->heads));
    json_object_set_new(c, "num_nextn_predict_layers", json_integer(d->mtp));
    json_object_set_new(c, "pretraining_tp", json_integer(1));
    json_object_set_new(c, "q_lora_rank", d->q_lora > 0 ? json_integer(d->q_lora) : json_null());
    json_object_set_new(c, "qk_nope_head_dim", json_integer(d->nope));
    json_object_set_new(c, "qk_rope_head_dim", json_integer(d->rope));
    if (fp8) {
        json_t *q = json_object();
        json_object_set_new(q, "activation_scheme", json_string("dynamic"));
        json_object_set_new(q, "fmt", json_string("e4m3"));
        json_object_set_new(q, "quant_method", json_string("fp8"));
        json_object_set_new(q, "weight_block_size", json_pack("[ii]", MOE_FP8_BLOCK, MOE_FP8_BLOCK));
        json_object_set_new(c, "quantization_config", q);
    }
    json_object_set_new(c, "rms_norm_eps", json_real(d->eps));
    json_t *rs = json_object();
    json_object_set_new(rs, "beta_fast", json_integer((json_int_t)d->beta_fast));
    json_object_set_new(rs, "beta_slow", json_integer((json_int_t)d->beta_slow));
    json_object_set_new(rs, "factor", json_integer((json_int_t)d->yarn_factor));
    json_object_set_new(rs, "mscale", json_real(d->mscale));
    json_object_set_new(rs, "mscale_all_dim", json_real(d->mscale_all));
    json_object_set_new(rs, "original_max_position_embeddings", json_integer(d->yarn_orig));
    json_object_set_new(rs, "type", json_string("yarn"));
    json_object_set_new(c, "rope_scaling", rs);
    json_object_set_new(c, "rope_theta", json_integer((json_int_t)d->rope_theta));
    json_object_set_new(c, "routed_scaling_factor", json_real(d->routed_scale));
    json_object_set_new(c, "scoring_func", json_string(d->sigmoid ? "sigmoid" : "softmax"));
    if (!v3) json_object_set_new(c, "seq_aux", json_true());
    json_object_set_new(c, "tie_word_embeddings", json_false());
    json_object_set_new(c, "topk_group", json_integer(d->topk_group));
    json_object_set_new(c, "topk_method", json_string(d->topk_method));
    json_object_set_new(c, "torch_dtype", json_string("bfloat16"));
    json_object_set_new(c, "transformers_version", json_string(v3 ? "4.46.3" : "4.33.1"));
    json_object_set_new(c, "use_cache", json_true());
    json_object_set_new(c, "v_head_dim", json_integer(d->v));
    json_object_set_new(c, "vocab_size", json_integer(d->vocab));

    char *path = xfmt("%s/config.json", dir);
    json_write(c, path);
    free(path);
    json_decref(c);
}

static void write_tokenizer_json(const struct vocab *v, const struct dims *d, const char *dir)
{
    json_t *tok = json_object();
    json_object_set_new(tok, "version", json_string("1.0"));
    json_object_set_new(tok, "truncation", json_null());
    json_object_set_new(tok, "padding", json_null());
    json_t *added = json_array();
    for (int i = 0; i < 2; i++) {
        json_t *a = json_object();
        json_object_set_new(a, "id", json_integer(i));
        json_object_set_new(a, "content", json_string(v->tokens[i]));
        json_object_set_new(a, "single_word", json_false());
        json_object_set_new(a, "lstrip", json_false());
        json_object_set_new(a, "rstrip", json_false());
        json_object_set_new(a, "normalized", json_true());
        json_object_set_new(a, "special", json_true());
        json_array_append_new(added, a);
    }
    json_object_set_new(tok, "added_tokens", added);
    json_object_set_new(tok, "normalizer", json_null());
    json_object_set_new(tok, "pre_tokenizer",
                        json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                                  "trim_offsets", 1, "use_regex", 1));
    json_object_set_new(tok, "post_processor",
                        json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 1,
                                  "trim_offsets", 0, "use_regex", 1));
    json_object_set_new(tok, "decoder",
                        json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 1,
                                  "trim_offsets", 1, "use_regex", 1));
    json_t *model = json_object();
    json_object_set_new(model, "type", json_string("BPE"));
    json_object_set_new(model, "dropout", json_null());
    json_object_set_new(model, "unk_token", json_null());
    json_object_set_new(model, "continuing_subword_prefix", json_null());
    json_object_set_new(model, "end_of_word_suffix", json_null());
    json_object_set_new(model, "fuse_unk", json_false());
    json_object_set_new(model, "byte_fallback", json_false());
    json_t *vocab = json_object();
    for (int64_t i = 0; i < v->n_real; i++) json_object_set_new(vocab, v->tokens[i], json_integer(i));
    json_object_set_new(model, "vocab", vocab);
    json_t *merges = json_array();
    for (int64_t i = 0; i < v->n_merges; i++) json_array_append_new(merges, json_string(v->merges[i]));
    json_object_set_new(model, "merges", merges);
    json_object_set_new(tok, "model", model);
    char *path = xfmt("%s/tokenizer.json", dir);
    json_write(tok, path);
    free(path);
    json_decref(tok);

    json_t *tc = json_object();
    json_object_set_new(tc, "add_bos_token", json_true());
    json_object_set_new(tc, "add_eos_token", json_false());
    json_object_set_new(tc, "bos_token", json_string(v->tokens[0]));
    json_object_set_new(tc, "eos_token", json_string(v->tokens[1]));
    json_object_set_new(tc, "pad_token", json_string(v->tokens[1]));
    json_object_set_new(tc, "clean_up_tokenization_spaces", json_false());
    json_object_set_new(tc, "legacy", json_true());
    json_object_set_new(tc, "model_max_length", json_integer(d->max_pos));
    json_object_set_new(tc, "tokenizer_class", json_string("LlamaTokenizerFast"));
    json_object_set_new(tc, "unk_token", json_null());
    path = xfmt("%s/tokenizer_config.json", dir);
    json_write(tc, path);
    free(path);
    json_decref(tc);
}

/* ------------------------------------------------------------ HF writer */

static void st_add(struct moe_st_writer *w, const char *name, const char *dtype, int n_dims, const int64_t *shape,
                   const void *data, size_t nbytes)
{
    int rc = moe_st_writer_add(w, name, dtype, n_dims, shape, data, nbytes);
    if (rc) die("safetensors: cannot add tensor %s (status %d)", name, rc);
}

/* A directory written before may hold the other layout (one file vs
 * shards + index); readers prefer the index, so remove both first. */
static void remove_old_weights(const char *dir)
{
    DIR *dp = opendir(dir);
    if (!dp) die("%s: cannot list: %s", dir, strerror(errno));
    struct dirent *de;
    while ((de = readdir(dp))) {
        const char *n = de->d_name;
        unsigned a, b;
        char tail[32];
        bool shard = sscanf(n, "model-%u-of-%u.safetensor%31s", &a, &b, tail) == 3 && strcmp(tail, "s") == 0;
        if (shard || !strcmp(n, "model.safetensors") || !strcmp(n, "model.safetensors.index.json")) {
            char *p = xfmt("%s/%s", dir, n);
            if (unlink(p) != 0) die("%s: cannot remove: %s", p, strerror(errno));
            free(p);
        }
    }
    closedir(dp);
}

/* --stream: a tensor's stored bytes made at write time. */
struct lazy_job {
    const struct model *m;
    const struct mtensor *t;
    enum moe_wtype type;      /* GGUF: the stored type */
    int layer, which;         /* GGUF expert stacks: layer and down/gate/up */
};

static void hf_fill_fp8(void *user, void *dst, size_t offset, size_t nbytes)
{
    (void)offset; /* unit 0: one call for the whole tensor */
    const struct lazy_job *j = user;
    float *own;
    const float *x = mt_values(j->m, j->t, &own);
    int64_t rows = j->t->shape[0], cols = j->t->shape[1];
    float *sc = xmalloc((size_t)(moe_fp8_scale_rows(rows) * moe_fp8_scale_cols(cols)) * sizeof *sc);
    moe_quantize_fp8_block128(dst, sc, x, rows, cols);
    (void)nbytes;
    free(sc);
    free(own);
}

static void hf_fill_fp8_scale(void *user, void *dst, size_t offset, size_t nbytes)
{
    (void)offset; /* unit 0: one call for the whole tensor */
    const struct lazy_job *j = user;
    float *own;
    const float *x = mt_values(j->m, j->t, &own);
    int64_t rows = j->t->shape[0], cols = j->t->shape[1], sc = moe_fp8_scale_cols(cols);
    /* the scales moe_quantize_fp8_block128 computes (amax / 448, 1 for an
     * all-zero block), without quantizing the weights */
    float *scale = dst;
    for (int64_t i = 0; i < moe_fp8_scale_rows(rows) * sc; i++) scale[i] = 0.0f;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            float *a = &scale[(r / 128) * sc + c / 128];
            *a = fmaxf(*a, fabsf(x[r * cols + c]));
        }
    for (size_t i = 0; i < nbytes / sizeof(float); i++) scale[i] = scale[i] > 0.0f ? scale[i] / MOE_FP8_MAX : 1.0f;
    free(own);
}

static void hf_fill_bf16(void *user, void *dst, size_t offset, size_t nbytes)
{
    (void)offset; /* unit 0: one call for the whole tensor */
    const struct lazy_job *j = user;
    float *own;
    const float *x = mt_values(j->m, j->t, &own);
    uint16_t *o = dst;
    for (size_t i = 0; i < nbytes / 2; i++) o[i] = moe_f32_to_bf16(x[i]);
    free(own);
}

static void write_hf(const struct model *m, enum format fmt, const char *dir, int shards)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) die("%s: cannot create directory: %s", dir, strerror(errno));
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) die("%s: not a directory", dir);
    remove_old_weights(dir);

    struct moe_st_writer *w = moe_st_writer_new();
    if (!w) die("out of memory");
    struct keep k = {0};
    size_t total = 0;
    for (size_t i = 0; i < m->n; i++) {
        const struct mtensor *t = &m->t[i];
        int64_t n = mt_numel(t);
        if (!t->data) { /* lazy: K_PROJ or K_EMBED */
            struct lazy_job *j = keep(&k, xcalloc(1, sizeof *j));
            j->m = m;
            j->t = t;
            int rc;
            if (fmt == FMT_HF_FP8 && t->kind == K_PROJ) {
                int64_t sshape[2] = {moe_fp8_scale_rows(t->shape[0]), moe_fp8_scale_cols(t->shape[1])};
                size_t sb = (size_t)(sshape[0] * sshape[1]) * 4;
                rc = moe_st_writer_add_fill(w, t->name, "F8_E4M3", 2, t->shape, (size_t)n, hf_fill_fp8, j);
                char *sname = keep(&k, xfmt("%s_scale_inv", t->name));
                if (!rc) rc = moe_st_writer_add_fill(w, sname, "F32", 2, sshape, sb, hf_fill_fp8_scale, j);
                total += (size_t)n + sb;
            } else {
                rc = moe_st_writer_add_fill(w, t->name, "BF16", t->n_dims, t->shape, (size_t)n * 2, hf_fill_bf16, j);
                total += (size_t)n * 2;
            }
            if (rc) die("safetensors: cannot add tensor %s (status %d)", t->name, rc);
        } else if (t->kind == K_BIAS) {
            st_add(w, t->name, "F32", t->n_dims, t->shape, t->data, (size_t)n * 4);
            total += (size_t)n * 4;
        } else if (fmt == FMT_HF_FP8 && t->kind == K_PROJ) {
            int64_t rows = t->shape[0], cols = t->shape[1];
            int64_t sshape[2] = {moe_fp8_scale_rows(rows), moe_fp8_scale_cols(cols)};
            uint8_t *q = keep(&k, xmalloc((size_t)n));
            float *sc = keep(&k, xmalloc((size_t)(sshape[0] * sshape[1]) * sizeof *sc));
            moe_quantize_fp8_block128(q, sc, t->data, rows, cols);
            st_add(w, t->name, "F8_E4M3", 2, t->shape, q, (size_t)n);
            char *sname = keep(&k, xfmt("%s_scale_inv", t->name));
            st_add(w, sname, "F32", 2, sshape, sc, (size_t)(sshape[0] * sshape[1]) * 4);
            total += (size_t)n + (size_t)(sshape[0] * sshape[1]) * 4;
        } else {
            uint16_t *b = keep(&k, to_bf16(t->data, n));
            st_add(w, t->name, "BF16", t->n_dims, t->shape, b, (size_t)n * 2);
            total += (size_t)n * 2;
        }
    }
    moe_st_writer_add_metadata(w, "format", "pt");
    size_t shard_bytes = shards > 1 ? (total + (size_t)shards - 1) / (size_t)shards : 0;
    char err[512];
    if (moe_st_writer_write_dir(w, dir, shard_bytes, err, sizeof err)) die("%s", err);
    moe_st_writer_free(w);
    keep_free(&k);
}

/* ---------------------------------------------------------- GGUF writer */

struct gw {
    struct moe_gguf_writer *w;
    struct keep k;
    enum format fmt;
};

static void gchk(int rc, const char *what)
{
    if (rc) die("gguf: cannot add %s (status %d)", what, rc);
}

static void g_u32(struct gw *g, const char *key, uint32_t v) { gchk(moe_gguf_writer_add_u32(g->w, key, v), key); }
static void g_f32(struct gw *g, const char *key, float v) { gchk(moe_gguf_writer_add_f32(g->w, key, v), key); }
static void g_str(struct gw *g, const char *key, const char *v) { gchk(moe_gguf_writer_add_str(g->w, key, v), key); }
static void g_bool(struct gw *g, const char *key, bool v) { gchk(moe_gguf_writer_add_bool(g->w, key, v), key); }

/* Store data [n_dims shape, outermost first] as convert_hf_to_gguf would:
 * F32 when forced (1-D, norms, router, bias), else the file type. */
static enum moe_wtype g_type(const struct gw *g, bool force_f32, int n_dims, int64_t cols)
{
    enum moe_wtype type = MOE_W_F32;
    if (!force_f32 && n_dims >= 2) {
        switch (g->fmt) {
        case FMT_GGUF_BF16: type = MOE_W_BF16; break;
        case FMT_GGUF_F16: type = MOE_W_F16; break;
        case FMT_GGUF_Q8_0: type = cols % 32 == 0 ? MOE_W_Q8_0 : MOE_W_F16; break; /* convert's fallback */
        default: type = MOE_W_F32; break;
        }
    }
    return type;
}

/* n values of rows of `cols` stored as type into dst (--stream). */
static void convert_into(void *dst, enum moe_wtype type, const float *x, int64_t n, int64_t cols)
{
    switch (type) {
    case MOE_W_BF16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = moe_f32_to_bf16(x[i]);
        break;
    case MOE_W_F16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = moe_f32_to_f16(x[i]);
        break;
    case MOE_W_Q8_0:
        for (int64_t r = 0; r < n / cols; r++)
            moe_quantize_row_q8_0((struct moe_block_q8_0 *)dst + r * (cols / 32), x + r * cols, cols);
        break;
    default:
        memcpy(dst, x, (size_t)n * sizeof(float));
        break;
    }
}

static size_t stored_bytes(enum moe_wtype type, int64_t n, int64_t cols)
{
    return moe_wtype_row_bytes(type, cols) * (size_t)(n / cols);
}

static void g_fill_plain(void *user, void *dst, size_t offset, size_t nbytes)
{
    (void)offset; /* unit 0: one call for the whole tensor */
    const struct lazy_job *j = user;
    float *own;
    const float *x = mt_values(j->m, j->t, &own);
    convert_into(dst, j->type, x, mt_numel(j->t), j->t->shape[1]);
    (void)nbytes;
    free(own);
}

static const struct mtensor *need(const struct model *m, const char *name);

/* An expert stack [experts][rows][cols], expert by expert. */
static void g_fill_experts(void *user, void *dst, size_t offset, size_t nbytes)
{
    (void)offset; /* unit 0: one call for the whole tensor */
    static const char *const w[] = {"down", "gate", "up"};
    const struct lazy_job *j = user;
    const int E = j->m->d.experts;
    char hf[256];
    for (int e = 0; e < E; e++) {
        snprintf(hf, sizeof hf, "model.layers.%d.mlp.experts.%d.%s_proj.weight", j->layer, e, w[j->which]);
        const struct mtensor *t = need(j->m, hf);
        float *own;
        const float *x = mt_values(j->m, t, &own);
        convert_into((char *)dst + (nbytes / (size_t)E) * (size_t)e, j->type, x, mt_numel(t), t->shape[1]);
        free(own);
    }
}

static void g_tensor(struct gw *g, const char *name, bool force_f32, int n_dims, const int64_t *shape,
                     const float *data)
{
    int64_t n = 1, cols = shape[n_dims - 1];
    for (int i = 0; i < n_dims; i++) n *= shape[i];
    enum moe_wtype type = g_type(g, force_f32, n_dims, cols);
    const void *p = data;
    size_t nbytes = (size_t)n * 4;
    if (type == MOE_W_BF16) {
        p = keep(&g->k, to_bf16(data, n));
        nbytes = (size_t)n * 2;
    } else if (type == MOE_W_F16) {
        p = keep(&g->k, to_f16(data, n));
        nbytes = (size_t)n * 2;
    } else if (type == MOE_W_Q8_0) {
        p = keep(&g->k, to_q8_0(data, n / cols, cols));
        nbytes = (size_t)(n / 32) * MOE_Q8_0_BYTES;
    }
    gchk(moe_gguf_writer_add_tensor(g->w, name, type, n_dims, shape, p, nbytes), name);
}

/* --stream-experts: a stacked Q8_0 expert tensor [experts][rows][cols]
 * made block by block while it is written (a model far larger than RAM).
 * Row i's blocks come from their own stream (seed, tensor name, i): int8
 * uniform in [-127, 127], scale std * sqrt(3) / 127 with std
 * 1/sqrt(cols), the statistics of the masters' uniform init. */
struct stream_fill {
    uint64_t seed;
    int64_t cols;
    uint16_t scale;            /* fp16 */
};

static void stream_fill_rows(void *user, void *buf, size_t offset, size_t n)
{
    const struct stream_fill *sf = user;
    const size_t row_bytes = (size_t)(sf->cols / 32) * MOE_Q8_0_BYTES;
    unsigned char *o = buf;
    for (size_t r = offset / row_bytes; n >= row_bytes; r++, n -= row_bytes) {
        uint64_t s = sf->seed ^ ((uint64_t)r * 0xD1B54A32D192ED03ull);
        for (int64_t b = 0; b < sf->cols / 32; b++) {
            memcpy(o, &sf->scale, 2);  /* little-endian fp16, as the reader expects on this host */
            for (int k = 0; k < 32; k += 8) {
                uint64_t v = splitmix64(&s);
                for (int i = 0; i < 8; i++, v >>= 8) {
                    int8_t q = (int8_t)(v & 0xFF);
                    o[2 + k + i] = (unsigned char)(q == -128 ? -127 : q);
                }
            }
            o += MOE_Q8_0_BYTES;
        }
    }
}

static const struct mtensor *need(const struct model *m, const char *name)
{
    const struct mtensor *t = model_find(m, name);
    if (!t) die("internal: tensor %s missing", name);
    return t;
}

/* A master tensor under its GGUF name. */
static void g_copy(struct gw *g, const struct model *m, const char *hf, const char *gg)
{
    const struct mtensor *t = need(m, hf);
    bool f32 = t->kind == K_NORM || t->kind == K_ROUTER || t->kind == K_BIAS || t->n_dims == 1;
    if (!t->data) {
        struct lazy_job *j = keep(&g->k, xcalloc(1, sizeof *j));
        j->m = m;
        j->t = t;
        j->type = g_type(g, f32, t->n_dims, t->shape[t->n_dims - 1]);
        gchk(moe_gguf_writer_add_tensor_fill(g->w, gg, j->type, t->n_dims, t->shape,
                                             stored_bytes(j->type, mt_numel(t), t->shape[t->n_dims - 1]),
                                             g_fill_plain, j, 0),
             gg);
        return;
    }
    g_tensor(g, gg, f32, t->n_dims, t->shape, t->data);
}

static void write_gguf(const struct model *m, enum format fmt, const char *path, bool mla_split,
                       const struct vocab *v)
{
    const struct dims *d = &m->d;
    struct gw g = {.w = moe_gguf_writer_new(), .fmt = fmt};
    if (!g.w) die("out of memory");
    bool v3 = d->style == STYLE_V3;

    /* general.* as gguf-py writes them; general.file_type: 0 all F32,
     * 1 mostly F16, 7 mostly Q8_0, 32 mostly BF16. */
    g_str(&g, "general.architecture", "deepseek2");
    g_str(&g, "general.type", "model");
    g_str(&g, "general.name", v3 ? "moecpu test DeepSeek-V3-style" : "moecpu test DeepSeek-V2-Lite-style");
    uint32_t ftype = fmt == FMT_GGUF_Q8_0 ? 7 : fmt == FMT_GGUF_BF16 ? 32 : fmt == FMT_GGUF_F16 ? 1 : 0;

    /* deepseek2.*, in the order convert_hf_to_gguf.py adds them. */
    g_u32(&g, "deepseek2.block_count", (uint32_t)d->layers);
    g_u32(&g, "deepseek2.context_length", (uint32_t)d->max_pos);
    g_u32(&g, "deepseek2.embedding_length", (uint32_t)d->hidden);
    g_u32(&g, "deepseek2.feed_forward_length", (uint32_t)d->inter);
    g_u32(&g, "deepseek2.attention.head_count", (uint32_t)d->heads);
    g_u32(&g, "deepseek2.attention.head_count_kv", mla_split ? 1u : (uint32_t)d->heads);
    g_str(&g, "deepseek2.rope.scaling.type", "yarn");
    g_f32(&g, "deepseek2.rope.scaling.factor", (float)d->yarn_factor);
    g_u32(&g, "deepseek2.rope.scaling.original_context_length", (uint32_t)d->yarn_orig);
    g_f32(&g, "deepseek2.rope.scaling.yarn_beta_fast", (float)d->beta_fast);
    g_f32(&g, "deepseek2.rope.scaling.yarn_beta_slow", (float)d->beta_slow);
    g_f32(&g, "deepseek2.rope.freq_base", (float)d->rope_theta);
    g_f32(&g, "deepseek2.attention.layer_norm_rms_epsilon", (float)d->eps);
    g_u32(&g, "deepseek2.expert_count", (uint32_t)d->experts);
    g_u32(&g, "deepseek2.expert_used_count", (uint32_t)d->topk);
    g_u32(&g, "deepseek2.expert_group_count", (uint32_t)d->n_group);
    g_u32(&g, "deepseek2.expert_group_used_count", (uint32_t)d->topk_group);
    g_u32(&g, "deepseek2.expert_gating_func", d->sigmoid ? 2u : 1u); /* gguf ExpertGatingFuncType */
    g_u32(&g, "general.file_type", ftype);
    g_u32(&g, "deepseek2.leading_dense_block_count", (uint32_t)d->first_dense);
    g_u32(&g, "deepseek2.vocab_size", (uint32_t)d->vocab);
    if (d->q_lora > 0) g_u32(&g, "deepseek2.attention.q_lora_rank", (uint32_t)d->q_lora);
    g_u32(&g, "deepseek2.attention.kv_lora_rank", (uint32_t)d->kv_lora);
    if (mla_split) {
        g_u32(&g, "deepseek2.attention.key_length", (uint32_t)(d->kv_lora + d->rope));
        g_u32(&g, "deepseek2.attention.value_length", (uint32_t)d->kv_lora);
        g_u32(&g, "deepseek2.attention.key_length_mla", (uint32_t)(d->nope + d->rope));
        g_u32(&g, "deepseek2.attention.value_length_mla", (uint32_t)d->v);
    } else {
        g_u32(&g, "deepseek2.attention.key_length", (uint32_t)(d->nope + d->rope));
        g_u32(&g, "deepseek2.attention.value_length", (uint32_t)d->v);
    }
    g_u32(&g, "deepseek2.expert_feed_forward_length", (uint32_t)d->moe_inter);
    g_u32(&g, "deepseek2.expert_shared_count", (uint32_t)d->shared);
    g_f32(&g, "deepseek2.expert_weights_scale", (float)d->routed_scale);
    if (d->norm_topk) g_bool(&g, "deepseek2.expert_weights_norm", true); /* convert writes it only when true */
    g_u32(&g, "deepseek2.rope.dimension_count", (uint32_t)d->rope);
    g_f32(&g, "deepseek2.rope.scaling.yarn_log_multiplier", (float)(0.1 * d->mscale_all));
    g_u32(&g, "general.quantization_version", 2);

    /* Tokenizer. */
    g_str(&g, "tokenizer.ggml.model", "gpt2");
    g_str(&g, "tokenizer.ggml.pre", v->pre);
    gchk(moe_gguf_writer_add_arr_str(g.w, "tokenizer.ggml.tokens", (const char *const *)v->tokens, (uint64_t)v->n),
         "tokenizer.ggml.tokens");
    gchk(moe_gguf_writer_add_arr(g.w, "tokenizer.ggml.token_type", MOE_GGUF_INT32, v->types, (uint64_t)v->n),
         "tokenizer.ggml.token_type");
    gchk(moe_gguf_writer_add_arr_str(g.w, "tokenizer.ggml.merges", (const char *const *)v->merges,
                                     (uint64_t)v->n_merges),
         "tokenizer.ggml.merges");
    if (v->bos >= 0) g_u32(&g, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos);
    if (v->eos >= 0) g_u32(&g, "tokenizer.ggml.eos_token_id", (uint32_t)v->eos);
    if (v->eos >= 0) g_u32(&g, "tokenizer.ggml.padding_token_id", (uint32_t)v->eos);
    g_bool(&g, "tokenizer.ggml.add_bos_token", v->add_bos);
    g_bool(&g, "tokenizer.ggml.add_eos_token", false);
    if (v->chat_template) g_str(&g, "tokenizer.chat_template", v->chat_template);

    /* Tensors. */
    g_copy(&g, m, "model.embed_tokens.weight", "token_embd.weight");
    char hf[256], gg[256];
    for (int L = 0; L < d->layers; L++) {
        static const struct { const char *hf, *gg; } attn[] = {
            {"input_layernorm.weight", "attn_norm.weight"},
            {"self_attn.q_a_proj.weight", "attn_q_a.weight"},
            {"self_attn.q_a_layernorm.weight", "attn_q_a_norm.weight"},
            {"self_attn.q_b_proj.weight", "attn_q_b.weight"},
            {"self_attn.q_proj.weight", "attn_q.weight"},
            {"self_attn.kv_a_proj_with_mqa.weight", "attn_kv_a_mqa.weight"},
            {"self_attn.kv_a_layernorm.weight", "attn_kv_a_norm.weight"},
            {"self_attn.o_proj.weight", "attn_output.weight"},
            {"post_attention_layernorm.weight", "ffn_norm.weight"},
            {"mlp.gate_proj.weight", "ffn_gate.weight"},
            {"mlp.up_proj.weight", "ffn_up.weight"},
            {"mlp.down_proj.weight", "ffn_down.weight"},
            {"mlp.gate.weight", "ffn_gate_inp.weight"},
            {"mlp.gate.e_score_correction_bias", "exp_probs_b.bias"},
            {"mlp.shared_experts.gate_proj.weight", "ffn_gate_shexp.weight"},
            {"mlp.shared_experts.up_proj.weight", "ffn_up_shexp.weight"},
            {"mlp.shared_experts.down_proj.weight", "ffn_down_shexp.weight"},
        };
        for (size_t i = 0; i < sizeof attn / sizeof attn[0]; i++) {
            snprintf(hf, sizeof hf, "model.layers.%d.%s", L, attn[i].hf);
            if (!model_find(m, hf)) continue; /* q_a vs q, dense vs MoE, bias only in V3 */
            snprintf(gg, sizeof gg, "blk.%d.%s", L, attn[i].gg);
            g_copy(&g, m, hf, gg);
        }

        snprintf(hf, sizeof hf, "model.layers.%d.self_attn.kv_b_proj.weight", L);
        const struct mtensor *kvb = need(m, hf);
        if (!mla_split) {
            snprintf(gg, sizeof gg, "blk.%d.attn_kv_b.weight", L);
            g_copy(&g, m, hf, gg);
        } else {
            /* kv_b viewed [n_head][nope + v][kv_lora]: k_b = the nope rows,
             * transposed per head to [n_head][kv_lora][nope]; v_b = the v
             * rows, [n_head][v][kv_lora]. */
            int64_t H = d->heads, R = d->kv_lora, N = d->nope, V = d->v;
            float *kb = keep(&g.k, xmalloc((size_t)(H * R * N) * sizeof(float)));
            float *vb = keep(&g.k, xmalloc((size_t)(H * V * R) * sizeof(float)));
            for (int64_t h = 0; h < H; h++) {
                const float *base = kvb->data + h * (N + V) * R;
                for (int64_t j = 0; j < N; j++)
                    for (int64_t c = 0; c < R; c++) kb[(h * R + c) * N + j] = base[j * R + c];
                memcpy(vb + h * V * R, base + N * R, (size_t)(V * R) * sizeof(float));
            }
            int64_t kshape[3] = {H, R, N}, vshape[3] = {H, V, R};
            snprintf(gg, sizeof gg, "blk.%d.attn_k_b.weight", L);
            g_tensor(&g, gg, false, 3, kshape, kb);
            snprintf(gg, sizeof gg, "blk.%d.attn_v_b.weight", L);
            g_tensor(&g, gg, false, 3, vshape, vb);
        }

        if (L < d->first_dense) continue;
        /* Routed experts stacked [n_expert][rows][cols], in convert's order
         * down, gate, up. */
        static const char *const w[] = {"down", "gate", "up"};
        for (int i = 0; i < 3 && d->stream_experts; i++) {
            const int64_t rows = i == 0 ? d->hidden : d->moe_inter, cols = i == 0 ? d->moe_inter : d->hidden;
            struct stream_fill *sf = keep(&g.k, xmalloc(sizeof *sf));
            snprintf(gg, sizeof gg, "blk.%d.ffn_%s_exps.weight", L, w[i]);
            sf->seed = stream_seed(m->seed, gg);
            sf->cols = cols;
            sf->scale = moe_f32_to_f16((float)(sqrt(3.0) / sqrt((double)cols) / 127.0));
            const int64_t shape[3] = {d->experts, rows, cols};
            const size_t row_bytes = (size_t)(cols / 32) * MOE_Q8_0_BYTES;
            gchk(moe_gguf_writer_add_tensor_fill(g.w, gg, MOE_W_Q8_0, 3, shape,
                                                 row_bytes * (size_t)rows * (size_t)d->experts, stream_fill_rows, sf,
                                                 row_bytes),
                 gg);
        }
        for (int i = 0; i < 3 && !d->stream_experts; i++) {
            snprintf(hf, sizeof hf, "model.layers.%d.mlp.experts.0.%s_proj.weight", L, w[i]);
            const struct mtensor *e0 = need(m, hf);
            int64_t rows = e0->shape[0], cols = e0->shape[1], per = rows * cols;
            if (!e0->data) {
                struct lazy_job *j = keep(&g.k, xcalloc(1, sizeof *j));
                j->m = m;
                j->layer = L;
                j->which = i;
                j->type = g_type(&g, false, 3, cols);
                int64_t shape[3] = {d->experts, rows, cols};
                snprintf(gg, sizeof gg, "blk.%d.ffn_%s_exps.weight", L, w[i]);
                gchk(moe_gguf_writer_add_tensor_fill(g.w, gg, j->type, 3, shape,
                                                     stored_bytes(j->type, per * d->experts, cols), g_fill_experts, j, 0),
                     gg);
                continue;
            }
            float *st = keep(&g.k, xmalloc((size_t)(per * d->experts) * sizeof(float)));
            for (int e = 0; e < d->experts; e++) {
                snprintf(hf, sizeof hf, "model.layers.%d.mlp.experts.%d.%s_proj.weight", L, e, w[i]);
                memcpy(st + e * per, need(m, hf)->data, (size_t)per * sizeof(float));
            }
            int64_t shape[3] = {d->experts, rows, cols};
            snprintf(gg, sizeof gg, "blk.%d.ffn_%s_exps.weight", L, w[i]);
            g_tensor(&g, gg, false, 3, shape, st);
        }
    }
    g_copy(&g, m, "model.norm.weight", "output_norm.weight");
    g_copy(&g, m, "lm_head.weight", "output.weight");

    char err[512];
    if (moe_gguf_writer_write(g.w, path, err, sizeof err)) die("%s", err);
    moe_gguf_writer_free(g.w);
    keep_free(&g.k);
}

/* ------------------------------------------------------------ self-check */

static void self_check(const struct model *m, enum format fmt, const char *out)
{
    const struct dims *d = &m->d;
    char err[512];
    struct moe_model_files *mf = NULL;
    if (moe_model_files_open(&mf, out, err, sizeof err)) die("self-check: %s", err);
    struct moe_config c;
    memset(&c, 0, sizeof c);
    if (moe_config_load(&c, mf, err, sizeof err)) die("self-check: %s", err);
    if (c.hidden_size != d->hidden || c.n_layers != d->layers || c.n_routed_experts != d->experts ||
        c.n_experts_per_tok != d->topk || c.vocab_size != d->vocab || c.q_lora_rank != d->q_lora ||
        c.kv_lora_rank != d->kv_lora || c.qk_nope_head_dim != d->nope || c.qk_rope_head_dim != d->rope ||
        c.v_head_dim != d->v || c.n_shared_experts != d->shared || c.n_group != d->n_group ||
        c.topk_group != d->topk_group || c.first_k_dense_replace != d->first_dense ||
        c.norm_topk_prob != d->norm_topk || c.scoring_func != (d->sigmoid ? MOE_SCORING_SIGMOID : MOE_SCORING_SOFTMAX) ||
        fabsf(c.routed_scaling_factor - (float)d->routed_scale) > 1e-6f || !c.rope_scaling.yarn ||
        fabsf(c.rope_scaling.mscale_all_dim - (float)d->mscale_all) > 1e-5f)
        die("self-check: %s: moecpu's config parser reads back different hyper-parameters", out);
    if (!format_is_gguf(fmt)) {
        if (c.fp8 != (fmt == FMT_HF_FP8)) die("self-check: %s: quantization_config read back wrong", out);
        size_t expect = m->n;
        for (size_t i = 0; i < m->n; i++)
            if (fmt == FMT_HF_FP8 && m->t[i].kind == K_PROJ) expect++;
        if (mf->n_tensors != expect)
            die("self-check: %s: %zu tensors read back, expected %zu", out, mf->n_tensors, expect);
    }
    moe_model_files_close(mf);
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f)
{
    fputs("usage: gen_model --style v3|v2lite --format FMT --seed N --out PATH [options]\n"
          "  FMT: hf-bf16 | hf-fp8 (directories), gguf-f32 | gguf-q8_0 | gguf-bf16 | gguf-f16 (files)\n"
          "  --layers N        decoder layers (v3: 4, v2lite: 27; llama.cpp reads 26/27 layers as\n"
          "                    'no q LoRA', so v2lite GGUF needs 26 or 27 and v3 GGUF must avoid them)\n"
          "  --vocab N         vocabulary (default 512; >= 2)\n"
          "  --hidden N        model width (v3: 128, v2lite: 64)\n"
          "  --heads N         attention heads (v3: 4, v2lite: 4)\n"
          "  --experts N       routed experts (16)\n"
          "  --topk N          experts per token (4)\n"
          "  --n-group N       expert groups (v3: 4, v2lite: 1)\n"
          "  --topk-group N    groups kept (v3: 2, v2lite: 1)\n"
          "  --shared N        shared experts (v3: 1, v2lite: 2)\n"
          "  --dense N         leading dense layers (first_k_dense_replace, 1)\n"
          "  --inter N         dense MLP width (v3: 256, v2lite: 128)\n"
          "  --moe-inter N     expert width (v3: 64, v2lite: 32)\n"
          "  --q-lora N        q LoRA rank (v3: 64; 0 = a single q_proj, v2lite)\n"
          "  --kv-lora N       kv LoRA rank (v3: 64, v2lite: 32)\n"
          "  --nope N --rope N --v-head N   head dims (32, 16, 32)\n"
          "  --mtp N           MTP layers after the main ones (HF only; GGUF skips them like convert)\n"
          "  --skew X          v3: add X to the correction bias of a quarter of each layer's experts\n"
          "  --zipf S          v3: Zipf-like expert popularity: the expert of rank r (random order\n"
          "                    per layer) gets -S*ln(r+1) added to its correction bias\n"
          "  --stream-experts  gguf-q8_0: routed experts drawn directly as Q8_0 blocks while the file\n"
          "                    is written (never held in memory: for models larger than RAM)\n"
          "  --router-std X    router logit spread (default 2.0)\n"
          "  --zero-expert L:E zero routed expert E of layer L (repeatable)\n"
          "  --round none|bf16|fp8  round the master weights as hf-bf16 / hf-fp8 store them, so\n"
          "                    gguf-f32 --round fp8 holds exactly the values of hf-fp8 (default: bf16\n"
          "                    for gguf-bf16, which then equals hf-bf16 exactly; else none)\n"
          "  --mla-split       GGUF: attn_k_b/attn_v_b (mainline llama.cpp only) instead of attn_kv_b\n"
          "  --shards N        HF: split model.safetensors into about N shards + index\n"
          "  --no-check        skip reading the output back with moecpu's readers\n"
          "  --tokenizer FILE  use this tokenizer.json (+ tokenizer_config.json beside it): GGUF gets its\n"
          "                    vocabulary/merges/added tokens as convert_hf_to_gguf.py writes them, HF\n"
          "                    directories a copy of both files; --vocab defaults to its size\n"
          "  --tokenizer-pre P GGUF tokenizer.ggml.pre (default deepseek-v3; deepseek-llm for V2)\n"
          "  --stream          draw projections and embeddings only while writing them, one tensor\n"
          "                    at a time (full-size models in little memory; no --round, --mtp,\n"
          "                    --zero-expert, gguf-bf16)\n",
          f);
}

static long long parse_int(const char *opt, const char *s, long long lo, long long hi)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) die("%s: '%s' is not an integer in [%lld, %lld]", opt, s, lo, hi);
    return v;
}

static double parse_double(const char *opt, const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) die("%s: '%s' is not a number", opt, s);
    return v;
}

static void set_style_defaults(struct dims *d, enum style st)
{
    memset(d, 0, sizeof *d);
    d->style = st;
    d->vocab = 512;
    d->experts = 16;
    d->topk = 4;
    d->first_dense = 1;
    d->nope = 32;
    d->rope = 16;
    d->v = 32;
    d->rope_theta = 10000.0;
    d->eps = 1e-6;
    d->yarn_factor = 40.0;
    d->yarn_orig = 4096;
    d->beta_fast = 32.0;
    d->beta_slow = 1.0;
    d->max_pos = 163840;
    d->router_std_mult = 2.0;
    if (st == STYLE_V3) {
        d->hidden = 128;
        d->inter = 256;
        d->moe_inter = 64;
        d->layers = 4;
        d->heads = 4;
        d->shared = 1;
        d->n_group = 4;
        d->topk_group = 2;
        d->q_lora = 64;
        d->kv_lora = 64;
        d->routed_scale = 2.5;
        d->norm_topk = true;
        d->sigmoid = true;
        d->topk_method = "noaux_tc";
        d->mscale = d->mscale_all = 1.0;
    } else {
        d->hidden = 64;
        d->inter = 128;
        d->moe_inter = 32;
        d->layers = 27;
        d->heads = 4;
        d->shared = 2;
        d->n_group = 1;
        d->topk_group = 1;
        d->q_lora = 0;
        d->kv_lora = 32;
        d->routed_scale = 1.0;
        d->norm_topk = false;
        d->sigmoid = false;
        d->topk_method = "greedy";
        d->mscale = d->mscale_all = 0.707;
    }
}

#define MAX_ZERO 64

int main(int argc, char **argv)
{
    const char *style_s = NULL, *format_s = NULL, *out = NULL, *round_s = NULL, *tokenizer = NULL, *tok_pre = NULL;
    bool have_seed = false, mla_split = false, check = true, stream = false, stream_x = false;
    uint64_t seed = 0;
    int shards = 0;
    double skew = 0.0;
    int zero_l[MAX_ZERO], zero_e[MAX_ZERO], n_zero = 0;
    /* Overrides, applied after the style defaults (-1: keep). */
    long long o_layers = -1, o_vocab = -1, o_hidden = -1, o_heads = -1, o_experts = -1, o_topk = -1, o_ngroup = -1,
              o_topkg = -1, o_shared = -1, o_dense = -1, o_inter = -1, o_moe_inter = -1, o_qlora = -1,
              o_kvlora = -1, o_nope = -1, o_rope = -1, o_v = -1, o_mtp = -1;
    double o_router_std = -1.0, o_zipf = 0.0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--mla-split")) { mla_split = true; continue; }
        if (!strcmp(a, "--no-check")) { check = false; continue; }
        if (!strcmp(a, "--stream-experts")) { stream_x = true; continue; }
        if (!strcmp(a, "--stream")) { stream = true; continue; }
        if (i + 1 >= argc) die("%s needs a value (or unknown option; see --help)", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--style")) style_s = v;
        else if (!strcmp(a, "--format")) format_s = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--round")) round_s = v;
        else if (!strcmp(a, "--tokenizer")) tokenizer = v;
        else if (!strcmp(a, "--tokenizer-pre")) tok_pre = v;
        else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') die("--seed: '%s' is not a non-negative integer", v);
            seed = s;
            have_seed = true;
        } else if (!strcmp(a, "--shards")) shards = (int)parse_int(a, v, 1, 10000);
        else if (!strcmp(a, "--skew")) skew = parse_double(a, v);
        else if (!strcmp(a, "--router-std")) o_router_std = parse_double(a, v);
        else if (!strcmp(a, "--zipf")) o_zipf = parse_double(a, v);
        else if (!strcmp(a, "--zero-expert")) {
            int l, e;
            char tail;
            if (sscanf(v, "%d:%d%c", &l, &e, &tail) != 2 || l < 0 || e < 0) die("--zero-expert: '%s' is not L:E", v);
            if (n_zero == MAX_ZERO) die("--zero-expert: at most %d", MAX_ZERO);
            zero_l[n_zero] = l;
            zero_e[n_zero++] = e;
        }
        else if (!strcmp(a, "--layers")) o_layers = parse_int(a, v, 1, 4096);
        else if (!strcmp(a, "--vocab")) o_vocab = parse_int(a, v, 2, 1 << 24);
        else if (!strcmp(a, "--hidden")) o_hidden = parse_int(a, v, 1, 1 << 16);
        else if (!strcmp(a, "--heads")) o_heads = parse_int(a, v, 1, 1024);
        else if (!strcmp(a, "--experts")) o_experts = parse_int(a, v, 1, 4096);
        else if (!strcmp(a, "--topk")) o_topk = parse_int(a, v, 1, 4096);
        else if (!strcmp(a, "--n-group")) o_ngroup = parse_int(a, v, 1, 4096);
        else if (!strcmp(a, "--topk-group")) o_topkg = parse_int(a, v, 1, 4096);
        else if (!strcmp(a, "--shared")) o_shared = parse_int(a, v, 0, 64);
        else if (!strcmp(a, "--dense")) o_dense = parse_int(a, v, 0, 4096);
        else if (!strcmp(a, "--inter")) o_inter = parse_int(a, v, 1, 1 << 20);
        else if (!strcmp(a, "--moe-inter")) o_moe_inter = parse_int(a, v, 1, 1 << 20);
        else if (!strcmp(a, "--q-lora")) o_qlora = parse_int(a, v, 0, 1 << 16);
        else if (!strcmp(a, "--kv-lora")) o_kvlora = parse_int(a, v, 1, 1 << 16);
        else if (!strcmp(a, "--nope")) o_nope = parse_int(a, v, 1, 4096);
        else if (!strcmp(a, "--rope")) o_rope = parse_int(a, v, 2, 4096);
        else if (!strcmp(a, "--v-head")) o_v = parse_int(a, v, 1, 4096);
        else if (!strcmp(a, "--mtp")) o_mtp = parse_int(a, v, 0, 8);
        else die("unknown option %s (see --help)", a);
    }
    if (!style_s || !format_s || !have_seed || !out) {
        usage(stderr);
        die("--style, --format, --seed and --out are required");
    }
    enum style st;
    if (!strcmp(style_s, "v3")) st = STYLE_V3;
    else if (!strcmp(style_s, "v2lite")) st = STYLE_V2LITE;
    else die("--style: '%s' unknown (v3, v2lite)", style_s);
    int fi = -1;
    for (int i = 0; i < (int)(sizeof format_names / sizeof format_names[0]); i++)
        if (!strcmp(format_s, format_names[i])) fi = i;
    if (fi < 0) die("--format: '%s' unknown (hf-bf16, hf-fp8, gguf-f32, gguf-q8_0, gguf-bf16, gguf-f16)", format_s);
    enum format fmt = (enum format)fi;
    /* A BF16 GGUF is what convert makes of a BF16 checkpoint: its F32
     * tensors (norms, router) then hold bf16 values too, and the file
     * matches hf-bf16 of the same seed exactly. */
    enum round_mode rmode = fmt == FMT_GGUF_BF16 ? ROUND_BF16 : ROUND_NONE;
    if (round_s) {
        if (!strcmp(round_s, "bf16")) rmode = ROUND_BF16;
        else if (!strcmp(round_s, "fp8")) rmode = ROUND_FP8;
        else if (strcmp(round_s, "none") != 0) die("--round: '%s' unknown (none, bf16, fp8)", round_s);
    }

    struct model m = {.seed = seed};
    struct dims *d = &m.d;
    set_style_defaults(d, st);
#define OVR(o, field) \
    if ((o) >= 0) d->field = (o)
    if (tokenizer && o_vocab < 0) o_vocab = tok_size(tokenizer);
    OVR(o_layers, layers);
    OVR(o_vocab, vocab);
    OVR(o_hidden, hidden);
    OVR(o_heads, heads);
    OVR(o_experts, experts);
    OVR(o_topk, topk);
    OVR(o_ngroup, n_group);
    OVR(o_topkg, topk_group);
    OVR(o_shared, shared);
    OVR(o_dense, first_dense);
    OVR(o_inter, inter);
    OVR(o_moe_inter, moe_inter);
    OVR(o_qlora, q_lora);
    OVR(o_kvlora, kv_lora);
    OVR(o_nope, nope);
    OVR(o_rope, rope);
    OVR(o_v, v);
    OVR(o_mtp, mtp);
#undef OVR
    if (o_router_std >= 0.0) d->router_std_mult = o_router_std;
    d->zipf = o_zipf;
    d->stream_experts = stream_x;
    if (stream_x && (fmt != FMT_GGUF_Q8_0 || n_zero || d->mtp))
        die("--stream-experts is for gguf-q8_0 without --zero-expert or --mtp");
    if (stream_x && (d->hidden % 32 || d->moe_inter % 32)) die("--stream-experts needs --hidden and --moe-inter divisible by 32");
    if (o_ngroup >= 0 && o_topkg < 0 && d->topk_group > d->n_group) d->topk_group = d->n_group;
    /* softmax routing over groups is DeepSeek-V2's group_limited_greedy
     * (groups ranked by their max score), what GGUF readers infer too */
    if (!d->sigmoid && d->n_group > 1) d->topk_method = "group_limited_greedy";

    /* Consistency (moecpu's config validation repeats most of it). */
    if (d->rope % 2) die("--rope must be even");
    if (d->experts % d->n_group) die("%d experts do not split into %d groups", d->experts, d->n_group);
    if (d->topk_group > d->n_group) die("--topk-group %d > --n-group %d", d->topk_group, d->n_group);
    if (d->topk > d->topk_group * (d->experts / d->n_group))
        die("top-%d needs more experts than %d groups of %d hold", d->topk, d->topk_group, d->experts / d->n_group);
    if (d->first_dense > d->layers) die("--dense %d > --layers %d", d->first_dense, d->layers);
    if (d->shared < 1) die("--shared must be >= 1 (llama.cpp's deepseek2 needs the shared expert tensors)");
    if (d->vocab < 2) die("--vocab must be >= 2");
    if (skew != 0.0 && !d->sigmoid) die("--skew needs the v3 style (it acts through the correction bias)");
    if (d->zipf != 0.0 && !d->sigmoid) die("--zipf needs the v3 style (it acts through the correction bias)");
    if (d->mtp > 0 && d->q_lora == 0) die("--mtp: MTP layers are a V3 feature (q LoRA needed)");
    for (int i = 0; i < n_zero; i++)
        if (zero_l[i] < d->first_dense || zero_l[i] >= d->layers + d->mtp || zero_e[i] >= d->experts)
            die("--zero-expert %d:%d: no such routed expert (MoE layers %d..%d, experts 0..%d)", zero_l[i], zero_e[i],
                d->first_dense, d->layers + d->mtp - 1, d->experts - 1);
    if (format_is_gguf(fmt)) {
        bool lite_count = d->layers == 26 || d->layers == 27;
        if (d->q_lora > 0 && lite_count)
            fprintf(stderr, "gen_model: warning: llama.cpp reads a %d-layer deepseek2 GGUF as having no q LoRA: it "
                            "will not load this file\n", d->layers);
        if (d->q_lora == 0 && !lite_count)
            fprintf(stderr, "gen_model: warning: llama.cpp needs 26 or 27 layers to accept a deepseek2 GGUF without "
                            "q LoRA: it will not load this file\n");
    } else if (mla_split) {
        die("--mla-split is for GGUF formats");
    }
    if (shards && format_is_gguf(fmt)) die("--shards is for HF formats");

    if (stream && (rmode != ROUND_NONE || d->mtp > 0 || n_zero > 0))
        die("--stream cannot be combined with --round, --mtp, --zero-expert or gguf-bf16");
    m.lazy = stream;
    build_model(&m, skew);
    for (int i = 0; i < n_zero; i++) zero_expert(&m, zero_l[i], zero_e[i]);
    round_model(&m, rmode, fmt == FMT_HF_FP8);

    struct vocab voc;
    if (tokenizer) {
        if (tok_size(tokenizer) > d->vocab) die("--vocab %lld is smaller than the tokenizer (%lld tokens)", (long long)d->vocab,
                                                (long long)tok_size(tokenizer));
        load_tokenizer_json(&voc, tokenizer, d->vocab);
    } else {
        build_vocab(&voc, d->vocab);
    }
    if (tok_pre) voc.pre = tok_pre;
    if (format_is_gguf(fmt)) {
        write_gguf(&m, fmt, out, mla_split, &voc);
    } else {
        write_hf(&m, fmt, out, shards);
        write_config_json(d, out, fmt == FMT_HF_FP8);
        if (tokenizer) {
            char *dst = xfmt("%s/tokenizer.json", out);
            copy_file(tokenizer, dst);
            free(dst);
            const char *slash = strrchr(tokenizer, '/');
            char *cfg = slash ? xfmt("%.*s/tokenizer_config.json", (int)(slash - tokenizer), tokenizer)
                              : xstrdup("tokenizer_config.json");
            dst = xfmt("%s/tokenizer_config.json", out);
            if (access(cfg, F_OK) == 0) copy_file(cfg, dst);
            free(dst);
            free(cfg);
        } else {
            write_tokenizer_json(&voc, d, out);
        }
    }
    if (check) self_check(&m, fmt, out);
    free_vocab(&voc);
    for (size_t i = 0; i < m.n; i++) {
        free(m.t[i].name);
        free(m.t[i].data);
    }
    free(m.t);
    return 0;
}
