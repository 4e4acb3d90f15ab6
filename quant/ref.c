/*
 * quant/ref.c — scalar reference kernels: the oracle for every SIMD kernel.
 * Fixed summation orders (documented in ref.h) so that differences between
 * a SIMD kernel and this code come only from reassociation.
 */
#include "ref.h"

#include <assert.h>
#include <math.h>
#include <string.h>

const char *moe_wtype_name(enum moe_wtype t)
{
    static const char *names[MOE_W_COUNT] = {"f32", "f16", "bf16", "fp8", "q8_0"};
    return (unsigned)t < MOE_W_COUNT ? names[t] : "?";
}

static inline const unsigned char *row_ptr(const struct moe_mat *w, int64_t r)
{
    return (const unsigned char *)w->data + (size_t)r * moe_wtype_row_bytes(w->type, w->cols);
}

void moe_ref_dequant_row(float *dst, const struct moe_mat *w, int64_t r)
{
    const unsigned char *p = row_ptr(w, r);
    const int64_t k = w->cols;
    switch (w->type) {
    case MOE_W_F32:
        memcpy(dst, p, (size_t)k * 4);
        break;
    case MOE_W_F16:
    case MOE_W_BF16:
        for (int64_t i = 0; i < k; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = w->type == MOE_W_F16 ? moe_f16_to_f32(h) : moe_bf16_to_f32(h);
        }
        break;
    case MOE_W_FP8:
        moe_dequantize_row_fp8(dst, (const uint8_t *)w->data, w->scale, r, k);
        break;
    case MOE_W_Q8_0:
        for (int64_t b = 0; b < k / 32; b++) {
            struct moe_block_q8_0 blk;
            memcpy(&blk, p + b * MOE_Q8_0_BYTES, MOE_Q8_0_BYTES);
            moe_dequantize_row_q8_0(dst + b * 32, &blk, 32);
        }
        break;
    default:
        assert(0);
    }
}

/* One output: W row r (FP32-convertible types) dotted with x, in order. */
static float dot_plain(const struct moe_mat *w, int64_t r, const float *x)
{
    const unsigned char *p = row_ptr(w, r);
    float sum = 0.0f;
    for (int64_t i = 0; i < w->cols; i++) {
        float v;
        if (w->type == MOE_W_F32) {
            memcpy(&v, p + 4 * i, 4);
        } else {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            v = w->type == MOE_W_F16 ? moe_f16_to_f32(h) : moe_bf16_to_f32(h);
        }
        sum += v * x[i];
    }
    return sum;
}

static float dot_fp8(const struct moe_mat *w, int64_t r, const float *x)
{
    const uint8_t *p = row_ptr(w, r);
    const float *srow = w->scale + (r / 128) * moe_fp8_scale_cols(w->cols);
    float sum = 0.0f;
    for (int64_t b = 0; b * 128 < w->cols; b++) {
        int64_t k0 = b * 128, k1 = k0 + 128 < w->cols ? k0 + 128 : w->cols;
        float part = 0.0f;
        for (int64_t i = k0; i < k1; i++)
            part += moe_fp8_to_f32(p[i]) * x[i];
        sum += part * srow[b];
    }
    return sum;
}

static float dot_q8_0(const struct moe_mat *w, int64_t r, const int8_t *q, const float *d)
{
    const unsigned char *p = row_ptr(w, r);
    float sum = 0.0f;
    for (int64_t b = 0; b < w->cols / 32; b++) {
        struct moe_block_q8_0 blk;
        memcpy(&blk, p + b * MOE_Q8_0_BYTES, MOE_Q8_0_BYTES);
        int32_t isum = 0;
        for (int i = 0; i < 32; i++)
            isum += (int32_t)blk.qs[i] * q[b * 32 + i];
        sum += moe_f16_to_f32(blk.d) * d[b] * (float)isum;
    }
    return sum;
}

void moe_ref_matmul(const struct moe_mat *w, int64_t row0, int64_t row1,
                    const struct moe_acts *a, float *y, int64_t ldy)
{
    assert(a->k == w->cols);
    assert(w->type != MOE_W_Q8_0 || (w->cols % 32 == 0 && a->q && a->qd));
    for (int j = 0; j < a->n; j++)
        for (int64_t r = row0; r < row1; r++) {
            float v;
            switch (w->type) {
            case MOE_W_FP8: v = dot_fp8(w, r, a->x + j * a->ldx); break;
            case MOE_W_Q8_0: v = dot_q8_0(w, r, a->q + j * a->k, a->qd + j * (a->k / 32)); break;
            default: v = dot_plain(w, r, a->x + j * a->ldx); break;
            }
            y[j * ldy + r] = v;
        }
}

/* W[r][c] as FP32. */
static float weight_at(const struct moe_mat *w, int64_t r, int64_t c)
{
    const unsigned char *p = row_ptr(w, r);
    uint16_t h;
    switch (w->type) {
    case MOE_W_F32: {
        float v;
        memcpy(&v, p + 4 * c, 4);
        return v;
    }
    case MOE_W_F16:
        memcpy(&h, p + 2 * c, 2);
        return moe_f16_to_f32(h);
    case MOE_W_BF16:
        memcpy(&h, p + 2 * c, 2);
        return moe_bf16_to_f32(h);
    case MOE_W_FP8:
        return moe_fp8_to_f32(p[c]) * w->scale[(r / 128) * moe_fp8_scale_cols(w->cols) + c / 128];
    case MOE_W_Q8_0:
        memcpy(&h, p + (c / 32) * MOE_Q8_0_BYTES, 2);
        return moe_f16_to_f32(h) * (float)(int8_t)p[(c / 32) * MOE_Q8_0_BYTES + 2 + c % 32];
    default:
        assert(0);
        return 0.0f;
    }
}

void moe_ref_matmul_t(const struct moe_mat *w, int64_t row0, int64_t row1, int64_t col0, int64_t col1,
                      const float *x, int64_t ldx, int n, float *y, int64_t ldy)
{
    assert(row0 >= 0 && row1 <= w->rows && col0 >= 0 && col1 <= w->cols);
    for (int j = 0; j < n; j++)
        for (int64_t c = col0; c < col1; c++) {
            float sum = 0.0f;
            for (int64_t r = row0; r < row1; r++) sum += x[j * ldx + (r - row0)] * weight_at(w, r, c);
            y[j * ldy + c] = sum;
        }
}

/* ---- vector ops ---- */

void moe_ref_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps)
{
    float ss = 0.0f;
    for (int64_t i = 0; i < n; i++)
        ss += x[i] * x[i];
    const float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] * inv * w[i];
}

void moe_ref_softmax(float *x, int64_t n)
{
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    const float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; i++)
        x[i] *= inv;
}

void moe_ref_sigmoid(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = 1.0f / (1.0f + expf(-x[i]));
}

void moe_ref_silu(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] / (1.0f + expf(-x[i]));
}

void moe_ref_silu_mul(float *y, const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] / (1.0f + expf(-a[i])) * b[i];
}

void moe_ref_rope_sincos(float *cos_out, float *sin_out, const float *inv_freq, int64_t half, float pos)
{
    for (int64_t i = 0; i < half; i++) {
        const float t = pos * inv_freq[i];   /* FP32 product, as torch.outer */
        cos_out[i] = cosf(t);
        sin_out[i] = sinf(t);
    }
}

void moe_ref_rope_apply(float *x, int64_t n_vec, int64_t stride, const float *c, const float *s, int64_t half)
{
    for (int64_t v = 0; v < n_vec; v++) {
        float *p = x + v * stride;
        for (int64_t i = 0; i < half; i++) {
            const float a = p[2 * i], b = p[2 * i + 1];
            p[2 * i] = a * c[i] - b * s[i];
            p[2 * i + 1] = a * s[i] + b * c[i];
        }
    }
}

/* ---- YaRN ---- */

static double yarn_correction_dim(double rotations, double dim, double base, double max_pos)
{
    return dim * log(max_pos / (rotations * 2.0 * 3.14159265358979323846)) / (2.0 * log(base));
}

void moe_yarn_inv_freq(float *inv_freq, int64_t dim, const struct moe_yarn *p)
{
    const int64_t half = dim / 2;
    for (int64_t i = 0; i < half; i++)
        inv_freq[i] = (float)(1.0 / pow((double)p->theta, (double)(2 * i) / (double)dim));
    if (!(p->factor > 1.0f) || p->original_max <= 0)
        return;
    double low = floor(yarn_correction_dim(p->beta_fast, (double)dim, p->theta, (double)p->original_max));
    double high = ceil(yarn_correction_dim(p->beta_slow, (double)dim, p->theta, (double)p->original_max));
    if (low < 0) low = 0;
    if (high > dim - 1) high = (double)(dim - 1);
    if (low == high) high += 0.001;
    for (int64_t i = 0; i < half; i++) {
        float ramp = (float)(((double)i - low) / (high - low));
        ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
        const float smooth = 1.0f - ramp;
        inv_freq[i] = inv_freq[i] / p->factor * (1.0f - smooth) + inv_freq[i] * smooth;
    }
}

float moe_yarn_mscale_sq(float factor, float mscale_all_dim)
{
    if (!(factor > 1.0f))
        return 1.0f;
    const float m = 0.1f * mscale_all_dim * logf(factor) + 1.0f;
    return m * m;
}
