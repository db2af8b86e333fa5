/* pt_amqp_tls: the socket under every broker connection (outgoing.amqp,
 * AMQP channels, amqp_bus), one code path for all three: plain TCP for
 * amqp://, rabbitmq-c's OpenSSL socket for amqps://.
 *
 * Over TLS the broker's certificate chain and host name (a DNS name, or an
 * IP address against the certificate's IP entries) are checked by OpenSSL
 * in the handshake against the system CA store plus tls.ca_file, unless
 * tls.verify is false; TLS 1.2 is the oldest version offered, renegotiation
 * is refused, and a client certificate is sent when tls.cert/tls.key are
 * set. A refused certificate fails the handshake, with OpenSSL's reason
 * ("certificate has expired", "hostname mismatch", "self-signed
 * certificate", ...) in the error. Runs on a connection's own thread. */
#ifndef PT_AMQP_TLS_H
#define PT_AMQP_TLS_H

#include "pt_config.h"

#include <amqp.h>
#include <sys/time.h>

/* Gives conn a socket for ep and opens it within tv: the TCP connection and
 * for amqps:// the TLS handshake. Returns 0, or -1 with why in err (conn
 * then has no open socket; amqp_destroy_connection frees what it holds). */
int pt_amqp_socket_open(amqp_connection_state_t conn, const pt_amqp_endpoint_t *ep,
                        const struct timeval *tv, char *err, size_t errlen);

/* Logs, once per configured connection, the warning that an amqps://
 * endpoint with tls.verify false does not check who the broker is. what
 * names it ("AMQP 'My Backend'"). Does nothing for other endpoints. */
void pt_amqp_tls_warn(const char *what, const pt_amqp_endpoint_t *ep);

#endif
