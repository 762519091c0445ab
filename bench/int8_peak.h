/* Shared by the benches: the integer-dot ceiling of this machine, measured
 * in the same run as the kernels it judges. */
#ifndef LLMQ_BENCH_INT8_PEAK_H
#define LLMQ_BENCH_INT8_PEAK_H

#include "llmq/kernels.h"

#include <omp.h>
#include <stdint.h>

#if defined(__x86_64__)
#include <immintrin.h>
/* Independent vpdpbusd chains on every thread (zmm, 64 byte products each). */
__attribute__((target("avx512f,avx512vnni"))) static int64_t vnni_chains(long n)
{
    __m512i a[12];
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_epi32(i);
    __m512i x = _mm512_set1_epi32(0x01020304), w = _mm512_set1_epi32(0x01010101);
    for (long k = 0; k < n; k++) {
        for (int i = 0; i < 12; i++) a[i] = _mm512_dpbusd_epi32(a[i], x, w);
        __asm__ volatile("" : "+v"(x));
    }
    int64_t s = 0;
    for (int i = 0; i < 12; i++) s += _mm512_reduce_add_epi32(a[i]);
    return s;
}
#endif

/* GOP/s of vpdpbusd on every thread, best of 5; 0 without AVX-512 VNNI. */
static double int8_peak_gops(void)
{
#if defined(__x86_64__)
    if (!__builtin_cpu_supports("avx512vnni")) return 0;
    static volatile int64_t sink;
    const long n = 4000000;
    double best = 0;
    for (int r = 0; r < 5; r++) {
        int64_t total = 0;
        double t0 = omp_get_wtime();
        #pragma omp parallel reduction(+ : total)
        total += vnni_chains(n);
        double dt = omp_get_wtime() - t0;
        sink += total;
        double g = (double)llmq_get_threads() * n * 12 * 128 / dt * 1e-9;
        if (g > best) best = g;
    }
    return best;
#else
    return 0;
#endif
}


#endif
