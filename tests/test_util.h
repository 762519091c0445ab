/* Helpers shared by the Criterion tests. */
#ifndef LLMQ_TEST_UTIL_H
#define LLMQ_TEST_UTIL_H

#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/model.h"
#include "llmq/synth.h"
#include "llmq/tokenizer.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
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
/* The project's demo checkpoint written as architecture arch (NULL: llama; see
 * llmq synth --arch) with n_layers layers and the given calibration and
 * evaluation text sizes, into a fresh test directory (dir). */
static inline void test_synth_write(char *dir, size_t cap, const char *tag, const char *arch, int n_layers, size_t calib_bytes,
                                    size_t eval_bytes)
{
    test_tmpdir(dir, cap, tag);
    llmq_synth_opts so;
    llmq_synth_defaults(&so);
    so.arch = arch;
    so.n_layers = n_layers;
    so.calib_bytes = calib_bytes;
    so.eval_bytes = eval_bytes;
    cr_assert_eq(llmq_synth_write(dir, &so), LLMQ_OK, "%s", llmq_last_error());
}

/* The same, loaded (tok may be NULL: no tokenizer wanted). */
static inline void test_synth_arch_model(char *dir, size_t cap, const char *tag, const char *arch, int n_layers, size_t calib_bytes,
                                         size_t eval_bytes, llmq_model **model, llmq_tokenizer **tok)
{
    test_synth_write(dir, cap, tag, arch, n_layers, calib_bytes, eval_bytes);
    *model = llmq_model_load(dir);
    cr_assert_not_null(*model, "%s", llmq_last_error());
    if (!tok) return;
    *tok = llmq_tokenizer_load(dir);
    cr_assert_not_null(*tok, "%s", llmq_last_error());
}

static inline void test_synth_model(char *dir, size_t cap, const char *tag, int n_layers, size_t calib_bytes, size_t eval_bytes,
                                    llmq_model **model, llmq_tokenizer **tok)
{
    test_synth_arch_model(dir, cap, tag, NULL, n_layers, calib_bytes, eval_bytes, model, tok);
}

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

/* The first 120 bytes of s[0..n) for a log line, control bytes as \xNN. */
static inline void test_escape(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < cap && i < 120; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        else out[o++] = (char)c;
    }
    if (n > 120 && o + 4 < cap) o += (size_t)snprintf(out + o, cap - o, "...");
    out[o] = 0;
}

/* llama.cpp's tokenizer test vectors (its tests/test-tokenizer-0.cpp):
 * <shared>/tokenizers/llamacpp-vocab-tests/ggml-vocab-<vocab>.gguf.inp holds
 * strings separated by "\n__ggml_vocab_test__\n" (the file may end with one),
 * the .out file one line of space-separated ids per string. Encodes each
 * string with tok (add_special = false), logs each one whose ids differ, and
 * expects more than 30 strings, none differing. */
static inline void test_llamacpp_vocab_strings(const llmq_tokenizer *tok, const char *vocab)
{
    char base[512], inp[700], outp[700];
    REQUIRE_SHARED(base, "tokenizers/llamacpp-vocab-tests");
    snprintf(inp, sizeof inp, "%s/ggml-vocab-%s.gguf.inp", base, vocab);
    snprintf(outp, sizeof outp, "%s/ggml-vocab-%s.gguf.out", base, vocab);
    size_t in_len, out_len;
    char *in = llmq_read_file(inp, 0, &in_len), *out = llmq_read_file(outp, 0, &out_len);
    cr_assert(in && out, "%s", llmq_last_error());
    static const char SEP[] = "\n__ggml_vocab_test__\n";
    const char *p = in, *end = in + in_len;
    char *line = out, *save = NULL;
    size_t count = 0, bad = 0;
    for (;;) {
        const char *q = memmem(p, (size_t)(end - p), SEP, sizeof SEP - 1);
        size_t n = q ? (size_t)(q - p) : (size_t)(end - p);
        char *nl = strchr(line, '\n');
        cr_assert(nl, "%s: fewer .out lines than strings", vocab);
        *nl = 0;
        int32_t *ids;
        size_t nid;
        cr_assert_eq(llmq_tokenizer_encode(tok, p, n, 0, &ids, &nid), LLMQ_OK, "%s", llmq_last_error());
        size_t k = 0;
        int same = 1;
        for (char *t = strtok_r(line, " ", &save); t; t = strtok_r(NULL, " ", &save), k++)
            if (k >= nid || ids[k] != atoi(t)) same = 0;
        if (!same || k != nid) {
            char esc[512];
            test_escape(p, n, esc, sizeof esc);
            cr_log_error("%s: \"%s\" differs from llama.cpp's expected ids", vocab, esc);
            bad++;
        }
        free(ids);
        count++;
        line = nl + 1;
        if (!q || q + sizeof SEP - 1 == end) break;
        p = q + sizeof SEP - 1;
    }
    cr_expect_gt(count, 30);
    cr_expect_eq(bad, 0, "%s: %zu of %zu strings differ", vocab, bad, count);
    free(in);
    free(out);
}

/* scripts/mock-hub (a local stand-in for the Hugging Face Hub API) as a child
 * process; one at a time. */
static inline pid_t *test_mock_hub_pid(void)
{
    static pid_t pid;
    return &pid;
}

/* Starts the mock with the JSON config at cfg_path, its port written to
 * port_path and its request log to log_path (NULL: none), waits (bounded)
 * until it listens, points HF_ENDPOINT at it and returns the port. The mock
 * exits by itself after 60 s should a test die before test_mock_hub_stop. */
static inline int test_mock_hub_start(const char *cfg_path, const char *port_path, const char *log_path)
{
    unlink(port_path);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork failed");
    if (pid == 0) {
        if (log_path)
            execlp("python3", "python3", "scripts/mock-hub", "--config", cfg_path, "--port-file", port_path, "--log",
                   log_path, "--lifetime", "60", (char *)NULL);
        else
            execlp("python3", "python3", "scripts/mock-hub", "--config", cfg_path, "--port-file", port_path,
                   "--lifetime", "60", (char *)NULL);
        _exit(127);
    }
    *test_mock_hub_pid() = pid;
    int port = 0;
    /* The port file is written after listen(). */
    for (int i = 0; i < 1000 && port <= 0; i++) {
        FILE *fp = fopen(port_path, "r");
        if (fp) {
            if (fscanf(fp, "%d", &port) != 1) port = 0;
            fclose(fp);
        }
        if (port > 0) break;
        int status = 0;
        cr_assert_eq(waitpid(pid, &status, WNOHANG), 0, "mock-hub exited early (status %d)", status);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    cr_assert_gt(port, 0, "mock-hub did not start listening within 10 s");
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", port);
    setenv("HF_ENDPOINT", endpoint, 1);
    return port;
}

static inline void test_mock_hub_stop(void)
{
    pid_t *pid = test_mock_hub_pid();
    if (*pid > 0) {
        kill(*pid, SIGTERM);
        waitpid(*pid, NULL, 0);
        *pid = 0;
    }
}

/* The last line of out that starts a JSON object (a command's --json summary), parsed. */
static inline json_t *last_json_line(const char *out)
{
    const char *line = strrchr(out, '{');
    while (line && line > out && line[-1] != '\n') line--;
    cr_assert_not_null(line, "no JSON in: %s", out);
    json_error_t e;
    json_t *j = json_loads(line, 0, &e);
    cr_assert_not_null(j, "%s: %s", e.text, line);
    return j;
}

#endif
