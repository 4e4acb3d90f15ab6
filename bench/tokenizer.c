/*
 * bench/tokenizer.c — `moecpu bench tokenizer`: encoding speed of a
 * model's tokenizer on one core, in MB/s of input text (median of runs).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/moecpu.h"
#include "bench.h"

static void help(FILE *f)
{
    fprintf(f,
            "usage: moecpu bench tokenizer -m MODEL -f FILE [-r 5] [--time SEC] [--no-special] [--json]\n"
            "  Encodes FILE with the model's tokenizer on one thread, again and again for at least\n"
            "  --time seconds (default 1) per run, and prints the median of -r runs in MB/s of\n"
            "  input (1 MB = 10^6 bytes) and tokens/s.  MODEL: Hugging Face directory, GGUF file or\n"
            "  tokenizer.json.\n");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int moe_bench_tokenizer(int argc, char **argv)
{
    const char *model = NULL, *file = NULL;
    int reps = 5, json = 0;
    unsigned flags = MOE_TOK_PARSE_SPECIAL;
    double min_time = 1.0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--no-special")) flags = 0;
        else if (!strcmp(a, "-m") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(a, "-f") && i + 1 < argc) file = argv[++i];
        else if (!strcmp(a, "-r") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(a, "--time") && i + 1 < argc) min_time = atof(argv[++i]);
        else {
            fprintf(stderr, "moecpu bench tokenizer: unknown or incomplete option '%s' (try --help)\n", a);
            return 2;
        }
    }
    if (!model || !file) {
        fprintf(stderr, "moecpu bench tokenizer: -m MODEL and -f FILE are required (try --help)\n");
        return 2;
    }
    if (reps < 1 || reps > 1000 || !(min_time > 0 && min_time < 3600)) {
        fprintf(stderr, "moecpu bench tokenizer: -r must be in 1..1000 and --time in (0, 3600)\n");
        return 2;
    }
    FILE *f = fopen(file, "rb");
    if (!f) {
        fprintf(stderr, "moecpu bench tokenizer: cannot open '%s'\n", file);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = sz > 0 ? malloc((size_t)sz) : NULL;
    if (!text || fread(text, 1, (size_t)sz, f) != (size_t)sz) {
        fprintf(stderr, "moecpu bench tokenizer: cannot read '%s' (empty?)\n", file);
        fclose(f);
        free(text);
        return 1;
    }
    fclose(f);
    char err[1024];
    struct moe_tokenizer *t;
    double t0 = moe_bench_now();
    if (moe_tokenizer_open(&t, model, err, sizeof err)) {
        fprintf(stderr, "moecpu bench tokenizer: %s\n", err);
        free(text);
        return 1;
    }
    double load_s = moe_bench_now() - t0;
    double *mbps = malloc((size_t)reps * sizeof *mbps), *tps = malloc((size_t)reps * sizeof *tps);
    int rc = 0;
    int64_t n_tok = 0;
    for (int r = 0; r < reps && mbps && tps; r++) {
        double start = moe_bench_now(), el;
        int64_t iters = 0, toks = 0;
        do {
            int32_t *ids;
            int64_t n;
            if (moe_tokenizer_encode(t, text, (size_t)sz, flags, &ids, &n, err, sizeof err)) {
                fprintf(stderr, "moecpu bench tokenizer: %s\n", err);
                rc = 1;
                goto done;
            }
            free(ids);
            toks += n;
            n_tok = n;
            iters++;
            el = moe_bench_now() - start;
        } while (el < min_time);
        mbps[r] = (double)sz * (double)iters / el / 1e6;
        tps[r] = (double)toks / el;
    }
    if (!mbps || !tps) {
        fprintf(stderr, "moecpu bench tokenizer: out of memory\n");
        rc = 1;
        goto done;
    }
    qsort(mbps, (size_t)reps, sizeof *mbps, cmp_double);
    qsort(tps, (size_t)reps, sizeof *tps, cmp_double);
    if (json)
        printf("{\"file\": \"%s\", \"bytes\": %ld, \"tokens\": %lld, \"load_s\": %.3f, \"mb_per_s\": %.2f, "
               "\"tokens_per_s\": %.0f, \"runs\": %d}\n",
               file, sz, (long long)n_tok, load_s, mbps[reps / 2], tps[reps / 2], reps);
    else
        printf("tokenizer %s: loaded in %.2f s; %s: %ld bytes -> %lld tokens (%.2f bytes/token)\n"
               "encode: %.2f MB/s, %.0f tokens/s (median of %d runs, 1 thread; min %.2f, max %.2f MB/s)\n",
               model, load_s, file, sz, (long long)n_tok, n_tok ? (double)sz / (double)n_tok : 0.0, mbps[reps / 2],
               tps[reps / 2], reps, mbps[0], mbps[reps - 1]);
done:
    free(mbps);
    free(tps);
    free(text);
    moe_tokenizer_free(t);
    return rc;
}
