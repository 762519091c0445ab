/* Scalar reference kernels: decode with the type's reference dequantizer,
 * accumulate dot products in double. Every SIMD kernel is tested against
 * these. */
#include "kernel_ops.h"

#include <math.h>
#include <string.h>

size_t llmq_act_q8_stride(int n)
{
    const size_t nb = (size_t)n / 32;
    return nb + (2 * nb * sizeof(float) + sizeof(llmq_act_q8) - 1) / sizeof(llmq_act_q8);
}

void llmq_act_quantize_q8(const float *x, int n, llmq_act_q8 *dst)
{
    float *side_d = (float *)(dst + n / 32), *side_s = side_d + n / 32;
    for (int b = 0; b < n / 32; b++, x += 32) {
        float v[32];
        int sum;
        const float d = llmq_act_block_codes(x, 127.0f, v, &sum);
        for (int i = 0; i < 32; i++) dst[b].q[i] = (int8_t)v[i];
        dst[b].d = side_d[b] = d;
        dst[b].s = side_s[b] = d * (float)sum;
    }
}

#define SCALAR_BASE(name, type)                                                             \
    static void name##_dequant(const void *row, float *dst, int n)                          \
    {                                                                                       \
        llmq_type_get(type)->to_float(row, dst, n);                                         \
    }                                                                                       \
    static void name##_dot(const void *row, const float *x, size_t xs, int nt, int n, float *y, size_t ys) \
    {                                                                                       \
        scalar_dot(type, row, x, xs, nt, n, y, ys);                                         \
    }
/* Plain floats have no integer dot: --fast leaves them on the exact path. */
#define SCALAR_OPS(name, type)                                                              \
    SCALAR_BASE(name, type)                                                                 \
    static const llmq_kernel_ops name##_ops = {name##_dequant, name##_dot, NULL};
#define SCALAR_OPS_Q8(name, type)                                                           \
    SCALAR_BASE(name, type)                                                                 \
    static void name##_dot_q8(const void *row, const llmq_act_q8 *x, size_t xs, int nt, int n, float *y, size_t ys) \
    {                                                                                       \
        scalar_dot_q8(type, row, x, xs, nt, n, y, ys);                                      \
    }                                                                                       \
    static const llmq_kernel_ops name##_ops = {name##_dequant, name##_dot, name##_dot_q8};

static void scalar_dot(llmq_type t, const void *row, const float *x, size_t xs, int nt, int n, float *y, size_t ys)
{
    const llmq_type_traits *tr = llmq_type_get(t);
    float buf[LLMQ_DOT_CHUNK];
    double acc[LLMQ_DOT_MAX_TOKENS] = {0};
    for (int i0 = 0; i0 < n; i0 += LLMQ_DOT_CHUNK) {
        int len = n - i0 < LLMQ_DOT_CHUNK ? n - i0 : LLMQ_DOT_CHUNK;
        tr->to_float((const char *)row + (size_t)(i0 / tr->block_size) * tr->type_size, buf, len);
        for (int tk = 0; tk < nt; tk++) {
            const float *xt = x + (size_t)tk * xs + i0;
            double s = 0;
            for (int i = 0; i < len; i++) s += (double)buf[i] * xt[i];
            acc[tk] += s;
        }
    }
    for (int tk = 0; tk < nt; tk++) y[(size_t)tk * ys] = (float)acc[tk];
}

/* The reference for the integer dots: the same sum, Σ W[i]·d·q[i], with the
 * weights decoded by the reference dequantizer and the activation blocks
 * expanded, in double. */
static void scalar_dot_q8(llmq_type t, const void *row, const llmq_act_q8 *x, size_t xs, int nt, int n, float *y, size_t ys)
{
    const llmq_type_traits *tr = llmq_type_get(t);
    float buf[LLMQ_DOT_CHUNK];
    double acc[LLMQ_DOT_MAX_TOKENS] = {0};
    for (int i0 = 0; i0 < n; i0 += LLMQ_DOT_CHUNK) {
        int len = n - i0 < LLMQ_DOT_CHUNK ? n - i0 : LLMQ_DOT_CHUNK;
        tr->to_float((const char *)row + (size_t)(i0 / tr->block_size) * tr->type_size, buf, len);
        for (int tk = 0; tk < nt; tk++) {
            double s = 0;
            for (int i = 0; i < len; i++) {
                const llmq_act_q8 *b = x + (size_t)tk * xs + (i0 + i) / 32;
                s += (double)buf[i] * ((double)b->d * b->q[(i0 + i) % 32]);
            }
            acc[tk] += s;
        }
    }
    for (int tk = 0; tk < nt; tk++) y[(size_t)tk * ys] = (float)acc[tk];
}

SCALAR_OPS(f32, LLMQ_TYPE_F32)
SCALAR_OPS(f16, LLMQ_TYPE_F16)
SCALAR_OPS(bf16, LLMQ_TYPE_BF16)
SCALAR_OPS_Q8(q4_0, LLMQ_TYPE_Q4_0)
SCALAR_OPS_Q8(q4_1, LLMQ_TYPE_Q4_1)
SCALAR_OPS_Q8(q5_0, LLMQ_TYPE_Q5_0)
SCALAR_OPS_Q8(q5_1, LLMQ_TYPE_Q5_1)
SCALAR_OPS_Q8(q8_0, LLMQ_TYPE_Q8_0)
SCALAR_OPS_Q8(q5_k, LLMQ_TYPE_Q5_K)
SCALAR_OPS_Q8(q2_k, LLMQ_TYPE_Q2_K)
SCALAR_OPS_Q8(iq4_nl, LLMQ_TYPE_IQ4_NL)
SCALAR_OPS_Q8(iq4_xs, LLMQ_TYPE_IQ4_XS)
SCALAR_OPS_Q8(q4_k, LLMQ_TYPE_Q4_K)
SCALAR_OPS_Q8(q6_k, LLMQ_TYPE_Q6_K)
SCALAR_OPS_Q8(q3_k, LLMQ_TYPE_Q3_K)
SCALAR_OPS(hf_u4, LLMQ_TYPE_HF_U4)
SCALAR_OPS(hf_u8, LLMQ_TYPE_HF_U8)

const llmq_kernel_ops *llmq_ops_scalar(llmq_type t)
{
    switch (t) {
    case LLMQ_TYPE_F32: return &f32_ops;
    case LLMQ_TYPE_F16: return &f16_ops;
    case LLMQ_TYPE_BF16: return &bf16_ops;
    case LLMQ_TYPE_Q4_0: return &q4_0_ops;
    case LLMQ_TYPE_Q4_1: return &q4_1_ops;
    case LLMQ_TYPE_Q5_0: return &q5_0_ops;
    case LLMQ_TYPE_Q5_1: return &q5_1_ops;
    case LLMQ_TYPE_Q8_0: return &q8_0_ops;
    case LLMQ_TYPE_Q4_K: return &q4_k_ops;
    case LLMQ_TYPE_Q5_K: return &q5_k_ops;
    case LLMQ_TYPE_Q2_K: return &q2_k_ops;
    case LLMQ_TYPE_IQ4_NL: return &iq4_nl_ops;
    case LLMQ_TYPE_IQ4_XS: return &iq4_xs_ops;
    case LLMQ_TYPE_Q6_K: return &q6_k_ops;
    case LLMQ_TYPE_Q3_K: return &q3_k_ops;
    case LLMQ_TYPE_HF_U4: return &hf_u4_ops;
    case LLMQ_TYPE_HF_U8: return &hf_u8_ops;
    default: return NULL;
    }
}
