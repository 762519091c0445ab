/* Exact sums (llmq/xsum.h) and the split-free Hessian (llmq_hsum): the same
 * partials give the same bits in any order and any grouping (the property a
 * run over MPI ranks rests on, where plain float sums do not), the value is
 * the true sum to within the 2⁻⁶⁰ grid, out-of-range partials are refused,
 * and a Hessian summed over windows split into "ranks" and merged equals the
 * one summed in one piece, bit for bit, and (2/N)·XᵀX within fp32 rounding. */
#include "llmq/dist.h"
#include "llmq/error.h"
#include "llmq/gptq.h"
#include "llmq/kernels.h"
#include "llmq/xsum.h"
#include "test_util.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static void one_thread(void) { llmq_set_threads(1); }
TestSuite(xsum, .init = one_thread);

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double uniform01(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* signed values over 12 decades: the worst case for float sums */
static double wide_value(void) { return (uniform01() < 0.5 ? -1 : 1) * pow(10.0, -6.0 + 12.0 * uniform01()); }

enum { SLOTS = 64, PARTS = 500 };

Test(xsum, any_order_and_grouping_gives_the_same_bits_and_the_true_sum)
{
    static double x[PARTS][SLOTS];
    for (int p = 0; p < PARTS; p++)
        for (int i = 0; i < SLOTS; i++) x[p][i] = wide_value();
    llmq_xsum fwd, rev, g1, g2, g3;
    cr_assert_eq(llmq_xsum_init(&fwd, SLOTS), LLMQ_OK);
    cr_assert_eq(llmq_xsum_init(&rev, SLOTS), LLMQ_OK);
    cr_assert_eq(llmq_xsum_init(&g1, SLOTS), LLMQ_OK);
    cr_assert_eq(llmq_xsum_init(&g2, SLOTS), LLMQ_OK);
    cr_assert_eq(llmq_xsum_init(&g3, SLOTS), LLMQ_OK);
    for (int p = 0; p < PARTS; p++) {
        cr_assert_eq(llmq_xsum_add_f64(&fwd, 0, x[p], SLOTS, "test"), LLMQ_OK);
        cr_assert_eq(llmq_xsum_add_f64(&rev, 0, x[PARTS - 1 - p], SLOTS, "test"), LLMQ_OK);
        /* three "ranks" holding contiguous shares, merged as the all-reduce merges them */
        llmq_xsum *g = p < 170 ? &g1 : p < 333 ? &g2 : &g3;
        cr_assert_eq(llmq_xsum_add_f64(g, 0, x[p], SLOTS, "test"), LLMQ_OK);
    }
    cr_assert_eq(llmq_xsum_merge(&g3, &g1), LLMQ_OK);
    cr_assert_eq(llmq_xsum_merge(&g3, &g2), LLMQ_OK);
    double a[SLOTS], b[SLOTS], c[SLOTS];
    llmq_xsum_get_f64(&fwd, 0, a, SLOTS, 1.0);
    llmq_xsum_get_f64(&rev, 0, b, SLOTS, 1.0);
    llmq_xsum_get_f64(&g3, 0, c, SLOTS, 1.0);
    cr_assert(!memcmp(a, b, sizeof a), "reversed order changed the bits");
    cr_assert(!memcmp(a, c, sizeof a), "grouping changed the bits");
    int float_differs = 0;
    for (int i = 0; i < SLOTS; i++) {
        /* the true sum, compensated (Neumaier) in long double */
        long double s = 0, comp = 0, abs_sum = 0;
        double naive_fwd = 0, naive_rev = 0;
        for (int p = 0; p < PARTS; p++) {
            long double v = x[p][i], t = s + v;
            comp += fabsl(s) >= fabsl(v) ? (s - t) + v : (v - t) + s;
            s = t;
            abs_sum += fabsl(v);
            naive_fwd += x[p][i];
            naive_rev += x[PARTS - 1 - p][i];
        }
        const double truth = (double)(s + comp);
        /* truncation to the 2⁻⁶⁰ grid per partial, then one rounding to double */
        cr_assert(fabs(a[i] - truth) <= PARTS * 0x1p-60 + 4e-16 * fabs(truth), "slot %d: %.17g vs %.17g", i, a[i], truth);
        (void)abs_sum;
        float_differs += naive_fwd != naive_rev;
    }
    /* the property is not vacuous: plain double sums of these do depend on the order */
    cr_assert_gt(float_differs, 0);
    llmq_xsum_free(&fwd), llmq_xsum_free(&rev), llmq_xsum_free(&g1), llmq_xsum_free(&g2), llmq_xsum_free(&g3);
}

Test(xsum, partials_out_of_range_are_refused_by_name)
{
    llmq_xsum s;
    cr_assert_eq(llmq_xsum_init(&s, 4), LLMQ_OK);
    const double ok[4] = {0x1p65, -0x1p65, 1e-30, 0};
    cr_assert_eq(llmq_xsum_add_f64(&s, 0, ok, 4, "fine"), LLMQ_OK);
    double out[4];
    llmq_xsum_get_f64(&s, 0, out, 4, 1.0);
    cr_assert_eq(out[0], 0x1p65);
    cr_assert_eq(out[1], -0x1p65);
    cr_assert_eq(out[2], 0.0, "below the 2^-60 grid: truncated to zero");
    const double bad[3] = {0x1p66, NAN, INFINITY};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(llmq_xsum_add_f64(&s, 0, &bad[i], 1, "the test's Hessian"), LLMQ_ERR);
        cr_assert(strstr(llmq_last_error(), "the test's Hessian"), "%s", llmq_last_error());
    }
    const float fbad = NAN;
    cr_assert_eq(llmq_xsum_add_f32(&s, 3, &fbad, 1, "f32"), LLMQ_ERR);
    cr_assert_eq(llmq_xsum_add_f32(&s, 4, &fbad, 1, "past the end"), LLMQ_ERR);
    llmq_xsum_free(&s);
}

Test(xsum, the_upper_triangle_round_trips_and_the_lower_is_left_alone)
{
    enum { N = 37, LD = 40 };
    static float A[N * LD], B[N * LD];
    for (int i = 0; i < N * LD; i++) A[i] = (float)ldexp(round(uniform01() * 4096) - 2048, -8); /* on the grid: exact */
    for (int i = 0; i < N * LD; i++) B[i] = -1.0f;
    llmq_xsum s;
    cr_assert_eq(llmq_xsum_init(&s, llmq_xsum_upper_slots(N)), LLMQ_OK);
    cr_assert_eq(llmq_xsum_add_upper(&s, A, N, LD, "A"), LLMQ_OK);
    cr_assert_eq(llmq_xsum_add_upper(&s, A, N, LD, "A"), LLMQ_OK);
    llmq_xsum_get_upper(&s, B, N, LD, 0.5);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < LD; j++) {
            const float want = j >= i && j < N ? A[i * LD + j] : -1.0f;
            cr_assert_eq(B[i * LD + j], want, "(%d, %d): %g, want %g", i, j, B[i * LD + j], want);
        }
    llmq_xsum_free(&s);
}

/* The Hessian of 6 units of windows: in one piece, or as two "ranks" (units
 * 0-1 and 2-5) whose sums are merged: the same bits, for fp32 and bf16 inputs. */
Test(xsum, a_hessian_split_among_ranks_is_the_same_bits)
{
    enum { COLS = 96, UNIT = 40, UNITS = 6 };
    static float X[UNITS * UNIT * COLS], H1[COLS * COLS], H2[COLS * COLS], P1[COLS * COLS], P2[COLS * COLS];
    for (int i = 0; i < UNITS * UNIT * COLS; i++) X[i] = (float)(wide_value() * 1e-3 + (i % COLS == 5 ? 40.0 : 0.0));
    for (int bf16 = 0; bf16 <= (int)llmq_bf16_available(); bf16++) {
        llmq_hsum whole, a, b;
        cr_assert_eq(llmq_hsum_begin(&whole, COLS, P1, bf16), LLMQ_OK);
        for (int u = 0; u < UNITS; u++) {
            /* a unit's windows arrive in two pieces, as the forward hands them over */
            cr_assert_eq(llmq_hsum_add(&whole, X + (size_t)u * UNIT * COLS, UNIT / 2), LLMQ_OK);
            cr_assert_eq(llmq_hsum_add(&whole, X + ((size_t)u * UNIT + UNIT / 2) * COLS, UNIT / 2), LLMQ_OK);
            cr_assert_eq(llmq_hsum_unit_end(&whole), LLMQ_OK);
        }
        cr_assert_eq(llmq_hsum_finish(&whole, H1, 2.0 / (UNITS * UNIT)), LLMQ_OK);
        cr_assert_eq(llmq_hsum_begin(&a, COLS, P1, bf16), LLMQ_OK);
        cr_assert_eq(llmq_hsum_begin(&b, COLS, P2, bf16), LLMQ_OK);
        for (int u = 0; u < UNITS; u++) {
            llmq_hsum *h = u < 2 ? &a : &b;
            cr_assert_eq(llmq_hsum_add(h, X + (size_t)u * UNIT * COLS, UNIT / 2), LLMQ_OK);
            cr_assert_eq(llmq_hsum_add(h, X + ((size_t)u * UNIT + UNIT / 2) * COLS, UNIT / 2), LLMQ_OK);
            cr_assert_eq(llmq_hsum_unit_end(h), LLMQ_OK);
        }
        cr_assert_eq(llmq_xsum_merge(&b.sum, &a.sum), LLMQ_OK); /* what the all-reduce does */
        llmq_hsum_free(&a);
        cr_assert_eq(llmq_hsum_finish(&b, H2, 2.0 / (UNITS * UNIT)), LLMQ_OK);
        for (int i = 0; i < COLS; i++)
            for (int j = i; j < COLS; j++) {
                cr_assert_eq(H1[i * COLS + j], H2[i * COLS + j], "bf16 %d (%d, %d)", bf16, i, j);
                if (bf16) continue;
                double ref = 0;
                for (int t = 0; t < UNITS * UNIT; t++) ref += (double)X[t * COLS + i] * X[t * COLS + j];
                ref *= 2.0 / (UNITS * UNIT);
                cr_assert(fabs(H1[i * COLS + j] - ref) <= 1e-5 * sqrt((double)H1[i * COLS + i] * H1[j * COLS + j]) + 1e-30,
                          "(%d, %d): %g vs %g", i, j, H1[i * COLS + j], ref);
            }
    }
}

/* One process: the whole run is rank 0's; units of about 2048 tokens. */
Test(xsum, one_process_holds_every_window)
{
    int first, count;
    cr_assert_eq(llmq_dist_size(), 1);
    llmq_dist_windows(10, 512, &first, &count);
    cr_assert_eq(first, 0);
    cr_assert_eq(count, 10);
    cr_assert_eq(llmq_dist_unit_windows(512), 4);
    cr_assert_eq(llmq_dist_unit_windows(4096), 1);
    /* three ranks: units of 4, 4 and 2 windows */
    int f[3], c[3];
    for (int r = 0; r < 3; r++) llmq_dist_windows_of(r, 3, 10, 512, &f[r], &c[r]);
    cr_assert(f[0] == 0 && c[0] == 4 && f[1] == 4 && c[1] == 4 && f[2] == 8 && c[2] == 2, "%d+%d %d+%d %d+%d", f[0], c[0], f[1], c[1], f[2], c[2]);
    /* two ranks over 3 units: one and two */
    llmq_dist_windows_of(1, 2, 10, 512, &f[0], &c[0]);
    cr_assert(f[0] == 4 && c[0] == 6);
}

/* The AVX-512 row kernel puts the same integers in the slots as the portable
 * one, on edge values too: zeros of both signs, subnormals, values just
 * under the grid, near 2⁶⁴·2⁻⁶⁰ and near the 2⁶⁶ limit, and a bad value's
 * slot left alone. */
Test(xsum, every_row_kernel_gives_the_same_integers)
{
    if (llmq_kernel_select("avx512") != LLMQ_OK) cr_skip_test("no AVX-512 on this CPU");
    enum { N = 1003 };
    static float x[N];
    const float edges[] = {0.0f, -0.0f, 1e-45f, -1e-45f, 0x1p-61f, -0x1p-61f, 0x1p-60f, 1.0f, -1.0f, 8.0f, -8.0f, 16.0f, 0x1p4f * 1.5f,
                           -0x1.fffffep3f, 0x1.fffffep65f, -0x1.fffffep65f, 123456.789f, -3.0e19f};
    const int n_edges = (int)(sizeof edges / sizeof *edges);
    for (int i = 0; i < N; i++) x[i] = i < n_edges ? edges[i] : (float)wide_value();
    llmq_xsum a, b;
    cr_assert_eq(llmq_xsum_init(&a, N), LLMQ_OK);
    cr_assert_eq(llmq_xsum_init(&b, N), LLMQ_OK);
    cr_assert_eq(llmq_kernel_select("scalar"), LLMQ_OK);
    for (int r = 0; r < 3; r++) cr_assert_eq(llmq_xsum_add_f32(&a, 0, x, N, "scalar"), LLMQ_OK);
    cr_assert_eq(llmq_kernel_select("avx512"), LLMQ_OK);
    for (int r = 0; r < 3; r++) cr_assert_eq(llmq_xsum_add_f32(&b, 0, x, N, "avx512"), LLMQ_OK);
    cr_assert(!memcmp(a.slots, b.slots, N * 16), "the kernels' slots differ");
    /* a NaN among them: refused by both, naming the caller's field; the other slots as the portable path has them */
    x[500] = NAN;
    cr_assert_eq(llmq_xsum_add_f32(&b, 0, x, N, "the row kernel's test"), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "the row kernel's test"), "%s", llmq_last_error());
    cr_assert_eq(llmq_kernel_select("scalar"), LLMQ_OK);
    cr_assert_eq(llmq_xsum_add_f32(&a, 0, x, N, "scalar"), LLMQ_ERR);
    cr_assert(!memcmp(a.slots, b.slots, N * 16), "the kernels' slots differ after a bad value");
    cr_assert_eq(llmq_kernel_select(NULL), LLMQ_OK);
    llmq_xsum_free(&a), llmq_xsum_free(&b);
}
