/* Kernels: every SIMD table against the scalar reference (decoders bit-exact,
 * dots to 1e-5 of the terms' magnitude), and llmq_matmul end to end (GEMV and
 * panel paths, 1/7/9/40 tokens, odd row counts) against a double-precision
 * product of the reference-decoded weights. */
#include "kernel_check.h"
#include "llmq/error.h"
#include "llmq/kernels.h"
#include "test_util.h"

Test(kernels, simd_tables_match_scalar)
{
    int passed = 0, failed = 0;
    if (llmq_isa_available(LLMQ_ISA_AVX2)) kc_check_table(llmq_ops_avx2, "avx2", &passed, &failed);
    if (llmq_isa_available(LLMQ_ISA_AVX512)) {
        int before = passed;
        kc_check_table_of(llmq_ops_avx512, "avx512", 1, &passed, &failed);
        cr_assert_geq(passed - before, 3 * KC_MODES * 2, "the AVX-512 integer dots were not all checked");
    } else {
        cr_log_info("AVX-512 VNNI not available: its kernels are not checked on this CPU");
    }
    if (llmq_isa_available(LLMQ_ISA_NEON)) kc_check_table(llmq_ops_neon, "neon", &passed, &failed);
    if (!llmq_isa_available(LLMQ_ISA_AVX2) && !llmq_isa_available(LLMQ_ISA_NEON)) cr_skip_test("no SIMD kernels on this CPU");
    cr_log_info("SIMD vs scalar: %d passed, %d failed", passed, failed);
    cr_assert_eq(failed, 0, "%d kernel checks failed (see stdout)", failed);
    cr_assert_gt(passed, 100);
}

/* A test that the checker itself can fail: a dot that is off by 1e-4. */
static void bad_dot(const void *row, const float *x, size_t xs, int nt, int n, float *y, size_t ys)
{
    llmq_ops_scalar(LLMQ_TYPE_Q8_0)->dot(row, x, xs, nt, n, y, ys);
    for (int t = 0; t < nt; t++) y[t * ys] = y[t * ys] * 1.0001f + 1e-3f;
}
static void bad_dequant(const void *row, float *dst, int n)
{
    llmq_ops_scalar(LLMQ_TYPE_Q8_0)->dequant(row, dst, n);
    dst[n - 1] = nextafterf(dst[n - 1], INFINITY);
}
static void bad_dot_q8(const void *row, const llmq_act_q8 *x, size_t xs, int nt, int n, float *y, size_t ys)
{
    llmq_ops_scalar(LLMQ_TYPE_Q8_0)->dot_q8(row, x, xs, nt, n, y, ys);
    for (int t = 0; t < nt; t++) y[t * ys] = y[t * ys] * 1.0001f + 1e-3f;
}
static const llmq_kernel_ops bad_ops = {bad_dequant, bad_dot, bad_dot_q8};
static const llmq_kernel_ops *bad_table(llmq_type t) { return t == LLMQ_TYPE_Q8_0 ? &bad_ops : llmq_ops_scalar(t); }

Test(kernels, checker_catches_a_wrong_kernel)
{
    int passed = 0, failed = 0;
    kc_verbose = 0;
    kc_check_table(bad_table, "bad", &passed, &failed);
    cr_assert_geq(failed, 4, "the checker missed a wrong kernel (%d failures)", failed);
    void *w = kc_weights(LLMQ_TYPE_Q8_0, 3, 256, KC_RANDOM);
    cr_assert_gt(kc_check_dot_q8(&bad_ops, llmq_ops_scalar(LLMQ_TYPE_Q8_0), LLMQ_TYPE_Q8_0, w, 3, 256, "bad"), 0,
                 "the checker missed a wrong integer dot");
    free(w);
    kc_verbose = 1;
}

/* y = x·Wᵀ in double from the reference decoder. */
static void reference_matmul(double *y, const float *x, int nt, const void *w, llmq_type t, int in, int out, double *mag)
{
    float *row = malloc(sizeof *row * in);
    size_t row_bytes = llmq_row_size(t, in);
    for (int o = 0; o < out; o++) {
        llmq_type_get(t)->to_float((const char *)w + o * row_bytes, row, in);
        for (int k = 0; k < nt; k++) {
            double s = 0, m = 0;
            for (int i = 0; i < in; i++) {
                s += (double)row[i] * x[k * in + i];
                m += fabs((double)row[i] * x[k * in + i]);
            }
            y[k * out + o] = s;
            mag[k * out + o] = m;
        }
    }
    free(row);
}

static void check_matmul(const char *kernel, llmq_type t, int nt, int in, int out, kc_mode mode)
{
    cr_assert_eq(llmq_kernel_select(kernel), LLMQ_OK, "%s", llmq_last_error());
    void *w = kc_weights(t, out, in, mode);
    cr_assert_not_null(w);
    float *x = malloc(sizeof *x * nt * in), *y = malloc(sizeof *y * nt * out);
    double *ref = malloc(sizeof *ref * nt * out), *mag = malloc(sizeof *mag * nt * out);
    for (int i = 0; i < nt * in; i++) x[i] = kc_gauss();
    reference_matmul(ref, x, nt, w, t, in, out, mag);
    cr_assert_eq(llmq_matmul(y, x, nt, w, t, in, out), LLMQ_OK, "%s", llmq_last_error());
    /* The panel path runs through sgemm, whose summation order is its own:
     * hold it to the same relative bound against the exact product. */
    for (int i = 0; i < nt * out; i++)
        cr_assert(fabs(y[i] - ref[i]) <= KC_REL * mag[i] + 1e-30, "%s %s %s nt=%d in=%d out=%d y[%d]=%.9g ref %.9g",
                  kernel, llmq_type_get(t)->name, kc_mode_names[mode], nt, in, out, i, y[i], ref[i]);
    free(w); free(x); free(y); free(ref); free(mag);
}

Test(kernels, matmul_every_path_matches_the_exact_product)
{
    static const int tokens[] = {1, 7, 9, 40};
    static const int outs[] = {1, 7, 33};
    const char *kernels[2] = {"scalar", llmq_isa_available(LLMQ_ISA_AVX2) ? "avx2" : llmq_isa_available(LLMQ_ISA_NEON) ? "neon" : "scalar"};
    for (int kk = 0; kk < 2; kk++)
        for (int k = 0; k < KC_N_TYPES; k++)
            for (size_t a = 0; a < sizeof tokens / sizeof tokens[0]; a++)
                for (size_t b = 0; b < sizeof outs / sizeof outs[0]; b++) {
                    llmq_type t = kc_types[k];
                    int in = llmq_type_get(t)->block_size == 256 ? 512 : 160;
                    check_matmul(kernels[kk], t, tokens[a], in, outs[b], (kc_mode)((a + b) % KC_MODES));
                }
    llmq_kernel_select(NULL);
}

Test(kernels, selection_and_errors)
{
    cr_assert_eq(llmq_kernel_select("bogus"), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "bogus"), "%s", llmq_last_error());
#if defined(__x86_64__)
    cr_assert_eq(llmq_kernel_select("neon"), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "not available"), "%s", llmq_last_error());
#endif
    cr_assert_eq(llmq_kernel_select("scalar"), LLMQ_OK);
    cr_assert_str_eq(llmq_kernel_name(), "scalar");
    cr_assert_eq(llmq_kernel_select(NULL), LLMQ_OK);
    cr_assert_str_neq(llmq_kernel_name(), "invalid");
    float x[32] = {0}, y[4];
    unsigned char w[34 * 4] = {0};
    cr_assert_eq(llmq_matmul(y, x, 1, w, LLMQ_TYPE_Q4_K, 32, 1), LLMQ_ERR); /* 32 is not a multiple of 256 */
    cr_assert(strstr(llmq_last_error(), "q4_k"), "%s", llmq_last_error());
    cr_assert_eq(llmq_matmul(y, x, 1, w, (llmq_type)5, 32, 1), LLMQ_ERR); /* ggml id 5 (the removed Q4_2): no kernel */
    cr_assert_eq(llmq_matmul(y, x, 0, w, LLMQ_TYPE_Q8_0, 32, 1), LLMQ_ERR);
    cr_assert_eq(llmq_matmul(y, x, 1, w, LLMQ_TYPE_Q8_0, 32, 4), LLMQ_OK);
    for (int i = 0; i < 4; i++) cr_assert_eq(y[i], 0.0f);
}

Test(kernels, dequant_rows_is_the_reference_decoder)
{
    void *w = kc_weights(LLMQ_TYPE_Q4_K, 5, 512, KC_RANDOM_BYTES);
    float got[3 * 512], want[512];
    cr_assert_eq(llmq_dequant_rows(got, w, LLMQ_TYPE_Q4_K, 512, 2, 5), LLMQ_OK);
    for (int r = 2; r < 5; r++) {
        llmq_dequant_q4_k((const char *)w + r * llmq_row_size(LLMQ_TYPE_Q4_K, 512), want, 512);
        cr_assert_arr_eq(got + (r - 2) * 512, want, sizeof want);
    }
    free(w);
}

/* The --fast path: llmq_matmul with int8 activations equals the exact product
 * of the weights with the quantized activations x̂ (to KC_REL), and x̂ is
 * within half a step of x in every block. */
static void check_fast_matmul(const char *kernel, llmq_type t, int nt, int in, int out, kc_mode mode)
{
    cr_assert_eq(llmq_kernel_select(kernel), LLMQ_OK, "%s", llmq_last_error());
    void *w = kc_weights(t, out, in, mode);
    cr_assert_not_null(w);
    const int nb = (int)llmq_act_q8_stride(in);
    float *x = malloc(sizeof *x * nt * in), *xhat = malloc(sizeof *xhat * nt * in), *y = malloc(sizeof *y * nt * out);
    llmq_act_q8 *xq = malloc(sizeof *xq * nt * nb);
    double *ref = malloc(sizeof *ref * nt * out), *mag = malloc(sizeof *mag * nt * out);
    for (int i = 0; i < nt * in; i++) x[i] = kc_gauss() * (i % 97 == 0 ? 20.0f : 1.0f);
    for (int k = 0; k < nt; k++) llmq_act_quantize_q8(x + k * in, in, xq + k * nb);
    for (int k = 0; k < nt; k++) /* the side arrays repeat the blocks' d and s */
        for (int b = 0; b < in / 32; b++)
            cr_assert(llmq_act_q8_d(xq + k * nb, in)[b] == xq[k * nb + b].d && llmq_act_q8_s(xq + k * nb, in)[b] == xq[k * nb + b].s);
    for (int k = 0; k < nt; k++)
        for (int i = 0; i < in; i++) {
            const llmq_act_q8 *b = &xq[k * nb + i / 32];
            xhat[k * in + i] = b->d * b->q[i % 32];
            cr_assert(fabsf(xhat[k * in + i] - x[k * in + i]) <= 0.5f * b->d * 1.0001f, "x̂ off by more than half a step");
        }
    reference_matmul(ref, xhat, nt, w, t, in, out, mag);
    llmq_set_fast(true);
    int rc = llmq_matmul(y, x, nt, w, t, in, out);
    llmq_set_fast(false);
    cr_assert_eq(rc, LLMQ_OK, "%s", llmq_last_error());
    for (int i = 0; i < nt * out; i++)
        cr_assert(fabs(y[i] - ref[i]) <= KC_REL * mag[i] + 1e-30, "fast %s %s %s nt=%d y[%d]=%.9g, exact product with x̂ %.9g", kernel,
                  llmq_type_get(t)->name, kc_mode_names[mode], nt, i, y[i], ref[i]);
    free(w); free(x); free(xhat); free(y); free(xq); free(ref); free(mag);
}

Test(kernels, fast_matmul_is_the_exact_product_with_int8_activations)
{
    static const llmq_type types[] = {LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_1, LLMQ_TYPE_Q8_0, LLMQ_TYPE_Q4_K, LLMQ_TYPE_Q6_K,
                                      LLMQ_TYPE_Q3_K, LLMQ_TYPE_Q5_0, LLMQ_TYPE_Q5_1, LLMQ_TYPE_Q5_K, LLMQ_TYPE_Q2_K,
                                      LLMQ_TYPE_IQ4_NL, LLMQ_TYPE_IQ4_XS};
    static const int tokens[] = {1, 4, 7, 9, 40};
    const char *kernels[3] = {"scalar", llmq_isa_available(LLMQ_ISA_AVX2) ? "avx2" : llmq_isa_available(LLMQ_ISA_NEON) ? "neon" : "scalar",
                              llmq_isa_available(LLMQ_ISA_AVX512) ? "avx512" : "scalar"};
    for (int kk = 0; kk < 3; kk++)
        for (size_t k = 0; k < sizeof types / sizeof types[0]; k++)
            for (size_t a = 0; a < sizeof tokens / sizeof tokens[0]; a++) {
                int in = llmq_type_get(types[k])->block_size == 256 ? 512 : 160;
                check_fast_matmul(kernels[kk], types[k], tokens[a], in, 33, (kc_mode)(a % KC_MODES));
            }
    llmq_kernel_select(NULL);
}

Test(kernels, fast_mode_changes_quantized_products_only)
{
    const int in = 256, out = 17;
    void *w = kc_weights(LLMQ_TYPE_Q4_K, out, in, KC_RANDOM);
    float *wf = malloc(sizeof(float) * in * out);
    for (int o = 0; o < out; o++) llmq_dequant_q4_k((const char *)w + o * llmq_row_size(LLMQ_TYPE_Q4_K, in), wf + o * in, in);
    float x[9 * 256], exact[9 * 17], fast[9 * 17];
    for (int i = 0; i < 9 * in; i++) x[i] = kc_gauss();
    cr_assert_eq(llmq_matmul(exact, x, 9, w, LLMQ_TYPE_Q4_K, in, out), LLMQ_OK);
    llmq_set_fast(true);
    cr_assert(llmq_get_fast());
    cr_assert_eq(llmq_matmul(fast, x, 9, w, LLMQ_TYPE_Q4_K, in, out), LLMQ_OK);
    int differ = 0;
    for (int i = 0; i < 9 * out; i++) differ += fast[i] != exact[i];
    cr_assert_gt(differ, 0, "fast mode gave the exact path's bits for q4_k weights");
    /* float weights have no integer path: the same bits either way (f16 and
     * bf16 go through the kernel tables, f32 straight to sgemm) */
    static const llmq_type plain[] = {LLMQ_TYPE_F32, LLMQ_TYPE_F16, LLMQ_TYPE_BF16};
    for (int k = 0; k < 3; k++) {
        for (int tk = 1; tk <= 9; tk += 8) {
            void *wp = kc_weights(plain[k], out, in, KC_RANDOM);
            float f_fast[9 * 17], f_exact[9 * 17];
            llmq_set_fast(true);
            cr_assert_eq(llmq_matmul(f_fast, x, tk, wp, plain[k], in, out), LLMQ_OK);
            llmq_set_fast(false);
            cr_assert_eq(llmq_matmul(f_exact, x, tk, wp, plain[k], in, out), LLMQ_OK);
            cr_assert_arr_eq(f_fast, f_exact, sizeof(float) * tk * out, "%s, %d tokens", llmq_type_get(plain[k])->name, tk);
            free(wp);
        }
        cr_assert_null(llmq_ops_scalar(plain[k])->dot_q8);
    }
    llmq_set_fast(false);
    free(w);
    free(wf);
}

/* OpenBLAS runs kernels of the CPU's instruction sets (kernels/blas_core.c):
 * never its SSE-class fallback on a CPU with AVX2 or AVX-512, unless the
 * user forced a family with OPENBLAS_CORETYPE. */
Test(kernels, openblas_runs_the_cpus_instruction_sets)
{
    const char *user = getenv("OPENBLAS_CORETYPE");
    if (user && *user) {
        cr_log_info("OPENBLAS_CORETYPE=%s is set: the family is the user's choice; not checked", user);
        cr_assert_null(llmq_blas_core_detected(), "llmq must not override OPENBLAS_CORETYPE");
        return;
    }
    const char *core = llmq_blas_core();
    cr_assert_not_null(core);
#if defined(__x86_64__)
    static const char *const avx512_families[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
    static const char *const avx2_families[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids", "Excavator", "Steamroller"};
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512dq");
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    bool ok = true;
    if (avx512) {
        ok = false;
        for (size_t i = 0; i < sizeof avx512_families / sizeof *avx512_families; i++) ok |= !strcasecmp(core, avx512_families[i]);
    } else if (avx2) {
        ok = false;
        for (size_t i = 0; i < sizeof avx2_families / sizeof *avx2_families; i++) ok |= !strcasecmp(core, avx2_families[i]);
    }
    cr_assert(ok, "OpenBLAS runs its %s kernels on a CPU with %s", core, avx512 ? "AVX-512" : "AVX2");
#endif
    /* and the product is still right (the exact product checks above ran on these kernels) */
    float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8}, c[4];
    cr_assert_eq(llmq_matmul(c, a, 2, b, LLMQ_TYPE_F32, 2, 2), LLMQ_OK);
    cr_assert_float_eq(c[0], 17.0f, 1e-6);
    cr_assert_float_eq(c[3], 53.0f, 1e-6);
}

/* The int8 GEMM (kernels/gemm_q8.c) past GEMV_MAX_TOKENS: every kernel
 * family's micro-kernel gives the scalar reference's bits (exact integer
 * sums, the same float steps), at token counts that leave partial micro-tiles
 * and row counts that leave a partial panel. */
Test(kernels, int8_gemm_families_give_the_same_bits)
{
    static const llmq_type types[] = {LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_1, LLMQ_TYPE_Q8_0, LLMQ_TYPE_Q4_K, LLMQ_TYPE_Q6_K,
                                      LLMQ_TYPE_Q3_K, LLMQ_TYPE_Q5_0, LLMQ_TYPE_Q5_1, LLMQ_TYPE_Q5_K, LLMQ_TYPE_IQ4_NL,
                                      LLMQ_TYPE_IQ4_XS, LLMQ_TYPE_Q2_K};
    static const int tokens[] = {9, 13, 64};
    static const int outs[] = {1, 31, 45};
    const char *families[] = {"avx2", "avx512"};
    const llmq_isa isas[] = {LLMQ_ISA_AVX2, LLMQ_ISA_AVX512};
    int compared = 0;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++)
        for (size_t a = 0; a < sizeof tokens / sizeof tokens[0]; a++) {
            const int in = llmq_type_get(types[k])->block_size == 256 ? 768 : 224, nt = tokens[a], out = outs[(k + a) % 3];
            void *w = kc_weights(types[k], out, in, (kc_mode)((k + a) % KC_MODES));
            float *x = malloc(sizeof *x * nt * in), *ref = malloc(sizeof *ref * nt * out), *got = malloc(sizeof *got * nt * out);
            for (int i = 0; i < nt * in; i++) x[i] = kc_gauss() * (i % 61 == 0 ? 30.0f : 1.0f);
            llmq_set_fast(true);
            cr_assert_eq(llmq_kernel_select("scalar"), LLMQ_OK);
            cr_assert_eq(llmq_matmul(ref, x, nt, w, types[k], in, out), LLMQ_OK, "%s", llmq_last_error());
            for (int f = 0; f < 2; f++) {
                if (!llmq_isa_available(isas[f])) continue;
                cr_assert_eq(llmq_kernel_select(families[f]), LLMQ_OK);
                cr_assert_eq(llmq_matmul(got, x, nt, w, types[k], in, out), LLMQ_OK, "%s", llmq_last_error());
                for (int i = 0; i < nt * out; i++)
                    cr_assert(got[i] == ref[i] || (got[i] != got[i] && ref[i] != ref[i]), "%s %s nt=%d out=%d y[%d]: %.9g, scalar %.9g",
                              families[f], llmq_type_get(types[k])->name, nt, out, i, got[i], ref[i]);
                compared++;
            }
            llmq_set_fast(false);
            free(w); free(x); free(ref); free(got);
        }
    llmq_kernel_select(NULL);
#if defined(__x86_64__)
    if (llmq_isa_available(LLMQ_ISA_AVX2)) cr_assert_gt(compared, 0);
#endif
    if (!compared) cr_log_info("int8 GEMM: no SIMD family on this CPU to compare with the scalar reference");
}

/* The int16 GEMM of the calibration forward (llmq_set_int16): the exact
 * product of W with x̂ = d·q, q = x/d rounded to nearest even per block of 32,
 * d = max|x|/32767 (to KC_REL of Σ|w·x̂|); x̂ within 1e-4 of the block's max;
 * the AVX-512 micro-kernel gives the scalar reference's bits. */
Test(kernels, int16_gemm_is_the_exact_product_with_int16_activations)
{
    static const llmq_type types[] = {LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_1, LLMQ_TYPE_Q8_0, LLMQ_TYPE_Q4_K, LLMQ_TYPE_Q6_K,
                                      LLMQ_TYPE_Q3_K, LLMQ_TYPE_Q5_0, LLMQ_TYPE_Q5_1, LLMQ_TYPE_Q5_K, LLMQ_TYPE_IQ4_NL,
                                      LLMQ_TYPE_IQ4_XS, LLMQ_TYPE_Q2_K};
    static const int tokens[] = {9, 13, 40};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++)
        for (size_t a = 0; a < sizeof tokens / sizeof tokens[0]; a++) {
            const int in = llmq_type_get(types[k])->block_size == 256 ? 512 : 160, nt = tokens[a], out = 33 + (int)a;
            void *w = kc_weights(types[k], out, in, (kc_mode)((k + a) % KC_MODES));
            float *x = malloc(sizeof *x * nt * in), *xhat = malloc(sizeof *xhat * nt * in);
            float *ref = malloc(sizeof *ref * nt * out), *got = malloc(sizeof *got * nt * out);
            double *want = malloc(sizeof *want * nt * out), *mag = malloc(sizeof *mag * nt * out);
            for (int i = 0; i < nt * in; i++) x[i] = kc_gauss() * (i % 53 == 0 ? 40.0f : 1.0f);
            for (int b = 0; b < nt * in / 32; b++) {
                float amax = 0;
                for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[32 * b + i]));
                const float d = amax / 32767.0f;
                for (int i = 0; i < 32; i++) {
                    xhat[32 * b + i] = d > 0 ? d * nearbyintf(x[32 * b + i] * (1.0f / d)) : 0.0f;
                    cr_assert(fabsf(xhat[32 * b + i] - x[32 * b + i]) <= 1e-4f * amax);
                }
            }
            reference_matmul(want, xhat, nt, w, types[k], in, out, mag);
            llmq_set_int16(true);
            cr_assert_eq(llmq_kernel_select("scalar"), LLMQ_OK);
            cr_assert_eq(llmq_matmul(ref, x, nt, w, types[k], in, out), LLMQ_OK, "%s", llmq_last_error());
            for (int i = 0; i < nt * out; i++)
                cr_assert(fabs(ref[i] - want[i]) <= KC_REL * mag[i] + 1e-30, "int16 %s nt=%d y[%d]=%.9g, exact product with x̂ %.9g",
                          llmq_type_get(types[k])->name, nt, i, ref[i], want[i]);
            if (llmq_isa_available(LLMQ_ISA_AVX512)) {
                cr_assert_eq(llmq_kernel_select("avx512"), LLMQ_OK);
                cr_assert_eq(llmq_matmul(got, x, nt, w, types[k], in, out), LLMQ_OK, "%s", llmq_last_error());
                for (int i = 0; i < nt * out; i++)
                    cr_assert(got[i] == ref[i] || (got[i] != got[i] && ref[i] != ref[i]), "avx512 int16 %s nt=%d y[%d]: %.9g, scalar %.9g",
                              llmq_type_get(types[k])->name, nt, i, got[i], ref[i]);
            }
            llmq_set_int16(false);
            free(w); free(x); free(xhat); free(ref); free(got); free(want); free(mag);
        }
    llmq_kernel_select(NULL);
    cr_assert(!llmq_get_int16());
}

/* bf16 of x, round to nearest even, written out by hand: the mantissa cut
 * to 7 bits, a half-way tail going to the even neighbour. */
static double bf16_round(float x)
{
    int e;
    const double m = frexp(x, &e); /* x = m·2^e, 0.5 ≤ |m| < 1: 8 significant bits are m·2^8 */
    return ldexp(nearbyint(m * 256.0), e - 8);
}

/* llmq_syrk_bf16: H ← beta·H + alpha·XᵀX on the upper triangle, from X
 * rounded to bf16; against sums of the rounded values in double, for the
 * scalar reference and the AVX-512 BF16 kernel (fp32 sums: within KC_REL of
 * Σ|x_i·x_j|), at shapes that cut tiles, panels and token pairs; beta = 0
 * ignores what H held, the lower triangle stays as it was, and the kernel's
 * bits do not depend on the thread count. */
Test(kernels, bf16_syrk_sums_the_bf16_rounded_products)
{
    /* rounding: 1 + 2⁻⁸ is half-way between 1 and 1 + 2⁻⁷ (odd) → 1; 1 + 3·2⁻⁸ → 1 + 2⁻⁶ (even) */
    const float halfway[2] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f}, want_sq[2] = {1.0f, (1.0f + 0x1p-6f) * (1.0f + 0x1p-6f)};
    for (int k = 0; k < 2; k++) {
        float h = NAN;
        cr_assert_eq(llmq_syrk_bf16(&h, 1, &halfway[k], 1, 1.0f, 0.0f), LLMQ_OK);
        cr_assert_eq(h, want_sq[k], "bf16(%.9g)² = %.9g, want %.9g", halfway[k], h, want_sq[k]);
        cr_assert_eq(bf16_round(halfway[k]) * bf16_round(halfway[k]), want_sq[k]);
    }
    static const int shapes[][2] = {{1, 1}, {17, 7}, {50, 64}, {100, 33}, {300, 130}};
    const char *families[] = {"scalar", "avx512"};
    int compared = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int n = shapes[s][0], T = shapes[s][1];
        float *X = malloc(sizeof *X * n * T), *H0 = malloc(sizeof *H0 * n * n), *H = malloc(sizeof *H * n * n);
        float *first = malloc(sizeof *first * n * n);
        for (int i = 0; i < n * T; i++) X[i] = kc_gauss() * (i % 37 == 0 ? 30.0f : 1.0f);
        for (int i = 0; i < n * n; i++) H0[i] = kc_gauss();
        for (size_t f = 0; f < 2; f++) {
            if (llmq_kernel_select(families[f]) != LLMQ_OK) continue;
            cr_assert_eq(llmq_bf16_available(), f == 1 && llmq_bf16_available(), "%s", families[f]);
            if (f == 1 && !llmq_bf16_available()) continue;
            for (int pass = 0; pass < 2; pass++) { /* beta 0 over NaN, then beta 0.75 over H0 */
                const float alpha = 0.5f, beta = pass ? 0.75f : 0.0f;
                for (int i = 0; i < n * n; i++) H[i] = pass ? H0[i] : NAN;
                cr_assert_eq(llmq_syrk_bf16(H, n, X, T, alpha, beta), LLMQ_OK, "%s", llmq_last_error());
                for (int i = 0; i < n; i++)
                    for (int j = 0; j < n; j++) {
                        const float got = H[(size_t)i * n + j];
                        if (j < i) {
                            cr_assert(pass ? got == H0[(size_t)i * n + j] : got != got, "%s n=%d: lower H[%d][%d] changed", families[f], n, i, j);
                            continue;
                        }
                        double sum = 0, mag = 0;
                        for (int t = 0; t < T; t++) {
                            const double p = bf16_round(X[(size_t)t * n + i]) * bf16_round(X[(size_t)t * n + j]);
                            sum += p;
                            mag += fabs(p);
                        }
                        const double want = (pass ? beta * (double)H0[(size_t)i * n + j] : 0.0) + alpha * sum;
                        const double tol = KC_REL * (alpha * mag + (pass ? fabs(beta * H0[(size_t)i * n + j]) : 0.0)) + 1e-30;
                        cr_assert(fabs(got - want) <= tol, "%s n=%d T=%d beta=%g: H[%d][%d] = %.9g, want %.9g", families[f], n, T, beta, i, j,
                                  got, want);
                    }
            }
            if (f == 1) { /* the same bits with one thread and with two */
                memcpy(first, H, sizeof *H * n * n);
                llmq_set_threads(1);
                for (int i = 0; i < n * n; i++) H[i] = H0[i];
                cr_assert_eq(llmq_syrk_bf16(H, n, X, T, 0.5f, 0.75f), LLMQ_OK);
                llmq_set_threads(0);
                cr_assert_arr_eq(H, first, sizeof *H * n * n, "n=%d: one thread gave other bits", n);
                compared++;
            }
        }
        free(X); free(H0); free(H); free(first);
    }
    llmq_kernel_select(NULL);
    cr_assert_eq(llmq_syrk_bf16(NULL, 4, NULL, 2, 1.0f, 0.0f), LLMQ_ERR);
    float h;
    cr_assert_eq(llmq_syrk_bf16(&h, 0, &h, 1, 1.0f, 0.0f), LLMQ_ERR);
    if (!compared) cr_log_info("bf16 SYRK: this CPU has no AVX-512 BF16; only the portable reference was checked");
}
