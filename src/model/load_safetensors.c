/* Hugging Face checkpoints as an llmq_model: config.json and safetensors
 * (one file or a sharded index), weights as zero-copy views into the maps.
 * llmq_model_load also takes a .gguf file and hands it to load_gguf.c. */
#include "llmq/model.h"
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/gguf_model.h"
#include "llmq/hf_load.h"
#include "llmq/safetensors.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Hugging Face names of the tensors: the model's own and each layer's, under
 * the config's tensor_prefix ("model." but in Gemma 3's multimodal files). */
static const char HEAD_NAME[] = "lm_head.weight";
static const char *const linear_group[LLMQ_LIN_COUNT] = {"self_attn", "self_attn", "self_attn", "self_attn", "mlp", "mlp", "mlp"};

/* prefix + what: the text model's own tensors (embed_tokens, norm) */
static void model_name(char *buf, size_t cap, const llmq_config *c, const char *what)
{
    snprintf(buf, cap, "%s%s", c->tensor_prefix[0] ? c->tensor_prefix : "model.", what);
}

/* prefix + layers.l.what.weight: a layer's norms, its fused linears, its router */
static void layer_name(char *buf, size_t cap, const llmq_config *c, int l, const char *what)
{
    snprintf(buf, cap, "%slayers.%d.%s.weight", c->tensor_prefix[0] ? c->tensor_prefix : "model.", l, what);
}

static void linear_name(char *buf, size_t cap, const llmq_config *c, int l, int k, const char *suffix)
{
    snprintf(buf, cap, "%slayers.%d.%s.%s.%s", c->tensor_prefix[0] ? c->tensor_prefix : "model.", l, linear_group[k],
             llmq_linear_names[k], suffix);
}

/* A decoder layer's RMSNorm weights: the Hugging Face name under
 * model.layers.N., where llmq_layer keeps it, and its length in heads' units. */
typedef struct {
    const char *hf;
    size_t offset;
    bool per_head;
} norm_slot;

static int layer_norms(const llmq_config *c, norm_slot *out)
{
    int n = 0;
    out[n++] = (norm_slot){"input_layernorm", offsetof(llmq_layer, attn_norm), false};
    if (c->post_norms) {
        /* Gemma: post_attention_layernorm is on the attention's output; the MLP's input norm is pre_feedforward */
        out[n++] = (norm_slot){"post_attention_layernorm", offsetof(llmq_layer, post_attn_norm), false};
        out[n++] = (norm_slot){"pre_feedforward_layernorm", offsetof(llmq_layer, ffn_norm), false};
        out[n++] = (norm_slot){"post_feedforward_layernorm", offsetof(llmq_layer, post_ffn_norm), false};
    } else {
        out[n++] = (norm_slot){"post_attention_layernorm", offsetof(llmq_layer, ffn_norm), false};
    }
    if (c->qk_norm) {
        out[n++] = (norm_slot){"self_attn.q_norm", offsetof(llmq_layer, q_norm), true};
        out[n++] = (norm_slot){"self_attn.k_norm", offsetof(llmq_layer, k_norm), true};
    }
    return n;
}

/* Phi-3's fused linears: linear k's tensor ("self_attn.qkv_proj" holds q, k,
 * v stacked by rows; "mlp.gate_up_proj" gate, up), the first row of k in it,
 * and whether k is the first of its tensor; NULL for an unfused linear. */
static const char *fused_of(const llmq_config *c, int k, int *row0, bool *first)
{
    if (!c->fused_linears) return NULL;
    const int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    switch (k) {
    case LLMQ_LIN_Q: *row0 = 0, *first = true; return "self_attn.qkv_proj";
    case LLMQ_LIN_K: *row0 = qd, *first = false; return "self_attn.qkv_proj";
    case LLMQ_LIN_V: *row0 = qd + kvd, *first = false; return "self_attn.qkv_proj";
    case LLMQ_LIN_GATE: *row0 = 0, *first = true; return "mlp.gate_up_proj";
    case LLMQ_LIN_UP: *row0 = c->intermediate_size, *first = false; return "mlp.gate_up_proj";
    default: return NULL;
    }
}

/* A mixture-of-experts layer's Hugging Face names: the router and expert e's
 * matrix j (0 gate, 1 up, 2 down) of layer l (Mixtral's block_sparse_moe
 * w1/w3/w2, Qwen3-MoE's mlp gate_proj/up_proj/down_proj). */
static void router_name(char *buf, size_t cap, const llmq_config *c, int l)
{
    layer_name(buf, cap, c, l, c->model_type[0] == 'm' ? "block_sparse_moe.gate" : "mlp.gate");
}

static void expert_name(char *buf, size_t cap, const llmq_config *c, int l, int e, int j)
{
    static const char *const mixtral[3] = {"w1", "w3", "w2"}, *const qwen[3] = {"gate_proj", "up_proj", "down_proj"};
    const bool mx = c->model_type[0] == 'm';
    char what[96];
    snprintf(what, sizeof what, "%s.experts.%d.%s", mx ? "block_sparse_moe" : "mlp", e, mx ? mixtral[j] : qwen[j]);
    layer_name(buf, cap, c, l, what);
}

int llmq_checkpoint_tensors(const llmq_config *c, bool packed, int (*fn)(void *user, const char *name, bool required), void *user)
{
    static const char *const packed_parts[] = {"qweight", "qzeros", "scales", "g_idx"};
    int rc;
    char name[160];
    model_name(name, sizeof name, c, "embed_tokens.weight");
    if ((rc = fn(user, name, true))) return rc;
    model_name(name, sizeof name, c, "norm.weight");
    if ((rc = fn(user, name, true))) return rc;
    if (!c->tie_word_embeddings && (rc = fn(user, HEAD_NAME, !packed))) return rc;
    for (int p = 0; !c->tie_word_embeddings && packed && p < 4; p++) {
        snprintf(name, sizeof name, "lm_head.%s", packed_parts[p]);
        if ((rc = fn(user, name, false))) return rc;
    }
    norm_slot norms[6];
    const int n_norms = layer_norms(c, norms);
    for (int l = 0; l < c->n_layers; l++) {
        for (int i = 0; i < n_norms; i++) {
            layer_name(name, sizeof name, c, l, norms[i].hf);
            if ((rc = fn(user, name, true))) return rc;
        }
        if (c->n_experts > 0) {
            router_name(name, sizeof name, c, l);
            if ((rc = fn(user, name, true))) return rc;
            for (int e = 0; e < c->n_experts; e++)
                for (int j = 0; j < 3; j++) {
                    expert_name(name, sizeof name, c, l, e, j);
                    if ((rc = fn(user, name, true))) return rc;
                }
        }
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            int row0;
            bool first;
            if (c->n_experts > 0 && k >= LLMQ_LIN_GATE) continue;
            const char *fused = fused_of(c, k, &row0, &first);
            if (fused) {
                layer_name(name, sizeof name, c, l, fused);
                if (first && (rc = fn(user, name, true))) return rc;
                continue;
            }
            for (int p = 0; p < (packed ? 4 : 1); p++) {
                linear_name(name, sizeof name, c, l, k, packed ? packed_parts[p] : "weight");
                if ((rc = fn(user, name, !packed || p < 3))) return rc;
            }
            linear_name(name, sizeof name, c, l, k, "bias");
            if ((rc = fn(user, name, llmq_linear_has_bias(c, (llmq_linear)k)))) return rc;
        }
    }
    return 0;
}

/* Binds a safetensors tensor of shape [rows, cols] (cols = 0: a vector of rows). */
static int bind(llmq_model *m, llmq_safetensors *st, const char *name, int rows, int cols, bool optional, llmq_weight *w)
{
    const llmq_st_tensor *t = llmq_st_find(st, name);
    memset(w, 0, sizeof *w);
    if (!t) return optional ? LLMQ_OK : llmq_error("%s: tensor '%s' is missing", m->path, name);
    int want_dims = cols ? 2 : 1;
    if (t->n_dims != want_dims || t->shape[0] != rows || (cols && t->shape[1] != cols)) {
        char got[64] = "", want[64];
        for (int d = 0; d < t->n_dims; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? "×" : "", (long long)t->shape[d]);
        if (cols) snprintf(want, sizeof want, "%d×%d", rows, cols);
        else snprintf(want, sizeof want, "%d", rows);
        return llmq_error("%s: tensor '%s': shape %s does not match config.json (%s)", t->file, name, got, want);
    }
    /* A NaN or Inf weight would poison every activation after it: refuse it here, naming the tensor. */
    if (llmq_st_check_finite(t) != LLMQ_OK) return LLMQ_ERR;
    w->data = t->data;
    w->type = t->type;
    w->rows = cols ? rows : 1;
    w->cols = cols ? cols : rows;
    return LLMQ_OK;
}

/* Norm weights and biases are small: keep fp32 copies so the hot loops read floats. */
static int to_f32(llmq_model *m, llmq_weight *w)
{
    if (!w->data || w->type == LLMQ_TYPE_F32) return LLMQ_OK;
    size_t n = (size_t)w->rows * w->cols;
    float *f = llmq_model_own(m, malloc(n * sizeof(float)));
    if (!f) return llmq_error("%s: out of memory", m->path);
    llmq_type_get(w->type)->to_float(w->data, f, (int64_t)n);
    w->data = f;
    w->type = LLMQ_TYPE_F32;
    return LLMQ_OK;
}

/* A norm's weights as F32, with Gemma's 1 + w applied (cfg.norm_plus_one). */
static int to_f32_norm(llmq_model *m, llmq_weight *w)
{
    if (!m->cfg.norm_plus_one) return to_f32(m, w);
    size_t n = (size_t)w->rows * w->cols;
    float *f = llmq_model_own(m, malloc(n * sizeof(float)));
    if (!f) return llmq_error("%s: out of memory", m->path);
    llmq_type_get(w->type)->to_float(w->data, f, (int64_t)n);
    for (size_t i = 0; i < n; i++) f[i] += 1.0f;
    *w = (llmq_weight){f, LLMQ_TYPE_F32, w->rows, w->cols};
    return LLMQ_OK;
}

/* A mixture-of-experts layer: the router (as F32) and every expert's views;
 * lin[GATE..DOWN] get the experts' stacked shape with no data. */
static int bind_experts(llmq_model *m, llmq_safetensors *st, int l, llmq_layer *L, bool packed)
{
    const llmq_config *c = &m->cfg;
    const int d = c->hidden_size, f = c->expert_ffn, E = c->n_experts;
    char name[192];
    if (packed) return llmq_error("%s: a GPTQ/AWQ checkpoint of a mixture of experts is not supported yet", m->path);
    router_name(name, sizeof name, c, l);
    if (bind(m, st, name, E, d, false, &L->router) || to_f32(m, &L->router)) return LLMQ_ERR;
    L->experts = llmq_model_own(m, calloc((size_t)E, sizeof *L->experts));
    if (!L->experts) return llmq_error("%s: out of memory", m->path);
    for (int e = 0; e < E; e++)
        for (int j = 0; j < 3; j++) {
            expert_name(name, sizeof name, c, l, e, j);
            if (bind(m, st, name, j == 2 ? d : f, j == 2 ? f : d, false, &L->experts[e].w[j])) return LLMQ_ERR;
            if (L->experts[e].w[j].type != L->experts[0].w[0].type)
                return llmq_error("%s: tensor '%s': %s, where expert 0 is %s (one type for every expert)", m->path, name,
                                  llmq_type_get(L->experts[e].w[j].type)->name, llmq_type_get(L->experts[0].w[0].type)->name);
        }
    const llmq_type t = L->experts[0].w[0].type;
    L->lin[LLMQ_LIN_GATE] = (llmq_weight){NULL, t, E * f, d};
    L->lin[LLMQ_LIN_UP] = (llmq_weight){NULL, t, E * f, d};
    L->lin[LLMQ_LIN_DOWN] = (llmq_weight){NULL, t, E * d, f};
    return LLMQ_OK;
}

static void free_safetensors(void *p) { llmq_st_close(p); }

llmq_model *llmq_model_load(const char *path)
{
    if (llmq_is_gguf_file(path)) return llmq_model_load_gguf(path);
    llmq_model *m = calloc(1, sizeof *m);
    if (!m) {
        llmq_error("%s: out of memory", path);
        return NULL;
    }
    m->path = strdup(path);
    /* config.json lives in the checkpoint directory, or beside a given file. */
    char *dir = strdup(path);
    if (!llmq_is_dir(dir)) {
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0'; else strcpy(dir, ".");
    }
    int rc = llmq_config_load(dir, &m->cfg);
    /* A GPTQ/AWQ checkpoint: its linears are bound from their packed tensors. */
    llmq_hf_qconfig hq;
    bool packed = false;
    if (rc == LLMQ_OK) rc = llmq_hf_qconfig_load(dir, &hq, &packed);
    free(dir);
    if (rc != LLMQ_OK) goto fail;
    llmq_safetensors *st = llmq_st_open(path);
    if (!st) goto fail;
    m->source = st;
    m->source_free = free_safetensors;

    /* Gemma 3's multimodal checkpoints name the text model one of two ways */
    if (!strcmp(m->cfg.tensor_prefix, "language_model.model.") && !llmq_st_find(st, "language_model.model.embed_tokens.weight") &&
        llmq_st_find(st, "model.language_model.embed_tokens.weight"))
        snprintf(m->cfg.tensor_prefix, sizeof m->cfg.tensor_prefix, "model.language_model.");
    const llmq_config *c = &m->cfg;
    int d = c->hidden_size;
    char name[160];
    model_name(name, sizeof name, c, "embed_tokens.weight");
    if (bind(m, st, name, c->vocab_size, d, false, &m->embed)) goto fail;
    model_name(name, sizeof name, c, "norm.weight");
    if (bind(m, st, name, d, 0, false, &m->final_norm) || to_f32_norm(m, &m->final_norm)) goto fail;
    if (c->tie_word_embeddings) {
        m->lm_head = m->embed;
    } else if (packed && !llmq_st_find(st, HEAD_NAME) && llmq_st_find(st, "lm_head.qweight")) {
        if (llmq_hf_bind_linear(m, st, &hq, "lm_head", c->vocab_size, d, &m->lm_head)) goto fail;
    } else if (bind(m, st, HEAD_NAME, c->vocab_size, d, false, &m->lm_head)) {
        goto fail;
    }
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) {
        llmq_error("%s: out of memory", path);
        goto fail;
    }
    norm_slot norms[6];
    const int n_norms = layer_norms(c, norms);
    for (int l = 0; l < c->n_layers; l++) {
        llmq_layer *L = &m->layers[l];
        for (int i = 0; i < n_norms; i++) {
            llmq_weight *w = (llmq_weight *)((char *)L + norms[i].offset);
            layer_name(name, sizeof name, c, l, norms[i].hf);
            if (bind(m, st, name, norms[i].per_head ? c->head_dim : d, 0, false, w) || to_f32_norm(m, w)) goto fail;
        }
        if (c->n_experts > 0 && bind_experts(m, st, l, L, packed)) goto fail;
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            int rows, cols, row0;
            bool first;
            if (L->experts && k >= LLMQ_LIN_GATE) continue;
            llmq_linear_shape(c, (llmq_linear)k, &rows, &cols);
            const char *fused = fused_of(c, k, &row0, &first);
            if (fused) {
                /* a view of its rows in the stacked tensor, bound (and shape-checked) with the first */
                static const int total_kind[LLMQ_LIN_COUNT] = {0, 0, 0, -1, 1, 1, -1};
                const int total = total_kind[k] == 0 ? c->n_heads * c->head_dim + 2 * c->n_kv_heads * c->head_dim : 2 * c->intermediate_size;
                llmq_weight *whole = &L->lin[k == LLMQ_LIN_K || k == LLMQ_LIN_V ? LLMQ_LIN_Q : k == LLMQ_LIN_UP ? LLMQ_LIN_GATE : k];
                if (packed) {
                    llmq_error("%s: a GPTQ/AWQ checkpoint with fused %s is not supported yet", path, fused);
                    goto fail;
                }
                if (first) {
                    layer_name(name, sizeof name, c, l, fused);
                    if (bind(m, st, name, total, cols, false, whole)) goto fail;
                }
                L->lin[k] = (llmq_weight){(const char *)whole->data + (size_t)row0 * llmq_row_size(whole->type, cols), whole->type, rows, cols};
                continue;
            }
            if (packed) {
                linear_name(name, sizeof name, c, l, k, "");
                name[strlen(name) - 1] = '\0'; /* the prefix of qweight, qzeros, scales, g_idx */
                if (llmq_hf_bind_linear(m, st, &hq, name, rows, cols, &L->lin[k])) goto fail;
            } else {
                linear_name(name, sizeof name, c, l, k, "weight");
                if (bind(m, st, name, rows, cols, false, &L->lin[k])) goto fail;
            }
            linear_name(name, sizeof name, c, l, k, "bias");
            if (bind(m, st, name, rows, 0, !llmq_linear_has_bias(c, (llmq_linear)k), &L->bias[k]) || to_f32(m, &L->bias[k])) goto fail;
        }
    }
    return m;
fail:
    llmq_model_free(m);
    return NULL;
}
