/* Round-to-nearest quantization on grids chosen in the output type's own
 * precision (see llmq/blocks.h for the grid model). Whole rows to a type
 * (llmq_quantize_row, llmq_quantize_rows) go through the type table: see
 * llmq/types.h. */
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

/* ‖ref − approx‖₂ / ‖ref‖₂ over n values (0 when both are zero, accumulated in double). */
double llmq_rel_error(const float *ref, const float *approx, size_t n);

#endif
