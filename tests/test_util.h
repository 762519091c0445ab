/* Helpers shared by the Criterion tests. */
#ifndef LLMQ_TEST_UTIL_H
#define LLMQ_TEST_UTIL_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Root of the shared assets: $LLMQ_SHARED, else ../shared (tests run from the
 * repository root). */
static inline const char *test_shared_root(void)
{
    const char *env = getenv("LLMQ_SHARED");
    return env && *env ? env : "../shared";
}

/* Fills buf with <shared>/<rel>. When it is absent the test is skipped with a
 * visible message, except under CI=true, where that is a failure. */
#define REQUIRE_SHARED(buf, rel)                                                        \
    do {                                                                                \
        snprintf((buf), sizeof(buf), "%s/%s", test_shared_root(), (rel));               \
        struct stat st_;                                                                \
        if (stat((buf), &st_) != 0) {                                                   \
            const char *ci_ = getenv("CI");                                             \
            if (ci_ && strcmp(ci_, "true") == 0)                                        \
                cr_assert_fail("shared asset %s is missing (CI=true requires ../shared)", (buf)); \
            cr_skip_test("shared asset %s is absent: skipped", (buf));                  \
        }                                                                               \
    } while (0)

/* A fresh scratch directory under build/tmp for one test. */
static inline void test_tmpdir(char *buf, size_t n, const char *tag)
{
    mkdir("build", 0755);
    mkdir("build/tmp", 0755);
    snprintf(buf, n, "build/tmp/%s-%d", tag, (int)getpid());
    char cmd[2 * 1024 + 64];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", buf, buf);
    if (system(cmd) != 0) cr_assert_fail("cannot make %s", buf);
}

/* The llmq binary of the same build directory as this test binary
 * (.../build/tests/test_x -> .../build/llmq), so `make sanitize` tests its own build. */
static inline void test_llmq_binary(char *buf, size_t n)
{
    char self[512];
    ssize_t l = readlink("/proc/self/exe", self, sizeof self - 1);
    if (l <= 0) cr_assert_fail("cannot read /proc/self/exe");
    self[l] = 0;
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(self, '/');
        if (slash) *slash = 0;
    }
    snprintf(buf, n, "%s/llmq", self);
    if (access(buf, X_OK) != 0) {
        const char *ci_ = getenv("CI");
        if (ci_ && strcmp(ci_, "true") == 0) cr_assert_fail("%s is not built", buf);
        cr_skip_test("%s is not built: skipped", buf);
    }
}

#endif
