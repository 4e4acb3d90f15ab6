/*
 * tests/test_kernels.c — every kernel of every compiled table against the
 * scalar reference in quant/, on awkward shapes and values.
 *
 * One cmocka test per (table, kernel); tables this CPU cannot run are
 * skipped (aarch64 tables run under qemu in `make test`).  Tolerances:
 *  - matmuls (gemm_t too, summing over rows): |y - ref| <= 3e-5 * sum_k |w_k x_k|.  Both sides sum in FP32
 *    and differ only in the order of additions; the error of a K-term sum
 *    in any order is bounded by about K * 2^-24 * sum|terms| and is
 *    typically sqrt(K) * 2^-24 * sum|terms| (~5e-6 at K = 7168), so 3e-5
 *    leaves room for reordering while a single wrong term or block scale
 *    (>= 1/K of the sum, 1.4e-4 at K = 7168) fails.
 *  - Q8_0 integer block sums: exact (a case with all scales 1).
 *  - quantize_act: identical bytes (the same IEEE operations on every ISA).
 *  - silu, sigmoid, silu_mul: 2e-6 relative — SLEEF's u10 exp is within
 *    1 ulp, and the formula adds a few roundings.
 *  - softmax, rmsnorm: 1e-5 relative — sums over n elements reassociated.
 *  - rope_sincos: 2e-6 absolute for angles up to 1e5 (both sides are
 *    within 1 ulp of the true sin/cos of the FP32 angle); rope_apply
 *    1e-6 * (|a| + |b|) (FMA or not).
 * MOECPU_TEST_QUICK=1 (sanitizers, qemu) trims the largest shapes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../simd/kernels.h"

static int quick;

/* ---- deterministic random numbers ---- */
struct rng { uint64_t s; };
static uint32_t rnext(struct rng *r)
{
    r->s ^= r->s << 13; r->s ^= r->s >> 7; r->s ^= r->s << 17;
    return (uint32_t)(r->s >> 16);
}
static float runi(struct rng *r) { return (float)(rnext(r) & 0xFFFFFF) / 0x1p24f; } /* [0,1) */
static float rsym(struct rng *r) { return 2.0f * runi(r) - 1.0f; }                   /* [-1,1) */

/* ---- test matrices ---- */
struct tmat {
    struct moe_mat m;
    void *data;
    float *scale;
};

/* A random matrix of type t with awkward values: per-row magnitudes over
 * several decades, zeros, and for FP8 the extreme codes (+-448,
 * subnormals) and widely varying block scales.  The data starts `off`
 * bytes after a malloc'd address: 1 makes it misaligned for every type, 0
 * aligned (kernels may take other paths for aligned rows). */
static void tmat_make(struct tmat *t, enum moe_wtype type, int64_t rows, int64_t cols, size_t off, struct rng *r)
{
    float *f = malloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t i = 0; i < rows; i++) {
        float mag = ldexpf(1.0f, (int)(rnext(r) % 16) - 8);
        for (int64_t k = 0; k < cols; k++) {
            float v = rsym(r) * mag;
            if (rnext(r) % 17 == 0) v = 0.0f;
            f[i * cols + k] = v;
        }
    }
    memset(t, 0, sizeof *t);
    t->m.type = type;
    t->m.rows = rows;
    t->m.cols = cols;
    size_t rb = moe_wtype_row_bytes(type, cols);
    unsigned char *buf = malloc(rb * (size_t)rows + 64);
    unsigned char *d = buf + off;
    switch (type) {
    case MOE_W_F32: memcpy(d, f, rb * (size_t)rows); break;
    case MOE_W_F16:
    case MOE_W_BF16:
        for (int64_t i = 0; i < rows * cols; i++) {
            uint16_t h = type == MOE_W_F16 ? moe_f32_to_f16(f[i]) : moe_f32_to_bf16(f[i]);
            memcpy(d + 2 * i, &h, 2);
        }
        break;
    case MOE_W_FP8: {
        int64_t sr = moe_fp8_scale_rows(rows), sc = moe_fp8_scale_cols(cols);
        t->scale = malloc(sizeof(float) * (size_t)(sr * sc));
        moe_quantize_fp8_block128(d, t->scale, f, rows, cols);
        for (int64_t i = 0; i < sr * sc; i++)
            t->scale[i] *= ldexpf(1.0f, (int)(rnext(r) % 24) - 12);   /* large dynamic range */
        static const uint8_t special[] = {0x7E, 0xFE, 0x01, 0x81, 0x07, 0x87, 0x00, 0x80, 0x08, 0x77};
        for (int64_t i = 0; i < rows * cols; i += 1 + (int64_t)(rnext(r) % 23))
            d[i] = special[rnext(r) % sizeof special];
        break;
    }
    case MOE_W_Q8_0:
        for (int64_t i = 0; i < rows; i++) {
            struct moe_block_q8_0 *blk = malloc(sizeof *blk * (size_t)(cols / 32));
            moe_quantize_row_q8_0(blk, f + i * cols, cols);
            if (i % 3 == 0)
                blk[0].qs[rnext(r) % 32] = -127;
            memcpy(d + (size_t)i * rb, blk, rb);
            free(blk);
        }
        break;
    default: break;
    }
    t->data = buf;
    t->m.data = d;
    t->m.scale = t->scale;
    free(f);
}

static void tmat_free(struct tmat *t)
{
    free(t->data);
    free(t->scale);
}

/* ---- activations ---- */
struct tacts {
    struct moe_acts a;
    float *x;
    int8_t *q;
    float *qd;
    int32_t *qs;
};

static void tacts_make(struct tacts *t, int64_t k, int n, int64_t ldx, struct rng *r)
{
    t->x = malloc(sizeof(float) * (size_t)(ldx * n));
    for (int j = 0; j < n; j++) {
        float mag = ldexpf(1.0f, (int)(rnext(r) % 20) - 10);
        for (int64_t i = 0; i < ldx; i++)
            t->x[j * ldx + i] = i < k && rnext(r) % 13 ? rsym(r) * mag : (i < k ? 0.0f : NAN);
    }
    t->q = malloc((size_t)(k * n));
    t->qd = malloc(sizeof(float) * (size_t)(k / 32 * n + 1));
    t->qs = malloc(sizeof(int32_t) * (size_t)(k / 32 * n + 1));
    if (k % 32 == 0)
        for (int j = 0; j < n; j++)
            moe_quantize_act_q8_ref(t->q + j * k, t->qd + j * (k / 32), t->qs + j * (k / 32), t->x + j * ldx, k);
    t->a = (struct moe_acts){.k = k, .n = n, .x = t->x, .ldx = ldx, .q = t->q, .qd = t->qd, .qs = t->qs};
}

static void tacts_free(struct tacts *t)
{
    free(t->x); free(t->q); free(t->qd); free(t->qs);
}

/* sum_k |w_k x_k| for the error bound (Q8_0: in the quantized domain);
 * wrow is row r of W dequantized. */
static double abs_dot(const float *wrow, const struct moe_mat *w, const struct moe_acts *a, int j)
{
    double s = 0;
    for (int64_t k = 0; k < w->cols; k++) {
        double xv = w->type == MOE_W_Q8_0 ? (double)a->q[j * a->k + k] * a->qd[j * (a->k / 32) + k / 32]
                                          : a->x[j * a->ldx + k];
        s += fabs((double)wrow[k] * xv);
    }
    return s;
}

/* Run kernel fn on rows [row0,row1) and compare with the reference. */
static void check_matmul(moe_matmul_fn fn, enum moe_wtype type, int64_t rows, int64_t k, int n, struct rng *r,
                         const char *what)
{
    struct tmat w;
    struct tacts a;
    tmat_make(&w, type, rows, k, 1, r);
    tacts_make(&a, k, n, k + 5, r);
    const int64_t ldy = rows + 3;
    const int64_t row0 = rows > 3 ? rows / 3 : 0, row1 = rows;
    float *y = malloc(sizeof(float) * (size_t)(ldy * n)), *yr = malloc(sizeof(float) * (size_t)(ldy * n));
    float *wf = malloc(sizeof(float) * (size_t)(k * rows));
    for (int64_t i = row0; i < row1; i++)
        moe_ref_dequant_row(wf + i * k, &w.m, i);
    for (int64_t i = 0; i < ldy * n; i++) y[i] = yr[i] = -12345.0f;
    fn(&w.m, row0, row1, &a.a, y, ldy);
    moe_ref_matmul(&w.m, row0, row1, &a.a, yr, ldy);
    for (int j = 0; j < n; j++)
        for (int64_t i = 0; i < ldy; i++) {
            float got = y[j * ldy + i], want = yr[j * ldy + i];
            if (i < row0 || i >= row1) {
                if (got != -12345.0f) fail_msg("%s %s rows=%lld k=%lld n=%d: wrote outside its rows at col %d row %lld",
                                               what, moe_wtype_name(type), (long long)rows, (long long)k, n, j, (long long)i);
                continue;
            }
            double bound = 3e-5 * abs_dot(wf + i * k, &w.m, &a.a, j) + 1e-30;
            if (!(fabs((double)got - (double)want) <= bound))
                fail_msg("%s %s rows=%lld k=%lld n=%d: y[%d][%lld] = %.9g, reference %.9g (allowed error %.3g)", what,
                         moe_wtype_name(type), (long long)rows, (long long)k, n, j, (long long)i, got, want, bound);
        }
    free(y); free(yr); free(wf);
    tmat_free(&w);
    tacts_free(&a);
}

/* y = x^T W (gemm_t) on rows [row0, row1) and columns [col0, col1) against
 * the reference, and the reference against a double-precision sum over
 * rows dequantized by moe_ref_dequant_row; both within 3e-5 * sum_r
 * |x_r W[r][c]| (the matmul bound: FP32 sums reordered/fused). */
static void check_matmul_t(moe_matmul_t_fn fn, enum moe_wtype type, int64_t rows, int64_t cols, int n,
                           int64_t row0, int64_t col0, int64_t col1, size_t off, struct rng *r)
{
    struct tmat w;
    tmat_make(&w, type, rows, cols, off, r);
    const int64_t nr = rows - row0, ldx = nr + 3, ldy = cols + 5;
    float *x = malloc(sizeof(float) * (size_t)(ldx * n));
    for (int j = 0; j < n; j++) {
        float mag = ldexpf(1.0f, (int)(rnext(r) % 20) - 10);
        for (int64_t i = 0; i < ldx; i++) x[j * ldx + i] = i < nr ? (rnext(r) % 13 ? rsym(r) * mag : 0.0f) : NAN;
    }
    float *y = malloc(sizeof(float) * (size_t)(ldy * n)), *yr = malloc(sizeof(float) * (size_t)(ldy * n));
    float *wf = malloc(sizeof(float) * (size_t)(cols * rows));
    for (int64_t i = 0; i < rows; i++) moe_ref_dequant_row(wf + i * cols, &w.m, i);
    for (int64_t i = 0; i < ldy * n; i++) y[i] = yr[i] = -12345.0f;
    fn(&w.m, row0, rows, col0, col1, x, ldx, n, y, ldy);
    moe_ref_matmul_t(&w.m, row0, rows, col0, col1, x, ldx, n, yr, ldy);
    for (int j = 0; j < n; j++)
        for (int64_t c = 0; c < ldy; c++) {
            float got = y[j * ldy + c], want = yr[j * ldy + c];
            if (c < col0 || c >= col1) {
                if (got != -12345.0f || want != -12345.0f)
                    fail_msg("gemm_t %s rows=%lld cols=%lld n=%d: wrote outside its columns at [%d][%lld]",
                             moe_wtype_name(type), (long long)rows, (long long)cols, n, j, (long long)c);
                continue;
            }
            double exact = 0, mag = 0;
            for (int64_t i = row0; i < rows; i++) {
                double t = (double)x[j * ldx + i - row0] * (double)wf[i * cols + c];
                exact += t;
                mag += fabs(t);
            }
            double bound = 3e-5 * mag + 1e-30;
            if (!(fabs((double)want - exact) <= bound))
                fail_msg("reference gemm_t %s rows=%lld cols=%lld: y[%d][%lld] = %.9g, exact %.9g", moe_wtype_name(type),
                         (long long)rows, (long long)cols, j, (long long)c, want, exact);
            if (!(fabs((double)got - (double)want) <= bound))
                fail_msg("gemm_t %s rows=%lld [%lld,) cols=%lld [%lld, %lld) n=%d: y[%d][%lld] = %.9g, reference %.9g "
                         "(allowed %.3g)", moe_wtype_name(type), (long long)rows, (long long)row0, (long long)cols,
                         (long long)col0, (long long)col1, n, j, (long long)c, got, want, bound);
        }
    free(x); free(y); free(yr); free(wf);
    tmat_free(&w);
}

static void test_gemm_t(const struct moe_kernels *kt, enum moe_wtype type, struct rng *r)
{
    static const int64_t rs[] = {1, 3, 4, 5, 7, 129, 300};
    static const int64_t cs[] = {32, 64, 96, 160, 200, 576, 1000};
    static const int ns[] = {1, 2, 5, 16};
    for (size_t ri = 0; ri < sizeof rs / sizeof rs[0]; ri++)
        for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++)
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                const int64_t rows = rs[ri], cols = cs[ci];
                if (type == MOE_W_Q8_0 && cols % 32) continue;
                if ((double)rows * (double)cols * ns[ni] > (quick ? 1e5 : 1e6)) continue;
                /* all columns from row 0; then an inner range starting mid-block from an
                 * odd row (300 rows: groups of 4 rows straddle FP8's 128-row scale
                 * blocks); data misaligned and aligned (F32: rows read in place,
                 * register blocks) */
                for (size_t off = 0; off < 2; off++) {
                    check_matmul_t(kt->gemm_t[type], type, rows, cols, ns[ni], 0, 0, cols, off, r);
                    const int64_t c0 = cols > 40 ? 7 + (int64_t)(rnext(r) % 30) : 1, c1 = cols - (int64_t)(rnext(r) % 5);
                    const int64_t r0 = rows > 4 ? (rows / 3) | 1 : 0;
                    if (c1 > c0) check_matmul_t(kt->gemm_t[type], type, rows, cols, ns[ni], r0, c0, c1, off, r);
                }
            }
}

/* ---- the cases ---- */
enum op {
    OP_GEMV, OP_GEMM, OP_GEMM_T, OP_Q8_EXACT, OP_QUANT_ACT, OP_RMSNORM, OP_SOFTMAX, OP_SILU, OP_SIGMOID, OP_SILU_MUL,
    OP_ROPE, OP_COUNT
};
static const char *op_names[OP_COUNT] = {"gemv", "gemm", "gemm_t", "q8_0_exact_int_sums", "quantize_act", "rmsnorm",
                                         "softmax", "silu", "sigmoid", "silu_mul", "rope"};

struct tcase {
    const struct moe_isa_entry *e;
    enum op op;
    enum moe_wtype type;   /* matmuls */
    char name[96];
};

static const int64_t row_sizes[] = {1, 3, 7, 129, 300};
static const int64_t k_sizes[] = {32, 96, 160, 200, 1000, 4160, 7168};

static void test_gemv(const struct moe_kernels *kt, enum moe_wtype type, struct rng *r)
{
    for (size_t ri = 0; ri < sizeof row_sizes / sizeof row_sizes[0]; ri++)
        for (size_t ki = 0; ki < sizeof k_sizes / sizeof k_sizes[0]; ki++) {
            int64_t rows = row_sizes[ri], k = k_sizes[ki];
            if (type == MOE_W_Q8_0 && k % 32) continue;
            if (quick && rows * k > 129 * 1000) continue;
            check_matmul(kt->gemv[type], type, rows, k, 1, r, "gemv");
        }
}

static void test_gemm(const struct moe_kernels *kt, enum moe_wtype type, struct rng *r)
{
    static const int ns[] = {2, 3, 5, 8, 9, 16, 17, 31, 32, 33, 64, 128};
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
        for (size_t ri = 0; ri < sizeof row_sizes / sizeof row_sizes[0]; ri++)
            for (size_t ki = 0; ki < sizeof k_sizes / sizeof k_sizes[0]; ki++) {
                int64_t rows = row_sizes[ri], k = k_sizes[ki];
                int n = ns[ni];
                if (type == MOE_W_Q8_0 && k % 32) continue;
                /* keep the sweep affordable: big problems for a few shapes only */
                double cost = (double)rows * (double)k * n;
                if (cost > (quick ? 4e5 : 4e6)) continue;
                check_matmul(kt->gemm[type], type, rows, k, n, r, "gemm");
            }
    if (!quick) /* one large expert-like block: several K and row blocks, 128 columns */
        check_matmul(kt->gemm[type], type, 260, 2048 + 96 + (type == MOE_W_Q8_0 ? 0 : 7), 128, r, "gemm");
}

/* Q8_0 with every scale 1: results are sums of integer products, exact in
 * FP32 below 2^24, so any ISA must give exactly the integer answer. */
static void test_q8_exact(const struct moe_kernels *kt, struct rng *r)
{
    static const int64_t ks[] = {32, 64, 96, 160, 1024};
    static const int ns[] = {1, 2, 5, 16, 33};
    for (size_t ki = 0; ki < 5; ki++)
        for (size_t ni = 0; ni < 5; ni++) {
            const int64_t rows = 37, k = ks[ki];
            const int n = ns[ni];
            const size_t rb = moe_wtype_row_bytes(MOE_W_Q8_0, k);
            unsigned char *wd = malloc(rb * rows);
            int8_t *q = malloc((size_t)(k * n));
            float *qd = malloc(sizeof(float) * (size_t)(k / 32 * n));
            int32_t *qs = malloc(sizeof(int32_t) * (size_t)(k / 32 * n));
            for (int64_t i = 0; i < rows * k / 32; i++) {
                struct moe_block_q8_0 b = {.d = 0x3C00};   /* fp16 1.0 */
                for (int t = 0; t < 32; t++) b.qs[t] = (int8_t)((int)(rnext(r) % 255) - 127);
                if (i % 5 == 0) for (int t = 0; t < 32; t++) b.qs[t] = (t & 1) ? -127 : 127;
                memcpy(wd + i * MOE_Q8_0_BYTES, &b, MOE_Q8_0_BYTES);
            }
            for (int64_t i = 0; i < k * n; i++) q[i] = (int8_t)((int)(rnext(r) % 255) - 127);
            for (int64_t b = 0; b < k / 32 * n; b++) {
                if (b % 3 == 0) for (int t = 0; t < 32; t++) q[b * 32 + t] = (t & 1) ? -127 : 127;
                qd[b] = 1.0f;
                qs[b] = 0;
                for (int t = 0; t < 32; t++) qs[b] += q[b * 32 + t];
            }
            float *x = calloc((size_t)(k * n), sizeof(float));
            struct moe_acts a = {.k = k, .n = n, .x = x, .ldx = k, .q = q, .qd = qd, .qs = qs};
            struct moe_mat w = {.type = MOE_W_Q8_0, .rows = rows, .cols = k, .data = wd};
            float *y = malloc(sizeof(float) * (size_t)(rows * n));
            (n == 1 ? kt->gemv : kt->gemm)[MOE_W_Q8_0](&w, 0, rows, &a, y, rows);
            for (int j = 0; j < n; j++)
                for (int64_t i = 0; i < rows; i++) {
                    int64_t want = 0;
                    for (int64_t t = 0; t < k; t++) {
                        int8_t wq;
                        memcpy(&wq, wd + i * rb + (t / 32) * MOE_Q8_0_BYTES + 2 + t % 32, 1);
                        want += (int64_t)wq * q[j * k + t];
                    }
                    if ((double)y[j * rows + i] != (double)want)
                        fail_msg("k=%lld n=%d: y[%d][%lld] = %.1f, exact integer sum %lld", (long long)k, n, j,
                                 (long long)i, y[j * rows + i], (long long)want);
                }
            free(wd); free(q); free(qd); free(qs); free(x); free(y);
        }
}

static void test_quant_act(const struct moe_kernels *kt, struct rng *r)
{
    static const int64_t ks[] = {32, 64, 96, 2048, 4160, 7168};
    for (size_t ki = 0; ki < 6; ki++) {
        const int64_t k = ks[ki];
        float *x = malloc(sizeof(float) * (size_t)k);
        for (int64_t i = 0; i < k; i++) {
            int blk = (int)(i / 32);
            float mag = ldexpf(1.0f, (blk * 7) % 40 - 20);
            x[i] = rsym(r) * mag;
            if (blk % 5 == 1) x[i] = 0.0f;                                   /* all-zero block */
            if (blk % 5 == 2) x[i] = (i % 32 == 0) ? 127.0f : (float)((int)(rnext(r) % 200) - 100) + 0.5f; /* ties */
        }
        int8_t *q1 = malloc((size_t)k), *q2 = malloc((size_t)k);
        float *d1 = malloc(sizeof(float) * (size_t)(k / 32)), *d2 = malloc(sizeof(float) * (size_t)(k / 32));
        int32_t *s1 = malloc(sizeof(int32_t) * (size_t)(k / 32)), *s2 = malloc(sizeof(int32_t) * (size_t)(k / 32));
        moe_quantize_act_q8_ref(q1, d1, s1, x, k);
        kt->quantize_act(q2, d2, s2, x, k);
        assert_memory_equal(q1, q2, (size_t)k);
        assert_memory_equal(d1, d2, sizeof(float) * (size_t)(k / 32));
        assert_memory_equal(s1, s2, sizeof(int32_t) * (size_t)(k / 32));
        free(x); free(q1); free(q2); free(d1); free(d2); free(s1); free(s2);
    }
}

static const int64_t vec_sizes[] = {1, 3, 15, 16, 17, 31, 33, 100, 1000, 7168};

static void check_close(const float *got, const float *want, int64_t n, double rel, double absol, const char *what)
{
    for (int64_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - (double)want[i]);
        if (!(err <= rel * fabs((double)want[i]) + absol))
            fail_msg("%s n=%lld: [%lld] = %.9g, reference %.9g", what, (long long)n, (long long)i, got[i], want[i]);
    }
}

static void test_vec(const struct moe_kernels *kt, enum op op, struct rng *r)
{
    for (size_t vi = 0; vi < sizeof vec_sizes / sizeof vec_sizes[0]; vi++) {
        const int64_t n = vec_sizes[vi];
        float *x = malloc(sizeof(float) * (size_t)n + 64), *b = malloc(sizeof(float) * (size_t)n + 64);
        float *w = malloc(sizeof(float) * (size_t)n), *y1 = malloc(sizeof(float) * (size_t)n + 64);
        float *y2 = malloc(sizeof(float) * (size_t)n + 64);
        for (int64_t i = 0; i < n; i++) {
            x[i] = rsym(r) * (i % 7 == 0 ? 90.0f : 8.0f);
            b[i] = rsym(r) * 3.0f;
            w[i] = rsym(r) * 2.0f;
        }
        if (n > 3) { x[1] = 0.0f; x[2] = -100.0f; x[3] = 100.0f; }
        switch (op) {
        case OP_SILU:
            moe_ref_silu(y1, x, n); kt->silu(y2, x, n);
            check_close(y2, y1, n, 2e-6, 1e-30, "silu");
            memcpy(y2, x, sizeof(float) * (size_t)n); kt->silu(y2, y2, n);   /* in place */
            check_close(y2, y1, n, 2e-6, 1e-30, "silu in place");
            break;
        case OP_SIGMOID:
            moe_ref_sigmoid(y1, x, n); kt->sigmoid(y2, x, n);
            check_close(y2, y1, n, 2e-6, 1e-30, "sigmoid");
            break;
        case OP_SILU_MUL:
            moe_ref_silu_mul(y1, x, b, n); kt->silu_mul(y2, x, b, n);
            check_close(y2, y1, n, 2e-6, 1e-30, "silu_mul");
            memcpy(y2, x, sizeof(float) * (size_t)n); kt->silu_mul(y2, y2, b, n);
            check_close(y2, y1, n, 2e-6, 1e-30, "silu_mul in place");
            break;
        case OP_SOFTMAX:
            for (int64_t i = 0; i < n; i++) x[i] *= 0.5f;
            memcpy(y1, x, sizeof(float) * (size_t)n); memcpy(y2, x, sizeof(float) * (size_t)n);
            moe_ref_softmax(y1, n); kt->softmax(y2, n);
            check_close(y2, y1, n, 1e-5, 1e-30, "softmax");
            break;
        case OP_RMSNORM:
            moe_ref_rmsnorm(y1, x, w, n, 1e-6f); kt->rmsnorm(y2, x, w, n, 1e-6f);
            check_close(y2, y1, n, 1e-5, 1e-30, "rmsnorm");
            memcpy(y2, x, sizeof(float) * (size_t)n); kt->rmsnorm(y2, y2, w, n, 1e-6f);
            check_close(y2, y1, n, 1e-5, 1e-30, "rmsnorm in place");
            break;
        default: break;
        }
        free(x); free(b); free(w); free(y1); free(y2);
    }
}

static void test_rope(const struct moe_kernels *kt, struct rng *r)
{
    static const int64_t halves[] = {1, 3, 8, 16, 32, 33, 64};
    static const float positions[] = {0.0f, 1.0f, 7.0f, 4095.0f, 16383.0f, 100000.0f};
    for (size_t hi = 0; hi < 7; hi++)
        for (size_t pi = 0; pi < 6; pi++) {
            const int64_t half = halves[hi];
            float inv[64], c1[64], s1[64], c2[64], s2[64];
            struct moe_yarn p = {.theta = 10000.0f, .factor = hi % 2 ? 40.0f : 1.0f, .original_max = 4096,
                                 .beta_fast = 32.0f, .beta_slow = 1.0f};
            moe_yarn_inv_freq(inv, 2 * half, &p);
            moe_ref_rope_sincos(c1, s1, inv, half, positions[pi]);
            kt->rope_sincos(c2, s2, inv, half, positions[pi]);
            check_close(c2, c1, half, 0, 2e-6, "rope_sincos cos");
            check_close(s2, s1, half, 0, 2e-6, "rope_sincos sin");
            /* apply to 5 vectors with a stride larger than the vector */
            const int64_t nvec = 5, stride = 2 * half + 3;
            float *x1 = malloc(sizeof(float) * (size_t)(nvec * stride)), *x2 = malloc(sizeof(float) * (size_t)(nvec * stride));
            for (int64_t i = 0; i < nvec * stride; i++) x1[i] = x2[i] = rsym(r) * 4.0f;
            moe_ref_rope_apply(x1, nvec, stride, c1, s1, half);
            kt->rope_apply(x2, nvec, stride, c1, s1, half);
            for (int64_t v = 0; v < nvec; v++)
                for (int64_t i = 0; i < stride; i++) {
                    double err = fabs((double)x1[v * stride + i] - (double)x2[v * stride + i]);
                    if (i >= 2 * half) {
                        if (err != 0) fail_msg("rope_apply wrote past its vector (half %lld)", (long long)half);
                    } else if (!(err <= 1e-6 * 8.0 + 0)) {
                        fail_msg("rope_apply half=%lld vec %lld [%lld]: %.9g vs %.9g", (long long)half, (long long)v,
                                 (long long)i, x2[v * stride + i], x1[v * stride + i]);
                    }
                }
            free(x1); free(x2);
        }
}

static void run_case(void **state)
{
    const struct tcase *c = *state;
    if (!c->e->runnable) {
        print_message("[  SKIP    ] %s: this CPU cannot run table %s (needs %s)\n", c->name, c->e->k->name, c->e->needs);
        skip();
        return;
    }
    const struct moe_kernels *kt = c->e->k;
    struct rng r = {0x243F6A8885A308D3ull ^ ((uint64_t)c->op * 1315423911u) ^ ((uint64_t)c->type << 40)};
    switch (c->op) {
    case OP_GEMV: test_gemv(kt, c->type, &r); break;
    case OP_GEMM: test_gemm(kt, c->type, &r); break;
    case OP_GEMM_T: test_gemm_t(kt, c->type, &r); break;
    case OP_Q8_EXACT: test_q8_exact(kt, &r); break;
    case OP_QUANT_ACT: test_quant_act(kt, &r); break;
    case OP_ROPE: test_rope(kt, &r); break;
    default: test_vec(kt, c->op, &r); break;
    }
}

int main(void)
{
    quick = getenv("MOECPU_TEST_QUICK") && atoi(getenv("MOECPU_TEST_QUICK"));
    int ne;
    const struct moe_isa_entry *e = moe_isa_list(&ne);
    struct tcase *cases = calloc((size_t)ne * 32, sizeof *cases);
    struct CMUnitTest *tests = calloc((size_t)ne * 32, sizeof *tests);
    int nt = 0;
    for (int i = 0; i < ne; i++)
        for (int op = 0; op < OP_COUNT; op++) {
            int ntypes = (op == OP_GEMV || op == OP_GEMM || op == OP_GEMM_T) ? MOE_W_COUNT : 1;
            for (int t = 0; t < ntypes; t++) {
                struct tcase *c = &cases[nt];
                c->e = &e[i];
                c->op = (enum op)op;
                c->type = (op == OP_GEMV || op == OP_GEMM || op == OP_GEMM_T) ? (enum moe_wtype)t : MOE_W_Q8_0;
                if (op == OP_GEMV || op == OP_GEMM || op == OP_GEMM_T)
                    snprintf(c->name, sizeof c->name, "%s/%s_%s", e[i].k->name, op_names[op], moe_wtype_name(c->type));
                else
                    snprintf(c->name, sizeof c->name, "%s/%s", e[i].k->name, op_names[op]);
                tests[nt] = (struct CMUnitTest){.name = c->name, .test_func = run_case, .initial_state = c};
                nt++;
            }
        }
    int rc = _cmocka_run_group_tests("kernels", tests, (size_t)nt, NULL, NULL);
    free(cases);
    free(tests);
    return rc;
}
