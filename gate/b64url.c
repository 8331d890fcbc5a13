#include "gate/b64url.h"

#include <openssl/evp.h>
#include <stdlib.h>

static int url_to_std(char c)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return c;
    if (c == '-')
        return '+';
    if (c == '_')
        return '/';
    return -1;
}

bool b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen)
{
    /* One leftover character carries only 6 bits: never a whole byte. */
    if (n % 4 == 1 || n > (size_t)INT32_MAX - 4 || cap < B64URL_DECODED_MAX(n))
        return false;
    size_t pad = (4 - n % 4) % 4;
    char *std = malloc(n + pad + 1);
    if (!std)
        return false;
    for (size_t i = 0; i < n; i++) {
        int c = url_to_std(in[i]);
        if (c < 0) {
            free(std);
            return false;
        }
        std[i] = (char)c;
    }
    for (size_t i = 0; i < pad; i++)
        std[n + i] = '=';
    std[n + pad] = '\0';
    /* EVP_DecodeBlock counts the padding as zero bytes: take them off again. */
    int got = n + pad ? EVP_DecodeBlock(out, (const unsigned char *)std, (int)(n + pad)) : 0;
    free(std);
    if (got < 0 || (size_t)got < pad)
        return false;
    *outlen = (size_t)got - pad;
    return true;
}
