local testing = require "portico.testing"

describe("customer.get-details", function()
  local t
  before_each(function()
    t = testing.new()
    t:load("services/customer/get_details.lua")
  end)

  it("knows customer 123", function()
    local res = t:call("customer.get-details", { input = { customer_id = 123, tenant = "acme" } })
    assert.equal(200, res.status)
    assert.same({ customer_id = 123, name = "John Doe", email = "john.doe@example.com", tier = "gold" },
      res.payload)
  end)

  it("does not need a tenant", function()
    local res = t:call("customer.get-details", { input = { customer_id = 123 } })
    assert.equal(200, res.status)
    assert.equal("John Doe", res.payload.name)
  end)

  it("answers 404 for an unknown customer", function()
    local res = t:call("customer.get-details", { input = { customer_id = 999 } })
    assert.equal(404, res.status)
    assert.equal("customer 999 not found", res.error)
  end)

  it("checks its input", function()
    local res = t:call("customer.get-details", { input = { customer_id = 1.5, tenant = 7 } })
    assert.equal(400, res.status)
    assert.equal("invalid input: customer_id: expected integer, got number; tenant: expected string, got integer",
      res.error)
  end)
end)
