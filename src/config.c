/*
 * src/config.c — struct moe_config from config.json (Jansson) or from GGUF
 * metadata, then one validation pass.  Defaults are HF's
 * DeepseekV3Config / DeepseekV2Config constructor defaults.
 */
#include "config.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Defaults */

static void defaults_v3(struct moe_config *c)
{
    memset(c, 0, sizeof *c);
    c->vocab_size = 129280;
    c->hidden_size = 7168;
    c->intermediate_size = 18432;
    c->moe_intermediate_size = 2048;
    c->n_layers = 61;
    c->n_heads = 128;
    c->n_shared_experts = 1;
    c->n_routed_experts = 256;
    c->n_experts_per_tok = 8;
    c->n_group = 8;
    c->topk_group = 4;
    c->topk_method = MOE_TOPK_NOAUX_TC;
    c->scoring_func = MOE_SCORING_SIGMOID;
    c->norm_topk_prob = true;
    c->routed_scaling_factor = 2.5f;
    c->first_k_dense_replace = 3;
    c->moe_layer_freq = 1;
    c->q_lora_rank = 1536;
    c->kv_lora_rank = 512;
    c->qk_nope_head_dim = 128;
    c->qk_rope_head_dim = 64;
    c->v_head_dim = 128;
    c->rms_norm_eps = 1e-6f;
    c->rope_theta = 10000.0f;
    c->max_position_embeddings = 4096;
    c->num_nextn_predict_layers = 1;
    c->bos_token_id = 0;
    c->eos_token_id = 1;
    c->tie_word_embeddings = false;
}

static void defaults_v2(struct moe_config *c)
{
    memset(c, 0, sizeof *c);
    c->vocab_size = 102400;
    c->hidden_size = 4096;
    c->intermediate_size = 11008;
    c->moe_intermediate_size = 1407;
    c->n_layers = 30;
    c->n_heads = 32;
    c->n_shared_experts = 0;   /* None */
    c->n_routed_experts = 0;   /* None: dense */
    c->n_experts_per_tok = 0;  /* None */
    c->n_group = 1;            /* None */
    c->topk_group = 1;         /* None */
    c->topk_method = MOE_TOPK_GREEDY; /* 'gready' (sic) in HF's code */
    c->scoring_func = MOE_SCORING_SOFTMAX;
    c->norm_topk_prob = false;
    c->routed_scaling_factor = 1.0f;
    c->first_k_dense_replace = 0;
    c->moe_layer_freq = 1;
    c->q_lora_rank = 1536;
    c->kv_lora_rank = 512;
    c->qk_nope_head_dim = 128;
    c->qk_rope_head_dim = 64;
    c->v_head_dim = 128;
    c->rms_norm_eps = 1e-6f;
    c->rope_theta = 10000.0f;
    c->max_position_embeddings = 2048;
    c->num_nextn_predict_layers = 0;
    c->bos_token_id = 100000;
    c->eos_token_id = 100001;
    c->tie_word_embeddings = false;
}

/* ---- JSON field readers: absent keeps the default; null is allowed only
 * where HF allows None (nullable). */

struct jctx {
    const json_t *o;
    const char *label;
    char *err;
    size_t errlen;
};

static int j_int(struct jctx *j, const char *key, int64_t *out, bool nullable, int64_t null_value)
{
    json_t *v = json_object_get(j->o, key);
    if (!v) return 0;
    if (json_is_null(v)) {
        if (!nullable) return moe_errorf(j->err, j->errlen, MOE_ERR_INVALID, "%s: %s must not be null", j->label, key);
        *out = null_value;
        return 0;
    }
    if (json_is_real(v)) { /* 2.0 is tolerated, 2.5 is not */
        double d = json_real_value(v);
        if (d == floor(d) && fabs(d) < 9.0e15) {
            *out = (int64_t)d;
            return 0;
        }
    }
    if (!json_is_integer(v))
        return moe_errorf(j->err, j->errlen, MOE_ERR_INVALID, "%s: %s must be an integer", j->label, key);
    *out = (int64_t)json_integer_value(v);
    return 0;
}

/* An int-sized field. */
static int j_i32(struct jctx *j, const char *key, int *out, bool nullable, int null_value)
{
    int64_t v = *out;
    int rc = j_int(j, key, &v, nullable, null_value);
    if (rc) return rc;
    if (v < INT32_MIN || v > INT32_MAX)
        return moe_errorf(j->err, j->errlen, MOE_ERR_INVALID, "%s: %s = %" PRId64 " out of range", j->label, key, v);
    *out = (int)v;
    return 0;
}

static int j_float(struct jctx *j, const char *key, float *out)
{
    json_t *v = json_object_get(j->o, key);
    if (!v) return 0;
    if (!json_is_number(v))
        return moe_errorf(j->err, j->errlen, MOE_ERR_INVALID, "%s: %s must be a number", j->label, key);
    double d = json_number_value(v);
    if (!isfinite(d) || fabs(d) > 3.0e38)
        return moe_errorf(j->err, j->errlen, MOE_ERR_INVALID, "%s: %s = %g out of range", j->label, key, d);
    *out = (float)d;
    return 0;
}

static int j_bool(struct jctx *j, const char *key, bool *out)
{
    json_t *v = json_object_get(j->o, key);
    if (!v) return 0;
    if (!json_is_boolean(v))
        return moe_errorf(j->err, j->errlen, MOE_ERR_INVALID, "%s: %s must be true or false", j->label, key);
    *out = json_is_true(v);
    return 0;
}

/* A string field; *out NULL when absent. */
static int j_str(struct jctx *j, const char *key, const char **out)
{
    json_t *v = json_object_get(j->o, key);
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v))
        return moe_errorf(j->err, j->errlen, MOE_ERR_INVALID, "%s: %s must be a string", j->label, key);
    *out = json_string_value(v);
    return 0;
}

/* bos/eos: an id, null, or a list of ids (the first is kept). */
static int j_token(struct jctx *j, const char *key, int64_t *out)
{
    json_t *v = json_object_get(j->o, key);
    if (!v) return 0;
    if (json_is_null(v)) {
        *out = -1;
        return 0;
    }
    if (json_is_array(v)) {
        if (json_array_size(v) == 0) {
            *out = -1;
            return 0;
        }
        v = json_array_get(v, 0);
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return moe_errorf(j->err, j->errlen, MOE_ERR_INVALID, "%s: %s must be a token id", j->label, key);
    *out = (int64_t)json_integer_value(v);
    return 0;
}

static int parse_root(struct moe_config *c, const json_t *root, const char *label, char *err, size_t errlen)
{
    struct jctx j = {root, label, err, errlen};
    const char *mt = NULL;
    int rc;
    if (!json_is_object(root)) return moe_errorf(err, errlen, MOE_ERR_INVALID, "%s: not a JSON object", label);
    if ((rc = j_str(&j, "model_type", &mt))) return rc;
    if (!mt) {
        /* fall back on the architecture name */
        json_t *a = json_array_get(json_object_get(root, "architectures"), 0);
        const char *arch = json_is_string(a) ? json_string_value(a) : "";
        if (strstr(arch, "DeepseekV3")) mt = "deepseek_v3";
        else if (strstr(arch, "DeepseekV2")) mt = "deepseek_v2";
        else return moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED, "%s: model_type missing", label);
    }
    if (strcmp(mt, "deepseek_v3") == 0 || strcmp(mt, "kimi_k2") == 0)
        defaults_v3(c);
    else if (strcmp(mt, "deepseek_v2") == 0)
        defaults_v2(c);
    else
        return moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED,
                          "%s: model_type '%.64s' is not a DeepSeek model (deepseek_v2, deepseek_v3, kimi_k2)", label,
                          mt);
    snprintf(c->model_type, sizeof c->model_type, "%s", mt);

    int64_t q_lora = c->q_lora_rank;
    if ((rc = j_int(&j, "vocab_size", &c->vocab_size, false, 0)) ||
        (rc = j_int(&j, "hidden_size", &c->hidden_size, false, 0)) ||
        (rc = j_int(&j, "intermediate_size", &c->intermediate_size, false, 0)) ||
        (rc = j_int(&j, "moe_intermediate_size", &c->moe_intermediate_size, false, 0)) ||
        (rc = j_i32(&j, "num_hidden_layers", &c->n_layers, false, 0)) ||
        (rc = j_i32(&j, "num_attention_heads", &c->n_heads, false, 0)) ||
        (rc = j_i32(&j, "n_shared_experts", &c->n_shared_experts, true, 0)) ||
        (rc = j_i32(&j, "n_routed_experts", &c->n_routed_experts, true, 0)) ||
        (rc = j_i32(&j, "num_experts_per_tok", &c->n_experts_per_tok, true, 0)) ||
        (rc = j_i32(&j, "n_group", &c->n_group, true, 1)) ||
        (rc = j_i32(&j, "topk_group", &c->topk_group, true, 1)) ||
        (rc = j_bool(&j, "norm_topk_prob", &c->norm_topk_prob)) ||
        (rc = j_float(&j, "routed_scaling_factor", &c->routed_scaling_factor)) ||
        (rc = j_i32(&j, "first_k_dense_replace", &c->first_k_dense_replace, false, 0)) ||
        (rc = j_i32(&j, "moe_layer_freq", &c->moe_layer_freq, false, 0)) ||
        (rc = j_int(&j, "q_lora_rank", &q_lora, true, 0)) ||
        (rc = j_int(&j, "kv_lora_rank", &c->kv_lora_rank, false, 0)) ||
        (rc = j_int(&j, "qk_nope_head_dim", &c->qk_nope_head_dim, false, 0)) ||
        (rc = j_int(&j, "qk_rope_head_dim", &c->qk_rope_head_dim, false, 0)) ||
        (rc = j_int(&j, "v_head_dim", &c->v_head_dim, false, 0)) ||
        (rc = j_float(&j, "rms_norm_eps", &c->rms_norm_eps)) ||
        (rc = j_float(&j, "rope_theta", &c->rope_theta)) ||
        (rc = j_int(&j, "max_position_embeddings", &c->max_position_embeddings, false, 0)) ||
        (rc = j_i32(&j, "num_nextn_predict_layers", &c->num_nextn_predict_layers, true, 0)) ||
        (rc = j_token(&j, "bos_token_id", &c->bos_token_id)) ||
        (rc = j_token(&j, "eos_token_id", &c->eos_token_id)) ||
        (rc = j_bool(&j, "tie_word_embeddings", &c->tie_word_embeddings)))
        return rc;
    c->q_lora_rank = q_lora;

    const char *s;
    if ((rc = j_str(&j, "topk_method", &s))) return rc;
    if (s) {
        if (strcmp(s, "greedy") == 0 || strcmp(s, "gready") == 0) c->topk_method = MOE_TOPK_GREEDY;
        else if (strcmp(s, "group_limited_greedy") == 0) c->topk_method = MOE_TOPK_GROUP_LIMITED_GREEDY;
        else if (strcmp(s, "noaux_tc") == 0) c->topk_method = MOE_TOPK_NOAUX_TC;
        else
            return moe_errorf(err, errlen, MOE_ERR_INVALID,
                              "%s: topk_method '%.64s' unknown (greedy, group_limited_greedy, noaux_tc)", label, s);
    }
    if ((rc = j_str(&j, "scoring_func", &s))) return rc;
    if (s) {
        if (strcmp(s, "softmax") == 0) c->scoring_func = MOE_SCORING_SOFTMAX;
        else if (strcmp(s, "sigmoid") == 0) c->scoring_func = MOE_SCORING_SIGMOID;
        else return moe_errorf(err, errlen, MOE_ERR_INVALID, "%s: scoring_func '%.64s' unknown (softmax, sigmoid)", label, s);
    }

    json_t *rs = json_object_get(root, "rope_scaling");
    if (rs && !json_is_null(rs)) {
        if (!json_is_object(rs)) return moe_errorf(err, errlen, MOE_ERR_INVALID, "%s: rope_scaling must be an object", label);
        struct jctx r = {rs, label, err, errlen};
        const char *type = NULL;
        if ((rc = j_str(&r, "type", &type))) return rc;
        if (!type && (rc = j_str(&r, "rope_type", &type))) return rc;
        if (!type || strcmp(type, "yarn") != 0)
            return moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED, "%s: rope_scaling type '%.32s' not supported (yarn)",
                              label, type ? type : "(none)");
        if (!json_object_get(rs, "factor"))
            return moe_errorf(err, errlen, MOE_ERR_INVALID, "%s: rope_scaling.factor missing", label);
        /* HF's DeepseekV3YarnRotaryEmbedding defaults */
        c->rope_scaling.yarn = true;
        c->rope_scaling.original_max_position_embeddings = 4096;
        c->rope_scaling.beta_fast = 32;
        c->rope_scaling.beta_slow = 1;
        c->rope_scaling.mscale = 1;
        c->rope_scaling.mscale_all_dim = 0;
        r.label = label;
        if ((rc = j_float(&r, "factor", &c->rope_scaling.factor)) ||
            (rc = j_int(&r, "original_max_position_embeddings", &c->rope_scaling.original_max_position_embeddings,
                        false, 0)) ||
            (rc = j_float(&r, "beta_fast", &c->rope_scaling.beta_fast)) ||
            (rc = j_float(&r, "beta_slow", &c->rope_scaling.beta_slow)) ||
            (rc = j_float(&r, "mscale", &c->rope_scaling.mscale)) ||
            (rc = j_float(&r, "mscale_all_dim", &c->rope_scaling.mscale_all_dim)))
            return rc;
    }

    json_t *qc = json_object_get(root, "quantization_config");
    if (qc && !json_is_null(qc)) {
        if (!json_is_object(qc))
            return moe_errorf(err, errlen, MOE_ERR_INVALID, "%s: quantization_config must be an object", label);
        struct jctx q = {qc, label, err, errlen};
        const char *method = NULL;
        if ((rc = j_str(&q, "quant_method", &method))) return rc;
        if (!method || strcmp(method, "fp8") != 0)
            return moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED,
                              "%s: quantization_config.quant_method '%.32s' not supported (fp8)", label,
                              method ? method : "(none)");
        json_t *bs = json_object_get(qc, "weight_block_size");
        if (!json_is_array(bs) || json_array_size(bs) != 2 || !json_is_integer(json_array_get(bs, 0)) ||
            !json_is_integer(json_array_get(bs, 1)))
            return moe_errorf(err, errlen, MOE_ERR_INVALID,
                              "%s: quantization_config.weight_block_size must be [rows, cols]", label);
        c->fp8 = true;
        c->fp8_block_rows = (int64_t)json_integer_value(json_array_get(bs, 0));
        c->fp8_block_cols = (int64_t)json_integer_value(json_array_get(bs, 1));
    }
    return moe_config_validate(c, label, err, errlen);
}

int moe_config_parse_json(struct moe_config *c, const char *text, size_t len, const char *label, char *err,
                          size_t errlen)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: %s (line %d column %d)", label, je.text, je.line,
                          je.column);
    int rc = parse_root(c, root, label, err, errlen);
    json_decref(root);
    return rc;
}

int moe_config_load_json(struct moe_config *c, const char *path, char *err, size_t errlen)
{
    const uint8_t *map;
    size_t size;
    int rc = moe_map_file(path, &map, &size, err, errlen);
    if (rc) return rc;
    rc = moe_config_parse_json(c, map ? (const char *)map : "", size, path, err, errlen);
    moe_unmap_file(map, size);
    return rc;
}

/* ---- GGUF */

struct gctx {
    const struct moe_gguf *g;
    char key[128];
    char *err;
    size_t errlen;
};

static const char *gkey(struct gctx *x, const char *suffix)
{
    snprintf(x->key, sizeof x->key, "deepseek2.%s", suffix);
    return x->key;
}

/* required: missing is an error; else *out keeps its value. */
static int g_int(struct gctx *x, const char *suffix, int64_t *out, bool required)
{
    const char *k = gkey(x, suffix);
    if (!required && !moe_gguf_find(x->g, k)) return 0;
    return moe_gguf_get_int(x->g, k, out, x->err, x->errlen);
}

static int g_i32(struct gctx *x, const char *suffix, int *out, bool required)
{
    int64_t v = *out;
    int rc = g_int(x, suffix, &v, required);
    if (rc) return rc;
    if (v < INT32_MIN || v > INT32_MAX)
        return moe_errorf(x->err, x->errlen, MOE_ERR_INVALID, "%s: %s = %" PRId64 " out of range", x->g->path, x->key, v);
    *out = (int)v;
    return 0;
}

static int g_float(struct gctx *x, const char *suffix, float *out, bool required)
{
    const char *k = gkey(x, suffix);
    if (!required && !moe_gguf_find(x->g, k)) return 0;
    double d;
    int rc = moe_gguf_get_float(x->g, k, &d, x->err, x->errlen);
    if (rc) return rc;
    if (!isfinite(d) || fabs(d) > 3.0e38)
        return moe_errorf(x->err, x->errlen, MOE_ERR_INVALID, "%s: %s = %g out of range", x->g->path, k, d);
    *out = (float)d;
    return 0;
}

int moe_config_from_gguf(struct moe_config *c, const struct moe_gguf *g, char *err, size_t errlen)
{
    const char *arch;
    int rc = moe_gguf_get_str(g, "general.architecture", &arch, err, errlen);
    if (rc) return rc;
    if (strcmp(arch, "deepseek2") != 0)
        return moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED, "%s: general.architecture '%.64s' is not deepseek2", g->path,
                          arch);
    memset(c, 0, sizeof *c);
    snprintf(c->model_type, sizeof c->model_type, "deepseek2");
    struct gctx x = {.g = g, .err = err, .errlen = errlen};
    int64_t key_len = 0, val_len = 0;
    int gating = 0;
    bool norm = false;
    c->moe_layer_freq = 1;
    c->n_group = c->topk_group = 1;
    c->routed_scaling_factor = 1.0f;
    c->rope_theta = 10000.0f;
    c->bos_token_id = c->eos_token_id = -1;
    if ((rc = g_i32(&x, "block_count", &c->n_layers, true)) ||
        (rc = g_int(&x, "embedding_length", &c->hidden_size, true)) ||
        (rc = g_int(&x, "feed_forward_length", &c->intermediate_size, true)) ||
        (rc = g_int(&x, "context_length", &c->max_position_embeddings, true)) ||
        (rc = g_i32(&x, "attention.head_count", &c->n_heads, true)) ||
        (rc = g_int(&x, "attention.q_lora_rank", &c->q_lora_rank, false)) ||
        (rc = g_int(&x, "attention.kv_lora_rank", &c->kv_lora_rank, true)) ||
        (rc = g_int(&x, "rope.dimension_count", &c->qk_rope_head_dim, true)) ||
        (rc = g_float(&x, "attention.layer_norm_rms_epsilon", &c->rms_norm_eps, true)) ||
        (rc = g_float(&x, "rope.freq_base", &c->rope_theta, false)) ||
        (rc = g_i32(&x, "leading_dense_block_count", &c->first_k_dense_replace, false)) ||
        (rc = g_int(&x, "expert_feed_forward_length", &c->moe_intermediate_size, false)) ||
        (rc = g_i32(&x, "expert_count", &c->n_routed_experts, false)) ||
        (rc = g_i32(&x, "expert_used_count", &c->n_experts_per_tok, false)) ||
        (rc = g_i32(&x, "expert_shared_count", &c->n_shared_experts, false)) ||
        (rc = g_i32(&x, "expert_group_count", &c->n_group, false)) ||
        (rc = g_i32(&x, "expert_group_used_count", &c->topk_group, false)) ||
        (rc = g_float(&x, "expert_weights_scale", &c->routed_scaling_factor, false)) ||
        (rc = g_i32(&x, "expert_gating_func", &gating, false)) ||
        (rc = g_i32(&x, "nextn_predict_layers", &c->num_nextn_predict_layers, false)) ||
        (rc = g_int(&x, "vocab_size", &c->vocab_size, false)))
        return rc;
    if (moe_gguf_find(g, gkey(&x, "expert_weights_norm")) &&
        (rc = moe_gguf_get_bool(g, x.key, &norm, err, errlen)))
        return rc;
    c->norm_topk_prob = norm;

    /* head widths: the _mla keys when present (newer split k_b/v_b files,
     * where key_length is kv_lora + rope), else the legacy per-head keys */
    if (moe_gguf_find(g, gkey(&x, "attention.key_length_mla"))) {
        if ((rc = g_int(&x, "attention.key_length_mla", &key_len, true))) return rc;
    } else if ((rc = g_int(&x, "attention.key_length", &key_len, true))) {
        return rc;
    }
    if (moe_gguf_find(g, gkey(&x, "attention.value_length_mla"))) {
        if ((rc = g_int(&x, "attention.value_length_mla", &val_len, true))) return rc;
    } else if ((rc = g_int(&x, "attention.value_length", &val_len, true))) {
        return rc;
    }
    c->qk_nope_head_dim = key_len - c->qk_rope_head_dim;
    c->v_head_dim = val_len;

    /* llama.cpp: 0 (absent) means softmax for old V2 files; 1 softmax, 2 sigmoid */
    if (gating == 0 || gating == 1) c->scoring_func = MOE_SCORING_SOFTMAX;
    else if (gating == 2) c->scoring_func = MOE_SCORING_SIGMOID;
    else
        return moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED, "%s: deepseek2.expert_gating_func = %d not supported (1 softmax, 2 sigmoid)",
                          g->path, gating);
    if (c->scoring_func == MOE_SCORING_SIGMOID) c->topk_method = MOE_TOPK_NOAUX_TC;
    else c->topk_method = c->n_group > 1 ? MOE_TOPK_GROUP_LIMITED_GREEDY : MOE_TOPK_GREEDY;

    /* rope scaling */
    const struct moe_gguf_value *st = moe_gguf_find(g, gkey(&x, "rope.scaling.type"));
    if (st) {
        if (st->type != MOE_GGUF_STRING)
            return moe_errorf(err, errlen, MOE_ERR_TYPE, "%s: %s is %s, expected str", g->path, x.key,
                              moe_gguf_type_name(st->type));
        if (strcmp(st->str.s, "yarn") == 0) {
            c->rope_scaling.yarn = true;
            c->rope_scaling.beta_fast = 32;
            c->rope_scaling.beta_slow = 1;
            float logmul = 0;
            if ((rc = g_float(&x, "rope.scaling.factor", &c->rope_scaling.factor, true)) ||
                (rc = g_int(&x, "rope.scaling.original_context_length",
                            &c->rope_scaling.original_max_position_embeddings, true)) ||
                (rc = g_float(&x, "rope.scaling.yarn_log_multiplier", &logmul, false)) ||
                (rc = g_float(&x, "rope.scaling.yarn_beta_fast", &c->rope_scaling.beta_fast, false)) ||
                (rc = g_float(&x, "rope.scaling.yarn_beta_slow", &c->rope_scaling.beta_slow, false)))
                return rc;
            c->rope_scaling.mscale_all_dim = logmul / 0.1f;
            c->rope_scaling.mscale = c->rope_scaling.mscale_all_dim;
        } else if (strcmp(st->str.s, "none") != 0) {
            return moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED, "%s: %s '%.32s' not supported (yarn, none)", g->path,
                              x.key, st->str.s);
        }
    }

    /* vocabulary and output */
    const struct moe_tensor *out = moe_gguf_find_tensor(g, "output.weight");
    const struct moe_tensor *emb = moe_gguf_find_tensor(g, "token_embd.weight");
    c->tie_word_embeddings = out == NULL;
    if (c->vocab_size == 0) {
        const struct moe_gguf_value *tok = moe_gguf_find(g, "tokenizer.ggml.tokens");
        if (tok && tok->type == MOE_GGUF_ARRAY && tok->arr.n <= (uint64_t)INT64_MAX) c->vocab_size = (int64_t)tok->arr.n;
        else if (out && out->n_dims == 2) c->vocab_size = out->shape[0];
        else if (emb && emb->n_dims == 2) c->vocab_size = emb->shape[0];
        else
            return moe_errorf(err, errlen, MOE_ERR_NOT_FOUND,
                              "%s: vocabulary size unknown (no deepseek2.vocab_size, tokenizer.ggml.tokens or output tensor)",
                              g->path);
    }
    int64_t id;
    if (moe_gguf_find(g, "tokenizer.ggml.bos_token_id") &&
        !moe_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &id, NULL, 0))
        c->bos_token_id = id;
    if (moe_gguf_find(g, "tokenizer.ggml.eos_token_id") &&
        !moe_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &id, NULL, 0))
        c->eos_token_id = id;
    return moe_config_validate(c, g->path, err, errlen);
}

int moe_config_load(struct moe_config *c, const struct moe_model_files *mf, char *err, size_t errlen)
{
    if (mf->gguf) return moe_config_from_gguf(c, mf->gguf, err, errlen);
    size_t n = strlen(mf->dir);
    char *p = malloc(n + sizeof "/config.json");
    if (!p) return moe_errorf(err, errlen, MOE_ERR_NOMEM, "out of memory");
    memcpy(p, mf->dir, n);
    memcpy(p + n, "/config.json", sizeof "/config.json");
    int rc = moe_config_load_json(c, p, err, errlen);
    free(p);
    return rc;
}

/* ---- Validation */

#define MAX_DIM ((int64_t)1 << 24)   /* widths, ranks, vocabulary */

int moe_config_validate(const struct moe_config *c, const char *label, char *err, size_t errlen)
{
#define BAD(...) return moe_errorf(err, errlen, MOE_ERR_INVALID, __VA_ARGS__)
#define DIM(field, key, minv)                                                                                   \
    if (c->field < (minv) || c->field > MAX_DIM)                                                                \
        BAD("%s: %s = %" PRId64 " must be in [%d, %" PRId64 "]", label, key, (int64_t)c->field, (int)(minv), MAX_DIM);
    DIM(vocab_size, "vocab_size", 1)
    DIM(hidden_size, "hidden_size", 1)
    DIM(n_heads, "num_attention_heads", 1)
    DIM(kv_lora_rank, "kv_lora_rank", 1)
    DIM(q_lora_rank, "q_lora_rank", 0)
    DIM(qk_nope_head_dim, "qk_nope_head_dim", 1)
    DIM(qk_rope_head_dim, "qk_rope_head_dim", 2)
    DIM(v_head_dim, "v_head_dim", 1)
    DIM(intermediate_size, "intermediate_size", 0)
    DIM(moe_intermediate_size, "moe_intermediate_size", 0)
    DIM(max_position_embeddings, "max_position_embeddings", 1)
    if (c->n_layers < 1 || c->n_layers > 4096) BAD("%s: num_hidden_layers = %d must be in [1, 4096]", label, c->n_layers);
    if (c->qk_rope_head_dim % 2) BAD("%s: qk_rope_head_dim = %" PRId64 " must be even", label, c->qk_rope_head_dim);
    if (c->num_nextn_predict_layers < 0 || c->num_nextn_predict_layers > 64)
        BAD("%s: num_nextn_predict_layers = %d must be in [0, 64]", label, c->num_nextn_predict_layers);
    if (c->first_k_dense_replace < 0 || c->first_k_dense_replace > c->n_layers)
        BAD("%s: first_k_dense_replace = %d must be in [0, num_hidden_layers = %d]", label, c->first_k_dense_replace,
            c->n_layers);
    if (c->moe_layer_freq < 1) BAD("%s: moe_layer_freq = %d must be >= 1", label, c->moe_layer_freq);
    if (c->n_routed_experts < 0 || c->n_routed_experts > 65536)
        BAD("%s: n_routed_experts = %d must be in [0, 65536]", label, c->n_routed_experts);
    if (c->n_shared_experts < 0 || c->n_shared_experts > 1024)
        BAD("%s: n_shared_experts = %d must be in [0, 1024]", label, c->n_shared_experts);
    bool any_dense = false, any_moe = false;
    for (int i = 0; i < c->n_layers; i++) {
        if (moe_config_layer_is_moe(c, i)) any_moe = true;
        else any_dense = true;
    }
    if (any_dense && c->intermediate_size < 1)
        BAD("%s: intermediate_size = %" PRId64 " must be >= 1 (the model has dense layers)", label, c->intermediate_size);
    if (any_moe) {
        if (c->moe_intermediate_size < 1)
            BAD("%s: moe_intermediate_size = %" PRId64 " must be >= 1", label, c->moe_intermediate_size);
        if (c->n_experts_per_tok < 1 || c->n_experts_per_tok > c->n_routed_experts)
            BAD("%s: num_experts_per_tok = %d must be in [1, n_routed_experts = %d]", label, c->n_experts_per_tok,
                c->n_routed_experts);
        if (c->n_group < 1 || c->n_routed_experts % c->n_group)
            BAD("%s: n_group = %d must divide n_routed_experts = %d", label, c->n_group, c->n_routed_experts);
        if (c->n_group > MOE_MAX_GROUPS)
            BAD("%s: n_group = %d exceeds the supported %d", label, c->n_group, MOE_MAX_GROUPS);
        if (c->topk_group < 1 || c->topk_group > c->n_group)
            BAD("%s: topk_group = %d must be in [1, n_group = %d]", label, c->topk_group, c->n_group);
        int per_group = c->n_routed_experts / c->n_group;
        if ((int64_t)c->topk_group * per_group < c->n_experts_per_tok)
            BAD("%s: num_experts_per_tok = %d exceeds the %d experts in topk_group = %d groups", label,
                c->n_experts_per_tok, c->topk_group * per_group, c->topk_group);
        if (c->topk_method == MOE_TOPK_NOAUX_TC && c->n_group > 1 && per_group < 2)
            BAD("%s: topk_method noaux_tc needs >= 2 experts per group (n_routed_experts / n_group = %d)", label,
                per_group);
    }
    if (!(c->routed_scaling_factor > 0) || !isfinite(c->routed_scaling_factor))
        BAD("%s: routed_scaling_factor = %g must be > 0", label, (double)c->routed_scaling_factor);
    if (!(c->rms_norm_eps > 0) || !(c->rms_norm_eps < 1))
        BAD("%s: rms_norm_eps = %g must be in (0, 1)", label, (double)c->rms_norm_eps);
    if (!(c->rope_theta > 1) || !isfinite(c->rope_theta)) BAD("%s: rope_theta = %g must be > 1", label, (double)c->rope_theta);
    if (c->rope_scaling.yarn) {
        if (!(c->rope_scaling.factor >= 1) || !isfinite(c->rope_scaling.factor))
            BAD("%s: rope_scaling.factor = %g must be >= 1", label, (double)c->rope_scaling.factor);
        if (c->rope_scaling.original_max_position_embeddings < 1 ||
            c->rope_scaling.original_max_position_embeddings > MAX_DIM * 64)
            BAD("%s: rope_scaling.original_max_position_embeddings = %" PRId64 " must be >= 1", label,
                c->rope_scaling.original_max_position_embeddings);
        if (!(c->rope_scaling.beta_fast > 0) || !(c->rope_scaling.beta_slow > 0) ||
            !isfinite(c->rope_scaling.beta_fast) || !isfinite(c->rope_scaling.beta_slow))
            BAD("%s: rope_scaling.beta_fast/beta_slow = %g/%g must be > 0", label, (double)c->rope_scaling.beta_fast,
                (double)c->rope_scaling.beta_slow);
        if (!isfinite(c->rope_scaling.mscale) || !isfinite(c->rope_scaling.mscale_all_dim) ||
            c->rope_scaling.mscale < 0 || c->rope_scaling.mscale_all_dim < 0)
            BAD("%s: rope_scaling.mscale/mscale_all_dim must be >= 0", label);
    }
    if (c->fp8 && (c->fp8_block_rows != 128 || c->fp8_block_cols != 128))
        return moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED,
                          "%s: quantization_config.weight_block_size [%" PRId64 ", %" PRId64 "] not supported ([128, 128])",
                          label, c->fp8_block_rows, c->fp8_block_cols);
    return MOE_OK;
#undef DIM
#undef BAD
}

bool moe_config_layer_is_moe(const struct moe_config *c, int i)
{
    return c->n_routed_experts > 0 && i >= c->first_k_dense_replace && c->moe_layer_freq > 0 &&
           i % c->moe_layer_freq == 0;
}
