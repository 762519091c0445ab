/* GPTQ solver benchmark: one llmq_gptq_quantize() per Llama-7B linear shape
 * (W rows × cols, cols = input dimension, H cols × cols) into q4_k g128 with
 * a random SPD Hessian (2/m·XᵀX of m random correlated tokens plus a small
 * ridge), with the solver's own time split. Prints a markdown table.
 * The CPU seconds column (all threads) next to wall seconds shows how much of
 * the machine the run actually got: on a shared machine wall time includes
 * waiting for a core. LLMQ_BENCH_QUICK=1 shrinks the shapes; LLMQ_BENCH_GPTQ_DOWN=0 skips the
 * 4096 × 11008 (down_proj) shape, whose 11008² Hessian dominates the run. */
#include "llmq/error.h"
#include "llmq/gptq.h"
#include "llmq/kernels.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float gauss(void)
{
    double u[2];
    for (int k = 0; k < 2; k++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        u[k] = ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
    }
    return (float)(sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]));
}

/* H = 2/m XᵀX + ridge·I (upper triangle) from m random correlated tokens. */
static int random_hessian(float *H, int n, int m)
{
    float *X = malloc(sizeof *X * (size_t)m * n);
    if (!X) return LLMQ_ERR;
    for (int t = 0; t < m; t++) {
        float common = gauss();
        for (int i = 0; i < n; i++) X[(size_t)t * n + i] = gauss() + 0.5f * common;
    }
    int64_t seen = 0;
    int rc = llmq_hessian_add(H, n, &seen, X, m);
    for (int i = 0; i < n; i++) H[(size_t)i * n + i] += 0.05f;
    free(X);
    return rc;
}

static double cpu_seconds(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + u.ru_utime.tv_usec * 1e-6 + (double)u.ru_stime.tv_sec + u.ru_stime.tv_usec * 1e-6;
}

/* Floating-point operations of the solve: Cholesky + triangular inverse
 * (n³/3 each), the lazy-batch GEMMs, the in-block updates, and with stats
 * the two triangular products (sampled rows·n² each). */
static double solver_flops(int rows, int n, int B, int with_stats)
{
    double f = 2.0 * n * (double)n * n / 3.0;
    for (int i1 = 0; i1 < n; i1 += B) {
        int i2 = i1 + B < n ? i1 + B : n;
        f += 2.0 * rows * (double)(i2 - i1) * (n - i2);
        f += (double)rows * (i2 - i1) * (i2 - i1);
    }
    if (with_stats) {
        /* the two traces run over every stride-th row (llmq/gptq.h) */
        const int stride = llmq_gptq_stats_stride(rows);
        f += 2.0 * ((rows + stride - 1) / stride) * (double)n * n;
    }
    return f;
}

int main(int argc, char **argv)
{
    (void)argc;
    llmq_omp_default_wait(argv);
    const int quick = getenv("LLMQ_BENCH_QUICK") != NULL;
    const char *down = getenv("LLMQ_BENCH_GPTQ_DOWN");
    struct { const char *what; int rows, cols; } shapes[] = {
        {"q/k/v/o_proj", 4096, 4096},
        {"gate/up_proj", 11008, 4096},
        {"down_proj", 4096, 11008},
    };
    int n_shapes = down && strcmp(down, "0") == 0 ? 2 : 3;
    const llmq_type t = LLMQ_TYPE_Q4_K;
    const int G = 128, tokens = quick ? 256 : 1024;
    const llmq_gptq_opts o = llmq_gptq_default_opts();
    double load[1] = {0};
    getloadavg(load, 1);
    printf("threads: %d, load average at start: %.2f, type q4_k, group 128, block %d, damp %g\n\n", llmq_get_threads(), load[0], o.block_size,
           (double)o.damp);
    printf("| W rows × cols | layer | total s | CPU s | factor H s | error stats s | sweep s | GFLOP/s | without stats: s | rel. err rtn | rel. err gptq |\n");
    printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int s = 0; s < n_shapes; s++) {
        const int rows = quick ? shapes[s].rows / 8 : shapes[s].rows;
        const int n = quick ? shapes[s].cols / 8 / 256 * 256 : shapes[s].cols;
        float *W = malloc(sizeof *W * (size_t)rows * n), *H = malloc(sizeof *H * (size_t)n * n);
        void *packed = malloc(llmq_row_size(t, n) * (size_t)rows);
        if (!W || !H || !packed) {
            fprintf(stderr, "bench_gptq: out of memory for %d × %d\n", rows, n);
            return 1;
        }
        for (size_t k = 0; k < (size_t)rows * n; k++) W[k] = 0.02f * gauss();
        if (random_hessian(H, n, tokens) != LLMQ_OK) {
            fprintf(stderr, "bench_gptq: %s\n", llmq_last_error());
            return 1;
        }
        llmq_gptq_stats st;
        double t0 = omp_get_wtime(), c0 = cpu_seconds();
        if (llmq_gptq_quantize(W, rows, n, H, t, G, &o, packed, NULL, &st) != LLMQ_OK) {
            fprintf(stderr, "bench_gptq: %s\n", llmq_last_error());
            return 1;
        }
        double dt = omp_get_wtime() - t0, cpu = cpu_seconds() - c0;
        printf("| %d × %d | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.1f | %.2f | %.4g | %.4g |\n", rows, n, shapes[s].what, dt, cpu, st.seconds_factor,
               st.seconds_stats, st.seconds_sweep, solver_flops(rows, n, o.block_size, 1) / dt / 1e9, dt - st.seconds_stats, st.err_rtn,
               st.err_gptq);
        fflush(stdout);
        free(W);
        free(H);
        free(packed);
    }
    return 0;
}
