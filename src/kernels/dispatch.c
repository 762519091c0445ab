/* Picks the kernel table at run time: LLMQ_KERNEL=scalar|avx2|neon forces
 * one, otherwise the best the CPU supports. */
#include "kernel_ops.h"
#include "llmq/error.h"
#include "llmq/kernels.h"

#include <stdlib.h>
#include <string.h>

static const char *const isa_names[LLMQ_ISA_COUNT] = {"scalar", "avx2", "neon"};

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
    if (isa < 0) return llmq_error("kernel '%s' is unknown (scalar, avx2 or neon)", name);
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

const llmq_kernel_ops *llmq_kernel_ops_for(llmq_type t)
{
    int isa = llmq_isa_active();
    if (isa < 0) return NULL;
    const llmq_kernel_ops *ops = NULL;
    if (isa == LLMQ_ISA_AVX2) ops = llmq_ops_avx2(t);
    else if (isa == LLMQ_ISA_NEON) ops = llmq_ops_neon(t);
    if (!ops) ops = llmq_ops_scalar(t);
    if (!ops) {
        const llmq_type_traits *tr = llmq_type_get(t);
        llmq_error("matmul: no kernel for weight type %s", tr ? tr->name : "unknown");
    }
    return ops;
}
