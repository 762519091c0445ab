/* The resumable state of a quantize run (internal to the driver, see
 * llmq_quant_opts.state and docs/quantize.md "Resuming"):
 *
 *   OUT.partial/               flock'ed by the run that owns it
 *     manifest.json            the fingerprint: llmq version and build, every
 *                              option that changes bytes, the source config and
 *                              a sha256 per source tensor
 *     layer-00000.bin ...      one per finished decoder layer: "LLMQSTL1", u32
 *                              header length, a JSON header (manifest id, layer,
 *                              per tensor: name, type, bytes, sha256, rel_error),
 *                              then the tensors' bytes (q/k rows in Hugging Face
 *                              order, as the layer method produced them)
 *     output.gguf.tmp          the GGUF being written, renamed to OUT at the end
 *
 * Every file is written to a temp name, fsync'ed and renamed (then the
 * directory fsync'ed), so a kill at any moment leaves the previous state or
 * the new one. */
#ifndef LLMQ_QUANT_STATE_H
#define LLMQ_QUANT_STATE_H

#include "llmq/quantize.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct llmq_qstate llmq_qstate;

/* A source tensor the fingerprint hashes. */
typedef struct {
    const char *name; /* GGUF name */
    const void *data;
    size_t bytes;
} llmq_qstate_source;

/* One tensor of a finished layer. */
typedef struct {
    const char *name; /* GGUF name */
    llmq_type type;
    void *data;       /* write: the bytes; read: a buffer of `bytes` to fill, or NULL to verify only */
    size_t bytes;
    double rel_error; /* write: stored; read: filled */
} llmq_qstate_tensor;

/* Opens <out_path>.partial (creating it) and takes its lock. The fingerprint
 * is built from src's config, the sources' sha256, method_name and the options.
 * resume: an existing state must match the fingerprint (else LLMQ_ERR naming
 * the first difference, the state untouched) and *done is the number of
 * finished layers it holds; without one, *done = 0 and a notice says so.
 * Otherwise any earlier state is discarded (with a notice when it held
 * layers). Either way the manifest is (re)written when not resumed. */
int llmq_qstate_open(const char *out_path, bool resume, const llmq_model *src, const char *method_name,
                     const llmq_quant_opts *o, const llmq_qstate_source *sources, int n_sources, llmq_qstate **out,
                     int *done);

/* Where the GGUF is built (inside the state directory). */
const char *llmq_qstate_gguf_tmp(const llmq_qstate *s);

/* Reads layer `layer` (verifying the header against t[] and every tensor's
 * sha256); fills t[i].data when not NULL and t[i].rel_error. */
int llmq_qstate_read_layer(llmq_qstate *s, int layer, llmq_qstate_tensor *t, int n);
/* Records a finished layer atomically. */
int llmq_qstate_write_layer(llmq_qstate *s, int layer, const llmq_qstate_tensor *t, int n);

/* After the output is committed: syncs its directory, removes the state. */
int llmq_qstate_finish(llmq_qstate *s);
/* After a failure: keeps the state when it holds a finished layer (removes a
 * state this run made with none), releases the lock. NULL is fine. */
void llmq_qstate_close(llmq_qstate *s);

#endif
