/*
 * SCRAM-SHA-256: phigate's client side against its server side, and the ways an
 * exchange must fail (wrong password, altered proof, nonce or binding games,
 * malformed messages).
 */
#include <stdio.h>
#include <string.h>

#include "gate/scram.h"

static int passed, failed;

#define CHECK(cond, what)                                   \
    do {                                                    \
        if (cond)                                           \
            passed++;                                       \
        else {                                              \
            failed++;                                       \
            printf("FAIL %s (line %d)\n", what, __LINE__); \
        }                                                   \
    } while (0)

typedef struct exchange {
    scram_server server;
    scram_client client;
    char client_first[SCRAM_MAX_MESSAGE], server_first[SCRAM_MAX_MESSAGE];
    char client_final[SCRAM_MAX_MESSAGE], server_final[SCRAM_MAX_MESSAGE];
} exchange;

/* Runs client-first and server-first; false when either side refuses. */
static bool start(exchange *x, const char *verifier_text, const char *password)
{
    const char *err = NULL;
    memset(x, 0, sizeof *x);
    if (!scram_verifier_parse(verifier_text, &x->server.verifier))
        return false;
    return scram_client_first(&x->client, password, x->client_first, sizeof x->client_first) &&
           scram_server_first(&x->server, x->client_first, strlen(x->client_first), x->server_first,
                              sizeof x->server_first, &err) &&
           scram_client_final(&x->client, x->server_first, strlen(x->server_first), x->client_final,
                              sizeof x->client_final, &err);
}

static bool finish(exchange *x, const char *client_final, bool *authenticated)
{
    const char *err = NULL;
    return scram_server_final(&x->server, client_final, strlen(client_final), authenticated, x->server_final,
                              sizeof x->server_final, &err);
}

static void test_round_trip(const char *v)
{
    exchange x;
    bool ok = false;
    const char *err = NULL;
    CHECK(start(&x, v, "correct horse"), "exchange starts");
    CHECK(finish(&x, x.client_final, &ok) && ok, "right password authenticates");
    CHECK(scram_client_verify_server(&x.client, x.server_final, strlen(x.server_final), &err),
          "client accepts the server's signature");
}

static void test_wrong_password(const char *v)
{
    exchange x;
    bool ok = true;
    CHECK(start(&x, v, "wrong horse"), "exchange starts");
    CHECK(finish(&x, x.client_final, &ok) && !ok, "wrong password is refused");
}

static void test_altered_proof(const char *v)
{
    exchange x;
    bool ok = true;
    CHECK(start(&x, v, "correct horse"), "exchange starts");
    char *p = strstr(x.client_final, ",p=");
    p[3] = p[3] == 'A' ? 'B' : 'A';
    CHECK(!finish(&x, x.client_final, &ok) || !ok, "altered proof is refused");
}

static void test_nonce_mismatch(const char *v)
{
    exchange x;
    bool ok = true;
    CHECK(start(&x, v, "correct horse"), "exchange starts");
    char *r = strstr(x.client_final, "r=");
    r[2] = r[2] == 'x' ? 'y' : 'x';
    CHECK(!finish(&x, x.client_final, &ok) && !ok, "client-final with another nonce is malformed");
}

static void test_forged_server_signature(const char *v)
{
    exchange x;
    bool ok = false;
    const char *err = NULL;
    CHECK(start(&x, v, "correct horse"), "exchange starts");
    CHECK(finish(&x, x.client_final, &ok) && ok, "authenticates");
    x.server_final[2] = x.server_final[2] == 'A' ? 'B' : 'A';
    CHECK(!scram_client_verify_server(&x.client, x.server_final, strlen(x.server_final), &err),
          "client refuses a forged server signature");
}

static void test_binding_downgrade(const char *v)
{
    scram_server s;
    char out[SCRAM_MAX_MESSAGE];
    const char *err = NULL;
    scram_channel_binding cb = {.len = 32};
    memset(&s, 0, sizeof s);
    CHECK(scram_verifier_parse(v, &s.verifier), "verifier parses");
    s.server_offered_plus = true;
    s.cbind = &cb;
    const char *y = "y,,n=,r=abcdefghijklmnop";
    CHECK(!scram_server_first(&s, y, strlen(y), out, sizeof out, &err), "'y' after PLUS was offered is refused");
    memset(&s, 0, sizeof s);
    CHECK(scram_verifier_parse(v, &s.verifier), "verifier parses");
    const char *p = "p=tls-server-end-point,,n=,r=abcdefghijklmnop";
    CHECK(!scram_server_first(&s, p, strlen(p), out, sizeof out, &err), "binding without TLS is refused");
}

static void test_malformed(const char *v)
{
    const char *bad[] = {"", "n", "n,", "n,,", "x,,n=,r=abc", "n,a=someone,n=,r=abc", "n,,m=ext,r=abc",
                         "n,,n=,r=", "n,,n=,r=a,b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        scram_server s;
        char out[SCRAM_MAX_MESSAGE];
        const char *err = NULL;
        memset(&s, 0, sizeof s);
        CHECK(scram_verifier_parse(v, &s.verifier), "verifier parses");
        bool accepted = scram_server_first(&s, bad[i], strlen(bad[i]), out, sizeof out, &err);
        /* "n,,n=,r=a,b" is well formed (",b" is an unknown extension field). */
        CHECK(accepted == (i == 8), bad[i]);
    }
}

static void test_verifier_texts(void)
{
    scram_verifier v;
    CHECK(!scram_verifier_parse("md5abcdef", &v), "md5 text is not a verifier");
    CHECK(!scram_verifier_parse("SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA", &v), "zero iterations refused");
    CHECK(!scram_verifier_parse("SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA", &v), "short keys refused");
    CHECK(!scram_verifier_parse("SCRAM-SHA-256$4096:!!!!$AAAA:AAAA", &v), "bad base64 refused");
}

static void test_mock_is_stable(void)
{
    scram_verifier a, b, c;
    const uint8_t secret[32] = {1, 2, 3};
    scram_verifier_mock(secret, sizeof secret, "ghost", &a);
    scram_verifier_mock(secret, sizeof secret, "ghost", &b);
    scram_verifier_mock(secret, sizeof secret, "other", &c);
    CHECK(memcmp(a.salt, b.salt, a.salt_len) == 0, "same unknown user gets the same salt every time");
    CHECK(memcmp(a.salt, c.salt, a.salt_len) != 0, "different unknown users get different salts");
}

int main(void)
{
    char v[256];
    if (!scram_verifier_make("correct horse", 4096, v, sizeof v)) {
        printf("FAIL cannot make a verifier\n0 passed, 1 failed\n");
        return 1;
    }
    test_round_trip(v);
    test_wrong_password(v);
    test_altered_proof(v);
    test_nonce_mismatch(v);
    test_forged_server_signature(v);
    test_binding_downgrade(v);
    test_malformed(v);
    test_verifier_texts();
    test_mock_is_stable();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
