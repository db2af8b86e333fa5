/* The pieces of the access and audit logs that need no server: address
 * ranges, query redaction, traceparent, JSON-path redaction and the cut. */
#include "pt_test.h"

#include "pt_accesslog.h"
#include "pt_audit.h"
#include "pt_config_obs.h"

static pt_cidr_t pt__range(int fam, const char *a, int prefix);

PT_CASE(cidr_ranges)
{
    pt_cidr_t set[2] = {pt__range(4, "10.0.0.0", 8), pt__range(6, "2001:db8::", 32)};
    PT_CHECK(pt_cidr_match(set, 2, "10.1.2.3", 8));
    PT_CHECK(!pt_cidr_match(set, 2, "11.1.2.3", 8));
    PT_CHECK(pt_cidr_match(set, 2, "2001:db8::1", 11));
    PT_CHECK(!pt_cidr_match(set, 2, "2001:db9::1", 11));
    PT_CHECK(!pt_cidr_match(set, 2, "10.1.2.3x", 9));
    PT_CHECK(!pt_cidr_match(set, 2, "", 0));
    pt_cidr_t odd = pt__range(4, "192.168.1.128", 25);
    PT_CHECK(pt_cidr_match(&odd, 1, "192.168.1.200", 13));
    PT_CHECK(!pt_cidr_match(&odd, 1, "192.168.1.100", 13));
}

PT_CASE(query_redaction)
{
    char *extra[] = {"session"};
    const char *q = "a=1&TOKEN=x&session=y&t%6Fken=z&flag&b=&key";
    pt_buf_t b = {0};
    pt_accesslog_redact_query(&b, q, strlen(q), extra, 1);
    PT_CHECK_STR(b.data, "a=1&TOKEN=[REDACTED]&session=[REDACTED]&t%6Fken=[REDACTED]&flag&b=&key");
    b.len = 0;
    pt_accesslog_redact_query(&b, "%zz=1&x=%zz", 11, NULL, 0); /* a name not decodable: hidden */
    PT_CHECK_STR(b.data, "%zz=[REDACTED]&x=%zz");
    pt_buf_free(&b);
}

PT_CASE(traceparent)
{
    char id[33];
    const char *ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    PT_CHECK(pt_audit_trace_id(ok, strlen(ok), id));
    PT_CHECK_STR(id, "4bf92f3577b34da6a3ce929d0e0e4736");
    const char *future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what";
    PT_CHECK(pt_audit_trace_id(future, strlen(future), id));
    const char *bad[] = {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                         "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                         "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                         "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                         "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                         ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        PT_CHECK(!pt_audit_trace_id(bad[i], strlen(bad[i]), id));
}

PT_CASE(json_paths_and_cut)
{
    char *k1[] = {"a", "b"}, *k2[] = {"pin"};
    pt_json_path_t paths[] = {{.keys = k1, .n = 2}, {.keys = k2, .n = 1, .deep = 1}};
    pt_config_obs_t o = {.audit_max_body = 4096, .redact_json = paths, .n_redact_json = 2};
    const char *body = "{\"a\":{\"b\":1,\"c\":2},\"l\":[{\"pin\":3}],\"password\":\"p\"}";
    pt_audit_record_t r = {.status = 200, .req_body = body, .req_body_len = strlen(body)};
    pt_buf_t b = {0};
    pt_audit_format(&o, &r, &b);
    PT_CHECK(strstr(b.data, "\\\"b\\\":\\\"[REDACTED]\\\",\\\"c\\\":2") != NULL);
    PT_CHECK(strstr(b.data, "\\\"pin\\\":\\\"[REDACTED]\\\"") != NULL);
    PT_CHECK(strstr(b.data, "\\\"password\\\":\\\"[REDACTED]\\\"") != NULL);
    PT_CHECK(strstr(b.data, "\"truncated\":false") != NULL);
    b.len = 0;
    o.audit_max_body = 2;
    r.req_body = "a\xc3\xa9xyz"; /* the cut at 2 would split the é: it is left out */
    r.req_body_len = 6;
    pt_audit_format(&o, &r, &b);
    PT_CHECK(strstr(b.data, "\"bytes\":6,\"body\":\"a\\u00c3") == NULL);
    PT_CHECK(strstr(b.data, "\"bytes\":6,\"body\":\"a\",\"truncated\":true") != NULL);
    pt_buf_free(&b);
}

#include <arpa/inet.h>
static pt_cidr_t pt__range(int fam, const char *a, int prefix)
{
    pt_cidr_t c = {.family = fam, .prefix = prefix};
    inet_pton(fam == 4 ? AF_INET : AF_INET6, a, c.addr);
    return c;
}

int main(void)
{
    PT_RUN(cidr_ranges);
    PT_RUN(query_redaction);
    PT_RUN(traceparent);
    PT_RUN(json_paths_and_cut);
    return PT_TEST_DONE();
}
