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
#ifndef LLMQ_HF_QUANT_H
#define LLMQ_HF_QUANT_H

#include "llmq/model.h"
#include "llmq/quantize.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/* ------------------------------------------------------------------ write */

typedef struct {
    llmq_hf_qconfig q;    /* method, bits, group_size, sym, desc_act, static_groups, v2 */
    const char *src_dir;  /* the source checkpoint: config.json and tokenizer files come from here */
    double damp;          /* recorded as damp_percent (GPTQ) */
    size_t shard_bytes;   /* a new shard past this many bytes (0: 5 GB, as transformers) */
} llmq_hf_write_opts;

typedef struct llmq_hf_writer llmq_hf_writer;

/* A writer of the directory out_dir: everything goes to out_dir.tmp.<pid>
 * first and is renamed into place by finish (an existing out_dir is replaced
 * only when it is an earlier GPTQ/AWQ export, or empty). */
llmq_hf_writer *llmq_hf_writer_new(const char *out_dir, const llmq_hf_write_opts *opts);
/* The sink to hand the quantize driver (llmq_quant_opts.sink). */
llmq_tensor_sink llmq_hf_writer_sink(llmq_hf_writer *w);
/* Bytes of tensor data written (after finish). */
size_t llmq_hf_writer_bytes(const llmq_hf_writer *w);
int llmq_hf_writer_shards(const llmq_hf_writer *w);
void llmq_hf_writer_free(llmq_hf_writer *w);

/* Packs one linear (rows = out, cols = in) held as rows of `type` blocks
 * (llmq_hf_grid_type's types; groups of group_size columns sharing their
 * fields) into the tensors of q's packing. Outputs are malloc'd (g_idx NULL for
 * AWQ); sizes as in the header comment. */
typedef struct {
    int32_t *qweight, *qzeros, *g_idx;
    uint16_t *scales;
    int64_t qweight_shape[2], qzeros_shape[2], scales_shape[2];
} llmq_hf_packed;
int llmq_hf_pack_linear(const llmq_hf_qconfig *q, llmq_type type, const void *rows, int out, int in, llmq_hf_packed *p);
void llmq_hf_packed_free(llmq_hf_packed *p);

/* ------------------------------------------------------------------- read */

/* Binds linear `prefix` ("model.layers.0.self_attn.q_proj") of a GPTQ/AWQ
 * checkpoint (llmq_model_load calls it when config.json has a
 * quantization_config) as a rows × cols weight. Groups that are contiguous
 * runs of 32-element blocks (g_idx = i / group_size) keep their grid type
 * (Q4_0 / Q8_0 when every zero is 2^(bits-1), HF_U4 / HF_U8 otherwise): the
 * same values, no rounding; other g_idx orders (act-order without static
 * groups) are dequantized to F32. GPTQ v1 zeros decode as nibble + 1, as the
 * v1 kernels compute them. The buffer joins m->owned. LLMQ_ERR with a
 * one-line message naming the file and the tensor on a missing tensor, a
 * wrong dtype or shape, or an out-of-range g_idx. */
struct llmq_safetensors;
int llmq_hf_bind_linear(llmq_model *m, const struct llmq_safetensors *st, const llmq_hf_qconfig *q, const char *prefix, int rows,
                        int cols, llmq_weight *w);

/* The layer method that re-encodes a loaded GPTQ/AWQ model: a linear whose
 * grid maps onto the target's blocks (HF_U4 → Q4_1 with m = fp16(−d·z);
 * Q4_0 → Q4_0 or Q4_1; HF_U8/Q8_0 with zero 128 → Q8_0) is converted block by
 * block — lossless up to the fp16 rounding of Q4_1's m —, any other is
 * re-quantized by RTN with the error-minimising grid search. The counts of
 * both go to *stats (read after the run). */
typedef struct { int converted, requantized; } llmq_hf_convert_stats;
llmq_layer_method llmq_hf_convert_method(llmq_hf_convert_stats *stats);

#endif
