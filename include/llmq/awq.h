/* AWQ: activation-aware weight quantization (Lin et al., arXiv 2306.00978 §3),
 * as a per-decoder-layer transform that the quantize pipeline runs before it
 * rounds the weights.
 *
 * A channel whose input activations are large makes its weights salient.
 * Scaling that input column of W by s > 1 and the activation by 1/s leaves
 * the product unchanged but shrinks the column's relative rounding error.
 * Per scaling group (a producer op and the linears that read its output;
 * AutoAWQ awq/models/llama.py):
 *
 *     input_layernorm          -> q, k, v    (judged on the attention output)
 *     v_proj                   -> o_proj     (only when v and o have the same
 *                                             shape, i.e. not under GQA)
 *     post_attention_layernorm -> gate, up   (judged on the MLP output)
 *     up_proj                  -> down_proj  (judged on down's output)
 *
 * the scale is s = x̄^r (x̄ = mean |x| per input channel over the calibration
 * tokens; with `duo`, s = x̄^r / w̄^(1−r) as AutoAWQ's duo_scaling), normalised
 * by sqrt(max·min), with r from a grid in [0, 1) chosen to minimise the MSE of
 * the group's output when W·diag(s) is fake-quantized on the output type's
 * own grid (llm-awq auto_scale.py, AutoAWQ quantizer.py _search_best_scale).
 * r = 0 is plain RTN, so the search never does worse than RTN on its data.
 * The winner is folded: 1/s into the producer (norm weight, or the previous
 * linear's output rows and bias), s into the readers' input columns.
 *
 * Then the clip search (llm-awq auto_clip.py): per linear except q and k, per
 * row and weight group, the symmetric range ±max|w| is shrunk over
 * max_shrink·clip_grid steps of 1/clip_grid to minimise the error of the
 * group's partial dot products on a subsample of tokens. */
#ifndef LLMQ_AWQ_H
#define LLMQ_AWQ_H

#include "llmq/model.h"

#include <stdbool.h>

typedef enum {
    LLMQ_AWQ_QKV,     /* input_layernorm -> q, k, v */
    LLMQ_AWQ_VO,      /* v_proj -> o_proj */
    LLMQ_AWQ_GATE_UP, /* post_attention_layernorm -> gate, up */
    LLMQ_AWQ_DOWN,    /* up_proj -> down_proj */
    LLMQ_AWQ_GROUP_COUNT
} llmq_awq_group;

extern const char *const llmq_awq_group_names[LLMQ_AWQ_GROUP_COUNT]; /* "input_layernorm->q,k,v", ... */

typedef struct {
    int n_grid;       /* ratios r = i / n_grid, 0 <= i < n_grid (20) */
    /* Evaluate every 4th ratio, then the best one's neighbours at ±2 and ±1
     * (9 of 20 forwards of the inspected block) instead of AutoAWQ's scan of
     * all of them. The loss along r can have several minima within noise of
     * each other: on stories-llama-7m (16 × 512 tokens) 4 of 18 groups chose
     * otherwise and the KL on the eval text was 1.6% higher (0.001826 against
     * 0.001798), so the full scan stays the default. */
    bool coarse;      /* (false) */
    bool duo;         /* s = x̄^r / (w̄^(1−r) + 1e-4) instead of x̄^r (false) */
    bool clip;        /* run the clip search (true) */
    int clip_grid;    /* shrink step 1/clip_grid (20) */
    float max_shrink; /* shrink the range by up to this fraction (0.5) */
    int clip_tokens;  /* sample every max(1, tokens / clip_tokens)-th token (512) */
    /* The ratio search of the groups judged on a block's output (q,k,v on the
     * attention, gate,up on the MLP) runs that block once per ratio over the
     * first ceil(search_tokens / seqlen) calibration samples (windows drawn
     * at random offsets, so a random subset) instead of all of them; x̄ and
     * the v→o and up→down searches keep every token. 0 = all samples (8192). */
    int search_tokens;
    /* Fake-quantize with llmq_rtn_opts.search, as the final quantizer will
     * when it rounds with the error-minimising grid search (false). */
    bool rtn_search;
} llmq_awq_opts;

void llmq_awq_defaults(llmq_awq_opts *o);

typedef struct {
    /* Per scaling group (false for v->o when its shapes do not allow it). */
    bool searched[LLMQ_AWQ_GROUP_COUNT];
    float ratio[LLMQ_AWQ_GROUP_COUNT];         /* the chosen r */
    double loss_rtn[LLMQ_AWQ_GROUP_COUNT];     /* output MSE at r = 0 (s = 1: RTN) */
    double loss_best[LLMQ_AWQ_GROUP_COUNT];    /* output MSE at the chosen r */
    /* Per linear (false for q, k, and linears left unquantized). */
    bool clipped[LLMQ_LIN_COUNT];
    float clip_ratio[LLMQ_LIN_COUNT];          /* mean chosen max / original max over the weight groups */
    double clip_mse_before[LLMQ_LIN_COUNT];    /* output MSE on the clip tokens, fake-quantized without clipping */
    double clip_mse_after[LLMQ_LIN_COUNT];     /* ... and with the chosen clipping (never larger) */
} llmq_awq_stats;

/* Runs AWQ on decoder layer `index` of m, in place on `layer`: an F32 copy of
 * the layer (see llmq_layer_f32_copy; its weights are rewritten: norms,
 * linear rows and columns, biases). X holds the layer's input for all
 * calibration samples: n_samples × seqlen × hidden, the residual stream
 * before input_layernorm; each sample is one causal sequence (positions
 * 0..seqlen-1). types[k] is the type linear k will be stored in (group_size
 * 0 = each type's native unit); a float type means the linear is not
 * quantized (it is still scaled, but not clipped). Each group's input is
 * computed from X with the scales already chosen applied (not quantized).
 * stats may be NULL. Nothing is quantized here: the caller rounds the
 * returned weights onto the same grids. LLMQ_ERR with a message on bad
 * shapes, a type that cannot hold the group size, or NaN/Inf in X, the
 * weights or the outputs. Memory besides X, in floats: hidden per token (the
 * residual stream after attention), 2·hidden per search token (a block's
 * input and reference output), max(q_dim, intermediate)² (Σxxᵀ of o_proj's
 * or down_proj's input), chunks of about 2048 tokens × (2·hidden +
 * max(q_dim, intermediate)), the clip rows, and one copy of the linears
 * being tried: the wide inputs stream through and are never held for every
 * token. Threads: OpenMP (and OpenBLAS).
 *
 * A mixture of experts (the layer's F32 router, and its experts as views of
 * the stacked F32 lin[GATE..DOWN], as llmq_layer_f32_copy makes them): one
 * set of gate,up scales for every expert, folded into post_attention_layernorm
 * and the router's columns and judged on the routed mixture's output; then,
 * per expert reached by at least LLMQ_MOE_MIN_TOKENS calibration tokens, its
 * own up->down scales judged on its output as the router weights it (Σ w²·xxᵀ
 * over its tokens) and its gate, up and down clipped on its tokens. Its
 * statistics: the down group's losses summed over experts, ratios averaged. */
int llmq_awq_layer(const llmq_model *m, int index, llmq_layer *layer, const float *X, int n_samples, int seqlen,
                   const llmq_type types[LLMQ_LIN_COUNT], int group_size, const llmq_awq_opts *opts,
                   llmq_awq_stats *stats);

/* The same on one rank's share of a run spread over ranks (llmq/dist.h): X
 * holds windows [first, first + n_samples) of total_samples, first a unit's
 * first window (llmq_dist_windows). Every rank calls it with the same layer
 * and options; the statistics, losses and clip rows are summed over every
 * rank's windows exactly, so each rank chooses the same scales and clips as
 * one process holding all the windows. llmq_awq_layer is the share (0, n, n). */
int llmq_awq_layer_part(const llmq_model *m, int index, llmq_layer *layer, const float *X, int first, int n_samples, int total_samples,
                        int seqlen, const llmq_type types[LLMQ_LIN_COUNT], int group_size, const llmq_awq_opts *opts,
                        llmq_awq_stats *stats);

/* Folds scales s (one per input channel of the group's readers) into layer:
 * the producer is divided by s, the readers' input columns multiplied by s.
 * Exact up to float rounding: the layer computes the same function. */
int llmq_awq_apply_scales(const llmq_model *m, llmq_layer *layer, llmq_awq_group group, const float *s);

/* out[rows × cols] = w fake-quantized to type t: each row's grids chosen by
 * llmq_rtn_grids() (search = rtn_search), each element rounded onto its grid
 * and decoded — the values the file will hold. Float types: w rounded to that
 * precision (F32: copied). out may equal w. Threads: OpenMP. */
int llmq_fake_quant(llmq_type t, int group_size, bool rtn_search, const float *w, int rows, int cols, float *out);

/* An F32 copy of decoder layer `index` (weights, norms, biases; a mixture's
 * router, its experts stacked into lin[GATE..DOWN] and out->experts as views
 * of them) in `out`; all its views point into the returned buffer, which the
 * caller frees with free(). NULL with a message on error. */
float *llmq_layer_f32_copy(const llmq_model *m, int index, llmq_layer *out);

#endif
