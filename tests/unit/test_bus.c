#include "pt_bus.h"
#include "pt_test.h"

#include <stdlib.h>

static long key(const char *rest, char *out, size_t outlen)
{
    return pt_bus_routing_key(rest, strlen(rest), out, outlen);
}

int main(void)
{
    char out[256];

    /* WASP's example and the empty cases. */
    PT_CHECK_INT(key("/bar/baz", out, sizeof out), 7);
    PT_CHECK_STR(out, "bar.baz");
    PT_CHECK_INT(key("", out, sizeof out), 0);
    PT_CHECK_STR(out, "");
    PT_CHECK_INT(key("/", out, sizeof out), 0);
    PT_CHECK_STR(out, "");
    PT_CHECK_INT(key("/bar", out, sizeof out), 3);
    PT_CHECK_STR(out, "bar");

    /* Empty segments are skipped, wherever they are. */
    PT_CHECK_INT(key("//a///b//", out, sizeof out), 3);
    PT_CHECK_STR(out, "a.b");
    PT_CHECK_INT(key("a/b", out, sizeof out), 3);
    PT_CHECK_STR(out, "a.b");

    /* Segments are percent-decoded one by one: an encoded '/' stays in its
     * segment, '+' is no space in a path. */
    PT_CHECK_INT(key("/a%2Fb/c%20d/e+f", out, sizeof out), 11);
    PT_CHECK_STR(out, "a/b.c d.e+f");
    PT_CHECK_INT(key("/%2e/x", out, sizeof out), 3);
    PT_CHECK_STR(out, "..x");
    PT_CHECK_INT(key("/caf%C3%A9", out, sizeof out), 5);
    PT_CHECK_STR(out, "caf\xc3\xa9");

    /* Only the given length is read. */
    PT_CHECK_INT(pt_bus_routing_key("/a/b/c", 4, out, sizeof out), 3);
    PT_CHECK_STR(out, "a.b");

    /* Malformed encoding, or a NUL byte: -1 and an empty output. */
    PT_CHECK_INT(key("/a/%zz", out, sizeof out), -1);
    PT_CHECK_STR(out, "");
    PT_CHECK_INT(key("/a/%4", out, sizeof out), -1);
    PT_CHECK_INT(key("/a%", out, sizeof out), -1);
    PT_CHECK_INT(key("/a/%00/b", out, sizeof out), -1);

    /* The NUL counts: "a.b" needs 4 bytes. */
    char small[4];
    PT_CHECK_INT(key("/a/b", small, sizeof small), 3);
    PT_CHECK_STR(small, "a.b");
    PT_CHECK_INT(key("/a/bc", small, sizeof small), -1);
    PT_CHECK_STR(small, "");
    PT_CHECK_INT(key("/a", small, 0), -1);

    /* A long segment that decodes short enough fits; one that does not
     * fit fails. */
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

    /* 255 bytes is the longest AMQP routing key. */
    char long_rest[258];
    long_rest[0] = '/';
    memset(long_rest + 1, 'k', 255);
    long_rest[256] = '\0';
    PT_CHECK_INT(key(long_rest, out, sizeof out), 255);
    long_rest[256] = 'k';
    long_rest[257] = '\0';
    PT_CHECK_INT(key(long_rest, out, sizeof out), -1);
    return PT_TEST_DONE();
}
