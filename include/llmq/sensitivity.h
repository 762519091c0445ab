/* Per-tensor types chosen by measured sensitivity (issue 15, `--target-bpw`).
 *
 * The table: for every quantizable tensor (token embedding, the decoder
 * linears, the output head when it is not tied) and every candidate type,
 * the mean KL divergence of the model's next-token distribution from the
 * original's when that tensor alone is rounded to that type (RTN with the
 * grid search, native blocks), over calibration windows. The allocator
 * treats the tensors' KL as additive (small errors from different tensors
 * add to first order) and chooses one type per tensor to minimise the sum
 * under a byte budget: a Lagrangian sweep (each tensor takes the type that
 * minimises KL + λ·bytes; λ found by bisection), then the remaining bytes
 * spent on the upgrades with the most KL saved per byte. */
#ifndef LLMQ_SENSITIVITY_H
#define LLMQ_SENSITIVITY_H

#include "llmq/calib.h"
#include "llmq/model.h"
#include "llmq/quantize.h"

#include <stddef.h>
#include <stdint.h>

#define LLMQ_SENS_MAX_TYPES 12

typedef struct {
    char name[64];                /* GGUF tensor name */
    llmq_tensor_role role;        /* EMBED, LINEAR or OUTPUT */
    llmq_linear linear;           /* LINEAR */
    int layer;                    /* LINEAR; -1 otherwise */
    int64_t rows, cols;
    int n_types;
    llmq_type types[LLMQ_SENS_MAX_TYPES];
    size_t bytes[LLMQ_SENS_MAX_TYPES]; /* the tensor's bytes in each type (rows × llmq_row_size) */
    double kld[LLMQ_SENS_MAX_TYPES];   /* measured mean KL with this tensor alone in each type */
} llmq_sens_tensor;

typedef struct {
    int n;
    llmq_sens_tensor *t;
    int64_t n_params;       /* every parameter of the model (norms included): the bpw denominator */
    size_t fixed_bytes;     /* bytes of the tensors outside the choice (norms, biases: F32) */
    int n_samples, seqlen;  /* the windows measured on */
    char windows_sha256[65]; /* of their token ids (llmq_sens_windows_id) */
} llmq_sens_table;

/* sha256 (hex) of the windows' token ids: what a saved table was measured on. */
void llmq_sens_windows_id(const llmq_calib *c, char out[65]);

/* The candidate types llmq offers (Q2_K .. Q8_0, IQ4_XS, F16): n written to *n. */
const llmq_type *llmq_sens_default_types(int *n);

typedef void (*llmq_sens_progress)(void *user, int done, int total, const char *tensor);

/* The table's tensors, candidate types and sizes for model m, nothing
 * measured (kld 0): what a measurement would list. */
int llmq_sens_list(const llmq_model *m, const llmq_type *types, int n_types, llmq_sens_table *out);

/* Measures the table for model m on the calibration windows c (each a causal
 * sequence), for the candidate types (a type whose blocks do not fit a
 * tensor's rows is left out for that tensor). Costs one model forward over
 * the windows per (tensor, type). */
int llmq_sens_measure(const llmq_model *m, const llmq_calib *c, const llmq_type *types, int n_types, llmq_sens_progress progress,
                      void *user, llmq_sens_table *out);

/* Chooses choice[i] (an index into t[i].types) for every tensor so that the
 * file's tensor bytes stay within target_bpw × n_params / 8 and the summed
 * KL is smallest (see above). LLMQ_ERR with a message when even the smallest
 * types exceed the budget. *predicted_kld (may be NULL) receives the sum. */
int llmq_sens_allocate(const llmq_sens_table *tab, double target_bpw, int *choice, double *predicted_kld);

/* The table as JSON (OUT.sens.json beside the output) and back; a file that
 * does not parse, or lists other tensors, is refused. */
int llmq_sens_save(const llmq_sens_table *tab, const char *path);
int llmq_sens_load(const char *path, llmq_sens_table *out);
void llmq_sens_free(llmq_sens_table *tab);

#endif
