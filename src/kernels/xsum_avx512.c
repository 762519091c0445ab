/* AVX-512 (F + DQ) rows of llmq/xsum.h's exact sums: eight fp32 partials at
 * a time onto the 2⁻⁶⁰ grid and into their 128-bit slots, the same integers
 * as the portable path (both truncate |x|·2⁶⁰ exactly). */
#include "xsum_ops.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512DQ__)
#include <immintrin.h>

/* acc[j] += fixed(x[j]) for j < n, n a multiple of 8 (acc: n little-endian
 * 128-bit slots); returns false when some |x[j]| ≥ 2⁶⁶ or is NaN (that slot
 * gets 0 added). */
static bool row_f32(void *acc_, const float *x, int n)
{
    int64_t *acc = acc_;
    const __m512d scale = _mm512_set1_pd(0x1p60), down = _mm512_set1_pd(0x1p-64), up = _mm512_set1_pd(0x1p64),
                  limit = _mm512_set1_pd(0x1p126), zero_d = _mm512_setzero_pd();
    const __m512i zero = _mm512_setzero_si512(), ones = _mm512_set1_epi64(-1), one = _mm512_set1_epi64(1);
    const __m512i even = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0), odd = _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1);
    const __m512i mix_lo = _mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0), mix_hi = _mm512_set_epi64(15, 7, 14, 6, 13, 5, 12, 4);
    __mmask8 all_ok = 0xff;
    for (int j = 0; j + 8 <= n; j += 8) {
        const __m512d d = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + j)), scale);
        __m512d a = _mm512_abs_pd(d);
        const __mmask8 ok = _mm512_cmp_pd_mask(a, limit, _CMP_LT_OQ); /* false for NaN */
        all_ok &= ok;
        a = _mm512_maskz_mov_pd(ok, a);
        /* a = hi·2⁶⁴ + lo, both parts exact: hi an integer, lo < 2⁶⁴ (its fraction truncated below) */
        const __m512d hi_d = _mm512_roundscale_pd(_mm512_mul_pd(a, down), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const __m512d lo_d = _mm512_fnmadd_pd(hi_d, up, a);
        __m512i hi = _mm512_cvttpd_epi64(hi_d), lo = _mm512_cvttpd_epu64(lo_d);
        /* the sign: −(hi:lo) = (~hi + [lo = 0]) : −lo */
        const __mmask8 neg = _mm512_mask_cmp_pd_mask(ok, d, zero_d, _CMP_LT_OQ);
        const __m512i nhi = _mm512_xor_si512(hi, ones);
        hi = _mm512_mask_mov_epi64(hi, neg, _mm512_mask_add_epi64(nhi, _mm512_cmpeq_epi64_mask(lo, zero), nhi, one));
        lo = _mm512_mask_sub_epi64(lo, neg, zero, lo);
        /* the slots: (lo, hi) pairs, split into lows and highs, added with the carry, interleaved back */
        const __m512i a0 = _mm512_loadu_si512(acc + 2 * j), a1 = _mm512_loadu_si512(acc + 2 * j + 8);
        const __m512i L = _mm512_permutex2var_epi64(a0, even, a1), H = _mm512_permutex2var_epi64(a0, odd, a1);
        const __m512i L2 = _mm512_add_epi64(L, lo);
        const __mmask8 carry = _mm512_cmp_epu64_mask(L2, lo, _MM_CMPINT_LT);
        const __m512i H2 = _mm512_mask_add_epi64(_mm512_add_epi64(H, hi), carry, _mm512_add_epi64(H, hi), one);
        _mm512_storeu_si512(acc + 2 * j, _mm512_permutex2var_epi64(L2, mix_lo, H2));
        _mm512_storeu_si512(acc + 2 * j + 8, _mm512_permutex2var_epi64(L2, mix_hi, H2));
    }
    return all_ok == 0xff;
}

xsum_row_f32_fn llmq_xsum_row_f32_avx512(void) { return row_f32; }
#else
xsum_row_f32_fn llmq_xsum_row_f32_avx512(void) { return NULL; }
#endif
