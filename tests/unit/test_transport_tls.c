/* pt_transport_tls over a loopback TCP connection, both ends ours: a client
 * (SNI, host name checked) that writes before the handshake is done, a
 * server on pt_tls_ctx certificates (made with the openssl CLI), bodies
 * past one TLS record and past the read buffer, try_write, close_notify on
 * shutdown, a wrong host name refused on both sides and counted, and every
 * handle closed (uv_loop_close). */
#include "pt_metrics.h"
#include "pt_test.h"
#include "pt_tls.h"
#include "pt_transport_tls.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BIG 50000

static uv_loop_t loop;
static uv_tcp_t listener;
static char read_buf[4096]; /* smaller than a record: one record, several reads */
static pt_tls_ctx_t *sctx;
static SSL_CTX *cctx;
static const char *host;
static pt_transport_tcp_t ctcp;
static pt_transport_tls_t ctls;
static pt_transport_write_t wreq;
static char big[BIG];
static int write_status;
static size_t server_got, client_got, server_reads;
static int server_eof, server_err, client_eof, client_err, written, server_closed, client_closed,
    shut;
static char dir[] = "/tmp/pt_tls_test_XXXXXX";

static void on_server_closed(pt_transport_t *t, int status)
{
    PT_CHECK_INT(status, 0);
    server_closed++;
}

static void on_client_closed(pt_transport_t *t, int status)
{
    PT_CHECK_INT(status, 0);
    client_closed++;
}

static void on_shut(pt_transport_t *t, int status)
{
    PT_CHECK_INT(status, 0);
    shut++;
}

static void server_read(pt_transport_t *t, ssize_t nread, const char *data)
{
    if (nread < 0) {
        if (nread == UV_EOF)
            server_eof++;
        else
            server_err++;
        pt_transport_close(t, on_server_closed);
        return;
    }
    PT_CHECK(data == read_buf);
    PT_CHECK(memcmp(data, big + server_got, (size_t)nread) == 0);
    server_got += (size_t)nread;
    server_reads++;
    if (server_got == BIG) {
        uv_buf_t b = uv_buf_init("ok", 2);
        PT_CHECK_INT(pt_transport_try_write(t, &b, 1), 2);
        PT_CHECK_INT(pt_transport_shutdown(t, on_shut), 0); /* close_notify, then FIN */
    }
}

static void client_read(pt_transport_t *t, ssize_t nread, const char *data)
{
    if (nread < 0) {
        if (nread == UV_EOF)
            client_eof++; /* the server's close_notify */
        else
            client_err++;
        pt_transport_close(t, on_client_closed);
        return;
    }
    PT_CHECK(client_got + (size_t)nread <= 2 &&
             memcmp(data, &"ok"[client_got], (size_t)nread) == 0);
    client_got += (size_t)nread;
}

static void on_written(pt_transport_write_t *req, int status)
{
    PT_CHECK(req == &wreq);
    write_status = status;
    written++;
}

static void on_connect(pt_transport_t *t, int status)
{
    PT_CHECK_INT(status, 0);
    SSL *ssl = pt_tls_client_ssl(cctx, host);
    PT_CHECK(ssl != NULL);
    PT_CHECK_INT(pt_transport_tls_init(&ctls, &loop, t, ssl, NULL), 0);
    ctls.base.on_read = client_read;
    uv_buf_t b = uv_buf_init(big, BIG);
    /* before the handshake: nothing can go out yet, a queued write waits */
    PT_CHECK_INT(pt_transport_try_write(&ctls.base, &b, 1), UV_EAGAIN);
    PT_CHECK_INT(pt_transport_write(&ctls.base, &wreq, &b, 1, on_written), 0);
    PT_CHECK_INT(pt_transport_read_start(&ctls.base), 0);
}

static void on_connection(uv_stream_t *l, int status)
{
    PT_CHECK_INT(status, 0);
    pt_transport_t *t = pt_transport_tls_accept(&loop, l, sctx, read_buf, sizeof read_buf);
    PT_CHECK(t != NULL);
    if (!t) return;
    t->on_read = server_read;
    PT_CHECK_INT(pt_transport_read_start(t), 0);
    uv_close((uv_handle_t *)&listener, NULL);
}

static void run(const char *name)
{
    struct sockaddr_in addr;
    struct sockaddr_storage bound;
    int len = sizeof bound;
    host = name;
    server_got = client_got = server_reads = 0;
    server_eof = server_err = client_eof = client_err = written = server_closed = client_closed =
        shut = 0;
    uv_loop_init(&loop);
    uv_tcp_init(&loop, &listener);
    uv_ip4_addr("127.0.0.1", 0, &addr);
    PT_CHECK_INT(uv_tcp_bind(&listener, (struct sockaddr *)&addr, 0), 0);
    PT_CHECK_INT(uv_listen((uv_stream_t *)&listener, 8, on_connection), 0);
    uv_tcp_getsockname(&listener, (struct sockaddr *)&bound, &len);
    PT_CHECK_INT(pt_transport_tcp_init(&ctcp, &loop, read_buf, sizeof read_buf), 0);
    PT_CHECK_INT(pt_transport_tcp_connect(&ctcp, (struct sockaddr *)&bound, on_connect), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    PT_CHECK_INT(uv_loop_close(&loop), 0); /* every handle closed */
}

PT_CASE(an_exchange_both_ways)
{
    uint64_t done = pt_metrics_tls_handshakes[1];
    run("localhost");
    PT_CHECK_INT(written, 1);
    PT_CHECK_INT(write_status, 0);
    PT_CHECK_INT(server_got, BIG);
    PT_CHECK(server_reads >= BIG / sizeof read_buf);
    PT_CHECK_INT(client_got, 2);
    PT_CHECK_INT(shut, 1);
    PT_CHECK_INT(client_eof, 1);
    PT_CHECK_INT(server_eof, 1); /* the client closed: the end of the input */
    PT_CHECK_INT(client_closed, 1);
    PT_CHECK_INT(server_closed, 1);
    PT_CHECK_INT(pt_metrics_tls_handshakes[1], done + 1); /* the server's only */
    PT_CHECK_INT(pt_metrics_tls_open[1], 0);
}

PT_CASE(a_wrong_host_name_is_refused)
{
    uint64_t alerts = pt_metrics_tls_failures[PT_METRICS_TLS_ALERT];
    run("other.test");
    PT_CHECK_INT(client_err, 1); /* UV_EPROTO: the certificate does not name it */
    PT_CHECK_INT(server_err + server_eof, 1);
    PT_CHECK_INT(written, 1); /* the queued write hears of it (cancelled) */
    PT_CHECK_INT(write_status, UV_ECANCELED);
    PT_CHECK_INT(server_got, 0);
    PT_CHECK_INT(client_closed, 1);
    PT_CHECK_INT(server_closed, 1);
    PT_CHECK_INT(pt_metrics_tls_failures[PT_METRICS_TLS_ALERT], alerts + 1);
}

static int sh(const char *fmt)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, fmt, dir, dir, dir, dir, dir, dir, dir, dir);
    return system(cmd);
}

int main(void)
{
    char err[512], cert[256], key[256], ca[256], ca_key[256];
    for (size_t i = 0; i < BIG; i++)
        big[i] = (char)('a' + i % 26);
    if (!mkdtemp(dir)) return 1;
    PT_CHECK_INT(sh("cd %s && openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
                    "-nodes -days 2 -subj /CN=ca -keyout ca.key -out ca.pem "
                    "-addext basicConstraints=critical,CA:TRUE 2>/dev/null && "
                    "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                    "-subj /CN=localhost -keyout s.key -out s.csr 2>/dev/null && "
                    "printf 'subjectAltName=DNS:localhost\\n' > s.ext && "
                    "openssl x509 -req -in s.csr -CA ca.pem -CAkey ca.key -set_serial 7 -days 2 "
                    "-extfile s.ext -out s.pem 2>/dev/null"),
                 0);
    snprintf(cert, sizeof cert, "%s/s.pem", dir);
    snprintf(key, sizeof key, "%s/s.key", dir);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(ca_key, sizeof ca_key, "%s/ca.key", dir);
    PT_CHECK_INT(pt_tls_ctx_new(TLS1_2_VERSION, NULL, &sctx, err, sizeof err), 0);
    PT_CHECK_INT(pt_tls_ctx_add(sctx, cert, key, err, sizeof err), 0);
    /* a key that is not the certificate's, or not a key, is refused (and not kept) */
    PT_CHECK_INT(pt_tls_ctx_add(sctx, cert, ca_key, err, sizeof err), -1);
    PT_CHECK(strstr(err, "does not match the certificate") != NULL);
    PT_CHECK_INT(pt_tls_ctx_add(sctx, cert, ca, err, sizeof err), -1);
    PT_CHECK(strstr(err, "not a PEM private key") != NULL);
    PT_CHECK_INT(pt_tls_ctx_count(sctx), 1);
    cctx = pt_tls_client_ctx_new(ca, 1, err, sizeof err);
    PT_CHECK(cctx != NULL);
    if (sctx && cctx) {
        PT_RUN(an_exchange_both_ways);
        PT_RUN(a_wrong_host_name_is_refused);
    }
    SSL_CTX_free(cctx);
    pt_tls_ctx_unref(sctx);
    sh("rm -rf %s");
    return PT_TEST_DONE();
}
