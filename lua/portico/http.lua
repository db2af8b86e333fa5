--- portico.http: self.out.http, calls to outgoing HTTP connections.
--
--   local crm = self.out.http["crm"]                  -- an outgoing.http connection by name
--   local res, err = crm:get("/customers", { query = { page = 1 }, headers = { ["X-Tenant"] = "a" } })
--   res, err = crm:post("/customers", { name = "x" })  -- a table is sent as JSON
--   res, err = crm:put(path, data, opts)   crm:patch(path, data, opts)
--   res, err = crm:delete(path, opts)      crm:head(path, opts)      crm:options(path, opts)
--   res, err = crm:request("PROPFIND", path, { body = "<x/>", headers = {...} })
--
-- res = { status = 200, headers = { ["content-type"] = "..." }, body = "...", json = {...} }:
-- header names lower-case, a repeated header joined with ", "; json is the
-- decoded body when the content type is JSON (application/json, */*+json)
-- and it is RFC 8259 JSON (portico.json), else nil. Any status is an answer: a 404 or 500 of the
-- backend comes back as res, not as an error.
--
-- err (res nil) when no answer came: "crm: connect failed (...)", "crm: timed
-- out (...)", "crm: bad answer (...)", "crm: the response is larger than 16MB",
-- "no outgoing.http connection named 'crm'". A call waits without blocking the
-- worker: the request's coroutine yields until the answer is in.
--
-- opts (all optional): query (a table: keys sorted, values percent-encoded, a
-- list value repeats the key; or a string sent as it is), headers (name ->
-- string, number, or a list of them for a repeated header), timeout (seconds
-- to wait for the answer, instead of the connection's timeout), and for
-- request() or to send a body with another method: data (a table sent as
-- JSON, a string as it is) or body (a string, as it is). A table sent as JSON
-- gets Content-Type: application/json unless headers name one.
--
-- Added to every request unless headers give them: User-Agent: portico,
-- Accept: */*, X-Correlation-Id: self.cid (so the cid flows downstream).
-- Host, Content-Length, Transfer-Encoding, Connection (and the other
-- hop-by-hop headers) belong to portico: a service cannot set them.
--
-- Mistakes in the call itself (bad method, a path not starting with "/", a
-- header with CR/LF, opts of the wrong type, data JSON cannot hold) raise an
-- error blaming the caller's line.
local cjson = require "cjson"
local json = require "portico.json"
local trace = require "portico.trace"

local has_host, host = pcall(require, "portico.host")
if not has_host or type(host) ~= "table" then host = nil end

local type, pairs, ipairs, tostring, setmetatable, getmetatable, error, pcall =
  type, pairs, ipairs, tostring, setmetatable, getmetatable, error, pcall
local byte, char, fmt, find, gsub, lower, upper, match =
  string.byte, string.char, string.format, string.find, string.gsub, string.lower, string.upper,
  string.match
local concat, sort, floor, ceil = table.concat, table.sort, math.floor, math.ceil

local M = {}

M.MAX_BODY = 16 * 1024 * 1024 -- bytes of a response body kept in memory

-- ---- pure helpers (spec/lua/portico/http_spec.lua) ----

local function hex(c) return fmt("%%%02X", byte(c)) end

--- Percent-encodes s (a string or a number) for a query key or value or a
-- path segment: everything but RFC 3986's unreserved A-Z a-z 0-9 - . _ ~.
function M.escape(s)
  return (gsub(s, "[^%w%-%._~]", hex))
end
local escape = M.escape

-- A number as a query value: whole numbers without a fraction or exponent.
local function number_string(n)
  if n == floor(n) and n > -2 ^ 53 and n < 2 ^ 53 then return fmt("%d", n) end
  return tostring(n)
end

local function scalar(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then
    if v ~= v or v == 1 / 0 or v == -1 / 0 then return nil end
    return number_string(v)
  end
  if t == "boolean" then return tostring(v) end
  return nil
end

--- { b = 2, a = { "x y", true } } -> "a=x%20y&a=true&b=2". Keys are sorted;
-- values are strings, numbers, booleans or lists of them (an empty list
-- leaves the key out). Returns nil, err for anything else.
function M.encode_query(q)
  local keys = {}
  for k in pairs(q) do
    if type(k) ~= "string" then
      return nil, "query keys must be strings, got " .. type(k)
    end
    keys[#keys + 1] = k
  end
  sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v, ek = q[k], escape(k)
    if type(v) == "table" then
      local n = #v
      for i in pairs(v) do
        if type(i) ~= "number" or i < 1 or i > n or i ~= floor(i) then
          return nil, "query." .. k .. " must be a string, number, boolean or a list of them"
        end
      end
      for i = 1, n do
        local s = scalar(v[i])
        if not s then
          return nil, "query." .. k .. "[" .. i .. "] must be a string, number or boolean, got "
            .. type(v[i])
        end
        parts[#parts + 1] = ek .. "=" .. escape(s)
      end
    else
      local s = scalar(v)
      if not s then
        return nil, "query." .. k .. " must be a string, number, boolean or a list of them, got "
          .. type(v)
      end
      parts[#parts + 1] = ek .. "=" .. escape(s)
    end
  end
  return concat(parts, "&")
end

-- A path or query string as it goes on the request line: control bytes,
-- spaces and "#" are mistakes; bytes beyond ASCII are percent-encoded.
local function request_target_part(s, what)
  if find(s, "[%z\1-\32\127#]") then
    return nil, what .. " must not hold spaces, control characters or '#'"
  end
  return (gsub(s, "[\128-\255]", hex))
end

-- RFC 7230 token characters
local function is_token(s)
  return s ~= "" and not find(s, "[^%w!#%$%%&'%*%+%-%.%^_`|~]")
end

-- Headers portico writes itself: framing, the connection and the target.
local RESERVED = {
  host = true, ["content-length"] = true, ["transfer-encoding"] = true, connection = true,
  ["keep-alive"] = true, upgrade = true, te = true, trailer = true, ["proxy-connection"] = true,
}
M.RESERVED = RESERVED

local function header_value(v)
  local s = type(v) == "number" and number_string(v) or v
  if type(s) ~= "string" then return nil end
  if find(s, "[%z\1-\8\10-\31\127]") then return nil end
  return s
end

-- headers -> lines "Name: value\r\n" (sorted by name), and which lower-case
-- names were given. Returns nil, err on a mistake.
local function header_lines(headers)
  local names, lines, given = {}, {}, {}
  for name in pairs(headers) do
    if type(name) ~= "string" or not is_token(name) then
      return nil, "header names must be HTTP tokens (letters, digits, -), got "
        .. (type(name) == "string" and fmt("%q", name) or type(name))
    end
    local l = lower(name)
    if RESERVED[l] then
      return nil, "header " .. name .. " is set by portico, a service cannot set it"
    end
    names[#names + 1] = name
    given[l] = true
  end
  sort(names)
  for _, name in ipairs(names) do
    local v = headers[name]
    local list = type(v) == "table" and v or { v }
    if type(v) == "table" and #v == 0 then
      return nil, "header " .. name .. " must be a string, a number or a list of them"
    end
    for _, item in ipairs(list) do
      local s = header_value(item)
      if not s then
        return nil, "header " .. name .. (type(item) == "string"
          and " must not hold CR, LF or other control characters"
          or " must be a string, a number or a list of them, got " .. type(item))
      end
      lines[#lines + 1] = name .. ": " .. s .. "\r\n"
    end
  end
  return lines, given
end

local IDEMPOTENT = { GET = true, HEAD = true, OPTIONS = true, PUT = true, DELETE = true, TRACE = true }
local WANTS_LENGTH = { POST = true, PUT = true, PATCH = true }
local OPTS = { query = true, headers = true, timeout = true, data = true, body = true }

--- Checks one call and builds what goes to the host. Returns a table
-- { method, target, head, body, data, retry, head_only, timeout_ms, headers = lines }
-- or nil, err (a mistake of the caller). data is the data argument of
-- post/put/patch (nil for the others). cid goes into X-Correlation-Id.
function M.prepare(method, path, data, opts, cid, traceparent, tracestate)
  if type(method) ~= "string" or not match(method, "^%a[%a%-_]*$") or #method > 32 then
    return nil, "method must be an HTTP method like \"GET\", got "
      .. (type(method) == "string" and fmt("%q", method) or type(method))
  end
  method = upper(method)
  if method == "CONNECT" then return nil, "method CONNECT cannot be used here" end
  if type(path) ~= "string" or byte(path, 1) ~= 47 then
    return nil, "path must be a string starting with '/', got "
      .. (type(path) == "string" and fmt("%q", path) or type(path))
  end
  local target, err = request_target_part(path, "path")
  if not target then return nil, err end
  if opts == nil then
    opts = {}
  elseif type(opts) ~= "table" then
    return nil, "opts must be a table, got " .. type(opts)
  end
  for k in pairs(opts) do
    if not OPTS[k] then
      return nil, "unknown option '" .. tostring(k) .. "' (query, headers, timeout, data, body)"
    end
  end

  local q = opts.query
  if q ~= nil then
    local qs
    if type(q) == "table" then
      qs, err = M.encode_query(q)
      if not qs then return nil, err end
    elseif type(q) == "string" then
      qs, err = request_target_part((gsub(q, "^%?", "")), "query")
      if not qs then return nil, err end
    else
      return nil, "query must be a table or a string, got " .. type(q)
    end
    if qs ~= "" then target = target .. (find(target, "?", 1, true) and "&" or "?") .. qs end
  end

  local headers = opts.headers
  if headers ~= nil and type(headers) ~= "table" then
    return nil, "headers must be a table, got " .. type(headers)
  end
  local lines, given = header_lines(headers or {})
  if not lines then return nil, given end

  local timeout_ms = nil
  local tmo = opts.timeout
  if tmo ~= nil then
    if type(tmo) ~= "number" or not (tmo > 0 and tmo <= 86400) then
      return nil, "timeout must be a number of seconds (more than 0, at most 86400)"
    end
    timeout_ms = ceil(tmo * 1000)
  end

  -- the body: the data argument, or opts.data, or opts.body
  local n_given = (data ~= nil and 1 or 0) + (opts.data ~= nil and 1 or 0)
    + (opts.body ~= nil and 1 or 0)
  if n_given > 1 then return nil, "give the body once: data, opts.data or opts.body" end
  if opts.body ~= nil and type(opts.body) ~= "string" then
    return nil, "opts.body must be a string, got " .. type(opts.body)
  end
  if data == nil then data = opts.data end
  if data == nil then data = opts.body end
  local body, content_type
  local td = type(data)
  if td == "table" then
    local ok, encoded = pcall(cjson.encode, data)
    if not ok then return nil, "data cannot be sent as JSON: " .. tostring(encoded) end
    body, content_type = encoded, "application/json"
  elseif td == "string" then
    body = data
  elseif data ~= nil then
    return nil, "data must be a table or a string, got " .. td
  end
  if method == "HEAD" and body ~= nil then return nil, "a HEAD request has no body" end

  local head = { method, " ", target, " HTTP/1.1\r\n" }
  for _, l in ipairs(lines) do head[#head + 1] = l end
  if not given["user-agent"] then head[#head + 1] = "User-Agent: portico\r\n" end
  if not given["accept"] then head[#head + 1] = "Accept: */*\r\n" end
  if not given["x-correlation-id"] and type(cid) == "string" and cid ~= "" and
      not find(cid, "[%z\1-\31\127]") then
    head[#head + 1] = "X-Correlation-Id: " .. cid .. "\r\n"
  end
  if traceparent and not given["traceparent"] then
    head[#head + 1] = "traceparent: " .. traceparent .. "\r\n"
    -- the trace's tracestate goes with portico's traceparent, as it came
    if tracestate and not given["tracestate"] then
      head[#head + 1] = "tracestate: " .. tracestate .. "\r\n"
    end
  end
  if content_type and not given["content-type"] then
    head[#head + 1] = "Content-Type: " .. content_type .. "\r\n"
  end
  if body ~= nil then
    head[#head + 1] = "Content-Length: " .. #body .. "\r\n"
  elseif WANTS_LENGTH[method] then
    head[#head + 1] = "Content-Length: 0\r\n"
  end
  return {
    method = method, target = target, head = concat(head), body = body, data = data,
    retry = IDEMPOTENT[method] == true, head_only = method == "HEAD", timeout_ms = timeout_ms,
    headers = lines,
  }
end

--- Whether a Content-Type names JSON.
function M.is_json_type(ct)
  if type(ct) ~= "string" then return false end
  local mime = lower(match(ct, "^%s*([^;%s]+)") or "")
  return mime == "application/json" or find(mime, "^application/[^/]+%+json$") ~= nil
end

--- The result of a call: { status, headers, body, json }.
function M.shape(status, headers, body)
  local res = { status = status, headers = headers or {}, body = body or "", json = nil }
  if res.body ~= "" and M.is_json_type(res.headers["content-type"]) then
    -- a backend is a peer like a client: its JSON is held to RFC 8259 too
    local v = json.decode(res.body)
    if v ~= nil then res.json = v end
  end
  return res
end

local function mb(n)
  if n % (1024 * 1024) == 0 then return (n / (1024 * 1024)) .. "MB" end
  return n .. " bytes"
end

-- The error string of a failure the host reported as (kind, detail).
local function failure(name, kind, detail, max_body)
  if kind == "unknown" or kind == "context" or kind == "unavailable" or kind == "as_is" then
    return detail
  end
  local what = ({
    connect = "connect failed", timeout = "timed out", broken = "bad answer",
    cancelled = "cancelled", nomem = "out of memory",
  })[kind]
  if kind == "too_large" then return name .. ": the response is larger than " .. mb(max_body) end
  if not what then what = tostring(kind) end
  if detail and detail ~= "" then return name .. ": " .. what .. " (" .. detail .. ")" end
  return name .. ": " .. what
end
M.failure = failure

-- ---- the service API ----

local Conn = {}
Conn.__index = Conn

local function not_available()
  return nil, "unavailable", "outgoing HTTP is not available outside the portico host"
end

-- The host primitive, or a stand-in (portico.testing passes its own):
-- send(name, head, body, retry, head_only, timeout_ms, max_body, call)
-- -> status, headers, body | nil, kind, detail
local function host_send()
  if host and host.http_request then return host.http_request end
  return not_available
end

-- One call: checks (raising at the service's line: level 3 is the caller of
-- the public method), then waits for the answer.
local function call(self, fname, method, path, data, opts)
  if getmetatable(self) ~= Conn then
    error("call it as self.out.http[name]:" .. fname .. "(...), with a colon", 3)
  end
  local ctx = self.ctx
  -- traced: a client span under the service's, its context sent on
  local sp = trace.on and type(ctx) == "table" and ctx.trace
  if sp then sp = sp ~= trace.NOOP and sp:span("http " .. tostring(method), "client") end
  local p, err = M.prepare(method, path, data, opts, ctx and ctx.cid, sp and sp:traceparent(),
    sp and sp:tracestate())
  if not p then error("http:" .. fname .. ": " .. err, 3) end
  p.name = self.name
  local max_body = M.MAX_BODY
  local status, headers, body = self.send(self.name, p.head, p.body, p.retry, p.head_only,
    p.timeout_ms, max_body, p)
  if sp then
    sp:set("http.request.method", p.method):set("url.path", p.target):set("portico.outconn", self.name)
    if status then sp:set("http.response.status_code", status) else sp:error(tostring(headers)) end
    sp:finish()
  end
  if status == nil then return nil, failure(self.name, headers, body, max_body) end
  return M.shape(status, headers, body)
end

function Conn:get(path, opts)
  local res, err = call(self, "get", "GET", path, nil, opts)
  return res, err
end

function Conn:head(path, opts)
  local res, err = call(self, "head", "HEAD", path, nil, opts)
  return res, err
end

function Conn:options(path, opts)
  local res, err = call(self, "options", "OPTIONS", path, nil, opts)
  return res, err
end

function Conn:delete(path, opts)
  local res, err = call(self, "delete", "DELETE", path, nil, opts)
  return res, err
end

function Conn:post(path, data, opts)
  local res, err = call(self, "post", "POST", path, data, opts)
  return res, err
end

function Conn:put(path, data, opts)
  local res, err = call(self, "put", "PUT", path, data, opts)
  return res, err
end

function Conn:patch(path, data, opts)
  local res, err = call(self, "patch", "PATCH", path, data, opts)
  return res, err
end

function Conn:request(method, path, opts)
  local res, err = call(self, "request", method, path, nil, opts)
  return res, err
end

--- Creates the self.out.http of one request: indexing it with a name gives
-- that connection (made once per request). Whether the name exists is known
-- when a call is made (an unknown one gives nil, err), so a config reload
-- that adds or removes a connection is seen by the next call. send replaces
-- the host primitive (portico.testing).
function M.new(ctx, send)
  send = send or host_send()
  local conns = {}
  return setmetatable({}, {
    __index = function(_, name)
      if type(name) ~= "string" or name == "" then
        error("self.out.http[name]: name must be the name of an outgoing.http connection, got "
          .. type(name), 2)
      end
      local c = conns[name]
      if not c then
        c = setmetatable({ name = name, ctx = ctx, send = send }, Conn)
        conns[name] = c
      end
      return c
    end,
    __newindex = function() error("self.out.http is read-only", 2) end,
  })
end

M.Conn = Conn

return M
