-- portico.cache: the caches a service shares with every worker of the
-- process (docs/services.md, "Cache").
--
--   self.cache                      -- the default cache
--   self.caches.sessions            -- a cache of the config's cache.caches (self.caches.default
--                                   -- is self.cache); an unknown name raises
--   c:get(key) -> value | nil                      (a miss, or an expired entry)
--   c:set(key, value[, ttl]) -> true | nil, err
--   c:add(key, value[, ttl]) -> true | false | nil, err   (false: the key is there)
--   c:incr(key[, by[, ttl]]) -> the new number | nil, err  (an absent key counts as 0)
--   c:delete(key) -> whether it was there
--   c:expire(key, ttl) -> whether it was there (ttl from now)
--
-- key: a string of 1 to 1024 bytes. value: a string, a finite number, a
-- boolean, or a table that encodes as JSON (encoded once by set, decoded by
-- every get: a get returns a new table). ttl: seconds (fractions too), at
-- most a year; nil or 0: the cache's ttl (its config's, else none).
-- Programmer mistakes raise (a bad key, value or ttl, an unknown cache, incr
-- of a value that is not a number); runtime failures return nil, err (an
-- entry larger than the cache's max_bytes or max_value, out of memory, Redis
-- down or too slow for a backend: redis cache). The calls do not wait with
-- the in-process store; a backend: redis cache waits inside them like
-- self.out.http does (docs/cluster-cache.md), so call them where a service
-- may wait (handle and what it calls, not a __gc or __tostring metamethod).
--
-- M.new(backend) -> { default = cache, named = table } for portico.runtime:
-- backend has get, set, incr, delete, expire and exists with the signatures
-- of host.cache_* (host/pt_lua_cache.h); nil: the host's. M.memory(caps[,
-- clock]) is an in-Lua backend with the same semantics, for portico.testing.
local cjson = require "cjson"

local type, error, pcall, pairs, setmetatable, tostring = type, error, pcall, pairs, setmetatable, tostring
local fmt, sub = string.format, string.sub
local huge = math.huge
local encode, decode = cjson.encode, cjson.decode

local KEY_MAX = 1024
local TTL_MAX = 365 * 24 * 3600
local VALUE_MAX = 64 * 1024 * 1024
local OVERHEAD = 96 -- per entry, as host/pt_cache.h counts it
local RAISE = { context = true, unknown = true, invalid = true, not_number = true }

local M = {}

local function show(key)
  if #key > 64 then return fmt("%q...", sub(key, 1, 64)) end
  return fmt("%q", key)
end

local Cache = {}
Cache.__index = Cache

-- Errors blame the service's line: level 3 from a method's helper.
local function check_key(c, op, key)
  if type(key) ~= "string" or #key == 0 or #key > KEY_MAX then
    error(fmt("cache '%s' %s: the key must be a string of 1 to %d bytes, got %s", c.name, op,
      KEY_MAX, type(key) == "string" and (#key .. " bytes") or type(key)), 3)
  end
end

local function check_ttl(c, op, ttl)
  if ttl ~= nil and (type(ttl) ~= "number" or not (ttl >= 0 and ttl <= TTL_MAX)) then
    error(fmt("cache '%s' %s: ttl must be a number of seconds from 0 to %d, got %s", c.name, op,
      TTL_MAX, tostring(ttl)), 3)
  end
end

local function failed(c, op, key, kind, detail)
  if kind == "not_number" then
    error(fmt("cache '%s' %s: the value under key %s is not a number", c.name, op, show(key)), 3)
  elseif RAISE[kind] then
    error(fmt("cache '%s' %s: %s", c.name, op, tostring(detail)), 3)
  end
  return nil, fmt("cache '%s' %s: %s", c.name, op, tostring(detail))
end

-- value -> what the backend stores (a string, number or boolean) and whether it is JSON.
local function encode_value(c, op, value)
  local tv = type(value)
  if tv == "string" or tv == "boolean" then return value, false end
  if tv == "number" then
    if value ~= value or value == huge or value == -huge then
      error(fmt("cache '%s' %s: a number value must be finite, got %s", c.name, op, tostring(value)), 3)
    end
    return value, false
  end
  if tv == "table" then
    local ok, text = pcall(encode, value)
    if not ok then
      error(fmt("cache '%s' %s: the table cannot be encoded as JSON: %s", c.name, op, tostring(text)), 3)
    end
    return text, true
  end
  error(fmt("cache '%s' %s: a value must be a string, a number, a boolean or a table, got %s",
    c.name, op, tv), 3)
end

function Cache:get(key)
  check_key(self, "get", key)
  local v, json, detail = self.be.get(self.name, key)
  if v == nil then
    if json ~= nil then return failed(self, "get", key, json, detail) end
    return nil
  end
  if json == true then return decode(v) end
  return v
end

local function store(c, op, key, value, ttl, add)
  check_key(c, op, key)
  check_ttl(c, op, ttl)
  local v, json = encode_value(c, op, value)
  local ok, kind, detail = c.be.set(c.name, key, v, json, ttl, add)
  if ok == nil then return failed(c, op, key, kind, detail) end
  return ok
end

function Cache:set(key, value, ttl)
  return store(self, "set", key, value, ttl, false)
end

function Cache:add(key, value, ttl)
  return store(self, "add", key, value, ttl, true)
end

function Cache:incr(key, by, ttl)
  check_key(self, "incr", key)
  check_ttl(self, "incr", ttl)
  if by == nil then by = 1 end
  if type(by) ~= "number" or by ~= by or by == huge or by == -huge then
    error(fmt("cache '%s' incr: by must be a finite number, got %s", self.name, tostring(by)), 2)
  end
  local n, kind, detail = self.be.incr(self.name, key, by, ttl)
  if n == nil then return failed(self, "incr", key, kind, detail) end
  return n
end

function Cache:delete(key)
  check_key(self, "delete", key)
  local ok, kind, detail = self.be.delete(self.name, key)
  if ok == nil then return failed(self, "delete", key, kind, detail) end
  return ok
end

function Cache:expire(key, ttl)
  check_key(self, "expire", key)
  check_ttl(self, "expire", ttl)
  local ok, kind, detail = self.be.expire(self.name, key, ttl)
  if ok == nil then return failed(self, "expire", key, kind, detail) end
  return ok
end

-- The host's backend: portico.host's primitives; nil outside the host.
local function host_backend()
  local ok, host = pcall(require, "portico.host")
  if not ok or type(host) ~= "table" or not host.cache_get then return nil end
  return {
    get = host.cache_get, set = host.cache_set, incr = host.cache_incr,
    delete = host.cache_delete, expire = host.cache_expire, exists = host.cache_exists,
  }
end

-- A backend for a runtime without one (busted without portico.testing).
local NONE = setmetatable({}, {
  __index = function()
    return function()
      return nil, "context", "no cache here: run under the host, or call the service through portico.testing"
    end
  end,
})

function M.new(backend)
  local be = backend or host_backend() or NONE
  local default = setmetatable({ name = "default", be = be }, Cache)
  local named = setmetatable({}, {
    __index = function(t, name)
      if type(name) ~= "string" then error("self.caches[name]: name must be a string", 2) end
      local ok, kind, detail = be.exists(name)
      if ok == nil then error("self.caches." .. name .. ": " .. tostring(detail), 2) end
      if not ok then
        error("self.caches: no cache named '" .. name .. "' (cache.caches in the config)", 2)
      end
      local c = name == "default" and default or setmetatable({ name = name, be = be }, Cache)
      t[name] = c
      return c
    end,
  })
  return { default = default, named = named }
end

-- ---- an in-Lua backend with the host's semantics (portico.testing) ----

-- caps: { name = { max_entries =, max_bytes =, ttl = (seconds), max_value = (bytes) } }
-- (other keys, such as backend = "redis", are ignored: one process is the cluster); default gets
-- 10000 entries, 64 MB, no ttl unless caps.default says otherwise. clock() ->
-- seconds (default: 0, moved by the returned backend's advance(s)). The
-- backend also has stats(name) -> { hits, misses, sets, evictions, expired,
-- entries, bytes }. LRU eviction scans the entries: fine for tests.
function M.memory(caps, clock)
  local now_s = 0
  clock = clock or function() return now_s end
  local stores, stamp = {}, 0
  local function new_store(c)
    c = c or {}
    return {
      max_entries = c.max_entries or 10000, max_bytes = c.max_bytes or 64 * 1024 * 1024,
      ttl = c.ttl or 0, max_value = c.max_value, entries = {}, n = 0, bytes = 0,
      stats = { hits = 0, misses = 0, sets = 0, evictions = 0, expired = 0 },
    }
  end
  caps = caps or {}
  stores.default = new_store(caps.default)
  for name, c in pairs(caps) do
    if name ~= "default" then stores[name] = new_store(c) end
  end

  local function unknown(name)
    return nil, "unknown", "no cache named '" .. tostring(name) .. "' (cache.caches in the config)"
  end
  local function ttl_of(s, ttl)
    if ttl == nil or ttl == 0 then ttl = s.ttl end
    if ttl == 0 then return nil end
    return clock() + ttl
  end
  local function remove(s, key)
    local e = s.entries[key]
    s.entries[key], s.n, s.bytes = nil, s.n - 1, s.bytes - e.size
  end
  -- the live entry of key, or nil (an expired one is removed and counted)
  local function live(s, key)
    local e = s.entries[key]
    if e and e.expires and e.expires <= clock() then
      remove(s, key)
      s.stats.expired = s.stats.expired + 1
      return nil
    end
    return e
  end
  local function touch(e)
    stamp = stamp + 1
    e.stamp = stamp
  end
  local function evict(s)
    while s.n > s.max_entries or s.bytes > s.max_bytes do
      local oldest, okey
      for k, e in pairs(s.entries) do
        if not oldest or e.stamp < oldest.stamp then oldest, okey = e, k end
      end
      if not oldest then return end
      local expired = oldest.expires and oldest.expires <= clock()
      remove(s, okey)
      local st = s.stats
      if expired then st.expired = st.expired + 1 else st.evictions = st.evictions + 1 end
    end
  end
  local function insert(s, key, e)
    if s.entries[key] then remove(s, key) end
    touch(e)
    s.entries[key], s.n, s.bytes = e, s.n + 1, s.bytes + e.size
    s.stats.sets = s.stats.sets + 1
    evict(s)
  end
  local function valid(key, ttl)
    return type(key) == "string" and #key >= 1 and #key <= KEY_MAX and
      (ttl == nil or (type(ttl) == "number" and ttl >= 0 and ttl <= TTL_MAX))
  end
  local INVALID = "a key must be 1 to 1024 bytes and a ttl at most a year"

  local be = {}
  function be.get(name, key)
    local s = stores[name]
    if not s then return unknown(name) end
    if not valid(key) then return nil, "invalid", INVALID end
    local e = live(s, key)
    if not e then
      s.stats.misses = s.stats.misses + 1
      return nil
    end
    touch(e)
    s.stats.hits = s.stats.hits + 1
    if e.json then return e.value, true end
    if type(e.value) == "string" then return e.value, false end
    return e.value
  end
  function be.set(name, key, value, json, ttl, add)
    local s = stores[name]
    if not s then return unknown(name) end
    if not valid(key, ttl) then return nil, "invalid", INVALID end
    local tv, vlen = type(value), 0
    if tv == "string" then vlen = #value
    elseif tv == "number" then vlen = 8
    elseif tv == "boolean" then vlen = 1
    else return nil, "invalid", "a value must be a string, a number or a boolean" end
    local size = #key + vlen + OVERHEAD
    if s.max_value and tv == "string" and vlen > s.max_value then
      return nil, "too_large", fmt("the value is %d bytes, more than the cache's max_value (%d)",
        vlen, s.max_value)
    end
    if vlen > VALUE_MAX or size > s.max_bytes then
      return nil, "too_large", "the entry is larger than the cache's max_bytes"
    end
    if add and live(s, key) then return false end
    insert(s, key, { value = value, json = json and tv == "string" or nil,
      expires = ttl_of(s, ttl), size = size })
    return true
  end
  function be.incr(name, key, by, ttl)
    local s = stores[name]
    if not s then return unknown(name) end
    if not valid(key, ttl) then return nil, "invalid", INVALID end
    local e = live(s, key)
    if e then
      if type(e.value) ~= "number" then return nil, "not_number", "the value is not a number" end
      local n = e.value + by
      if n ~= n or n == huge or n == -huge then
        return nil, "range", "the result is not a finite number"
      end
      e.value = n
      touch(e)
      s.stats.sets = s.stats.sets + 1
      return n
    end
    local size = #key + 8 + OVERHEAD
    if size > s.max_bytes then return nil, "too_large", "the entry is larger than the cache's max_bytes" end
    insert(s, key, { value = by, expires = ttl_of(s, ttl), size = size })
    return by
  end
  function be.delete(name, key)
    local s = stores[name]
    if not s then return unknown(name) end
    if not valid(key) then return nil, "invalid", INVALID end
    if not live(s, key) then return false end
    remove(s, key)
    return true
  end
  function be.expire(name, key, ttl)
    local s = stores[name]
    if not s then return unknown(name) end
    if not valid(key, ttl) then return nil, "invalid", INVALID end
    local e = live(s, key)
    if not e then return false end
    e.expires = ttl_of(s, ttl)
    return true
  end
  function be.exists(name)
    return stores[name] ~= nil
  end
  function be.advance(seconds)
    now_s = now_s + seconds
  end
  function be.stats(name)
    local s = stores[name]
    if not s then return nil end
    local st = s.stats
    return { hits = st.hits, misses = st.misses, sets = st.sets, evictions = st.evictions,
      expired = st.expired, entries = s.n, bytes = s.bytes }
  end
  return be
end

return M
