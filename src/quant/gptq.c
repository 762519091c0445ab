/* GPTQ solver (arXiv 2210.17323 §4; IST-DASLab/gptq gptq.py:fasterquant)
 * into ggml block grids, and the running Hessian. See llmq/gptq.h.
 *
 * Layout of the Hessian buffer through the solve (n = cols, row-major):
 *  1. the upper triangle is mirrored into the lower one and the matrix is
 *     permuted in place by pr = reverse(perm) — perm being the column order
 *     (identity, or descending diag H with act_order) — so it holds J·H_p·J
 *     with H_p = H[perm][:, perm] and J the reversal;
 *  2. its Cholesky factor, written over the row-major lower triangle, is
 *     J·H_p·J = Fᵀ·F (F upper; LAPACK would call this the column-major 'U'
 *     factorisation of the same memory); the row-major strict upper triangle
 *     is untouched and restores the matrix when a damp retry is needed;
 *  3. inverting F in place and reversing the whole array leaves in the
 *     row-major upper triangle U = J·F⁻ᵀ·J, upper triangular with
 *     H_p⁻¹ = UᵀU — the "upper Cholesky factor of H⁻¹" the sweep needs, for
 *     one Cholesky and one triangular inverse (2n³/3 flops) instead of the
 *     reference's Cholesky, cholesky_inverse and second Cholesky (4n³/3). */
#include "llmq/gptq.h"
#include "llmq/blas.h"
#include "llmq/error.h"
#include "llmq/kernels.h"
#include "llmq/rtn.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Links the BLAS family check (kernels/blas_core.c) into programs that only solve. */
__attribute__((used)) static const char *(*const blas_core_check)(void) = llmq_blas_core_detected;

llmq_gptq_opts llmq_gptq_default_opts(void)
{
    llmq_gptq_opts o = {.damp = 0.01f, .block_size = 128, .act_order = false, .grid_search = false, .max_damp_retries = 3};
    return o;
}

static int hessian_add(float *H, int cols, int64_t *n_seen, const float *X, int n_tokens, bool bf16)
{
    if (!H || !n_seen || (!X && n_tokens > 0)) return llmq_error("hessian: NULL argument");
    if (cols <= 0 || n_tokens < 0 || *n_seen < 0)
        return llmq_error("hessian: bad shape (cols %d, tokens %d, seen %lld)", cols, n_tokens, (long long)*n_seen);
    if (n_tokens == 0) return LLMQ_OK;
    const double total = (double)*n_seen + n_tokens;
    const float alpha = (float)(2.0 / total), beta = (float)((double)*n_seen / total);
    /* beta = 0 on the first call: H's previous contents are then ignored. */
    if (bf16) {
        if (llmq_syrk_bf16(H, cols, X, n_tokens, alpha, beta) != LLMQ_OK) return llmq_error_prefix("hessian");
    } else
        llmq_ssyrk(CblasUpper, CblasTrans, cols, n_tokens, alpha, X, cols, beta, H, cols);
    *n_seen += n_tokens;
    return LLMQ_OK;
}

int llmq_hessian_add(float *H, int cols, int64_t *n_seen, const float *X, int n_tokens)
{
    return hessian_add(H, cols, n_seen, X, n_tokens, false);
}

int llmq_hessian_add_bf16(float *H, int cols, int64_t *n_seen, const float *X, int n_tokens)
{
    return hessian_add(H, cols, n_seen, X, n_tokens, true);
}

int llmq_hsum_begin(llmq_hsum *h, int cols, float *partial, bool bf16)
{
    memset(h, 0, sizeof *h);
    if (cols <= 0 || !partial) return llmq_error("hessian: bad shape (cols %d) or no scratch", cols);
    h->cols = cols;
    h->bf16 = bf16;
    h->partial = partial;
    return llmq_xsum_init(&h->sum, llmq_xsum_upper_slots(cols)) ? llmq_error_prefix("hessian %d × %d", cols, cols) : LLMQ_OK;
}

int llmq_hsum_add(llmq_hsum *h, const float *X, int n_tokens)
{
    if (n_tokens <= 0) return n_tokens == 0 ? LLMQ_OK : llmq_error("hessian: %d tokens", n_tokens);
    const float beta = h->unit_tokens ? 1.0f : 0.0f;
    if (h->bf16) {
        if (llmq_syrk_bf16(h->partial, h->cols, X, n_tokens, 1.0f, beta) != LLMQ_OK) return llmq_error_prefix("hessian");
    } else {
        llmq_ssyrk(CblasUpper, CblasTrans, h->cols, n_tokens, 1.0f, X, h->cols, beta, h->partial, h->cols);
    }
    h->unit_tokens += n_tokens;
    return LLMQ_OK;
}

int llmq_hsum_unit_end(llmq_hsum *h)
{
    if (!h->unit_tokens) return LLMQ_OK;
    h->unit_tokens = 0;
    return llmq_xsum_add_upper(&h->sum, h->partial, h->cols, h->cols, "hessian");
}

int llmq_hsum_finish(llmq_hsum *h, float *H, double scale)
{
    int rc = LLMQ_ERR;
    if (llmq_hsum_unit_end(h) == LLMQ_OK && llmq_xsum_reduce(&h->sum) == LLMQ_OK) {
        llmq_xsum_get_upper(&h->sum, H, h->cols, h->cols, scale);
        rc = LLMQ_OK;
    }
    llmq_hsum_free(h);
    return rc;
}

void llmq_hsum_free(llmq_hsum *h) { llmq_xsum_free(&h->sum); }

/* ------------------------------------------------------------ matrix plumbing */

/* Threads only where a parallel region has enough work to pay for waking
 * them: on a small or shared machine the wake-up and barrier otherwise cost
 * more than the work (`work` counts rough element operations). */
static inline bool worth_threads(size_t work) { return work >= ((size_t)1 << 20); }

/* Copies the strict upper triangle of the n × n row-major A into the lower
 * one, in tiles so both sides stay in cache. */
static void mirror_upper(float *A, int n)
{
    enum { T = 64 };
    #pragma omp parallel for schedule(dynamic, 1) if (worth_threads((size_t)n * n))
    for (int bi = 0; bi < n; bi += T)
        for (int bj = 0; bj <= bi; bj += T)
            for (int i = bi; i < bi + T && i < n; i++)
                for (int j = bj; j < bj + T && j < i; j++) A[(size_t)i * n + j] = A[(size_t)j * n + i];
}

/* A ← A[p][:, p] in place (A symmetric, both triangles valid): rows by
 * following the permutation's cycles, then columns row by row. */
static int permute_symmetric(float *A, int n, const int *p)
{
    float *tmp = malloc(sizeof *tmp * (size_t)n);
    unsigned char *done = calloc((size_t)n, 1);
    if (!tmp || !done) {
        free(tmp);
        free(done);
        return LLMQ_ERR;
    }
    const size_t row = sizeof *A * (size_t)n;
    for (int s = 0; s < n; s++) {
        if (done[s] || p[s] == s) continue;
        memcpy(tmp, A + (size_t)s * n, row);
        int i = s;
        for (;;) {
            done[i] = 1;
            int j = p[i];
            if (j == s) {
                memcpy(A + (size_t)i * n, tmp, row);
                break;
            }
            memcpy(A + (size_t)i * n, A + (size_t)j * n, row);
            i = j;
        }
    }
    free(tmp);
    free(done);
    int failed = 0;
    #pragma omp parallel if (worth_threads((size_t)n * n))
    {
        float *buf = malloc(sizeof *buf * (size_t)n);
        if (!buf) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(static)
        for (int i = 0; i < n; i++) {
            if (!buf) continue;
            float *a = A + (size_t)i * n;
            for (int j = 0; j < n; j++) buf[j] = a[p[j]];
            memcpy(a, buf, row);
        }
        free(buf);
    }
    return failed ? LLMQ_ERR : LLMQ_OK;
}

/* Reverses the n × n array element by element: A ← J·A·J. */
static void reverse_all(float *A, int n)
{
    size_t total = (size_t)n * n;
    for (size_t a = 0, b = total - 1; a < b; a++, b--) {
        float t = A[a];
        A[a] = A[b];
        A[b] = t;
    }
}

/* Cholesky and triangular inverse on the row-major lower triangle (LAPACK's
 * column-major 'U' of the same memory): recursive halving into BLAS-3 calls
 * (TRSM, SYRK) down to LEAF-sized blocks done here on one thread. OpenBLAS's
 * own spotrf/strtri (0.3.21, OpenMP build) ran 10–100× slower with 2
 * threads than with 1 on the shared 2-core machine — a 128 × 128 spotrf
 * took 0.3 s — while its threaded TRSM/SYRK/GEMM on large blocks did not. */
enum { LEAF = 256 };

static int cholesky_leaf(float *A, int n, int ld)
{
    for (int j = 0; j < n; j++) {
        float *aj = A + (size_t)j * ld;
        double d = aj[j];
        for (int k = 0; k < j; k++) d -= (double)aj[k] * aj[k];
        if (!(d > 0)) return j + 1;
        aj[j] = (float)sqrt(d);
        const float inv = 1.0f / aj[j];
        for (int i = j + 1; i < n; i++) {
            float *ai = A + (size_t)i * ld;
            float dot = 0;
            #pragma omp simd reduction(+ : dot)
            for (int k = 0; k < j; k++) dot += ai[k] * aj[k];
            ai[j] = (ai[j] - dot) * inv;
        }
    }
    return 0;
}

/* Row i of L⁻¹ from the rows above it (already inverted in place):
 * X[i][j] = −(Σ_{j≤k<i} L[i][k]·X[k][j]) / L[i][i]. */
static void invert_leaf(float *L, int n, int ld, float *t)
{
    for (int i = 0; i < n; i++) {
        float *li = L + (size_t)i * ld;
        for (int j = 0; j < i; j++) t[j] = 0;
        for (int k = 0; k < i; k++) {
            const float *xk = L + (size_t)k * ld, f = li[k];
            #pragma omp simd
            for (int j = 0; j <= k; j++) t[j] += f * xk[j];
        }
        const float inv = 1.0f / li[i];
        for (int j = 0; j < i; j++) li[j] = -t[j] * inv;
        li[i] = inv;
    }
}

/* A = L·Lᵀ, L overwriting A's lower triangle. Returns 0, or k > 0 when the
 * leading k × k minor is not positive definite. */
static int cholesky_lower(float *A, int n, int ld)
{
    if (n <= LEAF) return cholesky_leaf(A, n, ld);
    const int n1 = n / 2, n2 = n - n1;
    float *A21 = A + (size_t)n1 * ld, *A22 = A21 + n1;
    int info = cholesky_lower(A, n1, ld);
    if (info) return info;
    llmq_strsm(CblasRight, CblasLower, CblasTrans, CblasNonUnit, n2, n1, 1.0f, A, ld, A21, ld);
    llmq_ssyrk(CblasLower, CblasNoTrans, n2, n1, -1.0f, A21, ld, 1.0f, A22, ld);
    info = cholesky_lower(A22, n2, ld);
    return info ? info + n1 : 0;
}

/* L ← L⁻¹ for the lower-triangular L (positive diagonal):
 * [A 0; C D]⁻¹ = [A⁻¹ 0; −D⁻¹·C·A⁻¹ D⁻¹]. */
static void invert_lower(float *L, int n, int ld, float *scratch)
{
    if (n <= LEAF) {
        invert_leaf(L, n, ld, scratch);
        return;
    }
    const int n1 = n / 2, n2 = n - n1;
    float *C = L + (size_t)n1 * ld, *D = C + n1;
    llmq_strsm(CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, n2, n1, 1.0f, L, ld, C, ld);
    llmq_strsm(CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, n2, n1, -1.0f, D, ld, C, ld);
    invert_lower(L, n1, ld, scratch);
    invert_lower(D, n2, ld, scratch);
}

typedef struct { float key; int index; } sort_item;

/* Descending diag H; ties keep the column order. */
static int by_key_desc(const void *a, const void *b)
{
    const sort_item *x = a, *y = b;
    if (x->key != y->key) return x->key > y->key ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

/* ------------------------------------------------------------------ the sweep */

typedef struct {
    llmq_type type;
    int rows, n, G, ng, B;
    bool dynamic_grids; /* fit each grid when the sweep reaches it (no act_order) */
    bool search;
    bool levels;        /* the type's grids are the IQ4 levels (llmq_grid.levels) */
    float *w;           /* rows × n working weights, columns in sweep order */
    int8_t *codes;      /* rows × n codes, sweep order */
    llmq_grid *grids;   /* rows × ng grids, indexed by the original group */
    const int *perm;    /* sweep position → original column */
    float *err;         /* rows × B scaled errors of the current block */
    float *ublk;        /* B × B: U restricted to the current block */
    /* GPTAQ (NULL for GPTQ): P restricted to the current block (B × B, as ublk)
     * and the rows × B values each column had just before it was rounded. */
    float *pblk;
    float *wpre;
    float *pre; /* opts.pre_round: rows × n, original column order; NULL when not wanted */
} sweep_ctx;

static inline const llmq_grid *grid_at(const sweep_ctx *s, int r, int i)
{
    return &s->grids[(size_t)r * s->ng + s->perm[i] / s->G];
}

/* Rows swept together: one AVX-512 vector of floats per column. */
enum { TILE = 16 };

/* Fits the grid of the group starting at column c of row r on its current
 * weights (no act_order, so sweep position = original column), which lie in
 * column x[0], x[stride], ... of the sweep's tile. A K-quant group keeps the
 * super-block d/dmin its grid already carries — fixed before the sweep from
 * the original row — and only its sub-block codes are refit. (Fixing d/dmin
 * from the then-current weights at the super-block's first column instead
 * measured worse on the test problems: Q3_K errors 5–8% higher, Q4_K mixed.) */
static void fit_dynamic(const sweep_ctx *s, int r, int c, const float *x, int stride, float *tmp)
{
    llmq_grid *g = &s->grids[(size_t)r * s->ng + c / s->G];
    const llmq_superblock sb = {g->d, g->m};
    const int len = s->n - c < s->G ? s->n - c : s->G;
    for (int t = 0; t < len; t++) tmp[t] = x[(size_t)t * stride];
    *g = llmq_grid_from_real(s->type, llmq_grid_fit(s->type, tmp, len, NULL, s->search), &sb);
}

/* One tile of R ≤ TILE rows starting at r0 over the block's columns [i1, i2),
 * transposed into wt (column j of the block is wt[j·TILE .. +TILE)) so each
 * step treats the tile's weights of one column as one vector: round each onto
 * its grid (llmq_grid_round's arithmetic, lane by lane), scale its error by
 * U[i][i], then spread the errors over the block's later columns (U's row).
 * Rows do not wait on their own previous column as a row-by-row sweep does.
 * The error of the whole block reaches the columns after it later, in one
 * GEMM. Returns Σ err² over the tile. */
static LLMQ_SIMD_CLONES double sweep_tile(const sweep_ctx *s, int r0, int R, int i1, int i2, float *restrict wt, float *restrict tmp)
{
    const int bw = i2 - i1, n = s->n;
    for (int j = 0; j < bw; j++)
        for (int k = 0; k < TILE; k++) wt[(size_t)j * TILE + k] = k < R ? s->w[(size_t)(r0 + k) * n + i1 + j] : 0.0f;
    float sc[TILE] = {0}, off[TILE] = {0}, zr[TILE] = {0}, lo[TILE] = {0}, hi[TILE] = {0};
    double acc[TILE] = {0};
    int group = -1;
    for (int i = i1; i < i2; i++) {
        float *restrict x = wt + (size_t)(i - i1) * TILE;
        const int gi = s->perm[i] / s->G;
        const bool refit = s->dynamic_grids && i % s->G == 0;
        if (refit)
            for (int k = 0; k < R; k++) fit_dynamic(s, r0 + k, i, x + k, TILE, tmp);
        if (refit || gi != group) {
            for (int k = 0; k < R; k++) {
                const llmq_grid *g = &s->grids[(size_t)(r0 + k) * s->ng + gi];
                sc[k] = g->scale;
                off[k] = g->offset;
                zr[k] = (float)g->zero;
                lo[k] = (float)g->qmin;
                hi[k] = (float)g->qmax;
            }
            group = gi;
        }
        const float *u = s->ublk + (size_t)(i - i1) * s->B - i1; /* u[j] = U[i][j] */
        const float uii = u[i];
        float e[TILE], q[TILE];
        if (s->levels) { /* IQ4: the nearest of the non-linear levels */
            for (int k = 0; k < TILE; k++) {
                const float v = x[k];
                const float qf = llmq_levels_round_lane(v, sc[k]);
                q[k] = qf;
                e[k] = (v - sc[k] * (float)llmq_iq4nl_levels[(int)qf]) / uii;
            }
        } else {
            #pragma omp simd
            for (int k = 0; k < TILE; k++) {
                const float v = x[k];
                const float qf = llmq_grid_round_lane(v, sc[k], off[k], zr[k], lo[k], hi[k]);
                q[k] = qf;
                e[k] = (v - (sc[k] * (qf - zr[k]) + off[k])) / uii;
            }
        }
        if (s->pre)
            for (int k = 0; k < R; k++) s->pre[(size_t)(r0 + k) * n + s->perm[i]] = x[k];
        for (int k = 0; k < R; k++) {
            s->codes[(size_t)(r0 + k) * n + i] = (int8_t)(int)q[k];
            s->err[(size_t)(r0 + k) * s->B + i - i1] = e[k];
            acc[k] += (double)e[k] * e[k];
        }
        if (s->pblk) {
            /* GPTAQ: the column's share of the full-precision output it no longer
             * reaches, w_i·P[i, j], goes to the later columns beside its error */
            const float *pr = s->pblk + (size_t)(i - i1) * s->B - i1;
            for (int k = 0; k < R; k++) s->wpre[(size_t)(r0 + k) * s->B + i - i1] = x[k];
            for (int j = i + 1; j < i2; j++) {
                float *restrict y = wt + (size_t)(j - i1) * TILE;
                const float uij = u[j], pij = pr[j];
                #pragma omp simd
                for (int k = 0; k < TILE; k++) y[k] -= e[k] * uij - x[k] * pij;
            }
            continue;
        }
        for (int j = i + 1; j < i2; j++) {
            float *restrict y = wt + (size_t)(j - i1) * TILE;
            const float uij = u[j];
            #pragma omp simd
            for (int k = 0; k < TILE; k++) y[k] -= e[k] * uij;
        }
    }
    double loss = 0;
    for (int k = 0; k < R; k++) loss += acc[k];
    return loss;
}

/* --------------------------------------------------------------- the solver */

/* The lazy-batch width: whole groups per block, so a group's grid is fitted
 * on weights that already carry every earlier column's error. */
static int effective_block(int G, int B)
{
    if (B <= 0) B = 128;
    B = (B + G - 1) / G * G;
    return B;
}

/* Error statistics before the sweep: tr(W₀ H_d W₀ᵀ) and tr(Δ H_d Δᵀ) for
 * plain RTN, as ‖S·Fᵀ‖² with S the rows in reversed sweep order (the
 * factored matrix is J·H_p·J = FᵀF, F's transpose in our lower triangle),
 * over every stride-th row (stride 1 up to LLMQ_GPTQ_STATS_ROWS rows).
 * sampled_rows says how many rows the sums cover. */
typedef struct { double whw, w2, rtn_hd, rtn2; int sampled_rows; } pre_stats;

static int rtn_stats(const float *W, int rows, int n, const float *fac, llmq_type t, int G, bool search,
                     const int *pr, const unsigned char *dead, pre_stats *out)
{
    enum { CHUNK = 512 }; /* 2·CHUNK rows: four row tiles of llmq_strmm to share among threads */
    const int ng = llmq_group_count(n, G);
    const int stride = llmq_gptq_stats_stride(rows);
    const int sampled = (rows + stride - 1) / stride;
    float *S = malloc(sizeof *S * (size_t)2 * CHUNK * n);
    if (!S) return LLMQ_ERR;
    memset(out, 0, sizeof *out);
    out->sampled_rows = sampled;
    int failed = 0;
    for (int r0 = 0; r0 < sampled && !failed; r0 += CHUNK) {
        const int m = sampled - r0 < CHUNK ? sampled - r0 : CHUNK;
        double w2 = 0, d2 = 0;
        #pragma omp parallel reduction(+ : w2, d2) if (worth_threads((size_t)m * n * 8))
        {
            llmq_grid *grids = malloc(sizeof *grids * (size_t)ng);
            float *delta = malloc(sizeof *delta * (size_t)n);
            llmq_rtn_opts ro = {.search = search, .importance = NULL};
            #pragma omp for schedule(static)
            for (int k = 0; k < m; k++) {
                const float *x = W + (size_t)(r0 + k) * stride * n;
                if (!grids || !delta || llmq_rtn_grids(t, x, n, G, grids, &ro) != LLMQ_OK) {
                    #pragma omp atomic write
                    failed = 1;
                    continue;
                }
                for (int c = 0; c < n; c++) {
                    const llmq_grid *g = &grids[c / G];
                    delta[c] = dead[c] ? 0.0f : x[c] - llmq_grid_value(g, llmq_grid_round(g, x[c]));
                }
                float *sw = S + (size_t)k * n, *sd = S + (size_t)(m + k) * n;
                for (int i = 0; i < n; i++) {
                    const int c = pr[i];
                    sw[i] = dead[c] ? 0.0f : x[c];
                    sd[i] = delta[c];
                    w2 += (double)sw[i] * sw[i];
                    d2 += (double)sd[i] * sd[i];
                }
            }
            free(grids);
            free(delta);
        }
        if (failed) break;
        llmq_strmm(CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, 2 * m, n, 1.0f, fac, n, S, n);
        double a = 0, b = 0;
        #pragma omp parallel for reduction(+ : a, b) schedule(static) if (worth_threads((size_t)m * n * 2))
        for (int k = 0; k < 2 * m; k++) {
            const float *v = S + (size_t)k * n;
            double acc = 0;
            for (int i = 0; i < n; i++) acc += (double)v[i] * v[i];
            if (k < m) a += acc;
            else b += acc;
        }
        out->whw += a;
        out->rtn_hd += b;
        out->w2 += w2;
        out->rtn2 += d2;
    }
    free(S);
    return failed ? LLMQ_ERR : LLMQ_OK;
}

double llmq_gptq_ratio(double num, double den)
{
    if (num < 0) num = 0;
    if (den <= 0) return num > 0 ? INFINITY : 0.0;
    return num / den;
}

/* GPTAQ's correction matrix (arXiv 2504.02692, §3.2; fake_quant/gptaq_utils.py):
 * P = α·triu₁(D_p·Uᵀ)·U in sweep order, D_p = D[perm][:, perm] with the dead
 * columns zeroed. Row i of P carries column i's input mismatch ΔX_i to the
 * columns after it: D[i, R]·H_R⁻¹ for R the later columns, since the
 * trailing block of H_p⁻¹'s factor gives H_R⁻¹ = U_RRᵀU_RR. P is strictly
 * upper triangular. Written into P (n × n). */
static void gptaq_correction(const float *D, int n, const int *perm, const unsigned char *dead, const float *U, float alpha, float *P)
{
    #pragma omp parallel for schedule(static) if (worth_threads((size_t)n * n))
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) P[(size_t)i * n + j] = dead[perm[j]] ? 0.0f : D[(size_t)perm[i] * n + perm[j]];
    llmq_strmm(CblasRight, CblasUpper, CblasTrans, CblasNonUnit, n, n, 1.0f, U, n, P, n);
    #pragma omp parallel for schedule(static) if (worth_threads((size_t)n * n))
    for (int i = 0; i < n; i++) memset(P + (size_t)i * n, 0, sizeof(float) * (size_t)(i + 1));
    llmq_strmm(CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, n, n, alpha, U, n, P, n);
}

static int solve(const float *W, int rows, int cols, float *H, const float *D, float alpha, llmq_type type, int group_size,
                 const llmq_gptq_opts *opts, void *packed, float *Wq, llmq_gptq_stats *stats)
{
    const llmq_gptq_opts o = opts ? *opts : llmq_gptq_default_opts();
    const llmq_type_traits *tr = llmq_type_get(type);
    const char *tname = tr ? tr->name : "?";
    if (!W || !H) return llmq_error("gptq: NULL weights or Hessian");
    if (rows <= 0 || cols <= 0) return llmq_error("gptq %s: bad shape %d × %d", tname, rows, cols);
    const int G = llmq_group_resolve(type, group_size);
    if (llmq_group_check(type, cols, G) != LLMQ_OK) return llmq_error_prefix("gptq");
    if (!(o.damp > 0) || !isfinite(o.damp) || o.max_damp_retries < 0)
        return llmq_error("gptq %s: damp must be a positive fraction (got %g) and retries ≥ 0 (got %d)", tname, (double)o.damp,
                          o.max_damp_retries);
    const int n = cols;
    for (size_t k = 0; k < (size_t)rows * n; k++)
        if (!isfinite(W[k]))
            return llmq_error("gptq %s: weight [%zu][%zu] is %s", tname, k / (size_t)n, k % (size_t)n, isnan(W[k]) ? "NaN" : "infinite");
    for (int i = 0; i < n; i++)
        for (int j = i; j < n; j++)
            if (!isfinite(H[(size_t)i * n + j]))
                return llmq_error("gptq %s: Hessian element [%d][%d] is %s", tname, i, j, isnan(H[(size_t)i * n + j]) ? "NaN" : "infinite");

    const double t_start = omp_get_wtime();
    double t_factored = 0, t_inverted = 0;
    const int ng = llmq_group_count(n, G);
    const int B = effective_block(G, o.block_size);
    int rc = LLMQ_ERR;
    sweep_ctx s = {.type = type, .rows = rows, .n = n, .G = G, .ng = ng, .B = B, .dynamic_grids = !o.act_order,
                   .search = o.grid_search, .levels = type == LLMQ_TYPE_IQ4_NL || type == LLMQ_TYPE_IQ4_XS};
    int *perm = malloc(sizeof *perm * (size_t)n), *pr = malloc(sizeof *pr * (size_t)n);
    unsigned char *dead = calloc((size_t)n, 1);
    float *diag = malloc(sizeof *diag * (size_t)n);
    s.w = malloc(sizeof *s.w * (size_t)rows * n);
    s.codes = malloc((size_t)rows * n);
    s.grids = malloc(sizeof *s.grids * (size_t)rows * ng);
    s.err = malloc(sizeof *s.err * (size_t)rows * B);
    s.ublk = malloc(sizeof *s.ublk * (size_t)(B * B > LEAF ? B * B : LEAF)); /* also invert_lower's scratch */
    s.perm = perm;
    s.pre = o.pre_round;
    float *P = NULL;
    if (D) {
        P = malloc(sizeof *P * (size_t)n * n);
        s.pblk = malloc(sizeof *s.pblk * (size_t)B * B);
        s.wpre = malloc(sizeof *s.wpre * (size_t)rows * B);
    }
    if (!perm || !pr || !dead || !diag || !s.w || !s.codes || !s.grids || !s.err || !s.ublk || (D && (!P || !s.pblk || !s.wpre))) {
        llmq_error("gptq %s: out of memory for a %d × %d layer", tname, rows, n);
        goto done;
    }

    /* Dead inputs (never active): H_ii = 1 and W[:, i] = 0, as the reference does. */
    int n_dead = 0;
    for (int i = 0; i < n; i++) {
        diag[i] = H[(size_t)i * n + i];
        if (diag[i] == 0.0f) {
            dead[i] = 1;
            diag[i] = 1.0f;
            H[(size_t)i * n + i] = 1.0f;
            n_dead++;
        }
    }
    for (int i = 0; i < n; i++) perm[i] = i;
    if (o.act_order) {
        sort_item *items = malloc(sizeof *items * (size_t)n);
        if (!items) {
            llmq_error("gptq %s: out of memory", tname);
            goto done;
        }
        for (int i = 0; i < n; i++) items[i] = (sort_item){diag[i], i};
        qsort(items, (size_t)n, sizeof *items, by_key_desc);
        for (int i = 0; i < n; i++) perm[i] = items[i].index;
        free(items);
    }
    for (int i = 0; i < n; i++) pr[i] = perm[n - 1 - i];

    /* Working weights in sweep order. Grids from the original rows: all of
     * them with act_order (static groups), the super-block d/dmin of
     * K-quants otherwise. */
    #pragma omp parallel for schedule(static) if (worth_threads((size_t)rows * n))
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < n; i++) s.w[(size_t)r * n + i] = dead[perm[i]] ? 0.0f : W[(size_t)r * n + perm[i]];
    if (o.act_order || llmq_type_is_k(type)) {
        int failed = 0;
        #pragma omp parallel if (worth_threads((size_t)rows * n * 8))
        {
            float *row = malloc(sizeof *row * (size_t)n);
            llmq_rtn_opts ro = {.search = o.grid_search, .importance = NULL};
            #pragma omp for schedule(static)
            for (int r = 0; r < rows; r++) {
                for (int c = 0; row && c < n; c++) row[c] = dead[c] ? 0.0f : W[(size_t)r * n + c];
                if (!row || llmq_rtn_grids(type, row, n, G, s.grids + (size_t)r * ng, &ro) != LLMQ_OK) {
                    #pragma omp atomic write
                    failed = 1;
                }
            }
            free(row);
        }
        if (failed) {
            llmq_error("gptq %s: out of memory for the grids of a %d × %d layer", tname, rows, n);
            goto done;
        }
    }

    /* J·H_p·J, both triangles. */
    mirror_upper(H, n);
    if (permute_symmetric(H, n, pr) != LLMQ_OK) {
        llmq_error("gptq %s: out of memory permuting the Hessian", tname);
        goto done;
    }
    double mean_diag = 0;
    for (int i = 0; i < n; i++) mean_diag += diag[i];
    mean_diag /= n;
    float *hd = diag; /* diag of the permuted matrix, undamped */
    for (int i = 0; i < n; i++) hd[i] = H[(size_t)i * n + i];

    float damp = o.damp, lambda = 0;
    int retries = 0;
    for (;;) {
        lambda = (float)(damp * mean_diag);
        for (int i = 0; i < n; i++) H[(size_t)i * n + i] = hd[i] + lambda;
        if (cholesky_lower(H, n, n) == 0) break;
        if (retries >= o.max_damp_retries) {
            llmq_error("gptq %s: the %d × %d Hessian is not positive definite even with damp %g (× mean diag %g = %g) after %d "
                       "retries; the calibration activations are degenerate",
                       tname, n, n, (double)damp, mean_diag, (double)lambda, retries);
            goto done;
        }
        retries++;
        damp *= 10.0f;
        mirror_upper(H, n); /* the factorisation wrote the lower triangle only */
    }

    t_factored = omp_get_wtime();
    pre_stats pre = {0, 0, 0, 0, 1};
    if (stats && rtn_stats(W, rows, n, H, type, G, o.grid_search, pr, dead, &pre) != LLMQ_OK) {
        llmq_error("gptq %s: out of memory for the error statistics", tname);
        goto done;
    }
    const double t_stats = omp_get_wtime() - t_factored;
    invert_lower(H, n, n, s.ublk);
    reverse_all(H, n); /* the row-major upper triangle is now U, H_p⁻¹ = UᵀU */
    if (D) gptaq_correction(D, n, perm, dead, H, alpha, P);

    t_inverted = omp_get_wtime();
    double loss = 0;
    for (int i1 = 0; i1 < n; i1 += B) {
        const int i2 = i1 + B < n ? i1 + B : n, bw = i2 - i1;
        for (int a = 0; a < bw; a++) memcpy(s.ublk + (size_t)a * B + a, H + (size_t)(i1 + a) * n + i1 + a, sizeof(float) * (size_t)(bw - a));
        for (int a = 0; P && a < bw; a++)
            memcpy(s.pblk + (size_t)a * B + a, P + (size_t)(i1 + a) * n + i1 + a, sizeof(float) * (size_t)(bw - a));
        double block_loss = 0;
        int failed_tile = 0;
        #pragma omp parallel reduction(+ : block_loss) if (worth_threads((size_t)rows * bw * bw))
        {
            float *wt = malloc(sizeof *wt * ((size_t)B * TILE + (size_t)G));
            #pragma omp for schedule(static)
            for (int r0 = 0; r0 < rows; r0 += TILE) {
                if (!wt) {
                    #pragma omp atomic write
                    failed_tile = 1;
                    continue;
                }
                block_loss += sweep_tile(&s, r0, rows - r0 < TILE ? rows - r0 : TILE, i1, i2, wt, wt + (size_t)B * TILE);
            }
            free(wt);
        }
        if (failed_tile) {
            llmq_error("gptq %s: out of memory for the sweep", tname);
            goto done;
        }
        loss += block_loss;
        if (i2 < n)
            llmq_sgemm(CblasNoTrans, CblasNoTrans, rows, n - i2, bw, -1.0f, s.err, B, H + (size_t)i1 * n + i2, n, 1.0f,
                        s.w + i2, n);
        /* GPTAQ's lazy batch: the block's columns as they were rounded (the
         * same values the in-block steps used, so any block width gives the
         * same result; the reference code multiplies by the rounded values) */
        if (P && i2 < n)
            llmq_sgemm(CblasNoTrans, CblasNoTrans, rows, n - i2, bw, 1.0f, s.wpre, B, P + (size_t)i1 * n + i2, n, 1.0f,
                        s.w + i2, n);
    }

    /* Back to the original column order: blocks, values, error. */
    const size_t row_bytes = llmq_row_size(type, n);
    double delta2 = 0, dead2 = 0;
    int failed = 0;
    char message[256] = "";
    #pragma omp parallel reduction(+ : delta2, dead2) if (worth_threads((size_t)rows * n * 4))
    {
        int8_t *q = malloc((size_t)n);
        if (!q) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(static)
        for (int r = 0; r < rows; r++) {
            if (!q) continue;
            const int8_t *cr = s.codes + (size_t)r * n;
            for (int i = 0; i < n; i++) {
                const int c = perm[i];
                const float v = llmq_grid_value(grid_at(&s, r, i), cr[i]);
                q[c] = cr[i];
                if (Wq) Wq[(size_t)r * n + c] = v;
                const double d = (dead[c] ? 0.0 : (double)W[(size_t)r * n + c]) - v;
                delta2 += d * d;
                if (dead[c]) dead2 += d * d;
            }
            if (packed && llmq_pack_codes(type, q, n, G, s.grids + (size_t)r * ng, (char *)packed + (size_t)r * row_bytes) != LLMQ_OK) {
                #pragma omp critical(llmq_gptq_error)
                {
                    if (!failed) snprintf(message, sizeof message, "%s", llmq_last_error());
                    failed = 1;
                }
            }
        }
        free(q);
    }
    if (failed) {
        llmq_error("gptq %s: %s", tname, message[0] ? message : "out of memory");
        goto done;
    }
    if (stats) {
        /* Σ err² over the sweep is exactly tr(Δ H_d Δᵀ) (each step's OBS loss,
         * §3–4); H_d adds lambda·‖Δ‖² and the dead columns' unit diagonal. */
        const double den = pre.whw - lambda * pre.w2;
        stats->err_rtn = llmq_gptq_ratio(pre.rtn_hd - lambda * pre.rtn2, den);
        stats->err_gptq = llmq_gptq_ratio(loss - lambda * delta2 - dead2, den * rows / pre.sampled_rows);
        stats->trace_w = den * rows / pre.sampled_rows;
        stats->trace_rtn = (pre.rtn_hd - lambda * pre.rtn2) * rows / pre.sampled_rows;
        stats->trace_gptq = loss - lambda * delta2 - dead2;
        stats->damp_used = damp;
        stats->retries = retries;
        stats->dead_columns = n_dead;
        stats->seconds_factor = t_inverted - t_start - t_stats;
        stats->seconds_stats = t_stats;
        stats->seconds_sweep = omp_get_wtime() - t_inverted;
    }
    rc = LLMQ_OK;
done:
    free(perm);
    free(pr);
    free(dead);
    free(diag);
    free(s.w);
    free(s.codes);
    free(s.grids);
    free(s.err);
    free(s.ublk);
    free(s.pblk);
    free(s.wpre);
    free(P);
    return rc;
}

int llmq_gptq_quantize(const float *W, int rows, int cols, float *H, llmq_type type, int group_size,
                       const llmq_gptq_opts *opts, void *packed, float *Wq, llmq_gptq_stats *stats)
{
    return solve(W, rows, cols, H, NULL, 0.0f, type, group_size, opts, packed, Wq, stats);
}

int llmq_gptaq_quantize(const float *W, int rows, int cols, float *H, const float *D, float alpha, llmq_type type, int group_size,
                        const llmq_gptq_opts *opts, void *packed, float *Wq, llmq_gptq_stats *stats)
{
    if (!D) return llmq_error("gptaq: NULL cross term");
    if (!isfinite(alpha) || alpha < 0) return llmq_error("gptaq: alpha must be a finite number ≥ 0, not %g", (double)alpha);
    for (size_t k = 0; k < (size_t)cols * cols; k++)
        if (!isfinite(D[k]))
            return llmq_error("gptaq: cross term [%zu][%zu] is %s", k / (size_t)cols, k % (size_t)cols, isnan(D[k]) ? "NaN" : "infinite");
    return solve(W, rows, cols, H, D, alpha, type, group_size, opts, packed, Wq, stats);
}

int llmq_cross_add(float *D, int cols, int64_t n_seen, const float *X, const float *X_fp, float *scratch, int n_tokens)
{
    if (!D || (!X && n_tokens > 0) || (!X_fp && n_tokens > 0) || (!scratch && n_tokens > 0)) return llmq_error("cross term: NULL argument");
    if (cols <= 0 || n_tokens < 0 || n_seen < 0)
        return llmq_error("cross term: bad shape (cols %d, tokens %d, seen %lld)", cols, n_tokens, (long long)n_seen);
    if (n_tokens == 0) return LLMQ_OK;
    const size_t m = (size_t)n_tokens * cols;
    #pragma omp parallel for simd schedule(static) if (worth_threads(m))
    for (size_t e = 0; e < m; e++) scratch[e] = X_fp[e] - X[e];
    const double total = (double)n_seen + n_tokens;
    llmq_sgemm(CblasTrans, CblasNoTrans, cols, cols, n_tokens, (float)(2.0 / total), scratch, cols, X, cols,
                (float)((double)n_seen / total), D, cols);
    return LLMQ_OK;
}

int llmq_gptaq_target(const float *W, int rows, int cols, const float *H, const float *D, float alpha, float damp, float *W_target)
{
    if (!W || !H || !D || !W_target) return llmq_error("gptaq target: NULL argument");
    if (rows <= 0 || cols <= 0) return llmq_error("gptaq target: bad shape %d × %d", rows, cols);
    if (!isfinite(alpha) || alpha < 0 || !(damp > 0)) return llmq_error("gptaq target: alpha %g, damp %g", (double)alpha, (double)damp);
    const int n = cols;
    float *F = malloc(sizeof *F * (size_t)n * n);
    if (!F) return llmq_error("gptaq target: out of memory for a %d × %d Hessian", n, n);
    double mean_diag = 0;
    for (int i = 0; i < n; i++) mean_diag += H[(size_t)i * n + i] > 0 ? H[(size_t)i * n + i] : 1.0f;
    mean_diag /= n;
    /* the solver's own Cholesky (deterministic for any thread count, unlike spotrf) */
    int rc = LLMQ_ERR;
    for (int retry = 0; retry <= 3; retry++, damp *= 10.0f) {
        const float lambda = (float)(damp * mean_diag);
        #pragma omp parallel for schedule(static) if (worth_threads((size_t)n * n))
        for (int i = 0; i < n; i++) {
            float *f = F + (size_t)i * n;
            memcpy(f + i, H + (size_t)i * n + i, sizeof(float) * (size_t)(n - i));
            if (f[i] == 0.0f) f[i] = 1.0f; /* a dead input, as the solver treats it */
            f[i] += lambda;
        }
        mirror_upper(F, n);
        if (cholesky_lower(F, n, n) == 0) {
            rc = LLMQ_OK;
            break;
        }
    }
    if (rc != LLMQ_OK) {
        free(F);
        return llmq_error("gptaq target: the %d × %d Hessian is not positive definite even with damp %g", n, n, (double)damp);
    }
    /* W_target = W + α·W·D·(H + λI)⁻¹, with H + λI = L·Lᵀ */
    llmq_sgemm(CblasNoTrans, CblasNoTrans, rows, n, n, 1.0f, W, n, D, n, 0.0f, W_target, n);
    llmq_strsm(CblasRight, CblasLower, CblasTrans, CblasNonUnit, rows, n, 1.0f, F, n, W_target, n);
    llmq_strsm(CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, rows, n, 1.0f, F, n, W_target, n);
    free(F);
    const size_t m = (size_t)rows * n;
    #pragma omp parallel for simd schedule(static) if (worth_threads(m))
    for (size_t e = 0; e < m; e++) W_target[e] = W[e] + alpha * W_target[e];
    for (size_t e = 0; e < m; e++)
        if (!isfinite(W_target[e])) return llmq_error("gptaq target: weight [%zu][%zu] came out %g", e / n, e % n, (double)W_target[e]);
    return LLMQ_OK;
}
