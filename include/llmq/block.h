/* Block-output reconstruction (`llmq quantize --method block`, issue 14):
 * AutoRound / SignRound (Cheng et al., arXiv 2309.05516, §3; intel/auto-round)
 * on the grids the file stores.
 *
 * After GPTQ (or GPTAQ) has quantized a decoder block's linears, every weight
 * gets a rounding offset δ ∈ [-0.5, 0.5] and every group two factors on its
 * grid's scale and offset (AutoRound's min/max tuning); the codes are
 *     q = clamp(round(c + δ), qmin, qmax)
 * with c the weight's position on its grid (in code units) as GPTQ rounded it
 * (its value after the earlier columns' error feedback,
 * llmq_gptq_opts.pre_round, held within 0.499 of GPTQ's code, so δ = 0 is
 * GPTQ's rounding), or with rtn_init the weight's own position (AutoRound's
 * start). The factors rescale a group's values with its codes held (a learned
 * step size), where AutoRound re-rounds the weights on the moved grid: from
 * GPTQ's rounding that re-rounding moved a quarter of the codes at once and
 * raised the error (measured). The grids stay in the type's own precision
 * inside the loop: fp16 d and m of the 32-element types scaled and rounded to
 * fp16, the K-quants' 6-bit (or int8, signed 6-bit) sub-block codes scaled and
 * rounded, super-block d/dmin fixed, exactly as the file will hold them. The
 * loss is the MSE between the block's output on the quantized path's inputs
 * and the full-precision block's output (on the full-precision model's
 * inputs), over mini-batches of calibration
 * windows; δ and the factors follow the sign of their straight-through
 * gradients (llmq/backward.h) with a step decaying linearly to zero
 * (SignSGD, §3.2). At the end the whole calibration set decides: the result
 * is kept only if its block-output MSE is below GPTQ's. */
#ifndef LLMQ_BLOCK_H
#define LLMQ_BLOCK_H

#include "llmq/backward.h"
#include "llmq/blocks.h"

#include <stdint.h>

typedef struct {
    int iters;          /* steps (AutoRound: 200) */
    int batch;          /* windows per step (8) */
    float lr;           /* the first step's size; 0 = 1/iters (AutoRound's) */
    float factor_range; /* the grid factors stay within [1 − r, 1 + r] (0.5) */
    uint64_t seed;      /* the windows' order */
    /* Start from round-to-nearest of the weights on GPTQ's grids (AutoRound's
     * own start, δ = 0 at W/scale) instead of GPTQ's rounding. */
    bool rtn_init;
    /* optional: after each step, its mini-batch loss */
    void (*progress)(void *user, int iter, int iters, double loss);
    void *user;
} llmq_block_opts;

llmq_block_opts llmq_block_default_opts(void);

typedef struct {
    double mse_init, mse_final; /* block-output MSE per element over every window: GPTQ's, the result's */
    bool kept;                  /* the learned rounding was kept (mse below GPTQ's); else packed is unchanged */
    int64_t codes_changed, grids_changed; /* against GPTQ's, when kept */
    double seconds;
} llmq_block_stats;

/* Refines the packed linears of decoder layer `layer` of m in place.
 * base: the block's f32 parameters (norms, biases, and every linear: the
 * weights the packed ones approximate, and those the policy keeps float);
 * X: the quantized path's inputs, target: the full-precision block's outputs
 * (each n_samples × seqlen × hidden); packed[k] (NULL: not quantized) holds
 * rows of ggml blocks of types[k] with groups of group_sizes[k] (0 = native),
 * as GPTQ wrote them; pre_round[k] GPTQ's values before rounding (NULL: the
 * weights' own). Types with non-linear levels (IQ4) are refused. */
int llmq_block_reconstruct(const llmq_model *m, int layer, const llmq_block_weights *base, const float *X, const float *target,
                           int n_samples, int seqlen, const llmq_type types[LLMQ_LIN_COUNT], const int group_sizes[LLMQ_LIN_COUNT],
                           void *const packed[LLMQ_LIN_COUNT], const float *const pre_round[LLMQ_LIN_COUNT], const llmq_block_opts *o,
                           llmq_block_stats *stats);

#endif
