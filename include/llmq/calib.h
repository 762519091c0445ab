/* Calibration samples for GPTQ and AWQ: windows of a tokenized text at seeded
 * random offsets (IST-DASLab/gptq datautils.py: the whole text tokenized once,
 * then `seqlen` tokens from a random start, `n_samples` times). */
#ifndef LLMQ_CALIB_H
#define LLMQ_CALIB_H

#include "llmq/tokenizer.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int n_samples;  /* default 128 */
    int seqlen;     /* default 2048 (GPTQ) or 512 (AWQ); capped by the caller at the model context */
    uint64_t seed;  /* default 0 */
} llmq_calib_opts;

typedef struct {
    int32_t *tokens; /* n_samples × seqlen, row-major */
    int n_samples, seqlen;
    char sha256[65]; /* of the calibration file's bytes ("" when sampled from ids) */
} llmq_calib;

/* Draws the windows from ids[0..n). Fails when n < seqlen + 1. */
int llmq_calib_sample(const int32_t *ids, size_t n, const llmq_calib_opts *o, llmq_calib *out);
/* Reads and tokenizes a text file (BOS as the tokenizer adds it), then samples. */
int llmq_calib_from_file(const llmq_tokenizer *tok, const char *path, const llmq_calib_opts *o, llmq_calib *out);
void llmq_calib_free(llmq_calib *c);

#endif
