/*
 * TLS contexts through OpenSSL: one for clients connecting to phigate, one per
 * upstream that wants TLS.  Minimum TLS 1.2 both ways.
 */
#ifndef PHIGATE_TLS_H
#define PHIGATE_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

#include "gate/scram.h"

SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen);
struct config;
/* The TLS context a front offers clients, from the tls: section: *out stays
 * NULL when no certificate is configured; with tls.client_ca_file clients are
 * asked for certificates.  false with err when a file does not load. */
bool tls_front_ctx(const struct config *cfg, SSL_CTX **out, char *err, size_t errlen);
/* Ask clients for a certificate checked against ca_file (and crl_file when
 * given, X509_V_FLAG_CRL_CHECK).  The handshake goes on whatever the client
 * sends, so the login can refuse it with a clear error (tls_client_cert_check). */
bool tls_server_request_client_certs(SSL_CTX *ctx, const char *ca_file, const char *crl_file, char *err,
                                     size_t errlen);
/* Does the verified client certificate of ssl carry want as a name of kind
 * (cert_name_kind)?  On false, why says what is wrong, without secrets. */
bool tls_client_cert_check(SSL *ssl, int kind, const char *want, char *why, size_t whylen);
/* verify: 0 = encrypt only, 1 = check chain against ca_file, 2 = chain and host name. */
SSL_CTX *tls_client_ctx_new(int verify, const char *ca_file, char *err, size_t errlen);
/* Chain and host name checked against ca_file, or the system's CA store when ca_file is NULL. */
SSL_CTX *tls_client_ctx_verified(const char *ca_file, char *err, size_t errlen);
/* Configure a client SSL for one connection (SNI and host-name check). */
bool tls_client_prepare(SSL *ssl, const char *host, int verify);
/* tls-server-end-point channel binding data of our own certificate (RFC 5929). */
bool tls_server_end_point(SSL *ssl, scram_channel_binding *out);
/* Last OpenSSL error as text, for logs. */
const char *tls_last_error(char *buf, size_t len);

#endif
