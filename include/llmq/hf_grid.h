/* The grids of Hugging Face GPTQ / AWQ checkpoints as llmq-internal block
 * types, so that every quantizer (RTN, GPTQ, AWQ) can round onto them exactly
 * and the file llmq writes holds what the solver produced.
 *
 * A GPTQ/AWQ group of g input columns decodes as
 *
 *     w = scale · (q − zero),   scale fp16, q and zero integers,
 *
 * (AutoGPTQ quant.py / qlinear pack; AutoAWQ gemm.py). Symmetric grids have
 * zero = 2^(bits−1): exactly ggml's Q4_0 (4-bit) and Q8_0 (8-bit, code =
 * q − 128), which llmq uses for them. Asymmetric grids need an integer zero
 * per group, which no ggml type has; LLMQ_TYPE_HF_U4 / LLMQ_TYPE_HF_U8 are
 * blocks of 32 elements carrying the group's fp16 scale and integer zero
 * (a group of g columns is g/32 blocks with the same fields, as in
 * llmq/blocks.h). Their grid: value(c) = scale·(c − zero') with codes
 * c = q − off, off = 0 (4-bit) or 128 (8-bit, so codes fit an int8_t) and
 * zero' = zero − off.
 *
 * Fitting (llmq_grid_fit for these types): AutoGPTQ's min/max over the group
 * with 0 inside the range (so the zero is an integer code in range without
 * clamping); the zero is kept in 1..2^bits−1 because GPTQ's v1 files store
 * zero − 1 and cannot hold a zero of 0. With `search`, the range is shrunk
 * in 20 steps down to half and the grid with the least (weighted) squared
 * error on the exact fp16 grid is kept. */
#ifndef LLMQ_HF_GRID_H
#define LLMQ_HF_GRID_H

#include "llmq/blocks.h"

#include <stdbool.h>
#include <stdint.h>

/* y[j] = d·(lo(qs[j]) − z), y[j+16] = d·(hi(qs[j]) − z): Q4_0's nibble order. */
typedef struct { uint16_t d, z; uint8_t qs[16]; } llmq_block_hf_u4;
/* y[j] = d·(qs[j] − z), qs unsigned. */
typedef struct { uint16_t d, z; uint8_t qs[32]; } llmq_block_hf_u8;

_Static_assert(sizeof(llmq_block_hf_u4) == 20, "hf_u4 block");
_Static_assert(sizeof(llmq_block_hf_u8) == 36, "hf_u8 block");

static inline bool llmq_type_is_hf(llmq_type t) { return t == LLMQ_TYPE_HF_U4 || t == LLMQ_TYPE_HF_U8; }
/* 4 or 8 for the HF grid types; 0 otherwise. */
static inline int llmq_hf_bits(llmq_type t) { return t == LLMQ_TYPE_HF_U4 ? 4 : t == LLMQ_TYPE_HF_U8 ? 8 : 0; }

/* The type-traits rows of the two types (NULL for any other t). */
const llmq_type_traits *llmq_hf_grid_traits(int t);

/* The grid of stored fields: fp16 scale bits d and integer zero z (0..2^bits,
 * 2^bits being what a GPTQ v1 nibble of all ones decodes to). */
llmq_grid llmq_hf_grid_make(llmq_type t, uint16_t d, int z);

/* llmq_grid_fit / llmq_grid_from_real / llmq_pack_codes / llmq_unpack_codes
 * for the HF grid types (blocks.c hands them over). The real grid is
 * value = scale·q + offset with q in 0..2^bits−1. */
llmq_real_grid llmq_hf_grid_fit(llmq_type t, const float *x, int len, const float *importance, bool search);
llmq_grid llmq_hf_grid_from_real(llmq_type t, llmq_real_grid real);
int llmq_hf_pack_codes(llmq_type t, const int8_t *q, int n, int group_size, const llmq_grid *grids, void *dst);
int llmq_hf_unpack_codes(llmq_type t, const void *src, int n, int8_t *q);

/* Block b's fields and element j's unsigned code q (0..2^bits−1) of a row in
 * type t ∈ {HF_U4, HF_U8, Q4_0, Q8_0}: the zero is 8 / 128 for Q4_0 / Q8_0. */
void llmq_hf_block_fields(llmq_type t, const void *row, int b, uint16_t *d, int *z);
int llmq_hf_block_code(llmq_type t, const void *row, int j);

#endif
