/* Picks the kernel table at run time: LLMQ_KERNEL=scalar|avx2|avx512|neon
 * forces one, otherwise the best the CPU supports. A table may leave
 * functions out (AVX-512 has only the integer dots); the dispatcher fills
 * each gap from the next table down the chain avx512 → avx2 → scalar. */
#include "kernel_ops.h"
#include "llmq/error.h"
#include "llmq/kernels.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static const char *const isa_names[LLMQ_ISA_COUNT] = {"scalar", "avx2", "neon", "avx512"};

/* -2 = not resolved yet; -1 = LLMQ_KERNEL was bad; else an llmq_isa. */
static int active_isa = -2;

int llmq_isa_available(llmq_isa isa)
{
    switch (isa) {
    case LLMQ_ISA_SCALAR: return 1;
    case LLMQ_ISA_AVX2:
#if defined(__x86_64__)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
        return 0;
#endif
    case LLMQ_ISA_AVX512:
#if defined(__x86_64__)
        return llmq_isa_available(LLMQ_ISA_AVX2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else
        return 0;
#endif
    case LLMQ_ISA_NEON:
#if defined(__aarch64__)
        return 1; /* Advanced SIMD is part of the AArch64 base ISA */
#else
        return 0;
#endif
    default: return 0;
    }
}

static int isa_from_name(const char *name)
{
    for (int i = 0; i < LLMQ_ISA_COUNT; i++)
        if (strcmp(name, isa_names[i]) == 0) return i;
    return -1;
}

static int isa_best(void)
{
    if (llmq_isa_available(LLMQ_ISA_AVX512)) return LLMQ_ISA_AVX512;
    if (llmq_isa_available(LLMQ_ISA_AVX2)) return LLMQ_ISA_AVX2;
    if (llmq_isa_available(LLMQ_ISA_NEON)) return LLMQ_ISA_NEON;
    return LLMQ_ISA_SCALAR;
}

int llmq_kernel_select(const char *name)
{
    if (!name || !*name) {
        int isa = isa_best();
        __atomic_store_n(&active_isa, isa, __ATOMIC_RELAXED);
        return LLMQ_OK;
    }
    int isa = isa_from_name(name);
    if (isa < 0) return llmq_error("kernel '%s' is unknown (scalar, avx2, avx512 or neon)", name);
    if (!llmq_isa_available((llmq_isa)isa)) return llmq_error("kernel '%s' is not available on this CPU", name);
    __atomic_store_n(&active_isa, isa, __ATOMIC_RELAXED);
    return LLMQ_OK;
}

int llmq_isa_active(void)
{
    int isa = __atomic_load_n(&active_isa, __ATOMIC_RELAXED);
    if (isa == -2) {
        const char *env = getenv("LLMQ_KERNEL");
        if (llmq_kernel_select(env) != LLMQ_OK) {
            llmq_error_prefix("LLMQ_KERNEL");
            return -1; /* stays unresolved: the message is repeated on each call */
        }
        isa = __atomic_load_n(&active_isa, __ATOMIC_RELAXED);
    }
    return isa;
}

const char *llmq_kernel_name(void)
{
    int isa = llmq_isa_active();
    return isa < 0 ? "invalid" : isa_names[isa];
}

/* Every (ISA, type) table with its gaps filled down the chain, built once. */
static llmq_kernel_ops composed[LLMQ_ISA_COUNT][LLMQ_TYPE_COUNT];
static pthread_once_t composed_once = PTHREAD_ONCE_INIT;

static void compose_all(void)
{
    for (int isa = 0; isa < LLMQ_ISA_COUNT; isa++)
        for (int t = 0; t < LLMQ_TYPE_COUNT; t++) {
            const llmq_kernel_ops *chain[3] = {NULL, NULL, llmq_ops_scalar((llmq_type)t)};
            if (isa == LLMQ_ISA_AVX512) chain[0] = llmq_ops_avx512((llmq_type)t);
            if (isa == LLMQ_ISA_AVX512 || isa == LLMQ_ISA_AVX2) chain[1] = llmq_ops_avx2((llmq_type)t);
            if (isa == LLMQ_ISA_NEON) chain[1] = llmq_ops_neon((llmq_type)t);
            llmq_kernel_ops *c = &composed[isa][t];
            for (int k = 0; k < 3; k++) {
                if (!chain[k]) continue;
                if (!c->dequant) c->dequant = chain[k]->dequant;
                if (!c->dot) c->dot = chain[k]->dot;
                if (!c->dot_q8) c->dot_q8 = chain[k]->dot_q8;
            }
        }
}

const llmq_kernel_ops *llmq_kernel_ops_for(llmq_type t)
{
    int isa = llmq_isa_active();
    if (isa < 0) return NULL;
    pthread_once(&composed_once, compose_all);
    const llmq_kernel_ops *ops = (int)t >= 0 && t < LLMQ_TYPE_COUNT ? &composed[isa][t] : NULL;
    if (!ops || !ops->dequant || !ops->dot) {
        const llmq_type_traits *tr = llmq_type_get(t);
        llmq_error("matmul: no kernel for weight type %s", tr ? tr->name : "unknown");
        return NULL;
    }
    return ops;
}
