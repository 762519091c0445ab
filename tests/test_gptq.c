/* GPTQ: on fixed (W, X) with strongly correlated inputs the solver beats RTN
 * for every block type and group size and matches a plain dense GPTQ written
 * here from the paper's OBS equations (no Cholesky, no lazy batches, double
 * precision); values lie on the declared grids; act-order keeps groups
 * contiguous with static grids; the error statistics match ‖(W−Q)X‖²/‖WX‖²
 * computed from X; dead columns, damp retries and NaN input are handled. */
#include "llmq/blocks.h"
#include "llmq/error.h"
#include "llmq/gptq.h"
#include "llmq/kernels.h"
#include "llmq/rtn.h"
#include "test_util.h"

#include <math.h>
#include <stdint.h>

static const llmq_type all_types[] = {LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_1, LLMQ_TYPE_Q4_K, LLMQ_TYPE_Q3_K, LLMQ_TYPE_Q6_K,
                                      LLMQ_TYPE_Q8_0, LLMQ_TYPE_Q5_0, LLMQ_TYPE_Q5_1, LLMQ_TYPE_Q5_K, LLMQ_TYPE_Q2_K,
                                      LLMQ_TYPE_IQ4_NL, LLMQ_TYPE_IQ4_XS};
#define N_TYPES (int)(sizeof all_types / sizeof all_types[0])
/* p->hinv caches the dense inverse: H must not change after the first
 * dense_gptq() call on a problem. */
static const int group_sizes[] = {32, 64, 128};

enum { ROWS = 32, COLS = 512, TOKENS = 1024 };

/* Criterion runs two test processes at once (--jobs 2) on a 2-core machine:
 * threaded BLAS in both would only spin against each other. One test below
 * turns threads back on. */
static void one_thread(void) { llmq_set_threads(1); }
TestSuite(gptq, .init = one_thread);

/* ------------------------------------------------------------ fixed problem */

static uint64_t rng_state;
static double uniform01(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return ((double)(rng_state >> 11) + 0.5) / 9007199254740992.0;
}
static double gauss(void) { return sqrt(-2.0 * log(uniform01())) * cos(6.283185307179586 * uniform01()); }

typedef struct {
    int rows, cols, tokens;
    float *W, *X, *H; /* H: 2/N XᵀX, upper triangle (from llmq_hessian_add) */
    double *gram;     /* XᵀX in double, for measuring ‖(W−Q)X‖² */
    double *hinv;     /* the damped Hessian's inverse, for the dense reference */
} problem;

/* XᵀX in double from the activations (after any edits to X). */
static void measure_gram(problem *p)
{
    const int n = p->cols;
    free(p->gram);
    p->gram = calloc((size_t)n * n, sizeof *p->gram);
    for (int t = 0; t < p->tokens; t++) {
        const float *x = p->X + (size_t)t * n;
        for (int i = 0; i < n; i++) {
            if (x[i] == 0) continue;
            double *g = p->gram + (size_t)i * n;
            for (int j = i; j < n; j++) g[j] += (double)x[i] * x[j];
        }
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++) p->gram[(size_t)i * n + j] = p->gram[(size_t)j * n + i];
}

/* X = Z·A·diag(s): A mixes every input with every other (H far from
 * diagonal), s spreads channel magnitudes over ~e^±2 like real activations. */
static problem make_problem(int rows, int cols, int tokens, uint64_t seed)
{
    problem p = {rows, cols, tokens, NULL, NULL, NULL, NULL, NULL};
    rng_state = seed;
    p.W = malloc(sizeof(float) * (size_t)rows * cols);
    p.X = calloc((size_t)tokens * cols, sizeof(float));
    p.H = malloc(sizeof(float) * (size_t)cols * cols);
    float *A = malloc(sizeof(float) * (size_t)cols * cols), *Z = malloc(sizeof(float) * (size_t)tokens * cols);
    float *s = malloc(sizeof(float) * (size_t)cols);
    cr_assert(p.W && p.X && p.H && A && Z && s);
    for (size_t k = 0; k < (size_t)rows * cols; k++) p.W[k] = (float)(0.02 * gauss());
    for (int i = 0; i < cols; i++)
        for (int j = 0; j < cols; j++) A[(size_t)i * cols + j] = (float)((i == j ? 0.3 : 0.0) + gauss() / sqrt((double)cols));
    for (size_t k = 0; k < (size_t)tokens * cols; k++) Z[k] = (float)gauss();
    for (int j = 0; j < cols; j++) s[j] = (float)exp(0.7 * gauss());
    for (int t = 0; t < tokens; t++)
        for (int k = 0; k < cols; k++) {
            const float z = Z[(size_t)t * cols + k];
            for (int j = 0; j < cols; j++) p.X[(size_t)t * cols + j] += z * A[(size_t)k * cols + j];
        }
    for (int t = 0; t < tokens; t++)
        for (int j = 0; j < cols; j++) p.X[(size_t)t * cols + j] *= s[j];
    /* Two batches: exercises the running mean. */
    int64_t seen = 0;
    cr_assert_eq(llmq_hessian_add(p.H, cols, &seen, p.X, tokens / 3), LLMQ_OK);
    cr_assert_eq(llmq_hessian_add(p.H, cols, &seen, p.X + (size_t)(tokens / 3) * cols, tokens - tokens / 3), LLMQ_OK);
    cr_assert_eq(seen, tokens);
    measure_gram(&p);
    free(A);
    free(Z);
    free(s);
    return p;
}

static void free_problem(problem *p)
{
    free(p->W);
    free(p->X);
    free(p->H);
    free(p->gram);
    free(p->hinv);
}

static float *copy_floats(const float *x, size_t n)
{
    float *y = malloc(sizeof *y * n);
    cr_assert_not_null(y);
    memcpy(y, x, sizeof *y * n);
    return y;
}

/* ‖(W−Q)Xᵀ‖² = Σ_rows d·XᵀX·dᵀ, in double. */
static double output_error(const problem *p, const float *W, const float *Q)
{
    const int n = p->cols;
    double *d = malloc(sizeof *d * (size_t)n), e = 0;
    for (int r = 0; r < p->rows; r++) {
        for (int c = 0; c < n; c++) d[c] = (double)W[(size_t)r * n + c] - (Q ? Q[(size_t)r * n + c] : 0.0f);
        for (int i = 0; i < n; i++) {
            const double *g = p->gram + (size_t)i * n;
            double y = 0;
            for (int j = 0; j < n; j++) y += g[j] * d[j];
            e += d[i] * y;
        }
    }
    free(d);
    return e;
}

/* RTN of W (llmq_rtn_grids + llmq_pack_row), dequantized. `search` as in llmq_rtn_opts. */
static float *rtn_dequant(const problem *p, llmq_type t, int G, bool search)
{
    const llmq_type_traits *tr = llmq_type_get(t);
    const size_t rb = llmq_row_size(t, p->cols);
    llmq_grid grids[COLS];
    unsigned char *blk = malloc(rb);
    float *Q = malloc(sizeof *Q * (size_t)p->rows * p->cols);
    const llmq_rtn_opts ro = {.search = search, .importance = NULL};
    for (int r = 0; r < p->rows; r++) {
        cr_assert_eq(llmq_rtn_grids(t, p->W + (size_t)r * p->cols, p->cols, G, grids, &ro), LLMQ_OK);
        cr_assert_eq(llmq_pack_row(t, p->W + (size_t)r * p->cols, p->cols, G, grids, blk), LLMQ_OK);
        tr->to_float(blk, Q + (size_t)r * p->cols, p->cols);
    }
    free(blk);
    return Q;
}

/* ------------------------------------------------- dense reference GPTQ */

/* The inverse of the damped Hessian by Gauss-Jordan with partial pivoting. */
static double *dense_inverse(const double *H, int n)
{
    double *a = malloc(sizeof *a * (size_t)n * n), *inv = calloc((size_t)n * n, sizeof *inv);
    memcpy(a, H, sizeof *a * (size_t)n * n);
    for (int i = 0; i < n; i++) inv[(size_t)i * n + i] = 1;
    for (int c = 0; c < n; c++) {
        int piv = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(a[(size_t)r * n + c]) > fabs(a[(size_t)piv * n + c])) piv = r;
        for (int k = 0; k < n && piv != c; k++) {
            double t = a[(size_t)c * n + k]; a[(size_t)c * n + k] = a[(size_t)piv * n + k]; a[(size_t)piv * n + k] = t;
            t = inv[(size_t)c * n + k]; inv[(size_t)c * n + k] = inv[(size_t)piv * n + k]; inv[(size_t)piv * n + k] = t;
        }
        const double d = a[(size_t)c * n + c];
        for (int k = 0; k < n; k++) { a[(size_t)c * n + k] /= d; inv[(size_t)c * n + k] /= d; }
        for (int r = 0; r < n; r++) {
            const double f = a[(size_t)r * n + c];
            if (r == c || f == 0) continue;
            for (int k = 0; k < n; k++) { a[(size_t)r * n + k] -= f * a[(size_t)c * n + k]; inv[(size_t)r * n + k] -= f * inv[(size_t)c * n + k]; }
        }
    }
    free(a);
    return inv;
}

/* GPTQ as the paper's OBS steps (§3, eqs. 2–3), column by column on the
 * whole matrix: quantize column i, move the remaining weights by
 * −err·H⁻¹[i, j]/H⁻¹[i, i], remove i from H⁻¹ by one Gaussian elimination
 * step. Grids: without act_order fitted when a group starts, on the current
 * weights (K-quants: under the super-block d/dmin chosen from the original
 * row); with act_order static, from the original rows. Dead columns and
 * damping as the reference does. */
static float *dense_gptq(problem *p, llmq_type t, int G, bool act_order, bool search)
{
    const int n = p->cols, rows = p->rows, ng = llmq_group_count(n, G);
    double *Hd = malloc(sizeof *Hd * (size_t)n * n);
    for (int i = 0; i < n; i++)
        for (int j = i; j < n; j++) Hd[(size_t)i * n + j] = Hd[(size_t)j * n + i] = p->H[(size_t)i * n + j];
    bool dead[COLS];
    double mean = 0;
    for (int i = 0; i < n; i++) {
        dead[i] = Hd[(size_t)i * n + i] == 0;
        if (dead[i]) Hd[(size_t)i * n + i] = 1;
        mean += Hd[(size_t)i * n + i] / n;
    }
    for (int i = 0; i < n; i++) Hd[(size_t)i * n + i] += (double)(float)(0.01 * mean);
    int perm[COLS];
    for (int i = 0; i < n; i++) perm[i] = i;
    if (act_order) /* insertion sort, descending diag, stable */
        for (int i = 1; i < n; i++)
            for (int k = i; k > 0 && Hd[(size_t)perm[k] * n + perm[k]] > Hd[(size_t)perm[k - 1] * n + perm[k - 1]]; k--) {
                int tmp = perm[k]; perm[k] = perm[k - 1]; perm[k - 1] = tmp;
            }
    /* The inverse of the permuted matrix is the permuted inverse. */
    if (!p->hinv) p->hinv = dense_inverse(Hd, n);
    double *Hinv = malloc(sizeof *Hinv * (size_t)n * n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) Hinv[(size_t)i * n + j] = p->hinv[(size_t)perm[i] * n + perm[j]];

    double *w = malloc(sizeof *w * (size_t)rows * n);
    float *orig_rows = malloc(sizeof *orig_rows * (size_t)rows * n), *buf = malloc(sizeof *buf * LLMQ_QK_K);
    llmq_grid *grids = malloc(sizeof *grids * (size_t)rows * ng);
    llmq_superblock *sb = calloc((size_t)rows, sizeof *sb);
    for (int r = 0; r < rows; r++) {
        float *orig = orig_rows + (size_t)r * n;
        for (int c = 0; c < n; c++) orig[c] = dead[c] ? 0.0f : p->W[(size_t)r * n + c];
        for (int i = 0; i < n; i++) w[(size_t)r * n + i] = orig[perm[i]];
        const llmq_rtn_opts ro = {.search = search, .importance = NULL};
        if (act_order) cr_assert_eq(llmq_rtn_grids(t, orig, n, G, grids + (size_t)r * ng, &ro), LLMQ_OK);
    }
    float *Q = malloc(sizeof *Q * (size_t)rows * n);
    for (int i = 0; i < n; i++) {
        const double hii = Hinv[(size_t)i * n + i];
        for (int r = 0; r < rows; r++) {
            double *wr = w + (size_t)r * n;
            if (!act_order && i % G == 0) {
                if (llmq_type_is_k(t) && i % LLMQ_QK_K == 0) { /* d/dmin from the original row */
                    llmq_real_grid real[16];
                    for (int g = 0; g < LLMQ_QK_K / G; g++) real[g] = llmq_grid_fit(t, orig_rows + (size_t)r * n + i + g * G, G, NULL, search);
                    sb[r] = llmq_superblock_choose(t, real, LLMQ_QK_K / G);
                }
                const int len = n - i < G ? n - i : G;
                for (int k = 0; k < len; k++) buf[k] = (float)wr[i + k];
                grids[(size_t)r * ng + i / G] = llmq_grid_from_real(t, llmq_grid_fit(t, buf, len, NULL, search), &sb[r]);
            }
            const llmq_grid *g = &grids[(size_t)r * ng + perm[i] / G];
            const float v = llmq_grid_value(g, llmq_grid_round(g, (float)wr[i]));
            Q[(size_t)r * n + perm[i]] = v;
            const double e = (wr[i] - v) / hii;
            for (int j = i + 1; j < n; j++) wr[j] -= e * Hinv[(size_t)i * n + j];
        }
        for (int j = i + 1; j < n; j++) {
            const double f = Hinv[(size_t)j * n + i] / hii;
            for (int k = i + 1; k < n; k++) Hinv[(size_t)j * n + k] -= f * Hinv[(size_t)i * n + k];
        }
    }
    free(Hd); free(Hinv); free(w); free(orig_rows); free(buf); free(grids); free(sb);
    return Q;
}

/* ------------------------------------------------------------------ checks */

/* Runs the solver on a copy of H; returns the dequantized result and fills
 * the packed rows (caller frees). */
static float *run_gptq(const problem *p, llmq_type t, int G, const llmq_gptq_opts *o, unsigned char **packed, llmq_gptq_stats *st)
{
    float *H = copy_floats(p->H, (size_t)p->cols * p->cols);
    float *Wq = malloc(sizeof *Wq * (size_t)p->rows * p->cols);
    *packed = malloc(llmq_row_size(t, p->cols) * (size_t)p->rows);
    int rc = llmq_gptq_quantize(p->W, p->rows, p->cols, H, t, G, o, *packed, Wq, st);
    cr_assert_eq(rc, LLMQ_OK, "%s g%d: %s", llmq_type_get(t)->name, G, llmq_last_error());
    free(H);
    return Wq;
}

/* The stored scale fields of the native blocks / sub-blocks covering columns
 * [c, c+unit) of one packed row, as one comparable integer. */
static int64_t stored_fields(llmq_type t, const unsigned char *row, int c)
{
    switch (t) {
    case LLMQ_TYPE_Q4_0: return ((const llmq_block_q4_0 *)row)[c / 32].d;
    case LLMQ_TYPE_Q5_0: return ((const llmq_block_q5_0 *)row)[c / 32].d;
    case LLMQ_TYPE_Q8_0: return ((const llmq_block_q8_0 *)row)[c / 32].d;
    case LLMQ_TYPE_Q5_1: {
        const llmq_block_q5_1 *b = (const llmq_block_q5_1 *)row + c / 32;
        return (int64_t)b->d << 16 | b->m;
    }
    case LLMQ_TYPE_IQ4_NL: return ((const llmq_block_iq4_nl *)row)[c / 32].d;
    case LLMQ_TYPE_IQ4_XS: {
        const llmq_block_iq4_xs *b = (const llmq_block_iq4_xs *)row + c / 256;
        return (int64_t)b->d << 16 | (llmq_iq4_xs_scale(b, (c % 256) / 32) + 32);
    }
    case LLMQ_TYPE_Q2_K: {
        const llmq_block_q2_k *b = (const llmq_block_q2_k *)row + c / 256;
        return (int64_t)b->d << 32 | (int64_t)b->dmin << 16 | b->scales[(c % 256) / 16];
    }
    case LLMQ_TYPE_Q5_K: {
        const llmq_block_q5_k *b = (const llmq_block_q5_k *)row + c / 256;
        int sc, m;
        llmq_q4_k_get_scale_min(b->scales, (c % 256) / 32, &sc, &m);
        return (int64_t)b->d << 32 | (int64_t)b->dmin << 16 | sc << 8 | m;
    }
    case LLMQ_TYPE_Q4_1: {
        const llmq_block_q4_1 *b = (const llmq_block_q4_1 *)row + c / 32;
        return (int64_t)b->d << 16 | b->m;
    }
    case LLMQ_TYPE_Q4_K: {
        const llmq_block_q4_k *b = (const llmq_block_q4_k *)row + c / 256;
        int sc, m;
        llmq_q4_k_get_scale_min(b->scales, (c % 256) / 32, &sc, &m);
        return (int64_t)b->d << 32 | (int64_t)b->dmin << 16 | sc << 8 | m;
    }
    case LLMQ_TYPE_Q6_K: {
        const llmq_block_q6_k *b = (const llmq_block_q6_k *)row + c / 256;
        return (int64_t)b->d << 16 | (uint8_t)b->scales[(c % 256) / 16];
    }
    case LLMQ_TYPE_Q3_K: {
        const llmq_block_q3_k *b = (const llmq_block_q3_k *)row + c / 256;
        return (int64_t)b->d << 16 | (llmq_q3_k_get_scale(b->scales, (c % 256) / 16) + 32);
    }
    default: return -1;
    }
}

/* Every group of every row is one grid (all its native units carry the same
 * fields), and the blocks decode exactly to Wq. */
static void check_on_grid(const problem *p, llmq_type t, int G, const unsigned char *packed, const float *Wq)
{
    const llmq_type_traits *tr = llmq_type_get(t);
    const size_t rb = llmq_row_size(t, p->cols);
    const int unit = llmq_grid_unit(t);
    float *dq = malloc(sizeof *dq * (size_t)p->cols);
    for (int r = 0; r < p->rows; r++) {
        const unsigned char *row = packed + (size_t)r * rb;
        for (int g0 = 0; g0 < p->cols; g0 += G)
            for (int c = g0 + unit; c < g0 + G; c += unit)
                cr_assert_eq(stored_fields(t, row, c), stored_fields(t, row, g0), "%s g%d row %d: column %d is off its group's grid",
                             tr->name, G, r, c);
        tr->to_float(row, dq, p->cols);
        for (int c = 0; c < p->cols; c++)
            cr_assert_eq(dq[c], Wq[(size_t)r * p->cols + c], "%s g%d: Wq[%d][%d] = %g but the blocks decode to %g", tr->name, G, r, c,
                         (double)Wq[(size_t)r * p->cols + c], (double)dq[c]);
    }
    free(dq);
}

Test(gptq, beats_rtn_and_matches_dense_reference)
{
    problem p = make_problem(ROWS, COLS, TOKENS, 0x5eed0001);
    const double ref = output_error(&p, p.W, NULL);
    double dense_gap = 0;
    int cases = 0;
    for (int ti = 0; ti < N_TYPES; ti++)
        for (int gi = 0; gi < 3; gi++) {
            const llmq_type t = all_types[ti];
            const int G = group_sizes[gi];
            const char *name = llmq_type_get(t)->name;
            unsigned char *packed;
            llmq_gptq_stats st;
            float *Wq = run_gptq(&p, t, G, NULL, &packed, &st);
            float *Qr = rtn_dequant(&p, t, G, false), *Qd = dense_gptq(&p, t, G, false, false);
            const double e = output_error(&p, p.W, Wq), e_rtn = output_error(&p, p.W, Qr), e_dense = output_error(&p, p.W, Qd);
            cr_log_info("%s g%d: rel err rtn %.4g gptq %.4g dense %.4g (stats rtn %.4g gptq %.4g)", name, G, e_rtn / ref, e / ref,
                        e_dense / ref, st.err_rtn, st.err_gptq);
            cr_assert_lt(e, 0.9 * e_rtn, "%s g%d: gptq %g not below rtn %g", name, G, e, e_rtn);
            /* fp32 against double: a rounding or scale choice on a near tie may
             * flip (IQ4_XS g32 with OpenBLAS's Haswell kernels: +1.2%), so one
             * case may stray to 2%, the cases on average 0.1% */
            cr_assert_lt(fabs(e - e_dense), 0.02 * e_dense, "%s g%d: gptq %g vs dense reference %g", name, G, e, e_dense);
            dense_gap += fabs(e / e_dense - 1), cases++;
            cr_assert_lt(fabs(st.err_gptq - e / ref), 0.02 * e / ref, "%s g%d: stats err_gptq %g vs measured %g", name, G, st.err_gptq, e / ref);
            cr_assert_lt(fabs(st.err_rtn - e_rtn / ref), 0.001 * e_rtn / ref, "%s g%d: stats err_rtn %g vs measured %g", name, G, st.err_rtn,
                         e_rtn / ref);
            cr_assert_eq(st.retries, 0);
            cr_assert_eq(st.dead_columns, 0);
            cr_assert_float_eq(st.damp_used, 0.01f, 1e-9);
            check_on_grid(&p, t, G, packed, Wq);
            free(Wq); free(Qr); free(Qd); free(packed);
        }
    cr_assert_lt(dense_gap / cases, 1e-3, "gptq strays %.3g%% from the dense reference on average", 100 * dense_gap / cases);
    free_problem(&p);
}

Test(gptq, lazy_block_width_does_not_change_the_result)
{
    problem p = make_problem(ROWS, COLS, TOKENS, 0x5eed0002);
    const llmq_type t = LLMQ_TYPE_Q4_0;
    llmq_gptq_opts o = llmq_gptq_default_opts();
    unsigned char *pk[3];
    float *Wq[3];
    const int widths[3] = {32, 128, 512};
    for (int k = 0; k < 3; k++) {
        o.block_size = widths[k];
        Wq[k] = run_gptq(&p, t, 32, &o, &pk[k], NULL);
    }
    const double e0 = output_error(&p, p.W, Wq[0]);
    for (int k = 1; k < 3; k++) {
        const double e = output_error(&p, p.W, Wq[k]);
        cr_assert_lt(fabs(e - e0), 0.01 * e0, "block %d: %g vs block 32: %g", widths[k], e, e0);
    }
    for (int k = 0; k < 3; k++) { free(Wq[k]); free(pk[k]); }
    free_problem(&p);
}

Test(gptq, act_order_static_groups_stay_contiguous)
{
    problem p = make_problem(ROWS, COLS, TOKENS, 0x5eed0003);
    const double ref = output_error(&p, p.W, NULL);
    llmq_gptq_opts o = llmq_gptq_default_opts();
    o.act_order = true;
    for (int k = 0; k < 2 * N_TYPES; k++) {
        const llmq_type t = all_types[k / 2];
        const int G = k % 2 ? 128 : 32;
        const char *name = llmq_type_get(t)->name;
        const size_t rb = llmq_row_size(t, COLS);
        unsigned char *packed;
        llmq_gptq_stats st;
        float *Wq = run_gptq(&p, t, G, &o, &packed, &st);
        check_on_grid(&p, t, G, packed, Wq);
        /* The packed groups are exactly llmq_pack_codes of the codes under
         * the static grids of the original rows. */
        llmq_grid grids[COLS];
        int8_t q[COLS];
        unsigned char *again = malloc(rb);
        for (int r = 0; r < ROWS; r++) {
            cr_assert_eq(llmq_rtn_grids(t, p.W + (size_t)r * COLS, COLS, G, grids, NULL), LLMQ_OK);
            cr_assert_eq(llmq_unpack_codes(t, packed + (size_t)r * rb, COLS, q), LLMQ_OK);
            cr_assert_eq(llmq_pack_codes(t, q, COLS, G, grids, again), LLMQ_OK, "%s: %s", name, llmq_last_error());
            cr_assert_arr_eq(again, packed + (size_t)r * rb, rb, "%s row %d: groups differ from the static grids", name, r);
        }
        free(again);
        float *Qr = rtn_dequant(&p, t, G, false), *Qd = dense_gptq(&p, t, G, true, false);
        const double e = output_error(&p, p.W, Wq), e_rtn = output_error(&p, p.W, Qr), e_dense = output_error(&p, p.W, Qd);
        cr_log_info("%s g%d act-order: rel err rtn %.4g gptq %.4g dense %.4g", name, G, e_rtn / ref, e / ref, e_dense / ref);
        cr_assert_lt(e, 0.9 * e_rtn, "%s g%d act-order: gptq %g not below rtn %g", name, G, e, e_rtn);
        cr_assert_lt(fabs(e - e_dense), 0.01 * e_dense, "%s g%d act-order: gptq %g vs dense reference %g", name, G, e, e_dense);
        cr_assert_lt(fabs(st.err_gptq - e / ref), 0.02 * e / ref);
        free(Wq); free(Qr); free(Qd); free(packed);
    }
    free_problem(&p);
}

Test(gptq, hessian_is_the_running_mean_of_2xxt)
{
    problem p = make_problem(8, 64, 100, 0x5eed0004);
    for (int i = 0; i < 64; i++)
        for (int j = i; j < 64; j++) {
            double h = 0;
            for (int t = 0; t < 100; t++) h += (double)p.X[t * 64 + i] * p.X[t * 64 + j];
            h *= 2.0 / 100;
            cr_assert_float_eq(p.H[i * 64 + j], h, 1e-4 * fabs(h) + 1e-5, "H[%d][%d] = %g, want %g", i, j, (double)p.H[i * 64 + j], h);
        }
    /* The first batch ignores whatever H held. */
    float *H = malloc(sizeof(float) * 64 * 64);
    for (int k = 0; k < 64 * 64; k++) H[k] = NAN;
    int64_t seen = 0;
    cr_assert_eq(llmq_hessian_add(H, 64, &seen, p.X, 100), LLMQ_OK);
    for (int i = 0; i < 64; i++)
        for (int j = i; j < 64; j++) cr_assert_float_eq(H[i * 64 + j], p.H[i * 64 + j], 1e-4 * fabsf(p.H[i * 64 + j]) + 1e-5);
    cr_assert_eq(seen, 100);
    free(H);
    cr_assert_eq(llmq_hessian_add(p.H, 64, &seen, p.X, -1), LLMQ_ERR);
    free_problem(&p);
}

/* llmq_hessian_add_bf16: the same running mean from bf16-rounded inputs,
 * within 1e-3 of the fp32 Hessian (Frobenius, relative; the bound),
 * each diagonal entry within 1e-3 as well; GPTQ on it lands within 1% of the
 * output error GPTQ reaches on the fp32 one. */
Test(gptq, bf16_hessian_stays_within_1e_3_of_fp32)
{
    problem p = make_problem(64, 256, 2048, 0x5eed0010);
    const int n = p.cols;
    float *Hb = malloc(sizeof(float) * n * n);
    for (int k = 0; k < n * n; k++) Hb[k] = NAN;
    int64_t seen = 0;
    for (int t0 = 0; t0 < p.tokens; t0 += 512)
        cr_assert_eq(llmq_hessian_add_bf16(Hb, n, &seen, p.X + (size_t)t0 * n, 512), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_eq(seen, p.tokens);
    double num = 0, den = 0, diag = 0;
    for (int i = 0; i < n; i++)
        for (int j = i; j < n; j++) {
            const double a = p.H[(size_t)i * n + j], b = Hb[(size_t)i * n + j], w = i == j ? 1 : 2;
            num += w * (a - b) * (a - b);
            den += w * a * a;
            if (i == j && fabs(a - b) / a > diag) diag = fabs(a - b) / a;
        }
    cr_log_info("bf16 Hessian: relative Frobenius %.3g, diagonal at most %.3g", sqrt(num / den), diag);
    cr_assert_lt(sqrt(num / den), 1e-3);
    cr_assert_lt(diag, 1e-3);
    float *Wa = malloc(sizeof(float) * (size_t)p.rows * n), *Wb = malloc(sizeof(float) * (size_t)p.rows * n);
    float *Ha = malloc(sizeof(float) * n * n);
    memcpy(Ha, p.H, sizeof(float) * n * n);
    cr_assert_eq(llmq_gptq_quantize(p.W, p.rows, n, Ha, LLMQ_TYPE_Q4_K, 0, NULL, NULL, Wa, NULL), LLMQ_OK);
    cr_assert_eq(llmq_gptq_quantize(p.W, p.rows, n, Hb, LLMQ_TYPE_Q4_K, 0, NULL, NULL, Wb, NULL), LLMQ_OK);
    const double ea = output_error(&p, p.W, Wa), eb = output_error(&p, p.W, Wb);
    cr_log_info("GPTQ q4_k output error: fp32 Hessian %.6g, bf16 Hessian %.6g", ea, eb);
    cr_assert_lt(fabs(eb - ea), 0.01 * ea);
    free(Hb); free(Ha); free(Wa); free(Wb);
    free_problem(&p);
}

Test(gptq, dead_columns)
{
    problem p = make_problem(ROWS, COLS, TOKENS, 0x5eed0005);
    const int dead[] = {0, 7, 300, 511};
    for (int k = 0; k < 4; k++) {
        const int c = dead[k];
        for (int t = 0; t < TOKENS; t++) p.X[(size_t)t * COLS + c] = 0;
        for (int i = 0; i < COLS; i++) p.H[(size_t)(i < c ? i : c) * COLS + (i < c ? c : i)] = 0;
    }
    measure_gram(&p);
    for (int oi = 0; oi < 2; oi++) {
        llmq_gptq_opts o = llmq_gptq_default_opts();
        o.act_order = oi == 1;
        for (int ti = 0; ti < N_TYPES; ti++) {
            const llmq_type t = all_types[ti];
            unsigned char *packed;
            llmq_gptq_stats st;
            float *Wq = run_gptq(&p, t, 64, &o, &packed, &st);
            float *Qr = rtn_dequant(&p, t, 64, false);
            const double e = output_error(&p, p.W, Wq), e_rtn = output_error(&p, p.W, Qr);
            const double ref = output_error(&p, p.W, NULL);
            cr_assert_eq(st.dead_columns, 4);
            cr_assert_lt(e, e_rtn, "%s: gptq %g not below rtn %g with dead columns", llmq_type_get(t)->name, e, e_rtn);
            cr_assert_lt(fabs(st.err_gptq - e / ref), 0.02 * e / ref, "%s: stats %g vs measured %g", llmq_type_get(t)->name, st.err_gptq, e / ref);
            cr_assert_lt(fabs(st.err_rtn - e_rtn / ref), 0.001 * e_rtn / ref);
            check_on_grid(&p, t, 64, packed, Wq);
            /* A dead column is quantized as 0; symmetric grids hold 0 exactly. */
            /* (the IQ4 levels have no 0: the level nearest it is 1) */
            const bool symmetric = t != LLMQ_TYPE_Q4_1 && t != LLMQ_TYPE_Q4_K && t != LLMQ_TYPE_Q5_1 && t != LLMQ_TYPE_Q5_K &&
                                   t != LLMQ_TYPE_Q2_K && t != LLMQ_TYPE_IQ4_NL && t != LLMQ_TYPE_IQ4_XS;
            for (int r = 0; r < ROWS && symmetric; r++)
                for (int k = 0; k < 4; k++) cr_assert_eq(Wq[(size_t)r * COLS + dead[k]], 0.0f);
            free(Wq); free(Qr); free(packed);
        }
    }
    free_problem(&p);
}

/* H made indefinite by −0.05·mean(diag)·I on a rank-deficient Gram matrix:
 * damp 0.01 cannot fix it, 0.1 can. */
Test(gptq, indefinite_hessian_raises_damp_or_fails_clearly)
{
    problem p = make_problem(16, 256, 128, 0x5eed0006);
    double mean = 0;
    for (int i = 0; i < 256; i++) mean += p.H[i * 256 + i] / 256;
    for (int i = 0; i < 256; i++) p.H[i * 256 + i] -= (float)(0.05 * mean);
    float *H = copy_floats(p.H, 256 * 256);
    float *Wq = malloc(sizeof(float) * 16 * 256);
    llmq_gptq_stats st;
    cr_assert_eq(llmq_gptq_quantize(p.W, 16, 256, H, LLMQ_TYPE_Q4_K, 128, NULL, NULL, Wq, &st), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_eq(st.retries, 1);
    cr_assert_float_eq(st.damp_used, 0.1f, 1e-6);
    for (int k = 0; k < 16 * 256; k++) cr_assert(isfinite(Wq[k]));
    llmq_gptq_opts o = llmq_gptq_default_opts();
    o.max_damp_retries = 0;
    memcpy(H, p.H, sizeof(float) * 256 * 256);
    cr_assert_eq(llmq_gptq_quantize(p.W, 16, 256, H, LLMQ_TYPE_Q4_K, 128, &o, NULL, Wq, NULL), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "not positive definite") && strstr(llmq_last_error(), "damp 0.01"), "%s", llmq_last_error());
    free(H);
    free(Wq);
    free_problem(&p);
}

Test(gptq, bad_input_errors_cleanly)
{
    problem p = make_problem(16, 256, 300, 0x5eed0007);
    float *H = copy_floats(p.H, 256 * 256);
    H[3 * 256 + 5] = NAN;
    cr_assert_eq(llmq_gptq_quantize(p.W, 16, 256, H, LLMQ_TYPE_Q4_0, 32, NULL, NULL, NULL, NULL), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "Hessian element [3][5] is NaN"), "%s", llmq_last_error());
    memcpy(H, p.H, sizeof(float) * 256 * 256);
    H[2 * 256 + 2] = INFINITY;
    cr_assert_eq(llmq_gptq_quantize(p.W, 16, 256, H, LLMQ_TYPE_Q4_0, 32, NULL, NULL, NULL, NULL), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "infinite"), "%s", llmq_last_error());
    memcpy(H, p.H, sizeof(float) * 256 * 256);
    p.W[5 * 256 + 9] = NAN;
    cr_assert_eq(llmq_gptq_quantize(p.W, 16, 256, H, LLMQ_TYPE_Q4_0, 32, NULL, NULL, NULL, NULL), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "weight [5][9] is NaN"), "%s", llmq_last_error());
    p.W[5 * 256 + 9] = 0;
    /* Shapes and types the formats cannot hold. */
    cr_assert_eq(llmq_gptq_quantize(p.W, 16, 256, H, LLMQ_TYPE_Q4_K, 48, NULL, NULL, NULL, NULL), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "group size 48"), "%s", llmq_last_error());
    cr_assert_eq(llmq_gptq_quantize(p.W, 16, 256, H, LLMQ_TYPE_F16, 0, NULL, NULL, NULL, NULL), LLMQ_ERR);
    cr_assert_eq(llmq_gptq_quantize(p.W, 8, 128, H, LLMQ_TYPE_Q6_K, 0, NULL, NULL, NULL, NULL), LLMQ_ERR);
    free(H);
    free_problem(&p);
}

/* Rows are independent: with threads (a layer large enough for the sweep,
 * the static grids and the packing to use them) the result is the
 * single-threaded one, up to BLAS summation order. */
Test(gptq, threads_give_the_same_result)
{
    problem p = make_problem(512, 512, 640, 0x5eed0008);
    unsigned char *pk[2];
    float *Wq[2];
    llmq_gptq_stats st[2];
    llmq_gptq_opts o = llmq_gptq_default_opts();
    o.act_order = true;
    for (int k = 0; k < 2; k++) {
        llmq_set_threads(k == 0 ? 1 : 2);
        Wq[k] = run_gptq(&p, LLMQ_TYPE_Q4_K, 32, &o, &pk[k], &st[k]);
    }
    const double e0 = output_error(&p, p.W, Wq[0]), e1 = output_error(&p, p.W, Wq[1]);
    cr_assert_lt(fabs(e1 - e0), 0.01 * e0, "2 threads %g vs 1 thread %g", e1, e0);
    cr_assert_float_eq(st[1].err_rtn, st[0].err_rtn, 1e-4 * st[0].err_rtn);
    cr_assert_float_eq(st[1].err_gptq, st[0].err_gptq, 0.01 * st[0].err_gptq);
    check_on_grid(&p, LLMQ_TYPE_Q4_K, 32, pk[1], Wq[1]);
    for (int k = 0; k < 2; k++) { free(Wq[k]); free(pk[k]); }
    free_problem(&p);
}

/* Shapes off the common path: a short last group (Q4_0/Q4_1/Q8_0 take any
 * multiple of 32), groups wider than the lazy block (the block widens to
 * them), K-quant super-blocks straddling lazy blocks, and the
 * error-minimising grid search. Each still matches the dense reference. */
Test(gptq, odd_shapes_and_grid_search)
{
    problem p = make_problem(ROWS, 320, 640, 0x5eed0009);
    const double ref = output_error(&p, p.W, NULL);
    struct { llmq_type t; int G, block; bool search; } cases[] = {
        {LLMQ_TYPE_Q4_0, 128, 128, false}, /* 320 = 2·128 + 64 */
        {LLMQ_TYPE_Q4_1, 96, 128, false},  /* 320 = 3·96 + 32, block → 192 */
        {LLMQ_TYPE_Q8_0, 256, 128, false}, /* block → 256 */
        {LLMQ_TYPE_Q4_0, 64, 128, true},
        {LLMQ_TYPE_Q4_1, 32, 128, true},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const llmq_type t = cases[k].t;
        const int G = cases[k].G;
        llmq_gptq_opts o = llmq_gptq_default_opts();
        o.block_size = cases[k].block;
        o.grid_search = cases[k].search;
        unsigned char *packed;
        llmq_gptq_stats st;
        float *Wq = run_gptq(&p, t, G, &o, &packed, &st);
        float *Qr = rtn_dequant(&p, t, G, cases[k].search), *Qd = dense_gptq(&p, t, G, false, cases[k].search);
        const double e = output_error(&p, p.W, Wq), e_rtn = output_error(&p, p.W, Qr), e_dense = output_error(&p, p.W, Qd);
        const char *name = llmq_type_get(t)->name;
        cr_log_info("%s g%d search %d: rel err rtn %.4g gptq %.4g dense %.4g", name, G, cases[k].search, e_rtn / ref, e / ref, e_dense / ref);
        cr_assert_lt(e, 0.9 * e_rtn, "%s g%d: gptq %g not below rtn %g", name, G, e, e_rtn);
        cr_assert_lt(fabs(e - e_dense), 0.01 * e_dense, "%s g%d: gptq %g vs dense reference %g", name, G, e, e_dense);
        cr_assert_lt(fabs(st.err_rtn - e_rtn / ref), 0.001 * e_rtn / ref);
        free(Wq); free(Qr); free(Qd); free(packed);
    }
    /* K-quant with a block of 96: super-blocks straddle lazy blocks. */
    problem q = make_problem(ROWS, 512, 640, 0x5eed000a);
    llmq_gptq_opts o = llmq_gptq_default_opts();
    o.block_size = 96;
    unsigned char *packed;
    float *Wq = run_gptq(&q, LLMQ_TYPE_Q4_K, 32, &o, &packed, NULL);
    float *Qd = dense_gptq(&q, LLMQ_TYPE_Q4_K, 32, false, false);
    const double e = output_error(&q, q.W, Wq), e_dense = output_error(&q, q.W, Qd);
    cr_assert_lt(fabs(e - e_dense), 0.01 * e_dense, "q4_k block 96: gptq %g vs dense reference %g", e, e_dense);
    free(Wq); free(Qd); free(packed);
    /* Group size 0: the type's native unit (16 for Q6_K). */
    Wq = run_gptq(&q, LLMQ_TYPE_Q6_K, 0, NULL, &packed, NULL);
    Qd = dense_gptq(&q, LLMQ_TYPE_Q6_K, 16, false, false);
    const double e6 = output_error(&q, q.W, Wq), e6_dense = output_error(&q, q.W, Qd);
    cr_assert_lt(fabs(e6 - e6_dense), 0.01 * e6_dense, "q6_k g0: gptq %g vs dense reference %g", e6, e6_dense);
    check_on_grid(&q, LLMQ_TYPE_Q6_K, 16, packed, Wq);
    free(Wq); free(Qd); free(packed);
    free_problem(&q);
    free_problem(&p);
}

/* ------------------------------------------------------------------ GPTAQ */

/* The quantized path's inputs for the GPTAQ checks: the full-precision X
 * plus a perturbation that follows X (as an earlier layer's rounding error
 * does) and some of its own. */
static float *perturbed_inputs(const problem *p, uint64_t seed)
{
    const size_t m = (size_t)p->tokens * p->cols;
    float *Xq = malloc(sizeof *Xq * m);
    cr_assert_not_null(Xq);
    rng_state = seed;
    for (int t = 0; t < p->tokens; t++)
        for (int j = 0; j < p->cols; j++) {
            const float x = p->X[(size_t)t * p->cols + j], prev = j ? p->X[(size_t)t * p->cols + j - 1] : 0.0f;
            Xq[(size_t)t * p->cols + j] = x + 0.08f * prev + (float)(0.05 * gauss()) * fabsf(x);
        }
    return Xq;
}

/* ‖Q·Xqᵀ − W·Xᵀ‖² over the tokens, in double: GPTAQ's objective. */
static double asymmetric_error(const problem *p, const float *Xq, const float *Q)
{
    const int n = p->cols;
    double e = 0;
    for (int t = 0; t < p->tokens; t++) {
        const float *x = p->X + (size_t)t * n, *xq = Xq + (size_t)t * n;
        for (int r = 0; r < p->rows; r++) {
            const float *w = p->W + (size_t)r * n, *q = Q + (size_t)r * n;
            double y = 0;
            for (int c = 0; c < n; c++) y += (double)q[c] * xq[c] - (double)w[c] * x[c];
            e += y * y;
        }
    }
    return e;
}

/* H and D of the quantized path Xq against the full-precision X, in two batches. */
static void gptaq_stats(const problem *p, const float *Xq, float *H, float *D)
{
    float *scratch = malloc(sizeof *scratch * (size_t)p->tokens * p->cols);
    cr_assert_not_null(scratch);
    int64_t seen = 0;
    const int a = p->tokens / 3, n = p->cols;
    cr_assert_eq(llmq_cross_add(D, n, seen, Xq, p->X, scratch, a), LLMQ_OK);
    cr_assert_eq(llmq_hessian_add(H, n, &seen, Xq, a), LLMQ_OK);
    cr_assert_eq(llmq_cross_add(D, n, seen, Xq + (size_t)a * n, p->X + (size_t)a * n, scratch, p->tokens - a), LLMQ_OK);
    cr_assert_eq(llmq_hessian_add(H, n, &seen, Xq + (size_t)a * n, p->tokens - a), LLMQ_OK);
    free(scratch);
}

/* A problem, its quantized-path inputs (perturbed with seed + 1) and their H and D. */
static void gptaq_problem(uint64_t seed, problem *p, float **Xq, float **H, float **D)
{
    *p = make_problem(ROWS, COLS, TOKENS, seed);
    *Xq = perturbed_inputs(p, seed + 1);
    *H = malloc(sizeof **H * (size_t)COLS * COLS);
    *D = malloc(sizeof **D * (size_t)COLS * COLS);
    cr_assert(*H && *D);
    gptaq_stats(p, *Xq, *H, *D);
}

static float *run_gptaq(const problem *p, const float *H0, const float *D, float alpha, llmq_type t, int G, const llmq_gptq_opts *o,
                        unsigned char **packed)
{
    float *H = copy_floats(H0, (size_t)p->cols * p->cols);
    float *Wq = malloc(sizeof *Wq * (size_t)p->rows * p->cols);
    *packed = malloc(llmq_row_size(t, p->cols) * (size_t)p->rows);
    int rc = llmq_gptaq_quantize(p->W, p->rows, p->cols, H, D, alpha, t, G, o, *packed, Wq, NULL);
    cr_assert_eq(rc, LLMQ_OK, "%s g%d: %s", llmq_type_get(t)->name, G, llmq_last_error());
    free(H);
    return Wq;
}

/* The check: with the full-precision inputs equal to the quantized
 * ones, the cross term is 0 and GPTAQ writes GPTQ's bytes. */
Test(gptq, gptaq_with_equal_inputs_is_gptq)
{
    problem p = make_problem(ROWS, COLS, TOKENS, 0x5eed00a1);
    const size_t nn = (size_t)COLS * COLS;
    float *H = malloc(sizeof *H * nn), *D = malloc(sizeof *D * nn);
    cr_assert(H && D);
    for (size_t k = 0; k < nn; k++) D[k] = NAN; /* the first batch must ignore old contents */
    gptaq_stats(&p, p.X, H, D);
    for (size_t k = 0; k < nn; k++) cr_assert_eq(D[k], 0.0f, "D[%zu] = %g", k, (double)D[k]);
    const llmq_type types[] = {LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_K, LLMQ_TYPE_Q3_K, LLMQ_TYPE_IQ4_XS};
    for (int a = 0; a < 2; a++)
        for (int k = 0; k < 4; k++) {
            llmq_gptq_opts o = llmq_gptq_default_opts();
            o.act_order = a;
            unsigned char *pq, *pa;
            float *q = run_gptq(&p, types[k], 0, &o, &pq, NULL), *qa = run_gptaq(&p, H, D, 0.25f, types[k], 0, &o, &pa);
            cr_assert_eq(memcmp(pq, pa, llmq_row_size(types[k], COLS) * ROWS), 0, "%s act_order %d", llmq_type_get(types[k])->name, a);
            free(q); free(qa); free(pq); free(pa);
        }
    free(H);
    free(D);
    free_problem(&p);
}

/* With inputs that differ, GPTAQ lands closer to the full-precision output
 * than GPTQ does, more so as α grows to the exact correction (1); α = 0 is
 * GPTQ; and the lazy batch width leaves the result alone. */
Test(gptq, gptaq_fits_the_full_precision_output)
{
    problem p;
    float *Xq, *H, *D;
    gptaq_problem(0x5eed00a2, &p, &Xq, &H, &D);
    const size_t nn = (size_t)COLS * COLS;
    const llmq_type types[] = {LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_K, LLMQ_TYPE_Q3_K};
    for (int k = 0; k < 3; k++) {
        llmq_gptq_opts o = llmq_gptq_default_opts();
        unsigned char *pk[4];
        float *q_gptq, *q0, *q25, *q1;
        {
            float *Hc = copy_floats(H, nn);
            q_gptq = malloc(sizeof *q_gptq * (size_t)ROWS * COLS);
            pk[0] = malloc(llmq_row_size(types[k], COLS) * ROWS);
            cr_assert_eq(llmq_gptq_quantize(p.W, ROWS, COLS, Hc, types[k], 0, &o, pk[0], q_gptq, NULL), LLMQ_OK);
            free(Hc);
        }
        q0 = run_gptaq(&p, H, D, 0.0f, types[k], 0, &o, &pk[1]);
        q25 = run_gptaq(&p, H, D, 0.25f, types[k], 0, &o, &pk[2]);
        q1 = run_gptaq(&p, H, D, 1.0f, types[k], 0, &o, &pk[3]);
        const char *name = llmq_type_get(types[k])->name;
        cr_assert_eq(memcmp(pk[0], pk[1], llmq_row_size(types[k], COLS) * ROWS), 0, "%s: α = 0 is not GPTQ", name);
        const double e_gptq = asymmetric_error(&p, Xq, q_gptq), e25 = asymmetric_error(&p, Xq, q25), e1 = asymmetric_error(&p, Xq, q1);
        cr_log_info("%s: ‖QXq − WX‖² GPTQ %.4g, GPTAQ α=0.25 %.4g, α=1 %.4g", name, e_gptq, e25, e1);
        cr_assert_lt(e25, e_gptq, "%s: α = 0.25 %g ≥ GPTQ %g", name, e25, e_gptq);
        cr_assert_lt(e1, 0.85 * e_gptq, "%s: α = 1 %g not 15%% under GPTQ %g", name, e1, e_gptq);
        for (int b = 0; b < 2; b++) {
            o.block_size = b ? 512 : 32;
            unsigned char *pb;
            float *qb = run_gptaq(&p, H, D, 1.0f, types[k], 0, &o, &pb);
            const double eb = asymmetric_error(&p, Xq, qb);
            cr_assert_lt(fabs(eb - e1), 0.01 * e1, "%s block %d: %g vs %g", name, o.block_size, eb, e1);
            free(qb); free(pb);
        }
        free(q_gptq); free(q0); free(q25); free(q1);
        for (int j = 0; j < 4; j++) free(pk[j]);
    }
    free(Xq);
    free(H);
    free(D);
    free_problem(&p);
}

/* The target form: W* = W + α·W·D·(H + λI)⁻¹ is the least-squares optimum of
 * the asymmetric objective (up to the damping), so W* itself beats W by far,
 * and GPTQ of W* lands closer to the full-precision output than the sweep's
 * correction does; α = 0 returns W bit for bit. */
Test(gptq, gptaq_target_is_the_asymmetric_optimum)
{
    problem p;
    float *Xq, *H, *D;
    gptaq_problem(0x5eed00a4, &p, &Xq, &H, &D);
    const size_t nn = (size_t)COLS * COLS, nw = (size_t)ROWS * COLS;
    float *Wt = malloc(sizeof *Wt * nw);
    cr_assert_not_null(Wt);
    const float *H_before = copy_floats(H, nn);
    cr_assert_eq(llmq_gptaq_target(p.W, ROWS, COLS, H, D, 0.0f, 0.01f, Wt), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_eq(memcmp(Wt, p.W, sizeof *Wt * nw), 0, "α = 0 changed W");
    cr_assert_eq(llmq_gptaq_target(p.W, ROWS, COLS, H, D, 1.0f, 0.01f, Wt), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_eq(memcmp(H, H_before, sizeof *H * nn), 0, "H was changed");
    const double e_w = asymmetric_error(&p, Xq, p.W), e_star = asymmetric_error(&p, Xq, Wt);
    cr_assert_lt(e_star, 0.5 * e_w, "‖W*·Xq − W·X‖² %g not under half of W's %g", e_star, e_w);
    const llmq_type types[] = {LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_K, LLMQ_TYPE_Q3_K};
    for (int k = 0; k < 3; k++) {
        unsigned char *pg, *ps, *pt = malloc(llmq_row_size(types[k], COLS) * ROWS);
        float *qg = run_gptq(&p, types[k], 0, NULL, &pg, NULL), *qs = run_gptaq(&p, H, D, 1.0f, types[k], 0, NULL, &ps);
        float *Hc = copy_floats(H, nn), *qt = malloc(sizeof *qt * nw);
        cr_assert_eq(llmq_gptq_quantize(Wt, ROWS, COLS, Hc, types[k], 0, NULL, pt, qt, NULL), LLMQ_OK);
        const double eg = asymmetric_error(&p, Xq, qg), es = asymmetric_error(&p, Xq, qs), et = asymmetric_error(&p, Xq, qt);
        cr_log_info("%s: GPTQ %.4g, sweep %.4g, target %.4g (W* %.4g)", llmq_type_get(types[k])->name, eg, es, et, e_star);
        cr_assert_lt(et, es, "%s: target %g ≥ sweep %g", llmq_type_get(types[k])->name, et, es);
        cr_assert_lt(et, 0.75 * eg, "%s: target %g not 25%% under GPTQ %g", llmq_type_get(types[k])->name, et, eg);
        cr_assert_gt(et, e_star, "%s: rounded beats the continuous optimum", llmq_type_get(types[k])->name);
        free(qg); free(qs); free(qt); free(Hc); free(pg); free(ps); free(pt);
    }
    free((void *)H_before);
    free(Xq); free(H); free(D); free(Wt);
    free_problem(&p);
}
