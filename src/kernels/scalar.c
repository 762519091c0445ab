/* Scalar reference kernels: decode with the type's reference dequantizer,
 * accumulate dot products in double. Every SIMD kernel is tested against
 * these. */
#include "kernel_ops.h"

#include <string.h>

#define SCALAR_OPS(name, type)                                                              \
    static void name##_dequant(const void *row, float *dst, int n)                          \
    {                                                                                       \
        llmq_type_get(type)->to_float(row, dst, n);                                         \
    }                                                                                       \
    static void name##_dot(const void *row, const float *x, size_t xs, int nt, int n, float *y, size_t ys) \
    {                                                                                       \
        scalar_dot(type, row, x, xs, nt, n, y, ys);                                         \
    }                                                                                       \
    static const llmq_kernel_ops name##_ops = {name##_dequant, name##_dot};

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

SCALAR_OPS(f32, LLMQ_TYPE_F32)
SCALAR_OPS(f16, LLMQ_TYPE_F16)
SCALAR_OPS(bf16, LLMQ_TYPE_BF16)
SCALAR_OPS(q4_0, LLMQ_TYPE_Q4_0)
SCALAR_OPS(q4_1, LLMQ_TYPE_Q4_1)
SCALAR_OPS(q8_0, LLMQ_TYPE_Q8_0)
SCALAR_OPS(q4_k, LLMQ_TYPE_Q4_K)
SCALAR_OPS(q6_k, LLMQ_TYPE_Q6_K)
SCALAR_OPS(q3_k, LLMQ_TYPE_Q3_K)

const llmq_kernel_ops *llmq_ops_scalar(llmq_type t)
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
