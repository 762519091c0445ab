/* Coordinate descent on a quantized layer's codes (llmq/refine.h). */
#include "llmq/refine.h"
#include "llmq/error.h"
#include "llmq/types.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

enum { REFINE_BLOCK = 128 };

/* Σ D∘G in double: Σ_r δ_rᵀ H δ_r when G = D·H. */
static double objective(const float *D, const float *G, size_t count)
{
    double sum = 0;
    #pragma omp parallel for reduction(+ : sum) schedule(static)
    for (size_t i = 0; i < count; i++) sum += (double)D[i] * G[i];
    return sum;
}

int llmq_refine_codes(const float *W, int rows, int cols, float *H, llmq_type type, int group_size, void *packed, int passes,
                      llmq_refine_stats *stats)
{
    if (!W || !H || !packed) return llmq_error("refine: NULL argument");
    if (rows <= 0 || cols <= 0) return llmq_error("refine: bad shape %d × %d", rows, cols);
    if (passes < 0 || passes > LLMQ_REFINE_MAX_PASSES) return llmq_error("refine: %d passes (0..%d)", passes, LLMQ_REFINE_MAX_PASSES);
    const int G = llmq_group_resolve(type, group_size);
    if (llmq_group_check(type, cols, G) != LLMQ_OK) return llmq_error_prefix("refine");
    const double t0 = omp_get_wtime();
    const int ng = llmq_group_count(cols, G), n = cols, B = REFINE_BLOCK;
    const size_t row_bytes = llmq_row_size(type, cols), count = (size_t)rows * cols;
    int8_t *codes = malloc(count);
    llmq_grid *grids = malloc(sizeof *grids * (size_t)rows * ng);
    float *D = malloc(sizeof *D * count), *Gm = malloc(sizeof *Gm * count), *U = malloc(sizeof *U * (size_t)rows * B);
    int rc = LLMQ_ERR, failed = 0;
    if (!codes || !grids || !D || !Gm || !U) {
        llmq_error("refine: out of memory for a %d × %d layer", rows, cols);
        goto done;
    }
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const char *src = (const char *)packed + (size_t)r * row_bytes;
        int8_t *q = codes + (size_t)r * n;
        llmq_grid *g = grids + (size_t)r * ng;
        if (llmq_unpack_codes(type, src, n, q) != LLMQ_OK || llmq_unpack_grids(type, src, n, G, g) != LLMQ_OK) {
            #pragma omp atomic write
            failed = 1;
            continue;
        }
        for (int c = 0; c < n; c++) D[(size_t)r * n + c] = W[(size_t)r * n + c] - llmq_grid_value(&g[c / G], q[c]);
    }
    if (failed) {
        llmq_error_prefix("refine");
        goto done;
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++) H[(size_t)i * n + j] = H[(size_t)j * n + i];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, n, n, 1.0f, D, n, H, n, 0.0f, Gm, n);
    llmq_refine_stats st = {.passes = 0};
    st.objective[0] = objective(D, Gm, count);
    for (int pass = 0; pass < passes; pass++) {
        int64_t changed = 0;
        for (int j1 = 0; j1 < n; j1 += B) {
            const int bw = n - j1 < B ? n - j1 : B;
            #pragma omp parallel for reduction(+ : changed) schedule(static)
            for (int r = 0; r < rows; r++) {
                float gl[REFINE_BLOCK], *u = U + (size_t)r * B, *d = D + (size_t)r * n;
                int8_t *q = codes + (size_t)r * n;
                const llmq_grid *g = grids + (size_t)r * ng;
                memcpy(gl, Gm + (size_t)r * n + j1, sizeof(float) * (size_t)bw);
                for (int k = 0; k < bw; k++) {
                    const int j = j1 + k;
                    const float h = H[(size_t)j * n + j];
                    u[k] = 0.0f;
                    if (!(h > 0.0f)) continue;
                    const llmq_grid *gr = &g[j / G];
                    const float v = llmq_grid_value(gr, q[j]);
                    const int c = llmq_grid_round(gr, v + gl[k] / h);
                    if (c == q[j]) continue;
                    const float step = llmq_grid_value(gr, c) - v;
                    /* the objective moves by −2·step·g_j + step²·H_jj: take only a strict fall */
                    if (!((double)step * step * h < 2.0 * step * gl[k])) continue;
                    q[j] = (int8_t)c;
                    d[j] -= step;
                    u[k] = step;
                    const float *hj = H + (size_t)j * n + j1;
                    for (int m = 0; m < bw; m++) gl[m] -= step * hj[m];
                    changed++;
                }
            }
            /* every column's gradient (the block's own included) after the block's moves */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, n, bw, -1.0f, U, B, H + (size_t)j1 * n, n, 1.0f, Gm, n);
        }
        st.changed[pass] = changed;
        st.objective[++st.passes] = objective(D, Gm, count);
        if (changed == 0) break;
    }
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        if (llmq_pack_codes(type, codes + (size_t)r * n, n, G, grids + (size_t)r * ng, (char *)packed + (size_t)r * row_bytes) != LLMQ_OK) {
            #pragma omp atomic write
            failed = 1;
        }
    if (failed) { /* cannot happen: the codes stay in their grids' ranges */
        llmq_error_prefix("refine: packing");
        goto done;
    }
    st.seconds = omp_get_wtime() - t0;
    if (stats) *stats = st;
    rc = LLMQ_OK;
done:
    free(codes);
    free(grids);
    free(D);
    free(Gm);
    free(U);
    return rc;
}
