-- portico.libs: shared code of services (lua.lib_dirs), and which service
-- uses which of it, so a change to a library reloads its dependants.
--
--   local libs = require "portico.libs"
--   local tr = libs.new({ "/srv/app/lib" }, portico_path[, prepare])  -- a tracker for one VM
--   tr:install()             -- require and package.loaders learn the lib dirs
--   tr:begin(path) ... tr:finish(path, ok)   around a service file's load
--   tr:dependants(files) -> { service paths }, { module names }
--   tr:drop(names, sources) -> saved; tr:restore(saved) | tr:commit(saved)
--
-- A library module is a file below a lib dir, found as require finds it
-- (`require "billing.tax"` -> LIB/billing/tax.lua or LIB/billing/tax/init.lua),
-- after the portico library: a lib cannot shadow portico.*. It is not a
-- service. The tracker records, while a service file loads, every module
-- the file and the modules it loads require (each module's own requires are
-- recorded when it is first loaded, so a second service that requires a
-- loaded module depends on what that module required too). A require at
-- request time is not recorded: require at the top of the file.
--
-- Reloading a library: drop(names, sources) takes the changed modules and
-- the library modules that require them out of package.loaded (sources:
-- file -> text the main thread checked, read instead of the disk), the
-- caller loads the dependants again, then commit(saved) or restore(saved)
-- (every dropped module back, and what the attempt loaded forgotten).
local loaded = package.loaded
local type, pairs, ipairs, error, pcall, loadstring, open =
  type, pairs, ipairs, error, pcall, loadstring, io.open
local concat, sub = table.concat, string.sub

local M = {}

local Tracker = {}
Tracker.__index = Tracker

-- "a/?.lua;a/?/init.lua;b/?.lua;..." for dirs
function M.path_of(dirs)
  local parts = {}
  for _, d in ipairs(dirs) do
    parts[#parts + 1] = d .. "/?.lua"
    parts[#parts + 1] = d .. "/?/init.lua"
  end
  return concat(parts, ";")
end

-- prepare(chunk), optional: called on each library chunk before it runs
-- (the runtime turns the JIT off for it when lua.request_timeout is on).
function M.new(dirs, portico_path, prepare)
  if type(dirs) ~= "table" then error("libs.new(dirs, portico_path): dirs must be a list", 2) end
  return setmetatable({
    dirs = dirs,
    path = M.path_of(dirs),
    portico_path = portico_path or "",
    prepare = prepare,
    deps = {},      -- requirer ("@" .. service path, or a module name) -> { module = true }
    file_of = {},   -- library module name -> its file
    stack = {},     -- who is loading now (the innermost last)
    sources = nil,  -- file -> text, during a library reload
    attempt = nil,  -- modules first loaded during a library reload
  }, Tracker)
end

local function read(file)
  local f = open(file, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

-- Lua shortens a long chunk name in messages ("...lib/shared/base.lua:2:"):
-- the message gets file's whole name back.
local function full_name(msg, file)
  if type(msg) ~= "string" then return msg end
  local short = msg:match("^%.%.%.([^:]*):%d+:")
  if short and sub(file, -#short) == short then return file .. sub(msg, #short + 4) end
  return msg
end

-- The searcher of library modules (package.loaders[2], before the file
-- searcher): portico's own modules are left to the standard searchers.
function Tracker:searcher()
  local searchpath = package.searchpath
  return function(name)
    if self.portico_path ~= "" and searchpath(name, self.portico_path) then return nil end
    local file = searchpath(name, self.path)
    if not file then return "\n\tno library module '" .. name .. "' in lua.lib_dirs" end
    local text = self.sources and self.sources[file] or read(file)
    if not text then return "\n\tcannot read " .. file end
    local chunk, err = loadstring(text, "@" .. file)
    if not chunk then
      error("error loading module '" .. name .. "' from " .. file .. ":\n\t" .. full_name(err, file), 0)
    end
    self.file_of[name] = file
    if self.prepare then self.prepare(chunk) end
    local function handler(e) return full_name(e, file) end
    return function(...)
      local ok, mod = xpcall(chunk, handler, ...)
      if not ok then error(mod, 0) end
      return mod
    end
  end
end

-- Makes require record who required what, and puts the searcher in.
function Tracker:install()
  table.insert(package.loaders, 2, self:searcher())
  local plain, stack, deps = require, self.stack, self.deps
  local tr = self
  _G.require = function(name)
    local n = #stack
    if n > 0 and type(name) == "string" then
      local d = deps[stack[n]]
      if d then d[name] = true end
    end
    if loaded[name] ~= nil then return loaded[name] end
    stack[n + 1] = name
    deps[name] = {}
    local ok, mod = pcall(plain, name)
    stack[n + 1] = nil
    if not ok then error(mod, 0) end
    if tr.attempt then tr.attempt[name] = true end
    return mod
  end
end

-- Around the load of a service file: its requires are recorded as its own
-- only when it loaded.
function Tracker:begin(path)
  local key = "@" .. path
  self.prev = self.deps[key]
  self.deps[key] = {}
  self.stack[#self.stack + 1] = key
end

function Tracker:finish(path, ok)
  local key = "@" .. path
  self.stack[#self.stack] = nil
  if not ok then self.deps[key] = self.prev end
  self.prev = nil
end

function Tracker:forget(path)
  self.deps["@" .. path] = nil
end

-- The services (paths) that use any of files (library files), and the
-- library modules to drop: those of files and those that require them.
function Tracker:dependants(files)
  local changed = {}
  for _, f in ipairs(files) do changed[f] = true end
  local mods = {}
  for name, file in pairs(self.file_of) do
    if changed[file] then mods[name] = true end
  end
  -- and every library module that requires one of those, to a fixed point
  local grew = true
  while grew do
    grew = false
    for name in pairs(self.file_of) do
      if not mods[name] then
        for dep in pairs(self.deps[name] or {}) do
          if mods[dep] then
            mods[name], grew = true, true
            break
          end
        end
      end
    end
  end
  local services, names = {}, {}
  for key, d in pairs(self.deps) do
    if sub(key, 1, 1) == "@" then
      for dep in pairs(d) do
        if mods[dep] then
          services[#services + 1] = sub(key, 2)
          break
        end
      end
    end
  end
  for name in pairs(mods) do names[#names + 1] = name end
  table.sort(services)
  table.sort(names)
  return services, names
end

-- Takes names out of package.loaded for a reload; sources: file -> text.
function Tracker:drop(names, sources)
  local saved = { mods = {}, deps = {}, files = {} }
  for _, name in ipairs(names) do
    saved.mods[name] = loaded[name]
    saved.deps[name] = self.deps[name]
    saved.files[name] = self.file_of[name]
    loaded[name] = nil
  end
  self.sources, self.attempt = sources, {}
  return saved
end

function Tracker:commit(saved)
  self.sources, self.attempt = nil, nil
end

-- Everything as before drop: the modules dropped back, those the attempt
-- loaded first forgotten.
function Tracker:restore(saved)
  for name in pairs(self.attempt or {}) do
    if saved.mods[name] == nil then
      loaded[name], self.deps[name], self.file_of[name] = nil, nil, nil
    end
  end
  for name, mod in pairs(saved.mods) do
    loaded[name], self.deps[name], self.file_of[name] = mod, saved.deps[name], saved.files[name]
  end
  self.sources, self.attempt = nil, nil
end

return M
