-- self:invoke_async, self:sleep and self:defer through portico.testing
-- (docs/services.md, "Scheduler and async work").
local testing = require "portico.testing"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

describe("async work", function()
  local dir, t

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p '" .. dir .. "'")
    t = testing.new()
  end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  local n = 0
  local function service(name, body, extra)
    n = n + 1
    local path = dir .. "/s" .. n .. ".lua"
    write(path, ([[
local service = require "portico.service"
local M = service.new { name = %q %s }
_G.async_trace = _G.async_trace or {}
local trace = _G.async_trace
function M:handle()
%s
end
return M
]]):format(name, extra and (", " .. extra) or "", body))
    return t:load(path)
  end

  before_each(function() _G.async_trace = {} end)

  describe("invoke_async", function()
    it("returns at once and runs the target after the call, with the caller's cid", function()
      service("a.target", [[
        trace[#trace + 1] = "target " .. self.request.input.n .. " " .. self.cid .. " " .. self.channel.type]],
        [[input = { n = "integer" }]])
      service("a.parent", [[
        local ok, err = self:invoke_async("a.target", { n = 7 })
        trace[#trace + 1] = "parent " .. tostring(ok) .. " " .. tostring(err)
        self.response.payload = { ok = ok }]])
      local res = t:call("a.parent", { cid = "c-1" })
      assert.equal(200, res.status)
      assert.same({ ok = true }, res.payload)
      assert.same({ "parent true nil", "target 7 c-1 async" }, _G.async_trace)
      assert.same({ { name = "a.target", input = { n = 7 }, cid = "c-1" } }, t.async)
    end)

    it("logs the target's error with the parent's cid; the caller's answer stands", function()
      service("a.bad", [[error("boom in async")]])
      service("a.parent", [[
        assert(self:invoke_async("a.bad", {}))
        self.response.payload = { fine = true }]])
      local res = t:call("a.parent", { cid = "parent-cid" })
      assert.equal(200, res.status)
      local l = t:logged("async run of 'a.bad' %(invoke_async from 'a.parent'%) failed: .*boom in async", "error")
      assert.truthy(l)
      assert.equal("parent-cid", l.cid)
    end)

    it("logs self:error of the target too", function()
      service("a.refuses", [[self:error(409, "taken")]])
      service("a.parent", [[assert(self:invoke_async("a.refuses"))]])
      t:call("a.parent", { cid = "p2" })
      local l = t:logged("self:error%(409, taken%)", "error")
      assert.truthy(l)
      assert.equal("p2", l.cid)
    end)

    it("raises for an unknown service or a bad input, at the caller's line", function()
      service("a.typed", [[]], [[input = { n = "integer" }]])
      service("a.unknown", [[self:invoke_async("a.nope", {})]])
      service("a.badinput", [[self:invoke_async("a.typed", { n = "x" })]])
      local res = t:call("a.unknown")
      assert.equal(500, res.status)
      assert.truthy(t:logged("invoke_async: no service named 'a.nope'"))
      res = t:call("a.badinput")
      assert.equal(500, res.status)
      assert.truthy(t:logged("invoke_async a.typed: invalid input"))
      assert.same({}, t.async)
    end)

    it("answers nil, err over the limit of queued runs", function()
      service("a.noop", [[trace[#trace + 1] = "noop"]])
      service("a.many", [[
        local results = {}
        for i = 1, 3 do
          local ok, err = self:invoke_async("a.noop")
          results[i] = ok and "ok" or err
        end
        self.response.payload = results]])
      t.max_async = 2
      local res = t:call("a.many")
      assert.equal("ok", res.payload[1])
      assert.equal("ok", res.payload[2])
      assert.matches("invoke_async a.noop: .*2 async runs queued", res.payload[3])
      assert.same({ "noop", "noop" }, _G.async_trace)
    end)

    it("runs a stub instead of the target when there is one", function()
      service("a.target", [[trace[#trace + 1] = "real"]])
      service("a.parent", [[self:invoke_async("a.target", { x = 1 })]])
      t:stub("a.target", function(input) _G.async_trace[#_G.async_trace + 1] = "stub " .. input.x end)
      t:call("a.parent")
      assert.same({ "stub 1" }, _G.async_trace)
    end)

    it("runs async work started by async work", function()
      service("a.leaf", [[trace[#trace + 1] = "leaf"]])
      service("a.mid", [[trace[#trace + 1] = "mid"; self:invoke_async("a.leaf")]])
      service("a.top", [[self:invoke_async("a.mid"); trace[#trace + 1] = "top"]])
      t:call("a.top")
      assert.same({ "top", "mid", "leaf" }, _G.async_trace)
    end)
  end)

  describe("sleep", function()
    it("returns at once and advances the fake clock", function()
      service("s.nap", [[
        assert(self:sleep(1.5) == true)
        self:sleep(0)
        self:sleep(2)
        self.response.payload = { done = true }]])
      local res = t:call("s.nap")
      assert.same({ done = true }, res.payload)
      assert.same({ 1.5, 0, 2 }, t.slept)
      assert.equal(3.5, t.clock)
    end)

    it("refuses seconds that are not a number from 0 to 3600", function()
      for _, bad in ipairs({ "-1", "3601", "'x'", "0/0", "nil" }) do
        service("s.bad" .. _, "self:sleep(" .. bad .. ")")
        local res = t:call("s.bad" .. _)
        assert.equal(500, res.status)
      end
      assert.truthy(t:logged("sleep%(seconds%): seconds must be a number from 0 to 3600"))
      assert.same({}, t.slept)
    end)
  end)

  describe("defer", function()
    it("runs after the call has its answer, in order, with self still at hand", function()
      service("d.parent", [[
        self:defer(function() trace[#trace + 1] = "first " .. self.response.payload.v end)
        self:defer(function() trace[#trace + 1] = "second" end)
        trace[#trace + 1] = "handle"
        self.response.payload = { v = 1 }]])
      local res = t:call("d.parent")
      assert.same({ v = 1 }, res.payload)
      assert.same({ "handle", "first 1", "second" }, _G.async_trace)
    end)

    it("runs even when the handler fails, and logs a deferred error with the cid", function()
      service("d.fails", [[
        self:defer(function() error("cleanup broke") end)
        self:defer(function() trace[#trace + 1] = "still runs" end)
        error("handler broke")]])
      local res = t:call("d.fails", { cid = "d-cid" })
      assert.equal(500, res.status)
      assert.same({ "still runs" }, _G.async_trace)
      local l = t:logged("a deferred function raised: .*cleanup broke", "error")
      assert.truthy(l)
      assert.equal("d-cid", l.cid)
    end)

    it("of an invoked service waits for the caller's response", function()
      service("d.child", [[self:defer(function() trace[#trace + 1] = "child deferred" end)]])
      service("d.caller", [[
        self:invoke("d.child")
        trace[#trace + 1] = "caller after invoke"]])
      t:call("d.caller")
      assert.same({ "caller after invoke", "child deferred" }, _G.async_trace)
    end)

    it("refuses what is not a function", function()
      service("d.bad", [[self:defer("x")]])
      assert.equal(500, t:call("d.bad").status)
      assert.truthy(t:logged("defer%(fn%): fn must be a function"))
    end)
  end)
end)
