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
 *   MT_DEQ_Q8(dst, q, d, n)  n (a multiple of MT_LANES) int8 q times d
 *   MT_Q8_AXPY(y, q, s)      y[0, 32) += s * q[0, 32) (int8 q)
 *   MT_DEQ_FP8(dst, src, n, s)  n (a multiple of MT_LANES) e4m3 bytes times s
 *
 * Algorithm: output columns in tiles of MT_TILE; per tile, 4 rows of W at a
 * time are decoded to FP32 into a stack panel and every activation column
 * j does y_j += x_j[r0] w_r0 + ... + x_j[r3] w_r3 in vectors (4 FMAs per
 * load and store of y).  Rows are added in ascending order, as in the
 * reference; FP8's block scale is applied to the decoded weight.  Columns
 * past the last whole vector of a tile are done in scalar code.  Q8_0 with
 * one or two columns (decode) skips the panel: y += (x_r d) q per block.
 */
#ifndef MT_TILE
#define MT_TILE 64
#endif

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
        MT_DEQ_F16(dst, row + 2 * c0, nv);
        for (int64_t i = nv; i < n; i++) {
            uint16_t h;
            memcpy(&h, row + 2 * (c0 + i), 2);
            dst[i] = moe_f16_to_f32(h);
        }
        break;
    case MOE_W_BF16:
        MT_DEQ_BF16(dst, row + 2 * c0, nv);
        for (int64_t i = nv; i < n; i++) {
            uint16_t h;
            memcpy(&h, row + 2 * (c0 + i), 2);
            dst[i] = moe_bf16_to_f32(h);
        }
        break;
    case MOE_W_FP8: {
        const float *srow = w->scale + (r / 128) * moe_fp8_scale_cols(w->cols);
        int64_t i = 0;
        while (i < n) {   /* one 128-column scale block at a time */
            const int64_t c = c0 + i, len = 128 - c % 128 < n - i ? 128 - c % 128 : n - i;
            const float sc = srow[c / 128];
            const int64_t lv = len / MT_LANES * MT_LANES;
            MT_DEQ_FP8(dst + i, row + c, lv, sc);
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
            uint16_t dh;
            memcpy(&dh, blk, 2);
            const float d = moe_f16_to_f32(dh);
            const int64_t len = 32 - in < n - i ? 32 - in : n - i;
            const int8_t *q = (const int8_t *)(blk + 2 + in);
            const int64_t lv = len / MT_LANES * MT_LANES;
            MT_DEQ_Q8(dst + i, q, d, lv);
            for (int64_t k = lv; k < len; k++) dst[i + k] = d * (float)q[k];
            i += len;
        }
        break;
    }
    default:
        break;
    }
}

/* Q8_0 with few columns (decode): no panel; per row and 32-block,
 * y += (x_r d) q straight from the int8 values. */
static void MT_NAME(gemm_t_q8_direct)(const struct moe_mat *w, int64_t row0, int64_t row1, int64_t col0,
                                      int64_t col1, const float *x, int64_t ldx, int n, float *y, int64_t ldy)
{
    const size_t rb = moe_wtype_row_bytes(w->type, w->cols);
    const int64_t b0 = (col0 + 31) / 32, b1 = col1 / 32;   /* whole blocks inside [col0, col1) */
    for (int j = 0; j < n; j++) memset(y + (size_t)j * ldy + col0, 0, sizeof(float) * (size_t)(col1 - col0));
    for (int64_t r = row0; r < row1; r++) {
        const unsigned char *row = (const unsigned char *)w->data + (size_t)r * rb;
        for (int j = 0; j < n; j++) {
            const float xr = x[(size_t)j * ldx + (r - row0)];
            float *yj = y + (size_t)j * ldy;
            for (int64_t b = b0; b < b1; b++) {
                const unsigned char *blk = row + (size_t)b * MOE_Q8_0_BYTES;
                uint16_t dh;
                memcpy(&dh, blk, 2);
                MT_Q8_AXPY(yj + b * 32, (const int8_t *)(blk + 2), xr * moe_f16_to_f32(dh));
            }
            /* columns of partial blocks: [col0, h1) and [t0, col1) */
            const int64_t h1 = b0 * 32 < col1 ? b0 * 32 : col1, t0 = b1 * 32 > h1 ? b1 * 32 : h1;
            for (int64_t c = col0; c < col1; c++) {
                if (c == h1) c = t0;
                if (c >= col1) break;
                const unsigned char *blk = row + (size_t)(c / 32) * MOE_Q8_0_BYTES;
                uint16_t dh;
                memcpy(&dh, blk, 2);
                yj[c] += xr * (moe_f16_to_f32(dh) * (float)((const int8_t *)(blk + 2))[c % 32]);
            }
        }
    }
}

static void MT_NAME(gemm_t)(const struct moe_mat *w, int64_t row0, int64_t row1, int64_t col0, int64_t col1,
                            const float *x, int64_t ldx, int n, float *y, int64_t ldy)
{
    if (w->type == MOE_W_Q8_0 && n <= 2) {
        MT_NAME(gemm_t_q8_direct)(w, row0, row1, col0, col1, x, ldx, n, y, ldy);
        return;
    }
    float lut[256];
    if (w->type == MOE_W_FP8)
        for (int i = 0; i < 256; i++) lut[i] = moe_fp8_to_f32((uint8_t)i);
    float panel[4][MT_TILE];
    for (int64_t c0 = col0; c0 < col1; c0 += MT_TILE) {
        const int64_t tw = col1 - c0 < MT_TILE ? col1 - c0 : MT_TILE, tv = tw / MT_LANES * MT_LANES;
        for (int j = 0; j < n; j++) memset(y + (size_t)j * ldy + c0, 0, sizeof(float) * (size_t)tw);
        int64_t r = row0;
        for (; r + 4 <= row1; r += 4) {
            for (int q = 0; q < 4; q++) MT_NAME(decode)(panel[q], w, r + q, c0, tw, lut);
            for (int j = 0; j < n; j++) {
                const float *xj = x + (size_t)j * ldx + (r - row0);
                float *yj = y + (size_t)j * ldy + c0;
                const mt_vec a0 = mt_set1(xj[0]), a1 = mt_set1(xj[1]), a2 = mt_set1(xj[2]), a3 = mt_set1(xj[3]);
                for (int64_t k = 0; k < tv; k += MT_LANES) {
                    mt_vec acc = mt_load(yj + k);
                    acc = mt_fma(a0, mt_load(panel[0] + k), acc);
                    acc = mt_fma(a1, mt_load(panel[1] + k), acc);
                    acc = mt_fma(a2, mt_load(panel[2] + k), acc);
                    acc = mt_fma(a3, mt_load(panel[3] + k), acc);
                    mt_store(yj + k, acc);
                }
                for (int64_t k = tv; k < tw; k++) {
                    float acc = yj[k];
                    acc += xj[0] * panel[0][k];
                    acc += xj[1] * panel[1][k];
                    acc += xj[2] * panel[2][k];
                    acc += xj[3] * panel[3][k];
                    yj[k] = acc;
                }
            }
        }
        for (; r < row1; r++) {
            MT_NAME(decode)(panel[0], w, r, c0, tw, lut);
            for (int j = 0; j < n; j++) {
                const float xr = x[(size_t)j * ldx + (r - row0)];
                float *yj = y + (size_t)j * ldy + c0;
                const mt_vec a0 = mt_set1(xr);
                for (int64_t k = 0; k < tv; k += MT_LANES) mt_store(yj + k, mt_fma(a0, mt_load(panel[0] + k), mt_load(yj + k)));
                for (int64_t k = tv; k < tw; k++) yj[k] += xr * panel[0][k];
            }
        }
    }
}
