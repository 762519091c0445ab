/* Forward throughput at ctx 512 (tokens/s, GFLOP/s) against OpenBLAS sgemm on
 * the same matmul shapes, measured in the same process. Model: the shared
 * stories-llama-7m when present, else the project's demo model (a MODEL given
 * on the command line must exist).
 *
 * usage: bench_forward [MODEL_DIR|FILE.gguf] [--threads N] [--reps N] [--fast] [--json]
 * --threads: 0 (default) = every core; --reps: best of N (default 5); --json:
 * only the forward, printed as one JSON line (scripts/bench-llamacpp.sh). */
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/kernels.h"
#include "llmq/model.h"
#include "llmq/synth.h"
#include "int8_peak.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double best_of(int reps, double (*fn)(void *), void *arg)
{
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = fn(arg);
        best = t < best ? t : best;
    }
    return best;
}

typedef struct {
    const llmq_model *m;
    int32_t *ids;
    float *logits;
    int n;
} fwd_arg;

static double run_forward(void *p)
{
    fwd_arg *a = p;
    double t0 = omp_get_wtime();
    if (llmq_forward(a->m, a->ids, a->n, a->logits) != LLMQ_OK) {
        fprintf(stderr, "forward: %s\n", llmq_last_error());
        exit(1);
    }
    return omp_get_wtime() - t0;
}

/* Prompt processing as llama-bench's pp test measures it: every layer over
 * all n positions, except that the last layer's feed-forward half and the
 * output head run only where logits are wanted (the last position), as
 * llama.cpp computes them. */
static double run_prompt(void *p)
{
    fwd_arg *a = p;
    const llmq_model *m = a->m;
    const int d = m->cfg.hidden_size;
    double t0 = omp_get_wtime();
    float *x = malloc((size_t)a->n * d * sizeof(float));
    int rc = x ? llmq_embed(m, a->ids, a->n, x) : LLMQ_ERR;
    if (rc == LLMQ_OK) rc = llmq_layers_forward(m, x, a->n, a->n - 1);
    if (rc == LLMQ_OK) rc = llmq_head_forward(m, x + (size_t)(a->n - 1) * d, 1, a->logits);
    free(x);
    if (rc != LLMQ_OK) {
        fprintf(stderr, "prompt: %s\n", llmq_last_error());
        exit(1);
    }
    return omp_get_wtime() - t0;
}

typedef struct {
    const llmq_model *m;
    int n;
    float *x, *y;
} lin_arg;

static void lin_fail(void)
{
    fprintf(stderr, "linears: %s\n", llmq_last_error());
    exit(1);
}

/* The prompt's linears alone, with the model's own weights and kernels. */
static double run_linears(void *p)
{
    lin_arg *a = p;
    const llmq_model *m = a->m;
    double t0 = omp_get_wtime();
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            const llmq_weight *w = &m->layers[l].lin[k];
            const int rows = l + 1 == m->cfg.n_layers && k >= LLMQ_LIN_GATE ? 1 : a->n;
            if (llmq_matmul(a->y, a->x, rows, w->data, w->type, w->cols, w->rows) != LLMQ_OK) lin_fail();
        }
    return omp_get_wtime() - t0;
}

/* The head for the one row a prompt reads. */
static double run_head_row(void *p)
{
    lin_arg *a = p;
    const llmq_model *m = a->m;
    double t0 = omp_get_wtime();
    if (llmq_matmul(a->y, a->x, 1, m->lm_head.data, m->lm_head.type, m->lm_head.cols, m->lm_head.rows) != LLMQ_OK) lin_fail();
    return omp_get_wtime() - t0;
}

typedef struct {
    const llmq_model *m;
    int n;
    float *x, *w, *y;
} gemm_arg;

/* Every linear of every layer plus the head, as plain f32 sgemm calls. */
static double run_sgemm(void *p)
{
    gemm_arg *a = p;
    const llmq_model *m = a->m;
    double t0 = omp_get_wtime();
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            const llmq_weight *w = &m->layers[l].lin[k];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, a->n, w->rows, w->cols, 1.0f, a->x, w->cols, a->w, w->cols, 0.0f, a->y, w->rows);
        }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, a->n, m->lm_head.rows, m->lm_head.cols, 1.0f, a->x, m->lm_head.cols, a->w,
                m->lm_head.cols, 0.0f, a->y, m->lm_head.rows);
    return omp_get_wtime() - t0;
}

int main(int argc, char **argv)
{
    llmq_omp_default_wait(argv);
    const char *path = "../shared/models/stories-llama-7m";
    int threads = 0, reps = 5, json = 0, explicit_path = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) json = 1;
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--fast") == 0) llmq_set_fast(true);
        else if (argv[i][0] != '-') path = argv[i], explicit_path = 1;
        else {
            fprintf(stderr, "usage: %s [MODEL_DIR|FILE.gguf] [--threads N] [--reps N] [--fast] [--json]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    if (!explicit_path && !llmq_is_dir(path) && !llmq_file_exists(path)) {
        path = "build/bench-demo";
        if (!llmq_file_exists("build/bench-demo/model.safetensors")) {
            llmq_synth_opts o;
            llmq_synth_defaults(&o);
            if (llmq_synth_write(path, &o) != LLMQ_OK) {
                fprintf(stderr, "%s\n", llmq_last_error());
                return 1;
            }
        }
    }
    llmq_set_threads(threads);
    llmq_model *m = llmq_model_load(path);
    if (!m) {
        fprintf(stderr, "%s\n", llmq_last_error());
        return 1;
    }
    const int n = 512;
    fwd_arg fa = {m, malloc(n * sizeof(int32_t)), malloc((size_t)n * m->cfg.vocab_size * sizeof(float)), n};
    for (int i = 0; i < n; i++) fa.ids[i] = (i * 131 + 7) % m->cfg.vocab_size;

    if (json) {
        /* prompt processing: logits of the last position only, as llama-bench's pp test */
        run_prompt(&fa); /* warm-up: page in the weights */
        double t_pp = best_of(reps, run_prompt, &fa);
        /* The split: the same products on their own (the linears of every layer, the
         * last layer's feed-forward half for one row; the head for one row); the
         * rest of the prompt's time is attention, norms, RoPE and the residual adds. */
        lin_arg la = {m, n, NULL, NULL};
        size_t widest = (size_t)(m->cfg.intermediate_size > m->cfg.hidden_size ? m->cfg.intermediate_size : m->cfg.hidden_size);
        la.x = calloc((size_t)n * widest, sizeof(float));
        la.y = calloc((size_t)n * (widest > (size_t)m->lm_head.rows ? widest : (size_t)m->lm_head.rows), sizeof(float));
        for (size_t i = 0; i < (size_t)n * widest; i++) la.x[i] = (float)((i % 89) - 44) * 1e-2f;
        run_linears(&la);
        double t_lin = best_of(reps, run_linears, &la), t_head = best_of(reps, run_head_row, &la);
        double lin_flops = 0;
        for (int k = 0; k < LLMQ_LIN_COUNT; k++)
            lin_flops += 2.0 * (k >= LLMQ_LIN_GATE ? (double)n * (m->cfg.n_layers - 1) + 1 : (double)n * m->cfg.n_layers) *
                         m->layers[0].lin[k].rows * m->layers[0].lin[k].cols;
        free(la.x); free(la.y);
        double pp_flops = llmq_forward_flops(m, n) - 2.0 * (n - 1) * m->lm_head.rows * m->lm_head.cols;
        for (int k = LLMQ_LIN_GATE; k <= LLMQ_LIN_DOWN; k++) /* the last layer's feed-forward half: one row */
            pp_flops -= 2.0 * (n - 1) * m->layers[0].lin[k].rows * m->layers[0].lin[k].cols;
        printf("{\"tok_s\": %.1f, \"ms\": %.3f, \"ctx\": %d, \"threads\": %d, \"reps\": %d, \"weights\": \"%s\", "
               "\"kernel\": \"%s\", \"fast\": %s, \"gflop_s\": %.2f, \"logits\": \"last\", \"linears_ms\": %.3f, "
               "\"linears_gop_s\": %.2f, \"head_ms\": %.3f, \"rest_ms\": %.3f, \"int8_peak_gop_s\": %.1f}\n",
               n / t_pp, t_pp * 1e3, n, llmq_get_threads(), reps, llmq_type_get(m->layers[0].lin[0].type)->name, llmq_kernel_name(),
               llmq_get_fast() ? "true" : "false", pp_flops / t_pp * 1e-9, t_lin * 1e3, lin_flops / t_lin * 1e-9, t_head * 1e3,
               (t_pp - t_lin - t_head) * 1e3, int8_peak_gops());
        free(fa.ids); free(fa.logits);
        llmq_model_free(m);
        return 0;
    }
    run_forward(&fa); /* warm-up: page in the weights */
    double t_fwd = best_of(reps, run_forward, &fa);
    double flops = llmq_forward_flops(m, n);
    size_t maxw = (size_t)m->cfg.vocab_size * m->cfg.hidden_size;
    size_t maxk = (size_t)(m->cfg.intermediate_size > m->cfg.hidden_size ? m->cfg.intermediate_size : m->cfg.hidden_size);
    if ((size_t)m->cfg.intermediate_size * maxk > maxw) maxw = (size_t)m->cfg.intermediate_size * maxk;
    gemm_arg ga = {m, n, calloc((size_t)n * maxk * 4, sizeof(float)), calloc(maxw, sizeof(float)), calloc((size_t)n * m->cfg.vocab_size, sizeof(float))};
    for (size_t i = 0; i < maxw; i++) ga.w[i] = (float)((i % 97) - 48) * 1e-3f;
    for (size_t i = 0; i < (size_t)n * maxk; i++) ga.x[i] = (float)((i % 89) - 44) * 1e-2f;
    run_sgemm(&ga); /* warm-up */
    double t_gemm = best_of(reps, run_sgemm, &ga);
    double gemm_flops = 0;
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) gemm_flops += 2.0 * n * m->layers[0].lin[k].rows * m->layers[0].lin[k].cols;
    gemm_flops = gemm_flops * m->cfg.n_layers + 2.0 * n * m->lm_head.rows * m->lm_head.cols;
    printf("model: %s (%s weights), ctx %d, %d threads, best of %d, kernel %s%s\n\n", path, llmq_type_get(m->layers[0].lin[0].type)->name, n,
           llmq_get_threads(), reps, llmq_kernel_name(), llmq_get_fast() ? " (--fast)" : "");
    printf("| what | seconds | tokens/s | GFLOP/s |\n|---|---|---|---|\n");
    printf("| llmq forward (all layers, attention, head) | %.4f | %.0f | %.1f |\n", t_fwd, n / t_fwd, flops / t_fwd * 1e-9);
    printf("| OpenBLAS sgemm, same linear shapes, f32 | %.4f | %.0f | %.1f |\n", t_gemm, n / t_gemm, gemm_flops / t_gemm * 1e-9);
    printf("\nforward GFLOP/s as a share of sgemm GFLOP/s: %.0f%%\n", 100.0 * (flops / t_fwd) / (gemm_flops / t_gemm));
    free(fa.ids); free(fa.logits); free(ga.x); free(ga.w); free(ga.y);
    llmq_model_free(m);
    return 0;
}
