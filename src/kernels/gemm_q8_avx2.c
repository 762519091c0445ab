/* AVX2 micro-kernel of the int8 GEMM (gemm_q8.h), for CPUs without AVX-512
 * VNNI. AVX2 has no 4-byte dot into int32: vpmaddubsw multiplies unsigned by
 * signed bytes into saturating int16 pairs, so as ggml's AVX2 dots do, the
 * activation (made signed again, −127..127) takes the weight's sign and the
 * weight its magnitude (≤ 128): each pair sums to at most 2·128·127 < 2^15,
 * and vpmaddwd against ones widens the pairs to int32 exactly. The integer
 * sums are therefore the VNNI kernel's, and the float steps the same, so both
 * give the same bits. Per pass: 4 tokens × 16 rows, twice per panel. That
 * sign trick is Q8_0's; the other types take the shorter unsigned path below. */
#include "gemm_q8.h"

#if defined(__x86_64__)
#include "kernel_ops.h"

#include <immintrin.h>
#include <string.h>

static inline int32_t load_word(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* A unit's int32 sums (16 rows from r0, mt tokens) to float: times a·d_x,
 * and c·s_x for the offset types — the scalar reference's steps. */
LLMQ_ALWAYS_INLINE void unit_to_float(const gq_panel *p, const gq_acts *x, int t0, const int mt, int u, int r0, const int unit,
                                      const int has_offset, const __m256i *a0, const __m256i *a1, __m256 *f0, __m256 *f1)
{
    const int nb = p->in / 32, b = u * unit / 32;
    const float *sc = p->scale + GQ_ROWS * u + r0;
    const __m256 s0 = _mm256_load_ps(sc), s1 = _mm256_load_ps(sc + 8);
    LLMQ_UNROLL_T for (int t = 0; t < mt; t++) {
        const __m256 d = _mm256_set1_ps(x->d[(size_t)(t0 + t) * nb + b]);
        f0[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a0[t]), _mm256_mul_ps(s0, d), f0[t]);
        f1[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a1[t]), _mm256_mul_ps(s1, d), f1[t]);
    }
    if (has_offset) {
        const float *of = p->offset + GQ_ROWS * u + r0;
        const __m256 o0 = _mm256_load_ps(of), o1 = _mm256_load_ps(of + 8);
        LLMQ_UNROLL_T for (int t = 0; t < mt; t++) {
            const __m256 sx = _mm256_set1_ps(unit == 16 ? x->s16[(size_t)(t0 + t) * (p->in / 16) + u] : x->s[(size_t)(t0 + t) * nb + b]);
            f0[t] = _mm256_fmadd_ps(o0, sx, f0[t]);
            f1[t] = _mm256_fmadd_ps(o1, sx, f1[t]);
        }
    }
}

LLMQ_ALWAYS_INLINE void kernel_body(const gq_panel *p, const gq_acts *x, int t0, const int mt, float *out, const int unit,
                                    const int has_offset)
{
    const int quads = unit / 4;
    const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8((char)0x80);
    for (int half = 0; half < 2; half++) {
        const int r0 = 16 * half;
        __m256 f0[GQ_MR], f1[GQ_MR];
        LLMQ_UNROLL_T for (int t = 0; t < mt; t++) f0[t] = f1[t] = _mm256_setzero_ps();
        const int8_t *wc = p->codes + 4 * r0;
        for (int u = 0; u < p->n_units; u++) {
            __m256i a0[GQ_MR], a1[GQ_MR];
            LLMQ_UNROLL_T for (int t = 0; t < mt; t++) a0[t] = a1[t] = _mm256_setzero_si256();
            const int k0 = u * unit;
            for (int g = 0; g < quads; g++, wc += 128) {
                const __m256i w0 = _mm256_load_si256((const __m256i *)wc), w1 = _mm256_load_si256((const __m256i *)(wc + 32));
                const __m256i m0 = _mm256_abs_epi8(w0), m1 = _mm256_abs_epi8(w1);
                LLMQ_UNROLL_T for (int t = 0; t < mt; t++) {
                    const __m256i xs = _mm256_xor_si256(
                        _mm256_set1_epi32(load_word(x->q + (size_t)(t0 + t) * p->in + k0 + 4 * g)), flip);
                    a0[t] = _mm256_add_epi32(a0[t], _mm256_madd_epi16(_mm256_maddubs_epi16(m0, _mm256_sign_epi8(xs, w0)), ones));
                    a1[t] = _mm256_add_epi32(a1[t], _mm256_madd_epi16(_mm256_maddubs_epi16(m1, _mm256_sign_epi8(xs, w1)), ones));
                }
            }
            unit_to_float(p, x, t0, mt, u, r0, unit, has_offset, a0, a1, f0, f1);
        }
        LLMQ_UNROLL_T for (int t = 0; t < mt; t++) {
            _mm256_storeu_ps(out + t * GQ_ROWS + r0, f0[t]);
            _mm256_storeu_ps(out + t * GQ_ROWS + r0 + 8, f1[t]);
        }
    }
}

/* Codes with a small unsigned form (every type but Q8_0): u = q + zero ≤
 * code_max goes straight into vpmaddubsw's unsigned operand, so no sign
 * trick; pairs are at most 2·code_max·127, so `run` quads (8 for 4-bit
 * codes, 4 for Q3_K's 3-bit and the Q5 types' 5-bit, 2 for Q6_K's 6-bit) add up in int16 before one
 * vpmaddwd widens them. Σ u·x = Σ q·x + zero·Σx: the unit starts at
 * −zero·Σx. Two tokens per pass keep the sums in registers. */
LLMQ_ALWAYS_INLINE void unsigned_pair(const gq_panel *p, const gq_acts *x, int t0, const int mt, float *out, const int unit,
                                      const int has_offset, const int run)
{
    const int n16 = p->in / 16, quads = unit / 4;
    const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8((char)0x80), zero = _mm256_set1_epi8((char)p->zero);
    for (int half = 0; half < 2; half++) {
        const int r0 = 16 * half;
        __m256 f0[2], f1[2];
        LLMQ_UNROLL_T for (int t = 0; t < mt; t++) f0[t] = f1[t] = _mm256_setzero_ps();
        const int8_t *wc = p->codes + 4 * r0;
        for (int u = 0; u < p->n_units; u++) {
            const int k0 = u * unit;
            __m256i a0[2], a1[2];
            LLMQ_UNROLL_T for (int t = 0; t < mt; t++) {
                const int32_t *qs = x->qsum16 + (size_t)(t0 + t) * n16 + k0 / 16;
                const int32_t sum = unit == 32 ? qs[0] + qs[1] : qs[0];
                a0[t] = a1[t] = _mm256_set1_epi32(-p->zero * sum);
            }
            for (int g0 = 0; g0 < quads; g0 += run) {
                __m256i s0[2], s1[2];
                LLMQ_UNROLL_T for (int t = 0; t < mt; t++) s0[t] = s1[t] = _mm256_setzero_si256();
                _Pragma("GCC unroll 8") for (int g = g0; g < g0 + run; g++, wc += 128) {
                    const __m256i w0 = _mm256_add_epi8(_mm256_load_si256((const __m256i *)wc), zero);
                    const __m256i w1 = _mm256_add_epi8(_mm256_load_si256((const __m256i *)(wc + 32)), zero);
                    LLMQ_UNROLL_T for (int t = 0; t < mt; t++) {
                        const __m256i xs = _mm256_xor_si256(_mm256_set1_epi32(load_word(x->q + (size_t)(t0 + t) * p->in + k0 + 4 * g)), flip);
                        s0[t] = _mm256_add_epi16(s0[t], _mm256_maddubs_epi16(w0, xs));
                        s1[t] = _mm256_add_epi16(s1[t], _mm256_maddubs_epi16(w1, xs));
                    }
                }
                LLMQ_UNROLL_T for (int t = 0; t < mt; t++) {
                    a0[t] = _mm256_add_epi32(a0[t], _mm256_madd_epi16(s0[t], ones));
                    a1[t] = _mm256_add_epi32(a1[t], _mm256_madd_epi16(s1[t], ones));
                }
            }
            unit_to_float(p, x, t0, mt, u, r0, unit, has_offset, a0, a1, f0, f1);
        }
        LLMQ_UNROLL_T for (int t = 0; t < mt; t++) {
            _mm256_storeu_ps(out + t * GQ_ROWS + r0, f0[t]);
            _mm256_storeu_ps(out + t * GQ_ROWS + r0 + 8, f1[t]);
        }
    }
}

/* The tile's tokens in pairs (one left over when mt is odd). */
LLMQ_ALWAYS_INLINE void unsigned_body(const gq_panel *p, const gq_acts *x, int t0, int mt, float *out, const int unit, const int has_offset,
                                      const int run)
{
    int t = 0;
    for (; t + 2 <= mt; t += 2) unsigned_pair(p, x, t0 + t, 2, out + t * GQ_ROWS, unit, has_offset, run);
    if (t < mt) unsigned_pair(p, x, t0 + t, 1, out + t * GQ_ROWS, unit, has_offset, run);
}

#define GQ_KERNEL(name, unit, has_offset)                                                        \
    static void name(const gq_panel *p, const gq_acts *x, int t0, int mt, float *out)            \
    {                                                                                             \
        if (p->zero >= 0 && unit == 32 && p->code_max <= 15) {                                    \
            unsigned_body(p, x, t0, mt, out, unit, has_offset, 8);                                \
            return;                                                                               \
        }                                                                                         \
        if (p->zero >= 0 && unit == 32 && p->code_max <= 31) {                                    \
            unsigned_body(p, x, t0, mt, out, unit, has_offset, 4);                                \
            return;                                                                               \
        }                                                                                         \
        if (p->zero >= 0 && unit == 16 && p->code_max <= 7) {                                     \
            unsigned_body(p, x, t0, mt, out, unit, has_offset, 4);                                \
            return;                                                                               \
        }                                                                                         \
        if (p->zero >= 0 && unit == 16 && p->code_max <= 63) {                                    \
            unsigned_body(p, x, t0, mt, out, unit, has_offset, 2);                                \
            return;                                                                               \
        }                                                                                         \
        GQ_BY_TOKENS(kernel_body, p, x, t0, mt, out, unit, has_offset)                            \
    }
GQ_KERNEL(kernel_u32, 32, 0)
GQ_KERNEL(kernel_u32_offset, 32, 1)
GQ_KERNEL(kernel_u16, 16, 0)
GQ_KERNEL(kernel_u16_offset, 16, 1)

GQ_KERNEL_GETTER(llmq_gq_kernel_avx2, kernel_u32, kernel_u32_offset, kernel_u16, kernel_u16_offset)

#else

gq_kernel_fn llmq_gq_kernel_avx2(int unit, int has_offset)
{
    (void)unit;
    (void)has_offset;
    return NULL;
}

#endif
