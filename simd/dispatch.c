/*
 * simd/dispatch.c — pick the kernel table once, from what the CPU can do.
 *
 * cpuinfo answers most questions; this 2022 cpuinfo snapshot lacks a few
 * (AVX-VNNI, I8MM), which we ask CPUID / getauxval directly when needed.
 * Tables are listed best first; the first runnable one wins unless
 * MOECPU_ISA (or the caller) names another.  Asking for a table the CPU
 * cannot run is an error, never an illegal instruction.
 */
#include "kernels.h"

#include <cpuinfo.h>
#include <pthread.h>
#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct moe_isa_entry entries[8];
static int n_entries;
static int cpuinfo_ok;

static void probe(void)
{
    cpuinfo_ok = cpuinfo_initialize();
    n_entries = 0;
#if defined(__x86_64__) || defined(_M_X64)
    int avx2 = cpuinfo_ok && cpuinfo_has_x86_avx2() && cpuinfo_has_x86_fma3() && cpuinfo_has_x86_f16c();
    int avx512 = avx2 && cpuinfo_has_x86_avx512f() && cpuinfo_has_x86_avx512bw() &&
                 cpuinfo_has_x86_avx512vl() && cpuinfo_has_x86_avx512dq();
    int vnni = avx512 && cpuinfo_has_x86_avx512vnni();
    entries[n_entries++] = (struct moe_isa_entry){&moe_kernels_avx512_vnni, vnni,
                                                  "AVX-512 F/BW/VL/DQ + VNNI, FMA, F16C"};
    entries[n_entries++] = (struct moe_isa_entry){&moe_kernels_avx512, avx512, "AVX-512 F/BW/VL/DQ, FMA, F16C"};
    entries[n_entries++] = (struct moe_isa_entry){&moe_kernels_avx2, avx2, "AVX2, FMA, F16C"};
#endif
#if defined(__aarch64__)
    /* Advanced SIMD is mandatory on AArch64. */
    int dot = cpuinfo_ok && cpuinfo_has_arm_neon_dot();
    entries[n_entries++] = (struct moe_isa_entry){&moe_kernels_neon_dotprod, dot, "NEON + dot product (ARMv8.2 DotProd)"};
    entries[n_entries++] = (struct moe_isa_entry){&moe_kernels_neon, 1, "NEON (ARMv8.0)"};
#endif
    entries[n_entries++] = (struct moe_isa_entry){&moe_kernels_scalar, 1, "nothing"};
}

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;

/* ---- CPU description ---- */

static struct moe_cpu_feature features[24];
static int n_features;
static char cpu_name[96];

#if defined(__x86_64__) || defined(_M_X64)
/* CPUID leaf 7 sub-leaf `sub`: the register r (0 EAX .. 3 EDX), bit b. */
static int cpuid7_bit(unsigned sub, int r, int b)
{
    unsigned reg[4] = {0, 0, 0, 0};
    if (!__get_cpuid_count(7, sub, &reg[0], &reg[1], &reg[2], &reg[3]))
        return 0;
    return (reg[r] >> b) & 1;
}
#endif

static void add_feature(const char *name, int present)
{
    if (n_features < (int)(sizeof features / sizeof features[0]))
        features[n_features++] = (struct moe_cpu_feature){name, present != 0};
}

static void describe(void)
{
    pthread_once(&probe_once, probe);
    const struct cpuinfo_package *pkg = cpuinfo_ok ? cpuinfo_get_package(0) : NULL;
    snprintf(cpu_name, sizeof cpu_name, "%s", pkg && pkg->name[0] ? pkg->name : "unknown CPU");
    if (!cpuinfo_ok)
        return;
#if defined(__x86_64__) || defined(_M_X64)
    add_feature("avx2", cpuinfo_has_x86_avx2());
    add_feature("fma3", cpuinfo_has_x86_fma3());
    add_feature("f16c", cpuinfo_has_x86_f16c());
    add_feature("avx512f", cpuinfo_has_x86_avx512f());
    add_feature("avx512bw", cpuinfo_has_x86_avx512bw());
    add_feature("avx512vl", cpuinfo_has_x86_avx512vl());
    add_feature("avx512dq", cpuinfo_has_x86_avx512dq());
    add_feature("avx512vnni", cpuinfo_has_x86_avx512vnni());
    add_feature("avx512bf16", cpuinfo_has_x86_avx512bf16());
    /* not known to this cpuinfo version: straight from CPUID leaf 7 */
    add_feature("avxvnni", cpuid7_bit(1, 0, 4));
    add_feature("avx512fp16", cpuid7_bit(0, 3, 23));
    add_feature("amx-int8", cpuid7_bit(0, 3, 25));
#elif defined(__aarch64__)
    add_feature("neon", 1);
    add_feature("dotprod", cpuinfo_has_arm_neon_dot());
    add_feature("fp16", cpuinfo_has_arm_neon_fp16_arith());
    add_feature("bf16", cpuinfo_has_arm_bf16());
    add_feature("sve", cpuinfo_has_arm_sve());
#if defined(__linux__) && defined(AT_HWCAP2)
    /* HWCAP2_I8MM is bit 13; older headers lack the macro */
    add_feature("i8mm", (getauxval(AT_HWCAP2) >> 13) & 1);
#endif
#endif
}

static pthread_once_t describe_once = PTHREAD_ONCE_INIT;

const char *moe_cpu_name(void)
{
    pthread_once(&describe_once, describe);
    return cpu_name;
}

const struct moe_cpu_feature *moe_cpu_features(int *count)
{
    pthread_once(&describe_once, describe);
    *count = n_features;
    return features;
}

const struct moe_isa_entry *moe_isa_list(int *count)
{
    pthread_once(&probe_once, probe);
    *count = n_entries;
    return entries;
}

const struct moe_kernels *moe_kernels_select(const char *want, char *err, size_t errlen)
{
    int n;
    const struct moe_isa_entry *e = moe_isa_list(&n);
    int known = 0;
    if (!want || !*want || strcmp(want, "auto") == 0) {
        for (int i = 0; i < n; i++)
            if (e[i].runnable)
                return e[i].k;
        return &moe_kernels_scalar;
    }
    /* an exact table name first, then the best runnable table of a family */
    for (int i = 0; i < n; i++)
        if (strcmp(want, e[i].k->name) == 0) {
            if (e[i].runnable)
                return e[i].k;
            known = 1;
        }
    for (int i = 0; i < n && !known; i++) {
        if (strcmp(want, e[i].k->family) != 0)
            continue;
        known = 1;
        if (e[i].runnable)
            return e[i].k;
    }
    if (err && errlen) {
        if (known)
            snprintf(err, errlen, "ISA '%s' is built in but this CPU cannot run it (run 'moecpu info' to see what it can)", want);
        else {
            int off = snprintf(err, errlen, "unknown ISA '%s'; this binary has:", want);
            for (int i = 0; i < n && off > 0 && (size_t)off < errlen; i++)
                off += snprintf(err + off, errlen - (size_t)off, " %s", e[i].k->name);
        }
    }
    return NULL;
}

static const struct moe_kernels *chosen;
static char chosen_err[256];
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static void choose(void)
{
    chosen = moe_kernels_select(getenv("MOECPU_ISA"), chosen_err, sizeof chosen_err);
    if (!chosen) {
        char tmp[sizeof chosen_err];
        memcpy(tmp, chosen_err, sizeof tmp);
        snprintf(chosen_err, sizeof chosen_err, "MOECPU_ISA: %.200s", tmp);
    }
}

const struct moe_kernels *moe_kernels_get(char *err, size_t errlen)
{
    pthread_once(&chosen_once, choose);
    if (!chosen && err && errlen)
        snprintf(err, errlen, "%s", chosen_err);
    return chosen;
}
