/*
 * src/cli_pager.c — the expert pager's command-line options (see
 * cli_pager.h).  Only the public API (moecpu.h) is used.
 */
#include "cli_pager.h"

#include <errno.h>
#include <stdbool.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Look-ahead on by default: in paired runs on the 36 GB benchmark model it
 * was faster in 3 of 4 (up to 1.9x), the I/O stall fell from 77-81 to
 * 30-44 ms/token; each token's 5 best-ranked predicted experts: 90% of
 * the look-ahead reads are then used, 68% with all 8 (README, "Expert
 * pager"). */
#define CLI_LOOKAHEAD 5

void moe_cli_pager_init(struct moe_cli_pager *o)
{
    memset(o, 0, sizeof *o);
    o->lookahead = CLI_LOOKAHEAD;
}

int moe_parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    const double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0)) return -1;
    double mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1024.0; end++; break;
    case 'm': case 'M': mul = 1048576.0; end++; break;
    case 'g': case 'G': mul = 1073741824.0; end++; break;
    case 't': case 'T': mul = 1099511627776.0; end++; break;
    default: break;
    }
    if (mul > 1 && *end == 'i') end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return -1;
    const double b = floor(v * mul);
    if (b >= 18446744073709551615.0 || b > (double)SIZE_MAX) return -1;
    *out = (size_t)b;
    return 0;
}

static int parse_count(const char *cmd, const char *opt, const char *val, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (end == val || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "moecpu %s: %s '%s' must be an integer in [%d, %d]\n", cmd, opt, val, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int moe_cli_pager_parse(const char *cmd, struct moe_cli_pager *o, const char *arg, const char *val)
{
    if (!strcmp(arg, "--pager-stats")) {
        o->stats = 1;
        return 1;
    }
    const bool ours = !strcmp(arg, "--mem-budget") || !strcmp(arg, "--pager") || !strcmp(arg, "--pager-policy") ||
                      !strcmp(arg, "--lookahead") || !strcmp(arg, "--io-threads") || !strcmp(arg, "--trace-routing") ||
                      !strcmp(arg, "--slot-prefault");
    if (!ours) return 0;
    if (!val) {
        fprintf(stderr, "moecpu %s: %s needs a value (try 'moecpu %s --help')\n", cmd, arg, cmd);
        return -1;
    }
    if (!strcmp(arg, "--mem-budget")) {
        if (moe_parse_size(val, &o->budget) || o->budget == 0) {
            fprintf(stderr, "moecpu %s: --mem-budget '%s' is not a size > 0 like 8G, 512M or 1.5G\n", cmd, val);
            return -1;
        }
    } else if (!strcmp(arg, "--pager")) {
        static const char *const names[] = {"auto", "off", "mmap", "pread", "direct"};
        int m = -1;
        for (int i = 0; i < 5; i++)
            if (!strcmp(val, names[i])) m = i;
        if (m < 0) {
            fprintf(stderr, "moecpu %s: --pager '%s' unknown (auto, off, mmap, pread, direct)\n", cmd, val);
            return -1;
        }
        o->mode = m;   /* the names are in enum moe_pager_mode order */
    } else if (!strcmp(arg, "--pager-policy")) {
        if (!strcmp(val, "freq")) o->policy = MOE_POLICY_FREQ;
        else if (!strcmp(val, "lru")) o->policy = MOE_POLICY_LRU;
        else {
            fprintf(stderr, "moecpu %s: --pager-policy '%s' unknown (freq, lru)\n", cmd, val);
            return -1;
        }
    } else if (!strcmp(arg, "--lookahead")) {
        if (parse_count(cmd, arg, val, 0, 4096, &o->lookahead)) return -1;
    } else if (!strcmp(arg, "--io-threads")) {
        if (parse_count(cmd, arg, val, 1, 64, &o->io_threads)) return -1;
    } else if (!strcmp(arg, "--slot-prefault")) {
        if (strcmp(val, "on") && strcmp(val, "off")) {
            fprintf(stderr, "moecpu %s: --slot-prefault '%s' unknown (on, off)\n", cmd, val);
            return -1;
        }
        o->slot_prefault = strcmp(val, "on") ? -1 : 1;
    } else {
        o->trace = val;
    }
    return 2;
}

void moe_cli_pager_apply(const struct moe_cli_pager *o, struct moe_model_params *mp)
{
    mp->pager_mode = o->mode;
    mp->mem_budget = o->budget;
    mp->pager_policy = o->policy;
    mp->lookahead = o->lookahead;
    mp->io_threads = o->io_threads;
    mp->slot_prefault = o->slot_prefault;
    mp->trace_routing = o->trace;
}

void moe_cli_pager_help(FILE *f)
{
    fprintf(f,
            "expert pager (routed experts in RAM within a budget; for models larger than memory):\n"
            "  --mem-budget SIZE resident routed-expert bytes, e.g. 8G, 512M (turns the pager on)\n"
            "  --pager MODE      auto (default: on only when the weights do not fit in RAM), off (plain\n"
            "                    mmap), mmap (madvise on the mapping), pread (read into slots),\n"
            "                    direct (pread with O_DIRECT; the default when on)\n"
            "  --pager-policy P  eviction: freq (decayed use frequency, default) or lru\n"
            "  --lookahead N     prefetch the next MoE layer's experts among each token's N\n"
            "                    best-ranked predicted choices (its router on this layer's\n"
            "                    output); 0 = off (default 5)\n"
            "  --io-threads N    parallel reads (default 16)\n"
            "  --slot-prefault on|off  pread/direct: fault the slot pool in ahead of use from an\n"
            "                    idle-priority thread (default on)\n"
            "  --pager-stats     per-batch and total hits, misses, bytes read, stall time on stderr\n"
            "  --trace-routing FILE  write 'token layer expert...' lines (for bench/pager-replay.sh)\n");
}

static const char *mode_name(int m)
{
    static const char *const names[] = {"auto", "off", "mmap", "pread", "direct"};
    return m >= 0 && m < 5 ? names[m] : "?";
}

static void line(const char *what, const struct moe_pager_stats *s)
{
    const double tok = s->tokens > 0 ? (double)s->tokens : 1.0;
    fprintf(stderr,
            "%s: %lld tok, hits %llu, misses %llu, prefetched %llu (used %llu), evicted %llu, read %.1f MiB "
            "(%.1f MiB/tok), stall %.1f ms (%.1f ms/tok), resident %.1f MiB\n",
            what, (long long)s->tokens, (unsigned long long)s->hits, (unsigned long long)s->misses,
            (unsigned long long)s->prefetches, (unsigned long long)s->prefetch_hits, (unsigned long long)s->evictions,
            (double)s->bytes_read / 1048576.0, (double)s->bytes_read / 1048576.0 / tok, s->stall_sec * 1e3,
            s->stall_sec * 1e3 / tok, (double)s->resident_bytes / 1048576.0);
}

void moe_cli_pager_report(const struct moe_cli_pager *o, const struct moe_model *m, const char *cmd)
{
    if (!o->stats || !m) return;
    struct moe_pager_stats tot;
    moe_model_pager_stats(m, &tot);
    int64_t n = moe_model_pager_history(m, NULL, 0);
    struct moe_pager_stats *h = n > 0 ? malloc((size_t)n * sizeof *h) : NULL;
    if (h) {
        n = moe_model_pager_history(m, h, n);
        for (int64_t i = 0; i < n; i++) {
            char what[64];
            snprintf(what, sizeof what, "pager batch %lld", (long long)i);
            line(what, &h[i]);
        }
        free(h);
    }
    char what[160];
    if (tot.budget_bytes == SIZE_MAX)
        snprintf(what, sizeof what, "moecpu %s: pager %s, no budget, total", cmd, mode_name(tot.mode));
    else
        snprintf(what, sizeof what, "moecpu %s: pager %s, budget %.1f MiB, total", cmd, mode_name(tot.mode),
                 (double)tot.budget_bytes / 1048576.0);
    line(what, &tot);
}
