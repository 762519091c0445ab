/* llmq_syrk_bf16 (kernels.h): the packing, the portable reference and the
 * dispatch to the AVX-512 BF16 kernel (syrk_bf16_avx512.c). */
#include "syrk_bf16.h"
#include "kernel_ops.h"
#include "llmq/error.h"
#include "llmq/kernels.h"

#include <stdlib.h>

void llmq_sb_pack(uint32_t *dst, const float *X, int n, int T)
{
    const int P = sb_pairs(T), panels = sb_panels(n);
    #pragma omp parallel for schedule(static) if ((size_t)P * n >= ((size_t)1 << 18))
    for (int q = 0; q < panels; q++) {
        uint32_t *out = dst + (size_t)q * P * SB_PANEL;
        for (int p = 0; p < P; p++, out += SB_PANEL) {
            const int t0 = 2 * p, t1 = 2 * p + 1;
            for (int k = 0; k < SB_PANEL; k++) {
                const int c = q * SB_PANEL + k;
                uint32_t lo = 0, hi = 0;
                if (c < n) {
                    lo = sb_bf16_bits(X[(size_t)t0 * n + c]);
                    if (t1 < T) hi = sb_bf16_bits(X[(size_t)t1 * n + c]);
                }
                out[k] = lo | hi << 16;
            }
        }
    }
}

static float bf16_value(uint32_t bits)
{
    union {
        uint32_t u;
        float f;
    } v = {bits << 16};
    return v.f;
}

/* The reference: the same packed operands, products exact, sums in double. */
static void syrk_scalar(float *H, int n, const uint32_t *pk, int T, float alpha, float beta)
{
    const int P = sb_pairs(T);
    const size_t panel = (size_t)P * SB_PANEL;
    #pragma omp parallel for schedule(dynamic, 8)
    for (int i = 0; i < n; i++) {
        const uint32_t *a = pk + (size_t)(i / SB_PANEL) * panel + i % SB_PANEL;
        for (int j = i; j < n; j++) {
            const uint32_t *b = pk + (size_t)(j / SB_PANEL) * panel + j % SB_PANEL;
            double sum = 0;
            for (int p = 0; p < P; p++) {
                const uint32_t u = a[(size_t)p * SB_PANEL], v = b[(size_t)p * SB_PANEL];
                sum += (double)bf16_value(u & 0xFFFFu) * bf16_value(v & 0xFFFFu) + (double)bf16_value(u >> 16) * bf16_value(v >> 16);
            }
            float *h = H + (size_t)i * n + j;
            *h = beta == 0.0f ? alpha * (float)sum : beta * *h + alpha * (float)sum;
        }
    }
}

/* With the AVX-512 family in use (not forced down by LLMQ_KERNEL) and the CPU's BF16 dots. */
static sb_syrk_fn fast_syrk(void) { return llmq_isa_active() == LLMQ_ISA_AVX512 ? llmq_sb_syrk_avx512() : NULL; }

bool llmq_bf16_available(void) { return fast_syrk() != NULL; }

int llmq_syrk_bf16(float *H, int n, const float *X, int T, float alpha, float beta)
{
    if (!H || (!X && T > 0)) return llmq_error("syrk_bf16: NULL argument");
    if (n <= 0 || T < 0) return llmq_error("syrk_bf16: bad shape (%d columns, %d tokens)", n, T);
    if (T == 0) return LLMQ_OK;
    /* 64-byte aligned: a panel row is one aligned load (panels are P·64 bytes) */
    uint32_t *packed = aligned_alloc(64, sb_packed_words(n, T) * sizeof *packed);
    if (!packed) return llmq_error("syrk_bf16: out of memory packing %d × %d activations", T, n);
    llmq_sb_pack(packed, X, n, T);
    sb_syrk_fn fn = fast_syrk();
    (fn ? fn : syrk_scalar)(H, n, packed, T, alpha, beta);
    free(packed);
    return LLMQ_OK;
}
