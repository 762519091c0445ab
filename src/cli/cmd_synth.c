/* llmq synth [DIR] — writes the project's small deterministic demo checkpoint;
 * llmq synth --shape NAME DIR — a checkpoint at a real model's shapes. */
#include "cli.h"
#include "llmq/error.h"
#include "llmq/synth.h"

#include <stdio.h>

static const char *usage =
    "usage: llmq synth [DIR] [--arch llama|qwen3|gemma2|gemma3|phi3|mixtral|qwen3moe] [--tokenizer PATH]\n"
    "                  [--seed N] [--layers N]\n"
    "       llmq synth --shape NAME [--layers N] [--seed N] DIR\n"
    "       llmq synth --list-shapes\n"
    "\n"
    "Writes a small deterministic Llama checkpoint (default DIR models/llmq-demo): config.json,\n"
    "model.safetensors (BF16), a BPE tokenizer.json trained on its own synthetic text, and that text\n"
    "(calib.txt, eval.txt). The model is a low-rank bigram model of the text, with a few hidden\n"
    "channels of planted large activations; hidden 256, FFN 768, GQA 4/2 heads, vocab 512.\n"
    "\n"
    "  --arch NAME          the architecture the demo model is written as: llama (default), qwen3\n"
    "                         (Qwen3ForCausalLM: per-head q/k RMSNorms, head_dim 128, so q is wider\n"
    "                         than the hidden state as in Qwen3-0.6B and Qwen3-32B), gemma2\n"
    "                         (Gemma2ForCausalLM: GeGLU, 1 + w norms, post-norms, scaled and tied\n"
    "                         embeddings, soft-capping, sliding window of 64 on every other layer) or\n"
    "                         gemma3 (Gemma3ForCausalLM: as Gemma 2 with q/k norms, 5 local layers in 6\n"
    "                         with their own RoPE base, no soft-capping; use --layers 6 for a global one)\n"
    "                         or phi3 (Phi3ForCausalLM: q, k, v in one qkv_proj, gate and up in one\n"
    "                         gate_up_proj), mixtral (MixtralForCausalLM: 4 experts, 2 per token) or\n"
    "                         qwen3moe (Qwen3MoeForCausalLM: the same with Qwen3's attention and experts\n"
    "                         of 2/3 the FFN)\n"
    "  --tokenizer PATH     a real tokenizer instead of the demo's: a tokenizer.json, or the directory\n"
    "                         holding it and its tokenizer_config.json (both are copied), e.g. Qwen3's or\n"
    "                         Gemma 3's. The vocabulary is the tokenizer's; the bigram model covers the\n"
    "                         tokens the text uses and gives every other token a logit 20 below (not gemma2)\n"
    "  --shape NAME         instead, a benchmark checkpoint at a real model's tensor shapes and config\n"
    "                         (llama2-7b, llama3-8b, qwen2.5-7b, qwen3-8b, qwen3-32b, llama3-70b,\n"
    "                         qwen3-30b-a3b (128 experts, 8 per token):\n"
    "                         see --list-shapes) with seeded random BF16 weights (std 0.02, 8 planted\n"
    "                         outlier channels) and only the first --layers decoder layers (default 1);\n"
    "                         same files, the demo's\n"
    "                         512-token tokenizer, 1 MB calib.txt and 300 kB eval.txt. Written streaming.\n"
    "  --layers N           decoder layers (default 4, or 1 with --shape)\n"
    "  --seed N             seed of the text and weights (same seed, same bytes)\n"
    "  --list-shapes        the shapes, their source checkpoints and sizes\n";

static void list_shapes(void)
{
    printf("%-13s %-26s %6s %6s %5s %7s  %s\n", "shape", "source", "hidden", "ffn", "heads", "vocab", "size (1 layer + per layer)");
    for (size_t i = 0; llmq_synth_shape_at(i); i++) {
        const llmq_synth_shape *s = llmq_synth_shape_at(i);
        double hd = s->head_dim ? s->head_dim : (double)s->hidden / s->n_heads, d = s->hidden;
        const double mlp = s->n_experts ? (3.0 * s->expert_ffn * s->n_experts + s->n_experts) * d : 3 * d * s->intermediate;
        double layer = 2 * (d * hd * (2 * s->n_heads + 2 * s->n_kv_heads) + mlp + 2 * d);
        if (s->qk_norm) layer += 2 * 2 * hd;
        if (s->qkv_bias) layer += 2 * hd * (s->n_heads + 2 * s->n_kv_heads);
        double outside = 2 * (d * s->vocab * (s->tied ? 1 : 2) + d);
        printf("%-13s %-26s %6d %6d %2d/%-2d %7d  %.2f GB + %.2f GB\n", s->name, s->source, s->hidden, s->intermediate,
               s->n_heads, s->n_kv_heads, s->vocab, (outside + layer) / 1e9, layer / 1e9);
    }
}

int cmd_synth(int argc, char **argv)
{
    const char *dir = NULL, *shape = NULL;
    llmq_synth_opts o;
    llmq_synth_defaults(&o);
    int seed = -1, layers = 0;
    for (cli_args a = cli_begin("synth", argc, argv); cli_next(&a);) {
        if (cli_flag(&a, "--help") || cli_flag(&a, "-h")) {
            fputs(usage, stdout);
            return 0;
        }
        if (cli_flag(&a, "--list-shapes")) {
            list_shapes();
            return 0;
        }
        if (cli_int(&a, "--seed", 0, &seed) || cli_int(&a, "--layers", 1, &layers) || cli_value(&a, "--shape", &shape) ||
            cli_value(&a, "--arch", &o.arch) ||
            cli_value(&a, "--tokenizer", &o.tokenizer)) {
            if (a.failed) return 2;
        } else if (a.positional && !dir) dir = a.positional;
        else return cli_unknown(&a);
    }
    if (seed >= 0) o.seed = (uint64_t)seed;
    if (shape) {
        if (!dir) return cli_usage_error("synth", "--shape needs a DIR to write into");
        if (o.arch) return cli_usage_error("synth", "--arch is for the demo model; a --shape has its own architecture");
        if (o.tokenizer) return cli_usage_error("synth", "--tokenizer is for the demo model; a --shape carries the demo's tokenizer");
        if (llmq_synth_shape_write(dir, shape, layers ? layers : 1, o.seed) != LLMQ_OK) return cli_fail_last("synth");
    } else {
        if (!dir) dir = "models/llmq-demo";
        if (layers) o.n_layers = layers;
        if (llmq_synth_write(dir, &o) != LLMQ_OK) return cli_fail_last("synth");
    }
    printf("%s\n", dir);
    return 0;
}
