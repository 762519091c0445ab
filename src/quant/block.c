/* Block-output reconstruction (llmq/block.h): SignSGD on rounding offsets and
 * grid factors against the MSE of a decoder block's output. */
#include "llmq/block.h"
#include "llmq/error.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

llmq_block_opts llmq_block_default_opts(void)
{
    return (llmq_block_opts){.iters = 200, .batch = 8, .lr = 0, .factor_range = 0.5f, .seed = 0};
}

/* One quantized linear's learnable state. */
typedef struct {
    llmq_type type;
    int rows, cols, G, ng;
    int8_t *q;      /* current codes */
    float *c;       /* each weight's position on its grid (code units) as GPTQ rounded it, within 0.499 of GPTQ's code */
    float *delta;   /* rounding offsets, [-0.5, 0.5] */
    llmq_grid *g0;  /* GPTQ's grids */
    llmq_grid *g;   /* the current grids, in the type's precision */
    float *fa, *fb; /* per group: factors on scale and offset */
    float *W, *dW;  /* the current dequantized weights, their gradient */
} lin_state;

static void lin_free(lin_state *l)
{
    free(l->q); free(l->c); free(l->delta); free(l->g0); free(l->g); free(l->fa); free(l->fb); free(l->W); free(l->dW);
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The grid the type stores nearest to g0 with its scale × fa and offset × fb. */
static llmq_grid regrid(llmq_type t, const llmq_grid *g0, float fa, float fb)
{
    const bool has_min = llmq_type_has_min(t);
    int lo, hi, mhi;
    if (llmq_subblock_code_range(t, &lo, &hi, &mhi)) {
        const int sc = clampi((int)lrintf((float)g0->sc * fa), lo, hi);
        const int mc = has_min ? clampi((int)lrintf((float)g0->mc * fb), 0, mhi) : g0->mc;
        return llmq_grid_from_fields(t, g0->d, g0->m, sc, mc);
    }
    const uint16_t d = llmq_f32_to_f16(llmq_f16_to_f32(g0->d) * fa);
    const uint16_t m = has_min ? llmq_f32_to_f16(llmq_f16_to_f32(g0->m) * fb) : g0->m;
    return llmq_grid_from_fields(t, d, m, 0, 0);
}

static int lin_init(lin_state *l, llmq_type t, int rows, int cols, int group_size, const void *packed, const float *pre, bool rtn_init)
{
    memset(l, 0, sizeof *l);
    l->type = t, l->rows = rows, l->cols = cols;
    l->G = llmq_group_resolve(t, group_size);
    if (llmq_group_check(t, cols, l->G) != LLMQ_OK) return LLMQ_ERR;
    l->ng = llmq_group_count(cols, l->G);
    const size_t n = (size_t)rows * cols, ng = (size_t)rows * l->ng;
    l->q = malloc(n), l->c = malloc(n * sizeof(float)), l->delta = calloc(n, sizeof(float));
    l->W = malloc(n * sizeof(float)), l->dW = malloc(n * sizeof(float));
    l->g0 = malloc(ng * sizeof(llmq_grid)), l->g = malloc(ng * sizeof(llmq_grid));
    l->fa = malloc(ng * sizeof(float)), l->fb = malloc(ng * sizeof(float));
    if (!l->q || !l->c || !l->delta || !l->W || !l->dW || !l->g0 || !l->g || !l->fa || !l->fb)
        return llmq_error("out of memory for a %d × %d linear's rounding state", rows, cols);
    const size_t row_bytes = llmq_row_size(t, cols);
    int failed = 0;
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const char *src = (const char *)packed + (size_t)r * row_bytes;
        int8_t *q = l->q + (size_t)r * cols;
        llmq_grid *g = l->g0 + (size_t)r * l->ng;
        if (llmq_unpack_codes(t, src, cols, q) != LLMQ_OK || llmq_unpack_grids(t, src, cols, l->G, g) != LLMQ_OK) {
            #pragma omp atomic write
            failed = 1;
            continue;
        }
        for (int j = 0; j < l->ng; j++) {
            l->g[(size_t)r * l->ng + j] = g[j];
            l->fa[(size_t)r * l->ng + j] = l->fb[(size_t)r * l->ng + j] = 1.0f;
        }
        for (int i = 0; i < cols; i++) {
            const llmq_grid *gr = &g[i / l->G];
            const float v = pre[(size_t)r * cols + i];
            float pos = gr->scale != 0.0f ? (v - gr->offset) / gr->scale + (float)gr->zero : (float)q[i];
            float off = pos - (float)q[i];
            off = off > 0.499f ? 0.499f : off < -0.499f ? -0.499f : off == off ? off : 0.0f;
            l->c[(size_t)r * cols + i] = rtn_init ? pos : (float)q[i] + off;
        }
    }
    return failed ? llmq_error_prefix("reading the packed rows") : LLMQ_OK;
}

/* The weights GPTQ's codes (as unpacked, before any step) give on its grids. */
static void lin_dequantize(lin_state *l)
{
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < l->rows; r++)
        for (int i = 0; i < l->cols; i++) {
            const size_t e = (size_t)r * l->cols + i;
            l->W[e] = llmq_grid_value(&l->g0[(size_t)r * l->ng + i / l->G], l->q[e]);
        }
}

/* Codes and dequantized weights: c + δ rounded, on the current grids. */
static void lin_materialize(lin_state *l)
{
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < l->rows; r++)
        for (int i = 0; i < l->cols; i++) {
            const size_t e = (size_t)r * l->cols + i;
            const llmq_grid *g = &l->g[(size_t)r * l->ng + i / l->G];
            const int q = llmq_round_clamp(l->c[e] + l->delta[e], g->qmin, g->qmax);
            l->q[e] = (int8_t)q;
            l->W[e] = llmq_grid_value(g, q);
        }
}

static inline float sign(float v) { return (float)((v > 0) - (v < 0)); }

/* One SignSGD step of size lr from dW: W = scale·(round(c + δ) − zero) +
 * offset, so with the rounding straight through ∂W/∂δ = scale (zero where the
 * code is clamped), and with scale = fa·scale₀, offset = fb·offset₀ (straight
 * through their rounding to the stored precision) ∂W/∂fa = scale₀·(q − zero),
 * ∂W/∂fb = offset₀: the factors rescale a group's values with its codes held,
 * a learned step size (LSQ, Esser et al. 2019), where AutoRound re-rounds the
 * weights on the moved grid. Each group's grid is then stored again. Row by
 * row: no reduction spans threads. */
static void lin_step(lin_state *l, float lr, float range)
{
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < l->rows; r++)
        for (int j = 0; j < l->ng; j++) {
            const size_t gi = (size_t)r * l->ng + j;
            const llmq_grid *g = &l->g[gi], *g0 = &l->g0[gi];
            const int i0 = j * l->G, i1 = i0 + l->G < l->cols ? i0 + l->G : l->cols;
            double sa = 0, sb = 0;
            for (int i = i0; i < i1; i++) {
                const size_t e = (size_t)r * l->cols + i;
                const float grad = l->dW[e], u = l->c[e] + l->delta[e];
                sa += (double)grad * ((float)l->q[e] - (float)g0->zero);
                sb += grad;
                if (u < (float)g->qmin - 0.5f || u > (float)g->qmax + 0.5f) continue;
                float d = l->delta[e] - lr * sign(grad * g->scale);
                l->delta[e] = d > 0.5f ? 0.5f : d < -0.5f ? -0.5f : d;
            }
            float fa = l->fa[gi] - lr * sign((float)(sa * g0->scale)), fb = l->fb[gi];
            if (llmq_type_has_min(l->type)) fb -= lr * sign((float)(sb * g0->offset));
            l->fa[gi] = fa < 1 - range ? 1 - range : fa > 1 + range ? 1 + range : fa;
            l->fb[gi] = fb < 1 - range ? 1 - range : fb > 1 + range ? 1 + range : fb;
            l->g[gi] = regrid(l->type, g0, l->fa[gi], l->fb[gi]);
        }
}

/* Σ (y − target)² over n tokens of d, per token in parallel then in order. */
static double sq_error(const float *y, const float *target, int n, int d, double *part, float *dy)
{
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < n; t++) {
        double s = 0;
        for (int i = 0; i < d; i++) {
            const size_t e = (size_t)t * d + i;
            const float diff = y[e] - target[e];
            if (dy) dy[e] = diff;
            s += (double)diff * diff;
        }
        part[t] = s;
    }
    double s = 0;
    for (int t = 0; t < n; t++) s += part[t];
    return s;
}

typedef struct {
    const float *X, *target;
    int n_samples, T, d, batch;
    llmq_block_tape *tape;
    float *xb, *tb, *yb, *dy;
    double *part;
} data_ctx;

/* The block-output MSE per element over every window with the weights in bw. */
static double mse_all(data_ctx *dc, const llmq_block_weights *bw)
{
    const size_t stride = (size_t)dc->T * dc->d;
    double s = 0;
    for (int i0 = 0; i0 < dc->n_samples; i0 += dc->batch) {
        const int nb = dc->n_samples - i0 < dc->batch ? dc->n_samples - i0 : dc->batch;
        if (llmq_block_forward(dc->tape, bw, dc->X + (size_t)i0 * stride, nb, dc->yb) != LLMQ_OK) return -1;
        s += sq_error(dc->yb, dc->target + (size_t)i0 * stride, nb * dc->T, dc->d, dc->part, NULL);
    }
    return s / ((double)dc->n_samples * stride);
}

static uint64_t next_random(uint64_t *s)
{
    /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int llmq_block_reconstruct(const llmq_model *m, int layer, const llmq_block_weights *base, const float *X, const float *target,
                           int n_samples, int seqlen, const llmq_type types[LLMQ_LIN_COUNT], const int group_sizes[LLMQ_LIN_COUNT],
                           void *const packed[LLMQ_LIN_COUNT], const float *const pre_round[LLMQ_LIN_COUNT], const llmq_block_opts *opts,
                           llmq_block_stats *stats)
{
    const llmq_block_opts o = opts ? *opts : llmq_block_default_opts();
    if (o.iters < 0 || o.batch < 1 || !(o.factor_range >= 0 && o.factor_range < 1))
        return llmq_error("block reconstruction: bad options (iters %d, batch %d, factor range %g)", o.iters, o.batch, (double)o.factor_range);
    if (n_samples < 1) return llmq_error("block reconstruction: no calibration windows");
    for (int k = 0; k < LLMQ_LIN_COUNT; k++)
        if (packed[k] && llmq_grid_unit(types[k]) > 0 && (types[k] == LLMQ_TYPE_IQ4_NL || types[k] == LLMQ_TYPE_IQ4_XS))
            return llmq_error("block reconstruction: %s is %s, whose non-linear levels it does not tune", llmq_linear_names[k],
                              llmq_type_name(types[k]));
        else if (packed[k] && llmq_grid_unit(types[k]) == 0)
            return llmq_error("block reconstruction: %s is %s, which has no grids", llmq_linear_names[k], llmq_type_name(types[k]));
    const double t0 = omp_get_wtime();
    const llmq_config *c = &m->cfg;
    const int d = c->hidden_size, T = seqlen, batch = o.batch < n_samples ? o.batch : n_samples;
    const size_t stride = (size_t)T * d;
    lin_state lin[LLMQ_LIN_COUNT];
    memset(lin, 0, sizeof lin);
    void *saved[LLMQ_LIN_COUNT] = {0};
    data_ctx dc = {X, target, n_samples, T, d, batch, NULL, NULL, NULL, NULL, NULL, NULL};
    int *order = malloc((size_t)n_samples * sizeof *order);
    int rc = LLMQ_ERR;
    llmq_block_weights bw = *base;
    float *dw[LLMQ_LIN_COUNT] = {0};
    if (!(dc.tape = llmq_block_tape_new(m, layer, batch, T))) goto done;
    dc.xb = malloc((size_t)batch * stride * sizeof(float));
    dc.tb = malloc((size_t)batch * stride * sizeof(float));
    dc.yb = malloc((size_t)batch * stride * sizeof(float));
    dc.dy = malloc((size_t)batch * stride * sizeof(float));
    dc.part = malloc((size_t)batch * T * sizeof(double));
    if (!order || !dc.xb || !dc.tb || !dc.yb || !dc.dy || !dc.part) {
        llmq_error("block reconstruction: out of memory for %d windows of %d tokens", batch, T);
        goto done;
    }
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        if (!packed[k]) continue;
        int rows, cols;
        llmq_linear_shape(c, k, &rows, &cols);
        const size_t bytes = (size_t)rows * llmq_row_size(types[k], cols);
        if (lin_init(&lin[k], types[k], rows, cols, group_sizes[k], packed[k], !o.rtn_init && pre_round[k] ? pre_round[k] : base->w[k], o.rtn_init) != LLMQ_OK ||
            !(saved[k] = malloc(bytes))) {
            llmq_error_prefix("block reconstruction %s", llmq_linear_names[k]);
            goto done;
        }
        memcpy(saved[k], packed[k], bytes);
        lin_dequantize(&lin[k]);
        bw.w[k] = lin[k].W;
        dw[k] = lin[k].dW;
    }
    /* GPTQ's error, which the result must beat; from RTN's start the loop begins elsewhere */
    const double mse_init = mse_all(&dc, &bw);
    if (mse_init < 0) goto done;
    for (int k = 0; o.rtn_init && k < LLMQ_LIN_COUNT; k++)
        if (packed[k]) lin_materialize(&lin[k]);
    const float lr0 = o.lr > 0 ? o.lr : 1.0f / (float)(o.iters > 0 ? o.iters : 1);
    uint64_t rng = o.seed * 0x2545f4914f6cdd1dull + (uint64_t)layer;
    int next = n_samples;
    for (int it = 0; it < o.iters; it++) {
        /* the next `batch` windows of a shuffled order (Fisher–Yates), reshuffled when used up */
        if (next + batch > n_samples) {
            for (int i = 0; i < n_samples; i++) order[i] = i;
            for (int i = n_samples - 1; i > 0; i--) {
                const int j = (int)(next_random(&rng) % (uint64_t)(i + 1)), tmp = order[i];
                order[i] = order[j], order[j] = tmp;
            }
            next = 0;
        }
        for (int b = 0; b < batch; b++) {
            memcpy(dc.xb + b * stride, X + (size_t)order[next + b] * stride, stride * sizeof(float));
            memcpy(dc.tb + b * stride, target + (size_t)order[next + b] * stride, stride * sizeof(float));
        }
        next += batch;
        if (llmq_block_forward(dc.tape, &bw, dc.xb, batch, dc.yb) != LLMQ_OK) goto done;
        const double loss = sq_error(dc.yb, dc.tb, batch * T, d, dc.part, dc.dy) / ((double)batch * stride);
        if (llmq_block_backward(dc.tape, &bw, dc.dy, dw, NULL) != LLMQ_OK) goto done;
        const float lr = lr0 * (1.0f - (float)it / (float)o.iters); /* linear decay to zero (AutoRound's LinearLR) */
        for (int k = 0; k < LLMQ_LIN_COUNT; k++)
            if (packed[k]) {
                lin_step(&lin[k], lr, o.factor_range);
                lin_materialize(&lin[k]);
            }
        if (o.progress) o.progress(o.user, it + 1, o.iters, loss);
    }
    const double mse_final = o.iters > 0 ? mse_all(&dc, &bw) : mse_init;
    if (mse_final < 0) goto done;
    const bool keep = mse_final < mse_init;
    int64_t changed = 0, regridded = 0;
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        if (!packed[k]) continue;
        const lin_state *l = &lin[k];
        const size_t row_bytes = llmq_row_size(l->type, l->cols);
        int failed = 0;
        if (keep) {
            #pragma omp parallel for schedule(static) reduction(+ : changed, regridded)
            for (int r = 0; r < l->rows; r++) {
                for (int j = 0; j < l->ng; j++) {
                    const llmq_grid *a = &l->g[(size_t)r * l->ng + j], *b = &l->g0[(size_t)r * l->ng + j];
                    regridded += a->scale != b->scale || a->offset != b->offset;
                }
                int8_t *q0 = malloc((size_t)l->cols);
                const char *old = (const char *)saved[k] + (size_t)r * row_bytes;
                if (!q0 || llmq_unpack_codes(l->type, old, l->cols, q0) != LLMQ_OK ||
                    llmq_pack_codes(l->type, l->q + (size_t)r * l->cols, l->cols, l->G, l->g + (size_t)r * l->ng,
                                    (char *)packed[k] + (size_t)r * row_bytes) != LLMQ_OK) {
                    #pragma omp atomic write
                    failed = 1;
                }
                for (int i = 0; q0 && i < l->cols; i++) changed += q0[i] != l->q[(size_t)r * l->cols + i];
                free(q0);
            }
        }
        if (failed) {
            memcpy(packed[k], saved[k], (size_t)l->rows * row_bytes);
            llmq_error_prefix("block reconstruction %s: packing", llmq_linear_names[k]);
            goto done;
        }
    }
    if (stats) {
        stats->mse_init = mse_init;
        stats->mse_final = mse_final;
        stats->kept = keep;
        stats->codes_changed = keep ? changed : 0;
        stats->grids_changed = keep ? regridded : 0;
        stats->seconds = omp_get_wtime() - t0;
    }
    rc = LLMQ_OK;
done:
    if (rc != LLMQ_OK)
        for (int k = 0; k < LLMQ_LIN_COUNT; k++)
            if (packed[k] && saved[k]) memcpy(packed[k], saved[k], (size_t)lin[k].rows * llmq_row_size(types[k], lin[k].cols));
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        lin_free(&lin[k]);
        free(saved[k]);
    }
    llmq_block_tape_free(dc.tape);
    free(dc.xb); free(dc.tb); free(dc.yb); free(dc.dy); free(dc.part);
    free(order);
    return rc;
}
