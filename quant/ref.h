/*
 * quant/ref.h — matrix and activation types, and the scalar reference of
 * every kernel in simd/kernels.h.  These are the oracles: written for
 * clarity and a fixed summation order, never for speed.
 */
#ifndef MOE_QUANT_REF_H
#define MOE_QUANT_REF_H

#include <stddef.h>
#include <stdint.h>

#include "formats.h"

enum moe_wtype {
    MOE_W_F32 = 0,
    MOE_W_F16,
    MOE_W_BF16,
    MOE_W_FP8,   /* e4m3fn + FP32 scale per 128x128 block */
    MOE_W_Q8_0,  /* GGUF Q8_0 blocks; cols % 32 == 0 */
    MOE_W_COUNT
};

const char *moe_wtype_name(enum moe_wtype t); /* "f32", "f16", "bf16", "fp8", "q8_0" */
/* Bytes of one row of `cols` weights of type t (FP8 scales not included). */
static inline size_t moe_wtype_row_bytes(enum moe_wtype t, int64_t cols)   /* inline: on the kernels' row paths */
{
    switch (t) {
    case MOE_W_F32: return (size_t)cols * 4;
    case MOE_W_F16:
    case MOE_W_BF16: return (size_t)cols * 2;
    case MOE_W_FP8: return (size_t)cols;
    case MOE_W_Q8_0: return (size_t)(cols / 32) * MOE_Q8_0_BYTES;
    default: return 0;
    }
}

struct moe_mat {
    enum moe_wtype type;
    int64_t rows;          /* output features */
    int64_t cols;          /* input features (K) */
    const void *data;      /* row r at (const char *)data + r * moe_wtype_row_bytes(type, cols) */
    const float *scale;    /* FP8 only: [ceil(rows/128)][ceil(cols/128)], else NULL */
};

/* Activations: n columns of k values. */
struct moe_acts {
    int64_t k;
    int n;
    const float *x;        /* FP32 [n][ldx] */
    int64_t ldx;
    /* int8 form for Q8_0 weights (see moe_quantize_act_q8_ref): */
    const int8_t *q;       /* [n][k] */
    const float *qd;       /* [n][k/32] block scales */
    const int32_t *qs;     /* [n][k/32] block sums of q */
};

/* ---- Reference matrix product (any weight type, any n):
 * y[j*ldy + r] = sum_k W[r][k] x[j][k] for row0 <= r < row1, j < a->n.
 *  F32/F16/BF16: weights converted to FP32, one FP32 sum over k in order.
 *  FP8: per 128-wide block of k an FP32 partial sum of e4m3(w)*x, then
 *       sum += partial * scale[r/128][k/128] (scale applied once per block).
 *  Q8_0: uses the int8 activations: per 32-block an exact int32 sum of
 *       q_w*q_x, then sum += fp16(d_w) * d_x * isum. */
void moe_ref_matmul(const struct moe_mat *w, int64_t row0, int64_t row1,
                    const struct moe_acts *a, float *y, int64_t ldy);

/* ---- Reference transposed product (contract of moe_matmul_t_fn in
 * simd/kernels.h): y[j*ldy + c] = sum over r = row0, row0+1, ... of
 * x[j*ldx + r - row0] * W[r][c] with W[r][c] dequantized to FP32 (FP8: e4m3
 * times its block scale; Q8_0: fp16 d times q), one FP32 sum in row order. */
void moe_ref_matmul_t(const struct moe_mat *w, int64_t row0, int64_t row1, int64_t col0, int64_t col1,
                      const float *x, int64_t ldx, int n, float *y, int64_t ldy);

/* Row r of W as FP32 (Q8_0 and FP8 dequantized): dst[w->cols]. */
void moe_ref_dequant_row(float *dst, const struct moe_mat *w, int64_t r);

/* ---- Reference vector ops (see struct moe_kernels for contracts). */
void moe_ref_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps);
void moe_ref_softmax(float *x, int64_t n);
void moe_ref_silu(float *y, const float *x, int64_t n);
void moe_ref_sigmoid(float *y, const float *x, int64_t n);
void moe_ref_silu_mul(float *y, const float *a, const float *b, int64_t n);
void moe_ref_rope_sincos(float *cos_out, float *sin_out, const float *inv_freq, int64_t half, float pos);
void moe_ref_rope_apply(float *x, int64_t n_vec, int64_t stride, const float *cos_in, const float *sin_in,
                        int64_t half);

/* ---- YaRN RoPE frequencies, as DeepSeek's inference/model.py computes
 * them (precompute_freqs_cis).  dim = qk_rope_head_dim; inv_freq[dim/2].
 * YaRN applies when factor > 1 and original_max > 0 (the reference applies
 * it whenever its max_seq_len, 16384 by default, exceeds original_max).
 * Otherwise this is plain RoPE:
 * inv_freq[i] = theta^(-2i/dim). */
struct moe_yarn {
    float theta;            /* rope_theta */
    float factor;           /* rope_scaling.factor (1 = no scaling) */
    int64_t original_max;   /* original_max_position_embeddings */
    float beta_fast, beta_slow;
};
void moe_yarn_inv_freq(float *inv_freq, int64_t dim, const struct moe_yarn *p);
/* Softmax scale multiplier m^2 with m = 0.1 * mscale_all_dim * ln(factor) + 1
 * (1 when factor <= 1 or mscale_all_dim == 0). */
float moe_yarn_mscale_sq(float factor, float mscale_all_dim);

#endif
