/* Dequantizing matrix multiply: y = x · Wᵀ with W stored row-major in any
 * llmq_type (one row = one output feature, `in` elements), x and y fp32. */
#ifndef LLMQ_KERNELS_H
#define LLMQ_KERNELS_H

#include "llmq/types.h"

#include <stdbool.h>

/* y[t*out + o] = sum_i x[t*in + i] * W[o][i] for t < n_tokens.
 * `in` must be a multiple of the type's block size. Threads: OpenMP.
 * Returns LLMQ_OK or LLMQ_ERR (unknown type, bad shape, out of memory). */
int llmq_matmul(float *y, const float *x, int n_tokens, const void *w, llmq_type wtype, int in, int out);

/* The --fast path (off by default; perplexity checks use the exact path
 * unless asked): products with quantized weights (Q4_0, Q4_1, Q8_0, Q4_K,
 * Q6_K, Q3_K) quantize each activation row to int8 in blocks of 32 (one
 * scale each) and run integer dot products, as llama.cpp's CPU backend
 * does. Other weight types keep the exact fp32 path. */
void llmq_set_fast(bool on);
bool llmq_get_fast(void);
/* Is the int8 path the faster one for prompts with the kernel family in use?
 * True where the register-blocked int8 GEMM runs (AVX-512 VNNI: 2–3× the
 * exact path; AVX2: 1.2–1.6×; both give the same bits); false for the
 * scalar and NEON families. `llmq ppl` picks its default arithmetic with it. */
bool llmq_fast_is_faster(void);

/* The calibration forward's arithmetic (off by default): quantized weights
 * times activations quantized to int16 in blocks of 32 (d = max|x|/32767),
 * in integer dot products (vpdpwssd) — twice sgemm's rate, with products
 * within ~1e-4 relative of the exact ones where int8 activations are off by
 * percents. Only where the int16 GEMM runs (llmq_int16_available: AVX-512
 * VNNI) and for more than 8 tokens; elsewhere the exact path. Overrides
 * llmq_set_fast while on. */
void llmq_set_int16(bool on);
bool llmq_get_int16(void);
bool llmq_int16_available(void);

/* H ← beta·H + alpha·XᵀX on the upper triangle of H (n × n row-major,
 * H[i*n + j] with j ≥ i; the lower triangle is left alone; beta = 0 ignores
 * H's contents), X (T × n fp32, row-major) rounded to bf16 (nearest even)
 * and the products summed in fp32 — vdpbf16ps, twice an fp32 FMA's work per instruction,
 * where llmq_bf16_available() (AVX-512 BF16 with the AVX-512 family in use);
 * elsewhere a slow portable reference of the same sums. The inputs must be
 * finite. LLMQ_ERR on a bad shape or out of memory. */
int llmq_syrk_bf16(float *H, int n, const float *X, int T, float alpha, float beta);
bool llmq_bf16_available(void);

/* Decodes rows [r0, r1) of W into dst (row-major, (r1-r0) × in floats). */
int llmq_dequant_rows(float *dst, const void *w, llmq_type wtype, int in, int r0, int r1);

/* The kernel family in use: "scalar", "avx2" or "neon" — the best the CPU
 * supports, unless LLMQ_KERNEL or llmq_kernel_select() forces one. */
const char *llmq_kernel_name(void);
/* Forces a kernel family by name (NULL or "" = choose from CPU features).
 * LLMQ_ERR when the name is unknown or the CPU lacks it. */
int llmq_kernel_select(const char *name);

/* OpenBLAS's kernel family in use ("SkylakeX", "Haswell", ...). When OpenBLAS
 * chose a family below the CPU's instruction sets (a CPU model newer than the
 * OpenBLAS build) and OPENBLAS_CORETYPE was not set, llmq re-initialised it
 * with the family the CPU runs before the first BLAS call, and
 * llmq_blas_core_detected() returns OpenBLAS's own choice; else NULL. */
const char *llmq_blas_core(void);
const char *llmq_blas_core_detected(void);

/* Called first thing in main(argv) of a program (the CLI, the benches): when
 * the user set neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT, starts the program
 * again (execv of /proc/self/exe, same arguments) with libgomp's idle spin at
 * 10,000 instead of 300,000, which wastes a core for ~15 ms at every barrier
 * on a machine with other work (kernels/omp_wait.c says why). In the second
 * start it removes the variable again and returns. */
void llmq_omp_default_wait(char **argv);

/* Number of threads for OpenMP and OpenBLAS (0 = all cores). */
void llmq_set_threads(int n);
int llmq_get_threads(void);

#endif
