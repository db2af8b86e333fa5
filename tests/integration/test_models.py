"""Models and input (docs/services.md, "Models and input"): nested input
schemas checked over REST, the gateway and WebSocket with every problem named
by its full path; GET input from the query string and the route's captures,
converted to the declared types; unknown fields refused; a nested output that
fails its schema; a bad model refusing its file. Real sockets: http.client
and the `ws` package (tests/integration/ws)."""
import json
import os
import textwrap

import pytest

from conftest import BASE_CONFIG
from test_websocket import client, env, ws_package  # noqa: F401 (the npm fixture)

TAIL = """
    - name: orders.create
      url_path: /api/orders
      methods: [POST]
      service: orders.create
    - name: orders.get
      url_path: /api/orders/{{order_id}}
      methods: [GET, DELETE]
      service: orders.get
    - name: models.lookup
      url_path: /api/lookup/{{region}}/{{id}}
      methods: [GET, POST]
      service: test.lookup
  websocket:
    - name: ws
      url_path: /ws
      service: orders.create
      service_list: [orders.create, orders.get, test.lookup]
"""

SERVICES = {
    # every scalar type from text, a list, a default, and the route's captures
    "lookup.lua": """
        local service = require "portico.service"
        local M = service.new {
          name = "test.lookup",
          input = { id = "integer", region = "enum(eu,us)", price = "number?", on = "boolean=false",
                    tags = { "string" }, page = "integer(1..100)=1" },
        }
        function M:handle() self.response.payload = self.request.input end
        return M
    """,
    # a handler whose answer fails its nested output schema
    "bad_output.lua": """
        local service = require "portico.service"
        local M = service.new {
          name = "test.bad-output",
          output = { order = { lines = { { sku = "string" } } } },
        }
        function M:handle() self.response.payload = { order = { lines = { { sku = "A" }, { sku = 7 } } } } end
        return M
    """,
}


BAD_MODEL = """
local service = require "portico.service"
local M = service.new {
  name = "test.bad-model",
  input = { shipping = { lines = { { sku = "strng" } } } },
}
function M:handle() end
return M
"""
REFUSAL = ("bad_model.lua:3: service.new: input schema: field shipping.lines[].sku has unknown "
           "type 'strng'")


def order(**changes):
    o = {
        "customer_id": 123,
        "shipping": {"name": "Ann", "street": "Main 1", "city": "Oslo", "zip": "0150", "country": "NO"},
        "lines": [{"sku": "A-1", "qty": 2, "price": 9.99}, {"sku": "B-7", "qty": 1, "price": 5}],
    }
    o.update(changes)
    return o


@pytest.fixture
def mgw(start_gateway, tmp_path):
    svc = tmp_path / "services" / "models"
    svc.mkdir(parents=True, exist_ok=True)
    for name, text in SERVICES.items():
        (svc / name).write_text(textwrap.dedent(text))
    cfg = BASE_CONFIG.replace(
        "test.raise, test.slow]", "test.raise, test.slow, orders.create, orders.get, test.lookup, "
        "test.bad-output]")
    cfg = cfg.replace("services:\n  dirs:", "services:\n  watch_interval: 50ms\n  dirs:")
    return start_gateway(cfg.rstrip("\n") + "\n" + TAIL)


def error_of(res, status):
    s, h, b = res
    assert s == status, b
    assert h["content-type"] == "application/json"
    err = json.loads(b)["error"]
    assert err["status"] == status and err["cid"]
    return err["message"]


def test_nested_model_over_rest(mgw):
    s, _, b = mgw.http().post("/api/orders", order())
    assert s == 201, b
    got = json.loads(b)
    assert got["status"] == "accepted" and got["total"] == 24.98 and got["items"] == 3
    assert got["currency"] == "EUR" and got["gift"] is False  # the defaults
    assert got["ship_to"] == {"city": "Oslo", "country": "NO"}


def test_every_problem_named_by_its_full_path(mgw):
    bad = order(currency="NOK")
    bad["shipping"]["country"] = "no"
    del bad["shipping"]["city"]
    bad["lines"][1]["qty"] = 0
    bad["lines"].append({"sku": "c-9", "qty": 1.5})
    msg = error_of(mgw.http().post("/api/orders", bad), 400)
    assert msg == ("invalid input: currency: expected one of EUR, USD, GBP, got \"NOK\"; "
                   "lines[1].qty: expected 1 to 1000, got 0; "
                   "lines[2].price: missing; lines[2].qty: expected integer, got number; "
                   "lines[2].sku: expected text matching [%u%d%-]+, got \"c-9\"; "
                   "shipping.city: missing; "
                   "shipping.country: expected text matching %u%u, got \"no\"")
    assert error_of(mgw.http().post("/api/orders", order(lines=[])), 400) == \
        "invalid input: lines: expected 1 to 100 items, got 0"
    assert error_of(mgw.http().post("/api/orders", order(shipping=[1])), 400) == \
        "invalid input: shipping: expected object, got array"


def test_hostile_input_gets_a_bounded_list_of_problems(mgw):
    lines = [{"qty": "x"}] * 100
    msg = error_of(mgw.http().post("/api/orders", order(lines=lines)), 400)
    problems = msg[len("invalid input: "):].split("; ")
    assert len(problems) == 51 and problems[-1].endswith("more problems not shown)")
    assert problems[0] == "lines[0].price: missing"


def test_unknown_fields_refused_by_name(mgw):
    bad = order(coupon="X", **{"a b": 1})
    bad["shipping"]["floor"] = 3
    bad["lines"][0]["colour"] = "red"
    msg = error_of(mgw.http().post("/api/orders", bad), 400)
    assert msg == ("invalid input: lines[0].colour: unknown field; shipping.floor: unknown field; "
                   "a b: unknown field; coupon: unknown field")


def test_nested_model_over_the_gateway(mgw):
    c = mgw.http()
    s, _, b = c.post("/gateway/orders.create", order())
    assert s == 201 and json.loads(b)["items"] == 3
    s, _, b = c.post("/gateway/invoke?service=orders.create", order())
    assert s == 201
    msg = error_of(c.post("/gateway/orders.create", order(customer_id="123")), 400)
    assert msg == "invalid input: customer_id: expected integer, got string"


def test_get_input_from_the_query_on_the_gateway(mgw):
    c = mgw.http()
    s, _, b = c.request("GET", "/gateway/customer.get?customer_id=123")
    assert s == 200 and json.loads(b)["name"] == "John Doe"
    # /invoke's own ?service= is not input
    s, _, b = c.request("GET", "/gateway/invoke?service=customer.get&customer_id=456")
    assert s == 200 and json.loads(b)["name"] == "Jane Roe"
    s, _, b = c.request("GET", "/gateway/orders.get?order_id=1001&lines=0")
    assert s == 200 and json.loads(b) == {"order_id": 1001, "customer_id": 123, "status": "shipped"}
    assert error_of(c.request("GET", "/gateway/customer.get?customer_id=12x"), 400) == \
        'invalid input: customer_id: expected integer, got "12x"'
    assert error_of(c.request("GET", "/gateway/customer.get?customer_id=1&customer_id=2"), 400) == \
        "invalid input: customer_id: given more than once"
    assert error_of(c.request("GET", "/gateway/customer.get"), 400) == "invalid input: customer_id: missing"
    # a body on a GET is the input, as before
    s, _, b = c.request("GET", "/gateway/customer.get?customer_id=1", {"customer_id": 456})
    assert s == 200 and json.loads(b)["name"] == "Jane Roe"
    # HEAD takes the same input and answers no body
    s, _, b = c.request("HEAD", "/gateway/customer.get?customer_id=123")
    assert s == 200 and b == b""


def test_query_values_converted_to_the_declared_types(mgw):
    c = mgw.http()
    s, _, b = c.request("GET", "/api/lookup/eu/42?price=-1.5e1&on=true&tags=a&tags=b%20c&page=3")
    assert s == 200, b
    assert json.loads(b) == {"id": 42, "region": "eu", "price": -15, "on": True, "tags": ["a", "b c"],
                             "page": 3}
    s, _, b = c.request("GET", "/api/lookup/us/7?tags=x")
    assert json.loads(b) == {"id": 7, "region": "us", "on": False, "tags": ["x"], "page": 1}
    msg = error_of(c.request("GET", "/api/lookup/asia/7x?price=1.&on=yes&page=0&page=1"), 400)
    assert msg == ('invalid input: id: expected integer, got "7x"; on: expected boolean, got "yes"; '
                   'page: given more than once; price: expected number, got "1."; '
                   'region: expected one of eu, us, got "asia"; tags: missing')
    assert error_of(c.request("GET", "/api/lookup/eu/1?id=2&tags=x"), 400) == \
        "invalid input: id: given both in the path and in the query"
    # POST: the captures join the body
    s, _, b = c.post("/api/lookup/eu/5", {"tags": ["t"], "price": 2.5})
    assert s == 200 and json.loads(b) == {"id": 5, "region": "eu", "price": 2.5, "on": False,
                                          "tags": ["t"], "page": 1}
    assert error_of(c.post("/api/lookup/eu/5", {"id": 5, "tags": []}), 400) == \
        "invalid input: id: given both in the path and in the body"


def test_path_captures_as_input(mgw):
    c = mgw.http()
    s, _, b = c.request("GET", "/api/orders/1002")
    assert s == 200 and json.loads(b) == {"order_id": 1002, "customer_id": 456, "status": "accepted",
                                          "lines": [{"sku": "C-3", "qty": 5}]}
    s, _, b = c.request("DELETE", "/api/orders/1001?lines=false")
    assert s == 200 and "lines" not in json.loads(b)
    assert error_of(c.request("GET", "/api/orders/abc"), 400) == \
        'invalid input: order_id: expected integer, got "abc"'
    assert error_of(c.request("GET", "/api/orders/0"), 400) == \
        "invalid input: order_id: expected at least 1, got 0"
    assert error_of(c.request("GET", "/api/orders/7"), 404) == "order 7 not found"


def test_nested_model_over_websocket(mgw):
    bad = order()
    bad["lines"][0]["qty"] = 0
    res = client(mgw, send=[env("orders.create", "ok", order()), env("orders.create", "bad", bad),
                            json.dumps(order(coupon="X")),
                            env("orders.get", "get", {"order_id": 1001, "lines": False})], expect=4)
    replies = {}
    for m in res["messages"][0]:
        r = json.loads(m)
        replies[r.get("request_id")] = r
    assert replies["ok"]["status"] == 201 and replies["ok"]["data"]["items"] == 3
    assert replies["bad"]["error"]["status"] == 400
    assert replies["bad"]["error"]["message"] == "invalid input: lines[0].qty: expected 1 to 1000, got 0"
    assert replies[None]["error"]["message"] == "invalid input: coupon: unknown field"
    assert replies["get"]["data"] == {"order_id": 1001, "customer_id": 123, "status": "shipped"}


def test_a_nested_output_failing_its_schema_is_a_500_with_a_log_line(mgw):
    mgw.expect_error("failed the output schema")
    msg = error_of(mgw.http().post("/gateway/test.bad-output", {}), 500)
    assert msg == "internal error in service test.bad-output"
    assert mgw.log_has("the response failed the output schema: order.lines[1].sku: expected string, "
                       "got integer")


def test_a_bad_model_refuses_its_file_naming_the_file_and_field(mgw, start_gateway, tmp_path):
    # while running: the file is refused, the service never appears
    mgw.expect_error("service file refused")
    path = tmp_path / "services" / "models" / "bad_model.lua"
    path.write_text(BAD_MODEL)
    assert mgw.log_has("service file refused")
    refused = [e["msg"] for e in mgw.log_lines("error") if "service file refused" in e["msg"]]
    assert len(refused) == 1 and str(path) in refused[0] and REFUSAL in refused[0], refused
    assert mgw.http().post("/gateway/test.bad-model", {})[0] == 404
    assert mgw.http().post("/api/orders", order())[0] == 201, "the others keep serving"
    # at startup: portico does not start, and says why
    other = tmp_path / "startup"
    (other / "services" / "models").mkdir(parents=True)
    (other / "services" / "models" / "bad_model.lua").write_text(BAD_MODEL)
    with pytest.raises(RuntimeError) as e:
        start_gateway(sub="startup")
    assert "exited with 1" in str(e.value) and REFUSAL in str(e.value)
