local testing = require "portico.testing"

describe("customer.get", function()
  local t
  before_each(function()
    t = testing.new()
    t:load("services/customer/get.lua")
    t:load("services/customer/get_details.lua")
  end)

  it("answers customer 123 through customer.get-details", function()
    local res = t:call("customer.get", {
      input = { customer_id = 123 }, username = "john.doe", cid = "cid-123",
      headers = { ["x-portico-tenant"] = "acme" },
    })
    assert.equal(200, res.status)
    assert.same({ name = "John Doe", email = "john.doe@example.com", tier = "gold" }, res.payload)
    assert.same({ { name = "customer.get-details", input = { customer_id = 123, tenant = "acme" } } },
      t.invocations)
    assert.same({ level = "info", message = "API call from john.doe", cid = "cid-123", service = "customer.get" },
      t.logs[1])
  end)

  it("passes an empty tenant when the header is absent", function()
    t:call("customer.get", { input = { customer_id = 123 } })
    assert.same({ customer_id = 123, tenant = "" }, t.invocations[1].input)
  end)

  it("answers 404 for a customer that does not exist", function()
    local res = t:call("customer.get", { input = { customer_id = 999 }, cid = "cid-999" })
    assert.equal(404, res.status)
    assert.equal("customer 999 not found", res.error)
    assert.equal("cid-999", res.payload.error.cid)
  end)

  it("checks its input", function()
    local res = t:call("customer.get", { input = { customer_id = "123" } })
    assert.equal(400, res.status)
    assert.equal("invalid input: customer_id: expected integer, got string", res.error)
    res = t:call("customer.get", {})
    assert.equal("invalid input: customer_id: missing", res.error)
    assert.equal(0, #t.invocations)
  end)

  it("answers what customer.get-details gives (stubbed), and nothing more", function()
    t:stub("customer.get-details", function(input)
      return { name = "Stub " .. input.customer_id, email = "s@example.com", tier = "bronze", secret = "x" }
    end)
    local res = t:call("customer.get", { input = { customer_id = 5 } })
    assert.same({ name = "Stub 5", email = "s@example.com", tier = "bronze" }, res.payload)
  end)

  it("answers 500 when customer.get-details gives something its output schema refuses", function()
    t:stub("customer.get-details", { name = "No Email", tier = "gold" })
    local res = t:call("customer.get", { input = { customer_id = 5 } })
    assert.equal(500, res.status)
    assert.equal("internal error in service customer.get", res.error)
    assert.matches("email: missing", t:logged("output schema", "error").message, 1, true)
  end)
end)
