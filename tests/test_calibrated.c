/* GPTQ, AWQ and AWQ+GPTQ through the quantize driver, on the project's demo
 * model (planted outlier channels), against RTN of the same type. */
#include "llmq/calibrated.h"
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/gguf.h"
#include "llmq/kernels.h"
#include "llmq/model.h"
#include "llmq/ppl.h"
#include "llmq/quantize.h"
#include "llmq/synth.h"
#include "llmq/tokenizer.h"
#include "test_util.h"

#include <math.h>
#include <omp.h>

static char dir[256];
/* GPTAQ instead of GPTQ in quantize_demo (off unless a test sets it) */
static struct {
    bool on;
    float alpha;
    llmq_gptaq_form form;
} gptaq;
/* block reconstruction after GPTQ (GPTAQ) in quantize_demo, with this many steps (off unless a test sets it) */
static struct {
    bool on;
    int iters;
} blk;
/* the calibration text quantize_demo reads (empty: calib.txt beside the model in dir) */
static char calib_file[512];
/* quantize_demo rounds the output head instead of the method's GPTQ of it */
static bool head_rounded;
static llmq_model *base;
static llmq_tokenizer *tok;
static int32_t *eval_ids;
static size_t n_eval;

/* The evaluation text of the model in dir, tokenized. */
static void read_eval_ids(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/eval.txt", dir);
    size_t len;
    char *text = llmq_read_file(path, 0, &len);
    cr_assert_eq(llmq_tokenizer_encode(tok, text, len, 1, &eval_ids, &n_eval), LLMQ_OK);
    free(text);
}

static void setup(void)
{
    gptaq.on = false;
    blk.on = false;
    head_rounded = false;
    test_synth_model(dir, sizeof dir, "calibrated", 2, 60000, 30000, &base, &tok);
    read_eval_ids();
}

static void teardown(void)
{
    free(eval_ids);
    llmq_tokenizer_free(tok);
    llmq_model_free(base);
}

typedef struct {
    llmq_layer_report last[8];
    int n;
} reports;

static void on_report(void *user, const llmq_layer_report *r)
{
    reports *rs = user;
    if (rs->n < 8) rs->last[rs->n++] = *r;
}

/* Quantizes the demo model into out with the options qo and, for kind >= 0,
 * the calibrated method `kind` on cop's windows of calib.txt (kind -1: RTN). */
static void quantize_demo(llmq_quant_opts qo, int kind, bool act_order, llmq_calib_opts cop, const char *out, reports *rs)
{
    llmq_calib calib = {0};
    llmq_layer_method lm = {0};
    llmq_calibrated_opts co = {0};
    if (kind >= 0) {
        char cpath[512];
        if (calib_file[0]) snprintf(cpath, sizeof cpath, "%s", calib_file);
        else snprintf(cpath, sizeof cpath, "%s/calib.txt", dir);
        cr_assert_eq(llmq_calib_from_file(tok, cpath, &cop, &calib), LLMQ_OK, "%s", llmq_last_error());
        co.kind = (llmq_calibrated_kind)kind;
        co.calib = &calib;
        co.gptq = llmq_gptq_default_opts();
        co.gptq.act_order = act_order;
        co.asymmetric = gptaq.on;
        co.gptaq_alpha = gptaq.alpha;
        co.gptaq_form = gptaq.form;
        co.block = blk.on;
        co.block_opts = llmq_block_default_opts();
        co.block_opts.iters = blk.iters;
        co.block_opts.batch = 4;
        llmq_awq_defaults(&co.awq);
        co.report = on_report;
        co.user = rs;
        cr_assert_eq(llmq_calibrated_method(&co, &lm), LLMQ_OK);
        if (head_rounded) lm.quantize_head = NULL;
        qo.method = &lm;
        qo.calib_sha256 = calib.sha256;
        qo.calib_samples = calib.n_samples;
    }
    cr_assert_eq(llmq_quantize_model(base, tok, out, &qo, NULL), LLMQ_OK, "%s", llmq_last_error());
    llmq_calibrated_method_free(&lm);
    llmq_calib_free(&calib);
}

/* Quantizes the demo model with `kind` (-1: RTN) into q4_0 g128, embedding and
 * head kept F16 so the linears' quantization is what differs, then returns
 * KL(base ‖ quantized) over the eval text. */
static double kl_file(const char *path)
{
    llmq_model *q = llmq_model_load(path);
    cr_assert_not_null(q, "%s", llmq_last_error());
    llmq_ppl_opts po = {.ctx = 128, .protocol = LLMQ_PPL_GPTQ, .max_chunks = 16, .bos_id = -1, .kl_base = base};
    llmq_ppl_result r;
    cr_assert_eq(llmq_perplexity(q, eval_ids, n_eval, &po, &r), LLMQ_OK, "%s", llmq_last_error());
    llmq_model_free(q);
    return r.kld;
}

static double kl_of(int kind, reports *rs)
{
    char out[512];
    if (gptaq.on) snprintf(out, sizeof out, "%s/out-%d-gptaq-%g-%d%s.gguf", dir, kind, (double)gptaq.alpha, (int)gptaq.form, blk.on ? "-block" : "");
    else snprintf(out, sizeof out, "%s/out-%d%s.gguf", dir, kind, blk.on ? "-block" : "");
    llmq_quant_opts qo = {.policy = {.group_size = 128, .keep_output = LLMQ_TYPE_F16, .keep_embed = LLMQ_TYPE_F16}};
    cr_assert_eq(llmq_quant_scheme_parse("q4_0", &qo.policy.scheme), LLMQ_OK);
    quantize_demo(qo, kind, false, (llmq_calib_opts){8, 256, 0}, out, rs);
    return kl_file(out);
}

Test(calibrated, gptq_awq_beat_rtn_on_the_demo_model, .init = setup, .fini = teardown, .timeout = 900)
{
    reports g = {0}, a = {0}, ag = {0};
    double kl_rtn = kl_of(-1, NULL);
    double kl_gptq = kl_of(LLMQ_CAL_GPTQ, &g);
    double kl_awq = kl_of(LLMQ_CAL_AWQ, &a);
    double kl_awq_gptq = kl_of(LLMQ_CAL_AWQ_GPTQ, &ag);
    cr_log_info("KL: rtn %.6f gptq %.6f awq %.6f awq+gptq %.6f", kl_rtn, kl_gptq, kl_awq, kl_awq_gptq);
    cr_assert_eq(g.n, 2, "one report per layer");
    for (int l = 0; l < g.n; l++)
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            cr_assert_gt(g.last[l].err_rtn[k], 0);
            cr_assert_lt(g.last[l].err_gptq[k], g.last[l].err_rtn[k], "layer %d %s: gptq %g rtn %g", l, llmq_linear_names[k],
                         g.last[l].err_gptq[k], g.last[l].err_rtn[k]);
        }
    cr_assert(a.n == 2 && a.last[0].has_awq);
    cr_assert_lt(kl_gptq, kl_rtn, "gptq %g rtn %g", kl_gptq, kl_rtn);
    cr_assert_lt(kl_awq, kl_rtn, "awq %g rtn %g", kl_awq, kl_rtn);
    cr_assert_lt(kl_awq_gptq, kl_rtn, "awq+gptq %g rtn %g", kl_awq_gptq, kl_rtn);
}

static void differing_tensors(const char *a_path, const char *b_path, char *out, size_t cap);

/* GPTAQ (--method gptaq): with α = 0 it writes GPTQ's tensors bit for bit in
 * either form; with the default α (1) it lands closer to the original model than
 * GPTQ does, in either form, and after AWQ about as close. */
Test(calibrated, gptaq_is_gptq_at_alpha_0_and_closer_to_the_model, .init = setup, .fini = teardown, .timeout = 900)
{
    reports r = {0};
    char a[512], b[512], diff[1024];
    const double kl_gptq = kl_of(LLMQ_CAL_GPTQ, &r);
    snprintf(a, sizeof a, "%s/out-%d.gguf", dir, LLMQ_CAL_GPTQ);
    double kl[2];
    for (int form = 0; form < 2; form++) {
        gptaq.on = true;
        gptaq.form = (llmq_gptaq_form)form;
        gptaq.alpha = 0.0f;
        kl_of(LLMQ_CAL_GPTQ, &r);
        snprintf(b, sizeof b, "%s/out-%d-gptaq-0-%d.gguf", dir, LLMQ_CAL_GPTQ, form);
        differing_tensors(a, b, diff, sizeof diff);
        const char *tensors = strncmp(diff, "(header) ", 9) ? diff : diff + 9; /* the method's name differs */
        cr_assert_str_empty(tensors, "form %d, α = 0: %s", form, tensors);
        gptaq.alpha = 1.0f;
        kl[form] = kl_of(LLMQ_CAL_GPTQ, &r);
    }
    gptaq.on = false;
    const double kl_awq_gptq = kl_of(LLMQ_CAL_AWQ_GPTQ, &r);
    gptaq.on = true;
    gptaq.form = LLMQ_GPTAQ_TARGET;
    const double kl_awq_gptaq = kl_of(LLMQ_CAL_AWQ_GPTQ, &r);
    cr_log_info("KL: gptq %.4g gptaq target %.4g sweep %.4g; awq+gptq %.4g awq+gptaq %.4g", kl_gptq, kl[0], kl[1], kl_awq_gptq, kl_awq_gptaq);
    cr_assert_lt(kl[0], kl_gptq, "gptaq (target) %g gptq %g", kl[0], kl_gptq);
    cr_assert_lt(kl[1], kl_gptq, "gptaq (sweep) %g gptq %g", kl[1], kl_gptq);
    /* After AWQ the two stay within a few percent on this 2-layer model: its
     * ratio searches pick other ratios on fp32 rounding (awq+gptq 6.28e-06
     * with OpenBLAS's Cooperlake kernels, 4.67e-06 with Haswell's; awq+gptaq
     * 5.42e-06 and 4.70e-06), so GPTAQ must not be worse by more than 5% */
    cr_assert_lt(kl_awq_gptaq, 1.05 * kl_awq_gptq, "awq+gptaq %g awq+gptq %g", kl_awq_gptaq, kl_awq_gptq);
}

/* The demo model written as another architecture (llmq synth --arch): Qwen3
 * (per-head q/k norms, head_dim 128 with q twice the hidden width), Gemma 2
 * (GeGLU, 1 + w norms, post-norms, scaled tied embeddings, soft-capping, a
 * 64-token window on every other layer), Gemma 3 (q/k norms, five local
 * layers in six with their own RoPE base), Phi-3 (q, k, v and gate, up stored
 * stacked, gate and up written as one ffn_up), Mixtral and Qwen3-MoE (4
 * experts, 2 per token: GPTQ per expert on the tokens routed to it, every
 * routed token counted). Its f32 GGUF gives the
 * safetensors' logits; GPTQ and AWQ+GPTQ beat RTN per linear and in KL; the
 * norms reach the file unchanged. */
static void setup_arch(const char *arch, int layers)
{
    char tag[64];
    snprintf(tag, sizeof tag, "calibrated-%s", arch);
    test_synth_arch_model(dir, sizeof dir, tag, arch, layers, 60000, 30000, &base, &tok);
    read_eval_ids();
}

static void setup_qwen3(void) { setup_arch("qwen3", 2); }
static void setup_gemma2(void) { setup_arch("gemma2", 2); }
static void setup_gemma3(void) { setup_arch("gemma3", 6); }
static void setup_phi3(void) { setup_arch("phi3", 2); }
static void setup_mixtral(void) { setup_arch("mixtral", 2); }
static void setup_qwen3moe(void) { setup_arch("qwen3moe", 2); }

static void arch_checks(const char *arch)
{
    char out[512];
    snprintf(out, sizeof out, "%s/f32.gguf", dir);
    llmq_quant_opts qo = {0};
    cr_assert_eq(llmq_quant_scheme_parse("f32", &qo.policy.scheme), LLMQ_OK);
    quantize_demo(qo, -1, false, (llmq_calib_opts){0}, out, NULL);
    llmq_model *f = llmq_model_load(out);
    cr_assert_not_null(f, "%s", llmq_last_error());
    cr_assert_str_eq(f->cfg.model_type, base->cfg.model_type);
    cr_assert(f->cfg.qk_norm == base->cfg.qk_norm && f->cfg.post_norms == base->cfg.post_norms &&
              f->cfg.fused_linears == base->cfg.fused_linears && f->cfg.head_dim == base->cfg.head_dim);
    cr_assert(f->cfg.swa_pattern == base->cfg.swa_pattern && f->cfg.sliding_window == base->cfg.sliding_window &&
              f->cfg.attn_scale == base->cfg.attn_scale && f->cfg.attn_softcap == base->cfg.attn_softcap &&
              f->cfg.final_softcap == base->cfg.final_softcap && f->cfg.rope_local_theta == base->cfg.rope_local_theta &&
              f->cfg.hidden_act == base->cfg.hidden_act, "%s: the GGUF's hyperparameters differ from config.json's", arch);
    const int n = 160, vocab = base->cfg.vocab_size; /* past the 64-token window of Gemma's local layers */
    float *a = malloc(sizeof(float) * n * vocab), *b = malloc(sizeof(float) * n * vocab);
    cr_assert_eq(llmq_forward(base, eval_ids, n, a), LLMQ_OK);
    cr_assert_eq(llmq_forward(f, eval_ids, n, b), LLMQ_OK, "%s", llmq_last_error());
    for (int i = 0; i < n * vocab; i++) cr_assert(fabsf(a[i] - b[i]) <= 1e-5f * (1 + fabsf(a[i])), "logit %d: %g vs %g", i, a[i], b[i]);
    for (int l = 0; l < base->cfg.n_layers; l++) {
        if (base->cfg.qk_norm) cr_assert_arr_eq(f->layers[l].k_norm.data, base->layers[l].k_norm.data, sizeof(float) * 128);
        if (base->cfg.post_norms)
            cr_assert_arr_eq(f->layers[l].post_ffn_norm.data, base->layers[l].post_ffn_norm.data, sizeof(float) * base->cfg.hidden_size);
    }
    free(a);
    free(b);
    llmq_model_free(f);

    reports g = {0}, ag = {0};
    const bool moe = base->cfg.n_experts > 0;
    double kl_rtn = kl_of(-1, NULL), kl_gptq = kl_of(LLMQ_CAL_GPTQ, &g), kl_awq_gptq = kl_of(LLMQ_CAL_AWQ_GPTQ, &ag);
    cr_log_info("%s KL: rtn %.6f gptq %.6f awq+gptq %.6f", arch, kl_rtn, kl_gptq, kl_awq_gptq);
    cr_assert_eq(g.n, base->cfg.n_layers < 8 ? base->cfg.n_layers : 8);
    for (int l = 0; l < g.n; l++)
        for (int k = 0; k < LLMQ_LIN_COUNT; k++)
            cr_assert_lt(g.last[l].err_gptq[k], g.last[l].err_rtn[k], "layer %d %s: gptq %g rtn %g", l, llmq_linear_names[k],
                         g.last[l].err_gptq[k], g.last[l].err_rtn[k]);
    cr_assert_lt(kl_gptq, kl_rtn, "gptq %g rtn %g", kl_gptq, kl_rtn);
    cr_assert_lt(kl_awq_gptq, kl_rtn, "awq+gptq %g rtn %g", kl_awq_gptq, kl_rtn);
    if (!moe) return;
    /* every token routed to n_experts_used experts, counted once each (8 windows of 256) */
    for (int l = 0; l < g.n; l++) {
        int64_t total = 0;
        cr_assert_eq(g.last[l].n_experts, base->cfg.n_experts);
        for (int e = 0; e < base->cfg.n_experts; e++) total += g.last[l].expert_tokens[e];
        cr_assert_eq(total, (int64_t)8 * 256 * base->cfg.n_experts_used, "layer %d: %lld routed tokens", l, (long long)total);
    }
}

Test(calibrated, qwen3_f32_file_same_logits_and_gptq_beats_rtn, .init = setup_qwen3, .fini = teardown, .timeout = 900) { arch_checks("qwen3"); }
Test(calibrated, gemma2_f32_file_same_logits_and_gptq_beats_rtn, .init = setup_gemma2, .fini = teardown, .timeout = 900) { arch_checks("gemma2"); }
Test(calibrated, gemma3_f32_file_same_logits_and_gptq_beats_rtn, .init = setup_gemma3, .fini = teardown, .timeout = 900) { arch_checks("gemma3"); }
Test(calibrated, phi3_f32_file_same_logits_and_gptq_beats_rtn, .init = setup_phi3, .fini = teardown, .timeout = 900) { arch_checks("phi3"); }
Test(calibrated, mixtral_f32_file_same_logits_and_gptq_beats_rtn, .init = setup_mixtral, .fini = teardown, .timeout = 900) { arch_checks("mixtral"); }
Test(calibrated, qwen3moe_f32_file_same_logits_and_gptq_beats_rtn, .init = setup_qwen3moe, .fini = teardown, .timeout = 900) { arch_checks("qwen3moe"); }

/* GPTQ and GPTAQ quantize an untied output head too, on the final hidden
 * states: only output.weight differs from the file with the head rounded,
 * and the KL is lower. */
Test(calibrated, the_head_is_solved_on_the_final_hidden_states, .init = setup, .fini = teardown, .timeout = 900)
{
    cr_assert(!base->cfg.tie_word_embeddings, "the demo model's head must be its own");
    for (int asym = 0; asym < 2; asym++) {
        char path[2][512], diff[1024];
        double kl[2];
        gptaq.on = asym;
        gptaq.alpha = 1.0f;
        gptaq.form = LLMQ_GPTAQ_TARGET;
        for (int r = 0; r < 2; r++) {
            head_rounded = r;
            snprintf(path[r], sizeof path[r], "%s/head-%d-%d.gguf", dir, asym, r);
            llmq_quant_opts qo = {.policy = {.group_size = 0, .keep_output = LLMQ_TYPE_Q4_0, .keep_embed = LLMQ_TYPE_F16}};
            cr_assert_eq(llmq_quant_scheme_parse("q4_0", &qo.policy.scheme), LLMQ_OK);
            reports rs = {0};
            quantize_demo(qo, LLMQ_CAL_GPTQ, false, (llmq_calib_opts){8, 256, 0}, path[r], &rs);
            kl[r] = kl_file(path[r]);
        }
        differing_tensors(path[0], path[1], diff, sizeof diff);
        cr_log_info("%s: KL head solved %.4g, head rounded %.4g", asym ? "gptaq" : "gptq", kl[0], kl[1]);
        const char *first = strstr(diff, "(first at");
        cr_assert(!strncmp(diff, "output.weight (", 15) && first && !strstr(first + 1, "(first at"), "%s: %s", asym ? "gptaq" : "gptq", diff);
        cr_assert_lt(kl[0], kl[1], "%s: head solved %g, rounded %g", asym ? "gptaq" : "gptq", kl[0], kl[1]);
    }
    head_rounded = false;
}

/* Block reconstruction on a real trained model (stories260K: the demo model is
 * a near-linear bigram model GPTQ already fits, where it finds nothing): from
 * GPTQ's rounding every layer's block-output error falls, is kept, and the KL
 * falls with it. */
Test(calibrated, block_lowers_each_layer_error_and_the_kl, .timeout = 900)
{
    char model[512], eval_path[512];
    REQUIRE_SHARED(model, "models/stories260K");
    REQUIRE_SHARED(calib_file, "data/tinystories/tinystories_calib.txt");
    REQUIRE_SHARED(eval_path, "data/tinystories/tinystories_eval.txt");
    test_tmpdir(dir, sizeof dir, "calibrated-block");
    base = llmq_model_load(model);
    tok = llmq_tokenizer_load(model);
    cr_assert(base && tok, "%s", llmq_last_error());
    size_t len;
    char *text = llmq_read_file(eval_path, 0, &len);
    cr_assert_eq(llmq_tokenizer_encode(tok, text, len, 1, &eval_ids, &n_eval), LLMQ_OK);
    free(text);
    gptaq.on = false;
    head_rounded = false;
    double kl[2];
    reports r[2];
    memset(r, 0, sizeof r);
    for (int b = 0; b < 2; b++) {
        char out[512];
        snprintf(out, sizeof out, "%s/stories260k-%s.gguf", dir, b ? "block" : "gptq");
        blk.on = b;
        blk.iters = 100;
        llmq_quant_opts qo = {.policy = {.group_size = 0, .keep_output = LLMQ_TYPE_F16, .keep_embed = LLMQ_TYPE_F16}};
        cr_assert_eq(llmq_quant_scheme_parse("q4_0", &qo.policy.scheme), LLMQ_OK);
        quantize_demo(qo, LLMQ_CAL_GPTQ, false, (llmq_calib_opts){16, 256, 0}, out, &r[b]);
        kl[b] = kl_file(out);
    }
    blk.on = false;
    calib_file[0] = 0;
    cr_log_info("stories260K q4_0: KL gptq %.5g, block %.5g", kl[0], kl[1]);
    cr_assert_eq(r[1].n, base->cfg.n_layers);
    for (int l = 0; l < r[1].n; l++) {
        const llmq_layer_report *b = &r[1].last[l];
        cr_log_info("layer %d: block mse %.4g -> %.4g, %lld codes", l, b->block_mse_init, b->block_mse_final, (long long)b->block_codes_changed);
        cr_assert(b->has_block && b->block_kept && b->block_codes_changed > 0, "layer %d", l);
        cr_assert_lt(b->block_mse_final, 0.9 * b->block_mse_init, "layer %d", l);
    }
    cr_assert_lt(kl[1], kl[0], "block %g, gptq %g", kl[1], kl[0]);
    teardown();
}

/* GPTAQ has no full-precision stream through experts yet, block reconstruction
 * no backward for them: one-line refusals, nothing written. */
Test(calibrated, gptaq_and_block_refuse_a_mixture_of_experts, .init = setup_mixtral, .fini = teardown)
{
    char cpath[512], out[512];
    snprintf(cpath, sizeof cpath, "%s/calib.txt", dir);
    snprintf(out, sizeof out, "%s/gptaq-moe.gguf", dir);
    llmq_calib calib = {0};
    cr_assert_eq(llmq_calib_from_file(tok, cpath, &(llmq_calib_opts){2, 64, 0}, &calib), LLMQ_OK, "%s", llmq_last_error());
    for (int block = 0; block < 2; block++) {
        llmq_calibrated_opts co = {.kind = LLMQ_CAL_GPTQ, .calib = &calib, .gptq = llmq_gptq_default_opts(), .asymmetric = !block,
                                   .gptaq_alpha = 1, .block = block, .block_opts = llmq_block_default_opts()};
        llmq_awq_defaults(&co.awq);
        llmq_layer_method lm = {0};
        cr_assert_eq(llmq_calibrated_method(&co, &lm), LLMQ_OK);
        llmq_quant_opts qo = {.policy = {.group_size = 0, .keep_output = -1, .keep_embed = -1}, .method = &lm, .calib_sha256 = calib.sha256,
                              .calib_samples = calib.n_samples};
        cr_assert_eq(llmq_quant_scheme_parse("q4_k_m", &qo.policy.scheme), LLMQ_OK);
        cr_assert_eq(llmq_quantize_model(base, tok, out, &qo, NULL), LLMQ_ERR);
        cr_expect(strstr(llmq_last_error(), block ? "block reconstruction: layer 0 has a mixture of experts"
                                                  : "GPTAQ on a mixture of experts (4 experts) is not supported"),
                  "%s", llmq_last_error());
        cr_expect(!llmq_file_exists(out), "nothing written");
        llmq_calibrated_method_free(&lm);
    }
    llmq_calib_free(&calib);
}

Test(calibrated, too_short_calibration_is_a_clear_error, .init = setup, .fini = teardown)
{
    llmq_calib c;
    char cpath[512];
    snprintf(cpath, sizeof cpath, "%s/eval.txt", dir);
    llmq_calib_opts cop = {4, 1 << 20, 0};
    cr_assert_eq(llmq_calib_from_file(tok, cpath, &cop, &c), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "eval.txt"), "%s", llmq_last_error());
}

/* ------------------------------------------------------------ threads */

/* Quantizes the demo model to q4_k_m (Q4_K and Q6_K linears, Q6_K head) with
 * `threads` threads: kind -1 = RTN; calibration 4 × 128 tokens. */
static void quantize_threads(int kind, bool act_order, int threads, const char *out, reports *rs)
{
    llmq_set_threads(threads);
    cr_assert_eq(omp_get_max_threads(), threads, "llmq_set_threads(%d) did not size the team", threads);
    llmq_quant_opts qo = {.policy = {.group_size = 128, .keep_output = -1, .keep_embed = -1}, .model_name = "demo"};
    cr_assert_eq(llmq_quant_scheme_parse("q4_k_m", &qo.policy.scheme), LLMQ_OK);
    quantize_demo(qo, kind, act_order, (llmq_calib_opts){4, 128, 0}, out, rs);
}

/* The tensors whose bytes differ between two GGUF files of the same layout ("" when none). */
static void differing_tensors(const char *a_path, const char *b_path, char *out, size_t cap)
{
    llmq_gguf *a = llmq_gguf_open(a_path), *b = llmq_gguf_open(b_path);
    cr_assert(a && b, "%s", llmq_last_error());
    size_t n = 0;
    out[0] = 0;
    if (llmq_gguf_data_offset(a) != llmq_gguf_data_offset(b) || llmq_gguf_tensor_count(a) != llmq_gguf_tensor_count(b))
        n += (size_t)snprintf(out, cap, "(header) ");
    for (int64_t i = 0; i < llmq_gguf_tensor_count(a) && n < cap; i++) {
        const llmq_gguf_tensor *ta = llmq_gguf_tensor_at(a, i), *tb = llmq_gguf_get_tensor(b, ta->name);
        if (!tb || ta->size != tb->size || memcmp(ta->data, tb->data, ta->size)) {
            size_t first = 0;
            while (tb && first < ta->size && first < tb->size && ((const unsigned char *)ta->data)[first] == ((const unsigned char *)tb->data)[first])
                first++;
            n += (size_t)snprintf(out + n, cap - n, "%s (first at byte %zu) ", ta->name, first);
        }
    }
    llmq_gguf_close(a);
    llmq_gguf_close(b);
}

/* No output bit of quantize depends on the number of threads: every method
 * writes the same file with 1 and with 2 threads, and AWQ's search sees the
 * same losses (its choices are argmins over them). */
Test(calibrated, thread_count_changes_no_output_bit, .init = setup, .fini = teardown, .timeout = 900)
{
    static const struct { const char *name; int kind; bool act_order, gptaq, block; } runs[] = {
        {"rtn", -1, false, false, false},
        {"gptq", LLMQ_CAL_GPTQ, false, false, false},
        {"gptq-act-order", LLMQ_CAL_GPTQ, true, false, false},
        {"awq", LLMQ_CAL_AWQ, false, false, false},
        {"awq+gptq", LLMQ_CAL_AWQ_GPTQ, false, false, false},
        {"gptaq", LLMQ_CAL_GPTQ, false, true, false},
        {"gptaq-sweep", LLMQ_CAL_GPTQ, false, true, false},
        {"block", LLMQ_CAL_GPTQ, false, false, true},
    };
    for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
        char path[2][512];
        reports rs[2];
        memset(rs, 0, sizeof rs);
        gptaq.on = runs[r].gptaq;
        gptaq.alpha = 1.0f;
        gptaq.form = strstr(runs[r].name, "sweep") ? LLMQ_GPTAQ_SWEEP : LLMQ_GPTAQ_TARGET;
        blk.on = runs[r].block;
        blk.iters = 10;
        for (int t = 0; t < 2; t++) {
            snprintf(path[t], sizeof path[t], "%s/threads-%s-%d.gguf", dir, runs[r].name, t + 1);
            quantize_threads(runs[r].kind, runs[r].act_order, t + 1, path[t], &rs[t]);
        }
        size_t len[2];
        char *bytes[2];
        for (int t = 0; t < 2; t++) {
            bytes[t] = llmq_read_file(path[t], 0, &len[t]);
            cr_assert_not_null(bytes[t], "%s", llmq_last_error());
        }
        char diff[2048] = "";
        bool same = len[0] == len[1] && !memcmp(bytes[0], bytes[1], len[0]);
        if (!same) differing_tensors(path[0], path[1], diff, sizeof diff);
        cr_expect(same, "%s: 1 and 2 threads wrote different files (%zu and %zu bytes); differing: %s", runs[r].name, len[0], len[1], diff);
        cr_expect_eq(rs[0].n, runs[r].kind >= 0 ? 2 : 0);
        cr_expect_eq(rs[1].n, rs[0].n);
        for (int l = 0; l < rs[0].n && l < rs[1].n; l++)
            for (int g = 0; g < LLMQ_AWQ_GROUP_COUNT; g++) {
                const llmq_awq_stats *a = &rs[0].last[l].awq, *b = &rs[1].last[l].awq;
                cr_expect_eq(a->searched[g], b->searched[g]);
                cr_expect(a->ratio[g] == b->ratio[g] && a->loss_rtn[g] == b->loss_rtn[g] && a->loss_best[g] == b->loss_best[g],
                          "%s layer %d %s: ratio %g/%g, loss at r=0 %.17g/%.17g, best %.17g/%.17g with 1/2 threads", runs[r].name, l,
                          llmq_awq_group_names[g], (double)a->ratio[g], (double)b->ratio[g], a->loss_rtn[g], b->loss_rtn[g],
                          a->loss_best[g], b->loss_best[g]);
            }
        if (runs[r].kind == LLMQ_CAL_AWQ) cr_expect(rs[0].last[0].has_awq && rs[0].last[0].awq.searched[LLMQ_AWQ_QKV]);
        free(bytes[0]);
        free(bytes[1]);
    }
    llmq_set_threads(0);
}

/* ------------------------------------------------------------ stages */

typedef struct {
    char name[64][32]; /* consecutive repeats collapsed */
    int layer[64], n;
    int calls, rated;  /* calls with tokens_per_s > 0 */
    bool bad_rate;     /* a rate on a stage that is not a forward */
} stage_log;

static void on_stage(void *user, int layer, const char *stage, double tokens_per_s)
{
    stage_log *s = user;
    s->calls++;
    bool forward = !strcmp(stage, "forward") || !strncmp(stage, "hessian ", 8);
    if (tokens_per_s > 0) s->rated++;
    if (tokens_per_s < 0 || (tokens_per_s > 0 && !forward)) s->bad_rate = true;
    if (s->n && s->layer[s->n - 1] == layer && !strcmp(s->name[s->n - 1], stage)) return;
    cr_assert_lt(s->n, 64, "too many stages");
    snprintf(s->name[s->n], sizeof s->name[0], "%s", stage);
    s->layer[s->n++] = layer;
}

/* The stage callback: the driver's and GPTQ's stages in order, layer by
 * layer, with the calibration forward's tokens/s once a sample has run. */
Test(calibrated, gptq_reports_its_stages_in_order, .init = setup, .fini = teardown)
{
    stage_log log = {0};
    char cpath[512], out[512];
    snprintf(cpath, sizeof cpath, "%s/calib.txt", dir);
    snprintf(out, sizeof out, "%s/stages.gguf", dir);
    llmq_calib calib = {0};
    llmq_calib_opts cop = {3, 64, 0};
    cr_assert_eq(llmq_calib_from_file(tok, cpath, &cop, &calib), LLMQ_OK, "%s", llmq_last_error());
    llmq_calibrated_opts co = {.kind = LLMQ_CAL_GPTQ, .calib = &calib, .gptq = llmq_gptq_default_opts(), .stage = on_stage, .user = &log};
    llmq_layer_method lm;
    cr_assert_eq(llmq_calibrated_method(&co, &lm), LLMQ_OK);
    llmq_quant_opts qo = {.policy = {.group_size = 128, .keep_output = -1, .keep_embed = -1}, .method = &lm, .stage = on_stage, .user = &log};
    cr_assert_eq(llmq_quant_scheme_parse("q4_k_m", &qo.policy.scheme), LLMQ_OK);
    cr_assert_eq(llmq_quantize_model(base, tok, out, &qo, NULL), LLMQ_OK, "%s", llmq_last_error());
    llmq_calibrated_method_free(&lm);
    llmq_calib_free(&calib);

    static const char *const per_layer[] = {"load", "quantize", "hessian q,k,v", "solve q_proj", "solve k_proj", "solve v_proj",
                                            "hessian o_proj", "solve o_proj", "hessian gate,up", "solve gate_proj", "solve up_proj",
                                            "hessian down_proj", "solve down_proj", "forward", "write"};
    const int n_per = (int)(sizeof per_layer / sizeof *per_layer);
    cr_assert_eq(log.n, 2 + 2 * n_per + 3, "%d stages", log.n);
    cr_expect_str_eq(log.name[0], "embed calib");
    cr_expect_str_eq(log.name[1], "embed");
    cr_expect(log.layer[0] == -1 && log.layer[1] == -1);
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < n_per; i++) {
            int at = 2 + l * n_per + i;
            cr_expect_str_eq(log.name[at], per_layer[i], "layer %d stage %d", l, i);
            cr_expect_eq(log.layer[at], l, "%s", log.name[at]);
        }
    /* the head: written after GPTQ of it on the final hidden states */
    cr_expect_str_eq(log.name[log.n - 3], "head");
    cr_expect_str_eq(log.name[log.n - 2], "hessian head");
    cr_expect_str_eq(log.name[log.n - 1], "solve head");
    for (int i = 1; i <= 3; i++) cr_expect_eq(log.layer[log.n - i], 2);
    /* Each of the 3 samples reports in the 4 Hessian passes, and the 2nd and 3rd in the forward, of 2 layers. */
    cr_expect_geq(log.rated, 2 * (4 * 3 + 2), "%d of %d calls carried a rate", log.rated, log.calls);
    cr_expect(!log.bad_rate, "a rate on a stage that runs no forward");
}
