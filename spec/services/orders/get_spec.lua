local testing = require "portico.testing"

describe("orders.get", function()
  local t
  before_each(function()
    t = testing.new()
    t:load("services/orders/get.lua")
  end)

  it("takes the id from the path capture and lines from the query", function()
    local res = t:call("orders.get", { method = "GET", params = { order_id = "1002" } })
    assert.equal(200, res.status)
    assert.same({ order_id = 1002, customer_id = 456, status = "accepted", lines = { { sku = "C-3", qty = 5 } } },
      res.payload)
    res = t:call("orders.get", { method = "GET", query = "order_id=1001&lines=false" })
    assert.same({ order_id = 1001, customer_id = 123, status = "shipped" }, res.payload)
  end)

  it("answers 400 for an id that is not a number and 404 for one it does not know", function()
    local res = t:call("orders.get", { method = "GET", params = { order_id = "abc" } })
    assert.equal(400, res.status)
    assert.equal('invalid input: order_id: expected integer, got "abc"', res.error)
    res = t:call("orders.get", { method = "GET", query = "order_id=7" })
    assert.equal(404, res.status)
    assert.equal("order 7 not found", res.error)
  end)
end)
