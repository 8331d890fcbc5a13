#include "gate/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "gate/config.h"

const char *tls_last_error(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (!e)
        snprintf(buf, len, "unknown TLS error");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    char ebuf[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "SSL_CTX_new: %s", tls_last_error(ebuf, sizeof ebuf));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        snprintf(err, errlen, "cannot load TLS certificate %s: %s", cert_file, tls_last_error(ebuf, sizeof ebuf));
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "cannot load TLS key %s: %s", key_file, tls_last_error(ebuf, sizeof ebuf));
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

SSL_CTX *tls_client_ctx_new(int verify, const char *ca_file, char *err, size_t errlen)
{
    char ebuf[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "SSL_CTX_new: %s", tls_last_error(ebuf, sizeof ebuf));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION);
    if (verify > 0) {
        if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
            snprintf(err, errlen, "cannot load CA file %s: %s", ca_file, tls_last_error(ebuf, sizeof ebuf));
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return ctx;
}

SSL_CTX *tls_client_ctx_verified(const char *ca_file, char *err, size_t errlen)
{
    if (ca_file)
        return tls_client_ctx_new(2, ca_file, err, errlen);
    SSL_CTX *ctx = tls_client_ctx_new(0, NULL, err, errlen);
    if (ctx) {
        SSL_CTX_set_default_verify_paths(ctx);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    return ctx;
}

bool tls_client_prepare(SSL *ssl, const char *host, int verify)
{
    struct in6_addr a6;
    struct in_addr a4;
    bool is_ip = inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
    if (!is_ip && SSL_set_tlsext_host_name(ssl, host) != 1)
        return false;
    if (verify >= 2) {
        X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
        if (is_ip)
            return X509_VERIFY_PARAM_set1_ip_asc(param, host) == 1;
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        return X509_VERIFY_PARAM_set1_host(param, host, 0) == 1;
    }
    return true;
}

bool tls_server_end_point(SSL *ssl, scram_channel_binding *out)
{
    out->len = 0;
    X509 *cert = SSL_get_certificate(ssl);
    if (!cert)
        return false;
    int md_nid, pk_nid;
    if (!OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, &pk_nid))
        return false;
    /* RFC 5929: MD5 and SHA-1 signatures are bound with SHA-256 instead. */
    const EVP_MD *md = (md_nid == NID_md5 || md_nid == NID_sha1) ? EVP_sha256() : EVP_get_digestbynid(md_nid);
    unsigned int len = 0;
    if (!md || X509_digest(cert, md, out->data, &len) != 1 || len > sizeof out->data)
        return false;
    out->len = len;
    return true;
}

bool tls_front_ctx(const config *cfg, SSL_CTX **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!cfg->tls_cert_file)
        return true;
    SSL_CTX *ctx = tls_server_ctx_new(cfg->tls_cert_file, cfg->tls_key_file, err, errlen);
    if (ctx && cfg->tls_client_ca_file &&
        !tls_server_request_client_certs(ctx, cfg->tls_client_ca_file, cfg->tls_client_crl_file, err, errlen)) {
        SSL_CTX_free(ctx);
        ctx = NULL;
    }
    *out = ctx;
    return ctx != NULL;
}

/* Every chain is accepted during the handshake; the result is read afterwards
 * (SSL_get_verify_result) so the login can say why a certificate is refused
 * in protocol form instead of a bare TLS alert. */
static int accept_for_later_check(int preverify_ok, X509_STORE_CTX *ctx)
{
    (void)preverify_ok, (void)ctx;
    return 1;
}

bool tls_server_request_client_certs(SSL_CTX *ctx, const char *ca_file, const char *crl_file, char *err,
                                     size_t errlen)
{
    char ebuf[256];
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca_file);
    if (!names || SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        snprintf(err, errlen, "cannot load client CA file %s: %s", ca_file, tls_last_error(ebuf, sizeof ebuf));
        if (names)
            sk_X509_NAME_pop_free(names, X509_NAME_free);
        return false;
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    if (crl_file) {
        X509_STORE *store = SSL_CTX_get_cert_store(ctx);
        X509_LOOKUP *lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());
        if (!lookup || X509_load_crl_file(lookup, crl_file, X509_FILETYPE_PEM) <= 0) {
            snprintf(err, errlen, "cannot load client CRL file %s: %s", crl_file, tls_last_error(ebuf, sizeof ebuf));
            return false;
        }
        X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    }
    /* No resumption: every login checks its certificate (and the CRL) afresh. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_for_later_check);
    return true;
}

static const char *verify_error_text(long code)
{
    switch (code) {
    case X509_V_ERR_CERT_REVOKED:
        return "the client certificate is revoked";
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return "the client certificate has expired";
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return "the client certificate is not valid yet";
    case X509_V_ERR_UNABLE_TO_GET_CRL:
    case X509_V_ERR_CRL_HAS_EXPIRED:
    case X509_V_ERR_CRL_NOT_YET_VALID:
        return "the revocation status of the client certificate cannot be checked (no current CRL for its issuer)";
    default:
        return NULL;
    }
}

static bool same_text(const unsigned char *data, int len, const char *want, bool ignore_case)
{
    size_t n = strlen(want);
    if (len < 0 || (size_t)len != n)
        return false;
    return ignore_case ? strncasecmp((const char *)data, want, n) == 0 : memcmp(data, want, n) == 0;
}

static bool subject_cn_is(X509 *cert, const char *want)
{
    X509_NAME *subject = X509_get_subject_name(cert);
    for (int i = -1; (i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) >= 0;) {
        unsigned char *utf8 = NULL;
        int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i)));
        bool match = utf8 && same_text(utf8, len, want, false);
        OPENSSL_free(utf8);
        if (match)
            return true;
    }
    return false;
}

static bool alt_name_is(X509 *cert, int gen_type, const char *want)
{
    GENERAL_NAMES *alts = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    bool match = false;
    for (int i = 0; alts && !match && i < sk_GENERAL_NAME_num(alts); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(alts, i);
        if (g->type != gen_type)
            continue;
        const ASN1_IA5STRING *v = g->d.ia5; /* dNSName, URI and rfc822Name are all IA5 strings */
        match = same_text(ASN1_STRING_get0_data(v), ASN1_STRING_length(v), want, gen_type == GEN_DNS);
    }
    GENERAL_NAMES_free(alts);
    return match;
}

static bool cert_names(X509 *cert, int kind, const char *want)
{
    switch (kind) {
    case CERT_NAME_CN:
        return subject_cn_is(cert, want);
    case CERT_NAME_DNS:
        return alt_name_is(cert, GEN_DNS, want);
    case CERT_NAME_URI:
        return alt_name_is(cert, GEN_URI, want);
    default:
        return alt_name_is(cert, GEN_EMAIL, want);
    }
}

bool tls_client_cert_check(SSL *ssl, int kind, const char *want, char *why, size_t whylen)
{
    X509 *cert = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    if (!cert) {
        snprintf(why, whylen, "no client certificate was presented");
        return false;
    }
    long rc = SSL_get_verify_result(ssl);
    if (rc != X509_V_OK) {
        const char *text = verify_error_text(rc);
        if (text)
            snprintf(why, whylen, "%s", text);
        else
            snprintf(why, whylen, "the client certificate is not trusted (%s)", X509_verify_cert_error_string(rc));
        return false;
    }
    if (!cert_names(cert, kind, want)) {
        static const char *const kinds[] = {"subject CN", "DNS subjectAltName", "URI subjectAltName",
                                            "email subjectAltName"};
        snprintf(why, whylen, "the client certificate's %s does not map to this identity",
                 kinds[kind >= 0 && kind <= 3 ? kind : 3]);
        return false;
    }
    return true;
}
