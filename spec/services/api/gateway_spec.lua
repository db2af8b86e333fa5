local testing = require "portico.testing"

describe("api.gateway", function()
  local t
  before_each(function()
    t = testing.new()
    t:load("services/api/gateway.lua")
  end)

  it("adds the three fields and publishes to /incoming with key api", function()
    local res = t:call("api.gateway", {
      payload = { user_id = 123, name = "John Doe" }, cid = "cid-42",
    })
    assert.equal(200, res.status)
    assert.same({ result = "OK, data accepted" }, res.payload)
    assert.equal(1, #t.sent.amqp)
    local sent = t.sent.amqp[1]
    assert.equal("My Backend", sent.outconn)
    assert.equal("/incoming", sent.exchange)
    assert.equal("api", sent.routing_key)
    assert.equal(123, sent.data.user_id)
    assert.equal("John Doe", sent.data.name)
    assert.equal("api.gateway", sent.data._receiver)
    assert.equal("cid-42", sent.data._correlation_id)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.?%d*Z$", sent.data._date_received)
  end)

  it("answers 503 when the broker does not take the message", function()
    t:amqp_fails("no connection to the broker of 'My Backend'")
    local res = t:call("api.gateway", { payload = { a = 1 }, cid = "cid-7" })
    assert.equal(503, res.status)
    assert.equal(503, res.payload.error.status)
    assert.equal("cid-7", res.payload.error.cid)
    assert.is_nil(res.payload.error.message:find("My Backend", 1, true)) -- no internals
    local warned = false
    for _, l in ipairs(t.logs) do
      warned = warned or (l.level == "warn" and l.message:find("no connection", 1, true) ~= nil)
    end
    assert.is_true(warned)
  end)

  it("refuses what is not a JSON object, sending nothing", function()
    assert.equal(400, t:call("api.gateway", { body = "[1, 2]" }).status)
    assert.equal(400, t:call("api.gateway", { body = '"text"' }).status)
    assert.equal(0, #t.sent.amqp)
  end)
end)
