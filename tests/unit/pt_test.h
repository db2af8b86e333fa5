/* A few assertion macros for the C unit tests: each failing check prints its
 * file and line; main returns non-zero when any check failed.
 *
 * A test file is a list of named cases:
 *
 *   PT_CASE(parses_a_get) { PT_CHECK(...); }
 *   int main(int argc, char **argv) {
 *       PT_RUN(parses_a_get);
 *       return PT_TEST_DONE();
 *   }
 *
 * Each case prints "ok NAME" or "FAIL NAME"; PT_TEST_CASE=NAME in the
 * environment runs only the cases whose name contains NAME. */
#ifndef PT_TEST_H
#define PT_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int pt_test_failures, pt_test_checks;

#define PT_CHECK(cond)                                                                             \
    do {                                                                                           \
        pt_test_checks++;                                                                          \
        if (!(cond)) {                                                                             \
            pt_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define PT_CHECK_INT(a, b)                                                                         \
    do {                                                                                           \
        long long pt__a = (long long)(a), pt__b = (long long)(b);                                  \
        pt_test_checks++;                                                                          \
        if (pt__a != pt__b) {                                                                      \
            pt_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n", __FILE__, __LINE__, #a, pt__a,   \
                    pt__b);                                                                        \
        }                                                                                          \
    } while (0)

#define PT_CHECK_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *pt__a = (a), *pt__b = (b);                                                     \
        pt_test_checks++;                                                                          \
        if (!pt__a || strcmp(pt__a, pt__b) != 0) {                                                 \
            pt_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a,      \
                    pt__a ? pt__a : "(null)", pt__b);                                              \
        }                                                                                          \
    } while (0)

#define PT_CASE(name) static void name(void)

__attribute__((unused)) static void pt_test_run(const char *name, void (*fn)(void))
{
    const char *only = getenv("PT_TEST_CASE");
    if (only && *only && !strstr(name, only)) return;
    int before = pt_test_failures;
    fn();
    printf("%s %s\n", pt_test_failures == before ? "ok" : "FAIL", name);
}

#define PT_RUN(name) pt_test_run(#name, name)

#define PT_TEST_DONE()                                                                             \
    (printf("%d checks, %d failed\n", pt_test_checks, pt_test_failures), pt_test_failures != 0)

#endif
