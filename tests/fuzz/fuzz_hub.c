/* libFuzzer: the hub's JSON answers (src/io/hub_internal.h): every input is
 * parsed both as an /api/models/{repo}/revision/{rev}?blobs=true answer and as
 * a model.safetensors.index.json. A hostile server must get a one-line refusal,
 * never a crash. */
#include "fuzz_common.h"
#include "hub_internal.h"

#define REPO "fuzz-org/fuzz-model"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int is_index = 0; is_index < 2; is_index++) {
        long n = hub_parse_answer(REPO, (const char *)data, size, is_index);
        if (n < 0) fuzz_check_error(REPO);
    }
    return 0;
}
