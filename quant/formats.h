/*
 * quant/formats.h — number formats moecpu reads and writes, bit for bit.
 *
 * FP8 e4m3fn (DeepSeek-V3 weights), bf16, fp16, GGUF Q8_0 blocks, DeepSeek's
 * 128x128 block-scaled FP8 matrices, and the 8-bit activation quantizer that
 * the int8 dot-product kernels consume.  Everything here is plain scalar C:
 * it is the reference the SIMD kernels in simd/ are tested against.
 */
#ifndef MOE_QUANT_FORMATS_H
#define MOE_QUANT_FORMATS_H

#include <stddef.h>
#include <stdint.h>

/* ---- FP8 e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no
 * infinities; 0x7F and 0xFF are NaN; largest finite magnitude 448. */
#define MOE_FP8_MAX 448.0f
float moe_fp8_to_f32(uint8_t v);
/* Round to nearest even; magnitudes above 448 saturate to +-448; NaN stays
 * NaN (0x7F with the sign of the input); +-inf saturates to +-448. */
uint8_t moe_f32_to_fp8(float f);

/* ---- bf16: the top 16 bits of an IEEE binary32. */
float moe_bf16_to_f32(uint16_t v);
/* Round to nearest even; NaN stays a (quiet) NaN. */
uint16_t moe_f32_to_bf16(float f);

/* ---- fp16: IEEE binary16, subnormals and infinities included. */
float moe_f16_to_f32(uint16_t v);
/* Round to nearest even; overflow gives +-inf; NaN stays a (quiet) NaN. */
uint16_t moe_f32_to_f16(float f);

/* ---- GGUF Q8_0: blocks of 32 weights, 34 bytes each, laid out exactly as
 * llama.cpp stores them: fp16 scale d = amax/127, then 32 int8 values
 * q = round(x/d) (round half away from zero).  Value = d * q. */
#define MOE_Q8_0_BLOCK 32
#define MOE_Q8_0_BYTES 34
struct moe_block_q8_0 {
    uint16_t d;      /* fp16 scale */
    int8_t   qs[32]; /* quants */
};
_Static_assert(sizeof(struct moe_block_q8_0) == MOE_Q8_0_BYTES, "Q8_0 block must be 34 bytes");

/* Quantize k floats (k % 32 == 0) into k/32 blocks, byte-exact with GGUF. */
void moe_quantize_row_q8_0(struct moe_block_q8_0 *dst, const float *x, int64_t k);
/* Dequantize k values (k % 32 == 0). */
void moe_dequantize_row_q8_0(float *dst, const struct moe_block_q8_0 *src, int64_t k);

/* ---- DeepSeek FP8 matrices: an e4m3 matrix [rows][cols] plus one FP32
 * scale per 128x128 block, [ceil(rows/128)][ceil(cols/128)] (the
 * checkpoint's `weight_scale_inv`); value = e4m3 * scale. */
#define MOE_FP8_BLOCK 128
static inline int64_t moe_fp8_scale_rows(int64_t rows) { return (rows + MOE_FP8_BLOCK - 1) / MOE_FP8_BLOCK; }
static inline int64_t moe_fp8_scale_cols(int64_t cols) { return (cols + MOE_FP8_BLOCK - 1) / MOE_FP8_BLOCK; }
/* Quantize as DeepSeek does: per block, scale = amax/448 (1 for an all-zero
 * block), e4m3 = round-to-nearest-even(x/scale). */
void moe_quantize_fp8_block128(uint8_t *q, float *scale, const float *x, int64_t rows, int64_t cols);
/* Dequantize one row r of such a matrix into dst[cols]. */
void moe_dequantize_row_fp8(float *dst, const uint8_t *q, const float *scale, int64_t r, int64_t cols);

/* ---- Activation quantizer for the int8 kernels (Q8_0 weights).
 * Per block of 32: d = amax/127 as float (not rounded to fp16), id = 1/d
 * (0 when d == 0), q = nearest-even(x*id) as int8 (|q| <= 127), and
 * s = sum of the 32 q.  SIMD versions must produce identical bytes: the
 * operations are exactly float amax, one float division, float products and
 * round-to-nearest-even, which every ISA does identically. */
void moe_quantize_act_q8_ref(int8_t *q, float *d, int32_t *s, const float *x, int64_t k);

#endif
