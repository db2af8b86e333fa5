-- Shared code (lua.lib_dirs) and on_load: portico.testing's side, and
-- portico.libs' tracking as the host's runtime uses it.
local testing = require "portico.testing"
local runtime = require "portico.runtime"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function tmpdir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p '" .. dir .. "/lib/shared' '" .. dir .. "/services'"))
  return dir
end

local SERVICE = [[
local service = require "portico.service"
local answer = require "shared.answer"
local M = service.new { name = %q }
%s
function M:handle() self.response.payload = { version = answer.version() } end
return M
]]

describe("portico.testing with lua.lib_dirs", function()
  local dir, saved_path

  before_each(function()
    dir, saved_path = tmpdir(), package.path
    write(dir .. "/lib/shared/base.lua", 'return { version = "lib-v1" }')
    write(dir .. "/lib/shared/answer.lua",
      'local base = require "shared.base"\nreturn { version = function() return base.version end }')
  end)
  after_each(function()
    package.path = saved_path
    package.loaded["shared.base"], package.loaded["shared.answer"] = nil, nil
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("finds library modules in the lib_dirs it is given", function()
    write(dir .. "/services/v.lua", SERVICE:format("t.v", ""))
    local t = testing.new { lib_dirs = { dir .. "/lib" } }
    local res = t:call(dir .. "/services/v.lua", {})
    assert.equal(200, res.status)
    assert.same({ version = "lib-v1" }, res.payload)
    -- on package.path once, after portico's own modules
    testing.new { lib_dirs = { dir .. "/lib" } }
    local entry = dir .. "/lib/?.lua;" .. dir .. "/lib/?/init.lua"
    local first = package.path:find(entry, 1, true)
    assert.truthy(first)
    assert.is_nil(package.path:find(entry, first + 1, true))
    assert.equal(saved_path .. ";" .. entry, package.path)
  end)

  it("without lib_dirs a library module is not found", function()
    write(dir .. "/services/v.lua", SERVICE:format("t.v", ""))
    local t = testing.new()
    local ok, err = pcall(t.load, t, dir .. "/services/v.lua")
    assert.is_false(ok)
    assert.matches("v.lua:2: .*module 'shared.answer' not found", err)
  end)

  it("refuses bad options with a clear error", function()
    assert.has_error(function() testing.new { lib_dir = { "x" } } end,
      "testing.new: unknown option 'lib_dir' (known: caches, lib_dirs)")
    assert.has_error(function() testing.new { lib_dirs = "lib" } end,
      "testing.new{ lib_dirs = ... }: lib_dirs must be a list of directories")
    assert.has_error(function() testing.new { lib_dirs = { "a;b" } } end,
      "testing.new{ lib_dirs = ... }: 'a;b' is not a directory name")
    assert.has_error(function() testing.new(1) end, "testing.new([opts]): opts must be a table")
  end)

  it("runs on_load when a service loads, and an error there fails the load", function()
    write(dir .. "/services/v.lua", SERVICE:format("t.v",
      "M.loads = 0\nfunction M:on_load() self.loads = self.loads + 1; self.ready = answer.version() end"))
    local t = testing.new { lib_dirs = { dir .. "/lib" } }
    t:load(dir .. "/services/v.lua")
    local svc = t.runtime.get("t.v")
    assert.equal(1, svc.loads)
    assert.equal("lib-v1", svc.ready)

    write(dir .. "/services/bad.lua", SERVICE:format("t.bad",
      "function M:on_load()\n  error('no database')\nend"))
    local ok, err = pcall(t.load, t, dir .. "/services/bad.lua")
    assert.is_false(ok)
    assert.equal(dir .. "/services/bad.lua:5: no database", err)
    assert.is_nil(t.runtime.get("t.bad"))

    write(dir .. "/services/notfn.lua", SERVICE:format("t.notfn", "M.on_load = 42"))
    ok, err = pcall(t.load, t, dir .. "/services/notfn.lua")
    assert.is_false(ok)
    assert.equal(dir .. "/services/notfn.lua:1: service 't.notfn': on_load must be a function, got number", err)
  end)
end)

describe("portico.libs tracking (the host's runtime)", function()
  local dir, saved_require, saved_loaders, rt

  before_each(function()
    dir = tmpdir()
    saved_require = _G.require
    saved_loaders = {}
    for i, l in ipairs(package.loaders) do saved_loaders[i] = l end
    write(dir .. "/lib/shared/base.lua", 'return { version = "lib-v1" }')
    write(dir .. "/lib/shared/answer.lua",
      'local base = require "shared.base"\nreturn { version = function() return base.version end }')
    write(dir .. "/lib/other.lua", "return {}")
    rt = runtime.new { log = function() end }
    rt.use_libs({ dir .. "/lib" }, package.path)
  end)
  after_each(function()
    _G.require = saved_require
    for i = #package.loaders, 1, -1 do package.loaders[i] = nil end
    for i, l in ipairs(saved_loaders) do package.loaders[i] = l end
    for _, m in ipairs { "shared.base", "shared.answer", "other" } do package.loaded[m] = nil end
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function call(name)
    local status, body = rt.dispatch { service = name, cid = "c", method = "POST", path = "/",
      query_string = "", headers = {}, body = "", channel = "t", channel_type = "rest" }
    return status, body
  end

  it("names the services that use a library, transitively", function()
    write(dir .. "/services/a.lua", SERVICE:format("t.a", ""))
    write(dir .. "/services/b.lua", [[
local service = require "portico.service"
local other = require "other"
local M = service.new { name = "t.b" }
function M:handle() end
return M
]])
    rt.load(dir .. "/services/a.lua")
    rt.load(dir .. "/services/b.lua")
    assert.same({ dir .. "/services/a.lua" }, rt.lib_dependants { dir .. "/lib/shared/base.lua" })
    assert.same({ dir .. "/services/a.lua" }, rt.lib_dependants { dir .. "/lib/shared/answer.lua" })
    assert.same({ dir .. "/services/b.lua" }, rt.lib_dependants { dir .. "/lib/other.lua" })
    assert.same({}, rt.lib_dependants { dir .. "/lib/nothing.lua" })
    rt.unload(dir .. "/services/a.lua")
    assert.same({}, rt.lib_dependants { dir .. "/lib/shared/base.lua" })
  end)

  it("reloads the dependants with the new library, or keeps all of them as they were", function()
    local a = dir .. "/services/a.lua"
    write(a, SERVICE:format("t.a", ""))
    rt.load(a)
    local text = SERVICE:format("t.a", "")
    local base = dir .. "/lib/shared/base.lua"
    -- the main thread's text is used, not the disk's
    assert.same({ [a] = "t.a" }, rt.reload_libs({ [base] = 'return { version = "lib-v2" }' }, { [a] = text }))
    local status, body = call("t.a")
    assert.equal(200, status)
    assert.equal('{"version":"lib-v2"}', body)

    local ok, err = pcall(rt.reload_libs, { [base] = "return {" }, { [a] = text })
    assert.is_false(ok)
    assert.matches("a.lua:2: error loading module 'shared.base' from .*base.lua:\n\t.*base.lua:1:", err)
    status, body = call("t.a")
    assert.equal('{"version":"lib-v2"}', body)
    -- the old module is back: a service loaded now gets it too
    assert.equal("lib-v2", package.loaded["shared.base"].version)

    -- a library removed: the dependants keep their version
    os.remove(base)
    ok, err = pcall(rt.reload_libs, { [base] = false }, { [a] = text })
    assert.is_false(ok)
    assert.matches("module 'shared.base' not found", err)
    assert.equal('{"version":"lib-v2"}', select(2, call("t.a")))
  end)

  it("a library cannot shadow portico's own modules", function()
    assert(os.execute("mkdir -p '" .. dir .. "/lib/portico'"))
    write(dir .. "/lib/portico/service.lua", "error('the shadow was loaded')")
    local orig = package.loaded["portico.service"]
    package.loaded["portico.service"] = nil
    local ok, mod = pcall(require, "portico.service")
    package.loaded["portico.service"] = orig
    assert.is_true(ok, mod)
    assert.is_function(mod.new)
  end)
end)
