/*
 * bench/kernels.c — `moecpu bench kernels`: GEMV and GEMM speed of every
 * runnable kernel table and weight type on DeepSeek expert shapes.
 *
 * GEMV (one activation column, decode) cycles through ~1 GiB of distinct
 * matrices so the weights come from memory, and reports GB/s of weights
 * streamed and the fraction of the machine's read bandwidth, which is
 * measured right before each GEMV measurement in the same run (the host's
 * share of the memory system varies from minute to minute).  GEMM
 * (8/32/128 columns: prefill, tokens grouped per expert) reports GFLOP/s.
 * Rows are split over the thread pool as the engine does.
 */
#include "bench.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../simd/kernels.h"
#include "../src/threads.h"

double moe_bench_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ---- read bandwidth ---- */

struct bw_job {
    const uint64_t *p;
    size_t words_per_task;
    uint64_t sink[64];
};

static void bw_task(void *ctx, int t)
{
    struct bw_job *j = ctx;
    const uint64_t *p = j->p + (size_t)t * j->words_per_task;
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    for (size_t i = 0; i < j->words_per_task; i += 8) {
        a0 += p[i]; a1 += p[i + 1]; a2 += p[i + 2]; a3 += p[i + 3];
        a4 += p[i + 4]; a5 += p[i + 5]; a6 += p[i + 6]; a7 += p[i + 7];
    }
    j->sink[t % 64] = a0 ^ a1 ^ a2 ^ a3 ^ a4 ^ a5 ^ a6 ^ a7;
}

double moe_bench_read_bw(struct moe_pool *pool, const void *buf, size_t bytes, int reps)
{
    const int nt = moe_pool_threads(pool);
    struct bw_job j = {.p = buf, .words_per_task = bytes / 8 / (size_t)nt / 8 * 8};
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = moe_bench_now();
        moe_pool_run(pool, bw_task, &j, nt);
        double dt = moe_bench_now() - t0;
        double gbps = (double)(j.words_per_task * 8 * (size_t)nt) / dt / 1e9;
        if (gbps > best) best = gbps;
    }
    return best;
}

/* ---- matrices ---- */

static uint64_t rng_s = 0x853C49E6748FEA9Bull;
static uint32_t rnd(void)
{
    rng_s ^= rng_s << 13; rng_s ^= rng_s >> 7; rng_s ^= rng_s << 17;
    return (uint32_t)(rng_s >> 20);
}

/* Fill `bytes` of weights of type t with plausible values (no NaN, no
 * subnormal storms that would time something else). */
static void fill_weights(unsigned char *p, size_t bytes, enum moe_wtype t)
{
    switch (t) {
    case MOE_W_F32:
        for (size_t i = 0; i + 4 <= bytes; i += 4) {
            float f = ((float)(rnd() & 0xFFFF) - 32768.0f) / 32768.0f;
            memcpy(p + i, &f, 4);
        }
        break;
    case MOE_W_F16:
    case MOE_W_BF16: {
        uint16_t tab[256];
        for (int i = 0; i < 256; i++) {
            float f = ((float)i - 128.0f) / 128.0f;
            tab[i] = t == MOE_W_F16 ? moe_f32_to_f16(f) : moe_f32_to_bf16(f);
        }
        for (size_t i = 0; i + 2 <= bytes; i += 2)
            memcpy(p + i, &tab[rnd() & 255], 2);
        break;
    }
    case MOE_W_FP8:
        for (size_t i = 0; i < bytes; i++) {
            uint8_t v = (uint8_t)rnd();
            if ((v & 0x7F) == 0x7F) v ^= 1;
            p[i] = v;
        }
        break;
    case MOE_W_Q8_0:
        for (size_t i = 0; i + MOE_Q8_0_BYTES <= bytes; i += MOE_Q8_0_BYTES) {
            struct moe_block_q8_0 b;
            b.d = moe_f32_to_f16(0.001f + (float)(rnd() & 255) * 1e-5f);
            for (int k = 0; k < 32; k++) b.qs[k] = (int8_t)((int)(rnd() % 255) - 127);
            memcpy(p + i, &b, MOE_Q8_0_BYTES);
        }
        break;
    default: break;
    }
}

/* ---- one matmul split over the pool ---- */

struct mm_job {
    moe_matmul_fn fn;
    const struct moe_mat *w;
    const struct moe_acts *a;
    float *y;
    int64_t rows_per_task;
};

static void mm_task(void *ctx, int t)
{
    struct mm_job *j = ctx;
    int64_t r0 = (int64_t)t * j->rows_per_task, r1 = r0 + j->rows_per_task;
    if (r1 > j->w->rows) r1 = j->w->rows;
    if (r0 < r1)
        j->fn(j->w, r0, r1, j->a, j->y, j->w->rows);
}

static void matmul_pool(struct moe_pool *pool, moe_matmul_fn fn, const struct moe_mat *w, const struct moe_acts *a,
                        float *y)
{
    int nt = moe_pool_threads(pool);
    int64_t per = (w->rows + nt - 1) / nt;
    per = (per + 15) / 16 * 16;
    struct mm_job j = {fn, w, a, y, per};
    moe_pool_run(pool, mm_task, &j, (int)((w->rows + per - 1) / per));
}

/* ---- the benchmark ---- */

struct opts {
    const char *isa;
    int json;
    int threads;
    double min_time;
    size_t gemv_bytes;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: moecpu bench kernels [--isa NAME] [--json] [-t N] [--time SEC] [--gemv-mib N]\n"
            "  GEMV (2048x7168 and 7168x2048, weights out of cache) and GEMM (2048x7168 at 8, 32\n"
            "  and 128 columns) for every runnable kernel table and weight type.\n"
            "  --isa NAME     only this table or family (scalar, avx2, avx512, avx512_vnni, neon, ...)\n"
            "  --json         one JSON object per line instead of a table\n"
            "  -t N           threads (default: physical cores)\n"
            "  --time SEC     minimum time per measurement (default 0.5)\n"
            "  --gemv-mib N   MiB of distinct matrices cycled by GEMV (default 1024)\n");
}

static void report(const struct opts *o, const char *isa, const char *op, enum moe_wtype t, int64_t rows,
                   int64_t k, int n, double sec, double bytes, double bw)
{
    double gbps = bytes / sec / 1e9;
    double gflops = 2.0 * (double)rows * (double)k * n / sec / 1e9;
    if (o->json) {
        printf("{\"isa\":\"%s\",\"op\":\"%s\",\"type\":\"%s\",\"rows\":%" PRId64 ",\"k\":%" PRId64
               ",\"n\":%d,\"threads\":%d,\"gbps\":%.2f,\"gflops\":%.2f,\"bw_fraction\":%.3f,\"read_bw_gbps\":%.2f}\n",
               isa, op, moe_wtype_name(t), rows, k, n, o->threads, gbps, gflops, bw > 0 ? gbps / bw : 0.0, bw);
    } else {
        printf("%-12s %-4s %-5s %5" PRId64 " x %-5" PRId64 " n=%-4d %8.2f GB/s %8.2f GFLOP/s", isa, op,
               moe_wtype_name(t), rows, k, n, gbps, gflops);
        if (bw > 0)
            printf("   %5.1f%% of %.1f GB/s read bandwidth", 100.0 * gbps / bw, bw);
        printf("\n");
    }
    fflush(stdout);
}

static int bench_table(const struct opts *o, struct moe_pool *pool, const struct moe_kernels *kt, unsigned char *big,
                       size_t big_bytes)
{
    static const int64_t gemv_shapes[2][2] = {{2048, 7168}, {7168, 2048}};
    static const int gemm_ns[3] = {8, 32, 128};
    const int64_t kmax = 7168, nmax = 128;
    float *x = malloc(sizeof(float) * (size_t)(kmax * nmax));
    int8_t *q = malloc((size_t)(kmax * nmax));
    float *qd = malloc(sizeof(float) * (size_t)(kmax / 32 * nmax));
    int32_t *qs = malloc(sizeof(int32_t) * (size_t)(kmax / 32 * nmax));
    float *y = malloc(sizeof(float) * (size_t)(kmax * nmax));
    float *scales = malloc(sizeof(float) * (size_t)((big_bytes / (128 * 128) + 64)));
    if (!x || !q || !qd || !qs || !y || !scales) {
        fprintf(stderr, "moecpu bench: out of memory\n");
        free(x); free(q); free(qd); free(qs); free(y); free(scales);
        return 1;
    }
    for (int64_t i = 0; i < kmax * nmax; i++) x[i] = ((float)(rnd() & 0xFFFF) - 32768.0f) / 32768.0f;
    for (size_t i = 0; i < big_bytes / (128 * 128) + 64; i++) scales[i] = 1e-3f;

    for (int t = 0; t < MOE_W_COUNT; t++) {
        enum moe_wtype type = (enum moe_wtype)t;
        fill_weights(big, big_bytes, type);
        /* GEMV, weights out of cache */
        for (int s = 0; s < 2; s++) {
            const int64_t rows = gemv_shapes[s][0], k = gemv_shapes[s][1];
            const size_t mbytes = moe_wtype_row_bytes(type, k) * (size_t)rows;
            const size_t nmat = big_bytes / mbytes;
            const size_t sbytes = type == MOE_W_FP8 ? sizeof(float) * (size_t)(moe_fp8_scale_rows(rows) * moe_fp8_scale_cols(k)) : 0;
            if (nmat < 2) continue;
            double bw = moe_bench_read_bw(pool, big, big_bytes, 2);
            size_t calls = 0, m = 0;
            double t0 = moe_bench_now(), dt;
            do {
                struct moe_mat w = {type, rows, k, big + m * mbytes, type == MOE_W_FP8 ? scales : NULL};
                struct moe_acts a = {.k = k, .n = 1, .x = x, .ldx = k, .q = q, .qd = qd, .qs = qs};
                if (type == MOE_W_Q8_0)
                    kt->quantize_act(q, qd, qs, x, k);
                matmul_pool(pool, kt->gemv[type], &w, &a, y);
                calls++;
                m = (m + 1) % nmat;
                dt = moe_bench_now() - t0;
            } while (dt < o->min_time || calls < nmat);
            report(o, kt->name, "gemv", type, rows, k, 1, dt / (double)calls, (double)(mbytes + sbytes), bw);
        }
        /* GEMM at 8, 32, 128 columns; a few matrices cycled */
        for (int ni = 0; ni < 3; ni++) {
            const int64_t rows = 2048, k = 7168;
            const int n = gemm_ns[ni];
            const size_t mbytes = moe_wtype_row_bytes(type, k) * (size_t)rows;
            const size_t nmat = big_bytes / mbytes < 4 ? big_bytes / mbytes : 4;
            if (type == MOE_W_Q8_0)
                for (int j = 0; j < n; j++)
                    kt->quantize_act(q + j * k, qd + j * (k / 32), qs + j * (k / 32), x + j * k, k);
            size_t calls = 0, m = 0;
            double t0 = moe_bench_now(), dt;
            do {
                struct moe_mat w = {type, rows, k, big + m * mbytes, type == MOE_W_FP8 ? scales : NULL};
                struct moe_acts a = {.k = k, .n = n, .x = x, .ldx = k, .q = q, .qd = qd, .qs = qs};
                matmul_pool(pool, kt->gemm[type], &w, &a, y);
                calls++;
                m = (m + 1) % nmat;
                dt = moe_bench_now() - t0;
            } while (dt < o->min_time);
            report(o, kt->name, "gemm", type, rows, k, n, dt / (double)calls, (double)mbytes, 0);
        }
    }
    free(x); free(q); free(qd); free(qs); free(y); free(scales);
    return 0;
}

int moe_bench_kernels(int argc, char **argv)
{
    struct opts o = {.isa = NULL, .json = 0, .threads = moe_physical_cores(), .min_time = 0.5, .gemv_bytes = (size_t)1 << 30};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) o.json = 1;
        else if (!strcmp(a, "--isa") && i + 1 < argc) o.isa = argv[++i];
        else if (!strcmp(a, "-t") && i + 1 < argc) o.threads = atoi(argv[++i]);
        else if (!strcmp(a, "--time") && i + 1 < argc) o.min_time = atof(argv[++i]);
        else if (!strcmp(a, "--gemv-mib") && i + 1 < argc) o.gemv_bytes = (size_t)atol(argv[++i]) << 20;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else {
            fprintf(stderr, "moecpu bench kernels: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (o.threads < 1 || o.threads > 1024) {
        fprintf(stderr, "moecpu bench kernels: -t must be between 1 and 1024\n");
        return 2;
    }
    if (o.gemv_bytes < ((size_t)64 << 20)) {
        fprintf(stderr, "moecpu bench kernels: --gemv-mib must be at least 64 (weights must not fit in cache)\n");
        return 2;
    }
    char err[256];
    const struct moe_kernels *only = NULL;
    if (o.isa) {
        only = moe_kernels_select(o.isa, err, sizeof err);
        if (!only) {
            fprintf(stderr, "moecpu bench kernels: %s\n", err);
            return 2;
        }
    }
    struct moe_pool *pool = moe_pool_create(o.threads);
    unsigned char *big = malloc(o.gemv_bytes);
    if (!pool || !big) {
        fprintf(stderr, "moecpu bench kernels: cannot allocate %zu MiB of test matrices or start %d threads\n",
                o.gemv_bytes >> 20, o.threads);
        free(big);
        moe_pool_destroy(pool);
        return 1;
    }
    memset(big, 0, o.gemv_bytes);
    if (!o.json)
        printf("# moecpu bench kernels: %d threads, %zu MiB of GEMV matrices; GB/s counts weight bytes read\n",
               o.threads, o.gemv_bytes >> 20);
    int n, rc = 0;
    const struct moe_isa_entry *e = moe_isa_list(&n);
    for (int i = 0; i < n && rc == 0; i++)
        if (e[i].runnable && (!only || e[i].k == only))
            rc = bench_table(&o, pool, e[i].k, big, o.gemv_bytes);
    free(big);
    moe_pool_destroy(pool);
    return rc;
}
