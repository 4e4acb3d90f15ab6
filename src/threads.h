/*
 * src/threads.h — a persistent pool of worker threads.
 *
 * moe_pool_run(pool, fn, ctx, n_tasks) calls fn(ctx, task) once for every
 * task in [0, n_tasks), spread over the pool's threads and the calling
 * thread, and returns when all have finished.  Workers spin briefly between
 * jobs (decode issues thousands of small jobs per token) and then sleep.
 * One job at a time per pool; the pool is not reentrant.
 */
#ifndef MOE_THREADS_H
#define MOE_THREADS_H

typedef void (*moe_task_fn)(void *ctx, int task);

struct moe_pool;

/* n_threads counts the caller: 1 means no workers.  NULL on failure. */
struct moe_pool *moe_pool_create(int n_threads);
void moe_pool_destroy(struct moe_pool *p);
int moe_pool_threads(const struct moe_pool *p);
void moe_pool_run(struct moe_pool *p, moe_task_fn fn, void *ctx, int n_tasks);

/* Physical cores of this machine (cpuinfo; sysconf fallback), >= 1. */
int moe_physical_cores(void);

#endif
