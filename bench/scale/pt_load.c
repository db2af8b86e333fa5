/* pt_load: the load client of bench/run's c10k and fanout scenarios.
 *
 * One thread, one epoll set, non-blocking sockets to 127.0.0.1: many more
 * connections than wrk's threads hold comfortably, and a WebSocket mode that
 * counts deliveries per socket. bench/run compiles it with cc at run time
 * (no build step of the project needs it).
 *
 *   pt_load http PORT PATH -c N -d SECS [-b BODYFILE] [-H 'name: value']...
 *       N keep-alive connections, each one request at a time (closed loop),
 *       measured only once all N are connected. Prints one line
 *       BENCH_JSON {...} in the format of bench/wrk/post.lua.
 *   pt_load ws PORT PATH -c N -P PUSH_PATH [-u USERS] [-k PUSHES] [-r ROUNDS]
 *           [-s BYTES] [-H 'name: value']...
 *       N WebSockets, socket i sending x-portico-username: u<i % USERS>; then
 *       pushes through POST PUSH_PATH {"seq":S,"user":"u0"?,"pad":"..."}:
 *       ROUNDS single pushes to everyone (the time until the last socket has
 *       it), PUSHES pipelined ones (messages per second), and the same to
 *       user u0 alone. Checks that each socket got each message once, in
 *       order, and that no other user's socket got u0's. Prints BENCH_JSON.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNECTING 256 /* connects and handshakes under way at once */
#define PUSH_TAG ((uint32_t)-1)

enum { S_IDLE, S_CONNECTING, S_HANDSHAKE, S_OPEN, S_WAIT, S_DEAD };

typedef struct {
    int fd, state, user;
    char *buf;
    size_t len, cap;
    uint64_t sent_ns;
    int64_t last_seq;
    long got, disorder;
} conn_t;

static int port, n_conns, seconds = 5, users = 100, pushes = 200, rounds = 3, pad = 100;
static const char *path, *push_path, *body_file;
static char headers[8192];
static char *req;
static size_t req_len;
static conn_t *conns;
static int ep, connecting, n_up;
static long err_connect, err_read, err_write, err_status;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static void die(const char *m)
{
    fprintf(stderr, "pt_load: %s: %s\n", m, strerror(errno));
    exit(2);
}

/* ---- latency histogram: 1 us buckets below 100 ms, 1 ms ones to 60 s ---- */
#define FINE 100000
#define COARSE 60000
static uint32_t fine[FINE], coarse[COARSE];
static uint64_t h_n;
static double h_sum, h_sq, h_min = 1e18, h_max;

static void h_add(uint64_t us)
{
    if (us < FINE)
        fine[us]++;
    else
        coarse[us / 1000 < COARSE ? us / 1000 : COARSE - 1]++;
    h_n++;
    h_sum += us;
    h_sq += (double)us * us;
    if (us < h_min) h_min = us;
    if (us > h_max) h_max = us;
}

static uint64_t h_pct(double p)
{
    uint64_t want = (uint64_t)(p / 100.0 * h_n + 0.5), seen = 0;
    if (want == 0) want = 1;
    for (uint64_t i = 0; i < FINE; i++)
        if ((seen += fine[i]) >= want) return i;
    for (uint64_t i = FINE / 1000; i < COARSE; i++)
        if ((seen += coarse[i]) >= want) return i * 1000;
    return (uint64_t)h_max;
}

/* ---- sockets ---- */

static void ep_set(conn_t *c, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)(c - conns)};
    if (epoll_ctl(ep, op, c->fd, &ev) != 0) die("epoll_ctl");
}

static int open_socket(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) die("connect");
    return fd;
}

static void start_connect(conn_t *c)
{
    c->fd = open_socket();
    c->state = S_CONNECTING;
    c->len = 0;
    connecting++;
    ep_set(c, EPOLLOUT, EPOLL_CTL_ADD);
}

static void drop(conn_t *c, int retry)
{
    if (c->state == S_CONNECTING || c->state == S_HANDSHAKE) connecting--;
    if (c->state == S_OPEN || c->state == S_WAIT) n_up--;
    close(c->fd);
    c->state = S_DEAD;
    if (retry) start_connect(c);
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) { /* rare for small requests: wait it out */
            struct timespec t = {0, 100000};
            nanosleep(&t, NULL);
            continue;
        }
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int is_ws, measuring;

static void send_request(conn_t *c)
{
    c->sent_ns = now_ns();
    c->state = S_WAIT;
    if (send_all(c->fd, req, req_len) != 0) {
        err_write++;
        drop(c, 1);
    }
}

static void connected(conn_t *c)
{
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) {
        err_connect++;
        drop(c, 1);
        return;
    }
    ep_set(c, EPOLLIN, EPOLL_CTL_MOD);
    if (is_ws) {
        char hs[9000];
        int n = snprintf(hs, sizeof hs,
                         "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         "Sec-WebSocket-Version: 13\r\nx-portico-username: u%d\r\n%s\r\n",
                         path, c->user, headers);
        c->state = S_HANDSHAKE;
        if (send_all(c->fd, hs, (size_t)n) != 0) {
            err_write++;
            drop(c, 1);
        }
    } else {
        connecting--;
        n_up++;
        c->state = S_OPEN;
        if (measuring) send_request(c); /* a connection that came back */
    }
}

static int grow_read(conn_t *c)
{
    if (c->cap - c->len < 16384) {
        c->cap = c->cap ? c->cap * 2 : 32768;
        c->buf = realloc(c->buf, c->cap);
        if (!c->buf) die("realloc");
    }
    ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    if (r <= 0) return -1;
    c->len += (size_t)r;
    return 1;
}

static void consume(conn_t *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* A whole HTTP response at the head of c->buf: its length, 0 (not yet), -1. */
static long http_response(conn_t *c, int *status)
{
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head = (size_t)(end - c->buf) + 4;
    *status = c->len > 12 ? atoi(c->buf + 9) : 0;
    long clen = -1;
    for (char *p = c->buf; p < end;) {
        char *eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
        if (!eol) break;
        if ((size_t)(eol - p) > 15 && strncasecmp(p, "content-length:", 15) == 0)
            clen = atol(p + 15);
        p = eol + 2;
    }
    if (clen < 0) return -1; /* the servers under test all send Content-Length */
    return c->len >= head + (size_t)clen ? (long)(head + (size_t)clen) : 0;
}

/* ---- WebSocket frames (server to client: never masked) ---- */

static int64_t push_seq; /* the last seq pushed */

static void ws_frames(conn_t *c)
{
    size_t off = 0;
    while (c->len - off >= 2) {
        unsigned char *f = (unsigned char *)c->buf + off;
        uint64_t plen = f[1] & 0x7f;
        size_t hl = 2;
        if (plen == 126) {
            if (c->len - off < 4) break;
            plen = ((uint64_t)f[2] << 8) | f[3];
            hl = 4;
        } else if (plen == 127) {
            if (c->len - off < 10) break;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = (plen << 8) | f[2 + i];
            hl = 10;
        }
        if (c->len - off < hl + plen) break;
        if ((f[0] & 0x0f) == 1) {
            char *s = memmem(f + hl, plen, "\"seq\":", 6);
            int64_t seq = s ? atoll(s + 6) : -1;
            if (seq <= c->last_seq) c->disorder++;
            c->last_seq = seq;
            c->got++;
        } else if ((f[0] & 0x0f) == 8) {
            err_read++;
        }
        off += hl + plen;
    }
    if (off) consume(c, off);
}

/* ---- the loop ---- */

static int push_fd = -1;
static long push_answers, push_sent;

static void on_push_readable(void)
{
    char b[65536];
    for (;;) {
        ssize_t r = read(push_fd, b, sizeof b);
        if (r <= 0) {
            if (r == 0) {
                fprintf(stderr, "pt_load: the push connection closed\n");
                exit(2);
            }
            return;
        }
        /* count the answers by their status lines (bodies are small JSON) */
        for (char *p = b; (p = memmem(p, (size_t)(b + r - p), "HTTP/1.1 ", 9)); p += 9) {
            push_answers++;
            if (p + 9 < b + r && p[9] != '2') err_status++;
        }
    }
}

static void step(int timeout_ms, uint64_t stop_ns)
{
    struct epoll_event evs[512];
    int n = epoll_wait(ep, evs, 512, timeout_ms);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u32 == PUSH_TAG) {
            on_push_readable();
            continue;
        }
        conn_t *c = &conns[evs[i].data.u32];
        if (c->state == S_CONNECTING) {
            connected(c);
            continue;
        }
        int r = grow_read(c);
        if (r < 0) {
            if (c->state == S_HANDSHAKE)
                err_connect++;
            else
                err_read++;
            drop(c, c->state != S_OPEN || !is_ws);
            continue;
        }
        if (c->state == S_HANDSHAKE) {
            char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
            if (!end) continue;
            if (strncmp(c->buf, "HTTP/1.1 101", 12) != 0) {
                fprintf(stderr, "pt_load: handshake refused: %.*s\n", (int)(end - c->buf), c->buf);
                exit(2);
            }
            consume(c, (size_t)(end - c->buf) + 4);
            c->state = S_OPEN;
            connecting--;
            n_up++;
        }
        if (is_ws) {
            ws_frames(c);
            continue;
        }
        while (c->state == S_WAIT) {
            int st = 0;
            long whole = http_response(c, &st);
            if (whole == 0) break;
            if (whole < 0) {
                err_read++;
                drop(c, 1);
                break;
            }
            h_add((now_ns() - c->sent_ns) / 1000);
            if (st < 200 || st > 299) err_status++;
            consume(c, (size_t)whole);
            c->state = S_OPEN;
            if (now_ns() < stop_ns) send_request(c);
        }
    }
}

/* Opens every connection, MAX_CONNECTING at a time; the first one alone,
 * so a server that checks a password once caches it before the crowd. */
static double connect_all(void)
{
    uint64_t t0 = now_ns(), deadline = t0 + 60ull * 1000000000u;
    int next = 0;
    while (n_up < n_conns) {
        int limit = n_up == 0 ? 1 : MAX_CONNECTING;
        while (next < n_conns && connecting < limit)
            start_connect(&conns[next++]);
        step(50, 0);
        if (now_ns() > deadline) {
            fprintf(stderr, "pt_load: only %d of %d connections up after 60s\n", n_up, n_conns);
            exit(2);
        }
    }
    return (now_ns() - t0) / 1e9;
}

static void push(const char *user)
{
    char body[70000], pads[65536];
    memset(pads, 'x', (size_t)pad);
    pads[pad] = 0;
    push_seq++;
    int bl = user ? snprintf(body, sizeof body, "{\"seq\":%lld,\"user\":\"%s\",\"pad\":\"%s\"}",
                             (long long)push_seq, user, pads)
                  : snprintf(body, sizeof body, "{\"seq\":%lld,\"pad\":\"%s\"}",
                             (long long)push_seq, pads);
    char head[1024];
    int hl = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      "Content-Length: %d\r\n\r\n",
                      push_path, bl);
    if (send_all(push_fd, head, (size_t)hl) != 0 || send_all(push_fd, body, (size_t)bl) != 0)
        die("push write");
    push_sent++;
}

/* Waits until every socket of user (-1: all) has seen seq; returns the
 * seconds since t0, or -1 after 30 s. */
static double wait_seq(int user, int64_t seq, uint64_t t0)
{
    for (;;) {
        int done = 1;
        for (int i = 0; i < n_conns && done; i++)
            if ((user < 0 || conns[i].user == user) && conns[i].last_seq < seq) done = 0;
        if (done) return (now_ns() - t0) / 1e9;
        if (now_ns() - t0 > 30ull * 1000000000u) return -1;
        step(10, 0);
    }
}

static void ws_phase(const char *name, int user, int sep)
{
    char uname[32];
    snprintf(uname, sizeof uname, "u%d", user);
    int targets = 0;
    for (int i = 0; i < n_conns; i++)
        targets += user < 0 || conns[i].user == user;
    printf("%s\"%s\":{\"sockets\":%d,\"latency_ms\":[", sep ? "," : "", name, targets);
    for (int r = 0; r < rounds; r++) {
        uint64_t t0 = now_ns();
        push(user < 0 ? NULL : uname);
        double s = wait_seq(user, push_seq, t0);
        printf("%s%.3f", r ? "," : "", s < 0 ? -1.0 : s * 1000);
    }
    uint64_t t0 = now_ns();
    for (int k = 0; k < pushes; k++)
        push(user < 0 ? NULL : uname);
    double s = wait_seq(user, push_seq, t0);
    printf("],\"pushes\":%d,\"messages\":%lld,\"seconds\":%.4f,\"msgs_per_s\":%.0f}", pushes,
           (long long)targets * pushes, s, s > 0 ? (double)targets * pushes / s : 0.0);
}

static void run_ws(void)
{
    for (int i = 0; i < n_conns; i++) {
        conns[i].user = i % users;
        conns[i].last_seq = 0;
    }
    double cs = connect_all();
    push_fd = open_socket();
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = PUSH_TAG};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, push_fd, &ev) != 0) die("epoll_ctl");
    { /* wait for the push connection */
        fd_set w;
        FD_ZERO(&w);
        FD_SET(push_fd, &w);
        struct timeval tv = {5, 0};
        select(push_fd + 1, NULL, &w, NULL, &tv);
    }
    printf("BENCH_JSON {\"connect_s\":%.3f,", cs);
    ws_phase("channel", -1, 0);
    ws_phase("user", 0, 1);
    uint64_t t0 = now_ns();
    while (push_answers < push_sent && now_ns() - t0 < 5000000000ull)
        step(10, 0);
    for (int i = 0; i < 20; i++)
        step(5, 0); /* anything that should not come */
    long per_all = rounds + pushes, missing = 0, extra = 0, disorder = 0;
    for (int i = 0; i < n_conns; i++) {
        long want = per_all + (conns[i].user == 0 ? per_all : 0);
        if (conns[i].got < want) missing += want - conns[i].got;
        if (conns[i].got > want) extra += conns[i].got - want;
        disorder += conns[i].disorder;
    }
    printf(",\"check\":{\"missing\":%ld,\"extra\":%ld,\"out_of_order\":%ld,\"closed\":%ld,"
           "\"push_answers\":%ld,\"push_sent\":%ld,\"push_errors\":%ld}}\n",
           missing, extra, disorder, err_read, push_answers, push_sent, err_status);
}

static void run_http(void)
{
    double cs = connect_all();
    err_connect = 0; /* retried until up: what counts is whether all got there */
    uint64_t t0 = now_ns(), stop = t0 + (uint64_t)seconds * 1000000000u;
    measuring = 1;
    for (int i = 0; i < n_conns; i++)
        send_request(&conns[i]);
    while (now_ns() < stop)
        step(10, stop);
    uint64_t t1 = now_ns();
    /* the answers still on their way are not waited for */
    double mean = h_n ? h_sum / h_n : 0, var = h_n ? h_sq / h_n - mean * mean : 0;
    printf("BENCH_JSON {\"requests\":%llu,\"duration_us\":%llu,\"bytes\":0,\"connect_s\":%.3f,"
           "\"connections\":%d,"
           "\"errors\":{\"connect\":%ld,\"read\":%ld,\"write\":%ld,\"status\":%ld,\"timeout\":0},"
           "\"latency_us\":{\"mean\":%.1f,\"stdev\":%.1f,\"min\":%.0f,\"max\":%.0f,"
           "\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,\"p999\":%llu}}\n",
           (unsigned long long)h_n, (unsigned long long)((t1 - t0) / 1000), cs, n_conns,
           err_connect, err_read, err_write, err_status, mean, var > 0 ? __builtin_sqrt(var) : 0,
           h_n ? h_min : 0, h_max, (unsigned long long)h_pct(50), (unsigned long long)h_pct(90),
           (unsigned long long)h_pct(99), (unsigned long long)h_pct(99.9));
}

static void usage(void)
{
    fprintf(stderr, "usage: pt_load http|ws PORT PATH -c N [-d SECS] [-b BODYFILE] "
                    "[-P PUSH_PATH -u USERS -k PUSHES -r ROUNDS -s BYTES] [-H 'h: v']...\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 4) usage();
    is_ws = strcmp(argv[1], "ws") == 0;
    if (!is_ws && strcmp(argv[1], "http") != 0) usage();
    port = atoi(argv[2]);
    path = argv[3];
    size_t hl = 0;
    for (int i = 4; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (!strcmp(o, "-c"))
            n_conns = atoi(v);
        else if (!strcmp(o, "-d"))
            seconds = atoi(v);
        else if (!strcmp(o, "-b"))
            body_file = v;
        else if (!strcmp(o, "-P"))
            push_path = v;
        else if (!strcmp(o, "-u"))
            users = atoi(v);
        else if (!strcmp(o, "-k"))
            pushes = atoi(v);
        else if (!strcmp(o, "-r"))
            rounds = atoi(v);
        else if (!strcmp(o, "-s"))
            pad = atoi(v) < 60000 ? atoi(v) : 60000;
        else if (!strcmp(o, "-H"))
            hl += (size_t)snprintf(headers + hl, sizeof headers - hl, "%s\r\n", v);
        else
            usage();
        if (hl >= sizeof headers) usage();
    }
    if (n_conns < 1 || port < 1 || users < 1 || (is_ws && !push_path)) usage();
    conns = calloc((size_t)n_conns, sizeof *conns);
    ep = epoll_create1(0);
    if (!conns || ep < 0) die("setup");
    if (!is_ws) {
        char body[65536];
        size_t blen = 0;
        if (body_file) {
            FILE *f = fopen(body_file, "rb");
            if (!f) die(body_file);
            blen = fread(body, 1, sizeof body, f);
            fclose(f);
        }
        req = malloc(16384 + blen);
        req_len = (size_t)sprintf(req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s",
                                  body_file ? "POST" : "GET", path, headers);
        if (body_file)
            req_len += (size_t)sprintf(
                req + req_len, "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
        req_len += (size_t)sprintf(req + req_len, "\r\n");
        memcpy(req + req_len, body, blen);
        req_len += blen;
        run_http();
    } else {
        run_ws();
    }
    fflush(stdout);
    return 0;
}
