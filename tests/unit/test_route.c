/* pt_route: service names and the Allow header's text. */
#include "pt_route.h"
#include "pt_test.h"

#include <llhttp.h>

static int valid(const char *name)
{
    return pt_route_valid_service_name(name, strlen(name));
}

PT_CASE(service_names)
{
    PT_CHECK(valid("customer.get"));
    PT_CHECK(valid("a"));
    PT_CHECK(valid("_private-1.x"));
    PT_CHECK(valid("Demo.Echo"));
    PT_CHECK(!valid(""));
    PT_CHECK(!valid(".hidden"));
    PT_CHECK(!valid("-x"));
    PT_CHECK(!valid("a/b"));
    PT_CHECK(!valid("a b"));
    PT_CHECK(!valid("a%2Fb"));
    PT_CHECK(!valid("caf\xc3\xa9"));
    PT_CHECK(!pt_route_valid_service_name("a\0b", 3)); /* the length counts, not the NUL */
    char name[PT_SERVICE_NAME_MAX + 2];
    memset(name, 'n', sizeof name);
    PT_CHECK(pt_route_valid_service_name(name, PT_SERVICE_NAME_MAX));
    PT_CHECK(!pt_route_valid_service_name(name, PT_SERVICE_NAME_MAX + 1));
}

PT_CASE(allow_header)
{
    char allow[64];
    PT_CHECK_STR(pt_route_allow_header((1ull << HTTP_GET) | (1ull << HTTP_POST), allow, 64),
                 "GET, POST");
    PT_CHECK_STR(pt_route_allow_header(0, allow, 64), "");
    PT_CHECK_STR(pt_route_allow_header(1ull << HTTP_DELETE, allow, 64), "DELETE");
    PT_CHECK_STR(pt_route_allow_header((1ull << HTTP_GET) | (1ull << HTTP_POST), allow, 10),
                 "GET, POST"); /* exactly enough */
    /* one byte short: POST is left out whole, never cut to "PO" */
    PT_CHECK_STR(pt_route_allow_header((1ull << HTTP_GET) | (1ull << HTTP_POST), allow, 9),
                 "GET");
}

int main(void)
{
    PT_RUN(service_names);
    PT_RUN(allow_header);
    return PT_TEST_DONE();
}
