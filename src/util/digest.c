#include "llmq/digest.h"

#include <openssl/evp.h>

void llmq_hex(const unsigned char *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}

void llmq_sha256_hex(const void *data, size_t n, char out[65])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dn = 0;
    EVP_Digest(data, n, d, &dn, EVP_sha256(), NULL);
    llmq_hex(d, dn, out);
}
