/* Hugging Face GPTQ / AWQ quantization_config (config.json or
 * quantize_config.json). See llmq/hf_config.h. */
#include "llmq/hf_config.h"

#include "llmq/error.h"
#include "llmq/file.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

llmq_type llmq_hf_grid_type(int bits, bool sym)
{
    if (bits == 8) return sym ? LLMQ_TYPE_Q8_0 : LLMQ_TYPE_HF_U8;
    return sym ? LLMQ_TYPE_Q4_0 : LLMQ_TYPE_HF_U4;
}

/* ---------------------------------------------------------------- config */

static int get_int(json_t *o, const char *key, const char *alt, const char *file, int *out, bool *present)
{
    json_t *v = json_object_get(o, key);
    if (!v && alt) v = json_object_get(o, key = alt);
    *present = v != NULL;
    if (!v || json_is_null(v)) {
        *present = false;
        return LLMQ_OK;
    }
    if (!json_is_integer(v)) return llmq_error("%s: quantization_config.%s must be an integer", file, key);
    *out = (int)json_integer_value(v);
    return LLMQ_OK;
}

static int get_bool(json_t *o, const char *key, const char *file, bool *out)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return LLMQ_OK;
    if (!json_is_boolean(v)) return llmq_error("%s: quantization_config.%s must be true or false", file, key);
    *out = json_is_true(v);
    return LLMQ_OK;
}

static const char *get_str(json_t *o, const char *key) { return json_string_value(json_object_get(o, key)); }

static int parse_qconfig(json_t *qc, const char *file, bool quantize_config_json, llmq_hf_qconfig *q)
{
    memset(q, 0, sizeof *q);
    if (!json_is_object(qc)) return llmq_error("%s: quantization_config must be an object", file);
    json_t *jm = json_object_get(qc, "quant_method");
    const char *m = json_string_value(jm);
    if (jm && !m) return llmq_error("%s: quantization_config.quant_method must be a string", file);
    if (!m && quantize_config_json) m = "gptq"; /* AutoGPTQ's quantize_config.json predates the field */
    if (!m) return llmq_error("%s: quantization_config.quant_method is missing", file);
    if (!strcasecmp(m, "gptq")) q->method = LLMQ_HF_GPTQ;
    else if (!strcasecmp(m, "awq")) q->method = LLMQ_HF_AWQ;
    else return llmq_error("%s: quantization_config.quant_method '%s' is not supported (gptq, awq)", file, m);
    bool has_bits, has_group;
    int bits = 0, group = 0;
    if (get_int(qc, "bits", "w_bit", file, &bits, &has_bits) || get_int(qc, "group_size", "q_group_size", file, &group, &has_group))
        return LLMQ_ERR;
    if (!has_bits) return llmq_error("%s: quantization_config.bits is missing", file);
    if (bits != 4 && (bits != 8 || q->method == LLMQ_HF_AWQ))
        return llmq_error("%s: quantization_config.bits is %d; llmq reads %s", file, bits, q->method == LLMQ_HF_AWQ ? "4 (AWQ GEMM)" : "4 and 8");
    if (!has_group) return llmq_error("%s: quantization_config.group_size is missing", file);
    if (group != -1 && group <= 0)
        return llmq_error("%s: quantization_config.group_size is %d (a positive size, or -1 for one group per row)", file, group);
    q->bits = bits;
    q->group_size = group == -1 ? 0 : group;
    if (q->method == LLMQ_HF_GPTQ) {
        q->sym = true;
        if (get_bool(qc, "sym", file, &q->sym) || get_bool(qc, "desc_act", file, &q->desc_act) ||
            get_bool(qc, "static_groups", file, &q->static_groups))
            return LLMQ_ERR;
        const char *key = json_object_get(qc, "checkpoint_format") ? "checkpoint_format" : "format";
        json_t *jf = json_object_get(qc, key);
        const char *f = json_string_value(jf);
        if (jf && !json_is_null(jf) && !f) return llmq_error("%s: quantization_config.%s must be a string", file, key);
        if (!f || !strcasecmp(f, "gptq")) q->v2 = false;
        else if (!strcasecmp(f, "gptq_v2")) q->v2 = true;
        else return llmq_error("%s: quantization_config.%s '%s' is not supported (gptq, gptq_v2)", file, key, f);
    } else {
        bool zero_point = true;
        if (get_bool(qc, "zero_point", file, &zero_point)) return LLMQ_ERR;
        q->sym = !zero_point;
        const char *v = get_str(qc, "version");
        if (json_object_get(qc, "version") && !v) return llmq_error("%s: quantization_config.version must be a string", file);
        if (v && strcasecmp(v, "gemm"))
            return llmq_error("%s: quantization_config.version '%s' is not supported (gemm)", file, v);
        if (q->group_size == 0) return llmq_error("%s: quantization_config.group_size -1 is not an AWQ GEMM layout", file);
    }
    return LLMQ_OK;
}

json_t *llmq_json_object_load(const char *path)
{
    size_t len;
    char *text = llmq_read_file(path, 64u << 20, &len);
    if (!text) return NULL;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!root) llmq_error("%s: invalid JSON at line %d: %s", path, jerr.line, jerr.text);
    else if (!json_is_object(root)) {
        json_decref(root);
        root = NULL;
        llmq_error("%s: not a JSON object", path);
    }
    return root;
}

int llmq_hf_qconfig_load(const char *dir, llmq_hf_qconfig *q, bool *found)
{
    *found = false;
    memset(q, 0, sizeof *q);
    char *cfg = llmq_path_join(dir, "config.json"), *qcf = llmq_path_join(dir, "quantize_config.json");
    int rc = LLMQ_OK;
    json_t *root = llmq_file_exists(cfg) ? llmq_json_object_load(cfg) : NULL;
    json_t *qc = root ? json_object_get(root, "quantization_config") : NULL;
    if (llmq_file_exists(cfg) && !root) rc = LLMQ_ERR;
    else if (qc && !json_is_null(qc)) {
        *found = true;
        rc = parse_qconfig(qc, cfg, false, q);
    } else if (llmq_file_exists(qcf)) {
        json_t *r2 = llmq_json_object_load(qcf);
        if (!r2) rc = LLMQ_ERR;
        else {
            *found = true;
            rc = parse_qconfig(r2, qcf, true, q);
            json_decref(r2);
        }
    }
    json_decref(root);
    free(cfg);
    free(qcf);
    return rc;
}

/* ---------------------------------------------------------------- packing */
