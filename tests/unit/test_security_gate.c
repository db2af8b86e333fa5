/* pt_security_gate alone: the bounds on uncached password checks by client
 * address, user name, credential and in all, and the failures an address
 * may have pending. (test_security.c meets the same bounds through
 * pt_security_check.) Each case uses addresses, names and digests of its
 * own: the gate is one for the process. */
#include "pt_metrics.h"
#include "pt_security_gate.h"
#include "pt_test.h"

#include <string.h>

#define S 1000000000ull

static const pt__security_gate_cfg_t *cfg(uint32_t per_address, uint32_t per_user, uint32_t total,
                                          uint32_t failures)
{
    static pt__security_gate_cfg_t g;
    g = (pt__security_gate_cfg_t){.per_address = per_address,
                                  .per_user = per_user,
                                  .total = total,
                                  .failures = failures,
                                  .window_ns = 60 * S};
    return &g;
}

/* An IPv4 address key as pt_security.c makes them. */
static const unsigned char *addr(unsigned char last)
{
    static unsigned char a[16][5];
    static int i;
    unsigned char *k = a[i++ % 16];
    memcpy(k, (unsigned char[]){4, 10, 9, 0, last}, 5);
    return k;
}

static const unsigned char *digest(const char *name)
{
    static unsigned char d[16][PT_SECURITY_GATE_DIGEST];
    static int i;
    unsigned char *k = d[i++ % 16];
    memset(k, 0, PT_SECURITY_GATE_DIGEST);
    memcpy(k, name,
           strlen(name) < PT_SECURITY_GATE_DIGEST ? strlen(name) : PT_SECURITY_GATE_DIGEST);
    return k;
}

static int enter(const pt__security_gate_cfg_t *g, const unsigned char *a, const char *def,
                 const char *user, const char *cred, pt__security_ticket_t *t)
{
    uint32_t retry = 0;
    *t = (pt__security_ticket_t){0};
    return pt__security_gate_enter(g, a, a ? 5 : 0, def, user, strlen(user), digest(cred), t,
                                   &retry);
}

PT_CASE(per_address)
{
    const pt__security_gate_cfg_t *g = cfg(2, 100, 100, 0);
    const unsigned char *a = addr(1);
    pt__security_ticket_t t1, t2, t3;
    PT_CHECK_INT(enter(g, a, "pa", "u1", "pa-1", &t1), -1);
    PT_CHECK_INT(enter(g, a, "pa", "u2", "pa-2", &t2), -1);
    PT_CHECK_INT(enter(g, a, "pa", "u3", "pa-3", &t3), PT_METRICS_AUTH_ADDRESS);
    PT_CHECK_INT(t3.held, 0);
    /* another address is not held back */
    PT_CHECK_INT(enter(g, addr(2), "pa", "u3", "pa-3", &t3), -1);
    pt__security_gate_leave(&t3, 0);
    /* a check that ends gives its place back */
    pt__security_gate_leave(&t1, 0);
    PT_CHECK_INT(t1.held, 0);
    pt__security_gate_leave(&t1, 0); /* twice is nothing */
    PT_CHECK_INT(enter(g, a, "pa", "u3", "pa-3", &t3), -1);
    pt__security_gate_leave(&t2, 0);
    pt__security_gate_leave(&t3, 0);
}

PT_CASE(same_credential_joins)
{
    const pt__security_gate_cfg_t *g = cfg(1, 1, 100, 0);
    const unsigned char *a = addr(3);
    pt__security_ticket_t t1, t2, t3;
    PT_CHECK_INT(enter(g, a, "sc", "u", "sc-1", &t1), -1);
    /* the same credential again (another worker checks it): only the total bounds it */
    PT_CHECK_INT(enter(g, a, "sc", "u", "sc-1", &t2), -1);
    PT_CHECK_INT(t2.addr, -1);
    PT_CHECK_INT(t2.user, -1);
    /* a new one from the same address is one too many */
    PT_CHECK_INT(enter(g, a, "sc", "u", "sc-2", &t3), PT_METRICS_AUTH_ADDRESS);
    pt__security_gate_leave(&t1, 0);
    pt__security_gate_leave(&t2, 0);
}

PT_CASE(per_user_spares_clean_addresses)
{
    const pt__security_gate_cfg_t *g = cfg(100, 1, 100, 0);
    pt__security_ticket_t t1, t2, t3;
    /* an unknown address is never clean: held to per_user */
    PT_CHECK_INT(enter(g, NULL, "pu", "victim", "pu-1", &t1), -1);
    PT_CHECK_INT(t1.clean, 0);
    PT_CHECK_INT(enter(g, NULL, "pu", "victim", "pu-2", &t2), PT_METRICS_AUTH_USER);
    /* the user's own first login from a clean address still runs */
    PT_CHECK_INT(enter(g, addr(4), "pu", "victim", "pu-3", &t3), -1);
    PT_CHECK_INT(t3.clean, 1);
    /* the same name of another definition is another name */
    PT_CHECK_INT(enter(g, NULL, "pu2", "victim", "pu-4", &t2), -1);
    pt__security_gate_leave(&t1, 0);
    pt__security_gate_leave(&t2, 0);
    pt__security_gate_leave(&t3, 0);
}

PT_CASE(failures_wait)
{
    const pt__security_gate_cfg_t *g = cfg(100, 100, 100, 2);
    const unsigned char *a = addr(5);
    pt__security_ticket_t t;
    uint32_t retry = 0;
    PT_CHECK_INT(enter(g, a, "fw", "u", "fw-1", &t), -1);
    pt__security_gate_leave(&t, 1);
    PT_CHECK_INT(enter(g, a, "fw", "u", "fw-2", &t), -1);
    PT_CHECK_INT(t.clean, 0); /* a failure is pending */
    pt__security_gate_leave(&t, 1);
    t = (pt__security_ticket_t){0};
    PT_CHECK_INT(pt__security_gate_enter(g, a, 5, "fw", "u", 1, digest("fw-3"), &t, &retry),
                 PT_METRICS_AUTH_FAILURES);
    /* 2 a minute are forgiven: one is, in 30 s */
    PT_CHECK(retry >= 29 && retry <= 30);
    /* a success counts as no failure, and other addresses are not touched */
    PT_CHECK_INT(enter(g, addr(6), "fw", "u", "fw-3", &t), -1);
    pt__security_gate_leave(&t, 0);
}

PT_CASE(total_keeps_a_quarter_for_clean_addresses)
{
    const pt__security_gate_cfg_t *g = cfg(100, 100, 4, 0);
    pt__security_ticket_t t[5];
    PT_CHECK_INT(enter(g, NULL, "tq", "a", "tq-1", &t[0]), -1);
    PT_CHECK_INT(enter(g, NULL, "tq", "b", "tq-2", &t[1]), -1);
    PT_CHECK_INT(enter(g, NULL, "tq", "c", "tq-3", &t[2]), -1);
    PT_CHECK_INT(enter(g, NULL, "tq", "d", "tq-4", &t[3]), PT_METRICS_AUTH_TOTAL);
    PT_CHECK_INT(enter(g, addr(7), "tq", "d", "tq-4", &t[3]), -1);
    PT_CHECK_INT(enter(g, addr(8), "tq", "e", "tq-5", &t[4]), PT_METRICS_AUTH_TOTAL);
    for (int i = 0; i < 4; i++)
        pt__security_gate_leave(&t[i], 0);
    PT_CHECK_INT(enter(g, NULL, "tq", "e", "tq-5", &t[4]), -1);
    pt__security_gate_leave(&t[4], 0);
}

int main(void)
{
    PT_RUN(per_address);
    PT_RUN(same_credential_joins);
    PT_RUN(per_user_spares_clean_addresses);
    PT_RUN(failures_wait);
    PT_RUN(total_keeps_a_quarter_for_clean_addresses);
    return PT_TEST_DONE();
}
