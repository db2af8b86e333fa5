/* pt_trace: the traceparent and tracestate parsers, the context a hop makes,
 * and the span queue while the exporter is off. */
#include "pt_test.h"
#include "pt_trace.h"

#include <string.h>

static const char *GOOD = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

static int parse(const char *v)
{
    uint8_t t[16], p[8], f;
    return pt_trace_parse_parent(v, strlen(v), t, p, &f);
}

PT_CASE(parses_a_valid_traceparent)
{
    uint8_t t[16], p[8], f = 9;
    PT_CHECK_INT(pt_trace_parse_parent(GOOD, strlen(GOOD), t, p, &f), 0);
    PT_CHECK_INT(t[0], 0x4b);
    PT_CHECK_INT(t[15], 0x36);
    PT_CHECK_INT(p[0], 0x00);
    PT_CHECK_INT(p[7], 0xb7);
    PT_CHECK_INT(f, 1);
    PT_CHECK_INT(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"), 0);
}

PT_CASE(refuses_bad_traceparents)
{
    static const char *const bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",   /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", /* 00 is exactly 55 */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  /* upper case */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
        "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* version ff */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", /* zero parent */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* later version: '-' next */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse(bad[i]) != -1) fprintf(stderr, "accepted: %s\n", bad[i]);
        PT_CHECK_INT(parse(bad[i]), -1);
    }
    PT_CHECK_INT(pt_trace_parse_parent(NULL, 0, NULL, NULL, NULL), -1);
}

PT_CASE(reads_a_later_version_as_far_as_00_goes)
{
    PT_CHECK_INT(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), 0);
    PT_CHECK_INT(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future"),
                 0);
}

PT_CASE(checks_tracestate)
{
    PT_CHECK(pt_trace_valid_state("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", 39));
    PT_CHECK(pt_trace_valid_state("", 0));
    PT_CHECK(pt_trace_valid_state("a=1, ,b=2", 9));
    PT_CHECK(pt_trace_valid_state("tenant@vendor=x", 15));
    PT_CHECK(!pt_trace_valid_state("Rojo=1", 6));   /* upper case key */
    PT_CHECK(!pt_trace_valid_state("rojo", 4));     /* no = */
    PT_CHECK(!pt_trace_valid_state("rojo=a=b", 8)); /* = in the value */
    PT_CHECK(!pt_trace_valid_state("rojo=", 5));    /* empty value */
    PT_CHECK(!pt_trace_valid_state("a@=x", 4));
    PT_CHECK(!pt_trace_valid_state("rojo=a\x01", 7));
    char many[600];
    size_t n = 0;
    for (int i = 0; i < 33; i++)
        n += (size_t)sprintf(many + n, "%sk%d=v", i ? "," : "", i);
    PT_CHECK(!pt_trace_valid_state(many, n)); /* 33 members */
    n = 0;
    for (int i = 0; i < 32; i++)
        n += (size_t)sprintf(many + n, "%sk%d=v", i ? "," : "", i);
    PT_CHECK(pt_trace_valid_state(many, n));
    char big[600];
    memset(big, 'x', sizeof big);
    memcpy(big, "k=", 2);
    PT_CHECK(!pt_trace_valid_state(big, 513)); /* over 512 bytes */
}

PT_CASE(begins_a_hop)
{
    pt_trace_ctx_t a, b;
    pt_trace_begin(&a, GOOD, strlen(GOOD), "rojo=1", 6);
    char tp[PT_TRACEPARENT_LEN + 1];
    pt_trace_format(&a, tp);
    PT_CHECK(strncmp(tp, GOOD, 36) == 0);      /* the same trace */
    PT_CHECK(strncmp(tp + 36, GOOD + 36, 16)); /* a new span */
    PT_CHECK_INT(a.parent_id[7], 0xb7);
    PT_CHECK_INT(a.state_len, 6);
    PT_CHECK_INT(parse(tp), 0);
    /* tracestate without a valid traceparent is dropped, a new trace made */
    pt_trace_begin(&b, "00-zz", 5, "rojo=1", 6);
    PT_CHECK_INT(b.state_len, 0);
    PT_CHECK(memcmp(a.trace_id, b.trace_id, 16) != 0);
    PT_CHECK_INT(b.parent_id[0] | b.parent_id[7], 0);
    PT_CHECK_INT(b.flags, 1); /* ratio 1 by default */
    pt_trace_ctx_t c;
    pt_trace_child(&a, &c);
    PT_CHECK(memcmp(c.trace_id, a.trace_id, 16) == 0);
    PT_CHECK(memcmp(c.parent_id, a.span_id, 8) == 0);
    PT_CHECK(memcmp(c.span_id, a.span_id, 8) != 0);
}

PT_CASE(a_span_without_the_exporter_is_dropped)
{
    pt_trace_ctx_t a;
    pt_trace_begin(&a, GOOD, strlen(GOOD), NULL, 0);
    pt_span_t *s = pt_span_new(&a, PT_SPAN_SERVER, "x", 1);
    PT_CHECK(s != NULL);
    for (int i = 0; i < 100; i++)
        pt_span_str(s, "key", "a value with \"quotes\"", 21);
    pt_span_end(s); /* freed: nothing runs to take it */
    a.flags = 0;
    PT_CHECK(pt_span_new(&a, PT_SPAN_SERVER, "x", 1) == NULL); /* not sampled */
}

int main(void)
{
    PT_RUN(parses_a_valid_traceparent);
    PT_RUN(refuses_bad_traceparents);
    PT_RUN(reads_a_later_version_as_far_as_00_goes);
    PT_RUN(checks_tracestate);
    PT_RUN(begins_a_hop);
    PT_RUN(a_span_without_the_exporter_is_dropped);
    return PT_TEST_DONE();
}
