/* Llama-class models in GGUF (see include/llmq/gguf_model.h). Key names and
 * value types follow llama.cpp's src/llama-arch.cpp and gguf-py's
 * constants.py; llama.cpp's loader checks value types strictly, so integers
 * are written as u32 and floats as f32, as gguf-py writes them. */
#include "llmq/gguf_model.h"

#include "llmq/error.h"
#include "llmq/version.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const linear_gguf_names[LLMQ_LIN_COUNT] = {
    "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
};

const char *llmq_gguf_linear_name(llmq_linear which)
{
    return which >= 0 && which < LLMQ_LIN_COUNT ? linear_gguf_names[which] : "?";
}

void llmq_gguf_layer_tensor_name(char *buf, size_t cap, int layer, const char *what, const char *suffix)
{
    snprintf(buf, cap, "blk.%d.%s.%s", layer, what, suffix);
}

bool llmq_is_gguf_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return false;
    char magic[4];
    bool yes = fread(magic, 1, 4, fp) == 4 && !memcmp(magic, "GGUF", 4);
    fclose(fp);
    return yes;
}

const char *llmq_gguf_arch(const llmq_config *cfg)
{
    if (!strcmp(cfg->model_type, "qwen2")) {
        if (cfg->o_bias || cfg->mlp_bias) {
            llmq_error("qwen2 with o_proj or MLP biases has no llama.cpp equivalent");
            return NULL;
        }
        return "qwen2";
    }
    if (!strcmp(cfg->model_type, "qwen3")) {
        if (cfg->qkv_bias || cfg->o_bias || cfg->mlp_bias) {
            llmq_error("qwen3 with attention or MLP biases has no llama.cpp equivalent");
            return NULL;
        }
        return "qwen3";
    }
    if (!strcmp(cfg->model_type, "gemma2") || !strcmp(cfg->model_type, "gemma3_text")) {
        if (cfg->qkv_bias || cfg->o_bias || cfg->mlp_bias) {
            llmq_error("%s with attention or MLP biases has no llama.cpp equivalent", cfg->model_type);
            return NULL;
        }
        return cfg->model_type[5] == '2' ? "gemma2" : "gemma3";
    }
    if (!strcmp(cfg->model_type, "phi3")) {
        if (cfg->qkv_bias || cfg->o_bias || cfg->mlp_bias || cfg->n_heads * cfg->head_dim != cfg->hidden_size) {
            llmq_error("phi3 with biases or an attention width other than hidden_size has no llama.cpp equivalent");
            return NULL;
        }
        return "phi3";
    }
    if (!strcmp(cfg->model_type, "qwen3_moe")) return "qwen3moe";
    /* Mixtral is llama.cpp's llama with experts */
    if (!strcmp(cfg->model_type, "llama") || !strcmp(cfg->model_type, "mistral") || !strcmp(cfg->model_type, "mixtral")) return "llama";
    llmq_error("model_type '%s' has no llama.cpp architecture llmq can write (llama, mistral, qwen2, qwen3, gemma2, gemma3_text, phi3, "
               "mixtral, qwen3_moe)",
               cfg->model_type);
    return NULL;
}

/* ------------------------------------------------------------------ rows */

int llmq_gguf_qk_row_map(int rows, int n_head, int32_t *src_of_dst)
{
    if (n_head <= 0 || rows % n_head || (rows / n_head) % 2)
        return llmq_error("q/k permutation: %d rows do not split into %d heads of even size", rows, n_head);
    int d = rows / n_head, half = d / 2;
    for (int h = 0; h < n_head; h++)
        for (int i = 0; i < half; i++)
            for (int s = 0; s < 2; s++) src_of_dst[h * d + 2 * i + s] = h * d + s * half + i;
    return LLMQ_OK;
}

void llmq_gguf_permute_rows(void *dst, const void *src, int rows, size_t row_bytes, const int32_t *src_of_dst)
{
    for (int r = 0; r < rows; r++)
        memcpy((unsigned char *)dst + (size_t)r * row_bytes, (const unsigned char *)src + (size_t)src_of_dst[r] * row_bytes,
               row_bytes);
}

/* ------------------------------------------------------------------ export */

#define TRY(expr)                                 \
    do {                                          \
        if ((expr) != LLMQ_OK) return LLMQ_ERR;   \
    } while (0)

static int add_arch_u32(llmq_gguf_writer *w, const char *arch, const char *key, uint32_t v)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    return llmq_gguf_writer_add_u32(w, full, v);
}

static int add_arch_f32(llmq_gguf_writer *w, const char *arch, const char *key, float v)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    return llmq_gguf_writer_add_f32(w, full, v);
}

/* The attention scale llama.cpp's gemma2/gemma3 take (no key holds it): 1/√head_dim,
 * but 1/√(hidden/heads) for the 27B models, which it knows by their layer count. */
static float gemma_attn_scale(const llmq_config *c, bool gemma3)
{
    const bool big = c->n_layers == (gemma3 ? 62 : 46);
    return 1.0f / sqrtf((float)(big ? c->hidden_size / c->n_heads : c->head_dim));
}

int llmq_gguf_write_model_kv(llmq_gguf_writer *w, const llmq_config *c, const char *name, int file_type)
{
    const char *arch = llmq_gguf_arch(c);
    if (!arch) return LLMQ_ERR;
    TRY(llmq_gguf_writer_add_str(w, "general.architecture", arch));
    TRY(llmq_gguf_writer_add_str(w, "general.name", name && *name ? name : "model"));
    TRY(add_arch_u32(w, arch, "vocab_size", (uint32_t)c->vocab_size));
    TRY(add_arch_u32(w, arch, "context_length", (uint32_t)c->max_position_embeddings));
    TRY(add_arch_u32(w, arch, "embedding_length", (uint32_t)c->hidden_size));
    TRY(add_arch_u32(w, arch, "block_count", (uint32_t)c->n_layers));
    TRY(add_arch_u32(w, arch, "feed_forward_length", (uint32_t)c->intermediate_size));
    TRY(add_arch_u32(w, arch, "attention.head_count", (uint32_t)c->n_heads));
    TRY(add_arch_u32(w, arch, "attention.head_count_kv", (uint32_t)c->n_kv_heads));
    TRY(add_arch_u32(w, arch, "attention.key_length", (uint32_t)c->head_dim));
    TRY(add_arch_u32(w, arch, "attention.value_length", (uint32_t)c->head_dim));
    TRY(add_arch_f32(w, arch, "attention.layer_norm_rms_epsilon", c->rms_norm_eps));
    TRY(add_arch_f32(w, arch, "rope.freq_base", (float)c->rope_theta));
    TRY(add_arch_u32(w, arch, "rope.dimension_count", (uint32_t)llmq_rope_dims(c)));
    if (c->rope_scaling == LLMQ_ROPE_SCALING_LONGROPE) TRY(add_arch_f32(w, arch, "rope.scaling.attn_factor", c->rope_attn_factor));
    if (c->rope_scaling == LLMQ_ROPE_SCALING_LINEAR) {
        char key[128];
        snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
        TRY(llmq_gguf_writer_add_str(w, key, "linear"));
        TRY(add_arch_f32(w, arch, "rope.scaling.factor", (float)c->rope_factor));
    } else if (c->rope_scaling == LLMQ_ROPE_SCALING_LLAMA3) {
        /* llama.cpp reads only the rope_freqs tensor; these let llmq recover
         * the parameters on import. */
        TRY(llmq_gguf_writer_add_f32(w, "llmq.rope.llama3.factor", (float)c->rope_factor));
        TRY(llmq_gguf_writer_add_f32(w, "llmq.rope.llama3.low_freq_factor", (float)c->rope_low_freq_factor));
        TRY(llmq_gguf_writer_add_f32(w, "llmq.rope.llama3.high_freq_factor", (float)c->rope_high_freq_factor));
        TRY(llmq_gguf_writer_add_u32(w, "llmq.rope.llama3.original_context_length", (uint32_t)c->rope_original_max_position));
    }
    if (c->n_experts > 0) {
        TRY(add_arch_u32(w, arch, "expert_count", (uint32_t)c->n_experts));
        TRY(add_arch_u32(w, arch, "expert_used_count", (uint32_t)c->n_experts_used));
        if (strcmp(arch, "llama")) TRY(add_arch_u32(w, arch, "expert_feed_forward_length", (uint32_t)c->expert_ffn));
        else if (c->expert_ffn != c->intermediate_size)
            return llmq_error("llama with experts: the experts' FFN (%d) must be feed_forward_length (%d)", c->expert_ffn,
                              c->intermediate_size);
    }
    if (!strcmp(arch, "phi3") && c->rope_original_max_position_phi3 > 0)
        TRY(add_arch_u32(w, arch, "rope.scaling.original_context_length", (uint32_t)c->rope_original_max_position_phi3));
    if (!strncmp(arch, "gemma", 5)) {
        /* llama.cpp derives the attention scale from the layer count (1/√head_dim but for the 27B
         * models, 1/√(hidden/heads)): a config that says otherwise cannot be written faithfully */
        const float want = gemma_attn_scale(c, arch[5] == '3');
        if (fabsf(c->attn_scale - want) > 1e-6f * want)
            return llmq_error("%s: query_pre_attn_scalar gives an attention scale of %g; llama.cpp's %s uses %g for %d layers", arch,
                              c->attn_scale, arch, want, c->n_layers);
        if (c->sliding_window > 0) TRY(add_arch_u32(w, arch, "attention.sliding_window", (uint32_t)c->sliding_window));
        if (c->attn_softcap > 0) TRY(add_arch_f32(w, arch, "attn_logit_softcapping", c->attn_softcap));
        if (c->final_softcap > 0) TRY(add_arch_f32(w, arch, "final_logit_softcapping", c->final_softcap));
        if (arch[5] == '2' && !(c->attn_softcap > 0 && c->final_softcap > 0))
            return llmq_error("gemma2 without soft-capping has no llama.cpp equivalent (its loader defaults to 50 and 30)");
        if (c->rope_local_theta > 0) TRY(add_arch_f32(w, arch, "rope.freq_base_swa", (float)c->rope_local_theta));
        if (c->swa_pattern != (arch[5] == '2' ? 2 : 6))
            TRY(add_arch_u32(w, arch, "attention.sliding_window_pattern", (uint32_t)c->swa_pattern));
    }
    TRY(llmq_gguf_writer_add_u32(w, "general.file_type", (uint32_t)file_type));
    TRY(llmq_gguf_writer_add_u32(w, "general.quantization_version", 2));
    return LLMQ_OK;
}

/* convert_hf_to_gguf.py LlamaModel.generate_extra_tensors: per-frequency
 * divisors 1 (short wavelengths), factor (long ones), interpolated between. */
static void llama3_factors(int head_dim, double base, double factor, double low, double high, double old_ctx, float *out)
{
    double low_wl = old_ctx / low, high_wl = old_ctx / high;
    for (int i = 0; i < head_dim / 2; i++) {
        float freq = 1.0f / powf((float)base, (float)(2 * i) / (float)head_dim);
        double wl = 2 * M_PI / freq;
        if (wl < high_wl) out[i] = 1.0f;
        else if (wl > low_wl) out[i] = (float)factor;
        else {
            double smooth = (old_ctx / wl - low) / (high - low);
            out[i] = (float)(1.0 / ((1 - smooth) / factor + smooth));
        }
    }
}

int llmq_gguf_rope_freqs(const llmq_config *c, float *out)
{
    if (c->rope_scaling != LLMQ_ROPE_SCALING_LLAMA3) return LLMQ_GGUF_ABSENT;
    llama3_factors(c->head_dim, c->rope_theta, c->rope_factor, c->rope_low_freq_factor, c->rope_high_freq_factor,
                   c->rope_original_max_position, out);
    return LLMQ_OK;
}

int llmq_gguf_write_vocab_kv(llmq_gguf_writer *w, const llmq_vocab *v, int n_vocab)
{
    if (v->n_tokens > (size_t)n_vocab)
        return llmq_error("the tokenizer has %zu tokens but the embedding only %d rows", v->n_tokens, n_vocab);
    size_t n = (size_t)n_vocab;
    const char **tokens = calloc(n, sizeof *tokens);
    char **pads = calloc(n, sizeof *pads);
    float *scores = calloc(n, sizeof *scores);
    int32_t *types = calloc(n, sizeof *types);
    int rc = LLMQ_ERR;
    if (!tokens || !pads || !scores || !types) {
        llmq_error("vocabulary: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if (i < v->n_tokens) {
            if (strlen(v->tokens[i]) != v->token_lens[i]) {
                llmq_error("token %zu contains a NUL byte, which a GGUF token list cannot hold", i);
                goto done;
            }
            tokens[i] = v->tokens[i];
            scores[i] = v->scores ? v->scores[i] : 0.0f;
            types[i] = v->token_types[i];
        } else { /* as the converter pads a vocabulary shorter than the embedding */
            pads[i] = malloc(32);
            if (!pads[i]) {
                llmq_error("vocabulary: out of memory");
                goto done;
            }
            snprintf(pads[i], 32, "[PAD%zu]", i);
            tokens[i] = pads[i];
            types[i] = LLMQ_TOKEN_UNUSED;
        }
    }
    if (llmq_gguf_writer_add_str(w, "tokenizer.ggml.model", v->model) ||
        llmq_gguf_writer_add_str(w, "tokenizer.ggml.pre", v->pre ? v->pre : "default") ||
        llmq_gguf_writer_add_array(w, "tokenizer.ggml.tokens", LLMQ_GGUF_STRING, tokens, n) ||
        llmq_gguf_writer_add_array(w, "tokenizer.ggml.scores", LLMQ_GGUF_F32, scores, n) ||
        llmq_gguf_writer_add_array(w, "tokenizer.ggml.token_type", LLMQ_GGUF_I32, types, n))
        goto done;
    if (v->n_merges) {
        for (size_t i = 0; i < v->n_merges; i++)
            if (strlen(v->merges[i]) != v->merge_lens[i]) {
                llmq_error("merge %zu contains a NUL byte", i);
                goto done;
            }
        if (llmq_gguf_writer_add_array(w, "tokenizer.ggml.merges", LLMQ_GGUF_STRING, v->merges, v->n_merges)) goto done;
    }
    struct {
        const char *key;
        int32_t id;
    } ids[] = {{"tokenizer.ggml.bos_token_id", v->bos_id},
               {"tokenizer.ggml.eos_token_id", v->eos_id},
               {"tokenizer.ggml.unknown_token_id", v->unk_id},
               {"tokenizer.ggml.padding_token_id", v->pad_id}};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (ids[i].id >= 0 && llmq_gguf_writer_add_u32(w, ids[i].key, (uint32_t)ids[i].id)) goto done;
    if (llmq_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos != 0) ||
        llmq_gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", v->add_eos != 0))
        goto done;
    if (!strcmp(v->model, "llama") && llmq_gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix", v->add_space_prefix != 0))
        goto done;
    if (v->chat_template && llmq_gguf_writer_add_str(w, "tokenizer.chat_template", v->chat_template)) goto done;
    rc = LLMQ_OK;
done:
    for (size_t i = 0; pads && i < n; i++) free(pads[i]);
    free(pads);
    free(tokens);
    free(scores);
    free(types);
    return rc;
}

/* ------------------------------------------------------------------ import */

/* A required u32 <arch>.<key>, as a positive int. */
static int get_arch_int(const llmq_gguf *g, const char *arch, const char *key, bool required, int *out)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    uint32_t v;
    int rc = llmq_gguf_get_u32(g, full, &v);
    if (rc == LLMQ_ERR) return LLMQ_ERR;
    if (rc == LLMQ_GGUF_ABSENT) {
        if (required) return llmq_error("%s: required key '%s' is missing", llmq_gguf_name(g), full);
        return LLMQ_GGUF_ABSENT;
    }
    if (v == 0 || v > (1u << 30)) return llmq_error("%s: key '%s' = %u is out of range", llmq_gguf_name(g), full, v);
    *out = (int)v;
    return LLMQ_OK;
}

static int get_arch_f32(const llmq_gguf *g, const char *arch, const char *key, bool required, float *out)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int rc = llmq_gguf_get_f32(g, full, out);
    if (rc == LLMQ_GGUF_ABSENT && required) return llmq_error("%s: required key '%s' is missing", llmq_gguf_name(g), full);
    if (rc == LLMQ_OK && !isfinite(*out)) return llmq_error("%s: key '%s' is not finite", llmq_gguf_name(g), full);
    return rc;
}

/* Recovers Llama-3 rope parameters from a rope_freqs tensor: llmq's own keys
 * when present, else the converter's defaults (low 1, high 4, original 8192)
 * with factor = the largest divisor; the tensor must match them. */
static int read_llama3_rope(const llmq_gguf *g, const llmq_gguf_tensor *t, llmq_config *c)
{
    int half = c->head_dim / 2;
    if (t->type != LLMQ_TYPE_F32 || t->n_dims != 1 || t->ne[0] != half)
        return llmq_error("%s: tensor 'rope_freqs.weight' must be %d f32 values", llmq_gguf_name(g), half);
    const float *have = t->data;
    float factor = 0, low = 1, high = 4;
    uint32_t orig = 8192;
    for (int i = 0; i < half; i++) factor = have[i] > factor ? have[i] : factor;
    if (llmq_gguf_get_f32(g, "llmq.rope.llama3.factor", &factor) == LLMQ_ERR ||
        llmq_gguf_get_f32(g, "llmq.rope.llama3.low_freq_factor", &low) == LLMQ_ERR ||
        llmq_gguf_get_f32(g, "llmq.rope.llama3.high_freq_factor", &high) == LLMQ_ERR ||
        llmq_gguf_get_u32(g, "llmq.rope.llama3.original_context_length", &orig) == LLMQ_ERR)
        return LLMQ_ERR;
    float *want = malloc((size_t)half * sizeof *want);
    if (!want) return llmq_error("out of memory");
    llama3_factors(c->head_dim, c->rope_theta, factor, low, high, orig, want);
    int bad = -1;
    for (int i = 0; i < half && bad < 0; i++)
        if (!(fabsf(want[i] - have[i]) <= 1e-4f * fabsf(want[i]))) bad = i;
    free(want);
    if (bad >= 0)
        return llmq_error("%s: tensor 'rope_freqs.weight' [%d] = %g is not Llama-3 rope scaling (factor %g, low %g, high %g, "
                          "original context %u)",
                          llmq_gguf_name(g), bad, have[bad], factor, low, high, orig);
    c->rope_scaling = LLMQ_ROPE_SCALING_LLAMA3;
    c->rope_factor = factor;
    c->rope_low_freq_factor = low;
    c->rope_high_freq_factor = high;
    c->rope_original_max_position = (int)orig;
    return LLMQ_OK;
}

/* Gemma's keys, with llama.cpp's defaults where a file leaves them out
 * (gemma2.cpp / gemma3.cpp load_arch_hparams). */
static int read_gemma(const llmq_gguf *g, const char *arch, llmq_config *c)
{
    const bool g3 = arch[5] == '3';
    float attn_cap = g3 ? 0.0f : 50.0f, final_cap = g3 ? 0.0f : 30.0f, local = g3 ? 10000.0f : 0.0f;
    int window = g3 ? 0 : 4096, pattern = g3 ? 6 : 2;
    if (get_arch_int(g, arch, "attention.sliding_window", false, &window) == LLMQ_ERR ||
        get_arch_int(g, arch, "attention.sliding_window_pattern", false, &pattern) == LLMQ_ERR ||
        (!g3 && get_arch_f32(g, arch, "attn_logit_softcapping", false, &attn_cap) == LLMQ_ERR) ||
        get_arch_f32(g, arch, "final_logit_softcapping", false, &final_cap) == LLMQ_ERR ||
        get_arch_f32(g, arch, "rope.freq_base_swa", false, &local) == LLMQ_ERR)
        return LLMQ_ERR;
    c->sliding_window = window;
    c->swa_pattern = window > 0 ? pattern : 0;
    c->attn_softcap = attn_cap;
    c->final_softcap = final_cap;
    c->rope_local_theta = g3 ? local : 0.0;
    c->attn_scale = gemma_attn_scale(c, g3);
    return LLMQ_OK;
}

/* Phi-3's LongRoPE: rope_factors_long / rope_factors_short (f32, rope dims / 2)
 * and rope.scaling.attn_factor, as llama.cpp's converter writes them. */
static int read_longrope(const llmq_gguf *g, const char *arch, llmq_config *c)
{
    const llmq_gguf_tensor *t[2] = {llmq_gguf_tensor_at(g, llmq_gguf_find_tensor(g, "rope_factors_long.weight")),
                                    llmq_gguf_tensor_at(g, llmq_gguf_find_tensor(g, "rope_factors_short.weight"))};
    if (!t[0] && !t[1]) return LLMQ_OK;
    const int half = llmq_rope_dims(c) / 2;
    for (int i = 0; i < 2; i++)
        if (!t[i] || t[i]->type != LLMQ_TYPE_F32 || t[i]->n_dims != 1 || t[i]->ne[0] != half)
            return llmq_error("%s: rope_factors_long and rope_factors_short must both be %d f32 values", llmq_gguf_name(g), half);
    memcpy(c->rope_long, t[0]->data, (size_t)half * sizeof(float));
    memcpy(c->rope_short, t[1]->data, (size_t)half * sizeof(float));
    c->n_rope_factors = half;
    c->rope_scaling = LLMQ_ROPE_SCALING_LONGROPE;
    c->rope_attn_factor = 1.0f;
    return get_arch_f32(g, arch, "rope.scaling.attn_factor", false, &c->rope_attn_factor) == LLMQ_ERR ? LLMQ_ERR : LLMQ_OK;
}

int llmq_gguf_read_config(const llmq_gguf *g, llmq_config *c, bool *qk_permuted)
{
    const char *name = llmq_gguf_name(g);
    memset(c, 0, sizeof *c);
    const char *arch;
    int rc = llmq_gguf_get_str(g, "general.architecture", &arch, NULL);
    if (rc == LLMQ_ERR) return LLMQ_ERR;
    if (rc == LLMQ_GGUF_ABSENT) return llmq_error("%s: required key 'general.architecture' is missing", name);
    if (!strcmp(arch, "llama")) {
        snprintf(c->architecture, sizeof c->architecture, "LlamaForCausalLM");
        snprintf(c->model_type, sizeof c->model_type, "llama");
        *qk_permuted = true;
    } else if (!strcmp(arch, "qwen2")) {
        snprintf(c->architecture, sizeof c->architecture, "Qwen2ForCausalLM");
        snprintf(c->model_type, sizeof c->model_type, "qwen2");
        *qk_permuted = false;
    } else if (!strcmp(arch, "qwen3")) {
        snprintf(c->architecture, sizeof c->architecture, "Qwen3ForCausalLM");
        snprintf(c->model_type, sizeof c->model_type, "qwen3");
        *qk_permuted = false;
        c->qk_norm = true;
    } else if (!strcmp(arch, "gemma2") || !strcmp(arch, "gemma3")) {
        const bool g3 = arch[5] == '3';
        snprintf(c->architecture, sizeof c->architecture, g3 ? "Gemma3ForCausalLM" : "Gemma2ForCausalLM");
        snprintf(c->model_type, sizeof c->model_type, g3 ? "gemma3_text" : "gemma2");
        *qk_permuted = false;
        c->qk_norm = g3;
        c->hidden_act = LLMQ_ACT_GELU_TANH;
        c->norm_plus_one = c->post_norms = c->embed_scale = true; /* the file's norms already hold 1 + w */
    } else if (!strcmp(arch, "qwen3moe")) {
        snprintf(c->architecture, sizeof c->architecture, "Qwen3MoeForCausalLM");
        snprintf(c->model_type, sizeof c->model_type, "qwen3_moe");
        *qk_permuted = false;
        c->qk_norm = true;
    } else if (!strcmp(arch, "phi3")) {
        snprintf(c->architecture, sizeof c->architecture, "Phi3ForCausalLM");
        snprintf(c->model_type, sizeof c->model_type, "phi3");
        *qk_permuted = false;
        c->fused_linears = true;
    } else {
        return llmq_error("%s: general.architecture '%s' is not supported (llama, qwen2, qwen3, gemma2, gemma3, phi3)", name, arch);
    }
    TRY(get_arch_int(g, arch, "block_count", true, &c->n_layers));
    TRY(get_arch_int(g, arch, "embedding_length", true, &c->hidden_size));
    TRY(get_arch_int(g, arch, "feed_forward_length", true, &c->intermediate_size));
    TRY(get_arch_int(g, arch, "attention.head_count", true, &c->n_heads));
    TRY(get_arch_int(g, arch, "context_length", true, &c->max_position_embeddings));
    c->n_kv_heads = c->n_heads;
    if (get_arch_int(g, arch, "attention.head_count_kv", false, &c->n_kv_heads) == LLMQ_ERR) return LLMQ_ERR;
    if (c->n_heads % c->n_kv_heads)
        return llmq_error("%s: %s.attention.head_count %d is not a multiple of head_count_kv %d", name, arch, c->n_heads,
                          c->n_kv_heads);
    c->head_dim = c->hidden_size / c->n_heads;
    if (get_arch_int(g, arch, "attention.key_length", false, &c->head_dim) == LLMQ_ERR) return LLMQ_ERR;
    int value_length = c->head_dim, rope_dim = c->head_dim;
    if (get_arch_int(g, arch, "attention.value_length", false, &value_length) == LLMQ_ERR ||
        get_arch_int(g, arch, "rope.dimension_count", false, &rope_dim) == LLMQ_ERR)
        return LLMQ_ERR;
    /* phi3 may turn only part of each head (Phi-4-mini) */
    const bool partial = !strcmp(arch, "phi3") && rope_dim > 0 && rope_dim < c->head_dim && rope_dim % 2 == 0;
    if (value_length != c->head_dim || (rope_dim != c->head_dim && !partial) || c->head_dim % 2)
        return llmq_error("%s: key_length %d, value_length %d and rope.dimension_count %d must be equal and even", name,
                          c->head_dim, value_length, rope_dim);
    if (partial) c->rope_dim = rope_dim;
    TRY(get_arch_f32(g, arch, "attention.layer_norm_rms_epsilon", true, &c->rms_norm_eps));
    float theta = 10000.0f;
    if (get_arch_f32(g, arch, "rope.freq_base", false, &theta) == LLMQ_ERR) return LLMQ_ERR;
    c->rope_theta = theta;
    char key[128];
    const char *scaling = NULL;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    if (llmq_gguf_get_str(g, key, &scaling, NULL) == LLMQ_ERR) return LLMQ_ERR;
    if (scaling && !strcmp(scaling, "linear")) {
        float factor = 1;
        TRY(get_arch_f32(g, arch, "rope.scaling.factor", true, &factor));
        if (factor != 1.0f) {
            c->rope_scaling = LLMQ_ROPE_SCALING_LINEAR;
            c->rope_factor = factor;
        }
    } else if (scaling && strcmp(scaling, "none") != 0) {
        return llmq_error("%s: %s = '%s' is not supported (none, linear)", name, key, scaling);
    }
    if (!strncmp(arch, "gemma", 5) && read_gemma(g, arch, c)) return LLMQ_ERR;
    if (c->fused_linears &&
        get_arch_int(g, arch, "rope.scaling.original_context_length", false, &c->rope_original_max_position_phi3) == LLMQ_ERR)
        return LLMQ_ERR;
    if (c->fused_linears && read_longrope(g, arch, c)) return LLMQ_ERR;
    if (get_arch_int(g, arch, "expert_count", false, &c->n_experts) == LLMQ_ERR) return LLMQ_ERR;
    if (c->n_experts > 0) {
        c->expert_ffn = c->intermediate_size;
        if (get_arch_int(g, arch, "expert_used_count", true, &c->n_experts_used) == LLMQ_ERR ||
            get_arch_int(g, arch, "expert_feed_forward_length", false, &c->expert_ffn) == LLMQ_ERR)
            return LLMQ_ERR;
        if (c->n_experts_used < 1 || c->n_experts_used > c->n_experts)
            return llmq_error("%s: %s.expert_used_count %d of %d experts", name, arch, c->n_experts_used, c->n_experts);
        if (!strcmp(arch, "llama")) {
            snprintf(c->architecture, sizeof c->architecture, "MixtralForCausalLM");
            snprintf(c->model_type, sizeof c->model_type, "mixtral");
        }
    }
    const llmq_gguf_tensor *freqs = llmq_gguf_tensor_at(g, llmq_gguf_find_tensor(g, "rope_freqs.weight"));
    if (freqs && read_llama3_rope(g, freqs, c)) return LLMQ_ERR;

    const llmq_gguf_tensor *embd = llmq_gguf_get_tensor(g, "token_embd.weight");
    if (!embd) return LLMQ_ERR;
    if (embd->n_dims != 2 || embd->ne[0] != c->hidden_size || embd->ne[1] > (1 << 30))
        return llmq_error("%s: tensor 'token_embd.weight' must be %d × n_vocab", name, c->hidden_size);
    c->vocab_size = (int)embd->ne[1];
    c->tie_word_embeddings = llmq_gguf_find_tensor(g, "output.weight") < 0;
    c->qkv_bias = llmq_gguf_find_tensor(g, "blk.0.attn_q.bias") >= 0;
    c->o_bias = llmq_gguf_find_tensor(g, "blk.0.attn_output.bias") >= 0;
    c->mlp_bias = llmq_gguf_find_tensor(g, "blk.0.ffn_gate.bias") >= 0;
    c->bos_token_id = c->eos_token_id = -1;
    uint32_t id;
    if (llmq_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &id) == LLMQ_OK) c->bos_token_id = (int)id;
    if (llmq_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &id) == LLMQ_OK) c->eos_token_id = (int)id;
    return LLMQ_OK;
}

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

int llmq_gguf_read_vocab(const llmq_gguf *g, llmq_vocab *v)
{
    const char *name = llmq_gguf_name(g);
    memset(v, 0, sizeof *v);
    const char *model = NULL, *pre = NULL;
    int rc = llmq_gguf_get_str(g, "tokenizer.ggml.model", &model, NULL);
    if (rc == LLMQ_ERR) return LLMQ_ERR;
    if (rc == LLMQ_GGUF_ABSENT) return llmq_error("%s: required key 'tokenizer.ggml.model' is missing", name);
    if (llmq_gguf_get_str(g, "tokenizer.ggml.pre", &pre, NULL) == LLMQ_ERR) return LLMQ_ERR;
    bool spm = !strcmp(model, "llama");
    int64_t kv_tokens, kv_scores = -1, kv_types = -1, kv_merges = -1;
    uint64_t n, n_scores = 0, n_types = 0, n_merges = 0;
    rc = llmq_gguf_get_array(g, "tokenizer.ggml.tokens", LLMQ_GGUF_STRING, &kv_tokens, &n);
    if (rc == LLMQ_ERR) return LLMQ_ERR;
    if (rc == LLMQ_GGUF_ABSENT) return llmq_error("%s: required key 'tokenizer.ggml.tokens' is missing", name);
    if (n == 0 || n > (1u << 24)) return llmq_error("%s: tokenizer.ggml.tokens has %llu tokens", name, (unsigned long long)n);
    if (llmq_gguf_get_array(g, "tokenizer.ggml.scores", LLMQ_GGUF_F32, &kv_scores, &n_scores) == LLMQ_ERR ||
        llmq_gguf_get_array(g, "tokenizer.ggml.token_type", LLMQ_GGUF_I32, &kv_types, &n_types) == LLMQ_ERR ||
        llmq_gguf_get_array(g, "tokenizer.ggml.merges", LLMQ_GGUF_STRING, &kv_merges, &n_merges) == LLMQ_ERR)
        return LLMQ_ERR;
    if ((kv_scores >= 0 && n_scores != n) || (kv_types >= 0 && n_types != n))
        return llmq_error("%s: tokenizer.ggml.scores/token_type must have one entry per token (%llu)", name,
                          (unsigned long long)n);
    v->model = strdup(model);
    v->pre = strdup(pre ? pre : "default");
    v->n_tokens = n;
    v->tokens = calloc(n, sizeof *v->tokens);
    v->token_lens = calloc(n, sizeof *v->token_lens);
    v->token_types = calloc(n, sizeof *v->token_types);
    v->scores = kv_scores >= 0 ? calloc(n, sizeof *v->scores) : NULL;
    v->n_merges = kv_merges >= 0 ? n_merges : 0;
    v->merges = calloc(v->n_merges ? v->n_merges : 1, sizeof *v->merges);
    v->merge_lens = calloc(v->n_merges ? v->n_merges : 1, sizeof *v->merge_lens);
    if (!v->model || !v->pre || !v->tokens || !v->token_lens || !v->token_types || (kv_scores >= 0 && !v->scores) ||
        !v->merges || !v->merge_lens)
        goto oom;
    for (uint64_t i = 0; i < n; i++) {
        size_t len;
        const char *s = llmq_gguf_arr_str(g, kv_tokens, i, &len);
        if (!s || !(v->tokens[i] = dup_n(s, len))) goto oom;
        v->token_lens[i] = len;
        llmq_gguf_value val;
        v->token_types[i] = LLMQ_TOKEN_NORMAL;
        if (kv_types >= 0 && llmq_gguf_arr_value(g, kv_types, i, &val) == LLMQ_OK && val.i >= LLMQ_TOKEN_NORMAL &&
            val.i <= LLMQ_TOKEN_BYTE)
            v->token_types[i] = (int32_t)val.i;
        if (kv_scores >= 0 && llmq_gguf_arr_value(g, kv_scores, i, &val) == LLMQ_OK) v->scores[i] = (float)val.f;
    }
    for (uint64_t i = 0; i < v->n_merges; i++) {
        size_t len;
        const char *s = llmq_gguf_arr_str(g, kv_merges, i, &len);
        if (!s || !(v->merges[i] = dup_n(s, len))) goto oom;
        v->merge_lens[i] = len;
    }
    /* llama.cpp's defaults (llama-vocab.cpp): SPM bos 1, eos 2, unk 0, BOS
     * added, a leading space; BPE has no such ids (we use none) and adds BOS
     * for Llama-3's pre-tokenizer. */
    v->bos_id = spm ? 1 : -1;
    v->eos_id = spm ? 2 : -1;
    v->unk_id = spm ? 0 : -1;
    v->pad_id = -1;
    v->add_bos = spm || !strcmp(v->pre, "llama-bpe") || !strcmp(v->pre, "llama3");
    v->add_eos = 0;
    v->add_space_prefix = spm;
    struct {
        const char *key;
        int32_t *id;
    } ids[] = {{"tokenizer.ggml.bos_token_id", &v->bos_id},
               {"tokenizer.ggml.eos_token_id", &v->eos_id},
               {"tokenizer.ggml.unknown_token_id", &v->unk_id},
               {"tokenizer.ggml.padding_token_id", &v->pad_id}};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        uint32_t id;
        rc = llmq_gguf_get_u32(g, ids[i].key, &id);
        if (rc == LLMQ_ERR) goto fail;
        if (rc == LLMQ_OK) {
            if (id >= n) {
                llmq_error("%s: %s = %u is outside the vocabulary (%llu tokens)", name, ids[i].key, id, (unsigned long long)n);
                goto fail;
            }
            *ids[i].id = (int32_t)id;
        }
    }
    struct {
        const char *key;
        int *flag;
    } flags[] = {{"tokenizer.ggml.add_bos_token", &v->add_bos},
                 {"tokenizer.ggml.add_eos_token", &v->add_eos},
                 {"tokenizer.ggml.add_space_prefix", &v->add_space_prefix}};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        bool b;
        rc = llmq_gguf_get_bool(g, flags[i].key, &b);
        if (rc == LLMQ_ERR) goto fail;
        if (rc == LLMQ_OK) *flags[i].flag = b;
    }
    const char *tmpl = NULL;
    if (llmq_gguf_get_str(g, "tokenizer.chat_template", &tmpl, NULL) == LLMQ_ERR) goto fail;
    if (tmpl && !(v->chat_template = strdup(tmpl))) goto oom;
    return LLMQ_OK;
oom:
    llmq_error("%s: out of memory reading the vocabulary", name);
fail:
    llmq_vocab_free(v);
    return LLMQ_ERR;
}

llmq_tokenizer *llmq_gguf_tokenizer(const llmq_gguf *g)
{
    llmq_vocab v;
    if (llmq_gguf_read_vocab(g, &v)) return NULL;
    llmq_tokenizer *tok = llmq_tokenizer_from_vocab(&v);
    if (!tok) llmq_error_prefix("%s", llmq_gguf_name(g));
    llmq_vocab_free(&v);
    return tok;
}

llmq_tokenizer *llmq_tokenizer_load_gguf(const char *path)
{
    llmq_gguf *g = llmq_gguf_open(path);
    if (!g) return NULL;
    llmq_tokenizer *tok = llmq_gguf_tokenizer(g);
    llmq_gguf_close(g);
    return tok;
}
