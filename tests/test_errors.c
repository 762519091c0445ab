/* The bad-input catalogue of docs/errors.md: every entry there is a test here.
 * Each builds a small broken input under build/tmp/errors-<pid>/, then checks
 * the exact one-line message (everything after the path it names) and, where a
 * command reads that input, that build/llmq prints it as its only stderr line
 * and exits non-zero. Keep the two files in step: the case names match. */
#include "llmq/config.h"
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/gguf.h"
#include "llmq/safetensors.h"
#include "llmq/tokenizer.h"
#include "test_util.h"

#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>

/* ---- scratch files ---------------------------------------------------------------- */

static char root[256];

static void errors_setup(void) { test_tmpdir(root, sizeof root, "errors"); }

static void errors_teardown(void)
{
    if (root[0] && !getenv("LLMQ_KEEP_TMP") && strstr(root, "build/tmp/errors-")) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
        if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", root);
    }
}

TestSuite(errors, .init = errors_setup, .fini = errors_teardown);

/* <root>/<name>, created as a directory. */
static void case_dir(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", root, name);
    cr_assert_eq(mkdir(buf, 0755), 0, "mkdir %s", buf);
}

static void write_bytes(const char *dir, const char *name, const void *data, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    cr_assert(fp, "cannot write %s", path);
    cr_assert_eq(fwrite(data, 1, n, fp), n);
    fclose(fp);
}

static void write_text(const char *dir, const char *name, const char *text) { write_bytes(dir, name, text, strlen(text)); }

/* A safetensors file with a given header text (padded to 8 bytes) and data size. */
static void write_raw_st(const char *dir, const char *name, const char *header, size_t data_bytes)
{
    size_t h = strlen(header), padded = (h + 7) & ~(size_t)7, total = 8 + padded + data_bytes;
    unsigned char *buf = calloc(1, total);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, header, h);
    memset(buf + 8 + h, ' ', padded - h);
    write_bytes(dir, name, buf, total);
    free(buf);
}

/* ---- a tiny valid checkpoint: hidden 8, ffn 16, 1 layer, 2 heads (1 kv), vocab 16 ---- */

#define GOOD_CONFIG_FMT                                                                                       \
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 8,"           \
    " \"intermediate_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,"                     \
    " \"num_key_value_heads\": 1, \"vocab_size\": 16, \"rms_norm_eps\": 1e-5, \"hidden_act\": \"silu\"%s}"

static void write_config(const char *dir, const char *extra)
{
    char text[2048];
    snprintf(text, sizeof text, GOOD_CONFIG_FMT, extra ? extra : "");
    write_text(dir, "config.json", text);
}

typedef struct {
    const char *name;
    int rows, cols; /* cols 0: a vector */
} spec;

static const spec model_tensors[] = {
    {"model.embed_tokens.weight", 16, 8},
    {"model.norm.weight", 8, 0},
    {"lm_head.weight", 16, 8},
    {"model.layers.0.input_layernorm.weight", 8, 0},
    {"model.layers.0.post_attention_layernorm.weight", 8, 0},
    {"model.layers.0.self_attn.q_proj.weight", 8, 8},
    {"model.layers.0.self_attn.k_proj.weight", 4, 8},
    {"model.layers.0.self_attn.v_proj.weight", 4, 8},
    {"model.layers.0.self_attn.o_proj.weight", 8, 8},
    {"model.layers.0.mlp.gate_proj.weight", 16, 8},
    {"model.layers.0.mlp.up_proj.weight", 16, 8},
    {"model.layers.0.mlp.down_proj.weight", 8, 16},
};
#define N_MODEL_TENSORS (sizeof model_tensors / sizeof model_tensors[0])

/* model.safetensors for the good config; `skip` is left out, `reshape` gets
 * shape [4], `poison` gets a NaN at element 3 (any may be NULL). */
static void write_weights(const char *dir, const char *skip, const char *reshape, const char *poison)
{
    llmq_st_tensor ts[N_MODEL_TENSORS];
    float *bufs[N_MODEL_TENSORS];
    size_t n = 0;
    for (size_t i = 0; i < N_MODEL_TENSORS; i++) {
        const spec *s = &model_tensors[i];
        if (skip && !strcmp(skip, s->name)) continue;
        llmq_st_tensor *t = &ts[n];
        memset(t, 0, sizeof *t);
        t->name = (char *)s->name;
        t->type = LLMQ_TYPE_F32;
        t->n_dims = s->cols ? 2 : 1;
        t->shape[0] = s->rows;
        t->shape[1] = s->cols;
        if (reshape && !strcmp(reshape, s->name)) t->n_dims = 1, t->shape[0] = 4;
        t->n_elements = t->shape[0] * (t->n_dims == 2 ? t->shape[1] : 1);
        bufs[n] = malloc((size_t)t->n_elements * sizeof(float));
        for (int64_t k = 0; k < t->n_elements; k++) bufs[n][k] = 0.01f * (float)((k * 7 + (int64_t)i) % 13) + 0.5f;
        if (poison && !strcmp(poison, s->name)) bufs[n][3] = NAN;
        t->data = bufs[n];
        t->n_bytes = (size_t)t->n_elements * sizeof(float);
        n++;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(llmq_st_write(path, ts, n, NULL), LLMQ_OK, "%s", llmq_last_error());
    for (size_t i = 0; i < n; i++) free(bufs[i]);
}

/* ---- the CLI ------------------------------------------------------------------------ */

/* Runs `llmq <args>` with stdout discarded; returns stderr, sets *status. */
static char *run_llmq(int *status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *run_llmq(int *status, const char *fmt, ...)
{
    char bin[600], args[2048], cmd[3000];
    test_llmq_binary(bin, sizeof bin);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s %s 2>&1 >/dev/null", bin, args);
    FILE *p = popen(cmd, "r");
    cr_assert(p, "popen %s", cmd);
    static char out[8192];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

/* The command failed (exit status 1 or 2) with exactly one stderr line,
 * "llmq <cmd>: ...<want>...\n". */
static void show(const char *msg)
{
    if (getenv("LLMQ_ERRORS_SHOW")) fprintf(stderr, "MESSAGE %s%s", msg, msg[0] && msg[strlen(msg) - 1] == '\n' ? "" : "\n");
}

static void expect_cli_error(const char *out, int status, const char *cmd, const char *want)
{
    show(out);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "llmq %s: ", cmd);
    cr_expect(status == 1 || status == 2, "exit status %d for: %s", status, out);
    cr_expect(!strncmp(out, prefix, strlen(prefix)), "stderr starts with '%s': %s", prefix, out);
    size_t len = strlen(out);
    cr_expect(len > 0 && out[len - 1] == '\n' && !memchr(out, '\n', len - 1), "one line: %s", out);
    cr_expect(strstr(out, want), "expected '%s' in: %s", want, out);
}

/* llmq ppl on a checkpoint directory (the model is loaded before anything else). */
static void expect_ppl_error(const char *dir, const char *want)
{
    char tokens[512];
    snprintf(tokens, sizeof tokens, "%s/../tokens.json", dir);
    FILE *fp = fopen(tokens, "w");
    cr_assert(fp);
    fputs("[1, 2, 3, 4, 5, 6, 7, 8]", fp);
    fclose(fp);
    int st;
    char *out = run_llmq(&st, "ppl '%s' --tokens '%s' --ctx 4", dir, tokens);
    expect_cli_error(out, st, "ppl", want);
}

/* The library's message for path: "<path>: <want>" exactly. */
static void expect_message(const char *path, const char *want)
{
    char full[2048];
    snprintf(full, sizeof full, "%s: %s", path, want);
    show(llmq_last_error());
    cr_expect_str_eq(llmq_last_error(), full);
}

static void expect_st_open_fails(const char *dir, const char *file, const char *want)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    llmq_safetensors *st = llmq_st_open(path);
    cr_assert_null(st, "opened %s", path);
    expect_message(path, want);
}

/* The valid model works: the catalogue's failures come from the one defect each plants. */
Test(errors, the_base_checkpoint_is_valid)
{
    char d[300];
    case_dir(d, sizeof d, "good");
    write_config(d, NULL);
    write_weights(d, NULL, NULL, NULL);
    char tokens[512];
    snprintf(tokens, sizeof tokens, "%s/tokens.json", d);
    write_text(d, "tokens.json", "[1, 2, 3, 4, 5, 6, 7, 8]");
    int st;
    char *out = run_llmq(&st, "ppl '%s' --tokens '%s' --ctx 4", d, tokens);
    cr_assert_eq(st, 0, "%s", out);
}

/* ---- safetensors ----------------------------------------------------------------------- */

Test(errors, st_truncated_data)
{
    char d[300], p[400];
    case_dir(d, sizeof d, "st-truncated");
    write_config(d, NULL);
    write_weights(d, NULL, NULL, NULL);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    llmq_mapped_file f;
    cr_assert_eq(llmq_map_file(p, &f), LLMQ_OK);
    size_t size = f.size;
    llmq_unmap_file(&f);
    cr_assert_eq(truncate(p, (off_t)size - 100), 0);
    cr_assert_null(llmq_st_open(p));
    cr_expect(strstr(llmq_last_error(), "': data_offsets ["), "%s", llmq_last_error());
    cr_expect(strstr(llmq_last_error(), "] outside the "), "%s", llmq_last_error());
    expect_ppl_error(d, "-byte data area");
}

Test(errors, st_shorter_than_the_length_prefix)
{
    char d[300];
    case_dir(d, sizeof d, "st-tiny");
    write_config(d, NULL);
    write_bytes(d, "model.safetensors", "\x10\0\0\0\0", 5);
    expect_st_open_fails(d, "model.safetensors", "file is 5 bytes, too short for the 8-byte header length");
    expect_ppl_error(d, "model.safetensors: file is 5 bytes, too short for the 8-byte header length");
}

Test(errors, st_header_length_past_the_end)
{
    char d[300];
    case_dir(d, sizeof d, "st-lying-length");
    write_config(d, NULL);
    unsigned char b[24] = {0x40, 0x42, 0x0f, 0, 0, 0, 0, 0, '{', '}'}; /* claims 1000000 bytes */
    write_bytes(d, "model.safetensors", b, sizeof b);
    expect_st_open_fails(d, "model.safetensors",
                         "header length 1000000 runs past the end of the file (24 bytes)");
    expect_ppl_error(d, "header length 1000000 runs past the end of the file (24 bytes)");
}

Test(errors, st_header_length_over_the_limit)
{
    char d[300];
    case_dir(d, sizeof d, "st-huge-header");
    write_config(d, NULL);
    unsigned char b[16] = {0, 0, 0, 0, 0, 0, 0, 0x01, '{', '}'}; /* 2^56 */
    write_bytes(d, "model.safetensors", b, sizeof b);
    expect_st_open_fails(d, "model.safetensors", "header length 72057594037927936 exceeds the 104857600-byte limit");
    expect_ppl_error(d, "exceeds the 104857600-byte limit");
}

Test(errors, st_header_not_json)
{
    char d[300];
    case_dir(d, sizeof d, "st-bad-json");
    write_config(d, NULL);
    write_raw_st(d, "model.safetensors", "{\"a\": {\"dtype\": \"F32\",", 0);
    char p[400];
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    cr_assert_null(llmq_st_open(p));
    cr_expect(strstr(llmq_last_error(), "model.safetensors: header JSON is invalid at byte "), "%s", llmq_last_error());
    expect_ppl_error(d, "header JSON is invalid at byte ");
}

Test(errors, st_header_not_an_object)
{
    char d[300];
    case_dir(d, sizeof d, "st-array-header");
    write_config(d, NULL);
    write_raw_st(d, "model.safetensors", "[1, 2, 3]", 0);
    expect_st_open_fails(d, "model.safetensors", "header is not a JSON object");
    expect_ppl_error(d, "model.safetensors: header is not a JSON object");
}

Test(errors, st_duplicate_tensor_in_header)
{
    char d[300];
    case_dir(d, sizeof d, "st-duplicate");
    write_config(d, NULL);
    write_raw_st(d, "model.safetensors",
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                 8);
    char p[400];
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    cr_assert_null(llmq_st_open(p));
    cr_expect(strstr(llmq_last_error(), "header JSON is invalid at byte "), "%s", llmq_last_error());
    cr_expect(strstr(llmq_last_error(), "duplicate object key"), "%s", llmq_last_error());
    expect_ppl_error(d, "duplicate object key");
}

Test(errors, st_overlapping_tensors)
{
    char d[300];
    case_dir(d, sizeof d, "st-overlap");
    write_config(d, NULL);
    write_raw_st(d, "model.safetensors",
                 "{\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]},"
                 "\"lm_head.weight\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}",
                 32);
    expect_st_open_fails(d, "model.safetensors", "tensors 'model.norm.weight' and 'lm_head.weight' overlap in the data area");
    expect_ppl_error(d, "tensors 'model.norm.weight' and 'lm_head.weight' overlap in the data area");
}

Test(errors, st_unknown_dtype)
{
    char d[300];
    case_dir(d, sizeof d, "st-dtype");
    write_config(d, NULL);
    write_raw_st(d, "model.safetensors", "{\"model.norm.weight\":{\"dtype\":\"I8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 8);
    expect_st_open_fails(d, "model.safetensors",
                         "tensor 'model.norm.weight': dtype 'I8' is not supported (F32, F16, BF16 and I32 are)");
    expect_ppl_error(d, "tensor 'model.norm.weight': dtype 'I8' is not supported (F32, F16, BF16 and I32 are)");
}

Test(errors, st_shape_disagrees_with_data_offsets)
{
    char d[300];
    case_dir(d, sizeof d, "st-lying-shape");
    write_config(d, NULL);
    write_raw_st(d, "model.safetensors", "{\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,16]}}", 16);
    expect_st_open_fails(d, "model.safetensors", "tensor 'model.norm.weight': shape needs 32 bytes but data_offsets span 16");
    expect_ppl_error(d, "shape needs 32 bytes but data_offsets span 16");
}

Test(errors, st_negative_dimension)
{
    char d[300];
    case_dir(d, sizeof d, "st-negative-dim");
    write_config(d, NULL);
    write_raw_st(d, "model.safetensors", "{\"w\":{\"dtype\":\"F16\",\"shape\":[-2, 4],\"data_offsets\":[0,16]}}", 16);
    expect_st_open_fails(d, "model.safetensors", "tensor 'w': field 'shape' has an invalid dimension");
    expect_ppl_error(d, "tensor 'w': field 'shape' has an invalid dimension");
}

Test(errors, st_missing_data_offsets)
{
    char d[300];
    case_dir(d, sizeof d, "st-no-offsets");
    write_config(d, NULL);
    write_raw_st(d, "model.safetensors", "{\"w\":{\"dtype\":\"BF16\",\"shape\":[4]}}", 8);
    expect_st_open_fails(d, "model.safetensors", "tensor 'w': field 'data_offsets' must be [begin, end]");
    expect_ppl_error(d, "tensor 'w': field 'data_offsets' must be [begin, end]");
}

Test(errors, st_shape_disagrees_with_config)
{
    char d[300];
    case_dir(d, sizeof d, "st-vs-config");
    write_config(d, NULL);
    write_weights(d, NULL, "model.layers.0.self_attn.k_proj.weight", NULL);
    expect_ppl_error(d, "model.safetensors: tensor 'model.layers.0.self_attn.k_proj.weight': shape 4 does not "
                        "match config.json (4×8)");
}

Test(errors, st_tensor_missing)
{
    char d[300];
    case_dir(d, sizeof d, "st-missing-tensor");
    write_config(d, NULL);
    write_weights(d, "model.layers.0.mlp.up_proj.weight", NULL, NULL);
    char want[512];
    snprintf(want, sizeof want, "%s: tensor 'model.layers.0.mlp.up_proj.weight' is missing", d);
    expect_ppl_error(d, want);
}

Test(errors, st_no_weights_in_directory)
{
    char d[300];
    case_dir(d, sizeof d, "st-no-weights");
    write_config(d, NULL);
    write_text(d, "pytorch_model.bin", "pickle");
    char want[512];
    snprintf(want, sizeof want, "%s: no model.safetensors or model.safetensors.index.json in this directory", d);
    cr_assert_null(llmq_st_open(d));
    cr_expect_str_eq(llmq_last_error(), want);
    expect_ppl_error(d, want);
}

Test(errors, st_non_finite_weights)
{
    char d[300], p[400];
    case_dir(d, sizeof d, "st-nan");
    write_config(d, NULL);
    write_weights(d, NULL, NULL, "model.layers.0.mlp.down_proj.weight");
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    llmq_safetensors *st = llmq_st_open(p);
    cr_assert(st, "%s", llmq_last_error());
    int bad = 0;
    for (size_t i = 0; i < llmq_st_count(st); i++) bad += llmq_st_check_finite(llmq_st_at(st, i)) != LLMQ_OK;
    cr_expect_eq(bad, 1);
    cr_expect_eq(llmq_st_check_finite(llmq_st_find(st, "model.layers.0.mlp.down_proj.weight")), LLMQ_ERR);
    expect_message(p, "tensor 'model.layers.0.mlp.down_proj.weight': element 3 is NaN: refusing a checkpoint with "
                      "non-finite weights");
    llmq_st_close(st);
}

/* ---- sharded checkpoints (model.safetensors.index.json) --------------------------------- */

Test(errors, index_shard_name_escapes_the_directory)
{
    char d[300];
    case_dir(d, sizeof d, "index-escape");
    write_config(d, NULL);
    write_text(d, "model.safetensors.index.json", "{\"weight_map\": {\"model.norm.weight\": \"../../secret.safetensors\"}}");
    char want[600];
    snprintf(want, sizeof want,
             "%s/model.safetensors.index.json: weight_map['model.norm.weight']: shard name '../../secret.safetensors' "
             "is not a plain file name", d);
    expect_ppl_error(d, want);
}

Test(errors, index_names_a_tensor_no_shard_holds)
{
    char d[300];
    case_dir(d, sizeof d, "index-missing");
    write_config(d, NULL);
    write_weights(d, NULL, NULL, NULL);
    write_text(d, "model.safetensors.index.json",
               "{\"weight_map\": {\"model.norm.weight\": \"model.safetensors\", \"model.ghost.weight\": \"model.safetensors\"}}");
    expect_ppl_error(d, "model.safetensors.index.json: tensor 'model.ghost.weight' is listed but no shard holds it");
}

Test(errors, index_shard_file_missing)
{
    char d[300];
    case_dir(d, sizeof d, "index-no-shard");
    write_config(d, NULL);
    write_text(d, "model.safetensors.index.json", "{\"weight_map\": {\"model.norm.weight\": \"model-00001-of-00002.safetensors\"}}");
    char want[600];
    snprintf(want, sizeof want, "%s/model-00001-of-00002.safetensors: cannot open: No such file or directory", d);
    expect_ppl_error(d, want);
}

Test(errors, index_without_weight_map)
{
    char d[300];
    case_dir(d, sizeof d, "index-no-map");
    write_config(d, NULL);
    write_text(d, "model.safetensors.index.json", "{\"metadata\": {\"total_size\": 0}}");
    expect_ppl_error(d, "model.safetensors.index.json: field 'weight_map' missing or not an object");
}

/* ---- config.json --------------------------------------------------------------------------- */

/* config.json is read before the weights: a directory with only config.json suffices. */
static void expect_config_error(const char *name, const char *text, const char *want)
{
    char d[300], p[400];
    case_dir(d, sizeof d, name);
    write_text(d, "config.json", text);
    snprintf(p, sizeof p, "%s/config.json", d);
    llmq_config cfg;
    cr_assert_eq(llmq_config_load(d, &cfg), LLMQ_ERR, "%s loaded", name);
    expect_message(p, want);
    char full[1024];
    snprintf(full, sizeof full, "%s: %s", p, want);
    expect_ppl_error(d, full);
}

static void expect_config_field_error(const char *name, const char *extra, const char *want)
{
    char text[2048];
    snprintf(text, sizeof text, GOOD_CONFIG_FMT, extra);
    expect_config_error(name, text, want);
}

Test(errors, config_not_json)
{
    expect_config_error("cfg-not-json", "{\"hidden_size\": 8,,}",
                        "invalid JSON at line 1: string or '}' expected near ','");
}

Test(errors, config_unknown_architecture)
{
    expect_config_error("cfg-arch", "{\"architectures\": [\"GPT2LMHeadModel\"], \"n_embd\": 768}",
                        "field 'architectures' = 'GPT2LMHeadModel' is not supported (LlamaForCausalLM, "
                        "MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, "
                        "Gemma3ForConditionalGeneration, Phi3ForCausalLM, MixtralForCausalLM, Qwen3MoeForCausalLM are)");
}

Test(errors, config_no_architecture)
{
    expect_config_error("cfg-no-arch", "{\"model_type\": \"llama\", \"hidden_size\": 8}",
                        "field 'architectures' is missing or empty");
}

Test(errors, config_missing_field)
{
    expect_config_error("cfg-missing", "{\"architectures\": [\"LlamaForCausalLM\"], \"intermediate_size\": 16}",
                        "field 'hidden_size' is missing");
}

Test(errors, config_field_of_wrong_type)
{
    expect_config_field_error("cfg-type", ", \"num_hidden_layers\": \"12\"",
                              "field 'num_hidden_layers' is not a valid non-negative integer");
}

Test(errors, config_negative_field)
{
    expect_config_field_error("cfg-negative", ", \"vocab_size\": -5",
                              "field 'vocab_size' is not a valid non-negative integer");
}

Test(errors, config_heads_do_not_divide)
{
    expect_config_field_error("cfg-gqa", ", \"num_key_value_heads\": 3",
                              "field 'num_attention_heads' (2) is not a multiple of num_key_value_heads (3)");
}

Test(errors, config_hidden_not_a_multiple_of_heads)
{
    expect_config_field_error("cfg-heads", ", \"num_attention_heads\": 3, \"num_key_value_heads\": 3",
                              "field 'hidden_size' (8) is not a multiple of num_attention_heads (3)");
}

Test(errors, config_odd_head_dim)
{
    expect_config_field_error("cfg-odd", ", \"head_dim\": 3", "field 'head_dim' (3) must be even for RoPE");
}

Test(errors, config_unsupported_activation)
{
    expect_config_field_error("cfg-act", ", \"hidden_act\": \"gelu\"", "field 'hidden_act' must be \"silu\"");
}

Test(errors, config_unsupported_rope_scaling)
{
    expect_config_field_error("cfg-rope", ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}",
                              "field 'rope_scaling.rope_type' = 'yarn' is not supported (linear, llama3 and longrope are)");
}

Test(errors, config_zero_eps)
{
    expect_config_field_error("cfg-eps", ", \"rms_norm_eps\": 0",
                              "fields 'rms_norm_eps' and 'rope_theta' must be positive");
}

/* Found by hand while fuzzing: 65536 heads of 65536 passed, and llmq_model_load
 * then overflowed int computing the q width (UBSan: signed integer overflow). */
Test(errors, config_head_width_overflows)
{
    expect_config_field_error("cfg-width", ", \"num_attention_heads\": 65536, \"num_key_value_heads\": 1, \"head_dim\": 65536",
                              "num_attention_heads (65536) × head_dim (65536) is too large");
}

/* A token id past INT32_MAX used to wrap to a negative int. */
Test(errors, config_token_id_too_large)
{
    expect_config_field_error("cfg-bos", ", \"bos_token_id\": 3000000000", "field 'bos_token_id' is not a token id");
}

Test(errors, config_missing_file)
{
    char d[300], p[400];
    case_dir(d, sizeof d, "cfg-absent");
    snprintf(p, sizeof p, "%s/config.json", d);
    llmq_config cfg;
    cr_assert_eq(llmq_config_load(d, &cfg), LLMQ_ERR);
    expect_message(p, "cannot open: No such file or directory");
    char want[600];
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", p);
    expect_ppl_error(d, want);
}

/* ---- tokenizer.json (llmq tokenize) ---------------------------------------------------------- */

static void expect_tokenizer_error(const char *name, const char *json, const char *want)
{
    char d[300], p[400];
    case_dir(d, sizeof d, name);
    write_text(d, "tokenizer.json", json);
    snprintf(p, sizeof p, "%s/tokenizer.json", d);
    llmq_tokenizer *tok = llmq_tokenizer_load(d);
    cr_assert_null(tok, "%s loaded", name);
    cr_expect(strstr(llmq_last_error(), want), "expected '%s' in: %s", want, llmq_last_error());
    cr_expect(strstr(llmq_last_error(), p), "names the file: %s", llmq_last_error());
    int st;
    char *out = run_llmq(&st, "tokenize '%s' 'Hello'", d);
    expect_cli_error(out, st, "tokenize", want);
}

Test(errors, tokenizer_not_json)
{
    expect_tokenizer_error("tok-not-json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}", "invalid JSON");
}

Test(errors, tokenizer_unsupported_model)
{
    expect_tokenizer_error("tok-unigram", "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}",
                           "unsupported tokenizer type Unigram");
}

Test(errors, tokenizer_without_model)
{
    expect_tokenizer_error("tok-no-model", "{\"version\": \"1.0\", \"added_tokens\": []}", "missing 'model'");
}

Test(errors, tokenizer_merge_of_unknown_token)
{
    expect_tokenizer_error("tok-bad-merge",
                           "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, "
                           "\"merges\": [\"a b\", \"ab zz\"]}}",
                           "model.merges[1]: token 'zz' is not in the vocab");
}

Test(errors, tokenizer_unsupported_pre_tokenizer)
{
    expect_tokenizer_error("tok-pre",
                           "{\"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}, \"model\": {\"type\": \"BPE\", "
                           "\"vocab\": {\"a\": 0}, \"merges\": []}}",
                           "unsupported pre_tokenizer type BertPreTokenizer");
}

Test(errors, tokenizer_absent)
{
    char d[300];
    case_dir(d, sizeof d, "tok-absent");
    int st;
    char *out = run_llmq(&st, "tokenize '%s' 'Hello'", d);
    char want[512];
    snprintf(want, sizeof want, "%s/tokenizer.json: no tokenizer.json there", d);
    expect_cli_error(out, st, "tokenize", want);
}

/* ---- token files (llmq ppl --tokens) ----------------------------------------------------------- */

Test(errors, tokens_file_not_a_list)
{
    char d[300], t[400];
    case_dir(d, sizeof d, "tokens-bad");
    write_config(d, NULL);
    write_weights(d, NULL, NULL, NULL);
    write_text(d, "tokens.json", "{\"ids\": [1, 2]}");
    snprintf(t, sizeof t, "%s/tokens.json", d);
    int st;
    char *out = run_llmq(&st, "ppl '%s' --tokens '%s'", d, t);
    char want[600];
    snprintf(want, sizeof want, "%s: expected a JSON array of token ids", t);
    expect_cli_error(out, st, "ppl", want);
}

Test(errors, token_id_outside_the_vocabulary)
{
    char d[300], t[400];
    case_dir(d, sizeof d, "tokens-range");
    write_config(d, NULL);
    write_weights(d, NULL, NULL, NULL);
    write_text(d, "tokens.json", "[1, 2, 3, 99, 4, 5, 6, 7]");
    snprintf(t, sizeof t, "%s/tokens.json", d);
    int st;
    char *out = run_llmq(&st, "ppl '%s' --tokens '%s' --ctx 4", d, t);
    expect_cli_error(out, st, "ppl", "token id 99 at position 3 is outside the vocabulary (0..15)");
}

/* ---- GGUF (library: no command reads GGUF yet) ---------------------------------------------------- */

/* A GGUF image assembled by hand: header, then the caller's bytes. */
typedef struct {
    unsigned char b[512];
    size_t n;
} image;

static void put(image *im, const void *p, size_t n)
{
    cr_assert(im->n + n <= sizeof im->b);
    memcpy(im->b + im->n, p, n);
    im->n += n;
}
static void put_u32(image *im, uint32_t v) { put(im, &v, 4); }
static void put_u64(image *im, uint64_t v) { put(im, &v, 8); }
static void put_str(image *im, const char *s)
{
    put_u64(im, strlen(s));
    put(im, s, strlen(s));
}

static image gguf_header(uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    image im = {.n = 0};
    put(&im, "GGUF", 4);
    put_u32(&im, version);
    put_u64(&im, n_tensors);
    put_u64(&im, n_kv);
    return im;
}

static void expect_gguf_error(const image *im, const char *want)
{
    llmq_gguf *g = llmq_gguf_open_memory(im->b, im->n, "bad.gguf");
    cr_assert_null(g, "opened");
    show(llmq_last_error());
    cr_expect(!strncmp(llmq_last_error(), "bad.gguf: ", 10), "%s", llmq_last_error());
    cr_expect(strstr(llmq_last_error(), want), "expected '%s' in: %s", want, llmq_last_error());
}

Test(errors, gguf_bad_magic)
{
    image im = gguf_header(3, 0, 0);
    memcpy(im.b, "GGML", 4);
    expect_gguf_error(&im, "not a GGUF file");
}

Test(errors, gguf_version_1)
{
    image im = gguf_header(1, 0, 0);
    expect_gguf_error(&im, "version 1");
}

Test(errors, gguf_kv_count_larger_than_the_file)
{
    image im = gguf_header(3, 0, 1000000000ull);
    expect_gguf_error(&im, "1000000000");
}

Test(errors, gguf_string_length_past_the_end)
{
    image im = gguf_header(3, 0, 1);
    put_u64(&im, 1ull << 40); /* key length */
    put(&im, "general", 7);
    expect_gguf_error(&im, "exceeds the");
}

Test(errors, gguf_unknown_value_type)
{
    image im = gguf_header(3, 0, 1);
    put_str(&im, "general.architecture");
    put_u32(&im, 13);
    put_u64(&im, 0);
    expect_gguf_error(&im, "key 'general.architecture'");
}

Test(errors, gguf_array_of_arrays)
{
    image im = gguf_header(3, 0, 1);
    put_str(&im, "nested");
    put_u32(&im, 9);  /* array */
    put_u32(&im, 9);  /* of arrays */
    put_u64(&im, 1);
    put_u32(&im, 4);
    put_u64(&im, 0);
    expect_gguf_error(&im, "array");
}

Test(errors, gguf_tensor_data_past_the_end)
{
    image im = gguf_header(3, 1, 0);
    put_str(&im, "blk.0.attn_q.weight");
    put_u32(&im, 2);
    put_u64(&im, 64);
    put_u64(&im, 64);
    put_u32(&im, 0); /* F32: 16 KiB the file does not have */
    put_u64(&im, 0);
    while (im.n % 32) put(&im, "", 1);
    expect_gguf_error(&im, "tensor 'blk.0.attn_q.weight'");
}

Test(errors, gguf_unknown_tensor_type)
{
    image im = gguf_header(3, 1, 0);
    put_str(&im, "t");
    put_u32(&im, 1);
    put_u64(&im, 32);
    put_u32(&im, 999);
    put_u64(&im, 0);
    expect_gguf_error(&im, "unknown tensor type id 999");
}

Test(errors, gguf_too_many_dims)
{
    image im = gguf_header(3, 1, 0);
    put_str(&im, "t");
    put_u32(&im, 7);
    for (int i = 0; i < 8; i++) put_u64(&im, 32);
    expect_gguf_error(&im, "n_dims is 7, at most 4 are allowed");
}

/* ---- the hub (llmq pull against scripts/mock-hub) -------------------------------------------------- */

/* Serves dir as repo org/name (token-protected when token != NULL), with
 * extra_sibling added to its file list when not NULL. */
static void start_mock(const char *case_root, const char *files, const char *token, const char *extra_sibling)
{
    char cfg[600], port_file[600], cfg_text[2048];
    snprintf(cfg, sizeof cfg, "%.400s/mock.json", case_root);
    snprintf(port_file, sizeof port_file, "%.400s/mock.port", case_root);
    snprintf(cfg_text, sizeof cfg_text,
             "{%s%s%s \"repos\": {\"org/name\": {\"commit\": \"0123456789abcdef0123456789abcdef01234567\", "
             "\"dir\": \"%.400s\"%s%s%s}}}",
             token ? "\"token\": \"" : "", token ? token : "", token ? "\"," : "", files,
             extra_sibling ? ", \"extra_siblings\": [" : "", extra_sibling ? extra_sibling : "",
             extra_sibling ? "]" : "");
    write_text(case_root, "mock.json", cfg_text);
    test_mock_hub_start(cfg, port_file, NULL);
    char cache[600];
    snprintf(cache, sizeof cache, "%.400s/cache", case_root);
    setenv("HF_HUB_CACHE", cache, 1);
    setenv("HF_HOME", case_root, 1);
    unsetenv("HF_TOKEN");
    unsetenv("HUGGING_FACE_HUB_TOKEN");
    unsetenv("HF_HUB_OFFLINE");
    setenv("LLMQ_HUB_RETRY_BASE_MS", "5", 1);
}

static void hub_case(char *d, size_t n, const char *name, const char *token, const char *extra_sibling)
{
    char abs[PATH_MAX], files[600];
    case_dir(d, n, name);
    cr_assert(realpath(d, abs));
    snprintf(files, sizeof files, "%.400s/files", abs);
    cr_assert_eq(mkdir(files, 0755), 0);
    write_config(files, NULL);
    write_weights(files, NULL, NULL, NULL);
    start_mock(abs, files, token, extra_sibling);
}

Test(errors, hub_gated_repo_without_token, .fini = test_mock_hub_stop)
{
    char d[300];
    hub_case(d, sizeof d, "hub-401", "hf_secret_token_for_tests", NULL);
    int st;
    char *out = run_llmq(&st, "pull org/name --quiet");
    expect_cli_error(out, st, "pull", "org/name: gated or private repo: set HF_TOKEN (or accept the repo's terms on the hub) (HTTP 401)");
}

Test(errors, hub_missing_repo, .fini = test_mock_hub_stop)
{
    char d[300];
    hub_case(d, sizeof d, "hub-404", NULL, NULL);
    int st;
    char *out = run_llmq(&st, "pull org/nothing-here --quiet");
    expect_cli_error(out, st, "pull", "org/nothing-here@main: no such repo or revision (HTTP 404)");
    out = run_llmq(&st, "pull org/name@no-such-branch --quiet");
    expect_cli_error(out, st, "pull", "org/name@no-such-branch: no such repo or revision (HTTP 404)");
}

Test(errors, hub_hostile_file_name, .fini = test_mock_hub_stop)
{
    char d[300];
    hub_case(d, sizeof d, "hub-evil", NULL,
             "{\"rfilename\": \"../../outside.safetensors\", \"size\": 4, \"blobId\": \"0123456789012345678901234567890123456789\"}");
    int st;
    char *out = run_llmq(&st, "pull org/name --quiet");
    expect_cli_error(out, st, "pull",
                     "org/name: repo info: refusing file name '../../outside.safetensors' (absolute, '..', backslash or "
                     "control character): the server is not trustworthy");
}

Test(errors, hub_invalid_repo_id)
{
    int st;
    char *out = run_llmq(&st, "pull '../etc/passwd' --quiet");
    expect_cli_error(out, st, "pull",
                     "hub: '../etc/passwd' is not a repo id (org/name: letters, digits, '-', '_', '.'; no '..' or '--')");
}
