/* How long an idle OpenMP thread spins before it sleeps.
 *
 * libgomp, with neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT set, spins 300,000
 * times on PAUSE before sleeping on a futex. A PAUSE takes about 140 cycles on
 * Intel cores since Skylake (Intel's optimization manual, "Pause Latency in
 * Skylake Microarchitecture"), so a thread waiting at a barrier keeps its core
 * for some 15 ms. When anything else wants that core (another process, a
 * second llmq) the thread that still has work waits a scheduler slice at every
 * barrier: `llmq ppl` at 2 threads on a loaded 2-core machine ran at 150-280
 * tok/s against 1,500-5,500 with a spin of 10,000 (about half a millisecond:
 * longer than a forward's barriers wait on a quiet machine, so the quiet speed
 * is kept).
 *
 * libgomp reads its settings in its own constructor, before any code of the
 * program runs (an executable's .preinit_array too), so a program changes the
 * default only by starting itself again with the variable set: once, at the
 * top of main, and only when the user set neither variable. The variable is
 * removed from the environment of the second start, so whatever llmq runs
 * inherits the user's environment. */
#include "llmq/kernels.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LLMQ_SPINCOUNT "10000"
#define MARK "LLMQ_SET_GOMP_SPINCOUNT" /* set beside it: the variable is llmq's, not the user's */

/* /proc/self/exe is this program, and nothing watches it from inside: not
 * when the program was started through the dynamic loader
 * (`ld-linux-x86-64.so.2 ./llmq ...`: the image is the loader, which would
 * take the subcommand for the program), nor under valgrind (whose tools would
 * not follow the second start by default). */
static bool restart_is_safe(void)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return false;
    exe[n] = '\0';
    const char *base = strrchr(exe, '/');
    base = base ? base + 1 : exe;
    if (!strncmp(base, "ld-", 3) || !strncmp(base, "ld.so", 5)) return false;
    const char *preload = getenv("LD_PRELOAD");
    if (preload && (strstr(preload, "vgpreload") || strstr(preload, "valgrind"))) return false;
    return true;
}

void llmq_omp_default_wait(char **argv)
{
    if (getenv(MARK)) {
        /* the second start: libgomp has read it */
        unsetenv("GOMP_SPINCOUNT");
        unsetenv(MARK);
        return;
    }
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT") || !argv || !argv[0] || !restart_is_safe()) return;
    if (setenv("GOMP_SPINCOUNT", LLMQ_SPINCOUNT, 1) || setenv(MARK, "1", 1)) return;
    execv("/proc/self/exe", argv);
    /* no /proc: carry on with libgomp's default */
    unsetenv("GOMP_SPINCOUNT");
    unsetenv(MARK);
}
