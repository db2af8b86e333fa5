#include "pt_bus.h"
#include "pt_test.h"

#include <stdlib.h>

static long key(const char *rest, char *out, size_t outlen)
{
    return pt_bus_routing_key(rest, strlen(rest), out, outlen);
}

/* WASP's example and the empty cases. */
PT_CASE(wasp_example_and_empty_paths)
{
    char out[256];
    PT_CHECK_INT(key("/bar/baz", out, sizeof out), 7);
    PT_CHECK_STR(out, "bar.baz");
    PT_CHECK_INT(key("", out, sizeof out), 0);
    PT_CHECK_STR(out, "");
    PT_CHECK_INT(key("/", out, sizeof out), 0);
    PT_CHECK_STR(out, "");
    PT_CHECK_INT(key("/bar", out, sizeof out), 3);
    PT_CHECK_STR(out, "bar");
}

/* Empty segments are skipped, wherever they are. */
PT_CASE(empty_segments_are_skipped)
{
    char out[256];
    PT_CHECK_INT(key("//a///b//", out, sizeof out), 3);
    PT_CHECK_STR(out, "a.b");
    PT_CHECK_INT(key("a/b", out, sizeof out), 3);
    PT_CHECK_STR(out, "a.b");
}

/* Segments are percent-decoded one by one: an encoded '/' stays in its
 * segment, '+' is no space in a path. */
PT_CASE(segments_are_decoded_one_by_one)
{
    char out[256];
    PT_CHECK_INT(key("/a%2Fb/c%20d/e+f", out, sizeof out), 11);
    PT_CHECK_STR(out, "a/b.c d.e+f");
    PT_CHECK_INT(key("/%2e/x", out, sizeof out), 3);
    PT_CHECK_STR(out, "..x");
    PT_CHECK_INT(key("/caf%C3%A9", out, sizeof out), 5);
    PT_CHECK_STR(out, "caf\xc3\xa9");
}

PT_CASE(only_the_given_length_is_read)
{
    char out[256];
    PT_CHECK_INT(pt_bus_routing_key("/a/b/c", 4, out, sizeof out), 3);
    PT_CHECK_STR(out, "a.b");
}

/* Malformed encoding, or a NUL byte: -1 and an empty output. */
PT_CASE(malformed_encoding_or_a_nul_byte_fails)
{
    char out[256];
    PT_CHECK_INT(key("/a/%zz", out, sizeof out), -1);
    PT_CHECK_STR(out, "");
    PT_CHECK_INT(key("/a/%4", out, sizeof out), -1);
    PT_CHECK_INT(key("/a%", out, sizeof out), -1);
    PT_CHECK_INT(key("/a/%00/b", out, sizeof out), -1);
}

/* The NUL counts: "a.b" needs 4 bytes. */
PT_CASE(the_nul_counts_in_the_output_size)
{
    char small[4];
    PT_CHECK_INT(key("/a/b", small, sizeof small), 3);
    PT_CHECK_STR(small, "a.b");
    PT_CHECK_INT(key("/a/bc", small, sizeof small), -1);
    PT_CHECK_STR(small, "");
    PT_CHECK_INT(key("/a", small, 0), -1);
}

/* A long segment that decodes short enough fits; one that does not fit
 * fails. */
PT_CASE(a_long_encoded_segment_fits_when_it_decodes_short)
{
    char out[256];
    size_t n = 3 * 300;
    char *enc = malloc(n + 2);
    enc[0] = '/';
    for (size_t i = 0; i < 300; i++)
        memcpy(enc + 1 + 3 * i, "%41", 3);
    enc[n + 1] = '\0';
    PT_CHECK_INT(key(enc, out, sizeof out), -1); /* 300 bytes > 255 */
    PT_CHECK_INT(pt_bus_routing_key(enc, 1 + 3 * 200, out, sizeof out), 200);
    PT_CHECK(out[0] == 'A' && out[199] == 'A' && out[200] == '\0');
    free(enc);
}

/* 255 bytes is the longest AMQP routing key. */
PT_CASE(the_longest_routing_key_is_255_bytes)
{
    char out[256];
    char long_rest[258];
    long_rest[0] = '/';
    memset(long_rest + 1, 'k', 255);
    long_rest[256] = '\0';
    PT_CHECK_INT(key(long_rest, out, sizeof out), 255);
    long_rest[256] = 'k';
    long_rest[257] = '\0';
    PT_CHECK_INT(key(long_rest, out, sizeof out), -1);
}

int main(void)
{
    PT_RUN(wasp_example_and_empty_paths);
    PT_RUN(empty_segments_are_skipped);
    PT_RUN(segments_are_decoded_one_by_one);
    PT_RUN(only_the_given_length_is_read);
    PT_RUN(malformed_encoding_or_a_nul_byte_fails);
    PT_RUN(the_nul_counts_in_the_output_size);
    PT_RUN(a_long_encoded_segment_fits_when_it_decodes_short);
    PT_RUN(the_longest_routing_key_is_255_bytes);
    return PT_TEST_DONE();
}
