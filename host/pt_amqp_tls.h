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
 * certificate", ...) in the error; so does a broker that refuses portico's
 * client certificate (the alert it sent), and one that takes the TCP
 * connection but never answers the handshake fails when tv runs out.
 * Runs on a connection's own thread. */
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

/* After the login on an amqps:// connection failed with status (rabbitmq-c's
 * library error): for AMQP_STATUS_SSL_ERROR (its bare "a SSL error
 * occurred") returns 1 with a better why in buf: the alert the broker sent,
 * when this thread's OpenSSL error queue holds one (TLS 1.3 checks the
 * client certificate after the client's side of the handshake, so a refusal
 * ends the login), else that the broker closed the connection (its reset can
 * drop the alert). Clears the queue then. Else returns 0. */
int pt_amqp_tls_late_error(const pt_amqp_endpoint_t *ep, int status, char *buf, size_t len);

/* Logs, once per configured connection, the warning that an amqps://
 * endpoint with tls.verify false does not check who the broker is. what
 * names it ("AMQP 'My Backend'"). Does nothing for other endpoints. */
void pt_amqp_tls_warn(const char *what, const pt_amqp_endpoint_t *ep);

#endif
