"""/metrics stays bounded whatever names a client makes up: a service named
in the path is a label only once it is resolved and allowed (before that
service="unknown"), and a 405 is counted under its channel."""
import os
import random
import string

from amqp_support import Http, scrape, value
from conftest import config_head

CONFIG = config_head("workers: 2") + """security:
  api_key:
    - name: keys
      header: x-api-key
      keys:
        - username: acme
          key_env: PT_TEST_CARD_KEY
channels:
  gateway:
    - name: open
      url_path: /gateway/{{service}}
      methods: [POST]
      gateway_service_list: [demo.echo]
    - name: locked
      url_path: /locked/{{service}}
      methods: [POST]
      gateway_service_list: [demo.echo]
      security: keys
  rest:
    - name: api.echo
      url_path: /api/echo
      methods: [POST]
      service: demo.echo
"""


def series(samples, metric="portico_requests_total"):
    return {labels for (name, labels) in samples if name == metric}


def test_unknown_names_make_no_series(start_gateway, monkeypatch):
    monkeypatch.setenv("PT_TEST_CARD_KEY", "k-" + "x" * 30)
    gw = start_gateway(CONFIG)
    c = Http(gw.port)
    rnd = random.Random(20)
    # a known service first, so its own series exists
    assert c.post("/gateway/demo.echo", {"a": 1})[0] == 200
    assert c.post("/locked/demo.echo", {}, {"x-api-key": "k-" + "x" * 30})[0] == 200
    for i in range(10000):
        name = "".join(rnd.choice(string.ascii_lowercase) for _ in range(8)) + str(i)
        prefix = "/gateway/" if i % 2 else "/locked/"
        assert c.post(prefix + name, {})[0] == (404 if i % 2 else 401)
    after = scrape(gw)
    names = {dict(l).get("service") for l in series(after)}
    assert names == {"unknown", "demo.echo"}, names
    assert value(after, "portico_requests_total", channel="open", service="unknown",
                 status="404") == 5000
    assert value(after, "portico_requests_total", channel="locked", service="unknown",
                 status="401") == 5000
    assert value(after, "portico_requests_total", channel="open", service="demo.echo",
                 status="200") == 1
    assert value(after, "portico_requests_total", channel="locked", service="demo.echo",
                 status="200") == 1
    assert len(series(after)) == 4
    assert value(after, "portico_metrics_series_dropped_total") == 0


def test_405_carries_its_channel(start_gateway, monkeypatch):
    monkeypatch.setenv("PT_TEST_CARD_KEY", "k-" + "x" * 30)
    gw = start_gateway(CONFIG)
    c = Http(gw.port)
    for m in ("GET", "PUT", "DELETE"):
        assert c.request(m, "/api/echo")[0] == 405
        assert c.request(m, "/gateway/anything%d" % len(m))[0] == 405
    assert c.request("GET", "/no/channel/here")[0] == 404
    after = scrape(gw)
    assert value(after, "portico_requests_total", channel="api.echo", service="unknown",
                 status="405") == 3
    assert value(after, "portico_requests_total", channel="open", service="unknown",
                 status="405") == 3
    assert value(after, "portico_requests_total", channel="", service="", status="404") == 1
