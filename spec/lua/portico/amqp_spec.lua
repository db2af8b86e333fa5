-- portico.amqp without the host: the checks of self.out.amqp:send. Sends
-- through the host are covered by tests/integration/test_amqp.py.
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
end)
