/* pt_ws's frame handling through a probe (no socket): the close codes it
 * answers with, the messages it hands on, and frames held while the output
 * is over its bound. */
#include "pt_test.h"
#include "pt_ws.h"

#include <stdint.h>
#include <stdlib.h>

static uint8_t out[1 << 16];
static size_t out_len;
static char texts[4096];
static size_t n_texts;

static void on_out(void *ud, const uint8_t *data, size_t len)
{
    if (out_len + len <= sizeof out) memcpy(out + out_len, data, len);
    out_len += len;
}

static void on_text(void *ud, const char *msg, size_t len)
{
    n_texts++;
    snprintf(texts, sizeof texts, "%.*s", (int)len, msg);
}

/* A masked client frame into f; returns its length. */
static size_t frame(uint8_t *f, int fin, int opcode, const char *payload, size_t n)
{
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t h = 0;
    f[h++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    if (n < 126) {
        f[h++] = (uint8_t)(0x80 | n);
    } else {
        f[h++] = 0x80 | 126;
        f[h++] = (uint8_t)(n >> 8);
        f[h++] = (uint8_t)n;
    }
    memcpy(f + h, key, 4);
    h += 4;
    for (size_t i = 0; i < n; i++)
        f[h + i] = (uint8_t)payload[i] ^ key[i % 4];
    return h + n;
}

/* The code of the server's close frame: -1 none, 0 a close without one. */
static int close_code(void)
{
    size_t i = 0;
    while (i + 2 <= out_len) {
        size_t n = out[i + 1] & 0x7f, h = 2;
        if (n == 126) n = (size_t)out[i + 2] << 8 | out[i + 3], h = 4;
        if ((out[i] & 0x0f) == 8) return n >= 2 ? out[i + h] << 8 | out[i + h + 1] : 0;
        i += h + n;
    }
    return -1;
}

static pt_ws_t *probe(int hold)
{
    pt_ws_probe_t p = {.out = on_out,
                       .text = on_text,
                       .max_message = 1024,
                       .max_output = 4096,
                       .hold_output = hold};
    out_len = n_texts = 0;
    return pt_ws_probe_new(&p);
}

/* Feeds one client frame to a new probe; returns the close code. */
static int answer(int fin, int opcode, const char *payload, size_t n)
{
    uint8_t f[2048];
    pt_ws_t *ws = probe(0);
    pt_ws_probe_feed(ws, f, frame(f, fin, opcode, payload, n));
    pt_ws_probe_free(ws);
    return close_code();
}

/* What every case starts with: frame space and a run of 'x'. */
#define LOCALS                                                                                     \
    uint8_t f[8192];                                                                               \
    size_t n = 0;                                                                                  \
    pt_ws_t *ws = NULL;                                                                            \
    char big[2048];                                                                                \
    memset(big, 'x', sizeof big);                                                                  \
    (void)f;                                                                                       \
    (void)n;                                                                                       \
    (void)ws

PT_CASE(text_joined_ping_answered_close_echoed)
{
    LOCALS;
    /* text is handed on whole, fragments joined, a ping between them answered */
    ws = probe(0);
    n = frame(f, 0, 1, "{\"a\":", 5);
    n += frame(f + n, 1, 9, "hi", 2);
    n += frame(f + n, 1, 0, "1}", 2);
    PT_CHECK_INT(pt_ws_probe_feed(ws, f, n), 0);
    PT_CHECK_INT(n_texts, 1);
    PT_CHECK_STR(texts, "{\"a\":1}");
    PT_CHECK_INT(out_len, 4);
    PT_CHECK(out[0] == 0x8a && out[1] == 2 && memcmp(out + 2, "hi", 2) == 0);
    /* a clean close is echoed and the socket is done */
    PT_CHECK_INT(pt_ws_probe_feed(ws, f, frame(f, 1, 8, "\x03\xe8", 2)), 1);
    PT_CHECK_INT(close_code(), 1000);
    pt_ws_probe_free(ws);
}

PT_CASE(close_codes_of_rfc6455)
{
    LOCALS;
    /* RFC 6455 7.4.1 codes */
    PT_CHECK_INT(answer(1, 8, "\x03", 1), 1002);     /* a 1-byte close body */
    PT_CHECK_INT(answer(1, 8, "\x03\xed", 2), 1002); /* 1005 is not sent */
    PT_CHECK_INT(answer(1, 8, "\x13\x88", 2), 1002); /* 5000 */
    PT_CHECK_INT(answer(1, 9, big, 126), 1002);      /* a control frame > 125 */
    PT_CHECK_INT(answer(0, 9, "p", 1), 1002);        /* a fragmented ping */
    PT_CHECK_INT(answer(1, 3, "", 0), 1002);         /* a reserved opcode */
    PT_CHECK_INT(answer(1, 1, "\xc3\x28", 2), 1007); /* not UTF-8 */
    PT_CHECK_INT(answer(1, 1, big, 1025), 1009);     /* over max_message */
    PT_CHECK_INT(answer(1, 8,
                        "\x0f\xa0"
                        "bye",
                        5),
                 4000); /* a valid code echoed */
    PT_CHECK_INT(n_texts, 0);
}

PT_CASE(tiny_fragments_cost_more)
{
    LOCALS;
    /* a message in tiny fragments costs more than its bytes: max_message
     * 1024 allows 1 + 1024 / 128 = 9 fragments */
    ws = probe(0);
    n = frame(f, 0, 1, "a", 1);
    for (int i = 0; i < 9; i++)
        n += frame(f + n, 0, 0, "a", 1);
    PT_CHECK_INT(pt_ws_probe_feed(ws, f, n), 1);
    PT_CHECK_INT(close_code(), 1009);
    PT_CHECK_INT(n_texts, 0);
    pt_ws_probe_free(ws);
    ws = probe(0);
    n = frame(f, 0, 1, big, 1000);
    for (int i = 0; i < 7; i++)
        n += frame(f + n, 0, 0, "a", 1);
    n += frame(f + n, 1, 0, big, 17); /* 9 fragments, 1024 bytes */
    PT_CHECK_INT(pt_ws_probe_feed(ws, f, n), 0);
    PT_CHECK_INT(n_texts, 1);
    n = frame(f, 1, 1, big, 1024); /* exactly max_message in one frame */
    PT_CHECK_INT(pt_ws_probe_feed(ws, f, n), 0);
    PT_CHECK_INT(n_texts, 2);
    pt_ws_probe_free(ws);
}

PT_CASE(unmasked_frame)
{
    LOCALS;
    /* an unmasked frame */
    ws = probe(0);
    PT_CHECK_INT(pt_ws_probe_feed(ws, (const uint8_t *)"\x81\x02{}", 4), 1);
    PT_CHECK_INT(close_code(), 1002);
    pt_ws_probe_free(ws);
}

PT_CASE(one_close_only)
{
    LOCALS;
    /* one close only: a binary message is closed 1003, a bad frame after it
     * gets no second close */
    ws = probe(0);
    n = frame(f, 1, 2, "b", 1);
    n += frame(f + n, 1, 9, big, 126);
    pt_ws_probe_feed(ws, f, n);
    PT_CHECK_INT(close_code(), 1003);
    PT_CHECK_INT(out_len, 2 + 2 + 18); /* 1003 and its reason, nothing more */
    pt_ws_probe_free(ws);
}

PT_CASE(frames_wait_for_a_peer_that_reads_nothing)
{
    LOCALS;
    /* a peer that reads nothing: past max_output (4096) the frames wait,
     * and all of them are answered once it has read */
    ws = probe(1);
    for (int i = 0; i < 60; i++)
        PT_CHECK_INT(pt_ws_probe_feed(ws, f, frame(f, 1, 9, big, 120)), 0);
    PT_CHECK(pt_ws_probe_paused(ws));
    PT_CHECK(out_len > 4096 && out_len <= 4096 + 122);
    PT_CHECK_INT(pt_ws_probe_drain(ws), 0);
    PT_CHECK(!pt_ws_probe_paused(ws));
    PT_CHECK_INT(out_len, 60 * 122);
    pt_ws_probe_free(ws);
}

PT_CASE(bound_counts_queued_pongs)
{
    LOCALS;
    /* the bound counts what wslay queued itself: the pongs of pings read in
     * one go (wslay takes its input 4096 bytes at a time) */
    ws = probe(1);
    static uint8_t many[100 * 126];
    n = 0;
    for (int i = 0; i < 100; i++)
        n += frame(many + n, 1, 9, big, 120);
    PT_CHECK_INT(pt_ws_probe_feed(ws, many, n), 0);
    PT_CHECK(pt_ws_probe_paused(ws));
    PT_CHECK(out_len < 100 * 122);
    /* each time the peer has read all, the frames go on up to the bound */
    for (int i = 0; i < 100 && pt_ws_probe_paused(ws); i++)
        PT_CHECK_INT(pt_ws_probe_drain(ws), 0);
    PT_CHECK_INT(out_len, 100 * 122);
    pt_ws_probe_free(ws);
}

PT_CASE(empty_pings_count_too)
{
    LOCALS;
    /* empty pings: wslay counts a queued message by its payload, so their
     * pongs counted nothing and every ping read in one go was answered,
     * 3000 of them 6000 bytes against a bound of 4096; each queued message
     * now counts what wslay holds for it, and the frames wait at the bound */
    ws = probe(1);
    static uint8_t empties[3000 * 6];
    n = 0;
    for (int i = 0; i < 3000; i++)
        n += frame(empties + n, 1, 9, "", 0);
    PT_CHECK_INT(pt_ws_probe_feed(ws, empties, n), 0);
    PT_CHECK(pt_ws_probe_paused(ws));
    PT_CHECK(out_len <= 4096 + 2);
    for (int i = 0; i < 100 && pt_ws_probe_paused(ws); i++)
        PT_CHECK_INT(pt_ws_probe_drain(ws), 0);
    PT_CHECK_INT(out_len, 3000 * 2);
    pt_ws_probe_free(ws);
}

int main(void)
{
    PT_RUN(text_joined_ping_answered_close_echoed);
    PT_RUN(close_codes_of_rfc6455);
    PT_RUN(tiny_fragments_cost_more);
    PT_RUN(unmasked_frame);
    PT_RUN(one_close_only);
    PT_RUN(frames_wait_for_a_peer_that_reads_nothing);
    PT_RUN(bound_counts_queued_pongs);
    PT_RUN(empty_pings_count_too);
    return PT_TEST_DONE();
}
