/* Binding the packed linears of a Hugging Face GPTQ / AWQ checkpoint as llmq
 * weights. See llmq/hf_load.h. */
#include "llmq/hf_load.h"

#include "llmq/error.h"
#include "llmq/hf_grid.h"
#include "llmq/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline uint32_t rd32(const void *base, size_t i)
{
    uint32_t v;
    memcpy(&v, (const char *)base + 4 * i, 4);
    return v;
}

static inline uint16_t rd16(const void *base, size_t i)
{
    uint16_t v;
    memcpy(&v, (const char *)base + 2 * i, 2);
    return v;
}

/* The tensor prefix.suffix, checked for dtype and shape (d1 = 0: a vector). */
static const llmq_st_tensor *find_checked(const llmq_model *m, const llmq_safetensors *st, const char *prefix, const char *suffix,
                                          llmq_type type, int64_t d0, int64_t d1, bool optional, int *rc)
{
    char name[256];
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    const llmq_st_tensor *t = llmq_st_find(st, name);
    if (!t) {
        if (!optional) *rc = llmq_error("%s: tensor '%s' is missing (quantization_config says the linears are packed)", m->path, name);
        return NULL;
    }
    if (t->type != type) {
        *rc = llmq_error("%s: tensor '%s': dtype %s, expected %s", t->file, name, llmq_type_get(t->type)->name, llmq_type_get(type)->name);
        return NULL;
    }
    const int want = d1 ? 2 : 1;
    if (t->n_dims != want || t->shape[0] != d0 || (d1 && t->shape[1] != d1)) {
        char got[64] = "", exp[64];
        for (int d = 0; d < t->n_dims; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? "×" : "", (long long)t->shape[d]);
        if (d1) snprintf(exp, sizeof exp, "%lld×%lld", (long long)d0, (long long)d1);
        else snprintf(exp, sizeof exp, "%lld", (long long)d0);
        *rc = llmq_error("%s: tensor '%s': shape %s does not match config.json and quantization_config (%s)", t->file, name, got, exp);
        return NULL;
    }
    return t;
}

/* Writes block b of a row in type t from its fields and 32 unsigned codes. */
static void put_block(llmq_type t, void *row, int b, uint16_t d, int z, const uint8_t *q)
{
    switch (t) {
    case LLMQ_TYPE_Q4_0: {
        llmq_block_q4_0 *y = (llmq_block_q4_0 *)row + b;
        y->d = d;
        for (int j = 0; j < 16; j++) y->qs[j] = (uint8_t)(q[j] | (q[j + 16] << 4));
        break;
    }
    case LLMQ_TYPE_HF_U4: {
        llmq_block_hf_u4 *y = (llmq_block_hf_u4 *)row + b;
        y->d = d;
        y->z = (uint16_t)z;
        for (int j = 0; j < 16; j++) y->qs[j] = (uint8_t)(q[j] | (q[j + 16] << 4));
        break;
    }
    case LLMQ_TYPE_Q8_0: {
        llmq_block_q8_0 *y = (llmq_block_q8_0 *)row + b;
        y->d = d;
        for (int j = 0; j < 32; j++) y->qs[j] = (int8_t)(q[j] - 128);
        break;
    }
    default: {
        llmq_block_hf_u8 *y = (llmq_block_hf_u8 *)row + b;
        y->d = d;
        y->z = (uint16_t)z;
        memcpy(y->qs, q, 32);
        break;
    }
    }
}

int llmq_hf_bind_linear(llmq_model *m, const llmq_safetensors *st, const llmq_hf_qconfig *q, const char *prefix, int rows, int cols,
                        llmq_weight *w)
{
    memset(w, 0, sizeof *w);
    const bool awq = q->method == LLMQ_HF_AWQ;
    const int bits = q->bits, pf = 32 / bits, gs = q->group_size ? q->group_size : cols;
    const uint32_t mask = (1u << bits) - 1;
    const int ng = (cols + gs - 1) / gs;
    if (cols % pf || rows % pf || (awq && cols % gs))
        return llmq_error("%s: %s is %d × %d: not a %d-bit %s packing (inputs and outputs must be multiples of %d%s)", m->path, prefix, rows,
                          cols, bits, awq ? "AWQ" : "GPTQ", pf, awq ? ", inputs of group_size" : "");
    int rc = LLMQ_OK;
    const llmq_st_tensor *qw = find_checked(m, st, prefix, "qweight", LLMQ_TYPE_I32, awq ? cols : cols / pf, awq ? rows / 8 : rows, false, &rc);
    const llmq_st_tensor *qz = rc ? NULL : find_checked(m, st, prefix, "qzeros", LLMQ_TYPE_I32, ng, rows / pf, false, &rc);
    const llmq_st_tensor *sc = rc ? NULL : find_checked(m, st, prefix, "scales", LLMQ_TYPE_F16, ng, rows, false, &rc);
    const llmq_st_tensor *gi = rc || awq ? NULL : find_checked(m, st, prefix, "g_idx", LLMQ_TYPE_I32, cols, 0, true, &rc);
    if (rc || llmq_st_check_finite(sc)) return LLMQ_ERR;
    int32_t *gidx = malloc((size_t)cols * sizeof *gidx);
    if (!gidx) return llmq_error("%s: out of memory", m->path);
    bool contiguous = gs % LLMQ_QK == 0 && cols % LLMQ_QK == 0;
    for (int i = 0; i < cols; i++) {
        gidx[i] = gi ? (int32_t)rd32(gi->data, (size_t)i) : i / gs;
        if (gidx[i] < 0 || gidx[i] >= ng) {
            rc = llmq_error("%s: tensor '%s.g_idx': element %d is %d, outside the %d groups 0..%d", gi->file, prefix, i, gidx[i], ng, ng - 1);
            break;
        }
        if (gidx[i] != i / gs) contiguous = false;
    }
    /* zero of row o, group g */
#define ZERO(o, g) \
    ((int)((awq ? rd32(qz->data, (size_t)(g) * (rows / 8) + (o) / 8) >> (4 * llmq_awq_slot[(o) % 8]) \
                : rd32(qz->data, (size_t)(g) * (rows / pf) + (o) / pf) >> (bits * ((o) % pf))) & mask) + (awq || q->v2 ? 0 : 1))
    bool all_mid = true;
    for (int g = 0; rc == LLMQ_OK && g < ng && all_mid; g++)
        for (int o = 0; o < rows; o++)
            if (ZERO(o, g) != 1 << (bits - 1)) {
                all_mid = false;
                break;
            }
    const llmq_type type = contiguous ? llmq_hf_grid_type(bits, all_mid) : LLMQ_TYPE_F32;
    const size_t row_bytes = llmq_row_size(type, cols);
    unsigned char *buf = rc ? NULL : llmq_model_own(m, malloc(row_bytes * (size_t)rows));
    if (rc == LLMQ_OK && !buf) rc = llmq_error("%s: out of memory for %s", m->path, prefix);
    int oom = 0;
    if (rc == LLMQ_OK) {
        #pragma omp parallel
        {
            uint8_t *codes = malloc((size_t)cols);
            if (!codes) {
                #pragma omp atomic write
                oom = 1;
            }
            #pragma omp for schedule(static)
            for (int o = 0; o < rows; o++) {
                if (!codes) continue;
                for (int i = 0; i < cols; i++)
                    codes[i] = (uint8_t)((awq ? rd32(qw->data, (size_t)i * (rows / 8) + o / 8) >> (4 * llmq_awq_slot[o % 8])
                                              : rd32(qw->data, (size_t)(i / pf) * rows + o) >> (bits * (i % pf))) & mask);
                unsigned char *row = buf + (size_t)o * row_bytes;
                if (type == LLMQ_TYPE_F32) {
                    float *f = (float *)row;
                    for (int i = 0; i < cols; i++)
                        f[i] = llmq_f16_to_f32(rd16(sc->data, (size_t)gidx[i] * rows + o)) * (float)(codes[i] - ZERO(o, gidx[i]));
                    continue;
                }
                for (int b = 0; b < cols / LLMQ_QK; b++) {
                    const int g = b * LLMQ_QK / gs;
                    put_block(type, row, b, rd16(sc->data, (size_t)g * rows + o), ZERO(o, g), codes + b * LLMQ_QK);
                }
            }
            free(codes);
        }
        if (oom) rc = llmq_error("%s: out of memory for %s", m->path, prefix);
    }
#undef ZERO
    free(gidx);
    if (rc) return LLMQ_ERR;
    *w = (llmq_weight){buf, type, rows, cols};
    return LLMQ_OK;
}

/* ---------------------------------------------------------------- convert */
