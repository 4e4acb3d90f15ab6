/*
 * src/pager.h — the expert pager: keeps routed experts' weights in RAM
 * within a budget and brings in the ones a batch is routed to.
 *
 * It knows every routed expert's byte ranges (gate, up, down and, for FP8,
 * their scales) in the model files, GGUF 3-D expert tensors and Hugging
 * Face per-expert tensors alike, sharded or not.  The forward pass calls
 * it from the thread that runs the eval (under the model's eval lock):
 *
 *   moe_pager_request(layer, experts)   right after routing: pins them,
 *                                       queues the reads of those not
 *                                       resident (I/O threads start now)
 *   moe_pager_collect(...)              returns experts that are ready
 *                                       (blocks, counting stall time, only
 *                                       when none of the rest is)
 *   moe_pager_mats(layer, e)            the three matrices to compute with
 *   moe_pager_release(layer, e)         unpin once its outputs are computed
 *
 * Two I/O modes: MMAP keeps computing on the file mapping (reads are
 * MADV_WILLNEED + MADV_POPULATE_READ from the I/O threads; eviction is
 * MADV_DONTNEED + POSIX_FADV_DONTNEED, so the pages leave RAM); PREAD and
 * DIRECT read into a fixed pool of slots (anonymous memory) that the
 * forward pass computes on; with `prefault` an idle-priority thread
 * allocates and faults slots in ahead of use, so the kernel's zeroing of
 * new pages is off the I/O path.  The budget bounds the bytes held: an expert
 * that has no room waits until a release frees some, so a prefill batch
 * that needs more experts than fit is computed in waves.
 *
 * Eviction: the resident, unpinned expert with the lowest score.  FREQ:
 * use count decayed with a half-life of PAGER_HALF_LIFE tokens (kept as
 * log2(count) + t/half_life, which orders experts the same at any later
 * time, so nothing is recomputed); LRU: last use.
 */
#ifndef MOE_PAGER_H
#define MOE_PAGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moecpu.h"

struct moe_model;
struct moe_mat;
struct moe_pager;

/* Half-life of the FREQ policy's use counts, in tokens.  128 rather than
 * the 64 used until 2026-12-02: on the benchmark model's 1024-token traces
 * it misses 3-6% less (README, "Policies on routing traces"); longer ones
 * gain little more and would follow a change of topic more slowly. */
#define MOE_PAGER_HALF_LIFE 128.0

/* mode: MOE_PAGER_MMAP, _PREAD or _DIRECT, or _OFF for a pager that only
 * traces and counts (the forward pass then uses the mapping as is).
 * budget: bytes (SIZE_MAX: unbounded).  At creation the routed experts'
 * pages are dropped from the page cache (so residency starts at 0 and is
 * what the pager holds) and every other weight is made resident. */
int moe_pager_create(struct moe_pager **out, struct moe_model *m, int mode, size_t budget, int policy,
                     int lookahead, int io_threads, int prefault, const char *trace_path, char *err, size_t errlen);
void moe_pager_free(struct moe_pager *p);

int moe_pager_lookahead(const struct moe_pager *p); /* experts per layer, 0: off */

/* Routing of a batch: sel[T][K] experts.  Writes the trace lines. */
void moe_pager_trace(struct moe_pager *p, int layer, const int *sel, int T, int K);
/* experts[n]: distinct experts of `layer` the batch needs. */
void moe_pager_request(struct moe_pager *p, int layer, const int *experts, int n);
/* Look-ahead: experts[n] of `layer` likely needed next, likeliest first;
 * read at low priority (demand pieces first; look-ahead pieces on at most
 * a quarter of the I/O threads at once, so a demand read always finds
 * free threads), at most lookahead of them, only where the budget has
 * room without evicting anything used in the last token. */
void moe_pager_prefetch(struct moe_pager *p, int layer, const int *experts, int n);
/* Among experts[n] with taken[i] == 0: the ones ready now (taken set,
 * written to out); waits until at least one is, unless all are taken.
 * Returns how many were written. */
int moe_pager_collect(struct moe_pager *p, int layer, const int *experts, int n, unsigned char *taken, int *out);
/* gate, up, down of a ready expert: valid until its release. */
const struct moe_mat *moe_pager_mats(struct moe_pager *p, int layer, int e);
void moe_pager_release(struct moe_pager *p, int layer, int e);
/* The eval of a batch of T tokens is done (stats history, trace tokens). */
void moe_pager_end_batch(struct moe_pager *p, int T);

void moe_pager_get_stats(const struct moe_pager *p, struct moe_pager_stats *s);
int64_t moe_pager_get_history(const struct moe_pager *p, struct moe_pager_stats *out, int64_t max);

/* ---- Offline replay of a routing trace (bench/pager_replay.c): the same
 * eviction policies over a cache of `capacity` experts of equal size,
 * demand loads only.  A trace is n records of (token, layer, expert). */
struct moe_trace_use {
    int64_t token;
    int layer, expert;
};
/* Replay-only policy: Belady's offline optimum (evict the expert whose
 * next use is farthest away; it needs the future, so the pager cannot
 * use it): the bound any online policy's hit rate stays under. */
#define MOE_REPLAY_OPT (-1)
/* Hits of the policy (MOE_POLICY_* or MOE_REPLAY_OPT); *misses gets the
 * misses.  n_layers x n_experts bound layer and expert.  Returns -1 when
 * out of memory. */
int64_t moe_pager_replay(const struct moe_trace_use *uses, int64_t n, int n_layers, int n_experts, int64_t capacity,
                         int policy, int64_t *misses);

#endif
