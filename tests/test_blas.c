/* llmq/blas.h: every product gives the same bits at 1, 2 and 3 threads, in a
 * team of one and inside another parallel region, under every OpenBLAS
 * kernel family this CPU runs (OpenBLAS's own threading does not with its
 * Haswell/Zen kernels), and the values are the products' to fp32 rounding.
 * The families are switched the way OpenBLAS does it for OPENBLAS_CORETYPE
 * (gotoblas_dynamic_quit/init), as kernels/blas_core.c does. */
#include "llmq/blas.h"
#include "llmq/dist.h"
#include "llmq/kernels.h"
#include "llmq/types.h"
#include "test_util.h"

#include <dlfcn.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 - 0.5);
}

static float *random_matrix(size_t n)
{
    float *m = malloc(n * sizeof *m);
    cr_assert_not_null(m);
    for (size_t i = 0; i < n; i++) m[i] = uniform();
    return m;
}

/* A triangular or symmetric matrix that is far from singular: unit-sized
 * entries scaled down, a dominant diagonal. */
static float *well_conditioned(int n, int ld)
{
    float *a = random_matrix((size_t)n * ld);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) a[(size_t)i * ld + j] = i == j ? 2.0f + a[(size_t)i * ld + j] : a[(size_t)i * ld + j] / (float)n;
    return a;
}

/* ---- the families: the ones the CPU runs, switched like OPENBLAS_CORETYPE */

static const char *families[] = {"Prescott", "Sandybridge", "Haswell", "SkylakeX", "Cooperlake"};

static bool cpu_runs(const char *family)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512dq");
    if (!strcmp(family, "Prescott")) return true;
    if (!strcmp(family, "Sandybridge")) return __builtin_cpu_supports("avx");
    if (!strcmp(family, "Haswell")) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!strcmp(family, "SkylakeX")) return avx512;
    if (!strcmp(family, "Cooperlake")) return avx512 && __builtin_cpu_supports("avx512bf16");
#endif
    (void)family;
    return false;
}

/* Switches OpenBLAS to `family`; false when this BLAS cannot switch. */
static bool use_family(const char *family)
{
    char *(*corename)(void) = (char *(*)(void))dlsym(RTLD_DEFAULT, "openblas_get_corename");
    void (*quit)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit");
    void (*init)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init");
    if (!corename || !quit || !init) return false;
    char *saved = getenv("OPENBLAS_CORETYPE") ? strdup(getenv("OPENBLAS_CORETYPE")) : NULL;
    setenv("OPENBLAS_CORETYPE", family, 1);
    quit();
    init();
    if (saved) setenv("OPENBLAS_CORETYPE", saved, 1);
    else unsetenv("OPENBLAS_CORETYPE");
    free(saved);
    return !strcasecmp(corename(), family);
}

/* ---- the products under test, each a closure over its operands */

typedef struct {
    const char *name;
    int kind; /* 0 sgemm, 1 ssyrk, 2 strsm, 3 strmm, 4 ssymm */
    CBLAS_SIDE side;
    CBLAS_UPLO uplo;
    CBLAS_TRANSPOSE ta, tb;
    int M, N, K;
} product;

static const product products[] = {
    {"sgemm NN", 0, 0, 0, CblasNoTrans, CblasNoTrans, 600, 1100, 70},
    {"sgemm NT", 0, 0, 0, CblasNoTrans, CblasTrans, 531, 777, 300},
    {"sgemm TN", 0, 0, 0, CblasTrans, CblasNoTrans, 300, 300, 531},
    {"sgemm TT", 0, 0, 0, CblasTrans, CblasTrans, 257, 513, 100},
    {"sgemm small", 0, 0, 0, CblasNoTrans, CblasTrans, 37, 5, 300},
    {"ssyrk upper T", 1, 0, CblasUpper, CblasTrans, 0, 0, 700, 90},
    {"ssyrk lower N", 1, 0, CblasLower, CblasNoTrans, 0, 0, 600, 130},
    {"ssyrk upper N", 1, 0, CblasUpper, CblasNoTrans, 0, 0, 530, 70},
    {"ssyrk lower T", 1, 0, CblasLower, CblasTrans, 0, 0, 800, 40},
    {"strsm right lower T", 2, CblasRight, CblasLower, CblasTrans, 0, 600, 300, 0},
    {"strsm right upper N", 2, CblasRight, CblasUpper, CblasNoTrans, 0, 530, 280, 0},
    {"strsm left lower N", 2, CblasLeft, CblasLower, CblasNoTrans, 0, 280, 1100, 0},
    {"strsm left upper T", 2, CblasLeft, CblasUpper, CblasTrans, 0, 300, 1030, 0},
    {"strmm right upper T", 3, CblasRight, CblasUpper, CblasTrans, 0, 600, 300, 0},
    {"strmm left lower N", 3, CblasLeft, CblasLower, CblasNoTrans, 0, 300, 1100, 0},
    {"strmm right lower N", 3, CblasRight, CblasLower, CblasNoTrans, 0, 700, 260, 0},
    {"ssymm right upper", 4, CblasRight, CblasUpper, 0, 0, 600, 300, 0},
    {"ssymm left lower", 4, CblasLeft, CblasLower, 0, 0, 300, 1100, 0},
};
#define N_PRODUCTS (int)(sizeof products / sizeof *products)

/* Leading dimensions wider than the rows: the products work inside larger matrices. */
enum { PAD_A = 5, PAD_B = 3, PAD_C = 9 };

typedef struct {
    float *A, *B, *C0; /* operands; C0 the output's starting contents */
    size_t a_size, c_size;
    int lda, ldb, ldc, c_rows, c_cols;
} operands;

static operands make_operands(const product *p)
{
    operands o = {0};
    switch (p->kind) {
    case 0: { /* op(A) M × K, op(B) K × N */
        const int ar = p->ta == CblasNoTrans ? p->M : p->K, ac = p->ta == CblasNoTrans ? p->K : p->M;
        const int br = p->tb == CblasNoTrans ? p->K : p->N, bc = p->tb == CblasNoTrans ? p->N : p->K;
        o.A = random_matrix((size_t)ar * (ac + PAD_A)), o.lda = ac + PAD_A;
        o.B = random_matrix((size_t)br * (bc + PAD_B)), o.ldb = bc + PAD_B;
        o.c_rows = p->M, o.c_cols = p->N;
        break;
    }
    case 1: { /* op(A) N × K */
        const int ar = p->ta == CblasNoTrans ? p->N : p->K, ac = p->ta == CblasNoTrans ? p->K : p->N;
        o.A = random_matrix((size_t)ar * (ac + PAD_A)), o.lda = ac + PAD_A;
        o.c_rows = o.c_cols = p->N;
        break;
    }
    default: { /* A square of the side's order, B (and C) M × N */
        const int order = p->side == CblasLeft ? p->M : p->N;
        o.A = well_conditioned(order, order + PAD_A), o.lda = order + PAD_A;
        o.B = random_matrix((size_t)p->M * (p->N + PAD_B)), o.ldb = p->N + PAD_B;
        o.c_rows = p->M, o.c_cols = p->N;
    }
    }
    /* the output is B itself for strsm and strmm */
    o.ldc = p->kind == 2 || p->kind == 3 ? o.ldb : o.c_cols + PAD_C;
    o.c_size = (size_t)o.c_rows * o.ldc;
    o.C0 = p->kind == 2 || p->kind == 3 ? o.B : random_matrix(o.c_size);
    return o;
}

static void free_operands(operands *o)
{
    if (o->C0 != o->B) free(o->C0);
    free(o->A);
    free(o->B);
}

/* out ← the product, starting from C0 */
static void run(const product *p, const operands *o, float *out)
{
    memcpy(out, o->C0, o->c_size * sizeof *out);
    switch (p->kind) {
    case 0: llmq_sgemm(p->ta, p->tb, p->M, p->N, p->K, 0.75f, o->A, o->lda, o->B, o->ldb, 0.5f, out, o->ldc); break;
    case 1: llmq_ssyrk(p->uplo, p->ta, p->N, p->K, 0.75f, o->A, o->lda, 0.5f, out, o->ldc); break;
    case 2: llmq_strsm(p->side, p->uplo, p->ta, CblasNonUnit, p->M, p->N, 0.75f, o->A, o->lda, out, o->ldc); break;
    case 3: llmq_strmm(p->side, p->uplo, p->ta, CblasNonUnit, p->M, p->N, 0.75f, o->A, o->lda, out, o->ldc); break;
    case 4: llmq_ssymm(p->side, p->uplo, p->M, p->N, 0.75f, o->A, o->lda, o->B, o->ldb, 0.5f, out, o->ldc); break;
    }
}

/* The same operation by the reference: OpenBLAS itself in one call on one thread. */
static void reference(const product *p, const operands *o, float *out)
{
    memcpy(out, o->C0, o->c_size * sizeof *out);
    omp_set_num_threads(1);
    switch (p->kind) {
    case 0:
        cblas_sgemm(CblasRowMajor, p->ta, p->tb, p->M, p->N, p->K, 0.75f, o->A, o->lda, o->B, o->ldb, 0.5f, out, o->ldc);
        break;
    case 1: cblas_ssyrk(CblasRowMajor, p->uplo, p->ta, p->N, p->K, 0.75f, o->A, o->lda, 0.5f, out, o->ldc); break;
    case 2: cblas_strsm(CblasRowMajor, p->side, p->uplo, p->ta, CblasNonUnit, p->M, p->N, 0.75f, o->A, o->lda, out, o->ldc); break;
    case 3: cblas_strmm(CblasRowMajor, p->side, p->uplo, p->ta, CblasNonUnit, p->M, p->N, 0.75f, o->A, o->lda, out, o->ldc); break;
    case 4: cblas_ssymm(CblasRowMajor, p->side, p->uplo, p->M, p->N, 0.75f, o->A, o->lda, o->B, o->ldb, 0.5f, out, o->ldc); break;
    }
}

/* The elements the operation writes: a syrk's own triangle, else all (of C's columns). */
static bool written(const product *p, int i, int j)
{
    return j < p->N && (p->kind != 1 || (p->uplo == CblasUpper ? j >= i : j <= i));
}

/* Every product at 1, 2 and 3 threads, in a team of one with 2 threads set,
 * and from inside a 2-thread team: the same bits; and the reference's values
 * to within fp32 rounding of sums of ~K terms. */
static void check_family(const char *family)
{
    for (int q = 0; q < N_PRODUCTS; q++) {
        const product *p = &products[q];
        operands o = make_operands(p);
        float *ref = malloc(o.c_size * sizeof *ref), *first = malloc(o.c_size * sizeof *first), *got = malloc(o.c_size * sizeof *got);
        reference(p, &o, ref);
        omp_set_num_threads(1);
        run(p, &o, first);
        for (int variant = 0; variant < 4; variant++) {
            const char *how = (const char *[]){"2 threads", "3 threads", "a team of one, 2 threads set", "inside a 2-thread team"}[variant];
            omp_set_num_threads(variant == 1 ? 3 : 2);
            if (variant < 2) run(p, &o, got);
            else if (variant == 2) {
                #pragma omp parallel num_threads(1)
                run(p, &o, got);
            } else {
                #pragma omp parallel num_threads(2)
                {
                    if (omp_get_thread_num() == 1) run(p, &o, got);
                }
            }
            for (size_t e = 0; e < o.c_size; e++)
                if (written(p, (int)(e / o.ldc), (int)(e % o.ldc)))
                    cr_assert(!memcmp(&got[e], &first[e], sizeof(float)), "%s, %s: element %zu is %.9g with 1 thread, %.9g with %s", family,
                              p->name, e, (double)first[e], (double)got[e], how);
        }
        double num = 0, den = 0;
        for (size_t e = 0; e < o.c_size; e++) {
            if ((int)(e % o.ldc) >= o.c_cols) /* between rows: never written */
                cr_assert(!memcmp(&first[e], &o.C0[e], sizeof(float)) && !memcmp(&ref[e], &o.C0[e], sizeof(float)),
                          "%s, %s: wrote element %zu past a row's end", family, p->name, e);
            if (written(p, (int)(e / o.ldc), (int)(e % o.ldc))) {
                num += ((double)first[e] - ref[e]) * ((double)first[e] - ref[e]);
                den += (double)ref[e] * ref[e];
            }
        }
        cr_assert(sqrt(num / den) < 1e-5, "%s, %s: relative difference %.3g from one OpenBLAS call", family, p->name, sqrt(num / den));
        free(ref);
        free(first);
        free(got);
        free_operands(&o);
    }
    omp_set_num_threads(2);
}

Test(blas, every_family_gives_the_same_bits_at_any_thread_count)
{
    char *(*corename)(void) = (char *(*)(void))dlsym(RTLD_DEFAULT, "openblas_get_corename");
    cr_assert_not_null(corename, "not OpenBLAS");
    char original[64];
    snprintf(original, sizeof original, "%s", corename());
    int checked = 0;
    for (size_t f = 0; f < sizeof families / sizeof *families; f++) {
        if (!cpu_runs(families[f])) continue;
        if (!use_family(families[f])) {
            cr_log_info("OpenBLAS cannot switch to %s here; checking %s only", families[f], original);
            break;
        }
        check_family(families[f]);
        checked++;
    }
    cr_assert(use_family(original) || !checked, "could not return to %s", original);
    if (!checked) check_family(original);
    cr_log_info("families checked: %d (back on %s)", checked, corename());
}

/* The quantized-weight product (panels of decoded rows, one sgemm each)
 * under every family: the same bits at 1, 2 and 3 threads. */
Test(blas, matmul_panels_give_the_same_bits_at_any_thread_count)
{
    char *(*corename)(void) = (char *(*)(void))dlsym(RTLD_DEFAULT, "openblas_get_corename");
    cr_assert_not_null(corename);
    char original[64];
    snprintf(original, sizeof original, "%s", corename());
    const int in = 512, out = 1000, tokens = 40;
    float *w = random_matrix((size_t)out * in), *x = random_matrix((size_t)tokens * in);
    const llmq_type types[] = {LLMQ_TYPE_Q4_0, LLMQ_TYPE_F32};
    unsigned char *q = malloc(llmq_row_size(LLMQ_TYPE_Q4_0, in) * out);
    cr_assert_eq(llmq_quantize_rows(LLMQ_TYPE_Q4_0, w, out, in, 0, false, q), LLMQ_OK, "%s", llmq_last_error());
    float *y[3];
    for (int i = 0; i < 3; i++) y[i] = malloc((size_t)tokens * out * sizeof(float));
    for (size_t f = 0; f < sizeof families / sizeof *families; f++) {
        if (!cpu_runs(families[f]) || !use_family(families[f])) continue;
        for (int t = 0; t < 2; t++) {
            for (int i = 0; i < 3; i++) {
                llmq_set_threads(i + 1);
                cr_assert_eq(llmq_matmul(y[i], x, tokens, types[t] == LLMQ_TYPE_F32 ? (void *)w : (void *)q, types[t], in, out), LLMQ_OK);
            }
            for (int i = 1; i < 3; i++)
                cr_assert(!memcmp(y[0], y[i], (size_t)tokens * out * sizeof(float)), "%s, %s weights: %d threads differ from 1",
                          families[f], llmq_type_get(types[t])->name, i + 1);
        }
    }
    use_family(original);
    for (int i = 0; i < 3; i++) free(y[i]);
    free(w);
    free(x);
    free(q);
}

/* Rows shared among ranks: contiguous, covering, cut at whole tiles, the
 * block counts within one, rank 0 never empty while there are rows; one
 * process owns every row. */
Test(blas, ranks_share_rows_at_whole_tiles)
{
    int a, b;
    llmq_dist_rows(1000, LLMQ_BLAS_TILE_ROWS, &a, &b);
    cr_assert(a == 0 && b == 1000, "[%d, %d)", a, b);
    const int ns[] = {0, 1, 255, 256, 257, 1000, 4096, 11008, 32000};
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
        for (int size = 1; size <= 9; size++) {
            int next = 0, most = 0, least = 1 << 30;
            for (int r = 0; r < size; r++) {
                llmq_dist_rows_of(r, size, ns[i], 256, &a, &b);
                cr_assert(a == next && b >= a, "n %d, %d ranks: rank %d has [%d, %d) after %d", ns[i], size, r, a, b, next);
                cr_assert((a % 256 == 0 || a == ns[i]) && (b % 256 == 0 || b == ns[i]), "n %d: [%d, %d) not at whole tiles", ns[i], a, b);
                if (r == 0 && ns[i] > 0) cr_assert(b > 0, "n %d, %d ranks: rank 0 has no rows", ns[i], size);
                const int blocks = (b - a + 255) / 256;
                most = blocks > most ? blocks : most;
                least = blocks < least ? blocks : least;
                next = b;
            }
            cr_assert_eq(next, ns[i]);
            cr_assert(most - least <= 1, "n %d, %d ranks: %d to %d blocks", ns[i], size, least, most);
        }
}
