-- portico.service: what a service file is made of.
--
--   local service = require "portico.service"
--   local M = service.new { name = "customer.get", input = {...}, output = {...} }
--   function M:handle() ... end
--   return M
local schema = require "portico.schema"

local setmetatable, type, error, tostring = setmetatable, type, error, tostring

local M = {}

-- Marks the tables service.new makes, so the runtime can tell them apart.
M.marker = setmetatable({}, { __tostring = function() return "portico.service" end })

-- The structured error self:error() raises; the runtime turns it into the
-- response's status and JSON error body.
local ServiceError = {}
ServiceError.__index = ServiceError
ServiceError.__tostring = function(e) return tostring(e.status) .. ": " .. tostring(e.message) end
M.ServiceError = ServiceError

local methods = {}

-- Ends the request with status and message: self:error(404, "no such customer").
function methods:error(status, message)
  if type(status) ~= "number" or status < 400 or status > 599 then
    error("self:error(status, message): status must be a number from 400 to 599", 2)
  end
  error(setmetatable({ status = status, message = tostring(message or "") }, ServiceError), 0)
end

function M.new(def)
  if type(def) ~= "table" then error("service.new expects a table", 2) end
  if type(def.name) ~= "string" or def.name == "" then
    error("service.new: name must be a non-empty string", 2)
  end
  if not def.name:match("^[%w_][%w%._%-]*$") then
    error("service.new: name '" .. def.name .. "' may hold letters, digits, '.', '_' and '-'", 2)
  end
  local svc = {
    name = def.name,
    input = def.input,
    output = def.output,
    [M.marker] = {
      input = schema.compile(def.input, "input"),
      output = schema.compile(def.output, "output"),
    },
  }
  for k, v in pairs(methods) do svc[k] = v end
  svc.__index = svc
  return svc
end

-- The compiled schemas of a service made by new, or nil.
function M.compiled(svc)
  return type(svc) == "table" and svc[M.marker] or nil
end

return M
