/* libFuzzer: config.json. On success the hyperparameters must be usable as
 * they are (positive sizes, whole heads, GQA groups). */
#include "fuzz_common.h"
#include "llmq/config.h"

#define NAME "fuzz/config.json"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    llmq_config cfg;
    if (llmq_config_parse((const char *)data, size, NAME, &cfg) != LLMQ_OK) {
        fuzz_check_error(NAME);
        return 0;
    }
    fuzz_assert(cfg.hidden_size > 0 && cfg.intermediate_size > 0 && cfg.n_layers > 0 && cfg.vocab_size > 0,
                "positive sizes");
    fuzz_assert(cfg.n_heads > 0 && cfg.n_kv_heads > 0 && cfg.n_heads % cfg.n_kv_heads == 0, "GQA groups");
    fuzz_assert(cfg.head_dim > 0 && cfg.head_dim % 2 == 0, "even head_dim");
    /* The model code computes these widths in int. */
    fuzz_assert((int64_t)cfg.n_heads * cfg.head_dim <= (1 << 30), "q width fits an int");
    fuzz_assert(cfg.bos_token_id >= -1 && cfg.eos_token_id >= -1, "token ids are ids or -1");
    fuzz_assert(cfg.rms_norm_eps > 0 && cfg.rope_theta > 0, "positive eps and theta");
    fuzz_assert(cfg.rope_scaling == LLMQ_ROPE_SCALING_NONE || cfg.rope_factor > 0, "rope factor");
    fuzz_assert(cfg.architecture[0] && cfg.model_type[0], "architecture");
    return 0;
}
