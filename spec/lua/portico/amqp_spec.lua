-- portico.amqp without the host: the checks of self.out.amqp:send, and what
-- reaches its transport. Sends through the host are covered by
-- tests/integration/test_amqp.py.
local amqp = require "portico.amqp"

describe("portico.amqp", function()
  local out = amqp.new({})

  it("raises on programmer mistakes, blaming the caller", function()
    local cases = {
      { function() out:send(42, "c", "x", "k") end, "data must be a table or a string" },
      { function() out:send({}, nil, "x", "k") end, "outconn must be the name" },
      { function() out:send({}, "c", nil, "k") end, "exchange must be a string" },
      { function() out:send({}, "c", "x", 1) end, "routing_key must be a string" },
      { function() out:send({}, "c", "x", "k", "p") end, "props must be a table" },
      { function() out:send({}, "c", "x", "k", { colour = "red" }) end, "unknown property 'colour'" },
      { function() out:send({}, "c", "x", "k", { persistent = "yes" }) end, "persistent must be a boolean" },
      { function() out:send({}, "c", "x", "k", { priority = 300 }) end, "priority must be a whole number" },
      { function() out:send({}, "c", "x", "k", { headers = { h = {} } }) end, "header h must be" },
      { function() out:send({ f = print }, "c", "x", "k") end, "cannot be sent as JSON" },
      { function() out.send({}, {}, "c", "x", "k") end, "with a colon" },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(case[1])
      assert.is_false(ok)
      assert.matches(case[2], err, 1, true)
      assert.matches("amqp_spec.lua", err, 1, true) -- error(msg, 2): the caller's line
    end
  end)

  it("returns nil, err outside the host instead of raising", function()
    local ok, err = out:send({ a = 1 }, "c", "x", "k", { expiration = 60000, headers = { n = 1 } })
    assert.is_nil(ok)
    assert.matches("not available outside the portico host", err, 1, true)
  end)

  describe("with a transport", function()
    local calls
    local transport = {
      outconn = function(name) return name == "Backend" end,
      publish = function(...)
        calls[#calls + 1] = { ... }
        return true
      end,
    }
    before_each(function() calls = {} end)

    it("hands it the body and the checked properties, then the call's own data and props", function()
      local out = amqp.new({}, transport)
      local props = { expiration = 60000, persistent = false, headers = { n = 1 } }
      assert.is_true(out:send({ a = 1 }, "Backend", "ex", "key", props))
      assert.same({ "Backend", "ex", "key", '{"a":1}',
        { expiration = "60000", persistent = false, headers = { n = 1 }, content_type = "application/json" },
        { a = 1 }, props }, calls[1])
      assert.is_true(out:send("text", "Backend", "", "q", { content_type = "text/csv" }))
      assert.same({ content_type = "text/csv" }, calls[2][5])
      assert.is_true(out:send("text", "Backend", "", "q"))
      assert.is_nil(calls[3][5])
    end)

    it("returns what the transport returns", function()
      local out = amqp.new({}, { outconn = transport.outconn, publish = function() return nil, "nacked" end })
      local ok, err = out:send("x", "Backend", "ex", "key")
      assert.is_nil(ok)
      assert.equal("nacked", err)
    end)

    it("raises for a connection the transport does not know, and sends nothing for a refused call", function()
      local out = amqp.new({}, transport)
      local ok, err = pcall(function() out:send({}, "Nowhere", "ex", "key") end)
      assert.is_false(ok)
      assert.matches("amqp_spec.lua:%d+: amqp:send: no outgoing AMQP connection named 'Nowhere'", err)
      assert.is_false(pcall(out.send, out, {}, "Backend", "ex", "key", { colour = "red" }))
      assert.equal(0, #calls)
    end)
  end)
end)
