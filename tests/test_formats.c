/*
 * tests/test_formats.c — number formats against independent oracles:
 * the e4m3 spec formula evaluated in double, the compiler's own _Float16
 * conversions, a nearest-value search for bf16/e4m3 encoding, hand-worked
 * Q8_0 blocks, and YaRN values computed by a separate Python transcription
 * of DeepSeek's precompute_freqs_cis (numbers quoted below).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../quant/formats.h"
#include "../quant/ref.h"

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd32(void)
{
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* e4m3fn straight from the definition, in double. */
static double e4m3_spec(unsigned v)
{
    int s = v >> 7, e = (v >> 3) & 15, m = v & 7;
    double mag = e == 0 ? (m / 8.0) * pow(2, -6) : (1 + m / 8.0) * pow(2, e - 7);
    return s ? -mag : mag;
}

static void test_fp8_decode_all_codes(void **state)
{
    (void)state;
    for (unsigned v = 0; v < 256; v++) {
        float f = moe_fp8_to_f32((uint8_t)v);
        if ((v & 0x7F) == 0x7F) {
            assert_true(isnan(f));
            continue;
        }
        assert_true((double)f == e4m3_spec(v));
        assert_int_equal(signbit(f) != 0, (v >> 7) != 0);
    }
    /* anchors from the OCP FP8 spec */
    assert_true(moe_fp8_to_f32(0x7E) == 448.0f);
    assert_true(moe_fp8_to_f32(0xFE) == -448.0f);
    assert_true(moe_fp8_to_f32(0x38) == 1.0f);
    assert_true(moe_fp8_to_f32(0x01) == 0x1p-9f);
    assert_true(moe_fp8_to_f32(0x07) == 7 * 0x1p-9f);
    assert_true(moe_fp8_to_f32(0x08) == 0x1p-6f);
}

/* Nearest e4m3 by exhaustive search, ties to the even code (even mantissa). */
static uint8_t e4m3_nearest(float x)
{
    if (isnan(x)) return signbit(x) ? 0xFF : 0x7F;
    double a = fabs((double)x);
    if (a >= 448) return signbit(x) ? 0xFE : 0x7E;
    int best = 0;
    double bd = INFINITY;
    for (int v = 0; v <= 0x7E; v++) {
        double d = fabs(e4m3_spec((unsigned)v) - a);
        if (d < bd || (d == bd && (v & 1) == 0)) { bd = d; best = v; }
    }
    return (uint8_t)(best | (signbit(x) ? 0x80 : 0));
}

static void test_fp8_encode(void **state)
{
    (void)state;
    /* every finite code round-trips */
    for (unsigned v = 0; v < 256; v++)
        if ((v & 0x7F) != 0x7F)
            assert_int_equal(moe_f32_to_fp8(moe_fp8_to_f32((uint8_t)v)), v);
    /* midpoints between neighbours go to the even code */
    for (unsigned v = 0; v < 0x7E; v++) {
        float mid = (float)((e4m3_spec(v) + e4m3_spec(v + 1)) / 2);
        unsigned want = (v & 1) ? v + 1 : v;
        assert_int_equal(moe_f32_to_fp8(mid), want);
        assert_int_equal(moe_f32_to_fp8(-mid), want | 0x80);
    }
    /* random values over the whole range, against the exhaustive search */
    for (int i = 0; i < 20000; i++) {
        float x = ldexpf((float)(rnd32() & 0xFFFFFF) / 0x1p24f, (int)(rnd32() % 28) - 14);
        if (rnd32() & 1) x = -x;
        assert_int_equal(moe_f32_to_fp8(x), e4m3_nearest(x));
    }
    assert_int_equal(moe_f32_to_fp8(1000.0f), 0x7E);
    assert_int_equal(moe_f32_to_fp8(-1e30f), 0xFE);
    assert_int_equal(moe_f32_to_fp8(INFINITY), 0x7E);
    assert_int_equal(moe_f32_to_fp8(-INFINITY), 0xFE);
    assert_int_equal(moe_f32_to_fp8(449.0f), 0x7E);
    assert_int_equal(moe_f32_to_fp8(NAN) & 0x7F, 0x7F);
    assert_int_equal(moe_f32_to_fp8(0x1p-11f), 0x00);    /* below half the smallest subnormal */
    assert_int_equal(moe_f32_to_fp8(0x1.8p-10f), 0x01);  /* 0.75 * 2^-9 rounds up */
}

static void test_fp16(void **state)
{
    (void)state;
#ifdef __FLT16_MAX__
    /* all 65536 codes against the compiler's conversion */
    for (uint32_t v = 0; v < 65536; v++) {
        uint16_t h = (uint16_t)v;
        _Float16 hf;
        memcpy(&hf, &h, 2);
        float want = (float)hf, got = moe_f16_to_f32(h);
        if (isnan(want)) { assert_true(isnan(got)); continue; }
        assert_int_equal(f2u(got), f2u(want));
    }
    /* encode: edge cases and random bit patterns */
    float edge[] = {0.0f, -0.0f, 65504.0f, 65519.0f, 65520.0f, 1e9f, -1e9f, 0x1p-24f, 0x1p-25f, 0x1.8p-25f,
                    0x1p-14f, 0x1.ffcp-15f, 1.0f + 0x1p-11f, 1.0f + 0x3p-11f, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
        _Float16 hf = (_Float16)edge[i];
        uint16_t want;
        memcpy(&want, &hf, 2);
        assert_int_equal(moe_f32_to_f16(edge[i]), want);
    }
    for (int i = 0; i < 200000; i++) {
        float x = u2f(rnd32());
        if (isnan(x)) { assert_true(isnan(moe_f16_to_f32(moe_f32_to_f16(x)))); continue; }
        _Float16 hf = (_Float16)x;
        uint16_t want;
        memcpy(&want, &hf, 2);
        assert_int_equal(moe_f32_to_f16(x), want);
    }
#else
    /* no _Float16 in this compiler: check against the spec formula */
    for (uint32_t v = 0; v < 0x7C00; v++) {
        int e = (int)(v >> 10), m = (int)(v & 0x3FF);
        double want = e == 0 ? m * pow(2, -24) : (1 + m / 1024.0) * pow(2, e - 15);
        assert_true((double)moe_f16_to_f32((uint16_t)v) == want);
        assert_int_equal(moe_f32_to_f16((float)want), v);
    }
#endif
}

static void test_bf16(void **state)
{
    (void)state;
    for (uint32_t v = 0; v < 65536; v++) {
        float f = moe_bf16_to_f32((uint16_t)v);
        assert_int_equal(f2u(f), v << 16);
    }
    for (int i = 0; i < 200000; i++) {
        uint32_t u = rnd32();
        float x = u2f(u);
        uint16_t got = moe_f32_to_bf16(x);
        if (isnan(x)) { assert_true(isnan(moe_bf16_to_f32(got))); continue; }
        /* the two candidates: truncate, and truncate + 1 ulp; pick the nearer, ties to even */
        uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);
        double dlo = fabs((double)x - (double)moe_bf16_to_f32(lo));
        double dhi = isinf(moe_bf16_to_f32(hi)) || isnan(moe_bf16_to_f32(hi)) ? INFINITY
                                                                              : fabs((double)moe_bf16_to_f32(hi) - (double)x);
        uint16_t want = dlo < dhi ? lo : dhi < dlo ? hi : ((lo & 1) ? hi : lo);
        if ((u & 0x7FFFFFFF) >= 0x7F7F8000 && (u & 0x7FFFFFFF) < 0x7F800000)
            want = (uint16_t)((u >> 16 & 0x8000) | 0x7F80);   /* rounds up to infinity */
        assert_int_equal(got, want);
    }
}

/* A hand-worked Q8_0 block: amax 254 -> d = 2 (fp16 0x4000); x/d rounded half away. */
static void test_q8_0_block(void **state)
{
    (void)state;
    float x[32] = {0};
    x[0] = 254.0f;   /* q 127 */
    x[1] = -5.0f;    /* -2.5 -> -3 (away from zero; nearest-even would give -2) */
    x[2] = 3.0f;     /* 1.5 -> 2 */
    x[3] = 1.0f;     /* 0.5 -> 1 (nearest-even would give 0) */
    x[4] = -254.0f;  /* -127 */
    x[5] = 100.9f;   /* 50.45 -> 50 */
    struct moe_block_q8_0 b[2];
    moe_quantize_row_q8_0(b, x, 32);
    unsigned char bytes[34];
    memcpy(bytes, b, 34);
    const unsigned char want[34] = {0x00, 0x40, 127, (unsigned char)-3, 2, 1, (unsigned char)-127, 50};
    assert_memory_equal(bytes, want, 34);
    /* zero block: d = 0, all q 0 */
    float z[32] = {0};
    moe_quantize_row_q8_0(b, z, 32);
    memcpy(bytes, b, 34);
    unsigned char zeros[34] = {0};
    assert_memory_equal(bytes, zeros, 34);
    /* dequantization error is at most d/2 (+ fp16 rounding of d) */
    float y[64], back[64];
    for (int i = 0; i < 64; i++) y[i] = ((float)(rnd32() % 20001) - 10000.0f) / 777.0f;
    moe_quantize_row_q8_0(b, y, 64);
    moe_dequantize_row_q8_0(back, b, 64);
    for (int blk = 0; blk < 2; blk++) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(y[blk * 32 + i]));
        for (int i = 0; i < 32; i++)
            assert_true(fabsf(back[blk * 32 + i] - y[blk * 32 + i]) <= amax / 127.0f * 0.5f + amax * 1e-3f);
    }
}

static void test_act_quantizer(void **state)
{
    (void)state;
    float x[64];
    int8_t q[64];
    float d[2];
    int32_t s[2];
    for (int i = 0; i < 32; i++) x[i] = 0.0f;
    x[0] = 127.0f; x[1] = 2.5f; x[2] = -3.5f; x[3] = 0.5f; x[4] = -127.0f;
    for (int i = 32; i < 64; i++) x[i] = 0.0f;
    moe_quantize_act_q8_ref(q, d, s, x, 64);
    assert_true(d[0] == 1.0f);
    assert_int_equal(q[0], 127);
    assert_int_equal(q[1], 2);    /* ties to even */
    assert_int_equal(q[2], -4);
    assert_int_equal(q[3], 0);
    assert_int_equal(q[4], -127);
    assert_int_equal(s[0], 127 + 2 - 4 + 0 - 127);
    assert_true(d[1] == 0.0f);
    assert_int_equal(s[1], 0);
}

static void test_fp8_block128(void **state)
{
    (void)state;
    const int64_t rows = 200, cols = 300;   /* partial blocks on both edges */
    float *x = malloc(sizeof(float) * rows * cols), *back = malloc(sizeof(float) * cols);
    uint8_t *q = malloc((size_t)(rows * cols));
    float scale[2 * 3];
    for (int64_t i = 0; i < rows * cols; i++)
        x[i] = ((float)(rnd32() % 20001) - 10000.0f) * ((i / cols) < 128 ? 1e-3f : 5.0f);
    x[5 * cols + 250] = 0;
    moe_quantize_fp8_block128(q, scale, x, rows, cols);
    for (int br = 0; br < 2; br++)
        for (int bc = 0; bc < 3; bc++) {
            float amax = 0;
            for (int64_t r = br * 128; r < rows && r < br * 128 + 128; r++)
                for (int64_t c = bc * 128; c < cols && c < bc * 128 + 128; c++)
                    amax = fmaxf(amax, fabsf(x[r * cols + c]));
            assert_true(scale[br * 3 + bc] == amax / 448.0f);
        }
    for (int64_t r = 0; r < rows; r++) {
        moe_dequantize_row_fp8(back, q, scale, r, cols);
        for (int64_t c = 0; c < cols; c++) {
            float s = scale[(r / 128) * 3 + c / 128];
            float v = x[r * cols + c];
            /* e4m3 has 3 mantissa bits: relative error <= 2^-4, or half a subnormal step */
            assert_true(fabsf(back[c] - v) <= fmaxf(fabsf(v) * 0.0625f, s * 0x1p-10f));
        }
    }
    free(x); free(back); free(q);
}

/* DeepSeek-V3's YaRN frequencies (dim 64, theta 10000, factor 40, original
 * 4096, beta_fast 32, beta_slow 1).  Expected values were computed with an
 * independent Python transcription of inference/model.py's
 * precompute_freqs_cis: correction range low = 10, high = 23; inv_freq[i] =
 * f_i/40 * ramp + f_i * (1 - ramp), ramp = clamp((i - 10) / 13, 0, 1),
 * f_i = 10000^(-2i/64). */
static void test_yarn(void **state)
{
    (void)state;
    struct moe_yarn p = {.theta = 10000.0f, .factor = 40.0f, .original_max = 4096, .beta_fast = 32.0f, .beta_slow = 1.0f};
    float f[32];
    moe_yarn_inv_freq(f, 64, &p);
    const struct { int i; double v; } want[] = {
        {0, 1.0},                       /* below the ramp: pure extrapolation */
        {10, 0.056234132519034905},      /* 10000^(-20/64), ramp 0 */
        {11, 0.03900692656714386},      /* ramp 1/13 */
        {16, 0.0055},       /* ramp 6/13 */
        {23, 3.33380358040831e-05},   /* ramp 1: interpolated, f/40 */
        {31, 3.3338035804083097e-06},
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++)
        assert_true(fabs(f[want[k].i] - want[k].v) <= 2e-7 * want[k].v + 1e-12);
    /* m = 0.1 * 1 * ln(40) + 1 = 1.3688879454113936; V3 softmax multiplier m^2 */
    assert_true(fabsf(moe_yarn_mscale_sq(40.0f, 1.0f) - 1.8738542f) < 2e-6f);
    assert_true(moe_yarn_mscale_sq(1.0f, 1.0f) == 1.0f);
    /* no scaling: plain RoPE */
    struct moe_yarn plain = {.theta = 10000.0f, .factor = 1.0f};
    moe_yarn_inv_freq(f, 64, &plain);
    for (int i = 0; i < 32; i++)
        assert_true(fabs(f[i] - pow(10000.0, -2.0 * i / 64)) <= 1e-7 * pow(10000.0, -2.0 * i / 64));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp8_decode_all_codes),
        cmocka_unit_test(test_fp8_encode),
        cmocka_unit_test(test_fp16),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_q8_0_block),
        cmocka_unit_test(test_act_quantizer),
        cmocka_unit_test(test_fp8_block128),
        cmocka_unit_test(test_yarn),
    };
    return cmocka_run_group_tests_name("formats", tests, NULL, NULL);
}
