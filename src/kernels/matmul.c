/* y = x·Wᵀ for W in any llmq_type. Two paths:
 *  - few tokens (GEMV): each thread takes a range of output rows and runs the
 *    fused decode-and-dot kernel over them, reading each row once per
 *    LLMQ_DOT_MAX_TOKENS tokens — bandwidth-bound, no scratch memory;
 *  - many tokens (prompt processing): each thread decodes panels of its own
 *    output rows to fp32 with the SIMD decoder and multiplies each with a
 *    serial sgemm. The decode costs O(rows·in) against the product's
 *    O(tokens·rows·in), so this runs near sgemm speed with a panel of
 *    scratch memory per thread.
 * F32 weights go to sgemm directly, in the same panels. */
#include "llmq/kernels.h"
#include "llmq/error.h"
#include "kernel_ops.h"
#include "gemm_q8.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>

/* Up to this many tokens the fused GEMV path beats decode + sgemm (bench/bench_kernels.c). */
#define GEMV_MAX_TOKENS 8

/* Links the BLAS family check (blas_core.c, a constructor) into every program that multiplies. */
__attribute__((used)) static const char *(*const blas_core_check)(void) = llmq_blas_core_detected;

static int n_threads_set;
static int fast_mode, int16_mode;

void llmq_set_int16(bool on) { __atomic_store_n(&int16_mode, on ? 1 : 0, __ATOMIC_RELAXED); }
bool llmq_get_int16(void) { return __atomic_load_n(&int16_mode, __ATOMIC_RELAXED) != 0; }

void llmq_set_fast(bool on) { __atomic_store_n(&fast_mode, on ? 1 : 0, __ATOMIC_RELAXED); }
bool llmq_get_fast(void) { return __atomic_load_n(&fast_mode, __ATOMIC_RELAXED) != 0; }

void llmq_set_threads(int n)
{
    if (n <= 0) n = omp_get_num_procs();
    n_threads_set = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int llmq_get_threads(void)
{
    return n_threads_set > 0 ? n_threads_set : omp_get_max_threads();
}

static int check_shape(const llmq_type_traits **tr, llmq_type wtype, int in)
{
    *tr = llmq_type_get(wtype);
    if (!*tr || !(*tr)->to_float) return llmq_error("matmul: weight type %d cannot be decoded", (int)wtype);
    if (in <= 0 || in % (*tr)->block_size)
        return llmq_error("matmul: row length %d is not a multiple of %s's block of %d", in, (*tr)->name, (*tr)->block_size);
    return LLMQ_OK;
}

int llmq_dequant_rows(float *dst, const void *w, llmq_type wtype, int in, int r0, int r1)
{
    const llmq_type_traits *tr;
    if (check_shape(&tr, wtype, in) != LLMQ_OK) return LLMQ_ERR;
    const llmq_kernel_ops *ops = llmq_kernel_ops_for(wtype);
    if (!ops) return LLMQ_ERR;
    const size_t row_bytes = llmq_row_size(wtype, in);
    const unsigned char *base = w;
    #pragma omp parallel for schedule(static)
    for (int r = r0; r < r1; r++) ops->dequant(base + (size_t)r * row_bytes, dst + (size_t)(r - r0) * in, in);
    return LLMQ_OK;
}

static void gemv(const llmq_kernel_ops *ops, float *y, const float *x, int n_tokens, const unsigned char *w, size_t row_bytes,
                 int in, int out)
{
    #pragma omp parallel for schedule(static)
    for (int o = 0; o < out; o++)
        for (int t0 = 0; t0 < n_tokens; t0 += LLMQ_DOT_MAX_TOKENS) {
            int nt = n_tokens - t0 < LLMQ_DOT_MAX_TOKENS ? n_tokens - t0 : LLMQ_DOT_MAX_TOKENS;
            ops->dot(w + (size_t)o * row_bytes, x + (size_t)t0 * in, (size_t)in, nt, in, y + (size_t)t0 * out + o, (size_t)out);
        }
}

/* The --fast product: each token's row quantized once to int8 blocks, then
 * the ISA's integer dot. Threads take tiles of 16 output rows; within a tile,
 * each group of LLMQ_DOT_MAX_TOKENS tokens (a few KiB of activation blocks,
 * L1-resident) meets every row of the tile (L2-resident) in turn. */
#define Q8_ROW_TILE 16
static int matmul_q8(const llmq_kernel_ops *ops, float *y, const float *x, int n_tokens, const unsigned char *w, size_t row_bytes,
                     int in, int out)
{
    const size_t nb = llmq_act_q8_stride(in); /* blocks per token */
    llmq_act_q8 *xq = malloc((size_t)n_tokens * nb * sizeof *xq);
    if (!xq) return llmq_error("matmul: out of memory for %d×%d quantized activations", n_tokens, in);
    #pragma omp parallel for schedule(static) if (n_tokens > 1)
    for (int t = 0; t < n_tokens; t++) llmq_act_quantize_q8(x + (size_t)t * in, in, xq + (size_t)t * nb);
    const int tiles = (out + Q8_ROW_TILE - 1) / Q8_ROW_TILE;
    #pragma omp parallel for schedule(static)
    for (int tile = 0; tile < tiles; tile++) {
        const int o0 = tile * Q8_ROW_TILE, o1 = o0 + Q8_ROW_TILE < out ? o0 + Q8_ROW_TILE : out;
        for (int t0 = 0; t0 < n_tokens; t0 += LLMQ_DOT_MAX_TOKENS) {
            const int nt = n_tokens - t0 < LLMQ_DOT_MAX_TOKENS ? n_tokens - t0 : LLMQ_DOT_MAX_TOKENS;
            for (int o = o0; o < o1; o++)
                ops->dot_q8(w + (size_t)o * row_bytes, xq + (size_t)t0 * nb, nb, nt, in, y + (size_t)t0 * out + o, (size_t)out);
        }
    }
    free(xq);
    return LLMQ_OK;
}

/* One parallel region for the whole product: the output rows are cut into
 * panels fixed by the shape alone, and each thread decodes a panel into its
 * own scratch and multiplies it with a single-threaded sgemm (OpenBLAS runs
 * serially inside a parallel region). Which thread takes a panel never
 * changes a bit (with OpenBLAS's Haswell/Zen kernels an element's bits depend
 * on where a call's rows start; llmq/blas.h). No barrier until the end — on
 * a busy machine every barrier can cost a scheduler time slice. */
static int panel_matmul(const llmq_kernel_ops *ops, float *y, const float *x, int n_tokens, const unsigned char *w, size_t row_bytes,
                        int in, int out)
{
    /* Panel ≈ 8 MiB of floats (in L3 between its decode and its sgemm), at
     * most 256 rows so a 4096-row product still has 16 panels: sgemm packs
     * all of x again for every panel, so smaller panels pay that more often
     * (one Llama-2-7B layer + head at 512 tokens, 1 thread: 2 MiB 77-81,
     * 8 MiB 88-97 GFLOP/s; 512 KiB 67). Whole multiples of 16 rows keep
     * sgemm's column blocks whole. */
    int panel = (int)((8u << 20) / ((size_t)in * sizeof(float))) / 16 * 16;
    panel = panel < 16 ? 16 : panel > 256 ? 256 : panel;
    const int panels = (out + panel - 1) / panel;
    int failed = 0;
    #pragma omp parallel if (panels > 1)
    {
        omp_set_num_threads(1); /* sgemm serial in a team of one too */
        float *scratch = ops ? malloc((size_t)(panel < out ? panel : out) * in * sizeof(float)) : NULL;
        if (ops && !scratch) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(dynamic, 1) nowait
        for (int p = 0; p < panels; p++) {
            if (ops && !scratch) continue;
            const int r0 = p * panel, r1 = r0 + panel < out ? r0 + panel : out;
            const float *rows = (const float *)(w + (size_t)r0 * row_bytes);
            if (ops) {
                for (int r = r0; r < r1; r++) ops->dequant(w + (size_t)r * row_bytes, scratch + (size_t)(r - r0) * in, in);
                rows = scratch;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n_tokens, r1 - r0, in, 1.0f, x, in, rows, in, 0.0f, y + r0, out);
        }
        free(scratch);
    }
    if (failed) return llmq_error("matmul: out of memory for a %d×%d panel per thread", panel, in);
    return LLMQ_OK;
}

int llmq_matmul(float *y, const float *x, int n_tokens, const void *w, llmq_type wtype, int in, int out)
{
    if (n_tokens <= 0 || in <= 0 || out <= 0) return llmq_error("matmul: empty shape %d×%d×%d", n_tokens, in, out);
    const llmq_type_traits *tr;
    if (check_shape(&tr, wtype, in) != LLMQ_OK) return LLMQ_ERR;
    /* F32 rows go to sgemm as they are, in the panels decoded rows take, so
     * equal values in F32 and in F16/BF16 give the same bits past
     * GEMV_MAX_TOKENS tokens on the exact path (fewer tokens: the GEMV) */
    if (wtype == LLMQ_TYPE_F32) return panel_matmul(NULL, y, x, n_tokens, w, (size_t)in * sizeof(float), in, out);
    const llmq_kernel_ops *ops = llmq_kernel_ops_for(wtype);
    if (!ops) return LLMQ_ERR;
    const size_t row_bytes = llmq_row_size(wtype, in);
    if (llmq_get_int16() && in % 32 == 0 && n_tokens > GEMV_MAX_TOKENS && llmq_gemm_q16_supports(wtype))
        return llmq_gemm_q16(y, x, n_tokens, w, wtype, in, out);
    if (ops->dot_q8 && in % 32 == 0 && llmq_get_fast() && !llmq_get_int16()) {
        if (n_tokens > GEMV_MAX_TOKENS && llmq_gemm_q8_supports(wtype)) return llmq_gemm_q8(y, x, n_tokens, w, wtype, in, out);
        return matmul_q8(ops, y, x, n_tokens, w, row_bytes, in, out);
    }
    if (n_tokens <= GEMV_MAX_TOKENS) {
        gemv(ops, y, x, n_tokens, w, row_bytes, in, out);
        return LLMQ_OK;
    }
    return panel_matmul(ops, y, x, n_tokens, w, row_bytes, in, out);
}
