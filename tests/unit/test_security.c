/* pt_security: each kind of definition, the trusted-gateway rule, the
 * verified-credential cache and the slow checks, and the bounds on password
 * checks as requests meet them. (Reading definitions: test_security_config.c;
 * the gate alone: test_security_gate.c; hash-password: test_security_hash.c.) */
#include "pt_config.h"
#include "pt_metrics.h"
#include "pt_security.h"
#include "pt_security_config.h"
#include "pt_security_hash.h"
#include "pt_test.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <sodium.h>

#include <stdarg.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/pt_test_security.XXXXXX";
static char err[1024];

/* ---- a request: a few headers ---- */

typedef struct {
    const char *h[8][2];
    int n;
} req_t;

static int header(void *ud, const char *name, const char **value, size_t *len)
{
    req_t *r = ud;
    int count = 0;
    for (int i = 0; i < r->n; i++)
        if (!strcasecmp(r->h[i][0], name) && count++ == 0) {
            *value = r->h[i][1];
            *len = strlen(r->h[i][1]);
        }
    return count;
}

static req_t R(int n, ...)
{
    req_t r = {.n = n};
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        r.h[i][0] = va_arg(ap, const char *);
        r.h[i][1] = va_arg(ap, const char *);
    }
    va_end(ap);
    return r;
}

static pt_security_result_t res;

/* Checks r against the definition called def (NULL: an open channel); runs a
 * password check inline when one is asked for, then checks again, as pt_http
 * does. Returns what the final check returned; *slow says whether it ran. */
static int check2(const pt_config_t *cfg, const char *def, req_t r, const char *token, int *slow)
{
    const pt_security_def_t *d = def ? pt_security_find(cfg->security, def) : NULL;
    pt_security_request_t req = {
        .header = header, .ud = &r, .token = token, .token_len = token ? strlen(token) : 0};
    if (def && !d) return -100;
    int rc = pt_security_check(cfg->security, d, &req, &res);
    if (slow) *slow = rc == PT_SECURITY_VERIFY;
    if (rc == PT_SECURITY_VERIFY) {
        pt_security_verify_now(res.verify);
        rc = pt_security_check(cfg->security, d, &req, &res);
        PT_CHECK(rc != PT_SECURITY_VERIFY); /* the cache answers the second time */
    }
    return rc;
}

static int check(const pt_config_t *cfg, const char *def, req_t r)
{
    return check2(cfg, def, r, NULL, NULL);
}

static char *basic(const char *user_pass)
{
    static char out[8][256];
    static int i;
    char *o = out[i++ % 8];
    strcpy(o, "Basic ");
    sodium_bin2base64(o + 6, sizeof out[0] - 6, (const unsigned char *)user_pass, strlen(user_pass),
                      sodium_base64_VARIANT_ORIGINAL);
    return o;
}

/* ---- config files ---- */

static char *write_file(const char *name, const char *text)
{
    static char path[8][512];
    static int i;
    char *p = path[i++ % 8];
    snprintf(p, sizeof path[0], "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    return p;
}

static pt_config_t *load(const char *text)
{
    pt_config_t *cfg = NULL;
    if (pt_config_load(write_file("c.yaml", text), &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "load: %s\n", err);
        return NULL;
    }
    return cfg;
}

/* ---- JWTs ---- */

static void b64url(const unsigned char *in, size_t n, char *out, size_t cap)
{
    sodium_bin2base64(out, cap, in, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

static EVP_PKEY *rsa_key, *other_rsa_key;
static const char *hs_secret = "0123456789abcdef0123456789abcdef-hs256";

/* Makes header.payload.signature; alg "none" leaves the signature empty. key:
 * NULL signs with the HS256 secret (or RS256 with rsa_key). */
static char *jwt(const char *alg, const char *payload, EVP_PKEY *key)
{
    static char out[4][4096];
    static int i;
    char *o = out[i++ % 4];
    char hdr[128], b1[512], b2[2048], sig[1024];
    unsigned char mac[512];
    size_t mac_len = 0;
    snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    b64url((unsigned char *)hdr, strlen(hdr), b1, sizeof b1);
    b64url((unsigned char *)payload, strlen(payload), b2, sizeof b2);
    char input[3072];
    snprintf(input, sizeof input, "%s.%s", b1, b2);
    if (!strcmp(alg, "HS256")) {
        unsigned int l = 0;
        HMAC(EVP_sha256(), hs_secret, (int)strlen(hs_secret), (unsigned char *)input, strlen(input),
             mac, &l);
        mac_len = l;
    } else if (!strcmp(alg, "RS256")) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        mac_len = sizeof mac;
        EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key ? key : rsa_key);
        EVP_DigestSign(ctx, mac, &mac_len, (unsigned char *)input, strlen(input));
        EVP_MD_CTX_free(ctx);
    }
    sig[0] = '\0';
    if (mac_len) b64url(mac, mac_len, sig, sizeof sig);
    snprintf(o, sizeof out[0], "%s.%s", input, sig);
    return o;
}

static char *bearer(const char *token)
{
    static char out[4][4200];
    static int i;
    char *o = out[i++ % 4];
    snprintf(o, sizeof out[0], "Bearer %s", token);
    return o;
}

/* ---- the tests ---- */

static const char *CONFIG = "security:\n"
                            "  basic_auth:\n"
                            "    - name: upstream\n"
                            "      realm: the gate\n"
                            "      trust_username_header: x-portico-username\n"
                            "      users:\n"
                            "        - username: gateway\n"
                            "          password_hash: \"%s\"\n"
                            "    - name: direct\n"
                            "      users:\n"
                            "        - username: john.doe\n"
                            "          password_hash: \"%s\"\n"
                            "        - username: ci\n"
                            "          password_env: PT_TEST_PW\n"
                            "    - name: env.only\n"
                            "      trust_username_header: x-end-user\n"
                            "      users:\n"
                            "        - username: ci\n"
                            "          password_env: PT_TEST_PW\n"
                            "  api_key:\n"
                            "    - name: keys\n"
                            "      header: X-Api-Key\n"
                            "      keys:\n"
                            "        - username: acme\n"
                            "          key_hash: \"%s\"\n"
                            "        - username: beta\n"
                            "          key_env: PT_TEST_KEY\n"
                            "  jwt:\n"
                            "    - name: hs\n"
                            "      algorithm: HS256\n"
                            "      secret_file: hs.secret\n"
                            "      issuer: https://id.example\n"
                            "      audience: [portico, other]\n"
                            "      username_claim: preferred_username\n"
                            "      leeway: 0\n"
                            "    - name: rs\n"
                            "      algorithm: RS256\n"
                            "      public_key: rsa.pem\n"
                            "      require_exp: false\n"
                            "channels:\n"
                            "  rest:\n"
                            "    - name: r\n"
                            "      url_path: /r\n"
                            "      service: s\n"
                            "      security: direct\n";

/* The config of CONFIG with its hashes, shared by the cases that check
 * requests against it (made in main: hashing takes a while). */
static pt_config_t *cfg;
static char *text;

PT_CASE(definitions_are_found)
{
    PT_CHECK(cfg->channels[0].security == pt_security_find(cfg->security, "direct"));
    PT_CHECK_STR(pt_security_def_name(cfg->channels[0].security), "direct");
}

PT_CASE(basic_auth)
{
    int slow;
    /* right password: one slow check, then the cache */
    PT_CHECK_INT(
        check2(cfg, "direct", R(1, "Authorization", basic("john.doe:secret")), NULL, &slow), 0);
    PT_CHECK_INT(slow, 1);
    PT_CHECK_STR(res.username, "john.doe");
    PT_CHECK_STR(res.gateway, "");
    PT_CHECK_STR(res.hide_header, "authorization");
    PT_CHECK_INT(
        check2(cfg, "direct", R(1, "authorization", basic("john.doe:secret")), NULL, &slow), 0);
    PT_CHECK_INT(slow, 0);
    PT_CHECK_STR(res.username, "john.doe");
    /* scheme in any case, several spaces */
    char v[256];
    snprintf(v, sizeof v, "bAsIc   %s", basic("john.doe:secret") + 6);
    PT_CHECK_INT(check(cfg, "direct", R(1, "authorization", v)), 0);

    /* wrong password, unknown user: 401 with the realm, and no hint which */
    PT_CHECK_INT(check(cfg, "direct", R(1, "Authorization", basic("john.doe:Secret"))),
                 PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 401);
    PT_CHECK_STR(res.message, "wrong username or password");
    PT_CHECK_STR(res.extra, "WWW-Authenticate: Basic realm=\"portico\", charset=\"UTF-8\"\r\n");
    PT_CHECK_INT(check2(cfg, "direct", R(1, "Authorization", basic("jane:secret")), NULL, &slow),
                 PT_SECURITY_REFUSE);
    PT_CHECK_INT(slow, 1); /* an unknown user costs the same time as a known one */
    PT_CHECK_STR(res.message, "wrong username or password");
    /* a password that is a prefix or extension of the right one */
    PT_CHECK_INT(check(cfg, "direct", R(1, "Authorization", basic("john.doe:secre"))),
                 PT_SECURITY_REFUSE);
    PT_CHECK_INT(check(cfg, "direct", R(1, "Authorization", basic("john.doe:secret "))),
                 PT_SECURITY_REFUSE);
    /* the right password of another user */
    PT_CHECK_INT(check(cfg, "direct", R(1, "Authorization", basic("john.doe:env-pass"))),
                 PT_SECURITY_REFUSE);

    /* malformed */
    PT_CHECK_INT(check(cfg, "direct", R(0)), PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 401);
    PT_CHECK_STR(res.message, "authentication required");
    PT_CHECK(strstr(res.extra, "WWW-Authenticate: Basic realm=\"portico\"") != NULL);
    PT_CHECK_INT(check(cfg, "direct", R(1, "Authorization", "Basic !!!notbase64")),
                 PT_SECURITY_REFUSE);
    PT_CHECK_STR(res.message, "malformed Basic credentials: not base64");
    PT_CHECK_INT(check(cfg, "direct", R(1, "Authorization", "Basic am9obi5kb2U6c2VjcmV0")), 0);
    PT_CHECK_INT(check(cfg, "direct", R(1, "Authorization", "Basic am9obi5kb2U6c2VjcmV0=")),
                 PT_SECURITY_REFUSE); /* bad padding */
    PT_CHECK_INT(check(cfg, "direct", R(1, "Authorization", "Basic ")), PT_SECURITY_REFUSE);
    PT_CHECK_INT(check(cfg, "direct", R(1, "Authorization", basic("john.doe"))),
                 PT_SECURITY_REFUSE);
    PT_CHECK_STR(res.message, "malformed Basic credentials: no ':' after the username");
    PT_CHECK_INT(check(cfg, "direct", R(1, "Authorization", basic(":secret"))), PT_SECURITY_REFUSE);
    PT_CHECK_STR(res.message, "malformed Basic credentials: empty username");
    PT_CHECK_INT(check(cfg, "direct", R(1, "Authorization", basic("john.doe:sec\nret"))),
                 PT_SECURITY_REFUSE);
    PT_CHECK_INT(check(cfg, "direct", R(1, "Authorization", "Bearer abc")), PT_SECURITY_REFUSE);
    PT_CHECK_STR(res.message, "expected Basic credentials");
    PT_CHECK_INT(check(cfg, "direct", R(1, "Authorization", "Basicam9obi5kb2U6c2VjcmV0")),
                 PT_SECURITY_REFUSE);
    PT_CHECK_INT(check(cfg, "direct",
                       R(2, "Authorization", basic("john.doe:secret"), "Authorization",
                         basic("john.doe:secret"))),
                 PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 400);

    /* a password from the environment: no slow check at all */
    PT_CHECK_INT(check2(cfg, "direct", R(1, "Authorization", basic("ci:env-pass")), NULL, &slow),
                 0);
    PT_CHECK_INT(slow, 0);
    PT_CHECK_STR(res.username, "ci");
    PT_CHECK_INT(check(cfg, "direct", R(1, "Authorization", basic("ci:env-pas"))),
                 PT_SECURITY_REFUSE);
    /* definitions are apart: gateway's password is not john.doe's */
    PT_CHECK_INT(check(cfg, "upstream", R(1, "Authorization", basic("john.doe:secret"))),
                 PT_SECURITY_REFUSE);
    PT_CHECK_STR(res.extra, "WWW-Authenticate: Basic realm=\"the gate\", charset=\"UTF-8\"\r\n");
}

/* The slow check on a real loop's thread pool, as pt_http runs it. */
static int verified;
static void on_verified(void *ud)
{
    (*(int *)ud)++;
}

PT_CASE(verify_on_loop)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    req_t r = R(1, "Authorization", basic("gateway:gateway-demo"));
    pt_security_request_t req = {.header = header, .ud = &r};
    const pt_security_def_t *d = pt_security_find(cfg->security, "upstream");
    PT_CHECK_INT(pt_security_check(cfg->security, d, &req, &res), PT_SECURITY_VERIFY);
    PT_CHECK(res.verify != NULL);
    PT_CHECK_INT(pt_security_verify(&loop, res.verify, on_verified, &verified), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    PT_CHECK_INT(verified, 1);
    PT_CHECK_INT(pt_security_check(cfg->security, d, &req, &res), 0);
    PT_CHECK_STR(res.username, "gateway");
    /* a job that is dropped frees what it holds */
    r = R(1, "Authorization", basic("gateway:other"));
    PT_CHECK_INT(pt_security_check(cfg->security, d, &req, &res), PT_SECURITY_VERIFY);
    pt_security_verify_free(res.verify);
    uv_loop_close(&loop);
}

PT_CASE(trusted_gateway)
{
    const char *gw = basic("gateway:gateway-demo");
    /* the gateway names the end user */
    PT_CHECK_INT(
        check(cfg, "upstream", R(2, "Authorization", gw, "X-Portico-Username", "john.doe")), 0);
    PT_CHECK_STR(res.username, "john.doe");
    PT_CHECK_STR(res.gateway, "gateway");
    /* without the header the gateway is the caller */
    PT_CHECK_INT(check(cfg, "upstream", R(1, "Authorization", gw)), 0);
    PT_CHECK_STR(res.username, "gateway");
    PT_CHECK_STR(res.gateway, "");
    /* the header alone proves nothing */
    PT_CHECK_INT(check(cfg, "upstream", R(1, "x-portico-username", "john.doe")),
                 PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 401);
    PT_CHECK_INT(
        check(cfg, "upstream",
              R(2, "Authorization", basic("gateway:wrong"), "x-portico-username", "john.doe")),
        PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 401);
    PT_CHECK_STR(res.username, "");
    /* a bad or doubled name */
    PT_CHECK_INT(check(cfg, "upstream", R(2, "Authorization", gw, "x-portico-username", "a\tb")),
                 PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 400);
    PT_CHECK_INT(
        check(cfg, "upstream",
              R(3, "Authorization", gw, "x-portico-username", "a", "x-portico-username", "b")),
        PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 400);
    /* from callers whose definition does not trust it: 403, whoever they are */
    PT_CHECK_INT(
        check(cfg, "direct",
              R(2, "Authorization", basic("john.doe:secret"), "x-portico-username", "admin")),
        PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 403);
    PT_CHECK_STR(res.username, "");
    PT_CHECK_INT(check(cfg, NULL, R(1, "x-portico-username", "admin")), PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 403);
    PT_CHECK_INT(check(cfg, "keys", R(2, "x-api-key", "key-one", "x-portico-username", "admin")),
                 PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 403);
    /* another definition's header is refused everywhere else too, even where
     * x-portico-username is trusted */
    PT_CHECK_INT(check(cfg, "upstream", R(2, "Authorization", gw, "x-end-user", "x")),
                 PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 403);
    PT_CHECK_INT(check(cfg, NULL, R(1, "X-End-User", "x")), PT_SECURITY_REFUSE);
    PT_CHECK_INT(
        check(cfg, "env.only", R(2, "Authorization", basic("ci:env-pass"), "x-end-user", "mary")),
        0);
    PT_CHECK_STR(res.username, "mary");
    PT_CHECK_STR(res.gateway, "ci");
    PT_CHECK_INT(check(cfg, "env.only",
                       R(2, "Authorization", basic("ci:env-pass"), "x-portico-username", "mary")),
                 PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 403);
    /* an open channel with no such header lets anyone through, anonymous */
    PT_CHECK_INT(check(cfg, NULL, R(1, "x-other", "1")), 0);
    PT_CHECK_STR(res.username, "");
}

PT_CASE(api_key)
{
    PT_CHECK_INT(check(cfg, "keys", R(1, "X-API-KEY", "key-one")), 0);
    PT_CHECK_STR(res.username, "acme");
    PT_CHECK_STR(res.hide_header, "x-api-key");
    PT_CHECK_INT(check(cfg, "keys", R(1, "x-api-key", "key-two")), 0);
    PT_CHECK_STR(res.username, "beta");
    PT_CHECK_INT(check(cfg, "keys", R(1, "x-api-key", "key-one ")), PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 401);
    PT_CHECK_STR(res.message, "unknown API key");
    PT_CHECK_STR(res.extra, "WWW-Authenticate: Key realm=\"portico\"\r\n");
    PT_CHECK_INT(check(cfg, "keys", R(1, "Authorization", "key-one")), PT_SECURITY_REFUSE);
    PT_CHECK_STR(res.message, "API key required");
    PT_CHECK_INT(check(cfg, "keys", R(2, "x-api-key", "key-one", "x-api-key", "key-two")),
                 PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 400);
    /* a key from another way in (a WebSocket query parameter) */
    PT_CHECK_INT(check2(cfg, "keys", R(0), "key-two", NULL), 0);
    PT_CHECK_STR(res.username, "beta");
    PT_CHECK_INT(check2(cfg, "keys", R(0), "key-three", NULL), PT_SECURITY_REFUSE);
}

PT_CASE(jwt_tokens)
{
    char p[512];
    long now = (long)time(NULL);
    snprintf(p, sizeof p,
             "{\"preferred_username\":\"mary\",\"iss\":\"https://id.example\","
             "\"aud\":\"portico\",\"exp\":%ld,\"nbf\":%ld}",
             now + 60, now - 5);
    char good[4096]; /* jwt() reuses its buffers */
    snprintf(good, sizeof good, "%s", jwt("HS256", p, NULL));
    PT_CHECK_INT(check(cfg, "hs", R(1, "Authorization", bearer(good))), 0);
    PT_CHECK_STR(res.username, "mary");
    PT_CHECK_INT(check2(cfg, "hs", R(0), good, NULL), 0); /* from a query parameter */

    /* every refusal is a 401 with a Bearer challenge */
#define REFUSED(req, msg)                                                                          \
    do {                                                                                           \
        PT_CHECK_INT(check(cfg, "hs", req), PT_SECURITY_REFUSE);                                   \
        PT_CHECK_INT(res.status, 401);                                                             \
        PT_CHECK_STR(res.message, msg);                                                            \
        PT_CHECK(!strncmp(res.extra, "WWW-Authenticate: Bearer realm=\"portico\"", 40));           \
    } while (0)

    REFUSED(R(0), "bearer token required");
    REFUSED(R(1, "Authorization", good), "expected a Bearer token");
    REFUSED(R(1, "Authorization", "Bearer abc.def"), "malformed token");
    REFUSED(R(1, "Authorization", "Bearer a.b.c.d"), "malformed token");

    /* expired (leeway 0) and not yet valid */
    snprintf(p, sizeof p,
             "{\"preferred_username\":\"mary\",\"iss\":\"https://id.example\","
             "\"aud\":\"portico\",\"exp\":%ld}",
             now - 1);
    REFUSED(R(1, "Authorization", bearer(jwt("HS256", p, NULL))), "token expired");
    snprintf(p, sizeof p,
             "{\"preferred_username\":\"mary\",\"iss\":\"https://id.example\","
             "\"aud\":\"portico\",\"exp\":%ld,\"nbf\":%ld}",
             now + 600, now + 300);
    REFUSED(R(1, "Authorization", bearer(jwt("HS256", p, NULL))), "token not valid yet");
    snprintf(
        p, sizeof p,
        "{\"preferred_username\":\"mary\",\"iss\":\"https://id.example\",\"aud\":\"portico\"}");
    REFUSED(R(1, "Authorization", bearer(jwt("HS256", p, NULL))), "token has no exp claim");
    snprintf(p, sizeof p,
             "{\"preferred_username\":\"mary\",\"iss\":\"https://id.example\","
             "\"aud\":\"portico\",\"exp\":\"%ld\"}",
             now + 60);
    REFUSED(R(1, "Authorization", bearer(jwt("HS256", p, NULL))), "token exp is not a number");

    /* tampered: the payload changed after signing */
    char tampered[4096];
    snprintf(p, sizeof p,
             "{\"preferred_username\":\"root\",\"iss\":\"https://id.example\","
             "\"aud\":\"portico\",\"exp\":%ld}",
             now + 60);
    const char *evil = jwt("HS256", p, NULL);
    const char *d1 = strchr(good, '.'), *d2 = strrchr(good, '.');
    const char *e1 = strchr(evil, '.'), *e2 = strrchr(evil, '.');
    snprintf(tampered, sizeof tampered, "%.*s%.*s%s", (int)(d1 - good), good, (int)(e2 - e1), e1,
             d2);
    REFUSED(R(1, "Authorization", bearer(tampered)), "invalid token signature");
    /* a flipped signature byte */
    snprintf(tampered, sizeof tampered, "%s", good);
    char *last = tampered + strlen(tampered) - 2;
    *last = *last == 'A' ? 'B' : 'A';
    REFUSED(R(1, "Authorization", bearer(tampered)), "invalid token signature");

    /* alg=none, with or without a signature, and the other algorithm */
    snprintf(p, sizeof p,
             "{\"preferred_username\":\"mary\",\"iss\":\"https://id.example\","
             "\"aud\":\"portico\",\"exp\":%ld}",
             now + 60);
    REFUSED(R(1, "Authorization", bearer(jwt("none", p, NULL))), "token algorithm not accepted");
    const char *none = jwt("none", p, NULL);
    snprintf(tampered, sizeof tampered, "%.*s%s", (int)(strrchr(none, '.') - none), none, d2);
    REFUSED(R(1, "Authorization", bearer(tampered)), "token algorithm not accepted");
    REFUSED(R(1, "Authorization", bearer(jwt("RS256", p, NULL))), "token algorithm not accepted");

    /* issuer, audience (a list in the token works), the username claim */
    snprintf(p, sizeof p,
             "{\"preferred_username\":\"mary\",\"iss\":\"https://evil.example\","
             "\"aud\":\"portico\",\"exp\":%ld}",
             now + 60);
    REFUSED(R(1, "Authorization", bearer(jwt("HS256", p, NULL))), "token issuer not accepted");
    snprintf(p, sizeof p,
             "{\"preferred_username\":\"mary\",\"iss\":\"https://id.example\","
             "\"aud\":\"someone-else\",\"exp\":%ld}",
             now + 60);
    REFUSED(R(1, "Authorization", bearer(jwt("HS256", p, NULL))), "token audience not accepted");
    snprintf(p, sizeof p,
             "{\"preferred_username\":\"mary\",\"iss\":\"https://id.example\","
             "\"aud\":[\"x\",\"other\"],\"exp\":%ld}",
             now + 60);
    PT_CHECK_INT(check(cfg, "hs", R(1, "Authorization", bearer(jwt("HS256", p, NULL)))), 0);
    snprintf(p, sizeof p,
             "{\"sub\":\"mary\",\"iss\":\"https://id.example\",\"aud\":\"portico\",\"exp\":%ld}",
             now + 60);
    REFUSED(R(1, "Authorization", bearer(jwt("HS256", p, NULL))),
            "token has no usable username claim");
    snprintf(p, sizeof p,
             "{\"preferred_username\":\"\",\"iss\":\"https://id.example\",\"aud\":\"portico\","
             "\"exp\":%ld}",
             now + 60);
    REFUSED(R(1, "Authorization", bearer(jwt("HS256", p, NULL))),
            "token has no usable username claim");
#undef REFUSED

    /* RS256: the configured key only; no expiry needed by this definition */
    PT_CHECK_INT(
        check(cfg, "rs", R(1, "Authorization", bearer(jwt("RS256", "{\"sub\":\"svc-a\"}", NULL)))),
        0);
    PT_CHECK_STR(res.username, "svc-a");
    PT_CHECK_INT(
        check(cfg, "rs",
              R(1, "Authorization", bearer(jwt("RS256", "{\"sub\":\"svc-a\"}", other_rsa_key)))),
        PT_SECURITY_REFUSE);
    PT_CHECK_STR(res.message, "invalid token signature");
    snprintf(p, sizeof p, "{\"sub\":\"svc-a\",\"exp\":%ld}", now - 100);
    PT_CHECK_INT(check(cfg, "rs", R(1, "Authorization", bearer(jwt("RS256", p, NULL)))),
                 PT_SECURITY_REFUSE);
    PT_CHECK_STR(res.message, "token expired");
    /* key confusion: HS256 signed with the RSA public key as the secret */
    PT_CHECK_INT(
        check(cfg, "rs", R(1, "Authorization", bearer(jwt("HS256", "{\"sub\":\"svc-a\"}", NULL)))),
        PT_SECURITY_REFUSE);
    PT_CHECK_STR(res.message, "token algorithm not accepted");
}

/* ---- the bounds on password checks ---- */

/* A definition of its own per test (user names are counted per definition
 * name, and the counts outlive a config), with the given hash_checks. */
static const char *GATE_CONFIG = "security:\n"
                                 "  hash_checks: {%s}\n"
                                 "  basic_auth:\n"
                                 "    - name: %s\n"
                                 "      users:\n"
                                 "        - username: john.doe\n"
                                 "          password_hash: \"%s\"\n"
                                 "        - username: mary\n"
                                 "          password_hash: \"%s\"\n";

static char gate_hash[128];

static pt_config_t *gate_config(const char *def, const char *hash_checks)
{
    char text[1024];
    snprintf(text, sizeof text, GATE_CONFIG, hash_checks, def, gate_hash, gate_hash);
    return load(text);
}

/* Presents user_pass from peer (NULL: not known) to the definition called
 * def; returns pt_security_check's answer, and the job it asked for in
 * *job (NULL when none). */
static int gate_check(pt_config_t *cfg, const char *def, const char *peer, const char *user_pass,
                      pt_security_verify_t **job)
{
    req_t r = R(1, "Authorization", basic(user_pass));
    pt_security_request_t req = {.header = header, .ud = &r, .peer = peer};
    int rc = pt_security_check(cfg->security, pt_security_find(cfg->security, def), &req, &res);
    *job = rc == PT_SECURITY_VERIFY ? res.verify : NULL;
    return rc;
}

/* One failed check from peer, run here: the address is no longer clean. */
static void gate_fail(pt_config_t *cfg, const char *def, const char *peer)
{
    static int n;
    char up[64];
    pt_security_verify_t *job;
    snprintf(up, sizeof up, "john.doe:wrong-%d", n++);
    PT_CHECK_INT(gate_check(cfg, def, peer, up, &job), PT_SECURITY_VERIFY);
    if (job) pt_security_verify_now(job);
}

static uint64_t throttled(int why)
{
    return __atomic_load_n(&pt_metrics_auth_throttled[why], __ATOMIC_RELAXED);
}

PT_CASE(gate_per_address)
{
    pt_config_t *cfg = gate_config("ga", "per_address: 2, per_user: 100, failures_per_address: 0");
    PT_CHECK(cfg != NULL);
    if (!cfg) return;
    pt_security_verify_t *a, *b, *c, *d, *e, *f;
    uint64_t before = throttled(PT_METRICS_AUTH_ADDRESS);
    PT_CHECK_INT(gate_check(cfg, "ga", "10.1.0.1", "john.doe:w1", &a), PT_SECURITY_VERIFY);
    PT_CHECK_INT(gate_check(cfg, "ga", "10.1.0.1", "mary:w2", &b), PT_SECURITY_VERIFY);
    /* a third from the address, whichever name: 429 before any hashing */
    PT_CHECK_INT(gate_check(cfg, "ga", "10.1.0.1", "nobody:w3", &c), PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 429);
    PT_CHECK_STR(res.message, "too many password checks: try again later");
    PT_CHECK_STR(res.extra, "Retry-After: 1\r\n");
    PT_CHECK(c == NULL);
    PT_CHECK_INT(gate_check(cfg, "ga", "10.1.0.1", "john.doe:secret", &c), PT_SECURITY_REFUSE);
    PT_CHECK_INT(throttled(PT_METRICS_AUTH_ADDRESS), before + 2);
    /* a credential already being checked (by another worker) is no new
     * guess: it is let through to wait for its own run */
    PT_CHECK_INT(gate_check(cfg, "ga", "10.1.0.1", "john.doe:w1", &c), PT_SECURITY_VERIFY);
    pt_security_verify_free(c);
    /* another address is not held back */
    PT_CHECK_INT(gate_check(cfg, "ga", "10.1.0.2", "nobody:w4", &c), PT_SECURITY_VERIFY);
    /* a job dropped unrun gives its place back */
    pt_security_verify_free(a);
    PT_CHECK_INT(gate_check(cfg, "ga", "10.1.0.1", "nobody:w5", &a), PT_SECURITY_VERIFY);

    /* IPv6 addresses count by their /64; IPv4 mapped into IPv6 is IPv4 */
    PT_CHECK_INT(gate_check(cfg, "ga", "2001:db8:1:2::1", "mary:v1", &d), PT_SECURITY_VERIFY);
    PT_CHECK_INT(gate_check(cfg, "ga", "2001:db8:1:2:ffff::9", "mary:v2", &e), PT_SECURITY_VERIFY);
    PT_CHECK_INT(gate_check(cfg, "ga", "2001:db8:1:2:abcd::5", "mary:v3", &f), PT_SECURITY_REFUSE);
    PT_CHECK_INT(gate_check(cfg, "ga", "2001:db8:1:3::1", "mary:v4", &f), PT_SECURITY_VERIFY);
    pt_security_verify_free(f);
    pt_security_verify_free(d);
    pt_security_verify_free(e);
    PT_CHECK_INT(gate_check(cfg, "ga", "::ffff:10.1.0.3", "mary:m1", &d), PT_SECURITY_VERIFY);
    PT_CHECK_INT(gate_check(cfg, "ga", "10.1.0.3", "mary:m2", &e), PT_SECURITY_VERIFY);
    PT_CHECK_INT(gate_check(cfg, "ga", "10.1.0.3", "mary:m3", &f), PT_SECURITY_REFUSE);
    pt_security_verify_free(d);
    pt_security_verify_free(e);
    /* an address that is not known is not bounded as an address */
    pt_security_verify_t *u[3];
    for (int i = 0; i < 3; i++) {
        char up[32];
        snprintf(up, sizeof up, "mary:n%d", i);
        PT_CHECK_INT(gate_check(cfg, "ga", i ? NULL : "", up, &u[i]), PT_SECURITY_VERIFY);
    }
    for (int i = 0; i < 3; i++)
        pt_security_verify_free(u[i]);
    pt_security_verify_free(a);
    pt_security_verify_free(b);
    pt_security_verify_free(c);
    pt_config_free(cfg);
}

PT_CASE(gate_per_user)
{
    pt_config_t *cfg = gate_config("gu", "per_address: 100, per_user: 1, failures_per_address: 0");
    PT_CHECK(cfg != NULL);
    if (!cfg) return;
    pt_security_verify_t *a, *b, *c, *d, *x;
    gate_fail(cfg, "gu", "10.2.0.9"); /* 10.2.0.9 failed a check: no longer clean */
    uint64_t before = throttled(PT_METRICS_AUTH_USER);
    PT_CHECK_INT(gate_check(cfg, "gu", "10.2.0.1", "john.doe:w1", &a), PT_SECURITY_VERIFY);
    /* john.doe has his one check under way: an address that failed waits */
    PT_CHECK_INT(gate_check(cfg, "gu", "10.2.0.9", "john.doe:w2", &x), PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 429);
    PT_CHECK_INT(throttled(PT_METRICS_AUTH_USER), before + 1);
    /* other names are free */
    PT_CHECK_INT(gate_check(cfg, "gu", "10.2.0.9", "mary:w3", &b), PT_SECURITY_VERIFY);
    /* a clean address is not held back by what others do with the name */
    PT_CHECK_INT(gate_check(cfg, "gu", "10.2.0.2", "john.doe:secret", &c), PT_SECURITY_VERIFY);
    /* an unknown name is bounded the same way as a known one */
    PT_CHECK_INT(gate_check(cfg, "gu", "10.2.0.9", "ghost:w4", &d), PT_SECURITY_VERIFY);
    PT_CHECK_INT(gate_check(cfg, "gu", "10.2.0.9", "ghost:w5", &x), PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 429);
    PT_CHECK_INT(throttled(PT_METRICS_AUTH_USER), before + 2);
    pt_security_verify_free(a);
    pt_security_verify_free(b);
    pt_security_verify_free(c);
    pt_security_verify_free(d);
    pt_config_free(cfg);
}

PT_CASE(gate_failures)
{
    pt_config_t *cfg =
        gate_config("gf", "per_address: 100, failures_per_address: 2, failure_window: 1m");
    PT_CHECK(cfg != NULL);
    if (!cfg) return;
    uint64_t before = throttled(PT_METRICS_AUTH_FAILURES);
    /* two failures from each address, one with wrong passwords, one with
     * names that do not exist: the same count either way */
    const char *who[2][2] = {{"10.3.0.1", "john.doe:bad-%d"}, {"10.3.0.2", "ghost%d:bad"}};
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 2; i++) {
            char up[64];
            pt_security_verify_t *job;
            snprintf(up, sizeof up, who[k][1], i);
            PT_CHECK_INT(gate_check(cfg, "gf", who[k][0], up, &job), PT_SECURITY_VERIFY);
            if (job) pt_security_verify_now(job);
            /* the refusal is cached: presenting it again costs nothing */
            PT_CHECK_INT(gate_check(cfg, "gf", who[k][0], up, &job), PT_SECURITY_REFUSE);
            PT_CHECK_INT(res.status, 401);
        }
        /* the budget is spent: even the right password waits, for about the
         * time it takes the window to forgive one failure (60 s / 2) */
        pt_security_verify_t *job;
        PT_CHECK_INT(gate_check(cfg, "gf", who[k][0], "mary:secret", &job), PT_SECURITY_REFUSE);
        PT_CHECK_INT(res.status, 429);
        unsigned retry = 0;
        PT_CHECK(sscanf(res.extra, "Retry-After: %u\r\n", &retry) == 1);
        PT_CHECK(retry >= 25 && retry <= 30);
    }
    PT_CHECK_INT(throttled(PT_METRICS_AUTH_FAILURES), before + 2);
    /* the same guess checked twice at once (on two workers) is one failure */
    pt_security_verify_t *j1, *j2;
    PT_CHECK_INT(gate_check(cfg, "gf", "10.3.0.4", "john.doe:twice", &j1), PT_SECURITY_VERIFY);
    PT_CHECK_INT(gate_check(cfg, "gf", "10.3.0.4", "john.doe:twice", &j2), PT_SECURITY_VERIFY);
    if (j1) pt_security_verify_now(j1);
    if (j2) pt_security_verify_now(j2);
    PT_CHECK_INT(gate_check(cfg, "gf", "10.3.0.4", "john.doe:once", &j1), PT_SECURITY_VERIFY);
    if (j1) pt_security_verify_now(j1);
    PT_CHECK_INT(gate_check(cfg, "gf", "10.3.0.4", "mary:secret", &j1), PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 429);
    /* other addresses are not affected, and successes are no failures */
    for (int i = 0; i < 4; i++) {
        char up[64];
        pt_security_verify_t *job;
        snprintf(up, sizeof up, "%s:secret", i % 2 ? "mary" : "john.doe");
        PT_CHECK_INT(gate_check(cfg, "gf", "10.3.0.3", up, &job), i < 2 ? PT_SECURITY_VERIFY : 0);
        if (job) pt_security_verify_now(job);
    }
    pt_config_free(cfg);
}

PT_CASE(gate_total)
{
    /* total 4: a quarter is kept for clean addresses */
    pt_config_t *cfg = gate_config("gt", "total: 4, failures_per_address: 0");
    PT_CHECK(cfg != NULL);
    if (!cfg) return;
    pt_security_verify_t *held[4], *x;
    gate_fail(cfg, "gt", "10.4.0.9");
    uint64_t before = throttled(PT_METRICS_AUTH_TOTAL);
    for (int i = 0; i < 3; i++) {
        char peer[32], up[32];
        snprintf(peer, sizeof peer, "10.4.0.%d", i + 1);
        snprintf(up, sizeof up, "mary:t%d", i);
        PT_CHECK_INT(gate_check(cfg, "gt", peer, up, &held[i]), PT_SECURITY_VERIFY);
    }
    PT_CHECK_INT(gate_check(cfg, "gt", "10.4.0.9", "john.doe:t9", &x), PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 429);
    PT_CHECK_INT(gate_check(cfg, "gt", "10.4.0.4", "john.doe:secret", &held[3]),
                 PT_SECURITY_VERIFY);
    PT_CHECK_INT(gate_check(cfg, "gt", "10.4.0.5", "john.doe:t5", &x), PT_SECURITY_REFUSE);
    PT_CHECK_INT(throttled(PT_METRICS_AUTH_TOTAL), before + 2);
    for (int i = 0; i < 4; i++)
        pt_security_verify_free(held[i]);
    PT_CHECK_INT(gate_check(cfg, "gt", "10.4.0.9", "john.doe:t9", &x), PT_SECURITY_VERIFY);
    pt_security_verify_free(x);
    pt_config_free(cfg);
}

/* Checks kept back from the pool run clean addresses' first. The test runs
 * with a pool of one thread, so this thread hands the pool one at a time. */
static int order[8], n_order;
static void on_ordered(void *ud)
{
    order[n_order++] = (int)(intptr_t)ud;
}

PT_CASE(gate_clean_first)
{
    pt_config_t *cfg = gate_config("gq", "failures_per_address: 0");
    PT_CHECK(cfg != NULL);
    if (!cfg) return;
    uv_loop_t loop;
    uv_loop_init(&loop);
    gate_fail(cfg, "gq", "10.6.0.8");
    gate_fail(cfg, "gq", "10.6.0.9");
    uint64_t hashes = __atomic_load_n(&pt_metrics_auth_hash_checks, __ATOMIC_RELAXED);
    static const struct {
        const char *peer, *up;
    } jobs[] = {{"10.6.0.9", "john.doe:q1"}, /* runs at once */
                {"10.6.0.9", "mary:q2"},     /* kept back */
                {"10.6.0.8", "john.doe:q3"}, /* kept back */
                {"10.6.0.1", "mary:secret"}, /* clean: kept back, but ahead */
                {"10.6.0.2", "ghost:q5"}};   /* clean too, and unknown */
    for (int i = 0; i < 5; i++) {
        pt_security_verify_t *job;
        PT_CHECK_INT(gate_check(cfg, "gq", jobs[i].peer, jobs[i].up, &job), PT_SECURITY_VERIFY);
        if (job)
            PT_CHECK_INT(pt_security_verify(&loop, job, on_ordered, (void *)(intptr_t)(i + 1)), 0);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    PT_CHECK_INT(n_order, 5);
    PT_CHECK_INT(order[0], 1);
    PT_CHECK_INT(order[1], 4);
    PT_CHECK_INT(order[2], 5);
    PT_CHECK_INT(order[3], 2);
    PT_CHECK_INT(order[4], 3);
    /* every one cost a hash run, the unknown name too */
    PT_CHECK_INT(__atomic_load_n(&pt_metrics_auth_hash_checks, __ATOMIC_RELAXED), hashes + 5);
    pt_security_verify_t *job;
    PT_CHECK_INT(gate_check(cfg, "gq", "10.6.0.1", "mary:secret", &job), 0);
    uv_loop_close(&loop);
    pt_config_free(cfg);
}

PT_CASE(reload_forgets)
{
    /* a new compiled config has a new cache key: nothing verified before counts */
    pt_config_t *again = load(text);
    PT_CHECK(again != NULL);
    if (!again) return;
    int slow;
    PT_CHECK_INT(
        check2(again, "direct", R(1, "Authorization", basic("john.doe:secret")), NULL, &slow), 0);
    PT_CHECK_INT(slow, 1);
    pt_config_free(again);
}

int main(void)
{
    if (sodium_init() < 0 || !mkdtemp(tmpdir)) return 1;
    setenv("UV_THREADPOOL_SIZE", "1", 1); /* gate_clean_first */
    setenv("PT_TEST_PW", "env-pass", 1);
    setenv("PT_TEST_KEY", "key-two", 1);

    /* keys for the JWT definitions */
    rsa_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    other_rsa_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    char path[600];
    snprintf(path, sizeof path, "%s/rsa.pem", tmpdir);
    FILE *f = fopen(path, "w");
    PEM_write_PUBKEY(f, rsa_key);
    fclose(f);
    write_file("hs.secret", "0123456789abcdef0123456789abcdef-hs256\n");

    char gw_hash[128], john_hash[128], key_hash[128];
    pt_security_hash_password("gateway-demo", 12, gw_hash);
    pt_security_hash_password("secret", 6, john_hash);
    pt_security_hash_api_key("key-one", 7, key_hash);
    text = malloc(8192);
    snprintf(text, 8192, CONFIG, gw_hash, john_hash, key_hash);
    cfg = load(text);
    PT_CHECK(cfg != NULL);
    if (cfg) {
        PT_RUN(definitions_are_found);
        PT_RUN(basic_auth);
        PT_RUN(verify_on_loop);
        PT_RUN(trusted_gateway);
        PT_RUN(api_key);
        PT_RUN(jwt_tokens);
        PT_RUN(reload_forgets);
        pt_config_free(cfg);
    }
    pt_security_hash_password("secret", 6, gate_hash);
    PT_RUN(gate_per_address);
    PT_RUN(gate_per_user);
    PT_RUN(gate_failures);
    PT_RUN(gate_total);
    PT_RUN(gate_clean_first);
    free(text);
    EVP_PKEY_free(rsa_key);
    EVP_PKEY_free(other_rsa_key);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tmpdir);
    return PT_TEST_DONE();
}
