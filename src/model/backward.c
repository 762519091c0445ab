/* The training forward and backward of one Llama decoder block (llmq/backward.h).
 * Notation per token (row vectors): xn1 = rms(x)·g1; q, k, v = xn1·Wᵀ (+b);
 * q, k turned by RoPE; att = softmax(scale·q·kᵀ, causal)·v per head; h = x +
 * att·Woᵀ; xn2 = rms(h)·g2; act = silu(xn2·Wgᵀ) ⊙ (xn2·Wuᵀ); y = h + act·Wdᵀ.
 * A linear Y = X·Wᵀ has dW = dYᵀ·X and dX = dY·W: two sgemms. */
#include "llmq/backward.h"
#include "llmq/blas.h"
#include "llmq/error.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

struct llmq_block_tape {
    int max_seq, T, d, qd, kvd, f, nh, nkv, hd, half, threads;
    float eps, scale;
    bool interleaved;
    float *cosv, *sinv; /* T × half */
    /* the forward's activations (N = n_seq·T tokens) */
    const float *x;
    int n_seq;
    float *xn1, *q, *k, *v, *lse, *att, *h, *xn2, *gate, *up, *act;
    /* the backward's */
    float *gbuf, *dxn, *dh, *datt, *dq, *dk, *dv;
    float *scratch; /* per thread: two T × T */
};

int llmq_block_check(const llmq_model *m, int layer)
{
    const llmq_config *c = &m->cfg;
    const llmq_layer *L = &m->layers[layer];
    const char *what = c->n_experts > 0 || L->experts ? "a mixture of experts"
                       : c->qk_norm || L->q_norm.data ? "q/k norms (Qwen3)"
                       : c->post_norms || L->post_attn_norm.data ? "post-norms (Gemma)"
                       : c->attn_softcap > 0 ? "attention soft-capping"
                       : c->hidden_act != LLMQ_ACT_SILU ? "a GeGLU MLP"
                       : llmq_layer_is_swa(c, layer) ? "a sliding window"
                                                     : NULL;
    if (what) return llmq_error("block reconstruction: layer %d has %s, which its backward pass does not cover", layer, what);
    return LLMQ_OK;
}

void llmq_block_tape_free(llmq_block_tape *t)
{
    if (!t) return;
    float *bufs[] = {t->cosv, t->sinv, t->xn1, t->q,   t->k,    t->v,   t->lse, t->att,  t->h,  t->xn2,
                     t->gate, t->up,   t->act, t->gbuf, t->dxn, t->dh, t->datt, t->dq,
                     t->dk,   t->dv,   t->scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
    free(t);
}

llmq_block_tape *llmq_block_tape_new(const llmq_model *m, int layer, int max_seq, int seqlen)
{
    if (llmq_block_check(m, layer) != LLMQ_OK) return NULL;
    const llmq_config *c = &m->cfg;
    llmq_block_tape *t = calloc(1, sizeof *t);
    if (!t) {
        llmq_error("block tape: out of memory");
        return NULL;
    }
    t->max_seq = max_seq, t->T = seqlen, t->d = c->hidden_size, t->f = c->intermediate_size;
    t->nh = c->n_heads, t->nkv = c->n_kv_heads, t->hd = c->head_dim;
    t->qd = t->nh * t->hd, t->kvd = t->nkv * t->hd, t->half = llmq_rope_dims(c) / 2;
    t->eps = c->rms_norm_eps, t->scale = c->attn_scale > 0 ? c->attn_scale : 1.0f / sqrtf((float)t->hd);
    t->interleaved = m->rope_interleaved;
    t->threads = omp_get_max_threads();
    const size_t N = (size_t)max_seq * seqlen, T = (size_t)seqlen;
    bool ok = (t->cosv = malloc(T * t->half * sizeof(float))) && (t->sinv = malloc(T * t->half * sizeof(float))) &&
              (t->xn1 = malloc(N * t->d * sizeof(float))) && (t->xn2 = malloc(N * t->d * sizeof(float))) &&
              (t->h = malloc(N * t->d * sizeof(float))) && (t->q = malloc(N * t->qd * sizeof(float))) &&
              (t->k = malloc(N * t->kvd * sizeof(float))) && (t->v = malloc(N * t->kvd * sizeof(float))) &&
              (t->lse = malloc(N * t->nh * sizeof(float))) && (t->att = malloc(N * t->qd * sizeof(float))) &&
              (t->gate = malloc(N * t->f * sizeof(float))) && (t->up = malloc(N * t->f * sizeof(float))) &&
              (t->act = malloc(N * t->f * sizeof(float))) && (t->gbuf = malloc(N * t->f * sizeof(float))) &&
              (t->dxn = malloc(N * t->d * sizeof(float))) && (t->dh = malloc(N * t->d * sizeof(float))) &&
              (t->datt = malloc(N * t->qd * sizeof(float))) && (t->dq = malloc(N * t->qd * sizeof(float))) &&
              (t->dk = malloc(N * t->kvd * sizeof(float))) && (t->dv = malloc(N * t->kvd * sizeof(float))) &&
              (t->scratch = malloc((size_t)t->threads * 2 * T * T * sizeof(float)));
    if (!ok) {
        llmq_block_tape_free(t);
        llmq_error("block tape: out of memory for %d × %d tokens (%.1f GiB)", max_seq, seqlen,
                   (double)N * (8.0 * t->d + 4.0 * t->f + 6.0 * t->qd) * 4 / (1 << 30));
        return NULL;
    }
    if (llmq_rope_angles(m, layer, seqlen, t->cosv, t->sinv) != LLMQ_OK) {
        llmq_block_tape_free(t);
        return NULL;
    }
    return t;
}

/* ------------------------------------------------------------ pieces */

/* y[n × rows] = x[n × cols]·Wᵀ + b */
static void linear(float *y, const float *x, int n, const float *W, const float *b, int rows, int cols)
{
    llmq_sgemm(CblasNoTrans, CblasTrans, n, rows, cols, 1.0f, x, cols, W, cols, 0.0f, y, rows);
    if (!b) return;
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < n; t++)
        for (int i = 0; i < rows; i++) y[(size_t)t * rows + i] += b[i];
}

/* dW[rows × cols] = dyᵀ·x (when wanted); dx[n × cols] (+)= dy·W */
static void linear_back(float *dW, float *dx, bool accumulate, const float *dy, const float *x, int n, const float *W, int rows, int cols)
{
    if (dW) llmq_sgemm(CblasTrans, CblasNoTrans, rows, cols, n, 1.0f, dy, rows, x, cols, 0.0f, dW, cols);
    if (dx) llmq_sgemm(CblasNoTrans, CblasNoTrans, n, cols, rows, 1.0f, dy, rows, W, cols, accumulate ? 1.0f : 0.0f, dx, cols);
}

/* dx (+)= r·(g ⊙ dout) − x·r³·⟨dout, g ⊙ x⟩/d: RMSNorm's backward, with
 * r = 1/√(mean x² + eps) computed again as llmq_rmsnorm computes it */
static void rms_back(float *dx, bool accumulate, const float *dout, const float *x, const float *g, int n, int d, float eps)
{
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * d, *dt = dout + (size_t)t * d;
        float *ot = dx + (size_t)t * d;
        double ss = 0, dot = 0;
        for (int i = 0; i < d; i++) {
            ss += (double)xt[i] * xt[i];
            dot += (double)dt[i] * g[i] * xt[i];
        }
        const double rt = (float)(1.0 / sqrt(ss / d + eps)), c = rt * rt * rt * dot / d;
        for (int i = 0; i < d; i++) {
            const float v = (float)(rt * g[i] * dt[i] - xt[i] * c);
            ot[i] = accumulate ? ot[i] + v : v;
        }
    }
}

/* Turns every head of n tokens (heads of width hd, rows of heads·hd) by the
 * position's angles (inverse: the transpose, for the backward). */
static void rope(const llmq_block_tape *t, float *x, int n, int heads, bool inverse)
{
    const int hd = t->hd, half = t->half, T = t->T;
    const float sign = inverse ? -1.0f : 1.0f;
    #pragma omp parallel for schedule(static)
    for (int tok = 0; tok < n; tok++) {
        const float *ct = t->cosv + (size_t)(tok % T) * half, *st = t->sinv + (size_t)(tok % T) * half;
        for (int h = 0; h < heads; h++) {
            float *xh = x + ((size_t)tok * heads + h) * hd;
            for (int i = 0; i < half; i++) {
                const int a = t->interleaved ? 2 * i : i, b = t->interleaved ? 2 * i + 1 : i + half;
                const float x0 = xh[a], x1 = xh[b], s = sign * st[i];
                xh[a] = x0 * ct[i] - x1 * s;
                xh[b] = x1 * ct[i] + x0 * s;
            }
        }
    }
}

/* The causal scores of query head h of sequence s, scale·q·kᵀ, into S (T × T). */
static void scores(const llmq_block_tape *t, int s, int h, float *S)
{
    const int T = t->T, kv = h / (t->nh / t->nkv);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, t->hd, t->scale, t->q + (size_t)s * T * t->qd + (size_t)h * t->hd, t->qd,
                t->k + (size_t)s * T * t->kvd + (size_t)kv * t->hd, t->kvd, 0.0f, S, T);
}

/* Work items of the attention: (sequence, key/value head), each doing its
 * group's query heads in turn, so dK and dV of a head have one writer. */
static void attention_forward(llmq_block_tape *t, int n_seq)
{
    const int T = t->T, group = t->nh / t->nkv;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(t->threads)
    for (int item = 0; item < n_seq * t->nkv; item++) {
        const int s = item / t->nkv, kv = item % t->nkv;
        float *P = t->scratch + (size_t)omp_get_thread_num() * 2 * T * T;
        for (int h = kv * group; h < (kv + 1) * group; h++) {
            scores(t, s, h, P);
            for (int i = 0; i < T; i++) {
                float *pr = P + (size_t)i * T, mx = -INFINITY;
                for (int j = 0; j <= i; j++) mx = pr[j] > mx ? pr[j] : mx;
                double sum = 0;
                for (int j = 0; j <= i; j++) sum += (pr[j] = expf(pr[j] - mx));
                const float inv = (float)(1.0 / sum);
                for (int j = 0; j <= i; j++) pr[j] *= inv;
                for (int j = i + 1; j < T; j++) pr[j] = 0.0f;
                t->lse[((size_t)s * T + i) * t->nh + h] = mx + (float)log(sum);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, t->hd, T, 1.0f, P, T, t->v + (size_t)s * T * t->kvd + (size_t)kv * t->hd,
                        t->kvd, 0.0f, t->att + (size_t)s * T * t->qd + (size_t)h * t->hd, t->qd);
        }
    }
}

/* From datt: dq, dk, dv (of the turned q and k). P recomputed from the scores
 * and the log-sum-exp; dS = P ⊙ (dP − ⟨dO, O⟩) per query (softmax's backward). */
static void attention_back(llmq_block_tape *t, int n_seq)
{
    const int T = t->T, hd = t->hd, group = t->nh / t->nkv, qd = t->qd, kvd = t->kvd;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(t->threads)
    for (int item = 0; item < n_seq * t->nkv; item++) {
        const int s = item / t->nkv, kv = item % t->nkv;
        float *P = t->scratch + (size_t)omp_get_thread_num() * 2 * T * T, *dP = P + (size_t)T * T;
        const float *K = t->k + (size_t)s * T * kvd + (size_t)kv * hd, *V = t->v + (size_t)s * T * kvd + (size_t)kv * hd;
        float *dK = t->dk + (size_t)s * T * kvd + (size_t)kv * hd, *dV = t->dv + (size_t)s * T * kvd + (size_t)kv * hd;
        for (int h = kv * group; h < (kv + 1) * group; h++) {
            const size_t off = (size_t)s * T * qd + (size_t)h * hd;
            const float *dO = t->datt + off, *O = t->att + off, *Q = t->q + off;
            scores(t, s, h, P);
            for (int i = 0; i < T; i++) {
                float *pr = P + (size_t)i * T;
                const float l = t->lse[((size_t)s * T + i) * t->nh + h];
                for (int j = 0; j <= i; j++) pr[j] = expf(pr[j] - l);
                for (int j = i + 1; j < T; j++) pr[j] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dO, qd, V, kvd, 0.0f, dP, T);
            for (int i = 0; i < T; i++) {
                double dot = 0;
                for (int e = 0; e < hd; e++) dot += (double)dO[(size_t)i * qd + e] * O[(size_t)i * qd + e];
                float *pr = P + (size_t)i * T, *dr = dP + (size_t)i * T;
                for (int j = 0; j < T; j++) dr[j] = pr[j] * (dr[j] - (float)dot);
            }
            const float beta = h == kv * group ? 0.0f : 1.0f;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, t->scale, dP, T, K, kvd, 0.0f, t->dq + off, qd);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, t->scale, dP, T, Q, qd, beta, dK, kvd);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, P, T, dO, qd, beta, dV, kvd);
        }
    }
}

/* ------------------------------------------------------------ block */

int llmq_block_forward(llmq_block_tape *t, const llmq_block_weights *bw, const float *x, int n_seq, float *y)
{
    if (n_seq < 1 || n_seq > t->max_seq) return llmq_error("block forward: %d sequences, the tape holds %d", n_seq, t->max_seq);
    const int N = n_seq * t->T, d = t->d, f = t->f;
    t->x = x, t->n_seq = n_seq;
    llmq_rmsnorm(t->xn1, x, bw->attn_norm, N, d, t->eps);
    linear(t->q, t->xn1, N, bw->w[LLMQ_LIN_Q], bw->bias[LLMQ_LIN_Q], t->qd, d);
    linear(t->k, t->xn1, N, bw->w[LLMQ_LIN_K], bw->bias[LLMQ_LIN_K], t->kvd, d);
    linear(t->v, t->xn1, N, bw->w[LLMQ_LIN_V], bw->bias[LLMQ_LIN_V], t->kvd, d);
    rope(t, t->q, N, t->nh, false);
    rope(t, t->k, N, t->nkv, false);
    attention_forward(t, n_seq);
    linear(t->h, t->att, N, bw->w[LLMQ_LIN_O], bw->bias[LLMQ_LIN_O], d, t->qd);
    const size_t nd = (size_t)N * d, nf = (size_t)N * f;
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < nd; i++) t->h[i] += x[i];
    llmq_rmsnorm(t->xn2, t->h, bw->ffn_norm, N, d, t->eps);
    linear(t->gate, t->xn2, N, bw->w[LLMQ_LIN_GATE], bw->bias[LLMQ_LIN_GATE], f, d);
    linear(t->up, t->xn2, N, bw->w[LLMQ_LIN_UP], bw->bias[LLMQ_LIN_UP], f, d);
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < nf; i++) {
        const float g = t->gate[i];
        t->act[i] = g / (1.0f + expf(-g)) * t->up[i];
    }
    linear(y, t->act, N, bw->w[LLMQ_LIN_DOWN], bw->bias[LLMQ_LIN_DOWN], d, f);
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < nd; i++) y[i] += t->h[i];
    return LLMQ_OK;
}

int llmq_block_backward(llmq_block_tape *t, const llmq_block_weights *bw, const float *dy, float *const dw[LLMQ_LIN_COUNT], float *dx)
{
    if (!t->x) return llmq_error("block backward: no forward to differentiate");
    const int N = t->n_seq * t->T, d = t->d, f = t->f;
    const size_t nd = (size_t)N * d, nf = (size_t)N * f;
    /* MLP: down, then SwiGLU (d silu(g) = σ(g)·(1 + g·(1 − σ(g)))), then gate and up */
    linear_back(dw[LLMQ_LIN_DOWN], t->gbuf, false, dy, t->act, N, bw->w[LLMQ_LIN_DOWN], d, f);
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < nf; i++) {
        const float g = t->gate[i], sg = 1.0f / (1.0f + expf(-g)), da = t->gbuf[i];
        t->gbuf[i] = da * t->up[i] * sg * (1.0f + g * (1.0f - sg)); /* d gate */
        t->act[i] = da * g * sg;                                   /* d up */
    }
    linear_back(dw[LLMQ_LIN_GATE], t->dxn, false, t->gbuf, t->xn2, N, bw->w[LLMQ_LIN_GATE], f, d);
    linear_back(dw[LLMQ_LIN_UP], t->dxn, true, t->act, t->xn2, N, bw->w[LLMQ_LIN_UP], f, d);
    memcpy(t->dh, dy, nd * sizeof(float));
    rms_back(t->dh, true, t->dxn, t->h, bw->ffn_norm, N, d, t->eps);
    /* attention */
    linear_back(dw[LLMQ_LIN_O], t->datt, false, t->dh, t->att, N, bw->w[LLMQ_LIN_O], d, t->qd);
    attention_back(t, t->n_seq);
    rope(t, t->dq, N, t->nh, true);
    rope(t, t->dk, N, t->nkv, true);
    linear_back(dw[LLMQ_LIN_Q], t->dxn, false, t->dq, t->xn1, N, bw->w[LLMQ_LIN_Q], t->qd, d);
    linear_back(dw[LLMQ_LIN_K], t->dxn, true, t->dk, t->xn1, N, bw->w[LLMQ_LIN_K], t->kvd, d);
    linear_back(dw[LLMQ_LIN_V], t->dxn, true, t->dv, t->xn1, N, bw->w[LLMQ_LIN_V], t->kvd, d);
    if (dx) {
        memcpy(dx, t->dh, nd * sizeof(float));
        rms_back(dx, true, t->dxn, t->x, bw->attn_norm, N, d, t->eps);
    }
    return LLMQ_OK;
}
