#include "llmq/error.h"
#include "llmq/model.h"
#include "llmq/ppl.h"
#include "test_util.h"

#include <jansson.h>
#include <math.h>

static int32_t *load_tokens(const char *path, size_t *n)
{
    json_error_t e;
    json_t *arr = json_load_file(path, 0, &e);
    cr_assert(json_is_array(arr), "%s: %s", path, e.text);
    *n = json_array_size(arr);
    int32_t *ids = malloc(*n * sizeof *ids);
    for (size_t i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    json_decref(arr);
    return ids;
}

/* ppl_protocol_gptq.results of reference.json at ctx 256 and 512, within 0.1%. */
static void check_reference_ppl(const char *model)
{
    char dir[512], rel[256], ref_path[512], tok_path[512];
    REQUIRE_SHARED(dir, model);
    snprintf(rel, sizeof rel, "%s/reference.json", model);
    REQUIRE_SHARED(ref_path, rel);
    snprintf(rel, sizeof rel, "%s/eval_tokens.json", model);
    REQUIRE_SHARED(tok_path, rel);
    llmq_model *m = llmq_model_load(dir);
    cr_assert_not_null(m, "%s", llmq_last_error());
    size_t n;
    int32_t *ids = load_tokens(tok_path, &n);
    json_error_t e;
    json_t *ref = json_load_file(ref_path, 0, &e);
    json_t *results = json_object_get(json_object_get(ref, "ppl_protocol_gptq"), "results");
    cr_assert_eq(json_array_size(results), 2);
    for (size_t i = 0; i < json_array_size(results); i++) {
        json_t *r = json_array_get(results, i);
        int ctx = (int)json_integer_value(json_object_get(r, "ctx"));
        llmq_ppl_opts o = {.ctx = ctx, .protocol = LLMQ_PPL_GPTQ, .bos_id = -1};
        llmq_ppl_result res;
        cr_assert_eq(llmq_perplexity(m, ids, n, &o, &res), LLMQ_OK, "%s", llmq_last_error());
        double want = json_real_value(json_object_get(r, "ppl"));
        cr_assert_eq(res.tokens_scored, json_integer_value(json_object_get(r, "tokens_scored")));
        cr_assert_eq(res.chunks, json_integer_value(json_object_get(r, "chunks")));
        cr_assert_leq(fabs(res.ppl / want - 1), 1e-3, "%s ctx %d: ppl %.6f, reference %.6f", model, ctx, res.ppl, want);
    }
    json_decref(ref);
    free(ids);
    llmq_model_free(m);
}

Test(ppl, stories260k_matches_reference, .timeout = 600) { check_reference_ppl("models/stories260K"); }
Test(ppl, stories7m_matches_reference, .timeout = 600) { check_reference_ppl("models/stories-llama-7m"); }

/* The llama.cpp protocol, computed by hand from full-window logits. */
Test(ppl, llamacpp_protocol_by_hand)
{
    char dir[512], tok_path[512];
    REQUIRE_SHARED(dir, "models/stories260K");
    REQUIRE_SHARED(tok_path, "models/stories260K/eval_tokens.json");
    llmq_model *m = llmq_model_load(dir);
    size_t n;
    int32_t *ids = load_tokens(tok_path, &n);
    const int ctx = 64, chunks = 3, vocab = m->cfg.vocab_size;
    llmq_ppl_opts o = {.ctx = ctx, .protocol = LLMQ_PPL_LLAMACPP, .max_chunks = chunks, .bos_id = 1};
    llmq_ppl_result res;
    cr_assert_eq(llmq_perplexity(m, ids, n, &o, &res), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_eq(res.tokens_scored, chunks * (ctx - 1 - ctx / 2));
    double nll = 0;
    float *logits = malloc((size_t)ctx * vocab * sizeof(float));
    for (int c = 0; c < chunks; c++) {
        int32_t w[64];
        memcpy(w, ids + c * ctx, sizeof w);
        w[0] = 1;
        cr_assert_eq(llmq_forward(m, w, ctx, logits), LLMQ_OK);
        for (int j = ctx / 2; j < ctx - 1; j++) nll += llmq_nll(logits + (size_t)j * vocab, vocab, ids[c * ctx + j + 1]);
    }
    nll /= res.tokens_scored;
    cr_assert_float_eq(res.nll, nll, 1e-6, "%.10f vs %.10f", res.nll, nll); /* head run in slices: float rounding differs slightly */
    free(logits);
    free(ids);
    llmq_model_free(m);
}

Test(ppl, kl_against_itself_is_zero)
{
    char dir[512], tok_path[512];
    REQUIRE_SHARED(dir, "models/stories260K");
    REQUIRE_SHARED(tok_path, "models/stories260K/eval_tokens.json");
    llmq_model *m = llmq_model_load(dir), *b = llmq_model_load(dir);
    size_t n;
    int32_t *ids = load_tokens(tok_path, &n);
    llmq_ppl_opts o = {.ctx = 128, .protocol = LLMQ_PPL_GPTQ, .max_chunks = 4, .bos_id = -1, .kl_base = b};
    llmq_ppl_result res;
    cr_assert_eq(llmq_perplexity(m, ids, n, &o, &res), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_lt(res.kld, 1e-9);
    cr_assert_eq(res.top1_agree, 1.0);
    cr_assert_float_eq(res.base_ppl, res.ppl, 1e-9);
    free(ids);
    llmq_model_free(m);
    llmq_model_free(b);
}

Test(ppl, too_few_tokens_is_an_error)
{
    char dir[512];
    REQUIRE_SHARED(dir, "models/stories260K");
    llmq_model *m = llmq_model_load(dir);
    int32_t ids[10] = {1, 2, 3};
    llmq_ppl_opts o = {.ctx = 16, .protocol = LLMQ_PPL_GPTQ, .bos_id = -1};
    llmq_ppl_result res;
    cr_assert_eq(llmq_perplexity(m, ids, 10, &o, &res), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "fewer than"), "%s", llmq_last_error());
    llmq_model_free(m);
}
