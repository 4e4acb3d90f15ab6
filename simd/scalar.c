/*
 * simd/scalar.c — the portable kernel table.  Complete on its own (every
 * platform can run moecpu through it) and built for the baseline ISA.
 * Matrix products are the reference code itself; a blocked scalar GEMM is
 * not worth its complexity since every supported CPU has a SIMD table.
 */
#include "kernels.h"

static void moe_matmul__scalar(const struct moe_mat *w, int64_t row0, int64_t row1,
                               const struct moe_acts *a, float *y, int64_t ldy)
{
    moe_ref_matmul(w, row0, row1, a, y, ldy);
}

const struct moe_kernels moe_kernels_scalar = {
    .name = "scalar",
    .family = "scalar",
    .gemv = {moe_matmul__scalar, moe_matmul__scalar, moe_matmul__scalar, moe_matmul__scalar, moe_matmul__scalar},
    .gemm = {moe_matmul__scalar, moe_matmul__scalar, moe_matmul__scalar, moe_matmul__scalar, moe_matmul__scalar},
    .gemm_t = {moe_ref_matmul_t, moe_ref_matmul_t, moe_ref_matmul_t, moe_ref_matmul_t, moe_ref_matmul_t},
    .quantize_act = moe_quantize_act_q8_ref,
    .rmsnorm = moe_ref_rmsnorm,
    .softmax = moe_ref_softmax,
    .silu = moe_ref_silu,
    .sigmoid = moe_ref_sigmoid,
    .silu_mul = moe_ref_silu_mul,
    .rope_sincos = moe_ref_rope_sincos,
    .rope_apply = moe_ref_rope_apply,
};
