/*
 * simd/kernels.h — the kernel table: every compute kernel the engine calls,
 * one table per instruction set, chosen once at start-up (simd/dispatch.c).
 *
 * Contract shared by all kernels:
 *  - Weights are row-major [rows][cols] matrices (rows = output features,
 *    cols = K = input features) described by struct moe_mat and read in
 *    place (they usually point into a read-only mmap: no alignment is
 *    guaranteed beyond the element's natural one, and Q8_0 rows are 34-byte
 *    blocks with no alignment at all).
 *  - Matrix products compute y[j][r] = sum_k W[r][k] * x[j][k] for output
 *    rows r in [row0, row1) and activation columns j in [0, n): callers
 *    split rows over threads.  Sums are FP32 (int32 inside Q8_0 blocks).
 *  - Activations are FP32 [n][ldx]; Q8_0 kernels instead read the int8 form
 *    made by quantize_act (struct moe_acts holds both).
 *  - Kernels never allocate, never print, never fail: shapes are checked by
 *    the caller (assert in debug builds).
 */
#ifndef MOE_SIMD_KERNELS_H
#define MOE_SIMD_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "../quant/ref.h"

/* y[j * ldy + r] for j < a->n, row0 <= r < row1. */
typedef void (*moe_matmul_fn)(const struct moe_mat *w, int64_t row0, int64_t row1,
                              const struct moe_acts *a, float *y, int64_t ldy);

/* The transposed product y = x^T W over a row range of W:
 *   y[j * ldy + c] = sum_{row0 <= r < row1} x[j * ldx + (r - row0)] * W[r][c]
 * for col0 <= c < col1 and j < n; rows added in ascending order, sums FP32.
 * Activations are FP32 for every weight type (Q8_0 and FP8 weights are
 * dequantized: value = d * q, e4m3 * block scale).  Used where attention
 * multiplies by a transposed weight (MLA's absorbed W_UK, the latent cache
 * times the attention probabilities); callers split columns over threads. */
typedef void (*moe_matmul_t_fn)(const struct moe_mat *w, int64_t row0, int64_t row1, int64_t col0, int64_t col1,
                                const float *x, int64_t ldx, int n, float *y, int64_t ldy);

struct moe_kernels {
    const char *name;      /* "scalar", "avx2", "avx512", "avx512_vnni", "neon", "neon_dotprod" */
    const char *family;    /* "scalar", "avx2", "avx512", "neon": what MOECPU_ISA names */

    /* One activation column (decode): memory-bound, a->n == 1. */
    moe_matmul_fn gemv[MOE_W_COUNT];
    /* Many columns (prefill, tokens grouped per expert): register-blocked. */
    moe_matmul_fn gemm[MOE_W_COUNT];
    /* y = x^T W (above), every weight type. */
    moe_matmul_t_fn gemm_t[MOE_W_COUNT];

    /* k % 32 == 0; writes q[k], d[k/32], s[k/32]; bytes identical to the
     * reference on every ISA. */
    void (*quantize_act)(int8_t *q, float *d, int32_t *s, const float *x, int64_t k);

    /* y = x / sqrt(mean(x^2) + eps) * w; y may alias x. */
    void (*rmsnorm)(float *y, const float *x, const float *w, int64_t n, float eps);
    /* In place: x = exp(x - max) / sum. */
    void (*softmax)(float *x, int64_t n);
    /* y = x * sigmoid(x); y may alias x. */
    void (*silu)(float *y, const float *x, int64_t n);
    /* y = 1 / (1 + exp(-x)); y may alias x. */
    void (*sigmoid)(float *y, const float *x, int64_t n);
    /* y = silu(a) * b (the SwiGLU gate); y may alias a or b. */
    void (*silu_mul)(float *y, const float *a, const float *b, int64_t n);
    /* cos[i] = cos(pos * inv_freq[i]), sin[i] likewise, i < half. */
    void (*rope_sincos)(float *cos_out, float *sin_out, const float *inv_freq, int64_t half, float pos);
    /* Rotate interleaved pairs (x[2i], x[2i+1]) by the angle of (cos[i], sin[i])
     * in n_vec vectors of 2*half floats, vector v at x + v*stride. */
    void (*rope_apply)(float *x, int64_t n_vec, int64_t stride, const float *cos_in, const float *sin_in,
                       int64_t half);
};

/* The tables compiled into this binary (NULL where not built). */
extern const struct moe_kernels moe_kernels_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const struct moe_kernels moe_kernels_avx2;
extern const struct moe_kernels moe_kernels_avx512;
extern const struct moe_kernels moe_kernels_avx512_vnni;
#endif
#if defined(__aarch64__)
extern const struct moe_kernels moe_kernels_neon;
extern const struct moe_kernels moe_kernels_neon_dotprod;
#endif

/* ---- Dispatch (simd/dispatch.c) ---- */

/* One compiled table and whether this CPU can run it. */
struct moe_isa_entry {
    const struct moe_kernels *k;
    int runnable;
    const char *needs;     /* CPU features it needs, human readable */
};

/* All compiled tables, best first.  *count receives the number. */
const struct moe_isa_entry *moe_isa_list(int *count);

/* Choose a table: `want` is NULL/"" / "auto" (best runnable), an exact
 * table name ("scalar", "avx2", "avx512", "avx512_vnni", "neon",
 * "neon_dotprod"), or else a family name (its best runnable table).
 * Returns NULL and writes a reason into err (if given) when the name is
 * unknown or the CPU cannot run it. */
const struct moe_kernels *moe_kernels_select(const char *want, char *err, size_t errlen);

/* The process-wide table: chosen on first call from MOECPU_ISA (or the best
 * runnable).  NULL with a reason in err if MOECPU_ISA names a table this CPU
 * cannot run. */
const struct moe_kernels *moe_kernels_get(char *err, size_t errlen);

/* The CPU: its name and the features relevant to moecpu's kernels (from
 * cpuinfo, plus CPUID / getauxval for what this cpuinfo lacks). */
struct moe_cpu_feature {
    const char *name;
    int present;
};
const char *moe_cpu_name(void);
const struct moe_cpu_feature *moe_cpu_features(int *count);

#endif
