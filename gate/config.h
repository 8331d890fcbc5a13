/*
 * phigate's one configuration file (YAML, parsed with libyaml).
 *
 * Loading builds a fresh, immutable config object; every error is collected
 * with its file and line so `phigate --check-config` can explain all of them
 * at once.  Reload (later) builds a new object and swaps it only when valid.
 */
#ifndef PHIGATE_CONFIG_H
#define PHIGATE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gate/log.h"
#include "gate/min_necessary.h"
#include "gate/scram.h"
#include "sqlpolicy/sqlpolicy.h"

typedef enum {
    UPSTREAM_TLS_DISABLE = 0,
    UPSTREAM_TLS_PREFER,      /* try TLS, fall back to plain: never with a password over the wire in prod */
    UPSTREAM_TLS_REQUIRE,     /* encrypted, certificate not checked */
    UPSTREAM_TLS_VERIFY_CA,   /* chain checked against tls_ca_file */
    UPSTREAM_TLS_VERIFY_FULL, /* chain and host name checked */
} upstream_tls_mode;

typedef struct cfg_upstream {
    char *name;     /* the key under upstreams: (roles name upstreams by it) */
    char *client_database; /* the database name clients ask for (default: the key) */
    char *protocol; /* "postgres" or "mysql" */
    char *host;
    int port;
    char *database; /* the database on the upstream server */
    char *user;
    char *password_file;
    char *password_env;
    char *password; /* loaded secret, NULL = none (trust) */
    int tls_mode;   /* upstream_tls_mode */
    char *tls_ca_file;
    int connect_timeout_ms;
} cfg_upstream;

typedef struct cfg_role {
    char *name;
    char **upstreams; /* NULL-terminated names of upstreams this role may use */
    sqlp_role policy;
    minnec_limits minnec; /* estimate_row_limit, phi_row_budget (gate/min_necessary.h) */
} cfg_role;

/* An OIDC issuer whose signed tokens (JWT) agents present as their password. */
typedef struct cfg_oidc_issuer {
    char *name;          /* the key under oidc: (identities name issuers by it) */
    char *issuer;        /* the "iss" its tokens carry */
    char *audience;      /* the "aud" a token for phigate must contain */
    char *jwks_file;     /* keys from a file ... */
    char *jwks_uri;      /* ... or fetched over HTTPS (oidc.c) */
    char *ca_file;       /* CA bundle the jwks_uri server is verified against (NULL: system store) */
    char **algorithms;   /* NULL-terminated names, parsed into algs */
    unsigned algs;       /* jwt_alg flags (gate/jwks.h) */
    char *identity_claim;
    char *role_claim;    /* NULL: the identity's configured role */
    char **allowed_roles; /* NULL: any configured role may be named by role_claim */
    int clock_skew_s;
    int jwks_refresh_s;
    int jwks_refetch_min_s; /* at most one refetch per this many seconds on an unknown kid */
    int64_t max_token_bytes;
    int64_t max_jwks_bytes;
} cfg_oidc_issuer;

/* How an identity logs in (identities.<name>.auth). */
typedef enum {
    IDENTITY_AUTH_SCRAM = 0,  /* SCRAM-SHA-256 with its verifier (the default) */
    IDENTITY_AUTH_CERT,       /* a TLS client certificate that names it, no password */
    IDENTITY_AUTH_CERT_SCRAM, /* both: the certificate, then SCRAM */
} identity_auth;

/* Which name in a client certificate maps it to an identity (tls.client_cert_name). */
typedef enum {
    CERT_NAME_CN = 0, /* the subject's commonName */
    CERT_NAME_DNS,    /* a subjectAltName dNSName */
    CERT_NAME_URI,    /* a subjectAltName URI (e.g. spiffe://...) */
    CERT_NAME_EMAIL,  /* a subjectAltName rfc822Name */
} cert_name_kind;

typedef struct cfg_identity {
    char *name;
    int auth;        /* identity_auth */
    char *cert_name; /* the certificate name that maps to it (default: the identity's name) */
    char *secret;    /* SCRAM verifier text; NULL when the identity logs in with a token or certificate only */
    char *oidc_issuer_name;
    const cfg_oidc_issuer *oidc; /* set: logs in with a JWT from this issuer, over TLS only */
    scram_verifier verifier;
    char *role_name;
    const cfg_role *role;
    int max_connections;    /* 0 = unlimited */
    int statements_per_second; /* 0 = unlimited */
    /* Optional MySQL mysql_native_password verifier: SHA1(SHA1(password)),
     * written as 40 hex digits like MySQL's authentication_string. */
    char *mysql_native;
    bool has_mysql_native;
    uint8_t mysql_native_hash[20];
} cfg_identity;

/* How an approval may be reused: once by the statement it was given for, or by
 * any statement with the same identity + fingerprint until it expires. */
typedef enum {
    APPROVAL_GRANT_SINGLE_USE = 0,
    APPROVAL_GRANT_TTL,
} approval_grant_mode;

/* A human who approves held statements (web console, phigatectl approvals).
 * Approvers are not agent identities: their own names, their own secrets. */
typedef struct cfg_approver {
    char *name;
    char *secret; /* SCRAM verifier text */
    scram_verifier verifier;
} cfg_approver;

typedef struct config {
    char *path;
    /* daemon */
    int log_level;
    char *log_file;
    char *pid_file;
    char *masking_rules_dir;
    /* listeners */
    char *pg_address;
    int pg_port;
    bool my_enabled; /* listen.mysql present: myfront runs */
    char *my_address;
    int my_port;
    /* TLS towards clients */
    char *tls_cert_file;
    char *tls_key_file;
    bool tls_required;
    /* client certificates (auth: cert identities) */
    char *tls_client_ca_file;
    char *tls_client_crl_file;
    int tls_client_cert_name; /* cert_name_kind */
    /* limits */
    int64_t max_message_bytes;
    int64_t max_startup_bytes;
    int max_clients;
    int64_t client_buffer_bytes;
    int auth_timeout_ms;
    /* audit log */
    bool audit_enabled;
    char *audit_dir;
    char *audit_key_file;
    int audit_checkpoint_records;
    int audit_checkpoint_ms;
    int64_t audit_rotate_bytes;
    int64_t audit_preallocate_bytes;

    /* approvals queue in Redis (sections redis: and approvals:) */
    bool redis_enabled; /* a redis: section is present */
    char *redis_host;
    int redis_port;
    char *redis_password_file;
    char *redis_password_env;
    char *redis_password; /* loaded secret, NULL = no AUTH */
    char *redis_key_prefix;
    int redis_timeout_ms; /* per Redis command and per connect attempt */
    int approvals_wait_ms;
    int approvals_grant; /* approval_grant_mode */
    int approvals_grant_ttl_s;
    int approvals_request_ttl_s;
    /* admin console and API (section admin:) */
    bool admin_enabled; /* an admin: section is present */
    char *admin_address;
    int admin_port;
    char *admin_cert_file;
    char *admin_key_file;

    cfg_upstream *upstreams;
    size_t nupstreams;
    cfg_role *roles;
    size_t nroles;
    cfg_identity *identities;
    size_t nidentities;
    cfg_approver *approvers;
    size_t napprovers;
    cfg_oidc_issuer *oidc_issuers;
    size_t noidc_issuers;
} config;

/* Parse and validate; on failure returns NULL and errors holds one line per problem. */
config *config_load(const char *path, char *errors, size_t errlen);
void config_free(config *cfg);

const cfg_upstream *config_find_upstream(const config *cfg, const char *name);
/* The upstream of a protocol that clients reach under database name db: the same
 * name can be a PostgreSQL upstream for pgfront and a MySQL one for myfront. */
const cfg_upstream *config_find_upstream_for(const config *cfg, const char *protocol, const char *db);
const cfg_identity *config_find_identity(const config *cfg, const char *name);
const cfg_approver *config_find_approver(const config *cfg, const char *name);
const cfg_role *config_find_role(const config *cfg, const char *name);
/* May an identity of issuer iss be bound to role (named by its token)? */
bool config_issuer_allows_role(const cfg_oidc_issuer *iss, const char *role);
bool config_role_allows_upstream(const cfg_role *role, const char *upstream);
/* What an identity's login needs (identities.<name>.auth). */
bool config_identity_needs_cert(const cfg_identity *id);
bool config_identity_needs_scram(const cfg_identity *id);

/* Read a secret from a file that only its owner may read; false with err on failure. */
bool config_read_secret_file(const char *path, char **out, char *err, size_t errlen);

#endif
