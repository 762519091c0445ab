/* llmq/blas.h: fixed tiles, one single-threaded OpenBLAS call each.
 *
 * Debian's OpenBLAS (openmp variant) sizes its team from omp_get_max_threads()
 * at every call and runs serially inside an active parallel region; a team of
 * one (one thread, or the `if` clause false) is not active, so every tile
 * loop also sets its threads' own nthreads-var to 1 first. With 256 × 512
 * tiles the products run at the speed of OpenBLAS's own threading (2 threads,
 * Zen 5: 512 × 4096 × 4096 sgemm 199 against 164–198 GFLOP/s; 4096 × 3968 ×
 * 128 174 against 168), since a tile's packing is small against its work;
 * ssyrk, whose K is often short (a 512-token window), runs in strips. */
#include "llmq/blas.h"

#include <omp.h>
#include <stdbool.h>
#include <stddef.h>

#define TR LLMQ_BLAS_TILE_ROWS
#define TC LLMQ_BLAS_TILE_COLS

static int count(int n, int t) { return n > 0 ? (n + t - 1) / t : 0; }
static int edge(int n, int i0, int t) { return n - i0 < t ? n - i0 : t; }

/* Products smaller than this run as one tile on the calling thread. */
#define MIN_PARALLEL_WORK ((size_t)1 << 21)

void llmq_sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                int ldb, float beta, float *C, int ldc)
{
    const int tm = count(M, TR), tn = count(N, TC), tiles = tm * tn;
    const bool threads = tiles > 1 && (size_t)M * N * (K > 0 ? K : 1) >= MIN_PARALLEL_WORK;
    #pragma omp parallel if (threads)
    {
        omp_set_num_threads(1);
        #pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < tiles; t++) {
            const int i0 = t / tn * TR, j0 = t % tn * TC;
            const float *a = ta == CblasNoTrans ? A + (size_t)i0 * lda : A + i0;
            const float *b = tb == CblasNoTrans ? B + j0 : B + (size_t)j0 * ldb;
            cblas_sgemm(CblasRowMajor, ta, tb, edge(M, i0, TR), edge(N, j0, TC), K, alpha, a, lda, b, ldb, beta, C + (size_t)i0 * ldc + j0,
                        ldc);
        }
    }
}

void llmq_ssyrk(CBLAS_UPLO uplo, CBLAS_TRANSPOSE trans, int N, int K, float alpha, const float *A, int lda, float beta, float *C, int ldc)
{
    /* Strips of LLMQ_BLAS_TILE_ROWS rows: strip b is the triangle's diagonal
     * block b (ssyrk) and the rest of its block row in the triangle (right of
     * the block for Upper, left of it for Lower) in one sgemm, which packs the long operand once per strip rather than once
     * per square tile (n = 4096, K = 512: 240 against 310 GFLOP/s of
     * OpenBLAS's threads with square tiles). Strips shrink along the
     * triangle, so the longest go first. */
    const int strips = count(N, TR);
    const bool threads = strips > 1 && (size_t)N * N / 2 * (K > 0 ? K : 1) >= MIN_PARALLEL_WORK;
    const bool upper = uplo == CblasUpper;
    #pragma omp parallel if (threads)
    {
        omp_set_num_threads(1);
        #pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < strips; t++) {
            const int b = upper ? t : strips - 1 - t; /* longest first */
            const int i0 = b * TR, m = edge(N, i0, TR), i1 = i0 + m;
            const float *ai = trans == CblasNoTrans ? A + (size_t)i0 * lda : A + i0;
            cblas_ssyrk(CblasRowMajor, uplo, trans, m, K, alpha, ai, lda, beta, C + (size_t)i0 * ldc + i0, ldc);
            const CBLAS_TRANSPOSE other = trans == CblasNoTrans ? CblasTrans : CblasNoTrans;
            if (upper && i1 < N) { /* C[i0:i1, i1:N] = op(A)[i0:i1]·op(A)[i1:N]ᵀ */
                const float *aj = trans == CblasNoTrans ? A + (size_t)i1 * lda : A + i1;
                cblas_sgemm(CblasRowMajor, trans, other, m, N - i1, K, alpha, ai, lda, aj, lda, beta, C + (size_t)i0 * ldc + i1, ldc);
            } else if (!upper && i0 > 0) { /* C[i0:i1, 0:i0] = op(A)[i0:i1]·op(A)[0:i0]ᵀ */
                cblas_sgemm(CblasRowMajor, trans, other, m, i0, K, alpha, ai, lda, A, lda, beta, C + (size_t)i0 * ldc, ldc);
            }
        }
    }
}

/* The independent right-hand sides of a Left (columns) or Right (rows)
 * operation with a triangular or symmetric A, in tiles. */
typedef enum { OP_TRSM, OP_TRMM, OP_SYMM } side_op;

static void by_sides(side_op op, CBLAS_SIDE side, CBLAS_UPLO uplo, CBLAS_TRANSPOSE ta, CBLAS_DIAG diag, int M, int N, float alpha,
                     const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    const bool left = side == CblasLeft;
    const int width = left ? TC : TR, tiles = count(left ? N : M, width), order = left ? M : N;
    const bool threads = tiles > 1 && (size_t)M * N * order >= MIN_PARALLEL_WORK;
    #pragma omp parallel if (threads)
    {
        omp_set_num_threads(1);
        #pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < tiles; t++) {
            const int k0 = t * width, m = left ? M : edge(M, k0, TR), n = left ? edge(N, k0, TC) : N;
            const size_t ob = left ? (size_t)k0 : (size_t)k0 * ldb, oc = left ? (size_t)k0 : (size_t)k0 * ldc;
            switch (op) {
            case OP_TRSM: cblas_strsm(CblasRowMajor, side, uplo, ta, diag, m, n, alpha, A, lda, C + oc, ldc); break;
            case OP_TRMM: cblas_strmm(CblasRowMajor, side, uplo, ta, diag, m, n, alpha, A, lda, C + oc, ldc); break;
            case OP_SYMM: cblas_ssymm(CblasRowMajor, side, uplo, m, n, alpha, A, lda, B + ob, ldb, beta, C + oc, ldc); break;
            }
        }
    }
}

void llmq_strsm(CBLAS_SIDE side, CBLAS_UPLO uplo, CBLAS_TRANSPOSE ta, CBLAS_DIAG diag, int M, int N, float alpha, const float *A,
                int lda, float *B, int ldb)
{
    by_sides(OP_TRSM, side, uplo, ta, diag, M, N, alpha, A, lda, B, ldb, 0.0f, B, ldb);
}

void llmq_strmm(CBLAS_SIDE side, CBLAS_UPLO uplo, CBLAS_TRANSPOSE ta, CBLAS_DIAG diag, int M, int N, float alpha, const float *A,
                int lda, float *B, int ldb)
{
    by_sides(OP_TRMM, side, uplo, ta, diag, M, N, alpha, A, lda, B, ldb, 0.0f, B, ldb);
}

void llmq_ssymm(CBLAS_SIDE side, CBLAS_UPLO uplo, int M, int N, float alpha, const float *A, int lda, const float *B, int ldb, float beta,
                float *C, int ldc)
{
    by_sides(OP_SYMM, side, uplo, CblasNoTrans, CblasNonUnit, M, N, alpha, A, lda, B, ldb, beta, C, ldc);
}
