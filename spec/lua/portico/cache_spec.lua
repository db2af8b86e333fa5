-- portico.cache through portico.testing: the API services see as
-- self.cache and self.caches, over the harness's in-Lua store (the same
-- semantics as the host's: tests/unit/test_cache.c and
-- tests/integration/test_cache.py check those).
local testing = require "portico.testing"
local runtime = require "portico.runtime"
local cache = require "portico.cache"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

describe("portico.cache", function()
  local dir, path

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p '" .. dir .. "'")
    -- runs payload.code with c (the cache named payload.cache, or self.cache)
    path = dir .. "/cache.lua"
    write(path, [[
local service = require "portico.service"
local M = service.new { name = "t.cache" }
function M:handle()
  local p = self.request.payload or {}
  local c = p.cache and self.caches[p.cache] or self.cache
  local fn = assert(loadstring("local self, c, p = ...; " .. p.code))
  local a, b = fn(self, c, p)
  self.response.payload = { a = a, b = b }
end
return M
]])
  end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  local function run(t, code, extra)
    local payload = extra or {}
    payload.code = code
    return t:call(path, { input = payload })
  end

  it("stores strings, numbers, booleans and tables", function()
    local t = testing.new()
    assert.equal(200, run(t, [[
      assert(c:set("s", "text") == true)
      c:set("n", 12.5)
      c:set("b", false)
      c:set("t", { name = "ann", tags = { "a", "b" } })]]).status)
    local res = run(t, [[return { c:get("s"), c:get("n"), c:get("b"), c:get("t") }]])
    assert.same({ "text", 12.5, false, { name = "ann", tags = { "a", "b" } } }, res.payload.a)
    assert.is_nil(run(t, [[return c:get("absent")]]).payload.a)
    -- a table is encoded once: changing it later changes nothing stored; every get is a new table
    res = run(t, [[
      local v = { n = 1 }
      c:set("x", v)
      v.n = 2
      local a, b = c:get("x"), c:get("x")
      return a.n, a ~= b]])
    assert.same({ a = 1, b = true }, res.payload)
    -- the harness reaches the same store
    assert.equal("text", t.cache:get("s"))
    t.cache:set("from-test", 7)
    assert.equal(7, run(t, [[return c:get("from-test")]]).payload.a)
    -- another harness has its own
    assert.is_nil(testing.new().cache:get("s"))
  end)

  it("add sets only an absent key, delete says whether it was there", function()
    local t = testing.new()
    local res = run(t, [[return { c:add("k", 1), c:add("k", 2), c:get("k") }]])
    assert.same({ true, false, 1 }, res.payload.a)
    res = run(t, [[return { c:delete("k"), c:delete("k"), c:add("k", 3) }]])
    assert.same({ true, false, true }, res.payload.a)
  end)

  it("takes a redis cache's config as one process's store, max_value too", function()
    local t = testing.new { caches = { shared = { backend = "redis", ttl = 60, max_value = 8 } } }
    local res = run(t, [[return { c:set("k", "12345678"), c:get("k") }]], { cache = "shared" })
    assert.same({ true, "12345678" }, res.payload.a)
    res = run(t, [[return c:set("k", "123456789")]], { cache = "shared" })
    assert.is_nil(res.payload.a)
    assert.equal("cache 'shared' set: the value is 9 bytes, more than the cache's max_value (8)",
      res.payload.b)
  end)

  it("incr counts from 0, takes a step, refuses a value that is not a number", function()
    local t = testing.new()
    local res = run(t, [[return { c:incr("n"), c:incr("n"), c:incr("n", 10), c:incr("n", -0.5) }]])
    assert.same({ 1, 2, 12, 11.5 }, res.payload.a)
    t.cache:set("s", "12")
    res = run(t, [[return c:incr("s")]])
    assert.equal(500, res.status)
    assert.truthy(t:logged([[cache 'default' incr: the value under key "s" is not a number]], "error"))
    assert.equal("12", t.cache:get("s"))
    res = run(t, [[return c:incr("n", 0/0)]])
    assert.equal(500, res.status)
    assert.truthy(t:logged("incr: by must be a finite number"))
  end)

  it("expires entries after their ttl, the cache's ttl or none", function()
    local t = testing.new { caches = { sessions = { ttl = 60 } } }
    run(t, [[
      c:set("short", 1, 10)
      c:set("long", 1)
      self.caches.sessions:set("s", 1)
      self.caches.sessions:set("own", 1, 120)
      c:incr("n", 1, 10)
      c:incr("n")]])
    local probe = [[return { c:get("short") ~= nil, c:get("long") ~= nil, c:get("n") ~= nil }]]
    t:cache_advance(9.9)
    assert.same({ true, true, true }, run(t, probe).payload.a)
    t:cache_advance(0.2)
    assert.same({ false, true, false }, run(t, probe).payload.a)
    assert.equal(2, t:cache_stats().expired)
    t:cache_advance(50)
    assert.same({ false, true }, run(t, [[return { c:get("s") ~= nil, c:get("own") ~= nil }]],
      { cache = "sessions" }).payload.a)
    -- expire: a new ttl from now, for a key that is there
    local res = run(t, [[return { c:expire("long", 1), c:expire("nope", 1) }]])
    assert.same({ true, false }, res.payload.a)
    t:cache_advance(1)
    assert.is_nil(t.cache:get("long"))
  end)

  it("evicts the least recently used entries past max_entries or max_bytes", function()
    local t = testing.new { caches = { small = { max_entries = 3 }, tiny = { max_bytes = 1024 } } }
    run(t, [[
      c:set("a", 1); c:set("b", 2); c:set("c", 3)
      c:get("a")
      c:set("d", 4)]], { cache = "small" })
    assert.is_nil(t.caches.small:get("b"))
    assert.equal(1, t.caches.small:get("a"))
    local st = t:cache_stats("small")
    assert.equal(3, st.entries)
    assert.equal(1, st.evictions)
    -- bytes: key + value + 96 per entry
    run(t, [[for i = 1, 9 do c:set("k" .. i, string.rep("x", 200)) end]], { cache = "tiny" })
    st = t:cache_stats("tiny")
    assert.equal(3, st.entries)
    assert.equal(3 * (2 + 200 + 96), st.bytes)
    assert.equal(6, st.evictions)
    -- an entry larger than the cache: nil, err (a runtime failure, not a raise)
    local res = run(t, [[return c:set("big", string.rep("x", 2000))]], { cache = "tiny" })
    assert.equal(200, res.status)
    assert.is_nil(res.payload.a)
    assert.matches("larger than the cache's max_bytes", res.payload.b)
  end)

  it("raises for bad keys, values, ttls and unknown caches", function()
    local t = testing.new()
    local cases = {
      { [[c:set("k", { f = function() end })]], "cache 'default' set: the table cannot be encoded as JSON" },
      { [[c:set("k", function() end)]], "a value must be a string, a number, a boolean or a table, got function" },
      { [[c:set("k", nil)]], "got nil" },
      { [[c:set("k", 1/0)]], "a number value must be finite" },
      { [[c:get("")]], "the key must be a string of 1 to 1024 bytes, got 0 bytes" },
      { [[c:get(string.rep("k", 1025))]], "got 1025 bytes" },
      { [[c:get(12)]], "got number" },
      { [[c:set("k", 1, -1)]], "ttl must be a number of seconds from 0 to 31536000, got %-1" },
      { [[c:expire("k", "soon")]], "ttl must be a number" },
      { [[return self.caches.nope]], "self.caches: no cache named 'nope'" },
    }
    for _, case in ipairs(cases) do
      t:reset()
      local res = run(t, case[1])
      assert.equal(500, res.status, case[1])
      local l = t:logged("handler raised", "error")
      assert.truthy(l, case[1])
      assert.truthy(l.message:find(case[2]), l.message)
      -- the error blames the service's line, not portico.cache
      assert.falsy(l.message:find("portico/cache.lua:%d+: cache"), l.message)
    end
    assert.is_nil(t.cache:get("k"))
  end)

  it("self.caches.default is self.cache", function()
    local t = testing.new { caches = { s = {} } }
    local res = run(t, [[return self.caches.default == self.cache, self.caches.s == self.caches.s]])
    assert.same({ a = true, b = true }, res.payload)
  end)

  it("says where caches are when a runtime has none", function()
    local rt = runtime.new { log = function() end }
    local c = cache.new().default
    assert.has_error(function() c:get("k") end)
    local ok, err = pcall(function() c:get("k") end)
    assert.falsy(ok)
    assert.matches("no cache here", err)
    assert.is_table(rt)
  end)
end)
