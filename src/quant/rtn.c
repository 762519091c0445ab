/* Round-to-nearest: grids chosen first in the type's own precision, then
 * weights rounded onto them (see llmq/blocks.h). */
#include "llmq/rtn.h"
#include "llmq/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The grid of a K-quant group with explicit codes under a fixed super-block. */
static llmq_grid k_grid(llmq_type t, const llmq_grid *base, int sc, int mc)
{
    llmq_grid g = *base;
    g.sc = (int16_t)sc;
    g.mc = (int16_t)mc;
    g.scale = llmq_f16_to_f32(g.d) * (float)sc;
    g.offset = t == LLMQ_TYPE_Q4_K ? -(llmq_f16_to_f32(g.m) * (float)mc) : 0.0f;
    return g;
}

/* With the super-block fixed, tries the neighbouring sub-block codes on the
 * exact grid: the 6-bit code nearest to the real scale is not always the
 * one with the smallest error once weights are rounded. */
static llmq_grid refine_k(llmq_type t, llmq_grid g, const float *x, int len, const float *w)
{
    int lo = t == LLMQ_TYPE_Q4_K ? 0 : t == LLMQ_TYPE_Q6_K ? -128 : -32;
    int hi = t == LLMQ_TYPE_Q4_K ? 63 : t == LLMQ_TYPE_Q6_K ? 127 : 31;
    int mspan = t == LLMQ_TYPE_Q4_K ? 1 : 0;
    llmq_grid best = g;
    double best_err = llmq_grid_sse(&g, x, len, w);
    for (int ds = -1; ds <= 1; ds++)
        for (int dm = -mspan; dm <= mspan; dm++) {
            int sc = g.sc + ds, mc = g.mc + dm;
            if ((ds == 0 && dm == 0) || sc < lo || sc > hi || mc < 0 || mc > 63) continue;
            llmq_grid c = k_grid(t, &g, sc, mc);
            double err = llmq_grid_sse(&c, x, len, w);
            if (err < best_err) {
                best_err = err;
                best = c;
            }
        }
    return best;
}

int llmq_rtn_grids(llmq_type t, const float *row, int n, int group_size, llmq_grid *grids, const llmq_rtn_opts *opts)
{
    group_size = llmq_group_resolve(t, group_size);
    if (llmq_group_check(t, n, group_size) != LLMQ_OK) return LLMQ_ERR;
    const bool search = opts && opts->search;
    const float *imp = opts ? opts->importance : NULL;
    const int ng = llmq_group_count(n, group_size);
    if (!llmq_type_is_k(t)) {
        for (int g = 0; g < ng; g++) {
            int start = g * group_size, len = n - start < group_size ? n - start : group_size;
            llmq_real_grid real = llmq_grid_fit(t, row + start, len, imp ? imp + start : NULL, search);
            grids[g] = llmq_grid_from_real(t, real, NULL);
        }
        return LLMQ_OK;
    }
    /* K-quants: every group of a super-block first, then its shared d/dmin,
     * then each group's codes under it. */
    const int per_sb = LLMQ_QK_K / group_size; /* ≤ 16 */
    llmq_real_grid real[16];
    for (int g0 = 0; g0 < ng; g0 += per_sb) {
        for (int k = 0; k < per_sb; k++) {
            int start = (g0 + k) * group_size;
            real[k] = llmq_grid_fit(t, row + start, group_size, imp ? imp + start : NULL, search);
        }
        llmq_superblock sb = llmq_superblock_choose(t, real, per_sb);
        for (int k = 0; k < per_sb; k++) {
            int start = (g0 + k) * group_size;
            grids[g0 + k] = llmq_grid_from_real(t, real[k], &sb);
            if (search) grids[g0 + k] = refine_k(t, grids[g0 + k], row + start, group_size, imp ? imp + start : NULL);
        }
    }
    return LLMQ_OK;
}

int llmq_quantize_row(llmq_type t, const float *src, int n, int group_size, bool rtn_search, void *dst)
{
    const llmq_type_traits *tr = llmq_type_get(t);
    if (!tr) return llmq_error("quantize: unknown type %d", (int)t);
    if (t == LLMQ_TYPE_F32 || t == LLMQ_TYPE_F16 || t == LLMQ_TYPE_BF16) {
        tr->from_float(src, dst, n);
        return LLMQ_OK;
    }
    group_size = llmq_group_resolve(t, group_size);
    if (llmq_group_check(t, n, group_size) != LLMQ_OK) return LLMQ_ERR;
    llmq_grid *grids = malloc(sizeof *grids * (size_t)llmq_group_count(n, group_size));
    if (!grids) return llmq_error("quantize %s: out of memory for the grids of a %d-element row", tr->name, n);
    llmq_rtn_opts opts = {.search = rtn_search, .importance = NULL};
    int rc = llmq_rtn_grids(t, src, n, group_size, grids, &opts);
    if (rc == LLMQ_OK) rc = llmq_pack_row(t, src, n, group_size, grids, dst);
    free(grids);
    return rc;
}

int llmq_quantize_rows(llmq_type t, const float *src, int64_t rows, int n, int group_size, bool rtn_search, void *dst)
{
    const llmq_type_traits *tr = llmq_type_get(t);
    if (!tr) return llmq_error("quantize: unknown type %d", (int)t);
    if (tr->is_quantized && llmq_group_check(t, n, llmq_group_resolve(t, group_size)) != LLMQ_OK) return LLMQ_ERR;
    const size_t row_bytes = llmq_row_size(t, n);
    int failed = 0;
    char message[256] = "";
    #pragma omp parallel for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; r++) {
        int skip;
        #pragma omp atomic read
        skip = failed;
        if (skip) continue;
        if (llmq_quantize_row(t, src + r * n, n, group_size, rtn_search, (char *)dst + r * row_bytes) != LLMQ_OK) {
            /* The message is thread-local: carry it back to the caller's thread. */
            #pragma omp critical(llmq_quantize_rows_error)
            {
                if (!failed) snprintf(message, sizeof message, "%s", llmq_last_error());
                failed = 1;
            }
        }
    }
    if (failed) return llmq_error("%s", message);
    return LLMQ_OK;
}

double llmq_rel_error(const float *ref, const float *approx, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)ref[i] - approx[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    if (den == 0) return num == 0 ? 0.0 : INFINITY;
    return sqrt(num / den);
}

int llmq_quant_rel_error(llmq_type t, const float *src, const void *packed, int64_t rows, int n, double *rel_error)
{
    const llmq_type_traits *tr = llmq_type_get(t);
    if (!tr || !tr->to_float) return llmq_error("quant error: unknown type %d", (int)t);
    if (n <= 0 || n % tr->block_size) return llmq_error("quant error: %s row of %d elements", tr->name, n);
    float *buf = malloc(sizeof *buf * (size_t)n);
    if (!buf) return llmq_error("quant error: out of memory");
    const size_t row_bytes = llmq_row_size(t, n);
    double num = 0, den = 0;
    for (int64_t r = 0; r < rows; r++) {
        tr->to_float((const char *)packed + r * row_bytes, buf, n);
        const float *x = src + r * n;
        for (int i = 0; i < n; i++) {
            double d = (double)x[i] - buf[i];
            num += d * d;
            den += (double)x[i] * x[i];
        }
    }
    free(buf);
    *rel_error = den == 0 ? (num == 0 ? 0.0 : INFINITY) : sqrt(num / den);
    return LLMQ_OK;
}
