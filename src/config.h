/*
 * src/config.h — a DeepSeek-family model's hyper-parameters, from a
 * Hugging Face config.json (deepseek_v2, deepseek_v3, kimi_k2: DeepSeek-V2,
 * V2-Lite, V3/R1, Moonlight, Kimi-K2) or from GGUF `deepseek2.*` metadata
 * as llama.cpp writes it.  Both fill the same struct and pass the same
 * validation; a key absent from config.json takes the default of HF's
 * DeepseekV3Config (deepseek_v3, kimi_k2) or DeepseekV2Config (deepseek_v2).
 */
#ifndef MOE_CONFIG_H
#define MOE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "model_files.h"

enum moe_topk_method {
    MOE_TOPK_GREEDY = 0,               /* top-k over all experts (V2-Lite) */
    MOE_TOPK_GROUP_LIMITED_GREEDY = 1, /* groups ranked by their max score (V2) */
    MOE_TOPK_NOAUX_TC = 2,             /* groups ranked by the sum of their top-2 biased scores (V3) */
};

enum moe_scoring { MOE_SCORING_SOFTMAX = 0, MOE_SCORING_SIGMOID = 1 };

/* Expert groups the router supports (DeepSeek-V3 has 8). */
#define MOE_MAX_GROUPS 1024

struct moe_config {
    char model_type[32];             /* "deepseek_v2", "deepseek_v3", "kimi_k2"; "deepseek2" from GGUF */
    int64_t vocab_size;
    int64_t hidden_size;             /* model width */
    int64_t intermediate_size;       /* hidden width of the dense MLP layers */
    int64_t moe_intermediate_size;   /* hidden width of one expert (routed or shared) */
    int n_layers;                    /* num_hidden_layers; MTP layers follow, numbered from n_layers */
    int n_heads;                     /* num_attention_heads */

    /* DeepSeekMoE */
    int n_routed_experts;            /* 0: a dense model */
    int n_shared_experts;            /* the shared MLP is n_shared * moe_intermediate_size wide */
    int n_experts_per_tok;           /* top-k */
    int n_group, topk_group;         /* group-limited routing; 1, 1 when unused */
    enum moe_topk_method topk_method;
    enum moe_scoring scoring_func;
    bool norm_topk_prob;
    float routed_scaling_factor;
    int first_k_dense_replace;       /* layers [0, first_k) are dense */
    int moe_layer_freq;              /* then every moe_layer_freq-th layer is MoE */

    /* MLA */
    int64_t q_lora_rank;             /* 0: no q LoRA, a single q_proj (V2-Lite) */
    int64_t kv_lora_rank;
    int64_t qk_nope_head_dim, qk_rope_head_dim, v_head_dim;

    float rms_norm_eps;
    float rope_theta;
    struct {
        bool yarn;                   /* false: plain RoPE (rope_scaling null) */
        float factor;
        int64_t original_max_position_embeddings;
        float beta_fast, beta_slow;
        float mscale, mscale_all_dim;
    } rope_scaling;
    int64_t max_position_embeddings;
    int num_nextn_predict_layers;    /* MTP layers stored after the main ones */

    int64_t bos_token_id, eos_token_id; /* -1 when absent; the first id when a list */
    bool tie_word_embeddings;

    /* quantization_config {quant_method "fp8", weight_block_size [128, 128]} */
    bool fp8;
    int64_t fp8_block_rows, fp8_block_cols;
};

/* Parse config.json text (label names it in messages) / a file. */
int moe_config_parse_json(struct moe_config *c, const char *text, size_t len, const char *label, char *err,
                          size_t errlen);
int moe_config_load_json(struct moe_config *c, const char *path, char *err, size_t errlen);
/* From a GGUF file's deepseek2.* metadata (vocab size from
 * deepseek2.vocab_size, tokenizer.ggml.tokens, or the output/embedding
 * tensor).  yarn_log_multiplier is 0.1 * mscale_all_dim (llama.cpp's
 * convert_hf_to_gguf.py), so mscale = mscale_all_dim = it / 0.1. */
int moe_config_from_gguf(struct moe_config *c, const struct moe_gguf *g, char *err, size_t errlen);
/* Either, for an open model: <dir>/config.json or the GGUF metadata. */
int moe_config_load(struct moe_config *c, const struct moe_model_files *mf, char *err, size_t errlen);

/* The checks both parsers end with (MOE_ERR_INVALID naming the key):
 * positive sizes, even rope dim, 1 <= top-k <= experts, groups divide the
 * experts, topk_group <= n_group, enough experts in the kept groups, ... */
int moe_config_validate(const struct moe_config *c, const char *label, char *err, size_t errlen);

/* Whether layer i (0-based, i < n_layers) has a MoE feed-forward. */
bool moe_config_layer_is_moe(const struct moe_config *c, int i);

#endif
