#include "pt_test.h"
#include "pt_util.h"

int main(void)
{
    uint64_t v;
    PT_CHECK_INT(pt_parse_duration_ms("1.5", &v), 0);
    PT_CHECK_INT(v, 1500);
    PT_CHECK_INT(pt_parse_duration_ms("250ms", &v), 0);
    PT_CHECK_INT(v, 250);
    PT_CHECK_INT(pt_parse_duration_ms("2m", &v), 0);
    PT_CHECK_INT(v, 120000);
    PT_CHECK_INT(pt_parse_duration_ms("soon", &v), -1);
    PT_CHECK_INT(pt_parse_duration_ms("-1", &v), -1);
    PT_CHECK_INT(pt_parse_size("16KB", &v), 0);
    PT_CHECK_INT(v, 16384);
    PT_CHECK_INT(pt_parse_size("1MB", &v), 0);
    PT_CHECK_INT(v, 1048576);
    PT_CHECK_INT(pt_parse_size("12 apples", &v), -1);

    char out[64];
    PT_CHECK_INT(pt_percent_decode("a%2Fb+c", 7, out, 0), 5);
    PT_CHECK_STR(out, "a/b+c");
    PT_CHECK_INT(pt_percent_decode("a%2Fb+c", 7, out, 1), 5);
    PT_CHECK_STR(out, "a/b c");
    PT_CHECK_INT(pt_percent_decode("%4", 2, out, 0), -1);
    PT_CHECK_INT(pt_percent_decode("%", 1, out, 0), -1);
    PT_CHECK_INT(pt_percent_decode("%g0", 3, out, 0), -1);

    char small[6];
    pt_strcpy_cap(small, "abc", sizeof small);
    PT_CHECK_STR(small, "abc");
    pt_strcpy_cap(small, "abcdef", sizeof small); /* one too long: cut, still terminated */
    PT_CHECK_STR(small, "abcde");
    pt_strcpy_cap(small, "", sizeof small);
    PT_CHECK_STR(small, "");

    pt_buf_t b = {0};
    pt_buf_json_escape(&b, "a\"b\\c\n\x01", 7);
    PT_CHECK_STR(b.data, "a\\\"b\\\\c\\n\\u0001");
    pt_buf_free(&b);
    pt_buf_put_u64(&b, 0);
    pt_buf_append(&b, " ", 1);
    pt_buf_put_u64(&b, 18446744073709551615ull);
    pt_buf_append(&b, "", 1);
    PT_CHECK_STR(b.data, "0 18446744073709551615");
    pt_buf_free(&b);

    char c1[25], c2[25];
    pt_cid_new(c1);
    pt_cid_new(c2);
    PT_CHECK_INT(strlen(c1), 24);
    PT_CHECK(strcmp(c1, c2) != 0);
    PT_CHECK(pt_cid_valid(c1, 24));
    PT_CHECK(!pt_cid_valid("a b", 3));
    PT_CHECK(!pt_cid_valid("x\r\nSet-Cookie: y", 16));

    char now[32];
    pt_utcnow(now);
    PT_CHECK_INT(strlen(now), 26);
    PT_CHECK(now[10] == 'T');
    return PT_TEST_DONE();
}
