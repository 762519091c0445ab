/* Kernel benchmark: prompt processing (512 tokens through one 4096×4096
 * matmul) per weight type against cblas_sgemm on the same shape, and
 * single-token GEMV bandwidth against a streaming read of memory measured in
 * the same run. Prints markdown tables. LLMQ_BENCH_QUICK=1 shrinks the shapes. */
#include "llmq/blocks.h"
#include "llmq/error.h"
#include "llmq/kernels.h"
#include "int8_peak.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Alternated read / exact / fast GEMV runs per type; the VM's memory bandwidth
 * swings with other tenants, and the best of many runs of each converges. */
#define GEMV_REPS 15

static uint64_t rng = 0x853c49e6748fea9bull;
static uint32_t next_u32(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

/* Weights as random bytes with finite, moderate fp16 scales: the kernels'
 * speed does not depend on the values, and this is instant at any size. */
static void *random_weights(llmq_type t, int rows, int in)
{
    const llmq_type_traits *tr = llmq_type_get(t);
    size_t bytes = llmq_row_size(t, in) * (size_t)rows;
    unsigned char *w = malloc(bytes);
    if (!w) return NULL;
    for (size_t i = 0; i < bytes; i += 4) {
        uint32_t r = next_u32();
        memcpy(w + i, &r, bytes - i < 4 ? bytes - i : 4);
    }
    int off[2], nf = 0;
    switch (t) {
    case LLMQ_TYPE_Q4_0: case LLMQ_TYPE_Q8_0: off[0] = 0; nf = 1; break;
    case LLMQ_TYPE_Q4_1: case LLMQ_TYPE_Q4_K: off[0] = 0; off[1] = 2; nf = 2; break;
    case LLMQ_TYPE_Q6_K: off[0] = 208; nf = 1; break;
    case LLMQ_TYPE_Q3_K: off[0] = 108; nf = 1; break;
    default: break;
    }
    if (t == LLMQ_TYPE_F16) {
        uint16_t *h = (uint16_t *)w;
        for (size_t i = 0; i < bytes / 2; i++) h[i] = (uint16_t)(h[i] & 0xbfff); /* exponent < 16: finite, |x| < 2 */
    }
    for (size_t b = 0; nf && b < bytes / tr->type_size; b++)
        for (int k = 0; k < nf; k++) {
            uint16_t h = (uint16_t)(0x2000 | (next_u32() & 0x3ff)); /* ≈ 0.008 */
            memcpy(w + b * tr->type_size + off[k], &h, 2);
        }
    return w;
}

static float *random_floats(size_t n)
{
    float *x = malloc(sizeof *x * n);
    for (size_t i = 0; x && i < n; i++) x[i] = (float)(next_u32() >> 8) / 16777216.0f - 0.5f;
    return x;
}

/* Best of `reps` wall-clock seconds of one matmul. */
static double time_matmul(float *y, const float *x, int nt, const void *w, llmq_type t, int in, int out, int reps)
{
    double best = INFINITY;
    for (int r = 0; r < reps; r++) {
        double t0 = omp_get_wtime();
        if (llmq_matmul(y, x, nt, w, t, in, out) != LLMQ_OK) {
            fprintf(stderr, "bench_kernels: %s\n", llmq_last_error());
            exit(1);
        }
        double dt = omp_get_wtime() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

#if defined(__x86_64__)
#include <immintrin.h>
/* XOR of n 32-byte vectors with four independent accumulators: a read that
 * no arithmetic limits (AVX2 loads, one cheap op each). */
__attribute__((target("avx2"))) static uint64_t read_avx2(const void *p, size_t n)
{
    const __m256i *v = p;
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    for (size_t i = 0; i + 4 <= n; i += 4) {
        a = _mm256_xor_si256(a, _mm256_loadu_si256(v + i));
        b = _mm256_xor_si256(b, _mm256_loadu_si256(v + i + 1));
        c = _mm256_xor_si256(c, _mm256_loadu_si256(v + i + 2));
        d = _mm256_xor_si256(d, _mm256_loadu_si256(v + i + 3));
    }
    a = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
    return (uint64_t)_mm256_extract_epi64(a, 0) ^ (uint64_t)_mm256_extract_epi64(a, 3);
}
#endif

static uint64_t read_plain(const uint64_t *v, size_t n)
{
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i + 4 <= n; i += 4) {
        a ^= v[i];
        b ^= v[i + 1];
        c ^= v[i + 2];
        d ^= v[i + 3];
    }
    return a ^ b ^ c ^ d;
}

/* Seconds for all threads to read `bytes` at buf once, each its own
 * contiguous part: the floor for a GEMV that reads those weights once. */
static double read_seconds(const void *buf, size_t bytes)
{
#if defined(__x86_64__)
    const int avx2 = __builtin_cpu_supports("avx2");
#endif
    uint64_t total = 0;
    double t0 = omp_get_wtime();
    #pragma omp parallel reduction(^ : total)
    {
        const size_t n32 = bytes / 32, part = n32 / omp_get_num_threads(), first = part * omp_get_thread_num();
        const size_t mine = omp_get_thread_num() == omp_get_num_threads() - 1 ? n32 - first : part;
#if defined(__x86_64__)
        if (avx2) total ^= read_avx2((const char *)buf + 32 * first, mine);
        else
#endif
            total ^= read_plain((const uint64_t *)((const char *)buf + 32 * first), 4 * mine);
    }
    double dt = omp_get_wtime() - t0;
    static volatile uint64_t sink;
    sink ^= total;
    return dt;
}

int main(int argc, char **argv)
{
    llmq_omp_default_wait(argv);
    const int quick = getenv("LLMQ_BENCH_QUICK") != NULL;
    /* --threads N (default: all cores); the bandwidth is measured with the same threads */
    int want_threads = 0;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--threads")) want_threads = atoi(argv[i + 1]);
    llmq_set_threads(want_threads);
    const int threads = llmq_get_threads();
    const int in = quick ? 1024 : 4096, out = quick ? 1024 : 4096, tokens = 512;
    /* 4-bit rows of 4096: 288 MiB; at 72 MiB this VM still read from a cache (66–72 GB/s against 52 GB/s
     * beyond it) although it reports a 32 MiB L3. LLMQ_BENCH_GEMV_ROWS overrides. */
    const int gemv_rows = getenv("LLMQ_BENCH_GEMV_ROWS") ? atoi(getenv("LLMQ_BENCH_GEMV_ROWS")) : quick ? 4096 : 131072;

    printf("kernel: %s, threads: %d\n\n", llmq_kernel_name(), threads);

    /* ---- prompt processing ---- */
    const double peak = int8_peak_gops();
    if (peak > 0) printf("int8 peak (vpdpbusd zmm, every thread, measured here): %.0f GOP/s\n\n", peak);
    const int shapes[3][2] = {{in, out}, {in, quick ? 2752 : 11008}, {quick ? 2752 : 11008, in}};
    float *y = malloc(sizeof(float) * (size_t)tokens * (gemv_rows > 11008 ? gemv_rows : 11008));
    for (int sh = 0; sh < (quick ? 1 : 3); sh++) {
        const int pin = shapes[sh][0], pout = shapes[sh][1];
        printf("### Prompt processing: %d tokens × [%d → %d]\n\n", tokens, pin, pout);
        printf("| weights | exact ms | exact GFLOP/s | vs sgemm f32 | fast ms | fast GOP/s | fast / exact | fast of int8 peak | "
               "int16 ms | int16 / exact |\n"
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        float *x = random_floats((size_t)tokens * pin);
        const double flops = 2.0 * tokens * pin * pout;
        float *wf = random_floats((size_t)pin * pout);
        double t_sgemm = INFINITY;
        for (int r = 0; r < 3; r++) {
            double t0 = omp_get_wtime();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tokens, pout, pin, 1.0f, x, pin, wf, pin, 0.0f, y, pout);
            double dt = omp_get_wtime() - t0;
            if (dt < t_sgemm) t_sgemm = dt;
        }
        free(wf);
        printf("| f32 (cblas_sgemm) | %.1f | %.1f | 1.00 | | | | | | |\n", t_sgemm * 1e3, flops / t_sgemm / 1e9);
        const llmq_type pp_types[] = {LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_1, LLMQ_TYPE_Q4_K, LLMQ_TYPE_Q8_0, LLMQ_TYPE_Q6_K, LLMQ_TYPE_Q3_K, LLMQ_TYPE_F16};
        for (size_t k = 0; k < sizeof pp_types / sizeof pp_types[0]; k++) {
            void *w = random_weights(pp_types[k], pout, pin);
            double t = time_matmul(y, x, tokens, w, pp_types[k], pin, pout, 3);
            printf("| %s | %.1f | %.1f | %.2f |", llmq_type_get(pp_types[k])->name, t * 1e3, flops / t / 1e9, t_sgemm / t);
            if (pp_types[k] != LLMQ_TYPE_F16) {
                llmq_set_fast(true);
                double tf = time_matmul(y, x, tokens, w, pp_types[k], pin, pout, 3);
                llmq_set_fast(false);
                printf(" %.1f | %.1f | %.2f | ", tf * 1e3, flops / tf / 1e9, t / tf);
                if (peak > 0) printf("%.0f%% |", 100 * flops / tf / 1e9 / peak);
                else printf("– |");
                if (llmq_int16_available()) { /* the calibration forward's arithmetic */
                    llmq_set_int16(true);
                    double t16 = time_matmul(y, x, tokens, w, pp_types[k], pin, pout, 3);
                    llmq_set_int16(false);
                    printf(" %.1f | %.2f |\n", t16 * 1e3, t / t16);
                } else {
                    printf(" – | – |\n");
                }
            } else {
                printf(" – | – | – | – | – | – |\n");
            }
            free(w);
        }
        free(x);
        printf("\n");
    }

    /* ---- GEMV ---- */
    float *x = random_floats((size_t)tokens * in);
    printf("\n### GEMV: 1 token × [%d → %d], %d threads\n\n", in, gemv_rows, threads);
    printf("Bandwidth: a streaming read of the same weight buffer by the same threads, alternated with the GEMV runs\n"
           "(best of %d each), so both see the same memory, cache and machine load. Exact: fp32 activations (the default).\n"
           "Fast: int8 activations and integer dots (`--fast`, kernel family %s).\n\n", GEMV_REPS, llmq_kernel_name());
    printf("| weights | MiB | read GB/s | exact µs | exact GB/s | exact of bw | fast µs | fast GB/s | fast of bw |\n"
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    const llmq_type gemv_types[] = {LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_1, LLMQ_TYPE_Q4_K, LLMQ_TYPE_Q8_0, LLMQ_TYPE_Q6_K, LLMQ_TYPE_Q3_K, LLMQ_TYPE_F16};
    for (size_t k = 0; k < sizeof gemv_types / sizeof gemv_types[0]; k++) {
        llmq_type t = gemv_types[k];
        void *w = random_weights(t, gemv_rows, in);
        const double bytes = (double)llmq_row_size(t, in) * gemv_rows;
        const int quantized = llmq_type_get(t)->is_quantized;
        double best_read = INFINITY, best_exact = INFINITY, best_fast = INFINITY;
        for (int r = 0; r < GEMV_REPS; r++) {
            double s = read_seconds(w, (size_t)bytes);
            best_read = s < best_read ? s : best_read;
            s = time_matmul(y, x, 1, w, t, in, gemv_rows, 1);
            best_exact = s < best_exact ? s : best_exact;
            if (quantized) {
                llmq_set_fast(true);
                s = time_matmul(y, x, 1, w, t, in, gemv_rows, 1);
                llmq_set_fast(false);
                best_fast = s < best_fast ? s : best_fast;
            }
        }
        const double bw = bytes / best_read / 1e9;
        printf("| %s | %.1f | %.1f | %.0f | %.1f | %.0f%% |", llmq_type_get(t)->name, bytes / 1048576, bw, best_exact * 1e6,
               bytes / best_exact / 1e9, 100.0 * bytes / best_exact / 1e9 / bw);
        if (quantized) printf(" %.0f | %.1f | %.0f%% |\n", best_fast * 1e6, bytes / best_fast / 1e9, 100.0 * bytes / best_fast / 1e9 / bw);
        else printf(" – | – | – |\n");
        free(w);
    }

    /* ---- where the GEMV path hands over to decode + sgemm ---- */
    printf("\n### Few tokens, q4_0 [%d → %d]: fused GEMV (≤ 8 tokens) vs panel decode + sgemm (> 8)\n\n", in, out);
    printf("| tokens | ms | ms per token |\n|---:|---:|---:|\n");
    void *w = random_weights(LLMQ_TYPE_Q4_0, out, in);
    const int few[] = {1, 4, 8, 9, 16, 32};
    for (size_t k = 0; k < sizeof few / sizeof few[0]; k++) {
        double t = time_matmul(y, x, few[k], w, LLMQ_TYPE_Q4_0, in, out, 5);
        printf("| %d | %.2f | %.3f |\n", few[k], t * 1e3, t * 1e3 / few[k]);
    }
    free(w);
    free(x);
    free(y);
    return 0;
}
