/*
 * src/sampler.c — next-token selection: repetition penalty, greedy, top-k,
 * top-p, min-p, temperature and a seeded draw (order and semantics in
 * moecpu.h, "Sampler").
 *
 * Determinism: the draw uses xoshiro256** (Blackman & Vigna) seeded by
 * splitmix64, the softmax uses det_exp() below (+, *, ldexp and rint only)
 * and sums run in a fixed order in double.  The Makefile builds this file
 * with -ffp-contract=off so no compiler fuses a*b+c differently on another
 * machine.  Sorting uses a strict total order (logit desc, id asc), so
 * qsort's instability never shows.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moecpu.h"

struct cand {
    float logit;
    int32_t id;
};

struct moe_sampler {
    struct moe_sampler_params p;
    int32_t n_vocab;
    uint64_t rng[4];
    int32_t *hist;             /* ring of the last repeat_last_n accepted ids */
    int n_hist, hist_pos;
    unsigned char *seen;       /* [n_vocab] scratch for the penalty */
    float *pen;                /* [n_vocab] penalized logits */
    struct cand *c;            /* [n_vocab] candidates */
    double *w;                 /* [n_vocab] weights of the candidates */
};

/* ---- PRNG ---------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4])
{
    const uint64_t r = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static void seed_rng(struct moe_sampler *s)
{
    uint64_t x = s->p.seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
}

double moe_sampler_uniform(struct moe_sampler *s)
{
    return (double)(xoshiro_next(s->rng) >> 11) * 0x1.0p-53;
}

/* ---- deterministic exp --------------------------------------------------- */

/* e^x for x <= 0 (all callers subtract the maximum first), within a few ulp.
 * x = k ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2), e^r by its
 * Taylor series to degree 13 (remainder < 1e-17 relative). */
static double det_exp(double x)
{
    if (!(x > -745.0)) return 0.0;     /* also -inf and NaN */
    if (x > 709.0) return HUGE_VAL;
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    const double k = rint(x * 1.44269504088896338700e+00);
    const double r = (x - k * ln2_hi) - k * ln2_lo;
    double p = 1.0 / 6227020800.0;     /* 1/13! */
    static const double inv_fact[13] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
                                        1.0 / 40320.0,     1.0 / 5040.0,     1.0 / 720.0,     1.0 / 120.0,
                                        1.0 / 24.0,        1.0 / 6.0,        0.5,             1.0,
                                        1.0};
    for (int i = 0; i < 13; i++) p = p * r + inv_fact[i];
    return ldexp(p, (int)k);
}

/* ---- lifecycle ----------------------------------------------------------- */

void moe_sampler_params_init(struct moe_sampler_params *p)
{
    p->temp = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n = 64;
    p->seed = 0;
}

int moe_sampler_new(struct moe_sampler **out, int32_t n_vocab, const struct moe_sampler_params *p, char *err,
                    size_t errlen)
{
    *out = NULL;
    const char *bad = NULL;
    if (n_vocab < 1) bad = "vocabulary size must be at least 1";
    else if (isnan(p->temp)) bad = "temperature is NaN";
    else if (isnan(p->top_p) || p->top_p < 0) bad = "top-p must be a number >= 0";
    else if (isnan(p->min_p) || p->min_p < 0 || p->min_p > 1) bad = "min-p must be in [0, 1]";
    else if (!(p->repeat_penalty > 0) || isinf(p->repeat_penalty)) bad = "repeat penalty must be a finite number > 0";
    else if (p->repeat_last_n < 0) bad = "repeat-last-n must be >= 0";
    if (bad) {
        if (err) snprintf(err, errlen, "sampler: %s", bad);
        return MOECPU_ERR_INVALID;
    }
    struct moe_sampler *s = calloc(1, sizeof *s);
    if (!s) goto nomem;
    s->p = *p;
    s->n_vocab = n_vocab;
    const size_t n = (size_t)n_vocab;
    s->hist = malloc((size_t)(p->repeat_last_n > 0 ? p->repeat_last_n : 1) * sizeof *s->hist);
    s->seen = calloc(n, 1);
    s->pen = malloc(n * sizeof *s->pen);
    s->c = malloc(n * sizeof *s->c);
    s->w = malloc(n * sizeof *s->w);
    if (!s->hist || !s->seen || !s->pen || !s->c || !s->w) goto nomem;
    seed_rng(s);
    *out = s;
    return MOECPU_OK;
nomem:
    moe_sampler_free(s);
    if (err) snprintf(err, errlen, "sampler: out of memory for a vocabulary of %d", (int)n_vocab);
    return MOECPU_ERR_NOMEM;
}

void moe_sampler_free(struct moe_sampler *s)
{
    if (!s) return;
    free(s->hist);
    free(s->seen);
    free(s->pen);
    free(s->c);
    free(s->w);
    free(s);
}

void moe_sampler_accept(struct moe_sampler *s, int32_t id)
{
    const int n = s->p.repeat_last_n;
    if (n <= 0) return;
    s->hist[s->hist_pos] = id;
    s->hist_pos = (s->hist_pos + 1) % n;
    if (s->n_hist < n) s->n_hist++;
}

void moe_sampler_reset(struct moe_sampler *s)
{
    s->n_hist = s->hist_pos = 0;
    seed_rng(s);
}

/* ---- the chain ----------------------------------------------------------- */

/* Strict total order: larger logit first, then lower id. */
static int cand_cmp(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int cand_before(const struct cand *x, const struct cand *y)
{
    return x->logit > y->logit || (x->logit == y->logit && x->id < y->id);
}

/* Steps 1 and 2: the penalized logits in s->pen; returns the arg-max. */
static int32_t penalize(struct moe_sampler *s, const float *logits)
{
    const int32_t V = s->n_vocab;
    for (int32_t v = 0; v < V; v++) s->pen[v] = isnan(logits[v]) ? -INFINITY : logits[v];
    if (s->p.repeat_penalty != 1.0f) {
        for (int i = 0; i < s->n_hist; i++) {
            const int32_t id = s->hist[i];
            if (id < 0 || id >= V || s->seen[id]) continue;
            s->seen[id] = 1;
            s->pen[id] = s->pen[id] > 0 ? s->pen[id] / s->p.repeat_penalty : s->pen[id] * s->p.repeat_penalty;
        }
        for (int i = 0; i < s->n_hist; i++)
            if (s->hist[i] >= 0 && s->hist[i] < V) s->seen[s->hist[i]] = 0;
    }
    int32_t best = 0;
    for (int32_t v = 1; v < V; v++)
        if (s->pen[v] > s->pen[best]) best = v;
    return best;
}

/* Sift-down for a min-heap (root = the candidate that would be dropped first). */
static void heap_down(struct cand *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, m = i;
        if (l < n && cand_before(&h[m], &h[l])) m = l;
        if (l + 1 < n && cand_before(&h[m], &h[l + 1])) m = l + 1;
        if (m == i) return;
        struct cand t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/* Steps 3-6 on s->pen: the surviving candidates, sorted, in s->c[0..n) with
 * weights s->w (unnormalized, from the tempered logits); returns n >= 1. */
static int filter(struct moe_sampler *s)
{
    const int32_t V = s->n_vocab;
    struct cand *c = s->c;
    int n;
    const int k = s->p.top_k;
    if (k > 0 && k < V) {
        /* the k best in a min-heap ordered by "worse first" */
        for (int i = 0; i < k; i++) c[i] = (struct cand){s->pen[i], i};
        for (int i = k / 2 - 1; i >= 0; i--) heap_down(c, k, i);
        for (int32_t v = k; v < V; v++) {
            struct cand x = {s->pen[v], v};
            if (cand_before(&x, &c[0])) {
                c[0] = x;
                heap_down(c, k, 0);
            }
        }
        n = k;
    } else {
        for (int32_t v = 0; v < V; v++) c[v] = (struct cand){s->pen[v], v};
        n = V;
    }
    /* min-p keeps a prefix of the sorted order and never changes the top-p
     * prefix's normalizer, so it can shrink the set before sorting. */
    float lmax = c[0].logit;
    for (int i = 1; i < n; i++) lmax = c[i].logit > lmax ? c[i].logit : lmax;
    double z = 0;   /* top-p normalizer over all n candidates */
    if (s->p.top_p < 1.0f)
        for (int i = 0; i < n; i++) z += det_exp((double)c[i].logit - lmax);
    if (s->p.min_p > 0.0f && lmax > -INFINITY) {
        int m = 0;
        for (int i = 0; i < n; i++)
            if (det_exp((double)c[i].logit - lmax) >= (double)s->p.min_p) c[m++] = c[i];
        /* min-p after top-p is the shorter of the two prefixes, so the
         * top-p cut below still uses the normalizer z of the full set */
        n = m;
    }
    qsort(c, (size_t)n, sizeof *c, cand_cmp);
    if (s->p.top_p < 1.0f && z > 0) {
        double cum = 0;
        int m = n;
        for (int i = 0; i < n; i++) {
            cum += det_exp((double)c[i].logit - lmax) / z;
            if (cum >= (double)s->p.top_p) {
                m = i + 1;
                break;
            }
        }
        n = m;
    }
    if (c[0].logit == -INFINITY) {        /* every logit -inf or NaN: uniform over what is left */
        for (int i = 0; i < n; i++) s->w[i] = 1.0;
        return n;
    }
    const double t = (double)s->p.temp;
    for (int i = 0; i < n; i++) s->w[i] = det_exp(((double)c[i].logit - lmax) / t);
    return n;
}

int32_t moe_sampler_sample(struct moe_sampler *s, const float *logits)
{
    const int32_t best = penalize(s, logits);
    if (!(s->p.temp > 0)) return best;
    const int n = filter(s);
    double total = 0;
    for (int i = 0; i < n; i++) total += s->w[i];
    const double u = moe_sampler_uniform(s) * total;
    double cum = 0;
    for (int i = 0; i < n; i++) {
        cum += s->w[i];
        if (u < cum) return s->c[i].id;
    }
    return s->c[n - 1].id;    /* u within rounding of total */
}

void moe_sampler_dist(struct moe_sampler *s, const float *logits, double *probs)
{
    const int32_t best = penalize(s, logits);
    for (int32_t v = 0; v < s->n_vocab; v++) probs[v] = 0;
    if (!(s->p.temp > 0)) {
        probs[best] = 1;
        return;
    }
    const int n = filter(s);
    double total = 0;
    for (int i = 0; i < n; i++) total += s->w[i];
    for (int i = 0; i < n; i++) probs[s->c[i].id] = s->w[i] / total;
}
