/* GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for
 * Generative Pre-trained Transformers", arXiv 2210.17323, §4) into ggml block
 * formats, and the Hessian it needs.
 *
 * A linear layer y = W x (W: rows × cols, rows = output features) is
 * quantized column by column (input dimension); after each column the
 * remaining columns absorb its rounding error through the inverse Hessian of
 * the layer's reconstruction error ‖(W−Q)X‖², H = (2/N) Σ x xᵀ over the N
 * calibration tokens. Grids follow llmq/blocks.h: every value written is on
 * the grid its group's stored fields decode to.
 *
 * Group grids:
 *  - without act_order (Q4_0/Q4_1/Q8_0): a group's grid is fitted when the
 *    sweep reaches its first column, on the weights as already updated by
 *    the error of the columns before it (IST-DASLab/gptq gptq.py:fasterquant);
 *  - K-quants without act_order: all groups of a 256-element super-block
 *    share its fp16 d (and dmin), so those are fixed before the sweep from
 *    the original row, exactly as llmq_rtn_grids() chooses them; each
 *    group's sub-block codes are then fitted lazily, as above, under that d;
 *  - with act_order (columns by descending diag H): "static groups" — every
 *    grid is chosen from the original row before the sweep
 *    (llmq_rtn_grids), so a group is still a contiguous run of the row, as
 *    the block formats require, whatever order its columns are visited in.
 * Dead columns (H_ii = 0) are zeroed in the original row for all of this. */
#ifndef LLMQ_GPTQ_H
#define LLMQ_GPTQ_H

#include "llmq/blocks.h"
#include "llmq/xsum.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    float damp;           /* fraction of mean(diag H) added to the diagonal (0.01) */
    int block_size;       /* lazy-batch width (128); rounded up to a multiple of the group size */
    bool act_order;       /* columns by descending diag(H), with static groups */
    bool grid_search;     /* fit grids with llmq_grid_fit's error-minimising search
                             instead of min/max or absmax */
    int max_damp_retries; /* on a failed Cholesky, damp ×10 and retry up to this many times (3) */
    /* Optional output (rows × cols, NULL = not kept): each weight as the sweep
     * had it just before rounding it, after the earlier columns' error
     * feedback; block reconstruction starts its rounding from there. */
    float *pre_round;
} llmq_gptq_opts;

/* The defaults above. */
llmq_gptq_opts llmq_gptq_default_opts(void);

/* Relative errors ‖(W−Q)X‖² / ‖WX‖², computed through H as
 * tr(Δ H Δᵀ) / tr(W H Wᵀ) (H undamped; dead columns excluded). Up to
 * LLMQ_GPTQ_STATS_ROWS rows the traces are exact; a larger layer's RTN error
 * and tr(W H Wᵀ) are estimated from every k-th row (at least half that many
 * rows; a ratio estimate, within about 1% at the Llama shapes), since each
 * trace costs 2·rows·cols² flops: more than the whole solve. */
#define LLMQ_GPTQ_STATS_ROWS 1024
/* The step between the rows the statistics use: 1 up to LLMQ_GPTQ_STATS_ROWS. */
static inline int llmq_gptq_stats_stride(int rows) { return rows <= LLMQ_GPTQ_STATS_ROWS ? 1 : rows / (LLMQ_GPTQ_STATS_ROWS / 2); }
typedef struct {
    double err_rtn;   /* of plain RTN (llmq_rtn_grids + rounding) of the same W, type, group size */
    double err_gptq;  /* of the GPTQ result */
    float damp_used;  /* the damp fraction the Cholesky succeeded with */
    int retries;      /* how many times damp was raised */
    int dead_columns; /* columns with H_ii == 0 (input feature never active): set to 0 */
    /* Wall time: preparing and factoring H (Cholesky, triangular inverse);
     * the two error traces above (one triangular product each over the
     * rows they use); the column sweep and packing. */
    double seconds_factor, seconds_stats, seconds_sweep;
    /* The traces behind the two ratios, for all rows (estimated from the
     * sampled ones as the ratios are): err_rtn = rtn / w, err_gptq = gptq / w.
     * Solves of disjoint row ranges (ranks, llmq/dist.h) add them. */
    double trace_w, trace_rtn, trace_gptq;
} llmq_gptq_stats;

/* An error ratio from its traces as llmq_gptq_stats has them (a negative
 * trace counts as 0): err_rtn = llmq_gptq_ratio(trace_rtn, trace_w), and the
 * same from traces summed over row ranges. */
double llmq_gptq_ratio(double trace, double trace_w);

/* Adds n_tokens rows of activations X (n_tokens × cols, row-major) to the
 * running Hessian H = (2/N) Σ x xᵀ over all N rows seen so far:
 * H ← H·n/(n+m) + (2/(n+m))·XᵀX, *n_seen += m (one fp32 SYRK). Only the upper
 * triangle (H[i*cols + j], j ≥ i) is accumulated and read by the solver; the
 * lower triangle is left alone. When *n_seen is 0, H's old contents are
 * ignored. (IST-DASLab/gptq counts sequences rather than tokens in N, a
 * constant factor GPTQ is invariant to.) */
int llmq_hessian_add(float *H, int cols, int64_t *n_seen, const float *X, int n_tokens);
/* The same with X rounded to bf16 and the products summed in fp32
 * (llmq_syrk_bf16: ~1.4× ssyrk where llmq_bf16_available()). Each term
 * x_i·x_j is off by at most ~2·2⁻⁸ relative, unbiased, so the sums over
 * thousands of tokens stay within ~4e-4 of the fp32 Hessian (relative
 * Frobenius norm at 2048 tokens; less with more). */
int llmq_hessian_add_bf16(float *H, int cols, int64_t *n_seen, const float *X, int n_tokens);

/* The Hessian of a linear's inputs over every calibration window of a run,
 * the same bits however the windows are split among processes
 * (llmq/dist.h): the tokens of each unit of windows (llmq_dist_unit_windows)
 * are summed by SYRKs into `partial` (fp32, or from bf16 inputs as
 * llmq_hessian_add_bf16), and the units' sums are added exactly
 * (llmq/xsum.h); finish adds the other ranks' and writes
 * H = (2/N)·Σ x xᵀ (upper triangle). Memory: the caller's cols × cols
 * partial, and 8·cols² bytes of exact sums. */
typedef struct {
    int cols;
    bool bf16;
    int64_t unit_tokens; /* in the unit so far */
    float *partial;
    llmq_xsum sum;
} llmq_hsum;

int llmq_hsum_begin(llmq_hsum *h, int cols, float *partial, bool bf16);
/* n_tokens more rows of the current unit. */
int llmq_hsum_add(llmq_hsum *h, const float *X, int n_tokens);
/* The unit is complete: its sum goes into the exact sums. */
int llmq_hsum_unit_end(llmq_hsum *h);
/* Ends the last unit, sums over the ranks, writes H (cols × cols, upper
 * triangle) = scale·Σ (GPTQ's 2/N, N the tokens of every rank), and frees.
 * H may be the partial. */
int llmq_hsum_finish(llmq_hsum *h, float *H, double scale);
void llmq_hsum_free(llmq_hsum *h);

/* GPTQ of W (rows × cols fp32, row-major) into `type` with groups of
 * group_size input columns (0 = the type's native unit), given the Hessian H
 * (cols × cols; only its upper triangle is read; H is used as scratch and
 * left overwritten). Writes, when non-NULL: `packed`, rows ×
 * llmq_row_size(type, cols) bytes of ggml blocks; `Wq`, the dequantized
 * result (rows × cols, exactly what the blocks decode to); `stats`. opts NULL
 * = llmq_gptq_default_opts(). stats NULL skips the two error traces, which
 * cost about as much as the solve itself on large layers. Memory besides H
 * (factored in place): a rows × cols fp32 working copy of W plus one code
 * byte per weight. Threads: OpenMP over rows + OpenBLAS.
 * Errors: bad shape or type, NaN/Inf in W or H, a Hessian that is not
 * positive definite even after the damp retries (the message names the damp
 * tried), out of memory. */
int llmq_gptq_quantize(const float *W, int rows, int cols, float *H, llmq_type type, int group_size,
                       const llmq_gptq_opts *opts, void *packed, float *Wq, llmq_gptq_stats *stats);

/* GPTAQ, asymmetric calibration (Li et al., "GPTAQ: Efficient Finetuning-Free
 * Quantization for Asymmetric Calibration", ICML 2025, arXiv 2504.02692;
 * reference fake_quant/gptaq_utils.py): the layer is fitted to the
 * full-precision model's output on the full-precision inputs X̃,
 * ‖W·X̃ − Q·X‖², not to its own output on the quantized path's inputs X.
 * D = (2/N) Σ (x̃ − x)·xᵀ (cols × cols, full, row-major: D[a][b] sums
 * Δx_a·x_b), normalised as H; llmq_cross_add accumulates it. The sweep is
 * GPTQ's, with each column i also passing α·w_i·P[i, ·] on to the later
 * columns (P = triu₁(D·Uᵀ)·U, U the upper Cholesky factor of H⁻¹), in the
 * lazy batch as well; α (the reference's 0.25) scales the correction.
 * D = 0 or α = 0 gives GPTQ's result bit for bit. stats->err_gptq is then
 * the sweep's loss (Σ of the scaled errors²) relative to tr(W H Wᵀ). */
int llmq_gptaq_quantize(const float *W, int rows, int cols, float *H, const float *D, float alpha, llmq_type type, int group_size,
                        const llmq_gptq_opts *opts, void *packed, float *Wq, llmq_gptq_stats *stats);

/* The weights the asymmetric objective is closest to: since
 * ‖Q·X − W·X̃‖² = tr((Q − W*)·H·(Q − W*)ᵀ) + const with
 * W* = W + W·D·H⁻¹ (the normal equations of the least-squares fit), GPTQ of
 * W* on H is the exact greedy minimiser of GPTAQ's objective, and refinement
 * against W* keeps it. Writes W_target = W + α·W·D·(H + λI)⁻¹ (rows × cols),
 * λ = damp·mean(diag H) as the solver damps (raised ×10 up to 3 times if H
 * is not positive definite). H: upper triangle read, left unchanged. */
int llmq_gptaq_target(const float *W, int rows, int cols, const float *H, const float *D, float alpha, float damp, float *W_target);

/* D ← D·n/(n+m) + (2/(n+m))·(X_fp − X)ᵀ·X for the next m = n_tokens rows of
 * the quantized path's inputs X and the full-precision path's X_fp (both
 * n_tokens × cols); n_seen = n, the rows seen before (call it before
 * llmq_hessian_add raises the count). scratch: n_tokens × cols floats. When
 * n_seen is 0, D's old contents are ignored. */
int llmq_cross_add(float *D, int cols, int64_t n_seen, const float *X, const float *X_fp, float *scratch, int n_tokens);

#endif
