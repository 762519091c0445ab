/* Round-to-nearest: grids chosen first in the type's own precision, then
 * weights rounded onto them (see llmq/blocks.h). */
#include "llmq/rtn.h"
#include "llmq/error.h"

#include <math.h>

/* The grid of a K-quant group with explicit codes under a fixed super-block. */
static llmq_grid k_grid(llmq_type t, const llmq_grid *base, int sc, int mc)
{
    llmq_grid g = *base;
    g.sc = (int16_t)sc;
    g.mc = (int16_t)mc;
    g.scale = llmq_f16_to_f32(g.d) * (float)sc;
    g.offset = t == LLMQ_TYPE_Q4_K || t == LLMQ_TYPE_Q5_K || t == LLMQ_TYPE_Q2_K ? -(llmq_f16_to_f32(g.m) * (float)mc) : 0.0f;
    return g;
}

/* With the super-block fixed, tries the neighbouring sub-block codes on the
 * exact grid: the 6-bit code nearest to the real scale is not always the
 * one with the smallest error once weights are rounded. */
static llmq_grid refine_k(llmq_type t, llmq_grid g, const float *x, int len, const float *w)
{
    const bool with_min = t == LLMQ_TYPE_Q4_K || t == LLMQ_TYPE_Q5_K || t == LLMQ_TYPE_Q2_K;
    const int code_max = t == LLMQ_TYPE_Q2_K ? 15 : 63;
    int lo = with_min ? 0 : t == LLMQ_TYPE_Q6_K ? -128 : -32;
    int hi = with_min ? code_max : t == LLMQ_TYPE_Q6_K ? 127 : 31;
    int mspan = with_min ? 1 : 0;
    llmq_grid best = g;
    double best_err = llmq_grid_sse(&g, x, len, w);
    for (int ds = -1; ds <= 1; ds++)
        for (int dm = -mspan; dm <= mspan; dm++) {
            int sc = g.sc + ds, mc = g.mc + dm;
            if ((ds == 0 && dm == 0) || sc < lo || sc > hi || mc < 0 || mc > (with_min ? code_max : 63)) continue;
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
