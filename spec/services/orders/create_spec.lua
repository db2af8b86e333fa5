local testing = require "portico.testing"

describe("orders.create", function()
  local t
  before_each(function()
    t = testing.new()
    t:load("services/orders/create.lua")
  end)

  local function order()
    return {
      customer_id = 123,
      shipping = { name = "Ann", street = "Main 1", city = "Oslo", zip = "0150", country = "NO" },
      lines = { { sku = "A-1", qty = 2, price = 9.99 }, { sku = "B-7", qty = 1, price = 5 } },
    }
  end

  it("accepts a whole order and fills the defaults", function()
    local res = t:call("orders.create", { input = order(), cid = "c1" })
    assert.equal(201, res.status)
    assert.same({ order_id = "ord-c1", status = "accepted", customer_id = 123, currency = "EUR",
                  total = 24.98, items = 3, gift = false, ship_to = { city = "Oslo", country = "NO" } },
      res.payload)
  end)

  it("names every problem by its path, unknown fields included", function()
    local o = order()
    o.currency, o.shipping.country, o.lines[2].qty, o.lines[1].sku, o.coupon = "NOK", "no", 0, nil, "X"
    local res = t:call("orders.create", { input = o })
    assert.equal(400, res.status)
    assert.equal("invalid input: currency: expected one of EUR, USD, GBP, got \"NOK\"; "
      .. "lines[0].sku: missing; lines[1].qty: expected 1 to 1000, got 0; "
      .. "shipping.country: expected text matching %u%u, got \"no\"; coupon: unknown field", res.error)
    o = order()
    o.lines = {}
    assert.equal("invalid input: lines: expected 1 to 100 items, got 0", t:call("orders.create", { input = o }).error)
  end)
end)
