/* pt_security_hash: `portico hash-password`, which makes the hashes that a
 * config's password_hash and key_hash hold (docs/security.md). Runs on the
 * command line, never in a running gateway. */
#ifndef PT_SECURITY_HASH_H
#define PT_SECURITY_HASH_H

#include <stddef.h>

/* `portico hash-password [--api-key]`: reads a password (or an API key) from
 * stdin, without echo and twice when stdin is a terminal, never from argv,
 * and prints the line to paste into the config: an argon2id string for
 * password_hash, or "blake2b:<hex>" for key_hash. Returns the exit status. */
int pt_security_hash_password_cli(int api_key);

/* The same hashes for tests and tools. out must hold 128 bytes. Return 0 or -1. */
int pt_security_hash_password(const char *password, size_t len, char out[128]);
int pt_security_hash_api_key(const char *key, size_t len, char out[128]);

#endif
