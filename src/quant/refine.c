/* Coordinate descent on a quantized layer's codes (llmq/refine.h). */
#include "llmq/refine.h"
#include "llmq/blas.h"
#include "llmq/error.h"
#include "llmq/types.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

enum { REFINE_BLOCK = 128, REFINE_BLOCK_MAX = 1024 };

/* One axis of a grid's stored fields: the candidates around x (the field's
 * continuous optimum). fp16 fields: x rounded to fp16 and its two fp16
 * neighbours; integer codes: floor and ceiling of x / unit, in [lo, hi]. */
typedef struct {
    int n;
    int v[3];
} candidates;

static candidates fp16_candidates(float x)
{
    const uint16_t h = llmq_f32_to_f16(x > 65504.0f ? 65504.0f : x < -65504.0f ? -65504.0f : x);
    candidates c = {0, {0}};
    c.v[c.n++] = h;
    if ((h & 0x7FFF) != 0 && (h & 0x7FFF) < 0x7BFF) c.v[c.n++] = h + 1, c.v[c.n++] = h - 1; /* one step either way in magnitude */
    return c;
}

static candidates code_candidates(float x, float unit, int lo, int hi)
{
    candidates c = {0, {0}};
    if (!(unit != 0.0f)) return c;
    const float r = x / unit;
    int f = (int)floorf(r > (float)hi ? (float)hi : r < (float)lo ? (float)lo : r);
    for (int k = f; k <= f + 1; k++)
        if (k >= lo && k <= hi) c.v[c.n++] = k;
    return c;
}

/* Refits the grid of one group (len columns, codes q, current grid *g) with
 * its codes held: the (scale, offset) that minimise the objective given the
 * gradient gl of those columns and their Hessian block Hg (rows of H, leading
 * dimension n), continuous first, then the stored fields nearest to it; the
 * best candidate is taken when it lowers the objective. Writes the value
 * changes into dv and returns the objective's change (0: grid kept). */
static double refit_group(llmq_type t, llmq_grid *g, const int8_t *q, int len, const float *gl, const float *Hg, int n, float *dv)
{
    float u[REFINE_BLOCK_MAX], hu[REFINE_BLOCK_MAX], h1[REFINE_BLOCK_MAX];
    for (int i = 0; i < len; i++) {
        u[i] = g->levels ? (float)llmq_iq4nl_levels[q[i]] : (float)(q[i] - g->zero);
        hu[i] = h1[i] = 0.0f;
    }
    /* Hg·u and Hg·1, column by column (Hg is symmetric): every lane an axpy, no reassociation */
    for (int k = 0; k < len; k++) {
        const float *hk = Hg + (size_t)k * n, uk = u[k];
        #pragma omp simd
        for (int i = 0; i < len; i++) {
            hu[i] += hk[i] * uk;
            h1[i] += hk[i];
        }
    }
    double a11 = 0, a12 = 0, a22 = 0, b1 = 0, b2 = 0;
    for (int i = 0; i < len; i++) {
        a11 += (double)u[i] * hu[i];
        a12 += (double)u[i] * h1[i];
        a22 += h1[i];
        b1 += (double)u[i] * gl[i];
        b2 += gl[i];
    }
    /* value = S·u + O; a change (dS, dO) moves the objective by
     * −2(dS·b1 + dO·b2) + dS²·a11 + 2·dS·dO·a12 + dO²·a22 */
    const bool free_offset = llmq_type_has_min(t);
    double dS, dO = 0;
    if (free_offset) {
        const double det = a11 * a22 - a12 * a12;
        if (!(det > 1e-12 * a11 * a22)) return 0;
        dS = (b1 * a22 - b2 * a12) / det;
        dO = (a11 * b2 - a12 * b1) / det;
    } else {
        if (!(a11 > 0)) return 0;
        dS = b1 / a11;
    }
    const float S = g->scale + (float)dS, O = g->offset + (float)dO;
    candidates cs, co = {1, {0}};
    switch (t) {
    case LLMQ_TYPE_Q4_0:
    case LLMQ_TYPE_Q5_0:
    case LLMQ_TYPE_Q8_0:
    case LLMQ_TYPE_IQ4_NL: cs = fp16_candidates(S); break;
    case LLMQ_TYPE_Q4_1:
    case LLMQ_TYPE_Q5_1:
        cs = fp16_candidates(S);
        co = fp16_candidates(O);
        break;
    case LLMQ_TYPE_Q4_K:
    case LLMQ_TYPE_Q5_K:
    case LLMQ_TYPE_Q2_K:
    case LLMQ_TYPE_Q6_K:
    case LLMQ_TYPE_Q3_K:
    case LLMQ_TYPE_IQ4_XS: {
        int lo = 0, hi = 0, mhi = 0;
        llmq_subblock_code_range(t, &lo, &hi, &mhi);
        cs = code_candidates(S, llmq_f16_to_f32(g->d), lo, hi);
        if (mhi) co = code_candidates(-O, llmq_f16_to_f32(g->m), 0, mhi);
        break;
    }
    default: return 0;
    }
    /* the candidates ranked by the quadratic form, the best then scored on its exact values */
    double best_est = 0;
    llmq_grid best = *g;
    for (int a = 0; a < cs.n; a++)
        for (int b = 0; b < co.n; b++) {
            llmq_grid c;
            if (t == LLMQ_TYPE_Q4_0 || t == LLMQ_TYPE_Q5_0 || t == LLMQ_TYPE_Q8_0 || t == LLMQ_TYPE_IQ4_NL)
                c = llmq_grid_from_fields(t, (uint16_t)cs.v[a], 0, 0, 0);
            else if (t == LLMQ_TYPE_Q4_1 || t == LLMQ_TYPE_Q5_1) c = llmq_grid_from_fields(t, (uint16_t)cs.v[a], (uint16_t)co.v[b], 0, 0);
            else if (t == LLMQ_TYPE_Q4_K || t == LLMQ_TYPE_Q5_K || t == LLMQ_TYPE_Q2_K) c = llmq_grid_from_fields(t, g->d, g->m, cs.v[a], co.v[b]);
            else c = llmq_grid_from_fields(t, g->d, 0, cs.v[a], 0);
            if (!isfinite(c.scale) || !isfinite(c.offset)) continue;
            const double es = (double)c.scale - g->scale, eo = (double)c.offset - g->offset;
            const double est = es * es * a11 + 2 * es * eo * a12 + eo * eo * a22 - 2 * (es * b1 + eo * b2);
            if (est < best_est) {
                best_est = est;
                best = c;
            }
        }
    if (!(best_est < 0)) return 0;
    float ht[REFINE_BLOCK_MAX];
    for (int i = 0; i < len; i++) {
        dv[i] = llmq_grid_value(&best, q[i]) - llmq_grid_value(g, q[i]);
        ht[i] = 0.0f;
    }
    for (int k = 0; k < len; k++) {
        const float *hk = Hg + (size_t)k * n, vk = dv[k];
        #pragma omp simd
        for (int i = 0; i < len; i++) ht[i] += hk[i] * vk;
    }
    double change = 0;
    for (int i = 0; i < len; i++) change += (double)dv[i] * ((double)ht[i] - 2.0 * gl[i]);
    if (!(change < 0)) return 0;
    *g = best;
    return change;
}

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
    /* Blocks of whole groups, so each group's grid can be refitted inside one (not past REFINE_BLOCK_MAX). */
    const int ng = llmq_group_count(cols, G), n = cols;
    const bool refit = G <= REFINE_BLOCK_MAX;
    const int B = refit ? G * ((REFINE_BLOCK + G - 1) / G) : REFINE_BLOCK;
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
    llmq_sgemm(CblasNoTrans, CblasNoTrans, rows, n, n, 1.0f, D, n, H, n, 0.0f, Gm, n);
    llmq_refine_stats st = {.passes = 0};
    st.objective[0] = objective(D, Gm, count);
    for (int pass = 0; pass < passes; pass++) {
        int64_t changed = 0, regridded = 0;
        for (int j1 = 0; j1 < n; j1 += B) {
            const int bw = n - j1 < B ? n - j1 : B;
            #pragma omp parallel for reduction(+ : changed, regridded) schedule(static)
            for (int r = 0; r < rows; r++) {
                float gl[REFINE_BLOCK_MAX], dv[REFINE_BLOCK_MAX], *u = U + (size_t)r * B, *d = D + (size_t)r * n;
                int8_t *q = codes + (size_t)r * n;
                llmq_grid *g = grids + (size_t)r * ng;
                memcpy(gl, Gm + (size_t)r * n + j1, sizeof(float) * (size_t)bw);
                memset(u, 0, sizeof(float) * (size_t)bw);
                for (int k0 = 0; k0 < bw; k0 += G) {
                    const int len = bw - k0 < G ? bw - k0 : G;
                    /* (b) each code against the others' current error */
                    for (int k = k0; k < k0 + len; k++) {
                        const int j = j1 + k;
                        const float h = H[(size_t)j * n + j];
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
                        u[k] += step;
                        const float *hj = H + (size_t)j * n + j1;
                        #pragma omp simd
                        for (int m = 0; m < bw; m++) gl[m] -= step * hj[m];
                        changed++;
                    }
                    /* (a) the group's grid with its codes held (whole groups only) */
                    if (!refit || len != G) continue;
                    const int j0 = j1 + k0;
                    if (refit_group(type, &g[j0 / G], q + j0, len, gl + k0, H + (size_t)j0 * n + j0, n, dv) >= 0) continue;
                    for (int i = 0; i < len; i++) {
                        d[j0 + i] -= dv[i];
                        u[k0 + i] += dv[i];
                        const float *hj = H + (size_t)(j0 + i) * n + j1;
                        #pragma omp simd
                        for (int m = 0; m < bw; m++) gl[m] -= dv[i] * hj[m];
                    }
                    regridded++;
                }
            }
            /* every column's gradient (the block's own included) after the block's moves */
            llmq_sgemm(CblasNoTrans, CblasNoTrans, rows, n, bw, -1.0f, U, B, H + (size_t)j1 * n, n, 1.0f, Gm, n);
        }
        st.changed[pass] = changed;
        st.regridded[pass] = regridded;
        st.objective[++st.passes] = objective(D, Gm, count);
        if (changed == 0 && regridded == 0) break;
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
