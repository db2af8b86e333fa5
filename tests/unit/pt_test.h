/* A few assertion macros for the C unit tests: each failing check prints its
 * file and line; main returns non-zero when any check failed. */
#ifndef PT_TEST_H
#define PT_TEST_H

#include <stdio.h>
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

#define PT_TEST_DONE()                                                                             \
    (printf("%d checks, %d failed\n", pt_test_checks, pt_test_failures), pt_test_failures != 0)

#endif
