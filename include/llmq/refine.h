/* Refinement of a quantized linear layer after GPTQ (issue 14, `--refine N`):
 * lowers the layer objective tr(ΔW·H·ΔWᵀ), ΔW = W − Q, further than GPTQ's
 * one greedy sweep does, with every value still on the grids the file stores.
 *
 * Coordinate descent on the codes (QuantEase, Behdin et al., arXiv 2309.01885,
 * §3): with the grids fixed, each weight in turn moves to the grid value
 * nearest to the one that minimises the objective with every other weight
 * held — q_j ← round(q_j + g_j / H_jj), g = H·δ the row's error gradient, δ
 * its residual w − q. The objective, a quadratic in each coordinate, can
 * only fall at each step; a pass visits every column once. The gradient is
 * kept exact in blocks of columns, as GPTQ's lazy batch updates keep its
 * weights (arXiv 2210.17323 §4 "Lazy Batch-Updates"): in-block changes update
 * the block's own gradients at once, and one GEMM per block carries them to
 * the other columns.
 *
 * Grid refit: after a group's codes, its grid with the codes held — the
 * continuous (scale, offset) minimising the objective given the group's
 * gradient and Hessian block (a 2 × 2 or 1 × 1 solve), then the stored fields
 * around it (fp16 d/m and their fp16 neighbours; K-quants' 6-bit, int8 or
 * signed 6-bit sub-block codes under the super-block's d/dmin, floor and
 * ceiling), each candidate scored exactly, the best kept if it lowers the
 * objective. Super-block d/dmin stay as GPTQ chose them. */
#ifndef LLMQ_REFINE_H
#define LLMQ_REFINE_H

#include "llmq/blocks.h"

#include <stdint.h>

#define LLMQ_REFINE_MAX_PASSES 16

typedef struct {
    /* Σ over rows of δᵀHδ before the first pass and after each pass (H as given) */
    double objective[LLMQ_REFINE_MAX_PASSES + 1];
    int64_t changed[LLMQ_REFINE_MAX_PASSES];   /* codes moved in each pass */
    int64_t regridded[LLMQ_REFINE_MAX_PASSES]; /* group grids refitted in each pass */
    int passes;                              /* passes run (stops early when a pass moves nothing) */
    double seconds;
} llmq_refine_stats;

/* Refines `packed` (rows × llmq_row_size(type, cols) bytes of ggml blocks of
 * W, groups of group_size, 0 = native) in place by up to `passes` passes of
 * coordinate descent on the codes and grid refits against H (cols × cols; its upper triangle
 * is read and mirrored into the lower one, which is overwritten). Columns with
 * H_jj ≤ 0 (never active) keep their codes. `stats` may be NULL. LLMQ_ERR on
 * a type without ggml grids, bad shapes or out of memory (packed unchanged). */
int llmq_refine_codes(const float *W, int rows, int cols, float *H, llmq_type type, int group_size, void *packed, int passes,
                      llmq_refine_stats *stats);

#endif
