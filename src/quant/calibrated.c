#include "llmq/calibrated.h"
#include "llmq/blas.h"
#include "llmq/dist.h"
#include "llmq/error.h"
#include "llmq/kernels.h"
#include "llmq/refine.h"
#include "llmq/rtn.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

size_t llmq_peak_rss(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss * 1024;
}

typedef struct {
    llmq_calibrated_opts o;
    /* This rank's calibration windows: [w0, w0 + nw) of calib->n_samples (llmq/dist.h; all of them in one process). */
    int w0, nw;
    float *X;   /* nw × seqlen × hidden: the layer's input */
    float *Y;   /* GPTQ: nw × seqlen × max(hidden, attention width): attention output, then the
                 * residual stream after attention (the MLP's input before its norm) */
    float *tmp, *tmp2; /* one sample × hidden */
    float *act;        /* one sample × intermediate: the input of down_proj */
    float *H, *Hwork;
    llmq_hsum hsum; /* the Hessian being summed (Hwork holds its unit's partial) */
    /* GPTAQ (opts.asymmetric): the full-precision residual stream (as X), the
     * full-precision stream after attention (as Y's h), the cross term D
     * beside H, one sample's full-precision sub-layer input and D's scratch */
    float *Xf, *Yf, *D, *fbuf, *dscratch;
    /* Block reconstruction: each linear's values as GPTQ rounded them (llmq_gptq_opts.pre_round) */
    float *pre[LLMQ_LIN_COUNT];
    int max_cols;
    size_t y_stride;
    /* The attention weights Y was computed with (GPTQ); layer_done reuses Y when the finished layer has the same. */
    const void *y_weights[LLMQ_LIN_O + 1];
    const void *y_norm;
    bool y_valid;
    bool int16_before, int16_set; /* llmq_get_int16() before begin(), and whether begin() set it */
    llmq_layer_report rep;
    bool rep_pending; /* quantize_layer filled rep; false for a layer restored from a resumed run's state */
    /* The stage in progress (opts.stage): its name and when it began. */
    const char *stage;
    double t_stage;
} state;

/* Tells the caller that a stage of layer `layer` begins. */
static void stage(state *s, int layer, const char *name)
{
    s->stage = name;
    s->t_stage = omp_get_wtime();
    if (s->o.stage) s->o.stage(s->o.user, layer, name, 0);
}

/* During a forward stage: `tokens` of the calibration samples are through. */
static void stage_rate(const state *s, int layer, int64_t tokens)
{
    double dt = omp_get_wtime() - s->t_stage;
    if (s->o.stage && dt > 0) s->o.stage(s->o.user, layer, s->stage, (double)tokens / dt);
}

/* GPTQ's buffers: Y, the Hessian and its working copy, one sample's MLP activations. */
static void release_gptq_buffers(state *s)
{
    llmq_hsum_free(&s->hsum);
    free(s->Y);
    free(s->tmp2);
    free(s->act);
    free(s->H);
    free(s->Hwork);
    free(s->Yf);
    free(s->D);
    free(s->fbuf);
    free(s->dscratch);
    s->Y = s->tmp2 = s->act = s->H = s->Hwork = NULL;
    s->Yf = s->D = s->fbuf = s->dscratch = NULL;
    s->y_valid = false;
}

static void release_pre(state *s)
{
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        free(s->pre[k]);
        s->pre[k] = NULL;
    }
}

/* Whether the run carries the full-precision residual stream: GPTAQ's inputs, block reconstruction's targets. */
static bool fp_stream(const state *s) { return s->o.asymmetric || s->o.block; }

static int gptq_buffers(state *s, const llmq_model *m)
{
    const llmq_calib *c = s->o.calib;
    const size_t stride = (size_t)c->seqlen * m->cfg.hidden_size;
    if (!s->Y) s->Y = malloc((size_t)s->nw * s->y_stride * sizeof(float));
    if (!s->tmp2) s->tmp2 = malloc(stride * sizeof(float));
    if (!s->act) s->act = malloc((size_t)c->seqlen * m->cfg.intermediate_size * sizeof(float));
    if (!s->H) s->H = malloc((size_t)s->max_cols * s->max_cols * sizeof(float));
    if (!s->Hwork) s->Hwork = malloc((size_t)s->max_cols * s->max_cols * sizeof(float));
    bool asym_ok = true;
    if (s->o.asymmetric) {
        const size_t row = (size_t)c->seqlen * s->max_cols;
        if (!s->Yf) s->Yf = malloc((size_t)s->nw * stride * sizeof(float));
        if (!s->D) s->D = malloc((size_t)s->max_cols * s->max_cols * sizeof(float));
        if (!s->fbuf) s->fbuf = malloc(row * sizeof(float));
        if (!s->dscratch) s->dscratch = malloc(row * sizeof(float));
        asym_ok = s->Yf && s->D && s->fbuf && s->dscratch;
    }
    if (s->Y && s->tmp2 && s->act && s->H && s->Hwork && asym_ok) return LLMQ_OK;
    release_gptq_buffers(s);
    return llmq_error("calibration: out of memory for GPTQ's buffers (%.1f GiB of activations for %d samples × %d tokens, "
                      "Hessians %d × %d)", (double)s->nw * s->y_stride * 4 / (1 << 30), s->nw, c->seqlen, s->max_cols,
                      s->max_cols);
}

static void release(state *s)
{
    release_gptq_buffers(s);
    release_pre(s);
    free(s->X);
    free(s->Xf);
    free(s->tmp);
    s->X = s->Xf = s->tmp = NULL;
}

static int begin(void *p, const llmq_model *m)
{
    state *s = p;
    const llmq_calib *c = s->o.calib;
    int d = m->cfg.hidden_size;
    size_t stride = (size_t)c->seqlen * d;
    if (s->o.asymmetric && m->cfg.n_experts > 0)
        return llmq_error("GPTAQ on a mixture of experts (%d experts) is not supported: use gptq or awq+gptq", m->cfg.n_experts);
    if (llmq_dist_size() > 1) {
        /* these sum their statistics in running means, not yet as exact, order-free sums */
        if (s->o.asymmetric || s->o.block)
            return llmq_error("%s runs in one process only: run it without mpirun (gptq, awq and awq+gptq spread over ranks)",
                              s->o.block ? "block reconstruction" : "GPTAQ");
        if (m->cfg.n_experts > 0)
            return llmq_error("a mixture of experts (%d experts) is quantized in one process only: run it without mpirun", m->cfg.n_experts);
        const int g = llmq_dist_unit_windows(c->seqlen), units = (c->n_samples + g - 1) / g;
        if (llmq_dist_size() > units)
            return llmq_error("%d ranks for %d units of calibration windows (%d × %d tokens, %d windows a unit): use at most %d ranks",
                              llmq_dist_size(), units, c->n_samples, c->seqlen, g, units);
        /* ranks on different CPUs would compute different bits: the forward's kernels, OpenBLAS's
         * kernel family (each family rounds a product its own way) and Hessian inputs must agree */
        uint64_t kind = 0;
        for (const char *k = llmq_kernel_name(); *k; k++) kind = kind * 131 + (unsigned char)*k;
        for (const char *k = llmq_blas_core(); *k; k++) kind = kind * 131 + (unsigned char)*k;
        kind = kind * 4 + (llmq_calibrated_int16(&s->o) ? 2 : 0) + (llmq_calibrated_bf16(&s->o) ? 1 : 0);
        if (llmq_dist_agree(kind, "the CPU kernels (llmq_kernel_name, OpenBLAS's kernel family, int16 forward, bf16 Hessians)"))
            return LLMQ_ERR;
    }
    llmq_dist_windows(c->n_samples, c->seqlen, &s->w0, &s->nw);
    for (int l = 0; s->o.block && l < m->cfg.n_layers; l++)
        if (llmq_block_check(m, l) != LLMQ_OK) return LLMQ_ERR;
    s->max_cols = m->cfg.hidden_size > m->cfg.intermediate_size ? m->cfg.hidden_size : m->cfg.intermediate_size;
    if (m->cfg.n_heads * m->cfg.head_dim > s->max_cols) s->max_cols = m->cfg.n_heads * m->cfg.head_dim;
    if (m->cfg.expert_ffn > s->max_cols) s->max_cols = m->cfg.expert_ffn;
    const int qd = m->cfg.n_heads * m->cfg.head_dim;
    s->y_stride = (size_t)c->seqlen * (qd > d ? qd : d);
    s->X = malloc((size_t)s->nw * stride * sizeof(float));
    s->tmp = malloc(stride * sizeof(float));
    if (fp_stream(s)) s->Xf = malloc((size_t)s->nw * stride * sizeof(float));
    if (!s->X || !s->tmp || (fp_stream(s) && !s->Xf)) {
        release(s);
        return llmq_error("calibration: out of memory for %d samples × %d tokens (%.1f GiB of activations)", s->nw, c->seqlen,
                          (double)s->nw * stride * 4 / (1 << 30));
    }
    /* awq+gptq allocates them after each layer's AWQ search, which needs as much memory again */
    if (s->o.kind == LLMQ_CAL_GPTQ && gptq_buffers(s, m) != LLMQ_OK) {
        release(s);
        return LLMQ_ERR;
    }
    stage(s, -1, "embed calib");
    for (int i = 0; i < s->nw; i++)
        if (llmq_embed(m, c->tokens + (size_t)(s->w0 + i) * c->seqlen, c->seqlen, s->X + (size_t)i * stride) != LLMQ_OK) {
            release(s);
            return LLMQ_ERR;
        }
    if (s->Xf) memcpy(s->Xf, s->X, (size_t)s->nw * stride * sizeof(float));
    /* until end(): the forward through the quantized linears on int16 activations (opts.exact_forward) */
    s->int16_before = llmq_get_int16();
    s->int16_set = true;
    llmq_set_int16(llmq_calibrated_int16(&s->o));
    return LLMQ_OK;
}

/* The calibration windows start from the embedding the file stores (the
 * quantized model's lookups), the full-precision stream (GPTAQ) from the
 * source's: the first layers then see, and GPTAQ corrects, the embedding's
 * rounding as well. */
static int embedded(void *p, const llmq_model *m, const llmq_weight *e)
{
    state *s = p;
    const llmq_calib *c = s->o.calib;
    const size_t stride = (size_t)c->seqlen * m->cfg.hidden_size;
    for (int i = 0; i < s->nw; i++)
        if (llmq_embed_from(m, e, c->tokens + (size_t)(s->w0 + i) * c->seqlen, c->seqlen, s->X + (size_t)i * stride) != LLMQ_OK)
            return llmq_error_prefix("calibration: the stored embedding");
    return LLMQ_OK;
}

static void end(void *p)
{
    state *s = p;
    if (s->int16_set) llmq_set_int16(s->int16_before);
    s->int16_set = false;
    release(p);
}

/* An llmq_layer whose views point at the driver's f32 copies. */
static void view_f32(const llmq_model *m, llmq_layer_f32 *w, llmq_layer *L, llmq_expert *experts)
{
    const llmq_layer *src = &m->layers[0];
    memset(L, 0, sizeof *L);
    int d = m->cfg.hidden_size;
    L->attn_norm = (llmq_weight){w->attn_norm, LLMQ_TYPE_F32, 1, d};
    L->ffn_norm = (llmq_weight){w->ffn_norm, LLMQ_TYPE_F32, 1, d};
    if (w->q_norm) L->q_norm = (llmq_weight){w->q_norm, LLMQ_TYPE_F32, 1, m->cfg.head_dim};
    if (w->k_norm) L->k_norm = (llmq_weight){w->k_norm, LLMQ_TYPE_F32, 1, m->cfg.head_dim};
    if (w->post_attn_norm) L->post_attn_norm = (llmq_weight){w->post_attn_norm, LLMQ_TYPE_F32, 1, d};
    if (w->post_ffn_norm) L->post_ffn_norm = (llmq_weight){w->post_ffn_norm, LLMQ_TYPE_F32, 1, d};
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        L->lin[k] = (llmq_weight){w->lin[k], LLMQ_TYPE_F32, src->lin[k].rows, src->lin[k].cols};
        if (w->bias[k]) L->bias[k] = (llmq_weight){w->bias[k], LLMQ_TYPE_F32, 1, src->lin[k].rows};
    }
    /* a mixture: its router, and its experts as views of the stacked copies (experts[] has n_experts) */
    if (w->router && experts) {
        const void *const data[3] = {w->lin[LLMQ_LIN_GATE], w->lin[LLMQ_LIN_UP], w->lin[LLMQ_LIN_DOWN]};
        const llmq_type f32[3] = {LLMQ_TYPE_F32, LLMQ_TYPE_F32, LLMQ_TYPE_F32};
        L->router = (llmq_weight){w->router, LLMQ_TYPE_F32, m->cfg.n_experts, d};
        for (int e = 0; e < m->cfg.n_experts; e++) experts[e] = llmq_expert_view(&m->cfg, data, f32, e);
        L->experts = experts;
    }
}

/* GPTQ (or GPTAQ, opts.asymmetric) of one linear W (rows × cols) on s->H (and
 * s->D) into packed; Hwork is overwritten. *target: GPTAQ's target form, the
 * weights it solved for (what --refine refines against; caller frees), else
 * NULL. On an error *target is NULL. */
static int solve_linear(state *s, const float *W, int rows, int cols, llmq_type type, int group_size, void *packed,
                        llmq_gptq_stats *gs, float **target, float *pre_round)
{
    *target = NULL;
    llmq_gptq_opts go = s->o.gptq;
    go.pre_round = pre_round;
    if (s->o.asymmetric && s->o.gptaq_form == LLMQ_GPTAQ_TARGET) {
        /* GPTQ of the weights closest to the full-precision output */
        if (!(*target = malloc((size_t)rows * cols * sizeof(float)))) return llmq_error("out of memory");
        if (llmq_gptaq_target(W, rows, cols, s->H, s->D, s->o.gptaq_alpha, s->o.gptq.damp, *target)) {
            free(*target);
            *target = NULL;
            return LLMQ_ERR;
        }
        W = *target;
    }
    memcpy(s->Hwork, s->H, (size_t)cols * cols * sizeof(float));
    int rc = s->o.asymmetric && s->o.gptaq_form == LLMQ_GPTAQ_SWEEP
                 ? llmq_gptaq_quantize(W, rows, cols, s->Hwork, s->D, s->o.gptaq_alpha, type, group_size, &go, packed, NULL, gs)
                 : llmq_gptq_quantize(W, rows, cols, s->Hwork, type, group_size, &go, packed, NULL, gs);
    if (rc != LLMQ_OK) {
        free(*target);
        *target = NULL;
    }
    return rc;
}

/* v[0..n) summed over the ranks (exactly, so every rank has the same). */
static int sum_over_ranks(double *v, size_t n)
{
    llmq_xsum x;
    if (llmq_xsum_init(&x, n)) return LLMQ_ERR;
    int rc = llmq_xsum_add_f64(&x, 0, v, n, "solver statistics");
    if (rc == LLMQ_OK) rc = llmq_xsum_reduce(&x);
    if (rc == LLMQ_OK) llmq_xsum_get_f64(&x, 0, v, n, 1.0);
    llmq_xsum_free(&x);
    return rc;
}

/* GPTQ's solver for the linears of one true-sequential step, all sharing the Hessian in s->H. */
static int solve_step(state *s, const llmq_model *m, int index, llmq_layer *cur, llmq_layer_f32 *w, const llmq_linear *lins, int n_lins,
                      const llmq_quant_target targets[LLMQ_LIN_COUNT], void *const packed[LLMQ_LIN_COUNT])
{
    /* the forward's buffers need not sit beside the solver's: memory stays within the bound */
    llmq_model_release_workspace(m);
    static const char *const solve[LLMQ_LIN_COUNT] = {"solve q_proj",    "solve k_proj",  "solve v_proj",   "solve o_proj",
                                                      "solve gate_proj", "solve up_proj", "solve down_proj"};
    for (int j = 0; j < n_lins; j++) {
        llmq_linear k = lins[j];
        if (!packed[k]) continue;
        stage(s, index, solve[k]);
        const int cols = cur->lin[k].cols;
        double t1 = omp_get_wtime();
        llmq_gptq_stats gs;
        const int rows = cur->lin[k].rows;
        float *target;
        if (s->o.block && !s->pre[k] && !(s->pre[k] = malloc((size_t)rows * cols * sizeof(float))))
            return llmq_error("layer %d %s: out of memory for its values before rounding", index, llmq_linear_names[k]);
        /* Over ranks (llmq/dist.h) each solves a share of the rows, which GPTQ
         * treats independently given H, and the packed rows are gathered. */
        const size_t row_bytes = llmq_row_size(targets[k].type, cols);
        /* The shares are cut at the tiles of llmq/blas.h, so every row has the bits one process gives it. */
        const int shared = llmq_dist_size() > 1;
        int r0, r1;
        llmq_dist_rows(rows, LLMQ_BLAS_TILE_ROWS, &r0, &r1);
        char *mine = (char *)packed[k] + (size_t)r0 * row_bytes;
        if (shared) memset(packed[k], 0, (size_t)rows * row_bytes); /* the others' rows are ORed in */
        memset(&gs, 0, sizeof gs);
        target = NULL;
        if (r1 > r0 && solve_linear(s, w->lin[k] + (size_t)r0 * cols, r1 - r0, cols, targets[k].type, targets[k].group_size, mine, &gs,
                                    &target, s->pre[k]))
            return llmq_error_prefix("layer %d %s", index, llmq_linear_names[k]);
        const float *W = target ? target : w->lin[k] + (size_t)r0 * cols;
        double sums[5] = {gs.trace_w, gs.trace_rtn, gs.trace_gptq, 0, 0}; /* and refinement's objective before and after */
        if (s->o.refine_passes > 0 && r1 > r0) {
            /* H's lower triangle becomes the upper's mirror: the solver reads the upper one only */
            llmq_refine_stats rs;
            stage(s, index, "refine");
            if (llmq_refine_codes(W, r1 - r0, cols, s->H, targets[k].type, targets[k].group_size, mine, s->o.refine_passes, &rs) !=
                LLMQ_OK) {
                free(target);
                return llmq_error_prefix("layer %d %s", index, llmq_linear_names[k]);
            }
            sums[3] = rs.objective[0];
            sums[4] = rs.objective[rs.passes];
            s->rep.seconds_refine += rs.seconds;
        }
        free(target);
        if (shared && (llmq_dist_or(packed[k], (size_t)rows * row_bytes) || sum_over_ranks(sums, 5)))
            return llmq_error_prefix("layer %d %s", index, llmq_linear_names[k]);
        s->rep.err_rtn[k] = shared ? llmq_gptq_ratio(sums[1], sums[0]) : gs.err_rtn;
        s->rep.err_gptq[k] = shared ? llmq_gptq_ratio(sums[2], sums[0]) : gs.err_gptq;
        if (s->o.refine_passes > 0) s->rep.err_refine[k] = sums[3] > 0 ? s->rep.err_gptq[k] * sums[4] / sums[3] : s->rep.err_gptq[k];
        s->rep.seconds_solver += omp_get_wtime() - t1;
        s->rep.damp[k] = gs.damp_used;
        s->rep.damp_retries += gs.retries;
        cur->lin[k] = (llmq_weight){packed[k], targets[k].type, cur->lin[k].rows, cols};
    }
    return LLMQ_OK;
}

static bool any_packed(void *const packed[LLMQ_LIN_COUNT], const llmq_linear *lins, int n_lins)
{
    for (int j = 0; j < n_lins; j++)
        if (packed[lins[j]]) return true;
    return false;
}

/* A linear's Hessian over the run's windows: begun, then each window's inputs
 * added (hessian_add), then finished into s->H (llmq_hsum: the same bits for
 * any split of the windows among ranks). */
static int hessian_begin(state *s, int cols) { return llmq_hsum_begin(&s->hsum, cols, s->Hwork, llmq_calibrated_bf16(&s->o)); }

/* Local window i's inputs of the linear; then the pass's tokens/s so far to
 * the stage callback. *n_seen counts this rank's tokens (GPTAQ's D). */
static int hessian_add(state *s, int i, int64_t *n_seen, const float *x, int n)
{
    double t0 = omp_get_wtime();
    int rc = llmq_hsum_add(&s->hsum, x, n);
    /* a unit ends every llmq_dist_unit_windows windows (w0 is a unit's first) and at the last window */
    if (rc == LLMQ_OK && ((i + 1) % llmq_dist_unit_windows(s->o.calib->seqlen) == 0 || i + 1 == s->nw)) rc = llmq_hsum_unit_end(&s->hsum);
    s->rep.seconds_hessian += omp_get_wtime() - t0;
    *n_seen += n;
    if (rc == LLMQ_OK) stage_rate(s, s->rep.layer, *n_seen);
    return rc;
}

static int hessian_finish(state *s)
{
    double t0 = omp_get_wtime();
    const int rc = llmq_hsum_finish(&s->hsum, s->H, 2.0 / ((double)s->o.calib->n_samples * s->o.calib->seqlen));
    s->rep.seconds_hessian += omp_get_wtime() - t0;
    return rc;
}

/* A mixture's expert (one process): its routed tokens into the running Hessian s->H. */
static int hessian_add_running(state *s, int cols, int64_t *n_seen, const float *x, int n)
{
    double t0 = omp_get_wtime();
    int rc = (llmq_calibrated_bf16(&s->o) ? llmq_hessian_add_bf16 : llmq_hessian_add)(s->H, cols, n_seen, x, n);
    s->rep.seconds_hessian += omp_get_wtime() - t0;
    if (rc == LLMQ_OK) stage_rate(s, s->rep.layer, *n_seen);
    return rc;
}

/* GPTAQ: one sample's full-precision inputs xf beside the quantized path's x
 * into D; before hessian_add counts the sample. */
static int cross_add(state *s, int cols, int64_t n_seen, const float *x, const float *xf, int n)
{
    double t0 = omp_get_wtime();
    int rc = llmq_cross_add(s->D, cols, n_seen, x, xf, s->dscratch, n);
    s->rep.seconds_hessian += omp_get_wtime() - t0;
    return rc;
}

/* A pass over the calibration samples began at t0 with s->rep.seconds_hessian
 * at h0: its time less the Hessian accumulation inside it is forward time. */
static void add_forward_time(state *s, double t0, double h0)
{
    s->rep.seconds_forward += omp_get_wtime() - t0 - (s->rep.seconds_hessian - h0);
}

/* The MLP's normed inputs of n routing choices (llmq_moe_group's order: token
 * choice / used, over all samples) into xg[n × d]. */
static void routed_inputs(const state *s, const llmq_layer *cur, int T, int d, int used, float eps, const int32_t *choice, size_t n,
                          float *xg)
{
    for (size_t i = 0; i < n; i++) {
        const size_t t = (size_t)choice[i] / used;
        llmq_rmsnorm(xg + i * d, s->Y + (t / T) * s->y_stride + (t % T) * d, cur->ffn_norm.data, 1, d, eps);
    }
}

/* GPTQ of a mixture of experts' MLP (h, the residual stream after attention,
 * in s->Y): every token routed once by the source router; then expert by
 * expert, its gate and up from the Hessian of the normed inputs routed to it,
 * its down from the Hessian of its own (quantized) gate/up product on those
 * tokens. An expert the calibration barely reaches (< LLMQ_MOE_MIN_TOKENS) is
 * rounded instead: its Hessian would be nearly singular. */
static int moe_experts(state *s, const llmq_model *m, int index, llmq_layer *cur, llmq_layer_f32 *w,
                       const llmq_quant_target targets[LLMQ_LIN_COUNT], void *const packed[LLMQ_LIN_COUNT])
{
    const llmq_calib *c = s->o.calib;
    const llmq_config *cfg = &m->cfg;
    const int T = c->seqlen, d = cfg->hidden_size, E = cfg->n_experts, K = cfg->n_experts_used, f = cfg->expert_ffn;
    const size_t N = (size_t)s->nw * T, chunk = 2048;
    const float eps = cfg->rms_norm_eps;
    int32_t *idx = malloc(N * K * sizeof *idx), *order = malloc(N * K * sizeof *order);
    size_t *start = malloc((size_t)(E + 1) * sizeof *start);
    float *wts = malloc(N * K * sizeof *wts), *xg = malloc(chunk * d * sizeof *xg), *act = malloc(chunk * f * sizeof *act);
    double sums[3][2] = {{0}};
    int rc = LLMQ_ERR, n_gptq = 0;
    const llmq_layer *router_view = cur; /* its router: the source's, scaled as AWQ scaled post_attention_layernorm */
    if (!idx || !order || !start || !wts || !xg || !act) {
        llmq_error("layer %d: out of memory for %zu tokens' routing", index, N);
        goto done;
    }
    stage(s, index, "route");
    double t0 = omp_get_wtime();
    for (int i = 0; i < s->nw; i++) {
        llmq_rmsnorm(s->tmp, s->Y + (size_t)i * s->y_stride, cur->ffn_norm.data, T, d, eps);
        if (llmq_moe_route(m, router_view, s->tmp, T, idx + (size_t)i * T * K, wts + (size_t)i * T * K)) goto done;
    }
    s->rep.seconds_forward += omp_get_wtime() - t0;
    s->rep.n_experts = E;
    llmq_moe_group(idx, N, K, E, start, order);
    /* expert e's matrices in the stacked f32 copies and the packed outputs */
    const void *const f32[3] = {w->lin[LLMQ_LIN_GATE], w->lin[LLMQ_LIN_UP], w->lin[LLMQ_LIN_DOWN]};
    const void *const packed3[3] = {packed[LLMQ_LIN_GATE], packed[LLMQ_LIN_UP], packed[LLMQ_LIN_DOWN]};
    const llmq_type f32_types[3] = {LLMQ_TYPE_F32, LLMQ_TYPE_F32, LLMQ_TYPE_F32},
                    q_types[3] = {targets[LLMQ_LIN_GATE].type, targets[LLMQ_LIN_UP].type, targets[LLMQ_LIN_DOWN].type};
    for (int e = 0; e < E; e++) {
        const int32_t *tok = order + start[e];
        const size_t cnt = start[e + 1] - start[e];
        if (e < LLMQ_REPORT_EXPERTS) s->rep.expert_tokens[e] = (int64_t)cnt;
        const llmq_expert src_e = llmq_expert_view(cfg, f32, f32_types, e), q = llmq_expert_view(cfg, packed3, q_types, e);
        float *in[3];
        void *out[3];
        for (int jj = 0; jj < 3; jj++) in[jj] = (float *)src_e.w[jj].data, out[jj] = (void *)q.w[jj].data;
        if (cnt < LLMQ_MOE_MIN_TOKENS) {
            s->rep.experts_rtn++;
            for (int jj = 0; jj < 3; jj++) {
                const llmq_quant_target *tg = &targets[LLMQ_LIN_GATE + jj];
                if (llmq_quantize_rows(tg->type, in[jj], src_e.w[jj].rows, src_e.w[jj].cols, tg->group_size, s->o.rtn_search, out[jj]))
                    goto done;
            }
            continue;
        }
        /* gate and up: the normed inputs routed to e */
        int64_t seen = 0;
        double h0 = s->rep.seconds_hessian;
        t0 = omp_get_wtime();
        stage(s, index, "hessian experts");
        for (size_t a = 0; a < cnt; a += chunk) {
            const size_t n = cnt - a < chunk ? cnt - a : chunk;
            routed_inputs(s, cur, T, d, K, eps, tok + a, n, xg);
            if (hessian_add_running(s, d, &seen, xg, (int)n)) goto done;
        }
        s->rep.seconds_forward += omp_get_wtime() - t0 - (s->rep.seconds_hessian - h0);
        stage(s, index, "solve experts");
        for (int jj = 0; jj < 2; jj++) {
            const int k = LLMQ_LIN_GATE + jj;
            llmq_gptq_stats gs;
            double t1 = omp_get_wtime();
            memcpy(s->Hwork, s->H, (size_t)d * d * sizeof(float));
            if (llmq_gptq_quantize(in[jj], f, d, s->Hwork, targets[k].type, targets[k].group_size, &s->o.gptq, out[jj], NULL, &gs))
                goto done;
            s->rep.seconds_solver += omp_get_wtime() - t1;
            sums[jj][0] += gs.err_rtn, sums[jj][1] += gs.err_gptq;
            s->rep.damp[k] = gs.damp_used;
            s->rep.damp_retries += gs.retries;
        }
        /* down: the expert's own quantized gate/up product on those tokens */
        seen = 0;
        h0 = s->rep.seconds_hessian;
        t0 = omp_get_wtime();
        stage(s, index, "hessian experts");
        for (size_t a = 0; a < cnt; a += chunk) {
            const size_t n = cnt - a < chunk ? cnt - a : chunk;
            routed_inputs(s, cur, T, d, K, eps, tok + a, n, xg);
            if (llmq_expert_mix(m, &q, xg, (int)n, act) || hessian_add_running(s, f, &seen, act, (int)n)) goto done;
        }
        s->rep.seconds_forward += omp_get_wtime() - t0 - (s->rep.seconds_hessian - h0);
        stage(s, index, "solve experts");
        llmq_gptq_stats gs;
        double t1 = omp_get_wtime();
        memcpy(s->Hwork, s->H, (size_t)f * f * sizeof(float));
        if (llmq_gptq_quantize(in[2], d, f, s->Hwork, targets[LLMQ_LIN_DOWN].type,
                               targets[LLMQ_LIN_DOWN].group_size, &s->o.gptq, out[2], NULL, &gs))
            goto done;
        s->rep.seconds_solver += omp_get_wtime() - t1;
        sums[2][0] += gs.err_rtn, sums[2][1] += gs.err_gptq;
        s->rep.damp[LLMQ_LIN_DOWN] = gs.damp_used;
        s->rep.damp_retries += gs.retries;
        n_gptq++;
    }
    for (int jj = 0; n_gptq && jj < 3; jj++) {
        s->rep.err_rtn[LLMQ_LIN_GATE + jj] = sums[jj][0] / n_gptq;
        s->rep.err_gptq[LLMQ_LIN_GATE + jj] = sums[jj][1] / n_gptq;
    }
    rc = LLMQ_OK;
done:
    if (rc) llmq_error_prefix("layer %d experts", index);
    free(idx); free(order); free(start); free(wts); free(xg); free(act);
    return rc;
}

/* True-sequential GPTQ (IST-DASLab/gptq llama.py `sequential`: q,k,v → o →
 * gate,up → down, each group's inputs computed with the linears before it
 * already quantized), with every sub-layer's input computed once per layer:
 *   q,k,v:   norm(X);
 *   o:       attention(norm(X)) with the quantized q,k,v, kept in Y;
 *   gate,up: norm(h) with h = X + o(Y), kept in Y;
 *   down:    silu(gate(norm(h))) ⊙ up(norm(h)) with the quantized gate, up.
 * layer_done then adds down's output to h. The same operations as running the
 * whole layer before each group, so the same bits, at about a third of the work. */
static int gptq_layer(state *s, const llmq_model *m, int index, llmq_layer *cur, const llmq_layer *fp, llmq_layer_f32 *w,
                      const llmq_quant_target targets[LLMQ_LIN_COUNT], void *const packed[LLMQ_LIN_COUNT])
{
    const bool asym = s->o.asymmetric;
    static const llmq_linear qkv[] = {LLMQ_LIN_Q, LLMQ_LIN_K, LLMQ_LIN_V}, o_lin[] = {LLMQ_LIN_O},
                             gate_up[] = {LLMQ_LIN_GATE, LLMQ_LIN_UP}, down[] = {LLMQ_LIN_DOWN};
    const llmq_calib *c = s->o.calib;
    const llmq_config *cfg = &m->cfg;
    const int T = c->seqlen, d = cfg->hidden_size, qd = cfg->n_heads * cfg->head_dim, f = cfg->intermediate_size;
    const size_t stride = (size_t)T * d;
    const float eps = cfg->rms_norm_eps;
    s->y_valid = false;
    int64_t seen;
    double t0, h0;

    if (any_packed(packed, qkv, 3)) {
        stage(s, index, "hessian q,k,v");
        t0 = omp_get_wtime();
        h0 = s->rep.seconds_hessian;
        seen = 0;
        if (hessian_begin(s, d)) return llmq_error_prefix("layer %d", index);
        for (int i = 0; i < s->nw; i++) {
            llmq_rmsnorm(s->tmp, s->X + (size_t)i * stride, cur->attn_norm.data, T, d, eps);
            if (asym) {
                llmq_rmsnorm(s->fbuf, s->Xf + (size_t)i * stride, fp->attn_norm.data, T, d, eps);
                if (cross_add(s, d, seen, s->tmp, s->fbuf, T)) return llmq_error_prefix("layer %d", index);
            }
            if (hessian_add(s, i, &seen, s->tmp, T)) return llmq_error_prefix("layer %d", index);
        }
        add_forward_time(s, t0, h0);
        if (hessian_finish(s)) return llmq_error_prefix("layer %d", index);
        if (solve_step(s, m, index, cur, w, qkv, 3, targets, packed)) return LLMQ_ERR;
    }

    h0 = s->rep.seconds_hessian;
    t0 = omp_get_wtime();
    const bool o_packed = packed[LLMQ_LIN_O] != NULL;
    stage(s, index, o_packed ? "hessian o_proj" : "attention");
    seen = 0;
    if (o_packed && hessian_begin(s, qd)) return llmq_error_prefix("layer %d", index);
    for (int i = 0; i < s->nw; i++) {
        float *att = s->Y + (size_t)i * s->y_stride;
        llmq_rmsnorm(s->tmp, s->X + (size_t)i * stride, cur->attn_norm.data, T, d, eps);
        if (llmq_attention_mix(m, cur, index, s->tmp, T, att)) return LLMQ_ERR;
        if (asym) {
            /* the full-precision attention (o_proj's input), then its stream after attention in Yf */
            const float *xf = s->Xf + (size_t)i * stride;
            float *hf = s->Yf + (size_t)i * stride;
            llmq_rmsnorm(s->tmp, xf, fp->attn_norm.data, T, d, eps);
            if (llmq_attention_mix(m, fp, index, s->tmp, T, s->fbuf)) return LLMQ_ERR;
            if (o_packed && cross_add(s, qd, seen, att, s->fbuf, T)) return llmq_error_prefix("layer %d", index);
            if (llmq_linear_forward(fp, LLMQ_LIN_O, s->tmp, s->fbuf, T)) return llmq_error_prefix("layer %d", index);
            llmq_post_norm(m, fp, LLMQ_LIN_O, s->tmp, T);
            #pragma omp parallel for simd schedule(static)
            for (size_t e = 0; e < stride; e++) hf[e] = xf[e] + s->tmp[e];
        }
        if (o_packed && hessian_add(s, i, &seen, att, T)) return llmq_error_prefix("layer %d", index);
    }
    add_forward_time(s, t0, h0);
    if (o_packed && hessian_finish(s)) return llmq_error_prefix("layer %d", index);
    if (o_packed && solve_step(s, m, index, cur, w, o_lin, 1, targets, packed)) return LLMQ_ERR;

    h0 = s->rep.seconds_hessian;
    t0 = omp_get_wtime();
    const bool moe = m->layers[index].experts != NULL, gu_packed = any_packed(packed, gate_up, 2) && !moe;
    stage(s, index, gu_packed ? "hessian gate,up" : "o_proj");
    seen = 0;
    if (gu_packed && hessian_begin(s, d)) return llmq_error_prefix("layer %d", index);
    for (int i = 0; i < s->nw; i++) {
        float *y = s->Y + (size_t)i * s->y_stride;
        const float *x = s->X + (size_t)i * stride;
        if (llmq_linear_forward(cur, LLMQ_LIN_O, s->tmp, y, T)) return llmq_error_prefix("layer %d", index);
        llmq_post_norm(m, cur, LLMQ_LIN_O, s->tmp, T);
        #pragma omp parallel for simd schedule(static)
        for (size_t e = 0; e < stride; e++) y[e] = x[e] + s->tmp[e];
        if (!gu_packed) continue;
        llmq_rmsnorm(s->tmp, y, cur->ffn_norm.data, T, d, eps);
        if (asym) {
            llmq_rmsnorm(s->fbuf, s->Yf + (size_t)i * stride, fp->ffn_norm.data, T, d, eps);
            if (cross_add(s, d, seen, s->tmp, s->fbuf, T)) return llmq_error_prefix("layer %d", index);
        }
        if (hessian_add(s, i, &seen, s->tmp, T)) return llmq_error_prefix("layer %d", index);
    }
    add_forward_time(s, t0, h0);
    if (gu_packed && hessian_finish(s)) return llmq_error_prefix("layer %d", index);
    if (gu_packed && solve_step(s, m, index, cur, w, gate_up, 2, targets, packed)) return LLMQ_ERR;

    if (moe) {
        if (moe_experts(s, m, index, cur, w, targets, packed)) return LLMQ_ERR;
    } else if (packed[LLMQ_LIN_DOWN]) {
        stage(s, index, "hessian down_proj");
        h0 = s->rep.seconds_hessian;
        t0 = omp_get_wtime();
        seen = 0;
        if (hessian_begin(s, f)) return llmq_error_prefix("layer %d", index);
        for (int i = 0; i < s->nw; i++) {
            if (asym) {
                llmq_rmsnorm(s->tmp, s->Yf + (size_t)i * stride, fp->ffn_norm.data, T, d, eps);
                if (llmq_mlp_mix(m, fp, index, s->tmp, T, s->fbuf)) return LLMQ_ERR;
            }
            llmq_rmsnorm(s->tmp, s->Y + (size_t)i * s->y_stride, cur->ffn_norm.data, T, d, eps);
            if (llmq_mlp_mix(m, cur, index, s->tmp, T, s->act)) return LLMQ_ERR;
            if (asym && cross_add(s, f, seen, s->act, s->fbuf, T)) return llmq_error_prefix("layer %d", index);
            if (hessian_add(s, i, &seen, s->act, T)) return llmq_error_prefix("layer %d", index);
        }
        add_forward_time(s, t0, h0);
        if (hessian_finish(s)) return llmq_error_prefix("layer %d", index);
        if (solve_step(s, m, index, cur, w, down, 1, targets, packed)) return LLMQ_ERR;
    }
    for (int k = 0; k <= LLMQ_LIN_O; k++) s->y_weights[k] = cur->lin[k].data;
    s->y_norm = cur->attn_norm.data;
    s->y_valid = true;
    return LLMQ_OK;
}

static int quantize_layer_f32(state *s, const llmq_model *m, int index, llmq_layer_f32 *w, llmq_layer *curp,
                              const llmq_quant_target targets[LLMQ_LIN_COUNT], void *const packed[LLMQ_LIN_COUNT]);

typedef struct {
    state *s;
    int layer;
    int64_t tokens_per_iter;
} block_progress_ctx;

static void block_progress(void *user, int iter, int iters, double loss)
{
    (void)iters, (void)loss;
    const block_progress_ctx *b = user;
    stage_rate(b->s, b->layer, (int64_t)iter * b->tokens_per_iter);
}

/* Block-output reconstruction of the layer GPTQ just packed (llmq/block.h):
 * the quantized path's inputs are X, the targets the full-precision layer fp
 * on the full-precision stream Xf. GPTQ's buffers go first: the targets take
 * one X-sized buffer, the block's tape its mini-batch. */
static int block_step(state *s, const llmq_model *m, int index, const llmq_layer *fp, const llmq_layer_f32 *w,
                      const llmq_quant_target targets[LLMQ_LIN_COUNT], void *const packed[LLMQ_LIN_COUNT])
{
    const llmq_calib *c = s->o.calib;
    const int T = c->seqlen;
    const size_t stride = (size_t)T * m->cfg.hidden_size, total = (size_t)s->nw * stride;
    release_gptq_buffers(s);
    llmq_model_release_workspace(m);
    stage(s, index, "block targets");
    double t0 = omp_get_wtime();
    float *target = malloc(total * sizeof(float));
    if (!target) return llmq_error("layer %d: out of memory for the block's targets (%.1f GiB)", index, (double)total * 4 / (1 << 30));
    memcpy(target, s->Xf, total * sizeof(float));
    for (int i = 0; i < s->nw; i++)
        if (llmq_layer_forward(m, fp, index, target + (size_t)i * stride, T, NULL, NULL) != LLMQ_OK) {
            free(target);
            return llmq_error_prefix("layer %d block targets", index);
        }
    llmq_model_release_workspace(m);
    s->rep.seconds_forward += omp_get_wtime() - t0;
    llmq_block_weights base = {.attn_norm = w->attn_norm, .ffn_norm = w->ffn_norm};
    llmq_type types[LLMQ_LIN_COUNT];
    int groups[LLMQ_LIN_COUNT];
    const float *pre[LLMQ_LIN_COUNT];
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        base.w[k] = w->lin[k];
        base.bias[k] = w->bias[k];
        types[k] = targets[k].type;
        groups[k] = targets[k].group_size;
        pre[k] = s->pre[k];
    }
    llmq_block_opts bo = s->o.block_opts;
    block_progress_ctx pc = {s, index, (int64_t)(bo.batch < s->nw ? bo.batch : s->nw) * T};
    bo.progress = block_progress;
    bo.user = &pc;
    stage(s, index, "block");
    llmq_block_stats bs;
    const int rc = llmq_block_reconstruct(m, index, &base, s->X, target, s->nw, T, types, groups, packed, pre, &bo, &bs);
    free(target);
    release_pre(s);
    if (rc != LLMQ_OK) return llmq_error_prefix("layer %d", index);
    s->rep.has_block = true;
    s->rep.block_kept = bs.kept;
    s->rep.block_mse_init = bs.mse_init;
    s->rep.block_mse_final = bs.mse_final;
    s->rep.block_codes_changed = bs.codes_changed;
    s->rep.seconds_block = bs.seconds;
    return LLMQ_OK;
}

static int quantize_layer(void *p, const llmq_model *m, int index, llmq_layer_f32 *w, const llmq_quant_target targets[LLMQ_LIN_COUNT],
                          void *const packed[LLMQ_LIN_COUNT])
{
    state *s = p;
    memset(&s->rep, 0, sizeof s->rep);
    s->rep_pending = true;
    s->rep.layer = index;
    s->rep.n_layers = m->cfg.n_layers;
    llmq_layer cur;
    llmq_expert *experts = w->router ? malloc((size_t)m->cfg.n_experts * sizeof *experts) : NULL;
    if (w->router && !experts) return llmq_error("layer %d: out of memory", index);
    view_f32(m, w, &cur, experts);
    int rc = quantize_layer_f32(s, m, index, w, &cur, targets, packed);
    free(experts);
    return rc;
}

static int quantize_layer_f32(state *s, const llmq_model *m, int index, llmq_layer_f32 *w, llmq_layer *curp,
                              const llmq_quant_target targets[LLMQ_LIN_COUNT], void *const packed[LLMQ_LIN_COUNT])
{
    llmq_layer cur = *curp;
    if (s->o.kind != LLMQ_CAL_GPTQ) {
        /* AWQ rewrites the f32 copies in place: scaled norms, rows and columns. */
        llmq_type types[LLMQ_LIN_COUNT];
        int group_size = 0;
        bool native = true; /* every target on its type's own blocks: each type resolves 0 itself (q4_k_m mixes 32 and 16) */
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            types[k] = packed[k] ? targets[k].type : LLMQ_TYPE_F16;
            if (!packed[k]) continue;
            group_size = targets[k].group_size;
            if (group_size != llmq_group_resolve(targets[k].type, 0)) native = false;
        }
        if (native) group_size = 0;
        /* the search holds the residual stream for every token itself: GPTQ's Y can go meanwhile */
        release_gptq_buffers(s);
        stage(s, index, "awq search");
        double t0 = omp_get_wtime();
        if (llmq_awq_layer_part(m, index, &cur, s->X, s->w0, s->nw, s->o.calib->n_samples, s->o.calib->seqlen, types, group_size, &s->o.awq, &s->rep.awq) != LLMQ_OK)
            return llmq_error_prefix("layer %d AWQ", index);
        s->rep.has_awq = true;
        s->rep.seconds_awq = omp_get_wtime() - t0;
    }
    if (s->o.kind == LLMQ_CAL_AWQ) {
        stage(s, index, "round");
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            if (!packed[k]) continue;
            if (llmq_quantize_rows(targets[k].type, w->lin[k], cur.lin[k].rows, cur.lin[k].cols, targets[k].group_size, s->o.rtn_search,
                                   packed[k]) != LLMQ_OK)
                return llmq_error_prefix("layer %d %s", index, llmq_linear_names[k]);
        }
        return LLMQ_OK;
    }
    if (gptq_buffers(s, m) != LLMQ_OK) return llmq_error_prefix("layer %d", index);
    /* GPTAQ's full-precision layer: the f32 copies as AWQ left them (the same
     * function, in the basis the quantized path's inputs are in); the solver
     * reads them and never writes them */
    const llmq_layer fp = cur;
    if (gptq_layer(s, m, index, &cur, &fp, w, targets, packed) != LLMQ_OK) return LLMQ_ERR;
    return s->o.block ? block_step(s, m, index, &fp, w, targets, packed) : LLMQ_OK;
}

/* GPTQ (GPTAQ) of an untied output head on the final hidden states, as the
 * file's final norm sees them: H (and D, from the full-precision stream)
 * formed at the first slice and kept for the others. AWQ alone rounds. */
static int quantize_head(void *p, const llmq_model *m, const float *W, int r0, int rows, int cols, llmq_type type, int group_size,
                         void *packed)
{
    state *s = p;
    if (s->o.kind == LLMQ_CAL_AWQ) return llmq_quantize_rows(type, W, rows, cols, group_size, s->o.rtn_search, packed);
    const llmq_calib *c = s->o.calib;
    const int T = c->seqlen, d = m->cfg.hidden_size, head = m->cfg.n_layers;
    const size_t stride = (size_t)T * d;
    if (cols != d) return llmq_error("output head: %d columns, hidden size %d", cols, d);
    memset(&s->rep, 0, sizeof s->rep);
    s->rep.layer = head;
    if (r0 == 0) {
        if (gptq_buffers(s, m) != LLMQ_OK) return llmq_error_prefix("output head");
        stage(s, head, "hessian head");
        int64_t seen = 0;
        if (hessian_begin(s, d)) return llmq_error_prefix("output head");
        for (int i = 0; i < s->nw; i++) {
            llmq_rmsnorm(s->tmp, s->X + (size_t)i * stride, m->final_norm.data, T, d, m->cfg.rms_norm_eps);
            if (s->o.asymmetric) {
                llmq_rmsnorm(s->fbuf, s->Xf + (size_t)i * stride, m->final_norm.data, T, d, m->cfg.rms_norm_eps);
                if (cross_add(s, d, seen, s->tmp, s->fbuf, T)) return llmq_error_prefix("output head");
            }
            if (hessian_add(s, i, &seen, s->tmp, T)) return llmq_error_prefix("output head");
        }
        if (hessian_finish(s)) return llmq_error_prefix("output head");
    }
    stage(s, head, "solve head");
    float *target;
    /* over ranks, each solves a share of the rows (as solve_step) */
    const size_t row_bytes = llmq_row_size(type, cols);
    const int shared = llmq_dist_size() > 1;
    int a, b;
    llmq_dist_rows(rows, LLMQ_BLAS_TILE_ROWS, &a, &b);
    if (shared) memset(packed, 0, (size_t)rows * row_bytes);
    target = NULL;
    int rc = b > a ? solve_linear(s, W + (size_t)a * cols, b - a, cols, type, group_size, (char *)packed + (size_t)a * row_bytes, NULL, &target, NULL)
                   : LLMQ_OK;
    free(target);
    if (rc == LLMQ_OK && shared) rc = llmq_dist_or(packed, (size_t)rows * row_bytes);
    return rc == LLMQ_OK ? LLMQ_OK : llmq_error_prefix("output head rows %d..%d", r0, r0 + rows - 1);
}

static int layer_done(void *p, const llmq_model *m, int index, const llmq_layer *quantized)
{
    state *s = p;
    const llmq_calib *c = s->o.calib;
    double t0 = omp_get_wtime();
    const int T = c->seqlen, d = m->cfg.hidden_size;
    const size_t stride = (size_t)T * d;
    /* GPTQ left h = X + attention in Y, computed with these very weights (the
     * policy's float linears are converted only after quantize_layer, so their
     * pointers differ and the layer runs whole). */
    bool reuse = s->y_valid && quantized->attn_norm.data == s->y_norm;
    for (int k = 0; reuse && k <= LLMQ_LIN_O; k++) reuse = quantized->lin[k].data == s->y_weights[k];
    stage(s, index, "forward");
    for (int i = 0; i < s->nw; i++) {
        float *x = s->X + (size_t)i * stride;
        if (i > 0) stage_rate(s, index, (int64_t)i * T);
        if (!reuse) {
            if (llmq_layer_forward(m, quantized, index, x, T, NULL, NULL) != LLMQ_OK) return LLMQ_ERR;
            continue;
        }
        const float *h = s->Y + (size_t)i * s->y_stride;
        llmq_rmsnorm(s->tmp, h, quantized->ffn_norm.data, T, d, m->cfg.rms_norm_eps);
        if (llmq_mlp_forward(m, quantized, index, s->tmp, T, s->tmp2, NULL, NULL) != LLMQ_OK) return LLMQ_ERR;
        #pragma omp parallel for simd schedule(static)
        for (size_t e = 0; e < stride; e++) x[e] = h[e] + s->tmp2[e];
    }
    s->y_valid = false;
    /* GPTAQ: the full-precision stream through the source layer (a resumed run's
     * restored layers included) */
    for (int i = 0; s->Xf && i < s->nw; i++)
        if (llmq_layer_forward(m, &m->layers[index], index, s->Xf + (size_t)i * stride, T, NULL, NULL) != LLMQ_OK) return LLMQ_ERR;
    llmq_model_release_workspace(m);
    s->rep.seconds_forward += omp_get_wtime() - t0;
    s->rep.peak_rss_bytes = llmq_peak_rss();
    if (s->o.report && s->rep_pending) s->o.report(s->o.user, &s->rep);
    s->rep_pending = false;
    return LLMQ_OK;
}

bool llmq_calibrated_int16(const llmq_calibrated_opts *o) { return !o->exact_forward && llmq_int16_available(); }
bool llmq_calibrated_bf16(const llmq_calibrated_opts *o) { return !o->exact_forward && llmq_bf16_available(); }

int llmq_calibrated_method(const llmq_calibrated_opts *o, llmq_layer_method *method)
{
    state *s = calloc(1, sizeof *s);
    if (!s) return llmq_error("out of memory");
    s->o = *o;
    static const char *const names[] = {"gptq", "awq", "awq+gptq"}, *const asym_names[] = {"gptaq", "awq", "awq+gptaq"},
                             *const block_names[] = {"block", "awq", "awq+block"}, *const asym_block_names[] = {"gptaq+block", "awq", "awq+gptaq+block"};
    if ((o->asymmetric || o->block) && o->kind == LLMQ_CAL_AWQ) {
        free(s);
        return llmq_error("%s starts from GPTQ's solution: it needs the gptq or awq+gptq method, not awq", o->block ? "block reconstruction" : "GPTAQ");
    }
    const char *const *table = o->block ? (o->asymmetric ? asym_block_names : block_names) : o->asymmetric ? asym_names : names;
    *method = (llmq_layer_method){table[o->kind], s, begin, quantize_layer, layer_done, end, embedded, quantize_head};
    return LLMQ_OK;
}

void llmq_calibrated_method_free(llmq_layer_method *method)
{
    if (!method || !method->state) return;
    release(method->state);
    free(method->state);
    method->state = NULL;
}
