/*
 * src/forward.c — contexts (one sequence: latent KV cache, scratch,
 * logits) and the forward pass, with the semantics of DeepSeek's official
 * inference/model.py (see /work/shared/FACTS.md):
 *
 *   x = embed(ids)
 *   per layer:  x += MLA(rmsnorm(x))      weight-absorbed attention over a
 *                                         latent cache [kv_lora | k_rope]
 *               x += FFN(rmsnorm(x))      dense MLP or DeepSeekMoE
 *   logits = lm_head(rmsnorm(x))
 *
 * A batch of T tokens (prefill chunk, or T = 1 for decode) runs through
 * the same code: projections are one GEMM (GEMV when T = 1) split by rows
 * over the pool; in MoE layers the batch's tokens are grouped per expert so
 * each routed expert's weights are read once per batch.  Attention is
 * causal inside the batch: the batch's latents are written to the cache
 * first, then token t attends to cache rows [0, pos0 + t].
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "pager.h"

#define DEFAULT_BATCH 512
#define DEFAULT_CTX 4096
#define OLAT_CHUNK 64          /* latent columns per attention-output task */
/* Heads of o_lat are kv_lora + 16 floats apart: at kv_lora 512 (2 KiB) the
 * rows of heads h and h + 2 were 4 KiB apart, and gemm_t's panel loop (now
 * used for the BF16 cache; the F32 cache takes its register-block path),
 * which stores head h then loads head h + 2, stalled on 4K aliasing (a
 * quarter of decode time at 600 positions). */
#define OLAT_LD(kvr) ((kvr) + 16)
/* Decompressed attention: keys/values per tile, and the smallest batch for
 * which AUTO uses it (see dec_wanted: measured, README "Attention paths"). */
#define DEC_TILE 256
#define DEC_MIN_T 128

/* int8 activations for Q8_0 weights: cap values (int8) and cap/32 blocks. */
struct qbuf {
    int8_t *q;
    float *d;
    int32_t *s;
    size_t cap;
};

/* One matrix product of a pool job: rows [row0, row1) of w on activations a. */
struct mm_item {
    const struct moe_mat *w;
    int64_t row0, row1;
    struct moe_acts a;
    float *y;
    int64_t ldy;
    int64_t chunk;             /* rows per task */
};

struct moe_context {
    struct moe_model *m;
    int64_t n_ctx, pos;
    enum moe_kv_type kv_type;
    int n_batch;
    /* KV cache: [n_layers][n_ctx][kv_lora + rope] of F32 or BF16 */
    unsigned char *kv;
    size_t kv_row_bytes, kv_bytes;
    /* logits of the last eval */
    float *logits;
    int64_t n_logits;
    size_t logits_cap;         /* rows */
    /* scratch for T <= n_batch tokens (R = T * top-k gathered rows) */
    float *x, *h;              /* [T][D] */
    float *qa;                 /* [T][q_lora] */
    float *q;                  /* [T][H * (nope + rope)] */
    float *kva;                /* [T][kv_lora + rope] */
    float *qcat;               /* [T][H][kv_lora + rope]: absorbed query | roped q */
    float *tmp;                /* [T][max(H * kv_lora, H * (nope + v))] */
    float *scores;             /* [H][n_ctx] */
    float *olat;               /* [T][H][olat_ld]: kv_lora used per head */
    float *attn;               /* [T][H * v] */
    float *ybuf;               /* [T][D] */
    float *fa, *fb;            /* [max(T * F, R * Fe)] */
    float *fsa, *fsb;          /* [T * Fs] */
    float *gx;                 /* [R][D] gathered expert inputs */
    float *yexp;               /* [R][D] expert outputs */
    float *rl;                 /* [T][E] router logits */
    float *rs;                 /* [2 * E] routing scratch */
    int *sel;                  /* [T][top-k] chosen experts */
    float *selw;               /* [T][top-k] their weights */
    int *cnt, *off;            /* [E + 1] per-expert counts and offsets */
    int *slot_tok;             /* [R] token of each gathered row */
    float *slot_w;             /* [R] its weight */
    float *cosb, *sinb;        /* [T][rope / 2] */
    int *need, *wave;          /* [E] experts a MoE layer needs; those computed in one wave */
    unsigned char *taken;      /* [E] */
    struct moe_mat *wmat;      /* [E][3] gate, up, down of the experts being computed */
    int *la_sel;               /* [T][top-k] look-ahead routing */
    float *la_w;
    struct qbuf qin, qaux, qg, qsh;
    struct mm_item *items;
    int *item_first;           /* [max_items + 1] first task of each item */
    int max_items;
    /* decompressed attention (prefill; NULL unless the context may use it) */
    enum moe_attn_path attn_path;
    float *dlat;               /* [DEC_TILE][kv_lora]: BF16 cache rows as FP32 */
    struct qbuf dq;            /* [DEC_TILE][kv_lora] int8 latents for Q8_0 kv_b / v_b */
    float *dkv;                /* [DEC_TILE][H][nope + v]: decompressed K_nope | V */
    float *dscr;               /* per thread: K [DEC_TILE][nope + rope] | S [T][DEC_TILE] | PV [T][v] */
    size_t dscr_per;           /* floats per thread */
    float *dm, *dl;            /* [T][H] running max and sum of the online softmax */
    float *dw;                 /* Q8_0 kv_b (or v_b) dequantized, [rows][kv_lora] */
};

/* ---- small helpers */

static void *xalloc(size_t n, size_t size, int *fail)
{
    if (n == 0) n = 1;
    void *p = calloc(n, size);
    if (!p) *fail = 1;
    return p;
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Activations over x ([n][ldx], k used); quantized into qb when need_q. */
static void acts_make(const struct moe_kernels *k, struct moe_acts *a, const float *x, int n, int64_t kk,
                      int64_t ldx, struct qbuf *qb, bool need_q)
{
    *a = (struct moe_acts){.k = kk, .n = n, .x = x, .ldx = ldx};
    if (!need_q) return;
    for (int j = 0; j < n; j++)
        k->quantize_act(qb->q + (size_t)j * kk, qb->d + (size_t)j * (kk / 32), qb->s + (size_t)j * (kk / 32),
                        x + (size_t)j * ldx, kk);
    a->q = qb->q;
    a->qd = qb->d;
    a->qs = qb->s;
}

static bool is_q8(const struct moe_mat *w) { return w->type == MOE_W_Q8_0; }

/* ---- matrix products over the pool */

/* Jobs smaller than this many multiply-adds run on the calling thread:
 * waking the pool costs more than they do (decode of a small model). */
#define POOL_MIN_WORK 32768.0

static void run_job(struct moe_context *c, moe_task_fn fn, void *ctx, int n_tasks, double work)
{
    if (work < POOL_MIN_WORK || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t);
        return;
    }
    moe_pool_run(c->m->pool, fn, ctx, n_tasks);
}

struct mm_job {
    const struct moe_kernels *k;
    const struct mm_item *items;
    const int *first;
    int n_items;
};

static void mm_task(void *ctx, int t)
{
    const struct mm_job *j = ctx;
    int lo = 0, hi = j->n_items - 1;
    while (lo < hi) {          /* the last item whose first task <= t */
        int mid = (lo + hi + 1) / 2;
        if (j->first[mid] <= t) lo = mid;
        else hi = mid - 1;
    }
    const struct mm_item *it = &j->items[lo];
    const int64_t r0 = it->row0 + (int64_t)(t - j->first[lo]) * it->chunk;
    const int64_t r1 = r0 + it->chunk < it->row1 ? r0 + it->chunk : it->row1;
    const moe_matmul_fn fn = it->a.n == 1 ? j->k->gemv[it->w->type] : j->k->gemm[it->w->type];
    fn(it->w, r0, r1, &it->a, it->y, it->ldy);
}

/* Run c->items[0, n): each item's rows split into tasks of a multiple of
 * 16 rows, enough of them to keep every thread busy. */
static void mm_run(struct moe_context *c, int n)
{
    const int nt = moe_pool_threads(c->m->pool);
    int total = 0;
    double all = 0;
    for (int i = 0; i < n; i++) {
        struct mm_item *it = &c->items[i];
        const int64_t rows = it->row1 - it->row0;
        const double work = (double)rows * (double)it->w->cols * (double)it->a.n;
        all += work;
        int64_t want = (int64_t)(work / 65536.0);
        if (want > 2 * nt) want = 2 * nt;
        if (want < 1) want = 1;
        int64_t chunk = (rows + want - 1) / want;
        chunk = (chunk + 15) / 16 * 16;
        if (chunk < 1) chunk = 1;
        it->chunk = chunk;
        c->item_first[i] = total;
        total += (int)((rows + chunk - 1) / chunk);
    }
    c->item_first[n] = total;
    struct mm_job j = {c->m->k, c->items, c->item_first, n};
    run_job(c, mm_task, &j, total, all);
}

static struct mm_item *item(struct moe_context *c, int i, const struct moe_mat *w, int64_t row0, int64_t row1,
                            const struct moe_acts *a, float *y, int64_t ldy)
{
    struct mm_item *it = &c->items[i];
    *it = (struct mm_item){.w = w, .row0 = row0, .row1 = row1, .a = *a, .y = y, .ldy = ldy};
    return it;
}

/* y[n][w->rows] = w x for one matrix. */
static void matmul(struct moe_context *c, const struct moe_mat *w, const struct moe_acts *a, float *y)
{
    item(c, 0, w, 0, w->rows, a, y, w->rows);
    mm_run(c, 1);
}

/* ---- context */

void moe_context_params_init(struct moe_context_params *p)
{
    memset(p, 0, sizeof *p);
}

size_t moe_context_kv_bytes(const struct moe_context *c) { return c->kv_bytes; }
int64_t moe_context_n_ctx(const struct moe_context *c) { return c->n_ctx; }
int64_t moe_context_pos(const struct moe_context *c) { return c->pos; }

void moe_context_reset(struct moe_context *c)
{
    c->pos = 0;
    c->n_logits = 0;
}

int moe_context_truncate(struct moe_context *c, int64_t n_keep)
{
    if (n_keep < 0 || n_keep > c->pos) return MOECPU_ERR_INVALID;
    c->pos = n_keep;           /* rows < n_keep depend only on tokens < n_keep */
    c->n_logits = 0;
    return MOECPU_OK;
}

const float *moe_context_logits(const struct moe_context *c, int64_t *n_rows)
{
    if (n_rows) *n_rows = c->n_logits;
    return c->n_logits ? c->logits : NULL;
}

static void qbuf_free(struct qbuf *b)
{
    free(b->q);
    free(b->d);
    free(b->s);
}

static void qbuf_alloc(struct qbuf *b, size_t cap, int *fail)
{
    b->cap = cap;
    b->q = xalloc(cap, 1, fail);
    b->d = xalloc(cap / 32 + 1, sizeof(float), fail);
    b->s = xalloc(cap / 32 + 1, sizeof(int32_t), fail);
}

void moe_context_free(struct moe_context *c)
{
    if (!c) return;
    free(c->kv);
    free(c->logits);
    void *bufs[] = {c->x, c->h, c->qa, c->q, c->kva, c->qcat, c->tmp, c->scores, c->olat, c->attn, c->ybuf,
                    c->fa, c->fb, c->fsa, c->fsb, c->gx, c->yexp, c->rl, c->rs, c->sel, c->selw, c->cnt, c->off,
                    c->slot_tok, c->slot_w, c->cosb, c->sinb, c->items, c->item_first,
                    c->need, c->wave, c->taken, c->wmat, c->la_sel, c->la_w};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    qbuf_free(&c->qin);
    qbuf_free(&c->qaux);
    qbuf_free(&c->qg);
    qbuf_free(&c->qsh);
    qbuf_free(&c->dq);
    free(c->dlat);
    free(c->dkv);
    free(c->dscr);
    free(c->dm);
    free(c->dl);
    free(c->dw);
    free(c);
}

int moe_context_new(struct moe_context **out, struct moe_model *m, const struct moe_context_params *p, char *err,
                    size_t errlen)
{
    *out = NULL;
    const struct moe_config *cf = &m->cfg;
    struct moe_context_params dp;
    if (!p) {
        moe_context_params_init(&dp);
        p = &dp;
    }
    int64_t n_ctx = p->n_ctx > 0 ? p->n_ctx : (cf->max_position_embeddings < DEFAULT_CTX ? cf->max_position_embeddings
                                                                                         : DEFAULT_CTX);
    if (n_ctx > ((int64_t)1 << 30))
        return moe_errorf(err, errlen, MOE_ERR_INVALID, "context of %lld tokens is too large (at most 2^30)",
                          (long long)n_ctx);
    if (p->kv_type != MOE_KV_F32 && p->kv_type != MOE_KV_BF16)
        return moe_errorf(err, errlen, MOE_ERR_INVALID, "unknown KV cache type %d (f32 or bf16)", (int)p->kv_type);
    struct moe_context *c = calloc(1, sizeof *c);
    if (!c) return moe_errorf(err, errlen, MOE_ERR_NOMEM, "out of memory");
    c->m = m;
    c->n_ctx = n_ctx;
    c->kv_type = p->kv_type;
    int T = p->n_batch > 0 ? p->n_batch : DEFAULT_BATCH;
    if (T > 4096) T = 4096;
    c->n_batch = T;

    const int64_t D = cf->hidden_size, H = cf->n_heads, nope = cf->qk_nope_head_dim, rope = cf->qk_rope_head_dim;
    const int64_t v = cf->v_head_dim, kvr = cf->kv_lora_rank, qr = cf->q_lora_rank, F = cf->intermediate_size;
    const int64_t Fe = cf->moe_intermediate_size, Fs = (int64_t)cf->n_shared_experts * Fe;
    const int E = cf->n_routed_experts, K = cf->n_experts_per_tok > 0 ? cf->n_experts_per_tok : 1;
    const int64_t R = (int64_t)T * K, kvw = kvr + rope;

    /* KV cache */
    const size_t el = c->kv_type == MOE_KV_F32 ? 4 : 2;
    c->kv_row_bytes = (size_t)kvw * el;
    size_t total;
    if (moe_mul_size(c->kv_row_bytes, (size_t)n_ctx, &total) || moe_mul_size(total, (size_t)cf->n_layers, &total)) {
        moe_context_free(c);
        return moe_errorf(err, errlen, MOE_ERR_NOMEM, "KV cache size overflows");
    }
    c->kv_bytes = total;
    c->kv = malloc(total ? total : 1);
    if (!c->kv) {
        moe_context_free(c);
        return moe_errorf(err, errlen, MOE_ERR_NOMEM, "out of memory allocating the KV cache (%.1f MiB for %lld tokens)",
                          (double)total / 1048576.0, (long long)n_ctx);
    }

    int fail = 0;
    const size_t t = (size_t)T;
    c->x = xalloc(t * (size_t)D, sizeof(float), &fail);
    c->h = xalloc(t * (size_t)D, sizeof(float), &fail);
    c->qa = xalloc(t * (size_t)qr, sizeof(float), &fail);
    c->q = xalloc(t * (size_t)(H * (nope + rope)), sizeof(float), &fail);
    c->kva = xalloc(t * (size_t)kvw, sizeof(float), &fail);
    c->qcat = xalloc(t * (size_t)(H * kvw), sizeof(float), &fail);
    c->tmp = xalloc(t * (size_t)max64(H * kvr, H * (nope + v)), sizeof(float), &fail);
    c->scores = xalloc((size_t)(H * n_ctx), sizeof(float), &fail);
    c->olat = xalloc(t * (size_t)(H * OLAT_LD(kvr)), sizeof(float), &fail);
    c->attn = xalloc(t * (size_t)(H * v), sizeof(float), &fail);
    c->ybuf = xalloc(t * (size_t)D, sizeof(float), &fail);
    const size_t fsz = (size_t)max64((int64_t)t * F, R * Fe);
    c->fa = xalloc(fsz, sizeof(float), &fail);
    c->fb = xalloc(fsz, sizeof(float), &fail);
    c->fsa = xalloc(t * (size_t)Fs, sizeof(float), &fail);
    c->fsb = xalloc(t * (size_t)Fs, sizeof(float), &fail);
    c->gx = xalloc((size_t)R * (size_t)D, sizeof(float), &fail);
    c->yexp = xalloc((size_t)R * (size_t)D, sizeof(float), &fail);
    c->rl = xalloc(t * (size_t)E, sizeof(float), &fail);
    c->rs = xalloc(2 * (size_t)E, sizeof(float), &fail);
    c->sel = xalloc((size_t)R, sizeof(int), &fail);
    c->selw = xalloc((size_t)R, sizeof(float), &fail);
    c->cnt = xalloc((size_t)E + 1, sizeof(int), &fail);
    c->off = xalloc((size_t)E + 1, sizeof(int), &fail);
    c->slot_tok = xalloc((size_t)R, sizeof(int), &fail);
    c->slot_w = xalloc((size_t)R, sizeof(float), &fail);
    c->cosb = xalloc(t * (size_t)(rope / 2), sizeof(float), &fail);
    c->sinb = xalloc(t * (size_t)(rope / 2), sizeof(float), &fail);
    c->need = xalloc((size_t)E, sizeof(int), &fail);
    c->wave = xalloc((size_t)E, sizeof(int), &fail);
    c->taken = xalloc((size_t)E, 1, &fail);
    c->wmat = xalloc(3 * (size_t)E, sizeof(struct moe_mat), &fail);
    c->la_sel = xalloc((size_t)R, sizeof(int), &fail);
    c->la_w = xalloc((size_t)R, sizeof(float), &fail);
    int64_t kmax = D;
    const int64_t widths[] = {qr, kvr, H * v, F, Fs, Fe, nope};
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++) kmax = max64(kmax, widths[i]);
    qbuf_alloc(&c->qin, t * (size_t)kmax, &fail);
    qbuf_alloc(&c->qaux, (size_t)max64(max64((int64_t)t * kmax, R * Fe), (int64_t)t * H * max64(nope, kvr)), &fail);
    qbuf_alloc(&c->qg, (size_t)R * (size_t)D, &fail);
    qbuf_alloc(&c->qsh, t * (size_t)Fs, &fail);
    c->max_items = (int)max64(2 * (int64_t)E + 4, H + 4);
    c->items = xalloc((size_t)c->max_items, sizeof *c->items, &fail);
    c->item_first = xalloc((size_t)c->max_items + 1, sizeof(int), &fail);
    c->attn_path = p->attn;
    if (c->attn_path == MOE_ATTN_DECOMPRESSED || (c->attn_path == MOE_ATTN_AUTO && T >= DEC_MIN_T)) {
        const size_t lt = DEC_TILE, nt = (size_t)moe_pool_threads(m->pool);
        c->dlat = xalloc(lt * (size_t)kvr, sizeof(float), &fail);
        qbuf_alloc(&c->dq, lt * (size_t)kvr, &fail);
        c->dkv = xalloc(lt * (size_t)(H * (nope + v)), sizeof(float), &fail);
        c->dscr_per = lt * (size_t)(nope + rope) + t * lt + t * (size_t)v;
        c->dscr = xalloc(nt * c->dscr_per, sizeof(float), &fail);
        c->dm = xalloc(t * (size_t)H, sizeof(float), &fail);
        c->dl = xalloc(t * (size_t)H, sizeof(float), &fail);
        if (cf->n_layers > 0) {
            const struct moe_layer *L0 = &m->layers[0];
            const struct moe_mat *wb = L0->kv_split ? &L0->v_b : &L0->kv_b;
            if (is_q8(wb)) c->dw = xalloc((size_t)wb->rows * (size_t)kvr, sizeof(float), &fail);
        }
    }
    if (fail) {
        moe_context_free(c);
        return moe_errorf(err, errlen, MOE_ERR_NOMEM, "out of memory allocating scratch for a batch of %d tokens", T);
    }
    *out = c;
    return MOE_OK;
}

/* ---- attention (MLA, weight-absorbed) */

static unsigned char *kv_row(struct moe_context *c, int layer, int64_t pos)
{
    return c->kv + ((size_t)layer * (size_t)c->n_ctx + (size_t)pos) * c->kv_row_bytes;
}

/* kv_b form: q_lat[t][h] = sum_i q_nope[t][h][i] * W_UK_h[i][:], a product
 * with W transposed (gemm_t), one task per head. */
struct absorb_job {
    struct moe_context *c;
    const struct moe_mat *kv_b;
    int T;
};

static void absorb_task(void *ctx, int h)
{
    const struct absorb_job *j = ctx;
    struct moe_context *c = j->c;
    const struct moe_config *cf = &c->m->cfg;
    const int64_t nope = cf->qk_nope_head_dim, rope = cf->qk_rope_head_dim, v = cf->v_head_dim;
    const int64_t kvr = cf->kv_lora_rank, kvw = kvr + rope, qw = (int64_t)cf->n_heads * (nope + rope);
    const int64_t r0 = h * (nope + v);
    c->m->k->gemm_t[j->kv_b->type](j->kv_b, r0, r0 + nope, 0, kvr, c->q + h * (nope + rope), qw, j->T,
                                   c->qcat + (size_t)h * kvw, (int64_t)cf->n_heads * kvw);
}

/* Softmax of one token's scores, head by head. */
struct softmax_job {
    struct moe_context *c;
    int64_t len;
    float scale;
};

static void softmax_task(void *ctx, int h)
{
    const struct softmax_job *j = ctx;
    float *s = j->c->scores + (size_t)h * (size_t)j->c->n_ctx;
    for (int64_t i = 0; i < j->len; i++) s[i] *= j->scale;
    j->c->m->k->softmax(s, j->len);
}

/* o_lat[h][c0:c1] = sum_s p[h][s] * latent[s][c0:c1]: the cache (F32 or
 * BF16 rows [len][kv_lora + rope]) times the probabilities, transposed
 * (gemm_t); one task per column chunk. */
struct olat_job {
    struct moe_context *c;
    struct moe_mat cache;      /* rows [0, len) */
    float *out;                /* [H][OLAT_LD(kv_lora)] */
};

static void olat_task(void *ctx, int task)
{
    const struct olat_job *j = ctx;
    struct moe_context *c = j->c;
    const int64_t kvr = c->m->cfg.kv_lora_rank;
    const int64_t c0 = (int64_t)task * OLAT_CHUNK, c1 = c0 + OLAT_CHUNK < kvr ? c0 + OLAT_CHUNK : kvr;
    c->m->k->gemm_t[j->cache.type](&j->cache, 0, j->cache.rows, c0, c1, c->scores, c->n_ctx, c->m->cfg.n_heads,
                                   j->out, OLAT_LD(kvr));
}

/* ---- attention, decompressed (prefill of big batches)
 *
 * K_nope and V of every cached token are decompressed from the latents
 * (kv_b, or k_b / v_b) tile by tile, DEC_TILE keys at a time, and each
 * head runs standard attention over them: scores = q_nope k_nope + q_rope
 * k_rope, an online softmax across tiles (running max m and sum l; per
 * tile the kernel softmax of the row, rescaled), out = sum p V.  Costs
 * L * H * (nope + v) * kv_lora for the decompression plus T * H * L *
 * (nope + rope + v) for attention, against T * H * L * (2 kv_lora + rope)
 * absorbed: cheaper for big batches T. */

/* Decompress cached latents [s0, s0 + n) of a layer into c->dkv. */
struct dec_kv_job {
    struct moe_context *c;
    const struct moe_layer *L;
    const struct moe_mat *vb;  /* v_b, or its FP32 copy */
    const float *lat;
    int64_t ldl;
    int n;
};

static void dec_split_task(void *ctx, int h)
{
    const struct dec_kv_job *j = ctx;
    struct moe_context *c = j->c;
    const struct moe_config *cf = &c->m->cfg;
    const struct moe_kernels *k = c->m->k;
    const int64_t nope = cf->qk_nope_head_dim, v = cf->v_head_dim, kvr = cf->kv_lora_rank;
    const int64_t ld = (int64_t)cf->n_heads * (nope + v);
    /* K_nope_h[s] = lat[s] k_b_h (k_b_h = W_UK_h^T: [kv_lora][nope]) */
    k->gemm_t[j->L->k_b.type](&j->L->k_b, h * kvr, (h + 1) * kvr, 0, nope, j->lat, j->ldl, j->n,
                              c->dkv + h * (nope + v), ld);
    /* V_h[s] = v_b_h lat[s]: rows h*v.. of v_b land at column h*(nope+v)+nope */
    struct moe_acts a = {.k = kvr, .n = j->n, .x = j->lat, .ldx = j->ldl};
    if (is_q8(j->vb)) {
        a.q = c->dq.q;
        a.qd = c->dq.d;
        a.qs = c->dq.s;
    }
    const moe_matmul_fn fn = j->n == 1 ? k->gemv[j->vb->type] : k->gemm[j->vb->type];
    fn(j->vb, h * v, (h + 1) * v, &a, c->dkv + (h + 1) * nope, ld);
}

static void dec_decompress(struct moe_context *c, int layer, int64_t s0, int n)
{
    const struct moe_config *cf = &c->m->cfg;
    const struct moe_kernels *k = c->m->k;
    const struct moe_layer *L = &c->m->layers[layer];
    const int64_t kvr = cf->kv_lora_rank, kvw = kvr + cf->qk_rope_head_dim;
    const int H = cf->n_heads;
    const float *lat;
    int64_t ldl;
    if (c->kv_type == MOE_KV_F32) {
        lat = (const float *)kv_row(c, layer, s0);
        ldl = kvw;
    } else {
        for (int s = 0; s < n; s++) {
            const unsigned char *row = kv_row(c, layer, s0 + s);
            for (int64_t i = 0; i < kvr; i++) {
                uint16_t b;
                memcpy(&b, row + 2 * i, 2);
                c->dlat[(size_t)s * kvr + i] = moe_bf16_to_f32(b);
            }
        }
        lat = c->dlat;
        ldl = kvr;
    }
    /* Q8_0 weights: decompress with FP32 weights and latents, as exact as
     * the absorbed path (a Q8_0 GEMM would round the latents to int8). */
    const struct moe_mat *wb = L->kv_split ? &L->v_b : &L->kv_b;
    struct moe_mat wf = *wb;
    if (is_q8(wb) && c->dw) {
        for (int64_t r = 0; r < wb->rows; r++) moe_ref_dequant_row(c->dw + (size_t)r * kvr, wb, r);
        wf = (struct moe_mat){.type = MOE_W_F32, .rows = wb->rows, .cols = kvr, .data = c->dw};
    }
    struct moe_acts a;
    acts_make(k, &a, lat, n, kvr, ldl, &c->dq, is_q8(&wf));
    if (L->kv_split) {
        struct dec_kv_job j = {c, L, &wf, lat, ldl, n};
        const double work = (double)n * (double)H * (double)(cf->qk_nope_head_dim + cf->v_head_dim) * (double)kvr;
        run_job(c, dec_split_task, &j, H, work);
    } else {
        item(c, 0, &wf, 0, wf.rows, &a, c->dkv, wf.rows);
        mm_run(c, 1);
    }
}

/* Attention of the batch over keys [s0, s0 + n), heads task, task + nt, ... */
struct dec_attn_job {
    struct moe_context *c;
    int layer, T, nt;
    int64_t s0, n;
};

static void dec_attn_task(void *ctx, int task)
{
    const struct dec_attn_job *j = ctx;
    struct moe_context *c = j->c;
    const struct moe_config *cf = &c->m->cfg;
    const struct moe_kernels *k = c->m->k;
    const int H = cf->n_heads, T = j->T;
    const int64_t nope = cf->qk_nope_head_dim, rope = cf->qk_rope_head_dim, v = cf->v_head_dim;
    const int64_t kvr = cf->kv_lora_rank, qk = nope + rope, qw = (int64_t)H * qk, ld = (int64_t)H * (nope + v);
    const int64_t n = j->n, s0 = j->s0;
    float *K = c->dscr + (size_t)task * c->dscr_per;  /* [n][qk] */
    float *S = K + (size_t)DEC_TILE * qk;                /* [T][n] */
    float *PV = S + (size_t)T * DEC_TILE;                /* [T][v] */
    for (int h = task; h < H; h += j->nt) {
        for (int64_t s = 0; s < n; s++) {
            float *kr = K + s * qk;
            memcpy(kr, c->dkv + s * ld + h * (nope + v), sizeof(float) * (size_t)nope);
            const unsigned char *row = kv_row(c, j->layer, s0 + s);
            if (c->kv_type == MOE_KV_F32) {
                memcpy(kr + nope, row + 4 * kvr, sizeof(float) * (size_t)rope);
            } else {
                for (int64_t i = 0; i < rope; i++) {
                    uint16_t b;
                    memcpy(&b, row + 2 * (kvr + i), 2);
                    kr[nope + i] = moe_bf16_to_f32(b);
                }
            }
        }
        const struct moe_mat km = {.type = MOE_W_F32, .rows = n, .cols = qk, .data = K};
        const struct moe_acts qa = {.k = qk, .n = T, .x = c->q + h * qk, .ldx = qw};
        (T == 1 ? k->gemv[MOE_W_F32] : k->gemm[MOE_W_F32])(&km, 0, n, &qa, S, n);
        /* V_h as rows of stride H*(nope+v) floats: a matrix of that width read in [0, v) */
        const struct moe_mat vm = {.type = MOE_W_F32, .rows = n, .cols = ld, .data = c->dkv + h * (nope + v) + nope};
        int first = T, last = -1;            /* tokens that see at least one key of this tile */
        for (int t = 0; t < T; t++) {
            const int64_t valid = c->pos + t + 1 - s0;
            float *st = S + (size_t)t * n;
            if (valid <= 0) continue;
            first = first < t ? first : t;
            last = t;
            const int64_t nv = valid < n ? valid : n;
            float mx = -INFINITY;
            for (int64_t s = 0; s < nv; s++) {
                st[s] *= c->m->attn_scale;
                mx = st[s] > mx ? st[s] : mx;
            }
            for (int64_t s = nv; s < n; s++) st[s] = -INFINITY;
            k->softmax(st, nv);
            for (int64_t s = nv; s < n; s++) st[s] = 0.0f;
            /* p = exp(x - mx) / sum: the unnormalized weights are p * sum,
             * sum = 1 / p at the max (exp(0) / sum). */
            float pmax = 0.0f;
            for (int64_t s = 0; s < nv; s++) pmax = st[s] > pmax ? st[s] : pmax;
            float *m = c->dm + (size_t)t * H + h, *l = c->dl + (size_t)t * H + h;
            const float mn = s0 == 0 || mx > *m ? mx : *m;
            const float corr = s0 == 0 ? 0.0f : expf(*m - mn), f = expf(mx - mn) / pmax;
            *l = (s0 == 0 ? 0.0f : *l * corr) + f;
            *m = mn;
            float *acc = c->attn + (size_t)t * H * v + h * v;
            for (int64_t i = 0; i < v; i++) acc[i] *= corr;
            /* P times f: then acc += P V directly */
            for (int64_t s = 0; s < nv; s++) st[s] *= f;
        }
        if (last < 0) continue;
        k->gemm_t[MOE_W_F32](&vm, 0, n, 0, v, S + (size_t)first * n, n, last - first + 1, PV + (size_t)first * v, v);
        for (int t = first; t <= last; t++) {
            float *acc = c->attn + (size_t)t * H * v + h * v;
            const float *pv = PV + (size_t)t * v;
            for (int64_t i = 0; i < v; i++) acc[i] += pv[i];
        }
    }
}

static void attention_decompressed(struct moe_context *c, int layer, int T)
{
    const struct moe_config *cf = &c->m->cfg;
    const int H = cf->n_heads;
    const int64_t v = cf->v_head_dim, L = c->pos + T;
    const int nt = moe_pool_threads(c->m->pool);
    memset(c->attn, 0, sizeof(float) * (size_t)T * (size_t)H * (size_t)v);
    for (int64_t s0 = 0; s0 < L; s0 += DEC_TILE) {
        const int n = (int)(L - s0 < DEC_TILE ? L - s0 : DEC_TILE);
        dec_decompress(c, layer, s0, n);
        struct dec_attn_job j = {c, layer, T, nt < H ? nt : H, s0, n};
        const double work = (double)T * (double)H * (double)n * (double)(cf->qk_nope_head_dim + cf->qk_rope_head_dim + v);
        run_job(c, dec_attn_task, &j, j.nt, work);
    }
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            const float inv = 1.0f / c->dl[(size_t)t * H + h];
            float *acc = c->attn + (size_t)t * H * v + h * v;
            for (int64_t i = 0; i < v; i++) acc[i] *= inv;
        }
}

/* The path for a batch of T tokens: decompressed when forced, or (AUTO)
 * for batches of at least DEC_MIN_T tokens (see README, "Attention paths",
 * for the measurement behind the rule); decode always absorbed. */
static bool dec_wanted(const struct moe_context *c, int T)
{
    if (!c->dkv || T < 2) return false;
    return c->attn_path == MOE_ATTN_DECOMPRESSED || T >= DEC_MIN_T;
}

/* Attention of the batch over the latent cache with W_UK absorbed into the
 * query and W_UV applied after: c->q (roped) in, c->attn [T][H * v] out. */
static void attention_absorbed(struct moe_context *c, int layer, int T)
{
    struct moe_model *m = c->m;
    const struct moe_kernels *k = m->k;
    const struct moe_config *cf = &m->cfg;
    const struct moe_layer *L = &m->layers[layer];
    const int H = cf->n_heads;
    const int64_t nope = cf->qk_nope_head_dim, rope = cf->qk_rope_head_dim;
    const int64_t v = cf->v_head_dim, kvr = cf->kv_lora_rank, kvw = kvr + rope, qw = H * (nope + rope);
    struct moe_acts a;

    /* absorbed query: qcat[t][h] = [q_nope_h W_UK_h | q_rope_h] */
    if (L->kv_split) {
        /* attn_k_b head h: rows h*kvr + [0, kvr) of [H*kvr, nope]: a plain product */
        const bool q8 = is_q8(&L->k_b);
        for (int h = 0; h < H; h++) {
            struct qbuf qb = c->qaux;
            const size_t o = (size_t)h * (size_t)T * (size_t)nope;
            qb.q += o;
            qb.d += o / 32;
            qb.s += o / 32;
            acts_make(k, &a, c->q + h * (nope + rope), T, nope, qw, &qb, q8);
            item(c, h, &L->k_b, h * kvr, (h + 1) * kvr, &a, c->tmp, H * kvr);
        }
        mm_run(c, H);
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++)
                memcpy(c->qcat + ((size_t)t * H + h) * kvw, c->tmp + (size_t)t * H * kvr + h * kvr,
                       sizeof(float) * (size_t)kvr);
    } else {
        struct absorb_job j = {c, &L->kv_b, T};
        run_job(c, absorb_task, &j, H, (double)H * (double)nope * (double)kvr * (double)(T + 4));
    }
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++)
            memcpy(c->qcat + ((size_t)t * H + h) * kvw + kvr, c->q + t * qw + h * (nope + rope) + nope,
                   sizeof(float) * (size_t)rope);

    /* per token: scores over the cache (the cache as a matrix, heads as
     * columns), softmax, latent output */
    const struct moe_mat cache = {.type = c->kv_type == MOE_KV_F32 ? MOE_W_F32 : MOE_W_BF16,
                                  .cols = kvw, .data = kv_row(c, layer, 0)};
    for (int t = 0; t < T; t++) {
        const int64_t len = c->pos + t + 1;
        struct moe_mat cm = cache;
        cm.rows = len;
        acts_make(k, &a, c->qcat + (size_t)t * H * kvw, H, kvw, kvw, NULL, false);
        item(c, 0, &cm, 0, len, &a, c->scores, c->n_ctx);
        mm_run(c, 1);
        struct softmax_job sj = {c, len, m->attn_scale};
        run_job(c, softmax_task, &sj, H, 16.0 * (double)H * (double)len);
        struct olat_job oj = {c, cm, c->olat + (size_t)t * H * OLAT_LD(kvr)};
        run_job(c, olat_task, &oj, (int)((kvr + OLAT_CHUNK - 1) / OLAT_CHUNK), (double)H * (double)len * (double)kvr);
    }

    /* out_h = W_UV_h o_lat_h, then o_proj */
    if (L->kv_split) {
        const bool q8 = is_q8(&L->v_b);
        for (int h = 0; h < H; h++) {
            struct qbuf qb = c->qaux;
            const size_t o = (size_t)h * (size_t)T * (size_t)kvr;
            qb.q += o;
            qb.d += o / 32;
            qb.s += o / 32;
            acts_make(k, &a, c->olat + h * OLAT_LD(kvr), T, kvr, H * OLAT_LD(kvr), &qb, q8);
            item(c, h, &L->v_b, h * v, (h + 1) * v, &a, c->attn, H * v);
        }
        mm_run(c, H);
    } else {
        const bool q8 = is_q8(&L->kv_b);
        const int64_t ldy = H * (nope + v);
        for (int h = 0; h < H; h++) {
            struct qbuf qb = c->qaux;
            const size_t o = (size_t)h * (size_t)T * (size_t)kvr;
            qb.q += o;
            qb.d += o / 32;
            qb.s += o / 32;
            acts_make(k, &a, c->olat + h * OLAT_LD(kvr), T, kvr, H * OLAT_LD(kvr), &qb, q8);
            item(c, h, &L->kv_b, h * (nope + v) + nope, (h + 1) * (nope + v), &a, c->tmp, ldy);
        }
        mm_run(c, H);
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++)
                memcpy(c->attn + (size_t)t * H * v + h * v, c->tmp + (size_t)t * ldy + h * (nope + v) + nope,
                       sizeof(float) * (size_t)v);
    }
}

static void attention(struct moe_context *c, int layer, int T)
{
    struct moe_model *m = c->m;
    const struct moe_kernels *k = m->k;
    const struct moe_config *cf = &m->cfg;
    const struct moe_layer *L = &m->layers[layer];
    const int H = cf->n_heads;
    const int64_t D = cf->hidden_size, nope = cf->qk_nope_head_dim, rope = cf->qk_rope_head_dim;
    const int64_t v = cf->v_head_dim, kvr = cf->kv_lora_rank, qr = cf->q_lora_rank, kvw = kvr + rope;
    const int64_t qw = H * (nope + rope), half = rope / 2;
    struct moe_acts a, a2;

    for (int t = 0; t < T; t++) k->rmsnorm(c->h + t * D, c->x + t * D, L->attn_norm, D, cf->rms_norm_eps);
    acts_make(k, &a, c->h, T, D, D, &c->qin, is_q8(&L->kv_a) || is_q8(&L->q_b) || is_q8(&L->q_a));
    /* q (plain) or q_a, and kv_a, in one job */
    if (L->q_lora) {
        item(c, 0, &L->q_a, 0, qr, &a, c->qa, qr);
        item(c, 1, &L->kv_a, 0, kvw, &a, c->kva, kvw);
        mm_run(c, 2);
        for (int t = 0; t < T; t++) k->rmsnorm(c->qa + t * qr, c->qa + t * qr, L->q_a_norm, qr, cf->rms_norm_eps);
        acts_make(k, &a2, c->qa, T, qr, qr, &c->qaux, is_q8(&L->q_b));
        matmul(c, &L->q_b, &a2, c->q);
    } else {
        item(c, 0, &L->q_b, 0, qw, &a, c->q, qw);
        item(c, 1, &L->kv_a, 0, kvw, &a, c->kva, kvw);
        mm_run(c, 2);
    }

    /* latent: norm; rope key; into the cache.  q: rope on each head's tail. */
    for (int t = 0; t < T; t++) {
        float *kv = c->kva + t * kvw;
        const float *cs = c->cosb + t * half, *sn = c->sinb + t * half;
        k->rmsnorm(kv, kv, L->kv_a_norm, kvr, cf->rms_norm_eps);
        k->rope_apply(kv + kvr, 1, rope, cs, sn, half);
        k->rope_apply(c->q + t * qw + nope, H, nope + rope, cs, sn, half);
        unsigned char *dst = kv_row(c, layer, c->pos + t);
        if (c->kv_type == MOE_KV_F32) {
            memcpy(dst, kv, sizeof(float) * (size_t)kvw);
        } else {
            for (int64_t i = 0; i < kvw; i++) {
                const uint16_t b = moe_f32_to_bf16(kv[i]);
                memcpy(dst + 2 * i, &b, 2);
            }
        }
    }

    if (dec_wanted(c, T)) attention_decompressed(c, layer, T);
    else attention_absorbed(c, layer, T);
    acts_make(k, &a, c->attn, T, H * v, H * v, &c->qin, is_q8(&L->o));
    matmul(c, &L->o, &a, c->ybuf);
    for (int64_t i = 0; i < (int64_t)T * D; i++) c->x[i] += c->ybuf[i];
}

/* ---- feed-forward */

static void dense_mlp(struct moe_context *c, const struct moe_layer *L, int T)
{
    const struct moe_kernels *k = c->m->k;
    const int64_t D = c->m->cfg.hidden_size, F = c->m->cfg.intermediate_size;
    struct moe_acts a;
    acts_make(k, &a, c->h, T, D, D, &c->qin, is_q8(&L->gate) || is_q8(&L->up));
    item(c, 0, &L->gate, 0, F, &a, c->fa, F);
    item(c, 1, &L->up, 0, F, &a, c->fb, F);
    mm_run(c, 2);
    k->silu_mul(c->fa, c->fa, c->fb, (int64_t)T * F);
    acts_make(k, &a, c->fa, T, F, F, &c->qaux, is_q8(&L->down));
    matmul(c, &L->down, &a, c->ybuf);
}

/* DeepSeekMoE routing for one token (official inference/model.py Gate):
 * scores = softmax or sigmoid of the FP32 logits; the correction bias is
 * added for selection only; groups ranked by the sum of their top-2
 * biased scores (noaux_tc) or their max (group_limited_greedy); the best
 * topk_group groups kept; top-k experts among them; weights = the
 * unbiased scores of the chosen, normalized when norm_topk_prob (also for
 * top-1, as the official Gate and llama.cpp do: the weight is then 1;
 * DeepSeek's older HF modeling code skipped top-1), times
 * routed_scaling_factor.  Ties go to the lower index. */
void moe_route(const struct moe_kernels *k, const struct moe_config *cf, const float *bias, const float *logits,
               float *scratch, int *sel, float *w)
{
    const int E = cf->n_routed_experts, K = cf->n_experts_per_tok;
    float *s = scratch, *b = scratch + E;
    memcpy(s, logits, sizeof(float) * (size_t)E);
    if (cf->scoring_func == MOE_SCORING_SOFTMAX) k->softmax(s, E);
    else k->sigmoid(s, s, E);
    for (int e = 0; e < E; e++) b[e] = s[e] + (bias ? bias[e] : 0.0f);
    const int G = cf->n_group;
    if (cf->topk_method != MOE_TOPK_GREEDY && G > 1 && cf->topk_group < G) {
        const int per = E / G;
        float gs[MOE_MAX_GROUPS];   /* G <= MOE_MAX_GROUPS: checked by moe_config_validate */
        int keep[MOE_MAX_GROUPS];
        for (int g = 0; g < G; g++) {
            const float *bg = b + g * per;
            if (cf->topk_method == MOE_TOPK_NOAUX_TC) {
                float m1 = -INFINITY, m2 = -INFINITY;
                for (int i = 0; i < per; i++) {
                    if (bg[i] > m1) {
                        m2 = m1;
                        m1 = bg[i];
                    } else if (bg[i] > m2) {
                        m2 = bg[i];
                    }
                }
                gs[g] = m1 + m2;
            } else {
                float mx = -INFINITY;
                for (int i = 0; i < per; i++) mx = bg[i] > mx ? bg[i] : mx;
                gs[g] = mx;
            }
            keep[g] = 0;
        }
        for (int r = 0; r < cf->topk_group; r++) {
            int best = -1;
            for (int g = 0; g < G; g++)
                if (!keep[g] && (best < 0 || gs[g] > gs[best])) best = g;
            keep[best] = 1;
        }
        for (int g = 0; g < G; g++)
            if (!keep[g])
                for (int i = 0; i < per; i++) b[g * per + i] = -INFINITY;
    }
    float sum = 0.0f;
    for (int r = 0; r < K; r++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            bool taken = false;
            for (int q = 0; q < r; q++) taken |= sel[q] == e;
            if (!taken && (best < 0 || b[e] > b[best])) best = e;
        }
        sel[r] = best;
        w[r] = s[best];
        sum += w[r];
    }
    const float norm = cf->norm_topk_prob ? 1.0f / sum : 1.0f;
    for (int r = 0; r < K; r++) w[r] = w[r] * norm * cf->routed_scaling_factor;
}

/* Look-ahead for MoE layer l (pager): its router applied to the residual
 * stream as layer l - 1 leaves it (normalized with layer l's ffn_norm; only
 * layer l's attention is missing), and the experts that are each token's
 * R best-ranked choices (R = the pager's look-ahead) handed to the pager
 * to read at low priority, most-voted first, then by their summed rank.
 * Measured on the 36 GB benchmark model (README, pager): this prediction
 * is right for 76% of the top-8 (93% of rank 1, 33% of rank 8), where the
 * router on layer l - 1's FFN input was right for 52%; and the experts a
 * look-ahead reads are those not already resident, mostly low-ranked
 * ones, so cutting at rank 5 keeps 90% of its reads useful (68% with all
 * 8). */
static void moe_lookahead(struct moe_context *c, int l, int T)
{
    const struct moe_model *m = c->m;
    const struct moe_kernels *k = m->k;
    const struct moe_config *cf = &m->cfg;
    const struct moe_layer *N = &m->layers[l];
    const int64_t D = cf->hidden_size;
    const int E = cf->n_routed_experts, K = cf->n_experts_per_tok;
    const int R = moe_pager_lookahead(m->pager) < K ? moe_pager_lookahead(m->pager) : K;
    /* c->h is free here: the next attention recomputes it from c->x */
    for (int t = 0; t < T; t++) k->rmsnorm(c->h + t * D, c->x + t * D, N->ffn_norm, D, cf->rms_norm_eps);
    struct moe_acts a;
    acts_make(k, &a, c->h, T, D, D, &c->qin, is_q8(&N->router));
    matmul(c, &N->router, &a, c->rl);
    for (int t = 0; t < T; t++)
        moe_route(k, cf, N->router_bias, c->rl + (size_t)t * E, c->rs, c->la_sel + t * K, c->la_w + t * K);
    float *rsum = c->rs;   /* moe_route's scratch: free again */
    memset(c->cnt, 0, sizeof(int) * (size_t)(E + 1));
    memset(rsum, 0, sizeof(float) * (size_t)E);
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++) {
            c->cnt[c->la_sel[t * K + r]]++;
            rsum[c->la_sel[t * K + r]] += (float)r;
        }
    int n = 0;
    for (int e = 0; e < E; e++)
        if (c->cnt[e]) c->need[n++] = e;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && (c->cnt[c->need[j]] > c->cnt[c->need[j - 1]] ||
                                  (c->cnt[c->need[j]] == c->cnt[c->need[j - 1]] &&
                                   rsum[c->need[j]] < rsum[c->need[j - 1]]));
             j--) {
            const int t = c->need[j];
            c->need[j] = c->need[j - 1];
            c->need[j - 1] = t;
        }
    moe_pager_prefetch(m->pager, l, c->need, n);
}

static void moe_ffn(struct moe_context *c, const struct moe_layer *L, int l, int T)
{
    const struct moe_kernels *k = c->m->k;
    const struct moe_config *cf = &c->m->cfg;
    struct moe_pager *pg = c->m->pager;
    const int64_t D = cf->hidden_size, Fe = cf->moe_intermediate_size, Fs = (int64_t)cf->n_shared_experts * Fe;
    const int E = cf->n_routed_experts, K = cf->n_experts_per_tok;
    const bool q8_in = is_q8(&L->router) || is_q8(&L->exp_gate[0]) || is_q8(&L->exp_up[0]) ||
                       (L->shared && (is_q8(&L->sh_gate) || is_q8(&L->sh_up)));
    struct moe_acts a;

    /* router (FP32 logits) */
    acts_make(k, &a, c->h, T, D, D, &c->qin, q8_in);
    matmul(c, &L->router, &a, c->rl);
    for (int t = 0; t < T; t++)
        moe_route(k, cf, L->router_bias, c->rl + (size_t)t * E, c->rs, c->sel + t * K, c->selw + t * K);

    /* group the batch's (token, expert) pairs by expert, tokens ascending */
    memset(c->cnt, 0, sizeof(int) * (size_t)(E + 1));
    for (int i = 0; i < T * K; i++) c->cnt[c->sel[i]]++;
    c->off[0] = 0;
    for (int e = 0; e < E; e++) c->off[e + 1] = c->off[e] + c->cnt[e];
    memset(c->cnt, 0, sizeof(int) * (size_t)(E + 1));
    for (int t = 0; t < T; t++)
        for (int r = 0; r < K; r++) {
            const int e = c->sel[t * K + r], slot = c->off[e] + c->cnt[e]++;
            c->slot_tok[slot] = t;
            c->slot_w[slot] = c->selw[t * K + r];
            memcpy(c->gx + (size_t)slot * D, c->h + (size_t)t * D, sizeof(float) * (size_t)D);
            if (q8_in) {
                memcpy(c->qg.q + (size_t)slot * D, c->qin.q + (size_t)t * D, (size_t)D);
                memcpy(c->qg.d + (size_t)slot * (D / 32), c->qin.d + (size_t)t * (D / 32), sizeof(float) * (size_t)(D / 32));
                memcpy(c->qg.s + (size_t)slot * (D / 32), c->qin.s + (size_t)t * (D / 32), sizeof(int32_t) * (size_t)(D / 32));
            }
        }

    /* The experts needed; with a pager, their reads start now and the
     * experts are computed in waves as they become ready (the shared
     * experts and the resident ones first).  Every expert's outputs are
     * computed the same way whatever the wave, so results do not depend on
     * the pager. */
    int nn = 0;
    for (int e = 0; e < E; e++)
        if (c->off[e + 1] > c->off[e]) c->need[nn++] = e;
    if (pg) {
        moe_pager_trace(pg, l, c->sel, T, K);
        moe_pager_request(pg, l, c->need, nn);
    }
    memset(c->taken, 0, (size_t)nn);
    const bool q8_down = is_q8(&L->exp_down[0]);
    bool first = true;
    for (;;) {
        int nw;
        if (pg) {
            nw = moe_pager_collect(pg, l, c->need, nn, c->taken, c->wave);
        } else {
            nw = first ? nn : 0;
            memcpy(c->wave, c->need, sizeof(int) * (size_t)nw);
        }
        if (!nw && !first) break;
        for (int i = 0; i < nw; i++) {
            const int e = c->wave[i];
            const struct moe_mat *W = pg ? moe_pager_mats(pg, l, e) : NULL;
            c->wmat[3 * e + 0] = W ? W[0] : L->exp_gate[e];
            c->wmat[3 * e + 1] = W ? W[1] : L->exp_up[e];
            c->wmat[3 * e + 2] = W ? W[2] : L->exp_down[e];
        }

        /* gate and up of this wave's experts (and of the shared experts, first wave): one job */
        int n = 0;
        for (int i = 0; i < nw; i++) {
            const int e = c->wave[i], ne = c->off[e + 1] - c->off[e];
            struct moe_acts ge = {.k = D, .n = ne, .x = c->gx + (size_t)c->off[e] * D, .ldx = D};
            if (q8_in) {
                ge.q = c->qg.q + (size_t)c->off[e] * D;
                ge.qd = c->qg.d + (size_t)c->off[e] * (D / 32);
                ge.qs = c->qg.s + (size_t)c->off[e] * (D / 32);
            }
            item(c, n++, &c->wmat[3 * e + 0], 0, Fe, &ge, c->fa + (size_t)c->off[e] * Fe, Fe);
            item(c, n++, &c->wmat[3 * e + 1], 0, Fe, &ge, c->fb + (size_t)c->off[e] * Fe, Fe);
        }
        if (first && L->shared) {
            item(c, n++, &L->sh_gate, 0, Fs, &a, c->fsa, Fs);
            item(c, n++, &L->sh_up, 0, Fs, &a, c->fsb, Fs);
        }
        mm_run(c, n);
        for (int i = 0; i < nw; i++) {
            const int e = c->wave[i];
            const size_t o = (size_t)c->off[e] * (size_t)Fe, len = (size_t)(c->off[e + 1] - c->off[e]) * (size_t)Fe;
            k->silu_mul(c->fa + o, c->fa + o, c->fb + o, (int64_t)len);
        }
        if (first && L->shared) k->silu_mul(c->fsa, c->fsa, c->fsb, (int64_t)T * Fs);

        /* down projections: one job */
        n = 0;
        for (int i = 0; i < nw; i++) {
            const int e = c->wave[i], ne = c->off[e + 1] - c->off[e];
            struct moe_acts de;
            struct qbuf qb = c->qaux;
            const size_t o = (size_t)c->off[e] * (size_t)Fe;
            qb.q += o;
            qb.d += o / 32;
            qb.s += o / 32;
            acts_make(k, &de, c->fa + o, ne, Fe, Fe, &qb, q8_down);
            item(c, n++, &c->wmat[3 * e + 2], 0, D, &de, c->yexp + (size_t)c->off[e] * D, D);
        }
        if (first && L->shared) {
            struct moe_acts sa;
            acts_make(k, &sa, c->fsa, T, Fs, Fs, &c->qsh, is_q8(&L->sh_down));
            item(c, n++, &L->sh_down, 0, D, &sa, c->ybuf, D);
        }
        mm_run(c, n);
        if (pg)
            for (int i = 0; i < nw; i++) moe_pager_release(pg, l, c->wave[i]);
        first = false;
        if (!pg) break;
    }

    /* y = shared + sum over experts (ascending) of w * expert(x) */
    const int rows = T * K;
    if (!L->shared) memset(c->ybuf, 0, sizeof(float) * (size_t)T * (size_t)D);
    for (int slot = 0; slot < rows; slot++) {
        float *y = c->ybuf + (size_t)c->slot_tok[slot] * D;
        const float *ye = c->yexp + (size_t)slot * D, w = c->slot_w[slot];
        for (int64_t i = 0; i < D; i++) y[i] += w * ye[i];
    }
}

/* ---- one batch */

static void forward_batch(struct moe_context *c, const int32_t *ids, int T, float *logits, bool all_logits)
{
    struct moe_model *m = c->m;
    const struct moe_kernels *k = m->k;
    const struct moe_config *cf = &m->cfg;
    const int64_t D = cf->hidden_size, V = cf->vocab_size, half = cf->qk_rope_head_dim / 2;

    for (int t = 0; t < T; t++) {
        moe_ref_dequant_row(c->x + (size_t)t * D, &m->embed, ids[t]);
        float *cs = c->cosb + t * half, *sn = c->sinb + t * half;
        k->rope_sincos(cs, sn, m->inv_freq, half, (float)(c->pos + t));
        if (m->rope_mscale != 1.0f)
            for (int64_t i = 0; i < half; i++) {
                cs[i] *= m->rope_mscale;
                sn[i] *= m->rope_mscale;
            }
    }
    for (int l = 0; l < cf->n_layers; l++) {
        const struct moe_layer *L = &m->layers[l];
        attention(c, l, T);
        for (int t = 0; t < T; t++) k->rmsnorm(c->h + t * D, c->x + t * D, L->ffn_norm, D, cf->rms_norm_eps);
        if (L->is_moe) moe_ffn(c, L, l, T);
        else dense_mlp(c, L, T);
        for (int64_t i = 0; i < (int64_t)T * D; i++) c->x[i] += c->ybuf[i];
        if (m->pager && moe_pager_lookahead(m->pager) > 0 && l + 1 < cf->n_layers && m->layers[l + 1].is_moe)
            moe_lookahead(c, l + 1, T);
    }
    c->pos += T;
    if (m->pager) moe_pager_end_batch(m->pager, T);
    if (!logits) return;
    const int first = all_logits ? 0 : T - 1, n = T - first;
    for (int t = first; t < T; t++) k->rmsnorm(c->h + (t - first) * D, c->x + t * D, m->out_norm, D, cf->rms_norm_eps);
    struct moe_acts a;
    acts_make(k, &a, c->h, n, D, D, &c->qin, is_q8(&m->lm_head));
    item(c, 0, &m->lm_head, 0, V, &a, logits, V);
    mm_run(c, 1);
}

int moe_context_eval(struct moe_context *c, const int32_t *ids, int64_t n, int all_logits, char *err, size_t errlen)
{
    const int64_t V = c->m->cfg.vocab_size;
    if (n <= 0) return moe_errorf(err, errlen, MOE_ERR_INVALID, "no tokens to evaluate");
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return moe_errorf(err, errlen, MOE_ERR_INVALID, "token id %d (position %lld) is outside the vocabulary [0, %lld)",
                              (int)ids[i], (long long)i, (long long)V);
    if (n > c->n_ctx - c->pos)
        return moe_errorf(err, errlen, MOE_ERR_INVALID,
                          "%lld tokens do not fit in the context: it holds %lld tokens and %lld are used (raise --ctx)",
                          (long long)n, (long long)c->n_ctx, (long long)c->pos);
    const size_t rows = all_logits ? (size_t)n : 1;
    if (rows > c->logits_cap) {
        size_t bytes;
        if (moe_mul_size(rows, (size_t)V * sizeof(float), &bytes))
            return moe_errorf(err, errlen, MOE_ERR_NOMEM, "logits of %lld positions overflow", (long long)n);
        float *p = realloc(c->logits, bytes);
        if (!p)
            return moe_errorf(err, errlen, MOE_ERR_NOMEM, "out of memory for the logits of %zu positions", rows);
        c->logits = p;
        c->logits_cap = rows;
    }
    pthread_mutex_lock(&c->m->eval_lock);
    c->n_logits = 0;
    for (int64_t i = 0; i < n; i += c->n_batch) {
        const int T = (int)(n - i < c->n_batch ? n - i : c->n_batch);
        const bool last = i + T == n;
        float *lg = all_logits ? c->logits + (size_t)i * (size_t)V : last ? c->logits : NULL;
        forward_batch(c, ids + i, T, lg, all_logits != 0);
    }
    c->n_logits = (int64_t)rows;
    pthread_mutex_unlock(&c->m->eval_lock);
    return MOE_OK;
}
