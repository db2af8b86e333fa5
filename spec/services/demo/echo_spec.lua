local testing = require "portico.testing"

describe("demo.echo", function()
  it("answers with what it received", function()
    local t = testing.new()
    t:load("services/demo/echo.lua")
    local res = t:call("demo.echo", {
      payload = { a = 1 }, username = "john.doe", cid = "cid-9",
      channel = { name = "api.echo", type = "rest" }, method = "PUT", path = "/api/echo",
      query = "x=1", headers = { ["x-h"] = "v" },
    })
    assert.equal(200, res.status)
    assert.same({
      payload = { a = 1 }, username = "john.doe", cid = "cid-9",
      channel = { name = "api.echo", type = "rest" }, method = "PUT", path = "/api/echo",
      query = { x = "1" }, headers = { ["x-h"] = "v" },
    }, res.payload)
  end)
end)
