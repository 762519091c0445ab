/* Hyperparameters of a Llama-class checkpoint, read from config.json. */
#ifndef LLMQ_CONFIG_H
#define LLMQ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    LLMQ_ROPE_SCALING_NONE = 0,
    LLMQ_ROPE_SCALING_LINEAR,
    LLMQ_ROPE_SCALING_LLAMA3,
    LLMQ_ROPE_SCALING_LONGROPE, /* Phi-3 128k, Phi-3.5, Phi-4-mini: per-frequency factors, see rope_long */
} llmq_rope_scaling;

/* The MLP's gate activation: SwiGLU's silu, or GeGLU's tanh-approximated GELU (Gemma). */
typedef enum {
    LLMQ_ACT_SILU = 0,
    LLMQ_ACT_GELU_TANH,
} llmq_act;

typedef struct {
    char architecture[64]; /* "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                            * "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM", "MixtralForCausalLM",
                            * "Qwen3MoeForCausalLM" */
    char model_type[32];   /* "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "mixtral",
                            * "qwen3_moe" */
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
    int sliding_window; /* 0 when none (Mistral names one, which only swa_pattern's layers use) */
    /* Gemma 2 / 3 (transformers' modeling_gemma2/3; llama.cpp's gemma2.cpp, gemma3.cpp): */
    llmq_act hidden_act;
    bool norm_plus_one;      /* RMSNorm weights stored as w and applied as 1 + w (the safetensors loader adds 1;
                              * GGUF files hold 1 + w, as llama.cpp's converter writes them) */
    bool post_norms;         /* RMSNorms on the attention's and the MLP's outputs before each residual add */
    bool embed_scale;        /* embeddings × √hidden */
    float attn_scale;        /* query_pre_attn_scalar^-½; 0: 1/√head_dim */
    float attn_softcap;      /* Gemma 2: scores → cap·tanh(scores/cap); 0: none */
    float final_softcap;     /* Gemma 2: logits likewise */
    int swa_pattern;         /* layer i attends within sliding_window when i % swa_pattern < swa_pattern - 1
                              * (Gemma 3: 6, Gemma 2: 2); 0: every layer attends to all earlier tokens */
    double rope_local_theta; /* Gemma 3's sliding-window layers: their own RoPE base, unscaled; 0: rope_theta */
    /* Where the text model's tensors are named: "model." (model.embed_tokens, model.layers.N...);
     * Gemma 3's multimodal checkpoints (Gemma3ForConditionalGeneration, whose config.json keeps
     * the text model's fields under text_config) "language_model.model." or, as newer
     * transformers save them, "model.language_model." (the loader takes whichever is there). */
    char tensor_prefix[32];
    /* Phi-3 / Phi-4 (Phi3ForCausalLM): q, k, v stored as one qkv_proj and gate, up as one gate_up_proj
     * (rows stacked in that order); llmq splits them into views at load, and the GGUF's ffn_up
     * holds gate and up stacked, as llama.cpp's phi3 reads it. */
    bool fused_linears;
    int rope_original_max_position_phi3; /* original_max_position_embeddings, for the GGUF key */
    int rope_dim; /* dimensions of each head that RoPE turns (partial_rotary_factor × head_dim); 0: head_dim */
    /* LongRoPE (transformers' _compute_longrope_parameters; llama.cpp's rope_factors_long/short): each
     * frequency divided by its factor, the long set when a pass is longer than
     * rope_original_max_position_phi3 tokens, the short one otherwise; cos and sin × rope_attn_factor. */
    int n_rope_factors; /* rope_dim / 2 */
    float rope_long[128], rope_short[128], rope_attn_factor;
    /* Mixture of experts (Mixtral, Qwen3-MoE): every layer's MLP is n_experts SwiGLU experts of
     * expert_ffn, n_experts_used of them per token chosen by a router (softmax over all, the top
     * ones kept, their weights renormalised to sum 1: llama.cpp's only form). 0: dense. */
    int n_experts, n_experts_used, expert_ffn;
    int bos_token_id;   /* -1 when none */
    int eos_token_id;   /* the first one when a list */
} llmq_config;

/* The dimensions of each head that RoPE turns: rope_dim, or all of head_dim. */
static inline int llmq_rope_dims(const llmq_config *c) { return c->rope_dim ? c->rope_dim : c->head_dim; }

/* Whether layer `layer` attends within the sliding window only. */
static inline bool llmq_layer_is_swa(const llmq_config *c, int layer)
{
    return c->swa_pattern > 0 && c->sliding_window > 0 && layer % c->swa_pattern < c->swa_pattern - 1;
}

/* path: config.json or a directory holding it. LLMQ_OK, or LLMQ_ERR naming the field. */
int llmq_config_load(const char *path, llmq_config *cfg);
/* Same, from JSON text (name is used in messages). */
int llmq_config_parse(const char *json_text, size_t len, const char *name, llmq_config *cfg);

#endif
