/* ggml block formats: reference dequantizers and encoders, grid construction
 * and packing (the type table above them, src/formats/types.c, lists them as
 * the block types' rows). Layouts as in llama.cpp ggml/src/ggml-common.h; the
 * arithmetic of every dequantizer follows ggml-quants.c dequantize_row_* so
 * that a grid's value(q) and the decoded file agree bit for bit. */
#include "llmq/blocks.h"
#include "llmq/error.h"
#include "llmq/hf_grid.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static inline float h2f(uint16_t h) { return llmq_f16_to_f32(h); }

/* fp16 bits of x, saturated to the largest finite half instead of inf. */
static inline uint16_t f2h_sat(float x)
{
    if (x > 65504.0f) x = 65504.0f;
    if (x < -65504.0f) x = -65504.0f;
    return llmq_f32_to_f16(x);
}

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Nearest integer (ties to even, as ggml's nearest_int), clamped to [lo, hi]
 * before conversion so that huge, infinite or NaN inputs stay defined. */
static inline int round_clamp(float v, int lo, int hi) { return llmq_round_clamp(v, lo, hi); }

/* ------------------------------------------------------------------ decode */

void llmq_dequant_q4_0(const void *src, float *dst, int64_t n)
{
    const llmq_block_q4_0 *b = src;
    for (int64_t i = 0; i < n / LLMQ_QK; i++, dst += LLMQ_QK) {
        const float d = h2f(b[i].d);
        for (int j = 0; j < 16; j++) {
            dst[j] = (float)((b[i].qs[j] & 0xF) - 8) * d;
            dst[j + 16] = (float)((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

void llmq_dequant_q4_1(const void *src, float *dst, int64_t n)
{
    const llmq_block_q4_1 *b = src;
    for (int64_t i = 0; i < n / LLMQ_QK; i++, dst += LLMQ_QK) {
        const float d = h2f(b[i].d), m = h2f(b[i].m);
        for (int j = 0; j < 16; j++) {
            dst[j] = (float)(b[i].qs[j] & 0xF) * d + m;
            dst[j + 16] = (float)(b[i].qs[j] >> 4) * d + m;
        }
    }
}

/* The 5-bit codes of one Q5_0/Q5_1 block: element j's fifth bit is bit j of qh. */
static inline void q5_block_codes(const uint8_t qs[16], const uint8_t qh[4], int q[32])
{
    uint32_t h;
    memcpy(&h, qh, 4);
    for (int j = 0; j < 16; j++) {
        q[j] = (qs[j] & 0xF) | (int)(((h >> j) & 1u) << 4);
        q[j + 16] = (qs[j] >> 4) | (int)(((h >> (j + 16)) & 1u) << 4);
    }
}

void llmq_dequant_q5_0(const void *src, float *dst, int64_t n)
{
    const llmq_block_q5_0 *b = src;
    for (int64_t i = 0; i < n / LLMQ_QK; i++, dst += LLMQ_QK) {
        const float d = h2f(b[i].d);
        int q[32];
        q5_block_codes(b[i].qs, b[i].qh, q);
        for (int j = 0; j < 32; j++) dst[j] = (float)(q[j] - 16) * d;
    }
}

void llmq_dequant_q5_1(const void *src, float *dst, int64_t n)
{
    const llmq_block_q5_1 *b = src;
    for (int64_t i = 0; i < n / LLMQ_QK; i++, dst += LLMQ_QK) {
        const float d = h2f(b[i].d), m = h2f(b[i].m);
        int q[32];
        q5_block_codes(b[i].qs, b[i].qh, q);
        for (int j = 0; j < 32; j++) dst[j] = (float)q[j] * d + m;
    }
}

void llmq_dequant_q8_0(const void *src, float *dst, int64_t n)
{
    const llmq_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / LLMQ_QK; i++, dst += LLMQ_QK) {
        const float d = h2f(b[i].d);
        for (int j = 0; j < 32; j++) dst[j] = (float)b[i].qs[j] * d;
    }
}

void llmq_q4_k_get_scale_min(const uint8_t s[12], int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

static void q4_k_set_scale_min(uint8_t s[12], int j, int sc, int m)
{
    if (j < 4) {
        s[j] = (uint8_t)((s[j] & 0xC0) | sc);
        s[j + 4] = (uint8_t)((s[j + 4] & 0xC0) | m);
    } else {
        s[j + 4] = (uint8_t)((sc & 0xF) | ((m & 0xF) << 4));
        s[j - 4] = (uint8_t)((s[j - 4] & 0x3F) | ((sc >> 4) << 6));
        s[j] = (uint8_t)((s[j] & 0x3F) | ((m >> 4) << 6));
    }
}

void llmq_dequant_q4_k(const void *src, float *dst, int64_t n)
{
    const llmq_block_q4_k *b = src;
    for (int64_t i = 0; i < n / LLMQ_QK_K; i++) {
        const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        const uint8_t *q = b[i].qs;
        for (int c = 0; c < 4; c++, q += 32) {
            int sc, m;
            llmq_q4_k_get_scale_min(b[i].scales, 2 * c, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            llmq_q4_k_get_scale_min(b[i].scales, 2 * c + 1, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++) *dst++ = d1 * (float)(q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *dst++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

void llmq_dequant_q5_k(const void *src, float *dst, int64_t n)
{
    const llmq_block_q5_k *b = src;
    for (int64_t i = 0; i < n / LLMQ_QK_K; i++) {
        const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        for (int c = 0; c < 4; c++) {
            int sc, m;
            llmq_q4_k_get_scale_min(b[i].scales, 2 * c, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            llmq_q4_k_get_scale_min(b[i].scales, 2 * c + 1, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            const uint8_t *ql = b[i].qs + 32 * c;
            for (int l = 0; l < 32; l++) *dst++ = d1 * (float)((ql[l] & 0xF) + (b[i].qh[l] >> (2 * c) & 1) * 16) - m1;
            for (int l = 0; l < 32; l++) *dst++ = d2 * (float)((ql[l] >> 4) + (b[i].qh[l] >> (2 * c + 1) & 1) * 16) - m2;
        }
    }
}

void llmq_dequant_q2_k(const void *src, float *dst, int64_t n)
{
    const llmq_block_q2_k *b = src;
    for (int64_t i = 0; i < n / LLMQ_QK_K; i++)
        for (int j = 0; j < 16; j++) { /* sub-block j: elements 16j..16j+15 */
            const float dl = h2f(b[i].d) * (float)(b[i].scales[j] & 0xF), ml = h2f(b[i].dmin) * (float)(b[i].scales[j] >> 4);
            const uint8_t *q = b[i].qs + 32 * (j / 8) + 16 * (j % 2);
            const int shift = 2 * ((j % 8) / 2);
            for (int l = 0; l < 16; l++) *dst++ = dl * (float)((q[l] >> shift) & 3) - ml;
        }
}

void llmq_dequant_iq4_nl(const void *src, float *dst, int64_t n)
{
    const llmq_block_iq4_nl *b = src;
    for (int64_t i = 0; i < n / LLMQ_QK; i++, dst += LLMQ_QK) {
        const float d = h2f(b[i].d);
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)llmq_iq4nl_levels[b[i].qs[j] & 0xF];
            dst[j + 16] = d * (float)llmq_iq4nl_levels[b[i].qs[j] >> 4];
        }
    }
}

void llmq_dequant_iq4_xs(const void *src, float *dst, int64_t n)
{
    const llmq_block_iq4_xs *b = src;
    for (int64_t i = 0; i < n / LLMQ_QK_K; i++)
        for (int ib = 0; ib < 8; ib++, dst += 32) {
            const float dl = h2f(b[i].d) * (float)llmq_iq4_xs_scale(&b[i], ib);
            const uint8_t *qs = b[i].qs + 16 * ib;
            for (int j = 0; j < 16; j++) {
                dst[j] = dl * (float)llmq_iq4nl_levels[qs[j] & 0xF];
                dst[j + 16] = dl * (float)llmq_iq4nl_levels[qs[j] >> 4];
            }
        }
}

void llmq_dequant_q6_k(const void *src, float *dst, int64_t n)
{
    const llmq_block_q6_k *b = src;
    for (int64_t i = 0; i < n / LLMQ_QK_K; i++) {
        const float d = h2f(b[i].d);
        for (int h = 0; h < 2; h++, dst += 128) {
            const uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            const int8_t *sc = b[i].scales + 8 * h;
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                dst[l] = d * (float)sc[is] * (float)q1;
                dst[l + 32] = d * (float)sc[is + 2] * (float)q2;
                dst[l + 64] = d * (float)sc[is + 4] * (float)q3;
                dst[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

int llmq_q3_k_get_scale(const uint8_t s[12], int j)
{
    int low = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
    int high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (low | (high << 4)) - 32;
}

static void q3_k_set_scale(uint8_t s[12], int j, int code)
{
    int l = code + 32; /* 0..63 */
    if (j < 8) s[j] = (uint8_t)((s[j] & 0xF0) | (l & 0xF));
    else s[j - 8] = (uint8_t)((s[j - 8] & 0x0F) | ((l & 0xF) << 4));
    int sh = 2 * (j / 4);
    s[8 + j % 4] = (uint8_t)((s[8 + j % 4] & ~(3 << sh)) | ((l >> 4) << sh));
}

void llmq_dequant_q3_k(const void *src, float *dst, int64_t n)
{
    const llmq_block_q3_k *b = src;
    for (int64_t i = 0; i < n / LLMQ_QK_K; i++) {
        const float d = h2f(b[i].d);
        for (int e = 0; e < LLMQ_QK_K; e += 16) {
            /* element e+l: 2 low bits at qs[32·(e/128) + (e+l)%32] >> 2·((e/32)%4),
             * high bit at hmask[(e+l)%32] bit (e/32) */
            const float dl = d * (float)llmq_q3_k_get_scale(b[i].scales, e / 16);
            const uint8_t *q = b[i].qs + 32 * (e / 128);
            const int shift = 2 * ((e / 32) % 4), hbit = e / 32;
            for (int l = 0; l < 16; l++) {
                const int k = (e + l) % 32;
                const int lo = (q[k] >> shift) & 3;
                const int hi = (b[i].hmask[k] >> hbit) & 1;
                dst[e + l] = dl * (float)(lo - (hi ? 0 : 4));
            }
        }
        dst += LLMQ_QK_K;
    }
}

void llmq_dequant_q8_k(const void *src, float *dst, int64_t n)
{
    const llmq_block_q8_k *b = src;
    for (int64_t i = 0; i < n / LLMQ_QK_K; i++, dst += LLMQ_QK_K)
        for (int j = 0; j < LLMQ_QK_K; j++) dst[j] = b[i].d * (float)b[i].qs[j];
}

/* ------------------------------------------- ggml's reference RTN encoders */

/* quantize_row_q4_0_ref: d = (value of largest magnitude) / -8, computed and
 * applied in fp32 (the file stores fp16(d)). */
void llmq_encode_ref_q4_0(const float *x, void *dst, int64_t n)
{
    llmq_block_q4_0 *y = dst;
    for (int64_t i = 0; i < n / LLMQ_QK; i++, x += LLMQ_QK) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < LLMQ_QK; j++)
            if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        const float d = max / -8, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = llmq_f32_to_f16(d);
        for (int j = 0; j < 16; j++) {
            int a = clampi((int)(int8_t)(x[j] * id + 8.5f), 0, 15);
            int b = clampi((int)(int8_t)(x[j + 16] * id + 8.5f), 0, 15);
            y[i].qs[j] = (uint8_t)(a | (b << 4));
        }
    }
}

/* quantize_row_q4_1_ref: d = (max - min) / 15, m = min. */
void llmq_encode_ref_q4_1(const float *x, void *dst, int64_t n)
{
    llmq_block_q4_1 *y = dst;
    for (int64_t i = 0; i < n / LLMQ_QK; i++, x += LLMQ_QK) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < LLMQ_QK; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 15, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = llmq_f32_to_f16(d);
        y[i].m = llmq_f32_to_f16(min);
        for (int j = 0; j < 16; j++) {
            int a = clampi((int)(int8_t)((x[j] - min) * id + 0.5f), 0, 15);
            int b = clampi((int)(int8_t)((x[j + 16] - min) * id + 0.5f), 0, 15);
            y[i].qs[j] = (uint8_t)(a | (b << 4));
        }
    }
}

/* quantize_row_q8_0_ref: d = absmax / 127, q = round(x / d) half away from zero. */
void llmq_encode_ref_q8_0(const float *x, void *dst, int64_t n)
{
    llmq_block_q8_0 *y = dst;
    for (int64_t i = 0; i < n / LLMQ_QK; i++, x += LLMQ_QK) {
        float amax = 0.0f;
        for (int j = 0; j < LLMQ_QK; j++) amax = llmq_fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = llmq_f32_to_f16(d);
        for (int j = 0; j < LLMQ_QK; j++) y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

/* Q8_K as ggml's activation quantizer: d = (value of largest magnitude) / -128. */
void llmq_encode_ref_q8_k(const float *x, void *dst, int64_t n)
{
    llmq_block_q8_k *y = dst;
    for (int64_t i = 0; i < n / LLMQ_QK_K; i++, x += LLMQ_QK_K) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < LLMQ_QK_K; j++)
            if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        memset(&y[i], 0, sizeof y[i]);
        if (amax == 0.0f) continue;
        const float iscale = -128.0f / max;
        for (int j = 0; j < LLMQ_QK_K; j++) {
            y[i].qs[j] = (int8_t)round_clamp(iscale * x[j], -128, 127);
            y[i].bsums[j / 16] = (int16_t)(y[i].bsums[j / 16] + y[i].qs[j]);
        }
        y[i].d = 1.0f / iscale;
    }
}

/* ------------------------------------------------------------------ grids */

int llmq_grid_unit(llmq_type t)
{
    switch (t) {
    case LLMQ_TYPE_Q4_0: case LLMQ_TYPE_Q4_1: case LLMQ_TYPE_Q5_0: case LLMQ_TYPE_Q5_1: case LLMQ_TYPE_Q8_0:
    case LLMQ_TYPE_Q4_K: case LLMQ_TYPE_Q5_K: case LLMQ_TYPE_IQ4_NL: case LLMQ_TYPE_IQ4_XS: return 32;
    case LLMQ_TYPE_HF_U4: case LLMQ_TYPE_HF_U8: return 32;
    case LLMQ_TYPE_Q6_K: case LLMQ_TYPE_Q3_K: case LLMQ_TYPE_Q2_K: return 16;
    default: return 0;
    }
}

bool llmq_type_is_k(llmq_type t)
{
    return t == LLMQ_TYPE_Q4_K || t == LLMQ_TYPE_Q5_K || t == LLMQ_TYPE_Q6_K || t == LLMQ_TYPE_Q3_K || t == LLMQ_TYPE_Q2_K ||
           t == LLMQ_TYPE_IQ4_XS;
}

int llmq_group_resolve(llmq_type t, int group_size)
{
    return group_size == 0 ? llmq_grid_unit(t) : group_size;
}

static const char *type_name(llmq_type t)
{
    const char *name = llmq_type_name(t);
    return name ? name : "?";
}

/* Elements per block of a type with grids (llmq_grid_unit(t) > 0). */
static int grid_block_size(llmq_type t) { return llmq_type_is_k(t) ? LLMQ_QK_K : LLMQ_QK; }

int llmq_group_check(llmq_type t, int n, int group_size)
{
    const char *name = llmq_type_name(t);
    int unit = llmq_grid_unit(t);
    if (!name || unit == 0) return llmq_error("quantize: type %d (%s) has no quantization grid", (int)t, name ? name : "unknown");
    const int block_size = grid_block_size(t);
    if (n <= 0 || n % block_size)
        return llmq_error("quantize: %s needs rows of a multiple of %d elements, got %d", name, block_size, n);
    if (group_size <= 0 || group_size % unit)
        return llmq_error("quantize: %s cannot express group size %d (it must be a positive multiple of %d)", name, group_size, unit);
    if (llmq_type_is_k(t) && LLMQ_QK_K % group_size)
        return llmq_error("quantize: %s cannot express group size %d (groups must divide its 256-element super-block: %d..256, powers of two)",
                          name, group_size, unit);
    return LLMQ_OK;
}

/* The integer code whose value is zero, and the code range. */
static void type_codes(llmq_type t, int *zero, int *qmin, int *qmax)
{
    switch (t) {
    case LLMQ_TYPE_Q4_0: *zero = 8; *qmin = 0; *qmax = 15; break;
    case LLMQ_TYPE_Q4_1: case LLMQ_TYPE_Q4_K: *zero = 0; *qmin = 0; *qmax = 15; break;
    case LLMQ_TYPE_Q5_0: *zero = 16; *qmin = 0; *qmax = 31; break;
    case LLMQ_TYPE_Q5_1: case LLMQ_TYPE_Q5_K: *zero = 0; *qmin = 0; *qmax = 31; break;
    case LLMQ_TYPE_Q8_0: *zero = 0; *qmin = -127; *qmax = 127; break;
    case LLMQ_TYPE_Q6_K: *zero = 32; *qmin = 0; *qmax = 63; break;
    case LLMQ_TYPE_Q3_K: *zero = 4; *qmin = 0; *qmax = 7; break;
    case LLMQ_TYPE_Q2_K: *zero = 0; *qmin = 0; *qmax = 3; break;
    case LLMQ_TYPE_IQ4_NL: case LLMQ_TYPE_IQ4_XS: *zero = 0; *qmin = 0; *qmax = 15; break; /* codes index the levels */
    default: *zero = 0; *qmin = 0; *qmax = 0; break;
    }
}

/* A grid of type t with its code range and zero, every field else 0. */
static llmq_grid grid_blank(llmq_type t)
{
    llmq_grid g;
    memset(&g, 0, sizeof g);
    int zero, qmin, qmax;
    type_codes(t, &zero, &qmin, &qmax);
    g.zero = (int16_t)zero;
    g.qmin = (int16_t)qmin;
    g.qmax = (int16_t)qmax;
    g.levels = t == LLMQ_TYPE_IQ4_NL || t == LLMQ_TYPE_IQ4_XS;
    return g;
}

llmq_grid llmq_grid_from_real(llmq_type t, llmq_real_grid real, const llmq_superblock *sb)
{
    if (llmq_type_is_hf(t)) return llmq_hf_grid_from_real(t, real);
    llmq_grid g = grid_blank(t);
    switch (t) {
    case LLMQ_TYPE_Q4_0:
    case LLMQ_TYPE_Q5_0:
    case LLMQ_TYPE_Q8_0:
    case LLMQ_TYPE_IQ4_NL:
        g.d = f2h_sat(real.scale);
        g.scale = h2f(g.d);
        break;
    case LLMQ_TYPE_Q4_1:
    case LLMQ_TYPE_Q5_1:
        g.d = f2h_sat(real.scale);
        g.m = f2h_sat(real.offset);
        g.scale = h2f(g.d);
        g.offset = h2f(g.m);
        break;
    case LLMQ_TYPE_Q4_K:
    case LLMQ_TYPE_Q5_K:
    case LLMQ_TYPE_Q2_K: {
        g.d = sb ? sb->d : 0;
        g.m = sb ? sb->dmin : 0;
        float d = h2f(g.d), dmin = h2f(g.m);
        const int cmax = t == LLMQ_TYPE_Q2_K ? 15 : 63;
        g.sc = (int16_t)(d != 0.0f ? round_clamp(real.scale / d, 0, cmax) : 0);
        g.mc = (int16_t)(dmin != 0.0f ? round_clamp(-real.offset / dmin, 0, cmax) : 0);
        g.scale = d * (float)g.sc;
        g.offset = -(dmin * (float)g.mc);
        break;
    }
    case LLMQ_TYPE_Q6_K:
    case LLMQ_TYPE_Q3_K:
    case LLMQ_TYPE_IQ4_XS: {
        g.d = sb ? sb->d : 0;
        float d = h2f(g.d);
        int lo = t == LLMQ_TYPE_Q6_K ? -128 : -32, hi = t == LLMQ_TYPE_Q6_K ? 127 : 31;
        g.sc = (int16_t)(d != 0.0f ? round_clamp(real.scale / d, lo, hi) : 0);
        g.scale = d * (float)g.sc;
        break;
    }
    default:
        break;
    }
    return g;
}

llmq_superblock llmq_superblock_choose(llmq_type t, const llmq_real_grid *groups, int n_groups)
{
    llmq_superblock sb = {0, 0};
    if (t == LLMQ_TYPE_Q4_K || t == LLMQ_TYPE_Q5_K || t == LLMQ_TYPE_Q2_K) {
        /* the largest scale and min get the largest sub-block code: 63, Q2_K's 15 */
        const float cmax = t == LLMQ_TYPE_Q2_K ? 15.0f : 63.0f;
        float max_scale = 0.0f, max_min = 0.0f;
        for (int g = 0; g < n_groups; g++) {
            max_scale = llmq_fmaxf(max_scale, groups[g].scale);
            max_min = llmq_fmaxf(max_min, -groups[g].offset);
        }
        sb.d = f2h_sat(max_scale / cmax);
        sb.dmin = f2h_sat(max_min / cmax);
    } else if (t == LLMQ_TYPE_Q6_K || t == LLMQ_TYPE_Q3_K || t == LLMQ_TYPE_IQ4_XS) {
        /* The scale of largest magnitude gets the most negative code, whose
         * magnitude is one larger than the most positive (ggml does the same). */
        float ext = 0.0f;
        for (int g = 0; g < n_groups; g++)
            if (fabsf(groups[g].scale) > fabsf(ext)) ext = groups[g].scale;
        sb.d = f2h_sat(ext / (t == LLMQ_TYPE_Q6_K ? -128.0f : -32.0f)); /* Q3_K, IQ4_XS: 6-bit codes -32..31 */
    }
    return sb;
}

/* Scores a real grid: on the exact stored grid for the types whose grid does
 * not depend on a super-block, on the real grid itself for K-quants. */
static double real_sse(llmq_type t, llmq_real_grid r, const float *x, int len, const float *w)
{
    llmq_grid g;
    if (llmq_type_is_k(t)) {
        g = grid_blank(t);
        g.scale = r.scale;
        g.offset = r.offset;
    } else {
        g = llmq_grid_from_real(t, r, NULL);
    }
    return llmq_grid_sse(&g, x, len, w);
}

/* The smallest and largest of x[0..len) as a sequential fminf / fmaxf scan
 * finds them. Vector lanes find the same values whenever they are nonzero
 * numbers; a zero extreme (whose sign depends on which zero came first) or a
 * NaN anywhere takes the sequential scan. */
static LLMQ_SIMD_CLONES void value_range(const float *x, int len, float *lo_out, float *hi_out)
{
    float lo = x[0], hi = x[0];
    int nan = 0;
    #pragma omp simd reduction(min : lo) reduction(max : hi) reduction(| : nan)
    for (int i = 0; i < len; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
        nan |= x[i] != x[i];
    }
    if (nan || lo == 0.0f || hi == 0.0f) {
        lo = hi = x[0];
        for (int i = 1; i < len; i++) {
            lo = llmq_fminf(lo, x[i]);
            hi = llmq_fmaxf(hi, x[i]);
        }
    }
    *lo_out = lo;
    *hi_out = hi;
}

/* Asymmetric grids (Q4_1, Q5_1, Q4_K, Q5_K): value = scale·q + offset, q in 0..nmax. The
 * search follows make_qkx2_quants: for a range of inverse scales, round, then
 * refit (scale, offset) by weighted least squares and keep the best. */
static llmq_real_grid fit_asymmetric(llmq_type t, const float *x, int len, const float *w, bool search)
{
    int zero, qmin, nmax;
    type_codes(t, &zero, &qmin, &nmax);
    const bool nonpositive_offset = t == LLMQ_TYPE_Q4_K || t == LLMQ_TYPE_Q5_K || t == LLMQ_TYPE_Q2_K; /* they store offset = -dmin·m, m ≥ 0 */
    float lo, hi;
    value_range(x, len, &lo, &hi);
    if (nonpositive_offset && lo > 0) lo = 0;
    llmq_real_grid best = {0.0f, lo};
    if (!(hi > lo)) return best; /* constant group (or NaN) */
    best.scale = (hi - lo) / nmax;
    if (!search) return best;
    double best_err = real_sse(t, best, x, len, w);
    for (int step = 0; step <= 20; step++) {
        float iscale = (nmax - 1.0f + 0.1f * step) / (hi - lo);
        double sw = 0, sl = 0, sl2 = 0, sx = 0, sxl = 0;
        for (int i = 0; i < len; i++) {
            int l = round_clamp(iscale * (x[i] - lo), 0, nmax);
            double wi = w ? w[i] : 1.0;
            sw += wi; sl += wi * l; sl2 += wi * l * l; sx += wi * x[i]; sxl += wi * l * x[i];
        }
        double det = sw * sl2 - sl * sl;
        if (det <= 0) continue;
        llmq_real_grid cand = {(float)((sw * sxl - sx * sl) / det), (float)((sl2 * sx - sl * sxl) / det)};
        if (nonpositive_offset && cand.offset > 0) {
            cand.offset = 0;
            cand.scale = (float)(sxl / sl2);
        }
        if (!(cand.scale > 0)) continue;
        double err = real_sse(t, cand, x, len, w);
        if (err < best_err) {
            best_err = err;
            best = cand;
        }
    }
    return best;
}

/* Symmetric grids: value = scale·k, k in [kmin, kmax] (k = q - zero). Plain:
 * the element of largest magnitude lands on kmin (ggml's d = max / -8 for
 * Q4_0), except Q8_0 whose range is symmetric (d = absmax / 127). The search
 * follows make_qx_quants: nudge the inverse scale, refit by least squares. */
static llmq_real_grid fit_symmetric(llmq_type t, const float *x, int len, const float *w, bool search)
{
    int zero, qmin, qmax;
    type_codes(t, &zero, &qmin, &qmax);
    const int kmin = qmin - zero, kmax = qmax - zero;
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < len; i++)
        if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); max = x[i]; }
    llmq_real_grid best = {0.0f, 0.0f};
    if (!(amax > 0)) return best;
    best.scale = t == LLMQ_TYPE_Q8_0 ? amax / (float)kmax : max / (float)kmin;
    if (!search) return best;
    double best_err = real_sse(t, best, x, len, w);
    for (int step = -9; step <= 9; step++) {
        if (step == 0) continue;
        float iscale = 1.0f / best.scale * (1.0f + 0.1f * step / (float)-kmin);
        double sxl = 0, sl2 = 0;
        for (int i = 0; i < len; i++) {
            int l = round_clamp(iscale * x[i], kmin, kmax);
            double wi = w ? w[i] : 1.0;
            sxl += wi * l * x[i]; sl2 += wi * l * l;
        }
        if (sl2 <= 0) continue;
        llmq_real_grid cand = {(float)(sxl / sl2), 0.0f};
        double err = real_sse(t, cand, x, len, w);
        if (err < best_err) {
            best_err = err;
            best = cand;
        }
    }
    return best;
}

/* Grids on the IQ4 levels: value = scale·level. Plain: the element of largest
 * magnitude lands on the level −127 (as ggml's d = max / values[0]), then the
 * scale is refitted by least squares on the codes that gives. The search
 * also tries putting it on −127 + k for |k| ≤ 7 (ggml's ntry), each refitted,
 * and keeps the best on the exact grid. */
static llmq_real_grid fit_levels(llmq_type t, const float *x, int len, const float *w, bool search)
{
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < len; i++)
        if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); max = x[i]; }
    llmq_real_grid best = {0.0f, 0.0f};
    if (!(amax > 0)) return best;
    const float l0 = (float)llmq_iq4nl_levels[0];
    double best_err = INFINITY;
    for (int step = search ? -7 : 0; step <= (search ? 7 : 0); step++) {
        const float scale = max / (l0 + (float)step);
        double sxl = 0, sl2 = 0;
        for (int i = 0; i < len; i++) {
            const double l = llmq_iq4nl_levels[(int)llmq_levels_round_lane(x[i], scale)], wi = w ? w[i] : 1.0;
            sxl += wi * l * x[i];
            sl2 += wi * l * l;
        }
        llmq_real_grid cand = {sl2 > 0 ? (float)(sxl / sl2) : scale, 0.0f};
        const double err = real_sse(t, cand, x, len, w);
        if (err < best_err) {
            best_err = err;
            best = cand;
        }
    }
    return best;
}

llmq_real_grid llmq_grid_fit(llmq_type t, const float *x, int len, const float *importance, bool search)
{
    llmq_real_grid none = {0.0f, 0.0f};
    if (len <= 0) return none;
    if (llmq_type_is_hf(t)) return llmq_hf_grid_fit(t, x, len, importance, search);
    if (llmq_type_has_min(t)) return fit_asymmetric(t, x, len, importance, search);
    if (t == LLMQ_TYPE_IQ4_NL || t == LLMQ_TYPE_IQ4_XS) return fit_levels(t, x, len, importance, search);
    if (llmq_grid_unit(t) == 0) return none;
    return fit_symmetric(t, x, len, importance, search);
}

/* ---------------------------------------------------------------- packing */

/* The grid of element i. */
static inline const llmq_grid *grid_of(const llmq_grid *grids, int group_size, int i)
{
    return &grids[i / group_size];
}

/* One group's codes: the grid's fields once, then every weight in vector lanes. */
static LLMQ_SIMD_CLONES void round_group(const llmq_grid *g, const float *x, int len, int8_t *q)
{
    if (g->levels) {
        for (int i = 0; i < len; i++) q[i] = (int8_t)llmq_grid_round(g, x[i]);
        return;
    }
    const float scale = g->scale, offset = g->offset, zero = g->zero, qmin = g->qmin, qmax = g->qmax;
    #pragma omp simd
    for (int i = 0; i < len; i++) q[i] = (int8_t)(int)llmq_grid_round_lane(x[i], scale, offset, zero, qmin, qmax);
}

/* One group's decoded values value(round(x)), as round_group. */
static LLMQ_SIMD_CLONES void snap_group(const llmq_grid *g, const float *x, int len, float *out)
{
    if (g->levels) {
        for (int i = 0; i < len; i++) out[i] = llmq_grid_value(g, llmq_grid_round(g, x[i]));
        return;
    }
    const float scale = g->scale, offset = g->offset, zero = g->zero, qmin = g->qmin, qmax = g->qmax;
    #pragma omp simd
    for (int i = 0; i < len; i++) out[i] = scale * (llmq_grid_round_lane(x[i], scale, offset, zero, qmin, qmax) - zero) + offset;
}

int llmq_snap_row(llmq_type t, const float *row, int n, int group_size, const llmq_grid *grids, float *out)
{
    group_size = llmq_group_resolve(t, group_size);
    if (llmq_group_check(t, n, group_size) != LLMQ_OK) return LLMQ_ERR;
    for (int start = 0; start < n; start += group_size)
        snap_group(&grids[start / group_size], row + start, n - start < group_size ? n - start : group_size, out + start);
    return LLMQ_OK;
}

int llmq_round_row(llmq_type t, const float *row, int n, int group_size, const llmq_grid *grids, int8_t *q)
{
    group_size = llmq_group_resolve(t, group_size);
    if (llmq_group_check(t, n, group_size) != LLMQ_OK) return LLMQ_ERR;
    for (int start = 0; start < n; start += group_size)
        round_group(&grids[start / group_size], row + start, n - start < group_size ? n - start : group_size, q + start);
    return LLMQ_OK;
}

/* Is g a grid type t stores (its decoded values match its fields)? */
static bool grid_is_stored(llmq_type t, const llmq_grid *g)
{
    int zero, qmin, qmax;
    type_codes(t, &zero, &qmin, &qmax);
    if (g->zero != zero || g->qmin != qmin || g->qmax != qmax || g->levels != (t == LLMQ_TYPE_IQ4_NL || t == LLMQ_TYPE_IQ4_XS)) return false;
    switch (t) {
    case LLMQ_TYPE_Q4_0: case LLMQ_TYPE_Q5_0: case LLMQ_TYPE_Q8_0:
        return g->scale == h2f(g->d) && g->offset == 0.0f;
    case LLMQ_TYPE_Q4_1: case LLMQ_TYPE_Q5_1:
        return g->scale == h2f(g->d) && g->offset == h2f(g->m);
    case LLMQ_TYPE_Q4_K: case LLMQ_TYPE_Q5_K:
        return g->sc >= 0 && g->sc <= 63 && g->mc >= 0 && g->mc <= 63 && g->scale == h2f(g->d) * (float)g->sc &&
               g->offset == -(h2f(g->m) * (float)g->mc);
    case LLMQ_TYPE_Q2_K:
        return g->sc >= 0 && g->sc <= 15 && g->mc >= 0 && g->mc <= 15 && g->scale == h2f(g->d) * (float)g->sc &&
               g->offset == -(h2f(g->m) * (float)g->mc);
    case LLMQ_TYPE_Q6_K:
        return g->sc >= -128 && g->sc <= 127 && g->scale == h2f(g->d) * (float)g->sc && g->offset == 0.0f;
    case LLMQ_TYPE_Q3_K:
    case LLMQ_TYPE_IQ4_XS:
        return g->sc >= -32 && g->sc <= 31 && g->scale == h2f(g->d) * (float)g->sc && g->offset == 0.0f;
    case LLMQ_TYPE_IQ4_NL:
        return g->scale == h2f(g->d) && g->offset == 0.0f;
    default:
        return false;
    }
}

/* Is any of q[0..len) outside [lo, hi]? */
static LLMQ_SIMD_CLONES bool codes_outside(const int8_t *q, int len, int lo, int hi)
{
    int outside = 0;
    #pragma omp simd reduction(| : outside)
    for (int i = 0; i < len; i++) outside |= (q[i] < lo) | (q[i] > hi);
    return outside != 0;
}

int llmq_pack_codes(llmq_type t, const int8_t *q, int n, int group_size, const llmq_grid *grids, void *dst)
{
    group_size = llmq_group_resolve(t, group_size);
    if (llmq_group_check(t, n, group_size) != LLMQ_OK) return LLMQ_ERR;
    if (llmq_type_is_hf(t)) return llmq_hf_pack_codes(t, q, n, group_size, grids, dst);
    const int ng = llmq_group_count(n, group_size);
    for (int g = 0; g < ng; g++) {
        /* NaN scales compare unequal to themselves and are rejected here too. */
        if (!grid_is_stored(t, &grids[g]))
            return llmq_error("pack %s: grid of group %d is not one the type stores (scale %g offset %g do not decode from its fields)",
                              type_name(t), g, (double)grids[g].scale, (double)grids[g].offset);
        if (llmq_type_is_k(t)) {
            const llmq_grid *first = grid_of(grids, group_size, (g * group_size / LLMQ_QK_K) * LLMQ_QK_K);
            if (grids[g].d != first->d || grids[g].m != first->m)
                return llmq_error("pack %s: group %d does not share its super-block's d/dmin", type_name(t), g);
        }
    }
    for (int start = 0; start < n; start += group_size) {
        const llmq_grid *g = &grids[start / group_size];
        const int end = n - start < group_size ? n : start + group_size;
        const bool outside = codes_outside(q + start, end - start, g->qmin, g->qmax);
        for (int i = start; outside && i < end; i++)
            if (q[i] < g->qmin || q[i] > g->qmax)
                return llmq_error("pack %s: code %d of element %d is outside %d..%d", type_name(t), q[i], i, g->qmin, g->qmax);
    }
    switch (t) {
    case LLMQ_TYPE_Q4_0:
    case LLMQ_TYPE_Q4_1: {
        for (int b = 0; b < n / LLMQ_QK; b++) {
            const llmq_grid *g = grid_of(grids, group_size, b * LLMQ_QK);
            const int8_t *qb = q + b * LLMQ_QK;
            uint8_t *qs;
            if (t == LLMQ_TYPE_Q4_0) {
                llmq_block_q4_0 *y = (llmq_block_q4_0 *)dst + b;
                y->d = g->d;
                qs = y->qs;
            } else {
                llmq_block_q4_1 *y = (llmq_block_q4_1 *)dst + b;
                y->d = g->d;
                y->m = g->m;
                qs = y->qs;
            }
            for (int j = 0; j < 16; j++) qs[j] = (uint8_t)(qb[j] | (qb[j + 16] << 4));
        }
        break;
    }
    case LLMQ_TYPE_Q5_0:
    case LLMQ_TYPE_Q5_1:
        for (int b = 0; b < n / LLMQ_QK; b++) {
            const llmq_grid *g = grid_of(grids, group_size, b * LLMQ_QK);
            const int8_t *qb = q + b * LLMQ_QK;
            uint8_t *qs, *qh;
            if (t == LLMQ_TYPE_Q5_0) {
                llmq_block_q5_0 *y = (llmq_block_q5_0 *)dst + b;
                y->d = g->d;
                qs = y->qs, qh = y->qh;
            } else {
                llmq_block_q5_1 *y = (llmq_block_q5_1 *)dst + b;
                y->d = g->d;
                y->m = g->m;
                qs = y->qs, qh = y->qh;
            }
            uint32_t h = 0;
            for (int j = 0; j < 32; j++) h |= (uint32_t)((qb[j] >> 4) & 1) << j;
            for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((qb[j] & 0xF) | ((qb[j + 16] & 0xF) << 4));
            memcpy(qh, &h, 4);
        }
        break;
    case LLMQ_TYPE_Q8_0:
        for (int b = 0; b < n / LLMQ_QK; b++) {
            llmq_block_q8_0 *y = (llmq_block_q8_0 *)dst + b;
            y->d = grid_of(grids, group_size, b * LLMQ_QK)->d;
            memcpy(y->qs, q + b * LLMQ_QK, LLMQ_QK);
        }
        break;
    case LLMQ_TYPE_Q4_K:
        for (int b = 0; b < n / LLMQ_QK_K; b++) {
            llmq_block_q4_k *y = (llmq_block_q4_k *)dst + b;
            const int8_t *qb = q + b * LLMQ_QK_K;
            const llmq_grid *g0 = grid_of(grids, group_size, b * LLMQ_QK_K);
            y->d = g0->d;
            y->dmin = g0->m;
            memset(y->scales, 0, sizeof y->scales);
            for (int j = 0; j < 8; j++) {
                const llmq_grid *g = grid_of(grids, group_size, b * LLMQ_QK_K + 32 * j);
                q4_k_set_scale_min(y->scales, j, g->sc, g->mc);
            }
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++)
                    y->qs[32 * c + l] = (uint8_t)(qb[64 * c + l] | (qb[64 * c + 32 + l] << 4));
        }
        break;
    case LLMQ_TYPE_Q5_K:
        for (int b = 0; b < n / LLMQ_QK_K; b++) {
            llmq_block_q5_k *y = (llmq_block_q5_k *)dst + b;
            const int8_t *qb = q + b * LLMQ_QK_K;
            const llmq_grid *g0 = grid_of(grids, group_size, b * LLMQ_QK_K);
            y->d = g0->d;
            y->dmin = g0->m;
            memset(y->scales, 0, sizeof y->scales);
            memset(y->qh, 0, sizeof y->qh);
            for (int j = 0; j < 8; j++) {
                const llmq_grid *g = grid_of(grids, group_size, b * LLMQ_QK_K + 32 * j);
                q4_k_set_scale_min(y->scales, j, g->sc, g->mc);
            }
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++) {
                    const int lo = qb[64 * c + l], hi = qb[64 * c + 32 + l];
                    y->qs[32 * c + l] = (uint8_t)((lo & 0xF) | ((hi & 0xF) << 4));
                    y->qh[l] |= (uint8_t)((((lo >> 4) & 1) << (2 * c)) | (((hi >> 4) & 1) << (2 * c + 1)));
                }
        }
        break;
    case LLMQ_TYPE_IQ4_NL:
        for (int b = 0; b < n / LLMQ_QK; b++) {
            llmq_block_iq4_nl *y = (llmq_block_iq4_nl *)dst + b;
            const int8_t *qb = q + b * LLMQ_QK;
            y->d = grid_of(grids, group_size, b * LLMQ_QK)->d;
            for (int j = 0; j < 16; j++) y->qs[j] = (uint8_t)(qb[j] | (qb[j + 16] << 4));
        }
        break;
    case LLMQ_TYPE_IQ4_XS:
        for (int b = 0; b < n / LLMQ_QK_K; b++) {
            llmq_block_iq4_xs *y = (llmq_block_iq4_xs *)dst + b;
            const int8_t *qb = q + b * LLMQ_QK_K;
            y->d = grid_of(grids, group_size, b * LLMQ_QK_K)->d;
            y->scales_h = 0;
            memset(y->scales_l, 0, sizeof y->scales_l);
            for (int ib = 0; ib < 8; ib++) {
                const int ls = grid_of(grids, group_size, b * LLMQ_QK_K + 32 * ib)->sc + 32;
                y->scales_l[ib / 2] |= (uint8_t)((ls & 0xF) << (4 * (ib % 2)));
                y->scales_h |= (uint16_t)((ls >> 4) << (2 * ib));
                for (int j = 0; j < 16; j++) y->qs[16 * ib + j] = (uint8_t)(qb[32 * ib + j] | (qb[32 * ib + 16 + j] << 4));
            }
        }
        break;
    case LLMQ_TYPE_Q2_K:
        for (int b = 0; b < n / LLMQ_QK_K; b++) {
            llmq_block_q2_k *y = (llmq_block_q2_k *)dst + b;
            const int8_t *qb = q + b * LLMQ_QK_K;
            const llmq_grid *g0 = grid_of(grids, group_size, b * LLMQ_QK_K);
            y->d = g0->d;
            y->dmin = g0->m;
            for (int j = 0; j < 16; j++) {
                const llmq_grid *g = grid_of(grids, group_size, b * LLMQ_QK_K + 16 * j);
                y->scales[j] = (uint8_t)(g->sc | (g->mc << 4));
            }
            memset(y->qs, 0, sizeof y->qs);
            for (int e = 0; e < LLMQ_QK_K; e++) y->qs[32 * (e / 128) + e % 32] |= (uint8_t)(qb[e] << (2 * ((e % 128) / 32)));
        }
        break;
    case LLMQ_TYPE_Q6_K:
        for (int b = 0; b < n / LLMQ_QK_K; b++) {
            llmq_block_q6_k *y = (llmq_block_q6_k *)dst + b;
            const int8_t *qb = q + b * LLMQ_QK_K;
            y->d = grid_of(grids, group_size, b * LLMQ_QK_K)->d;
            for (int j = 0; j < 16; j++) y->scales[j] = (int8_t)grid_of(grids, group_size, b * LLMQ_QK_K + 16 * j)->sc;
            for (int h = 0; h < 2; h++) {
                uint8_t *ql = y->ql + 64 * h, *qh = y->qh + 32 * h;
                const int8_t *qq = qb + 128 * h;
                for (int l = 0; l < 32; l++) {
                    ql[l] = (uint8_t)((qq[l] & 0xF) | ((qq[l + 64] & 0xF) << 4));
                    ql[l + 32] = (uint8_t)((qq[l + 32] & 0xF) | ((qq[l + 96] & 0xF) << 4));
                    qh[l] = (uint8_t)((qq[l] >> 4) | ((qq[l + 32] >> 4) << 2) | ((qq[l + 64] >> 4) << 4) | ((qq[l + 96] >> 4) << 6));
                }
            }
        }
        break;
    case LLMQ_TYPE_Q3_K:
        for (int b = 0; b < n / LLMQ_QK_K; b++) {
            llmq_block_q3_k *y = (llmq_block_q3_k *)dst + b;
            const int8_t *qb = q + b * LLMQ_QK_K;
            y->d = grid_of(grids, group_size, b * LLMQ_QK_K)->d;
            memset(y->scales, 0, sizeof y->scales);
            for (int j = 0; j < 16; j++) q3_k_set_scale(y->scales, j, grid_of(grids, group_size, b * LLMQ_QK_K + 16 * j)->sc);
            memset(y->hmask, 0, sizeof y->hmask);
            memset(y->qs, 0, sizeof y->qs);
            for (int e = 0; e < LLMQ_QK_K; e++) {
                if (qb[e] & 4) y->hmask[e % 32] |= (uint8_t)(1 << (e / 32));
                y->qs[32 * (e / 128) + e % 32] |= (uint8_t)((qb[e] & 3) << (2 * ((e / 32) % 4)));
            }
        }
        break;
    default:
        return llmq_error("pack: type %s has no block packing", type_name(t));
    }
    return LLMQ_OK;
}

int llmq_pack_row(llmq_type t, const float *row, int n, int group_size, const llmq_grid *grids, void *dst)
{
    if (n <= 0) return llmq_error("pack %s: empty row", type_name(t));
    int8_t *q = malloc((size_t)n);
    if (!q) return llmq_error("pack %s: out of memory for %d codes", type_name(t), n);
    int rc = llmq_round_row(t, row, n, group_size, grids, q);
    if (rc == LLMQ_OK) rc = llmq_pack_codes(t, q, n, group_size, grids, dst);
    free(q);
    return rc;
}

llmq_grid llmq_grid_from_fields(llmq_type t, uint16_t d, uint16_t m, int sc, int mc)
{
    llmq_grid g = grid_blank(t);
    g.d = d;
    switch (t) {
    case LLMQ_TYPE_Q4_0:
    case LLMQ_TYPE_Q5_0:
    case LLMQ_TYPE_Q8_0:
    case LLMQ_TYPE_IQ4_NL: g.scale = h2f(d); break;
    case LLMQ_TYPE_Q4_1:
    case LLMQ_TYPE_Q5_1:
        g.m = m;
        g.scale = h2f(d);
        g.offset = h2f(m);
        break;
    case LLMQ_TYPE_Q4_K:
    case LLMQ_TYPE_Q5_K:
    case LLMQ_TYPE_Q2_K:
        g.m = m;
        g.sc = (int16_t)sc;
        g.mc = (int16_t)mc;
        g.scale = h2f(d) * (float)g.sc;
        g.offset = -(h2f(m) * (float)g.mc);
        break;
    case LLMQ_TYPE_Q6_K:
    case LLMQ_TYPE_Q3_K:
    case LLMQ_TYPE_IQ4_XS:
        g.sc = (int16_t)sc;
        g.scale = h2f(d) * (float)g.sc;
        break;
    default: break;
    }
    return g;
}

/* The grid of the unit holding element e of a row, from its stored fields. */
static llmq_grid grid_at_element(llmq_type t, const void *src, int e)
{
    switch (t) {
    case LLMQ_TYPE_Q4_0: return llmq_grid_from_fields(t, ((const llmq_block_q4_0 *)src)[e / LLMQ_QK].d, 0, 0, 0);
    case LLMQ_TYPE_Q8_0: return llmq_grid_from_fields(t, ((const llmq_block_q8_0 *)src)[e / LLMQ_QK].d, 0, 0, 0);
    case LLMQ_TYPE_Q5_0: return llmq_grid_from_fields(t, ((const llmq_block_q5_0 *)src)[e / LLMQ_QK].d, 0, 0, 0);
    case LLMQ_TYPE_Q5_1: {
        const llmq_block_q5_1 *b = (const llmq_block_q5_1 *)src + e / LLMQ_QK;
        return llmq_grid_from_fields(t, b->d, b->m, 0, 0);
    }
    case LLMQ_TYPE_Q5_K: {
        const llmq_block_q5_k *b = (const llmq_block_q5_k *)src + e / LLMQ_QK_K;
        int sc, m;
        llmq_q4_k_get_scale_min(b->scales, (e % LLMQ_QK_K) / 32, &sc, &m);
        return llmq_grid_from_fields(t, b->d, b->dmin, sc, m);
    }
    case LLMQ_TYPE_Q4_1: {
        const llmq_block_q4_1 *b = (const llmq_block_q4_1 *)src + e / LLMQ_QK;
        return llmq_grid_from_fields(t, b->d, b->m, 0, 0);
    }
    case LLMQ_TYPE_Q4_K: {
        const llmq_block_q4_k *b = (const llmq_block_q4_k *)src + e / LLMQ_QK_K;
        int sc, m;
        llmq_q4_k_get_scale_min(b->scales, (e % LLMQ_QK_K) / 32, &sc, &m);
        return llmq_grid_from_fields(t, b->d, b->dmin, sc, m);
    }
    case LLMQ_TYPE_Q6_K: {
        const llmq_block_q6_k *b = (const llmq_block_q6_k *)src + e / LLMQ_QK_K;
        return llmq_grid_from_fields(t, b->d, 0, b->scales[(e % LLMQ_QK_K) / 16], 0);
    }
    case LLMQ_TYPE_IQ4_NL: return llmq_grid_from_fields(t, ((const llmq_block_iq4_nl *)src)[e / LLMQ_QK].d, 0, 0, 0);
    case LLMQ_TYPE_IQ4_XS: {
        const llmq_block_iq4_xs *b = (const llmq_block_iq4_xs *)src + e / LLMQ_QK_K;
        return llmq_grid_from_fields(t, b->d, 0, llmq_iq4_xs_scale(b, (e % LLMQ_QK_K) / 32), 0);
    }
    case LLMQ_TYPE_Q2_K: {
        const llmq_block_q2_k *b = (const llmq_block_q2_k *)src + e / LLMQ_QK_K;
        const uint8_t s = b->scales[(e % LLMQ_QK_K) / 16];
        return llmq_grid_from_fields(t, b->d, b->dmin, s & 0xF, s >> 4);
    }
    case LLMQ_TYPE_Q3_K: {
        const llmq_block_q3_k *b = (const llmq_block_q3_k *)src + e / LLMQ_QK_K;
        return llmq_grid_from_fields(t, b->d, 0, llmq_q3_k_get_scale(b->scales, (e % LLMQ_QK_K) / 16), 0);
    }
    default: return llmq_grid_from_fields(t, 0, 0, 0, 0);
    }
}

int llmq_unpack_grids(llmq_type t, const void *src, int n, int group_size, llmq_grid *grids)
{
    if (llmq_grid_unit(t) == 0 || llmq_type_is_hf(t)) return llmq_error("unpack grids: type %s has no ggml grids", type_name(t));
    group_size = llmq_group_resolve(t, group_size);
    if (llmq_group_check(t, n, group_size) != LLMQ_OK) return LLMQ_ERR;
    for (int g = 0; g < llmq_group_count(n, group_size); g++) grids[g] = grid_at_element(t, src, g * group_size);
    return LLMQ_OK;
}

int llmq_unpack_codes(llmq_type t, const void *src, int n, int8_t *q)
{
    if (llmq_grid_unit(t) == 0) return llmq_error("unpack: type %d has no integer codes", (int)t);
    const int block_size = grid_block_size(t);
    if (n <= 0 || n % block_size) return llmq_error("unpack %s: row of %d elements is not a multiple of %d", type_name(t), n, block_size);
    if (llmq_type_is_hf(t)) return llmq_hf_unpack_codes(t, src, n, q);
    switch (t) {
    case LLMQ_TYPE_Q4_0:
    case LLMQ_TYPE_Q4_1:
        for (int b = 0; b < n / LLMQ_QK; b++) {
            const uint8_t *qs = t == LLMQ_TYPE_Q4_0 ? ((const llmq_block_q4_0 *)src)[b].qs : ((const llmq_block_q4_1 *)src)[b].qs;
            for (int j = 0; j < 16; j++) {
                q[32 * b + j] = (int8_t)(qs[j] & 0xF);
                q[32 * b + j + 16] = (int8_t)(qs[j] >> 4);
            }
        }
        break;
    case LLMQ_TYPE_Q5_0:
    case LLMQ_TYPE_Q5_1:
        for (int b = 0; b < n / LLMQ_QK; b++) {
            int c[32];
            if (t == LLMQ_TYPE_Q5_0) q5_block_codes(((const llmq_block_q5_0 *)src)[b].qs, ((const llmq_block_q5_0 *)src)[b].qh, c);
            else q5_block_codes(((const llmq_block_q5_1 *)src)[b].qs, ((const llmq_block_q5_1 *)src)[b].qh, c);
            for (int j = 0; j < 32; j++) q[32 * b + j] = (int8_t)c[j];
        }
        break;
    case LLMQ_TYPE_Q8_0:
        for (int b = 0; b < n / LLMQ_QK; b++) memcpy(q + 32 * b, ((const llmq_block_q8_0 *)src)[b].qs, 32);
        break;
    case LLMQ_TYPE_Q5_K:
        for (int b = 0; b < n / LLMQ_QK_K; b++) {
            const llmq_block_q5_k *y = (const llmq_block_q5_k *)src + b;
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++) {
                    q[256 * b + 64 * c + l] = (int8_t)((y->qs[32 * c + l] & 0xF) | ((y->qh[l] >> (2 * c) & 1) << 4));
                    q[256 * b + 64 * c + 32 + l] = (int8_t)((y->qs[32 * c + l] >> 4) | ((y->qh[l] >> (2 * c + 1) & 1) << 4));
                }
        }
        break;
    case LLMQ_TYPE_Q4_K:
        for (int b = 0; b < n / LLMQ_QK_K; b++) {
            const llmq_block_q4_k *y = (const llmq_block_q4_k *)src + b;
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++) {
                    q[256 * b + 64 * c + l] = (int8_t)(y->qs[32 * c + l] & 0xF);
                    q[256 * b + 64 * c + 32 + l] = (int8_t)(y->qs[32 * c + l] >> 4);
                }
        }
        break;
    case LLMQ_TYPE_Q6_K:
        for (int b = 0; b < n / LLMQ_QK_K; b++) {
            const llmq_block_q6_k *y = (const llmq_block_q6_k *)src + b;
            for (int h = 0; h < 2; h++) {
                const uint8_t *ql = y->ql + 64 * h, *qh = y->qh + 32 * h;
                int8_t *qq = q + 256 * b + 128 * h;
                for (int l = 0; l < 32; l++) {
                    qq[l] = (int8_t)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4));
                    qq[l + 32] = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
                    qq[l + 64] = (int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
                    qq[l + 96] = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
                }
            }
        }
        break;
    case LLMQ_TYPE_IQ4_NL:
    case LLMQ_TYPE_IQ4_XS:
        /* 16 bytes per 32 elements in both: low nibbles first, then high */
        for (int u = 0; u < n / 32; u++) {
            const uint8_t *qs = t == LLMQ_TYPE_IQ4_NL ? ((const llmq_block_iq4_nl *)src)[u].qs
                                                      : ((const llmq_block_iq4_xs *)src)[u / 8].qs + 16 * (u % 8);
            for (int j = 0; j < 16; j++) {
                q[32 * u + j] = (int8_t)(qs[j] & 0xF);
                q[32 * u + 16 + j] = (int8_t)(qs[j] >> 4);
            }
        }
        break;
    case LLMQ_TYPE_Q2_K:
        for (int b = 0; b < n / LLMQ_QK_K; b++) {
            const llmq_block_q2_k *y = (const llmq_block_q2_k *)src + b;
            for (int e = 0; e < LLMQ_QK_K; e++) q[256 * b + e] = (int8_t)((y->qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3);
        }
        break;
    case LLMQ_TYPE_Q3_K:
        for (int b = 0; b < n / LLMQ_QK_K; b++) {
            const llmq_block_q3_k *y = (const llmq_block_q3_k *)src + b;
            /* 32 elements at a time share the low bits' byte row and shift and the high bit's position */
            for (int e0 = 0; e0 < LLMQ_QK_K; e0 += 32) {
                const uint8_t *qs = y->qs + 32 * (e0 / 128);
                const int shift = 2 * ((e0 / 32) % 4), hbit = e0 / 32;
                for (int l = 0; l < 32; l++)
                    q[256 * b + e0 + l] = (int8_t)(((qs[l] >> shift) & 3) | (((y->hmask[l] >> hbit) & 1) << 2));
            }
        }
        break;
    default:
        return llmq_error("unpack: type %s has no integer codes", type_name(t));
    }
    return LLMQ_OK;
}
