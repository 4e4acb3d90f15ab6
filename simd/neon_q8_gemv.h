/*
 * simd/neon_q8_gemv.h — the NEON Q8_0 GEMV shared by simd/neon.c (plain
 * NEON) and simd/neon_dotprod.c (SDOT): the two differ only in how one
 * block's int32 sum is formed.  The including file defines MOE_INLINE,
 * MOE_UNROLL and
 *     MOE_INLINE int32x4_t dot32(int8x16_t w0, int8x16_t w1, int8x16_t x0, int8x16_t x1)
 * (four int32 lanes whose sum is the block's exact integer dot product)
 * before including this header, which then defines
 *     static void gemv_q8_0(w, row0, row1, a, y, ldy)   (contract: kernels.h).
 */
#ifndef MOE_SIMD_NEON_Q8_GEMV_H
#define MOE_SIMD_NEON_Q8_GEMV_H

#include <arm_neon.h>
#include <string.h>

#include "kernels.h"

/* fp16 scales of m <= 4 consecutive Q8_0 blocks at p as FP32 (0 beyond m). */
MOE_INLINE float32x4_t q8_scales(const uint8_t *p, int m)
{
    uint16x4_t h = vdup_n_u16(0);
    uint16_t v;
    if (m > 0) { memcpy(&v, p, 2); h = vset_lane_u16(v, h, 0); }
    if (m > 1) { memcpy(&v, p + MOE_Q8_0_BYTES, 2); h = vset_lane_u16(v, h, 1); }
    if (m > 2) { memcpy(&v, p + 2 * MOE_Q8_0_BYTES, 2); h = vset_lane_u16(v, h, 2); }
    if (m > 3) { memcpy(&v, p + 3 * MOE_Q8_0_BYTES, 2); h = vset_lane_u16(v, h, 3); }
    return vcvt_f32_f16(vreinterpret_f16_u16(h));
}

/* Four rows' (R <= 4) sums over m <= 4 blocks starting at block b, added
 * to facc[i] as four lanes: sum_b fp16(d_w) * d_x * isum_b. */
MOE_INLINE void gemv_q8_group(const int R, const int m, const uint8_t *const *p, const int8_t *q,
                              const float *qd, int64_t b, float32x4_t *facc)
{
    int32x4_t s[4][4];
    MOE_UNROLL
    for (int u = 0; u < 4; u++) {
        if (u >= m) {
            MOE_UNROLL
            for (int i = 0; i < R; i++)
                s[i][u] = vdupq_n_s32(0);
            continue;
        }
        const int8x16_t x0 = vld1q_s8(q + (b + u) * 32), x1 = vld1q_s8(q + (b + u) * 32 + 16);
        MOE_UNROLL
        for (int i = 0; i < R; i++) {
            const int8_t *wb = (const int8_t *)(p[i] + (b + u) * MOE_Q8_0_BYTES + 2);
            s[i][u] = dot32(vld1q_s8(wb), vld1q_s8(wb + 16), x0, x1);
        }
    }
    float32x4_t dx;
    if (m == 4) {
        dx = vld1q_f32(qd + b);
    } else {
        float t[4] = {0};
        memcpy(t, qd + b, (size_t)m * sizeof(float));
        dx = vld1q_f32(t);
    }
    MOE_UNROLL
    for (int i = 0; i < R; i++) {
        const int32x4_t isum = vpaddq_s32(vpaddq_s32(s[i][0], s[i][1]), vpaddq_s32(s[i][2], s[i][3]));
        const float32x4_t dw = q8_scales(p[i] + b * MOE_Q8_0_BYTES, m);
        facc[i] = vfmaq_f32(facc[i], vcvtq_f32_s32(isum), vmulq_f32(dw, dx));
    }
}

MOE_INLINE void gemv_q8_rows(const int R, const struct moe_mat *w, int64_t r0, const int8_t *q, const float *qd,
                             float *y)
{
    const int64_t nb = w->cols / 32;
    const size_t rb = (size_t)nb * MOE_Q8_0_BYTES;
    const uint8_t *p[4];
    float32x4_t facc[4];
    MOE_UNROLL
    for (int i = 0; i < R; i++) {
        p[i] = (const uint8_t *)w->data + (size_t)(r0 + i) * rb;
        facc[i] = vdupq_n_f32(0.0f);
    }
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4)
        gemv_q8_group(R, 4, p, q, qd, b, facc);
    switch (nb - b) {
    case 3: gemv_q8_group(R, 3, p, q, qd, b, facc); break;
    case 2: gemv_q8_group(R, 2, p, q, qd, b, facc); break;
    case 1: gemv_q8_group(R, 1, p, q, qd, b, facc); break;
    default: break;
    }
    MOE_UNROLL
    for (int i = 0; i < R; i++)
        y[i] = vaddvq_f32(facc[i]);
}

static void gemv_q8_0(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a, float *y,
                      int64_t ldy)
{
    const int64_t nb = a->k / 32;
    for (int j = 0; j < a->n; j++) {
        const int8_t *q = a->q + j * a->k;
        const float *qd = a->qd + j * nb;
        float *yj = y + j * ldy;
        int64_t r = row0;
        for (; r + 4 <= row1; r += 4)
            gemv_q8_rows(4, w, r, q, qd, yj + r);
        for (; r < row1; r++)
            gemv_q8_rows(1, w, r, q, qd, yj + r);
    }
}

#endif
