/* Exact, order-free sums (llmq/xsum.h): 128-bit fixed point. Rows of fp32
 * partials (the Hessians) go through the CPU's best row kernel
 * (xsum_avx512.c, or the portable one below): the same integers either way. */
#include "llmq/xsum.h"
#include "kernel_ops.h"
#include "llmq/dist.h"
#include "llmq/error.h"
#include "llmq/kernels.h"
#include "xsum_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef __int128 slot;

/* Slots add modulo 2¹²⁸ (unsigned arithmetic: no signed overflow), so a
 * partial sum that passes ±2⁶⁷ on the way comes back exactly once the total
 * is in range, whatever the order; the AVX-512 kernel's carries wrap the same way. */
static inline slot slot_add(slot a, slot b) { return (slot)((unsigned __int128)a + (unsigned __int128)b); }

/* below this many slots a loop runs on one thread: waking the team costs more */
#define XSUM_PAR_MIN ((size_t)1 << 15)

int llmq_xsum_init(llmq_xsum *s, size_t n)
{
    s->n = n;
    s->slots = n ? calloc(n, sizeof(slot)) : NULL;
    if (n && !s->slots) return llmq_error("out of memory for %zu exact sums (%.1f MiB)", n, (double)n * sizeof(slot) / (1 << 20));
    return LLMQ_OK;
}

void llmq_xsum_free(llmq_xsum *s)
{
    free(s->slots);
    s->slots = NULL;
    s->n = 0;
}

void llmq_xsum_zero(llmq_xsum *s)
{
    if (s->slots) memset(s->slots, 0, s->n * sizeof(slot));
}

/* x on the grid of 2⁻⁶⁰, truncated toward zero, for |x| < 2⁶⁶ (the callers
 * check: in_range), from the bits of the double: its 53-bit significand
 * shifted into place, then the sign. No branches and no library calls
 * (libgcc's double → __int128 conversion, or floor without SSE4.1, cost
 * ~50 cycles an entry), since partials of mixed signs and magnitudes would
 * mispredict every branch. */
static inline slot to_fixed(double x)
{
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    const int e = (int)(bits >> 52 & 0x7ff);
    const uint64_t m = (bits & ((UINT64_C(1) << 52) - 1)) | (uint64_t)(e != 0) << 52;
    /* |x| = m·2^(e' − 1075) with e' = max(e, 1) (subnormals); in units of 2⁻⁶⁰ */
    const int sh = (e ? e : 1) - 1075 + LLMQ_XSUM_FRAC_BITS, left = sh > 0 ? sh : 0, right = sh < 0 ? (sh > -127 ? -sh : 127) : 0;
    const slot v = ((slot)m << left) >> right, neg = -(slot)(bits >> 63);
    return (v ^ neg) - neg;
}

static inline bool in_range(double x) { return fabs(x) < 0x1p66; } /* false for NaN */

bool llmq_xsum_row_f32_portable(void *acc_, const float *x, int n)
{
    slot *acc = acc_;
    bool ok = true;
    for (int j = 0; j < n; j++) {
        const bool r = in_range(x[j]);
        ok &= r;
        acc[j] = slot_add(acc[j], to_fixed(r ? x[j] : 0.0f)); /* a bad value is reported, never converted */
    }
    return ok;
}

/* The AVX-512 kernel's whole vectors, then the tail. */
static bool row_avx512(void *acc, const float *x, int n)
{
    static xsum_row_f32_fn body;
    if (!body) body = llmq_xsum_row_f32_avx512();
    const int m = n & ~7;
    const bool ok = body(acc, x, m);
    return llmq_xsum_row_f32_portable((slot *)acc + m, x + m, n - m) && ok;
}

/* The row kernel of the active instruction set (LLMQ_KERNEL / llmq_kernel_select). */
static xsum_row_f32_fn row_kernel(void)
{
#if defined(__x86_64__)
    if (llmq_isa_active() == LLMQ_ISA_AVX512 && __builtin_cpu_supports("avx512dq") && llmq_xsum_row_f32_avx512()) return row_avx512;
#endif
    return llmq_xsum_row_f32_portable;
}

static int range_error(double x, const char *what)
{
    return llmq_error("%s: a partial sum of %g is outside the exact accumulator's range (finite, below 2^66)", what ? what : "sum", x);
}

int llmq_xsum_add_f32(llmq_xsum *s, size_t at, const float *x, size_t n, const char *what)
{
    if (at + n > s->n) return llmq_error("%s: exact sum slots %zu..%zu past %zu", what, at, at + n, s->n);
    const xsum_row_f32_fn row = row_kernel();
    enum { PIECE = 1 << 14 };
    slot *acc = (slot *)s->slots + at;
    size_t bad = SIZE_MAX;
    #pragma omp parallel for schedule(static) reduction(min : bad) if (n >= XSUM_PAR_MIN)
    for (size_t i = 0; i < n; i += PIECE) {
        const int len = (int)(n - i < PIECE ? n - i : PIECE);
        if (!row(acc + i, x + i, len) && i < bad) bad = i;
    }
    if (bad == SIZE_MAX) return LLMQ_OK;
    for (size_t i = bad; i < n; i++)
        if (!in_range(x[i])) return range_error(x[i], what);
    return range_error(NAN, what);
}

int llmq_xsum_add_f64(llmq_xsum *s, size_t at, const double *x, size_t n, const char *what)
{
    if (at + n > s->n) return llmq_error("%s: exact sum slots %zu..%zu past %zu", what, at, at + n, s->n);
    slot *acc = (slot *)s->slots + at;
    size_t bad = SIZE_MAX;
    #pragma omp parallel for schedule(static) reduction(min : bad) if (n >= XSUM_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        if (in_range(x[i])) acc[i] = slot_add(acc[i], to_fixed(x[i]));
        else if (i < bad) bad = i;
    }
    return bad == SIZE_MAX ? LLMQ_OK : range_error(x[bad], what);
}

int llmq_xsum_add_upper(llmq_xsum *s, const float *A, int n, int lda, const char *what)
{
    if (llmq_xsum_upper_slots(n) > s->n) return llmq_error("%s: %d × %d needs %zu exact sums, %zu held", what, n, n, llmq_xsum_upper_slots(n), s->n);
    const xsum_row_f32_fn row = row_kernel();
    slot *acc = s->slots;
    int bad_row = n;
    #pragma omp parallel for schedule(dynamic, 16) reduction(min : bad_row) if ((size_t)n * n >= 2 * XSUM_PAR_MIN)
    for (int i = 0; i < n; i++)
        if (!row(acc + llmq_xsum_upper_at(n, i, i), A + (size_t)i * lda + i, n - i) && i < bad_row) bad_row = i;
    if (bad_row == n) return LLMQ_OK;
    const float *a = A + (size_t)bad_row * lda;
    for (int j = bad_row; j < n; j++)
        if (!in_range(a[j])) return range_error(a[j], what);
    return range_error(NAN, what);
}

/* the slot in double: two exact halves, one rounding each (the same bits every time) */
static inline double from_fixed(slot v)
{
    const int64_t hi = (int64_t)(v >> 64);
    const uint64_t lo = (uint64_t)v;
    return (double)hi * 0x1p64 + (double)lo;
}

void llmq_xsum_get_f64(const llmq_xsum *s, size_t at, double *out, size_t n, double scale)
{
    const slot *acc = (const slot *)s->slots + at;
    const double f = scale * 0x1p-60;
    #pragma omp parallel for schedule(static) if (n >= XSUM_PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = from_fixed(acc[i]) * f;
}

void llmq_xsum_get_upper(const llmq_xsum *s, float *A, int n, int lda, double scale)
{
    const slot *acc = s->slots;
    const double f = scale * 0x1p-60;
    #pragma omp parallel for schedule(dynamic, 16) if ((size_t)n * n >= 2 * XSUM_PAR_MIN)
    for (int i = 0; i < n; i++) {
        const slot *row = acc + llmq_xsum_upper_at(n, i, i);
        float *a = A + (size_t)i * lda;
        for (int j = i; j < n; j++) a[j] = (float)(from_fixed(row[j - i]) * f);
    }
}

int llmq_xsum_merge(llmq_xsum *dst, const llmq_xsum *src)
{
    if (dst->n != src->n) return llmq_error("exact sums: merging %zu slots into %zu", src->n, dst->n);
    slot *a = dst->slots;
    const slot *b = src->slots;
    #pragma omp parallel for schedule(static) if (dst->n >= XSUM_PAR_MIN)
    for (size_t i = 0; i < dst->n; i++) a[i] = slot_add(a[i], b[i]);
    return LLMQ_OK;
}

int llmq_xsum_reduce(llmq_xsum *s) { return llmq_dist_sum_i128(s->slots, s->n); }
