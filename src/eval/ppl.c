#include "llmq/ppl.h"
#include "llmq/error.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* log Σ exp(logits) with single-precision exponentials (each within an ulp)
 * summed in double: accurate to ~1e-7 in the NLL, and many times faster
 * than double exp over a large vocabulary. */
static double log_sum_exp(const float *logits, int vocab, float *max_out)
{
    float mx = -INFINITY;
    for (int i = 0; i < vocab; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    float part = 0;
    for (int i = 0; i < vocab; i++) {
        part += expf(logits[i] - mx);
        if ((i & 255) == 255) { /* short float partial sums, then double */
            sum += part;
            part = 0;
        }
    }
    *max_out = mx;
    return log(sum + part);
}

double llmq_nll(const float *logits, int vocab, int target)
{
    float mx;
    double lse = log_sum_exp(logits, vocab, &mx);
    return -((double)logits[target] - mx - lse);
}

/* KL(P‖Q) for one position from two logit rows, with log-softmax in double. */
static double kl_row(const float *p_logits, const float *q_logits, int vocab)
{
    float pm, qm;
    double lps = log_sum_exp(p_logits, vocab, &pm), lqs = log_sum_exp(q_logits, vocab, &qm), kl = 0;
    /* Σ p (log p − log q), with log p − log q = (p_i − q_i) − (pm + lps − qm − lqs). */
    double shift = (double)pm + lps - (double)qm - lqs;
    for (int i = 0; i < vocab; i++) {
        float lp = (float)(p_logits[i] - pm - lps);
        kl += (double)expf(lp) * ((double)p_logits[i] - (double)q_logits[i] - shift);
    }
    return kl > 0 ? kl : 0;
}

static int argmax(const float *row, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (row[i] > row[best]) best = i;
    return best;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double now_seconds(void) { return omp_get_wtime(); }

int llmq_perplexity(const llmq_model *m, const int32_t *tokens, size_t n_tokens, const llmq_ppl_opts *o, llmq_ppl_result *r)
{
    memset(r, 0, sizeof *r);
    int ctx = o->ctx;
    if (ctx < 2) return llmq_error("ppl: context %d is too short (at least 2)", ctx);
    size_t min_tokens = o->protocol == LLMQ_PPL_LLAMACPP ? 2 * (size_t)ctx : (size_t)ctx;
    if (n_tokens < min_tokens)
        return llmq_error("ppl: the text has %zu tokens, fewer than the %zu needed for one window of %d", n_tokens, min_tokens, ctx);
    if (o->kl_base && o->kl_base->cfg.vocab_size != m->cfg.vocab_size)
        return llmq_error("ppl: the KL base has vocabulary %d, the model %d", o->kl_base->cfg.vocab_size, m->cfg.vocab_size);
    int n_chunks = (int)(n_tokens / (size_t)ctx);
    if (o->max_chunks > 0 && o->max_chunks < n_chunks) n_chunks = o->max_chunks;
    int first = o->protocol == LLMQ_PPL_LLAMACPP ? ctx / 2 : 0; /* first scored logit row */
    int per_chunk = ctx - 1 - first;
    int vocab = m->cfg.vocab_size, d = m->cfg.hidden_size;

    /* The head runs over the scored rows only, in slices, so logits never
     * need more than slice × vocab floats. */
    const int slice = 128;
    int32_t *window = malloc((size_t)ctx * sizeof *window);
    float *x = malloc((size_t)ctx * d * sizeof(float));
    float *xb = o->kl_base ? malloc((size_t)ctx * d * sizeof(float)) : NULL;
    float *logits = malloc((size_t)slice * vocab * sizeof(float));
    float *base_logits = o->kl_base ? malloc((size_t)slice * vocab * sizeof(float)) : NULL;
    double *kls = o->kl_base ? malloc((size_t)n_chunks * per_chunk * sizeof(double)) : NULL;
    if (!window || !x || !logits || (o->kl_base && (!xb || !base_logits || !kls))) {
        free(window); free(x); free(xb); free(logits); free(base_logits); free(kls);
        return llmq_error("ppl: out of memory for a window of %d tokens", ctx);
    }
    double nll_sum = 0, nll_sq = 0, base_nll_sum = 0;
    int64_t scored = 0, agree = 0;
    double t0 = now_seconds();
    int rc = LLMQ_OK;
    for (int c = 0; c < n_chunks && rc == LLMQ_OK; c++) {
        const int32_t *src = tokens + (size_t)c * ctx;
        memcpy(window, src, (size_t)ctx * sizeof *window);
        if (o->protocol == LLMQ_PPL_LLAMACPP && o->bos_id >= 0) window[0] = o->bos_id;
        rc = llmq_embed(m, window, ctx, x);
        /* The head reads rows first..ctx-2 only: the last layer's feed-forward half skips the rest. */
        if (rc == LLMQ_OK) rc = llmq_layers_forward(m, x, ctx, first);
        if (o->kl_base) {
            const llmq_model *b = o->kl_base;
            if (rc == LLMQ_OK) rc = llmq_embed(b, window, ctx, xb);
            if (rc == LLMQ_OK) rc = llmq_layers_forward(b, xb, ctx, first);
        }
        for (int j0 = first; rc == LLMQ_OK && j0 < ctx - 1; j0 += slice) {
            int rows = ctx - 1 - j0 < slice ? ctx - 1 - j0 : slice;
            rc = llmq_head_forward(m, x + (size_t)j0 * d, rows, logits);
            if (rc == LLMQ_OK && o->kl_base) rc = llmq_head_forward(o->kl_base, xb + (size_t)j0 * o->kl_base->cfg.hidden_size, rows, base_logits);
            if (rc != LLMQ_OK) break;
            double s = 0, s2 = 0, bs = 0;
            int64_t ag = 0;
            #pragma omp parallel for reduction(+ : s, s2, bs, ag) schedule(static)
            for (int i = 0; i < rows; i++) {
                int target = src[j0 + i + 1];
                const float *row = logits + (size_t)i * vocab;
                double nll = llmq_nll(row, vocab, target);
                s += nll;
                s2 += nll * nll;
                if (o->kl_base) {
                    const float *brow = base_logits + (size_t)i * vocab;
                    bs += llmq_nll(brow, vocab, target);
                    kls[scored + i] = kl_row(brow, row, vocab);
                    ag += argmax(brow, vocab) == argmax(row, vocab);
                }
            }
            nll_sum += s;
            nll_sq += s2;
            base_nll_sum += bs;
            agree += ag;
            scored += rows;
        }
        if (rc == LLMQ_OK && o->progress) {
            double el = now_seconds() - t0;
            llmq_ppl_progress p = {c + 1, n_chunks, exp(nll_sum / (double)scored), el, (double)(c + 1) * ctx / el};
            o->progress(o->user, &p);
        }
    }
    if (rc == LLMQ_OK) {
        r->ctx = ctx;
        r->chunks = n_chunks;
        r->tokens_scored = scored;
        r->nll = nll_sum / (double)scored;
        r->ppl = exp(r->nll);
        double var = nll_sq / (double)scored - r->nll * r->nll;
        r->nll_stderr = var > 0 && scored > 1 ? sqrt(var / (double)(scored - 1)) : 0;
        r->seconds = now_seconds() - t0;
        r->tokens_per_second = (double)n_chunks * ctx / r->seconds;
        if (o->kl_base) {
            double ks = 0;
            for (int64_t i = 0; i < scored; i++) ks += kls[i];
            r->kld = ks / (double)scored;
            qsort(kls, (size_t)scored, sizeof *kls, cmp_double);
            r->kld_p99 = kls[(size_t)floor(0.99 * (double)(scored - 1))];
            r->top1_agree = (double)agree / (double)scored;
            r->base_ppl = exp(base_nll_sum / (double)scored);
        }
    }
    free(window); free(x); free(xb); free(logits); free(base_logits); free(kls);
    return rc;
}
