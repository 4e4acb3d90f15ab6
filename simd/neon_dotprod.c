/*
 * simd/neon_dotprod.c — the ARMv8.2 DotProd table (Neoverse N1/V1/V2,
 * Apple M1+, Cortex-A55/A76 and later): the Q8_0 kernels use SDOT
 * (vdotq_s32, 16 int8 products into four int32 lanes per instruction);
 * every other kernel is the baseline one from simd/neon.c.
 * Built with -march=armv8.2-a+dotprod; chosen only when cpuinfo reports
 * the dot-product extension (simd/dispatch.c).
 *
 * GEMV (memory bound): four rows x four blocks per step share the
 * activation loads; per 32-value block two SDOTs give four int32 partials,
 * two levels of ADDP fold four blocks' partials into one vector of exact
 * block sums, converted once and scaled by fp16(d_w) * d_x.
 * GEMM: K blocks of 2048; each 4-row strip is repacked once per K block
 * (8 KiB on the stack) so that one SDOT-by-element computes four rows x
 * four values of one column; a 4x8 tile then costs 8 SDOTs + 4 ops per
 * column and block (no horizontal reductions), 8 weight loads per block.
 */
#if defined(__aarch64__)

#include "neon_internal.h"

#include <arm_neon.h>
#include <string.h>

#if !defined(__ARM_FEATURE_DOTPROD)
#error "simd/neon_dotprod.c must be compiled with -march=armv8.2-a+dotprod"
#endif

#define MOE_INLINE static inline __attribute__((always_inline))
/* Fully unroll the short constant-count loops over rows/columns/blocks so
 * their vector arrays live in registers (gcc -O2 would not). */
#define MOE_UNROLL _Pragma("GCC unroll 8")

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Block sum of one 32-value block as four int32 lanes (exact). */
MOE_INLINE int32x4_t dot32(int8x16_t w0, int8x16_t w1, int8x16_t x0, int8x16_t x1)
{
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, x0), w1, x1);
}

/* ---- GEMV ---- */

#include "neon_q8_gemv.h"

static void moe_gemv_q8_0_f32__neon_dotprod(const struct moe_mat *w, int64_t row0, int64_t row1,
                                            const struct moe_acts *a, float *y, int64_t ldy)
{
    gemv_q8_0(w, row0, row1, a, y, ldy);
}

/* ---- GEMM ---- */

#define Q8_KB 64   /* K block in Q8_0 blocks (2048 values): the strip's rows stay in L1 */
#define Q8_NR 8   /* columns per register tile */

/* Repack blocks [0, kb) of four rows (p[i]: row i's first block) for
 * SDOT-by-element: wp[b*128 + g*16 + i*4 + t] = row i, value 4g + t of
 * block b (a 4x4 transpose of 32-bit groups), and dwp[b*4 + i] = row i's
 * scale.  One SDOT then yields four rows' partial sums for one column. */
static void q8_pack4(const uint8_t *const *p, int64_t kb, int8_t *wp, float *dwp)
{
    for (int64_t b = 0; b < kb; b++) {
        const size_t o = (size_t)b * MOE_Q8_0_BYTES + 2;
        for (int h = 0; h < 2; h++) {
            const uint32x4_t r0 = vreinterpretq_u32_u8(vld1q_u8(p[0] + o + 16 * h));
            const uint32x4_t r1 = vreinterpretq_u32_u8(vld1q_u8(p[1] + o + 16 * h));
            const uint32x4_t r2 = vreinterpretq_u32_u8(vld1q_u8(p[2] + o + 16 * h));
            const uint32x4_t r3 = vreinterpretq_u32_u8(vld1q_u8(p[3] + o + 16 * h));
            const uint64x2_t t0 = vreinterpretq_u64_u32(vtrn1q_u32(r0, r1));   /* r0g0 r1g0 r0g2 r1g2 */
            const uint64x2_t t1 = vreinterpretq_u64_u32(vtrn2q_u32(r0, r1));   /* r0g1 r1g1 r0g3 r1g3 */
            const uint64x2_t t2 = vreinterpretq_u64_u32(vtrn1q_u32(r2, r3));
            const uint64x2_t t3 = vreinterpretq_u64_u32(vtrn2q_u32(r2, r3));
            int8_t *d = wp + b * 128 + h * 64;
            vst1q_s8(d, vreinterpretq_s8_u64(vtrn1q_u64(t0, t2)));
            vst1q_s8(d + 16, vreinterpretq_s8_u64(vtrn1q_u64(t1, t3)));
            vst1q_s8(d + 32, vreinterpretq_s8_u64(vtrn2q_u64(t0, t2)));
            vst1q_s8(d + 48, vreinterpretq_s8_u64(vtrn2q_u64(t1, t3)));
        }
        uint16_t hs[4];
        for (int i = 0; i < 4; i++)
            memcpy(&hs[i], p[i] + b * MOE_Q8_0_BYTES, 2);
        vst1q_f32(dwp + b * 4, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(hs))));
    }
}

/* 4 rows (packed by q8_pack4) x NR columns over kb blocks; column j's int8
 * activations and scales start at xq + j*ldq and xd + j*ldd.  Sets (first
 * K block) or increments y[j*ldy + i] for i < mrv. */
MOE_INLINE void gemm_q8_tile(const int NR, const int8_t *wp, const float *dwp, int64_t kb, const int8_t *xq,
                             int64_t ldq, const float *xd, int64_t ldd, float *y, int64_t ldy, int mrv, int first)
{
    float32x4_t facc[Q8_NR];
    MOE_UNROLL
    for (int j = 0; j < NR; j++)
        facc[j] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < kb; b++) {
        const int8_t *wb = wp + b * 128;
        const int8x16_t g0 = vld1q_s8(wb), g1 = vld1q_s8(wb + 16), g2 = vld1q_s8(wb + 32);
        const int8x16_t g3 = vld1q_s8(wb + 48), g4 = vld1q_s8(wb + 64), g5 = vld1q_s8(wb + 80);
        const int8x16_t g6 = vld1q_s8(wb + 96), g7 = vld1q_s8(wb + 112);
        const float32x4_t dw = vld1q_f32(dwp + b * 4);
        MOE_UNROLL
        for (int j = 0; j < NR; j++) {
            const int8_t *xj = xq + j * ldq + b * 32;
            const int8x16_t x0 = vld1q_s8(xj), x1 = vld1q_s8(xj + 16);
            /* two chains of four SDOTs; lanes = the four rows */
            int32x4_t e = vdotq_laneq_s32(vdupq_n_s32(0), g0, x0, 0);
            int32x4_t o = vdotq_laneq_s32(vdupq_n_s32(0), g1, x0, 1);
            e = vdotq_laneq_s32(e, g2, x0, 2);
            o = vdotq_laneq_s32(o, g3, x0, 3);
            e = vdotq_laneq_s32(e, g4, x1, 0);
            o = vdotq_laneq_s32(o, g5, x1, 1);
            e = vdotq_laneq_s32(e, g6, x1, 2);
            o = vdotq_laneq_s32(o, g7, x1, 3);
            const int32x4_t isum = vaddq_s32(e, o);   /* exact block sums of the four rows */
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

typedef void (*gemm_q8_tile_fn)(const int8_t *, const float *, int64_t, const int8_t *, int64_t, const float *,
                                int64_t, float *, int64_t, int, int);
#define MOE_DEF_Q8_TILE(NR)                                                                                   \
    static void gemm_q8_tile_4x##NR(const int8_t *wp, const float *dwp, int64_t kb, const int8_t *xq,         \
                                    int64_t ldq, const float *xd, int64_t ldd, float *y, int64_t ldy, int mrv, \
                                    int first)                                                                \
    {                                                                                                         \
        gemm_q8_tile(NR, wp, dwp, kb, xq, ldq, xd, ldd, y, ldy, mrv, first);                                  \
    }
MOE_DEF_Q8_TILE(1)
MOE_DEF_Q8_TILE(2)
MOE_DEF_Q8_TILE(3)
MOE_DEF_Q8_TILE(4)
MOE_DEF_Q8_TILE(5)
MOE_DEF_Q8_TILE(6)
MOE_DEF_Q8_TILE(7)
MOE_DEF_Q8_TILE(8)
#undef MOE_DEF_Q8_TILE
static const gemm_q8_tile_fn q8_tiles[9] = {NULL, gemm_q8_tile_4x1, gemm_q8_tile_4x2, gemm_q8_tile_4x3,
                                            gemm_q8_tile_4x4, gemm_q8_tile_4x5, gemm_q8_tile_4x6,
                                            gemm_q8_tile_4x7, gemm_q8_tile_4x8};

static void moe_gemm_q8_0_f32__neon_dotprod(const struct moe_mat *w, int64_t row0, int64_t row1,
                                            const struct moe_acts *a, float *y, int64_t ldy)
{
    const int64_t nb = w->cols / 32;
    const size_t rb = (size_t)nb * MOE_Q8_0_BYTES;
    const int n = a->n;
    int8_t wp[Q8_KB * 128] __attribute__((aligned(64)));   /* 8 KiB packed strip */
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
            q8_pack4(p, kb, wp, dwp);
            for (int j = 0; j < n; j += Q8_NR) {
                const int nr = n - j < Q8_NR ? n - j : Q8_NR;
                q8_tiles[nr](wp, dwp, kb, a->q + j * a->k + b0 * 32, a->k, a->qd + j * nb + b0, nb, y + j * ldy + r,
                             ldy, mrv, b0 == 0);
            }
        }
    }
}

const struct moe_kernels moe_kernels_neon_dotprod = {
    .name = "neon_dotprod",
    .family = "neon",
    .gemv = {moe_gemv_f32_f32__neon, moe_gemv_f16_f32__neon, moe_gemv_bf16_f32__neon, moe_gemv_fp8_f32__neon,
             moe_gemv_q8_0_f32__neon_dotprod},
    .gemm = {moe_gemm_f32_f32__neon, moe_gemm_f16_f32__neon, moe_gemm_bf16_f32__neon, moe_gemm_fp8_f32__neon,
             moe_gemm_q8_0_f32__neon_dotprod},
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
typedef int moe_neon_dotprod_unused;
#endif
