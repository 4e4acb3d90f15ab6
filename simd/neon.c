/*
 * simd/neon.c — the AArch64 Advanced SIMD kernel table for the ARMv8.0-A
 * baseline (every AArch64 CPU, Cortex-A57 included).  Built with plain
 * -march=armv8-a; simd/neon_dotprod.c builds the ARMv8.2 DotProd table on
 * top of these kernels (shared ones are declared in simd/neon_internal.h).
 *
 * Matrix products (weights row-major [rows][K], y[j][r] = W[r] . x[j]):
 *  - GEMV (one column, memory bound): four rows per iteration share every
 *    activation load; 16 K-values per step with four FP32 accumulators per
 *    row (16 independent FMA chains).  Weights are decoded in registers:
 *    F16 by FCVTL, BF16 by a 16-bit widening shift, FP8 e4m3 by building
 *    fp16 bits (see dec8) and FCVTL, the 2^8 bias factor folded into the
 *    128x128 block scale applied once per row per 128-wide block.
 *  - GEMM (many columns): K-blocked (KC = 512) with strips of 8 rows: the
 *    strip is decoded once to FP32, transposed to [k][8], into a 16 KiB
 *    stack panel and reused by every column tile; an 8x8 register tile
 *    (16 accumulators) does 64 FMAs per 16 loads (lane-indexed FMLA).
 *  - Q8_0: int8 weight x int8 activation products with SMULL/SMLAL (two
 *    products per int16 lane: |w| <= 128, |q| <= 127 cannot overflow) and
 *    SADALP into int32, exact block sums, then the fp16 weight scale times
 *    the activation scale.  ADDP gathers four int32 block sums into one
 *    vector (four blocks of a row in GEMV, one block of four rows in GEMM)
 *    so scaling costs three vector ops per four sums.  GEMV: four rows x
 *    four blocks per step.  GEMM: K blocks of 2048, 4-row strips whose fp16
 *    scales are converted once per K block, 4x4 (rows x columns) tiles
 *    reading the int8 rows in place (they stay in L1 across the tiles).
 * Unaligned weights are read as bytes (vld1q_u8) and reinterpreted; tails
 * (K not a multiple of the step, rows not a multiple of the tile) go
 * through zero-padded stack copies, never out of bounds.
 * Transcendentals use SLEEF's advsimd functions (1-ulp exp and sincos).
 */
#if defined(__aarch64__)

#include "neon_internal.h"

#include <arm_neon.h>
#include <math.h>
#include <sleef.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "simd/neon.c assumes little-endian AArch64"
#endif

#define MOE_INLINE static inline __attribute__((always_inline))
/* Fully unroll the short constant-count loops over rows/columns/blocks so
 * their vector arrays live in registers (gcc -O2 would not). */
#define MOE_UNROLL _Pragma("GCC unroll 8")

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Bytes per element of the FP32-convertible weight types. */
MOE_INLINE int elem_bytes(enum moe_wtype t)
{
    return t == MOE_W_F32 ? 4 : t == MOE_W_FP8 ? 1 : 2;
}

/* ---- weight decoding ---- */

/* Decode 8 weights at p (any alignment) into two FP32 vectors.
 * FP8 e4m3: the fp16 bits (b & 0x7F) << 7 | (b & 0x80) << 8 hold the value
 * times 2^-8 exactly (exponent bias 15 vs 7; e4m3 subnormals land on fp16
 * subnormals), so callers multiply by 256 * block scale.  Built as a
 * sign-extending shift (SSHLL #7, which copies the sign into bits 15 and
 * 14) and a BIC of bit 14.  The NaN codes 0x7F/0xFF, which real weights
 * never contain, decode to +-480 instead of NaN. */
MOE_INLINE void dec8(enum moe_wtype t, const uint8_t *p, float32x4_t *lo, float32x4_t *hi)
{
    switch (t) {
    case MOE_W_F32:
        *lo = vreinterpretq_f32_u8(vld1q_u8(p));
        *hi = vreinterpretq_f32_u8(vld1q_u8(p + 16));
        break;
    case MOE_W_F16: {
        const float16x8_t h = vreinterpretq_f16_u8(vld1q_u8(p));
        *lo = vcvt_f32_f16(vget_low_f16(h));
        *hi = vcvt_high_f32_f16(h);
        break;
    }
    case MOE_W_BF16: {
        const uint16x8_t h = vreinterpretq_u16_u8(vld1q_u8(p));
        *lo = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16));
        *hi = vreinterpretq_f32_u32(vshll_high_n_u16(h, 16));
        break;
    }
    default: { /* MOE_W_FP8 */
        const int16x8_t s = vbicq_s16(vshll_n_s8(vreinterpret_s8_u8(vld1_u8(p)), 7), vdupq_n_s16(0x4000));
        const float16x8_t h = vreinterpretq_f16_s16(s);
        *lo = vcvt_f32_f16(vget_low_f16(h));
        *hi = vcvt_high_f32_f16(h);
        break;
    }
    }
}

/* Decode 16 weights at p into v[0..3]. */
MOE_INLINE void dec16(enum moe_wtype t, const uint8_t *p, float32x4_t v[4])
{
    if (t == MOE_W_FP8) {
        const int8x16_t b = vreinterpretq_s8_u8(vld1q_u8(p));
        const int16x8_t m = vdupq_n_s16(0x4000);
        const float16x8_t h0 = vreinterpretq_f16_s16(vbicq_s16(vshll_n_s8(vget_low_s8(b), 7), m));
        const float16x8_t h1 = vreinterpretq_f16_s16(vbicq_s16(vshll_high_n_s8(b, 7), m));
        v[0] = vcvt_f32_f16(vget_low_f16(h0));
        v[1] = vcvt_high_f32_f16(h0);
        v[2] = vcvt_f32_f16(vget_low_f16(h1));
        v[3] = vcvt_high_f32_f16(h1);
    } else {
        dec8(t, p, &v[0], &v[1]);
        dec8(t, p + 8 * elem_bytes(t), &v[2], &v[3]);
    }
}

/* FP8 block scale of row r, K block kb, times 2^8 (see dec8). */
static inline float fp8_scale(const struct moe_mat *w, int64_t r, int64_t kb)
{
    return w->scale[(r / 128) * moe_fp8_scale_cols(w->cols) + kb] * 256.0f;
}

/* ---- GEMV: F32 / F16 / BF16 / FP8 ---- */

/* y[i] = W[r0 + i] . x for i < R (R = 1..4). */
MOE_INLINE void gemv_rows(const enum moe_wtype t, const int R, const struct moe_mat *w, int64_t r0,
                          const float *x, float *y)
{
    const int64_t K = w->cols;
    const size_t rb = moe_wtype_row_bytes(t, K);
    const int es = elem_bytes(t);
    const int64_t blk = t == MOE_W_FP8 ? 128 : K;   /* FP8: one scale per 128 K */
    const uint8_t *p[4];
    float32x4_t tot[4];
    MOE_UNROLL
    for (int i = 0; i < R; i++) {
        p[i] = (const uint8_t *)w->data + (size_t)(r0 + i) * rb;
        tot[i] = vdupq_n_f32(0.0f);
    }
    for (int64_t k0 = 0; k0 < K; k0 += blk) {
        const int64_t k1 = min64(k0 + blk, K);
        float32x4_t acc[4][4];
        MOE_UNROLL
        for (int i = 0; i < R; i++)
            MOE_UNROLL
            for (int u = 0; u < 4; u++)
                acc[i][u] = vdupq_n_f32(0.0f);
        int64_t k = k0;
        for (; k + 16 <= k1; k += 16) {
            const float32x4_t x0 = vld1q_f32(x + k), x1 = vld1q_f32(x + k + 4);
            const float32x4_t x2 = vld1q_f32(x + k + 8), x3 = vld1q_f32(x + k + 12);
            MOE_UNROLL
            for (int i = 0; i < R; i++) {
                float32x4_t v[4];
                dec16(t, p[i] + k * es, v);
                acc[i][0] = vfmaq_f32(acc[i][0], v[0], x0);
                acc[i][1] = vfmaq_f32(acc[i][1], v[1], x1);
                acc[i][2] = vfmaq_f32(acc[i][2], v[2], x2);
                acc[i][3] = vfmaq_f32(acc[i][3], v[3], x3);
            }
        }
        if (k < k1) {   /* 1..15 left: zero-padded copies */
            const int64_t m = k1 - k;
            float xt[16] = {0};
            uint8_t wt[64] = {0};
            memcpy(xt, x + k, (size_t)m * sizeof(float));
            const float32x4_t x0 = vld1q_f32(xt), x1 = vld1q_f32(xt + 4);
            const float32x4_t x2 = vld1q_f32(xt + 8), x3 = vld1q_f32(xt + 12);
            MOE_UNROLL
            for (int i = 0; i < R; i++) {
                float32x4_t v[4];
                memcpy(wt, p[i] + k * es, (size_t)(m * es));
                dec16(t, wt, v);
                acc[i][0] = vfmaq_f32(acc[i][0], v[0], x0);
                acc[i][1] = vfmaq_f32(acc[i][1], v[1], x1);
                acc[i][2] = vfmaq_f32(acc[i][2], v[2], x2);
                acc[i][3] = vfmaq_f32(acc[i][3], v[3], x3);
            }
        }
        MOE_UNROLL
        for (int i = 0; i < R; i++) {
            const float32x4_t part = vaddq_f32(vaddq_f32(acc[i][0], acc[i][1]), vaddq_f32(acc[i][2], acc[i][3]));
            if (t == MOE_W_FP8)
                tot[i] = vfmaq_n_f32(tot[i], part, fp8_scale(w, r0 + i, k0 / 128));
            else
                tot[i] = vaddq_f32(tot[i], part);
        }
    }
    MOE_UNROLL
    for (int i = 0; i < R; i++)
        y[i] = vaddvq_f32(tot[i]);
}

MOE_INLINE void gemv_float(const enum moe_wtype t, const struct moe_mat *w, int64_t row0, int64_t row1,
                           const struct moe_acts *a, float *y, int64_t ldy)
{
    for (int j = 0; j < a->n; j++) {
        const float *x = a->x + j * a->ldx;
        float *yj = y + j * ldy;
        int64_t r = row0;
        for (; r + 4 <= row1; r += 4)
            gemv_rows(t, 4, w, r, x, yj + r);
        for (; r < row1; r++)
            gemv_rows(t, 1, w, r, x, yj + r);
    }
}

void moe_gemv_f32_f32__neon(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                            float *y, int64_t ldy)
{
    gemv_float(MOE_W_F32, w, row0, row1, a, y, ldy);
}

void moe_gemv_f16_f32__neon(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                            float *y, int64_t ldy)
{
    gemv_float(MOE_W_F16, w, row0, row1, a, y, ldy);
}

void moe_gemv_bf16_f32__neon(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                             float *y, int64_t ldy)
{
    gemv_float(MOE_W_BF16, w, row0, row1, a, y, ldy);
}

void moe_gemv_fp8_f32__neon(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                            float *y, int64_t ldy)
{
    gemv_float(MOE_W_FP8, w, row0, row1, a, y, ldy);
}

/* ---- GEMM: F32 / F16 / BF16 / FP8 ---- */

#define GEMM_KC 512   /* K block: multiple of 128 (FP8 scales) and of 8 */
#define GEMM_MR 8     /* rows per strip = per register tile */

/* 4x4 transpose of rows a, b, c, d; stores column c_i at dst + i * ld. */
MOE_INLINE void transpose_store(float *dst, int64_t ld, float32x4_t a, float32x4_t b, float32x4_t c,
                                float32x4_t d)
{
    const float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(a, b)); /* a0 b0 a2 b2 */
    const float64x2_t t1 = vreinterpretq_f64_f32(vtrn2q_f32(a, b)); /* a1 b1 a3 b3 */
    const float64x2_t t2 = vreinterpretq_f64_f32(vtrn1q_f32(c, d)); /* c0 d0 c2 d2 */
    const float64x2_t t3 = vreinterpretq_f64_f32(vtrn2q_f32(c, d)); /* c1 d1 c3 d3 */
    vst1q_f32(dst, vreinterpretq_f32_f64(vtrn1q_f64(t0, t2)));
    vst1q_f32(dst + ld, vreinterpretq_f32_f64(vtrn1q_f64(t1, t3)));
    vst1q_f32(dst + 2 * ld, vreinterpretq_f32_f64(vtrn2q_f64(t0, t2)));
    vst1q_f32(dst + 3 * ld, vreinterpretq_f32_f64(vtrn2q_f64(t1, t3)));
}

/* Decode rows [r, r + mrv) (mrv <= 8), K range [k0, k0 + kc), to FP32
 * (FP8: block scale applied) into wp[kk * 8 + i]; rows >= mrv and
 * k >= kc (up to the next multiple of 8) are zero. */
MOE_INLINE void gemm_pack(const enum moe_wtype t, const struct moe_mat *w, int64_t r, int mrv, int64_t k0,
                          int64_t kc, float *wp)
{
    const size_t rb = moe_wtype_row_bytes(t, w->cols);
    const int es = elem_bytes(t);
    const uint8_t *p[GEMM_MR];
    MOE_UNROLL
    for (int i = 0; i < GEMM_MR; i++)
        p[i] = (const uint8_t *)w->data + (size_t)(r + (i < mrv ? i : 0)) * rb + k0 * es;
    for (int64_t kk = 0; kk < kc; kk += 8) {
        float32x4_t lo[GEMM_MR], hi[GEMM_MR];
        const int64_t m = min64(8, kc - kk);
        MOE_UNROLL
        for (int i = 0; i < GEMM_MR; i++) {
            if (i >= mrv) {
                lo[i] = hi[i] = vdupq_n_f32(0.0f);
                continue;
            }
            if (m == 8) {
                dec8(t, p[i] + kk * es, &lo[i], &hi[i]);
            } else {
                uint8_t tmp[32] = {0};
                memcpy(tmp, p[i] + kk * es, (size_t)(m * es));
                dec8(t, tmp, &lo[i], &hi[i]);
            }
            if (t == MOE_W_FP8) {
                const float s = fp8_scale(w, r + i, (k0 + kk) / 128);
                lo[i] = vmulq_n_f32(lo[i], s);
                hi[i] = vmulq_n_f32(hi[i], s);
            }
        }
        float *d = wp + kk * GEMM_MR;
        transpose_store(d, GEMM_MR, lo[0], lo[1], lo[2], lo[3]);
        transpose_store(d + 4, GEMM_MR, lo[4], lo[5], lo[6], lo[7]);
        transpose_store(d + 4 * GEMM_MR, GEMM_MR, hi[0], hi[1], hi[2], hi[3]);
        transpose_store(d + 4 * GEMM_MR + 4, GEMM_MR, hi[4], hi[5], hi[6], hi[7]);
    }
}

/* Register tile: 8 rows (two vectors) x NR columns.  y[j*ldy + i] (i < mrv)
 * is set (first K block) or incremented by sum_k wp[k][i] * x[j*ldx + k]. */
MOE_INLINE void gemm_tile(const int NR, const float *wp, int64_t kc, const float *x, int64_t ldx, float *y,
                          int64_t ldy, int mrv, int first)
{
    float32x4_t c[8][2];
    MOE_UNROLL
    for (int j = 0; j < NR; j++)
        c[j][0] = c[j][1] = vdupq_n_f32(0.0f);
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
        /* 8 weight vectors (4 k x 8 rows) reused by every column; one
         * activation vector (4 k) per column feeds 8 lane-indexed FMAs */
        const float *wk = wp + k * GEMM_MR;
        const float32x4_t a0 = vld1q_f32(wk), b0 = vld1q_f32(wk + 4);
        const float32x4_t a1 = vld1q_f32(wk + 8), b1 = vld1q_f32(wk + 12);
        const float32x4_t a2 = vld1q_f32(wk + 16), b2 = vld1q_f32(wk + 20);
        const float32x4_t a3 = vld1q_f32(wk + 24), b3 = vld1q_f32(wk + 28);
        MOE_UNROLL
        for (int j = 0; j < NR; j++) {
            const float32x4_t xv = vld1q_f32(x + j * ldx + k);
            c[j][0] = vfmaq_laneq_f32(c[j][0], a0, xv, 0);
            c[j][1] = vfmaq_laneq_f32(c[j][1], b0, xv, 0);
            c[j][0] = vfmaq_laneq_f32(c[j][0], a1, xv, 1);
            c[j][1] = vfmaq_laneq_f32(c[j][1], b1, xv, 1);
            c[j][0] = vfmaq_laneq_f32(c[j][0], a2, xv, 2);
            c[j][1] = vfmaq_laneq_f32(c[j][1], b2, xv, 2);
            c[j][0] = vfmaq_laneq_f32(c[j][0], a3, xv, 3);
            c[j][1] = vfmaq_laneq_f32(c[j][1], b3, xv, 3);
        }
    }
    for (; k < kc; k++) {
        const float32x4_t w0 = vld1q_f32(wp + k * GEMM_MR), w1 = vld1q_f32(wp + k * GEMM_MR + 4);
        MOE_UNROLL
        for (int j = 0; j < NR; j++) {
            const float32x4_t xs = vld1q_dup_f32(x + j * ldx + k);
            c[j][0] = vfmaq_f32(c[j][0], w0, xs);
            c[j][1] = vfmaq_f32(c[j][1], w1, xs);
        }
    }
    MOE_UNROLL
    for (int j = 0; j < NR; j++) {
        float *yj = y + j * ldy;
        if (mrv == GEMM_MR) {
            if (!first) {
                c[j][0] = vaddq_f32(c[j][0], vld1q_f32(yj));
                c[j][1] = vaddq_f32(c[j][1], vld1q_f32(yj + 4));
            }
            vst1q_f32(yj, c[j][0]);
            vst1q_f32(yj + 4, c[j][1]);
        } else {
            float t[GEMM_MR];
            vst1q_f32(t, c[j][0]);
            vst1q_f32(t + 4, c[j][1]);
            for (int i = 0; i < mrv; i++)
                yj[i] = first ? t[i] : yj[i] + t[i];
        }
    }
}

/* One out-of-line tile per column count, shared by all weight types. */
#define MOE_DEF_TILE(NR)                                                                          \
    static void gemm_tile_8x##NR(const float *wp, int64_t kc, const float *x, int64_t ldx, float *y, \
                                 int64_t ldy, int mrv, int first)                                 \
    {                                                                                             \
        gemm_tile(NR, wp, kc, x, ldx, y, ldy, mrv, first);                                        \
    }
MOE_DEF_TILE(1)
MOE_DEF_TILE(2)
MOE_DEF_TILE(3)
MOE_DEF_TILE(4)
MOE_DEF_TILE(5)
MOE_DEF_TILE(6)
MOE_DEF_TILE(7)
MOE_DEF_TILE(8)
#undef MOE_DEF_TILE

typedef void (*gemm_tile_fn)(const float *, int64_t, const float *, int64_t, float *, int64_t, int, int);
static const gemm_tile_fn gemm_tiles[9] = {NULL, gemm_tile_8x1, gemm_tile_8x2, gemm_tile_8x3, gemm_tile_8x4,
                                           gemm_tile_8x5, gemm_tile_8x6, gemm_tile_8x7, gemm_tile_8x8};

MOE_INLINE void gemm_float(const enum moe_wtype t, const struct moe_mat *w, int64_t row0, int64_t row1,
                           const struct moe_acts *a, float *y, int64_t ldy)
{
    const int64_t K = w->cols, ldx = a->ldx;
    const int n = a->n;
    float wp[GEMM_KC * GEMM_MR] __attribute__((aligned(64)));   /* 16 KiB decoded strip */
    if (K <= 0) {
        for (int j = 0; j < n; j++)
            for (int64_t r = row0; r < row1; r++)
                y[j * ldy + r] = 0.0f;
        return;
    }
    for (int64_t k0 = 0; k0 < K; k0 += GEMM_KC) {
        const int64_t kc = min64(GEMM_KC, K - k0);
        for (int64_t r = row0; r < row1; r += GEMM_MR) {
            const int mrv = (int)min64(GEMM_MR, row1 - r);
            gemm_pack(t, w, r, mrv, k0, kc, wp);
            int j = 0;
            for (; j + 8 <= n; j += 8)
                gemm_tile_8x8(wp, kc, a->x + j * ldx + k0, ldx, y + j * ldy + r, ldy, mrv, k0 == 0);
            if (j < n)
                gemm_tiles[n - j](wp, kc, a->x + j * ldx + k0, ldx, y + j * ldy + r, ldy, mrv, k0 == 0);
        }
    }
}

void moe_gemm_f32_f32__neon(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                            float *y, int64_t ldy)
{
    gemm_float(MOE_W_F32, w, row0, row1, a, y, ldy);
}

void moe_gemm_f16_f32__neon(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                            float *y, int64_t ldy)
{
    gemm_float(MOE_W_F16, w, row0, row1, a, y, ldy);
}

void moe_gemm_bf16_f32__neon(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                             float *y, int64_t ldy)
{
    gemm_float(MOE_W_BF16, w, row0, row1, a, y, ldy);
}

void moe_gemm_fp8_f32__neon(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                            float *y, int64_t ldy)
{
    gemm_float(MOE_W_FP8, w, row0, row1, a, y, ldy);
}

/* ---- Q8_0 (int8 weights x int8 activations) ---- */

/* Block sum of one 32-value block as four int32 lanes (w0/w1, x0/x1: the
 * two 16-byte halves).  Each int16 lane adds two products, at most
 * 2 * 128 * 127 = 32512 in magnitude: exact. */
MOE_INLINE int32x4_t dot32(int8x16_t w0, int8x16_t w1, int8x16_t x0, int8x16_t x1)
{
    int16x8_t p0 = vmull_s8(vget_low_s8(w0), vget_low_s8(x0));
    int16x8_t p1 = vmull_high_s8(w0, x0);
    p0 = vmlal_s8(p0, vget_low_s8(w1), vget_low_s8(x1));
    p1 = vmlal_high_s8(p1, w1, x1);
    return vpadalq_s16(vpaddlq_s16(p0), p1);
}

#include "neon_q8_gemv.h"

static void moe_gemv_q8_0_f32__neon(const struct moe_mat *w, int64_t row0, int64_t row1,
                                    const struct moe_acts *a, float *y, int64_t ldy)
{
    gemv_q8_0(w, row0, row1, a, y, ldy);
}

#define Q8_KB 64   /* K block in Q8_0 blocks (2048 values): the strip's 4 rows stay in L1 */
#define Q8_NR 4   /* columns per register tile */

/* 4 rows x NR columns over kb blocks.  p[i]: row i's first block; dwp[b][4]
 * the rows' weight scales; column j's int8 activations and scales start at
 * xq + j*ldq and xd + j*ldd.  Sets (first K block) or increments
 * y[j*ldy + i] for i < mrv. */
MOE_INLINE void gemm_q8_tile(const int NR, const uint8_t *const *p, const float *dwp, int64_t kb,
                             const int8_t *xq, int64_t ldq, const float *xd, int64_t ldd, float *y, int64_t ldy,
                             int mrv, int first)
{
    float32x4_t facc[Q8_NR];
    MOE_UNROLL
    for (int j = 0; j < NR; j++)
        facc[j] = vdupq_n_f32(0.0f);
    const int8_t *p0 = (const int8_t *)p[0] + 2, *p1 = (const int8_t *)p[1] + 2;
    const int8_t *p2 = (const int8_t *)p[2] + 2, *p3 = (const int8_t *)p[3] + 2;
    for (int64_t b = 0; b < kb; b++) {
        const int8x16_t w00 = vld1q_s8(p0), w01 = vld1q_s8(p0 + 16);
        const int8x16_t w10 = vld1q_s8(p1), w11 = vld1q_s8(p1 + 16);
        const int8x16_t w20 = vld1q_s8(p2), w21 = vld1q_s8(p2 + 16);
        const int8x16_t w30 = vld1q_s8(p3), w31 = vld1q_s8(p3 + 16);
        p0 += MOE_Q8_0_BYTES;
        p1 += MOE_Q8_0_BYTES;
        p2 += MOE_Q8_0_BYTES;
        p3 += MOE_Q8_0_BYTES;
        const float32x4_t dw = vld1q_f32(dwp + b * 4);
        MOE_UNROLL
        for (int j = 0; j < NR; j++) {
            const int8_t *xj = xq + j * ldq + b * 32;
            const int8x16_t x0 = vld1q_s8(xj), x1 = vld1q_s8(xj + 16);
            const int32x4_t s0 = dot32(w00, w01, x0, x1), s1 = dot32(w10, w11, x0, x1);
            const int32x4_t s2 = dot32(w20, w21, x0, x1), s3 = dot32(w30, w31, x0, x1);
            /* lanes: the four rows' exact block sums */
            const int32x4_t isum = vpaddq_s32(vpaddq_s32(s0, s1), vpaddq_s32(s2, s3));
            facc[j] = vfmaq_f32(facc[j], vcvtq_f32_s32(isum), vmulq_n_f32(dw, xd[j * ldd + b]));
        }
    }
    MOE_UNROLL
    for (int j = 0; j < NR; j++) {
        float *yj = y + j * ldy;
        if (mrv == 4) {
            vst1q_f32(yj, first ? facc[j] : vaddq_f32(facc[j], vld1q_f32(yj)));
        } else {
            float t[4];
            vst1q_f32(t, facc[j]);
            for (int i = 0; i < mrv; i++)
                yj[i] = first ? t[i] : yj[i] + t[i];
        }
    }
}

typedef void (*gemm_q8_tile_fn)(const uint8_t *const *, const float *, int64_t, const int8_t *, int64_t,
                                const float *, int64_t, float *, int64_t, int, int);
#define MOE_DEF_Q8_TILE(NR)                                                                                   \
    static void gemm_q8_tile_4x##NR(const uint8_t *const *p, const float *dwp, int64_t kb, const int8_t *xq,   \
                                    int64_t ldq, const float *xd, int64_t ldd, float *y, int64_t ldy, int mrv, \
                                    int first)                                                                \
    {                                                                                                         \
        gemm_q8_tile(NR, p, dwp, kb, xq, ldq, xd, ldd, y, ldy, mrv, first);                                   \
    }
MOE_DEF_Q8_TILE(1)
MOE_DEF_Q8_TILE(2)
MOE_DEF_Q8_TILE(3)
MOE_DEF_Q8_TILE(4)
#undef MOE_DEF_Q8_TILE
static const gemm_q8_tile_fn q8_tiles[5] = {NULL, gemm_q8_tile_4x1, gemm_q8_tile_4x2, gemm_q8_tile_4x3,
                                            gemm_q8_tile_4x4};

static void moe_gemm_q8_0_f32__neon(const struct moe_mat *w, int64_t row0, int64_t row1,
                                    const struct moe_acts *a, float *y, int64_t ldy)
{
    const int64_t nb = w->cols / 32;
    const size_t rb = (size_t)nb * MOE_Q8_0_BYTES;
    const int n = a->n;
    float dwp[Q8_KB * 4] __attribute__((aligned(16)));
    if (nb <= 0) {
        for (int j = 0; j < n; j++)
            for (int64_t r = row0; r < row1; r++)
                y[j * ldy + r] = 0.0f;
        return;
    }
    for (int64_t b0 = 0; b0 < nb; b0 += Q8_KB) {
        const int64_t kb = min64(Q8_KB, nb - b0);
        for (int64_t r = row0; r < row1; r += 4) {
            const int mrv = (int)min64(4, row1 - r);
            const uint8_t *p[4];
            for (int i = 0; i < 4; i++)   /* missing rows repeat row r; their sums are dropped */
                p[i] = (const uint8_t *)w->data + (size_t)(r + (i < mrv ? i : 0)) * rb + b0 * MOE_Q8_0_BYTES;
            for (int64_t b = 0; b < kb; b++) {
                uint16_t h[4];
                for (int i = 0; i < 4; i++)
                    memcpy(&h[i], p[i] + b * MOE_Q8_0_BYTES, 2);
                vst1q_f32(dwp + b * 4, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h))));
            }
            for (int j = 0; j < n; j += Q8_NR) {
                const int nr = n - j < Q8_NR ? n - j : Q8_NR;
                q8_tiles[nr](p, dwp, kb, a->q + j * a->k + b0 * 32, a->k, a->qd + j * nb + b0, nb, y + j * ldy + r,
                             ldy, mrv, b0 == 0);
            }
        }
    }
}

/* ---- activation quantizer ---- */

void moe_quantize_act__neon(int8_t *q, float *d, int32_t *s, const float *x, int64_t k)
{
    const int32x4_t lim = vdupq_n_s32(127), nlim = vdupq_n_s32(-127);
    for (int64_t b = 0; b < k / 32; b++) {
        const float *xb = x + b * 32;
        float32x4_t v[8];
        MOE_UNROLL
        for (int i = 0; i < 8; i++)
            v[i] = vld1q_f32(xb + 4 * i);
        /* maxnm ignores NaN like the reference's a > amax ? a : amax */
        float32x4_t m0 = vmaxnmq_f32(vabsq_f32(v[0]), vabsq_f32(v[1]));
        float32x4_t m1 = vmaxnmq_f32(vabsq_f32(v[2]), vabsq_f32(v[3]));
        float32x4_t m2 = vmaxnmq_f32(vabsq_f32(v[4]), vabsq_f32(v[5]));
        float32x4_t m3 = vmaxnmq_f32(vabsq_f32(v[6]), vabsq_f32(v[7]));
        const float amax = vmaxnmvq_f32(vmaxnmq_f32(vmaxnmq_f32(m0, m1), vmaxnmq_f32(m2, m3)));
        const float db = amax / 127.0f;
        const float id = db != 0.0f ? 1.0f / db : 0.0f;
        int32x4_t qi[8];
        MOE_UNROLL
        for (int i = 0; i < 8; i++)   /* FCVTNS: round to nearest, ties to even = nearbyintf */
            qi[i] = vminq_s32(vmaxq_s32(vcvtnq_s32_f32(vmulq_n_f32(v[i], id)), nlim), lim);
        const int32x4_t sum = vaddq_s32(vaddq_s32(vaddq_s32(qi[0], qi[1]), vaddq_s32(qi[2], qi[3])),
                                        vaddq_s32(vaddq_s32(qi[4], qi[5]), vaddq_s32(qi[6], qi[7])));
        const int16x8_t h0 = vcombine_s16(vmovn_s32(qi[0]), vmovn_s32(qi[1]));
        const int16x8_t h1 = vcombine_s16(vmovn_s32(qi[2]), vmovn_s32(qi[3]));
        const int16x8_t h2 = vcombine_s16(vmovn_s32(qi[4]), vmovn_s32(qi[5]));
        const int16x8_t h3 = vcombine_s16(vmovn_s32(qi[6]), vmovn_s32(qi[7]));
        vst1q_s8(q + b * 32, vcombine_s8(vmovn_s16(h0), vmovn_s16(h1)));
        vst1q_s8(q + b * 32 + 16, vcombine_s8(vmovn_s16(h2), vmovn_s16(h3)));
        d[b] = db;
        s[b] = vaddvq_s32(sum);
    }
}

/* ---- vector ops ---- */

/* n < 4 floats into a vector padded with `fill`, and back. */
MOE_INLINE float32x4_t load_part(const float *p, int64_t n, float fill)
{
    float t[4] = {fill, fill, fill, fill};
    memcpy(t, p, (size_t)n * sizeof(float));
    return vld1q_f32(t);
}

MOE_INLINE void store_part(float *p, float32x4_t v, int64_t n)
{
    float t[4];
    vst1q_f32(t, v);
    memcpy(p, t, (size_t)n * sizeof(float));
}

void moe_rmsnorm__neon(float *y, const float *x, const float *w, int64_t n, float eps)
{
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const float32x4_t a = vld1q_f32(x + i), b = vld1q_f32(x + i + 4);
        const float32x4_t c = vld1q_f32(x + i + 8), e = vld1q_f32(x + i + 12);
        s0 = vfmaq_f32(s0, a, a);
        s1 = vfmaq_f32(s1, b, b);
        s2 = vfmaq_f32(s2, c, c);
        s3 = vfmaq_f32(s3, e, e);
    }
    for (; i + 4 <= n; i += 4) {
        const float32x4_t a = vld1q_f32(x + i);
        s0 = vfmaq_f32(s0, a, a);
    }
    if (i < n) {
        const float32x4_t a = load_part(x + i, n - i, 0.0f);
        s1 = vfmaq_f32(s1, a, a);
    }
    const float ss = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
    const float inv = 1.0f / sqrtf(ss / (float)n + eps);
    i = 0;
    for (; i + 4 <= n; i += 4)   /* (x * inv) * w, as the reference */
        vst1q_f32(y + i, vmulq_f32(vmulq_n_f32(vld1q_f32(x + i), inv), vld1q_f32(w + i)));
    for (; i < n; i++)
        y[i] = x[i] * inv * w[i];
}

void moe_softmax__neon(float *x, int64_t n)
{
    if (n <= 0)
        return;
    float32x4_t mv = vdupq_n_f32(-INFINITY);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        mv = vmaxq_f32(mv, vld1q_f32(x + i));
    float mx = vmaxvq_f32(mv);
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    const float32x4_t m = vdupq_n_f32(mx);
    float32x4_t sv = vdupq_n_f32(0.0f);
    i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t e = Sleef_expf4_u10advsimd(vsubq_f32(vld1q_f32(x + i), m));
        vst1q_f32(x + i, e);
        sv = vaddq_f32(sv, e);
    }
    if (i < n) {   /* padding -inf: exp gives 0, adds nothing */
        const float32x4_t e = Sleef_expf4_u10advsimd(vsubq_f32(load_part(x + i, n - i, -INFINITY), m));
        store_part(x + i, e, n - i);
        sv = vaddq_f32(sv, e);
    }
    const float inv = 1.0f / vaddvq_f32(sv);
    i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(x + i, vmulq_n_f32(vld1q_f32(x + i), inv));
    for (; i < n; i++)
        x[i] *= inv;
}

/* 1 + exp(-v) */
MOE_INLINE float32x4_t one_plus_exp_neg(float32x4_t v)
{
    return vaddq_f32(vdupq_n_f32(1.0f), Sleef_expf4_u10advsimd(vnegq_f32(v)));
}

void moe_silu__neon(float *y, const float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t v = vld1q_f32(x + i);
        vst1q_f32(y + i, vdivq_f32(v, one_plus_exp_neg(v)));
    }
    if (i < n) {
        const float32x4_t v = load_part(x + i, n - i, 0.0f);
        store_part(y + i, vdivq_f32(v, one_plus_exp_neg(v)), n - i);
    }
}

void moe_sigmoid__neon(float *y, const float *x, int64_t n)
{
    const float32x4_t one = vdupq_n_f32(1.0f);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(y + i, vdivq_f32(one, one_plus_exp_neg(vld1q_f32(x + i))));
    if (i < n)
        store_part(y + i, vdivq_f32(one, one_plus_exp_neg(load_part(x + i, n - i, 0.0f))), n - i);
}

void moe_silu_mul__neon(float *y, const float *a, const float *b, int64_t n)
{
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t v = vld1q_f32(a + i);
        vst1q_f32(y + i, vmulq_f32(vdivq_f32(v, one_plus_exp_neg(v)), vld1q_f32(b + i)));
    }
    if (i < n) {
        const float32x4_t v = load_part(a + i, n - i, 0.0f);
        const float32x4_t r = vmulq_f32(vdivq_f32(v, one_plus_exp_neg(v)), load_part(b + i, n - i, 0.0f));
        store_part(y + i, r, n - i);
    }
}

void moe_rope_sincos__neon(float *cos_out, float *sin_out, const float *inv_freq, int64_t half, float pos)
{
    int64_t i = 0;
    for (; i + 4 <= half; i += 4) {   /* angle = pos * inv_freq in FP32, as the reference */
        const Sleef_float32x4_t_2 sc = Sleef_sincosf4_u10advsimd(vmulq_n_f32(vld1q_f32(inv_freq + i), pos));
        vst1q_f32(sin_out + i, sc.x);
        vst1q_f32(cos_out + i, sc.y);
    }
    if (i < half) {
        const Sleef_float32x4_t_2 sc =
            Sleef_sincosf4_u10advsimd(vmulq_n_f32(load_part(inv_freq + i, half - i, 0.0f), pos));
        store_part(sin_out + i, sc.x, half - i);
        store_part(cos_out + i, sc.y, half - i);
    }
}

void moe_rope_apply__neon(float *x, int64_t n_vec, int64_t stride, const float *c, const float *s, int64_t half)
{
    for (int64_t v = 0; v < n_vec; v++) {
        float *p = x + v * stride;
        int64_t i = 0;
        for (; i + 4 <= half; i += 4) {
            float32x4x2_t ab = vld2q_f32(p + 2 * i);   /* val[0] = x[2i], val[1] = x[2i+1] */
            const float32x4_t cv = vld1q_f32(c + i), sv = vld1q_f32(s + i);
            const float32x4_t a = ab.val[0], b = ab.val[1];
            ab.val[0] = vsubq_f32(vmulq_f32(a, cv), vmulq_f32(b, sv));
            ab.val[1] = vaddq_f32(vmulq_f32(a, sv), vmulq_f32(b, cv));
            vst2q_f32(p + 2 * i, ab);
        }
        for (; i < half; i++) {
            const float a = p[2 * i], b = p[2 * i + 1];
            p[2 * i] = a * c[i] - b * s[i];
            p[2 * i + 1] = a * s[i] + b * c[i];
        }
    }
}


/* ------------------------------------------------------------------------
 * Transposed product y = x^T W (simd/matmul_t.h over 4-lane vectors)
 * ------------------------------------------------------------------------ */
#define MT_NAME(x) moe_mt_##x##__neon
#define MT_LANES 4
typedef float32x4_t mt_vec;
#define mt_load(p) vld1q_f32(p)
#define mt_store(p, v) vst1q_f32((p), (v))
#define mt_set1(x) vdupq_n_f32(x)
#define mt_fma(a, b, c) vfmaq_f32((c), (a), (b))
static inline uint16x4_t mt_ld_u16x4(const unsigned char *p)
{
    uint16_t t[4];
    memcpy(t, p, 8);
    return vld1_u16(t);
}
static inline int32x4_t mt_ld_s8x4(const int8_t *p)
{
    int8_t t[8] = {0};
    memcpy(t, p, 4);
    return vmovl_s16(vget_low_s16(vmovl_s8(vld1_s8(t))));
}
#define MT_DEQ_F16(dst, src, n) \
    for (int64_t i_ = 0; i_ < (n); i_ += 4) vst1q_f32((dst) + i_, vcvt_f32_f16(vreinterpret_f16_u16(mt_ld_u16x4((src) + 2 * i_))))
#define MT_DEQ_BF16(dst, src, n) \
    for (int64_t i_ = 0; i_ < (n); i_ += 4) vst1q_f32((dst) + i_, vreinterpretq_f32_u32(vshll_n_u16(mt_ld_u16x4((src) + 2 * i_), 16)))
static inline float32x4_t mt_fp8x4(const unsigned char *p)   /* value * 2^-8 (see dec16) */
{
    int8_t t[8] = {0};
    memcpy(t, p, 4);
    const int16x8_t h = vbicq_s16(vshll_n_s8(vld1_s8(t), 7), vdupq_n_s16(0x4000));
    return vcvt_f32_f16(vget_low_f16(vreinterpretq_f16_s16(h)));
}
#define mt_fp8(p) mt_fp8x4(p)
#define mt_mul(a, b) vmulq_f32((a), (b))
#define mt_q8(q) vcvtq_f32_s32(mt_ld_s8x4(q))
#define MT_F16(h) vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0)
#include "matmul_t.h"

/* Shared with the neon_dotprod table (simd/neon_internal.h): the transposed
 * product has no integer dot product to gain from. */
void moe_gemm_t__neon(const struct moe_mat *w, int64_t row0, int64_t row1, int64_t col0, int64_t col1, const float *x,
                      int64_t ldx, int n, float *y, int64_t ldy)
{
    moe_mt_gemm_t__neon(w, row0, row1, col0, col1, x, ldx, n, y, ldy);
}

const struct moe_kernels moe_kernels_neon = {
    .name = "neon",
    .family = "neon",
    .gemv = {moe_gemv_f32_f32__neon, moe_gemv_f16_f32__neon, moe_gemv_bf16_f32__neon, moe_gemv_fp8_f32__neon,
             moe_gemv_q8_0_f32__neon},
    .gemm = {moe_gemm_f32_f32__neon, moe_gemm_f16_f32__neon, moe_gemm_bf16_f32__neon, moe_gemm_fp8_f32__neon,
             moe_gemm_q8_0_f32__neon},
    .gemm_t = {moe_gemm_t__neon, moe_gemm_t__neon, moe_gemm_t__neon, moe_gemm_t__neon, moe_gemm_t__neon},
    .quantize_act = moe_quantize_act__neon,
    .rmsnorm = moe_rmsnorm__neon,
    .softmax = moe_softmax__neon,
    .silu = moe_silu__neon,
    .sigmoid = moe_sigmoid__neon,
    .silu_mul = moe_silu_mul__neon,
    .rope_sincos = moe_rope_sincos__neon,
    .rope_apply = moe_rope_apply__neon,
};

#else
/* Not an AArch64 build: nothing to compile (ISO C wants a declaration). */
typedef int moe_neon_unused;
#endif
