/* The project's own default model: a small deterministic Llama checkpoint
 * (safetensors BF16 + config.json + a BPE tokenizer.json trained here) and the
 * synthetic English it models, so tests and `make demo` need no download.
 *
 * The text comes from a seeded sentence grammar. The model is a low-rank
 * bigram model of that text carried by the residual stream: the embedding and
 * lm_head factor the bigram log-probability matrix (SVD), and the decoder
 * layers are small seeded random perturbations. A few hidden channels get
 * large input-norm weights, so their activations are planted outliers (what
 * AWQ looks for). */
#ifndef LLMQ_SYNTH_H
#define LLMQ_SYNTH_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int hidden, intermediate, n_layers, n_heads, n_kv_heads, vocab;
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
 * calib.txt and eval.txt into dir (created if needed). */
int llmq_synth_write(const char *dir, const llmq_synth_opts *o);

#endif
