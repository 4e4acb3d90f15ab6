/*
 * quant/formats.c — scalar conversions for e4m3, bf16, fp16, Q8_0, DeepSeek
 * block FP8 and the int8 activation quantizer.  Bit manipulation goes
 * through memcpy (no type punning through pointers).
 */
#include "formats.h"

#include <math.h>
#include <string.h>

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* ---- e4m3fn ---- */

float moe_fp8_to_f32(uint8_t v)
{
    int sign = v >> 7, exp = (v >> 3) & 0xF, man = v & 7;
    float mag;
    if (exp == 0xF && man == 7)
        return sign ? -NAN : NAN;
    if (exp == 0)
        mag = ldexpf((float)man, -9);            /* subnormal: man/8 * 2^-6 */
    else
        mag = ldexpf((float)(8 + man), exp - 10); /* (1 + man/8) * 2^(exp-7) */
    return sign ? -mag : mag;
}

uint8_t moe_f32_to_fp8(float f)
{
    uint32_t u = f32_bits(f);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80);
    float a = fabsf(f);
    if (isnan(f))
        return (uint8_t)(sign | 0x7F);
    if (a >= MOE_FP8_MAX)                 /* saturate (inf included) */
        return (uint8_t)(sign | 0x7E);
    if (a < ldexpf(1.0f, -6)) {
        /* subnormal range: multiples of 2^-9; nearbyint rounds to even */
        int m = (int)nearbyintf(a * 512.0f);  /* exact: a*2^9 is a scaling */
        return (uint8_t)(sign | m);           /* m == 8 is the smallest normal, 0x08 */
    }
    /* normal: round the fp32 mantissa (23 bits) to 3 bits, nearest even */
    uint32_t b = f32_bits(a);
    int e = (int)(b >> 23) - 127;          /* -6..8 */
    uint32_t man = b & 0x7FFFFF;
    uint32_t keep = man >> 20, rest = man & 0xFFFFF;
    if (rest > 0x80000 || (rest == 0x80000 && (keep & 1)))
        keep++;
    if (keep == 8) { keep = 0; e++; }
    if (e > 8 || (e == 8 && keep == 7))   /* rounded past 448 */
        return (uint8_t)(sign | 0x7E);
    return (uint8_t)(sign | ((e + 7) << 3) | keep);
}

/* ---- bf16 ---- */

float moe_bf16_to_f32(uint16_t v) { return bits_f32((uint32_t)v << 16); }

uint16_t moe_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7FFFFFFF) > 0x7F800000)
        return (uint16_t)((u >> 16) | 0x40);       /* quiet NaN */
    u += 0x7FFF + ((u >> 16) & 1);               /* nearest even */
    return (uint16_t)(u >> 16);
}

/* ---- fp16 ---- */

float moe_f16_to_f32(uint16_t v)
{
    uint32_t sign = (uint32_t)(v & 0x8000) << 16;
    int exp = (v >> 10) & 0x1F;
    uint32_t man = v & 0x3FF;
    if (exp == 0x1F)
        return bits_f32(sign | 0x7F800000 | (man << 13));
    float mag = exp == 0 ? ldexpf((float)man, -24) : ldexpf((float)(1024 + man), exp - 25);
    return bits_f32(sign | f32_bits(mag));
}

uint16_t moe_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7FFFFFFF;
    if (a > 0x7F800000)
        return (uint16_t)(sign | 0x7E00 | ((a >> 13) & 0x3FF));   /* quiet NaN */
    if (a >= 0x477FF000)               /* >= 65520: rounds to inf */
        return (uint16_t)(sign | 0x7C00);
    if (a < 0x38800000) {              /* below 2^-14: subnormal or zero */
        float m = bits_f32(a) * 16777216.0f;   /* in units of 2^-24, exact */
        return (uint16_t)(sign | (uint16_t)nearbyintf(m));
    }
    uint32_t e = (a >> 23) - 127 + 15;
    uint32_t man = a & 0x7FFFFF;
    uint32_t keep = man >> 13, rest = man & 0x1FFF;
    uint32_t h = (e << 10) | keep;
    if (rest > 0x1000 || (rest == 0x1000 && (keep & 1)))
        h++;                           /* carries into the exponent correctly */
    return (uint16_t)(sign | h);
}

/* ---- Q8_0 (GGUF) ---- */

void moe_quantize_row_q8_0(struct moe_block_q8_0 *dst, const float *x, int64_t k)
{
    for (int64_t b = 0; b < k / 32; b++) {
        const float *xb = x + b * 32;
        float amax = 0.0f;
        for (int i = 0; i < 32; i++)
            amax = fmaxf(amax, fabsf(xb[i]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        dst[b].d = moe_f32_to_f16(d);
        for (int i = 0; i < 32; i++)
            dst[b].qs[i] = (int8_t)roundf(xb[i] * id);  /* half away from zero, as GGUF */
    }
}

void moe_dequantize_row_q8_0(float *dst, const struct moe_block_q8_0 *src, int64_t k)
{
    for (int64_t b = 0; b < k / 32; b++) {
        const float d = moe_f16_to_f32(src[b].d);
        for (int i = 0; i < 32; i++)
            dst[b * 32 + i] = d * (float)src[b].qs[i];
    }
}

/* ---- DeepSeek block FP8 ---- */

void moe_quantize_fp8_block128(uint8_t *q, float *scale, const float *x, int64_t rows, int64_t cols)
{
    const int64_t sr = moe_fp8_scale_rows(rows), sc = moe_fp8_scale_cols(cols);
    for (int64_t br = 0; br < sr; br++)
        for (int64_t bc = 0; bc < sc; bc++) {
            int64_t r0 = br * 128, r1 = r0 + 128 < rows ? r0 + 128 : rows;
            int64_t c0 = bc * 128, c1 = c0 + 128 < cols ? c0 + 128 : cols;
            float amax = 0.0f;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++)
                    amax = fmaxf(amax, fabsf(x[r * cols + c]));
            const float s = amax > 0.0f ? amax / MOE_FP8_MAX : 1.0f;
            scale[br * sc + bc] = s;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++)
                    q[r * cols + c] = moe_f32_to_fp8(x[r * cols + c] / s);
        }
}

void moe_dequantize_row_fp8(float *dst, const uint8_t *q, const float *scale, int64_t r, int64_t cols)
{
    const float *srow = scale + (r / 128) * moe_fp8_scale_cols(cols);
    for (int64_t c = 0; c < cols; c++)
        dst[c] = moe_fp8_to_f32(q[r * cols + c]) * srow[c / 128];
}

/* ---- int8 activations ---- */

void moe_quantize_act_q8_ref(int8_t *q, float *d, int32_t *s, const float *x, int64_t k)
{
    for (int64_t b = 0; b < k / 32; b++) {
        const float *xb = x + b * 32;
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) {
            float a = fabsf(xb[i]);
            amax = a > amax ? a : amax;
        }
        const float db = amax / 127.0f;
        const float id = db != 0.0f ? 1.0f / db : 0.0f;
        int32_t sum = 0;
        for (int i = 0; i < 32; i++) {
            float v = nearbyintf(xb[i] * id);   /* current mode: nearest even */
            v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
            q[b * 32 + i] = (int8_t)v;
            sum += (int8_t)v;
        }
        d[b] = db;
        s[b] = sum;
    }
}
