/*
 * simd/neon_internal.h — kernels of simd/neon.c (baseline ARMv8.0-A Advanced
 * SIMD) that the neon_dotprod table reuses unchanged.  Private to simd/:
 * only simd/neon.c defines these and only simd/neon_dotprod.c uses them.
 * Contracts are those of struct moe_kernels (simd/kernels.h).
 */
#ifndef MOE_SIMD_NEON_INTERNAL_H
#define MOE_SIMD_NEON_INTERNAL_H

#include "kernels.h"

void moe_gemv_f32_f32__neon(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                            float *y, int64_t ldy);
void moe_gemv_f16_f32__neon(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                            float *y, int64_t ldy);
void moe_gemv_bf16_f32__neon(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                             float *y, int64_t ldy);
void moe_gemv_fp8_f32__neon(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                            float *y, int64_t ldy);

void moe_gemm_f32_f32__neon(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                            float *y, int64_t ldy);
void moe_gemm_f16_f32__neon(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                            float *y, int64_t ldy);
void moe_gemm_bf16_f32__neon(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                             float *y, int64_t ldy);
void moe_gemm_fp8_f32__neon(const struct moe_mat *w, int64_t row0, int64_t row1, const struct moe_acts *a,
                            float *y, int64_t ldy);

void moe_gemm_t__neon(const struct moe_mat *w, int64_t row0, int64_t row1, int64_t col0, int64_t col1, const float *x,
                      int64_t ldx, int n, float *y, int64_t ldy);

void moe_quantize_act__neon(int8_t *q, float *d, int32_t *s, const float *x, int64_t k);
void moe_rmsnorm__neon(float *y, const float *x, const float *w, int64_t n, float eps);
void moe_softmax__neon(float *x, int64_t n);
void moe_silu__neon(float *y, const float *x, int64_t n);
void moe_sigmoid__neon(float *y, const float *x, int64_t n);
void moe_silu_mul__neon(float *y, const float *a, const float *b, int64_t n);
void moe_rope_sincos__neon(float *cos_out, float *sin_out, const float *inv_freq, int64_t half, float pos);
void moe_rope_apply__neon(float *x, int64_t n_vec, int64_t stride, const float *cos_in, const float *sin_in,
                          int64_t half);

#endif
