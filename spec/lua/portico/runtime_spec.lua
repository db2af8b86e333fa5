local testing = require "portico.testing"
local cjson = require "cjson"

local function write(path, text)
  local f = assert(io.open(path, "w")); f:write(text); f:close()
end

describe("portico.runtime", function()
  local dir, t
  before_each(function()
    dir = os.tmpname(); os.remove(dir); assert(os.execute("mkdir -p " .. dir) == 0 or true)
    t = testing.new()
  end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  local function service(name, body, extra)
    local path = dir .. "/" .. name .. ".lua"
    write(path, ([[
      local service = require "portico.service"
      local M = service.new { name = %q %s }
      function M:handle() %s end
      return M
    ]]):format(name, extra or "", body))
    return path
  end

  it("loads a service and dispatches to it", function()
    t:load(service("s.ok", "self.response.payload = { got = self.request.input.n }", ", input = { n = 'integer' }"))
    local res = t:call("s.ok", { payload = { n = 7 } })
    assert.equal(200, res.status)
    assert.same({ got = 7 }, res.payload)
  end)

  it("answers 400 for bad JSON with the cid", function()
    t:load(service("s.ok", "self.response.payload = {}"))
    local res = t:call("s.ok", { body = "{bad", cid = "c-1" })
    assert.equal(400, res.status)
    assert.matches("^invalid JSON", res.error)
    assert.equal("c-1", res.payload.error.cid)
  end)

  it("answers 400 naming every field that fails the input schema", function()
    t:load(service("s.in", "self.response.payload = {}", ", input = { a = 'integer', b = 'string' }"))
    local res = t:call("s.in", { payload = { a = "x" } })
    assert.equal(400, res.status)
    assert.equal("invalid input: a: expected integer, got string; b: missing", res.error)
    res = t:call("s.in", { body = "" })
    assert.equal("invalid input: a: missing; b: missing", res.error)
  end)

  it("turns a raise into a 500 with the cid and no traceback in the body", function()
    t:load(service("s.raise", "error('secret detail')"))
    local res = t:call("s.raise", { cid = "c-2" })
    assert.equal(500, res.status)
    assert.equal("internal error in service s.raise", res.error)
    assert.equal("c-2", res.payload.error.cid)
    assert.not_matches("secret", res.body)
    assert.equal("error", t.logs[1].level)
    assert.matches("secret detail", t.logs[1].message)
    assert.matches("traceback", t.logs[1].message)
  end)

  it("maps self:error to its status", function()
    t:load(service("s.nf", "self:error(404, 'nothing here')"))
    local res = t:call("s.nf")
    assert.equal(404, res.status)
    assert.equal("nothing here", res.error)
  end)

  it("refuses an answer that fails the output schema", function()
    t:load(service("s.out", "self.response.payload = { n = 'x' }", ", output = { n = 'integer' }"))
    local res = t:call("s.out")
    assert.equal(500, res.status)
    assert.matches("n: expected integer", t.logs[1].message)
  end)

  it("invokes another service with its own input checks", function()
    t:load(service("s.inner", "self.response.payload = { twice = self.request.input.n * 2 }", ", input = { n = 'integer' }"))
    t:load(service("s.outer", "self.response.payload = self:invoke('s.inner', { n = self.request.payload.n })"))
    assert.same({ twice = 10 }, t:call("s.outer", { payload = { n = 5 } }).payload)
    local res = t:call("s.outer", { payload = { n = "five" } })
    assert.equal(500, res.status)
    assert.matches("invoke s.inner: invalid input: n: expected integer", t.logs[#t.logs].message)
    assert.same({ name = "s.inner", input = { n = 5 } }, t.invocations[1])
  end)

  it("raises for an unknown invoke target", function()
    t:load(service("s.bad", "self:invoke('no.such', {})"))
    local res = t:call("s.bad")
    assert.equal(500, res.status)
    assert.matches("no service named 'no.such'", t.logs[1].message)
  end)

  it("passes strings through with their content type and custom headers", function()
    t:load(service("s.text", "self.response.payload = 'hi'; self.response.headers['x-a'] = '1'; self.response.status = 201"))
    local res = t:call("s.text")
    assert.equal(201, res.status)
    assert.equal("hi", res.body)
    assert.equal("text/plain; charset=utf-8", res.content_type)
    assert.equal("1", res.headers["x-a"])
  end)

  it("refuses a file that does not return a service, a duplicate name and a syntax error", function()
    local p = dir .. "/plain.lua"; write(p, "return {}")
    assert.has_error(function() t:load(p) end)
    t:load(service("dup", "x()"))
    local other = dir .. "/other.lua"
    write(other, 'local s = require "portico.service"; local M = s.new{name="dup"}; function M:handle() end; return M')
    assert.has_error(function() t:load(other) end)
    local broken = dir .. "/broken.lua"; write(broken, "return {")
    local ok, err = pcall(t.load, t, broken)
    assert.is_false(ok)
    assert.matches("broken.lua:1:", err)
  end)

  it("replaces a reloaded file and forgets an unloaded one", function()
    local p = service("s.v", "self.response.payload = { v = 1 }")
    t:load(p)
    write(p, 'local s = require "portico.service"; local M = s.new{name="s.v"}; function M:handle() self.response.payload = {v=2} end; return M')
    t:load(p)
    assert.same({ v = 2 }, t:call("s.v").payload)
    t.runtime.unload(p)
    assert.equal(404, t:call("s.v").status)
  end)

  it("parses query strings with repeated keys", function()
    assert.same({ a = { "1", "2" }, b = "x y" }, t.runtime.parse_query("a=1&a=2&b=x+y"))
  end)
end)
