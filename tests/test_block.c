/* Block-output reconstruction (llmq/block.h) on a random Llama block: from
 * GPTQ's rounding, the learned rounding lowers the block's output error, the
 * file's bytes decode to exactly what it measured, and nothing depends on the
 * thread count. */
#include "llmq/block.h"
#include "llmq/error.h"
#include "llmq/gptq.h"
#include "llmq/types.h"
#include "synth_model.h"

#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

enum { N_SAMPLES = 6, T = 32 };

typedef struct {
    llmq_model *m;
    float *X, *Xq, *target; /* full-precision inputs, the quantized path's (perturbed), the block's outputs on X */
    float *H[LLMQ_LIN_COUNT];
    int64_t seen[LLMQ_LIN_COUNT];
    void *packed[LLMQ_LIN_COUNT];
    float *pre[LLMQ_LIN_COUNT];
    llmq_block_weights base;
    llmq_type types[LLMQ_LIN_COUNT];
    int groups[LLMQ_LIN_COUNT];
} fixture;

static void collect(void *user, int layer, llmq_linear which, const float *x, int n, int in)
{
    (void)layer;
    fixture *f = user;
    cr_assert_eq(llmq_hessian_add(f->H[which], in, &f->seen[which], x, n), LLMQ_OK);
}

/* A 256-wide block, its inputs and targets, and GPTQ of its linears into `type` (each linear's
 * Hessian from the full-precision block's inputs). */
static fixture make(llmq_type type)
{
    const synth_spec spec = {"llama", 1, 256, 4, 2, 512, 64, false, false, 21u};
    fixture f = {.m = synth_model(&spec)};
    const llmq_layer *L = &f.m->layers[0];
    const size_t stride = (size_t)T * 256, total = N_SAMPLES * stride;
    f.X = malloc(total * sizeof(float));
    f.Xq = malloc(total * sizeof(float));
    f.target = malloc(total * sizeof(float));
    unsigned st = 5u;
    for (size_t i = 0; i < total; i++) {
        f.X[i] = synth_uniform(&st);
        f.Xq[i] = f.X[i] + 0.02f * synth_uniform(&st);
    }
    memcpy(f.target, f.X, total * sizeof(float));
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) f.H[k] = calloc((size_t)L->lin[k].cols * L->lin[k].cols, sizeof(float));
    for (int i = 0; i < N_SAMPLES; i++) cr_assert_eq(llmq_layer_forward(f.m, L, 0, f.target + i * stride, T, collect, &f), LLMQ_OK);
    f.base.attn_norm = L->attn_norm.data;
    f.base.ffn_norm = L->ffn_norm.data;
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        const int rows = L->lin[k].rows, cols = L->lin[k].cols;
        f.base.w[k] = L->lin[k].data;
        f.types[k] = type;
        f.groups[k] = 0;
        f.packed[k] = malloc((size_t)rows * llmq_row_size(type, cols));
        f.pre[k] = malloc((size_t)rows * cols * sizeof(float));
        llmq_gptq_opts go = llmq_gptq_default_opts();
        go.pre_round = f.pre[k];
        cr_assert_eq(llmq_gptq_quantize(L->lin[k].data, rows, cols, f.H[k], type, 0, &go, f.packed[k], NULL, NULL), LLMQ_OK, "%s",
                     llmq_last_error());
    }
    return f;
}

static void release(fixture *f)
{
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) free(f->H[k]), free(f->packed[k]), free(f->pre[k]);
    free(f->X), free(f->Xq), free(f->target);
    llmq_model_free(f->m);
}

static size_t packed_bytes(const fixture *f, int k)
{
    return (size_t)f->m->layers[0].lin[k].rows * llmq_row_size(f->types[k], f->m->layers[0].lin[k].cols);
}

static int reconstruct(fixture *f, int iters, llmq_block_stats *bs)
{
    llmq_block_opts o = llmq_block_default_opts();
    o.iters = iters;
    o.batch = 2;
    return llmq_block_reconstruct(f->m, 0, &f->base, f->Xq, f->target, N_SAMPLES, T, f->types, f->groups, f->packed,
                                  (const float *const *)f->pre, &o, bs);
}

/* The block-output MSE of the file's bytes: each linear decoded to f32, the
 * model's own layer forward on the quantized path's inputs. */
static double mse_of_packed(const fixture *f)
{
    llmq_layer L = f->m->layers[0];
    float *dense[LLMQ_LIN_COUNT];
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        const int rows = L.lin[k].rows, cols = L.lin[k].cols;
        dense[k] = malloc((size_t)rows * cols * sizeof(float));
        const llmq_type_traits *tr = llmq_type_get(f->types[k]);
        for (int r = 0; r < rows; r++)
            tr->to_float((const char *)f->packed[k] + (size_t)r * llmq_row_size(f->types[k], cols), dense[k] + (size_t)r * cols, cols);
        L.lin[k].data = dense[k];
    }
    const size_t stride = (size_t)T * 256;
    float *y = malloc(stride * sizeof *y);
    double s = 0;
    for (int i = 0; i < N_SAMPLES; i++) {
        memcpy(y, f->Xq + i * stride, stride * sizeof *y);
        cr_assert_eq(llmq_layer_forward(f->m, &L, 0, y, T, NULL, NULL), LLMQ_OK);
        for (size_t e = 0; e < stride; e++) s += ((double)y[e] - f->target[i * stride + e]) * ((double)y[e] - f->target[i * stride + e]);
    }
    free(y);
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) free(dense[k]);
    return s / (N_SAMPLES * (double)stride);
}

/* For every 4-bit and 3-bit family (32-element fp16 grids with and without a
 * min, K-quant sub-block codes with and without one): the learned rounding
 * beats GPTQ's on the block's output, and the bytes hold what was measured. */
Test(block, lowers_the_block_output_error_below_gptq, .timeout = 600)
{
    const llmq_type types[] = {LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_1, LLMQ_TYPE_Q4_K, LLMQ_TYPE_Q3_K, LLMQ_TYPE_Q6_K};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        fixture f = make(types[i]);
        const char *tn = llmq_type_name(types[i]) ? llmq_type_name(types[i]) : "?";
        const double before = mse_of_packed(&f);
        llmq_block_stats bs;
        cr_assert_eq(reconstruct(&f, 60, &bs), LLMQ_OK, "%s", llmq_last_error());
        const double after = mse_of_packed(&f);
        cr_log_info("%s: block mse %.6g -> %.6g (%lld codes, %lld grids changed, %.2fs)", tn, bs.mse_init,
                    bs.mse_final, (long long)bs.codes_changed, (long long)bs.grids_changed, bs.seconds);
        cr_assert(fabs(bs.mse_init - before) <= 1e-4 * before, "%s: GPTQ's mse %g, measured %g", tn, bs.mse_init, before);
        cr_assert(bs.kept, "%s", tn);
        cr_assert_lt(after, 0.97 * before, "%s: %g -> %g", tn, before, after);
        cr_assert(fabs(bs.mse_final - after) <= 1e-4 * after, "%s: reported %g, the bytes give %g", tn, bs.mse_final, after);
        cr_assert_gt(bs.codes_changed, 0);
        release(&f);
    }
}

Test(block, zero_steps_leave_gptq_bytes)
{
    fixture f = make(LLMQ_TYPE_Q4_K);
    void *before[LLMQ_LIN_COUNT];
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        before[k] = malloc(packed_bytes(&f, k));
        memcpy(before[k], f.packed[k], packed_bytes(&f, k));
    }
    llmq_block_stats bs;
    cr_assert_eq(reconstruct(&f, 0, &bs), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_not(bs.kept);
    cr_assert_eq(bs.mse_init, bs.mse_final);
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        cr_assert_eq(memcmp(before[k], f.packed[k], packed_bytes(&f, k)), 0, "%s", llmq_linear_names[k]);
        free(before[k]);
    }
    release(&f);
}

Test(block, thread_count_leaves_the_bytes, .timeout = 600)
{
    void *bytes[2][LLMQ_LIN_COUNT];
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run + 1);
        fixture f = make(LLMQ_TYPE_Q4_1);
        llmq_block_stats bs;
        cr_assert_eq(reconstruct(&f, 20, &bs), LLMQ_OK, "%s", llmq_last_error());
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            bytes[run][k] = malloc(packed_bytes(&f, k));
            memcpy(bytes[run][k], f.packed[k], packed_bytes(&f, k));
        }
        if (run) {
            for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
                cr_assert_eq(memcmp(bytes[0][k], bytes[1][k], packed_bytes(&f, k)), 0, "%s", llmq_linear_names[k]);
                free(bytes[0][k]), free(bytes[1][k]);
            }
        }
        release(&f);
    }
}

Test(block, refuses_non_linear_levels)
{
    fixture f = make(LLMQ_TYPE_Q4_0);
    f.types[LLMQ_LIN_UP] = LLMQ_TYPE_IQ4_NL;
    llmq_block_stats bs;
    cr_assert_neq(reconstruct(&f, 1, &bs), LLMQ_OK);
    cr_assert(strstr(llmq_last_error(), "up_proj") && strstr(llmq_last_error(), "iq4_nl"), "%s", llmq_last_error());
    f.types[LLMQ_LIN_UP] = LLMQ_TYPE_Q4_0;
    release(&f);
}
