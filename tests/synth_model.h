/* Small random Llama-class models and vocabularies built in memory, for tests
 * of the quantize driver and the GGUF round trip that must not depend on
 * ../shared. Weights are deterministic (a fixed LCG). */
#ifndef LLMQ_TEST_SYNTH_MODEL_H
#define LLMQ_TEST_SYNTH_MODEL_H

#include "llmq/model.h"
#include "llmq/tokenizer.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *model_type; /* "llama" or "qwen2" */
    int n_layers, hidden, n_heads, n_kv_heads, ffn, vocab;
    bool tied, qkv_bias;
    unsigned seed;
} synth_spec;

static inline float synth_uniform(unsigned *state)
{
    *state = *state * 1664525u + 1013904223u;
    return (float)((*state >> 8) & 0xffffff) / (float)0x1000000 * 2.0f - 1.0f;
}

static inline float *synth_buffer(llmq_model *m, size_t n, float scale, float offset, unsigned *state)
{
    float *p = malloc(n * sizeof *p);
    cr_assert_not_null(p);
    for (size_t i = 0; i < n; i++) p[i] = offset + scale * synth_uniform(state);
    m->owned = realloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *m->owned);
    m->owned[m->n_owned++] = p;
    return p;
}

static inline llmq_weight synth_weight(llmq_model *m, int rows, int cols, float scale, float offset, unsigned *state)
{
    llmq_weight w = {synth_buffer(m, (size_t)rows * cols, scale, offset, state), LLMQ_TYPE_F32, rows, cols};
    return w;
}

/* An F32 model in Hugging Face row order (rope_interleaved = false); free with llmq_model_free. */
static inline llmq_model *synth_model(const synth_spec *s)
{
    llmq_model *m = calloc(1, sizeof *m);
    cr_assert_not_null(m);
    unsigned st = s->seed ? s->seed : 12345u;
    llmq_config *c = &m->cfg;
    snprintf(c->model_type, sizeof c->model_type, "%s", s->model_type);
    snprintf(c->architecture, sizeof c->architecture, "%s", !strcmp(s->model_type, "qwen2") ? "Qwen2ForCausalLM" : "LlamaForCausalLM");
    c->hidden_size = s->hidden;
    c->intermediate_size = s->ffn;
    c->n_layers = s->n_layers;
    c->n_heads = s->n_heads;
    c->n_kv_heads = s->n_kv_heads;
    c->head_dim = s->hidden / s->n_heads;
    c->vocab_size = s->vocab;
    c->max_position_embeddings = 256;
    c->rms_norm_eps = 1e-5f;
    c->rope_theta = 10000;
    c->tie_word_embeddings = s->tied;
    c->qkv_bias = s->qkv_bias;
    c->bos_token_id = 1;
    c->eos_token_id = 2;
    m->path = strdup("synthetic");
    int d = c->hidden_size, qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim, f = c->intermediate_size;
    m->embed = synth_weight(m, c->vocab_size, d, 1.0f, 0, &st);
    m->final_norm = synth_weight(m, 1, d, 0.1f, 1.0f, &st);
    m->lm_head = s->tied ? m->embed : synth_weight(m, c->vocab_size, d, 0.2f, 0, &st);
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    const int rows[LLMQ_LIN_COUNT] = {qd, kvd, kvd, d, f, f, d};
    const int cols[LLMQ_LIN_COUNT] = {d, d, d, qd, d, d, f};
    for (int l = 0; l < c->n_layers; l++) {
        llmq_layer *L = &m->layers[l];
        L->attn_norm = synth_weight(m, 1, d, 0.1f, 1.0f, &st);
        L->ffn_norm = synth_weight(m, 1, d, 0.1f, 1.0f, &st);
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            L->lin[k] = synth_weight(m, rows[k], cols[k], 1.5f / sqrtf((float)cols[k]), 0, &st);
            if (s->qkv_bias && k <= LLMQ_LIN_V) L->bias[k] = synth_weight(m, 1, rows[k], 0.1f, 0, &st);
        }
    }
    return m;
}

/* A "llama" (SentencePiece-style) vocabulary of n tokens: <unk>, <s>, </s>,
 * the 256 byte tokens, then "▁t<i>" pieces. */
static inline llmq_tokenizer *synth_tokenizer(int n)
{
    llmq_vocab v;
    memset(&v, 0, sizeof v);
    v.model = strdup("llama");
    v.pre = strdup("default");
    v.n_tokens = (size_t)n;
    v.tokens = calloc((size_t)n, sizeof *v.tokens);
    v.token_lens = calloc((size_t)n, sizeof *v.token_lens);
    v.scores = calloc((size_t)n, sizeof *v.scores);
    v.token_types = calloc((size_t)n, sizeof *v.token_types);
    for (int i = 0; i < n; i++) {
        char buf[32];
        int type = LLMQ_TOKEN_NORMAL;
        if (i == 0) snprintf(buf, sizeof buf, "<unk>"), type = LLMQ_TOKEN_UNKNOWN;
        else if (i == 1) snprintf(buf, sizeof buf, "<s>"), type = LLMQ_TOKEN_CONTROL;
        else if (i == 2) snprintf(buf, sizeof buf, "</s>"), type = LLMQ_TOKEN_CONTROL;
        else if (i < 259) snprintf(buf, sizeof buf, "<0x%02X>", i - 3), type = LLMQ_TOKEN_BYTE;
        else snprintf(buf, sizeof buf, "\xe2\x96\x81t%d", i);
        v.tokens[i] = strdup(buf);
        v.token_lens[i] = strlen(buf);
        v.token_types[i] = type;
        v.scores[i] = -(float)i;
    }
    v.bos_id = 1;
    v.eos_id = 2;
    v.unk_id = 0;
    v.pad_id = -1;
    v.add_bos = 1;
    v.add_space_prefix = 1;
    llmq_tokenizer *tok = llmq_tokenizer_from_vocab(&v);
    llmq_vocab_free(&v);
    cr_assert_not_null(tok, "%s", llmq_last_error());
    return tok;
}

/* Deterministic token ids in [3, vocab). */
static inline void synth_tokens(int32_t *ids, int n, int vocab)
{
    unsigned st = 777u;
    for (int i = 0; i < n; i++) {
        st = st * 1664525u + 1013904223u;
        ids[i] = 3 + (int32_t)((st >> 8) % (unsigned)(vocab - 3));
    }
}

#endif
