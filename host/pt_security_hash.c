#include "pt_security_hash.h"

#include <sodium.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

int pt_security_hash_password(const char *password, size_t len, char out[128])
{
    if (sodium_init() < 0) return -1;
    return crypto_pwhash_str_alg(out, password, len, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                 crypto_pwhash_MEMLIMIT_INTERACTIVE,
                                 crypto_pwhash_ALG_ARGON2ID13) == 0
               ? 0
               : -1;
}

int pt_security_hash_api_key(const char *key, size_t len, char out[128])
{
    unsigned char digest[crypto_generichash_BYTES]; /* BLAKE2b-256, as key_hash holds */
    if (sodium_init() < 0) return -1;
    crypto_generichash(digest, sizeof digest, (const unsigned char *)key, len, NULL, 0);
    memcpy(out, "blake2b:", 8);
    sodium_bin2hex(out + 8, 128 - 8, digest, sizeof digest);
    return 0;
}

/* Reads one line from fd 0 into buf; returns its length, or -1. With a
 * terminal, echo is off while it is typed. */
static long pt__read_secret(const char *prompt, char *buf, size_t cap)
{
    struct termios old, quiet;
    int tty = isatty(0) && tcgetattr(0, &old) == 0;
    if (tty) {
        fputs(prompt, stderr);
        fflush(stderr);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        tcsetattr(0, TCSAFLUSH, &quiet);
    }
    size_t n = 0;
    int ch = 0;
    long rc = -1;
    while (n + 1 < cap) {
        char c;
        ssize_t r = read(0, &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            ch = EOF;
            break;
        }
        if (c == '\n') {
            ch = '\n';
            break;
        }
        buf[n++] = c;
    }
    if (n + 1 < cap || ch == '\n') {
        if (n && buf[n - 1] == '\r') n--;
        buf[n] = '\0';
        rc = (long)n;
    }
    if (tty) tcsetattr(0, TCSAFLUSH, &old);
    return rc;
}

int pt_security_hash_password_cli(int api_key)
{
    char *pw = NULL, *again = NULL, out[128];
    int status = 1;
    const size_t cap = 4096;
    if (sodium_init() < 0 || !(pw = sodium_malloc(cap)) || !(again = sodium_malloc(cap))) {
        fprintf(stderr, "portico: cannot start libsodium\n");
        goto done;
    }
    const char *what = api_key ? "API key" : "password";
    long n = pt__read_secret(api_key ? "API key: " : "Password: ", pw, cap);
    if (n <= 0) {
        fprintf(stderr, "portico: no %s on stdin (or longer than %zu bytes)\n", what, cap - 2);
        goto done;
    }
    if (isatty(0)) {
        long m = pt__read_secret("Again: ", again, cap);
        if (m != n || sodium_memcmp(pw, again, (size_t)n) != 0) {
            fprintf(stderr, "portico: the two entries differ\n");
            goto done;
        }
    }
    if ((api_key ? pt_security_hash_api_key(pw, (size_t)n, out)
                 : pt_security_hash_password(pw, (size_t)n, out)) != 0) {
        fprintf(stderr, "portico: cannot hash the %s (out of memory?)\n", what);
        goto done;
    }
    printf("%s\n", out);
    status = 0;
done:
    sodium_free(pw);
    sodium_free(again);
    return status;
}
