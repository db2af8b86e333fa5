local service = require "portico.service"

describe("portico.service", function()
  it("makes a module table that handle() and the runtime use", function()
    local M = service.new { name = "a.b-c_d", input = { id = "integer" }, output = { x = "string?" } }
    assert.equal("a.b-c_d", M.name)
    assert.same({ id = "integer" }, M.input)
    assert.equal(M, M.__index)
    assert.is_function(M.error)
    local c = service.compiled(M)
    assert.equal("id", c.input[1].name)
    assert.equal("x", c.output[1].name)
    assert.is_nil(service.compiled({ name = "plain" }))
  end)

  it("leaves schemas out when none are given", function()
    local c = service.compiled(service.new { name = "bare" })
    assert.is_nil(c.input)
    assert.is_nil(c.output)
  end)

  it("refuses bad names, unknown fields and bad schemas, blaming the caller's line", function()
    local cases = {
      { { name = "" }, "name must be" },
      { { name = ".hidden" }, "name must be" },
      { { name = "a b" }, "name must be" },
      { { name = 42 }, "name must be" },
      { { name = "x", inputs = {} }, "unknown field 'inputs'" },
      { { name = "x", input = { id = "int" } }, "input schema: field id has unknown type 'int'" },
      { { name = "x", output = "string" }, "output schema must be a table" },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(service.new, case[1])
      assert.is_false(ok)
      assert.matches(case[2], err, 1, true)
    end
    local ok, err = pcall(function() service.new { name = "x", input = { id = "int" } } end)
    assert.is_false(ok)
    assert.matches("service_spec.lua:%d+: service.new: input schema", err)
    assert.has_error(function() service.new("customer.get") end)
  end)

  it("self:error raises a structured error; a bad status is the caller's mistake", function()
    local M = service.new { name = "e" }
    local self = setmetatable({}, M)
    local ok, e = pcall(self.error, self, 404, "customer 999 not found")
    assert.is_false(ok)
    assert.is_true(service.is_error(e))
    assert.equal(404, e.status)
    assert.equal("customer 999 not found", e.message)
    assert.equal("404: customer 999 not found", tostring(e))
    for _, status in ipairs({ 200, 600, 404.5, "404" }) do
      local ok2, err = pcall(self.error, self, status, "x")
      assert.is_false(ok2)
      assert.is_string(err)
      assert.matches("status must be a whole number from 400 to 599", err, 1, true)
    end
    assert.is_false(service.is_error("404: x"))
  end)
end)
