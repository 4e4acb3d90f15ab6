/*
 * bench/model.c — `moecpu bench -m MODEL`: prompt processing and generation
 * speed like llama-bench (pp = one prefill of -p tokens, tg = -n decode
 * steps of one token), plus the decode bound: read bandwidth divided by
 * the weight bytes one decoded token reads (all non-expert weights, top-k
 * of each MoE layer's routed experts, one embedding row).  The bandwidth
 * of a shared machine changes from second to second, so it is measured
 * around every segment of TG_SEG decode steps (outside the timed part):
 * a segment's bound time is its tokens x bytes per token / the mean of the
 * probes before and after it; a run's fraction of the bound is its summed
 * bound time / its decode time.  Token ids are pseudo-random (speed does
 * not depend on them beyond routing).
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/cli.h"
#include "../src/cli_pager.h"
#include "../src/moecpu.h"
#include "../src/threads.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: moecpu bench -m MODEL [-p 512] [-n 128] [-r 3] [--isa NAME] [-t N] [--kv-type f32|bf16]\n"
            "                    [--batch N] [--attn auto|absorbed|decompressed] [--token-ids-file FILE] [--json]\n"
            "  pp: tokens/s of one prefill of -p tokens; tg: tokens/s of -n single-token decode steps\n"
            "  after it; each repeated -r times (median).  The bound is the read bandwidth measured\n"
            "  in the same run divided by the weight bytes a decoded token reads.\n"
            "  Token ids are pseudo-random (xorshift64, id = s mod vocabulary) unless\n"
            "  --token-ids-file FILE gives them (separated by white space or commas; the first -p\n"
            "  are the prompt, the next -n the decoded tokens; at least -p + -n of them): routing,\n"
            "  and so what the expert pager reads, depends on the tokens.\n");
    moe_cli_pager_help(f);
}

#define TG_SEG 16   /* decode steps between two bandwidth probes */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int moe_bench_model(int argc, char **argv)
{
    const char *path = NULL, *isa = NULL, *ids_file = NULL;
    long p = 512, n = 128, reps = 3, threads = 0, batch = 0;
    int json = 0;
    enum moe_kv_type kv = MOE_KV_F32;
    struct moe_cli_pager pg;
    moe_cli_pager_init(&pg);
    enum moe_attn_path attn = MOE_ATTN_AUTO;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const int pc = moe_cli_pager_parse("bench", &pg, a, v);
        if (pc < 0) return 2;
        if (pc > 0) {
            i += pc - 1;
            continue;
        }
        long *num = !strcmp(a, "-p") ? &p : !strcmp(a, "-n") ? &n : !strcmp(a, "-r") ? &reps
                  : !strcmp(a, "-t") ? &threads : !strcmp(a, "--batch") ? &batch : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--json")) { json = 1; continue; }
        if (!v) {
            fprintf(stderr, "moecpu bench: unknown or incomplete option '%s' (try 'moecpu bench --help')\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "-m")) path = v;
        else if (!strcmp(a, "--isa")) isa = v;
        else if (!strcmp(a, "--token-ids-file")) ids_file = v;
        else if (!strcmp(a, "--kv-type") && (!strcmp(v, "f32") || !strcmp(v, "bf16"))) kv = !strcmp(v, "bf16") ? MOE_KV_BF16 : MOE_KV_F32;
        else if (!strcmp(a, "--attn") && (!strcmp(v, "auto") || !strcmp(v, "absorbed") || !strcmp(v, "decompressed")))
            attn = !strcmp(v, "auto") ? MOE_ATTN_AUTO : !strcmp(v, "absorbed") ? MOE_ATTN_ABSORBED : MOE_ATTN_DECOMPRESSED;
        else if (num) {
            char *end;
            *num = strtol(v, &end, 10);
            if (end == v || *end || *num < (num == &p || num == &n || num == &threads || num == &batch ? 0 : 1) || *num > 1 << 20) {
                fprintf(stderr, "moecpu bench: %s '%s' is not a valid count\n", a, v);
                return 2;
            }
        } else {
            fprintf(stderr, "moecpu bench: unknown option '%s %s' (try 'moecpu bench --help')\n", a, v);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "moecpu bench: -m MODEL is required (or 'moecpu bench kernels')\n");
        return 2;
    }
    if (p + n < 1) {
        fprintf(stderr, "moecpu bench: -p and -n are both 0: nothing to measure\n");
        return 2;
    }
    int32_t *file_ids = NULL;
    int64_t n_file_ids = 0;
    if (ids_file) {
        char *text = cli_read_ids_file("bench", ids_file);
        const int bad = !text || cli_parse_ids("bench", ids_file, text, &file_ids, &n_file_ids);
        free(text);
        if (bad) return 2;
        if (n_file_ids < p + n) {
            fprintf(stderr, "moecpu bench: '%s' holds %lld token ids; -p %ld -n %ld needs %ld\n", ids_file,
                    (long long)n_file_ids, p, n, p + n);
            free(file_ids);
            return 2;
        }
    }
    char err[1024];
    struct moe_model_params mp;
    moe_model_params_init(&mp);
    mp.isa = isa;
    mp.n_threads = (int)threads;
    moe_cli_pager_apply(&pg, &mp);
    struct moe_model *m = NULL;
    if (moe_model_open(&m, path, &mp, err, sizeof err)) {
        fprintf(stderr, "moecpu bench: %s\n", err);
        free(file_ids);
        return 1;
    }
    struct moe_model_info info;
    moe_model_get_info(m, &info);
    struct moe_context_params cp;
    moe_context_params_init(&cp);
    cp.n_ctx = p + n > 0 ? p + n : 1;
    cp.kv_type = kv;
    cp.n_batch = (int)batch;
    cp.attn = attn;
    struct moe_context *c = NULL;
    int rc = 1;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(p + n + 1));
    double *pp = calloc((size_t)reps, sizeof(double)), *tg = calloc((size_t)reps, sizeof(double));
    double *frac = calloc((size_t)reps, sizeof(double)), *bnd = calloc((size_t)reps, sizeof(double));
    double *bws = calloc((size_t)reps, sizeof(double));
    struct moe_pool *pool = moe_pool_create(info.n_threads);
    const size_t bw_bytes = (size_t)256 << 20;
    void *bwbuf = malloc(bw_bytes);
    if (!ids || !pp || !tg || !frac || !bnd || !bws || !pool || !bwbuf) {
        fprintf(stderr, "moecpu bench: out of memory\n");
        goto done;
    }
    if (moe_context_new(&c, m, &cp, err, sizeof err)) {
        fprintf(stderr, "moecpu bench: %s\n", err);
        goto done;
    }
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (long i = 0; i < p + n + 1; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        ids[i] = (int32_t)(s % (uint64_t)info.vocab_size);
    }
    if (file_ids) {
        if (cli_check_ids("bench", ids_file, m, file_ids, p + n)) {
            rc = 2;
            goto done;
        }
        memcpy(ids, file_ids, sizeof(int32_t) * (size_t)(p + n));
    }
    memset(bwbuf, 1, bw_bytes);
    const double E = info.n_routed_experts > 0 ? (double)info.n_routed_experts : 1.0;
    const double per_token = (double)info.weight_bytes - (double)info.embedding_bytes -
                             (double)info.routed_expert_bytes * (1.0 - (double)info.n_experts_per_tok / E) +
                             (double)info.embedding_bytes / (double)(info.vocab_size > 0 ? info.vocab_size : 1);
    for (long r = 0; r < reps; r++) {
        moe_context_reset(c);
        double t0 = moe_bench_now();
        if (p > 0 && moe_context_eval(c, ids, p, 0, err, sizeof err)) goto eval_fail;
        pp[r] = p > 0 ? (double)p / (moe_bench_now() - t0) : 0;
        /* decode in segments, each between two bandwidth probes */
        double busy = 0, bound_s = 0, bw_prev = n > 0 ? moe_bench_read_bw(pool, bwbuf, bw_bytes, 2) : 0;
        double bw_sum = bw_prev;
        int n_probe = 1;
        for (long i = 0; i < n; i += TG_SEG) {
            const long k = n - i < TG_SEG ? n - i : TG_SEG;
            const double s0 = moe_bench_now();
            for (long j = i; j < i + k; j++)
                if (moe_context_eval(c, ids + p + j, 1, 0, err, sizeof err)) goto eval_fail;
            busy += moe_bench_now() - s0;
            const double bw_next = moe_bench_read_bw(pool, bwbuf, bw_bytes, 2);
            bound_s += (double)k * per_token / (0.5 * (bw_prev + bw_next) * 1e9);
            bw_sum += bw_next;
            n_probe++;
            bw_prev = bw_next;
        }
        tg[r] = n > 0 ? (double)n / busy : 0;
        bnd[r] = n > 0 ? (double)n / bound_s : 0;
        frac[r] = n > 0 ? bound_s / busy : 0;
        bws[r] = bw_sum / n_probe;
    }
    /* the median run by decode speed gives the bound and bandwidth shown */
    long mid = 0;
    {
        double *sorted = malloc(sizeof(double) * (size_t)reps);
        if (!sorted) {
            fprintf(stderr, "moecpu bench: out of memory\n");
            goto done;
        }
        memcpy(sorted, tg, sizeof(double) * (size_t)reps);
        qsort(sorted, (size_t)reps, sizeof(double), cmp_double);
        for (long r = 0; r < reps; r++)
            if (tg[r] == sorted[reps / 2]) mid = r;
        free(sorted);
    }
    const double tgm = tg[mid], bound = bnd[mid], bw = bws[mid];
    qsort(pp, (size_t)reps, sizeof(double), cmp_double);
    qsort(frac, (size_t)reps, sizeof(double), cmp_double);
    const double ppm = pp[reps / 2], fm = frac[reps / 2];
    if (json) {
        printf("{\"model\":\"%s\",\"isa\":\"%s\",\"threads\":%d,\"p\":%ld,\"n\":%ld,\"pp_tps\":%.3f,\"tg_tps\":%.3f,"
               "\"read_bw_gbps\":%.2f,\"bytes_per_token\":%.0f,\"tg_bound_tps\":%.3f,\"tg_fraction_of_bound\":%.3f}\n",
               path, info.isa, info.n_threads, p, n, ppm, tgm, bw, per_token, bound, fm);
    } else {
        printf("model %s: %s, %d threads, %.1f MiB weights, %.1f MiB read per decoded token\n", path, info.isa,
               info.n_threads, (double)info.weight_bytes / 1048576.0, per_token / 1048576.0);
        if (p > 0) printf("pp%-5ld %10.2f tok/s\n", p, ppm);
        if (n > 0)
            printf("tg%-5ld %10.2f tok/s   bound %.2f tok/s (%.1f GB/s read bandwidth around it): %.0f%% of it%s\n", n,
                   tgm, bound, bw, 100.0 * fm, reps > 1 ? " (median run)" : "");
    }
    rc = 0;
    goto done;
eval_fail:
    fprintf(stderr, "moecpu bench: %s\n", err);
done:
    moe_cli_pager_report(&pg, m, "bench");
    free(ids); free(file_ids); free(pp); free(tg); free(frac); free(bnd); free(bws); free(bwbuf);
    moe_pool_destroy(pool);
    moe_context_free(c);
    moe_model_free(m);
    return rc;
}
