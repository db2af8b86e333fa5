/* Loading config text in the C unit tests: the text goes to a temporary
 * file, which pt_config_load reads like any config. */
#ifndef PT_TEST_CONFIG_H
#define PT_TEST_CONFIG_H

#include "pt_config.h"
#include "pt_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Loads yaml; returns pt_config_load's result (-2: no temporary file). */
static int pt_test_load(const char *yaml, pt_config_t **cfg, char *err, size_t errlen)
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
static int pt_test_fails_with(const char *yaml, const char *needle)
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

#endif
