/* Quantizing a checkpoint into a GGUF file that llama.cpp loads unchanged.
 *
 * The driver (llmq_quantize_model):
 *   1. plans every tensor's type with the policy (llama.cpp's llama-quant.cpp
 *      rules: output head Q6_K, Q4_K_M's mix, norms F32, shape fallbacks) and
 *      declares all tensors and metadata up front;
 *   2. writes the token embedding;
 *   3. runs the decoder layers in order. For each layer it makes f32 copies
 *      of the layer's weights (streamed from the source model's map: one
 *      layer in memory at a time), lets the *layer method* fill the packed
 *      buffers, hands the method the packed layer as an llmq_layer (typed
 *      views, Hugging Face row order) so a calibration-based method can run
 *      its activations through the quantized layer before the next one, then
 *      permutes q/k rows into llama.cpp's order and writes the tensors;
 *   4. writes the final norm and the output head, and commits atomically.
 *
 * RTN is the first layer method (llmq_rtn_method); GPTQ and AWQ plug in as
 * other llmq_layer_method values. */
#ifndef LLMQ_QUANTIZE_H
#define LLMQ_QUANTIZE_H

#include "llmq/gguf.h"
#include "llmq/model.h"
#include "llmq/tokenizer.h"
#include "llmq/types.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- policy */

struct llmq_tensor_desc; /* below */

/* What `--type` names: the decoder linears' base type, whether llama.cpp's
 * per-tensor rules for the file type apply (the mixes: q4_k_m, q4_k_s,
 * q5_k_m, q3_k_m, q3_k_l, q2_k, iq4_nl, iq4_xs), and the LlamaFileType recorded as
 * general.file_type (q3_k -> Q3_K_S, q4_k -> Q4_K_S, q5_k -> Q5_K_S: the
 * nearest llama.cpp file types; Q3_K_S and Q5_K_S have no rules of their own
 * for these models, so q3_k_s and q5_k_s are the same as q3_k and q5_k). */
typedef struct {
    const char *name; /* "q4_k_m", "q4_0", "f16", ... */
    llmq_type base;
    bool mix;
    int file_type;
} llmq_quant_scheme;

/* Parses a --type name (case-insensitive). LLMQ_ERR with the list of valid names. */
int llmq_quant_scheme_parse(const char *name, llmq_quant_scheme *out);

typedef struct {
    llmq_quant_scheme scheme;
    int group_size;  /* grid span of the decoder linears (0 = the type's native unit) */
    int keep_output; /* an llmq_type for the output head, or -1 for the rule */
    int keep_embed;  /* an llmq_type for the token embedding, or -1 for the rule */
    /* --target-bpw: each tensor's chosen type (embedding, linears, head), or
     * LLMQ_TYPE_COUNT for the rule; NULL = the rules throughout. The fallback
     * for row lengths still applies. */
    llmq_type (*tensor_type)(void *user, const struct llmq_tensor_desc *d);
    void *tensor_type_user;
} llmq_policy;

typedef enum {
    LLMQ_ROLE_EMBED,      /* token_embd.weight */
    LLMQ_ROLE_OUTPUT,     /* output.weight */
    LLMQ_ROLE_NORM,       /* *_norm.weight */
    LLMQ_ROLE_LINEAR,     /* blk.N.{attn_q,...,ffn_down}.weight */
    LLMQ_ROLE_BIAS,       /* blk.N.*.bias */
    LLMQ_ROLE_ROPE_FREQS, /* rope_freqs.weight */
} llmq_tensor_role;

typedef struct llmq_tensor_desc {
    llmq_tensor_role role;
    llmq_linear linear; /* LINEAR and BIAS */
    int layer, n_layers;
    int64_t rows, cols; /* cols = row length (ggml ne[0]) */
    bool tied;          /* no separate output head: the embedding is also the head */
    /* llama.cpp's LLM_TYPE_70B (80 layers: Llama with grouped KV heads,
     * Qwen2), whose attn_v it gives Q5_K where a rule says Q3_K or Q4_K */
    bool model_70b;
    int n_gqa; /* attention heads per KV head (q2_k's attn_v rule); 0 = unknown, taken as 1 */
} llmq_tensor_desc;

typedef struct {
    llmq_type type;
    int group_size; /* resolved grid span (0 for float types) */
    /* The rule's type before the row length forced a fallback (llama-quant.cpp
     * tensor_type_fallback: Q6_K->Q8_0, Q5_K->Q5_1, Q4_K->Q5_0, Q3_K/Q2_K->Q4_0, IQ4_XS->IQ4_NL,
     * then F16 when even 32 does not divide the row); equals type when there
     * was no fallback. */
    llmq_type wanted;
} llmq_tensor_plan;

/* True for the layers where llama.cpp's Q4_K_M and Q5_K_M give attn_v and
 * ffn_down Q6_K: i < n/8, i >= 7n/8, or (i - n/8) % 3 == 2. */
bool llmq_policy_more_bits(int layer, int n_layers);

/* The type and group size of one tensor. LLMQ_ERR when the group size does
 * not fit the chosen type (e.g. a K-quant group that does not divide 256). */
int llmq_policy_plan(const llmq_policy *p, const llmq_tensor_desc *t, llmq_tensor_plan *out);

/* ---------------------------------------------------------------- methods */

typedef struct {
    llmq_type type; /* always a quantized (grid) type; float targets are converted by the driver */
    int group_size; /* resolved */
} llmq_quant_target;

/* One decoder layer's weights as f32 copies (Hugging Face row order). */
typedef struct {
    float *lin[LLMQ_LIN_COUNT];  /* rows × cols of each linear */
    float *bias[LLMQ_LIN_COUNT]; /* NULL when absent */
    float *attn_norm, *ffn_norm; /* hidden_size each */
    float *q_norm, *k_norm;      /* head_dim each (Qwen3's, Gemma 3's per-head norms); NULL when absent */
    float *post_attn_norm, *post_ffn_norm; /* hidden_size each (Gemma's post-norms); NULL when absent */
    float *router;               /* n_experts × hidden (mixture of experts); NULL when dense. lin[GATE..DOWN] are
                                  * then every expert's matrix stacked by rows, as the source's lin[] shape says */
} llmq_layer_f32;

/* A quantization algorithm, applied one decoder layer at a time.
 *
 * quantize_layer fills packed[k] (rows × llmq_row_size(targets[k].type, cols)
 * bytes) for every linear k where packed[k] != NULL; the others are kept in a
 * float type by the policy and converted by the driver. It may use w->lin as scratch, but on return
 * w->lin[k] must hold the weights the packed tensor approximates (the source
 * weights, or e.g. AWQ-scaled ones): the report's relative error is measured
 * against them. A method that folds scales into the norms or biases edits
 * w->attn_norm / w->ffn_norm / w->bias, and the file stores the edited values.
 *
 * layer_done (optional) receives the finished layer as typed views of the
 * packed buffers (and the f32 norms/biases), valid only during the call: a
 * calibration-based method runs its activations through it with
 * llmq_layer_forward() to get the next layer's inputs. When a run resumes
 * (LLMQ_STATE_RESUME), layer_done is also called, in order, for each layer
 * restored from the state, with no quantize_layer call before it: the same
 * bytes the earlier run's quantize_layer produced, so the method only has to
 * advance its activations (and report nothing for that layer). */
typedef struct llmq_layer_method {
    const char *name; /* recorded as llmq.method */
    void *state;
    int (*begin)(void *state, const llmq_model *src);                   /* optional */
    int (*quantize_layer)(void *state, const llmq_model *src, int layer, llmq_layer_f32 *w,
                          const llmq_quant_target targets[LLMQ_LIN_COUNT], void *const packed[LLMQ_LIN_COUNT]);
    int (*layer_done)(void *state, const llmq_model *src, int layer, const llmq_layer *quantized); /* optional */
    void (*end)(void *state);                                           /* optional; called whenever begin succeeded */
    /* optional: after begin, the token embedding as the file stores it (a view
     * valid during the call), so the method can start its activations from
     * what the quantized model looks up */
    int (*embedded)(void *state, const llmq_model *src, const llmq_weight *embed);
    /* optional: quantizes rows [r0, r0 + rows) of an untied output head
     * (f32 W, rows × cols) into `type` with groups of group_size (packed:
     * those rows' blocks), after the last layer_done, in place of rounding;
     * called for consecutive slices of the head */
    int (*quantize_head)(void *state, const llmq_model *src, const float *W, int r0, int rows, int cols, llmq_type type, int group_size,
                         void *packed);
} llmq_layer_method;

/* Round-to-nearest on grids chosen in the output type's precision (llmq/rtn.h);
 * search = the error-minimising grid search (--rtn-search). */
llmq_layer_method llmq_rtn_method(bool search);

/* ---------------------------------------------------------------- driver */

typedef struct {
    int layer, n_layers;   /* the decoder layer in progress (n_layers: the output head) */
    const char *tensor;    /* GGUF name of the tensor just written */
    int tensors_done, n_tensors;
    double elapsed, eta;   /* seconds; eta < 0 while unknown */
} llmq_quant_progress;

/* Called when a stage of the run begins, and again while a calibration forward
 * runs with its throughput so far. layer: the decoder layer (-1 before the
 * first, n_layers for the output head). stage: a short name, valid during the
 * call ("embed", "load", "quantize", "write", "head" from the driver; the
 * calibrated methods add "embed calib", "hessian q,k,v", "solve q_proj",
 * "awq search", "round", "forward", ...). tokens_per_s: the latest measured
 * calibration forward throughput while one runs, else 0. */
typedef void (*llmq_stage_fn)(void *user, int layer, const char *stage, double tokens_per_s);

/* Resumable runs (docs/quantize.md "Resuming"). With a state mode the run
 * records, beside the output, the directory <out_path>.partial/: a manifest
 * fingerprinting everything that decides the file's bytes, and one file per
 * finished decoder layer (written atomically: a kill at any moment leaves the
 * previous state or the next). It is removed when the output is committed. */
typedef enum {
    LLMQ_STATE_NONE,   /* record nothing (the default) */
    LLMQ_STATE_RECORD, /* record the state, discarding any earlier run's (with a notice when it held layers) */
    /* continue after the last layer an earlier run recorded: its fingerprint
     * must match this run's, else LLMQ_ERR naming the first difference, with
     * the state left as it was; without a state, start from the first layer
     * (with a notice). The file is byte-identical to an uninterrupted run's. */
    LLMQ_STATE_RESUME,
} llmq_state_mode;

/* An input that decides the file's bytes beyond the fields of llmq_quant_opts
 * (a method's options): part of the fingerprint a resumed run must match. */
typedef struct {
    const char *name;  /* as the user knows it, e.g. "--damp": named when it differs */
    const char *value; /* canonical text: equal exactly when the bytes would be */
} llmq_quant_param;

/* Where the tensors go instead of a GGUF file (llmq_quant_opts.sink): e.g. a
 * Hugging Face GPTQ/AWQ checkpoint directory (llmq/hf_quant.h). The driver
 * calls write() once per planned tensor, in file order, with rows in Hugging
 * Face order (q/k never permuted; no rope_freqs tensor): quantized tensors as
 * rows × llmq_row_size(type, cols) bytes, norms and biases as f32. finish()
 * commits the output; abort() (after begin) removes everything it wrote. */
typedef struct {
    void *state;
    int (*begin)(void *state, const llmq_model *src);
    int (*write)(void *state, const char *name, const llmq_tensor_desc *desc, llmq_type type, const void *data, size_t bytes);
    int (*finish)(void *state);
    void (*abort)(void *state);
} llmq_tensor_sink;

typedef struct {
    llmq_policy policy;
    const llmq_layer_method *method; /* NULL = RTN (with rtn_search) */
    /* NULL: write a GGUF file at out_path (a tokenizer required). Otherwise
     * the tensors go to the sink, out_path is only named in messages, no
     * tokenizer is needed, and state must be LLMQ_STATE_NONE. */
    const llmq_tensor_sink *sink;
    bool rtn_search;                 /* grid search for RTN and for the embedding/output head */
    const char *model_name;          /* general.name (NULL: "model") */
    /* Provenance (llmq.* keys): calibration file sha256 (hex) and sample count, when a method used them. */
    const char *calib_sha256;
    int calib_samples;
    void (*progress)(void *user, const llmq_quant_progress *p); /* after every tensor */
    void (*notice)(void *user, const char *line);                 /* one line per fallback */
    llmq_stage_fn stage;                                          /* optional: the driver's stages */
    void *user;
    /* Resuming. The fingerprint holds the llmq version and build, the method
     * name, policy, rtn_search, model_name, calib_sha256/calib_samples, these
     * params, the source's config and a sha256 of each source tensor. */
    llmq_state_mode state;
    const llmq_quant_param *params;
    int n_params;
    /* Testing: fail (as a kill would stop it) once this many layers were
     * quantized and recorded in this run; 0 = never. */
    int stop_after_layers;
} llmq_quant_opts;

typedef struct {
    char name[LLMQ_GGUF_MAX_NAME];
    llmq_type type;
    int group_size;   /* 0 for float types */
    int n_dims;
    int64_t ne[2];    /* ggml order: ne[0] = row length */
    size_t bytes;
    double rel_error; /* ‖W − Q‖ / ‖W‖ of what the file stores against the f32 source */
} llmq_tensor_report;

typedef struct {
    llmq_tensor_report *tensors;
    int n_tensors;
    size_t file_bytes;
    int64_t n_elements;     /* all tensors */
    double bits_per_weight; /* 8 × tensor bytes / elements */
    double seconds;
    int resumed_layers;     /* decoder layers restored from an earlier run's state (0: none) */
} llmq_quant_report;

/* Quantizes src into out_path. tok supplies the vocabulary (required: llama.cpp
 * needs tokenizer.ggml.*). report may be NULL; otherwise free it with
 * llmq_quant_report_free. On error nothing is left at out_path, and the message
 * names the tensor (e.g. a NaN or Inf in a source weight). */
int llmq_quantize_model(const llmq_model *src, const llmq_tokenizer *tok, const char *out_path,
                        const llmq_quant_opts *opts, llmq_quant_report *report);
void llmq_quant_report_free(llmq_quant_report *r);

#endif
