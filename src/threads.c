/*
 * src/threads.c — persistent thread pool (see threads.h).
 *
 * A job is published by bumping `generation`; workers and the caller take
 * task indices from an atomic counter; the caller returns once every worker
 * has acknowledged the generation (so no worker can still be touching the
 * job's fields when the next job is written).  Workers spin for a short
 * while before sleeping on a condition variable so back-to-back jobs don't
 * pay a futex wake-up.
 */
#include "threads.h"

#include <cpuinfo.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

/* ~40 us of pause before sleeping (workers) or yielding (the caller): long
 * enough to bridge the gaps between a decode step's jobs, short enough not
 * to steal the core from the thread we wait for when the machine is
 * oversubscribed (20000 rounds halved decode speed on a busy 2-core VM). */
#define SPIN_ROUNDS 2000

struct moe_pool {
    int n_threads;
    pthread_t *tids;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint generation;
    atomic_int stop;
    /* the current job */
    moe_task_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next;
    atomic_uint *acked;   /* per worker: last generation it finished */
};

static void run_tasks(struct moe_pool *p)
{
    for (;;) {
        int t = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (t >= p->n_tasks)
            break;
        p->fn(p->ctx, t);
    }
}

struct worker_arg {
    struct moe_pool *p;
    int id;
};

static void *worker(void *arg)
{
    struct moe_pool *p = ((struct worker_arg *)arg)->p;
    const int id = ((struct worker_arg *)arg)->id;
    free(arg);
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&p->stop, memory_order_acquire)) {
            if (++spins < SPIN_ROUNDS) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            while (atomic_load_explicit(&p->generation, memory_order_acquire) == seen &&
                   !atomic_load_explicit(&p->stop, memory_order_acquire))
                pthread_cond_wait(&p->cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load_explicit(&p->stop, memory_order_acquire))
            return NULL;
        seen = g;
        run_tasks(p);
        atomic_store_explicit(&p->acked[id], g, memory_order_release);
    }
}

struct moe_pool *moe_pool_create(int n_threads)
{
    if (n_threads < 1)
        n_threads = 1;
    struct moe_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->next, 0);
    p->tids = calloc((size_t)n_threads, sizeof *p->tids);
    p->acked = calloc((size_t)n_threads, sizeof *p->acked);
    if (!p->tids || !p->acked) {
        free(p->tids);
        free(p->acked);
        free(p);
        return NULL;
    }
    for (int i = 0; i < n_threads; i++)
        atomic_init(&p->acked[i], 0);
    for (int i = 1; i < n_threads; i++) {
        struct worker_arg *a = malloc(sizeof *a);
        if (a) *a = (struct worker_arg){p, i};
        if (!a || pthread_create(&p->tids[i], NULL, worker, a) != 0) {
            free(a);
            p->n_threads = i;   /* destroy joins the ones that started */
            moe_pool_destroy(p);
            return NULL;
        }
    }
    return p;
}

void moe_pool_destroy(struct moe_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->stop, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++)
        pthread_join(p->tids[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->tids);
    free((void *)p->acked);
    free(p);
}

int moe_pool_threads(const struct moe_pool *p) { return p->n_threads; }

void moe_pool_run(struct moe_pool *p, moe_task_fn fn, void *ctx, int n_tasks)
{
    if (n_tasks <= 0)
        return;
    if (p->n_threads == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++)
            fn(ctx, t);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    const unsigned g = atomic_fetch_add_explicit(&p->generation, 1, memory_order_release) + 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    run_tasks(p);
    /* Spin while workers finish; yield once it takes long (more threads
     * than free cores: spinning would only delay the workers we wait on). */
    for (int i = 1, spins = 0; i < p->n_threads; i++)
        while (atomic_load_explicit(&p->acked[i], memory_order_acquire) != g) {
            if (++spins < SPIN_ROUNDS)
                cpu_relax();
            else
                sched_yield();
        }
}

int moe_physical_cores(void)
{
    if (cpuinfo_initialize()) {
        int n = (int)cpuinfo_get_cores_count();
        if (n > 0)
            return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
