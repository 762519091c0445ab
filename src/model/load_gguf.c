/* A GGUF file as an llmq_model (see llmq_model_load_gguf in
 * include/llmq/gguf_model.h): weights are typed views into the map, norms and
 * biases f32 copies, and a "llama" file's attn_q/attn_k rows put back in
 * Hugging Face order. The safetensors loader (load_safetensors.c) hands .gguf
 * paths here. */
#include "llmq/gguf_model.h"

#include "llmq/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *keep(llmq_model *m, void *p)
{
    void **grown = p ? realloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *grown) : NULL;
    if (!grown) {
        free(p);
        return NULL;
    }
    m->owned = grown;
    m->owned[m->n_owned++] = p;
    return p;
}

/* Binds tensor `name` as a rows × cols matrix (cols = 0: a vector of rows
 * values, converted to f32). */
static int bind(llmq_model *m, const llmq_gguf *g, const char *name, int rows, int cols, bool optional, llmq_weight *w)
{
    memset(w, 0, sizeof *w);
    int64_t i = llmq_gguf_find_tensor(g, name);
    if (i < 0) return optional ? LLMQ_OK : llmq_error("%s: tensor '%s' is missing", llmq_gguf_name(g), name);
    const llmq_gguf_tensor *t = llmq_gguf_tensor_at(g, i);
    bool ok = cols ? (t->n_dims == 2 && t->ne[0] == cols && t->ne[1] == rows) : (t->n_dims == 1 && t->ne[0] == rows);
    if (!ok) {
        char got[64] = "";
        for (int d = 0; d < t->n_dims; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "", (long long)t->ne[d]);
        if (cols)
            return llmq_error("%s: tensor '%s': ne {%s} does not match the hyperparameters {%d, %d}", llmq_gguf_name(g),
                              name, got, cols, rows);
        return llmq_error("%s: tensor '%s': ne {%s} does not match the hyperparameters {%d}", llmq_gguf_name(g), name, got,
                          rows);
    }
    const llmq_type_traits *tr = llmq_type_get(t->type);
    if (!tr || !tr->to_float)
        return llmq_error("%s: tensor '%s' has ggml type %d, which llmq cannot compute with", llmq_gguf_name(g), name,
                          (int)t->type);
    w->data = t->data;
    w->type = t->type;
    w->rows = cols ? rows : 1;
    w->cols = cols ? cols : rows;
    if (!cols && t->type != LLMQ_TYPE_F32) {
        float *f = keep(m, malloc((size_t)rows * sizeof(float)));
        if (!f) return llmq_error("%s: out of memory", llmq_gguf_name(g));
        tr->to_float(t->data, f, rows);
        w->data = f;
        w->type = LLMQ_TYPE_F32;
    }
    return LLMQ_OK;
}

static void close_gguf(void *p) { llmq_gguf_close(p); }

/* Puts the rows of w (a matrix, or a vector as rows of one f32) in the order
 * hf_from_file gives, in a copy the model owns (the map is read-only). */
static int reorder_rows(llmq_model *m, llmq_weight *w, const int32_t *hf_from_file)
{
    if (!w->data) return LLMQ_OK;
    bool vector = w->rows == 1;
    int rows = vector ? w->cols : w->rows;
    size_t row_bytes = vector ? llmq_type_get(w->type)->type_size : llmq_row_size(w->type, w->cols);
    void *copy = keep(m, malloc(row_bytes * (size_t)rows));
    if (!copy) return llmq_error("%s: out of memory", m->path);
    llmq_gguf_permute_rows(copy, w->data, rows, row_bytes, hf_from_file);
    w->data = copy;
    return LLMQ_OK;
}

/* Undoes the converter's LlamaModel.permute on every layer's attn_q and
 * attn_k (weights and biases): Hugging Face rotate_half order again, so the
 * forward runs the safetensors model's arithmetic exactly (the q·k sums in
 * the same order; an f32 file gives bit-identical logits). Rows are whole
 * blocks along the input dimension, so this is a row move for every type. */
static int unpermute_qk(llmq_model *m)
{
    const llmq_config *c = &m->cfg;
    int32_t *file_from_hf = NULL, *hf_from_file = NULL;
    int rc = LLMQ_ERR;
    for (int k = LLMQ_LIN_Q; k <= LLMQ_LIN_K; k++) {
        int n_head = k == LLMQ_LIN_Q ? c->n_heads : c->n_kv_heads, rows, cols;
        llmq_linear_shape(c, (llmq_linear)k, &rows, &cols);
        free(file_from_hf);
        free(hf_from_file);
        file_from_hf = malloc((size_t)rows * sizeof *file_from_hf);
        hf_from_file = malloc((size_t)rows * sizeof *hf_from_file);
        if (!file_from_hf || !hf_from_file) {
            llmq_error("%s: out of memory", m->path);
            goto done;
        }
        if (llmq_gguf_qk_row_map(rows, n_head, file_from_hf)) {
            llmq_error_prefix("%s: %s", m->path, llmq_gguf_linear_name((llmq_linear)k));
            goto done;
        }
        /* The row map sends Hugging Face rows to file rows; its inverse brings them back. */
        for (int r = 0; r < rows; r++) hf_from_file[file_from_hf[r]] = r;
        for (int l = 0; l < c->n_layers; l++)
            if (reorder_rows(m, &m->layers[l].lin[k], hf_from_file) ||
                reorder_rows(m, &m->layers[l].bias[k], hf_from_file))
                goto done;
    }
    rc = LLMQ_OK;
done:
    free(file_from_hf);
    free(hf_from_file);
    return rc;
}

/* A mixture of experts: ffn_gate_inp (the router, ne {hidden, experts}) and
 * ffn_{gate,up,down}_exps (ne {cols, rows, experts}): views per expert. */
static int bind_experts(llmq_model *m, const llmq_gguf *g, int l, llmq_layer *L)
{
    const llmq_config *c = &m->cfg;
    const int d = c->hidden_size, f = c->expert_ffn, E = c->n_experts;
    static const char *const names[3] = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};
    char name[LLMQ_GGUF_MAX_NAME + 16];
    llmq_gguf_layer_tensor_name(name, sizeof name, l, "ffn_gate_inp", "weight");
    if (bind(m, g, name, E, d, false, &L->router)) return LLMQ_ERR;
    if (L->router.type != LLMQ_TYPE_F32) {
        float *r = llmq_model_own(m, malloc(sizeof(float) * (size_t)E * d));
        if (!r) return llmq_error("%s: out of memory", m->path);
        llmq_type_get(L->router.type)->to_float(L->router.data, r, (int64_t)E * d);
        L->router = (llmq_weight){r, LLMQ_TYPE_F32, E, d};
    }
    L->experts = llmq_model_own(m, calloc((size_t)E, sizeof *L->experts));
    if (!L->experts) return llmq_error("%s: out of memory", m->path);
    const void *data[3];
    llmq_type types[3];
    for (int j = 0; j < 3; j++) {
        const int rows = j == 2 ? d : f, cols = j == 2 ? f : d;
        llmq_gguf_layer_tensor_name(name, sizeof name, l, names[j], "weight");
        const llmq_gguf_tensor *t = llmq_gguf_get_tensor(g, name);
        if (!t) return LLMQ_ERR;
        if (t->n_dims != 3 || t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != E)
            return llmq_error("%s: tensor '%s' must be {%d, %d, %d}", llmq_gguf_name(g), name, cols, rows, E);
        if (!llmq_type_get(t->type) || !llmq_type_get(t->type)->to_float)
            return llmq_error("%s: tensor '%s' has ggml type %d, which llmq cannot compute with", llmq_gguf_name(g), name, (int)t->type);
        data[j] = t->data, types[j] = t->type;
        L->lin[LLMQ_LIN_GATE + j] = (llmq_weight){NULL, t->type, E * rows, cols};
    }
    for (int e = 0; e < E; e++) L->experts[e] = llmq_expert_view(c, data, types, e);
    return LLMQ_OK;
}

/* Phi-3 (llama.cpp's phi3): ffn_up holds gate's rows then up's, and the
 * converter's attn_qkv q, k and v stacked (llmq writes them apart, which
 * llama.cpp also reads): views into those tensors. */
static int bind_phi3(llmq_model *m, const llmq_gguf *g, int l, llmq_layer *L)
{
    const llmq_config *c = &m->cfg;
    const int d = c->hidden_size, f = c->intermediate_size, qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    char name[LLMQ_GGUF_MAX_NAME + 16];
    llmq_weight w;
    llmq_gguf_layer_tensor_name(name, sizeof name, l, "ffn_up", "weight");
    if (bind(m, g, name, 2 * f, d, false, &w)) return LLMQ_ERR;
    const size_t rb = llmq_row_size(w.type, d);
    L->lin[LLMQ_LIN_GATE] = (llmq_weight){w.data, w.type, f, d};
    L->lin[LLMQ_LIN_UP] = (llmq_weight){(const char *)w.data + (size_t)f * rb, w.type, f, d};
    llmq_gguf_layer_tensor_name(name, sizeof name, l, "attn_qkv", "weight");
    if (llmq_gguf_find_tensor(g, name) < 0) return LLMQ_OK; /* q, k, v apart */
    if (bind(m, g, name, qd + 2 * kvd, d, false, &w)) return LLMQ_ERR;
    const size_t qb = llmq_row_size(w.type, d);
    L->lin[LLMQ_LIN_Q] = (llmq_weight){w.data, w.type, qd, d};
    L->lin[LLMQ_LIN_K] = (llmq_weight){(const char *)w.data + (size_t)qd * qb, w.type, kvd, d};
    L->lin[LLMQ_LIN_V] = (llmq_weight){(const char *)w.data + (size_t)(qd + kvd) * qb, w.type, kvd, d};
    return LLMQ_OK;
}

llmq_model *llmq_model_load_gguf(const char *path)
{
    llmq_model *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        llmq_error("%s: out of memory", path);
        return NULL;
    }
    llmq_gguf *g = llmq_gguf_open(path);
    if (!g) goto fail;
    m->source = g;
    m->source_free = close_gguf;
    bool qk_permuted;
    if (llmq_gguf_read_config(g, &m->cfg, &qk_permuted)) goto fail;
    const llmq_config *c = &m->cfg;
    int d = c->hidden_size;
    if (bind(m, g, "token_embd.weight", c->vocab_size, d, false, &m->embed) ||
        bind(m, g, "output_norm.weight", d, 0, false, &m->final_norm))
        goto fail;
    if (c->tie_word_embeddings) m->lm_head = m->embed;
    else if (bind(m, g, "output.weight", c->vocab_size, d, false, &m->lm_head)) goto fail;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) {
        llmq_error("%s: out of memory", path);
        goto fail;
    }
    for (int l = 0; l < c->n_layers; l++) {
        llmq_layer *L = &m->layers[l];
        char name[LLMQ_GGUF_MAX_NAME + 16];
        llmq_gguf_layer_tensor_name(name, sizeof name, l, "attn_norm", "weight");
        if (bind(m, g, name, d, 0, false, &L->attn_norm)) goto fail;
        llmq_gguf_layer_tensor_name(name, sizeof name, l, "ffn_norm", "weight");
        if (bind(m, g, name, d, 0, false, &L->ffn_norm)) goto fail;
        if (c->post_norms) {
            llmq_gguf_layer_tensor_name(name, sizeof name, l, "post_attention_norm", "weight");
            if (bind(m, g, name, d, 0, false, &L->post_attn_norm)) goto fail;
            llmq_gguf_layer_tensor_name(name, sizeof name, l, "post_ffw_norm", "weight");
            if (bind(m, g, name, d, 0, false, &L->post_ffn_norm)) goto fail;
        }
        if (c->qk_norm) {
            llmq_gguf_layer_tensor_name(name, sizeof name, l, "attn_q_norm", "weight");
            if (bind(m, g, name, c->head_dim, 0, false, &L->q_norm)) goto fail;
            llmq_gguf_layer_tensor_name(name, sizeof name, l, "attn_k_norm", "weight");
            if (bind(m, g, name, c->head_dim, 0, false, &L->k_norm)) goto fail;
        }
        if (c->fused_linears && bind_phi3(m, g, l, L)) goto fail;
        if (c->n_experts > 0 && bind_experts(m, g, l, L)) goto fail;
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            int rows, cols;
            llmq_linear_shape(c, (llmq_linear)k, &rows, &cols);
            llmq_gguf_layer_tensor_name(name, sizeof name, l, llmq_gguf_linear_name((llmq_linear)k), "weight");
            if (L->lin[k].data || (L->experts && k >= LLMQ_LIN_GATE)) continue; /* a view into a stacked tensor, or experts */
            if (bind(m, g, name, rows, cols, false, &L->lin[k])) goto fail;
            llmq_gguf_layer_tensor_name(name, sizeof name, l, llmq_gguf_linear_name((llmq_linear)k), "bias");
            if (bind(m, g, name, rows, 0, !llmq_linear_has_bias(c, (llmq_linear)k), &L->bias[k])) goto fail;
        }
    }
    /* rope_interleaved stays false: the rows are in Hugging Face order now. */
    if (qk_permuted && unpermute_qk(m)) goto fail;
    return m;
fail:
    llmq_model_free(m);
    return NULL;
}
