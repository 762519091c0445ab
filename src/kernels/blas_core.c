/* OpenBLAS's kernel family, chosen from what the CPU can do.
 *
 * Debian 12's OpenBLAS (0.3.21, DYNAMIC_ARCH) picks its kernels by CPU model
 * number, and falls back to its SSE3 "Prescott" kernels on a model it does not
 * know: on a 5th-generation Xeon (family 6 model 207) sgemm then runs at 24
 * GFLOP/s a core instead of 111 (SkylakeX kernels), and `llmq ppl` at a
 * quarter of its speed. Once, before the first BLAS call, llmq compares the
 * family OpenBLAS chose with the instruction sets the CPU reports and, when
 * OpenBLAS chose below them, asks it to initialise again with the family those
 * instruction sets run (OpenBLAS's own OPENBLAS_CORETYPE mechanism, through its
 * exported gotoblas_dynamic_quit/init). A user's OPENBLAS_CORETYPE is never
 * overridden, and a BLAS without that mechanism is left as it is. */
#include "llmq/kernels.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_CORE_NAME 32
static char detected[MAX_CORE_NAME]; /* OpenBLAS's own choice, "" when none was made by it */

/* Instruction-set level of an OpenBLAS x86-64 kernel family: 0 SSE-class,
 * 1 AVX, 2 AVX2+FMA, 3 AVX-512 (F/BW/VL/DQ), 4 AVX-512 with BF16. */
static int family_level(const char *name)
{
    static const struct {
        const char *name;
        int level;
    } families[] = {
        {"Sandybridge", 1}, {"Bulldozer", 1}, {"Piledriver", 1}, {"Haswell", 2}, {"Zen", 2},        {"Steamroller", 2},
        {"Excavator", 2},   {"SkylakeX", 3},  {"Cooperlake", 4}, {"SapphireRapids", 4},
    };
    for (size_t i = 0; i < sizeof families / sizeof *families; i++)
        if (!strcasecmp(name, families[i].name)) return families[i].level;
    return 0;
}

#if defined(__x86_64__) && defined(__GNUC__)
static int cpu_level(void)
{
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    if (avx512 && __builtin_cpu_supports("avx512bf16")) return 4;
    if (avx512) return 3;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 2;
    if (__builtin_cpu_supports("avx")) return 1;
    return 0;
}
#else
static int cpu_level(void) { return 0; }
#endif

static const char *family_for_level(int level)
{
    static const char *const names[] = {NULL, "Sandybridge", "Haswell", "SkylakeX", "Cooperlake"};
    return level > 0 && level <= 4 ? names[level] : NULL;
}

/* Runs before main (after OpenBLAS's own constructor, which made the first
 * choice), while no BLAS call can be in flight. */
__attribute__((constructor)) static void choose_blas_core(void)
{
    char *(*corename)(void) = (char *(*)(void))dlsym(RTLD_DEFAULT, "openblas_get_corename");
    void (*quit)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit");
    void (*init)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init");
    const char *user = getenv("OPENBLAS_CORETYPE");
    if (!corename || !quit || !init || (user && *user)) return;
    const char *chose = corename();
    if (!chose) return;
    const char *want = family_for_level(cpu_level());
    if (!want || family_level(chose) >= family_level(want)) return;
    strncpy(detected, chose, sizeof detected - 1);
    /* OpenBLAS reads OPENBLAS_CORETYPE in gotoblas_dynamic_init; the variable
     * is removed again so that no child process inherits it. */
    setenv("OPENBLAS_CORETYPE", want, 1);
    quit();
    init();
    unsetenv("OPENBLAS_CORETYPE");
    const char *now = corename();
    if (!now || strcasecmp(now, want) != 0) detected[0] = '\0';
}

const char *llmq_blas_core(void)
{
    char *(*corename)(void) = (char *(*)(void))dlsym(RTLD_DEFAULT, "openblas_get_corename");
    return corename ? corename() : "unknown";
}

const char *llmq_blas_core_detected(void) { return detected[0] ? detected : NULL; }
