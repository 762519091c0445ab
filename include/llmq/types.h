/* Element types of weights and activations, numbered as ggml numbers them so
 * that a GGUF tensor's type id and an llmq_type are the same value. One row
 * of type traits per type (ggml's type_traits idea): dispatch by data, not by
 * switches scattered around. */
#ifndef LLMQ_TYPES_H
#define LLMQ_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum {
    LLMQ_TYPE_F32 = 0,
    LLMQ_TYPE_F16 = 1,
    LLMQ_TYPE_Q4_0 = 2,
    LLMQ_TYPE_Q4_1 = 3,
    LLMQ_TYPE_Q5_0 = 6,
    LLMQ_TYPE_Q5_1 = 7,
    LLMQ_TYPE_Q8_0 = 8,
    LLMQ_TYPE_Q2_K = 10,
    LLMQ_TYPE_Q3_K = 11,
    LLMQ_TYPE_Q4_K = 12,
    LLMQ_TYPE_Q5_K = 13,
    LLMQ_TYPE_Q6_K = 14,
    LLMQ_TYPE_Q8_K = 15,
    LLMQ_TYPE_IQ4_NL = 20,
    LLMQ_TYPE_IQ4_XS = 23,
    LLMQ_TYPE_I32 = 26,   /* safetensors int32 (GPTQ/AWQ qweight, qzeros, g_idx); not a weight format */
    LLMQ_TYPE_BF16 = 30,
    /* llmq-internal grids of Hugging Face GPTQ/AWQ checkpoints (llmq/hf_grid.h):
     * never read from or written to a GGUF file. */
    LLMQ_TYPE_HF_U4 = 36,
    LLMQ_TYPE_HF_U8 = 37,
    LLMQ_TYPE_COUNT = 40 /* upper bound of the ids above, for tables */
} llmq_type;

/* Each type's name as the CLI spells it (lower case; empty for ids llmq does
 * not know): the names of the type table's rows, and the names the block and
 * rounding code under the table (src/formats/blocks.c, rtn.c) gives in its
 * messages without reaching up to the table. */
static const char llmq_type_names[LLMQ_TYPE_COUNT][8] = {
    [LLMQ_TYPE_F32] = "f32",   [LLMQ_TYPE_F16] = "f16",   [LLMQ_TYPE_Q4_0] = "q4_0", [LLMQ_TYPE_Q4_1] = "q4_1",
    [LLMQ_TYPE_Q8_0] = "q8_0", [LLMQ_TYPE_Q3_K] = "q3_k", [LLMQ_TYPE_Q4_K] = "q4_k", [LLMQ_TYPE_Q6_K] = "q6_k",
    [LLMQ_TYPE_Q8_K] = "q8_k", [LLMQ_TYPE_BF16] = "bf16", [LLMQ_TYPE_I32] = "i32",
    [LLMQ_TYPE_Q5_0] = "q5_0", [LLMQ_TYPE_Q5_1] = "q5_1", [LLMQ_TYPE_Q5_K] = "q5_k", [LLMQ_TYPE_Q2_K] = "q2_k",
    [LLMQ_TYPE_IQ4_NL] = "iq4_nl", [LLMQ_TYPE_IQ4_XS] = "iq4_xs",
    [LLMQ_TYPE_HF_U4] = "hf_u4", [LLMQ_TYPE_HF_U8] = "hf_u8",
};

/* llmq_type_names[t], or NULL for an id llmq does not know. */
static inline const char *llmq_type_name(int t)
{
    return t >= 0 && t < LLMQ_TYPE_COUNT && llmq_type_names[t][0] ? llmq_type_names[t] : NULL;
}

typedef struct {
    const char *name;  /* "f32", "q4_k", ... (lower case, as the CLI spells it) */
    int block_size;    /* elements per block (1 for plain floats) */
    size_t type_size;  /* bytes per block */
    bool is_quantized;
    /* Decodes n elements (n a multiple of block_size). */
    void (*to_float)(const void *src, float *dst, int64_t n);
    /* Reference encoder: round-to-nearest onto the type's own grid, n a
     * multiple of block_size. NULL where not implemented. */
    void (*from_float)(const float *src, void *dst, int64_t n);
} llmq_type_traits;

/* Not a type llmq stores in GGUF files (I32, the HF grids): the GGUF reader
 * and writer refuse it and --type/--keep-* do not offer it. */
static inline bool llmq_type_internal(int t)
{
    return t == LLMQ_TYPE_I32 || t == LLMQ_TYPE_HF_U4 || t == LLMQ_TYPE_HF_U8;
}

/* The row for t, or NULL for an id llmq does not know. */
const llmq_type_traits *llmq_type_get(int t);
/* Looks a type up by name ("q4_k", "BF16", ...; case-insensitive). -1 if unknown. */
int llmq_type_from_name(const char *name);
/* Bytes needed for a row of n elements (n a multiple of the block size). */
size_t llmq_row_size(llmq_type t, int64_t n);

/* --- whole rows through the table (src/formats/types.c) --- */

/* Quantizes one row of n floats to type t (llmq_rtn_grids + llmq_pack_row).
 * F32/F16/BF16 are plain conversions (group_size ignored). */
int llmq_quantize_row(llmq_type t, const float *src, int n, int group_size, bool rtn_search, void *dst);

/* The same for `rows` rows, in parallel (OpenMP); dst holds rows ×
 * llmq_row_size(t, n) bytes. */
int llmq_quantize_rows(llmq_type t, const float *src, int64_t rows, int n, int group_size, bool rtn_search, void *dst);

/* Relative error of `rows` rows quantized as `packed` (type t) against src. */
int llmq_quant_rel_error(llmq_type t, const float *src, const void *packed, int64_t rows, int n, double *rel_error);

/* Adds Σ (src − decoded packed)² to *num and Σ src² to *den over `rows` rows
 * of type t (in parallel; the same sums at any thread count). */
int llmq_quant_error_sums(llmq_type t, const float *src, const void *packed, int64_t rows, int n, double *num, double *den);

/* --- half-precision scalars (exact decode, round-to-nearest-even encode) --- */
static inline float llmq_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t llmq_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float llmq_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do { mant <<= 1; e++; } while (!(mant & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t llmq_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);      /* NaN */
    if (absu >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);     /* overflow -> inf */
    if (absu < 0x38800000u) {                                       /* subnormal or zero */
        if (absu < 0x33000000u) return (uint16_t)sign;              /* below half the smallest subnormal */
        uint32_t mant = (absu & 0x7fffffu) | 0x800000u;
        int shift = 113 - (int)(absu >> 23) + 13;                   /* 14..24 */
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = ((absu >> 13) - (112u << 10));
    uint32_t rem = absu & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

#endif
