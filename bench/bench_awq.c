/* AWQ per-layer cost and effect: seconds per decoder layer for the scale
 * search and the clip search, the chosen ratios, and each group's output MSE
 * at r = 0 (RTN) and at the chosen r. Model: the demo model (written to
 * build/tmp/bench-awq) with 32 calibration samples × 256 tokens, and the
 * shared stories-llama-7m when present. Type q4_k, group 128. */
#include "llmq/awq.h"
#include "llmq/calib.h"
#include "llmq/error.h"
#include "llmq/kernels.h"
#include "llmq/synth.h"
#include "llmq/tokenizer.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what)
{
    fprintf(stderr, "bench_awq: %s: %s\n", what, llmq_last_error());
    exit(1);
}

static void bench_model(const char *name, const char *dir, int n_samples, int seqlen)
{
    llmq_model *m = llmq_model_load(dir);
    if (!m) die(dir);
    llmq_tokenizer *tok = llmq_tokenizer_load(dir);
    if (!tok) die("tokenizer");
    char calib_path[1024];
    snprintf(calib_path, sizeof calib_path, "%s/calib.txt", dir);
    FILE *probe = fopen(calib_path, "rb");
    if (probe) fclose(probe);
    else snprintf(calib_path, sizeof calib_path, "%s/../../data/tinystories/tinystories_calib.txt", dir);
    llmq_calib cal;
    llmq_calib_opts co = {.n_samples = n_samples, .seqlen = seqlen, .seed = 0};
    if (llmq_calib_from_file(tok, calib_path, &co, &cal)) die(calib_path);
    llmq_tokenizer_free(tok);

    int d = m->cfg.hidden_size, T = seqlen;
    size_t N = (size_t)n_samples * T;
    float *x = malloc(N * d * sizeof(float));
    for (int s = 0; s < n_samples; s++)
        if (llmq_embed(m, cal.tokens + (size_t)s * T, T, x + (size_t)s * T * d)) die("embed");
    llmq_type types[LLMQ_LIN_COUNT];
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) types[k] = LLMQ_TYPE_Q4_K;
    llmq_awq_opts o;
    llmq_awq_defaults(&o);

    printf("\n%s: %d × %d calibration tokens, q4_k g128, %d threads\n\n", name, n_samples, seqlen, llmq_get_threads());
    printf("| layer | scales s | scales+clip s | r qkv | r vo | r gate,up | r down | qkv MSE rtn→awq | gate,up MSE rtn→awq | down MSE rtn→awq |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    for (int l = 0; l < m->cfg.n_layers; l++) {
        llmq_layer L1, L2;
        float *b1 = llmq_layer_f32_copy(m, l, &L1), *b2 = llmq_layer_f32_copy(m, l, &L2);
        if (!b1 || !b2) die("layer copy");
        llmq_awq_stats st;
        o.clip = false;
        double t0 = omp_get_wtime();
        if (llmq_awq_layer(m, l, &L1, x, n_samples, T, types, 128, &o, &st)) die("awq");
        double t1 = omp_get_wtime();
        o.clip = true;
        if (llmq_awq_layer(m, l, &L2, x, n_samples, T, types, 128, &o, &st)) die("awq");
        double t2 = omp_get_wtime();
        char vo[32] = "—";
        if (st.searched[LLMQ_AWQ_VO]) snprintf(vo, sizeof vo, "%.2f", st.ratio[LLMQ_AWQ_VO]);
        printf("| %d | %.2f | %.2f | %.2f | %s | %.2f | %.2f | %.3g→%.3g | %.3g→%.3g | %.3g→%.3g |\n", l, t1 - t0, t2 - t1,
               st.ratio[0], vo, st.ratio[2], st.ratio[3], st.loss_rtn[0], st.loss_best[0], st.loss_rtn[2], st.loss_best[2],
               st.loss_rtn[3], st.loss_best[3]);
        fflush(stdout);
        /* The next layer's input through the original layer. */
        for (int s = 0; s < n_samples; s++)
            if (llmq_layer_forward(m, &m->layers[l], l, x + (size_t)s * T * d, T, NULL, NULL)) die("forward");
        free(b1);
        free(b2);
    }
    free(x);
    llmq_calib_free(&cal);
    llmq_model_free(m);
}

int main(int argc, char **argv)
{
    llmq_omp_default_wait(argv);
    /* Optional: samples and tokens per sample (default 32 × 256). */
    int n_samples = argc > 1 ? atoi(argv[1]) : 32, seqlen = argc > 2 ? atoi(argv[2]) : 256;
    if (n_samples <= 0 || seqlen <= 0) {
        fprintf(stderr, "usage: bench_awq [n_samples [seqlen]]\n");
        return 2;
    }
    const char *dir = "build/tmp/bench-awq";
    llmq_synth_opts so;
    llmq_synth_defaults(&so);
    if (llmq_synth_write(dir, &so)) die(dir);
    bench_model("demo model", dir, n_samples, seqlen);
    const char *shared = getenv("LLMQ_SHARED");
    char stories[1024];
    snprintf(stories, sizeof stories, "%s/models/stories-llama-7m", shared && *shared ? shared : "../shared");
    char config[1100];
    snprintf(config, sizeof config, "%s/config.json", stories);
    FILE *f = fopen(config, "rb");
    if (f) {
        fclose(f);
        bench_model("stories-llama-7m", stories, n_samples, seqlen);
    }
    return 0;
}
