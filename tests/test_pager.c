/*
 * tests/test_pager.c — the expert pager (src/pager.c) through the public
 * API, on random models made by tests/gen_model.c.
 *
 * What is checked:
 *  - logits are bit-identical (memcmp) to the model without a pager, for
 *    every I/O mode (mmap, pread, direct) and policy (freq, lru), with and
 *    without a budget and with look-ahead, over a prefill in two batches
 *    and single-token decode steps; GGUF Q8_0 experts (3-D tensors) and a
 *    sharded Hugging Face FP8 directory (per-expert tensors + scales);
 *  - the GGUF model's routed experts are 5x the budget; after every eval
 *    the bytes of the file's routed-expert pages that are in RAM
 *    (mincore on a mapping of our own: page-cache residency) stay within
 *    the budget plus one layer's working set (top-k experts) plus the
 *    pages shared by two neighbouring ranges (the pager drops only pages
 *    wholly inside an evicted expert; at most one per range boundary);
 *  - bytes read = (misses + prefetches) x an expert's bytes, and for
 *    pread the process's own read count (/proc/self/io rchar) grew by
 *    exactly that (less what reading /proc/self/io itself adds; O_DIRECT
 *    reads whole 4 KiB pages: at most 8 KiB more per range);
 *  - the budget forced evictions, and resident bytes never exceed it;
 *  - the routing trace has one line per token and MoE layer, with top-k
 *    distinct experts;
 *  - the offline replay: hand-worked sequences where LRU, the frequency
 *    policy and Belady's optimum differ.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../src/model_files.h"
#include "../src/moecpu.h"
#include "model_fixture.h"
#include "../src/pager.h"

static char err[2048];
static int g_quick;

#define N_PREFILL 16
#define N_DECODE 12
#define BATCH 8
#define PAGE 4096

static const int32_t ids[N_PREFILL + N_DECODE] = {1, 5, 9, 200, 17, 42, 3, 300, 77, 8, 255, 128, 64, 7, 11, 400,
                                                   2, 6, 99, 310, 45, 12, 500, 33, 21, 1, 88, 190};

static int group_setup(void **state)
{
    (void)state;
    const char *q = getenv("MOECPU_TEST_QUICK");
    g_quick = q && atoi(q) > 0;
    if (fixture_open("pager")) return -1;
    if (!g_have_gen) return 0;
    /* 3 MoE layers x 16 experts of 3 x 139 KiB (Q8_0, 512 x 256): 20 MiB routed */
    if (gen("q8.gguf", "--style v3 --format gguf-q8_0 --seed 11 --hidden 512 --moe-inter 256 --experts 16 "
                       "--topk 4 --layers 4 --vocab 512 --zipf 0.05") ||
        gen("fp8", "--style v3 --format hf-fp8 --seed 12 --experts 16 --topk 4 --shards 3"))
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    fixture_close();
    return 0;
}

/* ---- measuring from outside the pager */

static long long rchar(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    if (!f) return -1;
    char line[128];
    long long v = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "rchar: %lld", &v) == 1) break;
    fclose(f);
    return v;
}

/* The routed-expert tensors of a file: a mapping of our own, so mincore
 * tells page-cache residency, whoever holds the pages. */
struct expert_pages {
    struct moe_model_files *mf;
    size_t n_ranges;           /* expert slices (3 per expert, 6 with FP8 scales) */
    size_t n_tensors;
};

static size_t resident_expert_bytes(const struct expert_pages *ep)
{
    size_t total = 0;
    unsigned char *vec = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < ep->mf->n_tensors; i++) {
        const struct moe_tensor *t = &ep->mf->tensors[i];
        if (!strstr(t->name, "_exps.") && !strstr(t->name, ".mlp.experts.")) continue;
        const uintptr_t a = (uintptr_t)t->data & ~(uintptr_t)(PAGE - 1);
        const size_t len = (uintptr_t)t->data + t->nbytes - a, pages = (len + PAGE - 1) / PAGE;
        if (pages > cap) {
            free(vec);
            vec = malloc(pages);
            cap = pages;
        }
        assert_non_null(vec);
        assert_int_equal(mincore((void *)a, len, vec), 0);
        for (size_t p = 0; p < pages; p++) total += (vec[p] & 1) ? PAGE : 0;
    }
    free(vec);
    return total;
}

/* ---- runs */

struct run {
    float *logits;             /* [N_PREFILL + N_DECODE][V] */
    struct moe_pager_stats st;
    size_t max_resident_pages; /* largest mincore count after an eval */
    long long rchar_delta;     /* bytes read by the process during the evals */
};

static int64_t g_V;

static void do_run(const char *path, int mode, size_t budget, int policy, int lookahead, int nopf, const char *trace,
                   const struct expert_pages *ep, struct run *out)
{
    struct moe_model_params mp;
    moe_model_params_init(&mp);
    mp.n_threads = 2;
    mp.pager_mode = mode;
    mp.mem_budget = budget;
    mp.pager_policy = policy;
    mp.lookahead = lookahead;
    mp.slot_prefault = nopf ? -1 : 0;
    mp.trace_routing = trace;
    struct moe_model *m;
    int rc = moe_model_open(&m, path, &mp, err, sizeof err);
    if (rc) print_message("open %s: %s\n", path, err);
    assert_int_equal(rc, MOECPU_OK);
    struct moe_model_info info;
    moe_model_get_info(m, &info);
    g_V = info.vocab_size;
    struct moe_context_params cp;
    moe_context_params_init(&cp);
    cp.n_ctx = N_PREFILL + N_DECODE;
    cp.n_batch = BATCH;
    struct moe_context *c;
    assert_int_equal(moe_context_new(&c, m, &cp, err, sizeof err), MOECPU_OK);
    const int64_t n = N_PREFILL + N_DECODE;
    out->logits = malloc(sizeof(float) * (size_t)(n * g_V));
    assert_non_null(out->logits);
    out->max_resident_pages = 0;
    const long long r0 = rchar(), r1 = rchar(), per_probe = r1 - r0;
    for (int64_t i = 0; i < n;) {
        const int64_t cnt = i == 0 ? N_PREFILL : 1;
        assert_int_equal(moe_context_eval(c, ids + i, cnt, 1, err, sizeof err), MOECPU_OK);
        int64_t rows;
        const float *lg = moe_context_logits(c, &rows);
        assert_int_equal(rows, cnt);
        memcpy(out->logits + i * g_V, lg, sizeof(float) * (size_t)(cnt * g_V));
        if (ep) {
            const size_t r = resident_expert_bytes(ep);
            if (r > out->max_resident_pages) out->max_resident_pages = r;
        }
        i += cnt;
    }
    const long long r2 = rchar();
    out->rchar_delta = r2 - r1 - per_probe; /* r2 counts the read of r1's probe */
    moe_model_pager_stats(m, &out->st);
    assert_int_equal(out->st.tokens, mode == MOE_PAGER_OFF && !trace ? 0 : n);
    moe_context_free(c);
    moe_model_free(m);
}

static size_t expert_bytes(const char *path)
{
    struct moe_model_params mp;
    moe_model_params_init(&mp);
    mp.pager_mode = MOE_PAGER_OFF;
    struct moe_model *m;
    assert_int_equal(moe_model_open(&m, path, &mp, err, sizeof err), MOECPU_OK);
    struct moe_model_info info;
    moe_model_get_info(m, &info);
    const int moe_layers = info.n_layers - info.n_dense_layers;
    const size_t b = info.routed_expert_bytes / (size_t)(moe_layers * info.n_routed_experts);
    assert_int_equal(b * (size_t)(moe_layers * info.n_routed_experts), info.routed_expert_bytes);
    moe_model_free(m);
    return b;
}

static void open_pages(const char *path, struct expert_pages *ep)
{
    assert_int_equal(moe_model_files_open(&ep->mf, path, err, sizeof err), 0);
    ep->n_ranges = 0;
    ep->n_tensors = 0;
    for (size_t i = 0; i < ep->mf->n_tensors; i++)
        if (strstr(ep->mf->tensors[i].name, "_exps.") || strstr(ep->mf->tensors[i].name, ".mlp.experts.")) {
            ep->n_tensors++;
            ep->n_ranges += strstr(ep->mf->tensors[i].name, "_exps.") ? 16 : 1;
        }
}

struct cfg {
    int mode;
    size_t budget;             /* 0: unbounded */
    int policy, lookahead;
    int nopf;                  /* slots faulted in on the I/O path (no prefault thread) */
};

static void check_model(const char *name, const struct cfg *cfgs, size_t n_cfgs, size_t budget_check)
{
    NEED_GEN();
    const char *path = P(name);
    const size_t eb = expert_bytes(path);
    struct expert_pages ep;
    open_pages(path, &ep);
    struct run ref;
    do_run(path, MOE_PAGER_OFF, 0, 0, 0, 0, NULL, NULL, &ref);
    const size_t bytes = sizeof(float) * (size_t)((N_PREFILL + N_DECODE) * g_V);
    for (size_t i = 0; i < n_cfgs; i++) {
        const struct cfg *k = &cfgs[i];
        struct run r;
        do_run(path, k->mode, k->budget, k->policy, k->lookahead, k->nopf, NULL, &ep, &r);
        print_message("%s mode %d budget %zu policy %d lookahead %d: hits %llu misses %llu prefetches %llu "
                      "evictions %llu read %llu (rchar +%lld) max resident %zu\n",
                      name, k->mode, k->budget, k->policy, k->lookahead, (unsigned long long)r.st.hits,
                      (unsigned long long)r.st.misses, (unsigned long long)r.st.prefetches,
                      (unsigned long long)r.st.evictions, (unsigned long long)r.st.bytes_read, r.rchar_delta,
                      r.max_resident_pages);
        if (memcmp(ref.logits, r.logits, bytes) != 0)
            fail_msg("%s: logits of mode %d policy %d budget %zu differ from the model without a pager", name, k->mode,
                     k->policy, k->budget);
        assert_int_equal(r.st.bytes_read, (r.st.misses + r.st.prefetches) * eb);
        assert_true(r.st.misses > 0);
        if (k->lookahead) /* look-ahead reads, and some of them are used */
            assert_true(r.st.prefetches > 0 && r.st.prefetch_hits > 0);
        if (k->mode == MOE_PAGER_PREAD) /* 16: the /proc/self/io text may grow by a digit between probes */
            assert_true(llabs(r.rchar_delta - (long long)r.st.bytes_read) <= 16);
        if (k->mode == MOE_PAGER_DIRECT) {
            assert_true(r.rchar_delta >= (long long)r.st.bytes_read);
            assert_true(r.rchar_delta <= (long long)(r.st.bytes_read + (r.st.misses + r.st.prefetches) * 6 * 8192));
        }
        if (k->budget) {
            assert_true(r.st.evictions > 0);
            assert_true(r.st.resident_bytes <= k->budget);
            const size_t limit = k->budget + 4 * eb + (ep.n_ranges + ep.n_tensors) * PAGE;
            if (budget_check && r.max_resident_pages > limit)
                fail_msg("%s mode %d: %zu bytes of routed-expert pages in RAM, more than budget %zu + working set "
                         "%zu + boundary pages %zu",
                         name, k->mode, r.max_resident_pages, k->budget, 4 * eb, (ep.n_ranges + ep.n_tensors) * PAGE);
        }
        free(r.logits);
    }
    free(ref.logits);
    moe_model_files_close(ep.mf);
}

static void test_gguf_modes(void **state)
{
    (void)state;
    const size_t B = (size_t)4 << 20; /* the routed experts are 20.4 MiB */
    const struct cfg all[] = {
        {MOE_PAGER_MMAP, B, MOE_POLICY_FREQ, 0, 0},   {MOE_PAGER_MMAP, B, MOE_POLICY_LRU, 0, 0},
        {MOE_PAGER_PREAD, B, MOE_POLICY_FREQ, 0, 0},  {MOE_PAGER_PREAD, B, MOE_POLICY_LRU, 0, 0},
        {MOE_PAGER_DIRECT, B, MOE_POLICY_FREQ, 0, 0}, {MOE_PAGER_DIRECT, B, MOE_POLICY_LRU, 0, 0},
        {MOE_PAGER_DIRECT, B, MOE_POLICY_FREQ, 2, 0}, {MOE_PAGER_MMAP, B, MOE_POLICY_FREQ, 2, 0},
        {MOE_PAGER_MMAP, 0, MOE_POLICY_FREQ, 0, 0},   {MOE_PAGER_DIRECT, 0, MOE_POLICY_FREQ, 0, 0},
        {MOE_PAGER_DIRECT, B, MOE_POLICY_FREQ, 0, 1}, {MOE_PAGER_PREAD, 0, MOE_POLICY_LRU, 0, 1},
    };
    check_model("q8.gguf", all, g_quick ? 4 : sizeof all / sizeof all[0], 1);
}

static void test_hf_fp8_sharded(void **state)
{
    (void)state;
    /* 3 MoE layers x 16 experts of 3 x (64 x 128 e4m3 + scales) */
    const size_t B = 160 << 10;
    const struct cfg all[] = {
        {MOE_PAGER_MMAP, B, MOE_POLICY_FREQ, 0, 0},
        {MOE_PAGER_PREAD, B, MOE_POLICY_LRU, 0, 0},
        {MOE_PAGER_DIRECT, B, MOE_POLICY_FREQ, 1, 0},
    };
    /* tiny experts share most of their pages with neighbours: no mincore bound here */
    check_model("fp8", all, sizeof all / sizeof all[0], 0);
}

static void test_trace(void **state)
{
    (void)state;
    NEED_GEN();
    struct run r;
    const char *tp = P("trace.txt");
    do_run(P("q8.gguf"), MOE_PAGER_OFF, 0, 0, 0, 0, tp, NULL, &r);
    free(r.logits);
    FILE *f = fopen(tp, "r");
    assert_non_null(f);
    char line[512];
    int lines = 0;
    unsigned char seen[N_PREFILL + N_DECODE][4] = {{0}};
    while (fgets(line, sizeof line, f)) {
        long long tok;
        int layer, e[5], used;
        const int got = sscanf(line, "%lld %d %d %d %d %d%n", &tok, &layer, &e[0], &e[1], &e[2], &e[3], &used);
        assert_int_equal(got, 6);
        assert_true(line[used] == '\n');
        assert_true(tok >= 0 && tok < N_PREFILL + N_DECODE);
        assert_true(layer >= 1 && layer <= 3);   /* layer 0 is dense */
        assert_int_equal(seen[tok][layer]++, 0);
        for (int i = 0; i < 4; i++) {
            assert_true(e[i] >= 0 && e[i] < 16);
            for (int j = 0; j < i; j++) assert_true(e[i] != e[j]);
        }
        lines++;
    }
    fclose(f);
    assert_int_equal(lines, (N_PREFILL + N_DECODE) * 3); /* so every (token, MoE layer) once */
    assert_int_equal(r.st.bytes_read, 0); /* a counting-only pager reads nothing */
}

/* Capacity 2, one expert per token: A A A B C A.  LRU: misses A, B, C (C
 * evicts A, used before B), A again: 2 hits.  Decayed frequency: C evicts
 * B (count 1 against A's ~3), A hits: 3 hits. */
static void test_replay(void **state)
{
    (void)state;
    const int seq[] = {0, 0, 0, 1, 2, 0};
    struct moe_trace_use u[6];
    for (int i = 0; i < 6; i++) u[i] = (struct moe_trace_use){i, 0, seq[i]};
    int64_t miss;
    assert_int_equal(moe_pager_replay(u, 6, 1, 4, 2, MOE_POLICY_LRU, &miss), 2);
    assert_int_equal(miss, 4);
    assert_int_equal(moe_pager_replay(u, 6, 1, 4, 2, MOE_POLICY_FREQ, &miss), 3);
    assert_int_equal(miss, 3);
    /* Belady's optimum, A B C A: C evicts B (never used again), A hits;
     * LRU and freq evict A (the oldest, counts equal) and miss it */
    const int seq2[] = {0, 1, 2, 0};
    struct moe_trace_use w[4];
    for (int i = 0; i < 4; i++) w[i] = (struct moe_trace_use){i, 0, seq2[i]};
    assert_int_equal(moe_pager_replay(w, 4, 1, 4, 2, MOE_REPLAY_OPT, &miss), 1);
    assert_int_equal(miss, 3);
    assert_int_equal(moe_pager_replay(w, 4, 1, 4, 2, MOE_POLICY_LRU, &miss), 0);
    assert_int_equal(moe_pager_replay(w, 4, 1, 4, 2, MOE_POLICY_FREQ, &miss), 0);
    assert_int_equal(moe_pager_replay(u, 6, 1, 4, 2, MOE_REPLAY_OPT, &miss), 3);
    /* an expert twice in one request: its next use is a later request's,
     * not the copy beside it.  Token 0 uses A and A, token 1 B, token 2 C,
     * token 3 B; capacity 2: at C, A (never used again) is the victim, so
     * B hits */
    struct moe_trace_use d[5] = {{0, 0, 0}, {0, 0, 0}, {1, 0, 1}, {2, 0, 2}, {3, 0, 1}};
    assert_int_equal(moe_pager_replay(d, 5, 1, 4, 2, MOE_REPLAY_OPT, &miss), 1);
    assert_int_equal(miss, 3);
    /* two experts in one request are never evicted for each other */
    struct moe_trace_use v[3] = {{0, 0, 0}, {0, 0, 1}, {0, 0, 2}};
    assert_int_equal(moe_pager_replay(v, 3, 1, 4, 1, MOE_POLICY_LRU, &miss), 0);
    assert_int_equal(miss, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay),
        cmocka_unit_test(test_gguf_modes),
        cmocka_unit_test(test_hf_fp8_sharded),
        cmocka_unit_test(test_trace),
    };
    return cmocka_run_group_tests_name("pager", tests, group_setup, group_teardown);
}
