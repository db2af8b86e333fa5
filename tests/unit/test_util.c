#include "pt_test.h"
#include "pt_util.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int count_file(void *ud, const char *path, const struct stat *st)
{
    (*(int *)ud)++;
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The parse helpers refuse what strtod would take and a config never means. */
PT_CASE(parse_strict)
{
    static const char *const bad[] = {
        "nan",  "inf",   "-inf", "NaN",   "infinity", "1e99",  "1e3",
        "0x10", "+5",    " 5",   "5 ",    "-0",       ".5",    "5.",
        "",     "1.5.2", "10 s", "nanms", "infs",     "1e99h", "99999999999999999999h",
        NULL};
    uint64_t v;
    for (const char *const *s = bad; *s; s++) {
        if (pt_parse_duration_ms(*s, &v) != -1) fprintf(stderr, "  duration '%s' taken\n", *s);
        PT_CHECK_INT(pt_parse_duration_ms(*s, &v), -1);
        if (pt_parse_size(*s, &v) != -1) fprintf(stderr, "  size '%s' taken\n", *s);
        PT_CHECK_INT(pt_parse_size(*s, &v), -1);
    }
    PT_CHECK_INT(pt_parse_size("99999999999999999999GB", &v), -1); /* overflows uint64_t */
    PT_CHECK_INT(pt_parse_size("99999999999999999999", &v), -1);
    PT_CHECK_INT(pt_parse_size("8589934592GB", &v), -1); /* 2^63 bytes */
    PT_CHECK_INT(pt_parse_size("8589934591GB", &v), 0);
    PT_CHECK_INT(pt_parse_duration_ms("3000000000000h", &v), -1);
    PT_CHECK_INT(pt_parse_duration_ms("0", &v), 0); /* zero parses: ranges are the caller's */
    PT_CHECK_INT(v, 0);
    PT_CHECK_INT(pt_parse_duration_ms("0.25s", &v), 0);
    PT_CHECK_INT(v, 250);
    PT_CHECK_INT(pt_parse_duration_ms("1h", &v), 0);
    PT_CHECK_INT(v, 3600000);
    PT_CHECK_INT(pt_parse_size("1.5k", &v), 0);
    PT_CHECK_INT(v, 1536);
    PT_CHECK_INT(pt_parse_size("2GB", &v), 0);
    PT_CHECK_INT(v, 2147483648ull);
}

PT_CASE(query_param)
{
    char out[16];
    PT_CHECK_INT(pt_query_param("service=a", 9, "service", out, sizeof out), 1);
    PT_CHECK_STR(out, "a");
    PT_CHECK_INT(pt_query_param("x=1&service=a%2Eb", 17, "service", out, sizeof out), 3);
    PT_CHECK_STR(out, "a.b");
    PT_CHECK_INT(pt_query_param("x=1", 3, "service", out, sizeof out), -1);
    PT_CHECK_INT(pt_query_param("service=%zz", 11, "service", out, sizeof out), -2);
    PT_CHECK_INT(pt_query_param("service=0123456789abcdefg", 25, "service", out, sizeof out), -2);
    /* the same name twice: which one counts is ambiguous */
    const char *q = "service=a&service=b";
    PT_CHECK_INT(pt_query_param(q, strlen(q), "service", out, sizeof out), -3);
    q = "service=a&service=a";
    PT_CHECK_INT(pt_query_param(q, strlen(q), "service", out, sizeof out), -3);
    q = "service=a&%73ervice=b"; /* an encoded name is the same name */
    PT_CHECK_INT(pt_query_param(q, strlen(q), "service", out, sizeof out), -3);
    q = "service&service=b"; /* a bare name counts */
    PT_CHECK_INT(pt_query_param(q, strlen(q), "service", out, sizeof out), -3);
    q = "service=%zz&service=b";
    PT_CHECK_INT(pt_query_param(q, strlen(q), "service", out, sizeof out), -3);
    q = "services=a&service=b&xservice=c";
    PT_CHECK_INT(pt_query_param(q, strlen(q), "service", out, sizeof out), 1);
    PT_CHECK_STR(out, "b");
    q = "%73ervice=x";
    PT_CHECK_INT(pt_query_param(q, strlen(q), "service", out, sizeof out), 1);
    PT_CHECK_STR(out, "x");
}

PT_CASE(read_small_file)
{
    char *text, err[128];
    size_t len;
    char path[] = "/tmp/pt_test_util_XXXXXX";
    int fd = mkstemp(path);
    PT_CHECK(fd >= 0);
    PT_CHECK_INT(write(fd, "hello\n", 6), 6);
    close(fd);
    PT_CHECK_INT(pt_read_small_file(path, 64, &text, &len, err, sizeof err), 0);
    PT_CHECK_INT(len, 6);
    PT_CHECK_STR(text, "hello\n");
    free(text);
    PT_CHECK_INT(pt_read_small_file(path, 5, &text, &len, err, sizeof err), -3);
    PT_CHECK(text == NULL);
    unlink(path);
    PT_CHECK_INT(pt_read_small_file(path, 64, &text, &len, err, sizeof err), -1);
    PT_CHECK(strstr(err, "No such file") != NULL);
    /* a FIFO with no writer: refused at once, not waited on */
    PT_CHECK_INT(mkfifo(path, 0600), 0);
    double t0 = now_s();
    PT_CHECK_INT(pt_read_small_file(path, 64, &text, &len, err, sizeof err), -2);
    PT_CHECK(now_s() - t0 < 1.0);
    PT_CHECK_STR(err, "not a regular file");
    unlink(path);
    /* a device that never ends, and a directory */
    PT_CHECK_INT(pt_read_small_file("/dev/zero", 64, &text, &len, err, sizeof err), -2);
    PT_CHECK_INT(pt_read_small_file("/tmp", 64, &text, &len, err, sizeof err), -2);
}

/* Three links to "." in every directory once made 3^16 scans. */
PT_CASE(walk_loop)
{
    char root[] = "/tmp/pt_test_walk_XXXXXX", p[512], problem[256];
    PT_CHECK(mkdtemp(root) != NULL);
    snprintf(p, sizeof p, "%s/a.lua", root);
    close(open(p, O_CREAT | O_WRONLY, 0600));
    const char *links[] = {"l1", "l2", "l3"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", root, links[i]);
        PT_CHECK_INT(symlink(".", p), 0);
    }
    char *dirs[] = {root};
    int files = 0;
    double t0 = now_s();
    PT_CHECK_INT(pt_walk_files(dirs, 1, count_file, &files, problem, sizeof problem), -2);
    PT_CHECK(now_s() - t0 < 1.0);
    PT_CHECK_INT(files, 1);
    PT_CHECK(strstr(problem, "a symlink loop at") != NULL);
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", root, links[i]);
        unlink(p);
    }
    /* two links to one directory, no loop: walked once, no problem */
    snprintf(p, sizeof p, "%s/sub", root);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/sub/b.lua", root);
    close(open(p, O_CREAT | O_WRONLY, 0600));
    snprintf(p, sizeof p, "%s/twin", root);
    PT_CHECK_INT(symlink("sub", p), 0);
    files = 0;
    PT_CHECK_INT(pt_walk_files(dirs, 1, count_file, &files, problem, sizeof problem), 0);
    PT_CHECK_INT(files, 2);
    PT_CHECK_STR(problem, "");
    unlink(p);
    snprintf(p, sizeof p, "%s/sub/b.lua", root);
    unlink(p);
    snprintf(p, sizeof p, "%s/sub", root);
    rmdir(p);
    snprintf(p, sizeof p, "%s/a.lua", root);
    unlink(p);
    rmdir(root);
}

PT_CASE(durations_and_sizes_parse)
{
    uint64_t v;
    PT_CHECK_INT(pt_parse_duration_ms("1.5", &v), 0);
    PT_CHECK_INT(v, 1500);
    PT_CHECK_INT(pt_parse_duration_ms("250ms", &v), 0);
    PT_CHECK_INT(v, 250);
    PT_CHECK_INT(pt_parse_duration_ms("2m", &v), 0);
    PT_CHECK_INT(v, 120000);
    PT_CHECK_INT(pt_parse_duration_ms("soon", &v), -1);
    PT_CHECK_INT(pt_parse_duration_ms("-1", &v), -1);
    PT_CHECK_INT(pt_parse_size("16KB", &v), 0);
    PT_CHECK_INT(v, 16384);
    PT_CHECK_INT(pt_parse_size("1MB", &v), 0);
    PT_CHECK_INT(v, 1048576);
    PT_CHECK_INT(pt_parse_size("12 apples", &v), -1);
}

PT_CASE(percent_decode)
{
    char out[64];
    PT_CHECK_INT(pt_percent_decode("a%2Fb+c", 7, out, 0), 5);
    PT_CHECK_STR(out, "a/b+c");
    PT_CHECK_INT(pt_percent_decode("a%2Fb+c", 7, out, 1), 5);
    PT_CHECK_STR(out, "a/b c");
    PT_CHECK_INT(pt_percent_decode("%4", 2, out, 0), -1);
    PT_CHECK_INT(pt_percent_decode("%", 1, out, 0), -1);
    PT_CHECK_INT(pt_percent_decode("%g0", 3, out, 0), -1);
}

PT_CASE(strcpy_cap_cuts_and_terminates)
{
    char small[6];
    pt_strcpy_cap(small, "abc", sizeof small);
    PT_CHECK_STR(small, "abc");
    pt_strcpy_cap(small, "abcdef", sizeof small); /* one too long: cut, still terminated */
    PT_CHECK_STR(small, "abcde");
    pt_strcpy_cap(small, "", sizeof small);
    PT_CHECK_STR(small, "");
}

PT_CASE(buf_json_escape_and_numbers)
{
    pt_buf_t b = {0};
    pt_buf_json_escape(&b, "a\"b\\c\n\x01", 7);
    PT_CHECK_STR(b.data, "a\\\"b\\\\c\\n\\u0001");
    pt_buf_free(&b);
    pt_buf_put_u64(&b, 0);
    pt_buf_append(&b, " ", 1);
    pt_buf_put_u64(&b, 18446744073709551615ull);
    pt_buf_append(&b, "", 1);
    PT_CHECK_STR(b.data, "0 18446744073709551615");
    pt_buf_free(&b);
}

PT_CASE(cids_are_made_and_checked)
{
    char c1[25], c2[25];
    pt_cid_new(c1);
    pt_cid_new(c2);
    PT_CHECK_INT(strlen(c1), 24);
    PT_CHECK(strcmp(c1, c2) != 0);
    PT_CHECK(pt_cid_valid(c1, 24));
    PT_CHECK(!pt_cid_valid("a b", 3));
    PT_CHECK(!pt_cid_valid("x\r\nSet-Cookie: y", 16));
}

PT_CASE(utcnow_is_iso_8601)
{
    char now[32];
    pt_utcnow(now);
    PT_CHECK_INT(strlen(now), 26);
    PT_CHECK(now[10] == 'T');
}

/* Host names by their bytes: SNI, certificate checks and Redis URLs share it. */
PT_CASE(host_name_bytes)
{
    PT_CHECK_INT(pt_host_name_ok("redis.example-1.internal", 24), 1);
    PT_CHECK_INT(pt_host_name_ok("::1", 3), 1);
    PT_CHECK_INT(pt_host_name_ok("", 0), 0);
    PT_CHECK_INT(pt_host_name_ok("a b", 3), 0);
    PT_CHECK_INT(pt_host_name_ok("a/b", 3), 0);
    PT_CHECK_INT(pt_host_name_ok("a\0b", 3), 0);
    PT_CHECK_INT(pt_host_name_ok("\xc3\xa9", 2), 0);
    char long_name[300];
    memset(long_name, 'a', sizeof long_name);
    PT_CHECK_INT(pt_host_name_ok(long_name, 253), 1);
    PT_CHECK_INT(pt_host_name_ok(long_name, 254), 0);
}

int main(void)
{
    PT_RUN(parse_strict);
    PT_RUN(query_param);
    PT_RUN(read_small_file);
    PT_RUN(walk_loop);
    PT_RUN(durations_and_sizes_parse);
    PT_RUN(percent_decode);
    PT_RUN(host_name_bytes);
    PT_RUN(strcpy_cap_cuts_and_terminates);
    PT_RUN(buf_json_escape_and_numbers);
    PT_RUN(cids_are_made_and_checked);
    PT_RUN(utcnow_is_iso_8601);
    return PT_TEST_DONE();
}
