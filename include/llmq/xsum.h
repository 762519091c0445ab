/* Exact sums of floating-point partial sums, the same bits in any order.
 *
 * Calibration spreads its windows over threads and processes (llmq/dist.h);
 * the Hessians and statistics it sums must not depend on how they were
 * split, and floating-point addition is not associative. Each slot is a
 * fixed-point number with LLMQ_XSUM_FRAC_BITS fraction bits in a 128-bit
 * integer: every partial is truncated once to that grid (an absolute error
 * below 2⁻⁶⁰, far under fp32's rounding of any sum that matters), and integer
 * addition is exact and associative, so the sum of the same partials is the
 * same integer whatever the order, the grouping or the number of processes
 * (the "binned"/fixed-point family of reproducible summation: Demmel & Nguyen,
 * ARITH 2013). Partials must stay below 2⁶⁶ in magnitude; slots add modulo
 * 2¹²⁸, so a sum is exact whenever its total stays below 2⁶⁷ in magnitude,
 * whatever its partial sums pass through on the way (a Hessian's entries
 * are below 2⁴⁵ at 128 × 2048 tokens of activations up to 10⁴). */
#ifndef LLMQ_XSUM_H
#define LLMQ_XSUM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LLMQ_XSUM_FRAC_BITS 60

typedef struct {
    void *slots;  /* n 128-bit integers */
    size_t n;
} llmq_xsum;

/* n slots, zeroed. */
int llmq_xsum_init(llmq_xsum *s, size_t n);
void llmq_xsum_free(llmq_xsum *s);
void llmq_xsum_zero(llmq_xsum *s);

/* slot[at + i] += x[i] for i < n; refused (slots unchanged past the bad one)
 * for a NaN, an infinity or |x| ≥ 2⁶⁶, naming `what`. */
int llmq_xsum_add_f32(llmq_xsum *s, size_t at, const float *x, size_t n, const char *what);
int llmq_xsum_add_f64(llmq_xsum *s, size_t at, const double *x, size_t n, const char *what);
/* The upper triangle (j ≥ i) of the n × n row-major A (leading dimension
 * lda) into slots packed row by row: (i, j) at llmq_xsum_upper_at(n, i, j). */
int llmq_xsum_add_upper(llmq_xsum *s, const float *A, int n, int lda, const char *what);
static inline size_t llmq_xsum_upper_at(int n, int i, int j) { return (size_t)i * n - (size_t)i * (i - 1) / 2 + (size_t)(j - i); }
static inline size_t llmq_xsum_upper_slots(int n) { return (size_t)n * (n + 1) / 2; }

/* slot[at + i] · scale, in double (out[i]) or rounded on to fp32. */
void llmq_xsum_get_f64(const llmq_xsum *s, size_t at, double *out, size_t n, double scale);
/* The packed upper triangle back into A's upper triangle, times scale, in fp32. */
void llmq_xsum_get_upper(const llmq_xsum *s, float *A, int n, int lda, double scale);

/* dst's slots += src's (the same count): what the sum over ranks does. */
int llmq_xsum_merge(llmq_xsum *dst, const llmq_xsum *src);

/* Sums the slots over every process of the run (llmq/dist.h), in place:
 * exact, so every process holds the same integers. A no-op in one process. */
int llmq_xsum_reduce(llmq_xsum *s);

#endif
