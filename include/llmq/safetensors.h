/* safetensors checkpoints: memory-mapped, validated, zero-copy tensor views.
 * A path may be a .safetensors file, a model.safetensors.index.json (sharded),
 * or a directory holding either (or, without both, exactly one *.safetensors
 * file of another name, as older AutoGPTQ checkpoints have). Format: huggingface/safetensors README. */
#ifndef LLMQ_SAFETENSORS_H
#define LLMQ_SAFETENSORS_H

#include "llmq/types.h"

#include <stddef.h>
#include <stdint.h>

#define LLMQ_ST_MAX_DIMS 8

typedef struct {
    char *name;
    llmq_type type;        /* F32, F16 or BF16 */
    int n_dims;
    int64_t shape[LLMQ_ST_MAX_DIMS]; /* row-major, as PyTorch writes it */
    int64_t n_elements;
    const void *data;      /* points into the mmap */
    size_t n_bytes;
    const char *file;      /* the shard it lives in */
} llmq_st_tensor;

typedef struct llmq_safetensors llmq_safetensors;

/* Opens and validates; NULL with a one-line message naming file and field. */
llmq_safetensors *llmq_st_open(const char *path);
/* Validates one file held in memory (no copy is made; data must outlive the result). */
llmq_safetensors *llmq_st_open_memory(const void *data, size_t size, const char *name);
void llmq_st_close(llmq_safetensors *st);

size_t llmq_st_count(const llmq_safetensors *st);
const llmq_st_tensor *llmq_st_at(const llmq_safetensors *st, size_t i);
const llmq_st_tensor *llmq_st_find(const llmq_safetensors *st, const char *name);

/* LLMQ_OK when every element of t is a finite number; otherwise LLMQ_ERR with a
 * message naming the file, the tensor and the first NaN or Inf element. */
int llmq_st_check_finite(const llmq_st_tensor *t);

/* Writes tensors to a single .safetensors file atomically (temp + rename),
 * in the order given, with optional __metadata__ pairs (NULL-terminated list
 * of key, value strings). Tensor data is taken from t[i].data. */
int llmq_st_write(const char *path, const llmq_st_tensor *tensors, size_t n, const char *const *metadata);

/* Same file, with the tensor data produced while writing instead of held in
 * memory (t[i].data is ignored): fill(user, i, offset, buf, len) writes bytes
 * [offset, offset + len) of tensor i into buf, tensor by tensor and in order,
 * len at most 16 MiB; it returns LLMQ_OK, or LLMQ_ERR (with llmq_error set)
 * to abandon the file. */
typedef int (*llmq_st_fill_fn)(void *user, size_t i, size_t offset, void *buf, size_t len);
int llmq_st_write_stream(const char *path, const llmq_st_tensor *tensors, size_t n, const char *const *metadata,
                         llmq_st_fill_fn fill, void *user);

#endif
