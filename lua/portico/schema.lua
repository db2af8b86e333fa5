-- portico.schema: the input/output schemas of services.
-- A schema maps a field to a type: "string", "integer", "number", "boolean",
-- "table"/"object", "array" or "any"; a trailing "?" makes it optional.
local type, pairs, tostring, floor, sort, concat =
  type, pairs, tostring, math.floor, table.sort, table.concat

local M = {}

local checks = {
  string  = function(v) return type(v) == "string" end,
  number  = function(v) return type(v) == "number" end,
  integer = function(v) return type(v) == "number" and v == floor(v) and v > -2^53 and v < 2^53 end,
  boolean = function(v) return type(v) == "boolean" end,
  table   = function(v) return type(v) == "table" end,
  object  = function(v) return type(v) == "table" end,
  array   = function(v) return type(v) == "table" end,
  any     = function(v) return true end,
}

-- Compiles a schema table into a sorted list of fields; raises on a bad one.
function M.compile(schema, what)
  if schema == nil then return nil end
  if type(schema) ~= "table" then
    error(what .. " schema must be a table of field = type", 0)
  end
  local fields = {}
  for name, spec in pairs(schema) do
    if type(name) ~= "string" or type(spec) ~= "string" then
      error(what .. " schema: field " .. tostring(name) .. " must map a name to a type string", 0)
    end
    local optional = spec:sub(-1) == "?"
    local tname = optional and spec:sub(1, -2) or spec
    if not checks[tname] then
      error(what .. " schema: field " .. name .. " has unknown type '" .. spec .. "'", 0)
    end
    fields[#fields + 1] = { name = name, type = tname, check = checks[tname], optional = optional }
  end
  sort(fields, function(a, b) return a.name < b.name end)
  return fields
end

local function typeof(v)
  local t = type(v)
  if t == "number" and v == floor(v) then return "integer" end
  if t == "table" then return "object" end
  return t
end

-- Checks value against compiled fields. Returns the declared fields (a new
-- table) or nil and the list of problems, sorted by field.
function M.check(fields, value)
  if type(value) ~= "table" then
    return nil, { "expected a JSON object, got " .. (value == nil and "nothing" or typeof(value)) }
  end
  local out, problems = {}, nil
  for i = 1, #fields do
    local f = fields[i]
    local v = value[f.name]
    if v == nil or v == M.null then
      if not f.optional then
        problems = problems or {}
        problems[#problems + 1] = f.name .. ": missing"
      end
    elseif not f.check(v) then
      problems = problems or {}
      problems[#problems + 1] = f.name .. ": expected " .. f.type .. ", got " .. typeof(v)
    else
      out[f.name] = v
    end
  end
  if problems then return nil, problems end
  return out
end

function M.describe(problems)
  return concat(problems, "; ")
end

return M
