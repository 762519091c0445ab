#include "llmq/config.h"
#include "llmq/error.h"
#include "llmq/file.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *architecture, *model_type;
    bool qkv_bias, qk_norm;
    int gemma; /* 2 or 3: Gemma's norms, GeGLU, scaled embeddings, sliding-window layers */
} supported[] = {
    {"LlamaForCausalLM", "llama", false, false, 0},
    {"MistralForCausalLM", "mistral", false, false, 0},
    {"Qwen2ForCausalLM", "qwen2", true, false, 0},
    {"Qwen3ForCausalLM", "qwen3", false, true, 0},
    {"Gemma2ForCausalLM", "gemma2", false, false, 2},
    {"Gemma3ForCausalLM", "gemma3_text", false, true, 3},
    {"Gemma3ForConditionalGeneration", "gemma3_text", false, true, 3}, /* the text model under text_config */
    {"Phi3ForCausalLM", "phi3", false, false, 0},
    {"MixtralForCausalLM", "mixtral", false, false, 0},
    {"Qwen3MoeForCausalLM", "qwen3_moe", false, true, 0},
};

/* Gemma3TextConfig's defaults (transformers), which a multimodal checkpoint's
 * text_config leaves out when it keeps them. */
static const struct {
    const char *key;
    double value;
} gemma3_text_defaults[] = {
    {"vocab_size", 262208}, {"hidden_size", 2304}, {"intermediate_size", 9216}, {"num_hidden_layers", 26},
    {"num_attention_heads", 8}, {"num_key_value_heads", 4}, {"head_dim", 256}, {"max_position_embeddings", 131072},
    {"rms_norm_eps", 1e-6}, {"rope_theta", 1000000.0}, {"query_pre_attn_scalar", 256}, {"sliding_window", 4096},
    {"rope_local_base_freq", 10000.0}, {"sliding_window_pattern", 6},
};

/* Reads a positive integer field; `fallback` < 0 means the field is required. */
static int get_int(json_t *root, const char *name, const char *key, int fallback, int *out)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (fallback < 0) return llmq_error("%s: field '%s' is missing", name, key);
        *out = fallback;
        return LLMQ_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (1 << 30))
        return llmq_error("%s: field '%s' is not a valid non-negative integer", name, key);
    *out = (int)json_integer_value(v);
    return LLMQ_OK;
}

static int get_num(json_t *root, const char *name, const char *key, double fallback, double *out)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = fallback;
        return LLMQ_OK;
    }
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        return llmq_error("%s: field '%s' is not a finite number", name, key);
    *out = json_number_value(v);
    return LLMQ_OK;
}

static int get_bool(json_t *root, const char *name, const char *key, bool fallback, bool *out)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = fallback;
        return LLMQ_OK;
    }
    if (!json_is_boolean(v)) return llmq_error("%s: field '%s' is not a boolean", name, key);
    *out = json_is_true(v);
    return LLMQ_OK;
}

/* bos/eos ids: an integer, a list (first one taken) or null. */
static int get_token_id(json_t *root, const char *name, const char *key, int *out)
{
    json_t *v = json_object_get(root, key);
    if (json_is_array(v)) v = json_array_get(v, 0);
    if (!v || json_is_null(v)) {
        *out = -1;
        return LLMQ_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
        return llmq_error("%s: field '%s' is not a token id", name, key);
    *out = (int)json_integer_value(v);
    return LLMQ_OK;
}

static int parse_rope_scaling(json_t *root, const char *name, llmq_config *cfg)
{
    json_t *rs = json_object_get(root, "rope_scaling");
    cfg->rope_scaling = LLMQ_ROPE_SCALING_NONE;
    cfg->rope_factor = 1.0;
    if (!rs || json_is_null(rs)) return LLMQ_OK;
    if (!json_is_object(rs)) return llmq_error("%s: field 'rope_scaling' is not an object", name);
    json_t *jt = json_object_get(rs, "rope_type");
    if (!jt) jt = json_object_get(rs, "type");
    if (!json_is_string(jt)) return llmq_error("%s: field 'rope_scaling.rope_type' is missing", name);
    const char *type = json_string_value(jt);
    if (get_num(rs, name, "factor", 1.0, &cfg->rope_factor) != LLMQ_OK) return LLMQ_ERR;
    if (!strcmp(type, "default")) return LLMQ_OK;
    if (!strcmp(type, "linear")) {
        cfg->rope_scaling = LLMQ_ROPE_SCALING_LINEAR;
    } else if (!strcmp(type, "llama3")) {
        cfg->rope_scaling = LLMQ_ROPE_SCALING_LLAMA3;
        if (get_num(rs, name, "low_freq_factor", 1.0, &cfg->rope_low_freq_factor) != LLMQ_OK ||
            get_num(rs, name, "high_freq_factor", 4.0, &cfg->rope_high_freq_factor) != LLMQ_OK ||
            get_int(rs, name, "original_max_position_embeddings", 8192, &cfg->rope_original_max_position) != LLMQ_OK)
            return LLMQ_ERR;
    } else if (!strcmp(type, "longrope") || !strcmp(type, "su")) {
        cfg->rope_scaling = LLMQ_ROPE_SCALING_LONGROPE;
        json_t *lists[2] = {json_object_get(rs, "long_factor"), json_object_get(rs, "short_factor")};
        float *dst[2] = {cfg->rope_long, cfg->rope_short};
        for (int i = 0; i < 2; i++) {
            size_t n = json_array_size(lists[i]);
            if (!json_is_array(lists[i]) || n == 0 || n > 128 || (i && n != (size_t)cfg->n_rope_factors))
                return llmq_error("%s: field 'rope_scaling.%s' must be a list of up to 128 numbers (as long as the other)", name,
                                  i ? "short_factor" : "long_factor");
            for (size_t k = 0; k < n; k++) {
                json_t *v = json_array_get(lists[i], k);
                if (!json_is_number(v) || !(json_number_value(v) > 0))
                    return llmq_error("%s: field 'rope_scaling.%s'[%zu] is not a positive number", name, i ? "short_factor" : "long_factor", k);
                dst[i][k] = (float)json_number_value(v);
            }
            cfg->n_rope_factors = (int)n;
        }
        double attn = 0;
        if (get_num(rs, name, "attention_factor", 0, &attn)) return LLMQ_ERR;
        cfg->rope_attn_factor = (float)attn; /* 0: from the context lengths, once they are read */
        return LLMQ_OK;
    } else {
        return llmq_error("%s: field 'rope_scaling.rope_type' = '%s' is not supported (linear, llama3 and longrope are)", name, type);
    }
    if (!(cfg->rope_factor > 0)) return llmq_error("%s: field 'rope_scaling.factor' must be positive", name);
    return LLMQ_OK;
}

/* Gemma 2 / 3: the fields transformers' Gemma2Config / Gemma3TextConfig add. */
static int parse_gemma(json_t *root, const char *name, int gemma, llmq_config *cfg)
{
    double scalar, attn_cap, final_cap, local;
    int pattern;
    if (get_num(root, name, "query_pre_attn_scalar", cfg->head_dim, &scalar) ||
        get_num(root, name, "attn_logit_softcapping", 0, &attn_cap) || get_num(root, name, "final_logit_softcapping", 0, &final_cap) ||
        get_num(root, name, "rope_local_base_freq", gemma == 3 ? 10000.0 : 0, &local) ||
        get_int(root, name, "sliding_window_pattern", gemma == 3 ? 6 : 2, &pattern))
        return LLMQ_ERR;
    if (!(scalar > 0) || attn_cap < 0 || final_cap < 0 || local < 0)
        return llmq_error("%s: query_pre_attn_scalar must be positive and the softcaps and rope_local_base_freq not negative", name);
    /* layer_types (newer configs) spell the pattern out: it must be the one llama.cpp assumes */
    json_t *types = json_object_get(root, "layer_types");
    if (json_is_array(types)) {
        for (size_t i = 0; i < json_array_size(types); i++) {
            const char *t = json_string_value(json_array_get(types, i));
            bool swa = pattern > 0 && (int)i % pattern < pattern - 1;
            if (!t || strcmp(t, swa ? "sliding_attention" : "full_attention"))
                return llmq_error("%s: field 'layer_types'[%zu] = '%s' breaks the pattern of one full-attention layer in %d", name, i,
                                  t ? t : "?", pattern);
        }
    }
    cfg->norm_plus_one = cfg->post_norms = cfg->embed_scale = true;
    cfg->attn_scale = (float)(1.0 / sqrt(scalar));
    cfg->attn_softcap = (float)attn_cap;
    cfg->final_softcap = (float)final_cap;
    cfg->swa_pattern = pattern;
    cfg->rope_local_theta = local;
    if (gemma == 2 && cfg->sliding_window == 0) cfg->sliding_window = 4096; /* llama.cpp's default for Gemma 2 */
    return LLMQ_OK;
}

int llmq_config_parse(const char *text, size_t len, const char *name, llmq_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root) return llmq_error("%s: invalid JSON at line %d: %s", name, jerr.line, jerr.text);
    int rc = LLMQ_ERR;
    if (!json_is_object(root)) {
        llmq_error("%s: not a JSON object", name);
        goto done;
    }
    json_t *archs = json_object_get(root, "architectures");
    const char *arch = json_is_array(archs) && json_is_string(json_array_get(archs, 0)) ? json_string_value(json_array_get(archs, 0)) : NULL;
    if (!arch) {
        llmq_error("%s: field 'architectures' is missing or empty", name);
        goto done;
    }
    int found = -1;
    for (size_t i = 0; i < sizeof supported / sizeof supported[0]; i++)
        if (!strcmp(arch, supported[i].architecture)) found = (int)i;
    if (found < 0) {
        llmq_error("%s: field 'architectures' = '%s' is not supported (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, "
                   "Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3ForConditionalGeneration, Phi3ForCausalLM, MixtralForCausalLM, "
                   "Qwen3MoeForCausalLM are)", name, arch);
        goto done;
    }
    snprintf(cfg->architecture, sizeof cfg->architecture, "%s", arch);
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", supported[found].model_type);
    snprintf(cfg->tensor_prefix, sizeof cfg->tensor_prefix, "model.");
    if (!strcmp(arch, "Gemma3ForConditionalGeneration")) {
        /* the text model's config, with its class's defaults filled in; bos/eos stay the outer ones */
        json_t *text = json_object_get(root, "text_config");
        if (!json_is_object(text)) {
            llmq_error("%s: field 'text_config' is missing (Gemma3ForConditionalGeneration keeps the text model's fields there)", name);
            goto done;
        }
        json_t *merged = json_deep_copy(text);
        for (size_t i = 0; merged && i < sizeof gemma3_text_defaults / sizeof gemma3_text_defaults[0]; i++) {
            json_t *v = json_object_get(merged, gemma3_text_defaults[i].key);
            if (!v || json_is_null(v)) {
                double x = gemma3_text_defaults[i].value;
                json_object_set_new(merged, gemma3_text_defaults[i].key, x == (double)(json_int_t)x ? json_integer((json_int_t)x) : json_real(x));
            }
        }
        const char *outer[] = {"bos_token_id", "eos_token_id"};
        for (size_t i = 0; merged && i < 2; i++)
            if (!json_object_get(merged, outer[i]) && json_object_get(root, outer[i]))
                json_object_set(merged, outer[i], json_object_get(root, outer[i]));
        if (!merged) {
            llmq_error("%s: out of memory", name);
            goto done;
        }
        json_decref(root);
        root = merged;
        snprintf(cfg->tensor_prefix, sizeof cfg->tensor_prefix, "language_model.model.");
    }
    const int gemma = supported[found].gemma;
    /* Gemma names its activation hidden_activation (hidden_act too, in Gemma 2) */
    const char *act_key = json_object_get(root, "hidden_activation") ? "hidden_activation" : "hidden_act";
    json_t *act = json_object_get(root, act_key);
    const char *act_name = json_is_string(act) ? json_string_value(act) : NULL;
    if (act && !json_is_null(act)) {
        if (act_name && !strcmp(act_name, "silu") && !gemma) cfg->hidden_act = LLMQ_ACT_SILU;
        else if (act_name && (!strcmp(act_name, "gelu_pytorch_tanh") || !strcmp(act_name, "gelu_tanh")) && gemma)
            cfg->hidden_act = LLMQ_ACT_GELU_TANH;
        else {
            llmq_error("%s: field '%s' must be \"%s\"", name, act_key, gemma ? "gelu_pytorch_tanh" : "silu");
            goto done;
        }
    } else {
        cfg->hidden_act = gemma ? LLMQ_ACT_GELU_TANH : LLMQ_ACT_SILU;
    }
    double eps, theta;
    bool attention_bias;
    if (get_int(root, name, "hidden_size", -1, &cfg->hidden_size) || get_int(root, name, "intermediate_size", -1, &cfg->intermediate_size) ||
        get_int(root, name, "num_hidden_layers", -1, &cfg->n_layers) || get_int(root, name, "num_attention_heads", -1, &cfg->n_heads) ||
        get_int(root, name, "num_key_value_heads", 0, &cfg->n_kv_heads) || get_int(root, name, "head_dim", gemma ? 256 : 0, &cfg->head_dim) ||
        get_int(root, name, "vocab_size", -1, &cfg->vocab_size) ||
        get_int(root, name, "max_position_embeddings", 2048, &cfg->max_position_embeddings) ||
        get_int(root, name, "sliding_window", 0, &cfg->sliding_window) ||
        get_num(root, name, "rms_norm_eps", 1e-6, &eps) || get_num(root, name, "rope_theta", 10000.0, &theta) ||
        get_bool(root, name, "tie_word_embeddings", gemma != 0, &cfg->tie_word_embeddings) ||
        get_bool(root, name, "attention_bias", false, &attention_bias) || get_bool(root, name, "mlp_bias", false, &cfg->mlp_bias) ||
        get_token_id(root, name, "bos_token_id", &cfg->bos_token_id) || get_token_id(root, name, "eos_token_id", &cfg->eos_token_id) ||
        parse_rope_scaling(root, name, cfg))
        goto done;
    cfg->rms_norm_eps = (float)eps;
    cfg->rope_theta = theta;
    cfg->qkv_bias = supported[found].qkv_bias || attention_bias;
    cfg->o_bias = attention_bias;
    cfg->qk_norm = supported[found].qk_norm;
    if (gemma && parse_gemma(root, name, gemma, cfg)) goto done;
    if (!strcmp(cfg->model_type, "mixtral") || !strcmp(cfg->model_type, "qwen3_moe")) {
        const bool qwen = cfg->model_type[0] == 'q';
        bool norm_topk = true;
        int sparse_step = 1;
        json_t *dense_layers = json_object_get(root, "mlp_only_layers");
        if (get_int(root, name, qwen ? "num_experts" : "num_local_experts", -1, &cfg->n_experts) ||
            get_int(root, name, "num_experts_per_tok", -1, &cfg->n_experts_used) ||
            get_int(root, name, qwen ? "moe_intermediate_size" : "intermediate_size", -1, &cfg->expert_ffn) ||
            get_bool(root, name, "norm_topk_prob", !qwen, &norm_topk) || get_int(root, name, "decoder_sparse_step", 1, &sparse_step))
            goto done;
        if (cfg->n_experts < 1 || cfg->n_experts > 1024 || cfg->n_experts_used < 1 || cfg->n_experts_used > cfg->n_experts ||
            cfg->expert_ffn < 1) {
            llmq_error("%s: %d experts, %d per token of %d: not a mixture of experts llmq can run", name, cfg->n_experts,
                       cfg->n_experts_used, cfg->expert_ffn);
            goto done;
        }
        /* llama.cpp's qwen3moe and Mixtral always renormalise the chosen weights and have no dense layers */
        if (!norm_topk || sparse_step != 1 || (json_is_array(dense_layers) && json_array_size(dense_layers) > 0)) {
            llmq_error("%s: norm_topk_prob false, decoder_sparse_step > 1 or mlp_only_layers: not supported (llama.cpp has "
                       "no such %s)", name, cfg->model_type);
            goto done;
        }
        cfg->sliding_window = 0; /* Mixtral names one; neither llama.cpp nor transformers' default attention uses it */
    }
    if (!strcmp(cfg->model_type, "phi3")) {
        /* llama.cpp's phi3 runs no sliding window (it names the window but disables it) */
        double rotary;
        cfg->fused_linears = true;
        cfg->sliding_window = 0;
        if (get_num(root, name, "partial_rotary_factor", 1.0, &rotary) ||
            get_int(root, name, "original_max_position_embeddings", cfg->max_position_embeddings, &cfg->rope_original_max_position_phi3))
            goto done;
        cfg->rope_dim = (int)(cfg->head_dim * rotary);
        if (!(rotary > 0 && rotary <= 1) || cfg->rope_dim % 2) {
            llmq_error("%s: field 'partial_rotary_factor' = %g does not turn an even part of head_dim %d", name, rotary, cfg->head_dim);
            goto done;
        }
        if (cfg->rope_dim == cfg->head_dim) cfg->rope_dim = 0;
    }
    if (cfg->rope_scaling == LLMQ_ROPE_SCALING_LONGROPE) {
        const int dim = llmq_rope_dims(cfg), orig = cfg->rope_original_max_position_phi3;
        if (strcmp(cfg->model_type, "phi3") || cfg->n_rope_factors != dim / 2) {
            llmq_error("%s: LongRoPE is read for Phi3ForCausalLM with rope_scaling factors for each of the %d frequencies", name, dim / 2);
            goto done;
        }
        /* transformers: √(1 + ln(factor) / ln(original)) for a context extended by factor, unless given */
        const double factor = orig > 0 ? (double)cfg->max_position_embeddings / orig : 1.0;
        if (!(cfg->rope_attn_factor > 0)) cfg->rope_attn_factor = factor > 1 ? (float)sqrt(1 + log(factor) / log((double)orig)) : 1.0f;
    }
    if (cfg->n_kv_heads == 0) cfg->n_kv_heads = cfg->n_heads;
    if (cfg->hidden_size == 0 || cfg->intermediate_size == 0 || cfg->n_layers == 0 || cfg->n_heads == 0 || cfg->vocab_size == 0) {
        llmq_error("%s: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads and vocab_size must be positive", name);
        goto done;
    }
    if (cfg->head_dim == 0) {
        if (cfg->hidden_size % cfg->n_heads) {
            llmq_error("%s: field 'hidden_size' (%d) is not a multiple of num_attention_heads (%d)", name, cfg->hidden_size, cfg->n_heads);
            goto done;
        }
        cfg->head_dim = cfg->hidden_size / cfg->n_heads;
    }
    if (cfg->head_dim % 2) {
        llmq_error("%s: field 'head_dim' (%d) must be even for RoPE", name, cfg->head_dim);
        goto done;
    }
    /* The projections' widths must fit the int arithmetic of the model code. */
    if ((int64_t)cfg->n_heads * cfg->head_dim > (1 << 30)) {
        llmq_error("%s: num_attention_heads (%d) × head_dim (%d) is too large", name, cfg->n_heads, cfg->head_dim);
        goto done;
    }
    if (cfg->n_heads % cfg->n_kv_heads) {
        llmq_error("%s: field 'num_attention_heads' (%d) is not a multiple of num_key_value_heads (%d)", name, cfg->n_heads, cfg->n_kv_heads);
        goto done;
    }
    if (!(cfg->rms_norm_eps > 0) || !(cfg->rope_theta > 0)) {
        llmq_error("%s: fields 'rms_norm_eps' and 'rope_theta' must be positive", name);
        goto done;
    }
    rc = LLMQ_OK;
done:
    json_decref(root);
    return rc;
}

int llmq_config_load(const char *path, llmq_config *cfg)
{
    char *file = llmq_is_dir(path) ? llmq_path_join(path, "config.json") : strdup(path);
    if (!file) return llmq_error("%s: out of memory", path);
    size_t len;
    char *text = llmq_read_file(file, 16u << 20, &len);
    int rc = text ? llmq_config_parse(text, len, file, cfg) : LLMQ_ERR;
    free(text);
    free(file);
    return rc;
}
