/* Perplexity (and KL divergence against a base model) over a token stream. */
#ifndef LLMQ_PPL_H
#define LLMQ_PPL_H

#include "llmq/model.h"

#include <stddef.h>
#include <stdint.h>

typedef enum {
    /* GPTQ/AWQ papers: floor(n/ctx) non-overlapping windows of the stream
     * (BOS only where the tokenizer put it, at the very start); every
     * next-token prediction inside a window is scored (ctx-1 per window). */
    LLMQ_PPL_GPTQ,
    /* llama.cpp's llama-perplexity: the first token of every window is
     * replaced by BOS (when the tokenizer adds one) and only the second half
     * of each window is scored (positions ctx/2 .. ctx-2 predict the next). */
    LLMQ_PPL_LLAMACPP,
} llmq_ppl_protocol;

typedef struct {
    int chunk, n_chunks;
    double ppl_so_far;
    double seconds;
    double tokens_per_second;
} llmq_ppl_progress;

typedef struct {
    int ctx;                    /* window length in tokens */
    llmq_ppl_protocol protocol;
    int max_chunks;             /* 0 = all */
    int bos_id;                 /* llamacpp protocol: BOS written into each window; -1 = none */
    const llmq_model *kl_base;  /* when set: KL(P_base ‖ P_model) on the scored positions */
    void (*progress)(void *user, const llmq_ppl_progress *p);
    void *user;
} llmq_ppl_opts;

typedef struct {
    double ppl, nll;            /* exp(mean NLL), mean NLL (nats) */
    double nll_stderr;          /* standard error of the mean NLL */
    int64_t tokens_scored;
    int chunks;
    int ctx;
    double seconds;
    double tokens_per_second;   /* tokens run through the model per second */
    /* With kl_base: */
    double kld, kld_p99;        /* mean and 99th percentile of per-token KL */
    double top1_agree;          /* share of positions where both argmaxes agree */
    double base_ppl;
} llmq_ppl_result;

int llmq_perplexity(const llmq_model *m, const int32_t *tokens, size_t n_tokens, const llmq_ppl_opts *opts, llmq_ppl_result *out);

/* -log softmax(logits)[target], computed in double. */
double llmq_nll(const float *logits, int vocab, int target);

#endif
