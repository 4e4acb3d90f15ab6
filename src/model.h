/*
 * src/model.h — a DeepSeek-family model bound for the forward pass: the
 * config and every weight the forward pass reads, as struct moe_mat views
 * into the read-only mmaps of src/model_files.c (nothing copied but the
 * tiny vectors: norm weights and the router's correction bias, as FP32).
 *
 * Both naming schemes bind into the same struct: Hugging Face
 * (model.layers.N.self_attn.q_a_proj.weight, FP8 with
 * `<name>_scale_inv`) and GGUF deepseek2 (blk.N.attn_q_a.weight, experts
 * as 3-D tensors, attn_kv_b or the split attn_k_b/attn_v_b).
 */
#ifndef MOE_MODEL_H
#define MOE_MODEL_H

#include <pthread.h>
#include <stdbool.h>

#include "../simd/kernels.h"
#include "config.h"
#include "model_files.h"
#include "moecpu.h"
#include "threads.h"

/* One transformer layer.  Shapes are [rows, cols] = [out, in]. */
struct moe_layer {
    bool is_moe;
    /* attention (MLA) */
    float *attn_norm;          /* [hidden] */
    bool q_lora;               /* q_a -> q_a_norm -> q_b; else q */
    struct moe_mat q_a;        /* [q_lora_rank, hidden] */
    float *q_a_norm;           /* [q_lora_rank] */
    struct moe_mat q_b;        /* [heads * (nope + rope), q_lora_rank]  (or q: [.., hidden]) */
    struct moe_mat kv_a;       /* [kv_lora + rope, hidden] */
    float *kv_a_norm;          /* [kv_lora] */
    bool kv_split;             /* GGUF attn_k_b/attn_v_b instead of kv_b */
    struct moe_mat kv_b;       /* [heads * (nope + v), kv_lora]: head h rows h*(nope+v) + [0, nope) are
                                * W_UK, the next v rows W_UV */
    struct moe_mat k_b;        /* split form, [heads * kv_lora, nope]: head h rows h*kv_lora + [0, kv_lora)
                                * (W_UK transposed) */
    struct moe_mat v_b;        /* split form, [heads * v, kv_lora] */
    struct moe_mat o;          /* [hidden, heads * v] */
    /* feed-forward */
    float *ffn_norm;           /* [hidden] */
    struct moe_mat gate, up;   /* dense: [intermediate, hidden] */
    struct moe_mat down;       /* dense: [hidden, intermediate] */
    struct moe_mat router;     /* MoE: [n_routed, hidden] */
    float *router_bias;        /* [n_routed] (e_score_correction_bias) or NULL */
    struct moe_mat *exp_gate, *exp_up, *exp_down; /* [n_routed] each: [moe_inter, hidden], [hidden, moe_inter] */
    bool shared;               /* shared experts present */
    struct moe_mat sh_gate, sh_up; /* [n_shared * moe_inter, hidden] */
    struct moe_mat sh_down;    /* [hidden, n_shared * moe_inter] */
};

struct moe_model {
    struct moe_config cfg;     /* n_layers = main layers only */
    struct moe_model_files *files;
    const struct moe_kernels *k;
    struct moe_pool *pool;
    pthread_mutex_t eval_lock; /* one eval at a time per model (one pool) */
    int n_mtp_layers;
    struct moe_mat embed;      /* [vocab, hidden] */
    struct moe_mat lm_head;    /* [vocab, hidden] (the embedding when tied) */
    float *out_norm;           /* [hidden] */
    struct moe_layer *layers;  /* [n_layers] */
    /* RoPE */
    float *inv_freq;           /* [rope / 2] (YaRN when configured) */
    float rope_mscale;         /* HF: cos/sin times yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim) */
    float attn_scale;          /* (nope + rope)^-0.5 * mscale_all_dim^2 term */
    size_t weight_bytes;
    struct moe_pager *pager;   /* NULL: experts read straight from the mapping (src/pager.h) */
    /* load progress (moe_model_params), called per bound layer; may be NULL */
    moe_progress_fn progress;
    void *progress_user;
};

/* Bind every tensor of an open model's files (config already loaded into
 * m->cfg; m->files set).  Fills m->layers, embed, lm_head, norms, RoPE
 * tables.  On failure the partially bound model is freed by moe_model_free. */
int moe_model_bind(struct moe_model *m, char *err, size_t errlen);

/* Bytes of memory by sysconf (src/model.c): _SC_PHYS_PAGES (all RAM) or
 * _SC_AVPHYS_PAGES (free now); 0 if unknown. */
size_t moe_mem_bytes(int pages_name);

/* DeepSeekMoE routing of one token (src/forward.c; contract there):
 * logits[n_routed_experts] in, bias NULL or [n_routed_experts] (selection
 * only), scratch[2 * n_routed_experts]; the chosen experts in sel[top-k]
 * (best first) and their weights in w[top-k]. */
void moe_route(const struct moe_kernels *k, const struct moe_config *cf, const float *bias, const float *logits,
               float *scratch, int *sel, float *w);

#endif
