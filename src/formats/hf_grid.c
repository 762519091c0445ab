/* Hugging Face GPTQ/AWQ grids as internal block types (llmq/hf_grid.h). */
#include "llmq/hf_grid.h"
#include "llmq/error.h"

#include <math.h>
#include <string.h>

static inline float h2f(uint16_t h) { return llmq_f16_to_f32(h); }

static inline uint16_t f2h_sat(float x)
{
    if (x > 65504.0f) x = 65504.0f;
    if (x < -65504.0f) x = -65504.0f;
    return llmq_f32_to_f16(x);
}

/* Code offset: codes are q − off so that 8-bit codes fit an int8_t. */
static inline int code_off(llmq_type t) { return t == LLMQ_TYPE_HF_U8 ? 128 : 0; }
static inline int qmax_u(llmq_type t) { return (1 << llmq_hf_bits(t)) - 1; }

static void dequant_hf_u4(const void *src, float *dst, int64_t n)
{
    const llmq_block_hf_u4 *b = src;
    for (int64_t i = 0; i < n / LLMQ_QK; i++, dst += LLMQ_QK) {
        const float d = h2f(b[i].d);
        const int z = b[i].z;
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)((b[i].qs[j] & 0xF) - z);
            dst[j + 16] = d * (float)((b[i].qs[j] >> 4) - z);
        }
    }
}

static void dequant_hf_u8(const void *src, float *dst, int64_t n)
{
    const llmq_block_hf_u8 *b = src;
    for (int64_t i = 0; i < n / LLMQ_QK; i++, dst += LLMQ_QK) {
        const float d = h2f(b[i].d);
        const int z = b[i].z;
        for (int j = 0; j < 32; j++) dst[j] = d * (float)(b[i].qs[j] - z);
    }
}

/* Reference encoders: min/max grids over each 32-element block. */
static void hf_from_float(llmq_type t, const float *x, void *dst, int64_t n)
{
    const size_t bs = t == LLMQ_TYPE_HF_U4 ? sizeof(llmq_block_hf_u4) : sizeof(llmq_block_hf_u8);
    for (int64_t b = 0; b < n / LLMQ_QK; b++) {
        llmq_grid g = llmq_hf_grid_from_real(t, llmq_hf_grid_fit(t, x + b * LLMQ_QK, LLMQ_QK, NULL, false));
        int8_t q[LLMQ_QK];
        for (int j = 0; j < LLMQ_QK; j++) q[j] = (int8_t)llmq_grid_round(&g, x[b * LLMQ_QK + j]);
        llmq_hf_pack_codes(t, q, LLMQ_QK, LLMQ_QK, &g, (char *)dst + b * bs);
    }
}
static void hf_u4_from_float(const float *x, void *dst, int64_t n) { hf_from_float(LLMQ_TYPE_HF_U4, x, dst, n); }
static void hf_u8_from_float(const float *x, void *dst, int64_t n) { hf_from_float(LLMQ_TYPE_HF_U8, x, dst, n); }

static const llmq_type_traits hf_traits[2] = {
    {"hf_u4", LLMQ_QK, sizeof(llmq_block_hf_u4), true, dequant_hf_u4, hf_u4_from_float},
    {"hf_u8", LLMQ_QK, sizeof(llmq_block_hf_u8), true, dequant_hf_u8, hf_u8_from_float},
};

const llmq_type_traits *llmq_hf_grid_traits(int t)
{
    return t == LLMQ_TYPE_HF_U4 ? &hf_traits[0] : t == LLMQ_TYPE_HF_U8 ? &hf_traits[1] : NULL;
}

llmq_grid llmq_hf_grid_make(llmq_type t, uint16_t d, int z)
{
    llmq_grid g;
    memset(&g, 0, sizeof g);
    const int off = code_off(t);
    g.d = d;
    g.scale = h2f(d);
    g.zero = (int16_t)(z - off);
    g.qmin = (int16_t)-off;
    g.qmax = (int16_t)(qmax_u(t) - off);
    return g;
}

llmq_grid llmq_hf_grid_from_real(llmq_type t, llmq_real_grid real)
{
    const int qmax = qmax_u(t);
    const uint16_t d = f2h_sat(real.scale);
    const float s = h2f(d);
    /* zero in 1..qmax: GPTQ v1 stores zero − 1 */
    const int z = s > 0.0f ? llmq_round_clamp(-real.offset / s, 1, qmax) : (qmax + 1) / 2;
    return llmq_hf_grid_make(t, s > 0.0f ? d : 0, z);
}

/* The real grid of range [lo, hi] (lo ≤ 0 ≤ hi): AutoGPTQ's
 * scale = (hi − lo)/qmax, offset = lo; when the zero would round to 0, the
 * grid keeps zero 1 and spans [−scale, (qmax − 1)·scale] instead. */
static llmq_real_grid range_grid(int qmax, float lo, float hi)
{
    llmq_real_grid r = {0.0f, 0.0f};
    if (!(hi > lo)) return r;
    r.scale = (hi - lo) / (float)qmax;
    r.offset = lo;
    if (-lo / r.scale < 0.5f) {
        r.scale = hi / (float)(qmax - 1);
        r.offset = -r.scale;
    }
    return r;
}

llmq_real_grid llmq_hf_grid_fit(llmq_type t, const float *x, int len, const float *importance, bool search)
{
    const int qmax = qmax_u(t);
    float lo = 0.0f, hi = 0.0f;
    for (int i = 0; i < len; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    llmq_real_grid best = range_grid(qmax, lo, hi);
    if (!search || !(hi > lo)) return best;
    llmq_grid g = llmq_hf_grid_from_real(t, best);
    double best_err = llmq_grid_sse(&g, x, len, importance);
    for (int step = 1; step <= 20; step++) {
        const float p = 1.0f - 0.025f * (float)step;
        llmq_real_grid cand = range_grid(qmax, p * lo, p * hi);
        g = llmq_hf_grid_from_real(t, cand);
        double err = llmq_grid_sse(&g, x, len, importance);
        if (err < best_err) {
            best_err = err;
            best = cand;
        }
    }
    return best;
}

int llmq_hf_pack_codes(llmq_type t, const int8_t *q, int n, int group_size, const llmq_grid *grids, void *dst)
{
    const llmq_type_traits *tr = llmq_hf_grid_traits(t);
    if (!tr) return llmq_error("pack: type %d is not an HF grid type", (int)t);
    const int off = code_off(t), qmax = qmax_u(t);
    if (n <= 0 || n % LLMQ_QK || group_size <= 0 || group_size % LLMQ_QK)
        return llmq_error("pack %s: row of %d elements in groups of %d (both must be multiples of 32)", tr->name, n, group_size);
    for (int g = 0; g < llmq_group_count(n, group_size); g++) {
        const llmq_grid *gr = &grids[g];
        const int z = gr->zero + off;
        if (gr->scale != h2f(gr->d) || gr->offset != 0.0f || gr->qmin != -off || gr->qmax != qmax - off || z < 0 || z > qmax + 1)
            return llmq_error("pack %s: grid of group %d is not one the type stores (scale %g offset %g zero %d)", tr->name, g,
                              (double)gr->scale, (double)gr->offset, z);
    }
    for (int i = 0; i < n; i++)
        if (q[i] < -off || q[i] > qmax - off)
            return llmq_error("pack %s: code %d of element %d is outside %d..%d", tr->name, q[i], i, -off, qmax - off);
    for (int b = 0; b < n / LLMQ_QK; b++) {
        const llmq_grid *gr = &grids[b * LLMQ_QK / group_size];
        const int8_t *qb = q + b * LLMQ_QK;
        if (t == LLMQ_TYPE_HF_U4) {
            llmq_block_hf_u4 *y = (llmq_block_hf_u4 *)dst + b;
            y->d = gr->d;
            y->z = (uint16_t)(gr->zero + off);
            for (int j = 0; j < 16; j++) y->qs[j] = (uint8_t)(qb[j] | (qb[j + 16] << 4));
        } else {
            llmq_block_hf_u8 *y = (llmq_block_hf_u8 *)dst + b;
            y->d = gr->d;
            y->z = (uint16_t)(gr->zero + off);
            for (int j = 0; j < 32; j++) y->qs[j] = (uint8_t)(qb[j] + off);
        }
    }
    return LLMQ_OK;
}

int llmq_hf_unpack_codes(llmq_type t, const void *src, int n, int8_t *q)
{
    const llmq_type_traits *tr = llmq_hf_grid_traits(t);
    if (!tr) return llmq_error("unpack: type %d is not an HF grid type", (int)t);
    if (n <= 0 || n % LLMQ_QK) return llmq_error("unpack %s: row of %d elements is not a multiple of 32", tr->name, n);
    for (int j = 0; j < n; j++) q[j] = (int8_t)(llmq_hf_block_code(t, src, j) - code_off(t));
    return LLMQ_OK;
}

void llmq_hf_block_fields(llmq_type t, const void *row, int b, uint16_t *d, int *z)
{
    switch (t) {
    case LLMQ_TYPE_HF_U4: *d = ((const llmq_block_hf_u4 *)row)[b].d; *z = ((const llmq_block_hf_u4 *)row)[b].z; break;
    case LLMQ_TYPE_HF_U8: *d = ((const llmq_block_hf_u8 *)row)[b].d; *z = ((const llmq_block_hf_u8 *)row)[b].z; break;
    case LLMQ_TYPE_Q4_0: *d = ((const llmq_block_q4_0 *)row)[b].d; *z = 8; break;
    case LLMQ_TYPE_Q8_0: *d = ((const llmq_block_q8_0 *)row)[b].d; *z = 128; break;
    default: *d = 0; *z = 0; break;
    }
}

int llmq_hf_block_code(llmq_type t, const void *row, int j)
{
    const int b = j / LLMQ_QK, e = j % LLMQ_QK;
    switch (t) {
    case LLMQ_TYPE_HF_U4: {
        const uint8_t v = ((const llmq_block_hf_u4 *)row)[b].qs[e % 16];
        return e < 16 ? v & 0xF : v >> 4;
    }
    case LLMQ_TYPE_Q4_0: {
        const uint8_t v = ((const llmq_block_q4_0 *)row)[b].qs[e % 16];
        return e < 16 ? v & 0xF : v >> 4;
    }
    case LLMQ_TYPE_HF_U8: return ((const llmq_block_hf_u8 *)row)[b].qs[e];
    case LLMQ_TYPE_Q8_0: return ((const llmq_block_q8_0 *)row)[b].qs[e] + 128;
    default: return 0;
    }
}
