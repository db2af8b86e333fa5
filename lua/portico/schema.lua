-- portico.schema: the input and output schemas of services.
--
-- A schema maps a field name to a type:
--   "string", "integer", "number", "boolean", "object" (or "table"), "array", "any"
-- and a trailing "?" makes the field optional: { tenant = "string?" }.
--
--   local c = schema.compile({ customer_id = "integer" }, "input")  -- raises on a bad schema
--   local fields, problems = schema.check(c, value)
--     -> a new table holding only the declared fields, or
--     -> nil, { "customer_id: expected integer, got string", ... }  every problem, sorted by field
--
-- JSON as lua-cjson decodes it: an integer is a number with no fraction (and
-- within +-2^53); an object is a table that is not a non-empty array (cjson
-- decodes [] and {} alike, so an empty table is both); JSON null (cjson.null)
-- satisfies only "any": an optional field that is null is left out, a
-- required one is reported ("name: expected string, got null").
local cjson = require "cjson"

local type, pairs, next, tostring, floor, sort, concat, error =
  type, pairs, next, tostring, math.floor, table.sort, table.concat, error
local huge = math.huge

local null = cjson.null

local M = {}
M.null = null

local MAX_INT = 2 ^ 53

-- A table is a (non-empty) array when its keys are exactly 1..n.
local function is_array(v)
  local n = #v
  if n == 0 then return false end
  local count = 0
  for _ in pairs(v) do count = count + 1 end
  return count == n
end

local checks = {
  string  = function(v) return type(v) == "string" end,
  number  = function(v) return type(v) == "number" and v == v and v ~= huge and v ~= -huge end,
  integer = function(v)
    return type(v) == "number" and v == floor(v) and v > -MAX_INT and v < MAX_INT
  end,
  boolean = function(v) return type(v) == "boolean" end,
  object  = function(v) return type(v) == "table" and v[1] == nil end,
  array   = function(v) return type(v) == "table" and (next(v) == nil or is_array(v)) end,
  any     = function() return true end,
}
checks.table = checks.object
M.types = { "any", "array", "boolean", "integer", "number", "object", "string", "table" }

-- The JSON type of v, as problems name it.
local function typeof(v)
  local t = type(v)
  if t == "number" then
    if v == floor(v) and v > -MAX_INT and v < MAX_INT then return "integer" end
    return "number"
  elseif t == "table" then
    if v[1] ~= nil then return "array" end
    return "object"
  elseif v == null then
    return "null"
  end
  return t
end
M.typeof = typeof

local function by_name(a, b) return a.name < b.name end

-- Compiles a schema table (field -> type string) into a list of fields sorted
-- by name. what ("input", "output") starts the messages. nil compiles to nil.
-- Raises a plain message (no position) on a bad schema; service.new adds the
-- position of the service file.
function M.compile(def, what)
  what = what or "schema"
  if def == nil then return nil end
  if type(def) ~= "table" then
    error(what .. " schema must be a table of field = \"type\", got " .. type(def), 0)
  end
  local fields = {}
  for name, spec in pairs(def) do
    if type(name) ~= "string" or name == "" then
      error(what .. " schema: field names must be non-empty strings, got " .. tostring(name), 0)
    end
    if type(spec) ~= "string" then
      error(what .. " schema: field " .. name .. " must map to a type string, got " .. type(spec), 0)
    end
    local optional = spec:sub(-1) == "?"
    local tname = optional and spec:sub(1, -2) or spec
    local check = checks[tname]
    if not check then
      error(what .. " schema: field " .. name .. " has unknown type '" .. spec
        .. "' (use " .. concat(M.types, ", ") .. ", with ? for optional)", 0)
    end
    if tname == "table" then tname = "object" end
    fields[#fields + 1] = {
      name = name, type = tname, check = check, optional = optional, any = tname == "any",
      -- the messages' fixed parts, made once
      missing = name .. ": missing",
      expected = name .. ": expected " .. tname .. ", got ",
    }
  end
  sort(fields, by_name)
  return fields
end

-- Checks value against compiled fields. Returns a new table holding the
-- declared fields, or nil and the list of every problem, sorted by field.
function M.check(fields, value)
  if type(value) ~= "table" or value[1] ~= nil then
    return nil, { "expected a JSON object, got " .. (value == nil and "nothing" or typeof(value)) }
  end
  local out, problems = {}, nil
  for i = 1, #fields do
    local f = fields[i]
    local v = value[f.name]
    if v == nil or (v == null and not f.any) then
      if not f.optional then
        problems = problems or {}
        problems[#problems + 1] = v == nil and f.missing or f.expected .. "null"
      end
    elseif f.check(v) then
      out[f.name] = v
    else
      problems = problems or {}
      problems[#problems + 1] = f.expected .. typeof(v)
    end
  end
  if problems then return nil, problems end
  return out
end

-- One line for a list of problems: "a: missing; b: expected string, got integer".
function M.describe(problems)
  return concat(problems, "; ")
end

return M
