/* AVX-512 BF16 micro-kernel of llmq_syrk_bf16 (syrk_bf16.h): tiles of
 * SB_MR rows × 32 columns of H in 2·SB_MR fp32 registers; per pair of
 * tokens two 64-byte loads (the tile's two column panels), one 4-byte
 * broadcast per row, two vdpbf16ps per row (32 multiply-adds each, twice an
 * fp32 FMA's). Tiles go by column blocks, the widest (most rows) first, one
 * block per thread at a time; each H element is summed by one thread in one
 * order, so the bits do not depend on the thread count. Built with
 * -mavx512bf16 (this file only) and called after the CPU check below. */
#include "syrk_bf16.h"

#if defined(__x86_64__) && defined(__AVX512BF16__)
#include "kernel_ops.h"

#include <immintrin.h>

enum { SB_MR = 8, SB_NP = 2, SB_NR = SB_NP * SB_PANEL };

static inline __mmask16 column_mask(int i, int j0, int n)
{
    int lo = i - j0, hi = n - j0;
    if (lo < 0) lo = 0;
    if (hi > 16) hi = 16;
    if (hi <= lo) return 0;
    return (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

static inline void store_row(float *h, __m512 acc, __mmask16 m, __m512 alpha, __m512 beta, int read)
{
    if (!m) return;
    __m512 v = _mm512_mul_ps(acc, alpha);
    if (read) v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, h), beta, v);
    _mm512_mask_storeu_ps(h, m, v);
}

/* Rows i0..i0+SB_MR-1 (lanes of the panel at A) × columns j0..j0+SB_NR-1 (the panels at B) over P pairs. */
static void tile(float *H, int n, const uint32_t *A, const uint32_t *B, size_t panel, int P, int i0, int j0, __m512 alpha,
                 __m512 beta, int read)
{
    __m512 c[SB_MR][SB_NP];
    for (int r = 0; r < SB_MR; r++)
        for (int q = 0; q < SB_NP; q++) c[r][q] = _mm512_setzero_ps();
    for (int p = 0; p < P; p++, A += SB_PANEL, B += SB_PANEL) {
        __m512bh b[SB_NP];
        for (int q = 0; q < SB_NP; q++) b[q] = (__m512bh)_mm512_load_si512(B + q * panel);
        _Pragma("GCC unroll 8") for (int r = 0; r < SB_MR; r++)
        {
            const __m512bh a = (__m512bh)_mm512_set1_epi32((int)A[r]);
            for (int q = 0; q < SB_NP; q++) c[r][q] = _mm512_dpbf16_ps(c[r][q], a, b[q]);
        }
    }
    for (int r = 0; r < SB_MR && i0 + r < n; r++) {
        float *h = H + (size_t)(i0 + r) * n + j0;
        for (int q = 0; q < SB_NP; q++) store_row(h + 16 * q, c[r][q], column_mask(i0 + r, j0 + 16 * q, n), alpha, beta, read);
    }
}

/* Rows go in chunks whose packed values (4 bytes per row per pair of tokens)
 * fill about 768 KiB, so a chunk stays in each core's L2 while the threads
 * take the column blocks right of its start one by one (the widest first):
 * each tile then reads its rows from L2 and its column panels, reused by
 * every tile of the block, from L1 or L2. (Slicing the tokens as well, to
 * hold the panels in L1, costs more in passes over H than it saves.) */
static void syrk(float *H, int n, const uint32_t *pk, int T, float alpha, float beta)
{
    const int P = sb_pairs(T);
    const size_t panel = (size_t)P * SB_PANEL;
    const int blocks = (n + SB_NR - 1) / SB_NR;
    int chunk = (int)((768u << 10) / (4u * (unsigned)P)) / SB_NR * SB_NR;
    if (chunk < 2 * SB_NR) chunk = 2 * SB_NR;
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const int read = beta != 0.0f;
    #pragma omp parallel if (n >= 256)
    for (int c0 = 0; c0 < n; c0 += chunk) {
        const int c1 = c0 + chunk < n ? c0 + chunk : n;
        #pragma omp for schedule(dynamic, 1)
        for (int jb = blocks - 1; jb >= c0 / SB_NR; jb--) {
            const int j0 = jb * SB_NR;
            const uint32_t *B = pk + (size_t)(j0 / SB_PANEL) * panel;
            const int i_end = j0 + SB_NR < c1 ? j0 + SB_NR : c1;
            for (int i0 = c0; i0 < i_end; i0 += SB_MR)
                tile(H, n, pk + (size_t)(i0 / SB_PANEL) * panel + i0 % SB_PANEL, B, panel, P, i0, j0, va, vb, read);
        }
    }
}

sb_syrk_fn llmq_sb_syrk_avx512(void)
{
    return llmq_isa_available(LLMQ_ISA_AVX512) && __builtin_cpu_supports("avx512bf16") ? syrk : NULL;
}

#else

sb_syrk_fn llmq_sb_syrk_avx512(void) { return NULL; }

#endif
