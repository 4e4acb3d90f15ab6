/*
 * tests/test_runtime.c — the thread pool and kernel-table selection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../simd/kernels.h"
#include "../src/threads.h"

struct count_job {
    atomic_int *hits;
    int job;
};

static void count_task(void *ctx, int t)
{
    struct count_job *j = ctx;
    atomic_fetch_add(&j->hits[t], j->job + 1);
}

/* Every task of every job runs exactly once, for many back-to-back jobs of
 * varying size (the pattern decode produces), with 1..4 threads. */
static void test_pool_runs_each_task_once(void **state)
{
    (void)state;
    /* quick mode (sanitizers, qemu): fewer jobs */
    const int jobs = getenv("MOECPU_TEST_QUICK") && atoi(getenv("MOECPU_TEST_QUICK")) ? 300 : 3000;
    for (int nt = 1; nt <= 4; nt++) {
        struct moe_pool *p = moe_pool_create(nt);
        assert_non_null(p);
        assert_int_equal(moe_pool_threads(p), nt);
        atomic_int hits[64];
        for (int job = 0; job < jobs; job++) {
            int n = 1 + (job * 7) % 64;
            for (int i = 0; i < 64; i++) atomic_init(&hits[i], 0);
            struct count_job j = {hits, job};
            moe_pool_run(p, count_task, &j, n);
            for (int i = 0; i < 64; i++)
                assert_int_equal(atomic_load(&hits[i]), i < n ? job + 1 : 0);
        }
        moe_pool_run(p, count_task, NULL, 0);   /* no tasks: returns at once */
        moe_pool_destroy(p);
    }
    assert_true(moe_physical_cores() >= 1);
}

static void test_select(void **state)
{
    (void)state;
    char err[256];
    int n;
    const struct moe_isa_entry *e = moe_isa_list(&n);
    assert_true(n >= 1);
    /* scalar is always built and runnable, and last */
    assert_string_equal(e[n - 1].k->name, "scalar");
    assert_true(e[n - 1].runnable);
    assert_ptr_equal(moe_kernels_select("scalar", err, sizeof err), &moe_kernels_scalar);
    /* auto picks the first runnable table */
    const struct moe_kernels *best = moe_kernels_select(NULL, err, sizeof err);
    for (int i = 0; i < n; i++)
        if (e[i].runnable) { assert_ptr_equal(best, e[i].k); break; }
    /* every table by its own name: itself if runnable, else a clear error */
    for (int i = 0; i < n; i++) {
        err[0] = 0;
        const struct moe_kernels *k = moe_kernels_select(e[i].k->name, err, sizeof err);
        if (e[i].runnable) {
            assert_ptr_equal(k, e[i].k);
        } else {
            assert_null(k);
            assert_non_null(strstr(err, "cannot run"));
        }
    }
    /* unknown names are refused and the message lists what exists */
    assert_null(moe_kernels_select("sse9", err, sizeof err));
    assert_non_null(strstr(err, "unknown ISA 'sse9'"));
    assert_non_null(strstr(err, "scalar"));
    /* every table is complete: no NULL kernel */
    for (int i = 0; i < n; i++) {
        const struct moe_kernels *k = e[i].k;
        for (int t = 0; t < MOE_W_COUNT; t++) {
            assert_non_null(k->gemv[t]);
            assert_non_null(k->gemm[t]);
        }
        assert_non_null(k->quantize_act); assert_non_null(k->rmsnorm); assert_non_null(k->softmax);
        assert_non_null(k->silu); assert_non_null(k->sigmoid); assert_non_null(k->silu_mul);
        assert_non_null(k->rope_sincos); assert_non_null(k->rope_apply);
        assert_non_null(k->family);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_runs_each_task_once),
        cmocka_unit_test(test_select),
    };
    return cmocka_run_group_tests_name("runtime", tests, NULL, NULL);
}
