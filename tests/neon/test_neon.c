/* The NEON kernels against the scalar reference, as a static AArch64 program
 * run under qemu-aarch64 (`make test-neon`). Plain C: Criterion is not
 * available for the cross target. */
#include "../kernel_check.h"
#include "llmq/kernels.h"

int main(void)
{
    int passed = 0, failed = 0;
    if (!llmq_isa_available(LLMQ_ISA_NEON)) {
        printf("neon: 0 passed, 1 failed (NEON not available)\n");
        return 1;
    }
    kc_check_table(llmq_ops_neon, "neon", &passed, &failed);
    /* The dispatcher picks NEON by default and honours a forced scalar. */
    if (strcmp(llmq_kernel_name(), "neon") == 0) passed++;
    else { printf("  FAIL dispatcher chose %s\n", llmq_kernel_name()); failed++; }
    const llmq_kernel_ops *chosen = NULL, *scalar = llmq_ops_scalar(LLMQ_TYPE_Q4_K);
    if (llmq_kernel_select("avx2") == LLMQ_ERR && llmq_kernel_select("avx512") == LLMQ_ERR && llmq_kernel_select("scalar") == LLMQ_OK)
        chosen = llmq_kernel_ops_for(LLMQ_TYPE_Q4_K);
    if (chosen && chosen->dequant == scalar->dequant && chosen->dot == scalar->dot && chosen->dot_q8 == scalar->dot_q8) passed++;
    else { printf("  FAIL kernel selection\n"); failed++; }
    printf("neon: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
