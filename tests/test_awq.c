#include "llmq/awq.h"
#include "llmq/blocks.h"
#include "llmq/calib.h"
#include "llmq/error.h"
#include "llmq/rtn.h"
#include "llmq/synth.h"
#include "llmq/tokenizer.h"
#include "test_util.h"

#include <jansson.h>
#include <math.h>

/* ------------------------------------------------------------ helpers */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float gauss(uint64_t *s)
{
    double u1 = ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
    double u2 = (double)(rng_next(s) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static const llmq_type all_q4_0[LLMQ_LIN_COUNT] = {LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_0,
                                                   LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_0};

static void fill_types(llmq_type *types, llmq_type t)
{
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) types[k] = t;
}

/* A one-layer model held in memory: random F32 weights (std 1/sqrt(in)),
 * unit norms, n_kv_heads == n_heads so v->o scaling applies. */
typedef struct {
    llmq_model m;
    llmq_layer layer;
    float *buf;
} mem_model;

static void mem_model_init(mem_model *mm, uint64_t seed)
{
    memset(mm, 0, sizeof *mm);
    llmq_config *c = &mm->m.cfg;
    c->hidden_size = 256, c->intermediate_size = 512, c->n_layers = 1, c->n_heads = 4, c->n_kv_heads = 4;
    c->head_dim = 64, c->vocab_size = 16, c->max_position_embeddings = 512, c->rms_norm_eps = 1e-5f;
    c->rope_theta = 10000.0;
    int d = 256, f = 512;
    const int shape[LLMQ_LIN_COUNT][2] = {{d, d}, {d, d}, {d, d}, {d, d}, {f, d}, {f, d}, {d, f}};
    size_t total = 2 * (size_t)d;
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) total += (size_t)shape[k][0] * shape[k][1];
    mm->buf = malloc(total * sizeof(float));
    float *p = mm->buf;
    uint64_t s = seed;
    for (int i = 0; i < 2 * d; i++) p[i] = 1.0f;
    mm->layer.attn_norm = (llmq_weight){.data = p, .type = LLMQ_TYPE_F32, .rows = 1, .cols = d};
    mm->layer.ffn_norm = (llmq_weight){.data = p + d, .type = LLMQ_TYPE_F32, .rows = 1, .cols = d};
    p += 2 * d;
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        int rows = shape[k][0], cols = shape[k][1];
        for (size_t i = 0; i < (size_t)rows * cols; i++) p[i] = gauss(&s) / sqrtf((float)cols);
        mm->layer.lin[k] = (llmq_weight){.data = p, .type = LLMQ_TYPE_F32, .rows = rows, .cols = cols};
        p += (size_t)rows * cols;
    }
    mm->m.layers = &mm->layer;
}

static float *copy_layer(const llmq_layer *src, llmq_layer *dst)
{
    size_t total = 2 * (size_t)src->attn_norm.cols;
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) total += (size_t)src->lin[k].rows * src->lin[k].cols;
    float *buf = malloc(total * sizeof(float)), *p = buf;
    *dst = *src;
    memcpy(p, src->attn_norm.data, src->attn_norm.cols * sizeof(float));
    dst->attn_norm.data = p, p += src->attn_norm.cols;
    memcpy(p, src->ffn_norm.data, src->ffn_norm.cols * sizeof(float));
    dst->ffn_norm.data = p, p += src->ffn_norm.cols;
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        size_t n = (size_t)src->lin[k].rows * src->lin[k].cols;
        memcpy(p, src->lin[k].data, n * sizeof(float));
        dst->lin[k].data = p, p += n;
    }
    return buf;
}

/* The layer with every linear fake-quantized to types[k] (what the file would hold). */
static float *fake_quant_layer(const llmq_layer *src, llmq_layer *dst, const llmq_type *types, int group_size, bool search)
{
    float *buf = copy_layer(src, dst);
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        llmq_weight *w = &dst->lin[k];
        cr_assert_eq(llmq_fake_quant(types[k], group_size, search, w->data, w->rows, w->cols, (float *)w->data), LLMQ_OK, "%s",
                     llmq_last_error());
    }
    return buf;
}

/* Inputs n_samples × seqlen × 256: unit Gaussians with the planted channels 50× larger. */
static float *planted_inputs(int n_tokens, int d, uint64_t seed, const int *outliers, int n_outliers)
{
    float *x = malloc((size_t)n_tokens * d * sizeof(float));
    uint64_t s = seed;
    for (size_t i = 0; i < (size_t)n_tokens * d; i++) x[i] = gauss(&s);
    for (int t = 0; t < n_tokens; t++)
        for (int j = 0; j < n_outliers; j++) x[(size_t)t * d + outliers[j]] *= 50.0f;
    return x;
}

/* Runs `layer` over n_samples causal sequences of x (in place: x becomes the output). */
static void layer_forward_samples(const llmq_model *m, const llmq_layer *layer, int index, float *x, int n_samples, int seqlen)
{
    int d = m->cfg.hidden_size;
    for (int s = 0; s < n_samples; s++)
        cr_assert_eq(llmq_layer_forward(m, layer, index, x + (size_t)s * seqlen * d, seqlen, NULL, NULL), LLMQ_OK, "%s",
                     llmq_last_error());
}

static double mse(const float *a, const float *b, size_t n)
{
    double e = 0;
    for (size_t i = 0; i < n; i++) e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return e / (double)n;
}

static double max_abs(const float *a, size_t n)
{
    double mx = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(a[i]));
    return mx;
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double mx = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)a[i] - b[i]));
    return mx;
}

/* Output MSE of a (fake-quantized) layer against the original one on x. */
static double layer_output_mse(const llmq_model *m, const llmq_layer *orig, const llmq_layer *test, int index, const float *x,
                               int n_samples, int seqlen)
{
    size_t n = (size_t)n_samples * seqlen * m->cfg.hidden_size;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    memcpy(a, x, n * sizeof(float));
    memcpy(b, x, n * sizeof(float));
    layer_forward_samples(m, orig, index, a, n_samples, seqlen);
    layer_forward_samples(m, test, index, b, n_samples, seqlen);
    double e = mse(a, b, n);
    free(a);
    free(b);
    return e;
}

/* ------------------------------------------------------------ fake quantization */

Test(awq, fake_quant_is_what_the_file_holds)
{
    int rows = 4, cols = 512;
    float *w = malloc((size_t)rows * cols * sizeof(float)), *fq = malloc((size_t)rows * cols * sizeof(float));
    float *deq = malloc((size_t)cols * sizeof(float));
    uint64_t s = 7;
    for (int i = 0; i < rows * cols; i++) w[i] = gauss(&s) * (i % 97 == 0 ? 8.0f : 1.0f);
    const llmq_type types[] = {LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_1, LLMQ_TYPE_Q4_K, LLMQ_TYPE_Q6_K};
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        llmq_type t = types[ti];
        cr_assert_eq(llmq_fake_quant(t, 128, false, w, rows, cols, fq), LLMQ_OK, "%s", llmq_last_error());
        unsigned char packed[1024];
        for (int r = 0; r < rows; r++) {
            cr_assert_eq(llmq_quantize_row(t, w + (size_t)r * cols, cols, 128, false, packed), LLMQ_OK, "%s", llmq_last_error());
            llmq_type_get(t)->to_float(packed, deq, cols);
            for (int i = 0; i < cols; i++)
                cr_assert_eq(fq[(size_t)r * cols + i], deq[i], "%s row %d col %d: %g vs %g", llmq_type_get(t)->name, r, i,
                             (double)fq[(size_t)r * cols + i], (double)deq[i]);
        }
    }
    cr_assert_neq(llmq_fake_quant(LLMQ_TYPE_Q4_K, 100, false, w, rows, cols, fq), LLMQ_OK);
    free(w); free(fq); free(deq);
}

/* ------------------------------------------------------------ folding */

Test(awq, folding_random_scales_keeps_the_layer_function)
{
    mem_model mm;
    mem_model_init(&mm, 11);
    int ns = 2, T = 64, d = 256;
    const int outl[] = {5, 100};
    float *x = planted_inputs(ns * T, d, 3, outl, 2);
    size_t n = (size_t)ns * T * d;
    float *ref = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
    memcpy(ref, x, n * sizeof(float));
    layer_forward_samples(&mm.m, &mm.layer, 0, ref, ns, T);

    llmq_layer scaled;
    float *buf = copy_layer(&mm.layer, &scaled);
    uint64_t s = 99;
    float sc[512];
    for (int g = 0; g < LLMQ_AWQ_GROUP_COUNT; g++) {
        int cols = g == LLMQ_AWQ_DOWN ? 512 : 256;
        for (int i = 0; i < cols; i++) sc[i] = expf(gauss(&s)); /* spans ~e^±3 */
        cr_assert_eq(llmq_awq_apply_scales(&mm.m, &scaled, (llmq_awq_group)g, sc), LLMQ_OK, "%s", llmq_last_error());
    }
    cr_assert_neq(((const float *)scaled.lin[LLMQ_LIN_Q].data)[0], ((const float *)mm.layer.lin[LLMQ_LIN_Q].data)[0]);
    memcpy(got, x, n * sizeof(float));
    layer_forward_samples(&mm.m, &scaled, 0, got, ns, T);
    double diff = max_abs_diff(ref, got, n), scale = max_abs(ref, n);
    cr_assert_lt(diff, 1e-4 * scale, "max |Δ| %g for outputs up to %g", diff, scale);

    /* A non-positive scale is refused. */
    sc[3] = 0.0f;
    cr_assert_neq(llmq_awq_apply_scales(&mm.m, &scaled, LLMQ_AWQ_QKV, sc), LLMQ_OK);
    cr_assert(strstr(llmq_last_error(), "scale 3"), "%s", llmq_last_error());
    free(buf); free(x); free(ref); free(got); free(mm.buf);
    llmq_model_release_workspace(&mm.m);
}

/* ------------------------------------------------------------ planted outliers */

/* AWQ's held-out output error must be below `factor` × RTN's. */
static void planted_case(llmq_type t, bool duo, bool rtn_search, int n_grid, double factor)
{
    mem_model mm;
    mem_model_init(&mm, 21);
    int ns = 4, T = 64, d = 256;
    const int outl[] = {17, 90, 151, 230};
    float *calib = planted_inputs(ns * T, d, 5, outl, 4);
    float *eval = planted_inputs(ns * T, d, 6, outl, 4);
    llmq_type types[LLMQ_LIN_COUNT];
    fill_types(types, t);

    llmq_layer rtn, awq, awq_q;
    float *rtn_buf = fake_quant_layer(&mm.layer, &rtn, types, 128, rtn_search);
    float *awq_buf = copy_layer(&mm.layer, &awq);
    llmq_awq_opts o;
    llmq_awq_defaults(&o);
    o.duo = duo;
    o.rtn_search = rtn_search;
    o.n_grid = n_grid;
    llmq_awq_stats st;
    cr_assert_eq(llmq_awq_layer(&mm.m, 0, &awq, calib, ns, T, types, 128, &o, &st), LLMQ_OK, "%s", llmq_last_error());
    float *awq_q_buf = fake_quant_layer(&awq, &awq_q, types, 128, rtn_search);

    double e_rtn = layer_output_mse(&mm.m, &mm.layer, &rtn, 0, eval, ns, T);
    double e_awq = layer_output_mse(&mm.m, &mm.layer, &awq_q, 0, eval, ns, T);
    cr_log_info("planted %s%s%s: held-out output MSE rtn %.4g awq %.4g (%.2fx); r = %.2f %.2f %.2f %.2f", llmq_type_get(t)->name,
                duo ? " duo" : "", rtn_search ? " search" : "", e_rtn, e_awq, e_awq / e_rtn, st.ratio[0], st.ratio[1], st.ratio[2], st.ratio[3]);
    cr_assert_lt(e_awq, factor * e_rtn, "%s: AWQ %g vs RTN %g", llmq_type_get(t)->name, e_awq, e_rtn);
    cr_assert(st.searched[LLMQ_AWQ_QKV] && st.searched[LLMQ_AWQ_VO] && st.searched[LLMQ_AWQ_GATE_UP] && st.searched[LLMQ_AWQ_DOWN]);
    for (int g = 0; g < LLMQ_AWQ_GROUP_COUNT; g++)
        cr_assert_leq(st.loss_best[g], st.loss_rtn[g], "group %d", g);
    if (!rtn_search) { /* the searched grids already absorb part of what scaling buys */
        cr_assert_gt(st.ratio[LLMQ_AWQ_QKV], 0.0f);
        cr_assert_gt(st.ratio[LLMQ_AWQ_GATE_UP], 0.0f);
        cr_assert_lt(st.loss_best[LLMQ_AWQ_QKV], factor * st.loss_rtn[LLMQ_AWQ_QKV]);
    }
    free(rtn_buf); free(awq_buf); free(awq_q_buf); free(calib); free(eval); free(mm.buf);
    llmq_model_release_workspace(&mm.m);
}

/* --awq-search-tokens: a budget covering every sample is the full search, bit
 * for bit; one sample's worth judges the q,k,v ratios on the first sample
 * alone (its RTN loss is the one a run on that sample alone measures). */
Test(awq, search_tokens_judges_the_block_outputs_on_the_first_samples)
{
    mem_model mm;
    mem_model_init(&mm, 23);
    const int ns = 4, T = 64, d = 256;
    const int outl[] = {17, 90, 151, 230};
    float *calib = planted_inputs(ns * T, d, 7, outl, 4);
    llmq_type types[LLMQ_LIN_COUNT];
    fill_types(types, LLMQ_TYPE_Q4_0);
    llmq_awq_opts o;
    llmq_awq_defaults(&o);
    cr_assert_eq(o.search_tokens, 8192, "the documented default");
    const int budgets[4] = {0, ns * T, T, T};
    const int samples[4] = {ns, ns, ns, 1};
    llmq_layer out[4];
    float *bufs[4];
    llmq_awq_stats st[4];
    for (int c = 0; c < 4; c++) {
        bufs[c] = copy_layer(&mm.layer, &out[c]);
        o.search_tokens = budgets[c];
        cr_assert_eq(llmq_awq_layer(&mm.m, 0, &out[c], calib, samples[c], T, types, 128, &o, &st[c]), LLMQ_OK, "%s", llmq_last_error());
    }
    for (int k = 0; k < LLMQ_LIN_COUNT; k++)
        cr_assert_arr_eq(out[0].lin[k].data, out[1].lin[k].data, sizeof(float) * out[0].lin[k].rows * out[0].lin[k].cols, "%s",
                         llmq_linear_names[k]);
    for (int g = 0; g < LLMQ_AWQ_GROUP_COUNT; g++) {
        cr_assert_eq(st[0].ratio[g], st[1].ratio[g]);
        cr_assert_eq(st[0].loss_best[g], st[1].loss_best[g]);
    }
    cr_assert_eq(st[2].loss_rtn[LLMQ_AWQ_QKV], st[3].loss_rtn[LLMQ_AWQ_QKV]);
    cr_assert_neq(st[2].loss_rtn[LLMQ_AWQ_QKV], st[0].loss_rtn[LLMQ_AWQ_QKV]);
    o.search_tokens = -1;
    cr_assert_eq(llmq_awq_layer(&mm.m, 0, &out[0], calib, ns, T, types, 128, &o, NULL), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "search_tokens -1"), "%s", llmq_last_error());
    for (int c = 0; c < 4; c++) free(bufs[c]);
    free(calib);
    free(mm.buf);
    llmq_model_release_workspace(&mm.m);
}

Test(awq, planted_outliers_q4_0) { planted_case(LLMQ_TYPE_Q4_0, false, false, 20, 0.7); }
Test(awq, planted_outliers_q4_k) { planted_case(LLMQ_TYPE_Q4_K, false, false, 20, 0.7); }
Test(awq, planted_outliers_q4_1_duo) { planted_case(LLMQ_TYPE_Q4_1, true, false, 20, 0.7); }
/* Against RTN with the error-minimising grid search: a stronger baseline
 * (here the scales alone gain little; the clip search does most), and slow
 * to fake-quantize, hence the coarser ratio grid. */
Test(awq, planted_outliers_q4_0_rtn_search) { planted_case(LLMQ_TYPE_Q4_0, false, true, 10, 0.9); }

/* ------------------------------------------------------------ clip search */

typedef struct {
    llmq_linear which;
    int seqlen, sample;
    size_t step;
    int cols, n_clip;
    float *dst;
} clip_capture;

static void clip_hook(void *user, int layer, llmq_linear which, const float *x, int n_tokens, int in)
{
    (void)layer;
    clip_capture *c = user;
    if (which != c->which) return;
    c->cols = in;
    for (int t = 0; t < n_tokens; t++) {
        size_t global = (size_t)c->sample * c->seqlen + t;
        if (global % c->step == 0) memcpy(c->dst + (global / c->step) * in, x + (size_t)t * in, (size_t)in * sizeof(float));
    }
}

/* Output MSE of x·Wtestᵀ against x·Wrefᵀ over n rows of x. */
static double linear_mse(const float *x, int n, const llmq_weight *wref, const float *wtest)
{
    double e = 0;
    const float *wr = wref->data;
    for (int t = 0; t < n; t++)
        for (int o = 0; o < wref->rows; o++) {
            double a = 0, b = 0;
            for (int i = 0; i < wref->cols; i++) {
                a += (double)x[(size_t)t * wref->cols + i] * wr[(size_t)o * wref->cols + i];
                b += (double)x[(size_t)t * wref->cols + i] * wtest[(size_t)o * wref->cols + i];
            }
            e += (a - b) * (a - b);
        }
    return e / ((double)n * wref->rows);
}

Test(awq, clip_never_increases_the_sampled_output_error)
{
    mem_model mm;
    mem_model_init(&mm, 31);
    /* Heavy-tailed weights give clipping something to win. */
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        float *w = (float *)mm.layer.lin[k].data;
        size_t n = (size_t)mm.layer.lin[k].rows * mm.layer.lin[k].cols;
        for (size_t i = 0; i < n; i++) w[i] = w[i] * w[i] * w[i];
    }
    int ns = 4, T = 64, d = 256;
    const int outl[] = {40, 200};
    float *x = planted_inputs(ns * T, d, 8, outl, 2);
    llmq_type types[LLMQ_LIN_COUNT];
    fill_types(types, LLMQ_TYPE_Q4_1);
    llmq_awq_opts o;
    llmq_awq_defaults(&o);
    o.clip_tokens = 64;

    llmq_layer scaled, clipped;
    float *sbuf = copy_layer(&mm.layer, &scaled), *cbuf = copy_layer(&mm.layer, &clipped);
    llmq_awq_stats ss, cs;
    o.clip = false;
    cr_assert_eq(llmq_awq_layer(&mm.m, 0, &scaled, x, ns, T, types, 128, &o, &ss), LLMQ_OK, "%s", llmq_last_error());
    o.clip = true;
    cr_assert_eq(llmq_awq_layer(&mm.m, 0, &clipped, x, ns, T, types, 128, &o, &cs), LLMQ_OK, "%s", llmq_last_error());
    for (int g = 0; g < LLMQ_AWQ_GROUP_COUNT; g++) cr_assert_eq(ss.ratio[g], cs.ratio[g], "clipping changed the scales");
    cr_assert(!cs.clipped[LLMQ_LIN_Q] && !cs.clipped[LLMQ_LIN_K]);

    /* The clip tokens (every step-th), recomputed here from the scaled layer. */
    size_t N = (size_t)ns * T, step = N / 64;
    int n_clip = (int)((N + step - 1) / step), any_clip = 0;
    for (int k = LLMQ_LIN_V; k < LLMQ_LIN_COUNT; k++) {
        cr_assert(cs.clipped[k], "%s", llmq_linear_names[k]);
        clip_capture cap = {.which = (llmq_linear)k, .seqlen = T, .step = step, .n_clip = n_clip};
        cap.dst = malloc((size_t)n_clip * 512 * sizeof(float));
        float *xs = malloc(N * d * sizeof(float));
        memcpy(xs, x, N * d * sizeof(float));
        for (int s = 0; s < ns; s++) {
            cap.sample = s;
            cr_assert_eq(llmq_layer_forward(&mm.m, &scaled, 0, xs + (size_t)s * T * d, T, clip_hook, &cap), LLMQ_OK);
        }
        const llmq_weight *w = &scaled.lin[k];
        size_t nw = (size_t)w->rows * w->cols;
        float *q_noclip = malloc(nw * sizeof(float)), *q_clip = malloc(nw * sizeof(float));
        llmq_fake_quant(LLMQ_TYPE_Q4_1, 128, false, w->data, w->rows, w->cols, q_noclip);
        llmq_fake_quant(LLMQ_TYPE_Q4_1, 128, false, clipped.lin[k].data, w->rows, w->cols, q_clip);
        double before = linear_mse(cap.dst, n_clip, w, q_noclip), after = linear_mse(cap.dst, n_clip, w, q_clip);
        cr_log_info("clip %s: ratio %.3f, sampled output MSE %.4g -> %.4g (stats %.4g -> %.4g)", llmq_linear_names[k],
                    cs.clip_ratio[k], before, after, cs.clip_mse_before[k], cs.clip_mse_after[k]);
        cr_assert_leq(after, before * (1 + 1e-6), "%s: %g > %g", llmq_linear_names[k], after, before);
        cr_assert_leq(cs.clip_mse_after[k], cs.clip_mse_before[k]);
        cr_assert_lt(fabs(cs.clip_mse_before[k] - before), 1e-3 * before + 1e-12, "stats %g vs %g", cs.clip_mse_before[k], before);
        if (after < 0.99 * before && cs.clip_ratio[k] < 1.0f) any_clip++;
        free(q_noclip); free(q_clip); free(cap.dst); free(xs);
    }
    cr_assert_gt(any_clip, 0, "no linear was clipped");
    free(sbuf); free(cbuf); free(x); free(mm.buf);
    llmq_model_release_workspace(&mm.m);
}

Test(awq, float_linears_are_scaled_but_not_clipped)
{
    mem_model mm;
    mem_model_init(&mm, 51);
    int ns = 2, T = 32, d = 256;
    const int outl[] = {3, 77};
    float *x = planted_inputs(ns * T, d, 10, outl, 2);
    llmq_type types[LLMQ_LIN_COUNT];
    fill_types(types, LLMQ_TYPE_Q4_0);
    types[LLMQ_LIN_DOWN] = LLMQ_TYPE_F16;
    types[LLMQ_LIN_UP] = LLMQ_TYPE_F32;
    llmq_awq_opts o;
    llmq_awq_defaults(&o);
    o.n_grid = 4;
    llmq_awq_stats st;
    llmq_layer L;
    float *buf = copy_layer(&mm.layer, &L);
    cr_assert_eq(llmq_awq_layer(&mm.m, 0, &L, x, ns, T, types, 128, &o, &st), LLMQ_OK, "%s", llmq_last_error());
    cr_assert(st.clipped[LLMQ_LIN_V] && st.clipped[LLMQ_LIN_GATE]);
    cr_assert(!st.clipped[LLMQ_LIN_UP] && !st.clipped[LLMQ_LIN_DOWN]);
    /* up -> down with down in F16: every ratio is nearly lossless. */
    cr_assert(st.searched[LLMQ_AWQ_DOWN]);
    cr_assert_lt(st.loss_rtn[LLMQ_AWQ_DOWN], 1e-3 * st.loss_rtn[LLMQ_AWQ_GATE_UP], "%g vs %g", st.loss_rtn[LLMQ_AWQ_DOWN], st.loss_rtn[LLMQ_AWQ_GATE_UP]);
    free(buf); free(x); free(mm.buf);
    llmq_model_release_workspace(&mm.m);
}

/* ------------------------------------------------------------ errors */

Test(awq, bad_input_is_an_error)
{
    mem_model mm;
    mem_model_init(&mm, 41);
    int ns = 1, T = 32, d = 256;
    float *x = planted_inputs(ns * T, d, 9, NULL, 0);
    llmq_layer L;
    float *buf = copy_layer(&mm.layer, &L);

    x[5 * d + 7] = NAN;
    cr_assert_neq(llmq_awq_layer(&mm.m, 0, &L, x, ns, T, all_q4_0, 128, NULL, NULL), LLMQ_OK);
    cr_assert(strstr(llmq_last_error(), "non-finite"), "%s", llmq_last_error());
    x[5 * d + 7] = 0.0f;

    ((float *)L.lin[LLMQ_LIN_UP].data)[3] = INFINITY;
    cr_assert_neq(llmq_awq_layer(&mm.m, 0, &L, x, ns, T, all_q4_0, 128, NULL, NULL), LLMQ_OK);
    cr_assert(strstr(llmq_last_error(), "up_proj"), "%s", llmq_last_error());
    ((float *)L.lin[LLMQ_LIN_UP].data)[3] = 0.0f;

    llmq_type types[LLMQ_LIN_COUNT];
    fill_types(types, LLMQ_TYPE_Q4_K);
    cr_assert_neq(llmq_awq_layer(&mm.m, 0, &L, x, ns, T, types, 96, NULL, NULL), LLMQ_OK);
    cr_assert(strstr(llmq_last_error(), "q4_k"), "%s", llmq_last_error());

    L.lin[LLMQ_LIN_O].type = LLMQ_TYPE_BF16;
    cr_assert_neq(llmq_awq_layer(&mm.m, 0, &L, x, ns, T, all_q4_0, 128, NULL, NULL), LLMQ_OK);
    cr_assert(strstr(llmq_last_error(), "o_proj"), "%s", llmq_last_error());
    free(buf); free(x); free(mm.buf);
    llmq_model_release_workspace(&mm.m);
}

/* ------------------------------------------------------------ real models */

/* Residual-stream inputs of every layer for the calibration windows (layer l's
 * input in out[l]), from the model's own forward. */
static float **layer_inputs(const llmq_model *m, const llmq_calib *cal)
{
    int d = m->cfg.hidden_size, L = m->cfg.n_layers;
    size_t n = (size_t)cal->n_samples * cal->seqlen * d;
    float **out = calloc((size_t)L, sizeof *out);
    out[0] = malloc(n * sizeof(float));
    for (int s = 0; s < cal->n_samples; s++)
        cr_assert_eq(llmq_embed(m, cal->tokens + (size_t)s * cal->seqlen, cal->seqlen, out[0] + (size_t)s * cal->seqlen * d), LLMQ_OK);
    for (int l = 1; l < L; l++) {
        out[l] = malloc(n * sizeof(float));
        memcpy(out[l], out[l - 1], n * sizeof(float));
        layer_forward_samples(m, &m->layers[l - 1], l - 1, out[l], cal->n_samples, cal->seqlen);
    }
    return out;
}

/* Scales every layer (no clipping, nothing quantized), chaining each layer's
 * input through the scaled layers before it, and compares the logits with
 * the original model's. */
static void check_folded_logits(const llmq_model *m, const llmq_calib *cal, llmq_type t)
{
    int d = m->cfg.hidden_size, V = m->cfg.vocab_size, ns = cal->n_samples, T = cal->seqlen;
    size_t n = (size_t)ns * T;
    float *x = malloc(n * d * sizeof(float));
    for (int s = 0; s < ns; s++) cr_assert_eq(llmq_embed(m, cal->tokens + (size_t)s * T, T, x + (size_t)s * T * d), LLMQ_OK);
    llmq_type types[LLMQ_LIN_COUNT];
    fill_types(types, t);
    llmq_awq_opts o;
    llmq_awq_defaults(&o);
    o.clip = false;
    int nontrivial = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        llmq_layer L;
        float *buf = llmq_layer_f32_copy(m, l, &L);
        cr_assert_not_null(buf, "%s", llmq_last_error());
        llmq_awq_stats st;
        cr_assert_eq(llmq_awq_layer(m, l, &L, x, ns, T, types, 128, &o, &st), LLMQ_OK, "%s", llmq_last_error());
        for (int g = 0; g < LLMQ_AWQ_GROUP_COUNT; g++) nontrivial += st.searched[g] && st.ratio[g] > 0;
        layer_forward_samples(m, &L, l, x, ns, T);
        free(buf);
    }
    cr_assert_gt(nontrivial, 0, "every scale was 1: the folding test would be vacuous");
    float *got = malloc(n * V * sizeof(float)), *want = malloc((size_t)T * V * sizeof(float));
    cr_assert_eq(llmq_head_forward(m, x, (int)n, got), LLMQ_OK);
    double worst = 0, top = 0;
    for (int s = 0; s < ns; s++) {
        cr_assert_eq(llmq_forward(m, cal->tokens + (size_t)s * T, T, want), LLMQ_OK);
        worst = fmax(worst, max_abs_diff(want, got + (size_t)s * T * V, (size_t)T * V));
        top = fmax(top, max_abs(want, (size_t)T * V));
    }
    cr_log_info("folded logits: max |Δ| %.3g (logits up to %.3g), %d non-trivial scale groups", worst, top, nontrivial);
    cr_assert_lt(worst, 1e-4, "max |Δlogit| %g", worst);
    free(x); free(got); free(want);
}

static void demo_model_arch(char *dir, size_t n, const char *arch, llmq_model **m, llmq_calib *cal, int n_samples, int seqlen)
{
    test_tmpdir(dir, n, "awq-demo");
    llmq_synth_opts so;
    llmq_synth_defaults(&so);
    so.arch = arch;
    so.calib_bytes = 60000, so.eval_bytes = 2000;
    cr_assert_eq(llmq_synth_write(dir, &so), LLMQ_OK, "%s", llmq_last_error());
    *m = llmq_model_load(dir);
    cr_assert_not_null(*m, "%s", llmq_last_error());
    llmq_tokenizer *tok = llmq_tokenizer_load(dir);
    cr_assert_not_null(tok, "%s", llmq_last_error());
    char path[1200];
    snprintf(path, sizeof path, "%s/calib.txt", dir);
    llmq_calib_opts co = {.n_samples = n_samples, .seqlen = seqlen, .seed = 1};
    cr_assert_eq(llmq_calib_from_file(tok, path, &co, cal), LLMQ_OK, "%s", llmq_last_error());
    llmq_tokenizer_free(tok);
}

static void demo_model(char *dir, size_t n, llmq_model **m, llmq_calib *cal, int n_samples, int seqlen)
{
    demo_model_arch(dir, n, NULL, m, cal, n_samples, seqlen);
}

/* A mixture of experts: the gate,up scales folded into the norm and the router
 * (the routing must not move), each expert's up->down scales into its own
 * matrices; with 8 windows of 64 every expert sees its 64 tokens. */
static void moe_folding(const char *arch)
{
    char dir[512];
    llmq_model *m;
    llmq_calib cal;
    demo_model_arch(dir, sizeof dir, arch, &m, &cal, 8, 64);
    cr_assert_gt(m->cfg.n_experts, 0);
    check_folded_logits(m, &cal, LLMQ_TYPE_Q4_K);
    /* the statistics of the experts' groups, and their clipping */
    float **X = layer_inputs(m, &cal);
    llmq_type types[LLMQ_LIN_COUNT];
    fill_types(types, LLMQ_TYPE_Q4_K);
    llmq_layer L;
    float *buf = llmq_layer_f32_copy(m, 0, &L);
    cr_assert_not_null(buf, "%s", llmq_last_error());
    llmq_awq_stats st;
    cr_assert_eq(llmq_awq_layer(m, 0, &L, X[0], cal.n_samples, cal.seqlen, types, 128, NULL, &st), LLMQ_OK, "%s", llmq_last_error());
    cr_assert(st.searched[LLMQ_AWQ_GATE_UP] && st.searched[LLMQ_AWQ_DOWN], "%s: the experts' groups were not searched", arch);
    for (int g = LLMQ_AWQ_GATE_UP; g <= LLMQ_AWQ_DOWN; g++)
        cr_assert_leq(st.loss_best[g], st.loss_rtn[g], "%s group %d", arch, g);
    cr_assert_lt(st.loss_best[LLMQ_AWQ_DOWN], st.loss_rtn[LLMQ_AWQ_DOWN], "%s: no expert's down gained", arch);
    for (int k = LLMQ_LIN_GATE; k <= LLMQ_LIN_DOWN; k++) {
        cr_assert(st.clipped[k], "%s: %s not clipped", arch, llmq_linear_names[k]);
        cr_assert_leq(st.clip_mse_after[k], st.clip_mse_before[k], "%s %s", arch, llmq_linear_names[k]);
    }
    cr_log_info("%s layer 0: gate,up r %.2f loss %.3g -> %.3g; experts' down r %.2f loss %.3g -> %.3g", arch, st.ratio[LLMQ_AWQ_GATE_UP],
                st.loss_rtn[LLMQ_AWQ_GATE_UP], st.loss_best[LLMQ_AWQ_GATE_UP], st.ratio[LLMQ_AWQ_DOWN], st.loss_rtn[LLMQ_AWQ_DOWN],
                st.loss_best[LLMQ_AWQ_DOWN]);
    free(buf);

    /* the public folding: random gate,up scales keep the mixture's output (norm and router
     * folded together); up->down is per expert, which one set of scales cannot say */
    const int d = m->cfg.hidden_size, n = 64;
    llmq_layer A, B;
    float *abuf = llmq_layer_f32_copy(m, 0, &A), *bbuf = llmq_layer_f32_copy(m, 0, &B);
    float *s = malloc(sizeof(float) * (size_t)d), *xn = malloc(sizeof(float) * (size_t)n * d);
    float *ya = malloc(sizeof(float) * (size_t)n * d), *yb = malloc(sizeof(float) * (size_t)n * d);
    uint64_t seed = 5;
    for (int i = 0; i < d; i++) s[i] = expf(gauss(&seed));
    cr_assert_eq(llmq_awq_apply_scales(m, &B, LLMQ_AWQ_GATE_UP, s), LLMQ_OK, "%s", llmq_last_error());
    llmq_rmsnorm(xn, X[0], A.ffn_norm.data, n, d, m->cfg.rms_norm_eps);
    cr_assert_eq(llmq_mlp_forward(m, &A, 0, xn, n, ya, NULL, NULL), LLMQ_OK, "%s", llmq_last_error());
    llmq_rmsnorm(xn, X[0], B.ffn_norm.data, n, d, m->cfg.rms_norm_eps);
    cr_assert_eq(llmq_mlp_forward(m, &B, 0, xn, n, yb, NULL, NULL), LLMQ_OK, "%s", llmq_last_error());
    double diff = max_abs_diff(ya, yb, (size_t)n * d), top = max_abs(ya, (size_t)n * d);
    cr_assert_lt(diff, 1e-4 * top, "%s: the mixture's output moved by %g (up to %g)", arch, diff, top);
    cr_assert_eq(llmq_awq_apply_scales(m, &B, LLMQ_AWQ_DOWN, s), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "per expert"), "%s", llmq_last_error());
    free(abuf); free(bbuf); free(s); free(xn); free(ya); free(yb);
    for (int l = 0; l < m->cfg.n_layers; l++) free(X[l]);
    free(X);
    llmq_calib_free(&cal);
    llmq_model_free(m);
}

Test(awq, mixtral_folding_keeps_the_logits) { moe_folding("mixtral"); }
Test(awq, qwen3moe_folding_keeps_the_logits) { moe_folding("qwen3moe"); }

Test(awq, demo_model_folding_keeps_the_logits)
{
    char dir[512];
    llmq_model *m;
    llmq_calib cal;
    demo_model(dir, sizeof dir, &m, &cal, 4, 64);
    check_folded_logits(m, &cal, LLMQ_TYPE_Q4_K);
    llmq_calib_free(&cal);
    llmq_model_free(m);
}

Test(awq, demo_model_awq_beats_rtn_per_layer)
{
    char dir[512];
    llmq_model *m;
    llmq_calib cal;
    /* 8 windows: AWQ calibrates on the first 4, the errors are measured on the other 4. */
    demo_model(dir, sizeof dir, &m, &cal, 8, 64);
    float **X = layer_inputs(m, &cal);
    int ns = 4, T = cal.seqlen;
    size_t held_out = (size_t)ns * T * m->cfg.hidden_size;
    const llmq_type tests[] = {LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_1, LLMQ_TYPE_Q4_K};
    for (size_t ti = 0; ti < 3; ti++) {
        llmq_type types[LLMQ_LIN_COUNT];
        fill_types(types, tests[ti]);
        for (int l = 0; l < m->cfg.n_layers; l++) {
            llmq_layer orig, awq, awq_q, rtn;
            float *obuf = llmq_layer_f32_copy(m, l, &orig), *abuf = llmq_layer_f32_copy(m, l, &awq);
            cr_assert(obuf && abuf, "%s", llmq_last_error());
            llmq_awq_stats st;
            cr_assert_eq(llmq_awq_layer(m, l, &awq, X[l], ns, T, types, 128, NULL, &st), LLMQ_OK, "%s", llmq_last_error());
            cr_assert(!st.searched[LLMQ_AWQ_VO], "the demo model uses GQA: no v->o group");
            float *qbuf = fake_quant_layer(&awq, &awq_q, types, 128, false), *rbuf = fake_quant_layer(&orig, &rtn, types, 128, false);
            double e_rtn = layer_output_mse(m, &orig, &rtn, l, X[l] + held_out, ns, T);
            double e_awq = layer_output_mse(m, &orig, &awq_q, l, X[l] + held_out, ns, T);
            cr_log_info("demo %s layer %d: held-out output MSE rtn %.4g awq %.4g (%.3fx); r = %.2f/%.2f/%.2f",
                        llmq_type_get(tests[ti])->name, l, e_rtn, e_awq, e_awq / e_rtn, st.ratio[0], st.ratio[2], st.ratio[3]);
            cr_assert_lt(e_awq, e_rtn, "%s layer %d: AWQ %g vs RTN %g", llmq_type_get(tests[ti])->name, l, e_awq, e_rtn);
            free(obuf); free(abuf); free(qbuf); free(rbuf);
        }
    }
    for (int l = 0; l < m->cfg.n_layers; l++) free(X[l]);
    free(X);
    llmq_calib_free(&cal);
    llmq_model_free(m);
}

Test(awq, stories_folding_keeps_the_logits)
{
    char dir[512], ids_path[512];
    REQUIRE_SHARED(dir, "models/stories-llama-7m");
    REQUIRE_SHARED(ids_path, "models/stories-llama-7m/eval_tokens.json");
    llmq_model *m = llmq_model_load(dir);
    cr_assert_not_null(m, "%s", llmq_last_error());
    json_error_t je;
    json_t *arr = json_load_file(ids_path, 0, &je);
    cr_assert_not_null(arr, "%s: %s", ids_path, je.text);
    size_t n = json_array_size(arr);
    int32_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    json_decref(arr);
    llmq_calib cal;
    llmq_calib_opts co = {.n_samples = 3, .seqlen = 96, .seed = 3};
    cr_assert_eq(llmq_calib_sample(ids, n, &co, &cal), LLMQ_OK, "%s", llmq_last_error());
    check_folded_logits(m, &cal, LLMQ_TYPE_Q4_K);
    llmq_calib_free(&cal);
    free(ids);
    llmq_model_free(m);
}
