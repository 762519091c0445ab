/* llmq command dispatcher: one file per subcommand, each `int cmd_X(int argc, char **argv)`
 * returning the process exit status. Subcommands are declared weak so a
 * build without one still links and says so. */
#include "cli.h"

#include "llmq/dist.h"
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/kernels.h"

#include <signal.h>

#include <stdio.h>
#include <string.h>

#define WEAK __attribute__((weak))
WEAK int cmd_inspect(int argc, char **argv);
WEAK int cmd_ppl(int argc, char **argv);
WEAK int cmd_quantize(int argc, char **argv);
WEAK int cmd_tokenize(int argc, char **argv);
WEAK int cmd_pull(int argc, char **argv);
WEAK int cmd_synth(int argc, char **argv);

static const struct {
    const char *name;
    const char *summary;
} commands[] = {
    {"pull", "download a checkpoint from the Hugging Face hub"},
    {"inspect", "show a checkpoint's or GGUF file's architecture and tensors"},
    {"quantize", "quantize a checkpoint to a GGUF file (rtn, gptq, awq)"},
    {"ppl", "measure perplexity (and KL divergence against a base)"},
    {"tokenize", "turn text into token ids and back"},
    {"synth", "write the demo checkpoint, or (--shape) a benchmark one at a real model's shapes"},
};

static int (*lookup(const char *name))(int, char **)
{
    if (!strcmp(name, "pull")) return cmd_pull;
    if (!strcmp(name, "inspect")) return cmd_inspect;
    if (!strcmp(name, "quantize")) return cmd_quantize;
    if (!strcmp(name, "ppl")) return cmd_ppl;
    if (!strcmp(name, "tokenize")) return cmd_tokenize;
    if (!strcmp(name, "synth")) return cmd_synth;
    return NULL;
}

static void usage(FILE *fp)
{
    fprintf(fp, "llmq %s — quantize Hugging Face LLM checkpoints to 4-bit GGUF (GPTQ, AWQ, RTN)\n\n", LLMQ_VERSION);
    fprintf(fp, "usage: llmq <command> [options]   (llmq <command> --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        int (*fn)(int, char **) = lookup(commands[i].name);
        fprintf(fp, "  %-10s %s%s\n", commands[i].name, commands[i].summary, fn ? "" : " (not built yet)");
    }
}

/* mpirun ending a run (SIGTERM), ^C, a closed terminal: the partial output goes first. */
static void on_fatal_signal(int sig)
{
    llmq_atomic_remove_temps();
    signal(sig, SIG_DFL);
    raise(sig);
}

static int run(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("llmq %s%s\n", LLMQ_VERSION, llmq_dist_built() ? " (MPI)" : "");
        return 0;
    }
    int (*fn)(int, char **) = lookup(argv[1]);
    if (!fn) {
        fprintf(stderr, "llmq: unknown command '%s' (see llmq --help)\n", argv[1]);
        return 2;
    }
    if (llmq_dist_size() > 1 && fn != cmd_quantize) {
        fprintf(stderr, "llmq: only quantize spreads its work over the %d ranks mpirun started: run %s without mpirun\n", llmq_dist_size(),
                argv[1]);
        return 2;
    }
    return fn(argc - 1, argv + 1);
}

int main(int argc, char **argv)
{
    llmq_omp_default_wait(argv);
    if (llmq_dist_init(&argc, &argv) != LLMQ_OK) {
        fprintf(stderr, "llmq: %s\n", llmq_last_error());
        return 2;
    }
    signal(SIGTERM, on_fatal_signal);
    signal(SIGINT, on_fatal_signal);
    signal(SIGHUP, on_fatal_signal);
    const int status = run(argc, argv);
    /* a rank that fails ends them all: the others may be waiting on it in a collective */
    if (status != 0 && llmq_dist_size() > 1) llmq_dist_abort(status);
    llmq_dist_finalize();
    return status;
}
