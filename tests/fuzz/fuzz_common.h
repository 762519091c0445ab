/* Shared by the libFuzzer drivers: the property every parser promises on bad
 * input (DEVELOPERS.md): a non-empty, one-line message that names the input. A
 * violation aborts, so libFuzzer records it as a finding. */
#ifndef LLMQ_FUZZ_COMMON_H
#define LLMQ_FUZZ_COMMON_H

#include "llmq/error.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline void fuzz_check_error(const char *name)
{
    const char *msg = llmq_last_error();
    if (!msg[0] || strchr(msg, '\n') || (name && !strstr(msg, name))) {
        fprintf(stderr, "fuzz: bad error message (must be one non-empty line naming '%s'): \"%s\"\n",
                name ? name : "", msg);
        abort();
    }
}

static inline void fuzz_assert(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz: invariant failed: %s\n", what);
        abort();
    }
}

/* Reads one byte so AddressSanitizer checks that p[0..n) is addressable. */
static inline unsigned fuzz_touch(const void *p, size_t n)
{
    const volatile unsigned char *b = p;
    return n ? (unsigned)b[0] + b[n - 1] : 0;
}

#endif
