-- portico.runtime: the registry of loaded services and the entry point the
-- host calls for every request (see docs/contract.md).
--
--   runtime.load(path[, source]) -> name   compile, check and register a service file
--   runtime.unload(path) -> name|nil  forget the service a file registered
--   runtime.dispatch(service, cid, method, path, query_string, headers, body,
--                    channel_name, channel_type, username, params, gateway, amqp)
--     -> status, body, content_type, headers|nil
--
-- dispatch runs inside the request's coroutine and never raises: every failure
-- becomes a JSON error body. LuaJIT lets waiting primitives yield through the
-- xpcall below.
local cjson = require "cjson"
local cjson_safe = require "cjson.safe"
local service = require "portico.service"
local schema = require "portico.schema"

local ok_host, host = pcall(require, "portico.host")
if not ok_host then host = nil end

local type, pairs, setmetatable, getmetatable, tostring, select, xpcall, pcall, error =
  type, pairs, setmetatable, getmetatable, tostring, select, xpcall, pcall, error
local fmt, concat, traceback = string.format, table.concat, debug.traceback
local encode, decode = cjson.encode, cjson_safe.decode
local ServiceError = service.ServiceError

schema.null = cjson.null

local M = {}

local by_name = {}  -- name -> service table
local by_path = {}  -- path -> name

-- ---- host primitives, with fallbacks for busted ----

local utcnow, log
if host then
  utcnow, log = host.utcnow, host.log
else
  utcnow = function()
    local t = os.time()
    return os.date("!%Y-%m-%dT%H:%M:%S", t) .. ".000000"
  end
  log = function(level, msg, cid, svc)
    io.stderr:write(fmt("%s [%s] %s %s\n", level, svc or "-", cid or "-", msg))
  end
end
M.log = log       -- portico.testing replaces it to record what services log
M.stubs = nil     -- portico.testing: name -> function(input, self) standing in for invoke targets
M.on_invoke = nil -- portico.testing: called with (name, input) for every invoke

-- self.time: time.utcnow() is the current UTC time as ISO-8601; tostring(self.time)
-- gives the same, so a service may also write it straight into a document.
local time = setmetatable({ utcnow = utcnow }, { __tostring = function() return utcnow() end })

-- ---- loading ----

-- source: the file's text when the host has read it already (so every worker
-- compiles exactly what was checked); otherwise the file is read here.
function M.load(path, source)
  local chunk, err
  if source then
    chunk, err = loadstring(source, "@" .. path)
  else
    chunk, err = loadfile(path)
  end
  if not chunk then error(err, 0) end
  local ok, svc = pcall(chunk)
  if not ok then error(path .. ": " .. tostring(svc), 0) end
  if not service.compiled(svc) then
    error(path .. ":1: the file must return the table made by service.new{...}", 0)
  end
  if type(svc.handle) ~= "function" then
    error(path .. ":1: service '" .. svc.name .. "' has no handle function", 0)
  end
  local other = by_name[svc.name]
  if other and by_path[path] ~= svc.name then
    for p, n in pairs(by_path) do
      if n == svc.name and p ~= path then
        error(path .. ":1: service name '" .. svc.name .. "' is already used by " .. p, 0)
      end
    end
  end
  local old = by_path[path]
  if old and old ~= svc.name then by_name[old] = nil end
  by_name[svc.name] = svc
  by_path[path] = svc.name
  return svc.name
end

function M.unload(path)
  local name = by_path[path]
  if name then
    by_name[name] = nil
    by_path[path] = nil
  end
  return name
end

function M.get(name)
  return by_name[name]
end

-- ---- the logger of a request ----

local Logger = {}
Logger.__index = Logger
local function logger_at(level)
  return function(self, f, ...)
    local msg = select("#", ...) > 0 and fmt(f, ...) or tostring(f)
    M.log(level, msg, self.cid, self.service)
  end
end
Logger.debug, Logger.info = logger_at("debug"), logger_at("info")
Logger.warn, Logger.error = logger_at("warn"), logger_at("error")

-- ---- the outgoing side: self.out.amqp, ... made on first use ----

local out_modules = { amqp = "portico.amqp", websocket = "portico.websocket" }

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
M.out_modules = out_modules

-- ---- query strings ----

local function unescape(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function parse_query(qs)
  local q = {}
  if qs == nil or qs == "" then return q end
  for pair in qs:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k, v = unescape(k), unescape(v)
    local prev = q[k]
    if prev == nil then
      q[k] = v
    elseif type(prev) == "table" then
      prev[#prev + 1] = v
    else
      q[k] = { prev, v }
    end
  end
  return q
end
M.parse_query = parse_query

-- ---- errors ----

local function error_body(status, message, cid)
  return status, encode({ error = { status = status, message = message, cid = cid } }),
    "application/json", nil
end
M.error_body = error_body

local function problems_message(prefix, problems)
  return prefix .. ": " .. concat(problems, "; ")
end

-- ---- running a service ----

local invoke

-- Builds self for svc. req holds what the caller knows.
local function new_self(svc, req)
  local self = setmetatable({
    name = svc.name,
    cid = req.cid,
    time = time,
    logger = setmetatable({ cid = req.cid, service = svc.name }, Logger),
    request = req.request,
    channel = req.channel,
    response = { payload = nil, status = 200, headers = {}, content_type = nil },
  }, svc)
  self.out = setmetatable({ _self = self }, out_mt)
  self.invoke = invoke
  return self
end
M.new_self = new_self

-- self:invoke(name, input): another service in-process, with its checks.
invoke = function(self, name, input)
  if M.on_invoke then M.on_invoke(name, input) end
  local stub = M.stubs and M.stubs[name]
  if stub then return stub(input, self) end
  local svc = by_name[name]
  if not svc then error("invoke: no service named '" .. tostring(name) .. "'", 2) end
  local c = service.compiled(svc)
  local checked = input
  if c.input then
    local problems
    checked, problems = schema.check(c.input, input == nil and {} or input)
    if not checked then
      error(problems_message("invoke " .. name .. ": invalid input", problems), 2)
    end
  end
  local child = new_self(svc, {
    cid = self.cid,
    request = { payload = input, input = checked, raw = nil, http = self.request.http,
                amqp = self.request.amqp },
    channel = { name = self.channel.name, type = "invoke", security = self.channel.security },
  })
  svc.handle(child)
  local payload = child.response.payload
  if c.output and type(payload) == "table" then
    local ok, problems = schema.check(c.output, payload)
    if not ok then
      error(problems_message("invoke " .. name .. ": output failed its schema", problems), 2)
    end
  end
  return payload
end

local function handler_error(e)
  if getmetatable(e) == ServiceError then return e end
  return traceback(tostring(e), 2)
end

local function encode_response(self, svc)
  local res = self.response
  local payload, status = res.payload, res.status or 200
  local headers = next(res.headers) and res.headers or nil
  if type(payload) == "table" then
    local c = service.compiled(svc)
    if c.output then
      local ok, problems = schema.check(c.output, payload)
      if not ok then
        M.log("error", problems_message("output failed its schema", problems), self.cid, svc.name)
        return error_body(500, "internal error in service " .. svc.name, self.cid)
      end
    end
    local ok, body = pcall(encode, payload)
    if not ok then
      M.log("error", "cannot encode the response: " .. tostring(body), self.cid, svc.name)
      return error_body(500, "internal error in service " .. svc.name, self.cid)
    end
    return status, body, res.content_type or "application/json", headers
  elseif type(payload) == "string" then
    return status, payload, res.content_type or "text/plain; charset=utf-8", headers
  elseif payload == nil then
    return status, "", res.content_type, headers
  end
  return status, tostring(payload), res.content_type or "text/plain; charset=utf-8", headers
end

-- Runs svc for a request whose payload and channel are known; used by
-- dispatch and by the other channel types.
function M.run(svc, cid, request, channel)
  local c = service.compiled(svc)
  local input = request.payload
  if c.input then
    local checked, problems = schema.check(c.input, input == nil and {} or input)
    if not checked then
      return error_body(400, problems_message("invalid input", problems), cid)
    end
    input = checked
  end
  request.input = input
  local self = new_self(svc, { cid = cid, request = request, channel = channel })
  local ok, err = xpcall(svc.handle, handler_error, self)
  if not ok then
    if getmetatable(err) == ServiceError then
      return error_body(err.status, err.message, cid)
    end
    M.log("error", "handler raised: " .. tostring(err), cid, svc.name)
    return error_body(500, "internal error in service " .. svc.name, cid)
  end
  return encode_response(self, svc)
end

function M.dispatch(name, cid, method, path, query_string, headers, body, channel_name,
                    channel_type, username, params, gateway, amqp)
  local svc = by_name[name]
  if not svc then
    return error_body(404, "unknown service '" .. tostring(name) .. "'", cid)
  end
  local payload
  if body ~= nil and body ~= "" then
    local err
    payload, err = decode(body)
    if payload == nil then
      return error_body(400, "invalid JSON: " .. tostring(err), cid)
    end
  end
  local request = {
    payload = payload,
    raw = body,
    http = {
      method = method, path = path, query = parse_query(query_string),
      query_string = query_string, headers = headers or {}, params = params or {},
    },
    amqp = amqp,
  }
  local channel = {
    name = channel_name, type = channel_type,
    security = { username = username, gateway = gateway },
  }
  local ok, status, rbody, ctype, rheaders = pcall(M.run, svc, cid, request, channel)
  if not ok then
    M.log("error", "dispatch failed: " .. tostring(status), cid, name)
    return error_body(500, "internal error in service " .. tostring(name), cid)
  end
  return status, rbody, ctype, rheaders
end

return M
