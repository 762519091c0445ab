/* NEON kernels (AArch64, where Advanced SIMD is always present). Same plan
 * as the AVX2 file: decoders bit-identical to the reference (multiply, then
 * add), dots that decode a chunk into L1 and run FMAs over it per token. */
#include "kernel_ops.h"

#if defined(__aarch64__)
#include "llmq/blocks.h"

#include <arm_neon.h>
#include <string.h>

static inline float h2f(uint16_t h) { return llmq_f16_to_f32(h); }

static inline float32x4_t s16_lo_ps(int16x8_t v) { return vcvtq_f32_s32(vmovl_s16(vget_low_s16(v))); }
static inline float32x4_t s16_hi_ps(int16x8_t v) { return vcvtq_f32_s32(vmovl_s16(vget_high_s16(v))); }

/* dst[0..16) = q·d for 16 signed bytes q. */
static inline void store16_scaled(float *dst, int8x16_t q, float32x4_t d)
{
    const int16x8_t a = vmovl_s8(vget_low_s8(q)), b = vmovl_s8(vget_high_s8(q));
    vst1q_f32(dst, vmulq_f32(s16_lo_ps(a), d));
    vst1q_f32(dst + 4, vmulq_f32(s16_hi_ps(a), d));
    vst1q_f32(dst + 8, vmulq_f32(s16_lo_ps(b), d));
    vst1q_f32(dst + 12, vmulq_f32(s16_hi_ps(b), d));
}

/* dst[0..16) = q·d + m (sub = false) or d·q − m (sub = true). */
static inline void store16_affine(float *dst, int8x16_t q, float32x4_t d, float32x4_t m, int sub)
{
    const int16x8_t a = vmovl_s8(vget_low_s8(q)), b = vmovl_s8(vget_high_s8(q));
    float32x4_t v[4] = {s16_lo_ps(a), s16_hi_ps(a), s16_lo_ps(b), s16_hi_ps(b)};
    for (int k = 0; k < 4; k++) {
        float32x4_t p = vmulq_f32(v[k], d);
        vst1q_f32(dst + 4 * k, sub ? vsubq_f32(p, m) : vaddq_f32(p, m));
    }
}

static void q4_0_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q4_0 *b = row;
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    const int8x16_t eight = vdupq_n_s8(8);
    for (int i = 0; i < n / 32; i++, dst += 32) {
        const float32x4_t d = vdupq_n_f32(h2f(b[i].d));
        const uint8x16_t raw = vld1q_u8(b[i].qs);
        store16_scaled(dst, vsubq_s8(vreinterpretq_s8_u8(vandq_u8(raw, m4)), eight), d);
        store16_scaled(dst + 16, vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), eight), d);
    }
}

static void q4_1_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q4_1 *b = row;
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    for (int i = 0; i < n / 32; i++, dst += 32) {
        const float32x4_t d = vdupq_n_f32(h2f(b[i].d)), m = vdupq_n_f32(h2f(b[i].m));
        const uint8x16_t raw = vld1q_u8(b[i].qs);
        store16_affine(dst, vreinterpretq_s8_u8(vandq_u8(raw, m4)), d, m, 0);
        store16_affine(dst + 16, vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), d, m, 0);
    }
}

static void q8_0_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q8_0 *b = row;
    for (int i = 0; i < n / 32; i++, dst += 32) {
        const float32x4_t d = vdupq_n_f32(h2f(b[i].d));
        store16_scaled(dst, vld1q_s8(b[i].qs), d);
        store16_scaled(dst + 16, vld1q_s8(b[i].qs + 16), d);
    }
}

static void q4_k_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q4_k *b = row;
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    for (int i = 0; i < n / 256; i++) {
        const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        for (int c = 0; c < 4; c++, dst += 64) {
            int sc1, m1, sc2, m2;
            llmq_q4_k_get_scale_min(b[i].scales, 2 * c, &sc1, &m1);
            llmq_q4_k_get_scale_min(b[i].scales, 2 * c + 1, &sc2, &m2);
            const float32x4_t d1 = vdupq_n_f32(d * (float)sc1), mm1 = vdupq_n_f32(dmin * (float)m1);
            const float32x4_t d2 = vdupq_n_f32(d * (float)sc2), mm2 = vdupq_n_f32(dmin * (float)m2);
            for (int p = 0; p < 2; p++) {
                const uint8x16_t raw = vld1q_u8(b[i].qs + 32 * c + 16 * p);
                store16_affine(dst + 16 * p, vreinterpretq_s8_u8(vandq_u8(raw, m4)), d1, mm1, 1);
                store16_affine(dst + 32 + 16 * p, vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), d2, mm2, 1);
            }
        }
    }
}

/* The 32 five-bit codes of a Q5_0/Q5_1 block in element order, as two
 * vectors: each byte tests its own bit of qh (bit e for element e). */
static inline void q5_codes(const uint8_t qs[16], const uint8_t qh[4], uint8x16_t q[2])
{
    static const uint8_t bits[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t bit = vld1q_u8(bits), m4 = vdupq_n_u8(0x0F), sixteen = vdupq_n_u8(16);
    const uint8x16_t raw = vld1q_u8(qs);
    const uint8x16_t h01 = vcombine_u8(vdup_n_u8(qh[0]), vdup_n_u8(qh[1])), h23 = vcombine_u8(vdup_n_u8(qh[2]), vdup_n_u8(qh[3]));
    q[0] = vorrq_u8(vandq_u8(raw, m4), vandq_u8(vtstq_u8(h01, bit), sixteen));
    q[1] = vorrq_u8(vshrq_n_u8(raw, 4), vandq_u8(vtstq_u8(h23, bit), sixteen));
}

static void q5_0_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q5_0 *b = row;
    const int8x16_t k16 = vdupq_n_s8(16);
    for (int i = 0; i < n / 32; i++, dst += 32) {
        const float32x4_t d = vdupq_n_f32(h2f(b[i].d));
        uint8x16_t q[2];
        q5_codes(b[i].qs, b[i].qh, q);
        store16_scaled(dst, vsubq_s8(vreinterpretq_s8_u8(q[0]), k16), d);
        store16_scaled(dst + 16, vsubq_s8(vreinterpretq_s8_u8(q[1]), k16), d);
    }
}

static void q5_1_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q5_1 *b = row;
    for (int i = 0; i < n / 32; i++, dst += 32) {
        const float32x4_t d = vdupq_n_f32(h2f(b[i].d)), m = vdupq_n_f32(h2f(b[i].m));
        uint8x16_t q[2];
        q5_codes(b[i].qs, b[i].qh, q);
        store16_affine(dst, vreinterpretq_s8_u8(q[0]), d, m, 0);
        store16_affine(dst + 16, vreinterpretq_s8_u8(q[1]), d, m, 0);
    }
}

/* Q5_K: Q4_K's nibbles with bit 2c (first 32) or 2c+1 (next 32) of qh[l]. */
static void q5_k_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q5_k *b = row;
    const uint8x16_t m4 = vdupq_n_u8(0x0F), sixteen = vdupq_n_u8(16);
    for (int i = 0; i < n / 256; i++) {
        const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        const uint8x16_t qh[2] = {vld1q_u8(b[i].qh), vld1q_u8(b[i].qh + 16)};
        for (int c = 0; c < 4; c++, dst += 64) {
            int sc1, m1, sc2, m2;
            llmq_q4_k_get_scale_min(b[i].scales, 2 * c, &sc1, &m1);
            llmq_q4_k_get_scale_min(b[i].scales, 2 * c + 1, &sc2, &m2);
            const float32x4_t d1 = vdupq_n_f32(d * (float)sc1), mm1 = vdupq_n_f32(dmin * (float)m1);
            const float32x4_t d2 = vdupq_n_f32(d * (float)sc2), mm2 = vdupq_n_f32(dmin * (float)m2);
            const uint8x16_t u1 = vdupq_n_u8((uint8_t)(1u << (2 * c))), u2 = vdupq_n_u8((uint8_t)(1u << (2 * c + 1)));
            for (int p = 0; p < 2; p++) {
                const uint8x16_t raw = vld1q_u8(b[i].qs + 32 * c + 16 * p);
                const uint8x16_t lo = vorrq_u8(vandq_u8(raw, m4), vandq_u8(vtstq_u8(qh[p], u1), sixteen));
                const uint8x16_t hi = vorrq_u8(vshrq_n_u8(raw, 4), vandq_u8(vtstq_u8(qh[p], u2), sixteen));
                store16_affine(dst + 16 * p, vreinterpretq_s8_u8(lo), d1, mm1, 1);
                store16_affine(dst + 32 + 16 * p, vreinterpretq_s8_u8(hi), d2, mm2, 1);
            }
        }
    }
}

/* IQ4: the 16 levels as a byte table, looked up 16 codes at a time. */
static inline void iq4_store32(float *dst, const uint8_t qs[16], float32x4_t d)
{
    const int8x16_t table = vld1q_s8(llmq_iq4nl_levels);
    const uint8x16_t raw = vld1q_u8(qs);
    store16_scaled(dst, vqtbl1q_s8(table, vandq_u8(raw, vdupq_n_u8(0x0F))), d);
    store16_scaled(dst + 16, vqtbl1q_s8(table, vshrq_n_u8(raw, 4)), d);
}

static void iq4_nl_dequant(const void *row, float *dst, int n)
{
    const llmq_block_iq4_nl *b = row;
    for (int i = 0; i < n / 32; i++, dst += 32) iq4_store32(dst, b[i].qs, vdupq_n_f32(h2f(b[i].d)));
}

static void iq4_xs_dequant(const void *row, float *dst, int n)
{
    const llmq_block_iq4_xs *b = row;
    for (int i = 0; i < n / 256; i++) {
        const float d = h2f(b[i].d);
        for (int ib = 0; ib < 8; ib++, dst += 32) {
            iq4_store32(dst, b[i].qs + 16 * ib, vdupq_n_f32(d * (float)llmq_iq4_xs_scale(&b[i], ib)));
        }
    }
}

/* Q2_K: shift 2s of a half's 32 code bytes gives its elements 32s..32s+31,
 * two sub-blocks of 16 with their own d·sc and dmin·m. */
static void q2_k_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q2_k *b = row;
    const uint8x16_t m2 = vdupq_n_u8(3);
    for (int i = 0; i < n / 256; i++) {
        const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        for (int h = 0; h < 2; h++) {
            const uint8x16_t raw[2] = {vld1q_u8(b[i].qs + 32 * h), vld1q_u8(b[i].qs + 32 * h + 16)};
            for (int s = 0; s < 4; s++, dst += 32) {
                const int8x16_t shift = vdupq_n_s8((int8_t)(-2 * s));
                for (int p = 0; p < 2; p++) {
                    const uint8_t sc = b[i].scales[8 * h + 2 * s + p];
                    const uint8x16_t q = vandq_u8(vshlq_u8(raw[p], shift), m2);
                    store16_affine(dst + 16 * p, vreinterpretq_s8_u8(q), vdupq_n_f32(d * (float)(sc & 0xF)),
                                   vdupq_n_f32(dmin * (float)(sc >> 4)), 1);
                }
            }
        }
    }
}

static void q6_k_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q6_k *b = row;
    const uint8x16_t m4 = vdupq_n_u8(0x0F), m2 = vdupq_n_u8(3);
    const int8x16_t k32 = vdupq_n_s8(32);
    for (int i = 0; i < n / 256; i++) {
        const float d = h2f(b[i].d);
        for (int h = 0; h < 2; h++, dst += 128) {
            const int8_t *sc = b[i].scales + 8 * h;
            for (int p = 0; p < 2; p++) {
                const uint8x16_t a = vld1q_u8(b[i].ql + 64 * h + 16 * p);
                const uint8x16_t c = vld1q_u8(b[i].ql + 64 * h + 32 + 16 * p);
                const uint8x16_t hb = vld1q_u8(b[i].qh + 32 * h + 16 * p);
                uint8x16_t q[4];
                q[0] = vorrq_u8(vandq_u8(a, m4), vshlq_n_u8(vandq_u8(hb, m2), 4));
                q[1] = vorrq_u8(vandq_u8(c, m4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 2), m2), 4));
                q[2] = vorrq_u8(vshrq_n_u8(a, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 4), m2), 4));
                q[3] = vorrq_u8(vshrq_n_u8(c, 4), vshlq_n_u8(vshrq_n_u8(hb, 6), 4));
                for (int k = 0; k < 4; k++)
                    store16_scaled(dst + 32 * k + 16 * p, vsubq_s8(vreinterpretq_s8_u8(q[k]), k32),
                                   vdupq_n_f32(d * (float)sc[2 * k + p]));
            }
        }
    }
}

static void q3_k_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q3_k *b = row;
    const uint8x16_t m2 = vdupq_n_u8(3), four = vdupq_n_u8(4);
    for (int i = 0; i < n / 256; i++) {
        const float d = h2f(b[i].d);
        int sc[16];
        for (int j = 0; j < 16; j++) sc[j] = llmq_q3_k_get_scale(b[i].scales, j);
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 4; j++, dst += 32) {
                const int bit = 4 * h + j;
                for (int p = 0; p < 2; p++) {
                    const uint8x16_t qs = vld1q_u8(b[i].qs + 32 * h + 16 * p);
                    const uint8x16_t lo = vandq_u8(vshlq_u8(qs, vdupq_n_s8((int8_t)(-2 * j))), m2);
                    const uint8x16_t set = vtstq_u8(vld1q_u8(b[i].hmask + 16 * p), vdupq_n_u8((uint8_t)(1 << bit)));
                    const uint8x16_t q = vsubq_u8(lo, vbicq_u8(four, set)); /* high bit clear → −4 */
                    store16_scaled(dst + 16 * p, vreinterpretq_s8_u8(q), vdupq_n_f32(d * (float)sc[2 * bit + p]));
                }
            }
    }
}

static void f16_dequant(const void *row, float *dst, int n)
{
    const uint16_t *h = row;
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h + i))));
    for (; i < n; i++) dst[i] = h2f(h[i]);
}

static void bf16_dequant(const void *row, float *dst, int n)
{
    const uint16_t *h = row;
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(h + i), 16)));
    for (; i < n; i++) dst[i] = llmq_bf16_to_f32(h[i]);
}

static void f32_dequant(const void *row, float *dst, int n)
{
    memcpy(dst, row, (size_t)n * sizeof(float));
}

static inline void dot_chunked(void (*dequant)(const void *, float *, int), int block, size_t block_bytes, const void *row,
                               const float *x, size_t xs, int nt, int n, float *y, size_t ys)
{
    float buf[LLMQ_DOT_CHUNK] __attribute__((aligned(16)));
    float32x4_t acc0[LLMQ_DOT_MAX_TOKENS], acc1[LLMQ_DOT_MAX_TOKENS];
    float tail[LLMQ_DOT_MAX_TOKENS] = {0};
    for (int t = 0; t < nt; t++) acc0[t] = acc1[t] = vdupq_n_f32(0.0f);
    for (int i0 = 0; i0 < n; i0 += LLMQ_DOT_CHUNK) {
        const int len = n - i0 < LLMQ_DOT_CHUNK ? n - i0 : LLMQ_DOT_CHUNK;
        dequant((const char *)row + (size_t)(i0 / block) * block_bytes, buf, len);
        const int len8 = len & ~7;
        for (int t = 0; t < nt; t++) {
            const float *xt = x + (size_t)t * xs + i0;
            float32x4_t a0 = acc0[t], a1 = acc1[t];
            for (int i = 0; i < len8; i += 8) {
                a0 = vfmaq_f32(a0, vld1q_f32(buf + i), vld1q_f32(xt + i));
                a1 = vfmaq_f32(a1, vld1q_f32(buf + i + 4), vld1q_f32(xt + i + 4));
            }
            for (int i = len8; i < len; i++) tail[t] += buf[i] * xt[i];
            acc0[t] = a0;
            acc1[t] = a1;
        }
    }
    for (int t = 0; t < nt; t++) y[(size_t)t * ys] = vaddvq_f32(vaddq_f32(acc0[t], acc1[t])) + tail[t];
}

/* ---- integer dots of the --fast path (int8 activations, llmq_act_q8) ----
 * Baseline Advanced SIMD (no SDOT): vmull_s8 multiplies eight byte pairs
 * into int16, vmlal_high_s8 adds the next eight products, and vpaddl/vpadal
 * add lane pairs into int32. An int16 lane holds two products, |w| ≤ 128 and
 * |q| ≤ 127, so at most 32512: no saturation. Each block's four int32
 * partial sums are converted and scaled by d_w·d_x in a vector FMA; offsets
 * (Q4_1's m, Q4_K's mins) enter once per block through the activation's s,
 * as in quant_avx2.c. */

/* Eight int16 lanes, each the sum of two products w·x, over 16 elements. */
static inline int16x8_t mul16_s8(int8x16_t w, int8x16_t x) { return vmlal_high_s8(vmull_s8(vget_low_s8(w), vget_low_s8(x)), w, x); }
/* Σ w·x over 32 elements (w0|w1 against the activation block a) in four int32 lanes. */
static inline int32x4_t dot32_s8(int8x16_t w0, int8x16_t w1, const llmq_act_q8 *a)
{
    return vpadalq_s16(vpaddlq_s16(mul16_s8(w0, vld1q_s8(a->q))), mul16_s8(w1, vld1q_s8(a->q + 16)));
}
/* sc[lo]·p0 + sc[hi]·p1 widened into four int32 lanes, for the K-quants whose
 * 16-element halves have their own scales: the scales stay in one int16x8
 * vector and enter by lane (lo, hi must be immediates, hence a macro), so
 * they do not need a register each. */
#define SCALE16(p0, p1, sc, lo, hi)                                                                          \
    vmlal_high_laneq_s16(vmlal_laneq_s16(vmlal_high_laneq_s16(vmull_laneq_s16(vget_low_s16(p0), sc, lo), p0, sc, lo), \
                                         vget_low_s16(p1), sc, hi),                                          \
                         p1, sc, hi)
/* 16 bytes of nibbles → the 32 weights of a block: low nibbles, then high. */
static inline void nibbles32(const uint8_t *qs, int8x16_t *w0, int8x16_t *w1)
{
    const uint8x16_t raw = vld1q_u8(qs);
    *w0 = vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(0x0F)));
    *w1 = vreinterpretq_s8_u8(vshrq_n_u8(raw, 4));
}

/* Written once for a token count nt that the dispatcher makes a compile-time
 * constant (1..4): the per-token accumulators then stay in registers, and
 * two banks of them (even and odd blocks) keep two FMA chains in flight. */
#define UNROLL_T LLMQ_UNROLL_T
/* for the loops over two halves or two sub-blocks, whose arrays must become registers */
#define UNROLL_2 _Pragma("GCC unroll 2")
#define ALWAYS_INLINE LLMQ_ALWAYS_INLINE
/* Ends one token's share of a step: an empty asm that no load may cross.
 * GCC's pre-allocation scheduler (on by default for AArch64, not for x86)
 * otherwise hoists every token's activation loads above the FMAs and, at
 * nt = 3 or 4, spills the accumulators to the stack on every block. The
 * fence emits no instruction, so an out-of-order core still overlaps
 * tokens. */
#define TOKEN_FENCE() __asm__ volatile("" ::: "memory")

#define Q8_DOT_BEGIN                                                   \
    float32x4_t acc0[LLMQ_DOT_MAX_TOKENS], acc1[LLMQ_DOT_MAX_TOKENS];  \
    float corr0[LLMQ_DOT_MAX_TOKENS], corr1[LLMQ_DOT_MAX_TOKENS];      \
    UNROLL_T for (int t = 0; t < nt; t++) {                            \
        acc0[t] = acc1[t] = vdupq_n_f32(0.0f);                         \
        corr0[t] = corr1[t] = 0;                                       \
    }
#define Q8_DOT_END                                                     \
    UNROLL_T for (int t = 0; t < nt; t++) y[(size_t)t * ys] = vaddvq_f32(vaddq_f32(acc0[t], acc1[t])) + (corr0[t] + corr1[t]);

/* acc += (the four int32 partial sums p) · scale */
#define ACC_I32(acc, p, scale) ((acc) = vfmaq_n_f32((acc), vcvtq_f32_s32(p), (scale)))

ALWAYS_INLINE void q4_0_q8_body(const void *row, const llmq_act_q8 *x, size_t xs, const int nt, int n, float *y, size_t ys)
{
    const llmq_block_q4_0 *b = row;
    const int8x16_t eight = vdupq_n_s8(8);
    const int nb = n / 32;
    Q8_DOT_BEGIN
    int i = 0;
    for (; i + 1 < nb; i += 2) {
        int8x16_t w0, w1, v0, v1;
        nibbles32(b[i].qs, &w0, &w1);
        nibbles32(b[i + 1].qs, &v0, &v1);
        w0 = vsubq_s8(w0, eight), w1 = vsubq_s8(w1, eight), v0 = vsubq_s8(v0, eight), v1 = vsubq_s8(v1, eight);
        const float d0 = h2f(b[i].d), d1 = h2f(b[i + 1].d);
        UNROLL_T for (int t = 0; t < nt; t++) {
            const llmq_act_q8 *a = x + (size_t)t * xs + i;
            ACC_I32(acc0[t], dot32_s8(w0, w1, a), d0 * a[0].d);
            ACC_I32(acc1[t], dot32_s8(v0, v1, a + 1), d1 * a[1].d);
            TOKEN_FENCE();
        }
    }
    if (i < nb) {
        int8x16_t w0, w1;
        nibbles32(b[i].qs, &w0, &w1);
        w0 = vsubq_s8(w0, eight), w1 = vsubq_s8(w1, eight);
        const float d0 = h2f(b[i].d);
        UNROLL_T for (int t = 0; t < nt; t++) {
            const llmq_act_q8 *a = x + (size_t)t * xs + i;
            ACC_I32(acc0[t], dot32_s8(w0, w1, a), d0 * a->d);
        }
    }
    Q8_DOT_END
}
LLMQ_NT_DISPATCH(q4_0_dot_q8, q4_0_q8_body, llmq_act_q8)

/* Q4_1's offset m enters once per block through the activation sum s. */
ALWAYS_INLINE void q4_1_q8_body(const void *row, const llmq_act_q8 *x, size_t xs, const int nt, int n, float *y, size_t ys)
{
    const llmq_block_q4_1 *b = row;
    const int nb = n / 32;
    Q8_DOT_BEGIN
    int i = 0;
    for (; i + 1 < nb; i += 2) {
        int8x16_t w0, w1, v0, v1;
        nibbles32(b[i].qs, &w0, &w1);
        nibbles32(b[i + 1].qs, &v0, &v1);
        const float d0 = h2f(b[i].d), m0 = h2f(b[i].m), d1 = h2f(b[i + 1].d), m1 = h2f(b[i + 1].m);
        UNROLL_T for (int t = 0; t < nt; t++) {
            const llmq_act_q8 *a = x + (size_t)t * xs + i;
            ACC_I32(acc0[t], dot32_s8(w0, w1, a), d0 * a[0].d);
            ACC_I32(acc1[t], dot32_s8(v0, v1, a + 1), d1 * a[1].d);
            corr0[t] += m0 * a[0].s;
            corr1[t] += m1 * a[1].s;
            TOKEN_FENCE();
        }
    }
    if (i < nb) {
        int8x16_t w0, w1;
        nibbles32(b[i].qs, &w0, &w1);
        const float d0 = h2f(b[i].d), m0 = h2f(b[i].m);
        UNROLL_T for (int t = 0; t < nt; t++) {
            const llmq_act_q8 *a = x + (size_t)t * xs + i;
            ACC_I32(acc0[t], dot32_s8(w0, w1, a), d0 * a->d);
            corr0[t] += m0 * a->s;
        }
    }
    Q8_DOT_END
}
LLMQ_NT_DISPATCH(q4_1_dot_q8, q4_1_q8_body, llmq_act_q8)

ALWAYS_INLINE void q8_0_q8_body(const void *row, const llmq_act_q8 *x, size_t xs, const int nt, int n, float *y, size_t ys)
{
    const llmq_block_q8_0 *b = row;
    const int nb = n / 32;
    Q8_DOT_BEGIN
    int i = 0;
    for (; i + 1 < nb; i += 2) {
        const int8x16_t w0 = vld1q_s8(b[i].qs), w1 = vld1q_s8(b[i].qs + 16);
        const int8x16_t v0 = vld1q_s8(b[i + 1].qs), v1 = vld1q_s8(b[i + 1].qs + 16);
        const float d0 = h2f(b[i].d), d1 = h2f(b[i + 1].d);
        UNROLL_T for (int t = 0; t < nt; t++) {
            const llmq_act_q8 *a = x + (size_t)t * xs + i;
            ACC_I32(acc0[t], dot32_s8(w0, w1, a), d0 * a[0].d);
            ACC_I32(acc1[t], dot32_s8(v0, v1, a + 1), d1 * a[1].d);
            TOKEN_FENCE();
        }
    }
    if (i < nb) {
        const int8x16_t w0 = vld1q_s8(b[i].qs), w1 = vld1q_s8(b[i].qs + 16);
        const float d0 = h2f(b[i].d);
        UNROLL_T for (int t = 0; t < nt; t++) {
            const llmq_act_q8 *a = x + (size_t)t * xs + i;
            ACC_I32(acc0[t], dot32_s8(w0, w1, a), d0 * a->d);
        }
    }
    Q8_DOT_END
}
LLMQ_NT_DISPATCH(q8_0_dot_q8, q8_0_q8_body, llmq_act_q8)


/* Eight bytes → two vectors of four floats. */
static inline void u8x8_to_f32(const uint8_t *v, float32x4_t *lo, float32x4_t *hi)
{
    const uint16x8_t w = vmovl_u8(vld1_u8(v));
    *lo = vcvtq_f32_u32(vmovl_u16(vget_low_u16(w)));
    *hi = vcvtq_f32_u32(vmovl_u16(vget_high_u16(w)));
}

/* Q4_K: the sub-block mins enter through the activation sums, as two
 * vector products per super-block and token. */
ALWAYS_INLINE void q4_k_q8_body(const void *row, const llmq_act_q8 *x, size_t xs, const int nt, int n, float *y, size_t ys)
{
    const llmq_block_q4_k *b = row;
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    Q8_DOT_BEGIN
    for (int i = 0; i < n / 256; i++) {
        uint8_t sc8[8], mn8[8];
        llmq_q4_k_unpack_scales(b[i].scales, sc8, mn8);
        float32x4_t sc_lo, sc_hi, mn_lo, mn_hi;
        u8x8_to_f32(sc8, &sc_lo, &sc_hi);
        u8x8_to_f32(mn8, &mn_lo, &mn_hi);
        const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        float dsc[8];
        vst1q_f32(dsc, vmulq_n_f32(sc_lo, d));
        vst1q_f32(dsc + 4, vmulq_n_f32(sc_hi, d));
        mn_lo = vmulq_n_f32(mn_lo, dmin);
        mn_hi = vmulq_n_f32(mn_hi, dmin);
        UNROLL_T for (int t = 0; t < nt; t++) {
            const llmq_act_q8 *a = x + (size_t)t * xs + 8 * i;
            const float s_lo[4] = {a[0].s, a[1].s, a[2].s, a[3].s}, s_hi[4] = {a[4].s, a[5].s, a[6].s, a[7].s};
            acc0[t] = vfmsq_f32(acc0[t], mn_lo, vld1q_f32(s_lo));
            acc1[t] = vfmsq_f32(acc1[t], mn_hi, vld1q_f32(s_hi));
        }
        /* 32 bytes per 64 elements: low nibbles are sub-block 2c, high 2c+1 */
        for (int c = 0; c < 4; c++) {
            const uint8x16_t r0 = vld1q_u8(b[i].qs + 32 * c), r1 = vld1q_u8(b[i].qs + 32 * c + 16);
            const int8x16_t lo0 = vreinterpretq_s8_u8(vandq_u8(r0, m4)), lo1 = vreinterpretq_s8_u8(vandq_u8(r1, m4));
            const int8x16_t hi0 = vreinterpretq_s8_u8(vshrq_n_u8(r0, 4)), hi1 = vreinterpretq_s8_u8(vshrq_n_u8(r1, 4));
            UNROLL_T for (int t = 0; t < nt; t++) {
                const llmq_act_q8 *a = x + (size_t)t * xs + 8 * i + 2 * c;
                ACC_I32(acc0[t], dot32_s8(lo0, lo1, a), dsc[2 * c] * a[0].d);
                ACC_I32(acc1[t], dot32_s8(hi0, hi1, a + 1), dsc[2 * c + 1] * a[1].d);
                TOKEN_FENCE();
            }
        }
    }
    Q8_DOT_END
}
LLMQ_NT_DISPATCH(q4_k_dot_q8, q4_k_q8_body, llmq_act_q8)

/* Q6_K and Q3_K: 32 signed weights per activation block, in two halves of
 * 16 with their own scales (lanes lo, hi of sc). */
#define ACC_SCALED16(acc, a, w0, w1, d, sc, lo, hi)                                                            \
    do {                                                                                                       \
        const int16x8_t p0_ = mul16_s8(w0, vld1q_s8((a)->q)), p1_ = mul16_s8(w1, vld1q_s8((a)->q + 16));       \
        ACC_I32(acc, SCALE16(p0_, p1_, sc, lo, hi), (d) * (a)->d);                                             \
    } while (0)
/* Two 32-element sub-blocks q[0], q[1] against activation blocks a, a+1,
 * one per bank, with scales from lane l (an immediate) of sc on; then the
 * token's fence. The weights of a 128-element half are built one such pair
 * at a time, so that fewer vectors are live across the token loop. */
#define ACC_PAIR(t, a, q, d, sc, l)                                                \
    do {                                                                           \
        ACC_SCALED16(acc0[t], a, q[0][0], q[0][1], d, sc, l, (l) + 1);             \
        ACC_SCALED16(acc1[t], (a) + 1, q[1][0], q[1][1], d, sc, (l) + 2, (l) + 3); \
        TOKEN_FENCE();                                                             \
    } while (0)

/* 16 elements of two Q6_K sub-blocks (minus 32) from the low nibbles of l0
 * and l1 and bits 0..1 and 2..3 of hb; the next two sub-blocks are the same
 * on l0, l1, hb shifted right by 4. */
static inline void q6_k_pair16(uint8x16_t l0, uint8x16_t l1, uint8x16_t hb, int8x16_t *qa, int8x16_t *qb)
{
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    const int8x16_t k32 = vdupq_n_s8(32);
    const uint8x16_t ua = vorrq_u8(vandq_u8(l0, m4), vshlq_n_u8(vandq_u8(hb, vdupq_n_u8(0x03)), 4));
    const uint8x16_t ub = vorrq_u8(vandq_u8(l1, m4), vshlq_n_u8(vandq_u8(hb, vdupq_n_u8(0x0C)), 2));
    *qa = vsubq_s8(vreinterpretq_s8_u8(ua), k32);
    *qb = vsubq_s8(vreinterpretq_s8_u8(ub), k32);
}

ALWAYS_INLINE void q6_k_q8_body(const void *row, const llmq_act_q8 *x, size_t xs, const int nt, int n, float *y, size_t ys)
{
    const llmq_block_q6_k *b = row;
    Q8_DOT_BEGIN
    for (int i = 0; i < n / 256; i++) {
        const float d = h2f(b[i].d);
        for (int h = 0; h < 2; h++) {
            /* a 128-element half: sub-block k (32 elements) takes ql bytes
             * 32·(k&1).. (low nibbles for k < 2, high for k ≥ 2) and bits
             * 2k..2k+1 of the 32 qh bytes; q[k][p] is its 16-element half p */
            const uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            const int16x8_t sc = vmovl_s8(vld1_s8(b[i].scales + 8 * h));
            const llmq_act_q8 *a = x + 8 * i + 4 * h;
            int8x16_t q[2][2];
            UNROLL_2 for (int p = 0; p < 2; p++)
                q6_k_pair16(vld1q_u8(ql + 16 * p), vld1q_u8(ql + 32 + 16 * p), vld1q_u8(qh + 16 * p), &q[0][p], &q[1][p]);
            UNROLL_T for (int t = 0; t < nt; t++) ACC_PAIR(t, a + (size_t)t * xs, q, d, sc, 0);
            UNROLL_2 for (int p = 0; p < 2; p++)
                q6_k_pair16(vshrq_n_u8(vld1q_u8(ql + 16 * p), 4), vshrq_n_u8(vld1q_u8(ql + 32 + 16 * p), 4),
                            vshrq_n_u8(vld1q_u8(qh + 16 * p), 4), &q[0][p], &q[1][p]);
            UNROLL_T for (int t = 0; t < nt; t++) ACC_PAIR(t, a + (size_t)t * xs + 2, q, d, sc, 4);
        }
    }
    Q8_DOT_END
}
LLMQ_NT_DISPATCH(q6_k_dot_q8, q6_k_q8_body, llmq_act_q8)

/* Q3_K's twelve scale bytes → its sixteen 6-bit scales minus 32 (the values
 * llmq_q3_k_get_scale returns one at a time, here without a call, which
 * would clobber the accumulators): scale j has low four bits from byte j % 8
 * (low nibble for j < 8, high for j ≥ 8) and top two bits from byte
 * 8 + j % 4, bits 2·(j/4). Four scales per 32-bit operation, every shift
 * within bytes. */
static inline void q3_k_scales(const uint8_t s[12], int8_t sc[16])
{
    uint32_t lo0, lo1, hi;
    memcpy(&lo0, s, 4);
    memcpy(&lo1, s + 4, 4);
    memcpy(&hi, s + 8, 4);
    const uint32_t out[4] = {
        (lo0 & 0x0f0f0f0fu) | ((hi & 0x03030303u) << 4),
        (lo1 & 0x0f0f0f0fu) | (((hi >> 2) & 0x03030303u) << 4),
        ((lo0 >> 4) & 0x0f0f0f0fu) | (((hi >> 4) & 0x03030303u) << 4),
        ((lo1 >> 4) & 0x0f0f0f0fu) | (((hi >> 6) & 0x03030303u) << 4),
    };
    vst1q_s8(sc, vsubq_s8(vreinterpretq_s8_u8(vld1q_u8((const uint8_t *)out)), vdupq_n_s8(32)));
}

/* Two Q3_K sub-blocks, q[u][p] the 16-element half p of sub-block u, from
 * the low two bits of qs (which then move on by four bits) and bits bit,
 * bit+1 of hmask. */
static inline void q3_k_pair(uint8x16_t qs[2], const uint8x16_t hmask[2], int bit, int8x16_t q[2][2])
{
    const uint8x16_t m2 = vdupq_n_u8(3), four = vdupq_n_u8(4);
    UNROLL_2 for (int u = 0; u < 2; u++) {
        const uint8x16_t mask = vdupq_n_u8((uint8_t)(1u << (bit + u)));
        UNROLL_2 for (int p = 0; p < 2; p++) {
            const uint8x16_t set = vtstq_u8(hmask[p], mask);
            /* high bit clear → −4 */
            q[u][p] = vreinterpretq_s8_u8(vsubq_u8(vandq_u8(qs[p], m2), vbicq_u8(four, set)));
            qs[p] = vshrq_n_u8(qs[p], 2);
        }
    }
}

ALWAYS_INLINE void q3_k_q8_body(const void *row, const llmq_act_q8 *x, size_t xs, const int nt, int n, float *y, size_t ys)
{
    const llmq_block_q3_k *b = row;
    Q8_DOT_BEGIN
    for (int i = 0; i < n / 256; i++) {
        const float d = h2f(b[i].d);
        const uint8x16_t hmask[2] = {vld1q_u8(b[i].hmask), vld1q_u8(b[i].hmask + 16)};
        int8_t sc8[16];
        q3_k_scales(b[i].scales, sc8);
        for (int h = 0; h < 2; h++) {
            /* sub-block 4h+j takes bits 2j..2j+1 of this half's 32 qs bytes
             * and bit 4h+j of hmask */
            uint8x16_t qs[2] = {vld1q_u8(b[i].qs + 32 * h), vld1q_u8(b[i].qs + 32 * h + 16)};
            const int16x8_t sc = vmovl_s8(vld1_s8(sc8 + 8 * h));
            const llmq_act_q8 *a = x + 8 * i + 4 * h;
            int8x16_t q[2][2];
            q3_k_pair(qs, hmask, 4 * h, q);
            UNROLL_T for (int t = 0; t < nt; t++) ACC_PAIR(t, a + (size_t)t * xs, q, d, sc, 0);
            q3_k_pair(qs, hmask, 4 * h + 2, q);
            UNROLL_T for (int t = 0; t < nt; t++) ACC_PAIR(t, a + (size_t)t * xs + 2, q, d, sc, 4);
        }
    }
    Q8_DOT_END
}
LLMQ_NT_DISPATCH(q3_k_dot_q8, q3_k_q8_body, llmq_act_q8)

#define CHUNKED_OPS(name, block, block_bytes, dot_q8)                                                        \
    static void name##_dot(const void *row, const float *x, size_t xs, int nt, int n, float *y, size_t ys) \
    {                                                                                                    \
        dot_chunked(name##_dequant, block, block_bytes, row, x, xs, nt, n, y, ys);                       \
    }                                                                                                    \
    static const llmq_kernel_ops name##_ops = {name##_dequant, name##_dot, dot_q8};

CHUNKED_OPS(q4_0, 32, sizeof(llmq_block_q4_0), q4_0_dot_q8)
CHUNKED_OPS(q4_1, 32, sizeof(llmq_block_q4_1), q4_1_dot_q8)
CHUNKED_OPS(q8_0, 32, sizeof(llmq_block_q8_0), q8_0_dot_q8)
CHUNKED_OPS(q4_k, 256, sizeof(llmq_block_q4_k), q4_k_dot_q8)
CHUNKED_OPS(q6_k, 256, sizeof(llmq_block_q6_k), q6_k_dot_q8)
CHUNKED_OPS(q3_k, 256, sizeof(llmq_block_q3_k), q3_k_dot_q8)
CHUNKED_OPS(q5_0, 32, sizeof(llmq_block_q5_0), NULL)
CHUNKED_OPS(q5_1, 32, sizeof(llmq_block_q5_1), NULL)
CHUNKED_OPS(q5_k, 256, sizeof(llmq_block_q5_k), NULL)
CHUNKED_OPS(q2_k, 256, sizeof(llmq_block_q2_k), NULL)
CHUNKED_OPS(iq4_nl, 32, sizeof(llmq_block_iq4_nl), NULL)
CHUNKED_OPS(iq4_xs, 256, sizeof(llmq_block_iq4_xs), NULL)
CHUNKED_OPS(f16, 1, 2, NULL)
CHUNKED_OPS(bf16, 1, 2, NULL)
CHUNKED_OPS(f32, 1, 4, NULL)

const llmq_kernel_ops *llmq_ops_neon(llmq_type t)
{
    switch (t) {
    case LLMQ_TYPE_F32: return &f32_ops;
    case LLMQ_TYPE_F16: return &f16_ops;
    case LLMQ_TYPE_BF16: return &bf16_ops;
    case LLMQ_TYPE_Q4_0: return &q4_0_ops;
    case LLMQ_TYPE_Q4_1: return &q4_1_ops;
    case LLMQ_TYPE_Q8_0: return &q8_0_ops;
    case LLMQ_TYPE_Q4_K: return &q4_k_ops;
    case LLMQ_TYPE_Q6_K: return &q6_k_ops;
    case LLMQ_TYPE_Q3_K: return &q3_k_ops;
    case LLMQ_TYPE_Q5_0: return &q5_0_ops;
    case LLMQ_TYPE_Q5_1: return &q5_1_ops;
    case LLMQ_TYPE_Q5_K: return &q5_k_ops;
    case LLMQ_TYPE_Q2_K: return &q2_k_ops;
    case LLMQ_TYPE_IQ4_NL: return &iq4_nl_ops;
    case LLMQ_TYPE_IQ4_XS: return &iq4_xs_ops;
    default: return NULL;
    }
}

#else /* not AArch64 */

const llmq_kernel_ops *llmq_ops_neon(llmq_type t)
{
    (void)t;
    return NULL;
}

#endif
