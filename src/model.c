/*
 * src/model.c — open a model and bind its tensors (see model.h): Hugging
 * Face and GGUF deepseek2 names into one struct moe_model, every tensor
 * checked for presence, dtype and exact shape before use.
 */
#include "model.h"

#include "pager.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Static_assert(MOECPU_OK == MOE_OK && MOECPU_ERR_IO == MOE_ERR_IO && MOECPU_ERR_FORMAT == MOE_ERR_FORMAT &&
                   MOECPU_ERR_NOT_FOUND == MOE_ERR_NOT_FOUND && MOECPU_ERR_TYPE == MOE_ERR_TYPE &&
                   MOECPU_ERR_UNSUPPORTED == MOE_ERR_UNSUPPORTED && MOECPU_ERR_NOMEM == MOE_ERR_NOMEM &&
                   MOECPU_ERR_INVALID == MOE_ERR_INVALID,
               "moecpu.h status codes must equal enum moe_status");

/* ---- binding helpers */

struct binder {
    struct moe_model *m;
    const struct moe_model_files *mf;
    bool gguf;
    char *err;
    size_t errlen;
    char name[256];
};

static const char *vname(struct binder *b, const char *fmt, va_list ap)
{
    vsnprintf(b->name, sizeof b->name, fmt, ap);
    return b->name;
}

/* The FP8 companion "<name>_scale_inv": F32 [ceil(rows/128), ceil(cols/128)]. */
static int bind_scale(struct binder *b, struct moe_mat *w, const struct moe_tensor *t)
{
    char sname[300];
    snprintf(sname, sizeof sname, "%s_scale_inv", t->name);
    const int64_t shape[2] = {moe_fp8_scale_rows(w->rows), moe_fp8_scale_cols(w->cols)};
    const struct moe_tensor *s;
    int rc = moe_model_files_get(b->mf, sname, 2, shape, &s, b->err, b->errlen);
    if (rc) return rc;
    if (s->type != MOE_W_F32)
        return moe_errorf(b->err, b->errlen, MOE_ERR_TYPE, "%s: tensor '%s': dtype %s, expected F32", s->file, sname,
                          s->dtype);
    w->scale = s->data;
    b->m->weight_bytes += s->nbytes;
    return MOE_OK;
}

/* A 2-D weight [rows, cols]. */
static int bind_mat(struct binder *b, struct moe_mat *w, int64_t rows, int64_t cols, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *name = vname(b, fmt, ap);
    va_end(ap);
    const int64_t shape[2] = {rows, cols};
    const struct moe_tensor *t;
    int rc = moe_model_files_get(b->mf, name, 2, shape, &t, b->err, b->errlen);
    if (rc) return rc;
    *w = (struct moe_mat){.type = t->type, .rows = rows, .cols = cols, .data = t->data, .scale = NULL};
    b->m->weight_bytes += t->nbytes;
    if (t->type == MOE_W_FP8) return bind_scale(b, w, t);
    return MOE_OK;
}

/* GGUF experts: one 3-D tensor [n, rows, cols], expert e a contiguous slice. */
static int bind_experts(struct binder *b, struct moe_mat *w, int n, int64_t rows, int64_t cols, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *name = vname(b, fmt, ap);
    va_end(ap);
    const int64_t shape[3] = {n, rows, cols};
    const struct moe_tensor *t;
    int rc = moe_model_files_get(b->mf, name, 3, shape, &t, b->err, b->errlen);
    if (rc) return rc;
    if (t->type == MOE_W_FP8)
        return moe_errorf(b->err, b->errlen, MOE_ERR_UNSUPPORTED, "%s: tensor '%s': 3-D FP8 experts not supported",
                          t->file, name);
    const size_t per = moe_wtype_row_bytes(t->type, cols) * (size_t)rows;
    for (int e = 0; e < n; e++)
        w[e] = (struct moe_mat){.type = t->type, .rows = rows, .cols = cols,
                                .data = (const char *)t->data + (size_t)e * per, .scale = NULL};
    b->m->weight_bytes += t->nbytes;
    return MOE_OK;
}

/* A 1-D vector [n] of F32/F16/BF16, copied to FP32 (norm weights, bias). */
static int bind_vec(struct binder *b, float **out, int64_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *name = vname(b, fmt, ap);
    va_end(ap);
    const int64_t shape[1] = {n};
    const struct moe_tensor *t;
    int rc = moe_model_files_get(b->mf, name, 1, shape, &t, b->err, b->errlen);
    if (rc) return rc;
    if (t->type != MOE_W_F32 && t->type != MOE_W_F16 && t->type != MOE_W_BF16)
        return moe_errorf(b->err, b->errlen, MOE_ERR_TYPE, "%s: tensor '%s': dtype %s, expected F32, F16 or BF16",
                          t->file, name, t->dtype);
    float *v = malloc(sizeof(float) * (size_t)n);
    if (!v) return moe_errorf(b->err, b->errlen, MOE_ERR_NOMEM, "out of memory binding '%s'", name);
    const struct moe_mat row = {.type = t->type, .rows = 1, .cols = n, .data = t->data};
    moe_ref_dequant_row(v, &row, 0);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i])) {
            free(v);
            return moe_errorf(b->err, b->errlen, MOE_ERR_FORMAT, "%s: tensor '%s': value %" PRId64 " is not finite",
                              t->file, name, i);
        }
    *out = v;
    b->m->weight_bytes += t->nbytes;
    return MOE_OK;
}

static bool has(struct binder *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *name = vname(b, fmt, ap);
    va_end(ap);
    return moe_model_files_find(b->mf, name) != NULL;
}

/* ---- one layer */

static int bind_attn(struct binder *b, struct moe_layer *L, int i)
{
    const struct moe_config *c = &b->m->cfg;
    const int64_t D = c->hidden_size, H = c->n_heads, nope = c->qk_nope_head_dim, rope = c->qk_rope_head_dim;
    const int64_t v = c->v_head_dim, kvr = c->kv_lora_rank, qr = c->q_lora_rank;
    int rc;
    L->q_lora = qr > 0;
    if (b->gguf) {
        if ((rc = bind_vec(b, &L->attn_norm, D, "blk.%d.attn_norm.weight", i))) return rc;
        if (L->q_lora) {
            if ((rc = bind_mat(b, &L->q_a, qr, D, "blk.%d.attn_q_a.weight", i)) ||
                (rc = bind_vec(b, &L->q_a_norm, qr, "blk.%d.attn_q_a_norm.weight", i)) ||
                (rc = bind_mat(b, &L->q_b, H * (nope + rope), qr, "blk.%d.attn_q_b.weight", i)))
                return rc;
        } else if ((rc = bind_mat(b, &L->q_b, H * (nope + rope), D, "blk.%d.attn_q.weight", i))) {
            return rc;
        }
        if ((rc = bind_mat(b, &L->kv_a, kvr + rope, D, "blk.%d.attn_kv_a_mqa.weight", i)) ||
            (rc = bind_vec(b, &L->kv_a_norm, kvr, "blk.%d.attn_kv_a_norm.weight", i)))
            return rc;
        /* Prefer the split form (plain products for both halves); else the
         * legacy attn_kv_b. */
        if (has(b, "blk.%d.attn_k_b.weight", i) || !has(b, "blk.%d.attn_kv_b.weight", i)) {
            struct moe_mat kb[1], vb[1];
            L->kv_split = true;
            /* attn_k_b: [H, kv_lora, nope] (convert_hf_to_gguf.py: k_b.transpose(1, 2));
             * attn_v_b: [H, v, kv_lora]; one 3-D tensor each, viewed as 2-D. */
            const int64_t kshape[3] = {H, kvr, nope}, vshape[3] = {H, v, kvr};
            const struct moe_tensor *t;
            snprintf(b->name, sizeof b->name, "blk.%d.attn_k_b.weight", i);
            if ((rc = moe_model_files_get(b->mf, b->name, 3, kshape, &t, b->err, b->errlen))) return rc;
            kb[0] = (struct moe_mat){.type = t->type, .rows = H * kvr, .cols = nope, .data = t->data};
            b->m->weight_bytes += t->nbytes;
            snprintf(b->name, sizeof b->name, "blk.%d.attn_v_b.weight", i);
            if ((rc = moe_model_files_get(b->mf, b->name, 3, vshape, &t, b->err, b->errlen))) return rc;
            vb[0] = (struct moe_mat){.type = t->type, .rows = H * v, .cols = kvr, .data = t->data};
            b->m->weight_bytes += t->nbytes;
            if (kb[0].type == MOE_W_FP8 || vb[0].type == MOE_W_FP8)
                return moe_errorf(b->err, b->errlen, MOE_ERR_UNSUPPORTED,
                                  "%s: blk.%d.attn_k_b/attn_v_b: FP8 not supported in GGUF", b->mf->path, i);
            L->k_b = kb[0];
            L->v_b = vb[0];
        } else if ((rc = bind_mat(b, &L->kv_b, H * (nope + v), kvr, "blk.%d.attn_kv_b.weight", i))) {
            return rc;
        }
        return bind_mat(b, &L->o, D, H * v, "blk.%d.attn_output.weight", i);
    }
    const char *p = "model.layers";
    if ((rc = bind_vec(b, &L->attn_norm, D, "%s.%d.input_layernorm.weight", p, i))) return rc;
    if (L->q_lora) {
        if ((rc = bind_mat(b, &L->q_a, qr, D, "%s.%d.self_attn.q_a_proj.weight", p, i)) ||
            (rc = bind_vec(b, &L->q_a_norm, qr, "%s.%d.self_attn.q_a_layernorm.weight", p, i)) ||
            (rc = bind_mat(b, &L->q_b, H * (nope + rope), qr, "%s.%d.self_attn.q_b_proj.weight", p, i)))
            return rc;
    } else if ((rc = bind_mat(b, &L->q_b, H * (nope + rope), D, "%s.%d.self_attn.q_proj.weight", p, i))) {
        return rc;
    }
    if ((rc = bind_mat(b, &L->kv_a, kvr + rope, D, "%s.%d.self_attn.kv_a_proj_with_mqa.weight", p, i)) ||
        (rc = bind_vec(b, &L->kv_a_norm, kvr, "%s.%d.self_attn.kv_a_layernorm.weight", p, i)) ||
        (rc = bind_mat(b, &L->kv_b, H * (nope + v), kvr, "%s.%d.self_attn.kv_b_proj.weight", p, i)) ||
        (rc = bind_mat(b, &L->o, D, H * v, "%s.%d.self_attn.o_proj.weight", p, i)))
        return rc;
    return MOE_OK;
}

static int bind_ffn(struct binder *b, struct moe_layer *L, int i)
{
    const struct moe_config *c = &b->m->cfg;
    const int64_t D = c->hidden_size, F = c->intermediate_size, Fe = c->moe_intermediate_size;
    const int64_t Fs = (int64_t)c->n_shared_experts * Fe;
    const int E = c->n_routed_experts;
    int rc;
    L->is_moe = moe_config_layer_is_moe(c, i);
    if (b->gguf) {
        if ((rc = bind_vec(b, &L->ffn_norm, D, "blk.%d.ffn_norm.weight", i))) return rc;
        if (!L->is_moe)
            return (rc = bind_mat(b, &L->gate, F, D, "blk.%d.ffn_gate.weight", i)) ||
                           (rc = bind_mat(b, &L->up, F, D, "blk.%d.ffn_up.weight", i)) ||
                           (rc = bind_mat(b, &L->down, D, F, "blk.%d.ffn_down.weight", i))
                       ? rc
                       : MOE_OK;
    } else {
        if ((rc = bind_vec(b, &L->ffn_norm, D, "model.layers.%d.post_attention_layernorm.weight", i))) return rc;
        if (!L->is_moe)
            return (rc = bind_mat(b, &L->gate, F, D, "model.layers.%d.mlp.gate_proj.weight", i)) ||
                           (rc = bind_mat(b, &L->up, F, D, "model.layers.%d.mlp.up_proj.weight", i)) ||
                           (rc = bind_mat(b, &L->down, D, F, "model.layers.%d.mlp.down_proj.weight", i))
                       ? rc
                       : MOE_OK;
    }
    L->exp_gate = calloc((size_t)E, sizeof *L->exp_gate);
    L->exp_up = calloc((size_t)E, sizeof *L->exp_up);
    L->exp_down = calloc((size_t)E, sizeof *L->exp_down);
    if (!L->exp_gate || !L->exp_up || !L->exp_down) return moe_errorf(b->err, b->errlen, MOE_ERR_NOMEM, "out of memory");
    L->shared = Fs > 0;
    if (b->gguf) {
        if ((rc = bind_mat(b, &L->router, E, D, "blk.%d.ffn_gate_inp.weight", i))) return rc;
        /* llama.cpp treats exp_probs_b as optional (no bias = zero bias). */
        if (has(b, "blk.%d.exp_probs_b.bias", i) &&
            (rc = bind_vec(b, &L->router_bias, E, "blk.%d.exp_probs_b.bias", i)))
            return rc;
        if ((rc = bind_experts(b, L->exp_gate, E, Fe, D, "blk.%d.ffn_gate_exps.weight", i)) ||
            (rc = bind_experts(b, L->exp_up, E, Fe, D, "blk.%d.ffn_up_exps.weight", i)) ||
            (rc = bind_experts(b, L->exp_down, E, D, Fe, "blk.%d.ffn_down_exps.weight", i)))
            return rc;
        if (L->shared &&
            ((rc = bind_mat(b, &L->sh_gate, Fs, D, "blk.%d.ffn_gate_shexp.weight", i)) ||
             (rc = bind_mat(b, &L->sh_up, Fs, D, "blk.%d.ffn_up_shexp.weight", i)) ||
             (rc = bind_mat(b, &L->sh_down, D, Fs, "blk.%d.ffn_down_shexp.weight", i))))
            return rc;
        return MOE_OK;
    }
    const char *p = "model.layers";
    if ((rc = bind_mat(b, &L->router, E, D, "%s.%d.mlp.gate.weight", p, i))) return rc;
    /* HF DeepseekV3 MoEGate has the bias exactly when topk_method is noaux_tc. */
    if (c->topk_method == MOE_TOPK_NOAUX_TC &&
        (rc = bind_vec(b, &L->router_bias, E, "%s.%d.mlp.gate.e_score_correction_bias", p, i)))
        return rc;
    for (int e = 0; e < E; e++)
        if ((rc = bind_mat(b, &L->exp_gate[e], Fe, D, "%s.%d.mlp.experts.%d.gate_proj.weight", p, i, e)) ||
            (rc = bind_mat(b, &L->exp_up[e], Fe, D, "%s.%d.mlp.experts.%d.up_proj.weight", p, i, e)) ||
            (rc = bind_mat(b, &L->exp_down[e], D, Fe, "%s.%d.mlp.experts.%d.down_proj.weight", p, i, e)))
            return rc;
    if (L->shared &&
        ((rc = bind_mat(b, &L->sh_gate, Fs, D, "%s.%d.mlp.shared_experts.gate_proj.weight", p, i)) ||
         (rc = bind_mat(b, &L->sh_up, Fs, D, "%s.%d.mlp.shared_experts.up_proj.weight", p, i)) ||
         (rc = bind_mat(b, &L->sh_down, D, Fs, "%s.%d.mlp.shared_experts.down_proj.weight", p, i))))
        return rc;
    return MOE_OK;
}

/* Q8_0 weights need K % 32 == 0 for their activations too (the reader
 * checks the rows; this names the tensor if an activation width is off). */
static int check_q8_cols(struct binder *b, const struct moe_mat *w, const char *what, int layer)
{
    if (w->data && w->type == MOE_W_Q8_0 && w->cols % 32)
        return moe_errorf(b->err, b->errlen, MOE_ERR_UNSUPPORTED, "%s: layer %d %s: Q8_0 needs a width divisible by 32",
                          b->mf->path, layer, what);
    return MOE_OK;
}

static float yarn_mscale(float factor, float mscale)
{
    return factor <= 1.0f ? 1.0f : 0.1f * mscale * logf(factor) + 1.0f;
}

int moe_model_bind(struct moe_model *m, char *err, size_t errlen)
{
    struct moe_config *c = &m->cfg;
    struct binder b = {.m = m, .mf = m->files, .gguf = m->files->kind == MOE_FILES_GGUF, .err = err, .errlen = errlen};
    int rc;

    /* MTP / nextn layers.  HF: layers >= num_hidden_layers, never bound.
     * GGUF: llama.cpp counts them in block_count (n_layer - nextn are the
     * main layers) unless the file stores them after block_count. */
    m->n_mtp_layers = c->num_nextn_predict_layers;
    if (b.gguf && c->num_nextn_predict_layers > 0 && !has(&b, "blk.%d.attn_norm.weight", c->n_layers)) {
        if (c->num_nextn_predict_layers >= c->n_layers)
            return moe_errorf(err, errlen, MOE_ERR_INVALID, "%s: deepseek2.nextn_predict_layers = %d >= block_count = %d",
                              m->files->path, c->num_nextn_predict_layers, c->n_layers);
        c->n_layers -= c->num_nextn_predict_layers;
        if (c->first_k_dense_replace > c->n_layers) c->first_k_dense_replace = c->n_layers;
    }

    if (c->n_routed_experts > 0 && c->n_group > 1024)
        return moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED, "%s: n_group = %d not supported (at most 1024)",
                          m->files->path, c->n_group);
    const int64_t V = c->vocab_size, D = c->hidden_size;
    if ((rc = bind_mat(&b, &m->embed, V, D, b.gguf ? "token_embd.weight" : "model.embed_tokens.weight")) ||
        (rc = bind_vec(&b, &m->out_norm, D, b.gguf ? "output_norm.weight" : "model.norm.weight")))
        return rc;
    const char *out_name = b.gguf ? "output.weight" : "lm_head.weight";
    if (c->tie_word_embeddings && !moe_model_files_find(m->files, out_name)) m->lm_head = m->embed;
    else if ((rc = bind_mat(&b, &m->lm_head, V, D, "%s", out_name))) return rc;

    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) return moe_errorf(err, errlen, MOE_ERR_NOMEM, "out of memory");
    for (int i = 0; i < c->n_layers; i++) {
        struct moe_layer *L = &m->layers[i];
        if ((rc = bind_attn(&b, L, i)) || (rc = bind_ffn(&b, L, i))) return rc;
        if ((rc = check_q8_cols(&b, &L->k_b, "attn_k_b", i)) || (rc = check_q8_cols(&b, &L->v_b, "attn_v_b", i)))
            return rc;
        if (m->progress) m->progress(m->progress_user, "binding layers", 0.5 + 0.5 * (double)(i + 1) / c->n_layers);
    }

    /* RoPE: YaRN frequencies and the two mscale terms. */
    const int64_t rope = c->qk_rope_head_dim;
    m->inv_freq = malloc(sizeof(float) * (size_t)(rope / 2));
    if (!m->inv_freq) return moe_errorf(err, errlen, MOE_ERR_NOMEM, "out of memory");
    struct moe_yarn y = {.theta = c->rope_theta, .factor = 1.0f};
    m->rope_mscale = 1.0f;
    m->attn_scale = 1.0f / sqrtf((float)(c->qk_nope_head_dim + rope));
    if (c->rope_scaling.yarn && c->rope_scaling.factor > 1.0f) {
        y.factor = c->rope_scaling.factor;
        y.original_max = c->rope_scaling.original_max_position_embeddings;
        y.beta_fast = c->rope_scaling.beta_fast;
        y.beta_slow = c->rope_scaling.beta_slow;
        m->attn_scale *= moe_yarn_mscale_sq(y.factor, c->rope_scaling.mscale_all_dim);
        m->rope_mscale = yarn_mscale(y.factor, c->rope_scaling.mscale) /
                         yarn_mscale(y.factor, c->rope_scaling.mscale_all_dim);
    }
    moe_yarn_inv_freq(m->inv_freq, rope, &y);
    return MOE_OK;
}

/* ---- public API: open, info, free */

void moe_model_params_init(struct moe_model_params *p)
{
    memset(p, 0, sizeof *p);
}

static void progress(const struct moe_model_params *p, const char *stage, double f)
{
    if (p && p->progress) p->progress(p->progress_user, stage, f);
}

/* ---- the expert pager (src/pager.c) */

/* Memory in bytes by sysconf (model.h). */
size_t moe_mem_bytes(int pages_name)
{
    long pages = sysconf(pages_name), size = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && size > 0 ? (size_t)pages * (size_t)size : 0;
}

#define PAGER_DEFAULT_MODE MOE_PAGER_DIRECT

/* AUTO: no pager when the weights fit in 80% of RAM; else the default
 * mode with a budget of 70% of RAM less the other weights.  A budget
 * without a mode means the default mode; a trace alone, a counting-only
 * pager. */
static int model_pager_open(struct moe_model *m, const struct moe_model_params *p, char *err, size_t errlen)
{
    if (!p || m->cfg.n_routed_experts <= 0) return MOE_OK;
    int mode = p->pager_mode;
    size_t budget = p->mem_budget;
    struct moe_model_info info;
    moe_model_get_info(m, &info);
    if (mode < MOE_PAGER_AUTO || mode > MOE_PAGER_DIRECT)
        return moe_errorf(err, errlen, MOE_ERR_INVALID, "unknown pager mode %d", mode);
    if (mode == MOE_PAGER_AUTO) {
        const size_t ram = moe_mem_bytes(_SC_PHYS_PAGES), other = info.weight_bytes - info.routed_expert_bytes;
        if (budget > 0) {
            mode = PAGER_DEFAULT_MODE;
        } else if (ram && (double)info.weight_bytes > 0.8 * (double)ram) {
            mode = PAGER_DEFAULT_MODE;
            budget = (size_t)(0.7 * (double)ram) > other ? (size_t)(0.7 * (double)ram) - other : info.routed_expert_bytes / 8;
        } else {
            mode = MOE_PAGER_OFF;
        }
    }
    if (mode == MOE_PAGER_OFF && !p->trace_routing) return MOE_OK;
    if (budget == 0) budget = SIZE_MAX;
    return moe_pager_create(&m->pager, m, mode, budget, p->pager_policy, p->lookahead, p->io_threads,
                            p->slot_prefault >= 0, p->trace_routing, err, errlen);
}

void moe_model_pager_stats(const struct moe_model *m, struct moe_pager_stats *s)
{
    if (m->pager) {
        moe_pager_get_stats(m->pager, s);
        return;
    }
    memset(s, 0, sizeof *s);
    s->mode = MOE_PAGER_OFF;
    s->budget_bytes = SIZE_MAX;
}

int64_t moe_model_pager_history(const struct moe_model *m, struct moe_pager_stats *out, int64_t max)
{
    return m->pager ? moe_pager_get_history(m->pager, out, max) : 0;
}

int moe_model_open(struct moe_model **out, const char *path, const struct moe_model_params *p, char *err,
                   size_t errlen)
{
    *out = NULL;
    struct moe_model *m = calloc(1, sizeof *m);
    if (!m) return moe_errorf(err, errlen, MOE_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&m->eval_lock, NULL);
    int rc;
    const char *isa = p ? p->isa : NULL;
    if (isa && *isa && strcmp(isa, "auto") != 0) m->k = moe_kernels_select(isa, err, errlen);
    else m->k = moe_kernels_get(err, errlen);
    if (!m->k) {
        rc = MOE_ERR_UNSUPPORTED;
        goto fail;
    }
    progress(p, "opening files", 0.0);
    if ((rc = moe_model_files_open(&m->files, path, err, errlen))) goto fail;
    if ((rc = moe_config_load(&m->cfg, m->files, err, errlen))) goto fail;
    progress(p, "binding tensors", 0.5);
    if (p) {
        m->progress = p->progress;
        m->progress_user = p->progress_user;
    }
    rc = moe_model_bind(m, err, errlen);
    m->progress = NULL;        /* the caller's user pointer is only valid during open */
    m->progress_user = NULL;
    if (rc) goto fail;
    int nt = p && p->n_threads > 0 ? p->n_threads : moe_physical_cores();
    if (nt > 1024) nt = 1024;
    m->pool = moe_pool_create(nt);
    if (!m->pool) {
        rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "cannot start %d threads", nt);
        goto fail;
    }
    if ((rc = model_pager_open(m, p, err, errlen))) goto fail;
    progress(p, "ready", 1.0);
    *out = m;
    return MOE_OK;
fail:
    moe_model_free(m);
    return rc;
}

void moe_model_free(struct moe_model *m)
{
    if (!m) return;
    moe_pager_free(m->pager);
    if (m->layers) {
        for (int i = 0; i < m->cfg.n_layers; i++) {
            struct moe_layer *L = &m->layers[i];
            free(L->attn_norm);
            free(L->q_a_norm);
            free(L->kv_a_norm);
            free(L->ffn_norm);
            free(L->router_bias);
            free(L->exp_gate);
            free(L->exp_up);
            free(L->exp_down);
        }
        free(m->layers);
    }
    free(m->out_norm);
    free(m->inv_freq);
    if (m->pool) moe_pool_destroy(m->pool);
    moe_model_files_close(m->files);
    pthread_mutex_destroy(&m->eval_lock);
    free(m);
}

void moe_model_get_info(const struct moe_model *m, struct moe_model_info *info)
{
    const struct moe_config *c = &m->cfg;
    memset(info, 0, sizeof *info);
    info->format = m->files->kind == MOE_FILES_GGUF ? "gguf" : "safetensors";
    info->model_type = c->model_type;
    info->isa = m->k->name;
    info->n_threads = moe_pool_threads(m->pool);
    info->vocab_size = c->vocab_size;
    info->hidden_size = c->hidden_size;
    info->n_layers = c->n_layers;
    info->n_mtp_layers = m->n_mtp_layers;
    for (int i = 0; i < c->n_layers; i++) info->n_dense_layers += !m->layers[i].is_moe;
    info->n_heads = c->n_heads;
    info->n_routed_experts = c->n_routed_experts;
    info->n_shared_experts = c->n_shared_experts;
    info->n_experts_per_tok = c->n_experts_per_tok;
    info->kv_lora_rank = c->kv_lora_rank;
    info->qk_rope_head_dim = c->qk_rope_head_dim;
    info->max_position_embeddings = c->max_position_embeddings;
    info->bos_token_id = c->bos_token_id;
    info->eos_token_id = c->eos_token_id;
    info->weight_bytes = m->weight_bytes;
    for (int i = 0; i < c->n_layers; i++) {
        const struct moe_layer *L = &m->layers[i];
        if (!L->is_moe) continue;
        for (int e = 0; e < c->n_routed_experts; e++) {
            const struct moe_mat *t[3] = {&L->exp_gate[e], &L->exp_up[e], &L->exp_down[e]};
            for (int j = 0; j < 3; j++) {
                info->routed_expert_bytes += moe_wtype_row_bytes(t[j]->type, t[j]->cols) * (size_t)t[j]->rows;
                if (t[j]->type == MOE_W_FP8)
                    info->routed_expert_bytes +=
                        sizeof(float) * (size_t)(moe_fp8_scale_rows(t[j]->rows) * moe_fp8_scale_cols(t[j]->cols));
            }
        }
    }
    /* tied embeddings are read whole by lm_head: not skipped per token */
    if (m->embed.data != m->lm_head.data)
        info->embedding_bytes = moe_wtype_row_bytes(m->embed.type, m->embed.cols) * (size_t)m->embed.rows;
}
