-- Where a request's input comes from (docs/services.md, "Models and input"),
-- through the runtime's dispatch as the host calls it.
local testing = require "portico.testing"

describe("request input", function()
  local t

  local function load(path, src)
    return t.runtime.load(path, src)
  end

  before_each(function()
    t = testing.new()
    load("/svc/lookup.lua", [[
      local service = require "portico.service"
      local M = service.new {
        name = "t.lookup",
        input = { id = "integer", tags = { "string" }, on = "boolean=false", page = "integer(1..)=1",
                  service = "string?" },
      }
      function M:handle() self.response.payload = self.request.input end
      return M]])
    load("/svc/strict.lua", [[
      local service = require "portico.service"
      local M = service.new {
        name = "t.strict", unknown = "reject",
        input = { id = "integer", shipping = { city = "string" } },
        output = { id = "integer", lines = { { sku = "string" } } },
      }
      function M:handle()
        self.response.payload = { id = self.request.input.id, lines = { { sku = 5 } } }
      end
      return M]])
  end)

  it("comes from the query on GET, HEAD and DELETE without a body, converted", function()
    for _, m in ipairs({ "GET", "HEAD", "DELETE" }) do
      local res = t:call("t.lookup", { method = m, query = "id=123&tags=a&tags=b&on=1" })
      assert.equal(200, res.status, res.body)
      assert.same({ id = 123, tags = { "a", "b" }, on = true, page = 1 }, res.payload)
    end
    local res = t:call("t.lookup", { method = "GET", query = "id=12x&tags=a&page=0&page=1" })
    assert.equal(400, res.status)
    assert.equal('invalid input: id: expected integer, got "12x"; page: given more than once', res.error)
  end)

  it("comes from the body when there is one, on any method", function()
    local res = t:call("t.lookup", { method = "GET", query = "id=1", body = '{"id": 2, "tags": []}' })
    assert.same({ id = 2, tags = {}, on = false, page = 1 }, res.payload)
    res = t:call("t.lookup", { method = "POST", query = "id=1&tags=x" })
    assert.equal("invalid input: id: missing; tags: missing", res.error)
  end)

  it("adds the route's captures, as text, on every method", function()
    local res = t:call("t.lookup", { method = "POST", params = { id = "9" }, body = '{"tags": ["x"]}' })
    assert.same({ id = 9, tags = { "x" }, on = false, page = 1 }, res.payload)
    res = t:call("t.lookup", { method = "GET", params = { id = "9" }, query = "tags=x" })
    assert.same({ id = 9, tags = { "x" }, on = false, page = 1 }, res.payload)
    res = t:call("t.lookup", { method = "GET", params = { id = "9" }, query = "id=9&tags=x" })
    assert.equal("invalid input: id: given both in the path and in the query", res.error)
    res = t:call("t.lookup", { method = "GET", params = { id = "x9" }, query = "tags=x" })
    assert.equal('invalid input: id: expected integer, got "x9"', res.error)
  end)

  it("never takes service from the path or query of a gateway channel", function()
    local gw = { name = "gateway", type = "gateway" }
    local res = t:call("t.lookup", { method = "GET", channel = gw, params = { service = "invoke" },
                                     query = "service=t.lookup&id=1&tags=a" })
    assert.same({ id = 1, tags = { "a" }, on = false, page = 1 }, res.payload)
    res = t:call("t.lookup", { method = "GET", channel = gw, params = { service = "t.lookup" },
                               query = "id=1&tags=a" })
    assert.same({ id = 1, tags = { "a" }, on = false, page = 1 }, res.payload)
    -- on a REST channel a field named service is input like any other
    res = t:call("t.lookup", { method = "GET", query = "service=s&id=1&tags=a" })
    assert.equal("s", res.payload.service)
  end)

  it("refuses unknown fields with unknown = reject, in the body and the query", function()
    local res = t:call("t.strict", { body = '{"id": 1, "shipping": {"city": "x", "zip": 1}, "extra": 2}' })
    assert.equal(400, res.status)
    assert.equal("invalid input: shipping.zip: unknown field; extra: unknown field", res.error)
    res = t:call("t.strict", { method = "GET", query = "id=1&shipping=x&x=1" })
    assert.equal("invalid input: shipping: expected object, got string; x: unknown field", res.error)
  end)

  it("answers 500 and logs the path when a nested output fails its schema", function()
    local res = t:call("t.strict", { body = '{"id": 1, "shipping": {"city": "x"}}' })
    assert.equal(500, res.status)
    assert.equal("internal error in service t.strict", res.error)
    assert.truthy(t:logged("the response failed the output schema: lines%[0%]%.sku: expected string, got integer",
      "error"))
  end)

  it("refuses to load a service whose model is bad, naming the file, line and field", function()
    local ok, err = pcall(load, "/svc/bad.lua", [[
      local service = require "portico.service"
      local M = service.new {
        name = "t.bad",
        input = { shipping = { lines = { { sku = "strng" } } } },
      }
      function M:handle() end
      return M]])
    assert.is_false(ok)
    assert.matches("^/svc/bad%.lua:2: service%.new: input schema: field shipping%.lines%[%]%.sku has unknown type 'strng'", err)
    ok, err = pcall(load, "/svc/bad2.lua", [[
      local service = require "portico.service"
      local M = service.new { name = "t.bad2", unknown = "drop", input = {} }
      return M]])
    assert.is_false(ok)
    assert.matches('^/svc/bad2%.lua:2: service%.new: unknown must be "ignore" or "reject", got drop', err)
  end)
end)
