/* Internal: the register-blocked int8 GEMM of the --fast path (issue 13).
 *
 * Every quantized weight type is first repacked, a panel of GQ_ROWS output
 * rows at a time, into one layout: signed int8 codes q and per-unit floats,
 * w = a·q + c for the `unit` (16 or 32) consecutive elements a scale covers.
 * That holds exactly for Q4_0 (q = nibble − 8, c = 0), Q4_1 (c = m), Q8_0,
 * Q4_K (a = d·sc, c = −dmin·m), Q6_K (q − 32, unit 16) and Q3_K (unit 16).
 * The activations are the --fast path's int8 blocks of 32 (llmq_act_q8's
 * values), stored unsigned (q + 128) so one vpdpbusd multiplies 4 activation
 * bytes by 4 code bytes per lane; the surplus 128·Σq of each unit is a
 * property of the weights, subtracted by starting the unit's integer sum at
 * corr = −128·Σq. Lanes are output rows, so a unit's integer sums convert to
 * float once and take their scale a·d_x in one multiply-add (the layout of
 * llamafile's tinyBLAS and of sgemm micro-kernels: weights streamed, one
 * activation word broadcast per token). */
#ifndef LLMQ_GEMM_Q8_H
#define LLMQ_GEMM_Q8_H

#include "llmq/types.h"

#include <stddef.h>
#include <stdint.h>

#define GQ_ROWS 32 /* output rows per panel: two 16-lane vectors */
#define GQ_MR 4    /* tokens per micro-tile */

/* One repacked panel. codes: for quad g (elements 4g..4g+3), GQ_ROWS rows of
 * 4 bytes (128 bytes); scale / offset / corr: [n_units][GQ_ROWS]. offset is
 * NULL for the types without one. Rows past the matrix are zero. */
typedef struct {
    int in, unit, n_units;
    const int8_t *codes;
    const float *scale, *offset;
    const int32_t *corr;
    /* q + zero ∈ [0, code_max] for every code of the type (Q4_0: 8 and 15,
     * Q4_1/Q4_K: 0 and 15, Q6_K: 32 and 63, Q3_K: 4 and 7); zero < 0 where the
     * codes have no such small unsigned form (Q8_0). */
    int zero, code_max;
} gq_panel;

/* Quantized activations: row t's unsigned codes at q + t·in; its block
 * scales d and sums s (d·Σq, llmq_act_q8's s) at d + t·(in/32), s + t·(in/32). */
typedef struct {
    int in;
    const uint8_t *q;
    const float *d, *s;
    const int32_t *qsum16; /* Σq of each 16 elements (signed codes): qsum16 + t·(in/16) */
    /* The int16 GEMM's activations instead (q, qsum16 unused): signed codes
     * in [−32767, 32767] per block of 32, d = max|x|/32767, s = d·Σq. */
    const int16_t *q16;
    /* d·Σq of each 16 elements (both widths): the offset term of a 16-element
     * unit (Q2_K's mins), at s16 + t·(in/16) */
    const float *s16;
} gq_acts;

/* Computes out[t·GQ_ROWS + r] = Σ_i W[r][i]·x̂_{t0+t}[i] for t < mt (1..GQ_MR). */
typedef void (*gq_kernel_fn)(const gq_panel *p, const gq_acts *x, int t0, int mt, float *out);

/* Micro-kernels for a panel of the given unit / offset kind (NULL when not
 * built or not a kind it has). All give the same bits: the integer sums are
 * exact and the float steps per unit the same (scale·d_x, then one fused
 * multiply-add; the offset's c·s_x in a second). The scalar one is the
 * reference the tests hold the others to. */
gq_kernel_fn llmq_gq_kernel_scalar(int unit, int has_offset);
gq_kernel_fn llmq_gq_kernel_avx2(int unit, int has_offset);
gq_kernel_fn llmq_gq_kernel_avx512(int unit, int has_offset);

/* The micro-kernel the int8 GEMM uses for type t with the kernel family in
 * use (avx512, avx2; the scalar family runs the scalar micro-kernel), or
 * NULL where the family has none (NEON keeps the row dots of the --fast
 * path) or t is not a type it takes. */
gq_kernel_fn llmq_gq_kernel_for(llmq_type t);

/* The int16 GEMM (llmq_set_int16): the same panels with int16 codes, pair-major
 * (for elements 2g, 2g+1: GQ_ROWS rows of two int16, 128 bytes; codes points
 * at them), and the activations of gq_acts.q16; vpdpwssd takes two products
 * per lane. Integer sums stay exact (|q| ≤ 128, |x| ≤ 32767: a 32-element
 * unit sums to < 2^28). */
gq_kernel_fn llmq_gq_kernel16_scalar(int unit, int has_offset);
gq_kernel_fn llmq_gq_kernel16_avx512(int unit, int has_offset);
int llmq_gemm_q16_supports(llmq_type t);
int llmq_gemm_q16(float *y, const float *x, int n_tokens, const void *w, llmq_type t, int in, int out);

/* For the SIMD micro-kernels: body(p, x, t0, MT, out, unit, has_offset) with
 * the token count MT a compile-time constant (1..GQ_MR), so that the
 * per-token sums stay in registers. */
#define GQ_BY_TOKENS(body, p, x, t0, mt, out, unit, has_offset)                                     \
    switch (mt) {                                                                                    \
    case 1: body(p, x, t0, 1, out, unit, has_offset); break;                                         \
    case 2: body(p, x, t0, 2, out, unit, has_offset); break;                                         \
    case 3: body(p, x, t0, 3, out, unit, has_offset); break;                                         \
    default: body(p, x, t0, 4, out, unit, has_offset); break;                                        \
    }

/* The (unit, offset) kinds every family has: 32 or 16, with or without offset
 * (a 16-element unit's offset takes the activation's s16, a 32-element one's s). */
#define GQ_KERNEL_GETTER(getter, k32, k32_offset, k16, k16_offset)                                  \
    gq_kernel_fn getter(int unit, int has_offset)                                                    \
    {                                                                                                \
        if (unit == 32) return has_offset ? k32_offset : k32;                                        \
        if (unit == 16) return has_offset ? k16_offset : k16;                                        \
        return NULL;                                                                                 \
    }

/* Does the int8 GEMM take weights of type t on this CPU (with the kernel
 * family in use)? */
int llmq_gemm_q8_supports(llmq_type t);

/* y = x̂·Wᵀ as llmq_matmul's --fast path defines it, for n_tokens rows. */
int llmq_gemm_q8(float *y, const float *x, int n_tokens, const void *w, llmq_type t, int in, int out);

#endif
