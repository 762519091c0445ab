/* fp32 BLAS level 3 whose every output bit is the same at any thread count.
 *
 * OpenBLAS's own threading splits a product among its threads, and with some
 * of its kernel families (Haswell and Zen: every AVX2 CPU without AVX-512,
 * Debian 12's OpenBLAS 0.3.21) an element's bits depend on where the split
 * falls: sgemm at 2 threads differs from 1 thread in 5–20% of the elements.
 * These functions cut the output into tiles fixed by the shape alone —
 * LLMQ_BLAS_TILE_ROWS rows by LLMQ_BLAS_TILE_COLS columns, counted from the
 * first row and column — and run one single-threaded OpenBLAS call per tile
 * in an OpenMP loop (OpenBLAS runs serially inside a parallel region), so
 * which thread computes a tile never matters. Inside an active parallel
 * region the tiles run one after another on the calling thread, with the
 * same bits.
 *
 * A caller that splits rows among processes (llmq/dist.h) keeps the bits of
 * one process by cutting at multiples of LLMQ_BLAS_TILE_ROWS: the tiles of
 * the part are then tiles of the whole.
 *
 * The arguments are cblas's, row-major only. */
#ifndef LLMQ_BLAS_H
#define LLMQ_BLAS_H

#include <cblas.h>

#define LLMQ_BLAS_TILE_ROWS 256
#define LLMQ_BLAS_TILE_COLS 512

/* C ← alpha·op(A)·op(B) + beta·C, C M × N. */
void llmq_sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                int ldb, float beta, float *C, int ldc);

/* C ← alpha·op(A)·op(A)ᵀ + beta·C on C's `uplo` triangle (N × N), op(A)
 * N × K: strips of LLMQ_BLAS_TILE_ROWS rows, each its diagonal block by
 * ssyrk and the rest of its rows in the triangle by one sgemm. */
void llmq_ssyrk(CBLAS_UPLO uplo, CBLAS_TRANSPOSE trans, int N, int K, float alpha, const float *A, int lda, float beta, float *C, int ldc);

/* B ← alpha·op(A)⁻¹·B (Left) or alpha·B·op(A)⁻¹ (Right), A triangular, B
 * M × N: the right-hand sides are independent, so tiles of B's columns
 * (Left) or rows (Right). */
void llmq_strsm(CBLAS_SIDE side, CBLAS_UPLO uplo, CBLAS_TRANSPOSE ta, CBLAS_DIAG diag, int M, int N, float alpha, const float *A,
                int lda, float *B, int ldb);

/* B ← alpha·op(A)·B (Left) or alpha·B·op(A) (Right), A triangular; tiles as strsm. */
void llmq_strmm(CBLAS_SIDE side, CBLAS_UPLO uplo, CBLAS_TRANSPOSE ta, CBLAS_DIAG diag, int M, int N, float alpha, const float *A,
                int lda, float *B, int ldb);

/* C ← alpha·A·B + beta·C (Left) or alpha·B·A + beta·C (Right), A symmetric
 * (its `uplo` triangle read), C M × N; tiles as strsm. */
void llmq_ssymm(CBLAS_SIDE side, CBLAS_UPLO uplo, int M, int N, float alpha, const float *A, int lda, const float *B, int ldb, float beta,
                float *C, int ldc);

#endif
