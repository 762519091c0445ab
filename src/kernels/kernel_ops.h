/* Internal: the per-ISA kernel tables behind llmq_matmul(). Each weight type
 * has a row decoder and a fused decode-and-dot; the dispatcher picks the
 * table of the CPU's best instruction set (or LLMQ_KERNEL's). */
#ifndef LLMQ_KERNEL_OPS_H
#define LLMQ_KERNEL_OPS_H

#include "llmq/types.h"

#include <stddef.h>

/* Tokens one dot call handles at most (the row is decoded once for all). */
#define LLMQ_DOT_MAX_TOKENS 4

/* Elements decoded per step of the fused dot: one K-quant super-block, eight
 * 32-element blocks; small enough for L1. */
#define LLMQ_DOT_CHUNK 256

/* Activations of the --fast path: one token's row cut into 32-element
 * blocks, x ≈ d·q with d = max|x|/127, q = round(x/d) ∈ [-127, 127], and
 * s = d·Σq for the weight types whose values carry an offset (Q4_0's −8,
 * Q4_1's m, Q4_K's min). Like ggml's Q8_1, with a float d. */
typedef struct {
    float d, s;
    int8_t q[32];
} llmq_act_q8;

/* A token's row of n activations takes llmq_act_q8_stride(n) blocks: the
 * n/32 blocks, then the same blocks' d values and s values as two
 * contiguous float arrays (llmq_act_q8_d / llmq_act_q8_s), for kernels that
 * load eight scales at once. */
size_t llmq_act_q8_stride(int n);
static inline const float *llmq_act_q8_d(const llmq_act_q8 *row, int n) { return (const float *)(row + n / 32); }
static inline const float *llmq_act_q8_s(const llmq_act_q8 *row, int n) { return (const float *)(row + n / 32) + n / 32; }

/* One block of 32 activations on the symmetric integer grid ±qmax (127 for
 * the int8 activations, 32767 for the int16 ones): returns d = max|x|/qmax,
 * writes v[i] = x[i]/d rounded to nearest even and clamped to ±qmax (integers
 * held as floats) and *sum = Σ v[i]. */
static inline float llmq_act_block_codes(const float *x, float qmax, float v[32], int *sum)
{
    float amax = 0;
    #pragma omp simd reduction(max : amax)
    for (int i = 0; i < 32; i++) {
        const float a = x[i] < 0 ? -x[i] : x[i];
        amax = a > amax ? a : amax;
    }
    const float d = amax / qmax, id = d > 0 ? 1.0f / d : 0.0f;
    int s = 0;
    #pragma omp simd reduction(+ : s)
    for (int i = 0; i < 32; i++) {
        /* round to nearest even: adding and removing 1.5·2^23 leaves no
         * fraction bits for |v| < 2^22; the clamp keeps it in [-qmax, qmax] */
        float r = (x[i] * id + 12582912.0f) - 12582912.0f;
        r = r > qmax ? qmax : r < -qmax ? -qmax : r;
        v[i] = r;
        s += (int)r;
    }
    *sum = s;
    return d;
}

/* Quantizes n floats (n a multiple of 32) into a row of llmq_act_q8_stride(n)
 * blocks at dst; the same code for every ISA, so the integer paths differ
 * only in their sums' order. */
void llmq_act_quantize_q8(const float *x, int n, llmq_act_q8 *dst);

typedef struct {
    /* Decodes n elements (a multiple of the block size) of one row into dst,
     * bit-identical to the type's reference dequantizer. */
    void (*dequant)(const void *row, float *dst, int n);
    /* y[t·ys] = Σ_i W[i]·x[t·xs + i] for t < nt (1 ≤ nt ≤ LLMQ_DOT_MAX_TOKENS),
     * W the n-element row at `row`. */
    void (*dot)(const void *row, const float *x, size_t xs, int nt, int n, float *y, size_t ys);
    /* The integer dot of the --fast path: y[t·ys] = Σ_i W[i]·x̂_t[i], x̂_t the
     * activation row at x + t·xs (xs ≥ llmq_act_q8_stride(n) blocks). NULL
     * where the ISA has none for the type (the exact dot runs instead). */
    void (*dot_q8)(const void *row, const llmq_act_q8 *x, size_t xs, int nt, int n, float *y, size_t ys);
} llmq_kernel_ops;

/* For the SIMD files: a dot body written once for a token count nt that
 * LLMQ_NT_DISPATCH makes a compile-time constant (1..4), so the per-token
 * accumulators stay in registers instead of a stack array. */
#define LLMQ_ALWAYS_INLINE static inline __attribute__((always_inline))
#define LLMQ_UNROLL_T _Pragma("GCC unroll 4")
#define LLMQ_NT_DISPATCH(fn, body, xtype)                                                              \
    static void fn(const void *row, const xtype *x, size_t xs, int nt, int n, float *y, size_t ys)     \
    {                                                                                                   \
        switch (nt) {                                                                                   \
        case 1: body(row, x, xs, 1, n, y, ys); break;                                                   \
        case 2: body(row, x, xs, 2, n, y, ys); break;                                                   \
        case 3: body(row, x, xs, 3, n, y, ys); break;                                                   \
        default: body(row, x, xs, 4, n, y, ys); break;                                                  \
        }                                                                                               \
    }

typedef enum { LLMQ_ISA_SCALAR, LLMQ_ISA_AVX2, LLMQ_ISA_NEON, LLMQ_ISA_AVX512, LLMQ_ISA_COUNT } llmq_isa;

/* Tables per ISA; NULL where the type has no kernel or the ISA is not built
 * for this architecture. */
const llmq_kernel_ops *llmq_ops_scalar(llmq_type t);
const llmq_kernel_ops *llmq_ops_avx2(llmq_type t);
const llmq_kernel_ops *llmq_ops_neon(llmq_type t);
/* AVX-512 VNNI: integer dots only (other members NULL, filled from AVX2). */
const llmq_kernel_ops *llmq_ops_avx512(llmq_type t);

/* Is the ISA built in and supported by this CPU? */
int llmq_isa_available(llmq_isa isa);

/* The active ISA: LLMQ_KERNEL if set, else the best available. -1 (with a
 * message) when LLMQ_KERNEL names an unknown or unavailable one. */
int llmq_isa_active(void);

/* The active table for t, each member from the best table that has it
 * (avx512 → avx2 → scalar, neon → scalar); NULL with a message when t has
 * no kernel. */
const llmq_kernel_ops *llmq_kernel_ops_for(llmq_type t);

#endif
