"""The OpenAPI 3.1 document of a running gateway (docs/openapi.md): GET
/openapi.json on the admin listener and `portico openapi -c`, checked by
validators no one here wrote (@apidevtools/swagger-parser for the document,
ajv for real requests and answers against its schemas), installed from npm
into tests/integration/openapi/node_modules with `npm ci`."""
import json
import os
import subprocess
import time

import pytest

from amqp_support import ROOT, Http
from conftest import config_head

OA_DIR = os.path.join(ROOT, "tests", "integration", "openapi")
BIN = os.environ.get("PORTICO_BIN") or os.path.join(ROOT, "build", "portico")
API_KEY = "k-0123456789abcdef0123456789abcdef"

DOC_SERVICE = """
local service = require "portico.service"
local schema = require "portico.schema"
local M = service.new {{
  name = "test.doc",
  summary = "{summary}",
  description = "A service that describes itself.",
  tags = {{ "docs" }},
  input = {{ word = schema.field {{ type = "string", min = 1, max = 20, pattern = "%l+",
                                  description = "lower-case letters" }},
            times = "integer(1..5)=1"{extra_input} }},
  output = {{ echo = "string" }},
  examples = {{ input = {{ word = "abc" }}, output = {{ echo = "abc" }} }},
}}
function M:handle()
  self.response.payload = {{ echo = string.rep(self.request.input.word, self.request.input.times) }}
end
return M
"""

CONFIG = config_head("""
    workers: 2
    max_body_bytes: 64KB
""", dirs="{root}/services, {tmp}/services") + """security:
  basic_auth:
    - name: api.users
      users:
        - username: john.doe
          password_hash: "{john_hash}"
  api_key:
    - name: partners
      header: x-api-key
      keys:
        - username: acme
          key_hash: "{key_hash}"
  jwt:
    - name: tokens
      algorithm: HS256
      secret_env: PT_OA_JWT_SECRET
channels:
  gateway:
    - name: gateway
      url_path: /gateway/{{service}}
      methods: [GET, POST]
      gateway_service_list: [customer.get, orders.get, orders.create, demo.echo, test.doc]
      security: partners
  rest:
    - name: api.customer.get
      url_path: /api/customer/get
      methods: [POST]
      service: customer.get
      security: api.users
    - name: api.orders.create
      url_path: /api/orders
      methods: [POST]
      service: orders.create
      security: api.users
    - name: api.orders.get
      url_path: /api/orders/{{order_id}}
      methods: [GET]
      service: orders.get
      security: partners
    - name: api.echo
      url_path: /api/echo
      methods: [GET, POST, DELETE]
      service: demo.echo
    - name: api.limited
      url_path: /api/limited
      methods: [POST]
      service: demo.echo
      rate_limit: {{rate: 1/h, burst: 1}}
    - name: api.doc
      url_path: /api/doc/{{word}}
      methods: [GET]
      service: test.doc
      security: tokens
  websocket:
    - name: ws
      url_path: /ws
      service: demo.echo
  openapi:
    - name: api.docs
      url_path: /openapi.json
      security: api.users
  http_proxy:
    - name: px
      url_prefix: /px
      services:
        backend:
          targets: [http://127.0.0.1:9]
"""


@pytest.fixture(scope="module", autouse=True)
def oa_package():
    if not os.path.isdir(os.path.join(OA_DIR, "node_modules", "@apidevtools", "swagger-parser")) \
            or not os.path.isdir(os.path.join(OA_DIR, "node_modules", "ajv")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=OA_DIR, check=True,
                       capture_output=True, timeout=300)


def hash_of(secret, *args):
    r = subprocess.run([BIN, "hash-password", *args], input=secret.encode(),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().strip()


@pytest.fixture(scope="module")
def hashes():
    return {"john_hash": hash_of("secret"), "key_hash": hash_of(API_KEY, "--api-key")}


def write_doc_service(tmp, summary="Say a word", extra_input=""):
    d = os.path.join(str(tmp), "services", "test")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "doc.lua")
    with open(path + ".tmp", "w") as f:
        f.write(DOC_SERVICE.format(summary=summary, extra_input=extra_input))
    os.rename(path + ".tmp", path)
    return path


@pytest.fixture
def oagw(start_gateway, tmp_path, hashes, monkeypatch):
    monkeypatch.setenv("PT_OA_JWT_SECRET", "s" * 40)
    write_doc_service(tmp_path)
    cfg = CONFIG.replace("services:\n  dirs:", "services:\n  watch_interval: 50ms\n  dirs:")
    return start_gateway(cfg.replace("{john_hash}", hashes["john_hash"])
                         .replace("{key_hash}", hashes["key_hash"]))


BASIC = {"Authorization": "Basic " + __import__("base64").b64encode(b"john.doe:secret").decode()}


def fetch_public(gw, headers=BASIC, method="GET"):
    return Http(gw.port).request(method, "/openapi.json", None, headers)


def fetch(gw):
    st, headers, body = Http(gw.admin_port).request("GET", "/openapi.json")
    assert st == 200, body
    assert headers["content-type"] == "application/json"
    return body


def node(script, *args):
    return subprocess.run(["node", os.path.join(OA_DIR, script), *args], capture_output=True,
                          text=True, timeout=60)


def validate(tmp_path, text, name="doc.json"):
    path = os.path.join(str(tmp_path), name)
    with open(path, "wb") as f:
        f.write(text)
    return node("validate.js", path), path


def test_document_validates_and_describes_every_channel(oagw, tmp_path):
    body = fetch(oagw)
    r, _ = validate(tmp_path, body)
    assert r.returncode == 0 and r.stdout.strip() == "valid 3.1.0", r.stdout + r.stderr
    doc = json.loads(body)
    assert doc["servers"] == [{"url": "http://127.0.0.1:%d" % oagw.port}]
    paths = doc["paths"]
    # every REST channel with its methods, every listed service of the gateway, and /invoke
    assert sorted(paths) == sorted([
        "/api/customer/get", "/api/orders", "/api/orders/{order_id}", "/api/echo",
        "/api/limited", "/api/doc/{word}", "/gateway/invoke", "/gateway/customer.get",
        "/gateway/orders.get", "/gateway/orders.create", "/gateway/demo.echo",
        "/gateway/test.doc", "/openapi.json"])
    assert doc["paths"]["/openapi.json"]["get"]["security"] == [{"api.users": []}]
    assert sorted(paths["/api/echo"]) == ["delete", "get", "post"]
    assert sorted(paths["/gateway/orders.get"]) == ["get", "post"]
    # the nested model of orders.create, its required list and constraints
    create = paths["/api/orders"]["post"]
    s = create["requestBody"]["content"]["application/json"]["schema"]
    assert create["requestBody"]["required"] is True
    assert s["required"] == ["customer_id", "lines", "shipping"]
    assert s["additionalProperties"] is False
    assert s["properties"]["currency"] == {"type": "string", "enum": ["EUR", "USD", "GBP"],
                                           "default": "EUR"}
    assert s["properties"]["lines"]["minItems"] == 1 and s["properties"]["lines"]["maxItems"] == 100
    sku = s["properties"]["lines"]["items"]["properties"]["sku"]
    assert sku == {"type": "string", "minLength": 1, "maxLength": 32,
                   "pattern": "^[A-Z0-9\\-]+$", "x-lua-pattern": "[%u%d%-]+"}
    out = create["responses"]["2XX"]["content"]["application/json"]["schema"]
    assert out["properties"]["ship_to"]["properties"]["country"] == {"type": "string"}
    assert set(create["responses"]) == {"2XX", "400", "401", "403", "404", "413", "500", "default"}
    # GET input: the path capture and the query
    get = paths["/api/orders/{order_id}"]["get"]
    params = {(p["in"], p["name"]): p for p in get["parameters"]}
    assert params[("path", "order_id")]["schema"] == {"type": "integer", "minimum": 1}
    assert params[("query", "lines")] == {"in": "query", "name": "lines", "required": False,
                                          "schema": {"type": "boolean", "default": True}}
    assert "requestBody" not in get
    # the service's own description, summary, tags, field description and examples
    d = paths["/api/doc/{word}"]["get"]
    assert d["summary"] == "Say a word" and d["tags"] == ["api.doc", "docs"]
    assert d["description"] == "A service that describes itself."
    assert d["parameters"][0]["description"] == "lower-case letters"
    post = paths["/gateway/test.doc"]["post"]
    assert post["requestBody"]["content"]["application/json"]["example"] == {"word": "abc"}
    assert post["responses"]["2XX"]["content"]["application/json"]["example"] == {"echo": "abc"}
    # the rate-limited channel may answer 429; the others do not say so
    assert "429" in paths["/api/limited"]["post"]["responses"]
    assert "429" not in paths["/api/echo"]["post"]["responses"]
    # security: each channel's scheme
    schemes = doc["components"]["securitySchemes"]
    assert schemes["api.users"]["type"] == "http" and schemes["api.users"]["scheme"] == "basic"
    assert schemes["partners"] == {"type": "apiKey", "in": "header", "name": "x-api-key",
                                   "description": "security.api_key 'partners' (realm portico)"}
    assert schemes["tokens"]["scheme"] == "bearer" and schemes["tokens"]["bearerFormat"] == "JWT"
    assert create["security"] == [{"api.users": []}]
    assert paths["/gateway/invoke"]["get"]["security"] == [{"partners": []}]
    assert "security" not in paths["/api/echo"]["get"]
    inv = paths["/gateway/invoke"]["get"]["parameters"]
    assert inv[0]["name"] == "service" and "test.doc" in inv[0]["schema"]["enum"]
    # channels a model does not describe are named in an extension
    other = {c["name"]: c for c in doc["x-portico-channels"]}
    assert other["ws"]["type"] == "websocket"
    assert other["px"] == {"name": "px", "type": "http_proxy", "url_path": "/px",
                           "services": ["backend"]}
    # the error body
    err = doc["components"]["schemas"]["Error"]
    assert err["properties"]["error"]["required"] == ["status", "message"]


def test_validator_refuses_a_broken_document(oagw, tmp_path):
    """The validator can fail: the same document with a dangling $ref and a
    bad security scheme is refused."""
    doc = json.loads(fetch(oagw))
    doc["components"]["schemas"].pop("Error")
    doc["components"]["securitySchemes"]["partners"]["in"] = "body"
    r, _ = validate(tmp_path, json.dumps(doc).encode(), "broken.json")
    assert r.returncode == 1
    assert "Error" in r.stderr or "partners" in r.stderr, r.stderr


def test_public_channel_serves_the_same_document(oagw):
    st, headers, body = fetch_public(oagw)
    assert st == 200 and headers["content-type"] == "application/json"
    assert body == fetch(oagw)
    st, headers, body = fetch_public(oagw, method="HEAD")
    assert st == 200 and body == b"" and int(headers["content-length"]) == len(fetch(oagw))
    # behind the channel's security, like any channel
    st, headers, body = fetch_public(oagw, headers={})
    assert st == 401 and json.loads(body)["error"]["message"]
    st, _, _ = fetch_public(oagw, method="POST")
    assert st == 405


def test_openapi_channel_config_errors(tmp_path):
    for extra, msg in [("      service: demo.echo\n", "unknown key 'service'"),
                       ("", "the document's path has no {name} segments")]:
        cfg = tmp_path / "c.yaml"
        path = "/doc/{x}" if not extra else "/doc"
        cfg.write_text(config_head("", log=None, dirs=ROOT + "/services").format(
            port=1, admin_port=2, root=ROOT, tmp=str(tmp_path)) +
            "channels:\n  openapi:\n    - name: d\n      url_path: %s\n%s" % (path, extra))
        r = subprocess.run([BIN, "--check", "-c", str(cfg)], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1 and msg in r.stderr, r.stderr


def test_cli_prints_what_the_endpoint_serves(oagw):
    r = subprocess.run([BIN, "openapi", "-c", oagw.config], capture_output=True, timeout=60,
                       env=dict(os.environ, PT_OA_JWT_SECRET="s" * 40))
    assert r.returncode == 0, r.stderr
    assert r.stdout == fetch(oagw)
    # a second fetch is the cached text, the same
    assert fetch(oagw) == r.stdout


def test_cli_refuses_a_broken_config(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("server:\n  listen: 127.0.0.1:1\nchannels:\n  rest:\n    - name: x\n"
                   "      url_path: /x\n      service: no.such\n")
    r = subprocess.run([BIN, "openapi", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and r.stdout == ""
    assert "channel 'x' runs service 'no.such', which is not loaded" in r.stderr


def wait_for(gw, pred, what):
    deadline = time.time() + 5
    while True:
        doc = json.loads(fetch(gw))
        if pred(doc):
            return doc
        assert time.time() < deadline, what
        time.sleep(0.05)


def test_changes_with_a_service_edit_and_a_config_reload(oagw, tmp_path):
    doc = json.loads(fetch(oagw))
    assert doc["paths"]["/api/doc/{word}"]["get"]["summary"] == "Say a word"
    write_doc_service(tmp_path, summary="Say it louder", extra_input=', loud = "boolean?"')
    doc = wait_for(oagw, lambda d: d["paths"]["/api/doc/{word}"]["get"]["summary"]
                   == "Say it louder", "the service edit did not reach /openapi.json")
    names = [p["name"] for p in doc["paths"]["/api/doc/{word}"]["get"]["parameters"]]
    assert names == ["word", "loud", "times"]
    assert json.loads(fetch_public(oagw)[2]) == doc  # the public channel's copy follows
    # a file that fails to load leaves the document as it was
    with open(os.path.join(str(tmp_path), "services", "test", "doc.lua"), "w") as f:
        f.write('return require("portico.service").new { name = "test.doc", summary = 42 }\n')
    oagw.expect_error("service file refused")
    assert oagw.log_has("summary must be one line")
    assert json.loads(fetch(oagw)) == doc
    write_doc_service(tmp_path, summary="Say it louder", extra_input=', loud = "boolean?"')
    # a config reload: a channel added, one removed
    with open(oagw.config) as f:
        text = f.read()
    text = text.replace("    - name: api.limited\n", "    - name: api.added\n      url_path: /api/added\n"
                        "      methods: [PUT]\n      service: orders.create\n"
                        "    - name: api.limited\n", 1)
    text = text.replace("      gateway_service_list: [customer.get, orders.get, orders.create, "
                        "demo.echo, test.doc]", "      gateway_service_list: [demo.echo]")
    with open(oagw.config, "w") as f:
        f.write(text)
    st, _, body = Http(oagw.admin_port).request("POST", "/reload")
    assert st == 200, body
    doc = json.loads(fetch(oagw))
    assert "put" in doc["paths"]["/api/added"]
    assert "/gateway/orders.get" not in doc["paths"]
    assert doc["paths"]["/gateway/invoke"]["get"]["parameters"][0]["schema"]["enum"] == ["demo.echo"]
    assert json.loads(fetch_public(oagw)[2]) == doc


def call(gw, method, path, body=None, query=None, headers=None, raw=None):
    from urllib.parse import urlencode
    url = path + ("?" + urlencode(query, doseq=True) if query else "")
    c = Http(gw.port)
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    h = dict(headers or {})
    if data is not None:
        h.setdefault("Content-Type", "application/json")
    st, _, resp = c.request(method, url, data, h)
    c.close()
    return {"method": method, "path": path, "query": query or {},
            "body": body, "status": st, "response": json.loads(resp) if resp else None,
            "declared": True, "invalid": st == 400 or st == 403}


def conform(tmp_path, gw, cases):
    doc_path = os.path.join(str(tmp_path), "conform-doc.json")
    with open(doc_path, "wb") as f:
        f.write(fetch(gw))
    cases_path = os.path.join(str(tmp_path), "cases.json")
    with open(cases_path, "w") as f:
        json.dump(cases, f)
    r = node("conform.js", doc_path, cases_path)
    assert r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout.strip().splitlines()[-1])


def test_real_calls_conform(oagw, tmp_path):
    import base64
    basic = {"Authorization": "Basic " + base64.b64encode(b"john.doe:secret").decode()}
    key = {"x-api-key": API_KEY}
    order = {"customer_id": 123, "currency": "USD",
             "shipping": {"name": "J", "street": "S 1", "city": "Berlin", "zip": "10115",
                          "country": "DE"},
             "lines": [{"sku": "A-1", "qty": 2, "price": 9.5}]}
    cases = [
        call(oagw, "POST", "/api/orders", order, headers=basic),
        call(oagw, "POST", "/api/customer/get", {"customer_id": 123}, headers=basic),
        call(oagw, "GET", "/api/orders/1001", headers=key),
        call(oagw, "GET", "/api/orders/1002", query={"lines": "false"}, headers=key),
        call(oagw, "GET", "/gateway/orders.get", query={"order_id": "1001"}, headers=key),
        call(oagw, "POST", "/gateway/test.doc", {"word": "ab", "times": 2}, headers=key),
        call(oagw, "GET", "/gateway/invoke", query={"service": "demo.echo", "x": "1"}, headers=key),
        call(oagw, "POST", "/api/echo", {"any": ["thing"]}),
        call(oagw, "DELETE", "/api/echo"),
        # error answers
        call(oagw, "POST", "/api/orders", dict(order, lines=[]), headers=basic),        # 400
        call(oagw, "POST", "/api/orders", order),                                        # 401
        call(oagw, "GET", "/api/orders/999", headers=key),                               # 404
        call(oagw, "GET", "/api/orders/1001", headers={"x-api-key": "wrong"}),           # 401
        call(oagw, "POST", "/gateway/customer.get", {"customer_id": 999}, headers=key),  # 404
        call(oagw, "GET", "/gateway/invoke", query={"service": "customer.get-details"},
             headers=key),                                                                # 403
        call(oagw, "POST", "/api/echo", raw="x" * 70000, body=None),                     # 413
        call(oagw, "POST", "/api/echo", raw="{not json", body=None),                     # 400
    ]
    cases[-1]["invalid"] = False  # not JSON: no schema to check it against
    statuses = [c["status"] for c in cases]
    assert statuses[:9] == [201, 200, 200, 200, 200, 200, 200, 200, 200], statuses
    assert statuses[9:] == [400, 401, 404, 401, 404, 403, 413, 400], statuses
    # the rate limit answers 429 once its bucket is empty
    limited = []
    for _ in range(6):
        limited.append(call(oagw, "POST", "/api/limited", {}))
        if limited[-1]["status"] == 429:
            break
    assert limited[-1]["status"] == 429
    code, result = conform(tmp_path, oagw, cases + limited)
    assert code == 0 and result["problems"] == [], result
    assert result["checked"] >= len(cases)
    # the check can fail: a doctored answer and a request the model refuses
    bad = [dict(cases[2], response={"order_id": "1001", "customer_id": 123, "status": "x"}),
           dict(cases[0], body=dict(order, currency="JPY")),
           dict(cases[8], status=429),
           dict(cases[9], body=order)]
    code, result = conform(tmp_path, oagw, bad)
    p = result["problems"]
    assert code == 1 and len(p) == 5, result
    assert p[0] == "GET /api/orders/1001: response 200: data/order_id must be integer"
    assert p[1].startswith("POST /api/orders: request body: data/currency must be equal to one")
    # an echo's answer as a 429: not listed, and not the error body
    assert p[2] == "DELETE /api/echo: status 429 is not listed"
    assert p[3] == "DELETE /api/echo: response 429: data must have required property 'error'"
    assert p[4] == "POST /api/orders: answered 400 but the document would accept this request"


def test_bad_documentation_fields_refused_at_load(tmp_path):
    d = tmp_path / "services"
    d.mkdir()
    (d / "bad.lua").write_text(
        'local service = require "portico.service"\n'
        'local M = service.new { name = "bad.doc", input = { n = "integer" },\n'
        '  examples = { input = { n = "seven" } } }\n'
        'return M\n')
    cfg = tmp_path / "portico.yaml"
    cfg.write_text(config_head("", log=None, dirs=str(d)).format(
        port=1, admin_port=2, root=ROOT, tmp=str(tmp_path)).replace("  \n", ""))
    for args in (["--check"], ["openapi"]):
        r = subprocess.run([BIN, *args, "-c", str(cfg)], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "bad.lua:2: service.new: examples.input fails the input schema: " \
               "n: expected integer, got string" in r.stderr, r.stderr


def test_client_certificate_channels_are_mutual_tls(tmp_path):
    """A client_cert definition is OpenAPI 3.1's mutualTLS, and the TLS
    listener is an https server of the document."""
    from test_tls import make_ca, make_cert
    from test_tls_mtls import WHOAMI, mtls_config
    d = tmp_path / "pki"
    ca_a = make_ca(d, "ca_a")
    p = {"ca_a": ca_a, "only_b_ca": ca_a[0],
         "server": make_cert(d, ca_a, "server", dns=["localhost"], ips=["127.0.0.1"])}
    svc = tmp_path / "services" / "sec"
    svc.mkdir(parents=True)
    (svc / "whoami.lua").write_text(WHOAMI)
    cfg = tmp_path / "mtls.yaml"
    cfg.write_text(mtls_config(p).format(port=11001, admin_port=11002, tls_port=11003, root=ROOT,
                                         tmp=str(tmp_path)))
    r = subprocess.run([BIN, "openapi", "-c", str(cfg)], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["servers"] == [{"url": "http://127.0.0.1:11001"}, {"url": "https://127.0.0.1:11003"}]
    assert doc["components"]["securitySchemes"]["partners"]["type"] == "mutualTLS"
    assert "in" not in doc["components"]["securitySchemes"]["partners"]
    assert doc["paths"]["/mtls/who"]["get"]["security"] == [{"partners": []}]
    v, _ = validate(tmp_path, r.stdout, "mtls.json")
    assert v.returncode == 0, v.stderr
