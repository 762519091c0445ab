/* The quantize driver (see include/llmq/quantize.h): plan, declare, then
 * stream the model through a layer method one decoder layer at a time. */
#include "llmq/quantize.h"

#include "llmq/dist.h"
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/gguf_model.h"
#include "llmq/kernels.h"
#include "llmq/rtn.h"
#include "llmq/version.h"
#include "state.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- RTN */

static int rtn_quantize_layer(void *state, const llmq_model *src, int layer, llmq_layer_f32 *w,
                              const llmq_quant_target targets[LLMQ_LIN_COUNT], void *const packed[LLMQ_LIN_COUNT])
{
    const bool search = *(const bool *)state;
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        if (!packed[k]) continue;
        const llmq_weight *sw = &src->layers[layer].lin[k];
        if (llmq_quantize_rows(targets[k].type, w->lin[k], sw->rows, sw->cols, targets[k].group_size, search, packed[k]))
            return llmq_error_prefix("layer %d %s", layer, llmq_linear_names[k]);
    }
    return LLMQ_OK;
}

llmq_layer_method llmq_rtn_method(bool search)
{
    static bool search_on = true, search_off = false;
    llmq_layer_method m = {"rtn", search ? &search_on : &search_off, NULL, rtn_quantize_layer, NULL, NULL, NULL, NULL};
    return m;
}

/* ---------------------------------------------------------------- planning */

typedef struct {
    char name[LLMQ_GGUF_MAX_NAME];
    llmq_tensor_desc desc;
    llmq_tensor_plan plan;
    int n_dims;
    int64_t ne[3];
} planned;

typedef struct {
    const llmq_model *src;
    const llmq_quant_opts *opts;
    const char *arch;
    bool permute;       /* rows of q/k go into llama.cpp's order */
    planned *t;
    int n, cap;
    llmq_gguf_writer *w;
    llmq_quant_report rep;
    double t0;
    double work_total, work_done; /* elements, for the ETA */
    int current_layer;
    llmq_qstate *state; /* the resumable state (NULL without a state mode) */
    /* A rank other than 0 of a run over several (llmq/dist.h): it computes
     * everything rank 0 does, but writes nothing and keeps no state; rank 0
     * passes it the layers it restores. */
    bool follower;
} job;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const char *type_name(llmq_type t) { return llmq_type_get(t)->name; }

static void stage(const job *j, int layer, const char *name)
{
    if (j->opts->stage) j->opts->stage(j->opts->user, layer, name, 0);
}

static int plan_tensor(job *j, const char *name, llmq_tensor_role role, llmq_linear lin, int layer, int64_t rows,
                       int64_t cols)
{
    if (j->n == j->cap) {
        int cap = j->cap ? 2 * j->cap : 64;
        planned *p = realloc(j->t, (size_t)cap * sizeof *p);
        if (!p) return llmq_error("quantize: out of memory");
        j->t = p;
        j->cap = cap;
    }
    planned *p = &j->t[j->n];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    const llmq_config *cfg = &j->src->cfg;
    /* llama.cpp's LLM_TYPE_70B: 80 layers of Llama with grouped KV heads, or of Qwen2 */
    const bool model_70b = cfg->n_layers == 80 && (cfg->n_heads != cfg->n_kv_heads || strstr(cfg->architecture, "Qwen2"));
    const int n_gqa = cfg->n_kv_heads > 0 ? cfg->n_heads / cfg->n_kv_heads : 1;
    p->desc = (llmq_tensor_desc){role, lin, layer, cfg->n_layers, rows, cols, cfg->tie_word_embeddings, model_70b, n_gqa};
    if (llmq_policy_plan(&j->opts->policy, &p->desc, &p->plan)) return llmq_error_prefix("%s", name);
    p->n_dims = role == LLMQ_ROLE_EMBED || role == LLMQ_ROLE_OUTPUT || role == LLMQ_ROLE_LINEAR ? 2 : 1;
    p->ne[0] = cols;
    p->ne[1] = rows;
    if (p->plan.type != p->plan.wanted && j->opts->notice) {
        char line[256];
        snprintf(line, sizeof line, "%s: row length %lld does not fit %s blocks of %d; stored as %s", name, (long long)cols,
                 type_name(p->plan.wanted), llmq_type_get(p->plan.wanted)->block_size, type_name(p->plan.type));
        j->opts->notice(j->opts->user, line);
    }
    j->work_total += (double)rows * cols;
    j->n++;
    return LLMQ_OK;
}

static planned *find_planned(job *j, const char *name)
{
    for (int i = 0; i < j->n; i++)
        if (!strcmp(j->t[i].name, name)) return &j->t[i];
    return NULL;
}

/* A decoder layer's RMSNorm weights in file order: each is written after
 * linear `after` (-1: before the linears) where the layer has it. Norms pass
 * through as F32 (a method may rescale attn_norm / ffn_norm, AWQ does). */
static const struct {
    const char *gguf;
    int after;
    size_t in_layer, in_f32; /* offsets in llmq_layer (an llmq_weight) and llmq_layer_f32 (a float *) */
} layer_norms[] = {
    {"attn_norm", -1, offsetof(llmq_layer, attn_norm), offsetof(llmq_layer_f32, attn_norm)},
    {"attn_q_norm", -1, offsetof(llmq_layer, q_norm), offsetof(llmq_layer_f32, q_norm)},
    {"attn_k_norm", -1, offsetof(llmq_layer, k_norm), offsetof(llmq_layer_f32, k_norm)},
    {"post_attention_norm", LLMQ_LIN_O, offsetof(llmq_layer, post_attn_norm), offsetof(llmq_layer_f32, post_attn_norm)},
    {"ffn_norm", LLMQ_LIN_O, offsetof(llmq_layer, ffn_norm), offsetof(llmq_layer_f32, ffn_norm)},
    {"ffn_gate_inp", LLMQ_LIN_O, offsetof(llmq_layer, router), offsetof(llmq_layer_f32, router)}, /* kept F32 as llama-quantize keeps it */
    {"post_ffw_norm", LLMQ_LIN_DOWN, offsetof(llmq_layer, post_ffn_norm), offsetof(llmq_layer_f32, post_ffn_norm)},
};
#define N_LAYER_NORMS (sizeof layer_norms / sizeof layer_norms[0])

static llmq_weight *norm_of(const llmq_layer *L, size_t i) { return (llmq_weight *)((char *)L + layer_norms[i].in_layer); }
static float **norm_f32(const llmq_layer_f32 *f, size_t i) { return (float **)((char *)f + layer_norms[i].in_f32); }

/* The file's name of linear k: Phi-3's gate lives in ffn_up, stacked above
 * up; a mixture of experts' MLP linears are ffn_{gate,up,down}_exps. */
static const char *linear_file_name(const job *j, int k)
{
    static const char *const exps[3] = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};
    if (j->src->cfg.n_experts > 0 && k >= LLMQ_LIN_GATE) return exps[k - LLMQ_LIN_GATE];
    return j->src->cfg.fused_linears && k == LLMQ_LIN_GATE ? "ffn_up" : llmq_gguf_linear_name((llmq_linear)k);
}

static bool stacked_gate_up(const job *j) { return j->src->cfg.fused_linears; }

static int plan_all(job *j)
{
    const llmq_config *c = &j->src->cfg;
    int d = c->hidden_size;
    if (plan_tensor(j, "token_embd.weight", LLMQ_ROLE_EMBED, 0, -1, c->vocab_size, d)) return LLMQ_ERR;
    if (c->rope_scaling == LLMQ_ROPE_SCALING_LLAMA3 &&
        plan_tensor(j, "rope_freqs.weight", LLMQ_ROLE_ROPE_FREQS, 0, -1, 1, c->head_dim / 2))
        return LLMQ_ERR;
    if (c->rope_scaling == LLMQ_ROPE_SCALING_LONGROPE &&
        (plan_tensor(j, "rope_factors_long.weight", LLMQ_ROLE_ROPE_FREQS, 0, -1, 1, c->n_rope_factors) ||
         plan_tensor(j, "rope_factors_short.weight", LLMQ_ROLE_ROPE_FREQS, 0, -1, 1, c->n_rope_factors)))
        return LLMQ_ERR;
    for (int l = 0; l < c->n_layers; l++) {
        const llmq_layer *L = &j->src->layers[l];
        char name[LLMQ_GGUF_MAX_NAME + 16];
        for (int k = -1; k < LLMQ_LIN_COUNT; k++) {
            if (k >= 0 && !(k == LLMQ_LIN_GATE && stacked_gate_up(j))) {
                /* Phi-3: one ffn_up of gate's rows then up's, planned with up's rule */
                const int rows = k == LLMQ_LIN_UP && stacked_gate_up(j) ? L->lin[LLMQ_LIN_GATE].rows + L->lin[k].rows : L->lin[k].rows;
                llmq_gguf_layer_tensor_name(name, sizeof name, l, linear_file_name(j, k), "weight");
                if (plan_tensor(j, name, LLMQ_ROLE_LINEAR, k, l, rows, L->lin[k].cols)) return LLMQ_ERR;
                if (L->experts && k >= LLMQ_LIN_GATE) {
                    /* ggml's {cols, rows of one expert, experts} */
                    planned *p = &j->t[j->n - 1];
                    p->n_dims = 3;
                    p->ne[1] = rows / c->n_experts;
                    p->ne[2] = c->n_experts;
                }
                if (L->bias[k].data) {
                    llmq_gguf_layer_tensor_name(name, sizeof name, l, llmq_gguf_linear_name(k), "bias");
                    if (plan_tensor(j, name, LLMQ_ROLE_BIAS, k, l, 1, L->bias[k].cols)) return LLMQ_ERR;
                }
            }
            for (size_t i = 0; i < N_LAYER_NORMS; i++) {
                const llmq_weight *w = norm_of(L, i);
                if (layer_norms[i].after != k || !w->data) continue;
                llmq_gguf_layer_tensor_name(name, sizeof name, l, layer_norms[i].gguf, "weight");
                if (plan_tensor(j, name, LLMQ_ROLE_NORM, 0, l, w->rows, w->cols)) return LLMQ_ERR;
                if (w->rows > 1) j->t[j->n - 1].n_dims = 2; /* the router */
            }
        }
    }
    if (plan_tensor(j, "output_norm.weight", LLMQ_ROLE_NORM, 0, -1, 1, d)) return LLMQ_ERR;
    if (!c->tie_word_embeddings && plan_tensor(j, "output.weight", LLMQ_ROLE_OUTPUT, 0, -1, c->vocab_size, d))
        return LLMQ_ERR;
    return LLMQ_OK;
}

/* ---------------------------------------------------------------- helpers */

/* Rows [r0, r1) of a source weight as f32, checked for NaN/Inf. */
static int source_rows(const llmq_weight *w, int r0, int r1, float *dst, const char *name)
{
    if (llmq_dequant_rows(dst, w->data, w->type, w->cols, r0, r1)) return llmq_error_prefix("%s", name);
    /* the source is read once, layer by layer: its pages need not stay resident */
    const size_t row_bytes = llmq_row_size(w->type, w->cols);
    llmq_release_pages((const unsigned char *)w->data + (size_t)r0 * row_bytes, (size_t)(r1 - r0) * row_bytes);
    size_t n = (size_t)(r1 - r0) * w->cols;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(dst[i]))
            return llmq_error("tensor '%s' holds %s at row %lld, column %lld of the source weights", name,
                              isnan(dst[i]) ? "NaN" : "Inf", (long long)(r0 + (int64_t)(i / w->cols)),
                              (long long)(i % w->cols));
    return LLMQ_OK;
}

static double rel_from_sums(double num, double den) { return den == 0 ? (num == 0 ? 0 : INFINITY) : sqrt(num / den); }

static void record(job *j, const planned *p, size_t bytes, double rel_error)
{
    llmq_tensor_report *r = &j->rep.tensors[j->rep.n_tensors++];
    snprintf(r->name, sizeof r->name, "%s", p->name);
    r->type = p->plan.type;
    r->group_size = p->plan.group_size;
    r->n_dims = p->n_dims;
    r->ne[0] = p->ne[0];
    r->ne[1] = p->ne[1];
    r->bytes = bytes;
    r->rel_error = rel_error;
    j->work_done += (double)p->ne[0] * p->ne[1];
    if (j->opts->progress) {
        double el = now() - j->t0;
        llmq_quant_progress pr = {j->current_layer, j->src->cfg.n_layers, p->name, j->rep.n_tensors, j->n, el,
                                  j->work_done > 0 ? el * (j->work_total - j->work_done) / j->work_done : -1};
        j->opts->progress(j->opts->user, &pr);
    }
}

/* Writes one tensor's data, permuting its `rows` rows first when perm is
 * given (a vector permutes as rows of one element). */
static int write_tensor(job *j, const planned *p, const void *data, size_t bytes, int rows, const int32_t *perm)
{
    int rc;
    if (j->follower) return LLMQ_OK;
    if (j->opts->sink) {
        const llmq_tensor_sink *s = j->opts->sink;
        return s->write(s->state, p->name, &p->desc, p->plan.type, data, bytes);
    }
    if (perm) {
        void *tmp = malloc(bytes);
        if (!tmp) return llmq_error("quantize: out of memory");
        llmq_gguf_permute_rows(tmp, data, rows, bytes / (size_t)rows, perm);
        rc = llmq_gguf_writer_write_tensor(j->w, p->name, tmp, bytes);
        free(tmp);
    } else {
        rc = llmq_gguf_writer_write_tensor(j->w, p->name, data, bytes);
    }
    return rc;
}

/* A small f32 vector: written exactly. */
static int write_f32(job *j, const char *name, const float *v, const int32_t *perm)
{
    planned *p = find_planned(j, name);
    const int64_t rows = p->n_dims > 1 ? p->ne[1] : 1;
    size_t bytes = (size_t)(p->ne[0] * rows) * sizeof(float);
    if (write_tensor(j, p, v, bytes, perm ? (int)p->ne[0] : (int)rows, perm)) return LLMQ_ERR;
    record(j, p, bytes, 0.0);
    return LLMQ_OK;
}

/* The embedding or the output head: rows quantized with RTN in slices, so
 * only a slice of f32 is in memory beside the packed result. */
/* Quantizes and writes a whole tensor; keep (optional) receives the packed
 * bytes (caller frees) instead of their being freed. head: the method's
 * quantize_head (optional) quantizes it instead of rounding, in slices of up
 * to 1 GiB of f32 rows (each call factors its Hessian once). */
static int write_big(job *j, const char *name, const llmq_weight *w, unsigned char **keep, const llmq_layer_method *head)
{
    planned *p = find_planned(j, name);
    llmq_type t = p->plan.type;
    size_t row_bytes = llmq_row_size(t, w->cols), bytes = row_bytes * (size_t)w->rows;
    if (head && (!head->quantize_head || !llmq_type_get(t)->is_quantized)) head = NULL;
    int slice = 1024;
    if (head) {
        const int64_t most = ((int64_t)1 << 28) / w->cols;
        slice = most < 1024 ? 1024 : most > w->rows ? w->rows : (int)most;
    }
    unsigned char *packed = malloc(bytes);
    float *rows = malloc((size_t)slice * w->cols * sizeof *rows);
    double num = 0, den = 0;
    int rc = LLMQ_ERR;
    if (!packed || !rows) {
        llmq_error("quantize: out of memory for %s", name);
        goto done;
    }
    for (int r0 = 0; r0 < w->rows; r0 += slice) {
        int r1 = r0 + slice < w->rows ? r0 + slice : w->rows;
        if (source_rows(w, r0, r1, rows, name) ||
            (head ? head->quantize_head(head->state, j->src, rows, r0, r1 - r0, w->cols, t, p->plan.group_size,
                                        packed + (size_t)r0 * row_bytes)
                  : llmq_quantize_rows(t, rows, r1 - r0, w->cols, p->plan.group_size, j->opts->rtn_search, packed + (size_t)r0 * row_bytes)) ||
            llmq_quant_error_sums(t, rows, packed + (size_t)r0 * row_bytes, r1 - r0, w->cols, &num, &den))
            goto done;
    }
    if (write_tensor(j, p, packed, bytes, w->rows, NULL)) goto done;
    record(j, p, bytes, rel_from_sums(num, den));
    if (keep) *keep = packed, packed = NULL;
    rc = LLMQ_OK;
done:
    free(packed);
    free(rows);
    return rc;
}

/* ---------------------------------------------------------------- layers */

typedef struct {
    llmq_layer_f32 f;
    void *packed[LLMQ_LIN_COUNT];
    planned *plan[LLMQ_LIN_COUNT];
} layer_work;

static void layer_work_free(layer_work *lw)
{
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        free(lw->f.lin[k]);
        free(lw->f.bias[k]);
        free(lw->packed[k]);
    }
    for (size_t i = 0; i < N_LAYER_NORMS; i++) free(*norm_f32(&lw->f, i));
    memset(lw, 0, sizeof *lw);
}

static float *copy_vector(const llmq_weight *w)
{
    float *v = malloc((size_t)w->rows * w->cols * sizeof *v);
    if (v) llmq_type_get(w->type)->to_float(w->data, v, (int64_t)w->rows * w->cols);
    return v;
}

/* The layer's tensors in file order (attn_norm, the q/k norms, q, k, v, o,
 * the post-attention norm, ffn_norm, gate, up, down, the post-MLP norm; each
 * linear followed by its bias; layer_norms has the norms' places), as the
 * state stores them: q/k rows in Hugging Face order, before the permutation
 * on write. lin_at[k] is linear k's index in t. */
static int layer_tensors(job *j, int l, const layer_work *lw, const llmq_quant_target *targets, const double *rel,
                         llmq_qstate_tensor *t, int *lin_at)
{
    const llmq_layer *L = &j->src->layers[l];
    char name[LLMQ_GGUF_MAX_NAME + 16];
    int n = 0;
    for (int k = -1; k < LLMQ_LIN_COUNT; k++) {
        if (k >= 0) {
            lin_at[k] = n;
            t[n++] = (llmq_qstate_tensor){lw->plan[k]->name, targets[k].type, lw->packed[k],
                                          llmq_row_size(targets[k].type, L->lin[k].cols) * (size_t)L->lin[k].rows, rel ? rel[k] : 0};
            if (L->bias[k].data) {
                llmq_gguf_layer_tensor_name(name, sizeof name, l, llmq_gguf_linear_name(k), "bias");
                t[n++] = (llmq_qstate_tensor){find_planned(j, name)->name, LLMQ_TYPE_F32, lw->f.bias[k],
                                              (size_t)L->bias[k].cols * sizeof(float), 0};
            }
        }
        for (size_t i = 0; i < N_LAYER_NORMS; i++) {
            const llmq_weight *w = norm_of(L, i);
            if (layer_norms[i].after != k || !w->data) continue;
            llmq_gguf_layer_tensor_name(name, sizeof name, l, layer_norms[i].gguf, "weight");
            t[n++] = (llmq_qstate_tensor){find_planned(j, name)->name, LLMQ_TYPE_F32, *norm_f32(&lw->f, i),
                                          (size_t)w->rows * w->cols * sizeof(float), 0};
        }
    }
    return n;
}

/* Decoder layer l: quantized by the method, or (restore) read back from the
 * state an earlier run recorded; then handed to layer_done and written. */
static int run_layer(job *j, const llmq_layer_method *method, int l, bool restore, int32_t *perm_q, int32_t *perm_k)
{
    const llmq_model *src = j->src;
    const llmq_layer *L = &src->layers[l];
    layer_work lw;
    memset(&lw, 0, sizeof lw);
    llmq_quant_target targets[LLMQ_LIN_COUNT];
    double rel[LLMQ_LIN_COUNT];
    llmq_qstate_tensor st[N_LAYER_NORMS + 2 * LLMQ_LIN_COUNT];
    int lin_at[LLMQ_LIN_COUNT];
    char name[LLMQ_GGUF_MAX_NAME + 16];
    llmq_expert *q_experts = NULL;
    int rc = LLMQ_ERR;
    j->current_layer = l;
    stage(j, l, restore ? "restore" : "load");

    for (size_t i = 0; i < N_LAYER_NORMS; i++) {
        const llmq_weight *w = norm_of(L, i);
        float **dst = norm_f32(&lw.f, i);
        if (w->data && !(*dst = restore ? malloc((size_t)w->rows * w->cols * sizeof(float)) : copy_vector(w))) goto oom;
    }
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        const llmq_weight *w = &L->lin[k];
        llmq_gguf_layer_tensor_name(name, sizeof name, l, linear_file_name(j, k), "weight");
        lw.plan[k] = find_planned(j, name);
        const llmq_tensor_plan *pl = &lw.plan[k]->plan;
        targets[k] = (llmq_quant_target){pl->type, pl->group_size};
        if (L->bias[k].data &&
            !(lw.f.bias[k] = restore ? malloc((size_t)L->bias[k].cols * sizeof(float)) : copy_vector(&L->bias[k])))
            goto oom;
        if ((restore || llmq_type_get(pl->type)->is_quantized) &&
            !(lw.packed[k] = malloc(llmq_row_size(pl->type, w->cols) * (size_t)w->rows)))
            goto oom;
        if (restore) continue;
        if (!(lw.f.lin[k] = malloc((size_t)w->rows * w->cols * sizeof(float)))) goto oom;
        if (L->experts && k >= LLMQ_LIN_GATE) {
            /* every expert's matrix, stacked by rows */
            for (int e = 0; e < src->cfg.n_experts; e++) {
                const llmq_weight *x = &L->experts[e].w[k - LLMQ_LIN_GATE];
                if (source_rows(x, 0, x->rows, lw.f.lin[k] + (size_t)e * x->rows * x->cols, name)) goto done;
            }
        } else if (source_rows(w, 0, w->rows, lw.f.lin[k], name)) {
            goto done;
        }
    }
    if (restore) {
        int n = layer_tensors(j, l, &lw, targets, NULL, st, lin_at);
        if (!j->follower && llmq_qstate_read_layer(j->state, l, st, n)) goto done;
        /* the other ranks get rank 0's restored layer: they keep no state of their own */
        for (int i = 0; i < n && llmq_dist_size() > 1; i++)
            if (llmq_dist_bcast(st[i].data, st[i].bytes, 0) || llmq_dist_bcast(&st[i].rel_error, sizeof st[i].rel_error, 0)) goto done;
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) rel[k] = st[lin_at[k]].rel_error;
    } else {
        stage(j, l, "quantize");
        if (method->quantize_layer(method->state, src, l, &lw.f, targets, lw.packed)) goto done;
        /* Linears the policy keeps in a float type: plain conversions. */
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            if (lw.packed[k]) continue;
            const llmq_weight *w = &L->lin[k];
            if (!(lw.packed[k] = malloc(llmq_row_size(targets[k].type, w->cols) * (size_t)w->rows))) goto oom;
            if (llmq_quantize_rows(targets[k].type, lw.f.lin[k], w->rows, w->cols, 0, false, lw.packed[k])) goto done;
        }
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            double num = 0, den = 0;
            if (llmq_quant_error_sums(targets[k].type, lw.f.lin[k], lw.packed[k], L->lin[k].rows, L->lin[k].cols, &num, &den)) goto done;
            rel[k] = rel_from_sums(num, den);
        }
    }
    if (method->layer_done) {
        llmq_layer q = *L;
        for (size_t i = 0; i < N_LAYER_NORMS; i++)
            if (*norm_f32(&lw.f, i))
                *norm_of(&q, i) = (llmq_weight){*norm_f32(&lw.f, i), LLMQ_TYPE_F32, norm_of(L, i)->rows, norm_of(L, i)->cols};
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            q.lin[k] = (llmq_weight){lw.packed[k], targets[k].type, L->lin[k].rows, L->lin[k].cols};
            if (lw.f.bias[k]) q.bias[k] = (llmq_weight){lw.f.bias[k], LLMQ_TYPE_F32, 1, L->bias[k].cols};
        }
        if (L->experts) {
            /* the experts' views into the stacked packed matrices */
            const void *const data[3] = {lw.packed[LLMQ_LIN_GATE], lw.packed[LLMQ_LIN_UP], lw.packed[LLMQ_LIN_DOWN]};
            const llmq_type types[3] = {targets[LLMQ_LIN_GATE].type, targets[LLMQ_LIN_UP].type, targets[LLMQ_LIN_DOWN].type};
            if (!(q_experts = malloc((size_t)src->cfg.n_experts * sizeof *q_experts))) goto oom;
            for (int e = 0; e < src->cfg.n_experts; e++) q_experts[e] = llmq_expert_view(&src->cfg, data, types, e);
            q.experts = q_experts;
        }
        if (method->layer_done(method->state, src, l, &q)) goto done;
    }
    /* Write in file order (layer_tensors'). */
    stage(j, l, "write");
    for (int k = -1; k < LLMQ_LIN_COUNT; k++) {
        if (k >= 0) {
            const llmq_weight *w = &L->lin[k];
            const int32_t *perm = !j->permute ? NULL : k == LLMQ_LIN_Q ? perm_q : k == LLMQ_LIN_K ? perm_k : NULL;
            size_t bytes = llmq_row_size(targets[k].type, w->cols) * (size_t)w->rows;
            if (k == LLMQ_LIN_GATE && stacked_gate_up(j)) continue; /* written with up */
            if (k == LLMQ_LIN_UP && stacked_gate_up(j)) {
                /* Phi-3's ffn_up: gate's rows, then up's (same type: one planned tensor) */
                const size_t gate_bytes = llmq_row_size(targets[k].type, w->cols) * (size_t)L->lin[LLMQ_LIN_GATE].rows;
                unsigned char *both = malloc(gate_bytes + bytes);
                if (!both) goto oom;
                memcpy(both, lw.packed[LLMQ_LIN_GATE], gate_bytes);
                memcpy(both + gate_bytes, lw.packed[k], bytes);
                int wrc = write_tensor(j, lw.plan[k], both, gate_bytes + bytes, w->rows + L->lin[LLMQ_LIN_GATE].rows, NULL);
                free(both);
                if (wrc) goto done;
                record(j, lw.plan[k], gate_bytes + bytes, 0.5 * (rel[LLMQ_LIN_GATE] + rel[k]));
                continue;
            }
            if (write_tensor(j, lw.plan[k], lw.packed[k], bytes, w->rows, perm)) goto done;
            record(j, lw.plan[k], bytes, rel[k]);
            if (lw.f.bias[k]) {
                llmq_gguf_layer_tensor_name(name, sizeof name, l, llmq_gguf_linear_name(k), "bias");
                if (write_f32(j, name, lw.f.bias[k], perm)) goto done;
            }
        }
        for (size_t i = 0; i < N_LAYER_NORMS; i++) {
            if (layer_norms[i].after != k || !*norm_f32(&lw.f, i)) continue;
            llmq_gguf_layer_tensor_name(name, sizeof name, l, layer_norms[i].gguf, "weight");
            if (write_f32(j, name, *norm_f32(&lw.f, i), NULL)) goto done;
        }
    }
    if (!restore && j->state && !j->follower) {
        stage(j, l, "record");
        int n = layer_tensors(j, l, &lw, targets, rel, st, lin_at);
        if (llmq_qstate_write_layer(j->state, l, st, n)) goto done;
    }
    rc = LLMQ_OK;
    goto done;
oom:
    llmq_error("quantize: out of memory in layer %d", l);
done:
    free(q_experts);
    layer_work_free(&lw);
    return rc;
}

/* Reads layer l's recorded state through, checking it, keeping nothing. */
static int verify_layer(job *j, int l)
{
    layer_work lw;
    memset(&lw, 0, sizeof lw);
    llmq_quant_target targets[LLMQ_LIN_COUNT];
    llmq_qstate_tensor st[N_LAYER_NORMS + 2 * LLMQ_LIN_COUNT];
    int lin_at[LLMQ_LIN_COUNT];
    char name[LLMQ_GGUF_MAX_NAME + 16];
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        llmq_gguf_layer_tensor_name(name, sizeof name, l, linear_file_name(j, k), "weight");
        lw.plan[k] = find_planned(j, name);
        targets[k] = (llmq_quant_target){lw.plan[k]->plan.type, lw.plan[k]->plan.group_size};
    }
    int n = layer_tensors(j, l, &lw, targets, NULL, st, lin_at); /* no buffers: verify only */
    return llmq_qstate_read_layer(j->state, l, st, n);
}

/* The source tensors the state's fingerprint hashes: every weight the run reads. */
static llmq_qstate_source *state_sources(const job *j, int *n)
{
    const llmq_model *m = j->src;
    const int per_linear = m->cfg.n_experts > 0 ? m->cfg.n_experts : 2; /* experts, or Phi-3's gate beside up */
    llmq_qstate_source *t = malloc((size_t)j->n * per_linear * sizeof *t);
    if (!t) return NULL;
    int k = 0;
    for (int i = 0; i < j->n; i++) {
        const planned *p = &j->t[i];
        const llmq_weight *w = NULL;
        switch (p->desc.role) {
        case LLMQ_ROLE_EMBED: w = &m->embed; break;
        case LLMQ_ROLE_OUTPUT: w = &m->lm_head; break;
        case LLMQ_ROLE_LINEAR: {
            const llmq_layer *L = &m->layers[p->desc.layer];
            w = &L->lin[p->desc.linear];
            if (L->experts && p->desc.linear >= LLMQ_LIN_GATE) { /* every expert's matrix */
                for (int e = 0; e < m->cfg.n_experts; e++) {
                    const llmq_weight *x = &L->experts[e].w[p->desc.linear - LLMQ_LIN_GATE];
                    t[k++] = (llmq_qstate_source){p->name, x->data, llmq_row_size(x->type, x->cols) * (size_t)x->rows};
                }
                w = NULL;
            } else if (p->desc.linear == LLMQ_LIN_UP && stacked_gate_up(j)) {
                const llmq_weight *g = &L->lin[LLMQ_LIN_GATE];
                t[k++] = (llmq_qstate_source){p->name, g->data, llmq_row_size(g->type, g->cols) * (size_t)g->rows};
            }
            break;
        }
        case LLMQ_ROLE_BIAS: w = &m->layers[p->desc.layer].bias[p->desc.linear]; break;
        case LLMQ_ROLE_NORM:
            w = &m->final_norm;
            for (size_t n = 0; p->desc.layer >= 0 && n < N_LAYER_NORMS; n++) {
                char name[LLMQ_GGUF_MAX_NAME + 16];
                llmq_gguf_layer_tensor_name(name, sizeof name, p->desc.layer, layer_norms[n].gguf, "weight");
                if (!strcmp(name, p->name)) w = norm_of(&m->layers[p->desc.layer], n);
            }
            break;
        case LLMQ_ROLE_ROPE_FREQS: break; /* computed from the config */
        }
        if (!w) continue;
        t[k++] = (llmq_qstate_source){p->name, w->data, llmq_row_size(w->type, w->cols) * (size_t)w->rows};
    }
    *n = k;
    return t;
}

/* ---------------------------------------------------------------- driver */

static int add_metadata(job *j, const llmq_tokenizer *tok, const char *method_name)
{
    const llmq_quant_opts *o = j->opts;
    const llmq_config *c = &j->src->cfg;
    if (llmq_gguf_write_model_kv(j->w, c, o->model_name, o->policy.scheme.file_type)) return LLMQ_ERR;
    llmq_vocab v;
    if (llmq_tokenizer_export_vocab(tok, &v)) return LLMQ_ERR;
    int rc = llmq_gguf_write_vocab_kv(j->w, &v, c->vocab_size);
    llmq_vocab_free(&v);
    if (rc) return LLMQ_ERR;
    if (llmq_gguf_writer_add_str(j->w, "llmq.version", LLMQ_VERSION) ||
        llmq_gguf_writer_add_str(j->w, "llmq.method", method_name) ||
        llmq_gguf_writer_add_str(j->w, "llmq.type", o->policy.scheme.name) ||
        llmq_gguf_writer_add_u32(j->w, "llmq.group_size", (uint32_t)o->policy.group_size) ||
        (o->calib_sha256 && llmq_gguf_writer_add_str(j->w, "llmq.calib_sha256", o->calib_sha256)) ||
        (o->calib_sha256 && llmq_gguf_writer_add_u32(j->w, "llmq.calib_samples", (uint32_t)o->calib_samples)))
        return LLMQ_ERR;
    for (int i = 0; i < j->n; i++)
        if (llmq_gguf_writer_add_tensor(j->w, j->t[i].name, j->t[i].plan.type, j->t[i].n_dims, j->t[i].ne))
            return LLMQ_ERR;
    return LLMQ_OK;
}

int llmq_quantize_model(const llmq_model *src, const llmq_tokenizer *tok, const char *out_path,
                        const llmq_quant_opts *opts, llmq_quant_report *report)
{
    if (report) memset(report, 0, sizeof *report);
    const llmq_tensor_sink *sink = opts->sink;
    if (!tok && !sink) return llmq_error("%s: a tokenizer is required (llama.cpp needs tokenizer.ggml.* metadata)", src->path);
    if (sink && opts->state != LLMQ_STATE_NONE) return llmq_error("%s: resumable runs write GGUF files only", out_path);
    job j;
    memset(&j, 0, sizeof j);
    j.src = src;
    j.opts = opts;
    j.t0 = now();
    j.current_layer = -1;
    j.follower = llmq_dist_rank() != 0;
    if (llmq_dist_size() > 1 && sink) return llmq_error("%s: a run over several ranks writes GGUF files only", out_path);
    const llmq_config *c = &src->cfg;
    if (!(j.arch = llmq_gguf_arch(c))) return llmq_error_prefix("%s", src->path);
    /* Loaded models are in rotate_half order (the GGUF loader undoes the
     * converter's permutation); rows already permuted (rope_interleaved) go out as they are. */
    j.permute = !sink && !strcmp(j.arch, "llama") && !src->rope_interleaved;
    llmq_layer_method rtn = llmq_rtn_method(opts->rtn_search);
    const llmq_layer_method *method = opts->method ? opts->method : &rtn;
    int32_t *perm_q = malloc((size_t)c->n_heads * c->head_dim * sizeof *perm_q);
    int32_t *perm_k = malloc((size_t)c->n_kv_heads * c->head_dim * sizeof *perm_k);
    bool begun = false, sink_begun = false;
    int rc = LLMQ_ERR, done_layers = 0;
    if (!perm_q || !perm_k) {
        llmq_error("quantize: out of memory");
        goto done;
    }
    if (llmq_gguf_qk_row_map(c->n_heads * c->head_dim, c->n_heads, perm_q) ||
        llmq_gguf_qk_row_map(c->n_kv_heads * c->head_dim, c->n_kv_heads, perm_k) || plan_all(&j))
        goto done;
    if (!(j.rep.tensors = calloc((size_t)j.n, sizeof *j.rep.tensors))) {
        llmq_error("quantize: out of memory");
        goto done;
    }
    if (opts->state != LLMQ_STATE_NONE && !j.follower) {
        int n_src = 0;
        llmq_qstate_source *srcs = state_sources(&j, &n_src);
        if (!srcs) {
            llmq_error("quantize: out of memory");
            goto done;
        }
        int st = llmq_qstate_open(out_path, opts->state == LLMQ_STATE_RESUME, src, method->name, opts, srcs, n_src, &j.state,
                                  &done_layers);
        free(srcs);
        if (st) goto done;
        /* Every recorded layer is checked before any work, so a damaged state is refused at once. */
        for (int l = 0; l < done_layers; l++) {
            stage(&j, -1, "verify state");
            if (verify_layer(&j, l)) goto done;
        }
        if (done_layers > 0 && opts->notice) {
            char line[600];
            snprintf(line, sizeof line, "resuming after layer %d/%d (state in %s.partial)", done_layers, c->n_layers, out_path);
            opts->notice(opts->user, line);
        }
    }
    /* every rank resumes after the layers rank 0 holds */
    if (opts->state == LLMQ_STATE_RESUME && llmq_dist_bcast(&done_layers, sizeof done_layers, 0)) goto done;
    if (sink) {
        if (sink->begin && sink->begin(sink->state, src)) goto done;
        sink_begun = true;
    } else if (j.follower) {
        /* writes nothing */
    } else if (!(j.w = llmq_gguf_writer_new(out_path)) ||
               (j.state && llmq_gguf_writer_set_temp_path(j.w, llmq_qstate_gguf_tmp(j.state))) ||
               add_metadata(&j, tok, method->name) || llmq_gguf_writer_begin(j.w)) {
        goto done;
    }
    if (method->begin && method->begin(method->state, src)) goto done;
    begun = true;
    stage(&j, -1, "embed");
    {
        unsigned char *embed_q = NULL;
        if (write_big(&j, "token_embd.weight", &src->embed, method->embedded ? &embed_q : NULL, NULL)) goto done;
        if (method->embedded) {
            const llmq_weight e = {embed_q, find_planned(&j, "token_embd.weight")->plan.type, src->embed.rows, src->embed.cols};
            const int erc = method->embedded(method->state, src, &e);
            free(embed_q);
            if (erc) goto done;
        }
    }
    if (c->rope_scaling == LLMQ_ROPE_SCALING_LLAMA3 && !sink) {
        float *freqs = malloc((size_t)c->head_dim / 2 * sizeof *freqs);
        int bad = !freqs || llmq_gguf_rope_freqs(c, freqs) != LLMQ_OK || write_f32(&j, "rope_freqs.weight", freqs, NULL);
        free(freqs);
        if (bad) goto done;
    }
    if (c->rope_scaling == LLMQ_ROPE_SCALING_LONGROPE && !sink &&
        (write_f32(&j, "rope_factors_long.weight", c->rope_long, NULL) || write_f32(&j, "rope_factors_short.weight", c->rope_short, NULL)))
        goto done;
    for (int l = 0; l < c->n_layers; l++) {
        if (run_layer(&j, method, l, l < done_layers, perm_q, perm_k)) goto done;
        if (opts->stop_after_layers > 0 && l >= done_layers && l + 1 - done_layers == opts->stop_after_layers) {
            llmq_error("quantize: stopped after layer %d/%d (stop_after_layers)", l + 1, c->n_layers);
            goto done;
        }
    }
    j.current_layer = c->n_layers;
    stage(&j, c->n_layers, "head");
    if (write_f32(&j, "output_norm.weight", src->final_norm.data, NULL)) goto done;
    if (!c->tie_word_embeddings && write_big(&j, "output.weight", &src->lm_head, NULL, method)) goto done;
    if (sink) {
        rc = sink->finish(sink->state);
        sink_begun = false; /* finish cleans up after itself, also when it fails */
    } else if (!j.follower) {
        rc = llmq_gguf_writer_finish(j.w);
        j.w = NULL;
    } else {
        rc = LLMQ_OK;
    }
    if (rc == LLMQ_OK && j.state) {
        /* The output is complete: a failure to remove the state only leaves a directory behind. */
        if (llmq_qstate_finish(j.state) && opts->notice) opts->notice(opts->user, llmq_last_error());
        j.state = NULL;
    }
done:
    if (begun && method->end) method->end(method->state);
    if (sink_begun && sink->abort) sink->abort(sink->state);
    llmq_gguf_writer_abort(j.w);
    llmq_qstate_close(j.state);
    free(perm_q);
    free(perm_k);
    free(j.t);
    if (rc == LLMQ_OK && report) {
        *report = j.rep;
        size_t bytes = 0;
        for (int i = 0; i < report->n_tensors; i++) {
            bytes += report->tensors[i].bytes;
            report->n_elements += report->tensors[i].ne[0] * (report->tensors[i].n_dims > 1 ? report->tensors[i].ne[1] : 1);
        }
        report->bits_per_weight = report->n_elements ? 8.0 * (double)bytes / (double)report->n_elements : 0;
        FILE *fp = sink || j.follower ? NULL : fopen(out_path, "rb");
        if (fp) {
            fseek(fp, 0, SEEK_END);
            report->file_bytes = (size_t)ftell(fp);
            fclose(fp);
        }
        report->seconds = now() - j.t0;
        report->resumed_layers = done_layers;
    } else {
        free(j.rep.tensors);
    }
    return rc;
}

void llmq_quant_report_free(llmq_quant_report *r)
{
    if (!r) return;
    free(r->tensors);
    memset(r, 0, sizeof *r);
}
