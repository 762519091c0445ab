#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/model.h"
#include "llmq/ppl.h"
#include "llmq/synth.h"
#include "llmq/tokenizer.h"
#include "test_util.h"

#include <math.h>

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
    char path[512];
    snprintf(path, sizeof path, "%s/eval.txt", dir);
    size_t len, n;
    char *text = llmq_read_file(path, 0, &len);
    int32_t *ids;
    cr_assert_eq(llmq_tokenizer_encode(tok, text, len, 1, &ids, &n), LLMQ_OK);
    /* A bigram model of the grammar: far below the uniform 512. */
    llmq_ppl_opts o = {.ctx = 128, .protocol = LLMQ_PPL_GPTQ, .max_chunks = 20, .bos_id = -1};
    llmq_ppl_result r;
    cr_assert_eq(llmq_perplexity(m, ids, n, &o, &r), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_lt(r.ppl, 8.0, "ppl %.3f", r.ppl);
    cr_assert_gt(r.ppl, 2.0, "ppl %.3f", r.ppl);

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
    free(text);
    llmq_tokenizer_free(tok);
    llmq_model_free(m);
}
