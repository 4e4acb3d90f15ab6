/*
 * src/main.c — the moecpu command line: dispatches subcommands.
 * Only this file exits the process.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../bench/bench.h"
#include "../simd/kernels.h"
#include "threads.h"

#define MOECPU_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f,
            "moecpu %s — CPU inference for DeepSeek-style Mixture-of-Experts models\n"
            "\n"
            "usage: moecpu <command> [options]\n"
            "\n"
            "commands:\n"
            "  info            CPU, its SIMD features, the kernel tables and which one is used\n"
            "  bench kernels   GEMV/GEMM speed of every kernel table and weight type\n"
            "  help            this text\n"
            "\n"
            "environment:\n"
            "  MOECPU_ISA=NAME force a kernel table (scalar, avx2, avx512, avx512_vnni, neon,\n"
            "                  neon_dotprod); naming one this CPU cannot run is an error\n"
            "\n"
            "Run 'moecpu <command> --help' for a command's options.\n",
            MOECPU_VERSION);
}

static long cache_size(int level)
{
#ifdef _SC_LEVEL2_CACHE_SIZE
    long v = sysconf(level == 2 ? _SC_LEVEL2_CACHE_SIZE : _SC_LEVEL3_CACHE_SIZE);
    return v > 0 ? v : 0;
#else
    (void)level;
    return 0;
#endif
}

static int cmd_info(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: moecpu info\n  Prints the CPU, its SIMD features, every kernel table built into this binary\n"
                   "  with whether this CPU can run it, and the table that will be used\n"
                   "  (the best runnable one, or MOECPU_ISA).\n");
            return 0;
        }
        fprintf(stderr, "moecpu info: unexpected argument '%s' (try 'moecpu info --help')\n", argv[i]);
        return 2;
    }
    printf("cpu:        %s\n", moe_cpu_name());
    printf("cores:      %d physical, %ld logical\n", moe_physical_cores(), sysconf(_SC_NPROCESSORS_ONLN));
    long l2 = cache_size(2), l3 = cache_size(3);
    if (l2 || l3)
        printf("caches:     L2 %ld KiB, L3 %ld KiB\n", l2 >> 10, l3 >> 10);
    int nf;
    const struct moe_cpu_feature *f = moe_cpu_features(&nf);
    printf("features:  ");
    for (int i = 0; i < nf; i++)
        printf(" %s%s", f[i].present ? "+" : "-", f[i].name);
    printf("\n\nkernel tables (best first):\n");
    int n;
    const struct moe_isa_entry *e = moe_isa_list(&n);
    for (int i = 0; i < n; i++)
        printf("  %-14s %-9s needs %s\n", e[i].k->name, e[i].runnable ? "runnable" : "NOT here", e[i].needs);
    char err[256];
    const struct moe_kernels *k = moe_kernels_get(err, sizeof err);
    if (!k) {
        fprintf(stderr, "moecpu: %s\n", err);
        return 1;
    }
    const char *forced = getenv("MOECPU_ISA");
    printf("\nselected:   %s%s\n", k->name, forced && *forced ? " (forced by MOECPU_ISA)" : "");
    return 0;
}

static int cmd_bench(int argc, char **argv)
{
    if (argc >= 1 && !strcmp(argv[0], "kernels"))
        return moe_bench_kernels(argc - 1, argv + 1);
    if (argc >= 1 && (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help"))) {
        printf("usage: moecpu bench kernels [options]   (moecpu bench kernels --help for options)\n");
        return 0;
    }
    fprintf(stderr, "moecpu bench: expected 'kernels' (try 'moecpu bench kernels --help')\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("moecpu %s\n", MOECPU_VERSION);
        return 0;
    }
    /* A forced ISA the CPU cannot run is reported before any work. */
    char err[256];
    if (!moe_kernels_get(err, sizeof err)) {
        fprintf(stderr, "moecpu: %s\n", err);
        return 1;
    }
    if (!strcmp(cmd, "info"))
        return cmd_info(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench"))
        return cmd_bench(argc - 2, argv + 2);
    fprintf(stderr, "moecpu: unknown command '%s' (run 'moecpu help' for the list)\n", cmd);
    return 2;
}
