local testing = require "portico.testing"

describe("customer.get", function()
  local t
  before_each(function()
    t = testing.new()
    t:load("services/customer/get.lua")
    t:load("services/customer/get_details.lua")
  end)

  it("answers customer 123", function()
    local res = t:call("customer.get", { payload = { customer_id = 123 }, username = "john.doe",
                                         headers = { ["x-portico-tenant"] = "acme" } })
    assert.equal(200, res.status)
    assert.same({ name = "John Doe", email = "john.doe@example.com", tier = "gold" }, res.payload)
    assert.same({ name = "customer.get-details", input = { customer_id = 123, tenant = "acme" } },
      t.invocations[1])
    assert.equal("API call from john.doe", t.logs[1].message)
  end)

  it("answers 404 for a customer that does not exist", function()
    local res = t:call("customer.get", { payload = { customer_id = 999 } })
    assert.equal(404, res.status)
    assert.equal("customer 999 not found", res.error)
  end)

  it("checks its input", function()
    local res = t:call("customer.get", { payload = { customer_id = "123" } })
    assert.equal(400, res.status)
    assert.equal("invalid input: customer_id: expected integer, got string", res.error)
  end)

  it("uses what customer.get-details answers (stubbed)", function()
    t:stub("customer.get-details", function(input)
      return { name = "Stub " .. input.customer_id, email = "s@example.com", tier = "bronze" }
    end)
    local res = t:call("customer.get", { payload = { customer_id = 5 } })
    assert.same({ name = "Stub 5", email = "s@example.com", tier = "bronze" }, res.payload)
  end)
end)
