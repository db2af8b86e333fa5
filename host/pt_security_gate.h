/* pt_security_gate: the bounds on uncached password checks, shared by every
 * worker thread (the thread pool they bound is the process's). Internal to
 * the security module: pt_security.c admits a check before it hashes and
 * lets it go when it is done; pt_security_config.c reads the bounds from
 * security.hash_checks. docs/security.md ("Password checks under attack")
 * has the policy. */
#ifndef PT_SECURITY_GATE_H
#define PT_SECURITY_GATE_H

#include <stddef.h>
#include <stdint.h>

#define PT_SECURITY_GATE_DIGEST 16 /* bytes of the credential digest a check is named by */
#define PT_SECURITY_GATE_MAX_TOTAL                                                                 \
    1024 /* keeps entries with checks under way below 1/4 of the                                   \
            gate's slots */

/* security.hash_checks: the bounds on uncached password checks. */
typedef struct {
    uint32_t per_address; /* queued or running, for one client address */
    uint32_t per_user;    /* ... for one user name of one definition */
    uint32_t total;       /* ... in the process */
    uint32_t failures;    /* failed checks an address may have pending; 0: no limit */
    uint64_t window_ns;   /* in which `failures` are forgiven */
} pt__security_gate_cfg_t;

/* What an admitted check holds of the gate until it ends. All zero: nothing. */
typedef struct {
    int held;
    int addr, user; /* their entries; -1: not counted (addr: the address is not known) */
    int cred;       /* the entry of the credential presented */
    int clean;      /* the address had no failure pending */
    double rate;    /* failures forgiven a second, as configured when admitted */
} pt__security_ticket_t;

/* Admits one uncached check of user (of the definition called def) from the
 * address key addr (addr_len 0: not known), of the credential whose cache
 * digest is digest, into *t. Returns -1 when admitted, else the
 * PT_METRICS_AUTH_ reason it is refused for, with the seconds to wait in
 * *retry. Any thread. */
int pt__security_gate_enter(const pt__security_gate_cfg_t *g, const unsigned char *addr,
                            size_t addr_len, const char *def, const char *user, size_t user_len,
                            const unsigned char digest[PT_SECURITY_GATE_DIGEST],
                            pt__security_ticket_t *t, uint32_t *retry);

/* Gives back what t holds (nothing when it holds nothing); a failed check is
 * one more failure of its address. Any thread. */
void pt__security_gate_leave(pt__security_ticket_t *t, int failed);

#endif
