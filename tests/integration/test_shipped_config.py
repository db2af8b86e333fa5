"""config/portico.yaml shows every setting, as the README promises: each key
the config parser accepts at the top level and in server, server.tls, log,
admin, lua, services, outgoing, channels, security, cache and scheduler
appears in it (set, or
commented out with its default or an example), and the file as shipped
passes `portico --check`."""
import os
import re
import subprocess

from amqp_support import ROOT, SOURCE

CONFIG = os.path.join(ROOT, "config", "portico.yaml")
BINARY = os.environ.get("PORTICO_BIN") or os.path.join(SOURCE, "build", "portico")


def c_keys(source, function, array="keys"):
    """The strings of `static const char *const ARRAY[] = {...}` in FUNCTION
    of a host/ source file: what the parser accepts there."""
    text = open(os.path.join(SOURCE, "host", source)).read()
    start = text.index("\n" + function.split("(")[0])
    body = text[start:text.index("\n}\n", start)]
    m = re.search(r"static const char \*const %s\[\] = \{(.*?)\};" % re.escape(array), body, re.S)
    assert m, "no %s[] in %s" % (array, function)
    return re.findall(r'"([a-z_]+)"', m.group(1))


def shown(key, top=False):
    """Whether the config has KEY: on a line of its own, set or commented."""
    pattern = r"(?m)^(# ?)?%s%s:" % ("" if top else r"\s*(#\s*)?(- )?\{?", re.escape(key))
    return re.search(pattern, open(CONFIG).read()) is not None


def test_shipped_config_checks():
    r = subprocess.run([BINARY, "--check", "-c", CONFIG], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "is valid" in r.stdout


def test_every_top_level_key_is_shown():
    keys = c_keys("pt_config.c", "static int pt__parse(")
    assert {"server", "log", "lua", "outgoing", "cache", "scheduler"} <= set(keys)
    missing = [k for k in keys if not shown(k, top=True)]
    assert missing == [], "config/portico.yaml does not show %s" % missing


def test_every_setting_of_the_sections_is_shown():
    sections = {
        "server": c_keys("pt_config.c", "static int pt__server("),
        "server.tls": c_keys("pt_config.c", "static int pt__server_tls("),
        "log": c_keys("pt_config.c", "static int pt__parse(", "log_keys"),
        "admin": c_keys("pt_config.c", "static int pt__parse(", "admin_keys"),
        "lua": c_keys("pt_config.c", "static int pt__parse(", "lua_keys"),
        "services": c_keys("pt_config.c", "static int pt__parse(", "svc_keys"),
        "outgoing": c_keys("pt_config.c", "static int pt__outgoing("),
        "channels": c_keys("pt_config.c", "static int pt__channels("),
        "channels.rate_limit": c_keys("pt_config.c", "static int pt__rate_limit("),
        "security.hash_checks": c_keys("pt_security_config.c", "static int pt__hash_checks("),
        "cluster": c_keys("pt_config_cluster.c", "int pt_config_cluster_parse("),
        "cache": c_keys("pt_config_cache.c", "int pt_config_cache_parse("),
        "cache.caches (redis)": c_keys("pt_config_cache.c", "static int pt__redis("),
        "cache.caches.near_cache": c_keys("pt_config_cache.c", "static int pt__redis(",
                                          "near_keys"),
        "scheduler": c_keys("pt_config_scheduler.c", "int pt_config_scheduler_parse("),
        "scheduler.jobs": c_keys("pt_config_scheduler.c", "static int pt__job("),
        "tracing": c_keys("pt_config_tracing.c", "int pt_config_tracing_parse("),
    }
    kinds = re.findall(r'\{\.key = "([a-z_]+)"',
                       open(os.path.join(SOURCE, "host", "pt_security_config.c")).read())
    sections["security"] = kinds + ["hash_checks"]
    missing = ["%s.%s" % (s, k) for s, keys in sections.items() for k in keys if not shown(k)]
    assert missing == [], "config/portico.yaml does not show %s" % missing
    # the settings that are off by default are shown commented, with what turns them on
    text = open(CONFIG).read()
    assert "\n  access: stdout" in text  # on by default (docs/observability.md)
    for line in ("# redact_query:", "# audit:", "# rate_limit: {", "#   http:", "#   path: ../lua",
                 "# tls:", "#       declare:", "# cluster:"):
        assert line in text, line
