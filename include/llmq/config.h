/* Hyperparameters of a Llama-class checkpoint, read from config.json. */
#ifndef LLMQ_CONFIG_H
#define LLMQ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    LLMQ_ROPE_SCALING_NONE = 0,
    LLMQ_ROPE_SCALING_LINEAR,
    LLMQ_ROPE_SCALING_LLAMA3,
} llmq_rope_scaling;

typedef struct {
    char architecture[64]; /* "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM" */
    char model_type[32];   /* "llama", "mistral", "qwen2", "qwen3" */
    int hidden_size;
    int intermediate_size;
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int vocab_size;
    int max_position_embeddings;
    float rms_norm_eps;
    double rope_theta;
    llmq_rope_scaling rope_scaling;
    double rope_factor;             /* linear and llama3 */
    double rope_low_freq_factor;    /* llama3 */
    double rope_high_freq_factor;   /* llama3 */
    int rope_original_max_position; /* llama3 */
    bool tie_word_embeddings;
    bool qkv_bias; /* Qwen2, or attention_bias: true */
    bool o_bias;   /* attention_bias: true also biases o_proj */
    bool mlp_bias;
    bool qk_norm;  /* Qwen3: RMSNorm over each head of q and of k (weights of head_dim) before RoPE */
    int sliding_window; /* 0 when none (Mistral sets one) */
    int bos_token_id;   /* -1 when none */
    int eos_token_id;   /* the first one when a list */
} llmq_config;

/* path: config.json or a directory holding it. LLMQ_OK, or LLMQ_ERR naming the field. */
int llmq_config_load(const char *path, llmq_config *cfg);
/* Same, from JSON text (name is used in messages). */
int llmq_config_parse(const char *json_text, size_t len, const char *name, llmq_config *cfg);

#endif
