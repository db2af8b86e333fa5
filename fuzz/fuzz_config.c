/* libFuzzer target: the config loader, YAML text to a snapshot. The input is
 * loaded through pt_config_load_text as if it were config/fuzz.yaml (run
 * from the repository root, as scripts/fuzz does, the shipped configs'
 * "../services" resolve and the seeds get past services.dirs). A snapshot
 * that loads is freed; ASan's leak check holds both ways. A refusal must
 * name the file: "config/fuzz.yaml:line: ...". */
#include "pt_config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PT__FUZZ_PATH "config/fuzz.yaml"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pt_config_t *cfg = NULL;
    char err[1024] = "";
    if (pt_config_load_text(PT__FUZZ_PATH, (const char *)data, size, &cfg, err, sizeof err) == 0) {
        pt_config_free(cfg);
        return 0;
    }
    if (cfg) abort(); /* a refusal leaves nothing to free */
    if (strncmp(err, PT__FUZZ_PATH ":", sizeof PT__FUZZ_PATH) != 0) {
        fprintf(stderr, "fuzz_config: a refusal without file:line: %s\n", err);
        abort();
    }
    return 0;
}
