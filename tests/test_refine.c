/* Refinement after GPTQ (llmq_refine_codes): on fixed correlated inputs, for
 * every block type, the objective Σ δᵀHδ (recomputed here in double from the
 * written blocks) never rises from pass to pass, matches what the refinement
 * reports, and ends below GPTQ's; K-quant super-block scales stay as GPTQ
 * chose them; never-active columns keep their codes; one thread and two give the same
 * bytes. llmq_unpack_grids reads back the grids that rewrite a row's bytes. */
#include "llmq/blocks.h"
#include "llmq/error.h"
#include "llmq/gptq.h"
#include "llmq/kernels.h"
#include "llmq/refine.h"
#include "test_util.h"

#include <math.h>
#include <stdint.h>

static void one_thread(void) { llmq_set_threads(1); }
TestSuite(refine, .init = one_thread);

static const llmq_type types[] = {LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_1, LLMQ_TYPE_Q8_0, LLMQ_TYPE_Q4_K, LLMQ_TYPE_Q6_K,
                                  LLMQ_TYPE_Q3_K, LLMQ_TYPE_Q5_0, LLMQ_TYPE_Q5_1, LLMQ_TYPE_Q5_K, LLMQ_TYPE_Q2_K,
                                  LLMQ_TYPE_IQ4_NL, LLMQ_TYPE_IQ4_XS};
#define N_TYPES (int)(sizeof types / sizeof types[0])
enum { ROWS = 24, COLS = 512, TOKENS = 768 };

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double gauss(void)
{
    double u[2];
    for (int k = 0; k < 2; k++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        u[k] = ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
    }
    return sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]);
}

typedef struct {
    float *W, *X, *H; /* H = (2/N) XᵀX, full */
} problem;

/* X = Z·A·diag(s) (inputs mixed, channel magnitudes spread), W Gaussian;
 * column `dead` (if ≥ 0) never active. */
static problem make_problem(uint64_t seed, int dead)
{
    rng = seed;
    problem p = {malloc(sizeof(float) * ROWS * COLS), calloc((size_t)TOKENS * COLS, sizeof(float)), malloc(sizeof(float) * COLS * COLS)};
    float *A = malloc(sizeof(float) * COLS * COLS), *s = malloc(sizeof(float) * COLS);
    for (int i = 0; i < ROWS * COLS; i++) p.W[i] = (float)(0.02 * gauss());
    for (int i = 0; i < COLS * COLS; i++) A[i] = (float)(((i / COLS) == (i % COLS) ? 0.3 : 0.0) + gauss() / sqrt((double)COLS));
    for (int j = 0; j < COLS; j++) s[j] = (float)exp(0.7 * gauss());
    for (int t = 0; t < TOKENS; t++) {
        float *x = p.X + (size_t)t * COLS;
        for (int k = 0; k < COLS; k++) {
            const float z = (float)gauss();
            for (int j = 0; j < COLS; j++) x[j] += z * A[(size_t)k * COLS + j];
        }
        for (int j = 0; j < COLS; j++) x[j] = j == dead ? 0.0f : x[j] * s[j];
    }
    for (int i = 0; i < COLS; i++)
        for (int j = 0; j < COLS; j++) {
            double h = 0;
            for (int t = 0; t < TOKENS; t++) h += (double)p.X[(size_t)t * COLS + i] * p.X[(size_t)t * COLS + j];
            p.H[(size_t)i * COLS + j] = (float)(2.0 * h / TOKENS);
        }
    free(A);
    free(s);
    return p;
}

static void free_problem(problem *p)
{
    free(p->W);
    free(p->X);
    free(p->H);
}

/* Σ_rows δᵀHδ in double, δ = W − the blocks' decoded values. */
static double exact_objective(const problem *p, llmq_type t, const void *packed)
{
    const size_t rb = llmq_row_size(t, COLS);
    float *q = malloc(sizeof *q * COLS);
    double *d = malloc(sizeof *d * COLS), e = 0;
    for (int r = 0; r < ROWS; r++) {
        cr_assert_eq(llmq_dequant_rows(q, (const char *)packed + r * rb, t, COLS, 0, 1), LLMQ_OK);
        for (int c = 0; c < COLS; c++) d[c] = (double)p->W[(size_t)r * COLS + c] - q[c];
        for (int i = 0; i < COLS; i++) {
            double y = 0;
            for (int j = 0; j < COLS; j++) y += (double)p->H[(size_t)i * COLS + j] * d[j];
            e += d[i] * y;
        }
    }
    free(q);
    free(d);
    return e;
}

/* GPTQ of the problem's W into t (groups of G), packed. */
static void *gptq_packed(const problem *p, llmq_type t, int G)
{
    void *packed = malloc(llmq_row_size(t, COLS) * ROWS);
    float *H = malloc(sizeof(float) * COLS * COLS);
    memcpy(H, p->H, sizeof(float) * COLS * COLS);
    cr_assert_eq(llmq_gptq_quantize(p->W, ROWS, COLS, H, t, G, NULL, packed, NULL, NULL), LLMQ_OK, "%s", llmq_last_error());
    free(H);
    return packed;
}

Test(refine, unpack_grids_rewrites_the_same_bytes)
{
    problem p = make_problem(0x5eed0101, -1);
    for (int k = 0; k < N_TYPES; k++)
        for (int G = 0; G <= 128; G += 128) {
            if (G && llmq_type_is_k(types[k])) continue;
            void *packed = gptq_packed(&p, types[k], G);
            const size_t rb = llmq_row_size(types[k], COLS);
            int8_t q[COLS];
            llmq_grid grids[COLS / 16];
            char again[1024];
            cr_assert_leq(rb, sizeof again);
            for (int r = 0; r < ROWS; r++) {
                const char *row = (const char *)packed + r * rb;
                cr_assert_eq(llmq_unpack_codes(types[k], row, COLS, q), LLMQ_OK);
                cr_assert_eq(llmq_unpack_grids(types[k], row, COLS, G, grids), LLMQ_OK, "%s", llmq_last_error());
                cr_assert_eq(llmq_pack_codes(types[k], q, COLS, G, grids, again), LLMQ_OK, "%s", llmq_last_error());
                cr_assert_arr_eq(again, row, rb, "%s g%d row %d", llmq_type_get(types[k])->name, G, r);
            }
            free(packed);
        }
    free_problem(&p);
    int8_t q[32];
    llmq_grid g[1];
    cr_assert_eq(llmq_unpack_grids(LLMQ_TYPE_F32, q, 32, 0, g), LLMQ_ERR);
}

Test(refine, passes_lower_the_objective_below_gptqs)
{
    problem p = make_problem(0x5eed0102, 7);
    for (int k = 0; k < N_TYPES; k++) {
        const llmq_type t = types[k];
        const char *name = llmq_type_get(t)->name;
        void *packed = gptq_packed(&p, t, 0);
        const size_t rb = llmq_row_size(t, COLS), bytes = rb * ROWS;
        int8_t *codes0 = malloc((size_t)ROWS * COLS), *codes1 = malloc((size_t)ROWS * COLS);
        for (int r = 0; r < ROWS; r++) cr_assert_eq(llmq_unpack_codes(t, (char *)packed + r * rb, COLS, codes0 + (size_t)r * COLS), LLMQ_OK);
        const double before = exact_objective(&p, t, packed);
        double prev = before;
        for (int pass = 0; pass < 3; pass++) { /* one pass at a time: the objective checked from the bytes each time */
            float *H = malloc(sizeof(float) * COLS * COLS);
            memcpy(H, p.H, sizeof(float) * COLS * COLS);
            llmq_refine_stats st;
            cr_assert_eq(llmq_refine_codes(p.W, ROWS, COLS, H, t, 0, packed, 1, &st), LLMQ_OK, "%s", llmq_last_error());
            free(H);
            const double now = exact_objective(&p, t, packed);
            cr_assert_leq(now, prev * (1 + 1e-9), "%s pass %d: objective rose %.9g -> %.9g", name, pass, prev, now);
            cr_assert_lt(fabs(st.objective[0] - prev), 1e-4 * prev, "%s: reported start %.9g, exact %.9g", name, st.objective[0], prev);
            cr_assert_lt(fabs(st.objective[st.passes] - now), 1e-4 * now, "%s: reported end %.9g, exact %.9g", name, st.objective[st.passes],
                         now);
            cr_assert_eq(st.changed[0] + st.regridded[0] == 0, now == prev, "%s: %lld codes moved, %lld grids refitted, objective %.9g -> %.9g",
                         name, (long long)st.changed[0], (long long)st.regridded[0], prev, now);
            prev = now;
        }
        cr_log_info("%s: objective after GPTQ %.6g, after 3 passes %.6g (%.2f%%)", name, before, prev, 100.0 * (prev - before) / before);
        if (t != LLMQ_TYPE_Q8_0) cr_assert_lt(prev, 0.995 * before, "%s: refinement gained nothing (%.9g -> %.9g)", name, before, prev);
        /* the never-active column 7 keeps its code; a K-quant super-block keeps GPTQ's d (and dmin) */
        void *orig = gptq_packed(&p, t, 0);
        for (int r = 0; r < ROWS; r++) {
            cr_assert_eq(llmq_unpack_codes(t, (char *)packed + r * rb, COLS, codes1 + (size_t)r * COLS), LLMQ_OK);
            cr_assert_eq(codes1[(size_t)r * COLS + 7], codes0[(size_t)r * COLS + 7], "%s row %d: dead column moved", name, r);
            if (!llmq_type_is_k(t)) continue;
            llmq_grid g0[COLS / 16], g1[COLS / 16];
            cr_assert_eq(llmq_unpack_grids(t, (char *)orig + r * rb, COLS, 0, g0), LLMQ_OK);
            cr_assert_eq(llmq_unpack_grids(t, (char *)packed + r * rb, COLS, 0, g1), LLMQ_OK);
            for (int g = 0; g < llmq_group_count(COLS, llmq_group_resolve(t, 0)); g++)
                cr_assert(g0[g].d == g1[g].d && g0[g].m == g1[g].m, "%s row %d group %d: super-block d %04x -> %04x", name, r, g, g0[g].d, g1[g].d);
        }
        free(orig);
        (void)bytes;
        free(codes0);
        free(codes1);
        free(packed);
    }
    free_problem(&p);
}

Test(refine, threads_do_not_change_the_bytes)
{
    problem p = make_problem(0x5eed0103, -1);
    void *a = gptq_packed(&p, LLMQ_TYPE_Q4_K, 0), *b = gptq_packed(&p, LLMQ_TYPE_Q4_K, 0);
    const size_t bytes = llmq_row_size(LLMQ_TYPE_Q4_K, COLS) * ROWS;
    float *H = malloc(sizeof(float) * COLS * COLS);
    memcpy(H, p.H, sizeof(float) * COLS * COLS);
    cr_assert_eq(llmq_refine_codes(p.W, ROWS, COLS, H, LLMQ_TYPE_Q4_K, 0, a, 2, NULL), LLMQ_OK);
    llmq_set_threads(2);
    memcpy(H, p.H, sizeof(float) * COLS * COLS);
    cr_assert_eq(llmq_refine_codes(p.W, ROWS, COLS, H, LLMQ_TYPE_Q4_K, 0, b, 2, NULL), LLMQ_OK);
    llmq_set_threads(1);
    cr_assert_arr_eq(a, b, bytes);
    cr_assert_eq(llmq_refine_codes(p.W, ROWS, COLS, H, LLMQ_TYPE_Q4_K, 0, a, LLMQ_REFINE_MAX_PASSES + 1, NULL), LLMQ_ERR);
    cr_assert_eq(llmq_refine_codes(p.W, ROWS, COLS, H, LLMQ_TYPE_F16, 0, a, 1, NULL), LLMQ_ERR);
    cr_assert_arr_eq(a, b, bytes, "a refused call changed the blocks");
    free(H);
    free(a);
    free(b);
    free_problem(&p);
}
