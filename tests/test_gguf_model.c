/* GGUF export/import of Llama-class models: the converter's q/k permutation,
 * the round trip export -> import -> forward for every type, the stories260K
 * f32 acceptance check, clean errors for incomplete files, and llama.cpp's
 * tokenizer test vocabularies read from their GGUF files. */
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/gguf.h"
#include "llmq/gguf_model.h"
#include "llmq/model.h"
#include "llmq/ppl.h"
#include "llmq/quantize.h"
#include "llmq/rtn.h"
#include "llmq/tokenizer.h"
#include "synth_model.h"
#include "test_util.h"

#include <jansson.h>
#include <math.h>

/* ------------------------------------------------------------ permutation */

Test(gguf_model, qk_permutation_matches_hand_computed_case)
{
    /* LlamaModel.permute(w, n_head=2) on 8 rows: reshape(2, 2, 2, ...).swapaxes(1, 2):
     * head 0 rows [r0 r1 | r2 r3] -> [r0 r2 r1 r3], head 1 likewise. */
    int32_t map[8];
    cr_assert_eq(llmq_gguf_qk_row_map(8, 2, map), LLMQ_OK);
    const int32_t want2[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    for (int i = 0; i < 8; i++) cr_expect_eq(map[i], want2[i], "n_head 2: row %d <- %d", i, map[i]);
    /* One head of 8: rotate_half pairs (i, i+4) become adjacent (2i, 2i+1). */
    cr_assert_eq(llmq_gguf_qk_row_map(8, 1, map), LLMQ_OK);
    const int32_t want1[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    for (int i = 0; i < 8; i++) cr_expect_eq(map[i], want1[i], "n_head 1: row %d <- %d", i, map[i]);
    /* Rows move whole: 3-byte rows stand for packed blocks. */
    unsigned char src[24], dst[24];
    for (int i = 0; i < 24; i++) src[i] = (unsigned char)i;
    llmq_gguf_permute_rows(dst, src, 8, 3, map);
    for (int r = 0; r < 8; r++)
        for (int b = 0; b < 3; b++) cr_expect_eq(dst[3 * r + b], 3 * want1[r] + b);
    cr_expect_eq(llmq_gguf_qk_row_map(6, 2, map), LLMQ_ERR, "odd head size must be refused");
    cr_expect_eq(llmq_gguf_qk_row_map(8, 3, map), LLMQ_ERR);
}

/* ------------------------------------------------------------ helpers */

static void tmp_path(char *buf, size_t n, const char *tag)
{
    char dir[256];
    test_tmpdir(dir, sizeof dir, tag);
    snprintf(buf, n, "%s/model.gguf", dir);
}

static void quantize_to(const llmq_model *m, const llmq_tokenizer *tok, const char *path, const char *type, int group,
                        llmq_quant_report *rep)
{
    llmq_quant_opts o;
    memset(&o, 0, sizeof o);
    cr_assert_eq(llmq_quant_scheme_parse(type, &o.policy.scheme), LLMQ_OK);
    o.policy.group_size = group;
    o.policy.keep_output = o.policy.keep_embed = -1;
    o.model_name = "test";
    cr_assert_eq(llmq_quantize_model(m, tok, path, &o, rep), LLMQ_OK, "%s: %s", type, llmq_last_error());
}

static double max_abs_diff(const float *a, const float *b, size_t n, double *max_abs)
{
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    if (max_abs) *max_abs = m;
    return d;
}

static double mean_nll(const float *logits, const int32_t *ids, int n, int vocab)
{
    double s = 0;
    for (int t = 0; t + 1 < n; t++) s += llmq_nll(logits + (size_t)t * vocab, vocab, ids[t + 1]);
    return s / (n - 1);
}

/* ------------------------------------------------------------ synthetic round trips */

/* The forward of m with attn_q/attn_k (and biases) taken as the file holds
 * them (llama.cpp's row order) and RoPE on adjacent pairs. */
static void forward_with_file_rows(const llmq_model *m, const char *path, const int32_t *ids, int n, float *logits)
{
    llmq_gguf *g = llmq_gguf_open(path);
    cr_assert_not_null(g, "%s", llmq_last_error());
    llmq_model view = *m;
    view.rope_interleaved = true;
    view.layers = malloc((size_t)m->cfg.n_layers * sizeof *view.layers);
    memcpy(view.layers, m->layers, (size_t)m->cfg.n_layers * sizeof *view.layers);
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = LLMQ_LIN_Q; k <= LLMQ_LIN_K; k++) {
            char name[96];
            llmq_gguf_layer_tensor_name(name, sizeof name, l, llmq_gguf_linear_name((llmq_linear)k), "weight");
            view.layers[l].lin[k].data = llmq_gguf_tensor_at(g, llmq_gguf_find_tensor(g, name))->data;
            if (!view.layers[l].bias[k].data) continue;
            llmq_gguf_layer_tensor_name(name, sizeof name, l, llmq_gguf_linear_name((llmq_linear)k), "bias");
            view.layers[l].bias[k].data = llmq_gguf_tensor_at(g, llmq_gguf_find_tensor(g, name))->data;
        }
    cr_assert_eq(llmq_forward(&view, ids, n, logits), LLMQ_OK, "%s", llmq_last_error());
    llmq_model_release_workspace(&view);
    free(view.layers);
    llmq_gguf_close(g);
}

/* The imported f32 file computes exactly what the source computes: the
 * loader undid the q/k permutation, so the forward is the same code on the
 * same numbers. The file's own (permuted) rows with adjacent RoPE pairs
 * agree up to the order of the q·k sums. */
static void f32_round_trip(const char *model_type, bool qkv_bias, bool tied)
{
    synth_spec s = {model_type, 2, 128, 4, 2, 256, 300, tied, qkv_bias, 99};
    llmq_model *src = synth_model(&s);
    llmq_tokenizer *tok = synth_tokenizer(280); /* shorter than the embedding: padded */
    char path[512];
    tmp_path(path, sizeof path, "gguf-f32");
    quantize_to(src, tok, path, "f32", 0, NULL);
    llmq_model *m = llmq_model_load(path);
    cr_assert_not_null(m, "%s", llmq_last_error());
    cr_expect_not(m->rope_interleaved);
    cr_expect_eq(m->cfg.qkv_bias, qkv_bias);
    cr_expect_eq(m->cfg.tie_word_embeddings, tied);
    cr_expect_eq(m->cfg.n_kv_heads, 2);
    cr_expect_eq(m->cfg.vocab_size, 300);
    int n = 40, V = 300;
    int32_t ids[40];
    synth_tokens(ids, n, V);
    float *a = malloc((size_t)n * V * sizeof *a), *b = malloc((size_t)n * V * sizeof *b);
    cr_assert_eq(llmq_forward(src, ids, n, a), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_eq(llmq_forward(m, ids, n, b), LLMQ_OK, "%s", llmq_last_error());
    double scale, d = max_abs_diff(b, a, (size_t)n * V, &scale);
    cr_log_info("%s: max |logit diff| %g (max |logit| %g)", model_type, d, scale);
    cr_expect_leq(d, 1e-5, "%s: logits differ by %g (max |logit| %g)", model_type, d, scale);
    if (!strcmp(model_type, "llama")) {
        forward_with_file_rows(m, path, ids, n, b);
        double di = max_abs_diff(b, a, (size_t)n * V, NULL);
        cr_log_info("%s: file rows, interleaved RoPE: max |logit diff| %g", model_type, di);
        cr_expect_gt(di, 0, "the file's rows must be in llama.cpp's order, not Hugging Face's");
        cr_expect_leq(di, 1e-5 * fmax(1, scale), "%s: interleaved forward differs by %g", model_type, di);
    }
    /* The vocabulary came along, padded to the embedding rows. */
    llmq_gguf *g = llmq_gguf_open(path);
    llmq_vocab v;
    cr_assert_eq(llmq_gguf_read_vocab(g, &v), LLMQ_OK, "%s", llmq_last_error());
    cr_expect_eq(v.n_tokens, 300);
    cr_expect_str_eq(v.tokens[290], "[PAD290]");
    cr_expect_eq(v.token_types[290], LLMQ_TOKEN_UNUSED);
    cr_expect_eq(v.bos_id, 1);
    llmq_vocab_free(&v);
    const char *arch;
    cr_assert_eq(llmq_gguf_get_str(g, "general.architecture", &arch, NULL), LLMQ_OK);
    cr_expect_str_eq(arch, !strcmp(model_type, "qwen2") ? "qwen2" : "llama");
    cr_expect_eq(llmq_gguf_find_tensor(g, "output.weight") < 0, tied);
    llmq_gguf_close(g);
    free(a);
    free(b);
    llmq_model_free(m);
    llmq_model_free(src);
    llmq_tokenizer_free(tok);
}

Test(gguf_model, f32_round_trip_llama_gqa) { f32_round_trip("llama", false, false); }
Test(gguf_model, f32_round_trip_llama_tied_with_qk_bias) { f32_round_trip("llama", true, true); }
Test(gguf_model, f32_round_trip_qwen2_keeps_row_order) { f32_round_trip("qwen2", true, false); }

/* A GGUF as the source of another GGUF: the loader's Hugging Face order goes
 * out permuted again, so an f32 -> f32 re-export repeats every tensor byte
 * (q/k rows and biases neither left unpermuted nor permuted twice). */
Test(gguf_model, requantizing_a_gguf_keeps_llamacpp_row_order)
{
    synth_spec s = {"llama", 2, 128, 4, 2, 256, 300, false, true, 5};
    llmq_model *src = synth_model(&s);
    llmq_tokenizer *tok = synth_tokenizer(300);
    char first[512], second[512];
    tmp_path(first, sizeof first, "gguf-requant-1");
    tmp_path(second, sizeof second, "gguf-requant-2");
    quantize_to(src, tok, first, "f32", 0, NULL);
    llmq_model *m = llmq_model_load(first);
    cr_assert_not_null(m, "%s", llmq_last_error());
    quantize_to(m, tok, second, "f32", 0, NULL);
    llmq_gguf *a = llmq_gguf_open(first), *b = llmq_gguf_open(second);
    cr_assert(a && b, "%s", llmq_last_error());
    cr_assert_eq(llmq_gguf_tensor_count(a), llmq_gguf_tensor_count(b));
    int qk = 0;
    for (int64_t i = 0; i < llmq_gguf_tensor_count(a); i++) {
        const llmq_gguf_tensor *ta = llmq_gguf_tensor_at(a, i);
        int64_t j = llmq_gguf_find_tensor(b, ta->name);
        cr_assert_geq(j, 0, "%s missing in the re-export", ta->name);
        const llmq_gguf_tensor *tb = llmq_gguf_tensor_at(b, j);
        cr_assert_eq(ta->size, tb->size, "%s", ta->name);
        cr_expect_eq(memcmp(ta->data, tb->data, ta->size), 0, "%s differs after re-export", ta->name);
        qk += strstr(ta->name, "attn_q") || strstr(ta->name, "attn_k");
    }
    cr_expect_eq(qk, 2 * 2 * 2, "q/k weights and biases of both layers were compared");
    llmq_gguf_close(a);
    llmq_gguf_close(b);
    llmq_model_free(m);
    llmq_model_free(src);
    llmq_tokenizer_free(tok);
}

/* Every --type: the file holds exactly the blocks RTN makes from the source
 * (q rows permuted, v rows not), the imported model holds them in the
 * source's row order again, and its logits are near the original's, closer
 * for more bits. */
Test(gguf_model, every_type_round_trips_through_export_import_forward)
{
    static const struct {
        const char *type;
        double max_rel;
    } types[] = {
        /* ‖logits − reference‖ / ‖reference‖ bounds, ~1.5× what RTN gives on this random model */
        {"q3_k", 0.4},   {"q4_0", 0.2},   {"q4_1", 0.2},   {"q4_k", 0.2},  {"q4_k_m", 0.2},
        {"q6_k", 0.06},  {"q8_0", 0.015}, {"f16", 0.001},  {"bf16", 0.006},
    };
    synth_spec s = {"llama", 2, 256, 4, 2, 512, 512, false, false, 7};
    llmq_model *src = synth_model(&s);
    llmq_tokenizer *tok = synth_tokenizer(512);
    int n = 48, V = 512;
    int32_t ids[48];
    synth_tokens(ids, n, V);
    float *ref = malloc((size_t)n * V * sizeof *ref), *got = malloc((size_t)n * V * sizeof *got);
    cr_assert_eq(llmq_forward(src, ids, n, ref), LLMQ_OK);
    double nll_ref = mean_nll(ref, ids, n, V);
    char dir[256];
    test_tmpdir(dir, sizeof dir, "gguf-types");
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s.gguf", dir, types[i].type);
        llmq_quant_report rep;
        quantize_to(src, tok, path, types[i].type, 128, &rep);
        llmq_model *m = llmq_model_load(path);
        cr_assert_not_null(m, "%s: %s", types[i].type, llmq_last_error());
        llmq_quant_scheme sch;
        llmq_quant_scheme_parse(types[i].type, &sch);
        cr_expect_eq(m->layers[0].lin[LLMQ_LIN_Q].type, sch.base, "%s: attn_q type", types[i].type);
        /* Bytes of q (permuted in the file) and v (as is) against a direct RTN of the source. */
        llmq_gguf *g = llmq_gguf_open(path);
        cr_assert_not_null(g, "%s", llmq_last_error());
        for (int k = 0; k <= LLMQ_LIN_V; k += LLMQ_LIN_V) {
            const llmq_weight *sw = &src->layers[0].lin[k], *qw = &m->layers[0].lin[k];
            char name[96];
            llmq_gguf_layer_tensor_name(name, sizeof name, 0, llmq_gguf_linear_name((llmq_linear)k), "weight");
            const void *in_file = llmq_gguf_tensor_at(g, llmq_gguf_find_tensor(g, name))->data;
            size_t row_bytes = llmq_row_size(qw->type, sw->cols);
            unsigned char *want = malloc(row_bytes * sw->rows), *perm = malloc(row_bytes * sw->rows);
            int group = llmq_type_get(qw->type)->is_quantized ? 128 : 0;
            cr_assert_eq(llmq_quantize_rows(qw->type, sw->data, sw->rows, sw->cols, group, false, want), LLMQ_OK);
            const void *expect = want;
            if (k == LLMQ_LIN_Q) {
                int32_t map[256];
                llmq_gguf_qk_row_map(sw->rows, 4, map);
                llmq_gguf_permute_rows(perm, want, sw->rows, row_bytes, map);
                expect = perm;
            }
            cr_expect_eq(memcmp(in_file, expect, row_bytes * sw->rows), 0, "%s: %s bytes in the file differ",
                         types[i].type, llmq_linear_names[k]);
            cr_expect_eq(memcmp(qw->data, want, row_bytes * sw->rows), 0, "%s: %s bytes loaded differ",
                         types[i].type, llmq_linear_names[k]);
            free(want);
            free(perm);
        }
        llmq_gguf_close(g);
        cr_assert_eq(llmq_forward(m, ids, n, got), LLMQ_OK, "%s", llmq_last_error());
        double rel = llmq_rel_error(ref, got, (size_t)n * V);
        cr_log_info("%s: logits rel error %g, nll %g vs %g", types[i].type, rel, mean_nll(got, ids, n, V), nll_ref);
        cr_expect_leq(rel, types[i].max_rel, "%s: logits moved by %g (relative)", types[i].type, rel);
        cr_expect_gt(rep.n_tensors, 0);
        for (int t = 0; t < rep.n_tensors; t++)
            if (strstr(rep.tensors[t].name, "attn_q"))
                cr_expect_lt(rep.tensors[t].rel_error, 0.2, "%s %s error %g", types[i].type, rep.tensors[t].name,
                             rep.tensors[t].rel_error);
        llmq_quant_report_free(&rep);
        llmq_model_free(m);
    }
    free(ref);
    free(got);
    llmq_model_free(src);
    llmq_tokenizer_free(tok);
}

/* ------------------------------------------------------------ stories260K acceptance */

static int32_t *load_ids(const char *path, size_t max, size_t *n)
{
    json_error_t e;
    json_t *arr = json_load_file(path, 0, &e);
    cr_assert_not_null(arr, "%s: %s", path, e.text);
    *n = json_array_size(arr) < max ? json_array_size(arr) : max;
    int32_t *ids = malloc(*n * sizeof *ids);
    for (size_t i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    json_decref(arr);
    return ids;
}

Test(gguf_model, stories260k_f32_gguf_matches_safetensors)
{
    char dir[512], tokens_path[512], path[512];
    REQUIRE_SHARED(dir, "models/stories260K");
    REQUIRE_SHARED(tokens_path, "models/stories260K/eval_tokens.json");
    llmq_model *src = llmq_model_load(dir);
    cr_assert_not_null(src, "%s", llmq_last_error());
    llmq_tokenizer *tok = llmq_tokenizer_load(dir);
    cr_assert_not_null(tok, "%s", llmq_last_error());
    tmp_path(path, sizeof path, "gguf-260k");
    quantize_to(src, tok, path, "f32", 0, NULL);
    llmq_model *m = llmq_model_load(path);
    cr_assert_not_null(m, "%s", llmq_last_error());
    size_t n_ids;
    int32_t *ids = load_ids(tokens_path, 1024, &n_ids);
    int n = 256, V = src->cfg.vocab_size;
    float *a = malloc((size_t)n * V * sizeof *a), *b = malloc((size_t)n * V * sizeof *b);
    cr_assert_eq(llmq_forward(src, ids, n, a), LLMQ_OK);
    cr_assert_eq(llmq_forward(m, ids, n, b), LLMQ_OK);
    /* The loader undid the q/k permutation: same forward, same numbers. */
    double scale, d = max_abs_diff(b, a, (size_t)n * V, &scale);
    cr_log_info("stories260K: max |logit diff| %g (max |logit| %g)", d, scale);
    cr_expect_leq(d, 1e-5, "logits differ by %g (max |logit| %g)", d, scale);
    llmq_ppl_opts o = {.ctx = 256, .protocol = LLMQ_PPL_GPTQ, .bos_id = -1, .kl_base = src};
    llmq_ppl_result r;
    cr_assert_eq(llmq_perplexity(m, ids, n_ids, &o, &r), LLMQ_OK, "%s", llmq_last_error());
    cr_log_info("stories260K: KL %g, top-1 %g, ppl %.9g vs %.9g", r.kld, r.top1_agree, r.ppl, r.base_ppl);
    cr_expect_lt(r.kld, 1e-6, "KL %g", r.kld);
    cr_expect_eq(r.top1_agree, 1.0, "top-1 agreement %g", r.top1_agree);
    cr_expect_leq(fabs(r.ppl - r.base_ppl), 1e-6 * r.base_ppl);
    /* The GGUF carries the tokenizer: same ids as tokenizer.json. */
    llmq_tokenizer *gt = llmq_tokenizer_load_gguf(path);
    cr_assert_not_null(gt, "%s", llmq_last_error());
    static const char text[] = "Once upon a time, there was a little girl named Lily. She liked to play!";
    int32_t *x, *y;
    size_t nx, ny;
    cr_assert_eq(llmq_tokenizer_encode(tok, text, sizeof text - 1, 1, &x, &nx), LLMQ_OK);
    cr_assert_eq(llmq_tokenizer_encode(gt, text, sizeof text - 1, 1, &y, &ny), LLMQ_OK);
    cr_expect_eq(nx, ny);
    cr_expect_eq(memcmp(x, y, nx * sizeof *x), 0);
    free(x);
    free(y);
    llmq_tokenizer_free(gt);
    free(ids);
    free(a);
    free(b);
    llmq_model_free(m);
    llmq_model_free(src);
    llmq_tokenizer_free(tok);
}

Test(gguf_model, stories_7m_q4_k_m_has_llamacpp_mix_and_stays_close)
{
    char dir[512], tokens_path[512], path[512];
    REQUIRE_SHARED(dir, "models/stories-llama-7m");
    REQUIRE_SHARED(tokens_path, "models/stories-llama-7m/eval_tokens.json");
    llmq_model *src = llmq_model_load(dir);
    cr_assert_not_null(src, "%s", llmq_last_error());
    llmq_tokenizer *tok = llmq_tokenizer_load(dir);
    tmp_path(path, sizeof path, "gguf-7m");
    quantize_to(src, tok, path, "q4_k_m", 128, NULL);
    llmq_model *m = llmq_model_load(path);
    cr_assert_not_null(m, "%s", llmq_last_error());
    for (int l = 0; l < 6; l++) {
        llmq_type want = (l == 2 || l == 5) ? LLMQ_TYPE_Q6_K : LLMQ_TYPE_Q4_K; /* use_more_bits(l, 6) */
        cr_expect_eq(m->layers[l].lin[LLMQ_LIN_V].type, want, "layer %d attn_v", l);
        cr_expect_eq(m->layers[l].lin[LLMQ_LIN_DOWN].type, want, "layer %d ffn_down", l);
        cr_expect_eq(m->layers[l].lin[LLMQ_LIN_Q].type, LLMQ_TYPE_Q4_K);
    }
    cr_expect_eq(m->lm_head.type, LLMQ_TYPE_Q6_K);
    cr_expect_eq(m->embed.type, LLMQ_TYPE_Q4_K);
    size_t n_ids;
    int32_t *ids = load_ids(tokens_path, 1024, &n_ids);
    llmq_ppl_opts o = {.ctx = 512, .protocol = LLMQ_PPL_LLAMACPP, .bos_id = 1, .kl_base = src};
    llmq_ppl_result r;
    cr_assert_eq(llmq_perplexity(m, ids, n_ids, &o, &r), LLMQ_OK, "%s", llmq_last_error());
    cr_expect_lt(r.kld, 0.01, "KL %g", r.kld);
    cr_expect_gt(r.top1_agree, 0.9);
    cr_expect_lt(fabs(r.ppl / r.base_ppl - 1), 0.02, "ppl %g vs %g", r.ppl, r.base_ppl);
    free(ids);
    llmq_model_free(m);
    llmq_model_free(src);
    llmq_tokenizer_free(tok);
}

/* ------------------------------------------------------------ incomplete files */

/* A minimal llama GGUF with one kv left out (skip) or one tensor left out. */
static void write_partial(const char *path, const char *skip_key, const char *skip_tensor)
{
    llmq_gguf_writer *w = llmq_gguf_writer_new(path);
    cr_assert_not_null(w);
    const char *keys[] = {"llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
                          "llama.attention.head_count", "llama.context_length"};
    const uint32_t vals[] = {1, 32, 64, 4, 128};
    if (!skip_key || strcmp(skip_key, "general.architecture")) llmq_gguf_writer_add_str(w, "general.architecture", "llama");
    for (int i = 0; i < 5; i++)
        if (!skip_key || strcmp(skip_key, keys[i])) llmq_gguf_writer_add_u32(w, keys[i], vals[i]);
    if (!skip_key || strcmp(skip_key, "llama.attention.layer_norm_rms_epsilon"))
        llmq_gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    struct {
        const char *name;
        int n_dims;
        int64_t ne[2];
    } t[] = {{"token_embd.weight", 2, {32, 16}},     {"output_norm.weight", 1, {32, 1}},
             {"blk.0.attn_norm.weight", 1, {32, 1}}, {"blk.0.ffn_norm.weight", 1, {32, 1}},
             {"blk.0.attn_q.weight", 2, {32, 32}},   {"blk.0.attn_k.weight", 2, {32, 32}},
             {"blk.0.attn_v.weight", 2, {32, 32}},   {"blk.0.attn_output.weight", 2, {32, 32}},
             {"blk.0.ffn_gate.weight", 2, {32, 64}}, {"blk.0.ffn_up.weight", 2, {32, 64}},
             {"blk.0.ffn_down.weight", 2, {64, 32}}};
    size_t nt = sizeof t / sizeof t[0];
    for (size_t i = 0; i < nt; i++)
        if (!skip_tensor || strcmp(skip_tensor, t[i].name))
            cr_assert_eq(llmq_gguf_writer_add_tensor(w, t[i].name, LLMQ_TYPE_F32, t[i].n_dims, t[i].ne), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_begin(w), LLMQ_OK, "%s", llmq_last_error());
    static float zeros[64 * 32];
    for (size_t i = 0; i < nt; i++)
        if (!skip_tensor || strcmp(skip_tensor, t[i].name))
            cr_assert_eq(llmq_gguf_writer_write_tensor(w, t[i].name, zeros, (size_t)(t[i].ne[0] * t[i].ne[1]) * 4), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_finish(w), LLMQ_OK, "%s", llmq_last_error());
}

Test(gguf_model, missing_keys_and_tensors_give_clean_errors)
{
    char path[512];
    tmp_path(path, sizeof path, "gguf-partial");
    write_partial(path, NULL, NULL);
    llmq_model *m = llmq_model_load(path);
    cr_assert_not_null(m, "the complete file loads: %s", llmq_last_error());
    cr_expect_eq(m->cfg.head_dim, 8);
    cr_expect(m->cfg.tie_word_embeddings);
    llmq_model_free(m);
    const char *keys[] = {"general.architecture", "llama.block_count", "llama.embedding_length",
                          "llama.feed_forward_length", "llama.attention.head_count", "llama.context_length",
                          "llama.attention.layer_norm_rms_epsilon"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        write_partial(path, keys[i], NULL);
        cr_expect_null(llmq_model_load(path), "%s missing but loaded", keys[i]);
        cr_expect(strstr(llmq_last_error(), keys[i]) && strstr(llmq_last_error(), path), "%s: '%s'", keys[i],
                  llmq_last_error());
    }
    const char *tensors[] = {"token_embd.weight", "blk.0.ffn_down.weight", "blk.0.attn_norm.weight"};
    for (size_t i = 0; i < sizeof tensors / sizeof tensors[0]; i++) {
        write_partial(path, NULL, tensors[i]);
        cr_expect_null(llmq_model_load(path), "%s missing but loaded", tensors[i]);
        cr_expect(strstr(llmq_last_error(), tensors[i]), "%s: '%s'", tensors[i], llmq_last_error());
    }
    /* A file without a vocabulary loads as a model but has no tokenizer. */
    cr_expect_null(llmq_tokenizer_load_gguf(path));
    cr_expect(strstr(llmq_last_error(), "tokenizer.ggml.model"), "%s", llmq_last_error());
}

/* ------------------------------------------------------------ llama.cpp vocab tests */

/* llama.cpp's test strings against its own vocab files (tokenizer from the GGUF). */
static void check_vocab(const char *name)
{
    char rel[256], gguf[512];
    snprintf(rel, sizeof rel, "tokenizers/llamacpp-vocab-tests/ggml-vocab-%s.gguf", name);
    REQUIRE_SHARED(gguf, rel);
    llmq_tokenizer *tok = llmq_tokenizer_load_gguf(gguf);
    cr_assert_not_null(tok, "%s: %s", name, llmq_last_error());
    test_llamacpp_vocab_strings(tok, name);
    llmq_tokenizer_free(tok);
}

Test(gguf_vocab, llama_spm) { check_vocab("llama-spm"); }
Test(gguf_vocab, phi_3) { check_vocab("phi-3"); }
Test(gguf_vocab, gpt_2) { check_vocab("gpt-2"); }

/* Vocabularies the tokenizer does not implement: a clean, named refusal. */
Test(gguf_vocab, unsupported_vocabularies_are_refused_cleanly)
{
    static const char *const names[] = {"bert-bge", "deepseek-coder", "deepseek-llm", "falcon",
                                        "mpt",      "refact",         "starcoder"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char rel[256], path[512];
        snprintf(rel, sizeof rel, "tokenizers/llamacpp-vocab-tests/ggml-vocab-%s.gguf", names[i]);
        REQUIRE_SHARED(path, rel);
        llmq_tokenizer *tok = llmq_tokenizer_load_gguf(path);
        cr_expect_null(tok, "%s: unexpectedly supported (move it to the tested list)", names[i]);
        cr_expect(strstr(llmq_last_error(), "unsupported"), "%s: '%s'", names[i], llmq_last_error());
        llmq_tokenizer_free(tok);
    }
}

/* ------------------------------------------------------------------ Phi-3 */

#include "llmq/synth.h"

/* The Phi-3 checkpoint in dir loaded, and written as an f32 GGUF at path (dir/f32.gguf). */
static llmq_model *phi3_f32_gguf(const char *dir, char *path, size_t cap)
{
    llmq_model *hf = llmq_model_load(dir);
    llmq_tokenizer *tok = llmq_tokenizer_load(dir);
    cr_assert(hf && tok, "%s", llmq_last_error());
    snprintf(path, cap, "%s/f32.gguf", dir);
    llmq_quant_opts qo = {0};
    cr_assert_eq(llmq_quant_scheme_parse("f32", &qo.policy.scheme), LLMQ_OK);
    cr_assert_eq(llmq_quantize_model(hf, tok, path, &qo, NULL), LLMQ_OK, "%s", llmq_last_error());
    llmq_tokenizer_free(tok);
    return hf;
}

/* How the stacked file takes tensor `name` of llmq's: as it is (name), not at all
 * (NULL: attn_k and attn_v go into the stack) or as attn_qkv (its name in buf). */
static const char *as_stacked(const char *name, char *buf, size_t cap)
{
    if (strstr(name, ".attn_k.") || strstr(name, ".attn_v.")) return NULL;
    const char *q = strstr(name, ".attn_q.");
    if (!q) return name;
    snprintf(buf, cap, "%.*s.attn_qkv.weight", (int)(q - name), name);
    return buf;
}

/* Phi-3's GGUF as llama.cpp's converter writes it: q, k, v stacked in one
 * attn_qkv and gate, up in one ffn_up. llmq writes q, k, v apart (llama.cpp
 * reads both) but must read the stacked form: a file rebuilt from llmq's own
 * with attn_qkv gives the same logits as it and as the safetensors. */
Test(gguf_model, phi3_stacked_attn_qkv_and_ffn_up_read_as_views)
{
    char dir[256], path[512], fused[512];
    test_synth_write(dir, sizeof dir, "phi3-gguf", "phi3", 2, 40000, 20000);
    llmq_model *hf = phi3_f32_gguf(dir, path, sizeof path);
    cr_assert(hf->cfg.fused_linears);

    llmq_gguf *g = llmq_gguf_open(path);
    cr_assert_not_null(g, "%s", llmq_last_error());
    cr_assert(llmq_gguf_find_tensor(g, "blk.0.ffn_gate.weight") < 0 && llmq_gguf_find_tensor(g, "blk.0.ffn_up.weight") >= 0,
              "gate must be stacked into ffn_up");
    snprintf(fused, sizeof fused, "%s/fused.gguf", dir);
    llmq_gguf_writer *w = llmq_gguf_writer_new(fused);
    cr_assert_eq(llmq_gguf_write_model_kv(w, &hf->cfg, "phi3-test", 0), LLMQ_OK, "%s", llmq_last_error());
    const int64_t n = llmq_gguf_tensor_count(g);
    const int d = hf->cfg.hidden_size, qkv_rows = hf->cfg.n_heads * hf->cfg.head_dim + 2 * hf->cfg.n_kv_heads * hf->cfg.head_dim;
    char name[128];
    for (int64_t i = 0; i < n; i++) {
        const llmq_gguf_tensor *t = llmq_gguf_tensor_at(g, i);
        const char *as = as_stacked(t->name, name, sizeof name);
        if (as == name) cr_assert_eq(llmq_gguf_writer_add_tensor(w, name, LLMQ_TYPE_F32, 2, (int64_t[]){d, qkv_rows}), LLMQ_OK);
        else if (as) cr_assert_eq(llmq_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne), LLMQ_OK, "%s", llmq_last_error());
    }
    cr_assert_eq(llmq_gguf_writer_begin(w), LLMQ_OK, "%s", llmq_last_error());
    for (int64_t i = 0; i < n; i++) {
        const llmq_gguf_tensor *t = llmq_gguf_tensor_at(g, i);
        const char *as = as_stacked(t->name, name, sizeof name);
        if (!as) continue;
        if (as == name) {
            /* attn_q, attn_k, attn_v follow each other in llmq's file: their bytes are the stack */
            float *stack = malloc(sizeof(float) * (size_t)qkv_rows * d);
            size_t off = 0;
            for (int p = 0; p < 3; p++) {
                const llmq_gguf_tensor *part = llmq_gguf_tensor_at(g, i + p);
                memcpy((char *)stack + off, part->data, part->size);
                off += part->size;
            }
            cr_assert_eq(off, sizeof(float) * (size_t)qkv_rows * d);
            cr_assert_eq(llmq_gguf_writer_write_tensor(w, name, stack, off), LLMQ_OK, "%s", llmq_last_error());
            free(stack);
            continue;
        }
        cr_assert_eq(llmq_gguf_writer_write_tensor(w, t->name, t->data, t->size), LLMQ_OK, "%s", llmq_last_error());
    }
    cr_assert_eq(llmq_gguf_writer_finish(w), LLMQ_OK, "%s", llmq_last_error());
    llmq_gguf_close(g);

    llmq_model *a = llmq_model_load(path), *b = llmq_model_load(fused);
    cr_assert(a && b, "%s", llmq_last_error());
    const int T = 48, vocab = hf->cfg.vocab_size;
    int32_t ids[48];
    for (int i = 0; i < T; i++) ids[i] = (i * 29 + 3) % vocab;
    float *la = malloc(sizeof(float) * T * vocab), *lb = malloc(sizeof(float) * T * vocab), *lh = malloc(sizeof(float) * T * vocab);
    cr_assert_eq(llmq_forward(hf, ids, T, lh), LLMQ_OK);
    cr_assert_eq(llmq_forward(a, ids, T, la), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_eq(llmq_forward(b, ids, T, lb), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_arr_eq(la, lb, sizeof(float) * T * vocab, "the stacked file reads differently");
    cr_assert_arr_eq(la, lh, sizeof(float) * T * vocab, "the GGUF differs from the safetensors");
    free(la); free(lb); free(lh);
    llmq_model_free(a);
    llmq_model_free(b);
    llmq_model_free(hf);
}

/* Phi-3.5 / Phi-4-mini: LongRoPE factors and partial rotary. The demo as Phi-3
 * with rope_scaling longrope (original context 256 of 512) and
 * partial_rotary_factor 0.5: a pass over more than 256 tokens uses the long
 * factors (cos/sin × √(1 + ln 2 / ln 256)), a shorter one the short factors;
 * the GGUF (rope_factors_long/short, rope.dimension_count, the attn factor)
 * reads back to the same logits for both. */
Test(gguf_model, phi3_longrope_and_partial_rotary)
{
    char dir[256], path[512];
    test_synth_write(dir, sizeof dir, "phi3-longrope", "phi3", 2, 40000, 20000);
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    json_t *cfg = json_load_file(path, 0, &je);
    cr_assert_not_null(cfg);
    const int half = 64 / 2 / 2; /* head_dim 64, half of it turned */
    json_t *lf = json_array(), *sf = json_array();
    for (int i = 0; i < half; i++) {
        json_array_append_new(lf, json_real(1.0 + 0.5 * i));
        json_array_append_new(sf, json_real(1.0 + 0.05 * i));
    }
    json_object_set_new(cfg, "rope_scaling", json_pack("{s:s, s:o, s:o}", "type", "longrope", "long_factor", lf, "short_factor", sf));
    json_object_set_new(cfg, "original_max_position_embeddings", json_integer(256));
    json_object_set_new(cfg, "partial_rotary_factor", json_real(0.5));
    cr_assert_eq(json_dump_file(cfg, path, 0), 0);
    json_decref(cfg);

    llmq_model *hf = phi3_f32_gguf(dir, path, sizeof path);
    cr_assert_eq(hf->cfg.rope_scaling, LLMQ_ROPE_SCALING_LONGROPE);
    cr_assert_eq(hf->cfg.rope_dim, 32);
    cr_assert_float_eq(hf->cfg.rope_attn_factor, (float)sqrt(1 + log(2.0) / log(256.0)), 1e-6);
    llmq_model *g = llmq_model_load(path);
    cr_assert_not_null(g, "%s", llmq_last_error());
    cr_assert(g->cfg.rope_scaling == LLMQ_ROPE_SCALING_LONGROPE && g->cfg.rope_dim == 32 && g->cfg.n_rope_factors == half);
    cr_assert_float_eq(g->cfg.rope_attn_factor, hf->cfg.rope_attn_factor, 1e-7);

    const int vocab = hf->cfg.vocab_size, n_short = 200, n_long = 300;
    int32_t ids[300];
    for (int i = 0; i < n_long; i++) ids[i] = (i * 31 + 7) % vocab;
    float *a = malloc(sizeof(float) * n_long * vocab), *b = malloc(sizeof(float) * n_long * vocab);
    for (int pass = 0; pass < 2; pass++) {
        const int n = pass ? n_long : n_short;
        cr_assert_eq(llmq_forward(hf, ids, n, a), LLMQ_OK);
        cr_assert_eq(llmq_forward(g, ids, n, b), LLMQ_OK, "%s", llmq_last_error());
        cr_assert_arr_eq(a, b, sizeof(float) * n * vocab, "%d tokens: the GGUF reads other rope factors", n);
    }
    /* the first 200 positions' attention (layer 0): short factors over 200 tokens, long ones over 300 */
    const int d = hf->cfg.hidden_size, qd = hf->cfg.n_heads * hf->cfg.head_dim;
    float *x = malloc(sizeof(float) * n_long * d), *xn = malloc(sizeof(float) * n_long * d);
    float *s = malloc(sizeof(float) * n_long * qd), *l = malloc(sizeof(float) * n_long * qd);
    cr_assert_eq(llmq_embed(hf, ids, n_long, x), LLMQ_OK);
    llmq_rmsnorm(xn, x, hf->layers[0].attn_norm.data, n_long, d, hf->cfg.rms_norm_eps);
    cr_assert_eq(llmq_attention_mix(hf, &hf->layers[0], 0, xn, n_short, s), LLMQ_OK);
    cr_assert_eq(llmq_attention_mix(hf, &hf->layers[0], 0, xn, n_long, l), LLMQ_OK);
    double diff = 0, scale = 0;
    for (int i = 0; i < n_short * qd; i++) diff = fmax(diff, fabs(s[i] - l[i])), scale = fmax(scale, fabs(s[i]));
    cr_assert_gt(diff, 1e-3 * scale, "a pass past the original context must take the long factors (%g of %g)", diff, scale);
    free(x); free(xn); free(l);
    free(a); free(b); free(s);
    llmq_model_free(g);
    llmq_model_free(hf);
}
