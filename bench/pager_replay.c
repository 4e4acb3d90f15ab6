/*
 * bench/pager_replay.c — `moecpu bench pager-replay --trace FILE`: replays
 * a routing trace (`--trace-routing FILE` of run/eval/perplexity/bench)
 * through the pager's eviction policies (src/pager.c moe_pager_replay:
 * the same scores the pager keeps) and prints the hit rate of each at
 * several cache sizes, so LRU and the decayed-frequency policy can be
 * compared on the same routing.
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/moecpu.h"
#include "../src/pager.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: moecpu bench pager-replay --trace FILE [--fractions 0.1,0.25,0.5] [--json]\n"
            "  Hit rates of the lru and freq eviction policies replaying a routing trace, for caches\n"
            "  holding the given fractions of all the (layer, expert) pairs the trace names, and of\n"
            "  Belady's offline optimum (opt: evicts the expert used farthest ahead; it needs the\n"
            "  future, so it is the bound for any policy, not one the pager can run).\n");
}

int moe_bench_pager_replay(int argc, char **argv)
{
    const char *path = NULL, *fr = "0.05,0.1,0.25,0.5";
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--trace") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--fractions") && i + 1 < argc) fr = argv[++i];
        else {
            fprintf(stderr, "moecpu bench pager-replay: unknown or incomplete option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "moecpu bench pager-replay: --trace FILE is required\n");
        return 2;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "moecpu bench pager-replay: cannot read '%s': %s\n", path, strerror(errno));
        return 1;
    }
    size_t cap = 1 << 16, n = 0;
    struct moe_trace_use *u = malloc(cap * sizeof *u);
    char line[65536];
    int max_layer = 0, max_e = 0, rc = 1;
    long long lineno = 0;
    while (u && fgets(line, sizeof line, f)) {
        lineno++;
        char *p = line, *end;
        long long tok = strtoll(p, &end, 10);
        if (end == p) continue;
        p = end;
        long layer = strtol(p, &end, 10);
        if (end == p || tok < 0 || layer < 0 || layer > 100000) {
            fprintf(stderr, "moecpu bench pager-replay: %s:%lld: not 'token layer experts...'\n", path, lineno);
            goto done;
        }
        for (p = end;;) {
            long e = strtol(p, &end, 10);
            if (end == p) break;
            p = end;
            if (e < 0 || e > 1000000) {
                fprintf(stderr, "moecpu bench pager-replay: %s:%lld: bad expert %ld\n", path, lineno, e);
                goto done;
            }
            if (n == cap) {
                struct moe_trace_use *nu = realloc(u, 2 * cap * sizeof *u);
                if (!nu) break;
                u = nu;
                cap *= 2;
            }
            u[n++] = (struct moe_trace_use){tok, (int)layer, (int)e};
            if (layer > max_layer) max_layer = (int)layer;
            if (e > max_e) max_e = (int)e;
        }
    }
    if (!u || !n) {
        fprintf(stderr, "moecpu bench pager-replay: %s: %s\n", path, u ? "no routing lines" : "out of memory");
        goto done;
    }
    /* distinct (layer, expert) pairs named */
    const size_t total = (size_t)(max_layer + 1) * (size_t)(max_e + 1);
    unsigned char *seen = calloc(total, 1);
    if (!seen) goto done;
    int64_t distinct = 0;
    for (size_t i = 0; i < n; i++) {
        const size_t x = (size_t)u[i].layer * (size_t)(max_e + 1) + (size_t)u[i].expert;
        distinct += !seen[x];
        seen[x] = 1;
    }
    free(seen);
    if (!json)
        printf("trace %s: %zu expert uses, %lld distinct (layer, expert) pairs\n%10s %10s %10s %10s %10s\n", path,
               n, (long long)distinct, "fraction", "capacity", "lru hit%", "freq hit%", "opt hit%");
    for (const char *q = fr; *q;) {
        char *end;
        const double frac = strtod(q, &end);
        if (end == q || frac <= 0 || frac > 1) {
            fprintf(stderr, "moecpu bench pager-replay: --fractions: '%s' is not a list of numbers in (0, 1]\n", fr);
            goto done;
        }
        q = *end == ',' ? end + 1 : end;
        int64_t capn = (int64_t)(frac * (double)distinct + 0.5), ml, mf, mo;
        if (capn < 1) capn = 1;
        const int64_t hl = moe_pager_replay(u, (int64_t)n, max_layer + 1, max_e + 1, capn, MOE_POLICY_LRU, &ml);
        const int64_t hf = moe_pager_replay(u, (int64_t)n, max_layer + 1, max_e + 1, capn, MOE_POLICY_FREQ, &mf);
        const int64_t ho = moe_pager_replay(u, (int64_t)n, max_layer + 1, max_e + 1, capn, MOE_REPLAY_OPT, &mo);
        if (hl < 0 || hf < 0 || ho < 0) {
            fprintf(stderr, "moecpu bench pager-replay: out of memory\n");
            goto done;
        }
        if (json)
            printf("{\"trace\":\"%s\",\"fraction\":%.3f,\"capacity\":%lld,\"uses\":%zu,\"lru_hit_rate\":%.4f,"
                   "\"freq_hit_rate\":%.4f,\"opt_hit_rate\":%.4f}\n",
                   path, frac, (long long)capn, n, (double)hl / (double)n, (double)hf / (double)n,
                   (double)ho / (double)n);
        else
            printf("%10.3f %10lld %10.1f %10.1f %10.1f\n", frac, (long long)capn, 100.0 * (double)hl / (double)n,
                   100.0 * (double)hf / (double)n, 100.0 * (double)ho / (double)n);
    }
    rc = 0;
done:
    fclose(f);
    free(u);
    return rc;
}
