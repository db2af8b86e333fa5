#include "pt_router.h"
#include "pt_test.h"
#include "pt_test_config.h"

#include <llhttp.h>

static pt_router_t *router; /* of tests/unit/data/router.yaml, made in main */
static char buf[4096];

static int match_in(const pt_router_t *r, int method, const char *target, pt_route_match_t *m)
{
    const char *q = strchr(target, '?');
    size_t plen = q ? (size_t)(q - target) : strlen(target);
    return pt_router_match(r, method, target, plen, q ? q + 1 : "", q ? strlen(q + 1) : 0, buf, m);
}

static int match(int method, const char *target, pt_route_match_t *m)
{
    return match_in(router, method, target, m);
}

PT_CASE(exact_paths)
{
    pt_route_match_t m;
    /* exact REST paths and methods */
    PT_CHECK_INT(match(HTTP_POST, "/api/echo", &m), 0);
    PT_CHECK_STR(m.service, "demo.echo");
    PT_CHECK_STR(m.channel->name, "echo");
    PT_CHECK_INT(match(HTTP_GET, "/api/echo", &m), 405);
    PT_CHECK(m.allow & (1ull << HTTP_POST));
    PT_CHECK_INT(match(HTTP_POST, "/api/echo/", &m), 404);
    PT_CHECK_INT(match(HTTP_POST, "/api/ech%6F", &m), 0);   /* decoded before matching */
    PT_CHECK_INT(match(HTTP_POST, "/api%2Fecho", &m), 404); /* an encoded slash joins nothing */
    PT_CHECK_INT(match(HTTP_POST, "/nope", &m), 404);
}

PT_CASE(prefix_channels)
{
    pt_route_match_t m;
    /* prefix channels: the next segment is the service, the rest stays raw */
    PT_CHECK_INT(match(HTTP_GET, "/svc/foo/bar/baz%2Fq?x=1", &m), 0);
    PT_CHECK_STR(m.channel->name, "px");
    PT_CHECK_STR(m.service, "foo");
    PT_CHECK_INT(m.listed, 1);
    PT_CHECK(m.upstream && strcmp(m.upstream->name, "foo") == 0);
    PT_CHECK_INT(m.rest_len, 12);
    PT_CHECK(m.rest && strncmp(m.rest, "/bar/baz%2Fq", 12) == 0);
    PT_CHECK_INT(match(HTTP_DELETE, "/svc/foo", &m), 0); /* every method by default */
    PT_CHECK_INT(m.rest_len, 0);
    PT_CHECK_INT(match(HTTP_GET, "/svc/foo/", &m), 0);
    PT_CHECK_INT(m.rest_len, 1);
    PT_CHECK_INT(match(HTTP_GET, "/svc/bar/x", &m), 0);
    PT_CHECK_INT(m.listed, 0); /* no such service: 404 in pt_http */
    PT_CHECK(m.upstream == NULL);
    PT_CHECK_INT(match(HTTP_GET, "/svc", &m), 404); /* no service named */
    PT_CHECK_INT(match(HTTP_GET, "/svcfoo/x", &m), 404);
    PT_CHECK_INT(match(HTTP_GET, "/svc/foo/../../api/echo", &m), 400);
    PT_CHECK_INT(match(HTTP_GET, "/svc/foo/a%00b", &m), 400);
    PT_CHECK_INT(match(HTTP_GET, "/svc/f%20o/x", &m), 400); /* not a service name */
    PT_CHECK_INT(match(HTTP_POST, "/bus/orders/new/eu", &m), 0);
    PT_CHECK_STR(m.channel->name, "bus");
    PT_CHECK_STR(m.service, "orders");
    PT_CHECK_INT(m.listed, 1);
    PT_CHECK_INT(m.rest_len, 7);
    PT_CHECK_INT(match(HTTP_POST, "/bus/payments/x", &m), 0);
    PT_CHECK_INT(m.listed, 0); /* not on service_list: 403 */
    PT_CHECK(pt_router_may_proxy(router, "/svc/foo", 8));
    PT_CHECK(pt_router_may_proxy(router, "/%73vc/foo", 10)); /* may be encoded */
    PT_CHECK(!pt_router_may_proxy(router, "/svc", 4));
    PT_CHECK(!pt_router_may_proxy(router, "/svcfoo/x", 9));
    PT_CHECK(!pt_router_may_proxy(router, "/bus/orders/x", 13)); /* the bus reads bodies whole */
    PT_CHECK_INT(match(HTTP_GET, "/%73vc/foo/x", &m), 0);
    PT_CHECK_STR(m.channel->name, "px");
    PT_CHECK_INT(match(HTTP_POST, "/api/echo", &m), 0); /* exact paths still win */
    PT_CHECK_STR(m.channel->name, "echo");
}

PT_CASE(templates)
{
    pt_route_match_t m;
    /* templates capture one decoded segment */
    PT_CHECK_INT(match(HTTP_GET, "/api/customer/123", &m), 0);
    PT_CHECK_INT(m.n_params, 1);
    PT_CHECK_STR(m.params[0].name, "customer_id");
    PT_CHECK_INT(m.params[0].value_len, 3);
    PT_CHECK_INT(match(HTTP_HEAD, "/api/customer/123", &m), 0); /* HEAD follows GET */
}

PT_CASE(gateway_names)
{
    pt_route_match_t m;
    /* gateway names: allowlist, unknown, encodings */
    PT_CHECK_INT(match(HTTP_POST, "/gateway/customer.get", &m), 0);
    PT_CHECK_STR(m.service, "customer.get");
    PT_CHECK_INT(m.listed, 1);
    PT_CHECK_INT(match(HTTP_POST, "/gateway/customer.get-details", &m), 0);
    PT_CHECK_INT(m.listed, 0);
    PT_CHECK_INT(match(HTTP_POST, "/gateway/customer.get.x", &m), 0);
    PT_CHECK_INT(m.listed, 0);
    PT_CHECK_INT(match(HTTP_POST, "/gateway/Customer.get", &m), 0);
    PT_CHECK_INT(m.listed, 0);
    PT_CHECK_INT(match(HTTP_POST, "/gateway/customer%2Eget", &m), 0);
    PT_CHECK_STR(m.service, "customer.get");
    PT_CHECK_INT(match(HTTP_POST, "/gateway/customer.get%2F..%2Fadmin", &m), 400);
    PT_CHECK_INT(match(HTTP_POST, "/gateway/customer.get/../admin", &m), 400);
    PT_CHECK_INT(match(HTTP_POST, "/gateway/..", &m), 400);
    PT_CHECK_INT(match(HTTP_POST, "/gateway/...", &m), 400);
    PT_CHECK_INT(match(HTTP_POST, "/gateway/a%00b", &m), 400);
    PT_CHECK_INT(match(HTTP_POST, "/gateway/a%0Ab", &m), 400);
    PT_CHECK_INT(match(HTTP_POST, "/gateway/a%zz", &m), 400);
    PT_CHECK_INT(match(HTTP_POST, "/gateway/", &m), 404);
}

PT_CASE(gateway_invoke)
{
    pt_route_match_t m;
    /* /gateway/invoke?service= */
    PT_CHECK_INT(match(HTTP_POST, "/gateway/invoke?service=customer.get", &m), 0);
    PT_CHECK_STR(m.service, "customer.get");
    PT_CHECK_INT(m.listed, 1);
    PT_CHECK_INT(match(HTTP_POST, "/gateway/invoke?x=1&service=demo%2Eecho", &m), 0);
    PT_CHECK_STR(m.service, "demo.echo");
    PT_CHECK_INT(match(HTTP_POST, "/gateway/invoke", &m), 400);
    PT_CHECK_INT(match(HTTP_POST, "/gateway/invoke?service=a%2Fb", &m), 400);
    PT_CHECK_INT(match(HTTP_POST, "/gateway/invoke?service=a%00", &m), 400);
}

PT_CASE(repeated_service_param)
{
    pt_route_match_t m;
    /* a repeated ?service= is ambiguous: which one would run? */
    PT_CHECK_INT(match(HTTP_POST, "/gateway/invoke?service=customer.get&service=demo.echo", &m),
                 400);
    PT_CHECK_STR(m.error, "?service= is given more than once");
    PT_CHECK_INT(match(HTTP_POST, "/gateway/invoke?service=demo.echo&%73ervice=demo.echo", &m),
                 400);
    PT_CHECK_INT(match(HTTP_POST, "/gateway/invoke?service&service=demo.echo", &m), 400);
}

PT_CASE(dot_segments_in_a_proxied_rest)
{
    pt_route_match_t m;
    /* a dot segment between encoded slashes or backslashes, in a raw proxied rest */
    PT_CHECK_INT(match(HTTP_GET, "/svc/foo/a%2F..%2Fadmin", &m), 400);
    PT_CHECK_INT(match(HTTP_GET, "/svc/foo/..%2Fadmin", &m), 400);
    PT_CHECK_INT(match(HTTP_GET, "/svc/foo/x%5C..%5Cadmin", &m), 400);
    PT_CHECK_INT(match(HTTP_GET, "/svc/foo/%2E%2E", &m), 400);
    PT_CHECK_INT(match(HTTP_GET, "/svc/foo/a%2F.b%2F..c", &m), 0); /* dots in names are fine */
}

PT_CASE(absolute_form_is_no_path)
{
    pt_route_match_t m;
    /* absolute-form and asterisk targets are not paths */
    PT_CHECK_INT(match(HTTP_POST, "http://x/api/echo", &m), 400);
}

PT_CASE(order_of_channels_does_not_matter)
{
    /* No answer depends on the order of the channels: literals win over
     * captures, whichever comes first (the config refuses real ties). */
    static const char *const ordered =
        "channels:\n"
        "  rest:\n"
        "    - {name: by_id, url_path: '/u/{id}', methods: [GET], service: a}\n"
        "    - {name: me, url_path: /u/me, methods: [GET], service: b}\n"
        "    - {name: deep_any, url_path: '/{x}/v/w', methods: [GET], service: c}\n"
        "    - {name: deep_lit, url_path: '/t/{y}/w', methods: [GET], service: d}\n"
        "  http_proxy:\n"
        "    - name: px\n"
        "      url_prefix: /p\n"
        "      services: {q: {targets: [http://127.0.0.1:1]}}\n";
    pt_config_t *cfg;
    pt_router_t *r;
    char err[512];
    pt_route_match_t m;
    PT_CHECK_INT(pt_test_load(ordered, &cfg, err, sizeof err), 0);
    if (!cfg || pt_router_new(cfg, &r, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        pt_config_free(cfg);
        PT_CHECK(0);
        return;
    }
    PT_CHECK_INT(match_in(r, HTTP_GET, "/u/me", &m), 0);
    PT_CHECK_STR(m.channel->name, "me");
    PT_CHECK_INT(match_in(r, HTTP_GET, "/u/42", &m), 0);
    PT_CHECK_STR(m.channel->name, "by_id");
    PT_CHECK_INT(match_in(r, HTTP_GET, "/t/v/w", &m), 0);
    PT_CHECK_STR(m.channel->name, "deep_lit");
    pt_router_free(r);
    pt_config_free(cfg);
}

PT_CASE(ties_are_refused)
{
    /* a tie the order alone would break is refused */
    PT_CHECK(pt_test_fails_with("channels:\n  rest:\n"
                                "    - {name: a, url_path: '/u/{id}', service: a}\n"
                                "    - {name: b, url_path: '/u/{name}', service: b}\n",
                                ":4: channel 'b': url_path /u/{name} matches what channel 'a'"));
}

int main(void)
{
    pt_config_t *cfg;
    char err[512];
    if (pt_config_load("tests/unit/data/router.yaml", &cfg, err, sizeof err) != 0 ||
        pt_router_new(cfg, &router, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    PT_RUN(exact_paths);
    PT_RUN(prefix_channels);
    PT_RUN(templates);
    PT_RUN(gateway_names);
    PT_RUN(gateway_invoke);
    PT_RUN(repeated_service_param);
    PT_RUN(dot_segments_in_a_proxied_rest);
    PT_RUN(absolute_form_is_no_path);
    PT_RUN(order_of_channels_does_not_matter);
    pt_router_free(router);
    pt_config_free(cfg);
    PT_RUN(ties_are_refused);
    return PT_TEST_DONE();
}
