#include "gate/scram.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t b64_encode(const uint8_t *in, size_t len, char *out, size_t outlen)
{
    size_t need = 4 * ((len + 2) / 3) + 1;
    if (outlen < need)
        return 0;
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

bool b64_decode(const char *in, size_t len, uint8_t *out, size_t outlen, size_t *used)
{
    if (len % 4 != 0 || len / 4 * 3 > outlen || len > 4096)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                  ch == '+' || ch == '/' || (ch == '=' && i >= len - 2);
        if (!ok)
            return false;
    }
    int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
    if (n < 0)
        return false;
    /* EVP_DecodeBlock counts padding as output bytes; take them back off. */
    size_t pad = 0;
    if (len >= 1 && in[len - 1] == '=')
        pad++;
    if (len >= 2 && in[len - 2] == '=')
        pad++;
    *used = (size_t)n - pad;
    return true;
}

static void hmac_sha256(const uint8_t *key, size_t keylen, const void *data, size_t len,
                        uint8_t out[SCRAM_KEY_LEN])
{
    unsigned int outlen = SCRAM_KEY_LEN;
    HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &outlen);
}

static void sha256(const uint8_t *data, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
    SHA256(data, len, out);
}

static bool salted_password(const char *password, const uint8_t *salt, size_t salt_len, int iterations,
                            uint8_t out[SCRAM_KEY_LEN])
{
    return PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, iterations, EVP_sha256(),
                             SCRAM_KEY_LEN, out) == 1;
}

static void derive_keys(const uint8_t salted[SCRAM_KEY_LEN], uint8_t client_key[SCRAM_KEY_LEN],
                        uint8_t stored_key[SCRAM_KEY_LEN], uint8_t server_key[SCRAM_KEY_LEN])
{
    hmac_sha256(salted, SCRAM_KEY_LEN, "Client Key", 10, client_key);
    sha256(client_key, SCRAM_KEY_LEN, stored_key);
    hmac_sha256(salted, SCRAM_KEY_LEN, "Server Key", 10, server_key);
}

/* Parse a "<b64>" field of exact decoded length into out. */
static bool b64_exact(const char *s, size_t len, uint8_t *out, size_t want)
{
    uint8_t tmp[SCRAM_MAX_SALT + 4];
    size_t used;
    if (!b64_decode(s, len, tmp, sizeof tmp, &used) || used != want)
        return false;
    memcpy(out, tmp, want);
    return true;
}

bool scram_verifier_parse(const char *text, scram_verifier *out)
{
    const char *prefix = "SCRAM-SHA-256$";
    if (strncmp(text, prefix, strlen(prefix)) != 0)
        return false;
    const char *p = text + strlen(prefix);
    char *end;
    long iter = strtol(p, &end, 10);
    if (end == p || *end != ':' || iter < 1 || iter > 10000000)
        return false;
    const char *salt = end + 1;
    const char *dollar = strchr(salt, '$');
    if (!dollar)
        return false;
    const char *stored = dollar + 1;
    const char *colon = strchr(stored, ':');
    if (!colon)
        return false;
    const char *server = colon + 1;
    size_t used;
    memset(out, 0, sizeof *out);
    out->iterations = (int)iter;
    if (!b64_decode(salt, (size_t)(dollar - salt), out->salt, sizeof out->salt, &used) || used == 0)
        return false;
    out->salt_len = used;
    return b64_exact(stored, (size_t)(colon - stored), out->stored_key, SCRAM_KEY_LEN) &&
           b64_exact(server, strlen(server), out->server_key, SCRAM_KEY_LEN);
}

bool scram_verifier_make(const char *password, int iterations, char *out, size_t outlen)
{
    uint8_t salt[16], salted[SCRAM_KEY_LEN], ck[SCRAM_KEY_LEN], sk[SCRAM_KEY_LEN], svk[SCRAM_KEY_LEN];
    if (RAND_bytes(salt, sizeof salt) != 1 || !salted_password(password, salt, sizeof salt, iterations, salted))
        return false;
    derive_keys(salted, ck, sk, svk);
    char salt64[32], sk64[48], svk64[48];
    b64_encode(salt, sizeof salt, salt64, sizeof salt64);
    b64_encode(sk, sizeof sk, sk64, sizeof sk64);
    b64_encode(svk, sizeof svk, svk64, sizeof svk64);
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(ck, sizeof ck);
    int n = snprintf(out, outlen, "SCRAM-SHA-256$%d:%s$%s:%s", iterations, salt64, sk64, svk64);
    return n > 0 && (size_t)n < outlen;
}

void scram_verifier_mock(const uint8_t *secret, size_t secret_len, const char *user, scram_verifier *out)
{
    uint8_t mac[SCRAM_KEY_LEN];
    memset(out, 0, sizeof *out);
    out->iterations = SCRAM_DEFAULT_ITERATIONS;
    hmac_sha256(secret, secret_len, user, strlen(user), mac);
    memcpy(out->salt, mac, 16);
    out->salt_len = 16;
    /* Keys that no password produces in practice: derived from the secret, not a password. */
    hmac_sha256(secret, secret_len, "mock-stored", 11, out->stored_key);
    hmac_sha256(secret, secret_len, "mock-server", 11, out->server_key);
}

/* Find attribute "<key>=" at the start of a comma-separated field list.
 * Returns the value start and sets *vlen; NULL when absent. */
static const char *scram_attr(const char *msg, size_t len, char key, size_t *vlen)
{
    size_t i = 0;
    while (i < len) {
        size_t start = i;
        while (i < len && msg[i] != ',')
            i++;
        if (i - start >= 2 && msg[start] == key && msg[start + 1] == '=') {
            *vlen = i - start - 2;
            return msg + start + 2;
        }
        i++;
    }
    return NULL;
}

static bool printable_nonce(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
            return false;
    return true;
}

static bool make_nonce(char *out, size_t outlen)
{
    uint8_t raw[SCRAM_NONCE_LEN];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return false;
    return b64_encode(raw, sizeof raw, out, outlen) > 0;
}

/* The gs2 header decides channel binding: "n,," none, "y,," client could but
 * thinks we can't, "p=tls-server-end-point,," bound to our certificate. */
static bool server_parse_gs2(scram_server *s, const char *msg, size_t len, size_t *bare_at, const char **err)
{
    size_t i = 0;
    while (i < len && msg[i] != ',')
        i++;
    if (i >= len)
        return (*err = "malformed gs2 header", false);
    size_t j = i + 1;
    while (j < len && msg[j] != ',')
        j++;
    if (j >= len || j != i + 1)
        return (*err = "authzid not supported", false);
    size_t hdr_len = j + 1;
    if (hdr_len >= sizeof s->gs2_header)
        return (*err = "gs2 header too long", false);
    memcpy(s->gs2_header, msg, hdr_len);
    s->gs2_header[hdr_len] = '\0';
    if (msg[0] == 'n' && i == 1) {
        if (s->use_plus)
            return (*err = "PLUS mechanism without channel binding", false);
    } else if (msg[0] == 'y' && i == 1) {
        /* The client supports binding but believes we do not: a downgrade if we offered it. */
        if (s->use_plus || s->server_offered_plus)
            return (*err = "channel binding downgrade", false);
    } else if (i == strlen("p=tls-server-end-point") && memcmp(msg, "p=tls-server-end-point", i) == 0) {
        if (!s->use_plus || !s->cbind || s->cbind->len == 0)
            return (*err = "unexpected channel binding", false);
    } else {
        return (*err = "unsupported channel binding type", false);
    }
    *bare_at = hdr_len;
    return true;
}

bool scram_server_first(scram_server *s, const char *msg, size_t len, char *out, size_t outlen, const char **err)
{
    size_t bare_at;
    if (len >= SCRAM_MAX_MESSAGE)
        return (*err = "client-first-message too long", false);
    if (!server_parse_gs2(s, msg, len, &bare_at, err))
        return false;
    const char *bare = msg + bare_at;
    size_t bare_len = len - bare_at;
    if (bare_len < 2 || memcmp(bare, "m=", 2) == 0)
        return (*err = "mandatory extensions not supported", false);
    size_t nlen;
    const char *cnonce = scram_attr(bare, bare_len, 'r', &nlen);
    if (!cnonce || !printable_nonce(cnonce, nlen) || nlen > 64)
        return (*err = "missing or invalid client nonce", false);
    memcpy(s->client_first_bare, bare, bare_len);
    s->client_first_bare[bare_len] = '\0';

    char snonce[32], salt64[96];
    if (!make_nonce(snonce, sizeof snonce))
        return (*err = "no randomness", false);
    snprintf(s->nonce, sizeof s->nonce, "%.*s%s", (int)nlen, cnonce, snonce);
    b64_encode(s->verifier.salt, s->verifier.salt_len, salt64, sizeof salt64);
    int n = snprintf(s->server_first, sizeof s->server_first, "r=%s,s=%s,i=%d", s->nonce, salt64,
                     s->verifier.iterations);
    if (n < 0 || (size_t)n >= sizeof s->server_first || (size_t)n >= outlen)
        return (*err = "server-first too long", false);
    memcpy(out, s->server_first, (size_t)n + 1);
    return true;
}

/* c= must be base64(gs2 header [+ channel binding data]) exactly. */
static bool server_check_binding(const scram_server *s, const char *c64, size_t c64len)
{
    uint8_t expect[128];
    size_t hlen = strlen(s->gs2_header), elen = hlen;
    memcpy(expect, s->gs2_header, hlen);
    if (s->use_plus) {
        if (hlen + s->cbind->len > sizeof expect)
            return false;
        memcpy(expect + hlen, s->cbind->data, s->cbind->len);
        elen += s->cbind->len;
    }
    uint8_t got[128];
    size_t glen;
    if (!b64_decode(c64, c64len, got, sizeof got, &glen))
        return false;
    return glen == elen && CRYPTO_memcmp(got, expect, elen) == 0;
}

bool scram_server_final(scram_server *s, const char *msg, size_t len, bool *authenticated, char *out,
                        size_t outlen, const char **err)
{
    *authenticated = false;
    if (len >= SCRAM_MAX_MESSAGE)
        return (*err = "client-final-message too long", false);
    size_t clen, rlen, plen;
    const char *c64 = scram_attr(msg, len, 'c', &clen);
    const char *nonce = scram_attr(msg, len, 'r', &rlen);
    const char *proof64 = scram_attr(msg, len, 'p', &plen);
    if (!c64 || !nonce || !proof64 || proof64 < nonce)
        return (*err = "malformed client-final-message", false);
    if (rlen != strlen(s->nonce) || memcmp(nonce, s->nonce, rlen) != 0)
        return (*err = "nonce mismatch", false);
    if (!server_check_binding(s, c64, clen))
        return (*err = "channel binding mismatch", false);
    uint8_t proof[SCRAM_KEY_LEN];
    if (!b64_exact(proof64, plen, proof, SCRAM_KEY_LEN))
        return (*err = "malformed proof", false);

    /* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
    size_t without_proof = (size_t)(proof64 - msg) - 3; /* drop ",p=" */
    char auth[3 * SCRAM_MAX_MESSAGE];
    int n = snprintf(auth, sizeof auth, "%s,%s,%.*s", s->client_first_bare, s->server_first, (int)without_proof,
                     msg);
    if (n < 0 || (size_t)n >= sizeof auth)
        return (*err = "auth message too long", false);

    uint8_t client_sig[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN], check[SCRAM_KEY_LEN];
    hmac_sha256(s->verifier.stored_key, SCRAM_KEY_LEN, auth, (size_t)n, client_sig);
    for (int i = 0; i < SCRAM_KEY_LEN; i++)
        client_key[i] = proof[i] ^ client_sig[i];
    sha256(client_key, SCRAM_KEY_LEN, check);
    *authenticated = CRYPTO_memcmp(check, s->verifier.stored_key, SCRAM_KEY_LEN) == 0;

    uint8_t server_sig[SCRAM_KEY_LEN];
    char sig64[48];
    hmac_sha256(s->verifier.server_key, SCRAM_KEY_LEN, auth, (size_t)n, server_sig);
    b64_encode(server_sig, SCRAM_KEY_LEN, sig64, sizeof sig64);
    int m = snprintf(out, outlen, "v=%s", sig64);
    return m > 0 && (size_t)m < outlen;
}

bool scram_client_first(scram_client *c, const char *password, char *out, size_t outlen)
{
    memset(c, 0, sizeof *c);
    c->password = password;
    if (!make_nonce(c->nonce, sizeof c->nonce))
        return false;
    /* PostgreSQL ignores the SCRAM user name (it has the startup one): send it empty. */
    snprintf(c->client_first_bare, sizeof c->client_first_bare, "n=,r=%s", c->nonce);
    int n = snprintf(out, outlen, "n,,%s", c->client_first_bare);
    return n > 0 && (size_t)n < outlen;
}

bool scram_client_final(scram_client *c, const char *sf, size_t len, char *out, size_t outlen, const char **err)
{
    if (len >= sizeof c->server_first)
        return (*err = "server-first-message too long", false);
    memcpy(c->server_first, sf, len);
    c->server_first[len] = '\0';
    size_t rlen, slen, ilen;
    const char *nonce = scram_attr(sf, len, 'r', &rlen);
    const char *salt64 = scram_attr(sf, len, 's', &slen);
    const char *iter = scram_attr(sf, len, 'i', &ilen);
    size_t mine = strlen(c->nonce);
    if (!nonce || !salt64 || !iter || rlen <= mine || memcmp(nonce, c->nonce, mine) != 0 || rlen > 256)
        return (*err = "malformed server-first-message", false);
    uint8_t salt[SCRAM_MAX_SALT];
    size_t salt_len;
    char ibuf[16];
    if (!b64_decode(salt64, slen, salt, sizeof salt, &salt_len) || ilen == 0 || ilen >= sizeof ibuf)
        return (*err = "bad salt or iteration count", false);
    memcpy(ibuf, iter, ilen);
    ibuf[ilen] = '\0';
    long iterations = strtol(ibuf, NULL, 10);
    if (iterations < 1 || iterations > 10000000)
        return (*err = "bad iteration count", false);

    uint8_t salted[SCRAM_KEY_LEN], ck[SCRAM_KEY_LEN], sk[SCRAM_KEY_LEN], svk[SCRAM_KEY_LEN];
    if (!salted_password(c->password, salt, salt_len, (int)iterations, salted))
        return (*err = "PBKDF2 failed", false);
    derive_keys(salted, ck, sk, svk);

    char without_proof[400];
    snprintf(without_proof, sizeof without_proof, "c=biws,r=%.*s", (int)rlen, nonce);
    char auth[3 * SCRAM_MAX_MESSAGE];
    int n = snprintf(auth, sizeof auth, "%s,%s,%s", c->client_first_bare, c->server_first, without_proof);
    if (n < 0 || (size_t)n >= sizeof auth)
        return (*err = "auth message too long", false);
    uint8_t csig[SCRAM_KEY_LEN], proof[SCRAM_KEY_LEN];
    hmac_sha256(sk, SCRAM_KEY_LEN, auth, (size_t)n, csig);
    for (int i = 0; i < SCRAM_KEY_LEN; i++)
        proof[i] = ck[i] ^ csig[i];
    hmac_sha256(svk, SCRAM_KEY_LEN, auth, (size_t)n, c->server_signature);
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(ck, sizeof ck);

    char proof64[48];
    b64_encode(proof, SCRAM_KEY_LEN, proof64, sizeof proof64);
    int m = snprintf(out, outlen, "%s,p=%s", without_proof, proof64);
    if (m < 0 || (size_t)m >= outlen)
        return (*err = "client-final too long", false);
    return true;
}

bool scram_client_verify_server(scram_client *c, const char *sf, size_t len, const char **err)
{
    size_t vlen;
    const char *v = scram_attr(sf, len, 'v', &vlen);
    uint8_t sig[SCRAM_KEY_LEN];
    if (!v || !b64_exact(v, vlen, sig, SCRAM_KEY_LEN))
        return (*err = "malformed server-final-message", false);
    if (CRYPTO_memcmp(sig, c->server_signature, SCRAM_KEY_LEN) != 0)
        return (*err = "upstream server signature mismatch", false);
    return true;
}
