local testing = require "portico.testing"

describe("customer.get-details", function()
  local t
  before_each(function()
    t = testing.new()
    t:load("services/customer/get_details.lua")
  end)

  it("knows customer 123", function()
    local res = t:call("customer.get-details", { payload = { customer_id = 123, tenant = "acme" } })
    assert.same({ customer_id = 123, name = "John Doe", email = "john.doe@example.com", tier = "gold" }, res.payload)
  end)

  it("does not need a tenant", function()
    assert.equal(200, t:call("customer.get-details", { payload = { customer_id = 456 } }).status)
  end)

  it("answers 404 for an unknown customer", function()
    local res = t:call("customer.get-details", { payload = { customer_id = 1 } })
    assert.equal(404, res.status)
  end)
end)
