/* Round-to-nearest quantization on grids chosen in the output type's own
 * precision (see llmq/blocks.h for the grid model). */
#ifndef LLMQ_RTN_H
#define LLMQ_RTN_H

#include "llmq/blocks.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    /* Error-minimising grid search (as llama.cpp's make_qkx2_quants /
     * make_qx_quants do) instead of plain min/max or absmax; for K-quants it
     * also tries the neighbouring 6-/8-bit sub-block codes on the exact grid. */
    bool search;
    /* Optional per-element weights of the squared error (n of them, e.g. AWQ
     * activation statistics or an importance matrix); NULL = uniform. */
    const float *importance;
} llmq_rtn_opts;

/* Chooses the grid of every group of one row (llmq_group_count(n, G) grids):
 * each group's real grid by llmq_grid_fit(); for K-quants then every
 * super-block's fp16 d/dmin by llmq_superblock_choose(); finally each grid
 * rounded to what the type stores by llmq_grid_from_real(). group_size 0 =
 * the type's native unit. opts may be NULL (plain RTN). */
int llmq_rtn_grids(llmq_type t, const float *row, int n, int group_size, llmq_grid *grids, const llmq_rtn_opts *opts);

/* Quantizes one row of n floats to type t (llmq_rtn_grids + llmq_pack_row).
 * F32/F16/BF16 are plain conversions (group_size ignored). */
int llmq_quantize_row(llmq_type t, const float *src, int n, int group_size, bool rtn_search, void *dst);

/* The same for `rows` rows, in parallel (OpenMP); dst holds rows ×
 * llmq_row_size(t, n) bytes. */
int llmq_quantize_rows(llmq_type t, const float *src, int64_t rows, int n, int group_size, bool rtn_search, void *dst);

/* ‖ref − approx‖₂ / ‖ref‖₂ over n values (0 when both are zero, accumulated in double). */
double llmq_rel_error(const float *ref, const float *approx, size_t n);

/* Adds Σ (src − decoded packed)² to *num and Σ src² to *den over `rows` rows
 * of type t (in parallel; the same sums at any thread count). */
int llmq_quant_error_sums(llmq_type t, const float *src, const void *packed, int64_t rows, int n, double *num, double *den);

/* Relative error of `rows` rows quantized as `packed` (type t) against src. */
int llmq_quant_rel_error(llmq_type t, const float *src, const void *packed, int64_t rows, int n, double *rel_error);

#endif
