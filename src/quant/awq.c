/* AWQ scale and clip search on one decoder layer (see llmq/awq.h). */
#include "llmq/awq.h"
#include "llmq/blas.h"
#include "llmq/calibrated.h"
#include "llmq/dist.h"
#include "llmq/error.h"
#include "llmq/kernels.h"
#include "llmq/rtn.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const llmq_awq_group_names[LLMQ_AWQ_GROUP_COUNT] = {
    "input_layernorm->q,k,v", "v_proj->o_proj", "post_attention_layernorm->gate,up", "up_proj->down_proj",
};

/* The linears that read each group's scaled input. */
static const llmq_linear group_readers[LLMQ_AWQ_GROUP_COUNT][3] = {
    {LLMQ_LIN_Q, LLMQ_LIN_K, LLMQ_LIN_V}, {LLMQ_LIN_O}, {LLMQ_LIN_GATE, LLMQ_LIN_UP}, {LLMQ_LIN_DOWN},
};
static const int group_n_readers[LLMQ_AWQ_GROUP_COUNT] = {3, 1, 2, 1};

/* Tokens per chunk when a sub-block runs over many samples at once. */
#define CHUNK_TOKENS 2048
/* Output rows per work item of the clip search. */
#define CLIP_ROW_BLOCK 32

void llmq_awq_defaults(llmq_awq_opts *o)
{
    *o = (llmq_awq_opts){
        .n_grid = 20, .duo = false, .clip = true, .clip_grid = 20, .max_shrink = 0.5f, .clip_tokens = 512,
        .search_tokens = 8192, .rtn_search = false,
    };
}

static float *wdata(const llmq_weight *w) { return (float *)w->data; }

static inline float clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }
static inline float absmaxf(float m, float v) { v = v < 0 ? -v : v; return v > m ? v : m; }

static bool is_float_type(llmq_type t) { return t == LLMQ_TYPE_F32 || t == LLMQ_TYPE_F16 || t == LLMQ_TYPE_BF16; }

/* ------------------------------------------------------------ fake quantization */

/* One row onto its grids; grids holds llmq_group_count(cols, G) entries. */
static int fake_quant_row(llmq_type t, int group_size, const llmq_rtn_opts *ro, const float *row, int cols,
                          llmq_grid *grids, float *out)
{
    if (llmq_rtn_grids(t, row, cols, group_size, grids, ro) != LLMQ_OK) return LLMQ_ERR;
    return llmq_snap_row(t, row, cols, group_size, grids, out);
}

int llmq_fake_quant(llmq_type t, int group_size, bool rtn_search, const float *w, int rows, int cols, float *out)
{
    size_t n = (size_t)rows * cols;
    if (t == LLMQ_TYPE_F32) {
        if (out != w) memmove(out, w, n * sizeof(float));
        return LLMQ_OK;
    }
    if (t == LLMQ_TYPE_F16 || t == LLMQ_TYPE_BF16) {
        for (size_t i = 0; i < n; i++)
            out[i] = t == LLMQ_TYPE_F16 ? llmq_f16_to_f32(llmq_f32_to_f16(w[i])) : llmq_bf16_to_f32(llmq_f32_to_bf16(w[i]));
        return LLMQ_OK;
    }
    group_size = llmq_group_resolve(t, group_size);
    if (llmq_group_check(t, cols, group_size) != LLMQ_OK) return LLMQ_ERR;
    int n_groups = llmq_group_count(cols, group_size);
    llmq_rtn_opts ro = {.search = rtn_search, .importance = NULL};
    int failed = 0;
    #pragma omp parallel
    {
        llmq_grid *grids = malloc((size_t)n_groups * sizeof *grids);
        if (!grids) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(static)
        for (int r = 0; r < rows; r++)
            if (grids && fake_quant_row(t, group_size, &ro, w + (size_t)r * cols, cols, grids, out + (size_t)r * cols)) {
                #pragma omp atomic write
                failed = 1;
            }
        free(grids);
    }
    return failed ? llmq_error("fake quantization to %s: out of memory for %d groups", llmq_type_get(t)->name, n_groups)
                  : LLMQ_OK;
}

/* ------------------------------------------------------------ layer copies */

float *llmq_layer_f32_copy(const llmq_model *m, int index, llmq_layer *out)
{
    if (index < 0 || index >= m->cfg.n_layers) {
        llmq_error("layer %d: out of range (the model has %d layers)", index, m->cfg.n_layers);
        return NULL;
    }
    const llmq_layer *src = &m->layers[index];
    const llmq_weight *views[3 + 2 * LLMQ_LIN_COUNT];
    llmq_weight *dsts[3 + 2 * LLMQ_LIN_COUNT];
    int n = 0;
    *out = *src;
    views[n] = &src->attn_norm, dsts[n++] = &out->attn_norm;
    views[n] = &src->ffn_norm, dsts[n++] = &out->ffn_norm;
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        views[n] = &src->lin[k], dsts[n++] = &out->lin[k];
        views[n] = &src->bias[k], dsts[n++] = &out->bias[k];
    }
    /* a mixture: the router, every expert stacked into lin[GATE..DOWN] (as the driver's f32 copies
     * hold them), and the experts as views of those, in the same allocation */
    const llmq_config *cfg = &m->cfg;
    const int E = src->experts ? cfg->n_experts : 0;
    if (E) views[n] = &src->router, dsts[n++] = &out->router;
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (views[i]->data) total += (size_t)views[i]->rows * views[i]->cols;
    const size_t stacked = E ? (size_t)3 * cfg->expert_ffn * cfg->hidden_size : 0, expert_floats = (sizeof(llmq_expert) + sizeof(float) - 1) / sizeof(float);
    total += (size_t)E * (stacked + expert_floats) + (E ? 4 : 0); /* + 16 bytes of slack to align the views */
    float *buf = malloc((total ? total : 1) * sizeof(float));
    if (!buf) {
        llmq_error("layer %d: out of memory for an F32 copy (%zu floats)", index, total);
        return NULL;
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const llmq_weight *w = views[i];
        if (!w->data) continue;
        const llmq_type_traits *tr = llmq_type_get(w->type);
        size_t count = (size_t)w->rows * w->cols;
        if (!tr || !tr->to_float || count % (size_t)tr->block_size) {
            free(buf);
            llmq_error("layer %d: cannot convert a weight of type %d to F32", index, (int)w->type);
            return NULL;
        }
        tr->to_float(w->data, buf + off, (int64_t)count);
        *dsts[i] = (llmq_weight){.data = buf + off, .type = LLMQ_TYPE_F32, .rows = w->rows, .cols = w->cols};
        off += count;
    }
    if (E) {
        const void *stack[3];
        const llmq_type f32[3] = {LLMQ_TYPE_F32, LLMQ_TYPE_F32, LLMQ_TYPE_F32};
        for (int j = 0; j < 3; j++) {
            llmq_weight *lin = &out->lin[LLMQ_LIN_GATE + j];
            stack[j] = buf + off;
            for (int e = 0; e < E; e++) {
                const llmq_weight *w = &src->experts[e].w[j];
                const llmq_type_traits *tr = llmq_type_get(w->type);
                const size_t count = (size_t)w->rows * w->cols;
                if (!tr || !tr->to_float || count % (size_t)tr->block_size) {
                    free(buf);
                    llmq_error("layer %d: cannot convert expert %d's weight of type %d to F32", index, e, (int)w->type);
                    return NULL;
                }
                tr->to_float(w->data, buf + off, (int64_t)count);
                off += count;
            }
            *lin = (llmq_weight){.data = stack[j], .type = LLMQ_TYPE_F32, .rows = src->lin[LLMQ_LIN_GATE + j].rows,
                                 .cols = src->lin[LLMQ_LIN_GATE + j].cols};
        }
        off = (off + 3) & ~(size_t)3;
        llmq_expert *experts = (llmq_expert *)(void *)(buf + off);
        for (int e = 0; e < E; e++) experts[e] = llmq_expert_view(cfg, stack, f32, e);
        out->experts = experts;
    }
    return buf;
}

/* ------------------------------------------------------------ shapes and checks */

static int check_weight(const llmq_weight *w, int index, const char *name, int rows, int cols)
{
    if (!w->data) return llmq_error("layer %d: AWQ: %s is missing", index, name);
    if (w->type != LLMQ_TYPE_F32)
        return llmq_error("layer %d: AWQ: %s must be an F32 copy (it is type %d)", index, name, (int)w->type);
    if (w->rows != rows || w->cols != cols)
        return llmq_error("layer %d: AWQ: %s is %d×%d, expected %d×%d", index, name, w->rows, w->cols, rows, cols);
    return LLMQ_OK;
}

static int check_finite(const float *x, size_t n, int index, const char *what)
{
    size_t bad = SIZE_MAX;
    #pragma omp parallel for schedule(static) reduction(min : bad)
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]) && i < bad) bad = i;
    if (bad != SIZE_MAX) return llmq_error("layer %d: AWQ: %s has a non-finite value (%g) at element %zu", index, what, (double)x[bad], bad);
    return LLMQ_OK;
}

static int check_shapes(const llmq_model *m, int index, const llmq_layer *L)
{
    const llmq_config *c = &m->cfg;
    int d = c->hidden_size, qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim, f = c->intermediate_size;
    int shape[LLMQ_LIN_COUNT][2] = {{qd, d}, {kvd, d}, {kvd, d}, {d, qd}, {f, d}, {f, d}, {d, f}};
    if (check_weight(&L->attn_norm, index, "input_layernorm", 1, d) || check_weight(&L->ffn_norm, index, "post_attention_layernorm", 1, d))
        return LLMQ_ERR;
    if (c->n_experts > 0) {
        /* a mixture of experts: the F32 router, the experts as views of the stacked F32 gate/up/down */
        const int E = c->n_experts, fe = c->expert_ffn;
        if (!L->experts || check_weight(&L->router, index, "router", E, d))
            return llmq_error("layer %d: AWQ: a mixture of experts needs the layer's F32 router and experts", index);
        shape[LLMQ_LIN_GATE][0] = shape[LLMQ_LIN_UP][0] = E * fe;
        shape[LLMQ_LIN_DOWN][0] = E * d, shape[LLMQ_LIN_DOWN][1] = fe;
        for (int e = 0; e < E; e++)
            for (int j = 0; j < 3; j++)
                if (L->experts[e].w[j].type != LLMQ_TYPE_F32 ||
                    (const float *)L->experts[e].w[j].data != wdata(&L->lin[LLMQ_LIN_GATE + j]) + (size_t)e * L->experts[e].w[j].rows * L->experts[e].w[j].cols)
                    return llmq_error("layer %d: AWQ: expert %d's %s is not an F32 view of the stacked %s", index, e,
                                      llmq_linear_names[LLMQ_LIN_GATE + j], llmq_linear_names[LLMQ_LIN_GATE + j]);
    }
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        if (check_weight(&L->lin[k], index, llmq_linear_names[k], shape[k][0], shape[k][1])) return LLMQ_ERR;
        if (L->bias[k].data && check_weight(&L->bias[k], index, llmq_linear_names[k], 1, shape[k][0])) return LLMQ_ERR;
    }
    return LLMQ_OK;
}

static int check_layer(const llmq_model *m, int index, const llmq_layer *L)
{
    int d = m->cfg.hidden_size;
    if (check_shapes(m, index, L)) return LLMQ_ERR;
    if (check_finite(wdata(&L->attn_norm), (size_t)d, index, "input_layernorm") ||
        check_finite(wdata(&L->ffn_norm), (size_t)d, index, "post_attention_layernorm"))
        return LLMQ_ERR;
    if (L->router.data && check_finite(wdata(&L->router), (size_t)L->router.rows * L->router.cols, index, "router")) return LLMQ_ERR;
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        if (check_finite(wdata(&L->lin[k]), (size_t)L->lin[k].rows * L->lin[k].cols, index, llmq_linear_names[k])) return LLMQ_ERR;
        if (L->bias[k].data && check_finite(wdata(&L->bias[k]), (size_t)L->bias[k].cols, index, llmq_linear_names[k]))
            return LLMQ_ERR;
    }
    return LLMQ_OK;
}

/* AutoAWQ's llama.py: v->o only when v_proj and o_proj have the same shape. */
static bool vo_allowed(const llmq_layer *L)
{
    return L->lin[LLMQ_LIN_V].rows == L->lin[LLMQ_LIN_O].rows && L->lin[LLMQ_LIN_V].cols == L->lin[LLMQ_LIN_O].cols;
}

/* ------------------------------------------------------------ folding */

static void fold_scales(llmq_layer *L, llmq_awq_group group, const float *s);

/* index only names the layer in messages. */
static int apply_scales(const llmq_model *m, int index, llmq_layer *L, llmq_awq_group group, const float *s)
{
    if (group < 0 || group >= LLMQ_AWQ_GROUP_COUNT) return llmq_error("layer %d: AWQ: unknown scaling group %d", index, (int)group);
    if (check_shapes(m, index, L) != LLMQ_OK) return LLMQ_ERR;
    if (group == LLMQ_AWQ_DOWN && L->experts)
        return llmq_error("layer %d: AWQ: a mixture's up->down scales are per expert (llmq_awq_layer sets them)", index);
    if (group == LLMQ_AWQ_VO && !vo_allowed(L))
        return llmq_error("layer %d: AWQ: v_proj (%d×%d) and o_proj (%d×%d) differ in shape: no v->o scaling", index, L->lin[LLMQ_LIN_V].rows,
                          L->lin[LLMQ_LIN_V].cols, L->lin[LLMQ_LIN_O].rows, L->lin[LLMQ_LIN_O].cols);
    int n = L->lin[group_readers[group][0]].cols;
    for (int c = 0; c < n; c++)
        if (!(s[c] > 0.0f) || !isfinite(s[c])) return llmq_error("layer %d: AWQ %s: scale %d is %g (must be finite and positive)", index,
                                                       llmq_awq_group_names[group], c, (double)s[c]);
    fold_scales(L, group, s);
    return LLMQ_OK;
}

/* 1/s into the group's producer, s into its readers (and a mixture's router,
 * which reads post_attention_layernorm's output beside gate and up). */
static void fold_scales(llmq_layer *L, llmq_awq_group group, const float *s)
{
    const int n = L->lin[group_readers[group][0]].cols;
    if (group == LLMQ_AWQ_GATE_UP && L->router.data) {
        float *w = wdata(&L->router);
        for (int r = 0; r < L->router.rows; r++)
            for (int c = 0; c < n; c++) w[(size_t)r * n + c] *= s[c];
    }
    /* The producer: 1/s on its output channels. */
    if (group == LLMQ_AWQ_QKV || group == LLMQ_AWQ_GATE_UP) {
        float *w = wdata(group == LLMQ_AWQ_QKV ? &L->attn_norm : &L->ffn_norm);
        for (int c = 0; c < n; c++) w[c] /= s[c];
    } else {
        llmq_linear p = group == LLMQ_AWQ_VO ? LLMQ_LIN_V : LLMQ_LIN_UP;
        float *w = wdata(&L->lin[p]);
        int cols = L->lin[p].cols;
        #pragma omp parallel for schedule(static)
        for (int r = 0; r < n; r++)
            for (int i = 0; i < cols; i++) w[(size_t)r * cols + i] /= s[r];
        if (L->bias[p].data) {
            float *b = wdata(&L->bias[p]);
            for (int r = 0; r < n; r++) b[r] /= s[r];
        }
    }
    /* The readers: s on their input columns. */
    for (int j = 0; j < group_n_readers[group]; j++) {
        llmq_weight *w = &L->lin[group_readers[group][j]];
        float *d = wdata(w);
        #pragma omp parallel for schedule(static)
        for (int r = 0; r < w->rows; r++)
            for (int c = 0; c < n; c++) d[(size_t)r * n + c] *= s[c];
    }
}

int llmq_awq_apply_scales(const llmq_model *m, llmq_layer *layer, llmq_awq_group group, const float *s)
{
    int index = -1; /* for messages: the layer's number when it is one of m's own */
    for (int i = 0; m->layers && i < m->cfg.n_layers; i++)
        if (layer == &m->layers[i]) index = i;
    return apply_scales(m, index, layer, group, s);
}

/* ------------------------------------------------------------ statistics */

/* What the searches need of one group's input over all calibration tokens,
 * gathered chunk by chunk as the forward produces it, so that no input wider
 * than the residual stream is ever held for every token (down_proj's is
 * intermediate_size wide: 2.9 GB at 65k tokens of Llama-2-7B). The sums are
 * the same bits however the windows are split among threads and ranks
 * (llmq/dist.h): each unit of windows is summed in token order, and the
 * units' sums are added exactly (llmq/xsum.h). */
typedef struct {
    int cols;
    size_t pos;       /* the run-wide index of the next token (clip tokens are every step-th) */
    size_t unit;      /* tokens per unit: its partial sums go into the exact ones at multiples of it */
    size_t in_unit;   /* tokens in the unit's partial sums so far */
    double *abs_sum;  /* the unit's Σ|x| per channel, or NULL */
    llmq_xsum abs_x;  /* ... and every unit's */
    float *H;         /* Σ xxᵀ (upper triangle, cols × cols; the unit's partial until stats_finish), or NULL */
    llmq_hsum h;
    float *clip;      /* the rows at the clip tokens (every step-th), zero where another rank's, or NULL */
    size_t step;
    int n_clip;
} input_stats;

/* Readies st for tokens from run-wide position pos on (a unit's first). */
static int stats_begin(input_stats *st, size_t pos, int seqlen)
{
    st->pos = pos;
    st->unit = (size_t)llmq_dist_unit_windows(seqlen) * seqlen;
    st->in_unit = 0;
    if (st->abs_sum && llmq_xsum_init(&st->abs_x, (size_t)st->cols)) return LLMQ_ERR;
    if (st->H && llmq_hsum_begin(&st->h, st->cols, st->H, false)) {
        llmq_xsum_free(&st->abs_x);
        return LLMQ_ERR;
    }
    return LLMQ_OK;
}

/* Idempotent: a finished or never-begun (zeroed) st holds nothing. */
static void stats_free(input_stats *st)
{
    llmq_xsum_free(&st->abs_x);
    llmq_hsum_free(&st->h);
}

/* Statistics gathered side by side from one pass, as a group: freed
 * together on any failure (each stats_finish has freed its own already). */
static void stats_free_all(input_stats *const *sts, int n)
{
    for (int i = 0; i < n; i++) stats_free(sts[i]);
}

static int stats_begin_all(input_stats *const *sts, int n, size_t pos, int seqlen)
{
    for (int i = 0; i < n; i++)
        if (stats_begin(sts[i], pos, seqlen)) {
            stats_free_all(sts, i);
            return LLMQ_ERR;
        }
    return LLMQ_OK;
}

/* The unit's partial sums into the exact ones. */
static int stats_unit_end(input_stats *st)
{
    if (!st->in_unit) return LLMQ_OK;
    st->in_unit = 0;
    if (st->abs_sum && llmq_xsum_add_f64(&st->abs_x, 0, st->abs_sum, (size_t)st->cols, "AWQ input statistics")) return LLMQ_ERR;
    return st->H ? llmq_hsum_unit_end(&st->h) : LLMQ_OK;
}

/* Adds n tokens (rows of x) that follow the ones already seen, never across
 * a unit's end. Each channel's Σ|x| is summed in double over the rows in
 * order, threads taking strips of channels, so the sums are the same bits
 * whatever the number of threads and chunks. */
static int stats_add(input_stats *st, const float *x, size_t n)
{
    enum { STRIP = 128 };
    const int cols = st->cols;
    if (st->abs_sum) {
        const int n_strips = (cols + STRIP - 1) / STRIP;
        #pragma omp parallel for schedule(static)
        for (int b = 0; b < n_strips; b++) {
            const int c0 = b * STRIP, w = cols - c0 < STRIP ? cols - c0 : STRIP;
            double acc[STRIP];
            for (int c = 0; c < w; c++) acc[c] = st->in_unit ? st->abs_sum[c0 + c] : 0.0;
            for (size_t t = 0; t < n; t++) {
                const float *row = x + t * cols + c0;
                for (int c = 0; c < w; c++) acc[c] += fabsf(row[c]);
            }
            for (int c = 0; c < w; c++) st->abs_sum[c0 + c] = acc[c];
        }
    }
    if (st->H && llmq_hsum_add(&st->h, x, (int)n)) return LLMQ_ERR;
    if (st->clip)
        for (size_t j = (st->pos + st->step - 1) / st->step; j < (size_t)st->n_clip && j * st->step < st->pos + n; j++)
            memcpy(st->clip + j * cols, x + (j * st->step - st->pos) * cols, (size_t)cols * sizeof(float));
    st->pos += n;
    st->in_unit += n;
    return st->pos % st->unit == 0 ? stats_unit_end(st) : LLMQ_OK;
}

/* Ends the sums (a collective: every rank, in the same order): mean |x| over
 * the run's total tokens into mean (when abs_sum), Σ xxᵀ into st->H, the clip
 * rows gathered from every rank. */
static int stats_finish(input_stats *st, size_t total, float *mean)
{
    int rc = stats_unit_end(st);
    if (rc == LLMQ_OK && st->abs_sum) {
        rc = llmq_xsum_reduce(&st->abs_x);
        if (rc == LLMQ_OK) {
            llmq_xsum_get_f64(&st->abs_x, 0, st->abs_sum, (size_t)st->cols, 1.0);
            for (int c = 0; c < st->cols; c++) mean[c] = (float)(st->abs_sum[c] / (double)total);
        }
    }
    if (rc == LLMQ_OK && st->H) rc = llmq_hsum_finish(&st->h, st->H, 1.0);
    if (rc == LLMQ_OK && st->clip) rc = llmq_dist_or(st->clip, (size_t)st->n_clip * st->cols * sizeof(float));
    stats_free(st);
    return rc;
}

/* The norm of src (this rank's N rows of d) into st, a unit at a time: rows
 * [0, n_first) also kept in first (the search tokens), the others through
 * buf (a unit's rows). */
static int norm_stats(input_stats *st, const float *src, const float *norm, size_t n_first, size_t N, int d, float eps, float *first,
                      float *buf)
{
    for (size_t t0 = 0; t0 < N; t0 += st->unit) {
        const size_t n = N - t0 < st->unit ? N - t0 : st->unit, kept = t0 >= n_first ? 0 : n_first - t0 < n ? n_first - t0 : n;
        if (kept) {
            llmq_rmsnorm(first + t0 * d, src + t0 * d, norm, (int)kept, d, eps);
            if (stats_add(st, first + t0 * d, kept)) return LLMQ_ERR;
        }
        if (n > kept) {
            llmq_rmsnorm(buf, src + (t0 + kept) * d, norm, (int)(n - kept), d, eps);
            if (stats_add(st, buf, n - kept)) return LLMQ_ERR;
        }
    }
    return LLMQ_OK;
}

/* AutoAWQ's w_mean: |w| relative to its weight group's max, averaged per
 * input channel over all rows of the group's readers. */
static int weight_mean(const llmq_layer *L, llmq_awq_group g, int group_size, float *mean)
{
    int cols = L->lin[group_readers[g][0]].cols;
    double *acc = calloc((size_t)cols, sizeof *acc);
    size_t rows = 0;
    if (!acc) return llmq_error("AWQ: out of memory for weight statistics");
    for (int j = 0; j < group_n_readers[g]; j++) {
        const llmq_weight *w = &L->lin[group_readers[g][j]];
        const float *d = w->data;
        for (int r = 0; r < w->rows; r++, rows++)
            for (int c0 = 0; c0 < cols; c0 += group_size) {
                int c1 = c0 + group_size < cols ? c0 + group_size : cols;
                float mx = 0;
                for (int c = c0; c < c1; c++) mx = llmq_fmaxf(mx, fabsf(d[(size_t)r * cols + c]));
                for (int c = c0; c < c1; c++) acc[c] += fabsf(d[(size_t)r * cols + c]) / (mx + 1e-6f);
            }
    }
    for (int c = 0; c < cols; c++) mean[c] = (float)(acc[c] / (double)(rows ? rows : 1));
    free(acc);
    return LLMQ_OK;
}

/* s = x̄^r (or x̄^r / (w̄^(1-r) + 1e-4)), at least 1e-4, divided by sqrt(max·min). */
static void make_scales(const float *x_mean, const float *w_mean, double r, int n, float *s)
{
    double mx = 0, mn = DBL_MAX;
    for (int c = 0; c < n; c++) {
        double v = pow((double)x_mean[c], r);
        if (w_mean) v /= pow((double)w_mean[c], 1.0 - r) + 1e-4;
        if (!(v >= 1e-4)) v = 1e-4;
        s[c] = (float)v;
        mx = fmax(mx, v);
        mn = fmin(mn, v);
    }
    double norm = sqrt(mx * mn);
    for (int c = 0; c < n; c++) {
        float v = (float)(s[c] / norm);
        s[c] = isfinite(v) && v > 0 ? v : 1.0f;
    }
}

/* ------------------------------------------------------------ the inspected sub-blocks */

typedef struct {
    const llmq_model *m;
    int index, seqlen;
    int first, n_samples; /* this rank's windows: [first, first + n_samples) of the run's (llmq/dist.h) */
    int search_samples;   /* the run's windows the block-output ratio search runs on: [0, search_samples) */
    int search_local;     /* ... of them this rank's (its first ones) */
    size_t n_tokens;      /* the run's tokens (every rank's) */
    size_t n_local;       /* this rank's */
    llmq_type types[LLMQ_LIN_COUNT];
    int group_size[LLMQ_LIN_COUNT]; /* resolved per type */
    const llmq_awq_opts *opts;
} awq_ctx;

/* Copies one linear's input (when it is `which`) to dst: a hook for the forward functions. */
typedef struct {
    llmq_linear which;
    float *dst;
} capture;

static void capture_hook(void *user, int layer, llmq_linear which, const float *x, int n_tokens, int in)
{
    (void)layer;
    capture *c = user;
    if (which == c->which && c->dst) memcpy(c->dst, x, (size_t)n_tokens * in * sizeof(float));
}

/* Samples per chunk: whole sequences (attention is causal per sample), at
 * least one, about CHUNK_TOKENS tokens otherwise. */
static int chunk_samples(const awq_ctx *c, llmq_awq_group g)
{
    /* a unit of windows (llmq/dist.h): chunks never straddle two ranks' shares */
    return g == LLMQ_AWQ_QKV ? 1 : llmq_dist_unit_windows(c->seqlen);
}

/* The group's inspected output for tokens [t0, t0+n) of `in`. */
static int inspect_chunk(const awq_ctx *c, llmq_awq_group g, const llmq_layer *L, const float *in, size_t t0, int n,
                         float *out)
{
    const llmq_weight *w;
    switch (g) {
    case LLMQ_AWQ_QKV:
        return llmq_attention_forward(c->m, L, c->index, in + t0 * c->m->cfg.hidden_size, n, out, NULL, NULL);
    case LLMQ_AWQ_GATE_UP:
        return llmq_mlp_forward(c->m, L, c->index, in + t0 * c->m->cfg.hidden_size, n, out, NULL, NULL);
    default: /* the single reader; its bias cancels in every difference */
        w = &L->lin[group_readers[g][0]];
        return llmq_matmul(out, in + t0 * w->cols, n, w->data, LLMQ_TYPE_F32, w->cols, w->rows);
    }
}

/* Σ (a − b)² (squares) or Σ a·b over n values in a fixed order — blocks of a
 * fixed size summed in parallel, then added in block order — so that the
 * losses the ratio search compares are the same bits whatever the number of
 * threads (an OpenMP reduction adds its per-thread partial sums in an order
 * that depends on the team, and a near tie could then pick another ratio). */
static double fixed_order_sum(const float *a, const float *b, size_t n, bool squares)
{
    enum { BLOCK = 4096, BATCH = 256 };
    double total = 0;
    for (size_t b0 = 0; b0 < n; b0 += (size_t)BLOCK * BATCH) {
        const size_t len = n - b0 < (size_t)BLOCK * BATCH ? n - b0 : (size_t)BLOCK * BATCH;
        const int nb = (int)((len + BLOCK - 1) / BLOCK);
        double part[BATCH];
        #pragma omp parallel for schedule(static)
        for (int k = 0; k < nb; k++) {
            const size_t i0 = b0 + (size_t)k * BLOCK, i1 = i0 + BLOCK < b0 + len ? i0 + BLOCK : b0 + len;
            double sum = 0;
            if (squares)
                for (size_t i = i0; i < i1; i++) {
                    double e = (double)a[i] - b[i];
                    sum += e * e;
                }
            else
                for (size_t i = i0; i < i1; i++) sum += (double)a[i] * b[i];
            part[k] = sum;
        }
        for (int k = 0; k < nb; k++) total += part[k];
    }
    return total;
}

/* Runs the inspected sub-block over this rank's first n_samples samples:
 * into out (when non-NULL), and the sum of squared differences to ref into
 * *sse (when ref is non-NULL): every rank's, an exact sum of the chunks'
 * (a collective). */
static int inspect_all(const awq_ctx *c, llmq_awq_group g, const llmq_layer *L, const float *in, const float *ref,
                       int n_samples, float *out, double *sse)
{
    int d = c->m->cfg.hidden_size, per = chunk_samples(c, g);
    float *buf = out ? NULL : malloc((size_t)per * c->seqlen * d * sizeof(float));
    if (!out && !buf) return llmq_error("layer %d: AWQ: out of memory for a chunk of outputs", c->index);
    llmq_xsum total = {0};
    int rc = ref ? llmq_xsum_init(&total, 1) : LLMQ_OK;
    for (int s0 = 0; s0 < n_samples && rc == LLMQ_OK; s0 += per) {
        int ns = s0 + per <= n_samples ? per : n_samples - s0;
        size_t t0 = (size_t)s0 * c->seqlen, n = (size_t)ns * c->seqlen;
        float *o = out ? out + t0 * d : buf;
        if (g == LLMQ_AWQ_QKV) {
            for (int s = 0; s < ns && rc == LLMQ_OK; s++)
                rc = inspect_chunk(c, g, L, in, t0 + (size_t)s * c->seqlen, c->seqlen, o + (size_t)s * c->seqlen * d);
        } else {
            rc = inspect_chunk(c, g, L, in, t0, (int)n, o);
        }
        if (rc == LLMQ_OK && ref) {
            const double part = fixed_order_sum(o, ref + t0 * d, n * d, true);
            rc = llmq_xsum_add_f64(&total, 0, &part, 1, "AWQ search loss");
        }
    }
    free(buf);
    if (rc == LLMQ_OK && ref) rc = llmq_xsum_reduce(&total);
    if (rc == LLMQ_OK && sse) llmq_xsum_get_f64(&total, 0, sse, 1, 1.0);
    llmq_xsum_free(&total);
    return rc;
}

/* ------------------------------------------------------------ the scale search */

/* out = Q(W·diag(s))·diag(s)⁻¹ for linear k (one parallel region: W is
 * rescaled, rounded and unscaled row by row). */
static int scaled_fake_quant(const awq_ctx *c, llmq_linear k, const llmq_weight *w, const float *s, float *out)
{
    llmq_type t = c->types[k];
    int rows = w->rows, cols = w->cols, G = c->group_size[k];
    const float *src = w->data;
    if (is_float_type(t)) {
        for (size_t i = 0; i < (size_t)rows * cols; i++) out[i] = src[i];
        return llmq_fake_quant(t, 0, false, out, rows, cols, out);
    }
    llmq_rtn_opts ro = {.search = c->opts->rtn_search, .importance = NULL};
    int n_groups = llmq_group_count(cols, G), failed = 0;
    #pragma omp parallel
    {
        llmq_grid *grids = malloc((size_t)n_groups * sizeof *grids);
        #pragma omp for schedule(static)
        for (int r = 0; r < rows; r++) {
            float *o = out + (size_t)r * cols;
            for (int i = 0; i < cols; i++) o[i] = src[(size_t)r * cols + i] * s[i];
            if (!grids || fake_quant_row(t, G, &ro, o, cols, grids, o)) {
                #pragma omp atomic write
                failed = 1;
                continue;
            }
            for (int i = 0; i < cols; i++) o[i] /= s[i];
        }
        free(grids);
    }
    return failed ? llmq_error("layer %d: AWQ: fake quantization of %s failed (out of memory)", c->index, llmq_linear_names[k])
                  : LLMQ_OK;
}

/* A group read by one linear (v→o, up→down) is judged on that linear's output
 * alone: ‖(Q(W·diag s)·diag(s)⁻¹ − W)·x‖² summed over the tokens is
 * tr(Δ·H·Δᵀ) with H = Σ xxᵀ, so it is computed once from H (cols² per token)
 * and then per ratio in rows·cols² instead of a product over every token
 * (rows·cols per token): for down_proj at 65k calibration tokens, 1 instead of
 * 6 TFLOP per ratio. The same loss as the product's, without its cancellation. */
static bool judged_by_hessian(llmq_awq_group g) { return g == LLMQ_AWQ_VO || g == LLMQ_AWQ_DOWN; }

/* Chooses group g's scales: x_mean is mean |x| of the group's input per channel
 * over every calibration token; a judged_by_hessian group is judged on H
 * (Σ xxᵀ over those tokens, upper triangle), the others on `in` (their input
 * at the search samples' tokens) against ref (the inspected output of L on
 * in). best_s receives them. */
static int search_scales(const awq_ctx *c, llmq_awq_group g, const llmq_layer *L, const float *x_mean, const float *H,
                         const float *in, const float *ref, float *best_s, llmq_awq_stats *stats)
{
    int nr = group_n_readers[g], cols = L->lin[group_readers[g][0]].cols, d = c->m->cfg.hidden_size;
    float *w_mean = c->opts->duo ? malloc((size_t)cols * sizeof(float)) : NULL;
    float *s = malloc((size_t)cols * sizeof(float));
    float *tmp[3] = {NULL, NULL, NULL};
    double *losses = NULL; /* per ratio index, NaN until evaluated */
    float *dh = NULL; /* judged_by_hessian: Δ·H */
    llmq_expert *experts = NULL;
    int rc = LLMQ_ERR;
    llmq_layer Lq = *L;
    if (judged_by_hessian(g) != (H != NULL))
        return llmq_error("layer %d: AWQ %s: internal error (Hessian %s)", c->index, llmq_awq_group_names[g], H ? "given" : "missing");
    if (!s || (c->opts->duo && !w_mean)) goto oom;
    for (int j = 0; j < nr; j++) {
        const llmq_weight *w = &L->lin[group_readers[g][j]];
        if (!(tmp[j] = malloc((size_t)w->rows * w->cols * sizeof(float)))) goto oom;
        Lq.lin[group_readers[g][j]].data = tmp[j];
    }
    const llmq_weight *reader = &L->lin[group_readers[g][0]];
    if (H && !(dh = malloc((size_t)reader->rows * cols * sizeof(float)))) goto oom;
    if (L->experts && g == LLMQ_AWQ_GATE_UP) {
        /* the mixture runs its experts: views of the stacked copies being tried */
        const llmq_config *cfg = &c->m->cfg;
        const void *const data[3] = {tmp[0], tmp[1], L->lin[LLMQ_LIN_DOWN].data};
        const llmq_type f32[3] = {LLMQ_TYPE_F32, LLMQ_TYPE_F32, LLMQ_TYPE_F32};
        if (!(experts = malloc((size_t)cfg->n_experts * sizeof *experts))) goto oom;
        for (int e = 0; e < cfg->n_experts; e++) experts[e] = llmq_expert_view(cfg, data, f32, e);
        Lq.experts = experts;
    }
    if (w_mean && weight_mean(L, g, c->group_size[group_readers[g][0]], w_mean)) goto done;

    const int n_grid = c->opts->n_grid;
    if (!(losses = malloc((size_t)n_grid * sizeof *losses))) goto oom;
    for (int i = 0; i < n_grid; i++) losses[i] = NAN;
    /* Ratio indices to evaluate: all of them, or every `step`-th one and then
     * the best one's neighbours at step/2, step/4, ..., 1. */
    int step = 1;
    if (c->opts->coarse)
        while (step * 8 <= n_grid) step *= 2;
    int best_i = -1;
    for (int span = step, pass = 0; span >= 1; span /= 2, pass++) {
        const int center = best_i;
        for (int i = pass == 0 ? 0 : center - span; i < n_grid && (pass == 0 || i <= center + span); i += pass == 0 ? span : 2 * span) {
            if (i < 0 || !isnan(losses[i])) continue;
            make_scales(x_mean, w_mean, (double)i / n_grid, cols, s);
            /* Q(W·diag(s))·diag(s)⁻¹ on the unscaled input: the scaled layer's output. */
            for (int j = 0; j < nr; j++) {
                llmq_linear k = group_readers[g][j];
                if (scaled_fake_quant(c, k, &L->lin[k], s, tmp[j])) goto done;
            }
            double sse;
            if (H) {
                const size_t n_w = (size_t)reader->rows * cols;
                const float *w0 = reader->data;
                #pragma omp parallel for simd schedule(static)
                for (size_t e = 0; e < n_w; e++) tmp[0][e] -= w0[e];
                llmq_ssymm(CblasRight, CblasUpper, reader->rows, cols, 1.0f, H, cols, tmp[0], cols, 0.0f, dh, cols);
                sse = fixed_order_sum(tmp[0], dh, n_w, false);
            } else if (inspect_all(c, g, &Lq, in, ref, c->search_local, NULL, &sse)) {
                goto done;
            }
            const size_t judged = H ? c->n_tokens : (size_t)c->search_samples * c->seqlen;
            losses[i] = sse / ((double)judged * d);
            if (!isnan(losses[i]) && (best_i < 0 || losses[i] < losses[best_i] || (losses[i] == losses[best_i] && i < best_i))) best_i = i;
        }
        if (best_i < 0) break;
    }
    const double best = best_i >= 0 ? losses[best_i] : INFINITY, loss0 = losses[0];
    const float best_r = best_i >= 0 ? (float)((double)best_i / n_grid) : 0.0f;
    if (best_i >= 0) make_scales(x_mean, w_mean, (double)best_i / n_grid, cols, best_s);
    if (!isfinite(best)) {
        llmq_error("layer %d: AWQ %s: the output error is not finite for any ratio", c->index, llmq_awq_group_names[g]);
        goto done;
    }
    if (stats) {
        stats->searched[g] = true;
        stats->ratio[g] = best_r;
        stats->loss_rtn[g] = loss0;
        stats->loss_best[g] = best;
    }
    rc = LLMQ_OK;
    goto done;
oom:
    llmq_error("layer %d: AWQ %s: out of memory", c->index, llmq_awq_group_names[g]);
done:
    for (int j = 0; j < 3; j++) free(tmp[j]);
    free(w_mean); free(s); free(losses); free(dh); free(experts);
    return rc;
}

/* ------------------------------------------------------------ the clip search */

/* Xs[n_clip × cols]: the linear's input at the sampled tokens. Clamps w in
 * place per (row, weight group) to the shrink that minimises the error of the
 * group's partial outputs (auto_clip.py), keeping a row unclipped when its
 * whole-output error on Xs would grow. */
static int search_clip(const awq_ctx *c, llmq_linear k, llmq_weight *lw, const float *Xs, int n_clip, llmq_awq_stats *stats)
{
    const llmq_type t = c->types[k];
    const int G = c->group_size[k], rows = lw->rows, cols = lw->cols, n_groups = llmq_group_count(cols, G);
    const int grid = c->opts->clip_grid;
    int n_shrink = (int)(c->opts->max_shrink * (float)grid);
    if (n_shrink < 1) n_shrink = 1;
    float *W = wdata(lw);
    llmq_rtn_opts ro = {.search = c->opts->rtn_search, .importance = NULL};
    double err_before = 0, err_after = 0, ratio_sum = 0;
    int failed = 0;
    /* A weight group's partial-output error on the clip tokens is a quadratic
     * form in its weights' error δ: ‖Xs_g·δ‖² = δᵀ·(Xs_gᵀXs_g)·δ. The group's
     * Gram matrix, once, makes each candidate cost len² instead of
     * n_clip·len (and no difference of two large partial outputs) when the
     * group is shorter than the clip tokens; otherwise Xs_g·δ is summed directly. */
    const bool use_gram = G < n_clip; /* else ‖X_g·δ‖² straight from the tokens is the cheaper one */
    float *gram = use_gram ? malloc((size_t)n_groups * G * G * sizeof(float)) : NULL;
    if (use_gram && !gram) return llmq_error("layer %d: AWQ clip search of %s: out of memory", c->index, llmq_linear_names[k]);
    #pragma omp parallel for schedule(dynamic, 1) if (use_gram)
    for (int g = 0; g < (use_gram ? n_groups : 0); g++) {
        const int c0 = g * G, len = c0 + G < cols ? G : cols - c0;
        llmq_sgemm(CblasTrans, CblasNoTrans, len, len, n_clip, 1.0f, Xs + c0, cols, Xs + c0, cols, 0.0f,
                    gram + (size_t)g * G * G, len);
    }

    #pragma omp parallel reduction(+ : err_before, err_after, ratio_sum)
    {
        const int RB = CLIP_ROW_BLOCK;
        float *pcur = malloc((size_t)n_clip * RB * sizeof(float));
        float *wc = malloc((size_t)RB * cols * sizeof(float));
        float *wq = malloc((size_t)RB * cols * sizeof(float));
        float *delta = malloc((size_t)G * sizeof(float));
        float *omax = malloc((size_t)RB * n_groups * sizeof(float));
        double *best_err = malloc((size_t)RB * n_groups * sizeof(double));
        int *best_i = malloc((size_t)RB * n_groups * sizeof(int));
        double *e_none = malloc((size_t)RB * sizeof(double));
        llmq_grid *grids = malloc((size_t)n_groups * sizeof *grids);
        bool ok = pcur && wc && wq && delta && omax && best_err && best_i && e_none && grids;
        if (!ok) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(dynamic, 1)
        for (int r0 = 0; r0 < rows; r0 += RB) {
            if (!ok) continue;
            int nb = r0 + RB <= rows ? RB : rows - r0;
            const float *w0 = W + (size_t)r0 * cols;
            for (int r = 0; r < nb; r++)
                for (int g = 0; g < n_groups; g++) {
                    int c0 = g * G, c1 = c0 + G < cols ? c0 + G : cols;
                    float mx = 0;
                    for (int i = c0; i < c1; i++) mx = absmaxf(mx, w0[(size_t)r * cols + i]);
                    omax[r * n_groups + g] = mx;
                    best_err[r * n_groups + g] = INFINITY;
                    best_i[r * n_groups + g] = 0;
                }
            for (int is = 0; is < n_shrink && ok; is++) {
                float keep = 1.0f - (float)is / (float)grid;
                for (int r = 0; r < nb; r++) {
                    for (int g = 0; g < n_groups; g++) {
                        int c0 = g * G, c1 = c0 + G < cols ? c0 + G : cols;
                        float mx = omax[r * n_groups + g] * keep;
                        for (int i = c0; i < c1; i++) wc[(size_t)r * cols + i] = clampf(w0[(size_t)r * cols + i], -mx, mx);
                    }
                    if (fake_quant_row(t, G, &ro, wc + (size_t)r * cols, cols, grids, wq + (size_t)r * cols)) {
                        ok = false;
                        break;
                    }
                    for (int g = 0; g < n_groups; g++) {
                        const int c0 = g * G, len = c0 + G < cols ? G : cols - c0;
                        const float *gm = use_gram ? gram + (size_t)g * G * G : NULL;
                        for (int i = 0; i < len; i++) delta[i] = wq[(size_t)r * cols + c0 + i] - w0[(size_t)r * cols + c0 + i];
                        double e = 0;
                        if (use_gram) {
                            for (int i = 0; i < len; i++) {
                                float acc = 0;
                                for (int j2 = 0; j2 < len; j2++) acc += gm[(size_t)i * len + j2] * delta[j2];
                                e += (double)delta[i] * acc;
                            }
                        } else {
                            for (int tk = 0; tk < n_clip; tk++) {
                                const float *x = Xs + (size_t)tk * cols + c0;
                                float acc = 0;
                                for (int i = 0; i < len; i++) acc += x[i] * delta[i];
                                e += (double)acc * acc;
                            }
                        }
                        if (e < best_err[r * n_groups + g]) {
                            best_err[r * n_groups + g] = e;
                            best_i[r * n_groups + g] = is;
                        }
                    }
                }
                if (is == 0 && ok) {
                    /* The whole-row output error without clipping: Xs·(Q(W) − W)ᵀ. */
                    for (size_t i = 0; i < (size_t)nb * cols; i++) wq[i] -= w0[i];
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n_clip, nb, cols, 1.0f, Xs, cols, wq, cols, 0.0f, pcur, RB);
                    for (int r = 0; r < nb; r++) {
                        double e = 0;
                        for (int tk = 0; tk < n_clip; tk++) e += (double)pcur[(size_t)tk * RB + r] * pcur[(size_t)tk * RB + r];
                        e_none[r] = e;
                    }
                }
            }
            if (!ok) {
                #pragma omp atomic write
                failed = 1;
                continue;
            }
            /* The chosen clipping, row by row, against no clipping. */
            for (int r = 0; r < nb; r++) {
                for (int g = 0; g < n_groups; g++) {
                    int c0 = g * G, c1 = c0 + G < cols ? c0 + G : cols;
                    float mx = omax[r * n_groups + g] * (1.0f - (float)best_i[r * n_groups + g] / (float)grid);
                    for (int i = c0; i < c1; i++) wc[(size_t)r * cols + i] = clampf(w0[(size_t)r * cols + i], -mx, mx);
                }
                if (fake_quant_row(t, G, &ro, wc + (size_t)r * cols, cols, grids, wq + (size_t)r * cols)) ok = false;
                for (int i = 0; i < cols; i++) wq[(size_t)r * cols + i] -= w0[(size_t)r * cols + i];
            }
            if (!ok) {
                #pragma omp atomic write
                failed = 1;
                continue;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n_clip, nb, cols, 1.0f, Xs, cols, wq, cols, 0.0f, pcur, RB);
            for (int r = 0; r < nb; r++) {
                double e = 0;
                for (int tk = 0; tk < n_clip; tk++) e += (double)pcur[(size_t)tk * RB + r] * pcur[(size_t)tk * RB + r];
                err_before += e_none[r];
                if (e <= e_none[r]) {
                    err_after += e;
                    memcpy(W + (size_t)(r0 + r) * cols, wc + (size_t)r * cols, (size_t)cols * sizeof(float));
                    for (int g = 0; g < n_groups; g++) ratio_sum += 1.0 - (double)best_i[r * n_groups + g] / grid;
                } else {
                    err_after += e_none[r];
                    ratio_sum += n_groups;
                }
            }
        }
        free(pcur); free(wc); free(wq); free(delta); free(omax); free(best_err); free(best_i); free(e_none); free(grids);
    }
    free(gram);
    if (failed) return llmq_error("layer %d: AWQ clip search of %s: out of memory", c->index, llmq_linear_names[k]);
    if (stats) {
        stats->clipped[k] = true;
        stats->clip_ratio[k] = (float)(ratio_sum / ((double)rows * n_groups));
        stats->clip_mse_before[k] = err_before / ((double)rows * n_clip);
        stats->clip_mse_after[k] = err_after / ((double)rows * n_clip);
    }
    return LLMQ_OK;
}

/* ------------------------------------------------------------ the layer */

/* The normed inputs (post_attention_layernorm of h) of n routing choices
 * (llmq_moe_group's order: token = choice / used) into xg[n × d]. */
static void routed_rows(const awq_ctx *c, const llmq_layer *L, const float *h, const int32_t *choice, size_t n, float *xg)
{
    const int d = c->m->cfg.hidden_size, used = c->m->cfg.n_experts_used;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) llmq_rmsnorm(xg + i * d, h + (size_t)(choice[i] / used) * d, L->ffn_norm.data, 1, d, c->m->cfg.rms_norm_eps);
}

/* A mixture's experts, after gate,up (one set of scales for every expert,
 * folded into post_attention_layernorm and the router, judged on the routed
 * mixture's output): every token routed once; then each expert that the
 * calibration reaches with at least LLMQ_MOE_MIN_TOKENS tokens gets
 * up_proj->down_proj scales of its own, judged on its down_proj's output as
 * the mixture weights it (H = Σ w_t² a_t a_tᵀ over its tokens, w_t the
 * router's weight of the expert for token t; x̄ over the same tokens,
 * unweighted, as AutoAWQ's per-expert input features), and its gate, up and
 * down are clipped on its own tokens. The others stay as they are (GPTQ
 * rounds them too). Per-group and per-linear statistics: losses summed over
 * the experts, ratios averaged. */
static int awq_experts(const awq_ctx *c, llmq_layer *L, const float *h, float *H, double *abs_sum, float *x_mean, float *s,
                       llmq_awq_stats *stats)
{
    const llmq_config *cfg = &c->m->cfg;
    const int d = cfg->hidden_size, E = cfg->n_experts, K = cfg->n_experts_used, fe = cfg->expert_ffn;
    const size_t N = c->n_local, chunk = CHUNK_TOKENS; /* one process: the run's tokens */
    const int max_clip = c->opts->clip_tokens;
    int32_t *idx = malloc(N * K * sizeof *idx), *order = malloc(N * K * sizeof *order), *pick = malloc((size_t)max_clip * sizeof *pick);
    size_t *start = malloc((size_t)(E + 1) * sizeof *start);
    float *wts = malloc(N * K * sizeof *wts), *xg = malloc(chunk * d * sizeof *xg), *act = malloc(chunk * fe * sizeof *act);
    double ratio_sum = 0, clip_ratio_sum[3] = {0};
    int n_scaled = 0, n_clipped[3] = {0}, rc = LLMQ_ERR;
    if (!idx || !order || !pick || !start || !wts || !xg || !act) {
        llmq_error("layer %d: AWQ: out of memory for the routing of %zu tokens", c->index, N);
        goto done;
    }
    for (size_t t0 = 0; t0 < N; t0 += chunk) {
        const size_t n = N - t0 < chunk ? N - t0 : chunk;
        llmq_rmsnorm(xg, h + t0 * d, L->ffn_norm.data, (int)n, d, cfg->rms_norm_eps);
        if (llmq_moe_route(c->m, L, xg, (int)n, idx + t0 * K, wts + t0 * K)) goto done;
    }
    llmq_moe_group(idx, N, K, E, start, order);
    for (int e = 0; e < E; e++) {
        const int32_t *tok = order + start[e];
        const size_t cnt = start[e + 1] - start[e];
        if (cnt < LLMQ_MOE_MIN_TOKENS) continue;
        llmq_expert *x = &L->experts[e];
        /* up_e -> down_e */
        input_stats st_abs = {.cols = fe, .abs_sum = abs_sum}, st_h = {.cols = fe, .H = H};
        input_stats *const pair[2] = {&st_abs, &st_h};
        if (stats_begin_all(pair, 2, 0, c->seqlen)) goto done;
        /* chunks of a unit's size: never across a unit's end */
        const size_t routed_chunk = st_h.unit < chunk ? st_h.unit : chunk;
        for (size_t a = 0; a < cnt; a += routed_chunk) {
            const size_t n = cnt - a < routed_chunk ? cnt - a : routed_chunk;
            routed_rows(c, L, h, tok + a, n, xg);
            if (llmq_expert_mix(c->m, x, xg, (int)n, act) || check_finite(act, n * fe, c->index, "an expert's down_proj input") ||
                stats_add(&st_abs, act, n)) {
                stats_free_all(pair, 2);
                goto done;
            }
            #pragma omp parallel for schedule(static)
            for (size_t i = 0; i < n; i++)
                for (int k = 0; k < fe; k++) act[i * fe + k] *= wts[tok[a + i]];
            if (stats_add(&st_h, act, n)) {
                stats_free_all(pair, 2);
                goto done;
            }
        }
        if (stats_finish(&st_h, cnt, NULL) || stats_finish(&st_abs, cnt, x_mean)) {
            stats_free_all(pair, 2); /* the one not finished */
            goto done;
        }
        llmq_layer one = {0};
        for (int j = 0; j < 3; j++) one.lin[LLMQ_LIN_GATE + j] = x->w[j];
        llmq_awq_stats es = {0};
        if (search_scales(c, LLMQ_AWQ_DOWN, &one, x_mean, H, NULL, NULL, s, &es)) goto done;
        fold_scales(&one, LLMQ_AWQ_DOWN, s);
        n_scaled++;
        ratio_sum += es.ratio[LLMQ_AWQ_DOWN];
        if (stats) {
            stats->loss_rtn[LLMQ_AWQ_DOWN] += es.loss_rtn[LLMQ_AWQ_DOWN];
            stats->loss_best[LLMQ_AWQ_DOWN] += es.loss_best[LLMQ_AWQ_DOWN];
        }
        if (!c->opts->clip) continue;
        /* clipping, on the scaled expert and every step-th of its tokens */
        const size_t step = cnt / (size_t)max_clip > 1 ? cnt / (size_t)max_clip : 1;
        int n_clip = 0;
        for (size_t i = 0; i < cnt && n_clip < max_clip && n_clip < (int)chunk; i += step) pick[n_clip++] = tok[i];
        routed_rows(c, L, h, pick, (size_t)n_clip, xg);
        if (llmq_expert_mix(c->m, x, xg, n_clip, act)) goto done;
        for (int j = 0; j < 3; j++) {
            const llmq_linear k = LLMQ_LIN_GATE + j;
            if (is_float_type(c->types[k])) continue;
            if (search_clip(c, k, &x->w[j], j < 2 ? xg : act, n_clip, &es)) goto done;
            n_clipped[j]++;
            clip_ratio_sum[j] += es.clip_ratio[k];
            if (stats) {
                stats->clip_mse_before[k] += es.clip_mse_before[k];
                stats->clip_mse_after[k] += es.clip_mse_after[k];
            }
        }
    }
    if (stats) {
        stats->searched[LLMQ_AWQ_DOWN] = n_scaled > 0;
        stats->ratio[LLMQ_AWQ_DOWN] = n_scaled ? (float)(ratio_sum / n_scaled) : 0.0f;
        for (int j = 0; j < 3; j++) {
            stats->clipped[LLMQ_LIN_GATE + j] = n_clipped[j] > 0;
            stats->clip_ratio[LLMQ_LIN_GATE + j] = n_clipped[j] ? (float)(clip_ratio_sum[j] / n_clipped[j]) : 0.0f;
        }
    }
    rc = LLMQ_OK;
done:
    free(idx); free(order); free(pick); free(start); free(wts); free(xg); free(act);
    return rc;
}

/* The clip rows of a linear whose input was gathered before its group's
 * scales s were folded: they become the scaled layer's input, x / s. */
static void unscale_rows(float *rows, int n_rows, int cols, const float *s)
{
    if (!rows) return;
    for (int j = 0; j < n_rows; j++)
        for (int i = 0; i < cols; i++) rows[(size_t)j * cols + i] /= s[i];
}

int llmq_awq_layer(const llmq_model *m, int index, llmq_layer *layer, const float *X, int n_samples, int seqlen,
                   const llmq_type types[LLMQ_LIN_COUNT], int group_size, const llmq_awq_opts *opts,
                   llmq_awq_stats *stats)
{
    return llmq_awq_layer_part(m, index, layer, X, 0, n_samples, n_samples, seqlen, types, group_size, opts, stats);
}

int llmq_awq_layer_part(const llmq_model *m, int index, llmq_layer *layer, const float *X, int first, int n_samples, int total_samples,
                        int seqlen, const llmq_type types[LLMQ_LIN_COUNT], int group_size, const llmq_awq_opts *opts,
                        llmq_awq_stats *stats)
{
    const llmq_config *cfg = &m->cfg;
    llmq_awq_opts defaults;
    if (!opts) {
        llmq_awq_defaults(&defaults);
        opts = &defaults;
    }
    if (stats) memset(stats, 0, sizeof *stats);
    if (n_samples <= 0 || seqlen <= 0) return llmq_error("layer %d: AWQ needs calibration samples (%d × %d tokens)", index, n_samples, seqlen);
    if (first < 0 || first + n_samples > total_samples || first % llmq_dist_unit_windows(seqlen))
        return llmq_error("layer %d: AWQ: windows %d..%d of %d are not a share of whole units", index, first, first + n_samples, total_samples);
    if (opts->n_grid < 1 || opts->clip_grid < 1 || !(opts->max_shrink >= 0.0f && opts->max_shrink < 1.0f) || opts->clip_tokens < 1 || opts->search_tokens < 0)
        return llmq_error("layer %d: AWQ options out of range (n_grid %d, clip_grid %d, max_shrink %g, clip_tokens %d, search_tokens %d)",
                          index, opts->n_grid, opts->clip_grid, (double)opts->max_shrink, opts->clip_tokens, opts->search_tokens);
    if (check_layer(m, index, layer)) return LLMQ_ERR;

    awq_ctx c = {.m = m, .index = index, .first = first, .n_samples = n_samples, .seqlen = seqlen, .search_samples = total_samples,
                 .n_tokens = (size_t)total_samples * seqlen, .n_local = (size_t)n_samples * seqlen, .opts = opts};
    if (opts->search_tokens > 0 && (opts->search_tokens + seqlen - 1) / seqlen < total_samples)
        c.search_samples = (opts->search_tokens + seqlen - 1) / seqlen;
    c.search_local = c.search_samples <= first ? 0 : c.search_samples - first < n_samples ? c.search_samples - first : n_samples;
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        const llmq_type_traits *tr = llmq_type_get(types[k]);
        if (!tr) return llmq_error("layer %d: %s: unknown type %d", index, llmq_linear_names[k], (int)types[k]);
        c.types[k] = types[k];
        c.group_size[k] = is_float_type(types[k]) ? 1 : llmq_group_resolve(types[k], group_size);
        if (!is_float_type(types[k]) && llmq_group_check(types[k], layer->lin[k].cols, c.group_size[k])) {
            char why[256];
            snprintf(why, sizeof why, "%s", llmq_last_error());
            return llmq_error("layer %d: %s: %s", index, llmq_linear_names[k], why);
        }
    }
    const int d = cfg->hidden_size, qd = cfg->n_heads * cfg->head_dim, f = cfg->intermediate_size;
    const size_t N = c.n_local, N_run = c.n_tokens, pos0 = (size_t)first * seqlen; /* this rank's tokens, the run's, its first */
    const float eps = cfg->rms_norm_eps;
    if (check_finite(X, N * d, index, "the layer input")) return LLMQ_ERR;
    const size_t step = N_run / (size_t)opts->clip_tokens > 1 ? N_run / (size_t)opts->clip_tokens : 1;
    const int n_clip = (int)((N_run + step - 1) / step);
    const size_t N_search = (size_t)c.search_local * seqlen;
    /* The MLP runs on chunks of whole samples; the attention one sample at a time. */
    const int per_chunk = chunk_samples(&c, LLMQ_AWQ_GATE_UP);
    const size_t chunk = (size_t)per_chunk * seqlen;
    const bool moe = layer->experts != NULL;
    /* a mixture's MLP width is its experts' (intermediate_size is a dense MLP it does not have) */
    const int mlp_w = moe ? cfg->expert_ffn : f, widest = mlp_w > qd ? mlp_w : qd, wide = widest > d ? widest : d;

    /* Held for every token: only h. The searches' inputs and outputs are held
     * for the search samples; everything else streams through in chunks. */
    float *h = malloc(N * d * sizeof(float));          /* the residual stream after attention */
    float *xs = malloc((N_search ? N_search : 1) * d * sizeof(float));  /* a normed input at the search samples */
    float *ref = malloc((N_search ? N_search : 1) * d * sizeof(float)); /* a group's reference output there */
    float *cx = malloc(chunk * d * sizeof(float));      /* a chunk of normed input */
    float *cy = malloc(chunk * d * sizeof(float));      /* a chunk of block output (unused) */
    float *cact = malloc(chunk * wide * sizeof(float)); /* a chunk of o_proj's or down_proj's input */
    float *H = malloc((size_t)widest * widest * sizeof(float));
    double *abs_sum = malloc((size_t)wide * sizeof(double));
    float *x_mean = malloc((size_t)wide * sizeof(float));
    float *s = malloc((size_t)wide * sizeof(float)); /* one group's scales */
    float *clip_in[LLMQ_LIN_COUNT] = {0};
    int rc = LLMQ_ERR;
    if (!h || !xs || !ref || !cx || !cy || !cact || !H || !abs_sum || !x_mean || !s) goto oom;
    for (int k = 0; k < (moe ? LLMQ_LIN_GATE : LLMQ_LIN_COUNT); k++) /* the experts' clip rows are their own */
        if (k != LLMQ_LIN_Q && k != LLMQ_LIN_K && !is_float_type(types[k]) && opts->clip &&
            !(clip_in[k] = calloc((size_t)n_clip * layer->lin[k].cols, sizeof(float)))) /* zero: other ranks' rows are ORed in */
            goto oom;

    /* input_layernorm -> q, k, v, judged on the attention output. */
    input_stats st = {.cols = d, .abs_sum = abs_sum};
    if (stats_begin(&st, pos0, seqlen)) goto done;
    if (norm_stats(&st, X, layer->attn_norm.data, N_search, N, d, eps, xs, cx)) {
        stats_free(&st);
        goto done;
    }
    if (stats_finish(&st, N_run, x_mean)) goto done;
    if (inspect_all(&c, LLMQ_AWQ_QKV, layer, xs, NULL, c.search_local, ref, NULL) ||
        check_finite(ref, N_search * d, index, "the attention output"))
        goto done;
    if (search_scales(&c, LLMQ_AWQ_QKV, layer, x_mean, NULL, xs, ref, s, stats) || apply_scales(m, index, layer, LLMQ_AWQ_QKV, s))
        goto done;

    /* The attention again with those scales, sample by sample: the residual
     * stream h, and o_proj's input (its statistics and clip rows) on the way. */
    const bool vo = vo_allowed(layer);
    input_stats st_v = {.cols = d, .clip = clip_in[LLMQ_LIN_V], .step = step, .n_clip = n_clip};
    input_stats st_o = {.cols = qd, .abs_sum = vo ? abs_sum : NULL, .H = vo ? H : NULL, .clip = clip_in[LLMQ_LIN_O],
                        .step = step, .n_clip = n_clip};
    input_stats *const attn_stats[2] = {&st_v, &st_o};
    if (stats_begin_all(attn_stats, 2, pos0, seqlen)) goto done;
    for (int smp = 0; smp < n_samples; smp++) {
        const size_t t0 = (size_t)smp * seqlen;
        capture cap = {.which = LLMQ_LIN_O, .dst = cact};
        llmq_rmsnorm(cx, X + t0 * d, layer->attn_norm.data, seqlen, d, eps);
        if (llmq_attention_forward(m, layer, index, cx, seqlen, h + t0 * d, capture_hook, &cap)) {
            stats_free_all(attn_stats, 2);
            goto done;
        }
        float *hs = h + t0 * d;
        const float *xi = X + t0 * d;
        #pragma omp parallel for simd schedule(static)
        for (size_t e = 0; e < (size_t)seqlen * d; e++) hs[e] += xi[e];
        if (stats_add(&st_v, cx, (size_t)seqlen) || stats_add(&st_o, cact, (size_t)seqlen)) {
            stats_free_all(attn_stats, 2);
            goto done;
        }
    }
    if (stats_finish(&st_v, N_run, NULL) || stats_finish(&st_o, N_run, x_mean)) {
        stats_free_all(attn_stats, 2); /* the one not finished */
        goto done;
    }

    /* v_proj -> o_proj, judged on o_proj's output. */
    if (vo) {
        if (search_scales(&c, LLMQ_AWQ_VO, layer, x_mean, H, NULL, NULL, s, stats) || apply_scales(m, index, layer, LLMQ_AWQ_VO, s))
            goto done;
        unscale_rows(clip_in[LLMQ_LIN_O], n_clip, qd, s);
    }
    /* post_attention_layernorm -> gate, up, judged on the MLP output. */
    st = (input_stats){.cols = d, .abs_sum = abs_sum};
    if (stats_begin(&st, pos0, seqlen)) goto done;
    if (norm_stats(&st, h, layer->ffn_norm.data, N_search, N, d, eps, xs, cx)) {
        stats_free(&st);
        goto done;
    }
    if (stats_finish(&st, N_run, x_mean)) goto done;
    if (inspect_all(&c, LLMQ_AWQ_GATE_UP, layer, xs, NULL, c.search_local, ref, NULL) ||
        check_finite(ref, N_search * d, index, "the MLP output"))
        goto done;
    if (search_scales(&c, LLMQ_AWQ_GATE_UP, layer, x_mean, NULL, xs, ref, s, stats) ||
        apply_scales(m, index, layer, LLMQ_AWQ_GATE_UP, s))
        goto done;
    free(xs);
    free(ref);
    xs = ref = NULL;
    if (moe) {
        if (awq_experts(&c, layer, h, H, abs_sum, x_mean, s, stats)) goto done;
        goto clipping;
    }

    /* up_proj -> down_proj, judged on down_proj's output: the MLP again with
     * those scales, chunk by chunk, for down's input statistics. */
    input_stats st_gate = {.cols = d, .clip = clip_in[LLMQ_LIN_GATE], .step = step, .n_clip = n_clip};
    input_stats st_up = {.cols = d, .clip = clip_in[LLMQ_LIN_UP], .step = step, .n_clip = n_clip};
    input_stats st_down = {.cols = f, .abs_sum = abs_sum, .H = H, .clip = clip_in[LLMQ_LIN_DOWN], .step = step, .n_clip = n_clip};
    input_stats *const mlp_stats[3] = {&st_gate, &st_up, &st_down};
    if (stats_begin_all(mlp_stats, 3, pos0, seqlen)) goto done;
    for (size_t t0 = 0; t0 < N; t0 += chunk) {
        size_t n = N - t0 < chunk ? N - t0 : chunk;
        capture cap = {.which = LLMQ_LIN_DOWN, .dst = cact};
        llmq_rmsnorm(cx, h + t0 * d, layer->ffn_norm.data, (int)n, d, eps);
        if (stats_add(&st_gate, cx, n) || stats_add(&st_up, cx, n) || llmq_mlp_forward(m, layer, index, cx, (int)n, cy, capture_hook, &cap) ||
            check_finite(cact, n * f, index, "down_proj's input") || stats_add(&st_down, cact, n)) {
            stats_free_all(mlp_stats, 3);
            goto done;
        }
    }
    free(h);
    h = NULL;
    if (stats_finish(&st_gate, N_run, NULL) || stats_finish(&st_up, N_run, NULL) || stats_finish(&st_down, N_run, x_mean)) {
        stats_free_all(mlp_stats, 3); /* the ones not finished */
        goto done;
    }
    if (search_scales(&c, LLMQ_AWQ_DOWN, layer, x_mean, H, NULL, NULL, s, stats) || apply_scales(m, index, layer, LLMQ_AWQ_DOWN, s))
        goto done;
    unscale_rows(clip_in[LLMQ_LIN_DOWN], n_clip, f, s);
    free(H); free(cx); free(cy); free(cact);
    H = cx = cy = cact = NULL;

clipping:
    /* Clipping, on the scaled weights and inputs (q and k skipped: their
     * errors pass through the q·kᵀ product, which the partial outputs miss). */
    for (int k = 0; k < LLMQ_LIN_COUNT; k++)
        if (clip_in[k] && search_clip(&c, (llmq_linear)k, &layer->lin[k], clip_in[k], n_clip, stats)) goto done;
    rc = LLMQ_OK;
    goto done;
oom:
    llmq_error("layer %d: AWQ: out of memory for %zu calibration tokens", index, N);
done:
    free(h); free(xs); free(ref); free(cx); free(cy); free(cact); free(H); free(abs_sum); free(x_mean); free(s);
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) free(clip_in[k]);
    llmq_model_release_workspace(m); /* the next stage (GPTQ or the writer) needs the memory more */
    return rc;
}
