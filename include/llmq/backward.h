/* The training forward and backward of one decoder block in fp32, for
 * block-output reconstruction (`llmq quantize --method block`, llmq/block.h):
 * the gradients of a loss on the block's output with respect to its seven
 * linears' weights (and its input).
 *
 * The block is Llama's (HF LlamaDecoderLayer): RMSNorm, q/k/v (biases
 * allowed), RoPE, causal GQA attention, o, residual; RMSNorm, SwiGLU MLP,
 * residual. Every sequence of the batch is its own causal window, positions
 * 0..seqlen-1. The attention keeps only each query's log-sum-exp and
 * recomputes its probabilities in the backward (FlashAttention's
 * recomputation, Dao et al. 2022 §3.1.2), so memory is linear in seqlen.
 * Forward and backward split their work over sequences, heads and tokens,
 * never a reduction across threads: the same bits for any thread count. */
#ifndef LLMQ_BACKWARD_H
#define LLMQ_BACKWARD_H

#include "llmq/model.h"

/* The block's parameters as dense f32 (row-major rows × cols, the shapes of
 * llmq_linear_shape); bias[k] NULL when the linear has none. */
typedef struct {
    const float *attn_norm, *ffn_norm;
    const float *w[LLMQ_LIN_COUNT];
    const float *bias[LLMQ_LIN_COUNT];
} llmq_block_weights;

typedef struct llmq_block_tape llmq_block_tape;

/* LLMQ_OK when layer `layer` of m is a block this code differentiates; else
 * LLMQ_ERR naming what it has that the block lacks (a mixture of experts,
 * Qwen3's q/k norms, Gemma's post-norms, soft-capping, GeGLU, a sliding window). */
int llmq_block_check(const llmq_model *m, int layer);

/* What the backward of up to max_seq sequences of seqlen tokens needs:
 * activations and scratch, about (8·hidden + 4·ffn + 6·qd) floats a token. */
llmq_block_tape *llmq_block_tape_new(const llmq_model *m, int layer, int max_seq, int seqlen);
void llmq_block_tape_free(llmq_block_tape *t);

/* y (n_seq × seqlen × hidden) = the block applied to x, and the tape keeps
 * what the backward needs; x must stay unchanged until then. */
int llmq_block_forward(llmq_block_tape *t, const llmq_block_weights *bw, const float *x, int n_seq, float *y);

/* With dy = dL/dy of the last forward: dw[k] (rows × cols, NULL = not wanted)
 * = dL/dW_k, overwritten; dx (NULL = not wanted) = dL/dx. */
int llmq_block_backward(llmq_block_tape *t, const llmq_block_weights *bw, const float *dy, float *const dw[LLMQ_LIN_COUNT], float *dx);

#endif
