#include "llmq/config.h"
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/model.h"
#include "llmq/ppl.h"
#include "llmq/safetensors.h"
#include "llmq/synth.h"
#include "llmq/tokenizer.h"
#include "test_util.h"

#include <math.h>
#include <omp.h>

static char dir[256];
static llmq_synth_opts opts;

static void make_model(void)
{
    test_tmpdir(dir, sizeof dir, "synth");
    llmq_synth_defaults(&opts);
    opts.calib_bytes = 150000;
    opts.eval_bytes = 40000;
    cr_assert_eq(llmq_synth_write(dir, &opts), LLMQ_OK, "%s", llmq_last_error());
}

/* The ids of file `name` in d, BOS/EOS added as the tokenizer adds them. */
static int32_t *text_ids(const llmq_tokenizer *tok, const char *d, const char *name, size_t *n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", d, name);
    size_t len;
    char *text = llmq_read_file(path, 0, &len);
    cr_assert_not_null(text, "%s", llmq_last_error());
    int32_t *ids;
    cr_assert_eq(llmq_tokenizer_encode(tok, text, len, 1, &ids, n), LLMQ_OK, "%s", llmq_last_error());
    free(text);
    return ids;
}

/* A bigram model of the grammar: perplexity far below any vocabulary's (windows of 128). */
static void assert_bigram_ppl(const llmq_model *m, const int32_t *ids, size_t n, int max_chunks)
{
    llmq_ppl_opts o = {.ctx = 128, .protocol = LLMQ_PPL_GPTQ, .max_chunks = max_chunks, .bos_id = -1};
    llmq_ppl_result r;
    cr_assert_eq(llmq_perplexity(m, ids, n, &o, &r), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_lt(r.ppl, 8.0, "ppl %.3f", r.ppl);
    cr_assert_gt(r.ppl, 2.0, "ppl %.3f", r.ppl);
}

Test(synth, deterministic_bytes)
{
    make_model();
    char other[300], a[512], b[512];
    snprintf(other, sizeof other, "%s/again", dir);
    cr_assert_eq(llmq_synth_write(other, &opts), LLMQ_OK, "%s", llmq_last_error());
    const char *files[] = {"model.safetensors", "tokenizer.json", "config.json", "eval.txt"};
    for (int i = 0; i < 4; i++) {
        snprintf(a, sizeof a, "%s/%s", dir, files[i]);
        snprintf(b, sizeof b, "%s/%s", other, files[i]);
        size_t na, nb;
        char *x = llmq_read_file(a, 0, &na), *y = llmq_read_file(b, 0, &nb);
        cr_assert(x && y && na == nb && !memcmp(x, y, na), "%s differs between two runs", files[i]);
        free(x);
        free(y);
    }
}

typedef struct {
    double sum[256];
    int64_t n;
} abs_mean;

static void collect(void *user, int layer, llmq_linear which, const float *x, int n, int in)
{
    abs_mean *m = user;
    if (layer != 0 || which != LLMQ_LIN_Q) return;
    for (int t = 0; t < n; t++)
        for (int i = 0; i < in && i < 256; i++) m->sum[i] += fabsf(x[(size_t)t * in + i]);
    m->n += n;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

Test(synth, models_its_text_and_plants_outliers)
{
    make_model();
    llmq_model *m = llmq_model_load(dir);
    cr_assert_not_null(m, "%s", llmq_last_error());
    cr_assert_eq(m->cfg.hidden_size % 128, 0);
    cr_assert_eq(m->cfg.intermediate_size % 128, 0);
    cr_assert_eq(m->embed.type, LLMQ_TYPE_BF16);
    llmq_tokenizer *tok = llmq_tokenizer_load(dir);
    cr_assert_not_null(tok, "%s", llmq_last_error());
    cr_assert_eq(llmq_tokenizer_vocab_size(tok), m->cfg.vocab_size);
    size_t n;
    int32_t *ids = text_ids(tok, dir, "eval.txt", &n);
    assert_bigram_ppl(m, ids, n, 20); /* far below the uniform 512 */

    /* The planted channels dominate mean |x| at the q_proj input. */
    abs_mean am = {0};
    float *x = malloc((size_t)128 * m->cfg.hidden_size * sizeof(float));
    cr_assert_eq(llmq_embed(m, ids, 128, x), LLMQ_OK);
    cr_assert_eq(llmq_layer_forward(m, &m->layers[0], 0, x, 128, collect, &am), LLMQ_OK);
    double sorted[256];
    for (int i = 0; i < 256; i++) sorted[i] = am.sum[i] / (double)am.n;
    qsort(sorted, 256, sizeof(double), cmp_double);
    double median = sorted[128];
    for (int k = 0; k < opts.n_outliers; k++) {
        int c = llmq_synth_outlier_channel(k, 256);
        double v = am.sum[c] / (double)am.n;
        cr_assert_gt(v, 8 * median, "channel %d: mean |x| %.3f vs median %.3f", c, v, median);
    }
    free(x);
    free(ids);
    llmq_tokenizer_free(tok);
    llmq_model_free(m);
}

/* ------------------------------------------------------------------ shapes */

/* The real checkpoints' config.json values, written out here independently of
 * src/model/synth.c. */
static const struct {
    const char *name, *arch;
    int hidden, ffn, layers, heads, kv_heads, vocab, max_pos;
    double theta;
    float eps;
    bool llama3, bias, qk_norm;
    int experts, experts_used, expert_ffn;
} real[] = {
    {"llama2-7b", "LlamaForCausalLM", 4096, 11008, 32, 32, 32, 32000, 4096, 10000.0, 1e-5f, false, false, false, 0, 0, 0},
    {"llama3-8b", "LlamaForCausalLM", 4096, 14336, 32, 32, 8, 128256, 131072, 500000.0, 1e-5f, true, false, false, 0, 0, 0},
    {"qwen2.5-7b", "Qwen2ForCausalLM", 3584, 18944, 28, 28, 4, 152064, 131072, 1000000.0, 1e-6f, false, true, false, 0, 0, 0},
    {"qwen3-8b", "Qwen3ForCausalLM", 4096, 12288, 36, 32, 8, 151936, 40960, 1000000.0, 1e-6f, false, false, true, 0, 0, 0},
    {"qwen3-32b", "Qwen3ForCausalLM", 5120, 25600, 64, 64, 8, 151936, 40960, 1000000.0, 1e-6f, false, false, true, 0, 0, 0},
    {"llama3-70b", "LlamaForCausalLM", 8192, 28672, 80, 64, 8, 128256, 131072, 500000.0, 1e-5f, true, false, false, 0, 0, 0},
    {"qwen3-30b-a3b", "Qwen3MoeForCausalLM", 2048, 6144, 48, 32, 4, 151936, 40960, 1000000.0, 1e-6f, false, false, true, 128, 8, 768},
};
#define N_REAL (sizeof real / sizeof real[0])

Test(synth, shape_configs_load_with_the_real_dims)
{
    cr_assert_null(llmq_synth_shape_at(N_REAL), "a shape this test does not know");
    for (size_t i = 0; i < N_REAL; i++) {
        const llmq_synth_shape *s = llmq_synth_shape_find(real[i].name);
        cr_assert_not_null(s, "%s", llmq_last_error());
        cr_assert_eq(s, llmq_synth_shape_at(i));
        cr_assert_eq(s->n_layers, real[i].layers);
        for (int layers = 1; layers <= real[i].layers; layers += real[i].layers - 1) {
            char *text = llmq_synth_shape_config(s, layers);
            cr_assert_not_null(text, "%s", llmq_last_error());
            llmq_config c;
            cr_assert_eq(llmq_config_parse(text, strlen(text), real[i].name, &c), LLMQ_OK, "%s", llmq_last_error());
            cr_assert_str_eq(c.architecture, real[i].arch);
            cr_assert_eq(c.hidden_size, real[i].hidden, "%s", real[i].name);
            cr_assert_eq(c.intermediate_size, real[i].ffn, "%s", real[i].name);
            cr_assert_eq(c.n_layers, layers);
            cr_assert_eq(c.n_heads, real[i].heads);
            cr_assert_eq(c.n_kv_heads, real[i].kv_heads);
            cr_assert_eq(c.head_dim, 128);
            cr_assert_eq(c.vocab_size, real[i].vocab);
            cr_assert_eq(c.max_position_embeddings, real[i].max_pos);
            cr_assert_eq(c.rope_theta, real[i].theta);
            cr_assert_eq(c.rms_norm_eps, real[i].eps);
            cr_assert_eq(c.qkv_bias, real[i].bias);
            cr_assert_eq(c.qk_norm, real[i].qk_norm);
            cr_assert_not(c.o_bias || c.mlp_bias || c.tie_word_embeddings);
            cr_assert_eq(c.bos_token_id, 1); /* the 512-token tokenizer's */
            cr_assert_eq(c.eos_token_id, 2);
            if (real[i].llama3) {
                cr_assert_eq(c.rope_scaling, LLMQ_ROPE_SCALING_LLAMA3);
                cr_assert_eq(c.rope_factor, 8.0);
                cr_assert_eq(c.rope_low_freq_factor, 1.0);
                cr_assert_eq(c.rope_high_freq_factor, 4.0);
                cr_assert_eq(c.rope_original_max_position, 8192);
                cr_assert(strstr(text, "\"rope_type\": \"llama3\""), "%s", text);
            } else {
                cr_assert_eq(c.rope_scaling, LLMQ_ROPE_SCALING_NONE);
                cr_assert(strstr(text, "\"rope_scaling\": null"), "%s", text);
            }
            cr_assert_eq(c.n_experts, real[i].experts, "%s", real[i].name);
            cr_assert_eq(c.n_experts_used, real[i].experts_used);
            if (real[i].experts) cr_assert_eq(c.expert_ffn, real[i].expert_ffn);
            cr_assert(strstr(text, real[i].bias      ? "\"model_type\": \"qwen2\""
                                   : real[i].experts ? "\"model_type\": \"qwen3_moe\""
                                   : real[i].qk_norm ? "\"model_type\": \"qwen3\""
                                                     : "\"model_type\": \"llama\""),
                      "%s", text);
            free(text);
        }
    }
    cr_assert_null(llmq_synth_shape_find("llama2-13b"));
    cr_assert(strstr(llmq_last_error(), "llama2-13b") && strstr(llmq_last_error(), "qwen2.5-7b"), "%s", llmq_last_error());
}

static void shape_opts(llmq_synth_opts *o, int layers, uint64_t seed)
{
    llmq_synth_defaults(o);
    o->n_layers = layers;
    o->seed = seed;
    o->n_outliers = 8;
    o->calib_bytes = 60000;
    o->eval_bytes = 30000;
}

static int32_t *eval_ids(const char *d, size_t *n)
{
    llmq_tokenizer *tok = llmq_tokenizer_load(d);
    cr_assert_not_null(tok, "%s", llmq_last_error());
    cr_assert_eq(llmq_tokenizer_vocab_size(tok), 512);
    int32_t *ids = text_ids(tok, d, "eval.txt", n);
    cr_assert_gt(*n, 5000u);
    llmq_tokenizer_free(tok);
    return ids;
}

/* Every real shape scaled down (hidden and FFN / 16, vocab / 32, heads kept)
 * through the real writer: loads, and a forward gives a finite perplexity. */
Test(synth, every_shape_scaled_down_loads_and_runs, .timeout = 120)
{
    test_tmpdir(dir, sizeof dir, "synth-shapes");
    for (size_t i = 0; i < N_REAL; i++) {
        llmq_synth_shape s = *llmq_synth_shape_at(i);
        s.hidden /= 16;
        s.intermediate /= 16;
        s.vocab /= 32;
        s.expert_ffn /= 16;
        s.n_experts /= 8; /* 16 of them, 8 per token */
        char d[512];
        snprintf(d, sizeof d, "%s/%s", dir, s.name);
        llmq_synth_opts o;
        shape_opts(&o, 2, 7 + i);
        cr_assert_eq(llmq_synth_write_shape(d, &s, &o), LLMQ_OK, "%s: %s", s.name, llmq_last_error());
        llmq_model *m = llmq_model_load(d);
        cr_assert_not_null(m, "%s: %s", s.name, llmq_last_error());
        cr_assert_eq(m->cfg.hidden_size, real[i].hidden / 16);
        cr_assert_eq(m->cfg.intermediate_size, real[i].ffn / 16);
        cr_assert_eq(m->cfg.vocab_size, real[i].vocab / 32);
        cr_assert_eq(m->cfg.n_layers, 2);
        cr_assert_eq(m->cfg.n_kv_heads, real[i].kv_heads);
        cr_assert_eq(m->cfg.qkv_bias, real[i].bias);
        cr_assert_eq(m->layers[1].bias[LLMQ_LIN_K].data != NULL, real[i].bias);
        /* Qwen3 names its head_dim (not hidden / heads): it stays the real one */
        cr_assert_eq(m->cfg.head_dim, real[i].qk_norm ? 128 : real[i].hidden / 16 / real[i].heads, "%s", s.name);
        cr_assert_eq(m->layers[1].q_norm.data != NULL && m->layers[1].k_norm.data != NULL, real[i].qk_norm);
        cr_assert_eq(m->cfg.n_experts, real[i].experts / 8);
        cr_assert_eq(m->layers[1].experts != NULL, real[i].experts > 0);
        size_t n;
        int32_t *ids = eval_ids(d, &n);
        llmq_ppl_opts po = {.ctx = 64, .protocol = LLMQ_PPL_GPTQ, .max_chunks = 2, .bos_id = -1};
        llmq_ppl_result r;
        cr_assert_eq(llmq_perplexity(m, ids, n, &po, &r), LLMQ_OK, "%s: %s", s.name, llmq_last_error());
        /* Random weights: about uniform over the vocabulary, not collapsed and not blown up. */
        cr_assert(isfinite(r.ppl) && r.ppl > 0.3 * m->cfg.vocab_size && r.ppl < 3.0 * m->cfg.vocab_size, "%s: ppl %.1f (vocab %d)",
                  s.name, r.ppl, m->cfg.vocab_size);
        free(ids);
        llmq_model_free(m);
    }
}

static double tensor_std(const llmq_st_tensor *t, int col_skip_outliers, int hidden, double *mean_out)
{
    const uint16_t *w = t->data;
    int64_t cols = t->n_dims == 2 ? t->shape[1] : t->shape[0];
    double sum = 0, sq = 0;
    int64_t n = 0;
    for (int64_t k = 0; k < t->n_elements; k++) {
        int c = (int)(k % cols), skip = 0;
        for (int q = 0; q < 8 && col_skip_outliers; q++) skip |= c == llmq_synth_outlier_channel(q, hidden);
        if (skip) continue;
        double v = llmq_bf16_to_f32(w[k]);
        sum += v;
        sq += v * v;
        n++;
    }
    *mean_out = sum / (double)n;
    return sqrt(sq / (double)n - *mean_out * *mean_out);
}

static int same_file(const char *a, const char *b)
{
    size_t na, nb;
    char *x = llmq_read_file(a, 0, &na), *y = llmq_read_file(b, 0, &nb);
    cr_assert(x && y, "%s", llmq_last_error());
    int same = na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

/* A small Qwen-like shape: the same seed gives the same bytes whatever the
 * thread count, another seed other weights; the weights have the planned
 * scale and the planted channels dominate the activations. */
Test(synth, shape_weights_deterministic_scaled_and_planted, .timeout = 120)
{
    llmq_synth_shape s = {.name = "tiny", .source = "-", .architecture = "Qwen2ForCausalLM", .hidden = 256, .intermediate = 640,
                          .n_layers = 4, .n_heads = 4, .n_kv_heads = 2, .vocab = 1000, .max_position = 4096,
                          .rope_theta = 1e6, .rms_norm_eps = 1e-6, .qkv_bias = 1};
    test_tmpdir(dir, sizeof dir, "synth-tiny");
    char a[512], b[512], c[512], fa[600], fb[600];
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    snprintf(c, sizeof c, "%s/c", dir);
    llmq_synth_opts o;
    shape_opts(&o, 2, 99);
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    cr_assert_eq(llmq_synth_write_shape(a, &s, &o), LLMQ_OK, "%s", llmq_last_error());
    omp_set_num_threads(3);
    cr_assert_eq(llmq_synth_write_shape(b, &s, &o), LLMQ_OK, "%s", llmq_last_error());
    omp_set_num_threads(threads);
    const char *files[] = {"model.safetensors", "config.json", "tokenizer.json", "calib.txt", "eval.txt"};
    for (int i = 0; i < 5; i++) {
        snprintf(fa, sizeof fa, "%s/%s", a, files[i]);
        snprintf(fb, sizeof fb, "%s/%s", b, files[i]);
        cr_assert(same_file(fa, fb), "%s differs between 1 and 3 threads", files[i]);
    }
    o.seed = 100;
    cr_assert_eq(llmq_synth_write_shape(c, &s, &o), LLMQ_OK, "%s", llmq_last_error());
    snprintf(fb, sizeof fb, "%s/model.safetensors", c);
    snprintf(fa, sizeof fa, "%s/model.safetensors", a);
    cr_assert_not(same_file(fa, fb), "another seed wrote the same weights");

    /* Layers out of range, vocab below the tokenizer's. */
    o.n_layers = 5;
    cr_assert_eq(llmq_synth_write_shape(c, &s, &o), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "1 to 4 layers"), "%s", llmq_last_error());
    o.n_layers = 2;
    s.vocab = 500;
    cr_assert_eq(llmq_synth_write_shape(c, &s, &o), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "512"), "%s", llmq_last_error());
    s.vocab = 1000;

    llmq_safetensors *st = llmq_st_open(fa);
    cr_assert_not_null(st, "%s", llmq_last_error());
    cr_assert_eq(llmq_st_count(st), 1 + 2 * 12 + 2); /* embed, 2 × (2 norms, 7 weights, 3 biases), norm, head */
    double mean, sd = tensor_std(llmq_st_find(st, "model.layers.1.self_attn.q_proj.weight"), 1, 256, &mean);
    cr_assert(fabs(sd - 0.02) < 0.001 && fabs(mean) < 0.001, "q_proj std %.5f mean %.5f", sd, mean);
    sd = tensor_std(llmq_st_find(st, "model.layers.0.mlp.down_proj.weight"), 0, 256, &mean);
    cr_assert(fabs(sd - 0.02 / sqrt(8.0)) < 0.0005, "down_proj std %.5f", sd);
    sd = tensor_std(llmq_st_find(st, "model.embed_tokens.weight"), 0, 256, &mean);
    cr_assert(fabs(sd - 0.02) < 0.001, "embedding std %.5f", sd);
    sd = tensor_std(llmq_st_find(st, "model.layers.0.self_attn.k_proj.bias"), 0, 256, &mean);
    cr_assert(fabs(sd - 0.05) < 0.01, "k bias std %.5f", sd);
    const llmq_st_tensor *norm = llmq_st_find(st, "model.layers.1.post_attention_layernorm.weight");
    sd = tensor_std(norm, 1, 256, &mean);
    cr_assert(fabs(mean - 1.0) < 0.01 && fabs(sd - 0.05) < 0.01, "norm mean %.4f std %.4f", mean, sd);
    for (int q = 0; q < 8; q++) {
        float v = llmq_bf16_to_f32(((const uint16_t *)norm->data)[llmq_synth_outlier_channel(q, 256)]);
        cr_assert(v > 40 && v < 60, "planted channel %d: norm weight %.2f", q, v);
    }
    llmq_st_close(st);

    llmq_model *m = llmq_model_load(a);
    cr_assert_not_null(m, "%s", llmq_last_error());
    size_t n;
    int32_t *ids = eval_ids(a, &n);
    abs_mean am = {0};
    float *x = malloc((size_t)128 * 256 * sizeof(float));
    cr_assert_eq(llmq_embed(m, ids, 128, x), LLMQ_OK);
    cr_assert_eq(llmq_layer_forward(m, &m->layers[0], 0, x, 128, collect, &am), LLMQ_OK, "%s", llmq_last_error());
    double sorted[256];
    for (int i = 0; i < 256; i++) sorted[i] = am.sum[i] / (double)am.n;
    qsort(sorted, 256, sizeof(double), cmp_double);
    for (int q = 0; q < 8; q++) {
        int ch = llmq_synth_outlier_channel(q, 256);
        cr_assert_gt(am.sum[ch] / (double)am.n, 20 * sorted[128], "channel %d", ch);
    }
    free(x);
    free(ids);
    llmq_model_free(m);
}

Test(synth, cli_shape_errors_and_list)
{
    char llmq[600], cmd[2048], out[300];
    test_llmq_binary(llmq, sizeof llmq);
    test_tmpdir(dir, sizeof dir, "synth-cli");
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(cmd, sizeof cmd, "%s synth --list-shapes > %s", llmq, out);
    cr_assert_eq(system(cmd), 0);
    size_t len;
    char *text = llmq_read_file(out, 0, &len);
    for (size_t i = 0; i < N_REAL; i++) cr_assert(strstr(text, real[i].name), "%s", text);
    cr_assert(strstr(text, "Qwen/Qwen2.5-7B") && strstr(text, "152064"), "%s", text);
    free(text);
    snprintf(cmd, sizeof cmd, "%s synth --shape llama9 %s/m 2> %s", llmq, dir, out);
    cr_assert_eq(WEXITSTATUS(system(cmd)), 1);
    text = llmq_read_file(out, 0, &len);
    cr_assert(strstr(text, "unknown shape 'llama9'") && strstr(text, "llama3-70b"), "%s", text);
    free(text);
    snprintf(cmd, sizeof cmd, "%s synth --shape llama2-7b --layers 33 %s/m 2> %s", llmq, dir, out);
    cr_assert_eq(WEXITSTATUS(system(cmd)), 1);
    text = llmq_read_file(out, 0, &len);
    cr_assert(strstr(text, "1 to 32 layers"), "%s", text);
    free(text);
    snprintf(cmd, sizeof cmd, "%s synth --shape llama2-7b 2> %s", llmq, out);
    cr_assert_eq(WEXITSTATUS(system(cmd)), 2);
}

/* --tokenizer: Qwen3's real tokenizer. Its vocabulary and specials go into the
 * checkpoint, the bigram model still fits the text (through the real ids), and
 * every token the text does not use stays improbable. */
Test(synth, real_tokenizer_qwen3, .timeout = 120)
{
    char tokdir[512], src[600], dst[600], d[300];
    REQUIRE_SHARED(tokdir, "tokenizers/qwen3");
    test_tmpdir(d, sizeof d, "synth_realtok");
    llmq_synth_opts so;
    llmq_synth_defaults(&so);
    so.arch = "qwen3";
    so.tokenizer = tokdir;
    so.n_layers = 2;
    so.calib_bytes = 80000;
    so.eval_bytes = 20000;
    cr_assert_eq(llmq_synth_write(d, &so), LLMQ_OK, "%s", llmq_last_error());
    snprintf(src, sizeof src, "%s/tokenizer.json", tokdir);
    snprintf(dst, sizeof dst, "%s/tokenizer.json", d);
    size_t na, nb;
    char *x = llmq_read_file(src, 0, &na), *y = llmq_read_file(dst, 0, &nb);
    cr_assert(x && y && na == nb && !memcmp(x, y, na), "tokenizer.json is not a copy of %s", src);
    free(x);
    free(y);

    llmq_model *m = llmq_model_load(d);
    cr_assert_not_null(m, "%s", llmq_last_error());
    llmq_tokenizer *tok = llmq_tokenizer_load(d);
    cr_assert_not_null(tok, "%s", llmq_last_error());
    const int V = m->cfg.vocab_size;
    cr_assert_eq(V, 151669, "vocab_size %d", V);
    cr_assert_eq(llmq_tokenizer_vocab_size(tok), V);
    cr_assert_eq(m->cfg.bos_token_id, -1, "Qwen3 has no BOS: %d", m->cfg.bos_token_id);
    cr_assert_eq(m->cfg.eos_token_id, llmq_tokenizer_eos_id(tok));

    size_t n, nc;
    int32_t *ids = text_ids(tok, d, "eval.txt", &n);
    assert_bigram_ppl(m, ids, n, 8);

    /* the probability of the tokens neither text uses (108 of 151669 are used), after 1 and 32
     * tokens of text */
    char *used = calloc((size_t)V, 1);
    int32_t *cids = text_ids(tok, d, "calib.txt", &nc);
    for (size_t i = 0; i < nc; i++) used[cids[i]] = 1;
    for (size_t i = 0; i < n; i++) used[ids[i]] = 1;
    used[llmq_tokenizer_eos_id(tok)] = 1; /* the model covers the specials too */
    float *logits = malloc(sizeof(float) * (size_t)V * 32);
    cr_assert_eq(llmq_forward(m, ids, 32, logits), LLMQ_OK, "%s", llmq_last_error());
    for (int p = 0; p < 32; p += 31) {
        const float *l = logits + (size_t)p * V;
        double max = -INFINITY, all = 0, unused = 0;
        for (int t = 0; t < V; t++) max = fmax(max, l[t]);
        for (int t = 0; t < V; t++) {
            double e = exp(l[t] - max);
            all += e;
            if (!used[t]) unused += e;
        }
        cr_assert_lt(unused / all, 1e-3, "position %d: %.4f of the probability on unused tokens", p, unused / all);
    }
    free(logits); free(used); free(cids); free(ids);
    llmq_tokenizer_free(tok);
    llmq_model_free(m);

    /* a tokenizer.json with no tokenizer_config.json beside it, written over the demo: the demo's
     * config (its <s> and </s>) must not stay to speak for it */
    char bare[400], bare_json[500], over[400];
    snprintf(bare, sizeof bare, "%s/bare", d);
    snprintf(over, sizeof over, "%s/over", d);
    cr_assert_eq(mkdir(bare, 0755), 0);
    snprintf(src, sizeof src, "%s/tokenizer.json", tokdir);
    snprintf(bare_json, sizeof bare_json, "%s/tokenizer.json", bare);
    x = llmq_read_file(src, 0, &na);
    FILE *fp = fopen(bare_json, "wb");
    cr_assert(x && fp && fwrite(x, 1, na, fp) == na);
    fclose(fp);
    free(x);
    llmq_synth_opts demo = so;
    demo.arch = NULL, demo.tokenizer = NULL;
    cr_assert_eq(llmq_synth_write(over, &demo), LLMQ_OK, "%s", llmq_last_error());
    so.tokenizer = bare_json;
    cr_assert_eq(llmq_synth_write(over, &so), LLMQ_OK, "%s", llmq_last_error());
    snprintf(dst, sizeof dst, "%s/tokenizer_config.json", over);
    cr_assert_not(llmq_file_exists(dst), "the demo's tokenizer_config.json was left beside Qwen3's tokenizer");
    llmq_tokenizer *bare_tok = llmq_tokenizer_load(over);
    cr_assert_not_null(bare_tok, "%s", llmq_last_error());
    cr_assert_eq(llmq_tokenizer_bos_id(bare_tok), -1);
    llmq_tokenizer_free(bare_tok);

    /* Gemma 2's head is its embedding: no room for the unused tokens' row */
    char g2[400];
    snprintf(g2, sizeof g2, "%s/gemma2", d);
    so.arch = "gemma2";
    cr_assert_eq(llmq_synth_write(g2, &so), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "tied head"), "%s", llmq_last_error());
}
