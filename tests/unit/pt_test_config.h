/* Loading config text in the C unit tests: the text goes to a temporary
 * file, which pt_config_load reads like any config. */
#ifndef PT_TEST_CONFIG_H
#define PT_TEST_CONFIG_H

#include "pt_config.h"
#include "pt_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Loads yaml; returns pt_config_load's result (-2: no temporary file). */
static inline int pt_test_load(const char *yaml, pt_config_t **cfg, char *err, size_t errlen)
{
    char path[] = "/tmp/pt_test_config_XXXXXX.yaml";
    int fd = mkstemps(path, 5);
    if (fd < 0) return -2;
    FILE *f = fdopen(fd, "w");
    fputs(yaml, f);
    fclose(f);
    *cfg = NULL;
    int rc = pt_config_load(path, cfg, err, errlen);
    unlink(path);
    return rc;
}

/* Non-zero when yaml is refused with a message containing needle. */
static inline int pt_test_fails_with(const char *yaml, const char *needle)
{
    pt_config_t *cfg;
    char err[512] = "";
    int rc = pt_test_load(yaml, &cfg, err, sizeof err);
    pt_config_free(cfg);
    if (rc == 0 || !strstr(err, needle)) {
        fprintf(stderr, "  rc=%d err=\"%s\" (wanted \"%s\")\n", rc, err, needle);
        return 0;
    }
    return 1;
}

/* Non-zero when yaml, written to DIR/bad.yaml (so relative paths in it name
 * files in dir), is refused with a message containing needle. */
static inline int pt_test_fails_in(const char *dir, const char *yaml, const char *needle)
{
    char path[600], err[1024] = "";
    snprintf(path, sizeof path, "%s/bad.yaml", dir);
    FILE *f = fopen(path, "w");
    if (!f) return 0;
    fputs(yaml, f);
    fclose(f);
    pt_config_t *cfg = NULL;
    if (pt_config_load(path, &cfg, err, sizeof err) == 0) {
        pt_config_free(cfg);
        fprintf(stderr, "loaded, expected: %s\n", needle);
        return 0;
    }
    if (!strstr(err, needle)) {
        fprintf(stderr, "error '%s', expected '%s'\n", err, needle);
        return 0;
    }
    return 1;
}

#endif
