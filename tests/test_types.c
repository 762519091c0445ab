#include "llmq/types.h"
#include "test_util.h"

#include <math.h>

Test(types, f16_roundtrip_every_half)
{
    /* Every finite half decodes and encodes back to itself. */
    for (uint32_t h = 0; h < 0x10000u; h++) {
        if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) continue; /* NaN payloads */
        float f = llmq_f16_to_f32((uint16_t)h);
        cr_assert_eq(llmq_f32_to_f16(f), h, "half 0x%04x -> %g -> 0x%04x", h, f, llmq_f32_to_f16(f));
    }
}

Test(types, f16_known_values)
{
    cr_assert_eq(llmq_f16_to_f32(0x3c00), 1.0f);
    cr_assert_eq(llmq_f16_to_f32(0xc000), -2.0f);
    cr_assert_eq(llmq_f16_to_f32(0x0001), ldexpf(1.0f, -24));
    cr_assert_eq(llmq_f32_to_f16(65504.0f), 0x7bff);
    cr_assert_eq(llmq_f32_to_f16(65520.0f), 0x7c00); /* rounds to inf */
    cr_assert_eq(llmq_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3c00); /* tie to even */
    cr_assert_eq(llmq_f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)), 0x3c02);
    cr_assert_eq(llmq_f32_to_f16(ldexpf(1.0f, -25)), 0x0000); /* tie to even (zero) */
    cr_assert_eq(llmq_f32_to_f16(ldexpf(1.5f, -25)), 0x0001);
}

Test(types, bf16_rounding)
{
    cr_assert_eq(llmq_f32_to_bf16(1.0f), 0x3f80);
    cr_assert_eq(llmq_bf16_to_f32(0x3f80), 1.0f);
    cr_assert_eq(llmq_f32_to_bf16(1.0f + ldexpf(1.0f, -8)), 0x3f80);       /* tie to even */
    cr_assert_eq(llmq_f32_to_bf16(1.0f + 3 * ldexpf(1.0f, -8)), 0x3f82);   /* tie to even, up */
    cr_assert(isnan(llmq_bf16_to_f32(llmq_f32_to_bf16(NAN))));
}

Test(types, table_lookup)
{
    cr_assert_eq(llmq_type_from_name("BF16"), LLMQ_TYPE_BF16);
    cr_assert_eq(llmq_type_from_name("f32"), LLMQ_TYPE_F32);
    cr_assert_eq(llmq_type_from_name("nope"), -1);
    cr_assert_null(llmq_type_get(39));
    cr_assert_eq(llmq_row_size(LLMQ_TYPE_F16, 10), 20u);
}
