/* Llama forward pass (HF LlamaForCausalLM semantics): embeddings, RMSNorm,
 * RoPE, causal GQA attention, SwiGLU MLP, final norm, lm_head. Activations
 * are fp32; matmuls go through llmq_matmul, which decodes any weight type.
 * The loaders that build an llmq_model are load_safetensors.c and load_gguf.c. */
#include "llmq/model.h"
#include "llmq/error.h"
#include "llmq/kernels.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const llmq_linear_names[LLMQ_LIN_COUNT] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

/* ------------------------------------------------------------ shape, lifetime */

void llmq_linear_shape(const llmq_config *c, llmq_linear k, int *rows, int *cols)
{
    int d = c->hidden_size, qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim, f = c->intermediate_size;
    static const int row_kind[LLMQ_LIN_COUNT] = {1, 2, 2, 0, 3, 3, 0}, col_kind[LLMQ_LIN_COUNT] = {0, 0, 0, 1, 0, 0, 3};
    const int dims[4] = {d, qd, kvd, f}; /* hidden, query width, key/value width, FFN */
    *rows = dims[row_kind[k]];
    *cols = dims[col_kind[k]];
}

bool llmq_linear_has_bias(const llmq_config *c, llmq_linear k)
{
    return (k <= LLMQ_LIN_V && c->qkv_bias) || (k == LLMQ_LIN_O && c->o_bias) || (k >= LLMQ_LIN_GATE && c->mlp_bias);
}

void *llmq_model_own(llmq_model *m, void *p)
{
    void **grown = realloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *grown);
    if (!grown || !p) {
        free(p);
        return NULL;
    }
    m->owned = grown;
    m->owned[m->n_owned++] = p;
    return p;
}

void llmq_model_free(llmq_model *m)
{
    if (!m) return;
    if (m->source_free) m->source_free(m->source);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    llmq_model_release_workspace(m);
    free(m->layers);
    free(m->path);
    free(m);
}

int64_t llmq_model_n_params(const llmq_model *m)
{
    const llmq_config *c = &m->cfg;
    int64_t n = (int64_t)c->vocab_size * c->hidden_size * (c->tie_word_embeddings ? 1 : 2) + c->hidden_size;
    for (int l = 0; l < c->n_layers; l++) {
        const llmq_layer *L = &m->layers[l];
        n += 2 * c->hidden_size + (L->q_norm.data ? L->q_norm.cols : 0) + (L->k_norm.data ? L->k_norm.cols : 0) +
             (L->post_attn_norm.data ? L->post_attn_norm.cols : 0) + (L->post_ffn_norm.data ? L->post_ffn_norm.cols : 0);
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            n += (int64_t)L->lin[k].rows * L->lin[k].cols; /* the experts' stacked shape where they replace it */
            if (L->bias[k].data) n += L->bias[k].cols;
        }
        if (L->router.data) n += (int64_t)L->router.rows * L->router.cols;
    }
    return n;
}

/* ------------------------------------------------------------------ forward */

/* exp(x) for x ≤ 88 without a libm call, so loops over it vectorise: x = k·ln2 + r
 * with |r| ≤ ln2/2 (Cody–Waite split of ln2), e^r by its degree-7 Taylor
 * polynomial (truncation < 5e-9 relative), 2^k by building the exponent. */
static inline float exp_vec(float x)
{
    x = x < -87.0f ? -87.0f : x;
    const float k = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* round to nearest */
    const float r = (x - k * 0.693145752f) - k * 1.42860677e-6f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* Buffers for one forward over up to `cap` tokens, and the RoPE angles of
 * positions 0..cap-1. */
typedef struct llmq_workspace {
    const llmq_model *owner; /* the model it is cached in; NULL for a private one */
    int cap;
    float *xn, *out, *q, *k, *v, *att, *gate, *up, *cosv, *sinv, *scores;
    float *cos_local, *sin_local; /* Gemma 3's sliding-window layers (cfg.rope_local_theta); NULL otherwise */
    bool rope_long; /* LongRoPE: the tables hold the long factors' angles */
    int scores_threads;
} llmq_workspace;

#define ATT_BLOCK 64

static void ws_free(llmq_workspace *ws)
{
    if (!ws) return;
    free(ws->xn); free(ws->out); free(ws->q); free(ws->k); free(ws->v); free(ws->att);
    free(ws->gate); free(ws->up); free(ws->cosv); free(ws->sinv); free(ws->scores);
    free(ws->cos_local); free(ws->sin_local);
    free(ws);
}

static void rope_inv_freq(const llmq_config *c, bool rope_long, double *inv);

/* LongRoPE's set for a pass over n tokens: the long factors past the original context. */
static bool wants_long(const llmq_config *c, int n)
{
    return c->rope_scaling == LLMQ_ROPE_SCALING_LONGROPE && c->rope_original_max_position_phi3 > 0 && n > c->rope_original_max_position_phi3;
}

/* cos/sin of position × inverse frequency, in double, for positions 0..n-1. */
static void rope_tables(const double *inv, int n, size_t half, float *cosv, float *sinv)
{
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < n; t++)
        for (size_t i = 0; i < half; i++) {
            double a = (double)t * inv[i];
            cosv[(size_t)t * half + i] = (float)cos(a);
            sinv[(size_t)t * half + i] = (float)sin(a);
        }
}

/* RoPE angles in double, position × inverse frequency, then cos/sin, for
 * positions 0..n-1 (inv: rope_dims/2 doubles of scratch). local: Gemma 3's
 * local layers, their own base and no context scaling; else the model's
 * scaling, with LongRoPE's factor on cos and sin (transformers'
 * attention_factor; llama.cpp's rope attn_factor). */
static void rope_angles(const llmq_config *c, bool local, int n, double *inv, float *cosv, float *sinv)
{
    const size_t half = (size_t)llmq_rope_dims(c) / 2;
    if (local) {
        for (size_t i = 0; i < half; i++) inv[i] = 1.0 / pow(c->rope_local_theta, (2.0 * (double)i) / c->head_dim);
        rope_tables(inv, n, half, cosv, sinv);
        return;
    }
    rope_inv_freq(c, wants_long(c, n), inv);
    rope_tables(inv, n, half, cosv, sinv);
    if (c->rope_scaling == LLMQ_ROPE_SCALING_LONGROPE && c->rope_attn_factor != 1.0f)
        for (size_t i = 0; i < (size_t)n * half; i++) cosv[i] *= c->rope_attn_factor, sinv[i] *= c->rope_attn_factor;
}

/* A workspace for n tokens: the model's own when it is free and large enough
 * (grown otherwise), else a private one; release with ws_release. The cache
 * belongs to the model it was made for: a struct copy of a model (a view
 * with other layers, as quantizers and tests build) sees a cache whose owner
 * is not itself and works with a private workspace instead. */
static llmq_workspace *ws_acquire(const llmq_model *cm, int n)
{
    llmq_model *m = (llmq_model *)cm; /* the cache is not part of the model's value */
    const llmq_config *c = &m->cfg;
    const bool own = (!m->ws || m->ws->owner == m) && __atomic_exchange_n(&m->ws_busy, 1, __ATOMIC_ACQUIRE) == 0;
    const int threads = omp_get_max_threads();
    if (own && m->ws && m->ws->cap >= n && m->ws->scores_threads >= threads && m->ws->rope_long == wants_long(c, n)) return m->ws;
    if (own) {
        ws_free(m->ws);
        m->ws = NULL;
    }
    llmq_workspace *ws = calloc(1, sizeof *ws);
    const size_t d = (size_t)c->hidden_size, qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    const size_t f = (size_t)c->intermediate_size, half = (size_t)llmq_rope_dims(c) / 2, nn = (size_t)n;
    double *inv = malloc(half * sizeof *inv);
    if (ws) {
        ws->owner = own ? m : NULL;
        ws->cap = n;
        ws->scores_threads = threads;
        ws->xn = malloc(nn * d * sizeof(float));
        ws->out = malloc(nn * d * sizeof(float));
        ws->q = malloc(nn * qd * sizeof(float));
        ws->k = malloc(nn * kvd * sizeof(float));
        ws->v = malloc(nn * kvd * sizeof(float));
        ws->att = malloc(nn * qd * sizeof(float));
        ws->gate = malloc(nn * f * sizeof(float));
        ws->up = malloc(nn * f * sizeof(float));
        ws->cosv = malloc(nn * half * sizeof(float));
        ws->sinv = malloc(nn * half * sizeof(float));
        ws->scores = malloc((size_t)threads * ATT_BLOCK * nn * sizeof(float));
        if (c->rope_local_theta > 0) {
            ws->cos_local = malloc(nn * half * sizeof(float));
            ws->sin_local = malloc(nn * half * sizeof(float));
        }
    }
    if (!ws || !inv || !ws->xn || !ws->out || !ws->q || !ws->k || !ws->v || !ws->att || !ws->gate || !ws->up || !ws->cosv ||
        !ws->sinv || !ws->scores || (c->rope_local_theta > 0 && (!ws->cos_local || !ws->sin_local))) {
        ws_free(ws);
        free(inv);
        if (own) __atomic_store_n(&m->ws_busy, 0, __ATOMIC_RELEASE);
        llmq_error("forward: out of memory for %d tokens", n);
        return NULL;
    }
    ws->rope_long = wants_long(c, n);
    rope_angles(c, false, n, inv, ws->cosv, ws->sinv);
    if (c->rope_local_theta > 0) rope_angles(c, true, n, inv, ws->cos_local, ws->sin_local);
    free(inv);
    if (own) m->ws = ws;
    return ws;
}

static void ws_release(const llmq_model *cm, llmq_workspace *ws)
{
    llmq_model *m = (llmq_model *)cm;
    if (ws->owner == m) __atomic_store_n(&m->ws_busy, 0, __ATOMIC_RELEASE);
    else ws_free(ws);
}

void llmq_model_release_workspace(const llmq_model *cm)
{
    llmq_model *m = (llmq_model *)cm; /* the cache is not part of the model's value */
    if (!m->ws || m->ws->owner != m) {
        m->ws = NULL; /* a struct copy's view of another model's cache */
        return;
    }
    if (__atomic_exchange_n(&m->ws_busy, 1, __ATOMIC_ACQUIRE) != 0) return; /* in use by a running forward */
    ws_free(m->ws);
    m->ws = NULL;
    __atomic_store_n(&m->ws_busy, 0, __ATOMIC_RELEASE);
}

static void rmsnorm(float *out, const float *x, const float *w, int n, int d, float eps)
{
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * d;
        float *ot = out + (size_t)t * d;
        double ss = 0;
        for (int i = 0; i < d; i++) ss += (double)xt[i] * xt[i];
        float r = (float)(1.0 / sqrt(ss / d + eps));
        for (int i = 0; i < d; i++) ot[i] = w[i] * (xt[i] * r);
    }
}

/* Inverse frequencies, with Llama-3's, linear or LongRoPE context scaling when set. */
static void rope_inv_freq(const llmq_config *c, bool rope_long, double *inv)
{
    const int dims = llmq_rope_dims(c), half = dims / 2;
    for (int i = 0; i < half; i++) {
        double f = 1.0 / pow(c->rope_theta, (2.0 * i) / dims);
        if (c->rope_scaling == LLMQ_ROPE_SCALING_LONGROPE) {
            f /= rope_long ? c->rope_long[i] : c->rope_short[i];
        } else if (c->rope_scaling == LLMQ_ROPE_SCALING_LINEAR) {
            f /= c->rope_factor;
        } else if (c->rope_scaling == LLMQ_ROPE_SCALING_LLAMA3) {
            /* Llama 3.1 (transformers _compute_llama3_parameters): long wavelengths are
             * divided by factor, short ones kept, the band between interpolated. */
            double old = c->rope_original_max_position;
            double low_wl = old / c->rope_low_freq_factor, high_wl = old / c->rope_high_freq_factor;
            double wl = 2 * M_PI / f;
            if (wl > low_wl) {
                f /= c->rope_factor;
            } else if (wl >= high_wl) {
                double smooth = (old / wl - c->rope_low_freq_factor) / (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1 - smooth) * f / c->rope_factor + smooth * f;
            }
        }
        inv[i] = f;
    }
}

int llmq_rope_angles(const llmq_model *m, int layer, int n, float *cosv, float *sinv)
{
    const llmq_config *c = &m->cfg;
    const int half = llmq_rope_dims(c) / 2;
    double *inv = malloc((size_t)half * sizeof *inv);
    if (!inv) return llmq_error("rope: out of memory");
    rope_angles(c, llmq_layer_is_swa(c, layer) && c->rope_local_theta > 0, n, inv, cosv, sinv);
    free(inv);
    return LLMQ_OK;
}

/* Rotates q (n_q heads) and k (n_k heads) of every token in one pass. */
static void rope(float *q, int n_q, float *k, int n_k, int n, int head_dim, int dims, const float *cosv, const float *sinv, bool interleaved)
{
    int half = dims / 2; /* the first dims of each head turn (partial rotary); the rest pass */
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < n; t++) {
        const float *ct = cosv + (size_t)t * half, *st = sinv + (size_t)t * half;
        for (int h = 0; h < n_q + n_k; h++) {
            float *x = h < n_q ? q + ((size_t)t * n_q + h) * head_dim : k + ((size_t)t * n_k + h - n_q) * head_dim;
            for (int i = 0; i < half; i++) {
                int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
                float x0 = x[a], x1 = x[b];
                x[a] = x0 * ct[i] - x1 * st[i];
                x[b] = x1 * ct[i] + x0 * st[i];
            }
        }
    }
}

static void add_bias(float *y, const llmq_weight *b, int n)
{
    if (!b->data) return;
    const float *bv = b->data;
    int d = b->cols;
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < n; t++)
        for (int i = 0; i < d; i++) y[(size_t)t * d + i] += bv[i];
}

static int linear(const llmq_layer *L, llmq_linear k, float *y, const float *x, int n)
{
    const llmq_weight *w = &L->lin[k];
    if (llmq_matmul(y, x, n, w->data, w->type, w->cols, w->rows) != LLMQ_OK) return LLMQ_ERR;
    add_bias(y, &L->bias[k], n);
    return LLMQ_OK;
}

/* Causal attention over rows [0, n): out[t, h] = softmax(q_t·K[0..t]ᵀ/√hd)·V[0..t].
 * Work is split into (head, block of 64 queries) items; each computes its
 * score block with one small sgemm, so only a 64×n scratch per thread exists.
 * Items are handed out longest first (the last query blocks see the most
 * keys), which keeps the threads evenly loaded. Gemma: the scale is
 * query_pre_attn_scalar^-½, scores may be soft-capped (Gemma 2), and a
 * sliding-window layer (window > 0) sees keys t-window+1..t only. */
static void attention(float *out, const float *q, const float *k, const float *v, int n, const llmq_config *c, int window, float *scratch)
{
    int hd = c->head_dim, nh = c->n_heads, group = c->n_heads / c->n_kv_heads;
    int qd = nh * hd, kvd = c->n_kv_heads * hd;
    int n_blocks = (n + ATT_BLOCK - 1) / ATT_BLOCK;
    const float scale = c->attn_scale > 0 ? c->attn_scale : 1.0f / sqrtf((float)hd), cap = c->attn_softcap;
    #pragma omp parallel for schedule(dynamic, 1)
    for (int item = 0; item < nh * n_blocks; item++) {
        int blk = n_blocks - 1 - item / nh, h = item % nh;
        int r0 = blk * ATT_BLOCK, r1 = r0 + ATT_BLOCK < n ? r0 + ATT_BLOCK : n, rows = r1 - r0;
        int kv = h / group;
        float *s = scratch + (size_t)omp_get_thread_num() * ATT_BLOCK * n;
        /* Keys 0..r1-1 are the only ones any query of this block can see. */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, r1, hd, scale, q + (size_t)r0 * qd + h * hd, qd,
                    k + (size_t)kv * hd, kvd, 0.0f, s, r1);
        float inv_sum[ATT_BLOCK];
        for (int r = 0; r < rows; r++) {
            float *sr = s + (size_t)r * r1;
            int visible = r0 + r + 1, first = window > 0 && visible > window ? visible - window : 0;
            if (cap > 0)
                for (int j = first; j < visible; j++) sr[j] = cap * tanhf(sr[j] / cap);
            if (first > 0) memset(sr, 0, (size_t)first * sizeof *sr);
            float mx = -INFINITY;
            #pragma omp simd reduction(max : mx)
            for (int j = first; j < visible; j++) mx = sr[j] > mx ? sr[j] : mx;
            float sum = 0;
            #pragma omp simd reduction(+ : sum)
            for (int j = first; j < visible; j++) {
                sr[j] = exp_vec(sr[j] - mx);
                sum += sr[j];
            }
            inv_sum[r] = 1.0f / sum;
            if (visible < r1) memset(sr + visible, 0, (size_t)(r1 - visible) * sizeof *sr);
        }
        /* unnormalised weights times V, then each row divided by its sum */
        float *o = out + (size_t)r0 * qd + h * hd;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, r1, 1.0f, s, r1, v + (size_t)kv * hd, kvd, 0.0f, o, qd);
        for (int r = 0; r < rows; r++) {
            #pragma omp simd
            for (int i = 0; i < hd; i++) o[(size_t)r * qd + i] *= inv_sum[r];
        }
    }
}

int llmq_embed(const llmq_model *m, const int32_t *tokens, int n, float *x) { return llmq_embed_from(m, &m->embed, tokens, n, x); }

int llmq_embed_from(const llmq_model *m, const llmq_weight *e, const int32_t *tokens, int n, float *x)
{
    size_t row_bytes = llmq_row_size(e->type, e->cols);
    const llmq_type_traits *tr = llmq_type_get(e->type);
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= e->rows)
            return llmq_error("token id %d at position %d is outside the vocabulary (0..%d)", tokens[t], t, e->rows - 1);
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < n; t++)
        tr->to_float((const unsigned char *)e->data + (size_t)tokens[t] * row_bytes, x + (size_t)t * e->cols, e->cols);
    if (m->cfg.embed_scale) {
        /* Gemma: × √hidden, in float as llama.cpp does (transformers rounds the factor to the weights' dtype) */
        const float sc = sqrtf((float)e->cols);
        const size_t total = (size_t)n * e->cols;
        #pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < total; i++) x[i] *= sc;
    }
    return LLMQ_OK;
}

/* q, k, v, RoPE and causal attention: att[n × n_heads·head_dim], the input of o_proj. */
static int attention_mix(const llmq_model *m, const llmq_layer *L, int index, const float *xn, int n, float *att,
                         llmq_linear_hook hook, void *user, llmq_workspace *ws)
{
    const llmq_config *c = &m->cfg;
    if (hook) {
        hook(user, index, LLMQ_LIN_Q, xn, n, c->hidden_size);
        hook(user, index, LLMQ_LIN_K, xn, n, c->hidden_size);
        hook(user, index, LLMQ_LIN_V, xn, n, c->hidden_size);
    }
    if (linear(L, LLMQ_LIN_Q, ws->q, xn, n) || linear(L, LLMQ_LIN_K, ws->k, xn, n) || linear(L, LLMQ_LIN_V, ws->v, xn, n))
        return LLMQ_ERR;
    /* Qwen3: each head of q and of k RMS-normed on its own (transformers' Qwen3Attention) */
    if (L->q_norm.data) rmsnorm(ws->q, ws->q, L->q_norm.data, n * c->n_heads, c->head_dim, c->rms_norm_eps);
    if (L->k_norm.data) rmsnorm(ws->k, ws->k, L->k_norm.data, n * c->n_kv_heads, c->head_dim, c->rms_norm_eps);
    const bool swa = llmq_layer_is_swa(c, index), local = swa && ws->cos_local;
    rope(ws->q, c->n_heads, ws->k, c->n_kv_heads, n, c->head_dim, llmq_rope_dims(c), local ? ws->cos_local : ws->cosv, local ? ws->sin_local : ws->sinv,
         m->rope_interleaved);
    attention(att, ws->q, ws->k, ws->v, n, c, swa ? c->sliding_window : 0, ws->scores);
    return LLMQ_OK;
}

static int attention_block(const llmq_model *m, const llmq_layer *L, int index, const float *xn, int n, float *out,
                           llmq_linear_hook hook, void *user, llmq_workspace *ws)
{
    const llmq_config *c = &m->cfg;
    int qd = c->n_heads * c->head_dim;
    if (attention_mix(m, L, index, xn, n, ws->att, hook, user, ws)) return LLMQ_ERR;
    if (hook) hook(user, index, LLMQ_LIN_O, ws->att, n, qd);
    if (linear(L, LLMQ_LIN_O, out, ws->att, n)) return LLMQ_ERR;
    llmq_post_norm(m, L, LLMQ_LIN_O, out, n);
    return LLMQ_OK;
}

/* act[i] = act_fn(gate[i]) · up[i] for the config's activation: SwiGLU's silu or
 * Gemma's GeGLU (gelu_pytorch_tanh). act may be gate. */
static void gated(const llmq_config *c, float *act, const float *gate, const float *up, size_t total)
{
    if (c->hidden_act == LLMQ_ACT_GELU_TANH) {
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < total; i++) {
            float g = gate[i];
            act[i] = 0.5f * g * (1.0f + tanhf(0.7978845608f * (g + 0.044715f * g * g * g))) * up[i];
        }
        return;
    }
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < total; i++) {
        float g = gate[i];
        act[i] = g / (1.0f + exp_vec(-g)) * up[i];
    }
}

/* gate and up, then SwiGLU: act[n × ffn] = silu(gate) ⊙ up, the input of down_proj (act may be ws->gate). */
static int mlp_mix(const llmq_model *m, const llmq_layer *L, int index, const float *xn, int n, float *act, llmq_linear_hook hook,
                   void *user, llmq_workspace *ws)
{
    if (L->experts) return llmq_error("layer %d: a mixture of experts has no single MLP input (llmq_expert_mix)", index);
    int f = m->cfg.intermediate_size;
    float *gate = ws->gate, *up = ws->up;
    if (hook) {
        hook(user, index, LLMQ_LIN_GATE, xn, n, m->cfg.hidden_size);
        hook(user, index, LLMQ_LIN_UP, xn, n, m->cfg.hidden_size);
    }
    if (linear(L, LLMQ_LIN_GATE, gate, xn, n) || linear(L, LLMQ_LIN_UP, up, xn, n)) return LLMQ_ERR;
    gated(&m->cfg, act, gate, up, (size_t)n * f);
    return LLMQ_OK;
}

int llmq_moe_route(const llmq_model *m, const llmq_layer *L, const float *xn, int n, int32_t *idx, float *wts)
{
    const llmq_config *c = &m->cfg;
    const int E = c->n_experts, K = c->n_experts_used;
    if (!L->experts || !L->router.data) return llmq_error("not a mixture-of-experts layer");
    float *logits = malloc((size_t)n * E * sizeof(float));
    if (!logits) return llmq_error("moe: out of memory for %d tokens' router logits", n);
    if (llmq_matmul(logits, xn, n, L->router.data, L->router.type, c->hidden_size, E) != LLMQ_OK) {
        free(logits);
        return LLMQ_ERR;
    }
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < n; t++) {
        const float *z = logits + (size_t)t * E;
        int32_t *it = idx + (size_t)t * K;
        float *wt = wts + (size_t)t * K;
        /* softmax over every expert, then the K largest (ties: the lower index), renormalised */
        float mx = -INFINITY;
        for (int e = 0; e < E; e++) mx = z[e] > mx ? z[e] : mx;
        double sum = 0, kept = 0;
        for (int e = 0; e < E; e++) sum += exp((double)z[e] - mx);
        for (int j = 0; j < K; j++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                bool taken = false;
                for (int i = 0; i < j; i++) taken |= it[i] == e;
                if (!taken && (best < 0 || z[e] > z[best])) best = e;
            }
            it[j] = best;
            wt[j] = (float)(exp((double)z[best] - mx) / sum);
            kept += wt[j];
        }
        for (int j = 0; j < K; j++) wt[j] = (float)(wt[j] / kept);
    }
    free(logits);
    return LLMQ_OK;
}

int llmq_expert_mix(const llmq_model *m, const llmq_expert *e, const float *x, int n, float *act)
{
    const int f = m->cfg.expert_ffn, d = m->cfg.hidden_size;
    float *up = malloc((size_t)n * f * sizeof(float));
    if (!up) return llmq_error("moe: out of memory for %d tokens", n);
    const llmq_weight *g = &e->w[0], *u = &e->w[1];
    int rc = llmq_matmul(act, x, n, g->data, g->type, d, f);
    if (rc == LLMQ_OK) rc = llmq_matmul(up, x, n, u->data, u->type, d, f);
    if (rc == LLMQ_OK) gated(&m->cfg, act, act, up, (size_t)n * f);
    free(up);
    return rc;
}

llmq_expert llmq_expert_view(const llmq_config *c, const void *const data[3], const llmq_type types[3], int e)
{
    const int rows[3] = {c->expert_ffn, c->expert_ffn, c->hidden_size}, cols[3] = {c->hidden_size, c->hidden_size, c->expert_ffn};
    llmq_expert x;
    for (int j = 0; j < 3; j++)
        x.w[j] = (llmq_weight){(const char *)data[j] + llmq_row_size(types[j], cols[j]) * (size_t)rows[j] * e, types[j], rows[j], cols[j]};
    return x;
}

void llmq_moe_group(const int32_t *idx, size_t n, int used, int n_experts, size_t *start, int32_t *order)
{
    memset(start, 0, (size_t)(n_experts + 1) * sizeof *start);
    for (size_t i = 0; i < n * used; i++) start[idx[i] + 1]++;
    for (int e = 0; e < n_experts; e++) start[e + 1] += start[e];
    /* start[e] serves as expert e's cursor, which leaves it at e's end (e+1's start): shifted back after */
    for (size_t i = 0; i < n * used; i++) order[start[idx[i]]++] = (int32_t)i;
    for (int e = n_experts; e > 0; e--) start[e] = start[e - 1];
    start[0] = 0;
}

/* A mixture-of-experts MLP: each token's chosen experts, weighted. Experts run
 * one after another on the rows routed to them; every token's sum is taken in
 * expert order, whatever the thread count. */
static int moe_block(const llmq_model *m, const llmq_layer *L, const float *xn, int n, float *out)
{
    const llmq_config *c = &m->cfg;
    const int E = c->n_experts, K = c->n_experts_used, d = c->hidden_size, f = c->expert_ffn;
    int32_t *idx = malloc((size_t)n * K * sizeof *idx), *order = malloc((size_t)n * K * sizeof *order);
    size_t *start = malloc((size_t)(E + 1) * sizeof *start);
    float *wts = malloc((size_t)n * K * sizeof *wts);
    float *xg = malloc((size_t)n * d * sizeof *xg), *act = malloc((size_t)n * f * sizeof *act), *y = malloc((size_t)n * d * sizeof *y);
    int rc = idx && order && start && wts && xg && act && y ? LLMQ_OK : llmq_error("moe: out of memory for %d tokens", n);
    if (rc == LLMQ_OK) rc = llmq_moe_route(m, L, xn, n, idx, wts);
    if (rc == LLMQ_OK) {
        llmq_moe_group(idx, (size_t)n, K, E, start, order);
        memset(out, 0, (size_t)n * d * sizeof *out);
    }
    for (int e = 0; rc == LLMQ_OK && e < E; e++) {
        const int32_t *mine = order + start[e];
        const int cnt = (int)(start[e + 1] - start[e]);
        if (!cnt) continue;
        for (int i = 0; i < cnt; i++) memcpy(xg + (size_t)i * d, xn + (size_t)(mine[i] / K) * d, (size_t)d * sizeof *xg);
        const llmq_weight *down = &L->experts[e].w[2];
        rc = llmq_expert_mix(m, &L->experts[e], xg, cnt, act);
        if (rc == LLMQ_OK) rc = llmq_matmul(y, act, cnt, down->data, down->type, f, d);
        if (rc != LLMQ_OK) break;
        #pragma omp parallel for schedule(static)
        for (int i = 0; i < cnt; i++) {
            float *o = out + (size_t)(mine[i] / K) * d;
            const float *yi = y + (size_t)i * d;
            const float wi = wts[mine[i]];
            for (int k = 0; k < d; k++) o[k] += wi * yi[k];
        }
    }
    free(idx); free(order); free(start); free(wts); free(xg); free(act); free(y);
    return rc;
}

static int mlp_block(const llmq_model *m, const llmq_layer *L, int index, const float *xn, int n, float *out, llmq_linear_hook hook,
                     void *user, llmq_workspace *ws)
{
    if (L->experts) {
        if (moe_block(m, L, xn, n, out)) return llmq_error_prefix("layer %d", index);
        llmq_post_norm(m, L, LLMQ_LIN_DOWN, out, n);
        return LLMQ_OK;
    }
    if (mlp_mix(m, L, index, xn, n, ws->gate, hook, user, ws)) return LLMQ_ERR;
    if (hook) hook(user, index, LLMQ_LIN_DOWN, ws->gate, n, m->cfg.intermediate_size);
    if (linear(L, LLMQ_LIN_DOWN, out, ws->gate, n)) return LLMQ_ERR;
    llmq_post_norm(m, L, LLMQ_LIN_DOWN, out, n);
    return LLMQ_OK;
}

/* The public halves of a layer: each runs one of the functions above in a
 * workspace acquired for the call. */
typedef int (*half_fn)(const llmq_model *, const llmq_layer *, int, const float *, int, float *, llmq_linear_hook, void *,
                       llmq_workspace *);

static int in_workspace(half_fn fn, const llmq_model *m, const llmq_layer *L, int index, const float *xn, int n, float *out,
                        llmq_linear_hook hook, void *user)
{
    llmq_workspace *ws = ws_acquire(m, n);
    if (!ws) return llmq_error_prefix("layer %d", index);
    int rc = fn(m, L, index, xn, n, out, hook, user, ws);
    ws_release(m, ws);
    return rc;
}

int llmq_attention_mix(const llmq_model *m, const llmq_layer *L, int index, const float *xn, int n, float *att)
{
    return in_workspace(attention_mix, m, L, index, xn, n, att, NULL, NULL);
}

int llmq_mlp_mix(const llmq_model *m, const llmq_layer *L, int index, const float *xn, int n, float *act)
{
    return in_workspace(mlp_mix, m, L, index, xn, n, act, NULL, NULL);
}

int llmq_linear_forward(const llmq_layer *L, llmq_linear k, float *y, const float *x, int n) { return linear(L, k, y, x, n); }

int llmq_attention_forward(const llmq_model *m, const llmq_layer *L, int index, const float *xn, int n, float *out,
                           llmq_linear_hook hook, void *user)
{
    return in_workspace(attention_block, m, L, index, xn, n, out, hook, user);
}

int llmq_mlp_forward(const llmq_model *m, const llmq_layer *L, int index, const float *xn, int n, float *out,
                     llmq_linear_hook hook, void *user)
{
    return in_workspace(mlp_block, m, L, index, xn, n, out, hook, user);
}

void llmq_rmsnorm(float *out, const float *x, const float *weight, int n, int d, float eps) { rmsnorm(out, x, weight, n, d, eps); }

void llmq_post_norm(const llmq_model *m, const llmq_layer *L, llmq_linear which, float *x, int n)
{
    const llmq_weight *w = which == LLMQ_LIN_O ? &L->post_attn_norm : which == LLMQ_LIN_DOWN ? &L->post_ffn_norm : NULL;
    if (w && w->data) rmsnorm(x, x, w->data, n, m->cfg.hidden_size, m->cfg.rms_norm_eps);
}

/* The feed-forward half runs for rows keep0..n-1 only (0 = every row). */
static int layer_block(const llmq_model *m, const llmq_layer *L, int index, float *x, int n, int keep0, llmq_linear_hook hook,
                       void *user, llmq_workspace *ws)
{
    const llmq_config *c = &m->cfg;
    const size_t total = (size_t)n * c->hidden_size;
    float *xn = ws->xn, *out = ws->out;
    rmsnorm(xn, x, L->attn_norm.data, n, c->hidden_size, c->rms_norm_eps);
    if (attention_block(m, L, index, xn, n, out, hook, user, ws)) return LLMQ_ERR;
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < total; i++) x[i] += out[i];
    float *xk = x + (size_t)keep0 * c->hidden_size;
    const int nk = n - keep0;
    const size_t kept = (size_t)nk * c->hidden_size;
    rmsnorm(xn, xk, L->ffn_norm.data, nk, c->hidden_size, c->rms_norm_eps);
    if (mlp_block(m, L, index, xn, nk, out, hook, user, ws)) return LLMQ_ERR;
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < kept; i++) xk[i] += out[i];
    return LLMQ_OK;
}

int llmq_layer_forward(const llmq_model *m, const llmq_layer *L, int index, float *x, int n, llmq_linear_hook hook, void *user)
{
    llmq_workspace *ws = ws_acquire(m, n);
    if (!ws) return llmq_error_prefix("layer %d", index);
    int rc = layer_block(m, L, index, x, n, 0, hook, user, ws);
    ws_release(m, ws);
    return rc;
}

int llmq_layers_forward(const llmq_model *m, float *x, int n, int keep0)
{
    if (keep0 < 0 || keep0 >= n) return llmq_error("forward: rows to keep start at %d of %d", keep0, n);
    llmq_workspace *ws = ws_acquire(m, n);
    if (!ws) return LLMQ_ERR;
    int rc = LLMQ_OK;
    for (int l = 0; rc == LLMQ_OK && l < m->cfg.n_layers; l++) {
        rc = layer_block(m, &m->layers[l], l, x, n, l + 1 == m->cfg.n_layers ? keep0 : 0, NULL, NULL, ws);
        if (rc != LLMQ_OK) llmq_error_prefix("layer %d", l);
    }
    ws_release(m, ws);
    return rc;
}

int llmq_head_forward(const llmq_model *m, const float *x, int n, float *logits)
{
    int d = m->cfg.hidden_size;
    float *xb = malloc((size_t)n * d * sizeof(float));
    if (!xb) return llmq_error("head: out of memory for %d tokens", n);
    rmsnorm(xb, x, m->final_norm.data, n, d, m->cfg.rms_norm_eps);
    int rc = llmq_matmul(logits, xb, n, m->lm_head.data, m->lm_head.type, d, m->lm_head.rows);
    free(xb);
    const float cap = m->cfg.final_softcap;
    if (rc == LLMQ_OK && cap > 0) {
        /* Gemma 2: logits soft-capped */
        const size_t total = (size_t)n * m->lm_head.rows;
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < total; i++) logits[i] = cap * tanhf(logits[i] / cap);
    }
    return rc;
}

int llmq_forward(const llmq_model *m, const int32_t *tokens, int n, float *logits)
{
    float *x = malloc((size_t)n * m->cfg.hidden_size * sizeof(float));
    if (!x) return llmq_error("forward: out of memory for %d tokens", n);
    int rc = llmq_embed(m, tokens, n, x);
    if (rc == LLMQ_OK) rc = llmq_layers_forward(m, x, n, 0);
    if (rc == LLMQ_OK) rc = llmq_head_forward(m, x, n, logits);
    free(x);
    return rc;
}

double llmq_forward_flops(const llmq_model *m, int n)
{
    const llmq_config *c = &m->cfg;
    double per_token = 0;
    for (int k = 0; k < LLMQ_LIN_COUNT; k++)
        per_token += 2.0 * m->layers[0].lin[k].rows * m->layers[0].lin[k].cols *
                     (m->layers[0].experts && k >= LLMQ_LIN_GATE ? (double)c->n_experts_used / c->n_experts : 1.0);
    per_token *= c->n_layers;
    per_token += 2.0 * c->vocab_size * c->hidden_size;
    /* Causal attention: QKᵀ and PV over on average (n+1)/2 keys per query. */
    double att = 2.0 * 2.0 * c->n_heads * c->head_dim * ((double)n * (n + 1) / 2.0) * c->n_layers;
    return per_token * n + att;
}
