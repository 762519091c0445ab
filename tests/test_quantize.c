/* The tensor policy (llama-quant.cpp's rules), the quantize driver and its
 * layer-method interface, and the `llmq quantize` / `llmq inspect` CLI. */
#include "llmq/error.h"
#include "llmq/gguf.h"
#include "llmq/gguf_model.h"
#include "llmq/kernels.h"
#include "llmq/quantize.h"
#include "llmq/rtn.h"
#include "llmq/safetensors.h"
#include "llmq/synth.h"
#include "synth_model.h"
#include "test_util.h"

#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pty.h>
#include <regex.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <termios.h>

/* ------------------------------------------------------------ policy */

static llmq_policy policy(const char *type, int group)
{
    llmq_policy p = {.group_size = group, .keep_output = -1, .keep_embed = -1};
    cr_assert_eq(llmq_quant_scheme_parse(type, &p.scheme), LLMQ_OK, "%s", llmq_last_error());
    return p;
}

static llmq_tensor_plan plan(const llmq_policy *p, llmq_tensor_role role, llmq_linear lin, int layer, int n_layers,
                             int64_t rows, int64_t cols, bool tied)
{
    llmq_tensor_desc d = {role, lin, layer, n_layers, rows, cols, tied, false, 1};
    llmq_tensor_plan out;
    cr_assert_eq(llmq_policy_plan(p, &d, &out), LLMQ_OK, "%s", llmq_last_error());
    return out;
}

Test(policy, q4_k_m_more_bits_layers_follow_llamacpp)
{
    /* use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2 */
    const int want6[] = {2, 5};
    for (int i = 0, k = 0; i < 6; i++) {
        bool yes = k < 2 && want6[k] == i;
        cr_expect_eq(llmq_policy_more_bits(i, 6), yes, "layer %d of 6", i);
        k += yes;
    }
    /* 32 layers (Llama-2-7B): 0-3, 6, 9, ..., 27, 28-31. */
    for (int i = 0; i < 32; i++) {
        bool want = i < 4 || i >= 28 || (i >= 4 && (i - 4) % 3 == 2);
        cr_expect_eq(llmq_policy_more_bits(i, 32), want, "layer %d of 32", i);
    }
    llmq_policy p = policy("q4_k_m", 0);
    for (int l = 0; l < 32; l++)
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            llmq_tensor_plan t = plan(&p, LLMQ_ROLE_LINEAR, k, l, 32, 4096, 4096, false);
            bool six = (k == LLMQ_LIN_V || k == LLMQ_LIN_DOWN) && llmq_policy_more_bits(l, 32);
            cr_expect_eq(t.type, six ? LLMQ_TYPE_Q6_K : LLMQ_TYPE_Q4_K, "layer %d %s", l, llmq_linear_names[k]);
        }
    /* Plain q4_k has no mix. */
    llmq_policy q = policy("q4_k", 0);
    cr_expect_eq(plan(&q, LLMQ_ROLE_LINEAR, LLMQ_LIN_V, 0, 32, 1024, 4096, false).type, LLMQ_TYPE_Q4_K);
}

Test(policy, output_head_and_embedding_rules)
{
    llmq_policy p = policy("q4_0", 128);
    cr_expect_eq(plan(&p, LLMQ_ROLE_OUTPUT, 0, -1, 6, 4096, 256, false).type, LLMQ_TYPE_Q6_K);
    cr_expect_eq(plan(&p, LLMQ_ROLE_OUTPUT, 0, -1, 6, 4096, 288, false).type, LLMQ_TYPE_Q8_0, "ne[0] % 256 != 0");
    cr_expect_eq(plan(&p, LLMQ_ROLE_EMBED, 0, -1, 6, 4096, 256, false).type, LLMQ_TYPE_Q4_0, "embedding follows the base");
    cr_expect_eq(plan(&p, LLMQ_ROLE_EMBED, 0, -1, 6, 4096, 256, false).group_size, 32, "native blocks");
    cr_expect_eq(plan(&p, LLMQ_ROLE_LINEAR, LLMQ_LIN_Q, 0, 6, 256, 256, false).group_size, 128);
    cr_expect_eq(plan(&p, LLMQ_ROLE_EMBED, 0, -1, 6, 4096, 256, true).type, LLMQ_TYPE_Q6_K, "tied: the head's rule");
    llmq_policy q8 = policy("q8_0", 0);
    cr_expect_eq(plan(&q8, LLMQ_ROLE_OUTPUT, 0, -1, 6, 4096, 256, false).type, LLMQ_TYPE_Q8_0);
    llmq_policy f16 = policy("f16", 0);
    cr_expect_eq(plan(&f16, LLMQ_ROLE_OUTPUT, 0, -1, 6, 4096, 256, false).type, LLMQ_TYPE_F16);
    cr_expect_eq(plan(&f16, LLMQ_ROLE_NORM, 0, 0, 6, 1, 256, false).type, LLMQ_TYPE_F32);
    cr_expect_eq(plan(&f16, LLMQ_ROLE_BIAS, LLMQ_LIN_Q, 0, 6, 1, 256, false).type, LLMQ_TYPE_F32);
    /* Overrides. */
    p.keep_output = LLMQ_TYPE_F16;
    p.keep_embed = LLMQ_TYPE_Q8_0;
    cr_expect_eq(plan(&p, LLMQ_ROLE_OUTPUT, 0, -1, 6, 4096, 256, false).type, LLMQ_TYPE_F16);
    cr_expect_eq(plan(&p, LLMQ_ROLE_EMBED, 0, -1, 6, 4096, 256, false).type, LLMQ_TYPE_Q8_0);
    cr_expect_eq(plan(&p, LLMQ_ROLE_EMBED, 0, -1, 6, 4096, 256, true).type, LLMQ_TYPE_Q8_0, "--keep-embed wins when tied");
    p.keep_embed = -1;
    cr_expect_eq(plan(&p, LLMQ_ROLE_EMBED, 0, -1, 6, 4096, 256, true).type, LLMQ_TYPE_F16, "tied: --keep-output");
}

Test(policy, row_lengths_that_do_not_fit_fall_back)
{
    /* stories260K: hidden 64, FFN 172. */
    llmq_policy q40 = policy("q4_0", 128);
    llmq_tensor_plan down = plan(&q40, LLMQ_ROLE_LINEAR, LLMQ_LIN_DOWN, 0, 5, 64, 172, true);
    cr_expect_eq(down.type, LLMQ_TYPE_F16);
    cr_expect_eq(down.wanted, LLMQ_TYPE_Q4_0);
    llmq_tensor_plan gate = plan(&q40, LLMQ_ROLE_LINEAR, LLMQ_LIN_GATE, 0, 5, 172, 64, true);
    cr_expect_eq(gate.type, LLMQ_TYPE_Q4_0, "64 is two blocks; the group is the whole row");
    cr_expect_eq(gate.wanted, gate.type);
    /* tensor_type_fallback: Q4_K -> Q5_0, Q5_K -> Q5_1 (64 = two 32-blocks), F16 past that */
    llmq_policy q4k = policy("q4_k", 128);
    llmq_tensor_plan q4k_gate = plan(&q4k, LLMQ_ROLE_LINEAR, LLMQ_LIN_GATE, 0, 5, 172, 64, true);
    cr_expect_eq(q4k_gate.type, LLMQ_TYPE_Q5_0);
    cr_expect_eq(q4k_gate.wanted, LLMQ_TYPE_Q4_K);
    cr_expect_eq(q4k_gate.group_size, 128, "the group asked for; the row's last group is shorter");
    cr_expect_eq(plan(&q4k, LLMQ_ROLE_LINEAR, LLMQ_LIN_DOWN, 0, 5, 64, 172, true).type, LLMQ_TYPE_F16);
    llmq_policy q5k = policy("q5_k", 0);
    cr_expect_eq(plan(&q5k, LLMQ_ROLE_LINEAR, LLMQ_LIN_GATE, 0, 5, 172, 64, true).type, LLMQ_TYPE_Q5_1);
    llmq_policy q6k = policy("q6_k", 0);
    cr_expect_eq(plan(&q6k, LLMQ_ROLE_LINEAR, LLMQ_LIN_Q, 0, 5, 64, 64, true).type, LLMQ_TYPE_Q8_0);
    cr_expect_eq(plan(&q6k, LLMQ_ROLE_LINEAR, LLMQ_LIN_DOWN, 0, 5, 64, 172, true).type, LLMQ_TYPE_F16);
    llmq_policy q3k = policy("q3_k", 0);
    cr_expect_eq(plan(&q3k, LLMQ_ROLE_LINEAR, LLMQ_LIN_Q, 0, 5, 64, 64, true).type, LLMQ_TYPE_Q4_0);
    cr_expect_eq(plan(&q40, LLMQ_ROLE_EMBED, 0, -1, 5, 512, 64, true).type, LLMQ_TYPE_Q8_0, "tied 64-wide head");
    /* A K-quant group must divide the super-block. */
    llmq_policy bad = policy("q4_k", 96);
    llmq_tensor_desc d = {LLMQ_ROLE_LINEAR, LLMQ_LIN_Q, 0, 2, 256, 256, false, false, 1};
    llmq_tensor_plan out;
    cr_expect_eq(llmq_policy_plan(&bad, &d, &out), LLMQ_ERR);
}

Test(policy, scheme_names_and_file_types)
{
    llmq_quant_scheme s;
    cr_assert_eq(llmq_quant_scheme_parse("Q4_K_M", &s), LLMQ_OK);
    cr_expect(s.mix);
    cr_expect_eq(s.base, LLMQ_TYPE_Q4_K);
    cr_expect_eq(s.file_type, 15);
    cr_assert_eq(llmq_quant_scheme_parse("q8_0", &s), LLMQ_OK);
    cr_expect_eq(s.file_type, 7);
    cr_assert_eq(llmq_quant_scheme_parse("bf16", &s), LLMQ_OK);
    cr_expect_eq(s.file_type, 32);
    /* llama.cpp's LlamaFileType numbers (include/llama.h) */
    const struct { const char *name; llmq_type base; bool mix; int file_type; } want[] = {
        {"q2_k", LLMQ_TYPE_Q2_K, true, 10},    {"q5_0", LLMQ_TYPE_Q5_0, false, 8},    {"iq4_nl", LLMQ_TYPE_IQ4_NL, true, 25},
        {"iq4_xs", LLMQ_TYPE_IQ4_XS, true, 30},    {"q5_1", LLMQ_TYPE_Q5_1, false, 9},    {"q3_k_s", LLMQ_TYPE_Q3_K, false, 11},
        {"q3_k_m", LLMQ_TYPE_Q3_K, true, 12},  {"q3_k_l", LLMQ_TYPE_Q3_K, true, 13},  {"q4_k_s", LLMQ_TYPE_Q4_K, true, 14},
        {"q4_k", LLMQ_TYPE_Q4_K, false, 14},   {"q5_k_s", LLMQ_TYPE_Q5_K, false, 16}, {"q5_k", LLMQ_TYPE_Q5_K, false, 16},
        {"q5_k_m", LLMQ_TYPE_Q5_K, true, 17},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_assert_eq(llmq_quant_scheme_parse(want[i].name, &s), LLMQ_OK, "%s", want[i].name);
        cr_expect_eq(s.base, want[i].base, "%s", want[i].name);
        cr_expect_eq(s.mix, want[i].mix, "%s", want[i].name);
        cr_expect_eq(s.file_type, want[i].file_type, "%s", want[i].name);
    }
    cr_expect_eq(llmq_quant_scheme_parse("q4_k_x", &s), LLMQ_ERR);
    cr_expect(strstr(llmq_last_error(), "q4_k_m") && strstr(llmq_last_error(), "q5_k_m"), "%s", llmq_last_error());
}

/* The mixes' rules (llama-quant.cpp llama_tensor_get_type_impl, a dense
 * Llama): the type of each decoder linear, layer by layer. */
static llmq_type mix_rule(const char *mix, llmq_linear k, int i, int n)
{
    const bool v = k == LLMQ_LIN_V, down = k == LLMQ_LIN_DOWN, o = k == LLMQ_LIN_O, more = llmq_policy_more_bits(i, n);
    if (!strcmp(mix, "q5_k_m")) return (v || down) && more ? LLMQ_TYPE_Q6_K : LLMQ_TYPE_Q5_K;
    if (!strcmp(mix, "q4_k_s")) return (v && i < 4) || (down && i < n / 8) ? LLMQ_TYPE_Q5_K : LLMQ_TYPE_Q4_K;
    if (!strcmp(mix, "q3_k_m")) {
        if (v) return i < 2 ? LLMQ_TYPE_Q5_K : LLMQ_TYPE_Q4_K;
        if (down) return i < n / 16 ? LLMQ_TYPE_Q5_K : LLMQ_TYPE_Q4_K;
        return o ? LLMQ_TYPE_Q4_K : LLMQ_TYPE_Q3_K;
    }
    if (!strcmp(mix, "q3_k_l")) return v || down || o ? LLMQ_TYPE_Q5_K : LLMQ_TYPE_Q3_K;
    if (!strcmp(mix, "q2_k")) return v || down || o ? LLMQ_TYPE_Q3_K : LLMQ_TYPE_Q2_K; /* no grouped KV heads */
    if (!strcmp(mix, "iq4_xs")) return down && i < n / 8 ? LLMQ_TYPE_Q5_K : LLMQ_TYPE_IQ4_XS;
    if (!strcmp(mix, "iq4_nl")) return down && i < n / 8 ? LLMQ_TYPE_Q5_K : LLMQ_TYPE_IQ4_NL;
    return LLMQ_TYPE_COUNT;
}

Test(policy, mixes_follow_llamacpp_layer_by_layer)
{
    const char *const mixes[] = {"q5_k_m", "q4_k_s", "q3_k_m", "q3_k_l", "q2_k", "iq4_xs", "iq4_nl"};
    const int depths[] = {6, 32, 80};
    int q5 = 0;
    for (size_t m = 0; m < sizeof mixes / sizeof mixes[0]; m++)
        for (size_t di = 0; di < 3; di++) {
            llmq_policy p = policy(mixes[m], 0);
            const int n = depths[di];
            for (int l = 0; l < n; l++)
                for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
                    llmq_type want = mix_rule(mixes[m], (llmq_linear)k, l, n);
                    llmq_type got = plan(&p, LLMQ_ROLE_LINEAR, (llmq_linear)k, l, n, 4096, 4096, false).type;
                    cr_expect_eq(got, want, "%s, layer %d of %d, %s: %s", mixes[m], l, n, llmq_linear_names[k], llmq_type_name(got));
                    q5 += got == LLMQ_TYPE_Q5_K;
                }
        }
    cr_expect_gt(q5, 0);
    /* llama.cpp's 70B rule: attn_v that a rule leaves at Q3_K or Q4_K becomes Q5_K. */
    llmq_policy p = policy("q4_k_m", 0);
    llmq_tensor_desc d = {LLMQ_ROLE_LINEAR, LLMQ_LIN_V, 40, 80, 1024, 8192, false, true, 8};
    llmq_tensor_plan out;
    cr_assert_eq(llmq_policy_plan(&p, &d, &out), LLMQ_OK);
    cr_expect_eq(out.type, LLMQ_TYPE_Q5_K, "layer 40 of 80 is not a more-bits layer: Q4_K, raised");
    d.layer = 0;
    cr_assert_eq(llmq_policy_plan(&p, &d, &out), LLMQ_OK);
    cr_expect_eq(out.type, LLMQ_TYPE_Q6_K, "a more-bits layer keeps Q6_K");
    d.linear = LLMQ_LIN_K, d.layer = 40;
    cr_assert_eq(llmq_policy_plan(&p, &d, &out), LLMQ_OK);
    cr_expect_eq(out.type, LLMQ_TYPE_Q4_K, "attn_v only");
    /* q2_k: attn_v Q4_K with 4 or more heads per KV head (Q3_K otherwise), then the 70B rule */
    llmq_policy q2 = policy("q2_k", 0);
    llmq_tensor_desc v = {LLMQ_ROLE_LINEAR, LLMQ_LIN_V, 3, 32, 1024, 4096, false, false, 4};
    cr_assert_eq(llmq_policy_plan(&q2, &v, &out), LLMQ_OK);
    cr_expect_eq(out.type, LLMQ_TYPE_Q4_K);
    v.n_gqa = 2;
    cr_assert_eq(llmq_policy_plan(&q2, &v, &out), LLMQ_OK);
    cr_expect_eq(out.type, LLMQ_TYPE_Q3_K);
    v.model_70b = true;
    cr_assert_eq(llmq_policy_plan(&q2, &v, &out), LLMQ_OK);
    cr_expect_eq(out.type, LLMQ_TYPE_Q5_K);
    /* iq4_xs: attn_v Q5_K with 4 or more heads per KV head; a row IQ4_XS's 256 does not divide is IQ4_NL */
    llmq_policy xs = policy("iq4_xs", 0);
    v.model_70b = false, v.n_gqa = 4;
    cr_assert_eq(llmq_policy_plan(&xs, &v, &out), LLMQ_OK);
    cr_expect_eq(out.type, LLMQ_TYPE_Q5_K);
    v.linear = LLMQ_LIN_Q, v.cols = 96;
    cr_assert_eq(llmq_policy_plan(&xs, &v, &out), LLMQ_OK);
    cr_expect_eq(out.type, LLMQ_TYPE_IQ4_NL);
}

/* ------------------------------------------------------------ driver */

static llmq_quant_opts opts_for(const char *type, int group)
{
    llmq_quant_opts o;
    memset(&o, 0, sizeof o);
    o.policy = policy(type, group);
    o.model_name = "synthetic";
    return o;
}

typedef struct {
    int begins, layers, dones, ends;
    int order_ok;
    double max_forward_diff; /* the quantized layer run through llmq_layer_forward vs RTN-dequantized */
    llmq_layer_method rtn;
} probe;

static int probe_begin(void *st, const llmq_model *src)
{
    probe *p = st;
    p->begins++;
    (void)src;
    return LLMQ_OK;
}

static int probe_quantize(void *st, const llmq_model *src, int layer, llmq_layer_f32 *w,
                          const llmq_quant_target targets[LLMQ_LIN_COUNT], void *const packed[LLMQ_LIN_COUNT])
{
    probe *p = st;
    if (layer != p->layers) p->order_ok = 0;
    p->layers++;
    return p->rtn.quantize_layer(p->rtn.state, src, layer, w, targets, packed);
}

/* Runs a few activations through the quantized layer, as GPTQ would for the next layer. */
static int probe_done(void *st, const llmq_model *src, int layer, const llmq_layer *q)
{
    probe *p = st;
    p->dones++;
    int n = 5, d = src->cfg.hidden_size;
    float *x = calloc((size_t)n * d, sizeof *x), *y = calloc((size_t)n * d, sizeof *y);
    unsigned s = 5;
    for (int i = 0; i < n * d; i++) x[i] = y[i] = synth_uniform(&s);
    /* Reference: the source layer with every linear replaced by its dequantized RTN copy. */
    llmq_layer ref = src->layers[layer];
    float *deq[LLMQ_LIN_COUNT] = {0};
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        const llmq_weight *w = &q->lin[k];
        deq[k] = malloc((size_t)w->rows * w->cols * sizeof(float));
        llmq_dequant_rows(deq[k], w->data, w->type, w->cols, 0, w->rows);
        ref.lin[k] = (llmq_weight){deq[k], LLMQ_TYPE_F32, w->rows, w->cols};
    }
    int rc = llmq_layer_forward(src, q, layer, x, n, NULL, NULL) | llmq_layer_forward(src, &ref, layer, y, n, NULL, NULL);
    for (int i = 0; i < n * d; i++) p->max_forward_diff = fmax(p->max_forward_diff, fabs((double)x[i] - y[i]));
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) free(deq[k]);
    free(x);
    free(y);
    return rc;
}

static void probe_end(void *st) { ((probe *)st)->ends++; }

Test(quantize, layer_method_interface_runs_layers_in_order_with_usable_quantized_layers)
{
    synth_spec s = {"llama", 3, 256, 4, 2, 512, 400, false, false, 3};
    llmq_model *src = synth_model(&s);
    llmq_tokenizer *tok = synth_tokenizer(400);
    probe p = {.order_ok = 1, .rtn = llmq_rtn_method(false)};
    llmq_layer_method m = {"probe", &p, probe_begin, probe_quantize, probe_done, probe_end, NULL, NULL};
    llmq_quant_opts o = opts_for("q4_k_m", 128);
    o.method = &m;
    char dir[256], path[300];
    test_tmpdir(dir, sizeof dir, "quantize-method");
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    llmq_quant_report rep;
    cr_assert_eq(llmq_quantize_model(src, tok, path, &o, &rep), LLMQ_OK, "%s", llmq_last_error());
    cr_expect_eq(p.begins, 1);
    cr_expect_eq(p.layers, 3);
    cr_expect_eq(p.dones, 3);
    cr_expect_eq(p.ends, 1);
    cr_expect(p.order_ok);
    cr_expect_lt(p.max_forward_diff, 1e-4, "quantized layer forward differs by %g", p.max_forward_diff);
    llmq_gguf *g = llmq_gguf_open(path);
    cr_assert_not_null(g, "%s", llmq_last_error());
    const char *method;
    cr_assert_eq(llmq_gguf_get_str(g, "llmq.method", &method, NULL), LLMQ_OK);
    cr_expect_str_eq(method, "probe");
    uint32_t group, ftype, qv;
    cr_assert_eq(llmq_gguf_get_u32(g, "llmq.group_size", &group), LLMQ_OK);
    cr_expect_eq(group, 128);
    cr_assert_eq(llmq_gguf_get_u32(g, "general.file_type", &ftype), LLMQ_OK);
    cr_expect_eq(ftype, 15);
    cr_assert_eq(llmq_gguf_get_u32(g, "general.quantization_version", &qv), LLMQ_OK);
    cr_expect_eq(qv, 2);
    cr_expect_eq(llmq_gguf_alignment(g), 32);
    cr_expect_eq(rep.n_tensors, llmq_gguf_tensor_count(g));
    for (int i = 0; i < rep.n_tensors; i++) {
        const llmq_gguf_tensor *t = llmq_gguf_get_tensor(g, rep.tensors[i].name);
        cr_assert_not_null(t, "%s", rep.tensors[i].name);
        cr_expect_eq(t->type, rep.tensors[i].type, "%s", rep.tensors[i].name);
        cr_expect_eq(t->size, rep.tensors[i].bytes);
        cr_expect_eq(t->offset % 32, 0);
        bool is_norm = strstr(rep.tensors[i].name, "norm") != NULL;
        if (is_norm) cr_expect_eq(rep.tensors[i].rel_error, 0.0);
        else cr_expect(rep.tensors[i].rel_error > 0.001 && rep.tensors[i].rel_error < 0.2, "%s: %g", rep.tensors[i].name,
                       rep.tensors[i].rel_error);
    }
    cr_expect_eq(rep.file_bytes, llmq_gguf_file_size(g));
    cr_expect(rep.bits_per_weight > 4.5 && rep.bits_per_weight < 6.0, "%g bpw", rep.bits_per_weight);
    llmq_gguf_close(g);
    llmq_quant_report_free(&rep);
    llmq_model_free(src);
    llmq_tokenizer_free(tok);
}

/* The reported relative error is ‖W − deq(Q)‖ / ‖W‖ over the whole tensor. */
Test(quantize, reported_error_matches_a_direct_measurement)
{
    synth_spec s = {"llama", 1, 256, 4, 4, 256, 300, true, false, 11};
    llmq_model *src = synth_model(&s);
    llmq_tokenizer *tok = synth_tokenizer(300);
    llmq_quant_opts o = opts_for("q4_1", 64);
    char dir[256], path[300];
    test_tmpdir(dir, sizeof dir, "quantize-err");
    snprintf(path, sizeof path, "%s/e.gguf", dir);
    llmq_quant_report rep;
    cr_assert_eq(llmq_quantize_model(src, tok, path, &o, &rep), LLMQ_OK, "%s", llmq_last_error());
    const llmq_weight *w = &src->layers[0].lin[LLMQ_LIN_UP];
    size_t bytes = llmq_row_size(LLMQ_TYPE_Q4_1, w->cols) * (size_t)w->rows;
    void *packed = malloc(bytes);
    cr_assert_eq(llmq_quantize_rows(LLMQ_TYPE_Q4_1, w->data, w->rows, w->cols, 64, false, packed), LLMQ_OK);
    double want;
    cr_assert_eq(llmq_quant_rel_error(LLMQ_TYPE_Q4_1, w->data, packed, w->rows, w->cols, &want), LLMQ_OK);
    bool found = false;
    for (int i = 0; i < rep.n_tensors; i++)
        if (!strcmp(rep.tensors[i].name, "blk.0.ffn_up.weight")) {
            found = true;
            cr_expect_float_eq(rep.tensors[i].rel_error, want, 1e-9);
            cr_expect_eq(rep.tensors[i].group_size, 64);
            cr_expect_eq(rep.tensors[i].ne[0], 256);
            cr_expect_eq(rep.tensors[i].ne[1], 256);
        }
    cr_expect(found);
    /* Tied: no output tensor; the embedding takes the head's rule (Q6_K for 256 wide). */
    cr_expect_eq(rep.tensors[0].type, LLMQ_TYPE_Q6_K, "%s", rep.tensors[0].name);
    for (int i = 0; i < rep.n_tensors; i++) cr_expect_str_neq(rep.tensors[i].name, "output.weight");
    free(packed);
    llmq_quant_report_free(&rep);
    llmq_model_free(src);
    llmq_tokenizer_free(tok);
}

static void note_count(void *user, const char *line)
{
    int *n = user;
    (*n)++;
    cr_log_info("notice: %s", line);
}

Test(quantize, nan_in_a_source_weight_is_named_and_leaves_no_file)
{
    synth_spec s = {"llama", 2, 256, 4, 2, 256, 300, false, false, 5};
    llmq_model *src = synth_model(&s);
    llmq_tokenizer *tok = synth_tokenizer(300);
    ((float *)src->layers[1].lin[LLMQ_LIN_GATE].data)[3 * 256 + 17] = NAN;
    llmq_quant_opts o = opts_for("q4_0", 128);
    char dir[256], path[300];
    test_tmpdir(dir, sizeof dir, "quantize-nan");
    snprintf(path, sizeof path, "%s/nan.gguf", dir);
    cr_assert_eq(llmq_quantize_model(src, tok, path, &o, NULL), LLMQ_ERR);
    cr_expect(strstr(llmq_last_error(), "blk.1.ffn_gate.weight") && strstr(llmq_last_error(), "NaN") &&
                  strstr(llmq_last_error(), "row 3, column 17"),
              "%s", llmq_last_error());
    struct stat st;
    cr_expect_neq(stat(path, &st), 0, "no file may be left at the output path");
    ((float *)src->layers[1].lin[LLMQ_LIN_GATE].data)[3 * 256 + 17] = INFINITY;
    cr_assert_eq(llmq_quantize_model(src, tok, path, &o, NULL), LLMQ_ERR);
    cr_expect(strstr(llmq_last_error(), "Inf"), "%s", llmq_last_error());
    /* No tokenizer: refused before anything is written. */
    cr_assert_eq(llmq_quantize_model(src, NULL, path, &o, NULL), LLMQ_ERR);
    cr_expect(strstr(llmq_last_error(), "tokenizer"), "%s", llmq_last_error());
    llmq_model_free(src);
    llmq_tokenizer_free(tok);
}

Test(quantize, stories260k_falls_back_with_one_notice_per_tensor)
{
    char dir_model[512];
    REQUIRE_SHARED(dir_model, "models/stories260K");
    llmq_model *src = llmq_model_load(dir_model);
    cr_assert_not_null(src, "%s", llmq_last_error());
    llmq_tokenizer *tok = llmq_tokenizer_load(dir_model);
    int notices = 0;
    llmq_quant_opts o = opts_for("q4_0", 128);
    o.notice = note_count;
    o.user = &notices;
    char dir[256], path[300];
    test_tmpdir(dir, sizeof dir, "quantize-260k");
    snprintf(path, sizeof path, "%s/q.gguf", dir);
    llmq_quant_report rep;
    cr_assert_eq(llmq_quantize_model(src, tok, path, &o, &rep), LLMQ_OK, "%s", llmq_last_error());
    cr_expect_eq(notices, 5, "one notice per ffn_down (172 wide)");
    for (int i = 0; i < rep.n_tensors; i++) {
        const llmq_tensor_report *t = &rep.tensors[i];
        if (strstr(t->name, "ffn_down")) cr_expect_eq(t->type, LLMQ_TYPE_F16, "%s", t->name);
        else if (strstr(t->name, "ffn_gate") || strstr(t->name, "attn_q")) cr_expect_eq(t->type, LLMQ_TYPE_Q4_0, "%s", t->name);
    }
    cr_expect_eq(rep.tensors[0].type, LLMQ_TYPE_Q8_0, "tied 64-wide embedding: the head's Q8_0");
    llmq_model *m = llmq_model_load(path);
    cr_assert_not_null(m, "%s", llmq_last_error());
    llmq_model_free(m);
    llmq_quant_report_free(&rep);
    llmq_model_free(src);
    llmq_tokenizer_free(tok);
}

/* ------------------------------------------------------------ CLI */

static char *run(const char *cmd, int *status)
{
    FILE *p = popen(cmd, "r");
    cr_assert(p, "popen %s", cmd);
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap);
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (n + 1 == cap) buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return buf;
}

Test(quantize_cli, quantize_json_inspect_and_ppl_on_the_gguf)
{
    char bin[600], model[512], dir[256], cmd[4096];
    test_llmq_binary(bin, sizeof bin);
    REQUIRE_SHARED(model, "models/stories260K");
    test_tmpdir(dir, sizeof dir, "quantize-cli");
    int st;
    snprintf(cmd, sizeof cmd, "%s quantize %s -o %s/s.gguf --method rtn --type q8_0 --group-size 32 --json 2>&1", bin, model, dir);
    char *out = run(cmd, &st);
    cr_assert_eq(st, 0, "%s", out);
    json_t *j = last_json_line(out);
    char want_path[400];
    snprintf(want_path, sizeof want_path, "%s/s.gguf", dir);
    cr_expect_str_eq(json_string_value(json_object_get(j, "output")), want_path);
    cr_expect_gt(json_integer_value(json_object_get(j, "bytes")), 100000);
    double bpw = json_real_value(json_object_get(j, "bits_per_weight"));
    cr_expect(bpw > 8.0 && bpw < 16.0, "%g", bpw);
    json_t *tensors = json_object_get(j, "tensors");
    cr_expect_eq(json_array_size(tensors), 47);
    json_t *t0 = json_array_get(tensors, 0);
    cr_expect_str_eq(json_string_value(json_object_get(t0, "name")), "token_embd.weight");
    cr_expect_str_eq(json_string_value(json_object_get(t0, "type")), "q8_0");
    cr_expect_eq(json_integer_value(json_array_get(json_object_get(t0, "shape"), 0)), 512);
    cr_expect(json_real_value(json_object_get(t0, "rel_error")) > 0);
    json_decref(j);
    free(out);

    snprintf(cmd, sizeof cmd, "%s inspect %s/s.gguf --json", bin, dir);
    out = run(cmd, &st);
    cr_assert_eq(st, 0, "%s", out);
    j = last_json_line(out);
    cr_expect_eq(json_integer_value(json_object_get(j, "parameters")), 260032);
    json_t *meta = json_object_get(j, "metadata");
    cr_expect_str_eq(json_string_value(json_object_get(meta, "general.architecture")), "llama");
    cr_expect_eq(json_integer_value(json_object_get(meta, "llama.block_count")), 5);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(meta, "tokenizer.ggml.tokens"), "count")), 512);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(j, "config"), "num_key_value_heads")), 4);
    json_decref(j);
    free(out);

    snprintf(cmd, sizeof cmd, "%s inspect %s --json", bin, model);
    out = run(cmd, &st);
    cr_assert_eq(st, 0, "%s", out);
    j = last_json_line(out);
    cr_expect_eq(json_integer_value(json_object_get(j, "parameters")), 260032);
    cr_expect_eq(json_array_size(json_object_get(j, "tensors")), 47);
    json_decref(j);
    free(out);

    /* The GGUF alone is enough for perplexity on text: its vocabulary tokenizes. */
    snprintf(cmd, sizeof cmd,
             "printf 'Once upon a time, there was a little girl named Lily. She liked to play with her ball in the park.' "
             "> %s/t.txt && %s ppl %s/s.gguf --text %s/t.txt --ctx 8 --json 2>&1",
             dir, bin, dir, dir);
    out = run(cmd, &st);
    cr_assert_eq(st, 0, "%s", out);
    j = last_json_line(out);
    double ppl = json_real_value(json_object_get(j, "ppl"));
    cr_expect(ppl > 1 && ppl < 100, "ppl %g", ppl);
    json_decref(j);
    free(out);
}

Test(quantize_cli, refusals_and_help)
{
    char bin[600], model[512], cmd[2048];
    test_llmq_binary(bin, sizeof bin);
    REQUIRE_SHARED(model, "models/stories260K");
    int st;
    /* arguments after `quantize MODEL -o /tmp/never.gguf`, and the message each must give (exit 2) */
    static const struct { const char *args, *message; } refusals[] = {
        {"--method gptq", "needs calibration text: --calib FILE"},
        {"--type q7_k", "unknown type 'q7_k'"},
        {"--group-size 48", "--group-size"},
        {"--method rtn --refine 2", "--refine refines GPTQ's result: it needs --method gptq, gptaq, awq+gptq or awq+gptaq, not rtn"},
        {"--method gptq --calib x --gptaq-alpha 0.5", "--gptaq-alpha and --gptaq-form apply to --method gptaq, awq+gptaq or gptaq+block, not gptq"},
        {"--method gptaq --calib x --gptaq-form exact", "--gptaq-form must be target or sweep, not 'exact'"},
        {"--method gptq --calib x --refine 17", "--refine takes 0 to 16 passes, not 17"},
        {"--method gptaq --calib x --block-iters 10", "--block-iters, --block-batch and --block-init apply to --method block or gptaq+block, not gptaq"},
        {"--method block --calib x --block-init adam", "--block-init must be gptq or rtn, not 'adam'"},
        {"--method block --calib x --format gptq", "--method block tunes ggml blocks: it applies to --format gguf only"},
        {"--method autoround --calib x", "--method must be rtn, gptq, gptaq, awq, awq+gptq, awq+gptaq, block or gptaq+block, not 'autoround'"},
    };
    char *out;
    for (size_t i = 0; i < sizeof refusals / sizeof *refusals; i++) {
        snprintf(cmd, sizeof cmd, "%s quantize %s -o /tmp/never.gguf %s 2>&1", bin, model, refusals[i].args);
        out = run(cmd, &st);
        cr_expect_eq(st, 2, "%s", refusals[i].args);
        cr_expect(strstr(out, refusals[i].message), "%s: %s", refusals[i].args, out);
        free(out);
    }
    snprintf(cmd, sizeof cmd, "%s quantize --help", bin);
    out = run(cmd, &st);
    cr_expect_eq(st, 0);
    cr_expect(strstr(out, "--keep-output") && strstr(out, "q4_k_m"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s inspect /nonexistent.gguf 2>&1", bin);
    out = run(cmd, &st);
    cr_expect_eq(st, 1);
    cr_expect(strstr(out, "/nonexistent.gguf"), "%s", out);
    free(out);
}

/* inspect holds a checkpoint to the tensors its config.json implies, as the
 * loader does: layer 0's q_proj renamed in the safetensors header is named as
 * missing (exit 1) and the stray name as unused, on the one stderr line; the
 * intact checkpoint passes with both lists empty. */
Test(quantize_cli, inspect_names_missing_and_unused_tensors)
{
    char bin[600], dir[256], path[400], tmp[420], cmd[2048];
    test_llmq_binary(bin, sizeof bin);
    test_tmpdir(dir, sizeof dir, "inspect-missing");
    llmq_synth_opts so;
    llmq_synth_defaults(&so);
    cr_assert_eq(llmq_synth_write(dir, &so), LLMQ_OK, "%s", llmq_last_error());
    int st;
    snprintf(cmd, sizeof cmd, "%s inspect %s --json 2>&1", bin, dir);
    char *out = run(cmd, &st);
    cr_assert_eq(st, 0, "%s", out);
    json_t *j = last_json_line(out);
    cr_expect_eq(json_array_size(json_object_get(j, "missing")), 0);
    cr_expect_eq(json_array_size(json_object_get(j, "unused")), 0);
    json_decref(j);
    free(out);

    const char *gone = "model.layers.0.self_attn.q_proj.weight";
    char stray[] = "model.layers.0.self_attn.q_proj.weight_orig";
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s/model.safetensors.tmp", dir);
    llmq_safetensors *f = llmq_st_open(path);
    cr_assert_not_null(f, "%s", llmq_last_error());
    size_t n = llmq_st_count(f), renamed = 0;
    llmq_st_tensor *ts = malloc(n * sizeof *ts);
    for (size_t i = 0; i < n; i++) {
        ts[i] = *llmq_st_at(f, i);
        if (!strcmp(ts[i].name, gone)) ts[i].name = stray, renamed++;
    }
    cr_assert_eq(renamed, 1);
    cr_assert_eq(llmq_st_write(tmp, ts, n, NULL), LLMQ_OK, "%s", llmq_last_error());
    free(ts);
    llmq_st_close(f);
    cr_assert_eq(rename(tmp, path), 0);

    snprintf(cmd, sizeof cmd, "%s inspect %s 2>&1 >/dev/null", bin, dir);
    out = run(cmd, &st);
    cr_expect_eq(st, 1, "%s", out);
    char want[1024];
    snprintf(want, sizeof want,
             "llmq inspect: %s: 1 tensor that config.json implies missing: model.layers.0.self_attn.q_proj.weight; "
             "1 tensor not used by the model: model.layers.0.self_attn.q_proj.weight_orig\n",
             dir);
    cr_expect_str_eq(out, want);
    free(out);

    snprintf(cmd, sizeof cmd, "%s inspect %s --json 2>/dev/null", bin, dir);
    out = run(cmd, &st);
    cr_expect_eq(st, 1, "%s", out);
    j = last_json_line(out);
    cr_expect_str_eq(json_string_value(json_array_get(json_object_get(j, "missing"), 0)), gone);
    cr_expect_str_eq(json_string_value(json_array_get(json_object_get(j, "unused"), 0)), stray);
    json_decref(j);
    free(out);
}

/* ------------------------------------------------------------ progress on a terminal */

/* The demo checkpoint (4 layers) in a fresh directory. */
static void demo_model(char *dir, size_t cap, const char *tag)
{
    test_tmpdir(dir, cap, tag);
    llmq_synth_opts so;
    llmq_synth_defaults(&so);
    so.calib_bytes = 60000;
    so.eval_bytes = 1000;
    cr_assert_eq(llmq_synth_write(dir, &so), LLMQ_OK, "%s", llmq_last_error());
}

/* Runs argv with stdin and stderr on a pseudo-terminal `cols` columns wide
 * (output post-processing off, so "\n" arrives as "\n") and stdout on
 * /dev/null, files limited to max_file bytes when > 0 (a write past it
 * fails with EFBIG); returns what the terminal received, the exit status and
 * the wall time. */
static char *run_on_pty(char *const argv[], int cols, long max_file, int *status, double *seconds)
{
    struct winsize ws = {.ws_row = 24, .ws_col = (unsigned short)cols};
    int master;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fflush(NULL);
    pid_t pid = forkpty(&master, NULL, NULL, &ws);
    cr_assert(pid >= 0, "forkpty failed");
    if (pid == 0) {
        struct termios t;
        if (tcgetattr(STDERR_FILENO, &t) == 0) {
            t.c_oflag &= ~(tcflag_t)OPOST;
            tcsetattr(STDERR_FILENO, TCSANOW, &t);
        }
        if (max_file > 0) {
            struct rlimit rl = {(rlim_t)max_file, (rlim_t)max_file};
            signal(SIGXFSZ, SIG_IGN);
            if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(125);
        }
        int null = open("/dev/null", O_WRONLY);
        if (null < 0 || dup2(null, STDOUT_FILENO) < 0) _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 1 == cap) buf = realloc(buf, cap *= 2);
        ssize_t got = read(master, buf + n, cap - n - 1);
        if (got <= 0) break; /* EIO once the child has closed the terminal */
        n += (size_t)got;
    }
    buf[n] = 0;
    close(master);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    *seconds = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    return buf;
}

static bool matches(const char *pattern, const char *s)
{
    regex_t re;
    cr_assert_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0, "bad pattern %s", pattern);
    bool ok = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

#define LIVE_LINE "^layer [0-4]/4  [a-z_, ]+ +([0-9]+ tok/s)?  elapsed [0-9]+:[0-9]{2}  ETA (--|[0-9]+:[0-9]{2})$"
#define LIVE_DONE "^layer 4/4  done  elapsed [0-9]+:[0-9]{2}$"
#define TIMES_RSS "  fwd [0-9]+\\.[0-9]s hess [0-9]+\\.[0-9]s solve [0-9]+\\.[0-9]s awq [0-9]+\\.[0-9]s  peak RSS [0-9]+ MiB$"
#define GPTQ_ERR " gptq err [0-9]+\\.[0-9]{5} \\(rtn [0-9]+\\.[0-9]{5}\\)( \\[damp raised [0-9]+×\\])?"

/* What a terminal shows, taken apart: each "\r<text>\033[K" is one draw of
 * the live line (its text kept in draws[], at most 4096), and the text after
 * a "\r\033[K" is a line printed above it. */
typedef struct {
    char *draws[4096];
    int n_draws;
    char *printed[64]; /* whole lines printed above the live line, or plainly */
    int n_printed;
} screen;

static void parse_screen(char *out, screen *s)
{
    memset(s, 0, sizeof *s);
    for (char *p = out; *p;) {
        if (!strncmp(p, "\r\033[K", 4)) { /* the live line cleared: a line follows */
            p += 4;
            char *nl = strchr(p, '\n');
            cr_assert_not_null(nl, "a line printed above the live line does not end: %s", p);
            *nl = 0;
            cr_assert_lt(s->n_printed, 64);
            s->printed[s->n_printed++] = p;
            p = nl + 1;
        } else if (*p == '\r') { /* a draw: "\r", text, clear to end of line */
            char *end = strstr(p + 1, "\033[K");
            cr_assert_not_null(end, "a draw without clear-to-end-of-line: %s", p);
            *end = 0;
            cr_assert_lt(s->n_draws, 4096);
            s->draws[s->n_draws++] = p + 1;
            p = end + 3;
            if (*p == '\n') p++; /* the final draw ends the line */
        } else { /* a plain line (before the live line starts, or after it ends) */
            char *nl = strchr(p, '\n');
            cr_assert_not_null(nl, "output does not end with a newline: %s", p);
            *nl = 0;
            cr_assert_lt(s->n_printed, 64);
            s->printed[s->n_printed++] = p;
            p = nl + 1;
        }
    }
}

/* On a terminal, `llmq quantize` keeps one line, redrawn in place with
 * "\r" … "\033[K" at most ~10 times a second: layer i/N, the stage, the
 * calibration forward's tokens/s, elapsed and ETA; the per-layer summaries go
 * above it, and the line ends with a newline when the run does. 16 × 512
 * calibration tokens on one thread (about as fast on any machine) make the
 * forwards most of the ~3 s run, so that the draws (every 100 ms) catch
 * them, and later layers, with an ETA. */
Test(quantize_cli, terminal_shows_one_live_line_with_stage_rate_and_eta, .timeout = 300)
{
    char bin[600], dir[256], out[512], calib[512];
    test_llmq_binary(bin, sizeof bin);
    demo_model(dir, sizeof dir, "quantize-tty");
    snprintf(out, sizeof out, "%s/g.gguf", dir);
    snprintf(calib, sizeof calib, "%s/calib.txt", dir);
    char *argv[] = {bin, "quantize", dir, "-o", out, "--method", "gptq", "--calib", calib, "--calib-samples", "16", "--calib-seqlen", "512",
                    "--threads", "1",
                    NULL};
    int st;
    double seconds;
    char *text = run_on_pty(argv, 120, 0, &st, &seconds);
    cr_assert_eq(st, 0, "%s", text);
    size_t len = strlen(text);
    cr_assert(len > 0 && text[len - 1] == '\n', "the terminal output does not end with a newline");
    cr_assert(strstr(text, "\rlayer "), "no \\r-redrawn layer line");
    screen s;
    parse_screen(text, &s);
    char first[700];
    snprintf(first, sizeof first, "llmq quantize: gptq, calibration 16 × 512 tokens from %s", calib);
    cr_assert_eq(s.n_printed, 5, "the header and one summary per layer, got %d lines", s.n_printed);
    cr_expect_str_eq(s.printed[0], first);
    for (int l = 1; l <= 4; l++) {
        char head[32];
        snprintf(head, sizeof head, "layer %d/4:", l);
        cr_expect(!strncmp(s.printed[l], head, strlen(head)) && matches("^layer [1-4]/4:" GPTQ_ERR TIMES_RSS, s.printed[l]),
                  "summary line %d: %s", l, s.printed[l]);
    }
    cr_assert_geq(s.n_draws, 3);
    bool eta = false, rate = false, hessian = false, solve = false;
    for (int i = 0; i < s.n_draws; i++) {
        const char *d = s.draws[i];
        cr_expect_lt(strlen(d), 120, "a draw as wide as the terminal wraps: %s", d);
        if (i == s.n_draws - 1) {
            cr_expect(matches(LIVE_DONE, d), "the last draw: %s", d);
            continue;
        }
        cr_expect(matches(LIVE_LINE, d), "draw %d: %s", i, d);
        eta |= matches("ETA [0-9]+:[0-9]{2}$", d);
        rate |= matches(" [1-9][0-9]* tok/s", d);
        hessian |= strstr(d, "  hessian ") != NULL;
        solve |= strstr(d, "  solve ") != NULL;
    }
    cr_expect(eta, "no draw with an ETA");
    cr_expect(rate, "no draw with the forward's tokens/s");
    cr_expect(hessian && solve, "stages seen: hessian %d, solve %d", hessian, solve);
    cr_expect_leq(s.n_draws, 10 * seconds + 3, "%d draws in %.1f s: more than 10 a second", s.n_draws, seconds);
    free(text);

    /* A narrow terminal: the line is cut to its width rather than wrapped. */
    char *narrow[] = {bin, "quantize", dir, "-o", out, "--method", "rtn", NULL};
    text = run_on_pty(narrow, 30, 0, &st, &seconds);
    cr_assert_eq(st, 0, "%s", text);
    parse_screen(text, &s);
    cr_assert_geq(s.n_draws, 1, "%s", text);
    for (int i = 0; i < s.n_draws; i++) cr_expect_leq(strlen(s.draws[i]), 29, "%s", s.draws[i]);
    cr_expect_eq(s.n_printed, 0);
    free(text);
}

/* An error in the middle of the run (the file system refuses the GGUF past
 * 60% of its size): the live line ends with a newline and the message stands
 * on a line of its own below it. */
Test(quantize_cli, terminal_error_ends_the_live_line_first, .timeout = 300)
{
    char bin[600], dir[256], out[512];
    test_llmq_binary(bin, sizeof bin);
    demo_model(dir, sizeof dir, "quantize-tty-err");
    snprintf(out, sizeof out, "%s/r.gguf", dir);
    char *argv[] = {bin, "quantize", dir, "-o", out, "--method", "rtn", NULL};
    int st;
    double seconds;
    free(run_on_pty(argv, 120, 0, &st, &seconds));
    cr_assert_eq(st, 0);
    struct stat sb;
    cr_assert_eq(stat(out, &sb), 0);
    unlink(out);
    char *text = run_on_pty(argv, 120, (long)sb.st_size * 6 / 10, &st, &seconds);
    cr_assert_eq(st, 1, "%s", text);
    const char *msg = strstr(text, "llmq quantize: ");
    cr_assert_not_null(msg, "%s", text);
    cr_expect(msg > text + 4 && !strncmp(msg - 4, "\033[K\n", 4), "the live line did not end before the message");
    cr_expect_eq(strchr(msg, '\n'), text + strlen(text) - 1, "the message is not the last line: %s", msg);
    screen s;
    parse_screen(text, &s);
    cr_assert_geq(s.n_draws, 1);
    cr_expect(matches(LIVE_LINE, s.draws[s.n_draws - 1]), "the last draw: %s", s.draws[s.n_draws - 1]);
    cr_expect_eq(s.n_printed, 1, "only the message below the live line");
    cr_expect_neq(stat(out, &sb), 0, "no file may be left at the output path");
    free(text);
}

/* stderr not a terminal: the plain lines as before (no \r, no escapes): the
 * calibration header and one summary per layer; nothing at all for RTN. */
/* --refine: every linear's reported error after the passes is at most GPTQ's,
 * below it somewhere, and the progress line says so. */
Test(quantize_cli, refine_lowers_the_reported_errors, .timeout = 300)
{
    char bin[600], dir[256], cmd[4096];
    test_llmq_binary(bin, sizeof bin);
    demo_model(dir, sizeof dir, "quantize-refine");
    int st;
    snprintf(cmd, sizeof cmd, "%s quantize %s -o %s/r.gguf --method gptq --type q4_0 --calib %s/calib.txt --calib-samples 2 --calib-seqlen 64 "
             "--refine 2 --json 2>/dev/null", bin, dir, dir, dir);
    char *out = run(cmd, &st);
    cr_assert_eq(st, 0, "%s", out);
    json_t *j = last_json_line(out);
    int below = 0, n = 0;
    size_t i;
    json_t *layer;
    json_array_foreach(json_object_get(j, "layers"), i, layer) {
        const char *name;
        json_t *lin;
        json_object_foreach(json_object_get(layer, "linears"), name, lin) {
            json_t *g = json_object_get(lin, "err_gptq"), *r = json_object_get(lin, "err_refine");
            if (!g) continue;
            cr_assert_not_null(r, "layer %zu %s: no err_refine", i, name);
            cr_expect_leq(json_real_value(r), json_real_value(g), "layer %zu %s: refined %g > gptq %g", i, name, json_real_value(r), json_real_value(g));
            below += json_real_value(r) < json_real_value(g);
            n++;
        }
    }
    cr_expect_gt(n, 0);
    cr_expect_gt(below, 0, "no linear improved");
    json_decref(j);
    free(out);
}

Test(quantize_cli, plain_progress_when_stderr_is_not_a_terminal, .timeout = 300)
{
    char bin[600], dir[256], cmd[4096];
    test_llmq_binary(bin, sizeof bin);
    demo_model(dir, sizeof dir, "quantize-plain");
    int st;
    snprintf(cmd, sizeof cmd, "%s quantize %s -o %s/a.gguf --method awq+gptq --calib %s/calib.txt --calib-samples 1 --calib-seqlen 64 2>&1 >/dev/null",
             bin, dir, dir, dir);
    char *out = run(cmd, &st);
    cr_assert_eq(st, 0, "%s", out);
    cr_expect(!strchr(out, '\r') && !strchr(out, '\033'), "terminal control in plain output: %s", out);
    char *save = NULL, want[700];
    snprintf(want, sizeof want, "llmq quantize: awq+gptq, calibration 1 × 64 tokens from %s/calib.txt", dir);
    char *line = strtok_r(out, "\n", &save);
    cr_assert_not_null(line);
    cr_expect_str_eq(line, want);
    int n = 0;
    while ((line = strtok_r(NULL, "\n", &save))) {
        n++;
        char head[32];
        snprintf(head, sizeof head, "layer %d/4:", n);
        cr_expect(!strncmp(line, head, strlen(head)) && matches("^layer [1-4]/4: awq r=[0-9]\\.[0-9]{2}(/[0-9]\\.[0-9]{2})*" GPTQ_ERR TIMES_RSS, line),
                  "line %d: %s", n, line);
    }
    cr_expect_eq(n, 4);
    free(out);
    snprintf(cmd, sizeof cmd, "%s quantize %s -o %s/r.gguf --method rtn 2>&1 >/dev/null", bin, dir, dir);
    out = run(cmd, &st);
    cr_assert_eq(st, 0, "%s", out);
    cr_expect_str_eq(out, "", "RTN prints nothing on stderr off a terminal");
    free(out);
}
