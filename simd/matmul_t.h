/*
 * simd/matmul_t.h — the transposed product y = x^T W (struct moe_kernels
 * gemm_t), written once over a small vector interface and included by each
 * ISA file, which defines that interface with its own intrinsics and is
 * compiled with its own flags (so each table gets its own machine code):
 *
 *   MT_NAME(type)      the function name, e.g. moe_gemm_t_##type##__avx512
 *   mt_vec, MT_LANES   a vector of MT_LANES floats (MT_TILE % MT_LANES == 0)
 *   mt_load(p) mt_store(p, v) mt_set1(x) mt_fma(a, b, c) = a * b + c
 *   MT_DEQ_F16(dst, src, n), MT_DEQ_BF16(dst, src, n)
 *                      n (a multiple of MT_LANES) fp16/bf16 values (const
 *                      unsigned char *src, unaligned) to floats
 *   mt_mul(a, b)       a * b
 *   mt_q8(q)           MT_LANES int8 values (const int8_t *q, unaligned) as floats
 *   MT_F16(h)          one fp16 value (uint16_t) as a float (optional: the
 *                      portable moe_f16_to_f32 otherwise)
 *   mt_fp8(p)          MT_LANES e4m3 bytes (const unsigned char *p, unaligned) as
 *                      floats times 2^-8, subnormals exact
 *
 * Algorithm (panel path): output columns in tiles of MT_TILE; per tile, 4
 * rows of W at a time are decoded to FP32 into a stack panel (aligned F32
 * rows are used in place) and every activation column j does y_j +=
 * x_j[r0] w_r0 + ... + x_j[r3] w_r3 in vectors (4 FMAs per load and store
 * of y).  Rows are added in ascending order, as in the reference; FP8's
 * block scale is applied to the decoded weight.  Columns past the last
 * whole vector of a tile are done in scalar code.  Two special paths:
 * aligned F32 rows with MT_RB_H or more activation columns keep MT_RB_H
 * columns x MT_RB_W outputs in registers (gemm_t_f32_rb; the same sums in
 * the same order); Q8_0 and FP8 with one or two columns (decode) skip the
 * panel (gemm_t_direct_impl: y += (x_r s) w per scale granule, 4 rows at
 * a time; the same order, the scale applied to x_r instead of w).
 */
#ifndef MT_TILE
#define MT_TILE 64
#endif
#ifndef MT_F16
#define MT_F16(h) moe_f16_to_f32(h)
#endif
#define MT_PF_ROWS 16   /* rows ahead prefetched by the F32 register-block path */
#ifndef MT_RB_H
#define MT_RB_H 4       /* columns of x per register block (F32 rows; 4 x MT_RB_H accumulators) */
#endif
#define MT_RB_W (4 * MT_LANES)

/* dst[0, n) = d * q[0, n), n a multiple of MT_LANES. */
static inline void MT_NAME(deq_q8)(float *dst, const int8_t *q, float d, int64_t n)
{
    const mt_vec dv = mt_set1(d);
    for (int64_t i = 0; i < n; i += MT_LANES) mt_store(dst + i, mt_mul(dv, mt_q8(q + i)));
}

/* fp16 scale of the Q8_0 block at blk. */
static inline float MT_NAME(q8_d)(const unsigned char *blk)
{
    uint16_t h;
    memcpy(&h, blk, 2);
    return MT_F16(h);
}

/* Decode W[r][c0, c0 + n) to FP32 (n <= MT_TILE). */
static inline void MT_NAME(decode)(float *dst, const struct moe_mat *w, int64_t r, int64_t c0, int64_t n,
                                   const float *fp8_lut)
{
    const unsigned char *row = (const unsigned char *)w->data + (size_t)r * moe_wtype_row_bytes(w->type, w->cols);
    const int64_t nv = n / MT_LANES * MT_LANES;
    switch (w->type) {
    case MOE_W_F32:
        memcpy(dst, row + 4 * c0, (size_t)n * 4);
        break;
    case MOE_W_F16:
    case MOE_W_BF16: {
        const int f16 = w->type == MOE_W_F16;
        if (f16) MT_DEQ_F16(dst, row + 2 * c0, nv);
        else MT_DEQ_BF16(dst, row + 2 * c0, nv);
        for (int64_t i = nv; i < n; i++) {
            uint16_t h;
            memcpy(&h, row + 2 * (c0 + i), 2);
            dst[i] = f16 ? MT_F16(h) : moe_bf16_to_f32(h);
        }
        break;
    }
    case MOE_W_FP8: {
        const float *srow = w->scale + (r / 128) * moe_fp8_scale_cols(w->cols);
        int64_t i = 0;
        while (i < n) {   /* one 128-column scale block at a time */
            const int64_t c = c0 + i, len = 128 - c % 128 < n - i ? 128 - c % 128 : n - i;
            const float sc = srow[c / 128];
            const int64_t lv = len / MT_LANES * MT_LANES;
            const mt_vec sv = mt_set1(sc * 256.0f);
            for (int64_t k = 0; k < lv; k += MT_LANES) mt_store(dst + i + k, mt_mul(sv, mt_fp8(row + c + k)));
            for (int64_t k = lv; k < len; k++) dst[i + k] = fp8_lut[row[c + k]] * sc;
            i += len;
        }
        break;
    }
    case MOE_W_Q8_0: {
        int64_t i = 0;
        while (i < n) {
            const int64_t c = c0 + i, b = c / 32, in = c % 32;
            const unsigned char *blk = row + (size_t)b * MOE_Q8_0_BYTES;
            const float d = MT_NAME(q8_d)(blk);
            const int64_t len = 32 - in < n - i ? 32 - in : n - i;
            const int8_t *q = (const int8_t *)(blk + 2 + in);
            const int64_t lv = len / MT_LANES * MT_LANES;
            MT_NAME(deq_q8)(dst + i, q, d, lv);
            for (int64_t k = lv; k < len; k++) dst[i + k] = d * (float)q[k];
            i += len;
        }
        break;
    }
    default:
        break;
    }
}

/* W[r][c0, c0 + n) as FP32: aligned F32 rows in place (e.g. the attention
 * cache), anything else decoded into dst. */
static inline const float *MT_NAME(row)(float *dst, const struct moe_mat *w, int64_t r, int64_t c0, int64_t n,
                                        const float *fp8_lut)
{
    const unsigned char *src = (const unsigned char *)w->data + (size_t)r * moe_wtype_row_bytes(w->type, w->cols);
    if (w->type == MOE_W_F32 && (uintptr_t)src % _Alignof(float) == 0) return (const float *)(const void *)src + c0;
    MT_NAME(decode)(dst, w, r, c0, n, fp8_lut);
    return dst;
}

/* ---- direct path: Q8_0 and FP8 with few columns (decode), no panel ----
 * Per row and scale granule (a Q8_0 block of 32 columns, whose fp16 scale
 * leads it; FP8: the 128 columns of one block scale), y += (x_r s) w
 * straight from the 8-bit values, 4 rows at a time (4 FMAs per load and
 * store of y).  Vector columns: Q8_0 whole blocks, FP8 whole vectors
 * (MT_LANES divides 128, so no vector straddles two scales); the columns
 * around them in scalar code, every row in order.  q8 is a constant after
 * inlining. */

/* The granule's scale for row r at column c (FP8: times 256, as mt_fp8
 * gives value * 2^-8) and the address of W[r][c]'s 8-bit value. */
static inline float MT_NAME(dscale)(const struct moe_mat *w, const unsigned char *row, int64_t r, int64_t c, int q8)
{
    if (q8) return MT_NAME(q8_d)(row + (size_t)(c / 32) * MOE_Q8_0_BYTES);
    return w->scale[(r / MOE_FP8_BLOCK) * moe_fp8_scale_cols(w->cols) + c / MOE_FP8_BLOCK] * 256.0f;
}

static inline const unsigned char *MT_NAME(dval)(const unsigned char *row, int64_t c, int q8)
{
    return q8 ? row + (size_t)(c / 32) * MOE_Q8_0_BYTES + 2 + (size_t)(c % 32) : row + c;
}

#define MT_DVEC(p, q8) ((q8) ? mt_q8((const int8_t *)(p)) : mt_fp8(p))

MOE_INLINE void MT_NAME(gemm_t_direct_impl)(const struct moe_mat *w, int64_t row0, int64_t row1, int64_t col0,
                                            int64_t col1, const float *x, int64_t ldx, int n, float *y, int64_t ldy,
                                            const int q8)
{
    const size_t rb = moe_wtype_row_bytes(w->type, w->cols);
    const int64_t g = q8 ? 32 : MOE_FP8_BLOCK, a = q8 ? 32 : MT_LANES;
    int64_t lo = (col0 + a - 1) / a * a, hi = col1 / a * a;   /* the vector columns */
    if (hi < lo) hi = lo = col0;
    for (int j = 0; j < n; j++) memset(y + (size_t)j * ldy + col0, 0, sizeof(float) * (size_t)(col1 - col0));
    int64_t r = row0;
    for (; r + 4 <= row1; r += 4) {
        const unsigned char *w0 = (const unsigned char *)w->data + (size_t)r * rb, *w1 = w0 + rb, *w2 = w1 + rb,
                            *w3 = w2 + rb;
        /* the next 4 rows (contiguous) into cache: rows are short (decode's
         * absorb: 128 rows of 512 columns per head), too short for the
         * hardware prefetcher to ramp up */
        if (r + 8 <= row1) {
            const unsigned char *nx = w0 + 4 * rb + (size_t)col0 * (size_t)(q8 ? MOE_Q8_0_BYTES : 32) / 32;
            const size_t span = 3 * rb + (size_t)(col1 - col0) * (size_t)(q8 ? MOE_Q8_0_BYTES : 32) / 32;
            for (size_t o = 0; o < span; o += 64) __builtin_prefetch(nx + o);
        }
        for (int j = 0; j < n; j++) {
            const float *xj = x + (size_t)j * ldx + (r - row0);
            float *yj = y + (size_t)j * ldy;
            for (int64_t c = lo; c < hi;) {
                const int64_t e = (c / g + 1) * g < hi ? (c / g + 1) * g : hi;
                const mt_vec s0 = mt_set1(xj[0] * MT_NAME(dscale)(w, w0, r, c, q8));
                const mt_vec s1 = mt_set1(xj[1] * MT_NAME(dscale)(w, w1, r + 1, c, q8));
                const mt_vec s2 = mt_set1(xj[2] * MT_NAME(dscale)(w, w2, r + 2, c, q8));
                const mt_vec s3 = mt_set1(xj[3] * MT_NAME(dscale)(w, w3, r + 3, c, q8));
                for (; c < e; c += MT_LANES) {
                    mt_vec acc = mt_load(yj + c);
                    acc = mt_fma(s0, MT_DVEC(MT_NAME(dval)(w0, c, q8), q8), acc);
                    acc = mt_fma(s1, MT_DVEC(MT_NAME(dval)(w1, c, q8), q8), acc);
                    acc = mt_fma(s2, MT_DVEC(MT_NAME(dval)(w2, c, q8), q8), acc);
                    acc = mt_fma(s3, MT_DVEC(MT_NAME(dval)(w3, c, q8), q8), acc);
                    mt_store(yj + c, acc);
                }
            }
        }
    }
    for (; r < row1; r++) {   /* the vector columns of the last rows */
        const unsigned char *row = (const unsigned char *)w->data + (size_t)r * rb;
        for (int j = 0; j < n; j++) {
            const float xr = x[(size_t)j * ldx + (r - row0)];
            float *yj = y + (size_t)j * ldy;
            for (int64_t c = lo; c < hi;) {
                const int64_t e = (c / g + 1) * g < hi ? (c / g + 1) * g : hi;
                const mt_vec s = mt_set1(xr * MT_NAME(dscale)(w, row, r, c, q8));
                for (; c < e; c += MT_LANES)
                    mt_store(yj + c, mt_fma(s, MT_DVEC(MT_NAME(dval)(row, c, q8), q8), mt_load(yj + c)));
            }
        }
    }
    if (lo == col0 && hi == col1) return;
    for (int64_t rr = row0; rr < row1; rr++) {   /* [col0, lo) and [hi, col1) */
        const unsigned char *row = (const unsigned char *)w->data + (size_t)rr * rb;
        for (int j = 0; j < n; j++) {
            const float xr = x[(size_t)j * ldx + (rr - row0)];
            float *yj = y + (size_t)j * ldy;
            for (int64_t c = col0; c < col1; c++) {
                if (c == lo) c = hi;
                if (c >= col1) break;
                const unsigned char *v = MT_NAME(dval)(row, c, q8);   /* FP8: * 2^-8 as mt_fp8, exact */
                const float wv = q8 ? (float)*(const int8_t *)v : moe_fp8_to_f32(*v) * 0x1p-8f;
                yj[c] += xr * (MT_NAME(dscale)(w, row, rr, c, q8) * wv);
            }
        }
    }
}

static void MT_NAME(gemm_t_q8_direct)(const struct moe_mat *w, int64_t row0, int64_t row1, int64_t col0,
                                      int64_t col1, const float *x, int64_t ldx, int n, float *y, int64_t ldy)
{
    MT_NAME(gemm_t_direct_impl)(w, row0, row1, col0, col1, x, ldx, n, y, ldy, 1);
}

static void MT_NAME(gemm_t_fp8_direct)(const struct moe_mat *w, int64_t row0, int64_t row1, int64_t col0,
                                       int64_t col1, const float *x, int64_t ldx, int n, float *y, int64_t ldy)
{
    MT_NAME(gemm_t_direct_impl)(w, row0, row1, col0, col1, x, ldx, n, y, ldy, 0);
}

/* Aligned F32 rows with MT_RB_H or more columns of x (the attention
 * output over the latent cache: one column per head): MT_RB_H columns x
 * MT_RB_W outputs stay in registers while every row is read once (4 loads
 * and MT_RB_H broadcasts per 4 * MT_RB_H FMAs; the panel path loads and
 * stores y for every 4 rows).  Same sums in the same order as the panel
 * path.  Leftover columns of x and outputs go to the panel path. */
static void MT_NAME(gemm_t_panel)(const struct moe_mat *w, int64_t row0, int64_t row1, int64_t col0, int64_t col1,
                                  const float *x, int64_t ldx, int n, float *y, int64_t ldy);

static void MT_NAME(gemm_t_f32_rb)(const struct moe_mat *w, int64_t row0, int64_t row1, int64_t col0,
                                   int64_t col1, const float *x, int64_t ldx, int n, float *y, int64_t ldy)
{
    const size_t rb = moe_wtype_row_bytes(MOE_W_F32, w->cols);
    const unsigned char *base = (const unsigned char *)w->data;
    const int nb = n / MT_RB_H * MT_RB_H;
    int64_t c0 = col0;
    for (; c0 + MT_RB_W <= col1; c0 += MT_RB_W)
        for (int j0 = 0; j0 < nb; j0 += MT_RB_H) {
            mt_vec acc[MT_RB_H][4];
            for (int h = 0; h < MT_RB_H; h++)
                for (int i = 0; i < 4; i++) acc[h][i] = mt_set1(0.0f);
            const float *xb = x + (size_t)j0 * (size_t)ldx;
            for (int64_t r = row0; r < row1; r++) {
                const float *wr = (const float *)(const void *)(base + (size_t)r * rb) + c0;
                if (r + MT_PF_ROWS < row1)
                    for (int o = 0; o < MT_RB_W * 4; o += 64) __builtin_prefetch((const unsigned char *)(wr) + MT_PF_ROWS * rb + o);
                const mt_vec w0 = mt_load(wr), w1 = mt_load(wr + MT_RB_W / 4), w2 = mt_load(wr + MT_RB_W / 2),
                             w3 = mt_load(wr + 3 * MT_RB_W / 4);
                for (int h = 0; h < MT_RB_H; h++) {
                    const mt_vec a = mt_set1(xb[(size_t)h * (size_t)ldx + (size_t)(r - row0)]);
                    acc[h][0] = mt_fma(a, w0, acc[h][0]);
                    acc[h][1] = mt_fma(a, w1, acc[h][1]);
                    acc[h][2] = mt_fma(a, w2, acc[h][2]);
                    acc[h][3] = mt_fma(a, w3, acc[h][3]);
                }
            }
            for (int h = 0; h < MT_RB_H; h++)
                for (int i = 0; i < 4; i++) mt_store(y + (size_t)(j0 + h) * (size_t)ldy + c0 + i * (MT_RB_W / 4), acc[h][i]);
        }
    if (nb > 0 && c0 < col1) MT_NAME(gemm_t_panel)(w, row0, row1, c0, col1, x, ldx, nb, y, ldy);
    if (nb < n)
        MT_NAME(gemm_t_panel)(w, row0, row1, col0, col1, x + (size_t)nb * (size_t)ldx, ldx, n - nb,
                              y + (size_t)nb * (size_t)ldy, ldy);
}

static void MT_NAME(gemm_t)(const struct moe_mat *w, int64_t row0, int64_t row1, int64_t col0, int64_t col1,
                            const float *x, int64_t ldx, int n, float *y, int64_t ldy)
{
    if (w->type == MOE_W_Q8_0 && n <= 2) {
        MT_NAME(gemm_t_q8_direct)(w, row0, row1, col0, col1, x, ldx, n, y, ldy);
        return;
    }
    if (w->type == MOE_W_FP8 && n <= 2) {
        MT_NAME(gemm_t_fp8_direct)(w, row0, row1, col0, col1, x, ldx, n, y, ldy);
        return;
    }
    if (w->type == MOE_W_F32 && n >= MT_RB_H && (uintptr_t)w->data % _Alignof(float) == 0 &&
        moe_wtype_row_bytes(MOE_W_F32, w->cols) % _Alignof(float) == 0) {
        MT_NAME(gemm_t_f32_rb)(w, row0, row1, col0, col1, x, ldx, n, y, ldy);
        return;
    }
    MT_NAME(gemm_t_panel)(w, row0, row1, col0, col1, x, ldx, n, y, ldy);
}

static void MT_NAME(gemm_t_panel)(const struct moe_mat *w, int64_t row0, int64_t row1, int64_t col0, int64_t col1,
                                  const float *x, int64_t ldx, int n, float *y, int64_t ldy)
{
    float lut[256];
    if (w->type == MOE_W_FP8)
        for (int i = 0; i < 256; i++) lut[i] = moe_fp8_to_f32((uint8_t)i);
    float panel[4][MT_TILE];
    for (int64_t c0 = col0; c0 < col1; c0 += MT_TILE) {
        const int64_t tw = col1 - c0 < MT_TILE ? col1 - c0 : MT_TILE, tv = tw / MT_LANES * MT_LANES;
        for (int j = 0; j < n; j++) memset(y + (size_t)j * ldy + c0, 0, sizeof(float) * (size_t)tw);
        int64_t r = row0;
        for (; r + 4 <= row1; r += 4) {
            const float *pr[4];
            for (int q = 0; q < 4; q++) pr[q] = MT_NAME(row)(panel[q], w, r + q, c0, tw, lut);
            for (int j = 0; j < n; j++) {
                const float *xj = x + (size_t)j * ldx + (r - row0);
                float *yj = y + (size_t)j * ldy + c0;
                const mt_vec a0 = mt_set1(xj[0]), a1 = mt_set1(xj[1]), a2 = mt_set1(xj[2]), a3 = mt_set1(xj[3]);
                for (int64_t k = 0; k < tv; k += MT_LANES) {
                    mt_vec acc = mt_load(yj + k);
                    acc = mt_fma(a0, mt_load(pr[0] + k), acc);
                    acc = mt_fma(a1, mt_load(pr[1] + k), acc);
                    acc = mt_fma(a2, mt_load(pr[2] + k), acc);
                    acc = mt_fma(a3, mt_load(pr[3] + k), acc);
                    mt_store(yj + k, acc);
                }
                for (int64_t k = tv; k < tw; k++) {
                    float acc = yj[k];
                    acc += xj[0] * pr[0][k];
                    acc += xj[1] * pr[1][k];
                    acc += xj[2] * pr[2][k];
                    acc += xj[3] * pr[3][k];
                    yj[k] = acc;
                }
            }
        }
        for (; r < row1; r++) {
            const float *p0 = MT_NAME(row)(panel[0], w, r, c0, tw, lut);
            for (int j = 0; j < n; j++) {
                const float xr = x[(size_t)j * ldx + (r - row0)];
                float *yj = y + (size_t)j * ldy + c0;
                const mt_vec a0 = mt_set1(xr);
                for (int64_t k = 0; k < tv; k += MT_LANES) mt_store(yj + k, mt_fma(a0, mt_load(p0 + k), mt_load(yj + k)));
                for (int64_t k = tv; k < tw; k++) yj[k] += xr * p0[k];
            }
        }
    }
}
