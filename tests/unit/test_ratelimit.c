/* pt_ratelimit: token buckets, the Retry-After they compute, one count shared
 * by many threads, a bounded table, and the rate_limit config syntax. */
#include "pt_config.h"
#include "pt_ratelimit.h"
#include "pt_test.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define S 1000000000ull /* ns */

static int take(pt_ratelimit_t *rl, const char *key, double rate, double burst, uint64_t now,
                uint32_t *retry)
{
    return pt_ratelimit_take(rl, key, strlen(key), rate, burst, now, retry);
}

PT_CASE(parse)
{
    double r;
    PT_CHECK_INT(pt_ratelimit_parse_rate("10", &r), 0);
    PT_CHECK(r == 10);
    PT_CHECK_INT(pt_ratelimit_parse_rate("10/s", &r), 0);
    PT_CHECK(r == 10);
    PT_CHECK_INT(pt_ratelimit_parse_rate("600/m", &r), 0);
    PT_CHECK(r == 10);
    PT_CHECK_INT(pt_ratelimit_parse_rate("36/h", &r), 0);
    PT_CHECK(r == 0.01);
    PT_CHECK_INT(pt_ratelimit_parse_rate("0.5", &r), 0);
    PT_CHECK(r == 0.5);
    PT_CHECK_INT(pt_ratelimit_parse_rate("5/min", &r), 0);
    PT_CHECK_INT(pt_ratelimit_parse_rate("0", &r), -1);
    PT_CHECK_INT(pt_ratelimit_parse_rate("-1", &r), -1);
    PT_CHECK_INT(pt_ratelimit_parse_rate("10/d", &r), -1);
    PT_CHECK_INT(pt_ratelimit_parse_rate("ten", &r), -1);
    PT_CHECK_INT(pt_ratelimit_parse_rate("10x", &r), -1);
    PT_CHECK_INT(pt_ratelimit_parse_rate("", &r), -1);
    PT_CHECK_INT(pt_ratelimit_parse_rate("inf", &r), -1);
}

PT_CASE(bucket)
{
    pt_ratelimit_t *rl;
    uint32_t retry = 0;
    PT_CHECK_INT(pt_ratelimit_new(1024, &rl), 0);
    uint64_t t0 = 1000 * S;
    /* a new bucket is full: burst requests at once, then none */
    for (int i = 0; i < 3; i++)
        PT_CHECK_INT(take(rl, "a", 1, 3, t0, &retry), 0);
    PT_CHECK_INT(take(rl, "a", 1, 3, t0, &retry), 1);
    PT_CHECK_INT(retry, 1);
    /* other keys are not touched */
    PT_CHECK_INT(take(rl, "b", 1, 3, t0, &retry), 0);
    PT_CHECK_INT(pt_ratelimit_take(rl, "a\0x", 3, 1, 3, t0, &retry), 0);
    /* half a second gives half a token: still empty; a whole one: one more */
    PT_CHECK_INT(take(rl, "a", 1, 3, t0 + S / 2, &retry), 1);
    PT_CHECK_INT(take(rl, "a", 1, 3, t0 + S + S / 10, &retry), 0);
    PT_CHECK_INT(take(rl, "a", 1, 3, t0 + S + S / 10, &retry), 1);
    /* refill stops at burst */
    for (int i = 0; i < 3; i++)
        PT_CHECK_INT(take(rl, "a", 1, 3, t0 + 100 * S, &retry), 0);
    PT_CHECK_INT(take(rl, "a", 1, 3, t0 + 100 * S, &retry), 1);
    /* Retry-After: whole seconds until a token is there */
    PT_CHECK_INT(take(rl, "slow", 0.1, 1, t0, &retry), 0);
    PT_CHECK_INT(take(rl, "slow", 0.1, 1, t0, &retry), 1);
    PT_CHECK_INT(retry, 10);
    PT_CHECK_INT(take(rl, "slow", 0.1, 1, t0 + 4 * S, &retry), 1);
    PT_CHECK_INT(retry, 6);
    /* a clock that goes backwards adds nothing */
    PT_CHECK_INT(take(rl, "slow", 0.1, 1, t0 - 50 * S, &retry), 1);
    /* the rate of the take counts: a reload to a higher limit applies at once */
    PT_CHECK_INT(take(rl, "slow", 1000, 1, t0 + 4 * S + S / 100, &retry), 0);
    PT_CHECK_INT(pt_ratelimit_count(rl), 4);
    pt_ratelimit_free(rl);
}

/* Many threads on one bucket: exactly burst requests get through in total. */
typedef struct {
    pt_ratelimit_t *rl;
    int allowed;
} worker_t;

static void *hammer(void *arg)
{
    worker_t *w = arg;
    uint32_t retry;
    for (int i = 0; i < 5000; i++) {
        if (take(w->rl, "shared", 1e-9, 1000, 5 * S, &retry) == 0) w->allowed++;
        if ((i & 63) == 0) {
            char key[32];
            snprintf(key, sizeof key, "noise-%d", i);
            take(w->rl, key, 1, 1, 5 * S, &retry);
        }
    }
    return NULL;
}

PT_CASE(threads)
{
    pt_ratelimit_t *rl;
    PT_CHECK_INT(pt_ratelimit_new(1 << 16, &rl), 0);
    pthread_t th[8];
    worker_t w[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (worker_t){.rl = rl};
        pthread_create(&th[i], NULL, hammer, &w[i]);
    }
    int total = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        total += w[i].allowed;
    }
    PT_CHECK_INT(total, 1000);
    pt_ratelimit_free(rl);
}

PT_CASE(bounded)
{
    pt_ratelimit_t *rl;
    uint32_t retry;
    PT_CHECK_INT(pt_ratelimit_new(256, &rl), 0);
    for (int i = 0; i < 10000; i++) {
        char key[32];
        snprintf(key, sizeof key, "user-%d", i);
        PT_CHECK_INT(take(rl, key, 1, 5, 7 * S + (uint64_t)i, &retry), 0);
    }
    PT_CHECK(pt_ratelimit_count(rl) <= 256);
    PT_CHECK(pt_ratelimit_count(rl) >= 64);
    /* buckets that refilled make room first: an empty one survives them */
    pt_ratelimit_free(rl);
    PT_CHECK_INT(pt_ratelimit_new(64 * 4, &rl), 0);
    PT_CHECK_INT(take(rl, "hot", 0.001, 1, 10 * S, &retry), 0);
    for (uint64_t i = 1; i <= 400; i++) {
        char key[32];
        snprintf(key, sizeof key, "idle-%d", (int)i);
        /* each idle bucket is empty when made and full 1 s later; "hot"
         * stays empty for 1000 s, so it is never the one dropped */
        take(rl, key, 1, 1, 10 * S + i * 2 * S, &retry);
        take(rl, key, 1, 1, 10 * S + i * 2 * S, &retry);
    }
    PT_CHECK(pt_ratelimit_count(rl) <= 256);
    PT_CHECK_INT(take(rl, "hot", 0.001, 1, 812 * S, &retry), 1); /* 0.802 of a token */
    pt_ratelimit_free(rl);
    /* the global table is one for the process */
    PT_CHECK(pt_ratelimit_global() != NULL);
    PT_CHECK(pt_ratelimit_global() == pt_ratelimit_global());
}

/* A caller cycling through 200 000 names (a trusted gateway's end users,
 * JWT subjects) against the process-sized table: the table stays at its
 * bound, each new name costs constant time (a full shard was scanned on
 * every new name before: some 3 s for these 200 000, now well under 1 s),
 * and a bucket in use all along is not the one forgotten. */
PT_CASE(name_flood)
{
    pt_ratelimit_t *rl;
    uint32_t retry;
    PT_CHECK_INT(pt_ratelimit_new(64 * 1024, &rl), 0);
    uint64_t t0 = 1000 * S;
    PT_CHECK_INT(take(rl, "hot", 1.0 / 60, 1, t0, &retry), 0);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < 200000; i++) {
        char key[40];
        int n = snprintf(key, sizeof key, "ch%cuser-%d", 0, i);
        pt_ratelimit_take(rl, key, (size_t)n, 1.0 / 60, 3, t0 + (uint64_t)i * 1000, &retry);
        if (i % 1000 == 0)
            PT_CHECK_INT(take(rl, "hot", 1.0 / 60, 1, t0 + (uint64_t)i * 1000, &retry), 1);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    PT_CHECK(pt_ratelimit_count(rl) <= 64 * 1024);
    PT_CHECK(pt_ratelimit_count(rl) >= 60 * 1024);
    PT_CHECK(secs < 1.0);
    /* still empty: it was never forgotten */
    PT_CHECK_INT(take(rl, "hot", 1.0 / 60, 1, t0 + 200000000ull, &retry), 1);
    PT_CHECK(retry >= 50 && retry <= 60);
    pt_ratelimit_free(rl);
}

static int load_fails_with(const char *path, const char *text, const char *expect)
{
    char err[512];
    pt_config_t *cfg = NULL;
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    if (pt_config_load(path, &cfg, err, sizeof err) == 0) {
        pt_config_free(cfg);
        return 0;
    }
    if (!strstr(err, expect)) {
        fprintf(stderr, "error '%s', expected '%s'\n", err, expect);
        return 0;
    }
    return 1;
}

PT_CASE(config)
{
    char path[] = "/tmp/pt_test_ratelimit.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return;
    close(fd);
    const char *text = "channels:\n"
                       "  rest:\n"
                       "    - name: a\n"
                       "      url_path: /a\n"
                       "      service: s\n"
                       "      rate_limit: {rate: 600/m, burst: 20, per: user}\n"
                       "    - name: b\n"
                       "      url_path: /b\n"
                       "      service: s\n"
                       "      rate_limit: {rate: 2.5}\n"
                       "    - name: c\n"
                       "      url_path: /c\n"
                       "      service: s\n"
                       "  gateway:\n"
                       "    - name: g\n"
                       "      url_path: /g/{service}\n"
                       "      gateway_service_list: [s]\n"
                       "      rate_limit:\n"
                       "        rate: 0.5/s\n";
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    char err[512];
    pt_config_t *cfg = NULL;
    PT_CHECK_INT(pt_config_load(path, &cfg, err, sizeof err), 0);
    if (cfg) {
        PT_CHECK(cfg->channels[0].rate_limit.rate == 10);
        PT_CHECK(cfg->channels[0].rate_limit.burst == 20);
        PT_CHECK_INT(cfg->channels[0].rate_limit.per_user, 1);
        PT_CHECK(cfg->channels[1].rate_limit.rate == 2.5);
        PT_CHECK(cfg->channels[1].rate_limit.burst == 3); /* a second's worth, rounded up */
        PT_CHECK_INT(cfg->channels[1].rate_limit.per_user, 0);
        PT_CHECK(cfg->channels[2].rate_limit.rate == 0);
        PT_CHECK(cfg->channels[3].rate_limit.rate == 0.5);
        PT_CHECK(cfg->channels[3].rate_limit.burst == 1);
        pt_config_free(cfg);
    }
    const char *head = "channels:\n  rest:\n    - name: a\n      url_path: /a\n      service: s\n";
    char bad[512];
    snprintf(bad, sizeof bad, "%s      rate_limit: {rate: fast}\n", head);
    PT_CHECK(load_fails_with(path, bad, ":6: channels.rest[0].rate_limit.rate: expected"));
    snprintf(bad, sizeof bad, "%s      rate_limit: {burst: 3}\n", head);
    PT_CHECK(load_fails_with(path, bad, "channels.rest[0].rate_limit.rate"));
    snprintf(bad, sizeof bad, "%s      rate_limit: {rate: 1, burst: 0}\n", head);
    PT_CHECK(load_fails_with(path, bad, "rate_limit.burst: a whole number"));
    snprintf(bad, sizeof bad, "%s      rate_limit: {rate: 1, per: ip}\n", head);
    PT_CHECK(load_fails_with(path, bad, "rate_limit.per: expected user or channel"));
    snprintf(bad, sizeof bad, "%s      rate_limit: {rate: 1, window: 3}\n", head);
    PT_CHECK(load_fails_with(path, bad, "rate_limit: unknown key 'window'"));
    unlink(path);
}

int main(void)
{
    PT_RUN(parse);
    PT_RUN(bucket);
    PT_RUN(threads);
    PT_RUN(bounded);
    PT_RUN(name_flood);
    PT_RUN(config);
    return PT_TEST_DONE();
}
