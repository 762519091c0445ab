/* Many-token path: decode a panel of weight rows to fp32, then one sgemm per
 * panel (the decode costs O(rows·in), the product O(tokens·rows·in), so for
 * prompt-sized batches this runs at sgemm speed and needs only a panel of
 * scratch memory). F32 weights go to sgemm directly. */
#include "llmq/kernels.h"
#include "llmq/error.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>

static int n_threads_set;

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

int llmq_dequant_rows(float *dst, const void *w, llmq_type wtype, int in, int r0, int r1)
{
    const llmq_type_traits *tr = llmq_type_get(wtype);
    if (!tr || !tr->to_float) return llmq_error("matmul: weight type %d cannot be decoded", (int)wtype);
    if (in % tr->block_size) return llmq_error("matmul: row length %d is not a multiple of %s's block of %d", in, tr->name, tr->block_size);
    size_t row_bytes = llmq_row_size(wtype, in);
    const unsigned char *base = w;
    #pragma omp parallel for schedule(static)
    for (int r = r0; r < r1; r++)
        tr->to_float(base + (size_t)r * row_bytes, dst + (size_t)(r - r0) * in, in);
    return LLMQ_OK;
}

int llmq_matmul(float *y, const float *x, int n_tokens, const void *w, llmq_type wtype, int in, int out)
{
    if (n_tokens <= 0 || in <= 0 || out <= 0) return llmq_error("matmul: empty shape %d×%d×%d", n_tokens, in, out);
    if (wtype == LLMQ_TYPE_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n_tokens, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
        return LLMQ_OK;
    }
    /* Panel of rows sized to stay near the L2/L3 caches (about 4 MiB of floats). */
    int panel = (int)((4u << 20) / ((size_t)in * sizeof(float)));
    if (panel < 16) panel = 16;
    if (panel > out) panel = out;
    float *scratch = malloc((size_t)panel * in * sizeof(float));
    if (!scratch) return llmq_error("matmul: out of memory for a %d×%d panel", panel, in);
    for (int r0 = 0; r0 < out; r0 += panel) {
        int r1 = r0 + panel < out ? r0 + panel : out;
        if (llmq_dequant_rows(scratch, w, wtype, in, r0, r1) != LLMQ_OK) {
            free(scratch);
            return LLMQ_ERR;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n_tokens, r1 - r0, in, 1.0f, x, in, scratch, in, 0.0f, y + r0, out);
    }
    free(scratch);
    return LLMQ_OK;
}
