/* The Llama-class model: weights as typed views (zero-copy from the mmap),
 * and a forward pass that runs a chunk of tokens through one decoder layer at
 * a time with fp32 activations (llama2.c run.c's shape: Config / Weights /
 * forward, but batched over tokens). */
#ifndef LLMQ_MODEL_H
#define LLMQ_MODEL_H

#include "llmq/config.h"
#include "llmq/types.h"

#include <stdbool.h>
#include <stdint.h>

/* A row-major matrix [rows][cols] (or a vector: rows = 1) in any llmq_type. */
typedef struct {
    const void *data; /* NULL when the tensor is absent (optional biases) */
    llmq_type type;
    int rows, cols;
} llmq_weight;

typedef enum {
    LLMQ_LIN_Q, LLMQ_LIN_K, LLMQ_LIN_V, LLMQ_LIN_O,
    LLMQ_LIN_GATE, LLMQ_LIN_UP, LLMQ_LIN_DOWN,
    LLMQ_LIN_COUNT
} llmq_linear;

extern const char *const llmq_linear_names[LLMQ_LIN_COUNT]; /* "q_proj", ... */

/* One expert of a mixture-of-experts MLP: gate, up, down (as lin[LLMQ_LIN_GATE..DOWN]). */
typedef struct {
    llmq_weight w[3];
} llmq_expert;

typedef struct {
    llmq_weight attn_norm, ffn_norm;   /* F32 copies */
    llmq_weight lin[LLMQ_LIN_COUNT];
    llmq_weight bias[LLMQ_LIN_COUNT];  /* F32 copies; data NULL when absent */
    llmq_weight q_norm, k_norm;        /* F32 copies of head_dim (cfg.qk_norm); data NULL when absent */
    /* Gemma (cfg.post_norms): RMSNorms on the attention's output (after o_proj) and on the MLP's
     * (after down_proj), before each residual add; F32 copies, data NULL when absent. ffn_norm is
     * Gemma's pre_feedforward_layernorm. */
    llmq_weight post_attn_norm, post_ffn_norm;
    /* Mixture of experts (cfg.n_experts > 0): the router (n_experts × hidden, F32 copy) and the
     * experts; lin[LLMQ_LIN_GATE..DOWN] then have data NULL and the shape of every expert's
     * matrices stacked by rows (n_experts·expert_ffn × hidden, or n_experts·hidden × expert_ffn
     * for down), the layout of llama.cpp's ffn_*_exps tensors. */
    llmq_weight router;
    llmq_expert *experts;
} llmq_layer;

typedef struct llmq_model {
    llmq_config cfg;
    /* RoPE pairs: false = Hugging Face rotate_half (i, i+head_dim/2); true =
     * adjacent (2i, 2i+1), for q/k rows permuted the way llama.cpp's
     * converter permutes them. Both loaders leave it false (the GGUF loader
     * undoes the permutation); a caller holding permuted rows may set it. */
    bool rope_interleaved;
    llmq_weight embed, final_norm, lm_head;
    llmq_layer *layers;
    char *path;
    void *source; /* the container that owns the mapped bytes */
    void (*source_free)(void *);
    void **owned; /* buffers converted at load (norms, biases) */
    int n_owned;
    /* Activation buffers and RoPE angles kept between forward calls, so a
     * layer-by-layer pass allocates (and page-faults) once; taken by one
     * call at a time, a concurrent call allocates its own. Internal; freed by
     * llmq_model_free, or by llmq_model_release_workspace for a model
     * struct built by hand. A struct copy does not share it. */
    struct llmq_workspace *ws;
    int ws_busy;
} llmq_model;

/* The shape config.json implies for linear k (rows = outputs, cols = inputs),
 * and whether the architecture gives it a bias. */
void llmq_linear_shape(const llmq_config *c, llmq_linear k, int *rows, int *cols);
bool llmq_linear_has_bias(const llmq_config *c, llmq_linear k);

/* Loads a Hugging Face checkpoint directory (config.json + safetensors) or a
 * safetensors/index file beside a config.json. NULL with a message on error. */
llmq_model *llmq_model_load(const char *path);
/* Every tensor llmq_model_load reads from a Hugging Face checkpoint of config
 * c, in its order: fn(user, name, required), required false for the biases
 * the config does not call for (read when present). `packed`: a GPTQ/AWQ
 * checkpoint (llmq/hf_config.h), whose linears are qweight, qzeros and scales
 * (g_idx when present; the head either packed or plain). Stops at fn's first
 * non-zero return and returns it (0 when all were seen). */
int llmq_checkpoint_tensors(const llmq_config *c, bool packed, int (*fn)(void *user, const char *name, bool required), void *user);
void llmq_model_free(llmq_model *m);
/* Hands buffer p (malloc'd) to m, which frees it with the model; frees p and
 * returns NULL when out of memory (or when p is NULL). For loaders. */
void *llmq_model_own(llmq_model *m, void *p);
/* Frees the activation buffers a model keeps between forward calls (the next
 * call allocates them again): for callers that hold a model idle for long or
 * need the memory for other work (the quantizers, between their forward
 * passes and their solvers), and for model structs assembled by hand rather
 * than loaded. The cache is not part of the model's value, hence const. */
void llmq_model_release_workspace(const llmq_model *m);
/* Total parameters (embedding and head counted once when tied). */
int64_t llmq_model_n_params(const llmq_model *m);

/* Called with the input of a linear layer right before it runs: x is
 * n_tokens × in (q, k and v see the same x; so do gate and up). */
typedef void (*llmq_linear_hook)(void *user, int layer, llmq_linear which, const float *x, int n_tokens, int in);

/* x[n × hidden] = embedding rows of tokens. Fails on an out-of-range id. */
int llmq_embed(const llmq_model *m, const int32_t *tokens, int n, float *x);
/* The same from another table of m's shape (rows × hidden, any type): a quantized copy of m->embed. */
int llmq_embed_from(const llmq_model *m, const llmq_weight *table, const int32_t *tokens, int n, float *x);
/* One decoder layer in place on x[n × hidden], positions 0..n-1, causal.
 * layer supplies the weights (normally &m->layers[index]; quantizers pass
 * modified ones); hook may be NULL. */
int llmq_layer_forward(const llmq_model *m, const llmq_layer *layer, int index, float *x, int n,
                       llmq_linear_hook hook, void *user);
/* Every decoder layer of m in place on x[n × hidden] (the embedding's
 * output), when only rows keep0..n-1 of the result are wanted (0: all): the
 * last layer's attention half runs for every row (later rows attend to
 * earlier ones), its feed-forward half only for the wanted rows, as llama.cpp
 * does before a head that reads some rows; rows before keep0 are left as the
 * attention half made them. */
int llmq_layers_forward(const llmq_model *m, float *x, int n, int keep0);
/* The two halves of a decoder layer, on an input already RMS-normed with the
 * layer's norm (xn[n × hidden]); out[n × hidden] is what the layer adds to
 * the residual stream (after Gemma's post-norm where the layer has one). AWQ searches its scales against these outputs. */
int llmq_attention_forward(const llmq_model *m, const llmq_layer *layer, int index, const float *xn, int n, float *out,
                           llmq_linear_hook hook, void *user);
int llmq_mlp_forward(const llmq_model *m, const llmq_layer *layer, int index, const float *xn, int n, float *out,
                     llmq_linear_hook hook, void *user);
/* Each linear's input, once (true-sequential GPTQ computes every sub-layer's
 * input without running the rest of the layer):
 *   llmq_attention_mix: q, k, v, RoPE and causal attention on xn (already
 *     normed), att[n × n_heads·head_dim] — what o_proj multiplies;
 *   llmq_mlp_mix: act[n × intermediate] = silu(gate(xn)) ⊙ up(xn) — what
 *     down_proj multiplies;
 *   llmq_linear_forward: y[n × rows] = x · Wᵀ (+ bias) for linear k of L.
 * Composed as llmq_layer_forward composes them, they give its bits. */
int llmq_attention_mix(const llmq_model *m, const llmq_layer *layer, int index, const float *xn, int n, float *att);
int llmq_mlp_mix(const llmq_model *m, const llmq_layer *layer, int index, const float *xn, int n, float *act);
int llmq_linear_forward(const llmq_layer *layer, llmq_linear k, float *y, const float *x, int n);
/* A mixture-of-experts layer's routing of n tokens (xn already normed): the
 * n_experts_used chosen experts of token t at idx[t·used ..] and their
 * weights (softmax over all experts, the chosen ones renormalised to sum 1)
 * at wts[t·used ..], experts in descending weight. */
int llmq_moe_route(const llmq_model *m, const llmq_layer *layer, const float *xn, int n, int32_t *idx, float *wts);
/* The routing's n·used choices grouped by expert (a stable counting sort):
 * expert e's at order[start[e] .. start[e+1]), each the index t·used + j of
 * a choice (token t = index / used, its weight wts[index]), tokens ascending.
 * start has n_experts + 1 entries. */
void llmq_moe_group(const int32_t *idx, size_t n, int used, int n_experts, size_t *start, int32_t *order);
/* One expert's SwiGLU on n rows: act[n × expert_ffn] = silu(gate(x)) ⊙ up(x) (what its down multiplies). */
int llmq_expert_mix(const llmq_model *m, const llmq_expert *e, const float *x, int n, float *act);
/* Expert e's gate, up, down as views into matrices holding every expert's
 * stacked by rows (llama.cpp's ffn_*_exps layout): data[j] of type types[j]. */
llmq_expert llmq_expert_view(const llmq_config *c, const void *const data[3], const llmq_type types[3], int e);

/* Gemma's post-norm of a half's output in place (which: LLMQ_LIN_O for the
 * attention's, LLMQ_LIN_DOWN for the MLP's); nothing where the layer has none. */
void llmq_post_norm(const llmq_model *m, const llmq_layer *layer, llmq_linear which, float *x, int n);
/* The RoPE angles layer `layer` turns positions 0..n-1 by, as the forward
 * computes them (scaling, LongRoPE, Gemma 3's local base): cos and sin of
 * n × rope_dims/2. */
int llmq_rope_angles(const llmq_model *m, int layer, int n, float *cosv, float *sinv);
/* out[t] = weight ⊙ x[t] / rms(x[t]) for n rows of d (Llama's RMSNorm). */
void llmq_rmsnorm(float *out, const float *x, const float *weight, int n, int d, float eps);
/* Final norm + head: logits[n × vocab] from x[n × hidden] (x is not modified). */
int llmq_head_forward(const llmq_model *m, const float *x, int n, float *logits);
/* The whole model: logits[n × vocab] for tokens[0..n-1] at positions 0..n-1. */
int llmq_forward(const llmq_model *m, const int32_t *tokens, int n, float *logits);

/* FLOPs of one forward over n tokens (matmuls + attention), for throughput reports. */
double llmq_forward_flops(const llmq_model *m, int n);

#endif
