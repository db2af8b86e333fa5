-- portico.runtime through runtime.dispatch itself, with the request table and
-- results of docs/contract.md. Each test gets its own runtime (runtime.new,
-- through portico.testing) so registries and logs do not leak between tests.
local testing = require "portico.testing"
local cjson = require "cjson"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

describe("portico.runtime", function()
  local dir, t, rt

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p '" .. dir .. "'")
    t = testing.new()
    rt = t.runtime
  end)

  after_each(function()
    os.execute("rm -rf '" .. dir .. "'")
    package.loaded["test.probe"] = nil
  end)

  -- Writes a service file: name, the body of handle, and more fields for service.new.
  local function service(name, body, extra, file)
    local path = dir .. "/" .. (file or name) .. ".lua"
    write(path, ([[
local service = require "portico.service"
local M = service.new { name = %q %s }
function M:handle()
%s
end
return M
]]):format(name, extra and (", " .. extra) or "", body or ""))
    return path
  end

  -- runtime.dispatch with defaults for what a test does not care about.
  local function dispatch(name, o)
    o = o or {}
    return rt.dispatch {
      service = name, cid = o.cid or "cid-1", method = o.method or "POST", path = o.path or "/p",
      query_string = o.query_string or "", headers = o.headers or {}, body = o.body or "",
      channel = o.channel or "api", channel_type = o.channel_type or "rest",
      username = o.username, params = o.params, gateway = o.gateway, amqp = o.amqp,
    }
  end

  -- A function a service can call as require("test.probe")(self) to hand self to the spec.
  local function probe()
    local seen = {}
    package.loaded["test.probe"] = function(self) seen[#seen + 1] = self end
    return seen
  end

  local function decode_error(body)
    local e = cjson.decode(body)
    return e.error
  end

  describe("dispatch", function()
    it("answers a table payload as JSON", function()
      rt.load(service("s.ok", "self.response.payload = { got = self.request.input.n }", "input = { n = 'integer' }"))
      local status, body, ctype, headers = dispatch("s.ok", { body = '{"n": 7, "other": 1}' })
      assert.equal(200, status)
      assert.same({ got = 7 }, cjson.decode(body))
      assert.equal("application/json", ctype)
      assert.is_nil(headers)
    end)

    it("builds self as the contract says", function()
      local seen = probe()
      rt.load(service("s.self", "require('test.probe')(self); self.response.payload = {}",
        "input = { id = 'integer', tenant = 'string?' }"))
      local status = dispatch("s.self", {
        cid = "cid-self", method = "GET", path = "/gateway/s.self", query_string = "a=1&a=2&b=x+y&c=%41",
        headers = { ["x-h"] = "v" }, body = '{"id": 5, "extra": true}', channel = "gw",
        channel_type = "gateway", username = "john.doe", params = { service = "s.self" },
        gateway = "upstream", amqp = { queue = "q" },
      })
      assert.equal(200, status)
      local self = assert(seen[1])
      local M = rt.get("s.self")
      assert.equal(M, getmetatable(self))
      assert.equal(M.handle, self.handle)
      assert.equal(M.error, self.error)
      assert.equal("s.self", self.name)
      assert.equal("cid-self", self.cid)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%d$", self.time.utcnow())
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT", tostring(self.time))
      assert.same({ id = 5, extra = true }, self.request.payload)
      assert.same({ id = 5 }, self.request.input)
      assert.equal('{"id": 5, "extra": true}', self.request.raw)
      local http = self.request.http
      assert.equal("GET", http.method)
      assert.equal("/gateway/s.self", http.path)
      assert.equal("a=1&a=2&b=x+y&c=%41", http.query_string)
      assert.same({ a = { "1", "2" }, b = "x y", c = "A" }, http.query)
      assert.same({ ["x-h"] = "v" }, http.headers)
      assert.same({ service = "s.self" }, http.params)
      assert.same({ queue = "q" }, self.request.amqp)
      assert.same({ name = "gw", type = "gateway", security = { username = "john.doe", gateway = "upstream" } },
        self.channel)
      assert.equal(200, self.response.status)
      assert.same({}, self.response.headers)
      assert.is_nil(self.response.content_type)
      assert.is_function(self.invoke)
      -- logger and out are made on first use, once per request
      assert.is_nil(rawget(self, "logger"))
      assert.is_nil(rawget(self, "out"))
      local logger, out = self.logger, self.out
      assert.is_function(logger.info)
      assert.equal("cid-self", logger.cid)
      assert.equal("s.self", logger.service)
      assert.is_table(out)
      assert.equal(logger, self.logger)
      assert.equal(out, self.out)
      assert.equal(logger, rawget(self, "logger"))
    end)

    it("gives each request its own logger and out", function()
      local seen = probe()
      rt.load(service("s.lazy", "require('test.probe')(self); self.logger:info('x'); local _ = self.out"))
      dispatch("s.lazy", { cid = "c-a" })
      dispatch("s.lazy", { cid = "c-b" })
      assert.equal("c-a", seen[1].logger.cid)
      assert.equal("c-b", seen[2].logger.cid)
      assert.are_not.equal(seen[1].out, seen[2].out)
      assert.equal(seen[1], seen[1].out._self)
    end)

    it("lets a service's own field of the same name lose to the lazy and shared ones", function()
      local seen = probe()
      local path = dir .. "/s.shadow.lua"
      write(path, [[
local M = require("portico.service").new { name = "s.shadow" }
M.logger = "mine"
M.time = "mine"
function M:handle() require("test.probe")(self) end
return M
]])
      rt.load(path)
      dispatch("s.shadow", {})
      assert.is_table(seen[1].logger)
      assert.is_function(seen[1].time.utcnow)
    end)

    it("keeps per-request tables to the fields a request has, making the rest on first use", function()
      local seen = probe()
      rt.load(service("s.small", "require('test.probe')(self)"))
      dispatch("s.small", {})
      local self = seen[1]
      local keys = {}
      for k in pairs(self) do keys[#keys + 1] = k end
      table.sort(keys)
      assert.same({ "channel", "cid", "request", "response" }, keys)
      -- the fields shared by every request come through __index
      assert.equal("s.small", self.name)
      assert.is_function(self.time.utcnow)
      assert.equal(rt.get("s.small").invoke, nil)
      assert.is_function(self.invoke)
      -- no route params, no AMQP message: none in the request until asked for
      local http = self.request.http
      assert.is_nil(rawget(http, "params"))
      assert.is_nil(rawget(self.request, "amqp"))
      local params = http.params
      assert.same({}, params)
      assert.equal(params, http.params)
      -- response.headers likewise; a header set through it reaches the answer
      assert.is_nil(rawget(self.response, "headers"))
      assert.equal(self.response.headers, rawget(self.response, "headers"))
      rt.load(service("s.hdr", "self.response.headers['x-made'] = 'late'; self.response.payload = 'ok'"))
      local _, _, _, headers = dispatch("s.hdr", {})
      assert.same({ ["x-made"] = "late" }, headers)
    end)

    it("gives nil payload for an empty body, and input = payload with no input schema", function()
      local seen = probe()
      rt.load(service("s.bare", "require('test.probe')(self)"))
      dispatch("s.bare", { body = "" })
      assert.is_nil(seen[1].request.payload)
      assert.is_nil(seen[1].request.input)
      assert.same({}, seen[1].request.http.query)
      dispatch("s.bare", { body = "[1, 2]" })
      assert.same({ 1, 2 }, seen[2].request.input)
      assert.equal(seen[2].request.payload, seen[2].request.input)
    end)

    it("answers 400 for bad JSON, with the cid", function()
      rt.load(service("s.ok", "self.response.payload = {}"))
      local status, body, ctype = dispatch("s.ok", { body = "{bad", cid = "c-1" })
      assert.equal(400, status)
      assert.equal("application/json", ctype)
      local e = decode_error(body)
      assert.equal(400, e.status)
      assert.matches("^invalid JSON: ", e.message)
      assert.equal("c-1", e.cid)
    end)

    -- Under busted there is no host: the byte-level check is host/pt_json.c's
    -- (tests/integration/test_gate_lua.py); what is left here is cjson without
    -- NaN, Infinity and hex, and the UTF-8 check.
    it("answers 400 for NaN, Infinity, hex and bytes that are not UTF-8", function()
      rt.load(service("s.ok", "self.response.payload = { got = self.request.payload }"))
      for _, body in ipairs { "NaN", "[Infinity]", '{"a": -Infinity}', "[0x7B]", "[-01]",
                              '"caf\233"', '"\237\160\128"', '"\192\175"', "[1] x" } do
        local status, rbody = dispatch("s.ok", { body = body })
        assert.equal(400, status, body)
        assert.matches("^invalid JSON: ", decode_error(rbody).message, 1, false, body)
      end
      assert.same({ status = 400, message = "invalid JSON: invalid UTF-8 at byte 5", cid = "cid-1" },
        decode_error(select(2, dispatch("s.ok", { body = '"caf\233"' }))))
      local status, rbody = dispatch("s.ok", { body = '["caf\195\169 \240\159\152\128", -0, 1E+2]' })
      assert.equal(200, status)
      assert.same({ "caf\195\169 \240\159\152\128", 0, 100 }, cjson.decode(rbody).got)
    end)

    it("offers the same decoding as runtime.decode_json", function()
      assert.same({ a = { 1, 2 } }, rt.decode_json('{"a": [1, 2]}'))
      local v, err = rt.decode_json("NaN")
      assert.is_nil(v)
      assert.is_string(err)
      v, err = rt.decode_json('"\255"')
      assert.is_nil(v)
      assert.equal("invalid UTF-8 at byte 2", err)
    end)

    it("finds the first byte that is not UTF-8 (RFC 3629)", function()
      local bad = rt.utf8_bad
      assert.is_nil(bad(""))
      assert.is_nil(bad("plain ascii \0 \127"))
      assert.is_nil(bad("\194\128 \223\191 \224\160\128 \237\159\191 \238\128\128 \240\144\128\128 \244\143\191\191"))
      assert.equal(1, bad("\128"))                -- a continuation byte alone
      assert.equal(2, bad("a\193\191"))          -- overlong, 2 bytes
      assert.equal(1, bad("\224\159\191"))      -- overlong, 3 bytes
      assert.equal(1, bad("\240\143\191\191")) -- overlong, 4 bytes
      assert.equal(1, bad("\237\160\128"))      -- U+D800 in UTF-8 form
      assert.equal(1, bad("\244\144\128\128")) -- above U+10FFFF
      assert.equal(1, bad("\245\128\128\128"))
      assert.equal(3, bad("ok\226\130"))         -- cut short
      assert.equal(3, bad("\195\169\255"))
    end)

    it("answers 400 naming every field that fails the input schema", function()
      rt.load(service("s.in", "self.response.payload = {}", "input = { a = 'integer', b = 'string', c = 'boolean?' }"))
      local status, body = dispatch("s.in", { body = '{"a": "x", "c": 1}' })
      assert.equal(400, status)
      assert.equal("invalid input: a: expected integer, got string; b: missing; c: expected boolean, got integer",
        decode_error(body).message)
      status, body = dispatch("s.in", { body = "" })
      assert.equal(400, status)
      assert.equal("invalid input: a: missing; b: missing", decode_error(body).message)
      status, body = dispatch("s.in", { body = "[1]" })
      assert.equal(400, status)
      assert.equal("invalid input: expected a JSON object, got array", decode_error(body).message)
    end)

    it("turns a raise into a 500 with the cid, the traceback only in the log", function()
      rt.load(service("s.raise", "local x = nil; error('secret detail ' .. 'x')"))
      local status, body, ctype = dispatch("s.raise", { cid = "c-2" })
      assert.equal(500, status)
      assert.equal("application/json", ctype)
      assert.same({ status = 500, message = "internal error in service s.raise", cid = "c-2" }, decode_error(body))
      assert.not_matches("secret", body)
      assert.not_matches("traceback", body)
      local l = assert(t:logged("secret detail", "error"))
      assert.equal("c-2", l.cid)
      assert.equal("s.raise", l.service)
      assert.matches("stack traceback", l.message, 1, true)
      assert.matches("s.raise.lua:4:", l.message, 1, true)
    end)

    it("survives raises of any value", function()
      local bad = "error(setmetatable({}, { __tostring = function() error('worse') end }))"
      for i, body in ipairs({ "error()", "error({ code = 1 })", bad, "local a = nil; a.b = 1" }) do
        rt.load(service("s.e" .. i, body))
        local ok, status, rbody = pcall(dispatch, "s.e" .. i)
        assert.is_true(ok)
        assert.equal(500, status)
        assert.equal("internal error in service s.e" .. i, decode_error(rbody).message)
      end
    end)

    it("answers 500 even when logging the failure fails", function()
      rt.load(service("s.raise", "error('x')"))
      rt.log = function() error("the log is broken") end
      local ok, status, body = pcall(dispatch, "s.raise", { cid = "c-log" })
      assert.is_true(ok)
      assert.equal(500, status)
      assert.equal("c-log", decode_error(body).cid)
    end)

    it("maps self:error to its status and message", function()
      rt.load(service("s.nf", "self:error(404, 'customer 999 not found')"))
      local status, body = dispatch("s.nf", { cid = "c-3" })
      assert.equal(404, status)
      assert.same({ status = 404, message = "customer 999 not found", cid = "c-3" }, decode_error(body))
      rt.load(service("s.bad_status", "self:error(200, 'fine?')"))
      assert.equal(500, (dispatch("s.bad_status")))
    end)

    it("refuses an answer that fails the output schema, naming its problems in the log", function()
      rt.load(service("s.out", "self.response.payload = { n = 'x' }", "output = { n = 'integer', m = 'string' }"))
      local status, body = dispatch("s.out", { cid = "c-4" })
      assert.equal(500, status)
      assert.same({ status = 500, message = "internal error in service s.out", cid = "c-4" }, decode_error(body))
      assert.not_matches("expected", body)
      local l = assert(t:logged("output schema", "error"))
      assert.matches("m: missing; n: expected integer, got string", l.message, 1, true)
      assert.equal("c-4", l.cid)
    end)

    it("checks the output schema only for a 2xx table payload", function()
      rt.load(service("s.oerr", "self.response.status = 409; self.response.payload = { reason = 'x' }",
        "output = { n = 'integer' }"))
      local status, body = dispatch("s.oerr")
      assert.equal(409, status)
      assert.same({ reason = "x" }, cjson.decode(body))
      rt.load(service("s.otext", "self.response.payload = 'plain'", "output = { n = 'integer' }"))
      assert.equal(200, (dispatch("s.otext")))
    end)

    it("passes strings through as text unless content_type says otherwise, with headers", function()
      rt.load(service("s.text", "self.response.payload = 'hi'; self.response.headers['x-a'] = '1'; self.response.status = 201"))
      local status, body, ctype, headers = dispatch("s.text")
      assert.equal(201, status)
      assert.equal("hi", body)
      assert.equal("text/plain; charset=utf-8", ctype)
      assert.same({ ["x-a"] = "1" }, headers)
      rt.load(service("s.xml", "self.response.payload = '<a/>'; self.response.content_type = 'application/xml'"))
      local _, b2, c2 = dispatch("s.xml")
      assert.equal("<a/>", b2)
      assert.equal("application/xml", c2)
    end)

    it("sends an empty body for a nil payload and {} for an empty table", function()
      rt.load(service("s.none", "self.response.status = 204"))
      local status, body, ctype = dispatch("s.none")
      assert.equal(204, status)
      assert.equal("", body)
      assert.is_nil(ctype)
      rt.load(service("s.empty", "self.response.payload = {}"))
      local _, b2 = dispatch("s.empty")
      assert.equal("{}", b2)
    end)

    it("answers 500 for a bad status or a payload JSON cannot hold", function()
      rt.load(service("s.st", "self.response.status = 'ok'; self.response.payload = {}"))
      assert.equal(500, (dispatch("s.st")))
      assert.is_truthy(t:logged("response.status must be", "error"))
      rt.load(service("s.fn", "self.response.payload = { f = print }"))
      assert.equal(500, (dispatch("s.fn")))
      assert.is_truthy(t:logged("cannot encode", "error"))
    end)

    it("answers 500 for NaN, inf or a string that is not UTF-8 in a payload, saying why in the log", function()
      for kind, why in pairs { nan = "0/0", inf = "math.huge", ninf = "-math.huge" } do
        rt.load(service("s." .. kind, "self.response.payload = { x = " .. why .. " }"))
        local status, body = dispatch("s." .. kind, { cid = "c-" .. kind })
        assert.equal(500, status)
        assert.same({ status = 500, message = "internal error in service s." .. kind, cid = "c-" .. kind },
          decode_error(body))
      end
      assert.is_truthy(t:logged("must not be NaN or Inf", "error"))
      rt.load(service("s.latin1", [[self.response.payload = { name = "caf\233" }]]))
      local status, body = dispatch("s.latin1", { cid = "c-l" })
      assert.equal(500, status)
      assert.same({ status = 500, message = "internal error in service s.latin1", cid = "c-l" },
        decode_error(body))
      local entry = t:logged("not UTF%-8", "error")
      assert.is_truthy(entry)
      assert.equal('cannot encode the response as JSON: a string in the payload is not UTF-8 '
        .. '(byte 13 of its JSON, near {"name":"caf\\xE9"})', entry.message)
      assert.equal("c-l", entry.cid)
    end)

    it("replaces bytes that are not UTF-8 in an error message by U+FFFD", function()
      rt.load(service("s.err", [[self:error(422, "no customer named caf\233 \255\254")]]))
      local status, body = dispatch("s.err", { cid = "c\200" })
      assert.equal(422, status)
      assert.same({ status = 422, message = "no customer named caf\239\191\189 \239\191\189\239\191\189",
        cid = "c\239\191\189" }, decode_error(body))
    end)

    it("answers 404 for an unknown service", function()
      local status, body = dispatch("no.such", { cid = "c-5" })
      assert.equal(404, status)
      assert.same({ status = 404, message = "unknown service 'no.such'", cid = "c-5" }, decode_error(body))
    end)

    it("lets a handler yield through dispatch (host waiting primitives)", function()
      rt.load(service("s.wait", "local v = coroutine.yield('waiting'); self.response.payload = { v = v }"))
      local co = coroutine.create(dispatch)
      local ok, what = coroutine.resume(co, "s.wait")
      assert.is_true(ok)
      assert.equal("waiting", what)
      local ok2, status, body = coroutine.resume(co, 42)
      assert.is_true(ok2)
      assert.equal(200, status)
      assert.same({ v = 42 }, cjson.decode(body))
    end)
  end)

  describe("logger", function()
    it("formats with string.format and logs with the level, cid and service name", function()
      rt.load(service("s.log", [[
        self.logger:debug("d %d", 1)
        self.logger:info("user %s", "john")
        self.logger:warn("100%")
        self.logger:error("bad %d", "not a number")]]))
      assert.equal(200, (dispatch("s.log", { cid = "c-log" })))
      assert.same({ level = "debug", message = "d 1", cid = "c-log", service = "s.log" }, t.logs[1])
      assert.same({ level = "info", message = "user john", cid = "c-log", service = "s.log" }, t.logs[2])
      assert.same({ level = "warn", message = "100%", cid = "c-log", service = "s.log" }, t.logs[3])
      assert.equal("error", t.logs[4].level)
      assert.matches("^bad %%d %(bad log format", t.logs[4].message)
    end)
  end)

  describe("invoke", function()
    it("calls another service in-process with the same cid, as channel type invoke", function()
      local seen = probe()
      rt.load(service("s.inner", "require('test.probe')(self); self.response.payload = { twice = self.request.input.n * 2 }",
        "input = { n = 'integer' }"))
      rt.load(service("s.outer", "self.response.payload = self:invoke('s.inner', { n = self.request.payload.n, x = 1 })"))
      local status, body = dispatch("s.outer", { body = '{"n": 5}', cid = "c-inv", channel = "api.outer", username = "u1" })
      assert.equal(200, status)
      assert.same({ twice = 10 }, cjson.decode(body))
      local child = seen[1]
      assert.equal("c-inv", child.cid)
      assert.equal("s.inner", child.name)
      assert.equal("s.inner", child.logger.service)
      assert.same({ name = "api.outer", type = "invoke", security = { username = "u1" } }, child.channel)
      assert.same({ n = 5 }, child.request.input)
      assert.same({ n = 5, x = 1 }, child.request.payload)
      assert.same({ { name = "s.inner", input = { n = 5, x = 1 } } }, t.invocations)
    end)

    it("raises at the caller's line for an unknown service or bad input", function()
      rt.load(service("s.inner", "self.response.payload = {}", "input = { n = 'integer', m = 'string' }"))
      rt.load(service("s.unknown", "self:invoke('no.such', {})"))
      rt.load(service("s.badin", "self:invoke('s.inner', { n = 'five' })"))
      local status, body = dispatch("s.unknown")
      assert.equal(500, status)
      assert.not_matches("no.such", body)
      assert.matches("s.unknown.lua:4: invoke: no service named 'no.such'", assert(t:logged("no service named")).message, 1, true)
      assert.equal(500, (dispatch("s.badin")))
      assert.matches("s.badin.lua:4: invoke s.inner: invalid input: m: missing; n: expected integer, got string",
        assert(t:logged("invalid input")).message, 1, true)
    end)

    it("checks the output schema of the service it calls", function()
      rt.load(service("s.liar", "self.response.payload = { n = 'x' }", "output = { n = 'integer' }"))
      rt.load(service("s.caller", "local ok, err = pcall(self.invoke, self, 's.liar'); self.response.payload = { err = err }"))
      local _, body = dispatch("s.caller")
      assert.matches("invoke s.liar: its output failed the output schema: n: expected integer, got string",
        cjson.decode(body).err, 1, true)
    end)

    it("lets the callee's self:error answer the request", function()
      rt.load(service("s.gone", "self:error(410, 'gone for good')"))
      rt.load(service("s.front", "self:invoke('s.gone')"))
      local status, body = dispatch("s.front")
      assert.equal(410, status)
      assert.equal("gone for good", decode_error(body).message)
    end)
  end)

  describe("load", function()
    it("returns the name and registers the service", function()
      assert.equal("s.ok", rt.load(service("s.ok", "")))
      assert.is_table(rt.get("s.ok"))
    end)

    it("compiles the given source instead of the file", function()
      local path = dir .. "/from-source.lua"
      local src = 'local s = require "portico.service"; local M = s.new{name="s.src"}; '
        .. 'function M:handle() self.response.payload = "from source" end; return M'
      assert.equal("s.src", rt.load(path, src))
      local _, body = dispatch("s.src")
      assert.equal("from source", body)
    end)

    it("raises path:line: message for every kind of problem, and changes nothing", function()
      local good = service("s.keep", "self.response.payload = 'v1'", nil, "keep")
      rt.load(good)
      local function load_error(path, src)
        local ok, err = pcall(rt.load, path, src)
        assert.is_false(ok)
        assert.is_string(err)
        return err
      end
      local p = dir .. "/keep.lua"
      assert.matches("keep.lua:1: ", load_error(p, "return {"), 1, true)                          -- syntax
      assert.matches("keep.lua:2: boom", load_error(p, "local x = 1\nerror('boom')"), 1, true)   -- raises
      assert.matches("keep.lua:2: service.new: input schema: field id has unknown type 'int'",
        load_error(p, 'local s = require "portico.service"\nlocal M = s.new{name="s.keep", input={id="int"}}\nreturn M'), 1, true)
      assert.matches("keep.lua:1: the file must return the table made by service.new",
        load_error(p, "return {}"), 1, true)
      assert.matches("keep.lua:1: service 's.keep' has no handle function",
        load_error(p, 'return require("portico.service").new{name="s.keep"}'), 1, true)
      assert.matches("keep.lua:2: module 'no.such.module' not found",
        load_error(p, "local x = 1\nrequire 'no.such.module'"), 1, true)
      local _, body = dispatch("s.keep")
      assert.equal("v1", body)
    end)

    it("refuses a name another file registered", function()
      rt.load(service("dup", "", nil, "first"))
      local ok, err = pcall(rt.load, service("dup", "", nil, "second"))
      assert.is_false(ok)
      assert.matches("second.lua:1: service name 'dup' is already used by .*first.lua", err)
    end)

    it("replaces the service of a reloaded file, and forgets a renamed or unloaded one", function()
      local p = service("s.v", "self.response.payload = 'v1'", nil, "v")
      rt.load(p)
      rt.load(service("s.v", "self.response.payload = 'v2'", nil, "v"))
      assert.equal("v2", select(2, dispatch("s.v")))
      rt.load(service("s.w", "self.response.payload = 'w'", nil, "v"))
      assert.equal(404, (dispatch("s.v")))
      assert.equal("w", select(2, dispatch("s.w")))
      rt.load(service("s.v", "", nil, "other")) -- the old name is free again
      assert.equal("s.w", rt.unload(p))
      assert.is_nil(rt.unload(p))
      assert.equal(404, (dispatch("s.w")))
    end)
  end)

  describe("runtime.new", function()
    local runtime = require "portico.runtime"

    local function req(name, o)
      o = o or {}
      o.service, o.cid, o.method, o.path = name, o.cid or "c", o.method or "POST", o.path or "/p"
      o.query_string, o.headers, o.body = o.query_string or "", o.headers or {}, o.body or ""
      o.channel, o.channel_type = o.channel or "api", o.channel_type or "rest"
      return o
    end

    it("makes runtimes with registries of their own, the module being this VM's", function()
      local a, b = runtime.new(), runtime.new()
      assert.is_function(runtime.dispatch)
      assert.is_function(runtime.load)
      assert.is_false(runtime.interpret_services)
      local path = service("s.own", "self.response.payload = 'a'")
      assert.equal("s.own", a.load(path))
      assert.equal(200, (a.dispatch(req("s.own"))))
      assert.equal(404, (b.dispatch(req("s.own"))))
      assert.is_nil(runtime.get("s.own"))
      assert.is_nil(a.new) -- only the module makes runtimes
      assert.equal(runtime.parse_query, a.parse_query)
      assert.equal(runtime.decode_json, a.decode_json)
    end)

    it("has no test hooks in the host's runtime", function()
      for _, k in ipairs { "stubs", "on_invoke", "out_modules", "new_self" } do
        assert.is_nil(runtime[k], k)
      end
    end)

    it("logs through opts.log", function()
      local logs = {}
      local r = runtime.new { log = function(...) logs[#logs + 1] = { ... } end }
      r.load(service("s.logs", "self.logger:info('n=%d', 7); error('boom')"))
      assert.equal(500, (r.dispatch(req("s.logs", { cid = "c-l" }))))
      assert.same({ "info", "n=7", "c-l", "s.logs" }, logs[1])
      assert.equal("error", logs[2][1])
      assert.matches("handler raised: .*boom", logs[2][2])
    end)

    it("lets opts.on_invoke answer self:invoke or pass it on, errors still blaming the caller", function()
      local seen = {}
      local r = runtime.new {
        log = function() end,
        on_invoke = function(self, name, input)
          seen[#seen + 1] = { name, input, self.cid }
          if name == "s.fake" then return true, { faked = input.n } end
          return false
        end,
      }
      r.load(service("s.real", "self.response.payload = { real = true }"))
      r.load(service("s.caller", [[
        local a = self:invoke("s.fake", { n = 1 })
        local b = self:invoke("s.real")
        local ok, err = pcall(self.invoke, self, "no.such")
        self.response.payload = { a = a, b = b, err = err }]]))
      local status, body = r.dispatch(req("s.caller", { cid = "c-i" }))
      assert.equal(200, status)
      local got = cjson.decode(body)
      assert.same({ faked = 1 }, got.a)
      assert.same({ real = true }, got.b)
      assert.equal("invoke: no service named 'no.such'", got.err) -- pcall is the caller: no position
      assert.same({ { "s.fake", { n = 1 }, "c-i" }, { "s.real", nil, "c-i" }, { "no.such", nil, "c-i" } }, seen)
      local plain = runtime.new { log = function() end }
      plain.load(service("s.unknown", "self:invoke('no.such')", nil, "unknown"))
      local logged
      plain.log = function(_, msg) logged = msg end
      assert.equal(500, (plain.dispatch(req("s.unknown"))))
      assert.matches("unknown.lua:4: invoke: no service named 'no.such'", logged, 1, true)
    end)

    it("makes self.out.<name> with opts.out, the others staying portico's", function()
      local made = {}
      local r = runtime.new { out = { amqp = { new = function(ctx) made[#made + 1] = ctx; return { mine = true } end } } }
      local seen = probe()
      r.load(service("s.out", "require('test.probe')(self); self.response.payload = { mine = self.out.amqp.mine }"))
      local _, body = r.dispatch(req("s.out"))
      assert.same({ mine = true }, cjson.decode(body))
      assert.equal(seen[1], made[1])
      assert.equal(require("portico.http").Conn, getmetatable(seen[1].out.http.crm))
      assert.has_error(function() runtime.new { out = 1 } end)
      assert.has_error(function() runtime.new(1) end)
    end)

    -- The host refills one table for every request (host/pt_lua.c), setting
    -- username, gateway, params and amqp only when a request has them.
    it("clears the optional fields of req it read, so a refilled table carries none over", function()
      local seen = probe()
      local r = runtime.new()
      r.load(service("s.fill", "require('test.probe')(self)"))
      local host_req = req("s.fill", { username = "u", gateway = "g", params = { id = "1" }, amqp = { queue = "q" } })
      assert.equal(200, (r.dispatch(host_req)))
      assert.is_nil(host_req.username)
      assert.is_nil(host_req.gateway)
      assert.is_nil(host_req.params)
      assert.is_nil(host_req.amqp)
      host_req.cid = "c-2"
      assert.equal(200, (r.dispatch(host_req)))
      assert.same({ name = "api", type = "rest", security = { username = "u", gateway = "g" } }, seen[1].channel)
      assert.same({ id = "1" }, seen[1].request.http.params)
      assert.same({ queue = "q" }, seen[1].request.amqp)
      assert.equal("c-2", seen[2].cid)
      assert.same({}, seen[2].channel.security)
      assert.is_nil(rawget(seen[2].request.http, "params"))
      assert.is_nil(seen[2].request.amqp)
    end)
  end)

  it("parses query strings: repeated keys give lists, + and %XX are decoded", function()
    assert.same({ a = { "1", "2", "3" }, b = "x y", c = "/", flag = "" },
      rt.parse_query("a=1&a=2&a=3&b=x+y&c=%2F&flag&&=nokey"))
    assert.same({}, rt.parse_query(""))
  end)
end)
