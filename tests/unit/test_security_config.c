/* pt_security_config: reading the security: section, through a whole config
 * (the messages name the file and line) and through pt_security_parse alone. */
#include "pt_config.h"
#include "pt_security.h"
#include "pt_security_config.h"
#include "pt_test.h"
#include "pt_test_config.h"
#include "pt_yaml.h"

#include <sodium.h>

#include <stdlib.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/pt_test_security_config.XXXXXX";
static char err[1024];

/* pt_security_parse of the security: section of text; NULL with err set. */
static pt_security_t *parse(const char *text)
{
    yaml_document_t doc;
    pt_security_t *sec = NULL;
    if (pt_yaml_load("sec.yaml", text, strlen(text), &doc, err, sizeof err) != 0) return NULL;
    pt_yaml_t y = {
        .doc = &doc, .file = "sec.yaml", .dir = tmpdir, .err = err, .errlen = sizeof err};
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    yaml_node_t *node = root ? pt_yaml_get(&y, root, "security") : NULL;
    if (pt_security_parse(&doc, node, "sec.yaml", tmpdir, &sec, err, sizeof err) != 0) sec = NULL;
    yaml_document_delete(&doc);
    return sec;
}

static int header(void *ud, const char *name, const char **value, size_t *len)
{
    const char *want = ud;
    if (strcmp(name, want) != 0) return 0;
    *value = "someone";
    *len = 7;
    return 1;
}

PT_CASE(config_errors)
{
    PT_CHECK(pt_test_fails_in(tmpdir,
                              "security:\n  basic_auth:\n    - name: a\n      users:\n"
                              "        - username: u\n          password: x\n",
                              "bad.yaml:6: security.basic_auth[0].users[0]: no plain password"));
    PT_CHECK(pt_test_fails_in(tmpdir,
                              "security:\n  basic_auth:\n    - name: a\n      users:\n"
                              "        - username: u\n          password_hash: nope\n",
                              "bad.yaml:6: security.basic_auth[0].users[0].password_hash: not an "
                              "argon2id hash"));
    PT_CHECK(pt_test_fails_in(tmpdir,
                              "security:\n  basic_auth:\n    - name: a\n      users:\n"
                              "        - username: u\n          password_env: PT_TEST_UNSET_VAR\n",
                              "the environment variable PT_TEST_UNSET_VAR is not set"));
    PT_CHECK(pt_test_fails_in(tmpdir,
                              "security:\n  basic_auth:\n    - name: a\n      users:\n"
                              "        - username: 'a:b'\n          password_env: PT_TEST_PW\n",
                              "no ':'"));
    PT_CHECK(pt_test_fails_in(tmpdir,
                              "security:\n  basic_auth:\n    - name: a\n      users:\n"
                              "        - username: u\n          password_env: PT_TEST_PW\n"
                              "  api_key:\n    - name: a\n      header: x-key\n      keys:\n"
                              "        - username: u\n          key_env: PT_TEST_KEY\n",
                              "security definition name 'a' is used twice"));
    PT_CHECK(pt_test_fails_in(tmpdir,
                              "security:\n  api_key:\n    - name: k\n      header: x-key\n"
                              "      keys:\n        - username: u\n          key: abc\n",
                              "no plain key in the file"));
    PT_CHECK(pt_test_fails_in(tmpdir,
                              "security:\n  api_key:\n    - name: k\n      header: x-key\n"
                              "      keys:\n        - username: u\n          key_hash: abc\n",
                              "key_hash: expected blake2b:"));
    PT_CHECK(pt_test_fails_in(tmpdir, "security:\n  jwt:\n    - name: j\n      algorithm: none\n",
                              "algorithm: expected HS256 or RS256"));
    PT_CHECK(pt_test_fails_in(tmpdir,
                              "security:\n  jwt:\n    - name: j\n      algorithm: HS256\n"
                              "      secret_env: PT_TEST_PW\n",
                              "an HS256 secret needs at least 32 bytes"));
    PT_CHECK(pt_test_fails_in(tmpdir,
                              "security:\n  jwt:\n    - name: j\n      algorithm: HS256\n"
                              "      secret: abc\n",
                              "no plain secret in the file"));
    PT_CHECK(pt_test_fails_in(tmpdir,
                              "security:\n  basic_auth:\n    - name: a\n"
                              "      trust_username_header: Authorization\n      users:\n"
                              "        - username: u\n          password_env: PT_TEST_PW\n",
                              "not the Authorization header"));
    PT_CHECK(
        pt_test_fails_in(tmpdir,
                         "security:\n  api_key:\n    - name: k\n      header: x-user\n"
                         "      keys:\n        - username: u\n          key_env: PT_TEST_KEY\n"
                         "  basic_auth:\n    - name: a\n      trust_username_header: x-user\n"
                         "      users:\n        - username: u\n          password_env: "
                         "PT_TEST_PW\n",
                         "'x-user' is both a credential header and a trusted username header"));
    PT_CHECK(pt_test_fails_in(tmpdir,
                              "channels:\n  rest:\n    - name: r\n      url_path: /r\n"
                              "      service: s\n      security: nobody\n",
                              "bad.yaml:6: channels.rest[0].security: no security definition named "
                              "'nobody'"));
    PT_CHECK(pt_test_fails_in(tmpdir, "security:\n  bogus: []\n", "security: unknown key 'bogus'"));
    PT_CHECK(pt_test_fails_in(tmpdir, "security:\n  hash_checks: 4\n",
                              "bad.yaml:2: security.hash_checks: expected a mapping"));
    PT_CHECK(pt_test_fails_in(tmpdir, "security:\n  hash_checks: {per_ip: 4}\n",
                              "security.hash_checks: unknown key 'per_ip'"));
    PT_CHECK(pt_test_fails_in(tmpdir, "security:\n  hash_checks: {per_address: 0}\n",
                              "security.hash_checks.per_address: a whole number from 1 to 1024"));
    PT_CHECK(pt_test_fails_in(tmpdir, "security:\n  hash_checks: {per_user: -1}\n",
                              "security.hash_checks.per_user: a whole number from 1 to 1024"));
    PT_CHECK(pt_test_fails_in(tmpdir, "security:\n  hash_checks: {total: 5000}\n",
                              "security.hash_checks.total: a whole number from 1 to 1024"));
    PT_CHECK(pt_test_fails_in(tmpdir, "security:\n  hash_checks: {failures_per_address: 2x}\n",
                              "security.hash_checks.failures_per_address: a whole number"));
    PT_CHECK(pt_test_fails_in(tmpdir, "security:\n  hash_checks: {failure_window: 10ms}\n",
                              "security.hash_checks.failure_window: a duration from 1s to 24h"));
}

PT_CASE(no_section_is_an_empty_set)
{
    pt_security_t *sec = parse("server: {workers: 1}\n");
    PT_CHECK(sec != NULL);
    if (!sec) return;
    PT_CHECK(pt_security_find(sec, "anything") == NULL);
    /* the end-user header is refused from everyone all the same */
    pt_security_request_t req = {.header = header, .ud = (void *)PT_SECURITY_USERNAME_HEADER};
    pt_security_result_t res;
    PT_CHECK_INT(pt_security_check(sec, NULL, &req, &res), PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 403);
    pt_security_free(sec);
    pt_security_free(NULL);
}

PT_CASE(every_kind_is_read)
{
    pt_security_t *sec =
        parse("security:\n"
              "  jwt:\n"
              "    - {name: j, algorithm: HS256, secret_env: PT_TEST_SECRET}\n"
              "  api_key:\n"
              "    - name: k\n"
              "      header: X-Key\n"
              "      trust_username_header: X-End-User\n"
              "      keys: [{username: u, key_env: PT_TEST_KEY}]\n"
              "  basic_auth:\n"
              "    - {name: b, users: [{username: u, password_env: PT_TEST_PW}]}\n");
    PT_CHECK(sec != NULL);
    if (!sec) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    const char *names[] = {"b", "k", "j"};
    for (int i = 0; i < 3; i++) {
        const pt_security_def_t *d = pt_security_find(sec, names[i]);
        PT_CHECK(d != NULL);
        if (d) PT_CHECK_STR(pt_security_def_name(d), names[i]);
    }
    PT_CHECK(pt_security_find(sec, "B") == NULL);
    /* a trusted header named by one definition is refused on the others */
    pt_security_request_t req = {.header = header, .ud = "x-end-user"};
    pt_security_result_t res;
    PT_CHECK_INT(pt_security_check(sec, pt_security_find(sec, "b"), &req, &res),
                 PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 403);
    /* and on k it is believed only after the key: no key, 401 */
    PT_CHECK_INT(pt_security_check(sec, pt_security_find(sec, "k"), &req, &res),
                 PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 401);
    PT_CHECK_STR(res.message, "API key required");
    pt_security_free(sec);
}

/* One header, name: value, for the 401 lines below. */
static const char *one_header[2];

static int header_one(void *ud, const char *name, const char **value, size_t *len)
{
    if (!one_header[0] || strcmp(name, one_header[0]) != 0) return 0;
    *value = one_header[1];
    *len = strlen(one_header[1]);
    return 1;
}

/* The 401 of each kind, with nothing presented and with a wrong credential:
 * the lines are made when the definitions are read. */
PT_CASE(each_kind_challenges_in_its_words)
{
    pt_security_t *sec =
        parse("security:\n"
              "  jwt:\n"
              "    - {name: j, algorithm: HS256, secret_env: PT_TEST_SECRET}\n"
              "  api_key:\n"
              "    - {name: k, header: X-Key, realm: keys,"
              " keys: [{username: u, key_env: PT_TEST_KEY}]}\n"
              "  basic_auth:\n"
              "    - {name: b, users: [{username: u, password_env: PT_TEST_PW}]}\n");
    PT_CHECK(sec != NULL);
    if (!sec) return;
    static const struct {
        const char *def, *header, *value, *message, *line;
    } cases[] = {
        {"b", NULL, NULL, "authentication required",
         "WWW-Authenticate: Basic realm=\"portico\", charset=\"UTF-8\"\r\n"},
        {"b", "authorization", "Bearer x", "expected Basic credentials",
         "WWW-Authenticate: Basic realm=\"portico\", charset=\"UTF-8\"\r\n"},
        {"k", NULL, NULL, "API key required", "WWW-Authenticate: Key realm=\"keys\"\r\n"},
        {"k", "x-key", "wrong", "unknown API key", "WWW-Authenticate: Key realm=\"keys\"\r\n"},
        {"j", NULL, NULL, "bearer token required",
         "WWW-Authenticate: Bearer realm=\"portico\"\r\n"},
        {"j", "authorization", "Basic eDp5", "expected a Bearer token",
         "WWW-Authenticate: Bearer realm=\"portico\", error=\"invalid_token\"\r\n"},
        {"j", "authorization", "Bearer a.b", "malformed token",
         "WWW-Authenticate: Bearer realm=\"portico\", error=\"invalid_token\"\r\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        one_header[0] = cases[i].header;
        one_header[1] = cases[i].value;
        pt_security_request_t req = {.header = header_one};
        pt_security_result_t res;
        PT_CHECK_INT(pt_security_check(sec, pt_security_find(sec, cases[i].def), &req, &res),
                     PT_SECURITY_REFUSE);
        PT_CHECK_INT(res.status, 401);
        PT_CHECK_STR(res.message, cases[i].message);
        PT_CHECK_STR(res.extra, cases[i].line);
    }
    pt_security_free(sec);
}

PT_CASE(parse_errors_name_the_line)
{
    PT_CHECK(parse("security:\n  jwt: {}\n") == NULL);
    PT_CHECK_STR(err, "sec.yaml:2: security.jwt: expected a list");
    PT_CHECK(parse("security:\n  api_key:\n    - name: k\n      keys: []\n") == NULL);
    PT_CHECK(strstr(err, "sec.yaml:3: security.api_key[0].header: expected a header name") != NULL);
    PT_CHECK(parse("security:\n  jwt:\n    - {name: j, algorithm: RS256, secret_env: X}\n") ==
             NULL);
    PT_CHECK(strstr(err, "RS256 takes public_key") != NULL);
    PT_CHECK(parse("security:\n  jwt:\n    - {name: j, algorithm: HS256, public_key: x.pem}\n") ==
             NULL);
    PT_CHECK(strstr(err, "HS256 takes either secret_env or secret_file") != NULL);
}

int main(void)
{
    if (sodium_init() < 0 || !mkdtemp(tmpdir)) return 1;
    setenv("PT_TEST_PW", "env-pass", 1);
    setenv("PT_TEST_KEY", "key-two", 1);
    setenv("PT_TEST_SECRET", "0123456789abcdef0123456789abcdef", 1);
    PT_RUN(config_errors);
    PT_RUN(no_section_is_an_empty_set);
    PT_RUN(every_kind_is_read);
    PT_RUN(each_kind_challenges_in_its_words);
    PT_RUN(parse_errors_name_the_line);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tmpdir);
    return PT_TEST_DONE();
}
