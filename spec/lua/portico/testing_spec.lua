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
      routing_key = "key", props = { persistent = false } }, t.sent.amqp[1])
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
    assert.same({ { channel = "ws", username = "u", data = { hi = 1 } } }, t.sent.websocket)
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
