/* Hugging Face GPTQ / AWQ checkpoints (llmq/hf_quant.h): write, read back,
 * an independent decoder of the packings, conversion to GGUF, errors. */
#include "llmq/calibrated.h"
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/hf_grid.h"
#include "llmq/hf_load.h"
#include "llmq/hf_quant.h"
#include "llmq/kernels.h"
#include "llmq/ppl.h"
#include "llmq/quantize.h"
#include "llmq/safetensors.h"
#include "llmq/synth.h"
#include "llmq/tokenizer.h"
#include "test_util.h"

#include <math.h>

static char dir[512];
static llmq_model *base;
static llmq_tokenizer *tok;

static void setup(void)
{
    test_synth_model(dir, sizeof dir, "hfq", 2, 40000, 20000, &base, &tok);
}

static void teardown(void)
{
    llmq_tokenizer_free(tok);
    llmq_model_free(base);
}

/* ------------------------------------------------------------ the solver's values */

/* Wraps a layer method and keeps every quantized linear as decoded floats:
 * the values the solver produced, before any file is written. */
typedef struct {
    float *w[8][LLMQ_LIN_COUNT];
} layer_values;

typedef struct {
    const llmq_layer_method *inner;
    layer_values v;
} capture;

static int cap_begin(void *s, const llmq_model *m)
{
    const capture *c = s;
    return c->inner->begin ? c->inner->begin(c->inner->state, m) : LLMQ_OK;
}

static int cap_quantize(void *s, const llmq_model *m, int l, llmq_layer_f32 *w, const llmq_quant_target t[LLMQ_LIN_COUNT],
                        void *const packed[LLMQ_LIN_COUNT])
{
    const capture *c = s;
    return c->inner->quantize_layer(c->inner->state, m, l, w, t, packed);
}

static int cap_done(void *s, const llmq_model *m, int l, const llmq_layer *q)
{
    capture *c = s;
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        const llmq_weight *w = &q->lin[k];
        c->v.w[l][k] = malloc((size_t)w->rows * w->cols * sizeof(float));
        cr_assert_eq(llmq_dequant_rows(c->v.w[l][k], w->data, w->type, w->cols, 0, w->rows), LLMQ_OK);
    }
    return c->inner->layer_done ? c->inner->layer_done(c->inner->state, m, l, q) : LLMQ_OK;
}

static int cap_embedded(void *s, const llmq_model *m, const llmq_weight *e)
{
    const capture *c = s;
    return c->inner->embedded ? c->inner->embedded(c->inner->state, m, e) : LLMQ_OK;
}

static int cap_head(void *s, const llmq_model *m, const float *W, int r0, int rows, int cols, llmq_type t, int g, void *packed)
{
    const capture *c = s;
    return c->inner->quantize_head(c->inner->state, m, W, r0, rows, cols, t, g, packed);
}

static void cap_end(void *s)
{
    const capture *c = s;
    if (c->inner->end) c->inner->end(c->inner->state);
}

static void capture_free(capture *c)
{
    for (int l = 0; l < 8; l++)
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) free(c->v.w[l][k]);
}

/* Runs `kind` (a calibrated method, -1: RTN) into the HF directory out with
 * config q, keeping the solver's values in cap. */
static void export_run(const char *out, llmq_hf_qconfig q, int kind, size_t shard_bytes, capture *cap)
{
    llmq_calib calib = {0};
    llmq_layer_method lm = llmq_rtn_method(false);
    llmq_calibrated_opts co = {0};
    if (kind >= 0) {
        char cpath[600];
        snprintf(cpath, sizeof cpath, "%s/calib.txt", dir);
        llmq_calib_opts cop = {4, 64, 0};
        cr_assert_eq(llmq_calib_from_file(tok, cpath, &cop, &calib), LLMQ_OK, "%s", llmq_last_error());
        co.kind = (llmq_calibrated_kind)kind;
        co.calib = &calib;
        co.gptq = llmq_gptq_default_opts();
        co.gptq.act_order = q.desc_act;
        llmq_awq_defaults(&co.awq);
        cr_assert_eq(llmq_calibrated_method(&co, &lm), LLMQ_OK);
    }
    memset(cap, 0, sizeof *cap);
    cap->inner = &lm;
    llmq_layer_method wrapped = {lm.name, cap, cap_begin, cap_quantize, cap_done, cap_end, cap_embedded, cap_head};
    llmq_hf_write_opts wo = {.q = q, .src_dir = dir, .damp = 0.01, .shard_bytes = shard_bytes};
    llmq_hf_writer *w = llmq_hf_writer_new(out, &wo);
    cr_assert_not_null(w, "%s", llmq_last_error());
    llmq_tensor_sink sink = llmq_hf_writer_sink(w);
    llmq_quant_opts qo = {.policy = {.scheme = {"hf", llmq_hf_grid_type(q.bits, q.sym), false, 0},
                                     .group_size = q.group_size,
                                     .keep_output = LLMQ_TYPE_BF16,
                                     .keep_embed = LLMQ_TYPE_BF16},
                          .method = &wrapped,
                          .sink = &sink};
    cr_assert_eq(llmq_quantize_model(base, NULL, out, &qo, NULL), LLMQ_OK, "%s", llmq_last_error());
    llmq_hf_writer_free(w);
    if (kind >= 0) llmq_calibrated_method_free(&lm);
    llmq_calib_free(&calib);
}

static const char *const groups[LLMQ_LIN_COUNT] = {"self_attn", "self_attn", "self_attn", "self_attn", "mlp", "mlp", "mlp"};

/* ------------------------------------------------- an independent decoder */

/* fp16 bits to float, from the IEEE 754 definition (not llmq's converter). */
static float half(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0 ? ldexpf((float)m, -24) : ldexpf((float)(1024 + m), e - 25);
    return (h & 0x8000) ? -v : v;
}

/* A safetensors file read by hand: header JSON and the data area. */
typedef struct {
    unsigned char *buf;
    size_t size;
    json_t *hdr;
    const unsigned char *data;
} raw_st;

static void raw_open(raw_st *r, const char *path)
{
    FILE *fp = fopen(path, "rb");
    cr_assert_not_null(fp, "%s", path);
    fseek(fp, 0, SEEK_END);
    r->size = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    r->buf = malloc(r->size);
    cr_assert_eq(fread(r->buf, 1, r->size, fp), r->size);
    fclose(fp);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | r->buf[i];
    json_error_t e;
    r->hdr = json_loadb((const char *)r->buf + 8, (size_t)n, 0, &e);
    cr_assert_not_null(r->hdr, "%s: %s", path, e.text);
    r->data = r->buf + 8 + n;
}

static const void *raw_tensor(const raw_st *r, const char *name, const char *dtype, int64_t d0, int64_t d1)
{
    json_t *t = json_object_get(r->hdr, name);
    cr_assert_not_null(t, "tensor %s", name);
    cr_assert_str_eq(json_string_value(json_object_get(t, "dtype")), dtype, "%s", name);
    json_t *shape = json_object_get(t, "shape");
    cr_assert_eq(json_integer_value(json_array_get(shape, 0)), d0, "%s dim 0", name);
    if (d1) cr_assert_eq(json_integer_value(json_array_get(shape, 1)), d1, "%s dim 1", name);
    return r->data + json_integer_value(json_array_get(json_object_get(t, "data_offsets"), 0));
}

static void raw_close(raw_st *r)
{
    json_decref(r->hdr);
    free(r->buf);
}

static uint32_t u32_at(const void *p, size_t i)
{
    uint32_t v;
    memcpy(&v, (const unsigned char *)p + 4 * i, 4);
    return v;
}

static uint16_t u16_at(const void *p, size_t i)
{
    uint16_t v;
    memcpy(&v, (const unsigned char *)p + 2 * i, 2);
    return v;
}

/* The weight w[out][in] of linear `prefix`, decoded as AutoGPTQ's
 * qlinear_cuda_old / GPTQModel dequantize and AutoAWQ's unpack_awq +
 * reverse_awq_order compute it. */
static void reference_decode(const raw_st *r, const char *prefix, const char *method, int bits, bool v2, int gs, int out, int in, float *w)
{
    char n[256];
    const int ng = in / gs;
    const uint32_t mask = (1u << bits) - 1;
    if (!strcmp(method, "awq")) {
        static const int order_map[8] = {0, 2, 4, 6, 1, 3, 5, 7};
        snprintf(n, sizeof n, "%s.qweight", prefix);
        const void *qw = raw_tensor(r, n, "I32", in, out / 8);
        snprintf(n, sizeof n, "%s.qzeros", prefix);
        const void *qz = raw_tensor(r, n, "I32", ng, out / 8);
        snprintf(n, sizeof n, "%s.scales", prefix);
        const void *sc = raw_tensor(r, n, "F16", ng, out);
        for (int i = 0; i < in; i++)
            for (int c = 0; c < out / 8; c++)
                for (int k = 0; k < 8; k++) {
                    const int o = 8 * c + order_map[k], g = i / gs;
                    const int q = (int)((u32_at(qw, (size_t)i * (out / 8) + c) >> (4 * k)) & 15);
                    const int z = (int)((u32_at(qz, (size_t)g * (out / 8) + c) >> (4 * k)) & 15);
                    w[(size_t)o * in + i] = half(u16_at(sc, (size_t)g * out + o)) * (float)(q - z);
                }
        return;
    }
    const int pf = 32 / bits;
    snprintf(n, sizeof n, "%s.qweight", prefix);
    const void *qw = raw_tensor(r, n, "I32", in / pf, out);
    snprintf(n, sizeof n, "%s.qzeros", prefix);
    const void *qz = raw_tensor(r, n, "I32", ng, out / pf);
    snprintf(n, sizeof n, "%s.scales", prefix);
    const void *sc = raw_tensor(r, n, "F16", ng, out);
    snprintf(n, sizeof n, "%s.g_idx", prefix);
    const void *gi = raw_tensor(r, n, "I32", in, 0);
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++) {
            const int g = (int)u32_at(gi, (size_t)i);
            const int q = (int)((u32_at(qw, (size_t)(i / pf) * out + o) >> (bits * (i % pf))) & mask);
            const int z = (int)((u32_at(qz, (size_t)g * (out / pf) + o / pf) >> (bits * (o % pf))) & mask) + (v2 ? 0 : 1);
            w[(size_t)o * in + i] = half(u16_at(sc, (size_t)g * out + o)) * (float)(q - z);
        }
}

/* ------------------------------------------------------------ round trips */

/* Exports with q, reads the directory back through llmq's loader and through
 * the reference decoder: both give the solver's values bit for bit. */
static void round_trip(llmq_hf_qconfig q, int kind, const char *tag)
{
    char out[600];
    snprintf(out, sizeof out, "%s/%s", dir, tag);
    capture cap;
    export_run(out, q, kind, 0, &cap);
    llmq_hf_qconfig back;
    bool found;
    cr_assert_eq(llmq_hf_qconfig_load(out, &back, &found), LLMQ_OK, "%s", llmq_last_error());
    cr_assert(found);
    cr_assert_eq(back.method, q.method);
    cr_assert_eq(back.bits, q.bits);
    cr_assert_eq(back.group_size, q.group_size);
    /* AWQ is written with zero_point: true and explicit zeros (8 for --sym), what every AWQ kernel reads */
    cr_assert_eq(back.sym, q.method == LLMQ_HF_GPTQ ? q.sym : false);
    cr_assert_eq(back.v2, q.v2 && q.method == LLMQ_HF_GPTQ);
    cr_assert_eq(back.desc_act, q.desc_act);
    llmq_model *m = llmq_model_load(out);
    cr_assert_not_null(m, "%s: %s", tag, llmq_last_error());
    char st_path[700];
    snprintf(st_path, sizeof st_path, "%s/model.safetensors", out);
    raw_st r;
    raw_open(&r, st_path);
    int64_t n_checked = 0, n_nonzero = 0;
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            const llmq_weight *w = &m->layers[l].lin[k];
            cr_assert_eq(w->type, llmq_hf_grid_type(q.bits, q.sym), "%s: loaded as %s", tag, llmq_type_get(w->type)->name);
            const size_t n = (size_t)w->rows * w->cols;
            float *got = malloc(n * sizeof *got), *ref = malloc(n * sizeof *ref);
            cr_assert_eq(llmq_dequant_rows(got, w->data, w->type, w->cols, 0, w->rows), LLMQ_OK);
            char prefix[128];
            snprintf(prefix, sizeof prefix, "model.layers.%d.%s.%s", l, groups[k], llmq_linear_names[k]);
            reference_decode(&r, prefix, q.method == LLMQ_HF_AWQ ? "awq" : "gptq", q.bits, q.v2, q.group_size, w->rows, w->cols, ref);
            for (size_t i = 0; i < n; i++) {
                const float want = cap.v.w[l][k][i];
                cr_assert(got[i] == want && llmq_f32_to_f16(got[i]) == llmq_f32_to_f16(want), "%s layer %d %s [%zu]: read back %.9g, solver %.9g",
                          tag, l, llmq_linear_names[k], i, got[i], want);
                cr_assert(ref[i] == want, "%s layer %d %s [%zu]: reference decoder %.9g, solver %.9g", tag, l, llmq_linear_names[k], i,
                          ref[i], want);
                n_nonzero += want != 0.0f;
            }
            n_checked += (int64_t)n;
            free(got);
            free(ref);
        }
    cr_assert_gt(n_nonzero, n_checked / 2, "%s: the weights are mostly non-zero", tag);
    /* norms and the embedding in the source dtype, unchanged by GPTQ/RTN */
    cr_assert_eq(m->embed.type, LLMQ_TYPE_BF16);
    cr_assert_eq(memcmp(m->embed.data, base->embed.data, (size_t)base->embed.rows * base->embed.cols * 2), 0);
    raw_close(&r);
    llmq_model_free(m);
    capture_free(&cap);
}

#define GPTQ(b, s, act, v2_) ((llmq_hf_qconfig){LLMQ_HF_GPTQ, b, 128, s, act, act, v2_})
#define AWQ(s) ((llmq_hf_qconfig){LLMQ_HF_AWQ, 4, 128, s, false, false, false})

Test(hf_quant, gptq_sym_v1, .init = setup, .fini = teardown, .timeout = 300) { round_trip(GPTQ(4, true, false, false), LLMQ_CAL_GPTQ, "sym-v1"); }
Test(hf_quant, gptq_asym_v1, .init = setup, .fini = teardown, .timeout = 300) { round_trip(GPTQ(4, false, false, false), LLMQ_CAL_GPTQ, "asym-v1"); }
Test(hf_quant, gptq_asym_v2, .init = setup, .fini = teardown, .timeout = 300) { round_trip(GPTQ(4, false, false, true), LLMQ_CAL_GPTQ, "asym-v2"); }
Test(hf_quant, gptq_asym_act_order_v1, .init = setup, .fini = teardown, .timeout = 300)
{
    round_trip(GPTQ(4, false, true, false), LLMQ_CAL_GPTQ, "asym-act-v1");
}
Test(hf_quant, gptq_sym_act_order_v2, .init = setup, .fini = teardown, .timeout = 300)
{
    round_trip(GPTQ(4, true, true, true), LLMQ_CAL_GPTQ, "sym-act-v2");
}
Test(hf_quant, gptq_8bit_sym_and_asym, .init = setup, .fini = teardown, .timeout = 300)
{
    round_trip(GPTQ(8, true, false, false), LLMQ_CAL_GPTQ, "8-sym");
    round_trip(GPTQ(8, false, false, true), LLMQ_CAL_GPTQ, "8-asym");
}
Test(hf_quant, awq_asym_and_sym, .init = setup, .fini = teardown, .timeout = 300)
{
    round_trip(AWQ(false), LLMQ_CAL_AWQ, "awq-asym");
    round_trip(AWQ(true), -1, "awq-sym-rtn");
}

/* The config files say what the tensors hold, in the fields transformers and vLLM read. */
Test(hf_quant, config_files_and_tokenizer, .init = setup, .fini = teardown, .timeout = 300)
{
    char out[600], path[700];
    snprintf(out, sizeof out, "%s/cfg", dir);
    capture cap;
    export_run(out, GPTQ(4, false, true, false), -1, 0, &cap);
    capture_free(&cap);
    snprintf(path, sizeof path, "%s/config.json", out);
    json_error_t e;
    json_t *c = json_load_file(path, 0, &e);
    cr_assert_not_null(c);
    json_t *qc = json_object_get(c, "quantization_config");
    cr_assert_str_eq(json_string_value(json_object_get(qc, "quant_method")), "gptq");
    cr_assert_eq(json_integer_value(json_object_get(qc, "bits")), 4);
    cr_assert_eq(json_integer_value(json_object_get(qc, "group_size")), 128);
    cr_assert(json_is_false(json_object_get(qc, "sym")));
    cr_assert(json_is_true(json_object_get(qc, "desc_act")));
    cr_assert(json_is_true(json_object_get(qc, "static_groups")));
    cr_assert_str_eq(json_string_value(json_object_get(qc, "checkpoint_format")), "gptq");
    cr_assert_str_eq(json_string_value(json_object_get(c, "torch_dtype")), "bfloat16");
    cr_assert_eq(json_integer_value(json_object_get(c, "hidden_size")), base->cfg.hidden_size, "the source config's fields stay");
    json_decref(c);
    snprintf(path, sizeof path, "%s/quantize_config.json", out);
    cr_assert(llmq_file_exists(path));
    snprintf(path, sizeof path, "%s/tokenizer.json", out);
    cr_assert(llmq_file_exists(path), "tokenizer files are copied");
    snprintf(path, sizeof path, "%s.tmp.%d", out, (int)getpid());
    cr_assert(!llmq_is_dir(path), "no temp directory is left");
    /* g_idx without act-order permutation: i / 128 */
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    raw_st r;
    raw_open(&r, path);
    const void *gi = raw_tensor(&r, "model.layers.1.mlp.down_proj.g_idx", "I32", base->cfg.intermediate_size, 0);
    for (int i = 0; i < base->cfg.intermediate_size; i++) cr_assert_eq(u32_at(gi, (size_t)i), (uint32_t)(i / 128));
    cr_assert_null(json_object_get(r.hdr, "model.layers.0.mlp.down_proj.weight"));
    raw_close(&r);
}

/* Past the shard limit: several files and model.safetensors.index.json, read back the same. */
Test(hf_quant, shards_with_an_index, .init = setup, .fini = teardown, .timeout = 300)
{
    char out[600], path[700];
    snprintf(out, sizeof out, "%s/sharded", dir);
    capture cap;
    export_run(out, AWQ(false), -1, 300000, &cap);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", out);
    json_error_t e;
    json_t *idx = json_load_file(path, 0, &e);
    cr_assert_not_null(idx, "%s", path);
    json_t *map = json_object_get(idx, "weight_map");
    /* 300 kB shards: the 256 kB embedding alone, then the layers' tensors */
    const char *first = json_string_value(json_object_get(map, "model.embed_tokens.weight"));
    const char *last = json_string_value(json_object_get(map, "lm_head.weight"));
    cr_assert(first && !strncmp(first, "model-00001-of-0000", 19), "got %s", first);
    cr_assert(last && strcmp(last, first) && !strncmp(last + 12, first + 12, 9), "lm_head in the last shard: %s", last);
    char shard[800];
    snprintf(shard, sizeof shard, "%s/%s", out, last);
    cr_assert(llmq_file_exists(shard), "%s", shard);
    cr_assert_gt(json_integer_value(json_object_get(json_object_get(idx, "metadata"), "total_size")), 1000000);
    json_decref(idx);
    llmq_model *m = llmq_model_load(out);
    cr_assert_not_null(m, "%s", llmq_last_error());
    const llmq_weight *w = &m->layers[1].lin[LLMQ_LIN_DOWN];
    float *got = malloc((size_t)w->rows * w->cols * sizeof *got);
    cr_assert_eq(llmq_dequant_rows(got, w->data, w->type, w->cols, 0, w->rows), LLMQ_OK);
    cr_assert_eq(memcmp(got, cap.v.w[1][LLMQ_LIN_DOWN], (size_t)w->rows * w->cols * sizeof *got), 0);
    free(got);
    llmq_model_free(m);
    capture_free(&cap);
}

/* ------------------------------------------- a fixture from its own packer */

/* A GPTQ checkpoint of the demo model's shapes packed here from codes, zeros
 * and scales drawn at random (AutoGPTQ's pack: qweight[i/8][o] |= q << 4·(i%8),
 * qzeros[g][o/8] |= (z − 1) << 4·(o%8)), not through llmq's packer. Scales
 * k/1024 with k < 128 keep scale·zero exact in fp16, so Q4_1's min is exact. */
typedef layer_values fixture_values;

static void write_fixture(const char *out, bool sym, bool permuted_g_idx, fixture_values *fv)
{
    mkdir(out, 0755);
    char path[700];
    llmq_safetensors *src = llmq_st_open(dir);
    cr_assert_not_null(src);
    llmq_st_tensor t[256];
    void *bufs[256];
    size_t n = 0, nb = 0;
    unsigned seed = 7;
    for (size_t i = 0; i < llmq_st_count(src); i++) {
        const llmq_st_tensor *s = llmq_st_at(src, i);
        if (strstr(s->name, "_proj.weight")) continue;
        t[n++] = *s;
    }
    for (int l = 0; l < base->cfg.n_layers; l++)
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            const int out_f = base->layers[l].lin[k].rows, in_f = base->layers[l].lin[k].cols, gs = 128, ng = in_f / gs;
            uint32_t *qw = calloc((size_t)in_f / 8 * out_f, 4), *qz = calloc((size_t)ng * out_f / 8, 4);
            uint16_t *sc = malloc((size_t)ng * out_f * 2);
            int32_t *gi = malloc((size_t)in_f * 4);
            float *w = fv->w[l][k] = malloc((size_t)out_f * in_f * sizeof *w);
            int *zz = malloc((size_t)ng * out_f * sizeof *zz);
            for (int i = 0; i < in_f; i++) gi[i] = permuted_g_idx ? (int32_t)((i * 7) % in_f / gs) : i / gs;
            for (int g = 0; g < ng; g++)
                for (int o = 0; o < out_f; o++) {
                    seed = seed * 1103515245u + 12345u;
                    const int z = sym ? 8 : 1 + (int)((seed >> 16) % 15);
                    const int kk = 1 + (int)((seed >> 8) % 127);
                    sc[(size_t)g * out_f + o] = llmq_f32_to_f16((float)kk / 1024.0f);
                    zz[(size_t)g * out_f + o] = z;
                    qz[(size_t)g * (out_f / 8) + o / 8] |= (uint32_t)(z - 1) << (4 * (o % 8));
                }
            for (int o = 0; o < out_f; o++)
                for (int i = 0; i < in_f; i++) {
                    seed = seed * 1103515245u + 12345u;
                    const uint32_t q = (seed >> 20) & 15;
                    qw[(size_t)(i / 8) * out_f + o] |= q << (4 * (i % 8));
                    const int g = gi[i];
                    w[(size_t)o * in_f + i] = (float)((double)half(sc[(size_t)g * out_f + o]) * (int)(q - (uint32_t)zz[(size_t)g * out_f + o]));
                }
            free(zz);
            static char names[256][4][128];
            static const char *const sfx[4] = {"qweight", "qzeros", "scales", "g_idx"};
            void *data[4] = {qw, qz, sc, gi};
            const llmq_type types[4] = {LLMQ_TYPE_I32, LLMQ_TYPE_I32, LLMQ_TYPE_F16, LLMQ_TYPE_I32};
            const int64_t shapes[4][2] = {{in_f / 8, out_f}, {ng, out_f / 8}, {ng, out_f}, {in_f, 0}};
            for (int j = 0; j < 4; j++) {
                snprintf(names[n][j], sizeof names[n][j], "model.layers.%d.%s.%s.%s", l, groups[k], llmq_linear_names[k], sfx[j]);
                llmq_st_tensor *e = &t[n++];
                memset(e, 0, sizeof *e);
                e->name = names[n - 1][j];
                e->type = types[j];
                e->n_dims = shapes[j][1] ? 2 : 1;
                e->shape[0] = shapes[j][0];
                e->shape[1] = shapes[j][1];
                e->n_elements = shapes[j][0] * (shapes[j][1] ? shapes[j][1] : 1);
                e->n_bytes = (size_t)e->n_elements * (j == 2 ? 2 : 4);
                e->data = data[j];
                bufs[nb++] = data[j];
            }
        }
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    cr_assert_eq(llmq_st_write(path, t, n, NULL), LLMQ_OK, "%s", llmq_last_error());
    for (size_t i = 0; i < nb; i++) free(bufs[i]);
    llmq_st_close(src);
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t e;
    json_t *c = json_load_file(path, 0, &e);
    json_object_set_new(c, "quantization_config",
                        json_pack("{s:s, s:i, s:i, s:b, s:b, s:s}", "quant_method", "gptq", "bits", 4, "group_size", 128, "sym", sym,
                                  "desc_act", permuted_g_idx, "checkpoint_format", "gptq"));
    snprintf(path, sizeof path, "%s/config.json", out);
    cr_assert_eq(json_dump_file(c, path, 0), 0);
    json_decref(c);
}

static void fixture_free(fixture_values *fv)
{
    for (int l = 0; l < 8; l++)
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) free(fv->w[l][k]);
}

/* Converts the checkpoint at src_dir to GGUF `type` with the convert method;
 * returns the loaded GGUF model. */
static llmq_model *convert_to(const char *src_dir, const char *type, const char *out, llmq_hf_convert_stats *stats)
{
    llmq_model *m = llmq_model_load(src_dir);
    cr_assert_not_null(m, "%s", llmq_last_error());
    llmq_layer_method conv = llmq_hf_convert_method(stats);
    llmq_quant_opts qo = {.policy = {.group_size = 128, .keep_output = LLMQ_TYPE_F16, .keep_embed = LLMQ_TYPE_F16}, .method = &conv};
    cr_assert_eq(llmq_quant_scheme_parse(type, &qo.policy.scheme), LLMQ_OK);
    cr_assert_eq(llmq_quantize_model(m, tok, out, &qo, NULL), LLMQ_OK, "%s", llmq_last_error());
    llmq_model_free(m);
    llmq_model *g = llmq_model_load(out);
    cr_assert_not_null(g, "%s", llmq_last_error());
    return g;
}

static void assert_linears_equal(const llmq_model *g, const fixture_values *fv, llmq_type want_type, const char *tag)
{
    for (int l = 0; l < g->cfg.n_layers; l++)
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            const llmq_weight *w = &g->layers[l].lin[k];
            cr_assert_eq(w->type, want_type, "%s: %s", tag, llmq_type_get(w->type)->name);
            const size_t n = (size_t)w->rows * w->cols;
            float *got = malloc(n * sizeof *got);
            cr_assert_eq(llmq_dequant_rows(got, w->data, w->type, w->cols, 0, w->rows), LLMQ_OK);
            for (size_t i = 0; i < n; i++)
                cr_assert(got[i] == fv->w[l][k][i], "%s layer %d %s [%zu]: GGUF %.9g, checkpoint %.9g", tag, l, llmq_linear_names[k], i,
                          got[i], fv->w[l][k][i]);
            free(got);
        }
}

/* Writes fixture `tag`, checks that llmq reads its values (as load_type),
 * converts it to GGUF `target` and checks the GGUF's linears equal the
 * checkpoint's when want_type is not -1. Returns the conversion counts. */
static llmq_hf_convert_stats fixture_convert(const char *tag, bool sym, bool permuted, llmq_type load_type, const char *target, int want_type)
{
    char ck[600], out[700];
    fixture_values fv = {0};
    snprintf(ck, sizeof ck, "%s/fixture-%s", dir, tag);
    write_fixture(ck, sym, permuted, &fv);
    llmq_model *m = llmq_model_load(ck);
    cr_assert_not_null(m, "%s", llmq_last_error());
    assert_linears_equal(m, &fv, load_type, tag);
    llmq_model_free(m);
    llmq_hf_convert_stats stats;
    snprintf(out, sizeof out, "%s/fixture-%s.%s.gguf", dir, tag, target);
    llmq_model *g = convert_to(ck, target, out, &stats);
    if (want_type >= 0) assert_linears_equal(g, &fv, (llmq_type)want_type, target);
    llmq_model_free(g);
    fixture_free(&fv);
    return stats;
}

/* Older AutoGPTQ checkpoints name their one file gptq_model-4bit-128g.safetensors. */
Test(hf_quant, single_file_of_another_name, .init = setup, .fini = teardown, .timeout = 300)
{
    char out[600], from[700], to[700];
    snprintf(out, sizeof out, "%s/oldname", dir);
    capture cap;
    export_run(out, GPTQ(4, true, false, false), -1, 0, &cap);
    snprintf(from, sizeof from, "%s/model.safetensors", out);
    snprintf(to, sizeof to, "%s/gptq_model-4bit-128g.safetensors", out);
    cr_assert_eq(rename(from, to), 0);
    llmq_model *m = llmq_model_load(out);
    cr_assert_not_null(m, "%s", llmq_last_error());
    assert_linears_equal(m, &cap.v, LLMQ_TYPE_Q4_0, "renamed");
    llmq_model_free(m);
    capture_free(&cap);
}

Test(hf_quant, lossless_conversion_of_an_independently_packed_checkpoint, .init = setup, .fini = teardown, .timeout = 300)
{
    llmq_hf_convert_stats s = fixture_convert("asym", false, false, LLMQ_TYPE_HF_U4, "q4_1", LLMQ_TYPE_Q4_1);
    cr_assert_eq(s.converted, 2 * LLMQ_LIN_COUNT);
    cr_assert_eq(s.requantized, 0);
    /* to Q4_K the grid does not map: re-quantized, and counted so */
    s = fixture_convert("asym-k", false, false, LLMQ_TYPE_HF_U4, "q4_k", -1);
    cr_assert_eq(s.converted, 0);
    cr_assert_eq(s.requantized, 2 * LLMQ_LIN_COUNT);
}

Test(hf_quant, lossless_sym_to_q4_0, .init = setup, .fini = teardown, .timeout = 300)
{
    llmq_hf_convert_stats s = fixture_convert("sym", true, false, LLMQ_TYPE_Q4_0, "q4_0", LLMQ_TYPE_Q4_0);
    cr_assert_eq(s.converted, 2 * LLMQ_LIN_COUNT);
    cr_assert_eq(s.requantized, 0);
}

/* Act-order without static groups: g_idx not i / g. Read exactly (dequantized
 * to F32); no block type holds it, so conversion re-quantizes. */
Test(hf_quant, act_order_g_idx_is_read_and_requantized, .init = setup, .fini = teardown, .timeout = 300)
{
    llmq_hf_convert_stats s = fixture_convert("act", false, true, LLMQ_TYPE_F32, "q4_1", -1);
    cr_assert_eq(s.converted, 0);
    cr_assert_eq(s.requantized, 2 * LLMQ_LIN_COUNT);
}

/* llmq's own exports convert back: 8-bit symmetric GPTQ → Q8_0 identical;
 * AWQ asymmetric → Q4_1 with every value within half an fp16 ulp of Q4_1's
 * min (m = fp16(−scale·zero), the only rounding) of the solver's. */
Test(hf_quant, exports_convert_back_to_gguf, .init = setup, .fini = teardown, .timeout = 300)
{
    char out[600], gg[700];
    capture cap;
    llmq_hf_convert_stats stats;
    snprintf(out, sizeof out, "%s/e8", dir);
    export_run(out, GPTQ(8, true, false, false), -1, 0, &cap);
    snprintf(gg, sizeof gg, "%s/e8.q8_0.gguf", dir);
    llmq_model *g = convert_to(out, "q8_0", gg, &stats);
    cr_assert_eq(stats.converted, 2 * LLMQ_LIN_COUNT);
    assert_linears_equal(g, &cap.v, LLMQ_TYPE_Q8_0, "q8_0");
    llmq_model_free(g);
    capture_free(&cap);

    snprintf(out, sizeof out, "%s/ea", dir);
    export_run(out, AWQ(false), -1, 0, &cap);
    snprintf(gg, sizeof gg, "%s/ea.q4_1.gguf", dir);
    g = convert_to(out, "q4_1", gg, &stats);
    cr_assert_eq(stats.converted, 2 * LLMQ_LIN_COUNT);
    cr_assert_eq(stats.requantized, 0);
    int64_t exact = 0, total = 0;
    for (int l = 0; l < g->cfg.n_layers; l++)
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            const llmq_weight *w = &g->layers[l].lin[k];
            cr_assert_eq(w->type, LLMQ_TYPE_Q4_1);
            const size_t n = (size_t)w->rows * w->cols;
            float *got = malloc(n * sizeof *got);
            cr_assert_eq(llmq_dequant_rows(got, w->data, w->type, w->cols, 0, w->rows), LLMQ_OK);
            for (size_t i = 0; i < n; i++) {
                const llmq_block_q4_1 *b = (const llmq_block_q4_1 *)w->data + i / 32;
                const float bound = fabsf(half(b->m)) * 0x1p-11f, want = cap.v.w[l][k][i];
                cr_assert(fabsf(got[i] - want) <= bound, "layer %d %s [%zu]: q4_1 %.9g, AWQ %.9g (m %.9g)", l, llmq_linear_names[k], i, got[i],
                          want, half(b->m));
                exact += got[i] == want;
            }
            total += (int64_t)n;
            free(got);
        }
    cr_log_info("AWQ -> q4_1: %lld of %lld values identical, the others within the fp16 rounding of the min", (long long)exact,
                (long long)total);
    cr_assert_gt(exact, 0);
    llmq_model_free(g);
    capture_free(&cap);
}

/* ------------------------------------------------------------------ errors */

/* Copies the fixture's model.safetensors into a new checkpoint whose
 * config.json has quantization_config `qc` (NULL: the fixture's). */
static void bad_checkpoint(const char *ck, const char *name, json_t *qc, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", dir, name);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", path, ck, path);
    cr_assert_eq(system(cmd), 0);
    if (!qc) return;
    char cfg[800];
    snprintf(cfg, sizeof cfg, "%s/config.json", path);
    json_error_t e;
    json_t *c = json_load_file(cfg, 0, &e);
    json_object_set_new(c, "quantization_config", qc);
    cr_assert_eq(json_dump_file(c, cfg, 0), 0);
    json_decref(c);
}

/* An asymmetric fixture checkpoint at <dir>/fixture-<tag> (its values not kept). */
static void asym_fixture(char *ck, size_t cap, const char *tag)
{
    fixture_values fv = {0};
    snprintf(ck, cap, "%s/fixture-%s", dir, tag);
    write_fixture(ck, false, false, &fv);
    fixture_free(&fv);
}

static void expect_load_error(const char *path, const char *file, const char *field)
{
    llmq_model *m = llmq_model_load(path);
    cr_assert_null(m, "%s loaded", path);
    const char *msg = llmq_last_error();
    cr_assert(strstr(msg, file) && strstr(msg, field), "message '%s' names %s and %s", msg, file, field);
    cr_assert_null(strchr(msg, '\n'), "one line: %s", msg);
}

Test(hf_quant, bad_configs_name_file_and_field, .init = setup, .fini = teardown, .timeout = 300)
{
    char ck[600], p[700];
    asym_fixture(ck, sizeof ck, "err");
    bad_checkpoint(ck, "bits3", json_pack("{s:s, s:i, s:i}", "quant_method", "gptq", "bits", 3, "group_size", 128), p, sizeof p);
    expect_load_error(p, "bits3/config.json", "quantization_config.bits");
    bad_checkpoint(ck, "awq8", json_pack("{s:s, s:i, s:i}", "quant_method", "awq", "bits", 8, "group_size", 128), p, sizeof p);
    expect_load_error(p, "awq8/config.json", "quantization_config.bits");
    bad_checkpoint(ck, "notobj", json_string("gptq"), p, sizeof p);
    expect_load_error(p, "notobj/config.json", "quantization_config");
    bad_checkpoint(ck, "nomethod", json_pack("{s:i, s:i}", "bits", 4, "group_size", 128), p, sizeof p);
    expect_load_error(p, "nomethod/config.json", "quantization_config.quant_method");
    bad_checkpoint(ck, "bnb", json_pack("{s:s}", "quant_method", "bitsandbytes"), p, sizeof p);
    expect_load_error(p, "bnb/config.json", "quantization_config.quant_method");
    bad_checkpoint(ck, "grp", json_pack("{s:s, s:i, s:s}", "quant_method", "gptq", "bits", 4, "group_size", "128"), p, sizeof p);
    expect_load_error(p, "grp/config.json", "quantization_config.group_size");
    bad_checkpoint(ck, "fmt", json_pack("{s:s, s:i, s:i, s:s}", "quant_method", "gptq", "bits", 4, "group_size", 128, "checkpoint_format", "marlin"),
                   p, sizeof p);
    expect_load_error(p, "fmt/config.json", "quantization_config.checkpoint_format");
    bad_checkpoint(ck, "symstr", json_pack("{s:s, s:i, s:i, s:s}", "quant_method", "gptq", "bits", 4, "group_size", 128, "sym", "yes"), p,
                   sizeof p);
    expect_load_error(p, "symstr/config.json", "quantization_config.sym");
    /* a group size the tensors do not have: scales' shape is wrong for it */
    bad_checkpoint(ck, "g64", json_pack("{s:s, s:i, s:i}", "quant_method", "gptq", "bits", 4, "group_size", 64), p, sizeof p);
    expect_load_error(p, "g64/model.safetensors", ".qzeros': shape");
}

/* Rewrites one tensor of the fixture (shape and data) into a new checkpoint. */
static void patch_tensor(const char *ck, const char *name, const char *tensor, int64_t d0, int64_t d1, int32_t poke_at, int32_t poke,
                         char *path, size_t cap)
{
    bad_checkpoint(ck, name, NULL, path, cap);
    char f[800];
    snprintf(f, sizeof f, "%s/model.safetensors", ck);
    llmq_safetensors *st = llmq_st_open(f);
    cr_assert_not_null(st);
    const size_t n = llmq_st_count(st);
    llmq_st_tensor *t = calloc(n, sizeof *t);
    void *patched = NULL;
    for (size_t i = 0; i < n; i++) {
        t[i] = *llmq_st_at(st, i);
        if (strcmp(t[i].name, tensor)) continue;
        const size_t es = llmq_type_get(t[i].type)->type_size;
        t[i].shape[0] = d0;
        t[i].shape[1] = d1;
        t[i].n_elements = d0 * (d1 ? d1 : 1);
        t[i].n_bytes = (size_t)t[i].n_elements * es;
        patched = calloc(1, t[i].n_bytes);
        memcpy(patched, llmq_st_at(st, i)->data, t[i].n_bytes < llmq_st_at(st, i)->n_bytes ? t[i].n_bytes : llmq_st_at(st, i)->n_bytes);
        if (poke_at >= 0) memcpy((char *)patched + 4 * (size_t)poke_at, &poke, 4);
        t[i].data = patched;
    }
    cr_assert_not_null(patched, "%s", tensor);
    snprintf(f, sizeof f, "%s/model.safetensors", path);
    cr_assert_eq(llmq_st_write(f, t, n, NULL), LLMQ_OK, "%s", llmq_last_error());
    free(patched);
    free(t);
    llmq_st_close(st);
}

Test(hf_quant, bad_tensors_name_file_and_tensor, .init = setup, .fini = teardown, .timeout = 300)
{
    char ck[600], p[700];
    asym_fixture(ck, sizeof ck, "t");
    const int d = base->cfg.hidden_size, qd = base->cfg.n_heads * base->cfg.head_dim;
    patch_tensor(ck, "gidx", "model.layers.0.self_attn.q_proj.g_idx", d, 0, 5, 99, p, sizeof p);
    expect_load_error(p, "gidx/model.safetensors", "model.layers.0.self_attn.q_proj.g_idx");
    cr_assert(strstr(llmq_last_error(), "element 5 is 99"), "%s", llmq_last_error());
    patch_tensor(ck, "gneg", "model.layers.1.mlp.down_proj.g_idx", base->cfg.intermediate_size, 0, 0, -1, p, sizeof p);
    expect_load_error(p, "gneg/model.safetensors", "down_proj.g_idx");
    patch_tensor(ck, "shape", "model.layers.0.self_attn.q_proj.qweight", d / 8 - 1, qd, -1, 0, p, sizeof p);
    expect_load_error(p, "shape/model.safetensors", "model.layers.0.self_attn.q_proj.qweight': shape");
    patch_tensor(ck, "scales", "model.layers.1.mlp.up_proj.scales", 1, base->cfg.intermediate_size, -1, 0, p, sizeof p);
    expect_load_error(p, "scales/model.safetensors", "up_proj.scales': shape");
}

/* Writing refuses what the packings cannot hold, and leaves nothing behind. */
Test(hf_quant, writer_refuses_unsupported_bits, .init = setup, .fini = teardown)
{
    char out[600];
    snprintf(out, sizeof out, "%s/awq8", dir);
    llmq_hf_write_opts wo = {.q = {LLMQ_HF_AWQ, 8, 128, false, false, false, false}, .src_dir = dir};
    llmq_hf_writer *w = llmq_hf_writer_new(out, &wo);
    llmq_tensor_sink sink = llmq_hf_writer_sink(w);
    llmq_quant_opts qo = {.policy = {.scheme = {"awq", LLMQ_TYPE_HF_U8, false, 0}, .group_size = 128, .keep_output = LLMQ_TYPE_BF16,
                                     .keep_embed = LLMQ_TYPE_BF16},
                          .sink = &sink};
    cr_assert_neq(llmq_quantize_model(base, NULL, out, &qo, NULL), LLMQ_OK);
    cr_assert(strstr(llmq_last_error(), "8-bit AWQ"), "%s", llmq_last_error());
    cr_assert(!llmq_is_dir(out));
    llmq_hf_writer_free(w);
    /* v1 cannot store a zero of 0 */
    llmq_hf_qconfig q = GPTQ(4, false, false, false);
    llmq_block_hf_u4 blk[8];
    memset(blk, 0, sizeof blk);
    llmq_hf_packed pk;
    cr_assert_neq(llmq_hf_pack_linear(&q, LLMQ_TYPE_HF_U4, blk, 8, 32, &pk), LLMQ_OK);
    cr_assert(strstr(llmq_last_error(), "GPTQ v1"), "%s", llmq_last_error());
    q.v2 = true;
    cr_assert_eq(llmq_hf_pack_linear(&q, LLMQ_TYPE_HF_U4, blk, 8, 32, &pk), LLMQ_OK, "%s", llmq_last_error());
    llmq_hf_packed_free(&pk);
    /* rows quantized in groups of 32 cannot be written as groups of 64 */
    llmq_block_hf_u4 two[16];
    memset(two, 0, sizeof two);
    for (int b = 0; b < 16; b++) two[b] = (llmq_block_hf_u4){llmq_f32_to_f16(0.5f), 3, {0}};
    q.group_size = 64;
    cr_assert_eq(llmq_hf_pack_linear(&q, LLMQ_TYPE_HF_U4, two, 8, 64, &pk), LLMQ_OK, "%s", llmq_last_error());
    llmq_hf_packed_free(&pk);
    two[5].z = 4;
    cr_assert_neq(llmq_hf_pack_linear(&q, LLMQ_TYPE_HF_U4, two, 8, 64, &pk), LLMQ_OK);
    cr_assert(strstr(llmq_last_error(), "row 2, group 0") && strstr(llmq_last_error(), "groups of 64"), "%s", llmq_last_error());
}

/* ------------------------------------------------ perplexity on the shared model */

static int32_t *load_ids(const char *path, size_t *n)
{
    json_error_t e;
    json_t *arr = json_load_file(path, 0, &e);
    cr_assert(json_is_array(arr), "%s", path);
    *n = json_array_size(arr);
    int32_t *ids = malloc(*n * sizeof *ids);
    for (size_t i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    json_decref(arr);
    return ids;
}

static double ppl_of(const char *path, const int32_t *ids, size_t n)
{
    llmq_model *m = llmq_model_load(path);
    cr_assert_not_null(m, "%s", llmq_last_error());
    llmq_ppl_opts po = {.ctx = 256, .protocol = LLMQ_PPL_GPTQ, .max_chunks = 12, .bos_id = -1};
    llmq_ppl_result r;
    cr_assert_eq(llmq_perplexity(m, ids, n, &po, &r), LLMQ_OK, "%s", llmq_last_error());
    llmq_model_free(m);
    return r.ppl;
}

/* The same GPTQ run into a GGUF (q4_0, bf16 embedding and head) and into a
 * GPTQ directory: the grids coincide, so the perplexities agree (to 0.1%). */
Test(hf_quant, ppl_of_export_equals_gguf_of_same_run, .timeout = 600)
{
    char model[512], ids_path[512], calib_path[512], tmp[512], gguf[600], hfdir[600];
    REQUIRE_SHARED(model, "models/stories-llama-7m");
    REQUIRE_SHARED(ids_path, "models/stories-llama-7m/eval_tokens.json");
    REQUIRE_SHARED(calib_path, "data/tinystories/tinystories_calib.txt");
    test_tmpdir(tmp, sizeof tmp, "hfq-ppl");
    llmq_model *src = llmq_model_load(model);
    llmq_tokenizer *t = llmq_tokenizer_load(model);
    cr_assert(src && t, "%s", llmq_last_error());
    llmq_calib calib = {0};
    llmq_calib_opts cop = {8, 128, 0};
    cr_assert_eq(llmq_calib_from_file(t, calib_path, &cop, &calib), LLMQ_OK, "%s", llmq_last_error());
    snprintf(gguf, sizeof gguf, "%s/q4_0.gguf", tmp);
    snprintf(hfdir, sizeof hfdir, "%s/gptq", tmp);
    for (int pass = 0; pass < 2; pass++) {
        llmq_calibrated_opts co = {.kind = LLMQ_CAL_GPTQ, .calib = &calib, .gptq = llmq_gptq_default_opts()};
        llmq_awq_defaults(&co.awq);
        llmq_layer_method lm;
        cr_assert_eq(llmq_calibrated_method(&co, &lm), LLMQ_OK);
        llmq_quant_opts qo = {.policy = {.group_size = 128, .keep_output = LLMQ_TYPE_BF16, .keep_embed = LLMQ_TYPE_BF16}, .method = &lm};
        cr_assert_eq(llmq_quant_scheme_parse("q4_0", &qo.policy.scheme), LLMQ_OK);
        llmq_hf_write_opts wo = {.q = GPTQ(4, true, false, false), .src_dir = model, .damp = 0.01};
        llmq_hf_writer *w = pass ? llmq_hf_writer_new(hfdir, &wo) : NULL;
        llmq_tensor_sink sink = pass ? llmq_hf_writer_sink(w) : (llmq_tensor_sink){0};
        if (pass) qo.sink = &sink;
        cr_assert_eq(llmq_quantize_model(src, t, pass ? hfdir : gguf, &qo, NULL), LLMQ_OK, "%s", llmq_last_error());
        llmq_hf_writer_free(w);
        llmq_calibrated_method_free(&lm);
    }
    size_t n;
    int32_t *ids = load_ids(ids_path, &n);
    const double p_gguf = ppl_of(gguf, ids, n), p_hf = ppl_of(hfdir, ids, n), p_src = ppl_of(model, ids, n);
    cr_log_info("ppl: source %.6f, GGUF q4_0 %.6f, GPTQ directory %.6f", p_src, p_gguf, p_hf);
    cr_assert_lt(fabs(p_hf - p_gguf) / p_gguf, 0.001, "GPTQ dir %.6f vs GGUF %.6f", p_hf, p_gguf);
    cr_assert_gt(fabs(p_hf - p_src) / p_src, 1e-4, "the export is quantized (ppl differs from the source)");
    free(ids);
    llmq_calib_free(&calib);
    llmq_tokenizer_free(t);
    llmq_model_free(src);
}

/* ---------------------------------------------------------------------- CLI */

static int run(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(hf_quant, cli_format_awq_then_lossless_q4_1, .init = setup, .fini = teardown, .timeout = 300)
{
    char bin[600], cmd[3000], out[1 << 16];
    test_llmq_binary(bin, sizeof bin);
    snprintf(cmd, sizeof cmd, "%s quantize --help", bin);
    cr_assert_eq(run(cmd, out, sizeof out), 0);
    cr_assert(strstr(out, "--format F") && strstr(out, "--gptq-format") && strstr(out, "--bits") && strstr(out, "--asym"));
    snprintf(cmd, sizeof cmd, "%s quantize %s -o %s/cli-awq --format awq --json 2>&1", bin, dir, dir);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    const char *last = strstr(out, "{\"output\"");
    cr_assert_not_null(last, "%s", out);
    json_error_t e;
    json_t *j = json_loads(last, JSON_DISABLE_EOF_CHECK, &e);
    cr_assert_not_null(j, "%s", last);
    cr_assert_str_eq(json_string_value(json_object_get(j, "format")), "awq");
    cr_assert_eq(json_integer_value(json_object_get(j, "bits")), 4);
    cr_assert(json_is_false(json_object_get(j, "sym")));
    json_decref(j);
    snprintf(cmd, sizeof cmd, "%s quantize %s/cli-awq -o %s/cli.gguf --type q4_1 --json 2>&1", bin, dir, dir);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "lossless: all 14 linears of the AWQ checkpoint converted"), "%s", out);
    cr_assert(strstr(out, "\"lossless\":true"), "%s", out);
    snprintf(cmd, sizeof cmd, "%s quantize %s -o %s/x --format awq --bits 8 2>&1", bin, dir, dir);
    cr_assert_eq(run(cmd, out, sizeof out), 2, "%s", out);
    cr_assert(strstr(out, "--bits must be 4 for --format awq"), "%s", out);
    snprintf(cmd, sizeof cmd, "%s inspect %s/cli-awq 2>&1", bin, dir);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "model.layers.0.self_attn.q_proj.qweight") && strstr(out, "i32"), "%s", out);
}
