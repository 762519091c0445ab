/* ggml's block formats, bit for bit (llama.cpp ggml/src/ggml-common.h), and the
 * grid-first quantization API every quantizer (RTN, GPTQ, AWQ) builds on.
 *
 * Grid first. A *group* is `group_size` consecutive elements of one row (the
 * span of one quantization grid along the input dimension). Its *grid* is the
 * set of values the file can give those elements:
 *
 *     value(q) = scale * (q - zero) + offset,     q integer in [qmin, qmax],
 *
 * where scale and offset are exactly the floats the type's dequantizer
 * computes from the stored fields (fp16 d and m, 6-bit sub-block codes under
 * the super-block's fp16 d/dmin, ...), and llmq_grid_value() evaluates value(q)
 * with the dequantizer's own arithmetic. A quantizer therefore
 *   1. chooses each group's grid in the type's own precision
 *      (llmq_rtn_grids() for a whole row, or llmq_grid_fit() +
 *      llmq_grid_from_real() one group at a time), then
 *   2. rounds weights onto it (llmq_grid_round(), llmq_round_row()), and
 *   3. writes ggml blocks (llmq_pack_codes(), llmq_pack_row()),
 * so what the algorithm optimised is exactly what the file holds.
 *
 * How a group maps onto native blocks: in Q4_0/Q4_1/Q8_0 (32-element blocks)
 * a group of G elements is G/32 blocks carrying identical d (and m). In the
 * K-quants a group is G/32 (Q4_K, Q5_K) or G/16 (Q6_K, Q3_K) sub-blocks carrying
 * identical sub-block codes; the super-block's fp16 d (and dmin) is shared by
 * all groups of its 256 elements, so it must be fixed before any of its
 * groups' codes are (see llmq_superblock_choose()). */
#ifndef LLMQ_BLOCKS_H
#define LLMQ_BLOCKS_H

#include "llmq/types.h"

#include <stdbool.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define LLMQ_QK 32    /* elements per Q4_0 / Q4_1 / Q8_0 block */
#define LLMQ_QK_K 256 /* elements per K-quant super-block */

/* --- the ggml layouts (little-endian; uint16_t d fields are IEEE fp16 bits) --- */

/* y[j] = (lo(qs[j]) - 8)·d, y[j+16] = (hi(qs[j]) - 8)·d */
typedef struct { uint16_t d; uint8_t qs[16]; } llmq_block_q4_0;
/* y = q·d + m, same nibble order as Q4_0 */
typedef struct { uint16_t d, m; uint8_t qs[16]; } llmq_block_q4_1;
/* 5-bit codes: the low four bits in qs as Q4_0's nibbles, the fifth bit of
 * element j at bit j of qh (little-endian 32 bits); y = (q - 16)·d. */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } llmq_block_q5_0;
/* y = q·d + m, codes as Q5_0's */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } llmq_block_q5_1;
/* y[j] = qs[j]·d */
typedef struct { uint16_t d; int8_t qs[32]; } llmq_block_q8_0;
/* 8 sub-blocks of 32 with 6-bit scale sc and min m (packed in scales[12]);
 * y = (d·sc)·q - dmin·m. Each 64 elements use 32 qs bytes: low nibbles are the
 * first 32 elements, high nibbles the next 32. */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } llmq_block_q4_k;
/* 16 sub-blocks of 16, each with a 4-bit scale (low nibble of scales[j]) and
 * a 4-bit min (high nibble); 2-bit codes, element e of a 128-element half at
 * bits 2·((e%128)/32) of qs[32·(e/128) + e%32]; y = (d·sc)·q - dmin·m. */
typedef struct { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; } llmq_block_q2_k;
/* Q4_K's sub-blocks, scales and nibble order with a fifth bit per code: the
 * element at offset l of 64-element chunk c has its high bit at bit 2c (first
 * 32 of the chunk) or 2c+1 (second 32) of qh[l]; y = (d·sc)·q - dmin·m. */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } llmq_block_q5_k;
/* 16 sub-blocks of 16 with int8 scales; q = 4 low bits (ql) | 2 high bits (qh);
 * y = (d·sc)·(q - 32); interleaved in 128-element halves. */
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } llmq_block_q6_k;
/* 16 sub-blocks of 16 with 6-bit scales stored +32 (packed in scales[12]);
 * q = 2 low bits (qs) | high bit (hmask); y = (d·(sc-32))·(q - 4). */
typedef struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; } llmq_block_q3_k;
/* The non-linear types: a code q stands for the level llmq_iq4nl_levels[q]
 * (ggml's kvalues_iq4nl). IQ4_NL: y = d·level, nibbles ordered as Q4_0's.
 * IQ4_XS: 8 sub-blocks of 32 under one fp16 d, sub-block scale ls (6 bits:
 * low 4 in nibble ib%2 of scales_l[ib/2], high 2 at bit 2·ib of scales_h),
 * y = (d·(ls - 32))·level; each sub-block's 16 qs bytes as IQ4_NL's. */
typedef struct { uint16_t d; uint8_t qs[16]; } llmq_block_iq4_nl;
typedef struct { uint16_t d; uint16_t scales_h; uint8_t scales_l[4]; uint8_t qs[128]; } llmq_block_iq4_xs;
static const int8_t llmq_iq4nl_levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
/* IQ4_XS sub-block ib's scale, ls - 32 (-32..31). */
static inline int llmq_iq4_xs_scale(const llmq_block_iq4_xs *b, int ib)
{
    return (((b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((b->scales_h >> (2 * ib)) & 3) << 4)) - 32;
}
/* Activation format of ggml's K-quant dot products (not a weight format). */
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } llmq_block_q8_k;

_Static_assert(sizeof(llmq_block_q4_0) == 18, "q4_0 block");
_Static_assert(sizeof(llmq_block_q4_1) == 20, "q4_1 block");
_Static_assert(sizeof(llmq_block_q5_0) == 22, "q5_0 block");
_Static_assert(sizeof(llmq_block_q5_1) == 24, "q5_1 block");
_Static_assert(sizeof(llmq_block_q8_0) == 34, "q8_0 block");
_Static_assert(sizeof(llmq_block_q5_k) == 176, "q5_K block");
_Static_assert(sizeof(llmq_block_q2_k) == 84, "q2_K block");
_Static_assert(sizeof(llmq_block_iq4_nl) == 18, "iq4_nl block");
_Static_assert(sizeof(llmq_block_iq4_xs) == 136, "iq4_xs block");
_Static_assert(sizeof(llmq_block_q4_k) == 144, "q4_K block");
_Static_assert(sizeof(llmq_block_q6_k) == 210, "q6_K block");
_Static_assert(sizeof(llmq_block_q3_k) == 110, "q3_K block");
_Static_assert(sizeof(llmq_block_q8_k) == 292, "q8_K block");

/* Scalar reference dequantizers (n a multiple of the block size). */
void llmq_dequant_q4_0(const void *src, float *dst, int64_t n);
void llmq_dequant_q4_1(const void *src, float *dst, int64_t n);
void llmq_dequant_q5_0(const void *src, float *dst, int64_t n);
void llmq_dequant_q5_1(const void *src, float *dst, int64_t n);
void llmq_dequant_q5_k(const void *src, float *dst, int64_t n);
void llmq_dequant_q2_k(const void *src, float *dst, int64_t n);
void llmq_dequant_iq4_nl(const void *src, float *dst, int64_t n);
void llmq_dequant_iq4_xs(const void *src, float *dst, int64_t n);
void llmq_dequant_q8_0(const void *src, float *dst, int64_t n);
void llmq_dequant_q4_k(const void *src, float *dst, int64_t n);
void llmq_dequant_q6_k(const void *src, float *dst, int64_t n);
void llmq_dequant_q3_k(const void *src, float *dst, int64_t n);
void llmq_dequant_q8_k(const void *src, float *dst, int64_t n);

/* ggml's reference encoders (quantize_row_*_ref), n a multiple of the block
 * size: the type table's from_float for Q4_0, Q4_1, Q8_0 and Q8_K (the
 * K-quant weight types encode through llmq's RTN instead). */
void llmq_encode_ref_q4_0(const float *x, void *dst, int64_t n);
void llmq_encode_ref_q4_1(const float *x, void *dst, int64_t n);
void llmq_encode_ref_q8_0(const float *x, void *dst, int64_t n);
void llmq_encode_ref_q8_k(const float *x, void *dst, int64_t n);

/* Q4_K's 6-bit (scale, min) of sub-block j (0..7) from the packed scales[12]. */
/* All eight 6-bit scales and mins of a Q4_K super-block at once (the values
 * llmq_q4_k_get_scale_min returns one at a time): bytes 0..3 hold scales 0..3
 * and bytes 4..7 mins 0..3 in their low six bits; bytes 8..11 the low four
 * bits of scales / mins 4..7, whose top two bits are the spare top bits of
 * bytes 0..3 / 4..7. Four bytes per 32-bit operation; w[0..1] are the scales
 * as bytes, w[2..3] the mins (SIMD code builds vectors from the words
 * directly, without a trip through memory). */
static inline void llmq_q4_k_scale_words(const uint8_t s[12], uint32_t w[4])
{
    uint32_t a[3];
    memcpy(a, s, sizeof a);
    w[0] = a[0] & 0x3f3f3f3fu;
    w[1] = (a[2] & 0x0f0f0f0fu) | ((a[0] >> 2) & 0x30303030u);
    w[2] = a[1] & 0x3f3f3f3fu;
    w[3] = ((a[2] >> 4) & 0x0f0f0f0fu) | ((a[1] >> 2) & 0x30303030u);
}
static inline void llmq_q4_k_unpack_scales(const uint8_t s[12], uint8_t sc[8], uint8_t mn[8])
{
    uint32_t w[4];
    llmq_q4_k_scale_words(s, w);
    memcpy(sc, w, 8);
    memcpy(mn, w + 2, 8);
}
void llmq_q4_k_get_scale_min(const uint8_t scales[12], int j, int *sc, int *m);
/* Q3_K's signed 6-bit scale (-32..31) of sub-block j (0..15). */
/* All sixteen Q3_K sub-block scales at once, as bytes 0..63 (the stored
 * value, llmq_q3_k_get_scale's result + 32) in four words: low nibbles of
 * bytes 0..7 are scales 0..7's low four bits, high nibbles scales 8..15's;
 * bytes 8..11 carry the top two bits, scale j's at bit 2·(j/4) of byte 8 + j%4. */
static inline void llmq_q3_k_scale_words(const uint8_t s[12], uint32_t w[4])
{
    uint32_t a[3];
    memcpy(a, s, sizeof a);
    w[0] = (a[0] & 0x0f0f0f0fu) | ((a[2] & 0x03030303u) << 4);
    w[1] = (a[1] & 0x0f0f0f0fu) | (((a[2] >> 2) & 0x03030303u) << 4);
    w[2] = ((a[0] >> 4) & 0x0f0f0f0fu) | (((a[2] >> 4) & 0x03030303u) << 4);
    w[3] = ((a[1] >> 4) & 0x0f0f0f0fu) | (((a[2] >> 6) & 0x03030303u) << 4);
}
/* The same as signed scales −32..31. */
static inline void llmq_q3_k_unpack_scales(const uint8_t s[12], int8_t out[16])
{
    uint32_t w[4];
    uint8_t u[16];
    llmq_q3_k_scale_words(s, w);
    memcpy(u, w, sizeof u);
    for (int j = 0; j < 16; j++) out[j] = (int8_t)(u[j] - 32);
}
int llmq_q3_k_get_scale(const uint8_t scales[12], int j);

/* --- grids --- */

typedef struct {
    float scale, offset;  /* decoded values: value(q) = scale·(q - zero) + offset */
    int16_t zero, qmin, qmax;
    /* The stored fields the grid decodes from. */
    uint16_t d;    /* fp16 bits: Q4_0/Q4_1/Q8_0 d; K-quants: the super-block d */
    uint16_t m;    /* fp16 bits: Q4_1/Q5_1 m; Q2_K/Q4_K/Q5_K: the super-block dmin; else 0 */
    int16_t sc;    /* K-quants: sub-block scale code (Q4_K/Q5_K 0..63, Q2_K 0..15, Q6_K -128..127, Q3_K -32..31) */
    int16_t mc;    /* Q4_K/Q5_K: sub-block min code 0..63, Q2_K 0..15; else 0 */
    /* IQ4_NL / IQ4_XS: value(q) = scale·llmq_iq4nl_levels[q] (zero and offset 0);
     * every other grid is linear */
    bool levels;
} llmq_grid;

/* Fields shared by all groups of one K-quant super-block (fp16 bits). */
typedef struct { uint16_t d, dmin; } llmq_superblock;

/* Whether the type stores each group's offset (a min) beside its scale:
 * Q4_1, Q5_1, Q2_K, Q4_K, Q5_K (asymmetric grids). */
static inline bool llmq_type_has_min(llmq_type t)
{
    return t == LLMQ_TYPE_Q4_1 || t == LLMQ_TYPE_Q5_1 || t == LLMQ_TYPE_Q2_K || t == LLMQ_TYPE_Q4_K || t == LLMQ_TYPE_Q5_K;
}

/* The range of a K-quant's sub-block scale codes, sc_lo..sc_hi, and of its min
 * codes, 0..mc_hi (0 for types without a min): Q4_K/Q5_K 0..63 and 0..63,
 * Q2_K 0..15 and 0..15, Q6_K −128..127, Q3_K and IQ4_XS −32..31. False (and
 * nothing written) for types without sub-block codes. */
static inline bool llmq_subblock_code_range(llmq_type t, int *sc_lo, int *sc_hi, int *mc_hi)
{
    switch (t) {
    case LLMQ_TYPE_Q4_K:
    case LLMQ_TYPE_Q5_K: *sc_lo = 0, *sc_hi = 63, *mc_hi = 63; return true;
    case LLMQ_TYPE_Q2_K: *sc_lo = 0, *sc_hi = 15, *mc_hi = 15; return true;
    case LLMQ_TYPE_Q6_K: *sc_lo = -128, *sc_hi = 127, *mc_hi = 0; return true;
    case LLMQ_TYPE_Q3_K:
    case LLMQ_TYPE_IQ4_XS: *sc_lo = -32, *sc_hi = 31, *mc_hi = 0; return true;
    default: return false;
    }
}

/* Elements per stored scale: 32 (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, IQ4_NL, IQ4_XS) or 16 (Q6_K, Q3_K, Q2_K);
 * 0 for a type without grids (floats, Q8_K). */
int llmq_grid_unit(llmq_type t);
/* True for Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS (grids depend on a shared super-block d). */
bool llmq_type_is_k(llmq_type t);
/* The group size to use: group_size, or the type's native unit when
 * group_size is 0. */
int llmq_group_resolve(llmq_type t, int group_size);
/* Checks that type t can express groups of group_size (after
 * llmq_group_resolve) in rows of n elements: n a multiple of the block size,
 * group_size a multiple of llmq_grid_unit(t), and for K-quants a divisor of
 * 256. Q4_0/Q4_1/Q8_0 take any multiple of 32; the last group of a row may be
 * shorter. Returns LLMQ_OK or LLMQ_ERR with a message naming the type. */
int llmq_group_check(llmq_type t, int n, int group_size);
/* Number of groups in a row: ceil(n / group_size). */
static inline int llmq_group_count(int n, int group_size) { return (n + group_size - 1) / group_size; }

/* value(q), computed exactly as the type's dequantizer computes it. */
static inline float llmq_grid_value(const llmq_grid *g, int q)
{
    if (g->levels) return g->scale * (float)llmq_iq4nl_levels[q];
    return g->scale * (float)(q - g->zero) + g->offset;
}

/* Nearest integer, ties to even (ggml's nearest_int, rintf in the default
 * rounding mode), of v clamped to [lo, hi] first, so huge, infinite or NaN
 * inputs stay defined (fmaxf(NaN, lo) = lo). Adding and subtracting 1.5·2²³
 * rounds any |v| < 2²² to an integer exactly as rintf does, without the libm
 * call that baseline x86-64 (no SSE4.1 roundss) makes for rintf. */
static inline int llmq_round_clamp(float v, int lo, int hi)
{
    v = v > (float)lo ? v : (float)lo;
    v = v < (float)hi ? v : (float)hi;
    return (int)((v + 12582912.0f) - 12582912.0f);
}

/* The code nearest to v on the grid value(q) = scale·(q - zero) + offset,
 * q in [qmin, qmax], as a float, from the grid's fields as floats: no
 * branches, so a loop over many weights vectorizes, and every lane does the
 * IEEE operations llmq_grid_round defines (a zero scale gives zero clamped). */
static inline float llmq_grid_round_lane(float v, float scale, float offset, float zero, float qmin, float qmax)
{
    const float den = scale == 0.0f ? 1.0f : scale;
    float r = (v - offset) / den + zero;
    r = r > qmin ? r : qmin;
    r = r < qmax ? r : qmax;
    const float q = (r + 12582912.0f) - 12582912.0f; /* llmq_round_clamp's rounding */
    /* The division can land a hair off the midpoint: settle with the exact values. */
    /* Everything computed before any choice (& not &&): the choices are then
     * selects of finished values, which the compiler may vectorize. */
    const float down = q - 1.0f, up = q + 1.0f;
    const float e = fabsf(scale * (q - zero) + offset - v);
    const float e_down = fabsf(scale * (down - zero) + offset - v);
    const float e_up = fabsf(scale * (up - zero) + offset - v);
    const int take_down = (q > qmin) & (e_down < e), take_up = (q < qmax) & (e_up < e);
    float best = take_up ? up : q;
    best = take_down ? down : best;
    float zero_clamped = zero < qmin ? qmin : zero;
    zero_clamped = zero_clamped > qmax ? qmax : zero_clamped;
    return scale != 0.0f ? best : zero_clamped;
}
/* The code of the IQ4 level nearest to v on value(q) = scale·level[q], as a
 * float: the count of midpoints between neighbouring levels below v/scale,
 * then settled with the exact values as llmq_grid_round_lane does; a zero
 * scale gives the level nearest zero (code 8). */
static inline float llmq_levels_round_lane(float v, float scale)
{
    const float den = scale == 0.0f ? 1.0f : scale, r = v / den;
    int q = 0;
    for (int k = 0; k < 15; k++) q += r > 0.5f * (float)(llmq_iq4nl_levels[k] + llmq_iq4nl_levels[k + 1]);
    const int down = q > 0 ? q - 1 : 0, up = q < 15 ? q + 1 : 15;
    const float e = fabsf(scale * (float)llmq_iq4nl_levels[q] - v);
    const float e_down = fabsf(scale * (float)llmq_iq4nl_levels[down] - v), e_up = fabsf(scale * (float)llmq_iq4nl_levels[up] - v);
    const int best = e_down < e ? down : e_up < e ? up : q;
    return scale != 0.0f ? (float)best : 8.0f;
}
/* The code q in [qmin, qmax] whose value(q) is nearest to v. Inline: RTN,
 * GPTQ's sweep and AWQ's fake quantization call it once per weight. */
static inline int llmq_grid_round(const llmq_grid *g, float v)
{
    if (g->levels) return (int)llmq_levels_round_lane(v, g->scale);
    return (int)llmq_grid_round_lane(v, g->scale, g->offset, (float)g->zero, (float)g->qmin, (float)g->qmax);
}
/* fminf / fmaxf exactly as glibc computes them (a NaN argument loses; on a
 * tie such as ±0 the first argument wins), inline so that loops vectorize:
 * baseline x86-64 calls libm for fminf/fmaxf. */
static inline float llmq_fminf(float a, float b) { return b < a || a != a ? b : a; }
static inline float llmq_fmaxf(float a, float b) { return b > a || a != a ? b : a; }
/* Loops over weights that vectorize are built for the CPU's widest vectors,
 * chosen at load time (GCC function multiversioning). -std=c11 keeps FMA
 * contraction off, so every variant does the baseline's IEEE operations:
 * the same bits on every CPU. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define LLMQ_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LLMQ_SIMD_CLONES
#endif

/* Σ w[i]·(value(round(x[i])) − x[i])² over len elements (w NULL: uniform),
 * accumulated in double: how well grid g serves the group. */
static inline double llmq_grid_sse(const llmq_grid *g, const float *x, int len, const float *w)
{
    double e = 0;
    for (int i = 0; i < len; i++) {
        double diff = (double)llmq_grid_value(g, llmq_grid_round(g, x[i])) - x[i];
        e += (w ? w[i] : 1.0) * diff * diff;
    }
    return e;
}

/* The real-valued grid of one group, before rounding to the type's precision:
 * value(q) = scale·(q - zero_t) + offset with zero_t the type's own zero
 * (8 for Q4_0, 32 for Q6_K, 4 for Q3_K, 0 otherwise). Symmetric types
 * (Q4_0, Q5_0, Q8_0, Q6_K, Q3_K) have offset 0 and a signed scale; Q4_1,
 * Q5_1, Q4_K and Q5_K have scale ≥ 0, and Q4_K/Q5_K offset ≤ 0. */
typedef struct { float scale, offset; } llmq_real_grid;

/* Fits one group's real grid to x[0..len): min/max (Q4_1, Q5_1, Q4_K, Q5_K) or absmax
 * (Q4_0, Q8_0, Q6_K, Q3_K) as llama.cpp's reference quantizers do; with
 * `search`, an error-minimising search over candidate scales (each refitted by
 * least squares, as ggml's make_qkx2_quants / make_qx_quants do) that scores
 * every candidate on the exact fp16 grid for Q4_0/Q4_1/Q8_0. `importance`
 * (len weights, or NULL for uniform) weights the squared error. */
llmq_real_grid llmq_grid_fit(llmq_type t, const float *x, int len, const float *importance, bool search);

/* Chooses a K-quant super-block's shared fields from the real grids of the
 * groups it holds (n_groups = 256 / group_size): d so the largest scale gets
 * the largest code (Q4_K/Q5_K: max scale / 63; Q6_K: extreme scale / -128; Q3_K:
 * extreme scale / -32) and, for Q4_K/Q5_K, dmin = max(-offset) / 63, each rounded
 * to fp16. For other types it sets zeros. */
llmq_superblock llmq_superblock_choose(llmq_type t, const llmq_real_grid *groups, int n_groups);

/* The grid type t can store nearest to `real`: Q4_0/Q8_0 d = fp16(scale);
 * Q4_1 d = fp16(scale), m = fp16(offset); K-quants keep sb's d/dmin and take
 * the nearest sub-block codes, clamped to their range (sb is ignored for the
 * other types and may be NULL for them). */
llmq_grid llmq_grid_from_real(llmq_type t, llmq_real_grid real, const llmq_superblock *sb);

/* Rounds row[0..n) onto its groups' grids: q[i] = llmq_grid_round(grid of i). */
int llmq_round_row(llmq_type t, const float *row, int n, int group_size, const llmq_grid *grids, int8_t *q);
/* out[i] = value(q[i]) for the codes llmq_round_row gives: the weights as the
 * file will decode them (fake quantization). */
int llmq_snap_row(llmq_type t, const float *row, int n, int group_size, const llmq_grid *grids, float *out);

/* Writes the ggml blocks of one row from integer codes q[i] (in the range of
 * the grid of element i's group) and the groups' grids. Checks that the grids
 * are ones the type stores (decoded values match their fields; every group of
 * a K-quant super-block shares its d/dmin) and that codes are in range. */
int llmq_pack_codes(llmq_type t, const int8_t *q, int n, int group_size, const llmq_grid *grids, void *dst);

/* llmq_round_row() then llmq_pack_codes(). */
int llmq_pack_row(llmq_type t, const float *row, int n, int group_size, const llmq_grid *grids, void *dst);

/* Reads the integer codes back out of one row of blocks (the inverse of the
 * packing in llmq_pack_codes()). */
int llmq_unpack_codes(llmq_type t, const void *src, int n, int8_t *q);
/* Reads the grids of one row of blocks back (ggml types; groups of
 * group_size, 0 = native): each group's first unit's stored fields, decoded
 * as llmq_grid_from_real decodes them, so llmq_pack_codes(t, q, n, group_size,
 * grids, dst) with the row's codes rewrites the same bytes. */
int llmq_unpack_grids(llmq_type t, const void *src, int n, int group_size, llmq_grid *grids);
/* The grid that stored fields decode to (ggml types): d and m fp16 bits
 * (Q4_0/Q5_0/Q8_0 d; Q4_1/Q5_1 d, m; K-quants the super-block d and, for Q4_K/Q5_K, dmin),
 * sc and mc the K-quant sub-block codes (the caller keeps them in range). */
llmq_grid llmq_grid_from_fields(llmq_type t, uint16_t d, uint16_t m, int sc, int mc);

#endif
