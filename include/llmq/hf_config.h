/* Hugging Face GPTQ and AWQ checkpoints: writing them from a quantize run
 * (the directories vLLM, transformers and TGI load), and reading the ones on
 * the hub as llmq models.
 *
 * Packings (per linear, out × in weight, 32/bits codes per int32, element j of
 * a word at bits bits·j; AutoGPTQ qlinear pack, GPTQModel, AutoAWQ gemm.py):
 *  - GPTQ: qweight int32 [in/pf, out], word (i, o) holds rows pf·i .. pf·i+pf−1
 *    of column o (packed along the input); qzeros int32 [groups, out/pf],
 *    packed along the output, v1 ("gptq") storing zero − 1, v2 ("gptq_v2")
 *    the zero itself; scales fp16 [groups, out]; g_idx int32 [in], the group
 *    of each input column (any order: act-order without static groups);
 *    optional bias. w[o][i] = scales[g][o]·(q − zero[g][o]), g = g_idx[i].
 *  - AWQ GEMM (4-bit): qweight int32 [in, out/8] packed along the output in
 *    the nibble order [0,2,4,6,1,3,5,7] (nibble k holds column
 *    8c + order[k]); qzeros int32 [in/g, out/8] in the same order, true
 *    zeros; scales fp16 [in/g, out]; no g_idx.
 * Dequantized values are exact in fp32 (an fp16 scale times a small integer). */
#ifndef LLMQ_HF_CONFIG_H
#define LLMQ_HF_CONFIG_H

#include "llmq/types.h"

#include <jansson.h>
#include <stdbool.h>

/* AutoAWQ's GEMM packing: nibble k of a word holds output column 8c + order[k],
 * order = [0,2,4,6,1,3,5,7]; so column 8c + m sits in nibble llmq_awq_slot[m]
 * (AutoAWQ's AWQ_REVERSE_ORDER). */
static const int llmq_awq_slot[8] = {0, 4, 1, 5, 2, 6, 3, 7};

typedef enum { LLMQ_HF_NONE = 0, LLMQ_HF_GPTQ, LLMQ_HF_AWQ } llmq_hf_method;

/* A checkpoint's quantization_config. */
typedef struct {
    llmq_hf_method method;
    int bits;        /* 4 or 8 (AWQ: 4) */
    int group_size;  /* > 0; -1 in the file (one group per row) is stored as 0 here */
    bool sym;        /* GPTQ sym (zero 2^(bits-1)); AWQ: !zero_point */
    bool desc_act;   /* GPTQ act-order */
    bool static_groups;
    bool v2;         /* GPTQ checkpoint_format gptq_v2: zeros stored as they are */
} llmq_hf_qconfig;

/* The grid type llmq quantizes into for a config: Q4_0 / Q8_0 when sym,
 * LLMQ_TYPE_HF_U4 / HF_U8 otherwise (llmq/hf_grid.h). */
llmq_type llmq_hf_grid_type(int bits, bool sym);

/* Parses the quantization_config of dir/config.json, or dir/quantize_config.json
 * when config.json has none. *found = false (and LLMQ_OK) when neither has one;
 * a malformed or unsupported one is LLMQ_ERR naming the file and the field. */
int llmq_hf_qconfig_load(const char *dir, llmq_hf_qconfig *q, bool *found);

/* The JSON object in file path; NULL with a message naming the file when it
 * cannot be read, is not JSON or not an object. */
json_t *llmq_json_object_load(const char *path);

#endif
