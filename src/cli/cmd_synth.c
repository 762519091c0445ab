/* llmq synth [DIR] — writes the project's small deterministic demo checkpoint. */
#include "cli.h"
#include "llmq/error.h"
#include "llmq/synth.h"

#include <stdio.h>

static const char *usage =
    "usage: llmq synth [DIR] [--seed N] [--layers N]\n"
    "\n"
    "Writes a small deterministic Llama checkpoint (default DIR models/llmq-demo): config.json,\n"
    "model.safetensors (BF16), a BPE tokenizer.json trained on its own synthetic text, and that text\n"
    "(calib.txt, eval.txt). The model is a low-rank bigram model of the text, with a few hidden\n"
    "channels of planted large activations; hidden 256, FFN 768, GQA 4/2 heads, vocab 512.\n";

int cmd_synth(int argc, char **argv)
{
    const char *dir = "models/llmq-demo";
    llmq_synth_opts o;
    llmq_synth_defaults(&o);
    int seed = -1;
    for (cli_args a = cli_begin("synth", argc, argv); cli_next(&a);) {
        if (cli_flag(&a, "--help") || cli_flag(&a, "-h")) {
            fputs(usage, stdout);
            return 0;
        }
        if (cli_int(&a, "--seed", 0, &seed) || cli_int(&a, "--layers", 1, &o.n_layers)) {
            if (a.failed) return 2;
        } else if (a.positional) dir = a.positional;
        else return cli_unknown(&a);
    }
    if (seed >= 0) o.seed = (uint64_t)seed;
    if (llmq_synth_write(dir, &o) != LLMQ_OK) return cli_fail_last("synth");
    printf("%s\n", dir);
    return 0;
}
