/* Internal: one row of llmq/xsum.h's exact sums, per instruction set. */
#ifndef LLMQ_XSUM_OPS_H
#define LLMQ_XSUM_OPS_H

#include <stdbool.h>
#include <stdint.h>

/* acc[j] += x[j] on the 2⁻⁶⁰ grid (acc: n 128-bit slots); false when some
 * |x[j]| ≥ 2⁶⁶ or is NaN (those slots get nothing). The vector kernels take
 * n a multiple of their width; the caller adds the tail portably. */
typedef bool (*xsum_row_f32_fn)(void *acc, const float *x, int n);
bool llmq_xsum_row_f32_portable(void *acc, const float *x, int n);
xsum_row_f32_fn llmq_xsum_row_f32_avx512(void); /* NULL where the build or the compiler lacks AVX-512 F/DQ */

#endif
