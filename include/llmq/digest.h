/* Digests as lowercase hex: the calibration file's provenance, the resume
 * state's fingerprint, the hub's sha256 checks. */
#ifndef LLMQ_DIGEST_H
#define LLMQ_DIGEST_H

#include <stddef.h>

/* out[0 .. 2n] = the n bytes in hex, NUL-terminated. */
void llmq_hex(const unsigned char *bytes, size_t n, char *out);
/* out = sha256(data[0 .. n)) in hex (64 digits and a NUL). */
void llmq_sha256_hex(const void *data, size_t n, char out[65]);

#endif
