/* The calibration-based layer methods of `llmq quantize`: GPTQ, AWQ, and AWQ
 * followed by GPTQ, as llmq_layer_method values for the quantize driver.
 *
 * begin() embeds the calibration windows; every decoder layer then sees the
 * activations X (n_samples × seqlen × hidden) that the already-quantized
 * layers before it produce (GPTQ paper §4; llm-awq computes the next layer's
 * input with the scaled, quantized layer too). Memory: X for all samples and
 * one Hessian at a time, never the whole model's activations. */
#ifndef LLMQ_CALIBRATED_H
#define LLMQ_CALIBRATED_H

#include "llmq/awq.h"
#include "llmq/block.h"
#include "llmq/calib.h"
#include "llmq/gptq.h"
#include "llmq/quantize.h"

typedef enum { LLMQ_CAL_GPTQ, LLMQ_CAL_AWQ, LLMQ_CAL_AWQ_GPTQ } llmq_calibrated_kind;
/* How GPTAQ corrects: GPTQ of the target W + α·W·D·H⁻¹ (llmq_gptaq_target,
 * the exact greedy minimiser, and what --refine refines against), or the
 * reference's correction inside the sweep (llmq_gptaq_quantize). */
typedef enum { LLMQ_GPTAQ_TARGET, LLMQ_GPTAQ_SWEEP } llmq_gptaq_form;

/* What one finished decoder layer reports (for progress and --json). */
typedef struct {
    int layer, n_layers;
    /* GPTQ, per linear (0 when not run): ‖(W−Q)X‖²/‖WX‖² of RTN and of GPTQ, the damp used. */
    double err_rtn[LLMQ_LIN_COUNT], err_gptq[LLMQ_LIN_COUNT];
    /* With refine passes: the same relative error after them (0 when not run). */
    double err_refine[LLMQ_LIN_COUNT];
    float damp[LLMQ_LIN_COUNT];
    int damp_retries;
    bool has_awq;
    llmq_awq_stats awq;
    double seconds_forward, seconds_hessian, seconds_solver, seconds_awq;
    double seconds_refine; /* part of seconds_solver */
    /* Block reconstruction (opts.block): the block-output MSE of GPTQ's rounding and of the
     * learned one (kept only when lower), codes moved, and its time. */
    bool has_block, block_kept;
    double block_mse_init, block_mse_final, seconds_block;
    int64_t block_codes_changed;
    size_t peak_rss_bytes;
    /* A mixture of experts (GPTQ): the calibration tokens routed to each expert (the first
     * LLMQ_REPORT_EXPERTS of them), and how many experts saw fewer than LLMQ_MOE_MIN_TOKENS and
     * were rounded (RTN on GPTQ's grids) instead. The gate/up/down errors above average the experts'. */
    int n_experts, experts_rtn;
    int64_t expert_tokens[256];
} llmq_layer_report;

#define LLMQ_REPORT_EXPERTS 256
/* Fewer routed calibration tokens than this and an expert's Hessian is too
 * thin for GPTQ to beat rounding: the expert is rounded, with a notice. */
#define LLMQ_MOE_MIN_TOKENS 64

typedef struct {
    llmq_calibrated_kind kind;
    const llmq_calib *calib;
    llmq_gptq_opts gptq;
    llmq_awq_opts awq;
    bool rtn_search; /* AWQ without GPTQ rounds with the grid search */
    /* The calibration forward through the quantized linears runs on int16
     * activations where the CPU has the int16 GEMM (llmq_int16_available):
     * twice sgemm's rate, sub-layer inputs and Hessians within ~2e-4 relative of
     * the fp32 ones; and GPTQ's Hessians are summed from bf16-rounded inputs
     * where the CPU has BF16 dot products (llmq_bf16_available): ~1.4× ssyrk,
     * within ~4e-4 (relative Frobenius, 2048 tokens; less with more). exact_forward keeps fp32 everywhere (other bits). */
    bool exact_forward;
    /* After GPTQ, passes of coordinate descent on each linear's codes against
     * its Hessian (llmq/refine.h); 0 = none. */
    int refine_passes;
    /* GPTAQ (llmq/gptq.h) instead of GPTQ, after AWQ too (kind GPTQ or AWQ_GPTQ):
     * every linear fitted to the full-precision layer's output on the
     * full-precision model's inputs, which a second residual stream carries
     * beside the quantized one (one more n_samples × seqlen × hidden buffer,
     * and one for the full-precision stream after attention). */
    bool asymmetric;
    float gptaq_alpha;       /* the correction's scale (0.25, the reference's) */
    llmq_gptaq_form gptaq_form;
    /* Block-output reconstruction after each layer's GPTQ (GPTAQ) solve
     * (llmq/block.h): needs the full-precision stream as GPTAQ does, and holds
     * GPTQ's values before rounding (one more f32 copy of the layer's linears)
     * until the layer's reconstruction. */
    bool block;
    llmq_block_opts block_opts;
    void (*report)(void *user, const llmq_layer_report *r);
    llmq_stage_fn stage; /* optional: the method's stages inside a layer (llmq/quantize.h) */
    void *user;
} llmq_calibrated_opts;

/* Whether a run with these options computes its calibration forward on int16
 * activations on this machine (!exact_forward and llmq_int16_available()):
 * part of what makes its bytes. */
bool llmq_calibrated_int16(const llmq_calibrated_opts *opts);
/* Whether it sums GPTQ's Hessians from bf16 inputs (!exact_forward and llmq_bf16_available()). */
bool llmq_calibrated_bf16(const llmq_calibrated_opts *opts);

/* Fills *method; its end() frees the activations begin() allocated, and
 * llmq_calibrated_method_free() the method itself. opts' calib must outlive
 * the quantize run. */
int llmq_calibrated_method(const llmq_calibrated_opts *opts, llmq_layer_method *method);
void llmq_calibrated_method_free(llmq_layer_method *method);

/* Peak resident set size of this process so far (bytes), from getrusage. */
size_t llmq_peak_rss(void);

#endif
