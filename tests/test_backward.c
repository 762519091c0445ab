/* The decoder block's training forward and backward (llmq/backward.h): the
 * forward is the model's own layer; every gradient matches central finite
 * differences of the loss. */
#include "llmq/backward.h"
#include "llmq/error.h"
#include "synth_model.h"

#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    llmq_model *m;
    llmq_block_weights bw;
    float *w[LLMQ_LIN_COUNT]; /* writable copies of the layer's weights */
    int n_seq, T, d;
    float *x, *y, *r; /* input, output, the loss's fixed projection */
} problem;

static problem make(const synth_spec *spec, int n_seq, int T)
{
    problem p = {.m = synth_model(spec), .n_seq = n_seq, .T = T, .d = spec->hidden};
    const llmq_layer *L = &p.m->layers[0];
    p.bw.attn_norm = L->attn_norm.data;
    p.bw.ffn_norm = L->ffn_norm.data;
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        const size_t n = (size_t)L->lin[k].rows * L->lin[k].cols;
        p.w[k] = malloc(n * sizeof(float));
        memcpy(p.w[k], L->lin[k].data, n * sizeof(float));
        p.bw.w[k] = p.w[k];
        p.bw.bias[k] = L->bias[k].data;
    }
    const size_t N = (size_t)n_seq * T * p.d;
    p.x = malloc(N * sizeof(float));
    p.y = malloc(N * sizeof(float));
    p.r = malloc(N * sizeof(float));
    unsigned st = 99u;
    for (size_t i = 0; i < N; i++) p.x[i] = synth_uniform(&st), p.r[i] = synth_uniform(&st);
    return p;
}

static void release(problem *p)
{
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) free(p->w[k]);
    free(p->x);
    free(p->y);
    free(p->r);
    llmq_model_free(p->m);
}

/* L = Σ y ⊙ r (so dL/dy = r), in double */
static double loss(problem *p, llmq_block_tape *t)
{
    cr_assert_eq(llmq_block_forward(t, &p->bw, p->x, p->n_seq, p->y), LLMQ_OK, "%s", llmq_last_error());
    double l = 0;
    for (size_t i = 0; i < (size_t)p->n_seq * p->T * p->d; i++) l += (double)p->y[i] * p->r[i];
    return l;
}

/* The directional derivative of L along a random direction v of the buffer
 * `a` (n floats), by central differences with step h, against ⟨g, v⟩. */
static void check_direction(problem *p, llmq_block_tape *t, float *a, size_t n, const float *g, const char *what)
{
    float *v = malloc(n * sizeof *v), *saved = malloc(n * sizeof *saved);
    memcpy(saved, a, n * sizeof *a);
    unsigned st = 4242u + (unsigned)n;
    double analytic = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        v[i] = synth_uniform(&st);
        analytic += (double)g[i] * v[i];
        scale += fabs((double)g[i] * v[i]);
    }
    /* Richardson: (4·D(h/2) − D(h))/3 cancels the h² term of the central difference */
    double dh[2];
    const float steps[2] = {2e-2f, 1e-2f};
    for (int s = 0; s < 2; s++) {
        for (size_t i = 0; i < n; i++) a[i] = saved[i] + steps[s] * v[i];
        const double up = loss(p, t);
        for (size_t i = 0; i < n; i++) a[i] = saved[i] - steps[s] * v[i];
        const double down = loss(p, t);
        dh[s] = (up - down) / (2.0 * steps[s]);
    }
    memcpy(a, saved, n * sizeof *a);
    const double numeric = (4 * dh[1] - dh[0]) / 3;
    cr_assert(fabs(numeric - analytic) <= 1e-3 * fabs(analytic) && fabs(analytic) > 1e-3 * scale,
              "%s: analytic %.8g, finite differences %.8g (relative %.2g)", what, analytic, numeric,
              fabs(numeric - analytic) / fabs(analytic));
    free(v);
    free(saved);
}

static void gradients_match(const synth_spec *spec, int n_seq, int T)
{
    problem p = make(spec, n_seq, T);
    llmq_block_tape *t = llmq_block_tape_new(p.m, 0, n_seq, T);
    cr_assert_not_null(t, "%s", llmq_last_error());
    float *dw[LLMQ_LIN_COUNT];
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) dw[k] = malloc((size_t)p.m->layers[0].lin[k].rows * p.m->layers[0].lin[k].cols * sizeof(float));
    const size_t N = (size_t)n_seq * T * p.d;
    float *dx = malloc(N * sizeof *dx);
    loss(&p, t);
    cr_assert_eq(llmq_block_backward(t, &p.bw, p.r, dw, dx), LLMQ_OK, "%s", llmq_last_error());
    for (int k = 0; k < LLMQ_LIN_COUNT; k++)
        check_direction(&p, t, p.w[k], (size_t)p.m->layers[0].lin[k].rows * p.m->layers[0].lin[k].cols, dw[k], llmq_linear_names[k]);
    check_direction(&p, t, p.x, N, dx, "input");
    /* single entries too: the largest gradient of each linear */
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        const size_t n = (size_t)p.m->layers[0].lin[k].rows * p.m->layers[0].lin[k].cols;
        size_t best = 0;
        for (size_t i = 1; i < n; i++) best = fabsf(dw[k][i]) > fabsf(dw[k][best]) ? i : best;
        const float saved = p.w[k][best], h = 1e-2f;
        double dh[2];
        for (int s = 0; s < 2; s++) {
            const float step = s ? h / 2 : h;
            p.w[k][best] = saved + step;
            const double up = loss(&p, t);
            p.w[k][best] = saved - step;
            dh[s] = (up - loss(&p, t)) / (2.0 * step);
        }
        p.w[k][best] = saved;
        const double numeric = (4 * dh[1] - dh[0]) / 3;
        cr_assert(fabs(numeric - dw[k][best]) <= 1e-3 * fabs(dw[k][best]), "%s[%zu]: analytic %.8g, finite differences %.8g",
                  llmq_linear_names[k], best, (double)dw[k][best], numeric);
    }
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) free(dw[k]);
    free(dx);
    llmq_block_tape_free(t);
    release(&p);
}

Test(backward, gradients_match_finite_differences_gqa)
{
    const synth_spec spec = {"llama", 1, 32, 4, 2, 48, 64, false, false, 7u};
    gradients_match(&spec, 2, 12);
}

Test(backward, gradients_match_finite_differences_with_biases)
{
    const synth_spec spec = {"qwen2", 1, 32, 2, 2, 40, 64, false, true, 11u};
    gradients_match(&spec, 3, 9);
}

/* The training forward is the model's layer: each sequence through
 * llmq_layer_forward gives the same output. */
Test(backward, forward_is_the_model_layer)
{
    const synth_spec spec = {"llama", 1, 64, 4, 2, 96, 64, false, false, 3u};
    problem p = make(&spec, 3, 20);
    llmq_block_tape *t = llmq_block_tape_new(p.m, 0, 3, 20);
    cr_assert_not_null(t, "%s", llmq_last_error());
    cr_assert_eq(llmq_block_forward(t, &p.bw, p.x, 3, p.y), LLMQ_OK);
    const size_t stride = (size_t)20 * p.d;
    float *ref = malloc(3 * stride * sizeof *ref);
    memcpy(ref, p.x, 3 * stride * sizeof *ref);
    double num = 0, den = 0;
    for (int s = 0; s < 3; s++) cr_assert_eq(llmq_layer_forward(p.m, &p.m->layers[0], 0, ref + s * stride, 20, NULL, NULL), LLMQ_OK);
    for (size_t i = 0; i < 3 * stride; i++) num += ((double)ref[i] - p.y[i]) * ((double)ref[i] - p.y[i]), den += (double)ref[i] * ref[i];
    cr_assert(sqrt(num / den) < 1e-6, "relative difference %.3g", sqrt(num / den));
    free(ref);
    llmq_block_tape_free(t);
    release(&p);
}

/* The same bits for one thread and two. */
Test(backward, thread_count_leaves_the_bits)
{
    const synth_spec spec = {"llama", 1, 64, 4, 2, 96, 64, false, false, 5u};
    problem p = make(&spec, 4, 16);
    float *dw[2][LLMQ_LIN_COUNT], *y[2];
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run + 1);
        llmq_block_tape *t = llmq_block_tape_new(p.m, 0, 4, 16);
        y[run] = malloc((size_t)4 * 16 * p.d * sizeof(float));
        cr_assert_eq(llmq_block_forward(t, &p.bw, p.x, 4, y[run]), LLMQ_OK);
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) dw[run][k] = malloc((size_t)p.m->layers[0].lin[k].rows * p.m->layers[0].lin[k].cols * sizeof(float));
        cr_assert_eq(llmq_block_backward(t, &p.bw, p.r, dw[run], NULL), LLMQ_OK);
        llmq_block_tape_free(t);
    }
    cr_assert_eq(memcmp(y[0], y[1], (size_t)4 * 16 * p.d * sizeof(float)), 0);
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        cr_assert_eq(memcmp(dw[0][k], dw[1][k], (size_t)p.m->layers[0].lin[k].rows * p.m->layers[0].lin[k].cols * sizeof(float)), 0, "%s",
                     llmq_linear_names[k]);
        free(dw[0][k]);
        free(dw[1][k]);
    }
    free(y[0]);
    free(y[1]);
    release(&p);
}

Test(backward, refuses_what_it_does_not_differentiate)
{
    const synth_spec spec = {"llama", 1, 32, 4, 2, 48, 64, false, false, 7u};
    llmq_model *m = synth_model(&spec);
    m->cfg.qk_norm = true;
    cr_assert_null(llmq_block_tape_new(m, 0, 1, 4));
    cr_assert(strstr(llmq_last_error(), "q/k norms"), "%s", llmq_last_error());
    m->cfg.qk_norm = false;
    m->cfg.hidden_act = LLMQ_ACT_GELU_TANH;
    cr_assert_neq(llmq_block_check(m, 0), LLMQ_OK);
    cr_assert(strstr(llmq_last_error(), "GeGLU"), "%s", llmq_last_error());
    llmq_model_free(m);
}
