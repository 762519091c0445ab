/* The --fast path's int8 GEMM (gemm_q8.h has the layout): weights repacked a
 * panel at a time, activations quantized once, micro-tiles of GQ_MR tokens ×
 * GQ_ROWS rows. Threads take contiguous ranges of panels and meet no
 * barrier until the end. */
#include "gemm_q8.h"
#include "kernel_ops.h"
#include "llmq/blocks.h"
#include "llmq/error.h"
#include "llmq/kernels.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static inline float h2f(uint16_t h) { return llmq_f16_to_f32(h); }

/* ------------------------------------------------ rows to codes per type */

/* One row of n elements → its unit scales a[n/unit] and offsets c[n/unit]
 * (w = a·(u − zero) + c, u the stored code llmq_unpack_codes reads). */
typedef void (*gq_scales_fn)(const void *row, int n, float *a, float *c);

static void scales_q4_0(const void *row, int n, float *a, float *c)
{
    const llmq_block_q4_0 *b = row;
    for (int i = 0; i < n / 32; i++) a[i] = h2f(b[i].d), c[i] = 0;
}

static void scales_q4_1(const void *row, int n, float *a, float *c)
{
    const llmq_block_q4_1 *b = row;
    for (int i = 0; i < n / 32; i++) a[i] = h2f(b[i].d), c[i] = h2f(b[i].m);
}

static void scales_q5_0(const void *row, int n, float *a, float *c)
{
    const llmq_block_q5_0 *b = row;
    for (int i = 0; i < n / 32; i++) a[i] = h2f(b[i].d), c[i] = 0;
}

static void scales_q5_1(const void *row, int n, float *a, float *c)
{
    const llmq_block_q5_1 *b = row;
    for (int i = 0; i < n / 32; i++) a[i] = h2f(b[i].d), c[i] = h2f(b[i].m);
}

/* IQ4: the panel's codes are the levels themselves (−127..113), w = d·level. */
static void scales_iq4_nl(const void *row, int n, float *a, float *c)
{
    const llmq_block_iq4_nl *b = row;
    for (int i = 0; i < n / 32; i++) a[i] = h2f(b[i].d), c[i] = 0;
}

static void scales_iq4_xs(const void *row, int n, float *a, float *c)
{
    const llmq_block_iq4_xs *b = row;
    for (int i = 0; i < n / 256; i++)
        for (int ib = 0; ib < 8; ib++) a[8 * i + ib] = h2f(b[i].d) * (float)llmq_iq4_xs_scale(&b[i], ib), c[8 * i + ib] = 0;
}

static void scales_q2_k(const void *row, int n, float *a, float *c)
{
    const llmq_block_q2_k *b = row;
    for (int i = 0; i < n / 256; i++)
        for (int j = 0; j < 16; j++)
            a[16 * i + j] = h2f(b[i].d) * (float)(b[i].scales[j] & 0xF), c[16 * i + j] = -(h2f(b[i].dmin) * (float)(b[i].scales[j] >> 4));
}

static void scales_q8_0(const void *row, int n, float *a, float *c)
{
    const llmq_block_q8_0 *b = row;
    for (int i = 0; i < n / 32; i++) a[i] = h2f(b[i].d), c[i] = 0;
}

/* One Q4_K/Q5_K super-block's eight units: a = d·sc, c = −dmin·m. */
static void k_scales_mins(uint16_t dh, uint16_t dminh, const uint8_t scales[12], float *a, float *c)
{
    const float d = h2f(dh), dmin = h2f(dminh);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        llmq_q4_k_get_scale_min(scales, j, &sc, &m);
        a[j] = d * (float)sc;
        c[j] = -(dmin * (float)m);
    }
}

static void scales_q4_k(const void *row, int n, float *a, float *c)
{
    const llmq_block_q4_k *b = row;
    for (int i = 0; i < n / 256; i++) k_scales_mins(b[i].d, b[i].dmin, b[i].scales, a + 8 * i, c + 8 * i);
}

static void scales_q5_k(const void *row, int n, float *a, float *c)
{
    const llmq_block_q5_k *b = row;
    for (int i = 0; i < n / 256; i++) k_scales_mins(b[i].d, b[i].dmin, b[i].scales, a + 8 * i, c + 8 * i);
}

static void scales_q6_k(const void *row, int n, float *a, float *c)
{
    const llmq_block_q6_k *b = row;
    for (int i = 0; i < n / 256; i++)
        for (int j = 0; j < 16; j++) a[16 * i + j] = h2f(b[i].d) * (float)b[i].scales[j], c[16 * i + j] = 0;
}

static void scales_q3_k(const void *row, int n, float *a, float *c)
{
    const llmq_block_q3_k *b = row;
    for (int i = 0; i < n / 256; i++)
        for (int j = 0; j < 16; j++) a[16 * i + j] = h2f(b[i].d) * (float)llmq_q3_k_get_scale(b[i].scales, j), c[16 * i + j] = 0;
}

typedef struct {
    gq_scales_fn scales;
    int unit, has_offset;
    int zero, code_max; /* gq_panel's (zero < 0: Q8_0's codes are signed already) */
    const int8_t *levels; /* IQ4: the stored code u stands for levels[u], the panel's signed code */
} gq_type;

static const gq_type *gq_type_of(llmq_type t)
{
    static const gq_type q4_0 = {scales_q4_0, 32, 0, 8, 15, NULL}, q4_1 = {scales_q4_1, 32, 1, 0, 15, NULL},
                         q8_0 = {scales_q8_0, 32, 0, -1, 0, NULL}, q4_k = {scales_q4_k, 32, 1, 0, 15, NULL},
                         q6_k = {scales_q6_k, 16, 0, 32, 63, NULL}, q3_k = {scales_q3_k, 16, 0, 4, 7, NULL},
                         q5_0 = {scales_q5_0, 32, 0, 16, 31, NULL}, q5_1 = {scales_q5_1, 32, 1, 0, 31, NULL},
                         q5_k = {scales_q5_k, 32, 1, 0, 31, NULL}, iq4_nl = {scales_iq4_nl, 32, 0, -1, 0, llmq_iq4nl_levels},
                         iq4_xs = {scales_iq4_xs, 32, 0, -1, 0, llmq_iq4nl_levels}, q2_k = {scales_q2_k, 16, 1, 0, 3, NULL};
    switch (t) {
    case LLMQ_TYPE_Q4_0: return &q4_0;
    case LLMQ_TYPE_Q4_1: return &q4_1;
    case LLMQ_TYPE_Q8_0: return &q8_0;
    case LLMQ_TYPE_Q4_K: return &q4_k;
    case LLMQ_TYPE_Q6_K: return &q6_k;
    case LLMQ_TYPE_Q3_K: return &q3_k;
    case LLMQ_TYPE_Q5_0: return &q5_0;
    case LLMQ_TYPE_Q5_1: return &q5_1;
    case LLMQ_TYPE_Q5_K: return &q5_k;
    case LLMQ_TYPE_IQ4_NL: return &iq4_nl;
    case LLMQ_TYPE_IQ4_XS: return &iq4_xs;
    case LLMQ_TYPE_Q2_K: return &q2_k;
    default: return NULL;
    }
}

/* The reference micro-kernels: per token and row, each unit's integer sum
 * (int8 codes quad-major against unsigned activations from −128·Σq, or int16
 * codes pair-major against int16 activations from 0), then the float steps in
 * the order every SIMD kernel takes them. */
LLMQ_ALWAYS_INLINE void scalar_body(const gq_panel *p, const gq_acts *x, int t0, int mt, float *out, const int has_offset, const int wide)
{
    const int nb = p->in / 32, unit = p->unit;
    const int16_t *codes16 = (const int16_t *)(const void *)p->codes;
    for (int t = 0; t < mt; t++) {
        const uint8_t *x8 = wide ? NULL : x->q + (size_t)(t0 + t) * p->in;
        const int16_t *x16 = wide ? x->q16 + (size_t)(t0 + t) * p->in : NULL;
        const float *dx = x->d + (size_t)(t0 + t) * nb, *sx = x->s + (size_t)(t0 + t) * nb;
        for (int r = 0; r < GQ_ROWS; r++) {
            float f = 0;
            for (int u = 0; u < p->n_units; u++) {
                int32_t acc = wide ? 0 : p->corr[GQ_ROWS * u + r];
                for (int k = u * unit; k < (u + 1) * unit; k++)
                    acc += wide ? (int32_t)x16[k] * codes16[((size_t)(k / 2) * GQ_ROWS + r) * 2 + k % 2]
                                : (int32_t)x8[k] * p->codes[((size_t)(k / 4) * GQ_ROWS + r) * 4 + k % 4];
                const int b = u * unit / 32;
                f = fmaf((float)acc, p->scale[GQ_ROWS * u + r] * dx[b], f);
                if (has_offset) f = fmaf(p->offset[GQ_ROWS * u + r], unit == 16 ? x->s16[(size_t)(t0 + t) * (p->in / 16) + u] : sx[b], f);
            }
            out[t * GQ_ROWS + r] = f;
        }
    }
}
static void scalar_plain(const gq_panel *p, const gq_acts *x, int t0, int mt, float *out) { scalar_body(p, x, t0, mt, out, 0, 0); }
static void scalar_offset(const gq_panel *p, const gq_acts *x, int t0, int mt, float *out) { scalar_body(p, x, t0, mt, out, 1, 0); }
static void scalar16_plain(const gq_panel *p, const gq_acts *x, int t0, int mt, float *out) { scalar_body(p, x, t0, mt, out, 0, 1); }
static void scalar16_offset(const gq_panel *p, const gq_acts *x, int t0, int mt, float *out) { scalar_body(p, x, t0, mt, out, 1, 1); }

gq_kernel_fn llmq_gq_kernel16_scalar(int unit, int has_offset)
{
    if (unit != 16 && unit != 32) return NULL;
    return has_offset ? scalar16_offset : scalar16_plain;
}

static gq_kernel_fn kernel16_for(llmq_type t)
{
    const gq_type *gt = gq_type_of(t);
    if (!gt) return NULL;
    switch (llmq_isa_active()) {
    case LLMQ_ISA_AVX512: return llmq_gq_kernel16_avx512(gt->unit, gt->has_offset);
    case LLMQ_ISA_SCALAR: return llmq_gq_kernel16_scalar(gt->unit, gt->has_offset);
    default: return NULL;
    }
}

int llmq_gemm_q16_supports(llmq_type t) { return kernel16_for(t) != NULL; }

gq_kernel_fn llmq_gq_kernel_scalar(int unit, int has_offset)
{
    if (unit != 16 && unit != 32) return NULL;
    return has_offset ? scalar_offset : scalar_plain;
}

gq_kernel_fn llmq_gq_kernel_for(llmq_type t)
{
    const gq_type *gt = gq_type_of(t);
    if (!gt) return NULL;
    switch (llmq_isa_active()) {
    case LLMQ_ISA_AVX512: return llmq_gq_kernel_avx512(gt->unit, gt->has_offset);
    case LLMQ_ISA_AVX2: return llmq_gq_kernel_avx2(gt->unit, gt->has_offset);
    case LLMQ_ISA_SCALAR: return llmq_gq_kernel_scalar(gt->unit, gt->has_offset);
    default: return NULL;
    }
}

int llmq_gemm_q8_supports(llmq_type t) { return llmq_gq_kernel_for(t) != NULL; }

bool llmq_fast_is_faster(void)
{
    const int isa = llmq_isa_active();
    return isa == LLMQ_ISA_AVX512 || isa == LLMQ_ISA_AVX2;
}

/* The scalar micro-kernel serves the tests, not speed. */
bool llmq_int16_available(void) { return llmq_isa_active() == LLMQ_ISA_AVX512 && llmq_gemm_q16_supports(LLMQ_TYPE_Q4_K); }

/* ------------------------------------------------------------- packing */

typedef struct {
    int8_t *codes;
    float *scale, *offset;
    int32_t *corr;
    int8_t *row_q;
    float *row_a, *row_c;
} pack_buf;

static void pack_free(pack_buf *b)
{
    free(b->codes); free(b->scale); free(b->offset); free(b->corr);
    free(b->row_q); free(b->row_a); free(b->row_c);
    memset(b, 0, sizeof *b);
}

static size_t round64(size_t n) { return (n + 63) / 64 * 64; }

static int pack_alloc(pack_buf *b, int in, int unit, int wide)
{
    const size_t nu = (size_t)in / (size_t)unit;
    b->codes = aligned_alloc(64, round64((size_t)in * GQ_ROWS * (wide ? 2 : 1)));
    b->scale = aligned_alloc(64, round64(nu * GQ_ROWS * sizeof(float)));
    b->offset = aligned_alloc(64, round64(nu * GQ_ROWS * sizeof(float)));
    b->corr = aligned_alloc(64, round64(nu * GQ_ROWS * sizeof(int32_t)));
    b->row_q = malloc((size_t)in);
    b->row_a = malloc(nu * sizeof(float));
    b->row_c = malloc(nu * sizeof(float));
    if (b->codes && b->scale && b->offset && b->corr && b->row_q && b->row_a && b->row_c) return 1;
    pack_free(b);
    return 0;
}

/* Rows [r0, r0+nr) of W (nr ≤ GQ_ROWS) into the panel at b; wide: int16 codes, pair-major. */
static void pack_panel(pack_buf *b, llmq_type t, const gq_type *gt, const unsigned char *w, size_t row_bytes, int in, int r0, int nr,
                       int wide)
{
    const int nu = in / gt->unit, quads = in / 4;
    for (int r = 0; r < GQ_ROWS; r++) {
        if (r < nr) {
            /* the stored codes (blocks.c, the inverse of llmq_pack_codes; type and length are checked
             * already, so it cannot fail), made signed: q = u − zero */
            const unsigned char *row = w + (size_t)(r0 + r) * row_bytes;
            llmq_unpack_codes(t, row, in, b->row_q);
            if (gt->zero > 0)
                for (int k = 0; k < in; k++) b->row_q[k] = (int8_t)(b->row_q[k] - gt->zero);
            if (gt->levels)
                for (int k = 0; k < in; k++) b->row_q[k] = gt->levels[(uint8_t)b->row_q[k]];
            gt->scales(row, in, b->row_a, b->row_c);
        } else {
            memset(b->row_q, 0, (size_t)in);
            for (int u = 0; u < nu; u++) b->row_a[u] = b->row_c[u] = 0;
        }
        if (wide) {
            int16_t *dst = (int16_t *)(void *)b->codes;
            for (int g = 0; g < in / 2; g++) {
                dst[((size_t)g * GQ_ROWS + r) * 2] = b->row_q[2 * g];
                dst[((size_t)g * GQ_ROWS + r) * 2 + 1] = b->row_q[2 * g + 1];
            }
        } else {
            uint32_t *dst = (uint32_t *)(void *)b->codes;
            for (int g = 0; g < quads; g++) {
                uint32_t v;
                memcpy(&v, b->row_q + 4 * (size_t)g, 4);
                dst[(size_t)g * GQ_ROWS + r] = v;
            }
        }
        for (int u = 0; u < nu; u++) {
            int sum = 0;
            for (int k = 0; k < gt->unit; k++) sum += b->row_q[u * gt->unit + k];
            b->scale[u * GQ_ROWS + r] = b->row_a[u];
            b->offset[u * GQ_ROWS + r] = b->row_c[u];
            b->corr[u * GQ_ROWS + r] = -128 * sum;
        }
    }
}

/* ----------------------------------------------------------------- GEMM */

/* One row of n activations to int16 codes per block of 32: d = max|x|/32767,
 * q = x/d rounded to nearest even, s = d·Σq. */
static void act_quantize_q16(const float *x, int n, int16_t *q, float *d, float *s, float *s16)
{
    for (int b = 0; b < n / 32; b++, x += 32, q += 32) {
        float v[32];
        int sum, lo = 0;
        d[b] = llmq_act_block_codes(x, 32767.0f, v, &sum);
        for (int i = 0; i < 32; i++) q[i] = (int16_t)v[i];
        for (int i = 0; i < 16; i++) lo += (int)v[i];
        s[b] = d[b] * (float)sum;
        s16[2 * b] = d[b] * (float)lo;
        s16[2 * b + 1] = d[b] * (float)(sum - lo);
    }
}

/* The GEMM of both widths: int8 activations (wide = 0) or int16 (wide = 1). */
static int gemm(float *y, const float *x, int n_tokens, const void *w, llmq_type t, int in, int out, int wide)
{
    const gq_type *gt = gq_type_of(t);
    const gq_kernel_fn kern = wide ? kernel16_for(t) : llmq_gq_kernel_for(t);
    if (!kern) return llmq_error("matmul: no int%d GEMM for weight type %s here", wide ? 16 : 8, llmq_type_get(t)->name);
    if (in % 32) return llmq_error("matmul: row length %d is not a multiple of 32", in);
    const int nb = in / 32;
    const size_t row_bytes = llmq_row_size(t, in);
    uint8_t *xq = malloc((size_t)n_tokens * in * (wide ? 2 : 1));
    float *xd = malloc((size_t)n_tokens * nb * sizeof(float)), *xs = malloc((size_t)n_tokens * nb * sizeof(float));
    int32_t *xsum = malloc((size_t)n_tokens * (in / 16) * sizeof(int32_t));
    float *xs16 = malloc((size_t)n_tokens * (in / 16) * sizeof(float));
    if (!xq || !xd || !xs || !xsum || !xs16) {
        free(xq); free(xd); free(xs); free(xsum); free(xs16);
        return llmq_error("matmul: out of memory for %d×%d quantized activations", n_tokens, in);
    }
    int failed = 0;
    #pragma omp parallel
    {
        /* The activations as llmq_act_quantize_q8 makes them (so x̂ is the
         * --fast path's everywhere), stored unsigned. */
        llmq_act_q8 *tmp = wide ? NULL : malloc(llmq_act_q8_stride(in) * sizeof *tmp);
        if (!wide && !tmp) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(static)
        for (int k = 0; k < n_tokens; k++) {
            if (wide) {
                act_quantize_q16(x + (size_t)k * in, in, (int16_t *)(void *)xq + (size_t)k * in, xd + (size_t)k * nb, xs + (size_t)k * nb,
                                 xs16 + (size_t)k * (in / 16));
                continue;
            }
            if (!tmp) continue;
            llmq_act_quantize_q8(x + (size_t)k * in, in, tmp);
            uint8_t *dst = xq + (size_t)k * in;
            for (int b = 0; b < nb; b++) {
                int32_t lo = 0, hi = 0;
                for (int i = 0; i < 32; i++) dst[32 * b + i] = (uint8_t)(tmp[b].q[i] ^ 0x80);
                for (int i = 0; i < 16; i++) lo += tmp[b].q[i], hi += tmp[b].q[16 + i];
                xsum[(size_t)k * (in / 16) + 2 * b] = lo;
                xsum[(size_t)k * (in / 16) + 2 * b + 1] = hi;
                xs16[(size_t)k * (in / 16) + 2 * b] = tmp[b].d * (float)lo;
                xs16[(size_t)k * (in / 16) + 2 * b + 1] = tmp[b].d * (float)hi;
                xd[(size_t)k * nb + b] = tmp[b].d;
                xs[(size_t)k * nb + b] = tmp[b].s;
            }
        }
        free(tmp);
        const gq_acts acts = {in, xq, xd, xs, xsum, wide ? (const int16_t *)(const void *)xq : NULL, xs16};
        const int nth = omp_get_num_threads(), me = omp_get_thread_num();
        const int panels = (out + GQ_ROWS - 1) / GQ_ROWS;
        const int p0 = (int)((long long)panels * me / nth), p1 = (int)((long long)panels * (me + 1) / nth);
        pack_buf pb = {0};
        int failed_before; /* the activations are incomplete when a thread failed above (the barrier of the loop is past) */
        #pragma omp atomic read
        failed_before = failed;
        if (p1 > p0 && !failed_before && !pack_alloc(&pb, in, gt->unit, wide)) {
            #pragma omp atomic write
            failed = 1;
        }
        float tile[GQ_MR * GQ_ROWS];
        for (int p = p0; p < p1 && pb.codes; p++) {
            const int r0 = p * GQ_ROWS, nr = out - r0 < GQ_ROWS ? out - r0 : GQ_ROWS;
            pack_panel(&pb, t, gt, w, row_bytes, in, r0, nr, wide);
            const gq_panel panel = {in,      gt->unit, in / gt->unit, pb.codes, pb.scale, gt->has_offset ? pb.offset : NULL,
                                    pb.corr, gt->zero, gt->code_max};
            for (int t0 = 0; t0 < n_tokens; t0 += GQ_MR) {
                const int mt = n_tokens - t0 < GQ_MR ? n_tokens - t0 : GQ_MR;
                kern(&panel, &acts, t0, mt, tile);
                for (int k = 0; k < mt; k++) memcpy(y + (size_t)(t0 + k) * out + r0, tile + k * GQ_ROWS, (size_t)nr * sizeof(float));
            }
        }
        pack_free(&pb);
    }
    free(xq); free(xd); free(xs); free(xsum); free(xs16);
    if (failed) return llmq_error("matmul: out of memory for the int%d GEMM's buffers (%d×%d)", wide ? 16 : 8, n_tokens, in);
    return LLMQ_OK;
}

int llmq_gemm_q8(float *y, const float *x, int n_tokens, const void *w, llmq_type t, int in, int out)
{
    return gemm(y, x, n_tokens, w, t, in, out, 0);
}

int llmq_gemm_q16(float *y, const float *x, int n_tokens, const void *w, llmq_type t, int in, int out)
{
    return gemm(y, x, n_tokens, w, t, in, out, 1);
}
