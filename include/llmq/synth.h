/* The project's own default model: a small deterministic Llama checkpoint
 * (safetensors BF16 + config.json + a BPE tokenizer.json trained here) and the
 * synthetic English it models, so tests and `make demo` need no download.
 *
 * The text comes from a seeded sentence grammar. The model is a low-rank
 * bigram model of that text carried by the residual stream: the embedding and
 * lm_head factor the bigram log-probability matrix (SVD), and the decoder
 * layers are small seeded random perturbations. A few hidden channels get
 * large input-norm weights, so their activations are planted outliers (what
 * AWQ looks for).
 *
 * Shapes: checkpoints at the tensor shapes of real models (Llama-2-7B,
 * Llama-3.1-8B, Qwen2.5-7B, Qwen3-8B, Qwen3-32B, Llama-3.1-70B, Qwen3-30B-A3B) with seeded random BF16 weights and
 * only the first N decoder layers, for benchmarks at realistic sizes. They
 * carry the demo's text and its 512-token tokenizer (ids below every shape's
 * vocabulary), so quantize --calib and ppl --text run on them. */
#ifndef LLMQ_SYNTH_H
#define LLMQ_SYNTH_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int hidden, intermediate, n_layers, n_heads, n_kv_heads, vocab;
    /* The architecture the checkpoint is written as: "llama" (default) or
     * "qwen3" (Qwen3ForCausalLM: per-head q/k norms, head_dim of its own). */
    const char *arch;
    int head_dim; /* 0: hidden / n_heads */
    /* NULL: train the demo's own 512-token BPE tokenizer. Otherwise a real tokenizer.json (or the
     * directory holding it, with its tokenizer_config.json), copied into the checkpoint: the
     * vocabulary is its own, the bigram model covers the tokens the text uses, and every other
     * token gets a logit 20 below the rest's mean (vocab is then ignored). */
    const char *tokenizer;
    uint64_t seed;
    int n_outliers;        /* hidden channels with planted large activations */
    float outlier_scale;   /* their input_layernorm / post_attention_layernorm weight */
    size_t calib_bytes, eval_bytes;
} llmq_synth_opts;

void llmq_synth_defaults(llmq_synth_opts *o);
/* The hidden channel of the k-th planted outlier (k < n_outliers, at most 16). */
int llmq_synth_outlier_channel(int k, int hidden);

/* Generates `bytes` of synthetic text (NUL-terminated, malloc'd). */
char *llmq_synth_text(uint64_t seed, size_t bytes);

/* Writes config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
 * calib.txt and eval.txt into dir (created if needed). o->arch "qwen3" writes
 * the same model as a Qwen3 checkpoint: q/k norms (1 ± 0.1, so they matter)
 * and head_dim (default 2 × hidden / n_heads, so the attention is wider than
 * the hidden state, as in Qwen3-0.6B and -32B). */
int llmq_synth_write(const char *dir, const llmq_synth_opts *o);

/* A model's shape and the config.json fields that differ between families. */
typedef struct {
    const char *name;          /* "llama2-7b" */
    const char *source;        /* the Hugging Face checkpoint it copies, "meta-llama/Llama-2-7b-hf" */
    const char *architecture;  /* "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM" or "Qwen3MoeForCausalLM" */
    int hidden, intermediate, n_layers, n_heads, n_kv_heads, vocab, max_position;
    int head_dim;              /* 0: hidden / n_heads */
    double rope_theta, rms_norm_eps;
    int llama3_rope;           /* rope_scaling llama3: factor 8, low/high_freq_factor 1/4, original 8192 */
    int qkv_bias;              /* q/k/v biases (Qwen2) */
    int qk_norm;               /* per-head q/k RMSNorms (Qwen3) */
    int tied;                  /* tie_word_embeddings */
    int n_experts, n_experts_used, expert_ffn; /* a mixture of experts (Qwen3MoeForCausalLM); 0 when dense */
} llmq_synth_shape;

/* The built-in shapes: i-th one (NULL past the end), or by name (NULL and an
 * error listing the names when there is none). */
const llmq_synth_shape *llmq_synth_shape_at(size_t i);
const llmq_synth_shape *llmq_synth_shape_find(const char *name);

/* config.json of shape s with n_layers decoder layers (malloc'd JSON text, keys
 * sorted as transformers writes them; bos/eos are the 512-token tokenizer's 1
 * and 2). NULL on error. */
char *llmq_synth_shape_config(const llmq_synth_shape *s, int n_layers);

/* Writes calib.txt, eval.txt, tokenizer.json, tokenizer_config.json,
 * model.safetensors (BF16, streamed: memory stays a few MiB whatever the size)
 * and config.json of shape s into dir (created if needed). From o: n_layers
 * (1 .. s->n_layers), seed, n_outliers, outlier_scale, calib_bytes and
 * eval_bytes; its other fields are ignored. The weights are a pure function of
 * (seed, shape, tensor, element), so the bytes do not depend on threads.
 * s->vocab must be at least 512 (the tokenizer's size). */
int llmq_synth_write_shape(const char *dir, const llmq_synth_shape *s, const llmq_synth_opts *o);
/* The built-in shape `name` with n_layers layers, 8 outlier channels and 1 MB
 * of calibration and 300 kB of evaluation text. */
int llmq_synth_shape_write(const char *dir, const char *name, int n_layers, uint64_t seed);

#endif
