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

#define CHUNKED_OPS(name, block, block_bytes)                                                            \
    static void name##_dot(const void *row, const float *x, size_t xs, int nt, int n, float *y, size_t ys) \
    {                                                                                                    \
        dot_chunked(name##_dequant, block, block_bytes, row, x, xs, nt, n, y, ys);                       \
    }                                                                                                    \
    static const llmq_kernel_ops name##_ops = {name##_dequant, name##_dot, NULL};

CHUNKED_OPS(q4_0, 32, sizeof(llmq_block_q4_0))
CHUNKED_OPS(q4_1, 32, sizeof(llmq_block_q4_1))
CHUNKED_OPS(q8_0, 32, sizeof(llmq_block_q8_0))
CHUNKED_OPS(q4_k, 256, sizeof(llmq_block_q4_k))
CHUNKED_OPS(q6_k, 256, sizeof(llmq_block_q6_k))
CHUNKED_OPS(q3_k, 256, sizeof(llmq_block_q3_k))
CHUNKED_OPS(f16, 1, 2)
CHUNKED_OPS(bf16, 1, 2)
CHUNKED_OPS(f32, 1, 4)

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
