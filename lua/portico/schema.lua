-- portico.schema: the input and output models of services
-- (docs/services.md, "Models and input", is the reference).
--
-- A schema is a table: field name -> type. A type is
--   a string     "integer", "string?", "integer(1..100)", "string(3..20)~^%u+$",
--                "enum(new,paid,shipped)", "integer(1..)=20"     (the short form)
--   a table      { sku = "string", qty = "integer" }              a nested object
--   { T }        an array of T (any depth); { T, min = 1, max = 100 } bounds its length
--   schema.field{ type = T, optional =, default =, min =, max =, pattern =, enum = }
--   schema.optional(T)   T, optional (for a nested object or an array)
-- The short form reads: NAME [ "(" LO ".." HI ")" ] [ "?" | "=" DEFAULT ] [ "~" PATTERN ]
-- NAME: string integer number boolean object (or table) array any enum(v1,v2,...).
--
--   local c = schema.compile(def, "input"[, { unknown = "reject" }])  -- raises on a bad schema
--   local value, problems = schema.check(c, value[, text_fields, skip])
--     -> a new table holding the declared fields (defaults filled in), or
--     -> nil, { "shipping.lines[0].sku: missing", ... }  every problem (at most
--        MAX_PROBLEMS), depth first, the fields of each object sorted by name
--   schema.check_text(c, query[, text_fields, skip])
--     the same for a parsed query string: values are strings (a list of them
--     for a repeated key) converted to the declared scalar types
--   text_fields: a table of more top-level fields whose values are text (a
--   route's captures); skip: a name never taken from the query or text_fields
--   (a body may still carry it).
--
-- JSON as lua-cjson decodes it: an integer is a number with no fraction (and
-- within +-2^53); an object is a table that is not a non-empty array (cjson
-- decodes [] and {} alike, so an empty table is both); JSON null (cjson.null)
-- satisfies only "any": an optional field that is null is left out (or gets
-- its default), a required one is reported ("name: expected string, got null").
--
-- check keeps its state (the path being checked, the problems) in upvalues:
-- it never yields and calls no code of a service, so no two checks overlap.
local cjson = require "cjson"

local type, pairs, ipairs, next, tostring, tonumber, select, floor, sort, concat, error, pcall =
  type, pairs, ipairs, next, tostring, tonumber, select, math.floor, table.sort, table.concat,
  error, pcall
local setmetatable, getmetatable = setmetatable, getmetatable
local find, sub, gsub, match, fmt, gmatch = string.find, string.sub, string.gsub, string.match,
  string.format, string.gmatch
local huge = math.huge

local null = cjson.null

local M = {}
M.null = null

local MAX_INT = 2 ^ 53
-- At most this many problems are reported (one more line says how many were left out).
M.MAX_PROBLEMS = 50
-- The most a pattern may check in one request, as the worst case of Lua's
-- matcher: a string of n characters against q quantifiers costs up to n^q steps.
M.PATTERN_BUDGET = 2 ^ 24
-- A pattern checks strings of at most this many characters, by its number of
-- quantifiers; more than 4 is refused when the schema compiles.
local PATTERN_CAP = { [0] = huge, [1] = huge, [2] = 1024, [3] = 128, [4] = 32 }
M.PATTERN_CAP = PATTERN_CAP
local MAX_DEPTH = 32 -- nesting of a schema

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
M.types = { "any", "array", "boolean", "enum(...)", "integer", "number", "object", "string", "table" }

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

-- ---- text (a query string, a path capture) to scalars ----

local function integer_of(s)
  if #s > 20 or not find(s, "^%-?%d+$") then return nil end
  local n = tonumber(s)
  if n and n > -MAX_INT and n < MAX_INT then return n end
end

-- JSON's number grammar (leading zeros allowed), finite
local function number_of(s)
  if #s > 64 then return nil end
  local rest = match(s, "^%-?%d+(.*)$")
  if not rest then return nil end
  if sub(rest, 1, 1) == "." then rest = match(rest, "^%.%d+(.*)$") end
  if rest and rest ~= "" then rest = match(rest, "^[eE][%+%-]?%d+()$") and "" end
  if rest ~= "" then return nil end
  local n = tonumber(s)
  if n and n == n and n ~= huge and n ~= -huge then return n end
end

local BOOLEANS = { ["true"] = true, ["false"] = false, ["1"] = true, ["0"] = false }
local from_text = {
  integer = integer_of,
  number = number_of,
  boolean = function(s) return BOOLEANS[s] end,
}
M.integer_of, M.number_of = integer_of, number_of

-- ---- messages ----

-- At most n bytes of s, for a message that quotes a client's text.
local function clip(s, n)
  s = tostring(s)
  if #s > n then return sub(s, 1, n) .. "..." end
  return s
end

local function quote(s) return '"' .. clip(s, 40) .. '"' end

local function num(v)
  if v == floor(v) and v > -MAX_INT and v < MAX_INT then return fmt("%d", v) end
  return fmt("%.14g", v)
end

-- "1 to 100", "at least 1", "at most 100" (+ unit)
local function range_text(lo, hi, unit)
  unit = unit and " " .. unit or ""
  if lo and hi then
    if lo == hi then return num(lo) .. unit end
    return num(lo) .. " to " .. num(hi) .. unit
  end
  if lo then return "at least " .. num(lo) .. unit end
  return "at most " .. num(hi) .. unit
end

-- UTF-8 characters in s (bytes that are not continuation bytes)
local function ulen(s)
  local n = #s
  if find(s, "[\128-\255]") then n = n - select(2, gsub(s, "[\128-\191]", "")) end
  return n
end

-- ---- the state of one check ----

local stack, depth = {}, 0      -- the path of the value being checked
local problems, nproblems = nil, 0
local budget = 0                -- pattern steps left

local function path_string()
  local parts = {}
  for i = 1, depth do
    local k = stack[i]
    if type(k) == "number" then
      parts[i] = "[" .. (k - 1) .. "]"
    elseif i == 1 then
      parts[i] = clip(k, 64)
    else
      parts[i] = "." .. clip(k, 64)
    end
  end
  return concat(parts)
end

local function add(msg)
  nproblems = nproblems + 1
  if nproblems > M.MAX_PROBLEMS then return end
  problems = problems or {}
  problems[#problems + 1] = depth > 0 and path_string() .. ": " .. msg or msg
end

local function deep_copy(v)
  if type(v) ~= "table" or v == null then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = deep_copy(x) end
  return t
end

-- ---- checking ----

local walk -- (node, v, text) -> true, value | false (the problem is added)

local function walk_scalar(n, v, text)
  if text then
    if n.type == "array" then
      if type(v) == "string" then v = { v } end -- a query key given once
    elseif type(v) == "table" then
      if n.type ~= "any" then add("given more than once"); return false end
      return true, v
    end
    local conv = from_text[n.type]
    if conv then
      local x = conv(v)
      if x == nil then add(n.expected .. quote(v)); return false end
      v = x
    end
  end
  if not n.check(v) then add(n.expected .. typeof(v)); return false end
  if n.plain then return true, v end
  local enum = n.enum
  if enum and not enum[v] then
    add(n.enum_expected .. (type(v) == "string" and quote(v) or num(v)))
    return false
  end
  local lo, hi = n.min, n.max
  local t = n.type
  if t == "string" then
    if lo or hi or n.pattern then
      local len = ulen(v)
      if (lo and len < lo) or (hi and len > hi) then
        add(n.range_expected .. len)
        return false
      end
      local pat = n.pattern
      if pat then
        local cost = n.q > 1 and len ^ n.q or len
        if cost > budget then
          add("too much to match against patterns in one request")
          return false
        end
        budget = budget - cost
        if not find(v, pat) then add(n.pattern_expected .. quote(v)); return false end
      end
    end
  elseif t == "array" then
    local len = #v
    if (lo and len < lo) or (hi and len > hi) then add(n.range_expected .. len); return false end
  elseif lo or hi then
    if (lo and v < lo) or (hi and v > hi) then add(n.range_expected .. num(v)); return false end
  end
  return true, v
end

local function walk_object(n, v, text, extra, skip)
  if type(v) ~= "table" or v[1] ~= nil then
    add("expected object, got " .. typeof(v))
    return false
  end
  local out = {}
  for i = 1, #n do
    local f = n[i]
    local name = f.name
    local x, xt, twice = v[name], text, false
    if name == skip then
      if text then x = nil end -- skip is never taken from text; a body may carry it
    elseif extra then
      local e = extra[name]
      if e ~= nil then
        if x ~= nil then
          twice = true
        else
          x, xt = e, true
        end
      end
    end
    if twice then
      depth = depth + 1; stack[depth] = name
      add("given both in the path and in the " .. (text and "query" or "body"))
      depth = depth - 1
    elseif x == nil or (x == null and not f.any) then
      if f.has_default then
        out[name] = f.copy and deep_copy(f.default) or f.default
      elseif not f.optional then
        depth = depth + 1; stack[depth] = name
        add(x == nil and "missing" or f.node.expected .. "null")
        depth = depth - 1
      end
    elseif f.plain and not xt then
      -- the common case, inline: a scalar with no constraint
      if f.check(x) then
        out[name] = x
      else
        depth = depth + 1; stack[depth] = name
        add(f.node.expected .. typeof(x))
        depth = depth - 1
      end
    else
      depth = depth + 1; stack[depth] = name
      local ok, y = walk(f.node, x, xt)
      if ok then out[name] = y end
      depth = depth - 1
    end
  end
  if n.reject then
    local by_name, unknown = n.by_name, nil
    for k in pairs(v) do
      if not by_name[k] and not (text and k == skip) then
        unknown = unknown or {}
        unknown[#unknown + 1] = tostring(k)
      end
    end
    if unknown then
      sort(unknown)
      for i = 1, #unknown do
        depth = depth + 1; stack[depth] = unknown[i]
        add("unknown field")
        depth = depth - 1
        if nproblems > M.MAX_PROBLEMS then break end
      end
    end
  end
  return true, out
end

local function walk_array(n, v, text)
  if text and type(v) == "string" then v = { v } end -- a query key given once
  if type(v) ~= "table" or not (next(v) == nil or is_array(v)) then
    add("expected array, got " .. typeof(v))
    return false
  end
  local len = #v
  if (n.min and len < n.min) or (n.max and len > n.max) then
    add(n.range_expected .. len)
    return false
  end
  local item, out = n.item, {}
  local any = item.type == "any"
  for i = 1, len do
    local x = v[i]
    depth = depth + 1; stack[depth] = i
    if x == null and not any then
      add(item.expected .. "null")
    else
      local ok, y = walk(item, x, text)
      if ok then out[i] = y end
    end
    depth = depth - 1
    if nproblems > M.MAX_PROBLEMS then break end
  end
  return true, out
end

walk = function(n, v, text)
  local kind = n.kind
  if kind == "scalar" then return walk_scalar(n, v, text) end
  if kind == "object" then return walk_object(n, v, text) end
  return walk_array(n, v, text)
end

local function finish(ok, out)
  local p, count = problems, nproblems
  problems, nproblems, depth = nil, 0, 0
  if count > 0 then
    if count > M.MAX_PROBLEMS then
      p[#p + 1] = "(" .. (count - M.MAX_PROBLEMS) .. " more problems not shown)"
    end
    return nil, p
  end
  return out
end

-- Checks value (decoded JSON) against a compiled schema c. text_fields and
-- skip: see the top. Returns a new table or nil, problems.
function M.check(c, value, text_fields, skip)
  if type(value) ~= "table" or value[1] ~= nil then
    return nil, { "expected a JSON object, got " .. (value == nil and "nothing" or typeof(value)) }
  end
  problems, nproblems, depth, budget = nil, 0, 0, M.PATTERN_BUDGET
  return finish(walk_object(c, value, false, text_fields, skip))
end

-- Checks a parsed query string (a table of strings and lists of strings).
function M.check_text(c, query, text_fields, skip)
  problems, nproblems, depth, budget = nil, 0, 0, M.PATTERN_BUDGET
  return finish(walk_object(c, query or {}, true, text_fields, skip))
end

-- One line for a list of problems: "a: missing; b: expected string, got integer".
function M.describe(p)
  return concat(p, "; ")
end

-- ---- the long form ----

local Field = {}
Field.__index = Field
local FIELD_KEYS = { type = true, optional = true, default = true, min = true, max = true,
                     pattern = true, enum = true, description = true }

-- schema.field{ type = T, optional = bool, default = v, min = n, max = n,
--               pattern = "lua pattern", enum = { v1, v2, ... }, description = "..." }
function M.field(def)
  if type(def) ~= "table" or getmetatable(def) == Field then
    error("schema.field expects a table { type = ..., ... }", 2)
  end
  local f = {}
  for k, v in pairs(def) do
    if not FIELD_KEYS[k] then
      error("schema.field: unknown key '" .. tostring(k) .. "' (known: type, optional, default, "
        .. "min, max, pattern, enum, description)", 2)
    end
    f[k] = v
  end
  return setmetatable(f, Field)
end

-- schema.optional(T): T, but the field may be left out.
function M.optional(t)
  return setmetatable({ type = t, optional = true }, Field)
end

-- ---- compiling ----

-- a compile error: "input schema: field shipping.lines[].sku: ..."
local function fail(cx, path, msg)
  if path == "" then error(cx.what .. " schema: " .. msg, 0) end
  error(cx.what .. " schema: field " .. path .. " " .. msg, 0)
end

local function parse_bound(s, integral)
  if s == "" then return nil, true end
  local n = integral and integer_of(s) or number_of(s)
  return n, n ~= nil
end

-- Lua pattern -> whole-string pattern and its number of quantifiers.
local function compile_pattern(cx, path, p)
  if type(p) ~= "string" or p == "" then fail(cx, path, "has an empty pattern") end
  if #p > 256 then fail(cx, path, "has a pattern longer than 256 bytes") end
  local body = p
  if sub(body, 1, 1) == "^" then body = sub(body, 2) end
  -- a trailing $ anchors unless it is escaped (an odd run of % before it)
  if sub(body, -1) == "$" then
    local pc = #match(sub(body, 1, -2), "%%*$")
    if pc % 2 == 0 then body = sub(body, 1, -2) end
  end
  -- count quantifiers outside sets and escapes; refuse %b and %f (their cost
  -- is not of the same kind) and captures (nothing reads them)
  local q, i, n = 0, 1, #body
  while i <= n do
    local ch = sub(body, i, i)
    if ch == "%" then
      local nx = sub(body, i + 1, i + 1)
      if nx == "" then fail(cx, path, "has a pattern ending in %") end
      if nx == "b" or nx == "f" or find(nx, "%d") then
        fail(cx, path, "has a pattern with %" .. nx .. " (not allowed in schemas)")
      end
      i = i + 2
    elseif ch == "[" then
      local j = i + 1
      if sub(body, j, j) == "^" then j = j + 1 end
      if sub(body, j, j) == "]" then j = j + 1 end
      while j <= n and sub(body, j, j) ~= "]" do
        if sub(body, j, j) == "%" then j = j + 1 end
        j = j + 1
      end
      if j > n then fail(cx, path, "has a pattern with an unclosed [") end
      i = j + 1
    elseif ch == "(" or ch == ")" then
      fail(cx, path, "has a pattern with ( or ) (captures are not allowed; write %( for a bracket)")
    elseif ch == "*" or ch == "+" or ch == "-" or ch == "?" then
      if i == 1 then fail(cx, path, "has a pattern starting with " .. ch) end
      q = q + 1
      i = i + 1
    else
      i = i + 1
    end
  end
  if q > 4 then fail(cx, path, "has a pattern with more than 4 quantifiers (* + - ?)") end
  local full = "^" .. body .. "$"
  local ok, err = pcall(find, "", full)
  if not ok then fail(cx, path, "has a bad pattern: " .. tostring(err)) end
  return full, q
end

-- Fills the messages and the "plain" flag of a scalar node.
local function finish_scalar(cx, path, n)
  local t = n.type
  n.check = checks[t]
  n.expected = "expected " .. t .. ", got "
  if n.min and n.max and n.min > n.max then fail(cx, path, "has a range whose low end is above its high end") end
  if n.pattern then
    local cap = PATTERN_CAP[n.q]
    if n.max and n.max > cap then
      fail(cx, path, "allows " .. num(n.max) .. " characters, more than its pattern checks ("
        .. cap .. " for " .. n.q .. " quantifiers)")
    end
    if not n.max and cap ~= huge then n.max = cap end
    n.pattern_expected = "expected text matching " .. n.pattern_source .. ", got "
  end
  if not (n.min or n.max) then
    n.range_expected = nil
  elseif t == "string" then
    n.range_expected = "expected " .. range_text(n.min, n.max, "characters") .. ", got "
  elseif t == "array" then
    n.range_expected = "expected " .. range_text(n.min, n.max, "items") .. ", got "
  else
    n.range_expected = "expected " .. range_text(n.min, n.max) .. ", got "
  end
  if n.enum_list then
    local shown = {}
    for i, v in ipairs(n.enum_list) do shown[i] = type(v) == "string" and v or num(v) end
    n.enum_expected = "expected one of " .. concat(shown, ", ") .. ", got "
  end
  n.plain = not (n.min or n.max or n.pattern or n.enum)
  return n
end

local function set_range(cx, path, n, lo, hi)
  local t = n.type
  if t ~= "string" and t ~= "integer" and t ~= "number" and t ~= "array" then
    fail(cx, path, "has a range, which only string, integer, number and array take")
  end
  local integral = t ~= "number"
  for _, b in ipairs({ lo, hi }) do
    if b ~= nil and (type(b) ~= "number" or not checks[integral and "integer" or "number"](b)) then
      fail(cx, path, "has a bound that is not " .. (integral and "a whole number" or "a number")
        .. ": " .. tostring(b))
    end
    if b ~= nil and integral and t ~= "integer" and b < 0 then
      fail(cx, path, "has a negative length")
    end
  end
  n.min, n.max = lo, hi
end

local function set_enum(cx, path, n, values)
  if type(values) ~= "table" or values[1] == nil or not is_array(values) then
    fail(cx, path, "has an enum that is not a non-empty list of values")
  end
  local set = {}
  for _, v in ipairs(values) do
    if not checks[n.type](v) or (n.type ~= "string" and n.type ~= "integer" and n.type ~= "number") then
      fail(cx, path, "has an enum value that is not a " .. n.type .. ": " .. tostring(v))
    end
    if set[v] then fail(cx, path, "has the enum value " .. tostring(v) .. " twice") end
    set[v] = true
  end
  n.enum, n.enum_list = set, values
end

-- "integer(1..100)=20" -> node, optional, has_default, default_text
local function parse_short(cx, path, spec)
  local s, pattern = spec, nil
  local tilde = find(s, "~", 1, true)
  if tilde then s, pattern = sub(s, 1, tilde - 1), sub(s, tilde + 1) end
  local default_text
  local eq = find(s, "=", 1, true)
  if eq then s, default_text = sub(s, 1, eq - 1), sub(s, eq + 1) end
  local optional = sub(s, -1) == "?"
  if optional then s = sub(s, 1, -2) end
  if optional and default_text then
    fail(cx, path, "has both ? and a default (a default makes it optional)")
  end
  local tname, args = match(s, "^([%a_]+)%((.*)%)$")
  if not tname then tname = s end
  local n = { kind = "scalar" }
  if tname == "enum" then
    if not args then fail(cx, path, "has enum without its values: enum(a,b,c)") end
    local values = {}
    for v in gmatch(args .. ",", "([^,]*),") do
      v = match(v, "^%s*(.-)%s*$")
      if v == "" then fail(cx, path, "has an empty enum value in '" .. spec .. "'") end
      values[#values + 1] = v
    end
    n.type = "string"
    set_enum(cx, path, n, values)
  else
    if not checks[tname] then
      fail(cx, path, "has unknown type '" .. spec .. "' (use " .. concat(M.types, ", ")
        .. ", with ? for optional)")
    end
    n.type = tname == "table" and "object" or tname
    if args then
      local lo_s, hi_s = match(args, "^(.-)%.%.(.-)$")
      local integral = n.type ~= "number"
      local lo, ok1 = parse_bound(lo_s or "x", integral)
      local hi, ok2 = parse_bound(hi_s or "x", integral)
      if not lo_s or not ok1 or not ok2 or (lo == nil and hi == nil) then
        fail(cx, path, "has a bad range '(" .. args .. ")' (write (LO..HI), (LO..) or (..HI))")
      end
      set_range(cx, path, n, lo, hi)
    end
  end
  if pattern then
    if n.type ~= "string" or n.enum then fail(cx, path, "has a pattern, which only string takes") end
    n.pattern, n.q = compile_pattern(cx, path, pattern)
    n.pattern_source = pattern
  end
  return finish_scalar(cx, path, n), optional, default_text ~= nil, default_text
end

-- A default given as text in the short form, as the value of its type.
local function default_of_text(cx, path, n, text)
  local t = n.type
  if t == "string" then return text end
  local conv = from_text[t]
  local v = nil
  if t == "boolean" then
    if text == "true" then v = true elseif text == "false" then v = false end
  elseif conv then
    v = conv(text)
  end
  if v == nil then
    fail(cx, path, "has a default '" .. text .. "' that is not " .. (conv and ("a" .. (t == "integer"
      and "n " or " ") .. t) or "possible in the short form for " .. t .. " (use schema.field)"))
  end
  return v
end

-- Checks a default against its node, with the state of a check of its own.
local function check_default(cx, path, n, v)
  problems, nproblems, depth, budget = nil, 0, 0, M.PATTERN_BUDGET
  local ok, out
  if v == null and n.type ~= "any" then
    problems, nproblems = { "null" }, 1
  else
    ok, out = walk(n, v, false)
  end
  local p, count = problems, nproblems
  problems, nproblems, depth = nil, 0, 0
  if count > 0 then fail(cx, path, "has a default that fails its own type: " .. concat(p, "; ")) end
  return out
end

local compile_type, compile_object

-- field -> { name, node, optional, has_default, default, ... }
local function compile_field(cx, path, name, spec, level)
  local f = { name = name }
  local mt = getmetatable(spec)
  if type(spec) == "string" then
    local n, optional, has_default, dtext = parse_short(cx, path, spec)
    f.node, f.optional, f.has_default = n, optional, has_default
    if has_default then f.default = check_default(cx, path, n, default_of_text(cx, path, n, dtext)) end
  elseif mt == Field then
    local t = spec.type
    if t == nil and spec.enum ~= nil then t = "string" end
    if t == nil then fail(cx, path, "has schema.field{} without a type") end
    if getmetatable(t) == Field then fail(cx, path, "has a schema.field{} as the type of another") end
    if type(t) == "string" then
      if not checks[t] then
        fail(cx, path, "has unknown type '" .. t .. "' (schema.field takes a bare type name: "
          .. "string, integer, number, boolean, object, array, any; or a table)")
      end
      local n = { kind = "scalar", type = t == "table" and "object" or t }
      if spec.min ~= nil or spec.max ~= nil then set_range(cx, path, n, spec.min, spec.max) end
      if spec.enum ~= nil then set_enum(cx, path, n, spec.enum) end
      if spec.pattern ~= nil then
        if n.type ~= "string" or n.enum then fail(cx, path, "has a pattern, which only string takes") end
        n.pattern, n.q = compile_pattern(cx, path, spec.pattern)
        n.pattern_source = spec.pattern
      end
      f.node = finish_scalar(cx, path, n)
    else
      if spec.pattern ~= nil or spec.enum ~= nil then
        fail(cx, path, "has a pattern or an enum on an object or array")
      end
      local n = compile_type(cx, path, t, level)
      if spec.min ~= nil or spec.max ~= nil then
        if n.kind ~= "array" then fail(cx, path, "has min or max on an object") end
        if n.min or n.max then fail(cx, path, "has its length bounded twice") end
        set_range(cx, path, n, spec.min, spec.max)
        n.range_expected = "expected " .. range_text(n.min, n.max, "items") .. ", got "
      end
      f.node = n
    end
    if spec.optional ~= nil and type(spec.optional) ~= "boolean" then
      fail(cx, path, "has optional that is not true or false")
    end
    f.optional = spec.optional == true
    if spec.default ~= nil then
      if f.optional then fail(cx, path, "has both optional and a default (a default makes it optional)") end
      f.has_default = true
      f.default = check_default(cx, path, f.node, spec.default)
      f.copy = type(f.default) == "table"
    end
  elseif type(spec) == "table" then
    f.node = compile_type(cx, path, spec, level)
  else
    fail(cx, path, "must map to a type (a string such as \"integer\", a table for an object, "
      .. "{ T } for an array, or schema.field{...}), got " .. type(spec))
  end
  if mt == Field and spec.description ~= nil then
    if type(spec.description) ~= "string" then fail(cx, path, "has a description that is not a string") end
    f.description = spec.description -- for portico.openapi
  end
  f.any = f.node.type == "any"
  f.plain = f.node.kind == "scalar" and f.node.plain or nil
  f.check = f.node.check
  return f
end

-- a table: an object { name = T, ... } or an array { T[, min =, max =] }
compile_type = function(cx, path, t, level)
  if level > MAX_DEPTH then fail(cx, path, "is nested deeper than " .. MAX_DEPTH .. " levels") end
  if cx.seen[t] then fail(cx, path, "holds its own schema (a cycle)") end
  if t[1] == nil then return compile_object(cx, path, t, level) end
  cx.seen[t] = true
  for k in pairs(t) do
    if k ~= 1 and k ~= "min" and k ~= "max" then
      fail(cx, path, "is an array type { T } with more than one element or an unknown key '"
        .. tostring(k) .. "' (an array type is { T } or { T, min = n, max = n })")
    end
  end
  local f = compile_field(cx, path .. "[]", nil, t[1], level + 1)
  if f.optional or f.has_default then
    fail(cx, path .. "[]", "is optional or has a default: the items of an array cannot")
  end
  local n = { kind = "array", type = "array", item = f.node }
  if t.min ~= nil or t.max ~= nil then set_range(cx, path, n, t.min, t.max) end
  n.expected = "expected array, got "
  if n.min or n.max then
    n.range_expected = "expected " .. range_text(n.min, n.max, "items") .. ", got "
  end
  cx.seen[t] = nil
  return n
end

local function by_name(a, b) return a.name < b.name end

compile_object = function(cx, path, def, level)
  cx.seen[def] = true
  local n = { kind = "object", type = "object", by_name = {}, reject = cx.reject }
  for name, spec in pairs(def) do
    if type(name) ~= "string" or name == "" then
      fail(cx, path, (path == "" and "" or "has ") .. "field names must be non-empty strings, got "
        .. tostring(name))
    end
    local fpath = path == "" and name or path .. "." .. name
    local f = compile_field(cx, fpath, name, spec, level + 1)
    n[#n + 1] = f
    n.by_name[name] = true
  end
  sort(n, by_name)
  n.expected = "expected object, got "
  cx.seen[def] = nil
  return n
end

-- Compiles a schema table into the node check takes. what ("input",
-- "output") starts the messages; opts.unknown: "ignore" (the default: fields
-- the schema does not name are left out) or "reject" (each is a problem, at
-- every level). nil compiles to nil. Raises a plain message (no position) on
-- a bad schema; service.new adds the position of the service file.
function M.compile(def, what, opts)
  what = what or "schema"
  if def == nil then return nil end
  if type(def) ~= "table" or getmetatable(def) == Field then
    error(what .. " schema must be a table of field = \"type\", got "
      .. (type(def) == "table" and "schema.field{}" or type(def)), 0)
  end
  if def[1] ~= nil then
    error(what .. " schema must be a table of field = type (an object); { T } is an array type, "
      .. "for a field", 0)
  end
  local unknown = opts and opts.unknown or "ignore"
  if unknown ~= "ignore" and unknown ~= "reject" then
    error(what .. " schema: unknown must be \"ignore\" or \"reject\", got " .. tostring(unknown), 0)
  end
  local cx = { what = what, reject = unknown == "reject" or nil, seen = {} }
  return compile_object(cx, "", def, 0)
end

return M
