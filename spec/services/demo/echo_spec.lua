local testing = require "portico.testing"

describe("demo.echo", function()
  local t
  before_each(function()
    t = testing.new()
    t:load("services/demo/echo.lua")
  end)

  it("answers with everything it received", function()
    local res = t:call("demo.echo", {
      payload = { a = 1, list = { 1, 2 } }, username = "john.doe", cid = "cid-9",
      channel = { name = "api.echo", type = "rest" }, method = "PUT", path = "/api/echo",
      query = "x=1&x=2&y=z", headers = { ["x-h"] = "v", accept = "application/json" },
    })
    assert.equal(200, res.status)
    assert.same({
      payload = { a = 1, list = { 1, 2 } }, username = "john.doe", cid = "cid-9",
      channel = { name = "api.echo", type = "rest" }, method = "PUT", path = "/api/echo",
      query = { x = { "1", "2" }, y = "z" }, headers = { ["x-h"] = "v", accept = "application/json" },
    }, res.payload)
  end)

  it("echoes any JSON, and no payload for an empty body", function()
    assert.equal("text", t:call("demo.echo", { body = '"text"' }).payload.payload)
    local res = t:call("demo.echo", { method = "GET", channel = { name = "gateway", type = "gateway" } })
    assert.equal(200, res.status)
    assert.is_nil(res.payload.payload)
    assert.is_nil(res.payload.username)
    assert.same({ name = "gateway", type = "gateway" }, res.payload.channel)
    assert.equal("GET", res.payload.method)
  end)
end)
