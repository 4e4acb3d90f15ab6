/*
 * simd/avx512.c — the AVX-512 kernel tables: "avx512" (F/BW/VL/DQ + FMA +
 * F16C) and "avx512_vnni" (the same plus vpdpbusd for the Q8_0 matrix
 * products).  Built with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2
 * -mfma -mf16c; the VNNI functions alone carry
 * __attribute__((target("avx512vnni"))), so no other code can contain a
 * VNNI instruction (the plain table must run on Skylake-X).
 *
 * Matrix products (contracts in kernels.h, oracles in quant/ref.c):
 *  - GEMV (one column, memory-bound): 4 rows per pass (8 for FP8) share
 *    every activation load; weights are decoded in registers (F16 by
 *    vcvtph2ps, BF16 by a 16-bit shift, FP8 e4m3 by placing its bits in an
 *    fp32 with integer ops, Q8_0 by int8 dot products with one FP32 FMA per
 *    block).  FP8 partial sums are scaled once per 128-wide block.  Where
 *    the CPU has AVX-512 VBMI + BF16 (checked at run time), FP8 GEMV
 *    instead decodes e4m3 to bf16 by table lookup (vpermi2b) and multiplies
 *    with vdpbf16ps against x split into two bf16 parts (see there).  The
 *    GEMVs prefetch the next pass's rows into L2 (the hardware prefetcher
 *    alone served the 4-8 interleaved row streams at ~30-80% of the read
 *    bandwidth on Zen 4; with it, ~90%).
 *  - GEMM (many columns): K is cut into blocks whose activation panel stays
 *    in L2; for each block a panel of rows is decoded once into a stack
 *    buffer (FP32 for F32/F16/BF16/FP8, the FP8 block scale folded into the
 *    decoded weights; for Q8_0 a transposed int8 panel, 4 bytes of 16 rows
 *    per vector) and reused by every column tile of a register-blocked
 *    micro-kernel.  Partial sums of later K blocks are added into y.
 *  - On the Zen 5 this was tuned on, 512-bit instructions issue at half the
 *    rate of 256-bit ones (FMA: 1 zmm or 2 ymm per cycle), so FP32 GEMM
 *    peaks at the same FLOP/s as AVX2.  FP8 GEMV decoding to fp32 costs
 *    about 4 zmm operations per 16 weights (~22 GB/s per core in cache on
 *    Zen 4), the bf16 route about 2.3 (~25 GB/s: vpermi2b and vdpbf16ps
 *    share pipes); with the prefetch either keeps up with one core's share
 *    of the read bandwidth.
 * Vector ops use SLEEF's AVX-512 functions for exp and sin/cos; tails are
 * masked loads and stores, never reads or writes past the end.
 *
 * AVX-512 BF16 (vdpbf16ps) is deliberately not used for the BF16 GEMM: it
 * would round the FP32 activations to bf16, an error of up to 2^-9 per
 * product, far outside the 3e-5 * sum|w x| the FP32 contract allows.
 */
#include "kernels.h"

#include <immintrin.h>
#include <math.h>
#include <sleef.h>
#include <string.h>

#define MOE_INLINE static inline __attribute__((always_inline))
#define MOE_VNNI __attribute__((target("avx512vnni")))
/* Fully unroll the fixed-count loops over rows/columns of a register tile so
 * their accumulators live in registers (gcc -O2 would not). */
#define MOE_UNROLL _Pragma("GCC unroll 16")

/* ------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------ */

static inline __mmask16 mask16(int64_t n) /* low n lanes, 0 <= n <= 16 */
{
    return (__mmask16)((1u << n) - 1u);
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static inline const unsigned char *mat_row(const struct moe_mat *w, int64_t r)
{
    return (const unsigned char *)w->data + (size_t)r * moe_wtype_row_bytes(w->type, w->cols);
}

/* e4m3 -> the fp16 with the same bits shifted: sign to bit 15, exponent and
 * mantissa to bits 13..7, i.e. value * 2^-8 (exponent bias 15 instead of 7);
 * the caller multiplies by 256 * block scale.  Sign extension puts the sign
 * in bits 15 and 14 after the shift; the mask keeps bit 15 only.  F16C
 * converts fp16 subnormals exactly whatever DAZ/FTZ say, so e4m3
 * subnormals decode exactly.  The NaN codes 0x7F/0xFF (absent from real
 * weights) decode as +-480 instead of NaN (the GEMM and the fallback GEMV;
 * the bf16 GEMV route decodes them to NaN). */
MOE_INLINE __m512 fp8x16_to_f32(__m128i b)
{
    __m256i h = _mm256_slli_epi16(_mm256_cvtepi8_epi16(b), 7);
    return _mm512_cvtph_ps(_mm256_and_si256(h, _mm256_set1_epi16((short)0xBF80)));
}

/* Fast GEMV decode of e4m3, a pseudo weight type private to this file:
 * sign-extend, shift by 20 and mask gives the fp32 whose bits are the
 * e4m3 bits in place, i.e. exactly value * 2^-120; e4m3 subnormals become
 * fp32 denormals, also exact (m * 2^-129).  Three integer ops instead of
 * the F16C route's four with a slow vcvtph2ps.  Used only with DAZ off
 * (else denormal weights would read as 0; FMA has no denormal penalty
 * here), and with x pre-scaled by a power of two chosen from max |x| so
 * that the tiny products stay normal (fp8_raw_exp).  NaN codes 0x7F/0xFF
 * decode as +-480 here too. */
#define W_FP8_RAW ((enum moe_wtype)(MOE_W_COUNT + 1))

MOE_INLINE __m512 fp8x16_raw_to_f32(__m128i b)
{
    return _mm512_castsi512_ps(
        _mm512_and_si512(_mm512_slli_epi32(_mm512_cvtepi8_epi32(b), 20), _mm512_set1_epi32((int)0x87F00000)));
}

/* 16 weights of a row of type t starting at element i, as FP32. */
MOE_INLINE __m512 wload16(const unsigned char *row, int64_t i, enum moe_wtype t)
{
    switch (t) {
    case MOE_W_F32: return _mm512_loadu_ps(row + 4 * i);
    case MOE_W_F16: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + 2 * i)));
    case MOE_W_BF16:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(row + 2 * i))), 16));
    case MOE_W_FP8: return fp8x16_to_f32(_mm_loadu_si128((const __m128i *)(row + i)));
    default: return fp8x16_raw_to_f32(_mm_loadu_si128((const __m128i *)(row + i)));
    }
}

/* The same for the lanes of m only (others 0); never touches memory
 * outside the selected elements. */
MOE_INLINE __m512 wload16_mask(const unsigned char *row, int64_t i, __mmask16 m, enum moe_wtype t)
{
    switch (t) {
    case MOE_W_F32: return _mm512_maskz_loadu_ps(m, row + 4 * i);
    case MOE_W_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row + 2 * i));
    case MOE_W_BF16:
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, row + 2 * i)), 16));
    case MOE_W_FP8: return fp8x16_to_f32(_mm_maskz_loadu_epi8(m, row + i));
    default: return fp8x16_raw_to_f32(_mm_maskz_loadu_epi8(m, row + i));
    }
}

/* Sums of four vectors: lane i of the result is the sum of the 16 lanes of
 * a_i. */
MOE_INLINE __m128 hsum4(__m512 a0, __m512 a1, __m512 a2, __m512 a3)
{
    __m512 t0 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
    __m512 t1 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
    __m512 u = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t1))),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t1))));
    __m256 v = _mm256_add_ps(_mm512_castps512_ps256(u), _mm512_extractf32x8_ps(u, 1));
    return _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
}

/* ------------------------------------------------------------------------
 * GEMV for F32 / F16 / BF16 / FP8 weights
 * ------------------------------------------------------------------------ */

/* x[k..k+16) as the kernels multiply it (times xm for W_FP8_RAW). */
MOE_INLINE __m512 xload16(const float *x, int64_t k, enum moe_wtype t, __m512 xm)
{
    const __m512 v = _mm512_loadu_ps(x + k);
    return t == W_FP8_RAW ? _mm512_mul_ps(v, xm) : v;
}

MOE_INLINE __m512 xload16_mask(const float *x, int64_t k, __mmask16 m, enum moe_wtype t, __m512 xm)
{
    const __m512 v = _mm512_maskz_loadu_ps(m, x + k);
    return t == W_FP8_RAW ? _mm512_mul_ps(v, xm) : v;
}

/* Prefetch into L2 the byte pfd after p (the same column of the rows of the
 * next pass).  Formed in integers: it may lie past the matrix (prefetches
 * never fault, and no out-of-object pointer is formed). */
MOE_INLINE void prefetch_l2(const unsigned char *p, int64_t pfd)
{
    _mm_prefetch((const char *)((uintptr_t)p + (uintptr_t)pfd), _MM_HINT_T1);
}

/* acc0/acc1[i] += row_i[k0..k1) * x[k0..k1) (* xm for W_FP8_RAW) for R rows;
 * with pfd != 0, prefetches pfd bytes ahead of each row (every line of
 * the 32 weights of each step). */
MOE_INLINE void gemv_f_range(const unsigned char *const *rp, const int R, const float *x, int64_t k0, int64_t k1,
                             __m512 *acc0, __m512 *acc1, enum moe_wtype t, __m512 xm, int64_t pfd)
{
    int64_t k = k0;
    for (; k + 32 <= k1; k += 32) {
        const __m512 x0 = xload16(x, k, t, xm), x1 = xload16(x, k + 16, t, xm);
        MOE_UNROLL
        for (int i = 0; i < R; i++) {
            if (pfd) {
                const int64_t eb = t == MOE_W_F32 ? 4 : t == MOE_W_F16 || t == MOE_W_BF16 ? 2 : 1;
                prefetch_l2(rp[i] + eb * k, pfd);
                if (eb == 4)   /* 128 bytes per row per step */
                    prefetch_l2(rp[i] + eb * k, pfd + 64);
            }
            acc0[i] = _mm512_fmadd_ps(wload16(rp[i], k, t), x0, acc0[i]);
            acc1[i] = _mm512_fmadd_ps(wload16(rp[i], k + 16, t), x1, acc1[i]);
        }
    }
    if (k + 16 <= k1) {
        const __m512 x0 = xload16(x, k, t, xm);
        MOE_UNROLL
        for (int i = 0; i < R; i++)
            acc0[i] = _mm512_fmadd_ps(wload16(rp[i], k, t), x0, acc0[i]);
        k += 16;
    }
    if (k < k1) {
        const __mmask16 m = mask16(k1 - k);
        const __m512 x0 = xload16_mask(x, k, m, t, xm);
        MOE_UNROLL
        for (int i = 0; i < R; i++)
            acc1[i] = _mm512_fmadd_ps(wload16_mask(rp[i], k, m, t), x0, acc1[i]);
    }
}

/* Pre-scale exponent for the raw FP8 path: x is multiplied by (scale *)
 * 2^e so that max |x| (* max scale) = p lands just below 2^60, keeping the
 * products e4m3 * 2^-120 * x' normal and finite whatever the magnitudes;
 * m = the largest multiplier of x (max scale, or 1).  The result is
 * multiplied back by 2^(120 - e), e in [-7, 120].  Returns 0 when even that
 * cannot keep x' below 2^100 (p beyond 2^107). */
static int fp8_raw_exp(double p, double m, int *e_out)
{
    int e = 64, ep, em;
    if (p > 0.0) {
        frexp(p, &ep);
        e = 60 - ep;
    }
    e = e > 120 ? 120 : e < -7 ? -7 : e;
    if (m > 0.0) {
        frexp(m, &em);
        if (em + e > 126)
            e = 126 - em;
    }
    *e_out = e;
    return p < 0x1p107 && e >= -7;
}

/* y[i] = row r+i . x for i < R (R = 1, 4 or 8).  For W_FP8_RAW, xmax =
 * max |x|, accepted by fp8_raw_ok. */
MOE_INLINE void gemv_f_rows(const struct moe_mat *w, int64_t r, const int R, const float *x, float *y,
                           enum moe_wtype t, float xmax)
{
    const unsigned char *rp[8];
    __m512 acc[8], a0[8], a1[8];
    MOE_UNROLL
    for (int i = 0; i < R; i++) {
        rp[i] = mat_row(w, r + i);
        acc[i] = a0[i] = a1[i] = _mm512_setzero_ps();
    }
    const int64_t k = w->cols;
    if (t != MOE_W_FP8 && t != W_FP8_RAW) {
        /* The next pass's rows into L2, as for FP8 below: with the hardware
         * prefetcher alone the 4 row streams ran at ~50-80% of the read
         * bandwidth (Zen 4), with this at ~90%. */
        const int64_t pfd = R > 1 ? R * (int64_t)moe_wtype_row_bytes(t, k) : 0;
        gemv_f_range(rp, R, x, 0, k, a0, a1, t, _mm512_set1_ps(1.0f), pfd);
        MOE_UNROLL
        for (int i = 0; i < R; i++)
            acc[i] = _mm512_add_ps(a0[i], a1[i]);
    } else {
        const int64_t sc = moe_fp8_scale_cols(k);
        const float *srow[8];
        MOE_UNROLL
        for (int i = 0; i < R; i++)
            srow[i] = w->scale + ((r + i) / MOE_FP8_BLOCK) * sc;
        int e = 0;
        /* Raw decode with every row in one 128-row block (the usual case):
         * fold the block scale into the pre-scaled x chunk, so a block costs
         * nothing extra (x * scale is one more rounding of x, 2^-24). */
        int fold = t == W_FP8_RAW && srow[0] == srow[R - 1];
        if (fold) {
            float smax = 0.0f;
            for (int64_t b = 0; b < sc; b++)
                smax = fabsf(srow[0][b]) > smax ? fabsf(srow[0][b]) : smax;
            fold = fp8_raw_exp((double)xmax * smax, smax, &e);
        }
        /* The hardware prefetcher alone kept the 8 row streams at ~40-60% of
         * the read bandwidth (Zen 4); fetching the next pass's rows into L2
         * (R rows further on) keeps it near the compute ceiling. */
        const int64_t pfd = t == W_FP8_RAW && R > 1 ? R * (int64_t)moe_wtype_row_bytes(MOE_W_FP8, k) : 0;
        if (fold) {
            const float pe = ldexpf(1.0f, e);
            for (int64_t b = 0; b < sc; b++)
                gemv_f_range(rp, R, x, b * 128, min64(b * 128 + 128, k), a0, a1, t, _mm512_set1_ps(srow[0][b] * pe), pfd);
            MOE_UNROLL
            for (int i = 0; i < R; i++)
                acc[i] = _mm512_mul_ps(_mm512_add_ps(a0[i], a1[i]), _mm512_set1_ps(ldexpf(1.0f, 120 - e)));
        } else {
            if (t == W_FP8_RAW)
                fp8_raw_exp(xmax, 1.0, &e);   /* succeeds: checked by fp8_raw_ok */
            /* One FP32 partial per 128-wide block, scaled once; the factor
             * undoes the decode's exponent offset: 2^8 for fp16, 2^(120-e)
             * for the raw decode with x pre-scaled by 2^e. */
            const float f = t == MOE_W_FP8 ? 256.0f : ldexpf(1.0f, 120 - e);
            const __m512 xm = _mm512_set1_ps(ldexpf(1.0f, e));
            for (int64_t b = 0; b < sc; b++) {
                MOE_UNROLL
                for (int i = 0; i < R; i++)
                    a0[i] = a1[i] = _mm512_setzero_ps();
                gemv_f_range(rp, R, x, b * 128, min64(b * 128 + 128, k), a0, a1, t, xm, pfd);
                MOE_UNROLL
                for (int i = 0; i < R; i++)
                    acc[i] = _mm512_fmadd_ps(_mm512_add_ps(a0[i], a1[i]), _mm512_set1_ps(srow[i][b] * f), acc[i]);
            }
        }
    }
    if (R >= 4) {
        MOE_UNROLL
        for (int i = 0; i < R; i += 4)
            _mm_storeu_ps(y + i, hsum4(acc[i], acc[i + 1], acc[i + 2], acc[i + 3]));
    } else {
        MOE_UNROLL
        for (int i = 0; i < R; i++)
            y[i] = _mm512_reduce_add_ps(acc[i]);
    }
}

/* Rows per pass of the raw-decode FP8 GEMV (8 streams, 16 accumulators). */
#define FP8_R 8

/* Whether the raw e4m3 decode can be used for activations x[0..k): DAZ
 * off (see fp8x16_raw_to_f32) and max |x|, written to *xmax, below 2^107
 * (fp8_raw_exp). */
static int fp8_raw_ok(const float *x, int64_t k, float *xmax)
{
    if (_mm_getcsr() & 0x0040)
        return 0;
    __m512 mx = _mm512_setzero_ps();
    for (int64_t i = 0; i < k; i += 16)
        mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_maskz_loadu_ps(mask16(min64(16, k - i)), x + i)));
    *xmax = _mm512_reduce_max_ps(mx);   /* NaN lanes are skipped: NaN x gives NaN either way */
    int e;
    return fp8_raw_exp(*xmax, 1.0, &e);
}

MOE_INLINE void gemv_f(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a, float *y,
                       int64_t ldy, enum moe_wtype t)
{
    for (int j = 0; j < a->n; j++) {
        const float *x = a->x + j * a->ldx;
        float *yj = y + j * ldy;
        int64_t r = row0;
        float xmax = 0.0f;
        if (t == MOE_W_FP8 && fp8_raw_ok(x, w->cols, &xmax)) {
            for (; r + FP8_R <= row1; r += FP8_R)
                gemv_f_rows(w, r, FP8_R, x, yj + r, W_FP8_RAW, xmax);
            for (; r < row1; r++)
                gemv_f_rows(w, r, 1, x, yj + r, W_FP8_RAW, xmax);
            continue;
        }
        for (; r + 4 <= row1; r += 4)
            gemv_f_rows(w, r, 4, x, yj + r, t, xmax);
        for (; r < row1; r++)
            gemv_f_rows(w, r, 1, x, yj + r, t, xmax);
    }
}

static void moe_gemv_f32_f32__avx512(const struct moe_mat *w, int64_t row0, int64_t row1,
                                     const struct moe_acts *a, float *y, int64_t ldy)
{
    gemv_f(w, row0, row1, a, y, ldy, MOE_W_F32);
}

static void moe_gemv_f16_f32__avx512(const struct moe_mat *w, int64_t row0, int64_t row1,
                                     const struct moe_acts *a, float *y, int64_t ldy)
{
    gemv_f(w, row0, row1, a, y, ldy, MOE_W_F16);
}

static void moe_gemv_bf16_f32__avx512(const struct moe_mat *w, int64_t row0, int64_t row1,
                                      const struct moe_acts *a, float *y, int64_t ldy)
{
    gemv_f(w, row0, row1, a, y, ldy, MOE_W_BF16);
}

/* ------------------------------------------------------------------------
 * FP8 GEMV through AVX-512 VBMI + BF16 (both on Zen 4+, Cooper Lake and
 * Sapphire Rapids; Ice Lake has VBMI only, Skylake-X/Cascade Lake neither).
 * Checked at run time (fp8_bf16_usable); without them, or when x and the
 * scales are outside the range below, gemv_f's fp32 decode runs instead.
 *
 * e4m3 is exact in bf16, subnormals included (as normal bf16 numbers), so
 * 64 weights decode with two table lookups: vpermi2b maps the 7 magnitude
 * bits of each byte (it ignores bit 7) through a 128-byte table held in
 * two zmm to the high byte of the value's bf16, a second one to the low
 * byte, and vpternlog ORs in the sign bit.  The NaN codes 0x7F/0xFF decode
 * to the bf16 NaNs 0x7FC0/0xFFC0, so they give NaN like the reference.
 * Bytes unpacked as (low, high) pairs give 32 bf16 per zmm in unpack order
 * (per 128-bit lane l: weights 16l+0..7 in the first vector, 16l+8..15 in
 * the second).  vdpbf16ps multiplies bf16 pairs exactly and adds them into
 * FP32 lanes, so x enters as two bf16 parts, x = xh + xl + O(2^-18 |x|)
 * (xh = x rounded to bf16, xl = the rest rounded to bf16), written once
 * per 128-row block in unpack order with the block scale and a power of
 * two folded in.  Per 64 weights and row: 1 load, 2 vpermi2b, 1 vpternlog,
 * 2 unpacks and 4 vdpbf16ps, against 16 operations for the fp32 decode.
 * vdpbf16ps treats denormal inputs and results as zero whatever MXCSR
 * says: x' = x * scale * 2^e with max |x'| in [2^59, 2^60) keeps every
 * product normal unless its |x| is below 2^-185 max |x| (such terms are
 * lost, far below the rounding error of the large ones).
 * ------------------------------------------------------------------------ */

#define MOE_BF16VBMI __attribute__((target("avx512bf16,avx512vbmi")))
#define FP8B_KC 8192   /* K chunk whose bf16 x parts live on the stack (32 KiB) */
#define FP8B_R 4       /* rows per pass sharing the x loads (8 was no faster) */

static int fp8_bf16_usable(void)
{
    return __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512bf16");
}

/* High and low byte of the bf16 of e4m3 magnitude code c (c = 0x7F: NaN). */
struct fp8_bf16_tab {
    unsigned char hi[128], lo[128];
};

static const struct fp8_bf16_tab *fp8_bf16_table(void)
{
    static struct fp8_bf16_tab t;
    static int done;   /* racing first calls write identical bytes */
    if (!__atomic_load_n(&done, __ATOMIC_ACQUIRE)) {
        struct fp8_bf16_tab u;
        for (int c = 0; c < 128; c++) {
            const float v = moe_fp8_to_f32((uint8_t)c);
            uint32_t b;
            memcpy(&b, &v, 4);
            if (c == 0x7F)
                b = 0x7FC00000u;   /* the quiet NaN, whatever moe_fp8_to_f32's NaN bits */
            u.hi[c] = (unsigned char)(b >> 24);
            u.lo[c] = (unsigned char)(b >> 16);   /* e4m3 values have no lower bits */
        }
        memcpy(&t, &u, sizeof t);
        __atomic_store_n(&done, 1, __ATOMIC_RELEASE);
    }
    return &t;
}

/* FP32 lanes rounded to bf16 precision (nearest even), still as FP32 bits. */
MOE_INLINE __m512i bf16_round_bits(__m512i u)
{
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    return _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), odd),
                            _mm512_set1_epi32((int)0xFFFF0000u));
}

/* a..d hold x[0..15], x[16..31], x[32..47], x[48..63] as bf16 in the top
 * 16 bits of their lanes; stores them in unpack order: o[0..31] =
 * x[0..7, 16..23, 32..39, 48..55], o[32..63] = x[8..15, 24..31, 40..47,
 * 56..63]. */
MOE_INLINE void bf16_store_perm(uint16_t *o, __m512i a, __m512i b, __m512i c, __m512i d)
{
    /* word m of permutex2var_epi16(a, idx, b): idx < 32 from a, else from b */
    const __m512i idx = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 31, 29, 27, 25, 23, 21, 19, 17,
                                         47, 45, 43, 41, 39, 37, 35, 33, 15, 13, 11, 9, 7, 5, 3, 1);
    const __m512i p = _mm512_permutex2var_epi16(a, idx, b);   /* x[0..7, 16..23, 8..15, 24..31] */
    const __m512i q = _mm512_permutex2var_epi16(c, idx, d);   /* x[32..39, 48..55, 40..47, 56..63] */
    _mm512_storeu_si512(o, _mm512_shuffle_i64x2(p, q, 0x44));
    _mm512_storeu_si512(o + 32, _mm512_shuffle_i64x2(p, q, 0xEE));
}

/* For each 64-group g of x[0..kc): xb[128 g ..) = the 64 high parts, then
 * the 64 low parts, of x[i] * f[i / 128] in unpack order (0 past kc). */
static void fp8_bf16_prep_x(uint16_t *xb, const float *x, int64_t kc, const float *f)
{
    for (int64_t g = 0; g * 64 < kc; g++) {
        const __m512 fv = _mm512_set1_ps(f[g / 2]);
        __m512i h[4], l[4];
        for (int i = 0; i < 4; i++) {
            const int64_t k = g * 64 + 16 * i;
            const __mmask16 m = mask16(k < kc ? min64(16, kc - k) : 0);
            const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + k), fv);
            h[i] = bf16_round_bits(_mm512_castps_si512(v));
            l[i] = bf16_round_bits(_mm512_castps_si512(_mm512_sub_ps(v, _mm512_castsi512_ps(h[i]))));
        }
        bf16_store_perm(xb + 128 * g, h[0], h[1], h[2], h[3]);
        bf16_store_perm(xb + 128 * g + 64, l[0], l[1], l[2], l[3]);
    }
}

/* acc[i] = row i . x' over kc weights for R rows (rp[i] at the chunk start),
 * prefetching pfd bytes ahead of each row when pfd != 0.  The high and low
 * parts of x go into separate accumulators: chained, each step waited for
 * two vdpbf16ps latencies (one core, FP8 in L3: 43 GB/s chained, 58 split). */
MOE_BF16VBMI MOE_INLINE void fp8_bf16_rows(const unsigned char *const *rp, const int R, const uint16_t *xb,
                                           int64_t kc, __m512 *acc, const struct fp8_bf16_tab *tab, int64_t pfd)
{
    const __m512i th0 = _mm512_loadu_si512(tab->hi), th1 = _mm512_loadu_si512(tab->hi + 64);
    const __m512i tl0 = _mm512_loadu_si512(tab->lo), tl1 = _mm512_loadu_si512(tab->lo + 64);
    const __m512i sgn = _mm512_set1_epi8((char)0x80);
    __m512 a0[FP8B_R], a1[FP8B_R], b0[FP8B_R], b1[FP8B_R];
    MOE_UNROLL
    for (int i = 0; i < R; i++)
        a0[i] = a1[i] = b0[i] = b1[i] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; k += 64) {
        const uint16_t *xg = xb + 2 * k;
        const __m512bh xh0 = (__m512bh)_mm512_load_si512(xg), xh1 = (__m512bh)_mm512_load_si512(xg + 32);
        const __m512bh xl0 = (__m512bh)_mm512_load_si512(xg + 64), xl1 = (__m512bh)_mm512_load_si512(xg + 96);
        const __mmask64 m = kc - k >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (kc - k)) - 1;
        MOE_UNROLL
        for (int i = 0; i < R; i++) {
            const __m512i w = _mm512_maskz_loadu_epi8(m, rp[i] + k);
            if (pfd)
                prefetch_l2(rp[i] + k, pfd);
            /* hi = table | (w & 0x80) */
            const __m512i hi = _mm512_ternarylogic_epi32(_mm512_permutex2var_epi8(th0, w, th1), w, sgn, 0xF8);
            const __m512i lo = _mm512_permutex2var_epi8(tl0, w, tl1);
            const __m512bh u0 = (__m512bh)_mm512_unpacklo_epi8(lo, hi), u1 = (__m512bh)_mm512_unpackhi_epi8(lo, hi);
            a0[i] = _mm512_dpbf16_ps(a0[i], u0, xh0);
            b0[i] = _mm512_dpbf16_ps(b0[i], u0, xl0);
            a1[i] = _mm512_dpbf16_ps(a1[i], u1, xh1);
            b1[i] = _mm512_dpbf16_ps(b1[i], u1, xl1);
        }
    }
    MOE_UNROLL
    for (int i = 0; i < R; i++)
        acc[i] = _mm512_add_ps(_mm512_add_ps(a0[i], a1[i]), _mm512_add_ps(b0[i], b1[i]));
}

/* y[r] for rows [r0, r1) of one 128-row block; xmax = max |x|; xb: a
 * 64-byte aligned buffer of 2 * FP8B_KC.  Returns 0, writing nothing, when
 * x and the block's scales are outside the range described above. */
MOE_BF16VBMI static int fp8_bf16_block(const struct moe_mat *w, int64_t r0, int64_t r1, const float *x, float xmax,
                                       float *y, uint16_t *xb)
{
    const int64_t k = w->cols, sc = moe_fp8_scale_cols(k);
    const float *srow = w->scale + (r0 / MOE_FP8_BLOCK) * sc;
    float smax = 0.0f;
    for (int64_t b = 0; b < sc; b++)
        smax = fabsf(srow[b]) > smax ? fabsf(srow[b]) : smax;
    const double p = (double)xmax * smax;
    int e = 0, ep;
    if (!(p < 0x1p120) || !(smax < 0x1p100))   /* also NaN */
        return 0;
    if (p > 0.0) {
        frexp(p, &ep);
        e = 60 - ep;
    }
    if (e > 126 || e < -126 || (double)smax * ldexp(1.0, e) >= 0x1p120)
        return 0;
    const float undo = ldexpf(1.0f, -e);
    const struct fp8_bf16_tab *tab = fp8_bf16_table();
    const int64_t pfd = FP8B_R * (int64_t)moe_wtype_row_bytes(MOE_W_FP8, k);   /* the next pass's rows */
    for (int64_t k0 = 0; k0 < k; k0 += FP8B_KC) {
        const int64_t kc = min64(FP8B_KC, k - k0);
        float f[FP8B_KC / MOE_FP8_BLOCK];
        for (int64_t b = 0; b * MOE_FP8_BLOCK < kc; b++)
            f[b] = ldexpf(srow[k0 / MOE_FP8_BLOCK + b], e);
        fp8_bf16_prep_x(xb, x + k0, kc, f);
        __m512 acc[FP8B_R];
        const unsigned char *rp[FP8B_R];
        int64_t r = r0;
        for (; r + FP8B_R <= r1; r += FP8B_R) {
            MOE_UNROLL
            for (int i = 0; i < FP8B_R; i++)
                rp[i] = mat_row(w, r + i) + k0;
            fp8_bf16_rows(rp, FP8B_R, xb, kc, acc, tab, pfd);
            __m128 s = _mm_mul_ps(hsum4(acc[0], acc[1], acc[2], acc[3]), _mm_set1_ps(undo));
            if (k0)
                s = _mm_add_ps(s, _mm_loadu_ps(y + r));
            _mm_storeu_ps(y + r, s);
        }
        for (; r < r1; r++) {
            rp[0] = mat_row(w, r) + k0;
            fp8_bf16_rows(rp, 1, xb, kc, acc, tab, 0);
            y[r] = _mm512_reduce_add_ps(acc[0]) * undo + (k0 ? y[r] : 0.0f);
        }
    }
    return 1;
}

MOE_BF16VBMI static void fp8_bf16_gemv1(const struct moe_mat *w, int64_t row0, int64_t row1, const float *x,
                                        float *y)
{
    _Alignas(64) uint16_t xb[2 * FP8B_KC];
    const int64_t k = w->cols;
    __m512 mx = _mm512_setzero_ps();
    for (int64_t i = 0; i < k; i += 16)
        mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_maskz_loadu_ps(mask16(min64(16, k - i)), x + i)));
    const float xmax = _mm512_reduce_max_ps(mx);   /* NaN lanes are skipped: NaN x gives NaN either way */
    for (int64_t r0 = row0; r0 < row1;) {
        const int64_t r1 = min64(row1, (r0 / MOE_FP8_BLOCK + 1) * MOE_FP8_BLOCK);
        if (!fp8_bf16_block(w, r0, r1, x, xmax, y, xb)) {
            const struct moe_acts a1 = {.k = k, .n = 1, .x = x, .ldx = k};
            gemv_f(w, r0, r1, &a1, y, 0, MOE_W_FP8);
        }
        r0 = r1;
    }
}

static void moe_gemv_fp8_f32__avx512(const struct moe_mat *w, int64_t row0, int64_t row1,
                                     const struct moe_acts *a, float *y, int64_t ldy)
{
    if (fp8_bf16_usable()) {
        for (int j = 0; j < a->n; j++)
            fp8_bf16_gemv1(w, row0, row1, a->x + j * a->ldx, y + j * ldy);
        return;
    }
    gemv_f(w, row0, row1, a, y, ldy, MOE_W_FP8);
}

/* ------------------------------------------------------------------------
 * GEMM for F32 / F16 / BF16 / FP8 weights
 *
 * For each K block of GF_KC (the activation panel, n * 2 KiB, stays in L2)
 * and each panel of GF_PR rows: decode the panel to FP32 (FP8 block scales
 * folded in), zero-padded to a multiple of 16 in k and of GF_MR in rows;
 * then for each tile of GF_NR columns and GF_MR rows keep GF_MR x GF_NR
 * accumulators of 16 k-lanes, reduce them at the end of the K block and
 * add them into y.
 * ------------------------------------------------------------------------ */

#define GF_KC 512
#define GF_PR 16
#define GF_MR 4
#define GF_NR 6

/* panel[i * kcp + kk] = W[r + i][k0 + kk] for i < nr, kk < kc; zeros up to
 * kcp columns and up to nrp rows. */
MOE_INLINE void gemm_f_decode(float *panel, int64_t kcp, const struct moe_mat *w, int64_t r, int nr, int nrp,
                              int64_t k0, int64_t kc, enum moe_wtype t)
{
    const int64_t sc = moe_fp8_scale_cols(w->cols);
    for (int i = 0; i < nr; i++) {
        const unsigned char *row = mat_row(w, r + i);
        float *dst = panel + i * kcp;
        const float *srow = t == MOE_W_FP8 ? w->scale + ((r + i) / MOE_FP8_BLOCK) * sc : NULL;
        int64_t kk = 0;
        if (t == MOE_W_FP8) {
            for (int64_t b0 = 0; b0 < kc; b0 += 128) {
                const __m512 s = _mm512_set1_ps(srow[(k0 + b0) / MOE_FP8_BLOCK] * 256.0f);
                const int64_t b1 = min64(b0 + 128, kc);
                for (kk = b0; kk + 16 <= b1; kk += 16)
                    _mm512_storeu_ps(dst + kk, _mm512_mul_ps(wload16(row, k0 + kk, t), s));
                if (kk < b1)
                    _mm512_storeu_ps(dst + kk, _mm512_mul_ps(wload16_mask(row, k0 + kk, mask16(b1 - kk), t), s));
            }
        } else {
            for (; kk + 16 <= kc; kk += 16)
                _mm512_storeu_ps(dst + kk, wload16(row, k0 + kk, t));
            if (kk < kc)
                _mm512_storeu_ps(dst + kk, wload16_mask(row, k0 + kk, mask16(kc - kk), t));
        }
    }
    for (int i = nr; i < nrp; i++)
        memset(panel + i * kcp, 0, sizeof(float) * (size_t)kcp);
}

/* y[c*ldy + i] (+)= panel row i . x column c over kc, i < nrow (<= 4), c < NC. */
MOE_INLINE void gemm_f_tile(const float *wp, int64_t kcp, int64_t kc, const float *x, int64_t ldx, float *y,
                            int64_t ldy, int nrow, int first, const int NC)
{
    __m512 acc[GF_MR][GF_NR];
    MOE_UNROLL
    for (int i = 0; i < GF_MR; i++)
        MOE_UNROLL
        for (int c = 0; c < NC; c++)
            acc[i][c] = _mm512_setzero_ps();
    int64_t kk = 0;
    for (; kk + 16 <= kc; kk += 16) {
        __m512 wv[GF_MR];
        MOE_UNROLL
        for (int i = 0; i < GF_MR; i++)
            wv[i] = _mm512_loadu_ps(wp + i * kcp + kk);
        MOE_UNROLL
        for (int c = 0; c < NC; c++) {
            const __m512 xv = _mm512_loadu_ps(x + c * ldx + kk);
            MOE_UNROLL
            for (int i = 0; i < GF_MR; i++)
                acc[i][c] = _mm512_fmadd_ps(wv[i], xv, acc[i][c]);
        }
    }
    if (kk < kc) {
        const __mmask16 m = mask16(kc - kk);
        __m512 wv[GF_MR];
        MOE_UNROLL
        for (int i = 0; i < GF_MR; i++)
            wv[i] = _mm512_loadu_ps(wp + i * kcp + kk);   /* zero padded */
        MOE_UNROLL
        for (int c = 0; c < NC; c++) {
            const __m512 xv = _mm512_maskz_loadu_ps(m, x + c * ldx + kk);
            MOE_UNROLL
            for (int i = 0; i < GF_MR; i++)
                acc[i][c] = _mm512_fmadd_ps(wv[i], xv, acc[i][c]);
        }
    }
    const __mmask8 m4 = (__mmask8)((1u << nrow) - 1u);
    MOE_UNROLL
    for (int c = 0; c < NC; c++) {
        __m128 v = hsum4(acc[0][c], acc[1][c], acc[2][c], acc[3][c]);
        float *yp = y + c * ldy;
        if (!first)
            v = _mm_add_ps(v, _mm_maskz_loadu_ps(m4, yp));
        _mm_mask_storeu_ps(yp, m4, v);
    }
}

MOE_INLINE void gemm_f(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a, float *y,
                       int64_t ldy, enum moe_wtype t)
{
    _Alignas(64) float panel[GF_PR * GF_KC];   /* 32 KiB */
    const int64_t k = w->cols;
    const int n = a->n;
    for (int64_t k0 = 0; k0 < k; k0 += GF_KC) {
        const int64_t kc = min64(GF_KC, k - k0), kcp = (kc + 15) & ~(int64_t)15;
        const int first = k0 == 0;
        for (int64_t r = row0; r < row1; r += GF_PR) {
            const int nr = (int)min64(GF_PR, row1 - r);
            const int nrp = (nr + GF_MR - 1) / GF_MR * GF_MR;
            gemm_f_decode(panel, kcp, w, r, nr, nrp, k0, kc, t);
            for (int j = 0; j < n; j += GF_NR) {
                const int nc = n - j < GF_NR ? n - j : GF_NR;
                const float *x = a->x + j * a->ldx + k0;
                for (int i = 0; i < nrp; i += GF_MR) {
                    const float *wp = panel + i * kcp;
                    float *yp = y + j * ldy + r + i;
                    const int nrow = nr - i < GF_MR ? nr - i : GF_MR;
                    switch (nc) {
                    case 6: gemm_f_tile(wp, kcp, kc, x, a->ldx, yp, ldy, nrow, first, 6); break;
                    case 5: gemm_f_tile(wp, kcp, kc, x, a->ldx, yp, ldy, nrow, first, 5); break;
                    case 4: gemm_f_tile(wp, kcp, kc, x, a->ldx, yp, ldy, nrow, first, 4); break;
                    case 3: gemm_f_tile(wp, kcp, kc, x, a->ldx, yp, ldy, nrow, first, 3); break;
                    case 2: gemm_f_tile(wp, kcp, kc, x, a->ldx, yp, ldy, nrow, first, 2); break;
                    default: gemm_f_tile(wp, kcp, kc, x, a->ldx, yp, ldy, nrow, first, 1); break;
                    }
                }
            }
        }
    }
}

static void moe_gemm_f32_f32__avx512(const struct moe_mat *w, int64_t row0, int64_t row1,
                                     const struct moe_acts *a, float *y, int64_t ldy)
{
    gemm_f(w, row0, row1, a, y, ldy, MOE_W_F32);
}

static void moe_gemm_f16_f32__avx512(const struct moe_mat *w, int64_t row0, int64_t row1,
                                     const struct moe_acts *a, float *y, int64_t ldy)
{
    gemm_f(w, row0, row1, a, y, ldy, MOE_W_F16);
}

static void moe_gemm_bf16_f32__avx512(const struct moe_mat *w, int64_t row0, int64_t row1,
                                      const struct moe_acts *a, float *y, int64_t ldy)
{
    gemm_f(w, row0, row1, a, y, ldy, MOE_W_BF16);
}

static void moe_gemm_fp8_f32__avx512(const struct moe_mat *w, int64_t row0, int64_t row1,
                                     const struct moe_acts *a, float *y, int64_t ldy)
{
    gemm_f(w, row0, row1, a, y, ldy, MOE_W_FP8);
}

/* ------------------------------------------------------------------------
 * Q8_0 weights x int8 activations
 *
 * Two integer dot products, exact in int32:
 *  - VNNI: vpdpbusd(u = w ^ 0x80 = w + 128 unsigned, x signed) sums
 *    (w + 128) * x; the extra 128 * sum(x) is removed exactly in the
 *    integer accumulator before conversion to FP32.
 *  - plain AVX-512: vpmaddubsw(|w|, x * sign(w)) then vpmaddwd with ones
 *    (|w| <= 128, |x| <= 127: a pair sum is at most 32512, no saturation).
 * GEMV: a vector holds two consecutive blocks of one row (lanes 0-7 and
 * 8-15); each lane's exact partial is converted to FP32 and multiplied by
 * d_w * d_x of its block.  GEMM: the weight panel is transposed so that a
 * vector holds 4 consecutive bytes of 16 rows; a column's broadcast 4
 * activation bytes then give, after 8 steps, the exact int32 block sums of
 * 16 rows in the 16 lanes.
 * ------------------------------------------------------------------------ */

#define Q8_KB 16     /* blocks per K block (512 k) */
#define Q8_PR 32     /* rows per packed panel (two vectors) */
#define Q8_CC 128    /* columns whose corrections are kept at once */
#define Q8_NC 4      /* columns per micro tile */

static const unsigned char q8_zero_block[MOE_Q8_0_BYTES];

/* Lane i of the result holds lane (i / 8) of v: one value per block. */
MOE_INLINE __m512 q8_dup2_ps(__m128 v)
{
    const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v));
}

/* [d_w(block at p) x8, d_w(block at p + 34) x8] * dx2 (dx2 already duplicated);
 * `single`: only the first block exists. */
MOE_INLINE __m512 q8_scales2(const unsigned char *p, int single, __m512 dx2)
{
    uint16_t d0, d1 = 0;
    memcpy(&d0, p, 2);
    if (!single)
        memcpy(&d1, p + MOE_Q8_0_BYTES, 2);
    __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128((int)((uint32_t)d0 | (uint32_t)d1 << 16)));
    return _mm512_mul_ps(q8_dup2_ps(f), dx2);
}

/* Two blocks of weights (qs of the block at p and at p + 34) in one vector. */
MOE_INLINE __m512i q8_load2(const unsigned char *p, int single)
{
    __m256i lo = _mm256_loadu_si256((const __m256i *)(p + 2));
    if (single)
        return _mm512_zextsi256_si512(lo);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), _mm256_loadu_si256((const __m256i *)(p + 2 + MOE_Q8_0_BYTES)), 1);
}

/* VNNI: per lane, -128 * (sum of the lane's 4 activation bytes). */
MOE_VNNI MOE_INLINE __m512i q8_corr__avx512vnni(__m512i xv)
{
    __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), xv);
    return _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(s, 7));
}

/* Per lane: exact sum of the 4 products w * x. */
MOE_VNNI MOE_INLINE __m512i q8_dot__avx512vnni(__m512i wv, __m512i xv, __m512i corr)
{
    return _mm512_dpbusd_epi32(corr, _mm512_xor_si512(wv, _mm512_set1_epi8((char)0x80)), xv);
}

MOE_INLINE __m512i q8_corr__avx512(__m512i xv)
{
    (void)xv;
    return _mm512_setzero_si512();
}

MOE_INLINE __m512i q8_dot__avx512(__m512i wv, __m512i xv, __m512i corr)
{
    const __m512i xs = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(wv), _mm512_setzero_si512(), xv);
    const __m512i p16 = _mm512_maddubs_epi16(_mm512_abs_epi8(wv), xs);
    return _mm512_add_epi32(corr, _mm512_madd_epi16(p16, _mm512_set1_epi16(1)));
}

/* GEMM step: acc += 4-byte dot products of packed weights w (u = w ^ 0x80
 * for VNNI, raw w otherwise) with broadcast activations xb. */
MOE_VNNI MOE_INLINE __m512i q8_step__avx512vnni(__m512i acc, __m512i w, __m512i xb)
{
    return _mm512_dpbusd_epi32(acc, w, xb);
}

MOE_INLINE __m512i q8_step__avx512(__m512i acc, __m512i w, __m512i xb)
{
    const __m512i xs = _mm512_mask_sub_epi8(xb, _mm512_movepi8_mask(w), _mm512_setzero_si512(), xb);
    const __m512i p16 = _mm512_maddubs_epi16(_mm512_abs_epi8(w), xs);
    return _mm512_add_epi32(acc, _mm512_madd_epi16(p16, _mm512_set1_epi16(1)));
}

/* Pack rows [r, r + nr) (nr <= 32) of blocks [b0, b0 + nbk) into
 * pack[b][g][v][16 rows x 4 bytes] (g = group of 4 bytes in the block,
 * v = rows 16v..16v+15) and their scales into dws[b][32]; missing rows are
 * zero weights with scale 0.  xor80: store w ^ 0x80 (for vpdpbusd). */
static void q8_pack(unsigned char *pack, float *dws, const struct moe_mat *w, int64_t r, int nr, int64_t b0,
                    int nbk, int xor80)
{
    const __m512i flip = _mm512_set1_epi8(xor80 ? (char)0x80 : 0);
    for (int v = 0; v < 2; v++) {
        const unsigned char *rp[16];
        MOE_UNROLL
        for (int i = 0; i < 16; i++) {
            const int ri = v * 16 + i;
            rp[i] = ri < nr ? mat_row(w, r + ri) + b0 * MOE_Q8_0_BYTES : NULL;
        }
        for (int b = 0; b < nbk; b++) {
            const unsigned char *p[16];
            MOE_UNROLL
            for (int i = 0; i < 16; i++) {
                p[i] = rp[i] ? rp[i] + b * MOE_Q8_0_BYTES : q8_zero_block;
                uint16_t d;
                memcpy(&d, p[i], 2);
                dws[b * Q8_PR + v * 16 + i] = rp[i] ? _cvtsh_ss(d) : 0.0f;
            }
            /* z_i = [row i | row i+4] for i < 4, [row 4+i | row 8+i] for i >= 4 */
            __m512i z[8];
            MOE_UNROLL
            for (int i = 0; i < 8; i++) {
                const int lo = i < 4 ? i : i + 4, hi = lo + 4;
                z[i] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p[lo] + 2))),
                                          _mm256_loadu_si256((const __m256i *)(p[hi] + 2)), 1);
                z[i] = _mm512_xor_si512(z[i], flip);
            }
            __m512i t[8], u[8];
            MOE_UNROLL
            for (int h = 0; h < 2; h++) {
                t[4 * h + 0] = _mm512_unpacklo_epi32(z[4 * h + 0], z[4 * h + 1]);
                t[4 * h + 1] = _mm512_unpackhi_epi32(z[4 * h + 0], z[4 * h + 1]);
                t[4 * h + 2] = _mm512_unpacklo_epi32(z[4 * h + 2], z[4 * h + 3]);
                t[4 * h + 3] = _mm512_unpackhi_epi32(z[4 * h + 2], z[4 * h + 3]);
                u[4 * h + 0] = _mm512_unpacklo_epi64(t[4 * h + 0], t[4 * h + 2]); /* dword 0 (and 4) */
                u[4 * h + 1] = _mm512_unpackhi_epi64(t[4 * h + 0], t[4 * h + 2]); /* dword 1 (and 5) */
                u[4 * h + 2] = _mm512_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]); /* dword 2 (and 6) */
                u[4 * h + 3] = _mm512_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]); /* dword 3 (and 7) */
            }
            unsigned char *dst = pack + (size_t)b * 8 * 2 * 64 + (size_t)v * 64;
            MOE_UNROLL
            for (int g = 0; g < 4; g++) {
                _mm512_storeu_si512(dst + (size_t)g * 128,
                                    _mm512_shuffle_i32x4(u[g], u[4 + g], _MM_SHUFFLE(2, 0, 2, 0)));
                _mm512_storeu_si512(dst + (size_t)(g + 4) * 128,
                                    _mm512_shuffle_i32x4(u[g], u[4 + g], _MM_SHUFFLE(3, 1, 3, 1)));
            }
        }
    }
}

/* Generates the Q8_0 GEMV and GEMM of one variant (SUF: __avx512 or
 * __avx512vnni, ATTR: its target attribute). */
#define Q8_DEFINE(SUF, ATTR)                                                                                  \
    /* y[i] = row r+i . x for i < R. */                                                                      \
    ATTR MOE_INLINE void q8_gemv_rows##SUF(const struct moe_mat *w, int64_t r, const int R, const int8_t *xq, \
                                           const float *xd, float *y)                                        \
    {                                                                                                         \
        const int64_t nb = w->cols / 32;                                                                      \
        const unsigned char *rp[4];                                                                           \
        __m512 acc[4];                                                                                        \
        MOE_UNROLL                                                                                            \
        for (int i = 0; i < R; i++) {                                                                         \
            rp[i] = mat_row(w, r + i);                                                                        \
            acc[i] = _mm512_setzero_ps();                                                                     \
        }                                                                                                     \
        /* L2 prefetch of the next pass's rows (see gemv_f_rows); two lines                                   \
         * per 68-byte step cover every line of the row. */                                                   \
        const int64_t pfd = R * (int64_t)moe_wtype_row_bytes(MOE_W_Q8_0, w->cols);                            \
        for (int64_t b = 0; b < nb; b += 2) {                                                                 \
            const int single = b + 1 == nb;                                                                   \
            __m512i xv;                                                                                       \
            __m512 dx2;                                                                                       \
            if (!single) {                                                                                    \
                xv = _mm512_loadu_si512(xq + b * 32);                                                         \
                dx2 = q8_dup2_ps(_mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(xd + b))));               \
            } else {                                                                                          \
                xv = _mm512_maskz_loadu_epi8(0xFFFFFFFFull, xq + b * 32);                                     \
                dx2 = q8_dup2_ps(_mm_load_ss(xd + b));                                                        \
            }                                                                                                 \
            const __m512i corr = q8_corr##SUF(xv);                                                            \
            MOE_UNROLL                                                                                        \
            for (int i = 0; i < R; i++) {                                                                     \
                const unsigned char *p = rp[i] + b * MOE_Q8_0_BYTES;                                          \
                if (R > 1) {                                                                                  \
                    prefetch_l2(p, pfd);                                                                      \
                    prefetch_l2(p, pfd + 64);                                                                 \
                }                                                                                             \
                const __m512i lanes = q8_dot##SUF(q8_load2(p, single), xv, corr);                             \
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lanes), q8_scales2(p, single, dx2), acc[i]);      \
            }                                                                                                 \
        }                                                                                                     \
        if (R == 4) {                                                                                         \
            _mm_storeu_ps(y, hsum4(acc[0], acc[1], acc[2], acc[3]));                                          \
        } else {                                                                                              \
            MOE_UNROLL                                                                                        \
            for (int i = 0; i < R; i++)                                                                       \
                y[i] = _mm512_reduce_add_ps(acc[i]);                                                          \
        }                                                                                                     \
    }                                                                                                         \
                                                                                                              \
    ATTR static void moe_gemv_q8_0_f32##SUF(const struct moe_mat *w, int64_t row0, int64_t row1,              \
                                            const struct moe_acts *a, float *y, int64_t ldy)                  \
    {                                                                                                         \
        const int64_t nb = w->cols / 32;                                                                      \
        for (int j = 0; j < a->n; j++) {                                                                      \
            const int8_t *xq = a->q + j * a->k;                                                               \
            const float *xd = a->qd + j * nb;                                                                 \
            float *yj = y + j * ldy;                                                                          \
            int64_t r = row0;                                                                                 \
            for (; r + 4 <= row1; r += 4)                                                                     \
                q8_gemv_rows##SUF(w, r, 4, xq, xd, yj + r);                                                   \
            for (; r < row1; r++)                                                                             \
                q8_gemv_rows##SUF(w, r, 1, xq, xd, yj + r);                                                   \
        }                                                                                                     \
    }                                                                                                         \
                                                                                                              \
    /* y[c*ldy + i] (+)= packed rows i < nr (<= 32) . column c over nbk blocks, c < NC. */                   \
    ATTR MOE_INLINE void q8_tile##SUF(const unsigned char *pack, const float *dws, int nbk, const int8_t *xq, \
                                      int64_t ldq, const float *xd, int64_t ldd, const int32_t *corr,         \
                                      float *y, int64_t ldy, int nr, int first, const int NC)                 \
    {                                                                                                         \
        __m512 fa[2][Q8_NC];                                                                                  \
        MOE_UNROLL                                                                                            \
        for (int c = 0; c < NC; c++)                                                                          \
            fa[0][c] = fa[1][c] = _mm512_setzero_ps();                                                        \
        for (int b = 0; b < nbk; b++) {                                                                       \
            __m512i ia[2][Q8_NC];                                                                             \
            MOE_UNROLL                                                                                        \
            for (int c = 0; c < NC; c++)                                                                      \
                ia[0][c] = ia[1][c] = _mm512_set1_epi32(corr[c * Q8_KB + b]);                                 \
            const unsigned char *pb = pack + (size_t)b * 8 * 2 * 64;                                          \
            MOE_UNROLL                                                                                        \
            for (int g = 0; g < 8; g++) {                                                                     \
                const __m512i w0 = _mm512_loadu_si512(pb + g * 128);                                          \
                const __m512i w1 = _mm512_loadu_si512(pb + g * 128 + 64);                                     \
                MOE_UNROLL                                                                                    \
                for (int c = 0; c < NC; c++) {                                                                \
                    int32_t xi;                                                                               \
                    memcpy(&xi, xq + c * ldq + b * 32 + g * 4, 4);                                            \
                    const __m512i xb = _mm512_set1_epi32(xi);                                                 \
                    ia[0][c] = q8_step##SUF(ia[0][c], w0, xb);                                                \
                    ia[1][c] = q8_step##SUF(ia[1][c], w1, xb);                                                \
                }                                                                                             \
            }                                                                                                 \
            const __m512 d0 = _mm512_loadu_ps(dws + b * Q8_PR), d1 = _mm512_loadu_ps(dws + b * Q8_PR + 16);   \
            MOE_UNROLL                                                                                        \
            for (int c = 0; c < NC; c++) {                                                                    \
                const __m512 dx = _mm512_set1_ps(xd[c * ldd + b]);                                            \
                fa[0][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[0][c]), _mm512_mul_ps(d0, dx), fa[0][c]);    \
                fa[1][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[1][c]), _mm512_mul_ps(d1, dx), fa[1][c]);    \
            }                                                                                                 \
        }                                                                                                     \
        const __mmask16 m0 = mask16(nr < 16 ? nr : 16), m1 = mask16(nr > 16 ? nr - 16 : 0);                   \
        MOE_UNROLL                                                                                            \
        for (int c = 0; c < NC; c++) {                                                                        \
            float *yp = y + c * ldy;                                                                          \
            __m512 v0 = fa[0][c], v1 = fa[1][c];                                                              \
            if (!first) {                                                                                     \
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, yp));                                        \
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, yp + 16));                                   \
            }                                                                                                 \
            _mm512_mask_storeu_ps(yp, m0, v0);                                                                \
            _mm512_mask_storeu_ps(yp + 16, m1, v1);                                                           \
        }                                                                                                     \
    }                                                                                                         \
                                                                                                              \
    ATTR static void moe_gemm_q8_0_f32##SUF(const struct moe_mat *w, int64_t row0, int64_t row1,              \
                                            const struct moe_acts *a, float *y, int64_t ldy)                  \
    {                                                                                                         \
        _Alignas(64) unsigned char pack[Q8_KB * 8 * 2 * 64]; /* 16 KiB */                                     \
        _Alignas(64) float dws[Q8_KB * Q8_PR];                                                                \
        int32_t corr[Q8_CC * Q8_KB];                          /* 8 KiB */                                     \
        const int64_t k = w->cols, nb = k / 32;                                                               \
        const int n = a->n;                                                                                   \
        for (int64_t b0 = 0; b0 < nb; b0 += Q8_KB) {                                                          \
            const int nbk = (int)min64(Q8_KB, nb - b0);                                                       \
            const int first = b0 == 0;                                                                        \
            for (int c0 = 0; c0 < n; c0 += Q8_CC) {                                                           \
                const int cn = n - c0 < Q8_CC ? n - c0 : Q8_CC;                                               \
                for (int c = 0; c < cn; c++)                                                                  \
                    for (int b = 0; b < nbk; b++)                                                             \
                        corr[c * Q8_KB + b] = Q8_HAS_CORR##SUF ? -128 * a->qs[(c0 + c) * nb + b0 + b] : 0;    \
                for (int64_t r = row0; r < row1; r += Q8_PR) {                                                \
                    const int nr = (int)min64(Q8_PR, row1 - r);                                               \
                    q8_pack(pack, dws, w, r, nr, b0, nbk, Q8_HAS_CORR##SUF);                                  \
                    for (int j = 0; j < cn; j += Q8_NC) {                                                     \
                        const int nc = cn - j < Q8_NC ? cn - j : Q8_NC;                                       \
                        const int8_t *xq = a->q + (c0 + j) * k + b0 * 32;                                     \
                        const float *xd = a->qd + (c0 + j) * nb + b0;                                         \
                        const int32_t *cp = corr + j * Q8_KB;                                                 \
                        float *yp = y + (c0 + j) * ldy + r;                                                   \
                        switch (nc) {                                                                         \
                        case 4: q8_tile##SUF(pack, dws, nbk, xq, k, xd, nb, cp, yp, ldy, nr, first, 4); break;\
                        case 3: q8_tile##SUF(pack, dws, nbk, xq, k, xd, nb, cp, yp, ldy, nr, first, 3); break;\
                        case 2: q8_tile##SUF(pack, dws, nbk, xq, k, xd, nb, cp, yp, ldy, nr, first, 2); break;\
                        default: q8_tile##SUF(pack, dws, nbk, xq, k, xd, nb, cp, yp, ldy, nr, first, 1); break;\
                        }                                                                                     \
                    }                                                                                         \
                }                                                                                             \
            }                                                                                                 \
        }                                                                                                     \
    }

#define Q8_HAS_CORR__avx512 0
#define Q8_HAS_CORR__avx512vnni 1

Q8_DEFINE(__avx512, )
Q8_DEFINE(__avx512vnni, MOE_VNNI)

/* ------------------------------------------------------------------------
 * Activation quantizer (bytes identical to moe_quantize_act_q8_ref)
 * ------------------------------------------------------------------------ */

static void moe_quantize_act__avx512(int8_t *q, float *d, int32_t *s, const float *x, int64_t k)
{
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    for (int64_t b = 0; b < k / 32; b++) {
        const __m512 x0 = _mm512_loadu_ps(x + b * 32), x1 = _mm512_loadu_ps(x + b * 32 + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
        const float db = amax / 127.0f;
        const float id = db != 0.0f ? 1.0f / db : 0.0f;
        const __m512 vid = _mm512_set1_ps(id);
        /* vcvtps2dq rounds in the current mode (nearest even), as nearbyintf. */
        __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, vid));
        __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, vid));
        q0 = _mm512_min_epi32(_mm512_max_epi32(q0, lo), hi);
        q1 = _mm512_min_epi32(_mm512_max_epi32(q1, lo), hi);
        _mm_storeu_si128((__m128i *)(q + b * 32), _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(q + b * 32 + 16), _mm512_cvtepi32_epi8(q1));
        d[b] = db;
        s[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    }
}

/* ------------------------------------------------------------------------
 * Vector ops
 * ------------------------------------------------------------------------ */

static void moe_rmsnorm__avx512(float *y, const float *x, const float *w, int64_t n, float eps)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
        s0 = _mm512_fmadd_ps(a, a, s0);
        s1 = _mm512_fmadd_ps(b, b, s1);
    }
    for (; i < n; i += 16) {
        const __m512 a = _mm512_maskz_loadu_ps(mask16(min64(16, n - i)), x + i);
        s0 = _mm512_fmadd_ps(a, a, s0);
    }
    const float ss = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
    const __m512 inv = _mm512_set1_ps(1.0f / sqrtf(ss / (float)n + eps));
    for (i = 0; i < n; i += 16) {
        const __mmask16 m = mask16(min64(16, n - i));
        const __m512 a = _mm512_maskz_loadu_ps(m, x + i), g = _mm512_maskz_loadu_ps(m, w + i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_mul_ps(a, inv), g));
    }
}

static void moe_softmax__avx512(float *x, int64_t n)
{
    if (n <= 0)
        return;
    const __m512 ninf = _mm512_set1_ps(-__builtin_inff());
    __m512 mv = ninf;
    for (int64_t i = 0; i < n; i += 16)
        mv = _mm512_max_ps(mv, _mm512_mask_loadu_ps(ninf, mask16(min64(16, n - i)), x + i));
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = mask16(min64(16, n - i));
        const __m512 e = Sleef_expf16_u10avx512f(_mm512_sub_ps(_mm512_mask_loadu_ps(ninf, m, x + i), mx));
        _mm512_mask_storeu_ps(x + i, m, e);
        sum = _mm512_mask_add_ps(sum, m, sum, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = mask16(min64(16, n - i));
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
    }
}

/* 1 + exp(-x) */
MOE_INLINE __m512 one_plus_expneg(__m512 x)
{
    return _mm512_add_ps(_mm512_set1_ps(1.0f), Sleef_expf16_u10avx512f(_mm512_sub_ps(_mm512_setzero_ps(), x)));
}

static void moe_silu__avx512(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = mask16(min64(16, n - i));
        const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_div_ps(v, one_plus_expneg(v)));
    }
}

static void moe_sigmoid__avx512(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = mask16(min64(16, n - i));
        const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_div_ps(_mm512_set1_ps(1.0f), one_plus_expneg(v)));
    }
}

static void moe_silu_mul__avx512(float *y, const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = mask16(min64(16, n - i));
        const __m512 v = _mm512_maskz_loadu_ps(m, a + i), g = _mm512_maskz_loadu_ps(m, b + i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_div_ps(v, one_plus_expneg(v)), g));
    }
}

static void moe_rope_sincos__avx512(float *cos_out, float *sin_out, const float *inv_freq, int64_t half, float pos)
{
    const __m512 p = _mm512_set1_ps(pos);
    for (int64_t i = 0; i < half; i += 16) {
        const __mmask16 m = mask16(min64(16, half - i));
        const Sleef___m512_2 sc = Sleef_sincosf16_u10avx512f(_mm512_mul_ps(p, _mm512_maskz_loadu_ps(m, inv_freq + i)));
        _mm512_mask_storeu_ps(sin_out + i, m, sc.x);
        _mm512_mask_storeu_ps(cos_out + i, m, sc.y);
    }
}

/* Same roundings as the reference: a*c + b*(-s) and a*s + b*c, each
 * product rounded, then one addition (no FMA). */
static void moe_rope_apply__avx512(float *x, int64_t n_vec, int64_t stride, const float *cos_in,
                                   const float *sin_in, int64_t half)
{
    const __m512i dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    const __m512 neg_even = _mm512_castsi512_ps(_mm512_set_epi32(0, (int)0x80000000, 0, (int)0x80000000, 0,
                                                                  (int)0x80000000, 0, (int)0x80000000, 0,
                                                                  (int)0x80000000, 0, (int)0x80000000, 0,
                                                                  (int)0x80000000, 0, (int)0x80000000));
    for (int64_t i = 0; i < half; i += 8) {
        const int64_t np = min64(8, half - i);
        const __mmask8 m8 = (__mmask8)((1u << np) - 1u);
        const __mmask16 m = mask16(2 * np);
        const __m512 cc = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_maskz_loadu_ps(m8, cos_in + i)));
        const __m512 ss = _mm512_xor_ps(
            _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_maskz_loadu_ps(m8, sin_in + i))), neg_even);
        for (int64_t v = 0; v < n_vec; v++) {
            float *p = x + v * stride + 2 * i;
            const __m512 xv = _mm512_maskz_loadu_ps(m, p);
            const __m512 sw = _mm512_permute_ps(xv, 0xB1); /* (b, a) pairs */
            _mm512_mask_storeu_ps(p, m, _mm512_add_ps(_mm512_mul_ps(xv, cc), _mm512_mul_ps(sw, ss)));
        }
    }
}

/* ------------------------------------------------------------------------
 * Tables
 * ------------------------------------------------------------------------ */


/* ------------------------------------------------------------------------
 * Transposed product y = x^T W (simd/matmul_t.h over 16-lane vectors; the
 * same for both AVX-512 tables)
 * ------------------------------------------------------------------------ */
#define MT_NAME(x) moe_mt_##x##__avx512
#define MT_LANES 16
typedef __m512 mt_vec;
#define mt_load(p) _mm512_loadu_ps(p)
#define mt_store(p, v) _mm512_storeu_ps((p), (v))
#define mt_set1(x) _mm512_set1_ps(x)
#define mt_fma(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define MT_DEQ_F16(dst, src, n) \
    for (int64_t i_ = 0; i_ < (n); i_ += 16) \
        _mm512_storeu_ps((dst) + i_, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)((src) + 2 * i_))))
#define MT_DEQ_BF16(dst, src, n) \
    for (int64_t i_ = 0; i_ < (n); i_ += 16) \
        _mm512_storeu_ps((dst) + i_, _mm512_castsi512_ps(_mm512_slli_epi32( \
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)((src) + 2 * i_))), 16)))
#define mt_fp8(p) fp8x16_to_f32(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define mt_mul(a, b) _mm512_mul_ps((a), (b))
#define mt_q8(q) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(q))))
#define MT_F16(h) _cvtsh_ss(h)
#include "matmul_t.h"

const struct moe_kernels moe_kernels_avx512 = {
    .name = "avx512",
    .family = "avx512",
    .gemv = {moe_gemv_f32_f32__avx512, moe_gemv_f16_f32__avx512, moe_gemv_bf16_f32__avx512,
             moe_gemv_fp8_f32__avx512, moe_gemv_q8_0_f32__avx512},
    .gemm = {moe_gemm_f32_f32__avx512, moe_gemm_f16_f32__avx512, moe_gemm_bf16_f32__avx512,
             moe_gemm_fp8_f32__avx512, moe_gemm_q8_0_f32__avx512},
    .gemm_t = {moe_mt_gemm_t__avx512, moe_mt_gemm_t__avx512, moe_mt_gemm_t__avx512, moe_mt_gemm_t__avx512, moe_mt_gemm_t__avx512},
    .quantize_act = moe_quantize_act__avx512,
    .rmsnorm = moe_rmsnorm__avx512,
    .softmax = moe_softmax__avx512,
    .silu = moe_silu__avx512,
    .sigmoid = moe_sigmoid__avx512,
    .silu_mul = moe_silu_mul__avx512,
    .rope_sincos = moe_rope_sincos__avx512,
    .rope_apply = moe_rope_apply__avx512,
};

const struct moe_kernels moe_kernels_avx512_vnni = {
    .name = "avx512_vnni",
    .family = "avx512",
    .gemv = {moe_gemv_f32_f32__avx512, moe_gemv_f16_f32__avx512, moe_gemv_bf16_f32__avx512,
             moe_gemv_fp8_f32__avx512, moe_gemv_q8_0_f32__avx512vnni},
    .gemm = {moe_gemm_f32_f32__avx512, moe_gemm_f16_f32__avx512, moe_gemm_bf16_f32__avx512,
             moe_gemm_fp8_f32__avx512, moe_gemm_q8_0_f32__avx512vnni},
    .gemm_t = {moe_mt_gemm_t__avx512, moe_mt_gemm_t__avx512, moe_mt_gemm_t__avx512, moe_mt_gemm_t__avx512, moe_mt_gemm_t__avx512},
    .quantize_act = moe_quantize_act__avx512,
    .rmsnorm = moe_rmsnorm__avx512,
    .softmax = moe_softmax__avx512,
    .silu = moe_silu__avx512,
    .sigmoid = moe_sigmoid__avx512,
    .silu_mul = moe_silu_mul__avx512,
    .rope_sincos = moe_rope_sincos__avx512,
    .rope_apply = moe_rope_apply__avx512,
};
