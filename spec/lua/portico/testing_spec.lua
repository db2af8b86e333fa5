local testing = require "portico.testing"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

describe("portico.testing", function()
  local dir

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p '" .. dir .. "/sub'")
  end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  local function service(file, name, body, extra)
    local path = dir .. "/" .. file
    write(path, ([[
local service = require "portico.service"
local M = service.new { name = %q %s }
function M:handle()
%s
end
return M
]]):format(name, extra and (", " .. extra) or "", body))
    return path
  end

  it("builds self from the request table", function()
    local path = service("echo.lua", "t.echo", [[
      local h = self.request.http
      self.response.payload = { input = self.request.input, user = self.channel.security.username,
        ch = self.channel.name, ty = self.channel.type, m = h.method, p = h.path, q = h.query,
        qs = h.query_string, hd = h.headers, params = h.params, cid = self.cid }]])
    local t = testing.new()
    assert.equal("t.echo", t:load(path))
    local res = t:call("t.echo", {
      input = { a = 1 }, username = "u", channel = "api.x", method = "GET", path = "/x",
      query = { b = "2", a = { "1", "3" }, s = "x y" }, headers = { ["X-Tenant"] = "acme" },
      params = { id = "9" }, cid = "cid-t",
    })
    assert.equal(200, res.status)
    assert.equal("cid-t", res.cid)
    assert.equal("application/json", res.content_type)
    assert.same({
      input = { a = 1 }, user = "u", ch = "api.x", ty = "rest", m = "GET", p = "/x",
      q = { a = { "1", "3" }, b = "2", s = "x y" }, qs = "a=1&a=3&b=2&s=x%20y",
      hd = { ["x-tenant"] = "acme" }, params = { id = "9" }, cid = "cid-t",
    }, res.payload)
    res = t:call("t.echo", { payload = { p = true }, channel = { name = "ws", type = "websocket" }, query = "z=1" })
    assert.same({ p = true }, res.payload.input)
    assert.equal("websocket", res.payload.ty)
    assert.same({ z = "1" }, res.payload.q)
    assert.equal("test-cid-2", res.payload.cid)
    assert.same({ raw = 1 }, t:call("t.echo", { body = '{"raw": 1}', input = { ignored = 1 } }).payload.input)
  end)

  it("calls a file path directly, loading it once", function()
    local path = service("p.lua", "t.path", "self.response.payload = 'ok'")
    local res, t = testing.call(path, {})
    assert.equal("ok", res.body)
    assert.equal("text/plain; charset=utf-8", res.content_type)
    assert.is_nil(res.payload)
    assert.equal("ok", t:call(path).body)
    assert.equal("ok", t:call("t.path").body)
  end)

  it("reports error bodies as res.error", function()
    local t = testing.new()
    t:load(service("e.lua", "t.err", "self:error(418, 'teapot')"))
    local res = t:call("t.err")
    assert.equal(418, res.status)
    assert.equal("teapot", res.error)
    assert.equal("test-cid-1", res.payload.error.cid)
    assert.is_nil(t:call("t.err", { body = "{" }).error:find("teapot"))
  end)

  it("records invokes and logs, and stubs invoke targets", function()
    local t = testing.new()
    t:load(service("inner.lua", "t.inner", "self.response.payload = { real = true }"))
    t:load(service("outer.lua", "t.outer", [[
      self.logger:info("calling %s", "t.inner")
      self.response.payload = self:invoke("t.inner", { x = self.request.payload.x })]]))
    assert.same({ real = true }, t:call("t.outer", { payload = { x = 1 } }).payload)
    t:stub("t.inner", function(input, self)
      return { stubbed = input.x, cid = self.cid }
    end)
    assert.same({ stubbed = 2, cid = "c" }, t:call("t.outer", { payload = { x = 2 }, cid = "c" }).payload)
    t:stub("t.inner", { fixed = true })
    assert.same({ fixed = true }, t:call("t.outer", { payload = { x = 3 } }).payload)
    t:stub("t.inner", nil)
    assert.same({ real = true }, t:call("t.outer", { payload = { x = 4 } }).payload)
    assert.same({ name = "t.inner", input = { x = 1 } }, t.invocations[1])
    assert.same({ name = "t.inner", input = { x = 4 } }, t.invocations[4])
    assert.equal(4, #t.invocations)
    assert.same({ level = "info", message = "calling t.inner", cid = "test-cid-1", service = "t.outer" }, t.logs[1])
    assert.equal(t.logs[1], t:logged("^calling", "info"))
    assert.is_nil(t:logged("^calling", "error"))
    t:reset()
    assert.same({}, t.invocations)
    assert.same({}, t.logs)
  end)

  it("records self.out.amqp sends and can make them fail", function()
    local t = testing.new()
    t:load(service("pub.lua", "t.pub", [[
      local ok, err = self.out.amqp:send({ n = 1 }, "Backend", "ex", "key", { persistent = false })
      self.response.payload = { ok = ok or false, err = err }]]))
    assert.same({ ok = true }, t:call("t.pub").payload)
    assert.same({ data = { n = 1 }, body = '{"n":1}', outconn = "Backend", exchange = "ex",
      routing_key = "key", props = { persistent = false },
      properties = { persistent = false, content_type = "application/json" } }, t.sent.amqp[1])
    t:amqp_fails("no connection")
    assert.same({ ok = false, err = "no connection" }, t:call("t.pub").payload)
    assert.equal(2, #t.sent.amqp)
    t:amqp_fails(nil)
    assert.is_true(t:call("t.pub").payload.ok)
  end)

  it("makes a wrong self.out.amqp:send call the service's error", function()
    local t = testing.new()
    t:load(service("bad.lua", "t.bad", [[self.out.amqp:send(42, "Backend", "ex", "key")]]))
    assert.equal(500, t:call("t.bad").status)
    assert.matches("bad.lua:4: amqp:send: data must be a table or a string", t:logged("amqp:send").message, 1, true)
    assert.equal(0, #t.sent.amqp)
  end)

  it("records self.out.websocket pushes", function()
    local t = testing.new()
    t:load(service("ws.lua", "t.ws", [[self.out.websocket:send("ws", "u", { hi = 1 })]]))
    t:call("t.ws")
    assert.same({ { channel = "ws", username = "u", data = { hi = 1 }, text = '{"hi":1}' } }, t.sent.websocket)
  end)

  -- The fakes of self.out used to take what the real modules refuse; a spec
  -- that passed here then failed in the gateway. These run the real ones.
  it("refuses AMQP properties the gateway refuses, sending nothing", function()
    local t = testing.new()
    local cases = {
      { "{ colour = 'red' }", "amqp:send: unknown property 'colour'" },
      { "{ persistent = 'yes' }", "amqp:send: property persistent must be a boolean, got string" },
      { "{ priority = 300 }", "amqp:send: property priority must be a whole number from 0 to 255" },
      { "{ timestamp = -1 }", "amqp:send: property timestamp must be whole seconds since the epoch" },
      { "{ headers = { h = {} } }", "amqp:send: header h must be a string, number or boolean, got table" },
      { "{ headers = { [1] = 'x' } }", "amqp:send: header names must be strings" },
    }
    for i, case in ipairs(cases) do
      local file = "props" .. i .. ".lua"
      t:load(service(file, "t.props" .. i, "self.out.amqp:send({ n = 1 }, 'Backend', 'ex', 'key', " .. case[1] .. ")"))
      local res = t:call("t.props" .. i)
      assert.equal(500, res.status, case[1])
      assert.equal("internal error in service t.props" .. i, res.error)
      local logged = assert(t:logged("amqp:send", "error"), case[1]).message
      assert.matches(file .. ":4: " .. case[2], logged, 1, true)
      t:reset()
    end
    assert.equal(0, #t.sent.amqp)
  end)

  it("sends AMQP properties as the gateway does: numbers become strings where a string is due", function()
    local t = testing.new()
    t:load(service("exp.lua", "t.exp", [[
      assert(self.out.amqp:send("raw", "Backend", "", "q", { expiration = 60000, headers = { n = 1 } }))]]))
    assert.equal(200, t:call("t.exp").status)
    local sent = t.sent.amqp[1]
    assert.same({ expiration = 60000, headers = { n = 1 } }, sent.props)
    assert.same({ expiration = "60000", headers = { n = 1 } }, sent.properties) -- no content_type: a string
    assert.equal("raw", sent.body)
  end)

  it("raises for an outgoing AMQP connection the config does not have, once they are named", function()
    local t = testing.new()
    t:load(service("oc.lua", "t.oc", [[self.out.amqp:send({}, "Nowhere", "ex", "key")]]))
    assert.equal(200, t:call("t.oc").status) -- by default every name is a connection
    t:amqp_outconns({ "My Backend" })
    assert.equal(500, t:call("t.oc").status)
    assert.matches("oc.lua:4: amqp:send: no outgoing AMQP connection named 'Nowhere'",
      t:logged("no outgoing AMQP").message, 1, true)
    assert.equal(1, #t.sent.amqp)
    t:amqp_outconns(nil)
    assert.equal(200, t:call("t.oc").status)
  end)

  it("refuses WebSocket pushes the gateway refuses, pushing nothing", function()
    local t = testing.new()
    local cases = {
      { [["ws", "u", "caf\233"]], "websocket:send: data is not valid UTF-8 (byte 4)" },
      { [["ws", "u", { name = "caf\233" }]], "websocket:send: data is not valid UTF-8" },
      { [["ws", 42, "hi"]], "websocket:send: username must be a string or nil" },
      { [["", nil, "hi"]], "websocket:send: channel must be the name of a WebSocket channel" },
      { [["ws", nil, 42]], "websocket:send: data must be a table or a string, got number" },
      { [["ws", nil, { f = print }]], "websocket:send: data cannot be sent as JSON" },
    }
    for i, case in ipairs(cases) do
      local file = "push" .. i .. ".lua"
      t:load(service(file, "t.push" .. i, "self.out.websocket:send(" .. case[1] .. ")"))
      assert.equal(500, t:call("t.push" .. i).status, case[1])
      assert.matches(file .. ":4: " .. case[2], assert(t:logged("websocket:send", "error"), case[1]).message, 1, true)
      t:reset()
    end
    assert.equal(0, #t.sent.websocket)
    t:load(service("ok.lua", "t.push.ok", [[
      self.response.payload = { ok = self.out.websocket:send("ws", nil, "caf\195\169") }]]))
    assert.same({ ok = true }, t:call("t.push.ok").payload)
    assert.same({ { channel = "ws", data = "caf\195\169", text = "caf\195\169" } }, t.sent.websocket)
  end)

  it("gives each harness a runtime of its own, made by runtime.new", function()
    local runtime = require "portico.runtime"
    local a, b = testing.new(), testing.new()
    assert.are_not.equal(a.runtime, b.runtime)
    assert.are_not.equal(runtime, a.runtime)
    assert.is_nil(package.loaded["portico.runtime"].get("t.mine"))
    a:load(service("mine.lua", "t.mine", ""))
    assert.is_table(a.runtime.get("t.mine"))
    assert.is_nil(b.runtime.get("t.mine"))
    assert.is_nil(runtime.get("t.mine")) -- the VM's own runtime is not touched
  end)

  it("keeps harnesses apart", function()
    local a, b = testing.new(), testing.new()
    a:load(service("only_a.lua", "t.only", "self.response.payload = 'a'"))
    assert.equal(200, a:call("t.only").status)
    assert.equal(404, b:call("t.only").status)
    assert.equal(0, #b.logs)
  end)

  it("loads every service below a directory", function()
    service("one.lua", "t.one", "")
    service("sub/two.lua", "t.two", "")
    local t = testing.new()
    assert.same({ "t.one", "t.two" }, t:load_dir(dir))
  end)

  it("raises load errors as they are", function()
    local path = dir .. "/broken.lua"
    write(path, "return {")
    local ok, err = pcall(testing.new().load, testing.new(), path)
    assert.is_false(ok)
    assert.matches("broken.lua:1:", err, 1, true)
  end)
end)
