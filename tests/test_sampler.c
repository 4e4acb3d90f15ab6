/*
 * tests/test_sampler.c — the sampler against independent references:
 * hand-computed distributions, filter sets found by brute force here (no
 * sorting code shared with src/sampler.c; libm exp), frequency checks of
 * fixed-seed draws with generous chi-square bounds, and replay.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/moecpu.h"

static struct moe_sampler *mk(int32_t V, float temp, int top_k, float top_p, float min_p, float pen, int last_n,
                              uint64_t seed)
{
    struct moe_sampler_params p;
    moe_sampler_params_init(&p);
    p.temp = temp;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.repeat_penalty = pen;
    p.repeat_last_n = last_n;
    p.seed = seed;
    struct moe_sampler *s;
    char err[256];
    assert_int_equal(moe_sampler_new(&s, V, &p, err, sizeof err), 0);
    return s;
}

static void expect_dist(struct moe_sampler *s, const float *logits, const double *want, int V, double tol)
{
    double *got = malloc((size_t)V * sizeof *got);
    assert_non_null(got);
    moe_sampler_dist(s, logits, got);
    for (int i = 0; i < V; i++) {
        if (fabs(got[i] - want[i]) > tol) fail_msg("token %d: probability %.12g, expected %.12g", i, got[i], want[i]);
    }
    free(got);
}

/* Hand-computed: logits 0, ln 2, ln 3 are weights 1:2:3. */
static void test_hand_computed(void **state)
{
    (void)state;
    const float l[3] = {0.0f, (float)log(2.0), (float)log(3.0)};
    const double tol = 1e-6;   /* the logits are float-rounded logs */
    struct moe_sampler *s = mk(3, 1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 1);
    expect_dist(s, l, (double[]){1 / 6.0, 2 / 6.0, 3 / 6.0}, 3, tol);
    moe_sampler_free(s);
    /* temperature 0.5 squares the weights: 1:4:9 */
    s = mk(3, 0.5f, 0, 1.0f, 0.0f, 1.0f, 0, 1);
    expect_dist(s, l, (double[]){1 / 14.0, 4 / 14.0, 9 / 14.0}, 3, tol);
    moe_sampler_free(s);
    /* temperature 2: weights 1 : sqrt2 : sqrt3 */
    s = mk(3, 2.0f, 0, 1.0f, 0.0f, 1.0f, 0, 1);
    const double t = 1 + sqrt(2.0) + sqrt(3.0);
    expect_dist(s, l, (double[]){1 / t, sqrt(2.0) / t, sqrt(3.0) / t}, 3, tol);
    moe_sampler_free(s);
    /* top-k 2: 2:3 */
    s = mk(3, 1.0f, 2, 1.0f, 0.0f, 1.0f, 0, 1);
    expect_dist(s, l, (double[]){0, 0.4, 0.6}, 3, tol);
    moe_sampler_free(s);
    /* top-p 0.49: token 2 alone holds 0.5 */
    s = mk(3, 1.0f, 0, 0.49f, 0.0f, 1.0f, 0, 1);
    expect_dist(s, l, (double[]){0, 0, 1}, 3, tol);
    moe_sampler_free(s);
    /* top-p 0.51: tokens 2 and 1 (0.5 + 0.333) */
    s = mk(3, 1.0f, 0, 0.51f, 0.0f, 1.0f, 0, 1);
    expect_dist(s, l, (double[]){0, 0.4, 0.6}, 3, tol);
    moe_sampler_free(s);
    /* min-p 0.5: p >= 0.25 keeps 1/3 and 1/2, drops 1/6 */
    s = mk(3, 1.0f, 0, 1.0f, 0.5f, 1.0f, 0, 1);
    expect_dist(s, l, (double[]){0, 0.4, 0.6}, 3, tol);
    moe_sampler_free(s);
    /* min-p 0.7: only the top (2/3 < 0.7) */
    s = mk(3, 1.0f, 0, 1.0f, 0.7f, 1.0f, 0, 1);
    expect_dist(s, l, (double[]){0, 0, 1}, 3, tol);
    moe_sampler_free(s);
}

/* llama.cpp's repetition penalty: positive logits divided, negative multiplied,
 * each distinct id once, only over the last N accepted ids. */
static void test_repetition_penalty(void **state)
{
    (void)state;
    const float l[5] = {2.0f, -1.0f, 0.5f, 3.0f, 0.0f};
    struct moe_sampler *s = mk(5, 1.0f, 0, 1.0f, 0.0f, 2.0f, 3, 1);
    moe_sampler_accept(s, 3);      /* falls out of the window of 3 */
    moe_sampler_accept(s, 0);
    moe_sampler_accept(s, 1);
    moe_sampler_accept(s, 0);      /* repeated: still penalized once */
    /* penalized: 0 -> 1.0, 1 -> -2.0; 2, 3, 4 unchanged */
    const double e[5] = {exp(1.0), exp(-2.0), exp(0.5), exp(3.0), exp(0.0)};
    const double z = e[0] + e[1] + e[2] + e[3] + e[4];
    expect_dist(s, l, (double[]){e[0] / z, e[1] / z, e[2] / z, e[3] / z, e[4] / z}, 5, 1e-6);
    /* greedy sees the penalty too: token 3 (3.0) is the best; penalize it */
    moe_sampler_free(s);
    s = mk(5, 0.0f, 0, 1.0f, 0.0f, 4.0f, 64, 1);
    assert_int_equal(moe_sampler_sample(s, l), 3);
    moe_sampler_accept(s, 3);      /* 3.0 / 4 = 0.75 < 2.0 */
    assert_int_equal(moe_sampler_sample(s, l), 0);
    moe_sampler_accept(s, 0);      /* 2.0 / 4 = 0.5 < 0.75 */
    assert_int_equal(moe_sampler_sample(s, l), 3);
    moe_sampler_reset(s);          /* history forgotten */
    assert_int_equal(moe_sampler_sample(s, l), 3);
    moe_sampler_free(s);
}

static void test_greedy(void **state)
{
    (void)state;
    const float l[6] = {1.0f, 4.0f, -2.0f, 4.0f, NAN, 3.5f};
    struct moe_sampler *s = mk(6, 0.0f, 40, 0.95f, 0.05f, 1.0f, 64, 9);
    for (int i = 0; i < 5; i++) assert_int_equal(moe_sampler_sample(s, l), 1);   /* tie: lower id */
    expect_dist(s, l, (double[]){0, 1, 0, 0, 0, 0}, 6, 0);
    moe_sampler_free(s);
}

/* ---- brute-force reference of the whole chain ---------------------------- */

/* rank of i: how many tokens come before it (larger logit, or equal and lower id) */
static int rank_of(const double *l, int V, int i)
{
    int r = 0;
    for (int j = 0; j < V; j++)
        if (l[j] > l[i] || (l[j] == l[i] && j < i)) r++;
    return r;
}

static void reference(const float *logits, int V, double temp, int top_k, double top_p, double min_p, double *out)
{
    double *l = malloc((size_t)V * sizeof *l);
    int *keep = malloc((size_t)V * sizeof *keep);
    assert_true(l && keep);
    for (int i = 0; i < V; i++) {
        l[i] = isnan(logits[i]) ? -INFINITY : logits[i];
        keep[i] = 1;
    }
    if (top_k > 0)
        for (int i = 0; i < V; i++) keep[i] = rank_of(l, V, i) < top_k;
    if (top_p < 1) {
        /* softmax over the kept set; token i survives when the mass of the
         * kept tokens ranked before it is still below top_p */
        double mx = -INFINITY, z = 0;
        for (int i = 0; i < V; i++) if (keep[i] && l[i] > mx) mx = l[i];
        for (int i = 0; i < V; i++) if (keep[i]) z += exp(l[i] - mx);
        int *k2 = malloc((size_t)V * sizeof *k2);
        for (int i = 0; i < V; i++) {
            k2[i] = 0;
            if (!keep[i]) continue;
            double before = 0;
            const int ri = rank_of(l, V, i);
            for (int j = 0; j < V; j++)
                if (keep[j] && rank_of(l, V, j) < ri) before += exp(l[j] - mx) / z;
            k2[i] = ri == 0 || before < top_p;   /* at least one token */
        }
        memcpy(keep, k2, (size_t)V * sizeof *keep);
        free(k2);
    }
    if (min_p > 0) {
        double mx = -INFINITY;
        for (int i = 0; i < V; i++) if (keep[i] && l[i] > mx) mx = l[i];
        for (int i = 0; i < V; i++) if (keep[i]) keep[i] = exp(l[i] - mx) >= min_p;
    }
    double mx = -INFINITY, z = 0;
    for (int i = 0; i < V; i++) if (keep[i] && l[i] > mx) mx = l[i];
    for (int i = 0; i < V; i++) z += out[i] = keep[i] ? exp((l[i] - mx) / temp) : 0;
    for (int i = 0; i < V; i++) out[i] /= z;
    free(l);
    free(keep);
}

/* Random logits with many ties (values on a grid of 0.25), every filter
 * setting over a sweep, against the brute force above. */
static void test_chain_vs_brute_force(void **state)
{
    (void)state;
    enum { V = 37 };
    float l[V];
    double want[V];
    srand(12345);
    const int ks[] = {0, 1, 2, 5, 17, 36, 37, 100};
    const float ps[] = {1.0f, 0.999f, 0.9f, 0.5f, 0.13f, 0.0f};
    const float mps[] = {0.0f, 0.01f, 0.2f, 0.75f, 1.0f};
    const float ts[] = {1.0f, 0.3f, 1.7f};
    for (int trial = 0; trial < 6; trial++) {
        for (int i = 0; i < V; i++) l[i] = (float)(rand() % 25 - 12) * 0.25f * (trial < 3 ? 1.0f : 3.0f);
        for (size_t a = 0; a < sizeof ks / sizeof *ks; a++)
            for (size_t b = 0; b < sizeof ps / sizeof *ps; b++)
                for (size_t c = 0; c < sizeof mps / sizeof *mps; c++)
                    for (size_t d = 0; d < sizeof ts / sizeof *ts; d++) {
                        struct moe_sampler *s = mk(V, ts[d], ks[a], ps[b], mps[c], 1.0f, 0, 3);
                        reference(l, V, ts[d], ks[a], ps[b], mps[c], want);
                        double got[V];
                        moe_sampler_dist(s, l, got);
                        for (int i = 0; i < V; i++)
                            if (fabs(got[i] - want[i]) > 1e-9)
                                fail_msg("trial %d k %d p %g min-p %g t %g: token %d got %.12g want %.12g", trial,
                                         ks[a], ps[b], mps[c], ts[d], i, got[i], want[i]);
                        moe_sampler_free(s);
                    }
    }
}

/* Fixed-seed draws follow the distribution: chi-square with 4 degrees of
 * freedom must stay below 40 (p ~ 4e-8 for a correct sampler); also every
 * token outside the filtered set is never drawn. */
static void test_frequencies(void **state)
{
    (void)state;
    const float l[6] = {0.0f, 1.0f, 2.0f, 0.5f, -1.0f, -8.0f};
    struct moe_sampler *s = mk(6, 0.9f, 5, 1.0f, 0.0f, 1.0f, 0, 2024);   /* top-k 5 drops token 5 */
    double p[6];
    reference(l, 6, 0.9, 5, 1.0, 0.0, p);
    long cnt[6] = {0};
    const long n = 200000;
    for (long i = 0; i < n; i++) {
        const int32_t t = moe_sampler_sample(s, l);
        assert_true(t >= 0 && t < 6);
        cnt[t]++;
    }
    assert_int_equal(cnt[5], 0);
    double chi = 0;
    for (int i = 0; i < 5; i++) chi += (cnt[i] - n * p[i]) * (cnt[i] - n * p[i]) / (n * p[i]);
    if (!(chi < 40)) fail_msg("chi-square %g over 4 dof", chi);
    moe_sampler_free(s);
}

/* The PRNG: 16 equal bins, chi-square over 15 dof below 60, values in [0,1). */
static void test_uniform(void **state)
{
    (void)state;
    struct moe_sampler *s = mk(2, 1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 77);
    long bins[16] = {0};
    const long n = 320000;
    double sum = 0;
    for (long i = 0; i < n; i++) {
        const double u = moe_sampler_uniform(s);
        assert_true(u >= 0 && u < 1);
        bins[(int)(u * 16)]++;
        sum += u;
    }
    double chi = 0;
    for (int i = 0; i < 16; i++) chi += (bins[i] - n / 16.0) * (bins[i] - n / 16.0) / (n / 16.0);
    if (!(chi < 60)) fail_msg("chi-square %g over 15 dof", chi);
    assert_true(fabs(sum / n - 0.5) < 0.005);
    moe_sampler_free(s);
}

/* Same seed and settings: the same tokens; reset replays; another seed differs. */
static void test_replay(void **state)
{
    (void)state;
    enum { V = 300, N = 400 };
    float *l = malloc(V * sizeof *l);
    assert_non_null(l);
    for (int i = 0; i < V; i++) l[i] = (float)sin(i * 0.37) * 2.0f;
    int32_t a[N], b[N], c[N];
    struct moe_sampler *s1 = mk(V, 1.2f, 0, 0.98f, 0.0f, 1.1f, 16, 42);
    struct moe_sampler *s2 = mk(V, 1.2f, 0, 0.98f, 0.0f, 1.1f, 16, 42);
    struct moe_sampler *s3 = mk(V, 1.2f, 0, 0.98f, 0.0f, 1.1f, 16, 43);
    for (int i = 0; i < N; i++) {
        moe_sampler_accept(s1, a[i] = moe_sampler_sample(s1, l));
        moe_sampler_accept(s2, b[i] = moe_sampler_sample(s2, l));
        moe_sampler_accept(s3, c[i] = moe_sampler_sample(s3, l));
    }
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
    moe_sampler_reset(s1);
    for (int i = 0; i < N; i++) {
        const int32_t t = moe_sampler_sample(s1, l);
        assert_int_equal(t, a[i]);
        moe_sampler_accept(s1, t);
    }
    moe_sampler_free(s1);
    moe_sampler_free(s2);
    moe_sampler_free(s3);
    free(l);
}

static void test_edge_cases(void **state)
{
    (void)state;
    /* every logit -inf or NaN: uniform over the vocabulary */
    const float l[4] = {-INFINITY, NAN, -INFINITY, -INFINITY};
    struct moe_sampler *s = mk(4, 1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 5);
    expect_dist(s, l, (double[]){0.25, 0.25, 0.25, 0.25}, 4, 1e-12);
    moe_sampler_free(s);
    /* NaN is never drawn when anything finite exists */
    const float m[3] = {NAN, 0.0f, NAN};
    s = mk(3, 1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 5);
    for (int i = 0; i < 100; i++) assert_int_equal(moe_sampler_sample(s, m), 1);
    moe_sampler_free(s);
    /* a one-token vocabulary */
    s = mk(1, 0.7f, 40, 0.9f, 0.1f, 1.3f, 8, 5);
    const float one = 0.0f;
    moe_sampler_accept(s, 0);
    assert_int_equal(moe_sampler_sample(s, &one), 0);
    moe_sampler_free(s);
    /* huge logits do not overflow */
    const float big[3] = {1e30f, 1e30f, -1e30f};
    s = mk(3, 1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 5);
    expect_dist(s, big, (double[]){0.5, 0.5, 0}, 3, 1e-12);
    moe_sampler_free(s);
}

static void test_invalid(void **state)
{
    (void)state;
    struct moe_sampler_params p;
    struct moe_sampler *s = (struct moe_sampler *)&p;
    char err[256];
    moe_sampler_params_init(&p);
    assert_int_equal(moe_sampler_new(&s, 0, &p, err, sizeof err), MOECPU_ERR_INVALID);
    assert_null(s);
    p.repeat_penalty = 0;
    assert_int_equal(moe_sampler_new(&s, 10, &p, err, sizeof err), MOECPU_ERR_INVALID);
    assert_non_null(strstr(err, "repeat penalty"));
    moe_sampler_params_init(&p);
    p.min_p = 1.5f;
    assert_int_equal(moe_sampler_new(&s, 10, &p, err, sizeof err), MOECPU_ERR_INVALID);
    moe_sampler_params_init(&p);
    p.top_p = NAN;
    assert_int_equal(moe_sampler_new(&s, 10, &p, err, sizeof err), MOECPU_ERR_INVALID);
    moe_sampler_params_init(&p);
    p.repeat_last_n = -1;
    assert_int_equal(moe_sampler_new(&s, 10, &p, err, sizeof err), MOECPU_ERR_INVALID);
    /* defaults are llama.cpp's */
    moe_sampler_params_init(&p);
    assert_true(p.temp == 0.8f && p.top_k == 40 && p.top_p == 0.95f && p.min_p == 0.05f &&
                p.repeat_penalty == 1.0f && p.repeat_last_n == 64);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_computed),   cmocka_unit_test(test_repetition_penalty),
        cmocka_unit_test(test_greedy),          cmocka_unit_test(test_chain_vs_brute_force),
        cmocka_unit_test(test_frequencies),     cmocka_unit_test(test_uniform),
        cmocka_unit_test(test_replay),          cmocka_unit_test(test_edge_cases),
        cmocka_unit_test(test_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
