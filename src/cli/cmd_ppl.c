/* llmq ppl MODEL [--text FILE | --tokens FILE] [--ctx N] [--protocol gptq|llamacpp]
 *                [--max-chunks N] [--kl-base MODEL] [--fast | --exact] [--threads N] [--json] */
#include "cli.h"
#include "llmq/error.h"
#include "llmq/kernels.h"
#include "llmq/model.h"
#include "llmq/ppl.h"
#include "model_arg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *usage =
    "usage: llmq ppl MODEL (--text FILE | --tokens FILE) [options]\n"
    "\n"
    "Perplexity of MODEL (a checkpoint directory, a .gguf file, or a hub id ORG/NAME[@REV]) on a text.\n"
    "\n"
    "  --text FILE          UTF-8 text, tokenized once as a whole with the model's tokenizer\n"
    "  --tokens FILE        a JSON array of token ids instead of text\n"
    "  --ctx N              window length in tokens (default 512, at most the model's context)\n"
    "  --protocol P         gptq (default): non-overlapping windows, every prediction scored,\n"
    "                         as the GPTQ and AWQ papers measure WikiText-2;\n"
    "                       llamacpp: as llama.cpp's llama-perplexity (BOS written into each window,\n"
    "                         only the second half of each window scored)\n"
    "  --max-chunks N       evaluate at most N windows\n"
    "  --kl-base MODEL      also report KL divergence from MODEL's distribution (mean, p99) and top-1 agreement\n"
    "  --fast               int8 activations and integer dot products for quantized weights, as\n"
    "                         llama.cpp's CPU backend computes them (within ~0.02% of the exact\n"
    "                         perplexity; 2-3x faster with AVX-512 VNNI, 1.2-1.6x with AVX2)\n"
    "  --exact              fp32 activations: the weights' exact products, for every type\n"
    "                       (default: --fast where it is the faster path and no --kl-base is given;\n"
    "                         KL divergence measures the file, so it runs --exact unless told)\n"
    "  --threads N          threads (default: all cores)\n"
    "  --json               print one JSON object as the last line of stdout\n";

typedef struct {
    bool tty;
} progress_state;

static void on_progress(void *user, const llmq_ppl_progress *p)
{
    progress_state *st = user;
    if (!st->tty) return;
    fprintf(stderr, "\rchunk %d/%d  ppl %.4f  %.0f tok/s  %.1fs", p->chunk, p->n_chunks, p->ppl_so_far, p->tokens_per_second, p->seconds);
    if (p->chunk == p->n_chunks) fputc('\n', stderr);
    fflush(stderr);
}

int cmd_ppl(int argc, char **argv)
{
    const char *model_path = NULL, *text_path = NULL, *tokens_path = NULL, *protocol = "gptq", *kl_path = NULL;
    int ctx = 512, max_chunks = 0, threads = 0;
    bool json = false;
    int fast = -1; /* -1: choose (see --help) */
    for (cli_args a = cli_begin("ppl", argc, argv); cli_next(&a);) {
        if (cli_flag(&a, "--help") || cli_flag(&a, "-h")) {
            fputs(usage, stdout);
            return 0;
        }
        if (cli_flag(&a, "--json")) json = true;
        else if (cli_flag(&a, "--fast")) fast = 1;
        else if (cli_flag(&a, "--exact")) fast = 0;
        else if (cli_value(&a, "--text", &text_path) || cli_value(&a, "--tokens", &tokens_path) ||
                 cli_value(&a, "--protocol", &protocol) || cli_value(&a, "--kl-base", &kl_path) ||
                 cli_int(&a, "--ctx", 2, &ctx) || cli_int(&a, "--max-chunks", 0, &max_chunks) ||
                 cli_int(&a, "--threads", 0, &threads)) {
            if (a.failed) return 2;
        } else if (a.positional && !model_path) model_path = a.positional;
        else return cli_unknown(&a);
    }
    if (!model_path) {
        fputs(usage, stderr);
        return 2;
    }
    if (!text_path == !tokens_path) return cli_usage_error("ppl", "give exactly one of --text FILE or --tokens FILE");
    llmq_ppl_protocol proto;
    if (!strcmp(protocol, "gptq")) proto = LLMQ_PPL_GPTQ;
    else if (!strcmp(protocol, "llamacpp")) proto = LLMQ_PPL_LLAMACPP;
    else return cli_usage_error("ppl", "--protocol must be gptq or llamacpp, not '%s'", protocol);
    llmq_set_threads(threads);
    const bool fast_chosen = fast >= 0;
    if (!fast_chosen) fast = !kl_path && llmq_fast_is_faster();
    llmq_set_fast(fast);

    cli_model *cm = cli_model_open("ppl", model_path);
    if (!cm) return 1;
    cli_model *base = NULL;
    int status = 1;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (tokens_path) ids = cli_read_token_file(tokens_path, &n_ids);
    else ids = cli_model_tokenize_file(cm, text_path, &n_ids);
    if (!ids) {
        cli_fail_last("ppl");
        goto done;
    }
    if (ctx > cm->model->cfg.max_position_embeddings)
        fprintf(stderr, "llmq ppl: note: --ctx %d exceeds the model's max_position_embeddings (%d)\n", ctx, cm->model->cfg.max_position_embeddings);
    if (kl_path && !(base = cli_model_open("ppl", kl_path))) goto done;

    progress_state ps = {cli_stderr_is_tty() && !json};
    llmq_ppl_opts opts = {ctx, proto, max_chunks, cli_model_bos(cm), base ? base->model : NULL, on_progress, &ps};
    llmq_ppl_result r;
    if (llmq_perplexity(cm->model, ids, n_ids, &opts, &r) != LLMQ_OK) {
        cli_fail_last("ppl");
        goto done;
    }
    printf("model:       %s\n", model_path);
    printf("protocol:    %s, ctx %d, %d chunks, %lld tokens scored\n", protocol, ctx, r.chunks, (long long)r.tokens_scored);
    printf("perplexity:  %.4f (mean NLL %.6f ± %.6f)\n", r.ppl, r.nll, r.nll_stderr);
    if (base) {
        printf("base ppl:    %.4f (%s)\n", r.base_ppl, kl_path);
        printf("KL div:      mean %.6f, p99 %.6f; top-1 agreement %.2f%%\n", r.kld, r.kld_p99, 100 * r.top1_agree);
    }
    printf("arithmetic:  %s%s\n", fast ? "int8 activations, integer dots (--fast)" : "exact (fp32 activations, --exact)",
           fast_chosen ? "" : fast ? "; the default here, --exact for fp32" : "; the default here");
    printf("speed:       %.1f s, %.0f tok/s, %d threads\n", r.seconds, r.tokens_per_second, llmq_get_threads());
    const char *blas_detected = llmq_blas_core_detected();
    printf("kernels:     %s; OpenBLAS %s", llmq_kernel_name(), llmq_blas_core());
    if (blas_detected) printf(" (OpenBLAS alone chose %s, below this CPU)", blas_detected);
    printf("\n");
    if (json) {
        printf("{\"ppl\":%.6f,\"nll\":%.8f,\"tokens_scored\":%lld,\"chunks\":%d,\"ctx\":%d,\"protocol\":\"%s\",\"fast\":%s,\"seconds\":%.3f,"
               "\"tokens_per_second\":%.1f,\"threads\":%d,\"kernel\":\"%s\",\"blas_core\":\"%s\"",
               r.ppl, r.nll, (long long)r.tokens_scored, r.chunks, r.ctx, protocol, fast ? "true" : "false", r.seconds, r.tokens_per_second,
               llmq_get_threads(), llmq_kernel_name(), llmq_blas_core());
        if (base) printf(",\"base_ppl\":%.6f,\"kld\":%.8f,\"kld_p99\":%.8f,\"top1_agree\":%.6f", r.base_ppl, r.kld, r.kld_p99, r.top1_agree);
        printf("}\n");
    }
    status = 0;
done:
    free(ids);
    cli_model_close(base);
    cli_model_close(cm);
    return status;
}
