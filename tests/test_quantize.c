/* The tensor policy (llama-quant.cpp's rules), the quantize driver and its
 * layer-method interface, and the `llmq quantize` / `llmq inspect` CLI. */
#include "llmq/error.h"
#include "llmq/gguf.h"
#include "llmq/gguf_model.h"
#include "llmq/kernels.h"
#include "llmq/quantize.h"
#include "llmq/rtn.h"
#include "synth_model.h"
#include "test_util.h"

#include <jansson.h>
#include <math.h>
#include <sys/wait.h>

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
    llmq_tensor_desc d = {role, lin, layer, n_layers, rows, cols, tied};
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
    llmq_policy q4k = policy("q4_k", 128);
    cr_expect_eq(plan(&q4k, LLMQ_ROLE_LINEAR, LLMQ_LIN_GATE, 0, 5, 172, 64, true).type, LLMQ_TYPE_F16);
    llmq_policy q6k = policy("q6_k", 0);
    cr_expect_eq(plan(&q6k, LLMQ_ROLE_LINEAR, LLMQ_LIN_Q, 0, 5, 64, 64, true).type, LLMQ_TYPE_Q8_0);
    cr_expect_eq(plan(&q6k, LLMQ_ROLE_LINEAR, LLMQ_LIN_DOWN, 0, 5, 64, 172, true).type, LLMQ_TYPE_F16);
    llmq_policy q3k = policy("q3_k", 0);
    cr_expect_eq(plan(&q3k, LLMQ_ROLE_LINEAR, LLMQ_LIN_Q, 0, 5, 64, 64, true).type, LLMQ_TYPE_Q4_0);
    cr_expect_eq(plan(&q40, LLMQ_ROLE_EMBED, 0, -1, 5, 512, 64, true).type, LLMQ_TYPE_Q8_0, "tied 64-wide head");
    /* A K-quant group must divide the super-block. */
    llmq_policy bad = policy("q4_k", 96);
    llmq_tensor_desc d = {LLMQ_ROLE_LINEAR, LLMQ_LIN_Q, 0, 2, 256, 256, false};
    llmq_tensor_plan out;
    cr_expect_eq(llmq_policy_plan(&bad, &d, &out), LLMQ_ERR);
}

Test(policy, scheme_names_and_file_types)
{
    llmq_quant_scheme s;
    cr_assert_eq(llmq_quant_scheme_parse("Q4_K_M", &s), LLMQ_OK);
    cr_expect(s.q4_k_m);
    cr_expect_eq(s.base, LLMQ_TYPE_Q4_K);
    cr_expect_eq(s.file_type, 15);
    cr_assert_eq(llmq_quant_scheme_parse("q8_0", &s), LLMQ_OK);
    cr_expect_eq(s.file_type, 7);
    cr_assert_eq(llmq_quant_scheme_parse("bf16", &s), LLMQ_OK);
    cr_expect_eq(s.file_type, 32);
    cr_expect_eq(llmq_quant_scheme_parse("q5_k", &s), LLMQ_ERR);
    cr_expect(strstr(llmq_last_error(), "q4_k_m"), "%s", llmq_last_error());
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
    llmq_layer_method m = {"probe", &p, probe_begin, probe_quantize, probe_done, probe_end};
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

static json_t *last_json_line(const char *out)
{
    const char *line = strrchr(out, '{');
    while (line && line > out && line[-1] != '\n') line--;
    cr_assert_not_null(line, "no JSON in: %s", out);
    json_error_t e;
    json_t *j = json_loads(line, 0, &e);
    cr_assert_not_null(j, "%s: %s", e.text, line);
    return j;
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
    snprintf(cmd, sizeof cmd, "%s quantize %s -o /tmp/never.gguf --method gptq 2>&1", bin, model);
    char *out = run(cmd, &st);
    cr_expect_eq(st, 2);
    cr_expect(strstr(out, "needs calibration text: --calib FILE"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s quantize %s -o /tmp/never.gguf --type q5_k 2>&1", bin, model);
    out = run(cmd, &st);
    cr_expect_eq(st, 2);
    cr_expect(strstr(out, "unknown type 'q5_k'"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s quantize %s -o /tmp/never.gguf --group-size 48 2>&1", bin, model);
    out = run(cmd, &st);
    cr_expect_eq(st, 2);
    cr_expect(strstr(out, "--group-size"), "%s", out);
    free(out);
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
