/* Hugging Face GPTQ and AWQ checkpoints from a quantize run: packing the
 * linears (layout in llmq/hf_config.h), the checkpoint directory writer (a
 * sink of the quantize driver: the directories vLLM, transformers and TGI
 * load), and the layer method that re-encodes a loaded GPTQ/AWQ model as GGUF
 * blocks. Reading them is llmq/hf_load.h's. */
#ifndef LLMQ_HF_QUANT_H
#define LLMQ_HF_QUANT_H

#include "llmq/hf_config.h"
#include "llmq/model.h"
#include "llmq/quantize.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/* The layer method that re-encodes a loaded GPTQ/AWQ model: a linear whose
 * grid maps onto the target's blocks (HF_U4 → Q4_1 with m = fp16(−d·z);
 * Q4_0 → Q4_0 or Q4_1; HF_U8/Q8_0 with zero 128 → Q8_0) is converted block by
 * block — lossless up to the fp16 rounding of Q4_1's m —, any other is
 * re-quantized by RTN with the error-minimising grid search. The counts of
 * both go to *stats (read after the run). */
typedef struct { int converted, requantized; } llmq_hf_convert_stats;
llmq_layer_method llmq_hf_convert_method(llmq_hf_convert_stats *stats);

#endif
