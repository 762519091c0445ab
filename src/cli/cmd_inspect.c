/* llmq inspect PATH [--json]: architecture, hyperparameters, tensors and
 * parameter count of a checkpoint directory or a GGUF file (for GGUF also
 * every metadata key, arrays summarised). */
#include "cli.h"
#include "llmq/config.h"
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/gguf.h"
#include "llmq/hf_config.h"
#include "llmq/gguf_model.h"
#include "llmq/safetensors.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *usage =
    "usage: llmq inspect PATH [--json]\n"
    "\n"
    "Shows the architecture, hyperparameters, tensor table (name, dtype, shape, bytes) and parameter\n"
    "count of PATH: a checkpoint directory (config.json + safetensors) or a .gguf file (also its\n"
    "metadata keys, arrays summarised).\n"
    "\n"
    "  --json    print one JSON object instead of text\n";

static json_t *config_json(const llmq_config *c)
{
    json_t *o = json_object();
    json_object_set_new(o, "architecture", json_string(c->architecture));
    json_object_set_new(o, "model_type", json_string(c->model_type));
    json_object_set_new(o, "hidden_size", json_integer(c->hidden_size));
    json_object_set_new(o, "intermediate_size", json_integer(c->intermediate_size));
    json_object_set_new(o, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(o, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(o, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(o, "head_dim", json_integer(c->head_dim));
    json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(o, "max_position_embeddings", json_integer(c->max_position_embeddings));
    json_object_set_new(o, "rms_norm_eps", json_real(c->rms_norm_eps));
    json_object_set_new(o, "rope_theta", json_real(c->rope_theta));
    static const char *const scaling[] = {"none", "linear", "llama3", "longrope"};
    json_object_set_new(o, "rope_scaling", json_string(scaling[c->rope_scaling]));
    if (c->rope_scaling != LLMQ_ROPE_SCALING_NONE) json_object_set_new(o, "rope_factor", json_real(c->rope_factor));
    json_object_set_new(o, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
    json_object_set_new(o, "attention_bias", json_boolean(c->qkv_bias));
    json_object_set_new(o, "qk_norm", json_boolean(c->qk_norm));
    json_object_set_new(o, "hidden_act", json_string(c->hidden_act == LLMQ_ACT_GELU_TANH ? "gelu_pytorch_tanh" : "silu"));
    if (c->post_norms) {
        json_object_set_new(o, "post_norms", json_true());
        json_object_set_new(o, "attn_scale", json_real(c->attn_scale));
        json_object_set_new(o, "sliding_window", json_integer(c->sliding_window));
        json_object_set_new(o, "sliding_window_pattern", json_integer(c->swa_pattern));
        if (c->rope_local_theta > 0) json_object_set_new(o, "rope_local_base_freq", json_real(c->rope_local_theta));
        if (c->attn_softcap > 0) json_object_set_new(o, "attn_logit_softcapping", json_real(c->attn_softcap));
        if (c->final_softcap > 0) json_object_set_new(o, "final_logit_softcapping", json_real(c->final_softcap));
    }
    return o;
}

static void print_config(const llmq_config *c)
{
    printf("architecture:  %s (%s)\n", c->architecture, c->model_type);
    printf("layers %d, hidden %d, ffn %d, heads %d (kv %d, head_dim %d), vocab %d, context %d\n", c->n_layers,
           c->hidden_size, c->intermediate_size, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size,
           c->max_position_embeddings);
    printf("rms_norm_eps %g, rope_theta %g%s%s%s\n", c->rms_norm_eps, c->rope_theta,
           c->rope_scaling == LLMQ_ROPE_SCALING_LINEAR ? ", linear rope scaling" : "",
           c->rope_scaling == LLMQ_ROPE_SCALING_LLAMA3 ? ", llama3 rope scaling" : c->rope_scaling == LLMQ_ROPE_SCALING_LONGROPE ? ", LongRoPE" : "",
           c->tie_word_embeddings ? ", tied embeddings" : "");
    if (c->qk_norm) printf("q/k RMSNorms per head\n");
    if (c->post_norms)
        printf("Gemma: GeGLU, 1 + w norms, post-norms, embeddings x sqrt(hidden), attention scale %g, sliding window %d on %d of "
               "every %d layers%s%s\n",
               c->attn_scale, c->sliding_window, c->swa_pattern - 1, c->swa_pattern, c->attn_softcap > 0 ? ", soft-capped scores" : "",
               c->final_softcap > 0 ? ", soft-capped logits" : "");
}

static void shape_text(char *buf, size_t cap, int n_dims, const int64_t *dims)
{
    buf[0] = 0;
    for (int d = 0; d < n_dims; d++)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%lld", d ? "×" : "", (long long)dims[d]);
    if (n_dims == 0) snprintf(buf, cap, "scalar");
}

static json_t *tensor_json(const char *name, const char *dtype, int n_dims, const int64_t *dims, size_t bytes)
{
    json_t *t = json_object(), *shape = json_array();
    for (int d = 0; d < n_dims; d++) json_array_append_new(shape, json_integer(dims[d]));
    json_object_set_new(t, "name", json_string(name));
    json_object_set_new(t, "dtype", json_string(dtype));
    json_object_set_new(t, "shape", shape);
    json_object_set_new(t, "bytes", json_integer((json_int_t)bytes));
    return t;
}

/* A checkpoint's tensors against the ones config.json implies (what
 * llmq_model_load reads): `missing` the required ones it lacks, `unused` the
 * ones it has that the model never reads. */
typedef struct {
    const llmq_safetensors *st;
    char **read; /* every name the loader reads, required or not */
    size_t n_read;
    json_t *missing, *unused;
} tensor_audit;

static int audit_expected(void *user, const char *name, bool required)
{
    tensor_audit *a = user;
    char **grown = realloc(a->read, (a->n_read + 1) * sizeof *grown);
    if (grown) a->read = grown;
    char *copy = grown ? strdup(name) : NULL;
    if (!copy) return llmq_error("out of memory");
    a->read[a->n_read++] = copy;
    if (required && !llmq_st_find(a->st, name)) json_array_append_new(a->missing, json_string(name));
    return LLMQ_OK;
}

static int audit_tensors(tensor_audit *a, const llmq_config *cfg, bool packed, const llmq_safetensors *st)
{
    *a = (tensor_audit){.st = st, .missing = json_array(), .unused = json_array()};
    if (llmq_checkpoint_tensors(cfg, packed, audit_expected, a)) return LLMQ_ERR;
    for (size_t i = 0; i < llmq_st_count(st); i++) {
        const char *name = llmq_st_at(st, i)->name;
        size_t j = 0;
        while (j < a->n_read && strcmp(a->read[j], name)) j++;
        if (j == a->n_read) json_array_append_new(a->unused, json_string(name));
    }
    return LLMQ_OK;
}

static void audit_free(tensor_audit *a)
{
    for (size_t i = 0; i < a->n_read; i++) free(a->read[i]);
    free(a->read);
    json_decref(a->missing);
    json_decref(a->unused);
}

/* "n tensor(s) ...: a, b, c" with at most 8 names. */
static void audit_line(char *buf, size_t cap, const json_t *names, const char *what)
{
    size_t n = json_array_size(names);
    snprintf(buf, cap, "%zu tensor%s %s:", n, n == 1 ? "" : "s", what);
    for (size_t i = 0; i < n && i < 8; i++)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s %s", i ? "," : "", json_string_value(json_array_get(names, i)));
    if (n > 8) snprintf(buf + strlen(buf), cap - strlen(buf), ", ...");
}

static int inspect_checkpoint(const char *path, bool json)
{
    llmq_config cfg;
    char *dir = strdup(path);
    if (!llmq_is_dir(dir)) {
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0; else strcpy(dir, ".");
    }
    int rc = llmq_config_load(dir, &cfg);
    llmq_hf_qconfig hq;
    bool packed = false;
    if (rc == LLMQ_OK) rc = llmq_hf_qconfig_load(dir, &hq, &packed);
    free(dir);
    if (rc) return cli_fail_last("inspect");
    /* a GPTQ/AWQ checkpoint: load it, so a bad shape or g_idx is reported here */
    llmq_model *qm = packed ? llmq_model_load(path) : NULL;
    if (packed && !qm) return cli_fail_last("inspect");
    llmq_model_free(qm);
    llmq_safetensors *st = llmq_st_open(path);
    if (!st) return cli_fail_last("inspect");
    tensor_audit audit;
    if (audit_tensors(&audit, &cfg, packed, st)) {
        audit_free(&audit);
        llmq_st_close(st);
        return cli_fail_last("inspect");
    }
    int64_t params = 0;
    size_t bytes = 0;
    json_t *arr = json ? json_array() : NULL;
    char qline[160] = "";
    if (packed)
        snprintf(qline, sizeof qline, "%s %d-bit, group %d, %s%s%s", hq.method == LLMQ_HF_AWQ ? "awq gemm" : "gptq", hq.bits,
                 hq.group_size ? hq.group_size : -1, hq.sym ? "sym" : "asym", hq.desc_act ? ", desc_act" : "",
                 hq.method == LLMQ_HF_GPTQ ? (hq.v2 ? ", gptq_v2" : ", gptq v1") : "");
    if (!json) {
        print_config(&cfg);
        if (packed) printf("quantization: %s\n", qline);
        printf("\n%-56s %-5s %-14s %12s\n", "tensor", "dtype", "shape", "bytes");
    }
    for (size_t i = 0; i < llmq_st_count(st); i++) {
        const llmq_st_tensor *t = llmq_st_at(st, i);
        params += t->n_elements;
        bytes += t->n_bytes;
        const char *dtype = llmq_type_get(t->type)->name;
        if (json) {
            json_array_append_new(arr, tensor_json(t->name, dtype, t->n_dims, t->shape, t->n_bytes));
        } else {
            char shape[64];
            shape_text(shape, sizeof shape, t->n_dims, t->shape);
            printf("%-56s %-5s %-14s %12zu\n", t->name, dtype, shape, t->n_bytes);
        }
    }
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "path", json_string(path));
        json_object_set_new(o, "format", json_string("safetensors"));
        if (packed) json_object_set_new(o, "quantization", json_string(qline));
        json_object_set_new(o, "config", config_json(&cfg));
        json_object_set_new(o, "parameters", json_integer(params));
        json_object_set_new(o, "tensor_bytes", json_integer((json_int_t)bytes));
        json_object_set_new(o, "tensors", arr);
        json_object_set(o, "missing", audit.missing);
        json_object_set(o, "unused", audit.unused);
        cli_print_json_object(o);
    } else {
        printf("\n%zu tensors, %lld parameters, %zu bytes\n", llmq_st_count(st), (long long)params, bytes);
    }
    llmq_st_close(st);
    /* What the model would not find (a failure), and what it would leave unread (a note), on one line. */
    char line[1024] = "";
    if (json_array_size(audit.missing)) audit_line(line, sizeof line, audit.missing, "that config.json implies missing");
    if (json_array_size(audit.unused)) {
        if (*line) snprintf(line + strlen(line), sizeof line - strlen(line), "; ");
        audit_line(line + strlen(line), sizeof line - strlen(line), audit.unused, "not used by the model");
    }
    rc = 0;
    if (json_array_size(audit.missing)) rc = cli_fail("inspect", "%s: %s", path, line);
    else if (*line) fprintf(stderr, "llmq inspect: %s: %s\n", path, line);
    audit_free(&audit);
    return rc;
}

/* One metadata value as JSON (arrays: element type, count and the first few elements). */
static json_t *value_json(const llmq_gguf *g, int64_t kv, const llmq_gguf_value *v)
{
    json_t *s;
    switch (v->type) {
    case LLMQ_GGUF_U8: case LLMQ_GGUF_U16: case LLMQ_GGUF_U32: case LLMQ_GGUF_U64:
        return json_integer((json_int_t)v->u);
    case LLMQ_GGUF_I8: case LLMQ_GGUF_I16: case LLMQ_GGUF_I32: case LLMQ_GGUF_I64:
        return json_integer((json_int_t)v->i);
    case LLMQ_GGUF_F32: case LLMQ_GGUF_F64:
        return json_real(v->f);
    case LLMQ_GGUF_BOOL:
        return json_boolean(v->b);
    case LLMQ_GGUF_STRING:
        s = json_stringn(v->str.ptr, v->str.len);
        return s ? s : json_string("(invalid UTF-8)");
    case LLMQ_GGUF_ARRAY: {
        json_t *o = json_object(), *head = json_array();
        json_object_set_new(o, "array", json_string(llmq_gguf_type_name(v->arr.elem_type)));
        json_object_set_new(o, "count", json_integer((json_int_t)v->arr.count));
        for (uint64_t i = 0; i < v->arr.count && i < 8; i++) {
            llmq_gguf_value e;
            if (llmq_gguf_arr_value(g, kv, i, &e) == LLMQ_OK) json_array_append_new(head, value_json(g, kv, &e));
        }
        json_object_set_new(o, "first", head);
        return o;
    }
    default:
        return json_null();
    }
}

static void print_value(const llmq_gguf *g, int64_t kv, const llmq_gguf_value *v)
{
    switch (v->type) {
    case LLMQ_GGUF_U8: case LLMQ_GGUF_U16: case LLMQ_GGUF_U32: case LLMQ_GGUF_U64:
        printf("%llu", (unsigned long long)v->u);
        break;
    case LLMQ_GGUF_I8: case LLMQ_GGUF_I16: case LLMQ_GGUF_I32: case LLMQ_GGUF_I64:
        printf("%lld", (long long)v->i);
        break;
    case LLMQ_GGUF_F32: case LLMQ_GGUF_F64:
        printf("%g", v->f);
        break;
    case LLMQ_GGUF_BOOL:
        printf("%s", v->b ? "true" : "false");
        break;
    case LLMQ_GGUF_STRING: {
        /* one line, at most 60 bytes, control characters escaped */
        putchar('"');
        size_t n = v->str.len < 60 ? v->str.len : 60;
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)v->str.ptr[i];
            if (ch == '\n') fputs("\\n", stdout);
            else if (ch < 0x20) printf("\\x%02x", ch);
            else putchar(ch);
        }
        printf("\"%s", v->str.len > 60 ? "..." : "");
        break;
    }
    case LLMQ_GGUF_ARRAY:
        printf("[%s × %llu]", llmq_gguf_type_name(v->arr.elem_type), (unsigned long long)v->arr.count);
        for (uint64_t i = 0; i < v->arr.count && i < 4; i++) {
            llmq_gguf_value e;
            if (llmq_gguf_arr_value(g, kv, i, &e) != LLMQ_OK) break;
            fputs(i ? ", " : " ", stdout);
            print_value(g, kv, &e);
        }
        if (v->arr.count > 4) fputs(", ...", stdout);
        break;
    default:
        break;
    }
}

static int inspect_gguf(const char *path, bool json)
{
    llmq_gguf *g = llmq_gguf_open(path);
    if (!g) return cli_fail_last("inspect");
    llmq_config cfg;
    bool interleaved;
    bool have_cfg = llmq_gguf_read_config(g, &cfg, &interleaved) == LLMQ_OK;
    char cfg_error[256];
    snprintf(cfg_error, sizeof cfg_error, "%s", have_cfg ? "" : llmq_last_error());
    json_t *o = json ? json_object() : NULL, *meta = json ? json_object() : NULL, *arr = json ? json_array() : NULL;
    if (!json) {
        printf("GGUF v%u, %lld keys, %lld tensors, alignment %u, %zu bytes\n", llmq_gguf_version(g),
               (long long)llmq_gguf_kv_count(g), (long long)llmq_gguf_tensor_count(g), llmq_gguf_alignment(g),
               llmq_gguf_file_size(g));
        if (have_cfg) print_config(&cfg);
        else printf("architecture:  not loadable by llmq (%s)\n", cfg_error);
        printf("\nmetadata:\n");
    }
    for (int64_t kv = 0; kv < llmq_gguf_kv_count(g); kv++) {
        llmq_gguf_value v;
        if (llmq_gguf_kv_value(g, kv, &v) != LLMQ_OK) continue;
        if (json) {
            json_object_set_new(meta, llmq_gguf_kv_key(g, kv), value_json(g, kv, &v));
        } else {
            printf("  %-44s ", llmq_gguf_kv_key(g, kv));
            print_value(g, kv, &v);
            putchar('\n');
        }
    }
    if (!json) printf("\n%-40s %-6s %-14s %12s\n", "tensor", "dtype", "shape", "bytes");
    int64_t params = 0;
    size_t bytes = 0;
    for (int64_t i = 0; i < llmq_gguf_tensor_count(g); i++) {
        const llmq_gguf_tensor *t = llmq_gguf_tensor_at(g, i);
        /* shown in PyTorch order (rows × cols): ggml's ne reversed */
        int64_t dims[LLMQ_GGUF_MAX_DIMS];
        for (int d = 0; d < t->n_dims; d++) dims[d] = t->ne[t->n_dims - 1 - d];
        const llmq_type_traits *tr = llmq_type_get(t->type);
        char tname[16];
        snprintf(tname, sizeof tname, "%s", tr ? tr->name : "?");
        if (!tr) snprintf(tname, sizeof tname, "type%d", (int)t->type);
        params += t->n_elements;
        bytes += t->size;
        if (json) {
            json_array_append_new(arr, tensor_json(t->name, tname, t->n_dims, dims, t->size));
        } else {
            char shape[64];
            shape_text(shape, sizeof shape, t->n_dims, dims);
            printf("%-40s %-6s %-14s %12zu\n", t->name, tname, shape, t->size);
        }
    }
    if (json) {
        json_object_set_new(o, "path", json_string(path));
        json_object_set_new(o, "format", json_string("gguf"));
        json_object_set_new(o, "version", json_integer(llmq_gguf_version(g)));
        json_object_set_new(o, "file_bytes", json_integer((json_int_t)llmq_gguf_file_size(g)));
        json_object_set_new(o, "config", have_cfg ? config_json(&cfg) : json_null());
        if (!have_cfg) json_object_set_new(o, "config_error", json_string(cfg_error));
        json_object_set_new(o, "metadata", meta);
        json_object_set_new(o, "parameters", json_integer(params));
        json_object_set_new(o, "tensor_bytes", json_integer((json_int_t)bytes));
        json_object_set_new(o, "tensors", arr);
        cli_print_json_object(o);
    } else {
        printf("\n%lld tensors, %lld parameters, %zu bytes (%.3f bits per weight)\n", (long long)llmq_gguf_tensor_count(g),
               (long long)params, bytes, params ? 8.0 * (double)bytes / (double)params : 0.0);
    }
    llmq_gguf_close(g);
    return 0;
}

int cmd_inspect(int argc, char **argv)
{
    const char *path = NULL;
    bool json = false;
    for (cli_args a = cli_begin("inspect", argc, argv); cli_next(&a);) {
        if (cli_flag(&a, "--help") || cli_flag(&a, "-h")) {
            fputs(usage, stdout);
            return 0;
        }
        if (cli_flag(&a, "--json")) json = true;
        else if (a.positional && !path) path = a.positional;
        else {
            cli_unknown(&a);
            return 2;
        }
    }
    if (!path) {
        fputs(usage, stderr);
        return 2;
    }
    if (!llmq_is_dir(path) && !llmq_file_exists(path)) return cli_fail("inspect", "%s: no such file or directory", path);
    return llmq_is_gguf_file(path) ? inspect_gguf(path, json) : inspect_checkpoint(path, json);
}
