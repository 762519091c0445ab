#include "llmq/calib.h"
#include "llmq/digest.h"
#include "llmq/error.h"
#include "llmq/file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int llmq_calib_sample(const int32_t *ids, size_t n, const llmq_calib_opts *o, llmq_calib *out)
{
    memset(out, 0, sizeof *out);
    if (o->n_samples <= 0 || o->seqlen <= 0) return llmq_error("calibration: samples (%d) and length (%d) must be positive", o->n_samples, o->seqlen);
    if (n < (size_t)o->seqlen + 1)
        return llmq_error("calibration: the text has %zu tokens, too few for one window of %d (use a longer text or a smaller --calib-seqlen)", n, o->seqlen);
    out->tokens = malloc((size_t)o->n_samples * o->seqlen * sizeof *out->tokens);
    if (!out->tokens) return llmq_error("calibration: out of memory for %d × %d tokens", o->n_samples, o->seqlen);
    out->n_samples = o->n_samples;
    out->seqlen = o->seqlen;
    uint64_t state = o->seed;
    /* Start uniformly in [0, n - seqlen - 1], as random.randint(0, n - seqlen - 1). */
    uint64_t span = (uint64_t)(n - (size_t)o->seqlen);
    for (int s = 0; s < o->n_samples; s++) {
        size_t start = (size_t)(splitmix(&state) % span);
        memcpy(out->tokens + (size_t)s * o->seqlen, ids + start, (size_t)o->seqlen * sizeof *ids);
    }
    return LLMQ_OK;
}

int llmq_calib_from_file(const llmq_tokenizer *tok, const char *path, const llmq_calib_opts *o, llmq_calib *out)
{
    memset(out, 0, sizeof *out);
    size_t len;
    char *text = llmq_read_file(path, 1u << 30, &len);
    if (!text) return LLMQ_ERR;
    char sha256[65];
    llmq_sha256_hex(text, len, sha256);
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = llmq_tokenizer_encode(tok, text, len, 1, &ids, &n);
    free(text);
    if (rc != LLMQ_OK) return llmq_error_prefix("%s", path);
    rc = llmq_calib_sample(ids, n, o, out);
    free(ids);
    if (rc != LLMQ_OK) return llmq_error_prefix("%s", path);
    memcpy(out->sha256, sha256, sizeof sha256);
    return LLMQ_OK;
}

void llmq_calib_free(llmq_calib *c)
{
    free(c->tokens);
    memset(c, 0, sizeof *c);
}
