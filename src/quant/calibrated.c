#include "llmq/calibrated.h"
#include "llmq/error.h"
#include "llmq/kernels.h"
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
    float *X;   /* n_samples × seqlen × hidden */
    float *tmp; /* one sample */
    float *H, *Hwork;
    int max_cols;
    llmq_layer_report rep;
} state;

static void release(state *s)
{
    free(s->X);
    free(s->tmp);
    free(s->H);
    free(s->Hwork);
    s->X = s->tmp = s->H = s->Hwork = NULL;
}

static int begin(void *p, const llmq_model *m)
{
    state *s = p;
    const llmq_calib *c = s->o.calib;
    int d = m->cfg.hidden_size;
    size_t stride = (size_t)c->seqlen * d;
    s->max_cols = m->cfg.hidden_size > m->cfg.intermediate_size ? m->cfg.hidden_size : m->cfg.intermediate_size;
    if (m->cfg.n_heads * m->cfg.head_dim > s->max_cols) s->max_cols = m->cfg.n_heads * m->cfg.head_dim;
    s->X = malloc((size_t)c->n_samples * stride * sizeof(float));
    s->tmp = malloc(stride * sizeof(float));
    if (s->o.kind != LLMQ_CAL_AWQ) {
        s->H = malloc((size_t)s->max_cols * s->max_cols * sizeof(float));
        s->Hwork = malloc((size_t)s->max_cols * s->max_cols * sizeof(float));
    }
    if (!s->X || !s->tmp || (s->o.kind != LLMQ_CAL_AWQ && (!s->H || !s->Hwork))) {
        release(s);
        return llmq_error("calibration: out of memory for %d samples × %d tokens (%.1f GiB of activations)", c->n_samples, c->seqlen,
                          (double)c->n_samples * stride * 4 / (1 << 30));
    }
    for (int i = 0; i < c->n_samples; i++)
        if (llmq_embed(m, c->tokens + (size_t)i * c->seqlen, c->seqlen, s->X + (size_t)i * stride) != LLMQ_OK) {
            release(s);
            return LLMQ_ERR;
        }
    return LLMQ_OK;
}

static void end(void *p) { release(p); }

/* An llmq_layer whose views point at the driver's f32 copies. */
static void view_f32(const llmq_model *m, llmq_layer_f32 *w, llmq_layer *L)
{
    const llmq_layer *src = &m->layers[0];
    memset(L, 0, sizeof *L);
    int d = m->cfg.hidden_size;
    L->attn_norm = (llmq_weight){w->attn_norm, LLMQ_TYPE_F32, 1, d};
    L->ffn_norm = (llmq_weight){w->ffn_norm, LLMQ_TYPE_F32, 1, d};
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        L->lin[k] = (llmq_weight){w->lin[k], LLMQ_TYPE_F32, src->lin[k].rows, src->lin[k].cols};
        if (w->bias[k]) L->bias[k] = (llmq_weight){w->bias[k], LLMQ_TYPE_F32, 1, src->lin[k].rows};
    }
}

typedef struct {
    llmq_linear which;
    float *H;
    int64_t n_seen;
    int failed;
    double seconds;
} hessian_hook;

static void collect_hessian(void *user, int layer, llmq_linear which, const float *x, int n, int in)
{
    (void)layer;
    hessian_hook *h = user;
    if (which != h->which || h->failed) return;
    double t0 = omp_get_wtime();
    if (llmq_hessian_add(h->H, in, &h->n_seen, x, n) != LLMQ_OK) h->failed = 1;
    h->seconds += omp_get_wtime() - t0;
}

/* The true-sequential groups (IST-DASLab/gptq llama.py `sequential`): each
 * group's inputs are recomputed with the linears before it already quantized. */
static const llmq_linear steps[4][3] = {
    {LLMQ_LIN_Q, LLMQ_LIN_K, LLMQ_LIN_V},
    {LLMQ_LIN_O, LLMQ_LIN_COUNT, LLMQ_LIN_COUNT},
    {LLMQ_LIN_GATE, LLMQ_LIN_UP, LLMQ_LIN_COUNT},
    {LLMQ_LIN_DOWN, LLMQ_LIN_COUNT, LLMQ_LIN_COUNT},
};

static int gptq_layer(state *s, const llmq_model *m, int index, llmq_layer *cur, llmq_layer_f32 *w,
                      const llmq_quant_target targets[LLMQ_LIN_COUNT], void *const packed[LLMQ_LIN_COUNT])
{
    const llmq_calib *c = s->o.calib;
    size_t stride = (size_t)c->seqlen * m->cfg.hidden_size;
    for (int step = 0; step < 4; step++) {
        llmq_linear first = steps[step][0];
        bool any = false;
        for (int j = 0; j < 3 && steps[step][j] != LLMQ_LIN_COUNT; j++) any |= packed[steps[step][j]] != NULL;
        if (!any) continue;
        int cols = cur->lin[first].cols;
        hessian_hook hh = {first, s->H, 0, 0, 0};
        double t0 = omp_get_wtime();
        for (int i = 0; i < c->n_samples; i++) {
            memcpy(s->tmp, s->X + (size_t)i * stride, stride * sizeof(float));
            if (llmq_layer_forward(m, cur, index, s->tmp, c->seqlen, collect_hessian, &hh) != LLMQ_OK) return LLMQ_ERR;
            if (hh.failed) return llmq_error_prefix("layer %d", index);
        }
        s->rep.seconds_hessian += hh.seconds;
        s->rep.seconds_forward += omp_get_wtime() - t0 - hh.seconds;
        /* the forward's buffers need not sit beside the solver's: memory stays within the bound */
        llmq_model_release_workspace(m);
        for (int j = 0; j < 3 && steps[step][j] != LLMQ_LIN_COUNT; j++) {
            llmq_linear k = steps[step][j];
            if (!packed[k]) continue;
            double t1 = omp_get_wtime();
            memcpy(s->Hwork, s->H, (size_t)cols * cols * sizeof(float));
            llmq_gptq_stats gs;
            if (llmq_gptq_quantize(w->lin[k], cur->lin[k].rows, cols, s->Hwork, targets[k].type, targets[k].group_size, &s->o.gptq,
                                   packed[k], NULL, &gs) != LLMQ_OK)
                return llmq_error_prefix("layer %d %s", index, llmq_linear_names[k]);
            s->rep.seconds_solver += omp_get_wtime() - t1;
            s->rep.err_rtn[k] = gs.err_rtn;
            s->rep.err_gptq[k] = gs.err_gptq;
            s->rep.damp[k] = gs.damp_used;
            s->rep.damp_retries += gs.retries;
            cur->lin[k] = (llmq_weight){packed[k], targets[k].type, cur->lin[k].rows, cols};
        }
    }
    return LLMQ_OK;
}

static int quantize_layer(void *p, const llmq_model *m, int index, llmq_layer_f32 *w, const llmq_quant_target targets[LLMQ_LIN_COUNT],
                          void *const packed[LLMQ_LIN_COUNT])
{
    state *s = p;
    memset(&s->rep, 0, sizeof s->rep);
    s->rep.layer = index;
    s->rep.n_layers = m->cfg.n_layers;
    llmq_layer cur;
    view_f32(m, w, &cur);
    if (s->o.kind != LLMQ_CAL_GPTQ) {
        /* AWQ rewrites the f32 copies in place: scaled norms, rows and columns. */
        llmq_type types[LLMQ_LIN_COUNT];
        int group_size = 0;
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            types[k] = packed[k] ? targets[k].type : LLMQ_TYPE_F16;
            if (packed[k]) group_size = targets[k].group_size;
        }
        double t0 = omp_get_wtime();
        if (llmq_awq_layer(m, index, &cur, s->X, s->o.calib->n_samples, s->o.calib->seqlen, types, group_size, &s->o.awq, &s->rep.awq) != LLMQ_OK)
            return llmq_error_prefix("layer %d AWQ", index);
        s->rep.has_awq = true;
        s->rep.seconds_awq = omp_get_wtime() - t0;
    }
    if (s->o.kind == LLMQ_CAL_AWQ) {
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            if (!packed[k]) continue;
            if (llmq_quantize_rows(targets[k].type, w->lin[k], cur.lin[k].rows, cur.lin[k].cols, targets[k].group_size, s->o.rtn_search,
                                   packed[k]) != LLMQ_OK)
                return llmq_error_prefix("layer %d %s", index, llmq_linear_names[k]);
        }
        return LLMQ_OK;
    }
    return gptq_layer(s, m, index, &cur, w, targets, packed);
}

static int layer_done(void *p, const llmq_model *m, int index, const llmq_layer *quantized)
{
    state *s = p;
    const llmq_calib *c = s->o.calib;
    double t0 = omp_get_wtime();
    size_t stride = (size_t)c->seqlen * m->cfg.hidden_size;
    for (int i = 0; i < c->n_samples; i++)
        if (llmq_layer_forward(m, quantized, index, s->X + (size_t)i * stride, c->seqlen, NULL, NULL) != LLMQ_OK) return LLMQ_ERR;
    llmq_model_release_workspace(m);
    s->rep.seconds_forward += omp_get_wtime() - t0;
    s->rep.peak_rss_bytes = llmq_peak_rss();
    if (s->o.report) s->o.report(s->o.user, &s->rep);
    return LLMQ_OK;
}

int llmq_calibrated_method(const llmq_calibrated_opts *o, llmq_layer_method *method)
{
    state *s = calloc(1, sizeof *s);
    if (!s) return llmq_error("out of memory");
    s->o = *o;
    static const char *const names[] = {"gptq", "awq", "awq+gptq"};
    *method = (llmq_layer_method){names[o->kind], s, begin, quantize_layer, layer_done, end};
    return LLMQ_OK;
}

void llmq_calibrated_method_free(llmq_layer_method *method)
{
    if (!method || !method->state) return;
    release(method->state);
    free(method->state);
    method->state = NULL;
}
