/* The command line, end to end (runs build/llmq). */
#include "test_util.h"
#include "llmq/dist.h"
#include "llmq/kernels.h"

#include <jansson.h>
#include <math.h>

static char *run(const char *cmd, int *status)
{
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    size_t got;
    while ((got = fread(out + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (len + 1 >= cap) out = realloc(out, cap *= 2);
    }
    out[len] = '\0';
    *status = pclose(p);
    return out;
}

static char llmq[1024];

static double json_number(const char *line, const char *key)
{
    json_error_t e;
    json_t *j = json_loads(line, 0, &e);
    cr_assert_not_null(j, "not JSON: %s", line);
    double v = json_number_value(json_object_get(j, key));
    json_decref(j);
    return v;
}

Test(cli, ppl_from_hub_id_downloads_then_evaluates, .timeout = 300)
{
    char work[256], cmd[2048];
    test_llmq_binary(llmq, sizeof llmq);
    test_tmpdir(work, sizeof work, "e2e-hub");
    snprintf(cmd, sizeof cmd, "bash tests/e2e/ppl_via_hub.sh %s %s/run 2>%s/stderr", llmq, work, work);
    int status;
    char *out = run(cmd, &status);
    cr_assert_eq(status, 0, "script failed: %s", out);
    char *nl = strchr(out, '\n');
    cr_assert_not_null(nl, "expected two JSON lines, got: %s", out);
    *nl = '\0';
    double hub = json_number(out, "ppl"), local = json_number(nl + 1, "ppl");
    cr_assert(hub > 1 && fabs(hub - local) < 1e-9, "hub ppl %f, local %f", hub, local);
    free(out);
}

Test(cli, ppl_text_and_tokens_agree)
{
    char dir[512];
    REQUIRE_SHARED(dir, "models/stories260K");
    char cmd[4096];
    int status;
    test_llmq_binary(llmq, sizeof llmq);
    snprintf(cmd, sizeof cmd, "%s ppl %s --text %s/../../data/tinystories/tinystories_eval.txt --ctx 256 --max-chunks 40 --json | tail -n1", llmq, dir, dir);
    char *a = run(cmd, &status);
    cr_assert_eq(status, 0);
    snprintf(cmd, sizeof cmd, "%s ppl %s --tokens %s/eval_tokens.json --ctx 256 --max-chunks 40 --json | tail -n1", llmq, dir, dir);
    char *b = run(cmd, &status);
    cr_assert_eq(status, 0);
    cr_assert_eq(json_number(a, "ppl"), json_number(b, "ppl"));
    cr_assert_eq(json_number(a, "tokens_scored"), 40 * 255);
    free(a);
    free(b);
}

Test(cli, ppl_errors_are_one_line_and_nonzero)
{
    int status;
    char cmd[2048];
    test_llmq_binary(llmq, sizeof llmq);
    snprintf(cmd, sizeof cmd, "%s ppl build/no-such-model --text README.md 2>&1", llmq);
    char *out = run(cmd, &status);
    cr_assert_neq(status, 0);
    cr_assert(strstr(out, "llmq ppl: ") == out, "%s", out);
    cr_assert(strstr(out, "no-such-model"), "%s", out);
    cr_assert_eq(strchr(out, '\n'), out + strlen(out) - 1, "more than one line: %s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s ppl 2>&1", llmq);
    out = run(cmd, &status);
    cr_assert_eq(WEXITSTATUS(status), 2);
    free(out);
    snprintf(cmd, sizeof cmd, "%s ppl x --protocol nope --text y 2>&1", llmq);
    out = run(cmd, &status);
    cr_assert_eq(WEXITSTATUS(status), 2);
    cr_assert(strstr(out, "gptq or llamacpp"), "%s", out);
    free(out);
}

/* `llmq ppl --fast`: int8 activations on a q8_0 file give a perplexity within
 * 1% of the exact path's (--exact) but not the same bits, and --json says
 * which ran; with neither flag, int8 runs where it is the faster path
 * (llmq_fast_is_faster) unless --kl-base asks for a KL divergence. */
Test(cli, ppl_fast_is_close_to_exact_and_says_so)
{
    char dir[512], work[256], cmd[4096];
    REQUIRE_SHARED(dir, "models/stories260K");
    test_llmq_binary(llmq, sizeof llmq);
    test_tmpdir(work, sizeof work, "cli-fast");
    int status;
    snprintf(cmd, sizeof cmd, "%s quantize %s -o %s/q8.gguf --type q8_0 --method rtn >/dev/null 2>&1", llmq, dir, work);
    free(run(cmd, &status));
    cr_assert_eq(status, 0, "quantize failed");
    char *out[2];
    for (int fast = 0; fast < 2; fast++) {
        snprintf(cmd, sizeof cmd, "%s ppl %s/q8.gguf --tokens %s/eval_tokens.json --ctx 256 --max-chunks 20 %s --json | tail -n1", llmq,
                 work, dir, fast ? "--fast" : "--exact");
        out[fast] = run(cmd, &status);
        cr_assert_eq(status, 0, "%s", out[fast]);
        cr_assert(strstr(out[fast], fast ? "\"fast\":true" : "\"fast\":false"), "%s", out[fast]);
    }
    double exact = json_number(out[0], "ppl"), fast = json_number(out[1], "ppl");
    cr_assert(exact > 1 && fabs(fast - exact) / exact < 0.01, "exact %f, fast %f", exact, fast);
    cr_assert_neq(fast, exact, "--fast gave the exact path's perplexity to the last bit");
    for (int kl = 0; kl < 2; kl++) {
        snprintf(cmd, sizeof cmd, "%s ppl %s/q8.gguf --tokens %s/eval_tokens.json --ctx 256 --max-chunks 20 %s%s --json | tail -n1", llmq, work,
                 dir, kl ? "--kl-base " : "", kl ? dir : "");
        char *def = run(cmd, &status);
        cr_assert_eq(status, 0, "%s", def);
        const bool want_fast = !kl && llmq_fast_is_faster();
        cr_assert(strstr(def, want_fast ? "\"fast\":true" : "\"fast\":false"), "default%s: %s", kl ? " with --kl-base" : "", def);
        cr_assert_eq(json_number(def, "ppl"), want_fast ? fast : exact, "default%s: %s", kl ? " with --kl-base" : "", def);
        free(def);
    }
    free(out[0]);
    free(out[1]);
}

/* libgomp's idle spin: llmq starts itself again with GOMP_SPINCOUNT=10000 when the
 * user set neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT (kernels/omp_wait.c), and
 * leaves a user's setting alone. OMP_DISPLAY_ENV=verbose makes libgomp print
 * the value it runs with, once per start. */
Test(cli, omp_spin_default_is_limited_and_user_settings_kept)
{
    static const struct {
        const char *env;     /* env(1) arguments before the command */
        const char *present; /* in libgomp's report */
        const char *absent;
    } cases[] = {
        {"-u OMP_WAIT_POLICY -u GOMP_SPINCOUNT", "GOMP_SPINCOUNT = '10000'", NULL},
        {"-u OMP_WAIT_POLICY GOMP_SPINCOUNT=777", "GOMP_SPINCOUNT = '777'", "'10000'"},
        {"-u GOMP_SPINCOUNT OMP_WAIT_POLICY=passive", "OMP_WAIT_POLICY = 'PASSIVE'", "'10000'"},
    };
    char cmd[2048];
    int status;
    test_llmq_binary(llmq, sizeof llmq);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(cmd, sizeof cmd, "env %s OMP_DISPLAY_ENV=verbose %s --version 2>&1", cases[i].env, llmq);
        char *out = run(cmd, &status);
        cr_assert_eq(status, 0, "%s", out);
        cr_assert_not_null(strstr(out, cases[i].present), "env %s: expected %s in\n%s", cases[i].env, cases[i].present, out);
        if (cases[i].absent) cr_assert_null(strstr(out, cases[i].absent), "env %s: unexpected %s in\n%s", cases[i].env, cases[i].absent, out);
        const char *v = strstr(out, "llmq ");
        cr_assert(v && !strstr(v + 1, "llmq "), "env %s: one version line expected:\n%s", cases[i].env, out);
        free(out);
    }
    /* Started through the dynamic loader, /proc/self/exe is the loader: no second start then. */
    const char *loader = "/lib64/ld-linux-x86-64.so.2";
    if (access(loader, X_OK) == 0) {
        snprintf(cmd, sizeof cmd, "env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT %s %s ppl --help 2>&1", loader, llmq);
        char *out = run(cmd, &status);
        cr_assert_eq(status, 0, "through the loader:\n%s", out);
        cr_assert_not_null(strstr(out, "usage: llmq ppl"), "%s", out);
        free(out);
    }
}

/* A build without MPI started as one of several ranks (mpirun's environment)
 * refuses at once with a one-line error saying how to get one, exit 2; as
 * the only rank it runs as always. */
Test(cli, a_build_without_mpi_refuses_to_be_one_of_several_ranks)
{
    int status;
    char cmd[2048];
    if (llmq_dist_built()) cr_skip_test("this is the MPI build (tests/mpi/run.sh runs it under mpirun)");
    test_llmq_binary(llmq, sizeof llmq);
    snprintf(cmd, sizeof cmd, "OMPI_COMM_WORLD_SIZE=3 OMPI_COMM_WORLD_RANK=1 %s --version 2>&1", llmq);
    char *out = run(cmd, &status);
    cr_assert_eq(WEXITSTATUS(status), 2, "%s", out);
    cr_assert(strstr(out, "one of 3 ranks") && strstr(out, "make MPI=1"), "%s", out);
    cr_assert_eq(strchr(out, '\n'), out + strlen(out) - 1, "more than one line: %s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "OMPI_COMM_WORLD_SIZE=1 %s --version 2>&1", llmq);
    out = run(cmd, &status);
    cr_assert_eq(WEXITSTATUS(status), 0, "%s", out);
    cr_assert(strstr(out, "llmq "), "%s", out);
    free(out);
}
