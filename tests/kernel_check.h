/* Plain-C cross-checks of one kernel table against another (a SIMD table
 * against the scalar reference), shared by the Criterion test
 * (tests/test_kernels.c) and the static AArch64 driver run under qemu
 * (tests/neon/test_neon.c), which has no Criterion. Each check returns the
 * number of failures and prints the first few. */
#ifndef LLMQ_KERNEL_CHECK_H
#define LLMQ_KERNEL_CHECK_H

#include "../src/kernels/kernel_ops.h"
#include "llmq/blocks.h"
#include "llmq/error.h"
#include "llmq/rtn.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Agreement asked of two dot products: |a − b| ≤ KC_REL · Σ|w·x| (the
 * magnitude of the terms; relative error of the result itself is meaningless
 * under cancellation). */
#define KC_REL 1e-5

/* Print failures (the test of the checker itself turns this off). */
static int kc_verbose = 1;

typedef enum { KC_RANDOM, KC_RANDOM_BYTES, KC_ZERO, KC_HUGE, KC_TINY, KC_MODES } kc_mode;
static const char *const kc_mode_names[KC_MODES] = {"random", "random-bytes", "zero", "huge-scales", "tiny-scales"};

static uint64_t kc_rng = 0x243f6a8885a308d3ull;
static inline uint32_t kc_u32(void)
{
    kc_rng ^= kc_rng << 13;
    kc_rng ^= kc_rng >> 7;
    kc_rng ^= kc_rng << 17;
    return (uint32_t)(kc_rng >> 32);
}
static inline float kc_uniform(void) { return ((float)(kc_u32() >> 8) + 0.5f) / 16777216.0f; }
static inline float kc_gauss(void) { return sqrtf(-2.0f * logf(kc_uniform())) * cosf(6.2831853f * kc_uniform()); }

/* A half with a chosen magnitude class. */
static inline uint16_t kc_half(kc_mode mode)
{
    uint16_t sign = (uint16_t)((kc_u32() & 1) << 15), mant = (uint16_t)(kc_u32() & 0x3ff);
    switch (mode) {
    case KC_HUGE: return (uint16_t)(sign | (30u << 10) | mant);         /* 32768 .. 65504 */
    case KC_TINY: return (uint16_t)(sign | (mant ? mant : 1));          /* subnormal */
    default: return (uint16_t)(sign | ((5 + kc_u32() % 12) << 10) | mant); /* 2^-10 .. 2^1 */
    }
}

/* Byte offsets of the fp16 scale fields in one block of t. */
static inline int kc_half_fields(llmq_type t, int *off)
{
    switch (t) {
    case LLMQ_TYPE_Q4_0: case LLMQ_TYPE_Q5_0: case LLMQ_TYPE_Q8_0: off[0] = 0; return 1;
    case LLMQ_TYPE_Q4_1: case LLMQ_TYPE_Q5_1: case LLMQ_TYPE_Q4_K: case LLMQ_TYPE_Q5_K: off[0] = 0; off[1] = 2; return 2;
    case LLMQ_TYPE_Q6_K: off[0] = 208; return 1;
    case LLMQ_TYPE_Q2_K: off[0] = 80; off[1] = 82; return 2;
    case LLMQ_TYPE_IQ4_NL: case LLMQ_TYPE_IQ4_XS: off[0] = 0; return 1;
    case LLMQ_TYPE_Q3_K: off[0] = 108; return 1;
    default: return 0;
    }
}

/* rows × in weights of type t in the given mode (malloc'd). */
static inline void *kc_weights(llmq_type t, int rows, int in, kc_mode mode)
{
    const llmq_type_traits *tr = llmq_type_get(t);
    const size_t row_bytes = llmq_row_size(t, in), total = row_bytes * (size_t)rows;
    unsigned char *w = malloc(total);
    if (!w) return NULL;
    if (mode == KC_RANDOM || mode == KC_ZERO) {
        float *x = malloc(sizeof *x * (size_t)in);
        for (int r = 0; r < rows; r++) {
            for (int i = 0; i < in; i++) x[i] = mode == KC_ZERO ? 0.0f : 0.05f * kc_gauss();
            if (mode == KC_RANDOM && in > 7) x[in / 7] = 1.5f; /* an outlier */
            int group = tr->is_quantized && r % 2 ? 128 : 0;
            if (llmq_quantize_row(t, x, in, group, r % 3 == 0, w + (size_t)r * row_bytes) != LLMQ_OK) {
                free(x);
                free(w);
                return NULL;
            }
        }
        free(x);
        return w;
    }
    /* Random bytes exercise every bit of the layout; the scale fields are
     * then set to finite halves of the chosen magnitude. */
    for (size_t i = 0; i < total; i++) w[i] = (unsigned char)kc_u32();
    if (t == LLMQ_TYPE_F16 || t == LLMQ_TYPE_BF16) {
        uint16_t *h = (uint16_t *)w;
        for (size_t i = 0; i < total / 2; i++)
            h[i] = t == LLMQ_TYPE_F16 ? kc_half(mode) : (uint16_t)(llmq_f32_to_bf16(llmq_f16_to_f32(kc_half(mode))));
        return w;
    }
    if (t == LLMQ_TYPE_F32) {
        float *f = (float *)w;
        for (size_t i = 0; i < total / 4; i++) f[i] = llmq_f16_to_f32(kc_half(mode));
        return w;
    }
    int off[2], nf = kc_half_fields(t, off);
    for (size_t b = 0; b < total / tr->type_size; b++)
        for (int k = 0; k < nf; k++) {
            uint16_t h = kc_half(mode);
            memcpy(w + b * tr->type_size + off[k], &h, 2);
        }
    return w;
}

/* Decoders must agree bit for bit (value equality; −0 == +0). */
static inline int kc_check_dequant(const llmq_kernel_ops *a, const llmq_kernel_ops *ref, llmq_type t, const void *w, int rows, int in,
                                   const char *tag)
{
    const size_t row_bytes = llmq_row_size(t, in);
    float *ya = malloc(sizeof(float) * (size_t)in), *yr = malloc(sizeof(float) * (size_t)in);
    int fails = 0;
    for (int r = 0; r < rows && fails == 0; r++) {
        a->dequant((const char *)w + (size_t)r * row_bytes, ya, in);
        ref->dequant((const char *)w + (size_t)r * row_bytes, yr, in);
        for (int i = 0; i < in; i++)
            if (!(ya[i] == yr[i])) {
                if (kc_verbose) printf("  FAIL %s %s dequant: row %d element %d: %.9g vs reference %.9g\n", llmq_type_get(t)->name, tag, r, i,
                       (double)ya[i], (double)yr[i]);
                fails++;
                break;
            }
    }
    free(ya);
    free(yr);
    return fails;
}

/* Dots for 1..LLMQ_DOT_MAX_TOKENS tokens (zero, normal and large ones)
 * against the reference: the exact dots on fp32 activations, or with `int8`
 * the integer dots of the --fast path on the same activations quantized. */
static inline int kc_check_dots(const llmq_kernel_ops *a, const llmq_kernel_ops *ref, llmq_type t, const void *w, int rows, int in,
                                const char *tag, int int8)
{
    const size_t row_bytes = llmq_row_size(t, in), nb = llmq_act_q8_stride(in);
    const int nt = LLMQ_DOT_MAX_TOKENS;
    float *x = malloc(sizeof(float) * (size_t)in * nt), *wf = malloc(sizeof(float) * (size_t)in);
    double *xm = malloc(sizeof(double) * (size_t)in * nt); /* the activations the dot sees, for the magnitudes */
    llmq_act_q8 *xq = int8 ? malloc(sizeof *xq * nb * nt) : NULL;
    for (int i = 0; i < in * nt; i++) x[i] = kc_gauss();
    for (int i = 0; i < in; i++) x[i] = 0.0f;           /* token 0: all zero */
    for (int i = 0; i < in; i++) x[2 * in + i] *= 1e3f; /* token 2: large */
    for (int k = 0; k < nt; k++) {
        if (int8) llmq_act_quantize_q8(x + (size_t)k * in, in, xq + (size_t)k * nb);
        for (int i = 0; i < in; i++) {
            const llmq_act_q8 *b = int8 ? xq + (size_t)k * nb + i / 32 : NULL;
            xm[(size_t)k * in + i] = int8 ? (double)b->d * b->q[i % 32] : (double)x[(size_t)k * in + i];
        }
    }
    int fails = 0;
    for (int r = 0; r < rows && fails < 3; r++) {
        const void *row = (const char *)w + (size_t)r * row_bytes;
        ref->dequant(row, wf, in);
        for (int k = 1; k <= nt; k++) {
            float ya[LLMQ_DOT_MAX_TOKENS], yr[LLMQ_DOT_MAX_TOKENS];
            if (int8) {
                a->dot_q8(row, xq, nb, k, in, ya, 1);
                ref->dot_q8(row, xq, nb, k, in, yr, 1);
            } else {
                a->dot(row, x, (size_t)in, k, in, ya, 1);
                ref->dot(row, x, (size_t)in, k, in, yr, 1);
            }
            for (int tk = 0; tk < k; tk++) {
                double mag = 0;
                for (int i = 0; i < in; i++) mag += fabs((double)wf[i] * xm[(size_t)tk * in + i]);
                double err = fabs((double)ya[tk] - yr[tk]);
                if (!(err <= KC_REL * mag + 1e-30)) {
                    if (fails < 3 && kc_verbose)
                        printf("  FAIL %s %s %s: row %d, %d tokens, token %d: %.9g vs reference %.9g (|Σwx| terms %.3g)\n",
                               llmq_type_get(t)->name, tag, int8 ? "dot_q8" : "dot", r, k, tk, (double)ya[tk], (double)yr[tk], mag);
                    fails++;
                }
            }
        }
    }
    free(x);
    free(wf);
    free(xm);
    free(xq);
    return fails;
}

static inline int kc_check_dot(const llmq_kernel_ops *a, const llmq_kernel_ops *ref, llmq_type t, const void *w, int rows, int in,
                               const char *tag)
{
    return kc_check_dots(a, ref, t, w, rows, in, tag, 0);
}

static inline int kc_check_dot_q8(const llmq_kernel_ops *a, const llmq_kernel_ops *ref, llmq_type t, const void *w, int rows, int in,
                                  const char *tag)
{
    return kc_check_dots(a, ref, t, w, rows, in, tag, 1);
}

static const llmq_type kc_types[] = {LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_1, LLMQ_TYPE_Q5_0, LLMQ_TYPE_Q5_1, LLMQ_TYPE_Q8_0,
                                     LLMQ_TYPE_Q4_K, LLMQ_TYPE_Q5_K, LLMQ_TYPE_Q6_K, LLMQ_TYPE_Q3_K, LLMQ_TYPE_Q2_K, LLMQ_TYPE_IQ4_NL,
                                     LLMQ_TYPE_IQ4_XS, LLMQ_TYPE_F16,
                                     LLMQ_TYPE_BF16, LLMQ_TYPE_F32};
#define KC_N_TYPES (int)(sizeof kc_types / sizeof kc_types[0])

/* Every type × mode × row length: decoders bit-exact, dots within KC_REL.
 * Counts checks run and failed: one for decoder + dot, one more for the
 * integer dot where the table has one. A partial table (AVX-512's, which
 * has only some integer dots) is checked for what it has. */
static inline void kc_check_table_of(const llmq_kernel_ops *(*table)(llmq_type), const char *isa, int partial, int *passed, int *failed)
{
    for (int k = 0; k < KC_N_TYPES; k++) {
        llmq_type t = kc_types[k];
        const llmq_kernel_ops *a = table(t), *ref = llmq_ops_scalar(t);
        if (!a && partial) continue;
        if (!a || (!partial && (!a->dequant || !a->dot))) {
            printf("  FAIL %s: no %s kernel\n", llmq_type_get(t)->name, isa);
            (*failed)++;
            continue;
        }
        const int block = llmq_type_get(t)->block_size;
        /* a row of one block, one spanning chunks with a partial chunk, one odd for plain floats */
        int lengths[3] = {block == 1 ? 37 : block, block == 256 ? 768 : block == 32 ? 352 : 300, 1024};
        for (int m = 0; m < KC_MODES; m++)
            for (int li = 0; li < 3; li++) {
                const int rows = 7, in = lengths[li];
                void *w = kc_weights(t, rows, in, (kc_mode)m);
                char tag[64];
                snprintf(tag, sizeof tag, "%s in=%d %s", isa, in, kc_mode_names[m]);
                if (!w) {
                    printf("  FAIL %s: cannot build weights\n", tag);
                    (*failed)++;
                    continue;
                }
                if (a->dequant && a->dot) {
                    const int f = kc_check_dequant(a, ref, t, w, rows, in, tag) + kc_check_dot(a, ref, t, w, rows, in, tag);
                    if (f) (*failed)++;
                    else (*passed)++;
                }
                /* the integer dot, where the table has one, counts as a check of its own */
                if (a->dot_q8 && ref->dot_q8 && in % 32 == 0) {
                    if (kc_check_dot_q8(a, ref, t, w, rows, in, tag)) (*failed)++;
                    else (*passed)++;
                }
                free(w);
            }
    }
}

static inline void kc_check_table(const llmq_kernel_ops *(*table)(llmq_type), const char *isa, int *passed, int *failed)
{
    kc_check_table_of(table, isa, 0, passed, failed);
}

#endif
