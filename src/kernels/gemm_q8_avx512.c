/* AVX-512 VNNI micro-kernel of the int8 GEMM (gemm_q8.h): GQ_MR tokens ×
 * 32 rows, all of k. Per quad of elements: two 64-byte code loads, one
 * 4-byte activation broadcast per token, two vpdpbusd per token; per unit:
 * the integer sums (started at −128·Σq) to float, times a·d_x, added; for
 * Q4_1/Q4_K the unit's c·s_x besides. Built with -mavx512vnni (this file
 * only) and called after the CPU check of the dispatcher. */
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

/* A unit's int32 sums (32 rows, mt tokens) to float: times a·d_x, and c·s_x
 * for the offset types — the scalar reference's steps. */
LLMQ_ALWAYS_INLINE void unit_to_float(const gq_panel *p, const gq_acts *x, int t0, const int mt, int u, const int unit,
                                      const int has_offset, const __m512i *a0, const __m512i *a1, __m512 *f0, __m512 *f1)
{
    const int nb = p->in / 32, b = u * unit / 32;
    const __m512 s0 = _mm512_load_ps(p->scale + GQ_ROWS * u), s1 = _mm512_load_ps(p->scale + GQ_ROWS * u + 16);
    LLMQ_UNROLL_T for (int t = 0; t < mt; t++) {
        const __m512 d = _mm512_set1_ps(x->d[(size_t)(t0 + t) * nb + b]);
        f0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a0[t]), _mm512_mul_ps(s0, d), f0[t]);
        f1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a1[t]), _mm512_mul_ps(s1, d), f1[t]);
    }
    if (has_offset) {
        const __m512 o0 = _mm512_load_ps(p->offset + GQ_ROWS * u), o1 = _mm512_load_ps(p->offset + GQ_ROWS * u + 16);
        LLMQ_UNROLL_T for (int t = 0; t < mt; t++) {
            const __m512 sv = _mm512_set1_ps(unit == 16 ? x->s16[(size_t)(t0 + t) * (p->in / 16) + u] : x->s[(size_t)(t0 + t) * nb + b]);
            f0[t] = _mm512_fmadd_ps(o0, sv, f0[t]);
            f1[t] = _mm512_fmadd_ps(o1, sv, f1[t]);
        }
    }
}

LLMQ_ALWAYS_INLINE void kernel_body(const gq_panel *p, const gq_acts *x, int t0, const int mt, float *out, const int unit,
                                    const int has_offset)
{
    const int quads = unit / 4;
    const uint8_t *xr[GQ_MR];
    __m512 f0[GQ_MR], f1[GQ_MR];
    LLMQ_UNROLL_T for (int t = 0; t < mt; t++) {
        xr[t] = x->q + (size_t)(t0 + t) * p->in;
        f0[t] = f1[t] = _mm512_setzero_ps();
    }
    const int8_t *wc = p->codes;
    for (int u = 0; u < p->n_units; u++) {
        __m512i a0[GQ_MR], a1[GQ_MR];
        const __m512i c0 = _mm512_load_si512(p->corr + GQ_ROWS * u), c1 = _mm512_load_si512(p->corr + GQ_ROWS * u + 16);
        LLMQ_UNROLL_T for (int t = 0; t < mt; t++) {
            a0[t] = c0;
            a1[t] = c1;
        }
        const int k0 = u * unit;
        _Pragma("GCC unroll 8") for (int g = 0; g < quads; g++, wc += 128) {
            const __m512i w0 = _mm512_load_si512(wc), w1 = _mm512_load_si512(wc + 64);
            LLMQ_UNROLL_T for (int t = 0; t < mt; t++) {
                const __m512i xb = _mm512_set1_epi32(load_word(xr[t] + k0 + 4 * g));
                a0[t] = _mm512_dpbusd_epi32(a0[t], xb, w0);
                a1[t] = _mm512_dpbusd_epi32(a1[t], xb, w1);
            }
        }
        unit_to_float(p, x, t0, mt, u, unit, has_offset, a0, a1, f0, f1);
    }
    LLMQ_UNROLL_T for (int t = 0; t < mt; t++) {
        _mm512_storeu_ps(out + t * GQ_ROWS, f0[t]);
        _mm512_storeu_ps(out + t * GQ_ROWS + 16, f1[t]);
    }
}

/* The int16 GEMM: per pair of elements, two 64-byte code loads (16 rows ×
 * two int16 each), one 4-byte broadcast per token, two vpdpwssd per token. */
LLMQ_ALWAYS_INLINE void kernel16_body(const gq_panel *p, const gq_acts *x, int t0, const int mt, float *out, const int unit,
                                      const int has_offset)
{
    const int pairs = unit / 2;
    const int16_t *xr[GQ_MR];
    __m512 f0[GQ_MR], f1[GQ_MR];
    LLMQ_UNROLL_T for (int t = 0; t < mt; t++) {
        xr[t] = x->q16 + (size_t)(t0 + t) * p->in;
        f0[t] = f1[t] = _mm512_setzero_ps();
    }
    const int8_t *wc = p->codes;
    for (int u = 0; u < p->n_units; u++) {
        __m512i a0[GQ_MR], a1[GQ_MR];
        LLMQ_UNROLL_T for (int t = 0; t < mt; t++) a0[t] = a1[t] = _mm512_setzero_si512();
        const int k0 = u * unit;
        _Pragma("GCC unroll 16") for (int g = 0; g < pairs; g++, wc += 128) {
            const __m512i w0 = _mm512_load_si512(wc), w1 = _mm512_load_si512(wc + 64);
            LLMQ_UNROLL_T for (int t = 0; t < mt; t++) {
                const __m512i xb = _mm512_set1_epi32(load_word((const uint8_t *)(xr[t] + k0 + 2 * g)));
                a0[t] = _mm512_dpwssd_epi32(a0[t], xb, w0);
                a1[t] = _mm512_dpwssd_epi32(a1[t], xb, w1);
            }
        }
        unit_to_float(p, x, t0, mt, u, unit, has_offset, a0, a1, f0, f1);
    }
    LLMQ_UNROLL_T for (int t = 0; t < mt; t++) {
        _mm512_storeu_ps(out + t * GQ_ROWS, f0[t]);
        _mm512_storeu_ps(out + t * GQ_ROWS + 16, f1[t]);
    }
}

/* One function per (unit, offset) kind. */
#define GQ_KERNEL(name, unit, has_offset)                                                        \
    static void name(const gq_panel *p, const gq_acts *x, int t0, int mt, float *out)            \
    {                                                                                             \
        GQ_BY_TOKENS(kernel_body, p, x, t0, mt, out, unit, has_offset)                            \
    }
GQ_KERNEL(kernel_u32, 32, 0)
GQ_KERNEL(kernel_u32_offset, 32, 1)
GQ_KERNEL(kernel_u16, 16, 0)
GQ_KERNEL(kernel_u16_offset, 16, 1)
GQ_KERNEL_GETTER(llmq_gq_kernel_avx512, kernel_u32, kernel_u32_offset, kernel_u16, kernel_u16_offset)

#define GQ_KERNEL16(name, unit, has_offset)                                                      \
    static void name(const gq_panel *p, const gq_acts *x, int t0, int mt, float *out)            \
    {                                                                                             \
        GQ_BY_TOKENS(kernel16_body, p, x, t0, mt, out, unit, has_offset)                          \
    }
GQ_KERNEL16(kernel16_u32, 32, 0)
GQ_KERNEL16(kernel16_u32_offset, 32, 1)
GQ_KERNEL16(kernel16_u16, 16, 0)
GQ_KERNEL16(kernel16_u16_offset, 16, 1)
GQ_KERNEL_GETTER(llmq_gq_kernel16_avx512, kernel16_u32, kernel16_u32_offset, kernel16_u16, kernel16_u16_offset)

#else

gq_kernel_fn llmq_gq_kernel_avx512(int unit, int has_offset)
{
    (void)unit;
    (void)has_offset;
    return NULL;
}

gq_kernel_fn llmq_gq_kernel16_avx512(int unit, int has_offset)
{
    (void)unit;
    (void)has_offset;
    return NULL;
}

#endif
