-- portico.websocket without the host: the checks of self.out.websocket:send,
-- and what reaches its transport. Pushes through the host are covered by
-- tests/integration/test_websocket.py.
local websocket = require "portico.websocket"

describe("portico.websocket", function()
  local pushed
  local transport = { push = function(...) pushed[#pushed + 1] = { ... } end }
  before_each(function() pushed = {} end)

  it("raises on programmer mistakes, blaming the caller, and pushes nothing", function()
    local out = websocket.new({}, transport)
    local cases = {
      { function() out:send("", nil, "x") end, "channel must be the name of a WebSocket channel" },
      { function() out:send(nil, nil, "x") end, "channel must be the name of a WebSocket channel" },
      { function() out:send("ws", 42, "x") end, "username must be a string or nil" },
      { function() out:send("ws", nil, 42) end, "data must be a table or a string, got number" },
      { function() out:send("ws", nil, { f = print }) end, "cannot be sent as JSON" },
      { function() out:send("ws", nil, "caf\233") end, "data is not valid UTF-8 (byte 4)" },
      { function() out:send("ws", nil, { name = "\192\175" }) end, "data is not valid UTF-8" },
      { function() out.send("ws", nil, "x") end, "with a colon" },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(case[1])
      assert.is_false(ok)
      assert.matches(case[2], err, 1, true)
      assert.matches("websocket_spec.lua", err, 1, true) -- error(msg, 2): the caller's line
    end
    assert.equal(0, #pushed)
  end)

  it("hands the transport the text to send and the call's own data", function()
    local out = websocket.new({}, transport)
    assert.is_true(out:send("ws", "u", { hi = 1 }))
    assert.is_true(out:send("ws", nil, "caf\195\169"))
    assert.same({ { "ws", "u", '{"hi":1}', { hi = 1 } }, { "ws", nil, "caf\195\169", "caf\195\169" } }, pushed)
  end)

  it("returns nil, err outside the host instead of raising", function()
    local ok, err = websocket.new({}):send("ws", nil, "x")
    assert.is_nil(ok)
    assert.matches("not available outside the portico host", err, 1, true)
  end)
end)
