/*
 * SHA-256 and Ed25519 for the audit log; see audit_crypto.h.
 */
#include "gate/audit_crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

/* OpenSSL keeps errors on a per-thread queue: take the first for the message
 * and clear the rest so a later, unrelated failure is not misreported. */
static void set_err(char *err, size_t errlen, const char *what, const char *path)
{
    unsigned long e = ERR_get_error();
    char ossl[160] = "";
    if (e)
        ERR_error_string_n(e, ossl, sizeof ossl);
    ERR_clear_error();
    if (errlen)
        snprintf(err, errlen, "%s%s%s%s%s", what, path ? " " : "", path ? path : "",
                 e ? ": " : "", ossl);
}

/* EVP_Digest allocates a context per call; fine for verify and tools.  The
 * fronts hash results incrementally with audit_digest instead. */
bool audit_sha256(const void *p, size_t n, uint8_t out[AUDIT_SHA256_LEN])
{
    unsigned int len = 0;
    return EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) == 1 && len == AUDIT_SHA256_LEN;
}

void audit_hex(const uint8_t *p, size_t n, char *out)
{
    static const char H[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = H[p[i] >> 4];
        out[2 * i + 1] = H[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int lower_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

bool audit_unhex(const char *hex, uint8_t *out, size_t n)
{
    /* One spelling only (lowercase): a verifier comparing hashes must not
     * accept two spellings of the same value. */
    if (!hex || strlen(hex) != 2 * n)
        return false;
    for (size_t i = 0; i < n; i++) {
        int h = lower_hex(hex[2 * i]), l = lower_hex(hex[2 * i + 1]);
        if (h < 0 || l < 0)
            return false;
        out[i] = (uint8_t)(h << 4 | l);
    }
    return true;
}

/* ---- incremental digest ----------------------------------------------- */

bool audit_digest_init(audit_digest *d)
{
    d->ctx = EVP_MD_CTX_new();
    if (d->ctx && EVP_DigestInit_ex(d->ctx, EVP_sha256(), NULL) == 1)
        return true;
    audit_digest_free(d);
    return false;
}

void audit_digest_update(audit_digest *d, const void *p, size_t n)
{
    /* A failed update poisons the context; final then reports it. */
    if (d->ctx && EVP_DigestUpdate(d->ctx, p, n) != 1)
        audit_digest_free(d);
}

bool audit_digest_final(audit_digest *d, uint8_t out[AUDIT_SHA256_LEN])
{
    unsigned int len = 0;
    bool ok = d->ctx && EVP_DigestFinal_ex(d->ctx, out, &len) == 1 && len == AUDIT_SHA256_LEN;
    audit_digest_free(d);
    return ok;
}

void audit_digest_free(audit_digest *d)
{
    EVP_MD_CTX_free(d->ctx);
    d->ctx = NULL;
}

/* ---- keys ------------------------------------------------------------- */

/* O_EXCL so keygen never clobbers a key that signed an existing log. */
static FILE *create_exclusive(const char *path, mode_t mode, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return NULL;
    }
    if (fchmod(fd, mode) != 0) { /* umask could only narrow it, but be explicit */
        snprintf(err, errlen, "cannot chmod %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        snprintf(err, errlen, "fdopen %s: %s", path, strerror(errno));
        close(fd);
    }
    return f;
}

static bool write_pem(const char *path, EVP_PKEY *k, bool private_key, char *err, size_t errlen)
{
    FILE *f = create_exclusive(path, private_key ? 0600 : 0644, err, errlen);
    if (!f)
        return false;
    int ok = private_key ? PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL)
                         : PEM_write_PUBKEY(f, k);
    bool flushed = fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0)
        flushed = false;
    if (ok != 1 || !flushed) {
        set_err(err, errlen, "cannot write", path);
        unlink(path);
        return false;
    }
    return true;
}

/* Private key first: if the public half cannot be written, the private one
 * is removed again, so a directory never holds half a key pair. */
bool audit_key_generate(const char *dir, char *err, size_t errlen)
{
    char priv[4096], pub[4096];
    if (snprintf(priv, sizeof priv, "%s/%s", dir, AUDIT_KEY_FILE) >= (int)sizeof priv ||
        snprintf(pub, sizeof pub, "%s/%s", dir, AUDIT_PUB_FILE) >= (int)sizeof pub) {
        snprintf(err, errlen, "directory name too long");
        return false;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return false;
    }
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!k) {
        set_err(err, errlen, "Ed25519 key generation failed", NULL);
        return false;
    }
    bool ok = write_pem(priv, k, true, err, errlen);
    if (ok && !write_pem(pub, k, false, err, errlen)) {
        unlink(priv);
        ok = false;
    }
    EVP_PKEY_free(k);
    return ok;
}

/* An RSA or EC key in the right file would sign fine and verify nowhere:
 * refuse anything but Ed25519 at load. */
static EVP_PKEY *check_ed25519(EVP_PKEY *k, const char *path, char *err, size_t errlen)
{
    if (k && EVP_PKEY_get_id(k) != EVP_PKEY_ED25519) {
        snprintf(err, errlen, "%s: not an Ed25519 key", path);
        EVP_PKEY_free(k);
        return NULL;
    }
    return k;
}

EVP_PKEY *audit_key_load_private(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077)) {
        /* Same rule as ssh: a signing key others can read proves nothing. */
        snprintf(err, errlen, "%s: private key is accessible by group/others (mode %03o); chmod 600",
                 path, (unsigned)(st.st_mode & 0777));
        fclose(f);
        return NULL;
    }
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!k)
        set_err(err, errlen, "cannot read private key", path);
    return check_ed25519(k, path, err, errlen);
}

EVP_PKEY *audit_key_load_public(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    EVP_PKEY *k = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    if (!k) {
        ERR_clear_error();
        rewind(f);
        k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    }
    fclose(f);
    if (!k)
        set_err(err, errlen, "cannot read public key", path);
    return check_ed25519(k, path, err, errlen);
}

/* For the key the genesis record embeds (verify without --pubkey). */
EVP_PKEY *audit_key_from_raw(const uint8_t raw[AUDIT_PUBKEY_LEN])
{
    return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, raw, AUDIT_PUBKEY_LEN);
}

bool audit_key_raw(EVP_PKEY *k, uint8_t raw[AUDIT_PUBKEY_LEN])
{
    size_t len = AUDIT_PUBKEY_LEN;
    return EVP_PKEY_get_raw_public_key(k, raw, &len) == 1 && len == AUDIT_PUBKEY_LEN;
}

/* Over the raw 32 bytes, not the DER wrapping, so the fingerprint does not
 * depend on how a tool encodes the key. */
bool audit_key_fingerprint(EVP_PKEY *k, char out[AUDIT_FPR_LEN])
{
    uint8_t raw[AUDIT_PUBKEY_LEN], h[AUDIT_SHA256_LEN];
    if (!audit_key_raw(k, raw) || !audit_sha256(raw, sizeof raw, h))
        return false;
    memcpy(out, "sha256:", 7);
    audit_hex(h, sizeof h, out + 7);
    return true;
}

/* ---- signatures ------------------------------------------------------- */

bool audit_sign(EVP_PKEY *k, const void *msg, size_t n, uint8_t sig[AUDIT_SIG_LEN])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t len = AUDIT_SIG_LEN;
    /* Ed25519 is one-shot: no digest name, and EVP_DigestSign, not Update/Final. */
    bool ok = ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, k) == 1 &&
              EVP_DigestSign(ctx, sig, &len, msg, n) == 1 && len == AUDIT_SIG_LEN;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

bool audit_sig_valid(EVP_PKEY *k, const void *msg, size_t n, const uint8_t sig[AUDIT_SIG_LEN])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, k) == 1 &&
              EVP_DigestVerify(ctx, sig, AUDIT_SIG_LEN, msg, n) == 1;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

/* A versioned, line-based text rather than the checkpoint line itself: the
 * signature cannot sign its own line, and a domain prefix keeps the key from
 * signing anything that could be mistaken for another protocol. */
size_t audit_checkpoint_message(char *buf, size_t cap, const char *log_id, uint64_t seq,
                                const char *ts, const char *prev_hex)
{
    int n = snprintf(buf, cap, "phigate-audit-checkpoint-v1\nlog_id=%s\nseq=%" PRIu64 "\nts=%s\nprev=%s\n",
                     log_id, seq, ts, prev_hex);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}
