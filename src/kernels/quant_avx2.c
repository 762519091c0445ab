/* AVX2 + FMA + F16C kernels (x86-64; this file alone is built with
 * -mavx2 -mfma -mf16c and is only called after a CPU-feature check).
 * Decoders reproduce the reference dequantizers bit for bit (multiply, then
 * add: no fused rounding); the dots decode a chunk into L1 and run FMAs over
 * it for every token, so a row is read from memory once per call. */
#include "kernel_ops.h"

#if defined(__x86_64__)
#include "llmq/blocks.h"

#include <immintrin.h>
#include <string.h>

static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* 8 signed bytes (the low 8 of v) → 8 floats. */
static inline __m256 s8_to_ps(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

/* Stores the 16 signed bytes of v, times d, at dst[0..16). */
static inline void store16_scaled(float *dst, __m128i v, __m256 d)
{
    _mm256_storeu_ps(dst, _mm256_mul_ps(s8_to_ps(v), d));
    _mm256_storeu_ps(dst + 8, _mm256_mul_ps(s8_to_ps(_mm_srli_si128(v, 8)), d));
}

static void q4_0_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q4_0 *b = row;
    const __m128i m4 = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
    for (int i = 0; i < n / 32; i++, dst += 32) {
        const __m256 d = _mm256_set1_ps(h2f(b[i].d));
        const __m128i raw = _mm_loadu_si128((const __m128i *)b[i].qs);
        const __m128i lo = _mm_sub_epi8(_mm_and_si128(raw, m4), eight);
        const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), eight);
        store16_scaled(dst, lo, d);
        store16_scaled(dst + 16, hi, d);
    }
}

static void q4_1_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q4_1 *b = row;
    const __m128i m4 = _mm_set1_epi8(0x0F);
    for (int i = 0; i < n / 32; i++, dst += 32) {
        const __m256 d = _mm256_set1_ps(h2f(b[i].d)), m = _mm256_set1_ps(h2f(b[i].m));
        const __m128i raw = _mm_loadu_si128((const __m128i *)b[i].qs);
        const __m128i lo = _mm_and_si128(raw, m4), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), m4);
        _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_mul_ps(s8_to_ps(lo), d), m));
        _mm256_storeu_ps(dst + 8, _mm256_add_ps(_mm256_mul_ps(s8_to_ps(_mm_srli_si128(lo, 8)), d), m));
        _mm256_storeu_ps(dst + 16, _mm256_add_ps(_mm256_mul_ps(s8_to_ps(hi), d), m));
        _mm256_storeu_ps(dst + 24, _mm256_add_ps(_mm256_mul_ps(s8_to_ps(_mm_srli_si128(hi, 8)), d), m));
    }
}

static void q8_0_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q8_0 *b = row;
    for (int i = 0; i < n / 32; i++, dst += 32) {
        const __m256 d = _mm256_set1_ps(h2f(b[i].d));
        store16_scaled(dst, _mm_loadu_si128((const __m128i *)b[i].qs), d);
        store16_scaled(dst + 16, _mm_loadu_si128((const __m128i *)(b[i].qs + 16)), d);
    }
}

/* Stores the 32 small unsigned bytes of q as d·q − m. */
static inline void store32_affine(float *dst, __m256i q, __m256 d, __m256 m)
{
    const __m128i a = _mm256_castsi256_si128(q), b = _mm256_extracti128_si256(q, 1);
    _mm256_storeu_ps(dst, _mm256_sub_ps(_mm256_mul_ps(d, s8_to_ps(a)), m));
    _mm256_storeu_ps(dst + 8, _mm256_sub_ps(_mm256_mul_ps(d, s8_to_ps(_mm_srli_si128(a, 8))), m));
    _mm256_storeu_ps(dst + 16, _mm256_sub_ps(_mm256_mul_ps(d, s8_to_ps(b)), m));
    _mm256_storeu_ps(dst + 24, _mm256_sub_ps(_mm256_mul_ps(d, s8_to_ps(_mm_srli_si128(b, 8))), m));
}

static void q4_k_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q4_k *b = row;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int i = 0; i < n / 256; i++) {
        const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        for (int c = 0; c < 4; c++, dst += 64) {
            int sc1, m1, sc2, m2;
            llmq_q4_k_get_scale_min(b[i].scales, 2 * c, &sc1, &m1);
            llmq_q4_k_get_scale_min(b[i].scales, 2 * c + 1, &sc2, &m2);
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * c));
            store32_affine(dst, _mm256_and_si256(raw, m4), _mm256_set1_ps(d * (float)sc1), _mm256_set1_ps(dmin * (float)m1));
            store32_affine(dst + 32, _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4), _mm256_set1_ps(d * (float)sc2),
                           _mm256_set1_ps(dmin * (float)m2));
        }
    }
}

/* The fifth bits of a Q5_0/Q5_1 block as bytes: byte e is 16 where bit e of
 * the 32-bit qh is set, else 0 (each byte picks the qh byte that holds its
 * bit, then tests its own bit). */
static inline __m256i q5_high_bytes(const uint8_t qh[4])
{
    uint32_t h;
    memcpy(&h, qh, 4);
    const __m256i pick = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128, 1, 2,
                                         4, 8, 16, 32, 64, -128);
    const __m256i sel = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)h), pick), bit);
    return _mm256_and_si256(_mm256_cmpeq_epi8(sel, bit), _mm256_set1_epi8(16));
}

/* The 32 five-bit codes of a Q5_0/Q5_1 block, element order. */
static inline __m256i q5_codes(const uint8_t qs[16], const uint8_t qh[4])
{
    const __m128i m4 = _mm_set1_epi8(0x0F), raw = _mm_loadu_si128((const __m128i *)qs);
    const __m256i nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), _mm_and_si128(raw, m4));
    return _mm256_or_si256(nib, q5_high_bytes(qh));
}

static void q5_0_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q5_0 *b = row;
    for (int i = 0; i < n / 32; i++, dst += 32) {
        const __m256 d = _mm256_set1_ps(h2f(b[i].d));
        const __m256i q = _mm256_sub_epi8(q5_codes(b[i].qs, b[i].qh), _mm256_set1_epi8(16));
        store16_scaled(dst, _mm256_castsi256_si128(q), d);
        store16_scaled(dst + 16, _mm256_extracti128_si256(q, 1), d);
    }
}

static void q5_1_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q5_1 *b = row;
    for (int i = 0; i < n / 32; i++, dst += 32) {
        const __m256 d = _mm256_set1_ps(h2f(b[i].d)), m = _mm256_set1_ps(h2f(b[i].m));
        const __m256i q = q5_codes(b[i].qs, b[i].qh);
        const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
        _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_mul_ps(s8_to_ps(lo), d), m));
        _mm256_storeu_ps(dst + 8, _mm256_add_ps(_mm256_mul_ps(s8_to_ps(_mm_srli_si128(lo, 8)), d), m));
        _mm256_storeu_ps(dst + 16, _mm256_add_ps(_mm256_mul_ps(s8_to_ps(hi), d), m));
        _mm256_storeu_ps(dst + 24, _mm256_add_ps(_mm256_mul_ps(s8_to_ps(_mm_srli_si128(hi, 8)), d), m));
    }
}

/* Q5_K: Q4_K's nibbles, and bit 2c / 2c+1 of qh[l] as the fifth bit of the
 * first / second 32 elements of chunk c (a 16-bit shift keeps each byte's
 * own bit s at bit 0 for s < 8). */
static void q5_k_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q5_k *b = row;
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    for (int i = 0; i < n / 256; i++) {
        const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        const __m256i qh = _mm256_loadu_si256((const __m256i *)b[i].qh);
        for (int c = 0; c < 4; c++, dst += 64) {
            int sc1, m1, sc2, m2;
            llmq_q4_k_get_scale_min(b[i].scales, 2 * c, &sc1, &m1);
            llmq_q4_k_get_scale_min(b[i].scales, 2 * c + 1, &sc2, &m2);
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * c));
            const __m128i s1 = _mm_cvtsi32_si128(2 * c), s2 = _mm_cvtsi32_si128(2 * c + 1);
            const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, s1), one), 4);
            const __m256i h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, s2), one), 4);
            store32_affine(dst, _mm256_or_si256(_mm256_and_si256(raw, m4), h1), _mm256_set1_ps(d * (float)sc1),
                           _mm256_set1_ps(dmin * (float)m1));
            store32_affine(dst + 32, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4), h2), _mm256_set1_ps(d * (float)sc2),
                           _mm256_set1_ps(dmin * (float)m2));
        }
    }
}

/* IQ4: the 16 levels as a byte table, looked up 16 codes at a time. */
static inline void iq4_store32(float *dst, const uint8_t qs[16], __m256 d)
{
    const __m128i table = _mm_loadu_si128((const __m128i *)llmq_iq4nl_levels), m4 = _mm_set1_epi8(0x0F);
    const __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    store16_scaled(dst, _mm_shuffle_epi8(table, _mm_and_si128(raw, m4)), d);
    store16_scaled(dst + 16, _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(raw, 4), m4)), d);
}

static void iq4_nl_dequant(const void *row, float *dst, int n)
{
    const llmq_block_iq4_nl *b = row;
    for (int i = 0; i < n / 32; i++, dst += 32) iq4_store32(dst, b[i].qs, _mm256_set1_ps(h2f(b[i].d)));
}

static void iq4_xs_dequant(const void *row, float *dst, int n)
{
    const llmq_block_iq4_xs *b = row;
    for (int i = 0; i < n / 256; i++) {
        const float d = h2f(b[i].d);
        for (int ib = 0; ib < 8; ib++, dst += 32) {
            iq4_store32(dst, b[i].qs + 16 * ib, _mm256_set1_ps(d * (float)llmq_iq4_xs_scale(&b[i], ib)));
        }
    }
}

/* Q2_K: per 128-element half, 32 code bytes; shift 2s gives elements
 * 32s..32s+31 of the half, two sub-blocks of 16, each with its d·sc and
 * dmin·m (d·q − m, as the reference). */
static void q2_k_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q2_k *b = row;
    const __m256i m2 = _mm256_set1_epi8(3);
    for (int i = 0; i < n / 256; i++) {
        const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        for (int h = 0; h < 2; h++) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * h));
            for (int s = 0; s < 4; s++, dst += 32) {
                const __m256i q = _mm256_and_si256(_mm256_srl_epi16(raw, _mm_cvtsi32_si128(2 * s)), m2);
                const uint8_t sc0 = b[i].scales[8 * h + 2 * s], sc1 = b[i].scales[8 * h + 2 * s + 1];
                const __m128i q0 = _mm256_castsi256_si128(q), q1 = _mm256_extracti128_si256(q, 1);
                const __m256 d0 = _mm256_set1_ps(d * (float)(sc0 & 0xF)), n0 = _mm256_set1_ps(dmin * (float)(sc0 >> 4));
                const __m256 d1 = _mm256_set1_ps(d * (float)(sc1 & 0xF)), n1 = _mm256_set1_ps(dmin * (float)(sc1 >> 4));
                _mm256_storeu_ps(dst, _mm256_sub_ps(_mm256_mul_ps(d0, s8_to_ps(q0)), n0));
                _mm256_storeu_ps(dst + 8, _mm256_sub_ps(_mm256_mul_ps(d0, s8_to_ps(_mm_srli_si128(q0, 8))), n0));
                _mm256_storeu_ps(dst + 16, _mm256_sub_ps(_mm256_mul_ps(d1, s8_to_ps(q1)), n1));
                _mm256_storeu_ps(dst + 24, _mm256_sub_ps(_mm256_mul_ps(d1, s8_to_ps(_mm_srli_si128(q1, 8))), n1));
            }
        }
    }
}

/* Stores 32 signed bytes as two sub-blocks of 16: the first times d1, the
 * second times d2. */
static inline void store32_two_scales(float *dst, __m256i q, __m256 d1, __m256 d2)
{
    store16_scaled(dst, _mm256_castsi256_si128(q), d1);
    store16_scaled(dst + 16, _mm256_extracti128_si256(q, 1), d2);
}

static void q6_k_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q6_k *b = row;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3), k32 = _mm256_set1_epi8(32);
    for (int i = 0; i < n / 256; i++) {
        const float d = h2f(b[i].d);
        for (int h = 0; h < 2; h++, dst += 128) {
            const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(b[i].ql + 64 * h));
            const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(b[i].ql + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(b[i].qh + 32 * h));
            const int8_t *sc = b[i].scales + 8 * h;
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
            for (int k = 0; k < 4; k++)
                store32_two_scales(dst + 32 * k, _mm256_sub_epi8(q[k], k32), _mm256_set1_ps(d * (float)sc[2 * k]),
                                   _mm256_set1_ps(d * (float)sc[2 * k + 1]));
        }
    }
}

static void q3_k_dequant(const void *row, float *dst, int n)
{
    const llmq_block_q3_k *b = row;
    const __m256i m2 = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4), zero = _mm256_setzero_si256();
    for (int i = 0; i < n / 256; i++) {
        const float d = h2f(b[i].d);
        const __m256i hmask = _mm256_loadu_si256((const __m256i *)b[i].hmask);
        int sc[16];
        for (int j = 0; j < 16; j++) sc[j] = llmq_q3_k_get_scale(b[i].scales, j);
        for (int h = 0; h < 2; h++) {
            const __m256i qs = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * h));
            for (int j = 0; j < 4; j++, dst += 32) {
                const int bit = 4 * h + j;
                __m256i lo = _mm256_and_si256(_mm256_srl_epi16(qs, _mm_cvtsi32_si128(2 * j)), m2);
                /* high bit clear → subtract 4 */
                __m256i hb = _mm256_and_si256(hmask, _mm256_set1_epi8((char)(1 << bit)));
                __m256i sub = _mm256_and_si256(_mm256_cmpeq_epi8(hb, zero), four);
                store32_two_scales(dst, _mm256_sub_epi8(lo, sub), _mm256_set1_ps(d * (float)sc[2 * bit]),
                                   _mm256_set1_ps(d * (float)sc[2 * bit + 1]));
            }
        }
    }
}

static void f16_dequant(const void *row, float *dst, int n)
{
    const uint16_t *h = row;
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    for (; i < n; i++) dst[i] = h2f(h[i]);
}

static void bf16_dequant(const void *row, float *dst, int n)
{
    const uint16_t *h = row;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(h + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
    for (; i < n; i++) dst[i] = llmq_bf16_to_f32(h[i]);
}

static void f32_dequant(const void *row, float *dst, int n)
{
    memcpy(dst, row, (size_t)n * sizeof(float));
}

static inline float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Decode a chunk into L1, then FMAs for each token. */
static inline void dot_chunked(void (*dequant)(const void *, float *, int), int block, size_t block_bytes, const void *row,
                               const float *x, size_t xs, int nt, int n, float *y, size_t ys)
{
    float buf[LLMQ_DOT_CHUNK] __attribute__((aligned(32)));
    __m256 acc0[LLMQ_DOT_MAX_TOKENS], acc1[LLMQ_DOT_MAX_TOKENS];
    float tail[LLMQ_DOT_MAX_TOKENS] = {0};
    for (int t = 0; t < nt; t++) acc0[t] = acc1[t] = _mm256_setzero_ps();
    for (int i0 = 0; i0 < n; i0 += LLMQ_DOT_CHUNK) {
        const int len = n - i0 < LLMQ_DOT_CHUNK ? n - i0 : LLMQ_DOT_CHUNK;
        dequant((const char *)row + (size_t)(i0 / block) * block_bytes, buf, len);
        const int len16 = len & ~15;
        for (int t = 0; t < nt; t++) {
            const float *xt = x + (size_t)t * xs + i0;
            __m256 a0 = acc0[t], a1 = acc1[t];
            for (int i = 0; i < len16; i += 16) {
                a0 = _mm256_fmadd_ps(_mm256_load_ps(buf + i), _mm256_loadu_ps(xt + i), a0);
                a1 = _mm256_fmadd_ps(_mm256_load_ps(buf + i + 8), _mm256_loadu_ps(xt + i + 8), a1);
            }
            for (int i = len16; i < len; i++) tail[t] += buf[i] * xt[i];
            acc0[t] = a0;
            acc1[t] = a1;
        }
    }
    for (int t = 0; t < nt; t++) y[(size_t)t * ys] = hsum(_mm256_add_ps(acc0[t], acc1[t])) + tail[t];
}

#define CHUNKED_OPS(name, block, block_bytes)                                                            \
    static void name##_dot(const void *row, const float *x, size_t xs, int nt, int n, float *y, size_t ys) \
    {                                                                                                    \
        dot_chunked(name##_dequant, block, block_bytes, row, x, xs, nt, n, y, ys);                       \
    }                                                                                                    \
    static const llmq_kernel_ops name##_ops = {name##_dequant, name##_dot, NULL};

/* ---- integer dots of the --fast path (int8 activations, llmq_act_q8) ----
 * maddubs multiplies unsigned by signed bytes and adds pairs into int16;
 * madd with ones adds pairs again into eight int32 partial sums. Weights
 * that are unsigned nibbles (Q4_0, Q4_1, Q4_K) go in as they are, their
 * offset corrected once per block through the activation block's s; signed
 * weights go in as |w| with the activation taking w's sign. No sum can
 * saturate: |w| ≤ 128 and |q| ≤ 127 bound a pair by 32512. Each block's
 * eight partial sums are scaled by d_w·d_x and kept in a vector until the end. */
static inline __m256i dot_u8s8(__m256i w, __m256i x) { return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1)); }
static inline __m256i dot_s8s8(__m256i w, __m256i x) { return dot_u8s8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)); }
/* Two 16-element halves with their own int16 scales: Σ sc_half · w·x. */
static inline __m256i dot_s8s8_scaled16(__m256i w, __m256i x, int sc_lo, int sc_hi)
{
    const __m256i sc = _mm256_set_m128i(_mm_set1_epi16((short)sc_hi), _mm_set1_epi16((short)sc_lo));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)), sc);
}
static inline __m256i load_act(const llmq_act_q8 *b) { return _mm256_loadu_si256((const __m256i *)b->q); }
/* 16 bytes of nibbles → 32 bytes: low nibbles first, then high nibbles. */
static inline __m256i nibbles32(const uint8_t *qs)
{
    const __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0F));
}

/* The dots below are written once for a token count nt that the dispatcher
 * makes a compile-time constant (1..4): the per-token accumulators then live
 * in registers rather than in a stack array, and two banks of them (even and
 * odd blocks) keep two FMA chains in flight. */
#define UNROLL_T LLMQ_UNROLL_T
#define ALWAYS_INLINE LLMQ_ALWAYS_INLINE

#define Q8_DOT_BEGIN                                                   \
    __m256 acc0[LLMQ_DOT_MAX_TOKENS], acc1[LLMQ_DOT_MAX_TOKENS];       \
    float corr0[LLMQ_DOT_MAX_TOKENS], corr1[LLMQ_DOT_MAX_TOKENS];      \
    UNROLL_T for (int t = 0; t < nt; t++) {                            \
        acc0[t] = acc1[t] = _mm256_setzero_ps();                       \
        corr0[t] = corr1[t] = 0;                                       \
    }
#define Q8_DOT_END                                                     \
    UNROLL_T for (int t = 0; t < nt; t++) y[(size_t)t * ys] = hsum(_mm256_add_ps(acc0[t], acc1[t])) + (corr0[t] + corr1[t]);

/* acc += (Σ of the eight int32 partial sums p) · scale */
#define ACC_I32(acc, p, scale) ((acc) = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(scale), (acc)))

ALWAYS_INLINE void q4_0_q8_body(const void *row, const llmq_act_q8 *x, size_t xs, const int nt, int n, float *y, size_t ys)
{
    const llmq_block_q4_0 *b = row;
    const __m256i eight = _mm256_set1_epi8(8);
    const int nb = n / 32;
    Q8_DOT_BEGIN
    int i = 0;
    for (; i + 1 < nb; i += 2) {
        const __m256i q0 = _mm256_sub_epi8(nibbles32(b[i].qs), eight), q1 = _mm256_sub_epi8(nibbles32(b[i + 1].qs), eight);
        const float d0 = h2f(b[i].d), d1 = h2f(b[i + 1].d);
        UNROLL_T for (int t = 0; t < nt; t++) {
            const llmq_act_q8 *a = x + (size_t)t * xs + i;
            ACC_I32(acc0[t], dot_s8s8(q0, load_act(a)), d0 * a[0].d);
            ACC_I32(acc1[t], dot_s8s8(q1, load_act(a + 1)), d1 * a[1].d);
        }
    }
    if (i < nb) {
        const __m256i q0 = _mm256_sub_epi8(nibbles32(b[i].qs), eight);
        const float d0 = h2f(b[i].d);
        UNROLL_T for (int t = 0; t < nt; t++) {
            const llmq_act_q8 *a = x + (size_t)t * xs + i;
            ACC_I32(acc0[t], dot_s8s8(q0, load_act(a)), d0 * a->d);
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
        const __m256i q0 = nibbles32(b[i].qs), q1 = nibbles32(b[i + 1].qs);
        const float d0 = h2f(b[i].d), m0 = h2f(b[i].m), d1 = h2f(b[i + 1].d), m1 = h2f(b[i + 1].m);
        UNROLL_T for (int t = 0; t < nt; t++) {
            const llmq_act_q8 *a = x + (size_t)t * xs + i;
            ACC_I32(acc0[t], dot_u8s8(q0, load_act(a)), d0 * a[0].d);
            ACC_I32(acc1[t], dot_u8s8(q1, load_act(a + 1)), d1 * a[1].d);
            corr0[t] += m0 * a[0].s;
            corr1[t] += m1 * a[1].s;
        }
    }
    if (i < nb) {
        const __m256i q0 = nibbles32(b[i].qs);
        const float d0 = h2f(b[i].d), m0 = h2f(b[i].m);
        UNROLL_T for (int t = 0; t < nt; t++) {
            const llmq_act_q8 *a = x + (size_t)t * xs + i;
            ACC_I32(acc0[t], dot_u8s8(q0, load_act(a)), d0 * a->d);
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
        const __m256i q0 = _mm256_loadu_si256((const __m256i *)b[i].qs), q1 = _mm256_loadu_si256((const __m256i *)b[i + 1].qs);
        const float d0 = h2f(b[i].d), d1 = h2f(b[i + 1].d);
        UNROLL_T for (int t = 0; t < nt; t++) {
            const llmq_act_q8 *a = x + (size_t)t * xs + i;
            ACC_I32(acc0[t], dot_s8s8(q0, load_act(a)), d0 * a[0].d);
            ACC_I32(acc1[t], dot_s8s8(q1, load_act(a + 1)), d1 * a[1].d);
        }
    }
    if (i < nb) {
        const __m256i q0 = _mm256_loadu_si256((const __m256i *)b[i].qs);
        const float d0 = h2f(b[i].d);
        UNROLL_T for (int t = 0; t < nt; t++) {
            const llmq_act_q8 *a = x + (size_t)t * xs + i;
            ACC_I32(acc0[t], dot_s8s8(q0, load_act(a)), d0 * a->d);
        }
    }
    Q8_DOT_END
}
LLMQ_NT_DISPATCH(q8_0_dot_q8, q8_0_q8_body, llmq_act_q8)



/* Q4_K: per super-block and token, the eight d·scale·d_x products and the
 * min corrections are one vector each (the activation scales and sums come
 * from the row's contiguous side arrays); each sub-block's factor is then a
 * lane broadcast. */
ALWAYS_INLINE void q4_k_q8_body(const void *row, const llmq_act_q8 *x, size_t xs, const int nt, int n, float *y, size_t ys)
{
    const llmq_block_q4_k *b = row;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    Q8_DOT_BEGIN
    for (int i = 0; i < n / 256; i++) {
        uint32_t w[4];
        llmq_q4_k_scale_words(b[i].scales, w);
        const __m128i scmn = _mm_setr_epi32((int)w[0], (int)w[1], (int)w[2], (int)w[3]);
        const __m256 dsc = _mm256_mul_ps(_mm256_set1_ps(h2f(b[i].d)), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(scmn)));
        const __m256 mins = _mm256_mul_ps(_mm256_set1_ps(h2f(b[i].dmin)), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(scmn, 8))));
        __m256 scl[LLMQ_DOT_MAX_TOKENS];
        UNROLL_T for (int t = 0; t < nt; t++) {
            const llmq_act_q8 *xr = x + (size_t)t * xs;
            scl[t] = _mm256_mul_ps(dsc, _mm256_loadu_ps(llmq_act_q8_d(xr, n) + 8 * i));
            acc1[t] = _mm256_fnmadd_ps(mins, _mm256_loadu_ps(llmq_act_q8_s(xr, n) + 8 * i), acc1[t]);
        }
        _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * c));
            const __m256i lo = _mm256_and_si256(raw, m4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            const __m256i lane0 = _mm256_set1_epi32(2 * c), lane1 = _mm256_set1_epi32(2 * c + 1);
            UNROLL_T for (int t = 0; t < nt; t++) {
                const llmq_act_q8 *a = x + (size_t)t * xs + 8 * i + 2 * c;
                acc0[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_u8s8(lo, load_act(a))), _mm256_permutevar8x32_ps(scl[t], lane0), acc0[t]);
                acc1[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_u8s8(hi, load_act(a + 1))), _mm256_permutevar8x32_ps(scl[t], lane1), acc1[t]);
            }
        }
    }
    Q8_DOT_END
}
LLMQ_NT_DISPATCH(q4_k_dot_q8, q4_k_q8_body, llmq_act_q8)

/* Q6_K and Q3_K: 32 signed weights per activation block, in two halves of
 * 16 with their own scales (applied in the integer madd). */
#define ACC_SCALED16(acc, a, q, d, sc_lo, sc_hi) ACC_I32(acc, dot_s8s8_scaled16(q, load_act(a), sc_lo, sc_hi), (d) * (a)->d)

ALWAYS_INLINE void q6_k_q8_body(const void *row, const llmq_act_q8 *x, size_t xs, const int nt, int n, float *y, size_t ys)
{
    const llmq_block_q6_k *b = row;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3), k32 = _mm256_set1_epi8(32);
    /* bytes 0,1 of every dword into the low 128 bits, bytes 2,3 into the high */
    const __m256i spread = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    Q8_DOT_BEGIN
    for (int i = 0; i < n / 256; i++) {
        const float d = h2f(b[i].d);
        /* the sixteen scales as int16, dword j = (scale 2j, scale 2j+1) */
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b[i].scales));
        const float *dx[LLMQ_DOT_MAX_TOKENS];
        UNROLL_T for (int t = 0; t < nt; t++) dx[t] = llmq_act_q8_d(x + (size_t)t * xs, n) + 8 * i;
        _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
            const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(b[i].ql + 64 * h));
            const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(b[i].ql + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(b[i].qh + 32 * h));
            __m256i q[4], scv[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
            _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
                q[k] = _mm256_sub_epi8(q[k], k32);
                scv[k] = _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(sc16, _mm256_set1_epi32(4 * h + k)), spread);
            }
            UNROLL_T for (int t = 0; t < nt; t++) {
                const llmq_act_q8 *a = x + (size_t)t * xs + 8 * i + 4 * h;
                _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
                    const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(q[k], q[k]), _mm256_sign_epi8(load_act(a + k), q[k])), scv[k]);
                    const __m256 f = _mm256_mul_ps(_mm256_set1_ps(d), _mm256_broadcast_ss(dx[t] + 4 * h + k));
                    if (k & 1) acc1[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), f, acc1[t]);
                    else acc0[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), f, acc0[t]);
                }
            }
        }
    }
    Q8_DOT_END
}
LLMQ_NT_DISPATCH(q6_k_dot_q8, q6_k_q8_body, llmq_act_q8)

ALWAYS_INLINE void q3_k_q8_body(const void *row, const llmq_act_q8 *x, size_t xs, const int nt, int n, float *y, size_t ys)
{
    const llmq_block_q3_k *b = row;
    const __m256i m2 = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4), zero = _mm256_setzero_si256();
    const __m256i spread = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    Q8_DOT_BEGIN
    for (int i = 0; i < n / 256; i++) {
        const float d = h2f(b[i].d);
        uint32_t w[4];
        llmq_q3_k_scale_words(b[i].scales, w);
        /* the sixteen scales as int16, dword j = (scale 2j, scale 2j+1) */
        const __m256i sc16 =
            _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_setr_epi32((int)w[0], (int)w[1], (int)w[2], (int)w[3])), _mm256_set1_epi16(32));
        const __m256i hmask = _mm256_loadu_si256((const __m256i *)b[i].hmask);
        const float *dx[LLMQ_DOT_MAX_TOKENS];
        UNROLL_T for (int t = 0; t < nt; t++) dx[t] = llmq_act_q8_d(x + (size_t)t * xs, n) + 8 * i;
        _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
            const __m256i qs = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * h));
            _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
                const int bit = 4 * h + j;
                const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * j), m2);
                /* high bit clear → subtract 4 */
                const __m256i hb = _mm256_and_si256(hmask, _mm256_set1_epi8((char)(1 << bit)));
                const __m256i q = _mm256_sub_epi8(lo, _mm256_and_si256(_mm256_cmpeq_epi8(hb, zero), four));
                const __m256i scv = _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(sc16, _mm256_set1_epi32(bit)), spread);
                const __m256i aw = _mm256_sign_epi8(q, q);
                UNROLL_T for (int t = 0; t < nt; t++) {
                    const __m256i xa = _mm256_sign_epi8(load_act(x + (size_t)t * xs + 8 * i + bit), q);
                    const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xa), scv);
                    const __m256 f = _mm256_mul_ps(_mm256_set1_ps(d), _mm256_broadcast_ss(dx[t] + bit));
                    if (j & 1) acc1[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), f, acc1[t]);
                    else acc0[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), f, acc0[t]);
                }
            }
        }
    }
    Q8_DOT_END
}
LLMQ_NT_DISPATCH(q3_k_dot_q8, q3_k_q8_body, llmq_act_q8)

#define CHUNKED_OPS_Q8(name, block, block_bytes)                                                         \
    static void name##_dot(const void *row, const float *x, size_t xs, int nt, int n, float *y, size_t ys) \
    {                                                                                                    \
        dot_chunked(name##_dequant, block, block_bytes, row, x, xs, nt, n, y, ys);                       \
    }                                                                                                    \
    static const llmq_kernel_ops name##_ops = {name##_dequant, name##_dot, name##_dot_q8};

CHUNKED_OPS_Q8(q4_1, 32, sizeof(llmq_block_q4_1))
CHUNKED_OPS_Q8(q4_k, 256, sizeof(llmq_block_q4_k))
CHUNKED_OPS_Q8(q6_k, 256, sizeof(llmq_block_q6_k))
CHUNKED_OPS_Q8(q3_k, 256, sizeof(llmq_block_q3_k))
CHUNKED_OPS(q5_0, 32, sizeof(llmq_block_q5_0))
CHUNKED_OPS(q5_1, 32, sizeof(llmq_block_q5_1))
CHUNKED_OPS(q5_k, 256, sizeof(llmq_block_q5_k))
CHUNKED_OPS(q2_k, 256, sizeof(llmq_block_q2_k))
CHUNKED_OPS(iq4_nl, 32, sizeof(llmq_block_iq4_nl))
CHUNKED_OPS(iq4_xs, 256, sizeof(llmq_block_iq4_xs))
CHUNKED_OPS(f16, 1, 2)
CHUNKED_OPS(bf16, 1, 2)
CHUNKED_OPS(f32, 1, 4)

/* Q4_0 and Q8_0 decode in registers: per block, Σ q·x over the 32 elements
 * (q as small integers, exact in fp32), then one FMA with the block's d;
 * even and odd blocks go to separate accumulators. */
ALWAYS_INLINE __m256 dot32_f32(__m256 v0, __m256 v1, __m256 v2, __m256 v3, const float *xt)
{
    __m256 p = _mm256_mul_ps(v0, _mm256_loadu_ps(xt));
    p = _mm256_fmadd_ps(v1, _mm256_loadu_ps(xt + 8), p);
    p = _mm256_fmadd_ps(v2, _mm256_loadu_ps(xt + 16), p);
    return _mm256_fmadd_ps(v3, _mm256_loadu_ps(xt + 24), p);
}

/* Block i of Q4_0 or Q8_0 as four vectors of eight floats (the integers q). */
ALWAYS_INLINE void q4_0_block_ps(const llmq_block_q4_0 *b, __m256 v[4])
{
    const __m128i m4 = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
    const __m128i raw = _mm_loadu_si128((const __m128i *)b->qs);
    const __m128i lo = _mm_sub_epi8(_mm_and_si128(raw, m4), eight);
    const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), eight);
    v[0] = s8_to_ps(lo);
    v[1] = s8_to_ps(_mm_srli_si128(lo, 8));
    v[2] = s8_to_ps(hi);
    v[3] = s8_to_ps(_mm_srli_si128(hi, 8));
}
ALWAYS_INLINE void q8_0_block_ps(const llmq_block_q8_0 *b, __m256 v[4])
{
    const __m128i a = _mm_loadu_si128((const __m128i *)b->qs), c = _mm_loadu_si128((const __m128i *)(b->qs + 16));
    v[0] = s8_to_ps(a);
    v[1] = s8_to_ps(_mm_srli_si128(a, 8));
    v[2] = s8_to_ps(c);
    v[3] = s8_to_ps(_mm_srli_si128(c, 8));
}

#define F32_DOT_BODY(name, btype)                                                                                   \
    ALWAYS_INLINE void name##_f32_body(const void *row, const float *x, size_t xs, const int nt, int n, float *y, size_t ys) \
    {                                                                                                               \
        const btype *b = row;                                                                                       \
        const int nb = n / 32;                                                                                      \
        __m256 acc0[LLMQ_DOT_MAX_TOKENS], acc1[LLMQ_DOT_MAX_TOKENS];                                                \
        UNROLL_T for (int t = 0; t < nt; t++) acc0[t] = acc1[t] = _mm256_setzero_ps();                              \
        int i = 0;                                                                                                  \
        for (; i + 1 < nb; i += 2) {                                                                                \
            __m256 v[4], u[4];                                                                                      \
            name##_block_ps(&b[i], v);                                                                              \
            name##_block_ps(&b[i + 1], u);                                                                          \
            const __m256 d0 = _mm256_set1_ps(h2f(b[i].d)), d1 = _mm256_set1_ps(h2f(b[i + 1].d));                   \
            UNROLL_T for (int t = 0; t < nt; t++) {                                                                 \
                const float *xt = x + (size_t)t * xs + 32 * i;                                                      \
                acc0[t] = _mm256_fmadd_ps(d0, dot32_f32(v[0], v[1], v[2], v[3], xt), acc0[t]);                      \
                acc1[t] = _mm256_fmadd_ps(d1, dot32_f32(u[0], u[1], u[2], u[3], xt + 32), acc1[t]);                 \
            }                                                                                                       \
        }                                                                                                           \
        if (i < nb) {                                                                                               \
            __m256 v[4];                                                                                            \
            name##_block_ps(&b[i], v);                                                                              \
            const __m256 d0 = _mm256_set1_ps(h2f(b[i].d));                                                          \
            UNROLL_T for (int t = 0; t < nt; t++)                                                                   \
                acc0[t] = _mm256_fmadd_ps(d0, dot32_f32(v[0], v[1], v[2], v[3], x + (size_t)t * xs + 32 * i), acc0[t]); \
        }                                                                                                           \
        UNROLL_T for (int t = 0; t < nt; t++) y[(size_t)t * ys] = hsum(_mm256_add_ps(acc0[t], acc1[t]));             \
    }

F32_DOT_BODY(q4_0, llmq_block_q4_0)
F32_DOT_BODY(q8_0, llmq_block_q8_0)
LLMQ_NT_DISPATCH(q4_0_dot, q4_0_f32_body, float)
LLMQ_NT_DISPATCH(q8_0_dot, q8_0_f32_body, float)
static const llmq_kernel_ops q4_0_ops = {q4_0_dequant, q4_0_dot, q4_0_dot_q8};
static const llmq_kernel_ops q8_0_ops = {q8_0_dequant, q8_0_dot, q8_0_dot_q8};

const llmq_kernel_ops *llmq_ops_avx2(llmq_type t)
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

#else /* not x86-64 */

const llmq_kernel_ops *llmq_ops_avx2(llmq_type t)
{
    (void)t;
    return NULL;
}

#endif
