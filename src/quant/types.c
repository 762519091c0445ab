/* The type traits table. Plain floats live here; the block formats register
 * their rows from src/quant/blocks.c through llmq_block_traits(). */
#include "llmq/types.h"

#include <ctype.h>
#include <strings.h>

static void f32_to_float(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f32_from_float(const float *src, void *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f16_to_float(const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = llmq_f16_to_f32(h[i]);
}

static void f16_from_float(const float *src, void *dst, int64_t n)
{
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++) h[i] = llmq_f32_to_f16(src[i]);
}

static void bf16_to_float(const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = llmq_bf16_to_f32(h[i]);
}

static void bf16_from_float(const float *src, void *dst, int64_t n)
{
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++) h[i] = llmq_f32_to_bf16(src[i]);
}

static void i32_to_float(const void *src, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        int32_t v;
        memcpy(&v, (const char *)src + 4 * i, 4);
        dst[i] = (float)v;
    }
}

/* Block-format rows, defined in blocks.c (a strong reference, so that
 * linking libllmq.a always pulls the block formats in). */
const llmq_type_traits *llmq_block_traits(int t);
const llmq_type_traits *llmq_hf_grid_traits(int t); /* src/quant/hf_grid.c */

static const llmq_type_traits float_traits[] = {
    [LLMQ_TYPE_F32] = {"f32", 1, 4, false, f32_to_float, f32_from_float},
    [LLMQ_TYPE_F16] = {"f16", 1, 2, false, f16_to_float, f16_from_float},
    [LLMQ_TYPE_I32] = {"i32", 1, 4, false, i32_to_float, NULL},
    [LLMQ_TYPE_BF16] = {"bf16", 1, 2, false, bf16_to_float, bf16_from_float},
};

const llmq_type_traits *llmq_type_get(int t)
{
    if (t < 0 || t >= LLMQ_TYPE_COUNT) return NULL;
    if (t < (int)(sizeof float_traits / sizeof float_traits[0]) && float_traits[t].name)
        return &float_traits[t];
    const llmq_type_traits *tr = llmq_block_traits(t);
    return tr ? tr : llmq_hf_grid_traits(t);
}

int llmq_type_from_name(const char *name)
{
    for (int t = 0; t < LLMQ_TYPE_COUNT; t++) {
        const llmq_type_traits *tr = llmq_type_get(t);
        if (tr && strcasecmp(tr->name, name) == 0) return t;
    }
    return -1;
}

size_t llmq_row_size(llmq_type t, int64_t n)
{
    const llmq_type_traits *tr = llmq_type_get(t);
    if (!tr) return 0;
    return (size_t)(n / tr->block_size) * tr->type_size;
}
