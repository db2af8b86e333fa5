"""Security over real sockets: every refusal, the trusted upstream gateway,
allowlists under encodings, rate limits shared by the workers, and no secret
in any log line or error body."""
import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import threading
import time

import pytest

from amqp_support import ROOT
from conftest import config_head

BIN = os.environ.get("PORTICO_BIN") or os.path.join(ROOT, "build", "portico")

JOHN = ("john.doe", "secret")
GATEWAY = ("gateway", "gateway-demo")
JANE = ("jane", "jane-from-env")
API_KEY = "pk_live_4f0c2b0e9d8a7c6b5a4f3e2d1c0b9a8f"
JWT_SECRET = "it-jwt-secret-that-is-long-enough-0123456789"
CUSTOMER = {"name": "John Doe", "email": "john.doe@example.com", "tier": "gold"}

WHOAMI = """
local service = require "portico.service"
local M = service.new { name = "sec.whoami" }
function M:handle()
  local s = self.channel.security
  self.response.payload = { username = s.username or false, gateway = s.gateway or false,
                            headers = self.request.http.headers }
end
return M
"""

CONFIG = config_head("""
    workers: 4
    header_timeout: {header_timeout}
    body_timeout: {body_timeout}
    idle_timeout: {idle_timeout}
    drain_timeout: 10s
""", log="""
    level: debug
    access: {tmp}/access.log
""") + """security:
  basic_auth:
    - name: upstream.gateway
      realm: portico
      trust_username_header: x-portico-username
      users:
        - username: gateway
          password_hash: "{gateway_hash}"
    - name: api.users
      realm: portico
      users:
        - username: john.doe
          password_hash: "{john_hash}"
        - username: jane
          password_env: PT_IT_JANE_PASSWORD
  api_key:
    - name: partners
      header: x-api-key
      keys:
        - username: acme
          key_hash: "{key_hash}"
  jwt:
    - name: tokens
      algorithm: HS256
      secret_env: PT_IT_JWT_SECRET
      issuer: it
      audience: portico
      leeway: 0
channels:
  gateway:
    - name: gateway
      url_path: /gateway/{{service}}
      methods: [GET, POST]
      gateway_service_list: [customer.get, demo.echo, sec.whoami]
      security: upstream.gateway
  rest:
    - name: api.customer.get
      url_path: /api/customer/get
      methods: [POST]
      service: customer.get
      security: api.users
    - name: api.echo
      url_path: /api/echo
      methods: [GET, POST]
      service: sec.whoami
      security: api.users
    - name: limited
      url_path: /api/limited
      methods: [POST]
      service: sec.whoami
      security: api.users
      rate_limit: {{rate: 1/m, burst: 3, per: user}}
    - name: by.key
      url_path: /api/key
      methods: [POST]
      service: sec.whoami
      security: partners
    - name: by.token
      url_path: /api/token
      methods: [POST]
      service: sec.whoami
      security: tokens
    - name: open
      url_path: /open
      methods: [POST]
      service: sec.whoami
"""


def hash_of(secret, *args):
    r = subprocess.run([BIN, "hash-password", *args], input=secret.encode(),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().strip()


@pytest.fixture(scope="module")
def hashes():
    return {"gateway_hash": hash_of(GATEWAY[1]), "john_hash": hash_of(JOHN[1]),
            "key_hash": hash_of(API_KEY, "--api-key")}


@pytest.fixture
def sgw(start_gateway, hashes, tmp_path, monkeypatch):
    os.makedirs(tmp_path / "services" / "sec", exist_ok=True)
    (tmp_path / "services" / "sec" / "whoami.lua").write_text(WHOAMI)
    monkeypatch.setenv("PT_IT_JANE_PASSWORD", JANE[1])
    monkeypatch.setenv("PT_IT_JWT_SECRET", JWT_SECRET)
    return start_gateway(CONFIG, **hashes)


def basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims, alg="HS256", secret=JWT_SECRET, header=None):
    h = b64url(json.dumps(header or {"alg": alg, "typ": "JWT"}).encode())
    p = b64url(json.dumps(claims).encode())
    signing = ("%s.%s" % (h, p)).encode()
    if alg == "HS256":
        sig = b64url(hmac.new(secret.encode(), signing, hashlib.sha256).digest())
    else:
        sig = ""
    return "%s.%s.%s" % (h, p, sig)


def claims(**kw):
    c = {"sub": "mary", "iss": "it", "aud": "portico", "exp": int(time.time()) + 300}
    c.update(kw)
    return c


def call(gw, path, body=None, headers=None, method="POST"):
    c = gw.http()
    try:
        return c.request(method, path, {} if body is None else body, headers)
    finally:
        c.close()


def error_of(status, headers, body, want):
    assert status == want, (status, body)
    assert headers["content-type"] == "application/json"
    err = json.loads(body)["error"]
    assert err["status"] == want and err["cid"] == headers["x-correlation-id"]
    return err


def assert_401(resp, scheme="Basic", realm="portico"):
    status, headers, body = resp
    err = error_of(status, headers, body, 401)
    assert headers["www-authenticate"].startswith('%s realm="%s"' % (scheme, realm)), headers
    return err


# ---------------------------------------------------------------- basic auth

def test_basic_auth_lets_the_right_password_through(sgw):
    s, _, b = call(sgw, "/api/echo", headers={"Authorization": basic(*JOHN)})
    assert s == 200, b
    who = json.loads(b)
    assert who["username"] == "john.doe" and who["gateway"] is False
    # the credential is not shown to the service
    assert "authorization" not in who["headers"]
    # a password from the environment
    s, _, b = call(sgw, "/api/echo", headers={"Authorization": basic(*JANE)})
    assert s == 200 and json.loads(b)["username"] == "jane"


def test_wrong_password(sgw):
    err = assert_401(call(sgw, "/api/echo", headers={"Authorization": basic("john.doe", "Secret")}))
    assert err["message"] == "wrong username or password"
    # an unknown user gets the same answer
    err2 = assert_401(call(sgw, "/api/echo", headers={"Authorization": basic("nobody", "secret")}))
    assert err2["message"] == err["message"]
    # one user's password is not another's
    assert_401(call(sgw, "/api/echo", headers={"Authorization": basic("john.doe", JANE[1])}))
    # the gateway's credential does not open the direct channels
    assert_401(call(sgw, "/api/echo", headers={"Authorization": basic(*GATEWAY)}))


def test_missing_authorization(sgw):
    err = assert_401(call(sgw, "/api/echo"))
    assert err["message"] == "authentication required"
    s, h, _ = call(sgw, "/api/customer/get", {"customer_id": 123})
    assert s == 401 and h["www-authenticate"] == 'Basic realm="portico", charset="UTF-8"'


@pytest.mark.parametrize("value", [
    "Basic !!!not-base64!!!",                                       # bad base64
    "Basic " + base64.b64encode(b"john.doe:secret").decode()[:-1],  # truncated
    "Basic " + base64.b64encode(b"john.doesecret").decode(),        # no colon
    "Basic " + base64.b64encode(b":secret").decode(),               # empty user
    "Basic " + base64.b64encode(b"john.doe\x00:secret").decode(),   # a NUL
    "Basic",                                                        # no credentials
    "Bearer " + base64.b64encode(b"john.doe:secret").decode(),      # another scheme
    base64.b64encode(b"john.doe:secret").decode(),                  # no scheme
])
def test_malformed_basic_value(sgw, value):
    err = assert_401(call(sgw, "/api/echo", headers={"Authorization": value}))
    assert "secret" not in err["message"]


def test_two_authorization_headers(sgw):
    s = sgw.raw()
    a = basic(*JOHN)
    s.sendall(("POST /api/echo HTTP/1.1\r\nHost: t\r\nAuthorization: %s\r\n"
               "Authorization: %s\r\nContent-Length: 2\r\n\r\n{}" % (a, a)).encode())
    data = s.recv(65536).decode()
    s.close()
    assert data.startswith("HTTP/1.1 400 "), data


def test_first_calls_in_parallel(sgw):
    """Many connections present the same new credential at once: each waits
    for its own password check off the event loop, and all get in."""
    results = []

    def one():
        results.append(call(sgw, "/api/echo", headers={"Authorization": basic(*JOHN)})[0])
    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 16


def test_keep_alive_after_a_password_check(sgw):
    c = sgw.http(auth=JOHN)
    for _ in range(5):
        s, _, b = c.post("/api/echo", {"n": 1})
        assert s == 200 and json.loads(b)["username"] == "john.doe"
    c.close()


# ---------------------------------------------------------------- api keys, jwt

def test_api_key(sgw):
    s, _, b = call(sgw, "/api/key", headers={"X-Api-Key": API_KEY})
    assert s == 200 and json.loads(b)["username"] == "acme"
    assert "x-api-key" not in json.loads(b)["headers"]
    err = assert_401(call(sgw, "/api/key", headers={"X-Api-Key": API_KEY + "x"}), "Key")
    assert err["message"] == "unknown API key"
    assert_401(call(sgw, "/api/key"), "Key")


def test_jwt_good(sgw):
    s, _, b = call(sgw, "/api/token", headers={"Authorization": "Bearer " + jwt(claims())})
    assert s == 200, b
    assert json.loads(b)["username"] == "mary"


@pytest.mark.parametrize("name,token,message", [
    ("expired", lambda: jwt(claims(exp=int(time.time()) - 5)), "token expired"),
    ("not yet", lambda: jwt(claims(nbf=int(time.time()) + 600)), "token not valid yet"),
    ("tampered", lambda: jwt(claims())[:-60] + jwt(claims(sub="root"))[-60:],
     "invalid token signature"),
    ("payload swapped", lambda: ".".join([jwt(claims()).split(".")[0],
                                          jwt(claims(sub="root")).split(".")[1],
                                          jwt(claims()).split(".")[2]]),
     "invalid token signature"),
    ("other secret", lambda: jwt(claims(), secret="x" * 40), "invalid token signature"),
    ("alg none", lambda: jwt(claims(), alg="none"), "token algorithm not accepted"),
    ("alg none signed", lambda: jwt(claims(), header={"alg": "none"}).rsplit(".", 1)[0] + "." +
     jwt(claims()).rsplit(".", 1)[1], "token algorithm not accepted"),
    ("alg RS256", lambda: jwt(claims(), header={"alg": "RS256"}), "token algorithm not accepted"),
    ("issuer", lambda: jwt(claims(iss="evil")), "token issuer not accepted"),
    ("audience", lambda: jwt(claims(aud="elsewhere")), "token audience not accepted"),
    ("garbage", lambda: "a.b", "malformed token"),
])
def test_jwt_refused(sgw, name, token, message):
    err = assert_401(call(sgw, "/api/token", headers={"Authorization": "Bearer " + token()}),
                     "Bearer")
    assert err["message"] == message, name


# ------------------------------------------------------ trusted upstream gateway

def test_trusted_gateway_reaches_customer_get(sgw):
    s, _, b = call(sgw, "/gateway/customer.get", {"customer_id": 123},
                   {"Authorization": basic(*GATEWAY), "x-portico-username": "john.doe",
                    "x-portico-tenant": "acme"})
    assert s == 200, b
    assert json.loads(b) == CUSTOMER
    # customer.get logs the caller it was given: the end user, not the gateway
    assert sgw.log_has('"msg":"API call from john.doe"')
    assert "API call from gateway" not in sgw.log_text()


def test_trusted_gateway_identity_seen_by_the_service(sgw):
    s, _, b = call(sgw, "/gateway/sec.whoami", {},
                   {"Authorization": basic(*GATEWAY), "x-portico-username": "john.doe",
                    "x-portico-tenant": "acme"})
    assert s == 200, b
    who = json.loads(b)
    assert who["username"] == "john.doe"
    assert who["gateway"] == "gateway"
    assert who["headers"]["x-portico-tenant"] == "acme"
    assert "authorization" not in who["headers"]
    # without the header, the gateway itself is the caller
    s, _, b = call(sgw, "/gateway/sec.whoami", {}, {"Authorization": basic(*GATEWAY)})
    assert s == 200 and json.loads(b)["username"] == "gateway"


def test_trusted_header_needs_the_gateway_credential(sgw):
    assert_401(call(sgw, "/gateway/customer.get", {"customer_id": 123},
                    {"x-portico-username": "john.doe"}))
    assert_401(call(sgw, "/gateway/customer.get", {"customer_id": 123},
                    {"Authorization": basic("gateway", "wrong"),
                     "x-portico-username": "john.doe"}))


@pytest.mark.parametrize("path,headers", [
    ("/api/customer/get", {"Authorization": basic(*JOHN)}),       # a direct user
    ("/api/echo", {"Authorization": basic(*JANE)}),
    ("/api/key", {"X-Api-Key": API_KEY}),                          # an API key
    ("/open", {}),                                                 # no security at all
    ("/api/echo", {}),                                             # not even authenticated
])
def test_spoofed_username_header_refused(sgw, path, headers):
    h = dict(headers, **{"X-Portico-Username": "admin"})
    status, rh, body = call(sgw, path, {"customer_id": 123}, h)
    err = error_of(status, rh, body, 403)
    assert "x-portico-username" in err["message"]
    assert "admin" not in body.decode()
    time.sleep(0.1)
    assert "API call from admin" not in sgw.log_text()


def test_open_channel_without_the_header(sgw):
    s, _, b = call(sgw, "/open")
    assert s == 200 and json.loads(b)["username"] is False


# ----------------------------------------------------------------- allowlist

@pytest.mark.parametrize("path,want", [
    ("/gateway/customer.get-details", 403),              # not on the list
    ("/gateway/customer%2Eget-details", 403),            # encoded dot
    ("/gateway/customer.get%2Ddetails", 403),            # encoded dash
    ("/gateway/%63ustomer.get-details", 403),            # encoded letter
    ("/gateway/invoke?service=customer.get-details", 403),
    ("/gateway/invoke?service=customer%2Eget-details", 403),
    ("/gateway/invoke?service=customer.get&service=customer.get-details", None),
    ("/gateway/customer.get%2F..%2Fcustomer.get-details", 400),  # encoded slash
    ("/gateway/customer.get/../customer.get-details", 400),      # dot segments
    ("/gateway/customer.get/%2E%2E/customer.get-details", 400),
    ("/gateway/..%2Fapi%2Fecho", 400),
    ("/gateway/customer%252Eget", 400),                  # double encoding stays encoded
    ("/gateway/customer.get%00", 400),                   # NUL
    ("/gateway/customer.get%0a", 400),                   # control character
    ("/gateway/customer.get%", 400),                     # broken escape
    ("/gateway/customer%C0%AEget-details", 400),         # overlong UTF-8 dot
    ("/gateway/customer%EF%BC%8Eget-details", 400),      # fullwidth dot
    ("/gateway/customer.get%5C..%5Ccustomer.get-details", 400),  # backslashes
    ("/gateway/customer.get;/customer.get-details", 404),        # path parameters
    ("/gateway/customer.get-details%20", 400),           # trailing space
    ("/gateway/./customer.get-details", 400),
    ("//gateway/customer.get-details", 404),
    ("/gateway/customer.get-details/", 404),
    ("/gateway/Customer.Get", 404),                      # no case folding
    ("/gateway/customer.get.", 404),                     # no trailing-dot trick
    ("/GATEWAY/customer.get", 404),
])
def test_allowlist_encodings(sgw, path, want):
    h = {"Authorization": basic(*GATEWAY)}
    status, rh, body = call(sgw, path, {"customer_id": 123}, h)
    if want is None:  # a repeated parameter: either refused or the listed one, never details
        assert status in (200, 400, 403), body
        if status == 200:
            assert json.loads(body) == CUSTOMER
        return
    err = error_of(status, rh, body, want)
    # and without the credential nothing is said about the service at all
    if want in (403, 404) and err["message"] != "no channel at this path":
        assert_401(call(sgw, path, {"customer_id": 123}))


def test_allowlisted_encoded_name_still_served(sgw):
    s, _, b = call(sgw, "/gateway/customer%2Eget", {"customer_id": 123},
                   {"Authorization": basic(*GATEWAY)})
    assert s == 200 and json.loads(b) == CUSTOMER


# ---------------------------------------------------------------- rate limits

def test_rate_limit_per_user_across_workers(sgw):
    """burst 3 at 1/min per user: of 10 calls on 10 connections (spread over
    the 4 workers), exactly 3 get through; other users are not affected."""
    john = {"Authorization": basic(*JOHN)}
    call(sgw, "/api/echo", headers=john)  # the password check, out of the way
    statuses = []
    for _ in range(10):
        statuses.append(call(sgw, "/api/limited", headers=john))
    codes = [s for s, _, _ in statuses]
    assert codes.count(200) == 3 and codes.count(429) == 7, codes
    assert codes[:3] == [200, 200, 200]
    s, h, b = statuses[-1]
    err = error_of(s, h, b, 429)
    assert err["message"] == "rate limit exceeded"
    assert 1 <= int(h["retry-after"]) <= 60
    # jane has a bucket of her own
    jane = {"Authorization": basic(*JANE)}
    for _ in range(3):
        s, _, b = call(sgw, "/api/limited", headers=jane)
        assert s == 200 and json.loads(b)["username"] == "jane"
    assert call(sgw, "/api/limited", headers=jane)[0] == 429
    # the limit is the channel's: john's other channels still answer
    assert call(sgw, "/api/echo", headers=john)[0] == 200
    # The 429s came from more than one worker: had each worker counted on its
    # own, each of them would have let its first 3 calls through.
    workers = {line.get("worker") for line in sgw.log_lines()
               if line.get("msg") == "rate limit exceeded"}
    assert len(workers) >= 2, workers


def test_refused_calls_do_not_spend_the_limit(sgw):
    for _ in range(5):
        assert_401(call(sgw, "/api/limited", headers={"Authorization": basic("john.doe", "no")}))
    for _ in range(3):
        assert call(sgw, "/api/limited", headers={"Authorization": basic(*JOHN)})[0] == 200


# ----------------------------------------------------------- no secrets logged

def test_no_secret_in_any_log_line(sgw):
    secrets = [JOHN[1], GATEWAY[1], JANE[1], API_KEY, JWT_SECRET]
    token = jwt(claims())
    presented = [basic(*JOHN), basic(*GATEWAY), basic("john.doe", "wrong-pass-xyz"),
                 basic(*JANE), token, "wrong-pass-xyz"]
    call(sgw, "/api/echo", headers={"Authorization": basic(*JOHN)})
    call(sgw, "/api/echo", headers={"Authorization": basic("john.doe", "wrong-pass-xyz")})
    call(sgw, "/api/echo", headers={"Authorization": basic(*JANE)})
    call(sgw, "/gateway/customer.get", {"customer_id": 123},
         {"Authorization": basic(*GATEWAY), "x-portico-username": "john.doe"})
    call(sgw, "/api/key", headers={"X-Api-Key": API_KEY})
    call(sgw, "/api/key", headers={"X-Api-Key": API_KEY + "x"})
    call(sgw, "/api/token", headers={"Authorization": "Bearer " + token})
    call(sgw, "/api/token", headers={"Authorization": "Bearer " + token[:-3] + "abc"})
    call(sgw, "/gateway/customer.get-details", {"customer_id": 1},
         {"Authorization": basic(*GATEWAY)})
    time.sleep(0.3)  # the access log is flushed once per loop iteration
    logs = sgw.log_text()
    access = open(os.path.join(sgw.tmp, "access.log")).read()
    assert '"level":"debug"' in logs and access, "the logs were written"
    for s in secrets + presented + [API_KEY + "x", token[-20:]]:
        assert s not in logs, s
        assert s not in access, s
    for b64 in (base64.b64encode(JOHN[1].encode()).decode(),):
        assert b64 not in logs
    assert "john.doe" in access  # the username is fine to log


def test_no_secret_in_error_bodies(sgw):
    for path, h in (("/api/echo", {"Authorization": basic("john.doe", "hunter2-xyz")}),
                    ("/api/echo", {"Authorization": "Basic aHVudGVyMi14eXo"}),
                    ("/api/key", {"X-Api-Key": "hunter2-xyz"}),
                    ("/api/token", {"Authorization": "Bearer hunter2.xyz.abc"})):
        s, rh, b = call(sgw, path, headers=h)
        assert s in (400, 401), b
        text = b.decode() + json.dumps(rh)
        assert "hunter2" not in text and "aHVudGVyMi14eXo" not in text


# -------------------------------------------------------------- hash-password

def test_hash_password_reads_stdin_only():
    r = subprocess.run([BIN, "hash-password", "secret"], input=b"", capture_output=True,
                       timeout=30)
    assert r.returncode == 2 and r.stdout == b""
    r = subprocess.run([BIN, "hash-password"], input=b"", capture_output=True, timeout=30)
    assert r.returncode == 1 and r.stdout == b""
    r = subprocess.run([BIN, "hash-password"], input=b"pw\n", capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith(b"$argon2id$v=19$")
    r2 = subprocess.run([BIN, "hash-password"], input=b"pw", capture_output=True, timeout=60)
    assert r2.stdout != r.stdout  # salted
    r = subprocess.run([BIN, "hash-password", "--api-key"], input=b"abc\n", capture_output=True,
                       timeout=30)
    assert r.stdout.decode().strip() == "blake2b:" + hashlib.blake2b(b"abc", digest_size=32).hexdigest()


def test_plain_password_in_config_refused(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("security:\n  basic_auth:\n    - name: a\n      users:\n"
                   "        - username: u\n          password: secret\n")
    r = subprocess.run([BIN, "--check", "-c", str(cfg)], capture_output=True, timeout=30)
    assert r.returncode == 1
    assert b"no plain password in the file" in r.stderr
    assert b"secret\n" not in r.stderr.replace(b"password: secret", b"")


def test_default_config_demo_users(tmp_path):
    """config/portico.yaml as shipped: the gateway user forwards john.doe."""
    from amqp_support import Portico, derive_config, free_port
    port, admin = free_port(), free_port()
    path = derive_config(os.path.join(ROOT, "config", "portico.yaml"), str(tmp_path), port, admin)
    text = open(path).read().replace("workers: 0 ", "workers: 2 ")
    with open(path, "w") as f:
        f.write(text)
    text = open(path).read()
    assert "gateway-demo" not in text and "secret\n" not in text
    assert text.count("password_hash: \"$argon2id$") == 2
    p = Portico(path, port, workdir=str(tmp_path))
    try:
        from amqp_support import Http
        c = Http(port, auth=GATEWAY)
        s, _, b = c.post("/gateway/customer.get", {"customer_id": 123},
                         {"x-portico-username": "john.doe", "x-portico-tenant": "acme"})
        assert s == 200 and json.loads(b) == CUSTOMER
        c.close()
        c = Http(port, auth=JOHN)
        assert c.post("/api/customer/get", {"customer_id": 123})[0] == 200
        assert c.post("/api/echo", {})[0] == 200
        c.close()
        c = Http(port)
        assert c.post("/api/echo", {})[0] == 401
        assert c.post("/gateway/customer.get", {"customer_id": 123})[0] == 401
        c.close()
        c = Http(port, auth=JOHN)
        assert c.post("/api/echo", {}, {"x-portico-username": "x"})[0] == 403
        c.close()
    finally:
        assert p.stop() == 0
