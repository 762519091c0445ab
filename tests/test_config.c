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
