/*
 * bench/bench.h — benchmark entry points behind `moecpu bench ...`, and
 * the helpers they share (timing, memory read bandwidth).
 */
#ifndef MOE_BENCH_H
#define MOE_BENCH_H

#include <stddef.h>

struct moe_pool;

/* `moecpu bench kernels [options]`; returns the process exit status. */
int moe_bench_kernels(int argc, char **argv);
/* `moecpu bench tokenizer -m MODEL -f FILE [options]`; returns the process exit status. */
int moe_bench_tokenizer(int argc, char **argv);
/* `moecpu bench -m MODEL [options]`; returns the process exit status. */
int moe_bench_model(int argc, char **argv);

/* `moecpu bench pager-replay [options]` (bench/pager_replay.c). */
int moe_bench_pager_replay(int argc, char **argv);

/* Seconds on a monotonic clock. */
double moe_bench_now(void);

/* Streaming read bandwidth of `buf` (bytes, a multiple of 64) in GB/s with
 * the pool's threads, best of `reps` passes. */
double moe_bench_read_bw(struct moe_pool *pool, const void *buf, size_t bytes, int reps);

#endif
