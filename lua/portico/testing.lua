-- portico.testing: call services from busted with no host.
--
--   local testing = require "portico.testing"
--   local t = testing.new()                       -- its own registry, records and stubs
--   local t = testing.new { caches = { sessions = { max_entries = 100, ttl = 600 } } }
--   local t = testing.new { lib_dirs = { "lib" } } -- and library modules (lua.lib_dirs) found
--                                                 --   there, put on package.path (`portico test`
--                                                 --   does that from the config already)
--   t:load("services/customer/get.lua")           -- -> "customer.get"; raises "path:line: ..."
--   t:load_dir("services")                        -- every *.lua below, -> { names }
--   t:stub("customer.get-details", function(input, self) return { name = "x" } end)
--   t:stub("other.service", { ok = true })        -- a table: answered as it is
--   t:stub("other.service", nil)                  -- the real service again
--
--   local res = t:call("customer.get", {          -- a name, or a file path (loaded on first use)
--     input    = { customer_id = 123 },           -- or payload = ..., or body = '{"raw":"JSON"}'
--     headers  = { ["X-Portico-Tenant"] = "acme" }, -- names are lower-cased as the host does
--     username = "john.doe",                      -- self.channel.security.username
--     channel  = "api.customer",                  -- or { name =, type = } (default "test", "rest")
--     query    = { page = "1" },                  -- or "page=1&size=20"
--     method   = "POST", path = "/api/customer/get", params = { id = "1" },
--     cid      = "cid-1",                         -- default "test-cid-N"
--     gateway  = nil,                             -- self.channel.security.gateway
--     amqp     = nil,                             -- self.request.amqp (an AMQP delivery's properties)
--   })
--   res.status, res.body, res.content_type, res.headers (a table, maybe empty), res.cid
--   res.payload   -- the decoded JSON body (nil when it is not JSON)
--   res.error     -- the message of a {"error": {...}} body, else nil
--
--   t.invocations -- { { name =, input = }, ... } every self:invoke, stubbed or not
--   t.logs        -- { { level =, message =, cid =, service = }, ... } everything logged
--   t:logged("pattern"[, level]) -> the first log entry whose message matches, or nil
--   t.sent.amqp   -- { { data =, body =, outconn =, exchange =, routing_key =, props =,
--                 --     properties = }, ... }  props: the service's own; properties: as they
--                 --     go to the broker (checked, content_type added for a table)
--   t:amqp_fails("connection lost")  -- later self.out.amqp:send return nil, err (nil: true again)
--   t:amqp_outconns({ "My Backend" }) -- only these names are outgoing AMQP connections
--                 --     (a send to another raises, as in the gateway); nil: every name (the default)
--   t.sent.websocket -- { { channel =, username =, data =, text = }, ... } self.out.websocket:send
--   t:http_stub("crm", function(req) return { status = 200, json = { id = 1 } } end)
--   t:http_stub("crm", { status = 404, body = "no" })  -- a table: answered as it is
--   t:http_stub("crm", nil)   -- "crm" unknown again: calls return nil, "no outgoing.http ..."
--     A stub answers { status (default 200), headers, body or json } or nil, err
--     (err is returned as it is, e.g. "crm: timed out"). self.out.http[name]
--     runs the real portico.http checks and shaping; only the host is faked.
--   t.sent.http   -- { { name =, method =, path =, query_string =, query = (parsed),
--                 --     headers = (lower-case, as sent), body =, data =, timeout = }, ... }
--   t.cache, t.caches.sessions -- the same caches self.cache and self.caches reach
--     (portico.cache over an in-Lua store with the host's semantics: LRU by
--     entries and bytes, ttl, add, incr; opts.caches as the config's
--     cache.caches, plus default = {...}); its clock stands still:
--   t:cache_advance(seconds)   -- moves the caches' clock on (ttl expiry)
--   t:cache_stats([name])      -- { hits, misses, sets, evictions, expired, entries, bytes }
--   Async work (docs/services.md, "Scheduler and async work"):
--   t.async       -- { { name =, input =, cid = }, ... } every self:invoke_async
--   t.slept       -- { seconds, ... } every self:sleep; t.clock: their sum (a fake
--                 --     clock: sleep returns at once, nothing really waits)
--   t.max_async   -- queued async runs past which invoke_async answers nil, err (1000)
--     self:invoke_async runs the target (or its t:stub) and self:defer's
--     functions run after the call has its answer, before t:call returns, in
--     the order they were started (an async run's own async work after it).
--   t:run_pending() -- runs what is queued now (after a t.runtime.dispatch of your own)
--   t:reset()     -- empties invocations, logs and sent (stubs, loaded services and caches stay)
--   t.runtime     -- the harness's own runtime (portico.runtime's runtime.new):
--                 --     t.runtime.get(name), t.runtime.dispatch(req) as the host calls it
--
--   testing.call("services/demo/echo.lua", { ... }) -> res, t   -- one-shot
--
-- A service's on_load() runs when the harness loads it (t:load), as in each
-- worker of the gateway; its error is the load's error.
--
-- Each harness has its own runtime (portico.runtime's runtime.new), and calls
-- go through the same runtime.dispatch the host calls, so input and output
-- schemas, JSON decoding, self:error and error bodies behave as in the
-- gateway. Stubbed invokes skip the target's schemas. self.out.amqp,
-- self.out.websocket and self.out.http are the real portico.amqp,
-- portico.websocket and portico.http with transports that record and answer
-- here instead of reaching a broker, the workers or a backend: the modules'
-- checks of a call (argument types, AMQP properties, UTF-8 of a push,
-- headers) are the gateway's, so a call they refuse in the gateway is
-- refused here too. (What only the host checks, such as an exchange name of
-- more than 255 bytes, passes here.)
local cjson = require "cjson"
local runtime = require "portico.runtime"
local amqp = require "portico.amqp"
local websocket = require "portico.websocket"
local http = require "portico.http"
local cache = require "portico.cache"

local type, pairs, ipairs, tostring, setmetatable, error = type, pairs, ipairs, tostring, setmetatable, error
local sort, concat = table.sort, table.concat

local M = {}

local Harness = {}
Harness.__index = Harness

-- ---- the transports of self.out: what the host would reach ----

-- self.out.amqp: portico.amqp with a transport that records the send.
local function amqp_transport(t)
  return {
    outconn = function(name)
      local known = t.amqp_known
      return known == nil or known[name] == true
    end,
    publish = function(outconn, exchange, routing_key, body, props, data, given)
      local sent = t.sent.amqp
      sent[#sent + 1] = {
        data = data, body = body, outconn = outconn, exchange = exchange,
        routing_key = routing_key, props = given, properties = props,
      }
      if t.amqp_error then return nil, t.amqp_error end
      return true
    end,
  }
end

-- self.out.websocket: portico.websocket with a transport that records the push.
local function websocket_transport(t)
  return {
    push = function(channel, username, text, data)
      local sent = t.sent.websocket
      sent[#sent + 1] = { channel = channel, username = username, data = data, text = text }
    end,
  }
end

-- self.out.http: portico.http with a transport that answers from t.http_stubs.
local function http_transport(t)
  return function(name, head, body, retry, head_only, timeout_ms, max_body, p)
    local headers = {}
    for line in head:gmatch("[^\r\n]+") do
      local k, v = line:match("^([^:]+):%s*(.*)$")
      if k then
        k = k:lower()
        headers[k] = headers[k] and (headers[k] .. ", " .. v) or v
      end
    end
    local path, qs = p.target:match("^([^?]*)%??(.*)$")
    local req = {
      name = name, method = p.method, path = path, query_string = qs,
      query = runtime.parse_query(qs), headers = headers, body = body,
      data = p.data, timeout = timeout_ms and timeout_ms / 1000 or nil,
    }
    local sent = t.sent.http
    sent[#sent + 1] = req
    local stub = t.http_stubs[name]
    if stub == nil then
      return nil, "unknown", "no outgoing.http connection named '" .. name .. "'"
    end
    local res, err = stub(req)
    if res == nil then return nil, "as_is", tostring(err or (name .. ": the stub answered nil")) end
    if type(res) ~= "table" then
      error("http stub of '" .. name .. "' must return a table or nil, err, got " .. type(res), 0)
    end
    local rh = {}
    for k, v in pairs(res.headers or {}) do rh[k:lower()] = tostring(v) end
    local rbody = res.body
    if rbody == nil and res.json ~= nil then
      rbody = cjson.encode(res.json)
      rh["content-type"] = rh["content-type"] or "application/json"
    end
    if head_only then rbody = "" end
    return res.status or 200, rh, rbody or ""
  end
end

-- ---- the harness ----

-- Puts each of dirs on package.path (after what is there: portico's own
-- modules are found first, as in the gateway), once.
local function add_lib_dirs(dirs)
  if type(dirs) ~= "table" then error("testing.new{ lib_dirs = ... }: lib_dirs must be a list of directories", 3) end
  for _, d in ipairs(dirs) do
    if type(d) ~= "string" or d == "" or d:find("[;?]") then
      error("testing.new{ lib_dirs = ... }: '" .. tostring(d) .. "' is not a directory name", 3)
    end
    local entry = d .. "/?.lua;" .. d .. "/?/init.lua"
    if not (";" .. package.path .. ";"):find(";" .. entry:gsub("%p", "%%%0") .. ";") then
      package.path = package.path .. ";" .. entry
    end
  end
end

local KNOWN_OPTS = { caches = true, lib_dirs = true }

function M.new(opts)
  if opts ~= nil then
    if type(opts) ~= "table" then error("testing.new([opts]): opts must be a table", 2) end
    for k in pairs(opts) do
      if not KNOWN_OPTS[k] then error("testing.new: unknown option '" .. tostring(k) .. "' (known: caches, lib_dirs)", 2) end
    end
    if opts.lib_dirs ~= nil then add_lib_dirs(opts.lib_dirs) end
  end
  local cache_be = cache.memory(opts and opts.caches)
  local caches = cache.new(cache_be)
  local t = setmetatable({
    cache_backend = cache_be,
    cache = caches.default,
    caches = caches.named,
    invocations = {},
    logs = {},
    sent = { amqp = {}, websocket = {}, http = {} },
    stubs = {},
    http_stubs = {},
    amqp_error = nil,
    amqp_known = nil, -- nil: every outconn name is known; else name -> true
    loaded = {}, -- path -> name
    counter = 0,
    async = {},
    slept = {},
    clock = 0,
    max_async = 1000,
    pending = {}, -- what spawn queued, run after the call
  }, Harness)
  local amqp_tr, ws_tr, http_tr = amqp_transport(t), websocket_transport(t), http_transport(t)
  t.runtime = runtime.new {
    log = function(level, message, cid, service)
      t.logs[#t.logs + 1] = { level = level, message = message, cid = cid, service = service }
    end,
    cache = cache_be,
    on_invoke = function(self, name, input)
      t.invocations[#t.invocations + 1] = { name = name, input = input }
      local stub = t.stubs[name]
      if stub then return true, stub(input, self) end
      return false
    end,
    on_invoke_async = function(self, name, input)
      t.async[#t.async + 1] = { name = name, input = input, cid = self.cid }
      local stub = t.stubs[name]
      if not stub then return false end
      t.pending[#t.pending + 1] = function() stub(input, self) end
      return true
    end,
    spawn = function(fn)
      if #t.pending >= t.max_async then
        return nil, "limit", "the harness has " .. t.max_async .. " async runs queued (t.max_async)"
      end
      t.pending[#t.pending + 1] = fn
      return true
    end,
    sleep = function(seconds)
      t.slept[#t.slept + 1] = seconds
      t.clock = t.clock + seconds
      return true
    end,
    out = {
      amqp = { new = function(ctx) return amqp.new(ctx, amqp_tr) end },
      websocket = { new = function(ctx) return websocket.new(ctx, ws_tr) end },
      http = { new = function(ctx) return http.new(ctx, http_tr) end },
    },
  }
  return t
end
-- Loads a service file; returns its name. Raises the load error as is.
function Harness:load(path)
  local name = self.runtime.load(path)
  self.loaded[path] = name
  return name
end

-- Loads every *.lua file below dir (sorted by path); returns their names.
function Harness:load_dir(dir)
  local p = assert(io.popen("find '" .. dir:gsub("'", "'\\''") .. "' -type f -name '*.lua' | sort"))
  local names = {}
  for path in p:lines() do names[#names + 1] = self:load(path) end
  p:close()
  return names
end

-- Makes self:invoke(name, input) answer fn(input, self) (or the table fn)
-- instead of calling the service; fn = nil removes the stub.
function Harness:stub(name, fn)
  if type(name) ~= "string" then error("stub(name, fn): name must be a string", 2) end
  if type(fn) == "table" then
    local payload = fn
    fn = function() return payload end
  elseif fn ~= nil and type(fn) ~= "function" then
    error("stub(name, fn): fn must be a function, a table or nil", 2)
  end
  self.stubs[name] = fn
end

-- Makes the outgoing.http connection name answer from fn(req) (or the
-- table fn); fn = nil: the name is unknown again.
function Harness:http_stub(name, fn)
  if type(name) ~= "string" then error("http_stub(name, fn): name must be a string", 2) end
  if type(fn) == "table" then
    local res = fn
    fn = function() return res end
  elseif fn ~= nil and type(fn) ~= "function" then
    error("http_stub(name, fn): fn must be a function, a table or nil", 2)
  end
  self.http_stubs[name] = fn
end

-- Later self.out.amqp:send calls return nil, err; nil: they succeed again.
function Harness:amqp_fails(err)
  self.amqp_error = err
end

-- Only the names in list are outgoing AMQP connections from now on; a send
-- through another raises, as in the gateway. nil: every name (the default).
function Harness:amqp_outconns(list)
  if list == nil then
    self.amqp_known = nil
    return
  end
  if type(list) ~= "table" then error("amqp_outconns(list): list must be a table of names or nil", 2) end
  local known = {}
  for _, name in ipairs(list) do known[name] = true end
  self.amqp_known = known
end

-- Moves the clock of the harness's caches on by seconds (entries expire).
function Harness:cache_advance(seconds)
  if type(seconds) ~= "number" or seconds < 0 then
    error("cache_advance(seconds): seconds must be a number >= 0", 2)
  end
  self.cache_backend.advance(seconds)
end

-- The figures of a cache of the harness (default: "default"), or nil.
function Harness:cache_stats(name)
  return self.cache_backend.stats(name or "default")
end

-- Runs what invoke_async and defer queued, oldest first, until nothing is left.
function Harness:run_pending()
  local n = 0
  while #self.pending > 0 do
    n = n + 1
    if n > 100000 then error("async work keeps starting more async work (100000 runs)", 2) end
    local fn = table.remove(self.pending, 1)
    local ok, e = pcall(fn)
    if not ok then
      self.logs[#self.logs + 1] = { level = "error", message = "async run raised: " .. tostring(e) }
    end
  end
end

function Harness:reset()
  self.async, self.slept, self.clock, self.pending = {}, {}, 0, {}
  self.invocations, self.logs = {}, {}
  self.sent.amqp, self.sent.websocket, self.sent.http = {}, {}, {}
end

-- The first log entry whose message matches pattern (and level, if given).
function Harness:logged(pattern, level)
  for _, l in ipairs(self.logs) do
    if (level == nil or l.level == level) and l.message:find(pattern) then return l end
  end
  return nil
end

local function escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- { b = "2", a = { "1", "3" } } -> "a=1&a=3&b=2"
local function query_string(q)
  if q == nil then return "" end
  if type(q) == "string" then return q end
  local keys = {}
  for k in pairs(q) do keys[#keys + 1] = k end
  sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = q[k]
    if type(v) == "table" then
      for _, x in ipairs(v) do parts[#parts + 1] = escape(k) .. "=" .. escape(x) end
    else
      parts[#parts + 1] = escape(k) .. "=" .. escape(v)
    end
  end
  return concat(parts, "&")
end
M.query_string = query_string

-- Calls a service (a loaded name, or a file path) as the host would; see the top.
function Harness:call(name, req)
  req = req or {}
  if self.runtime.get(name) == nil and type(name) == "string" and name:match("%.lua$") then
    name = self.loaded[name] or self:load(name)
  end
  self.counter = self.counter + 1
  local body = req.body
  if body == nil then
    local payload = req.payload
    if payload == nil then payload = req.input end
    if payload ~= nil then body = cjson.encode(payload) end
  end
  local headers = {}
  for k, v in pairs(req.headers or {}) do headers[k:lower()] = v end
  local channel = req.channel
  if type(channel) == "string" then channel = { name = channel } end
  channel = channel or {}
  local cid = req.cid or ("test-cid-" .. self.counter)
  local status, rbody, ctype, rheaders = self.runtime.dispatch {
    service = name, cid = cid, method = req.method or "POST", path = req.path or "/test",
    query_string = query_string(req.query), headers = headers, body = body or "",
    params = req.params, channel = channel.name or "test", channel_type = channel.type or "rest",
    username = req.username, gateway = req.gateway, amqp = req.amqp,
  }
  self:run_pending()
  local res = { status = status, body = rbody, content_type = ctype, headers = rheaders or {}, cid = cid }
  if ctype and ctype:find("json", 1, true) and rbody ~= "" then
    local ok, decoded = pcall(cjson.decode, rbody)
    if ok then res.payload = decoded end
    if ok and type(decoded) == "table" and type(decoded.error) == "table" and status >= 400 then
      res.error = decoded.error.message
    end
  end
  return res
end

-- One-shot: a new harness, the service file loaded, one call. -> res, harness
function M.call(path, req)
  local t = M.new()
  return t:call(path, req), t
end

return M
