/* The type traits table: one row per type, its name and sizes, decoder and
 * reference encoder. Plain floats are coded here; the block formats' codecs
 * come from src/formats/blocks.c, and the K-quants' encoder is llmq's RTN
 * (src/formats/rtn.c), so the table sits above both. Whole rows quantized to,
 * or measured against, a type by its row live here too. */
#include "llmq/types.h"
#include "llmq/blocks.h"
#include "llmq/hf_grid.h"
#include "llmq/error.h"
#include "llmq/rtn.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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

/* K-quants: llmq's grid-first RTN with the native sub-blocks and the search
 * on (close to, not bit-identical with, ggml's make_qkx2/make_qx refs). */
#define K_FROM_FLOAT(name, type)                                                  \
    static void name(const float *x, void *dst, int64_t n)                        \
    {                                                                             \
        llmq_quantize_row(type, x, (int)n, 0, true, dst);                         \
    }
K_FROM_FLOAT(q4_k_from_float, LLMQ_TYPE_Q4_K)
K_FROM_FLOAT(q5_k_from_float, LLMQ_TYPE_Q5_K)
K_FROM_FLOAT(q2_k_from_float, LLMQ_TYPE_Q2_K)
K_FROM_FLOAT(iq4_xs_from_float, LLMQ_TYPE_IQ4_XS)
K_FROM_FLOAT(iq4_nl_from_float, LLMQ_TYPE_IQ4_NL)
/* Q5_0/Q5_1 too: llmq's RTN on the native blocks (plain fit, no search), as
 * ggml's quantize_row_q5_*_ref choose d and m. */
#define PLAIN_FROM_FLOAT(name, type)                                              \
    static void name(const float *x, void *dst, int64_t n)                        \
    {                                                                             \
        llmq_quantize_row(type, x, (int)n, 0, false, dst);                        \
    }
PLAIN_FROM_FLOAT(q5_0_from_float, LLMQ_TYPE_Q5_0)
PLAIN_FROM_FLOAT(q5_1_from_float, LLMQ_TYPE_Q5_1)
K_FROM_FLOAT(q6_k_from_float, LLMQ_TYPE_Q6_K)
K_FROM_FLOAT(q3_k_from_float, LLMQ_TYPE_Q3_K)

static void i32_to_float(const void *src, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        int32_t v;
        memcpy(&v, (const char *)src + 4 * i, 4);
        dst[i] = (float)v;
    }
}

static const llmq_type_traits type_traits[LLMQ_TYPE_COUNT] = {
    [LLMQ_TYPE_I32] = {llmq_type_names[LLMQ_TYPE_I32], 1, 4, false, i32_to_float, NULL},
    [LLMQ_TYPE_F32] = {llmq_type_names[LLMQ_TYPE_F32], 1, 4, false, f32_to_float, f32_from_float},
    [LLMQ_TYPE_F16] = {llmq_type_names[LLMQ_TYPE_F16], 1, 2, false, f16_to_float, f16_from_float},
    [LLMQ_TYPE_BF16] = {llmq_type_names[LLMQ_TYPE_BF16], 1, 2, false, bf16_to_float, bf16_from_float},
    [LLMQ_TYPE_Q4_0] = {llmq_type_names[LLMQ_TYPE_Q4_0], LLMQ_QK, sizeof(llmq_block_q4_0), true, llmq_dequant_q4_0, llmq_encode_ref_q4_0},
    [LLMQ_TYPE_Q4_1] = {llmq_type_names[LLMQ_TYPE_Q4_1], LLMQ_QK, sizeof(llmq_block_q4_1), true, llmq_dequant_q4_1, llmq_encode_ref_q4_1},
    [LLMQ_TYPE_Q5_0] = {llmq_type_names[LLMQ_TYPE_Q5_0], LLMQ_QK, sizeof(llmq_block_q5_0), true, llmq_dequant_q5_0, q5_0_from_float},
    [LLMQ_TYPE_Q5_1] = {llmq_type_names[LLMQ_TYPE_Q5_1], LLMQ_QK, sizeof(llmq_block_q5_1), true, llmq_dequant_q5_1, q5_1_from_float},
    [LLMQ_TYPE_Q8_0] = {llmq_type_names[LLMQ_TYPE_Q8_0], LLMQ_QK, sizeof(llmq_block_q8_0), true, llmq_dequant_q8_0, llmq_encode_ref_q8_0},
    [LLMQ_TYPE_IQ4_NL] = {llmq_type_names[LLMQ_TYPE_IQ4_NL], LLMQ_QK, sizeof(llmq_block_iq4_nl), true, llmq_dequant_iq4_nl, iq4_nl_from_float},
    [LLMQ_TYPE_IQ4_XS] = {llmq_type_names[LLMQ_TYPE_IQ4_XS], LLMQ_QK_K, sizeof(llmq_block_iq4_xs), true, llmq_dequant_iq4_xs, iq4_xs_from_float},
    [LLMQ_TYPE_Q2_K] = {llmq_type_names[LLMQ_TYPE_Q2_K], LLMQ_QK_K, sizeof(llmq_block_q2_k), true, llmq_dequant_q2_k, q2_k_from_float},
    [LLMQ_TYPE_Q3_K] = {llmq_type_names[LLMQ_TYPE_Q3_K], LLMQ_QK_K, sizeof(llmq_block_q3_k), true, llmq_dequant_q3_k, q3_k_from_float},
    [LLMQ_TYPE_Q4_K] = {llmq_type_names[LLMQ_TYPE_Q4_K], LLMQ_QK_K, sizeof(llmq_block_q4_k), true, llmq_dequant_q4_k, q4_k_from_float},
    [LLMQ_TYPE_Q5_K] = {llmq_type_names[LLMQ_TYPE_Q5_K], LLMQ_QK_K, sizeof(llmq_block_q5_k), true, llmq_dequant_q5_k, q5_k_from_float},
    [LLMQ_TYPE_Q6_K] = {llmq_type_names[LLMQ_TYPE_Q6_K], LLMQ_QK_K, sizeof(llmq_block_q6_k), true, llmq_dequant_q6_k, q6_k_from_float},
    [LLMQ_TYPE_Q8_K] = {llmq_type_names[LLMQ_TYPE_Q8_K], LLMQ_QK_K, sizeof(llmq_block_q8_k), true, llmq_dequant_q8_k, llmq_encode_ref_q8_k},
};

const llmq_type_traits *llmq_type_get(int t)
{
    if (t < 0 || t >= LLMQ_TYPE_COUNT) return NULL;
    if (!type_traits[t].name) return llmq_hf_grid_traits(t); /* the HF GPTQ/AWQ grids (hf_grid.c), or NULL */
    return &type_traits[t];
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

/* ------------------------------------------------ whole rows, by type */

int llmq_quantize_row(llmq_type t, const float *src, int n, int group_size, bool rtn_search, void *dst)
{
    const llmq_type_traits *tr = llmq_type_get(t);
    if (!tr) return llmq_error("quantize: unknown type %d", (int)t);
    if (t == LLMQ_TYPE_F32 || t == LLMQ_TYPE_F16 || t == LLMQ_TYPE_BF16) {
        tr->from_float(src, dst, n);
        return LLMQ_OK;
    }
    group_size = llmq_group_resolve(t, group_size);
    if (llmq_group_check(t, n, group_size) != LLMQ_OK) return LLMQ_ERR;
    llmq_grid *grids = malloc(sizeof *grids * (size_t)llmq_group_count(n, group_size));
    if (!grids) return llmq_error("quantize %s: out of memory for the grids of a %d-element row", tr->name, n);
    llmq_rtn_opts opts = {.search = rtn_search, .importance = NULL};
    int rc = llmq_rtn_grids(t, src, n, group_size, grids, &opts);
    if (rc == LLMQ_OK) rc = llmq_pack_row(t, src, n, group_size, grids, dst);
    free(grids);
    return rc;
}

int llmq_quantize_rows(llmq_type t, const float *src, int64_t rows, int n, int group_size, bool rtn_search, void *dst)
{
    const llmq_type_traits *tr = llmq_type_get(t);
    if (!tr) return llmq_error("quantize: unknown type %d", (int)t);
    if (tr->is_quantized && llmq_group_check(t, n, llmq_group_resolve(t, group_size)) != LLMQ_OK) return LLMQ_ERR;
    const size_t row_bytes = llmq_row_size(t, n);
    int failed = 0;
    char message[256] = "";
    #pragma omp parallel for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; r++) {
        int skip;
        #pragma omp atomic read
        skip = failed;
        if (skip) continue;
        if (llmq_quantize_row(t, src + r * n, n, group_size, rtn_search, (char *)dst + r * row_bytes) != LLMQ_OK) {
            /* The message is thread-local: carry it back to the caller's thread. */
            #pragma omp critical(llmq_quantize_rows_error)
            {
                if (!failed) snprintf(message, sizeof message, "%s", llmq_last_error());
                failed = 1;
            }
        }
    }
    if (failed) return llmq_error("%s", message);
    return LLMQ_OK;
}

int llmq_quant_error_sums(llmq_type t, const float *src, const void *packed, int64_t rows, int n, double *num, double *den)
{
    /* Rows in chunks of a fixed size, each summed on one thread, the chunk
     * sums added in order: the same sums whatever the thread count. */
    enum { CHUNK = 64 };
    const llmq_type_traits *tr = llmq_type_get(t);
    if (!tr || !tr->to_float) return llmq_error("quant error: unknown type %d", (int)t);
    if (n <= 0 || n % tr->block_size) return llmq_error("quant error: %s row of %d elements", tr->name, n);
    const int64_t chunks = (rows + CHUNK - 1) / CHUNK;
    double *sums = calloc((size_t)(2 * chunks + 1), sizeof *sums);
    if (!sums) return llmq_error("quant error: out of memory");
    const size_t row_bytes = llmq_row_size(t, n);
    int failed = 0;
    #pragma omp parallel if (rows * n >= (1 << 16))
    {
        float *buf = malloc(sizeof *buf * (size_t)n);
        if (!buf) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(static)
        for (int64_t c = 0; c < chunks; c++) {
            if (!buf) continue;
            double e2 = 0, x2 = 0;
            for (int64_t r = c * CHUNK; r < rows && r < (c + 1) * CHUNK; r++) {
                tr->to_float((const char *)packed + r * row_bytes, buf, n);
                const float *x = src + r * n;
                for (int i = 0; i < n; i++) {
                    const double d = (double)x[i] - buf[i];
                    e2 += d * d;
                    x2 += (double)x[i] * x[i];
                }
            }
            sums[2 * c] = e2;
            sums[2 * c + 1] = x2;
        }
        free(buf);
    }
    for (int64_t c = 0; c < chunks && !failed; c++) {
        *num += sums[2 * c];
        *den += sums[2 * c + 1];
    }
    free(sums);
    return failed ? llmq_error("quant error: out of memory") : LLMQ_OK;
}

int llmq_quant_rel_error(llmq_type t, const float *src, const void *packed, int64_t rows, int n, double *rel_error)
{
    double num = 0, den = 0;
    if (llmq_quant_error_sums(t, src, packed, rows, n, &num, &den) != LLMQ_OK) return LLMQ_ERR;
    *rel_error = den == 0 ? (num == 0 ? 0.0 : INFINITY) : sqrt(num / den);
    return LLMQ_OK;
}
