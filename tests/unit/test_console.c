/* The console's pieces without a server: the reload ring keeps the last
 * PT_CONSOLE_RELOADS newest first, a file's record follows its loads and
 * refusals, the CSRF checks of a POST, and the credential check's answers. */
#include "pt_admin_console.h"
#include "pt_security_hash.h"
#include "pt_server_console.h"
#include "pt_test.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

PT_CASE(the_reload_ring_keeps_the_last_ones_newest_first)
{
    pt_console_t c = {0};
    pt_config_t cfg = {.path = "x.yaml", .listen_host = "127.0.0.1", .listen_port = 1};
    char why[32];
    for (int i = 1; i <= PT_CONSOLE_RELOADS + 5; i++) {
        snprintf(why, sizeof why, "reason %d", i);
        pt_console_reload(&c, i % 2 ? "admin" : "signal", NULL, i % 2, (uint64_t)i, why);
    }
    pt_buf_t out = {0};
    pt_console_state(&c, &cfg, 9, 2, &out);
    json_error_t je;
    json_t *j = json_loadb(out.data, out.len, 0, &je);
    PT_CHECK(j != NULL);
    json_t *r = json_object_get(j, "reloads");
    PT_CHECK_INT((int)json_array_size(r), PT_CONSOLE_RELOADS);
    PT_CHECK_INT((int)json_integer_value(json_object_get(json_array_get(r, 0), "generation")),
                 PT_CONSOLE_RELOADS + 5);
    PT_CHECK_INT((int)json_integer_value(
                     json_object_get(json_array_get(r, PT_CONSOLE_RELOADS - 1), "generation")),
                 6);
    PT_CHECK_STR(json_string_value(json_object_get(json_array_get(r, 0), "error")), "reason 37");
    PT_CHECK_INT((int)json_integer_value(json_object_get(j, "reloads_total")),
                 PT_CONSOLE_RELOADS + 5);
    json_decref(j);
    pt_buf_free(&out);
    pt_console_free(&c);
}

PT_CASE(a_file_record_follows_loads_and_refusals)
{
    pt_console_t c = {0};
    pt_console_file_failed(&c, "/s/a.lua", "a.lua:3: syntax error \"here\"");
    PT_CHECK_INT((int)c.n_files, 1);
    PT_CHECK_STR(c.files[0].error, "a.lua:3: syntax error \"here\"");
    PT_CHECK(c.files[0].loaded_ms == 0);
    pt_buf_t out = {0};
    pt_config_t cfg = {.path = "x.yaml", .listen_host = "127.0.0.1", .listen_port = 1};
    pt_console_state(&c, &cfg, 1, 1, &out);
    json_error_t je;
    json_t *j = json_loadb(out.data, out.len, 0, &je);
    PT_CHECK(j != NULL); /* the quote in the error is escaped */
    PT_CHECK(
        json_is_null(json_object_get(json_array_get(json_object_get(j, "services"), 0), "hash")));
    json_decref(j);
    pt_buf_free(&out);
    pt_console_file_removed(&c, "/s/a.lua");
    PT_CHECK_INT((int)c.n_files, 0);
    pt_console_free(&c);
}

PT_CASE(csrf_checks_of_a_post)
{
    pt_config_admin_t open = {0}, users = {.n_users = 1};
    pt_buf_t b = {0};
    pt_admin_headers_t h = {0};
    PT_CHECK_INT(pt_admin_console_csrf(&open, &h, &b), 0); /* curl, no users */
    PT_CHECK_INT(pt_admin_console_csrf(&users, &h, &b), 403);
    h.console = "1";
    PT_CHECK_INT(pt_admin_console_csrf(&users, &h, &b), 0);
    h.host = "127.0.0.1:9";
    h.origin = "http://127.0.0.1:9";
    PT_CHECK_INT(pt_admin_console_csrf(&users, &h, &b), 0);
    h.origin = "http://127.0.0.1:9.evil";
    PT_CHECK_INT(pt_admin_console_csrf(&open, &h, &b), 403);
    h.origin = "null";
    PT_CHECK_INT(pt_admin_console_csrf(&open, &h, &b), 403);
    h.origin = NULL;
    h.sec_fetch_site = "same-site";
    PT_CHECK_INT(pt_admin_console_csrf(&open, &h, &b), 403);
    h.sec_fetch_site = "same-origin";
    PT_CHECK_INT(pt_admin_console_csrf(&open, &h, &b), 0);
    pt_buf_free(&b);
}

PT_CASE(credentials_are_checked_then_remembered)
{
    char hash[128];
    PT_CHECK_INT(pt_security_hash_password("pw", 2, hash), 0);
    pt_admin_user_t u = {.username = "ops", .password_hash = hash};
    pt_config_admin_t cfg = {.users = &u, .n_users = 1, .open_probes = 1};
    pt_buf_t b = {0}, h = {0};
    pt_admin_headers_t hd = {.authorization = "Basic b3BzOnB3"}; /* ops:pw */
    PT_CHECK_INT(pt_admin_console_auth(&cfg, &hd, 100000, &b, &h), 0);
    PT_CHECK_INT(pt_admin_console_auth(&cfg, &hd, 100001, &b, &h), 0); /* remembered */
    hd.authorization = "Basic b3BzOnB4";                               /* ops:px */
    PT_CHECK_INT(pt_admin_console_auth(&cfg, &hd, 100002, &b, &h), 401);
    PT_CHECK(strstr(h.data, "WWW-Authenticate: Basic") != NULL);
    hd.authorization = "Basic b3Bz"; /* no colon */
    PT_CHECK_INT(pt_admin_console_auth(&cfg, &hd, 100003, &b, &h), 401);
    /* past PT_ADMIN_AUTH_PER_SEC uncached checks in a second: 429 */
    hd.authorization = "Basic b3BzOnB4";
    int last = 0;
    for (int i = 0; i < PT_ADMIN_AUTH_PER_SEC + 1; i++)
        last = pt_admin_console_auth(&cfg, &hd, 100004, &b, &h);
    PT_CHECK_INT(last, 429);
    hd.authorization = "Basic b3BzOnB3"; /* the remembered one still passes */
    PT_CHECK_INT(pt_admin_console_auth(&cfg, &hd, 100005, &b, &h), 0);
    PT_CHECK_INT(pt_admin_console_auth(&cfg, &hd, 100000 + PT_ADMIN_AUTH_TTL_MS + 2000, &b, &h), 0);
    PT_CHECK(pt_admin_console_protected(&cfg, "/metrics", 8) == 0);
    PT_CHECK(pt_admin_console_protected(&cfg, "/", 1) == 1);
    cfg.open_probes = 0;
    PT_CHECK(pt_admin_console_protected(&cfg, "/metrics", 8) == 1);
    pt_buf_free(&b);
    pt_buf_free(&h);
}

int main(void)
{
    PT_RUN(the_reload_ring_keeps_the_last_ones_newest_first);
    PT_RUN(a_file_record_follows_loads_and_refusals);
    PT_RUN(csrf_checks_of_a_post);
    PT_RUN(credentials_are_checked_then_remembered);
    return PT_TEST_DONE();
}
