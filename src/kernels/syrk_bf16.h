/* Internal: the BF16 SYRK behind llmq_syrk_bf16 (kernels.h).
 *
 * X (T × n fp32, row-major) is rounded to bf16 (round to nearest even) and
 * packed once, in panels of SB_PANEL columns: panel q holds, for each pair of
 * tokens p, the SB_PANEL dwords (bf16(X[2p][c]) | bf16(X[2p+1][c]) << 16) of
 * its columns c, contiguous; an odd T gets a zero token; past n the columns
 * are zero, and two zero panels follow the last, so a 3-panel tile never reads
 * past the buffer. A dot of two such dwords is exactly what vdpbf16ps sums per
 * lane, so a column's panel row is one 64-byte load and a row's value one
 * 4-byte broadcast. */
#ifndef LLMQ_SYRK_BF16_H
#define LLMQ_SYRK_BF16_H

#include <stddef.h>
#include <stdint.h>

#define SB_PANEL 16

static inline int sb_pairs(int T) { return (T + 1) / 2; }
/* the columns' panels and two zero panels: a tile of three never reads past the end */
static inline int sb_panels(int n) { return (n + SB_PANEL - 1) / SB_PANEL + 2; }
static inline size_t sb_packed_words(int n, int T) { return (size_t)sb_panels(n) * sb_pairs(T) * SB_PANEL; }

/* fp32 → bf16 bits, round to nearest even (finite inputs; the callers check). */
static inline uint32_t sb_bf16_bits(float x)
{
    union {
        float f;
        uint32_t u;
    } v = {x};
    return (v.u + 0x7FFFu + ((v.u >> 16) & 1u)) >> 16;
}

void llmq_sb_pack(uint32_t *dst, const float *X, int n, int T);

/* H[i][j] (j ≥ i, row-major, leading dimension n) ← beta·H + alpha·Σ_p a_i·a_j
 * over the packed X; beta = 0 never reads H. One routine per ISA. */
typedef void (*sb_syrk_fn)(float *H, int n, const uint32_t *packed, int T, float alpha, float beta);
sb_syrk_fn llmq_sb_syrk_avx512(void); /* NULL where the CPU or the build lacks AVX-512 BF16 */

#endif
