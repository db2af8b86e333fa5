-- portico.service: what a service file is made of.
--
--   local service = require "portico.service"
--   local M = service.new {
--     name   = "customer.get",                  -- [A-Za-z0-9_][A-Za-z0-9._-]*, unique
--     input  = { customer_id = "integer" },     -- optional, see portico.schema
--     output = { name = "string" },             -- optional
--     unknown = "reject",                       -- optional: input fields the schema does not
--                                               -- name are refused (default "ignore": left out)
--     description =, summary =, tags = { ... }, -- optional: for the OpenAPI document
--     examples = { input = {...}, output = {...} },  -- checked against the schemas at load
--   }
--   function M:handle() ... end
--   return M
--
-- The table new returns is the service module; portico.runtime makes one
-- `self` per request whose metatable's __index is it, so M's own functions
-- and these methods are all reachable as self:fn():
--   self:error(status, message)   end the request with a JSON error
-- (self:invoke and the rest of self are made by portico.runtime.)
local schema = require "portico.schema"
local cjson = require "cjson"

local setmetatable, getmetatable, type, error, tostring, pairs, pcall, floor, next =
  setmetatable, getmetatable, type, error, tostring, pairs, pcall, math.floor, next

local M = {}

-- The key under which a service keeps its compiled schemas; also how the
-- runtime tells a service table from any other table.
local COMPILED = setmetatable({}, { __tostring = function() return "portico.service" end })
M.marker = COMPILED

-- The structured error self:error() raises; the runtime turns it into the
-- response's status and {"error": {...}} body.
local ServiceError = {}
ServiceError.__index = ServiceError
ServiceError.__tostring = function(e) return tostring(e.status) .. ": " .. tostring(e.message) end
M.ServiceError = ServiceError

function M.is_error(e)
  return getmetatable(e) == ServiceError
end

local methods = {}

-- Ends the request with status (400..599) and message:
--   self:error(404, "customer 999 not found")
-- The caller sees {"error":{"status":404,"message":"customer 999 not found","cid":"..."}}.
function methods:error(status, message)
  if type(status) ~= "number" or status < 400 or status > 599 or status ~= floor(status) then
    error("self:error(status, message): status must be a whole number from 400 to 599, got "
      .. tostring(status), 2)
  end
  error(setmetatable({ status = status, message = tostring(message or "") }, ServiceError), 0)
end

local KNOWN = { name = true, input = true, output = true, description = true, unknown = true,
                summary = true, tags = true, examples = true }

-- description, summary, tags and examples describe the service in the
-- OpenAPI document (portico.openapi, docs/openapi.md); each is checked here,
-- examples against the service's own schemas.
local function check_doc(def, input, output)
  local d = def.description
  if d ~= nil and (type(d) ~= "string" or #d > 4096) then
    return "description must be a string of at most 4096 bytes, got "
      .. (type(d) == "string" and #d .. " bytes" or type(d))
  end
  local s = def.summary
  if s ~= nil and (type(s) ~= "string" or #s > 200 or s:find("[%c]")) then
    return "summary must be one line of at most 200 bytes"
      .. (type(s) == "string" and "" or ", got " .. type(s))
  end
  local tags = def.tags
  if tags ~= nil then
    if type(tags) ~= "table" or getmetatable(tags) ~= nil then return "tags must be a list of strings" end
    local n, seen = 0, {}
    for _ in pairs(tags) do n = n + 1 end
    if n ~= #tags or n > 32 then return "tags must be a list of at most 32 strings" end
    for i = 1, n do
      local t = tags[i]
      if type(t) ~= "string" or t == "" or #t > 100 or t:find("[%c]") then
        return "tags[" .. i .. "] must be a non-empty line of at most 100 bytes"
      end
      if seen[t] then return "tags has '" .. t .. "' twice" end
      seen[t] = true
    end
  end
  local ex = def.examples
  if ex ~= nil then
    if type(ex) ~= "table" or getmetatable(ex) ~= nil then
      return "examples must be a table { input = {...}, output = {...} }"
    end
    for k, v in pairs(ex) do
      if k ~= "input" and k ~= "output" then
        return "examples: unknown key '" .. tostring(k) .. "' (known: input, output)"
      end
      if type(v) ~= "table" or (next(v) ~= nil and v[1] ~= nil) then
        return "examples." .. k .. " must be a table (a JSON object), got " .. type(v)
      end
      local compiled = k == "input" and input or output
      if compiled then
        local ok, problems = schema.check(compiled, v)
        if not ok then
          return "examples." .. k .. " fails the " .. k .. " schema: " .. schema.describe(problems)
        end
      end
      local okj, why = pcall(cjson.encode, v)
      if not okj then return "examples." .. k .. " is not JSON: " .. tostring(why) end
    end
  end
end

function M.new(def)
  if type(def) ~= "table" then error("service.new expects a table { name = ..., ... }", 2) end
  for k in pairs(def) do
    if not KNOWN[k] then
      error("service.new: unknown field '" .. tostring(k)
        .. "' (known: name, input, output, unknown, description, summary, tags, examples)", 2)
    end
  end
  local name = def.name
  if type(name) ~= "string" or not name:match("^[%w_][%w%._%-]*$") or not name:find("[^%.]") then
    error("service.new: name must be a string of letters, digits, '.', '_' and '-' not starting "
      .. "with '.' or '-', got " .. (type(name) == "string" and "'" .. name .. "'" or tostring(name)), 2)
  end
  local unknown = def.unknown
  if unknown ~= nil and unknown ~= "ignore" and unknown ~= "reject" then
    error("service.new: unknown must be \"ignore\" or \"reject\", got " .. tostring(unknown), 2)
  end
  local ok_in, input = pcall(schema.compile, def.input, "input", { unknown = unknown })
  if not ok_in then error("service.new: " .. input, 2) end
  local ok_out, output = pcall(schema.compile, def.output, "output")
  if not ok_out then error("service.new: " .. output, 2) end
  local bad = check_doc(def, input, output)
  if bad then error("service.new: " .. bad, 2) end

  local svc = {
    name = name,
    description = def.description,
    summary = def.summary,
    tags = def.tags,
    examples = def.examples,
    input = def.input,
    output = def.output,
    [COMPILED] = { input = input, output = output },
  }
  for k, v in pairs(methods) do svc[k] = v end
  svc.__index = svc
  return svc
end

-- The compiled schemas { input =, output = } of a table made by new, or nil.
function M.compiled(svc)
  return type(svc) == "table" and svc[COMPILED] or nil
end

return M
