/* Block formats: hand-built ggml blocks decode to hand-computed values (the
 * bit-compatibility check), grids pack and unpack exactly, group sizes share
 * one grid across native blocks, RTN error is sane. */
#include "llmq/blocks.h"
#include "llmq/error.h"
#include "llmq/rtn.h"
#include "test_util.h"

#include <math.h>
#include <stdint.h>

static const llmq_type grid_types[] = {LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_1, LLMQ_TYPE_Q8_0,
                                       LLMQ_TYPE_Q4_K, LLMQ_TYPE_Q6_K, LLMQ_TYPE_Q3_K};
#define N_GRID_TYPES (int)(sizeof grid_types / sizeof grid_types[0])

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float uniform01(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) + 0.5) / (float)(1u << 24);
}
static float gauss(void)
{
    return sqrtf(-2.0f * logf(uniform01())) * cosf(6.2831853f * uniform01());
}

Test(blocks, traits_rows)
{
    struct { llmq_type t; const char *name; int bs; size_t sz; } rows[] = {
        {LLMQ_TYPE_Q4_0, "q4_0", 32, 18}, {LLMQ_TYPE_Q4_1, "q4_1", 32, 20}, {LLMQ_TYPE_Q8_0, "q8_0", 32, 34},
        {LLMQ_TYPE_Q3_K, "q3_k", 256, 110}, {LLMQ_TYPE_Q4_K, "q4_k", 256, 144}, {LLMQ_TYPE_Q6_K, "q6_k", 256, 210},
        {LLMQ_TYPE_Q8_K, "q8_k", 256, 292},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const llmq_type_traits *tr = llmq_type_get(rows[i].t);
        cr_assert_not_null(tr, "%s", rows[i].name);
        cr_assert_str_eq(tr->name, rows[i].name);
        cr_assert_eq(tr->block_size, rows[i].bs);
        cr_assert_eq(tr->type_size, rows[i].sz);
        cr_assert(tr->is_quantized);
        cr_assert_eq(llmq_type_from_name(rows[i].name), (int)rows[i].t);
    }
    cr_assert_eq(llmq_type_from_name("Q4_K"), LLMQ_TYPE_Q4_K);
    cr_assert_eq(llmq_row_size(LLMQ_TYPE_Q4_K, 4096), 16u * 144u);
}

/* ---- hand-built blocks, bytes written from the ggml-common.h layout ---- */

Test(blocks, q4_0_known_block)
{
    llmq_block_q4_0 b;
    memset(&b, 0, sizeof b);
    b.d = 0x3800; /* 0.5 */
    b.qs[0] = 0x1F;
    b.qs[5] = 0x80;
    float y[32];
    llmq_dequant_q4_0(&b, y, 32);
    cr_assert_eq(y[0], 3.5f);   /* (15-8)·0.5 */
    cr_assert_eq(y[16], -3.5f); /* (1-8)·0.5 */
    cr_assert_eq(y[5], -4.0f);  /* (0-8)·0.5 */
    cr_assert_eq(y[21], 0.0f);  /* (8-8)·0.5 */
    cr_assert_eq(y[1], -4.0f);
}

Test(blocks, q4_1_known_block)
{
    llmq_block_q4_1 b;
    memset(&b, 0, sizeof b);
    b.d = 0x3c00; /* 1 */
    b.m = 0xc000; /* -2 */
    b.qs[3] = 0xA2;
    float y[32];
    llmq_dequant_q4_1(&b, y, 32);
    cr_assert_eq(y[3], 0.0f);
    cr_assert_eq(y[19], 8.0f);
    cr_assert_eq(y[0], -2.0f);
}

Test(blocks, q8_0_known_block)
{
    llmq_block_q8_0 b;
    memset(&b, 0, sizeof b);
    b.d = 0x3400; /* 0.25 */
    b.qs[7] = -100;
    b.qs[31] = 127;
    float y[32];
    llmq_dequant_q8_0(&b, y, 32);
    cr_assert_eq(y[7], -25.0f);
    cr_assert_eq(y[31], 31.75f);
    cr_assert_eq(y[0], 0.0f);
}

Test(blocks, q4_k_known_block)
{
    llmq_block_q4_k b;
    memset(&b, 0, sizeof b);
    b.d = 0x3c00;    /* 1 */
    b.dmin = 0x3800; /* 0.5 */
    b.scales[0] = 3; /* sub-block 0: sc 3 */
    b.scales[4] = 4; /*              m 4 */
    /* sub-block 5: sc 37 = 0b10'0101, m 26 = 0b01'1010 */
    b.scales[9] = 0xA5;                 /* low nibbles of sc and m */
    b.scales[1] |= 0x80;                /* sc's top two bits in scales[1] bits 6-7 */
    b.scales[5] |= 0x40;                /* m's top two bits in scales[5] bits 6-7 */
    b.qs[2] = 0x09;                     /* element 2 (sub-block 0, low nibble) = 9 */
    b.qs[64 + 3] = 0x70;                /* element 128+32+3 = 163 (sub-block 5, high nibble) = 7 */
    float y[256];
    llmq_dequant_q4_k(&b, y, 256);
    cr_assert_eq(y[2], 25.0f);    /* 1·3·9 − 0.5·4 */
    cr_assert_eq(y[0], -2.0f);    /* 1·3·0 − 0.5·4 */
    cr_assert_eq(y[163], 246.0f); /* 1·37·7 − 0.5·26 */
    cr_assert_eq(y[34], 0.0f);    /* sub-block 1: sc = scales[1]&63 = 0, m = scales[5]&63 = 0 */
    cr_assert_eq(y[131], 0.0f);   /* sub-block 4: all zero codes */
    int sc, m;
    llmq_q4_k_get_scale_min(b.scales, 5, &sc, &m);
    cr_assert_eq(sc, 37);
    cr_assert_eq(m, 26);
}

Test(blocks, q6_k_known_block)
{
    llmq_block_q6_k b;
    memset(&b, 0, sizeof b);
    b.d = 0x3c00;
    b.scales[0] = 2;
    b.scales[4] = 1;
    b.scales[5] = -3;
    b.scales[10] = 4;
    b.ql[0] = 0x0F;  /* element 0 low 4 bits = 15; element 64 low bits = 0 */
    b.qh[0] = 0x02;  /* element 0 high bits = 2 → q = 47 */
    b.ql[26] = 0x30; /* element 64+26 = 90: low bits 3 (high nibble of ql[26]) */
    b.qh[26] = 0x30; /* element 90: high bits 3 (qh bits 4-5) → q = 51 */
    b.ql[64 + 32 + 5] = 0x01; /* element 128+32+5 = 165: low 1 (low nibble of ql[l+32] of half 1) */
    b.qh[32 + 5] = 0x04;      /* element 165: high 1 (bits 2-3) → q = 17 */
    float y[256];
    llmq_dequant_q6_k(&b, y, 256);
    cr_assert_eq(y[0], 30.0f);   /* 1·2·(47−32) */
    cr_assert_eq(y[64], -32.0f); /* 1·1·(0−32) */
    cr_assert_eq(y[90], -57.0f); /* 1·(−3)·(51−32) */
    cr_assert_eq(y[165], -60.0f); /* 1·4·(17−32) */
}

Test(blocks, q3_k_known_block)
{
    llmq_block_q3_k b;
    memset(&b, 0, sizeof b);
    b.d = 0x3800; /* 0.5 */
    /* sub-block 0: code 5, stored 37 = 0b10'0101: low nibble in scales[0], top bits in scales[8] bits 0-1 */
    b.scales[0] = 0x05;
    b.scales[8] = 0x02;
    /* sub-block 13: code −7, stored 25 = 0b01'1001: low nibble in scales[5] high nibble, top bits in scales[9] bits 6-7 */
    b.scales[5] = 0x90;
    b.scales[9] = 0x40;
    b.qs[3] = 0x02;    /* element 3: low bits 2 */
    b.hmask[3] = 0x01; /* element 3: high bit set → q = 6 */
    b.qs[32 + 18] = 0x10; /* element 210 (half 1, shift 4, column 18): low bits 1, high bit clear → q = 1 */
    float y[256];
    llmq_dequant_q3_k(&b, y, 256);
    cr_assert_eq(y[3], 5.0f);    /* 0.5·5·(6−4) */
    cr_assert_eq(y[4], -10.0f);  /* 0.5·5·(0−4) */
    cr_assert_eq(y[210], 10.5f); /* 0.5·(−7)·(1−4) */
    cr_assert_eq(llmq_q3_k_get_scale(b.scales, 0), 5);
    cr_assert_eq(llmq_q3_k_get_scale(b.scales, 13), -7);
    cr_assert_eq(llmq_q3_k_get_scale(b.scales, 1), -32); /* stored 0 */
}

/* ggml's quantize_row_q4_0_ref on x_j = (j%16 − 8)/4: the first value of
 * largest magnitude is −2, so d = −2/−8 = 0.25 and q_j = j%16. */
Test(blocks, q4_0_reference_encoder)
{
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j % 16 - 8) / 4;
    llmq_block_q4_0 b;
    llmq_type_get(LLMQ_TYPE_Q4_0)->from_float(x, &b, 32);
    cr_assert_eq(b.d, 0x3400);
    for (int j = 0; j < 16; j++) cr_assert_eq(b.qs[j], (uint8_t)(j | (j << 4)), "qs[%d] = 0x%02x", j, b.qs[j]);
}

Test(blocks, q8_0_and_q4_1_reference_encoders)
{
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16) * 0.5f; /* −8 .. 7.5 */
    llmq_block_q8_0 b8;
    llmq_type_get(LLMQ_TYPE_Q8_0)->from_float(x, &b8, 32);
    cr_assert_eq(b8.d, llmq_f32_to_f16(8.0f / 127));
    cr_assert_eq(b8.qs[0], -127);
    cr_assert_eq(b8.qs[16], 0);
    /* Q4_1: x_j = j%16 − 3 gives d = (12 − (−3))/15 = 1, m = −3, q_j = j%16. */
    for (int j = 0; j < 32; j++) x[j] = (float)(j % 16 - 3);
    llmq_block_q4_1 b4;
    llmq_type_get(LLMQ_TYPE_Q4_1)->from_float(x, &b4, 32);
    cr_assert_eq(b4.d, 0x3c00);
    cr_assert_eq(b4.m, 0xc200);
    for (int j = 0; j < 16; j++) cr_assert_eq(b4.qs[j], (uint8_t)(j | (j << 4)));
}

/* ---- grids ---- */

/* A row with the usual hazards: Gaussian weights, an outlier, an all-zero
 * group, a constant group, a tiny group. */
static void hazard_row(float *x, int n)
{
    for (int i = 0; i < n; i++) x[i] = 0.02f * gauss();
    x[n / 3] = 0.9f;
    for (int i = 0; i < 32 && 64 + i < n; i++) x[64 + i] = 0.0f;
    for (int i = 0; i < 32 && 128 + i < n; i++) x[128 + i] = -0.013f;
    for (int i = 0; i < 32 && 192 + i < n; i++) x[192 + i] = 1e-7f * gauss();
}

static void check_pack_roundtrip(llmq_type t, int n, int group_size, bool search)
{
    float *x = malloc(sizeof *x * n), *y = malloc(sizeof *y * n);
    int8_t *q = malloc(n), *q2 = malloc(n);
    int gs = llmq_group_resolve(t, group_size);
    llmq_grid *grids = malloc(sizeof *grids * llmq_group_count(n, gs));
    void *packed = malloc(llmq_row_size(t, n));
    hazard_row(x, n);
    llmq_rtn_opts opts = {.search = search};
    cr_assert_eq(llmq_rtn_grids(t, x, n, group_size, grids, &opts), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_eq(llmq_round_row(t, x, n, group_size, grids, q), LLMQ_OK);
    cr_assert_eq(llmq_pack_codes(t, q, n, group_size, grids, packed), LLMQ_OK, "%s G=%d: %s", llmq_type_get(t)->name, gs, llmq_last_error());
    llmq_type_get(t)->to_float(packed, y, n);
    cr_assert_eq(llmq_unpack_codes(t, packed, n, q2), LLMQ_OK);
    for (int i = 0; i < n; i++) {
        const llmq_grid *g = &grids[i / gs];
        float want = llmq_grid_value(g, q[i]);
        cr_assert_eq(q2[i], q[i], "%s G=%d element %d: code %d unpacked as %d", llmq_type_get(t)->name, gs, i, q[i], q2[i]);
        cr_assert(y[i] == want, "%s G=%d element %d: file decodes %.9g, grid value %.9g", llmq_type_get(t)->name, gs, i, y[i], want);
        /* Rounding is to the nearest grid value. */
        for (int d = -1; d <= 1; d += 2) {
            int qq = q[i] + d;
            if (qq < g->qmin || qq > g->qmax) continue;
            cr_assert(fabsf(llmq_grid_value(g, qq) - x[i]) >= fabsf(want - x[i]), "%s element %d not nearest", llmq_type_get(t)->name, i);
        }
    }
    free(x); free(y); free(q); free(q2); free(grids); free(packed);
}

Test(blocks, pack_unpack_returns_grid_values_exactly)
{
    static const int sizes[] = {0, 16, 32, 64, 128, 256};
    for (int k = 0; k < N_GRID_TYPES; k++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            llmq_type t = grid_types[k];
            if (sizes[s] != 0 && sizes[s] % llmq_grid_unit(t)) continue;
            check_pack_roundtrip(t, 512, sizes[s], false);
            check_pack_roundtrip(t, 512, sizes[s], true);
        }
    /* A group size that does not divide the row: the last Q4_0 group is shorter. */
    check_pack_roundtrip(LLMQ_TYPE_Q4_0, 96, 64, false);
    check_pack_roundtrip(LLMQ_TYPE_Q4_1, 96, 64, true);
}

Test(blocks, group_of_128_shares_one_grid)
{
    enum { N = 512 };
    float x[N];
    for (int i = 0; i < N; i++) x[i] = gauss() * (1.0f + (float)(i / 32)); /* every block would want its own scale */
    unsigned char buf[N / 32 * 34];
    cr_assert_eq(llmq_quantize_row(LLMQ_TYPE_Q4_0, x, N, 128, false, buf), LLMQ_OK);
    const llmq_block_q4_0 *b0 = (const void *)buf;
    for (int g = 0; g < N / 128; g++)
        for (int k = 1; k < 4; k++) cr_assert_eq(b0[4 * g + k].d, b0[4 * g].d, "group %d block %d", g, k);
    cr_assert_neq(b0[0].d, b0[4].d);

    cr_assert_eq(llmq_quantize_row(LLMQ_TYPE_Q4_1, x, N, 128, true, buf), LLMQ_OK);
    const llmq_block_q4_1 *b1 = (const void *)buf;
    for (int g = 0; g < N / 128; g++)
        for (int k = 1; k < 4; k++) {
            cr_assert_eq(b1[4 * g + k].d, b1[4 * g].d);
            cr_assert_eq(b1[4 * g + k].m, b1[4 * g].m);
        }

    cr_assert_eq(llmq_quantize_row(LLMQ_TYPE_Q4_K, x, N, 128, false, buf), LLMQ_OK);
    const llmq_block_q4_k *bk = (const void *)buf;
    for (int s = 0; s < N / 256; s++) {
        int sc0, m0, sc, m;
        for (int half = 0; half < 2; half++) {
            llmq_q4_k_get_scale_min(bk[s].scales, 4 * half, &sc0, &m0);
            for (int j = 1; j < 4; j++) {
                llmq_q4_k_get_scale_min(bk[s].scales, 4 * half + j, &sc, &m);
                cr_assert_eq(sc, sc0);
                cr_assert_eq(m, m0);
            }
        }
        llmq_q4_k_get_scale_min(bk[s].scales, 0, &sc0, &m0);
        llmq_q4_k_get_scale_min(bk[s].scales, 4, &sc, &m);
        cr_assert(sc != sc0 || m != m0);
    }

    cr_assert_eq(llmq_quantize_row(LLMQ_TYPE_Q6_K, x, N, 64, false, buf), LLMQ_OK);
    const llmq_block_q6_k *b6 = (const void *)buf;
    for (int j = 0; j < 16; j++) cr_assert_eq(b6[0].scales[j], b6[0].scales[j / 4 * 4]);

    cr_assert_eq(llmq_quantize_row(LLMQ_TYPE_Q3_K, x, N, 32, false, buf), LLMQ_OK);
    const llmq_block_q3_k *b3 = (const void *)buf;
    for (int j = 0; j < 16; j += 2) cr_assert_eq(llmq_q3_k_get_scale(b3[1].scales, j + 1), llmq_q3_k_get_scale(b3[1].scales, j));
}

Test(blocks, group_sizes_the_type_cannot_express)
{
    float x[512] = {0};
    unsigned char buf[512 * 2];
    cr_assert_eq(llmq_quantize_row(LLMQ_TYPE_Q4_0, x, 512, 48, false, buf), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "q4_0") && strstr(llmq_last_error(), "48"), "%s", llmq_last_error());
    cr_assert_eq(llmq_quantize_row(LLMQ_TYPE_Q4_K, x, 512, 16, false, buf), LLMQ_ERR);
    cr_assert_eq(llmq_quantize_row(LLMQ_TYPE_Q4_K, x, 512, 96, false, buf), LLMQ_ERR);
    cr_assert_eq(llmq_quantize_row(LLMQ_TYPE_Q6_K, x, 512, 512, false, buf), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "super-block"), "%s", llmq_last_error());
    cr_assert_eq(llmq_quantize_row(LLMQ_TYPE_Q4_K, x, 320, 128, false, buf), LLMQ_ERR); /* row not a multiple of 256 */
    cr_assert_eq(llmq_quantize_row(LLMQ_TYPE_Q8_0, x, 40, 32, false, buf), LLMQ_ERR);
    cr_assert_eq(llmq_quantize_row(LLMQ_TYPE_Q6_K, x, 512, 16, false, buf), LLMQ_OK);
    cr_assert_eq(llmq_quantize_row(LLMQ_TYPE_Q4_0, x, 512, 512, false, buf), LLMQ_OK); /* one grid per row */
}

Test(blocks, pack_rejects_grids_the_file_cannot_hold)
{
    float x[256];
    for (int i = 0; i < 256; i++) x[i] = gauss();
    llmq_grid grids[8];
    int8_t q[256];
    unsigned char buf[256];
    cr_assert_eq(llmq_rtn_grids(LLMQ_TYPE_Q4_0, x, 256, 32, grids, NULL), LLMQ_OK);
    cr_assert_eq(llmq_round_row(LLMQ_TYPE_Q4_0, x, 256, 32, grids, q), LLMQ_OK);
    grids[3].scale *= 1.0001f; /* no longer fp16-exact */
    cr_assert_eq(llmq_pack_codes(LLMQ_TYPE_Q4_0, q, 256, 32, grids, buf), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "group 3"), "%s", llmq_last_error());

    cr_assert_eq(llmq_rtn_grids(LLMQ_TYPE_Q4_K, x, 256, 128, grids, NULL), LLMQ_OK);
    cr_assert_eq(llmq_round_row(LLMQ_TYPE_Q4_K, x, 256, 128, grids, q), LLMQ_OK);
    q[7] = 16;
    cr_assert_eq(llmq_pack_codes(LLMQ_TYPE_Q4_K, q, 256, 128, grids, buf), LLMQ_ERR);
    q[7] = 3;
    llmq_superblock other = {llmq_f32_to_f16(1.0f), llmq_f32_to_f16(1.0f)};
    llmq_real_grid r = {2.0f, -1.0f};
    grids[1] = llmq_grid_from_real(LLMQ_TYPE_Q4_K, r, &other); /* stored, but under another d */
    cr_assert_eq(llmq_pack_codes(LLMQ_TYPE_Q4_K, q, 256, 128, grids, buf), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "super-block"), "%s", llmq_last_error());
}

Test(blocks, grid_from_real_rounds_to_the_type_precision)
{
    llmq_real_grid r = {0.0123456f, -0.1f};
    llmq_grid g = llmq_grid_from_real(LLMQ_TYPE_Q4_1, r, NULL);
    cr_assert_eq(g.scale, llmq_f16_to_f32(llmq_f32_to_f16(0.0123456f)));
    cr_assert_eq(g.offset, llmq_f16_to_f32(llmq_f32_to_f16(-0.1f)));
    cr_assert_eq(llmq_grid_round(&g, 1e9f), 15);
    cr_assert_eq(llmq_grid_round(&g, -1e9f), 0);
    cr_assert_eq(llmq_grid_round(&g, NAN), 0);
    /* Q4_K: codes under the super-block's d = 0.01, dmin = 0.02 */
    llmq_superblock sb = {llmq_f32_to_f16(0.01f), llmq_f32_to_f16(0.02f)};
    llmq_real_grid rk = {0.2f, -0.3f};
    llmq_grid k = llmq_grid_from_real(LLMQ_TYPE_Q4_K, rk, &sb);
    cr_assert_eq(k.sc, 20);
    cr_assert_eq(k.mc, 15);
    cr_assert_eq(k.scale, llmq_f16_to_f32(sb.d) * 20.0f);
    cr_assert_eq(k.offset, -(llmq_f16_to_f32(sb.dmin) * 15.0f));
    llmq_real_grid big = {100.0f, -100.0f};
    k = llmq_grid_from_real(LLMQ_TYPE_Q4_K, big, &sb);
    cr_assert_eq(k.sc, 63);
    cr_assert_eq(k.mc, 63);
    /* Q6_K: the extreme scale gets code −128 */
    llmq_real_grid gr[2] = {{0.5f, 0}, {-1.0f, 0}};
    llmq_superblock s6 = llmq_superblock_choose(LLMQ_TYPE_Q6_K, gr, 2);
    cr_assert_eq(llmq_grid_from_real(LLMQ_TYPE_Q6_K, gr[1], &s6).sc, -128);
    cr_assert_eq(llmq_grid_from_real(LLMQ_TYPE_Q6_K, gr[0], &s6).sc, 64);
}

Test(blocks, rtn_error_is_sane_and_search_helps)
{
    enum { ROWS = 8, N = 1024 };
    float *x = malloc(sizeof *x * ROWS * N);
    for (int i = 0; i < ROWS * N; i++) x[i] = 0.02f * gauss();
    unsigned char *buf = malloc(ROWS * llmq_row_size(LLMQ_TYPE_Q8_K, N));
    struct { llmq_type t; int g; double max_err; } cases[] = {
        {LLMQ_TYPE_Q8_0, 32, 0.006}, {LLMQ_TYPE_Q6_K, 16, 0.03}, {LLMQ_TYPE_Q4_K, 32, 0.12},
        {LLMQ_TYPE_Q4_1, 32, 0.12}, {LLMQ_TYPE_Q4_0, 32, 0.14}, {LLMQ_TYPE_Q4_0, 128, 0.17},
        {LLMQ_TYPE_Q3_K, 16, 0.26}, {LLMQ_TYPE_Q4_K, 128, 0.14},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        double plain, searched;
        cr_assert_eq(llmq_quantize_rows(cases[c].t, x, ROWS, N, cases[c].g, false, buf), LLMQ_OK);
        cr_assert_eq(llmq_quant_rel_error(cases[c].t, x, buf, ROWS, N, &plain), LLMQ_OK);
        cr_assert_eq(llmq_quantize_rows(cases[c].t, x, ROWS, N, cases[c].g, true, buf), LLMQ_OK);
        cr_assert_eq(llmq_quant_rel_error(cases[c].t, x, buf, ROWS, N, &searched), LLMQ_OK);
        cr_log_info("%s G=%d: rel error %.4f plain, %.4f search", llmq_type_get(cases[c].t)->name, cases[c].g, plain, searched);
        cr_assert(plain < cases[c].max_err, "%s G=%d: %.4f", llmq_type_get(cases[c].t)->name, cases[c].g, plain);
        cr_assert(plain > cases[c].max_err / 10, "suspiciously small error %.5f", plain);
        cr_assert(searched <= plain, "%s G=%d: search %.5f worse than plain %.5f", llmq_type_get(cases[c].t)->name, cases[c].g, searched, plain);
    }
    /* Our Q4_0 grid RTN and ggml's reference encoder agree closely at G=32. */
    double ours, ref;
    cr_assert_eq(llmq_quantize_rows(LLMQ_TYPE_Q4_0, x, ROWS, N, 32, false, buf), LLMQ_OK);
    llmq_quant_rel_error(LLMQ_TYPE_Q4_0, x, buf, ROWS, N, &ours);
    llmq_type_get(LLMQ_TYPE_Q4_0)->from_float(x, buf, ROWS * N);
    llmq_quant_rel_error(LLMQ_TYPE_Q4_0, x, buf, ROWS, N, &ref);
    cr_assert(fabs(ours - ref) < 0.01 * ref, "ours %.5f vs ggml ref %.5f", ours, ref);
    free(x);
    free(buf);
}

Test(blocks, rel_error_helper)
{
    float a[4] = {3, 4, 0, 0}, b[4] = {3, 4, 0, 0}, c[4] = {0, 0, 0, 0};
    cr_assert_eq(llmq_rel_error(a, b, 4), 0.0);
    cr_assert_float_eq(llmq_rel_error(a, c, 4), 1.0, 1e-12);
    b[0] = 0;
    cr_assert_float_eq(llmq_rel_error(a, b, 4), 0.6, 1e-12);
    cr_assert_eq(llmq_rel_error(c, c, 4), 0.0);
}

/* The bulk scale unpackers of the SIMD dots agree with the one-at-a-time
 * readers on every bit pattern class (random bytes). */
Test(blocks, bulk_scale_unpackers_match_the_readers)
{
    uint64_t r = 0x9e3779b97f4a7c15ull;
    for (int iter = 0; iter < 2000; iter++) {
        uint8_t s[12];
        for (int k = 0; k < 12; k++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            s[k] = (uint8_t)(iter < 2 ? (iter ? 0xff : 0) : r >> 24);
        }
        uint8_t sc[8], mn[8];
        llmq_q4_k_unpack_scales(s, sc, mn);
        for (int j = 0; j < 8; j++) {
            int want_sc, want_mn;
            llmq_q4_k_get_scale_min(s, j, &want_sc, &want_mn);
            cr_assert(sc[j] == want_sc && mn[j] == want_mn, "q4_k j=%d: %d/%d vs %d/%d", j, sc[j], mn[j], want_sc, want_mn);
        }
        int8_t sc3[16];
        llmq_q3_k_unpack_scales(s, sc3);
        for (int j = 0; j < 16; j++) cr_assert_eq(sc3[j], llmq_q3_k_get_scale(s, j), "q3_k j=%d", j);
    }
}

/* llmq_round_row (vector lanes) and llmq_snap_row give, for every weight, a
 * code whose value no other code of the grid beats, and that code's value:
 * on random rows, exact midpoints between grid values, huge and NaN inputs. */
Test(blocks, round_row_picks_a_nearest_code_in_every_lane)
{
    enum { N = 512 };
    float x[N], snapped[N];
    int8_t q[N];
    llmq_grid grids[N / 16];
    for (int c = 0; c < N_GRID_TYPES; c++) {
        const llmq_type t = grid_types[c];
        const int G = llmq_group_resolve(t, 0);
        for (int i = 0; i < N; i++) x[i] = 0.05f * gauss();
        cr_assert_eq(llmq_rtn_grids(t, x, N, G, grids, NULL), LLMQ_OK, "%s", llmq_last_error());
        for (int i = 0; i < N; i += 7) { /* midpoints between neighbouring values */
            const llmq_grid *g = &grids[i / G];
            const int k = g->qmin + i % (g->qmax - g->qmin);
            x[i] = 0.5f * (llmq_grid_value(g, k) + llmq_grid_value(g, k + 1));
        }
        x[3] = 1e30f;
        x[5] = -1e30f;
        x[11] = NAN;
        cr_assert_eq(llmq_round_row(t, x, N, G, grids, q), LLMQ_OK);
        cr_assert_eq(llmq_snap_row(t, x, N, G, grids, snapped), LLMQ_OK);
        for (int i = 0; i < N; i++) {
            const llmq_grid *g = &grids[i / G];
            cr_assert(q[i] >= g->qmin && q[i] <= g->qmax, "type %d element %d: code %d", (int)t, i, q[i]);
            cr_assert_eq(snapped[i], llmq_grid_value(g, q[i]), "type %d element %d", (int)t, i);
            if (isnan(x[i])) {
                cr_assert_eq(q[i], g->qmin, "NaN goes to the lowest code");
                continue;
            }
            const float best = fabsf(llmq_grid_value(g, q[i]) - x[i]);
            for (int k = g->qmin; k <= g->qmax; k++)
                cr_assert(fabsf(llmq_grid_value(g, k) - x[i]) >= best, "type %d element %d (%g): code %d beats %d", (int)t, i,
                          (double)x[i], k, q[i]);
        }
    }
}

/* A group whose smallest value is a zero takes the sign of the first zero,
 * as a sequential fminf scan does (the sign reaches Q4_1's stored min). */
Test(blocks, asymmetric_fit_keeps_the_first_zero_as_its_minimum)
{
    float x[32];
    for (int i = 0; i < 32; i++) x[i] = 0.01f * (float)(i + 1);
    x[4] = 0.0f;
    x[20] = -0.0f;
    llmq_real_grid a = llmq_grid_fit(LLMQ_TYPE_Q4_1, x, 32, NULL, false);
    cr_assert(a.offset == 0.0f && !signbit(a.offset), "offset %g", (double)a.offset);
    x[4] = -0.0f;
    x[20] = 0.0f;
    llmq_real_grid b = llmq_grid_fit(LLMQ_TYPE_Q4_1, x, 32, NULL, false);
    cr_assert(b.offset == 0.0f && signbit(b.offset), "offset %g", (double)b.offset);
    x[4] = -0.5f; /* a nonzero minimum, found by the vector lanes */
    llmq_real_grid c = llmq_grid_fit(LLMQ_TYPE_Q4_1, x, 32, NULL, false);
    cr_assert_eq(c.offset, -0.5f);
    cr_assert_eq(c.scale, (0.32f - -0.5f) / 15);
}
