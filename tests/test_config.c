#include "llmq/config.h"
#include "llmq/error.h"
#include "llmq/model.h"
#include "test_util.h"

static int parse(const char *json, llmq_config *c) { return llmq_config_parse(json, strlen(json), "config.json", c); }

Test(config, llama_defaults_and_gqa)
{
    llmq_config c;
    cr_assert_eq(parse("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":4096,\"intermediate_size\":11008,"
                       "\"num_hidden_layers\":32,\"num_attention_heads\":32,\"num_key_value_heads\":8,\"vocab_size\":32000,"
                       "\"rms_norm_eps\":1e-6,\"eos_token_id\":[128001,128009],\"bos_token_id\":128000}", &c), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_eq(c.head_dim, 128);
    cr_assert_eq(c.n_kv_heads, 8);
    cr_assert_eq(c.eos_token_id, 128001);
    cr_assert_float_eq(c.rope_theta, 10000.0, 1e-9);
    cr_assert_eq(c.max_position_embeddings, 2048);
    cr_assert(!c.tie_word_embeddings && !c.qkv_bias);
}

Test(config, qwen2_has_qkv_bias_and_llama3_rope)
{
    llmq_config c;
    cr_assert_eq(parse("{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":896,\"intermediate_size\":4864,"
                       "\"num_hidden_layers\":24,\"num_attention_heads\":14,\"num_key_value_heads\":2,\"vocab_size\":151936,"
                       "\"tie_word_embeddings\":true,\"rope_theta\":1000000.0}", &c), LLMQ_OK, "%s", llmq_last_error());
    cr_assert(c.qkv_bias && !c.o_bias && c.tie_word_embeddings);
    cr_assert_eq(c.head_dim, 64);
    cr_assert_eq(parse("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":1,"
                       "\"num_attention_heads\":4,\"vocab_size\":10,\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,"
                       "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192}}", &c), LLMQ_OK);
    cr_assert_eq(c.rope_scaling, LLMQ_ROPE_SCALING_LLAMA3);
    cr_assert_float_eq(c.rope_factor, 8.0, 1e-12);
    cr_assert_eq(c.rope_original_max_position, 8192);
}

static void expect_error(const char *json, const char *needle)
{
    llmq_config c;
    cr_assert_eq(parse(json, &c), LLMQ_ERR, "accepted: %s", json);
    cr_assert(strstr(llmq_last_error(), needle), "'%s' lacks '%s'", llmq_last_error(), needle);
    cr_assert(strstr(llmq_last_error(), "config.json"), "%s", llmq_last_error());
}

Test(config, bad_inputs_name_the_field)
{
    expect_error("{\"architectures\":[\"GPT2LMHeadModel\"]}", "'architectures' = 'GPT2LMHeadModel' is not supported");
    expect_error("{\"hidden_size\":1}", "'architectures'");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"],\"intermediate_size\":1,\"num_hidden_layers\":1,\"num_attention_heads\":1,\"vocab_size\":1}", "'hidden_size' is missing");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":\"64\",\"intermediate_size\":1,\"num_hidden_layers\":1,\"num_attention_heads\":1,\"vocab_size\":1}", "'hidden_size'");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":1,\"num_hidden_layers\":1,\"num_attention_heads\":3,\"vocab_size\":1}", "not a multiple of num_attention_heads");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":1,\"num_hidden_layers\":1,\"num_attention_heads\":4,\"num_key_value_heads\":3,\"vocab_size\":1}", "num_key_value_heads");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":1,\"num_hidden_layers\":1,\"num_attention_heads\":4,\"vocab_size\":1,\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4}}", "'rope_scaling.rope_type' = 'yarn'");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":1,\"num_hidden_layers\":1,\"num_attention_heads\":4,\"vocab_size\":1,\"hidden_act\":\"gelu\"}", "'hidden_act'");
    expect_error("{\"architectures\":", "invalid JSON");
}

Test(config, model_load_reports_shape_mismatch)
{
    char src[512];
    REQUIRE_SHARED(src, "models/stories260K");
    char dir[256], cmd[2048];
    test_tmpdir(dir, sizeof dir, "shapemismatch");
    snprintf(cmd, sizeof cmd, "cp %s/model.safetensors %s/ && sed 's/\"intermediate_size\": 172/\"intermediate_size\": 176/' %s/config.json > %s/config.json", src, dir, src, dir);
    cr_assert_eq(system(cmd), 0);
    cr_assert_null(llmq_model_load(dir));
    cr_assert(strstr(llmq_last_error(), "model.layers.0.mlp.gate_proj.weight': shape 172×64 does not match config.json (176×64)"), "%s", llmq_last_error());
}

/* Gemma 3 1B's config.json as the hub has it (text-only Gemma3ForCausalLM),
 * Gemma 2 9B's, and Qwen3-0.6B's: the fields llmq reads and its defaults. */
Test(config, gemma_and_qwen3_real_configs)
{
    llmq_config c;
    cr_assert_eq(parse("{\"architectures\":[\"Gemma3ForCausalLM\"],\"model_type\":\"gemma3_text\",\"hidden_size\":1152,"
                       "\"intermediate_size\":6912,\"num_hidden_layers\":26,\"num_attention_heads\":4,\"num_key_value_heads\":1,"
                       "\"head_dim\":256,\"vocab_size\":262144,\"hidden_activation\":\"gelu_pytorch_tanh\",\"query_pre_attn_scalar\":256,"
                       "\"rms_norm_eps\":1e-06,\"rope_local_base_freq\":10000,\"rope_scaling\":null,\"rope_theta\":1000000,"
                       "\"sliding_window\":512,\"sliding_window_pattern\":6,\"final_logit_softcapping\":null,"
                       "\"attn_logit_softcapping\":null,\"max_position_embeddings\":32768}", &c), LLMQ_OK, "%s", llmq_last_error());
    cr_assert(c.qk_norm && c.post_norms && c.norm_plus_one && c.embed_scale && c.tie_word_embeddings);
    cr_assert_eq(c.hidden_act, LLMQ_ACT_GELU_TANH);
    cr_assert_float_eq(c.attn_scale, 1.0f / 16, 1e-7);
    cr_assert(c.attn_softcap == 0 && c.final_softcap == 0);
    cr_assert(c.sliding_window == 512 && c.swa_pattern == 6 && c.rope_local_theta == 10000.0);
    /* layers 0-4 local, 5 global, ... (llama.cpp's set_swa_pattern(6)) */
    for (int l = 0; l < 26; l++) cr_assert_eq(llmq_layer_is_swa(&c, l), l % 6 != 5, "layer %d", l);

    cr_assert_eq(parse("{\"architectures\":[\"Gemma2ForCausalLM\"],\"hidden_size\":3584,\"intermediate_size\":14336,"
                       "\"num_hidden_layers\":42,\"num_attention_heads\":16,\"num_key_value_heads\":8,\"head_dim\":256,"
                       "\"vocab_size\":256000,\"hidden_act\":\"gelu_pytorch_tanh\",\"hidden_activation\":\"gelu_pytorch_tanh\","
                       "\"query_pre_attn_scalar\":256,\"attn_logit_softcapping\":50.0,\"final_logit_softcapping\":30.0,"
                       "\"sliding_window\":4096,\"rope_theta\":10000.0}", &c), LLMQ_OK, "%s", llmq_last_error());
    cr_assert(!c.qk_norm && c.post_norms && c.attn_softcap == 50.0f && c.final_softcap == 30.0f && c.rope_local_theta == 0);
    cr_assert(llmq_layer_is_swa(&c, 0) && !llmq_layer_is_swa(&c, 1) && llmq_layer_is_swa(&c, 40));

    /* a layer_types list that is not llama.cpp's pattern, and a Llama activation on Gemma */
    cr_assert_eq(parse("{\"architectures\":[\"Gemma3ForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,"
                       "\"num_attention_heads\":2,\"vocab_size\":300,\"sliding_window_pattern\":2,"
                       "\"layer_types\":[\"full_attention\",\"sliding_attention\"]}", &c), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "layer_types"), "%s", llmq_last_error());
    cr_assert_eq(parse("{\"architectures\":[\"Gemma2ForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,"
                       "\"num_attention_heads\":2,\"vocab_size\":300,\"hidden_activation\":\"silu\"}", &c), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "gelu_pytorch_tanh"), "%s", llmq_last_error());

    cr_assert_eq(parse("{\"architectures\":[\"Qwen3ForCausalLM\"],\"model_type\":\"qwen3\",\"hidden_size\":1024,\"intermediate_size\":3072,"
                       "\"num_hidden_layers\":28,\"num_attention_heads\":16,\"num_key_value_heads\":8,\"head_dim\":128,"
                       "\"vocab_size\":151936,\"hidden_act\":\"silu\",\"attention_bias\":false,\"sliding_window\":null,"
                       "\"use_sliding_window\":false,\"tie_word_embeddings\":true,\"rope_theta\":1000000}", &c), LLMQ_OK, "%s", llmq_last_error());
    cr_assert(c.qk_norm && !c.qkv_bias && !c.post_norms && c.tie_word_embeddings && c.head_dim == 128 && c.swa_pattern == 0);
    cr_assert_eq(c.n_heads * c.head_dim, 2 * c.hidden_size);
}

/* Mixtral-8x7B's and Qwen3-30B-A3B's config.json fields for the experts. */
Test(config, mixture_of_experts_configs)
{
    llmq_config c;
    cr_assert_eq(parse("{\"architectures\":[\"MixtralForCausalLM\"],\"hidden_size\":4096,\"intermediate_size\":14336,"
                       "\"num_hidden_layers\":32,\"num_attention_heads\":32,\"num_key_value_heads\":8,\"vocab_size\":32000,"
                       "\"num_local_experts\":8,\"num_experts_per_tok\":2,\"sliding_window\":null,\"rope_theta\":1e6}", &c), LLMQ_OK,
                 "%s", llmq_last_error());
    cr_assert(c.n_experts == 8 && c.n_experts_used == 2 && c.expert_ffn == 14336 && !c.qk_norm);
    cr_assert_eq(parse("{\"architectures\":[\"Qwen3MoeForCausalLM\"],\"hidden_size\":2048,\"intermediate_size\":6144,"
                       "\"num_hidden_layers\":48,\"num_attention_heads\":32,\"num_key_value_heads\":4,\"head_dim\":128,\"vocab_size\":151936,"
                       "\"num_experts\":128,\"num_experts_per_tok\":8,\"moe_intermediate_size\":768,\"norm_topk_prob\":true,"
                       "\"decoder_sparse_step\":1,\"mlp_only_layers\":[]}", &c), LLMQ_OK, "%s", llmq_last_error());
    cr_assert(c.n_experts == 128 && c.n_experts_used == 8 && c.expert_ffn == 768 && c.qk_norm);
    /* transformers' default norm_topk_prob (false) and dense layers: llama.cpp has neither */
    cr_assert_eq(parse("{\"architectures\":[\"Qwen3MoeForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,"
                       "\"num_attention_heads\":2,\"vocab_size\":300,\"num_experts\":4,\"num_experts_per_tok\":2,\"moe_intermediate_size\":64}",
                       &c), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "norm_topk_prob"), "%s", llmq_last_error());
    cr_assert_eq(parse("{\"architectures\":[\"MixtralForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,"
                       "\"num_attention_heads\":2,\"vocab_size\":300,\"num_local_experts\":4,\"num_experts_per_tok\":5}", &c), LLMQ_ERR);
}
