/* pt_field: tokens, field values, header-line blocks and Host values. */
#include "pt_field.h"
#include "pt_test.h"

#define S(x) x, sizeof x - 1

PT_CASE(tokens)
{
    PT_CHECK(pt_field_token(S("X-Portico-Username")));
    PT_CHECK(pt_field_token(S("!#$%&'*+-.^_`|~09az")));
    PT_CHECK(!pt_field_token(S("")));
    PT_CHECK(!pt_field_token(S("Host ")));
    PT_CHECK(!pt_field_token(S("a:b")));
    PT_CHECK(!pt_field_token(S("a\"b")));
    PT_CHECK(!pt_field_token(S("a(b")));
    PT_CHECK(!pt_field_token(S("a\x80")));
    PT_CHECK(!pt_field_token(S("a\0b")));
}

PT_CASE(field_values)
{
    PT_CHECK(pt_field_value(S("")));
    PT_CHECK(pt_field_value(S("text/html; charset=\"utf-8\"\t x")));
    PT_CHECK(pt_field_value(S("caf\xc3\xa9")));
    PT_CHECK(!pt_field_value(S("a\rb")));
    PT_CHECK(!pt_field_value(S("a\nb")));
    PT_CHECK(!pt_field_value(S("a\0b")));
    PT_CHECK(!pt_field_value(S("a\x7f")));
    PT_CHECK(!pt_field_value(S("a\x01")));
}

PT_CASE(header_lines)
{
    PT_CHECK(pt_field_lines(S("")));
    PT_CHECK(pt_field_lines(S("X-A: 1\r\nX-B:2\r\n")));
    PT_CHECK(!pt_field_lines(S("X-A: 1")));
    PT_CHECK(!pt_field_lines(S("X-A: 1\n")));
    PT_CHECK(!pt_field_lines(S("X-A: 1\r\nSet-Cookie")));
    PT_CHECK(!pt_field_lines(S("X-A : 1\r\n")));
    PT_CHECK(!pt_field_lines(S(": 1\r\n")));
    PT_CHECK(!pt_field_lines(S("X-A: 1\rSet-Cookie: a=b\r\n")));
    PT_CHECK(!pt_field_lines(S("\r\n")));
}

PT_CASE(token_lists)
{
    PT_CHECK(pt_field_list_has(S("keep-alive, Upgrade"), S("upgrade")));
    PT_CHECK(pt_field_list_has(S(" ,upgrade\t,"), S("upgrade")));
    PT_CHECK(!pt_field_list_has(S("upgrade-x, x-upgrade"), S("upgrade")));
    PT_CHECK(!pt_field_list_has(S(""), S("upgrade")));
    PT_CHECK(!pt_field_list_has(S("up grade"), S("upgrade")));
}

PT_CASE(host_values)
{
    PT_CHECK(pt_field_host(S("example.com")));
    PT_CHECK(pt_field_host(S("example.com:8080")));
    PT_CHECK(pt_field_host(S("127.0.0.1:11223")));
    PT_CHECK(pt_field_host(S("[::1]:80")));
    PT_CHECK(pt_field_host(S("[v1.fe80::a+en1]")));
    PT_CHECK(pt_field_host(S("ex%41mple")));
    PT_CHECK(pt_field_host(S("example.com:")));
    PT_CHECK(pt_field_host(S("example.com:65535")));
    PT_CHECK(pt_field_host(S("example.com:0065535")));
    PT_CHECK(!pt_field_host(S("example.com:65536")));
    PT_CHECK(!pt_field_host(S("example.com:99999999999999999999")));
    PT_CHECK(!pt_field_host(S("[::1]:70000")));
    PT_CHECK(!pt_field_host(S("")));
    PT_CHECK(!pt_field_host(S(":80")));
    PT_CHECK(!pt_field_host(S("a b")));
    PT_CHECK(!pt_field_host(S("a/b")));
    PT_CHECK(!pt_field_host(S("a@b")));
    PT_CHECK(!pt_field_host(S("a:8x")));
    PT_CHECK(!pt_field_host(S("[::1")));
    PT_CHECK(!pt_field_host(S("[]")));
    PT_CHECK(!pt_field_host(S("[::1]x")));
    PT_CHECK(!pt_field_host(S("ex%4")));
    PT_CHECK(!pt_field_host(S("a,b\r")));
}

int main(void)
{
    PT_RUN(tokens);
    PT_RUN(field_values);
    PT_RUN(header_lines);
    PT_RUN(token_lists);
    PT_RUN(host_values);
    return PT_TEST_DONE();
}
