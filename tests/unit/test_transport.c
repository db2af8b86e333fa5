/* pt_transport_tcp over a loopback connection: connect and accept, a write
 * at once and a queued one, reads into the shared buffer, the peer's
 * address, a shutdown seen as the end of the input, and the close. */
#include "pt_test.h"
#include "pt_transport.h"

#include <netinet/in.h>
#include <string.h>

static uv_loop_t loop;
static uv_tcp_t listener;
static char read_buf[4096];
static pt_transport_tcp_t server, client;
static char got[64];
static size_t got_len;
static int accepted, connected, written, server_eof, client_eof, shut, closed;
static pt_transport_write_t wreq;

static void on_closed(pt_transport_t *t, int status)
{
    (void)t;
    PT_CHECK_INT(status, 0);
    closed++;
}

static void on_shutdown(pt_transport_t *t, int status)
{
    (void)t;
    PT_CHECK_INT(status, 0);
    shut++;
}

static void server_read(pt_transport_t *t, ssize_t nread, const char *data)
{
    if (nread < 0) {
        PT_CHECK_INT(nread, UV_EOF);
        server_eof++;
        pt_transport_close(t, on_closed);
        return;
    }
    PT_CHECK(data == read_buf); /* zero-copy: the bytes are in the buffer it was given */
    if (got_len + (size_t)nread < sizeof got) memcpy(got + got_len, data, (size_t)nread);
    got_len += (size_t)nread;
    if (got_len == 10) PT_CHECK_INT(pt_transport_shutdown(t, on_shutdown), 0);
}

static void client_read(pt_transport_t *t, ssize_t nread, const char *data)
{
    (void)data;
    if (nread < 0) {
        client_eof++;
        pt_transport_close(t, on_closed);
    }
}

static void on_written(pt_transport_write_t *req, int status)
{
    PT_CHECK(req == &wreq);
    PT_CHECK_INT(status, 0);
    written++;
    /* the client is done too: the server sees its end of the input */
    PT_CHECK_INT(pt_transport_shutdown(req->t, on_shutdown), 0);
}

static void on_connect(pt_transport_t *t, int status)
{
    PT_CHECK_INT(status, 0);
    connected++;
    uv_buf_t a = uv_buf_init("hello", 5), b = uv_buf_init("world", 5);
    PT_CHECK_INT(pt_transport_try_write(t, &a, 1), 5);
    PT_CHECK_INT(pt_transport_write(t, &wreq, &b, 1, on_written), 0);
    PT_CHECK_INT(pt_transport_read_start(t), 0);
}

static void on_connection(uv_stream_t *l, int status)
{
    PT_CHECK_INT(status, 0);
    PT_CHECK_INT(pt_transport_tcp_init(&server, &loop, read_buf, sizeof read_buf), 0);
    server.base.on_read = server_read;
    PT_CHECK_INT(pt_transport_tcp_accept(&server, l), 0);
    accepted++;
    struct sockaddr_storage ss;
    PT_CHECK_INT(pt_transport_peer(&server.base, &ss), 0);
    PT_CHECK_INT(ss.ss_family, AF_INET);
    PT_CHECK(server.base.tcp == &server.tcp);
    PT_CHECK_INT(pt_transport_read_start(&server.base), 0);
    uv_close((uv_handle_t *)&listener, NULL);
}

PT_CASE(a_loopback_exchange)
{
    struct sockaddr_in addr;
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_loop_init(&loop);
    uv_tcp_init(&loop, &listener);
    uv_ip4_addr("127.0.0.1", 0, &addr);
    PT_CHECK_INT(uv_tcp_bind(&listener, (struct sockaddr *)&addr, 0), 0);
    PT_CHECK_INT(uv_listen((uv_stream_t *)&listener, 8, on_connection), 0);
    uv_tcp_getsockname(&listener, (struct sockaddr *)&bound, &len);
    PT_CHECK_INT(pt_transport_tcp_init(&client, &loop, read_buf, sizeof read_buf), 0);
    client.base.on_read = client_read;
    PT_CHECK_INT(pt_transport_tcp_connect(&client, (struct sockaddr *)&bound, on_connect), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    PT_CHECK_INT(accepted, 1);
    PT_CHECK_INT(connected, 1);
    PT_CHECK_INT(written, 1);
    PT_CHECK_INT(got_len, 10);
    PT_CHECK(memcmp(got, "helloworld", 10) == 0);
    PT_CHECK_INT(shut, 2);
    PT_CHECK_INT(server_eof, 1);
    PT_CHECK_INT(client_eof, 1);
    PT_CHECK_INT(closed, 2);
    PT_CHECK_INT(uv_loop_close(&loop), 0);
}

int main(void)
{
    PT_RUN(a_loopback_exchange);
    return PT_TEST_DONE();
}
