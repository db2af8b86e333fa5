/* portico: the command line. Everything the process does lives in
 * pt_server.c; this file only reads the arguments. */
#include "pt_admin.h"
#include "pt_cli_test.h"
#include "pt_cluster_cli.h"
#include "pt_config.h"
#include "pt_home.h"
#include "pt_security_hash.h"
#include "pt_server.h"

#include <stdio.h>
#include <string.h>

#define PT_DEFAULT_CONFIG "config/portico.yaml"

static const char pt__usage[] =
    "usage: portico [-c FILE]            run the gateway\n"
    "       portico --check [-c FILE]    validate a config and its services\n"
    "       portico reload [-c FILE]     ask the running gateway to reload its config\n"
    "       portico cluster status [-c FILE] [--json] [--redis]\n"
    "                                    list the cluster's nodes (GET /cluster of the\n"
    "                                    admin listener, or the registry in Redis): exit\n"
    "                                    0 one config, 1 configs differ, 2 unreadable\n"
    "       portico openapi [-c FILE]    print the OpenAPI 3.1 document of the config and\n"
    "                                    its services (what GET /openapi.json serves)\n"
    "       portico hash-password [--api-key]\n"
    "                                    read a password (or API key) on stdin, print\n"
    "                                    the hash to put in the config's security section\n"
    "       portico test [-c FILE] [BUSTED ARGS...]\n"
    "                                    run busted (LuaJIT) in this directory with\n"
    "                                    portico.testing and the config's lua.lib_dirs\n"
    "                                    on the path (no config: ./lib)\n"
    "       portico --help | --version\n"
    "\n"
    "  -c, --config FILE  the YAML config (default: " PT_DEFAULT_CONFIG " if it exists,\n"
    "                     else the installed one: ../etc/portico/portico.yaml beside\n"
    "                     the binary or " PT_INSTALL_CONFIG ")\n"
    "  --check            load the config and every service (each file within\n"
    "                     lua.load_timeout), then exit: 0 when all is well, 1 with\n"
    "                     file:line: message otherwise\n"
    "  -h, --help         this text\n"
    "  -V, --version      the version\n"
    "\n"
    "Signals: SIGTERM or SIGINT finish the requests in flight, then exit 0.\n"
    "         SIGHUP reloads the config; service files reload on their own.\n";

/* `portico reload`: asks the admin listener named in the config. The
 * running server checks the file itself, so a refused reload is logged and
 * counted there too (portico_reload_failures_total); only a file without a
 * readable admin.listen is refused here. */
static int pt__reload(const char *path)
{
    char err[1024], local[1024], body[4096];
    char *host = NULL;
    int port = 0;
    pt_config_t *cfg = NULL;
    int valid = pt_config_load(path, &cfg, local, sizeof local) == 0;
    pt_config_free(cfg);
    if (pt_config_admin_address(path, &host, &port, err, sizeof err) != 0) {
        if (!valid)
            fprintf(stderr, "portico: %s\n", local);
        else
            fprintf(stderr, "portico: %s has no admin.listen: send SIGHUP to reload\n", path);
        return 1;
    }
    int status =
        pt_admin_request(host, port, "POST", "/reload", body, sizeof body, err, sizeof err);
    free(host);
    if (status < 0) {
        fprintf(stderr, "portico: %s\n", err);
        if (!valid) fprintf(stderr, "portico: %s\n", local);
        return 2;
    }
    printf("%s\n", body);
    return status == 200 ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *path = NULL; /* none given: pt_home_config() */
    int path_given = 0;
    int cluster_json = 0, cluster_redis = 0;
    const char *command = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(pt__usage, stdout);
            return 0;
        } else if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
            printf("portico %s\n", PT_VERSION);
            return 0;
        } else if (!strcmp(a, "--check") || !strcmp(a, "-t")) {
            command = "check";
        } else if (!strcmp(a, "reload") && !command) {
            command = "reload";
        } else if (!strcmp(a, "cluster") && !command) {
            if (i + 1 >= argc || strcmp(argv[i + 1], "status") != 0) {
                fprintf(stderr, "portico cluster: expected 'status'\n\n%s", pt__usage);
                return 2;
            }
            command = "cluster-status";
            i++;
        } else if (command && !strcmp(command, "cluster-status") && !strcmp(a, "--json")) {
            cluster_json = 1;
        } else if (command && !strcmp(command, "cluster-status") && !strcmp(a, "--redis")) {
            cluster_redis = 1;
        } else if (!strcmp(a, "openapi") && !command) {
            command = "openapi";
        } else if (!strcmp(a, "test") && !command) {
            /* a project's own directory: never the installed config */
            return pt_cli_test(path_given ? path : PT_DEFAULT_CONFIG, !path_given, argc - i - 1,
                               argv + i + 1);
        } else if (!strcmp(a, "hash-password") && !command) {
            /* the secret comes from stdin, never from argv (ps, shell history) */
            int api_key = 0;
            for (int j = i + 1; j < argc; j++) {
                if (!strcmp(argv[j], "--api-key")) {
                    api_key = 1;
                } else {
                    fprintf(stderr,
                            "portico hash-password: unknown argument '%s' (the %s is "
                            "read from stdin)\n\n%s",
                            argv[j], "password", pt__usage);
                    return 2;
                }
            }
            return pt_security_hash_password_cli(api_key);
        } else if ((!strcmp(a, "-c") || !strcmp(a, "--config")) && i + 1 < argc) {
            path = argv[++i];
            path_given = 1;
        } else if (!strncmp(a, "--config=", 9)) {
            path = a + 9;
            path_given = 1;
        } else {
            fprintf(stderr, "portico: unknown argument '%s'\n\n%s", a, pt__usage);
            return 2;
        }
    }
    char err[1024];
    if (!path && !(path = pt_home_config(err, sizeof err))) {
        fprintf(stderr, "portico: %s\n", err);
        return 1;
    }
    if (command && !strcmp(command, "check")) return pt_server_check(path) == 0 ? 0 : 1;
    if (command && !strcmp(command, "reload")) return pt__reload(path);
    if (command && !strcmp(command, "cluster-status"))
        return pt_cluster_status_cli(path, cluster_json, cluster_redis);
    if (command && !strcmp(command, "openapi")) return pt_server_openapi(path) == 0 ? 0 : 1;
    return pt_server_run(path);
}
