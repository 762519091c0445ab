/* Reading Hugging Face GPTQ/AWQ checkpoints as llmq models: the packed
 * linears (layout in llmq/hf_config.h) bound as weights. */
#ifndef LLMQ_HF_LOAD_H
#define LLMQ_HF_LOAD_H

#include "llmq/hf_config.h"
#include "llmq/model.h"

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

#endif
