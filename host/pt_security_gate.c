#include "pt_security_gate.h"
#include "pt_metrics.h"

#include <sodium.h>
#include <uv.h>

#include <math.h>
#include <pthread.h>
#include <string.h>

#define PT__GATE_SLOTS 8192 /* a power of two */
#define PT__GATE_PROBE 8    /* slots an entry may sit in */

/* The gate: what each client address and each user name has under way, and
 * the failures each address has pending, shared by every worker thread (the
 * thread pool they bound is the process's). One mutex: it is taken twice
 * per argon2id run, which costs tens of milliseconds, so it is never hot.
 * It outlives a reload, which the checks in flight do too. Entries are
 * named by a keyed BLAKE2b of the address or user name, so a caller cannot
 * choose names that pile into one probe window. */
typedef struct {
    unsigned char id[16];
    int used;
    uint32_t inflight;     /* admitted checks not done */
    double fails;          /* failed checks not forgiven yet (addresses) */
    uint64_t fails_ns;     /* when fails was brought up to date */
    uint64_t last_fail_ns; /* the last failed check (addresses); 0: none */
} pt__gate_entry_t;

static struct {
    pthread_mutex_t lock;
    pthread_once_t once;
    unsigned char key[crypto_generichash_KEYBYTES];
    uint32_t inflight;
    pt__gate_entry_t slots[PT__GATE_SLOTS];
} pt__gate = {.lock = PTHREAD_MUTEX_INITIALIZER, .once = PTHREAD_ONCE_INIT};

static void pt__gate_init(void)
{
    randombytes_buf(pt__gate.key, sizeof pt__gate.key);
}

static void pt__gate_id(unsigned char id[16], char kind, const void *a, size_t a_len, const void *b,
                        size_t b_len)
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, pt__gate.key, sizeof pt__gate.key, 16);
    crypto_generichash_update(&st, (const unsigned char *)&kind, 1);
    crypto_generichash_update(&st, a, a_len);
    crypto_generichash_update(&st, (const unsigned char *)"", 1); /* a/b boundary */
    crypto_generichash_update(&st, b, b_len);
    crypto_generichash_final(&st, id, 16);
}

/* e's failures as of now: they are forgiven at rate a second. */
static double pt__gate_fails(pt__gate_entry_t *e, double rate, uint64_t now)
{
    if (e->fails > 0 && now > e->fails_ns) {
        e->fails -= (double)(now - e->fails_ns) / 1e9 * rate;
        if (e->fails < 0) e->fails = 0;
    }
    e->fails_ns = now;
    return e->fails;
}

/* The entry called id: found in its probe window, or made there in place of
 * an empty slot or else of the idle one with least to remember (fewest
 * failures pending, then no failure in the window). -1: every slot there
 * has checks under way. Under the lock. */
static int pt__gate_entry(const unsigned char id[16], double rate, uint64_t window_ns, uint64_t now)
{
    uint32_t h;
    memcpy(&h, id, sizeof h);
    int best = -1;
    double best_fails = 0;
    for (uint32_t i = 0; i < PT__GATE_PROBE; i++) {
        int k = (int)((h + i) & (PT__GATE_SLOTS - 1));
        pt__gate_entry_t *e = &pt__gate.slots[k];
        if (e->used && !memcmp(e->id, id, sizeof e->id)) return k;
        if (e->used && e->inflight) continue;
        double f = !e->used ? -1
                            : pt__gate_fails(e, rate, now) +
                                  (e->last_fail_ns && now - e->last_fail_ns < window_ns ? 0.5 : 0);
        if (best < 0 || f < best_fails) {
            best = k;
            best_fails = f;
        }
    }
    if (best >= 0) {
        pt__gate_entry_t *e = &pt__gate.slots[best];
        memset(e, 0, sizeof *e);
        memcpy(e->id, id, sizeof e->id);
        e->used = 1;
        e->fails_ns = now;
    }
    return best;
}

int pt__security_gate_enter(const pt__security_gate_cfg_t *g, const unsigned char *addr,
                            size_t addr_len, const char *def, const char *user, size_t user_len,
                            const unsigned char digest[PT_SECURITY_GATE_DIGEST],
                            pt__security_ticket_t *t, uint32_t *retry)
{
    unsigned char aid[16], uid[16], cid[16];
    uint64_t now = uv_hrtime();
    /* without a limit, fails only rank entries to forget: one forgiven a window */
    double rate = (double)(g->failures ? g->failures : 1) / ((double)g->window_ns / 1e9);
    int why = -1;

    pthread_once(&pt__gate.once, pt__gate_init);
    pt__gate_id(aid, 'a', addr, addr_len, "", 0);
    pt__gate_id(uid, 'u', def, strlen(def), user, user_len);
    pt__gate_id(cid, 'c', digest, PT_SECURITY_GATE_DIGEST, "", 0);
    *retry = 1;
    pthread_mutex_lock(&pt__gate.lock);
    int a = addr_len ? pt__gate_entry(aid, rate, g->window_ns, now) : -1;
    int u = pt__gate_entry(uid, rate, g->window_ns, now);
    int k = pt__gate_entry(cid, rate, g->window_ns, now);
    /* (a later entry may have been made in the place of an earlier one) */
    pt__gate_entry_t *ae =
        a >= 0 && !memcmp(pt__gate.slots[a].id, aid, 16) ? &pt__gate.slots[a] : NULL;
    pt__gate_entry_t *ue =
        u >= 0 && !memcmp(pt__gate.slots[u].id, uid, 16) ? &pt__gate.slots[u] : NULL;
    pt__gate_entry_t *ke = k >= 0 ? &pt__gate.slots[k] : NULL;
    /* Clean: no check failed in the window and none under way, so an
     * attacker's address is clean for one check at most, and an unknown
     * address never (it could be anyone's). */
    double fails = ae ? pt__gate_fails(ae, rate, now) : 1;
    int clean =
        ae && !ae->inflight && (!ae->last_fail_ns || now - ae->last_fail_ns >= g->window_ns);
    if ((addr_len && !ae) || !ue || !ke) {
        why = PT_METRICS_AUTH_TOTAL; /* no room to count them: as good as full */
    } else if (ae && g->failures && fails > (double)g->failures - 1) {
        why = PT_METRICS_AUTH_FAILURES;
        double wait = ceil((fails - ((double)g->failures - 1)) / rate);
        *retry = wait < 1 ? 1 : wait > 86400 ? 86400 : (uint32_t)wait;
    } else if (ke->inflight) {
        /* The same credential is being checked on another worker (each
         * worker runs one check per credential and the rest wait for it):
         * one client fanning a new credential out over many connections
         * is not refused for it. The same guess again is no new
         * information, so only the total bounds it, and only the first
         * check's failure counts. */
        if (pt__gate.inflight >= g->total) {
            why = PT_METRICS_AUTH_TOTAL;
        } else {
            ke->inflight++;
            pt__gate.inflight++;
            *t = (pt__security_ticket_t){
                .held = 1, .addr = -1, .user = -1, .cred = k, .clean = clean, .rate = rate};
        }
    } else if (ae && ae->inflight >= g->per_address) {
        why = PT_METRICS_AUTH_ADDRESS;
    } else if (!clean && ue->inflight >= g->per_user) {
        /* a clean address is not held back by what others do with the
         * name: a flood of wrong passwords for a user does not lock it out */
        why = PT_METRICS_AUTH_USER;
    } else if (pt__gate.inflight >= (clean ? g->total : g->total - g->total / 4)) {
        why = PT_METRICS_AUTH_TOTAL; /* a quarter is kept for clean addresses */
    } else {
        if (ae) ae->inflight++;
        ue->inflight++;
        ke->inflight++;
        pt__gate.inflight++;
        *t = (pt__security_ticket_t){
            .held = 1, .addr = a, .user = u, .cred = k, .clean = clean, .rate = rate};
    }
    pthread_mutex_unlock(&pt__gate.lock);
    return why;
}

void pt__security_gate_leave(pt__security_ticket_t *t, int failed)
{
    if (!t->held) return;
    t->held = 0;
    uint64_t now = uv_hrtime();
    pthread_mutex_lock(&pt__gate.lock);
    if (t->addr >= 0) {
        pt__gate_entry_t *e = &pt__gate.slots[t->addr];
        e->inflight--;
        if (failed) {
            e->fails = pt__gate_fails(e, t->rate, now) + 1;
            e->last_fail_ns = now;
        }
    }
    if (t->user >= 0) pt__gate.slots[t->user].inflight--;
    pt__gate.slots[t->cred].inflight--;
    pt__gate.inflight--;
    pthread_mutex_unlock(&pt__gate.lock);
}
