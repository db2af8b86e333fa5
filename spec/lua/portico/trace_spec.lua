-- portico.trace (self.trace): the no-op object, and spans over a stand-in
-- of the host's trace primitives. Export through the host is covered by
-- tests/integration/test_tracing.py.
local TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

local function load_with(host)
  package.loaded["portico.trace"] = nil
  package.loaded["portico.host"] = host
  local m = require "portico.trace"
  package.loaded["portico.host"] = nil
  package.loaded["portico.trace"] = nil
  return m
end

describe("portico.trace", function()
  it("is one shared no-op without the host's primitives or a traceparent", function()
    local trace = load_with(nil)
    local t = trace.new(TP, "svc")
    assert.are.equal(trace.NOOP, t)
    assert.are.equal(t, t:set("k", "v"))
    assert.are.equal(t, t:span("x"))
    assert.is_nil(t:traceparent())
    assert.is_nil(t.trace_id)
    t:finish()
    local n = 0
    local ids = function() n = n + 1; return string.format("%016x", n) end
    local with = load_with({ trace_id = ids, trace_now = function() return 1 end,
                             trace_emit = function() end })
    assert.are.equal(with.NOOP, with.new(nil, "svc"))
  end)

  describe("with the host", function()
    local trace, emitted, n
    before_each(function()
      emitted, n = {}, 0
      trace = load_with({
        trace_id = function(bytes) n = n + 1; return string.format("%0" .. (2 * bytes) .. "x", n) end,
        trace_now = function() return 1000 * n end,
        trace_emit = function(...) emitted[#emitted + 1] = { ... } end,
      })
    end)

    it("makes the service span under the traceparent and children under it", function()
      local t = trace.new(TP, "svc")
      assert.are.equal("4bf92f3577b34da6a3ce929d0e0e4736", t.trace_id)
      assert.are.equal("00-4bf92f3577b34da6a3ce929d0e0e4736-" .. t.span_id .. "-01", t:traceparent())
      local c = t:span("child", "client")
      c:set("a", 1):set("b", true):set("c", "x"):error("boom")
      c:finish()
      c:finish() -- once only
      t:finish()
      assert.are.equal(2, #emitted)
      local ce, te = emitted[1], emitted[2]
      assert.are.same({ "4bf92f3577b34da6a3ce929d0e0e4736", c.span_id, t.span_id, "child", 3 },
        { ce[1], ce[2], ce[3], ce[4], ce[5] })
      assert.are.same({ a = 1, b = true, c = "x" }, ce[8])
      assert.are.equal("boom", ce[9])
      assert.are.same({ t.span_id, "00f067aa0ba902b7", "service svc", 1 }, { te[2], te[3], te[4], te[5] })
    end)

    it("exports nothing of an unsampled trace but passes its context on", function()
      local t = trace.new("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "svc")
      local c = t:span("x")
      assert.truthy(c:traceparent():match("%-00$"))
      c:finish()
      t:finish()
      assert.are.equal(0, #emitted)
    end)

    it("raises on mistakes, blaming the caller", function()
      local t = trace.new(TP, "svc")
      local cases = {
        { function() t:set(1, "v") end, "key must be a non%-empty string" },
        { function() t:set("", "v") end, "key must be a non%-empty string" },
        { function() t:set("k", {}) end, "value must be a string, a number or a boolean, got table" },
        { function() t:span("") end, "name must be a non%-empty string" },
        { function() t:span("x", "sideways") end, "kind must be internal, server" },
      }
      for _, case in ipairs(cases) do
        local ok, err = pcall(case[1])
        assert.is_false(ok)
        assert.truthy(tostring(err):match(case[2]), err)
        assert.truthy(tostring(err):match("trace_spec.lua"), err)
      end
    end)

  it("asks the host for the request's context only when used (current)", function()
    local asked, given = 0, { TP, "rojo=00f067aa0ba902b7" }
    local n = 0
    local trace = load_with({
      trace_id = function(bytes) n = n + 1; return string.format("%0" .. (2 * bytes) .. "x", n) end,
      trace_now = function() return 1 end,
      trace_emit = function() end,
      trace_parent = function() asked = asked + 1; return given[1], given[2] end,
    })
    assert.is_true(trace.on)
    assert.are.equal(0, asked)
    local t = trace.current("svc")
    assert.are.equal(1, asked)
    assert.are.equal("4bf92f3577b34da6a3ce929d0e0e4736", t.trace_id)
    assert.are.equal("rojo=00f067aa0ba902b7", t:tracestate())
    assert.are.equal("rojo=00f067aa0ba902b7", t:span("child"):tracestate())
    given = {}
    assert.are.equal(trace.NOOP, trace.current("svc"))  -- not traced
    assert.is_nil(trace.NOOP:tracestate())
    assert.is_false(load_with(nil).on)
  end)
  end)
end)
