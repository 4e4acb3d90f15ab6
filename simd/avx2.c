/*
 * simd/avx2.c — the AVX2 + FMA + F16C kernel table (Haswell and later).
 *
 * Built with -mavx2 -mfma -mf16c only: no AVX-512, no VNNI of any kind, so
 * this table runs on every x86-64 CPU since Haswell / Zen 1.
 *
 *  - GEMV (one activation column, decode): one weight row at a time (a
 *    single sequential stream, which the prefetchers serve best), several
 *    accumulators, weights decoded in registers and read once; an L2
 *    software prefetch when the FP32 activation row is too big for L1.
 *    FP8 e4m3 is turned into FP32 bits with shifts and a mask (see the FP8
 *    GEMV section); Q8_0 uses maddubs with the sign trick (|w| as the
 *    unsigned operand, x with w's sign as the signed one), exact int32 sums
 *    per 32-block.
 *  - GEMM (many columns, prefill): the weight strip of 16 rows x KC is
 *    decoded to FP32 once into a stack panel (FP8 through F16C: the 7 low
 *    bits shifted into an fp16, the 2^8 bias difference folded into the
 *    block scale), transposed [k][16], and a 16x6 register tile (12
 *    accumulators of the 16 ymm) is swept over all column tiles; K is
 *    blocked so the activation panel (n x KC floats) stays in L2.  Q8_0 GEMM keeps int8: a 2-row x 4-column tile of per-block
 *    int32 sums, K blocked by 1024.
 *  - Vector ops: SLEEF's AVX2 exp and sincos; tails go through a zero-padded
 *    8-float temporary, never past the caller's arrays.
 */
#include "kernels.h"

#include <immintrin.h>
#include <math.h>
#include <sleef.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define MOE_INLINE static inline __attribute__((always_inline))
#else
#define MOE_INLINE static inline
#endif

/* Software prefetch (into L2) of the weight stream, GEMV_PF bytes ahead,
 * for the GEMVs whose FP32 activation row is large (K > GEMV_PF_MIN_K):
 * x then no longer fits L1 beside the streaming weights, and the hardware
 * prefetcher alone fell to ~40% of the read bandwidth here (Zen 4, K = 7168);
 * with it, ~65-70%.  For short rows it cost a little, so it is off there. */
#define GEMV_PF 4096
#define GEMV_PF_MIN_K 4096

/* Prefetch into L2 the line GEMV_PF bytes after p.  The address is formed
 * in integers: it may lie past the end of the matrix (prefetches never
 * fault, and no out-of-object pointer is ever formed). */
MOE_INLINE void prefetch_ahead(const unsigned char *p)
{
    _mm_prefetch((const char *)((uintptr_t)p + GEMV_PF), _MM_HINT_T1);
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static inline const unsigned char *row_at(const struct moe_mat *w, int64_t r)
{
    return (const unsigned char *)w->data + (size_t)r * moe_wtype_row_bytes(w->type, w->cols);
}

/* FP8 block-scale row of weight row r. */
static inline const float *fp8_scale_row(const struct moe_mat *w, int64_t r)
{
    return w->scale + (r / MOE_FP8_BLOCK) * moe_fp8_scale_cols(w->cols);
}

MOE_INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Lane i of the result = sum of the 8 lanes of the i-th argument. */
MOE_INLINE __m128 hsum4x8(__m256 a, __m256 b, __m256 c, __m256 d)
{
    __m256 ab = _mm256_hadd_ps(a, b);
    __m256 cd = _mm256_hadd_ps(c, d);
    __m256 abcd = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

/* ------------------------------------------------------------------------
 * Weight decoding: 8 consecutive weights of a row to 8 FP32 lanes.
 * ------------------------------------------------------------------------ */

/* e4m3 -> fp16 bits (b & 0x7F) << 7 | (b & 0x80) << 8, i.e. the byte put in
 * the high half of a 16-bit lane, shifted right arithmetically by one (the
 * sign lands in bits 15 and 14) and bit 14 cleared.  The fp16 value is
 * e4m3 * 2^-8 exactly, subnormals included (F16C converts fp16 subnormals
 * exactly); callers multiply the block scale by 256.  The NaN codes
 * 0x7F/0xFF (absent from real weights) decode to +-480 instead of NaN. */
MOE_INLINE __m128i fp8_to_f16bits_x8(__m128i hi8)   /* 8 lanes holding byte << 8 */
{
    return _mm_and_si128(_mm_srai_epi16(hi8, 1), _mm_set1_epi16((short)0xBFFF));
}

/* 8 e4m3 bytes at p -> 8 floats (times 2^-8). Reads exactly 8 bytes. */
MOE_INLINE __m256 fp8_decode8(const unsigned char *p)
{
    __m128i u = _mm_loadl_epi64((const __m128i *)(const void *)p);
    __m128i h = _mm_unpacklo_epi8(_mm_setzero_si128(), u);
    return _mm256_cvtph_ps(fp8_to_f16bits_x8(h));
}

/* Element size in bytes of the FP32-convertible types. */
static inline int elem_bytes(enum moe_wtype t)
{
    return t == MOE_W_F32 ? 4 : t == MOE_W_FP8 ? 1 : 2;
}

/* 8 weights of type t at p (FP8: times 2^-8).  t is a constant after
 * inlining. */
MOE_INLINE __m256 decode8(enum moe_wtype t, const unsigned char *p)
{
    switch (t) {
    case MOE_W_F32:
        return _mm256_loadu_ps((const float *)(const void *)p);
    case MOE_W_F16:
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
    case MOE_W_BF16:
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)p)), 16));
    default:
        return fp8_decode8(p);
    }
}

/* Like decode8 for cnt < 8 weights: the rest are zero.  Never reads past
 * p + cnt elements. */
static __m256 decode8_partial(enum moe_wtype t, const unsigned char *p, int cnt)
{
    _Alignas(32) unsigned char buf[32] = {0};
    memcpy(buf, p, (size_t)cnt * (size_t)elem_bytes(t));
    return decode8(t, buf);
}

/* One weight of type t (F32/F16/BF16) to FP32. */
MOE_INLINE float decode1(enum moe_wtype t, const unsigned char *p)
{
    if (t == MOE_W_F32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p, 2);
    if (t == MOE_W_F16)
        return _cvtsh_ss(h);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ------------------------------------------------------------------------
 * GEMV.  One weight row at a time, so the weights are read as a single
 * sequential stream: on Zen 4 interleaving 4 rows (4 streams) to share the
 * activation loads measured 1.3-2.3x slower out of cache than one stream
 * (the hardware prefetcher copes worse), while x is re-read from L1/L2 for
 * free.  Several accumulators per row hide the FMA latency.
 * ------------------------------------------------------------------------ */

/* F32 / F16 / BF16 row dotted with x. */
MOE_INLINE float dot1_plain(enum moe_wtype t, const unsigned char *w, const float *x, int64_t k, int pf)
{
    const size_t es = (size_t)elem_bytes(t);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
        if (pf) {
            prefetch_ahead(w + (size_t)i * es);
            if (es == 4)
                prefetch_ahead(w + (size_t)i * es + 64);
        }
        a0 = _mm256_fmadd_ps(decode8(t, w + (size_t)i * es), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(decode8(t, w + (size_t)(i + 8) * es), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(decode8(t, w + (size_t)(i + 16) * es), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(decode8(t, w + (size_t)(i + 24) * es), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= k; i += 8)
        a0 = _mm256_fmadd_ps(decode8(t, w + (size_t)i * es), _mm256_loadu_ps(x + i), a0);
    float s = 0.0f;
    for (; i < k; i++)
        s += decode1(t, w + (size_t)i * es) * x[i];
    return hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))) + s;
}

MOE_INLINE void gemv_plain(enum moe_wtype t, const struct moe_mat *w, int64_t row0, int64_t row1,
                           const struct moe_acts *a, float *y, int64_t ldy)
{
    const int pf = w->cols > GEMV_PF_MIN_K;
    for (int j = 0; j < a->n; j++) {
        const float *x = a->x + (size_t)j * (size_t)a->ldx;
        float *yj = y + (size_t)j * (size_t)ldy;
        for (int64_t r = row0; r < row1; r++)
            yj[r] = pf ? dot1_plain(t, row_at(w, r), x, w->cols, 1) : dot1_plain(t, row_at(w, r), x, w->cols, 0);
    }
}

static void moe_gemv_f32_f32__avx2(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                                   float *y, int64_t ldy)
{
    gemv_plain(MOE_W_F32, w, row0, row1, a, y, ldy);
}

static void moe_gemv_f16_f32__avx2(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                                   float *y, int64_t ldy)
{
    gemv_plain(MOE_W_F16, w, row0, row1, a, y, ldy);
}

static void moe_gemv_bf16_f32__avx2(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                                    float *y, int64_t ldy)
{
    gemv_plain(MOE_W_BF16, w, row0, row1, a, y, ldy);
}

/* ------------------------------------------------------------------------
 * GEMV: FP8 e4m3 with 128x128 block scales.
 *
 * The fast decode builds FP32 bits directly, with integer ops only (no
 * shuffles, which is what limits the F16C route on Zen 4): each 32-bit lane
 * of a 32-byte load holds 4 weights; weight j of the lane is shifted to the
 * top (<< 8*(3-j)), shifted right arithmetically by 4 (sign to bit 31, the
 * 7 magnitude bits to 26..20) and masked with 0x87F00000.  As an FP32 that
 * is exactly e4m3 * 2^-120 (subnormal codes become FP32 subnormals; with
 * DAZ set they would read as zero, moecpu never sets it).  The NaN codes
 * 0x7F/0xFF, absent from real weights, decode to +-480.  Vector j then holds
 * weights 4l+j (lane l), so x is copied once per call into a stack buffer in
 * that order and scaled by 2^64 (keeping the products normal); per 128-wide
 * block the FP32 partial sum is multiplied by scale * 2^56 once.
 * ------------------------------------------------------------------------ */

#define FP8_XCHUNK 8192   /* floats of reordered x on the stack (32 KiB), multiple of 128 */

MOE_INLINE void fp8_decode32_perm(const unsigned char *p, __m256 *d0, __m256 *d1, __m256 *d2, __m256 *d3)
{
    const __m256i u = _mm256_loadu_si256((const __m256i *)(const void *)p);
    const __m256i m = _mm256_set1_epi32((int)0x87F00000u);
    *d3 = _mm256_castsi256_ps(_mm256_and_si256(_mm256_srai_epi32(u, 4), m));
    *d2 = _mm256_castsi256_ps(_mm256_and_si256(_mm256_srai_epi32(_mm256_slli_epi32(u, 8), 4), m));
    *d1 = _mm256_castsi256_ps(_mm256_and_si256(_mm256_srai_epi32(_mm256_slli_epi32(u, 16), 4), m));
    *d0 = _mm256_castsi256_ps(_mm256_and_si256(_mm256_srai_epi32(_mm256_slli_epi32(u, 24), 4), m));
}

/* One row (w at the chunk start) dotted with the reordered, scaled xs over
 * kc weights; block scales sc[0..). */
MOE_INLINE float dot1_fp8(const unsigned char *w, const float *sc, const float *xs, int64_t kc, int pf)
{
    __m256 tot = _mm256_setzero_ps();
    for (int64_t k0 = 0, kb = 0; k0 < kc; k0 += MOE_FP8_BLOCK, kb++) {
        const int64_t k1 = min64(k0 + MOE_FP8_BLOCK, kc);
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        __m256 d0, d1, d2, d3;
#define MOE_FP8_GROUP(rp, x, c0, c1, c2, c3)                        \
    fp8_decode32_perm(rp, &d0, &d1, &d2, &d3);                      \
    c0 = _mm256_fmadd_ps(d0, _mm256_load_ps(x), c0);                \
    c1 = _mm256_fmadd_ps(d1, _mm256_load_ps((x) + 8), c1);          \
    c2 = _mm256_fmadd_ps(d2, _mm256_load_ps((x) + 16), c2);         \
    c3 = _mm256_fmadd_ps(d3, _mm256_load_ps((x) + 24), c3);
        int64_t i = k0;
        for (; i + 64 <= k1; i += 64) {
            if (pf)
                prefetch_ahead(w + i);
            MOE_FP8_GROUP(w + i, xs + i, a0, a1, a2, a3)
            MOE_FP8_GROUP(w + i + 32, xs + i + 32, b0, b1, b2, b3)
        }
        if (i + 32 <= k1) {
            MOE_FP8_GROUP(w + i, xs + i, a0, a1, a2, a3)
            i += 32;
        }
        if (i < k1) {   /* last partial group: a zero-padded copy (xs is zero there) */
            _Alignas(32) unsigned char pad[32] = {0};
            memcpy(pad, w + i, (size_t)(k1 - i));
            MOE_FP8_GROUP(pad, xs + i, b0, b1, b2, b3)
        }
#undef MOE_FP8_GROUP
        const __m256 part = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, b0), _mm256_add_ps(a1, b1)),
                                          _mm256_add_ps(_mm256_add_ps(a2, b2), _mm256_add_ps(a3, b3)));
        /* the block scale, once per block; 2^56 undoes 2^-120 (w) * 2^64 (x) */
        tot = _mm256_fmadd_ps(part, _mm256_mul_ps(_mm256_broadcast_ss(sc + kb), _mm256_set1_ps(0x1p56f)), tot);
    }
    return hsum8(tot);
}

/* xs[32g + 8j + l] = x[32g + 4l + j] * 2^64 for 32g + 4l + j < kc, else 0. */
static void fp8_reorder_x(float *xs, const float *x, int64_t kc)
{
    const __m256 f = _mm256_set1_ps(0x1p64f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t g = 0; g * 32 < kc; g++) {
        const float *src = x + g * 32;
        _Alignas(32) float pad[32];
        if (g * 32 + 32 > kc) {
            memset(pad, 0, sizeof pad);
            memcpy(pad, src, (size_t)(kc - g * 32) * 4);
            src = pad;
        }
        const __m256 a = _mm256_loadu_ps(src), b = _mm256_loadu_ps(src + 8);
        const __m256 c = _mm256_loadu_ps(src + 16), d = _mm256_loadu_ps(src + 24);
        /* per 128-bit lane, a 4x4 transpose of rows (a, b, c, d) */
        const __m256 t0 = _mm256_unpacklo_ps(a, b), t1 = _mm256_unpackhi_ps(a, b);
        const __m256 t2 = _mm256_unpacklo_ps(c, d), t3 = _mm256_unpackhi_ps(c, d);
        /* u0 = x[0, 8, 16, 24 | 4, 12, 20, 28], u1 = x[1, 9, ...], ... */
        const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        float *dst = xs + g * 32;
        _mm256_store_ps(dst, _mm256_mul_ps(_mm256_permutevar8x32_ps(u0, perm), f));
        _mm256_store_ps(dst + 8, _mm256_mul_ps(_mm256_permutevar8x32_ps(u1, perm), f));
        _mm256_store_ps(dst + 16, _mm256_mul_ps(_mm256_permutevar8x32_ps(u2, perm), f));
        _mm256_store_ps(dst + 24, _mm256_mul_ps(_mm256_permutevar8x32_ps(u3, perm), f));
    }
}

static void moe_gemv_fp8_f32__avx2(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                                   float *y, int64_t ldy)
{
    _Alignas(32) float xs[FP8_XCHUNK];
    const int64_t k = w->cols;
    for (int j = 0; j < a->n; j++) {
        const float *x = a->x + (size_t)j * (size_t)a->ldx;
        float *yj = y + (size_t)j * (size_t)ldy;
        for (int64_t k0 = 0; k0 < k; k0 += FP8_XCHUNK) {
            const int64_t kc = min64(FP8_XCHUNK, k - k0);
            fp8_reorder_x(xs, x + k0, kc);
            for (int64_t r = row0; r < row1; r++) {
                const unsigned char *wr = row_at(w, r) + k0;
                const float *sc = fp8_scale_row(w, r) + k0 / MOE_FP8_BLOCK;
                const float s = kc > GEMV_PF_MIN_K ? dot1_fp8(wr, sc, xs, kc, 1) : dot1_fp8(wr, sc, xs, kc, 0);
                yj[r] = k0 ? yj[r] + s : s;
            }
        }
    }
}

/* ------------------------------------------------------------------------
 * Q8_0: int8 x int8 per 32-block with maddubs.  maddubs multiplies an
 * unsigned by a signed byte, so it gets |w| and x carrying w's sign
 * (sign_epi8); |w| <= 128, |x| <= 127 keeps each pair sum <= 32512, below
 * int16 saturation, so block sums are exact.
 * ------------------------------------------------------------------------ */

MOE_INLINE __m256i q8_dot32(__m256i w, __m256i aw, __m256i x)
{
    const __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

MOE_INLINE float q8_scale(const unsigned char *blk)
{
    uint16_t h;
    memcpy(&h, blk, 2);
    return _cvtsh_ss(h);
}

/* The fp16 scale at blk, converted and broadcast to 8 lanes. */
MOE_INLINE __m256 q8_scale8(const unsigned char *blk)
{
    uint16_t h;
    memcpy(&h, blk, 2);
    return _mm256_cvtph_ps(_mm_set1_epi16((short)h));
}

MOE_INLINE __m256i loadu256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* One Q8_0 row (nb blocks at w) dotted with the int8 activations q, qd. */
MOE_INLINE float dot1_q8(const unsigned char *w, const int8_t *q, const float *qd, int64_t nb)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
#define MOE_Q8_BLOCK(b, acc)                                                                              \
    {                                                                                                     \
        const unsigned char *blk = w + (size_t)(b) * MOE_Q8_0_BYTES;                                      \
        const __m256i wv = loadu256(blk + 2);                                                             \
        const __m256i s = q8_dot32(wv, _mm256_abs_epi8(wv), loadu256(q + (b) * 32));                      \
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(q8_scale8(blk), _mm256_broadcast_ss(qd + (b))), acc); \
    }
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4) {
        MOE_Q8_BLOCK(b, a0)
        MOE_Q8_BLOCK(b + 1, a1)
        MOE_Q8_BLOCK(b + 2, a2)
        MOE_Q8_BLOCK(b + 3, a3)
    }
    for (; b < nb; b++)
        MOE_Q8_BLOCK(b, a0)
#undef MOE_Q8_BLOCK
    return hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

static void moe_gemv_q8_0_f32__avx2(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                                    float *y, int64_t ldy)
{
    const int64_t nb = w->cols / 32;
    for (int j = 0; j < a->n; j++) {
        const int8_t *q = a->q + (size_t)j * (size_t)a->k;
        const float *qd = a->qd + (size_t)j * (size_t)nb;
        float *yj = y + (size_t)j * (size_t)ldy;
        for (int64_t r = row0; r < row1; r++)
            yj[r] = dot1_q8(row_at(w, r), q, qd, nb);
    }
}

/* ------------------------------------------------------------------------
 * GEMM: F32 / F16 / BF16 / FP8 through a decoded FP32 panel.
 *
 * For each chunk of GEMM_MC rows, each K block of GEMM_KC, each strip of 16
 * rows: decode the strip to FP32, transposed to [k][16] (8x8 transposes),
 * then for every tile of 6 columns run the 16x6 micro-kernel (12 ymm
 * accumulators, 2 weight loads + 6 broadcasts per k) and add the tile into
 * y.  FP8 runs the micro-kernel per 128-wide sub-block and applies that
 * block's per-row scales once in its epilogue.
 * ------------------------------------------------------------------------ */

#define GEMM_MR 16
#define GEMM_NR 6
#define GEMM_KC 256     /* multiple of 128 (FP8 blocks) and 8 */
#define GEMM_MC 256     /* rows per chunk: the y chunk stays in cache across K blocks */

MOE_INLINE void transpose8(__m256 *r)
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* Decode rows [r, r+nrows) (nrows <= 16; the rest are zero), columns
 * [k0, k0+kc) into wp[k][16] for k < round_up(kc, 8) (zero past kc).
 * FP8: values are e4m3 * 2^-8 and sv[sb][16] receives scale * 256 of each
 * row for the sub-block sb of 128 (0 for absent rows). */
MOE_INLINE void pack_strip(enum moe_wtype t, const struct moe_mat *w, int64_t r, int nrows, int64_t k0, int64_t kc,
                           float *wp, float (*sv)[GEMM_MR])
{
    const size_t es = (size_t)elem_bytes(t);
    for (int h = 0; h < 2; h++) {
        const unsigned char *rp[8];
        int nv = nrows - 8 * h;
        nv = nv < 0 ? 0 : nv > 8 ? 8 : nv;
        for (int i = 0; i < nv; i++)
            rp[i] = row_at(w, r + 8 * h + i) + (size_t)k0 * es;
        for (int64_t kk = 0; kk < kc; kk += 8) {
            __m256 v[8];
            const int cnt = (int)min64(8, kc - kk);
            if (cnt == 8) {
                for (int i = 0; i < 8; i++)
                    v[i] = i < nv ? decode8(t, rp[i] + (size_t)kk * es) : _mm256_setzero_ps();
            } else {
                for (int i = 0; i < 8; i++)
                    v[i] = i < nv ? decode8_partial(t, rp[i] + (size_t)kk * es, cnt) : _mm256_setzero_ps();
            }
            transpose8(v);
            float *dst = wp + kk * GEMM_MR + 8 * h;
            for (int i = 0; i < 8; i++)
                _mm256_store_ps(dst + i * GEMM_MR, v[i]);
        }
    }
    if (t == MOE_W_FP8) {
        for (int64_t sb = 0; sb * MOE_FP8_BLOCK < kc; sb++)
            for (int i = 0; i < GEMM_MR; i++)
                sv[sb][i] = i < nrows ? fp8_scale_row(w, r + i)[k0 / MOE_FP8_BLOCK + sb] * 256.0f : 0.0f;
    }
}

/* The 16 x NR micro-kernel: y[j][0..nrows) (+)= (sum_k wp[k][.] x[j][k]) (* sv). */
MOE_INLINE void ukr_f32(const int NR, int64_t kc, const float *wp, const float *x, int64_t ldx, float *y,
                        int64_t ldy, int nrows, int accumulate, const float *sv)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx, *x3 = x + 3 * ldx, *x4 = x + 4 * ldx, *x5 = x + 5 * ldx;
    for (int64_t k = 0; k < kc; k++) {
        const __m256 w0 = _mm256_load_ps(wp + k * GEMM_MR), w1 = _mm256_load_ps(wp + k * GEMM_MR + 8);
        __m256 xb;
#define MOE_UKR_COL(j)                                   \
    if (NR > j) {                                        \
        xb = _mm256_broadcast_ss(x##j + k);              \
        c##j##0 = _mm256_fmadd_ps(w0, xb, c##j##0);      \
        c##j##1 = _mm256_fmadd_ps(w1, xb, c##j##1);      \
    }
        MOE_UKR_COL(0)
        MOE_UKR_COL(1)
        MOE_UKR_COL(2)
        MOE_UKR_COL(3)
        MOE_UKR_COL(4)
        MOE_UKR_COL(5)
#undef MOE_UKR_COL
    }
    __m256 s0 = _mm256_set1_ps(1.0f), s1 = s0;
    if (sv) {
        s0 = _mm256_load_ps(sv);
        s1 = _mm256_load_ps(sv + 8);
    }
#define MOE_UKR_STORE(j)                                                                          \
    if (NR > j) {                                                                                 \
        float *yp = y + j * ldy;                                                                  \
        if (nrows == GEMM_MR) {                                                                   \
            if (accumulate) {                                                                     \
                _mm256_storeu_ps(yp, _mm256_fmadd_ps(c##j##0, s0, _mm256_loadu_ps(yp)));          \
                _mm256_storeu_ps(yp + 8, _mm256_fmadd_ps(c##j##1, s1, _mm256_loadu_ps(yp + 8)));  \
            } else {                                                                              \
                _mm256_storeu_ps(yp, _mm256_mul_ps(c##j##0, s0));                                 \
                _mm256_storeu_ps(yp + 8, _mm256_mul_ps(c##j##1, s1));                             \
            }                                                                                     \
        } else {                                                                                  \
            _Alignas(32) float tmp[GEMM_MR] = {0};                                                \
            if (accumulate)                                                                       \
                memcpy(tmp, yp, (size_t)nrows * 4);                                               \
            _mm256_store_ps(tmp, _mm256_fmadd_ps(c##j##0, s0, _mm256_load_ps(tmp)));              \
            _mm256_store_ps(tmp + 8, _mm256_fmadd_ps(c##j##1, s1, _mm256_load_ps(tmp + 8)));      \
            memcpy(yp, tmp, (size_t)nrows * 4);                                                   \
        }                                                                                         \
    }
    MOE_UKR_STORE(0)
    MOE_UKR_STORE(1)
    MOE_UKR_STORE(2)
    MOE_UKR_STORE(3)
    MOE_UKR_STORE(4)
    MOE_UKR_STORE(5)
#undef MOE_UKR_STORE
}

static void ukr_f32_any(int nr, int64_t kc, const float *wp, const float *x, int64_t ldx, float *y, int64_t ldy,
                        int nrows, int accumulate, const float *sv)
{
    switch (nr) {
    case 6: ukr_f32(6, kc, wp, x, ldx, y, ldy, nrows, accumulate, sv); break;
    case 5: ukr_f32(5, kc, wp, x, ldx, y, ldy, nrows, accumulate, sv); break;
    case 4: ukr_f32(4, kc, wp, x, ldx, y, ldy, nrows, accumulate, sv); break;
    case 3: ukr_f32(3, kc, wp, x, ldx, y, ldy, nrows, accumulate, sv); break;
    case 2: ukr_f32(2, kc, wp, x, ldx, y, ldy, nrows, accumulate, sv); break;
    default: ukr_f32(1, kc, wp, x, ldx, y, ldy, nrows, accumulate, sv); break;
    }
}

MOE_INLINE void gemm_float(enum moe_wtype t, const struct moe_mat *w, int64_t row0, int64_t row1,
                           const struct moe_acts *a, float *y, int64_t ldy)
{
    _Alignas(32) float wp[GEMM_KC * GEMM_MR];                        /* 16 KiB */
    _Alignas(32) float sv[GEMM_KC / MOE_FP8_BLOCK][GEMM_MR];
    const int64_t K = w->cols;
    const int n = a->n;
    for (int64_t rc = row0; rc < row1; rc += GEMM_MC) {
        const int64_t rc1 = min64(rc + GEMM_MC, row1);
        for (int64_t k0 = 0; k0 < K; k0 += GEMM_KC) {
            const int64_t kc = min64(GEMM_KC, K - k0);
            for (int64_t r = rc; r < rc1; r += GEMM_MR) {
                const int nrows = (int)min64(GEMM_MR, rc1 - r);
                pack_strip(t, w, r, nrows, k0, kc, wp, sv);
                for (int j = 0; j < n; j += GEMM_NR) {
                    const int nr = n - j < GEMM_NR ? n - j : GEMM_NR;
                    const float *xj = a->x + (size_t)j * (size_t)a->ldx + k0;
                    float *yj = y + (size_t)j * (size_t)ldy + r;
                    if (t == MOE_W_FP8) {
                        for (int64_t sb = 0; sb * MOE_FP8_BLOCK < kc; sb++) {
                            const int64_t ks = sb * MOE_FP8_BLOCK;
                            ukr_f32_any(nr, min64(MOE_FP8_BLOCK, kc - ks), wp + ks * GEMM_MR, xj + ks, a->ldx, yj,
                                        ldy, nrows, k0 > 0 || sb > 0, sv[sb]);
                        }
                    } else {
                        ukr_f32_any(nr, kc, wp, xj, a->ldx, yj, ldy, nrows, k0 > 0, NULL);
                    }
                }
            }
        }
    }
}

static void moe_gemm_f32_f32__avx2(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                                   float *y, int64_t ldy)
{
    gemm_float(MOE_W_F32, w, row0, row1, a, y, ldy);
}

static void moe_gemm_f16_f32__avx2(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                                   float *y, int64_t ldy)
{
    gemm_float(MOE_W_F16, w, row0, row1, a, y, ldy);
}

static void moe_gemm_bf16_f32__avx2(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                                    float *y, int64_t ldy)
{
    gemm_float(MOE_W_BF16, w, row0, row1, a, y, ldy);
}

static void moe_gemm_fp8_f32__avx2(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                                   float *y, int64_t ldy)
{
    gemm_float(MOE_W_FP8, w, row0, row1, a, y, ldy);
}

/* ------------------------------------------------------------------------
 * GEMM: Q8_0.  A tile of R (<= 2) rows x C (<= 4) columns; per 32-block and
 * (row, column) pair: sign + maddubs + madd (exact int32), then one FMA of
 * the float sum by d_w * d_x.  The weights of the two rows (~2 KiB per K
 * block) stay in L1 across the column tiles; the int8 activations of a K
 * block (n x 1024 bytes) stay in L2.
 * ------------------------------------------------------------------------ */

#define Q8_KB 32        /* blocks per K block (1024 values) */
#define Q8_MC 256       /* rows per chunk */

MOE_INLINE void ukr_q8(const int R, const int C, int64_t nb, const unsigned char *w0, const unsigned char *w1,
                       const int8_t *const *xq, const float *const *xd, float *y, int64_t ldy, int accumulate)
{
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    const int8_t *q0 = xq[0], *q1 = C > 1 ? xq[1] : xq[0], *q2 = C > 2 ? xq[2] : xq[0], *q3 = C > 3 ? xq[3] : xq[0];
    const float *d0 = xd[0], *d1 = C > 1 ? xd[1] : xd[0], *d2 = C > 2 ? xd[2] : xd[0], *d3 = C > 3 ? xd[3] : xd[0];
    for (int64_t b = 0; b < nb; b++) {
        const size_t o = (size_t)b * MOE_Q8_0_BYTES;
        const __m256i wv0 = loadu256(w0 + o + 2), aw0 = _mm256_abs_epi8(wv0);
        const __m256 dw0 = _mm256_set1_ps(q8_scale(w0 + o));
        __m256i wv1 = wv0, aw1 = aw0;
        __m256 dw1 = dw0;
        if (R > 1) {
            wv1 = loadu256(w1 + o + 2);
            aw1 = _mm256_abs_epi8(wv1);
            dw1 = _mm256_set1_ps(q8_scale(w1 + o));
        }
#define MOE_Q8_COL(c)                                                                                      \
    if (C > c) {                                                                                           \
        const __m256i xv = loadu256(q##c + b * 32);                                                        \
        const __m256 dx = _mm256_broadcast_ss(d##c + b);                                                   \
        a0##c = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q8_dot32(wv0, aw0, xv)), _mm256_mul_ps(dw0, dx), a0##c); \
        if (R > 1)                                                                                         \
            a1##c = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q8_dot32(wv1, aw1, xv)), _mm256_mul_ps(dw1, dx), a1##c); \
    }
        MOE_Q8_COL(0)
        MOE_Q8_COL(1)
        MOE_Q8_COL(2)
        MOE_Q8_COL(3)
#undef MOE_Q8_COL
    }
    float s[2][4];
    if (C == 4) {
        _mm_storeu_ps(s[0], hsum4x8(a00, a01, a02, a03));
        if (R > 1) _mm_storeu_ps(s[1], hsum4x8(a10, a11, a12, a13));
    } else {
        s[0][0] = hsum8(a00);
        if (C > 1) s[0][1] = hsum8(a01);
        if (C > 2) s[0][2] = hsum8(a02);
        if (R > 1) {
            s[1][0] = hsum8(a10);
            if (C > 1) s[1][1] = hsum8(a11);
            if (C > 2) s[1][2] = hsum8(a12);
        }
    }
    for (int c = 0; c < C; c++)
        for (int i = 0; i < R; i++) {
            float *yp = y + (size_t)c * (size_t)ldy + i;
            *yp = accumulate ? *yp + s[i][c] : s[i][c];
        }
}

static void ukr_q8_any(int R, int C, int64_t nb, const unsigned char *w0, const unsigned char *w1,
                       const int8_t *const *xq, const float *const *xd, float *y, int64_t ldy, int accumulate)
{
    switch (R * 8 + C) {
    case 2 * 8 + 4: ukr_q8(2, 4, nb, w0, w1, xq, xd, y, ldy, accumulate); break;
    case 2 * 8 + 3: ukr_q8(2, 3, nb, w0, w1, xq, xd, y, ldy, accumulate); break;
    case 2 * 8 + 2: ukr_q8(2, 2, nb, w0, w1, xq, xd, y, ldy, accumulate); break;
    case 2 * 8 + 1: ukr_q8(2, 1, nb, w0, w1, xq, xd, y, ldy, accumulate); break;
    case 1 * 8 + 4: ukr_q8(1, 4, nb, w0, w1, xq, xd, y, ldy, accumulate); break;
    case 1 * 8 + 3: ukr_q8(1, 3, nb, w0, w1, xq, xd, y, ldy, accumulate); break;
    case 1 * 8 + 2: ukr_q8(1, 2, nb, w0, w1, xq, xd, y, ldy, accumulate); break;
    default: ukr_q8(1, 1, nb, w0, w1, xq, xd, y, ldy, accumulate); break;
    }
}

static void moe_gemm_q8_0_f32__avx2(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                                    float *y, int64_t ldy)
{
    const int64_t nbt = w->cols / 32;
    const int n = a->n;
    for (int64_t rc = row0; rc < row1; rc += Q8_MC) {
        const int64_t rc1 = min64(rc + Q8_MC, row1);
        for (int64_t b0 = 0; b0 < nbt; b0 += Q8_KB) {
            const int64_t nb = min64(Q8_KB, nbt - b0);
            for (int64_t r = rc; r < rc1; r += 2) {
                const int R = rc1 - r >= 2 ? 2 : 1;
                const unsigned char *w0 = row_at(w, r) + (size_t)b0 * MOE_Q8_0_BYTES;
                const unsigned char *w1 = R > 1 ? row_at(w, r + 1) + (size_t)b0 * MOE_Q8_0_BYTES : w0;
                for (int j = 0; j < n; j += 4) {
                    const int C = n - j < 4 ? n - j : 4;
                    const int8_t *xq[4];
                    const float *xd[4];
                    for (int c = 0; c < C; c++) {
                        xq[c] = a->q + (size_t)(j + c) * (size_t)a->k + (size_t)b0 * 32;
                        xd[c] = a->qd + (size_t)(j + c) * (size_t)nbt + (size_t)b0;
                    }
                    ukr_q8_any(R, C, nb, w0, w1, xq, xd, y + (size_t)j * (size_t)ldy + r, ldy, b0 > 0);
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------
 * Activation quantizer: the same IEEE operations as the reference (float
 * amax, one true division, float products, round to nearest even), so the
 * bytes are identical.
 * ------------------------------------------------------------------------ */

static void moe_quantize_act__avx2(int8_t *q, float *d, int32_t *s, const float *x, int64_t k)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256 lim = _mm256_set1_ps(127.0f), nlim = _mm256_set1_ps(-127.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t b = 0; b < k / 32; b++) {
        const float *xb = x + b * 32;
        const __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
        const __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, absmask), _mm256_and_ps(v1, absmask)),
                                 _mm256_max_ps(_mm256_and_ps(v2, absmask), _mm256_and_ps(v3, absmask)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float db = amax / 127.0f;
        const float id = db != 0.0f ? 1.0f / db : 0.0f;
        const __m256 vid = _mm256_set1_ps(id);
#define MOE_QROUND(v)                                                                                      \
    _mm256_cvtps_epi32(_mm256_min_ps(                                                                      \
        _mm256_max_ps(_mm256_round_ps(_mm256_mul_ps(v, vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), \
                      nlim),                                                                               \
        lim))
        const __m256i i0 = MOE_QROUND(v0), i1 = MOE_QROUND(v1), i2 = MOE_QROUND(v2), i3 = MOE_QROUND(v3);
#undef MOE_QROUND
        const __m256i p01 = _mm256_packs_epi32(i0, i1), p23 = _mm256_packs_epi32(i2, i3);
        const __m256i p = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23), perm);
        _mm256_storeu_si256((__m256i *)(void *)(q + b * 32), p);
        const __m256i si = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(si), _mm256_extracti128_si256(si, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
        d[b] = db;
        s[b] = _mm_cvtsi128_si32(s4);
    }
}

/* ------------------------------------------------------------------------
 * Vector ops.
 * ------------------------------------------------------------------------ */

static void moe_rmsnorm__avx2(float *y, const float *x, const float *w, int64_t n, float eps)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
        a0 = _mm256_fmadd_ps(v0, v0, a0);
        a1 = _mm256_fmadd_ps(v1, v1, a1);
    }
    for (; i + 8 <= n; i += 8) {
        const __m256 v0 = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(v0, v0, a0);
    }
    float ss = 0.0f;
    for (; i < n; i++)
        ss += x[i] * x[i];
    ss += hsum8(_mm256_add_ps(a0, a1));
    const float inv = 1.0f / sqrtf(ss / (float)n + eps);
    const __m256 vinv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv), _mm256_loadu_ps(w + i)));
    for (; i < n; i++)
        y[i] = x[i] * inv * w[i];
}

static void moe_softmax__avx2(float *x, int64_t n)
{
    __m256 vm = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vm), _mm256_extractf128_ps(vm, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float mx = _mm_cvtss_f32(m4);
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    const __m256 vmx = _mm256_set1_ps(mx);
    __m256 vs = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 e = Sleef_expf8_u10avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
        _mm256_storeu_ps(x + i, e);
        vs = _mm256_add_ps(vs, e);
    }
    float sum = hsum8(vs);
    if (i < n) {
        const int rem = (int)(n - i);
        _Alignas(32) float buf[8];
        for (int t = 0; t < 8; t++)
            buf[t] = t < rem ? x[i + t] : mx;
        _mm256_store_ps(buf, Sleef_expf8_u10avx2(_mm256_sub_ps(_mm256_load_ps(buf), vmx)));
        for (int t = 0; t < rem; t++) {
            x[i + t] = buf[t];
            sum += buf[t];
        }
    }
    const float inv = 1.0f / sum;
    const __m256 vinv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
    for (; i < n; i++)
        x[i] *= inv;
}

/* 1 + exp(-v) */
MOE_INLINE __m256 one_plus_exp_neg(__m256 v)
{
    const __m256 neg = _mm256_xor_ps(v, _mm256_set1_ps(-0.0f));
    return _mm256_add_ps(_mm256_set1_ps(1.0f), Sleef_expf8_u10avx2(neg));
}

/* op: 0 silu, 1 sigmoid, 2 silu_mul.  Tails through a zero-padded buffer. */
MOE_INLINE __m256 act8(int op, __m256 va, __m256 vb)
{
    const __m256 den = one_plus_exp_neg(va);
    if (op == 1)
        return _mm256_div_ps(_mm256_set1_ps(1.0f), den);
    const __m256 s = _mm256_div_ps(va, den);
    return op == 2 ? _mm256_mul_ps(s, vb) : s;
}

MOE_INLINE void act_loop(int op, float *y, const float *a, const float *b, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, act8(op, _mm256_loadu_ps(a + i), op == 2 ? _mm256_loadu_ps(b + i) : _mm256_setzero_ps()));
    if (i < n) {
        const size_t rem = (size_t)(n - i);
        _Alignas(32) float ba[8] = {0}, bb[8] = {0};
        memcpy(ba, a + i, rem * 4);
        if (op == 2)
            memcpy(bb, b + i, rem * 4);
        _mm256_store_ps(ba, act8(op, _mm256_load_ps(ba), _mm256_load_ps(bb)));
        memcpy(y + i, ba, rem * 4);
    }
}

static void moe_silu__avx2(float *y, const float *x, int64_t n) { act_loop(0, y, x, NULL, n); }
static void moe_sigmoid__avx2(float *y, const float *x, int64_t n) { act_loop(1, y, x, NULL, n); }
static void moe_silu_mul__avx2(float *y, const float *a, const float *b, int64_t n) { act_loop(2, y, a, b, n); }

static void moe_rope_sincos__avx2(float *cos_out, float *sin_out, const float *inv_freq, int64_t half, float pos)
{
    const __m256 vp = _mm256_set1_ps(pos);
    int64_t i = 0;
    for (; i + 8 <= half; i += 8) {
        const Sleef___m256_2 sc = Sleef_sincosf8_u10avx2(_mm256_mul_ps(vp, _mm256_loadu_ps(inv_freq + i)));
        _mm256_storeu_ps(sin_out + i, sc.x);
        _mm256_storeu_ps(cos_out + i, sc.y);
    }
    if (i < half) {
        const size_t rem = (size_t)(half - i);
        _Alignas(32) float bi[8] = {0}, bs[8], bc[8];
        memcpy(bi, inv_freq + i, rem * 4);
        const Sleef___m256_2 sc = Sleef_sincosf8_u10avx2(_mm256_mul_ps(vp, _mm256_load_ps(bi)));
        _mm256_store_ps(bs, sc.x);
        _mm256_store_ps(bc, sc.y);
        memcpy(sin_out + i, bs, rem * 4);
        memcpy(cos_out + i, bc, rem * 4);
    }
}

static void moe_rope_apply__avx2(float *x, int64_t n_vec, int64_t stride, const float *c, const float *s,
                                 int64_t half)
{
    const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    for (int64_t v = 0; v < n_vec; v++) {
        float *p = x + v * stride;
        int64_t i = 0;
        for (; i + 4 <= half; i += 4) {
            const __m256 xv = _mm256_loadu_ps(p + 2 * i);
            const __m256 cc = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(c + i)), dup);
            const __m256 ss = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(s + i)), dup);
            const __m256 xs = _mm256_permute_ps(xv, 0xB1);   /* (b, a) pairs */
            /* even lanes a*c - b*s, odd lanes b*c + a*s */
            _mm256_storeu_ps(p + 2 * i, _mm256_fmaddsub_ps(xv, cc, _mm256_mul_ps(xs, ss)));
        }
        for (; i < half; i++) {
            const float a = p[2 * i], b = p[2 * i + 1];
            p[2 * i] = a * c[i] - b * s[i];
            p[2 * i + 1] = a * s[i] + b * c[i];
        }
    }
}


/* ------------------------------------------------------------------------
 * Transposed product y = x^T W (simd/matmul_t.h over 8-lane vectors)
 * ------------------------------------------------------------------------ */
#define MT_NAME(x) moe_mt_##x##__avx2
#define MT_LANES 8
typedef __m256 mt_vec;
#define mt_load(p) _mm256_loadu_ps(p)
#define mt_store(p, v) _mm256_storeu_ps((p), (v))
#define mt_set1(x) _mm256_set1_ps(x)
#define mt_fma(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define MT_DEQ_F16(dst, src, n) \
    for (int64_t i_ = 0; i_ < (n); i_ += 8) \
        _mm256_storeu_ps((dst) + i_, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)((src) + 2 * i_))))
#define MT_DEQ_BF16(dst, src, n) \
    for (int64_t i_ = 0; i_ < (n); i_ += 8) \
        _mm256_storeu_ps((dst) + i_, _mm256_castsi256_ps(_mm256_slli_epi32( \
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)((src) + 2 * i_))), 16)))
#define mt_fp8(p) fp8_decode8(p)
#define mt_mul(a, b) _mm256_mul_ps((a), (b))
#define mt_q8(q) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(q))))
#define MT_F16(h) _cvtsh_ss(h)
#define MT_RB_H 2   /* 16 ymm registers: 8 accumulators */
#include "matmul_t.h"

const struct moe_kernels moe_kernels_avx2 = {
    .name = "avx2",
    .family = "avx2",
    .gemv = {
        [MOE_W_F32] = moe_gemv_f32_f32__avx2,
        [MOE_W_F16] = moe_gemv_f16_f32__avx2,
        [MOE_W_BF16] = moe_gemv_bf16_f32__avx2,
        [MOE_W_FP8] = moe_gemv_fp8_f32__avx2,
        [MOE_W_Q8_0] = moe_gemv_q8_0_f32__avx2,
    },
    .gemm = {
        [MOE_W_F32] = moe_gemm_f32_f32__avx2,
        [MOE_W_F16] = moe_gemm_f16_f32__avx2,
        [MOE_W_BF16] = moe_gemm_bf16_f32__avx2,
        [MOE_W_FP8] = moe_gemm_fp8_f32__avx2,
        [MOE_W_Q8_0] = moe_gemm_q8_0_f32__avx2,
    },
    .gemm_t = {moe_mt_gemm_t__avx2, moe_mt_gemm_t__avx2, moe_mt_gemm_t__avx2, moe_mt_gemm_t__avx2, moe_mt_gemm_t__avx2},
    .quantize_act = moe_quantize_act__avx2,
    .rmsnorm = moe_rmsnorm__avx2,
    .softmax = moe_softmax__avx2,
    .silu = moe_silu__avx2,
    .sigmoid = moe_sigmoid__avx2,
    .silu_mul = moe_silu_mul__avx2,
    .rope_sincos = moe_rope_sincos__avx2,
    .rope_apply = moe_rope_apply__avx2,
};
