/* AVX-512 VNNI integer dots of the --fast path (x86-64; this file alone is
 * built with -mavx512f -mavx512bw -mavx512vl -mavx512vnni and is only called
 * after a CPU-feature check). One vpdpbusd multiplies 64 unsigned by signed
 * bytes and adds each four into an int32 lane, where AVX2 needs four
 * instructions per 32 weights; for the 4-bit types, whose GEMV is bound by
 * this arithmetic rather than by memory, that is what lifts them to the
 * memory bandwidth. The table holds only these dots: decoding and the exact
 * fp32 dots come from the AVX2 table (see llmq_kernel_ops_for). */
#include "kernel_ops.h"

#if defined(__x86_64__)
#include "llmq/blocks.h"

#include <immintrin.h>
#include <string.h>

#define ALWAYS_INLINE LLMQ_ALWAYS_INLINE
#define UNROLL_T LLMQ_UNROLL_T

static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* Two consecutive 32-element activation blocks as one register, in the
 * order of two Q4_0/Q4_1 blocks' nibbles: [a0 0..15 | a1 0..15 | a0 16..31 | a1 16..31]. */
ALWAYS_INLINE __m512i act_pair_nibble_order(const llmq_act_q8 *a)
{
    const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a[0].q)),
                                         _mm256_loadu_si256((const __m256i *)a[1].q), 1);
    return _mm512_shuffle_i64x2(v, v, _MM_SHUFFLE(3, 1, 2, 0));
}

/* Two blocks' 16 nibble bytes → [b0 low | b1 low | b0 high | b1 high] nibbles. */
ALWAYS_INLINE __m512i nibbles_pair(const uint8_t *qs0, const uint8_t *qs1)
{
    const __m256i r = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)qs0)),
                                              _mm_loadu_si128((const __m128i *)qs1), 1);
    return _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(r), _mm256_srli_epi16(r, 4), 1), _mm512_set1_epi8(0x0F));
}

/* [v0, v1] (two floats) spread to the lanes of a nibble-order pair: lanes
 * 0–3 and 8–11 belong to the first block, 4–7 and 12–15 to the second. */
ALWAYS_INLINE __m512 spread_pair(__m128 v)
{
    const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v));
}

ALWAYS_INLINE __m128 halves_pair(uint16_t h0, uint16_t h1)
{
    return _mm_cvtph_ps(_mm_insert_epi16(_mm_cvtsi32_si128(h0), h1, 1));
}

/* Two consecutive floats into the low lanes (the upper two are zero). */
ALWAYS_INLINE __m128 load_pair(const float *p) { return _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)p)); }

static inline float hsum512(__m512 v) { return _mm512_reduce_add_ps(v); }

/* Q4_0: weights q − 8 are signed, so the activations go in unsigned as
 * x + 128 and the surplus 128·Σw (Σw from a dpbusd against ones) is taken
 * back in int32 — the block's integer dot stays exact. */
ALWAYS_INLINE void q4_0_body(const void *row, const llmq_act_q8 *x, size_t xs, const int nt, int n, float *y, size_t ys)
{
    const llmq_block_q4_0 *b = row;
    const int nb = n / 32;
    const __m512i eight = _mm512_set1_epi8(8), ones = _mm512_set1_epi8(1), flip = _mm512_set1_epi8((char)0x80);
    __m512 acc[4];
    float tail[4] = {0};
    UNROLL_T for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 1 < nb; i += 2) {
        const __m512i w = _mm512_sub_epi8(nibbles_pair(b[i].qs, b[i + 1].qs), eight);
        const __m512i wsum128 = _mm512_slli_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, w), 7);
        const __m128 dw = halves_pair(b[i].d, b[i + 1].d);
        UNROLL_T for (int t = 0; t < nt; t++) {
            const llmq_act_q8 *a = x + (size_t)t * xs + i;
            const __m512i xu = _mm512_xor_si512(act_pair_nibble_order(a), flip);
            const __m512i p = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), xu, w), wsum128);
            const __m512 scale = spread_pair(_mm_mul_ps(dw, load_pair(llmq_act_q8_d(x + (size_t)t * xs, n) + i)));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), scale, acc[t]);
        }
    }
    if (i < nb) { /* an odd last block: the reference dot for it */
        float w[32];
        llmq_dequant_q4_0(&b[i], w, 32);
        UNROLL_T for (int t = 0; t < nt; t++) {
            const llmq_act_q8 *a = x + (size_t)t * xs + i;
            float acc1 = 0;
            for (int k = 0; k < 32; k++) acc1 += w[k] * (a->d * a->q[k]);
            tail[t] = acc1;
        }
    }
    UNROLL_T for (int t = 0; t < nt; t++) y[(size_t)t * ys] = hsum512(acc[t]) + tail[t];
}
LLMQ_NT_DISPATCH(q4_0_dot_q8, q4_0_body, llmq_act_q8)

/* Q4_1: unsigned nibbles as they are; the offset m enters through the
 * activation sums s, two blocks at a time. */
ALWAYS_INLINE void q4_1_body(const void *row, const llmq_act_q8 *x, size_t xs, const int nt, int n, float *y, size_t ys)
{
    const llmq_block_q4_1 *b = row;
    const int nb = n / 32;
    __m512 acc[4];
    __m128 corr[4];
    float tail[4] = {0};
    UNROLL_T for (int t = 0; t < nt; t++) {
        acc[t] = _mm512_setzero_ps();
        corr[t] = _mm_setzero_ps();
    }
    int i = 0;
    for (; i + 1 < nb; i += 2) {
        const __m512i q = nibbles_pair(b[i].qs, b[i + 1].qs);
        const __m128 dw = halves_pair(b[i].d, b[i + 1].d), mw = halves_pair(b[i].m, b[i + 1].m);
        UNROLL_T for (int t = 0; t < nt; t++) {
            const llmq_act_q8 *a = x + (size_t)t * xs + i;
            const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, act_pair_nibble_order(a));
            const llmq_act_q8 *xr = x + (size_t)t * xs;
            const __m512 scale = spread_pair(_mm_mul_ps(dw, load_pair(llmq_act_q8_d(xr, n) + i)));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), scale, acc[t]);
            corr[t] = _mm_fmadd_ps(mw, load_pair(llmq_act_q8_s(xr, n) + i), corr[t]);
        }
    }
    if (i < nb) {
        float w[32];
        llmq_dequant_q4_1(&b[i], w, 32);
        UNROLL_T for (int t = 0; t < nt; t++) {
            const llmq_act_q8 *a = x + (size_t)t * xs + i;
            float s = 0;
            for (int k = 0; k < 32; k++) s += w[k] * (a->d * a->q[k]);
            tail[t] = s;
        }
    }
    UNROLL_T for (int t = 0; t < nt; t++) {
        const __m128 c = _mm_add_ps(corr[t], _mm_movehdup_ps(corr[t]));
        y[(size_t)t * ys] = hsum512(acc[t]) + _mm_cvtss_f32(c) + tail[t];
    }
}
LLMQ_NT_DISPATCH(q4_1_dot_q8, q4_1_body, llmq_act_q8)


/* Q4_K: as the AVX2 dot (two 32-element sub-blocks per 32 bytes of
 * nibbles, mins through the activation sums once per super-block), with one
 * 256-bit vpdpbusd per sub-block in place of vpmaddubsw + vpmaddwd; the
 * 512-bit form measured slower here (assembling its per-lane scales costs
 * more than the multiply it saves). */
ALWAYS_INLINE void q4_k_body(const void *row, const llmq_act_q8 *x, size_t xs, const int nt, int n, float *y, size_t ys)
{
    const llmq_block_q4_k *b = row;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc0[4], acc1[4];
    UNROLL_T for (int t = 0; t < nt; t++) acc0[t] = acc1[t] = _mm256_setzero_ps();
    for (int i = 0; i < n / 256; i++) {
        uint32_t w[4];
        llmq_q4_k_scale_words(b[i].scales, w);
        const __m128i scmn = _mm_setr_epi32((int)w[0], (int)w[1], (int)w[2], (int)w[3]);
        const __m256 dsc = _mm256_mul_ps(_mm256_set1_ps(h2f(b[i].d)), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(scmn)));
        const __m256 mins = _mm256_mul_ps(_mm256_set1_ps(h2f(b[i].dmin)), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(scmn, 8))));
        __m256 scl[4];
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
                const __m256i p0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), lo, _mm256_loadu_si256((const __m256i *)a[0].q));
                const __m256i p1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), hi, _mm256_loadu_si256((const __m256i *)a[1].q));
                acc0[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_permutevar8x32_ps(scl[t], lane0), acc0[t]);
                acc1[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_permutevar8x32_ps(scl[t], lane1), acc1[t]);
            }
        }
    }
    UNROLL_T for (int t = 0; t < nt; t++) {
        const __m256 v = _mm256_add_ps(acc0[t], acc1[t]);
        const __m128 c4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        const __m128 c2 = _mm_add_ps(c4, _mm_movehl_ps(c4, c4));
        y[(size_t)t * ys] = _mm_cvtss_f32(_mm_add_ss(c2, _mm_movehdup_ps(c2)));
    }
}
LLMQ_NT_DISPATCH(q4_k_dot_q8, q4_k_body, llmq_act_q8)

static const llmq_kernel_ops q4_0_ops = {NULL, NULL, q4_0_dot_q8};
static const llmq_kernel_ops q4_1_ops = {NULL, NULL, q4_1_dot_q8};
static const llmq_kernel_ops q4_k_ops = {NULL, NULL, q4_k_dot_q8};

const llmq_kernel_ops *llmq_ops_avx512(llmq_type t)
{
    switch (t) {
    case LLMQ_TYPE_Q4_0: return &q4_0_ops;
    case LLMQ_TYPE_Q4_1: return &q4_1_ops;
    case LLMQ_TYPE_Q4_K: return &q4_k_ops;
    default: return NULL;
    }
}

#else /* not x86-64 */

const llmq_kernel_ops *llmq_ops_avx512(llmq_type t)
{
    (void)t;
    return NULL;
}

#endif
