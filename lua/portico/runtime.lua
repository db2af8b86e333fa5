-- portico.runtime: the registry of loaded services and the entry point the
-- host calls for every request (docs/contract.md is the contract).
--
--   local runtime = require "portico.runtime"   -- this VM's runtime (the host's)
--   local rt = runtime.new([opts])              -- another one, with a registry of its own
--
-- A runtime (the module itself, or what runtime.new returns):
--   rt.load(path[, source]) -> name   compile, check and register a service file
--   rt.unload(path) -> name|nil       forget the service a file registered
--   rt.dispatch(req) -> status, body, content_type, headers|nil   run one request
--   rt.get(name) -> the service module, or nil
--   rt.log(level, msg, cid, service)  where services' logs and dispatch's errors go
--   rt.interpret_services             set by the host before any load (below)
--   rt.decode_json(text) -> value | nil, err   portico.json's strict decode, as bodies get
--   rt.utf8_bad, rt.to_utf8, rt.parse_query, rt.error_body, rt.utcnow   helpers (also runtime.*)
--
-- req, the one table dispatch takes (the host builds it in pt_lua_dispatch,
-- portico.testing in Harness:call):
--   service        name of the service to run
--   cid            the request's correlation id
--   method, path   the HTTP request's (AMQP channels: "POST" and the queue)
--   query_string   as it came, without "?" ("" when none)
--   headers        table, lower-case names, a repeated header joined with ", "
--   body           string ("" when none)
--   params         table of the route template's captures, or nil
--   channel        the channel's name
--   channel_type   "rest" | "gateway" | "websocket" | "amqp" (and "internal")
--   username       the authenticated caller, or nil
--   gateway        the trusted upstream gateway's own user when username came
--                  from its header, or nil
--   amqp           AMQP channels: the delivery's properties and headers, else nil
-- dispatch reads every field of req before anything else, and clears the
-- optional ones it finds (username, gateway, params, amqp): the host refills
-- one table for every request (host/pt_lua.c) and sets those only for a
-- request that has them. It changes no other field of req: the host sets
-- service, method, channel and channel_type only when they change.
--
-- runtime.new(opts): opts (all optional)
--   log(level, msg, cid, service)  instead of host.log (stderr under busted)
--   out = { amqp = m, http = m, websocket = m }  what makes self.out.<name>:
--     m.new(self) (a module, or its name for require); the rest stay portico.<name>
--   cache = backend   what self.cache and self.caches reach (portico.cache's
--     M.new; nil: the host's caches)
--   on_invoke(self, name, input) -> true, payload   called first for every
--     self:invoke; when it answers true, payload is the answer and the service
--     is not called (portico.testing records and stubs invokes with it)
--   on_invoke_async(self, name, input) -> true   the same for self:invoke_async
--     (true: handled, nothing is spawned)
--   spawn(fn) -> true | nil, kind, detail   runs fn() later in a task of its own
--     (default host.spawn; portico.testing queues fn and runs it after the call)
--   sleep(seconds) -> true | nil, kind, detail   (default host.sleep; the harness
--     advances a fake clock)
-- The host's runtime is made with none of them: nothing of portico.testing
-- runs on its request path.
--
-- dispatch runs inside the request's coroutine and never raises: every failure
-- becomes {"error":{"status":N,"message":"...","cid":"..."}}. It only uses
-- pcall/xpcall, through which LuaJIT lets the host's waiting primitives yield.
--
-- What a service's `self` holds (one table per request; its metatable's
-- __index is the service module, so self:handle(), self:error() work):
--   name, cid, time (time.utcnow(), tostring(time)), logger (:debug/:info/:warn/
--   :error(fmt, ...)), request = { payload, input, raw, http = { method, path,
--   query, query_string, headers, params }, amqp }, channel = { name, type,
--   security = { username, gateway } }, response = { payload, status, headers,
--   content_type }, out (amqp, http, websocket), invoke(name, input),
--   invoke_async(name, input), sleep(seconds), defer(fn) (docs/services.md,
--   "Scheduler and async work"), cache and caches (portico.cache, the same
--   for every request). logger and
--   out are made on first use, so pairs(self) shows them only after that; so are
--   response.headers and (when the route had none) http.params. name, time and
--   invoke are the same for every request and come through __index.
--
-- request.input: with an input schema, the body checked against it; a GET,
-- HEAD or DELETE without a body is checked from the query string; the route's
-- captures join either (check_input below). Without one: the payload.
--
-- http.query is parsed on first use (a repeated key gives a list of values),
-- so pairs(self.request.http) shows it only after it has been read.
local cjson = require "cjson"
local service = require "portico.service"
local schema = require "portico.schema"
local json = require "portico.json"
local cache = require "portico.cache"
local trace = require "portico.trace"
local trace_on, trace_current, TRACE_NOOP = trace.on, trace.current, trace.NOOP

local ok_host, host = pcall(require, "portico.host")
if not ok_host or type(host) ~= "table" then host = nil end

local type, pairs, ipairs, next, setmetatable, getmetatable, tostring, tonumber, select =
  type, pairs, ipairs, next, setmetatable, getmetatable, tostring, tonumber, select
local rawget, rawset = rawget, rawset
-- the host takes jit.off from services once this module is loaded
local jit_off = jit and jit.off
local xpcall, pcall, error, loadstring, loadfile = xpcall, pcall, error, loadstring, loadfile
local fmt, find, gsub, sub, char, byte =
  string.format, string.find, string.gsub, string.sub, string.char, string.byte
local concat, traceback, getinfo, floor = table.concat, debug.traceback, debug.getinfo, math.floor
local encode = cjson.encode
local check, check_text = schema.check, schema.check_text
local COMPILED = service.marker
local ServiceError = service.ServiceError

local M = {}

-- tostring that cannot raise (a __tostring metamethod may)
local function safe_tostring(v)
  local ok, s = pcall(tostring, v)
  return ok and s or "(an error value that cannot be printed)"
end

local EMPTY = setmetatable({}, { __newindex = function() error("read-only table", 2) end })

-- ---- host primitives, with fallbacks for busted ----

local utcnow, log
if host then
  utcnow, log = host.utcnow, host.log
else
  local date, time = os.date, os.time
  local now = function() return time(), 0 end
  local ok_ffi, ffi = pcall(require, "ffi")
  if ok_ffi then
    -- microseconds when gettimeofday can be declared here; seconds otherwise
    local ok = pcall(function()
      ffi.cdef [[
        typedef struct { long tv_sec; long tv_usec; } portico_timeval_t;
        int gettimeofday(portico_timeval_t *tv, void *tz);
      ]]
      local tv = ffi.new("portico_timeval_t")
      local C = ffi.C
      assert(C.gettimeofday(tv, nil) == 0)
      now = function()
        C.gettimeofday(tv, nil)
        return tonumber(tv.tv_sec), tonumber(tv.tv_usec)
      end
    end)
    if not ok then now = function() return time(), 0 end end
  end
  utcnow = function()
    local s, us = now()
    return date("!%Y-%m-%dT%H:%M:%S", s) .. fmt(".%06d", us)
  end
  local stderr = io.stderr
  log = function(level, msg, cid, svc)
    stderr:write(fmt("%s %s [%s] %s %s\n", utcnow(), level, svc or "-", cid or "-", msg))
  end
end

-- ---- strict JSON (RFC 8259): portico.json ----

local utf8_bad, decode_json = json.utf8_bad, json.decode

-- s with each byte that is not part of well-formed UTF-8 replaced by U+FFFD,
-- for text that must reach a client whatever it holds (error messages).
local function to_utf8(s)
  local at = utf8_bad(s)
  if not at then return s end
  local out, n = {}, 0
  repeat
    n = n + 2
    out[n - 1], out[n] = sub(s, 1, at - 1), "\239\191\189"
    s = sub(s, at + 1)
    at = utf8_bad(s)
  until not at
  out[n + 1] = s
  return concat(out)
end

-- self.time: time.utcnow() is the current UTC time as ISO-8601; tostring(self.time)
-- gives the same, so a service may also write it straight into a document.
local time = setmetatable({ utcnow = utcnow }, { __tostring = function() return utcnow() end })

-- Lua shortens a long chunk name in its messages ("...services/x.lua:2: m"):
-- such a message gets path's whole name back.
local function full_name(msg, path)
  local short = msg:match("^%.%.%.([^:]*):%d+:")
  if short and sub(path, -#short) == short then return path .. sub(msg, #short + 4) end
  return msg
end

-- An error handler for running a service file: gives the message the
-- position "path:line:" of the deepest frame in that file when it has none.
local function load_error_handler(path)
  local prefix, src = path .. ":", "@" .. path
  return function(e)
    e = full_name(safe_tostring(e), path)
    if sub(e, 1, #prefix) == prefix then return e end
    for level = 2, 100 do
      local info = getinfo(level, "Sl")
      if not info then break end
      if info.source == src and info.currentline > 0 then
        return prefix .. info.currentline .. ": " .. e
      end
    end
    return prefix .. "1: " .. e
  end
end

-- ---- query strings ----

local function hex_char(h) return char(tonumber(h, 16)) end

local function unescape(s)
  if find(s, "+", 1, true) then s = gsub(s, "%+", " ") end
  if find(s, "%", 1, true) then s = gsub(s, "%%(%x%x)", hex_char) end
  return s
end

-- "a=1&a=2&b=x+y" -> { a = { "1", "2" }, b = "x y" }; "flag" -> { flag = "" }
local function parse_query(qs)
  local q = {}
  if qs == nil or qs == "" then return q end
  for pair in qs:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k = unescape(k)
    if k ~= "" then
      v = unescape(v)
      local prev = q[k]
      if prev == nil then
        q[k] = v
      elseif type(prev) == "table" then
        prev[#prev + 1] = v
      else
        q[k] = { prev, v }
      end
    end
  end
  return q
end

-- http.query is parsed on first use; http.params, when the route had none,
-- is an empty table made on first use.
local http_mt = {
  __index = function(http, k)
    if k == "query" then
      local q = parse_query(http.query_string)
      http.query = q
      return q
    elseif k == "params" then
      local p = {}
      http.params = p
      return p
    end
  end,
}

-- ---- a request's input (docs/services.md, "Models and input") ----

-- A request without a body whose method has none by custom takes its input
-- from the query string; every request adds its route's captures. On a
-- gateway channel "service" is never input: it names the service.
local FROM_QUERY = { GET = true, HEAD = true, DELETE = true }

local function check_input(schema_in, request, channel)
  local http = request.http
  local params = rawget(http, "params")
  local skip = channel.type == "gateway" and "service" or nil
  if request.raw == "" and FROM_QUERY[http.method] then
    return check_text(schema_in, http.query, params, skip)
  end
  local input = request.payload
  return check(schema_in, input == nil and EMPTY or input, params, skip)
end

-- ---- errors ----

-- message and cid may come from a service or a client: bytes that are not
-- UTF-8 become U+FFFD, so the error still reaches the client as JSON.
local function error_body(status, message, cid)
  if type(message) == "string" then message = to_utf8(message) end
  if type(cid) == "string" then cid = to_utf8(cid) end
  return status, encode({ error = { status = status, message = message, cid = cid } }),
    "application/json", nil
end

local function internal_error(name, cid)
  return error_body(500, "internal error in service " .. tostring(name), cid)
end

-- xpcall's handler: structured errors pass as they are, anything else gets
-- its traceback (for the log only).
local function on_error(e)
  if getmetatable(e) == ServiceError then return e end
  return traceback(safe_tostring(e), 2)
end

-- Whether a response with this status has its payload checked against output.
local function is_success(status)
  return type(status) == "number" and status >= 200 and status < 300
end

-- response.headers is made on first use too; encode_response reads it raw.
local response_mt = {
  __index = function(res, k)
    if k == "headers" then
      local h = {}
      rawset(res, k, h)
      return h
    end
  end,
}

local function new_self(svc, cid, request, channel)
  return setmetatable({
    cid = cid,
    request = request,
    channel = channel,
    response = setmetatable({ payload = nil, status = 200, headers = nil, content_type = nil },
      response_mt),
  }, svc)
end

local OUT = { amqp = "portico.amqp", http = "portico.http", websocket = "portico.websocket" }

-- ---- a runtime ----

-- Makes rt a runtime with its own registry (see the top). Everything a
-- request touches is an upvalue here, so one runtime's services, logs and
-- self.out never reach another's.
local function new(opts, rt)
  local by_name = {}       -- name -> service module
  local path_by_name = {}  -- name -> the file that registered it
  local name_by_path = {}  -- file -> the name it registered

  local out_modules = {}
  for k, v in pairs(OUT) do out_modules[k] = v end
  if opts.out ~= nil then
    if type(opts.out) ~= "table" then error("runtime.new: opts.out must be a table", 3) end
    for k, v in pairs(opts.out) do out_modules[k] = v end
  end
  local on_invoke = opts.on_invoke
  local on_invoke_async = opts.on_invoke_async
  local spawn = opts.spawn or (host and host.spawn)
  local sleep = opts.sleep or (host and host.sleep)

  rt.log = opts.log or log
  -- Set by the host when lua.request_timeout is on: service files' code is
  -- never JIT-compiled, because compiled code runs no hooks and only a hook
  -- can stop a request that loops (host/pt_lua.c, "the request budget").
  rt.interpret_services = false
  rt.utcnow, rt.utf8_bad, rt.decode_json, rt.to_utf8 = utcnow, utf8_bad, decode_json, to_utf8
  rt.parse_query, rt.error_body = parse_query, error_body

  -- ---- the logger of a request ----

  local Logger = {}
  Logger.__index = Logger

  -- A log call never fails the request: a bad format is logged as it is.
  local function write_log(level, logger, f, ...)
    local msg
    if select("#", ...) == 0 then
      msg = tostring(f)
    else
      local ok, s = pcall(fmt, f, ...)
      msg = ok and s or tostring(f) .. " (bad log format: " .. s .. ")"
    end
    rt.log(level, msg, logger.cid, logger.service)
  end

  function Logger:debug(f, ...) write_log("debug", self, f, ...) end
  function Logger:info(f, ...) write_log("info", self, f, ...) end
  function Logger:warn(f, ...) write_log("warn", self, f, ...) end
  function Logger:error(f, ...) write_log("error", self, f, ...) end

  -- ---- the outgoing side: self.out.amqp, ... made on first use ----

  local out_mt = {
    __index = function(t, k)
      local mod = out_modules[k]
      if not mod then return nil end
      if type(mod) == "string" then mod = require(mod) end
      local v = mod.new(t._self)
      t[k] = v
      return v
    end,
  }

  -- ---- running a service ----

  -- The fields of self made on first use: most requests never log or call
  -- out, and two tables fewer per request is measurable (docs/benchmarks.md).
  local lazy = {
    logger = function(self) return setmetatable({ cid = self.cid, service = self.name }, Logger) end,
    out = function(self) return setmetatable({ _self = self }, out_mt) end,
    -- the service span: under the invoke span of an invoked service (_tp),
    -- else under the request's context, asked of the host only now
    trace = function(self)
      local p = rawget(self, "_tp")
      if p then return p:span("service " .. tostring(self.name)) end
      return trace_current(self.name)
    end,
  }

  -- The fields of self that are the same for every request. They are read
  -- through __index rather than copied into each self: a self of four fields
  -- is half the size of one of seven.
  local caches = cache.new(opts.cache)
  local shared = { time = time, cache = caches.default, caches = caches.named }

  -- The __index of a service's selves (the service module is their metatable):
  -- a lazy field, a shared one, else the module's own functions and fields
  -- (self.name is the module's name).
  local function self_index(svc)
    return function(self, k)
      local make = lazy[k]
      if make then
        local v = make(self)
        rawset(self, k, v)
        return v
      end
      local v = shared[k]
      if v ~= nil then return v end
      return svc[k]
    end
  end

  -- The service called name, its compiled form and input as its schema
  -- checked it, for invoke and invoke_async (verb). An unknown name or a
  -- refused input raises at level, counted from the function that called
  -- this one (never as a tail call).
  local function callee(verb, name, input, level)
    local svc = by_name[name]
    if not svc then error(verb .. ": no service named '" .. tostring(name) .. "'", level + 1) end
    local c = svc[COMPILED]
    if not c.input then return svc, c, input end
    local checked, problems = check(c.input, input == nil and EMPTY or input)
    if not checked then
      error(verb .. " " .. name .. ": invalid input: " .. concat(problems, "; "), level + 1)
    end
    return svc, c, checked
  end

  -- self:invoke(name, input) -> the payload the other service answered.
  -- In-process, same cid, channel { name = the caller's, type = "invoke",
  -- security = the caller's }. Checks name's input and output schemas. The
  -- callee's self:error() and raises go up through the caller as they are.
  -- Its own errors blame the line that called self:invoke (level 3: invoke
  -- calls it, never as a tail call).
  local function call_service(self, name, input)
    local svc, c, checked = callee("invoke", name, input, 3)
    local preq, pch = self.request, self.channel
    local child = new_self(svc, self.cid,
      { payload = input, input = checked, raw = nil, http = preq.http, amqp = preq.amqp },
      { name = pch.name, type = "invoke", security = pch.security })
    local tsp = trace_on and self.trace
    if tsp == TRACE_NOOP then tsp = nil end
    if tsp then
      tsp = tsp:span("invoke " .. name)
      child._tp = tsp
    end
    svc.handle(child)
    if tsp then
      local tr = rawget(child, "trace")
      if tr then tr:finish() end
      tsp:finish()
    end
    local res = child.response
    local payload = res.payload
    if c.output and type(payload) == "table" and is_success(res.status) then
      local ok, problems = check(c.output, payload)
      if not ok then
        error("invoke " .. name .. ": its output failed the output schema: " .. concat(problems, "; "), 3)
      end
    end
    return payload
  end

  if on_invoke then
    shared.invoke = function(self, name, input)
      local answered, payload = on_invoke(self, name, input)
      if answered then return payload end
      payload = call_service(self, name, input)
      return payload
    end
  else
    shared.invoke = function(self, name, input)
      local payload = call_service(self, name, input)
      return payload
    end
  end

  -- ---- async work: self:invoke_async, self:sleep, self:defer ----

  -- The functions self:defer registered, by the request's http table (an
  -- invoked service shares its caller's, so its defers wait for the same
  -- response; an async run has its own). Weak: a request that never ends
  -- (its coroutine collected with the VM) leaves nothing behind.
  local defers = setmetatable({}, { __mode = "k" })
  local n_defers = 0 -- lists in defers: a request checks defers only when some are
  local MAX_DEFERS = 100

  local function describe(e)
    if getmetatable(e) == ServiceError then
      return "self:error(" .. tostring(e.status) .. ", " .. safe_tostring(e.message) .. ")"
    end
    return safe_tostring(e)
  end

  local function run_defers(list, cid, name)
    for i = 1, #list do
      local ok, e = xpcall(list[i], on_error)
      if not ok then pcall(rt.log, "error", "a deferred function raised: " .. describe(e), cid, name) end
    end
  end

  -- After the response: the deferred functions run in a task of their own,
  -- started on the loop's next iteration, once the answer has been written.
  local function start_defers(list, cid, name)
    if not spawn then return run_defers(list, cid, name) end
    local ok, _, detail = spawn(function() run_defers(list, cid, name) end)
    if not ok then
      pcall(rt.log, "error", "deferred functions dropped: " .. tostring(detail), cid, name)
    end
  end

  shared.defer = function(self, fn)
    if type(fn) ~= "function" then error("defer(fn): fn must be a function", 2) end
    local key = self.request.http
    local list = defers[key]
    if not list then
      list = {}
      defers[key] = list
      n_defers = n_defers + 1
    end
    if #list >= MAX_DEFERS then error("defer: more than " .. MAX_DEFERS .. " functions in one request", 2) end
    list[#list + 1] = fn
  end

  shared.sleep = function(self, seconds)
    if type(seconds) ~= "number" or seconds ~= seconds or seconds < 0 or seconds > 3600 then
      error("sleep(seconds): seconds must be a number from 0 to 3600", 2)
    end
    if not sleep then error("sleep: no host to sleep on (use portico.testing)", 2) end
    local ok, kind, detail = sleep(seconds)
    if ok then return true end
    -- cancelled (a drain, a scheduler run's time-out): the run must end
    error("sleep: " .. tostring(detail or kind), 2)
  end

  -- The body of an async run: its own self (channel type "async", the
  -- caller's cid, channel name and security) and its own http table.
  local function run_async(svc, name, input, checked, cid, pch, preq, parent)
    local ph = preq.http
    local http = setmetatable({ method = ph.method, path = ph.path, query_string = ph.query_string,
      headers = ph.headers, params = rawget(ph, "params") }, http_mt)
    local child = new_self(svc, cid,
      { payload = input, input = checked, raw = nil, http = http, amqp = preq.amqp },
      { name = pch.name, type = "async", security = pch.security })
    local ok, e = xpcall(svc.handle, on_error, child)
    if not ok then
      pcall(rt.log, "error", "async run of '" .. name .. "' (invoke_async from '" .. tostring(parent)
        .. "') failed: " .. describe(e), cid, name)
    end
    local list = n_defers > 0 and defers[http]
    if list then
      defers[http], n_defers = nil, n_defers - 1
      run_defers(list, cid, name)
    end
  end

  -- self:invoke_async(name, input) -> true | nil, err. Returns at once; the
  -- service runs later in a task of its own. Like invoke, an unknown name or
  -- an input its schema refuses raises here, at the caller's line.
  shared.invoke_async = function(self, name, input)
    local svc, c, checked = callee("invoke_async", name, input, 2)
    if on_invoke_async and on_invoke_async(self, name, input) then return true end
    if not spawn then error("invoke_async: no host to run on (use portico.testing)", 2) end
    local cid, pch, preq, parent = self.cid, self.channel, self.request, self.name
    local ok, _, detail = spawn(function() run_async(svc, name, input, checked, cid, pch, preq, parent) end)
    if not ok then return nil, "invoke_async " .. name .. ": " .. tostring(detail) end
    return true
  end

  local function encode_response(self, svc, c)
    local res, cid, name = self.response, self.cid, svc.name
    local status, payload, ctype = res.status, res.payload, res.content_type
    local headers = rawget(res, "headers") -- raw: reading it must not make it
    if type(status) ~= "number" or status < 100 or status > 599 or status ~= floor(status) then
      rt.log("error", "response.status must be a whole number from 100 to 599, got " .. tostring(status),
        cid, name)
      return internal_error(name, cid)
    end
    if type(headers) ~= "table" or next(headers) == nil then headers = nil end
    local tp = type(payload)
    if tp == "table" then
      if c.output and status >= 200 and status < 300 then
        local ok, problems = check(c.output, payload)
        if not ok then
          rt.log("error", "the response failed the output schema: " .. concat(problems, "; "), cid, name)
          return internal_error(name, cid)
        end
      end
      local ok, body = pcall(encode, payload)
      if not ok then
        rt.log("error", "cannot encode the response as JSON: " .. tostring(body), cid, name)
        return internal_error(name, cid)
      end
      -- cjson copies a string's bytes as they are: JSON text must be UTF-8
      -- (RFC 8259 8.1), and a client's parser may refuse anything else
      local bad = utf8_bad(body)
      if bad then
        local near = gsub(sub(body, bad > 24 and bad - 24 or 1, bad + 3), "[%z\1-\31\127-\255]",
          function(ch) return fmt("\\x%02X", byte(ch)) end)
        rt.log("error", "cannot encode the response as JSON: a string in the payload is not UTF-8 "
          .. "(byte " .. bad .. " of its JSON, near " .. near .. ")", cid, name)
        return internal_error(name, cid)
      end
      return status, body, ctype or "application/json", headers
    elseif tp == "string" then
      return status, payload, ctype or "text/plain; charset=utf-8", headers
    elseif payload == nil then
      return status, "", ctype, headers
    end
    return status, tostring(payload), ctype or "text/plain; charset=utf-8", headers
  end

  -- Runs svc for self, whose payload and channel are known: checks the
  -- input, calls handle, encodes the response. Returns what dispatch returns;
  -- raises what handle raises (dispatch's xpcall turns it into the answer, the
  -- one protected call of a request).
  local function run(svc, self)
    local c = svc[COMPILED]
    local request = self.request
    local input = request.payload
    if c.input then
      local checked, problems = check_input(c.input, request, self.channel)
      if not checked then
        return error_body(400, "invalid input: " .. concat(problems, "; "), self.cid)
      end
      input = checked
    end
    request.input = input
    svc.handle(self)
    return encode_response(self, svc, c)
  end

  -- ---- the registry ----

  -- source: the file's text when the host has read it already (so every worker
  -- compiles exactly what was checked); otherwise the file is read here.
  -- Raises "path:line: message"; nothing changes when it raises.
  -- lua.lib_dirs (portico.libs): set by the host before any load; nil: no
  -- library tracking (portico.testing puts lib dirs on package.path itself)
  local libs_tr = nil
  function rt.use_libs(dirs, portico_path)
    -- a library's code is the services' code: not compiled when the
    -- request budget is on, like theirs
    libs_tr = require("portico.libs").new(dirs, portico_path, function(chunk)
      if rt.interpret_services and jit_off then jit_off(chunk, true) end
    end)
    libs_tr:install()
  end

  -- Compiles and checks a service file, and runs its on_load; registers
  -- nothing. Raises "path:line: message".
  local function compile(path, source)
    local chunk, err
    if source ~= nil then
      chunk, err = loadstring(source, "@" .. path)
    else
      chunk, err = loadfile(path)
    end
    if not chunk then error(full_name(err, path), 0) end
    if rt.interpret_services and jit_off then jit_off(chunk, true) end -- and every function in it
    local handler = load_error_handler(path)
    local ok, svc = xpcall(chunk, handler)
    if not ok then error(svc, 0) end
    if not service.compiled(svc) then
      error(path .. ":1: the file must return the table made by service.new{...}, it returned "
        .. (type(svc) == "table" and "another table" or type(svc)), 0)
    end
    local name = svc.name
    if type(svc.handle) ~= "function" then
      error(path .. ":1: service '" .. name .. "' has no handle function (function M:handle() ... end)", 0)
    end
    local owner = path_by_name[name]
    if owner and owner ~= path then
      error(path .. ":1: service name '" .. name .. "' is already used by " .. owner, 0)
    end
    local on_load = rawget(svc, "on_load")
    if on_load ~= nil then
      if type(on_load) ~= "function" then
        error(path .. ":1: service '" .. name .. "': on_load must be a function, got " .. type(on_load), 0)
      end
      local ok_l, e = xpcall(on_load, handler, svc)
      if not ok_l then error(e, 0) end
    end
    return svc
  end

  local function register(path, svc)
    local name = svc.name
    local old = name_by_path[path]
    if old and old ~= name then
      by_name[old], path_by_name[old] = nil, nil
    end
    svc.__index = self_index(svc)
    by_name[name], path_by_name[name], name_by_path[path] = svc, path, name
    return name
  end

  -- source: the file's text when the host has read it already (so every worker
  -- compiles exactly what was checked); otherwise the file is read here.
  -- Raises "path:line: message"; nothing changes when it raises.
  function rt.load(path, source)
    if type(path) ~= "string" then error("runtime.load(path[, source]): path must be a string", 2) end
    if libs_tr then libs_tr:begin(path) end
    local ok, svc = pcall(compile, path, source)
    if libs_tr then libs_tr:finish(path, ok) end
    if not ok then error(svc, 0) end
    return register(path, svc)
  end

  -- The loaded service files that use any of files (library files).
  function rt.lib_dependants(files)
    if not libs_tr then return {} end
    local paths = libs_tr:dependants(files)
    local out = {}
    for _, p in ipairs(paths) do
      if name_by_path[p] then out[#out + 1] = p end
    end
    return out
  end

  -- A library reload: files (library files that changed, { file = text },
  -- text false for one removed) and services ({ path = text }, its
  -- dependants, as rt.lib_dependants named them). Every service is compiled
  -- again with the new library, its on_load run, and only if all of them
  -- load are they registered; else nothing changes (the old modules are
  -- back) and this raises the first error. Returns { path = name }.
  function rt.reload_libs(files, services)
    if not libs_tr then return {} end
    local list, sources = {}, {}
    for f, text in pairs(files) do
      list[#list + 1] = f
      if text then sources[f] = text end
    end
    local _, names = libs_tr:dependants(list)
    local paths = {}
    for p in pairs(services) do paths[#paths + 1] = p end
    table.sort(paths)
    local saved = libs_tr:drop(names, sources)
    local deps, before = libs_tr.deps, {}
    for _, p in ipairs(paths) do before[p] = deps["@" .. p] end
    local done, failed = {}, nil
    for _, p in ipairs(paths) do
      libs_tr:begin(p)
      local ok, svc = pcall(compile, p, services[p])
      libs_tr:finish(p, ok)
      if not ok then
        failed = svc
        break
      end
      done[#done + 1] = { p, svc }
    end
    if failed then
      for _, p in ipairs(paths) do deps["@" .. p] = before[p] end
      libs_tr:restore(saved)
      error(failed, 0)
    end
    libs_tr:commit(saved)
    local registered = {}
    for _, d in ipairs(done) do registered[d[1]] = register(d[1], d[2]) end
    return registered
  end

  function rt.unload(path)
    local name = name_by_path[path]
    if name then
      by_name[name], path_by_name[name], name_by_path[path] = nil, nil, nil
    end
    if libs_tr then libs_tr:forget(path) end
    return name
  end

  function rt.get(name)
    return by_name[name]
  end

  -- The names of the loaded services, sorted (portico.openapi lists them).
  function rt.names()
    local list = {}
    for name in pairs(by_name) do list[#list + 1] = name end
    table.sort(list)
    return list
  end

  -- ---- the entry point ----

  function rt.dispatch(req)
    -- Every field first: the host refills this table for the next request,
    -- setting the optional ones only when the request has them; so each of
    -- those found here is cleared (most requests have none).
    local name, cid, body, params, amqp = req.service, req.cid, req.body, req.params, req.amqp
    local method, path, query_string, headers = req.method, req.path, req.query_string, req.headers
    local channel_name, channel_type, username, gateway =
      req.channel, req.channel_type, req.username, req.gateway
    if username ~= nil then req.username = nil end
    if gateway ~= nil then req.gateway = nil end
    if params ~= nil then req.params = nil end
    if amqp ~= nil then req.amqp = nil end
    local svc = by_name[name]
    if not svc then
      return error_body(404, "unknown service '" .. tostring(name) .. "'", cid)
    end
    local payload
    if body ~= nil and body ~= "" then
      local err
      payload, err = decode_json(body)
      if payload == nil then
        return error_body(400, "invalid JSON: " .. tostring(err), cid)
      end
    end
    -- Each table is made with the keys it gets (LuaJIT sizes a table by its
    -- constructor, and a key added later can mean a rehash): params and amqp
    -- are there only when the channel has them.
    query_string, headers, body = query_string or "", headers or {}, body or ""
    local http, request
    if params then
      http = { method = method, path = path, query_string = query_string, headers = headers,
               params = params }
    else
      http = { method = method, path = path, query_string = query_string, headers = headers }
    end
    setmetatable(http, http_mt)
    if amqp then
      request = { payload = payload, input = nil, raw = body, http = http, amqp = amqp }
    else
      request = { payload = payload, input = nil, raw = body, http = http }
    end
    local channel = {
      name = channel_name, type = channel_type,
      security = { username = username, gateway = gateway },
    }
    local self = new_self(svc, cid, request, channel)
    local ok, status, rbody, ctype, rheaders = xpcall(run, on_error, svc, self)
    -- the service span, when the service made one (self.trace, a call out):
    -- nothing to do for the others, traced or not
    if trace_on then
      local tr = rawget(self, "trace")
      if tr ~= nil then
        if not ok then tr:error(getmetatable(status) == ServiceError and status.message or "raised") end
        tr:finish()
      end
    end
    local deferred = n_defers > 0 and defers[http]
    if deferred then
      defers[http], n_defers = nil, n_defers - 1
      start_defers(deferred, cid, name)
    end
    if ok then return status, rbody, ctype, rheaders end
    if getmetatable(status) == ServiceError then
      return error_body(status.status, status.message, cid)
    end
    pcall(rt.log, "error", "handler raised: " .. safe_tostring(status), cid, name)
    return internal_error(name, cid)
  end

  return rt
end

-- runtime.new([opts]) -> a runtime with its own registry (see the top).
function M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then error("runtime.new([opts]): opts must be a table", 2) end
  return new(opts or {}, {})
end

-- The module is this VM's own runtime: the host requires it, keeps a
-- reference to it and calls its load, unload and dispatch. Each VM has its
-- own, made with no options.
return new({}, M)
